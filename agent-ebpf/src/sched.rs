//! `sched_switch`, `sched_wakeup` and `sched_wakeup_new` (BTF tracepoints):
//! run-queue wait and D-state blocked time of tasks in watched units.
//!
//! BTF tracepoints (tp_btf) hand over `task_struct` pointers and the raw
//! `prev_state` as plain arguments: no `bpf_probe_read_kernel` and no
//! format offsets, and the per-task map is keyed by the task's address.
//! Measured here that halves the cost per event against the classic
//! tracepoints (see `tests/src/bin/bpf-bench.rs`).
//!
//! Per task: switched out runnable (preempted) -> run-queue wait from then;
//! switched out in D -> blocked until the wakeup, then run-queue wait;
//! switched out in another sleep -> run-queue wait from the wakeup. Each
//! run-queue wait ends when the task is switched in. Wakeups run in the
//! waker's context, so they (and the switch-in) only look the task up in
//! `TASKS`; the unit check (`current_unit`) happens at switch-out, when
//! the task is `current`.
//!
//! Most switches involve no watched task. Their path avoids hash lookups
//! (~50 ns each on the build box, hit or miss): `TASK_SLOTS` says that
//! `next` (or the woken task) has no `TASKS` entry, `UNIT_SLOTS` that
//! `prev`'s ancestor is no watched unit, both with inlined array lookups
//! (see `shared.rs`), and `prev`'s cgroup is found by direct loads from
//! its `task_struct` (`unit_of_task`) rather than a helper call. What is
//! left there is mostly the tracepoint's own cost (an empty `tp_btf`
//! program: 65-71 ns with `bpf_stats` on that box;
//! `agent/benches/README.md`).

use agent_common::{
    hist_bucket, EpisodeEvent, TaskState, IDLE_SYSCALLS_LEN, KIND_BLOCKED, KIND_RUNNING,
    KIND_RUNQUEUE, KIND_SLEEPING, STAT_EPISODES, STAT_RINGBUF_FULL, STAT_TASKS_FULL,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::{btf_tracepoint, map},
    maps::RingBuf,
    programs::BtfTracePointContext,
};

use crate::shared::{
    bump, current_unit, global, insert_task, is_serve, remove_task, tracked, unit_of_task, HIST,
    TASKS,
};

#[unsafe(no_mangle)]
static EPISODE_THRESHOLD_NS: u64 = 100_000_000;

/// Offset of the syscall number in the task's saved user registers
/// (`struct pt_regs`: `orig_ax` on x86_64), set by userspace for the
/// architectures it knows; `u64::MAX` leaves idle marks off.
#[unsafe(no_mangle)]
static SYSCALL_NR_OFFSET: u64 = u64::MAX;

/// Syscall numbers an event loop waits for work in (epoll_wait,
/// epoll_pwait, epoll_pwait2, poll, ppoll, select, pselect6 on the
/// running architecture), set by userspace; unused entries `u64::MAX`.
#[unsafe(no_mangle)]
static IDLE_SYSCALLS: [u64; IDLE_SYSCALLS_LEN] = [u64::MAX; IDLE_SYSCALLS_LEN];

