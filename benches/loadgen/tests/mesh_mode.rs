//! `meshgate-loadgen mesh` end to end: the binary against a minimal HTTP server that records
//! what it receives, for the Zipkin and OTLP/HTTP transports, plus the dry run and errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use meshgate_pdata::otlp::ExportTraceServiceRequest;
use prost::Message;

/// A received request: path, content type, body.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Serves HTTP/1.1 on a free port, answering every request with `status` and an empty body
/// (an empty protobuf is a valid `ExportTraceServiceResponse`). Returns the base URL.
fn serve(status: &'static str) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let store = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let store = store.clone();
            std::thread::spawn(move || handle(conn, status, store));
        }
    });
    (url, got)
}

fn handle(conn: TcpStream, status: &str, store: Received) {
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let (mut length, mut content_type) = (0usize, String::new());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        store.lock().unwrap().push((path, content_type, body));
        let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn topology(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/meshsim/topologies")
        .join(name)
}

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshgate-loadgen"))
        .args(args)
        .output()
        .unwrap()
}

fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON line ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn zipkin_flavor_posts_json_spans_to_the_zipkin_path() {
    let (url, got) = serve("202 Accepted");
    let bookinfo = topology("bookinfo.yaml");
    let out = loadgen(&[
        "mesh",
        bookinfo.to_str().unwrap(),
        "--flavor",
        "envoy-zipkin",
        "--endpoint",
        &url,
        "--duration",
        "1s",
        "--rate",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&out);
    let got = got.lock().unwrap();
    assert_eq!(s["requests"].as_u64().unwrap() as usize, got.len());
    assert_eq!(s["requests_ok"], s["requests"]);
    let mut spans = 0u64;
    let mut shared = 0;
    for (path, content_type, body) in got.iter() {
        assert_eq!(path, "/api/v2/spans");
        assert_eq!(content_type, "application/json");
        let list: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
        shared += list.iter().filter(|z| z["shared"] == true).count();
        spans += list.len() as u64;
    }
    assert!(spans > 0);
    assert!(shared > 0, "Envoy's default shares span ids");
    assert_eq!(s["sent"].as_u64(), Some(spans));
    assert_eq!(s["accepted"].as_u64(), Some(spans));
    assert_eq!(s["spans"].as_u64(), Some(spans));
    let edges = s["expected_edges"].as_array().unwrap();
    let user = edges
        .iter()
        .find(|e| e["client"] == "user")
        .expect("a user edge");
    assert_eq!(user["server"], "productpage.default");
    assert_eq!(user["requests"], s["roots"]);
}

#[test]
fn otlp_http_flavor_posts_protobuf_to_v1_traces() {
    let (url, got) = serve("200 OK");
    let emojivoto = topology("linkerd-emojivoto.yaml");
    let out = loadgen(&[
        "mesh",
        emojivoto.to_str().unwrap(),
        "--flavor",
        "linkerd",
        "--protocol",
        "http",
        "--endpoint",
        &url,
        "--duration",
        "1s",
        "--rate",
        "5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&out);
    let got = got.lock().unwrap();
    let mut spans = 0u64;
    for (path, content_type, body) in got.iter() {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                spans += ss.spans.len() as u64;
            }
        }
    }
    assert!(spans > 0);
    assert_eq!(s["accepted"].as_u64(), Some(spans));
    assert_eq!(s["transport"], "otlp-http");
}

#[test]
fn dry_run_prints_the_expected_graph_without_sending() {
    let shop = topology("shop.yaml");
    let out = loadgen(&[
        "mesh",
        shop.to_str().unwrap(),
        "--dry-run",
        "--duration",
        "2s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&out);
    assert_eq!(s["requests_ok"], 0);
    assert!(s["roots"].as_u64().unwrap() > 20, "50 roots/s for 2 s");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("catalog.shop -> orders [database]"),
        "{stderr}"
    );
}

#[test]
fn bad_topologies_and_options_are_reported() {
    let dir = std::env::temp_dir().join(format!("meshgate-loadgen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "services: [{ name: a }]\nentry: { service: a, rate: 1 }\ncalls: [{ from: a, to: b }]\n",
    )
    .unwrap();
    let out = loadgen(&["mesh", bad.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("bad.yaml:3: calls[0].to: unknown service, database, queue or external `b`"),
        "{stderr}"
    );
    let bookinfo = topology("bookinfo.yaml");
    let out = loadgen(&[
        "mesh",
        bookinfo.to_str().unwrap(),
        "--flavor",
        "envoy-zipkin",
        "--protocol",
        "grpc",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not apply"));
    let out = loadgen(&["mesh", bookinfo.to_str().unwrap(), "--flavor", "istio"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flavor `istio`"));
    std::fs::remove_dir_all(&dir).ok();
}
