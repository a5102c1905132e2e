//! Resident memory of `kube-standby run` against a fake API server (no cluster here), in
//! these worlds: idle (no objects), 10,000 foreign pods (pods of nothing of ours, in another
//! namespace), 1,000 own pods of 20 HotStandbyDeployments (with their Deployments and
//! ReplicaSets), and at scale (issue 22): 1,000 HSDs x 10 pods, 100 HotStandbyJobs x 10
//! units (1,000 Jobs and their pods), 200 AsyncActors (150 Deployment actors with their
//! ScaledObjects, ReplicaSets and pods; 50 Job actors with their ScaledJobs, two Jobs and
//! pods each; KEDA's CRDs served). Prints VmRSS once ready and settled, and the cost per
//! object against idle.
//!
//! Targets: <= 2 KiB per foreign pod, <= 60 MiB with 10,000 foreign pods, <= 40 MiB with
//! 1,000 own pods (issue 11); <= 60 MiB for each case at scale (issue 22).
//!
//!   cargo bench --bench run_memory
//!   BENCH_CASES=idle,hsd1000,hsj1000,actors200 cargo bench --bench run_memory   (a subset;
//!   also foreign, own, and for splits hsd:N:M (N HSDs of M pods), hsd-only:N,
//!   children-only:N (their Deployments and ReplicaSets); idle is always measured first;
//!   BENCH_DIAG=1 also prints the sizes of /metrics and /debug/state and the writes made)
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;

/// A pod as a real API server returns it (managed fields, status, a typical container).
fn pod(ns: &str, name: &str, labels: Value, owner: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"), "resourceVersion": "12345",
            "creationTimestamp": "2026-01-01T00:00:00Z", "generateName": format!("{name}-"),
            "labels": labels, "ownerReferences": [owner],
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}}, "f:ownerReferences": {".": {}, "k:{\"uid\":\"x\"}": {}}},
                 "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {}, "f:resources": {}, "f:terminationMessagePath": {}}}, "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:01Z", "subresource": "status",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}}, "f:containerStatuses": {}, "f:hostIP": {}, "f:phase": {}, "f:podIP": {}, "f:podIPs": {}, "f:startTime": {}}}}
            ]
        },
        "spec": {
            "nodeName": "node-1", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
            "serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "app", "image": "registry.example.com/team/app:1.2.3", "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        },
        "status": {
            "phase": "Running", "hostIP": "10.0.0.10", "podIP": "10.244.1.23", "podIPs": [{"ip": "10.244.1.23"}],
            "startTime": "2026-01-01T00:00:01Z", "qosClass": "Burstable",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-01-01T00:00:01Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:02Z"},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-01-01T00:00:02Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "started": true,
                "image": "registry.example.com/team/app:1.2.3", "imageID": "registry.example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "containerID": "containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "state": {"running": {"startedAt": "2026-01-01T00:00:02Z"}}}]
        }
    })
}

fn owner(kind: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true})
}

fn foreign(n: usize) -> HashMap<String, Vec<Value>> {
    let pods = (0..n)
        .map(|i| {
            pod(
                "other",
                &format!("web-7d9f8b6c5-{i:05}"),
                json!({"app": "web", "pod-template-hash": "7d9f8b6c5"}),
                owner("ReplicaSet", "web-7d9f8b6c5", "rs-web"),
            )
        })
        .collect();
    HashMap::from([("/api/v1/pods".to_string(), pods)])
}

