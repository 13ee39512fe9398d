//! Cost of sampling: one pass over 100 units × 20 processes on a tmpfs fake
//! tree (fake /proc entries under --proc-root made from the captured ones),
//! and the running agent's RSS and CPU on that tree. Prints figures; asserts
//! nothing. Run: `cargo bench -p t3pressure --bench sampling`.
//! With `BENCH_HOLD=<seconds>` the agent is left running that long after
//! the figures (its URL printed) for a load test such as `wrk`. With
//! `BENCH_ONLY=pass` only the sampling passes run, with `BENCH_ONLY=tick`
//! only the agent ticks of units at 65 % of max (all processes read), with
//! `BENCH_ONLY=quiet` only the quiet agent ticks (for `perf` or `strace -c`;
//! `BENCH_PASSES` sets their number, 200 by default), with
//! `BENCH_ONLY=agent` only the running agent on quiet units (its pid
//! printed, for `perf record -p`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use t3pressure::model::sample::Unit;
use t3pressure::model::state::Model;
use t3pressure::outputs::http::compress;
use t3pressure::outputs::metrics::Metrics;
use t3pressure::outputs::snapshot::{build, AgentInfo};
use t3pressure::sources::discovery::UnitMatcher;
use t3pressure::sources::fdcache::FdBudget;
use t3pressure::sources::procfs::{ProcReader, ProcSlot};
use t3pressure::sources::sampler::Sampler;
use t3pressure::testing::FakeCgroupTree;

const UNITS: usize = 100;
const PROCS: usize = 20;
const PASSES: u32 = 200;

