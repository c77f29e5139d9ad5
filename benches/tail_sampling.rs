//! Tail sampling benchmark: the `tail_sampling` processor on mesh-shaped traffic of 20-span
//! traces, on one core, as one pipeline task runs it. Each trace crosses ten Istio sidecars
//! (one resource each, Envoy's string attributes); every proxy flushes its spans in requests
//! of 50, so a trace's spans arrive spread over about ten requests interleaved with other
//! traces, the root span last (it ends last). Time is virtual: requests carry the time they
//! would arrive at 100k spans/s, and the processor is driven with that clock, so decisions
//! (after the root's grace), evictions and output happen as in production and the bench
//! measures only CPU time. Throughput is in spans.
//!
//! Before the timed runs it prints the memory held per pending trace (the processor's own
//! estimate, which `max_memory` bounds) next to the trace's OTLP protobuf size.
//! Run with `cargo bench --bench tail_sampling`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meshgate_engine::Registry;
use meshgate_pdata::Payload;
use meshgate_pdata::attributes::kv_str;
use meshgate_pdata::otlp::{
    ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, Status, span,
    status,
};
use meshgate_processors::tail_sampling::{TailSampler, TailSamplingConfig};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The allocator the `meshgate` binary uses: holding and freeing spans is allocation-heavy,
/// so the system allocator would measure something production does not run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Spans per trace.
const TRACE_SPANS: usize = 20;
/// Traces per virtual second: 100k spans/s.
const TRACES_PER_SEC: usize = 5_000;
/// Traces per timed iteration (half a virtual second).
const TRACES: usize = 2_500;
/// Spans per request a proxy sends.
const FLUSH_SPANS: usize = 50;
/// Sidecars a trace crosses.
const PROXIES: usize = 10;

const APPS: [&str; PROXIES] = [
    "istio-ingressgateway",
    "productpage",
    "reviews",
    "ratings",
    "details",
    "cart",
    "checkout",
    "payments",
    "inventory",
    "shipping",
];

/// splitmix64, for ids and the odd failure.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn resource(app: &str) -> Resource {
    Resource {
        attributes: vec![
            kv_str("service.name", &format!("{app}.default")),
            kv_str("k8s.namespace.name", "default"),
            kv_str("telemetry.sdk.name", "envoy"),
        ],
        ..Default::default()
    }
}

/// Span `k` of trace `t`: span 0 is the gateway's root SERVER span; the others alternate
/// CLIENT/SERVER down a chain of proxies, with Envoy's attributes, all strings.
fn mesh_span(t: u64, k: usize, start_ns: u64) -> Span {
    let trace_id = [mix(t).to_be_bytes(), mix(t ^ 0xABCD).to_be_bytes()].concat();
    let span_id = |k: usize| {
        mix(t.wrapping_mul(64) + k as u64 + 1)
            .to_be_bytes()
            .to_vec()
    };
    let app = APPS[k % PROXIES];
    let callee = APPS[(k + 1) % PROXIES];
    let failed = k == TRACE_SPANS - 1 && mix(t).is_multiple_of(100);
    let client = k % 2 == 1;
    let host = format!("{callee}.default.svc.cluster.local");
    let attributes: Vec<KeyValue> = vec![
        kv_str(
            "node_id",
            &format!(
                "sidecar~10.0.{}.{}~{app}-v1-7d8c5f8b9d-xk2lp.default~default.svc.cluster.local",
                k,
                t % 250
            ),
        ),
        kv_str("zone", "us-east-1a"),
        kv_str("guid:x-request-id", &format!("{:032x}", mix(t ^ 7))),
        kv_str(
            "http.url",
            &format!("http://{host}:9080/api/v1/items/{}", t % 1000),
        ),
        kv_str("http.method", "GET"),
        kv_str("downstream_cluster", "-"),
        kv_str("user_agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0"),
        kv_str("http.protocol", "HTTP/1.1"),
        kv_str("peer.address", "10.0.1.12"),
        kv_str("request_size", "0"),
        kv_str("response_size", if failed { "91" } else { "358" }),
        kv_str("response_flags", if failed { "UH" } else { "-" }),
        kv_str("component", "proxy"),
        kv_str("upstream_cluster", &format!("outbound|9080||{host}")),
        kv_str("http.status_code", if failed { "503" } else { "200" }),
        kv_str("istio.canonical_service", app),
        kv_str("istio.mesh_id", "cluster.local"),
        kv_str("istio.namespace", "default"),
    ];
    // Children end before their parents: the root spans the whole trace.
    let depth = k as u64;
    Span {
        trace_id,
        span_id: span_id(k),
        parent_span_id: if k == 0 { Vec::new() } else { span_id(k - 1) },
        name: format!("{host}:9080/*"),
        kind: if client {
            span::SpanKind::Client
        } else {
            span::SpanKind::Server
        } as i32,
        start_time_unix_nano: start_ns + depth * 1_000_000,
        end_time_unix_nano: start_ns + 100_000_000 - depth * 1_000_000,
        attributes,
        status: failed.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// The requests of `traces` traces as the proxies would send them, each with its arrival
/// offset from the start of traffic.
fn traffic(traces: usize) -> (Vec<(Duration, ExportTraceServiceRequest)>, usize) {
    let mut buffers: Vec<Vec<Span>> = vec![Vec::new(); PROXIES];
    let mut out = Vec::new();
    let mut spans = 0;
    let flush = |p: usize, spans: Vec<Span>, at: Duration, out: &mut Vec<_>| {
        out.push((
            at,
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource(APPS[p])),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            },
        ));
    };
    for t in 0..traces {
        let at = Duration::from_secs_f64(t as f64 / TRACES_PER_SEC as f64);
        let start_ns = 1_764_000_000_000_000_000 + at.as_nanos() as u64;
        // Children first, the root last: spans are exported as they end.
        for k in (0..TRACE_SPANS).rev() {
            let p = k % PROXIES;
            buffers[p].push(mesh_span(t as u64, k, start_ns));
            spans += 1;
            if buffers[p].len() == FLUSH_SPANS {
                flush(p, std::mem::take(&mut buffers[p]), at, &mut out);
            }
        }
    }
    let end = Duration::from_secs_f64(traces as f64 / TRACES_PER_SEC as f64);
    for (p, b) in buffers.into_iter().enumerate() {
        if !b.is_empty() {
            flush(p, b, end, &mut out);
        }
    }
    (out, spans)
}

