//! The whole screen as a pure function of `App`: header, table, detail pane,
//! footer, help overlay.

use ratatui::prelude::*;
use ratatui::widgets::{Paragraph, Widget};

use super::app::{App, Input};
use super::detail::Detail;
use super::header::{self, Header};
use super::help::Help;
use super::table::UnitTable;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [head, body, foot] = Layout::vertical([
            Constraint::Length(header::height(self)),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(area);
        Header { app: self }.render(head, buf);

        let rows = self.visible();
        let now = self.snapshot.as_ref().map_or(0.0, |s| s.generated_at);
        let selected = (!rows.is_empty()).then_some(self.selected);
        let detail_unit = if self.detail {
            self.selected_unit()
        } else {
            None
        };
        let (table_area, detail_area) = match detail_unit {
            Some(_) => {
                // The table keeps its rows (up to 40 % of the body); the
                // detail pane gets the rest.
                let want = (rows.len() as u16 + 1).min((body.height * 2 / 5).max(3));
                let [t, d] =
                    Layout::vertical([Constraint::Length(want), Constraint::Min(3)]).areas(body);
                (t, Some(d))
            }
            None => (body, None),
        };
        UnitTable {
            rows: &rows,
            now,
            selected,
        }
        .render(table_area, buf);
        if let (Some(u), Some(d)) = (detail_unit, detail_area) {
            Detail { unit: u, now }.render(d, buf);
        }
        footer(self).render(foot, buf);
        if self.help {
            Help.render(body, buf);
        }
    }
}

fn footer(app: &App) -> Paragraph<'static> {
    let line = match app.input {
        Input::Filter => Line::from(vec![
            Span::styled("filter: ", Style::new().bold()),
            Span::raw(format!("{}_", app.filter)),
            Span::styled("  (Enter keep, Esc clear)", Style::new().dim()),
        ]),
        Input::Normal => Line::styled(
            format!(
                "↑↓/jk move  Enter detail  s sort ({})  / filter  ? help  q quit",
                app.sort.as_str()
            ),
            Style::new().dim(),
        ),
    };
    Paragraph::new(line)
}
