"""Chart tests with the real Helm engine (helm-python-sdk): lint, values.schema.json, NOTES, every TLS mode (cert-manager too),
the 2-replica HA layout, the namespaced mode (every watchNamespaces combination), and check the rendered webhook registration
against the binary's own `webhook-config`."""
import json
import os
import subprocess
import sys

import yaml
import helm_python as helm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "kube-standby")
BIN = os.environ.get("KUBE_STANDBY_BIN", os.path.join(ROOT, "target", "debug", "kube-standby"))


def render(values=None):
    chart = helm.Chart.load(CHART)
    out = chart.render(values or {}, name="kube-standby", namespace="kube-standby", is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_lint_strict():
    report = helm.lint(CHART, strict=True)
    errors = [m for m in report["messages"] if m["severity"] >= 2]
    assert not errors and not report.get("errors"), report


def test_crds_are_the_generated_ones():
    chart = helm.Chart.load(CHART)
    names = [c["name"] for c in chart.crds]
    assert any(n.endswith("crds.yaml") for n in names), names


def test_self_signed_mode():
    docs = render()
    dep = by_kind(docs, "Deployment")[0]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "run"
    assert "--tls-self-signed" in args
    assert "--webhook-config-name=kube-standby" in args
    assert "--tls-san=kube-standby.kube-standby.svc" in args
    assert not dep["spec"]["template"]["spec"].get("volumes")


def test_secret_mode_mounts_the_secret():
    docs = render({"tls": {"mode": "secret", "secretName": "my-tls", "caBundle": "Q0E="}})
    spec = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    assert "--tls-cert-file=/etc/kube-standby/tls/tls.crt" in args
    assert "--tls-self-signed" not in args
    assert spec["volumes"][0]["secret"]["secretName"] == "my-tls"
    mwc = by_kind(docs, "MutatingWebhookConfiguration")[0]
    assert mwc["webhooks"][0]["clientConfig"]["caBundle"] == "Q0E="
    # The agents' CA: caBundle, decoded, never empty.
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["KUBE_STANDBY_AGENT_CA"] == "CA"
    assert not [a for a in args if a.startswith("--ca-file")]
    # Without caBundle the API server could not verify the webhook: refused at render.
    try:
        render({"tls": {"mode": "secret", "secretName": "my-tls"}})
    except helm.HelmError as e:
        assert "tls.caBundle" in str(e) and "certManager" in str(e), e
    else:
        raise AssertionError("secret mode without caBundle should not render")


def test_bad_tls_mode_fails_rendering():
    try:
        render({"tls": {"mode": "bogus"}})
    except helm.HelmError as e:
        assert "tls/mode" in str(e) and "certManager" in str(e), str(e)
    else:
        raise AssertionError("rendering should fail")


def container(docs):
    return by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]


def rules_of(doc):
    return [(tuple(r.get("apiGroups", [])), tuple(r["resources"]), tuple(r["verbs"]),
             tuple(r.get("resourceNames", []))) for r in doc["rules"]]


def grants(doc, resource, verb):
    return [r for r in rules_of(doc) if resource in r[1] and verb in r[2]]


def test_ha_layout_by_default():
    docs = render()
    dep = by_kind(docs, "Deployment")[0]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    c = container(docs)
    assert "--leader-elect" in c["args"]
    assert "--leader-election-name=kube-standby" in c["args"]
    assert "--ca-secret=kube-standby-ca" in c["args"]
    assert "--metrics-bind=0.0.0.0:9090" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"https": 8443, "metrics": 9090}
    svc_ports = {p["name"] for p in by_kind(docs, "Service")[0]["spec"]["ports"]}
    assert svc_ports == {"https", "metrics"}
    pdb = by_kind(docs, "PodDisruptionBudget")[0]
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    # The Lease and the CA Secret are granted in the operator's namespace only.
    self_role = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "kube-standby-self"][0]
    assert self_role["metadata"]["namespace"] == "kube-standby"
    assert grants(self_role, "leases", "update")[0][3] == ("kube-standby",)
    assert grants(self_role, "secrets", "get")[0][3] == ("kube-standby-ca",)
    assert not grants(by_kind(docs, "ClusterRole")[0], "secrets", "get")


