//! `elasticsearch`: writes spans and log records to Elasticsearch 8.x or OpenSearch 2.x over
//! the `_bulk` API (NDJSON, gzip), in one of three document shapes (`mapping.mode`):
//!
//! * `otel`: OpenTelemetry-native documents in data streams `traces-<dataset>.otel-<namespace>`
//!   and `logs-<dataset>.otel-<namespace>`, routed by the `data_stream.dataset` /
//!   `data_stream.namespace` attributes (record or span first, then scope, then resource;
//!   defaults `generic` / `default`);
//! * `ecs`: Elastic Common Schema names (`trace.id`, `service.name`, `event.outcome`,
//!   `message`, `log.level`...) in `traces-generic-default` / `logs-generic-default`;
//! * `dataprepper`: OpenSearch Trace Analytics' `otel-v1-apm-span` documents (and Data
//!   Prepper's `logs-otel-v1` log shape), so OpenSearch Dashboards' trace views work.
//!
//! Bulk correctness: every item's result is read. Items refused with 429/502/503/504 are sent
//! again alone, with backoff, inside the same export call, so items already indexed are never
//! sent twice; 409 on `create` is a duplicate of something already delivered and counts as
//! sent; any other item error (mapping or parse errors) drops the item, counted per status
//! and error type on `meshgate_exporter_elasticsearch_bulk_item_errors_total` and reported to
//! the engine as rejected (`dropped{reason="rejected_by_backend"}`). Whole-request failures
//! (connection errors, timeouts, 5xx, 429) are retried by the engine, honouring
//! `Retry-After`; 400/401/403/404 and other 4xx on the request are permanent.
//!
//! With a `dependencies` section it also takes metrics: the service graph's request counts
//! (`traces_service_graph_request_total`) become Jaeger dependency documents, written every
//! `dependencies.interval` into the indices Jaeger's query service reads (see
//! [`dependencies`]), so Jaeger shows the dependency graph without its batch job.

mod bulk;
pub mod dependencies;
mod docs;
mod templates;
#[cfg(test)]
mod tests;
mod tls;

pub use dependencies::DependenciesConfig;
pub use docs::MappingMode;

use crate::common::{self, parse_config};
use crate::otlphttp::HttpCompression;
use bytes::Bytes;
use docs::{Encoder, Item};
use http::{HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use meshgate_config::{ByteSize, DurationValue};
use meshgate_engine::exporter_helper::{QueueConfig, RetryConfig};
use meshgate_engine::telemetry::Counter;
use meshgate_engine::{
    BuildContext, ExportError, Exported, Exporter, ExporterFactory, Factory, Registry,
};
use meshgate_pdata::{Payload, Signal};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tracing::{info, warn};

/// Largest response body read (bulk responses are filtered to status and error per item).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// `mapping`: the document shape.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    /// `otel`, `ecs` or `dataprepper`. Default: `otel`.
    pub mode: MappingMode,
}

/// `auth`: credentials sent with every request.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// User for HTTP basic authentication (with `password`). Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// Password for HTTP basic authentication (with `user`). Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// API key, sent as `Authorization: ApiKey <api_key>`: the base64 `id:key` that
    /// Elasticsearch returns as `encoded`. Excludes `user`/`password`. Default: none.
    #[serde(default)]
    pub api_key: Option<String>,
}

/// `tls`: how `https://` endpoints are verified.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) to trust instead of the public web roots (a
    /// cluster with its own CA, as Elasticsearch 8 sets up). Default: none (the Mozilla
    /// root set).
    pub ca_file: Option<String>,
    /// Accept any server certificate (testing only: anyone on the path can read the data).
    /// Default: `false`.
    pub insecure_skip_verify: bool,
}

/// `flush`: the size of a bulk request.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FlushConfig {
    /// Largest batch sent in one bulk request, measured as encoded OTLP protobuf (the JSON
    /// body is typically 2-4 times larger before gzip): bigger batches are split before they
    /// are queued. `0` disables the cap. Flushing by age is the `batch` processor's
    /// `timeout` in the pipeline. Default: `5MiB`.
    pub bytes: ByteSize,
}

impl Default for FlushConfig {
    fn default() -> Self {
        Self {
            bytes: ByteSize(5 * 1024 * 1024),
        }
    }
}

