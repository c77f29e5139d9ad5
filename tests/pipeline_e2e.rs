//! End-to-end behaviour of the engine through the real binary: backpressure reaches clients
//! as retryable refusals, the memory limiter refuses above its limit, shutdown drains batched
//! data, a stalled exporter does not slow a healthy one, and the OTLP exporters forward data
//! unchanged to another meshgate.

mod common;

use common::*;
use meshgate_pdata::otlp::*;
use meshgate_pdata::{Payload, Signal};
use prost::Message;
use std::time::{Duration, Instant};

fn request(n: usize, seed: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![meshgate_pdata::attributes::kv_str(
                    "service.name",
                    "reviews.default",
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: [[seed; 8], (i as u64 + 1).to_be_bytes()].concat(),
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: "reviews.default.svc.cluster.local:9080/*".into(),
                        kind: 2,
                        attributes: vec![
                            meshgate_pdata::attributes::kv_str("http.status_code", "200"),
                            meshgate_pdata::attributes::kv_str(
                                "upstream_cluster",
                                "inbound|9080||",
                            ),
                        ],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn post_traces(
    port: u16,
    req: &ExportTraceServiceRequest,
) -> (u16, std::collections::BTreeMap<String, String>, Vec<u8>) {
    http_request(
        port,
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &req.encode_to_vec(),
    )
    .expect("POST /v1/traces")
}

fn written(path: &std::path::Path) -> usize {
    read_jsonl(path, Signal::Traces)
        .iter()
        .map(Payload::item_count)
        .sum()
}

/// A TCP listener that never accepts: connections hang in the backlog, like a stalled backend.
fn black_hole() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn backpressure_becomes_retryable_refusals_over_http_and_grpc() {
    let dir = Scratch::new("backpressure");
    let (_hole, hole) = black_hole();
    let (grpc, http) = (free_port(), free_port());
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         exporters:\n  otlp/stalled:\n    endpoint: 127.0.0.1:{hole}\n    timeout: 60s\n    sending_queue:\n      num_consumers: 1\n      queue_size: 1\n      on_full: block\n      block_timeout: 60s\n    retry_on_failure:\n      enabled: false\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp/stalled]\n"
    );
    let mut gw = Gateway::start(&dir, "gw", &cfg);
    let mut accepted = 0;
    let mut refusal = None;
    for i in 0..200 {
        let (s, h, body) = post_traces(http, &request(1, i as u8));
        if s == 200 {
            accepted += 1;
            continue;
        }
        refusal = Some((s, h, body));
        break;
    }
    let (s, h, body) =
        refusal.expect("the gateway never refused although its only exporter is stalled");
    assert_eq!(s, 429, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h.get("retry-after").map(String::as_str), Some("1"));
    assert!(String::from_utf8_lossy(&body).contains("pipeline `traces` is full"));
    // One in flight, one queued, one held by the blocked pipeline, the rest in its input queue.
    assert!(accepted >= 3, "accepted {accepted}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = grpc::TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap();
        let e = c.export(request(1, 250)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("overloaded"), "{}", e.message());
        assert_eq!(
            meshgate_pdata::rpc::retry_delay(e.details()),
            Some(Duration::from_secs(1)),
            "RetryInfo in the status details"
        );
    });
    let m = gw.metrics();
    assert_eq!(
        m.sum(
            "meshgate_receiver_refused_items_total",
            &[("reason", "backpressure")]
        ),
        2.0
    );
    assert_eq!(
        m.sum("meshgate_receiver_accepted_items_total", &[]),
        accepted as f64
    );
    // Shutdown cannot deliver to a stalled backend: the loss is counted and reported.
    assert!(gw.stop().success());
    let log = gw.log_text();
    assert!(log.contains("could not be delivered"), "{log}");
}

#[test]
fn memory_limiter_refuses_above_its_limit() {
    let dir = Scratch::new("memlimit");
    let (grpc, http) = (free_port(), free_port());
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         processors:\n  memory_limiter:\n    check_interval: 100ms\n    limit_mib: 1\n\
         exporters:\n  debug:\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [memory_limiter]\n      exporters: [debug]\n"
    );
    let mut gw = Gateway::start(&dir, "gw", &cfg);
    // The process uses far more than 1 MiB: after the first check every request is refused.
    let start = Instant::now();
    let (s, h, body) = loop {
        let r = post_traces(http, &request(2, 1));
        if r.0 != 200 || start.elapsed() > Duration::from_secs(5) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&body));
    assert!(h.contains_key("retry-after"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = grpc::TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap();
        let e = c.export(request(3, 2)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.message().contains("memory limit"), "{}", e.message());
        assert!(meshgate_pdata::rpc::retry_delay(e.details()).is_some_and(|d| !d.is_zero()));
    });
    let m = gw.metrics();
    assert!(
        m.sum(
            "meshgate_receiver_refused_items_total",
            &[("reason", "memory_limit")]
        ) >= 5.0
    );
    assert!(gw.stop().success());
}

#[test]
fn shutdown_drains_batched_data_to_the_exporters() {
    let dir = Scratch::new("drain");
    let (grpc, http) = (free_port(), free_port());
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         processors:\n  batch:\n    timeout: 1h\n    send_batch_size: 100000\n\
         exporters:\n  file:\n    path: {}/out.jsonl\n    flush_interval: 1h\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [file]\n",
        dir.0.display()
    );
    let mut gw = Gateway::start(&dir, "gw", &cfg);
    for i in 0..5 {
        assert_eq!(post_traces(http, &request(100, i)).0, 200);
    }
    let m = gw.metrics();
    assert_eq!(m.sum("meshgate_receiver_accepted_items_total", &[]), 500.0);
    // Still held by the batch processor.
    assert_eq!(m.sum("meshgate_exporter_received_items_total", &[]), 0.0);
    assert!(gw.stop().success(), "{}", gw.log_text());
    assert_eq!(written(&dir.path("out.jsonl")), 500);
    assert!(
        gw.log_text().contains("all accepted data delivered"),
        "{}",
        gw.log_text()
    );
}

