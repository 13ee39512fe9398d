//! Parsers of flat-keyed cgroup files (`key value` per line): `memory.stat`,
//! `memory.events`, `cpu.stat`. Unknown keys are skipped (kernels add keys);
//! keys older kernels lack default to 0 or `None`.

use super::ParseError;
use crate::model::sample::{CpuStat, MemoryEvents, MemoryStat};

/// Iterates `key value` pairs; a line without a numeric value is an error.
fn pairs(text: &str) -> impl Iterator<Item = Result<(&str, u64), ParseError>> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|line| {
        let mut words = line.split_ascii_whitespace();
        match (
            words.next(),
            words.next().map(str::parse::<u64>),
            words.next(),
        ) {
            (Some(k), Some(Ok(v)), None) => Ok((k, v)),
            _ => Err(ParseError::new(format!(
                "expected `key value`, got {line:?}"
            ))),
        }
    })
}

pub fn parse_memory_events(text: &str) -> Result<MemoryEvents, ParseError> {
    let mut out = MemoryEvents::default();
    let mut any = false;
    for pair in pairs(text) {
        let (k, v) = pair?;
        let slot = match k {
            "low" => &mut out.low,
            "high" => &mut out.high,
            "max" => &mut out.max,
            "oom" => &mut out.oom,
            "oom_kill" => &mut out.oom_kill,
            "oom_group_kill" => &mut out.oom_group_kill,
            _ => continue,
        };
        *slot = v;
        any = true;
    }
    if !any {
        return Err(ParseError::new("no known memory.events key"));
    }
    Ok(out)
}

pub fn parse_memory_stat(text: &str) -> Result<MemoryStat, ParseError> {
    let mut out = MemoryStat::default();
    let (mut anon, mut file) = (false, false);
    for pair in pairs(text) {
        let (k, v) = pair?;
        match k {
            "anon" => {
                out.anon = v;
                anon = true;
            }
            "file" => {
                out.file = v;
                file = true;
            }
            "file_mapped" => out.file_mapped = v,
            "shmem" => out.shmem = v,
            "workingset_refault_anon" => out.workingset_refault_anon = v,
            "workingset_refault_file" => out.workingset_refault_file = v,
            "pgmajfault" => out.pgmajfault = v,
            _ => {}
        }
    }
    if !(anon && file) {
        return Err(ParseError::new("memory.stat without anon or file"));
    }
    Ok(out)
}

pub fn parse_cpu_stat(text: &str) -> Result<CpuStat, ParseError> {
    let mut out = CpuStat::default();
    let mut usage = false;
    for pair in pairs(text) {
        let (k, v) = pair?;
        match k {
            "usage_usec" => {
                out.usage_usec = v;
                usage = true;
            }
            "user_usec" => out.user_usec = v,
            "system_usec" => out.system_usec = v,
            "nr_periods" => out.nr_periods = Some(v),
            "nr_throttled" => out.nr_throttled = Some(v),
            "throttled_usec" => out.throttled_usec = Some(v),
            _ => {}
        }
    }
    if !usage {
        return Err(ParseError::new("cpu.stat without usage_usec"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_memory_stat() {
        let s = parse_memory_stat(include_str!(
            "../../../fixtures/kernel-6.1/alice/memory.stat"
        ))
        .expect("parse");
        assert_eq!(s.anon, 328384512);
        assert_eq!(s.file, 4907008);
        assert_eq!(s.file_mapped, 2285568);
        assert_eq!(s.workingset_refault_file, 148);
        assert_eq!(s.pgmajfault, 35);
    }

    #[test]
    fn captured_memory_events_with_oom_kill() {
        let e = parse_memory_events(include_str!(
            "../../../fixtures/kernel-6.1/bob/memory.events"
        ))
        .expect("parse");
        assert_eq!(e.max, 70);
        assert_eq!(e.oom, 1);
        assert_eq!(e.oom_kill, 1);
        assert_eq!(e.oom_group_kill, 0);
    }

    #[test]
    fn captured_cpu_stat_without_cpu_controller() {
        let c = parse_cpu_stat(include_str!("../../../fixtures/kernel-6.1/alice/cpu.stat"))
            .expect("parse");
        assert_eq!(c.usage_usec, 6339573);
        assert_eq!(c.nr_throttled, None);
        let c = parse_cpu_stat("usage_usec 1\nnr_periods 2\nnr_throttled 3\nthrottled_usec 4\n")
            .expect("parse");
        assert_eq!(c.throttled_usec, Some(4));
    }

    #[test]
    fn older_kernel_memory_events_default_to_zero() {
        let e = parse_memory_events("low 0\nhigh 1\nmax 2\noom 3\noom_kill 4\n").expect("parse");
        assert_eq!(e.oom_group_kill, 0);
        assert_eq!(e.high, 1);
    }

    #[test]
    fn empty_and_malformed() {
        assert!(parse_memory_stat("").is_err());
        assert!(parse_memory_events("").is_err());
        assert!(parse_cpu_stat("").is_err());
        assert!(parse_memory_stat("anon 1\nfile x\n").is_err());
        assert!(parse_memory_stat("anon 1 2\nfile 3\n").is_err());
        assert!(parse_memory_events("oom_kill\n").is_err());
        assert!(parse_cpu_stat("user_usec 5\n").is_err(), "no usage_usec");
    }
}
