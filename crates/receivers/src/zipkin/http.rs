//! The Zipkin HTTP API: `POST /api/v2/spans`, JSON or protobuf, plain, gzip or zstd,
//! answered `202 Accepted` as Zipkin servers do. Errors are plain text, like Zipkin's.

use super::model::ZipkinSpan;
use super::translate::{Options, to_otlp};
use super::{ZipkinConfig, json, proto};
use crate::http_common;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use meshgate_engine::{Consumer, Refusal, ShutdownSignal};
use meshgate_pdata::Payload;
use meshgate_pdata::validate::Rejected;
use std::sync::Arc;

/// Where Zipkin reporters send spans.
pub(crate) const SPANS_PATH: &str = "/api/v2/spans";
/// The Zipkin v1 API, answered with a message that it is not supported.
const V1_SPANS_PATH: &str = "/api/v1/spans";

/// The two encodings of the Zipkin v2 API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Protobuf,
}

/// A plain-text response.
fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

/// The request's encoding: JSON (also when `Content-Type` is missing, as Zipkin reporters
/// default to JSON) or protobuf; anything else is a `415` message.
fn format(h: &HeaderMap) -> Result<Format, String> {
    let Some(ct) = h.get(header::CONTENT_TYPE) else {
        return Ok(Format::Json);
    };
    let ct = ct.to_str().unwrap_or("?");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" | "" => Ok(Format::Json),
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        _ => Err(format!(
            "unsupported Content-Type `{ct}`: send Zipkin v2 spans as application/json or \
             application/x-protobuf"
        )),
    }
}

/// What became of one request's spans.
#[derive(Debug)]
pub(crate) enum Ingested {
    /// Admitted into the pipelines; `rejected` lists the invalid spans left out.
    Accepted { accepted: usize, rejected: Rejected },
    /// Every span was invalid (none to admit).
    AllInvalid(Rejected),
    /// The engine refused the valid spans as a whole, retryably.
    Refused(Refusal),
}

/// The transport-independent part: drop and count the invalid spans, translate the rest,
/// admit them. Every span is counted once: received = accepted + refused.
pub(crate) async fn ingest(
    consumer: &Consumer,
    decoded: Vec<Result<ZipkinSpan, String>>,
    opts: Options,
) -> Ingested {
    let mut rejected = Rejected::default();
    let mut valid = Vec::with_capacity(decoded.len());
    for (i, span) in decoded.into_iter().enumerate() {
        match span {
            Ok(s) => valid.push(s),
            Err(problem) => {
                rejected.count += 1;
                if rejected.first_error.is_none() {
                    rejected.first_error = Some(format!("span {i}: {problem}"));
                }
            }
        }
    }
    consumer.reject_invalid(rejected.count);
    if valid.is_empty() && rejected.count > 0 {
        return Ingested::AllInvalid(rejected);
    }
    let accepted = valid.len();
    let data = Payload::Traces(to_otlp(valid, opts));
    match consumer.consume(data).await {
        Ok(()) => Ingested::Accepted { accepted, rejected },
        Err(r) => Ingested::Refused(r),
    }
}

/// Shared by every request of one receiver.
struct Route {
    consumer: Consumer,
    max_size: usize,
    opts: Options,
}

async fn post_spans(State(route): State<Arc<Route>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let format = match format(&parts.headers) {
        Ok(f) => f,
        Err(msg) => return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg),
    };
    let coding = match http_common::content_coding(&parts.headers) {
        Ok(c) => c,
        Err(msg) => return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg),
    };
    let bytes = match http_common::read_body(body, coding, route.max_size).await {
        Ok(b) => b,
        Err(e) => return text(e.status, e.message),
    };
    let decoded = match format {
        Format::Json => json::decode(&bytes),
        Format::Protobuf => proto::decode(&bytes),
    };
    let decoded = match decoded {
        Ok(d) => d,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let total = decoded.len();
    match ingest(&route.consumer, decoded, route.opts).await {
        Ingested::Accepted { rejected, .. } if rejected.count == 0 => {
            StatusCode::ACCEPTED.into_response()
        }
        Ingested::Accepted { accepted, rejected } => {
            tracing::debug!(
                dropped = rejected.count,
                "invalid Zipkin spans: {}",
                rejected.message()
            );
            text(
                StatusCode::ACCEPTED,
                format!(
                    "accepted {accepted} of {total} spans; dropped {} invalid: {}",
                    rejected.count,
                    rejected.message()
                ),
            )
        }
        Ingested::AllInvalid(rejected) => text(
            StatusCode::BAD_REQUEST,
            format!(
                "all {} spans are invalid, none accepted: {}",
                rejected.count,
                rejected.message()
            ),
        ),
        Ingested::Refused(r) => {
            let mut resp = text(http_common::refusal_status(r.reason), r.message);
            http_common::set_retry_after(&mut resp, r.retry_after);
            resp
        }
    }
}

