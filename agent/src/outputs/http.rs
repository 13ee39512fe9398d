//! The HTTP endpoint on `--listen`: `/metrics`, `/healthz` and
//! `/api/v1/snapshot`. Scrapes never trigger reads of cgroupfs or procfs:
//! they are answered from what the sampling loop last saw, so a scrape
//! storm cannot slow sampling down.
//!
//! Both bodies are made when asked for, at most once per change of the
//! model (a "generation": a sampling pass, a BPF event, a unit coming or
//! going), and kept until the next change. Nobody asking costs nothing: at
//! 100 units rendering `/metrics` is ~2 ms and building the snapshot ~1 ms,
//! which the loop used to spend on every pass (ten times a second while a
//! unit is sampled fast) for a scrape every 15 s.
//!
//! - `/metrics` is rendered by the handler from the shared registry (on the
//!   blocking pool, one render at a time; concurrent scrapes wait for it
//!   and share the result), gzip-compressed once for clients that accept
//!   it. It never waits for the loop: a loop stuck in a read still gets
//!   scraped (and `/healthz` says it is stale).
//! - `/api/v1/snapshot` needs the loop's state (model, detectors, BPF
//!   walk), so the handler asks the loop for it over a channel; the loop
//!   answers between passes. If the loop does not answer within
//!   [`SNAPSHOT_WAIT`], the last snapshot built is served instead (its
//!   `generated_at` says how old it is), or 503 if there is none.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use super::snapshot::Snapshot;

/// How long a snapshot request waits for the loop before the last built
/// snapshot is served instead.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// A request for the current snapshot, answered by the sampling loop.
pub type SnapshotRequest = oneshot::Sender<Arc<Snapshot>>;

/// `/metrics` as last rendered, for one generation.
#[derive(Debug, Default)]
struct Rendered {
    generation: Option<u64>,
    text: Bytes,
    /// Made on the first request that accepts gzip.
    gzip: Option<Bytes>,
}

#[derive(Debug)]
struct Shared {
    /// Bumped by the loop on every change of what it would publish.
    generation: AtomicU64,
    last_pass: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
    rendered: tokio::sync::Mutex<Rendered>,
    snapshot: Mutex<Option<(u64, Arc<Snapshot>)>>,
    snapshot_requests: mpsc::Sender<SnapshotRequest>,
}

/// Shared between the sampling loop and the HTTP handlers.
#[derive(Debug, Clone)]
pub struct HttpState {
    shared: Arc<Shared>,
    /// `/healthz` fails when no pass completed within this long.
    stale_after: Duration,
}

impl HttpState {
    /// The state, and the receiving end of snapshot requests, which the
    /// sampling loop answers with [`HttpState::snapshot_for`].
    pub fn new(
        stale_after: Duration,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::Receiver<SnapshotRequest>) {
        let (tx, rx) = mpsc::channel(64);
        let state = HttpState {
            shared: Arc::new(Shared {
                generation: AtomicU64::new(0),
                last_pass: Mutex::new(None),
                metrics,
                rendered: tokio::sync::Mutex::default(),
                snapshot: Mutex::new(None),
                snapshot_requests: tx,
            }),
            stale_after,
        };
        (state, rx)
    }

    /// The model changed (a BPF event, a unit came or went): bodies made
    /// before are out of date.
    pub fn changed(&self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A sampling pass completed (for `/healthz`); the model changed.
    pub fn pass_done(&self) {
        if let Ok(mut p) = self.shared.last_pass.lock() {
            *p = Some(Instant::now());
        }
        self.changed();
    }

    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// The snapshot of the current generation: the one built already, or
    /// `build()`'s, kept for later requests. Called by the loop.
    pub fn snapshot_for(&self, build: impl FnOnce() -> Snapshot) -> Arc<Snapshot> {
        let generation = self.generation();
        if let Some(s) = self.cached_snapshot(Some(generation)) {
            return s;
        }
        let s = Arc::new(build());
        if let Ok(mut c) = self.shared.snapshot.lock() {
            *c = Some((generation, Arc::clone(&s)));
        }
        s
    }

    /// The kept snapshot: of `generation`, or of any when `None`.
    fn cached_snapshot(&self, generation: Option<u64>) -> Option<Arc<Snapshot>> {
        let c = self.shared.snapshot.lock().ok()?;
        match &*c {
            Some((g, s)) if generation.is_none_or(|want| *g == want) => Some(Arc::clone(s)),
            _ => None,
        }
    }

    fn last_pass(&self) -> Option<Instant> {
        self.shared.last_pass.lock().ok().and_then(|p| *p)
    }

    /// `/metrics` of the current generation, rendered now if needed; with
    /// its gzip when `gzip` (made now if needed; `None` if that failed).
    async fn metrics_body(&self, gzip: bool) -> (Bytes, Option<Bytes>) {
        let mut r = self.shared.rendered.lock().await;
        let generation = self.generation();
        if r.generation != Some(generation) {
            let metrics = Arc::clone(&self.shared.metrics);
            let text = tokio::task::spawn_blocking(move || metrics.render())
                .await
                .unwrap_or_default();
            *r = Rendered {
                generation: Some(generation),
                text: Bytes::from(text),
                gzip: None,
            };
        }
        if gzip && r.gzip.is_none() {
            let text = r.text.clone();
            r.gzip = tokio::task::spawn_blocking(move || compress_bytes(&text))
                .await
                .ok()
                .flatten()
                .map(Bytes::from);
        }
        (r.text.clone(), if gzip { r.gzip.clone() } else { None })
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/v1/snapshot", get(snapshot))
        .with_state(state)
}

/// Serves until `shutdown` completes (mini-redis style: the caller decides
/// what shutdown is).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Gzip of the metrics text (fast level: the text is repetitive), or
/// `None` if compression failed (the text is served plain then).
pub fn compress(text: &str) -> Option<Vec<u8>> {
    compress_bytes(text.as_bytes())
}

fn compress_bytes(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

/// Whether an `Accept-Encoding` value allows gzip (not `gzip;q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|part| {
        let mut it = part.split(';').map(str::trim);
        let coding = it.next().unwrap_or("");
        let q_zero = it.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
    })
}

