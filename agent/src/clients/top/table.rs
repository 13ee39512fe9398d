//! The main table: one row per user, columns dropped by priority when the
//! terminal is narrow.

use ratatui::prelude::*;
use ratatui::widgets::{Cell, Paragraph, Row, StatefulWidget, Table, TableState, Widget};

use super::format;
use crate::model::event::ActionKind;
use crate::outputs::snapshot::{PressureInfo, UnitInfo};

/// The client watchdog's thresholds: heartbeat warning, then reconnect.
pub const WARNING_S: f64 = 10.0;
pub const DISCONNECT_S: f64 = 20.0;

/// Marks the selected row also where colours are lost (a pasted `--once`
/// has no selection; `tmux capture-pane` has no styles).
const HIGHLIGHT: &str = "> ";

/// Cells of the memory bar (the percentage follows it).
const BAR: usize = 10;

#[derive(Clone, Copy)]
enum Col {
    User,
    Memory,
    Used,
    Growth,
    ToMax,
    MemPsi,
    IoPsi,
    CpuPsi,
    Stall,
    Hour,
    Last,
}

/// (column, width, priority: 0 always shown, higher dropped first).
const COLUMNS: [(Col, u16, u8); 11] = [
    (Col::User, 10, 0),
    (Col::Memory, 15, 0),
    (Col::Used, 9, 2),
    (Col::Growth, 7, 1),
    (Col::ToMax, 6, 1),
    (Col::MemPsi, 8, 1),
    (Col::IoPsi, 8, 3),
    (Col::CpuPsi, 8, 3),
    (Col::Stall, 7, 0),
    (Col::Hour, 6, 2),
    (Col::Last, 18, 2),
];

fn title(c: Col) -> &'static str {
    match c {
        Col::User => "USER",
        Col::Memory => "MEMORY/MAX",
        Col::Used => "USED",
        Col::Growth => "GROWTH",
        Col::ToMax => "TO MAX",
        Col::MemPsi => "MEM full",
        Col::IoPsi => "IO full",
        Col::CpuPsi => "CPU some",
        Col::Stall => "STALL",
        Col::Hour => "1H W/D",
        Col::Last => "LAST ACTION/OOM",
    }
}

/// The columns that fit in `width`, in display order. Lower priorities are
/// added first; the last column may take whatever is left.
fn fit(width: u16) -> Vec<(Col, u16)> {
    let mut keep = [false; COLUMNS.len()];
    let mut used: u16 = 0;
    for prio in 0..=3 {
        for (i, (_, w, p)) in COLUMNS.iter().enumerate() {
            if *p == prio && used + w + u16::from(used > 0) <= width {
                used += w + u16::from(used > 0);
                keep[i] = true;
            }
        }
    }
    COLUMNS
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|((c, w, _), _)| (*c, *w))
        .collect()
}

pub struct UnitTable<'a> {
    pub rows: &'a [&'a UnitInfo],
    /// Unix time "ago" is measured from (the snapshot's).
    pub now: f64,
    pub selected: Option<usize>,
}

impl Widget for UnitTable<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        // The selection marker takes HIGHLIGHT.len() columns on every row.
        let cols = fit(area.width.saturating_sub(HIGHLIGHT.len() as u16));
        let header = Row::new(cols.iter().map(|(c, _)| Cell::from(title(*c))))
            .style(Style::new().bold().reversed());
        if self.rows.is_empty() {
            Widget::render(
                Table::new(Vec::<Row>::new(), cols.iter().map(|(_, w)| *w)).header(header),
                area,
                buf,
            );
            if area.height > 2 {
                let msg = Rect {
                    y: area.y + 2,
                    height: 1,
                    ..area
                };
                Paragraph::new("no t3-serve@ units found")
                    .alignment(Alignment::Center)
                    .render(msg, buf);
            }
            return;
        }
        let rows = self
            .rows
            .iter()
            .map(|u| Row::new(cols.iter().map(|(c, _)| cell(*c, u, self.now))));
        let widths = cols.iter().enumerate().map(|(i, (_, w))| {
            if i + 1 == cols.len() {
                Constraint::Min(*w)
            } else {
                Constraint::Length(*w)
            }
        });
        let table = Table::new(rows, widths)
            .header(header)
            .row_highlight_style(Style::new().reversed())
            .highlight_symbol(HIGHLIGHT);
        let mut state = TableState::default().with_selected(self.selected);
        StatefulWidget::render(table, area, buf, &mut state);
    }
}

fn cell<'a>(c: Col, u: &UnitInfo, now: f64) -> Cell<'a> {
    match c {
        Col::User => Cell::from(u.user.clone()),
        Col::Memory => Cell::from(memory_bar(u)),
        Col::Used => Cell::from(match (u.memory.current_bytes, u.memory.max_bytes) {
            (cur, Some(max)) => format!("{}/{}", format::opt_bytes(cur), format::bytes(max)),
            (cur, None) => format::opt_bytes(cur),
        }),
        Col::Growth => Cell::from(format::rate(u.growth_bytes_per_second)),
        Col::ToMax => Cell::from(match u.time_to_max_seconds {
            Some(t) => Line::styled(format::duration(t), ttm_style(t)),
            None => Line::from("-"),
        }),
        Col::MemPsi => Cell::from(pressure(&u.pressure.memory, true)),
        Col::IoPsi => Cell::from(pressure(&u.pressure.io, true)),
        Col::CpuPsi => Cell::from(pressure(&u.pressure.cpu, false)),
        Col::Stall => Cell::from(match &u.stall.ongoing {
            Some(w) => Line::styled(format::duration(w.duration_s), stall_style(w.duration_s)),
            None => Line::from("-"),
        }),
        Col::Hour => Cell::from(hour(u)),
        Col::Last => Cell::from(last(u, now)),
    }
}

