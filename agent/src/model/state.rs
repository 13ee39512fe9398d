//! Per-unit state: the latest and previous raw samples, derived rates and
//! growth slopes, and the unit's sampling schedule (a per-unit "next due"
//! time, so a detector can ask for faster sampling of one unit). Plus host
//! figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::growth::{ProcGrowth, Series};
use crate::model::rates::{time_to_max, PressureShares};
use crate::model::sample::{HostSample, ProcSample, Unit, UnitSample};
use crate::model::serve::{find_serve, ServeMatcher};

/// One watched unit.
#[derive(Debug, Clone)]
pub struct UnitState {
    /// Shared with each pass's list of due units (no copy of its strings).
    pub unit: Arc<Unit>,
    /// `None` until the first pass over the unit.
    pub latest: Option<UnitSample>,
    /// The sample before `latest`, without its processes (moved on).
    pub previous: Option<UnitSample>,
    /// Stall shares over the last interval.
    pub pressure: PressureShares,
    /// memory.current over recent samples (bytes).
    pub memory_series: Series,
    /// Per-process anon RSS over recent samples.
    pub proc_growth: ProcGrowth,
    /// The unit's main process: in the unit, parent outside it.
    pub serve_pid: Option<i32>,
    /// Current sampling interval of this unit.
    pub interval: Duration,
    pub next_due: Instant,
    /// Time between the last two samples (the achieved interval).
    pub achieved_interval: Option<Duration>,
    /// Passes since the processes were last read.
    pub passes_since_procs: u32,
}

/// A quiet unit's processes are read every this many passes only.
pub const QUIET_PROCS_EVERY: u32 = 5;
/// A unit using at least this share of its memory.max is not quiet.
pub const BUSY_USAGE_SHARE: f64 = 0.5;
/// A unit growing at least this fast (bytes/s) is not quiet.
pub const BUSY_GROWTH_BPS: f64 = 1024.0 * 1024.0;

impl UnitState {
    pub fn new(unit: Unit, interval: Duration, now: Instant) -> Self {
        UnitState {
            unit: Arc::new(unit),
            latest: None,
            previous: None,
            pressure: PressureShares::default(),
            memory_series: Series::default(),
            proc_growth: ProcGrowth::default(),
            serve_pid: None,
            interval,
            next_due: now,
            achieved_interval: None,
            passes_since_procs: 0,
        }
    }

    /// Whether the next pass should read the unit's processes: always for a
    /// unit near its limit, growing, or sampled fast; every
    /// `QUIET_PROCS_EVERY` passes for a quiet one (reading every process
    /// and the unit's detail files is most of a pass's cost).
    pub fn wants_procs(&self, normal_interval: Duration) -> bool {
        let Some(s) = &self.latest else { return true };
        if self.passes_since_procs + 1 >= QUIET_PROCS_EVERY || self.interval < normal_interval {
            return true;
        }
        let near = match (s.memory_current, s.memory_max.and_then(|l| l.bytes())) {
            (Some(cur), Some(max)) if max > 0 => cur as f64 >= BUSY_USAGE_SHARE * max as f64,
            _ => false,
        };
        let growing = self
            .growth_bytes_per_second()
            .is_some_and(|g| g >= BUSY_GROWTH_BPS);
        near || growing
    }

    /// Takes in a new sample and derives the rates.
    pub fn update(&mut self, mut sample: UnitSample, matcher: Option<&ServeMatcher>) {
        let mut prev = self.latest.take();
        if let Some(prev) = prev.as_mut() {
            // Moved, not copied: `previous` keeps no process list.
            let procs = std::mem::take(&mut prev.procs);
            if sample.procs_skipped {
                sample.procs = procs;
            }
            if sample.details_skipped {
                sample.memory_peak = prev.memory_peak;
                sample.memory_swap_current = prev.memory_swap_current;
                sample.memory_stat = prev.memory_stat;
                sample.cpu_stat = prev.cpu_stat;
                sample.pids_current = prev.pids_current;
            }
        }
        if let Some(prev) = prev {
            let dt = sample.at.saturating_duration_since(prev.at);
            self.achieved_interval = Some(dt);
            let dt_s = dt.as_secs_f64();
            self.pressure = PressureShares::between(
                [
                    prev.memory_pressure.as_ref(),
                    prev.io_pressure.as_ref(),
                    prev.cpu_pressure.as_ref(),
                ],
                [
                    sample.memory_pressure.as_ref(),
                    sample.io_pressure.as_ref(),
                    sample.cpu_pressure.as_ref(),
                ],
                dt_s,
            );
            self.previous = Some(prev);
        }
        if let Some(cur) = sample.memory_current {
            self.memory_series.push(sample.at, cur);
        }
        if sample.procs_skipped {
            self.passes_since_procs += 1;
        } else {
            self.passes_since_procs = 0;
            self.proc_growth.update(
                sample.at,
                sample
                    .procs
                    .iter()
                    .map(|p| (p.pid, p.start_time, p.rss_anon)),
            );
            self.serve_pid = find_serve(&sample.procs, matcher);
        }
        self.latest = Some(sample);
    }

