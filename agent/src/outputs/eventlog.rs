//! The durable event log: JSON Lines under the state directory,
//! `events.jsonl` plus rotated `events.jsonl.1` (newest) .. `.N` (oldest).
//!
//! Each event is one `write(2)` of a whole line on an `O_APPEND` file, so a
//! SIGKILLed agent leaves at worst one torn last line; the page cache keeps
//! everything written before (no fsync: in a memory-thrash the agent must
//! not block on the disk between kills). On open, a torn last line is
//! terminated so the next event starts on its own line; readers skip lines
//! that do not parse.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::config::EventLogConfig;
use crate::model::event::Event;

/// Name of the current file in the state directory.
pub const FILE_NAME: &str = "events.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialize event: {0}")]
    Serialize(#[from] serde_json::Error),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EventLogError + 'a {
    move |source| EventLogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Path of rotated file `n` (1 = newest); 0 is the current file.
pub fn file_path(dir: &Path, n: usize) -> PathBuf {
    if n == 0 {
        dir.join(FILE_NAME)
    } else {
        dir.join(format!("{FILE_NAME}.{n}"))
    }
}

/// The writer. One per agent.
#[derive(Debug)]
pub struct EventLog {
    dir: PathBuf,
    file: File,
    size: u64,
    max_file_bytes: u64,
    keep_files: usize,
}

impl EventLog {
    /// Creates the directory if needed and opens `events.jsonl` for
    /// appending; terminates a torn last line left by a killed writer.
    pub fn open(dir: &Path, config: &EventLogConfig) -> Result<Self, EventLogError> {
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let path = file_path(dir, 0);
        let mut file = open_append(&path)?;
        let mut size = file.metadata().map_err(io("stat", &path))?.len();
        if size > 0 && !ends_with_newline(&mut file, &path)? {
            file.write_all(b"\n").map_err(io("write", &path))?;
            size += 1;
        }
        Ok(EventLog {
            dir: dir.to_path_buf(),
            file,
            size,
            max_file_bytes: config.max_file_bytes.max(1),
            keep_files: config.keep_files,
        })
    }

    /// Appends one event as one line in one write; rotates first when the
    /// line would take the file past its size limit.
    pub fn append(&mut self, event: &Event) -> Result<(), EventLogError> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_file_bytes {
            self.rotate()?;
        }
        let path = file_path(&self.dir, 0);
        // A regular-file write is not split by the kernel short of ENOSPC;
        // write_all only loops then.
        self.file.write_all(&line).map_err(io("write", &path))?;
        self.file.flush().map_err(io("flush", &path))?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), EventLogError> {
        if self.keep_files == 0 {
            let path = file_path(&self.dir, 0);
            self.file.set_len(0).map_err(io("truncate", &path))?;
            self.size = 0;
            return Ok(());
        }
        let oldest = file_path(&self.dir, self.keep_files);
        match std::fs::remove_file(&oldest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &oldest)(e));
            }
            _ => {}
        }
        for n in (0..self.keep_files).rev() {
            let from = file_path(&self.dir, n);
            let to = file_path(&self.dir, n + 1);
            match std::fs::rename(&from, &to) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("rename", &from)(e));
                }
                _ => {}
            }
        }
        let path = file_path(&self.dir, 0);
        self.file = open_append(&path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, EventLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(io("open", path))
}

fn ends_with_newline(file: &mut File, path: &Path) -> Result<bool, EventLogError> {
    let mut last = [0u8; 1];
    file.seek(SeekFrom::End(-1)).map_err(io("seek", path))?;
    file.read_exact(&mut last).map_err(io("read", path))?;
    Ok(last[0] == b'\n')
}

/// What a read found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReadResult {
    /// Oldest first.
    pub events: Vec<Event>,
    /// Lines that did not parse (torn by a kill, or garbage).
    pub skipped: usize,
    /// Files read, oldest first.
    pub files: Vec<PathBuf>,
}

/// Parses JSON Lines; blank lines are ignored, unparsable ones counted.
pub fn parse_lines(text: &str) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut skipped = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(e) => events.push(e),
            Err(_) => skipped += 1,
        }
    }
    (events, skipped)
}

