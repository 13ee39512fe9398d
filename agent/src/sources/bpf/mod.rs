//! eBPF source: loads the embedded programs (scheduler stalls and OOM kills
//! of tasks in watched units), keeps the watched-units map in sync, drains
//! the ring buffers and reads histograms and episodes in progress.
//!
//! The object is built by `agent/build.rs` from `agent-ebpf` and embedded.

pub mod btf;
mod clock;
mod drain;
pub mod format;
pub mod probe;

use std::collections::HashMap as StdHashMap;
use std::time::{Duration, SystemTime};

use agent_common::{
    globals, unit_slot, Hist, Levels, TaskState, CGROUP_WALK_LEN, HIST_BUCKETS, IDLE_SYSCALLS_LEN,
    KIND_BLOCKED, KIND_RUNQUEUE, KIND_SLEEPING, MAX_LEVELS, SERVE_SLOT_SHARED, STAT_EPISODES,
    STAT_OOMS, STAT_RINGBUF_FULL, STAT_TASKS_FULL, UNIT_SLOT_SHARED,
};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf};
use aya::programs::{BtfTracePoint, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::model::sample::Unit;

pub use clock::{mono_to_wall, monotonic_ns};
pub use drain::{BpfEvent, OomVictim};
pub use format::Offsets;

/// The eBPF object, built by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/t3pressure"));

/// Number of log2 buckets in a [`UnitHistograms`] (bucket `i`: `2^i` ns up
/// to `2^(i+1)` ns).
pub const BUCKETS: usize = HIST_BUCKETS;

#[derive(Debug, Clone)]
pub struct BpfConfig {
    /// Waits at least this long are sent as episodes (spec: 100 ms).
    pub episode_threshold: Duration,
    /// Skip the classic OOM tracepoint and attach the raw one (tests: the
    /// path a hardened unit takes under perf_event_paranoid=3, on a host
    /// where the classic attach would work).
    pub oom_raw_only: bool,
    /// Mark when a watched process main thread goes to sleep in a poll
    /// syscall (see `TaskWait::idle_ns`). On by default; `bpf-bench` turns
    /// it off to price it.
    pub idle_marks: bool,
    /// Find `sched_switch`'s task's cgroup by direct loads at offsets read
    /// from the kernel's BTF instead of a helper call (see
    /// `btf::CgroupWalk`). On by default; without usable offsets, or if
    /// the verifier refuses the loads, the helper is used. `bpf-bench`
    /// turns it off to price it.
    pub cgroup_walk: bool,
}

impl Default for BpfConfig {
    fn default() -> Self {
        BpfConfig {
            episode_threshold: Duration::from_millis(100),
            oom_raw_only: false,
            idle_marks: true,
            cgroup_walk: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("tracepoint formats: {0}")]
    Format(#[from] format::ReadFormatError),
    #[error("tracepoint offsets: {0}")]
    Offsets(#[from] format::FormatError),
    #[error("kernel BTF: {0}")]
    Btf(aya::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("watched units sit at more than {MAX_LEVELS} distinct cgroup levels")]
    TooManyLevels,
    #[error("the event stream was already taken")]
    EventsTaken,
    #[error("ring buffer poll setup: {0}")]
    Poll(std::io::Error),
}

impl BpfError {
    /// The errno behind the error, if it came from a syscall (EPERM means
    /// missing privileges or lockdown).
    pub fn errno(&self) -> Option<i32> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(code) = e
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
            {
                return Some(code);
            }
            cur = e.source();
        }
        None
    }
}

/// What a task was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EpisodeKind {
    /// Runnable but not running: preempted, throttled, or woken and waiting.
    Runqueue,
    /// Uninterruptible sleep (D state).
    Blocked,
}

impl EpisodeKind {
    fn from_raw(kind: u32) -> Option<EpisodeKind> {
        match kind {
            KIND_RUNQUEUE => Some(EpisodeKind::Runqueue),
            KIND_BLOCKED => Some(EpisodeKind::Blocked),
            _ => None,
        }
    }
}

/// A wait of one task of a watched unit, finished or in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub unit_cgroup_id: u64,
    /// Kernel task id; 0 for a new task's first wait for a CPU (the
    /// kernel side learns it when the task first leaves a CPU).
    pub tid: u32,
    /// Userspace pid; 0 when `tid` is.
    pub tgid: u32,
    /// From `/proc/<tid>/comm` when the event is decoded; empty if the task
    /// is gone.
    pub comm: String,
    pub kind: EpisodeKind,
    /// CLOCK_MONOTONIC ns of the start.
    pub start_mono_ns: u64,
    pub start: SystemTime,
    /// So far, for one in progress.
    pub duration: Duration,
    pub ongoing: bool,
}

