//! Benchmark of the runaway catcher: how far a runaway gets before it is
//! killed, at 100 MB/s, 500 MB/s and 2 GB/s against a 16 GiB MemoryMax.
//!
//! Two parts. First the real `PidfdKiller` is timed on real processes (this
//! binary re-executed as a 256 MiB hog): the latency of `kill()` and until
//! the process is reaped (its memory freed). Then the default policy runs
//! on a simulated unit (no real memory is allocated: the limit is the real
//! 16 GiB, simulated) with the adaptive sampling interval it asks for, a
//! Theil-Sen growth estimate over the last 10 samples, a sampling pass of
//! 2 ms, and the measured kill latency; 50 sampling phases per rate, the
//! worst one reported; also with 100 ms more latency (the agent itself
//! slowed by reclaim) and with the projection off (kill threshold only).
//!
//! Run: `cargo bench -p t3pressure --bench runaway` (as root for part one).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use t3pressure::actions::killer::{parse_stat, KillTarget, Killer, PidfdKiller};
use t3pressure::config::Config;
use t3pressure::detectors::runaway::{ProcInput, RunawayPolicy, UnitInput};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MAX: f64 = 16.0 * GIB;
const SAMPLE_PASS_S: f64 = 0.002;
const PHASES: u32 = 50;
/// Pessimistic extra latency: the agent itself slowed by reclaim between
/// its read and the kill.
const STALLED_AGENT_S: f64 = 0.100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--hog") {
        hog(args.get(i + 1).and_then(|m| m.parse().ok()).unwrap_or(256));
    }
    let kill_latency = measure_kill();
    println!();
    println!(
        "policy simulation: MemoryMax 16 GiB (simulated), defaults (kill 90 %, watch 75 %, \
         horizon 5 s, fast 100 ms / normal 1 s), sampling pass {:.0} ms, kill latency {:.1} ms, \
         worst of {PHASES} sampling phases",
        SAMPLE_PASS_S * 1e3,
        kill_latency * 1e3
    );
    println!(
        "{:>10}  {:>16}  {:>14}  {:>12}  {:>22}  {:>20}",
        "rate", "policy", "usage@decide", "peak/max", "kill - 90% crossing", "kill - 75% crossing"
    );
    for rate in [100e6, 500e6, 2e9] {
        for (name, horizon, latency) in [
            ("default", 5.0, kill_latency),
            ("default, +100 ms", 5.0, kill_latency + STALLED_AGENT_S),
            ("threshold only", 0.0, kill_latency),
        ] {
            let mut worst = Outcome::default();
            for phase in 0..PHASES {
                let o = simulate(rate, horizon, latency, f64::from(phase) / f64::from(PHASES));
                if o.peak >= worst.peak {
                    worst = o;
                }
            }
            let rel = |t: Option<f64>| match t {
                Some(t) => format!("{:+.3} s", worst.kill_at - t),
                None => "not crossed".to_string(),
            };
            println!(
                "{:>7.0} MB/s  {:>16}  {:>13.1}%  {:>11.1}%  {:>22}  {:>20}",
                rate / 1e6,
                name,
                100.0 * worst.usage_at_decision,
                100.0 * worst.peak / MAX,
                rel(worst.crossed_kill),
                rel(worst.crossed_watch),
            );
        }
    }
    println!();
    println!(
        "(\"not crossed\": killed before usage reached that threshold, by the projection \
         rule; \"+100 ms\": the agent itself slowed by reclaim; \"threshold only\": \
         horizon 0, the kill threshold alone)"
    );
}

