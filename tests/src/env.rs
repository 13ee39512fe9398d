//! Environment checks: tests that need root and BPF start with these and
//! fail loudly (never pass silently) when the host cannot run them.

use std::sync::{Mutex, MutexGuard};

/// Panics unless running as root on a kernel with BTF and the tracepoints
/// the programs use.
pub fn require_root_bpf() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (BPF programs, cgroups): run the test suite as root"
    );
    assert!(
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "this test needs a kernel with BTF (/sys/kernel/btf/vmlinux)"
    );
    assert!(
        std::path::Path::new("/sys/fs/cgroup/unified").is_dir()
            || std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "this test needs a cgroup2 mount"
    );
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests that load BPF and run timed loads, so that they do
/// not skew each other's figures.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drives the BPF event stream for `dur` on a current-thread runtime and
/// returns what arrived.
pub fn collect_events(
    rt: &tokio::runtime::Runtime,
    rx: &mut tokio::sync::mpsc::Receiver<t3pressure::sources::bpf::BpfEvent>,
    dur: std::time::Duration,
) -> Vec<t3pressure::sources::bpf::BpfEvent> {
    rt.block_on(async {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + dur;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            out.push(ev);
        }
        out
    })
}

/// A current-thread tokio runtime for the tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
