//! Where `top` gets its snapshots: the agent's `/api/v1/snapshot` over HTTP,
//! or (once the lead wires it to the collector) cgroupfs read directly.

use std::time::Duration;

use crate::outputs::snapshot::Snapshot;

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
    #[error("standalone mode not wired yet")]
    StandaloneNotWired,
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
    pub cgroup_root: std::path::PathBuf,
    pub proc_root: std::path::PathBuf,
    pub unit_glob: String,
}

impl SnapshotSource for Standalone {
    fn fetch(&mut self) -> Result<Snapshot, SourceError> {
        Err(SourceError::StandaloneNotWired)
    }

    fn describe(&self) -> String {
        format!("standalone {}", self.cgroup_root.display())
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

    #[test]
    fn standalone_says_it_is_not_wired() {
        let mut s = Standalone {
            cgroup_root: "/sys/fs/cgroup".into(),
            proc_root: "/proc".into(),
            unit_glob: "t3-serve@*.service".into(),
        };
        let err = s.fetch().expect_err("not wired");
        assert_eq!(err.to_string(), "standalone mode not wired yet");
    }
}
