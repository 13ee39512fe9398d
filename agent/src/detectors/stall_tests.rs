//! Tests of the stall window detector on synthetic streams with a fake clock.

use super::*;

fn bpf() -> StallDetector {
    StallDetector::new("alice", WindowSource::Bpf, 10.0, 20.0)
}

fn psi() -> StallDetector {
    StallDetector::new("alice", WindowSource::Psi, 10.0, 20.0)
}

fn ep(kind: EpisodeKind, start: f64, end: Option<f64>) -> Episode {
    Episode { kind, start, end }
}

fn tick(now: f64, episodes: &[Episode]) -> StallTick<'_> {
    StallTick {
        now,
        interval_s: 0.1,
        shares: None,
        episodes,
        culprit: None,
        serve_wait: None,
    }
}

fn shares(memory_full: f64, io_full: f64, cpu_some: f64) -> PsiShares {
    PsiShares {
        memory_some: memory_full,
        memory_full,
        io_some: io_full,
        io_full,
        cpu_some,
    }
}

/// One blocked episode of `len` seconds, then quiet: the closed window.
fn single_episode_window(len: f64) -> StallWindow {
    let mut d = bpf();
    let start = 1000.0;
    let e = [ep(EpisodeKind::Blocked, start, Some(start + len))];
    let out = d.on_tick(&tick(start + len + 0.01, &e));
    assert!(
        out.closed.is_empty(),
        "not closed before the merge gap passed"
    );
    let out = d.on_tick(&tick(start + len + 0.5, &[]));
    assert_eq!(out.closed.len(), 1, "closed after the merge gap");
    out.closed[0].clone()
}

#[test]
fn bpf_classes_at_the_watchdog_boundaries() {
    for (len, class) in [
        (9.9, Class::Short),
        (10.0, Class::Warning),
        (19.9, Class::Warning),
        (20.0, Class::Disconnect),
    ] {
        let w = single_episode_window(len);
        assert_eq!(w.class, class, "{len} s");
        assert!(
            (w.duration_s - len).abs() < 1e-9,
            "{len} s: {}",
            w.duration_s
        );
        assert_eq!(w.end, Some(1000.0 + len));
    }
}

/// `n` consecutive stalled intervals of 0.1 s each, then an unstalled one.
fn psi_window(n: u32) -> StallWindow {
    let mut d = psi();
    d.on_tick(&StallTick {
        now: 0.0,
        interval_s: 0.0,
        ..Default::default()
    });
    let mut closed = Vec::new();
    for i in 1..=n + 1 {
        let s = if i <= n {
            shares(0.8, 0.1, 0.0)
        } else {
            shares(0.0, 0.0, 0.0)
        };
        let out = d.on_tick(&StallTick {
            now: f64::from(i) / 10.0,
            interval_s: 0.1,
            shares: Some(s),
            ..Default::default()
        });
        closed.extend(out.closed);
    }
    assert_eq!(closed.len(), 1, "one window");
    closed.remove(0)
}

#[test]
fn psi_classes_at_the_watchdog_boundaries() {
    for (n, class) in [
        (99, Class::Short),
        (100, Class::Warning),
        (199, Class::Warning),
        (200, Class::Disconnect),
    ] {
        let w = psi_window(n);
        assert_eq!(w.class, class, "{n} intervals: {}", w.duration_s);
        assert_eq!(w.cause, Cause::Memory);
        assert_eq!(w.source, WindowSource::Psi);
        assert_eq!(w.runqueue_s, None);
    }
}

#[test]
fn gaps_under_100ms_are_merged_longer_ones_split() {
    let mut d = bpf();
    let e = [
        ep(EpisodeKind::Runqueue, 10.0, Some(11.0)),
        ep(EpisodeKind::Blocked, 11.05, Some(12.0)),
    ];
    d.on_tick(&tick(12.01, &e));
    let out = d.on_tick(&tick(13.0, &[]));
    assert_eq!(out.closed.len(), 1);
    let w = &out.closed[0];
    assert_eq!((w.start, w.end), (10.0, Some(12.0)));
    assert!((w.runqueue_s.expect("bpf split") - 1.0).abs() < 1e-9);
    assert!((w.blocked_s.expect("bpf split") - 0.95).abs() < 1e-9);

    let mut d = bpf();
    let e = [
        ep(EpisodeKind::Blocked, 10.0, Some(11.0)),
        ep(EpisodeKind::Blocked, 11.2, Some(12.0)),
    ];
    let out = d.on_tick(&tick(12.01, &e));
    assert_eq!(out.closed.len(), 1, "first closed by the second's gap");
    assert_eq!(out.closed[0].end, Some(11.0));
    let out = d.on_tick(&tick(13.0, &[]));
    assert_eq!(out.closed.len(), 1);
    assert_eq!(out.closed[0].start, 11.2);
}

