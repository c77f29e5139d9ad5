//! The admin HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`, `/readyz`, the
//! `/api/...` routes components register (the service graph's `/api/v1/topology`) and the
//! pages they serve outside `/api/` (the service graph's `/service-map`).

use crate::health::Health;
use crate::telemetry::Registry;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The paths the admin endpoint serves itself, named in the 404 answer for unknown pages.
const BUILT_IN_PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

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
    /// `Cache-Control` header, when the answer says how browsers may keep it: live JSON is
    /// `no-store`, pages and their assets `no-cache` (revalidated, so an upgraded gateway's
    /// page is never mixed with an old script).
    pub cache_control: Option<&'static str>,
    /// Body.
    pub body: String,
}

impl ApiResponse {
    /// 200 with `value` as a JSON body, never cached (it is live state); a 500 naming the
    /// problem should it not serialise.
    pub fn json(value: &impl serde::Serialize) -> Self {
        match serde_json::to_string(value) {
            Ok(body) => ApiResponse {
                status: 200,
                content_type: "application/json",
                cache_control: Some("no-store"),
                body,
            },
            Err(e) => Self::error(500, format!("cannot serialise the answer: {e}")),
        }
    }
    /// An error status with a JSON `{"error": message}` body.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        ApiResponse {
            status,
            content_type: "application/json",
            cache_control: Some("no-store"),
            body: serde_json::json!({ "error": message.into() }).to_string(),
        }
    }
    /// 200 with a page or one of its assets (`content_type` such as
    /// `text/html; charset=utf-8`), which browsers must revalidate before reuse.
    pub fn content(content_type: &'static str, body: impl Into<String>) -> Self {
        ApiResponse {
            status: 200,
            content_type,
            cache_control: Some("no-cache"),
            body: body.into(),
        }
    }
    /// 200 with an HTML page (see [`ApiResponse::content`]).
    pub fn html(body: impl Into<String>) -> Self {
        Self::content("text/html; charset=utf-8", body)
    }
    /// 200 with a script (see [`ApiResponse::content`]).
    pub fn javascript(body: impl Into<String>) -> Self {
        Self::content("text/javascript; charset=utf-8", body)
    }
    /// 200 with a style sheet (see [`ApiResponse::content`]).
    pub fn css(body: impl Into<String>) -> Self {
        Self::content("text/css; charset=utf-8", body)
    }
}

/// A handler of one API route.
pub type ApiHandler = Arc<dyn Fn(&ApiRequest) -> ApiResponse + Send + Sync>;

/// Routes components add to the admin endpoint: JSON under `/api/`, pages and their assets
/// anywhere else (every path but the built-in `/metrics`, `/healthz` and `/readyz`). Several
/// components may serve the same path (two `servicegraph` connectors); `?component=<id>`
/// then picks one, and the first registered answers otherwise. Shared routes
/// ([`ApiRoutes::register_shared`]) answer the same whichever component is asked for.
#[derive(Clone, Default)]
pub struct ApiRoutes(Arc<RwLock<RouteTable>>);

/// The registered routes.
#[derive(Default)]
struct RouteTable {
    /// Path → the components serving it, in registration order.
    by_component: BTreeMap<String, Vec<(String, ApiHandler)>>,
    /// Path → the one handler serving it for every component.
    shared: BTreeMap<String, ApiHandler>,
}

impl ApiRoutes {
    /// Serves `path` (e.g. `/api/v1/topology`) with `handler` on behalf of component `id`.
    pub fn register(&self, path: &str, id: &str, handler: ApiHandler) {
        let mut routes = self.0.write().unwrap_or_else(|e| e.into_inner());
        routes
            .by_component
            .entry(path.to_string())
            .or_default()
            .push((id.to_string(), handler));
    }

    /// Serves `path` with `handler` whatever `?component=` says: a page that is the same for
    /// every instance of a component type (the service map, which passes `component` on to
    /// the API it reads). The first registration of a path wins; later ones (a second
    /// connector of the same type) are ignored. A shared path answers before any
    /// [`ApiRoutes::register`]ed handler of the same path.
    pub fn register_shared(&self, path: &str, handler: ApiHandler) {
        let mut routes = self.0.write().unwrap_or_else(|e| e.into_inner());
        routes.shared.entry(path.to_string()).or_insert(handler);
    }

