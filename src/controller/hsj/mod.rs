//! HotStandbyJob reconciler.
pub mod plan;
