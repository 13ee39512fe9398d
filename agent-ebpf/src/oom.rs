//! `oom:mark_victim`: the victim's pid, comm, rss and uid, and the unit of
//! the task that ran the OOM killer (in a memcg OOM, the charging task, so
//! the unit whose limit was hit).
//!
//! Two programs, userspace attaches one (agent/src/sources/bpf/mod.rs):
//! - `mark_victim`, a classic tracepoint reading the record's fields at
//!   offsets from the format file. Attaching it goes through
//!   perf_event_open, which Debian's perf_event_paranoid=3 refuses to the
//!   packaged unit's DynamicUser even with CAP_PERFMON (EACCES).
//! - `mark_victim_raw`, a raw tracepoint (BPF_RAW_TRACEPOINT_OPEN, no perf
//!   event): the fallback when the classic attach is refused. It gets the
//!   tracepoint's `TP_PROTO` arguments, whose shape userspace reads from the
//!   kernel's BTF (`btf_trace_mark_victim`): `(int pid)` up to 6.7, or
//!   `(struct task_struct *task, uid_t uid)` since 6.8 (and in Debian 12's
//!   6.1.0-56, backported), then with the offsets of `task_struct.pid` and
//!   `.comm` from BTF. It sends pid (and comm and uid when it has the task);
//!   the agent takes the rest (rss) from its own last sample of the process.

use agent_common::{OomEvent, STAT_OOMS, STAT_RINGBUF_FULL};
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::RingBuf,
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};

use crate::shared::{bump, current_unit, global};

#[unsafe(no_mangle)]
static OOM_PID: u32 = 8;
#[unsafe(no_mangle)]
static OOM_COMM: u32 = 12;
#[unsafe(no_mangle)]
static OOM_TOTAL_VM: u32 = 16;
#[unsafe(no_mangle)]
static OOM_ANON_RSS: u32 = 24;
#[unsafe(no_mangle)]
static OOM_FILE_RSS: u32 = 32;
#[unsafe(no_mangle)]
static OOM_SHMEM_RSS: u32 = 40;
#[unsafe(no_mangle)]
static OOM_UID: u32 = 48;

/// Raw program: 0 for `TP_PROTO(int pid)`, 1 for
/// `TP_PROTO(struct task_struct *task, uid_t uid)`.
#[unsafe(no_mangle)]
static OOM_RAW_TASK: u32 = 0;
/// Raw program, task prototype: byte offsets in `struct task_struct`.
#[unsafe(no_mangle)]
static OOM_TASK_PID: u32 = 0;
#[unsafe(no_mangle)]
static OOM_TASK_COMM: u32 = 0;

#[map]
static OOMS: RingBuf = RingBuf::with_byte_size(16 * 4096, 0);

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let _ = try_mark_victim(&ctx);
    0
}

#[inline(always)]
fn read_u64(ctx: &TracePointContext, off: u32) -> u64 {
    // SAFETY: offset from the tracepoint's format file.
    unsafe { ctx.read_at::<u64>(off as usize) }.unwrap_or(0)
}

fn try_mark_victim(ctx: &TracePointContext) -> Result<(), i32> {
    let Some(mut entry) = OOMS.reserve::<OomEvent>(0) else {
        bump(STAT_RINGBUF_FULL);
        return Ok(());
    };
    let mut ev = OomEvent {
        // SAFETY: plain helper calls.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        unit_cgroup_id: current_unit().unwrap_or(0),
        total_vm_kb: read_u64(ctx, global(&OOM_TOTAL_VM)),
        anon_rss_kb: read_u64(ctx, global(&OOM_ANON_RSS)),
        file_rss_kb: read_u64(ctx, global(&OOM_FILE_RSS)),
        shmem_rss_kb: read_u64(ctx, global(&OOM_SHMEM_RSS)),
        // SAFETY: offsets from the tracepoint's format file.
        pid: unsafe { ctx.read_at::<u32>(global(&OOM_PID) as usize) }.unwrap_or(0),
        uid: unsafe { ctx.read_at::<u32>(global(&OOM_UID) as usize) }.unwrap_or(0),
        comm: [0; 16],
    };
    // `__data_loc char[] comm`: low 16 bits the offset in the record, high
    // 16 bits the length.
    // SAFETY: offset from the tracepoint's format file.
    let loc = unsafe { ctx.read_at::<u32>(global(&OOM_COMM) as usize) }.unwrap_or(0);
    let off = (loc & 0xffff) as usize;
    if off != 0 {
        // SAFETY: the pointer is into the tracepoint record; the helper
        // checks the read.
        let _ = unsafe {
            bpf_probe_read_kernel_str_bytes((ctx.as_ptr() as *const u8).add(off), &mut ev.comm)
        };
    }
    entry.write(ev);
    entry.submit(0);
    bump(STAT_OOMS);
    Ok(())
}

/// The raw fallback: pid (and comm, uid) from the `TP_PROTO` arguments.
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn mark_victim_raw(ctx: RawTracePointContext) -> i32 {
    let Some(mut entry) = OOMS.reserve::<OomEvent>(0) else {
        bump(STAT_RINGBUF_FULL);
        return 0;
    };
    let mut ev = OomEvent {
        // SAFETY: plain helper calls.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        unit_cgroup_id: current_unit().unwrap_or(0),
        total_vm_kb: 0,
        anon_rss_kb: 0,
        file_rss_kb: 0,
        shmem_rss_kb: 0,
        pid: 0,
        uid: 0,
        comm: [0; 16],
    };
    let arg0: u64 = ctx.arg(0);
    if global(&OOM_RAW_TASK) == 0 {
        ev.pid = arg0 as u32;
    } else {
        let task = arg0 as *const u8;
        let uid: u64 = ctx.arg(1);
        ev.uid = uid as u32;
        // SAFETY: `task` is the kernel's task_struct pointer, the offsets
        // come from its BTF; the helper checks the reads.
        unsafe {
            ev.pid = bpf_probe_read_kernel(task.add(global(&OOM_TASK_PID) as usize) as *const i32)
                .unwrap_or(0) as u32;
            let _ = bpf_probe_read_kernel_str_bytes(
                task.add(global(&OOM_TASK_COMM) as usize),
                &mut ev.comm,
            );
        }
    }
    entry.write(ev);
    entry.submit(0);
    bump(STAT_OOMS);
    0
}
