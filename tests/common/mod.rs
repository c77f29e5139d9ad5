//! Harness for end-to-end tests: starts the real `meshgate` binary on free loopback ports,
//! reads its `/metrics`, stops it with SIGTERM, and finds the real peers (OpenTelemetry Python
//! SDK, telemetrygen) installed by `scripts/peers/install.sh`.
#![allow(dead_code)]

pub mod webdriver;

use meshgate_pdata::{Payload, Signal};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; good enough on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A fresh scratch directory under the target dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("{name}-{}-{:x}", std::process::id(), rand_u64()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A running meshgate process.
pub struct Gateway {
    child: Option<Child>,
    pub admin: u16,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Gateway {
    /// Writes `config` (YAML; `ADMIN_PORT` is replaced by a free port) and starts
    /// `meshgate run -c` on it, waiting until `/readyz` answers 200.
    pub fn start(scratch: &Scratch, name: &str, config: &str) -> Gateway {
        let admin = free_port();
        let config = config.replace("ADMIN_PORT", &admin.to_string());
        let config = if config.contains("telemetry:") {
            config
        } else {
            format!(
                "{config}\n  telemetry:\n    logs:\n      level: info\n    admin:\n      endpoint: 127.0.0.1:{admin}\n"
            )
        };
        let cfg_path = scratch.path(&format!("{name}.yaml"));
        std::fs::write(&cfg_path, &config).expect("write config");
        let log = scratch.path(&format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("create log");
        let child = Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .arg("run")
            .arg("-c")
            .arg(&cfg_path)
            .arg("--drain-timeout")
            .arg("10s")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn meshgate");
        let mut gw = Gateway {
            child: Some(child),
            admin,
            log,
            config: cfg_path,
        };
        gw.wait_ready(Duration::from_secs(30));
        gw
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(self.admin, "/readyz") {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "meshgate exited with {status} before becoming ready; its log:\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "meshgate not ready after {timeout:?}; its log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The current `/metrics`.
    pub fn metrics(&self) -> Metrics {
        let (status, body) = http_get(self.admin, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Polls `/metrics` until `pred` holds, or panics with the last scrape after `timeout`.
    pub fn wait_metrics(&self, timeout: Duration, pred: impl Fn(&Metrics) -> bool) -> Metrics {
        let start = Instant::now();
        loop {
            let m = self.metrics();
            if pred(&m) {
                return m;
            }
            if start.elapsed() > timeout {
                panic!(
                    "condition not met within {timeout:?}; /metrics:\n{}\nlog:\n{}",
                    m.text,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("gateway already stopped");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!(
                    "meshgate did not exit within 30s of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET on 127.0.0.1.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let (status, _, body) = http_request(port, "GET", path, &[], &[])?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// POSTs an OTLP/HTTP protobuf traces body to `/v1/traces` on `port` and asserts the 200, as
/// the e2e tests and benches feed a gateway.
pub fn post_traces(port: u16, body: &[u8]) {
    let (status, _, answer) = http_request(
        port,
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        body,
    )
    .expect("POST /v1/traces");
    assert_eq!(
        status,
        200,
        "POST /v1/traces: {}",
        String::from_utf8_lossy(&answer)
    );
}

/// A minimal HTTP/1.1 request on 127.0.0.1; returns status, headers (lower-case names) and body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, BTreeMap<String, String>, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let mut hdrs = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            hdrs.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if hdrs.get("transfer-encoding").map(|v| v.as_str()) == Some("chunked") {
        body = dechunk(&body);
    }
    Ok((status, hdrs, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size + 2 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// A parsed Prometheus text scrape.
pub struct Metrics {
    pub text: String,
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut series = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').expect("metric line");
            let value: f64 = value.parse().expect("metric value");
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => {
                    let rest = rest.trim_end_matches('}');
                    let mut m = BTreeMap::new();
                    for pair in split_labels(rest) {
                        let (k, v) = pair.split_once('=').expect("label");
                        m.insert(k.to_string(), v.trim_matches('"').to_string());
                    }
                    (n.to_string(), m)
                }
                None => (name_labels.to_string(), BTreeMap::new()),
            };
            series.push((name, labels, value));
        }
        Metrics {
            text: text.to_string(),
            series,
        }
    }

    /// Sum of every series of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(|x| x.as_str()) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

fn split_labels(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            '"' => {
                in_q = !in_q;
                cur.push(c)
            }
            ',' if !in_q => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Reads an OTLP/JSON lines file written by the `file` exporter.
pub fn read_jsonl(path: &Path, signal: Signal) -> Vec<Payload> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| meshgate_pdata::json::decode(signal, l.as_bytes()).expect("valid OTLP/JSON line"))
        .collect()
}

/// Where the peers are, or `None` (test skipped with a message) when they are missing and
/// `MESHGATE_REQUIRE_PEERS` is not `1`; with it, a missing peer fails the test.
pub fn peer(var: &str, default_rel: &str, what: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let dir = std::env::var_os("MESHGATE_PEERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache/meshgate/peers"));
        dir.join(default_rel)
    });
    if path.exists() {
        return Some(path);
    }
    if std::env::var("MESHGATE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!(
            "peer {what} not found at {} (MESHGATE_REQUIRE_PEERS=1): run scripts/peers/install.sh",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: peer {what} not found at {}; run scripts/peers/install.sh (or scripts/test)",
        path.display()
    );
    None
}

/// The OpenTelemetry Python SDK's interpreter.
pub fn python() -> Option<PathBuf> {
    peer(
        "MESHGATE_PYTHON",
        "venv/bin/python",
        "OpenTelemetry Python SDK",
    )
}

/// The telemetrygen binary.
pub fn telemetrygen() -> Option<PathBuf> {
    peer("MESHGATE_TELEMETRYGEN", "bin/telemetrygen", "telemetrygen")
}

/// Runs tests/peers/otel_send.py and returns its JSON summary.
pub fn otel_send(python: &Path, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/otel_send.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("run otel_send.py");
    assert!(
        out.status.success(),
        "otel_send.py {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("otel_send.py summary JSON")
}

/// The address of a running backend service started by `scripts/peers/services.sh` (which
/// exports `var`), or `None` (test skipped with a message) when it is not running and
/// `MESHGATE_REQUIRE_PEERS` is not `1`; with it, a missing service fails the test.
pub fn service(var: &str, what: &str) -> Option<String> {
    if let Ok(v) = std::env::var(var)
        && !v.is_empty()
    {
        return Some(v);
    }
    if std::env::var("MESHGATE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!(
            "{what} is not running ({var} is unset, MESHGATE_REQUIRE_PEERS=1): run scripts/test, or \
             scripts/peers/services.sh start and source the env file it prints"
        );
    }
    eprintln!(
        "SKIPPED: {what} is not running ({var} is unset); run scripts/peers/services.sh start"
    );
    None
}

/// GET on a full `http://127.0.0.1:PORT/path` URL; returns status and body.
pub fn http_get_url(url: &str) -> std::io::Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other(format!("not an http:// URL: {url}")))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port: u16 = hostport
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no port in {url}")))?;
    http_get(port, path)
}

/// Runs tests/peers/zipkin_send.py (real Zipkin clients: py_zipkin, the OpenTelemetry Zipkin
/// exporter) and returns its JSON summary, or `None` (skipped with a message) when the venv
/// lacks the Zipkin client libraries (exit code 4: installed before they were pinned) and
/// `MESHGATE_REQUIRE_PEERS` is not `1`; with it, that fails the test.
pub fn zipkin_send(python: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/zipkin_send.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("run zipkin_send.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(4) {
        if std::env::var("MESHGATE_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!(
                "zipkin_send.py {args:?}: Zipkin client missing (MESHGATE_REQUIRE_PEERS=1):\n{stderr}"
            );
        }
        eprintln!("SKIPPED: {}", stderr.trim());
        return None;
    }
    assert!(
        out.status.success(),
        "zipkin_send.py {args:?} failed ({}):\n{stderr}",
        out.status
    );
    Some(serde_json::from_slice(&out.stdout).expect("zipkin_send.py summary JSON"))
}

impl Metrics {
    /// Every series of `name`: its labels and value, in scrape order.
    pub fn series(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.series
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }
}
