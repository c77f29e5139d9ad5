//! `prometheusremotewrite`: sends metrics to a Prometheus Remote Write 1.0 receiver
//! (Prometheus with `--web.enable-remote-write-receiver`, Mimir, Thanos receive, VictoriaMetrics...)
//! as snappy-compressed protobuf `prometheus.WriteRequest`s.
//!
//! Ordering: Prometheus refuses a sample older than the newest one it has for the series, so
//! the samples of one series must arrive in timestamp order. This exporter declares that the
//! engine's queue must not run batches in parallel (`ordered()`: the configured
//! `sending_queue` with one engine worker, batches exported one after another, no engine
//! retries), and parallelises inside each export
//! instead: the series are spread over `remote_write_queue.num_consumers` shards by a hash of
//! their labels, every shard sends its requests one after another (a series' samples sorted by
//! time), and the shards run concurrently. Retries (`retry_on_failure`) are done inside, per
//! request, so a batch never overtakes an earlier one and a request that succeeded is never
//! sent twice.

use super::ResourceToTelemetry;
use super::translate::{Converted, Options, Translator};
use crate::common;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use meshgate_config::{ByteSize, DurationValue};
use meshgate_engine::exporter_helper::{QueueConfig, RetryConfig};
use meshgate_engine::telemetry::Counter;
use meshgate_engine::{BuildContext, ExportError, Exported, Exporter, ExporterFactory, Factory};
use meshgate_pdata::{Payload, Signal};
use prost::Message;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// How long a delta series' running total is kept without new points.
const DELTA_IDLE: Duration = Duration::from_secs(300);
/// The largest error body read from the server.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The part of the server's error message kept.
const MAX_MESSAGE_BYTES: usize = 256;

/// `prometheus.WriteRequest` of Remote Write 1.0 (field 2 is reserved).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata` (not sent; declared so receivers' messages decode).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `remote_write_queue`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteQueue {
    /// Shards sending concurrently; a series always goes through the same shard (by hash of
    /// its labels), so its samples stay in order. Default: `5`.
    #[schemars(range(min = 1, max = 256))]
    pub num_consumers: usize,
}

impl Default for RemoteWriteQueue {
    fn default() -> Self {
        Self { num_consumers: 5 }
    }
}

/// Config of the `prometheusremotewrite` exporter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Remote write URL, e.g. `http://prometheus:9090/api/v1/write`. Required. `https://` is
    /// not supported yet.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Extra HTTP headers sent with every request (e.g. `Authorization`, `X-Scope-OrgID`).
    /// Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Deadline of one HTTP request, connection included. Default: `5s`.
    #[serde(default = "default_timeout")]
    pub timeout: DurationValue,
    /// Labels added to every series that does not have them, e.g. `cluster: eu-1`.
    /// Default: none.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// `enabled: true` puts every resource attribute on every series as a label (instead of
    /// only on `target_info`). Default: `enabled: false`.
    #[serde(default)]
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
    /// Prefix of every metric name (`<namespace>_`). Default: none.
    #[serde(default)]
    pub namespace: String,
    /// Largest request, as uncompressed protobuf; more samples are split over several
    /// requests. Default: `3MB`.
    #[serde(default = "default_max_batch")]
    pub max_batch_size_bytes: ByteSize,
    /// Parallel shards of one export. Default: `num_consumers: 5`.
    #[serde(default)]
    pub remote_write_queue: RemoteWriteQueue,
    /// Retries of requests that failed with a network error, 429 or 5xx (honouring
    /// `Retry-After`), done inside the exporter per request. Default: enabled, 5s initial,
    /// x1.5, 30s max interval, 300s max elapsed time.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// The exporter's queue (see the engine's `sending_queue`); `num_consumers` is ignored:
    /// batches are sent one after another so each series stays in time order (parallelism
    /// comes from `remote_write_queue.num_consumers` shards). Default: 1000 batches,
    /// `on_full: drop`.
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

fn default_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(5))
}

fn default_max_batch() -> ByteSize {
    ByteSize(3_000_000)
}

/// Factory of the `prometheusremotewrite` exporter.
pub struct PrometheusRemoteWriteExporterFactory;

impl Factory for PrometheusRemoteWriteExporterFactory {
    fn type_name(&self) -> &'static str {
        "prometheusremotewrite"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn description(&self) -> &'static str {
        "Sends metrics to a Prometheus Remote Write 1.0 receiver (snappy protobuf)"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(RemoteWriteConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        Settings::new(&common::parse_config(config)?).map(|_| ())
    }
}

