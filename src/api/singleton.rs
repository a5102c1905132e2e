//! StatefulSingleton (`apps.statefulsingleton.com/v1`).
//!
//! The seed README's own example uses `apps.openshift.statefulsingleton.com/v1`, while its
//! pods carry `apps.statefulsingleton.com/...` keys. Both groups are served (see
//! [`legacy_group_crd`]) so either YAML applies unchanged.
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The group the seed README's example uses.
pub const LEGACY_GROUP: &str = "apps.openshift.statefulsingleton.com";

/// Spec of a StatefulSingleton: at most one pod matching `selector` runs its app at a time.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.statefulsingleton.com",
    version = "v1",
    kind = "StatefulSingleton",
    plural = "statefulsingletons",
    singular = "statefulsingleton",
    shortname = "singleton",
    shortname = "singletons",
    category = "kube-standby",
    namespaced,
    status = "StatefulSingletonStatus",
    derive = "PartialEq",
    doc = "Guarantees that at most one pod matching the selector runs its application at any time.",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "Running, Transitioning or Blocked"
    ),
    printcolumn(
        name = "Active Pod",
        type_ = "string",
        json_path = ".status.activePod",
        description = "The released pod"
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".status.epoch",
        description = "Fencing epoch of the last release"
    ),
    printcolumn(
        name = "Standby",
        type_ = "string",
        json_path = ".status.standbyPods",
        description = "Gated pods ready to take over",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSingletonSpec {
    /// Pods this singleton manages (same namespace).
    pub selector: LabelSelector,
    /// Grace period (seconds) given to a pod of this singleton on termination.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 0))]
    pub termination_grace_period: i64,
    /// Seconds a handover may take before it is reported as timed out (it keeps waiting safely).
    #[serde(default = "default_max_transition")]
    #[schemars(range(min = 1, max = 3600))]
    pub max_transition_time: i64,
    /// Keep the pod's own terminationGracePeriodSeconds when it is longer.
    #[serde(default = "super::default_true")]
    pub respect_pod_grace_period: bool,
    /// How the app is held back until release: `wrapper` (wrap each container's command),
    /// `initContainer` (an init container waits), or `auto` (wrapper when every container
    /// has a command, else initContainer).
    #[serde(default)]
    pub start_gate: StartGate,
}

fn default_grace() -> i64 {
    30
}
fn default_max_transition() -> i64 {
    300
}

/// Start gate kinds.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StartGate {
    /// Wrapper when every app container has a command, else initContainer.
    #[default]
    Auto,
    /// Wrap each app container's command with the wait script.
    Wrapper,
    /// Add an init container that exits once the pod is released.
    InitContainer,
}

/// Handover phase.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Running,
    Transitioning,
    Blocked,
}

/// Observed state of a StatefulSingleton.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSingletonStatus {
    /// Running, Transitioning or Blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Name of the released pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_pod: Option<String>,
    /// UID of the active pod (a pod of the same name may come back with another UID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_pod_uid: Option<String>,
    /// Node of the active pod: if it vanishes while that node is lost, nothing is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_node: Option<String>,
    /// When the current handover started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition_timestamp: Option<Time>,
    /// Human-readable state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (TransitionTimedOut, Overlapping, NodeLost, StandbyReady, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Fencing epoch of the last release: 1 for the first released pod, one more for each
    /// release after it. Written before the release itself, so it never goes backwards.
    /// The released pod carries it in annotation `apps.statefulsingleton.com/epoch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub epoch: Option<i64>,
    /// Gated pods waiting, ready to take over when the active pod is gone (warm standbys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standby_pods: Vec<String>,
}

