//! kube-standby: one operator for warm pools, stateful singletons and async actors.
//!
//! Dependencies point one way:
//!
//! ```text
//! api (types, no I/O)
//!   <- probe (busy sources)            <- controller::<kind>::plan (pure)
//!   <- controller::shell + <kind> apply (I/O, one shell for every kind)
//!   <- webhook::mutate (pure)          <- webhook router/handler, tls, server
//!   <- runtime (caches, leader election, supervision; the only place that sees both
//!      controllers and the webhook)
//!   <- cli (the only place that sees clap; builds plain RunConfig/ServerConfig) <- main
//! ```
//!
//! Nothing below `cli` imports `cli`; controllers never import the webhook or the server.
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
