//! Figures derived from two consecutive samples: the share of the interval
//! spent stalled (from PSI totals) and the time to MemoryMax.

use crate::model::sample::{Limit, Psi};

/// Share (0..1) of an interval during which some / all non-idle tasks were
/// stalled on a resource: delta of the PSI `total` (µs) over the elapsed
/// time. `full` is `None` where the kernel has no full line (host cpu).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiShares {
    pub some: Option<f64>,
    pub full: Option<f64>,
}

impl PsiShares {
    pub fn between(prev: Option<&Psi>, cur: Option<&Psi>, dt_s: f64) -> PsiShares {
        let (Some(p), Some(c)) = (prev, cur) else {
            return PsiShares::default();
        };
        PsiShares {
            some: share(p.some.total_us, c.some.total_us, dt_s),
            full: match (p.full, c.full) {
                (Some(pf), Some(cf)) => share(pf.total_us, cf.total_us, dt_s),
                _ => None,
            },
        }
    }
}

/// `None` for a zero interval or a counter that went backwards (a new
/// cgroup under the same name); clamped to 1 (timer granularity).
pub fn share(prev_us: u64, cur_us: u64, dt_s: f64) -> Option<f64> {
    if dt_s <= 0.0 || cur_us < prev_us {
        return None;
    }
    Some(((cur_us - prev_us) as f64 / 1e6 / dt_s).min(1.0))
}

/// Stall shares of the three resources over the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PressureShares {
    pub memory: PsiShares,
    pub io: PsiShares,
    pub cpu: PsiShares,
    /// The interval they were computed over, seconds.
    pub dt_s: f64,
}

impl PressureShares {
    /// Shares of memory, io and cpu between two readings of the three
    /// pressure files (a unit's or the host's), `dt_s` apart.
    pub fn between(prev: [Option<&Psi>; 3], cur: [Option<&Psi>; 3], dt_s: f64) -> Self {
        PressureShares {
            memory: PsiShares::between(prev[0], cur[0], dt_s),
            io: PsiShares::between(prev[1], cur[1], dt_s),
            cpu: PsiShares::between(prev[2], cur[2], dt_s),
            dt_s,
        }
    }
}

/// Seconds until `current` reaches the limit at `growth` bytes/s; `None`
/// when unlimited or not growing.
pub fn time_to_max(current: u64, max: Option<Limit>, growth_bps: Option<f64>) -> Option<f64> {
    let max = max?.bytes()?;
    let g = growth_bps?;
    // NaN is not growing either.
    if g.is_nan() || g <= 0.0 {
        return None;
    }
    Some((max.saturating_sub(current)) as f64 / g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample::PsiLine;

    fn psi(some: u64, full: Option<u64>) -> Psi {
        Psi {
            some: PsiLine {
                total_us: some,
                ..Default::default()
            },
            full: full.map(|t| PsiLine {
                total_us: t,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn shares() {
        let s = PsiShares::between(
            Some(&psi(0, Some(0))),
            Some(&psi(500_000, Some(250_000))),
            1.0,
        );
        assert_eq!(s.some, Some(0.5));
        assert_eq!(s.full, Some(0.25));
        let s = PsiShares::between(Some(&psi(0, None)), Some(&psi(3_000_000, None)), 1.0);
        assert_eq!(s.some, Some(1.0), "clamped");
        assert_eq!(s.full, None);
        assert_eq!(share(10, 5, 1.0), None, "reset");
        assert_eq!(share(0, 5, 0.0), None);
        assert_eq!(
            PsiShares::between(None, Some(&psi(1, None)), 1.0),
            PsiShares::default()
        );
    }

    #[test]
    fn time_to_max_cases() {
        let max = Some(Limit::Bytes(1000));
        assert_eq!(time_to_max(500, max, Some(100.0)), Some(5.0));
        assert_eq!(time_to_max(500, max, Some(0.0)), None);
        assert_eq!(time_to_max(500, max, Some(-3.0)), None);
        assert_eq!(time_to_max(500, Some(Limit::Max), Some(100.0)), None);
        assert_eq!(time_to_max(1500, max, Some(100.0)), Some(0.0));
    }
}
