//! `t3pressure events`: reads the event log and prints what happened, as an
//! aligned table to paste into a post-mortem or as JSON Lines for scripts.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::EventsArgs;
use crate::model::event::{unix_seconds, Event, EventBody, StallWindow};
use crate::outputs::eventlog;

/// Every kind `--kind` accepts.
pub const KINDS: [&str; 8] = [
    "stall_window",
    "stall_window_start",
    "oom_kill",
    "runaway",
    "unit_start",
    "unit_stop",
    "agent_start",
    "agent_stop",
];

pub fn main(args: EventsArgs) -> anyhow::Result<ExitCode> {
    if let Some(k) = &args.kind {
        if !KINDS.contains(&k.as_str()) {
            anyhow::bail!("unknown --kind {k:?}; one of: {}", KINDS.join(", "));
        }
    }
    let dir = &args.state_dir;
    if !dir.is_dir() {
        anyhow::bail!(
            "state directory {} does not exist: the agent writes its event log to its \
             --state-dir (default /var/lib/t3pressure); pass the same --state-dir here",
            dir.display()
        );
    }
    let read = eventlog::read_all(dir)?;
    if read.files.is_empty() {
        eprintln!(
            "no event log in {} ({} not found): the agent has not written any event there yet",
            dir.display(),
            eventlog::FILE_NAME
        );
        return Ok(ExitCode::SUCCESS);
    }
    if read.skipped > 0 {
        eprintln!(
            "note: {} unparsable line(s) skipped (torn by a killed writer, or not an event)",
            read.skipped
        );
    }
    let since = args
        .since
        .map(|d| unix_seconds(SystemTime::now()) - Duration::from(d).as_secs_f64());
    let events: Vec<&Event> = read
        .events
        .iter()
        .filter(|e| filter(e, args.user.as_deref(), since, args.kind.as_deref()))
        .collect();
    let text = if args.json {
        let mut s = String::new();
        for e in &events {
            s.push_str(&serde_json::to_string(e)?);
            s.push('\n');
        }
        s
    } else if events.is_empty() {
        eprintln!("no matching events");
        String::new()
    } else {
        render_table(&events)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The filters of the command line; `user` drops events without a user
/// (agent start/stop).
pub fn filter(e: &Event, user: Option<&str>, since: Option<f64>, kind: Option<&str>) -> bool {
    user.is_none_or(|u| e.body.user() == Some(u))
        && since.is_none_or(|s| e.ts >= s)
        && kind.is_none_or(|k| e.body.kind() == k)
}

/// An aligned table: TIME (UTC), USER, KIND, then the details.
pub fn render_table(events: &[&Event]) -> String {
    let rows: Vec<[String; 4]> = events
        .iter()
        .map(|e| {
            [
                utc(e.ts),
                e.body.user().unwrap_or("-").to_string(),
                e.body.kind().to_string(),
                details(&e.body),
            ]
        })
        .collect();
    let header = ["TIME (UTC)", "USER", "KIND", "DETAILS"].map(String::from);
    let mut widths = [0usize; 3];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T18:22:57.123Z`.
pub fn utc(ts: f64) -> String {
    if !ts.is_finite() || ts < 0.0 {
        return format!("{ts}");
    }
    let t = UNIX_EPOCH + Duration::from_secs_f64(ts);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Bytes in binary units, one decimal.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn window(w: &StallWindow, ongoing: bool) -> String {
    let mut s = if ongoing {
        format!(
            "ongoing {} stall, {:.1} s so far (since {})",
            w.cause.as_str(),
            w.duration_s,
            utc(w.start)
        )
    } else {
        format!(
            "{} {} stall {:.1} s (from {})",
            w.class.as_str(),
            w.cause.as_str(),
            w.duration_s,
            utc(w.start)
        )
    };
    if let (Some(rq), Some(d)) = (w.runqueue_s, w.blocked_s) {
        s.push_str(&format!(", run-queue {rq:.1} s, D state {d:.1} s"));
    } else {
        s.push_str(", from PSI");
    }
    if let Some(c) = &w.culprit {
        s.push_str(&format!(
            ", culprit pid {} {} anon {}",
            c.pid,
            c.comm,
            bytes(c.rss_anon)
        ));
    }
    s
}

/// The human summary of one event.
pub fn details(body: &EventBody) -> String {
    match body {
        EventBody::AgentStart {
            version,
            config_hash,
            mode,
            bpf_loaded,
        } => format!(
            "t3pressure {version}, mode {mode}, bpf {}, config {config_hash}",
            if *bpf_loaded {
                "loaded"
            } else {
                "off (PSI only)"
            }
        ),
        EventBody::AgentStop { reason } => format!("stopped: {reason}"),
        EventBody::UnitStart { unit, .. } => format!("{unit} started"),
        EventBody::UnitStop { unit, .. } => format!("{unit} stopped"),
        EventBody::StallWindowStart(w) => window(w, true),
        EventBody::StallWindow(w) => window(w, false),
        EventBody::OomKill(o) => format!(
            "{} OOM kill of pid {} {} (uid {}), anon {}, file {}, shmem {}",
            o.scope.as_str(),
            o.pid,
            o.comm,
            o.uid,
            bytes(o.anon_rss),
            bytes(o.file_rss),
            bytes(o.shmem_rss)
        ),
        EventBody::Runaway(a) => {
            let reason = serde_json::to_value(a.reason)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let mut s = format!(
                "{} pid {} {} ({}) anon {} growing {}/s, reason {reason}, unit {}",
                a.action.as_str(),
                a.pid,
                a.comm,
                a.argv0,
                bytes(a.rss_anon),
                bytes(a.anon_growth_bytes_per_second.max(0.0) as u64),
                bytes(a.memory_current)
            );
            if let Some(max) = a.memory_max.filter(|m| *m > 0) {
                s.push_str(&format!(
                    " of {} ({:.1} %)",
                    bytes(max),
                    100.0 * a.memory_current as f64 / max as f64
                ));
            }
            if let Some(h) = a.memory_high {
                s.push_str(&format!(", high {}", bytes(h)));
            }
            if let Some(t) = a.time_to_max_seconds {
                s.push_str(&format!(", max in {t:.1} s"));
            }
            if let Some(e) = &a.error {
                s.push_str(&format!(", error: {e}"));
            }
            s
        }
    }
}

/// Whether `dir` has any log file (for callers other than `main`).
pub fn has_log(dir: &Path) -> bool {
    eventlog::file_path(dir, 0).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::{
        ActionKind, Cause, Class, Culprit, OomKill, OomScope, RunawayAction, RunawayReason,
        WindowSource,
    };

    const GIB: u64 = 1 << 30;

    fn sample() -> Vec<Event> {
        let w = StallWindow {
            user: "alice".into(),
            start: 1_795_000_000.0,
            end: Some(1_795_000_023.5),
            duration_s: 23.5,
            class: Class::Disconnect,
            cause: Cause::Memory,
            source: WindowSource::Bpf,
            culprit: Some(Culprit {
                pid: 4242,
                comm: "claude".into(),
                rss_anon: 11 * GIB,
            }),
            runqueue_s: Some(1.5),
            blocked_s: Some(22.0),
        };
        vec![
            Event::new(
                1_794_999_000.0,
                EventBody::AgentStart {
                    version: "0.1.0".into(),
                    config_hash: "abcd".into(),
                    mode: "enforce".into(),
                    bpf_loaded: true,
                },
            ),
            Event::new(1_795_000_023.5, EventBody::StallWindow(w)),
            Event::new(
                1_795_000_030.0,
                EventBody::Runaway(RunawayAction {
                    user: "alice".into(),
                    action: ActionKind::Killed,
                    reason: RunawayReason::Projected,
                    pid: 4242,
                    comm: "claude".into(),
                    argv0: "/usr/bin/claude".into(),
                    start_time: 99,
                    rss_anon: 12 * GIB,
                    anon_growth_bytes_per_second: 512.0 * 1024.0 * 1024.0,
                    memory_current: 13 * GIB,
                    memory_max: Some(16 * GIB),
                    memory_high: None,
                    time_to_max_seconds: Some(4.0),
                    error: None,
                }),
            ),
            Event::new(
                1_795_000_031.0,
                EventBody::OomKill(OomKill {
                    user: Some("bob".into()),
                    pid: 77,
                    comm: "python3".into(),
                    uid: 1001,
                    anon_rss: 300 << 20,
                    file_rss: 4 << 20,
                    shmem_rss: 0,
                    scope: OomScope::Memcg,
                }),
            ),
        ]
    }

    #[test]
    fn table_is_aligned_and_readable() {
        let events = sample();
        let refs: Vec<&Event> = events.iter().collect();
        let t = render_table(&refs);
        let expected = "\
TIME (UTC)                USER   KIND          DETAILS
2026-11-18T10:50:00.000Z  -      agent_start   t3pressure 0.1.0, mode enforce, bpf loaded, config abcd
2026-11-18T11:07:03.500Z  alice  stall_window  disconnect memory stall 23.5 s (from 2026-11-18T11:06:40.000Z), run-queue 1.5 s, D state 22.0 s, culprit pid 4242 claude anon 11.0 GiB
2026-11-18T11:07:10.000Z  alice  runaway       killed pid 4242 claude (/usr/bin/claude) anon 12.0 GiB growing 512.0 MiB/s, reason projected, unit 13.0 GiB of 16.0 GiB (81.2 %), max in 4.0 s
2026-11-18T11:07:11.000Z  bob    oom_kill      memcg OOM kill of pid 77 python3 (uid 1001), anon 300.0 MiB, file 4.0 MiB, shmem 0 B
";
        assert_eq!(t, expected);
    }

    #[test]
    fn filters() {
        let events = sample();
        let n = |u, s, k| events.iter().filter(|e| filter(e, u, s, k)).count();
        assert_eq!(n(None, None, None), 4);
        assert_eq!(n(Some("alice"), None, None), 2);
        assert_eq!(n(Some("bob"), None, Some("oom_kill")), 1);
        assert_eq!(n(None, Some(1_795_000_030.0), None), 2);
        assert_eq!(n(None, None, Some("runaway")), 1);
        assert_eq!(n(Some("carol"), None, None), 0);
    }

    #[test]
    fn bytes_and_odd_times() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(utc(f64::NAN), "NaN");
        assert_eq!(utc(0.0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn missing_state_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = EventsArgs {
            state_dir: dir.path().join("absent"),
            user: None,
            since: None,
            kind: None,
            json: false,
        };
        let e = main(args).expect_err("missing dir");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let args = EventsArgs {
            state_dir: dir.path().to_path_buf(),
            user: None,
            since: None,
            kind: Some("stalls".into()),
            json: false,
        };
        let e = main(args).expect_err("bad kind");
        assert!(e.to_string().contains("stall_window"), "{e}");
        assert!(!has_log(dir.path()));
    }
}
