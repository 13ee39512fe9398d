//! Maps and helpers used by more than one program: the watched units, the
//! levels they sit at, the per-task states, histograms and counters.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use agent_common::{
    task_slot, unit_slot, Hist, Levels, TaskState, CGROUP_WALK_LEN, MAX_LEVELS, MAX_TASKS,
    MAX_UNITS, SERVE_SLOT_SHARED, STATS_LEN, TASK_SLOTS_LEN, UNIT_SLOTS_LEN, UNIT_SLOT_SHARED,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::bpf_get_current_ancestor_cgroup_id,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};

/// Watched unit cgroup id -> its level. Kept by userspace.
#[map]
pub static WATCHED: HashMap<u64, u32> = HashMap::with_max_entries(MAX_UNITS, 0);

/// A direct-mapped copy of `WATCHED`, kept by userspace: at
/// `unit_slot(id)`, 0 if no watched unit maps there, the unit's id if
/// exactly one does, `UNIT_SLOT_SHARED` if several do (then `WATCHED`
/// decides). Userspace writes a slot after inserting into `WATCHED` and
/// before removing from it, so a slot never says "not watched" for a unit
/// in `WATCHED`.
///
/// Why: an array lookup is inlined by the verifier (an address computation
/// and a load), a hash lookup is a call, a hash of the key and a bucket
/// walk; on the 2-core build box that is ~5 ns against ~50 ns per lookup
/// (bpf-bench), and most switches involve no watched task.
#[map]
pub static UNIT_SLOTS: Array<u64> = Array::with_max_entries(UNIT_SLOTS_LEN, 0);

/// A counting filter over the keys of `TASKS`, kept by the kernel side: at
/// `task_slot(task)`, at least the number of `TASKS` entries of tasks
/// hashing there. 0 means "no entry": the switch-in and wakeup paths then
/// skip the `TASKS` lookup (a miss costs as much as a hit).
///
/// Invariant (no false "no entry"): every insert into `TASKS` is preceded
/// by an atomic increment (undone if the insert fails), and only a
/// successful removal by the kernel side decrements. Userspace never
/// writes this map: its removals (`unwatch_unit`) and overwrites of a key
/// leave a slot counted too high, which only costs a lookup. Ordering: the
/// increment happens under the run-queue lock of the task's CPU (switch-out
/// of `current`, `sched_wakeup_new`), which any later switch-in of the task
/// elsewhere has to take first.
#[map]
pub static TASK_SLOTS: Array<u64> = Array::with_max_entries(TASK_SLOTS_LEN, 0);

/// The serve process (tgid) of each watched unit whose serve userspace
/// knows, direct-mapped like `UNIT_SLOTS` (at `unit_slot(unit id)`; 0: none
/// known, `SERVE_SLOT_SHARED`: several units share the slot). Only that
/// process's main thread is checked for idle marks at its voluntary
/// sleeps: the check costs two helper calls, an inlined array lookup here
/// spares every other watched main thread from it.
#[map]
pub static SERVE_TGIDS: Array<u32> = Array::with_max_entries(UNIT_SLOTS_LEN, 0);

/// Whether `tgid` (a main thread of watched unit `unit`) is the unit's
/// serve process, or may be (shared slot).
#[inline(always)]
pub fn is_serve(unit: u64, tgid: u32) -> bool {
    SERVE_TGIDS
        .get(unit_slot(unit))
        .is_some_and(|&t| t != 0 && (t == tgid || t == SERVE_SLOT_SHARED))
}

/// One entry: the distinct levels of the watched units.
#[map]
pub static LEVELS: Array<Levels> = Array::with_max_entries(1, 0);

/// Task address -> state of a task of a watched unit. An entry is created
/// when the task is first switched out inside a watched unit (then it is
/// `current`, so its cgroup can be checked), updated in place afterwards
/// (no insert/delete per switch), and removed at the task's last switch
/// (`TASK_DEAD`) or by userspace when the unit is unwatched.
#[map]
pub static TASKS: HashMap<u64, TaskState> = HashMap::with_max_entries(MAX_TASKS, 0);

