//! `meshgate-loadgen`: sends Istio/Envoy-shaped OTLP trace requests to an OTLP endpoint over
//! gRPC or HTTP (protobuf) at a fixed rate or flat out, and reports what the endpoint accepted.
//! `meshgate-loadgen mesh TOPOLOGY` instead sends simulated mesh traffic (Envoy OTLP, Envoy
//! Zipkin or Linkerd shaped, from `meshgate-meshsim`) at the topology's rate, and prints the
//! service graph it must produce.
//!
//! Progress (one line per second) and the human summary go to stderr; the final JSON summary
//! is the only line on stdout, for scripts.

mod mesh_cmd;

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use meshgate_loadgen::{mesh_request, restamp, span_count};
use meshgate_pdata::otlp::grpc::TraceServiceClient;
use meshgate_pdata::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

/// Transport used to send the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protocol {
    /// OTLP/gRPC (`TraceService/Export`).
    Grpc,
    /// OTLP/HTTP with a protobuf body, `POST /v1/traces`.
    Http,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Compress {
    /// Uncompressed.
    None,
    /// gzip (gRPC message compression, or `Content-Encoding: gzip` over HTTP).
    Gzip,
}

/// Load generator for meshgate: Istio sidecar spans over OTLP gRPC or HTTP.
///
/// Without a subcommand it sends fixed-size requests of Istio sidecar spans, as fast as asked
/// (`--rate` spans/s, 0 = flat out), to measure throughput. `mesh TOPOLOGY` sends simulated
/// mesh traffic (whole traces, split the way proxies flush them) at the topology's rate, for
/// demos and for checking the service graph and RED metrics end to end.
#[derive(Debug, Parser)]
#[command(
    name = "meshgate-loadgen",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  meshgate-loadgen --protocol http --rate 100000 --duration 30s\n  \
                  meshgate-loadgen mesh crates/meshsim/topologies/bookinfo.yaml --flavor envoy-otlp\n  \
                  meshgate-loadgen mesh crates/meshsim/topologies/shop.yaml --flavor envoy-zipkin --rate 10\n  \
                  meshgate-loadgen mesh crates/meshsim/topologies/linkerd-emojivoto.yaml --flavor linkerd --dry-run"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

/// Modes other than the default throughput mode.
#[derive(Debug, Subcommand)]
enum Command {
    /// Send simulated service mesh traffic from a topology file.
    ///
    /// Whole traces shaped like Envoy/Istio sidecars over OTLP, Envoy's Zipkin tracer or
    /// Linkerd proxies (topologies to start from: crates/meshsim/topologies/), at the
    /// topology's request rate times --rate, each simulated proxy flushing its own requests
    /// (5 spans or 5 s). Prints the service graph the traffic must produce: a table on stderr,
    /// JSON (`expected_edges`) on stdout.
    Mesh(mesh_cmd::MeshArgs),
}

/// Options of the default (throughput) mode.
#[derive(Debug, clap::Args)]
struct Args {
    /// Target: `host:port` for gRPC (default 127.0.0.1:4317), base URL for HTTP (default
    /// http://127.0.0.1:4318; `/v1/traces` is appended unless present).
    #[arg(long)]
    endpoint: Option<String>,
    /// OTLP transport.
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// Target rate in spans per second over all workers; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to send for (e.g. `10s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Spans in each export request.
    #[arg(long, default_value_t = 500)]
    spans_per_request: usize,
    /// Requests in flight at once (one worker task each).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Request compression.
    #[arg(long, value_enum, default_value = "none")]
    compression: Compress,
}

/// Counters shared by the workers and the reporter.
#[derive(Default)]
pub(crate) struct Stats {
    requests_ok: AtomicU64,
    spans_sent: AtomicU64,
    spans_accepted: AtomicU64,
    spans_rejected: AtomicU64,
    refused: AtomicU64,
    refused_spans: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn error(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(msg);
        }
    }

    fn refusal(&self, spans: u64, msg: String) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.refused_spans.fetch_add(spans, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("refused: {msg}"));
        }
    }

    fn ok(&self, spans: u64, rejected: u64) {
        self.requests_ok.fetch_add(1, Ordering::Relaxed);
        self.spans_rejected.fetch_add(rejected, Ordering::Relaxed);
        self.spans_accepted
            .fetch_add(spans.saturating_sub(rejected), Ordering::Relaxed);
    }
}

/// One way of sending a request; cheap to clone per worker.
#[derive(Clone)]
enum Sender {
    Grpc(Box<TraceServiceClient<Channel>>),
    Http(Box<HttpSender>),
}

