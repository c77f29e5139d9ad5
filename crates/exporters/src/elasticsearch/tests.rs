//! Document shapes per mode, and the exporter against an in-process fake cluster.

use super::*;
use crate::common::testutil;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use meshgate_pdata::attributes::{kv, kv_str};
use meshgate_pdata::otlp::any_value::Value as AV;
use meshgate_pdata::otlp::*;
use serde_json::{Value, json};
use std::io::Read;
use std::sync::Mutex;

const T0: u64 = 1_700_000_000_000_000_000; // 2023-11-14T22:13:20Z
const MS: u64 = 1_000_000;

/// A root server span and a client child with an event and a link.
fn spans() -> Payload {
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", "checkout"),
                    kv_str("service.version", "1.2.3"),
                    kv_str("host.name", "node-1"),
                    kv_str("k8s.namespace.name", "shop"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "envoy".into(),
                    version: "1.30".into(),
                    ..Default::default()
                }),
                spans: vec![
                    Span {
                        trace_id: (1..=16).collect(),
                        span_id: vec![0x11; 8],
                        name: "GET /cart".into(),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: T0,
                        end_time_unix_nano: T0 + 250 * MS,
                        attributes: vec![
                            kv_str("http.request.method", "GET"),
                            kv("http.response.status_code", AV::IntValue(200)),
                            kv_str("url.full", "http://shop/cart"),
                            kv_str("upstream_cluster", "cart-v2"),
                        ],
                        status: Some(Status {
                            code: status::StatusCode::Ok as i32,
                            message: String::new(),
                        }),
                        ..Default::default()
                    },
                    Span {
                        trace_id: (1..=16).collect(),
                        span_id: vec![0x22; 8],
                        parent_span_id: vec![0x11; 8],
                        name: "redis GET".into(),
                        kind: span::SpanKind::Client as i32,
                        start_time_unix_nano: T0 + 10 * MS,
                        end_time_unix_nano: T0 + 15 * MS,
                        attributes: vec![kv_str("db.system", "redis")],
                        events: vec![span::Event {
                            time_unix_nano: T0 + 12 * MS,
                            name: "retry".into(),
                            attributes: vec![kv("attempt", AV::IntValue(2))],
                            dropped_attributes_count: 0,
                        }],
                        links: vec![span::Link {
                            trace_id: vec![0xab; 16],
                            span_id: vec![0xcd; 8],
                            ..Default::default()
                        }],
                        status: Some(Status {
                            code: status::StatusCode::Error as i32,
                            message: "timeout".into(),
                        }),
                        ..Default::default()
                    },
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    })
}

/// One Envoy access log record.
fn log() -> Payload {
    Payload::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "ingress")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "envoy.access_loggers.open_telemetry".into(),
                    ..Default::default()
                }),
                log_records: vec![LogRecord {
                    time_unix_nano: T0,
                    observed_time_unix_nano: T0 + MS,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(AV::StringValue("GET /cart 200".into())),
                    }),
                    attributes: vec![
                        kv_str("http.request.method", "GET"),
                        kv_str("http.response.status_code", "200"),
                    ],
                    trace_id: (1..=16).collect(),
                    span_id: vec![0x11; 8],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    })
}

fn encoder(mode: MappingMode) -> Encoder {
    Encoder {
        mode,
        traces_index: None,
        logs_index: None,
    }
}

/// (action, document) of each item.
fn encode(e: &Encoder, p: &Payload) -> Vec<(Value, Value)> {
    e.encode(p)
        .iter()
        .map(|item| {
            let text = std::str::from_utf8(item).unwrap();
            let lines: Vec<&str> = text.split_terminator('\n').collect();
            assert_eq!(lines.len(), 2, "{text}");
            (
                serde_json::from_str(lines[0]).unwrap(),
                serde_json::from_str(lines[1]).unwrap(),
            )
        })
        .collect()
}

const TRACE_ID: &str = "0102030405060708090a0b0c0d0e0f10";

#[test]
fn otel_span_and_log_documents() {
    let docs = encode(&encoder(MappingMode::Otel), &spans());
    assert_eq!(
        docs[0].0,
        json!({"create": {"_index": "traces-generic.otel-default"}})
    );
    assert_eq!(
        docs[0].1,
        json!({
            "@timestamp": "2023-11-14T22:13:20.000000000Z",
            "data_stream": {"type": "traces", "dataset": "generic.otel", "namespace": "default"},
            "trace_id": TRACE_ID,
            "span_id": "1111111111111111",
            "name": "GET /cart",
            "kind": "Server",
            "duration": 250_000_000,
            "status": {"code": "Ok"},
            "attributes": {
                "http.request.method": "GET",
                "http.response.status_code": 200,
                "url.full": "http://shop/cart",
                "upstream_cluster": "cart-v2"
            },
            "resource": {"attributes": {
                "service.name": "checkout",
                "service.version": "1.2.3",
                "host.name": "node-1",
                "k8s.namespace.name": "shop"
            }},
            "scope": {"name": "envoy", "version": "1.30"}
        })
    );
    let child = &docs[1].1;
    assert_eq!(child["parent_span_id"], "1111111111111111");
    assert_eq!(child["kind"], "Client");
    assert_eq!(child["duration"], 5_000_000);
    assert_eq!(
        child["status"],
        json!({"code": "Error", "message": "timeout"})
    );
    assert_eq!(
        child["links"],
        json!([{"trace_id": "ab".repeat(16), "span_id": "cd".repeat(8)}])
    );

    let docs = encode(&encoder(MappingMode::Otel), &log());
    assert_eq!(
        docs[0].0,
        json!({"create": {"_index": "logs-generic.otel-default"}})
    );
    assert_eq!(
        docs[0].1,
        json!({
            "@timestamp": "2023-11-14T22:13:20.000000000Z",
            "observed_timestamp": "2023-11-14T22:13:20.001000000Z",
            "data_stream": {"type": "logs", "dataset": "generic.otel", "namespace": "default"},
            "trace_id": TRACE_ID,
            "span_id": "1111111111111111",
            "severity_text": "INFO",
            "severity_number": 9,
            "body": {"text": "GET /cart 200"},
            "attributes": {"http.request.method": "GET", "http.response.status_code": "200"},
            "resource": {"attributes": {"service.name": "ingress"}},
            "scope": {"name": "envoy.access_loggers.open_telemetry"}
        })
    );
}

