//! Host-wide reads: `/proc/pressure/{memory,io,cpu}` and `/proc/meminfo`
//! under `--proc-root`.

use std::path::Path;

use super::cgroupfs::{psi::parse_psi, read_text, ParseError, ReadError};
use crate::model::sample::{MemInfo, Psi};

/// `resource` is `memory`, `io` or `cpu`. `Ok(None)` without PSI
/// (CONFIG_PSI off or `psi=0`).
pub fn read_host_pressure(proc_root: &Path, resource: &str) -> Result<Option<Psi>, ReadError> {
    let dir = proc_root.join("pressure");
    match read_text(&dir, resource)? {
        None => Ok(None),
        Some(t) => parse_psi(&t).map(Some).map_err(|source| ReadError::Parse {
            path: dir.join(resource),
            source,
        }),
    }
}

pub fn read_meminfo(proc_root: &Path) -> Result<Option<MemInfo>, ReadError> {
    match read_text(proc_root, "meminfo")? {
        None => Ok(None),
        Some(t) => parse_meminfo(&t)
            .map(Some)
            .map_err(|source| ReadError::Parse {
                path: proc_root.join("meminfo"),
                source,
            }),
    }
}

/// Parses the `Key:   N kB` lines t3pressure needs, in bytes.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    let mut out = MemInfo::default();
    let (mut total, mut available) = (false, false);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => {
                total = true;
                &mut out.mem_total
            }
            "MemAvailable" => {
                available = true;
                &mut out.mem_available
            }
            "SwapTotal" => &mut out.swap_total,
            "SwapFree" => &mut out.swap_free,
            _ => continue,
        };
        let mut words = rest.split_ascii_whitespace();
        let value: u64 = words
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ParseError::new(format!("bad value in {line:?}")))?;
        let mult = match words.next() {
            Some("kB") => 1024,
            None => 1,
            Some(u) => return Err(ParseError::new(format!("unknown unit {u:?} in {line:?}"))),
        };
        *slot = value.saturating_mul(mult);
    }
    if !(total && available) {
        return Err(ParseError::new("meminfo without MemTotal or MemAvailable"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_meminfo() {
        let m =
            parse_meminfo(include_str!("../../fixtures/kernel-6.1/proc/meminfo")).expect("parse");
        assert_eq!(m.mem_total, 2012120 * 1024);
        assert_eq!(m.mem_available, 1512608 * 1024);
        assert_eq!(m.swap_total, 0);
    }

    #[test]
    fn empty_and_malformed_meminfo() {
        assert!(parse_meminfo("").is_err());
        assert!(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: 1 MB\nMemAvailable: 1 kB\n").is_err());
    }

    #[test]
    fn host_pressure_missing_and_present() {
        let root = tempfile::tempdir().expect("tempdir");
        assert!(read_host_pressure(root.path(), "io").expect("ok").is_none());
        std::fs::create_dir(root.path().join("pressure")).expect("mkdir");
        std::fs::write(
            root.path().join("pressure/io"),
            include_str!("../../fixtures/kernel-6.1/proc/pressure/io"),
        )
        .expect("write");
        assert!(read_host_pressure(root.path(), "io").expect("ok").is_some());
    }
}