#[test]
fn episodes_arriving_in_separate_ticks_merge() {
    let mut d = bpf();
    d.on_tick(&tick(10.5, &[ep(EpisodeKind::Blocked, 10.0, Some(10.45))]));
    // The next one starts 80 ms after the first ended: same window.
    let out = d.on_tick(&tick(10.7, &[ep(EpisodeKind::Blocked, 10.53, Some(10.69))]));
    assert!(out.closed.is_empty());
    let out = d.on_tick(&tick(11.0, &[]));
    assert_eq!(out.closed.len(), 1);
    assert!((out.closed[0].duration_s - 0.69).abs() < 1e-9);
}

#[test]
fn ongoing_window_counts_up_and_warns_once() {
    let mut d = bpf();
    let e = [ep(EpisodeKind::Blocked, 100.0, None)];
    let mut warned = 0;
    for i in 1..=250 {
        let now = 100.0 + f64::from(i) / 10.0;
        let out = d.on_tick(&tick(now, &e));
        let w = out.ongoing.expect("ongoing");
        assert!((w.duration_s - (now - 100.0)).abs() < 1e-9);
        assert_eq!(w.end, None);
        if let Some(s) = out.crossed_warning {
            warned += 1;
            assert!(s.duration_s >= 10.0 && s.duration_s < 10.1);
        }
    }
    assert_eq!(warned, 1, "one start record per window");
    let out = d.on_tick(&tick(
        125.15,
        &[ep(EpisodeKind::Blocked, 100.0, Some(125.1))],
    ));
    assert!(out.ongoing.is_some(), "still inside the merge gap");
    let out = d.on_tick(&tick(125.3, &[]));
    assert_eq!(out.closed.len(), 1);
    assert_eq!(out.closed[0].class, Class::Disconnect);
    assert!(out.ongoing.is_none());
}

fn bpf_window_with(kind: EpisodeKind, s: PsiShares) -> StallWindow {
    let mut d = bpf();
    let e = [ep(kind, 0.0, None)];
    for i in 1..=30 {
        d.on_tick(&StallTick {
            now: f64::from(i),
            interval_s: 1.0,
            shares: Some(s),
            episodes: &e,
            culprit: None,
            serve_wait: None,
        });
    }
    d.finish(30.0).expect("window in progress")
}

#[test]
fn cause_from_d_state_and_psi_and_runqueue() {
    let w = bpf_window_with(EpisodeKind::Blocked, shares(0.7, 0.4, 0.1));
    assert_eq!(w.cause, Cause::Memory, "D state, memory full dominates");
    let w = bpf_window_with(EpisodeKind::Blocked, shares(0.1, 0.6, 0.1));
    assert_eq!(w.cause, Cause::Io, "D state, io full dominates");
    let w = bpf_window_with(EpisodeKind::Runqueue, shares(0.7, 0.4, 0.1));
    assert_eq!(
        w.cause,
        Cause::Cpu,
        "run-queue wait is cpu whatever PSI says"
    );
    assert_eq!(w.class, Class::Disconnect);

    let mut d = psi();
    d.on_tick(&StallTick::default());
    for i in 1..=12 {
        d.on_tick(&StallTick {
            now: f64::from(i),
            interval_s: 1.0,
            shares: Some(shares(0.0, 0.2, 0.9)),
            ..Default::default()
        });
    }
    let w = d.finish(12.0).expect("window");
    assert_eq!(w.cause, Cause::Cpu, "PSI: cpu some dominates");
    assert_eq!(w.class, Class::Warning);
}