#[test]
fn otel_routes_by_data_stream_attributes_record_then_scope_then_resource() {
    let Payload::Logs(mut req) = log() else {
        unreachable!()
    };
    let rl = &mut req.resource_logs[0];
    rl.resource.as_mut().unwrap().attributes.extend([
        kv_str("data_stream.dataset", "envoy"),
        kv_str("data_stream.namespace", "prod"),
    ]);
    let mut second = rl.scope_logs[0].log_records[0].clone();
    second
        .attributes
        .push(kv_str("data_stream.dataset", "Access-Log/Mesh"));
    rl.scope_logs[0].log_records.push(second);
    let mut scoped = rl.scope_logs[0].clone();
    scoped.scope.as_mut().unwrap().attributes = vec![kv_str("data_stream.namespace", "staging")];
    scoped.log_records.truncate(1);
    rl.scope_logs.push(scoped);
    let docs = encode(&encoder(MappingMode::Otel), &Payload::Logs(req));
    let index = |i: usize| docs[i].0["create"]["_index"].as_str().unwrap().to_string();
    assert_eq!(index(0), "logs-envoy.otel-prod");
    // Record attribute wins, sanitised (lowercase, `-` and `/` replaced).
    assert_eq!(index(1), "logs-access_log_mesh.otel-prod");
    assert_eq!(
        docs[1].1["data_stream"],
        json!({"type": "logs", "dataset": "access_log_mesh.otel", "namespace": "prod"})
    );
    // Scope before resource.
    assert_eq!(index(2), "logs-envoy.otel-staging");
    // The routing keys are not repeated as attributes.
    assert!(docs[1].1["attributes"].get("data_stream.dataset").is_none());
    assert!(
        docs[0].1["resource"]["attributes"]
            .get("data_stream.dataset")
            .is_none()
    );

    // An explicit index wins; its data_stream fields follow its name.
    let e = Encoder {
        logs_index: Some("logs-mesh-prod".into()),
        ..encoder(MappingMode::Otel)
    };
    let docs = encode(&e, &log());
    assert_eq!(docs[0].0["create"]["_index"], "logs-mesh-prod");
    assert_eq!(
        docs[0].1["data_stream"],
        json!({"type": "logs", "dataset": "mesh", "namespace": "prod"})
    );
    let e = Encoder {
        traces_index: Some("spans".into()),
        ..encoder(MappingMode::Otel)
    };
    let docs = encode(&e, &spans());
    assert_eq!(docs[0].0["create"]["_index"], "spans");
    assert!(docs[0].1.get("data_stream").is_none());
}

#[test]
fn ecs_span_and_log_documents() {
    let docs = encode(&encoder(MappingMode::Ecs), &spans());
    assert_eq!(
        docs[0].0,
        json!({"create": {"_index": "traces-generic-default"}})
    );
    assert_eq!(
        docs[0].1,
        json!({
            "@timestamp": "2023-11-14T22:13:20.000000000Z",
            "data_stream": {"type": "traces", "dataset": "generic", "namespace": "default"},
            "trace": {"id": TRACE_ID},
            "span": {"id": "1111111111111111", "name": "GET /cart", "kind": "SERVER"},
            "transaction": {"id": "1111111111111111"},
            "event": {"outcome": "success", "duration": 250_000_000},
            "service": {"name": "checkout", "version": "1.2.3"},
            "host": {"name": "node-1"},
            "http": {"request": {"method": "GET"}, "response": {"status_code": 200}},
            "url": {"full": "http://shop/cart"},
            "labels": {"k8s_namespace_name": "shop", "upstream_cluster": "cart-v2"}
        })
    );
    let child = &docs[1].1;
    assert_eq!(child["parent"]["id"], "1111111111111111");
    assert!(child.get("transaction").is_none());
    assert_eq!(child["event"]["outcome"], "failure");
    assert_eq!(child["message"], "timeout");
    assert_eq!(child["labels"]["db_system"], "redis");

    let docs = encode(&encoder(MappingMode::Ecs), &log());
    assert_eq!(
        docs[0].0,
        json!({"create": {"_index": "logs-generic-default"}})
    );
    assert_eq!(
        docs[0].1,
        json!({
            "@timestamp": "2023-11-14T22:13:20.000000000Z",
            "data_stream": {"type": "logs", "dataset": "generic", "namespace": "default"},
            "message": "GET /cart 200",
            "log": {"level": "INFO"},
            "event": {"severity": 9},
            "trace": {"id": TRACE_ID},
            "span": {"id": "1111111111111111"},
            "service": {"name": "ingress"},
            "http": {"request": {"method": "GET"}, "response": {"status_code": 200}}
        })
    );
}

