//! The runaway catcher's policy: which process to kill, and when, before the
//! unit reaches MemoryMax (or the host runs out), from plain per-tick inputs.
//!
//! Pure: time comes in with the input (seconds of one clock, fractional), so
//! tests drive it with a fake clock. The caller acts on the decisions (see
//! `detectors::Detectors`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::actions::killer::KillTarget;
use crate::config::{Config, RunawayConfig};
use crate::model::event::{ActionKind, Culprit, RunawayAction, RunawayReason};
use crate::model::sample::ProcSample;

/// A unit is sampled fast when MemoryMax is projected within this many
/// horizons (30 s by default): at 2 GB/s on 16 GiB that is from the start.
pub const FAST_HORIZON_FACTOR: f64 = 6.0;
/// Without MemoryMax, "growing fast" means this many bytes per second.
pub const FAST_GROWTH_UNLIMITED: f64 = 200.0 * 1024.0 * 1024.0;
/// A unit input older than this is not used by the host guard.
const HOST_GUARD_MAX_AGE_S: f64 = 5.0;
/// Growth below this (bytes/s) does not make a process the stall culprit.
const CULPRIT_MIN_GROWTH: f64 = 1024.0 * 1024.0;

/// One process of a unit, as the policy needs it. The strings are the
/// sample's, shared (`Arc<str>`): building the input and the policy's copy
/// of every unit's input each pass (`last_input`; cloning `String`s there
/// was ~12 % of the agent's CPU at 100 units) copy reference counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcInput {
    pub pid: i32,
    pub start_time: u64,
    pub comm: Arc<str>,
    pub argv0: Arc<str>,
    pub rss_anon: u64,
    /// Robust slope of anon RSS (bytes/s); `None` until enough samples.
    pub anon_growth: Option<f64>,
    /// Cgroup v2 path from `/proc/PID/cgroup`, re-checked by the killer.
    pub cgroup: Arc<str>,
}

impl ProcInput {
    pub fn from_sample(p: &ProcSample, anon_growth: Option<f64>) -> Self {
        ProcInput {
            pid: p.pid,
            start_time: p.start_time,
            comm: Arc::clone(&p.comm),
            argv0: Arc::clone(&p.argv0),
            rss_anon: p.rss_anon,
            anon_growth,
            cgroup: Arc::clone(&p.cgroup),
        }
    }
}

/// One unit at one tick.
#[derive(Debug, Default, PartialEq)]
pub struct UnitInput {
    pub user: String,
    /// Seconds (the caller's clock; the same clock for every tick).
    pub now: f64,
    pub memory_current: u64,
    /// `None` when unlimited.
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    /// memory `full` share of the last interval (0..1).
    pub memory_full_share: Option<f64>,
    /// Robust slope of memory.current (bytes/s).
    pub growth_bytes_per_second: Option<f64>,
    pub serve_pid: Option<i32>,
    pub procs: Vec<ProcInput>,
}

/// By hand for `clone_from`, which reuses the user's and the process
/// list's buffers: the policy keeps a copy of every unit's input each pass
/// (`last_input`).
impl Clone for UnitInput {
    fn clone(&self) -> Self {
        UnitInput {
            user: self.user.clone(),
            now: self.now,
            memory_current: self.memory_current,
            memory_max: self.memory_max,
            memory_high: self.memory_high,
            memory_full_share: self.memory_full_share,
            growth_bytes_per_second: self.growth_bytes_per_second,
            serve_pid: self.serve_pid,
            procs: self.procs.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.user.clone_from(&source.user);
        self.now = source.now;
        self.memory_current = source.memory_current;
        self.memory_max = source.memory_max;
        self.memory_high = source.memory_high;
        self.memory_full_share = source.memory_full_share;
        self.growth_bytes_per_second = source.growth_bytes_per_second;
        self.serve_pid = source.serve_pid;
        // Vec::clone_from clones element-wise into the existing ones.
        self.procs.clone_from(&source.procs);
    }
}

impl UnitInput {
    /// Seconds until MemoryMax at the current growth; `None` when not
    /// growing or unlimited.
    pub fn time_to_max(&self) -> Option<f64> {
        let max = self.memory_max?;
        let g = self.growth()?;
        (g > 0.0).then(|| max.saturating_sub(self.memory_current) as f64 / g)
    }

