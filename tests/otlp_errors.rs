//! Every error status of the OTLP receiver, over HTTP and gRPC, against the real binary: the
//! client gets a precise status and message, the valid part of a request still goes through,
//! and `/metrics` counts what was refused.

mod common;

use bytes::{Buf, BufMut, Bytes};
use common::*;
use meshgate_pdata::otlp::*;
use meshgate_pdata::{Payload, Signal};
use prost::Message;
use std::io::Write;
use std::time::Duration;

fn span(trace: Vec<u8>, id: u8) -> Span {
    Span {
        trace_id: trace,
        span_id: vec![id; 8],
        name: format!("op{id}"),
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![meshgate_pdata::attributes::kv_str(
                    "service.name",
                    "errors-test",
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gateway(dir: &Scratch, grpc: u16, http: u16) -> Gateway {
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n        max_recv_msg_size: 64KiB\n      http:\n        endpoint: 127.0.0.1:{http}\n        max_request_body_size: 64KiB\n\
         exporters:\n  file:\n    path: {}/out.jsonl\n    flush_interval: 50ms\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
        dir.0.display()
    );
    Gateway::start(dir, "gw", &cfg)
}

fn post(
    port: u16,
    path: &str,
    ct: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, std::collections::BTreeMap<String, String>, Vec<u8>) {
    let mut h = vec![("Content-Type", ct)];
    h.extend_from_slice(extra);
    http_request(port, "POST", path, &h, body).expect("HTTP request")
}

#[test]
fn http_errors_and_partial_success() {
    let dir = Scratch::new("http-errors");
    let (grpc, http) = (free_port(), free_port());
    let mut gw = gateway(&dir, grpc, http);
    let pb = "application/x-protobuf";

    // Malformed protobuf → 400 with a google.rpc.Status body naming the problem.
    let (s, _, body) = post(http, "/v1/traces", pb, &[], b"\xff\xff\xff garbage");
    assert_eq!(s, 400);
    let msg = String::from_utf8_lossy(&body);
    assert!(
        msg.contains("malformed OTLP protobuf traces request"),
        "{msg}"
    );

    // Malformed JSON → 400, JSON body with line/column.
    let (s, h, body) = post(
        http,
        "/v1/traces",
        "application/json",
        &[],
        b"{\"resourceSpans\": [}",
    );
    assert_eq!(s, 400);
    assert_eq!(h["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("line 1 column"),
        "{v}"
    );

    // Unsupported content type → 415; unsupported content encoding → 415.
    let (s, _, body) = post(http, "/v1/traces", "text/plain", &[], b"hello");
    assert_eq!(s, 415);
    assert!(String::from_utf8_lossy(&body).contains("unsupported Content-Type `text/plain`"));
    let (s, _, body) = post(http, "/v1/traces", pb, &[("Content-Encoding", "br")], b"x");
    assert_eq!(s, 415);
    assert!(String::from_utf8_lossy(&body).contains("unsupported Content-Encoding `br`"));

    // Too large, raw and after decompression → 413.
    let (s, _, _) = post(http, "/v1/traces", pb, &[], &vec![0u8; 70 * 1024]);
    assert_eq!(s, 413);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&vec![0u8; 1024 * 1024]).unwrap();
    let (s, _, body) = post(
        http,
        "/v1/traces",
        pb,
        &[("Content-Encoding", "gzip")],
        &gz.finish().unwrap(),
    );
    assert_eq!(s, 413);
    assert!(String::from_utf8_lossy(&body).contains("decompressed body is larger"));

    // Unknown path → 404; no metrics pipeline → 404 too.
    assert_eq!(post(http, "/v1/nothing", pb, &[], b"").0, 404);
    assert_eq!(post(http, "/v1/metrics", pb, &[], b"").0, 404);

    // Partial success over protobuf (gzip body): 2 of 4 spans have bad trace ids.
    let req = traces(vec![
        span(vec![1; 16], 1),
        span(vec![1; 8], 2),
        span(vec![0; 16], 3),
        span(vec![2; 16], 4),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&req.encode_to_vec()).unwrap();
    let (s, h, body) = post(
        http,
        "/v1/traces",
        pb,
        &[("Content-Encoding", "gzip")],
        &gz.finish().unwrap(),
    );
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], pb);
    let resp = ExportTraceServiceResponse::decode(body.as_slice()).unwrap();
    let ps = resp.partial_success.expect("partial success");
    assert_eq!(ps.rejected_spans, 2);
    assert!(
        ps.error_message
            .contains("trace_id is 8 bytes, expected 16"),
        "{}",
        ps.error_message
    );

    // Partial success over JSON (zstd body), answered in JSON.
    let json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"ok"},
        {"traceId":"5b8efff798038103","spanId":"eee19b7ec3c1b175","name":"short"}]}]}]}"#;
    let z = zstd::encode_all(&json[..], 3).unwrap();
    let (s, h, body) = post(
        http,
        "/v1/traces",
        "application/json",
        &[("Content-Encoding", "zstd")],
        &z,
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["partialSuccess"]["rejectedSpans"],
        serde_json::json!("1"),
        "{v}"
    );

    // Accounting: 6 received (4 + 2), 3 invalid, 3 accepted and written.
    let m = gw.wait_metrics(Duration::from_secs(10), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file")],
        ) >= 3.0
    });
    assert_eq!(
        m.sum(
            "meshgate_receiver_received_items_total",
            &[("transport", "http")]
        ),
        6.0
    );
    assert_eq!(
        m.sum(
            "meshgate_receiver_refused_items_total",
            &[("reason", "invalid")]
        ),
        3.0
    );
    assert_eq!(m.sum("meshgate_receiver_accepted_items_total", &[]), 3.0);
    assert!(gw.stop().success());
    let written: usize = read_jsonl(&dir.path("out.jsonl"), Signal::Traces)
        .iter()
        .map(Payload::item_count)
        .sum();
    assert_eq!(written, 3);
}

