//! Outputs: Prometheus metrics, the HTTP endpoint and its snapshot API, and
//! the durable event log.

pub mod eventlog;
pub mod http;
pub mod log2_histogram;
pub mod metrics;
pub mod snapshot;
pub mod systemd;