/// Config of the `elasticsearch` exporter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Base URLs of the cluster's nodes, `http://` or `https://`, e.g.
    /// `["https://es-0:9200", "https://es-1:9200"]`; `/_bulk` is appended. Requests go
    /// round-robin and fail over to the next node on connection errors. Required.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Document shape: `{ mode: otel | ecs | dataprepper }`. Default: `{ mode: otel }`.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// Index, alias or data stream for log records, instead of the mode's (`otel`: routed
    /// per record to `logs-<dataset>.otel-<namespace>`; `ecs`: `logs-generic-default`;
    /// `dataprepper`: `logs-otel-v1`). Default: none.
    #[serde(default)]
    pub logs_index: Option<String>,
    /// Index, alias or data stream for spans, instead of the mode's (`otel`: routed per span
    /// to `traces-<dataset>.otel-<namespace>`; `ecs`: `traces-generic-default`;
    /// `dataprepper`: `otel-v1-apm-span`). Default: none.
    #[serde(default)]
    pub traces_index: Option<String>,
    /// Before the first export, install the mode's composable index templates
    /// (`_index_template/meshgate-<mode>-traces|logs`, from `schemas/elasticsearch/<mode>/`)
    /// and, in `dataprepper` mode, the first indices behind the `otel-v1-apm-span` and
    /// `logs-otel-v1` write aliases. Default: `false`.
    #[serde(default)]
    pub create_templates: bool,
    /// Write the service graph as Jaeger dependency documents: `{ index_prefix, date_layout,
    /// use_aliases, interval, max_staleness }` (each with its default, `{}` for all of
    /// them). Required for the exporter to be in a `metrics` pipeline (fed by the
    /// `servicegraph` connector); other metrics are counted and ignored. Default: none.
    #[serde(default)]
    pub dependencies: Option<DependenciesConfig>,
    /// Credentials: `{ user, password }` (basic) or `{ api_key }`. Default: none.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS of `https://` endpoints: `{ ca_file, insecure_skip_verify }`. Default: public
    /// roots, verification on.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Request body compression: `gzip` or `none`. Default: `gzip`.
    #[serde(default)]
    pub compression: HttpCompression,
    /// Bulk request size: `{ bytes }`. Default: `{ bytes: 5MiB }`.
    #[serde(default)]
    pub flush: FlushConfig,
    /// Deadline of one HTTP request, connection and response included. Default: `30s`.
    #[serde(default = "default_timeout")]
    pub timeout: DurationValue,
    /// The exporter's queue; `num_consumers` is the number of concurrent bulk requests.
    /// Default: 10 consumers, 1000 batches, `on_full: drop`.
    #[serde(default)]
    pub sending_queue: QueueConfig,
    /// Retries of failed requests (by the engine) and of throttled items (inside the export
    /// call, same backoff; given up after `max_elapsed_time` and then counted as rejected,
    /// reason `throttled`). Default: enabled, 5s initial, x1.5, 30s max interval, 300s max
    /// elapsed time.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

fn default_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(30))
}

/// Factory of the `elasticsearch` exporter.
pub struct ElasticsearchExporterFactory;

impl Factory for ElasticsearchExporterFactory {
    fn type_name(&self) -> &'static str {
        "elasticsearch"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Logs, Signal::Metrics]
    }
    fn description(&self) -> &'static str {
        "Writes traces and logs to Elasticsearch or OpenSearch over the _bulk API (otel, ecs or dataprepper documents); with `dependencies`, service graph metrics as Jaeger dependency documents"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(ElasticsearchConfig)
    }
    fn signal_requires(&self) -> &'static [(Signal, &'static str)] {
        &[(Signal::Metrics, Self::METRICS_REQUIRE)]
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        ElasticsearchExporter::new(&parse_config(config)?, "check", &Registry::new()).map(|_| ())
    }
}

impl ExporterFactory for ElasticsearchExporterFactory {
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let cfg: ElasticsearchConfig = parse_config(ctx.config)?;
        let exporter = Arc::new(ElasticsearchExporter::new(&cfg, &ctx.id, ctx.telemetry)?);
        if let Some(d) = &exporter.dependencies {
            d.start(Arc::downgrade(&exporter));
        }
        Ok(exporter)
    }
}

