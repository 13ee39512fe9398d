//! Robust growth slopes: Theil–Sen (median of pairwise slopes) over the last
//! few samples, so one reclaim dip or a sampling hiccup does not fake a
//! runaway or hide one.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// How many recent points a slope is computed over.
pub const WINDOW: usize = 10;

/// Median of the pairwise slopes of `(t, v)` points; `None` with fewer than
/// two points of distinct time.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() <= WINDOW {
        let mut buf = [0.0; PAIRS];
        median_slope(points, &mut buf)
    } else {
        let mut buf = vec![0.0; points.len() * (points.len() - 1) / 2];
        median_slope(points, &mut buf)
    }
}

/// Pairs of `WINDOW` points.
const PAIRS: usize = WINDOW * (WINDOW - 1) / 2;

/// `theil_sen` with the slopes kept in `buf` (at least n(n-1)/2 long).
fn median_slope(points: &[(f64, f64)], buf: &mut [f64]) -> Option<f64> {
    let mut n = 0;
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dt = b.0 - a.0;
            if dt.abs() > 1e-9 {
                buf[n] = (b.1 - a.1) / dt;
                n += 1;
            }
        }
    }
    if n == 0 {
        return None;
    }
    let slopes = &mut buf[..n];
    // A slope per unit and per process each pass. A flat series (all
    // slopes the same) needs no ordering; otherwise only the middle order
    // statistics are found, not a whole sort (~3x faster at 45 slopes):
    // `hi` is the (n/2)th in total order, the largest of the n/2 below it
    // the one before it.
    let first = slopes[0];
    let (lo, hi) = if slopes.iter().all(|s| s.to_bits() == first.to_bits()) {
        (first, first)
    } else {
        let (below, hi, _) = slopes.select_nth_unstable_by(n / 2, |x, y| x.total_cmp(y));
        let hi = *hi;
        let lo = below
            .iter()
            .copied()
            .max_by(|x, y| x.total_cmp(y))
            .unwrap_or(hi);
        (lo, hi)
    };
    Some(if n % 2 == 1 { hi } else { (lo + hi) / 2.0 })
}

/// The last `WINDOW` values of one quantity with their monotonic times, and
/// their slope (computed once per new value: it is read every pass, values
/// of a quiet unit's processes come every few passes).
#[derive(Debug, Clone, Default)]
pub struct Series {
    points: VecDeque<(Instant, u64)>,
    slope: Option<f64>,
}

impl Series {
    pub fn push(&mut self, at: Instant, value: u64) {
        if self.points.len() == WINDOW {
            self.points.pop_front();
        }
        self.points.push_back((at, value));
        self.slope = self.points.front().and_then(|&(t0, _)| {
            let mut pts = [(0.0, 0.0); WINDOW];
            for (p, (t, v)) in pts.iter_mut().zip(&self.points) {
                *p = (t.duration_since(t0).as_secs_f64(), *v as f64);
            }
            theil_sen(&pts[..self.points.len()])
        });
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Units per second.
    pub fn slope(&self) -> Option<f64> {
        self.slope
    }
}

/// Per-process anon RSS series, keyed by (pid, start time) so a recycled pid
/// starts a fresh series.
#[derive(Debug, Clone, Default)]
pub struct ProcGrowth {
    series: HashMap<(i32, u64), Series>,
}

impl ProcGrowth {
    /// Records one pass's processes and forgets those that are gone.
    pub fn update(&mut self, at: Instant, procs: impl IntoIterator<Item = (i32, u64, u64)>) {
        for (pid, start, anon) in procs {
            self.series.entry((pid, start)).or_default().push(at, anon);
        }
        // Those not pushed to now are gone.
        self.series
            .retain(|_, s| s.points.back().is_some_and(|&(t, _)| t == at));
    }

    /// Anon bytes per second of one process.
    pub fn slope(&self, pid: i32, start_time: u64) -> Option<f64> {
        self.series.get(&(pid, start_time))?.slope()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn slope_of_a_line_and_outliers() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 100.0 * i as f64)).collect();
        assert_eq!(theil_sen(&pts), Some(100.0));
        let mut noisy = pts.clone();
        noisy[4].1 = 0.0; // a reclaim dip
        noisy[7].1 = 1e9; // a bogus spike
        let s = theil_sen(&noisy).expect("slope");
        assert!((s - 100.0).abs() < 1.0, "robust to two outliers: {s}");
    }

    /// The median as a full sort finds it (what this did before), on
    /// pseudo-random points of every window size, ties and dips included.
    #[test]
    fn median_slope_equals_the_sorted_median() {
        fn sorted_median(points: &[(f64, f64)]) -> Option<f64> {
            let mut v = Vec::new();
            for (i, a) in points.iter().enumerate() {
                for b in &points[i + 1..] {
                    if (b.0 - a.0).abs() > 1e-9 {
                        v.push((b.1 - a.1) / (b.0 - a.0));
                    }
                }
            }
            v.sort_unstable_by(|x, y| x.total_cmp(y));
            let n = v.len();
            (n > 0).then(|| {
                if n % 2 == 1 {
                    v[n / 2]
                } else {
                    (v[n / 2 - 1] + v[n / 2]) / 2.0
                }
            })
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2000 {
            let n = round % (WINDOW + 4);
            let pts: Vec<(f64, f64)> = (0..n)
                .map(|i| {
                    // Some times equal (pairs skipped), most not.
                    let t = if next() % 4 == 0 {
                        (i / 2) as f64
                    } else {
                        i as f64 + 0.5
                    };
                    // Flat series too (every slope the same).
                    let v = if round % 5 == 0 {
                        7.0
                    } else {
                        (next() % 7) as f64 * if next() % 3 == 0 { -1e6 } else { 4096.0 }
                    };
                    (t, v)
                })
                .collect();
            let got = theil_sen(&pts);
            let want = sorted_median(&pts);
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{pts:?}");
        }
    }

    #[test]
    fn too_few_points() {
        assert_eq!(theil_sen(&[]), None);
        assert_eq!(theil_sen(&[(1.0, 5.0)]), None);
        assert_eq!(theil_sen(&[(1.0, 5.0), (1.0, 6.0)]), None);
    }

    #[test]
    fn series_keeps_a_window_and_proc_growth_forgets() {
        let t0 = Instant::now();
        let mut s = Series::default();
        for i in 0..25u64 {
            s.push(t0 + Duration::from_millis(500 * i), 1000 * i);
        }
        assert_eq!(s.len(), WINDOW);
        let slope = s.slope().expect("slope");
        assert!((slope - 2000.0).abs() < 1e-6, "{slope}");

        let mut g = ProcGrowth::default();
        g.update(t0, [(1, 10, 0), (2, 20, 0)]);
        g.update(t0 + Duration::from_secs(1), [(1, 10, 4096)]);
        assert_eq!(g.slope(1, 10), Some(4096.0));
        assert_eq!(g.slope(2, 20), None, "gone");
    }
}