/// Reads every file of the log, rotated ones oldest first, then the current
/// one. A missing directory or file is an empty log; the caller says so.
/// Non-UTF-8 bytes are replaced (and the line then usually skipped).
pub fn read_all(dir: &Path) -> Result<ReadResult, EventLogError> {
    let mut out = ReadResult::default();
    let mut rotated: Vec<(usize, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("read directory", dir)(e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix(FILE_NAME)
            .and_then(|s| s.strip_prefix('.'))
            .and_then(|s| s.parse::<usize>().ok())
        {
            rotated.push((n, entry.path()));
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut paths: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    paths.push(file_path(dir, 0));
    for path in paths {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("read", &path)(e)),
        };
        let (events, skipped) = parse_lines(&String::from_utf8_lossy(&bytes));
        out.events.extend(events);
        out.skipped += skipped;
        out.files.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::EventBody;

    fn ev(i: u32) -> Event {
        Event::new(
            f64::from(i),
            EventBody::UnitStart {
                user: format!("u{i}"),
                unit: format!("t3-serve@u{i}.service"),
            },
        )
    }

    fn cfg(max_file_bytes: u64, keep_files: usize) -> EventLogConfig {
        EventLogConfig {
            max_file_bytes,
            keep_files,
        }
    }

    #[test]
    fn append_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let mut log = EventLog::open(&state, &EventLogConfig::default()).expect("open");
        for i in 0..5 {
            log.append(&ev(i)).expect("append");
        }
        let r = read_all(&state).expect("read");
        assert_eq!(r.events, (0..5).map(ev).collect::<Vec<_>>());
        assert_eq!(r.skipped, 0);
    }

    #[test]
    fn torn_last_line_is_terminated_on_open_and_skipped_on_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = EventLog::open(dir.path(), &EventLogConfig::default()).expect("open");
        log.append(&ev(1)).expect("append");
        drop(log);
        let path = file_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(br#"{"v":1,"ts":2.0,"kind":"unit_st"#)
            .expect("torn write");
        drop(f);
        assert_eq!(read_all(dir.path()).expect("read").skipped, 1);
        let mut log = EventLog::open(dir.path(), &EventLogConfig::default()).expect("reopen");
        log.append(&ev(3)).expect("append");
        let r = read_all(dir.path()).expect("read");
        assert_eq!(r.events, vec![ev(1), ev(3)]);
        assert_eq!(r.skipped, 1);
    }

    #[test]
    fn rotation_keeps_n_files_and_reads_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line_len = serde_json::to_vec(&ev(10)).expect("ser").len() as u64 + 1;
        let mut log = EventLog::open(dir.path(), &cfg(line_len * 3, 2)).expect("open");
        for i in 10..30 {
            log.append(&ev(i)).expect("append");
        }
        assert!(file_path(dir.path(), 2).exists());
        assert!(!file_path(dir.path(), 3).exists());
        let r = read_all(dir.path()).expect("read");
        // Two full rotated files of 3 lines, the current one holds 2.
        let ts: Vec<f64> = r.events.iter().map(|e| e.ts).collect();
        assert_eq!(ts, (22..30).map(f64::from).collect::<Vec<_>>());
        assert_eq!(r.files.len(), 3);
        // Reopening picks up the current size.
        let log = EventLog::open(dir.path(), &cfg(line_len * 3, 2)).expect("reopen");
        assert_eq!(log.size, line_len * 2);
    }

    #[test]
    fn missing_empty_and_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = read_all(&dir.path().join("nope")).expect("missing dir is empty");
        assert!(r.events.is_empty() && r.files.is_empty());
        std::fs::write(file_path(dir.path(), 0), "").expect("write");
        assert!(read_all(dir.path()).expect("read").events.is_empty());
        std::fs::write(
            file_path(dir.path(), 0),
            b"garbage\n\n{\"v\":1}\n\xff\xfe\n".as_slice(),
        )
        .expect("write");
        let r = read_all(dir.path()).expect("read");
        assert_eq!((r.events.len(), r.skipped), (0, 3));
        std::fs::write(dir.path().join("events.jsonl.x"), "x").expect("write");
        assert_eq!(read_all(dir.path()).expect("read").files.len(), 1);
    }

    #[test]
    fn keep_zero_truncates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = EventLog::open(dir.path(), &cfg(10, 0)).expect("open");
        log.append(&ev(1)).expect("append");
        log.append(&ev(2)).expect("append");
        assert_eq!(read_all(dir.path()).expect("read").events, vec![ev(2)]);
    }
}
