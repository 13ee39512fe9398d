//! Parser of `cgroup.procs`: one pid per line.

use super::ParseError;

pub fn parse_procs(text: &str) -> Result<Vec<i32>, ParseError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<i32>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ParseError::new(format!("expected a pid, got {l:?}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_procs() {
        let pids = parse_procs(include_str!(
            "../../../fixtures/kernel-6.1/alice/cgroup.procs"
        ))
        .expect("parse");
        assert_eq!(pids, vec![199, 205]);
    }

    #[test]
    fn empty_is_no_processes() {
        assert_eq!(parse_procs(""), Ok(vec![]));
    }

    #[test]
    fn malformed() {
        assert!(parse_procs("12\nabc\n").is_err());
        assert!(parse_procs("-3\n").is_err());
        assert!(parse_procs("0\n").is_err());
    }
}