impl ElasticsearchExporterFactory {
    /// The config key without which a `metrics` pipeline may not feed this exporter, for
    /// `meshgate validate` (the exporter refuses metrics at run time without it).
    pub const METRICS_REQUIRE: &'static str = "dependencies";
}

/// Per-signal counters resolved at build time.
struct SignalCounters {
    retried: Counter,
    duplicates: Counter,
}

/// The `elasticsearch` exporter.
pub struct ElasticsearchExporter {
    id: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Base URLs without a trailing `/`.
    endpoints: Vec<String>,
    next: AtomicUsize,
    auth: Option<HeaderValue>,
    gzip: bool,
    timeout: Duration,
    max_request_bytes: Option<usize>,
    retry: RetryConfig,
    encoder: Encoder,
    create_templates: bool,
    templates_installed: tokio::sync::Mutex<bool>,
    telemetry: Registry,
    /// Traces, logs.
    counters: [SignalCounters; 2],
    /// Jaeger dependency documents from service graph metrics (`dependencies`).
    dependencies: Option<dependencies::Dependencies>,
}

fn check_endpoint(url: &str) -> Result<String, String> {
    let url = url.trim();
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!(
            "endpoint `{url}` must be an `http://` or `https://` URL, e.g. `http://elasticsearch:9200`"
        ));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("endpoint `{url}` is not a valid URL: {e}"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("endpoint `{url}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("endpoint `{url}` must not have a query string"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn check_index(what: &str, name: &Option<String>) -> Result<Option<String>, String> {
    let Some(name) = name.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let bad = |c: char| {
        matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
        ) || c.is_ascii_uppercase()
    };
    if name.chars().any(bad) || name.starts_with(['-', '_', '+']) || name == "." || name == ".." {
        return Err(format!(
            "{what} `{name}` is not a valid index name (lowercase, no spaces or any of \\/*?\"<>|,#:, not starting with -, _ or +)"
        ));
    }
    Ok(Some(name.to_string()))
}

fn auth_header(auth: &Option<AuthConfig>) -> Result<Option<HeaderValue>, String> {
    use base64::Engine;
    let Some(a) = auth else { return Ok(None) };
    let value = match (&a.user, &a.password, &a.api_key) {
        (None, None, Some(key)) if !key.trim().is_empty() => format!("ApiKey {}", key.trim()),
        (Some(u), Some(p), None) if !u.is_empty() => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        ),
        (Some(_), None, None) | (None, Some(_), None) => {
            return Err("`auth` needs both `user` and `password` for basic authentication".into());
        }
        (None, None, None) => return Ok(None),
        _ => {
            return Err("`auth` takes either `user` and `password`, or `api_key`, not both".into());
        }
    };
    let mut v = HeaderValue::from_str(&value)
        .map_err(|_| "`auth`: credentials contain characters not allowed in a header")?;
    v.set_sensitive(true);
    Ok(Some(v))
}

/// A whole-request answer.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
    url: String,
}

/// What one export call learnt about its items, for the counters and the message.
#[derive(Default)]
struct Tally {
    /// (status, reason) → (count, first reason text).
    rejected: BTreeMap<(String, String), (u64, String)>,
    first_reason: Option<String>,
}

impl Tally {
    fn reject(&mut self, status: &str, kind: &str, reason: &str, n: u64) {
        let e = self
            .rejected
            .entry((status.to_string(), kind.to_string()))
            .or_insert_with(|| (0, reason.to_string()));
        e.0 += n;
        if self.first_reason.is_none() {
            self.first_reason = Some(format!("{kind}: {reason}"));
        }
    }
    fn total(&self) -> u64 {
        self.rejected.values().map(|v| v.0).sum()
    }
}

