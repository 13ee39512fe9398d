//! Stall windows of one unit's serve process: maximal spans in which its
//! event-loop thread made no progress, classed against the client watchdog.
//!
//! Two inputs, one detector. With BPF, the serve's main thread's scheduler
//! episodes (run-queue wait or D state, each longer than the in-kernel
//! threshold) are chained; gaps shorter than 100 ms are merged because the
//! thread cannot answer a heartbeat in them either. A longer gap is bridged
//! when every sampling interval from its start to its end was busy for the
//! thread: outside its episodes it was waiting most of the time (the kernel
//! side keeps the thread's totals of all waits, the ones too short to be
//! episodes included, and of voluntary sleeps), or it never slept (its
//! event loop never went back to wait for requests) while waiting at least
//! half of the interval, or it was starved (waiting most of the last second
//! and hardly running). A synchronous reader throttled by io.max strings
//! long and short D-state waits and copies together, a loop under a spent
//! CPU quota sleeps briefly between long throttled waits; neither answers a
//! heartbeat in between. A window ends where its last episode ended, or
//! at the end of the last busy sampling interval wholly after it.
//!
//! Neither a bridge nor the 100 ms merge reaches across an instant at which
//! the thread went to sleep in a poll syscall (epoll_wait, poll, select;
//! the kernel side marks it): an event loop sleeps there only when nothing
//! is ready, so it had answered every request it had received, however
//! starved or throttled the intervals around it were. Without that mark
//! (another architecture), the busy rules above decide alone.
//! Without BPF, consecutive
//! sampling intervals (<= 1 s) whose memory/io `full` or cpu `some` share is
//! >= 50 % form the window.
//!
//! Pure: time comes in with each tick (Unix seconds, fractional), so tests
//! drive it with a fake clock.

use crate::model::event::{Cause, Class, Culprit, StallWindow, WindowSource};
use crate::model::sample::{PsiLine, UnitSample};

/// Gaps between episodes shorter than this are part of the window.
pub const MERGE_GAP_S: f64 = 0.100;
/// A PSI interval counts as stalled at this share (of its duration).
pub const STALLED_SHARE: f64 = 0.50;
/// Longest PSI interval that still proves continuity (the spec's 1 s plus
/// scheduling jitter of the sampler).
pub const MAX_PSI_INTERVAL_S: f64 = 1.5;
/// Share of the time outside episodes the serve thread must spend waiting
/// for a gap in that interval to be bridged (the throttled reader). High,
/// so that a loop slowed down by run-queue contention but still running a
/// third of the time is not called stalled.
pub const BRIDGE_WAIT_SHARE: f64 = 0.75;
/// Or: it never slept voluntarily in the interval (its event loop never
/// went back to waiting for requests) and spent at least this share of it
/// waiting: a synchronous read loop on the event loop, whose copies between
/// throttled reads take real CPU time.
pub const SLEEPLESS_WAIT_SHARE: f64 = 0.50;
/// "Never slept": at most this share of the interval asleep.
const SLEEPLESS_SLEEP_SHARE: f64 = 0.01;
/// Default in-kernel episode threshold: a wait in progress becomes visible
/// to userspace only once it is this long.
pub const DEFAULT_EPISODE_THRESHOLD_S: f64 = 0.100;
/// Or: share of the whole interval it spent waiting, while running for at
/// most `STARVED_RUN_SHARE` of it (the thread under a spent CPU quota, which
/// sleeps between throttled waits but gets almost no CPU).
pub const STARVED_WAIT_SHARE: f64 = 0.75;
pub const STARVED_RUN_SHARE: f64 = 0.10;
/// Starvation is judged over at least the last second, so a timer sleep
/// that fills a whole 100 ms tick does not hide it.
pub const STARVED_SPAN_S: f64 = 1.0;
/// Tolerance when checking that the bridged intervals reach back to the
/// gap's start (sampling jitter between wall and monotonic clocks).
const BRIDGE_SLACK_S: f64 = 0.05;

/// Stall shares of one sampling interval (0..1 each), derived from the PSI
/// totals of the unit: delta of `total` / elapsed time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiShares {
    pub memory_some: f64,
    pub memory_full: f64,
    pub io_some: f64,
    pub io_full: f64,
    pub cpu_some: f64,
}

