//! The header: agent mode, BPF, units watched, host memory and pressure,
//! and the banner when the agent cannot be reached.

use ratatui::prelude::*;
use ratatui::widgets::{Paragraph, Widget};

use super::app::{App, Conn};
use super::format;
use crate::outputs::snapshot::Snapshot;

/// Lines the header needs at this state (the banner adds one).
pub fn height(app: &App) -> u16 {
    if banner(app).is_some() {
        3
    } else {
        2
    }
}

pub struct Header<'a> {
    pub app: &'a App,
}

impl Widget for Header<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let mut lines = match &self.app.snapshot {
            Some(s) => vec![agent_line(s, self.app), host_line(s)],
            None => vec![
                Line::from(vec![
                    Span::styled("t3pressure top", Style::new().bold()),
                    Span::raw(format!("  source {}", self.app.source)),
                ]),
                Line::from("no snapshot yet"),
            ],
        };
        if let Some(b) = banner(self.app) {
            lines.push(b);
        }
        Paragraph::new(lines).render(area, buf);
    }
}

/// First line: who we are looking at.
fn agent_line<'a>(s: &Snapshot, app: &App) -> Line<'a> {
    let a = &s.agent;
    let mut spans = vec![
        Span::styled("t3pressure top", Style::new().bold()),
        Span::raw(format!("  agent {}  mode ", a.version)),
        mode_span(&a.mode),
        Span::raw("  "),
    ];
    if !a.from_agent {
        spans.push(Span::styled(
            "standalone (no BPF)",
            Style::new().fg(Color::Yellow),
        ));
    } else if a.bpf_loaded {
        spans.push(Span::styled("BPF on", Style::new().fg(Color::Green)));
    } else {
        spans.push(Span::styled("BPF off", Style::new().fg(Color::Yellow)));
        if let Some(e) = &a.bpf_error {
            spans.push(Span::raw(format!(" ({e})")));
        }
    }
    spans.push(Span::raw(format!(
        "  units {}  sort {}",
        a.units_watched,
        app.sort.as_str()
    )));
    if !app.filter.is_empty() {
        spans.push(Span::raw(format!("  filter \"{}\"", app.filter)));
    }
    Line::from(spans)
}

fn mode_span<'a>(mode: &str) -> Span<'a> {
    let style = if mode == "enforce" {
        Style::new().fg(Color::Red).bold()
    } else {
        Style::new()
    };
    Span::styled(mode.to_string(), style)
}

/// Second line: the host as a whole.
fn host_line<'a>(s: &Snapshot) -> Line<'a> {
    let h = &s.host;
    let mem = match (h.mem_total_bytes, h.mem_available_bytes) {
        (Some(t), Some(a)) if t > 0 => {
            let used = t.saturating_sub(a);
            format!(
                "host mem {}/{} ({:.0}%) avail {}",
                format::bytes(used),
                format::bytes(t),
                used as f64 * 100.0 / t as f64,
                format::bytes(a)
            )
        }
        (t, a) => format!(
            "host mem total {} avail {}",
            format::opt_bytes(t),
            format::opt_bytes(a)
        ),
    };
    let p = &h.pressure;
    Line::from(format!(
        "{mem}   psi avg10 some/full: mem {}/{} io {}/{} cpu {}",
        format::avg(p.memory.some_avg10),
        format::avg(p.memory.full_avg10),
        format::avg(p.io.some_avg10),
        format::avg(p.io.full_avg10),
        format::avg(p.cpu.some_avg10),
    ))
}

/// The banner for a lost or not yet made connection.
fn banner<'a>(app: &App) -> Option<Line<'a>> {
    let retry = format::duration(app.interval_s);
    match &app.conn {
        Conn::Connected => None,
        Conn::Connecting => Some(Line::styled(
            format!("connecting to {} ...", app.source),
            Style::new().fg(Color::Yellow),
        )),
        Conn::Lost {
            error,
            stale_s,
            attempts,
        } => {
            let data = if app.snapshot.is_some() {
                format!("data {} old", format::duration(*stale_s))
            } else {
                "no data yet".to_string()
            };
            // The error goes last: a narrow terminal cuts its tail only.
            Some(Line::styled(
                format!(
                    " CONNECTION LOST, retrying every {retry} (attempt {attempts}, {data}): {error} "
                ),
                Style::new().fg(Color::White).bg(Color::Red).bold(),
            ))
        }
    }
}