fn passes() -> u32 {
    std::env::var("BENCH_PASSES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(PASSES)
}

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn build_tree() -> FakeCgroupTree {
    let shm = Path::new("/dev/shm");
    assert!(
        shm.is_dir(),
        "/dev/shm (tmpfs) is needed for this benchmark"
    );
    let tree = FakeCgroupTree::new_in(shm);
    for u in 0..UNITS {
        let user = format!("user{u:03}");
        let dir = tree.unit(&user);
        let base = 10_000 + (u * PROCS) as i32;
        tree.process(&dir, base, 1, "node", 120_000);
        for p in 1..PROCS as i32 {
            tree.process(&dir, base + p, base, "claude", 50_000 + 1000 * p as u64);
        }
    }
    tree
}

fn per_pass(label: &str, cpu: Duration, wall: Duration, passes: u32) {
    println!(
        "{label:<44} cpu {:>8.3} ms/pass   wall {:>8.3} ms/pass",
        cpu.as_secs_f64() * 1e3 / f64::from(passes),
        wall.as_secs_f64() * 1e3 / f64::from(passes),
    );
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Time on a CPU of `pid`'s live threads, in ns (`/proc/PID/task/*/
/// schedstat`, first field: exact, where `utime`/`stime` count 10 ms
/// ticks), and how many threads were read.
fn cpu_ns(pid: u32) -> (u64, usize) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let mut total = 0;
    let mut threads = 0;
    for e in dir.flatten() {
        if let Some(ns) = std::fs::read_to_string(e.path().join("schedstat"))
            .ok()
            .and_then(|t| t.split(' ').next()?.parse::<u64>().ok())
        {
            total += ns;
            threads += 1;
        }
    }
    (total, threads)
}

fn main() {
    let t = Instant::now();
    let tree = build_tree();
    println!(
        "fake tree: {UNITS} units x {PROCS} processes on tmpfs, built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let matcher = UnitMatcher::new(&tree.root(), "t3-serve@*.service").expect("glob");
    let (units, _) = matcher.scan(&tree.root());
    assert_eq!(units.len(), UNITS);

    // 1. The reads alone: sampler over every unit, host included.
    let mut sampler = Sampler::new(&tree.root(), &tree.proc_root());
    let pass = |s: &mut Sampler, units: &[Unit]| {
        let v: Vec<_> = units.iter().filter_map(|u| s.sample_unit(u)).collect();
        let h = s.sample_host();
        s.end_pass();
        (v, h)
    };
    for _ in 0..3 {
        let (v, _) = pass(&mut sampler, &units);
        assert_eq!(v.len(), UNITS);
        assert_eq!(v[0].procs.len(), PROCS);
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only == "agent" {
        // The devvm's MemoryMax=16G: quiet units, as in the last figures.
        for u in &units {
            tree.set(&u.user, "memory.max", "17179869184\n");
        }
        running_agent(&tree);
        return;
    }
    let n = if only == "quiet" || only == "tick" {
        0
    } else {
        passes()
    };
    let (c0, w0) = (cpu_time(), Instant::now());
    for _ in 0..n {
        std::hint::black_box(pass(&mut sampler, &units));
    }
    if n > 0 {
        per_pass(
            "sampling pass (reads + parse)",
            cpu_time() - c0,
            w0.elapsed(),
            n,
        );
    }
    assert!(
        sampler.errors.counts().is_empty(),
        "{:?}",
        sampler.errors.counts()
    );
    if only == "pass" {
        return;
    }

    // 2. A whole agent tick: reads, model update, metrics update.
    let metrics = Metrics::new("bench").expect("metrics");
    let mut model = Model::default();
    let now = Instant::now();
    for u in &units {
        metrics.add_unit(&u.user, &u.name);
        model.add_unit(u.clone(), Duration::from_secs(1), now);
    }
    let agent = AgentInfo {
        version: "bench".into(),
        mode: "observe".into(),
        bpf_loaded: false,
        bpf_error: None,
        units_watched: UNITS,
        sample_interval_ms: 1000,
        started_at: build::unix(SystemTime::now()),
        from_agent: true,
    };
    // As the agent does it: processes of quiet units every few passes.
    let tick = |model: &mut Model, sampler: &mut Sampler| {
        let now = Instant::now();
        let due = model.due_with_procs(now + Duration::from_secs(3600), Duration::from_secs(1));
        let samples: Vec<_> = due
            .iter()
            .map(|(u, with_procs)| (u.clone(), sampler.sample_unit_with(u, *with_procs)))
            .collect();
        let host = sampler.sample_host();
        sampler.end_pass();
        for (u, s) in samples {
            let Some(s) = s else { continue };
            if let Some(st) = model.update_unit(&u.path, s, now) {
                metrics.update_unit(st);
            }
        }
        model.update_host(host);
        // /metrics and the snapshot are made when asked for (at most once
        // per pass), not per pass: measured separately below.
    };
    for _ in 0..3 {
        tick(&mut model, &mut sampler);
    }
    let mut ticks = PASSES / 4;
    if only != "quiet" {
        if only == "tick" {
            ticks = passes();
        }
        let (c0, w0) = (cpu_time(), Instant::now());
        for _ in 0..ticks {
            tick(&mut model, &mut sampler);
        }
        per_pass(
            "agent tick, units at 65% of max (all procs)",
            cpu_time() - c0,
            w0.elapsed(),
            ticks,
        );
        if only == "tick" {
            return;
        }
    } else {
        ticks = passes();
    }
    // The devvm's MemoryMax=16G: the same units are quiet (2 % used).
    for u in &units {
        tree.set(&u.user, "memory.max", "17179869184\n");
    }
    let (c0, w0) = (cpu_time(), Instant::now());
    for _ in 0..ticks {
        tick(&mut model, &mut sampler);
    }
    per_pass(
        "agent tick, quiet units (16G max)",
        cpu_time() - c0,
        w0.elapsed(),
        ticks,
    );
    if only == "quiet" {
        return;
    }
    let (c0, w0) = (cpu_time(), Instant::now());
    for _ in 0..ticks {
        std::hint::black_box(metrics.render());
    }
    per_pass(
        "  per scrape: render /metrics text",
        cpu_time() - c0,
        w0.elapsed(),
        ticks,
    );
    let (c0, w0) = (cpu_time(), Instant::now());
    for _ in 0..ticks {
        std::hint::black_box(build::snapshot(&model, agent.clone()));
    }
    per_pass(
        "  per snapshot request: build it",
        cpu_time() - c0,
        w0.elapsed(),
        ticks,
    );
    let (c0, w0) = (cpu_time(), Instant::now());
    for _ in 0..ticks {
        for st in model.units.values() {
            metrics.update_unit(st);
        }
    }
    per_pass(
        "  of a tick: update the unit metrics",
        cpu_time() - c0,
        w0.elapsed(),
        ticks,
    );
    let text = metrics.render();
    let (c0, w0) = (cpu_time(), Instant::now());
    for _ in 0..ticks {
        std::hint::black_box(compress(&text));
    }
    per_pass(
        "  per gzip scrape: gzip /metrics text",
        cpu_time() - c0,
        w0.elapsed(),
        ticks,
    );
    println!(
        "  /metrics size: {} bytes, {} gzipped",
        text.len(),
        compress(&text).map_or(0, |g| g.len())
    );

    // 2b. Real procfs, which the tmpfs tree cannot show: the kernel
    // formats `status` (~55 lines) on every read, `statm` (7 numbers) is
    // cheap. This machine's own processes, side by side in one run.
    real_procfs();

    running_agent(&tree);
}

/// The real agent on the tree: RSS and CPU at the default 1 Hz
/// (its pid printed, for `perf record -p`).
fn running_agent(tree: &FakeCgroupTree) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let state = tree.root().join("../state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_t3pressure"))
        .args(["run", "--no-bpf", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--cgroup-root")
        .arg(tree.root())
        .arg("--proc-root")
        .arg(tree.proc_root())
        .arg("--state-dir")
        .arg(&state)
        .env("T3PRESSURE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start agent");
    let pid = child.id();
    println!("agent running: pid {pid}");
    std::thread::sleep(Duration::from_secs(3));
    let ticks0 = cpu_ticks(pid).expect("agent stat");
    let (ns0, threads0) = cpu_ns(pid);
    // Long enough for the 10 ms resolution of utime/stime to matter little.
    let span = Duration::from_secs(30);
    std::thread::sleep(span);
    let ticks1 = cpu_ticks(pid).expect("agent stat");
    let (ns1, threads1) = cpu_ns(pid);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "agent ({UNITS} units, 1 Hz): RSS {} KiB, peak RSS {} KiB, CPU {:.2} % of a core over {} s",
        status_kb(pid, "VmRSS:").unwrap_or(0),
        status_kb(pid, "VmHWM:").unwrap_or(0),
        (ticks1 - ticks0) as f64 / hz / span.as_secs_f64() * 100.0,
        span.as_secs()
    );
    // A thread that exits in between takes its time along: then the exact
    // figure is a lower bound, and says so.
    println!(
        "agent CPU, exact (schedstat of its {threads1} live threads): {:.3} % of a core{}",
        ns1.saturating_sub(ns0) as f64 / span.as_nanos() as f64 * 100.0,
        if threads1 == threads0 {
            ""
        } else {
            " (threads came or went: a lower bound)"
        }
    );
    if let Some(hold) = std::env::var("BENCH_HOLD")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        println!("agent left running for {hold} s at http://127.0.0.1:{port}/metrics");
        std::thread::sleep(Duration::from_secs(hold));
        println!(
            "agent after hold: RSS {} KiB, peak RSS {} KiB",
            status_kb(pid, "VmRSS:").unwrap_or(0),
            status_kb(pid, "VmHWM:").unwrap_or(0)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Per-process cost on this machine's real /proc: a `pread` of `status`
/// and of `statm` on kept descriptors, and `ProcReader` (statm each read,
/// status every few) in its steady state.
fn real_procfs() {
    use std::os::fd::AsRawFd;
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let open = |name: &str| -> Vec<std::fs::File> {
        pids.iter()
            .filter_map(|p| std::fs::File::open(format!("/proc/{p}/{name}")).ok())
            .collect()
    };
    let mut buf = vec![0u8; 4096];
    let rounds = 50;
    let mut cost = |files: &[std::fs::File]| {
        let c0 = cpu_time();
        for _ in 0..rounds {
            for f in files {
                // SAFETY: pread into a buffer we own, at most its length.
                let n =
                    unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                std::hint::black_box(n);
            }
        }
        (cpu_time() - c0).as_secs_f64() * 1e6 / (rounds * files.len().max(1)) as f64
    };
    let status = open("status");
    let statm = open("statm");
    let (a, b) = (cost(&status), cost(&statm));
    println!(
        "real /proc ({} processes): pread status {a:.2} us, statm {b:.2} us per process ({:.1}x)",
        status.len(),
        a / b
    );
    let mut reader = ProcReader::new(Path::new("/proc"));
    let mut budget = FdBudget::new(4 * pids.len() + 16);
    let mut slots: Vec<ProcSlot> = pids.iter().map(|_| ProcSlot::default()).collect();
    let cgroup: std::sync::Arc<str> = "/".into();
    let mut pass = |reader: &mut ProcReader, slots: &mut [ProcSlot]| {
        let mut n = 0;
        for (pid, slot) in pids.iter().zip(slots.iter_mut()) {
            if let Ok(Some(p)) = reader.read(*pid, &cgroup, slot, &mut budget, &mut |_| {}) {
                n += 1;
                std::hint::black_box(p);
            }
        }
        n
    };
    pass(&mut reader, &mut slots);
    let c0 = cpu_time();
    let mut read = 0;
    for _ in 0..rounds {
        read += pass(&mut reader, &mut slots);
    }
    println!(
        "  ProcReader steady state (statm each read, status every 5th): {:.2} us per process",
        (cpu_time() - c0).as_secs_f64() * 1e6 / read.max(1) as f64
    );
}
