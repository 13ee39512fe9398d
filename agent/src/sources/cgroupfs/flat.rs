//! Parsers of single-value cgroup files: counters (`memory.current`,
//! `memory.peak`, `pids.current`) and limits (`memory.max`, `memory.high`,
//! `memory.swap.max`: a byte count or `max`).

use super::ParseError;
use crate::model::sample::Limit;

pub fn parse_u64(text: &str) -> Result<u64, ParseError> {
    let t = text.trim();
    t.parse()
        .map_err(|_| ParseError::new(format!("expected an unsigned integer, got {t:?}")))
}

pub fn parse_limit(text: &str) -> Result<Limit, ParseError> {
    match text.trim() {
        "max" => Ok(Limit::Max),
        t => t
            .parse()
            .map(Limit::Bytes)
            .map_err(|_| ParseError::new(format!("expected a byte count or `max`, got {t:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_values() {
        assert_eq!(
            parse_limit(include_str!(
                "../../../fixtures/kernel-6.1/alice/memory.max"
            )),
            Ok(Limit::Bytes(536870912))
        );
        assert_eq!(
            parse_limit(include_str!(
                "../../../fixtures/kernel-6.1/alice/memory.high"
            )),
            Ok(Limit::Max)
        );
        assert_eq!(
            parse_limit(include_str!(
                "../../../fixtures/kernel-6.1/bob/memory.swap.max"
            )),
            Ok(Limit::Bytes(0))
        );
        assert_eq!(
            parse_u64(include_str!(
                "../../../fixtures/kernel-6.1/alice/memory.peak"
            )),
            Ok(334446592)
        );
        assert_eq!(
            parse_u64(include_str!(
                "../../../fixtures/kernel-6.1/alice/pids.current"
            )),
            Ok(2)
        );
    }

    #[test]
    fn empty_and_malformed() {
        assert!(parse_u64("").is_err());
        assert!(parse_u64("12 kB").is_err());
        assert!(parse_u64("-1").is_err());
        assert!(parse_limit("").is_err());
        assert!(parse_limit("Max").is_err());
        assert!(parse_limit("1G").is_err());
    }
}
