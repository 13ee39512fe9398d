//! Where `top` gets its snapshots: the agent's `/api/v1/snapshot` over HTTP,
//! or (`--standalone`) cgroupfs and procfs read directly with the agent's readers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::model::state::Model;
use crate::outputs::snapshot::{build, AgentInfo, Snapshot};
use crate::sources::discovery::UnitMatcher;
use crate::sources::sampler::Sampler;

/// Why a fetch failed. Every variant is a normal, retryable condition for the
/// live view: it shows a banner and tries again on the next tick.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach the agent at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("agent at {addr} answered HTTP {status}")]
    Status { addr: String, status: u16 },
    #[error("agent at {addr} sent a snapshot that does not parse: {reason}")]
    Decode { addr: String, reason: String },
}

/// Anything that can produce the current snapshot. Blocking: the live view
/// calls it from its own fetch thread.
pub trait SnapshotSource: Send {
    fn fetch(&mut self) -> Result<Snapshot, SourceError>;
    /// Shown in the header and in the lost-connection banner.
    fn describe(&self) -> String;
}

/// A client of a running agent's `/api/v1/snapshot`.
pub struct HttpSource {
    addr: String,
    url: String,
    agent: ureq::Agent,
}

impl HttpSource {
    /// `addr` is `host:port` (as `--connect` takes it). The timeouts are
    /// short so a wedged agent shows up as "lost" within one refresh rather
    /// than freezing the view.
    pub fn new(addr: &str, timeout: Duration) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout(timeout)
            .build();
        HttpSource {
            addr: addr.to_string(),
            url: format!("http://{addr}/api/v1/snapshot"),
            agent,
        }
    }
}

impl SnapshotSource for HttpSource {
    fn fetch(&mut self) -> Result<Snapshot, SourceError> {
        let resp = self.agent.get(&self.url).call().map_err(|e| match e {
            ureq::Error::Status(status, _) => SourceError::Status {
                addr: self.addr.clone(),
                status,
            },
            ureq::Error::Transport(t) => SourceError::Unreachable {
                addr: self.addr.clone(),
                reason: transport_reason(&t),
            },
        })?;
        resp.into_json::<Snapshot>()
            .map_err(|e| SourceError::Decode {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })
    }

    fn describe(&self) -> String {
        self.addr.clone()
    }
}

/// ureq's transport errors repeat the URL; keep the part an operator acts on.
fn transport_reason(t: &ureq::Transport) -> String {
    match std::error::Error::source(t) {
        Some(src) => src.to_string(),
        None => t.kind().to_string(),
    }
}

/// `--standalone`: reads cgroupfs itself. Not wired to the collector yet; the
/// lead replaces the body of `fetch` with a call into `sources`.
pub struct Standalone {
    matcher: UnitMatcher,
    sampler: Sampler,
    model: Model,
    started_at: f64,
}

impl Standalone {
    /// Reads cgroupfs and procfs itself, with the agent's own readers; no
    /// BPF figures and no detectors (it says so in the header).
    pub fn new(cgroup_root: &Path, proc_root: &Path, unit_glob: &str) -> anyhow::Result<Self> {
        Ok(Standalone {
            matcher: UnitMatcher::new(cgroup_root, unit_glob)?,
            sampler: Sampler::new(cgroup_root, proc_root),
            model: Model::default(),
            started_at: build::unix(SystemTime::now()),
        })
    }
}

impl SnapshotSource for Standalone {
    fn fetch(&mut self) -> Result<Snapshot, SourceError> {
        let now = Instant::now();
        let (units, _) = self.matcher.scan(self.matcher.root());
        let present: BTreeSet<PathBuf> = units.iter().map(|u| u.path.clone()).collect();
        self.model.units.retain(|path, _| present.contains(path));
        self.sampler.retain_units(|path| present.contains(path));
        for u in units {
            // The interval only schedules the agent's loop; here every
            // fetch samples every unit.
            self.model.add_unit(u.clone(), Duration::from_secs(1), now);
            match self.sampler.sample_unit(&u) {
                Some(sample) => {
                    self.model.update_unit(&u.path, sample, now);
                }
                None => {
                    self.model.remove_unit(&u.path);
                }
            }
        }
        let host = self.sampler.sample_host();
        self.model.update_host(host);
        self.sampler.end_pass();
        let agent = AgentInfo {
            version: crate::VERSION.to_string(),
            mode: "standalone".into(),
            bpf_loaded: false,
            bpf_error: Some("standalone: reads cgroupfs directly, no BPF".into()),
            units_watched: self.model.units.len(),
            sample_interval_ms: 0,
            started_at: self.started_at,
            from_agent: false,
        };
        Ok(build::snapshot(&self.model, agent))
    }

    fn describe(&self) -> String {
        format!("standalone {}", self.matcher.root().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_agent_is_an_error_not_a_panic() {
        // Port 1 on loopback: nothing listens there, connect is refused.
        let mut s = HttpSource::new("127.0.0.1:1", Duration::from_millis(300));
        let err = s.fetch().expect_err("nothing listens on port 1");
        assert!(
            matches!(err, SourceError::Unreachable { .. }),
            "unexpected {err:?}"
        );
    }

    /// Answers one request with `response` verbatim, returns the address.
    fn one_shot(response: &'static str) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(response.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn http_status_and_bad_json_are_errors() {
        let addr = one_shot(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let err = HttpSource::new(&addr, Duration::from_secs(2))
            .fetch()
            .expect_err("503");
        assert!(
            matches!(err, SourceError::Status { status: 503, .. }),
            "unexpected {err:?}"
        );
        let addr = one_shot(
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{\"units\":",
        );
        let err = HttpSource::new(&addr, Duration::from_secs(2))
            .fetch()
            .expect_err("truncated JSON");
        assert!(
            matches!(err, SourceError::Decode { .. }),
            "unexpected {err:?}"
        );
    }

    #[test]
    fn fixture_snapshot_over_http() {
        let body = include_str!("testdata/several_users.json");
        let response: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let addr = one_shot(response);
        let snap = HttpSource::new(&addr, Duration::from_secs(2))
            .fetch()
            .expect("fixture snapshot");
        assert_eq!(snap.units.len(), 4);
    }

    #[test]
    fn standalone_reads_a_fake_tree() {
        let tree = crate::testing::fake_tree::FakeCgroupTree::new();
        tree.unit("alice");
        let mut s = Standalone::new(&tree.root(), Path::new("/proc"), "t3-serve@*.service")
            .expect("standalone");
        let snap = s.fetch().expect("snapshot");
        assert!(!snap.agent.from_agent);
        assert!(!snap.agent.bpf_loaded);
        assert_eq!(snap.units.len(), 1);
        assert_eq!(snap.units[0].user, "alice");
        assert!(snap.units[0].memory.current_bytes.is_some());
    }
}