    /// Answers a request for `path`, or 404 naming what is served.
    pub fn call(&self, path: &str, request: &ApiRequest) -> ApiResponse {
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(handler) = routes.shared.get(path) {
            return handler(request);
        }
        let Some(handlers) = routes.by_component.get(path) else {
            return routes.not_found(path);
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

impl RouteTable {
    /// The 404 for an unknown path: an API path lists the API routes, any other path every
    /// path the endpoint serves.
    fn not_found(&self, path: &str) -> ApiResponse {
        let mut registered: Vec<&str> = self
            .by_component
            .keys()
            .chain(self.shared.keys())
            .map(String::as_str)
            .collect();
        registered.sort_unstable();
        registered.dedup();
        if path.starts_with("/api/") {
            registered.retain(|p| p.starts_with("/api/"));
            let message = if registered.is_empty() {
                format!("no API route `{path}`: no component of the running pipelines serves one")
            } else {
                format!("no API route `{path}`; served: {}", registered.join(", "))
            };
            return ApiResponse::error(404, message);
        }
        let served: Vec<&str> = BUILT_IN_PATHS.iter().copied().chain(registered).collect();
        ApiResponse::error(
            404,
            format!(
                "no page `{path}` on the admin endpoint (no component of the running \
                 pipelines serves it); served: {}",
                served.join(", ")
            ),
        )
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
        // Everything else is a component's: `/api/...` routes and pages (`/service-map`);
        // other methods than GET get 405.
        .fallback(get(api_route))
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
) -> Response {
    let r = s.api.call(uri.path(), &ApiRequest { query });
    let mut response = (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, r.content_type)],
        r.body,
    )
        .into_response();
    if let Some(cache) = r.cache_control.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert(header::CACHE_CONTROL, cache);
    }
    response
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

    fn page(text: &'static str) -> ApiHandler {
        Arc::new(move |_: &ApiRequest| ApiResponse::html(text))
    }

    #[test]
    fn shared_routes_ignore_the_component_and_the_first_registration_wins() {
        let routes = ApiRoutes::default();
        routes.register_shared("/service-map", page("first"));
        routes.register_shared("/service-map", page("second"));
        let mut req = ApiRequest::default();
        req.query
            .insert("component".into(), "servicegraph/b".into());
        let r = routes.call("/service-map", &req);
        assert_eq!(
            (r.status, r.content_type, r.cache_control, r.body.as_str()),
            (200, "text/html; charset=utf-8", Some("no-cache"), "first")
        );
    }

    #[test]
    fn unknown_pages_name_every_served_path_and_api_misses_only_api_paths() {
        let routes = ApiRoutes::default();
        let none = routes.call("/service-map", &ApiRequest::default());
        assert_eq!((none.status, none.content_type), (404, "application/json"));
        let error: serde_json::Value = serde_json::from_str(&none.body).unwrap();
        assert_eq!(
            error["error"],
            "no page `/service-map` on the admin endpoint (no component of the running \
             pipelines serves it); served: /metrics, /healthz, /readyz"
        );

        routes.register("/api/v1/topology", "servicegraph", answering("a"));
        routes.register_shared("/service-map", page("map"));
        let miss = routes.call("/servicemap", &ApiRequest::default());
        assert!(
            miss.body
                .contains("served: /metrics, /healthz, /readyz, /api/v1/topology, /service-map\""),
            "{}",
            miss.body
        );
        let api_miss = routes.call("/api/v2/topology", &ApiRequest::default());
        assert!(
            api_miss
                .body
                .contains("no API route `/api/v2/topology`; served: /api/v1/topology\""),
            "{}",
            api_miss.body
        );
    }

    #[test]
    fn content_constructors_set_type_and_revalidation() {
        for (r, ty) in [
            (ApiResponse::html("<p>"), "text/html; charset=utf-8"),
            (
                ApiResponse::javascript("1;"),
                "text/javascript; charset=utf-8",
            ),
            (ApiResponse::css("p{}"), "text/css; charset=utf-8"),
        ] {
            assert_eq!(
                (r.status, r.content_type, r.cache_control),
                (200, ty, Some("no-cache"))
            );
        }
        let j = ApiResponse::json(&serde_json::json!({}));
        assert_eq!(j.cache_control, Some("no-store"));
        assert_eq!(ApiResponse::error(400, "x").cache_control, Some("no-store"));
    }

    /// Sends one HTTP/1.1 request and returns the status line, the headers (lower-cased
    /// names) and the body.
    async fn request(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
    ) -> (String, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (
            status.to_string(),
            headers.to_ascii_lowercase(),
            body.to_string(),
        )
    }

    #[tokio::test]
    async fn the_endpoint_serves_pages_outside_the_api_with_their_headers() {
        let routes = ApiRoutes::default();
        routes.register("/api/v1/topology", "servicegraph", answering("a"));
        routes.register_shared("/service-map", page("<!doctype html><p>map"));
        routes.register_shared(
            "/service-map.js",
            Arc::new(|_: &ApiRequest| ApiResponse::javascript("let x = 1;")),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, task) = serve(
            "127.0.0.1:0",
            Registry::new(),
            Arc::new(Health::default()),
            routes,
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
        .unwrap();

        let (status, headers, body) =
            request(addr, "GET", "/service-map?window=1m&component=x").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("content-type: text/html; charset=utf-8"),
            "{headers}"
        );
        assert!(headers.contains("cache-control: no-cache"), "{headers}");
        assert_eq!(body, "<!doctype html><p>map");

        let (status, headers, body) = request(addr, "GET", "/service-map.js").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("content-type: text/javascript; charset=utf-8"),
            "{headers}"
        );
        assert_eq!(body, "let x = 1;");

        let (status, headers, body) = request(addr, "GET", "/api/v1/topology?window=5m").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.contains("cache-control: no-store"), "{headers}");
        assert_eq!(body, r#"{"who":"a","window":"5m"}"#);

        let (status, headers, body) = request(addr, "GET", "/nope").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert!(
            headers.contains("content-type: application/json"),
            "{headers}"
        );
        assert!(
            body.contains("no page `/nope` on the admin endpoint"),
            "{body}"
        );

        let (status, _, body) = request(addr, "GET", "/healthz").await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", "ok\n")
        );

        let (status, _, _) = request(addr, "POST", "/service-map").await;
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");

        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
