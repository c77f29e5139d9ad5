//! The admin HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`, `/readyz`, and
//! the `/api/...` routes components register (the service graph's `/api/v1/topology`).

use crate::health::Health;
use crate::telemetry::Registry;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// One call of a component's API route: the query string, decoded.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    /// Query parameters (`?window=5m&format=nodegraph`); the last value of a repeated key wins.
    pub query: BTreeMap<String, String>,
}

/// What an API handler answers.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` header.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl ApiResponse {
    /// 200 with a JSON body.
    pub fn json(value: &serde_json::Value) -> Self {
        ApiResponse {
            status: 200,
            content_type: "application/json",
            body: value.to_string(),
        }
    }
    /// An error status with a JSON `{"error": message}` body.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        ApiResponse {
            status,
            content_type: "application/json",
            body: serde_json::json!({ "error": message.into() }).to_string(),
        }
    }
}

/// A handler of one API route.
pub type ApiHandler = Arc<dyn Fn(&ApiRequest) -> ApiResponse + Send + Sync>;

/// Routes components add under `/api/` on the admin endpoint. Several components may serve
/// the same path (two `servicegraph` connectors); `?component=<id>` then picks one, and the
/// first registered answers otherwise.
#[derive(Clone, Default)]
pub struct ApiRoutes(Arc<RwLock<RouteTable>>);

/// Path → the components serving it, in registration order.
type RouteTable = BTreeMap<String, Vec<(String, ApiHandler)>>;

impl ApiRoutes {
    /// Serves `path` (e.g. `/api/v1/topology`) with `handler` on behalf of component `id`.
    pub fn register(&self, path: &str, id: &str, handler: ApiHandler) {
        let mut routes = self.0.write().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(path.to_string())
            .or_default()
            .push((id.to_string(), handler));
    }

    /// Answers a request for `path`, or 404 naming what is served.
    pub fn call(&self, path: &str, request: &ApiRequest) -> ApiResponse {
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        let Some(handlers) = routes.get(path) else {
            let served: Vec<&str> = routes.keys().map(String::as_str).collect();
            return ApiResponse::error(
                404,
                if served.is_empty() {
                    format!(
                        "no API route `{path}`: no component of the running pipelines serves one"
                    )
                } else {
                    format!("no API route `{path}`; served: {}", served.join(", "))
                },
            );
        };
        match request.query.get("component") {
            None => (handlers[0].1)(request),
            Some(wanted) => match handlers.iter().find(|(id, _)| id == wanted) {
                Some((_, h)) => h(request),
                None => {
                    let ids: Vec<&str> = handlers.iter().map(|(id, _)| id.as_str()).collect();
                    ApiResponse::error(
                        404,
                        format!(
                            "no component `{wanted}` serves `{path}`; these do: {}",
                            ids.join(", ")
                        ),
                    )
                }
            },
        }
    }
}

#[derive(Clone)]
struct AdminState {
    telemetry: Registry,
    health: Arc<Health>,
    api: ApiRoutes,
}

/// Binds the admin endpoint. It serves until `stop` resolves, which the binary does last, so
/// the drain can be watched on `/metrics`.
pub async fn serve(
    endpoint: &str,
    telemetry: Registry,
    health: Arc<Health>,
    api: ApiRoutes,
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
        .route("/api/{*rest}", get(api_route))
        .with_state(AdminState {
            telemetry,
            health,
            api,
        });
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

async fn api_route(
    State(s): State<AdminState>,
    uri: axum::http::Uri,
    Query(query): Query<BTreeMap<String, String>>,
) -> impl IntoResponse {
    let r = s.api.call(uri.path(), &ApiRequest { query });
    (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, r.content_type)],
        r.body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answering(text: &'static str) -> ApiHandler {
        Arc::new(move |r: &ApiRequest| {
            ApiResponse::json(&serde_json::json!({ "who": text, "window": r.query.get("window") }))
        })
    }

    #[test]
    fn routes_answer_by_path_and_component() {
        let routes = ApiRoutes::default();
        let none = routes.call("/api/v1/topology", &ApiRequest::default());
        assert_eq!(none.status, 404);
        assert!(
            none.body.contains("no component of the running pipelines"),
            "{}",
            none.body
        );

        routes.register("/api/v1/topology", "servicegraph", answering("a"));
        routes.register("/api/v1/topology", "servicegraph/b", answering("b"));
        let mut req = ApiRequest::default();
        req.query.insert("window".into(), "5m".into());
        let first = routes.call("/api/v1/topology", &req);
        assert_eq!(
            (first.status, first.content_type),
            (200, "application/json")
        );
        assert_eq!(first.body, r#"{"who":"a","window":"5m"}"#);

        req.query
            .insert("component".into(), "servicegraph/b".into());
        assert_eq!(
            routes.call("/api/v1/topology", &req).body,
            r#"{"who":"b","window":"5m"}"#
        );

        req.query.insert("component".into(), "nope".into());
        let wrong = routes.call("/api/v1/topology", &req);
        assert_eq!(wrong.status, 404);
        assert!(
            wrong.body.contains("no component `nope` serves `/api/v1/topology`; these do: servicegraph, servicegraph/b"),
            "{}",
            wrong.body
        );
        let other = routes.call("/api/v1/other", &ApiRequest::default());
        assert!(
            other.body.contains("served: /api/v1/topology"),
            "{}",
            other.body
        );
    }
}
