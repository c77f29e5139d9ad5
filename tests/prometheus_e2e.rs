//! End-to-end against a real Prometheus 2.42 with `--web.enable-remote-write-receiver`
//! (started by `scripts/peers/services.sh`, `MESHGATE_PROMETHEUS_URL`): OTLP metrics sent to
//! meshgate — a monotonic cumulative sum, a delta sum in three exports, a gauge, a histogram
//! and a summary — come back from `/api/v1/query` with the Prometheus names, labels and values
//! (the delta sum accumulated), `target_info` included; the `prometheus` scrape exporter of
//! the same gateway serves the same series (text and OpenMetrics); meshgate counts every point
//! as sent; and an out-of-order sample refused by Prometheus (400) is dropped and counted once,
//! not retried.

mod common;

use common::*;
use meshgate_pdata::attributes::kv_str;
use meshgate_pdata::otlp::*;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The instant vector of `query`, polling until it has `want` series.
fn query(url: &str, q: &str, want: usize) -> Vec<(BTreeMap<String, String>, f64)> {
    let start = Instant::now();
    loop {
        let (status, body) = http_get_url(&format!(
            "{}/api/v1/query?query={}",
            url.trim_end_matches('/'),
            encode(q)
        ))
        .expect("query Prometheus");
        let v: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
        let result: Vec<(BTreeMap<String, String>, f64)> = v["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| {
                        let labels = s["metric"]
                            .as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                            .collect();
                        let value = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                        (labels, value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if status == 200 && result.len() >= want {
            assert_eq!(result.len(), want, "{q}: {body}");
            return result;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{q}: wanted {want} series, last answer {status}: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn value(url: &str, q: &str) -> f64 {
    query(url, q, 1)[0].1
}

fn number(v: f64, t: u64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: t - 60_000_000_000,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn sum_metric(name: &str, unit: &str, delta: bool, p: NumberDataPoint) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("{name} (e2e)"),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![p],
            aggregation_temporality: if delta { 1 } else { 2 },
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "meshgate-e2e".into(),
                    version: "0.1".into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The `step`-th export (0, 1, 2) at time `t`: every step carries the cumulative sum, one
/// delta of the delta sum and the gauge; step 0 also the histogram and the summary.
fn export_step(step: usize, t: u64, instance: &str) -> ExportMetricsServiceRequest {
    let attrs = || vec![kv_str("http.route", "/cart")];
    let mut metrics = vec![
        sum_metric(
            "mesh.requests",
            "{request}",
            false,
            number([10.0, 20.0, 42.0][step], t, attrs()),
        ),
        sum_metric(
            "mesh.sent",
            "By",
            true,
            number([100.0, 50.0, 25.0][step], t, attrs()),
        ),
        Metric {
            name: "mesh.connections.active".into(),
            unit: "{connection}".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![number([5.0, 9.0, 7.0][step], t, attrs())],
            })),
            ..Default::default()
        },
    ];
    if step == 0 {
        metrics.push(Metric {
            name: "mesh.request.duration".into(),
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attrs(),
                    start_time_unix_nano: t - 60_000_000_000,
                    time_unix_nano: t,
                    count: 6,
                    sum: Some(2.5),
                    bucket_counts: vec![3, 2, 1, 0],
                    explicit_bounds: vec![0.1, 0.5, 1.0],
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        });
        metrics.push(summary_metric(t));
    }
    request(
        vec![
            kv_str("service.name", "checkout"),
            kv_str("service.namespace", "shop"),
            kv_str("service.instance.id", instance),
            kv_str("k8s.pod.name", "checkout-abc"),
        ],
        metrics,
    )
}

/// A summary (its point type is not re-exported by meshgate-pdata, so it is built from
/// OTLP/JSON).
fn summary_metric(t: u64) -> Metric {
    let json = serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "mesh.gc.pause",
        "unit": "ms",
        "summary": {"dataPoints": [{
            "startTimeUnixNano": (t - 60_000_000_000).to_string(),
            "timeUnixNano": t.to_string(),
            "count": "10",
            "sum": 123.0,
            "quantileValues": [{"quantile": 0.5, "value": 10.0}, {"quantile": 0.99, "value": 40.0}]
        }]}
    }]}]}]});
    match meshgate_pdata::json::decode(meshgate_pdata::Signal::Metrics, json.to_string().as_bytes())
        .expect("OTLP/JSON summary")
    {
        meshgate_pdata::Payload::Metrics(mut m) => {
            m.resource_metrics[0].scope_metrics[0].metrics.remove(0)
        }
        _ => unreachable!(),
    }
}

