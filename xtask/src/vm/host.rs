//! Host side of the VM suite: the Debian packages it needs and the agent's
//! .deb it shares with the VM.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

/// Host packages: QEMU (TCG), busybox for the initramfs, mmdebstrap for the
/// rootfs, kmod for depmod/modprobe --show-depends, cpio for the initramfs.
/// Note: qemu-system-x86 replaces the machine's qemu-utils 10 with 7.2
/// (toolchain.md); nothing here needs qemu-img.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "mmdebstrap",
    "kmod",
    "cpio",
];

pub fn step(msg: &str) {
    println!("xtask vm: {msg}");
}

/// Runs a command, failing with its name and status.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the missing host packages with apt-get, one progress line each.
pub fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        step(&format!("host packages present: {}", PACKAGES.join(" ")));
        return Ok(());
    }
    step("apt-get update");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    for p in missing {
        step(&format!("apt-get install {p}"));
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", p])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// Builds the agent's Debian package for the VM and returns its path.
///
/// Dev profile by default: on this 2-core machine the debug binary is
/// incremental on top of `cargo build`/`cargo test` (seconds), while
/// `--release` compiles every dependency again with LTO (~3.5 min cold),
/// for a package that differs only in the binary's optimisation. The
/// scenarios' figures were measured with a debug agent all along. cargo-deb
/// strips the binary and `--fast` keeps compression cheap.
pub fn build_deb(release: bool) -> anyhow::Result<PathBuf> {
    let profile = if release {
        crate::deb::Profile::Release
    } else {
        crate::deb::Profile::Dev
    };
    step(&format!("cargo xtask deb --profile {profile:?} --fast"));
    let t = Instant::now();
    let deb = crate::deb::build(&crate::deb::DebOptions {
        profile,
        fast: true,
        ..Default::default()
    })?;
    if !deb.is_file() {
        bail!("{} was not built", deb.display());
    }
    step(&format!(
        "package built in {:.1} s: {}",
        t.elapsed().as_secs_f64(),
        deb.display()
    ));
    Ok(deb)
}
