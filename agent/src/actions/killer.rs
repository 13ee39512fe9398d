//! Killing a runaway process so that a recycled pid can never be hit:
//! open a pidfd, re-check through procfs that the pidfd's process is the one
//! decided on, SIGKILL through the pidfd, then `process_mrelease` to free its
//! memory at once instead of waiting for the exit path.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The process the policy decided on, as it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillTarget {
    pub pid: i32,
    /// `/proc/PID/stat` field 22 at decision time: with the pid it names one
    /// process across pid recycling.
    pub start_time: u64,
    /// The process's cgroup at decision time, relative to the cgroup root
    /// the agent reads (`ProcSample::cgroup`); `/proc/PID/cgroup`'s `0::`
    /// path must equal it or end with it (a `--cgroup-root` below the
    /// mount). `None` skips the check (a fake tree in tests).
    pub cgroup: Option<String>,
    pub comm: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// The process exited (or is a zombie) before it could be signalled.
    #[error("process {pid} gone before the kill: {detail}")]
    Gone { pid: i32, detail: String },
    /// The pid now names another process, or it moved cgroup: not touched.
    #[error("process {pid} changed since the decision: {detail}")]
    Changed { pid: i32, detail: String },
    /// A syscall failed; carries the errno text.
    #[error("{op} on pid {pid} failed: {source}")]
    Sys {
        op: &'static str,
        pid: i32,
        source: std::io::Error,
    },
}

/// How the runaway catcher kills. The real one is [`PidfdKiller`]; tests use
/// [`RecordingKiller`].
pub trait Killer: Send + Sync {
    fn kill(&self, target: &KillTarget) -> Result<(), KillError>;
}

/// The real killer.
#[derive(Debug, Clone)]
pub struct PidfdKiller {
    proc_root: PathBuf,
}

impl PidfdKiller {
    pub fn new(proc_root: &Path) -> Self {
        PidfdKiller {
            proc_root: proc_root.to_path_buf(),
        }
    }

    /// Reads the identity of `pid` now: state, start time, cgroup v2 path.
    fn identity(&self, pid: i32) -> Result<(char, u64, Option<String>, String), KillError> {
        let dir = self.proc_root.join(pid.to_string());
        let gone = |e: std::io::Error| KillError::Gone {
            pid,
            detail: format!("reading {}: {e}", dir.display()),
        };
        let stat = std::fs::read_to_string(dir.join("stat")).map_err(gone)?;
        let (state, start_time) = parse_stat(&stat).ok_or_else(|| KillError::Changed {
            pid,
            detail: "unparsable /proc/PID/stat".into(),
        })?;
        let comm = stat_comm(&stat).unwrap_or_default().to_string();
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).map_err(gone)?;
        Ok((
            state,
            start_time,
            parse_cgroup_v2(&cgroup).map(str::to_string),
            comm,
        ))
    }
}

impl Killer for PidfdKiller {
    fn kill(&self, target: &KillTarget) -> Result<(), KillError> {
        let pid = target.pid;
        let fd = pidfd_open(pid).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => KillError::Gone {
                pid,
                detail: "no such process".into(),
            },
            _ => KillError::Sys {
                op: "pidfd_open",
                pid,
                source: e,
            },
        })?;
        // Read after opening the pidfd: if these figures are the decided-on
        // process's, the pidfd refers to it (pid reuse needs the old one
        // reaped, which the liveness check below rules out).
        let (state, start_time, cgroup, comm) = self.identity(pid)?;
        if start_time != target.start_time {
            return Err(KillError::Changed {
                pid,
                detail: format!(
                    "start time {start_time} != {} (pid recycled)",
                    target.start_time
                ),
            });
        }
        // The decision's comm may be a few reads old (`status` is read
        // every few passes): a process that exec'd since (another program,
        // perhaps a protected one) is not the one decided on. `status`
        // escapes `\` and newlines in names, `stat` does not: such names
        // are not compared.
        if !target.comm.is_empty() && !target.comm.contains('\\') && comm != target.comm {
            return Err(KillError::Changed {
                pid,
                detail: format!("comm {comm:?} != {:?} (exec'd)", target.comm),
            });
        }
        if let Some(want) = &target.cgroup {
            if !cgroup.as_deref().is_some_and(|c| cgroup_matches(c, want)) {
                return Err(KillError::Changed {
                    pid,
                    detail: format!("cgroup {cgroup:?} != {want:?}"),
                });
            }
        }
        if matches!(state, 'Z' | 'X') {
            return Err(KillError::Gone {
                pid,
                detail: format!("state {state} (exited)"),
            });
        }
        // Liveness through the pidfd: the process we just read is still the
        // pidfd's process.
        pidfd_send_signal(&fd, 0).map_err(|e| signal_error(pid, e))?;
        pidfd_send_signal(&fd, libc::SIGKILL).map_err(|e| signal_error(pid, e))?;
        // process_mrelease frees the address space in the caller's context
        // (about 0.2 ms per MiB measured here: seconds for a 12 GiB agent),
        // so it runs on its own thread and the sampling loop goes on. The
        // process cannot grow any more once SIGKILL is queued.
        let spawned = std::thread::Builder::new()
            .name("t3-mrelease".into())
            .spawn(move || release(pid, &fd));
        if let Err(e) = spawned {
            tracing::debug!(pid, error = %e, "no thread for process_mrelease; the exit path frees the memory");
        }
        Ok(())
    }
}

/// Frees a SIGKILLed process's memory now; ENOSYS (old kernel), EINVAL
/// (not dying yet / no mm) and ESRCH (already reaped) are expected.
fn release(pid: i32, fd: &OwnedFd) {
    match process_mrelease(fd) {
        Ok(()) => tracing::debug!(pid, "process_mrelease done"),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ESRCH) => {
                tracing::debug!(pid, error = %e, "process_mrelease unavailable or too late; the exit path frees the memory");
            }
            _ => tracing::warn!(pid, error = %e, "process_mrelease failed after SIGKILL"),
        },
    }
}

