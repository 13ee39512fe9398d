//! Library target of the eBPF crate, so that it can be a dependency; the
//! programs are in the `t3pressure` binary (`src/main.rs`).
#![no_std]
