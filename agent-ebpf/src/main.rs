//! t3pressure's eBPF programs: scheduler stalls (run-queue wait, D state) of
//! tasks inside watched units, and OOM kills.
//!
//! rustc emits no CO-RE relocations, so tracepoint field offsets come from
//! the format files, read by userspace at load time and set as `.rodata`
//! globals (see `agent/src/sources/bpf/format.rs`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `core::intrinsics::atomic_xadd` (see `shared::add_task_slot`); the crate
// is built with RUSTC_BOOTSTRAP=1 anyway (`-Z build-std`).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod oom;
mod sched;
mod shared;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// On the host (`cargo clippy --workspace`, where feature unification
/// brings `std` in through `agent-common/user`) the crate is only checked.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

/// The kernel only lets GPL-compatible programs call some helpers
/// (`bpf_probe_read_kernel`, `bpf_get_current_ancestor_cgroup_id`, ...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