    /// The unit's growth, or the sum of its processes' when the unit figure
    /// is not there yet.
    fn growth(&self) -> Option<f64> {
        self.growth_bytes_per_second
            .filter(|g| g.is_finite())
            .or_else(|| {
                let sum: f64 = self
                    .procs
                    .iter()
                    .filter_map(|p| p.anon_growth)
                    .filter(|g| g.is_finite() && *g > 0.0)
                    .sum();
                (sum > 0.0).then_some(sum)
            })
    }

    fn usage(&self) -> Option<f64> {
        let max = self.memory_max.filter(|m| *m > 0)?;
        Some(self.memory_current as f64 / max as f64)
    }
}

/// Host figures for the guard.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostInput {
    /// `/proc/pressure/memory` full avg10, percent.
    pub memory_full_avg10: Option<f64>,
    pub mem_total: Option<u64>,
    pub mem_available: Option<u64>,
}

/// A process the policy decided on, with the figures that justified it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub user: String,
    pub reason: RunawayReason,
    pub target: ProcInput,
    pub memory_current: u64,
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub time_to_max_seconds: Option<f64>,
}

impl Decision {
    pub fn kill_target(&self) -> KillTarget {
        KillTarget {
            pid: self.target.pid,
            start_time: self.target.start_time,
            cgroup: (!self.target.cgroup.is_empty()).then(|| self.target.cgroup.to_string()),
            comm: self.target.comm.to_string(),
        }
    }

