//! The HTTP endpoint on `--listen`: `/metrics`, `/healthz` and
//! `/api/v1/snapshot`. Scrapes return what the sampling loop last published;
//! they never trigger reads, so a scrape storm cannot slow sampling down.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::snapshot::Snapshot;

/// What the loop publishes after each pass.
#[derive(Debug, Default)]
struct Published {
    /// Rendered once per pass; cloning `Bytes` is a refcount bump.
    metrics_text: Bytes,
    /// The same, gzip-compressed once per pass, for scrapers that send
    /// `Accept-Encoding: gzip` (Prometheus does): ~10x fewer bytes to copy.
    metrics_gzip: Option<Bytes>,
    snapshot: Option<Arc<Snapshot>>,
    last_pass: Option<Instant>,
}

/// Shared between the sampling loop (writer) and the HTTP handlers (readers).
#[derive(Debug, Clone)]
pub struct HttpState {
    published: Arc<RwLock<Published>>,
    /// `/healthz` fails when no pass completed within this long.
    stale_after: Duration,
}

impl HttpState {
    pub fn new(stale_after: Duration) -> Self {
        HttpState {
            published: Arc::default(),
            stale_after,
        }
    }

    /// Called by the loop after each pass, with [`compress`]'s output.
    pub fn publish(&self, metrics_text: String, metrics_gzip: Option<Vec<u8>>, snapshot: Snapshot) {
        let text = Bytes::from(metrics_text);
        let gzip = metrics_gzip.map(Bytes::from);
        if let Ok(mut p) = self.published.write() {
            p.metrics_text = text;
            p.metrics_gzip = gzip;
            p.snapshot = Some(Arc::new(snapshot));
            p.last_pass = Some(Instant::now());
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Published) -> T) -> Option<T> {
        self.published.read().ok().map(|p| f(&p))
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
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 8),
        flate2::Compression::fast(),
    );
    enc.write_all(text.as_bytes()).ok()?;
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
    let (text, gz) = s
        .read(|p| (p.metrics_text.clone(), p.metrics_gzip.clone()))
        .unwrap_or_default();
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
    match s.read(|p| p.last_pass).flatten() {
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
    let Some(snap) = s.read(|p| p.snapshot.clone()).flatten() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet\n").into_response();
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
