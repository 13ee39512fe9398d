//! Helpers for the integration tests that need root, BPF, tmux or a VM.
//! Every such test checks its environment first and fails loudly when it is
//! missing: CI runs as root on a machine where all of it exists.

use std::path::PathBuf;
use std::process::Command;

/// Path of the `t3pressure` binary built for this test run (building it if
/// needed, so a lone `cargo test -p t3pressure-tests` works).
pub fn agent_bin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug/t3pressure");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "t3pressure"])
            .current_dir(&root)
            .status()
            .expect("run cargo build -p t3pressure");
        assert!(status.success(), "cargo build -p t3pressure failed");
    }
    assert!(bin.exists(), "{} missing after build", bin.display());
    bin
}

/// Fails the test unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (BPF, cgroups, kills): run the suite with `sudo cargo xtask test`"
    );
}

/// Fails the test unless `tool` is on PATH.
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{tool}`: `cargo xtask setup --test` installs it"
    );
}

pub mod procs;