/// Unit cgroup id -> histograms. Entries are created by userspace when it
/// watches the unit (the kernel side only looks up), so not preallocated:
/// a per-CPU value is 640 bytes per CPU.
#[map]
pub static HIST: PerCpuHashMap<u64, Hist> =
    PerCpuHashMap::with_max_entries(MAX_UNITS, BPF_F_NO_PREALLOC);

/// Counters of drops and events (indexes `STAT_*`).
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

/// Byte offsets from a task to its own cgroup's level and id (see
/// `CGROUP_WALK_LEN`), set by userspace from the kernel's BTF; `u64::MAX`
/// when not known.
#[unsafe(no_mangle)]
static CGROUP_WALK: [u64; CGROUP_WALK_LEN] = [u64::MAX; CGROUP_WALK_LEN];

/// A load of a `T` at `off` bytes into the kernel object at `base`.
///
/// # Safety
/// `base` must be a BTF-typed pointer the verifier knows (a `tp_btf`
/// argument or a pointer loaded through one) and `off` a frozen global, so
/// that the verifier checks the load against the kernel's struct layout;
/// such loads are fault-safe (BPF_PROBE_MEM).
#[inline(always)]
unsafe fn load<T: Copy>(base: u64, off: u64) -> T {
    // SAFETY: see above.
    unsafe { core::ptr::read_volatile((base as *const u8).add(off as usize) as *const T) }
}

/// The level and id of `task`'s own cgroup on the default hierarchy, by
/// direct loads (`task->cgroups->dfl_cgrp`, its `level` and `kn->id`), or
/// `None` when userspace found no offsets (then every branch using them is
/// dead code to the verifier: the globals are frozen constants).
#[inline(always)]
fn own_cgroup(task: u64) -> Option<(u32, u64)> {
    let w = global(&CGROUP_WALK);
    let mut i = 0;
    while i < CGROUP_WALK_LEN {
        if w[i] > 65535 {
            return None;
        }
        i += 1;
    }
    // SAFETY: `task` is `sched_switch`'s `prev`, a trusted `task_struct`
    // pointer, and each next base was loaded through the one before.
    unsafe {
        let css: u64 = load(task, w[0]);
        if css == 0 {
            return None;
        }
        let cgrp: u64 = load(css, w[1]);
        if cgrp == 0 {
            return None;
        }
        let level: i32 = load(cgrp, w[2]);
        let kn: u64 = load(cgrp, w[3]);
        if kn == 0 || level < 0 {
            return None;
        }
        Some((level as u32, load(kn, w[4])))
    }
}

/// The watched unit `current` belongs to, if any: its ancestor cgroup at
/// each level in use, looked up in `UNIT_SLOTS` (and in `WATCHED` only for
/// a shared slot). Tasks outside watched units cost one array lookup plus
/// one helper call and one array lookup per level.
#[inline(always)]
pub fn current_unit() -> Option<u64> {
    unit_of(None)
}

/// Like [`current_unit`], given `current`'s BTF-typed task pointer
/// (`sched_switch`'s `prev`): a task whose own cgroup sits at a level in
/// use is its own ancestor there, and one above a level has none, so only
/// a task deeper than a unit's level (in a child cgroup of some unit or
/// slice) needs the helper call. That call was ~55 of the ~65 ns the unit
/// check cost an unwatched switch on the build box; the loads cost ~15.
#[inline(always)]
pub fn unit_of_task(current: u64) -> Option<u64> {
    unit_of(Some(current))
}