#[test]
fn dataprepper_span_and_log_documents() {
    let docs = encode(&encoder(MappingMode::Dataprepper), &spans());
    // The span id is the document id, so a resent span is a 409 duplicate.
    assert_eq!(
        docs[1].0,
        json!({"create": {"_index": "otel-v1-apm-span", "_id": "2222222222222222"}})
    );
    assert_eq!(
        docs[1].1,
        json!({
            "traceId": TRACE_ID,
            "spanId": "2222222222222222",
            "traceState": "",
            "parentSpanId": "1111111111111111",
            "name": "redis GET",
            "kind": "SPAN_KIND_CLIENT",
            "startTime": "2023-11-14T22:13:20.010000000Z",
            "endTime": "2023-11-14T22:13:20.015000000Z",
            "durationInNanos": 5_000_000,
            "serviceName": "checkout",
            "events": [{
                "time": "2023-11-14T22:13:20.012000000Z",
                "name": "retry",
                "attributes": {"attempt": 2},
                "droppedAttributesCount": 0
            }],
            "links": [{
                "traceId": "ab".repeat(16),
                "spanId": "cd".repeat(8),
                "traceState": "",
                "attributes": {},
                "droppedAttributesCount": 0
            }],
            "droppedAttributesCount": 0,
            "droppedEventsCount": 0,
            "droppedLinksCount": 0,
            "traceGroup": "GET /cart",
            "traceGroupFields.endTime": "2023-11-14T22:13:20.250000000Z",
            "traceGroupFields.durationInNanos": 250_000_000,
            "traceGroupFields.statusCode": 1,
            "status.code": 2,
            "status.message": "timeout",
            "instrumentationScope.name": "envoy",
            "instrumentationScope.version": "1.30",
            "span.attributes.db@system": "redis",
            "resource.attributes.service@name": "checkout",
            "resource.attributes.service@version": "1.2.3",
            "resource.attributes.host@name": "node-1",
            "resource.attributes.k8s@namespace@name": "shop"
        })
    );
    let root = &docs[0].1;
    assert_eq!(root["parentSpanId"], "");
    assert_eq!(root["traceGroup"], "GET /cart");
    assert_eq!(root["span.attributes.http@response@status_code"], 200);

    // A child whose root is not in the batch has no trace group.
    let Payload::Traces(mut req) = spans() else {
        unreachable!()
    };
    req.resource_spans[0].scope_spans[0].spans.remove(0);
    let docs = encode(&encoder(MappingMode::Dataprepper), &Payload::Traces(req));
    assert_eq!(docs[0].1["traceGroup"], Value::Null);
    assert_eq!(docs[0].1["traceGroupFields.durationInNanos"], Value::Null);

    let docs = encode(&encoder(MappingMode::Dataprepper), &log());
    assert_eq!(docs[0].0, json!({"create": {"_index": "logs-otel-v1"}}));
    assert_eq!(
        docs[0].1,
        json!({
            "@timestamp": "2023-11-14T22:13:20.000000000Z",
            "time": "2023-11-14T22:13:20.000000000Z",
            "observedTime": "2023-11-14T22:13:20.001000000Z",
            "traceId": TRACE_ID,
            "spanId": "1111111111111111",
            "flags": 0,
            "severityText": "INFO",
            "severityNumber": 9,
            "body": "GET /cart 200",
            "serviceName": "ingress",
            "schemaUrl": "",
            "droppedAttributesCount": 0,
            "instrumentationScope.name": "envoy.access_loggers.open_telemetry",
            "log.attributes.http@request@method": "GET",
            "log.attributes.http@response@status_code": "200",
            "resource.attributes.service@name": "ingress"
        })
    );
}

// ---- against a fake cluster -----------------------------------------------------------

/// A request the fake cluster saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    uri: String,
    headers: http::HeaderMap,
    /// Decoded (gunzipped) body.
    body: String,
}

impl Seen {
    /// The documents of a bulk body.
    fn docs(&self) -> Vec<Value> {
        self.body
            .lines()
            .skip(1)
            .step_by(2)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

type Responder = dyn Fn(&Seen, usize) -> Response + Send + Sync;

#[derive(Clone)]
struct Cluster {
    seen: Arc<Mutex<Vec<Seen>>>,
    respond: Arc<Responder>,
}

async fn handler(
    State(c): State<Cluster>,
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let body = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut out)
            .unwrap();
        out
    } else {
        String::from_utf8(body.to_vec()).unwrap()
    };
    let seen = Seen {
        method: method.to_string(),
        uri: uri.to_string(),
        headers,
        body,
    };
    let n = {
        let mut all = c.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    (c.respond)(&seen, n)
}

async fn cluster(
    respond: impl Fn(&Seen, usize) -> Response + Send + Sync + 'static,
) -> (Arc<Mutex<Vec<Seen>>>, String) {
    let c = Cluster {
        seen: Arc::default(),
        respond: Arc::new(respond),
    };
    let app = axum::Router::new().fallback(handler).with_state(c.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (c.seen, format!("http://{addr}"))
}

/// A bulk answer with one item per status.
fn bulk_answer(statuses: &[u16]) -> Response {
    let items: Vec<Value> = statuses
        .iter()
        .map(|&s| match s {
            200..=299 => json!({"create": {"status": s}}),
            409 => json!({"create": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "document already exists"}}}),
            400 => json!({"create": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [attributes.http.response.status_code] of type [long]"}}}),
            s => json!({"create": {"status": s, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}}}),
        })
        .collect();
    let errors = statuses.iter().any(|s| !(200..300).contains(s));
    (
        [("content-type", "application/json")],
        json!({"errors": errors, "items": items}).to_string(),
    )
        .into_response()
}

fn all_created(seen: &Seen) -> Response {
    bulk_answer(&vec![201; seen.docs().len()])
}

fn fast_retry() -> Value {
    json!({"initial_interval": "5ms", "max_interval": "20ms", "max_elapsed_time": "5s"})
}

fn exporter(v: Value, reg: &Registry) -> ElasticsearchExporter {
    let cfg: ElasticsearchConfig = parse_config(&v).unwrap();
    ElasticsearchExporter::new(&cfg, "elasticsearch", reg).unwrap()
}

fn metric(reg: &Registry, name: &str, labels: &[&str]) -> u64 {
    reg.render()
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn bulk_body_is_gzipped_ndjson_with_create_actions() {
    let (seen, url) = cluster(|s, _| all_created(s)).await;
    let reg = Registry::new();
    let exp = exporter(json!({"endpoints": [format!("{url}/")]}), &reg);
    let done = exp.export(&testutil::traces(3)).await.unwrap();
    assert_eq!(done.rejected, 0);
    let s = {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        seen[0].clone()
    };
    assert_eq!(s.method, "POST");
    assert!(s.uri.starts_with("/_bulk?filter_path="), "{}", s.uri);
    assert_eq!(s.headers["content-type"], "application/x-ndjson");
    assert_eq!(s.headers["content-encoding"], "gzip");
    assert!(s.headers.get("authorization").is_none());
    assert!(s.body.ends_with('\n'));
    let lines: Vec<&str> = s.body.lines().collect();
    assert_eq!(lines.len(), 6);
    for pair in lines.chunks(2) {
        let action: Value = serde_json::from_str(pair[0]).unwrap();
        assert_eq!(action["create"]["_index"], "traces-generic.otel-default");
        let doc: Value = serde_json::from_str(pair[1]).unwrap();
        assert_eq!(doc["resource"]["attributes"]["service.name"], "checkout");
    }

    // compression: none sends plain NDJSON.
    let (seen, url) = cluster(|s, _| all_created(s)).await;
    let exp = exporter(json!({"endpoints": [url], "compression": "none"}), &reg);
    exp.export(&testutil::logs(2)).await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen[0].headers.get("content-encoding").is_none());
    assert_eq!(seen[0].docs().len(), 2);
    assert_eq!(seen[0].docs()[1]["body"]["text"], "line 1");
}

/// Items 0 and 4 are created, 1 is a duplicate, 2 has a mapping error, 3 is throttled once.
#[tokio::test]
async fn mixed_item_results_resend_only_throttled_items() {
    let (seen, url) = cluster(|s, n| {
        let statuses: Vec<u16> = s
            .docs()
            .iter()
            .map(|d| match d["name"].as_str().unwrap() {
                "GET /item/1" => 409,
                "GET /item/2" => 400,
                "GET /item/3" if n == 0 => 429,
                _ => 201,
            })
            .collect();
        bulk_answer(&statuses)
    })
    .await;
    let reg = Registry::new();
    let exp = exporter(
        json!({"endpoints": [url], "retry_on_failure": fast_retry()}),
        &reg,
    );
    let done = exp.export(&testutil::traces(5)).await.unwrap();
    assert_eq!(done.rejected, 1, "{:?}", done.message);
    let msg = done.message.unwrap();
    assert!(msg.contains("1 x 400 mapper_parsing_exception"), "{msg}");
    assert!(msg.contains("failed to parse field"), "{msg}");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].docs().len(), 5);
    // The second request holds the throttled item alone.
    let resent = seen[1].docs();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0]["name"], "GET /item/3");

    let l = ["exporter=\"elasticsearch\"", "signal=\"traces\""];
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_elasticsearch_bulk_item_errors_total",
            &[
                l[0],
                l[1],
                "status=\"400\"",
                "reason=\"mapper_parsing_exception\""
            ]
        ),
        1
    );
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_elasticsearch_bulk_item_retries_total",
            &l
        ),
        1
    );
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_elasticsearch_bulk_item_duplicates_total",
            &l
        ),
        1
    );
}

