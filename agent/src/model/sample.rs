//! Raw samples as the sources read them: one per unit per tick, plus the
//! host. Nothing here is derived; rates live in `model::rates`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// One line of a PSI file (`some` or `full`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Cumulative stall time in microseconds.
    pub total_us: u64,
}

/// A `*.pressure` file. `full` is absent in host `/proc/pressure/cpu` on old
/// kernels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

/// `memory.max`, `memory.high`, `memory.swap.max`: a byte count or "max".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    Max,
    Bytes(u64),
}

impl Limit {
    pub fn bytes(self) -> Option<u64> {
        match self {
            Limit::Max => None,
            Limit::Bytes(b) => Some(b),
        }
    }
}

/// `memory.events` (hierarchical counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEvents {
    pub low: u64,
    pub high: u64,
    pub max: u64,
    pub oom: u64,
    pub oom_kill: u64,
    pub oom_group_kill: u64,
}

/// The keys of `memory.stat` t3pressure uses (bytes, or counts for the
/// event counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStat {
    pub anon: u64,
    pub file: u64,
    pub file_mapped: u64,
    pub shmem: u64,
    pub workingset_refault_anon: u64,
    pub workingset_refault_file: u64,
    pub pgmajfault: u64,
}

/// `cpu.stat`; the throttling keys exist only with the cpu controller on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStat {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
}

/// `/proc/meminfo`, the keys used here, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemInfo {
    pub mem_total: u64,
    pub mem_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// One process of a unit, from procfs. Its strings are shared (`Arc<str>`)
/// with the reader's per-pid and per-cgroup caches and with the runaway
/// policy's input: a read copies a reference count, not the string (three
/// allocations and frees per process per read before).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    /// `/proc/PID/comm`.
    pub comm: Arc<str>,
    /// First element of `/proc/PID/cmdline` only: the rest can hold secrets.
    pub argv0: Arc<str>,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    /// One-letter state from `/proc/PID/stat` (R, S, D, ...).
    pub state: char,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22):
    /// with the pid it identifies a process across pid recycling.
    pub start_time: u64,
    /// The cgroup path of the process relative to the cgroup root.
    pub cgroup: Arc<str>,
}

/// A watched unit: a cgroup directory whose name matched the unit glob.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Unit {
    /// Directory name, e.g. `t3-serve@alice.service`.
    pub name: String,
    /// The template instance, unescaped, e.g. `alice`.
    pub user: String,
    /// Absolute path of the cgroup directory.
    pub path: PathBuf,
    /// Cgroup id (the directory's inode number on cgroup2), as the kernel's
    /// `bpf_get_current_ancestor_cgroup_id` returns it.
    pub cgroup_id: u64,
    /// Depth below the cgroup2 mount (the ancestor level for BPF).
    pub level: u32,
}

/// Everything read for one unit in one pass. `None` fields are files that
/// were missing (controller off, PSI disabled) or malformed (counted in
/// `t3pressure_read_errors_total`).
#[derive(Debug, Clone)]
pub struct UnitSample {
    /// Monotonic time of the reads, for rates.
    pub at: Instant,
    /// Wall time, for humans and the event log.
    pub wall: SystemTime,
    pub memory_current: Option<u64>,
    pub memory_max: Option<Limit>,
    pub memory_high: Option<Limit>,
    pub memory_peak: Option<u64>,
    pub memory_swap_current: Option<u64>,
    pub memory_swap_max: Option<Limit>,
    pub memory_events: Option<MemoryEvents>,
    pub memory_stat: Option<MemoryStat>,
    pub memory_pressure: Option<Psi>,
    pub io_pressure: Option<Psi>,
    pub cpu_pressure: Option<Psi>,
    pub cpu_stat: Option<CpuStat>,
    pub pids_current: Option<u64>,
    /// Processes of the unit and of its descendant cgroups.
    pub procs: Vec<ProcSample>,
    /// The processes were not read this pass (a quiet unit: they are read
    /// every few passes only); `procs` is then carried over by the model.
    pub procs_skipped: bool,
    /// `memory.peak`, `memory.swap.current`, `memory.stat`, `cpu.stat` and
    /// `pids.current` were not read this pass (read with the processes;
    /// no detector uses them): the model carries them over.
    pub details_skipped: bool,
}

impl UnitSample {
    pub fn empty(at: Instant, wall: SystemTime) -> Self {
        UnitSample {
            at,
            wall,
            memory_current: None,
            memory_max: None,
            memory_high: None,
            memory_peak: None,
            memory_swap_current: None,
            memory_swap_max: None,
            memory_events: None,
            memory_stat: None,
            memory_pressure: None,
            io_pressure: None,
            cpu_pressure: None,
            cpu_stat: None,
            pids_current: None,
            procs: Vec::new(),
            procs_skipped: false,
            details_skipped: false,
        }
    }
}

/// Host-wide figures.
#[derive(Debug, Clone)]
pub struct HostSample {
    pub at: Instant,
    pub wall: SystemTime,
    pub memory_pressure: Option<Psi>,
    pub io_pressure: Option<Psi>,
    pub cpu_pressure: Option<Psi>,
    pub meminfo: Option<MemInfo>,
}
