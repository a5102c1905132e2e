//! End-to-end tests against the cluster `KUBECONFIG` names. They run only with
//! `KUBE_STANDBY_E2E=1`; otherwise `cargo test` lists each as ignored with the reason.
//! Each test creates its own namespace and deletes it afterwards. Pods are brought to
//! Running by the real scheduler and kubelet; assertions are on API state.
mod actor;
mod claims;
mod guard;
mod hsd;
mod hsj;
mod kubectl;
mod singleton;
mod startup;
mod util;