#[test]
fn psi_window_needs_consecutive_short_intervals() {
    let mut d = psi();
    d.on_tick(&StallTick::default());
    let stalled = Some(shares(0.9, 0.0, 0.0));
    for i in 1..=5 {
        d.on_tick(&StallTick {
            now: f64::from(i),
            interval_s: 1.0,
            shares: stalled,
            ..Default::default()
        });
    }
    // The sampler hiccupped: a 3 s interval cannot prove continuity.
    let out = d.on_tick(&StallTick {
        now: 8.0,
        interval_s: 3.0,
        shares: stalled,
        ..Default::default()
    });
    assert_eq!(out.closed.len(), 1);
    assert_eq!(out.closed[0].duration_s, 5.0);
    assert!(out.ongoing.is_none());
    // Below 50 %: no window.
    let out = d.on_tick(&StallTick {
        now: 9.0,
        interval_s: 1.0,
        shares: Some(shares(0.49, 0.49, 0.49)),
        ..Default::default()
    });
    assert!(out.ongoing.is_none() && out.closed.is_empty());
}

#[test]
fn culprit_is_the_biggest_seen_during_the_window() {
    let mut d = bpf();
    let e = [ep(EpisodeKind::Blocked, 0.0, None)];
    let c = |pid, rss_anon| Culprit {
        pid,
        comm: format!("p{pid}"),
        rss_anon,
    };
    for (now, culprit) in [(1.0, c(7, 100)), (2.0, c(8, 9_000)), (3.0, c(9, 50))] {
        d.on_tick(&StallTick {
            now,
            interval_s: 1.0,
            shares: None,
            episodes: &e,
            culprit: Some(culprit),
            serve_wait: None,
        });
    }
    let w = d.finish(3.0).expect("window");
    assert_eq!(w.culprit.expect("culprit").pid, 8);
}

#[test]
fn empty_and_odd_input_does_not_panic() {
    let mut d = bpf();
    assert_eq!(d.on_tick(&StallTick::default()), StallOutput::default());
    let e = [ep(EpisodeKind::Blocked, 5.0, Some(4.0))];
    let out = d.on_tick(&tick(6.0, &e));
    assert!(out.closed.iter().all(|w| w.duration_s >= 0.0));
    let mut d = psi();
    let out = d.on_tick(&StallTick {
        now: 1.0,
        interval_s: f64::NAN,
        shares: Some(shares(f64::NAN, 1.0, 0.0)),
        ..Default::default()
    });
    assert!(out.ongoing.is_none());
    assert!(d.finish(2.0).is_none());
}

#[test]
fn ongoing_episode_not_resent_ends_at_the_last_tick() {
    let mut d = bpf();
    // Start jitters by microseconds between ticks: still the same episode.
    d.on_tick(&tick(11.0, &[ep(EpisodeKind::Blocked, 10.0, None)]));
    d.on_tick(&tick(12.0, &[ep(EpisodeKind::Blocked, 10.000_004, None)]));
    let out = d.on_tick(&tick(13.0, &[]));
    assert_eq!(out.closed.len(), 1, "not open forever");
    let w = &out.closed[0];
    assert_eq!(w.end, Some(12.0));
    assert!((w.blocked_s.expect("split") - 2.0).abs() < 1e-9, "{w:?}");
}

#[test]
fn closed_report_of_an_ongoing_episode_shortens_the_window() {
    let mut d = bpf();
    d.on_tick(&tick(11.0, &[ep(EpisodeKind::Blocked, 10.0, None)]));
    let out = d.on_tick(&tick(12.0, &[ep(EpisodeKind::Blocked, 10.0, Some(11.5))]));
    assert!(out.ongoing.is_none() && out.closed.len() == 1);
    assert_eq!(out.closed[0].duration_s, 1.5);
}