/// Episodes at least `EPISODE_THRESHOLD_NS` long.
#[map]
static EPISODES: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Raw `task_struct.__state` bits (include/linux/sched.h).
const TASK_UNINTERRUPTIBLE: u64 = 0x0002;
const TASK_DEAD: u64 = 0x0080;
/// `TASK_IDLE` = UNINTERRUPTIBLE | NOLOAD: idle kernel threads, not D.
const TASK_NOLOAD: u64 = 0x0400;

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// `sched_switch(bool preempt, task_struct *prev, task_struct *next,
/// unsigned int prev_state)`.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> u32 {
    let preempt: u64 = ctx.arg(0);
    let prev: u64 = ctx.arg(1);
    let next: u64 = ctx.arg(2);
    let prev_state: u64 = ctx.arg::<u64>(3) & 0xffff_ffff;
    let mut ts = 0u64;

    // Switch-in: the end of a run-queue wait. Most `next`s have no entry:
    // the `TASK_SLOTS` filter says so without a hash lookup.
    if let Some(p) = tracked(next) {
        // SAFETY: a valid map value; a racing wakeup on another CPU can at
        // worst skew one sample.
        let st = unsafe { &mut *p };
        if st.kind == KIND_RUNQUEUE {
            ts = now();
            finish(st, ts);
        }
        st.kind = KIND_RUNNING;
    }

    // Switch-out: `current` is `prev`.
    if prev_state & TASK_DEAD != 0 {
        // Its last switch: drop its state.
        remove_task(prev);
        return 0;
    }
    let Some(unit) = unit_of_task(prev) else {
        return 0;
    };
    let kind = if preempt & 0xff != 0 || prev_state == 0 {
        KIND_RUNQUEUE
    } else if prev_state & TASK_UNINTERRUPTIBLE != 0 && prev_state & TASK_NOLOAD == 0 {
        KIND_BLOCKED
    } else {
        KIND_SLEEPING
    };
    // A voluntary sleep is timed only for the serve's main thread (its
    // `slept_ns` and idle marks feed the stall detector); any other task's
    // run-queue wait starts at its wakeup, which reads the clock anyway.
    if let Some(p) = TASKS.get_ptr_mut(prev) {
        // SAFETY: a valid map value.
        let st = unsafe { &mut *p };
        if st.tid == 0 {
            let pid_tgid = bpf_get_current_pid_tgid();
            st.tid = pid_tgid as u32;
            st.tgid = (pid_tgid >> 32) as u32;
        }
        let serve_sleep = kind == KIND_SLEEPING && st.tid == st.tgid && is_serve(unit, st.tgid);
        if kind != KIND_SLEEPING || serve_sleep {
            if ts == 0 {
                ts = now();
            }
            st.start_ns = ts;
        } else {
            st.start_ns = 0;
        }
        st.kind = kind;
        st.unit_cgroup_id = unit;
        if serve_sleep && in_idle_syscall() {
            st.idle_ns = ts;
        }
    } else {
        let pid_tgid = bpf_get_current_pid_tgid();
        let (tid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
        let serve_sleep = kind == KIND_SLEEPING && tid == tgid && is_serve(unit, tgid);
        if (kind != KIND_SLEEPING || serve_sleep) && ts == 0 {
            ts = now();
        }
        let idle = serve_sleep && in_idle_syscall();
        let st = TaskState {
            start_ns: if kind != KIND_SLEEPING || serve_sleep {
                ts
            } else {
                0
            },
            unit_cgroup_id: unit,
            waited_ns: 0,
            slept_ns: 0,
            idle_ns: if idle { ts } else { 0 },
            tid,
            tgid,
            kind,
            _pad: 0,
        };
        if insert_task(prev, &st).is_err() {
            bump(STAT_TASKS_FULL);
        }
    }
    0
}

/// `sched_wakeup(task_struct *p)`: the end of a D-state wait, the start of
/// a run-queue wait.
#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> u32 {
    let task: u64 = ctx.arg(0);
    let Some(p) = tracked(task) else {
        return 0;
    };
    // SAFETY: a valid map value.
    let st = unsafe { &mut *p };
    if st.kind != KIND_BLOCKED && st.kind != KIND_SLEEPING {
        return 0;
    }
    let ts = now();
    if st.kind == KIND_BLOCKED {
        finish(st, ts);
    } else if st.start_ns != 0 {
        // A timed sleep (the serve's main thread).
        st.slept_ns = st.slept_ns.wrapping_add(ts.saturating_sub(st.start_ns));
    }
    st.kind = KIND_RUNQUEUE;
    st.start_ns = ts;
    0
}

