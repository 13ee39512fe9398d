//! Fixed snapshots for the rendering and key tests: several users, one
//! stalled past 20 s, one near its limit, one without MemoryMax, an empty host.

use crate::model::event::{
    ActionKind, Cause, Class, Culprit, OomKill, OomScope, RunawayAction, RunawayReason,
    StallWindow, WindowSource,
};
use crate::outputs::snapshot::{
    AgentInfo, HostInfo, MemoryInfo, PressureInfo, PressureSet, ProcessInfo, Snapshot, StallInfo,
    UnitInfo, SNAPSHOT_VERSION,
};

pub const NOW: f64 = 1_790_000_000.0;
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn pressure(mem_full: f64, io_full: f64, cpu_some: f64) -> PressureSet {
    PressureSet {
        memory: PressureInfo {
            some_share: Some(mem_full),
            full_share: Some(mem_full),
            some_avg10: Some(mem_full * 80.0),
            full_avg10: Some(mem_full * 70.0),
        },
        io: PressureInfo {
            some_share: Some(io_full),
            full_share: Some(io_full),
            some_avg10: Some(io_full * 90.0),
            full_avg10: Some(io_full * 60.0),
        },
        cpu: PressureInfo {
            some_share: Some(cpu_some),
            full_share: None,
            some_avg10: Some(cpu_some * 100.0),
            full_avg10: None,
        },
    }
}

fn process(pid: i32, comm: &str, anon: u64, growth: Option<f64>) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: 1,
        uid: 1000,
        comm: comm.into(),
        argv0: comm.into(),
        state: "S".into(),
        rss_anon_bytes: anon,
        rss_file_bytes: 40 * MIB,
        rss_shmem_bytes: 0,
        anon_growth_bytes_per_second: growth,
        is_serve: false,
        is_candidate: false,
    }
}

fn unit(user: &str, current: u64, max: Option<u64>) -> UnitInfo {
    UnitInfo {
        user: user.into(),
        unit: format!("t3-serve@{user}.service"),
        cgroup: format!("/system.slice/system-t3\\x2dserve.slice/t3-serve@{user}.service"),
        memory: MemoryInfo {
            current_bytes: Some(current),
            max_bytes: max,
            high_bytes: None,
            peak_bytes: Some(current + 100 * MIB),
            anon_bytes: Some(current * 9 / 10),
            file_bytes: Some(current / 10),
            swap_current_bytes: Some(0),
            oom_kill_count: Some(0),
        },
        pressure: pressure(0.0, 0.0, 0.01),
        pids_current: Some(12),
        ..UnitInfo::default()
    }
}

fn window(user: &str, start_ago: f64, duration: f64, ongoing: bool) -> StallWindow {
    StallWindow {
        user: user.into(),
        start: NOW - start_ago,
        end: (!ongoing).then_some(NOW - start_ago + duration),
        duration_s: duration,
        class: Class::of(duration, 10.0, 20.0),
        cause: Cause::Memory,
        source: WindowSource::Psi,
        culprit: Some(Culprit {
            pid: 4242,
            comm: "claude".into(),
            rss_anon: 9 * GIB,
        }),
        runqueue_s: None,
        blocked_s: None,
    }
}

/// alice: quiet. bob: stalled 23 s right now. carol: 94 % of MemoryMax and
/// growing, a "would kill" 40 s ago. dave: no MemoryMax.
pub fn several_users() -> Snapshot {
    let alice = {
        let mut u = unit("alice", 2 * GIB + 300 * MIB, Some(16 * GIB));
        u.growth_bytes_per_second = Some(0.0);
        let mut serve = process(1001, "node", 1500 * MIB, Some(0.0));
        serve.is_serve = true;
        u.serve_pid = Some(1001);
        u.processes = vec![serve, process(1010, "bash", 4 * MIB, None)];
        u
    };
    let bob = {
        let mut u = unit("bob", 11 * GIB, Some(16 * GIB));
        u.growth_bytes_per_second = Some(35.0 * MIB as f64);
        u.time_to_max_seconds = Some(146.0);
        u.pressure = pressure(0.82, 0.12, 0.05);
        u.stall = StallInfo {
            ongoing: Some(window("bob", 23.4, 23.4, true)),
            recent: vec![window("bob", 1800.0, 14.0, false)],
            last_hour_warning: 1,
            last_hour_disconnect: 0,
        };
        let mut serve = process(2001, "node", 2 * GIB, Some(0.0));
        serve.is_serve = true;
        serve.state = "D".into();
        let mut claude = process(4242, "claude", 9 * GIB, Some(35.0 * MIB as f64));
        claude.is_candidate = true;
        u.serve_pid = Some(2001);
        u.processes = vec![serve, claude];
        u
    };
    let carol = {
        let mut u = unit("carol", 15 * GIB + 40 * MIB, Some(16 * GIB));
        u.growth_bytes_per_second = Some(120.0 * MIB as f64);
        u.time_to_max_seconds = Some(8.2);
        u.pressure = pressure(0.31, 0.02, 0.0);
        u.stall.last_hour_warning = 2;
        u.stall.last_hour_disconnect = 1;
        u.last_action = Some(RunawayAction {
            user: "carol".into(),
            action: ActionKind::Observed,
            reason: RunawayReason::KillThreshold,
            pid: 3333,
            comm: "codex".into(),
            argv0: "codex".into(),
            start_time: 123,
            rss_anon: 13 * GIB,
            anon_growth_bytes_per_second: 120.0 * MIB as f64,
            memory_current: 15 * GIB,
            memory_max: Some(16 * GIB),
            memory_high: None,
            time_to_max_seconds: Some(8.0),
            error: None,
        });
        u.last_action_at = Some(NOW - 40.0);
        u.last_oom = Some(OomKill {
            user: Some("carol".into()),
            pid: 3100,
            comm: "codex".into(),
            uid: 1003,
            anon_rss: 15 * GIB,
            file_rss: 0,
            shmem_rss: 0,
            scope: OomScope::Memcg,
        });
        u.last_oom_at = Some(NOW - 3.0 * 3600.0);
        let mut serve = process(3001, "node", GIB, Some(0.0));
        serve.is_serve = true;
        let mut codex = process(3333, "codex", 13 * GIB, Some(120.0 * MIB as f64));
        codex.is_candidate = true;
        u.serve_pid = Some(3001);
        u.processes = vec![serve, codex];
        u
    };
    let dave = {
        let mut u = unit("dave", 700 * MIB, None);
        u.growth_bytes_per_second = Some(-2.0 * MIB as f64);
        u
    };
    Snapshot {
        version: SNAPSHOT_VERSION,
        generated_at: NOW,
        agent: AgentInfo {
            version: "0.1.0".into(),
            mode: "observe".into(),
            bpf_loaded: false,
            bpf_error: Some("--no-bpf".into()),
            units_watched: 4,
            sample_interval_ms: 1000,
            started_at: NOW - 7200.0,
            from_agent: true,
        },
        host: HostInfo {
            mem_total_bytes: Some(64 * GIB),
            mem_available_bytes: Some(33 * GIB),
            pressure: pressure(0.05, 0.01, 0.2),
        },
        units: vec![alice, bob, carol, dave],
    }
}

pub fn empty_host() -> Snapshot {
    let mut s = several_users();
    s.units.clear();
    s.agent.units_watched = 0;
    s.agent.bpf_loaded = true;
    s.agent.bpf_error = None;
    s.agent.mode = "enforce".into();
    s
}
