//! `otlphttp`: sends every signal to an OTLP/HTTP backend as protobuf (`/v1/traces`,
//! `/v1/metrics`, `/v1/logs`), with the OTLP/HTTP specification's response handling:
//! partial success on 2xx, retries on 429/502/503/504 honouring `Retry-After`, permanent
//! failure (with the server's message) on other errors.

use crate::common::{self, parse_config};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use meshgate_config::{ByteSize, DurationValue};
use meshgate_engine::exporter_helper::{QueueConfig, RetryConfig};
use meshgate_engine::{BuildContext, ExportError, Exported, Exporter, ExporterFactory, Factory};
use meshgate_pdata::otlp::{
    ExportLogsServiceResponse, ExportMetricsServiceResponse, ExportTraceServiceResponse,
};
use meshgate_pdata::{Payload, Signal};
use prost::Message;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// Largest response body read (the OTLP response or an error text).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Compression of OTLP/HTTP request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum HttpCompression {
    /// gzip (`Content-Encoding: gzip`).
    #[default]
    Gzip,
    /// No compression.
    None,
}

/// Config of the `otlphttp` exporter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpHttpConfig {
    /// Base URL, e.g. `http://collector:4318`; `/v1/traces`, `/v1/metrics` and `/v1/logs`
    /// are appended. Required unless all three per-signal endpoints are set. `https://` is
    /// rejected: TLS is not supported yet.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Full URL for traces, used as is instead of `<endpoint>/v1/traces`. Default: none.
    #[serde(default)]
    pub traces_endpoint: Option<String>,
    /// Full URL for metrics, used as is instead of `<endpoint>/v1/metrics`. Default: none.
    #[serde(default)]
    pub metrics_endpoint: Option<String>,
    /// Full URL for logs, used as is instead of `<endpoint>/v1/logs`. Default: none.
    #[serde(default)]
    pub logs_endpoint: Option<String>,
    /// Request body compression: `gzip` or `none`. Default: `gzip`.
    #[serde(default)]
    pub compression: HttpCompression,
    /// Deadline of one export attempt, connection included (retries get a fresh one).
    /// Default: `5s`.
    #[serde(default = "default_timeout")]
    pub timeout: DurationValue,
    /// Extra HTTP headers sent with every request, e.g. `Authorization`. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Largest request sent, as encoded protobuf: bigger batches are split before they are
    /// queued (gRPC servers refuse messages over 4 MiB by default). `0` disables the cap.
    /// Default: `4MiB`.
    #[serde(default = "crate::common::default_max_request_size")]
    pub max_request_size: ByteSize,
    /// The exporter's queue (see the engine's `sending_queue`). Default: 10 consumers, 1000
    /// batches, `on_full: drop`.
    #[serde(default)]
    pub sending_queue: QueueConfig,
    /// Retries of retryable failures. Default: enabled, 5s initial, x1.5, 30s max interval,
    /// 300s max elapsed time.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

fn default_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(5))
}

/// Factory of the `otlphttp` exporter.
pub struct OtlpHttpExporterFactory;

impl Factory for OtlpHttpExporterFactory {
    fn type_name(&self) -> &'static str {
        "otlphttp"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "Sends traces, metrics and logs to an OTLP/HTTP backend (protobuf)"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(OtlpHttpConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        OtlpHttpExporter::new(&parse_config(config)?).map(|_| ())
    }
}

impl ExporterFactory for OtlpHttpExporterFactory {
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let cfg: OtlpHttpConfig = parse_config(ctx.config)?;
        Ok(Arc::new(OtlpHttpExporter::new(&cfg)?))
    }
}

/// The `otlphttp` exporter.
pub struct OtlpHttpExporter {
    max_request_bytes: Option<usize>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Traces, metrics, logs URLs.
    urls: [Uri; 3],
    headers: HeaderMap,
    gzip: bool,
    timeout: Duration,
}