async fn wrong_method(method: Method) -> Response {
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {SPANS_PATH}: POST Zipkin v2 spans (application/json \
             or application/x-protobuf)"
        ),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

async fn v1_not_supported() -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "Zipkin v1 ({V1_SPANS_PATH}) is not supported: send Zipkin v2 JSON or protobuf to \
             POST {SPANS_PATH} (Envoy: collector_endpoint_version HTTP_JSON or HTTP_PROTO, \
             collector_endpoint {SPANS_PATH})"
        ),
    )
}

/// The receiver's routes, delivering into `consumer`.
fn router(consumer: Consumer, cfg: &ZipkinConfig) -> Router {
    let route = Arc::new(Route {
        consumer,
        max_size: cfg.max_request_body_size.0 as usize,
        opts: Options {
            parse_string_tags: cfg.parse_string_tags,
        },
    });
    Router::new()
        .route(
            SPANS_PATH,
            post(post_spans).fallback(wrong_method).with_state(route),
        )
        .route(V1_SPANS_PATH, any(v1_not_supported))
        .fallback(|req: Request<Body>| async move {
            text(
                StatusCode::NOT_FOUND,
                format!(
                    "no Zipkin endpoint at {}: send spans to POST {SPANS_PATH}",
                    req.uri().path()
                ),
            )
        })
        .layer(DefaultBodyLimit::disable())
}

