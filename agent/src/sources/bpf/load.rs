//! Loading the embedded object: the globals it is loaded with (episode
//! threshold, idle-mark syscalls, the cgroup walk's offsets, the OOM
//! record's offsets), attaching the scheduler programs, and the OOM
//! program's classic-or-raw choice.

use agent_common::{globals, CGROUP_WALK_LEN, IDLE_SYSCALLS_LEN};
use aya::programs::{BtfTracePoint, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

use super::{btf, format, BpfError, Offsets, OBJECT};

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
pub(super) fn attach_oom(
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
pub(super) fn oom_plan(
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
#[derive(Debug, Clone)]
pub(super) struct SchedGlobals {
    pub threshold_ns: u64,
    pub idle_marks: bool,
    /// The cgroup walk's offsets, or why there are none (kept as the
    /// reason the helper call is used).
    pub walk: Result<btf::CgroupWalk, String>,
}

/// Loads the object and attaches the scheduler programs. With a
/// [`btf::CgroupWalk`] that the verifier refuses (a kernel whose structs
/// the BTF check let through but the loads do not fit), loads again with
/// the helper call instead: the walk is an optimisation, never a reason to
/// run without BPF. Returns the walk in use and why it was dropped.
pub(super) fn load_sched(
    offsets: &Offsets,
    raw: Option<btf::RawMarkVictim>,
    g: SchedGlobals,
    btf: &Btf,
) -> Result<(Ebpf, Result<btf::CgroupWalk, String>), BpfError> {
    let first = load_object(offsets, raw, &g, btf).and_then(|mut ebpf| {
        attach_btf(&mut ebpf, &SCHED_PROGRAMS, btf)?;
        Ok(ebpf)
    });
    match first {
        Ok(ebpf) => Ok((ebpf, g.walk)),
        Err(e) if g.walk.is_ok() => {
            let why = format!("the verifier refused the direct loads: {}", verdict(&e));
            tracing::debug!("BPF unit check, the whole refusal: {e}");
            tracing::warn!("BPF unit check: {why}; using bpf_get_current_ancestor_cgroup_id");
            let g = SchedGlobals {
                walk: Err(why),
                ..g
            };
            let mut ebpf = load_object(offsets, raw, &g, btf)?;
            attach_btf(&mut ebpf, &SCHED_PROGRAMS, btf)?;
            Ok((ebpf, g.walk))
        }
        Err(e) => Err(e),
    }
}

/// A load error in one line: with a verifier log, its first line and the
/// verifier's reason (the log's last line before its statistics), not the
/// whole listing.
fn verdict(e: &BpfError) -> String {
    let text = e.to_string();
    let Some((head, log)) = text.split_once("Verifier output:") else {
        return text;
    };
    let reason = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with("verification time") && !l.starts_with("processed "))
        .last()
        .unwrap_or("");
    format!("{} {reason}", head.trim_end().trim_end_matches('.'))
}

/// Loads the object with the offsets and threshold set as globals.
fn load_object(
    offsets: &Offsets,
    raw: Option<btf::RawMarkVictim>,
    g: &SchedGlobals,
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
    loader.override_global(globals::EPISODE_THRESHOLD_NS, threshold_ns, true);
    let walk = walk
        .as_ref()
        .map_or([u64::MAX; CGROUP_WALK_LEN], |w| w.as_global());
    loader.override_global(globals::CGROUP_WALK, &walk, true);
    let (nr_offset, idle) = idle_syscalls(*idle_marks);
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
