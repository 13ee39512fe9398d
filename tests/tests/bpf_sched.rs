//! Root + BPF on this host: run-queue wait and D-state episodes of tasks in
//! a unit-shaped cgroup2 directory, and nothing for the same load outside.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use t3pressure::sources::bpf::btf::CgroupWalk;
use t3pressure::sources::bpf::{monotonic_ns, Bpf, BpfConfig, BpfEvent, Episode, EpisodeKind};
use t3pressure_tests::cgroup::{cgroup2_root, unit_at, TestCgroups};
use t3pressure_tests::env::{collect_events, require_root_bpf, runtime, serial};

const HELPER: &str = env!("CARGO_BIN_EXE_t3ptest-helper");

fn helper(cgroup: &Path, args: &[&str]) -> Child {
    let procs = cgroup.join("cgroup.procs");
    Command::new(HELPER)
        .arg("--join")
        .arg(&procs)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn test helper")
}

fn wait_ok(mut child: Child) {
    let status = child.wait().expect("wait for helper");
    assert!(status.success(), "helper failed: {status}");
}

fn episodes_of(events: &[BpfEvent], tgid: u32) -> Vec<&Episode> {
    events
        .iter()
        .filter_map(|e| match e {
            BpfEvent::Episode(ep) if ep.tgid == tgid => Some(ep),
            _ => None,
        })
        .collect()
}

