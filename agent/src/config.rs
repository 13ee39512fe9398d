//! Effective configuration: defaults, overridden by the TOML file
//! (`--config`), overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the runaway catcher does with a process it decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Record "would kill" and do nothing (the default without a config file).
    Observe,
    /// SIGKILL through a pidfd, then `process_mrelease`.
    Enforce,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Observe => "observe",
            Mode::Enforce => "enforce",
        })
    }
}

/// Every key of the TOML file. Unknown keys are an error: a typo in a
/// threshold must not silently fall back to the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root of the cgroup v2 hierarchy.
    pub cgroup_root: PathBuf,
    /// Root of procfs.
    pub proc_root: PathBuf,
    /// Glob matched against cgroup directory names.
    pub unit_glob: String,
    /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/api/v1/snapshot`).
    pub listen: SocketAddr,
    /// Where the event log lives.
    pub state_dir: PathBuf,
    /// observe | enforce.
    pub mode: Mode,
    /// Run on PSI alone, without loading the eBPF programs.
    pub no_bpf: bool,
    /// Normal sampling interval, in milliseconds.
    pub sample_interval_ms: u64,
    /// Sampling interval of a unit that is close to its limit or growing fast.
    pub fast_sample_interval_ms: u64,
    /// Scheduler episodes shorter than this are only counted in histograms.
    pub episode_threshold_ms: u64,
    /// Stall windows shorter than this many seconds get no start record.
    pub stall_warning_seconds: f64,
    pub stall_disconnect_seconds: f64,
    /// Runaway policy.
    pub runaway: RunawayConfig,
    /// Event log rotation.
    pub event_log: EventLogConfig,
    /// Identifies the serve process when "the process whose parent is outside
    /// the unit" is not right: matched against comm or argv[0].
    pub serve_match: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunawayConfig {
    /// Kill when the unit's usage crosses this fraction of MemoryMax.
    pub kill_threshold: f64,
    /// Kill when usage is above this fraction and growth projects MemoryMax
    /// within `horizon_seconds`.
    pub watch_threshold: f64,
    pub horizon_seconds: f64,
    /// memory `full` pressure share (0..1) that, held for
    /// `livelock_seconds` between memory.high and memory.max, is a livelock.
    pub livelock_full_share: f64,
    pub livelock_seconds: f64,
    /// One action per unit per cooldown.
    pub cooldown_seconds: f64,
    /// Never a runaway: processes whose comm or argv[0] matches one of these
    /// globs.
    pub protect: Vec<String>,
    /// Host guard: host memory `full` avg10 (percent) at or above which the
    /// largest runaway across all units is taken.
    pub host_full_avg10: f64,
    /// Host guard: MemAvailable below this fraction of MemTotal.
    pub host_min_available: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventLogConfig {
    /// Rotate the current file when it reaches this size.
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep_files: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            unit_glob: "t3-serve@*.service".to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9773)),
            state_dir: PathBuf::from("/var/lib/t3pressure"),
            mode: Mode::Observe,
            no_bpf: false,
            sample_interval_ms: 1000,
            fast_sample_interval_ms: 100,
            episode_threshold_ms: 100,
            stall_warning_seconds: 10.0,
            stall_disconnect_seconds: 20.0,
            runaway: RunawayConfig::default(),
            event_log: EventLogConfig::default(),
            serve_match: None,
        }
    }
}

impl Default for RunawayConfig {
    fn default() -> Self {
        RunawayConfig {
            kill_threshold: 0.90,
            watch_threshold: 0.75,
            horizon_seconds: 5.0,
            livelock_full_share: 0.50,
            livelock_seconds: 10.0,
            cooldown_seconds: 10.0,
            protect: Vec::new(),
            host_full_avg10: 40.0,
            host_min_available: 0.05,
        }
    }
}

impl Default for EventLogConfig {
    fn default() -> Self {
        EventLogConfig {
            max_file_bytes: 16 * 1024 * 1024,
            keep_files: 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses a TOML file; a missing file is an error (it was asked for).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that would make the agent lie or kill wrongly.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.runaway;
        let frac = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::Invalid(format!(
                    "runaway.{name} = {v}: must be a fraction in (0, 1]"
                )))
            }
        };
        frac("kill_threshold", r.kill_threshold)?;
        frac("watch_threshold", r.watch_threshold)?;
        frac("livelock_full_share", r.livelock_full_share)?;
        if r.watch_threshold > r.kill_threshold {
            return Err(ConfigError::Invalid(format!(
                "runaway.watch_threshold ({}) must not exceed runaway.kill_threshold ({})",
                r.watch_threshold, r.kill_threshold
            )));
        }
        for (name, v) in [
            ("runaway.horizon_seconds", r.horizon_seconds),
            ("runaway.livelock_seconds", r.livelock_seconds),
            ("runaway.cooldown_seconds", r.cooldown_seconds),
            ("stall_warning_seconds", self.stall_warning_seconds),
            ("stall_disconnect_seconds", self.stall_disconnect_seconds),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} = {v}: must be a non-negative number of seconds"
                )));
            }
        }
        if self.sample_interval_ms == 0 || self.fast_sample_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "sample_interval_ms and fast_sample_interval_ms must be > 0".into(),
            ));
        }
        if self.fast_sample_interval_ms > self.sample_interval_ms {
            return Err(ConfigError::Invalid(
                "fast_sample_interval_ms must not exceed sample_interval_ms".into(),
            ));
        }
        globset::Glob::new(&self.unit_glob)
            .map_err(|e| ConfigError::Invalid(format!("unit_glob {:?}: {e}", self.unit_glob)))?;
        for p in &r.protect {
            globset::Glob::new(p)
                .map_err(|e| ConfigError::Invalid(format!("runaway.protect {p:?}: {e}")))?;
        }
        Ok(())
    }

    pub fn sample_interval(&self) -> Duration {
        Duration::from_millis(self.sample_interval_ms)
    }

    pub fn fast_sample_interval(&self) -> Duration {
        Duration::from_millis(self.fast_sample_interval_ms)
    }

    /// Stable hash of the effective configuration, for the agent-start event.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = toml::to_string(self).unwrap_or_default();
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = Config::default();
        c.validate().expect("defaults valid");
        let text = toml::to_string(&c).expect("serialize");
        assert_eq!(Config::from_toml(&text).expect("parse"), c);
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = Config::from_toml("kill_treshold = 0.5").expect_err("typo must fail");
        assert!(e.to_string().contains("kill_treshold"), "{e}");
    }

    #[test]
    fn threshold_out_of_range_is_an_error() {
        let e = Config::from_toml("[runaway]\nkill_threshold = 1.5").expect_err("must fail");
        assert!(e.to_string().contains("kill_threshold"), "{e}");
        let e = Config::from_toml("[runaway]\nwatch_threshold = 0.95").expect_err("must fail");
        assert!(e.to_string().contains("watch_threshold"), "{e}");
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::from_toml("mode = \"enforce\"\n[runaway]\nprotect = [\"node\"]\n")
            .expect("parse");
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(c.runaway.protect, vec!["node".to_string()]);
        assert_eq!(c.runaway.kill_threshold, 0.90);
    }
}
