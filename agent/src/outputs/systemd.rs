//! The agent's side of its systemd unit: `sd_notify` readiness, the watchdog
//! fed from the sampling loop, STOPPING=1 on shutdown, and locking the agent's
//! own memory so the process that rescues the box is not stalled by reclaim.

use std::io;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Where notifications go: `sd_notify::notify` in the agent, a recording
/// closure in tests.
type Sink = Box<dyn FnMut(&[NotifyState<'_>]) -> io::Result<()> + Send>;

/// Talks to the service manager. Outside systemd (no `$NOTIFY_SOCKET`) every
/// call is a cheap no-op, so the agent can always hold one.
pub struct Notifier {
    sink: Sink,
    /// `$WATCHDOG_USEC`: systemd kills the agent when no WATCHDOG=1 arrived
    /// within it. `None` when the unit has no `WatchdogSec=`.
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
    /// A failing socket is logged once, not once per tick.
    warned: bool,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("watchdog", &self.watchdog)
            .field("last_ping", &self.last_ping)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (at each send, through the `sd-notify` crate)
    /// and `$WATCHDOG_USEC` / `$WATCHDOG_PID` (once, here: the watchdog is
    /// only ours when WATCHDOG_PID is our pid).
    pub fn from_env() -> Notifier {
        let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
        Notifier::with_sink(watchdog, Box::new(sd_notify::notify))
    }

    /// A notifier with an explicit watchdog interval and sink (tests, or a
    /// caller that already parsed the environment).
    pub fn with_sink(watchdog: Option<Duration>, sink: Sink) -> Notifier {
        Notifier {
            sink,
            watchdog,
            last_ping: None,
            warned: false,
        }
    }

    /// The unit's watchdog interval. The sampling loop must call
    /// [`Notifier::tick`] more often than half of it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// READY=1, once the first sample is taken and `/metrics` listens:
    /// `systemctl start` returns only then (Type=notify).
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        // Readiness counts as a sign of life: the next ping is due one
        // half-interval from now.
        self.last_ping = Some(Instant::now());
    }

    /// A free-form status line shown by `systemctl status`.
    pub fn status(&mut self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Called from the sampling loop on every tick: sends WATCHDOG=1 at most
    /// once per half watchdog interval (systemd's advice in sd_watchdog_enabled(3)),
    /// so a loop that stops ticking gets the agent restarted. Returns whether
    /// a ping was sent.
    pub fn tick(&mut self) -> bool {
        self.tick_at(Instant::now())
    }

    /// [`Notifier::tick`] with the caller's clock (tests, or a loop that
    /// already took `now`).
    pub fn tick_at(&mut self, now: Instant) -> bool {
        let Some(interval) = self.watchdog else {
            return false;
        };
        let due = match self.last_ping {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= interval / 2,
        };
        if due {
            self.send(&[NotifyState::Watchdog]);
            self.last_ping = Some(now);
        }
        due
    }

    /// STOPPING=1 at the start of an orderly shutdown, so systemd does not
    /// count the exit as a watchdog failure.
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }

    fn send(&mut self, state: &[NotifyState<'_>]) {
        if let Err(e) = (self.sink)(state) {
            if !self.warned {
                tracing::warn!(
                    error = %e,
                    "cannot notify systemd through $NOTIFY_SOCKET; with Type=notify \
                     the unit will time out or be restarted by its watchdog"
                );
                self.warned = true;
            }
        }
    }
}

/// Outcome of [`lock_memory`], for the agent-start log line and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLock {
    /// Every current and future page is locked; `locked_bytes` is VmLck.
    Locked { locked_bytes: Option<u64> },
    /// mlockall failed; the agent runs on, but can be paged out.
    Failed { errno: i32 },
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`. Near MemoryMax, or when the host is
/// short of memory, the kernel reclaims file pages, including the agent's own
/// code: the process meant to kill the runaway would then stall on refaults
/// exactly when it is needed. Locking keeps its code, heap and stacks resident
/// (a few MiB). Failure is not fatal: it is logged as a clear warning with the
/// cause (needs CAP_IPC_LOCK or `LimitMEMLOCK=infinity`; the shipped unit has
/// both).
///
/// MCL_ONFAULT (Linux 4.4) locks pages as they are touched instead of
/// populating every mapping up front: thread stacks and malloc arenas would
/// otherwise become fully resident (2 MiB per thread), while everything the
/// agent actually runs stays locked once it ran.
pub fn lock_memory() -> MemoryLock {
    // SAFETY: mlockall takes flags and touches no memory of ours.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc == 0 {
        let locked_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_vm_lck(&s));
        tracing::info!(
            locked_bytes,
            "memory locked (mlockall MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT)"
        );
        return MemoryLock::Locked { locked_bytes };
    }
    let err = io::Error::last_os_error();
    let errno = err.raw_os_error().unwrap_or(0);
    let hint = match errno {
        libc::EPERM => "the agent lacks CAP_IPC_LOCK",
        libc::ENOMEM => {
            "RLIMIT_MEMLOCK is too small (set LimitMEMLOCK=infinity or grant CAP_IPC_LOCK)"
        }
        libc::EAGAIN => "some pages could not be locked",
        _ => "unexpected error",
    };
    tracing::warn!(
        error = %err,
        "mlockall failed: {hint}; the agent keeps running but can be paged out \
         and stall under memory pressure, exactly when it is needed"
    );
    MemoryLock::Failed { errno }
}

/// `VmLck:` of /proc/<pid>/status, in bytes. `None` when absent or malformed.
pub fn parse_vm_lck(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmLck:"))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A notifier whose sink records each datagram as systemd would see it.
    fn recording(watchdog: Option<Duration>) -> (Notifier, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink_log = Arc::clone(&log);
        let sink: Sink = Box::new(move |states| {
            let msg: Vec<String> = states.iter().map(|s| s.to_string()).collect();
            sink_log.lock().expect("log lock").push(msg.join("\n"));
            Ok(())
        });
        (Notifier::with_sink(watchdog, sink), log)
    }

    #[test]
    fn ready_stopping_and_status_are_sent() {
        let (mut n, log) = recording(None);
        n.ready("watching 3 units");
        n.status("degraded: no BPF");
        n.stopping();
        let log = log.lock().expect("log lock");
        assert_eq!(
            *log,
            vec![
                "READY=1\nSTATUS=watching 3 units".to_string(),
                "STATUS=degraded: no BPF".to_string(),
                "STOPPING=1".to_string(),
            ]
        );
    }

    #[test]
    fn tick_without_watchdog_sends_nothing() {
        let (mut n, log) = recording(None);
        assert!(!n.tick());
        assert!(log.lock().expect("log lock").is_empty());
    }

    #[test]
    fn tick_pings_at_most_every_half_interval() {
        let (mut n, log) = recording(Some(Duration::from_secs(30)));
        let t0 = Instant::now();
        assert!(n.tick_at(t0), "first tick pings");
        assert!(!n.tick_at(t0 + Duration::from_secs(1)));
        assert!(!n.tick_at(t0 + Duration::from_millis(14_999)));
        assert!(n.tick_at(t0 + Duration::from_secs(15)), "half interval");
        assert!(!n.tick_at(t0 + Duration::from_secs(16)));
        assert!(n.tick_at(t0 + Duration::from_secs(31)));
        let log = log.lock().expect("log lock");
        assert_eq!(log.len(), 3);
        assert!(log.iter().all(|m| m == "WATCHDOG=1"), "{log:?}");
    }

    #[test]
    fn ready_counts_as_a_ping() {
        let (mut n, log) = recording(Some(Duration::from_secs(30)));
        n.ready("ok");
        assert!(!n.tick(), "ping not due right after READY=1");
        assert_eq!(log.lock().expect("log lock").len(), 1);
    }

    #[test]
    fn failing_socket_is_not_fatal() {
        let calls = Arc::new(Mutex::new(0));
        let c = Arc::clone(&calls);
        let sink: Sink = Box::new(move |_| {
            *c.lock().expect("calls lock") += 1;
            Err(io::Error::from_raw_os_error(libc::ECONNREFUSED))
        });
        let mut n = Notifier::with_sink(Some(Duration::from_secs(2)), sink);
        n.ready("x");
        let t0 = Instant::now();
        n.tick_at(t0 + Duration::from_secs(5));
        n.tick_at(t0 + Duration::from_secs(10));
        n.stopping();
        assert_eq!(*calls.lock().expect("calls lock"), 4);
    }

    /// mlockall in a child copy of this test binary (MCL_FUTURE would lock
    /// every later allocation of the other tests running in this process).
    #[test]
    fn lock_memory_locks_or_reports_why() {
        if std::env::var_os("T3P_LOCK_CHILD").is_some() {
            match lock_memory() {
                MemoryLock::Locked { locked_bytes } => {
                    println!("LOCKED {}", locked_bytes.unwrap_or(0));
                }
                MemoryLock::Failed { errno } => println!("FAILED {errno}"),
            }
            return;
        }
        let exe = std::env::current_exe().expect("current test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "outputs::systemd::tests::lock_memory_locks_or_reports_why",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("T3P_LOCK_CHILD", "1")
            .output()
            .expect("run child test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        // The harness may print "test <name> ... " on the same line.
        let line = stdout
            .lines()
            .find_map(|l| {
                l.find("LOCKED ")
                    .or_else(|| l.find("FAILED "))
                    .map(|at| &l[at..])
            })
            .expect("child printed its outcome");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let bytes: u64 = line
                .strip_prefix("LOCKED ")
                .unwrap_or_else(|| panic!("root must be able to mlockall: {line}"))
                .parse()
                .expect("VmLck figure");
            assert!(bytes > 0, "VmLck after mlockall is {bytes}");
            eprintln!("mlockall: VmLck {} KiB in the test binary", bytes / 1024);
        }
    }

    #[test]
    fn vm_lck_parses_real_and_bad_input() {
        let status =
            "Name:\tt3pressure\nVmPeak:\t   12000 kB\nVmLck:\t    5120 kB\nVmPin:\t       0 kB\n";
        assert_eq!(parse_vm_lck(status), Some(5120 * 1024));
        assert_eq!(parse_vm_lck("Name:\tx\n"), None, "missing");
        assert_eq!(parse_vm_lck(""), None, "empty");
        assert_eq!(parse_vm_lck("VmLck:\tlots kB\n"), None, "malformed");
        assert_eq!(parse_vm_lck("VmLck:\t12\n"), None, "no unit");
        let own = std::fs::read_to_string("/proc/self/status").expect("read own status");
        assert!(
            parse_vm_lck(&own).is_some(),
            "real /proc/self/status has VmLck"
        );
    }
}
