//! `spanmetrics`: RED metrics (calls, errors, duration) from every span of a `traces`
//! pipeline, emitted into a `metrics` pipeline, with the OpenTelemetry Collector connector's
//! config keys and metric names (Grafana Tempo's names as an option).
//!
//! One series per `service.name` (of the span's resource), span name, span kind and status
//! (after the mesh failure rule, so Envoy's `error=true` and string `"503"` count as
//! `STATUS_CODE_ERROR`), plus configured dimensions. Each series has a calls counter and a
//! duration histogram (explicit or exponential buckets, optional exemplars). Output: one
//! resource per service (`service.name` on the resource, so Prometheus' `job` is the
//! service), every `metrics_flush_interval` and at shutdown.
//!
//! Memory stays bounded: past `aggregation_cardinality_limit` new label combinations of a
//! service go to its one overflow series, and series idle for `metrics_expiration` are
//! removed; both are counted on `/metrics`. With `include_instance_id` every series names the
//! replica that made it, so replicas fed by a load balancer never emit clashing series.

mod aggregator;
pub mod config;
pub mod exponential;

pub use aggregator::{SCOPE_NAME, SpanMetrics, Stats};
pub use config::SpanMetricsConfig;

use meshgate_engine::telemetry::{Counter, Gauge};
use meshgate_engine::{BuildContext, Connector, ConnectorFactory, Factory};
use meshgate_pdata::{Payload, Signal};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Builds `spanmetrics` connectors.
pub struct SpanMetricsFactory;

impl Factory for SpanMetricsFactory {
    fn type_name(&self) -> &'static str {
        "spanmetrics"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }
    fn description(&self) -> &'static str {
        "RED metrics (calls, errors, duration) per service, span name, kind and status, from every span"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(SpanMetricsConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        serde_json::from_value::<SpanMetricsConfig>(config.clone())
            .map_err(|e| e.to_string())?
            .validate()
    }
}

impl ConnectorFactory for SpanMetricsFactory {
    fn produces(&self) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn build(&self, ctx: BuildContext<'_>) -> Result<Box<dyn Connector>, String> {
        let cfg: SpanMetricsConfig = ctx.parse()?;
        let core = SpanMetrics::new(&cfg).map_err(|e| format!("{}: {e}", ctx.id))?;
        let labels = [("connector", ctx.id.as_str())];
        let t = ctx.telemetry;
        let interval = cfg.metrics_flush_interval.0;
        Ok(Box::new(SpanMetricsConnector {
            core,
            interval,
            next_flush: Instant::now() + interval,
            reported: Stats::default(),
            spans: t.counter(
                "meshgate_connector_spanmetrics_spans_total",
                "Spans a spanmetrics connector recorded.",
                &labels,
            ),
            series: t.gauge(
                "meshgate_connector_spanmetrics_series",
                "Series a spanmetrics connector holds, overflow series included.",
                &labels,
            ),
            expired: t.counter(
                "meshgate_connector_spanmetrics_series_expired_total",
                "Series a spanmetrics connector removed after metrics_expiration without spans.",
                &labels,
            ),
            overflow: t.counter(
                "meshgate_connector_spanmetrics_overflow_spans_total",
                "Spans recorded into an overflow series because aggregation_cardinality_limit \
                 was reached.",
                &labels,
            ),
        }))
    }
}

/// The running connector: the aggregator, a flush timer and the self-metrics.
struct SpanMetricsConnector {
    core: SpanMetrics,
    interval: Duration,
    next_flush: Instant,
    /// Stats already added to the counters.
    reported: Stats,
    spans: Counter,
    series: Gauge,
    expired: Counter,
    overflow: Counter,
}

/// Wall-clock time as OTLP timestamps want it.
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl SpanMetricsConnector {
    fn report(&mut self) {
        let s = self.core.stats();
        self.spans.add(s.spans - self.reported.spans);
        self.expired
            .add(s.series_expired - self.reported.series_expired);
        self.overflow
            .add(s.overflow_spans - self.reported.overflow_spans);
        self.series.set(s.series as i64);
        self.reported = s;
    }

    fn emit(&mut self, out: &mut Vec<Payload>) {
        let metrics = self.core.collect(unix_nanos());
        self.report();
        if !metrics.resource_metrics.is_empty() {
            out.push(Payload::Metrics(metrics));
        }
    }
}

impl Connector for SpanMetricsConnector {
    fn consume(&mut self, data: &Payload, _out: &mut Vec<Payload>) {
        // The engine only wires traces pipelines into this connector (`signals`).
        if let Payload::Traces(traces) = data {
            self.core.consume(traces, unix_nanos());
            self.report();
        }
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.next_flush)
    }

    fn on_deadline(&mut self, out: &mut Vec<Payload>) {
        let now = Instant::now();
        self.next_flush += self.interval;
        if self.next_flush <= now {
            // Far behind (a suspended process): skip the missed ticks.
            self.next_flush = now + self.interval;
        }
        self.emit(out);
    }

    fn flush(&mut self, out: &mut Vec<Payload>) {
        self.emit(out);
    }
}