/// Through the engine's queue: sent + dropped adds up to received, and the exporter's
/// per-reason counter matches the engine's `rejected_by_backend`.
#[tokio::test]
async fn engine_accounting_adds_up() {
    let (_seen, url) = cluster(|s, _| {
        let statuses: Vec<u16> = s
            .docs()
            .iter()
            .map(|d| match d["body"]["text"].as_str().unwrap() {
                "line 0" | "line 5" => 400,
                "line 3" => 409,
                _ => 201,
            })
            .collect();
        bulk_answer(&statuses)
    })
    .await;
    let reg = Registry::new();
    let exp = Arc::new(exporter(json!({"endpoints": [url]}), &reg));
    let (_stop, signal) = meshgate_engine::shutdown_channel();
    let (q, _stats, task) = meshgate_engine::exporter_helper::start(
        "elasticsearch",
        exp,
        QueueConfig::default(),
        RetryConfig::default(),
        &reg,
        signal,
    );
    q.try_offer(Arc::new(testutil::logs(8))).unwrap();
    drop(q);
    task.await.unwrap();
    let l = ["exporter=\"elasticsearch\"", "signal=\"logs\""];
    assert_eq!(
        metric(&reg, "meshgate_exporter_received_items_total", &l),
        8
    );
    assert_eq!(metric(&reg, "meshgate_exporter_sent_items_total", &l), 6);
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_dropped_items_total",
            &[l[0], l[1], "reason=\"rejected_by_backend\""]
        ),
        2
    );
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_elasticsearch_bulk_item_errors_total",
            &l
        ),
        2
    );
}

#[tokio::test]
async fn throttled_items_given_up_are_counted_as_throttled() {
    let (seen, url) = cluster(|s, _| {
        let statuses: Vec<u16> = s
            .docs()
            .iter()
            .map(|d| if d["name"] == "GET /item/0" { 503 } else { 201 })
            .collect();
        bulk_answer(&statuses)
    })
    .await;
    let reg = Registry::new();
    let exp = exporter(
        json!({"endpoints": [url], "retry_on_failure": {
            "initial_interval": "10ms", "max_interval": "10ms", "max_elapsed_time": "60ms"
        }}),
        &reg,
    );
    let done = exp.export(&testutil::traces(3)).await.unwrap();
    assert_eq!(done.rejected, 1);
    assert!(done.message.unwrap().contains("503 throttled"));
    let requests = seen.lock().unwrap().len();
    assert!(requests >= 3, "{requests}");
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_elasticsearch_bulk_item_errors_total",
            &["status=\"503\"", "reason=\"throttled\""]
        ),
        1
    );

    // With retries disabled, a throttled item is given up at once.
    let exp = exporter(
        json!({"endpoints": [seen_url(&seen)], "retry_on_failure": {"enabled": false}}),
        &reg,
    );
    let before = seen.lock().unwrap().len();
    let done = exp.export(&testutil::traces(2)).await.unwrap();
    assert_eq!(done.rejected, 1);
    assert_eq!(seen.lock().unwrap().len(), before + 1);
}

fn seen_url(seen: &Arc<Mutex<Vec<Seen>>>) -> String {
    format!(
        "http://{}",
        seen.lock().unwrap()[0].headers["host"].to_str().unwrap()
    )
}

#[tokio::test]
async fn whole_request_failures_map_to_retryable_or_permanent() {
    let (_seen, url) = cluster(|_, n| match n {
        0 => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "7")],
            r#"{"error":{"type":"cluster_block_exception","reason":"blocked"},"status":503}"#,
        )
            .into_response(),
        1 => StatusCode::TOO_MANY_REQUESTS.into_response(),
        2 => (
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"type":"security_exception","reason":"missing authentication credentials"},"status":401}"#,
        )
            .into_response(),
        3 => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        _ => (StatusCode::OK, "not json").into_response(),
    })
    .await;
    let reg = Registry::new();
    let exp = exporter(json!({"endpoints": [url]}), &reg);
    let e = exp.export(&testutil::logs(1)).await.unwrap_err();
    assert!(e.retryable);
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    assert!(
        e.message.contains("cluster_block_exception: blocked"),
        "{}",
        e.message
    );
    let e = exp.export(&testutil::logs(1)).await.unwrap_err();
    assert!(e.retryable && e.retry_after.is_none());
    let e = exp.export(&testutil::logs(1)).await.unwrap_err();
    assert!(!e.retryable);
    assert!(e.message.contains("security_exception"), "{}", e.message);
    let e = exp.export(&testutil::logs(1)).await.unwrap_err();
    assert!(
        !e.retryable && e.message.contains("flush.bytes"),
        "{}",
        e.message
    );
    // An undecodable success: the data may be in, so not sent again.
    let e = exp.export(&testutil::logs(1)).await.unwrap_err();
    assert!(!e.retryable, "{}", e.message);
    // Metrics are not this exporter's signal.
    assert!(
        !exp.export(&testutil::metrics(1))
            .await
            .unwrap_err()
            .retryable
    );
}