#[test]
fn shares_between_two_samples() {
    use crate::model::sample::{Psi, PsiLine};
    use std::time::{Duration, Instant, SystemTime};
    let t0 = Instant::now();
    let psi = |some: u64, full: u64| Psi {
        some: PsiLine {
            total_us: some,
            ..Default::default()
        },
        full: Some(PsiLine {
            total_us: full,
            ..Default::default()
        }),
    };
    let mut a = UnitSample::empty(t0, SystemTime::now());
    a.memory_pressure = Some(psi(1_000_000, 500_000));
    a.cpu_pressure = Some(psi(0, 0));
    let mut b = UnitSample::empty(t0 + Duration::from_millis(500), SystemTime::now());
    b.memory_pressure = Some(psi(1_400_000, 800_000));
    b.cpu_pressure = Some(psi(900_000, 0));
    let s = PsiShares::between(&a, &b).expect("shares");
    assert!((s.memory_some - 0.8).abs() < 1e-9);
    assert!((s.memory_full - 0.6).abs() < 1e-9);
    assert_eq!(s.io_full, 0.0, "no io file");
    assert_eq!(s.cpu_some, 1.0, "clamped");
    assert!(PsiShares::between(&b, &a).is_none(), "time went backwards");
    b.memory_pressure = None;
    assert!(PsiShares::between(&a, &b).is_none());
}

/// What the serve thread does in a simulated timeline.
#[derive(Clone, Copy, PartialEq)]
enum Seg {
    /// A wait long enough to be an episode.
    Episode(EpisodeKind),
    /// A wait shorter than the episode threshold (counted in the kernel's
    /// wait total only).
    ShortWait,
    /// Running: free to answer a heartbeat.
    Run,
    /// Sleeping voluntarily, not in a poll syscall (a futex, a timer).
    Sleep,
    /// Sleeping in a poll syscall: the event loop waits for requests.
    Idle,
}

/// Drives a BPF detector through `segs` (back to back from t = 100 s),
/// ticking every `dt` seconds the way the run loop does: episodes finished
/// since the last tick plus the ones in progress, and the thread's wait
/// total. Then ticks on for 3 s of freedom. Returns every closed window.
fn simulate(segs: &[(Seg, f64)], dt: f64, tid_at: impl Fn(f64) -> u32) -> Vec<StallWindow> {
    let t0 = 100.0;
    let mut timeline = Vec::new();
    let mut t = t0;
    for &(seg, len) in segs {
        timeline.push((seg, t, t + len));
        t += len;
    }
    let end = t + 3.0;
    timeline.push((Seg::Idle, t, end));
    let mut d = bpf();
    // The agent was already watching before the thread's trouble began.
    d.on_tick(&StallTick {
        now: t0,
        serve_wait: Some(ServeWait {
            tid: tid_at(t0),
            waited_s: 0.0,
            slept_s: 0.0,
            at_s: t0 - 50.0,
            idle_at_s: None,
        }),
        ..Default::default()
    });
    let mut closed = Vec::new();
    let mut last = t0;
    let mut now = t0;
    while now < end {
        now += dt;
        let episodes: Vec<Episode> = timeline
            .iter()
            .filter_map(|&(seg, s, e)| match seg {
                Seg::Episode(kind) if s < now && e > last => {
                    Some(ep(kind, s, (e <= now).then_some(e)))
                }
                _ => None,
            })
            .collect();
        let total = |f: &dyn Fn(Seg) -> bool| -> f64 {
            timeline
                .iter()
                .filter(|(seg, _, _)| f(*seg))
                .map(|&(_, s, e)| (e.min(now) - s).max(0.0))
                .sum()
        };
        let waited = total(&|s| matches!(s, Seg::Episode(_) | Seg::ShortWait));
        let slept = total(&|s| s == Seg::Sleep || s == Seg::Idle);
        let idle_at = timeline
            .iter()
            .filter(|&&(seg, s, _)| seg == Seg::Idle && s < now)
            .map(|&(_, s, _)| s - 50.0)
            .fold(None, |a: Option<f64>, s| Some(a.map_or(s, |a| a.max(s))));
        let out = d.on_tick(&StallTick {
            now,
            interval_s: dt,
            shares: None,
            episodes: &episodes,
            culprit: None,
            serve_wait: Some(ServeWait {
                tid: tid_at(now),
                waited_s: waited,
                slept_s: slept,
                // Monotonic: some other origin than the wall clock.
                at_s: now - 50.0,
                idle_at_s: idle_at,
            }),
        });
        closed.extend(out.closed);
        last = now;
    }
    closed.extend(d.finish(now));
    closed
}

