//! Short human figures for narrow columns: bytes, rates, durations, ages.

/// Bytes in binary units with one decimal at most ("13.9G", "512M", "0B").
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else if v < 10.0 {
        format!("{v:.1}{}", UNITS[i])
    } else {
        format!("{v:.0}{}", UNITS[i])
    }
}

/// Optional bytes, "-" when unknown.
pub fn opt_bytes(b: Option<u64>) -> String {
    b.map(bytes).unwrap_or_else(|| "-".into())
}

/// A signed growth rate ("+120M/s", "-3.0M/s"); "-" when unknown, "0" when
/// flat (below 1 KiB/s, which is noise at these sizes).
pub fn rate(bps: Option<f64>) -> String {
    match bps {
        None => "-".into(),
        Some(v) if !v.is_finite() => "-".into(),
        Some(v) if v.abs() < 1024.0 => "0".into(),
        Some(v) => {
            let sign = if v < 0.0 { "-" } else { "+" };
            format!("{sign}{}/s", bytes(v.abs() as u64))
        }
    }
}

/// A duration in the largest sensible unit ("4.2s", "12s", "3m", "2h", "5d").
pub fn duration(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "-".into();
    }
    if s < 10.0 {
        format!("{s:.1}s")
    } else if s < 120.0 {
        format!("{s:.0}s")
    } else if s < 7200.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.0}h", s / 3600.0)
    } else {
        format!("{:.0}d", s / 86400.0)
    }
}

/// A 0..1 share as a whole percent ("45%"), "-" when unknown.
pub fn share(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{:.0}%", (v * 100.0).clamp(0.0, 100.0)),
        _ => "-".into(),
    }
}

/// An avg10 (already percent): one decimal below 10, whole above; "-" when
/// unknown.
pub fn avg(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v < 9.95 => format!("{v:.1}"),
        Some(v) if v.is_finite() => format!("{v:.0}"),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_units() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(16 << 30), "16G");
        assert_eq!(bytes((139 << 30) / 10), "14G");
        assert_eq!(bytes(5 << 29), "2.5G");
    }

    #[test]
    fn rates_and_durations() {
        assert_eq!(rate(None), "-");
        assert_eq!(rate(Some(100.0)), "0");
        assert_eq!(rate(Some(120.0 * 1048576.0)), "+120M/s");
        assert_eq!(rate(Some(-3.0 * 1048576.0)), "-3.0M/s");
        assert_eq!(rate(Some(f64::NAN)), "-");
        assert_eq!(duration(4.24), "4.2s");
        assert_eq!(duration(25.0), "25s");
        assert_eq!(duration(180.0), "3m");
        assert_eq!(duration(-1.0), "-");
        assert_eq!(share(Some(0.456)), "46%");
        assert_eq!(share(None), "-");
        assert_eq!(avg(Some(3.04)), "3.0");
        assert_eq!(avg(Some(57.4)), "57");
    }
}