/// A port nobody listens on.
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test]
async fn endpoints_round_robin_and_fail_over_on_connection_errors() {
    let (seen_a, a) = cluster(|s, _| all_created(s)).await;
    let (seen_b, b) = cluster(|s, _| all_created(s)).await;
    let dead = closed_port().await;
    let reg = Registry::new();
    let exp = exporter(json!({"endpoints": [a, dead, b]}), &reg);
    for _ in 0..6 {
        exp.export(&testutil::logs(1)).await.unwrap();
    }
    let (na, nb) = (seen_a.lock().unwrap().len(), seen_b.lock().unwrap().len());
    assert_eq!(na + nb, 6);
    assert!(na >= 2 && nb >= 2, "{na} {nb}");

    let exp = exporter(json!({"endpoints": [closed_port().await]}), &reg);
    let e = exp.export(&testutil::logs(1)).await.unwrap_err();
    assert!(
        e.retryable && e.message.contains("no endpoint reachable"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn basic_and_api_key_auth_headers() {
    let (seen, url) = cluster(|s, _| all_created(s)).await;
    let reg = Registry::new();
    exporter(
        json!({"endpoints": [url], "auth": {"user": "elastic", "password": "changeme"}}),
        &reg,
    )
    .export(&testutil::logs(1))
    .await
    .unwrap();
    exporter(
        json!({"endpoints": [url], "auth": {"api_key": "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="}}),
        &reg,
    )
    .export(&testutil::logs(1))
    .await
    .unwrap();
    let seen = seen.lock().unwrap();
    // base64("elastic:changeme")
    assert_eq!(
        seen[0].headers["authorization"],
        "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="
    );
    assert_eq!(
        seen[1].headers["authorization"],
        "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
    );
}

#[tokio::test]
async fn templates_are_installed_once_before_the_first_bulk() {
    let (seen, url) = cluster(|s, _| {
        if s.method == "PUT" && s.uri == "/logs-otel-v1-000001" {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"error":{"type":"resource_already_exists_exception","reason":"index [logs-otel-v1-000001] already exists"},"status":400}"#,
            )
                .into_response();
        }
        if s.method == "PUT" {
            return (StatusCode::OK, r#"{"acknowledged":true}"#).into_response();
        }
        all_created(s)
    })
    .await;
    let reg = Registry::new();
    let exp = exporter(
        json!({"endpoints": [url], "create_templates": true, "mapping": {"mode": "dataprepper"}}),
        &reg,
    );
    exp.export(&testutil::traces(1)).await.unwrap();
    exp.export(&testutil::logs(1)).await.unwrap();
    let seen = seen.lock().unwrap();
    let calls: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri.split('?').next().unwrap()))
        .collect();
    assert_eq!(
        calls,
        [
            "PUT /_index_template/meshgate-dataprepper-span",
            "PUT /_index_template/meshgate-dataprepper-logs",
            "PUT /otel-v1-apm-span-000001",
            "PUT /logs-otel-v1-000001",
            "POST /_bulk",
            "POST /_bulk",
        ]
    );
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["index_patterns"], json!(["otel-v1-apm-span-*"]));
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(&seen[2].body).unwrap(),
        json!({"aliases": {"otel-v1-apm-span": {"is_write_index": true}}})
    );
    let action: Value = serde_json::from_str(seen[4].body.lines().next().unwrap()).unwrap();
    assert_eq!(action["create"]["_index"], "otel-v1-apm-span");
    assert_eq!(action["create"]["_id"], "0101010101010101");
}

#[tokio::test]
async fn template_install_failure_is_retryable_when_transient() {
    let (seen, url) = cluster(|s, n| {
        if s.method == "PUT" && n == 0 {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        if s.method == "PUT" {
            return (StatusCode::OK, "{}").into_response();
        }
        all_created(s)
    })
    .await;
    let reg = Registry::new();
    let exp = exporter(json!({"endpoints": [url], "create_templates": true}), &reg);
    let e = exp.export(&testutil::traces(1)).await.unwrap_err();
    assert!(e.retryable, "{e:?}");
    exp.export(&testutil::traces(1)).await.unwrap();
    let calls: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri.split('?').next().unwrap()))
        .collect();
    assert_eq!(
        calls,
        [
            "PUT /_index_template/meshgate-otel-traces",
            "PUT /_index_template/meshgate-otel-traces",
            "PUT /_index_template/meshgate-otel-logs",
            "POST /_bulk",
        ]
    );
}