/// A reader throttled by io.max: long D-state waits with gaps of short
/// waits between them (the serve thread never ran free for long).
fn throttled_reader(gap: f64, gap_wait_share: f64, cycles: usize) -> Vec<(Seg, f64)> {
    let mut segs = Vec::new();
    for _ in 0..cycles {
        segs.push((Seg::Episode(EpisodeKind::Blocked), 0.8));
        // The gap: short waits with little runs between them.
        let waits = 4;
        for _ in 0..waits {
            segs.push((Seg::ShortWait, gap * gap_wait_share / waits as f64));
            segs.push((Seg::Run, gap * (1.0 - gap_wait_share) / waits as f64));
        }
    }
    segs.push((Seg::Episode(EpisodeKind::Blocked), 0.8));
    segs
}

#[test]
fn busy_gaps_between_episodes_are_bridged() {
    // 22 cycles of 0.8 s episode + 0.4 s gap (90 % short waits) + a last
    // episode: 27.2 s of no heartbeat, one disconnect window.
    for dt in [1.0, 0.1] {
        let segs = throttled_reader(0.4, 0.9, 22);
        let ws = simulate(&segs, dt, |_| 7);
        assert_eq!(ws.len(), 1, "dt {dt}: {ws:?}");
        let w = &ws[0];
        assert!(
            (w.duration_s - 27.2).abs() < 1e-6,
            "dt {dt}: {}",
            w.duration_s
        );
        assert_eq!(w.class, Class::Disconnect);
        assert_eq!(w.start, 100.0);
    }
}

#[test]
fn free_gaps_split_windows_however_busy_the_episodes_are() {
    // Same episodes, but in the 0.4 s gaps the loop runs and goes back to
    // waiting for requests (sleeps): no bridge, even though each 1 s
    // interval is mostly episode time.
    let mut segs = Vec::new();
    for _ in 0..22 {
        segs.push((Seg::Episode(EpisodeKind::Blocked), 0.8));
        for _ in 0..2 {
            segs.push((Seg::Run, 0.12));
            segs.push((Seg::Sleep, 0.08));
        }
    }
    segs.push((Seg::Episode(EpisodeKind::Blocked), 0.8));
    let ws = simulate(&segs, 1.0, |_| 7);
    assert_eq!(ws.len(), 23, "{ws:?}");
    assert!(ws.iter().all(|w| (w.duration_s - 0.8).abs() < 1e-6));
}

#[test]
fn long_busy_gaps_are_bridged_while_every_interval_is_busy() {
    // 2.5 s stretches of waits too short to be episodes between episodes:
    // the thread never ran free, so one window.
    let segs = throttled_reader(2.5, 0.95, 4);
    let ws = simulate(&segs, 1.0, |_| 7);
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert!((ws[0].duration_s - (5.0 * 0.8 + 4.0 * 2.5)).abs() < 1e-6);
    // The same with one free second in the middle of the second stretch.
    let mut segs = throttled_reader(2.5, 0.95, 4);
    segs.insert(7, (Seg::Run, 1.0));
    let ws = simulate(&segs, 1.0, |_| 7);
    assert_eq!(ws.len(), 2, "{ws:?}");
}

#[test]
fn a_wait_not_yet_visible_does_not_split_the_window() {
    // A tick 120 ms after the last episode ended, while the next wait has
    // been going on for 60 ms (not visible below the 100 ms threshold):
    // the window stays open, and the next episode joins it.
    let mut d = bpf();
    let e1 = [ep(EpisodeKind::Blocked, 10.0, Some(11.0))];
    assert!(d.on_tick(&tick(11.0, &e1)).closed.is_empty());
    assert!(d.on_tick(&tick(11.12, &[])).closed.is_empty());
    let e2 = [ep(EpisodeKind::Blocked, 11.06, Some(12.0))];
    assert!(d.on_tick(&tick(12.0, &e2)).closed.is_empty());
    let out = d.on_tick(&tick(12.5, &[]));
    assert_eq!(out.closed.len(), 1, "{out:?}");
    assert!((out.closed[0].duration_s - 2.0).abs() < 1e-9);
}