def test_user_affinity_replaces_the_default():
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}}
    spec = by_kind(render({"affinity": aff}), "Deployment")[0]["spec"]["template"]["spec"]
    assert spec["affinity"] == aff


def test_single_replica_without_leader_election():
    docs = render({"replicaCount": 1, "leaderElection": {"enabled": False}})
    assert "--leader-elect" not in container(docs)["args"]
    assert not by_kind(docs, "PodDisruptionBudget")
    try:
        render({"replicaCount": 2, "leaderElection": {"enabled": False}})
    except helm.HelmError as e:
        assert "leaderElection" in str(e)
    else:
        raise AssertionError("2 replicas without leader election should not render")


def test_namespaced_mode_uses_roles_and_scopes_the_webhook():
    docs = render({"watchNamespaces": ["team-a", "team-b"]})
    args = container(docs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    cluster = by_kind(docs, "ClusterRole")[0]
    # Only what is cluster-scoped stays cluster-wide.
    assert {r for rule in cluster["rules"] for r in rule["resources"]} == {
        "nodes", "tokenreviews", "subjectaccessreviews", "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations", "customresourcedefinitions"}
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")
             if r["metadata"]["name"] == "kube-standby"}
    assert set(roles) == {"team-a", "team-b"}
    for ns, role in roles.items():
        assert grants(role, "pods", "delete") and grants(role, "hotstandbydeployments", "watch")
        assert not grants(role, "secrets", "get")
    bindings = {b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")
                if b["metadata"]["name"] == "kube-standby"}
    assert bindings == {"team-a", "team-b"}
    for b in by_kind(docs, "RoleBinding"):
        assert b["subjects"][0] == {"kind": "ServiceAccount", "name": "kube-standby",
                                    "namespace": "kube-standby"}
    sel = by_kind(docs, "MutatingWebhookConfiguration")[0]["webhooks"][0]["namespaceSelector"]
    assert sel["matchExpressions"] == [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                        "values": ["team-a", "team-b"]}]
    # Cluster mode: the workload rules are in the ClusterRole and no per-namespace Role exists.
    docs = render()
    assert grants(by_kind(docs, "ClusterRole")[0], "pods", "delete")
    assert [r["metadata"]["name"] for r in by_kind(docs, "Role")] == ["kube-standby-self"]


def test_rbac_never_grants_exec():
    role = by_kind(render(), "ClusterRole")[0]
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "pods/exec" not in resources
    assert "tokenreviews" in resources


def test_claims_http_can_ask_subject_access_reviews():
    # `POST /v1/claims` asks whether the caller may create hotstandbyclaims (issue 19).
    for values in ({}, {"watchNamespaces": ["team-a"]}):
        role = by_kind(render(values), "ClusterRole")[0]
        assert grants(role, "subjectaccessreviews", "create")


def test_exec_is_granted_only_when_hsj_exec_probes_are_enabled():
    for extra in ({}, {"watchNamespaces": ["team-a", "team-b"]}):
        docs = render({**extra, "hsj": {"execProbe": True}})
        roles = by_kind(docs, "Role" if extra else "ClusterRole")
        holders = [r for r in roles if grants(r, "pods/exec", "create")]
        want = 2 if extra else 1
        assert len(holders) == want, (extra, [r["metadata"]["name"] for r in roles])
        docs = render(extra)
        roles = by_kind(docs, "Role") + by_kind(docs, "ClusterRole")
        assert not any(grants(r, "pods/exec", "create") for r in roles), extra


