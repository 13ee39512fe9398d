//! Helpers for the integration tests that need root, BPF, tmux or a VM.
//! Every such test checks its environment first and fails loudly when it is
//! missing: CI runs as root on a machine where all of it exists.

pub mod cgroup;
pub mod env;
pub mod procs;
