//! `sched:sched_switch`, `sched:sched_wakeup` and `sched:sched_wakeup_new`:
//! run-queue wait and D-state blocked time of tasks in watched units.
//!
//! Per task: switched out runnable (preempted) -> run-queue wait from then;
//! switched out in D -> blocked until the wakeup; switched out in another
//! sleep -> run-queue wait from the wakeup. Each wait ends when the task is
//! switched in. Wakeups run in the waker's context, so they (and the
//! switch-in) only look the tid up in `TASKS`.

use agent_common::{
    hist_bucket, EpisodeEvent, TaskState, KIND_BLOCKED, KIND_RUNQUEUE, KIND_SLEEPING,
    STAT_EPISODES, STAT_RINGBUF_FULL, STAT_TASKS_FULL,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::RingBuf,
    programs::TracePointContext,
};

use crate::shared::{bump, current_unit, global, HIST, TASKS};

#[unsafe(no_mangle)]
static EPISODE_THRESHOLD_NS: u64 = 100_000_000;
#[unsafe(no_mangle)]
static SWITCH_PREV_STATE: u32 = 32;
#[unsafe(no_mangle)]
static SWITCH_NEXT_PID: u32 = 56;
#[unsafe(no_mangle)]
static SWITCH_NEXT_COMM: u32 = 40;
#[unsafe(no_mangle)]
static WAKEUP_PID: u32 = 24;
#[unsafe(no_mangle)]
static WAKEUP_COMM: u32 = 8;
#[unsafe(no_mangle)]
static WAKEUP_NEW_PID: u32 = 24;

/// Episodes at least `EPISODE_THRESHOLD_NS` long.
#[map]
static EPISODES: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// `prev_state` bits as the tracepoint reports them (`TASK_REPORT`): 0 is
/// runnable (preempted shows as `TASK_REPORT_MAX`, above the low byte).
const STATE_MASK: i64 = 0xff;
const TASK_UNINTERRUPTIBLE: i64 = 0x02;
const EXIT_DEAD_OR_ZOMBIE: i64 = 0x10 | 0x20;

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let _ = try_sched_switch(&ctx);
    0
}

#[inline(always)]
fn try_sched_switch(ctx: &TracePointContext) -> Result<(), i32> {
    // Switch-in: the end of a run-queue wait.
    // SAFETY: offset from the tracepoint's format file.
    let next_pid: u32 = unsafe { ctx.read_at(global(&SWITCH_NEXT_PID) as usize)? };
    if next_pid != 0 {
        if let Some(st) = TASKS.get_ptr(&next_pid) {
            // SAFETY: a valid map value pointer.
            let st = unsafe { *st };
            if st.kind == KIND_RUNQUEUE {
                let now = unsafe { bpf_ktime_get_ns() };
                finish(ctx, next_pid, &st, now, global(&SWITCH_NEXT_COMM));
            }
            let _ = TASKS.remove(&next_pid);
        }
    }

    // Switch-out: `current` is `prev`.
    let Some(unit) = current_unit() else {
        return Ok(());
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if tid == 0 {
        return Ok(());
    }
    // SAFETY: offset from the tracepoint's format file.
    let prev_state: i64 = unsafe { ctx.read_at(global(&SWITCH_PREV_STATE) as usize)? };
    let state = prev_state & STATE_MASK;
    let kind = if state == 0 {
        KIND_RUNQUEUE
    } else if state & TASK_UNINTERRUPTIBLE != 0 {
        KIND_BLOCKED
    } else if state & EXIT_DEAD_OR_ZOMBIE != 0 {
        return Ok(());
    } else {
        KIND_SLEEPING
    };
    let st = TaskState {
        // SAFETY: a plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        unit_cgroup_id: unit,
        tgid: (pid_tgid >> 32) as u32,
        kind,
    };
    if TASKS.insert(&tid, &st, 0).is_err() {
        bump(STAT_TASKS_FULL);
    }
    Ok(())
}

#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    let _ = try_sched_wakeup(&ctx);
    0
}

#[inline(always)]
fn try_sched_wakeup(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: offset from the tracepoint's format file.
    let pid: u32 = unsafe { ctx.read_at(global(&WAKEUP_PID) as usize)? };
    let Some(p) = TASKS.get_ptr_mut(&pid) else {
        return Ok(());
    };
    // SAFETY: a valid map value pointer; a racing update on another CPU can
    // at worst skew one sample.
    let st = unsafe { &mut *p };
    if st.kind == KIND_RUNQUEUE {
        return Ok(());
    }
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if st.kind == KIND_BLOCKED {
        let copy = *st;
        finish(ctx, pid, &copy, now, global(&WAKEUP_COMM));
    }
    st.kind = KIND_RUNQUEUE;
    st.start_ns = now;
    Ok(())
}

#[tracepoint]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    let _ = try_sched_wakeup_new(&ctx);
    0
}

/// A new task's first wait for a CPU. Runs in the parent's context, whose
/// cgroup the child inherited. The child's tgid is unknown here (thread or
/// process): 0, resolved by userspace.
#[inline(always)]
fn try_sched_wakeup_new(ctx: &TracePointContext) -> Result<(), i32> {
    let Some(unit) = current_unit() else {
        return Ok(());
    };
    // SAFETY: offset from the tracepoint's format file.
    let pid: u32 = unsafe { ctx.read_at(global(&WAKEUP_NEW_PID) as usize)? };
    let st = TaskState {
        // SAFETY: a plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        unit_cgroup_id: unit,
        tgid: 0,
        kind: KIND_RUNQUEUE,
    };
    if TASKS.insert(&pid, &st, 0).is_err() {
        bump(STAT_TASKS_FULL);
    }
    Ok(())
}

/// Accounts a finished wait: histogram, and an episode when long enough.
#[inline(always)]
fn finish(ctx: &TracePointContext, tid: u32, st: &TaskState, now: u64, comm_off: u32) {
    let dur = now.saturating_sub(st.start_ns);
    if let Some(h) = HIST.get_ptr_mut(&st.unit_cgroup_id) {
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
    } else {
        // The unit is no longer watched.
        return;
    }
    if dur < global(&EPISODE_THRESHOLD_NS) {
        return;
    }
    let Some(mut entry) = EPISODES.reserve::<EpisodeEvent>(0) else {
        bump(STAT_RINGBUF_FULL);
        return;
    };
    // SAFETY: offset from the tracepoint's format file.
    let comm: [u8; 16] = unsafe { ctx.read_at(comm_off as usize) }.unwrap_or([0; 16]);
    entry.write(EpisodeEvent {
        unit_cgroup_id: st.unit_cgroup_id,
        start_ns: st.start_ns,
        duration_ns: dur,
        tid,
        tgid: st.tgid,
        kind: st.kind,
        _pad: 0,
        comm,
    });
    entry.submit(0);
    bump(STAT_EPISODES);
}
