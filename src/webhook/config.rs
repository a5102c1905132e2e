//! What the pure mutators look at besides the pod: the injection settings and the
//! namespace's StatefulSingletons. Its own module so `mutate` (the pipeline) and each
//! feature's mutator depend on it and never on each other's callers.
use std::sync::Arc;

use crate::api::StatefulSingleton;

/// What the webhook injects into pods that need the in-pod agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Injection {
    /// Image of the kube-standby agent (sidecar and init gate).
    pub agent_image: String,
    /// URL the agent uses to reach the operator.
    pub operator_url: String,
    /// What the agent trusts for `operator_url` (`KUBE_STANDBY_CA`): the pins of the
    /// operator's CA bundle (`sha256:<hex>,...`, see [`crate::tls::pin`]), or a PEM bundle.
    pub agent_ca: String,
}

/// Everything a mutator may look at besides the pod.
pub struct Config<'a> {
    /// StatefulSingletons of the pod's namespace.
    pub singletons: Vec<Arc<StatefulSingleton>>,
    pub injection: &'a Injection,
}
