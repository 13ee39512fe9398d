//! Parser of PSI files (`memory.pressure`, `io.pressure`, `cpu.pressure`, and
//! `/proc/pressure/*`): see Documentation/accounting/psi.rst.

use super::ParseError;
use crate::model::sample::{Psi, PsiLine};

/// Parses `some avg10=.. avg60=.. avg300=.. total=..` and the optional `full`
/// line. Unknown lines and keys are ignored (a newer kernel may add some).
pub fn parse_psi(text: &str) -> Result<Psi, ParseError> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            Some(_) | None => continue,
        };
        *slot = Some(parse_line(words, line)?);
    }
    let some = some.ok_or_else(|| ParseError::new("no `some` line"))?;
    Ok(Psi { some, full })
}

fn parse_line<'a>(words: impl Iterator<Item = &'a str>, line: &str) -> Result<PsiLine, ParseError> {
    let mut out = PsiLine::default();
    let mut seen_total = false;
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| ParseError::new(format!("no `=` in {word:?} of {line:?}")))?;
        let bad = || ParseError::new(format!("bad value in {word:?} of {line:?}"));
        match key {
            "avg10" => out.avg10 = value.parse().map_err(|_| bad())?,
            "avg60" => out.avg60 = value.parse().map_err(|_| bad())?,
            "avg300" => out.avg300 = value.parse().map_err(|_| bad())?,
            "total" => {
                out.total_us = value.parse().map_err(|_| bad())?;
                seen_total = true;
            }
            _ => {}
        }
    }
    if !seen_total {
        return Err(ParseError::new(format!("no total in {line:?}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE_MEMORY: &str = include_str!("../../../fixtures/kernel-6.1/alice/memory.pressure");
    const BOB_IO: &str = include_str!("../../../fixtures/kernel-6.1/bob/io.pressure");
    const HOST_CPU: &str = include_str!("../../../fixtures/kernel-6.1/proc/pressure/cpu");

    #[test]
    fn captured_unit_memory_pressure() {
        let p = parse_psi(ALICE_MEMORY).expect("parse");
        assert_eq!(p.some.total_us, 54685);
        assert_eq!(p.some.avg10, 0.16);
        assert_eq!(p.full.expect("full").total_us, 54685);
    }

    #[test]
    fn captured_io_and_host_cpu() {
        assert_eq!(parse_psi(BOB_IO).expect("parse").some.total_us, 94980);
        let cpu = parse_psi(HOST_CPU).expect("parse");
        assert_eq!(cpu.some.total_us, 8159151);
        assert_eq!(cpu.some.avg60, 6.36);
    }

    #[test]
    fn some_only_is_fine() {
        let p = parse_psi("some avg10=1.00 avg60=0.00 avg300=0.00 total=7\n").expect("parse");
        assert_eq!(p.some.total_us, 7);
        assert!(p.full.is_none());
    }

    #[test]
    fn empty_and_malformed_are_errors() {
        assert!(parse_psi("").is_err());
        assert!(
            parse_psi("full avg10=0.00 total=1\n").is_err(),
            "no some line"
        );
        assert!(parse_psi("some avg10=x avg60=0 avg300=0 total=1").is_err());
        assert!(
            parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00").is_err(),
            "no total"
        );
        assert!(parse_psi("some avg10 total=1").is_err());
        assert!(parse_psi("some total=-5").is_err());
    }
}