/// `sched_wakeup_new(task_struct *p)`: a new task's first wait for a CPU.
/// Runs in the parent's context, whose cgroup the child inherited. Its tid
/// is filled in when it first leaves a CPU.
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> u32 {
    let task: u64 = ctx.arg(0);
    let Some(unit) = current_unit() else {
        return 0;
    };
    let st = TaskState {
        start_ns: now(),
        unit_cgroup_id: unit,
        waited_ns: 0,
        slept_ns: 0,
        idle_ns: 0,
        tid: 0,
        tgid: 0,
        kind: KIND_RUNQUEUE,
        _pad: 0,
    };
    if insert_task(task, &st).is_err() {
        bump(STAT_TASKS_FULL);
    }
    0
}

/// Whether `current`, going to sleep voluntarily, sleeps inside one of the
/// `IDLE_SYSCALLS`: an event loop's main thread then had no ready work.
/// Only asked for the main thread of a unit's serve process (`is_serve`),
/// so the two helper calls stay off every other path.
#[inline(always)]
fn in_idle_syscall() -> bool {
    let off = global(&SYSCALL_NR_OFFSET);
    if off > 4096 {
        return false;
    }
    // SAFETY: helper calls, then a load through the BTF-typed `pt_regs`
    // pointer the helper returns, at an offset the verifier knows (a frozen
    // global) and checks against the kernel's `struct pt_regs`; such loads
    // are fault-safe (BPF_PROBE_MEM) without a probe-read helper call.
    let nr = unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        if regs.is_null() {
            return false;
        }
        core::ptr::read_volatile(regs.add(off as usize) as *const u64)
    };
    let list = global(&IDLE_SYSCALLS);
    let mut i = 0;
    while i < IDLE_SYSCALLS_LEN {
        if list[i] == nr {
            return true;
        }
        i += 1;
    }
    false
}

/// Accounts a finished wait: the task's wait total, the histogram, and an
/// episode when long enough.
#[inline(always)]
fn finish(st: &mut TaskState, now: u64) {
    let dur = now.saturating_sub(st.start_ns);
    st.waited_ns = st.waited_ns.wrapping_add(dur);
    let Some(h) = HIST.get_ptr_mut(st.unit_cgroup_id) else {
        // The unit is no longer watched.
        return;
    };
    let b = hist_bucket(dur);
    // SAFETY: this CPU's slot of a valid map value.
    let h = unsafe { &mut *h };
    let slot = if st.kind == KIND_BLOCKED {
        h.blocked.get_mut(b)
    } else {
        h.runqueue.get_mut(b)
    };
    if let Some(slot) = slot {
        *slot += 1;
    }
    if dur < global(&EPISODE_THRESHOLD_NS) {
        return;
    }
    let Some(mut entry) = EPISODES.reserve::<EpisodeEvent>(0) else {
        bump(STAT_RINGBUF_FULL);
        return;
    };
    entry.write(EpisodeEvent {
        unit_cgroup_id: st.unit_cgroup_id,
        start_ns: st.start_ns,
        duration_ns: dur,
        tid: st.tid,
        tgid: st.tgid,
        kind: st.kind,
        _pad: 0,
    });
    entry.submit(0);
    bump(STAT_EPISODES);
}

/// Does nothing: not attached by the agent. `bpf-bench` attaches it next to
/// the real programs as the reference cost of an empty `tp_btf`
/// `sched_switch` program on the host (the tracepoint's and `bpf_stats`'
/// own overhead, which no change to `sched_switch` can remove).
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_noop(_ctx: BtfTracePointContext) -> u32 {
    0
}

/// Reads the clock once: not attached by the agent. `bpf-bench` attaches it
/// like `sched_switch_noop`; the difference of the two is what one
/// `bpf_ktime_get_ns` costs on the host (a watched switch makes one, and
/// so does every wakeup of a watched task).
#[btf_tracepoint(function = "sched_switch")]
pub fn switch_clock(_ctx: BtfTracePointContext) -> u32 {
    core::hint::black_box(now());
    0
}