#[test]
fn a_stalled_exporter_does_not_slow_a_healthy_one() {
    let dir = Scratch::new("stalled");
    let (_hole, hole) = black_hole();
    let (grpc, http) = (free_port(), free_port());
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         exporters:\n  file:\n    path: {}/out.jsonl\n    flush_interval: 50ms\n  otlp/stalled:\n    endpoint: 127.0.0.1:{hole}\n    timeout: 60s\n    sending_queue:\n      num_consumers: 1\n      queue_size: 2\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file, otlp/stalled]\n",
        dir.0.display()
    );
    let mut gw = Gateway::start(&dir, "gw", &cfg);
    for i in 0..50 {
        let (s, _, body) = post_traces(http, &request(20, i));
        assert_eq!(s, 200, "request {i}: {}", String::from_utf8_lossy(&body));
    }
    let m = gw.wait_metrics(Duration::from_secs(10), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file")],
        ) >= 1000.0
    });
    let stalled = [("exporter", "otlp/stalled")];
    assert_eq!(m.sum("meshgate_receiver_refused_items_total", &[]), 0.0);
    assert_eq!(m.sum("meshgate_exporter_sent_items_total", &stalled), 0.0);
    let dropped = m.sum(
        "meshgate_exporter_dropped_items_total",
        &[stalled[0], ("reason", "queue_full")],
    );
    let queued = m.sum("meshgate_exporter_queue_items", &stalled);
    assert_eq!(
        m.sum("meshgate_exporter_received_items_total", &stalled),
        1000.0
    );
    assert_eq!(
        dropped + queued,
        1000.0,
        "received = sent + dropped + queued"
    );
    assert!(queued <= 60.0, "queue bounded: {queued}");
    drop(m);
    assert!(gw.stop().success());
    assert_eq!(written(&dir.path("out.jsonl")), 1000);
}

#[test]
fn otlp_and_otlphttp_exporters_forward_unchanged_to_another_gateway() {
    // B's gRPC receiver takes at most 8 KiB per message; A's batches (~25 KB) must be split
    // to fit by A's `max_request_size`, not dropped.
    let dir = Scratch::new("forward");
    let (b_grpc, b_http) = (free_port(), free_port());
    let b_cfg = format!(
        "receivers:\n  otlp/g:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{b_grpc}\n        max_recv_msg_size: 8KiB\n  otlp/h:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{b_http}\n\
         exporters:\n  file/g:\n    path: {d}/via-grpc.jsonl\n    flush_interval: 50ms\n  file/h:\n    path: {d}/via-http.jsonl\n    flush_interval: 50ms\n\
         service:\n  pipelines:\n    traces/g:\n      receivers: [otlp/g]\n      exporters: [file/g]\n    traces/h:\n      receivers: [otlp/h]\n      exporters: [file/h]\n",
        d = dir.0.display()
    );
    let mut b = Gateway::start(&dir, "b", &b_cfg);
    let (a_grpc, a_http) = (free_port(), free_port());
    let a_cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{a_grpc}\n      http:\n        endpoint: 127.0.0.1:{a_http}\n\
         processors:\n  batch:\n    timeout: 50ms\n\
         exporters:\n  otlp:\n    endpoint: 127.0.0.1:{b_grpc}\n    max_request_size: 8KiB\n  otlphttp:\n    endpoint: http://127.0.0.1:{b_http}\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp, otlphttp]\n"
    );
    let mut a = Gateway::start(&dir, "a", &a_cfg);
    let sent = request(300, 9);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = grpc::TraceServiceClient::connect(format!("http://127.0.0.1:{a_grpc}"))
            .await
            .unwrap();
        c.export(sent.clone()).await.unwrap();
    });
    a.wait_metrics(Duration::from_secs(15), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "otlp")],
        ) >= 300.0
            && m.sum(
                "meshgate_exporter_sent_items_total",
                &[("exporter", "otlphttp")],
            ) >= 300.0
    });
    let m = b.wait_metrics(Duration::from_secs(15), |m| {
        m.sum("meshgate_exporter_sent_items_total", &[]) >= 600.0
    });
    assert_eq!(m.sum("meshgate_receiver_refused_items_total", &[]), 0.0);
    let m = a.metrics();
    assert_eq!(m.sum("meshgate_exporter_dropped_items_total", &[]), 0.0);
    assert!(a.stop().success());
    assert!(b.stop().success());
    let expect: Vec<Span> = sent.resource_spans[0].scope_spans[0].spans.clone();
    for file in ["via-grpc.jsonl", "via-http.jsonl"] {
        let mut got: Vec<Span> = Vec::new();
        for p in read_jsonl(&dir.path(file), Signal::Traces) {
            let Payload::Traces(t) = p else { panic!() };
            for rs in t.resource_spans {
                assert_eq!(rs.resource, sent.resource_spans[0].resource);
                for ss in rs.scope_spans {
                    got.extend(ss.spans);
                }
            }
        }
        got.sort_by(|x, y| x.span_id.cmp(&y.span_id));
        assert_eq!(got, expect, "{file}");
    }
}
