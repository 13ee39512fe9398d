//! One sampling pass: every cgroup file of a unit, the processes of the unit
//! and of its descendant cgroups, and the host. Read errors are counted per
//! file name (`t3pressure_read_errors_total{file}`) and logged once per
//! (file, unit); a missing optional file is logged once per file name.
//!
//! Files are read through descriptors kept open across passes (`fdcache`):
//! per unit its directory, its files and those of its descendant cgroups,
//! per process its `statm` and `status`. They are closed when a unit is forgotten, a
//! descendant cgroup disappears or a pid leaves `cgroup.procs`. The parsers
//! stay the pure ones of `cgroupfs`, `procfs` and `host`.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::cgroupfs::{flat, is_vanished, keyed, procs, psi, ParseError, ReadError};
use super::fdcache::{self, FdBudget, Got, Slot};
use super::host;
use super::procfs::{ProcReader, ProcSlot};
pub use super::read_errors::ReadErrors;
use crate::model::sample::{HostSample, Limit, MemoryEvents, Unit, UnitSample};

/// Limits (`memory.max`, `memory.high`, `memory.swap.max`) change only
/// when someone runs `systemctl set-property`: read every this many passes
/// of a unit, and at once when `memory.events` shows a limit was hit (a new,
/// lower limit shows there first).
pub const LIMITS_EVERY: u64 = 5;

/// A file found missing (controller off, PSI disabled) is looked for again
/// every this many passes of its unit, not on each pass.
pub const MISSING_RETRY_EVERY: u8 = 10;

/// The files read per unit, in `UnitFds::files` order.
const FILES: [&str; 13] = [
    "memory.pressure",
    "io.pressure",
    "cpu.pressure",
    "memory.current",
    "memory.max",
    "memory.high",
    "memory.peak",
    "memory.swap.current",
    "memory.swap.max",
    "memory.events",
    "memory.stat",
    "cpu.stat",
    "pids.current",
];
const LIMIT_FILES: [usize; 3] = [4, 5, 8];

/// The host files under `--proc-root`, in `Sampler::host` order.
const HOST_FILES: [&str; 4] = ["pressure/memory", "pressure/io", "pressure/cpu", "meminfo"];

/// A cgroup directory of a unit (the unit's own or a descendant): its
/// descriptor, its `cgroup.procs`, and its path as processes report it.
#[derive(Debug, Default)]
struct CgroupFds {
    dir: Slot,
    procs: Slot,
    /// `/system.slice/.../t3-serve@alice.service/agents/a1`, shared by the
    /// samples of its processes.
    cgroup: Arc<str>,
    seen: u64,
}

impl CgroupFds {
    fn close(&mut self, budget: &mut FdBudget) {
        self.dir.close(budget);
        self.procs.close(budget);
    }
}

/// What the sampler keeps per watched unit across passes.
#[derive(Debug, Default)]
struct UnitFds {
    /// The cgroup id (inode) the descriptors belong to: a unit restarted
    /// under the same path is a new cgroup.
    cgroup_id: u64,
    own: CgroupFds,
    /// The unit directory's link count is 2 + its subdirectories on its
    /// file system (`fdcache::links_count_subdirs`, asked when it is
    /// opened): then a count of 2 says "no child cgroups" without a listing.
    links_count_subdirs: bool,
    files: [Slot; 13],
    /// Passes to skip a file found missing.
    missing_skip: [u8; 13],
    /// Descendant cgroups by path relative to the unit.
    children: HashMap<PathBuf, CgroupFds>,
    /// Processes last seen in the unit's `cgroup.procs` files, with the
    /// process pass that saw them.
    pids: HashMap<i32, (ProcSlot, u64)>,
    passes: u64,
    proc_passes: u64,
    /// Last good limits (`LIMIT_FILES` order) and the pass that read them.
    limits: [Option<Limit>; 3],
    limits_pass: Option<u64>,
    last_events: Option<MemoryEvents>,
}