/// How long one process main thread of a watched unit has waited (run
/// queue and D state, every wait however short, the one in progress up to
/// the walk) and slept, since the kernel side first saw it. Differences
/// between two walks give the shares of the interval the thread could not
/// run, did not want to, and (the rest) ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskWait {
    pub unit_cgroup_id: u64,
    pub tid: u32,
    pub waited_ns: u64,
    /// Voluntary sleep, the one in progress included.
    pub slept_ns: u64,
    /// CLOCK_MONOTONIC ns at which it last went to sleep waiting for work
    /// in a poll syscall (its event loop was idle then), 0 if never seen.
    pub idle_ns: u64,
}

/// What one walk of the task map found.
#[derive(Debug, Clone, Default)]
pub struct TaskWalk {
    /// CLOCK_MONOTONIC ns of the walk.
    pub at_mono_ns: u64,
    /// Waits still in progress, at least the episode threshold long so far.
    pub ongoing: Vec<Episode>,
    /// Wait totals of the main threads (tid == tgid) of watched processes.
    pub main_thread_waits: Vec<TaskWait>,
}

/// Per-unit log2 histograms, counts per bucket (see [`BUCKETS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitHistograms {
    pub runqueue: [u64; BUCKETS],
    pub blocked: [u64; BUCKETS],
}

/// Kernel-side counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BpfStats {
    /// Task states not recorded because `TASKS` was full.
    pub tasks_full: u64,
    /// Events dropped because a ring buffer was full.
    pub ringbuf_full: u64,
    pub episodes: u64,
    pub ooms: u64,
}

/// One program's accumulated run time and run count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: String,
    /// Kernel program id (as `bpftool prog show` lists it).
    pub id: u32,
    pub run_time: Duration,
    pub run_count: u64,
}

/// The loaded and attached programs and their maps.
pub struct Bpf {
    /// Keeps the programs and their links alive.
    _ebpf: Ebpf,
    watched: HashMap<MapData, u64, u32>,
    levels: Array<MapData, Levels>,
    unit_slots: Array<MapData, u64>,
    serve_tgids: Array<MapData, u32>,
    tasks: HashMap<MapData, u64, TaskState>,
    hist: PerCpuHashMap<MapData, u64, Hist>,
    stats: PerCpuArray<MapData, u64>,
    ringbufs: Option<(RingBuf<MapData>, RingBuf<MapData>)>,
    /// Userspace copy of `WATCHED`: cgroup id -> level.
    units: StdHashMap<u64, u32>,
    /// The serve process of each watched unit that has a known one (unit
    /// cgroup id -> tgid), behind `SERVE_TGIDS`.
    serves: StdHashMap<u64, u32>,
    /// How the OOM program is attached, or why it is not (the scheduler
    /// programs work without it; OOM kills then show only in
    /// `memory.events`).
    oom: Result<OomAttach, String>,
    /// See [`Bpf::cgroup_walk`].
    cgroup_walk: Result<btf::CgroupWalk, String>,
}

/// The OOM program: name in the object, tracepoint category and name.
const OOM_PROGRAM: (&str, &str, &str) = ("mark_victim", "oom", "mark_victim");
/// The raw tracepoint fallback of the OOM program (agent-ebpf/src/oom.rs).
const OOM_RAW_PROGRAM: &str = "mark_victim_raw";
/// Its globals (names of the `#[no_mangle]` statics in agent-ebpf/src/oom.rs).
const OOM_RAW_TASK: &str = "OOM_RAW_TASK";
const OOM_TASK_PID: &str = "OOM_TASK_PID";
const OOM_TASK_COMM: &str = "OOM_TASK_COMM";

/// How `oom:mark_victim` is traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomAttach {
    /// Classic tracepoint (perf_event_open): the record's pid, comm, rss
    /// and uid.
    Tracepoint,
    /// Raw tracepoint (no perf event: works under Debian's
    /// perf_event_paranoid=3 without CAP_SYS_ADMIN): the `TP_PROTO`
    /// arguments, so pid (and comm and uid with the task prototype); the
    /// run loop fills in the rest from its last process sample.
    Raw(btf::RawMarkVictim),
}

