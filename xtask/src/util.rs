//! Small helpers: running commands with a progress line, finding the workspace.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The workspace root (parent of xtask/).
pub fn root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(PathBuf::from).unwrap_or(dir)
}

/// Prints `==> what`, runs the command, and fails with `hint` if it fails.
pub fn step(what: &str, cmd: &mut Command, hint: &str) -> Result<()> {
    eprintln!("==> {what}");
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}; {hint}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status}); {hint}");
    }
    eprintln!("    done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs a command and returns its stdout when it succeeds.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY-free: read the effective uid from procfs rather than link libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
