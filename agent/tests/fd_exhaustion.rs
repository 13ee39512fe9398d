//! The sampler when the process runs out of file descriptors (EMFILE): it
//! degrades to reading by path and never fails a pass. Its own test binary:
//! it lowers RLIMIT_NOFILE for the whole process.

use t3pressure::sources::discovery::UnitMatcher;
use t3pressure::sources::sampler::Sampler;
use t3pressure::testing::FakeCgroupTree;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("fd dir").count()
}

#[test]
fn emfile_degrades_to_reads_by_path() {
    let tree = FakeCgroupTree::new();
    let matcher = UnitMatcher::new(&tree.root(), "t3-serve@*.service").expect("glob");
    for u in 0..4 {
        let path = tree.unit(&format!("u{u}"));
        for p in 0..20 {
            let pid = 1000 + u * 100 + p;
            tree.process(&path, pid, 1, "claude", 1000);
        }
    }
    let (units, _) = matcher.scan(&tree.root());
    assert_eq!(units.len(), 4);
    // Room for about one unit's descriptors (15 + 2 x 20: statm and
    // status per process), not four; the budget (half the limit) would
    // allow more than the process has.
    let limit = (open_fds() + 70) as u64;
    let r = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads the rlimit we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
    let mut s = Sampler::with_fd_budget(
        &tree.root(),
        &tree.proc_root(),
        t3pressure::sources::fdcache::FdBudget::new(10_000),
    );
    for pass in 0..3 {
        for u in &units {
            let sample = s.sample_unit(u).expect("present");
            assert_eq!(
                sample.procs.len(),
                20,
                "pass {pass} {} {:?} held {}",
                u.name,
                s.errors.counts(),
                s.fds_held()
            );
            assert!(sample.memory_stat.is_some() && sample.memory_max.is_some());
        }
        let h = s.sample_host();
        assert!(h.meminfo.is_some());
        s.end_pass();
        assert!(s.errors.counts().is_empty(), "{:?}", s.errors.counts());
        assert!(open_fds() < limit as usize);
    }
}