impl ExporterFactory for PrometheusRemoteWriteExporterFactory {
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let cfg: RemoteWriteConfig = common::parse_config(ctx.config)?;
        let failures = ctx.telemetry.counter(
            "meshgate_exporter_send_failures_total",
            "Failed send attempts of batches that were then retried.",
            &[("exporter", &ctx.id), ("signal", "metrics")],
        );
        Ok(Arc::new(RemoteWriteExporter::new(&cfg, failures)?))
    }
    /// One engine worker and no engine retries: see the module documentation.
    fn ordered(&self) -> bool {
        true
    }
}

/// Validated settings.
struct Settings {
    url: Uri,
    headers: HeaderMap,
    timeout: Duration,
}

impl Settings {
    fn new(cfg: &RemoteWriteConfig) -> Result<Self, String> {
        let endpoint = cfg
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(
                "`endpoint` is required, e.g. `endpoint: http://prometheus:9090/api/v1/write`",
            )?;
        let url = common::check_http_url("endpoint", endpoint)?;
        if cfg.timeout.0.is_zero() {
            return Err("`timeout` must be greater than 0s".into());
        }
        if cfg.remote_write_queue.num_consumers == 0 {
            return Err("`remote_write_queue.num_consumers` must be at least 1".into());
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header name `{k}` is not a valid HTTP header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("header `{k}`: value is not a valid HTTP header value"))?;
            headers.insert(name, value);
        }
        Ok(Self {
            url,
            headers,
            timeout: cfg.timeout.0,
        })
    }
}

struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    headers: HeaderMap,
    timeout: Duration,
    retry: RetryConfig,
    failures: Counter,
}

/// The `prometheusremotewrite` exporter.
pub struct RemoteWriteExporter {
    sender: Arc<Sender>,
    translator: Translator,
    shards: usize,
    max_bytes: usize,
}

/// One request of one shard: its encoded (uncompressed) body, sample count and the OTLP
/// points it carries samples of.
struct Request {
    body: Vec<u8>,
    samples: usize,
    points: Vec<u32>,
}

/// A series' samples with the OTLP point each came from.
type SeriesSamples = Vec<(Sample, Option<u32>)>;

#[derive(Default)]
struct ShardOutcome {
    sent_requests: usize,
    failed_points: Vec<u32>,
    errors: Vec<ExportError>,
}