impl OomAttach {
    pub fn describe(&self) -> &'static str {
        match self {
            OomAttach::Tracepoint => "oom:mark_victim tracepoint (pid, comm, rss, uid from the kernel)",
            OomAttach::Raw(btf::RawMarkVictim::Pid) => {
                "oom:mark_victim raw tracepoint, (int pid): comm, rss, uid from the last process sample"
            }
            OomAttach::Raw(btf::RawMarkVictim::Task { .. }) => {
                "oom:mark_victim raw tracepoint, (task, uid): rss from the last process sample"
            }
        }
    }
}

/// Attaches the OOM program: the classic tracepoint when the record's
/// fields are known and perf_event_open is allowed, else the raw
/// tracepoint with the prototype read from BTF. The error says why neither
/// works (each attempt's reason).
fn attach_oom(
    ebpf: &mut Ebpf,
    classic: &Result<Offsets, String>,
    raw: &Result<btf::RawMarkVictim, String>,
) -> Result<OomAttach, String> {
    let classic_err = match classic {
        Ok(_) => match attach(ebpf, &[OOM_PROGRAM]) {
            Ok(()) => return Ok(OomAttach::Tracepoint),
            Err(e) => e.to_string(),
        },
        Err(e) => e.clone(),
    };
    let raw_err = match raw {
        Ok(proto) => {
            let name = OOM_RAW_PROGRAM;
            let r = (|| -> Result<(), BpfError> {
                let prog: &mut RawTracePoint = ebpf
                    .program_mut(name)
                    .ok_or(BpfError::MissingProgram(name))?
                    .try_into()
                    .map_err(|source| BpfError::Program { name, source })?;
                prog.load()
                    .map_err(|source| BpfError::Program { name, source })?;
                prog.attach("mark_victim")
                    .map_err(|source| BpfError::Program { name, source })?;
                Ok(())
            })();
            match r {
                Ok(()) => return Ok(OomAttach::Raw(*proto)),
                Err(e) => e.to_string(),
            }
        }
        Err(e) => e.clone(),
    };
    Err(format!(
        "classic tracepoint: {classic_err}; raw tracepoint: {raw_err}"
    ))
}

/// What the kernel offers for the OOM program: the classic record's
/// offsets (format file) and the raw prototype (BTF). Either may be
/// missing; neither stops the scheduler programs.
fn oom_plan(
    btf_blob: Option<&[u8]>,
) -> (Result<Offsets, String>, Result<btf::RawMarkVictim, String>) {
    let classic = format::tracefs_root()
        .map_err(format::ReadFormatError::Tracefs)
        .and_then(|root| format::read_formats(&root))
        .map_err(|e| e.to_string())
        .and_then(|f| match f.mark_victim() {
            Ok(format::MarkVictim::Full(o)) => Ok(o),
            Ok(format::MarkVictim::PidOnly) => {
                Err("the record holds only the pid (raw tracepoint only)".to_string())
            }
            Err(e) => Err(e.to_string()),
        });
    let raw = match btf_blob {
        Some(b) => btf::raw_mark_victim(b),
        None => Err("no /sys/kernel/btf/vmlinux".to_string()),
    };
    (classic, raw)
}

/// Where the kernel side finds a sleeping task's syscall number (offset in
/// `struct pt_regs`) and which syscalls mean "an event loop waiting for
/// work": epoll_wait, epoll_pwait, epoll_pwait2, poll, ppoll, select and
/// pselect6. Known for x86_64 only; elsewhere idle marks stay off
/// (`u64::MAX`), and the stall detector works as without them.
fn idle_syscalls(on: bool) -> (u64, [u64; IDLE_SYSCALLS_LEN]) {
    let mut list = [u64::MAX; IDLE_SYSCALLS_LEN];
    if on && cfg!(target_arch = "x86_64") {
        // arch/x86/include/asm/ptrace.h: 15 registers, then orig_ax.
        // arch/x86/entry/syscalls/syscall_64.tbl.
        let nrs = [232u64, 281, 441, 7, 271, 23, 270];
        list[..nrs.len()].copy_from_slice(&nrs);
        (15 * 8, list)
    } else {
        (u64::MAX, list)
    }
}