impl OtlpHttpExporter {
    /// Builds the exporter. No connection is made until the first export.
    pub fn new(cfg: &OtlpHttpConfig) -> Result<Self, String> {
        let timeout = cfg.timeout.0;
        if timeout.is_zero() {
            return Err("`timeout` must be greater than 0s".into());
        }
        let base = cfg
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let url = |name: &str, explicit: &Option<String>, path: &str| -> Result<Uri, String> {
            match (explicit.as_deref().map(str::trim), base) {
                (Some(full), _) if !full.is_empty() => common::check_http_url(name, full),
                (_, Some(base)) => {
                    common::check_http_url("endpoint", base)?;
                    common::check_http_url(
                        "endpoint",
                        &format!("{}{path}", base.trim_end_matches('/')),
                    )
                }
                _ => Err(format!(
                    "`endpoint` is required (or set `{name}`), e.g. `endpoint: http://collector:4318`"
                )),
            }
        };
        let urls = [
            url("traces_endpoint", &cfg.traces_endpoint, "/v1/traces")?,
            url("metrics_endpoint", &cfg.metrics_endpoint, "/v1/metrics")?,
            url("logs_endpoint", &cfg.logs_endpoint, "/v1/logs")?,
        ];
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header name `{k}` is not a valid HTTP header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("header `{k}`: value is not a valid HTTP header value"))?;
            headers.insert(name, value);
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self {
            max_request_bytes: (cfg.max_request_size.0 > 0)
                .then_some(cfg.max_request_size.0 as usize),
            client,
            urls,
            headers,
            gzip: cfg.compression == HttpCompression::Gzip,
            timeout,
        })
    }

    fn body(&self, data: &Payload) -> Result<Vec<u8>, ExportError> {
        let raw = match data {
            Payload::Traces(t) => t.encode_to_vec(),
            Payload::Metrics(m) => m.encode_to_vec(),
            Payload::Logs(l) => l.encode_to_vec(),
        };
        if !self.gzip {
            return Ok(raw);
        }
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4 + 64),
            flate2::Compression::fast(),
        );
        enc.write_all(&raw)
            .and_then(|_| enc.finish())
            .map_err(|e| ExportError::permanent(format!("gzip compression failed: {e}")))
    }

    async fn send(&self, data: &Payload, url: &Uri) -> Result<Exported, ExportError> {
        let body = self.body(data)?;
        let mut req = http::Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header(
                http::header::USER_AGENT,
                concat!("meshgate/", env!("CARGO_PKG_VERSION")),
            );
        if self.gzip {
            req = req.header(http::header::CONTENT_ENCODING, "gzip");
        }
        let mut req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ExportError::permanent(format!("building the request failed: {e}")))?;
        for (k, v) in &self.headers {
            req.headers_mut().insert(k, v.clone());
        }
        let resp = self.client.request(req).await.map_err(|e| {
            ExportError::retryable(format!(
                "sending {} to {url} failed: {}",
                common::describe(data),
                common::error_chain(&e)
            ))
        })?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| {
                ExportError::retryable(format!("reading the response from {url} failed: {e}"))
            });
        let status = parts.status;
        if status.is_success() {
            let body = body?;
            return decode_success(data.signal(), &body).map_err(|e| {
                // The data arrived; a garbled response is not worth sending it twice.
                ExportError::permanent(format!(
                    "{url} answered {status} with an undecodable body: {e}"
                ))
            });
        }
        let body = body.unwrap_or_default();
        Err(map_error(
            status,
            &parts.headers,
            &body,
            &common::describe(data),
            url,
        ))
    }
}

fn decode_success(signal: Signal, body: &[u8]) -> Result<Exported, prost::DecodeError> {
    Ok(match signal {
        Signal::Traces => {
            common::from_trace_ps(ExportTraceServiceResponse::decode(body)?.partial_success)
        }
        Signal::Metrics => {
            common::from_metrics_ps(ExportMetricsServiceResponse::decode(body)?.partial_success)
        }
        Signal::Logs => {
            common::from_logs_ps(ExportLogsServiceResponse::decode(body)?.partial_success)
        }
    })
}

/// The server's explanation: a `google.rpc.Status` message for protobuf bodies, else the
/// start of the text.
fn error_text(headers: &HeaderMap, body: &[u8]) -> String {
    let is_proto = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-protobuf"));
    if is_proto && let Ok(s) = meshgate_pdata::rpc::Status::decode(body) {
        return s.message;
    }
    let mut end = body.len().min(200);
    while end > 0 && std::str::from_utf8(&body[..end]).is_err() {
        end -= 1;
    }
    String::from_utf8_lossy(&body[..end]).trim().to_string()
}