fn setup() -> (TestCgroups, std::path::PathBuf, std::path::PathBuf) {
    let mut cgs = TestCgroups::new(
        &cgroup2_root(),
        &format!(
            "t3ptest-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    let unit = cgs.child("t3-serve@x.service");
    let other = cgs.child("other.service");
    (cgs, unit, other)
}

#[test]
fn runqueue_wait_inside_the_unit_only() {
    require_root_bpf();
    let _serial = serial();
    let (_cgs, unit_dir, other_dir) = setup();
    let unit = unit_at(&unit_dir);
    let mut bpf = Bpf::load(&BpfConfig {
        episode_threshold: Duration::from_millis(2),
        ..BpfConfig::default()
    })
    .expect("load BPF");
    bpf.watch_unit(&unit).expect("watch unit");
    let rt = runtime();
    let mut rx = {
        let _g = rt.enter();
        bpf.events().expect("events")
    };

    // Same load outside the unit: 3 spinning threads on CPU 0.
    let outside = helper(&other_dir, &["busy", "3", "0", "1000"]);
    let out_pid = outside.id();
    wait_ok(outside);
    let events = collect_events(&rt, &mut rx, Duration::from_millis(300));
    let h = bpf
        .histograms(unit.cgroup_id)
        .expect("histograms of a watched unit");
    let outside_count: u64 = h.runqueue.iter().sum();
    assert_eq!(
        outside_count, 0,
        "run-queue wait counted for a load outside the unit"
    );
    assert!(
        episodes_of(&events, out_pid).is_empty(),
        "episodes from outside the unit"
    );

    // Inside.
    let inside = helper(&unit_dir, &["busy", "3", "0", "1000"]);
    let in_pid = inside.id();
    wait_ok(inside);
    let events = collect_events(&rt, &mut rx, Duration::from_millis(300));
    let h = bpf.histograms(unit.cgroup_id).expect("histograms");
    let total: u64 = h.runqueue.iter().sum();
    // Waits of at least 1 ms (2^20 ns): time slices of the two others.
    let long: u64 = h.runqueue[20..].iter().sum();
    let eps = episodes_of(&events, in_pid);
    eprintln!(
        "inside: {total} run-queue waits, {long} >= 1 ms, {} episodes >= 2 ms",
        eps.len()
    );
    assert!(long >= 20, "too few run-queue waits >= 1 ms: {h:?}");
    assert!(
        !eps.is_empty(),
        "no run-queue episode >= 2 ms from the unit"
    );
    assert!(
        eps.iter().all(|e| e.unit_cgroup_id == unit.cgroup_id),
        "an episode of another unit: {eps:?}"
    );
    // A D-state wait of 2 ms can happen to any process (a page read in
    // from disk while the host is busy: seen once in a full suite run with
    // a benchmark beside it); the spinning threads' waits are run-queue ones.
    let runqueue = eps
        .iter()
        .filter(|e| e.kind == EpisodeKind::Runqueue)
        .count();
    assert!(
        runqueue * 2 > eps.len(),
        "mostly not run-queue waits: {eps:?}"
    );
    assert_eq!(bpf.stats().tasks_full, 0);
    assert_eq!(
        bpf.tracked_tasks(unit.cgroup_id),
        0,
        "states of exited tasks left"
    );
}

/// Run-queue waits (>= 1 ms) counted in the unit's histogram while
/// `threads` spinning threads share CPU 0 inside `dir` for `ms`.
fn long_waits_counted(bpf: &Bpf, unit_id: u64, dir: &Path, ms: u64) -> u64 {
    let before: u64 = bpf.histograms(unit_id).expect("histograms").runqueue[20..]
        .iter()
        .sum();
    wait_ok(helper(dir, &["busy", "3", "0", &ms.to_string()]));
    let after: u64 = bpf.histograms(unit_id).expect("histograms").runqueue[20..]
        .iter()
        .sum();
    after - before
}

/// Tasks in a child cgroup of the unit count for the unit, tasks in a
/// cgroup as deep below another service do not, with both ways of finding
/// a task's unit: the direct cgroup loads (a task at the unit's own level
/// is its own ancestor there; deeper ones take the helper call) and the
/// helper call alone (`cgroup_walk: false`).
#[test]
fn child_cgroups_of_the_unit_count_with_either_unit_check() {
    require_root_bpf();
    let _serial = serial();
    let (mut cgs, unit_dir, other_dir) = setup();
    let child = cgs.child("t3-serve@x.service/agents.scope");
    let deep_other = cgs.child("other.service/deep.scope");
    let unit = unit_at(&unit_dir);
    for walk in [true, false] {
        let mut bpf = Bpf::load(&BpfConfig {
            cgroup_walk: walk,
            ..BpfConfig::default()
        })
        .expect("load BPF");
        assert_eq!(
            bpf.cgroup_walk().is_ok(),
            walk,
            "walk asked: {walk}, in use: {:?}",
            bpf.cgroup_walk()
        );
        bpf.watch_unit(&unit).expect("watch unit");
        let outside = long_waits_counted(&bpf, unit.cgroup_id, &other_dir, 300)
            + long_waits_counted(&bpf, unit.cgroup_id, &deep_other, 300);
        let in_unit = long_waits_counted(&bpf, unit.cgroup_id, &unit_dir, 300);
        let in_child = long_waits_counted(&bpf, unit.cgroup_id, &child, 300);
        eprintln!(
            "walk {walk}: >= 1 ms run-queue waits: outside {outside}, unit {in_unit}, child cgroup {in_child}"
        );
        assert_eq!(outside, 0, "walk {walk}: waits outside the unit counted");
        assert!(
            in_unit >= 10,
            "walk {walk}: too few waits in the unit: {in_unit}"
        );
        assert!(
            in_child >= 10,
            "walk {walk}: too few waits in the unit's child cgroup: {in_child}"
        );
        bpf.unwatch_unit(&unit).expect("unwatch");
    }
}

/// Offsets the verifier refuses (the first load lands in `thread_info`'s
/// flags, a number, which the next load would dereference): the agent
/// loads again with the helper call, says why, and still counts the unit.
#[test]
fn a_refused_cgroup_walk_falls_back_to_the_helper_call() {
    require_root_bpf();
    let _serial = serial();
    let (_cgs, unit_dir, other_dir) = setup();
    let unit = unit_at(&unit_dir);
    let mut bpf = Bpf::load(&BpfConfig {
        cgroup_walk_offsets: Some(CgroupWalk {
            task_cgroups: 0,
            css_set_dfl_cgrp: 0,
            cgroup_level: 0,
            cgroup_kn: 0,
            kernfs_node_id: 0,
        }),
        ..BpfConfig::default()
    })
    .expect("load BPF despite a refused walk");
    let why = bpf
        .cgroup_walk()
        .expect_err("the walk is refused")
        .to_string();
    assert!(why.contains("verifier refused"), "{why}");
    bpf.watch_unit(&unit).expect("watch unit");
    let outside = long_waits_counted(&bpf, unit.cgroup_id, &other_dir, 300);
    let inside = long_waits_counted(&bpf, unit.cgroup_id, &unit_dir, 300);
    eprintln!("refused walk ({why}): >= 1 ms waits outside {outside}, in the unit {inside}");
    assert_eq!(outside, 0);
    assert!(inside >= 10, "too few waits in the unit: {inside}");
}

#[test]
fn blocked_episode_length_and_in_progress() {
    require_root_bpf();
    let _serial = serial();
    let (_cgs, unit_dir, other_dir) = setup();
    let unit = unit_at(&unit_dir);
    let mut bpf = Bpf::load(&BpfConfig::default()).expect("load BPF");
    bpf.watch_unit(&unit).expect("watch unit");
    let rt = runtime();
    let mut rx = {
        let _g = rt.enter();
        bpf.events().expect("events")
    };

    // Outside: no episode.
    let outside = helper(&other_dir, &["vfork", "400"]);
    let out_pid = outside.id();
    wait_ok(outside);

    // Inside, 400 ms in D.
    let inside = helper(&unit_dir, &["vfork", "400"]);
    let in_pid = inside.id();
    wait_ok(inside);
    let events = collect_events(&rt, &mut rx, Duration::from_millis(300));
    assert!(
        episodes_of(&events, out_pid).is_empty(),
        "episode from outside the unit"
    );
    let blocked: Vec<_> = episodes_of(&events, in_pid)
        .into_iter()
        .filter(|e| e.kind == EpisodeKind::Blocked)
        .collect();
    assert_eq!(blocked.len(), 1, "expected one blocked episode: {events:?}");
    let d = blocked[0].duration.as_secs_f64();
    eprintln!("blocked episode: {d:.4} s for 0.400 s in D");
    assert!(
        (d - 0.4).abs() <= 0.04,
        "blocked {d} s, expected 0.4 s +-10%"
    );
    assert_eq!(blocked[0].tid, in_pid);
    let h = bpf.histograms(unit.cgroup_id).expect("histograms");
    assert!(
        h.blocked[28..].iter().sum::<u64>() >= 1,
        "D state not in the histogram"
    );

    // In progress: 1.5 s in D, looked at after 0.6 s.
    let long = helper(&unit_dir, &["vfork", "1500"]);
    let long_pid = long.id();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(600));
    let ongoing = bpf.ongoing_episodes(monotonic_ns(), Duration::from_millis(100));
    let mine: Vec<_> = ongoing
        .iter()
        .filter(|e| e.tid == long_pid && e.kind == EpisodeKind::Blocked)
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "in-progress D episode not visible: {ongoing:?}"
    );
    let so_far = mine[0].duration.as_secs_f64();
    let elapsed = t0.elapsed().as_secs_f64();
    eprintln!("in progress: {so_far:.3} s so far after {elapsed:.3} s");
    assert!(
        so_far > 0.4 && so_far <= elapsed,
        "in-progress duration {so_far}"
    );
    assert!(mine[0].ongoing);
    assert_eq!(mine[0].tgid, long_pid);
    assert_eq!(mine[0].comm, "t3ptest-helper");
    wait_ok(long);
    let events = collect_events(&rt, &mut rx, Duration::from_millis(300));
    let done: Vec<_> = episodes_of(&events, long_pid)
        .into_iter()
        .filter(|e| e.kind == EpisodeKind::Blocked)
        .collect();
    assert_eq!(done.len(), 1, "{events:?}");
    let d = done[0].duration.as_secs_f64();
    assert!(
        (d - 1.5).abs() <= 0.15,
        "blocked {d} s, expected 1.5 s +-10%"
    );
    // Finished: no longer in progress.
    let ongoing = bpf.ongoing_episodes(monotonic_ns(), Duration::ZERO);
    assert!(ongoing.iter().all(|e| e.tid != long_pid));

    // Every test process has exited: no task state left behind.
    assert_eq!(
        bpf.tracked_tasks(unit.cgroup_id),
        0,
        "states of exited tasks left"
    );
    bpf.unwatch_unit(&unit).expect("unwatch");
    assert!(bpf.histograms(unit.cgroup_id).is_none());
}

