//! Tests of `outputs::metrics`: every spec name exported, a stopped
//! unit's series removed, counters following the kernel's totals, unit
//! series through the kept handles.

use super::*;

fn feed_everything(m: &Metrics, user: &str) {
    m.add_unit(user, &format!("t3-serve@{user}.service"));
    m.record_stall_window(user, Class::Disconnect, Cause::Memory, 25.0);
    m.set_serve_stall(user, 3.5);
    m.inc_oom_kill(user, OomScope::Memcg);
    m.inc_runaway_action(user, "killed");
    let mut counts = vec![0u64; 20];
    counts[12] = 3;
    counts[15] = 1;
    m.set_sched_histogram(SchedHistogram::RunqueueWait, user, &counts, 0.05);
    m.set_sched_histogram(SchedHistogram::Blocked, user, &counts, 0.05);
    for v in [
        &m.memory_current,
        &m.memory_max,
        &m.memory_high,
        &m.memory_peak,
        &m.memory_anon,
        &m.memory_file,
    ] {
        v.with_label_values(&[user]).set(1);
    }
    for v in [
        &m.memory_waiting,
        &m.io_waiting,
        &m.cpu_waiting,
        &m.memory_stalled,
        &m.io_stalled,
    ] {
        set_total(v, &mut None, &[user], 1.5);
    }
    m.growth.with_label_values(&[user]).set(1.0);
    m.time_to_max.with_label_values(&[user]).set(1.0);
    set_int_counter(&m.memory_events, &[user, "oom_kill"], 2);
}

#[test]
fn all_spec_names_are_exported() {
    let m = Metrics::new("9.9.9").expect("metrics");
    feed_everything(&m, "alice");
    m.observe_sample_duration(0.001);
    m.set_read_errors(&BTreeMap::from([("memory.stat".to_string(), 2)]));
    let text = m.render();
    for name in SPEC_METRIC_NAMES {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from\n{text}"
        );
    }
    assert!(text.contains("t3pressure_build_info{version=\"9.9.9\"} 1"));
    assert!(text.contains("t3pressure_read_errors_total{file=\"memory.stat\"} 2"));
    assert!(text.contains(
        "t3pressure_stall_windows_total{cause=\"memory\",class=\"disconnect\",user=\"alice\"} 1"
    ));
    assert!(text.contains("t3pressure_stall_window_seconds_bucket{user=\"alice\",le=\"30\"} 1"));
    // log2 buckets: 3 episodes <= 2^12 us, 1 more <= 2^15 us.
    assert!(
        text.contains(
            "t3pressure_sched_runqueue_wait_seconds_bucket{user=\"alice\",le=\"0.004096\"} 3"
        ),
        "{text}"
    );
    assert!(text.contains("t3pressure_sched_blocked_seconds_count{user=\"alice\"} 4"));
}

#[test]
fn removing_a_unit_removes_every_series_of_its_user() {
    let m = Metrics::new("1").expect("metrics");
    feed_everything(&m, "alice");
    feed_everything(&m, "bob");
    m.remove_unit("alice", "t3-serve@alice.service");
    let text = m.render();
    assert!(!text.contains("user=\"alice\""), "alice left in\n{text}");
    assert!(text.contains("user=\"bob\""));
}

#[test]
fn counters_follow_kernel_totals_and_survive_a_reset() {
    let m = Metrics::new("1").expect("metrics");
    let mut kept = None;
    set_total(&m.memory_waiting, &mut kept, &["a"], 5.0);
    set_total(&m.memory_waiting, &mut kept, &["a"], 7.5);
    assert_eq!(m.memory_waiting.with_label_values(&["a"]).get(), 7.5);
    set_total(&m.memory_waiting, &mut kept, &["a"], 1.0);
    assert_eq!(m.memory_waiting.with_label_values(&["a"]).get(), 1.0);
    // The handle kept after the reset is the registered series.
    set_total(&m.memory_waiting, &mut kept, &["a"], 3.0);
    assert_eq!(m.memory_waiting.with_label_values(&["a"]).get(), 3.0);
}

/// A unit at `current` bytes of 1000 (memory.high `max`, no growth yet).
fn state(user: &str, current: u64, high: Option<u64>, waited_us: u64) -> UnitState {
    use crate::model::sample::{Limit, MemoryEvents, Psi, PsiLine, Unit, UnitSample};
    use std::time::{Duration, Instant, SystemTime};
    let unit = Unit {
        name: format!("t3-serve@{user}.service"),
        user: user.into(),
        path: format!("/cg/t3-serve@{user}.service").into(),
        cgroup_id: 1,
        level: 1,
    };
    let mut u = UnitState::new(unit, Duration::from_secs(1), Instant::now());
    let mut s = UnitSample::empty(Instant::now(), SystemTime::now());
    s.memory_current = Some(current);
    s.memory_max = Some(Limit::Bytes(1000));
    s.memory_high = Some(high.map_or(Limit::Max, Limit::Bytes));
    s.memory_events = Some(MemoryEvents {
        high: 4,
        ..Default::default()
    });
    s.memory_pressure = Some(Psi {
        some: PsiLine {
            total_us: waited_us,
            ..Default::default()
        },
        full: None,
    });
    u.update(s, None);
    u
}

/// The series set through kept handles are the registered ones, across
/// a removed value, a counter reset and a unit removed and added again.
#[test]
fn unit_series_through_kept_handles() {
    let m = Metrics::new("1").expect("metrics");
    m.add_unit("a", "t3-serve@a.service");
    m.update_unit(&state("a", 100, Some(900), 2_000_000));
    m.update_unit(&state("a", 200, Some(900), 3_000_000));
    let text = m.render();
    assert!(text.contains("t3pressure_memory_current_bytes{user=\"a\"} 200"));
    assert!(text.contains("t3pressure_memory_high_bytes{user=\"a\"} 900"));
    assert!(text.contains("t3pressure_pressure_memory_waiting_seconds_total{user=\"a\"} 3"));
    assert!(
        text.contains("t3pressure_memory_events_total{event=\"high\",user=\"a\"} 4"),
        "{text}"
    );
    // memory.high back to max: the series goes; set again: back.
    m.update_unit(&state("a", 200, None, 3_000_000));
    assert!(!m.render().contains("t3pressure_memory_high_bytes{"));
    m.update_unit(&state("a", 300, Some(800), 500_000));
    let text = m.render();
    assert!(text.contains("t3pressure_memory_high_bytes{user=\"a\"} 800"));
    assert!(
        text.contains("t3pressure_pressure_memory_waiting_seconds_total{user=\"a\"} 0.5"),
        "restarted: {text}"
    );
    m.update_unit(&state("a", 300, Some(800), 1_500_000));
    assert!(m
        .render()
        .contains("t3pressure_pressure_memory_waiting_seconds_total{user=\"a\"} 1.5"));
    m.remove_unit("a", "t3-serve@a.service");
    assert!(!m.render().contains("user=\"a\""));
    m.add_unit("a", "t3-serve@a.service");
    m.update_unit(&state("a", 400, Some(700), 1_000_000));
    let text = m.render();
    assert!(text.contains("t3pressure_memory_current_bytes{user=\"a\"} 400"));
    assert!(text.contains("t3pressure_memory_high_bytes{user=\"a\"} 700"));
    assert!(text.contains("t3pressure_pressure_memory_waiting_seconds_total{user=\"a\"} 1"));
}
