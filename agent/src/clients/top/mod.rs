//! `t3pressure top`: the live terminal view of the agent's snapshot, and its
//! `--once` text/JSON form for scripts and tickets.
//!
//! Shaped like tokio-console: one loop over input, refresh ticks and fetch
//! results (here one channel fed by an input thread and a fetch thread); the
//! state lives in [`app::App`]; the screen is `impl Widget for &App`.
//!
//! Idle cost: both threads block (crossterm's reader, the fetch sleep), so
//! an idle view wakes once per refresh. Measured 0.65 % of a core (0.39 s
//! CPU in 60 s, debug build, 1 s refresh, 120x40 tmux pane, fixture
//! snapshot of 4 users) with `cargo test -p t3pressure-tests --test top_tmux
//! top_idle_cpu -- --ignored --nocapture`.

pub mod app;
mod detail;
pub mod format;
mod header;
mod help;
mod screen;
pub mod source;
mod table;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossterm::event::Event;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::Widget;
use ratatui::DefaultTerminal;

use self::app::{Action, App};
use self::source::{HttpSource, SnapshotSource, SourceError, Standalone};
use crate::cli::TopArgs;
use crate::outputs::snapshot::Snapshot;

/// Width of `--once` output when stdout is not a terminal.
const ONCE_WIDTH: u16 = 120;

pub fn main(args: TopArgs) -> anyhow::Result<ExitCode> {
    if !(args.interval.is_finite() && args.interval > 0.0) {
        anyhow::bail!("--interval must be a positive number of seconds");
    }
    let interval = Duration::from_secs_f64(args.interval.max(0.1));
    let source: Box<dyn SnapshotSource> = if args.standalone {
        Box::new(Standalone::new(
            &args.cgroup_root,
            &args.proc_root,
            &args.unit_glob,
        )?)
    } else {
        // Never longer than a refresh: a wedged agent shows as "lost".
        let timeout = interval.clamp(Duration::from_millis(200), Duration::from_secs(2));
        Box::new(HttpSource::new(&args.connect, timeout))
    };
    if args.once {
        return once(source, args.json);
    }
    live(source, interval)
}

/// `--once [--json]`: one fetch, printed, exit 1 when the fetch failed.
fn once(mut source: Box<dyn SnapshotSource>, json: bool) -> anyhow::Result<ExitCode> {
    let snap = source
        .fetch()
        .with_context(|| format!("no snapshot from {}", source.describe()))?;
    let mut out = std::io::stdout().lock();
    let text = if json {
        serde_json::to_string_pretty(&snap)? + "\n"
    } else {
        let width = if out.is_terminal() {
            crossterm::terminal::size().map_or(ONCE_WIDTH, |(w, _)| w)
        } else {
            ONCE_WIDTH
        };
        render_text(&snap, &source.describe(), width)
    };
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `top --once | head` is a normal use: a closed pipe is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The header and table as plain text (no escape codes, no selection), as
/// the live view draws them at `width` columns.
pub fn render_text(snap: &Snapshot, source: &str, width: u16) -> String {
    let mut app = App::new(source.to_string(), 1.0);
    app.set_snapshot(snap.clone());
    let rows = app.visible();
    // Header (2) + table header (1) + one line per unit (the empty-host
    // message needs 2).
    let height = 2 + 1 + (rows.len() as u16).max(2);
    let area = Rect::new(0, 0, width.max(20), height);
    let mut buf = Buffer::empty(area);
    let [head, body] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(area);
    header::Header { app: &app }.render(head, &mut buf);
    table::UnitTable {
        rows: &rows,
        now: snap.generated_at,
        selected: None,
    }
    .render(body, &mut buf);
    let mut text = String::new();
    for y in 0..area.height {
        let line: String = (0..area.width).map(|x| buf[(x, y)].symbol()).collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    while text.ends_with("\n\n") {
        text.pop();
    }
    text
}

enum Msg {
    Term(Event),
    /// The input reader failed or a worker thread panicked: leave cleanly.
    InputGone(String),
    Fetched(Box<Result<Snapshot, SourceError>>),
}

fn live(source: Box<dyn SnapshotSource>, interval: Duration) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("stdout is not a terminal: use `t3pressure top --once` for scripts");
    }
    let app = App::new(source.describe(), interval.as_secs_f64());
    let (tx, rx) = mpsc::channel();
    spawn_fetcher(source, interval, tx.clone())?;
    // Raw mode, alternate screen, and a panic hook that restores both.
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    spawn_input(tx)?;
    let result = event_loop(&mut terminal, app, &rx);
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

/// Fetches on a fixed cadence (measured from the start of each fetch) and
/// forwards every result, good or bad: the loop decides what to show.
fn spawn_fetcher(
    mut source: Box<dyn SnapshotSource>,
    interval: Duration,
    tx: mpsc::Sender<Msg>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("top-fetch".into())
        .spawn(move || loop {
            let _guard = PanicGuard(tx.clone(), "fetch");
            let started = Instant::now();
            if tx.send(Msg::Fetched(Box::new(source.fetch()))).is_err() {
                return;
            }
            std::thread::sleep(interval.saturating_sub(started.elapsed()));
        })
        .context("cannot start the fetch thread")?;
    Ok(())
}

/// Blocks in crossterm's reader, so an idle view costs no wakeups.
fn spawn_input(tx: mpsc::Sender<Msg>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("top-input".into())
        .spawn(move || loop {
            let _guard = PanicGuard(tx.clone(), "input");
            let msg = match crossterm::event::read() {
                Ok(ev) => Msg::Term(ev),
                Err(e) => Msg::InputGone(e.to_string()),
            };
            let gone = matches!(msg, Msg::InputGone(_));
            if tx.send(msg).is_err() || gone {
                return;
            }
        })
        .context("cannot start the input thread")?;
    Ok(())
}

/// Tells the loop when a worker thread unwinds, so the view ends (and the
/// terminal is restored by `live`) instead of staying up half-dead.
struct PanicGuard(mpsc::Sender<Msg>, &'static str);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self
                .0
                .send(Msg::InputGone(format!("{} thread panicked", self.1)));
        }
    }
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    mut app: App,
    rx: &mpsc::Receiver<Msg>,
) -> anyhow::Result<()> {
    let mut last_ok = Instant::now();
    terminal.draw(|f| f.render_widget(&app, f.area()))?;
    loop {
        let Ok(msg) = rx.recv() else {
            return Ok(());
        };
        let redraw = match msg {
            Msg::Term(Event::Key(key)) => match app.on_key(key) {
                Action::Quit => return Ok(()),
                Action::Redraw => true,
                Action::None => false,
            },
            Msg::Term(Event::Resize(..)) => true,
            Msg::Term(_) => false,
            Msg::InputGone(e) => anyhow::bail!("top stopped: {e}"),
            Msg::Fetched(result) => {
                match *result {
                    Ok(snap) => {
                        last_ok = Instant::now();
                        app.set_snapshot(snap);
                    }
                    Err(e) => app.set_error(e.to_string(), last_ok.elapsed().as_secs_f64()),
                }
                true
            }
        };
        if redraw {
            terminal.draw(|f| f.render_widget(&app, f.area()))?;
        }
    }
}