fn map_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
    url: &Uri,
) -> ExportError {
    let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
    let text = error_text(headers, body);
    let message = if text.is_empty() {
        format!("sending {what} to {url} failed: HTTP {status}")
    } else {
        format!("sending {what} to {url} failed: HTTP {status}: {text}")
    };
    ExportError {
        retryable,
        retry_after: if retryable {
            common::retry_after_header(headers)
        } else {
            None
        },
        message,
    }
}

#[async_trait::async_trait]
impl Exporter for OtlpHttpExporter {
    fn max_request_bytes(&self) -> Option<usize> {
        self.max_request_bytes
    }

    async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
        let url = match data.signal() {
            Signal::Traces => &self.urls[0],
            Signal::Metrics => &self.urls[1],
            Signal::Logs => &self.urls[2],
        };
        match tokio::time::timeout(self.timeout, self.send(data, url)).await {
            Ok(r) => r,
            Err(_) => Err(ExportError::retryable(format!(
                "sending {} to {url} timed out after {:?}",
                common::describe(data),
                self.timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil;
    use axum::extract::State;
    use axum::response::{IntoResponse, Response};
    use meshgate_pdata::otlp::*;
    use std::io::Read;
    use std::sync::Mutex;

    /// (path, content-encoding, decoded body, authorization) of a request.
    type Seen = (String, Option<String>, Vec<u8>, Option<String>);

    #[derive(Clone, Default)]
    struct Backend {
        /// (path, content-encoding, decoded body, auth header)
        seen: Arc<Mutex<Vec<Seen>>>,
        reply: Arc<Mutex<Option<Response>>>,
    }

    async fn handler(
        State(b): State<Backend>,
        uri: http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let enc = headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let decoded = if enc.as_deref() == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            body.to_vec()
        };
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        assert_eq!(headers["content-type"], "application/x-protobuf");
        b.seen
            .lock()
            .unwrap()
            .push((uri.path().to_string(), enc, decoded, auth));
        b.reply
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| StatusCode::OK.into_response())
    }

    async fn start_backend() -> (Backend, String) {
        let b = Backend::default();
        let app = axum::Router::new().fallback(handler).with_state(b.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (b, format!("http://{addr}"))
    }

    fn exporter(v: serde_json::Value) -> OtlpHttpExporter {
        let cfg: OtlpHttpConfig = serde_json::from_value(v).unwrap();
        OtlpHttpExporter::new(&cfg).unwrap()
    }

    #[tokio::test]
    async fn gzip_body_arrives_decodable_with_headers_and_paths() {
        let (b, url) = start_backend().await;
        let exp = exporter(serde_json::json!({
            "endpoint": format!("{url}/"),
            "headers": {"Authorization": "Bearer t0ken"},
        }));
        let data = testutil::traces(3);
        let done = exp.export(&data).await.unwrap();
        assert_eq!(done.rejected, 0);
        exp.export(&testutil::metrics(2)).await.unwrap();
        exp.export(&testutil::logs(2)).await.unwrap();
        let seen = b.seen.lock().unwrap();
        assert_eq!(seen[0].0, "/v1/traces");
        assert_eq!(seen[0].1.as_deref(), Some("gzip"));
        assert_eq!(seen[0].3.as_deref(), Some("Bearer t0ken"));
        let got = ExportTraceServiceRequest::decode(seen[0].2.as_slice()).unwrap();
        assert_eq!(Payload::Traces(got), data);
        assert_eq!(seen[1].0, "/v1/metrics");
        assert_eq!(seen[2].0, "/v1/logs");
    }

    #[tokio::test]
    async fn per_signal_endpoint_and_no_compression() {
        let (b, url) = start_backend().await;
        let exp = exporter(serde_json::json!({
            "traces_endpoint": format!("{url}/custom/spans"),
            "metrics_endpoint": format!("{url}/m"),
            "logs_endpoint": format!("{url}/l"),
            "compression": "none",
        }));
        let data = testutil::traces(1);
        exp.export(&data).await.unwrap();
        let seen = b.seen.lock().unwrap();
        assert_eq!(seen[0].0, "/custom/spans");
        assert_eq!(seen[0].1, None);
        let got = ExportTraceServiceRequest::decode(seen[0].2.as_slice()).unwrap();
        assert_eq!(Payload::Traces(got), data);
    }

    #[tokio::test]
    async fn partial_success_body_is_decoded() {
        let (b, url) = start_backend().await;
        let body = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "span ids must be 8 bytes".into(),
            }),
        }
        .encode_to_vec();
        *b.reply.lock().unwrap() = Some(
            (
                StatusCode::OK,
                [("content-type", "application/x-protobuf")],
                body,
            )
                .into_response(),
        );
        let exp = exporter(serde_json::json!({"endpoint": url}));
        let done = exp.export(&testutil::traces(3)).await.unwrap();
        assert_eq!(done.rejected, 2);
        assert_eq!(done.message.as_deref(), Some("span ids must be 8 bytes"));
    }

