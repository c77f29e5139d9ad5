//! `debug`: writes what passes through to the gateway's own log, for troubleshooting a
//! pipeline. It never fails and never blocks on a backend.

use crate::common::parse_config;
use meshgate_engine::{BuildContext, ExportError, Exported, Exporter, ExporterFactory, Factory};
use meshgate_pdata::attributes::{get_str, value_to_string};
use meshgate_pdata::otlp::{metric, status};
use meshgate_pdata::{Payload, Signal};
use schemars::JsonSchema;
use serde::Deserialize;
use std::fmt::Write;
use std::sync::Arc;
use tracing::info;

/// How much the `debug` exporter logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Verbosity {
    /// One line per batch with counts.
    #[default]
    Basic,
    /// Also one line per span, log record or metric.
    Normal,
    /// The whole batch as OTLP/JSON.
    Detailed,
}

/// Config of the `debug` exporter.
#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DebugConfig {
    /// `basic` (one line per batch with counts), `normal` (plus one line per span, log record
    /// or metric) or `detailed` (the whole batch as OTLP/JSON). Default: `basic`.
    #[serde(default)]
    pub verbosity: Verbosity,
}

/// Factory of the `debug` exporter.
pub struct DebugExporterFactory;

impl Factory for DebugExporterFactory {
    fn type_name(&self) -> &'static str {
        "debug"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "Logs the data passing through (counts, one line per item, or full OTLP/JSON)"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(DebugConfig)
    }
}

impl ExporterFactory for DebugExporterFactory {
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let cfg: DebugConfig = parse_config(ctx.config)?;
        Ok(Arc::new(DebugExporter {
            id: ctx.id,
            verbosity: cfg.verbosity,
        }))
    }
    fn uses_queue_and_retry(&self) -> bool {
        false
    }
}

/// The `debug` exporter.
pub struct DebugExporter {
    id: String,
    verbosity: Verbosity,
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The one-line summary of a batch, e.g. `traces: 3 resource(s), 12 span(s)`.
pub(crate) fn summary(data: &Payload) -> String {
    match data {
        Payload::Traces(t) => format!(
            "traces: {} resource(s), {} span(s)",
            t.resource_spans.len(),
            data.item_count()
        ),
        Payload::Metrics(m) => {
            let metrics: usize = m
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .map(|s| s.metrics.len())
                .sum();
            format!(
                "metrics: {} resource(s), {} metric(s), {} data point(s)",
                m.resource_metrics.len(),
                metrics,
                data.item_count()
            )
        }
        Payload::Logs(l) => format!(
            "logs: {} resource(s), {} log record(s)",
            l.resource_logs.len(),
            data.item_count()
        ),
    }
}

/// One line per span, log record or metric.
pub(crate) fn item_lines(data: &Payload) -> Vec<String> {
    let mut out = Vec::new();
    match data {
        Payload::Traces(t) => {
            for r in &t.resource_spans {
                let service = r
                    .resource
                    .as_ref()
                    .and_then(|res| get_str(&res.attributes, "service.name"))
                    .unwrap_or("");
                for s in r.scope_spans.iter().flat_map(|s| &s.spans) {
                    let st = s.status.as_ref().map(|st| st.code).unwrap_or(0);
                    let st = status::StatusCode::try_from(st)
                        .map(|c| {
                            c.as_str_name()
                                .trim_start_matches("STATUS_CODE_")
                                .to_string()
                        })
                        .unwrap_or_else(|_| st.to_string());
                    out.push(format!(
                        "span service={service} name={:?} trace_id={} span_id={} parent_span_id={} status={st} duration={}ns",
                        s.name,
                        hex(&s.trace_id),
                        hex(&s.span_id),
                        hex(&s.parent_span_id),
                        s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano),
                    ));
                }
            }
        }
        Payload::Logs(l) => {
            for r in &l.resource_logs {
                let service = r
                    .resource
                    .as_ref()
                    .and_then(|res| get_str(&res.attributes, "service.name"))
                    .unwrap_or("");
                for rec in r.scope_logs.iter().flat_map(|s| &s.log_records) {
                    let body = rec
                        .body
                        .as_ref()
                        .and_then(|b| b.value.as_ref())
                        .map(value_to_string)
                        .unwrap_or_default();
                    out.push(format!(
                        "log service={service} severity={} trace_id={} span_id={} body={body:?}",
                        if rec.severity_text.is_empty() {
                            rec.severity_number.to_string()
                        } else {
                            rec.severity_text.clone()
                        },
                        hex(&rec.trace_id),
                        hex(&rec.span_id),
                    ));
                }
            }
        }
        Payload::Metrics(m) => {
            for r in &m.resource_metrics {
                let service = r
                    .resource
                    .as_ref()
                    .and_then(|res| get_str(&res.attributes, "service.name"))
                    .unwrap_or("");
                for met in r.scope_metrics.iter().flat_map(|s| &s.metrics) {
                    let (kind, points) = match &met.data {
                        Some(metric::Data::Gauge(g)) => ("gauge", g.data_points.len()),
                        Some(metric::Data::Sum(s)) => ("sum", s.data_points.len()),
                        Some(metric::Data::Histogram(h)) => ("histogram", h.data_points.len()),
                        Some(metric::Data::ExponentialHistogram(h)) => {
                            ("exponential_histogram", h.data_points.len())
                        }
                        Some(metric::Data::Summary(s)) => ("summary", s.data_points.len()),
                        None => ("empty", 0),
                    };
                    out.push(format!(
                        "metric service={service} name={:?} type={kind} unit={:?} data_points={points}",
                        met.name, met.unit
                    ));
                }
            }
        }
    }
    out
}

