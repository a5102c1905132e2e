//! Resident memory of `kube-standby run` against a fake API server (no cluster here), in
//! three worlds: idle (no objects), 10,000 foreign pods (pods of nothing of ours, in another
//! namespace), and 1,000 own pods of 20 HotStandbyDeployments (with their Deployments and
//! ReplicaSets). Prints VmRSS once ready and settled, and the cost per pod against idle.
//!
//! Targets (issue 11): <= 2 KiB per foreign pod, <= 60 MiB with 10,000 foreign pods,
//! <= 40 MiB with 1,000 own pods.
//!
//!   cargo bench --bench run_memory
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
        let labels = json!({"app": name, "hsd.paia.tech/name": name, "pod-template-hash": "abc"});
        m.entry("/apis/apps.paia.tech/v1alpha1/hotstandbydeployments".into()).or_default().push(json!({
            "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
            "metadata": {"name": name, "namespace": "games", "uid": format!("hsd-{h}"), "generation": 1, "resourceVersion": "1"},
            "spec": {"idleTarget": pods_each, "minReplicas": 0, "maxReplicas": 1000, "selector": {"matchLabels": {"app": name}},
                     "podTemplate": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "registry.example.com/team/app:1.2.3"}]}}}
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
        m.entry("/apis/apps/v1/replicasets".into()).or_default().push(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": rs, "namespace": "games", "uid": format!("rs-{h}"), "labels": labels.clone(),
                         "ownerReferences": [owner("Deployment", &dep, &format!("dep-{h}"))]},
            "spec": {"replicas": pods_each, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": labels.clone()}}}
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

/// VmRSS (KiB) of `run` against a fake API server holding `objects`, once ready and settled.
async fn measure(objects: HashMap<String, Vec<Value>>) -> Option<u64> {
    let api = fake_apiserver::start_with(Arc::new(objects)).await;
    let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    if !run.wait_ready().await {
        println!("run mode never became ready");
        return None;
    }
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    run.rss_kib()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let Some(idle) = measure(HashMap::new()).await else {
            return;
        };
        println!("run, idle (caches synced, 0 objects):           VmRSS = {:6.1} MiB", mib(idle));
        if let Some(f) = measure(foreign(10_000)).await {
            let per = (f.saturating_sub(idle) * 1024) as f64 / 10_000.0;
            println!(
                "run, 10,000 foreign pods:                       VmRSS = {:6.1} MiB  ({per:.0} B per foreign pod; targets <= 60 MiB, <= 2048 B)",
                mib(f)
            );
        }
        if let Some(o) = measure(own(20, 50)).await {
            let per = (o.saturating_sub(idle) * 1024) as f64 / 1_000.0;
            println!(
                "run, 1,000 own pods of 20 HSDs (+ Deployments/ReplicaSets): VmRSS = {:6.1} MiB  ({per:.0} B per own pod; target <= 40 MiB)",
                mib(o)
            );
        }
    });
}
