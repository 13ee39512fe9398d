//! Detectors: stall windows against the client watchdog, and the runaway
//! catcher's policy, glued per tick by [`Detectors`].
//!
//! How the run loop uses it, once per sampling pass:
//!
//! ```text
//! let ticks: Vec<UnitTick> = /* units sampled in this pass */;
//! for body in detectors.on_tick(now_unix, &ticks, Some(&host)) {
//!     event_log.append(&Event::new(now_unix, body.clone()))?;   // + metrics
//! }
//! next_due[unit] = now + detectors.sample_interval_for(&tick.runaway);
//! // on a stopped unit:   detectors.unit_removed(user, now_unix)
//! // for the snapshot:    detectors.stall_info(user, now_unix)  (ongoing, recent, last hour)
//! // snapshot is_candidate: detectors.policy().candidate(&unit_input)
//! ```

pub mod runaway;
pub mod stall;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::actions::killer::{is_cgroup2, KillTarget, Killer};
use crate::config::{Config, Mode};
use crate::model::event::{ActionKind, Class, EventBody, StallWindow, WindowSource};
use crate::outputs::snapshot::StallInfo;

use runaway::{pick_culprit, HostInput, RunawayPolicy, UnitInput};
use stall::{StallDetector, StallTick};

/// Closed windows shorter than this are not events (BPF reports every
/// 100 ms run-queue wait; those are in the scheduler histograms).
pub const MIN_LOGGED_WINDOW_S: f64 = 1.0;
/// Closed windows kept per unit for the snapshot.
pub const RECENT_WINDOWS: usize = 32;

/// One unit sampled in this pass.
#[derive(Debug, Clone)]
pub struct UnitTick<'a> {
    /// PSI shares, BPF episodes of the serve's main thread; `culprit` may be
    /// left `None`: it is then picked from `runaway.procs`.
    pub stall: StallTick<'a>,
    /// Memory figures and processes; `runaway.user` names the unit.
    pub runaway: UnitInput,
}

/// Per-unit detector state, the policy, and the killer.
pub struct Detectors {
    mode: Mode,
    source: WindowSource,
    /// The in-kernel episode threshold: how late a wait becomes visible.
    episode_threshold_s: f64,
    warning_s: f64,
    disconnect_s: f64,
    stall: BTreeMap<String, StallDetector>,
    ongoing: BTreeMap<String, StallWindow>,
    recent: BTreeMap<String, VecDeque<StallWindow>>,
    /// End times and classes of warning/disconnect windows, last hour.
    hour: BTreeMap<String, VecDeque<(f64, Class)>>,
    policy: RunawayPolicy,
    killer: Box<dyn Killer>,
    /// Re-check `/proc/PID/cgroup` before killing: only meaningful when the
    /// cgroup root is a real cgroup2 mount (not a test's fake tree).
    check_cgroup: bool,
}

impl Detectors {
    /// `bpf_loaded` picks where windows come from (episodes or PSI).
    pub fn new(config: &Config, bpf_loaded: bool, killer: Box<dyn Killer>) -> Self {
        Detectors {
            mode: config.mode,
            source: if bpf_loaded {
                WindowSource::Bpf
            } else {
                WindowSource::Psi
            },
            episode_threshold_s: config.episode_threshold_ms as f64 / 1000.0,
            warning_s: config.stall_warning_seconds,
            disconnect_s: config.stall_disconnect_seconds,
            stall: BTreeMap::new(),
            ongoing: BTreeMap::new(),
            recent: BTreeMap::new(),
            hour: BTreeMap::new(),
            policy: RunawayPolicy::new(config),
            killer,
            check_cgroup: is_cgroup2(&config.cgroup_root),
        }
    }

