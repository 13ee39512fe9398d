//! `t3pressure check`: what this host supports — cgroup v2 and where, its
//! controllers, PSI, BTF, tracefs, whether the embedded BPF object loads and
//! attaches, permissions, and how many units the glob matches. One line per
//! item with ok / warn / missing and how to fix it. Exits non-zero when the
//! agent could not do its main job (watching units' memory and pressure).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::cli::CheckArgs;
use crate::sources::discovery::UnitMatcher;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Degraded but the agent still does its main job.
    Warn,
    /// The agent cannot do its main job without it.
    Missing,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub items: Vec<Item>,
    /// True when the agent can do its main job on this host.
    pub usable: bool,
}

impl Report {
    pub fn item(&self, name: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.name == name)
    }

    pub fn render(&self) -> String {
        let mut out = String::from("t3pressure check: what this host supports\n");
        for i in &self.items {
            out.push_str(&format!(
                "{:<8} {:<13} {}\n",
                i.status.label(),
                i.name,
                i.detail
            ));
            if let Some(fix) = &i.fix {
                out.push_str(&format!("{:<8} {:<13} fix: {}\n", "", "", fix));
            }
        }
        out.push_str(if self.usable {
            "verdict: the agent can watch units on this host\n"
        } else {
            "verdict: the agent CANNOT do its main job on this host (see `missing` above)\n"
        });
        out
    }
}

pub fn main(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let report = check(&args.cgroup_root, &args.unit_glob, Path::new("/proc"));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs every check. Never fails: every problem is an item of the report.
pub fn check(cgroup_root: &Path, unit_glob: &str, proc_root: &Path) -> Report {
    let mut items = vec![kernel(proc_root), permissions(proc_root)];
    let mounts = std::fs::read_to_string(proc_root.join("self/mountinfo"))
        .map(|s| parse_mountinfo(&s))
        .unwrap_or_default();
    let (cg, is_v2) = cgroup_v2(cgroup_root, &mounts);
    items.push(cg);
    items.push(controllers(cgroup_root, is_v2, &mounts));
    items.push(psi(proc_root));
    items.push(btf());
    items.push(tracefs());
    items.push(bpf());
    items.push(units(cgroup_root, unit_glob));
    let usable = items.iter().all(|i| i.status != Status::Missing);
    Report { items, usable }
}

/// One mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: String,
}

