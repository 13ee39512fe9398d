//! Tests of the per-tick glue: observe vs enforce through a recording
//! killer, stall events, unit removal.

use std::sync::Arc;

use super::runaway::tests::{unit, GIB};
use super::stall::{Episode, EpisodeKind};
use super::*;
use crate::actions::killer::{KillError, KillTarget, RecordingKiller};
use crate::model::event::{Cause, RunawayReason};

/// Shares a `RecordingKiller` with the test.
struct Shared(Arc<RecordingKiller>);

impl Killer for Shared {
    fn kill(&self, t: &KillTarget) -> Result<(), KillError> {
        self.0.kill(t)
    }
}

fn detectors(mode: Mode, bpf: bool, killer: RecordingKiller) -> (Detectors, Arc<RecordingKiller>) {
    let config = Config {
        mode,
        ..Config::default()
    };
    let k = Arc::new(killer);
    (Detectors::new(&config, bpf, Box::new(Shared(k.clone()))), k)
}

fn tick(u: UnitInput) -> UnitTick<'static> {
    UnitTick {
        stall: StallTick {
            now: u.now,
            interval_s: 1.0,
            ..Default::default()
        },
        runaway: u,
    }
}

fn runaways(events: &[EventBody]) -> Vec<&crate::model::event::RunawayAction> {
    events
        .iter()
        .filter_map(|e| match e {
            EventBody::Runaway(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn observe_records_would_kill_and_never_calls_the_killer() {
    let (mut d, k) = detectors(Mode::Observe, false, RecordingKiller::default());
    let ev = d.on_tick(0.0, &[tick(unit(0.0, 13 * GIB, 0.0))], None);
    let a = runaways(&ev);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].action, ActionKind::Observed);
    assert_eq!(a[0].reason, RunawayReason::KillThreshold);
    assert_eq!(a[0].memory_max, Some(16 * GIB));
    assert!(k.calls().is_empty(), "observe never kills");
    // Cooldown holds in observe mode too.
    assert!(runaways(&d.on_tick(1.0, &[tick(unit(1.0, 13 * GIB, 0.0))], None)).is_empty());
}

#[test]
fn enforce_kills_through_the_killer_and_records_failures() {
    let (mut d, k) = detectors(Mode::Enforce, false, RecordingKiller::default());
    let ev = d.on_tick(0.0, &[tick(unit(0.0, 13 * GIB, 0.0))], None);
    assert_eq!(runaways(&ev)[0].action, ActionKind::Killed);
    let calls = k.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].pid, calls[0].start_time), (200, 1200));

    let failing = RecordingKiller {
        fail_with: Some("exited before the signal".into()),
        ..Default::default()
    };
    let (mut d, k) = detectors(Mode::Enforce, false, failing);
    let ev = d.on_tick(0.0, &[tick(unit(0.0, 13 * GIB, 0.0))], None);
    let a = runaways(&ev);
    assert_eq!(a[0].action, ActionKind::Failed);
    let err = a[0].error.as_deref().expect("error text");
    assert!(err.contains("gone") && err.contains("exited"), "{err}");
    assert_eq!(k.calls().len(), 1);
}

#[test]
fn host_guard_runs_only_when_no_unit_acted() {
    let (mut d, _k) = detectors(Mode::Observe, false, RecordingKiller::default());
    let host = HostInput {
        memory_full_avg10: Some(90.0),
        ..Default::default()
    };
    let ev = d.on_tick(0.0, &[tick(unit(0.0, 13 * GIB, 0.0))], Some(&host));
    assert_eq!(runaways(&ev).len(), 1, "the unit's own action only");
    let mut bob = unit(0.5, 2 * GIB, 0.0);
    bob.user = "bob".into();
    let ev = d.on_tick(0.5, &[tick(bob)], Some(&host));
    let a = runaways(&ev);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].user.as_str(), a[0].reason),
        ("bob", RunawayReason::HostGuard)
    );
}

#[test]
fn stall_events_start_record_window_and_removal() {
    let (mut d, _k) = detectors(Mode::Observe, true, RecordingKiller::default());
    let ongoing = [Episode {
        kind: EpisodeKind::Blocked,
        start: 100.0,
        end: None,
    }];
    let mut starts = 0;
    for i in 1..=25 {
        let now = 100.0 + f64::from(i);
        let mut t = tick(unit(now, GIB / 4, 0.0));
        t.stall.episodes = &ongoing;
        for e in d.on_tick(now, &[t], None) {
            if let EventBody::StallWindowStart(w) = e {
                starts += 1;
                assert_eq!(w.culprit.as_ref().map(|c| c.pid), Some(100), "largest anon");
            }
        }
        let w = d.ongoing("alice").expect("ongoing");
        assert!((w.duration_s - f64::from(i)).abs() < 1e-9);
    }
    assert_eq!(starts, 1);
    let ev = d.unit_removed("alice", 125.0);
    match ev.as_slice() {
        [EventBody::StallWindow(w)] => {
            assert_eq!(w.class, Class::Disconnect);
            assert_eq!(w.cause, Cause::Memory);
            assert_eq!(w.end, Some(125.0));
        }
        other => panic!("expected one window, got {other:?}"),
    }
    assert!(d.ongoing("alice").is_none());
}

#[test]
fn stall_info_counts_the_last_hour() {
    let (mut d, _k) = detectors(Mode::Observe, true, RecordingKiller::default());
    for (start, len) in [(0.0, 12.0), (100.0, 25.0), (200.0, 3.0)] {
        let e = [Episode {
            kind: EpisodeKind::Blocked,
            start,
            end: Some(start + len),
        }];
        let mut t = tick(unit(start + len + 1.0, GIB / 4, 0.0));
        t.stall.episodes = &e;
        d.on_tick(start + len + 1.0, &[t], None);
    }
    let info = d.stall_info("alice", 300.0);
    assert_eq!((info.last_hour_warning, info.last_hour_disconnect), (1, 1));
    assert_eq!(info.recent.len(), 3, "short ones >= 1 s are listed");
    assert_eq!(info.recent[0].start, 200.0, "newest first");
    let info = d.stall_info("alice", 3613.0);
    assert_eq!((info.last_hour_warning, info.last_hour_disconnect), (0, 1));
}

#[test]
fn short_windows_are_not_events_but_long_ones_are_kept() {
    let (mut d, _k) = detectors(Mode::Observe, true, RecordingKiller::default());
    let eps = [
        Episode {
            kind: EpisodeKind::Runqueue,
            start: 10.0,
            end: Some(10.3),
        },
        Episode {
            kind: EpisodeKind::Runqueue,
            start: 20.0,
            end: Some(22.0),
        },
    ];
    let mut t = tick(unit(30.0, GIB, 0.0));
    t.stall.episodes = &eps;
    let ev = d.on_tick(30.0, &[t], None);
    let windows: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            EventBody::StallWindow(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(windows.len(), 1, "{ev:?}");
    assert_eq!(windows[0].cause, Cause::Cpu);
    assert_eq!(d.recent("alice").count(), 1);
}
