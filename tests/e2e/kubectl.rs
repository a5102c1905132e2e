//! What a kubectl user meets: `kubectl explain` of nested fields, nested typos refused,
//! both StatefulSingleton groups listed the way README documents, every example applied
//! into a fresh namespace. kubectl runs as a process (`$KUBECTL`, default `kubectl`) with
//! a fresh discovery cache, so short names and categories are read from the server.
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util;

struct Kubectl {
    cache: std::path::PathBuf,
}

impl Kubectl {
    fn new(ns: &str) -> Self {
        let cache = std::env::temp_dir().join(format!("kube-standby-e2e-kubectl-{ns}"));
        let _ = std::fs::remove_dir_all(&cache);
        Kubectl { cache }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut child = Command::new(&bin)
            .args(args)
            .arg(format!("--cache-dir={}", self.cache.display()))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {bin}: {e} (set KUBECTL to its path)"));
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(input);
        child.wait_with_output().expect("kubectl output")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Object names (`-o name`, e.g. `statefulsingleton.apps.statefulsingleton.com/a`).
    fn names(&self, ns: &str, what: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .ok(&["get", what, "-n", ns, "-o", "name"], None)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }
}

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The description of `path` (`.spec.scaling`) in the generated schema of CRD `crd`.
fn description(crd: &str, path: &str) -> String {
    let crd = kube_standby::api::all_crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(crd))
        .unwrap_or_else(|| panic!("no CRD {crd}"));
    let mut s = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema")
        ["openAPIV3Schema"]
        .clone();
    for part in path.trim_start_matches('.').split('.') {
        s = s["properties"][part].clone();
    }
    s["description"]
        .as_str()
        .unwrap_or_else(|| panic!("{crd:?} {path}: no description"))
        .to_string()
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn explain_shows_nested_descriptions_and_nested_typos_are_refused() {
    if !util::enabled("explain_shows_nested_descriptions_and_nested_typos_are_refused") {
        return;
    }
    util::in_namespace("explain", |_client, ns| async move {
        let k = Kubectl::new(&ns);
        // A nested field of each kind (each was `<>` while optional objects were nullable).
        let cases = [
            ("hotstandbydeployments.apps.paia.tech", "apps.paia.tech/v1alpha1", ".spec.busyProbe.http"),
            ("hotstandbyjobs.apps.paia.tech", "apps.paia.tech/v1alpha1", ".spec.busyProbe.exec"),
            ("statefulsingletons.apps.statefulsingleton.com", "apps.statefulsingleton.com/v1", ".spec.selector"),
            (
                "statefulsingletons.apps.openshift.statefulsingleton.com",
                "apps.openshift.statefulsingleton.com/v1",
                ".spec.selector",
            ),
            ("asyncactors.asya.io", "asya.io/v1alpha1", ".spec.scaling"),
            ("asyncactors.asya.io", "asya.io/v1alpha1", ".spec.timeout"),
        ];
        for (crd, api_version, path) in cases {
            let plural = crd.split('.').next().expect("plural");
            let want = words(&description(crd, path));
            // The first words: kubectl wraps long descriptions.
            let head: String = want.split(' ').take(6).collect::<Vec<_>>().join(" ");
            let field = format!("{plural}{path}");
            let start = Instant::now();
            loop {
                // The API server publishes a new CRD's OpenAPI a few seconds after it is established.
                let out = k.run(&["explain", &field, &format!("--api-version={api_version}")], None);
                let text = words(&String::from_utf8_lossy(&out.stdout));
                if out.status.success() && text.contains(&head) && text.contains("FIELDS:") {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(90),
                    "kubectl explain {field} --api-version={api_version}: want {head:?} and FIELDS, got {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        // A nested typo is refused (client-side validation on 1.24, server-side field
        // validation on newer servers), and nothing is stored.
        let mut typo: Value = serde_yaml::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/asyncactor-hello.yaml"),
            )
            .expect("example"),
        )
        .expect("yaml");
        typo["metadata"]["name"] = "typo".into();
        typo["spec"]["scaling"] = serde_json::json!({"enabeld": true});
        let fixed = {
            let mut f = typo.clone();
            f["spec"]["scaling"] = serde_json::json!({"enabled": true});
            f.to_string()
        };
        let typo = typo.to_string();
        let out = k.run(&["apply", "-n", &ns, "-f", "-"], Some(&typo));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the typo was accepted: {}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr.contains("enabeld"), "the error should name the field: {stderr}");
        assert!(
            !k.run(&["get", "asyncactors.asya.io", "typo", "-n", &ns], None).status.success(),
            "the object was stored"
        );
        // The same object spelt right is accepted (the refusal was the typo's).
        k.ok(&["apply", "-n", &ns, "-f", "-"], Some(&fixed));
        let got: Value = serde_json::from_str(&k.ok(
            &["get", "asyncactors.asya.io", "typo", "-n", &ns, "-o", "json"],
            None,
        ))
        .expect("json");
        assert_eq!(got["spec"]["scaling"]["enabled"], true);
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn both_singleton_groups_are_listed_the_documented_way() {
    if !util::enabled("both_singleton_groups_are_listed_the_documented_way") {
        return;
    }
    util::in_namespace("groups", |_client, ns| async move {
        let k = Kubectl::new(&ns);
        let object = |group: &str, name: &str| {
            format!(
                "apiVersion: {group}/v1\nkind: StatefulSingleton\nmetadata:\n  name: {name}\n\
                 spec:\n  selector:\n    matchLabels: {{app: {name}}}\n"
            )
        };
        k.ok(
            &["apply", "-n", &ns, "-f", "-"],
            Some(&object("apps.statefulsingleton.com", "main")),
        );
        k.ok(
            &["apply", "-n", &ns, "-f", "-"],
            Some(&object("apps.openshift.statefulsingleton.com", "legacy")),
        );
        let main = vec!["statefulsingleton.apps.statefulsingleton.com/main".to_string()];
        let legacy =
            vec!["statefulsingleton.apps.openshift.statefulsingleton.com/legacy".to_string()];
        // README, "Seeing both StatefulSingleton groups".
        assert_eq!(k.names(&ns, "singletons"), main);
        assert_eq!(
            k.names(&ns, "statefulsingletons.apps.statefulsingleton.com"),
            main
        );
        assert_eq!(k.names(&ns, "ossingletons"), legacy);
        assert_eq!(
            k.names(
                &ns,
                "statefulsingletons.apps.openshift.statefulsingleton.com"
            ),
            legacy
        );
        assert_eq!(
            k.names(&ns, "statefulsingletons"),
            legacy,
            "README says a bare `statefulsingletons` shows the original README's group"
        );
        let all = k.names(&ns, "kube-standby");
        assert!(
            all.contains(&main[0]) && all.contains(&legacy[0]),
            "{all:?}"
        );
    })
    .await;
}

/// The YAML files directly in `examples/` (what `kubectl apply -f examples/` reads).
fn top_level_examples() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn every_example_applies_into_a_fresh_namespace() {
    if !util::enabled("every_example_applies_into_a_fresh_namespace") {
        return;
    }
    util::in_namespace("examples", |_client, ns| async move {
        let k = Kubectl::new(&ns);
        let mut want = vec![];
        for file in top_level_examples() {
            let text = std::fs::read_to_string(&file).expect("example");
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
                let ours = v["apiVersion"].as_str().is_some_and(|a| {
                    [
                        "apps.paia.tech/",
                        "apps.statefulsingleton.com/",
                        "apps.openshift.statefulsingleton.com/",
                        "asya.io/",
                    ]
                    .iter()
                    .any(|g| a.starts_with(g))
                });
                if !ours {
                    continue;
                }
                want.push(v["metadata"]["name"].as_str().expect("name").to_string());
            }
        }
        assert!(!want.is_empty());
        // As README says: every example at once, into any namespace.
        k.ok(&["apply", "-n", &ns, "-f", "examples/"], None);
        let got: Vec<String> = k
            .names(&ns, "kube-standby")
            .into_iter()
            .filter_map(|n| n.split_once('/').map(|(_, name)| name.to_string()))
            .collect();
        for name in want {
            assert!(got.contains(&name), "{name} not in namespace {ns}: {got:?}");
        }
    })
    .await;
}

/// The chart rendered by the real Helm engine (`tests/chart/render.py`, run with
/// `$KUBE_STANDBY_E2E_PYTHON`, default `.ci/venv/bin/python` as `.ci/run` makes it).
fn render_chart(namespace: &str, values: &Value) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("KUBE_STANDBY_E2E_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join(".ci/venv/bin/python"));
    let out = Command::new(&python)
        .arg(root.join("tests/chart/render.py"))
        .arg(namespace)
        .arg(values.to_string())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (python3 -m venv .ci/venv && .ci/venv/bin/pip install helm-python-sdk pyyaml, or set KUBE_STANDBY_E2E_PYTHON)",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "rendering the chart with {values}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `watchNamespaces` shape (and cert-manager mode when its CRDs are installed) renders
/// objects the API server accepts: a server-side dry run applies the whole rendered chart,
/// so the API server's own validation (e.g. `values: Required value` for an `In` selector
/// without values) is what judges it. Nothing is created.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn the_rendered_chart_is_accepted_by_the_api_server() {
    if !util::enabled("the_rendered_chart_is_accepted_by_the_api_server") {
        return;
    }
    util::in_namespace("chart", |_client, ns| async move {
        let k = Kubectl::new(&ns);
        let mut cases = vec![
            ("default values", serde_json::json!({})),
            ("the release namespace only", serde_json::json!({"watchNamespaces": [ns]})),
            ("several namespaces", serde_json::json!({"watchNamespaces": [ns, "default"]})),
            ("one other namespace", serde_json::json!({"watchNamespaces": ["default"]})),
        ];
        let cert_manager = k
            .run(&["get", "crd", "certificates.cert-manager.io", "issuers.cert-manager.io"], None)
            .status
            .success();
        if cert_manager {
            cases.push(("cert-manager mode", serde_json::json!({"tls": {"mode": "certManager"}})));
        } else {
            let rendered = render_chart(&ns, &serde_json::json!({"tls": {"mode": "certManager"}}));
            assert!(rendered.contains("kind: Certificate"));
            eprintln!(
                "the_rendered_chart_is_accepted_by_the_api_server: cert-manager mode rendered only, not applied: \
                 the cert-manager CRDs (certificates.cert-manager.io, issuers.cert-manager.io) are not installed"
            );
        }
        for (what, values) in cases {
            let yaml = render_chart(&ns, &values);
            // No -n: every namespaced object names its namespace (some are in other namespaces).
            let out = k.run(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
            assert!(
                out.status.success(),
                "{what}: the API server refused the rendered chart: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The webhook configuration was among what it accepted.
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("mutatingwebhookconfiguration"),
                "{what}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    })
    .await;
}

/// A real install of the rendered chart (default values except: the release namespace
/// only, and the operator pods placed on `real-node-0` with pull policy `Never`, where the
/// image built from this release is present): the API server accepts every object, the
/// operator really runs with the chart's flags and RBAC, and its readiness probe
/// (`/readyz`: every cache listed) passes. Everything installed is removed again.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn the_chart_installs_and_the_operator_becomes_ready_on_a_real_node() {
    if !util::enabled("the_chart_installs_and_the_operator_becomes_ready_on_a_real_node") {
        return;
    }
    util::in_namespace("chart-install", |_client, ns| async move {
        let k = Kubectl::new(&ns);
        let name = format!("ks-{ns}");
        let values = serde_json::json!({
            "fullnameOverride": name,
            "watchNamespaces": [ns],
            "nodeSelector": {"kubernetes.io/hostname": "real-node-0"},
            "image": {"pullPolicy": "Never"},
        });
        let yaml = render_chart(&ns, &values);
        let out = k.run(&["apply", "-f", "-"], Some(&yaml));
        let installed = out.status.success();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let ready = installed && {
            let started = Instant::now();
            let mut ready = false;
            while started.elapsed() < Duration::from_secs(240) {
                let got = k.run(&["get", "deployment", &name, "-n", &ns, "-o", "json"], None);
                if let Ok(d) = serde_json::from_slice::<Value>(&got.stdout) {
                    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
                    if d["status"]["readyReplicas"].as_i64() == Some(want) {
                        ready = true;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            ready
        };
        let pods = k.run(
            &[
                "get",
                "pods",
                "-n",
                &ns,
                "-l",
                &format!("app.kubernetes.io/instance={name}"),
                "-o",
                "wide",
            ],
            None,
        );
        let logs = k.run(
            &[
                "logs",
                "-n",
                &ns,
                &format!("deployment/{name}"),
                "--tail=200",
            ],
            None,
        );
        let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
        // Remove what was installed (cluster-scoped objects too), whatever happened.
        let _ = k.run(
            &["delete", "--wait=false", "--ignore-not-found", "-f", "-"],
            Some(&yaml),
        );
        assert!(installed, "the API server refused the chart: {stderr}");
        assert!(
            ready,
            "the operator did not become ready in 240 s\npods:\n{}\nlogs:\n{logs}",
            String::from_utf8_lossy(&pods.stdout)
        );
        assert!(
            String::from_utf8_lossy(&pods.stdout).contains("real-node-0"),
            "{}",
            String::from_utf8_lossy(&pods.stdout)
        );
        assert!(
            !logs.to_lowercase().contains("forbidden"),
            "the chart's RBAC is short of something:\n{logs}"
        );
    })
    .await;
}
