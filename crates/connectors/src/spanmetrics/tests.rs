//! Exact series for hand-built spans shaped like what Envoy/Istio sidecars and SDKs send.

use super::*;
use crate::histogram::DEFAULT_BOUNDS_SECONDS;
use crate::spanmetrics::exponential::bucket_index;
use meshgate_pdata::otlp::{ResourceSpans, ScopeSpans, Status, number_data_point};
use serde_json::json;
use std::collections::BTreeMap;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// A fixed "now" for the tests (2025-01-01T00:00:00Z).
const T0: u64 = 1_735_689_600 * SEC;

fn agg(config: serde_json::Value) -> SpanMetrics {
    let cfg: SpanMetricsConfig = serde_json::from_value(config).unwrap();
    SpanMetrics::with_settings(cfg.resolve(|_| None, || None).unwrap())
}

fn span(name: &str, kind: SpanKind, dur_ms: u64, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![0x01; 8],
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: T0 - 10 * SEC,
        end_time_unix_nano: T0 - 10 * SEC + dur_ms * MS,
        attributes: attrs,
        ..Default::default()
    }
}

fn with_status(mut s: Span, code: StatusCode) -> Span {
    s.status = Some(Status {
        code: code as i32,
        message: String::new(),
    });
    s
}

fn with_ids(mut s: Span, trace: u8, id: u8) -> Span {
    s.trace_id = vec![trace; 16];
    s.span_id = vec![id; 8];
    s
}

fn resource_spans(resource: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: resource,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn request(rs: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans: rs }
}

fn service(name: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    request(vec![resource_spans(
        vec![kv_str("service.name", name)],
        spans,
    )])
}

type Labels = BTreeMap<String, String>;

