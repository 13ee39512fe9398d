//! Test helper: a process that holds and optionally grows anonymous memory,
//! standing in for a runaway (or a well-behaved) AI-agent child.
//!
//! Usage: `t3-memhog <initial_mib> <growth_mib_per_s> <max_mib>`; prints
//! `ready` once the initial memory is touched, then grows every 10 ms up to
//! the maximum and holds it until killed.

use std::io::Write;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

fn arg(n: usize) -> f64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let (initial, rate, max) = (arg(1), arg(2), arg(3));
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0usize;
    // Non-zero fill: every page is written, so it counts in RssAnon.
    let mut grow_to = |target: usize, held: &mut Vec<Vec<u8>>| {
        if target > bytes {
            held.push(vec![0x5a; target - bytes]);
            bytes = target;
        }
    };
    grow_to((initial * MIB as f64) as usize, &mut held);
    println!("ready");
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    let max_bytes = (max * MIB as f64) as usize;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        if rate > 0.0 {
            let t = start.elapsed().as_secs_f64();
            let target = ((initial + rate * t) * MIB as f64) as usize;
            grow_to(target.min(max_bytes), &mut held);
        }
        std::hint::black_box(&held);
    }
}
