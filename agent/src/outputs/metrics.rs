//! Prometheus metrics: a dedicated registry with every name of the spec's
//! table (the contract alert rules use), updated from the model once per
//! sampling pass, with small recording methods for the parts that detect
//! stalls, OOM kills and runaways. Series of a stopped unit are removed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use prometheus::core::{Atomic, GenericCounter, GenericCounterVec, GenericGauge, GenericGaugeVec};
use prometheus::{
    Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::log2_histogram::Log2Histograms;
use crate::model::event::{Cause, Class, OomScope};
use crate::model::state::UnitState;

const MEMORY_EVENTS: [&str; 6] = ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"];
const CLASSES: [Class; 2] = [Class::Warning, Class::Disconnect];
const CAUSES: [Cause; 3] = [Cause::Memory, Cause::Io, Cause::Cpu];
const SCOPES: [OomScope; 2] = [OomScope::Memcg, OomScope::Global];
/// `action` label values of `t3pressure_runaway_actions_total`.
pub const ACTIONS: [&str; 3] = ["observed", "killed", "failed"];

/// Which scheduler histogram (both fed from BPF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedHistogram {
    /// `t3pressure_sched_runqueue_wait_seconds`
    RunqueueWait,
    /// `t3pressure_sched_blocked_seconds` (D state)
    Blocked,
}

/// A user's series that `update_unit` sets each pass, looked up once and
/// kept: `with_label_values` hashes the label values and takes the vec's
/// lock, 17 times per unit per pass before. `None`: the series is not there
/// (not set yet, or removed because the value is unknown). Only
/// `update_unit` and `remove_unit` create or remove these series, so a kept
/// handle is always the registered one.
#[derive(Default)]
struct UnitSeries {
    /// memory current, max, high, peak, anon, file.
    memory: [Option<IntGauge>; 6],
    /// `MEMORY_EVENTS` order.
    events: [Option<IntCounter>; 6],
    /// memory, io, cpu waiting; memory, io stalled.
    pressure: [Option<Counter>; 5],
    growth: Option<Gauge>,
    time_to_max: Option<Gauge>,
}

/// All metrics. Cheap to share (`Arc<Metrics>`): every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    unit_info: IntGaugeVec,
    memory_current: IntGaugeVec,
    memory_max: IntGaugeVec,
    memory_high: IntGaugeVec,
    memory_peak: IntGaugeVec,
    memory_anon: IntGaugeVec,
    memory_file: IntGaugeVec,
    memory_events: IntCounterVec,
    memory_waiting: CounterVec,
    io_waiting: CounterVec,
    cpu_waiting: CounterVec,
    memory_stalled: CounterVec,
    io_stalled: CounterVec,
    growth: GaugeVec,
    time_to_max: GaugeVec,
    runqueue_wait: Log2Histograms,
    blocked: Log2Histograms,
    serve_stall: GaugeVec,
    stall_window: HistogramVec,
    stall_windows: IntCounterVec,
    oom_kills: IntCounterVec,
    runaway_actions: IntCounterVec,
    bpf_loaded: IntGauge,
    units_watched: IntGauge,
    sample_duration: Histogram,
    sample_interval: prometheus::Gauge,
    read_errors: IntCounterVec,
    /// By user.
    unit_series: Mutex<HashMap<String, UnitSeries>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

macro_rules! reg {
    ($r:expr, $m:expr) => {{
        let m = $m?;
        $r.register(Box::new(m.clone()))?;
        m
    }};
}

