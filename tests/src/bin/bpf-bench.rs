//! Benchmark: mean cost per event of each t3pressure BPF program under a
//! context-switch-heavy load (a pipe ping-pong pinned to one CPU), with no
//! watched task involved and with both tasks watched, next to bpftrace's
//! run-queue latency one-liner on the same load in the same run.
//!
//! Run as root: `cargo run -p t3pressure-tests --bin bpf-bench [secs]`.
//! Turns `kernel.bpf_stats_enabled` on and restores it afterwards. Prints
//! figures; asserts nothing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use t3pressure::sources::bpf::{Bpf, BpfConfig};
use t3pressure_tests::cgroup::{cgroup2_root, unit_at, TestCgroups};

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The run-queue latency one-liner (bpftrace's runqlat.bt, tracepoint form).
const RUNQLAT: &str = "tracepoint:sched:sched_wakeup,tracepoint:sched:sched_wakeup_new \
{ @qtime[args->pid] = nsecs; } \
tracepoint:sched:sched_switch { if (args->prev_state == 0) { @qtime[args->prev_pid] = nsecs; } \
$ns = @qtime[args->next_pid]; if ($ns) { @usecs = hist((nsecs - $ns) / 1000); } \
delete(@qtime[args->next_pid]); }";

/// The floor: a program that only counts, on the same tracepoint.
const COUNT_ONLY: &str = "tracepoint:sched:sched_switch { @c = count(); }";

/// Loads and attaches the programs with `config`, watching `unit`; their
/// program ids by name, to find them in `bpf_stats`. Dropping the `Bpf`
/// detaches them.
fn load_watching(
    config: &BpfConfig,
    unit: &t3pressure::model::sample::Unit,
) -> (Bpf, HashMap<u32, String>) {
    let mut bpf = Bpf::load(config).expect("load BPF");
    bpf.watch_unit(unit).expect("watch unit");
    let ids = bpf
        .program_stats()
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    (bpf, ids)
}

/// Starts bpftrace and waits until its probes are attached.
fn bpftrace(script: &str) -> std::process::Child {
    let mut bt = Command::new("bpftrace")
        .args(["-e", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bpftrace (apt-get install bpftrace)");
    let stdout = bt.stdout.take().expect("bpftrace stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("Attaching") => break,
            Some(Ok(_)) => {}
            _ => panic!("bpftrace did not start"),
        }
    }
    // Keep draining its stdout so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    std::thread::sleep(Duration::from_millis(500));
    bt
}

/// Loads the object a second time and attaches only one of its reference
/// programs (the agent never attaches them): `sched_switch_noop`, what a
/// `tp_btf` program that does nothing costs here, or `switch_clock`, one
/// that reads the clock once. Detached on drop.
fn reference_program(name: &str) -> aya::Ebpf {
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf = aya::EbpfLoader::new()
        .btf(Some(&btf))
        .load(t3pressure::sources::bpf::OBJECT)
        .expect("load the object again");
    let prog: &mut aya::programs::BtfTracePoint = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("{name} in the object"))
        .try_into()
        .expect("a BTF tracepoint");
    prog.load("sched_switch", &btf)
        .unwrap_or_else(|e| panic!("load {name}: {e}"));
    prog.attach()
        .unwrap_or_else(|e| panic!("attach {name}: {e}"));
    std::thread::sleep(Duration::from_millis(200));
    ebpf
}

/// Stops bpftrace with SIGINT, as a user would. bpftrace 0.17 sometimes
/// misses one (seen once here: it stayed in `epoll_wait` until a second
/// SIGINT), so SIGINT is repeated every 2 s, then SIGKILL after 10 s.
fn stop(mut bt: std::process::Child) {
    for attempt in 0..50 {
        if matches!(bt.try_wait(), Ok(Some(_))) {
            return;
        }
        if attempt % 10 == 0 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(bt.id() as i32, libc::SIGINT) };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("bpftrace ignored SIGINT for 10 s: killed");
    let _ = bt.kill();
    let _ = bt.wait();
}

/// Restores `kernel.bpf_stats_enabled` on drop.
struct StatsGuard(String);

impl StatsGuard {
    fn enable() -> StatsGuard {
        let old = std::fs::read_to_string(STATS).expect("read bpf_stats_enabled");
        std::fs::write(STATS, "1").expect("enable bpf stats");
        StatsGuard(old.trim().to_string())
    }
}

impl Drop for StatsGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(STATS, &self.0) {
            eprintln!("could not restore {STATS} to {}: {e}", self.0);
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Run {
    ns: u64,
    cnt: u64,
}

/// Run time and count of every loaded program, by id, with its name.
fn snapshot() -> HashMap<u32, (String, Run)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| {
            let name = p.name_as_str().unwrap_or("?").to_string();
            let run = Run {
                ns: p.run_time().as_nanos() as u64,
                cnt: p.run_count(),
            };
            (p.id(), (name, run))
        })
        .collect()
}