fn own(hsds: usize, pods_each: usize) -> HashMap<String, Vec<Value>> {
    let mut m: HashMap<String, Vec<Value>> = HashMap::new();
    for h in 0..hsds {
        let name = format!("game-{h}");
        // The busy-guard label our pod templates carry, so the guard's cache holds them too.
        let labels = json!({"app": name, "hsd.paia.tech/name": name, "pod-template-hash": "abc",
                            "kube-standby.dev/busy-guard": "true"});
        let spec = json!({"idleTarget": pods_each, "minReplicas": 0, "maxReplicas": 1000, "selector": {"matchLabels": {"app": name}},
                          "podTemplate": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "registry.example.com/team/app:1.2.3"}]}}});
        // As a real API server sends an HSD made by `kubectl apply` and given a status by
        // the operator: kubectl's last-applied copy and both managers' managed fields.
        let last_applied = json!({"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
                                  "metadata": {"name": name, "namespace": "games"}, "spec": spec});
        m.entry("/apis/apps.paia.tech/v1alpha1/hotstandbydeployments".into()).or_default().push(json!({
            "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
            "metadata": {"name": name, "namespace": "games", "uid": format!("hsd-{h}"), "generation": 1, "resourceVersion": "1",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied.to_string()},
                         "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "apps.paia.tech/v1alpha1", "time": "2026-01-01T00:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
                 "f:spec": {".": {}, "f:idleTarget": {}, "f:maxReplicas": {}, "f:minReplicas": {}, "f:podTemplate": {".": {}, "f:metadata": {}, "f:spec": {}}, "f:selector": {}}}},
                {"manager": "kube-standby", "operation": "Apply", "apiVersion": "apps.paia.tech/v1alpha1", "time": "2026-01-01T00:00:01Z", "subresource": "status",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:busyReplicas": {}, "f:idleReplicas": {}, "f:replicas": {}, "f:conditions": {}, "f:observedGeneration": {}}}}]},
            "spec": spec
        }));
        let dep = format!("{name}-workload");
        m.entry("/apis/apps/v1/deployments".into()).or_default().push(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": dep, "namespace": "games", "uid": format!("dep-{h}"), "labels": {"hsd.paia.tech/name": name},
                         "annotations": {"hsd.paia.tech/replicas": pods_each.to_string()},
                         "ownerReferences": [{"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment", "name": name, "uid": format!("hsd-{h}"), "controller": true}]},
            "spec": {"replicas": pods_each, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": labels.clone()}, "spec": {"containers": [{"name": "app", "image": "registry.example.com/team/app:1.2.3"}]}}},
            "status": {"replicas": pods_each, "readyReplicas": pods_each}
        }));
        let rs = format!("{dep}-abc");
        // As the Deployment controller makes it: the whole pod template, its revision, the
        // controller manager's managed fields and a status.
        m.entry("/apis/apps/v1/replicasets".into()).or_default().push(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": rs, "namespace": "games", "uid": format!("rs-{h}"), "labels": labels.clone(),
                         "annotations": {"deployment.kubernetes.io/desired-replicas": pods_each.to_string(),
                                         "deployment.kubernetes.io/max-replicas": (pods_each + 3).to_string(),
                                         "deployment.kubernetes.io/revision": "1"},
                         "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1", "time": "2026-01-01T00:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/desired-replicas": {},
                 "f:deployment.kubernetes.io/max-replicas": {}, "f:deployment.kubernetes.io/revision": {}}, "f:labels": {".": {}},
                 "f:ownerReferences": {".": {}}}, "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {"f:metadata": {"f:labels": {".": {}}},
                 "f:spec": {"f:containers": {}, "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {},
                 "f:terminationGracePeriodSeconds": {}}}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1", "time": "2026-01-01T00:00:05Z", "subresource": "status",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:availableReplicas": {}, "f:fullyLabeledReplicas": {}, "f:observedGeneration": {},
                 "f:readyReplicas": {}, "f:replicas": {}}}}],
                         "ownerReferences": [owner("Deployment", &dep, &format!("dep-{h}"))]},
            "spec": {"replicas": pods_each, "selector": {"matchLabels": labels.clone()},
                     "template": {"metadata": {"labels": labels.clone()},
                                  "spec": {"containers": [{"name": "app", "image": "registry.example.com/team/app:1.2.3",
                                                           "imagePullPolicy": "IfNotPresent", "resources": {},
                                                           "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
                                           "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                                           "securityContext": {}, "terminationGracePeriodSeconds": 30}}},
            "status": {"replicas": pods_each, "fullyLabeledReplicas": pods_each, "readyReplicas": pods_each,
                       "availableReplicas": pods_each, "observedGeneration": 1}
        }));
        for i in 0..pods_each {
            m.entry("/api/v1/pods".into()).or_default().push(pod(
                "games",
                &format!("{rs}-{i:04}"),
                labels.clone(),
                owner("ReplicaSet", &rs, &format!("rs-{h}")),
            ));
        }
    }
    m
}

