//! Tests of the runaway policy on synthetic streams with a fake clock.

use super::*;

pub(crate) const GIB: u64 = 1024 * 1024 * 1024;

pub(crate) fn proc(pid: i32, comm: &str, rss_anon: u64, growth: f64) -> ProcInput {
    ProcInput {
        pid,
        start_time: 1000 + pid as u64,
        comm: comm.into(),
        argv0: format!("/usr/bin/{comm}").into(),
        rss_anon,
        anon_growth: Some(growth),
        cgroup: "/system.slice/t3-serve@alice.service".into(),
    }
}

/// Serve (pid 100, 1 GiB), a sibling (pid 300, 0.5 GiB) and `agent` (pid
/// 200) with the given anon and growth; current = sum; max 16 GiB.
pub(crate) fn unit(now: f64, agent_anon: u64, growth: f64) -> UnitInput {
    let procs = vec![
        proc(100, "node", GIB, 0.0),
        proc(200, "claude", agent_anon, growth),
        proc(300, "bash", GIB / 2, 0.0),
    ];
    UnitInput {
        user: "alice".into(),
        now,
        memory_current: procs.iter().map(|p| p.rss_anon).sum(),
        memory_max: Some(16 * GIB),
        memory_high: None,
        memory_full_share: Some(0.0),
        growth_bytes_per_second: Some(growth),
        serve_pid: Some(100),
        procs,
    }
}

fn policy() -> RunawayPolicy {
    RunawayPolicy::new(&Config::default())
}

#[test]
fn kill_threshold_takes_the_largest_unprotected() {
    let mut p = policy();
    let u = unit(0.0, 13 * GIB, 0.0); // 14.5 / 16 = 90.6 %
    let d = p.decide(&u).expect("decision");
    assert_eq!(d.reason, RunawayReason::KillThreshold);
    assert_eq!(d.target.pid, 200);
    let t = d.kill_target();
    assert_eq!((t.pid, t.start_time), (200, 1200));
    assert_eq!(
        t.cgroup.as_deref(),
        Some("/system.slice/t3-serve@alice.service")
    );
}

#[test]
fn projection_above_watch_threshold() {
    let mut p = policy();
    // 12.5 / 16 = 78 %: 3.5 GiB left at 1 GiB/s = 3.5 s <= 5 s horizon.
    let d = p
        .decide(&unit(0.0, 11 * GIB, GIB as f64))
        .expect("projected");
    assert_eq!(d.reason, RunawayReason::Projected);
    let ttm = d.time_to_max_seconds.expect("ttm");
    assert!((ttm - 3.5).abs() < 1e-9, "{ttm}");
    // Same growth below the watch threshold: not yet.
    let mut p = policy();
    assert!(p.decide(&unit(0.0, 9 * GIB, 3.0 * GIB as f64)).is_none());
    // Above watch but slow: 3.5 GiB at 100 MiB/s = 35 s.
    assert!(p
        .decide(&unit(1.0, 11 * GIB, 100.0 * 1024.0 * 1024.0))
        .is_none());
}

#[test]
fn legitimate_plateau_at_60_percent_is_never_killed() {
    let mut p = policy();
    let target = (0.6 * 16.0 * GIB as f64) as u64 - GIB - GIB / 2;
    let mut now = 0.0;
    let mut anon = GIB;
    let mut intervals = Vec::new();
    // Climb at 1 GiB/s to 60 %, then stay for ten minutes.
    while now < 600.0 {
        let growth = if anon < target { GIB as f64 } else { 0.0 };
        let u = unit(now, anon, growth);
        assert!(p.decide(&u).is_none(), "killed at {now} s, {anon} B");
        let dt = p.sample_interval_for(&u);
        intervals.push(dt);
        now += dt.as_secs_f64();
        anon = (anon + (growth * dt.as_secs_f64()) as u64).min(target);
    }
    assert!(
        intervals.contains(&Duration::from_millis(100)),
        "fast while climbing"
    );
    assert_eq!(
        intervals.last(),
        Some(&Duration::from_secs(1)),
        "normal on the plateau"
    );
}

#[test]
fn runaway_at_2gb_per_second_is_caught_below_95_percent() {
    let mut p = policy();
    let mut now = 0.0;
    let mut anon = GIB;
    let rate = 2e9;
    loop {
        let u = unit(now, anon, rate);
        if let Some(d) = p.decide(&u) {
            let usage = u.memory_current as f64 / (16 * GIB) as f64;
            assert!(usage < 0.95, "decided at {usage}");
            assert_eq!(d.target.pid, 200);
            break;
        }
        assert!(now < 60.0, "never decided");
        let dt = p.sample_interval_for(&u).as_secs_f64();
        now += dt;
        anon += (rate * dt) as u64;
    }
}

