//! End-to-end against real OpenSearch 2.19 and Elasticsearch 8.x (started by
//! `scripts/peers/services.sh`): traces and logs sent to meshgate come back from `_search`
//! with the expected fields in every mapping mode (`otel`, `ecs`, `dataprepper`); in one bulk
//! request, items the server refuses (a mapping conflict) are dropped and counted per reason,
//! items it throttles (429) are the only ones resent, and the rest land exactly once.

mod common;

use common::*;
use meshgate_pdata::attributes::kv_str;
use meshgate_pdata::otlp::*;
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// POST a JSON body; returns status and parsed body.
fn post_json(url: &str, path: &str, body: &Json) -> (u16, Json) {
    let (s, _, b) = http_request(
        port_of(url),
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .expect("request to the search server");
    (s, serde_json::from_slice(&b).unwrap_or(Json::Null))
}

/// Documents of `index` whose `field` equals `value`, polling until there are `want`.
fn search(url: &str, index: &str, field: &str, value: &str, want: usize) -> Vec<Json> {
    let start = Instant::now();
    loop {
        let _ = post_json(url, &format!("/{index}/_refresh"), &json!({}));
        let (s, v) = post_json(
            url,
            &format!("/{index}/_search"),
            &json!({"size": 100, "query": {"term": {field: value}}}),
        );
        let hits: Vec<Json> = v["hits"]["hits"]
            .as_array()
            .map(|h| h.iter().map(|x| x["_source"].clone()).collect())
            .unwrap_or_default();
        if s == 200 && hits.len() >= want {
            assert_eq!(
                hits.len(),
                want,
                "too many documents in {index} for {field}={value}"
            );
            return hits;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{index}: wanted {want} documents with {field}={value}, last answer {s}: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A field by dotted path, whether the document nests it or keeps the dotted key.
fn field<'a>(doc: &'a Json, path: &str) -> &'a Json {
    if let Some(v) = doc.get(path) {
        return v;
    }
    let mut cur = doc;
    let parts: Vec<&str> = path.split('.').collect();
    let mut i = 0;
    while i < parts.len() {
        // Try the longest dotted key first: `attributes` → `http.status_code`.
        let mut found = None;
        for j in (i + 1..=parts.len()).rev() {
            if let Some(v) = cur.get(parts[i..j].join(".")) {
                found = Some((v, j));
                break;
            }
        }
        match found {
            Some((v, j)) => {
                cur = v;
                i = j;
            }
            None => return &Json::Null,
        }
    }
    cur
}

struct Sent {
    trace_id: String,
    root_name: String,
}

fn send(grpc: u16, service: &str, dataset: &str, seed: u8) -> Sent {
    let trace_id: Vec<u8> = (0..16)
        .map(|i| seed.wrapping_mul(17).wrapping_add(i * 3 + 1))
        .collect();
    let id = |n: u8| vec![seed, n, 9, 9, 9, 9, 9, n];
    let t0 = now_ns() - 2_000_000_000;
    let resource = Some(Resource {
        attributes: vec![
            kv_str("service.name", service),
            kv_str("data_stream.dataset", dataset),
            kv_str("host.name", "node-1"),
        ],
        ..Default::default()
    });
    let span =
        |n: u8, parent: Option<u8>, name: &str, kind: span::SpanKind, code: i32, status: &str| {
            Span {
                trace_id: trace_id.clone(),
                span_id: id(n),
                parent_span_id: parent.map(id).unwrap_or_default(),
                name: name.into(),
                kind: kind as i32,
                start_time_unix_nano: t0 + n as u64 * 1_000_000,
                end_time_unix_nano: t0 + 40_000_000,
                attributes: vec![
                    kv_str("http.method", "GET"),
                    kv_str("http.status_code", status),
                ],
                status: Some(Status {
                    code,
                    message: String::new(),
                }),
                ..Default::default()
            }
        };
    let traces = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource.clone(),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(1, None, "GET /reviews", span::SpanKind::Server, 1, "200"),
                    span(2, Some(1), "GET ratings", span::SpanKind::Client, 2, "503"),
                    span(3, Some(1), "render", span::SpanKind::Internal, 0, "200"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs {
                log_records: (0..4)
                    .map(|i| LogRecord {
                        time_unix_nano: t0 + i * 1000,
                        severity_number: if i % 2 == 0 { 9 } else { 17 },
                        severity_text: if i % 2 == 0 { "INFO" } else { "ERROR" }.into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!(
                                "[{service}] access log {i}"
                            ))),
                        }),
                        attributes: vec![kv_str("http.method", "GET")],
                        trace_id: trace_id.clone(),
                        span_id: id(1),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ep = format!("http://127.0.0.1:{grpc}");
        grpc::TraceServiceClient::connect(ep.clone())
            .await
            .unwrap()
            .export(traces)
            .await
            .unwrap();
        grpc::LogsServiceClient::connect(ep)
            .await
            .unwrap()
            .export(logs)
            .await
            .unwrap();
    });
    Sent {
        trace_id: hex(&trace_id),
        root_name: "GET /reviews".into(),
    }
}

