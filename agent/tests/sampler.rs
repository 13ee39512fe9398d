//! Sampling passes on fake trees: captured contents, missing controllers,
//! malformed files counted once per pass and logged once, processes of
//! nested cgroups, a vanished unit.

use std::path::Path;

use t3pressure::model::sample::{Limit, Unit};
use t3pressure::sources::discovery::UnitMatcher;
use t3pressure::sources::sampler::Sampler;
use t3pressure::testing::FakeCgroupTree;

fn unit_of(tree: &FakeCgroupTree, path: &Path) -> Unit {
    UnitMatcher::new(&tree.root(), "t3-serve@*.service")
        .expect("glob")
        .unit_at(path)
        .expect("unit dir exists")
}

#[test]
fn captured_unit_with_processes_in_child_cgroups() {
    let tree = FakeCgroupTree::new();
    let path = tree.unit("alice");
    tree.process(&path, 100, 1, "node", 50_000);
    let child = tree.child_cgroup("alice", "agents/a1");
    tree.process(&child, 101, 100, "claude", 300_000);
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    let sample = s.sample_unit(&unit_of(&tree, &path)).expect("present");
    assert_eq!(sample.memory_current, Some(334315520));
    assert_eq!(sample.memory_max, Some(Limit::Bytes(536870912)));
    assert_eq!(sample.memory_high, Some(Limit::Max));
    assert_eq!(sample.memory_stat.expect("stat").anon, 328384512);
    assert_eq!(sample.memory_pressure.expect("psi").some.total_us, 54685);
    assert_eq!(sample.procs.len(), 2);
    let agent = sample
        .procs
        .iter()
        .find(|p| p.pid == 101)
        .expect("child process");
    assert_eq!(&*agent.comm, "claude");
    assert_eq!(&*agent.argv0, "claude", "argv0 only");
    assert_eq!(agent.rss_anon, 300_000 * 1024);
    assert!(
        agent.cgroup.ends_with("t3-serve@alice.service/agents/a1"),
        "{}",
        agent.cgroup
    );
    assert!(s.errors.counts().is_empty(), "{:?}", s.errors.counts());
}

#[test]
fn missing_controller_files_are_skipped_not_errors() {
    let tree = FakeCgroupTree::new();
    let path = tree.unit("alice");
    for f in [
        "io.pressure",
        "memory.peak",
        "memory.swap.current",
        "memory.swap.max",
    ] {
        tree.remove_file("alice", f);
    }
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    let sample = s.sample_unit(&unit_of(&tree, &path)).expect("present");
    assert!(sample.io_pressure.is_none());
    assert!(sample.memory_peak.is_none());
    assert!(sample.memory_current.is_some());
    assert!(s.errors.counts().is_empty(), "{:?}", s.errors.counts());
}

#[test]
fn malformed_files_are_counted_per_file_name() {
    let tree = FakeCgroupTree::new();
    let path = tree.unit("alice");
    tree.set("alice", "memory.stat", "this is not memory.stat\n");
    tree.set("alice", "memory.max", "lots\n");
    tree.set("alice", "cgroup.procs", "12\nbanana\n");
    let unit = unit_of(&tree, &path);
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    for _ in 0..3 {
        let sample = s.sample_unit(&unit).expect("present");
        assert!(sample.memory_stat.is_none());
        assert!(sample.memory_max.is_none());
        assert!(sample.memory_current.is_some(), "other files still read");
    }
    let c = s.errors.counts();
    assert_eq!(c.get("memory.stat"), Some(&3));
    assert_eq!(c.get("memory.max"), Some(&3));
    assert_eq!(c.get("cgroup.procs"), Some(&3));
}

