//! The HTTP endpoint on `--listen`: `/metrics`, `/healthz` and
//! `/api/v1/snapshot`. Scrapes return what the sampling loop last published;
//! they never trigger reads, so a scrape storm cannot slow sampling down.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::snapshot::Snapshot;

/// What the loop publishes after each pass.
#[derive(Debug, Default)]
struct Published {
    /// Rendered once per pass; cloning `Bytes` is a refcount bump.
    metrics_text: Bytes,
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

    /// Called by the loop after each pass.
    pub fn publish(&self, metrics_text: String, snapshot: Snapshot) {
        if let Ok(mut p) = self.published.write() {
            p.metrics_text = Bytes::from(metrics_text);
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

async fn metrics(State(s): State<HttpState>) -> Response {
    let text = s.read(|p| p.metrics_text.clone()).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
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