fn every_mapping_mode(url: &str, backend: &str) {
    let dir = Scratch::new(&format!("es-{backend}"));
    let grpc = free_port();
    let run = format!("mg{}{}", backend.len(), std::process::id());
    let exporters: String = ["otel", "ecs", "dataprepper"]
        .iter()
        .map(|m| {
            format!(
                "  elasticsearch/{m}:\n    endpoints: [{url}]\n    mapping:\n      mode: {m}\n    create_templates: true\n    retry_on_failure:\n      initial_interval: 200ms\n"
            )
        })
        .collect();
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n\
         processors:\n  batch:\n    timeout: 50ms\n\
         exporters:\n{exporters}\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [elasticsearch/otel, elasticsearch/ecs, elasticsearch/dataprepper]\n    logs:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [elasticsearch/otel, elasticsearch/ecs, elasticsearch/dataprepper]\n"
    );
    let mut gw = Gateway::start(&dir, "gw", &cfg);
    let service = format!("reviews-{run}");
    let sent = send(
        grpc,
        &service,
        &run,
        (std::process::id() % 200) as u8 + backend.len() as u8,
    );
    let m = gw.wait_metrics(Duration::from_secs(30), |m| {
        ["otel", "ecs", "dataprepper"].iter().all(|mode| {
            m.sum(
                "meshgate_exporter_sent_items_total",
                &[("exporter", &format!("elasticsearch/{mode}"))],
            ) >= 7.0
        })
    });
    assert_eq!(
        m.sum("meshgate_exporter_dropped_items_total", &[]),
        0.0,
        "{}",
        m.text
    );
    let t = &sent.trace_id;

    // otel: data streams routed by data_stream.dataset.
    let spans = search(url, &format!("traces-{run}.otel-default"), "trace_id", t, 3);
    let root = spans
        .iter()
        .find(|d| field(d, "name") == "GET /reviews")
        .expect("root span");
    assert_eq!(field(root, "kind"), "Server");
    assert_eq!(
        field(root, "resource.attributes.service.name"),
        service.as_str(),
        "{root}"
    );
    assert_eq!(field(root, "attributes.http.status_code"), "200", "{root}");
    // As in the collector's otel mode, the dataset carries the `.otel` suffix of the stream.
    assert_eq!(
        field(root, "data_stream.dataset"),
        format!("{run}.otel").as_str()
    );
    let logs = search(url, &format!("logs-{run}.otel-default"), "trace_id", t, 4);
    assert!(
        logs.iter().all(|d| field(d, "body.text")
            .as_str()
            .unwrap()
            .contains("access log")),
        "{logs:?}"
    );
    assert!(logs.iter().any(|d| field(d, "severity_text") == "ERROR"));

    // ecs
    let spans = search(url, "traces-generic-default", "trace.id", t, 3);
    assert!(
        spans
            .iter()
            .all(|d| field(d, "service.name") == service.as_str()),
        "{spans:?}"
    );
    let failed = spans
        .iter()
        .find(|d| field(d, "span.name") == "GET ratings")
        .expect("client span");
    assert_eq!(field(failed, "event.outcome"), "failure", "{failed}");
    assert_eq!(field(failed, "http.response.status_code"), 503, "{failed}");
    let logs = search(url, "logs-generic-default", "trace.id", t, 4);
    assert!(
        logs.iter()
            .all(|d| field(d, "message").as_str().unwrap().contains("access log"))
    );
    assert!(
        logs.iter().any(|d| field(d, "log.level") == "ERROR"),
        "{logs:?}"
    );

    // dataprepper: OpenSearch Trace Analytics documents.
    let spans = search(url, "otel-v1-apm-span", "traceId", t, 3);
    for d in &spans {
        assert_eq!(field(d, "serviceName"), service.as_str(), "{d}");
        assert_eq!(field(d, "traceGroup"), sent.root_name.as_str(), "{d}");
    }
    let root = spans
        .iter()
        .find(|d| field(d, "parentSpanId") == "")
        .expect("root span");
    assert_eq!(field(root, "kind"), "SPAN_KIND_SERVER");
    assert_eq!(
        field(root, "durationInNanos"),
        40_000_000u64 - 1_000_000,
        "{root}"
    );
    let logs = search(url, "logs-otel-v1", "traceId", t, 4);
    assert_eq!(logs.len(), 4);
    assert!(gw.stop().success());
}