/// An HTTP target (OTLP/HTTP `/v1/traces` or Zipkin `/api/v2/spans`): a pooled client, the
/// full URI, the body's content type and whether to gzip bodies.
#[derive(Clone)]
struct HttpSender {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    content_type: &'static str,
    gzip: bool,
}

impl Sender {
    async fn send(&mut self, req: ExportTraceServiceRequest, spans: u64, stats: &Stats) {
        match self {
            Sender::Grpc(client) => match client.export(req).await {
                Ok(resp) => {
                    let rejected = rejected_spans(&resp.into_inner());
                    stats.ok(spans, rejected);
                }
                Err(st) if matches!(st.code(), Code::Unavailable | Code::ResourceExhausted) => {
                    stats.refusal(spans, format!("{:?}: {}", st.code(), st.message()));
                }
                Err(st) => stats.error(format!("gRPC {:?}: {}", st.code(), st.message())),
            },
            Sender::Http(h) => h.post(req.encode_to_vec(), spans, stats).await,
        }
    }
}

impl HttpSender {
    /// Posts `body`; an OTLP response's partial success counts rejected spans.
    async fn post(&self, mut body: Vec<u8>, spans: u64, stats: &Stats) {
        let mut builder = hyper::Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, self.content_type);
        if self.gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::default(),
            );
            if let Err(e) = enc.write_all(&body) {
                return stats.error(format!("gzip: {e}"));
            }
            body = match enc.finish() {
                Ok(b) => b,
                Err(e) => return stats.error(format!("gzip: {e}")),
            };
            builder = builder.header(hyper::header::CONTENT_ENCODING, "gzip");
        }
        let request = match builder.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return stats.error(format!("building request: {e}")),
        };
        let resp = match self.client.request(request).await {
            Ok(r) => r,
            Err(e) => return stats.error(format!("HTTP: {}", chain(&e))),
        };
        let status = resp.status();
        let bytes = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return stats.error(format!("HTTP body: {e}")),
        };
        if status.is_success() {
            let rejected = if self.content_type == PROTOBUF {
                ExportTraceServiceResponse::decode(bytes)
                    .map(|r| rejected_spans(&r))
                    .unwrap_or(0)
            } else {
                0
            };
            stats.ok(spans, rejected);
        } else if status.as_u16() == 429 || status.as_u16() == 503 {
            stats.refusal(spans, format!("HTTP {status}"));
        } else {
            let text = String::from_utf8_lossy(&bytes);
            let text: String = text.chars().take(300).collect();
            stats.error(format!("HTTP {status}: {text}"));
        }
    }
}

/// Content type of OTLP/HTTP protobuf bodies.
const PROTOBUF: &str = "application/x-protobuf";

/// `e` and its sources, joined with ": " (tonic and hyper put the useful part in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

fn rejected_spans(resp: &ExportTraceServiceResponse) -> u64 {
    resp.partial_success
        .as_ref()
        .map(|p| p.rejected_spans.max(0) as u64)
        .unwrap_or(0)
}

/// A gRPC OTLP sender for `endpoint` (`host:port` or a URL).
async fn grpc_sender(endpoint: Option<&str>, gzip: bool) -> Result<Sender, String> {
    let ep = endpoint.unwrap_or("127.0.0.1:4317");
    let uri = if ep.contains("://") {
        ep.to_string()
    } else {
        format!("http://{ep}")
    };
    let channel = tonic::transport::Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("bad endpoint {uri}: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connecting to {uri}: {}", chain(&e)))?;
    let mut client = TraceServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    if gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    Ok(Sender::Grpc(Box::new(client)))
}

/// An HTTP sender posting to `endpoint` (default `default_base`), with `path` appended unless
/// the endpoint already ends with it.
fn http_sender(
    endpoint: Option<&str>,
    default_base: &str,
    path: &str,
    content_type: &'static str,
    pool: usize,
    gzip: bool,
) -> Result<HttpSender, String> {
    let ep = endpoint.unwrap_or(default_base).trim_end_matches('/');
    let url = if ep.ends_with(path) {
        ep.to_string()
    } else {
        format!("{ep}{path}")
    };
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("bad endpoint {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "bad endpoint {url}: expected an http:// URL (TLS is not supported by the load generator)"
        ));
    }
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool.max(1))
        .build(conn);
    Ok(HttpSender {
        client,
        uri,
        content_type,
        gzip,
    })
}

async fn make_sender(args: &Args) -> Result<Sender, String> {
    let gzip = args.compression == Compress::Gzip;
    match args.protocol {
        Protocol::Grpc => grpc_sender(args.endpoint.as_deref(), gzip).await,
        Protocol::Http => Ok(Sender::Http(Box::new(http_sender(
            args.endpoint.as_deref(),
            "http://127.0.0.1:4318",
            "/v1/traces",
            PROTOBUF,
            args.concurrency,
            gzip,
        )?))),
    }
}