    /// Feeds the units sampled in this pass (any subset of the watched
    /// ones) and the host figures; acts on runaway decisions (observe or
    /// kill) and returns the events to log, in order.
    pub fn on_tick(
        &mut self,
        now: f64,
        units: &[UnitTick<'_>],
        host: Option<&HostInput>,
    ) -> Vec<EventBody> {
        let mut events = Vec::new();
        let mut acted = false;
        for u in units {
            self.stall_tick(u, &mut events);
            if let Some(d) = self.policy.decide(&u.runaway) {
                events.push(EventBody::Runaway(self.act(&d)));
                acted = true;
            }
        }
        // After a per-unit action the host's avg10 still shows the trouble
        // it is about to relieve: give it a tick.
        if let (false, Some(h)) = (acted, host) {
            if let Some(d) = self.policy.host_guard(now, h) {
                events.push(EventBody::Runaway(self.act(&d)));
            }
        }
        events
    }

    fn stall_tick(&mut self, u: &UnitTick<'_>, events: &mut Vec<EventBody>) {
        let user = &u.runaway.user;
        let (source, warning_s, disconnect_s) = (self.source, self.warning_s, self.disconnect_s);
        let threshold = self.episode_threshold_s;
        let det = self.stall.entry(user.clone()).or_insert_with(|| {
            StallDetector::new(user, source, warning_s, disconnect_s)
                .with_episode_threshold(threshold)
        });
        let mut tick = u.stall.clone();
        if tick.culprit.is_none() {
            tick.culprit = pick_culprit(&u.runaway.procs);
        }
        let out = det.on_tick(&tick);
        for w in out.closed {
            self.push_closed(w, events);
        }
        if let Some(w) = out.crossed_warning {
            tracing::warn!(user = %w.user, cause = w.cause.as_str(), "serve stalled for {:.1} s so far", w.duration_s);
            events.push(EventBody::StallWindowStart(w));
        }
        match out.ongoing {
            Some(w) => self.ongoing.insert(user.clone(), w),
            None => self.ongoing.remove(user),
        };
    }

    fn push_closed(&mut self, w: StallWindow, events: &mut Vec<EventBody>) {
        if w.duration_s < MIN_LOGGED_WINDOW_S {
            return;
        }
        if w.class != Class::Short {
            tracing::warn!(user = %w.user, class = w.class.as_str(), cause = w.cause.as_str(), "serve stall window of {:.1} s", w.duration_s);
        }
        if w.class != Class::Short {
            let hour = self.hour.entry(w.user.clone()).or_default();
            hour.push_back((w.end.unwrap_or(w.start + w.duration_s), w.class));
        }
        let recent = self.recent.entry(w.user.clone()).or_default();
        recent.push_front(w.clone());
        recent.truncate(RECENT_WINDOWS);
        events.push(EventBody::StallWindow(w));
    }

    fn act(&self, d: &runaway::Decision) -> crate::model::event::RunawayAction {
        let (kind, error) = match self.mode {
            Mode::Observe => (ActionKind::Observed, None),
            Mode::Enforce => match self.killer.kill(&self.kill_target(d)) {
                Ok(()) => (ActionKind::Killed, None),
                Err(e) => (ActionKind::Failed, Some(e.to_string())),
            },
        };
        let a = d.action(kind, error);
        tracing::warn!(
            user = %a.user, action = kind.as_str(), reason = ?a.reason, pid = a.pid,
            comm = %a.comm, rss_anon = a.rss_anon, memory_current = a.memory_current,
            memory_max = ?a.memory_max, error = ?a.error, "runaway process"
        );
        a
    }

    fn kill_target(&self, d: &runaway::Decision) -> KillTarget {
        let mut t = d.kill_target();
        if !self.check_cgroup {
            t.cgroup = None;
        }
        t
    }

    /// A unit stopped: closes its window (logged if long enough) and
    /// forgets its state.
    pub fn unit_removed(&mut self, user: &str, now: f64) -> Vec<EventBody> {
        let mut events = Vec::new();
        self.ongoing.remove(user);
        self.policy.remove_unit(user);
        if let Some(w) = self.stall.remove(user).and_then(|mut d| d.finish(now)) {
            self.push_closed(w, &mut events);
        }
        self.recent.remove(user);
        self.hour.remove(user);
        events
    }

    /// The snapshot's stall part for a user: ongoing window, recent ones,
    /// warning/disconnect counts of the last hour before `now`.
    pub fn stall_info(&mut self, user: &str, now: f64) -> StallInfo {
        let mut info = StallInfo {
            ongoing: self.ongoing.get(user).cloned(),
            recent: self.recent(user).cloned().collect(),
            ..Default::default()
        };
        if let Some(hour) = self.hour.get_mut(user) {
            while hour.front().is_some_and(|(end, _)| now - end > 3600.0) {
                hour.pop_front();
            }
            for (_, class) in hour.iter() {
                match class {
                    Class::Warning => info.last_hour_warning += 1,
                    Class::Disconnect => info.last_hour_disconnect += 1,
                    Class::Short => {}
                }
            }
        }
        info
    }

    /// The ongoing window of a user, its duration so far
    /// (`t3pressure_serve_stall_seconds`).
    pub fn ongoing(&self, user: &str) -> Option<&StallWindow> {
        self.ongoing.get(user)
    }

    /// Closed windows of a user, newest first.
    pub fn recent(&self, user: &str) -> impl Iterator<Item = &StallWindow> {
        self.recent.get(user).into_iter().flatten()
    }

    /// When to sample this unit next (fast near its limit or growing fast).
    pub fn sample_interval_for(&self, unit: &UnitInput) -> Duration {
        self.policy.sample_interval_for(unit)
    }

    pub fn policy(&self) -> &RunawayPolicy {
        &self.policy
    }
}

#[cfg(test)]
mod tests;