LIMIT_FLAGS = {
    "maxConnections": "--max-connections",
    "tlsHandshakeTimeoutSeconds": "--tls-handshake-timeout-seconds",
    "headerReadTimeoutSeconds": "--header-read-timeout-seconds",
    "idleTimeoutSeconds": "--idle-timeout-seconds",
    "maxHttp2Streams": "--max-http2-streams",
    "maxBodyBytes": "--max-body-bytes",
    "bodyReadTimeoutSeconds": "--body-read-timeout-seconds",
    "maxConcurrentAdmissions": "--max-concurrent-admissions",
    "maxBufferedBodyBytes": "--max-buffered-body-bytes",
}


def binary_defaults():
    """`[default: N]` of each limit flag in `kube-standby run --help`."""
    out = subprocess.run([BIN, "run", "--help"], check=True, capture_output=True, text=True).stdout
    found = {}
    for flag in LIMIT_FLAGS.values():
        text = out[out.index(flag + " "):]
        text = text[text.index("[default: ") + len("[default: "):]
        found[flag] = text[:text.index("]")]
    return found


def test_limits_are_passed_with_the_binary_defaults():
    args = container(render())["args"]
    defaults = binary_defaults()
    for key, flag in LIMIT_FLAGS.items():
        assert f"{flag}={defaults[flag]}" in args, (flag, defaults[flag], args)
    # Overrides, including numbers Helm would print as floats.
    args = container(render({"limits": {"maxBodyBytes": 8388608, "maxBufferedBodyBytes": 134217728,
                                        "idleTimeoutSeconds": 90}}))["args"]
    assert "--max-body-bytes=8388608" in args, args
    assert "--max-buffered-body-bytes=134217728" in args, args
    assert "--idle-timeout-seconds=90" in args, args
    # The binary accepts what the chart renders: parsing and limit checks pass, and it
    # stops only at the certificate file given here.
    limit_args = [a for a in args if a.split("=")[0] in LIMIT_FLAGS.values()]
    assert len(limit_args) == len(LIMIT_FLAGS), limit_args
    out = subprocess.run([BIN, "webhook", "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0",
                          "--tls-cert-file", "/nonexistent/tls.crt", "--tls-key-file", "/nonexistent/tls.key"]
                         + limit_args, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "/nonexistent/tls.crt" in out.stderr, out.stderr


def test_liveness_is_probed_on_the_ops_port():
    c = container(render())
    assert c["livenessProbe"]["httpGet"]["port"] == "metrics", c["livenessProbe"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_actor_rbac_and_no_secrets():
    for docs in (render(), render({"watchNamespaces": ["team-a"]})):
        roles = by_kind(docs, "ClusterRole") + [r for r in by_kind(docs, "Role")
                                                 if r["metadata"]["name"] == "kube-standby"]
        workload = [r for r in roles if grants(r, "asyncactors", "watch")][0]
        for res in ("scaledobjects", "scaledjobs", "triggerauthentications", "statefulsets", "services"):
            for verb in ("get", "list", "watch", "create", "patch", "delete"):
                assert grants(workload, res, verb), (res, verb)
        assert grants(workload, "asyncactors/status", "patch")
        assert grants(by_kind(docs, "ClusterRole")[0], "customresourcedefinitions", "watch")
        assert not grants(by_kind(docs, "ClusterRole")[0], "customresourcedefinitions", "create")
        for r in roles:
            # No secrets outside the operator's own Role (Lease/CA), and none cluster-wide.
            if r["metadata"]["name"] != "kube-standby-self":
                assert not [x for x in rules_of(r) if "secrets" in x[1]], r["metadata"]


def test_actor_settings_reach_the_operator():
    args = container(render())["args"]
    assert "--actor-sidecar-image=asya-sidecar:latest" in args
    assert not [a for a in args if a.startswith("--actor-runtime-file")]
    docs = render({"actor": {"sidecarImage": "reg/sidecar:2", "runtime": {"content": "print(1)\n"}}})
    c = container(docs)
    assert "--actor-sidecar-image=reg/sidecar:2" in c["args"]
    assert "--actor-runtime-file=/etc/kube-standby/actor-runtime/asya_runtime.py" in c["args"]
    mount = [m for m in c["volumeMounts"] if m["name"] == "actor-runtime"][0]
    assert mount["mountPath"] == "/etc/kube-standby/actor-runtime" and mount["readOnly"]
    assert "subPath" not in mount, "a subPath mount would never see an edit"
    spec = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    vol = [v for v in spec["volumes"] if v["name"] == "actor-runtime"][0]
    cm = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == vol["configMap"]["name"]][0]
    assert cm["data"]["asya_runtime.py"] == "print(1)\n"
    # An existing ConfigMap of the user's, with another key, and the TLS secret mode too.
    docs = render({"tls": {"mode": "secret", "secretName": "t", "caBundle": "Q0E="},
                   "actor": {"runtime": {"configMap": "my-runtime", "key": "rt.py"}}})
    c = container(docs)
    assert "--actor-runtime-file=/etc/kube-standby/actor-runtime/rt.py" in c["args"]
    spec = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert {v["name"] for v in spec["volumes"]} == {"tls", "actor-runtime"}
    assert [v for v in spec["volumes"] if v["name"] == "actor-runtime"][0]["configMap"]["name"] == "my-runtime"
    assert not [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("actor-runtime")]


def test_webhook_matches_the_binary():
    ca = os.path.join(ROOT, "tests", "data", "test-ca.crt")
    out = subprocess.run([BIN, "webhook-config", "--service", "kube-standby/kube-standby", "--ca-file", ca],
                         check=True, capture_output=True, text=True).stdout
    printed = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
    assert set(printed) == {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}, printed
    docs = render()
    for kind in printed:
        want = printed[kind]["webhooks"][0]
        got = by_kind(docs, kind)[0]["webhooks"][0]
        want["clientConfig"].pop("caBundle", None)
        got["clientConfig"].pop("caBundle", None)
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), (kind, got, want)


