//! Stateless, typed reads of cgroup v2 files, named after the files
//! (`read_memory_pressure` reads `memory.pressure`), in the manner of below's
//! `cgroupfs` crate. Parsers are pure functions over `&str` in `psi`, `keyed`,
//! `flat` and `procs`; the readers here add the path and the I/O.

pub mod flat;
pub mod keyed;
pub mod procs;
pub mod psi;

use std::io;
use std::path::{Path, PathBuf};

use crate::model::sample::{CpuStat, Limit, MemoryEvents, MemoryStat, Psi};

/// A file's content did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(msg: impl Into<String>) -> Self {
        ParseError(msg.into())
    }
}

/// Why a read failed. A vanished cgroup or a missing file is not an error:
/// the readers return `Ok(None)` for those.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("malformed {path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
}

impl ReadError {
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. } | ReadError::Parse { path, .. } => path,
        }
    }

    /// The file name, as used in the `file` label of
    /// `t3pressure_read_errors_total`.
    pub fn file_name(&self) -> String {
        self.path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Errors that mean "the cgroup or process is gone" or "this file does not
/// exist here": ENOENT (removed, or controller/PSI off), ENODEV (a cgroup
/// removed while its file was open: kernfs answers ENODEV on read), ESRCH (a
/// process exited between open and read).
pub fn is_vanished(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ESRCH)
    ) || e.kind() == io::ErrorKind::NotFound
}

/// Reads `dir/name` as text; `Ok(None)` when it vanished or never existed.
pub fn read_text(dir: &Path, name: &str) -> Result<Option<String>, ReadError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if is_vanished(&e) => Ok(None),
        Err(source) => Err(ReadError::Io { path, source }),
    }
}

/// Reads and parses one file with a pure parser.
fn read_with<T>(
    dir: &Path,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<Option<T>, ReadError> {
    match read_text(dir, name)? {
        None => Ok(None),
        Some(text) => parse(&text).map(Some).map_err(|source| ReadError::Parse {
            path: dir.join(name),
            source,
        }),
    }
}

pub fn read_memory_pressure(dir: &Path) -> Result<Option<Psi>, ReadError> {
    read_with(dir, "memory.pressure", psi::parse_psi)
}

pub fn read_io_pressure(dir: &Path) -> Result<Option<Psi>, ReadError> {
    read_with(dir, "io.pressure", psi::parse_psi)
}

pub fn read_cpu_pressure(dir: &Path) -> Result<Option<Psi>, ReadError> {
    read_with(dir, "cpu.pressure", psi::parse_psi)
}

pub fn read_memory_current(dir: &Path) -> Result<Option<u64>, ReadError> {
    read_with(dir, "memory.current", flat::parse_u64)
}

pub fn read_memory_peak(dir: &Path) -> Result<Option<u64>, ReadError> {
    read_with(dir, "memory.peak", flat::parse_u64)
}

pub fn read_memory_swap_current(dir: &Path) -> Result<Option<u64>, ReadError> {
    read_with(dir, "memory.swap.current", flat::parse_u64)
}

pub fn read_pids_current(dir: &Path) -> Result<Option<u64>, ReadError> {
    read_with(dir, "pids.current", flat::parse_u64)
}

pub fn read_memory_max(dir: &Path) -> Result<Option<Limit>, ReadError> {
    read_with(dir, "memory.max", flat::parse_limit)
}

pub fn read_memory_high(dir: &Path) -> Result<Option<Limit>, ReadError> {
    read_with(dir, "memory.high", flat::parse_limit)
}

pub fn read_memory_swap_max(dir: &Path) -> Result<Option<Limit>, ReadError> {
    read_with(dir, "memory.swap.max", flat::parse_limit)
}

pub fn read_memory_events(dir: &Path) -> Result<Option<MemoryEvents>, ReadError> {
    read_with(dir, "memory.events", keyed::parse_memory_events)
}

pub fn read_memory_stat(dir: &Path) -> Result<Option<MemoryStat>, ReadError> {
    read_with(dir, "memory.stat", keyed::parse_memory_stat)
}

pub fn read_cpu_stat(dir: &Path) -> Result<Option<CpuStat>, ReadError> {
    read_with(dir, "cpu.stat", keyed::parse_cpu_stat)
}

pub fn read_cgroup_procs(dir: &Path) -> Result<Option<Vec<i32>>, ReadError> {
    read_with(dir, "cgroup.procs", procs::parse_procs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dir_is_none_not_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("t3-serve@gone.service");
        assert!(read_memory_pressure(&gone).expect("no error").is_none());
        assert!(read_cgroup_procs(&gone).expect("no error").is_none());
    }

    #[test]
    fn malformed_file_is_parse_error_with_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("memory.current"), "lots\n").expect("write");
        let e = read_memory_current(dir.path()).expect_err("malformed");
        assert_eq!(e.file_name(), "memory.current");
        assert!(e.to_string().contains("memory.current"), "{e}");
    }

    #[test]
    fn a_directory_in_place_of_a_file_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("memory.stat")).expect("mkdir");
        assert!(matches!(
            read_memory_stat(dir.path()),
            Err(ReadError::Io { .. })
        ));
    }
}