impl PsiShares {
    /// Shares between two samples of a unit: delta of each PSI `total`
    /// (microseconds) over the elapsed monotonic time, clamped to 0..1.
    /// `None` without memory pressure figures or elapsed time; a missing io
    /// or cpu file counts as no stall.
    pub fn between(prev: &UnitSample, cur: &UnitSample) -> Option<PsiShares> {
        let elapsed = cur.at.checked_duration_since(prev.at)?.as_secs_f64();
        if elapsed <= 0.0 {
            return None;
        }
        let share = |p: Option<&PsiLine>, c: Option<&PsiLine>| match (p, c) {
            (Some(p), Some(c)) => {
                (c.total_us.saturating_sub(p.total_us) as f64 / 1e6 / elapsed).clamp(0.0, 1.0)
            }
            _ => 0.0,
        };
        let (pm, cm) = (
            prev.memory_pressure.as_ref()?,
            cur.memory_pressure.as_ref()?,
        );
        let (pi, ci) = (prev.io_pressure.as_ref(), cur.io_pressure.as_ref());
        let (pc, cc) = (prev.cpu_pressure.as_ref(), cur.cpu_pressure.as_ref());
        Some(PsiShares {
            memory_some: share(Some(&pm.some), Some(&cm.some)),
            memory_full: share(pm.full.as_ref(), cm.full.as_ref()),
            io_some: share(pi.map(|p| &p.some), ci.map(|c| &c.some)),
            io_full: share(
                pi.and_then(|p| p.full.as_ref()),
                ci.and_then(|c| c.full.as_ref()),
            ),
            cpu_some: share(pc.map(|p| &p.some), cc.map(|c| &c.some)),
        })
    }

    fn stalled(&self) -> bool {
        self.memory_full >= STALLED_SHARE
            || self.io_full >= STALLED_SHARE
            || self.cpu_some >= STALLED_SHARE
    }
}

/// The resource whose stall time is largest; memory wins ties (refault IO
/// under memory pressure shows in both memory and io), then io.
fn dominant(memory: f64, io: f64, cpu: f64) -> Cause {
    if memory >= io && memory >= cpu {
        Cause::Memory
    } else if io >= cpu {
        Cause::Io
    } else {
        Cause::Cpu
    }
}

/// What the serve's main thread was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EpisodeKind {
    /// Runnable but not running (run-queue wait, CPU throttling).
    Runqueue,
    /// Uninterruptible sleep (D state): reclaim, refaults, IO.
    Blocked,
}

/// One scheduler episode of the serve's main thread, from BPF. An ongoing
/// episode (`end == None`) is re-sent every tick while it lasts; episodes
/// are identified by (kind, start).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Episode {
    pub kind: EpisodeKind,
    /// Unix seconds.
    pub start: f64,
    /// Unix seconds; `None` while the thread is still waiting.
    pub end: Option<f64>,
}

/// Episodes are matched by kind and start; the start of an ongoing episode
/// may jitter by microseconds when converted from the kernel's clock.
const EPISODE_MATCH_S: f64 = 0.001;

fn same_episode(a: &Episode, b: &Episode) -> bool {
    a.kind == b.kind && (a.start - b.start).abs() < EPISODE_MATCH_S
}

/// The serve main thread's wait total at one instant, from BPF: every
/// run-queue and D-state wait, however short, the one in progress included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServeWait {
    pub tid: u32,
    /// Seconds waited since the kernel side first saw the thread.
    pub waited_s: f64,
    /// Seconds slept voluntarily since then (the rest of the time it ran).
    pub slept_s: f64,
    /// Monotonic seconds of the reading.
    pub at_s: f64,
    /// Monotonic seconds at which the thread last went to sleep waiting for
    /// work (in epoll_wait, poll, select and the like): its event loop had
    /// answered every request received by then. `None` if never seen (or
    /// not known on this architecture).
    pub idle_at_s: Option<f64>,
}