/// Binds the listener and serves until shutdown, finishing the requests in flight.
pub(crate) async fn start(
    id: &str,
    cfg: &ZipkinConfig,
    consumer: Consumer,
    shutdown: ShutdownSignal,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(&cfg.endpoint)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.endpoint))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = router(consumer.with_transport("http"), cfg);
    tracing::info!(receiver = %id, "Zipkin v2 listening on http://{addr}{SPANS_PATH}");
    let id = id.to_string();
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.wait())
            .await
        {
            tracing::error!(receiver = %id, "Zipkin HTTP server failed: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_engine::Registry;
    use meshgate_engine::consumer::PipelineInput;
    use meshgate_pdata::Signal;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::mpsc;

    struct Harness {
        app: Router,
        rx: mpsc::Receiver<Payload>,
        registry: Registry,
        draining: Arc<AtomicBool>,
    }

    fn harness(capacity: usize, cfg: ZipkinConfig) -> Harness {
        let (tx, rx) = mpsc::channel(capacity);
        let registry = Registry::new();
        let draining = Arc::new(AtomicBool::new(false));
        let consumer = Consumer::new(
            "zipkin",
            Signal::Traces,
            vec![PipelineInput {
                pipeline: "traces".into(),
                tx,
                gates: Vec::new(),
            }],
            draining.clone(),
            &registry,
        )
        .with_transport("http");
        Harness {
            app: router(consumer, &cfg),
            rx,
            registry,
            draining,
        }
    }

    impl Harness {
        async fn send(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: Vec<u8>,
        ) -> (StatusCode, HeaderMap, String) {
            use tower::ServiceExt;
            let mut req = Request::builder().method(method).uri(path);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = self
                .app
                .clone()
                .oneshot(req.body(Body::from(body)).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        }

        async fn post_json(&self, body: &str) -> (StatusCode, String) {
            let (s, _, b) = self
                .send(
                    "POST",
                    SPANS_PATH,
                    &[("content-type", "application/json")],
                    body.into(),
                )
                .await;
            (s, b)
        }

        fn count(&self, name: &str, reason: Option<&str>) -> u64 {
            let mut labels = vec![
                ("receiver", "zipkin"),
                ("signal", "traces"),
                ("transport", "http"),
            ];
            if let Some(r) = reason {
                labels.push(("reason", r));
            }
            // Same help text as the consumer registers, so the existing series is found.
            self.registry
                .render()
                .lines()
                .find(|l| {
                    l.starts_with(name)
                        && labels
                            .iter()
                            .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        }

        fn spans_received(&mut self) -> Vec<meshgate_pdata::otlp::Span> {
            let mut out = Vec::new();
            while let Ok(p) = self.rx.try_recv() {
                let Payload::Traces(t) = p else {
                    panic!("not traces")
                };
                for rs in t.resource_spans {
                    for ss in rs.scope_spans {
                        out.extend(ss.spans);
                    }
                }
            }
            out
        }
    }

    const ENVOY_JSON: &str = r#"[
        {"traceId":"5af7183fb1d4cf5f","id":"5af7183fb1d4cf5f","kind":"CLIENT","name":"reviews.default.svc.cluster.local:9080/*",
         "timestamp":1700000000000000,"duration":2500,
         "localEndpoint":{"serviceName":"productpage.default","ipv4":"10.0.0.9"},
         "remoteEndpoint":{"ipv4":"10.0.0.7","port":9080},
         "tags":{"component":"proxy","http.status_code":"200","upstream_cluster":"outbound|9080||reviews.default.svc.cluster.local"}},
        {"traceId":"5af7183fb1d4cf5f","id":"5af7183fb1d4cf5f","kind":"SERVER","shared":true,"name":"reviews.default.svc.cluster.local:9080/*",
         "timestamp":1700000000000300,"duration":2000,
         "localEndpoint":{"serviceName":"reviews.default","ipv4":"10.0.0.7"},
         "tags":{"component":"proxy","http.status_code":"200","istio.canonical_service":"reviews"}}
    ]"#;

    #[tokio::test]
    async fn json_gzip_zstd_and_protobuf_are_accepted_with_202() {
        let mut h = harness(16, ZipkinConfig::default());
        let (s, b) = h.post_json(ENVOY_JSON).await;
        assert_eq!((s, b.as_str()), (StatusCode::ACCEPTED, ""));
        // No Content-Type: JSON.
        let (s, _, _) = h.send("POST", SPANS_PATH, &[], ENVOY_JSON.into()).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(ENVOY_JSON.as_bytes()).unwrap();
        let (s, _, b) = h
            .send(
                "POST",
                SPANS_PATH,
                &[
                    ("content-type", "application/json; charset=utf-8"),
                    ("content-encoding", "gzip"),
                ],
                gz.finish().unwrap(),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let z = zstd::encode_all(ENVOY_JSON.as_bytes(), 3).unwrap();
        let (s, _, _) = h
            .send("POST", SPANS_PATH, &[("content-encoding", "zstd")], z)
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let pb = proto::ListOfSpans {
            spans: vec![proto::Span {
                trace_id: vec![1; 16],
                id: vec![2; 8],
                kind: 1,
                ..Default::default()
            }],
        };
        let (s, _, _) = h
            .send(
                "POST",
                SPANS_PATH,
                &[("content-type", "application/x-protobuf")],
                prost::Message::encode_to_vec(&pb),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let spans = h.spans_received();
        assert_eq!(spans.len(), 9);
        assert_eq!(h.count("meshgate_receiver_received_items_total", None), 9);
        assert_eq!(h.count("meshgate_receiver_accepted_items_total", None), 9);
    }

    #[tokio::test]
    async fn invalid_spans_are_dropped_counted_and_named() {
        let mut h = harness(16, ZipkinConfig::default());
        let (s, b) = h
            .post_json(
                r#"[{"traceId":"1","id":"2"},{"traceId":"1","id":"zz"},{"traceId":"1"},{"traceId":"1","id":"3"}]"#,
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        assert_eq!(
            b,
            "accepted 2 of 4 spans; dropped 2 invalid: span 1: `id` `zz` is not hex (0-9, a-f) \
             (and 1 more rejected)"
        );
        assert_eq!(h.spans_received().len(), 2);
        let (s, b) = h.post_json(r#"[{"id":"2"}]"#).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(
            b,
            "all 1 spans are invalid, none accepted: span 0: `traceId` is missing"
        );
        assert_eq!(h.count("meshgate_receiver_received_items_total", None), 5);
        assert_eq!(h.count("meshgate_receiver_accepted_items_total", None), 2);
        assert_eq!(
            h.count("meshgate_receiver_refused_items_total", Some("invalid")),
            3
        );
        // An empty list is fine and counts nothing.
        let (s, _) = h.post_json("[]").await;
        assert_eq!(s, StatusCode::ACCEPTED);
        assert_eq!(h.count("meshgate_receiver_received_items_total", None), 5);
    }

    #[tokio::test]
    async fn request_errors() {
        let cfg = ZipkinConfig {
            max_request_body_size: meshgate_config::ByteSize(1024),
            ..Default::default()
        };
        let h = harness(16, cfg);
        let (s, b) = h.post_json("[{\"traceId\": ").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            b.starts_with("malformed Zipkin v2 JSON") && b.contains("line 1 column"),
            "{b}"
        );
        let (s, _, b) = h
            .send(
                "POST",
                SPANS_PATH,
                &[("content-type", "application/x-protobuf")],
                b"\x0a\x05\x0a".to_vec(),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            b.starts_with("malformed Zipkin v2 protobuf ListOfSpans"),
            "{b}"
        );
        let (s, h2, b) = h
            .send(
                "POST",
                SPANS_PATH,
                &[("content-type", "text/plain")],
                b"x".to_vec(),
            )
            .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(h2[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert!(
            b.contains("`text/plain`") && b.contains("application/json or application/x-protobuf"),
            "{b}"
        );
        let (s, _, b) = h
            .send(
                "POST",
                SPANS_PATH,
                &[("content-encoding", "br")],
                b"x".to_vec(),
            )
            .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(b.contains("`br`"), "{b}");
        let (s, _, b) = h.send("POST", SPANS_PATH, &[], vec![b' '; 1025]).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(b.contains("max_request_body_size (1024 bytes)"), "{b}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[b' '; 4096]).unwrap();
        let (s, _, b) = h
            .send(
                "POST",
                SPANS_PATH,
                &[("content-encoding", "gzip")],
                gz.finish().unwrap(),
            )
            .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(b.starts_with("decompressed body is larger"), "{b}");
        let (s, hd, b) = h.send("GET", SPANS_PATH, &[], vec![]).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(hd[header::ALLOW], "POST");
        assert!(b.starts_with("GET is not allowed on /api/v2/spans"), "{b}");
        let (s, _, b) = h.send("POST", "/api/v1/spans", &[], b"[]".to_vec()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(
            b.starts_with("Zipkin v1 (/api/v1/spans) is not supported"),
            "{b}"
        );
        let (s, _, b) = h.send("POST", "/v1/traces", &[], b"[]".to_vec()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(
            b,
            "no Zipkin endpoint at /v1/traces: send spans to POST /api/v2/spans"
        );
        assert_eq!(h.count("meshgate_receiver_received_items_total", None), 0);
    }

    #[tokio::test]
    async fn refusals_carry_retry_after() {
        let mut h = harness(1, ZipkinConfig::default());
        let one = r#"[{"traceId":"1","id":"2"}]"#;
        assert_eq!(h.post_json(one).await.0, StatusCode::ACCEPTED);
        // The pipeline queue (capacity 1) is full: backpressure after the admission wait.
        let (s, hd, b) = h.send("POST", SPANS_PATH, &[], one.into()).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
        assert_eq!(hd[header::RETRY_AFTER], "1");
        assert!(b.contains("is full"), "{b}");
        assert_eq!(h.spans_received().len(), 1);
        h.draining.store(true, Ordering::Relaxed);
        let (s, hd, b) = h.send("POST", SPANS_PATH, &[], one.into()).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(hd[header::RETRY_AFTER], "1");
        assert!(b.contains("shutting down"), "{b}");
        assert_eq!(h.count("meshgate_receiver_received_items_total", None), 3);
        assert_eq!(h.count("meshgate_receiver_accepted_items_total", None), 1);
        assert_eq!(
            h.count(
                "meshgate_receiver_refused_items_total",
                Some("backpressure")
            ),
            1
        );
        assert_eq!(
            h.count(
                "meshgate_receiver_refused_items_total",
                Some("shutting_down")
            ),
            1
        );
    }

    #[tokio::test]
    async fn envoy_shared_spans_arrive_mapped() {
        let mut h = harness(4, ZipkinConfig::default());
        assert_eq!(h.post_json(ENVOY_JSON).await.0, StatusCode::ACCEPTED);
        let Some(Payload::Traces(t)) = h.rx.recv().await else {
            panic!("no traces")
        };
        assert_eq!(t.resource_spans.len(), 2);
        let server = &t.resource_spans[1].scope_spans[0].spans[0];
        let client = &t.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            server.span_id, client.span_id,
            "a shared span reuses the client's id"
        );
        assert_eq!(
            meshgate_pdata::attributes::get(&server.attributes, "zipkin.shared"),
            Some(&meshgate_pdata::otlp::any_value::Value::BoolValue(true))
        );
        assert_eq!(
            meshgate_pdata::attributes::get_str(&client.attributes, "network.peer.address"),
            Some("10.0.0.7")
        );
    }
}