#[test]
fn factory_validates_config() {
    let f = ElasticsearchExporterFactory;
    let check = |v: Value| f.check(&v);
    assert!(
        check(json!({}))
            .unwrap_err()
            .contains("`endpoints` is required")
    );
    assert!(
        check(json!({"endpoints": ["es:9200"]}))
            .unwrap_err()
            .contains("http://")
    );
    assert!(
        check(json!({"endpoints": ["http://es:9200"], "mapping": {"mode": "jaeger"}})).is_err()
    );
    assert!(
        check(json!({"endpoints": ["http://es:9200"], "auth": {"user": "u"}}))
            .unwrap_err()
            .contains("password")
    );
    assert!(
        check(json!({"endpoints": ["http://es:9200"], "auth": {"user": "u", "password": "p", "api_key": "k"}}))
            .unwrap_err()
            .contains("not both")
    );
    assert!(
        check(json!({"endpoints": ["http://es:9200"], "traces_index": "Traces"}))
            .unwrap_err()
            .contains("not a valid index name")
    );
    assert!(
        check(json!({"endpoints": ["https://es:9200"], "tls": {"ca_file": "/nonexistent/ca.pem"}}))
            .unwrap_err()
            .contains("tls.ca_file")
    );
    let not_pem = std::env::temp_dir().join(format!("meshgate-es-notpem-{}", std::process::id()));
    std::fs::write(&not_pem, "hello").unwrap();
    let e =
        check(json!({"endpoints": ["https://es:9200"], "tls": {"ca_file": not_pem}})).unwrap_err();
    assert!(e.contains("no PEM certificate"), "{e}");
    std::fs::remove_file(&not_pem).unwrap();
    assert!(
        check(json!({"endpoints": ["http://es:9200"], "tls": {"insecure_skip_verify": true}}))
            .unwrap_err()
            .contains("https")
    );
    check(json!({
        "endpoints": ["https://es-0:9200", "http://es-1:9200/"],
        "mapping": {"mode": "ecs"},
        "logs_index": "logs-envoy-prod",
        "auth": {"api_key": "abc"},
        "tls": {"insecure_skip_verify": true},
        "compression": "none",
        "flush": {"bytes": "2MiB"},
        "timeout": "10s",
        "sending_queue": {"num_consumers": 4},
        "retry_on_failure": null,
    }))
    .unwrap();
    let reg = Registry::new();
    let exp = exporter(json!({"endpoints": ["http://es:9200"]}), &reg);
    assert_eq!(exp.max_request_bytes(), Some(5 * 1024 * 1024));
    let exp = exporter(
        json!({"endpoints": ["http://es:9200"], "flush": {"bytes": 0}}),
        &reg,
    );
    assert_eq!(exp.max_request_bytes(), None);
}

#[test]
fn schema_documents_every_field_with_its_default() {
    let schema = serde_json::to_value(ElasticsearchExporterFactory.schema()).unwrap();
    let props = schema["properties"].as_object().unwrap();
    assert!(props.contains_key("endpoints") && props.contains_key("mapping"));
    for (name, p) in props {
        let d = p["description"].as_str().unwrap_or_default();
        assert!(
            d.contains("Default") || d.contains("Required"),
            "{name}: {d:?}"
        );
    }
    assert_eq!(schema["additionalProperties"], false);
}

/// After an item was throttled, a failing resend request is retried inside the call with
/// only the pending items: nothing already indexed is sent again.
#[tokio::test]
async fn request_failure_during_resend_keeps_retrying_the_pending_items() {
    let (seen, url) = cluster(|s, n| match n {
        0 => {
            let statuses: Vec<u16> = s
                .docs()
                .iter()
                .map(|d| if d["name"] == "GET /item/1" { 429 } else { 201 })
                .collect();
            bulk_answer(&statuses)
        }
        1 => StatusCode::BAD_GATEWAY.into_response(),
        _ => all_created(s),
    })
    .await;
    let reg = Registry::new();
    let exp = exporter(
        json!({"endpoints": [url], "retry_on_failure": fast_retry()}),
        &reg,
    );
    let done = exp.export(&testutil::traces(3)).await.unwrap();
    assert_eq!(done.rejected, 0, "{:?}", done.message);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for s in &seen[1..] {
        let docs = s.docs();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["name"], "GET /item/1");
    }
}

/// A TLS server with a self-signed certificate answering every request with `answer`.
async fn tls_cluster(answer: &'static str) -> (String, std::path::PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = std::env::temp_dir().join(format!(
        "meshgate-es-ca-{}-{:?}.pem",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // Read the head and the announced body, then answer and close.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse::<usize>().unwrap())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://localhost:{port}"), ca)
}