/// "██████░░░░ 62%", or "no limit" when MemoryMax is "max".
fn memory_bar<'a>(u: &UnitInfo) -> Line<'a> {
    let (Some(cur), Some(max)) = (u.memory.current_bytes, u.memory.max_bytes) else {
        return match u.memory.current_bytes {
            Some(_) => Line::styled("no limit", Style::new().dim()),
            None => Line::from("-"),
        };
    };
    let ratio = if max == 0 {
        1.0
    } else {
        (cur as f64 / max as f64).clamp(0.0, 1.0)
    };
    let filled = ((ratio * BAR as f64).round() as usize).min(BAR);
    let color = if ratio >= 0.9 {
        Color::Red
    } else if ratio >= 0.75 {
        Color::Yellow
    } else {
        Color::Green
    };
    Line::from(vec![
        Span::styled("█".repeat(filled), Style::new().fg(color)),
        Span::styled("░".repeat(BAR - filled), Style::new().dim()),
        Span::styled(
            format!("{:>4}", format!("{:.0}%", ratio * 100.0)),
            Style::new().fg(color),
        ),
    ])
}

fn ttm_style(t: f64) -> Style {
    if t < 10.0 {
        Style::new().fg(Color::Red).bold()
    } else if t < 60.0 {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    }
}

/// Yellow from the heartbeat warning, red from the reconnect.
pub fn stall_style(d: f64) -> Style {
    if d >= DISCONNECT_S {
        Style::new().fg(Color::Red).bold()
    } else if d >= WARNING_S {
        Style::new().fg(Color::Yellow).bold()
    } else {
        Style::new()
    }
}

/// "share% avg10": the last interval's share (full for memory/io, some for
/// cpu, as the stall detector reads them) and the kernel's avg10.
fn pressure<'a>(p: &PressureInfo, full: bool) -> Line<'a> {
    let (share, avg) = if full {
        (p.full_share, p.full_avg10)
    } else {
        (p.some_share, p.some_avg10)
    };
    let text = format!("{:>3} {}", format::share(share), format::avg(avg));
    let style = match share {
        Some(s) if s >= 0.5 => Style::new().fg(Color::Red),
        Some(s) if s >= 0.1 => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    };
    Line::styled(text, style)
}

/// Windows of the last hour: warning / disconnect.
fn hour<'a>(u: &UnitInfo) -> Line<'a> {
    let (w, d) = (u.stall.last_hour_warning, u.stall.last_hour_disconnect);
    let style = if d > 0 {
        Style::new().fg(Color::Red)
    } else if w > 0 {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    };
    Line::styled(format!("{w}/{d}"), style)
}

/// The newer of the last runaway action and the last OOM kill, with its age.
pub fn last<'a>(u: &UnitInfo, now: f64) -> Line<'a> {
    let action = u.last_action.as_ref().map(|a| {
        let verb = match a.action {
            ActionKind::Observed => "would kill",
            ActionKind::Killed => "killed",
            ActionKind::Failed => "kill failed",
        };
        (
            u.last_action_at.unwrap_or(f64::NEG_INFINITY),
            format!("{verb} {}", a.comm),
        )
    });
    let oom = u.last_oom.as_ref().map(|o| {
        (
            u.last_oom_at.unwrap_or(f64::NEG_INFINITY),
            format!("OOM {}", o.comm),
        )
    });
    let newest = match (action, oom) {
        (Some(a), Some(o)) => Some(if o.0 > a.0 { o } else { a }),
        (a, o) => a.or(o),
    };
    match newest {
        None => Line::from("-"),
        Some((at, text)) => {
            let ago = if at.is_finite() {
                format!(" {} ago", format::duration((now - at).max(0.0)))
            } else {
                String::new()
            };
            let style = if text.starts_with("OOM") {
                Style::new().fg(Color::Red)
            } else {
                Style::new().fg(Color::Magenta)
            };
            Line::styled(format!("{text}{ago}"), style)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_by_priority() {
        let wide: Vec<_> = fit(200).iter().map(|(c, _)| title(*c)).collect();
        assert_eq!(wide.len(), COLUMNS.len(), "all fit at 200: {wide:?}");
        let narrow: Vec<_> = fit(60).iter().map(|(c, _)| title(*c)).collect();
        assert_eq!(
            narrow,
            [
                "USER",
                "MEMORY/MAX",
                "GROWTH",
                "TO MAX",
                "MEM full",
                "STALL"
            ]
        );
        let at_120 = fit(118);
        assert_eq!(at_120.len(), COLUMNS.len(), "all fit at 120");
    }
}
