//! Per-process reads under `--proc-root`, through descriptors kept open
//! across passes (see `fdcache`): `statm` each pass (anon RSS = resident -
//! shared, exact), and `status` (ppid, uid, state, name, the file/shmem
//! split) on first sight and every [`STATUS_EVERY`]th read, with a small
//! byte parser of its own; `stat` (with the `procfs` crate's parser) and
//! `cmdline` only when a pid is first seen (start time, argv[0] — never the
//! rest of argv: agent command lines can hold secrets).
//!
//! Why `statm`: on a real kernel `status` costs ~10 µs a read (the kernel
//! formats ~55 lines, whatever prefix is read), `statm` ~1.3 µs (measured
//! on this build box, `benches/README.md`); at 2000 processes that is 20 ms
//! against 2.6 ms a pass. What `statm` lacks (ppid, uid, state, name) moves
//! slowly; what the runaway catcher needs (anon RSS) it has, exactly.
//!
//! Why not `procfs::process::Status`: it collects all ~55 keys into a
//! `HashMap<String, String>`; at 2000 processes per pass that was two
//! thirds of the agent's sampling CPU (perf, see `benches/README.md`). Why
//! not even `&str`: UTF-8 validation and line splitting of the whole file
//! were a quarter of a pass; the byte parser stops after `RssShmem`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::procfs::process::Stat;
use ::procfs::{FromRead, ProcError};

use super::cgroupfs::{is_vanished, ParseError, ReadError};
use super::fdcache::{self, FdBudget, Got, Slot};
use crate::model::sample::ProcSample;

/// What does not change during a process's life, read once per pid. The
/// strings are shared with every `ProcSample` of the process.
#[derive(Debug, Clone)]
struct Identity {
    start_time: u64,
    argv0: Arc<str>,
    /// comm at first sight: a different comm under the same pid means the
    /// pid was recycled (or the process exec'd), so the identity is re-read.
    /// Hence always the comm of the last `status` too.
    comm: Arc<str>,
}

/// A process's `status` is read on first sight, after its `statm`
/// descriptor went stale, and every this many reads; `statm` every read.
pub const STATUS_EVERY: u8 = 5;

/// What the sampler keeps per pid of a unit, for as long as the pid is in
/// the unit's `cgroup.procs`: the open `statm`, the identity and the last
/// `status` fields.
#[derive(Debug, Default)]
pub struct ProcSlot {
    statm: Slot,
    status: Slot,
    ident: Option<Identity>,
    last: Option<StatusFields>,
    /// Reads since `status` was last read.
    since_status: u8,
}

impl ProcSlot {
    /// Closes the descriptor (the pid left, or descriptors are short).
    pub fn close(&mut self, budget: &mut FdBudget) {
        self.statm.close(budget);
        self.status.close(budget);
    }

    pub fn is_open(&self) -> bool {
        self.statm.is_open()
    }

    /// Forgets the process: the pid may be another one's now.
    fn forget(&mut self) {
        self.ident = None;
        self.last = None;
    }
}

/// Reads processes; the per-pid state lives in the caller's [`ProcSlot`]s.
#[derive(Debug)]
pub struct ProcReader {
    root: PathBuf,
    /// Reused for every read.
    buf: Vec<u8>,
    page_size: u64,
}