fn delta(
    a: &HashMap<u32, (String, Run)>,
    b: &HashMap<u32, (String, Run)>,
) -> Vec<(u32, String, Run)> {
    let mut out: Vec<_> = b
        .iter()
        .filter_map(|(id, (name, rb))| {
            let ra = a.get(id).map(|x| x.1).unwrap_or_default();
            let d = Run {
                ns: rb.ns.saturating_sub(ra.ns),
                cnt: rb.cnt.saturating_sub(ra.cnt),
            };
            (d.cnt > 0).then(|| (*id, name.clone(), d))
        })
        .collect();
    out.sort_by_key(|x| x.0);
    out
}

/// The ping-pong in `cgroup`, its second process in `other` if given.
fn pingpong(helper: &Path, cgroup: &Path, other: Option<&Path>, secs: u64) -> u64 {
    let mut cmd = Command::new(helper);
    cmd.arg("--join")
        .arg(cgroup.join("cgroup.procs"))
        .args(["pingpong", &secs.to_string(), "0"]);
    if let Some(o) = other {
        cmd.arg(o.join("cgroup.procs"));
    }
    let out = cmd.output().expect("run ping-pong");
    assert!(out.status.success(), "ping-pong failed");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("round trips ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn mean(r: Run) -> f64 {
    r.ns as f64 / r.cnt.max(1) as f64
}

/// One phase: the load, then each program's mean ns per event.
fn phase(
    label: &str,
    helper: &Path,
    cgroup: &Path,
    secs: u64,
    ours: &HashMap<u32, String>,
) -> HashMap<String, f64> {
    phase_split(label, helper, (cgroup, None), secs, ours)
}

/// [`phase`] with the ping-pong's second process in `cgroups.1` if given.
fn phase_split(
    label: &str,
    helper: &Path,
    cgroups: (&Path, Option<&Path>),
    secs: u64,
    ours: &HashMap<u32, String>,
) -> HashMap<String, f64> {
    let a = snapshot();
    let trips = pingpong(helper, cgroups.0, cgroups.1, secs);
    let b = snapshot();
    println!(
        "\n== {label}: {trips} round trips in {secs} s ({:.0}/s)",
        trips as f64 / secs as f64
    );
    let mut means = HashMap::new();
    for (id, name, run) in delta(&a, &b) {
        let who = if let Some(n) = ours.get(&id) {
            format!("t3pressure {n}")
        } else {
            format!("other      {name}")
        };
        println!(
            "  {who:<34} id {id:>5}  {:>9} events  {:>7.1} ns/event",
            run.cnt,
            mean(run)
        );
        let key = ours
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("other:{name}"));
        means.insert(key, mean(run));
    }
    means
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bpf-bench needs root");
        std::process::exit(1);
    }
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let helper: PathBuf = std::env::current_exe()
        .expect("current exe")
        .with_file_name("t3ptest-helper");
    assert!(
        helper.exists(),
        "build the helper: cargo build -p t3pressure-tests --bins"
    );

    let mut cgs = TestCgroups::new(&cgroup2_root(), &format!("t3pbench-{}", std::process::id()));
    let unit_dir = cgs.child("t3-serve@bench.service");
    let other_dir = cgs.child("other.service");
    let unit = unit_at(&unit_dir);

    let _stats = StatsGuard::enable();
    let (bpf, ours) = load_watching(&BpfConfig::default(), &unit);

    let base = phase(
        "unwatched: ping-pong outside the watched unit",
        &helper,
        &other_dir,
        secs,
        &ours,
    );
    let watched = phase(
        "watched: ping-pong inside the watched unit",
        &helper,
        &unit_dir,
        secs,
        &ours,
    );
    let one_watched = phase_split(
        "one watched: ping-pong between the watched unit and outside",
        &helper,
        (&unit_dir, Some(&other_dir)),
        secs,
        &ours,
    );

    // The same watched load without the idle marks (the poll-syscall check
    // at a watched main thread's voluntary sleep), loaded anew.
    drop(bpf);
    let no_idle = BpfConfig {
        idle_marks: false,
        ..BpfConfig::default()
    };
    let (bpf_plain, ours_plain) = load_watching(&no_idle, &unit);
    let watched_plain = phase(
        "watched, idle marks off: ping-pong inside the watched unit",
        &helper,
        &unit_dir,
        secs,
        &ours_plain,
    );
    drop(bpf_plain);

    // The unwatched load with the unit check's helper call instead of the
    // direct cgroup loads (`BpfConfig::cgroup_walk`), loaded anew.
    let helper_check = BpfConfig {
        cgroup_walk: false,
        ..BpfConfig::default()
    };
    let (bpf_helper, ours_helper) = load_watching(&helper_check, &unit);
    let base_helper = phase(
        "unwatched, unit check by helper call: ping-pong outside the watched unit",
        &helper,
        &other_dir,
        secs,
        &ours_helper,
    );
    drop(bpf_helper);
    let (mut bpf, ours) = load_watching(&BpfConfig::default(), &unit);
    match bpf.cgroup_walk() {
        Ok(w) => println!("unit check: direct loads {w:?}"),
        Err(e) => println!("unit check: helper call ({e})"),
    }

    let bt = bpftrace(RUNQLAT);
    let side = phase(
        "same run, bpftrace runqlat attached too (ping-pong outside the unit)",
        &helper,
        &other_dir,
        secs,
        &ours,
    );
    stop(bt);
    let bt = bpftrace(COUNT_ONLY);
    let floor = phase(
        "floor: bpftrace count-only sched_switch program attached too",
        &helper,
        &other_dir,
        secs,
        &ours,
    );
    stop(bt);
    let noop = reference_program("sched_switch_noop");
    let empty = phase(
        "reference: an empty tp_btf sched_switch program attached too",
        &helper,
        &other_dir,
        secs,
        &ours,
    );
    drop(noop);
    let clock_prog = reference_program("switch_clock");
    let clock = phase(
        "reference: a tp_btf sched_switch program that reads the clock once",
        &helper,
        &other_dir,
        secs,
        &ours,
    );
    drop(clock_prog);

    let bt_switch = side
        .iter()
        .filter(|(k, _)| k.starts_with("other:") && k.contains("sched_switch"))
        .map(|(_, v)| *v)
        .next();
    println!("\n== summary (mean ns per event)");
    for prog in [
        "sched_switch",
        "sched_wakeup",
        "sched_wakeup_new",
        "mark_victim",
    ] {
        println!(
            "  {prog:<17} unwatched {:>7}  watched {:>7}  (bpftrace side-by-side run: {:>7})",
            base.get(prog)
                .map_or("-".to_string(), |v| format!("{v:.1}")),
            watched
                .get(prog)
                .map_or("-".to_string(), |v| format!("{v:.1}")),
            side.get(prog)
                .map_or("-".to_string(), |v| format!("{v:.1}")),
        );
    }
    if let Some(one) = one_watched.get("sched_switch") {
        println!(
            "  sched_switch with one watched task (the other end outside the unit): {one:.1} ns; both watched: {:.1} ns",
            watched.get("sched_switch").copied().unwrap_or(f64::NAN)
        );
    }
    if let (Some(on), Some(off)) = (
        watched.get("sched_switch"),
        watched_plain.get("sched_switch"),
    ) {
        println!(
            "  sched_switch watched: {on:.1} ns with idle marks, {off:.1} ns without (x{:.2})",
            on / off
        );
    }
    if let (Some(walk), Some(call)) = (base.get("sched_switch"), base_helper.get("sched_switch")) {
        println!(
            "  sched_switch unwatched: {walk:.1} ns with the direct cgroup loads, {call:.1} ns with the helper call (x{:.2})",
            walk / call
        );
    }
    match bt_switch {
        Some(b) => {
            let ours_side = side.get("sched_switch").copied().unwrap_or(f64::NAN);
            let w = watched.get("sched_switch").copied().unwrap_or(f64::NAN);
            println!("  bpftrace runqlat sched_switch: {b:.1} ns/event");
            println!(
                "  ratio t3pressure/bpftrace sched_switch: unwatched {:.2} (same run), watched {:.2}",
                ours_side / b,
                w / b
            );
        }
        None => println!("  bpftrace's sched_switch program not found among loaded programs"),
    }
    if let Some(f) = floor
        .iter()
        .filter(|(k, _)| k.starts_with("other:") && k.contains("sched_switch"))
        .map(|(_, v)| *v)
        .next()
    {
        println!("  floor on this host (a sched_switch program that only counts): {f:.1} ns/event");
    }
    if let Some(e) = empty.get("other:sched_switch_no") {
        println!("  reference: an empty tp_btf sched_switch program: {e:.1} ns/event");
        if let Some(c) = clock.get("other:switch_clock") {
            println!(
                "  reference: one that reads the clock once: {c:.1} ns/event, so one bpf_ktime_get_ns costs {:.1} ns here",
                c - e
            );
        }
    }
    bpf.unwatch_unit(&unit).expect("unwatch");
    drop(bpf);
    drop(cgs);
}
