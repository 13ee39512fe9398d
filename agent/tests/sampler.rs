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
    assert_eq!(agent.comm, "claude");
    assert_eq!(agent.argv0, "claude", "argv0 only");
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
