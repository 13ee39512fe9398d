//! `oom:mark_victim`: the victim's pid, comm, rss and uid, and the unit of
//! the task that ran the OOM killer (in a memcg OOM, the charging task, so
//! the unit whose limit was hit).

use agent_common::{OomEvent, STAT_OOMS, STAT_RINGBUF_FULL};
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::{map, tracepoint},
    maps::RingBuf,
    programs::TracePointContext,
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