impl Metrics {
    pub fn new(version: &str) -> prometheus::Result<Self> {
        let r = Registry::new();
        let user = &["user"];
        let ig = |n: &str, h: &str| IntGaugeVec::new(Opts::new(n, h), user);
        let cnt = |n: &str, h: &str| CounterVec::new(Opts::new(n, h), user);
        let build_info = reg!(
            r,
            IntGaugeVec::new(
                Opts::new("t3pressure_build_info", "Agent version; always 1"),
                &["version"]
            )
        );
        build_info.with_label_values(&[version]).set(1);
        let runqueue_wait = Log2Histograms::new(
            "t3pressure_sched_runqueue_wait_seconds",
            "Run-queue wait episodes of the unit's tasks (from BPF), seconds",
        )?;
        let blocked = Log2Histograms::new(
            "t3pressure_sched_blocked_seconds",
            "Uninterruptible sleep (D state) episodes of the unit's tasks (from BPF), seconds",
        )?;
        let m = Metrics {
            unit_info: reg!(
                r,
                IntGaugeVec::new(
                    Opts::new("t3pressure_unit_info", "A watched unit; always 1"),
                    &["user", "unit"]
                )
            ),
            memory_current: reg!(r, ig("t3pressure_memory_current_bytes", "memory.current")),
            memory_max: reg!(
                r,
                ig(
                    "t3pressure_memory_max_bytes",
                    "memory.max (absent when unlimited)"
                )
            ),
            memory_high: reg!(
                r,
                ig(
                    "t3pressure_memory_high_bytes",
                    "memory.high (absent when unlimited)"
                )
            ),
            memory_peak: reg!(r, ig("t3pressure_memory_peak_bytes", "memory.peak")),
            memory_anon: reg!(r, ig("t3pressure_memory_anon_bytes", "memory.stat anon")),
            memory_file: reg!(r, ig("t3pressure_memory_file_bytes", "memory.stat file")),
            memory_events: reg!(
                r,
                IntCounterVec::new(
                    Opts::new("t3pressure_memory_events_total", "memory.events counters"),
                    &["user", "event"]
                )
            ),
            memory_waiting: reg!(
                r,
                cnt(
                    "t3pressure_pressure_memory_waiting_seconds_total",
                    "memory.pressure some total, seconds"
                )
            ),
            io_waiting: reg!(
                r,
                cnt(
                    "t3pressure_pressure_io_waiting_seconds_total",
                    "io.pressure some total, seconds"
                )
            ),
            cpu_waiting: reg!(
                r,
                cnt(
                    "t3pressure_pressure_cpu_waiting_seconds_total",
                    "cpu.pressure some total, seconds"
                )
            ),
            memory_stalled: reg!(
                r,
                cnt(
                    "t3pressure_pressure_memory_stalled_seconds_total",
                    "memory.pressure full total, seconds"
                )
            ),
            io_stalled: reg!(
                r,
                cnt(
                    "t3pressure_pressure_io_stalled_seconds_total",
                    "io.pressure full total, seconds"
                )
            ),
            growth: reg!(
                r,
                GaugeVec::new(
                    Opts::new(
                        "t3pressure_memory_growth_bytes_per_second",
                        "Robust slope of memory.current"
                    ),
                    user
                )
            ),
            time_to_max: reg!(
                r,
                GaugeVec::new(
                    Opts::new(
                        "t3pressure_memory_time_to_max_seconds",
                        "Time to memory.max at the current growth (absent when not growing)"
                    ),
                    user
                )
            ),
            serve_stall: reg!(
                r,
                GaugeVec::new(
                    Opts::new(
                        "t3pressure_serve_stall_seconds",
                        "Ongoing stall window of the serve's event loop so far, 0 if none"
                    ),
                    user
                )
            ),
            stall_window: reg!(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "t3pressure_stall_window_seconds",
                        "Closed stall windows, seconds"
                    )
                    .buckets(vec![1.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0]),
                    user
                )
            ),
            stall_windows: reg!(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "t3pressure_stall_windows_total",
                        "Stall windows by class (warning|disconnect) and cause"
                    ),
                    &["user", "class", "cause"]
                )
            ),
            oom_kills: reg!(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "t3pressure_oom_kills_total",
                        "OOM kills of the unit's processes by scope (memcg|global)"
                    ),
                    &["user", "scope"]
                )
            ),
            runaway_actions: reg!(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "t3pressure_runaway_actions_total",
                        "Runaway decisions by action (observed|killed|failed)"
                    ),
                    &["user", "action"]
                )
            ),
            bpf_loaded: reg!(
                r,
                IntGauge::new(
                    "t3pressure_bpf_loaded",
                    "1 when the eBPF programs are loaded"
                )
            ),
            units_watched: reg!(
                r,
                IntGauge::new("t3pressure_units_watched", "Units matching the unit glob")
            ),
            sample_duration: reg!(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "t3pressure_sample_duration_seconds",
                        "Wall time of one sampling pass"
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0
                    ])
                )
            ),
            sample_interval: reg!(
                r,
                prometheus::Gauge::new(
                    "t3pressure_sample_interval_seconds",
                    "Achieved time between the last two normal-rate sampling passes"
                )
            ),
            read_errors: reg!(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "t3pressure_read_errors_total",
                        "Unreadable or malformed files by file name"
                    ),
                    &["file"]
                )
            ),
            runqueue_wait,
            blocked,
            registry: r,
            unit_series: Mutex::default(),
        };
        m.registry.register(Box::new(m.runqueue_wait.clone()))?;
        m.registry.register(Box::new(m.blocked.clone()))?;
        Ok(m)
    }

    /// The registry, for tests and for adding collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text format of everything.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }

    /// A unit appeared: info series and zeroed counters, so `rate()` and
    /// `increase()` work from the first window.
    pub fn add_unit(&self, user: &str, unit: &str) {
        self.unit_info.with_label_values(&[user, unit]).set(1);
        for class in CLASSES {
            for cause in CAUSES {
                self.stall_windows
                    .with_label_values(&[user, class.as_str(), cause.as_str()]);
            }
        }
        for scope in SCOPES {
            self.oom_kills.with_label_values(&[user, scope.as_str()]);
        }
        for action in ACTIONS {
            self.runaway_actions.with_label_values(&[user, action]);
        }
        self.serve_stall.with_label_values(&[user]).set(0.0);
    }

    /// A unit stopped: every series with its user label goes.
    pub fn remove_unit(&self, user: &str, unit: &str) {
        self.unit_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(user);
        let _ = self.unit_info.remove_label_values(&[user, unit]);
        for v in [
            &self.memory_current,
            &self.memory_max,
            &self.memory_high,
            &self.memory_peak,
            &self.memory_anon,
            &self.memory_file,
        ] {
            let _ = v.remove_label_values(&[user]);
        }
        for v in [
            &self.memory_waiting,
            &self.io_waiting,
            &self.cpu_waiting,
            &self.memory_stalled,
            &self.io_stalled,
        ] {
            let _ = v.remove_label_values(&[user]);
        }
        for v in [&self.growth, &self.time_to_max, &self.serve_stall] {
            let _ = v.remove_label_values(&[user]);
        }
        let _ = self.stall_window.remove_label_values(&[user]);
        for e in MEMORY_EVENTS {
            let _ = self.memory_events.remove_label_values(&[user, e]);
        }
        for class in CLASSES {
            for cause in CAUSES {
                let _ =
                    self.stall_windows
                        .remove_label_values(&[user, class.as_str(), cause.as_str()]);
            }
        }
        for scope in SCOPES {
            let _ = self.oom_kills.remove_label_values(&[user, scope.as_str()]);
        }
        for action in ACTIONS {
            let _ = self.runaway_actions.remove_label_values(&[user, action]);
        }
        self.runqueue_wait.remove(user);
        self.blocked.remove(user);
    }

    /// Sets the per-unit series from the unit's latest sample and rates.
    pub fn update_unit(&self, u: &UnitState) {
        let user = u.unit.user.as_str();
        let Some(s) = &u.latest else { return };
        let mut all = self
            .unit_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !all.contains_key(user) {
            all.insert(user.to_string(), UnitSeries::default());
        }
        let Some(h) = all.get_mut(user) else { return };
        let memory = [
            (&self.memory_current, s.memory_current),
            (&self.memory_max, s.memory_max.and_then(|l| l.bytes())),
            (&self.memory_high, s.memory_high.and_then(|l| l.bytes())),
            (&self.memory_peak, s.memory_peak),
            (&self.memory_anon, s.memory_stat.map(|m| m.anon)),
            (&self.memory_file, s.memory_stat.map(|m| m.file)),
        ];
        for ((v, x), slot) in memory.into_iter().zip(&mut h.memory) {
            set_gauge(v, slot, user, x.map(to_i64));
        }
        if let Some(ev) = s.memory_events {
            let values = [
                ev.low,
                ev.high,
                ev.max,
                ev.oom,
                ev.oom_kill,
                ev.oom_group_kill,
            ];
            for ((name, v), slot) in MEMORY_EVENTS.iter().zip(values).zip(&mut h.events) {
                set_total(&self.memory_events, slot, &[user, name], v);
            }
        }
        let secs = |us: u64| us as f64 / 1e6;
        let pressure = [
            (&self.memory_waiting, s.memory_pressure.map(|p| p.some)),
            (&self.io_waiting, s.io_pressure.map(|p| p.some)),
            (&self.cpu_waiting, s.cpu_pressure.map(|p| p.some)),
            (&self.memory_stalled, s.memory_pressure.and_then(|p| p.full)),
            (&self.io_stalled, s.io_pressure.and_then(|p| p.full)),
        ];
        for ((v, line), slot) in pressure.into_iter().zip(&mut h.pressure) {
            if let Some(l) = line {
                set_total(v, slot, &[user], secs(l.total_us));
            }
        }
        set_gauge(
            &self.growth,
            &mut h.growth,
            user,
            u.growth_bytes_per_second(),
        );
        set_gauge(
            &self.time_to_max,
            &mut h.time_to_max,
            user,
            u.time_to_max_seconds(),
        );
    }

    pub fn set_units_watched(&self, n: usize) {
        self.units_watched.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn observe_sample_duration(&self, seconds: f64) {
        self.sample_duration.observe(seconds);
    }

    pub fn set_sample_interval(&self, seconds: f64) {
        self.sample_interval.set(seconds);
    }

    /// Mirrors the sampler's per-file error totals.
    pub fn set_read_errors(&self, counts: &BTreeMap<String, u64>) {
        for (file, n) in counts {
            set_int_counter(&self.read_errors, &[file], *n);
        }
    }

    // HOOK(detectors): stall windows.
    /// A closed stall window (class warning or disconnect; short ones are
    /// only observed in the histogram).
    pub fn record_stall_window(&self, user: &str, class: Class, cause: Cause, seconds: f64) {
        self.stall_window
            .with_label_values(&[user])
            .observe(seconds);
        if class != Class::Short {
            self.stall_windows
                .with_label_values(&[user, class.as_str(), cause.as_str()])
                .inc();
        }
    }

    /// The ongoing window so far (0 if none).
    pub fn set_serve_stall(&self, user: &str, seconds: f64) {
        self.serve_stall.with_label_values(&[user]).set(seconds);
    }

    // HOOK(bpf): OOM kills seen by `oom:mark_victim`.
    pub fn inc_oom_kill(&self, user: &str, scope: OomScope) {
        self.oom_kills
            .with_label_values(&[user, scope.as_str()])
            .inc();
    }

    // HOOK(actions): runaway decisions; `action` is one of `ACTIONS`.
    pub fn inc_runaway_action(&self, user: &str, action: &str) {
        self.runaway_actions
            .with_label_values(&[user, action])
            .inc();
    }

    pub fn set_bpf_loaded(&self, loaded: bool) {
        self.bpf_loaded.set(i64::from(loaded));
    }

    // HOOK(bpf): per-user scheduler histograms from the BPF maps' log2
    // buckets (see `log2_histogram::Log2Histograms::set` for the layout).
    pub fn set_sched_histogram(
        &self,
        which: SchedHistogram,
        user: &str,
        log2_counts: &[u64],
        sum_seconds: f64,
    ) {
        match which {
            SchedHistogram::RunqueueWait => self.runqueue_wait.set(user, log2_counts, sum_seconds),
            SchedHistogram::Blocked => self.blocked.set(user, log2_counts, sum_seconds),
        }
    }
}

fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

/// Sets a user's gauge through its kept handle (made on first use); an
/// unknown value removes the series.
fn set_gauge<P: Atomic>(
    v: &GenericGaugeVec<P>,
    kept: &mut Option<GenericGauge<P>>,
    user: &str,
    x: Option<P::T>,
) {
    match x {
        Some(x) => kept
            .get_or_insert_with(|| v.with_label_values(&[user]))
            .set(x),
        None => {
            if kept.take().is_some() {
                let _ = v.remove_label_values(&[user]);
            }
        }
    }
}

/// Sets a counter to a kernel total through its kept handle (made on first
/// use). A total that went backwards (a new cgroup under the same name)
/// restarts the series, with a new handle.
fn set_total<P: Atomic>(
    v: &GenericCounterVec<P>,
    kept: &mut Option<GenericCounter<P>>,
    labels: &[&str],
    total: P::T,
) {
    let c = kept.get_or_insert_with(|| v.with_label_values(labels));
    let cur = c.get();
    if total >= cur {
        let mut delta = total;
        delta -= cur;
        c.inc_by(delta);
    } else {
        let _ = v.remove_label_values(labels);
        let fresh = v.with_label_values(labels);
        fresh.inc_by(total);
        *kept = Some(fresh);
    }
}

fn set_int_counter(v: &IntCounterVec, labels: &[&str], total: u64) {
    let c = v.with_label_values(labels);
    let cur = c.get();
    if total >= cur {
        c.inc_by(total - cur);
    } else {
        let _ = v.remove_label_values(labels);
        v.with_label_values(labels).inc_by(total);
    }
}

