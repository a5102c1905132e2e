//! A first install in the wrong order: the operator starts in the same instant as its CRDs
//! are created (before the API server serves them). It must become ready within seconds of
//! the CRDs being served, without a restart, and then work.
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube_standby::api::HotStandbyDeployment;
use kube_standby::runtime::{self, RunConfig};
use kube_standby::server::{ServerConfig, TlsMode};
use serde_json::json;

use crate::util::{self, wait_for, PAUSE};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn operator_started_with_its_crds_becomes_ready_and_works_without_a_restart() {
    if !util::enabled("operator_started_with_its_crds_becomes_ready_and_works_without_a_restart") {
        return;
    }
    // Every other e2e test waits: deleting a CRD deletes every object of its kind.
    let _alone = util::CRDS.write().await;
    let client = util::client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kube_standby::api::all_crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        let _ = crds.delete(&name, &DeleteParams::default()).await;
    }
    for crd in kube_standby::api::all_crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        let crds = crds.clone();
        wait_for(
            Duration::from_secs(120),
            &format!("CRD {name} deleted"),
            || {
                let (crds, name) = (crds.clone(), name.clone());
                async move { crds.get_opt(&name).await.ok().flatten().is_none() }
            },
        )
        .await;
    }
    let ns = util::namespace(&client, "startup").await;

    // The same instant: the operator starts and the CRDs are created.
    let ops = free_port();
    let port = free_port();
    let cfg = RunConfig {
        server: ServerConfig {
            bind: format!("127.0.0.1:{port}").parse().expect("bind"),
            metrics_bind: format!("127.0.0.1:{ops}").parse().expect("ops"),
            tls: TlsMode::SelfSigned {
                sans: vec!["localhost".into(), "127.0.0.1".into()],
                ca: None,
                validity: Default::default(),
            },
            ca_file: None,
            ca_pem: None,
            agent_image: PAUSE.into(),
            operator_url: format!("https://127.0.0.1:{port}"),
            conn_limits: Default::default(),
            admission_limits: Default::default(),
            busy_guard: Default::default(),
            held: Default::default(),
        },
        webhook_config_name: None,
        ca_secret: None,
        ca_secret_namespace: ns.clone(),
        leader: None,
        namespaces: vec![ns.clone()],
        actor: Default::default(),
    };
    let operator = tokio::spawn(runtime::run(cfg, client.clone(), std::future::pending()));
    let started = Instant::now();
    for crd in kube_standby::api::all_crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        crds.patch(
            &name,
            &PatchParams::apply("kube-standby-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("create crd");
    }
    // Established (served) at...
    util::install_crds(&client).await;
    let served = started.elapsed();
    let http = reqwest::Client::new();
    let mut last;
    let ready = loop {
        match http
            .get(format!("http://127.0.0.1:{ops}/readyz"))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break started.elapsed(),
            Ok(r) => last = r.text().await.unwrap_or_default(),
            Err(e) => last = e.to_string(),
        }
        assert!(
            started.elapsed() < served + Duration::from_secs(10),
            "not ready 10 s after the CRDs were served ({served:?} after start); /readyz: {last}"
        );
        assert!(!operator.is_finished(), "the operator stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("CRDs served {served:?} after start; ready {ready:?} after start");

    // The HSD controller works without a restart: the child gets idleTarget replicas.
    let hsds: Api<HotStandbyDeployment> = Api::namespaced(client.clone(), &ns);
    let hsd: HotStandbyDeployment = serde_json::from_value(json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
        "metadata": {"name": "warm", "namespace": ns},
        "spec": {"idleTarget": 2, "maxReplicas": 5,
                 "selector": {"matchLabels": {"app": "warm"}},
                 "podTemplate": {"metadata": {"labels": {"app": "warm"}},
                                 "spec": {"containers": [{"name": "app", "image": PAUSE}]}}}
    }))
    .expect("hsd");
    hsds.patch(
        "warm",
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&hsd),
    )
    .await
    .expect("create hsd");
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for(
        Duration::from_secs(30),
        "the child Deployment with 2 replicas",
        || {
            let deps = deps.clone();
            async move {
                deps.get_opt("warm-workload")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|d| d.spec.replicas)
                    == Some(2)
            }
        },
    )
    .await;

    // The singleton controller works too: it writes the status of a new StatefulSingleton.
    let ar = kube_standby::controller::singleton::api_resource("apps.statefulsingleton.com");
    let singletons: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let obj: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.statefulsingleton.com/v1", "kind": "StatefulSingleton",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "db"}}}
    }))
    .expect("singleton");
    singletons
        .patch(
            "db",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("create singleton");
    wait_for(
        Duration::from_secs(30),
        "the singleton's status phase",
        || {
            let s = singletons.clone();
            async move {
                s.get("db")
                    .await
                    .ok()
                    .is_some_and(|o| o.data["status"]["phase"].is_string())
            }
        },
    )
    .await;
    operator.abort();
    util::cleanup(&client, &ns).await;
}
