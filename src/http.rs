//! The operator's HTTP endpoints: `/metrics` on the metrics address, `/healthz` and
//! `/readyz` on the probe address.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Readiness: true once every watch cache has synced (so reconciles see the cluster).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;
/// Liveness: false once a controller has stopped, so the kubelet restarts the pod.
pub type Liveness = Arc<dyn Fn() -> bool + Send + Sync>;

pub fn probes(readiness: Readiness, liveness: Liveness) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(move || async move {
                if liveness() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "a controller has stopped")
                }
            }),
        )
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

/// Binds `addr` for the endpoint that `flag` configures. Binding comes before anything is
/// spawned, so that a port that cannot be bound fails start-up with a message naming the
/// flag, e.g. `--metrics-addr 0.0.0.0:8080: address already in use`.
pub async fn bind(flag: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| bind_error(flag, addr, &e))
}

fn bind_error(flag: &str, addr: SocketAddr, e: &std::io::Error) -> String {
    let reason = match e.kind() {
        ErrorKind::AddrInUse => "address already in use".to_string(),
        ErrorKind::AddrNotAvailable => "address not available on this host".to_string(),
        ErrorKind::PermissionDenied => "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string(),
        _ => e.to_string(),
    };
    format!("{flag} {addr}: {reason}")
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_in_use_is_an_error_naming_the_flag_and_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind("--metrics-addr", addr).await.expect_err("the port is taken");
        assert_eq!(err, format!("--metrics-addr {addr}: address already in use"));
    }

    #[tokio::test]
    async fn a_free_port_binds() {
        let listener = bind("--probe-addr", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert!(listener.local_addr().unwrap().ip().is_loopback());
    }

    #[test]
    fn other_errors_keep_the_system_text() {
        let addr: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let e = std::io::Error::from(ErrorKind::AddrNotAvailable);
        assert_eq!(
            bind_error("--probe-addr", addr, &e),
            "--probe-addr 192.0.2.1:80: address not available on this host"
        );
        let e = std::io::Error::other("something odd");
        assert_eq!(bind_error("--probe-addr", addr, &e), "--probe-addr 192.0.2.1:80: something odd");
    }

    #[tokio::test]
    async fn healthz_follows_liveness_and_readyz_readiness() {
        use std::sync::atomic::{AtomicBool, Ordering};
        crate::install_crypto_provider();
        let alive = Arc::new(AtomicBool::new(true));
        let liveness: Liveness = {
            let alive = alive.clone();
            Arc::new(move || alive.load(Ordering::SeqCst))
        };
        let listener = bind("--probe-addr", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, probes(Arc::new(|| false), liveness), std::future::pending()));
        let status = |path: &'static str| async move {
            reqwest::get(format!("http://{addr}{path}")).await.unwrap().status().as_u16()
        };
        assert_eq!(status("/healthz").await, 200);
        assert_eq!(status("/readyz").await, 503);
        alive.store(false, Ordering::SeqCst);
        assert_eq!(status("/healthz").await, 503, "a stopped controller is unhealthy");
    }
}