/// The scheduler programs (BTF tracepoints, named after their tracepoint).
const SCHED_PROGRAMS: [&str; 3] = ["sched_switch", "sched_wakeup", "sched_wakeup_new"];

/// What the kernel side is loaded with, besides the OOM record's offsets.
#[derive(Debug, Clone, Copy)]
struct SchedGlobals {
    threshold_ns: u64,
    idle_marks: bool,
    walk: Option<btf::CgroupWalk>,
}

/// Loads the object and attaches the scheduler programs. With a
/// [`btf::CgroupWalk`] that the verifier refuses (a kernel whose structs
/// the BTF check let through but the loads do not fit), loads again with
/// the helper call instead: the walk is an optimisation, never a reason to
/// run without BPF. Returns the walk in use and why it was dropped.
fn load_sched(
    offsets: &Offsets,
    raw: Option<btf::RawMarkVictim>,
    g: SchedGlobals,
    btf: &Btf,
) -> Result<(Ebpf, Result<btf::CgroupWalk, String>), BpfError> {
    let first = load_object(offsets, raw, g, btf).and_then(|mut ebpf| {
        attach_btf(&mut ebpf, &SCHED_PROGRAMS, btf)?;
        Ok(ebpf)
    });
    match (first, g.walk) {
        (Ok(ebpf), Some(walk)) => Ok((ebpf, Ok(walk))),
        (Ok(ebpf), None) => Ok((ebpf, Err("off".to_string()))),
        (Err(e), Some(_)) => {
            let why = format!("the verifier refused the direct loads ({e})");
            tracing::warn!("BPF unit check: {why}; using bpf_get_current_ancestor_cgroup_id");
            let g = SchedGlobals { walk: None, ..g };
            let mut ebpf = load_object(offsets, raw, g, btf)?;
            attach_btf(&mut ebpf, &SCHED_PROGRAMS, btf)?;
            Ok((ebpf, Err(why)))
        }
        (Err(e), None) => Err(e),
    }
}

/// Loads the object with the offsets and threshold set as globals.
fn load_object(
    offsets: &Offsets,
    raw: Option<btf::RawMarkVictim>,
    g: SchedGlobals,
    btf: &Btf,
) -> Result<Ebpf, BpfError> {
    let o = offsets;
    let SchedGlobals {
        threshold_ns,
        idle_marks,
        walk,
    } = g;
    let mut loader = EbpfLoader::new();
    loader.btf(Some(btf));
    loader.override_global(globals::EPISODE_THRESHOLD_NS, &threshold_ns, true);
    let walk = walk.map_or([u64::MAX; CGROUP_WALK_LEN], |w| w.as_global());
    loader.override_global(globals::CGROUP_WALK, &walk, true);
    let (nr_offset, idle) = idle_syscalls(idle_marks);
    loader.override_global(globals::SYSCALL_NR_OFFSET, &nr_offset, true);
    loader.override_global(globals::IDLE_SYSCALLS, &idle, true);
    let (task, pid, comm) = match raw {
        Some(btf::RawMarkVictim::Task {
            pid_offset,
            comm_offset,
        }) => (1u32, pid_offset, comm_offset),
        _ => (0, 0, 0),
    };
    loader.override_global(OOM_RAW_TASK, &task, true);
    loader.override_global(OOM_TASK_PID, &pid, true);
    loader.override_global(OOM_TASK_COMM, &comm, true);
    for (name, value) in [
        (globals::OOM_PID, &o.oom_pid),
        (globals::OOM_COMM, &o.oom_comm),
        (globals::OOM_TOTAL_VM, &o.oom_total_vm),
        (globals::OOM_ANON_RSS, &o.oom_anon_rss),
        (globals::OOM_FILE_RSS, &o.oom_file_rss),
        (globals::OOM_SHMEM_RSS, &o.oom_shmem_rss),
        (globals::OOM_UID, &o.oom_uid),
    ] {
        loader.override_global(name, value, true);
    }
    Ok(loader.load(OBJECT)?)
}