#[test]
fn empty_files_are_malformed_except_cgroup_procs() {
    let tree = FakeCgroupTree::new();
    let path = tree.unit("alice");
    for f in [
        "memory.pressure",
        "memory.current",
        "memory.events",
        "cpu.stat",
    ] {
        tree.set("alice", f, "");
    }
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    let sample = s.sample_unit(&unit_of(&tree, &path)).expect("present");
    assert!(sample.memory_pressure.is_none() && sample.memory_events.is_none());
    assert!(sample.procs.is_empty());
    assert_eq!(s.errors.counts().len(), 4, "{:?}", s.errors.counts());
}

#[test]
fn vanished_unit_and_exited_process() {
    let tree = FakeCgroupTree::new();
    let path = tree.unit("alice");
    tree.process(&path, 100, 1, "node", 1);
    tree.process(&path, 101, 100, "gone", 1);
    tree.remove_process(101).expect("rm proc");
    let unit = unit_of(&tree, &path);
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    let sample = s.sample_unit(&unit).expect("present");
    assert_eq!(sample.procs.len(), 1, "an exited process is skipped");
    tree.remove_unit("alice");
    assert!(s.sample_unit(&unit).is_none(), "a vanished unit is None");
    assert!(s.errors.counts().is_empty(), "{:?}", s.errors.counts());
}

#[test]
fn host_sample_from_proc_root() {
    let tree = FakeCgroupTree::new();
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    let h = s.sample_host();
    assert_eq!(h.cpu_pressure.expect("cpu psi").some.total_us, 8159151);
    assert_eq!(h.meminfo.expect("meminfo").mem_total, 2012120 * 1024);
    let empty = tempfile::tempdir().expect("tempdir");
    let mut s = Sampler::new(&tree.root(), empty.path());
    let h = s.sample_host();
    assert!(h.memory_pressure.is_none() && h.meminfo.is_none());
    assert!(s.errors.counts().is_empty());
}

// ---- descriptors kept open across passes (sources/fdcache.rs) ----

fn alice_with_procs(tree: &FakeCgroupTree) -> Unit {
    let path = tree.unit("alice");
    tree.process(&path, 300, 1, "node", 50_000);
    tree.process(&path, 301, 300, "claude", 60_000);
    let child = tree.child_cgroup("alice", "agents/a1");
    tree.process(&child, 302, 300, "claude", 70_000);
    unit_of(tree, &path)
}

#[test]
fn cached_descriptors_follow_content_changes() {
    let tree = FakeCgroupTree::new();
    let unit = alice_with_procs(&tree);
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    let first = s.sample_unit(&unit).expect("present");
    assert_eq!(first.procs.len(), 3);
    let held = s.fds_held();
    // dir + 13 files + cgroup.procs, agents/ (a plain dir), agents/a1 and
    // its cgroup.procs, 3 x (statm + status).
    assert_eq!(held, 1 + 13 + 1 + 1 + 2 + 3 * 2);
    tree.set("alice", "memory.current", "400000000\n");
    tree.set_process(301, 300, "claude", 90_000);
    let second = s.sample_unit(&unit).expect("present");
    assert_eq!(second.memory_current, Some(400_000_000));
    let p = second.procs.iter().find(|p| p.pid == 301).expect("301");
    assert_eq!(p.rss_anon, 90_000 * 1024);
    assert_eq!(s.fds_held(), held, "nothing reopened");
    assert!(s.errors.counts().is_empty(), "{:?}", s.errors.counts());
}

#[test]
fn unit_removed_while_cached_reads_as_vanished() {
    let tree = FakeCgroupTree::new();
    let unit = alice_with_procs(&tree);
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    for _ in 0..2 {
        assert!(s.sample_unit(&unit).is_some());
    }
    assert!(s.fds_held() > 0);
    tree.remove_unit("alice");
    assert!(s.sample_unit(&unit).is_none(), "vanished, not stale data");
    assert!(
        s.sample_unit_with(&unit, false).is_none(),
        "without processes too"
    );
    assert_eq!(s.fds_held(), 0, "its descriptors were closed");
    assert!(s.errors.counts().is_empty(), "{:?}", s.errors.counts());
}