/// Input of one tick.
#[derive(Debug, Clone, Default)]
pub struct StallTick<'a> {
    /// Unix seconds of the sample (end of the interval).
    pub now: f64,
    /// Length of the sampling interval that `shares` cover, seconds.
    pub interval_s: f64,
    /// The unit's PSI shares over the interval; `None` when PSI is missing
    /// or this is the first sample.
    pub shares: Option<PsiShares>,
    /// New or still-ongoing episodes of the serve's main thread since the
    /// last tick (ignored by a PSI detector).
    pub episodes: &'a [Episode],
    /// The unit's fastest-growing or largest anon process right now.
    pub culprit: Option<Culprit>,
    /// The serve main thread's wait total now (BPF); two successive ones
    /// give the share of the interval it spent waiting, for bridging gaps.
    pub serve_wait: Option<ServeWait>,
}

/// Output of one tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StallOutput {
    /// The window in progress, its duration so far.
    pub ongoing: Option<StallWindow>,
    /// Windows that closed in this tick, oldest first (all classes).
    pub closed: Vec<StallWindow>,
    /// The ongoing window crossed the warning threshold in this tick: the
    /// caller writes a start record, so a crash still leaves a trace.
    pub crossed_warning: Option<StallWindow>,
}

/// Window being built.
#[derive(Debug, Clone)]
struct Building {
    start: f64,
    /// Last instant known stalled.
    end: f64,
    /// The last episode (or interval) is still in progress.
    open: bool,
    /// Episodes of the window, by (kind, start): runqueue vs D-state split.
    episodes: Vec<Episode>,
    /// Stall seconds per resource accumulated over the window (PSI share x
    /// interval), for the cause.
    memory_s: f64,
    io_s: f64,
    cpu_s: f64,
    culprit: Option<Culprit>,
    warned: bool,
    /// The thread was busy (see the module doc) from `end` up to here,
    /// proven by whole sampling intervals after `end`: a tail of waits too
    /// short to be episodes still counts.
    busy_end: f64,
}

impl Building {
    fn new(start: f64, end: f64) -> Self {
        Building {
            start,
            end,
            open: false,
            episodes: Vec::new(),
            memory_s: 0.0,
            io_s: 0.0,
            cpu_s: 0.0,
            culprit: None,
            warned: false,
            busy_end: end,
        }
    }

    /// The last instant the thread is known not to have made progress.
    fn stalled_until(&self) -> f64 {
        self.end.max(self.busy_end)
    }

    fn split(&self, now: f64) -> (f64, f64) {
        let mut runqueue = 0.0;
        let mut blocked = 0.0;
        for e in &self.episodes {
            let d = (e.end.unwrap_or(now) - e.start).max(0.0);
            match e.kind {
                EpisodeKind::Runqueue => runqueue += d,
                EpisodeKind::Blocked => blocked += d,
            }
        }
        (runqueue, blocked)
    }

    /// D state -> memory or io by which PSI dominated; run-queue -> cpu.
    fn cause(&self, source: WindowSource, now: f64) -> Cause {
        match source {
            WindowSource::Psi => dominant(self.memory_s, self.io_s, self.cpu_s),
            WindowSource::Bpf => {
                let (runqueue, blocked) = self.split(now);
                if runqueue + blocked <= 0.0 {
                    // Only waits too short to be episodes: the unit's PSI.
                    dominant(self.memory_s, self.io_s, self.cpu_s)
                } else if runqueue > blocked {
                    Cause::Cpu
                } else if self.io_s > self.memory_s {
                    Cause::Io
                } else {
                    Cause::Memory
                }
            }
        }
    }

    /// Keeps the biggest culprit seen during the window: after a kill the
    /// survivors are smaller, and the one that caused the stall stays named.
    fn note_culprit(&mut self, c: Option<&Culprit>) {
        if let Some(c) = c {
            if self
                .culprit
                .as_ref()
                .is_none_or(|k| c.rss_anon > k.rss_anon)
            {
                self.culprit = Some(c.clone());
            }
        }
    }
}

