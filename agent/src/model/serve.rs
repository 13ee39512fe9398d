//! Which process of a unit is the serve: the one whose event loop the
//! clients' watchdog measures, and the one the runaway catcher never kills.
//! A fact of the model (recomputed with every sample), used by the stall
//! detector (whose thread to watch) and the runaway policy (never kill it).

use globset::{Glob, GlobMatcher};

use crate::model::sample::ProcSample;

/// Optional override (`serve_match` in the config): a glob matched against
/// comm, argv[0] and argv[0]'s file name.
#[derive(Debug, Clone)]
pub struct ServeMatcher {
    glob: GlobMatcher,
}

impl ServeMatcher {
    /// `None` for an invalid glob (the config validation rejects those).
    pub fn new(pattern: &str) -> Option<Self> {
        Glob::new(pattern).ok().map(|g| ServeMatcher {
            glob: g.compile_matcher(),
        })
    }

    pub fn matches(&self, comm: &str, argv0: &str) -> bool {
        let base = argv0.rsplit('/').next().unwrap_or(argv0);
        self.glob.is_match(comm) || self.glob.is_match(argv0) || self.glob.is_match(base)
    }
}

/// The unit's main process: the process whose parent is outside the unit
/// (systemd started it; its children are the agents). With several such
/// processes (an `ExecStartPre` leftover, a `systemd-run --scope` inside),
/// the one in the unit's own cgroup (shortest path), then the oldest, wins.
///
/// With a matcher, the matching processes are preferred in the same order;
/// when none matches the default rule applies, because a wrongly protected
/// process is only spared, never wrongly killed.
pub fn find_serve(procs: &[ProcSample], matcher: Option<&ServeMatcher>) -> Option<i32> {
    let rank = |p: &ProcSample| {
        let parent_outside = !procs.iter().any(|q| q.pid == p.ppid);
        (!parent_outside, p.cgroup.len(), p.start_time, p.pid)
    };
    if let Some(m) = matcher {
        let best = procs
            .iter()
            .filter(|p| m.matches(&p.comm, &p.argv0))
            .min_by_key(|p| rank(p));
        if let Some(p) = best {
            return Some(p.pid);
        }
    }
    procs
        .iter()
        .filter(|p| !procs.iter().any(|q| q.pid == p.ppid))
        .min_by_key(|p| rank(p))
        .map(|p| p.pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn proc(pid: i32, ppid: i32, comm: &str, start_time: u64) -> ProcSample {
        ProcSample {
            pid,
            ppid,
            uid: 1000,
            comm: comm.into(),
            argv0: format!("/usr/bin/{comm}").into(),
            rss_anon: 0,
            rss_file: 0,
            rss_shmem: 0,
            state: 'S',
            start_time,
            cgroup: "/system.slice/t3-serve@alice.service".into(),
        }
    }

    #[test]
    fn parent_outside_the_unit_is_the_serve() {
        let procs = vec![
            proc(200, 100, "claude", 20),
            proc(100, 1, "node", 10),
            proc(300, 200, "bash", 30),
        ];
        assert_eq!(find_serve(&procs, None), Some(100));
    }

    #[test]
    fn oldest_and_shallowest_wins_among_several_roots() {
        let mut scoped = proc(50, 1, "helper", 5);
        scoped.cgroup = format!("{}/scope", scoped.cgroup).into();
        let procs = vec![scoped, proc(120, 1, "node", 12), proc(110, 1, "node", 11)];
        assert_eq!(find_serve(&procs, None), Some(110));
    }

    #[test]
    fn matcher_overrides_and_falls_back() {
        let procs = vec![proc(100, 1, "sh", 10), proc(101, 100, "node", 11)];
        let m = ServeMatcher::new("node").expect("glob");
        assert_eq!(find_serve(&procs, Some(&m)), Some(101));
        let m = ServeMatcher::new("t3*").expect("glob");
        assert_eq!(find_serve(&procs, Some(&m)), Some(100), "fallback");
        let mut p = proc(102, 100, "MainThread", 12);
        p.argv0 = "/opt/t3/bin/t3".into();
        let procs = vec![procs[0].clone(), p];
        assert_eq!(find_serve(&procs, Some(&m)), Some(102), "argv0 base name");
    }

    #[test]
    fn empty_unit_has_no_serve() {
        assert_eq!(find_serve(&[], None), None);
        assert!(ServeMatcher::new("[").is_none());
    }
}
