//! kube-standby: one operator for warm pools, stateful singletons and async actors.
//!
//! Dependency direction: `api` (types, no I/O) → pure cores (`webhook::mutate`,
//! `controller::*::plan`) → runtime I/O (`tls`, `webhook::router`, `controller::*::run`).
#![forbid(unsafe_code)]

pub mod agent;
// kube-derive's repeated `printcolumn(type_ = ...)` keys trip this lint by design.
#[allow(clippy::duplicated_attributes)]
pub mod api;
pub mod certs;
pub mod cli;
pub mod controller;
pub mod error;
pub mod metrics;
pub mod probe;
pub mod runtime;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod webhook;
pub mod webhook_config;

pub use error::{Error, Result};

/// The name the operator uses as field manager and event reporter.
pub const MANAGER: &str = "kube-standby";