impl ElasticsearchExporter {
    /// Builds the exporter. No connection is made until the first export.
    pub fn new(cfg: &ElasticsearchConfig, id: &str, telemetry: &Registry) -> Result<Self, String> {
        if cfg.endpoints.is_empty() {
            return Err(
                "`endpoints` is required, e.g. `endpoints: [\"http://elasticsearch:9200\"]`".into(),
            );
        }
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| check_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = cfg.timeout.0;
        if timeout.is_zero() {
            return Err("`timeout` must be greater than 0s".into());
        }
        let traces_index = check_index("traces_index", &cfg.traces_index)?;
        let logs_index = check_index("logs_index", &cfg.logs_index)?;
        let auth = auth_header(&cfg.auth)?;
        let dependencies = cfg
            .dependencies
            .as_ref()
            .map(|d| dependencies::Dependencies::new(d, id, telemetry))
            .transpose()?;
        let https = endpoints.iter().any(|e| e.starts_with("https://"));
        if !https && (cfg.tls.ca_file.is_some() || cfg.tls.insecure_skip_verify) {
            return Err("`tls` is set but no endpoint is `https://`".into());
        }
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = tls::connector(&cfg.tls, http)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let counters = [Signal::Traces, Signal::Logs].map(|s| {
            let l = [("exporter", id), ("signal", s.as_str())];
            SignalCounters {
                retried: telemetry.counter(
                    "meshgate_exporter_elasticsearch_bulk_item_retries_total",
                    "Bulk items sent again after a 429/502/503/504 item answer.",
                    &l,
                ),
                duplicates: telemetry.counter(
                    "meshgate_exporter_elasticsearch_bulk_item_duplicates_total",
                    "Bulk items answered 409 on create (already indexed), counted as sent.",
                    &l,
                ),
            }
        });
        Ok(Self {
            id: id.to_string(),
            client,
            endpoints,
            next: AtomicUsize::new(0),
            auth,
            gzip: cfg.compression == HttpCompression::Gzip,
            timeout,
            max_request_bytes: (cfg.flush.bytes.0 > 0).then_some(cfg.flush.bytes.0 as usize),
            retry: cfg.retry_on_failure.clone(),
            encoder: Encoder {
                mode: cfg.mapping.mode,
                traces_index,
                logs_index,
            },
            create_templates: cfg.create_templates,
            templates_installed: tokio::sync::Mutex::new(false),
            telemetry: telemetry.clone(),
            counters,
            dependencies,
        })
    }

