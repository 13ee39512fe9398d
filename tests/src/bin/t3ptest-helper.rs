//! Test load for the BPF tests: joins the cgroups given with `--join
//! <cgroup.procs>` first, then runs one of:
//! `busy <threads> <cpu> <ms>` (spinning threads pinned to one CPU),
//! `vfork <ms>` (parent waits in D state while the vfork child sleeps),
//! `alloc <max_mb>` (touches anon memory 1 MiB at a time, up to a cap),
//! `pingpong <secs> <cpu> [procs]` (two processes bouncing a byte through
//! pipes; the child first joins the cgroup of `procs` if given),
//! `idle <sleep_ms> <poll_ms>` (a plain sleep, then an `epoll_wait` with
//! nothing to wait for: an event loop waiting for work).

use std::io::Write;
use std::time::{Duration, Instant};

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET within bounds.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

extern "C" fn sleep_child(arg: *mut libc::c_void) -> libc::c_int {
    let us = arg as usize as libc::useconds_t;
    // SAFETY: async-signal-safe; the child shares our memory and only sleeps.
    unsafe { libc::usleep(us) };
    0
}

/// `clone(CLONE_VM | CLONE_VFORK)` with its own stack (a vfork without the
/// "returns twice" hazard): the parent waits for the child in
/// `TASK_KILLABLE`, reported as D, until the child exits after `ms`.
fn vfork_sleep(ms: u64) {
    let mut stack = vec![0u8; 256 * 1024];
    // SAFETY: the stack is ours and outlives the child (the parent is
    // suspended until the child exits); the stack grows down from its end.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()).cast::<libc::c_void>();
        libc::clone(
            sleep_child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (ms * 1000) as usize as *mut libc::c_void,
        )
    };
    assert!(pid > 0, "clone failed: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("missing or bad argument {i} ({what})"))
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    while args.first().map(String::as_str) == Some("--join") {
        let procs = args.get(1).expect("--join needs a path").clone();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .and_then(|mut f| f.write_all(b"0"))
            .unwrap_or_else(|e| panic!("joining {procs}: {e}"));
        args.drain(..2);
    }
    let mode = args.first().cloned().unwrap_or_default();
    match mode.as_str() {
        "busy" => {
            let threads: usize = arg(&args, 1, "threads");
            let cpu: usize = arg(&args, 2, "cpu");
            let ms: u64 = arg(&args, 3, "ms");
            let end = Instant::now() + Duration::from_millis(ms);
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    std::thread::spawn(move || {
                        pin(cpu);
                        let mut x = 0u64;
                        while Instant::now() < end {
                            x = std::hint::black_box(x.wrapping_add(1));
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("busy thread");
            }
        }
        "vfork" => {
            let ms: u64 = arg(&args, 1, "ms");
            println!("ready {}", std::process::id());
            vfork_sleep(ms);
        }
        "vforks" => {
            // COUNT D-state waits of MS each (each under the episode
            // threshold), then "waited" and a voluntary sleep of HOLD_MS.
            let count: u32 = arg(&args, 1, "count");
            let ms: u64 = arg(&args, 2, "ms");
            let hold: u64 = arg(&args, 3, "hold_ms");
            for _ in 0..count {
                vfork_sleep(ms);
            }
            println!("waited");
            std::io::stdout().flush().expect("stdout");
            std::thread::sleep(std::time::Duration::from_millis(hold));
        }
        "idle" => {
            let sleep_ms: u64 = arg(&args, 1, "sleep_ms");
            let poll_ms: i32 = arg(&args, 2, "poll_ms");
            println!("sleeping");
            std::io::stdout().flush().expect("stdout");
            std::thread::sleep(Duration::from_millis(sleep_ms));
            println!("polling");
            std::io::stdout().flush().expect("stdout");
            // SAFETY: an epoll instance of our own with no descriptors; the
            // event buffer is ours.
            unsafe {
                let ep = libc::epoll_create1(0);
                assert!(
                    ep >= 0,
                    "epoll_create1: {}",
                    std::io::Error::last_os_error()
                );
                let mut ev: libc::epoll_event = std::mem::zeroed();
                libc::epoll_wait(ep, &mut ev, 1, poll_ms);
                libc::close(ep);
            }
        }
        "alloc" => {
            let max_mb: usize = arg(&args, 1, "max_mb");
            let mut keep: Vec<Vec<u8>> = Vec::new();
            for _ in 0..max_mb {
                keep.push(vec![1u8; 1 << 20]);
            }
            println!("survived {} MiB", keep.len());
        }
        "pingpong" => {
            let secs: u64 = arg(&args, 1, "secs");
            let cpu: usize = arg(&args, 2, "cpu");
            pin(cpu);
            let mut a = [0i32; 2];
            let mut b = [0i32; 2];
            // SAFETY: plain pipe/fork/read/write on our own fds.
            unsafe {
                libc::pipe(a.as_mut_ptr());
                libc::pipe(b.as_mut_ptr());
                let end = Instant::now() + Duration::from_secs(secs);
                let child = libc::fork();
                let mut byte = [0u8; 1];
                if child == 0 {
                    // The other end elsewhere: every switch then involves
                    // one task of each cgroup.
                    if let Some(procs) = args.get(3) {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(procs)
                            .and_then(|mut f| f.write_all(b"0"))
                            .unwrap_or_else(|e| panic!("joining {procs}: {e}"));
                    }
                    libc::close(a[1]);
                    libc::close(b[0]);
                    while libc::read(a[0], byte.as_mut_ptr().cast(), 1) == 1 {
                        libc::write(b[1], byte.as_ptr().cast(), 1);
                    }
                    libc::_exit(0);
                }
                libc::close(a[0]);
                libc::close(b[1]);
                let mut n = 0u64;
                while Instant::now() < end {
                    libc::write(a[1], byte.as_ptr().cast(), 1);
                    libc::read(b[0], byte.as_mut_ptr().cast(), 1);
                    n += 1;
                }
                libc::close(a[1]);
                let mut status = 0;
                libc::waitpid(child, &mut status, 0);
                println!("round trips {n}");
            }
        }
        other => panic!("unknown mode {other:?}"),
    }
}
