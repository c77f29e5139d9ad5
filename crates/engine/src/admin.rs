//! The admin HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`, `/readyz`.

use crate::health::Health;
use crate::telemetry::Registry;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

#[derive(Clone)]
struct AdminState {
    telemetry: Registry,
    health: Arc<Health>,
}

/// Binds the admin endpoint. It serves until `stop` resolves, which the binary does last, so
/// the drain can be watched on `/metrics`.
pub async fn serve(
    endpoint: &str,
    telemetry: Registry,
    health: Arc<Health>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind(endpoint)
        .await
        .map_err(|e| format!("admin endpoint: cannot listen on {endpoint}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("admin endpoint: {e}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { telemetry, health });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!("admin endpoint stopped: {e}");
        }
    });
    Ok((addr, task))
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.telemetry.render(),
    )
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
