//! CLOCK_MONOTONIC (what `bpf_ktime_get_ns` returns) to wall time.

use std::time::{Duration, SystemTime};

/// Now on CLOCK_MONOTONIC, in ns, the clock of the kernel side's stamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The wall time of a CLOCK_MONOTONIC stamp, by its distance from now.
pub fn mono_to_wall(mono_ns: u64) -> SystemTime {
    let now_wall = SystemTime::now();
    let now_mono = monotonic_ns();
    if mono_ns <= now_mono {
        now_wall - Duration::from_nanos(now_mono - mono_ns)
    } else {
        now_wall + Duration::from_nanos(mono_ns - now_mono)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_of_one_second_ago_is_one_second_ago() {
        let mono = monotonic_ns() - 1_000_000_000;
        let ago = SystemTime::now()
            .duration_since(mono_to_wall(mono))
            .expect("in the past");
        assert!(ago >= Duration::from_millis(990) && ago <= Duration::from_millis(1100));
    }
}
