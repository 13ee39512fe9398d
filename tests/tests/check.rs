//! `t3pressure check` on this build host, as root: it must say plainly that
//! the memory controller is on cgroup v1 (hybrid hierarchy), not crash, and
//! exit non-zero because the agent cannot do its main job here.

use std::process::Command;

use t3pressure_tests::procs::{agent_bin, require_root};

#[test]
fn check_reports_this_hybrid_host() {
    require_root("t3pressure check (capabilities are reported as root has them)");
    let out = Command::new(agent_bin())
        .args(["check", "--json"])
        .output()
        .expect("run t3pressure check");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("check --json prints JSON");
    let item = |name: &str| {
        report["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no item {name} in {report}"))
            .clone()
    };
    assert_eq!(
        item("permissions")["status"],
        "ok",
        "root has every capability"
    );
    assert_eq!(item("psi")["status"], "ok");
    assert_eq!(item("btf")["status"], "ok");
    let bpf = item("bpf");
    assert_eq!(
        bpf["status"], "ok",
        "the embedded object loads and attaches here: {bpf}"
    );
    assert_eq!(item("cgroup v2")["status"], "missing");
    let controllers = item("controllers");
    assert_eq!(controllers["status"], "missing");
    assert!(
        controllers["detail"]
            .as_str()
            .expect("detail")
            .contains("memory controller is on cgroup v1"),
        "{controllers}"
    );
    assert_eq!(report["usable"], false);
    assert_eq!(
        out.status.code(),
        Some(1),
        "non-zero: no main job possible here"
    );

    // The human form says the same in one line per item, with fixes.
    let text = Command::new(agent_bin())
        .arg("check")
        .output()
        .expect("run t3pressure check");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("hybrid hierarchy"), "{text}");
    assert!(text.contains("fix: boot"), "{text}");
}