    /// The event-log record of what was done about this decision.
    pub fn action(&self, action: ActionKind, error: Option<String>) -> RunawayAction {
        RunawayAction {
            user: self.user.clone(),
            action,
            reason: self.reason,
            pid: self.target.pid,
            comm: self.target.comm.to_string(),
            argv0: self.target.argv0.to_string(),
            start_time: self.target.start_time,
            rss_anon: self.target.rss_anon,
            anon_growth_bytes_per_second: self.target.anon_growth.unwrap_or(0.0),
            memory_current: self.memory_current,
            memory_max: self.memory_max,
            memory_high: self.memory_high,
            time_to_max_seconds: self.time_to_max_seconds,
            error,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct UnitState {
    last_action: Option<f64>,
    livelock_since: Option<f64>,
    last_input: Option<UnitInput>,
}

/// The policy with its per-unit memory (cooldowns, livelock timers).
#[derive(Debug, Clone)]
pub struct RunawayPolicy {
    cfg: RunawayConfig,
    protect: GlobSet,
    normal: Duration,
    fast: Duration,
    units: HashMap<String, UnitState>,
    last_host_action: Option<f64>,
}

impl RunawayPolicy {
    pub fn new(config: &Config) -> Self {
        let mut b = GlobSetBuilder::new();
        for p in &config.runaway.protect {
            // Invalid globs are rejected by Config::validate.
            if let Ok(g) = Glob::new(p) {
                b.add(g);
            }
        }
        RunawayPolicy {
            cfg: config.runaway.clone(),
            protect: b.build().unwrap_or_else(|_| GlobSet::empty()),
            normal: config.sample_interval(),
            fast: config.fast_sample_interval(),
            units: HashMap::new(),
            last_host_action: None,
        }
    }

    /// Never a runaway: the serve process, and the protect list on comm,
    /// argv[0] or argv[0]'s file name.
    pub fn is_protected(&self, unit: &UnitInput, p: &ProcInput) -> bool {
        if unit.serve_pid == Some(p.pid) {
            return true;
        }
        let base = p.argv0.rsplit('/').next().unwrap_or(&p.argv0);
        self.protect.is_match(&*p.comm)
            || (!p.argv0.is_empty()
                && (self.protect.is_match(&*p.argv0) || self.protect.is_match(base)))
    }

    /// The unit's largest anon consumer that is not protected.
    pub fn candidate<'a>(&self, unit: &'a UnitInput) -> Option<&'a ProcInput> {
        unit.procs
            .iter()
            .filter(|p| p.rss_anon > 0 && !self.is_protected(unit, p))
            .max_by_key(|p| (p.rss_anon, std::cmp::Reverse(p.pid)))
    }

    fn in_cooldown(&self, user: &str, now: f64) -> bool {
        self.units
            .get(user)
            .and_then(|s| s.last_action)
            .is_some_and(|t| now - t < self.cfg.cooldown_seconds)
    }

    /// The per-unit rules. A returned decision starts the unit's cooldown
    /// (whatever the caller then does: observe, kill, or fail).
    pub fn decide(&mut self, unit: &UnitInput) -> Option<Decision> {
        let livelocked = self.track_livelock(unit);
        let state = self.units.entry(unit.user.clone()).or_default();
        match &mut state.last_input {
            Some(last) => last.clone_from(unit),
            None => state.last_input = Some(unit.clone()),
        }
        if self.in_cooldown(&unit.user, unit.now) {
            return None;
        }
        let reason = self.reason(unit, livelocked)?;
        let target = self.candidate(unit)?.clone();
        self.start_cooldown(&unit.user, unit.now);
        Some(decision(unit, target, reason))
    }

    fn reason(&self, unit: &UnitInput, livelocked: bool) -> Option<RunawayReason> {
        let usage = unit.usage();
        if usage.is_some_and(|u| u >= self.cfg.kill_threshold) {
            return Some(RunawayReason::KillThreshold);
        }
        let projected = unit
            .time_to_max()
            .is_some_and(|t| t <= self.cfg.horizon_seconds);
        if projected && usage.is_some_and(|u| u >= self.cfg.watch_threshold) {
            return Some(RunawayReason::Projected);
        }
        livelocked.then_some(RunawayReason::Livelock)
    }

    /// Between memory.high and memory.max under `full` memory pressure for
    /// `livelock_seconds`: the kernel throttles the unit forever.
    fn track_livelock(&mut self, unit: &UnitInput) -> bool {
        let between = match (unit.memory_high, unit.memory_max) {
            (Some(high), max) => unit.memory_current >= high && max.is_none_or(|m| high < m),
            (None, _) => false,
        };
        let pressed = unit
            .memory_full_share
            .is_some_and(|s| s >= self.cfg.livelock_full_share);
        let state = self.units.entry(unit.user.clone()).or_default();
        if between && pressed {
            let since = *state.livelock_since.get_or_insert(unit.now);
            unit.now - since >= self.cfg.livelock_seconds
        } else {
            state.livelock_since = None;
            false
        }
    }

    /// Host memory `full` avg10 high or MemAvailable low: the largest
    /// candidate across all units (their latest inputs), one per cooldown.
    pub fn host_guard(&mut self, now: f64, host: &HostInput) -> Option<Decision> {
        let pressured = host
            .memory_full_avg10
            .is_some_and(|a| a >= self.cfg.host_full_avg10);
        let short = match (host.mem_available, host.mem_total) {
            (Some(a), Some(t)) if t > 0 => (a as f64) < self.cfg.host_min_available * t as f64,
            _ => false,
        };
        if !(pressured || short) {
            return None;
        }
        if !short && self.pressure_is_units_own_livelock(now) {
            return None;
        }
        if self
            .last_host_action
            .is_some_and(|t| now - t < self.cfg.cooldown_seconds)
        {
            return None;
        }
        let best = self
            .units
            .iter()
            .filter(|(user, _)| !self.in_cooldown(user, now))
            .filter_map(|(_, s)| s.last_input.as_ref())
            .filter(|u| now - u.now <= HOST_GUARD_MAX_AGE_S)
            .filter_map(|u| self.candidate(u).map(|p| (u, p)))
            .max_by_key(|(u, p)| (p.rss_anon, std::cmp::Reverse(u.user.clone())))
            .map(|(u, p)| (u.clone(), p.clone()))?;
        let (unit, target) = best;
        self.start_cooldown(&unit.user, now);
        self.last_host_action = Some(now);
        Some(decision(&unit, target, RunawayReason::HostGuard))
    }

    /// Whether the host's `full` pressure is explained by units stuck
    /// between their own memory.high and memory.max: every unit whose
    /// latest `full` share is high is on its livelock timer (and at least
    /// one is). The kernel's throttling of that unit stalls its tasks and
    /// so the host's average, while the host is not short of memory (the
    /// caller checks) and other units are not stalled: the livelock rule
    /// owns the case and acts within `livelock_seconds`, under its own
    /// name. Seen in the VM: the host guard fired 9.8 s into such a band,
    /// just before the livelock rule, and logged `host_guard`.
    fn pressure_is_units_own_livelock(&self, now: f64) -> bool {
        let mut any = false;
        for s in self.units.values() {
            let Some(u) = s
                .last_input
                .as_ref()
                .filter(|u| now - u.now <= HOST_GUARD_MAX_AGE_S)
            else {
                continue;
            };
            if !u
                .memory_full_share
                .is_some_and(|f| f >= self.cfg.livelock_full_share)
            {
                continue;
            }
            if s.livelock_since.is_none() {
                return false;
            }
            any = true;
        }
        any
    }

    fn start_cooldown(&mut self, user: &str, now: f64) {
        self.units.entry(user.to_string()).or_default().last_action = Some(now);
    }

    /// Forgets a stopped unit.
    pub fn remove_unit(&mut self, user: &str) {
        self.units.remove(user);
    }

    /// Adaptive sampling: the fast interval above the watch threshold or
    /// when growing fast (MemoryMax projected within
    /// `FAST_HORIZON_FACTOR` horizons, or `FAST_GROWTH_UNLIMITED` without a
    /// limit); the normal interval otherwise.
    pub fn sample_interval_for(&self, unit: &UnitInput) -> Duration {
        let above_watch = unit.usage().is_some_and(|u| u >= self.cfg.watch_threshold);
        let growing_fast = match unit.memory_max {
            Some(_) => unit
                .time_to_max()
                .is_some_and(|t| t <= FAST_HORIZON_FACTOR * self.cfg.horizon_seconds),
            None => unit.growth().is_some_and(|g| g >= FAST_GROWTH_UNLIMITED),
        };
        if above_watch || growing_fast {
            self.fast
        } else {
            self.normal
        }
    }
}

fn decision(unit: &UnitInput, target: ProcInput, reason: RunawayReason) -> Decision {
    Decision {
        user: unit.user.clone(),
        reason,
        target,
        memory_current: unit.memory_current,
        memory_max: unit.memory_max,
        memory_high: unit.memory_high,
        time_to_max_seconds: unit.time_to_max(),
    }
}

/// The stall culprit: the unit's fastest-growing process (growing at least
/// 1 MiB/s), else its largest anon process.
pub fn pick_culprit(procs: &[ProcInput]) -> Option<Culprit> {
    let growing = procs
        .iter()
        .filter(|p| p.anon_growth.is_some_and(|g| g >= CULPRIT_MIN_GROWTH))
        .max_by(|a, b| {
            let ga = a.anon_growth.unwrap_or(0.0);
            let gb = b.anon_growth.unwrap_or(0.0);
            ga.total_cmp(&gb)
        });
    let p = growing.or_else(|| procs.iter().max_by_key(|p| p.rss_anon))?;
    Some(Culprit {
        pid: p.pid,
        comm: p.comm.to_string(),
        rss_anon: p.rss_anon,
    })
}

#[cfg(test)]
#[path = "runaway_tests.rs"]
pub(crate) mod tests;