#[async_trait::async_trait]
impl Exporter for DebugExporter {
    async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
        info!(exporter = %self.id, "{}", summary(data));
        match self.verbosity {
            Verbosity::Basic => {}
            Verbosity::Normal => {
                for line in item_lines(data) {
                    info!(exporter = %self.id, "{line}");
                }
            }
            Verbosity::Detailed => {
                let json = meshgate_pdata::json::encode(data);
                info!(exporter = %self.id, "{}", String::from_utf8_lossy(&json));
            }
        }
        Ok(Exported::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil;

    #[test]
    fn summaries_count_items() {
        assert_eq!(
            summary(&testutil::traces(12)),
            "traces: 1 resource(s), 12 span(s)"
        );
        assert_eq!(
            summary(&testutil::metrics(3)),
            "metrics: 1 resource(s), 1 metric(s), 3 data point(s)"
        );
        assert_eq!(
            summary(&testutil::logs(2)),
            "logs: 1 resource(s), 2 log record(s)"
        );
    }

    #[test]
    fn item_lines_name_ids_and_status() {
        let lines = item_lines(&testutil::traces(2));
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("name=\"GET /item/0\""), "{}", lines[0]);
        assert!(lines[0].contains("trace_id=01010101010101010101010101010101"));
        assert!(lines[0].contains("status=OK"), "{}", lines[0]);
        assert!(lines[0].contains("service=checkout"));
        let lines = item_lines(&testutil::logs(1));
        assert!(lines[0].contains("body=\"line 0\""), "{}", lines[0]);
        let lines = item_lines(&testutil::metrics(4));
        assert!(lines[0].contains("type=gauge") && lines[0].contains("data_points=4"));
    }

    #[tokio::test]
    async fn never_fails_at_any_verbosity() {
        let reg = meshgate_engine::Registry::new();
        for v in [
            serde_json::Value::Null,
            serde_json::json!({}),
            serde_json::json!({"verbosity": "normal"}),
            serde_json::json!({"verbosity": "detailed"}),
        ] {
            let exp = DebugExporterFactory.build(testutil::ctx(&v, &reg)).unwrap();
            for p in [
                testutil::traces(3),
                testutil::metrics(2),
                testutil::logs(1),
                Payload::empty(Signal::Traces),
            ] {
                let done = exp.export(&p).await.unwrap();
                assert_eq!(done.rejected, 0);
            }
        }
        let bad = serde_json::json!({"verbosity": "loud"});
        assert!(
            DebugExporterFactory
                .build(testutil::ctx(&bad, &reg))
                .is_err()
        );
        assert!(!DebugExporterFactory.uses_queue_and_retry());
    }
}
