//! Sources: typed, stateless reads of cgroupfs and procfs, unit discovery,
//! and the eBPF programs' feeds.
pub mod bpf;
