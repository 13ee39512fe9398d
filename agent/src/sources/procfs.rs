//! Per-process reads under `--proc-root`: `status` each pass (ppid, uid,
//! state, RssAnon/RssFile/RssShmem) with a small parser of its own, `stat`
//! (with the `procfs` crate's parser) and `cmdline` only when a pid is first
//! seen (start time, argv[0] — never the rest of argv: agent command lines
//! can hold secrets).
//!
//! Why not `procfs::process::Status` each pass: it collects all ~55 keys
//! into a `HashMap<String, String>`; at 2000 processes per pass that was two
//! thirds of the agent's sampling CPU (perf, see `benches/sampling.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ::procfs::process::Stat;
use ::procfs::{FromRead, ProcError};

use super::cgroupfs::{is_vanished, ParseError, ReadError};
use crate::model::sample::ProcSample;

/// What does not change during a process's life, read once per pid.
#[derive(Debug, Clone)]
struct Identity {
    start_time: u64,
    argv0: String,
    /// comm at first sight: a different comm under the same pid means the
    /// pid was recycled (or the process exec'd), so the identity is re-read.
    comm: String,
    seen: u64,
}

/// Reads processes and remembers their identities across passes.
#[derive(Debug)]
pub struct ProcReader {
    root: PathBuf,
    idents: HashMap<i32, Identity>,
    pass: u64,
}

impl ProcReader {
    pub fn new(proc_root: &Path) -> Self {
        ProcReader {
            root: proc_root.to_path_buf(),
            idents: HashMap::new(),
            pass: 0,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Call once per sampling pass, after all reads: forgets pids not seen
    /// for a few passes (the cache stays bounded by live processes).
    pub fn end_pass(&mut self) {
        let pass = self.pass;
        self.idents.retain(|_, id| pass.saturating_sub(id.seen) < 3);
        self.pass += 1;
    }

    /// One process; `Ok(None)` when it exited (a normal event).
    pub fn read(&mut self, pid: i32, cgroup: &str) -> Result<Option<ProcSample>, ReadError> {
        let dir = self.root.join(pid.to_string());
        let Some(status_bytes) = read_bytes(&dir, "status")? else {
            return Ok(None);
        };
        // from_utf8 takes the fast ASCII path; lossy only for odd comms.
        let text = match std::str::from_utf8(&status_bytes) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(&status_bytes),
        };
        let status = parse_status(&text).map_err(|source| ReadError::Parse {
            path: dir.join("status"),
            source,
        })?;
        let ident = match self.idents.get_mut(&pid) {
            Some(id) if id.comm == status.name => {
                id.seen = self.pass;
                id.clone()
            }
            _ => {
                let Some(id) = self.read_identity(&dir, &status.name)? else {
                    return Ok(None);
                };
                self.idents.insert(pid, id.clone());
                id
            }
        };
        Ok(Some(ProcSample {
            pid,
            ppid: status.ppid,
            uid: status.uid,
            comm: status.name,
            argv0: ident.argv0,
            rss_anon: status.rss_anon,
            rss_file: status.rss_file,
            rss_shmem: status.rss_shmem,
            state: status.state,
            start_time: ident.start_time,
            cgroup: cgroup.to_string(),
        }))
    }

    fn read_identity(&self, dir: &Path, comm: &str) -> Result<Option<Identity>, ReadError> {
        let Some(stat_bytes) = read_bytes(dir, "stat")? else {
            return Ok(None);
        };
        let stat =
            Stat::from_read(stat_bytes.as_slice()).map_err(|e| parse_error(dir, "stat", e))?;
        // A kernel thread or zombie has an empty cmdline: argv0 stays empty.
        let argv0 = read_bytes(dir, "cmdline")?
            .map(|b| argv0_of(&b))
            .unwrap_or_default();
        Ok(Some(Identity {
            start_time: stat.starttime,
            argv0,
            comm: comm.to_string(),
            seen: self.pass,
        }))
    }
}

/// The keys of `/proc/PID/status` read each pass; sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFields {
    pub name: String,
    pub state: char,
    pub ppid: i32,
    /// Real uid.
    pub uid: u32,
    /// 0 for kernel threads and zombies, which have no Rss lines.
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
}

