//! `cargo xtask deb`: the Debian package (binary, systemd unit, default
//! config as a conffile, man page, runbook, Prometheus/Grafana files), built
//! with `cargo deb` from `[package.metadata.deb]` in agent/Cargo.toml.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Usage: `cargo xtask deb [--skip-build] [-- <extra cargo-deb args>]`.
/// Prints the path of the built `.deb` as the last line of stdout.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut skip_build = false;
    let mut extra: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--skip-build" => skip_build = true,
            "--" => extra.extend(it.by_ref().cloned()),
            "-h" | "--help" => {
                println!("cargo xtask deb [--skip-build] [-- <cargo-deb args>]");
                return Ok(());
            }
            other => bail!("cargo xtask deb: unknown argument {other:?}"),
        }
    }
    let root = workspace_root();
    let target = target_dir(&root);
    ensure_cargo_deb()?;

    if !skip_build {
        // The release binary first: the man page comes from running it.
        cargo(&root)
            .args([
                "build",
                "--release",
                "--package",
                "t3pressure",
                "--bin",
                "t3pressure",
            ])
            .status_ok("cargo build --release")?;
    }
    let bin = target.join("release/t3pressure");
    write_man_page(&bin, &target.join("release/t3pressure.1.gz"))?;

    let out = cargo(&root)
        .args(["deb", "--package", "t3pressure", "--no-build"])
        .args(&extra)
        .output()
        .context("running cargo deb")?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("cargo deb failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .context("cargo deb printed no .deb path")?;
    println!("{}", deb.trim());
    Ok(())
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// `$CARGO_TARGET_DIR` if set (tests use their own, so the nested cargo does
/// not wait on the outer one's lock), else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        None => root.join("target"),
    }
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root);
    c
}

/// cargo-deb from crates.io when `cargo deb` is not there yet.
fn ensure_cargo_deb() -> anyhow::Result<()> {
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let present = Command::new(&cargo_bin)
        .args(["deb", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    eprintln!("cargo-deb not found: cargo install cargo-deb --locked");
    Command::new(&cargo_bin)
        .args(["install", "cargo-deb", "--locked"])
        .status_ok("cargo install cargo-deb")
}

/// Runs the built binary's hidden `manpage` command and gzips the page
/// (`gzip -9n`: reproducible, as Debian policy wants).
fn write_man_page(bin: &Path, dest: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("manpage")
        .output()
        .with_context(|| format!("running {} manpage", bin.display()))?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("{} manpage failed ({})", bin.display(), out.status);
    }
    let plain = dest.with_extension("");
    std::fs::write(&plain, &out.stdout).with_context(|| format!("writing {}", plain.display()))?;
    Command::new("gzip")
        .args(["-9n", "-f"])
        .arg(&plain)
        .status_ok("gzip the man page")
}

/// `Command::status` that turns a non-zero exit into an error naming the step.
trait StatusOk {
    fn status_ok(&mut self, what: &str) -> anyhow::Result<()>;
}

impl StatusOk for Command {
    fn status_ok(&mut self, what: &str) -> anyhow::Result<()> {
        let status = self
            .status()
            .with_context(|| format!("{what}: cannot start"))?;
        if !status.success() {
            bail!("{what} failed ({status})");
        }
        Ok(())
    }
}
