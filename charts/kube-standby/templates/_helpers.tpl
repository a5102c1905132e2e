{{- define "kube-standby.name" -}}kube-standby{{- end -}}
{{- define "kube-standby.fullname" -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "kube-standby.labels" -}}
app.kubernetes.io/name: kube-standby
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "kube-standby.selectorLabels" -}}
app.kubernetes.io/name: kube-standby
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "kube-standby.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
