//! Root tests of the real pidfd killer on real processes: the runaway dies,
//! its sibling lives, and a pid that no longer names the decided-on process
//! is never signalled.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use t3pressure::actions::killer::{KillError, KillTarget, Killer, PidfdKiller};
use t3pressure_tests::procs::{cgroup, memhog, require_root, rss_anon, stat, wait_until};

const MEMHOG: &str = env!("CARGO_BIN_EXE_t3-memhog");
const MIB: u64 = 1024 * 1024;

fn target_of(pid: u32) -> KillTarget {
    let (_, start_time) = stat(pid).expect("stat of a live child");
    KillTarget {
        pid: pid as i32,
        start_time,
        cgroup: cgroup(pid),
        comm: "t3-memhog".into(),
    }
}

#[test]
fn growing_child_is_killed_and_its_sibling_is_not() {
    require_root("the pidfd killer test");
    let mut grower = memhog(MEMHOG, 16, 200, 400);
    let mut sibling = memhog(MEMHOG, 16, 0, 16);
    assert!(
        wait_until(Duration::from_secs(5), || rss_anon(grower.id())
            .is_some_and(|r| r > 64 * MIB)),
        "the grower never grew"
    );
    let target = target_of(grower.id());
    PidfdKiller::new(Path::new("/proc"))
        .kill(&target)
        .expect("kill the grower");
    let status = grower.wait().expect("wait grower");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        sibling.try_wait().expect("try_wait").is_none(),
        "the sibling must live"
    );
    sibling.kill().expect("cleanup");
    sibling.wait().expect("reap");
}

#[test]
fn process_that_exec_d_since_the_decision_is_not_hit() {
    require_root("the pidfd killer test");
    let mut child = memhog(MEMHOG, 1, 0, 1);
    // Decided on as another program (its comm then); it is t3-memhog now.
    let target = KillTarget {
        comm: "bash".into(),
        ..target_of(child.id())
    };
    let e = PidfdKiller::new(Path::new("/proc"))
        .kill(&target)
        .expect_err("must not kill");
    assert!(matches!(e, KillError::Changed { .. }), "{e}");
    assert!(e.to_string().contains("exec'd"), "{e}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(child.try_wait().expect("try_wait").is_none(), "still alive");
    child.kill().expect("cleanup");
    child.wait().expect("reap");
}

#[test]
fn exited_process_is_not_hit_and_the_error_says_gone() {
    require_root("the pidfd killer test");
    let mut child = memhog(MEMHOG, 1, 0, 1);
    let target = target_of(child.id());
    // The decided-on process exits (and is reaped) before the kill.
    child.kill().expect("kill");
    child.wait().expect("reap");
    let e = PidfdKiller::new(Path::new("/proc"))
        .kill(&target)
        .expect_err("must not report a kill");
    // Gone, or Changed if the pid was recycled by someone else meanwhile.
    assert!(
        matches!(e, KillError::Gone { .. } | KillError::Changed { .. }),
        "{e}"
    );
    let text = e.to_string();
    assert!(text.contains("gone") || text.contains("changed"), "{text}");
}

#[test]
fn zombie_is_gone_not_killed() {
    require_root("the pidfd killer test");
    let mut child = memhog(MEMHOG, 1, 0, 1);
    let pid = child.id();
    let target = target_of(pid);
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    assert!(
        wait_until(Duration::from_secs(5), || stat(pid)
            .is_some_and(|(s, _)| s == 'Z')),
        "child did not become a zombie"
    );
    let e = PidfdKiller::new(Path::new("/proc"))
        .kill(&target)
        .expect_err("a zombie is gone");
    assert!(matches!(e, KillError::Gone { .. }), "{e}");
    let status = child.wait().expect("reap");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "not SIGKILLed by us");
}

#[test]
fn recycled_pid_is_not_signalled() {
    require_root("the pidfd killer test");
    // The decision named pid P with an older start time; P now belongs to
    // another live process (what pid recycling looks like).
    let mut other = memhog(MEMHOG, 1, 0, 1);
    let mut target = target_of(other.id());
    target.start_time -= 1;
    let e = PidfdKiller::new(Path::new("/proc"))
        .kill(&target)
        .expect_err("must refuse");
    assert!(matches!(e, KillError::Changed { .. }), "{e}");
    assert!(e.to_string().contains("recycled"), "{e}");
    // Moved to another cgroup: also refused.
    let mut target = target_of(other.id());
    target.cgroup = Some("/somewhere/else".into());
    let e = PidfdKiller::new(Path::new("/proc"))
        .kill(&target)
        .expect_err("must refuse");
    assert!(matches!(e, KillError::Changed { .. }), "{e}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(other.try_wait().expect("try_wait").is_none(), "untouched");
    other.kill().expect("cleanup");
    other.wait().expect("reap");
}
