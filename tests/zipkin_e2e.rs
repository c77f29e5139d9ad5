//! The `zipkin` receiver against the real binary: Envoy-shaped Zipkin v2 JSON (plain and
//! gzip) and hand-built protobuf come out of the `file` exporter as the OTLP the mapping
//! promises, `/metrics` counts every span exactly once, every error gets its status, and real
//! Zipkin clients (py_zipkin, the OpenTelemetry SDK's Zipkin exporter) are answered as a Zipkin
//! server answers them.

mod common;

use common::*;
use meshgate_pdata::attributes::{get, get_str};
use meshgate_pdata::otlp::{KeyValue, Span, any_value::Value, span::SpanKind, status::StatusCode};
use meshgate_pdata::{Payload, Signal};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

fn gateway(dir: &Scratch, port: u16, extra: &str) -> Gateway {
    let cfg = format!(
        "receivers:\n  zipkin:\n    endpoint: 127.0.0.1:{port}\n    max_request_body_size: 64KiB\n{extra}\
         exporters:\n  file:\n    path: {}/out.jsonl\n    flush_interval: 50ms\n\
         service:\n  pipelines:\n    traces:\n      receivers: [zipkin]\n      exporters: [file]\n",
        dir.0.display()
    );
    Gateway::start(dir, "gw", &cfg)
}

fn post(
    port: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, BTreeMap<String, String>, String) {
    let (s, h, b) =
        http_request(port, "POST", "/api/v2/spans", headers, body).expect("HTTP request");
    (s, h, String::from_utf8_lossy(&b).into_owned())
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const PROTO: (&str, &str) = ("Content-Type", "application/x-protobuf");

/// What an Istio sidecar's Envoy sends to its Zipkin collector for one failed call from
/// productpage to reviews with `shared_span_context` on: the CLIENT span of productpage's
/// sidecar and the SERVER span of reviews' sidecar with the same id.
const ENVOY_CALL: &str = r#"[
  {"traceId":"463ac35c9f6413ad48485a3953bb6124","parentId":"a2fb4a1d1a96d312","id":"5af7183fb1d4cf5f",
   "kind":"CLIENT","name":"reviews.default.svc.cluster.local:9080/*",
   "timestamp":1700000000000000,"duration":2500,
   "localEndpoint":{"serviceName":"productpage.default","ipv4":"10.0.0.9"},
   "remoteEndpoint":{"serviceName":"reviews","ipv4":"10.0.0.7","port":9080},
   "tags":{"component":"proxy","node_id":"sidecar~10.0.0.9~productpage-v1-1.default~default.svc.cluster.local",
           "upstream_cluster":"outbound|9080||reviews.default.svc.cluster.local","http.method":"GET",
           "http.status_code":"503","response_flags":"UF","error":"true",
           "istio.canonical_service":"productpage","istio.namespace":"default","istio.mesh_id":"cluster.local"}},
  {"traceId":"463ac35c9f6413ad48485a3953bb6124","parentId":"a2fb4a1d1a96d312","id":"5af7183fb1d4cf5f",
   "kind":"SERVER","shared":true,"name":"reviews.default.svc.cluster.local:9080/*",
   "timestamp":1700000000000300,"duration":2000,
   "localEndpoint":{"serviceName":"reviews.default","ipv4":"10.0.0.7","port":9080},
   "annotations":[{"timestamp":1700000000002000,"value":"wr"}],
   "tags":{"component":"proxy","http.status_code":"503","error":"true","upstream_cluster":"inbound|9080||",
           "istio.canonical_service":"reviews","istio.namespace":"default"}},
  {"traceId":"463ac35c9f6413ad","id":"0000000000000abc","kind":"CLIENT","name":"details.default.svc.cluster.local:9080/*",
   "timestamp":"1700000000005000","duration":"700",
   "localEndpoint":{"serviceName":"productpage.default","ipv4":"10.0.0.9"},
   "tags":{"component":"proxy","http.status_code":"200"}}
]"#;