#[cfg(test)]
mod factory_tests {
    use super::*;
    use meshgate_config::{Format, Loaded, validate};
    use meshgate_engine::{ApiRoutes, Components, Registry};
    use meshgate_pdata::attributes::kv_str;
    use meshgate_pdata::otlp::*;
    use serde_json::json;

    fn build(config: serde_json::Value, r: &Registry) -> Result<Box<dyn Connector>, String> {
        SpanMetricsFactory.build(BuildContext {
            id: "spanmetrics/red".into(),
            config: &config,
            telemetry: r,
            api: ApiRoutes::default(),
        })
    }

    fn traces(n: usize) -> Payload {
        let spans = (0..n)
            .map(|i| Span {
                trace_id: vec![1; 16],
                span_id: vec![i as u8 + 1; 8],
                name: "GET /".into(),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: 1_000,
                end_time_unix_nano: 2_000,
                ..Default::default()
            })
            .collect();
        Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", "shop")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    #[test]
    fn unknown_keys_are_refused_with_a_suggestion() {
        // (Every option stating its default is checked for all components by the binary's
        // tests.)
        // Through the real validator: a typo, nested or not, is an error naming the key.
        let text = "receivers:\n  spanmetrics:\nexporters:\n  spanmetrics:\nconnectors:\n  \
                    spanmetrics:\n    histogram:\n      explicit:\n        bucket: [2ms]\n    \
                    dimension: []\n    aggregation_temporality: DELTA\n\
                    service:\n  pipelines:\n    traces:\n      receivers: [spanmetrics]\n      \
                    exporters: [spanmetrics]\n";
        let loaded = Loaded::from_str(text, Format::Yaml, "p.yaml").unwrap();
        let catalog = Components::default().connector(SpanMetricsFactory);
        let (_, diags) = validate(&loaded, &catalog);
        let all: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        let all = all.join("\n");
        assert!(
            all.contains("connectors.spanmetrics.histogram.explicit.bucket: unknown key `bucket`"),
            "{all}"
        );
        assert!(all.contains("help: did you mean `buckets`?"), "{all}");
        assert!(
            all.contains("connectors.spanmetrics.dimension: unknown key `dimension`"),
            "{all}"
        );
        assert!(
            all.contains("connectors.spanmetrics.aggregation_temporality"),
            "{all}"
        );
        assert!(all.contains("AGGREGATION_TEMPORALITY_DELTA"), "{all}");
    }

    #[test]
    fn check_reports_what_the_schema_cannot() {
        let e = SpanMetricsFactory
            .check(&json!({"histogram": {"explicit": {"buckets": ["1s", "1s"]}}}))
            .unwrap_err();
        assert!(e.contains("strictly increasing"), "{e}");
        assert!(SpanMetricsFactory.check(&json!({})).is_ok());
        let e = build(json!({"instance_id": "a"}), &Registry::new())
            .err()
            .unwrap();
        assert!(e.starts_with("spanmetrics/red: "), "{e}");
        assert!(e.contains("`include_instance_id` is false"), "{e}");
    }

    #[test]
    fn emits_on_the_flush_timer_and_at_shutdown_and_reports_self_metrics() {
        let r = Registry::new();
        let mut c = build(
            json!({"metrics_flush_interval": "50ms", "aggregation_cardinality_limit": 1}),
            &r,
        )
        .unwrap();
        let d = c.deadline().unwrap();
        assert!(d > Instant::now() && d <= Instant::now() + Duration::from_millis(50));
        let mut out = Vec::new();
        c.consume(&traces(3), &mut out);
        assert!(
            out.is_empty(),
            "metrics leave on the timer, not per request"
        );
        c.on_deadline(&mut out);
        assert_eq!(out.len(), 1);
        let Payload::Metrics(m) = &out[0] else {
            panic!("{:?}", out[0])
        };
        assert_eq!(m.resource_metrics.len(), 1);
        let next = c.deadline().unwrap();
        assert!(next > d, "the timer moves on");
        // A second span name goes to the overflow series (limit 1).
        let Payload::Traces(mut t) = traces(2) else {
            unreachable!()
        };
        t.resource_spans[0].scope_spans[0].spans[1].name = "POST /".into();
        c.consume(&Payload::Traces(t), &mut out);
        out.clear();
        c.flush(&mut out);
        assert_eq!(out.len(), 1, "flush emits what is held");
        let text = r.render();
        for line in [
            "meshgate_connector_spanmetrics_spans_total{connector=\"spanmetrics/red\"} 5",
            "meshgate_connector_spanmetrics_series{connector=\"spanmetrics/red\"} 2",
            "meshgate_connector_spanmetrics_overflow_spans_total{connector=\"spanmetrics/red\"} 1",
            "meshgate_connector_spanmetrics_series_expired_total{connector=\"spanmetrics/red\"} 0",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn nothing_held_emits_nothing() {
        let r = Registry::new();
        let mut c = build(json!({}), &r).unwrap();
        let mut out = Vec::new();
        c.flush(&mut out);
        assert!(out.is_empty());
    }
}