fn labels(attrs: &[KeyValue]) -> Labels {
    attrs
        .iter()
        .map(|kv| {
            let v = kv.value.as_ref().and_then(|v| v.value.as_ref()).unwrap();
            (kv.key.clone(), value_to_string(v))
        })
        .collect()
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn metric<'a>(rm: &'a ResourceMetrics, name: &str) -> &'a Metric {
    rm.scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Calls per series over the whole output: labels (plus the resource's `service.name` as
/// `job`) → value.
fn calls(out: &ExportMetricsServiceRequest, name: &str) -> BTreeMap<Labels, i64> {
    let mut m = BTreeMap::new();
    for rm in &out.resource_metrics {
        let job = labels(&rm.resource.as_ref().unwrap().attributes)["service.name"].clone();
        let Some(metric::Data::Sum(s)) = &metric(rm, name).data else {
            panic!("{name} is not a sum")
        };
        for p in &s.data_points {
            let mut k = labels(&p.attributes);
            k.insert("job".into(), job.clone());
            let Some(number_data_point::Value::AsInt(v)) = p.value else {
                panic!("calls are integers")
            };
            assert!(m.insert(k, v).is_none(), "duplicate series");
        }
    }
    m
}

fn histograms(
    out: &ExportMetricsServiceRequest,
    name: &str,
) -> BTreeMap<Labels, HistogramDataPoint> {
    let mut m = BTreeMap::new();
    for rm in &out.resource_metrics {
        let Some(metric::Data::Histogram(h)) = &metric(rm, name).data else {
            panic!("{name} is not an explicit histogram")
        };
        for p in &h.data_points {
            assert!(m.insert(labels(&p.attributes), p.clone()).is_none());
        }
    }
    m
}

fn bucket_of(value_s: f64) -> usize {
    DEFAULT_BOUNDS_SECONDS.partition_point(|b| *b < value_s)
}

/// Istio sidecar spans: every attribute a string, status UNSET, failures only in tags.
fn istio_reviews() -> ExportTraceServiceRequest {
    let route = "reviews.default.svc.cluster.local:9080/*";
    let ok = |ms| {
        span(
            route,
            SpanKind::Server,
            ms,
            vec![
                kv_str("http.status_code", "200"),
                kv_str("component", "proxy"),
                kv_str("response_flags", "-"),
                kv_str("istio.canonical_service", "reviews"),
            ],
        )
    };
    request(vec![
        resource_spans(
            vec![kv_str("service.name", "reviews.default")],
            vec![
                ok(5),
                ok(15),
                ok(30),
                // 503 with Envoy's error tag: a failure although the status is UNSET.
                span(
                    route,
                    SpanKind::Server,
                    100,
                    vec![kv_str("http.status_code", "503"), kv_str("error", "true")],
                ),
                // No response at all: status "0" and error=true.
                span(
                    route,
                    SpanKind::Server,
                    3,
                    vec![
                        kv_str("http.status_code", "0"),
                        kv_str("error", "true"),
                        kv_str("response_flags", "UF"),
                    ],
                ),
                // An SDK-style explicit status wins over tags.
                with_status(
                    span(
                        "ratings.default.svc.cluster.local:9080/*",
                        SpanKind::Client,
                        2,
                        vec![kv_str("http.status_code", "503")],
                    ),
                    StatusCode::Ok,
                ),
            ],
        ),
        resource_spans(
            vec![kv_str("service.name", "productpage.default")],
            vec![span(
                "productpage.default.svc.cluster.local:9080/productpage",
                SpanKind::Server,
                1500,
                vec![],
            )],
        ),
    ])
}

#[test]
fn envoy_spans_give_exact_series_with_tag_failures_as_errors() {
    let mut a = agg(json!({}));
    a.consume(&istio_reviews(), T0);
    let out = a.collect(T0 + 15 * SEC);

    // One resource per service, sorted, carrying only service.name.
    let services: Vec<_> = out
        .resource_metrics
        .iter()
        .map(|rm| labels(&rm.resource.as_ref().unwrap().attributes))
        .collect();
    assert_eq!(
        services,
        [
            l(&[("service.name", "productpage.default")]),
            l(&[("service.name", "reviews.default")])
        ]
    );
    let scope = out.resource_metrics[0].scope_metrics[0]
        .scope
        .as_ref()
        .unwrap();
    assert_eq!(scope.name, SCOPE_NAME);

    let route = "reviews.default.svc.cluster.local:9080/*";
    let series = |job: &str, name: &str, kind: &str, status: &str| {
        let mut k = l(&[
            ("service.name", job),
            ("span.name", name),
            ("span.kind", kind),
            ("status.code", status),
        ]);
        k.insert("job".into(), job.into());
        k
    };
    let want: BTreeMap<Labels, i64> = [
        (
            series(
                "reviews.default",
                route,
                "SPAN_KIND_SERVER",
                "STATUS_CODE_UNSET",
            ),
            3,
        ),
        (
            series(
                "reviews.default",
                route,
                "SPAN_KIND_SERVER",
                "STATUS_CODE_ERROR",
            ),
            2,
        ),
        (
            series(
                "reviews.default",
                "ratings.default.svc.cluster.local:9080/*",
                "SPAN_KIND_CLIENT",
                "STATUS_CODE_OK",
            ),
            1,
        ),
        (
            series(
                "productpage.default",
                "productpage.default.svc.cluster.local:9080/productpage",
                "SPAN_KIND_SERVER",
                "STATUS_CODE_UNSET",
            ),
            1,
        ),
    ]
    .into();
    assert_eq!(calls(&out, "traces.span.metrics.calls"), want);

    let rm = &out.resource_metrics[1];
    let m = metric(rm, "traces.span.metrics.calls");
    assert_eq!(m.unit, "{call}");
    let Some(metric::Data::Sum(s)) = &m.data else {
        panic!()
    };
    assert!(s.is_monotonic);
    assert_eq!(
        s.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    assert!(
        s.data_points
            .iter()
            .all(|p| p.start_time_unix_nano == T0 && p.time_unix_nano == T0 + 15 * SEC)
    );
    let d = metric(rm, "traces.span.metrics.duration");
    assert_eq!(d.unit, "s");

    let h = histograms(&out, "traces.span.metrics.duration");
    let ok = &h[&l(&[
        ("service.name", "reviews.default"),
        ("span.name", route),
        ("span.kind", "SPAN_KIND_SERVER"),
        ("status.code", "STATUS_CODE_UNSET"),
    ])];
    assert_eq!(ok.count, 3);
    assert!((ok.sum.unwrap() - 0.050).abs() < 1e-12);
    assert_eq!((ok.min, ok.max), (Some(0.005), Some(0.030)));
    assert_eq!(ok.explicit_bounds, DEFAULT_BOUNDS_SECONDS);
    let mut buckets = vec![0u64; DEFAULT_BOUNDS_SECONDS.len() + 1];
    for v in [0.005, 0.015, 0.030] {
        buckets[bucket_of(v)] += 1;
    }
    assert_eq!(ok.bucket_counts, buckets);
    assert_eq!(ok.bucket_counts[2], 1, "5ms is in (4ms, 6ms]");
    assert_eq!(ok.bucket_counts[5], 2, "15ms and 30ms are in (10ms, 50ms]");
    assert!(ok.exemplars.is_empty(), "exemplars are off by default");
    let err = &h[&l(&[
        ("service.name", "reviews.default"),
        ("span.name", route),
        ("span.kind", "SPAN_KIND_SERVER"),
        ("status.code", "STATUS_CODE_ERROR"),
    ])];
    assert_eq!((err.count, err.min, err.max), (2, Some(0.003), Some(0.1)));

    assert_eq!(
        a.stats(),
        Stats {
            spans: 7,
            series: 4,
            series_expired: 0,
            overflow_spans: 0
        }
    );
}

#[test]
fn dimensions_come_from_span_then_resource_then_default_else_are_left_out() {
    let mut a = agg(json!({"dimensions": [
        {"name": "http.method"},
        {"name": "http.status_code"},
        {"name": "k8s.cluster.name", "default": "unknown-cluster"},
        {"name": "deployment.environment"},
    ]}));
    let get = |code: Value| {
        span(
            "GET /cart",
            SpanKind::Server,
            10,
            vec![kv_str("http.method", "GET"), kv("http.status_code", code)],
        )
    };
    a.consume(
        &request(vec![
            resource_spans(
                vec![
                    kv_str("service.name", "cart"),
                    kv_str("deployment.environment", "prod"),
                ],
                vec![
                    // Envoy's string and an SDK's integer are one series.
                    get(Value::StringValue("200".into())),
                    get(Value::IntValue(200)),
                    get(Value::IntValue(404)),
                    // The span's own attribute beats the resource's.
                    span(
                        "GET /cart",
                        SpanKind::Server,
                        10,
                        vec![
                            kv_str("http.method", "GET"),
                            kv_str("http.status_code", "200"),
                            kv_str("deployment.environment", "canary"),
                            kv_str("k8s.cluster.name", "eu-1"),
                        ],
                    ),
                ],
            ),
            resource_spans(
                vec![kv_str("service.name", "cart")],
                vec![span("GET /cart", SpanKind::Server, 10, vec![])],
            ),
        ]),
        T0,
    );
    let out = a.collect(T0);
    let base = [
        ("service.name", "cart"),
        ("span.name", "GET /cart"),
        ("span.kind", "SPAN_KIND_SERVER"),
        ("status.code", "STATUS_CODE_UNSET"),
        ("job", "cart"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut k = l(&base);
        k.extend(l(extra));
        k
    };
    let want: BTreeMap<Labels, i64> = [
        (
            with(&[
                ("http.method", "GET"),
                ("http.status_code", "200"),
                ("k8s.cluster.name", "unknown-cluster"),
                ("deployment.environment", "prod"),
            ]),
            2,
        ),
        (
            with(&[
                ("http.method", "GET"),
                ("http.status_code", "404"),
                ("k8s.cluster.name", "unknown-cluster"),
                ("deployment.environment", "prod"),
            ]),
            1,
        ),
        (
            with(&[
                ("http.method", "GET"),
                ("http.status_code", "200"),
                ("k8s.cluster.name", "eu-1"),
                ("deployment.environment", "canary"),
            ]),
            1,
        ),
        // No attribute and no default: the label is left out; the default still applies.
        (with(&[("k8s.cluster.name", "unknown-cluster")]), 1),
    ]
    .into();
    assert_eq!(calls(&out, "traces.span.metrics.calls"), want);
    assert_eq!(
        out.resource_metrics.len(),
        1,
        "both resources are service `cart`"
    );
}

#[test]
fn delta_emits_only_what_happened_since_the_previous_flush() {
    let spans = |n: usize, name: &str| {
        service(
            "shop",
            (0..n)
                .map(|_| span(name, SpanKind::Server, 10, vec![]))
                .collect(),
        )
    };
    for delta in [false, true] {
        let temporality = if delta {
            "AGGREGATION_TEMPORALITY_DELTA"
        } else {
            "AGGREGATION_TEMPORALITY_CUMULATIVE"
        };
        let mut a = agg(json!({"aggregation_temporality": temporality}));
        a.consume(&spans(3, "a"), T0);
        a.consume(&spans(1, "b"), T0 + SEC);
        let first = a.collect(T0 + 15 * SEC);
        a.consume(&spans(2, "a"), T0 + 20 * SEC);
        let second = a.collect(T0 + 30 * SEC);
        let third = a.collect(T0 + 45 * SEC);

        let points = |out: &ExportMetricsServiceRequest| -> Vec<(String, i64, u64, u64, u64)> {
            if out.resource_metrics.is_empty() {
                return Vec::new();
            }
            let rm = &out.resource_metrics[0];
            let Some(metric::Data::Sum(s)) = &metric(rm, "traces.span.metrics.calls").data else {
                panic!()
            };
            assert_eq!(
                s.aggregation_temporality,
                if delta {
                    AggregationTemporality::Delta
                } else {
                    AggregationTemporality::Cumulative
                } as i32
            );
            let h = histograms(out, "traces.span.metrics.duration");
            let mut v: Vec<_> = s
                .data_points
                .iter()
                .map(|p| {
                    let name = labels(&p.attributes)["span.name"].clone();
                    let Some(number_data_point::Value::AsInt(c)) = p.value else {
                        panic!()
                    };
                    let hist = &h[&labels(&p.attributes)];
                    assert_eq!(hist.start_time_unix_nano, p.start_time_unix_nano);
                    (
                        name,
                        c,
                        hist.count,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                    )
                })
                .collect();
            v.sort();
            v
        };
        let (t15, t30, t45) = (T0 + 15 * SEC, T0 + 30 * SEC, T0 + 45 * SEC);
        assert_eq!(
            points(&first),
            [
                ("a".into(), 3, 3, T0, t15),
                ("b".into(), 1, 1, T0 + SEC, t15)
            ]
        );
        if delta {
            // Only `a` saw spans; its interval starts at the previous flush.
            assert_eq!(points(&second), [("a".into(), 2, 2, t15, t30)]);
            assert_eq!(points(&third), []);
            assert!(third.resource_metrics.is_empty());
        } else {
            // Running totals of every series since it was created.
            assert_eq!(
                points(&second),
                [
                    ("a".into(), 5, 5, T0, t30),
                    ("b".into(), 1, 1, T0 + SEC, t30)
                ]
            );
            assert_eq!(
                points(&third),
                [
                    ("a".into(), 5, 5, T0, t45),
                    ("b".into(), 1, 1, T0 + SEC, t45)
                ]
            );
        }
    }
}

#[test]
fn exponential_buckets_hold_every_duration() {
    let mut a = agg(json!({"histogram": {"unit": "ms", "exponential": {"max_size": 10}}}));
    let durations = [1u64, 10, 100, 1000, 0];
    a.consume(
        &service(
            "api",
            durations
                .iter()
                .map(|ms| span("op", SpanKind::Internal, *ms, vec![]))
                .collect(),
        ),
        T0,
    );
    let out = a.collect(T0);
    let m = metric(&out.resource_metrics[0], "traces.span.metrics.duration");
    assert_eq!(m.unit, "ms");
    let Some(metric::Data::ExponentialHistogram(h)) = &m.data else {
        panic!("{m:?}")
    };
    let p = &h.data_points[0];
    assert_eq!(labels(&p.attributes)["span.kind"], "SPAN_KIND_INTERNAL");
    assert_eq!((p.count, p.zero_count, p.sum), (5, 1, Some(1111.0)));
    assert_eq!((p.min, p.max), (Some(0.0), Some(1000.0)));
    let pos = p.positive.as_ref().unwrap();
    assert!(pos.bucket_counts.len() <= 10, "{pos:?}");
    assert_eq!(pos.bucket_counts.iter().sum::<u64>(), 4);
    for v in [1.0, 10.0, 100.0, 1000.0] {
        let i = bucket_index(v, p.scale) - pos.offset;
        assert_eq!(
            pos.bucket_counts[i as usize], 1,
            "{v}ms at scale {}",
            p.scale
        );
    }
    // 1ms is bucket -1 and 1000ms bucket 9 at scale 0: 11 buckets, one too many.
    assert_eq!(p.scale, -1, "the finest scale that fits 10 buckets");
}

#[test]
fn exemplars_carry_trace_and_span_ids_up_to_the_limit_per_flush() {
    let mut a = agg(json!({"exemplars": {"enabled": true, "max_per_data_point": 2}}));
    a.consume(
        &service(
            "api",
            vec![with_ids(span("op", SpanKind::Server, 20, vec![]), 7, 1)],
        ),
        T0,
    );
    let out = a.collect(T0);
    let p = histograms(&out, "traces.span.metrics.duration")
        .into_values()
        .next()
        .unwrap();
    assert_eq!(p.exemplars.len(), 1);
    let e = &p.exemplars[0];
    assert_eq!(e.trace_id, vec![7; 16]);
    assert_eq!(e.span_id, vec![1; 8]);
    assert_eq!(e.value, Some(exemplar::Value::AsDouble(0.020)));
    assert_eq!(e.time_unix_nano, T0 - 10 * SEC + 20 * MS);

    // Ten spans in the next interval: two exemplars, each one of those spans.
    let spans = (1..=10)
        .map(|i| with_ids(span("op", SpanKind::Server, i, vec![]), 9, i as u8))
        .collect();
    a.consume(&service("api", spans), T0 + SEC);
    let out = a.collect(T0 + 15 * SEC);
    let p = histograms(&out, "traces.span.metrics.duration")
        .into_values()
        .next()
        .unwrap();
    assert_eq!(p.count, 11, "cumulative");
    assert_eq!(p.exemplars.len(), 2);
    for e in &p.exemplars {
        assert_eq!(e.trace_id, vec![9; 16], "only spans of this interval");
        let id = e.span_id[0] as u64;
        assert!((1..=10).contains(&id));
        assert_eq!(e.span_id, vec![id as u8; 8]);
        assert_eq!(e.value, Some(exemplar::Value::AsDouble(id as f64 / 1000.0)));
    }
    assert_ne!(p.exemplars[0].span_id, p.exemplars[1].span_id);
    // Nothing new: the cumulative point stays, without exemplars.
    let out = a.collect(T0 + 30 * SEC);
    let p = histograms(&out, "traces.span.metrics.duration")
        .into_values()
        .next()
        .unwrap();
    assert_eq!((p.count, p.exemplars.len()), (11, 0));
}

#[test]
fn past_the_cardinality_limit_new_combinations_go_to_one_overflow_series_per_service() {
    let mut a = agg(json!({"aggregation_cardinality_limit": 2}));
    let op = |name: &str| span(name, SpanKind::Server, 10, vec![]);
    a.consume(
        &service(
            "x",
            vec![op("a"), op("b"), op("c"), op("d"), op("a"), op("c")],
        ),
        T0,
    );
    a.consume(&service("y", vec![op("a")]), T0);
    let out = a.collect(T0);
    let series = |job: &str, name: &str| {
        l(&[
            ("service.name", job),
            ("span.name", name),
            ("span.kind", "SPAN_KIND_SERVER"),
            ("status.code", "STATUS_CODE_UNSET"),
            ("job", job),
        ])
    };
    let overflow = |job: &str| {
        l(&[
            ("service.name", job),
            ("otel.metric.overflow", "true"),
            ("job", job),
        ])
    };
    let want: BTreeMap<Labels, i64> = [
        (series("x", "a"), 2),
        (series("x", "b"), 1),
        (overflow("x"), 3),
        (overflow("y"), 1),
    ]
    .into();
    assert_eq!(calls(&out, "traces.span.metrics.calls"), want);
    let h = histograms(&out, "traces.span.metrics.duration");
    assert_eq!(
        h[&l(&[("service.name", "x"), ("otel.metric.overflow", "true")])].count,
        3
    );
    assert_eq!(
        a.stats(),
        Stats {
            spans: 7,
            series: 4,
            series_expired: 0,
            overflow_spans: 4
        }
    );
}

#[test]
fn idle_series_expire_and_come_back_from_zero() {
    let mut a = agg(json!({"metrics_expiration": "5m", "aggregation_cardinality_limit": 1}));
    let op = |name: &str| span(name, SpanKind::Server, 10, vec![]);
    a.consume(&service("x", vec![op("a"), op("a")]), T0);
    a.consume(&service("x", vec![op("b")]), T0 + 60 * SEC);
    assert_eq!(a.collect(T0 + 60 * SEC).resource_metrics.len(), 1);
    assert_eq!(a.stats().series, 2, "`a` and the overflow series");
    // At 5m idle `a` is still emitted one last time, then removed; the overflow series
    // (last seen at +1m) stays.
    let out = a.collect(T0 + 300 * SEC);
    assert_eq!(calls(&out, "traces.span.metrics.calls").len(), 2);
    assert_eq!(
        a.stats(),
        Stats {
            spans: 3,
            series: 1,
            series_expired: 1,
            overflow_spans: 1
        }
    );
    // Room again under the limit: `b` gets its own series, starting now.
    a.consume(&service("x", vec![op("b")]), T0 + 310 * SEC);
    let out = a.collect(T0 + 320 * SEC);
    let rm = &out.resource_metrics[0];
    let Some(metric::Data::Sum(s)) = &metric(rm, "traces.span.metrics.calls").data else {
        panic!()
    };
    let b = s
        .data_points
        .iter()
        .find(|p| labels(&p.attributes).get("span.name").map(String::as_str) == Some("b"))
        .unwrap();
    assert_eq!(b.start_time_unix_nano, T0 + 310 * SEC);
    assert_eq!(b.value, Some(number_data_point::Value::AsInt(1)));
    // Everything idle: all gone, the resource too.
    let _ = a.collect(T0 + 3600 * SEC);
    assert_eq!(a.stats().series, 0);
    assert_eq!(a.stats().series_expired, 3);
    assert!(a.collect(T0 + 3601 * SEC).resource_metrics.is_empty());
    assert!(a.state.resources.iter().next().is_none());

    let mut never = agg(json!({"metrics_expiration": "0s"}));
    never.consume(&service("x", vec![op("a")]), T0);
    let _ = never.collect(T0 + 365 * 86_400 * SEC);
    assert_eq!(never.stats().series, 1);
}

#[test]
fn tempo_naming_uses_tempos_metric_and_label_names() {
    let mut a = agg(json!({"naming": "tempo", "dimensions": [{"name": "http.method"}]}));
    a.consume(
        &service(
            "checkout",
            vec![span(
                "POST /pay",
                SpanKind::Server,
                250,
                vec![kv_str("http.method", "POST"), kv_str("error", "true")],
            )],
        ),
        T0,
    );
    let out = a.collect(T0);
    let rm = &out.resource_metrics[0];
    assert_eq!(
        labels(&rm.resource.as_ref().unwrap().attributes),
        l(&[("service.name", "checkout")])
    );
    let c = metric(rm, "traces_spanmetrics_calls_total");
    let d = metric(rm, "traces_spanmetrics_latency");
    assert_eq!((c.unit.as_str(), d.unit.as_str()), ("", ""));
    let want: BTreeMap<Labels, i64> = [(
        l(&[
            ("service", "checkout"),
            ("span_name", "POST /pay"),
            ("span_kind", "SPAN_KIND_SERVER"),
            ("status_code", "STATUS_CODE_ERROR"),
            ("http.method", "POST"),
            ("job", "checkout"),
        ]),
        1,
    )]
    .into();
    assert_eq!(calls(&out, "traces_spanmetrics_calls_total"), want);
    let h = histograms(&out, "traces_spanmetrics_latency");
    assert_eq!(h.values().next().unwrap().sum, Some(0.25), "seconds");
}

#[test]
fn instance_id_is_on_every_series_including_overflow() {
    let cfg: SpanMetricsConfig = serde_json::from_value(json!({
        "include_instance_id": true,
        "aggregation_cardinality_limit": 1,
    }))
    .unwrap();
    let env = |k: &str| (k == "HOSTNAME").then(|| "meshgate-7f9c".to_string());
    let mut a = SpanMetrics::with_settings(cfg.resolve(env, || None).unwrap());
    let op = |name: &str| span(name, SpanKind::Server, 10, vec![]);
    a.consume(&service("x", vec![op("a"), op("b")]), T0);
    let out = a.collect(T0);
    let c = calls(&out, "traces.span.metrics.calls");
    assert_eq!(c.len(), 2);
    for k in c.keys() {
        assert_eq!(k["meshgate.instance.id"], "meshgate-7f9c", "{k:?}");
    }
    for k in histograms(&out, "traces.span.metrics.duration").keys() {
        assert_eq!(k["meshgate.instance.id"], "meshgate-7f9c", "{k:?}");
    }
}

#[test]
fn excluded_builtins_merge_series_and_leave_the_label_out() {
    let mut a = agg(json!({"exclude_dimensions": ["span.name", "status.code"]}));
    a.consume(
        &service(
            "x",
            vec![
                span("GET /a", SpanKind::Server, 10, vec![]),
                span(
                    "GET /b",
                    SpanKind::Server,
                    10,
                    vec![kv_str("error", "true")],
                ),
                span("GET /c", SpanKind::Client, 10, vec![]),
            ],
        ),
        T0,
    );
    let out = a.collect(T0);
    let want: BTreeMap<Labels, i64> = [
        (
            l(&[
                ("service.name", "x"),
                ("span.kind", "SPAN_KIND_SERVER"),
                ("job", "x"),
            ]),
            2,
        ),
        (
            l(&[
                ("service.name", "x"),
                ("span.kind", "SPAN_KIND_CLIENT"),
                ("job", "x"),
            ]),
            1,
        ),
    ]
    .into();
    assert_eq!(calls(&out, "traces.span.metrics.calls"), want);
}

#[test]
fn key_attributes_split_resources_and_missing_service_is_unknown() {
    let mut a = agg(json!({
        "resource_metrics_key_attributes": ["service.namespace"],
        "histogram": {"disable": true},
    }));
    let op = || vec![span("op", SpanKind::Server, 10, vec![])];
    a.consume(
        &request(vec![
            resource_spans(
                vec![
                    kv_str("service.name", "api"),
                    kv_str("service.namespace", "blue"),
                ],
                op(),
            ),
            resource_spans(
                vec![
                    kv_str("service.name", "api"),
                    kv_str("service.namespace", "green"),
                ],
                op(),
            ),
            resource_spans(vec![kv_str("service.name", "api")], op()),
            resource_spans(vec![], op()),
            resource_spans(vec![kv_str("service.name", "")], op()),
        ]),
        T0,
    );
    let out = a.collect(T0);
    let resources: Vec<Labels> = out
        .resource_metrics
        .iter()
        .map(|rm| labels(&rm.resource.as_ref().unwrap().attributes))
        .collect();
    assert_eq!(
        resources,
        [
            l(&[("service.name", "api")]),
            l(&[("service.name", "api"), ("service.namespace", "blue")]),
            l(&[("service.name", "api"), ("service.namespace", "green")]),
            l(&[("service.name", "unknown_service")]),
        ]
    );
    for rm in &out.resource_metrics {
        assert_eq!(rm.scope_metrics[0].metrics.len(), 1, "histogram disabled");
    }
    let unknown = &out.resource_metrics[3];
    let Some(metric::Data::Sum(s)) = &metric(unknown, "traces.span.metrics.calls").data else {
        panic!()
    };
    assert_eq!(
        s.data_points[0].value,
        Some(number_data_point::Value::AsInt(2))
    );
}

#[test]
fn milliseconds_unit_and_custom_buckets() {
    let mut a =
        agg(json!({"histogram": {"unit": "ms", "explicit": {"buckets": ["10ms", "100ms"]}}}));
    a.consume(
        &service(
            "x",
            [5, 10, 50, 500]
                .into_iter()
                .map(|ms| span("op", SpanKind::Server, ms, vec![]))
                .collect(),
        ),
        T0,
    );
    let out = a.collect(T0);
    let m = metric(&out.resource_metrics[0], "traces.span.metrics.duration");
    assert_eq!(m.unit, "ms");
    let p = histograms(&out, "traces.span.metrics.duration")
        .into_values()
        .next()
        .unwrap();
    assert_eq!(p.explicit_bounds, [10.0, 100.0]);
    assert_eq!(p.bucket_counts, [2, 1, 1]);
    assert_eq!(p.sum, Some(565.0));
}

#[test]
fn spans_ending_before_they_start_count_as_zero_duration() {
    let mut a = agg(json!({}));
    let mut s = span("op", SpanKind::Server, 0, vec![]);
    s.end_time_unix_nano = s.start_time_unix_nano - 5;
    a.consume(&service("x", vec![s]), T0);
    let p = histograms(&a.collect(T0), "traces.span.metrics.duration")
        .into_values()
        .next()
        .unwrap();
    assert_eq!((p.count, p.sum, p.bucket_counts[0]), (1, Some(0.0), 1));
}

#[test]
fn lookups_verify_values_not_just_hashes() {
    // Force every series into one hash chain: the table must still tell them apart.
    let mut t: Table<&str> = Table::default();
    let a = t.insert(7, "a");
    let b = t.insert(7, "b");
    let c = t.insert(7, "c");
    assert_eq!(t.find(7, |v| *v == "a"), Some(a));
    assert_eq!(t.find(7, |v| *v == "b"), Some(b));
    assert_eq!(t.find(8, |v| *v == "a"), None);
    assert_eq!(t.remove(b), "b");
    assert_eq!(t.find(7, |v| *v == "b"), None);
    assert_eq!(t.find(7, |v| *v == "c"), Some(c));
    assert_eq!(t.find(7, |v| *v == "a"), Some(a));
    assert_eq!(t.remove(c), "c");
    assert_eq!(t.remove(a), "a");
    assert!(t.heads.is_empty());
    assert!(t.insert(9, "d") <= a.max(b).max(c), "slots are reused");
    assert_eq!(t.len, 1);
}

#[test]
fn head_sampled_spans_count_with_their_adjusted_count() {
    let mut a = agg(json!({}));
    let mut sampled = span("GET", SpanKind::Server, 5, vec![]);
    sampled.trace_state = "vendor=1,ot=th:c".into(); // kept at 25 %: stands for 4
    let plain = span("GET", SpanKind::Server, 5, vec![]);
    a.consume(&service("api", vec![sampled, plain]), T0);
    let out = a.collect(T0 + SEC);
    let c = calls(&out, "traces.span.metrics.calls");
    assert_eq!(
        c.values().sum::<i64>(),
        5,
        "4 for the sampled span, 1 for the other"
    );
    let h = histograms(&out, "traces.span.metrics.duration");
    assert_eq!(h.values().map(|p| p.count).sum::<u64>(), 5);
}