/// Parses the `Key:\tvalue` lines of `/proc/PID/status` that t3pressure
/// uses (see proc(5)); Name, State, PPid and Uid are required.
pub fn parse_status(text: &str) -> Result<StatusFields, ParseError> {
    let (mut name, mut state, mut ppid, mut uid) = (None, None, None, None);
    let (mut rss_anon, mut rss_file, mut rss_shmem) = (0, 0, 0);
    let kb = |v: &str| -> Result<u64, ParseError> {
        v.split_ascii_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n.saturating_mul(1024))
            .ok_or_else(|| ParseError::new(format!("bad size {v:?}")))
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            // The name is the rest of the line after the tab (it may hold spaces).
            "Name" => name = Some(value.strip_prefix('\t').unwrap_or(value).to_string()),
            "State" => state = value.trim_start().chars().next(),
            "PPid" => ppid = value.trim().parse::<i32>().ok(),
            "Uid" => {
                uid = value
                    .split_ascii_whitespace()
                    .next()
                    .and_then(|u| u.parse().ok())
            }
            "RssAnon" => rss_anon = kb(value)?,
            "RssFile" => rss_file = kb(value)?,
            "RssShmem" => {
                rss_shmem = kb(value)?;
                // The last key needed: skip the long tail (signal masks, cpus).
                break;
            }
            _ => {}
        }
    }
    let missing = |k: &str| ParseError::new(format!("status without a valid {k}"));
    Ok(StatusFields {
        name: name.ok_or_else(|| missing("Name"))?,
        state: state.ok_or_else(|| missing("State"))?,
        ppid: ppid.ok_or_else(|| missing("PPid"))?,
        uid: uid.ok_or_else(|| missing("Uid"))?,
        rss_anon,
        rss_file,
        rss_shmem,
    })
}

/// The first NUL-separated element of a cmdline, lossily decoded.
pub fn argv0_of(cmdline: &[u8]) -> String {
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(first).into_owned()
}

fn read_bytes(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, ReadError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if is_vanished(&e) => Ok(None),
        Err(source) => Err(ReadError::Io { path, source }),
    }
}

fn parse_error(dir: &Path, name: &str, e: ProcError) -> ReadError {
    ReadError::Parse {
        path: dir.join(name),
        source: ParseError::new(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = include_str!("../../fixtures/kernel-6.1/proc/pid/status");
    const STAT: &str = include_str!("../../fixtures/kernel-6.1/proc/pid/stat");
    const CMDLINE: &[u8] = include_bytes!("../../fixtures/kernel-6.1/proc/pid/cmdline");

    fn fake_proc(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("205");
        std::fs::create_dir(&dir).expect("mkdir");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("write");
        }
        root
    }

    #[test]
    fn captured_process() {
        let root = fake_proc(&[
            ("status", STATUS.as_bytes()),
            ("stat", STAT.as_bytes()),
            ("cmdline", CMDLINE),
        ]);
        let mut r = ProcReader::new(root.path());
        let p = r.read(205, "/u").expect("read").expect("present");
        assert_eq!(p.ppid, 191);
        assert_eq!(p.uid, 1000);
        assert_eq!(p.comm, "python3");
        assert_eq!(p.argv0, "python3", "argv0 only, never the script");
        assert_eq!(p.rss_anon, 309612 * 1024);
        assert_eq!(p.rss_file, 3456 * 1024);
        assert_eq!(p.state, 'S');
        assert_eq!(p.start_time, 1801);
        assert_eq!(p.cgroup, "/u");
    }

    #[test]
    fn vanished_process_is_none() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut r = ProcReader::new(root.path());
        assert!(r.read(4242, "/u").expect("no error").is_none());
        // status there but stat gone (exited between the two reads)
        let root = fake_proc(&[("status", STATUS.as_bytes())]);
        let mut r = ProcReader::new(root.path());
        assert!(r.read(205, "/u").expect("no error").is_none());
    }

    #[test]
    fn malformed_status_is_a_parse_error() {
        let root = fake_proc(&[("status", b"garbage"), ("stat", STAT.as_bytes())]);
        let mut r = ProcReader::new(root.path());
        let e = r.read(205, "/u").expect_err("malformed");
        assert_eq!(e.file_name(), "status");
        let root = fake_proc(&[("status", STATUS.as_bytes()), ("stat", b"")]);
        let mut r = ProcReader::new(root.path());
        assert_eq!(
            r.read(205, "/u").expect_err("malformed").file_name(),
            "stat"
        );
    }

    #[test]
    fn status_parser_on_captured_and_broken_input() {
        let s = parse_status(STATUS).expect("parse");
        assert_eq!(s.name, "python3");
        assert_eq!((s.state, s.ppid, s.uid), ('S', 191, 1000));
        assert_eq!(s.rss_anon, 309612 * 1024);
        assert_eq!(s.rss_shmem, 0);
        let kthread = "Name:\tkworker/0:1 x\nState:\tI (idle)\nPPid:\t2\nUid:\t0\t0\t0\t0\n";
        let k = parse_status(kthread).expect("kernel thread");
        assert_eq!(k.name, "kworker/0:1 x");
        assert_eq!(k.rss_anon, 0);
        assert!(parse_status("").is_err());
        assert!(parse_status("Name:\tx\nState:\tS\nPPid:\tone\nUid:\t0\n").is_err());
        let bad_rss = "Name:\tx\nState:\tS\nPPid:\t1\nUid:\t0\nRssAnon:\tmany kB\n";
        assert!(parse_status(bad_rss).is_err());
    }

    #[test]
    fn argv0_edge_cases() {
        assert_eq!(argv0_of(b""), "");
        assert_eq!(argv0_of(b"node\0--secret=x\0"), "node");
        assert_eq!(argv0_of(b"no-nul"), "no-nul");
    }
}