#[test]
fn wait_and_sleep_totals_count_waits_below_the_episode_threshold() {
    require_root_bpf();
    let _serial = serial();
    let (_cgs, unit_dir, _other_dir) = setup();
    let unit = unit_at(&unit_dir);
    let mut bpf = Bpf::load(&BpfConfig::default()).expect("load BPF");
    bpf.watch_unit(&unit).expect("watch unit");
    let rt = runtime();
    let mut rx = {
        let _g = rt.enter();
        bpf.events().expect("events")
    };

    // 12 D-state waits of 50 ms (none an episode), then 1 s asleep.
    let t0 = Instant::now();
    let mut child = Command::new(HELPER)
        .args(["--join"])
        .arg(unit_dir.join("cgroup.procs"))
        .args(["vforks", "12", "50", "1000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn helper");
    let pid = child.id();
    // Its sleeps are timed as the unit's serve's (only those are).
    bpf.set_serve(unit.cgroup_id, Some(pid)).expect("set serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read helper");
    assert_eq!(line.trim(), "waited");
    let walk = bpf.walk_tasks(monotonic_ns(), Duration::from_millis(100));
    let elapsed = t0.elapsed().as_secs_f64();
    let w = walk
        .main_thread_waits
        .iter()
        .find(|w| w.tid == pid)
        .unwrap_or_else(|| panic!("no wait total for {pid}: {walk:?}"));
    let waited = w.waited_ns as f64 / 1e9;
    eprintln!(
        "waited {waited:.3} s, slept {:.3} s, of {elapsed:.3} s since spawn",
        w.slept_ns as f64 / 1e9
    );
    assert!(
        (0.57..=elapsed).contains(&waited),
        "12 x 50 ms in D: waited {waited} s"
    );
    assert_eq!(w.unit_cgroup_id, unit.cgroup_id);

    // The sleep: counted as sleep, not as waiting.
    std::thread::sleep(Duration::from_millis(400));
    let walk2 = bpf.walk_tasks(monotonic_ns(), Duration::from_millis(100));
    let w2 = walk2
        .main_thread_waits
        .iter()
        .find(|w| w.tid == pid)
        .expect("still there while asleep");
    let slept = (w2.slept_ns - w.slept_ns) as f64 / 1e9;
    let waited_more = (w2.waited_ns - w.waited_ns) as f64 / 1e9;
    eprintln!("over 0.4 s asleep: slept +{slept:.3} s, waited +{waited_more:.3} s");
    assert!((0.35..=0.5).contains(&slept), "slept +{slept} s");
    assert!(waited_more < 0.05, "waited +{waited_more} s while asleep");
    assert!(
        !walk2.ongoing.iter().any(|e| e.tid == pid),
        "a voluntary sleep is no episode"
    );
    wait_ok(child);
    let events = collect_events(&rt, &mut rx, Duration::from_millis(300));
    assert!(
        episodes_of(&events, pid).is_empty(),
        "waits under the threshold became episodes: {events:?}"
    );
    bpf.unwatch_unit(&unit).expect("unwatch");
}

#[test]
fn idle_mark_only_for_the_serve_main_thread_waiting_in_a_poll_syscall() {
    require_root_bpf();
    if !cfg!(target_arch = "x86_64") {
        panic!("idle marks are only known for x86_64; this test needs one");
    }
    let _serial = serial();
    let (_cgs, unit_dir, _other_dir) = setup();
    let unit = unit_at(&unit_dir);
    let mut bpf = Bpf::load(&BpfConfig::default()).expect("load BPF");
    bpf.watch_unit(&unit).expect("watch unit");

    // Two processes in the unit, each 600 ms in nanosleep, then 600 ms in
    // epoll_wait; the first is the unit's serve.
    let spawn = || {
        let mut child = Command::new(HELPER)
            .args(["--join"])
            .arg(unit_dir.join("cgroup.procs"))
            .args(["idle", "600", "600"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        (child, out)
    };
    let (serve, mut serve_out) = spawn();
    let (other, mut other_out) = spawn();
    let line = |out: &mut BufReader<std::process::ChildStdout>| {
        let mut l = String::new();
        out.read_line(&mut l).expect("read helper");
        l.trim().to_string()
    };
    assert_eq!(line(&mut serve_out), "sleeping");
    assert_eq!(line(&mut other_out), "sleeping");
    bpf.set_serve(unit.cgroup_id, Some(serve.id()))
        .expect("set serve");
    std::thread::sleep(Duration::from_millis(300));
    let wait_of = |bpf: &Bpf, pid: u32| {
        let walk = bpf.walk_tasks(monotonic_ns(), Duration::from_millis(100));
        *walk
            .main_thread_waits
            .iter()
            .find(|w| w.tid == pid)
            .unwrap_or_else(|| panic!("no entry for {pid}: {walk:?}"))
    };
    let idle_of = |bpf: &Bpf, pid: u32| wait_of(bpf, pid).idle_ns;
    // A nanosleep is a voluntary sleep, but no wait for work.
    assert_eq!(idle_of(&bpf, serve.id()), 0, "a nanosleep was marked idle");
    assert_eq!(line(&mut serve_out), "polling");
    let polling_from = monotonic_ns();
    assert_eq!(line(&mut other_out), "polling");
    std::thread::sleep(Duration::from_millis(300));
    let during = idle_of(&bpf, serve.id());
    let other_during = idle_of(&bpf, other.id());
    eprintln!(
        "idle mark in epoll_wait: serve {during}, other {other_during} (poll began ~{polling_from})"
    );
    assert!(
        during >= polling_from.saturating_sub(50_000_000) && during <= monotonic_ns(),
        "the serve's epoll_wait not marked idle: {during}, poll from {polling_from}"
    );
    assert_eq!(other_during, 0, "a process that is not the serve got marks");
    // Sleeps are timed for the serve's main thread only (the other's
    // would cost a clock read each and feed nothing).
    let (serve_slept, other_slept) = (
        wait_of(&bpf, serve.id()).slept_ns,
        wait_of(&bpf, other.id()).slept_ns,
    );
    eprintln!("slept so far: serve {serve_slept} ns, other {other_slept} ns");
    assert!(
        serve_slept >= 250_000_000,
        "the serve's sleep in epoll_wait not timed: {serve_slept} ns"
    );
    assert_eq!(
        other_slept, 0,
        "a sleep of a process that is not the serve was timed"
    );
    wait_ok(serve);
    wait_ok(other);
    bpf.unwatch_unit(&unit).expect("unwatch");
}
