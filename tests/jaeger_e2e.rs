//! End-to-end against a real Jaeger v2 (started by `scripts/peers/services.sh`): spans sent
//! to meshgate over OTLP come back from Jaeger's query API with the same trace id, services,
//! operation names, kinds, tags, references and logs, through both protocols of the `jaeger`
//! exporter (OTLP to a v2 collector, and the native `api_v2` gRPC collector).

mod common;

use common::*;
use meshgate_pdata::attributes::{kv, kv_str};
use meshgate_pdata::otlp::any_value::Value;
use meshgate_pdata::otlp::*;
use serde_json::Value as Json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A three-span mesh trace: ingress SERVER → CLIENT call (error) → a linked INTERNAL span.
fn trace(service: &str, seed: u8) -> (Vec<u8>, ExportTraceServiceRequest) {
    let trace_id: Vec<u8> = (0..16)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect();
    let id = |n: u8| vec![seed, n, 0xab, 0xcd, 1, 2, 3, n];
    let t0 = now_ns() - 5_000_000_000;
    let root = Span {
        trace_id: trace_id.clone(),
        span_id: id(1),
        name: "productpage.default.svc.cluster.local:9080/*".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: t0,
        end_time_unix_nano: t0 + 40_000_000,
        attributes: vec![
            kv_str("http.method", "GET"),
            kv_str("http.status_code", "200"),
            kv_str("upstream_cluster", "inbound|9080||"),
            kv("retries", Value::IntValue(2)),
            kv(
                "mg.tags",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(Value::StringValue("a".into())),
                        },
                        AnyValue {
                            value: Some(Value::StringValue("b".into())),
                        },
                    ],
                }),
            ),
        ],
        events: vec![span::Event {
            time_unix_nano: t0 + 1_000_000,
            name: "request.received".into(),
            attributes: vec![kv_str("size", "512")],
            ..Default::default()
        }],
        ..Default::default()
    };
    let client = Span {
        trace_id: trace_id.clone(),
        span_id: id(2),
        parent_span_id: id(1),
        name: "reviews.default.svc.cluster.local:9080/*".into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: t0 + 2_000_000,
        end_time_unix_nano: t0 + 30_000_000,
        attributes: vec![
            kv_str("http.status_code", "503"),
            kv_str("response_flags", "UH"),
        ],
        status: Some(Status {
            code: status::StatusCode::Error as i32,
            message: "upstream unhealthy".into(),
        }),
        ..Default::default()
    };
    let linked = Span {
        trace_id: trace_id.clone(),
        span_id: id(3),
        parent_span_id: id(1),
        name: "render".into(),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: t0 + 31_000_000,
        end_time_unix_nano: t0 + 39_000_000,
        links: vec![span::Link {
            trace_id: trace_id.clone(),
            span_id: id(2),
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", service),
                    kv_str("k8s.namespace.name", "default"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "envoy".into(),
                    version: "1.31".into(),
                    ..Default::default()
                }),
                spans: vec![root, client, linked],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (trace_id, req)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Polls Jaeger's query API until the trace has `spans` spans.
fn fetch_trace(query: &str, trace_id: &str, spans: usize) -> Json {
    let start = Instant::now();
    loop {
        if let Ok((200, body)) = http_get_url(&format!("{query}/api/traces/{trace_id}")) {
            let v: Json = serde_json::from_str(&body).expect("Jaeger JSON");
            if v["data"][0]["spans"].as_array().map(Vec::len) == Some(spans) {
                return v["data"][0].clone();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "trace {trace_id} did not show up in Jaeger with {spans} spans"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tag<'a>(span: &'a Json, key: &str) -> Option<&'a Json> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

fn check_trace(t: &Json, service: &str, trace_id: &str) {
    let spans = t["spans"].as_array().unwrap();
    let by_op = |op: &str| {
        spans
            .iter()
            .find(|s| s["operationName"] == op)
            .unwrap_or_else(|| panic!("no span `{op}` in {t}"))
    };
    for s in spans {
        assert_eq!(s["traceID"], trace_id);
        let pid = s["processID"].as_str().unwrap();
        assert_eq!(t["processes"][pid]["serviceName"], service, "{t}");
    }
    let root = by_op("productpage.default.svc.cluster.local:9080/*");
    let client = by_op("reviews.default.svc.cluster.local:9080/*");
    let render = by_op("render");
    assert_eq!(tag(root, "span.kind"), Some(&Json::from("server")));
    assert_eq!(tag(root, "http.status_code"), Some(&Json::from("200")));
    assert_eq!(tag(root, "retries"), Some(&Json::from(2)));
    assert_eq!(tag(root, "mg.tags"), Some(&Json::from(r#"["a","b"]"#)));
    assert_eq!(tag(root, "otel.scope.name"), Some(&Json::from("envoy")));
    let logs = root["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1, "{root}");
    assert!(
        logs[0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["value"] == "request.received")
    );
    assert_eq!(tag(client, "span.kind"), Some(&Json::from("client")));
    assert_eq!(tag(client, "error"), Some(&Json::from(true)));
    assert_eq!(tag(client, "otel.status_code"), Some(&Json::from("ERROR")));
    assert_eq!(
        tag(client, "otel.status_description"),
        Some(&Json::from("upstream unhealthy"))
    );
    let parent = &client["references"][0];
    assert_eq!(parent["refType"], "CHILD_OF");
    assert_eq!(parent["spanID"], root["spanID"]);
    let refs = render["references"].as_array().unwrap();
    assert!(
        refs.iter()
            .any(|r| r["refType"] == "CHILD_OF" && r["spanID"] == root["spanID"]),
        "{render}"
    );
    assert!(
        refs.iter()
            .any(|r| r["refType"] == "FOLLOWS_FROM" && r["spanID"] == client["spanID"]),
        "{render}"
    );
    let process = &t["processes"][root["processID"].as_str().unwrap()];
    assert!(
        process["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "k8s.namespace.name" && t["value"] == "default"),
        "{process}"
    );
}

#[test]
fn traces_reach_jaeger_over_otlp_and_the_native_collector_protocol() {
    let Some(otlp) = service("MESHGATE_JAEGER_OTLP_GRPC", "Jaeger (OTLP gRPC)") else {
        return;
    };
    let Some(native) = service(
        "MESHGATE_JAEGER_COLLECTOR_GRPC",
        "Jaeger (api_v2 collector gRPC)",
    ) else {
        return;
    };
    let Some(query) = service("MESHGATE_JAEGER_QUERY", "Jaeger (query)") else {
        return;
    };
    let dir = Scratch::new("jaeger");
    let (in_otlp, in_native) = (free_port(), free_port());
    let cfg = format!(
        "receivers:\n  otlp/a:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{in_otlp}\n  otlp/b:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{in_native}\n\
         processors:\n  batch:\n    timeout: 50ms\n\
         exporters:\n  jaeger/otlp:\n    endpoint: {otlp}\n    protocol: otlp\n  jaeger/native:\n    endpoint: {native}\n    protocol: grpc\n\
         service:\n  pipelines:\n    traces/a:\n      receivers: [otlp/a]\n      processors: [batch]\n      exporters: [jaeger/otlp]\n    traces/b:\n      receivers: [otlp/b]\n      processors: [batch]\n      exporters: [jaeger/native]\n"
    );
    let mut gw = Gateway::start(&dir, "gw", &cfg);
    let run = std::process::id() as u8;
    let (id_a, req_a) = trace(&format!("mg-otlp-{run}"), run);
    let (id_b, req_b) = trace(&format!("mg-native-{run}"), run.wrapping_add(1));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (port, req) in [(in_otlp, req_a), (in_native, req_b)] {
            let mut c = grpc::TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .unwrap();
            c.export(req).await.unwrap();
        }
    });
    let m = gw.wait_metrics(Duration::from_secs(20), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "jaeger/otlp")],
        ) >= 3.0
            && m.sum(
                "meshgate_exporter_sent_items_total",
                &[("exporter", "jaeger/native")],
            ) >= 3.0
    });
    assert_eq!(m.sum("meshgate_exporter_dropped_items_total", &[]), 0.0);
    check_trace(
        &fetch_trace(&query, &hex(&id_a), 3),
        &format!("mg-otlp-{run}"),
        &hex(&id_a),
    );
    check_trace(
        &fetch_trace(&query, &hex(&id_b), 3),
        &format!("mg-native-{run}"),
        &hex(&id_b),
    );
    assert!(gw.stop().success());
}
