//! `cargo xtask setup`: installs exactly what is missing for the build route
//! measured on these machines (../shared/docs/toolchain.md): Debian's
//! `rustc-web` + `rust-web-src` (rustup cannot download here), `llvm-22-dev`,
//! `bpf-linker` 0.13.0 built against LLVM 22, and the `debweb` rustup
//! toolchain link aya-build uses. With `--test`, also the real tools the test
//! suite drives (promtool, tmux, systemd-analyze, bpftool, bpftrace, wrk)
//! and cargo-deb (the VM suite installs the agent as its Debian package).

use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{is_root, output, step};

/// Debian packages the build needs.
const BUILD_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "llvm-22-dev"];
/// Debian packages the test suite needs on top.
const TEST_PACKAGES: &[&str] = &[
    "prometheus",
    "tmux",
    "systemd",
    "bpftool",
    "bpftrace",
    "wrk",
    "procps",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const TOOLCHAIN_NAME: &str = "debweb";

pub fn run(args: &[String]) -> Result<()> {
    let with_test = args.iter().any(|a| a == "--test");
    if let Some(bad) = args.iter().find(|a| *a != "--test") {
        bail!("setup: unknown argument {bad:?} (only --test)");
    }
    ensure(with_test)
}

/// Installs what is missing; prints one line per step.
pub fn ensure(with_test: bool) -> Result<()> {
    let mut wanted: Vec<&str> = BUILD_PACKAGES.to_vec();
    if with_test {
        wanted.extend_from_slice(TEST_PACKAGES);
    }
    apt_packages(&wanted)?;
    toolchain_link()?;
    bpf_linker()?;
    if with_test {
        cargo_deb()?;
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", pkg])
        .map(|s| s.trim() == "install ok installed")
        .unwrap_or(false)
}

pub fn apt_packages(wanted: &[&str]) -> Result<()> {
    let missing: Vec<&str> = wanted.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("==> apt packages: all {} present", wanted.len());
        return Ok(());
    }
    if output("apt-get", &["--version"]).is_none() {
        bail!(
            "missing packages {missing:?} and no apt-get: this project's build route is \
             Debian 12 (bookworm); install the equivalents by hand"
        );
    }
    if !is_root() {
        bail!("missing packages {missing:?}; run this as root (sudo cargo xtask setup) to install them");
    }
    step(
        "apt-get update",
        Command::new("apt-get").args(["update", "-q"]),
        "check that the Debian mirror is reachable",
    )?;
    step(
        &format!("apt-get install {}", missing.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "see apt's message above; `apt-get install -f` may repair a broken state",
    )
}

fn toolchain_link() -> Result<()> {
    let list = output("rustup", &["toolchain", "list"]).ok_or_else(|| {
        anyhow::anyhow!("rustup not found: install rustup (the userspace toolchain comes from it)")
    })?;
    if list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(TOOLCHAIN_NAME))
    {
        eprintln!("==> rustup toolchain {TOOLCHAIN_NAME}: linked");
        return Ok(());
    }
    step(
        &format!("rustup toolchain link {TOOLCHAIN_NAME} /usr (Debian's rustc-web)"),
        Command::new("rustup").args(["toolchain", "link", TOOLCHAIN_NAME, "/usr"]),
        "is /usr/bin/rustc from rustc-web? (apt-get install rustc-web)",
    )
}

/// cargo-deb, pinned (`cargo xtask vm` packages the agent with it):
/// ~8 min cold from crates.io on the 2-core machine, once.
fn cargo_deb() -> Result<()> {
    let want = crate::deb::CARGO_DEB_VERSION;
    let have = output("cargo", &["deb", "--version"]).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(want) {
        eprintln!("==> cargo-deb {want}: present");
        return Ok(());
    }
    step(
        &format!("cargo install cargo-deb {want} (~8 min cold)"),
        Command::new("cargo").args([
            "install",
            "cargo-deb",
            "--version",
            want,
            "--locked",
            "--force",
        ]),
        "needs crates.io",
    )
}

fn bpf_linker() -> Result<()> {
    let have = output("bpf-linker", &["--version"]).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION) {
        eprintln!("==> bpf-linker {BPF_LINKER_VERSION}: present");
        return Ok(());
    }
    step(
        &format!("cargo install bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (~2 min)"),
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            // /usr/bin/llvm-config is LLVM 14 here; bpf-linker must link LLVM 22.
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        "needs llvm-22-dev (apt-get install llvm-22-dev) and crates.io",
    )
}