    /// Robust memory.current growth, bytes per second.
    pub fn growth_bytes_per_second(&self) -> Option<f64> {
        self.memory_series.slope()
    }

    /// Seconds to MemoryMax at the current growth; `None` when not growing
    /// or unlimited.
    pub fn time_to_max_seconds(&self) -> Option<f64> {
        let s = self.latest.as_ref()?;
        time_to_max(
            s.memory_current?,
            s.memory_max,
            self.growth_bytes_per_second(),
        )
    }

    /// Anon growth of one process of the latest sample, bytes per second.
    pub fn proc_anon_growth(&self, p: &ProcSample) -> Option<f64> {
        self.proc_growth.slope(p.pid, p.start_time)
    }
}

/// Host figures: latest, previous, and stall shares.
#[derive(Debug, Clone)]
pub struct HostState {
    pub latest: HostSample,
    pub previous: Option<HostSample>,
    pub pressure: PressureShares,
}

/// Everything the agent knows, owned by the sampling loop.
#[derive(Debug, Default)]
pub struct Model {
    /// Keyed by cgroup path.
    pub units: BTreeMap<PathBuf, UnitState>,
    pub host: Option<HostState>,
    /// `serve_match` from the config: overrides "parent outside the unit".
    pub serve_matcher: Option<ServeMatcher>,
}

impl Model {
    pub fn add_unit(&mut self, unit: Unit, interval: Duration, now: Instant) {
        self.units
            .entry(unit.path.clone())
            .or_insert_with(|| UnitState::new(unit, interval, now));
    }

    pub fn remove_unit(&mut self, path: &Path) -> Option<UnitState> {
        self.units.remove(path)
    }

    /// Units whose next sample is due at `now`.
    pub fn due(&self, now: Instant) -> Vec<Arc<Unit>> {
        self.units
            .values()
            .filter(|u| u.next_due <= now)
            .map(|u| Arc::clone(&u.unit))
            .collect()
    }

    /// Units due at `now`, each with whether to read its processes.
    pub fn due_with_procs(
        &self,
        now: Instant,
        normal_interval: Duration,
    ) -> Vec<(Arc<Unit>, bool)> {
        // Sized for all (most are due each pass): no doubling from 4 up.
        let mut due = Vec::with_capacity(self.units.len());
        due.extend(
            self.units
                .values()
                .filter(|u| u.next_due <= now)
                .map(|u| (Arc::clone(&u.unit), u.wants_procs(normal_interval))),
        );
        due
    }

    /// The earliest next-due time of any unit.
    pub fn next_due(&self) -> Option<Instant> {
        self.units.values().map(|u| u.next_due).min()
    }

    /// Records a unit's sample and schedules its next one, keeping the
    /// phase (no drift) unless it fell more than one interval behind.
    /// Returns the updated state (`None` for a unit not watched), so that
    /// callers need not look it up again.
    pub fn update_unit(
        &mut self,
        path: &Path,
        sample: UnitSample,
        now: Instant,
    ) -> Option<&UnitState> {
        let u = self.units.get_mut(path)?;
        u.update(sample, self.serve_matcher.as_ref());
        let next = u.next_due + u.interval;
        u.next_due = if next <= now { now + u.interval } else { next };
        Some(u)
    }

    /// HOOK(detectors): a detector asks for faster (or normal) sampling of a
    /// unit, e.g. 100 ms when it is near its limit. Takes effect at once if
    /// the new interval makes the unit due sooner.
    pub fn set_interval(&mut self, path: &Path, interval: Duration, now: Instant) {
        if let Some(u) = self.units.get_mut(path) {
            u.interval = interval;
            let sooner = now + interval;
            if sooner < u.next_due {
                u.next_due = sooner;
            }
        }
    }