/// Parses `/proc/PID/mountinfo` (see proc(5)): fields, `-`, fstype, source,
/// super options. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?.to_string();
            let _source = r.next()?;
            let super_options = r.next().unwrap_or("").to_string();
            Some(Mount {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                fstype,
                super_options,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` octal.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn kernel(proc_root: &Path) -> Item {
    let release = std::fs::read_to_string(proc_root.join("sys/kernel/osrelease"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Item {
        name: "kernel",
        status: Status::Ok,
        detail: format!("Linux {release}"),
        fix: None,
    }
}

/// Capability bits (include/uapi/linux/capability.h).
const CAPS: &[(&str, u32)] = &[
    ("CAP_BPF", 39),
    ("CAP_PERFMON", 38),
    ("CAP_KILL", 5),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_DAC_READ_SEARCH", 2),
];

fn permissions(proc_root: &Path) -> Item {
    let status = std::fs::read_to_string(proc_root.join("self/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let euid = field("Uid:")
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default();
    let cap_eff = field("CapEff:")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = CAPS
        .iter()
        .filter(|(_, bit)| cap_eff & (1u64 << bit) == 0)
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        Item {
            name: "permissions",
            status: Status::Ok,
            detail: format!("euid {euid}; has CAP_BPF, CAP_PERFMON, CAP_KILL, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH"),
            fix: None,
        }
    } else {
        Item {
            name: "permissions",
            status: Status::Warn,
            detail: format!(
                "euid {euid}; lacks {}: no BPF tracing, no kills, other users' /proc unreadable",
                missing.join(", ")
            ),
            fix: Some(
                "run as root, or as the systemd service in deploy/ (it grants these capabilities)"
                    .into(),
            ),
        }
    }
}

fn cgroup_v2(root: &Path, mounts: &[Mount]) -> (Item, bool) {
    let v2: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup2").collect();
    let at_root = v2.iter().any(|m| m.mount_point == root);
    if at_root {
        return (
            Item {
                name: "cgroup v2",
                status: Status::Ok,
                detail: format!("unified hierarchy mounted at {}", root.display()),
                fix: None,
            },
            true,
        );
    }
    let elsewhere: Vec<String> = v2
        .iter()
        .map(|m| m.mount_point.display().to_string())
        .collect();
    let root_type = mounts
        .iter()
        .rfind(|m| m.mount_point == root)
        .map(|m| m.fstype.clone());
    let detail = match (root_type, elsewhere.is_empty()) {
        (Some(t), false) => format!(
            "{} is {t}, not cgroup2; cgroup2 is mounted at {} (hybrid hierarchy)",
            root.display(),
            elsewhere.join(", ")
        ),
        (Some(t), true) => format!("{} is {t}; no cgroup2 mount at all", root.display()),
        (None, false) => format!(
            "{} is not a mount point; cgroup2 is mounted at {}",
            root.display(),
            elsewhere.join(", ")
        ),
        (None, true) => format!("{} is not mounted; no cgroup2 mount at all", root.display()),
    };
    // A plain directory (a fake tree in tests) is fine if it looks like cgroupfs.
    let looks_like_cgroupfs = root.join("cgroup.controllers").is_file();
    (
        Item {
            name: "cgroup v2",
            status: if looks_like_cgroupfs {
                Status::Warn
            } else {
                Status::Missing
            },
            detail,
            fix: Some(
                "boot systemd with the unified hierarchy (kernel command line \
                 systemd.unified_cgroup_hierarchy=1), or point --cgroup-root at the cgroup2 mount"
                    .into(),
            ),
        },
        looks_like_cgroupfs,
    )
}

fn controllers(root: &Path, is_v2: bool, mounts: &[Mount]) -> Item {
    let list = if is_v2 {
        std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
    } else {
        String::new()
    };
    let have: Vec<&str> = list.split_whitespace().collect();
    let needed = ["memory", "io", "cpu", "pids"];
    let lacking: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|c| !have.contains(c))
        .collect();
    let memory_on_v1 = mounts
        .iter()
        .any(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory"));
    let shown = if have.is_empty() {
        "none".to_string()
    } else {
        have.join(" ")
    };
    if !lacking.contains(&"memory") {
        let status = if lacking.is_empty() {
            Status::Ok
        } else {
            Status::Warn
        };
        return Item {
            name: "controllers",
            status,
            detail: if lacking.is_empty() {
                shown.clone()
            } else {
                format!(
                    "{shown} (without {}: those figures are skipped)",
                    lacking.join(", ")
                )
            },
            fix: None,
        };
    }
    Item {
        name: "controllers",
        status: Status::Missing,
        detail: if memory_on_v1 {
            format!(
                "cgroup v2 controllers: {shown}; the memory controller is on cgroup v1 \
                 (hybrid hierarchy): no memory.current/memory.max/memory.events per unit"
            )
        } else {
            format!("cgroup v2 controllers: {shown}; no memory controller")
        },
        fix: Some(
            "boot with systemd.unified_cgroup_hierarchy=1 (and without cgroup_no_v1=...) so \
             memory, io, cpu and pids are on cgroup v2"
                .into(),
        ),
    }
}

fn psi(proc_root: &Path) -> Item {
    match std::fs::read_to_string(proc_root.join("pressure/memory")) {
        Ok(_) => Item {
            name: "psi",
            status: Status::Ok,
            detail: "pressure stall information on (/proc/pressure/*)".into(),
            fix: None,
        },
        Err(e) => Item {
            name: "psi",
            status: Status::Missing,
            detail: format!("/proc/pressure/memory unreadable: {e}"),
            fix: Some("boot with psi=1 (CONFIG_PSI_DEFAULT_DISABLED kernels)".into()),
        },
    }
}

fn btf() -> Item {
    if Path::new("/sys/kernel/btf/vmlinux").is_file() {
        Item {
            name: "btf",
            status: Status::Ok,
            detail: "/sys/kernel/btf/vmlinux present".into(),
            fix: None,
        }
    } else {
        Item {
            name: "btf",
            status: Status::Warn,
            detail: "no /sys/kernel/btf/vmlinux: BPF maps with BTF may not load".into(),
            fix: Some("use a kernel built with CONFIG_DEBUG_INFO_BTF=y".into()),
        }
    }
}

fn tracefs() -> Item {
    let candidates = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    match candidates.iter().find(|d| {
        Path::new(d)
            .join("events/sched/sched_switch/format")
            .is_file()
    }) {
        Some(d) => Item {
            name: "tracefs",
            status: Status::Ok,
            detail: format!("{d} (tracepoint formats readable)"),
            fix: None,
        },
        None => Item {
            name: "tracefs",
            status: Status::Warn,
            detail: "no readable tracepoint formats under /sys/kernel/tracing".into(),
            fix: Some("mount -t tracefs nodev /sys/kernel/tracing (needed for BPF)".into()),
        },
    }
}

/// Loads the embedded object and attaches its programs for real.
fn bpf() -> Item {
    let report = crate::sources::bpf::probe::probe();
    let oom = report.items.iter().find(|i| i.name == "bpf OOM program");
    let unit_check = report.items.iter().find(|i| i.name == "bpf unit check");
    if report.loaded {
        return Item {
            name: "bpf",
            status: Status::Ok,
            detail: format!(
                "embedded eBPF object loads; scheduler programs attach; OOM kills via {}; a task's unit found by {}",
                oom.map_or("?", |i| i.detail.as_str()),
                unit_check.map_or("?", |i| i.detail.as_str())
            ),
            fix: None,
        };
    }
    let failed: Vec<&crate::sources::bpf::probe::ProbeItem> =
        report.items.iter().filter(|i| !i.ok).collect();
    if let Some(oom) = oom.filter(|i| !i.ok) {
        return Item {
            name: "bpf",
            status: Status::Warn,
            detail: format!(
                "scheduler programs attach, the OOM program does not (OOM kills only in memory.events): {}",
                oom.detail
            ),
            fix: oom.fix.clone(),
        };
    }
    Item {
        name: "bpf",
        status: Status::Warn,
        detail: format!(
            "BPF unavailable, the agent runs on PSI alone: {}",
            failed
                .iter()
                .map(|i| format!("{}: {}", i.name, i.detail))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        fix: failed.iter().find_map(|i| i.fix.clone()),
    }
}

fn units(root: &Path, glob: &str) -> Item {
    let matcher = match UnitMatcher::new(root, glob) {
        Ok(m) => m,
        Err(e) => {
            return Item {
                name: "units",
                status: Status::Missing,
                detail: format!("unit glob {glob:?} is invalid: {e}"),
                fix: Some("pass a glob such as t3-serve@*.service".into()),
            }
        }
    };
    let (found, _) = matcher.scan(root);
    let mut names: Vec<String> = found.into_iter().map(|u| u.name).collect();
    names.sort();
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    Item {
        name: "units",
        status: Status::Ok,
        detail: if names.is_empty() {
            format!(
                "no cgroup under {} matches {glob:?} yet (the agent runs and watches for them)",
                root.display()
            )
        } else {
            format!(
                "{} match {glob:?}: {}{}",
                names.len(),
                shown.join(", "),
                if names.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            )
        },
        fix: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
garbage line without separator
";

    #[test]
    fn mountinfo_parses_and_skips_garbage() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m[2].fstype, "cgroup2");
        assert_eq!(m[1].super_options, "rw,memory");
    }

    #[test]
    fn mountinfo_unescapes_spaces() {
        let m = parse_mountinfo("1 2 0:1 / /a\\040b rw - tmpfs x rw\n");
        assert_eq!(m[0].mount_point, PathBuf::from("/a b"));
    }

    #[test]
    fn hybrid_host_is_reported_plainly() {
        let mounts = parse_mountinfo(HYBRID);
        let root = Path::new("/nonexistent-t3p/sys/fs/cgroup");
        let (item, v2) = cgroup_v2(root, &mounts);
        assert!(!v2);
        assert_eq!(item.status, Status::Missing);
        let c = controllers(root, v2, &mounts);
        assert_eq!(c.status, Status::Missing);
        assert!(c.detail.contains("cgroup v1"), "{}", c.detail);
    }

    #[test]
    fn invalid_glob_is_missing_not_a_panic() {
        let i = units(Path::new("/nonexistent-t3p"), "t3-serve@[.service");
        assert_eq!(i.status, Status::Missing);
    }
}