impl ProcReader {
    pub fn new(proc_root: &Path) -> Self {
        ProcReader {
            root: proc_root.to_path_buf(),
            buf: Vec::with_capacity(4096),
            page_size: page_size(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One process; `Ok(None)` when it exited (a normal event). `evict`
    /// frees descriptors when the process has none left. `cgroup` is shared
    /// by the samples of every process of that cgroup.
    pub fn read(
        &mut self,
        pid: i32,
        cgroup: &Arc<str>,
        slot: &mut ProcSlot,
        budget: &mut FdBudget,
        evict: &mut dyn FnMut(&mut FdBudget),
    ) -> Result<Option<ProcSample>, ReadError> {
        let dir = || self.root.join(pid.to_string());
        // An open `statm` of a process that exited reads ESRCH (or, on a
        // test's tmpfs, nothing): stale, opened again by name.
        let open = || fdcache::open_path(&dir().join("statm"), false);
        let got = fdcache::read(
            &mut slot.statm,
            budget,
            &mut self.buf,
            (true, usize::MAX),
            open,
            evict,
        );
        match got {
            Got::Data { reopened } => {
                if reopened {
                    // Another process may hold the pid now.
                    slot.forget();
                    slot.status.close(budget);
                }
            }
            Got::Gone => {
                slot.forget();
                slot.status.close(budget);
                return Ok(None);
            }
            Got::NoFds(source) | Got::Failed(source) => {
                return Err(ReadError::Io {
                    path: dir().join("statm"),
                    source,
                })
            }
        }
        let statm = parse_statm(&self.buf).map_err(|source| ReadError::Parse {
            path: dir().join("statm"),
            source,
        })?;
        if slot.last.is_none() || slot.since_status + 1 >= STATUS_EVERY {
            let status = read_status(&mut self.buf, &dir, &mut slot.status, budget, evict)?;
            let Some(status) = status else {
                slot.forget();
                return Ok(None);
            };
            slot.last = Some(status);
            slot.since_status = 0;
        } else {
            slot.since_status += 1;
        }
        let Some(status) = slot.last.as_ref() else {
            return Ok(None);
        };
        let ident = match &slot.ident {
            Some(id) if *id.comm == *status.name => id,
            _ => {
                let Some(id) = read_identity(&dir(), &status.name, budget, evict)? else {
                    return Ok(None);
                };
                slot.ident.insert(id)
            }
        };
        let page = self.page_size;
        let shared = statm.shared.saturating_mul(page);
        // The file/shmem split as of the last `status`; their sum is fresh.
        let rss_shmem = status.rss_shmem.min(shared);
        Ok(Some(ProcSample {
            pid,
            ppid: status.ppid,
            uid: status.uid,
            // The same name as the status's (checked above), shared.
            comm: Arc::clone(&ident.comm),
            argv0: Arc::clone(&ident.argv0),
            rss_anon: statm
                .resident
                .saturating_sub(statm.shared)
                .saturating_mul(page),
            rss_file: shared - rss_shmem,
            rss_shmem,
            state: status.state,
            start_time: ident.start_time,
            cgroup: Arc::clone(cgroup),
        }))
    }
}

/// `status` through its slot; `None` when the process is gone.
fn read_status(
    buf: &mut Vec<u8>,
    dir: &dyn Fn() -> PathBuf,
    slot: &mut Slot,
    budget: &mut FdBudget,
    evict: &mut dyn FnMut(&mut FdBudget),
) -> Result<Option<StatusFields>, ReadError> {
    // The path is made only to open by name or to name an error: a cached
    // descriptor needs none.
    let path = || dir().join("status");
    let open = || fdcache::open_path(&path(), false);
    // The start of the file is enough (RssShmem ends near byte 400).
    let mut got = fdcache::read(slot, budget, buf, (true, STATUS_PREFIX), open, evict);
    let mut fields = None;
    if let Got::Data { .. } = got {
        match parse_status_prefix(buf) {
            Ok((f, true)) => fields = Some(f),
            _ if buf.len() < STATUS_PREFIX => {}
            // Cut before RssShmem (long groups or name): all of it.
            _ => got = fdcache::read(slot, budget, buf, (true, usize::MAX), open, evict),
        }
    }
    match got {
        Got::Data { .. } => {}
        Got::Gone => return Ok(None),
        Got::NoFds(source) | Got::Failed(source) => {
            return Err(ReadError::Io {
                path: path(),
                source,
            })
        }
    }
    match fields {
        Some(f) => Ok(Some(f)),
        None => parse_status(buf)
            .map(Some)
            .map_err(|source| ReadError::Parse {
                path: path(),
                source,
            }),
    }
}

/// The kernel's page size (`statm` counts pages).
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// The fields of `/proc/PID/statm` t3pressure uses, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statm {
    pub resident: u64,
    /// File-backed and shmem pages (RssFile + RssShmem).
    pub shared: u64,
}

/// `size resident shared text lib data dt` (proc(5)), pages. Not the
/// `procfs` crate's `StatM`: it reads into a `String` per call, and this runs
/// for every process on every pass.
pub fn parse_statm(text: &[u8]) -> Result<Statm, ParseError> {
    let mut it = text
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let mut field = |name: &str| {
        it.next().and_then(first_number).ok_or_else(|| {
            ParseError::new(format!(
                "statm without a valid {name}: {:?}",
                String::from_utf8_lossy(&text[..text.len().min(80)])
            ))
        })
    };
    let _size = field("size")?;
    let resident = field("resident")?;
    let shared = field("shared")?;
    if shared > resident {
        return Err(ParseError::new(format!(
            "statm: shared {shared} > resident {resident}"
        )));
    }
    Ok(Statm { resident, shared })
}

fn read_identity(
    dir: &Path,
    comm: &str,
    budget: &mut FdBudget,
    evict: &mut dyn FnMut(&mut FdBudget),
) -> Result<Option<Identity>, ReadError> {
    let mut read_bytes = |name: &str| -> Result<Option<Vec<u8>>, ReadError> {
        let path = dir.join(name);
        match fdcache::open_evicting(budget, || std::fs::read(&path), evict) {
            Ok(b) => Ok(Some(b)),
            Err(e) if is_vanished(&e) => Ok(None),
            Err(source) => Err(ReadError::Io { path, source }),
        }
    };
    let Some(stat_bytes) = read_bytes("stat")? else {
        return Ok(None);
    };
    let stat = Stat::from_read(stat_bytes.as_slice()).map_err(|e| parse_error(dir, "stat", e))?;
    // A kernel thread or zombie has an empty cmdline: argv0 stays empty.
    let argv0 = read_bytes("cmdline")?
        .map(|b| argv0_of(&b))
        .unwrap_or_default();
    Ok(Some(Identity {
        start_time: stat.starttime,
        argv0: argv0.into(),
        comm: comm.into(),
    }))
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

/// The first whitespace-separated ASCII decimal number of `v`.
fn first_number(v: &[u8]) -> Option<u64> {
    let start = v.iter().position(|b| !b.is_ascii_whitespace())?;
    let digits = &v[start..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 || (end < digits.len() && !digits[end].is_ascii_whitespace()) {
        return None;
    }
    digits[..end].iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Parses the `Key:\tvalue` lines of `/proc/PID/status` that t3pressure
/// uses (see proc(5)), as bytes: no UTF-8 validation of the whole file,
/// and it stops after `RssShmem`. Name, State, PPid and Uid are required.
pub fn parse_status(text: &[u8]) -> Result<StatusFields, ParseError> {
    parse_status_prefix(text).map(|(fields, _)| fields)
}

/// How much of `status` is read first: up to `RssShmem` with room to spare.
pub const STATUS_PREFIX: usize = 512;

/// Like [`parse_status`]; also says whether `RssShmem`'s line was complete,
/// so that a prefix of the file can be told from a short (kernel thread)
/// file.
pub fn parse_status_prefix(text: &[u8]) -> Result<(StatusFields, bool), ParseError> {
    let mut complete = false;
    let (mut name, mut state, mut ppid, mut uid) = (None, None, None, None);
    let (mut rss_anon, mut rss_file, mut rss_shmem) = (0, 0, 0);
    let kb = |v: &[u8]| -> Result<u64, ParseError> {
        first_number(v)
            .map(|n| n.saturating_mul(1024))
            .ok_or_else(|| ParseError::new(format!("bad size {:?}", String::from_utf8_lossy(v))))
    };
    let mut rest = text;
    while !rest.is_empty() {
        let (line, ended) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        rest = &rest[(line.len() + 1).min(rest.len())..];
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        match key {
            // The name is the rest of the line after the tab (it may hold spaces).
            b"Name" => {
                let v = value.strip_prefix(b"\t").unwrap_or(value);
                name = Some(String::from_utf8_lossy(v).into_owned());
            }
            b"State" => {
                state = value
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .map(|b| char::from(*b))
            }
            b"PPid" => ppid = first_number(value).and_then(|n| i32::try_from(n).ok()),
            b"Uid" => uid = first_number(value).and_then(|n| u32::try_from(n).ok()),
            b"RssAnon" => rss_anon = kb(value)?,
            b"RssFile" => rss_file = kb(value)?,
            b"RssShmem" => {
                // Cut in this line when the prefix ends right here.
                complete = ended;
                if !complete {
                    break;
                }
                rss_shmem = kb(value)?;
                // The last key needed: skip the long tail (signal masks, cpus).
                break;
            }
            _ => {}
        }
    }
    let missing = |k: &str| ParseError::new(format!("status without a valid {k}"));
    let fields = StatusFields {
        name: name.ok_or_else(|| missing("Name"))?,
        state: state.ok_or_else(|| missing("State"))?,
        ppid: ppid.ok_or_else(|| missing("PPid"))?,
        uid: uid.ok_or_else(|| missing("Uid"))?,
        rss_anon,
        rss_file,
        rss_shmem,
    };
    Ok((fields, complete))
}

/// The first NUL-separated element of a cmdline, lossily decoded.
pub fn argv0_of(cmdline: &[u8]) -> String {
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(first).into_owned()
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
    const STATM: &str = include_str!("../../fixtures/kernel-6.1/proc/pid/statm");
    const CMDLINE: &[u8] = include_bytes!("../../fixtures/kernel-6.1/proc/pid/cmdline");

    /// One read with a fresh slot, as on a pid's first sight.
    fn read_once(root: &Path, pid: i32) -> Result<Option<ProcSample>, ReadError> {
        let mut slot = ProcSlot::default();
        let mut budget = FdBudget::new(10);
        ProcReader::new(root).read(pid, &"/u".into(), &mut slot, &mut budget, &mut |_| {})
    }

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
            ("statm", STATM.as_bytes()),
            ("stat", STAT.as_bytes()),
            ("cmdline", CMDLINE),
        ]);
        let p = read_once(root.path(), 205).expect("read").expect("present");
        assert_eq!(p.ppid, 191);
        assert_eq!(p.uid, 1000);
        assert_eq!(&*p.comm, "python3");
        assert_eq!(&*p.argv0, "python3", "argv0 only, never the script");
        assert_eq!(p.rss_anon, 309612 * 1024);
        assert_eq!(p.rss_file, 3456 * 1024);
        assert_eq!(p.state, 'S');
        assert_eq!(p.start_time, 1801);
        assert_eq!(&*p.cgroup, "/u");
    }

    #[test]
    fn vanished_process_is_none() {
        let root = tempfile::tempdir().expect("tempdir");
        assert!(read_once(root.path(), 4242).expect("no error").is_none());
        // statm and status there but stat gone (exited between the reads)
        let root = fake_proc(&[("status", STATUS.as_bytes()), ("statm", STATM.as_bytes())]);
        assert!(read_once(root.path(), 205).expect("no error").is_none());
    }

    #[test]
    fn malformed_status_is_a_parse_error() {
        let root = fake_proc(&[
            ("status", b"garbage"),
            ("statm", STATM.as_bytes()),
            ("stat", STAT.as_bytes()),
        ]);
        let e = read_once(root.path(), 205).expect_err("malformed");
        assert_eq!(e.file_name(), "status");
        let root = fake_proc(&[
            ("status", STATUS.as_bytes()),
            ("statm", b"1 2"),
            ("stat", STAT.as_bytes()),
        ]);
        let e = read_once(root.path(), 205).expect_err("malformed");
        assert_eq!(e.file_name(), "statm");
        let root = fake_proc(&[
            ("status", STATUS.as_bytes()),
            ("statm", STATM.as_bytes()),
            ("stat", b""),
        ]);
        assert_eq!(
            read_once(root.path(), 205)
                .expect_err("malformed")
                .file_name(),
            "stat"
        );
    }

    #[test]
    fn statm_parser_on_captured_and_broken_input() {
        let m = parse_statm(STATM.as_bytes()).expect("parse");
        // Consistent with the captured status: RssAnon 309612 kB,
        // RssFile + RssShmem 3456 kB, in 4 KiB pages.
        assert_eq!(m.resident - m.shared, 309612 / 4);
        assert_eq!(m.shared, 3456 / 4);
        assert_eq!(
            parse_statm(b"0 0 0 0 0 0 0\n").expect("kernel thread"),
            Statm {
                resident: 0,
                shared: 0
            }
        );
        for bad in [
            &b""[..],
            b"1 2",
            b"1 x 3 4 5 6 7",
            b"1 2 3 4 5 6 7",
            b"-1 2 1",
        ] {
            assert!(
                parse_statm(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn statm_every_read_status_every_few_and_on_a_new_process() {
        let root = fake_proc(&[
            ("status", STATUS.as_bytes()),
            ("statm", STATM.as_bytes()),
            ("stat", STAT.as_bytes()),
            ("cmdline", CMDLINE),
        ]);
        let dir = root.path().join("205");
        let mut reader = ProcReader::new(root.path());
        let mut slot = ProcSlot::default();
        let mut budget = FdBudget::new(10);
        let cgroup: Arc<str> = "/u".into();
        let mut read = |slot: &mut ProcSlot| {
            reader
                .read(205, &cgroup, slot, &mut budget, &mut |_| {})
                .expect("read")
                .expect("present")
        };
        let first = read(&mut slot);
        assert_eq!(first.ppid, 191);
        assert!(slot.is_open(), "statm kept open");
        // The strings are shared, not copied, from one read to the next
        // (also across a `status` read, its name unchanged).
        for _ in 0..STATUS_EVERY {
            let again = read(&mut slot);
            assert!(Arc::ptr_eq(&first.comm, &again.comm));
            assert!(Arc::ptr_eq(&first.argv0, &again.argv0));
            assert!(Arc::ptr_eq(&first.cgroup, &again.cgroup));
        }
        // Reparented and grown; statm rewritten in place (as procfs does).
        let status2 = STATUS.replace("PPid:\t191", "PPid:\t1");
        std::fs::write(dir.join("status"), &status2).expect("write");
        std::fs::write(dir.join("statm"), "80242 100864 864 692 0 77978 0\n").expect("write");
        for _ in 1..STATUS_EVERY {
            let p = read(&mut slot);
            assert_eq!(p.rss_anon, 100_000 * 4096, "anon fresh from statm");
            assert_eq!(p.rss_file, 3456 * 1024);
            assert_eq!(p.ppid, 191, "status not read yet");
        }
        assert_eq!(
            read(&mut slot).ppid,
            1,
            "status every {STATUS_EVERY}th read"
        );
        // The process exits, another takes its pid: the open statm reads
        // nothing (ESRCH on procfs), so everything is read again at once.
        std::fs::write(dir.join("statm"), "").expect("write");
        std::fs::remove_file(dir.join("statm")).expect("rm");
        std::fs::write(dir.join("statm"), STATM.as_bytes()).expect("write");
        let stat2 = STAT.replacen(" 1801 ", " 9999 ", 1);
        assert_ne!(stat2, STAT);
        std::fs::write(dir.join("stat"), &stat2).expect("write");
        std::fs::write(dir.join("status"), STATUS).expect("write");
        let p = read(&mut slot);
        assert_eq!((p.ppid, p.start_time), (191, 9999), "a new process");
        // Gone: None, and the slot forgets it.
        std::fs::write(dir.join("statm"), "").expect("write");
        std::fs::remove_dir_all(&dir).expect("rm");
        assert!(reader
            .read(205, &"/u".into(), &mut slot, &mut budget, &mut |_| {})
            .expect("no error")
            .is_none());
    }

    #[test]
    fn status_parser_on_captured_and_broken_input() {
        let s = parse_status(STATUS.as_bytes()).expect("parse");
        assert_eq!(s.name, "python3");
        assert_eq!((s.state, s.ppid, s.uid), ('S', 191, 1000));
        assert_eq!(s.rss_anon, 309612 * 1024);
        assert_eq!(s.rss_shmem, 0);
        let kthread = "Name:\tkworker/0:1 x\nState:\tI (idle)\nPPid:\t2\nUid:\t0\t0\t0\t0\n";
        let k = parse_status(kthread.as_bytes()).expect("kernel thread");
        assert_eq!(k.name, "kworker/0:1 x");
        assert_eq!(k.rss_anon, 0);
        assert!(parse_status(b"").is_err());
        assert!(parse_status(b"Name:\tx\nState:\tS\nPPid:\tone\nUid:\t0\n").is_err());
        let bad_rss = "Name:\tx\nState:\tS\nPPid:\t1\nUid:\t0\nRssAnon:\tmany kB\n";
        assert!(parse_status(bad_rss.as_bytes()).is_err());
    }

    #[test]
    fn status_prefix_tells_cut_from_short() {
        let whole = STATUS.as_bytes();
        let at = STATUS.find("RssShmem").expect("captured has RssShmem");
        let end = at + STATUS[at..].find('\n').expect("line end") + 1;
        let (f, complete) = parse_status_prefix(&whole[..end]).expect("parse");
        assert!(complete);
        assert_eq!(f, parse_status(whole).expect("whole"));
        // Cut inside the RssShmem line, or before it: not complete.
        assert!(!parse_status_prefix(&whole[..end - 3]).expect("parse").1);
        assert!(!parse_status_prefix(&whole[..at]).expect("parse").1);
        // Non-UTF-8 name, overflowing numbers.
        let odd = b"Name:\tn\xffx\nState:\tR\nPPid:\t1\nUid:\t5\n";
        assert_eq!(parse_status(odd).expect("odd name").name, "n\u{fffd}x");
        assert!(parse_status(b"Name:\tx\nState:\tS\nPPid:\t99999999999\nUid:\t0\n").is_err());
        let huge = "Name:\tx\nState:\tS\nPPid:\t1\nUid:\t0\nRssAnon:\t99999999999999999999999 kB\n";
        assert!(parse_status(huge.as_bytes()).is_err());
    }

    #[test]
    fn argv0_edge_cases() {
        assert_eq!(argv0_of(b""), "");
        assert_eq!(argv0_of(b"node\0--secret=x\0"), "node");
        assert_eq!(argv0_of(b"no-nul"), "no-nul");
    }
}