/// Sends raw bytes as a gRPC request, so malformed messages can be tested.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEnc;
struct RawDec;
impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}
impl tonic::codec::Encoder for RawEnc {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}
impl tonic::codec::Decoder for RawDec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

async fn grpc_raw(port: u16, path: &'static str, body: Vec<u8>) -> Result<Bytes, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.expect("ready");
    client
        .unary(
            tonic::Request::new(Bytes::from(body)),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            RawCodec,
        )
        .await
        .map(|r| r.into_inner())
}

#[test]
fn grpc_errors_and_partial_success() {
    let dir = Scratch::new("grpc-errors");
    let (grpc, http) = (free_port(), free_port());
    let mut gw = gateway(&dir, grpc, http);
    let rt = tokio::runtime::Runtime::new().unwrap();
    const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    rt.block_on(async {
        let e = grpc_raw(grpc, TRACES, b"\xff\xff\xff garbage".to_vec())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message()
                .contains("malformed OTLP protobuf traces request")
        );

        let big = traces(
            (0..2000)
                .map(|i| span(vec![7; 16], (i % 200) as u8 + 1))
                .collect(),
        );
        assert!(big.encoded_len() > 64 * 1024);
        let e = grpc_raw(grpc, TRACES, big.encode_to_vec())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");

        let e = grpc_raw(
            grpc,
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            vec![],
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");

        let ok = traces(vec![
            span(vec![1; 16], 1),
            span(vec![1; 16], 0),
            span(vec![3; 16], 9),
        ]);
        let mut client = grpc::TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap()
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        let resp = client.export(ok).await.unwrap().into_inner();
        let ps = resp.partial_success.expect("partial success");
        assert_eq!(ps.rejected_spans, 1);
        assert!(
            ps.error_message.contains("span_id is all zeros"),
            "{}",
            ps.error_message
        );
    });
    let m = gw.wait_metrics(Duration::from_secs(10), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file")],
        ) >= 2.0
    });
    assert_eq!(
        m.sum(
            "meshgate_receiver_received_items_total",
            &[("transport", "grpc")]
        ),
        3.0
    );
    assert_eq!(
        m.sum(
            "meshgate_receiver_refused_items_total",
            &[("transport", "grpc"), ("reason", "invalid")]
        ),
        1.0
    );
    assert!(gw.stop().success());
}