async fn metrics(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
    let gzip_ok = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .any(|v| v.to_str().is_ok_and(accepts_gzip));
    let (text, gz) = s.metrics_body(gzip_ok).await;
    match gz {
        Some(gz) if gzip_ok => (
            [
                (header::CONTENT_TYPE, CONTENT_TYPE),
                (header::CONTENT_ENCODING, "gzip"),
                (header::VARY, "Accept-Encoding"),
            ],
            gz,
        )
            .into_response(),
        _ => (
            [
                (header::CONTENT_TYPE, CONTENT_TYPE),
                (header::VARY, "Accept-Encoding"),
            ],
            text,
        )
            .into_response(),
    }
}

async fn healthz(State(s): State<HttpState>) -> Response {
    match s.last_pass() {
        Some(t) if t.elapsed() <= s.stale_after => (StatusCode::OK, "ok\n").into_response(),
        Some(t) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stale: last sampling pass {:.1}s ago\n",
                t.elapsed().as_secs_f64()
            ),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: no sampling pass yet\n",
        )
            .into_response(),
    }
}

async fn snapshot(State(s): State<HttpState>) -> Response {
    if s.last_pass().is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet\n").into_response();
    }
    let generation = s.generation();
    let snap = match s.cached_snapshot(Some(generation)) {
        Some(snap) => Some(snap),
        None => {
            let (tx, rx) = oneshot::channel();
            let asked = s.shared.snapshot_requests.try_send(tx).is_ok();
            let answer = if asked {
                tokio::time::timeout(SNAPSHOT_WAIT, rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
            } else {
                None
            };
            // The loop is busy (a long pass) or gone: the last one built.
            answer.or_else(|| s.cached_snapshot(None))
        }
    };
    let Some(snap) = snap else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the sampling loop did not answer; no snapshot yet\n",
        )
            .into_response();
    };
    match serde_json::to_vec(&*snap) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_values() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, GZIP;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip(""));
    }

    fn snapshot_with(units_watched: usize) -> Snapshot {
        use crate::model::state::Model;
        use crate::outputs::snapshot::{build, AgentInfo};
        build::snapshot(
            &Model::default(),
            AgentInfo {
                version: "t".into(),
                mode: "observe".into(),
                bpf_loaded: false,
                bpf_error: None,
                units_watched,
                sample_interval_ms: 1000,
                started_at: 0.0,
                from_agent: true,
            },
        )
    }

    #[tokio::test]
    async fn metrics_are_rendered_once_per_generation() {
        let metrics = Arc::new(Metrics::new("t").expect("metrics"));
        let (state, _rx) = HttpState::new(Duration::from_secs(5), Arc::clone(&metrics));
        metrics.set_units_watched(3);
        let (a, gz) = state.metrics_body(false).await;
        assert!(gz.is_none());
        let text = String::from_utf8_lossy(&a).into_owned();
        assert!(text.contains("t3pressure_units_watched 3"), "{text}");
        // Changed without telling: the rendered body is kept.
        metrics.set_units_watched(4);
        let (b, gz) = state.metrics_body(true).await;
        assert_eq!(a, b);
        assert!(gz.is_some_and(|g| g.len() < a.len()));
        // Told: rendered again.
        state.changed();
        let (c, _) = state.metrics_body(false).await;
        assert!(String::from_utf8_lossy(&c).contains("t3pressure_units_watched 4"));
    }

    #[tokio::test]
    async fn snapshots_come_from_the_loop_once_per_generation() {
        let metrics = Arc::new(Metrics::new("t").expect("metrics"));
        let (state, mut rx) = HttpState::new(Duration::from_secs(5), metrics);
        let before = snapshot(State(state.clone())).await;
        assert_eq!(before.status(), StatusCode::SERVICE_UNAVAILABLE);
        state.pass_done();
        // A stand-in for the loop: counts the snapshots it builds.
        let builds = Arc::new(AtomicU64::new(0));
        let (s2, b2) = (state.clone(), Arc::clone(&builds));
        let looper = tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let n = b2.fetch_add(1, Ordering::SeqCst) as usize;
                let _ = reply.send(s2.snapshot_for(|| snapshot_with(n)));
            }
        });
        for _ in 0..3 {
            assert_eq!(
                snapshot(State(state.clone())).await.status(),
                StatusCode::OK
            );
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1, "asked once, then cached");
        state.changed();
        assert_eq!(
            snapshot(State(state.clone())).await.status(),
            StatusCode::OK
        );
        let s = state.cached_snapshot(None).expect("kept");
        assert_eq!(s.agent.units_watched, 1, "rebuilt after the change");
        // The loop gone: the last snapshot is still served.
        looper.abort();
        let _ = looper.await;
        state.changed();
        assert_eq!(
            snapshot(State(state.clone())).await.status(),
            StatusCode::OK
        );
    }

    #[test]
    fn gzip_round_trip() {
        use std::io::Read;
        let text = "t3pressure_units_watched 3\n".repeat(1000);
        let gz = compress(&text).expect("compress");
        assert!(gz.len() < text.len() / 10);
        let mut back = String::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_string(&mut back)
            .expect("gunzip");
        assert_eq!(back, text);
    }
}