impl UnitFds {
    fn fresh(cgroup_id: u64) -> Self {
        UnitFds {
            cgroup_id,
            ..UnitFds::default()
        }
    }

    /// Closes every descriptor; process identities are forgotten.
    fn close(&mut self, budget: &mut FdBudget) {
        self.close_procs(budget);
        self.pids.clear();
        self.own.close(budget);
        for f in &mut self.files {
            f.close(budget);
        }
        for c in self.children.values_mut() {
            c.close(budget);
        }
        self.children.clear();
    }

    fn close_procs(&mut self, budget: &mut FdBudget) {
        for (p, _) in self.pids.values_mut() {
            p.close(budget);
        }
    }
}

/// Frees descriptors of the units in `units` (not the one being read, which
/// is out of its entry meanwhile: an empty placeholder is left there) until
/// the budget holds: process descriptors first, then cgroup files.
fn evict(units: &mut HashMap<PathBuf, UnitFds>, budget: &mut FdBudget) {
    for u in units.values_mut() {
        if !budget.over() {
            return;
        }
        u.close_procs(budget);
    }
    for u in units.values_mut() {
        if !budget.over() {
            return;
        }
        for f in &mut u.files {
            f.close(budget);
        }
        for c in u.children.values_mut() {
            c.close(budget);
        }
    }
}

/// `/` + the path below the cgroup root, as `/proc/PID/cgroup` shows it.
fn cgroup_label(root: &Path, dir: &Path) -> Arc<str> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    format!("/{}", rel.display()).into()
}

/// The sampler's parts one unit's reads borrow.
struct Reads<'a> {
    budget: &'a mut FdBudget,
    buf: &'a mut Vec<u8>,
    errors: &'a mut ReadErrors,
    /// The other units, for eviction when descriptors run out.
    others: &'a mut HashMap<PathBuf, UnitFds>,
    unit: &'a Unit,
    miss: Vec<&'static str>,
    /// A cached descriptor said its cgroup is gone.
    stale: bool,
}

impl Reads<'_> {
    /// Reads `rel/name` of the unit through `slot` (relative to `dir` when
    /// there is one) into `self.buf`; `true` when it is there.
    /// Cgroup files are never empty, except `cgroup.procs`: an empty read
    /// on a cached descriptor of any other is taken as stale and the file
    /// opened again by name (what a removed file reads as on tmpfs).
    fn fetch(
        &mut self,
        dir: Option<BorrowedFd<'_>>,
        rel: &Path,
        slot: &mut Slot,
        name: &'static str,
    ) -> Result<bool, ReadError> {
        let empty_is_stale = name != "cgroup.procs";
        let was_open = slot.is_open();
        let unit = self.unit;
        let open = || match dir {
            Some(d) => fdcache::open_at(d, name.as_bytes(), false),
            None => fdcache::open_path(&unit.path.join(rel).join(name), false),
        };
        let others = &mut *self.others;
        let got = fdcache::read(
            slot,
            self.budget,
            self.buf,
            (empty_is_stale, usize::MAX),
            open,
            &mut |b| evict(others, b),
        );
        match got {
            Got::Data { .. } => Ok(true),
            Got::Gone => {
                self.stale |= was_open;
                Ok(false)
            }
            Got::NoFds(source) | Got::Failed(source) => Err(ReadError::Io {
                path: unit.path.join(rel).join(name),
                source,
            }),
        }
    }

    /// One unit file, parsed; errors counted, missing files noted (and
    /// skipped for a few passes).
    fn file<T>(
        &mut self,
        dir: Option<BorrowedFd<'_>>,
        fds: &mut UnitFds,
        i: usize,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        let name = FILES[i];
        if fds.missing_skip[i] > 0 {
            fds.missing_skip[i] -= 1;
            self.miss.push(name);
            return None;
        }
        match self.fetch(dir, Path::new(""), &mut fds.files[i], name) {
            Ok(true) => {}
            Ok(false) => {
                if !self.stale {
                    fds.missing_skip[i] = MISSING_RETRY_EVERY - 1;
                    self.miss.push(name);
                }
                return None;
            }
            Err(e) => {
                self.errors.record(&self.unit.name, &e);
                return None;
            }
        }
        let parsed = match std::str::from_utf8(self.buf) {
            Ok(text) => parse(text),
            Err(_) => Err(ParseError::new("not UTF-8")),
        };
        match parsed {
            Ok(v) => Some(v),
            Err(source) => {
                let e = ReadError::Parse {
                    path: self.unit.path.join(name),
                    source,
                };
                self.errors.record(&self.unit.name, &e);
                None
            }
        }
    }
}

