//! The `?` overlay: keys and what the columns mean.

use ratatui::prelude::*;
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget};

const TEXT: &[(&str, &str)] = &[
    (
        "Up/Down j/k",
        "move the selection (Home/End g/G: first/last)",
    ),
    ("Enter", "open/close the detail pane of the selected user"),
    ("s", "cycle sort: memory, growth, pressure, stall"),
    ("/", "filter users: type, Enter keeps, Esc clears"),
    ("?", "this help (any key closes)"),
    ("q Esc Ctrl-C", "quit (Esc closes the detail pane first)"),
    ("", ""),
    (
        "MEMORY/MAX",
        "memory.current / MemoryMax; \"no limit\" when max",
    ),
    (
        "GROWTH, TO MAX",
        "unit growth rate, time until MemoryMax at it",
    ),
    (
        "MEM/IO/CPU",
        "stalled share of the last interval, then avg10",
    ),
    ("STALL", "ongoing stall: yellow >= 10 s, red >= 20 s"),
    ("1H W/D", "windows in the last hour: warning / disconnect"),
];

pub struct Help;

impl Widget for Help {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let w = area.width.min(72);
        let h = area.height.min(TEXT.len() as u16 + 2);
        let popup = Rect {
            x: area.x + (area.width - w) / 2,
            y: area.y + (area.height - h) / 2,
            width: w,
            height: h,
        };
        Clear.render(popup, buf);
        let lines: Vec<Line> = TEXT
            .iter()
            .map(|(k, v)| {
                Line::from(vec![
                    Span::styled(format!("{k:>15} "), Style::new().bold()),
                    Span::raw(*v),
                ])
            })
            .collect();
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(" help "))
            .render(popup, buf);
    }
}
