//! Discovery on fake cgroup trees: units appearing and disappearing live,
//! escaped names, nested child cgroups, slices created later.

use std::time::Duration;

use t3pressure::model::sample::Unit;
use t3pressure::sources::discovery::{self, Change};
use t3pressure::testing::FakeCgroupTree;
use tokio::sync::mpsc::UnboundedReceiver;

const GLOB: &str = "t3-serve@*.service";

async fn next(rx: &mut UnboundedReceiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("a change within 1 s")
        .expect("discovery alive")
}

fn drain(rx: &mut UnboundedReceiver<Change>) -> Vec<Change> {
    let mut v = Vec::new();
    while let Ok(c) = rx.try_recv() {
        v.push(c);
    }
    v
}

fn added(c: Change) -> Unit {
    match c {
        Change::Added(u) => u,
        other => panic!("expected Added, got {other:?}"),
    }
}

#[tokio::test]
async fn initial_units_then_live_add_and_remove() {
    let tree = FakeCgroupTree::new();
    tree.unit("alice");
    let mut rx = discovery::spawn(&tree.root(), GLOB, Duration::from_secs(3600)).expect("spawn");
    let initial = drain(&mut rx);
    assert_eq!(initial.len(), 1, "{initial:?}");
    let alice = added(initial[0].clone());
    assert_eq!(alice.user, "alice");
    assert_eq!(alice.level, 3, "system.slice/slice/unit");
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(tree.unit_path("alice"))
        .expect("stat")
        .ino();
    assert_eq!(alice.cgroup_id, ino, "cgroup id is the dir inode");

    tree.unit("bob");
    let bob = added(next(&mut rx).await);
    assert_eq!(bob.user, "bob");

    tree.remove_unit("alice");
    match next(&mut rx).await {
        Change::Removed(u) => assert_eq!(u.user, "alice"),
        other => panic!("expected Removed, got {other:?}"),
    }
}

#[tokio::test]
async fn escaped_names_are_unescaped() {
    let tree = FakeCgroupTree::new();
    let mut rx = discovery::spawn(&tree.root(), GLOB, Duration::from_secs(3600)).expect("spawn");
    assert!(drain(&mut rx).is_empty(), "no unit yet");
    tree.unit_named(r"t3-serve@j\x2ddoe.service");
    let u = added(next(&mut rx).await);
    assert_eq!(u.user, "j-doe");
    assert_eq!(u.name, r"t3-serve@j\x2ddoe.service");
}

#[tokio::test]
async fn nested_child_cgroups_belong_to_their_unit() {
    let tree = FakeCgroupTree::new();
    tree.unit("alice");
    // Even a child whose name matches the glob is part of alice's unit.
    tree.child_cgroup("alice", "t3-serve@inner.service");
    let mut rx = discovery::spawn(&tree.root(), GLOB, Duration::from_secs(3600)).expect("spawn");
    let initial = drain(&mut rx);
    assert_eq!(initial.len(), 1, "{initial:?}");
    tree.child_cgroup("alice", "agents");
    tree.child_cgroup("alice", "agents/t3-serve@deeper.service");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        drain(&mut rx).is_empty(),
        "children created later are not units either"
    );
}

#[tokio::test]
async fn units_in_a_slice_created_later() {
    let tree = FakeCgroupTree::new();
    let mut rx = discovery::spawn(&tree.root(), GLOB, Duration::from_secs(3600)).expect("spawn");
    drain(&mut rx);
    let slice = tree.root().join("user.slice/user-1000.slice");
    std::fs::create_dir_all(&slice).expect("mkdir slice");
    // Give discovery a moment to watch the new slice, then start a unit in it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tree.cgroup_at(&slice.join("t3-serve@carol.service"));
    let u = added(next(&mut rx).await);
    assert_eq!(u.user, "carol");
    assert_eq!(u.level, 3);
    // Removing the whole slice removes its units.
    std::fs::remove_dir_all(tree.root().join("user.slice")).expect("rm slice");
    match next(&mut rx).await {
        Change::Removed(u) => assert_eq!(u.user, "carol"),
        other => panic!("expected Removed, got {other:?}"),
    }
}

#[tokio::test]
async fn slice_and_unit_created_at_once_are_not_missed() {
    let tree = FakeCgroupTree::new();
    let mut rx = discovery::spawn(&tree.root(), GLOB, Duration::from_secs(3600)).expect("spawn");
    drain(&mut rx);
    // The unit exists before discovery could watch the new slice: the scan
    // of the new directory finds it.
    let tmp = tree.root().join("..").join("staging");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let slice_src = tmp.join("other.slice");
    std::fs::create_dir_all(&slice_src).expect("mkdir");
    tree.cgroup_at(&slice_src.join("t3-serve@dave.service"));
    std::fs::rename(&slice_src, tree.root().join("other.slice")).expect("move slice in");
    let u = added(next(&mut rx).await);
    assert_eq!(u.user, "dave");
}

#[test]
fn bad_glob_is_an_error() {
    let tree = FakeCgroupTree::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _g = rt.enter();
    assert!(discovery::spawn(&tree.root(), "[", Duration::from_secs(1)).is_err());
    assert!(discovery::spawn(&tree.root().join("nope"), GLOB, Duration::from_secs(1)).is_err());
}