#[test]
fn unit_restarted_under_the_same_path_is_read_afresh() {
    let tree = FakeCgroupTree::new();
    let unit = alice_with_procs(&tree);
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    assert!(s.sample_unit(&unit).is_some());
    tree.remove_unit("alice");
    let path = tree.unit("alice");
    tree.set("alice", "memory.current", "12345\n");
    tree.process(&path, 400, 1, "node", 1);
    // Discovery not caught up yet (old cgroup id), and caught up.
    let again = s.sample_unit(&unit).expect("present");
    assert_eq!(again.memory_current, Some(12345));
    assert_eq!(again.procs.len(), 1);
    let new_unit = unit_of(&tree, &path);
    let again = s.sample_unit(&new_unit).expect("present");
    assert_eq!(again.memory_current, Some(12345));
    assert_eq!(again.procs.len(), 1);
}

#[test]
fn removed_child_cgroup_and_departed_pids_close_their_descriptors() {
    let tree = FakeCgroupTree::new();
    let unit = alice_with_procs(&tree);
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    assert!(s.sample_unit(&unit).is_some());
    let held = s.fds_held();
    tree.remove_process(302).expect("rm proc");
    std::fs::remove_dir_all(tree.unit_path("alice").join("agents")).expect("rm child");
    tree.set("alice", "cgroup.procs", "300\n");
    tree.remove_process(301).expect("rm proc");
    let sample = s.sample_unit(&unit).expect("present");
    assert_eq!(sample.procs.len(), 1);
    assert_eq!(
        s.fds_held(),
        held - 3 - 2 * 2,
        "agents/, a1 and its procs, two statm and status"
    );
    s.forget_unit(&unit.path);
    assert_eq!(s.fds_held(), 0);
}

#[test]
fn recycled_pid_never_gets_the_old_process_data() {
    let tree = FakeCgroupTree::new();
    let unit = alice_with_procs(&tree);
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    let first = s.sample_unit(&unit).expect("present");
    let old = first.procs.iter().find(|p| p.pid == 301).expect("301");
    assert_eq!((old.rss_anon, &*old.argv0), (60_000 * 1024, "claude"));
    // 301 exits (its open statm now reads nothing, as procfs answers
    // ESRCH) and a new process gets the number, with the same comm but
    // another command line.
    tree.remove_process(301).expect("rm proc");
    tree.set_process(301, 300, "claude", 8);
    std::fs::write(tree.proc_root().join("301/cmdline"), "other-agent\0").expect("cmdline");
    let second = s.sample_unit(&unit).expect("present");
    let new = second.procs.iter().find(|p| p.pid == 301).expect("301");
    assert_eq!(new.rss_anon, 8 * 1024, "the new process's statm");
    assert_eq!(&*new.argv0, "other-agent", "its identity re-read");
    assert!(s.errors.counts().is_empty(), "{:?}", s.errors.counts());
}

#[test]
fn a_small_descriptor_budget_reads_the_same() {
    let tree = FakeCgroupTree::new();
    let unit = alice_with_procs(&tree);
    let mut all = Sampler::new(&tree.root(), &tree.proc_root());
    let mut few = Sampler::with_fd_budget(
        &tree.root(),
        &tree.proc_root(),
        t3pressure::sources::fdcache::FdBudget::new(5),
    );
    for _ in 0..3 {
        let a = all.sample_unit(&unit).expect("present");
        let b = few.sample_unit(&unit).expect("present");
        assert_eq!(a.memory_stat, b.memory_stat);
        assert_eq!(a.memory_max, b.memory_max);
        assert_eq!(a.procs.len(), b.procs.len());
        all.end_pass();
        few.end_pass();
    }
    assert_eq!(few.fds_held(), 5);
    tree.remove_unit("alice");
    assert!(few.sample_unit(&unit).is_none());
    assert!(few.errors.counts().is_empty(), "{:?}", few.errors.counts());
}