    #[tokio::test]
    async fn retryable_statuses_honour_retry_after() {
        let (b, url) = start_backend().await;
        let exp = exporter(serde_json::json!({"endpoint": url}));
        *b.reply.lock().unwrap() = Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "7")],
                "busy",
            )
                .into_response(),
        );
        let e = exp.export(&testutil::logs(1)).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert!(
            e.message.contains("503") && e.message.contains("busy"),
            "{}",
            e.message
        );

        *b.reply.lock().unwrap() = Some(StatusCode::TOO_MANY_REQUESTS.into_response());
        let e = exp.export(&testutil::logs(1)).await.unwrap_err();
        assert!(e.retryable);
        assert_eq!(e.retry_after, None);
    }

    #[tokio::test]
    async fn client_errors_are_permanent_with_message() {
        let (b, url) = start_backend().await;
        let exp = exporter(serde_json::json!({"endpoint": url}));
        *b.reply.lock().unwrap() =
            Some((StatusCode::BAD_REQUEST, "invalid trace id in span 3").into_response());
        let e = exp.export(&testutil::traces(4)).await.unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("400"), "{}", e.message);
        assert!(
            e.message.contains("invalid trace id in span 3"),
            "{}",
            e.message
        );

        // A protobuf google.rpc.Status body: its message is used.
        let status = meshgate_pdata::rpc::Status {
            code: 3,
            message: "metric name missing".into(),
            details: vec![],
        }
        .encode_to_vec();
        *b.reply.lock().unwrap() = Some(
            (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/x-protobuf")],
                status,
            )
                .into_response(),
        );
        let e = exp.export(&testutil::metrics(1)).await.unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.ends_with("metric name missing"), "{}", e.message);

        *b.reply.lock().unwrap() = Some(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        let e = exp.export(&testutil::metrics(1)).await.unwrap_err();
        assert!(!e.retryable);
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let exp = exporter(serde_json::json!({"endpoint": format!("http://127.0.0.1:{port}")}));
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
    }

    #[tokio::test]
    async fn factory_validates_config() {
        let reg = meshgate_engine::Registry::new();
        let build = |v: serde_json::Value| {
            OtlpHttpExporterFactory
                .build(testutil::ctx(&v, &reg))
                .map(|_| ())
        };
        let e = build(serde_json::json!({"endpoint": "https://x:4318"})).unwrap_err();
        assert!(e.contains("TLS is not supported yet"), "{e}");
        assert!(
            build(serde_json::json!({}))
                .unwrap_err()
                .contains("endpoint")
        );
        assert!(build(serde_json::json!({"endpoint": "x:4318"})).is_err());
        assert!(
            build(serde_json::json!({"endpoint": "http://x:1", "compression": "zstd"})).is_err()
        );
        build(serde_json::json!({
            "endpoint": "http://collector:4318",
            "sending_queue": {"num_consumers": 2},
            "retry_on_failure": null,
        }))
        .unwrap();
    }

    /// An address that accepts connections and never answers.
    async fn black_hole() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        addr
    }

    #[tokio::test]
    async fn silent_backend_times_out_retryably() {
        let addr = black_hole().await;
        let exp =
            exporter(serde_json::json!({"endpoint": format!("http://{addr}"), "timeout": "300ms"}));
        let started = std::time::Instant::now();
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
        assert!(e.message.contains("timed out"), "{}", e.message);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