/// The same CRD served under the seed README's group, so its example applies unchanged.
///
/// Both groups have the plural `statefulsingletons` (the originals' URLs and RBAC rules use
/// it). kubectl resolves a bare `statefulsingletons` to one group only: among CRD groups of
/// equal priority the API server lists them alphabetically, so that is this legacy group.
/// Each group therefore has short names of its own ([`LEGACY_SHORT_NAMES`] here,
/// `singleton`/`singletons` for the main group), and both are in the `kube-standby`
/// category; README ("Seeing both StatefulSingleton groups") documents the commands.
pub fn legacy_group_crd() -> CustomResourceDefinition {
    let mut crd = StatefulSingleton::crd();
    crd.metadata.name = Some(format!("{}.{}", crd.spec.names.plural, LEGACY_GROUP));
    crd.spec.group = LEGACY_GROUP.to_string();
    crd.spec.names.short_names = Some(LEGACY_SHORT_NAMES.iter().map(|s| s.to_string()).collect());
    crd
}

/// Short names of the legacy group's CRD (the main group's are `singleton`, `singletons`).
pub const LEGACY_SHORT_NAMES: &[&str] = &["ossingleton", "ossingletons"];

/// Pod label: the pod is managed by a StatefulSingleton.
pub const MANAGED_LABEL: &str = "apps.statefulsingleton.com/managed";
/// Pod label: the name of the owning StatefulSingleton.
pub const SINGLETON_LABEL: &str = "apps.statefulsingleton.com/singleton";
/// Readiness gate / pod condition set True when the pod is released.
pub const READY_CONDITION: &str = "apps.statefulsingleton.com/singleton-ready";
/// Pod annotation: when the controller released the pod (the durable release record).
pub const RELEASED_ANNOTATION: &str = "apps.statefulsingleton.com/released";
/// Pod annotation: the fencing epoch the pod was released with (see `status.epoch`).
pub const EPOCH_ANNOTATION: &str = "apps.statefulsingleton.com/epoch";
/// Pod annotation: which start gate was injected (`wrapper` or `initContainer`).
pub const GATE_ANNOTATION: &str = "apps.statefulsingleton.com/gate";
/// Name of the injected status sidecar (wrapper gate) container.
pub const SIDECAR_NAME: &str = "status-sidecar";
/// Name of the injected init container gate.
pub const INIT_GATE_NAME: &str = "singleton-gate";

/// Does this pod carry a start gate, judged from what was injected (the init gate or the
/// status sidecar running `kube-standby agent`), never from an annotation a user can set?
pub fn carries_gate(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let runs_agent = |c: &k8s_openapi::api::core::v1::Container, name: &str| {
        c.name == name
            && c.args
                .as_ref()
                .is_some_and(|a| a.first().is_some_and(|a| a == "agent"))
    };
    pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| runs_agent(c, SIDECAR_NAME))
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| runs_agent(c, INIT_GATE_NAME))
    })
}

/// Names of the volumes the webhook adds (a pod that already uses one gets `<name>-2`, ...).
pub const WRAPPER_VOLUME: &str = "statefulsingleton-wrapper";
pub const SIGNAL_VOLUME: &str = "statefulsingleton-signal";
pub const TOKEN_VOLUME: &str = "statefulsingleton-token";

/// The ConfigMap holding the wrapper script, in each namespace that needs it.
pub const WRAPPER_CONFIGMAP: &str = "statefulsingleton-wrapper";
pub const WRAPPER_DIR: &str = "/opt/wrapper";
pub const WRAPPER_SCRIPT_NAME: &str = "entrypoint-wrapper.sh";
pub const SIGNAL_DIR: &str = "/var/run/signal";
pub const SIGNAL_FILE: &str = "/var/run/signal/start-signal";
/// Name (in the signal file's directory) of the file holding the released pod's epoch,
/// written atomically by the agent before the signal file.
pub const EPOCH_FILE_NAME: &str = "epoch";
/// The epoch file at its documented path, the one the app reads on either gate (the init
/// gate writes it there; the app containers mount the signal volume read-only).
pub const EPOCH_FILE: &str = "/var/run/signal/epoch";
/// Name (in the signal file's directory) of the FIFO the wrapper blocks on and the agent
/// opens for writing once the signal file is written: the wrapper wakes at once.
pub const WAKE_FIFO_NAME: &str = "start-wake";
/// The environment variable the wrapper exports to the app: the release's epoch.
pub const EPOCH_ENV: &str = "STATEFULSINGLETON_EPOCH";
/// Audience of the projected token the in-pod agent presents to the operator.
pub const TOKEN_AUDIENCE: &str = "kube-standby";
pub const TOKEN_DIR: &str = "/var/run/secrets/kube-standby";
pub const TOKEN_FILE: &str = "/var/run/secrets/kube-standby/token";

