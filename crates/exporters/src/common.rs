//! Pieces shared by the exporters: config parsing, compression choice, the `google.rpc`
//! messages used in error details, and test helpers.

use meshgate_pdata::Payload;
use meshgate_pdata::otlp::{
    ExportLogsPartialSuccess, ExportMetricsPartialSuccess, ExportTracePartialSuccess,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Parses a component body into its typed config. A missing body (`otlp:` with nothing
/// after it) and top-level keys written with an empty value (`sending_queue:`) mean
/// "defaults", exactly as the engine reads `sending_queue` / `retry_on_failure` itself.
pub(crate) fn parse_config<T: DeserializeOwned>(config: &serde_json::Value) -> Result<T, String> {
    let mut body = match config {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v => v.clone(),
    };
    if let serde_json::Value::Object(map) = &mut body {
        map.retain(|_, v| !v.is_null());
    }
    serde_json::from_value(body).map_err(|e| e.to_string())
}

/// Compression of request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip (the OTLP default; every backend accepts it).
    #[default]
    Gzip,
    /// zstd (gRPC only: cheaper on CPU at a similar ratio; the backend must support it).
    Zstd,
    /// No compression.
    None,
}

/// An I/O error's text without the `(os error N)` suffix, so messages read
/// `cannot open /x/y: Permission denied`.
pub(crate) fn io_error_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Items the backend rejected and its message, from an OTLP partial success.
pub(crate) fn partial_success(rejected: i64, error_message: &str) -> meshgate_engine::Exported {
    meshgate_engine::Exported {
        rejected: rejected.max(0) as u64,
        message: (!error_message.is_empty()).then(|| error_message.to_string()),
    }
}

pub(crate) fn from_trace_ps(p: Option<ExportTracePartialSuccess>) -> meshgate_engine::Exported {
    p.map(|p| partial_success(p.rejected_spans, &p.error_message))
        .unwrap_or_default()
}

pub(crate) fn from_metrics_ps(p: Option<ExportMetricsPartialSuccess>) -> meshgate_engine::Exported {
    p.map(|p| partial_success(p.rejected_data_points, &p.error_message))
        .unwrap_or_default()
}

pub(crate) fn from_logs_ps(p: Option<ExportLogsPartialSuccess>) -> meshgate_engine::Exported {
    p.map(|p| partial_success(p.rejected_log_records, &p.error_message))
        .unwrap_or_default()
}

/// A short description of a payload for error messages.
pub(crate) fn describe(p: &Payload) -> String {
    format!("{} {}", p.item_count(), p.signal())
}

/// Default `max_request_size` of the network exporters: the gRPC default message limit.
pub(crate) fn default_max_request_size() -> meshgate_config::ByteSize {
    meshgate_config::ByteSize(4 * 1024 * 1024)
}

/// `e` and its sources, e.g. `client error (Connect): tcp connect error: Connection refused`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// A plain `http://` URL with a host, for the HTTP exporters' endpoints; `what` names the
/// option in the message.
pub(crate) fn check_http_url(what: &str, url: &str) -> Result<http::Uri, String> {
    if url.starts_with("https://") {
        return Err(format!(
            "{what} `{url}`: TLS is not supported yet; use a plain `http://` URL (e.g. behind a mesh sidecar that adds mTLS)"
        ));
    }
    if !url.starts_with("http://") {
        return Err(format!(
            "{what} `{url}` must be an `http://` URL, e.g. `http://backend:4318`"
        ));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{what} `{url}` is not a valid URL: {e}"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{what} `{url}` has no host"));
    }
    Ok(uri)
}

/// An HTTP `Retry-After` in seconds (HTTP dates are ignored).
pub(crate) fn retry_after_header(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
}

#[cfg(test)]
pub(crate) mod testutil {
    use meshgate_pdata::Payload;
    use meshgate_pdata::attributes::kv_str;
    use meshgate_pdata::otlp::*;

    /// A traces payload with `n` spans under one resource.
    pub fn traces(n: usize) -> Payload {
        Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "envoy".into(),
                        ..Default::default()
                    }),
                    spans: (0..n)
                        .map(|i| Span {
                            trace_id: vec![1; 16],
                            span_id: vec![i as u8 + 1; 8],
                            name: format!("GET /item/{i}"),
                            start_time_unix_nano: 1_700_000_000_000_000_000,
                            end_time_unix_nano: 1_700_000_000_100_000_000,
                            attributes: vec![kv_str("http.method", "GET")],
                            status: Some(Status {
                                code: status::StatusCode::Ok as i32,
                                message: String::new(),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        })
    }

    /// A logs payload with `n` records.
    pub fn logs(n: usize) -> Payload {
        Payload::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    log_records: (0..n)
                        .map(|i| LogRecord {
                            time_unix_nano: 1_700_000_000_000_000_000,
                            severity_text: "INFO".into(),
                            severity_number: 9,
                            body: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(format!("line {i}"))),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        })
    }

    /// A metrics payload with one gauge of `n` points.
    pub fn metrics(n: usize) -> Payload {
        Payload::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: None,
                scope_metrics: vec![ScopeMetrics {
                    scope: None,
                    metrics: vec![Metric {
                        name: "queue_depth".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: (0..n)
                                .map(|i| NumberDataPoint {
                                    time_unix_nano: 1_700_000_000_000_000_000,
                                    value: Some(number_data_point::Value::AsInt(i as i64)),
                                    ..Default::default()
                                })
                                .collect(),
                        })),
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        })
    }

    /// A build context over `config`.
    pub fn ctx<'a>(
        config: &'a serde_json::Value,
        telemetry: &'a meshgate_engine::Registry,
    ) -> meshgate_engine::BuildContext<'a> {
        meshgate_engine::BuildContext {
            id: "test".into(),
            config,
            telemetry,
            api: Default::default(),
        }
    }
}
