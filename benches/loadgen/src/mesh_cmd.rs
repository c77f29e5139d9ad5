//! `meshgate-loadgen mesh`: simulated service mesh traffic in real time.
//!
//! The simulator's clock is the wall clock: root requests arrive at the topology's rate
//! (times `--rate`), and each proxy's or SDK's request is sent when that emitter would flush
//! it (5 spans or 5 s for proxies), so the gateway receives what a real mesh would send, split
//! and interleaved the same way. At the end the expected service graph (the simulation's
//! ground truth) is printed, to compare with what the gateway derived.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshgate_loadgen::mesh::{SendPlan, expected_edges, plan};
use meshgate_meshsim::{Body, Flavor, Simulator, Topology};
use tokio::sync::Semaphore;

use crate::{Compress, Protocol, Sender, Stats, grpc_sender, http_sender};

/// Options of `mesh`.
#[derive(Debug, clap::Args)]
pub(crate) struct MeshArgs {
    /// Topology file (YAML), e.g. `crates/meshsim/topologies/bookinfo.yaml`.
    topology: PathBuf,
    /// Telemetry shape: `envoy-otlp` (Istio sidecars, OpenTelemetry tracer), `envoy-zipkin`
    /// (Zipkin v2 JSON with shared span ids, Envoy's default), `envoy-zipkin-unshared`,
    /// `linkerd` (four spans per hop).
    #[arg(long, default_value = "envoy-otlp")]
    flavor: Flavor,
    /// OTLP transport for the OTLP flavors (default grpc). Zipkin flavors always POST JSON
    /// over HTTP.
    #[arg(long, value_enum)]
    protocol: Option<Protocol>,
    /// Target: `host:port` for gRPC (default 127.0.0.1:4317); base URL for OTLP/HTTP (default
    /// http://127.0.0.1:4318, `/v1/traces` appended) or Zipkin (default
    /// http://127.0.0.1:9411, `/api/v2/spans` appended) unless the path is given.
    #[arg(long)]
    endpoint: Option<String>,
    /// Multiplier of the topology's root request rate (2 = twice as many requests per second).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// How long root requests keep arriving (e.g. `30s`, `5m`); spans still buffered by the
    /// simulated proxies are sent right after.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of every random choice; the same seed and options give the same traces.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Request compression.
    #[arg(long, value_enum, default_value = "none")]
    compression: Compress,
    /// Simulate the whole duration at once without sending anything, and print what would
    /// be sent and the expected service graph.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `mesh`; returns the exit code.
pub(crate) async fn run(args: MeshArgs) -> i32 {
    let topology = match Topology::from_file(&args.topology) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let send_plan = match plan(args.flavor, args.protocol.map(|p| p == Protocol::Http)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("meshgate-loadgen: {e}");
            return 2;
        }
    };
    if !(args.rate.is_finite() && args.rate > 0.0) {
        eprintln!(
            "meshgate-loadgen: --rate must be a number above 0, got {}",
            args.rate
        );
        return 2;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let sim = Simulator::new(topology, args.flavor)
        .with_seed(args.seed)
        .with_rate_multiplier(args.rate)
        .with_start(now);
    eprintln!(
        "meshgate-loadgen: mesh {} ({}), {}, {:.1} root requests/s for {}{}",
        args.topology.display(),
        sim.topology()
            .description
            .as_deref()
            .unwrap_or("no description"),
        args.flavor,
        sim.roots_per_second(),
        humantime::format_duration(args.duration),
        if args.dry_run { ", dry run" } else { "" }
    );
    let gzip = args.compression == Compress::Gzip;
    let sender = if args.dry_run {
        None
    } else {
        let made = match send_plan {
            SendPlan::OtlpGrpc => grpc_sender(args.endpoint.as_deref(), gzip).await,
            SendPlan::OtlpHttp => http_sender(
                args.endpoint.as_deref(),
                "http://127.0.0.1:4318",
                "/v1/traces",
                crate::PROTOBUF,
                args.concurrency,
                gzip,
            )
            .map(|h| Sender::Http(Box::new(h))),
            SendPlan::ZipkinHttp => http_sender(
                args.endpoint.as_deref(),
                "http://127.0.0.1:9411",
                "/api/v2/spans",
                "application/json",
                args.concurrency,
                gzip,
            )
            .map(|h| Sender::Http(Box::new(h))),
        };
        match made {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("meshgate-loadgen: {e}");
                return 2;
            }
        }
    };

    let stats = Arc::new(Stats::default());
    let concurrency = args.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut stream = sim.stream();
    // Only counts are printed; durations would grow memory for as long as the run lasts.
    stream.keep_durations(false);
    let start = Instant::now();
    let end_unix = now + args.duration.as_nanos() as u64;
    let mut deliveries_total = 0u64;

