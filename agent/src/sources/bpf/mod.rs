//! eBPF source: loads the embedded programs (scheduler stalls and OOM kills
//! of tasks in watched units), keeps the watched-units map in sync, drains
//! the ring buffers and reads histograms and episodes in progress.
//!
//! The object is built by `agent/build.rs` from `agent-ebpf` and embedded.

pub mod btf;
mod clock;
mod drain;
pub mod format;
mod load;
pub mod probe;

use std::collections::HashMap as StdHashMap;
use std::time::{Duration, SystemTime};

use agent_common::{
    unit_slot, Hist, Levels, TaskState, HIST_BUCKETS, KIND_BLOCKED, KIND_RUNQUEUE, KIND_SLEEPING,
    MAX_LEVELS, SERVE_SLOT_SHARED, STAT_EPISODES, STAT_OOMS, STAT_RINGBUF_FULL, STAT_TASKS_FULL,
    UNIT_SLOT_SHARED,
};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf};
use aya::{Btf, Ebpf};

use crate::model::sample::Unit;

pub use clock::{mono_to_wall, monotonic_ns};
pub use drain::{BpfEvent, OomVictim};
pub use format::Offsets;
pub use load::OomAttach;
use load::{attach_oom, load_sched, oom_plan, SchedGlobals};

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
    /// Tests: these offsets instead of the kernel's BTF's (wrong ones
    /// prove that a refused walk falls back to the helper call).
    pub cgroup_walk_offsets: Option<btf::CgroupWalk>,
}

impl Default for BpfConfig {
    fn default() -> Self {
        BpfConfig {
            episode_threshold: Duration::from_millis(100),
            oom_raw_only: false,
            idle_marks: true,
            cgroup_walk: true,
            cgroup_walk_offsets: None,
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
    /// Voluntary sleep, the one in progress included: kept for the main
    /// thread of the unit's serve only (as told by [`Bpf::set_serve`]),
    /// 0 for other threads (see `TaskState::slept_ns`).
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
        let walk = match (&blob, config.cgroup_walk, config.cgroup_walk_offsets) {
            (_, false, _) => Err("off (BpfConfig::cgroup_walk)".to_string()),
            (_, true, Some(w)) => Ok(w),
            (None, true, None) => Err("no /sys/kernel/btf/vmlinux".to_string()),
            (Some(b), true, None) => btf::cgroup_walk(b),
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
                    // Untimed (start 0) unless the unit's serve.
                    None if st.kind == KIND_SLEEPING && st.start_ns != 0 => (0, so_far),
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