/// Protobuf `ListOfSpans` bytes written by hand from zipkin.proto (independent of meshgate's
/// prost structs): a PRODUCER with a 64-bit trace id and a CONSUMER.
fn protobuf_spans() -> Vec<u8> {
    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    fn ld(field: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        varint(field << 3 | 2, &mut v);
        varint(payload.len() as u64, &mut v);
        v.extend_from_slice(payload);
        v
    }
    fn span(
        trace: &[u8],
        id: u8,
        kind: u64,
        name: &str,
        service: &str,
        tag: (&str, &str),
    ) -> Vec<u8> {
        let mut s = ld(1, trace);
        s.extend(ld(3, &[id; 8]));
        s.extend([4 << 3, kind as u8]);
        s.extend(ld(5, name.as_bytes()));
        s.push(6 << 3 | 1);
        s.extend(1_700_000_001_000_000u64.to_le_bytes());
        let mut d = vec![7 << 3];
        varint(1234, &mut d);
        s.extend(d);
        s.extend(ld(8, &ld(1, service.as_bytes())));
        let mut t = ld(1, tag.0.as_bytes());
        t.extend(ld(2, tag.1.as_bytes()));
        s.extend(ld(11, &t));
        ld(1, &s)
    }
    let mut body = span(
        &[0x11; 8],
        0x21,
        3,
        "send order",
        "orders",
        ("messaging.system", "kafka"),
    );
    body.extend(span(
        &[0x12; 16],
        0x22,
        4,
        "receive order",
        "billing",
        ("messaging.system", "kafka"),
    ));
    body
}

/// Every exported span with its resource attributes.
fn exported(dir: &Scratch) -> Vec<(Vec<KeyValue>, Span)> {
    let mut out = Vec::new();
    for p in read_jsonl(&dir.path("out.jsonl"), Signal::Traces) {
        let Payload::Traces(t) = p else { continue };
        for rs in t.resource_spans {
            let res = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push((res.clone(), s));
                }
            }
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn find<'a>(
    spans: &'a [(Vec<KeyValue>, Span)],
    id: &str,
    kind: SpanKind,
) -> &'a (Vec<KeyValue>, Span) {
    spans
        .iter()
        .find(|(_, s)| hex(&s.span_id) == id && s.kind == kind as i32)
        .unwrap_or_else(|| panic!("no exported {kind:?} span {id}"))
}

fn counts(m: &Metrics) -> (f64, f64, f64) {
    let r = [("receiver", "zipkin"), ("transport", "http")];
    (
        m.sum("meshgate_receiver_received_items_total", &r),
        m.sum("meshgate_receiver_accepted_items_total", &r),
        m.sum(
            "meshgate_receiver_refused_items_total",
            &[r[0], r[1], ("reason", "invalid")],
        ),
    )
}

