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
    /// comm, ppid, uid and state come from `/proc/PID/status`, read every
    /// 5th read of the process (a quiet unit's processes are read every
    /// 5th pass): up to 25 s old for a quiet unit.
    pub comm: String,
    pub argv0: String,
    pub state: String,
    /// From `statm`, every read: resident - shared, exact.
    pub rss_anon_bytes: u64,
    /// Their sum (shared pages) is fresh each read; the split between them
    /// is that of the last `status` read.
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

/// Building a snapshot from the model. Detector-owned parts (`stall`,
/// `episodes`, `last_action`, `last_oom`) are left empty here and filled by
/// their owners afterwards (HOOK(detectors), HOOK(bpf)).
pub mod build {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::model::rates::{PressureShares, PsiShares};
    use crate::model::sample::Psi;
    use crate::model::state::{HostState, Model, UnitState};

    pub fn unix(t: SystemTime) -> f64 {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }

    fn pressure_info(psi: Option<&Psi>, shares: PsiShares) -> PressureInfo {
        PressureInfo {
            some_share: shares.some,
            full_share: shares.full,
            some_avg10: psi.map(|p| p.some.avg10),
            full_avg10: psi.and_then(|p| p.full.map(|f| f.avg10)),
        }
    }

    fn pressure_set(
        memory: Option<&Psi>,
        io: Option<&Psi>,
        cpu: Option<&Psi>,
        s: &PressureShares,
    ) -> PressureSet {
        PressureSet {
            memory: pressure_info(memory, s.memory),
            io: pressure_info(io, s.io),
            cpu: pressure_info(cpu, s.cpu),
        }
    }

    pub fn host_info(h: Option<&HostState>) -> HostInfo {
        let Some(h) = h else {
            return HostInfo::default();
        };
        let l = &h.latest;
        HostInfo {
            mem_total_bytes: l.meminfo.map(|m| m.mem_total),
            mem_available_bytes: l.meminfo.map(|m| m.mem_available),
            pressure: pressure_set(
                l.memory_pressure.as_ref(),
                l.io_pressure.as_ref(),
                l.cpu_pressure.as_ref(),
                &h.pressure,
            ),
        }
    }

    /// One unit; `None` before its first sample.
    pub fn unit_info(u: &UnitState) -> Option<UnitInfo> {
        let s = u.latest.as_ref()?;
        let mut procs: Vec<&crate::model::sample::ProcSample> = s.procs.iter().collect();
        procs.sort_by(|a, b| b.rss_anon.cmp(&a.rss_anon).then(a.pid.cmp(&b.pid)));
        // The largest anon consumer that is not the serve. The protect list
        // is applied by the runaway detector (HOOK(detectors)).
        let candidate = procs
            .iter()
            .find(|p| Some(p.pid) != u.serve_pid)
            .map(|p| p.pid);
        let processes = procs
            .iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                ppid: p.ppid,
                uid: p.uid,
                comm: p.comm.to_string(),
                argv0: p.argv0.to_string(),
                state: p.state.to_string(),
                rss_anon_bytes: p.rss_anon,
                rss_file_bytes: p.rss_file,
                rss_shmem_bytes: p.rss_shmem,
                anon_growth_bytes_per_second: u.proc_anon_growth(p),
                is_serve: Some(p.pid) == u.serve_pid,
                is_candidate: Some(p.pid) == candidate,
            })
            .collect();
        Some(UnitInfo {
            user: u.unit.user.clone(),
            unit: u.unit.name.clone(),
            cgroup: u.unit.path.display().to_string(),
            memory: MemoryInfo {
                current_bytes: s.memory_current,
                max_bytes: s.memory_max.and_then(|l| l.bytes()),
                high_bytes: s.memory_high.and_then(|l| l.bytes()),
                peak_bytes: s.memory_peak,
                anon_bytes: s.memory_stat.map(|m| m.anon),
                file_bytes: s.memory_stat.map(|m| m.file),
                swap_current_bytes: s.memory_swap_current,
                oom_kill_count: s.memory_events.map(|e| e.oom_kill),
            },
            growth_bytes_per_second: u.growth_bytes_per_second(),
            time_to_max_seconds: u.time_to_max_seconds(),
            pressure: pressure_set(
                s.memory_pressure.as_ref(),
                s.io_pressure.as_ref(),
                s.cpu_pressure.as_ref(),
                &u.pressure,
            ),
            pids_current: s.pids_current,
            serve_pid: u.serve_pid,
            processes,
            ..UnitInfo::default()
        })
    }

    /// The whole snapshot; units sorted by user.
    pub fn snapshot(model: &Model, agent: AgentInfo) -> Snapshot {
        let mut units: Vec<UnitInfo> = model.units.values().filter_map(unit_info).collect();
        units.sort_by(|a, b| a.user.cmp(&b.user).then(a.unit.cmp(&b.unit)));
        Snapshot {
            version: SNAPSHOT_VERSION,
            generated_at: unix(SystemTime::now()),
            agent,
            host: host_info(model.host.as_ref()),
            units,
        }
    }
}