#[tokio::test]
async fn https_with_a_custom_ca_and_with_verification_off() {
    let (url, ca) = tls_cluster(r#"{"errors":false,"items":[{"create":{"status":201}}]}"#).await;
    let reg = Registry::new();
    // The self-signed certificate is not in the public roots.
    let exp = exporter(json!({"endpoints": [url]}), &reg);
    let e = exp.export(&testutil::logs(1)).await.unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert!(
        e.message.to_lowercase().contains("certificate"),
        "{}",
        e.message
    );
    // Trusted through ca_file.
    let exp = exporter(
        json!({"endpoints": [url], "tls": {"ca_file": ca.to_str().unwrap()}}),
        &reg,
    );
    assert_eq!(exp.export(&testutil::logs(1)).await.unwrap().rejected, 0);
    // Or not verified at all.
    let exp = exporter(
        json!({"endpoints": [url], "tls": {"insecure_skip_verify": true}}),
        &reg,
    );
    assert_eq!(exp.export(&testutil::logs(1)).await.unwrap().rejected, 0);
    std::fs::remove_file(ca).unwrap();
}

// ----- dependencies: service graph metrics as Jaeger dependency documents -----------------

/// Cumulative `traces_service_graph_request_total` points (client, server, value) of series
/// that started now, after the exporter.
fn request_totals(points: &[(&str, &str, i64)], start: u64) -> Payload {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    Payload::Metrics(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: dependencies::REQUEST_TOTAL.into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: points
                                .iter()
                                .map(|(c, s, v)| NumberDataPoint {
                                    attributes: vec![
                                        kv_str("client", c),
                                        kv_str("server", s),
                                        kv_str("connection_type", ""),
                                    ],
                                    start_time_unix_nano: start,
                                    time_unix_nano: now,
                                    value: Some(number_data_point::Value::AsInt(*v)),
                                    ..Default::default()
                                })
                                .collect(),
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "traces_service_graph_request_failed_total".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![NumberDataPoint::default()],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Every dependency document the cluster was sent, as (action, document).
fn dependency_docs(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<(Value, Value)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.uri.starts_with("/_bulk"))
        .flat_map(|s| {
            let lines: Vec<Value> = s
                .body
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            lines
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `parent->child` → callCount summed over documents, as Jaeger's query service adds them.
fn links(docs: &[(Value, Value)]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (_, d) in docs {
        for l in d["dependencies"].as_array().unwrap() {
            *out.entry(format!(
                "{}->{}",
                l["parent"].as_str().unwrap(),
                l["child"].as_str().unwrap()
            ))
            .or_default() += l["callCount"].as_u64().unwrap();
        }
    }
    out
}

#[tokio::test]
async fn dependency_documents_are_written_every_interval_and_at_shutdown() {
    let (seen, url) = cluster(|s, _| all_created(s)).await;
    let reg = Registry::new();
    let cfg: ElasticsearchConfig = parse_config(&json!({
        "endpoints": [url],
        "dependencies": {"index_prefix": "prod", "interval": "200ms"},
    }))
    .unwrap();
    let exp = Arc::new(ElasticsearchExporter::new(&cfg, "elasticsearch", &reg).unwrap());
    let start = now_nanos();
    let before = now_nanos() / 1_000_000;
    // Metrics are taken in at once (counted), written at the interval.
    exp.export(&request_totals(
        &[("web", "api", 5), ("api", "db", 2)],
        start,
    ))
    .await
    .unwrap();
    assert!(dependency_docs(&seen).is_empty());
    exp.dependencies
        .as_ref()
        .unwrap()
        .start(Arc::downgrade(&exp));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while dependency_docs(&seen).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no document written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let docs = dependency_docs(&seen);
    assert_eq!(docs.len(), 1);
    let (action, doc) = &docs[0];
    let index = action["create"]["_index"].as_str().unwrap();
    assert!(index.starts_with("prod-jaeger-dependencies-20"), "{index}");
    assert!(action["create"]["_id"].is_string());
    let ts = humantime::parse_rfc3339(doc["timestamp"].as_str().unwrap()).unwrap();
    let ts_ms = ts
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(ts_ms >= before, "stamped when written, after the calls");
    assert_eq!(
        index,
        format!(
            "prod-jaeger-dependencies-{}",
            &humantime::format_rfc3339(ts).to_string()[..10]
        )
    );
    assert_eq!(
        links(&docs),
        BTreeMap::from([("api->db".into(), 2), ("web->api".into(), 5)])
    );
    // Quiet intervals write nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(dependency_docs(&seen).len(), 1);
    // Calls gathered after the last interval are written at shutdown.
    exp.export(&request_totals(
        &[("web", "api", 8), ("api", "db", 2)],
        start,
    ))
    .await
    .unwrap();
    exp.shutdown().await;
    let docs = dependency_docs(&seen);
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(
        docs[1].1["dependencies"],
        json!([{"parent": "web", "child": "api", "callCount": 3}])
    );
    assert_ne!(docs[0].0["create"]["_id"], docs[1].0["create"]["_id"]);
    let m = |name: &str, l: &[&str]| metric(&reg, name, l);
    let points = "meshgate_exporter_elasticsearch_dependencies_points_total";
    assert_eq!(m(points, &["outcome=\"used\""]), 4);
    assert_eq!(m(points, &["outcome=\"ignored\""]), 2);
    assert_eq!(m(points, &[]), 6, "every point has one outcome");
    let docs_total = "meshgate_exporter_elasticsearch_dependencies_documents_total";
    assert_eq!(m(docs_total, &["outcome=\"written\""]), 2);
    assert_eq!(m(docs_total, &[]), 2);
    let calls = "meshgate_exporter_elasticsearch_dependencies_calls_total";
    assert_eq!(m(calls, &["outcome=\"written\""]), 10);
    assert_eq!(m(calls, &[]), 10);
    // The interval task ended with the shutdown.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(dependency_docs(&seen).len(), 2);
}

#[tokio::test]
async fn failed_dependency_documents_are_resent_under_the_same_id() {
    let (seen, url) = cluster(|s, n| match n {
        // Whole request refused, then the document throttled, then in: the last attempt's
        // answer lost (timeout on our side would look the same), so the resend hits 409.
        0 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        1 => bulk_answer(&[429]),
        2 => bulk_answer(&[409, 201]),
        _ => all_created(s),
    })
    .await;
    let reg = Registry::new();
    let cfg: ElasticsearchConfig = parse_config(&json!({
        "endpoints": [url],
        "dependencies": {},
    }))
    .unwrap();
    let exp = ElasticsearchExporter::new(&cfg, "elasticsearch", &reg).unwrap();
    let start = now_nanos();
    exp.export(&request_totals(&[("web", "api", 4)], start))
        .await
        .unwrap();
    exp.flush_dependencies(dependencies::Flush::Interval).await;
    exp.flush_dependencies(dependencies::Flush::Interval).await;
    exp.export(&request_totals(&[("web", "api", 6)], start))
        .await
        .unwrap();
    exp.flush_dependencies(dependencies::Flush::Interval).await;
    // Nothing left: nothing sent.
    exp.flush_dependencies(dependencies::Flush::Interval).await;
    let docs = dependency_docs(&seen);
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(
        docs.len(),
        4,
        "the first document three times, then the second"
    );
    let id = &docs[0].0["create"]["_id"];
    assert!(
        docs[..3]
            .iter()
            .all(|d| &d.0["create"]["_id"] == id && d.1 == docs[0].1)
    );
    assert_ne!(&docs[3].0["create"]["_id"], id);
    assert_eq!(
        docs[3].1["dependencies"],
        json!([{"parent": "web", "child": "api", "callCount": 2}])
    );
    let m = |name: &str, l: &[&str]| metric(&reg, name, l);
    let d = "meshgate_exporter_elasticsearch_dependencies_";
    assert_eq!(m(&format!("{d}document_retries_total"), &[]), 2);
    assert_eq!(m(&format!("{d}document_duplicates_total"), &[]), 1);
    assert_eq!(
        m(&format!("{d}documents_total"), &["outcome=\"written\""]),
        2
    );
    assert_eq!(m(&format!("{d}calls_total"), &["outcome=\"written\""]), 6);
    assert_eq!(m(&format!("{d}calls_total"), &[]), 6);
    assert_eq!(m(&format!("{d}unsent_documents"), &[]), 0);
}

#[tokio::test]
async fn refused_and_undeliverable_dependency_documents_are_counted() {
    let (_seen, url) = cluster(|_, n| match n {
        0 => bulk_answer(&[400]),
        _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    })
    .await;
    let reg = Registry::new();
    let cfg: ElasticsearchConfig = parse_config(&json!({
        "endpoints": [url],
        "dependencies": {"interval": "1s"},
        "retry_on_failure": {"max_elapsed_time": "1500ms"},
    }))
    .unwrap();
    let exp = ElasticsearchExporter::new(&cfg, "elasticsearch", &reg).unwrap();
    let start = now_nanos();
    exp.export(&request_totals(&[("a", "b", 3)], start))
        .await
        .unwrap();
    exp.flush_dependencies(dependencies::Flush::Interval).await;
    exp.export(&request_totals(&[("a", "b", 10)], start))
        .await
        .unwrap();
    // Unavailable: kept (another interval still fits in max_elapsed_time)...
    exp.flush_dependencies(dependencies::Flush::Interval).await;
    let m = |name: &str, l: &[&str]| metric(&reg, name, l);
    let d = "meshgate_exporter_elasticsearch_dependencies_";
    assert_eq!(m(&format!("{d}unsent_documents"), &[]), 1);
    // ... then given up at shutdown, the only attempt there.
    exp.shutdown().await;
    assert_eq!(
        m(&format!("{d}documents_total"), &["outcome=\"rejected\""]),
        1
    );
    assert_eq!(m(&format!("{d}calls_total"), &["outcome=\"rejected\""]), 3);
    assert_eq!(
        m(&format!("{d}documents_total"), &["outcome=\"given_up\""]),
        1
    );
    assert_eq!(m(&format!("{d}calls_total"), &["outcome=\"given_up\""]), 7);
    assert_eq!(m(&format!("{d}calls_total"), &["outcome=\"written\""]), 0);
    assert_eq!(m(&format!("{d}unsent_documents"), &[]), 0);
}

#[tokio::test]
async fn retries_of_dependency_documents_stop_at_max_elapsed_time() {
    let (seen, url) = cluster(|_, _| StatusCode::BAD_GATEWAY.into_response()).await;
    let reg = Registry::new();
    let cfg: ElasticsearchConfig = parse_config(&json!({
        "endpoints": [url],
        "dependencies": {"interval": "100ms"},
        "retry_on_failure": {"max_elapsed_time": "250ms"},
    }))
    .unwrap();
    let exp = ElasticsearchExporter::new(&cfg, "elasticsearch", &reg).unwrap();
    exp.export(&request_totals(&[("a", "b", 3)], now_nanos()))
        .await
        .unwrap();
    for _ in 0..4 {
        exp.flush_dependencies(dependencies::Flush::Interval).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    exp.flush_dependencies(dependencies::Flush::Interval).await;
    let d = "meshgate_exporter_elasticsearch_dependencies_";
    assert_eq!(
        metric(&reg, &format!("{d}calls_total"), &["outcome=\"given_up\""]),
        3
    );
    let tries = seen.lock().unwrap().len();
    assert!((2..=4).contains(&tries), "{tries} attempts");
}

#[tokio::test]
async fn the_interval_task_resends_after_the_backoff_not_the_interval() {
    let (seen, url) = cluster(|s, n| match n {
        0 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        _ => all_created(s),
    })
    .await;
    let reg = Registry::new();
    let cfg: ElasticsearchConfig = parse_config(&json!({
        "endpoints": [url],
        "dependencies": {"interval": "2s"},
        "retry_on_failure": {"initial_interval": "50ms", "randomization_factor": 0.0},
    }))
    .unwrap();
    let exp = Arc::new(ElasticsearchExporter::new(&cfg, "elasticsearch", &reg).unwrap());
    exp.dependencies
        .as_ref()
        .unwrap()
        .start(Arc::downgrade(&exp));
    let started = tokio::time::Instant::now();
    exp.export(&request_totals(&[("a", "b", 2)], now_nanos()))
        .await
        .unwrap();
    let written = "meshgate_exporter_elasticsearch_dependencies_documents_total";
    while metric(&reg, written, &["outcome=\"written\""]) == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "never written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(3800),
        "resent at {:?}: waited for the next interval instead of the backoff",
        started.elapsed()
    );
    let docs = dependency_docs(&seen);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0], docs[1], "the same document, under the same id");
    // The task holds the exporter only weakly: dropping the last handle frees it (and Drop
    // aborts the task).
    let task_gone = Arc::downgrade(&exp);
    drop(exp);
    assert!(task_gone.upgrade().is_none());
}

#[tokio::test]
async fn metrics_need_the_dependencies_section() {
    let reg = Registry::new();
    let exp = exporter(json!({"endpoints": ["http://127.0.0.1:9"]}), &reg);
    let e = exp
        .export(&request_totals(&[("a", "b", 1)], now_nanos()))
        .await
        .unwrap_err();
    assert!(
        !e.retryable && e.message.contains("`dependencies`"),
        "{}",
        e.message
    );
    // `meshgate validate` refuses such a pipeline up front (tests/cli.rs).
    assert_eq!(
        ElasticsearchExporterFactory.signal_requires(),
        [(Signal::Metrics, "dependencies")]
    );
    assert!(
        ElasticsearchExporterFactory
            .signals()
            .contains(&Signal::Metrics)
    );
    let f = ElasticsearchExporterFactory;
    f.check(&json!({"endpoints": ["http://es:9200"], "dependencies": {}}))
        .unwrap();
    for (bad, want) in [
        (json!({"interval": "10ms"}), "dependencies.interval"),
        (
            json!({"date_layout": "01/02/2006"}),
            "dependencies.date_layout",
        ),
        (json!({"index_prefix": "A"}), "dependencies.index_prefix"),
        (json!({"batch": 1}), "unknown field"),
    ] {
        let e = f
            .check(&json!({"endpoints": ["http://es:9200"], "dependencies": bad}))
            .unwrap_err();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn dependencies_schema_documents_every_field_with_its_default() {
    let schema = serde_json::to_value(schemars::schema_for!(DependenciesConfig)).unwrap();
    let props = schema["properties"].as_object().unwrap();
    assert_eq!(props.len(), 5);
    for (name, p) in props {
        let d = p["description"].as_str().unwrap_or_default();
        assert!(d.contains("Default"), "{name}: {d:?}");
    }
    assert_eq!(schema["additionalProperties"], false);
}
