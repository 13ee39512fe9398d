//! Maps and helpers used by more than one program: the watched units, the
//! levels they sit at, the per-task states, histograms and counters.

use agent_common::{Hist, Levels, TaskState, MAX_LEVELS, MAX_TASKS, MAX_UNITS, STATS_LEN};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::bpf_get_current_ancestor_cgroup_id,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};

/// Watched unit cgroup id -> its level. Kept by userspace.
#[map]
pub static WATCHED: HashMap<u64, u32> = HashMap::with_max_entries(MAX_UNITS, 0);

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

/// The watched unit `current` belongs to, if any: its ancestor cgroup at
/// each level in use, looked up in `WATCHED`. Tasks outside watched units
/// cost one array lookup plus one helper call and one hash lookup per level.
#[inline(always)]
pub fn current_unit() -> Option<u64> {
    let levels = LEVELS.get(0)?;
    let count = levels.count as usize;
    for i in 0..MAX_LEVELS {
        if i >= count {
            break;
        }
        // SAFETY: a plain helper call.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(levels.levels[i] as i32) };
        // SAFETY: the value is not kept across other map operations.
        if id != 0 && unsafe { WATCHED.get(id) }.is_some() {
            return Some(id);
        }
    }
    None
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