#[test]
fn livelock_between_high_and_max() {
    let mut p = policy();
    let mk = |now: f64, full: f64| {
        let mut u = unit(now, 6 * GIB, 0.0); // 7.5 GiB, plateau
        u.memory_high = Some(7 * GIB);
        u.memory_full_share = Some(full);
        u
    };
    for i in 0..10 {
        assert!(p.decide(&mk(f64::from(i), 0.7)).is_none(), "{i} s");
    }
    // Pressure dips once: the timer restarts.
    assert!(p.decide(&mk(10.0, 0.2)).is_none());
    for i in 11..21 {
        assert!(p.decide(&mk(f64::from(i), 0.7)).is_none(), "{i} s");
    }
    let d = p.decide(&mk(21.0, 0.7)).expect("10 s of full >= 50 %");
    assert_eq!(d.reason, RunawayReason::Livelock);
    assert_eq!(d.target.pid, 200);
    // Below memory.high: no livelock however high the pressure.
    let mut p = policy();
    for i in 0..30 {
        let mut u = mk(f64::from(i), 0.9);
        u.memory_high = Some(8 * GIB);
        assert!(p.decide(&u).is_none());
    }
}

#[test]
fn protections() {
    let mut cfg = Config::default();
    cfg.runaway.protect = vec!["claude".into(), "*/python3*".into()];
    let mut p = RunawayPolicy::new(&cfg);
    let mut u = unit(0.0, 13 * GIB, 0.0);
    // claude (comm) protected: the next largest unprotected is bash, not the serve.
    let d = p.decide(&u).expect("decision");
    assert_eq!(d.target.pid, 300);
    // The serve alone, even when it is the hog, is never a runaway.
    let mut p = RunawayPolicy::new(&cfg);
    u.procs.retain(|x| x.pid == 100);
    u.procs[0].rss_anon = 15 * GIB;
    u.memory_current = 15 * GIB;
    assert!(p.decide(&u).is_none());
    // argv0 globs.
    let mut p = RunawayPolicy::new(&cfg);
    let mut u = unit(0.0, 13 * GIB, 0.0);
    u.procs[1].comm = "python".into();
    u.procs[1].argv0 = "/usr/bin/python3.11".into();
    u.procs[2].argv0 = "python3".into();
    let d = p.decide(&u).expect("decision");
    assert_eq!(d.target.pid, 300, "argv0 of 200 matched the full path glob");
    assert!(p.is_protected(&u, &u.procs[1]));
}

#[test]
fn cooldown_one_action_per_unit_per_10s() {
    let mut p = policy();
    assert!(p.decide(&unit(0.0, 13 * GIB, 0.0)).is_some());
    assert!(p.decide(&unit(5.0, 13 * GIB, 0.0)).is_none());
    assert!(p.decide(&unit(9.99, 13 * GIB, 0.0)).is_none());
    assert!(p.decide(&unit(10.0, 13 * GIB, 0.0)).is_some());
    // Another unit is not held by alice's cooldown.
    let mut bob = unit(10.5, 13 * GIB, 0.0);
    bob.user = "bob".into();
    assert!(p.decide(&bob).is_some());
}

#[test]
fn host_guard_takes_the_largest_across_units() {
    let mut p = policy();
    let alice = unit(0.0, 3 * GIB, 0.0);
    let mut bob = unit(0.0, 5 * GIB, 0.0);
    bob.user = "bob".into();
    bob.procs[1].pid = 201;
    assert!(p.decide(&alice).is_none() && p.decide(&bob).is_none());
    let calm = HostInput {
        memory_full_avg10: Some(1.0),
        mem_total: Some(64 * GIB),
        mem_available: Some(30 * GIB),
    };
    assert!(p.host_guard(0.0, &calm).is_none());
    let pressured = HostInput {
        memory_full_avg10: Some(55.0),
        ..calm
    };
    let d = p.host_guard(0.5, &pressured).expect("host guard");
    assert_eq!((d.user.as_str(), d.target.pid), ("bob", 201));
    assert_eq!(d.reason, RunawayReason::HostGuard);
    assert!(p.host_guard(1.0, &pressured).is_none(), "host cooldown");
    let (mut alice, mut bob) = (alice, bob);
    alice.now = 10.8;
    bob.now = 10.8;
    assert!(p.decide(&alice).is_none() && p.decide(&bob).is_none());
    let short = HostInput {
        mem_available: Some(GIB),
        ..calm
    };
    let d = p.host_guard(11.0, &short).expect("MemAvailable < 5 %");
    assert_eq!(d.user, "bob", "bob's cooldown is over; still the largest");
    // Stale inputs are not used.
    assert!(p.host_guard(40.0, &short).is_none());
}

