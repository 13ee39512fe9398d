//! Helpers for tests that start real processes: environment checks that fail
//! loudly, the helper binaries, and procfs figures of a child.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use t3pressure::actions::killer::{parse_cgroup_v2, parse_stat};

/// Panics unless running as root: these tests must not pass by doing nothing.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "{what} needs root (euid is {euid}): run as root");
}

/// Starts `t3-memhog` and waits for its `ready` line.
pub fn memhog(bin: &str, initial_mib: u64, rate_mib_s: u64, max_mib: u64) -> Child {
    let mut child = Command::new(bin)
        .args([
            initial_mib.to_string(),
            rate_mib_s.to_string(),
            max_mib.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn t3-memhog");
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("read ready");
    assert_eq!(line.trim(), "ready", "t3-memhog did not start");
    child
}

/// RssAnon of a process in bytes; `None` once it is gone.
pub fn rss_anon(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// (state, start time) from /proc/PID/stat.
pub fn stat(pid: u32) -> Option<(char, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The cgroup v2 path of a process.
pub fn cgroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_cgroup_v2(&text).map(str::to_string)
}

/// Polls `f` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// The `t3pressure` binary next to this test's target directory; panics
/// with the command to build it when it is not there.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("T3PRESSURE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test> -> target/debug/t3pressure
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("t3pressure"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p t3pressure` first (or set T3PRESSURE_BIN)",
        bin.display()
    );
    bin
}