/// Per-unit stall window detector.
#[derive(Debug, Clone)]
pub struct StallDetector {
    user: String,
    source: WindowSource,
    warning_s: f64,
    disconnect_s: f64,
    current: Option<Building>,
    last_now: Option<f64>,
    /// Wait totals of the last `STARVED_SPAN_S` or so (same thread).
    waits: std::collections::VecDeque<ServeWait>,
    /// Start (Unix seconds) of the run of consecutive intervals up to now in
    /// which the serve thread waited at least `BRIDGE_WAIT_SHARE`.
    busy_since: Option<f64>,
    /// Start of the last tick's interval if that interval was busy by its
    /// own figures (not by the last second's starvation).
    tick_from: Option<f64>,
    /// Start of the last tick's interval if the thread was stalled in it on
    /// its own account (waiting most of it, or starved): such an interval
    /// starts a window even without an episode, as a chain of waits too
    /// short to be episodes does.
    tick_stalled: Option<f64>,
    /// The serve thread's last interval: span, waited, slept, in episodes
    /// (seconds), for the log line of a window that ends.
    last_interval: Option<[f64; 4]>,
    /// The serve thread went idle (waited for work in a poll syscall) in
    /// its last interval.
    went_idle: bool,
    /// Unix seconds of the last instant the serve thread was seen going
    /// idle: its event loop had answered everything it had then.
    last_idle: Option<f64>,
    episode_threshold_s: f64,
}

impl StallDetector {
    pub fn new(user: &str, source: WindowSource, warning_s: f64, disconnect_s: f64) -> Self {
        StallDetector {
            user: user.to_string(),
            source,
            warning_s,
            disconnect_s,
            current: None,
            last_now: None,
            waits: std::collections::VecDeque::new(),
            busy_since: None,
            tick_from: None,
            tick_stalled: None,
            last_interval: None,
            went_idle: false,
            last_idle: None,
            episode_threshold_s: DEFAULT_EPISODE_THRESHOLD_S,
        }
    }

    /// The in-kernel episode threshold (default 100 ms): a window is kept
    /// open for it past the merge gap, since a wait that began in the gap
    /// is not visible before.
    pub fn with_episode_threshold(mut self, seconds: f64) -> Self {
        self.episode_threshold_s = seconds.max(0.0);
        self
    }

    pub fn source(&self) -> WindowSource {
        self.source
    }

    /// Feeds one tick; returns the ongoing window and what closed.
    pub fn on_tick(&mut self, tick: &StallTick<'_>) -> StallOutput {
        let mut out = StallOutput::default();
        self.note_wait(tick);
        match self.source {
            WindowSource::Bpf => self.feed_episodes(tick, &mut out),
            WindowSource::Psi => self.feed_psi(tick, &mut out),
        }
        if let (Some(b), Some(s)) = (self.current.as_mut(), tick.shares.as_ref()) {
            if self.source == WindowSource::Bpf {
                // The PSI split only decides memory vs io for D state.
                let dt = tick.interval_s.max(0.0);
                b.memory_s += s.memory_full * dt;
                b.io_s += s.io_full * dt;
                b.cpu_s += s.cpu_some * dt;
            }
        }
        if let Some(b) = self.current.as_mut() {
            b.note_culprit(tick.culprit.as_ref());
        }
        if let Some(b) = &self.current {
            let w = self.window(b, tick.now, false);
            if !b.warned && w.duration_s >= self.warning_s {
                out.crossed_warning = Some(w.clone());
            }
            out.ongoing = Some(w);
        }
        if out.crossed_warning.is_some() {
            if let Some(b) = self.current.as_mut() {
                b.warned = true;
            }
        }
        self.last_now = Some(tick.now);
        out
    }

    /// Closes whatever is in progress (unit stopped, agent shutting down).
    pub fn finish(&mut self, now: f64) -> Option<StallWindow> {
        let b = self.current.take()?;
        let end = if b.open { now } else { b.stalled_until() };
        Some(self.window(&b, end, true))
    }