/// Where a unit's read stands, for the one retry with fresh descriptors.
enum Outcome {
    Sample(Box<UnitSample>),
    Vanished,
    /// A cached descriptor said its cgroup is gone: read again by name.
    Stale,
}

/// Reads units and the host; keeps descriptors and process identities
/// across passes.
#[derive(Debug)]
pub struct Sampler {
    cgroup_root: PathBuf,
    procs: ProcReader,
    pub errors: ReadErrors,
    budget: FdBudget,
    units: HashMap<PathBuf, UnitFds>,
    host: [Slot; 4],
    buf: Vec<u8>,
    dents: Vec<u8>,
}

impl Sampler {
    /// Caches at most half of RLIMIT_NOFILE descriptors (see `fdcache`).
    pub fn new(cgroup_root: &Path, proc_root: &Path) -> Self {
        Self::with_fd_budget(cgroup_root, proc_root, FdBudget::from_rlimit())
    }

    pub fn with_fd_budget(cgroup_root: &Path, proc_root: &Path, budget: FdBudget) -> Self {
        Sampler {
            cgroup_root: cgroup_root.to_path_buf(),
            procs: ProcReader::new(proc_root),
            errors: ReadErrors::default(),
            budget,
            units: HashMap::new(),
            host: Default::default(),
            buf: Vec::with_capacity(8192),
            dents: Vec::with_capacity(8192),
        }
    }

    /// Descriptors held open by the caches now.
    pub fn fds_held(&self) -> usize {
        self.budget.held()
    }

    /// A unit is no longer watched: its descriptors are closed.
    pub fn forget_unit(&mut self, path: &Path) {
        if let Some(mut u) = self.units.remove(path) {
            u.close(&mut self.budget);
        }
    }

    /// Keeps the descriptors of the units for which `keep` holds.
    pub fn retain_units(&mut self, mut keep: impl FnMut(&Path) -> bool) {
        let budget = &mut self.budget;
        self.units.retain(|p, u| {
            let k = keep(p);
            if !k {
                u.close(budget);
            }
            k
        });
    }

    /// One pass over a unit; `None` when its cgroup vanished (the unit
    /// stopped: discovery reports it, this is not an error).
    pub fn sample_unit(&mut self, unit: &Unit) -> Option<UnitSample> {
        self.sample_unit_with(unit, true)
    }

    /// Like `sample_unit`; with `with_procs == false` the processes are not
    /// read (`procs_skipped`), which is most of a pass's cost.
    pub fn sample_unit_with(&mut self, unit: &Unit, with_procs: bool) -> Option<UnitSample> {
        // Taken out of its entry for the reads (which borrow the other
        // units for eviction) and put back after: not removed and inserted
        // again, which copied the path (an allocation) per unit per pass.
        let mut fds = self
            .units
            .get_mut(&unit.path)
            .map(std::mem::take)
            .unwrap_or_default();
        if fds.cgroup_id != unit.cgroup_id || !fds.own.dir.is_open() {
            // New, restarted under the same path (a new cgroup), or read
            // without a cached directory: start from names.
            fds.close(&mut self.budget);
            fds = UnitFds::fresh(unit.cgroup_id);
        }
        let cached = fds.own.dir.is_open();
        let mut outcome = self.read_unit_dir(unit, &mut fds, with_procs);
        if cached && matches!(outcome, Outcome::Stale) {
            fds.close(&mut self.budget);
            fds = UnitFds::fresh(unit.cgroup_id);
            outcome = self.read_unit_dir(unit, &mut fds, with_procs);
        }
        match outcome {
            Outcome::Sample(s) => {
                match self.units.get_mut(&unit.path) {
                    Some(entry) => *entry = fds,
                    None => {
                        self.units.insert(unit.path.clone(), fds);
                    }
                }
                Some(*s)
            }
            Outcome::Vanished | Outcome::Stale => {
                fds.close(&mut self.budget);
                self.units.remove(&unit.path);
                None
            }
        }
    }

