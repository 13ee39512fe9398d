//! `/api/v1/snapshot`: the JSON shape `t3pressure top` and scripts read.
//!
//! Versioned by `version`; a field is only ever added within one version.
//! Processes carry comm and argv[0] only, never the full argv or the
//! environment (agent command lines can hold secrets).

use serde::{Deserialize, Serialize};

use crate::model::event::{OomKill, RunawayAction, StallWindow};

pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// Unix time the snapshot was made.
    pub generated_at: f64,
    pub agent: AgentInfo,
    pub host: HostInfo,
    pub units: Vec<UnitInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    /// observe | enforce
    pub mode: String,
    pub bpf_loaded: bool,
    /// Why BPF is not loaded, when it is not.
    pub bpf_error: Option<String>,
    pub units_watched: usize,
    pub sample_interval_ms: u64,
    /// Unix time the agent started.
    pub started_at: f64,
    /// `false` for `top --standalone`, which reads cgroupfs itself.
    pub from_agent: bool,
}

/// Pressure of one resource: share of the last interval stalled (0..1,
/// derived from PSI totals) and the kernel's avg10 (percent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PressureInfo {
    pub some_share: Option<f64>,
    pub full_share: Option<f64>,
    pub some_avg10: Option<f64>,
    pub full_avg10: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PressureSet {
    pub memory: PressureInfo,
    pub io: PressureInfo,
    pub cpu: PressureInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub mem_total_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    pub pressure: PressureSet,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryInfo {
    pub current_bytes: Option<u64>,
    /// `None` when unlimited ("max") or unreadable.
    pub max_bytes: Option<u64>,
    pub high_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub swap_current_bytes: Option<u64>,
    pub oom_kill_count: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StallInfo {
    /// The ongoing window, its duration so far.
    pub ongoing: Option<StallWindow>,
    /// Closed windows, newest first (bounded).
    pub recent: Vec<StallWindow>,
    pub last_hour_warning: u32,
    pub last_hour_disconnect: u32,
}

/// A scheduler episode from eBPF (run-queue wait or D state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeInfo {
    pub tid: i32,
    pub tgid: i32,
    pub comm: String,
    /// "runqueue" | "blocked"
    pub kind: String,
    /// Unix time of the start.
    pub start: f64,
    pub duration_s: f64,
    pub ongoing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub comm: String,
    pub argv0: String,
    pub state: String,
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub rss_shmem_bytes: u64,
    /// Robust slope of anon RSS over recent samples.
    pub anon_growth_bytes_per_second: Option<f64>,
    /// The unit's main process (never killed).
    pub is_serve: bool,
    /// The largest anon consumer that is not protected: the one the runaway
    /// catcher would act on.
    pub is_candidate: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitInfo {
    pub user: String,
    pub unit: String,
    pub cgroup: String,
    pub memory: MemoryInfo,
    pub growth_bytes_per_second: Option<f64>,
    /// Absent when not growing or unlimited.
    pub time_to_max_seconds: Option<f64>,
    pub pressure: PressureSet,
    pub pids_current: Option<u64>,
    pub serve_pid: Option<i32>,
    pub stall: StallInfo,
    pub episodes: Vec<EpisodeInfo>,
    pub last_action: Option<RunawayAction>,
    pub last_oom: Option<OomKill>,
    /// Unix time of `last_action` / `last_oom`.
    pub last_action_at: Option<f64>,
    pub last_oom_at: Option<f64>,
    pub processes: Vec<ProcessInfo>,
}
