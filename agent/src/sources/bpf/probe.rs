//! What `t3pressure check` asks of BPF: privileges, BTF, lockdown, tracefs,
//! and whether the embedded object really loads and its OOM program
//! attaches, each with a fix hint.

use std::path::Path;

use aya::Btf;

use super::{attach, format, load_object, BpfError};

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
    /// The object loaded and the OOM program attached.
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

/// Runs every check; loads the object and attaches `oom:mark_victim` (then
/// drops it again).
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

    let formats = format::tracefs_root()
        .map_err(format::ReadFormatError::Tracefs)
        .and_then(|root| format::read_formats(&root));
    let offsets = match formats {
        Ok(f) => f.offsets().map_err(BpfError::from),
        Err(e) => Err(BpfError::from(e)),
    };
    items.push(ProbeItem {
        name: "tracepoint formats",
        ok: offsets.is_ok(),
        detail: match &offsets {
            Ok(_) => "sched_switch, sched_wakeup, sched_wakeup_new, mark_victim".to_string(),
            Err(e) => e.to_string(),
        },
        fix: offsets.as_ref().err().map(|_| {
            "mount tracefs (mount -t tracefs tracefs /sys/kernel/tracing) on a kernel with CONFIG_TRACEPOINTS".to_string()
        }),
    });

    let loaded = offsets.and_then(|o| {
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let mut ebpf = load_object(&o, 100_000_000, &btf)?;
        attach(&mut ebpf, &[("mark_victim", "oom", "mark_victim")])
    });
    items.push(ProbeItem {
        name: "bpf load + attach",
        ok: loaded.is_ok(),
        detail: match &loaded {
            Ok(()) => "embedded object loaded, oom:mark_victim attached".to_string(),
            Err(e) => e.to_string(),
        },
        fix: loaded
            .as_ref()
            .err()
            .map(|e| fix_for(e, privileged, locked)),
    });

    ProbeReport {
        loaded: loaded.is_ok(),
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
