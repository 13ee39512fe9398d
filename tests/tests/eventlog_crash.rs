//! The event log survives its writer being SIGKILLed mid-stream: nothing
//! written before is lost, the next writer starts on a new line after a torn
//! one, and `t3pressure events` reads everything.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use t3pressure::config::EventLogConfig;
use t3pressure::model::event::{Event, EventBody};
use t3pressure::outputs::eventlog::{file_path, read_all, EventLog};
use t3pressure_tests::procs::{agent_bin, wait_until};

const WRITER: &str = env!("CARGO_BIN_EXE_t3-eventlog-writer");

fn seq(e: &Event) -> Option<u64> {
    match &e.body {
        EventBody::AgentStop { reason } => reason.strip_prefix("seq ")?.parse().ok(),
        _ => None,
    }
}

#[test]
fn sigkilled_writer_loses_nothing_earlier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(WRITER)
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready");
    // Let it write and rotate at least twice, then kill it mid-stream.
    assert!(
        wait_until(Duration::from_secs(20), || file_path(dir.path(), 2)
            .exists()),
        "the writer did not rotate within 20 s"
    );
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap");

    // What a writer killed inside a multi-part write would leave behind
    // (ours writes each line in one call, so we add the torn tail here).
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(file_path(dir.path(), 0))
        .expect("open current file");
    f.write_all(br#"{"v":1,"ts":1e9,"kind":"agent_st"#)
        .expect("torn tail");
    drop(f);

    let before = read_all(dir.path()).expect("read after the kill");
    let seqs: Vec<u64> = before.events.iter().filter_map(seq).collect();
    let n = seqs.len() as u64;
    assert!(n > 100, "the writer wrote only {n} events");
    assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "a gap: an event was lost");
    assert!(
        before.files.len() > 1,
        "the stream should have rotated: {n} events in {:?}",
        before.files
    );
    assert_eq!(before.skipped, 1, "only the torn tail is unparsable");

    let mut log = EventLog::open(
        dir.path(),
        &EventLogConfig {
            max_file_bytes: 64 * 1024,
            keep_files: 1000,
        },
    )
    .expect("reopen");
    let marker = Event::new(
        2e9,
        EventBody::AgentStart {
            version: "test".into(),
            config_hash: "x".into(),
            mode: "observe".into(),
            bpf_loaded: false,
        },
    );
    log.append(&marker).expect("append after the torn line");
    let after = read_all(dir.path()).expect("read");
    assert_eq!(after.events.len() as u64, n + 1);
    assert_eq!(after.events.last(), Some(&marker));
    assert_eq!(after.skipped, 1);

    // The command an on-call engineer runs reads it all.
    let out = Command::new(agent_bin())
        .args(["events", "--json", "--state-dir"])
        .arg(dir.path())
        .output()
        .expect("run t3pressure events");
    assert!(out.status.success(), "{out:?}");
    let lines = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    assert_eq!(lines, n + 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 unparsable line"), "{stderr}");
}
