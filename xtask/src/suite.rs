//! `cargo xtask run` (build and run the agent) and `cargo xtask test` (the
//! whole test suite, what `.ci/run` calls).

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::setup;
use crate::util::{is_root, root, step};

/// `cargo xtask run [ARGS...]`: everything a newcomer needs to run the agent.
pub fn run_agent(args: &[String]) -> Result<()> {
    setup::ensure(false)?;
    let root = root();
    step(
        "cargo build --release -p t3pressure (eBPF programs included)",
        Command::new("cargo")
            .args(["build", "--release", "-p", "t3pressure"])
            .current_dir(&root),
        "see the compiler's message above; `cargo xtask setup` repairs the toolchain",
    )?;
    if !is_root() {
        eprintln!(
            "==> warning: not root: the agent will run without BPF and cannot kill; \
             run `sudo cargo xtask run` on a real host"
        );
    }
    let bin = root.join("target/release/t3pressure");
    eprintln!("==> exec {} run {}", bin.display(), args.join(" "));
    let err = Command::new(&bin).arg("run").args(args).exec();
    bail!("cannot exec {}: {err}", bin.display())
}

/// `cargo xtask test [--no-vm]`: fmt, clippy, unit and integration tests,
/// root/BPF tests on this host, and the VM scenario suite.
pub fn test(args: &[String]) -> Result<()> {
    let no_vm = args.iter().any(|a| a == "--no-vm");
    if let Some(bad) = args.iter().find(|a| *a != "--no-vm") {
        bail!("test: unknown argument {bad:?} (only --no-vm)");
    }
    if !is_root() {
        bail!(
            "the test suite loads BPF programs, makes cgroups and kills processes: \
             run it as root (sudo cargo xtask test)"
        );
    }
    let started = Instant::now();
    setup::ensure(true)?;
    let root = root();
    let cargo = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.args(args).current_dir(&root);
        c
    };
    let mut stages: Vec<(&str, f64)> = Vec::new();
    let mut timed = |name: &'static str, cmd: &mut Command, hint: &str| -> Result<()> {
        let t = Instant::now();
        step(name, cmd, hint)?;
        stages.push((name, t.elapsed().as_secs_f64()));
        Ok(())
    };
    timed(
        "cargo fmt --all --check",
        &mut cargo(&["fmt", "--all", "--check"]),
        "run `cargo fmt --all`",
    )?;
    timed(
        "cargo clippy --workspace --all-targets -D warnings",
        &mut cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "fix the lints above",
    )?;
    timed(
        "cargo build (agent with its eBPF object, tests)",
        &mut cargo(&["build", "--all-targets"]),
        "see the compiler's message above",
    )?;
    timed(
        "unit and integration tests (agent, common, xtask)",
        &mut cargo(&[
            "test",
            "-p",
            "t3pressure",
            "-p",
            "agent-common",
            "-p",
            "xtask",
        ]),
        "a test failed: see its message above",
    )?;
    // These tests share one CPU set, the cgroup2 mount and the BPF programs:
    // run them one at a time so their figures are not each other's noise.
    timed(
        "root, BPF, tmux and deploy tests (t3pressure-tests, one at a time)",
        &mut cargo(&["test", "-p", "t3pressure-tests", "--", "--test-threads=1"]),
        "a test failed: see its message above",
    )?;
    if no_vm {
        eprintln!("==> VM scenario suite skipped (--no-vm)");
    } else {
        vm_suite(&mut timed)?;
    }
    eprintln!("==> xtask test: every stage passed");
    for (name, secs) in &stages {
        eprintln!("    {secs:>7.1} s  {name}");
    }
    eprintln!("    {:>7.1} s  total", started.elapsed().as_secs_f64());
    Ok(())
}

fn vm_suite(timed: &mut impl FnMut(&'static str, &mut Command, &str) -> Result<()>) -> Result<()> {
    // The VM suite is an xtask of its own (it builds the image, boots QEMU
    // and prints its results table); run it as a child so its time is
    // counted like the other stages.
    timed(
        "VM scenario suite (cargo xtask vm): systemd, cgroup v2, the real unit",
        Command::new("cargo")
            .args(["xtask", "vm"])
            .current_dir(root()),
        "see the results table and the serial log tail above (target/vm/)",
    )
}