#[test]
fn host_pressure_from_a_units_own_livelock_is_left_to_the_livelock_rule() {
    let mut p = policy();
    let band = |now: f64| {
        let mut u = unit(now, 6 * GIB, 0.0); // 7.5 GiB between 7 and 16 GiB
        u.memory_high = Some(7 * GIB);
        u.memory_full_share = Some(0.95);
        u
    };
    let pressured = HostInput {
        memory_full_avg10: Some(60.0),
        mem_total: Some(64 * GIB),
        mem_available: Some(40 * GIB),
    };
    for i in 0..10 {
        assert!(p.decide(&band(f64::from(i))).is_none(), "{i} s");
        assert!(
            p.host_guard(f64::from(i), &pressured).is_none(),
            "{i} s: the unit's own livelock, the host is not short"
        );
    }
    let d = p.decide(&band(10.0)).expect("livelock after 10 s");
    assert_eq!(d.reason, RunawayReason::Livelock);
    // Host memory short: the host guard acts at once, livelock or not.
    let mut p = policy();
    assert!(p.decide(&band(0.0)).is_none());
    let short = HostInput {
        mem_available: Some(GIB),
        ..pressured
    };
    let d = p.host_guard(0.5, &short).expect("MemAvailable < 5 %");
    assert_eq!(d.reason, RunawayReason::HostGuard);
    // Another unit stalled without a livelock explains the pressure too:
    // the host guard acts.
    let mut p = policy();
    assert!(p.decide(&band(0.0)).is_none());
    let mut bob = unit(0.0, 5 * GIB, 0.0);
    bob.user = "bob".into();
    bob.memory_full_share = Some(0.8);
    assert!(p.decide(&bob).is_none());
    let d = p.host_guard(0.5, &pressured).expect("not only a livelock");
    assert_eq!(d.reason, RunawayReason::HostGuard);
}

#[test]
fn adaptive_sampling() {
    let p = policy();
    assert_eq!(
        p.sample_interval_for(&unit(0.0, GIB, 0.0)),
        Duration::from_secs(1)
    );
    assert_eq!(
        p.sample_interval_for(&unit(0.0, 11 * GIB, 0.0)),
        Duration::from_millis(100),
        "above watch"
    );
    assert_eq!(
        p.sample_interval_for(&unit(0.0, GIB, 1e9)),
        Duration::from_millis(100),
        "max in 13 s"
    );
    let mut u = unit(0.0, GIB, 1e9);
    u.memory_max = None;
    assert_eq!(p.sample_interval_for(&u), Duration::from_millis(100));
    u.growth_bytes_per_second = Some(1e6);
    assert_eq!(p.sample_interval_for(&u), Duration::from_secs(1));
}

#[test]
fn culprit_fastest_growing_else_largest() {
    let procs = vec![
        proc(1, "big", 10 * GIB, 0.0),
        proc(2, "fast", GIB, 5e8),
        proc(3, "slow", GIB, 1e7),
    ];
    assert_eq!(pick_culprit(&procs).expect("culprit").pid, 2);
    let procs = vec![proc(1, "big", 10 * GIB, 0.0), proc(3, "x", GIB, 100.0)];
    assert_eq!(pick_culprit(&procs).expect("culprit").pid, 1);
    assert!(pick_culprit(&[]).is_none());
}

#[test]
fn missing_figures_decide_nothing() {
    let mut p = policy();
    let mut u = unit(0.0, 13 * GIB, f64::NAN);
    u.memory_max = None;
    u.memory_full_share = None;
    assert!(p.decide(&u).is_none());
    u.memory_max = Some(0);
    assert!(p.decide(&u).is_none());
    assert!(p.decide(&UnitInput::default()).is_none());
}

#[test]
fn clone_from_copies_every_field() {
    let a = unit(1.0, 3 * GIB, 5.0);
    let mut b = unit(9.0, GIB, 0.0);
    b.user = "somebody-else".into();
    b.procs.push(proc(400, "extra", 1, 1.0));
    b.memory_high = Some(1);
    b.clone_from(&a);
    assert_eq!(b, a);
    let mut c = UnitInput::default();
    c.clone_from(&a);
    assert_eq!(c, a.clone());
}
