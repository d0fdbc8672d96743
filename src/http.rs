//! The operator's HTTP endpoints: `/metrics` on the metrics address, `/healthz` and
//! `/readyz` on the probe address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Readiness: true once every watch cache has synced (so reconciles see the cluster).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

pub fn probes(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(r): State<Readiness>| async move {
                if r() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "watch caches not synced yet")
                }
            }),
        )
        .with_state(readiness)
}

/// `/metrics`; `before_scrape` refreshes gauges derived from the caches.
pub fn metrics(metrics: Arc<Metrics>, before_scrape: Arc<dyn Fn() + Send + Sync>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            let before_scrape = before_scrape.clone();
            async move {
                before_scrape();
                (
                    [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    metrics.encode(),
                )
                    .into_response()
            }
        }),
    )
}

/// Serves `router` on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
