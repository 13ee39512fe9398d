//! What `t3pressure check` asks of BPF: privileges, BTF, lockdown, tracefs,
//! and whether the embedded object really loads and its scheduler and OOM
//! programs attach (and how the OOM one does), each with a fix hint.

use std::path::Path;

use aya::Btf;

use super::load::{attach_oom, load_sched, oom_plan, SchedGlobals};
use super::{btf, format, BpfError};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeItem {
    pub name: &'static str,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it, when not ok.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub items: Vec<ProbeItem>,
    /// The object loaded, the scheduler and the OOM programs attached.
    pub loaded: bool,
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const FIX_PRIVS: &str = "run as root or grant CAP_BPF+CAP_PERFMON";

/// `CapEff:` of a `/proc/<pid>/status` text.
pub fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether a capability set allows loading tracing programs.
pub fn caps_allow_bpf(caps: u64) -> bool {
    let has = |c: u32| caps & (1u64 << c) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// The active mode of `/sys/kernel/security/lockdown` (`none`,
/// `integrity`, `confidentiality`), the one in brackets.
pub fn lockdown_mode(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

/// Runs every check; loads the object and attaches its programs as the
/// agent would (then drops them again).
pub fn probe() -> ProbeReport {
    let mut items = Vec::new();

    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_caps(&s));
    let privileged = caps.is_some_and(caps_allow_bpf);
    items.push(ProbeItem {
        name: "bpf privileges",
        ok: privileged,
        detail: match caps {
            Some(c) => format!("CapEff {c:016x}"),
            None => "capabilities unreadable".to_string(),
        },
        fix: (!privileged).then(|| FIX_PRIVS.to_string()),
    });

    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    items.push(ProbeItem {
        name: "kernel BTF",
        ok: btf,
        detail: if btf {
            "/sys/kernel/btf/vmlinux present".to_string()
        } else {
            "no /sys/kernel/btf/vmlinux".to_string()
        },
        fix: (!btf).then(|| "use a kernel built with CONFIG_DEBUG_INFO_BTF=y".to_string()),
    });

    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown").ok();
    let mode = lockdown
        .as_deref()
        .and_then(lockdown_mode)
        .unwrap_or("none");
    let locked = mode == "confidentiality";
    items.push(ProbeItem {
        name: "kernel lockdown",
        ok: !locked,
        detail: format!("lockdown {mode}"),
        fix: locked.then(|| {
            "lockdown=confidentiality forbids reading kernel memory from BPF: boot with lockdown=integrity or none (or disable Secure Boot lockdown)".to_string()
        }),
    });

    let blob = std::fs::read("/sys/kernel/btf/vmlinux").ok();
    let (classic, raw) = oom_plan(blob.as_deref());
    let mut walk = blob
        .as_deref()
        .ok_or_else(|| "no /sys/kernel/btf/vmlinux".to_string())
        .and_then(btf::cgroup_walk);
    drop(blob);
    items.push(ProbeItem {
        name: "oom:mark_victim shape",
        ok: classic.is_ok() || raw.is_ok(),
        detail: format!(
            "record (format file): {}; arguments (BTF): {}",
            match &classic {
                Ok(_) => "pid, comm, rss, uid".to_string(),
                Err(e) => e.clone(),
            },
            match &raw {
                Ok(btf::RawMarkVictim::Pid) => "(int pid)".to_string(),
                Ok(btf::RawMarkVictim::Task { pid_offset, comm_offset }) => format!(
                    "(task_struct *, uid_t), task pid at +{pid_offset}, comm at +{comm_offset}"
                ),
                Err(e) => e.clone(),
            }
        ),
        fix: (classic.is_err() && raw.is_err()).then(|| {
            "mount tracefs (mount -t tracefs tracefs /sys/kernel/tracing) on a kernel with CONFIG_TRACEPOINTS and BTF".to_string()
        }),
    });

    let mut oom = Err("not tried: the object did not load".to_string());
    let loaded = (|| {
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let offsets = classic.clone().unwrap_or(format::Offsets::ZERO);
        let g = SchedGlobals {
            threshold_ns: 100_000_000,
            idle_marks: true,
            walk: walk.clone(),
        };
        let (mut ebpf, walk_used) = load_sched(&offsets, raw.as_ref().ok().copied(), g, &btf)?;
        walk = walk_used;
        oom = attach_oom(&mut ebpf, &classic, &raw);
        Ok::<(), BpfError>(())
    })();
    items.push(ProbeItem {
        name: "bpf load + attach",
        ok: loaded.is_ok(),
        detail: match &loaded {
            Ok(()) => "embedded object loaded, sched_switch/sched_wakeup/sched_wakeup_new attached"
                .to_string(),
            Err(e) => e.to_string(),
        },
        fix: loaded
            .as_ref()
            .err()
            .map(|e| fix_for(e, privileged, locked)),
    });
    if loaded.is_ok() {
        items.push(ProbeItem {
            name: "bpf unit check",
            // Either way works; the walk is cheaper per context switch.
            ok: true,
            detail: match &walk {
                Ok(w) => format!(
                    "direct loads from the task (cgroups +{}, dfl_cgrp +{}, level +{}, kn +{}, id +{})",
                    w.task_cgroups, w.css_set_dfl_cgrp, w.cgroup_level, w.cgroup_kn, w.kernfs_node_id
                ),
                Err(e) => format!("bpf_get_current_ancestor_cgroup_id ({e})"),
            },
            fix: None,
        });
        items.push(ProbeItem {
            name: "bpf OOM program",
            ok: oom.is_ok(),
            detail: match &oom {
                Ok(how) => how.describe().to_string(),
                Err(e) => e.clone(),
            },
            fix: oom.is_err().then(|| {
                "OOM kills are then seen only in memory.events (no oom_kill events, no \
                 t3pressure_oom_kills_total): perf_event_open was refused (Debian's \
                 perf_event_paranoid=3 wants CAP_SYS_ADMIN) and the raw tracepoint too; \
                 run with RUST_LOG=debug and report the error"
                    .to_string()
            }),
        });
    }

    ProbeReport {
        loaded: loaded.is_ok() && oom.is_ok(),
        items,
    }
}

/// A hint for a load/attach failure.
fn fix_for(e: &BpfError, privileged: bool, locked: bool) -> String {
    match e.errno() {
        Some(libc::EPERM) | Some(libc::EACCES) if !privileged => FIX_PRIVS.to_string(),
        Some(libc::EPERM) if locked => "kernel lockdown refuses BPF reads: lower it".to_string(),
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "refused despite privileges: check kernel.unprivileged_bpf_disabled, LSM policy and lockdown".to_string()
        }
        _ => "the verifier or kernel refused the program: run with RUST_LOG=debug and report the error".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_of_root_and_of_nobody() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(effective_caps(root).is_some_and(caps_allow_bpf));
        let nobody = "CapEff:\t0000000000000000\n";
        assert_eq!(effective_caps(nobody), Some(0));
        assert!(!caps_allow_bpf(0));
        let bpf_perfmon = (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON);
        assert!(caps_allow_bpf(bpf_perfmon));
        assert!(!caps_allow_bpf(1u64 << CAP_BPF));
        assert_eq!(effective_caps(""), None);
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
    }

    #[test]
    fn lockdown_modes() {
        assert_eq!(
            lockdown_mode("[none] integrity confidentiality\n"),
            Some("none")
        );
        assert_eq!(
            lockdown_mode("none integrity [confidentiality]\n"),
            Some("confidentiality")
        );
        assert_eq!(lockdown_mode(""), None);
    }
}