fn sampler(cfg: serde_json::Value) -> TailSampler {
    let cfg: TailSamplingConfig = serde_json::from_value(cfg).expect("valid config");
    TailSampler::new(&cfg, &Registry::new(), "tail_sampling", "traces/sample").expect("builds")
}

/// A realistic policy set: errors, slow traces, 10% of the rest, never health checks.
fn policies() -> serde_json::Value {
    serde_json::json!([
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "slow", "type": "latency", "latency": {"threshold_ms": 500}},
        {"name": "some", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
        {"name": "no-health", "type": "drop", "drop": {"drop_sub_policy": [
            {"name": "health", "type": "string_attribute",
             "string_attribute": {"key": "http.url", "values": ["/healthz$"], "enabled_regex_matching": true}}
        ]}}
    ])
}

/// Feeds the requests as a pipeline task would: each at its arrival time, with the
/// decision deadline honoured in between; returns the spans that left.
fn drive(s: &mut TailSampler, requests: Vec<(Duration, ExportTraceServiceRequest)>) -> usize {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut sent = 0;
    let mut count = |out: &mut Vec<Payload>| {
        for p in out.drain(..) {
            sent += black_box(p).item_count();
        }
    };
    let mut last = t0;
    for (at, r) in requests {
        let now = t0 + at;
        if s.next_decision_at().is_some_and(|d| d <= now) {
            s.on_deadline_at(now, &mut out);
        }
        s.process_at(Payload::Traces(r), now, &mut out);
        count(&mut out);
        last = now;
    }
    s.flush_at(last + Duration::from_secs(1), &mut out);
    count(&mut out);
    sent
}

/// Prints what a pending trace costs: fill the processor with traces that are never due.
fn report_memory() {
    let (requests, spans) = traffic(TRACES);
    let encoded: usize = requests
        .iter()
        .map(|(_, r)| Payload::Traces(r.clone()).encoded_len())
        .sum();
    let mut s = sampler(serde_json::json!({
        "decision_wait": "1h", "decision_wait_after_root": "0s", "max_memory": "16GiB",
        "num_traces": 1_000_000, "policies": policies()
    }));
    let t0 = Instant::now();
    let mut out = Vec::new();
    for (at, r) in requests {
        s.process_at(Payload::Traces(r), t0 + at, &mut out);
    }
    let p = s.pending();
    assert_eq!(p.spans, spans);
    println!(
        "tail_sampling memory: {} traces / {} spans pending, {:.1} MiB estimated; \
         {} bytes per pending trace ({} per span); OTLP protobuf {} bytes per trace",
        p.traces,
        p.spans,
        p.bytes as f64 / (1 << 20) as f64,
        p.bytes_per_trace().unwrap_or(0),
        p.bytes / p.spans.max(1),
        encoded / p.traces.max(1),
    );
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
}

fn tail_sampling(c: &mut Criterion) {
    report_memory();
    let (requests, spans) = traffic(TRACES);
    let mut g = c.benchmark_group("tail_sampling");
    g.throughput(Throughput::Elements(spans as u64));
    // Decided 200ms after the root (early decisions), the common production shape.
    g.bench_function("20_span_traces/root_grace", |b| {
        b.iter_batched(
            || {
                let s = sampler(serde_json::json!({
                    "decision_wait": "30s", "decision_wait_after_root": "200ms",
                    "policies": policies()
                }));
                (s, requests.clone())
            },
            |(mut s, requests)| black_box(drive(&mut s, requests)),
            BatchSize::PerIteration,
        )
    });
    // Everything held until shutdown, then decided at once: the cost of holding and
    // deciding without the root shortcut.
    g.bench_function("20_span_traces/hold_then_flush", |b| {
        b.iter_batched(
            || {
                let s = sampler(serde_json::json!({
                    "decision_wait": "1h", "decision_wait_after_root": "0s",
                    "policies": policies()
                }));
                (s, requests.clone())
            },
            |(mut s, requests)| black_box(drive(&mut s, requests)),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = tail_sampling
}
criterion_main!(benches);
