//! `cargo xtask deb`: the Debian package (binary, systemd unit, default
//! config as a conffile, man page, runbook, Prometheus/Grafana files), built
//! with `cargo deb` from `[package.metadata.deb]` in agent/Cargo.toml.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// cargo-deb version `cargo xtask setup --test` installs (and this module
/// installs when `cargo deb` is missing). Pinned: `--profile dev` (the VM
/// suite's package) is a warning in 3.8 that cargo-deb says may become an
/// error later.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Usage: `cargo xtask deb [--skip-build] [--profile release|dev] [--fast]
/// [-- <extra cargo-deb args>]`. Prints the path of the built `.deb` as the
/// last line of stdout.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut opts = DebOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--skip-build" => opts.skip_build = true,
            "--fast" => opts.fast = true,
            "--profile" => {
                let p = it.next().context("--profile needs release or dev")?;
                opts.profile = match p.as_str() {
                    "release" => Profile::Release,
                    "dev" | "debug" => Profile::Dev,
                    other => bail!("cargo xtask deb: unknown profile {other:?} (release or dev)"),
                };
            }
            "--" => opts.extra.extend(it.by_ref().cloned()),
            "-h" | "--help" => {
                println!(
                    "cargo xtask deb [--skip-build] [--profile release|dev] [--fast] [-- <cargo-deb args>]"
                );
                return Ok(());
            }
            other => bail!("cargo xtask deb: unknown argument {other:?}"),
        }
    }
    let deb = build(&opts)?;
    println!("{}", deb.display());
    Ok(())
}

/// The cargo profile the package's binary comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// What ships (`cargo build --release`, LTO).
    #[default]
    Release,
    /// The debug build (`target/debug`), incremental on top of `cargo test`:
    /// the VM suite's default, see `vm::host::build_deb`. cargo-deb strips
    /// it (~5 MB in the package instead of ~50 MB).
    Dev,
}

impl Profile {
    /// The profile's name for cargo and cargo-deb.
    fn name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "dev",
        }
    }

    /// Its directory under the target dir.
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "debug",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DebOptions {
    pub skip_build: bool,
    pub profile: Profile,
    /// cargo-deb `--fast`: lighter compression (the VM suite's throwaway
    /// package).
    pub fast: bool,
    pub extra: Vec<String>,
}

/// Builds the binary (unless `skip_build`), the man page and the package;
/// returns the `.deb`'s path. A release package goes to `target/debian/`,
/// a dev one to `target/debian/dev/` so the two never overwrite each other.
pub fn build(opts: &DebOptions) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let target = target_dir(&root);
    ensure_cargo_deb()?;
    let profile = opts.profile;

    if !opts.skip_build {
        // The binary first: the man page comes from running it.
        cargo(&root)
            .args([
                "build",
                "--profile",
                profile.name(),
                "--package",
                "t3pressure",
                "--bin",
                "t3pressure",
            ])
            .status_ok(&format!("cargo build --profile {}", profile.name()))?;
    }
    let dir = target.join(profile.dir());
    let bin = dir.join("t3pressure");
    write_man_page(&bin, &dir.join("t3pressure.1.gz"))?;

    let out_dir = match profile {
        Profile::Release => target.join("debian"),
        Profile::Dev => target.join("debian/dev"),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let mut cmd = cargo(&root);
    cmd.args(["deb", "--package", "t3pressure", "--no-build"])
        .args(["--profile", profile.name()])
        .arg("--output")
        .arg(&out_dir);
    if opts.fast {
        cmd.arg("--fast");
    }
    let out = cmd
        .args(&opts.extra)
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
    Ok(PathBuf::from(deb.trim()))
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

/// cargo-deb from crates.io when `cargo deb` is not there yet (~8 min
/// cold on the 2-core machine; `cargo xtask setup --test` does it up front).
pub fn ensure_cargo_deb() -> anyhow::Result<()> {
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let present = Command::new(&cargo_bin)
        .args(["deb", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    eprintln!(
        "cargo-deb not found: cargo install cargo-deb --version {CARGO_DEB_VERSION} --locked"
    );
    Command::new(&cargo_bin)
        .args([
            "install",
            "cargo-deb",
            "--version",
            CARGO_DEB_VERSION,
            "--locked",
        ])
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
