//! The live view's state: the last snapshot, connection status, selection,
//! sort, filter, detail and help. Keys change it; rendering only reads it.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::outputs::snapshot::{Snapshot, UnitInfo};

/// Row order, cycled by `s`. Every order is "worst first".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Share of MemoryMax used (units without a limit by bytes, after).
    Memory,
    /// Unit memory growth rate.
    Growth,
    /// The highest of memory/io full and cpu some share of the last interval.
    Pressure,
    /// Ongoing stall duration, then windows in the last hour.
    Stall,
}

impl Sort {
    pub fn next(self) -> Sort {
        match self {
            Sort::Memory => Sort::Growth,
            Sort::Growth => Sort::Pressure,
            Sort::Pressure => Sort::Stall,
            Sort::Stall => Sort::Memory,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Memory => "memory",
            Sort::Growth => "growth",
            Sort::Pressure => "pressure",
            Sort::Stall => "stall",
        }
    }
}

/// How the last fetch went.
#[derive(Debug, Clone, PartialEq)]
pub enum Conn {
    /// No answer yet.
    Connecting,
    Connected,
    /// The last fetch failed; the previous snapshot (if any) is still shown.
    Lost {
        error: String,
        /// Seconds since the last good snapshot (or since start).
        stale_s: f64,
        /// Failed fetches in a row.
        attempts: u32,
    },
}

/// What the keys are currently typed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Normal,
    /// `/` pressed: characters go into the filter.
    Filter,
}

/// What a key asks of the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Redraw,
    Quit,
}

#[derive(Debug, Clone)]
pub struct App {
    pub snapshot: Option<Snapshot>,
    pub conn: Conn,
    /// Where snapshots come from, for the header and banner.
    pub source: String,
    pub interval_s: f64,
    pub sort: Sort,
    pub filter: String,
    pub input: Input,
    /// Index into `visible()`.
    pub selected: usize,
    pub detail: bool,
    pub help: bool,
}

impl App {
    pub fn new(source: String, interval_s: f64) -> Self {
        App {
            snapshot: None,
            conn: Conn::Connecting,
            source,
            interval_s,
            sort: Sort::Memory,
            filter: String::new(),
            input: Input::Normal,
            selected: 0,
            detail: false,
            help: false,
        }
    }

    /// A new snapshot arrived. The selection follows the selected user when
    /// rows move, and is clamped when that user is gone.
    pub fn set_snapshot(&mut self, snap: Snapshot) {
        let keep = self.selected_unit().map(|u| u.user.clone());
        self.snapshot = Some(snap);
        self.conn = Conn::Connected;
        self.reselect(keep.as_deref());
    }

    pub fn set_error(&mut self, error: String, stale_s: f64) {
        let attempts = match &self.conn {
            Conn::Lost { attempts, .. } => attempts.saturating_add(1),
            _ => 1,
        };
        self.conn = Conn::Lost {
            error,
            stale_s,
            attempts,
        };
    }

    /// Units after filter and sort, in display order.
    pub fn visible(&self) -> Vec<&UnitInfo> {
        let Some(snap) = &self.snapshot else {
            return Vec::new();
        };
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&UnitInfo> = snap
            .units
            .iter()
            .filter(|u| needle.is_empty() || u.user.to_lowercase().contains(&needle))
            .collect();
        rows.sort_by(|a, b| {
            sort_key(b, self.sort)
                .total_cmp(&sort_key(a, self.sort))
                .then_with(|| a.user.cmp(&b.user))
        });
        rows
    }

    pub fn selected_unit(&self) -> Option<&UnitInfo> {
        self.visible().get(self.selected).copied()
    }

    fn reselect(&mut self, user: Option<&str>) {
        let rows = self.visible();
        if let Some(pos) = user.and_then(|u| rows.iter().position(|r| r.user == u)) {
            self.selected = pos;
        } else {
            self.selected = self.selected.min(rows.len().saturating_sub(1));
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.input == Input::Filter {
            return self.on_filter_key(key.code);
        }
        if self.help {
            // Any key closes help; q still quits.
            self.help = false;
            return match key.code {
                KeyCode::Char('q') => Action::Quit,
                _ => Action::Redraw,
            };
        }
        let rows = self.visible().len();
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.detail => self.detail = false,
            KeyCode::Esc => return Action::Quit,
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(rows.saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = rows.saturating_sub(1),
            KeyCode::Enter => self.detail = !self.detail,
            KeyCode::Char('s') => {
                let keep = self.selected_unit().map(|u| u.user.clone());
                self.sort = self.sort.next();
                self.reselect(keep.as_deref());
            }
            KeyCode::Char('/') => self.input = Input::Filter,
            KeyCode::Char('?') => self.help = true,
            _ => return Action::None,
        }
        Action::Redraw
    }

    fn on_filter_key(&mut self, code: KeyCode) -> Action {
        let keep = self.selected_unit().map(|u| u.user.clone());
        match code {
            KeyCode::Enter => self.input = Input::Normal,
            KeyCode::Esc => {
                self.filter.clear();
                self.input = Input::Normal;
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) => self.filter.push(c),
            _ => return Action::None,
        }
        self.reselect(keep.as_deref());
        Action::Redraw
    }
}

/// Bigger is worse. NaN-free by construction (missing figures are -1).
fn sort_key(u: &UnitInfo, sort: Sort) -> f64 {
    match sort {
        Sort::Memory => match (u.memory.current_bytes, u.memory.max_bytes) {
            // Limited units first, by share; then unlimited ones by bytes
            // (scaled below 0 so they never outrank a limited unit).
            (Some(c), Some(m)) if m > 0 => c as f64 / m as f64,
            (Some(c), None) => -1.0 / (1.0 + c as f64),
            _ => -2.0,
        },
        Sort::Growth => u
            .growth_bytes_per_second
            .filter(|v| v.is_finite())
            .unwrap_or(-1e300),
        Sort::Pressure => [
            u.pressure.memory.full_share,
            u.pressure.io.full_share,
            u.pressure.cpu.some_share,
        ]
        .into_iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold(-1.0, f64::max),
        Sort::Stall => {
            let ongoing = u.stall.ongoing.as_ref().map_or(0.0, |w| w.duration_s);
            // Ongoing seconds dominate; the hour's counts break ties.
            ongoing * 1e6
                + f64::from(u.stall.last_hour_disconnect) * 1e3
                + f64::from(u.stall.last_hour_warning)
        }
    }
}
