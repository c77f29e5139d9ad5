//! Derivation benchmarks: the `spanmetrics` and `servicegraph` connectors' cores on simulated
//! mesh traffic (meshgate-meshsim's `shop` topology: Istio sidecars through Envoy's
//! OpenTelemetry tracer, SDK spans interleaved, a database, a queue, an external API, retries),
//! alone and together, as one connector task runs them (one core). The requests arrive as the
//! proxies flush them, shuffled and split so pairs span requests. Throughput is in spans.
//! Run with `cargo bench --bench derive`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meshgate_connectors::servicegraph::{ServiceGraph, ServiceGraphConfig};
use meshgate_connectors::spanmetrics::{SpanMetrics, SpanMetricsConfig};
use meshgate_meshsim::{Flavor, Simulator, Topology};
use meshgate_pdata::otlp::ExportTraceServiceRequest;
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ROOTS: u64 = 2_000;

fn traffic(flavor: Flavor) -> (Vec<ExportTraceServiceRequest>, usize) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/meshsim/topologies/shop.yaml"
    );
    let text = std::fs::read_to_string(path).expect("shop topology");
    let topology = Topology::from_yaml_str(&text, path).expect("valid topology");
    let generated = Simulator::new(topology, flavor)
        .with_seed(42)
        .generate_roots(ROOTS)
        .shuffled(7);
    let spans = generated.span_count();
    (generated.requests, spans)
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
}

fn spanmetrics_config() -> SpanMetricsConfig {
    serde_json::from_value(serde_json::json!({})).unwrap()
}

fn servicegraph_config() -> ServiceGraphConfig {
    serde_json::from_value(serde_json::json!({})).unwrap()
}

fn derive(c: &mut Criterion) {
    for flavor in [Flavor::EnvoyOtlp, Flavor::Linkerd] {
        let (requests, spans) = traffic(flavor);
        let now = SystemTime::now();
        let now_ns = now.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        let mut g = c.benchmark_group(format!("derive/{flavor}"));
        g.throughput(Throughput::Elements(spans as u64));
        g.bench_function("spanmetrics", |b| {
            b.iter_batched_ref(
                || SpanMetrics::new(&spanmetrics_config()).unwrap(),
                |sm| {
                    for r in &requests {
                        sm.consume(black_box(r), now_ns);
                    }
                    black_box(sm.collect(now_ns));
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("servicegraph", |b| {
            b.iter_batched_ref(
                || ServiceGraph::new(&servicegraph_config()).unwrap(),
                |sg| {
                    for r in &requests {
                        sg.consume(black_box(r), now);
                    }
                    sg.expire_all(now);
                    black_box(sg.collect(now));
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("both", |b| {
            b.iter_batched_ref(
                || {
                    (
                        SpanMetrics::new(&spanmetrics_config()).unwrap(),
                        ServiceGraph::new(&servicegraph_config()).unwrap(),
                    )
                },
                |(sm, sg)| {
                    for r in &requests {
                        sm.consume(black_box(r), now_ns);
                        sg.consume(black_box(r), now);
                    }
                    sg.expire_all(now);
                    black_box(sm.collect(now_ns));
                    black_box(sg.collect(now));
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

criterion_group! { name = benches; config = config(); targets = derive }
criterion_main!(benches);