    /// `read_unit` with the unit's directory slot held apart from `fds`
    /// (borrowed by the reads below while `fds` is borrowed mutably), and
    /// put back whatever happens.
    fn read_unit_dir(&mut self, unit: &Unit, fds: &mut UnitFds, with_procs: bool) -> Outcome {
        let mut dir = std::mem::take(&mut fds.own.dir);
        let outcome = self.read_unit(unit, fds, &mut dir, with_procs);
        fds.own.dir = dir;
        outcome
    }

    fn read_unit(
        &mut self,
        unit: &Unit,
        fds: &mut UnitFds,
        dir_slot: &mut Slot,
        with_procs: bool,
    ) -> Outcome {
        // The unit's directory: cached (its link count read, which says
        // whether it was removed and whether it has subdirectories), or
        // opened for this pass.
        let mut temp_dir = None;
        let mut links = None;
        if let Some(d) = dir_slot.fd() {
            links = fdcache::dir_links(d);
            if links == Some(0) {
                return Outcome::Stale;
            }
        } else {
            match fdcache::open_path(&unit.path, true) {
                Ok(fd) => {
                    if self.budget.held() < self.budget.limit() {
                        fds.links_count_subdirs = fdcache::links_count_subdirs(fd.as_fd());
                        dir_slot.keep(fd, &mut self.budget);
                    } else {
                        temp_dir = Some(fd);
                    }
                }
                Err(e) if is_vanished(&e) => return Outcome::Vanished,
                // Out of descriptors or otherwise unopenable: by path.
                Err(_) => {}
            }
            fds.own.cgroup = cgroup_label(&self.cgroup_root, &unit.path);
        }
        fds.passes += 1;
        let mut s = UnitSample::empty(Instant::now(), SystemTime::now());
        let Sampler {
            budget,
            buf,
            errors,
            units,
            procs: proc_reader,
            dents,
            ..
        } = self;
        let mut r = Reads {
            budget,
            buf,
            errors,
            others: units,
            unit,
            miss: Vec::new(),
            stale: false,
        };
        let dir = dir_slot.fd().or(temp_dir.as_ref().map(|f| f.as_fd()));
        // What the detectors need, every pass.
        s.memory_pressure = r.file(dir, fds, 0, psi::parse_psi);
        s.io_pressure = r.file(dir, fds, 1, psi::parse_psi);
        s.cpu_pressure = r.file(dir, fds, 2, psi::parse_psi);
        s.memory_current = r.file(dir, fds, 3, flat::parse_u64);
        s.memory_events = r.file(dir, fds, 9, keyed::parse_memory_events);
        // What only people read: with the processes (every pass of a busy
        // unit, every few of a quiet one; the model carries them over).
        if with_procs {
            s.memory_peak = r.file(dir, fds, 6, flat::parse_u64);
            s.memory_swap_current = r.file(dir, fds, 7, flat::parse_u64);
            s.memory_stat = r.file(dir, fds, 10, keyed::parse_memory_stat);
            s.cpu_stat = r.file(dir, fds, 11, keyed::parse_cpu_stat);
            s.pids_current = r.file(dir, fds, 12, flat::parse_u64);
        } else {
            s.details_skipped = true;
        }
        // Limits: every few passes, at once when a limit was hit, and each
        // pass while one did not read well.
        let limit_hit = match (&fds.last_events, &s.memory_events) {
            (Some(a), Some(b)) => a.high != b.high || a.max != b.max || a.oom != b.oom,
            _ => false,
        };
        fds.last_events = s.memory_events;
        let limits_due = limit_hit
            || fds.limits.iter().any(Option::is_none)
            || fds
                .limits_pass
                .is_none_or(|p| fds.passes.saturating_sub(p) >= LIMITS_EVERY);
        if limits_due {
            for (k, i) in LIMIT_FILES.into_iter().enumerate() {
                fds.limits[k] = r.file(dir, fds, i, flat::parse_limit);
            }
            fds.limits_pass = Some(fds.passes);
        }
        [s.memory_max, s.memory_high, s.memory_swap_max] = fds.limits;
        let childless = fds.links_count_subdirs && links == Some(2);
        let procs_found = if with_procs {
            sample_procs(&mut r, proc_reader, dents, (dir, childless), fds, &mut s)
        } else {
            s.procs_skipped = true;
            s.memory_current.is_some() || s.memory_pressure.is_some()
        };
        if r.stale {
            return Outcome::Stale;
        }
        if !procs_found && !unit.path.exists() {
            return Outcome::Vanished;
        }
        let miss = std::mem::take(&mut r.miss);
        self.errors.missing(&unit.name, &miss);
        Outcome::Sample(Box::new(s))
    }