/// The answer of `GET /release` (served by the webhook, read by the in-pod agent): is the
/// asking pod released?
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ReleaseAnswer {
    pub released: bool,
    pub pod: String,
    /// The fencing epoch the pod was released with (absent before the release, and for a
    /// pod released by an operator that gave none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// The start gate script: blocks until the release signal file exists, then `exec "$@"`,
/// so the app receives exactly its original argv, with `STATEFULSINGLETON_EPOCH` exported
/// from the epoch file the agent wrote before the signal.
///
/// The wait has no poll interval: a background `read` blocks opening the wake FIFO (next
/// to the signal file, made by whichever of agent and wrapper comes first), and the agent
/// opens it for writing once the signal file is written, again and again, so any reader,
/// early or late, wakes at once. The signal file stays the durable record: it is checked
/// before every wait and after every wake-up, so a wrapper (re)started after the release
/// starts at once, and a wake-up without it waits again. Only while the FIFO does not
/// exist and cannot be made here (the read-only mount the webhook gives app containers,
/// or no `mkfifo`) does it look every 100 ms, until the agent (which makes it when it
/// starts) has.
///
/// The shell is PID 1 of the app container while it waits, where a signal without a
/// handler is ignored: SIGTERM (or SIGINT) before the release interrupts `wait`, ends the
/// blocked reader and exits 143 (130); the app never starts. `exec` resets the traps, so
/// after the release the app gets signals itself.
pub const WRAPPER_SCRIPT: &str = r#"#!/bin/sh
# kube-standby StatefulSingleton start gate.
# Usage: entrypoint-wrapper.sh -- <original command and args...>
# Waits until the release signal file exists, then replaces itself with the original
# command. Arguments are passed through untouched ("$@"), never re-parsed.
signal="${STATEFULSINGLETON_SIGNAL_FILE:-/var/run/signal/start-signal}"
case "$signal" in */*) dir="${signal%/*}" ;; *) dir=. ;; esac
wake="$dir/start-wake"
epoch_file="$dir/epoch"
if [ "${1-}" = "--" ]; then shift; fi
if [ "$#" -eq 0 ]; then
  echo "StatefulSingleton: no command to start" >&2
  exit 64
fi
waiter=
trap 'kill $waiter 2>/dev/null; echo "StatefulSingleton: SIGTERM before release, not starting" >&2; exit 143' TERM
trap 'kill $waiter 2>/dev/null; echo "StatefulSingleton: SIGINT before release, not starting" >&2; exit 130' INT
echo "StatefulSingleton: waiting for release (${signal})" >&2
while [ ! -e "$signal" ]; do
  if [ ! -p "$wake" ]; then
    mkfifo -m 666 "$wake" 2>/dev/null || true
  fi
  if [ -p "$wake" ]; then
    # Blocks until the agent opens the FIFO for writing (it does once the signal exists).
    (read -r _ < "$wake") &
    waiter=$!
    wait $waiter
    waiter=
  else
    # No FIFO yet and none can be made here: the agent makes it when it starts.
    sleep 0.1 2>/dev/null || sleep 1
  fi
done
if [ -r "$epoch_file" ] && IFS= read -r epoch < "$epoch_file"; then
  case "$epoch" in
    ''|*[!0-9]*) ;;
    *) STATEFULSINGLETON_EPOCH="$epoch"; export STATEFULSINGLETON_EPOCH ;;
  esac
fi
echo "StatefulSingleton: released, starting $1 (epoch ${STATEFULSINGLETON_EPOCH:-none})" >&2
exec "$@"
"#;

/// Anything that answers "the value of label k".
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for std::collections::BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Labels kept compactly: the pool pod cache's interned [`Pairs`] (one allocation, keys
/// and values shared by every pod that carries them), far smaller than a map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactLabels(crate::api::tags::Pairs);

impl CompactLabels {
    pub fn new(labels: Option<&std::collections::BTreeMap<String, String>>) -> Self {
        CompactLabels(crate::api::tags::Pairs::from_entries(
            labels.into_iter().flatten(),
        ))
    }
}

impl Labels for CompactLabels {
    fn label(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }
}

/// Does a label selector match these labels? An empty selector matches nothing here: a
/// singleton over "every pod of the namespace" is never what was meant.
pub fn selector_matches<L: Labels + ?Sized>(sel: &LabelSelector, labels: &L) -> bool {
    let ml = sel.match_labels.as_ref().filter(|m| !m.is_empty());
    let me = sel.match_expressions.as_ref().filter(|e| !e.is_empty());
    if ml.is_none() && me.is_none() {
        return false;
    }
    if let Some(ml) = ml {
        if !ml.iter().all(|(k, v)| labels.label(k) == Some(v.as_str())) {
            return false;
        }
    }
    for e in me.into_iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.label(&e.key);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.iter().any(|x| x == v)),
            "NotIn" => have.is_none_or(|v| !values.iter().any(|x| x == v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false, // unknown operator: match nothing (the API server rejects these anyway)
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Among singletons whose selector matches, the oldest (then by name) wins.
pub fn owning_singleton<'a, S: std::ops::Deref<Target = StatefulSingleton>, L: Labels + ?Sized>(
    singletons: &'a [S],
    labels: &L,
) -> Option<&'a S> {
    singletons
        .iter()
        .filter(|s| selector_matches(&s.spec.selector, labels))
        .min_by(|a, b| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selector_table() {
        let l = labels(&[("app", "db"), ("tier", "data")]);
        let cases = [
            (serde_json::json!({"matchLabels": {"app": "db"}}), true),
            (serde_json::json!({"matchLabels": {"app": "web"}}), false),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["data", "x"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["data"]}]}),
                false,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}),
                false,
            ),
            (
                serde_json::json!({"matchLabels": {"app": "db"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["other"]}]}),
                false,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "app", "operator": "Bogus"}]}),
                false,
            ),
            (serde_json::json!({}), false),
            (serde_json::json!({"matchLabels": {}}), false),
        ];
        for (s, want) in cases {
            assert_eq!(selector_matches(&sel(s.clone()), &l), want, "{s}");
        }
    }

    #[test]
    fn oldest_matching_singleton_wins() {
        let mk = |name: &str, ts: &str| -> StatefulSingleton {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "apps.statefulsingleton.com/v1", "kind": "StatefulSingleton",
                "metadata": {"name": name, "namespace": "n", "creationTimestamp": ts},
                "spec": {"selector": {"matchLabels": {"app": "db"}}}
            }))
            .unwrap()
        };
        let all: Vec<std::sync::Arc<StatefulSingleton>> = [
            mk("young", "2026-02-01T00:00:00Z"),
            mk("old", "2026-01-01T00:00:00Z"),
            mk("old-b", "2026-01-01T00:00:00Z"),
        ]
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
        assert_eq!(
            owning_singleton(&all, &labels(&[("app", "db")]))
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("old")
        );
        assert!(owning_singleton(&all, &labels(&[("app", "web")])).is_none());
    }

    #[test]
    fn compact_labels_match_like_the_map() {
        let m = labels(&[("app", "db"), ("tier", "x"), ("a", "1")]);
        let c = CompactLabels::new(Some(&m));
        for sel in [
            serde_json::json!({"matchLabels": {"app": "db"}}),
            serde_json::json!({"matchLabels": {"app": "web"}}),
            serde_json::json!({"matchLabels": {"a": "1", "tier": "x"}}),
            serde_json::json!({"matchExpressions": [{"key": "zzz", "operator": "DoesNotExist"}]}),
            serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]}),
        ] {
            let sel: LabelSelector = serde_json::from_value(sel).unwrap();
            assert_eq!(
                selector_matches(&sel, &c),
                selector_matches(&sel, &m),
                "{sel:?}"
            );
        }
        assert_eq!(c.label("tier"), Some("x"));
        assert_eq!(c.label("nope"), None);
        assert_eq!(CompactLabels::new(None).label("app"), None);
    }
}
