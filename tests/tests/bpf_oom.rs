//! Root + BPF on this hybrid host: a real memcg OOM kill in a v1 memory
//! cgroup of the test's own, with the victim in a unit-shaped cgroup2
//! directory, arrives as one `oom:mark_victim` event for the right pid and
//! unit: through the classic tracepoint (the record's fields) and through
//! the raw tracepoint the hardened unit falls back to (the `TP_PROTO`
//! arguments: pid, comm and uid from the task, no rss).

use std::process::{Command, Stdio};
use std::time::Duration;

use t3pressure::sources::bpf::btf::RawMarkVictim;
use t3pressure::sources::bpf::{Bpf, BpfConfig, BpfEvent, OomAttach, OomVictim};
use t3pressure_tests::cgroup::{cgroup2_root, own_memory_v1_cgroup, unit_at, TestCgroups};
use t3pressure_tests::env::{collect_events, require_root_bpf, runtime, serial};

const HELPER: &str = env!("CARGO_BIN_EXE_t3ptest-helper");
const LIMIT: u64 = 64 << 20;

fn oom_kills(memcg: &std::path::Path) -> u64 {
    std::fs::read_to_string(memcg.join("memory.oom_control"))
        .expect("read memory.oom_control")
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .expect("oom_kill line in memory.oom_control")
}

#[test]
fn memcg_oom_kill_is_one_event_for_the_unit() {
    let (o, attach) = memcg_oom_kill(false);
    assert_eq!(attach, OomAttach::Tracepoint);
    assert_eq!(o.uid, 0);
    assert!(
        o.anon_rss >= LIMIT / 2 && o.anon_rss <= LIMIT + (8 << 20),
        "anon rss {} for a {} limit",
        o.anon_rss,
        LIMIT
    );
}

/// The raw tracepoint fallback: this host's kernel (6.8+) passes
/// `(struct task_struct *, uid_t)`, so pid and comm come from the task at
/// the BTF offsets; the kernel gives no rss (the run loop takes it from its
/// last sample, checked in the VM's runaway_observe).
#[test]
fn memcg_oom_kill_through_the_raw_tracepoint() {
    let (o, attach) = memcg_oom_kill(true);
    assert!(
        matches!(
            attach,
            OomAttach::Raw(RawMarkVictim::Task { .. } | RawMarkVictim::Pid)
        ),
        "{attach:?}"
    );
    if matches!(attach, OomAttach::Raw(RawMarkVictim::Task { .. })) {
        assert_eq!(o.uid, 0);
    }
    assert_eq!((o.anon_rss, o.file_rss, o.shmem_rss), (0, 0, 0));
}

/// One memcg OOM kill of the helper in a unit-shaped cgroup; returns the
/// event (pid, comm and unit checked) and how the program attached.
fn memcg_oom_kill(oom_raw_only: bool) -> (OomVictim, OomAttach) {
    require_root_bpf();
    let _serial = serial();
    let v1 = own_memory_v1_cgroup().expect(
        "this test needs a v1 memory controller (hybrid host); on a unified host use the VM suite",
    );
    let name = format!("t3ptest-{}", std::process::id());
    let memcg = TestCgroups::new(&v1, &format!("{name}-oom"));
    for file in ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"] {
        let path = memcg.top.join(file);
        if path.exists() || file == "memory.limit_in_bytes" {
            std::fs::write(&path, LIMIT.to_string())
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
    }
    let mut cgs = TestCgroups::new(&cgroup2_root(), &format!("{name}-oom"));
    let unit_dir = cgs.child("t3-serve@oomtest.service");
    let unit = unit_at(&unit_dir);

    let mut bpf = Bpf::load(&BpfConfig {
        oom_raw_only,
        ..BpfConfig::default()
    })
    .expect("load BPF");
    let attach = bpf.oom().expect("OOM program attached");
    bpf.watch_unit(&unit).expect("watch unit");
    let rt = runtime();
    let mut rx = {
        let _g = rt.enter();
        bpf.events().expect("events")
    };
    let before = oom_kills(&memcg.top);

    // Capped at 4x the limit so that a failed join cannot hurt the host.
    let mut child = Command::new(HELPER)
        .arg("--join")
        .arg(memcg.top.join("cgroup.procs"))
        .arg("--join")
        .arg(unit_dir.join("cgroup.procs"))
        .args(["alloc", "256"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn allocating helper");
    let pid = child.id();
    let status = child.wait().expect("wait for helper");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "helper was not OOM-killed: {status}"
    );

    let events = collect_events(&rt, &mut rx, Duration::from_millis(500));
    let ooms: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            BpfEvent::Oom(o) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(ooms.len(), 1, "expected one OOM event: {events:?}");
    let o = ooms[0];
    eprintln!("{o:?}");
    assert_eq!(o.pid, pid);
    if attach != OomAttach::Raw(RawMarkVictim::Pid) {
        assert_eq!(o.comm, "t3ptest-helper");
    }
    assert_eq!(
        o.unit_cgroup_id,
        Some(unit.cgroup_id),
        "OOM not attributed to the unit"
    );
    assert_eq!(
        oom_kills(&memcg.top),
        before + 1,
        "memory.oom_control oom_kill did not move by 1"
    );
    (o.clone(), attach)
}
