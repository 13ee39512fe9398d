//! What the detectors conclude: stall windows, OOM kills, runaway decisions,
//! unit and agent lifecycle. These are the records of the event log and the
//! "recent" parts of the snapshot.

use serde::{Deserialize, Serialize};

/// Version of the event log's line schema (`"v"` in every line).
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// What dominated a stall window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    Memory,
    Io,
    Cpu,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Memory => "memory",
            Cause::Io => "io",
            Cause::Cpu => "cpu",
        }
    }
}

/// A window's class against the client watchdog (10 s heartbeat, reconnect
/// after 20 s without an answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Shorter than 10 s: no client can have noticed.
    Short,
    /// 10 s <= duration < 20 s: may fire the watchdog (heartbeat phase).
    Warning,
    /// >= 20 s: fired every connected client's watchdog.
    Disconnect,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Short => "short",
            Class::Warning => "warning",
            Class::Disconnect => "disconnect",
        }
    }

    pub fn of(duration_s: f64, warning_s: f64, disconnect_s: f64) -> Class {
        if duration_s >= disconnect_s {
            Class::Disconnect
        } else if duration_s >= warning_s {
            Class::Warning
        } else {
            Class::Short
        }
    }
}

/// Where a window's figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowSource {
    /// The serve's main thread, traced by eBPF.
    Bpf,
    /// Unit PSI shares, when BPF is not loaded.
    Psi,
}

/// The process blamed for a window or decided on by the runaway catcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Culprit {
    pub pid: i32,
    pub comm: String,
    pub rss_anon: u64,
}

/// A span in which the serve's event loop made no progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallWindow {
    pub user: String,
    /// Unix time (seconds, fractional) of the start.
    pub start: f64,
    /// Unix time of the end; `None` while ongoing.
    pub end: Option<f64>,
    pub duration_s: f64,
    pub class: Class,
    pub cause: Cause,
    pub source: WindowSource,
    pub culprit: Option<Culprit>,
    /// Share of the window spent in run-queue wait vs D state (BPF only).
    pub runqueue_s: Option<f64>,
    pub blocked_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OomScope {
    /// The unit's own MemoryMax: its `memory.events` oom_kill moved.
    Memcg,
    /// A box-wide OOM.
    Global,
}

impl OomScope {
    pub fn as_str(self) -> &'static str {
        match self {
            OomScope::Memcg => "memcg",
            OomScope::Global => "global",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomKill {
    /// `None` when the victim is not in a watched unit.
    pub user: Option<String>,
    pub pid: i32,
    pub comm: String,
    pub uid: u32,
    pub anon_rss: u64,
    pub file_rss: u64,
    pub shmem_rss: u64,
    pub scope: OomScope,
}

/// What the runaway catcher did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// observe mode: "would kill".
    Observed,
    Killed,
    Failed,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Observed => "observed",
            ActionKind::Killed => "killed",
            ActionKind::Failed => "failed",
        }
    }
}

/// Why a process was judged a runaway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunawayReason {
    /// Unit usage crossed the kill threshold.
    KillThreshold,
    /// Above the watch threshold and growth projects MemoryMax within the horizon.
    Projected,
    /// Stuck between memory.high and memory.max under full memory pressure.
    Livelock,
    /// Host memory pressure or MemAvailable: the largest runaway box-wide.
    HostGuard,
}

/// One runaway decision with the figures that justified it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunawayAction {
    pub user: String,
    pub action: ActionKind,
    pub reason: RunawayReason,
    pub pid: i32,
    pub comm: String,
    pub argv0: String,
    pub start_time: u64,
    pub rss_anon: u64,
    pub anon_growth_bytes_per_second: f64,
    pub memory_current: u64,
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub time_to_max_seconds: Option<f64>,
    /// errno text when `action` is `failed`.
    pub error: Option<String>,
}

/// One line of the event log. Serialized with `"kind"` as the tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    AgentStart {
        version: String,
        config_hash: String,
        mode: String,
        bpf_loaded: bool,
    },
    AgentStop {
        reason: String,
    },
    UnitStart {
        user: String,
        unit: String,
    },
    UnitStop {
        user: String,
        unit: String,
    },
    /// Written when an ongoing window passes the warning threshold, so a
    /// window cut short by an agent crash still leaves a trace.
    StallWindowStart(StallWindow),
    StallWindow(StallWindow),
    OomKill(OomKill),
    Runaway(RunawayAction),
}

impl EventBody {
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::AgentStart { .. } => "agent_start",
            EventBody::AgentStop { .. } => "agent_stop",
            EventBody::UnitStart { .. } => "unit_start",
            EventBody::UnitStop { .. } => "unit_stop",
            EventBody::StallWindowStart(_) => "stall_window_start",
            EventBody::StallWindow(_) => "stall_window",
            EventBody::OomKill(_) => "oom_kill",
            EventBody::Runaway(_) => "runaway",
        }
    }

    pub fn user(&self) -> Option<&str> {
        match self {
            EventBody::AgentStart { .. } | EventBody::AgentStop { .. } => None,
            EventBody::UnitStart { user, .. } | EventBody::UnitStop { user, .. } => Some(user),
            EventBody::StallWindowStart(w) | EventBody::StallWindow(w) => Some(&w.user),
            EventBody::OomKill(o) => o.user.as_deref(),
            EventBody::Runaway(r) => Some(&r.user),
        }
    }
}

/// An event log line: schema version, wall time, and the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    /// Unix time in seconds (fractional).
    pub ts: f64,
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    pub fn new(ts: f64, body: EventBody) -> Self {
        Event {
            v: EVENT_SCHEMA_VERSION,
            ts,
            body,
        }
    }
}

/// Unix time of a `SystemTime`, fractional seconds.
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_boundaries() {
        assert_eq!(Class::of(9.9, 10.0, 20.0), Class::Short);
        assert_eq!(Class::of(10.0, 10.0, 20.0), Class::Warning);
        assert_eq!(Class::of(19.9, 10.0, 20.0), Class::Warning);
        assert_eq!(Class::of(20.0, 10.0, 20.0), Class::Disconnect);
    }

    #[test]
    fn event_line_shape() {
        let e = Event::new(
            1.5,
            EventBody::UnitStart {
                user: "alice".into(),
                unit: "t3-serve@alice.service".into(),
            },
        );
        let line = serde_json::to_string(&e).expect("serialize");
        assert_eq!(
            line,
            r#"{"v":1,"ts":1.5,"kind":"unit_start","user":"alice","unit":"t3-serve@alice.service"}"#
        );
        let back: Event = serde_json::from_str(&line).expect("parse");
        assert_eq!(back, e);
    }
}