/// Re-executed child: holds `mib` MiB of touched anon memory until killed.
fn hog(mib: usize) -> ! {
    let v = vec![0x5au8; mib * 1024 * 1024];
    println!("ready");
    loop {
        std::hint::black_box(&v);
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Times the real killer on 10 hogs of 256 MiB; returns the worst `kill()`
/// latency in seconds (SIGKILL queued: the process cannot grow after that;
/// 20 ms when not measurable).
fn measure_kill() -> f64 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            println!("cannot find this binary ({e}); assuming 20 ms kill latency");
            return 0.020;
        }
    };
    let killer = PidfdKiller::new(Path::new("/proc"));
    let mut kills = Vec::new();
    let mut reaps = Vec::new();
    for _ in 0..10 {
        let mut child = match Command::new(&exe)
            .args(["--hog", "256"])
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                println!("cannot spawn a hog ({e}); assuming 20 ms kill latency");
                return 0.020;
            }
        };
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        }
        let pid = child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some((_, start_time)) = parse_stat(&stat) else {
            let _ = child.kill();
            let _ = child.wait();
            continue;
        };
        let target = KillTarget {
            pid: pid as i32,
            start_time,
            cgroup: None,
            comm: "hog".into(),
        };
        let t0 = Instant::now();
        let r = killer.kill(&target);
        let t1 = Instant::now();
        let _ = child.wait();
        let t2 = Instant::now();
        match r {
            Ok(()) => {
                kills.push((t1 - t0).as_secs_f64());
                reaps.push((t2 - t0).as_secs_f64());
            }
            Err(e) => println!("kill failed: {e}"),
        }
    }
    if kills.is_empty() {
        println!("no kill measured; assuming 20 ms kill latency");
        return 0.020;
    }
    kills.sort_by(f64::total_cmp);
    reaps.sort_by(f64::total_cmp);
    let ms = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q) as usize] * 1e3;
    println!(
        "real PidfdKiller on {} processes of 256 MiB: kill() (checks + SIGKILL queued) p50 {:.3} ms max {:.3} ms; \
         kill() to reaped (memory freed) p50 {:.3} ms max {:.3} ms",
        kills.len(),
        ms(&kills, 0.5),
        ms(&kills, 1.0),
        ms(&reaps, 0.5),
        ms(&reaps, 1.0)
    );
    kills.last().copied().unwrap_or(0.020)
}

#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    usage_at_decision: f64,
    peak: f64,
    kill_at: f64,
    crossed_kill: Option<f64>,
    crossed_watch: Option<f64>,
}

/// Theil-Sen: the median of pairwise slopes, robust to a jumpy sample.
fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dt = b.0 - a.0;
            if dt > 0.0 {
                slopes.push((b.1 - a.1) / dt);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    Some(slopes[slopes.len() / 2])
}

/// A unit with a 1 GiB serve, a 0.5 GiB sibling, and a runaway starting at
/// 0.5 GiB and growing at `rate` bytes/s from t = 0; the first sample is at
/// `phase` seconds.
fn simulate(rate: f64, horizon: f64, kill_latency: f64, phase: f64) -> Outcome {
    let mut config = Config::default();
    config.runaway.horizon_seconds = horizon;
    let mut policy = RunawayPolicy::new(&config);
    let fixed = 1.5 * GIB;
    let anon = |t: f64| 0.5 * GIB + rate * t.max(0.0);
    let current = |t: f64| fixed + anon(t);
    let crossing = |frac: f64| (frac * MAX - fixed - 0.5 * GIB) / rate;
    let mut history: Vec<(f64, f64)> = Vec::new();
    let mut proc_history: Vec<(f64, f64)> = Vec::new();
    let mut t = phase;
    while t < 3600.0 {
        let read_at = t + SAMPLE_PASS_S;
        let cur = current(read_at).min(MAX);
        history.push((read_at, cur));
        proc_history.push((read_at, anon(read_at)));
        let keep = history.len().saturating_sub(10);
        history.drain(..keep);
        proc_history.drain(..keep);
        let procs = vec![
            proc(100, "node", GIB, Some(0.0)),
            proc(200, "claude", anon(read_at), theil_sen(&proc_history)),
            proc(300, "bash", 0.5 * GIB, Some(0.0)),
        ];
        let input = UnitInput {
            user: "alice".into(),
            now: read_at,
            memory_current: cur as u64,
            memory_max: Some(MAX as u64),
            memory_high: None,
            memory_full_share: Some(0.0),
            growth_bytes_per_second: theil_sen(&history),
            serve_pid: Some(100),
            procs,
        };
        if policy.decide(&input).is_some() {
            let kill_at = read_at + kill_latency;
            let peak = current(kill_at);
            let crossed = |frac: f64| {
                let c = crossing(frac);
                (c <= kill_at).then_some(c)
            };
            return Outcome {
                usage_at_decision: cur / MAX,
                peak,
                kill_at,
                crossed_kill: crossed(0.90),
                crossed_watch: crossed(0.75),
            };
        }
        t += policy.sample_interval_for(&input).as_secs_f64();
    }
    Outcome {
        peak: MAX,
        ..Outcome::default()
    }
}

fn proc(pid: i32, comm: &str, anon: f64, growth: Option<f64>) -> ProcInput {
    ProcInput {
        pid,
        start_time: 1,
        comm: comm.into(),
        argv0: comm.into(),
        rss_anon: anon as u64,
        anon_growth: growth,
        cgroup: "".into(),
    }
}
