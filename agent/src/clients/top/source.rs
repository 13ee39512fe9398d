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