#[test]
fn a_file_removed_while_cached_is_missing_not_stale() {
    let tree = FakeCgroupTree::new();
    let unit = alice_with_procs(&tree);
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    assert!(s.sample_unit(&unit).expect("present").io_pressure.is_some());
    tree.remove_file("alice", "io.pressure");
    let sample = s.sample_unit(&unit).expect("present");
    assert!(sample.io_pressure.is_none());
    assert!(sample.memory_current.is_some());
    assert!(s.errors.counts().is_empty(), "{:?}", s.errors.counts());
}

#[test]
fn quick_pass_reads_what_detectors_need_and_skips_the_rest() {
    let tree = FakeCgroupTree::new();
    let unit = alice_with_procs(&tree);
    let mut s = Sampler::new(&tree.root(), &tree.proc_root());
    assert!(s.sample_unit(&unit).is_some());
    tree.set("alice", "memory.current", "400000000\n");
    tree.set(
        "alice",
        "memory.stat",
        "garbage that would be a parse error\n",
    );
    let quick = s.sample_unit_with(&unit, false).expect("present");
    // Read: pressure, memory.current, memory.events (and limits when due).
    assert_eq!(quick.memory_current, Some(400_000_000));
    assert!(quick.memory_pressure.is_some());
    assert!(quick.memory_events.is_some());
    // Skipped, for the model to carry over: not read at all (the broken
    // memory.stat is not even seen).
    assert!(quick.procs_skipped && quick.details_skipped);
    assert!(quick.procs.is_empty());
    assert_eq!(quick.memory_stat, None);
    assert_eq!(quick.cpu_stat, None);
    assert_eq!(quick.pids_current, None);
    assert!(s.errors.counts().is_empty(), "{:?}", s.errors.counts());
    // The full pass reads it and counts it.
    let full = s.sample_unit(&unit).expect("present");
    assert!(!full.details_skipped);
    assert_eq!(full.memory_stat, None);
    assert_eq!(s.errors.counts().get("memory.stat"), Some(&1));
}

/// A unit read through its cached directory is not listed while its link
/// count says it has no subdirectories; child cgroups made or removed later
/// change that count, on tmpfs (as kernfs) and on the temp dir's file system.
#[test]
fn child_cgroups_appearing_and_going_on_cached_passes() {
    let mut trees = vec![FakeCgroupTree::new()];
    if Path::new("/dev/shm").is_dir() {
        trees.push(FakeCgroupTree::new_in(Path::new("/dev/shm")));
    }
    for tree in &trees {
        let path = tree.unit("alice");
        tree.process(&path, 500, 1, "node", 50_000);
        let unit = unit_of(tree, &path);
        let mut s = Sampler::new(&tree.root(), &tree.proc_root());
        let pids = |s: &mut Sampler| {
            let mut v: Vec<(i32, String)> = s
                .sample_unit(&unit)
                .expect("present")
                .procs
                .iter()
                .map(|p| (p.pid, p.cgroup.to_string()))
                .collect();
            v.sort();
            v
        };
        for _ in 0..2 {
            assert_eq!(pids(&mut s).len(), 1);
        }
        let alone = s.fds_held();
        let a1 = tree.child_cgroup("alice", "agents/a1");
        tree.process(&a1, 501, 500, "claude", 70_000);
        let found = pids(&mut s);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[1].1.ends_with("t3-serve@alice.service/agents/a1"));
        let deep = tree.child_cgroup("alice", "agents/a1/tool");
        tree.process(&deep, 502, 501, "python3", 10_000);
        let found = pids(&mut s);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[2].1.ends_with("agents/a1/tool"));
        tree.remove_process(501).expect("rm proc");
        tree.remove_process(502).expect("rm proc");
        std::fs::remove_dir_all(path.join("agents")).expect("rm child");
        let left = pids(&mut s);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].0, 500);
        assert_eq!(s.fds_held(), alone, "the children's descriptors closed");
        assert!(s.errors.counts().is_empty(), "{:?}", s.errors.counts());
    }
}