/// Loads and attaches the BTF tracepoint programs.
fn attach_btf(ebpf: &mut Ebpf, names: &[&'static str], btf: &Btf) -> Result<(), BpfError> {
    for &name in names {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .ok_or(BpfError::MissingProgram(name))?
            .try_into()
            .map_err(|source| BpfError::Program { name, source })?;
        prog.load(name, btf)
            .map_err(|source| BpfError::Program { name, source })?;
        prog.attach()
            .map_err(|source| BpfError::Program { name, source })?;
    }
    Ok(())
}

/// Loads and attaches the named classic tracepoint programs.
fn attach(ebpf: &mut Ebpf, which: &[(&'static str, &str, &str)]) -> Result<(), BpfError> {
    for &(name, category, tracepoint) in which {
        let prog: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or(BpfError::MissingProgram(name))?
            .try_into()
            .map_err(|source| BpfError::Program { name, source })?;
        prog.load()
            .map_err(|source| BpfError::Program { name, source })?;
        prog.attach(category, tracepoint)
            .map_err(|source| BpfError::Program { name, source })?;
    }
    Ok(())
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(BpfError::MissingMap(name))?;
    T::try_from(map).map_err(|source| BpfError::Map { name, source })
}

impl Bpf {
    /// Reads the tracepoint format and the kernel's BTF, loads the object,
    /// attaches the scheduler programs (an error if they fail) and the OOM
    /// program (see [`Bpf::oom`] when it fails). Needs root (or CAP_BPF +
    /// CAP_PERFMON).
    pub fn load(config: &BpfConfig) -> Result<Bpf, BpfError> {
        let threshold_ns = u64::try_from(config.episode_threshold.as_nanos()).unwrap_or(u64::MAX);
        // Parsed once (slow-ish: the kernel's whole BTF) for the loader and
        // the BTF tracepoints.
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let blob = std::fs::read("/sys/kernel/btf/vmlinux").ok();
        let (mut classic, raw) = oom_plan(blob.as_deref());
        let walk = match (&blob, config.cgroup_walk) {
            (_, false) => None,
            (None, true) => {
                tracing::info!("BPF unit check: no /sys/kernel/btf/vmlinux, using the helper call");
                None
            }
            (Some(b), true) => btf::cgroup_walk(b)
                .inspect_err(|e| tracing::info!("BPF unit check: {e}; using the helper call"))
                .ok(),
        };
        drop(blob);
        if config.oom_raw_only {
            classic = Err("skipped (oom_raw_only)".to_string());
        }
        let offsets = classic.clone().unwrap_or(Offsets::ZERO);
        let g = SchedGlobals {
            threshold_ns,
            idle_marks: config.idle_marks,
            walk,
        };
        let (mut ebpf, cgroup_walk) = load_sched(&offsets, raw.as_ref().ok().copied(), g, &btf)?;
        let oom = attach_oom(&mut ebpf, &classic, &raw);
        let episodes: RingBuf<MapData> = take(&mut ebpf, "EPISODES")?;
        let ooms: RingBuf<MapData> = take(&mut ebpf, "OOMS")?;
        Ok(Bpf {
            watched: take(&mut ebpf, "WATCHED")?,
            levels: take(&mut ebpf, "LEVELS")?,
            unit_slots: take(&mut ebpf, "UNIT_SLOTS")?,
            serve_tgids: take(&mut ebpf, "SERVE_TGIDS")?,
            tasks: take(&mut ebpf, "TASKS")?,
            hist: take(&mut ebpf, "HIST")?,
            stats: take(&mut ebpf, "STATS")?,
            ringbufs: Some((episodes, ooms)),
            units: StdHashMap::new(),
            serves: StdHashMap::new(),
            oom,
            cgroup_walk,
            _ebpf: ebpf,
        })
    }

    /// The offsets `sched_switch` finds a task's cgroup with, or why it
    /// calls `bpf_get_current_ancestor_cgroup_id` instead.
    pub fn cgroup_walk(&self) -> Result<btf::CgroupWalk, &str> {
        self.cgroup_walk.as_ref().copied().map_err(String::as_str)
    }

    /// How the OOM program is attached, or why it is not.
    pub fn oom(&self) -> Result<OomAttach, &str> {
        self.oom.as_ref().copied().map_err(String::as_str)
    }

    /// Starts tracing a unit's tasks (and those of its child cgroups).
    /// Idempotent.
    pub fn watch_unit(&mut self, unit: &Unit) -> Result<(), BpfError> {
        let id = unit.cgroup_id;
        let mut units = self.units.clone();
        units.insert(id, unit.level);
        let levels = levels_of(&units)?;
        if !self.units.contains_key(&id) {
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| BpfError::Poll(e))?;
            let zero =
                PerCpuValues::try_from(vec![Hist::ZERO; cpus]).map_err(|e| BpfError::Map {
                    name: "HIST",
                    source: aya::maps::MapError::IoError(e),
                })?;
            self.hist
                .insert(id, zero, 0)
                .map_err(|source| BpfError::Map {
                    name: "HIST",
                    source,
                })?;
        }
        self.levels
            .set(0, levels, 0)
            .map_err(|source| BpfError::Map {
                name: "LEVELS",
                source,
            })?;
        self.watched
            .insert(id, unit.level, 0)
            .map_err(|source| BpfError::Map {
                name: "WATCHED",
                source,
            })?;
        // After `WATCHED` (see `UNIT_SLOTS` in agent-ebpf/src/shared.rs).
        self.set_unit_slot(id, &units)?;
        self.units = units;
        Ok(())
    }

    /// Stops tracing a unit and drops its histograms. Idempotent.
    pub fn unwatch_unit(&mut self, unit: &Unit) -> Result<(), BpfError> {
        let id = unit.cgroup_id;
        if self.units.remove(&id).is_none() {
            return Ok(());
        }
        // The slot first, then `WATCHED` (see `UNIT_SLOTS` in
        // agent-ebpf/src/shared.rs): a slot never points at a unit missing
        // from `WATCHED`, and never hides one still in it.
        self.set_unit_slot(id, &self.units.clone())?;
        self.set_serve(id, None)?;
        // A missing key (e.g. already gone) is fine here.
        let _ = self.watched.remove(&id);
        let _ = self.hist.remove(&id);
        let levels = levels_of(&self.units)?;
        self.levels
            .set(0, levels, 0)
            .map_err(|source| BpfError::Map {
                name: "LEVELS",
                source,
            })?;
        // Drop the states of the unit's off-CPU tasks now rather than at
        // their next switch-in.
        let stale: Vec<u64> = self
            .tasks
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, st)| st.unit_cgroup_id == id)
            .map(|(task, _)| task)
            .collect();
        for task in stale {
            let _ = self.tasks.remove(&task);
        }
        Ok(())
    }

    /// Tells the kernel side which process is a watched unit's serve
    /// (`None`: not known, or the unit is going away), so that only its
    /// main thread pays for idle marks. Cheap when nothing changed: call it
    /// every pass.
    pub fn set_serve(&mut self, unit_cgroup_id: u64, tgid: Option<u32>) -> Result<(), BpfError> {
        let tgid = tgid.filter(|&t| t != 0 && t != SERVE_SLOT_SHARED);
        if self.serves.get(&unit_cgroup_id).copied() == tgid {
            return Ok(());
        }
        match tgid {
            Some(t) if self.units.contains_key(&unit_cgroup_id) => {
                self.serves.insert(unit_cgroup_id, t);
            }
            _ => {
                self.serves.remove(&unit_cgroup_id);
            }
        }
        self.serve_tgids
            .set(
                unit_slot(unit_cgroup_id),
                serve_slot_value(unit_cgroup_id, &self.serves),
                0,
            )
            .map_err(|source| BpfError::Map {
                name: "SERVE_TGIDS",
                source,
            })
    }

    /// Writes the `UNIT_SLOTS` slot of `id` from the watched set `units`:
    /// 0, the one unit there, or `UNIT_SLOT_SHARED`.
    fn set_unit_slot(&mut self, id: u64, units: &StdHashMap<u64, u32>) -> Result<(), BpfError> {
        self.unit_slots
            .set(unit_slot(id), unit_slot_value(id, units), 0)
            .map_err(|source| BpfError::Map {
                name: "UNIT_SLOTS",
                source,
            })
    }

    /// Cgroup ids of the watched units.
    pub fn watched_units(&self) -> impl Iterator<Item = u64> + '_ {
        self.units.keys().copied()
    }

    /// Starts draining the ring buffers on the current tokio runtime; the
    /// receiver gets every episode and OOM kill. Can be taken once.
    pub fn events(&mut self) -> Result<tokio::sync::mpsc::Receiver<BpfEvent>, BpfError> {
        let (episodes, ooms) = self.ringbufs.take().ok_or(BpfError::EventsTaken)?;
        drain::spawn(episodes, ooms)
    }

    /// Waits in progress of watched tasks at `now_mono_ns` (see
    /// [`monotonic_ns`]), at least `min` long so far.
    pub fn ongoing_episodes(&self, now_mono_ns: u64, min: Duration) -> Vec<Episode> {
        self.walk_tasks(now_mono_ns, min).ongoing
    }

    /// One walk of the kernel's task map: the waits in progress at least
    /// `min` long so far, and every watched process main thread's wait
    /// total (see [`TaskWait`]).
    pub fn walk_tasks(&self, now_mono_ns: u64, min: Duration) -> TaskWalk {
        let min_ns = u64::try_from(min.as_nanos()).unwrap_or(u64::MAX);
        let mut walk = TaskWalk {
            at_mono_ns: now_mono_ns,
            ..TaskWalk::default()
        };
        for (_, st) in self.tasks.iter().filter_map(Result::ok) {
            if !self.units.contains_key(&st.unit_cgroup_id) {
                continue;
            }
            let kind = EpisodeKind::from_raw(st.kind);
            let so_far = now_mono_ns.saturating_sub(st.start_ns);
            if st.tid != 0 && st.tid == st.tgid {
                let (waiting, sleeping) = match kind {
                    Some(_) => (so_far, 0),
                    None if st.kind == KIND_SLEEPING => (0, so_far),
                    None => (0, 0),
                };
                walk.main_thread_waits.push(TaskWait {
                    unit_cgroup_id: st.unit_cgroup_id,
                    tid: st.tid,
                    waited_ns: st.waited_ns.saturating_add(waiting),
                    slept_ns: st.slept_ns.saturating_add(sleeping),
                    idle_ns: st.idle_ns,
                });
            }
            let Some(kind) = kind else {
                continue;
            };
            if so_far < min_ns {
                continue;
            }
            walk.ongoing.push(Episode {
                unit_cgroup_id: st.unit_cgroup_id,
                tid: st.tid,
                tgid: st.tgid,
                comm: comm_of(st.tid),
                kind,
                start_mono_ns: st.start_ns,
                start: mono_to_wall(st.start_ns),
                duration: Duration::from_nanos(so_far),
                ongoing: true,
            });
        }
        walk
    }

    /// How many tasks of watched units the kernel side tracks (entries of
    /// exited tasks are dropped at their last switch).
    pub fn tracked_tasks(&self, unit_cgroup_id: u64) -> usize {
        self.tasks
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, st)| st.unit_cgroup_id == unit_cgroup_id)
            .count()
    }

    /// The unit's histograms summed over CPUs; `None` if not watched.
    pub fn histograms(&self, cgroup_id: u64) -> Option<UnitHistograms> {
        let per_cpu = self.hist.get(&cgroup_id, 0).ok()?;
        let mut h = UnitHistograms {
            runqueue: [0; BUCKETS],
            blocked: [0; BUCKETS],
        };
        for cpu in per_cpu.iter() {
            for i in 0..BUCKETS {
                h.runqueue[i] += cpu.runqueue[i];
                h.blocked[i] += cpu.blocked[i];
            }
        }
        Some(h)
    }

    /// Run-time statistics of the loaded programs (non-zero only while
    /// `kernel.bpf_stats_enabled` is 1), for benchmarks and debugging.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self._ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let info = prog.info().ok()?;
                Some(ProgramStats {
                    name: name.to_string(),
                    id: info.id(),
                    run_time: info.run_time(),
                    run_count: info.run_count(),
                })
            })
            .collect()
    }

    /// Kernel-side counters summed over CPUs.
    pub fn stats(&self) -> BpfStats {
        let get = |i: u32| -> u64 { self.stats.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        BpfStats {
            tasks_full: get(STAT_TASKS_FULL),
            ringbuf_full: get(STAT_RINGBUF_FULL),
            episodes: get(STAT_EPISODES),
            ooms: get(STAT_OOMS),
        }
    }
}