    let reporter = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "t={:>4.1}s requests ok={} spans sent={} accepted={} refused={} errors={}",
                    start.elapsed().as_secs_f64(),
                    stats.requests_ok.load(Ordering::Relaxed),
                    stats.spans_sent.load(Ordering::Relaxed),
                    stats.spans_accepted.load(Ordering::Relaxed),
                    stats.refused.load(Ordering::Relaxed),
                    stats.errors.load(Ordering::Relaxed),
                );
            }
        })
    };

    let send_all = |deliveries: Vec<meshgate_meshsim::Delivery>, count: &mut u64| {
        let mut tasks = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            *count += 1;
            let spans = d.spans as u64;
            stats.spans_sent.fetch_add(spans, Ordering::Relaxed);
            let Some(sender) = sender.clone() else {
                continue;
            };
            let stats = stats.clone();
            let permits = permits.clone();
            tasks.push(async move {
                let Ok(permit) = permits.acquire_owned().await else {
                    return;
                };
                tokio::spawn(async move {
                    let _permit = permit;
                    let mut sender = sender;
                    match (d.body, &mut sender) {
                        (Body::Otlp(req), s) => s.send(req, spans, &stats).await,
                        (Body::Zipkin(json), Sender::Http(h)) => h.post(json, spans, &stats).await,
                        (Body::Zipkin(_), Sender::Grpc(_)) => {
                            stats.error("Zipkin spans need an HTTP sender".into())
                        }
                    }
                });
            });
        }
        tasks
    };

    if args.dry_run {
        for t in send_all(stream.advance_to(end_unix), &mut deliveries_total) {
            t.await;
        }
    } else {
        loop {
            let elapsed = start.elapsed().min(args.duration);
            let until = now + elapsed.as_nanos() as u64;
            for t in send_all(stream.advance_to(until), &mut deliveries_total) {
                // Waiting for a permit here is the backpressure: a slow endpoint slows the
                // simulation down instead of queueing without bound.
                t.await;
            }
            if elapsed >= args.duration {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let roots = stream.roots();
    let (rest, truth) = stream.finish();
    for t in send_all(rest, &mut deliveries_total) {
        t.await;
    }
    // Every sender holds a permit until it is done.
    let _all = permits.acquire_many(concurrency as u32).await;
    reporter.abort();
    let elapsed = start.elapsed().as_secs_f64();

    let ok = stats.requests_ok.load(Ordering::Relaxed);
    let sent = stats.spans_sent.load(Ordering::Relaxed);
    let accepted = stats.spans_accepted.load(Ordering::Relaxed);
    let rejected = stats.spans_rejected.load(Ordering::Relaxed);
    let refused = stats.refused.load(Ordering::Relaxed);
    let errors = stats.errors.load(Ordering::Relaxed);
    let first_error = stats
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let edges = expected_edges(&truth);
    eprintln!(
        "done in {elapsed:.2}s: {} root requests, {sent} spans in {deliveries_total} requests; sent ok={ok}, accepted spans={accepted}, rejected={rejected}, refused requests={refused}, errors={errors}{}",
        truth.traces,
        first_error
            .as_deref()
            .map(|e| format!(", first error: {e}"))
            .unwrap_or_default()
    );
    eprintln!("expected service graph (client -> server [connection_type]: requests, failed):");
    for e in &edges {
        eprintln!(
            "  {} -> {}{}: {}, {} failed",
            e.client,
            e.server,
            if e.connection_type.is_empty() {
                String::new()
            } else {
                format!(" [{}]", e.connection_type)
            },
            e.requests,
            e.failed
        );
    }
    let summary = serde_json::json!({
        "mode": "mesh",
        "topology": args.topology.display().to_string(),
        "flavor": args.flavor.to_string(),
        "transport": send_plan.name(),
        "dry_run": args.dry_run,
        "roots": roots,
        "spans": truth.spans.total,
        "requests": deliveries_total,
        "sent": sent,
        "requests_ok": ok,
        "accepted": accepted,
        "rejected": rejected,
        "refused": refused,
        "errors": errors,
        "elapsed_secs": (elapsed * 1000.0).round() / 1000.0,
        "first_error": first_error,
        "expected_edges": edges.iter().map(|e| serde_json::json!({
            "client": e.client,
            "server": e.server,
            "connection_type": e.connection_type,
            "requests": e.requests,
            "failed": e.failed,
        })).collect::<Vec<_>>(),
    });
    println!("{summary}");
    if errors > 0 || (!args.dry_run && deliveries_total > 0 && ok == 0) {
        1
    } else {
        0
    }
}
