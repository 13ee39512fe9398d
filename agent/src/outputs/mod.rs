//! Outputs: Prometheus metrics, the HTTP endpoint and its snapshot API, and
//! the durable event log.

pub mod snapshot;
pub mod systemd;
