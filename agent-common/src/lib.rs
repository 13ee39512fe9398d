//! Types and constants shared by the eBPF programs and userspace.
//!
//! Every struct is `#[repr(C)]`, `Copy`, made of fixed-size integers laid out
//! without hidden padding (explicit `_pad` fields), so both sides agree on
//! the bytes that cross the ring buffers and maps.
#![no_std]

/// Number of log2 buckets of a histogram: bucket `i` counts durations `d`
/// (ns) with `2^i <= d < 2^(i+1)` (bucket 0 also takes 0 and 1 ns); the last
/// bucket takes everything from `2^(HIST_BUCKETS-1)` ns (~275 s) up.
pub const HIST_BUCKETS: usize = 40;

/// How many distinct cgroup levels watched units may sit at.
pub const MAX_LEVELS: usize = 4;

/// Bound of the watched-units map.
pub const MAX_UNITS: u32 = 1024;

/// Bound of the per-task map (tasks of watched units).
pub const MAX_TASKS: u32 = 32768;

/// Length of the `UNIT_SLOTS` array (a power of two): a direct-mapped copy
/// of the watched-unit set, indexed by [`unit_slot`].
pub const UNIT_SLOTS_LEN: u32 = 4096;
/// `UNIT_SLOTS` value of a slot shared by more than one watched unit: the
/// kernel side then asks the `WATCHED` hash. 0 is a slot without any.
pub const UNIT_SLOT_SHARED: u64 = u64::MAX;

/// The `UNIT_SLOTS` index of a cgroup id: its low bits (cgroup ids are
/// kernfs inode numbers handed out in sequence, so units created one after
/// another land in different slots).
#[inline(always)]
pub fn unit_slot(cgroup_id: u64) -> u32 {
    (cgroup_id as u32) & (UNIT_SLOTS_LEN - 1)
}

/// Length of the `TASK_SLOTS` array (a power of two): per slot, an upper
/// bound of the number of `TASKS` entries whose key hashes to it.
pub const TASK_SLOTS_LEN: u32 = 16384;

/// The `TASK_SLOTS` index of a task (the address of its `task_struct`):
/// a multiplicative hash, since slab addresses share their low bits.
#[inline(always)]
pub fn task_slot(task: u64) -> u32 {
    (task.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 50) as u32 & (TASK_SLOTS_LEN - 1)
}

/// Episode kind: runnable but not running (preempted, throttled, or woken
/// and waiting for a CPU).
pub const KIND_RUNQUEUE: u32 = 1;
/// Episode kind: uninterruptible sleep (D state), from switch-out to wakeup.
pub const KIND_BLOCKED: u32 = 2;
/// Per-task state only (never an episode): sleeping interruptibly; the
/// wakeup turns it into a run-queue wait.
pub const KIND_SLEEPING: u32 = 3;
/// Per-task state only: on a CPU.
pub const KIND_RUNNING: u32 = 0;

/// `SERVE_TGIDS` value of a slot shared by more than one unit with a
/// known serve: every process main thread of those units is checked for
/// idle marks. 0 is a slot without any.
pub const SERVE_SLOT_SHARED: u32 = u32::MAX;

/// How many syscall numbers the `IDLE_SYSCALLS` global holds; unused
/// entries are `u64::MAX`.
pub const IDLE_SYSCALLS_LEN: usize = 8;

/// How many byte offsets the `CGROUP_WALK` global holds: from a task to its
/// own cgroup's level and id (`task_struct.cgroups`, `css_set.dfl_cgrp`,
/// `cgroup.level`, `cgroup.kn`, `kernfs_node.id`). All `u64::MAX`: not
/// known, the unit check calls `bpf_get_current_ancestor_cgroup_id`.
pub const CGROUP_WALK_LEN: usize = 5;

/// Indexes of the `STATS` per-CPU counters.
pub const STAT_TASKS_FULL: u32 = 0;
pub const STAT_RINGBUF_FULL: u32 = 1;
pub const STAT_EPISODES: u32 = 2;
pub const STAT_OOMS: u32 = 3;
pub const STATS_LEN: u32 = 4;

/// The levels (depth below the cgroup2 root) at which watched units sit,
/// written by userspace into the one entry of the `LEVELS` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Levels {
    /// How many entries of `levels` are in use.
    pub count: u32,
    pub levels: [u32; MAX_LEVELS],
}

