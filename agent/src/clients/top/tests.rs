//! Rendering (TestBackend + insta) and key-handling tests of `top`.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::{Action, App, Conn, Input, Sort};
use super::fixtures::{empty_host, several_users};
use super::render_text;

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn app_with(snap: crate::outputs::snapshot::Snapshot) -> App {
    let mut app = App::new("127.0.0.1:9773".into(), 1.0);
    app.set_snapshot(snap);
    app
}

/// The screen as text lines (styles are covered by the style assertions).
fn draw(app: &App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    term.draw(|f| f.render_widget(app, f.area())).expect("draw");
    let buf = term.backend().buffer();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn users(app: &App) -> Vec<String> {
    app.visible().iter().map(|u| u.user.clone()).collect()
}

#[test]
fn several_users_wide() {
    insta::assert_snapshot!(draw(&app_with(several_users()), 120, 14));
}

#[test]
fn several_users_narrow() {
    insta::assert_snapshot!(draw(&app_with(several_users()), 60, 12));
}

#[test]
fn empty_host_screen() {
    insta::assert_snapshot!(draw(&app_with(empty_host()), 100, 8));
}

#[test]
fn detail_of_stalled_user() {
    let mut app = app_with(several_users());
    app.sort = Sort::Stall;
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.selected_unit().map(|u| u.user.as_str()), Some("bob"));
    insta::assert_snapshot!(draw(&app, 120, 22));
}

#[test]
fn detail_narrow() {
    let mut app = app_with(several_users());
    app.on_key(key(KeyCode::Enter));
    insta::assert_snapshot!(draw(&app, 60, 24));
}

#[test]
fn help_overlay() {
    let mut app = app_with(several_users());
    app.on_key(key(KeyCode::Char('?')));
    insta::assert_snapshot!(draw(&app, 100, 20));
    assert_eq!(app.on_key(key(KeyCode::Char('x'))), Action::Redraw);
    assert!(!app.help, "any key closes help");
}

#[test]
fn lost_connection_banner_keeps_last_data() {
    let mut app = app_with(several_users());
    app.set_error(
        "cannot reach the agent at 127.0.0.1:9773: Connection refused".into(),
        3.0,
    );
    app.set_error(
        "cannot reach the agent at 127.0.0.1:9773: Connection refused".into(),
        4.0,
    );
    assert!(matches!(app.conn, Conn::Lost { attempts: 2, .. }));
    insta::assert_snapshot!(draw(&app, 120, 10));
}

#[test]
fn no_data_yet_banner() {
    let mut app = App::new("127.0.0.1:1".into(), 1.0);
    app.set_error("standalone mode not wired yet".into(), 1.0);
    let screen = draw(&app, 120, 6);
    assert!(screen.contains("CONNECTION LOST"), "{screen}");
    assert!(screen.contains("standalone mode not wired yet"), "{screen}");
    assert!(screen.contains("no data yet"), "{screen}");
}

#[test]
fn stall_colours_at_10_and_20_seconds() {
    use ratatui::style::Color;
    let app = app_with(several_users());
    let mut term = Terminal::new(TestBackend::new(120, 10)).expect("test terminal");
    term.draw(|f| f.render_widget(&app, f.area()))
        .expect("draw");
    let buf = term.backend().buffer();
    // Find bob's "23s" in the STALL column.
    let pos = (0..10u16)
        .flat_map(|y| (0..118u16).map(move |x| (x, y)))
        .find(|&(x, y)| {
            buf[(x, y)].symbol() == "2"
                && buf[(x + 1, y)].symbol() == "3"
                && buf[(x + 2, y)].symbol() == "s"
        })
        .expect("bob's ongoing stall shown");
    assert_eq!(buf[pos].fg, Color::Red, "past 20 s is red");
    assert_eq!(super::table::stall_style(12.0).fg, Some(Color::Yellow));
    assert_eq!(super::table::stall_style(9.9).fg, None);
}

#[test]
fn no_limit_is_not_zero_percent() {
    let screen = draw(&app_with(several_users()), 120, 10);
    let dave = screen
        .lines()
        .find(|l| l.contains("dave"))
        .expect("dave row");
    let memory = &dave[dave.find("dave").expect("user")..dave.find("700M").expect("used")];
    assert!(memory.contains("no limit"), "{dave}");
    assert!(!memory.contains('%'), "{dave}");
}

#[test]
fn sort_cycles_and_orders_worst_first() {
    let mut app = app_with(several_users());
    assert_eq!(app.sort, Sort::Memory);
    assert_eq!(users(&app), ["carol", "bob", "alice", "dave"]);
    app.on_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort, Sort::Growth);
    assert_eq!(users(&app), ["carol", "bob", "alice", "dave"]);
    app.on_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort, Sort::Pressure);
    assert_eq!(users(&app), ["bob", "carol", "alice", "dave"]);
    app.on_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort, Sort::Stall);
    assert_eq!(users(&app)[..2], ["bob", "carol"]);
    app.on_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort, Sort::Memory);
}

