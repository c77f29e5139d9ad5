//! Payload builders and build helpers shared by the tests of every processor.

use meshgate_engine::{BuildContext, Processor, ProcessorContext, ProcessorFactory, Registry};
use meshgate_pdata::attributes::kv_str;
use meshgate_pdata::otlp::*;
use meshgate_pdata::{Payload, Signal};

/// Builds a processor of `factory` for a pipeline of `signal` named after the signal.
pub fn build(
    factory: &dyn ProcessorFactory,
    id: &str,
    config: serde_json::Value,
    signal: Signal,
    telemetry: &Registry,
) -> Result<Box<dyn Processor>, String> {
    factory.build(
        BuildContext {
            id: id.to_string(),
            config: &config,
            telemetry,
            api: Default::default(),
        },
        &ProcessorContext {
            pipeline: signal.as_str().to_string(),
            signal,
        },
    )
}

/// The error of a build that must fail.
pub fn build_err(
    factory: &dyn ProcessorFactory,
    config: serde_json::Value,
    signal: Signal,
) -> String {
    match build(factory, "p", config, signal, &Registry::new()) {
        Ok(_) => panic!("build should have failed"),
        Err(e) => e,
    }
}

/// Runs one payload through a processor.
pub fn run(p: &mut dyn Processor, data: Payload) -> Vec<Payload> {
    let mut out = Vec::new();
    p.process(data, &mut out);
    out
}

/// A span with a name and string attributes.
pub fn span(name: &str, attrs: &[(&str, &str)]) -> Span {
    Span {
        name: name.to_string(),
        attributes: attrs.iter().map(|(k, v)| kv_str(k, v)).collect(),
        ..Default::default()
    }
}

/// A resource with string attributes.
pub fn resource(attrs: &[(&str, &str)]) -> Option<Resource> {
    Some(Resource {
        attributes: attrs.iter().map(|(k, v)| kv_str(k, v)).collect(),
        ..Default::default()
    })
}

/// One resource, one scope, these spans.
pub fn traces(res: &[(&str, &str)], spans: Vec<Span>) -> Payload {
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(res),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// `n` spans named `s0..`, one resource.
pub fn n_spans(n: usize) -> Payload {
    traces(
        &[("service.name", "svc")],
        (0..n).map(|i| span(&format!("s{i}"), &[])).collect(),
    )
}

/// A log record with a severity number and string attributes.
pub fn log(severity: i32, attrs: &[(&str, &str)]) -> LogRecord {
    LogRecord {
        severity_number: severity,
        attributes: attrs.iter().map(|(k, v)| kv_str(k, v)).collect(),
        ..Default::default()
    }
}

/// One resource, one scope, these log records.
pub fn logs(res: &[(&str, &str)], records: Vec<LogRecord>) -> Payload {
    Payload::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(res),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// A gauge metric with one data point per attribute set.
pub fn gauge(name: &str, points: &[&[(&str, &str)]]) -> Metric {
    Metric {
        name: name.to_string(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points
                .iter()
                .map(|attrs| NumberDataPoint {
                    attributes: attrs.iter().map(|(k, v)| kv_str(k, v)).collect(),
                    value: Some(number_data_point::Value::AsInt(1)),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    }
}

/// One resource, one scope, these metrics.
pub fn metrics(res: &[(&str, &str)], metrics: Vec<Metric>) -> Payload {
    Payload::Metrics(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(res),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// Every span of a traces payload.
pub fn all_spans(p: &Payload) -> Vec<&Span> {
    let Payload::Traces(t) = p else {
        panic!("not traces")
    };
    t.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect()
}

/// Every log record of a logs payload.
pub fn all_logs(p: &Payload) -> Vec<&LogRecord> {
    let Payload::Logs(l) = p else {
        panic!("not logs")
    };
    l.resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .collect()
}

/// Every metric of a metrics payload.
pub fn all_metrics(p: &Payload) -> Vec<&Metric> {
    let Payload::Metrics(m) = p else {
        panic!("not metrics")
    };
    m.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .collect()
}

/// The attributes of every data point of a gauge metric.
pub fn gauge_points(m: &Metric) -> Vec<&Vec<KeyValue>> {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.iter().map(|p| &p.attributes).collect(),
        _ => panic!("not a gauge"),
    }
}