def test_busy_guard_registration_and_flags():
    docs = render()
    vwc = by_kind(docs, "ValidatingWebhookConfiguration")[0]
    wh = vwc["webhooks"][0]
    assert wh["failurePolicy"] == "Ignore" and wh["timeoutSeconds"] == 2
    assert wh["objectSelector"] == {"matchLabels": {"kube-standby.dev/busy-guard": "true"}}
    assert wh["clientConfig"]["service"]["path"] == "/validate/pods"
    assert "caBundle" not in wh["clientConfig"]  # self-signed: kept by the operator
    args = container(docs)["args"]
    assert ("--busy-guard-requesters=system:serviceaccount:kube-system:replicaset-controller,"
            "system:kube-controller-manager,self") in args, args
    assert "--busy-guard-max-hold=3600" in args, args
    assert "--busy-guard-probe-budget=500ms" in args, args
    # The operator keeps both caBundles current: RBAC on both kinds, by name.
    rules = [r for c in by_kind(docs, "ClusterRole") for r in c["rules"]]
    hooks = [r for r in rules if "validatingwebhookconfigurations" in r["resources"]]
    assert hooks and hooks[0]["resourceNames"] == ["kube-standby"], hooks
    # Same CA handling as the mutating one in secret mode.
    docs = render({"tls": {"mode": "secret", "secretName": "t", "caBundle": "Q0E="},
                   "busyGuard": {"requesters": ["alice", "self"], "maxHoldSeconds": 7200,
                                 "probeBudgetMilliseconds": 1500, "timeoutSeconds": 5}})
    wh = by_kind(docs, "ValidatingWebhookConfiguration")[0]["webhooks"][0]
    assert wh["clientConfig"]["caBundle"] == "Q0E=" and wh["timeoutSeconds"] == 5
    args = container(docs)["args"]
    assert "--busy-guard-requesters=alice,self" in args and "--busy-guard-max-hold=7200" in args, args
    assert "--busy-guard-probe-budget=1500ms" in args, args
    # The binary accepts what the chart renders.
    guard_args = [a for a in args if a.startswith("--busy-guard")]
    out = subprocess.run([BIN, "webhook", "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0",
                          "--tls-cert-file", "/nonexistent/tls.crt", "--tls-key-file", "/nonexistent/tls.key"]
                         + guard_args, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "/nonexistent/tls.crt" in out.stderr, out.stderr
    # Namespaced mode scopes the guard like the mutating webhook.
    docs = render({"watchNamespaces": ["team-a"]})
    sel = by_kind(docs, "ValidatingWebhookConfiguration")[0]["webhooks"][0]["namespaceSelector"]
    assert sel["matchExpressions"][0]["operator"] == "In"
    assert sel["matchExpressions"][0]["values"] == ["team-a"]


def valid_selector(sel):
    """The API server's rules for a LabelSelector (ValidateLabelSelector): In/NotIn need
    at least one value, Exists/DoesNotExist none, and no other operator exists."""
    for e in (sel or {}).get("matchExpressions", []):
        op, values = e["operator"], e.get("values") or []
        assert op in ("In", "NotIn", "Exists", "DoesNotExist"), e
        if op in ("In", "NotIn"):
            assert values, f"values: Required value: must be specified when operator is 'In' or 'NotIn': {e}"
            assert all(isinstance(v, str) and v for v in values), e
        else:
            assert not values, e
        assert e["key"], e


def webhook_of(docs):
    return by_kind(docs, "MutatingWebhookConfiguration")[0]["webhooks"][0]


def test_every_watch_namespaces_combination_renders_an_accepted_selector():
    cases = {
        "empty": [],
        "release namespace only": ["kube-standby"],
        "several": ["team-a", "team-b"],
        "several with the release namespace": ["team-a", "kube-standby"],
        "duplicates and kube-system": ["team-a", "team-a", "kube-system"],
    }
    for label, namespaces in cases.items():
        docs = render({"watchNamespaces": namespaces})
        wh = webhook_of(docs)
        valid_selector(wh["namespaceSelector"])
        valid_selector(wh.get("objectSelector"))
        names = {r["metadata"]["namespace"] for r in by_kind(docs, "Role")
                 if r["metadata"]["name"] == "kube-standby"}
        assert names == set(namespaces), (label, names)
    # Empty: every namespace but kube-system and the operator's own.
    wh = webhook_of(render({"watchNamespaces": []}))
    assert wh["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "kube-standby"]}]
    assert "objectSelector" not in wh
    # The release namespace only: its pods are handled, the operator's own pods are not.
    wh = webhook_of(render({"watchNamespaces": ["kube-standby"]}))
    assert wh["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kube-standby"]}]
    op_labels = by_kind(render(), "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    expr = wh["objectSelector"]["matchExpressions"][0]
    assert expr["operator"] == "NotIn" and op_labels[expr["key"]] in expr["values"], (expr, op_labels)
    # Duplicates are listed once, kube-system never.
    wh = webhook_of(render({"watchNamespaces": ["team-a", "team-a", "kube-system"]}))
    assert wh["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a"]
    args = container(render({"watchNamespaces": ["team-a", "team-a"]}))["args"]
    assert args.count("--namespace=team-a") == 1


def test_watching_only_kube_system_fails_rendering():
    try:
        render({"watchNamespaces": ["kube-system"]})
    except helm.HelmError as e:
        assert "watchNamespaces" in str(e) and "kube-system" in str(e)
    else:
        raise AssertionError("rendering should fail")


def test_readme_rbac_table_matches_the_chart():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## RBAC\n"):]
    section = section[:section.index("\n## ", 1)]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("API groups", "---") or not line.startswith("|"):
            continue
        groups = tuple(sorted(g.strip().strip("`").replace('""', "") for g in cells[0].split(",")))
        resources = tuple(sorted(r.split("(")[0].strip() for r in cells[1].split(",")))
        verbs = tuple(sorted(v.strip() for v in cells[2].split(",")))
        rows.add((groups, resources, verbs))
    chart = set()
    for r in by_kind(render(), "ClusterRole")[0]["rules"]:
        chart.add((tuple(sorted(r.get("apiGroups", []))), tuple(sorted(r["resources"])),
                   tuple(sorted(r["verbs"]))))
    assert rows == chart, (sorted(rows - chart), sorted(chart - rows))


def refused(values, *needles):
    try:
        render(values)
    except helm.HelmError as e:
        for n in needles:
            assert n in str(e), (values, n, str(e))
        return str(e)
    raise AssertionError(f"{values} should not render")


def test_values_schema_refuses_wrong_and_misspelt_values():
    assert os.path.exists(os.path.join(CHART, "values.schema.json"))
    refused({"logFormat": "yaml"}, "logFormat")
    refused({"replicas": 3}, "replicas")
    refused({"serviceMonitor": {"enabld": True}}, "enabld")
    refused({"tls": {"mode": "bogus"}}, "mode")
    refused({"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy")
    refused({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces")
    refused({"limits": {"maxConnections": 0}}, "maxConnections")
    # Every documented value passes, with values of the right shape.
    render({"logFormat": "text", "replicaCount": 3, "serviceMonitor": {"enabled": True},
            "webhook": {"failurePolicy": "Fail"}, "watchNamespaces": ["team-a"]})


def render_notes(values=None):
    chart = helm.Chart.load(CHART)
    out = chart.render(values or {}, name="kube-standby", namespace="kube-standby", is_install=True)
    return next(text for path, text in out.items() if path.endswith("NOTES.txt"))


def test_notes_say_what_was_installed_and_how_to_check_it():
    notes = render_notes()
    assert "kubectl -n kube-standby rollout status deployment/kube-standby" in notes, notes
    assert "kubectl get kube-standby -A" in notes
    assert "kubectl apply -n demo -f examples/hsd-annotation.yaml" in notes
    assert "port-forward svc/kube-standby 9090:9090" in notes and "/debug/state" in notes
    assert "team-a" in render_notes({"watchNamespaces": ["team-a"]})


def test_the_usual_values():
    docs = render({
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"a": "1"},
        "podLabels": {"team": "ops"},
        "priorityClassName": "system-cluster-critical",
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:x"}},
    })
    dep = by_kind(docs, "Deployment")[0]
    pod = dep["spec"]["template"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["annotations"] == {"a": "1"}
    assert pod["metadata"]["labels"]["team"] == "ops"
    assert "team" not in dep["spec"]["selector"]["matchLabels"], "pod labels must not change the selector"
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["spec"]["topologySpreadConstraints"][0]["maxSkew"] == 1
    sa = by_kind(docs, "ServiceAccount")[0]
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:x"}
    assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"] == "kube-standby"
    # Defaults: none of the optional fields.
    pod = by_kind(render(), "Deployment")[0]["spec"]["template"]
    for k in ("imagePullSecrets", "priorityClassName", "topologySpreadConstraints"):
        assert k not in pod["spec"], k
    assert "annotations" not in pod["metadata"]


def test_an_existing_service_account():
    docs = render({"serviceAccount": {"create": False, "name": "mine"}})
    assert not by_kind(docs, "ServiceAccount")
    assert by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        assert b["subjects"][0]["name"] == "mine", b["metadata"]["name"]
    refused({"serviceAccount": {"create": False}}, "serviceAccount.name")


def test_name_overrides():
    docs = render({"fullnameOverride": "ks"})
    names = {d["kind"]: d["metadata"]["name"] for d in docs}
    for kind in ("Deployment", "Service", "ServiceAccount", "ClusterRole", "MutatingWebhookConfiguration"):
        assert names[kind] == "ks", (kind, names)
    assert "--webhook-config-name=ks" in container(docs)["args"]
    docs = render({"nameOverride": "ops"})
    dep = by_kind(docs, "Deployment")[0]
    assert dep["metadata"]["name"] == "kube-standby-ops"
    assert dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "ops"


def test_restricted_pod_security_by_default():
    spec = by_kind(render(), "Deployment")[0]["spec"]["template"]["spec"]
    pod, c = spec["securityContext"], spec["containers"][0]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["allowPrivilegeEscalation"] is False and c["readOnlyRootFilesystem"] is True
    assert c["capabilities"] == {"drop": ["ALL"]} and c["runAsNonRoot"] is True
    assert not c.get("privileged")


def test_cert_manager_mode():
    docs = render({"tls": {"mode": "certManager"}})
    issuers = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "Issuer")}
    assert issuers["kube-standby-selfsigned"] == {"selfSigned": {}}
    assert issuers["kube-standby-ca"]["ca"]["secretName"] == "kube-standby-ca-cert-manager"
    certs = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "Certificate")}
    assert certs["kube-standby-ca"]["isCA"] is True
    serving = certs["kube-standby-tls"]
    assert serving["secretName"] == "kube-standby-tls"
    assert serving["issuerRef"]["name"] == "kube-standby-ca"
    assert "kube-standby.kube-standby.svc" in serving["dnsNames"]
    mwc = by_kind(docs, "MutatingWebhookConfiguration")[0]
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "kube-standby/kube-standby-tls"
    assert "caBundle" not in mwc["webhooks"][0]["clientConfig"]
    c = container(docs)
    assert "--tls-cert-file=/etc/kube-standby/tls/tls.crt" in c["args"]
    assert "--ca-file=/etc/kube-standby/tls/ca.crt" in c["args"]
    assert "--tls-self-signed" not in c["args"] and not [a for a in c["args"] if "webhook-config-name" in a]
    spec = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert spec["volumes"][0]["secret"]["secretName"] == "kube-standby-tls"
    # Other modes make no cert-manager objects.
    assert not by_kind(render(), "Certificate") and not by_kind(render(), "Issuer")