#[test]
fn a_new_serve_thread_does_not_bridge_the_old_ones_gap() {
    // The serve restarted (another tid) mid-way: its wait total is not
    // comparable with the old one's, so that interval bridges nothing.
    let segs = throttled_reader(0.4, 0.9, 22);
    let ws = simulate(&segs, 1.0, |now| if now < 110.0 { 7 } else { 8 });
    assert!(ws.len() >= 2, "{ws:?}");
    let total: f64 = ws.iter().map(|w| w.duration_s).sum();
    assert!(total <= 27.2 + 1e-6, "{total}");
}

#[test]
fn a_busy_tail_extends_the_window_by_whole_intervals() {
    // One episode, then 0.6 s of short waits, then freedom: the window
    // stays pending through the busy tail and ends with its last busy
    // interval (ticks every 100 ms here).
    let segs = [
        (Seg::Episode(EpisodeKind::Blocked), 2.0),
        (Seg::ShortWait, 0.6),
    ];
    let ws = simulate(&segs, 0.1, |_| 7);
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert!(
        (ws[0].duration_s - 2.6).abs() < 1e-6,
        "{}",
        ws[0].duration_s
    );
    // At 1 s ticks the tail's interval (102, 103] is not wholly busy: the
    // window ends at its episode (never later than the truth).
    let ws = simulate(&segs, 1.0, |_| 7);
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert!(
        (ws[0].duration_s - 2.0).abs() < 1e-6,
        "{}",
        ws[0].duration_s
    );
    assert_eq!(ws[0].end, Some(102.0));
}

/// A serve under a spent CPU quota: long throttled run-queue waits, each
/// followed by a sliver of CPU and a voluntary sleep of `sleep` seconds
/// (its event loop's timer), then `run` seconds of running.
fn throttled_loop(sleep: f64, run: f64, cycles: usize) -> Vec<(Seg, f64)> {
    throttled_loop_sleeping(Seg::Sleep, sleep, run, cycles)
}

/// `throttled_loop` with the sleeps of the given kind.
fn throttled_loop_sleeping(kind: Seg, sleep: f64, run: f64, cycles: usize) -> Vec<(Seg, f64)> {
    let mut segs = Vec::new();
    for _ in 0..cycles {
        segs.push((Seg::Episode(EpisodeKind::Runqueue), 0.9));
        segs.push((Seg::Run, run));
        segs.push((kind, sleep));
    }
    segs.push((Seg::Episode(EpisodeKind::Runqueue), 0.9));
    segs
}

#[test]
fn starved_thread_sleeping_between_throttled_waits_is_one_window() {
    // 14 cycles of 0.9 s throttled + 2 ms of CPU + a 120 ms timer sleep.
    let segs = throttled_loop(0.12, 0.002, 14);
    let expect = 14.0 * 1.022 + 0.9;
    for dt in [1.0, 0.1] {
        let ws = simulate(&segs, dt, |_| 7);
        assert_eq!(ws.len(), 1, "dt {dt}: {ws:?}");
        assert!(
            (ws[0].duration_s - expect).abs() < 1e-6,
            "{}",
            ws[0].duration_s
        );
        assert_eq!(ws[0].class, Class::Warning);
        assert_eq!(ws[0].cause, Cause::Cpu);
    }
}

#[test]
fn a_thread_that_runs_between_waits_is_not_starved() {
    // 0.9 s waits with 250 ms of running and a sleep between them: the
    // loop got CPU, went back to wait for requests and could answer; every
    // wait is its own window.
    let segs = throttled_loop(0.05, 0.25, 10);
    let ws = simulate(&segs, 1.0, |_| 7);
    assert_eq!(ws.len(), 11, "{ws:?}");
    // And a thread that mostly sleeps between its waits is not starved:
    // 0.9 s waits, 0.6 s sleeps (waiting 60 % of the time).
    let segs = throttled_loop(0.6, 0.002, 10);
    let ws = simulate(&segs, 1.0, |_| 7);
    assert_eq!(ws.len(), 11, "{ws:?}");
}

