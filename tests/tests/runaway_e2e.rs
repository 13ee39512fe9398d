//! End to end, without real memory limits: a fake cgroup tree whose
//! `cgroup.procs` lists real processes this test starts (one grows its anon
//! memory, two stay), `memory.max` set, `memory.current` kept by the test at
//! the sum of their RssAnon; the real agent in enforce mode must kill the
//! growing one before `memory.current` crosses 95 % of `memory.max`, and
//! leave the others alone.
//!
//! Scale: 2 GB/s against 16 GiB is 11.6 % of the limit per second; here the
//! limit is 512 MiB and the runaway grows at 60 MiB/s (11.7 %/s).
//!
//! Runs the real agent binary (`cargo test -p t3pressure-tests --test
//! runaway_e2e -- --nocapture` prints the peak and the time to the kill).

use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use t3pressure::model::event::{ActionKind, EventBody};
use t3pressure::outputs::eventlog::read_all;
use t3pressure_tests::procs::{agent_bin, memhog, require_root, rss_anon};

const MEMHOG: &str = env!("CARGO_BIN_EXE_t3-memhog");
const MIB: u64 = 1024 * 1024;
const MAX: u64 = 512 * MIB;

/// Kills and reaps on drop, so a failed assertion leaves nothing behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Rewrites a file in place, as the kernel's cgroup files change: the same
/// inode, so an agent that keeps the file open and `pread`s it at offset 0
/// (as it does on cgroupfs) sees the new content. Callers keep the length
/// fixed (zero-padded figures), so one write never leaves a shorter, torn
/// or empty file to read. Errors are ignored: the tree goes away when a
/// failing test unwinds.
fn write_in_place(dir: &Path, name: &str, content: &str) {
    use std::os::unix::fs::FileExt;
    if let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(name))
    {
        let _ = f.write_all_at(content.as_bytes(), 0);
    }
}

/// `<root>/system.slice/system-t3\x2dserve.slice/t3-serve@alice.service/`
/// with the files the agent reads.
fn fake_unit(root: &Path, pids: &[u32]) -> PathBuf {
    let unit = root
        .join("system.slice")
        .join("system-t3\\x2dserve.slice")
        .join("t3-serve@alice.service");
    std::fs::create_dir_all(&unit).expect("create unit dir");
    let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
               full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
    let procs: String = pids.iter().map(|p| format!("{p}\n")).collect();
    for (name, content) in [
        ("cgroup.procs", procs.as_str()),
        ("cgroup.controllers", "cpu io memory pids\n"),
        ("cgroup.events", "populated 1\nfrozen 0\n"),
        ("memory.max", &format!("{MAX}\n")),
        ("memory.high", "max\n"),
        // Fixed width: the updater rewrites these in place.
        ("memory.current", &format!("{:020}\n", 0)),
        ("memory.peak", "0\n"),
        ("memory.swap.current", "0\n"),
        ("memory.swap.max", "0\n"),
        (
            "memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        ),
        (
            "memory.stat",
            &format!(
                "anon {:020}\nfile 0\nfile_mapped 0\nshmem 0\nworkingset_refault_anon 0\n\
                 workingset_refault_file 0\npgmajfault 0\n",
                0
            ),
        ),
        ("memory.pressure", psi),
        ("io.pressure", psi),
        ("cpu.pressure", psi),
        ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
        ("pids.current", &format!("{}\n", pids.len())),
    ] {
        std::fs::write(unit.join(name), content).expect("write cgroup file");
    }
    unit
}

#[test]
fn agent_kills_the_runaway_before_95_percent() {
    require_root("the runaway end-to-end test");
    let bin = agent_bin();
    // Oldest first: the first one (parent outside the unit, oldest) is the
    // serve; the runaway is started last so it can never be taken for it.
    let serve = Reaped(memhog(MEMHOG, 32, 0, 32));
    std::thread::sleep(Duration::from_millis(50));
    let sibling = Reaped(memhog(MEMHOG, 32, 0, 32));
    std::thread::sleep(Duration::from_millis(50));
    let mut grower = Reaped(memhog(MEMHOG, 32, 60, 2048));
    let pids = [serve.0.id(), sibling.0.id(), grower.0.id()];

    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("cgroup");
    let state = tmp.path().join("state");
    let unit = fake_unit(&root, &pids);

    // memory.current = sum of RssAnon, refreshed every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let updater = {
        let (stop, peak, unit) = (stop.clone(), peak.clone(), unit.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let sum: u64 = pids.iter().filter_map(|p| rss_anon(*p)).sum();
                peak.fetch_max(sum, Ordering::Relaxed);
                write_in_place(&unit, "memory.current", &format!("{sum:020}\n"));
                write_in_place(&unit, "memory.stat", &format!("anon {sum:020}\nfile 0\n"));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut agent = Reaped(
        Command::new(&bin)
            .args(["run", "--mode", "enforce", "--no-bpf", "--cgroup-root"])
            .arg(&root)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--state-dir"])
            .arg(&state)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the agent"),
    );

    let start = Instant::now();
    let status = loop {
        if let Some(s) = grower.0.try_wait().expect("try_wait") {
            break s;
        }
        if let Some(s) = agent.0.try_wait().expect("try_wait agent") {
            panic!("the agent exited early ({s}); is `t3pressure run` built?");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the runaway was not killed within 30 s (peak {} MiB of {} MiB)",
            peak.load(Ordering::Relaxed) / MIB,
            MAX / MIB
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    stop.store(true, Ordering::Relaxed);
    updater.join().expect("updater thread");
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "runaway killed after {:.2} s; peak memory.current {} MiB = {:.1} % of memory.max",
        start.elapsed().as_secs_f64(),
        peak / MIB,
        100.0 * peak as f64 / MAX as f64
    );
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(
        (peak as f64) < 0.95 * MAX as f64,
        "peak {peak} crossed 95 % of {MAX}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut serve = serve;
    let mut sibling = sibling;
    assert!(
        serve.0.try_wait().expect("try_wait").is_none(),
        "serve lives"
    );
    assert!(
        sibling.0.try_wait().expect("try_wait").is_none(),
        "sibling lives"
    );

    let log = read_all(&state).expect("read the event log");
    let kill = log.events.iter().find_map(|e| match &e.body {
        EventBody::Runaway(a) if a.action == ActionKind::Killed => Some(a.clone()),
        _ => None,
    });
    let kill = kill.expect("a `runaway` killed event in the log");
    assert_eq!(kill.pid as u32, pids[2]);
    assert_eq!(kill.user, "alice");
}
