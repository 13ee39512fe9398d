//! Helpers for the integration tests that need root, BPF, tmux or a VM.

pub mod cgroup;
pub mod env;
