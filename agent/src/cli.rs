//! The command line (stable interface: tests and deploy files rely on it).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, Mode};

#[derive(Debug, Parser)]
#[command(
    name = "t3pressure",
    version,
    about = "Watches every t3-serve@<user>.service unit: who stalled, for how long, why; \
             kills a runaway agent process before the kernel OOM killer has to.",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (as root): discover units, sample, trace, detect, act, export.
    Run(RunArgs),
    /// Live terminal view of the running agent (or of cgroupfs with --standalone).
    Top(TopArgs),
    /// Read the event log: stall windows, OOM kills, runaway actions.
    Events(EventsArgs),
    /// Report what this host supports: cgroup v2, PSI, BTF, BPF, permissions, units.
    Check(CheckArgs),
    /// Print the t3pressure(1) man page (roff) to stdout; used by `cargo xtask deb`.
    #[command(hide = true)]
    Manpage,
}

/// Flags of `run`; each overrides the config file key of the same name.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// TOML configuration file; every flag below has a key of the same name
    /// (with `_` for `-`). Flags override the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Root of the cgroup v2 hierarchy [default: /sys/fs/cgroup].
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// Root of procfs [default: /proc].
    #[arg(long, value_name = "DIR")]
    pub proc_root: Option<PathBuf>,
    /// Glob matched against cgroup directory names anywhere under the root
    /// [default: t3-serve@*.service].
    #[arg(long, value_name = "GLOB")]
    pub unit_glob: Option<String>,
    /// Address for /metrics, /healthz and /api/v1/snapshot [default: 127.0.0.1:9773].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the event log [default: /var/lib/t3pressure].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// observe: record "would kill" only (default); enforce: SIGKILL runaways.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Do not load the eBPF programs; stall windows come from PSI alone.
    #[arg(long)]
    pub no_bpf: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl RunArgs {
    /// Defaults, then the file, then the flags.
    pub fn effective_config(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.cgroup_root {
            c.cgroup_root = v.clone();
        }
        if let Some(v) = &self.proc_root {
            c.proc_root = v.clone();
        }
        if let Some(v) = &self.unit_glob {
            c.unit_glob = v.clone();
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.state_dir {
            c.state_dir = v.clone();
        }
        if let Some(v) = self.mode {
            c.mode = v;
        }
        if self.no_bpf {
            c.no_bpf = true;
        }
        c.validate()?;
        Ok(c)
    }
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Address of the running agent.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9773",
        conflicts_with = "standalone"
    )]
    pub connect: String,
    /// Read cgroupfs directly (no agent needed; no BPF figures).
    #[arg(long)]
    pub standalone: bool,
    /// Refresh interval in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
    /// Print the table once to stdout and exit (for scripts and tickets).
    #[arg(long)]
    pub once: bool,
    /// With --once: print the snapshot as JSON.
    #[arg(long, requires = "once")]
    pub json: bool,
    /// With --standalone: root of the cgroup v2 hierarchy.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// With --standalone: root of procfs.
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// With --standalone: unit glob.
    #[arg(long, value_name = "GLOB", default_value = "t3-serve@*.service")]
    pub unit_glob: String,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Directory of the event log.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/t3pressure")]
    pub state_dir: PathBuf,
    /// Only events of this user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only events newer than this (e.g. 30m, 2h, 1d).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<humantime::Duration>,
    /// Only events of this kind: stall_window, stall_window_start, oom_kill,
    /// runaway, unit_start, unit_stop, agent_start, agent_stop.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Print JSON Lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Root of the cgroup v2 hierarchy.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Unit glob to count matches of.
    #[arg(long, value_name = "GLOB", default_value = "t3-serve@*.service")]
    pub unit_glob: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "mode = \"enforce\"\nunit_glob = \"x@*.service\"\n").expect("write");
        let cli = Cli::parse_from([
            "t3pressure",
            "run",
            "--config",
            file.to_str().expect("utf8"),
            "--mode",
            "observe",
        ]);
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let c = args.effective_config().expect("config");
        assert_eq!(c.mode, Mode::Observe, "flag wins");
        assert_eq!(c.unit_glob, "x@*.service", "file kept where no flag");
    }
}