#[test]
fn envoy_json_gzip_and_protobuf_become_otlp_and_are_counted() {
    let dir = Scratch::new("zipkin-envoy");
    let port = free_port();
    let mut gw = gateway(&dir, port, "");

    // Plain JSON, exactly as Envoy posts it.
    let (s, _, b) = post(port, &[JSON], ENVOY_CALL.as_bytes());
    assert_eq!((s, b.as_str()), (202, ""));

    // gzip JSON without a Content-Type (Zipkin reporters default to JSON).
    let gz_body = r#"[{"traceId":"00000000000000010000000000000002","id":"0000000000000003","name":"gz",
        "localEndpoint":{"serviceName":"gzip-svc"}}]"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(gz_body.as_bytes()).unwrap();
    let (s, _, b) = post(port, &[("Content-Encoding", "gzip")], &gz.finish().unwrap());
    assert_eq!(s, 202, "{b}");

    // Hand-built protobuf, zstd-compressed.
    let z = zstd::encode_all(protobuf_spans().as_slice(), 3).unwrap();
    let (s, _, b) = post(port, &[PROTO, ("Content-Encoding", "zstd")], &z);
    assert_eq!(s, 202, "{b}");

    // One invalid span among valid ones: dropped, named, the rest accepted.
    let (s, _, b) = post(
        port,
        &[JSON],
        br#"[{"traceId":"a1","id":"b1","name":"ok1"},{"traceId":"a1","id":"nothex!"},{"traceId":"a1","id":"b2","name":"ok2"}]"#,
    );
    assert_eq!(s, 202);
    assert_eq!(
        b,
        "accepted 2 of 3 spans; dropped 1 invalid: span 1: `id` `nothex!` is not hex (0-9, a-f)"
    );
    // Nothing valid at all: 400, still counted.
    let (s, _, b) = post(port, &[JSON], br#"[{"id":"b1"}]"#);
    assert_eq!(s, 400);
    assert_eq!(
        b,
        "all 1 spans are invalid, none accepted: span 0: `traceId` is missing"
    );

    // received = 3 + 1 + 2 + 3 + 1, accepted 8, refused as invalid 2, and all 8 written.
    let m = gw.wait_metrics(Duration::from_secs(10), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file")],
        ) >= 8.0
    });
    assert_eq!(counts(&m), (10.0, 8.0, 2.0), "{}", m.text);
    assert!(gw.stop().success());
    let spans = exported(&dir);
    assert_eq!(spans.len(), 8);

    let service = |res: &[KeyValue]| get_str(res, "service.name").map(str::to_string);
    // The sidecar CLIENT span.
    let (res, c) = find(&spans, "5af7183fb1d4cf5f", SpanKind::Client);
    assert_eq!(service(res).as_deref(), Some("productpage.default"));
    assert_eq!(hex(&c.trace_id), "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(hex(&c.parent_span_id), "a2fb4a1d1a96d312");
    assert_eq!(c.name, "reviews.default.svc.cluster.local:9080/*");
    assert_eq!(c.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(c.end_time_unix_nano, 1_700_000_000_002_500_000);
    assert_eq!(get_str(&c.attributes, "http.status_code"), Some("503"));
    assert_eq!(get_str(&c.attributes, "error"), Some("true"));
    assert_eq!(
        get_str(&c.attributes, "upstream_cluster"),
        Some("outbound|9080||reviews.default.svc.cluster.local")
    );
    assert_eq!(get_str(&c.attributes, "peer.service"), Some("reviews"));
    assert_eq!(
        get_str(&c.attributes, "network.peer.address"),
        Some("10.0.0.7")
    );
    assert_eq!(
        get(&c.attributes, "network.peer.port"),
        Some(&Value::IntValue(9080))
    );
    assert_eq!(
        get_str(&c.attributes, "network.local.address"),
        Some("10.0.0.9")
    );
    assert_eq!(
        c.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(get(&c.attributes, "zipkin.shared"), None);
    // The shared SERVER span: same id, flagged, its own resource.
    let (res, sv) = find(&spans, "5af7183fb1d4cf5f", SpanKind::Server);
    assert_eq!(service(res).as_deref(), Some("reviews.default"));
    assert_eq!(
        get(&sv.attributes, "zipkin.shared"),
        Some(&Value::BoolValue(true))
    );
    assert_eq!(
        get_str(&sv.attributes, "istio.canonical_service"),
        Some("reviews")
    );
    assert_eq!(
        get(&sv.attributes, "network.local.port"),
        Some(&Value::IntValue(9080))
    );
    assert_eq!(sv.events.len(), 1);
    assert_eq!(
        (sv.events[0].name.as_str(), sv.events[0].time_unix_nano),
        ("wr", 1_700_000_000_002_000_000)
    );
    assert!(meshgate_pdata::mesh::is_failed(sv));
    // Old Envoy: 64-bit trace id, string timestamps; no error.
    let (_, d) = find(&spans, "0000000000000abc", SpanKind::Client);
    assert_eq!(hex(&d.trace_id), "0000000000000000463ac35c9f6413ad");
    assert_eq!(d.end_time_unix_nano - d.start_time_unix_nano, 700_000);
    assert_eq!(d.status, None);
    assert!(!meshgate_pdata::mesh::is_failed(d));
    // gzip: no kind is INTERNAL.
    let (res, g) = find(&spans, "0000000000000003", SpanKind::Internal);
    assert_eq!(service(res).as_deref(), Some("gzip-svc"));
    assert_eq!(hex(&g.trace_id), "00000000000000010000000000000002");
    // Protobuf.
    let (res, p) = find(&spans, "2121212121212121", SpanKind::Producer);
    assert_eq!(service(res).as_deref(), Some("orders"));
    assert_eq!(
        hex(&p.trace_id),
        format!("{}{}", "00".repeat(8), "11".repeat(8))
    );
    assert_eq!(p.name, "send order");
    assert_eq!(p.start_time_unix_nano, 1_700_000_001_000_000_000);
    assert_eq!(p.end_time_unix_nano - p.start_time_unix_nano, 1_234_000);
    assert_eq!(get_str(&p.attributes, "messaging.system"), Some("kafka"));
    let (res, q) = find(&spans, "2222222222222222", SpanKind::Consumer);
    assert_eq!(service(res).as_deref(), Some("billing"));
    assert_eq!(hex(&q.trace_id), "12".repeat(16));
    // The partially valid request.
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert!(
        names.contains(&"ok1") && names.contains(&"ok2"),
        "{names:?}"
    );
}

#[test]
fn every_error_gets_its_status_and_nothing_is_counted() {
    let dir = Scratch::new("zipkin-errors");
    let port = free_port();
    let mut gw = gateway(&dir, port, "    parse_string_tags: true\n");

    let (s, h, b) = post(port, &[JSON], b"[{\"traceId\": \"1\",\n \"id\": ]");
    assert_eq!(s, 400);
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    assert!(
        b.starts_with("malformed Zipkin v2 JSON") && b.contains("line 2 column"),
        "{b}"
    );
    let (s, _, b) = post(port, &[JSON], br#"{"traceId":"1","id":"2"}"#);
    assert_eq!(s, 400);
    assert!(b.contains("expected an array of spans"), "{b}");
    let (s, _, b) = post(port, &[PROTO], b"\x0a\x7f\x0a\x01");
    assert_eq!(s, 400);
    assert!(
        b.starts_with("malformed Zipkin v2 protobuf ListOfSpans"),
        "{b}"
    );
    let (s, _, b) = post(port, &[("Content-Type", "application/x-thrift")], b"x");
    assert_eq!(s, 415);
    assert!(
        b.contains("`application/x-thrift`")
            && b.contains("application/json or application/x-protobuf"),
        "{b}"
    );
    let (s, _, b) = post(port, &[JSON, ("Content-Encoding", "deflate")], b"[]");
    assert_eq!(s, 415);
    assert!(b.contains("unsupported Content-Encoding `deflate`"), "{b}");
    let (s, _, b) = post(port, &[JSON], &vec![b' '; 70 * 1024]);
    assert_eq!(s, 413);
    assert!(b.contains("max_request_body_size (65536 bytes)"), "{b}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&vec![b' '; 1024 * 1024]).unwrap();
    let (s, _, b) = post(
        port,
        &[JSON, ("Content-Encoding", "gzip")],
        &gz.finish().unwrap(),
    );
    assert_eq!(s, 413);
    assert!(b.starts_with("decompressed body is larger"), "{b}");
    let (s, _, b) = http_request(port, "POST", "/api/v1/spans", &[JSON], b"[]").unwrap();
    assert_eq!(s, 404);
    assert!(String::from_utf8_lossy(&b).contains("Zipkin v1 (/api/v1/spans) is not supported"));
    let (s, _, b) = http_request(port, "POST", "/v1/traces", &[JSON], b"[]").unwrap();
    assert_eq!(s, 404);
    assert!(String::from_utf8_lossy(&b).contains("send spans to POST /api/v2/spans"));
    let (s, h, _) = http_request(port, "GET", "/api/v2/spans", &[], b"").unwrap();
    assert_eq!((s, h["allow"].as_str()), (405, "POST"));

    // An empty list is accepted and counts nothing; none of the above counted a span.
    assert_eq!(post(port, &[JSON], b"[]").0, 202);
    let m = gw.metrics();
    assert_eq!(counts(&m), (0.0, 0.0, 0.0), "{}", m.text);

    // parse_string_tags: typed attributes end to end.
    let (s, _, b) = post(
        port,
        &[JSON],
        br#"[{"traceId":"1","id":"2","tags":{"http.status_code":"503","ratio":"0.5","cached":"false","v":"v1"}}]"#,
    );
    assert_eq!(s, 202, "{b}");
    gw.wait_metrics(Duration::from_secs(10), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file")],
        ) >= 1.0
    });
    assert!(gw.stop().success());
    let spans = exported(&dir);
    assert_eq!(spans.len(), 1);
    let a = &spans[0].1.attributes;
    assert_eq!(get(a, "http.status_code"), Some(&Value::IntValue(503)));
    assert_eq!(get(a, "ratio"), Some(&Value::DoubleValue(0.5)));
    assert_eq!(get(a, "cached"), Some(&Value::BoolValue(false)));
    assert_eq!(get(a, "v"), Some(&Value::StringValue("v1".into())));
}

fn client_of(span: &serde_json::Value) -> &str {
    span["client"].as_str().unwrap_or_default()
}

/// Real Zipkin clients: py_zipkin (its own tracer and HTTP transport, which insists on
/// `202`) over JSON and protobuf, and the OpenTelemetry SDK's Zipkin JSON exporter.
#[test]
fn real_zipkin_clients_are_accepted_and_mapped() {
    let Some(py) = python() else { return };
    let dir = Scratch::new("zipkin-clients");
    let port = free_port();
    let mut gw = gateway(&dir, port, "");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut sent = Vec::new();
    for (client, encoding, service) in [
        ("py_zipkin", "json", "pyz-json"),
        ("py_zipkin", "proto", "pyz-proto"),
        ("otel", "json", "otel-zipkin"),
    ] {
        let Some(summary) = zipkin_send(
            &py,
            &[
                "--client",
                client,
                "--encoding",
                encoding,
                "--endpoint",
                &endpoint,
                "--traces",
                "3",
                "--service",
                service,
            ],
        ) else {
            return;
        };
        let mut spans = summary["spans"].as_array().expect("spans").clone();
        for s in &mut spans {
            s["client"] = client.into();
        }
        assert_eq!(
            spans.len(),
            if client == "otel" { 6 } else { 9 },
            "{summary}"
        );
        sent.extend(spans);
    }
    let total = sent.len() as f64;
    let m = gw.wait_metrics(Duration::from_secs(10), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file")],
        ) >= total
    });
    assert_eq!(counts(&m), (total, total, 0.0), "{}", m.text);
    assert!(gw.stop().success());
    let spans = exported(&dir);
    assert_eq!(spans.len(), sent.len());
    for want in &sent {
        let str_of = |k: &str| want[k].as_str().unwrap_or_default().to_string();
        let kind = match str_of("kind").as_str() {
            "CLIENT" => SpanKind::Client,
            "SERVER" => SpanKind::Server,
            _ => SpanKind::Internal,
        };
        let (res, got) = find(&spans, &str_of("span_id"), kind);
        // 64-bit trace ids (py_zipkin's default) are left-padded to 128 bits.
        assert_eq!(
            hex(&got.trace_id),
            format!("{:0>32}", str_of("trace_id")),
            "{want}"
        );
        assert_eq!(hex(&got.parent_span_id), str_of("parent_id"), "{want}");
        assert_eq!(got.name, str_of("name"));
        assert_eq!(
            get_str(res, "service.name"),
            Some(str_of("service").as_str())
        );
        if !str_of("remote_service").is_empty() {
            assert_eq!(
                get_str(&got.attributes, "peer.service"),
                Some(str_of("remote_service").as_str())
            );
        }
        let failed = want["error"].as_bool().unwrap_or(false);
        assert_eq!(
            got.status
                .as_ref()
                .map(|s| s.code == StatusCode::Error as i32),
            failed.then_some(true),
            "{want}"
        );
        if let Some(d) = want.get("status_description") {
            assert_eq!(
                got.status.as_ref().map(|s| s.message.as_str()),
                failed.then_some(d.as_str().unwrap_or_default())
            );
        }
        let events: Vec<&str> = got.events.iter().map(|e| e.name.as_str()).collect();
        let want_events: Vec<&str> = want["annotations"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        // py_zipkin annotations are plain values; the OpenTelemetry exporter writes an event
        // as `{"retry": {"attempt": 2}}`, which comes back as the event with its attributes.
        assert_eq!(events, want_events, "{want}");
        if client_of(want) == "otel" && kind == SpanKind::Client {
            assert_eq!(
                get(&got.events[0].attributes, "attempt"),
                Some(&Value::IntValue(2))
            );
        }
    }
}