fn signal_error(pid: i32, e: std::io::Error) -> KillError {
    if e.raw_os_error() == Some(libc::ESRCH) {
        KillError::Gone {
            pid,
            detail: "exited before the signal".into(),
        }
    } else {
        KillError::Sys {
            op: "pidfd_send_signal",
            pid,
            source: e,
        }
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; a non-negative result is
    // a new file descriptor that we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(r).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_send_signal(fd: &OwnedFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: valid pidfd, null siginfo (the kernel fills it as kill() does).
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `process_mrelease(2)` (Linux 5.15, syscall 448 on every architecture).
fn process_mrelease(fd: &OwnedFd) -> std::io::Result<()> {
    const SYS_PROCESS_MRELEASE: libc::c_long = 448;
    // SAFETY: valid pidfd, flags 0.
    let r = unsafe { libc::syscall(SYS_PROCESS_MRELEASE, fd.as_raw_fd(), 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// State and start time (field 22) of `/proc/PID/stat`. The comm field can
/// hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), start time is field 22: 18 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The comm of a `/proc/PID/stat` line: between the first `(` and the
/// last `)` (it may hold both).
pub fn stat_comm(text: &str) -> Option<&str> {
    text.get(text.find('(')? + 1..text.rfind(')')?)
}

/// Whether the `0::` path of a process is the expected cgroup: equal, or
/// ending with it at a path component boundary.
pub fn cgroup_matches(fresh: &str, want: &str) -> bool {
    fresh == want || (want.starts_with('/') && want.len() > 1 && fresh.ends_with(want))
}

/// Whether `path` is on a cgroup2 file system: only then do the cgroup paths
/// the agent reads match `/proc/PID/cgroup` (not in a fake test tree).
pub fn is_cgroup2(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: valid NUL-terminated path and a buffer of the right type.
    let r = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return false;
    }
    // SAFETY: statfs succeeded and filled the buffer.
    let st = unsafe { st.assume_init() };
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs per architecture: `expect` would not hold everywhere"
    )]
    let magic = st.f_type as i64;
    magic == CGROUP2_SUPER_MAGIC
}

/// The cgroup v2 path (`0::/path`) of `/proc/PID/cgroup`; hybrid hosts list
/// v1 hierarchies too.
pub fn parse_cgroup_v2(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// A fake killer that records what it was asked and answers as told.
#[derive(Debug, Default)]
pub struct RecordingKiller {
    pub calls: Mutex<Vec<KillTarget>>,
    /// When set, every kill fails with `Gone` carrying this text.
    pub fail_with: Option<String>,
}

impl RecordingKiller {
    pub fn calls(&self) -> Vec<KillTarget> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Killer for RecordingKiller {
    fn kill(&self, target: &KillTarget) -> Result<(), KillError> {
        if let Ok(mut c) = self.calls.lock() {
            c.push(target.clone());
        }
        match &self.fail_with {
            Some(detail) => Err(KillError::Gone {
                pid: target.pid,
                detail: detail.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = include_str!("../../fixtures/kernel-6.1/proc/pid/stat");
    const CGROUP: &str = include_str!("../../fixtures/kernel-6.1/proc/pid/cgroup");

    #[test]
    fn stat_of_the_capture() {
        assert_eq!(parse_stat(STAT), Some(('S', 1801)));
        assert_eq!(stat_comm(STAT), Some("python3"));
        assert_eq!(stat_comm("7 (a) b)) R 1"), Some("a) b)"));
        assert_eq!(stat_comm("7 a R"), None);
    }

    #[test]
    fn stat_with_odd_comm_and_bad_input() {
        let odd = STAT.replace("(python3)", "(a) b (c)");
        assert_eq!(parse_stat(&odd), Some(('S', 1801)));
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("205 (x) S 1 2"), None);
        assert_eq!(parse_stat(&STAT.replace(" 1801 ", " x ")), None);
    }

    #[test]
    fn cgroup_v2_line() {
        assert_eq!(
            parse_cgroup_v2(CGROUP),
            Some("/system.slice/system-t3\\x2dserve.slice/t3-serve@alice.service")
        );
        let hybrid = "4:memory:/x\n1:cpu:/\n0::/user.slice\n";
        assert_eq!(parse_cgroup_v2(hybrid), Some("/user.slice"));
        assert_eq!(parse_cgroup_v2("4:memory:/x\n"), None);
        assert_eq!(parse_cgroup_v2(""), None);
    }

    #[test]
    fn cgroup_match_rules() {
        let unit = "/system.slice/t3-serve@alice.service";
        assert!(cgroup_matches(unit, unit));
        assert!(
            cgroup_matches(&format!("/sub{unit}"), unit),
            "root below the mount"
        );
        assert!(!cgroup_matches("/system.slice/t3-serve@bob.service", unit));
        assert!(!cgroup_matches(unit, "/"));
        assert!(!cgroup_matches(unit, "alice.service"));
    }

    #[test]
    fn cgroup2_detection() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_cgroup2(dir.path()), "a temp dir is not cgroup2");
        assert!(!is_cgroup2(Path::new("/nonexistent")));
        // On this host's hybrid layout the unified mount is cgroup2.
        if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
            assert!(is_cgroup2(Path::new("/sys/fs/cgroup/unified")));
        }
    }

    #[test]
    fn missing_process_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = PidfdKiller::new(dir.path());
        let e = k.identity(12345).expect_err("no such entry");
        assert!(matches!(e, KillError::Gone { .. }), "{e}");
    }
}