    /// One HTTP request to the next endpoint, failing over to the following ones on
    /// connection errors. Transport failures and timeouts are retryable errors.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        ndjson: bool,
    ) -> Result<Answer, ExportError> {
        let n = self.endpoints.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut failures = Vec::new();
        for k in 0..n {
            let url = format!("{}{path}", self.endpoints[(first + k) % n]);
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(&url)
                .header(
                    http::header::USER_AGENT,
                    concat!("meshgate/", env!("CARGO_PKG_VERSION")),
                )
                .header(http::header::ACCEPT, "application/json")
                .header(
                    http::header::CONTENT_TYPE,
                    if ndjson {
                        "application/x-ndjson"
                    } else {
                        "application/json"
                    },
                );
            if ndjson && self.gzip {
                req = req.header(http::header::CONTENT_ENCODING, "gzip");
            }
            if let Some(a) = &self.auth {
                req = req.header(http::header::AUTHORIZATION, a.clone());
            }
            let req = req
                .body(Full::new(body.clone()))
                .map_err(|e| ExportError::permanent(format!("building the request failed: {e}")))?;
            let attempt = async {
                let resp = self.client.request(req).await?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map(|b| b.to_bytes());
                Ok::<_, hyper_util::client::legacy::Error>((parts, body))
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Err(_) => {
                    return Err(ExportError::retryable(format!(
                        "{method} {url} timed out after {:?}",
                        self.timeout
                    )));
                }
                Ok(Err(e)) if e.is_connect() => {
                    failures.push(format!("{url}: {}", common::error_chain(&e)));
                }
                Ok(Err(e)) => {
                    return Err(ExportError::retryable(format!(
                        "{method} {url} failed: {}",
                        common::error_chain(&e)
                    )));
                }
                Ok(Ok((parts, body))) => {
                    let body = body.map_err(|e| {
                        ExportError::retryable(format!(
                            "reading the response of {method} {url} failed: {e}"
                        ))
                    })?;
                    return Ok(Answer {
                        status: parts.status,
                        headers: parts.headers,
                        body,
                        url,
                    });
                }
            }
        }
        Err(ExportError::retryable(format!(
            "no endpoint reachable: {}",
            failures.join("; ")
        )))
    }

    /// Installs the mode's index templates once (`create_templates`). Transient failures
    /// fail the export retryably; a refusal (4xx) is logged and not tried again, so data
    /// keeps flowing with whatever mappings the cluster has.
    async fn ensure_templates(&self) -> Result<(), ExportError> {
        if !self.create_templates {
            return Ok(());
        }
        let mut installed = self.templates_installed.lock().await;
        if *installed {
            return Ok(());
        }
        let mode = self.encoder.mode;
        let mut puts: Vec<(String, String, bool)> = templates::for_mode(mode)
            .iter()
            .map(|t| {
                (
                    format!("/_index_template/{}", t.name),
                    t.body.to_string(),
                    false,
                )
            })
            .collect();
        let ti = self.encoder.traces_index.clone();
        let li = self.encoder.logs_index.clone();
        let traces = ti.or_else(|| mode.default_index(true).map(String::from));
        let logs = li.or_else(|| mode.default_index(false).map(String::from));
        for (index, body) in templates::bootstrap_indices(
            mode,
            traces.as_deref().unwrap_or_default(),
            logs.as_deref().unwrap_or_default(),
        ) {
            puts.push((format!("/{index}"), body, true));
        }
        for (path, body, bootstrap) in puts {
            let a = self
                .request(Method::PUT, &path, Bytes::from(body), false)
                .await?;
            let text = bulk::error_text(&a.body);
            if a.status.is_success() {
                info!(exporter = %self.id, "installed {path}");
            } else if bootstrap && text.contains("already_exists") {
                // The write index exists already (an earlier start, or Data Prepper).
            } else if a.status.is_server_error() || a.status == StatusCode::TOO_MANY_REQUESTS {
                return Err(ExportError {
                    retryable: true,
                    retry_after: common::retry_after_header(&a.headers),
                    message: format!("installing {path} failed: HTTP {}: {text}", a.status),
                });
            } else {
                warn!(exporter = %self.id, "installing {} failed, continuing without it: HTTP {}: {text}", a.url, a.status);
            }
        }
        *installed = true;
        Ok(())
    }

    /// POSTs the pending items; a whole-request failure is an `Err`.
    async fn post_bulk(
        &self,
        items: &[Item],
        pending: &[usize],
    ) -> Result<Vec<bulk::ItemOutcome>, (ExportError, String)> {
        let body = bulk::body(items, pending, self.gzip).map_err(|e| {
            (
                ExportError::permanent(format!("gzip compression failed: {e}")),
                "compression".to_string(),
            )
        })?;
        let a = self
            .request(Method::POST, bulk::BULK_PATH, Bytes::from(body), true)
            .await
            .map_err(|e| (e, "none".to_string()))?;
        let status = a.status;
        if status.is_success() {
            return bulk::parse(&a.body, pending.len()).map_err(|e| {
                // The data may have arrived: not worth sending it twice.
                (
                    ExportError::permanent(format!("{} answered {status}: {e}", a.url)),
                    status.as_u16().to_string(),
                )
            });
        }
        let text = bulk::error_text(&a.body);
        let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        let hint = if status == StatusCode::PAYLOAD_TOO_LARGE {
            " (lower `flush.bytes`)"
        } else {
            ""
        };
        Err((
            ExportError {
                retryable,
                retry_after: if retryable {
                    common::retry_after_header(&a.headers)
                } else {
                    None
                },
                message: format!(
                    "bulk request of {} items to {} failed: HTTP {status}: {text}{hint}",
                    pending.len(),
                    a.url
                ),
            },
            status.as_u16().to_string(),
        ))
    }

    fn backoff(&self, interval: Duration) -> Duration {
        let f = self.retry.randomization_factor.clamp(0.0, 1.0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let r = (nanos % 10_000) as f64 / 10_000.0 * 2.0 - 1.0;
        interval.mul_f64((1.0 + r * f).max(0.0))
    }

    async fn send(&self, data: &Payload) -> Result<Exported, ExportError> {
        let signal = data.signal();
        let sig = match signal {
            Signal::Traces => 0,
            Signal::Logs => 1,
            Signal::Metrics => {
                let (Payload::Metrics(m), Some(d)) = (data, &self.dependencies) else {
                    return Err(ExportError::permanent(
                        "the elasticsearch exporter takes metrics only with `dependencies` set \
                         (service graph metrics written as Jaeger dependency documents)",
                    ));
                };
                // Only counted here: the documents are written every `interval`.
                d.consume(m);
                return Ok(Exported::default());
            }
        };
        let items = self.encoder.encode(data);
        if items.is_empty() {
            return Ok(Exported::default());
        }
        self.ensure_templates().await?;
        let counters = &self.counters[sig];
        let started = tokio::time::Instant::now();
        let mut interval = self.retry.initial_interval.0;
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut tally = Tally::default();
        let mut round = 0u32;
        // Why the pending items still need sending: (status label, message).
        let mut last_failure: (String, String);
        loop {
            let mut retry_after = None;
            match self.post_bulk(&items, &pending).await {
                // Nothing delivered yet: the engine retries the whole batch.
                Err((e, _)) if round == 0 => return Err(e),
                Err((e, status)) => {
                    if !e.retryable {
                        tally.reject(&status, "request_failed", &e.message, pending.len() as u64);
                        pending.clear();
                        break;
                    }
                    retry_after = e.retry_after;
                    last_failure = (status, e.message);
                }
                Ok(outcomes) => {
                    let mut again = Vec::new();
                    let mut last_status = 0;
                    for (&i, o) in pending.iter().zip(outcomes) {
                        match o {
                            bulk::ItemOutcome::Indexed => {}
                            bulk::ItemOutcome::Duplicate => counters.duplicates.add(1),
                            bulk::ItemOutcome::Retry { status } => {
                                last_status = status;
                                again.push(i);
                            }
                            bulk::ItemOutcome::Rejected {
                                status,
                                kind,
                                reason,
                            } => tally.reject(&status.to_string(), &kind, &reason, 1),
                        }
                    }
                    pending = again;
                    last_failure = (
                        last_status.to_string(),
                        format!("HTTP {last_status} on {} items", pending.len()),
                    );
                }
            }
            if pending.is_empty() {
                break;
            }
            let wait = retry_after.unwrap_or_else(|| self.backoff(interval));
            let max_elapsed = self.retry.max_elapsed_time.0;
            if !self.retry.enabled
                || (!max_elapsed.is_zero() && started.elapsed() + wait > max_elapsed)
            {
                let (status, message) = last_failure;
                tally.reject(&status, "throttled", &message, pending.len() as u64);
                pending.clear();
                break;
            }
            counters.retried.add(pending.len() as u64);
            tokio::time::sleep(wait).await;
            interval = interval
                .mul_f64(self.retry.multiplier.max(1.0))
                .min(self.retry.max_interval.0);
            round += 1;
        }
        let rejected = tally.total();
        if rejected == 0 {
            return Ok(Exported::default());
        }
        let mut parts = Vec::new();
        for ((status, kind), (n, _)) in &tally.rejected {
            self.telemetry
                .counter(
                    "meshgate_exporter_elasticsearch_bulk_item_errors_total",
                    "Bulk items dropped, by the item's HTTP status and Elasticsearch error type (throttled: still refused when retries ran out).",
                    &[
                        ("exporter", &self.id),
                        ("signal", signal.as_str()),
                        ("status", status),
                        ("reason", kind),
                    ],
                )
                .add(*n);
            parts.push(format!("{n} x {status} {kind}"));
        }
        Ok(Exported {
            rejected,
            message: Some(format!(
                "{rejected} of {} items dropped by Elasticsearch ({}); first error: {}",
                items.len(),
                parts.join(", "),
                tally.first_reason.unwrap_or_default()
            )),
        })
    }
}

#[async_trait::async_trait]
impl Exporter for ElasticsearchExporter {
    fn max_request_bytes(&self) -> Option<usize> {
        self.max_request_bytes
    }

    async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
        self.send(data).await
    }

    /// Writes the dependency calls gathered since the last document (one attempt).
    async fn shutdown(&self) {
        if let Some(d) = &self.dependencies {
            d.stop().await;
            self.flush_dependencies(dependencies::Flush::Last).await;
        }
    }
}

impl Drop for ElasticsearchExporter {
    fn drop(&mut self) {
        if let Some(d) = &self.dependencies {
            d.abort();
        }
    }
}
