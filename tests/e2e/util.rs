use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;

/// Every e2e test is `#[ignore]`d unless built with `KUBE_STANDBY_E2E=1` (see build.rs), so a
/// run without a cluster reports them as ignored. One forced with `--ignored` but without
/// the variable fails loudly rather than passing without having run.
pub fn enabled(test: &str) -> bool {
    let on = std::env::var("KUBE_STANDBY_E2E").as_deref() == Ok("1");
    assert!(
        on,
        "e2e {test}: set KUBE_STANDBY_E2E=1 and KUBECONFIG to run it against a cluster"
    );
    on
}

/// A pause image every kubelet can pull (the default sandbox image).
pub const PAUSE: &str = "registry.k8s.io/pause:3.10";

pub async fn client() -> Client {
    Client::try_default()
        .await
        .expect("a cluster from KUBECONFIG")
}

/// Install the CRDs (server-side apply) and wait until they are established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kube_standby::api::all_crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        api.patch(
            &name,
            &PatchParams::apply("kube-standby-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply crd");
        wait_for(
            Duration::from_secs(60),
            &format!("CRD {name} established"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    api.get(&name)
                        .await
                        .ok()
                        .and_then(|c| c.status)
                        .and_then(|s| s.conditions)
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        })
                }
            },
        )
        .await;
    }
}

/// A fresh namespace, deleted by `cleanup`.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        serde_json::json!({"metadata": {"generateName": format!("{prefix}-")}}),
    )
    .expect("ns");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace")
        .metadata
        .name
        .expect("ns name")
}

pub async fn cleanup(client: &Client, ns: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(ns, &DeleteParams::background()).await;
}

/// Poll `check` every 200 ms until true; panic with `what` after `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Held shared by every test while it runs, and exclusively by a test that deletes and
/// re-creates the CRDs (which deletes every object of our kinds cluster-wide).
pub static CRDS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Run `body` in a task; clean the namespace up whatever happens, then re-raise a failure.
pub async fn in_namespace<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _shared = CRDS.read().await;
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    let res = tokio::spawn(body(client.clone(), ns.clone())).await;
    cleanup(&client, &ns).await;
    if let Err(e) = res {
        std::panic::resume_unwind(e.into_panic());
    }
}