    pub fn update_host(&mut self, sample: HostSample) {
        let (previous, pressure) = match self.host.take() {
            Some(h) => {
                let dt_s = sample
                    .at
                    .saturating_duration_since(h.latest.at)
                    .as_secs_f64();
                let p = &h.latest;
                let pressure = PressureShares::between(
                    [
                        p.memory_pressure.as_ref(),
                        p.io_pressure.as_ref(),
                        p.cpu_pressure.as_ref(),
                    ],
                    [
                        sample.memory_pressure.as_ref(),
                        sample.io_pressure.as_ref(),
                        sample.cpu_pressure.as_ref(),
                    ],
                    dt_s,
                );
                (Some(h.latest), pressure)
            }
            None => (None, PressureShares::default()),
        };
        self.host = Some(HostState {
            latest: sample,
            previous,
            pressure,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample::{Limit, Psi, PsiLine};
    use std::time::SystemTime;

    fn proc(pid: i32, ppid: i32, start: u64, anon: u64) -> ProcSample {
        ProcSample {
            pid,
            ppid,
            uid: 1000,
            comm: "x".into(),
            argv0: "x".into(),
            rss_anon: anon,
            rss_file: 0,
            rss_shmem: 0,
            state: 'S',
            start_time: start,
            cgroup: "/u".into(),
        }
    }

    fn unit() -> Unit {
        Unit {
            name: "t3-serve@a.service".into(),
            user: "a".into(),
            path: PathBuf::from("/cg/t3-serve@a.service"),
            cgroup_id: 7,
            level: 1,
        }
    }

    #[test]
    fn rates_from_two_samples() {
        let t0 = Instant::now();
        let mut m = Model::default();
        m.add_unit(unit(), Duration::from_secs(1), t0);
        assert_eq!(m.due(t0).len(), 1);
        let path = unit().path;
        for i in 0..3u64 {
            let at = t0 + Duration::from_secs(i);
            let mut s = UnitSample::empty(at, SystemTime::now());
            s.memory_current = Some(1_000_000 + 100_000 * i);
            s.memory_max = Some(Limit::Bytes(2_000_000));
            s.memory_pressure = Some(Psi {
                some: PsiLine {
                    total_us: 400_000 * i,
                    ..Default::default()
                },
                full: None,
            });
            s.procs = vec![proc(10, 1, 3, 1000 * i)];
            m.update_unit(&path, s, at);
        }
        let u = m.units.get(&path).expect("unit");
        assert_eq!(u.pressure.memory.some, Some(0.4));
        assert_eq!(u.growth_bytes_per_second(), Some(100_000.0));
        assert_eq!(u.time_to_max_seconds(), Some(8.0));
        let p = &u.latest.as_ref().expect("latest").procs[0];
        assert_eq!(u.proc_anon_growth(p), Some(1000.0));
        assert_eq!(u.serve_pid, Some(10));
        assert_eq!(u.achieved_interval, Some(Duration::from_secs(1)));
    }

    #[test]
    fn quiet_units_read_processes_every_few_passes() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut m = Model::default();
        m.add_unit(unit(), sec, t0);
        let path = unit().path;
        let mut reads = 0;
        for i in 0..10u32 {
            let at = t0 + sec * i;
            let want = m.due_with_procs(at, sec)[0].1;
            let mut s = UnitSample::empty(at, SystemTime::now());
            s.memory_current = Some(100);
            s.memory_max = Some(Limit::Bytes(1000));
            if want {
                reads += 1;
                s.procs = vec![proc(10, 1, 3, 5)];
            } else {
                s.procs_skipped = true;
            }
            let u = m.update_unit(&path, s, at).expect("unit");
            assert_eq!(
                u.latest.as_ref().expect("latest").procs.len(),
                1,
                "carried over"
            );
        }
        assert_eq!(reads, 2, "first pass and every 5th");
        // Near its limit: every pass.
        let u = m.units.get_mut(&path).expect("unit");
        if let Some(l) = u.latest.as_mut() {
            l.memory_current = Some(600);
        }
        assert!(m.due_with_procs(t0 + sec * 20, sec)[0].1);
    }

    #[test]
    fn skipped_details_and_processes_are_carried_over_not_copied() {
        use crate::model::sample::MemoryStat;
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut m = Model::default();
        m.add_unit(unit(), sec, t0);
        let path = unit().path;
        let mut full = UnitSample::empty(t0, SystemTime::now());
        full.memory_current = Some(100);
        full.memory_stat = Some(MemoryStat {
            anon: 42,
            ..Default::default()
        });
        full.pids_current = Some(3);
        full.memory_peak = Some(200);
        full.procs = vec![proc(10, 1, 3, 5)];
        m.update_unit(&path, full, t0);
        let mut quick = UnitSample::empty(t0 + sec, SystemTime::now());
        quick.memory_current = Some(110);
        quick.procs_skipped = true;
        quick.details_skipped = true;
        m.update_unit(&path, quick, t0 + sec);
        let u = m.units.get(&path).expect("unit");
        let l = u.latest.as_ref().expect("latest");
        assert_eq!(l.memory_current, Some(110), "fresh");
        assert_eq!(l.memory_stat.map(|s| s.anon), Some(42), "carried");
        assert_eq!((l.pids_current, l.memory_peak), (Some(3), Some(200)));
        assert_eq!(l.procs.len(), 1, "carried");
        let prev = u.previous.as_ref().expect("previous");
        assert_eq!(prev.memory_current, Some(100));
        assert!(prev.procs.is_empty(), "moved to latest, not cloned");
    }

    #[test]
    fn faster_interval_makes_a_unit_due_sooner() {
        let t0 = Instant::now();
        let mut m = Model::default();
        m.add_unit(unit(), Duration::from_secs(1), t0);
        let path = unit().path;
        assert!(m
            .update_unit(&path, UnitSample::empty(t0, SystemTime::now()), t0)
            .is_some());
        assert!(
            m.update_unit(
                Path::new("/cg/other"),
                UnitSample::empty(t0, SystemTime::now()),
                t0
            )
            .is_none(),
            "not watched"
        );
        assert_eq!(m.next_due(), Some(t0 + Duration::from_secs(1)));
        m.set_interval(&path, Duration::from_millis(100), t0);
        assert_eq!(m.next_due(), Some(t0 + Duration::from_millis(100)));
        assert!(m.remove_unit(&path).is_some());
        assert_eq!(m.next_due(), None);
    }
}