#[test]
fn selection_follows_user_across_sort_and_stays_in_bounds() {
    let mut app = app_with(several_users());
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.selected, 0, "no wrap above the top");
    for _ in 0..10 {
        app.on_key(key(KeyCode::Char('j')));
    }
    assert_eq!(app.selected, 3, "clamped at the last row");
    assert_eq!(app.selected_unit().map(|u| u.user.as_str()), Some("dave"));
    app.on_key(key(KeyCode::Char('s')));
    assert_eq!(app.selected_unit().map(|u| u.user.as_str()), Some("dave"));
    app.on_key(key(KeyCode::Char('k')));
    app.on_key(key(KeyCode::Home));
    assert_eq!(app.selected, 0);
    app.on_key(key(KeyCode::End));
    assert_eq!(app.selected, 3);
    // A refresh where units vanished clamps the selection.
    let mut snap = several_users();
    snap.units.truncate(1);
    app.set_snapshot(snap);
    assert_eq!(app.selected, 0);
    // Empty host: moving does nothing and nothing is selected.
    app.set_snapshot(empty_host());
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.selected, 0);
    assert!(app.selected_unit().is_none());
}

#[test]
fn filter_types_keeps_and_clears() {
    let mut app = app_with(several_users());
    app.on_key(key(KeyCode::Char('/')));
    assert_eq!(app.input, Input::Filter);
    for c in "ca".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(users(&app), ["carol"]);
    // 'q' while typing is text, not quit.
    assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Redraw);
    assert!(users(&app).is_empty());
    app.on_key(key(KeyCode::Backspace));
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.input, Input::Normal);
    assert_eq!(users(&app), ["carol"]);
    app.on_key(key(KeyCode::Char('/')));
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.filter, "");
    assert_eq!(users(&app).len(), 4);
}

#[test]
fn quit_keys() {
    let mut app = app_with(several_users());
    assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
    assert_eq!(
        app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Action::Quit
    );
    app.on_key(key(KeyCode::Enter));
    assert_eq!(
        app.on_key(key(KeyCode::Esc)),
        Action::Redraw,
        "Esc closes detail"
    );
    assert!(!app.detail);
    assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Quit);
}

#[test]
fn once_text_has_no_escape_codes() {
    let text = render_text(&several_users(), "127.0.0.1:9773", 120);
    assert!(!text.contains('\u{1b}'), "plain text");
    insta::assert_snapshot!(text);
}

#[test]
fn once_text_empty_host() {
    insta::assert_snapshot!(render_text(&empty_host(), "127.0.0.1:9773", 80));
}

/// The stub server of the tmux test serves this file; keep it in step with
/// the fixture (`T3_TOP_WRITE_FIXTURE=1` rewrites it).
#[test]
fn fixture_json_is_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/clients/top/testdata/several_users.json"
    );
    let json = serde_json::to_string_pretty(&several_users()).expect("serialize") + "\n";
    if std::env::var_os("T3_TOP_WRITE_FIXTURE").is_some() {
        std::fs::write(path, &json).expect("write fixture");
    }
    let on_disk = std::fs::read_to_string(path).expect("fixture present");
    assert_eq!(on_disk, json, "run with T3_TOP_WRITE_FIXTURE=1 to refresh");
    let back: crate::outputs::snapshot::Snapshot =
        serde_json::from_str(&on_disk).expect("fixture parses as a Snapshot");
    assert_eq!(back.units.len(), several_users().units.len());
}

#[test]
fn standalone_header_says_no_bpf() {
    let mut snap = several_users();
    snap.agent.from_agent = false;
    let screen = draw(&app_with(snap), 120, 6);
    let first = screen.lines().next().expect("header line");
    assert!(first.contains("standalone (no BPF)"), "{first}");
    assert!(!first.contains("BPF off"), "{first}");
}

#[test]
fn many_users_keep_the_selection_on_screen() {
    let mut snap = several_users();
    let template = snap.units[0].clone();
    snap.units = (0..50)
        .map(|i| {
            let mut u = template.clone();
            u.user = format!("user{i:02}");
            u
        })
        .collect();
    let mut app = app_with(snap);
    for _ in 0..45 {
        app.on_key(key(KeyCode::Down));
    }
    let screen = draw(&app, 120, 20);
    let selected = screen
        .lines()
        .find(|l| l.starts_with("> "))
        .expect("selected row visible");
    assert!(selected.contains("user45"), "{selected}");
}
