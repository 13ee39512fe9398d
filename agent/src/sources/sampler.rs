//! One sampling pass: every cgroup file of a unit, the processes of the unit
//! and of its descendant cgroups, and the host. Read errors are counted per
//! file name (`t3pressure_read_errors_total{file}`) and logged once per
//! (file, unit); a missing optional file is logged once per file name.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::cgroupfs::{self as cg, ReadError};
use super::host;
use super::procfs::ProcReader;
use crate::model::sample::{HostSample, Unit, UnitSample};

/// Counts read errors per file name and keeps the log quiet: each
/// (file, unit) error is logged once, each missing file name once.
#[derive(Debug, Default)]
pub struct ReadErrors {
    counts: BTreeMap<String, u64>,
    logged: HashSet<(String, String)>,
    missing_logged: HashSet<String>,
}

impl ReadErrors {
    pub fn record(&mut self, unit: &str, err: &ReadError) {
        let file = err.file_name();
        *self.counts.entry(file.clone()).or_default() += 1;
        if self.logged.insert((file, unit.to_string())) {
            tracing::warn!(
                unit,
                "{err} (counted in t3pressure_read_errors_total; logged once)"
            );
        }
    }

    /// Files that do not exist on this host or for this cgroup (controller
    /// off, PSI disabled, older kernel): said once per file name, in one
    /// line, then skipped silently.
    pub fn missing(&mut self, unit: &str, files: &[&str]) {
        let new: Vec<&str> = files
            .iter()
            .copied()
            .filter(|f| self.missing_logged.insert((*f).to_string()))
            .collect();
        if !new.is_empty() {
            tracing::info!(
                unit,
                "missing (controller off, PSI disabled or older kernel), skipped wherever \
                 missing: {}",
                new.join(", ")
            );
        }
    }

    /// Total errors per file name since start.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// A unit stopped: its errors may be logged again if it comes back.
    pub fn forget_unit(&mut self, unit: &str) {
        self.logged.retain(|(_, u)| u != unit);
    }
}

/// Reads units and the host; owns the process identity cache.
#[derive(Debug)]
pub struct Sampler {
    cgroup_root: PathBuf,
    procs: ProcReader,
    pub errors: ReadErrors,
}

impl Sampler {
    pub fn new(cgroup_root: &Path, proc_root: &Path) -> Self {
        Sampler {
            cgroup_root: cgroup_root.to_path_buf(),
            procs: ProcReader::new(proc_root),
            errors: ReadErrors::default(),
        }
    }

    /// Unwraps one read: errors counted, missing files noted.
    fn take<T>(
        &mut self,
        unit: &str,
        missing: &mut Vec<&'static str>,
        name: &'static str,
        r: Result<Option<T>, ReadError>,
    ) -> Option<T> {
        match r {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                missing.push(name);
                None
            }
            Err(e) => {
                self.errors.record(unit, &e);
                None
            }
        }
    }

    /// One pass over a unit; `None` when its cgroup vanished (the unit
    /// stopped: discovery reports it, this is not an error).
    pub fn sample_unit(&mut self, unit: &Unit) -> Option<UnitSample> {
        self.sample_unit_with(unit, true)
    }

    /// Like `sample_unit`; with `with_procs == false` the processes are not
    /// read (`procs_skipped`), which is most of a pass's cost.
    pub fn sample_unit_with(&mut self, unit: &Unit, with_procs: bool) -> Option<UnitSample> {
        let dir = unit.path.as_path();
        let n = unit.name.as_str();
        let mut miss = Vec::new();
        let mut s = UnitSample::empty(Instant::now(), SystemTime::now());
        macro_rules! read {
            ($f:ident, $file:literal) => {
                self.take(n, &mut miss, $file, cg::$f(dir))
            };
        }
        s.memory_pressure = read!(read_memory_pressure, "memory.pressure");
        s.io_pressure = read!(read_io_pressure, "io.pressure");
        s.cpu_pressure = read!(read_cpu_pressure, "cpu.pressure");
        s.memory_current = read!(read_memory_current, "memory.current");
        s.memory_max = read!(read_memory_max, "memory.max");
        s.memory_high = read!(read_memory_high, "memory.high");
        s.memory_peak = read!(read_memory_peak, "memory.peak");
        s.memory_swap_current = read!(read_memory_swap_current, "memory.swap.current");
        s.memory_swap_max = read!(read_memory_swap_max, "memory.swap.max");
        s.memory_events = read!(read_memory_events, "memory.events");
        s.memory_stat = read!(read_memory_stat, "memory.stat");
        s.cpu_stat = read!(read_cpu_stat, "cpu.stat");
        s.pids_current = read!(read_pids_current, "pids.current");
        let procs_found = if with_procs {
            self.sample_procs(unit, &mut s)
        } else {
            s.procs_skipped = true;
            s.memory_current.is_some() || s.memory_pressure.is_some()
        };
        if !procs_found && !dir.exists() {
            return None;
        }
        self.errors.missing(n, &miss);
        Some(s)
    }

    /// Processes of the unit's cgroup and all its descendants. Returns
    /// whether the unit's own `cgroup.procs` was there.
    fn sample_procs(&mut self, unit: &Unit, s: &mut UnitSample) -> bool {
        let mut stack = vec![unit.path.clone()];
        let mut found = false;
        while let Some(dir) = stack.pop() {
            let pids = match cg::read_cgroup_procs(&dir) {
                Ok(Some(p)) => {
                    found |= dir == unit.path;
                    p
                }
                // A child removed meanwhile, or not a cgroup dir.
                Ok(None) => Vec::new(),
                Err(e) => {
                    found |= dir == unit.path;
                    self.errors.record(&unit.name, &e);
                    Vec::new()
                }
            };
            let rel = dir.strip_prefix(&self.cgroup_root).unwrap_or(&dir);
            let cgroup = format!("/{}", rel.display());
            for pid in pids {
                match self.procs.read(pid, &cgroup) {
                    Ok(Some(p)) => s.procs.push(p),
                    Ok(None) => {}
                    Err(e) => self.errors.record(&unit.name, &e),
                }
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
        found
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
        h.memory_pressure = self.take(
            "host",
            &mut miss,
            "pressure/memory",
            host::read_host_pressure(&root, "memory"),
        );
        h.io_pressure = self.take(
            "host",
            &mut miss,
            "pressure/io",
            host::read_host_pressure(&root, "io"),
        );
        h.cpu_pressure = self.take(
            "host",
            &mut miss,
            "pressure/cpu",
            host::read_host_pressure(&root, "cpu"),
        );
        h.meminfo = self.take("host", &mut miss, "meminfo", host::read_meminfo(&root));
        self.errors.missing("host", &miss);
        h
    }

    /// Ends a pass: the process identity cache forgets exited pids.
    pub fn end_pass(&mut self) {
        self.procs.end_pass();
    }
}