#[inline(always)]
fn unit_of(current: Option<u64>) -> Option<u64> {
    let levels = LEVELS.get(0)?;
    let count = levels.count as usize;
    let own = match current {
        Some(task) => own_cgroup(task),
        None => None,
    };
    for i in 0..MAX_LEVELS {
        if i >= count {
            break;
        }
        let level = levels.levels[i];
        let id = match own {
            Some((own_level, own_id)) if own_level == level => own_id,
            Some((own_level, _)) if own_level < level => continue,
            // SAFETY: a plain helper call.
            _ => unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) },
        };
        if id == 0 {
            continue;
        }
        let Some(&slot) = UNIT_SLOTS.get(unit_slot(id)) else {
            continue;
        };
        if slot == id {
            return Some(id);
        }
        // SAFETY: the value is not kept across other map operations.
        if slot == UNIT_SLOT_SHARED && unsafe { WATCHED.get(id) }.is_some() {
            return Some(id);
        }
    }
    None
}

/// Any static: its address anchors `slot_of`.
static ANCHOR: u64 = 0;

/// The `TASK_SLOTS` index of a task. The verifier types a `task_struct`
/// argument as a trusted pointer and refuses any arithmetic on it but
/// adding or subtracting scalars (so no hashing, no partial reads of it
/// spilled to the stack). It does let CAP_PERFMON programs subtract one
/// pointer from another, which yields a plain scalar: the task's distance
/// from a fixed address (a static in a map value), one-to-one with the
/// task's address, is hashed instead.
#[inline(always)]
fn slot_of(task: u64) -> u32 {
    let anchor = &ANCHOR as *const u64 as u64;
    // `black_box` keeps LLVM from distributing the hash's multiplication
    // over the subtraction (a multiplication of the pointer).
    task_slot(core::hint::black_box(task.wrapping_sub(anchor)))
}

/// Whether `TASKS` may hold an entry for `task` (see `TASK_SLOTS`).
#[inline(always)]
pub fn maybe_tracked(task: u64) -> bool {
    TASK_SLOTS.get(slot_of(task)).is_some_and(|&n| n != 0)
}

/// `task`'s state, looked up only if the filter says it may have one.
#[inline(always)]
pub fn tracked(task: u64) -> Option<*mut TaskState> {
    if !maybe_tracked(task) {
        return None;
    }
    TASKS.get_ptr_mut(task)
}

/// Adds `delta` (wrapping: `u64::MAX` subtracts one) to `task`'s slot.
#[inline(always)]
fn add_task_slot(task: u64, delta: u64) {
    if let Some(p) = TASK_SLOTS.get_ptr_mut(slot_of(task)) {
        // SAFETY: a valid, aligned map value shared by all CPUs, only ever
        // written atomically by the kernel side. `AtomicU64::fetch_add` is
        // not available on the BPF target; the intrinsic compiles to the
        // BPF atomic add (`lock xadd` in the x86 JIT).
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, delta) };
    }
}

/// Inserts a task's state into `TASKS`, counted in `TASK_SLOTS` first.
#[inline(always)]
pub fn insert_task(task: u64, st: &TaskState) -> Result<(), i32> {
    add_task_slot(task, 1);
    let r = TASKS.insert(task, st, 0);
    if r.is_err() {
        add_task_slot(task, u64::MAX);
    }
    r
}

/// Removes a task's state from `TASKS` (if it has one), then uncounts it.
#[inline(always)]
pub fn remove_task(task: u64) {
    if maybe_tracked(task) && TASKS.remove(task).is_ok() {
        add_task_slot(task, u64::MAX);
    }
}

#[inline(always)]
pub fn bump(stat: u32) {
    if let Some(p) = STATS.get_ptr_mut(stat) {
        // SAFETY: a per-CPU slot, no other writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Reads a `.rodata` global set by userspace before load.
#[inline(always)]
pub fn global<T: Copy>(g: &T) -> T {
    // SAFETY: `g` is a static; volatile so the compiler does not fold the
    // placeholder value in.
    unsafe { core::ptr::read_volatile(g) }
}