fn framed(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

impl RemoteWriteExporter {
    /// Builds the exporter. No connection is made until the first export.
    pub fn new(cfg: &RemoteWriteConfig, failures: Counter) -> Result<Self, String> {
        let s = Settings::new(cfg)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(s.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let opts = Options {
            namespace: cfg.namespace.clone(),
            resource_to_telemetry: cfg.resource_to_telemetry_conversion.enabled,
            extra_labels: Vec::new(),
        }
        .with_extra_labels(&cfg.external_labels);
        Ok(Self {
            sender: Arc::new(Sender {
                client,
                url: s.url,
                headers: s.headers,
                timeout: s.timeout,
                retry: cfg.retry_on_failure.clone(),
                failures,
            }),
            translator: Translator::new(opts, DELTA_IDLE),
            shards: cfg.remote_write_queue.num_consumers.max(1),
            max_bytes: (cfg.max_batch_size_bytes.0 as usize).max(1),
        })
    }

    /// The requests of every shard, each shard's in send order.
    fn requests(&self, conv: &Converted) -> Vec<Vec<Request>> {
        // Group samples by series, series by shard.
        let mut shards: Vec<HashMap<Vec<Label>, SeriesSamples>> = vec![HashMap::new(); self.shards];
        for s in &conv.series {
            for sample in s.samples() {
                let labels: Vec<Label> = sample
                    .labels
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect();
                let mut h = std::hash::DefaultHasher::new();
                labels.hash(&mut h);
                let shard = (h.finish() % self.shards as u64) as usize;
                shards[shard].entry(labels).or_default().push((
                    Sample {
                        value: sample.value,
                        timestamp: s.timestamp_ms,
                    },
                    s.point,
                ));
            }
        }
        shards
            .into_iter()
            .map(|series| {
                let mut series: Vec<_> = series.into_iter().collect();
                series.sort_by(|a, b| {
                    a.0.iter()
                        .map(|l| (&l.name, &l.value))
                        .cmp(b.0.iter().map(|l| (&l.name, &l.value)))
                });
                self.pack(series)
            })
            .collect()
    }

    /// Packs series into requests of at most `max_bytes` (a series too big for one request
    /// is split in time order over consecutive requests).
    fn pack(&self, series: Vec<(Vec<Label>, SeriesSamples)>) -> Vec<Request> {
        let mut out = Vec::new();
        let mut req = WriteRequest::default();
        let mut req_len = 0usize;
        let mut req_samples = 0usize;
        let mut req_points: Vec<u32> = Vec::new();
        let flush = |req: &mut WriteRequest,
                     req_len: &mut usize,
                     samples: &mut usize,
                     points: &mut Vec<u32>,
                     out: &mut Vec<Request>| {
            if *samples == 0 {
                return;
            }
            let mut p = std::mem::take(points);
            p.sort_unstable();
            p.dedup();
            out.push(Request {
                body: std::mem::take(req).encode_to_vec(),
                samples: *samples,
                points: p,
            });
            *req_len = 0;
            *samples = 0;
        };
        for (labels, mut samples) in series {
            samples.sort_by_key(|(s, _)| s.timestamp);
            let labels_len: usize = labels.iter().map(|l| framed(l.encoded_len())).sum();
            let mut ts = TimeSeries {
                labels: labels.clone(),
                samples: Vec::new(),
            };
            let mut ts_len = labels_len;
            for (s, point) in samples {
                let add = framed(s.encoded_len());
                let would_be = req_len + framed(ts_len + add);
                if would_be > self.max_bytes && (req_samples > 0 || !ts.samples.is_empty()) {
                    if !ts.samples.is_empty() {
                        req_len += framed(ts_len);
                        req.timeseries.push(std::mem::replace(
                            &mut ts,
                            TimeSeries {
                                labels: labels.clone(),
                                samples: Vec::new(),
                            },
                        ));
                        ts_len = labels_len;
                    }
                    flush(
                        &mut req,
                        &mut req_len,
                        &mut req_samples,
                        &mut req_points,
                        &mut out,
                    );
                }
                ts.samples.push(s);
                ts_len += add;
                req_samples += 1;
                if let Some(p) = point {
                    req_points.push(p);
                }
            }
            if !ts.samples.is_empty() {
                req_len += framed(ts_len);
                req.timeseries.push(ts);
            }
        }
        flush(
            &mut req,
            &mut req_len,
            &mut req_samples,
            &mut req_points,
            &mut out,
        );
        out
    }
}

impl Sender {
    /// One HTTP attempt.
    async fn attempt(&self, body: Bytes, samples: usize) -> Result<(), ExportError> {
        let what = format!("{samples} samples to {}", self.url);
        let mut req = http::Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header(http::header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header(
                http::header::USER_AGENT,
                concat!("meshgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| ExportError::permanent(format!("building the request failed: {e}")))?;
        for (k, v) in &self.headers {
            req.headers_mut().insert(k, v.clone());
        }
        let send = async {
            let resp = self.client.request(req).await.map_err(|e| {
                ExportError::retryable(format!(
                    "sending {what} failed: {}",
                    common::error_chain(&e)
                ))
            })?;
            let (parts, body) = resp.into_parts();
            if parts.status.is_success() {
                return Ok(());
            }
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Err(map_error(parts.status, &parts.headers, &body, &what))
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(ExportError::retryable(format!(
                "sending {what} timed out after {:?}",
                self.timeout
            ))),
        }
    }

    /// Sends one request, retrying retryable failures until `retry_on_failure` gives up
    /// (counting from `started`, the start of the export).
    async fn send(
        &self,
        body: Bytes,
        samples: usize,
        started: tokio::time::Instant,
    ) -> Result<(), ExportError> {
        let mut interval = self.retry.initial_interval.0;
        loop {
            let err = match self.attempt(body.clone(), samples).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !err.retryable || !self.retry.enabled {
                return Err(err);
            }
            let wait = err
                .retry_after
                .unwrap_or_else(|| jitter(interval, self.retry.randomization_factor));
            let max = self.retry.max_elapsed_time.0;
            if !max.is_zero() && started.elapsed() + wait > max {
                return Err(ExportError {
                    message: format!(
                        "{} (still failing after {:?})",
                        err.message,
                        started.elapsed()
                    ),
                    ..err
                });
            }
            self.failures.add(1);
            tracing::debug!("remote write failed, retrying in {wait:?}: {}", err.message);
            tokio::time::sleep(wait).await;
            interval = interval
                .mul_f64(self.retry.multiplier.max(1.0))
                .min(self.retry.max_interval.0);
        }
    }

    async fn run_shard(
        self: Arc<Self>,
        requests: Vec<Request>,
        started: tokio::time::Instant,
    ) -> ShardOutcome {
        let mut out = ShardOutcome::default();
        let mut enc = snap::raw::Encoder::new();
        for r in requests {
            let body = match enc.compress_vec(&r.body) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    out.failed_points.extend(r.points);
                    out.errors.push(ExportError::permanent(format!(
                        "snappy compression failed: {e}"
                    )));
                    continue;
                }
            };
            match self.send(body, r.samples, started).await {
                Ok(()) => out.sent_requests += 1,
                Err(e) => {
                    out.failed_points.extend(r.points);
                    out.errors.push(e);
                }
            }
        }
        out
    }
}

/// `d` multiplied by a factor in `[1 - f, 1 + f]` (clock-derived; good enough for spreading
/// retries).
fn jitter(d: Duration, f: f64) -> Duration {
    let f = f.clamp(0.0, 1.0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let r = (nanos % 10_000) as f64 / 5_000.0 - 1.0;
    d.mul_f64((1.0 + r * f).max(0.0))
}

/// The start of the server's message (at most 256 bytes, cut on a character boundary).
fn message_text(body: &[u8]) -> String {
    let mut end = body.len().min(MAX_MESSAGE_BYTES);
    while end > 0 && std::str::from_utf8(&body[..end]).is_err() {
        end -= 1;
    }
    String::from_utf8_lossy(&body[..end]).trim().to_string()
}

fn map_error(status: StatusCode, headers: &HeaderMap, body: &[u8], what: &str) -> ExportError {
    let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
    let text = message_text(body);
    let message = if text.is_empty() {
        format!("sending {what} failed: HTTP {status}")
    } else {
        format!("sending {what} failed: HTTP {status}: {text}")
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
impl Exporter for RemoteWriteExporter {
    async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
        let Payload::Metrics(req) = data else {
            return Ok(Exported::default());
        };
        let conv = self.translator.convert(req);
        let mut notes: Vec<String> = conv.drop_reasons.clone();
        let shards = self.requests(&conv);
        let started = tokio::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for requests in shards.into_iter().filter(|r| !r.is_empty()) {
            set.spawn(self.sender.clone().run_shard(requests, started));
        }
        let mut sent_requests = 0;
        let mut failed: Vec<u32> = Vec::new();
        let mut errors: Vec<ExportError> = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(o) => {
                    sent_requests += o.sent_requests;
                    failed.extend(o.failed_points);
                    errors.extend(o.errors);
                }
                Err(e) => errors.push(ExportError::retryable(format!("shard task failed: {e}"))),
            }
        }
        failed.sort_unstable();
        failed.dedup();
        if let Some(first) = errors.first() {
            if sent_requests == 0 && conv.points > 0 {
                // Nothing got through: the whole batch fails with the server's reason
                // (retryable ones already were retried here; the engine does not retry).
                let retryable = errors.iter().all(|e| e.retryable);
                let more = if errors.len() > 1 {
                    format!(" (and {} more failed requests)", errors.len() - 1)
                } else {
                    String::new()
                };
                return Err(ExportError {
                    retryable,
                    retry_after: None,
                    message: format!("{}{more}", first.message),
                });
            }
            notes.push(first.message.clone());
        }
        let rejected = conv.dropped + failed.len() as u64;
        Ok(Exported {
            rejected,
            message: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::translate::tests::{T0, gauge, histogram, request, sum, summary_metric};
    use axum::extract::State;
    use axum::response::{IntoResponse, Response};
    use meshgate_pdata::otlp::*;
    use std::sync::Mutex;

    /// Status, headers and body of a canned reply.
    type Reply = (u16, Vec<(&'static str, &'static str)>, &'static str);

    #[derive(Clone, Default)]
    struct Backend {
        seen: Arc<Mutex<Vec<WriteRequest>>>,
        /// Replies to give before answering 204, in order.
        replies: Arc<Mutex<Vec<Reply>>>,
        attempts: Arc<std::sync::atomic::AtomicUsize>,
    }

    async fn handler(State(b): State<Backend>, headers: HeaderMap, body: Bytes) -> Response {
        b.attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(headers["content-encoding"], "snappy");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["x-prometheus-remote-write-version"], "0.1.0");
        assert!(
            headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("meshgate/")
        );
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let wr = WriteRequest::decode(&raw[..]).unwrap();
        let reply = {
            let mut r = b.replies.lock().unwrap();
            (!r.is_empty()).then(|| r.remove(0))
        };
        if let Some((status, hdrs, text)) = reply {
            let mut resp = (StatusCode::from_u16(status).unwrap(), text).into_response();
            for (k, v) in hdrs {
                resp.headers_mut().insert(k, HeaderValue::from_static(v));
            }
            return resp;
        }
        b.seen.lock().unwrap().push(wr);
        StatusCode::NO_CONTENT.into_response()
    }

    async fn backend() -> (Backend, String) {
        let b = Backend::default();
        let app = axum::Router::new()
            .route("/api/v1/write", axum::routing::post(handler))
            .with_state(b.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (b, format!("http://{addr}/api/v1/write"))
    }

    fn exporter(url: &str, extra: serde_json::Value) -> RemoteWriteExporter {
        let mut cfg = serde_json::json!({
            "endpoint": url,
            "external_labels": {"cluster": "eu-1"},
            "retry_on_failure": {"initial_interval": "10ms", "max_interval": "20ms", "max_elapsed_time": "2s"},
        });
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        RemoteWriteExporter::new(&common::parse_config(&cfg).unwrap(), Counter::default()).unwrap()
    }

    /// A request without resource (so no `target_info`: one series).
    fn bare(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        let mut r = request(metrics);
        r.resource_metrics[0].resource = None;
        r
    }

    fn label<'a>(ts: &'a TimeSeries, name: &str) -> Option<&'a str> {
        ts.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    fn all_series(b: &Backend) -> Vec<TimeSeries> {
        b.seen
            .lock()
            .unwrap()
            .iter()
            .flat_map(|w| w.timeseries.clone())
            .collect()
    }

    #[tokio::test]
    async fn sends_sorted_labels_and_every_metric_type() {
        let (b, url) = backend().await;
        let e = exporter(&url, serde_json::json!({}));
        let req = request(vec![
            sum("http.requests", "", false, &[(T0, 5.0)]),
            gauge("queue.depth", "", T0, 3),
            histogram("rpc.duration", false, T0, &[1, 2, 3, 4]),
            summary_metric("gc.pause", T0),
        ]);
        let r = e.export(&Payload::Metrics(req)).await.unwrap();
        assert_eq!(r.rejected, 0);
        let series = all_series(&b);
        // 1 + 1 + (4 buckets + sum + count) + (2 quantiles + sum + count) + target_info
        assert_eq!(series.len(), 1 + 1 + 6 + 4 + 1);
        for ts in &series {
            let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
            assert_eq!(label(ts, "cluster"), Some("eu-1"));
            assert_eq!(label(ts, "job"), Some("shop/checkout"));
            assert_eq!(label(ts, "instance"), Some("pod-1"));
            assert_eq!(ts.samples[0].timestamp, (T0 / 1_000_000) as i64);
        }
        let c = series
            .iter()
            .find(|t| label(t, "__name__") == Some("http_requests_total"))
            .unwrap();
        assert_eq!(c.samples[0].value, 5.0);
        assert_eq!(label(c, "otel_scope_name"), Some("envoy"));
        assert!(series.iter().any(
            |t| label(t, "__name__") == Some("rpc_duration_seconds_bucket")
                && label(t, "le") == Some("+Inf")
                && t.samples[0].value == 10.0
        ));
        assert!(
            series
                .iter()
                .any(|t| label(t, "__name__") == Some("gc_pause_milliseconds")
                    && label(t, "quantile") == Some("0.99"))
        );
        let info = series
            .iter()
            .find(|t| label(t, "__name__") == Some("target_info"))
            .unwrap();
        assert_eq!(label(info, "k8s_pod_name"), Some("checkout-abc"));
    }

    #[tokio::test]
    async fn samples_of_a_series_arrive_in_time_order_across_exports_and_shards() {
        let (b, url) = backend().await;
        let e = exporter(
            &url,
            serde_json::json!({"remote_write_queue": {"num_consumers": 4}}),
        );
        let names: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        for step in 0..5u64 {
            // Points of one series inside one batch come in reverse order, too.
            let metrics: Vec<Metric> = names
                .iter()
                .map(|n| {
                    sum(
                        n,
                        "",
                        true,
                        &[
                            (T0 + (step * 2 + 2) * 1_000_000, 1.0),
                            (T0 + (step * 2 + 1) * 1_000_000, 1.0),
                        ],
                    )
                })
                .collect();
            let mut req = request(metrics);
            req.resource_metrics[0].resource = None;
            let r = e.export(&Payload::Metrics(req)).await.unwrap();
            // Each batch's reversed pair: the older point of the pair arrives after the newer
            // one in the request, so the delta store drops it as out of order.
            assert_eq!(r.rejected, 20, "{:?}", r.message);
        }
        let mut by_series: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for w in b.seen.lock().unwrap().iter() {
            for ts in &w.timeseries {
                let k = label(ts, "__name__").unwrap().to_string();
                by_series
                    .entry(k)
                    .or_default()
                    .extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
            }
        }
        assert_eq!(by_series.len(), 20);
        for (k, v) in by_series {
            let ts: Vec<i64> = v.iter().map(|x| x.0).collect();
            let mut sorted = ts.clone();
            sorted.sort();
            assert_eq!(ts, sorted, "{k}");
            // Accumulated: one point added per batch.
            assert_eq!(
                v.iter().map(|x| x.1).collect::<Vec<_>>(),
                [1.0, 2.0, 3.0, 4.0, 5.0],
                "{k}"
            );
        }
        // Several shards were used: more than one request per export.
        assert!(b.seen.lock().unwrap().len() > 5);
    }

    #[tokio::test]
    async fn within_one_batch_points_are_sorted_by_time() {
        let (b, url) = backend().await;
        let e = exporter(&url, serde_json::json!({}));
        let mut g1 = gauge("g", "", T0 + 2_000_000, 2);
        let g0 = gauge("g", "", T0 + 1_000_000, 1);
        if let (Some(metric::Data::Gauge(a)), Some(metric::Data::Gauge(x))) =
            (&mut g1.data, g0.data)
        {
            a.data_points.extend(x.data_points);
        }
        e.export(&Payload::Metrics(request(vec![g1])))
            .await
            .unwrap();
        let s = all_series(&b);
        let g = s
            .iter()
            .find(|t| label(t, "__name__") == Some("g"))
            .unwrap();
        assert_eq!(
            g.samples.iter().map(|s| s.value).collect::<Vec<_>>(),
            [1.0, 2.0]
        );
    }

    #[tokio::test]
    async fn server_errors_are_retried_honouring_retry_after() {
        let (b, url) = backend().await;
        b.replies.lock().unwrap().extend([
            (500, vec![], "try later"),
            (429, vec![("retry-after", "1")], "slow down"),
        ]);
        let failures = Counter::default();
        let cfg = serde_json::json!({"endpoint": url, "retry_on_failure": {"initial_interval": "10ms", "max_elapsed_time": "10s"}});
        let e = RemoteWriteExporter::new(&common::parse_config(&cfg).unwrap(), failures.clone())
            .unwrap();
        let t = std::time::Instant::now();
        let r = e
            .export(&Payload::Metrics(bare(vec![gauge("g", "", T0, 1)])))
            .await
            .unwrap();
        assert_eq!(r.rejected, 0);
        assert!(
            t.elapsed() >= Duration::from_secs(1),
            "Retry-After honoured"
        );
        assert_eq!(failures.get(), 2);
        assert_eq!(b.attempts.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(all_series(&b).len(), 1, "sent once");
    }

    #[tokio::test]
    async fn retries_stop_after_max_elapsed_time() {
        let (b, url) = backend().await;
        b.replies
            .lock()
            .unwrap()
            .extend((0..1000).map(|_| (503, vec![], "down")));
        let e = exporter(
            &url,
            serde_json::json!({"retry_on_failure": {"initial_interval": "50ms", "max_interval": "50ms", "max_elapsed_time": "300ms"}}),
        );
        let err = e
            .export(&Payload::Metrics(bare(vec![gauge("g", "", T0, 1)])))
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert!(
            err.message.contains("503") && err.message.contains("down"),
            "{}",
            err.message
        );
        let n = b.attempts.load(std::sync::atomic::Ordering::SeqCst);
        assert!((2..=10).contains(&n), "{n}");
    }

    #[tokio::test]
    async fn client_errors_are_permanent_with_the_server_message() {
        let (b, url) = backend().await;
        let long = "out of order sample ".repeat(30);
        let long: &'static str = Box::leak(long.into_boxed_str());
        b.replies.lock().unwrap().push((400, vec![], long));
        let e = exporter(&url, serde_json::json!({}));
        let err = e
            .export(&Payload::Metrics(bare(vec![gauge("g", "", T0, 1)])))
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert!(
            err.message
                .contains("HTTP 400 Bad Request: out of order sample"),
            "{}",
            err.message
        );
        assert!(err.message.len() < 256 + 200, "message capped");
        assert_eq!(b.attempts.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_shard_rejects_only_its_points() {
        let (b, url) = backend().await;
        b.replies.lock().unwrap().push((400, vec![], "bad"));
        // One shard, byte cap small enough for one series per request: the first request
        // fails, the rest are sent.
        let e = exporter(
            &url,
            serde_json::json!({"remote_write_queue": {"num_consumers": 1}, "max_batch_size_bytes": 150}),
        );
        let mut req = request((0..5).map(|i| gauge(&format!("g{i}"), "", T0, i)).collect());
        req.resource_metrics[0].resource = None;
        let r = e.export(&Payload::Metrics(req)).await.unwrap();
        assert_eq!(r.rejected, 1, "{:?}", r.message);
        assert!(r.message.unwrap().contains("bad"));
        assert_eq!(all_series(&b).len(), 4);
    }

    #[tokio::test]
    async fn requests_are_capped_by_bytes() {
        let (b, url) = backend().await;
        let cap = 2_000;
        let e = exporter(
            &url,
            serde_json::json!({"remote_write_queue": {"num_consumers": 2}, "max_batch_size_bytes": cap}),
        );
        // One series with many samples (split over requests) plus many small series.
        let mut metrics: Vec<Metric> = (0..200)
            .map(|i| gauge(&format!("g{i}"), "", T0, i))
            .collect();
        let pts: Vec<(u64, f64)> = (0..300).map(|i| (T0 + i * 1_000_000, 1.0)).collect();
        metrics.push(sum("big", "", false, &pts));
        let r = e.export(&Payload::Metrics(request(metrics))).await.unwrap();
        assert_eq!(r.rejected, 0);
        let seen = b.seen.lock().unwrap();
        assert!(seen.len() > 4, "{}", seen.len());
        for w in seen.iter() {
            assert!(w.encoded_len() <= cap, "{}", w.encoded_len());
        }
        let big: Vec<i64> = seen
            .iter()
            .flat_map(|w| w.timeseries.iter())
            .filter(|t| label(t, "__name__") == Some("big_total"))
            .flat_map(|t| t.samples.iter().map(|s| s.timestamp))
            .collect();
        assert_eq!(big.len(), 300);
        assert!(big.windows(2).all(|w| w[0] < w[1]));
        let total: usize = seen
            .iter()
            .flat_map(|w| w.timeseries.iter())
            .map(|t| t.samples.len())
            .sum();
        assert_eq!(total, 200 + 300 + 1);
    }

    #[test]
    fn config_is_checked() {
        let f = PrometheusRemoteWriteExporterFactory;
        assert!(
            f.check(&serde_json::json!({}))
                .unwrap_err()
                .contains("`endpoint` is required")
        );
        assert!(
            f.check(&serde_json::json!({"endpoint": "ftp://x"}))
                .is_err()
        );
        assert!(f.check(&serde_json::json!({"endpoint": "http://p:9090/api/v1/write", "headers": {"bad header": "x"}})).is_err());
        assert!(f.check(&serde_json::json!({"endpoint": "http://p:9090/api/v1/write", "remote_write_queue": {"num_consumers": 0}})).is_err());
        f.check(&serde_json::json!({"endpoint": "http://p:9090/api/v1/write", "sending_queue": {"queue_size": 50}})).unwrap();
        f.check(&serde_json::json!({"endpoint": "http://p:9090/api/v1/write", "max_batch_size_bytes": "1MB", "namespace": "mesh", "resource_to_telemetry_conversion": {"enabled": true}})).unwrap();
    }
}