fn spans_request(dataset: &str, trace_id: &[u8], spans: Vec<(u8, Vec<KeyValue>)>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                kv_str("service.name", "bulk-test"),
                kv_str("data_stream.dataset", dataset),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: spans
                .into_iter()
                .map(|(n, attributes)| Span {
                    trace_id: trace_id.to_vec(),
                    span_id: vec![n; 8],
                    name: format!("op{n}"),
                    start_time_unix_nano: now_ns(),
                    end_time_unix_nano: now_ns() + 1000,
                    attributes,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn export(grpc: u16, resource_spans: Vec<ResourceSpans>) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        grpc::TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap()
            .export(ExportTraceServiceRequest { resource_spans })
            .await
            .unwrap();
    });
}

fn put_settings(url: &str, index: &str, settings: Json) {
    let (s, _, b) = http_request(
        port_of(url),
        "PUT",
        &format!("/{index}/_settings"),
        &[("Content-Type", "application/json")],
        settings.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
}

/// One bulk request in which the server refuses some items for good (a mapping conflict) and
/// throttles others (429: the index has a flood-stage read-only-allow-delete block): the
/// refused items are dropped and counted by reason, only the throttled ones are resent until
/// the block is lifted, and the rest are delivered once.
fn rejected_and_throttled_items_are_handled_item_by_item(url: &str, backend: &str) {
    let dir = Scratch::new(&format!("es-bulk-{backend}"));
    let grpc = free_port();
    let run = format!("mgbulk{}{}", backend.len(), std::process::id());
    let (a, b) = (format!("{run}a"), format!("{run}b"));
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n\
         exporters:\n  elasticsearch:\n    endpoints: [{url}]\n    create_templates: true\n    retry_on_failure:\n      initial_interval: 100ms\n      max_interval: 300ms\n      max_elapsed_time: 60s\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [elasticsearch]\n"
    );
    let mut gw = Gateway::start(&dir, "gw", &cfg);
    let e = [("exporter", "elasticsearch")];
    let trace_id = vec![0x5a; 16];
    // Create data stream b, then block writes to it.
    export(
        grpc,
        vec![spans_request(&b, &trace_id, vec![(100, vec![])])],
    );
    gw.wait_metrics(Duration::from_secs(30), |m| {
        m.sum("meshgate_exporter_sent_items_total", &e) >= 1.0
    });
    put_settings(
        url,
        &format!("traces-{b}.otel-default"),
        json!({"index.blocks.read_only_allow_delete": true}),
    );

    // Stream a: five spans map `attributes.http` as an object, three then send it as a
    // string (refused: mapping conflict). Stream b: four spans, throttled.
    let good = |n: u8| (n, vec![kv_str("http.method", "GET")]);
    let bad = |n: u8| (n, vec![kv_str("http", "x")]);
    export(
        grpc,
        vec![
            spans_request(
                &a,
                &trace_id,
                vec![
                    good(1),
                    good(2),
                    good(3),
                    good(4),
                    good(5),
                    bad(6),
                    bad(7),
                    bad(8),
                ],
            ),
            spans_request(&b, &trace_id, vec![good(11), good(12), good(13), good(14)]),
        ],
    );
    let m = gw.wait_metrics(Duration::from_secs(30), |m| {
        m.sum(
            "meshgate_exporter_elasticsearch_bulk_item_retries_total",
            &e,
        ) >= 8.0
    });
    // While b is blocked: a's good spans are in, nothing of b's new spans.
    assert_eq!(
        m.sum("meshgate_exporter_sent_items_total", &e),
        1.0,
        "the batch is still being delivered:\n{}",
        m.text
    );
    search(
        url,
        &format!("traces-{a}.otel-default"),
        "trace_id",
        &hex(&trace_id),
        5,
    );
    put_settings(
        url,
        &format!("traces-{b}.otel-default"),
        json!({"index.blocks.read_only_allow_delete": null}),
    );

    let m = gw.wait_metrics(Duration::from_secs(30), |m| {
        m.sum("meshgate_exporter_queue_items", &e) == 0.0
    });
    assert_eq!(m.sum("meshgate_exporter_received_items_total", &e), 13.0);
    assert_eq!(
        m.sum("meshgate_exporter_sent_items_total", &e),
        10.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.sum(
            "meshgate_exporter_dropped_items_total",
            &[e[0], ("reason", "rejected_by_backend")]
        ),
        3.0
    );
    assert_eq!(m.sum("meshgate_exporter_dropped_items_total", &e), 3.0);
    assert_eq!(
        m.sum(
            "meshgate_exporter_elasticsearch_bulk_item_errors_total",
            &[e[0], ("status", "400")]
        ),
        3.0,
        "{}",
        m.text
    );
    // Only the four throttled items were resent (each at least twice: 8 at the check above).
    assert_eq!(
        m.sum(
            "meshgate_exporter_elasticsearch_bulk_item_errors_total",
            &[e[0], ("status", "429")]
        ),
        0.0
    );
    let retried = m.sum(
        "meshgate_exporter_elasticsearch_bulk_item_retries_total",
        &e,
    );
    assert!(
        retried >= 8.0 && retried % 4.0 == 0.0,
        "only b's 4 items are resent: {retried}"
    );
    let docs = search(
        url,
        &format!("traces-{a}.otel-default"),
        "trace_id",
        &hex(&trace_id),
        5,
    );
    assert!(
        docs.iter()
            .all(|d| field(d, "attributes.http.method") == "GET")
    );
    search(
        url,
        &format!("traces-{b}.otel-default"),
        "trace_id",
        &hex(&trace_id),
        5,
    );
    assert!(gw.stop().success());
    assert!(
        gw.log_text().contains("exception"),
        "the first error's reason is logged:\n{}",
        gw.log_text()
    );
}

#[test]
fn opensearch_every_mapping_mode() {
    let Some(url) = service("MESHGATE_OPENSEARCH_URL", "OpenSearch") else {
        return;
    };
    every_mapping_mode(&url, "opensearch");
}

#[test]
fn elasticsearch_every_mapping_mode() {
    let Some(url) = service("MESHGATE_ELASTICSEARCH_URL", "Elasticsearch") else {
        return;
    };
    every_mapping_mode(&url, "elasticsearch");
}

#[test]
fn opensearch_rejected_and_throttled_items_are_handled_item_by_item() {
    let Some(url) = service("MESHGATE_OPENSEARCH_URL", "OpenSearch") else {
        return;
    };
    rejected_and_throttled_items_are_handled_item_by_item(&url, "opensearch");
}

#[test]
fn elasticsearch_rejected_and_throttled_items_are_handled_item_by_item() {
    let Some(url) = service("MESHGATE_ELASTICSEARCH_URL", "Elasticsearch") else {
        return;
    };
    rejected_and_throttled_items_are_handled_item_by_item(&url, "elasticsearch");
}