fn send(grpc: u16, reqs: Vec<ExportMetricsServiceRequest>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = grpc::MetricsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap();
        for r in reqs {
            c.export(r).await.unwrap();
        }
    });
}

#[test]
fn otlp_metrics_reach_prometheus_by_remote_write_and_scrape() {
    let Some(url) = service("MESHGATE_PROMETHEUS_URL", "Prometheus") else {
        return;
    };
    let url = url.trim_end_matches('/').to_string();
    let run = format!("mg{}x{}", std::process::id(), now_ns() % 1_000_000_000);
    let instance = format!("pod-{run}");
    let (grpc, scrape) = (free_port(), free_port());
    let dir = Scratch::new("prometheus-e2e");
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n\
         exporters:\n  prometheusremotewrite:\n    endpoint: {url}/api/v1/write\n    external_labels:\n      e2e_run: {run}\n    remote_write_queue:\n      num_consumers: 3\n    retry_on_failure:\n      initial_interval: 100ms\n      max_interval: 300ms\n      max_elapsed_time: 20s\n\
         \x20 prometheus:\n    endpoint: 127.0.0.1:{scrape}\n    const_labels:\n      e2e_run: {run}\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      exporters: [prometheusremotewrite, prometheus]\n"
    );
    let gw = Gateway::start(&dir, "prometheus", &cfg);

    // Three exports 10s apart, in the last 30s (Prometheus refuses samples too far back).
    let t0 = now_ns() - 30_000_000_000;
    let times: Vec<u64> = (0..3).map(|i| t0 + i * 10_000_000_000).collect();
    send(
        grpc,
        times
            .iter()
            .enumerate()
            .map(|(i, t)| export_step(i, *t, &instance))
            .collect(),
    );
    // 5 points in the first export, 3 in each of the other two.
    let sent = |m: &Metrics, exporter: &str| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", exporter), ("signal", "metrics")],
        )
    };
    let m = gw.wait_metrics(Duration::from_secs(30), |m| {
        sent(m, "prometheusremotewrite") >= 11.0 && sent(m, "prometheus") >= 11.0
    });
    assert_eq!(sent(&m, "prometheusremotewrite"), 11.0, "{}", m.text);
    assert_eq!(sent(&m, "prometheus"), 11.0);
    assert_eq!(
        m.sum(
            "meshgate_exporter_dropped_items_total",
            &[("exporter", "prometheusremotewrite")]
        ),
        0.0,
        "{}",
        gw.log_text()
    );

    // Back from Prometheus.
    let sel = format!("{{e2e_run=\"{run}\"}}");
    let counter = query(&url, &format!("mesh_requests_total{sel}"), 1);
    let (labels, v) = &counter[0];
    assert_eq!(*v, 42.0);
    for (k, want) in [
        ("job", "shop/checkout"),
        ("instance", instance.as_str()),
        ("otel_scope_name", "meshgate-e2e"),
        ("otel_scope_version", "0.1"),
        ("http_route", "/cart"),
        ("e2e_run", run.as_str()),
    ] {
        assert_eq!(
            labels.get(k).map(String::as_str),
            Some(want),
            "{k}: {labels:?}"
        );
    }
    // Not on the series: it is on target_info.
    assert!(!labels.contains_key("k8s_pod_name"));
    // The delta sum, accumulated over the three exports: 100 + 50 + 25.
    assert_eq!(value(&url, &format!("mesh_sent_bytes_total{sel}")), 175.0);
    // Each step of the accumulation landed with its own timestamp, in order.
    let range = value(
        &url,
        &format!("count_over_time(mesh_sent_bytes_total{sel}[2m])"),
    );
    assert_eq!(range, 3.0);
    assert_eq!(
        value(
            &url,
            &format!(
                "max_over_time(mesh_sent_bytes_total{sel}[2m]) - min_over_time(mesh_sent_bytes_total{sel}[2m])"
            )
        ),
        75.0
    );
    assert_eq!(value(&url, &format!("mesh_connections_active{sel}")), 7.0);
    let buckets = query(
        &url,
        &format!("mesh_request_duration_seconds_bucket{sel}"),
        4,
    );
    let by_le: BTreeMap<&str, f64> = buckets
        .iter()
        .map(|(l, v)| (l["le"].as_str(), *v))
        .collect();
    assert_eq!(
        by_le,
        BTreeMap::from([("+Inf", 6.0), ("0.1", 3.0), ("0.5", 5.0), ("1", 6.0)])
    );
    assert_eq!(
        value(&url, &format!("mesh_request_duration_seconds_sum{sel}")),
        2.5
    );
    assert_eq!(
        value(&url, &format!("mesh_request_duration_seconds_count{sel}")),
        6.0
    );
    let p = value(
        &url,
        &format!("histogram_quantile(0.75, mesh_request_duration_seconds_bucket{sel})"),
    );
    // Rank 4.5 of 6 falls in (0.1, 0.5] holding 2: 0.1 + 0.4 * 1.5 / 2.
    assert!((p - 0.4).abs() < 1e-9, "{p}");
    assert_eq!(
        value(
            &url,
            &format!("mesh_gc_pause_milliseconds{{e2e_run=\"{run}\",quantile=\"0.99\"}}")
        ),
        40.0
    );
    assert_eq!(
        value(&url, &format!("mesh_gc_pause_milliseconds_count{sel}")),
        10.0
    );
    let info = query(&url, &format!("target_info{sel}"), 1);
    assert_eq!(info[0].1, 1.0);
    assert_eq!(info[0].0["k8s_pod_name"], "checkout-abc");
    assert_eq!(info[0].0["job"], "shop/checkout");
    assert_eq!(info[0].0["instance"], instance);

    // The scrape exporter serves the same current values.
    let (status, body) = http_get(scrape, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    let s = Metrics::parse(&body);
    let l = [("e2e_run", run.as_str()), ("job", "shop/checkout")];
    assert_eq!(s.sum("mesh_requests_total", &l), 42.0, "{body}");
    assert_eq!(s.sum("mesh_sent_bytes_total", &l), 175.0);
    assert_eq!(s.sum("mesh_connections_active", &l), 7.0);
    assert_eq!(
        s.sum(
            "mesh_request_duration_seconds_bucket",
            &[l[0], ("le", "0.5")]
        ),
        5.0
    );
    assert_eq!(s.sum("mesh_request_duration_seconds_count", &l), 6.0);
    assert_eq!(
        s.sum("mesh_gc_pause_milliseconds", &[l[0], ("quantile", "0.99")]),
        40.0
    );
    assert_eq!(
        s.sum("target_info", &[l[0], ("k8s_pod_name", "checkout-abc")]),
        1.0
    );
    assert!(body.contains("# TYPE mesh_requests_total counter"));
    let (status, headers, om) = http_request(
        scrape,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
        &[],
    )
    .unwrap();
    let om = String::from_utf8(om).unwrap();
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("application/openmetrics-text"));
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE mesh_requests counter\n"), "{om}");

    // An out-of-order sample: Prometheus answers 400, the point is dropped once (counted as
    // a permanent error), not retried.
    let stale_time = times[0] - 5_000_000_000;
    let mut late = export_step(1, stale_time, &instance);
    late.resource_metrics[0].scope_metrics[0]
        .metrics
        .truncate(3);
    // Only the gauge (a cumulative value the exporter passes through as is).
    late.resource_metrics[0].scope_metrics[0]
        .metrics
        .drain(0..2);
    late.resource_metrics[0].resource = Some(Resource {
        attributes: vec![
            kv_str("service.name", "checkout"),
            kv_str("service.namespace", "shop"),
            kv_str("service.instance.id", &instance),
        ],
        ..Default::default()
    });
    send(grpc, vec![late]);
    let dropped = |m: &Metrics| {
        m.sum(
            "meshgate_exporter_dropped_items_total",
            &[
                ("exporter", "prometheusremotewrite"),
                ("reason", "permanent_error"),
            ],
        )
    };
    let m = gw.wait_metrics(Duration::from_secs(30), |m| dropped(m) >= 1.0);
    assert_eq!(dropped(&m), 1.0);
    assert_eq!(sent(&m, "prometheusremotewrite"), 11.0);
    std::thread::sleep(Duration::from_millis(500));
    let m = gw.metrics();
    assert_eq!(
        m.sum(
            "meshgate_exporter_send_failures_total",
            &[("exporter", "prometheusremotewrite")]
        ),
        0.0,
        "a 400 is not retried"
    );
    let log = gw.log_text();
    assert!(log.contains("out of order"), "{log}");
    // The value in Prometheus is unchanged.
    assert_eq!(value(&url, &format!("mesh_connections_active{sel}")), 7.0);
}