    /// Whether the serve thread was busy waiting in the interval since the
    /// last tick: it spent most of the time outside its episodes waiting
    /// (episode time is taken out of both the interval and the wait total,
    /// so an episode cannot vouch for free running next to it), or it was
    /// starved (waiting most of the interval and hardly running). From it,
    /// the run of busy intervals bridges rely on.
    fn note_wait(&mut self, tick: &StallTick<'_>) {
        let busy = match (self.waits.back().copied(), tick.serve_wait) {
            (Some(p), Some(c))
                if p.tid == c.tid
                    && c.at_s > p.at_s
                    && c.waited_s >= p.waited_s
                    && c.slept_s >= p.slept_s =>
            {
                let span = c.at_s - p.at_s;
                let from = tick.now - span;
                let waited = (c.waited_s - p.waited_s).min(span);
                let in_episodes = self.episode_time(tick, from).min(waited);
                let free = span - in_episodes;
                let waited_free = waited - in_episodes;
                let busy_free = free < MERGE_GAP_S / 2.0 || waited_free >= BRIDGE_WAIT_SHARE * free;
                let slept = c.slept_s - p.slept_s;
                let sleepless =
                    slept <= SLEEPLESS_SLEEP_SHARE * span && waited >= SLEEPLESS_WAIT_SHARE * span;
                // The loop ran out of work in the interval: whatever it
                // had waited for, it had answered, so nothing bridges
                // across that instant (see `bridges`).
                let idle = c.idle_at_s.filter(|&t| t > p.at_s && t <= c.at_s);
                if let Some(t) = idle {
                    self.last_idle = Some(tick.now - (c.at_s - t));
                }
                let starved = self.starved(&c);
                self.last_interval = Some([span, waited, slept, in_episodes]);
                self.went_idle = idle.is_some();
                tracing::debug!(
                    user = %self.user,
                    span = format!("{span:.2}"),
                    waited = format!("{waited:.3}"),
                    slept = format!("{slept:.3}"),
                    in_episodes = format!("{in_episodes:.3}"),
                    busy_free,
                    sleepless,
                    idle = idle.is_some(),
                    "serve thread interval"
                );
                Some((from, busy_free, sleepless, starved))
            }
            _ => {
                self.last_interval = None;
                self.went_idle = false;
                None
            }
        };
        match tick.serve_wait {
            Some(c)
                if self
                    .waits
                    .back()
                    .is_some_and(|p| p.tid == c.tid && c.at_s > p.at_s) =>
            {
                self.waits.push_back(c);
                // Keep the newest reading at least STARVED_SPAN_S old.
                while self
                    .waits
                    .get(1)
                    .is_some_and(|w| c.at_s - w.at_s >= STARVED_SPAN_S)
                {
                    self.waits.pop_front();
                }
            }
            Some(c) => {
                self.waits.clear();
                self.waits.push_back(c);
            }
            None => self.waits.clear(),
        }
        // Starvation is judged over the last second, so only the interval's
        // own figures may extend a window's tail into it.
        self.tick_from = busy.filter(|b| b.1 || b.2).map(|b| b.0);
        // A stall by itself, episodes or not: waiting most of the interval
        // or starved (never sleeping alone only bridges).
        self.tick_stalled = busy.filter(|b| b.1 || b.3).map(|b| b.0);
        match busy {
            Some((from, busy_free, sleepless, starved)) if busy_free || sleepless || starved => {
                self.busy_since.get_or_insert(from);
            }
            _ => self.busy_since = None,
        }
    }

    /// Over the last `STARVED_SPAN_S` (or what there is of it, back to the
    /// oldest comparable reading) up to `c`: waiting most of the time and
    /// hardly running.
    fn starved(&self, c: &ServeWait) -> bool {
        let Some(p) = self
            .waits
            .iter()
            .rev()
            .find(|w| c.at_s - w.at_s >= STARVED_SPAN_S)
            .or(self.waits.front())
        else {
            return false;
        };
        let span = c.at_s - p.at_s;
        if p.tid != c.tid || span <= 0.0 || c.waited_s < p.waited_s || c.slept_s < p.slept_s {
            return false;
        }
        // A loop that waited for work in the span answered what it had.
        if c.idle_at_s.is_some_and(|t| t > p.at_s) {
            return false;
        }
        let waited = (c.waited_s - p.waited_s).min(span);
        let ran = (span - waited - (c.slept_s - p.slept_s)).max(0.0);
        waited >= STARVED_WAIT_SHARE * span && ran <= STARVED_RUN_SHARE * span
    }