/// Sends requests until `deadline`, paced to `per_worker_rate` spans/s when non-zero.
async fn worker(
    id: u64,
    mut sender: Sender,
    spans_per_request: usize,
    per_worker_rate: f64,
    start: Instant,
    deadline: Instant,
    stats: Arc<Stats>,
) {
    // Each worker keeps one template and gives it fresh ids before every send; seeds are
    // spread so no two requests of any worker share ids.
    let mut template = mesh_request(spans_per_request, id);
    let spans = span_count(&template) as u64;
    let mut n: u64 = 0;
    loop {
        if per_worker_rate > 0.0 {
            let due = start + Duration::from_secs_f64(n as f64 * spans as f64 / per_worker_rate);
            if due >= deadline {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        } else if Instant::now() >= deadline {
            break;
        }
        restamp(&mut template, (n << 16) | id);
        stats.spans_sent.fetch_add(spans, Ordering::Relaxed);
        sender.send(template.clone(), spans, &stats).await;
        n += 1;
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgate-loadgen: cannot start runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match cli.command {
        Some(Command::Mesh(m)) => rt.block_on(mesh_cmd::run(m)),
        None => rt.block_on(run(cli.args)),
    };
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    let sender = match make_sender(&args).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("meshgate-loadgen: {e}");
            return 2;
        }
    };
    let protocol = match args.protocol {
        Protocol::Grpc => "grpc",
        Protocol::Http => "http",
    };
    let concurrency = args.concurrency.max(1);
    let spans_per_request = args.spans_per_request.max(1);
    let per_worker_rate = args.rate as f64 / concurrency as f64;
    eprintln!(
        "meshgate-loadgen: {protocol}, {concurrency} workers, {spans_per_request} spans/request, rate {}, for {}",
        if args.rate == 0 {
            "flat out".to_string()
        } else {
            format!("{} spans/s", args.rate)
        },
        humantime::format_duration(args.duration)
    );
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for id in 0..concurrency as u64 {
        tasks.push(tokio::spawn(worker(
            id,
            sender.clone(),
            spans_per_request,
            per_worker_rate,
            start,
            deadline,
            stats.clone(),
        )));
    }

    let reporter = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0u64;
            loop {
                tick.tick().await;
                let acc = stats.spans_accepted.load(Ordering::Relaxed);
                eprintln!(
                    "t={:>4.1}s ok={} accepted={} spans/s={} refused={} errors={}",
                    start.elapsed().as_secs_f64(),
                    stats.requests_ok.load(Ordering::Relaxed),
                    acc,
                    acc - last,
                    stats.refused.load(Ordering::Relaxed),
                    stats.errors.load(Ordering::Relaxed),
                );
                last = acc;
            }
        })
    };
    for t in tasks {
        if let Err(e) = t.await {
            stats.error(format!("worker failed: {e}"));
        }
    }
    // A paced run stops scheduling before the deadline; rate it over the whole duration.
    let elapsed = start
        .elapsed()
        .as_secs_f64()
        .max(args.duration.as_secs_f64());
    reporter.abort();

    let ok = stats.requests_ok.load(Ordering::Relaxed);
    let sent = stats.spans_sent.load(Ordering::Relaxed);
    let accepted = stats.spans_accepted.load(Ordering::Relaxed);
    let rejected = stats.spans_rejected.load(Ordering::Relaxed);
    let refused = stats.refused.load(Ordering::Relaxed);
    let refused_spans = stats.refused_spans.load(Ordering::Relaxed);
    let errors = stats.errors.load(Ordering::Relaxed);
    let first_error = stats
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let rate = accepted as f64 / elapsed;
    eprintln!(
        "done in {elapsed:.2}s: requests ok={ok}, spans sent={sent}, accepted={accepted} ({rate:.0} spans/s), rejected (partial success)={rejected}, refused requests={refused} ({refused_spans} spans), other errors={errors}{}",
        first_error
            .as_deref()
            .map(|e| format!(", first error: {e}"))
            .unwrap_or_default()
    );
    let summary = serde_json::json!({
        "protocol": protocol,
        "spans_per_sec": rate.round(),
        "accepted": accepted,
        "refused": refused,
        "errors": errors,
        "requests_ok": ok,
        "sent": sent,
        "rejected": rejected,
        "refused_spans": refused_spans,
        "elapsed_secs": (elapsed * 1000.0).round() / 1000.0,
        "spans_per_request": spans_per_request,
        "concurrency": concurrency,
        "first_error": first_error,
    });
    println!("{summary}");
    if errors > 0 || ok == 0 { 1 } else { 0 }
}
