//! t3pressure: watches every `t3-serve@<user>.service` unit, says which user
//! stalled, for how long and why, and kills a runaway agent process before the
//! kernel has to.
//!
//! The module tree follows the data flow:
//!
//! ```text
//! sources (cgroupfs, procfs, eBPF)  ->  model (samples, rates, per-unit state)
//!   ->  detectors (stall windows, runaway)  ->  actions (kill)  and  outputs
//!       (metrics, snapshot, event log)  ->  clients (`top`, `events`)
//! ```

pub mod actions;
pub mod check;
pub mod cli;
pub mod clients;
pub mod config;
pub mod detectors;
pub mod model;
pub mod outputs;
pub mod run;
pub mod sources;
pub mod testing;

/// The agent's version, as exported in `t3pressure_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