    pub fn sample_host(&mut self) -> HostSample {
        let root = self.procs.root().to_path_buf();
        let mut miss = Vec::new();
        let mut h = HostSample {
            at: Instant::now(),
            wall: SystemTime::now(),
            memory_pressure: None,
            io_pressure: None,
            cpu_pressure: None,
            meminfo: None,
        };
        for (i, name) in HOST_FILES.into_iter().enumerate() {
            let path = root.join(name);
            let open = || fdcache::open_path(&path, false);
            let units = &mut self.units;
            let got = fdcache::read(
                &mut self.host[i],
                &mut self.budget,
                &mut self.buf,
                (false, usize::MAX),
                open,
                &mut |b| evict(units, b),
            );
            let text = match got {
                Got::Data { .. } => {
                    std::str::from_utf8(&self.buf).map_err(|_| ParseError::new("not UTF-8"))
                }
                Got::Gone => {
                    miss.push(name);
                    continue;
                }
                Got::NoFds(source) | Got::Failed(source) => {
                    self.errors.record("host", &ReadError::Io { path, source });
                    continue;
                }
            };
            let parsed = text.and_then(|t| {
                if i == 3 {
                    h.meminfo = Some(host::parse_meminfo(t)?);
                } else {
                    let p = Some(psi::parse_psi(t)?);
                    match i {
                        0 => h.memory_pressure = p,
                        1 => h.io_pressure = p,
                        _ => h.cpu_pressure = p,
                    }
                }
                Ok(())
            });
            if let Err(source) = parsed {
                self.errors
                    .record("host", &ReadError::Parse { path, source });
            }
        }
        self.errors.missing("host", &miss);
        h
    }

    /// Ends a pass: if descriptors ran out, the caches shrink to the cut
    /// budget.
    pub fn end_pass(&mut self) {
        if self.budget.over() {
            evict(&mut self.units, &mut self.budget);
        }
    }
}