/// `n` HotStandbyJobs of `units` units each (annotation busy mode): a Job per unit, owned by
/// its HSJ, and the Job's running pod.
fn hsj_units(n: usize, units: usize) -> HashMap<String, Vec<Value>> {
    let mut m: HashMap<String, Vec<Value>> = HashMap::new();
    for h in 0..n {
        let name = format!("pool-{h}");
        let hsj_uid = format!("hsj-{h}");
        m.entry("/apis/apps.paia.tech/v1alpha1/hotstandbyjobs".into()).or_default().push(json!({
            "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
            "metadata": {"name": name, "namespace": "batch", "uid": hsj_uid, "generation": 1, "resourceVersion": "1"},
            "spec": {"idleTarget": units, "minReplicas": 0, "maxReplicas": 1000,
                     "jobTemplate": {"image": "registry.example.com/team/worker:1.2.3", "command": ["/bin/worker"]},
                     "busyProbe": {"mode": "annotation"}}
        }));
        for u in 0..units {
            let job = format!("{name}-{u:04}");
            let job_uid = format!("job-{h}-{u}");
            let labels = json!({"hsj.paia.tech/name": name, "kube-standby.dev/busy-guard": "true"});
            m.entry("/apis/batch/v1/jobs".into()).or_default().push(json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": job, "namespace": "batch", "uid": job_uid, "resourceVersion": "2", "labels": labels.clone(),
                             "ownerReferences": [{"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob", "name": name, "uid": hsj_uid, "controller": true}]},
                "spec": {"parallelism": 1, "completions": 1, "backoffLimit": 0,
                         "template": {"metadata": {"labels": labels.clone()},
                                      "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "registry.example.com/team/worker:1.2.3", "command": ["/bin/worker"]}]}}},
                "status": {"active": 1, "startTime": "2026-01-01T00:00:00Z"}
            }));
            let mut p = pod(
                "batch",
                &format!("{job}-x7k2p"),
                labels,
                json!({"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": job_uid, "controller": true, "blockOwnerDeletion": true}),
            );
            p["metadata"]["annotations"]["paia.tech/busy"] = "false".into();
            m.entry("/api/v1/pods".into()).or_default().push(p);
        }
    }
    m
}

