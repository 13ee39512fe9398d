//! t3pressure's eBPF programs: scheduler stalls (run-queue wait, D state) of
//! tasks inside watched units, and OOM kills.
//!
//! rustc emits no CO-RE relocations, so tracepoint field offsets come from
//! the format files, read by userspace at load time and set as `.rodata`
//! globals (see `agent/src/sources/bpf/format.rs`).
#![no_std]
#![no_main]

mod oom;
mod sched;
mod shared;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel only lets GPL-compatible programs call some helpers
/// (`bpf_probe_read_kernel`, `bpf_get_current_ancestor_cgroup_id`, ...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