/// Processes of the unit's cgroup and all its descendants, through cached
/// descriptors. Returns whether the unit's own `cgroup.procs` was there.
/// `childless`: the unit directory's link count says it has no
/// subdirectories, so it is not listed (an `lseek` and two `getdents64`
/// saved per pass; descendants' directories are listed as before).
fn sample_procs(
    r: &mut Reads<'_>,
    reader: &mut ProcReader,
    dents: &mut Vec<u8>,
    (unit_dir, childless): (Option<BorrowedFd<'_>>, bool),
    fds: &mut UnitFds,
    s: &mut UnitSample,
) -> bool {
    fds.proc_passes += 1;
    let pass = fds.proc_passes;
    let unit = r.unit;
    // As many as last time, most likely: one allocation, not a doubling
    // per power of two.
    s.procs.reserve(fds.pids.len());
    let mut stack = vec![PathBuf::new()];
    let mut found = false;
    let mut pids_buf: Vec<i32> = Vec::new();
    while let Some(rel) = stack.pop() {
        let own = rel.as_os_str().is_empty();
        let cg: &mut CgroupFds = if own {
            &mut fds.own
        } else {
            fds.children
                .entry(rel.clone())
                .or_insert_with(|| CgroupFds {
                    cgroup: format!("{}/{}", fds.own.cgroup, rel.display()).into(),
                    ..CgroupFds::default()
                })
        };
        cg.seen = pass;
        // The directory descriptor: the unit's (given), or the child's
        // (cached, or opened for this pass).
        let mut temp = None;
        if !own && !cg.dir.is_open() {
            let path = unit.path.join(&rel);
            let others = &mut *r.others;
            let opened =
                fdcache::open_evicting(r.budget, || fdcache::open_path(&path, true), &mut |b| {
                    evict(others, b)
                });
            match opened {
                Ok(fd) => {
                    if r.budget.held() < r.budget.limit() {
                        cg.dir.keep(fd, r.budget);
                    } else {
                        temp = Some(fd);
                    }
                }
                // Removed meanwhile, or not a cgroup dir.
                Err(_) => continue,
            }
        }
        let dir = if own {
            unit_dir
        } else {
            cg.dir.fd().or(temp.as_ref().map(|f| f.as_fd()))
        };
        let listed = match r.fetch(dir, &rel, &mut cg.procs, "cgroup.procs") {
            Ok(true) => {
                found |= own;
                std::str::from_utf8(r.buf)
                    .map_err(|_| ParseError::new("not UTF-8"))
                    .and_then(procs::parse_procs)
                    .map_err(|source| ReadError::Parse {
                        path: unit.path.join(&rel).join("cgroup.procs"),
                        source,
                    })
            }
            // A child removed meanwhile, or not a cgroup dir.
            Ok(false) => Ok(Vec::new()),
            Err(e) => {
                found |= own;
                Err(e)
            }
        };
        match listed {
            Ok(p) => pids_buf = p,
            Err(e) => {
                r.errors.record(&unit.name, &e);
                pids_buf.clear();
            }
        }
        for &pid in &pids_buf {
            let (slot, seen) = fds.pids.entry(pid).or_default();
            *seen = pass;
            let others = &mut *r.others;
            match reader.read(pid, &cg.cgroup, slot, r.budget, &mut |b| evict(others, b)) {
                Ok(Some(p)) => s.procs.push(p),
                Ok(None) => {}
                Err(e) => r.errors.record(&unit.name, &e),
            }
        }
        // Child cgroups; not looked for in a unit known to have none.
        let listed_dir = if own && childless { None } else { dir };
        if let Some(d) = listed_dir {
            if fdcache::read_dir_fd(d, dents).is_ok() {
                for e in fdcache::dirents(dents) {
                    let is_dir = match e.d_type {
                        libc::DT_DIR => true,
                        libc::DT_UNKNOWN => unit
                            .path
                            .join(&rel)
                            .join(std::ffi::OsStr::from_bytes(e.name))
                            .is_dir(),
                        _ => false,
                    };
                    if is_dir {
                        stack.push(rel.join(std::ffi::OsStr::from_bytes(e.name)));
                    }
                }
            }
        }
    }
    // Descendants gone and pids that left: their descriptors close.
    let budget = &mut *r.budget;
    fds.children.retain(|_, c| {
        if c.seen != pass {
            c.close(budget);
        }
        c.seen == pass
    });
    fds.pids.retain(|_, (p, seen)| {
        if *seen != pass {
            p.close(budget);
        }
        *seen == pass
    });
    found
}