#[test]
fn waits_too_short_to_be_episodes_make_a_window_by_themselves() {
    // 12 s of 50 ms D-state waits with 2 ms runs between them, no episode
    // at all: a stall, from the first busy interval to the last.
    let mut segs = Vec::new();
    for _ in 0..(12.0_f64 / 0.052) as usize {
        segs.push((Seg::ShortWait, 0.05));
        segs.push((Seg::Run, 0.002));
    }
    let ws = simulate(&segs, 1.0, |_| 7);
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert_eq!(ws[0].start, 100.0);
    assert!(
        (ws[0].duration_s - 12.0).abs() <= 1.0,
        "{}",
        ws[0].duration_s
    );
    assert_eq!(ws[0].class, Class::Warning);
    // Half waiting, half running, sleeping now and then: no window.
    let mut segs = Vec::new();
    for _ in 0..60 {
        segs.push((Seg::ShortWait, 0.05));
        segs.push((Seg::Run, 0.04));
        segs.push((Seg::Sleep, 0.01));
    }
    assert!(simulate(&segs, 1.0, |_| 7).is_empty());
}

#[test]
fn a_starved_loop_that_goes_idle_is_not_stalled_across_it() {
    // The same starved thread, but its sleeps are its event loop waiting
    // for work (epoll_wait and the like): each time it had answered what
    // it had, so nothing bridges across a sleep.
    let segs = throttled_loop_sleeping(Seg::Idle, 0.12, 0.002, 14);
    for dt in [1.0, 0.1] {
        let ws = simulate(&segs, dt, |_| 7);
        assert!(
            ws.iter()
                .all(|w| w.class == Class::Short && w.duration_s < 1.0),
            "dt {dt}: {ws:?}"
        );
    }
}

#[test]
fn going_idle_once_splits_a_starved_window_where_clients_got_an_answer() {
    // 14 s of starvation in which the loop once got enough CPU to answer
    // and wait for work again (~8 s in): the clients saw an ~8 s and a
    // ~5 s gap, so no warning window, where a sleep that is not a wait for
    // work (a futex, a timer) leaves one 14 s window.
    let mut segs = throttled_loop(0.12, 0.002, 7);
    segs.push((Seg::Run, 0.002));
    segs.push((Seg::Idle, 0.05));
    segs.extend(throttled_loop(0.12, 0.002, 4));
    for dt in [1.0, 0.1] {
        let ws = simulate(&segs, dt, |_| 7);
        let long: Vec<_> = ws.iter().filter(|w| w.duration_s >= 1.0).collect();
        assert_eq!(long.len(), 2, "dt {dt}: {ws:?}");
        assert!(
            long.iter().all(|w| w.class == Class::Short),
            "dt {dt}: {ws:?}"
        );
        assert!(long[0]
            .end
            .is_some_and(|e| e <= 100.0 + 7.0 * 1.022 + 0.9 + 1e-6));
    }
    let mut segs = throttled_loop(0.12, 0.002, 7);
    segs.push((Seg::Run, 0.002));
    segs.push((Seg::Sleep, 0.05));
    segs.extend(throttled_loop(0.12, 0.002, 4));
    let ws = simulate(&segs, 1.0, |_| 7);
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert_eq!(ws[0].class, Class::Warning);
}

#[test]
fn a_synchronous_reader_that_goes_idle_splits_its_window() {
    // The throttled reader bridged into one 27 s window above, with the
    // loop going idle once in the middle: two windows.
    // It runs 2 ms after the episode that ends at 114.0, then waits for
    // work for 10 ms; the control waits on a read there instead.
    for (seg, split) in [(Seg::Idle, true), (Seg::ShortWait, false)] {
        let mut segs = throttled_reader(0.4, 0.9, 11);
        segs.push((Seg::Run, 0.002));
        segs.push((seg, 0.01));
        segs.extend(throttled_reader(0.4, 0.9, 10));
        for dt in [1.0, 0.1] {
            let ws = simulate(&segs, dt, |_| 7);
            let across = ws
                .iter()
                .any(|w| w.start < 114.0 && w.end.is_some_and(|e| e > 114.012));
            assert_eq!(across, !split, "dt {dt}: {ws:?}");
            assert!(ws[0].duration_s >= 13.9, "dt {dt}: {ws:?}");
        }
    }
}
