//! The detail pane of the selected user: its processes (serve and runaway
//! candidate marked) and its recent events.

use ratatui::prelude::*;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Widget, Wrap};

use super::format;
use super::table::stall_style;
use crate::model::event::{RunawayReason, StallWindow};
use crate::outputs::snapshot::{ProcessInfo, UnitInfo};

pub struct Detail<'a> {
    pub unit: &'a UnitInfo,
    pub now: f64,
}

impl Widget for Detail<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let u = self.unit;
        let block = Block::default()
            .borders(Borders::TOP)
            .title(Line::from(vec![
                Span::styled(format!(" {} ", u.user), Style::new().bold()),
                Span::raw(format!(
                    "{}  pids {}  serve {} ",
                    u.unit,
                    u.pids_current.map_or("-".into(), |p| p.to_string()),
                    u.serve_pid.map_or("-".into(), |p| p.to_string()),
                )),
            ]));
        let inner = block.inner(area);
        block.render(area, buf);
        let [procs, events] = if inner.width >= 100 {
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .spacing(1)
                .areas(inner)
        } else {
            Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(inner)
        };
        Widget::render(processes(u), procs, buf);
        Paragraph::new(event_lines(u, self.now))
            .wrap(Wrap { trim: true })
            .render(events, buf);
    }
}

fn processes<'a>(u: &UnitInfo) -> Table<'a> {
    let mut procs: Vec<&ProcessInfo> = u.processes.iter().collect();
    procs.sort_by(|a, b| {
        b.rss_anon_bytes
            .cmp(&a.rss_anon_bytes)
            .then(a.pid.cmp(&b.pid))
    });
    let unit_bytes = u.memory.current_bytes.filter(|b| *b > 0);
    let rows = procs.into_iter().map(|p| {
        let share = unit_bytes.map(|t| p.rss_anon_bytes as f64 / t as f64);
        let (mark, style) = if p.is_candidate {
            ("candidate", Style::new().fg(Color::Magenta).bold())
        } else if p.is_serve {
            ("serve", Style::new().fg(Color::Cyan))
        } else {
            ("", Style::new())
        };
        Row::new(vec![
            Cell::from(p.pid.to_string()),
            Cell::from(p.comm.clone()),
            Cell::from(p.state.clone()),
            Cell::from(format::bytes(p.rss_anon_bytes)),
            Cell::from(format::rate(p.anon_growth_bytes_per_second)),
            Cell::from(format::share(share)),
            Cell::from(mark),
        ])
        .style(style)
    });
    Table::new(
        rows,
        [
            Constraint::Length(7),
            Constraint::Min(8),
            Constraint::Length(1),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(5),
            Constraint::Length(9),
        ],
    )
    .header(
        Row::new(["PID", "COMM", "S", "ANON", "GROWTH", "SHARE", ""]).style(Style::new().bold()),
    )
}

fn window_line<'a>(prefix: String, w: &StallWindow) -> Line<'a> {
    let culprit = w
        .culprit
        .as_ref()
        .map(|c| {
            format!(
                " culprit {}[{}] {}",
                c.comm,
                c.pid,
                format::bytes(c.rss_anon)
            )
        })
        .unwrap_or_default();
    Line::from(vec![
        Span::raw(prefix),
        Span::styled(format::duration(w.duration_s), stall_style(w.duration_s)),
        Span::raw(format!(
            " {} {}{culprit}",
            w.class.as_str(),
            w.cause.as_str()
        )),
    ])
}

fn event_lines<'a>(u: &UnitInfo, now: f64) -> Vec<Line<'a>> {
    let mut lines = vec![Line::styled("RECENT EVENTS", Style::new().bold())];
    if let Some(w) = &u.stall.ongoing {
        lines.push(window_line("stall ONGOING ".into(), w));
    }
    for e in u.episodes.iter().filter(|e| e.ongoing) {
        lines.push(Line::from(format!(
            "episode {} {}[{}] {} ongoing",
            e.kind,
            e.comm,
            e.tid,
            format::duration(e.duration_s)
        )));
    }
    if let Some(a) = &u.last_action {
        let at = u.last_action_at.map_or(String::new(), |t| {
            format!("{} ago ", format::duration((now - t).max(0.0)))
        });
        lines.push(Line::from(format!(
            "{at}runaway {} {}[{}] anon {} ({})",
            a.action.as_str(),
            a.comm,
            a.pid,
            format::bytes(a.rss_anon),
            reason(a.reason)
        )));
    }
    if let Some(o) = &u.last_oom {
        let at = u.last_oom_at.map_or(String::new(), |t| {
            format!("{} ago ", format::duration((now - t).max(0.0)))
        });
        lines.push(Line::from(format!(
            "{at}OOM kill ({}) {}[{}] anon {}",
            o.scope.as_str(),
            o.comm,
            o.pid,
            format::bytes(o.anon_rss)
        )));
    }
    for w in &u.stall.recent {
        let ago = format::duration((now - w.start).max(0.0));
        lines.push(window_line(format!("{ago} ago stall "), w));
    }
    if lines.len() == 1 {
        lines.push(Line::styled("none", Style::new().dim()));
    }
    lines
}

fn reason(r: RunawayReason) -> &'static str {
    match r {
        RunawayReason::KillThreshold => "kill threshold",
        RunawayReason::Projected => "projected to hit MemoryMax",
        RunawayReason::Livelock => "livelock between high and max",
        RunawayReason::HostGuard => "host guard",
    }
}