    /// Seconds of `from..tick.now` covered by the serve thread's episodes:
    /// this tick's (newest news first) and the window's earlier ones.
    fn episode_time(&self, tick: &StallTick<'_>, from: f64) -> f64 {
        let earlier = self.current.iter().flat_map(|b| b.episodes.iter());
        let mut spans: Vec<(f64, f64)> = Vec::new();
        let mut seen: Vec<Episode> = Vec::new();
        for e in tick.episodes.iter().chain(earlier) {
            if seen.iter().any(|k| same_episode(k, e)) {
                continue;
            }
            seen.push(*e);
            let start = e.start.max(from);
            let end = e.end.unwrap_or(tick.now).min(tick.now);
            if end > start {
                spans.push((start, end));
            }
        }
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut total = 0.0;
        let mut reach = f64::NEG_INFINITY;
        for (start, end) in spans {
            let start = start.max(reach);
            if end > start {
                total += end - start;
                reach = end;
            }
        }
        total
    }

    /// Every interval from `from` up to now was busy for the serve thread,
    /// and it did not go idle between `from` and `to` (an event loop that
    /// waits for work has answered every request it had: the clients got
    /// their heartbeat there, however busy the intervals around it).
    fn bridges(&self, from: f64, to: f64) -> bool {
        self.busy_since.is_some_and(|b| b <= from + BRIDGE_SLACK_S) && !self.idle_between(from, to)
    }

    /// The serve thread was seen going idle (waiting for work) between
    /// `from` and `to`. Only its last idle instant is known: an earlier one
    /// in the same sampling interval goes unseen.
    fn idle_between(&self, from: f64, to: f64) -> bool {
        self.last_idle.is_some_and(|i| i > from && i < to)
    }

    fn feed_episodes(&mut self, tick: &StallTick<'_>, out: &mut StallOutput) {
        let mut eps: Vec<Episode> = tick.episodes.to_vec();
        eps.sort_by(|a, b| a.start.total_cmp(&b.start));
        // An ongoing episode is re-sent every tick while it lasts: one that
        // was not re-sent (nor closed) ended unseen since the last tick.
        if let (Some(b), Some(last)) = (self.current.as_mut(), self.last_now) {
            for k in b.episodes.iter_mut().filter(|k| k.end.is_none()) {
                if !eps.iter().any(|e| same_episode(e, k)) {
                    k.end = Some(last.max(k.start));
                }
            }
        }
        for e in eps {
            let e_end = e.end.unwrap_or(tick.now).max(e.start);
            let merge = self.current.as_ref().is_some_and(|b| {
                b.episodes
                    .iter()
                    .any(|k| k.end.is_none() || same_episode(k, &e))
                    || (e.start - b.end < MERGE_GAP_S && !self.idle_between(b.end, e.start))
                    || self.bridges(b.end, e.start)
            });
            if !merge {
                if let Some(b) = self.current.take() {
                    out.closed.push(self.window(&b, b.stalled_until(), true));
                }
                self.current = Some(Building::new(e.start, e_end));
            }
            let Some(b) = self.current.as_mut() else {
                continue;
            };
            match b.episodes.iter_mut().find(|k| same_episode(k, &e)) {
                Some(k) => k.end = e.end,
                None => b.episodes.push(e),
            }
            b.start = b.start.min(e.start);
            b.end = b.end.max(e_end);
        }
        if self.current.is_none() {
            if let Some(from) = self.tick_stalled {
                // Not from before the loop last waited for work.
                let from = self
                    .last_idle
                    .filter(|&i| i > from && i < tick.now)
                    .unwrap_or(from);
                let mut b = Building::new(from, from);
                b.busy_end = tick.now;
                self.current = Some(b);
            }
        }
        // Open while any episode of the window is still in progress; the
        // end is the latest known instant of no progress.
        if let Some(b) = self.current.as_mut() {
            b.open = b.episodes.iter().any(|e| e.end.is_none());
            let latest = b
                .episodes
                .iter()
                .map(|e| e.end.unwrap_or(tick.now).max(e.start))
                .fold(b.start, f64::max);
            b.end = latest;
        }
        // A busy interval wholly after the last episode extends the window.
        let tail = self.current.as_ref().is_some_and(|b| {
            !b.open
                && self.bridges(b.end, tick.now)
                && self.tick_from.is_some_and(|f| f >= b.end - BRIDGE_SLACK_S)
        });
        if tail {
            if let Some(b) = self.current.as_mut() {
                b.busy_end = b.busy_end.max(tick.now);
            }
        }
        // Closed once a wait that began within the merge gap would be
        // visible and there is none, unless the thread is busy across the
        // gap so far (the window stays pending; its end stays the last
        // episode's end).
        let stale = self.current.as_ref().is_some_and(|b| {
            !b.open
                && tick.now - b.end >= MERGE_GAP_S + self.episode_threshold_s
                && !self.bridges(b.end, tick.now)
        });
        if stale {
            if let Some(b) = self.current.take() {
                let w = self.window(&b, b.stalled_until(), true);
                self.log_end(&w);
                out.closed.push(w);
            }
        }
    }