/// One task of a watched unit: what it is doing or waiting for and since
/// when. Key: the address of its `task_struct` (what the BTF tracepoints
/// hand over, so no read of the pid is needed). Userspace iterates these
/// for episodes still in progress.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskState {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at the start of the state; 0
    /// for a voluntary sleep that is not timed (see `slept_ns`).
    pub start_ns: u64,
    /// Cgroup id of the watched unit the task belongs to.
    pub unit_cgroup_id: u64,
    /// Sum of the task's finished waits (run-queue and D state, every one,
    /// however short) since the entry was created, ns. With the wait in
    /// progress it tells userspace which share of an interval the task
    /// spent waiting, short waits the episode threshold leaves out included.
    pub waited_ns: u64,
    /// Sum of the task's finished voluntary sleeps (neither runnable nor D
    /// state), ns: with `waited_ns`, what is left of an interval is the
    /// time the task ran. Kept for the main thread of a unit's serve
    /// process only (the stall detector's thread): other tasks' sleeps are
    /// not timed, which spares them a clock read per sleep (their run-queue
    /// wait starts at the wakeup, which reads the clock anyway).
    pub slept_ns: u64,
    /// For a process main thread: `bpf_ktime_get_ns` when it last went to
    /// sleep inside one of the poll syscalls an event loop waits for work
    /// in (`IDLE_SYSCALLS`), 0 if never seen. Such a thread had nothing
    /// ready to do then: its loop had answered every request received.
    pub idle_ns: u64,
    /// Task id (kernel pid); 0 until a new task first leaves a CPU.
    pub tid: u32,
    /// Thread group id (userspace pid), 0 while `tid` is.
    pub tgid: u32,
    /// `KIND_RUNNING`, `KIND_RUNQUEUE`, `KIND_BLOCKED` or `KIND_SLEEPING`.
    pub kind: u32,
    pub _pad: u32,
}

/// A finished episode at least as long as the threshold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpisodeEvent {
    pub unit_cgroup_id: u64,
    /// CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    pub duration_ns: u64,
    pub tid: u32,
    pub tgid: u32,
    /// `KIND_RUNQUEUE` or `KIND_BLOCKED`.
    pub kind: u32,
    pub _pad: u32,
}

/// One `oom:mark_victim`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomEvent {
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
    /// Cgroup id of the task that ran the OOM killer (the charging task in a
    /// memcg OOM).
    pub cgroup_id: u64,
    /// That task's watched unit's cgroup id, 0 if none.
    pub unit_cgroup_id: u64,
    /// Victim figures, in kB as the tracepoint reports them.
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pid: u32,
    pub uid: u32,
    /// NUL-padded victim comm.
    pub comm: [u8; 16],
}

/// Per-unit log2 histograms (per CPU in the kernel; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hist {
    pub runqueue: [u64; HIST_BUCKETS],
    pub blocked: [u64; HIST_BUCKETS],
}

impl Hist {
    pub const ZERO: Hist = Hist {
        runqueue: [0; HIST_BUCKETS],
        blocked: [0; HIST_BUCKETS],
    };
}

/// The log2 bucket of a duration in ns (see `HIST_BUCKETS`).
#[inline(always)]
pub fn hist_bucket(ns: u64) -> usize {
    let b = 63u32.saturating_sub(ns.leading_zeros()) as usize;
    if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    }
}

/// Names of the globals (`.rodata`) userspace sets before loading.
pub mod globals {
    pub const EPISODE_THRESHOLD_NS: &str = "EPISODE_THRESHOLD_NS";
    pub const SYSCALL_NR_OFFSET: &str = "SYSCALL_NR_OFFSET";
    pub const IDLE_SYSCALLS: &str = "IDLE_SYSCALLS";
    pub const CGROUP_WALK: &str = "CGROUP_WALK";
    pub const OOM_PID: &str = "OOM_PID";
    pub const OOM_COMM: &str = "OOM_COMM";
    pub const OOM_TOTAL_VM: &str = "OOM_TOTAL_VM";
    pub const OOM_ANON_RSS: &str = "OOM_ANON_RSS";
    pub const OOM_FILE_RSS: &str = "OOM_FILE_RSS";
    pub const OOM_SHMEM_RSS: &str = "OOM_SHMEM_RSS";
    pub const OOM_UID: &str = "OOM_UID";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) integers and integer arrays without
    // padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::Levels {}
    unsafe impl aya::Pod for super::TaskState {}
    unsafe impl aya::Pod for super::EpisodeEvent {}
    unsafe impl aya::Pod for super::OomEvent {}
    unsafe impl aya::Pod for super::Hist {}
}
