//! End to end: the real `t3pressure run --no-bpf` binary pointed at a fake
//! cgroup tree and a fake proc root, asserted through /metrics, /healthz and
//! /api/v1/snapshot, with units added and removed while it runs; a real
//! scrape checked by `promtool check metrics`.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use t3pressure::testing::FakeCgroupTree;

/// The running agent; killed on drop so a failed test leaves nothing behind.
struct Agent {
    child: Child,
    base: String,
    _state: tempfile::TempDir,
}

impl Agent {
    fn start(tree: &FakeCgroupTree) -> Agent {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let state = tempfile::tempdir().expect("state dir");
        let child = Command::new(env!("CARGO_BIN_EXE_t3pressure"))
            .arg("run")
            .arg("--no-bpf")
            .arg("--cgroup-root")
            .arg(tree.root())
            .arg("--proc-root")
            .arg(tree.proc_root())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the agent binary");
        let agent = Agent {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _state: state,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = ureq::get(&format!("{}/healthz", agent.base)).call() {
                if r.status() == 200 {
                    return agent;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent did not become healthy within 10 s");
    }

    fn get(&self, path: &str) -> String {
        ureq::get(&format!("{}{path}", self.base))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .into_string()
            .expect("body")
    }

    /// Polls /metrics until `pred` holds; returns how long it took.
    fn wait_metrics(&self, what: &str, pred: impl Fn(&str) -> bool) -> Duration {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if pred(&self.get("/metrics")) {
                return t0.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{what}: not seen in /metrics within 5 s");
    }

    fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: plain kill(2) on our own child.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill SIGTERM");
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "agent exit status after SIGTERM: {status}"
                );
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no exit within 5 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn populated_tree() -> FakeCgroupTree {
    let tree = FakeCgroupTree::new();
    let alice = tree.unit("alice");
    tree.process(&alice, 100, 1, "node", 80_000);
    let agents = tree.child_cgroup("alice", "agents");
    tree.process(&agents, 101, 100, "claude", 2_000_000);
    let bob = tree.unit("bob");
    tree.process(&bob, 200, 1, "node", 70_000);
    tree
}

fn has_user(metrics: &str, user: &str) -> bool {
    metrics.contains(&format!("user=\"{user}\""))
}

#[test]
fn metrics_snapshot_and_live_units() {
    let tree = populated_tree();
    let agent = Agent::start(&tree);

    assert_eq!(agent.get("/healthz").trim(), "ok");
    let m = agent.get("/metrics");
    for line in [
        "t3pressure_unit_info{unit=\"t3-serve@alice.service\",user=\"alice\"} 1",
        "t3pressure_memory_max_bytes{user=\"alice\"} 536870912",
        "t3pressure_memory_current_bytes{user=\"bob\"} 334315520",
        "t3pressure_memory_anon_bytes{user=\"alice\"} 328384512",
        "t3pressure_memory_events_total{event=\"oom_kill\",user=\"alice\"} 0",
        "t3pressure_pressure_memory_waiting_seconds_total{user=\"alice\"} 0.054685",
        "t3pressure_stall_windows_total{cause=\"memory\",class=\"disconnect\",user=\"alice\"} 0",
        "t3pressure_oom_kills_total{scope=\"memcg\",user=\"bob\"} 0",
        "t3pressure_runaway_actions_total{action=\"killed\",user=\"bob\"} 0",
        "t3pressure_serve_stall_seconds{user=\"alice\"} 0",
        "t3pressure_bpf_loaded 0",
        "t3pressure_units_watched 2",
        "t3pressure_build_info{version=\"0.1.0\"} 1",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    assert!(
        !m.contains("t3pressure_memory_high_bytes{"),
        "memory.high is max: absent"
    );
    assert!(m.contains("t3pressure_sample_duration_seconds_count"));

    let body = agent.get("/api/v1/snapshot");
    assert!(
        !body.contains("hunter2"),
        "full argv must never be exported"
    );
    let snap: serde_json::Value = serde_json::from_str(&body).expect("snapshot JSON");
    assert_eq!(snap["version"], 1);
    assert_eq!(snap["agent"]["bpf_loaded"], false);
    let units = snap["units"].as_array().expect("units");
    assert_eq!(units.len(), 2);
    let alice = &units[0];
    assert_eq!(alice["user"], "alice");
    assert_eq!(alice["memory"]["max_bytes"], 536870912u64);
    assert_eq!(alice["serve_pid"], 100);
    let procs = alice["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 2, "processes of child cgroups included");
    assert_eq!(procs[0]["comm"], "claude", "largest anon first");
    assert_eq!(procs[0]["argv0"], "claude");
    assert_eq!(procs[0]["rss_anon_bytes"], 2_000_000u64 * 1024);
    assert_eq!(procs[0]["is_candidate"], true);
    assert_eq!(procs[1]["is_serve"], true);

    // A unit started while the agent runs is exported within ~1 s.
    let carol = tree.unit("carol");
    tree.process(&carol, 300, 1, "node", 10_000);
    let took = agent.wait_metrics("carol added", |m| has_user(m, "carol"));
    assert!(
        took <= Duration::from_millis(1500),
        "carol seen after {took:?}"
    );

    // A stopped unit's series disappear within ~1 s.
    tree.remove_unit("bob");
    let took = agent.wait_metrics("bob removed", |m| !has_user(m, "bob"));
    assert!(
        took <= Duration::from_millis(1500),
        "bob gone after {took:?}"
    );
    assert!(agent.get("/metrics").contains("t3pressure_units_watched 2"));

    // Growth is derived from successive samples.
    tree.set("alice", "memory.current", "400000000\n");
    agent.wait_metrics("alice growing", |m| {
        m.lines().any(|l| {
            l.starts_with("t3pressure_memory_growth_bytes_per_second{user=\"alice\"}")
                && !l.ends_with(" 0")
        })
    });
    agent.stop();
}

#[test]
fn zero_units_is_fine() {
    let tree = FakeCgroupTree::new();
    let agent = Agent::start(&tree);
    let m = agent.get("/metrics");
    assert!(m.contains("t3pressure_units_watched 0"), "{m}");
    let snap: serde_json::Value =
        serde_json::from_str(&agent.get("/api/v1/snapshot")).expect("json");
    assert_eq!(snap["units"].as_array().map(Vec::len), Some(0));
    agent.stop();
}

fn promtool() -> &'static Path {
    let p = Path::new("/usr/bin/promtool");
    assert!(
        p.exists(),
        "promtool missing: install Debian's `prometheus` package (apt-get install -y prometheus)"
    );
    p
}

#[test]
fn promtool_accepts_a_real_scrape() {
    let promtool = promtool();
    let tree = populated_tree();
    let agent = Agent::start(&tree);
    // Two passes so rates and growth exist.
    std::thread::sleep(Duration::from_millis(1200));
    let scrape = agent.get("/metrics");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed: {text}");
    assert_eq!(text.trim(), "", "promtool complaints:\n{text}");
    agent.stop();
}