    /// Why a window of at least a second ended: the serve thread's last
    /// interval, so an on-call engineer (and whoever tunes the bridges)
    /// can see it ran or went back to waiting for requests.
    fn log_end(&self, w: &StallWindow) {
        if w.duration_s < 1.0 {
            return;
        }
        match self.last_interval {
            Some([span, waited, slept, in_episodes]) => tracing::info!(
                user = %self.user,
                duration_s = format!("{:.2}", w.duration_s),
                interval_s = format!("{span:.2}"),
                waited_pct = format!("{:.0}", 100.0 * waited / span),
                slept_pct = format!("{:.0}", 100.0 * slept / span),
                ran_pct = format!("{:.0}", 100.0 * (span - waited - slept).max(0.0) / span),
                in_episodes_pct = format!("{:.0}", 100.0 * in_episodes / span),
                went_idle = self.went_idle,
                "stall window ended: the serve thread made progress in the last interval"
            ),
            None => tracing::info!(
                user = %self.user,
                duration_s = format!("{:.2}", w.duration_s),
                "stall window ended (no wait totals of the serve thread to bridge with)"
            ),
        }
    }

    fn feed_psi(&mut self, tick: &StallTick<'_>, out: &mut StallOutput) {
        let interval_start = tick.now - tick.interval_s;
        let continuous = tick.interval_s > 0.0
            && tick.interval_s <= MAX_PSI_INTERVAL_S
            && self
                .last_now
                .is_some_and(|l| (l - interval_start).abs() < MERGE_GAP_S);
        let stalled = tick.shares.as_ref().is_some_and(|s| s.stalled())
            && tick.interval_s > 0.0
            && tick.interval_s <= MAX_PSI_INTERVAL_S;
        // A window ends where an unstalled (or unprovable) interval begins.
        if !(stalled && continuous) {
            if let Some(b) = self.current.take() {
                out.closed.push(self.window(&b, b.end, true));
            }
        }
        if !stalled {
            return;
        }
        let Some(s) = tick.shares else { return };
        let b = self
            .current
            .get_or_insert_with(|| Building::new(interval_start, tick.now));
        b.end = tick.now;
        b.open = true;
        b.memory_s += s.memory_full * tick.interval_s;
        b.io_s += s.io_full * tick.interval_s;
        b.cpu_s += s.cpu_some * tick.interval_s;
    }

    fn window(&self, b: &Building, end: f64, closed: bool) -> StallWindow {
        let end_t = match (closed, b.open) {
            (true, _) => end,
            (false, true) => end.max(b.end),
            (false, false) => b.stalled_until(),
        };
        let duration_s = (end_t - b.start).max(0.0);
        let (runqueue, blocked) = b.split(end_t);
        let bpf = self.source == WindowSource::Bpf;
        StallWindow {
            user: self.user.clone(),
            start: b.start,
            end: closed.then_some(end_t),
            duration_s,
            class: Class::of(duration_s, self.warning_s, self.disconnect_s),
            cause: b.cause(self.source, end_t),
            source: self.source,
            culprit: b.culprit.clone(),
            runqueue_s: bpf.then_some(runqueue),
            blocked_s: bpf.then_some(blocked),
        }
    }
}

#[cfg(test)]
#[path = "stall_tests.rs"]
mod tests;