/// What `UNIT_SLOTS` holds at `id`'s slot for the watched set `units`: 0
/// (none there), the one unit there, or `UNIT_SLOT_SHARED`.
fn unit_slot_value(id: u64, units: &StdHashMap<u64, u32>) -> u64 {
    slot_value(id, units.keys().map(|&u| (u, u)), UNIT_SLOT_SHARED)
}

/// What a direct-mapped slot holds for unit `id`, from `(unit id, value)`
/// pairs: 0 if no unit maps there, the one unit's value, or `shared`.
fn slot_value<T: Copy + Default>(id: u64, pairs: impl Iterator<Item = (u64, T)>, shared: T) -> T {
    let slot = unit_slot(id);
    let mut there = pairs.filter(|(u, _)| unit_slot(*u) == slot);
    match (there.next(), there.next()) {
        (None, _) => T::default(),
        (Some((_, v)), None) => v,
        (Some(_), Some(_)) => shared,
    }
}

/// The `SERVE_TGIDS` value at the slot of unit `id`, from the known serves
/// (unit id -> tgid): 0, the one serve there, or `SERVE_SLOT_SHARED`.
fn serve_slot_value(id: u64, serves: &StdHashMap<u64, u32>) -> u32 {
    slot_value(id, serves.iter().map(|(&u, &t)| (u, t)), SERVE_SLOT_SHARED)
}