/// Every metric name of the spec's table (the contract alert rules and
/// dashboards use); tests check the registry and deploy/ against it.
pub const SPEC_METRIC_NAMES: &[&str] = &[
    "t3pressure_unit_info",
    "t3pressure_memory_current_bytes",
    "t3pressure_memory_max_bytes",
    "t3pressure_memory_high_bytes",
    "t3pressure_memory_peak_bytes",
    "t3pressure_memory_anon_bytes",
    "t3pressure_memory_file_bytes",
    "t3pressure_memory_events_total",
    "t3pressure_pressure_memory_waiting_seconds_total",
    "t3pressure_pressure_io_waiting_seconds_total",
    "t3pressure_pressure_cpu_waiting_seconds_total",
    "t3pressure_pressure_memory_stalled_seconds_total",
    "t3pressure_pressure_io_stalled_seconds_total",
    "t3pressure_memory_growth_bytes_per_second",
    "t3pressure_memory_time_to_max_seconds",
    "t3pressure_sched_runqueue_wait_seconds",
    "t3pressure_sched_blocked_seconds",
    "t3pressure_serve_stall_seconds",
    "t3pressure_stall_window_seconds",
    "t3pressure_stall_windows_total",
    "t3pressure_oom_kills_total",
    "t3pressure_runaway_actions_total",
    "t3pressure_bpf_loaded",
    "t3pressure_units_watched",
    "t3pressure_sample_duration_seconds",
    "t3pressure_read_errors_total",
    "t3pressure_build_info",
];

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