def test_service_monitor():
    assert not by_kind(render(), "ServiceMonitor")
    sm = by_kind(render({"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}), "ServiceMonitor")[0]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    ep = sm["spec"]["endpoints"][0]
    assert ep["port"] == "metrics" and ep["path"] == "/metrics"
    svc = by_kind(render(), "Service")[0]
    assert {p["name"] for p in svc["spec"]["ports"]} >= {"metrics"}
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()


def test_network_policy_guards_the_ops_port():
    np = by_kind(render(), "NetworkPolicy")[0]
    dep = by_kind(render(), "Deployment")[0]
    assert np["spec"]["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert np["spec"]["policyTypes"] == ["Ingress"]
    rules = np["spec"]["ingress"]
    # Default: the webhook port for everyone, the ops port for no namespace.
    assert rules == [{"ports": [{"port": "https", "protocol": "TCP"}]}], rules
    rules = by_kind(render({"networkPolicy": {"metricsFromNamespaces": ["monitoring"]}}),
                   "NetworkPolicy")[0]["spec"]["ingress"]
    metrics = [r for r in rules if r["ports"][0]["port"] == "metrics"][0]
    sel = metrics["from"][0]["namespaceSelector"]
    valid_selector(sel)
    assert sel["matchExpressions"][0]["values"] == ["monitoring"]
    assert not by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_chart_readme_lists_every_value():
    text = open(os.path.join(CHART, "README.md")).read()
    values = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    missing = [k for k in values if f"`{k}" not in text]
    assert not missing, missing
    schema = json.load(open(os.path.join(CHART, "values.schema.json")))
    assert set(schema["properties"]) == set(values), set(schema["properties"]) ^ set(values)


if __name__ == "__main__":
    failed = 0
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    for t in tests:
        try:
            t()
            print(f"test {t.__name__} ... ok")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"test {t.__name__} ... FAILED: {e!r}")
    print(f"chart: {len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