/// `n` AsyncActors with what the operator and KEDA made for them: every fourth a Job actor
/// (a ScaledJob, two Jobs and their pods), the others Deployment actors (a Deployment, its
/// ReplicaSet and one pod, a ScaledObject).
fn actors(n: usize) -> HashMap<String, Vec<Value>> {
    let mut m: HashMap<String, Vec<Value>> = HashMap::new();
    let established = |name: &str| {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": "keda.sh", "names": {"kind": "X", "plural": "x"}, "scope": "Namespaced", "versions": []},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}})
    };
    m.insert(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions".into(),
        [
            "scaledobjects.keda.sh",
            "scaledjobs.keda.sh",
            "triggerauthentications.keda.sh",
        ]
        .iter()
        .map(|c| established(c))
        .collect(),
    );
    for a in 0..n {
        let job_actor = a % 4 == 3;
        let name = format!("actor-{a}");
        let uid = format!("actor-uid-{a}");
        let labels = json!({"asya.io/actor": name});
        let own = json!([{"apiVersion": "asya.io/v1alpha1", "kind": "AsyncActor", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
        let containers = json!([
            {"name": "runtime", "image": "registry.example.com/team/actor:1.2.3", "resources": {"limits": {"cpu": "1000m", "memory": "1Gi"}}},
            {"name": "asya-sidecar", "image": "ghcr.io/asya/sidecar:1.0.0",
             "env": [{"name": "ASYA_QUEUE", "value": format!("queue-{a}")}, {"name": "ASYA_TRANSPORT", "value": "rabbitmq"}]}
        ]);
        m.entry("/apis/asya.io/v1alpha1/asyncactors".into()).or_default().push(json!({
            "apiVersion": "asya.io/v1alpha1", "kind": "AsyncActor",
            "metadata": {"name": name, "namespace": "actors", "uid": uid, "generation": 1, "resourceVersion": "1"},
            "spec": {"queueName": format!("queue-{a}"),
                     "transport": {"type": "rabbitmq", "rabbitmq": {"host": "rabbitmq.rabbitmq.svc.cluster.local", "port": 5672, "username": "admin",
                                   "passwordSecretRef": {"name": "rabbitmq-secret", "key": "password"}}},
                     "scaling": {"enabled": true, "minReplicas": 0, "maxReplicas": 10, "queueLength": 5},
                     "workload": {"type": if job_actor { "Job" } else { "Deployment" },
                                  "template": {"spec": {"containers": [{"name": "runtime", "image": "registry.example.com/team/actor:1.2.3"}]}}}}
        }));
        let trigger = json!([{"type": "rabbitmq", "metadata": {"queueName": format!("queue-{a}"), "mode": "QueueLength", "value": "5", "protocol": "amqp"},
                              "authenticationRef": {"name": format!("{name}-trigger-auth")}}]);
        if job_actor {
            m.entry("/apis/keda.sh/v1alpha1/scaledjobs".into()).or_default().push(json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
                "metadata": {"name": name, "namespace": "actors", "uid": format!("sj-{a}"), "labels": labels.clone(), "ownerReferences": own.clone()},
                "spec": {"jobTargetRef": {"template": {"metadata": {"labels": labels.clone()}, "spec": {"restartPolicy": "OnFailure", "containers": containers.clone()}}},
                         "minReplicaCount": 0, "maxReplicaCount": 10, "triggers": trigger}
            }));
            for j in 0..2 {
                let job = format!("{name}-{j:05}");
                let job_uid = format!("ajob-{a}-{j}");
                m.entry("/apis/batch/v1/jobs".into()).or_default().push(json!({
                    "apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": job, "namespace": "actors", "uid": job_uid, "labels": labels.clone(),
                                 "ownerReferences": [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "name": name, "uid": format!("sj-{a}"), "controller": true}]},
                    "spec": {"template": {"metadata": {"labels": labels.clone()}, "spec": {"restartPolicy": "OnFailure", "containers": containers.clone()}}},
                    "status": {"active": 1}
                }));
                m.entry("/api/v1/pods".into()).or_default().push(pod(
                    "actors",
                    &format!("{job}-q8w4z"),
                    labels.clone(),
                    json!({"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": job_uid, "controller": true}),
                ));
            }
        } else {
            m.entry("/apis/apps/v1/deployments".into()).or_default().push(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "actors", "uid": format!("adep-{a}"), "generation": 1, "labels": labels.clone(), "ownerReferences": own.clone()},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels.clone()},
                         "template": {"metadata": {"labels": labels.clone()}, "spec": {"containers": containers.clone()}}},
                "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1}
            }));
            let rs = format!("{name}-5d8c7b9f4");
            m.entry("/apis/apps/v1/replicasets".into()).or_default().push(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs, "namespace": "actors", "uid": format!("ars-{a}"), "labels": labels.clone(),
                             "ownerReferences": [owner("Deployment", &name, &format!("adep-{a}"))]},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels.clone()}, "template": {"metadata": {"labels": labels.clone()}}}
            }));
            m.entry("/api/v1/pods".into()).or_default().push(pod(
                "actors",
                &format!("{rs}-h2x9v"),
                labels.clone(),
                owner("ReplicaSet", &rs, &format!("ars-{a}")),
            ));
            m.entry("/apis/keda.sh/v1alpha1/scaledobjects".into()).or_default().push(json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": name, "namespace": "actors", "uid": format!("so-{a}"), "labels": labels.clone(), "ownerReferences": own.clone()},
                "spec": {"scaleTargetRef": {"name": name}, "minReplicaCount": 0, "maxReplicaCount": 10, "triggers": trigger}
            }));
        }
        m.entry("/apis/keda.sh/v1alpha1/triggerauthentications".into()).or_default().push(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": format!("{name}-trigger-auth"), "namespace": "actors", "uid": format!("ta-{a}"), "labels": labels.clone(), "ownerReferences": own.clone()},
            "spec": {"secretTargetRef": [{"parameter": "password", "name": "rabbitmq-secret", "key": "password"}]}
        }));
    }
    m
}