/// The distinct levels in use, as the kernel side wants them.
fn levels_of(units: &StdHashMap<u64, u32>) -> Result<Levels, BpfError> {
    let mut levels = Levels::default();
    let mut distinct: Vec<u32> = units.values().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() > MAX_LEVELS {
        return Err(BpfError::TooManyLevels);
    }
    for (i, l) in distinct.iter().enumerate() {
        levels.levels[i] = *l;
    }
    levels.count = distinct.len() as u32;
    Ok(levels)
}

/// A task's comm from procfs; empty if unknown (tid 0) or gone. The kernel
/// side does not copy it, to keep the per-switch path short.
fn comm_of(tid: u32) -> String {
    if tid == 0 {
        return String::new();
    }
    std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Upper bound (ns) of log2 bucket `i`, for Prometheus `le` labels.
pub fn bucket_upper_ns(i: usize) -> u64 {
    if i + 1 >= 64 {
        u64::MAX
    } else {
        1u64 << (i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_distinct_and_bounded() {
        let mut units = StdHashMap::new();
        units.insert(10, 3);
        units.insert(11, 3);
        units.insert(12, 2);
        let l = levels_of(&units).expect("levels");
        assert_eq!(l.count, 2);
        assert_eq!(&l.levels[..2], &[2, 3]);
        for (i, id) in (20..24).enumerate() {
            units.insert(id, 10 + i as u32);
        }
        assert!(matches!(levels_of(&units), Err(BpfError::TooManyLevels)));
    }

    #[test]
    fn unit_slots_are_exact_or_shared() {
        let len = u64::from(agent_common::UNIT_SLOTS_LEN);
        let mut units = StdHashMap::new();
        assert_eq!(unit_slot_value(7, &units), 0);
        units.insert(7, 2);
        assert_eq!(unit_slot_value(7, &units), 7);
        assert_eq!(unit_slot_value(8, &units), 0);
        // Another unit in the same slot: both are left to `WATCHED`.
        units.insert(7 + len, 2);
        assert_eq!(unit_slot_value(7, &units), UNIT_SLOT_SHARED);
        assert_eq!(unit_slot_value(7 + len, &units), UNIT_SLOT_SHARED);
        units.remove(&7);
        assert_eq!(unit_slot_value(7, &units), 7 + len);
    }

    #[test]
    fn serve_slots_are_exact_or_shared() {
        let len = u64::from(agent_common::UNIT_SLOTS_LEN);
        let mut serves = StdHashMap::new();
        assert_eq!(serve_slot_value(7, &serves), 0);
        serves.insert(7, 4242);
        assert_eq!(serve_slot_value(7, &serves), 4242);
        assert_eq!(serve_slot_value(8, &serves), 0);
        serves.insert(7 + len, 99);
        assert_eq!(serve_slot_value(7, &serves), SERVE_SLOT_SHARED);
        serves.remove(&7);
        assert_eq!(serve_slot_value(7, &serves), 99);
    }

    #[test]
    fn buckets_match_the_kernel_side() {
        assert_eq!(agent_common::hist_bucket(0), 0);
        assert_eq!(agent_common::hist_bucket(1), 0);
        assert_eq!(agent_common::hist_bucket(2), 1);
        assert_eq!(agent_common::hist_bucket(1023), 9);
        assert_eq!(agent_common::hist_bucket(1024), 10);
        assert_eq!(agent_common::hist_bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_upper_ns(9), 1024);
    }

    #[test]
    fn the_object_is_embedded() {
        assert!(OBJECT.starts_with(b"\x7fELF"), "not an ELF object");
    }
}
