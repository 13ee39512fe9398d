//! Glue between the model and the detectors: the per-tick inputs the stall
//! detector and the runaway policy take, built from a unit's state, and what
//! the detectors add to the snapshot.

use std::collections::BTreeMap;

use crate::detectors::runaway::{HostInput, ProcInput, UnitInput};
use crate::detectors::stall::PsiShares;
use crate::detectors::Detectors;
use crate::model::event::{OomKill, RunawayAction};
use crate::model::rates::PressureShares;
use crate::model::state::{HostState, UnitState};
use crate::outputs::snapshot::Snapshot;

/// A flat view of the unit's shares; a resource without PSI counts as 0.
pub fn stall_shares(p: &PressureShares) -> Option<PsiShares> {
    (p.dt_s > 0.0).then(|| PsiShares {
        memory_some: p.memory.some.unwrap_or(0.0),
        memory_full: p.memory.full.unwrap_or(0.0),
        io_some: p.io.some.unwrap_or(0.0),
        io_full: p.io.full.unwrap_or(0.0),
        cpu_some: p.cpu.some.unwrap_or(0.0),
    })
}

/// The runaway policy's view of a unit; `None` before its first sample.
/// `last` is the view of the unit's previous pass: when the processes were
/// not read this pass (a quiet unit), its process list is the same and is
/// moved over instead of built again.
pub fn unit_input(u: &UnitState, now: f64, last: Option<UnitInput>) -> Option<UnitInput> {
    let s = u.latest.as_ref()?;
    let reuse = last.filter(|l| {
        s.procs_skipped
            && l.procs.len() == s.procs.len()
            && l.procs.iter().zip(&s.procs).all(|(a, b)| a.pid == b.pid)
    });
    let procs = match reuse {
        Some(l) => l.procs,
        None => s
            .procs
            .iter()
            .map(|p| ProcInput::from_sample(p, u.proc_anon_growth(p)))
            .collect(),
    };
    Some(UnitInput {
        user: u.unit.user.clone(),
        now,
        memory_current: s.memory_current.unwrap_or(0),
        memory_max: s.memory_max.and_then(|l| l.bytes()),
        memory_high: s.memory_high.and_then(|l| l.bytes()),
        memory_full_share: u.pressure.memory.full,
        growth_bytes_per_second: u.growth_bytes_per_second(),
        serve_pid: u.serve_pid,
        procs,
    })
}

pub fn host_input(h: &HostState) -> HostInput {
    HostInput {
        memory_full_avg10: h
            .latest
            .memory_pressure
            .and_then(|p| p.full.map(|f| f.avg10)),
        mem_total: h.latest.meminfo.map(|m| m.mem_total),
        mem_available: h.latest.meminfo.map(|m| m.mem_available),
    }
}

/// What the run loop remembers per user for the snapshot besides the
/// detectors' own state: the last action and OOM kill.
#[derive(Debug, Default)]
pub struct UserHistory {
    pub last_action: Option<(f64, RunawayAction)>,
    pub last_oom: Option<(f64, OomKill)>,
}

/// Fills the detector-owned parts of the snapshot: stall windows, the
/// runaway candidate (the policy's, protect list applied), last action and
/// OOM kill.
pub fn annotate(
    snap: &mut Snapshot,
    detectors: &mut Detectors,
    inputs: &BTreeMap<String, UnitInput>,
    history: &BTreeMap<String, UserHistory>,
) {
    let now = snap.generated_at;
    for u in &mut snap.units {
        u.stall = detectors.stall_info(&u.user, now);
        let Some(h) = history.get(&u.user) else {
            continue;
        };
        if let Some((at, a)) = &h.last_action {
            u.last_action = Some(a.clone());
            u.last_action_at = Some(*at);
        }
        if let Some((at, o)) = &h.last_oom {
            u.last_oom = Some(o.clone());
            u.last_oom_at = Some(*at);
        }
        let candidate = inputs
            .get(&u.user)
            .and_then(|i| detectors.policy().candidate(i))
            .map(|p| p.pid);
        for p in &mut u.processes {
            p.is_candidate = Some(p.pid) == candidate;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample::{ProcSample, Unit, UnitSample};
    use std::path::PathBuf;
    use std::time::{Duration, Instant, SystemTime};

    fn state_with(procs_skipped: bool, last_procs: Vec<ProcSample>) -> UnitState {
        let t0 = Instant::now();
        let unit = Unit {
            name: "t3-serve@a.service".into(),
            user: "a".into(),
            path: PathBuf::from("/cg/t3-serve@a.service"),
            cgroup_id: 7,
            level: 1,
        };
        let mut u = UnitState::new(unit, Duration::from_secs(1), t0);
        let mut s = UnitSample::empty(t0, SystemTime::now());
        s.procs = last_procs;
        u.update(s, None);
        let mut s = UnitSample::empty(t0 + Duration::from_secs(1), SystemTime::now());
        s.procs_skipped = procs_skipped;
        if !procs_skipped {
            s.procs = u
                .latest
                .as_ref()
                .map(|l| l.procs.clone())
                .unwrap_or_default();
        }
        u.update(s, None);
        u
    }

    fn procs() -> Vec<ProcSample> {
        [10, 11]
            .map(|pid| ProcSample {
                pid,
                ppid: 1,
                uid: 1000,
                comm: "claude".into(),
                argv0: "claude".into(),
                rss_anon: 5,
                rss_file: 0,
                rss_shmem: 0,
                state: 'S',
                start_time: 3,
                cgroup: "/u".into(),
            })
            .to_vec()
    }

    #[test]
    fn a_quiet_pass_moves_the_last_process_list_over() {
        let first = unit_input(&state_with(true, procs()), 1.0, None).expect("input");
        assert_eq!(first.procs.len(), 2);
        let mut marked = first.clone();
        marked.procs[0].rss_anon = 12345;
        // Processes carried over: the last list is reused as it is.
        let again = unit_input(&state_with(true, procs()), 2.0, Some(marked.clone()));
        assert_eq!(again.expect("input").procs[0].rss_anon, 12345);
        // Processes read this pass: built from the sample.
        let fresh = unit_input(&state_with(false, procs()), 2.0, Some(marked.clone()));
        assert_ne!(fresh.expect("input").procs[0].rss_anon, 12345);
        // A different list (should not happen when carried): built afresh.
        let other = state_with(true, procs()[..1].to_vec());
        let rebuilt = unit_input(&other, 2.0, Some(marked)).expect("input");
        assert_eq!(rebuilt.procs.len(), 1);
        assert_ne!(rebuilt.procs[0].rss_anon, 12345);
    }
}