/// A world at scale: its name in `BENCH_CASES`, what it is, its objects, how many of
/// `unit` it holds.
type Case = (&'static str, &'static str, Objects, f64, &'static str);
type Objects = HashMap<String, Vec<Value>>;

fn count(objects: &HashMap<String, Vec<Value>>) -> String {
    let mut parts: Vec<String> = objects
        .iter()
        .map(|(path, v)| format!("{} {}", v.len(), path.rsplit('/').next().unwrap_or(path)))
        .collect();
    parts.sort();
    parts.join(", ")
}

/// VmRSS (KiB) of `run` against a fake API server holding `objects`, once ready and settled.
async fn measure(objects: HashMap<String, Vec<Value>>) -> Option<u64> {
    let api = fake_apiserver::start_with(Arc::new(objects)).await;
    let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    if !run.wait_ready().await {
        println!("run mode never became ready");
        return None;
    }
    if std::env::var("BENCH_DIAG").is_ok_and(|v| v == "1") {
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        for what in ["metrics", "debug/state"] {
            let url = format!("http://127.0.0.1:{}/{what}", run.ops_port);
            let body = match reqwest::get(&url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            println!(
                "      /{what}: {} bytes, {} lines",
                body.len(),
                body.lines().count()
            );
        }
        println!("      writes to the API server: {}", api.writes.len());
    }
    // Settled: 4 s after ready, then until VmRSS grows by less than 1% in 2 s (at most 20 s
    // more: reconciles of a large world still running).
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let mut last = run.rss_kib()?;
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let now = run.rss_kib()?;
        if now <= last + last / 100 {
            last = now.max(last);
            break;
        }
        last = now;
    }
    // Where it is: the heap and stacks (anonymous) or the binary's pages (file-backed).
    if let (Some(anon), Some(file)) = (run.status_kib("RssAnon"), run.status_kib("RssFile")) {
        println!(
            "      of which anonymous {:.1} MiB, file-backed {:.1} MiB",
            mib(anon),
            mib(file)
        );
    }
    Some(last)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let cases: Vec<String> = std::env::var("BENCH_CASES")
        .unwrap_or_else(|_| "foreign,own,hsd1000,hsj1000,actors200".into())
        .split(',')
        .map(|c| c.trim().to_string())
        .collect();
    let wanted = |c: &str| cases.iter().any(|x| x == c);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let Some(idle) = measure(HashMap::new()).await else {
            return;
        };
        println!("run, idle (caches synced, 0 objects):           VmRSS = {:6.1} MiB", mib(idle));
        if wanted("foreign") {
            if let Some(f) = measure(foreign(10_000)).await {
                let per = (f.saturating_sub(idle) * 1024) as f64 / 10_000.0;
                println!(
                    "run, 10,000 foreign pods:                       VmRSS = {:6.1} MiB  ({per:.0} B per foreign pod; targets <= 60 MiB, <= 2048 B)",
                    mib(f)
                );
            }
        }
        if wanted("own") {
            if let Some(o) = measure(own(20, 50)).await {
                let per = (o.saturating_sub(idle) * 1024) as f64 / 1_000.0;
                println!(
                    "run, 1,000 own pods of 20 HSDs (+ Deployments/ReplicaSets): VmRSS = {:6.1} MiB  ({per:.0} B per own pod; target <= 40 MiB)",
                    mib(o)
                );
            }
        }
        let at_scale: [Case; 3] = [
            ("hsd1000", "1,000 HSDs x 10 pods", if wanted("hsd1000") { own(1_000, 10) } else { HashMap::new() }, 1_000.0, "HSD"),
            ("hsj1000", "100 HSJs x 10 units (1,000 Jobs + pods)", if wanted("hsj1000") { hsj_units(100, 10) } else { HashMap::new() }, 1_000.0, "unit"),
            ("actors200", "200 AsyncActors (+ children, KEDA objects)", if wanted("actors200") { actors(200) } else { HashMap::new() }, 200.0, "actor"),
        ];
        // Ad hoc splits: `hsd:N:M` is N HSDs of M pods each; `hsd-only:N` the N HSDs
        // alone, `children-only:N` their Deployments and ReplicaSets alone.
        for case in cases.iter().filter(|c| c.contains(':')) {
            let mut it = case.split(':');
            let kind = it.next().unwrap_or_default();
            let mut nums = it.map(|x| x.parse::<usize>().unwrap_or(0));
            let (n, m) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
            let mut objects = own(n, m);
            match kind {
                "hsd-only" => objects.retain(|k, _| k.contains("hotstandbydeployments")),
                "children-only" => objects.retain(|k, _| !k.contains("hotstandbydeployments")),
                _ => {}
            }
            let served = count(&objects);
            if let Some(r) = measure(objects).await {
                println!("run, {case} ({served}): VmRSS = {:6.1} MiB", mib(r));
            }
        }
        for (case, name, objects, n, unit) in at_scale {
            if !wanted(case) {
                continue;
            }
            let served = count(&objects);
            if let Some(r) = measure(objects).await {
                let per = (r.saturating_sub(idle) * 1024) as f64 / n;
                let over = mib(r) - 60.0;
                let verdict = if over > 0.0 {
                    format!("OVER the 60 MiB target by {over:.1} MiB")
                } else {
                    "target <= 60 MiB met".to_string()
                };
                println!(
                    "run, {name}: VmRSS = {:6.1} MiB  ({per:.0} B per {unit} over idle; {verdict})\n      served: {served}",
                    mib(r)
                );
            }
        }
    });
}
