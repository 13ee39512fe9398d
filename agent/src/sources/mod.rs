//! Sources: typed, stateless reads of cgroupfs and procfs, unit discovery,
//! and the eBPF programs' feeds.

pub mod bpf;
pub mod cgroupfs;
pub mod discovery;
pub mod fdcache;
pub mod host;
pub mod procfs;
pub mod read_errors;
pub mod sampler;
