//! Service map benchmarks at 1,000 services and 5,000 edges (issue 8): a real gateway (the
//! `meshgate` binary, release build) holding the topology of a synthetic mesh
//! (`meshgate_meshsim::SyntheticMesh::new(1000, 5000)`, seed 1, eight calls per edge on
//! average, about 80,000 Envoy OTLP spans), then
//!
//! - `topology_api/json`, `topology_api/nodegraph`, `topology_api/json_without_exemplars`
//!   (what the page loads) and `topology_api/one_node` (what a click on the busiest node
//!   fetches): one `GET /api/v1/topology?window=5m` (`&format=nodegraph`, `&exemplars=false`,
//!   `&node=istio-ingressgateway.istio-system`) over loopback HTTP, answer read to the end,
//!   timed by criterion;
//! - `page/first_load`: `/service-map` opened afresh in headless Chromium until it is ready;
//!   the time is the page's own `lastLoad.totalMs` (fetch + parse + layout + draw, measured by
//!   the browser with `performance.now()`), handed to criterion through `iter_custom`; the
//!   mean of each part is printed after the run;
//! - `page/redraw`: one synchronous full redraw (`meshgateServiceMap.redraw()`, what a pan,
//!   zoom or hover costs), timed in the page.
//!
//! The page benchmarks need Debian's `chromium` and `chromium-driver`
//! (`scripts/peers/install.sh chromium chromium-driver`; `. scripts/peers/env.sh`); without
//! them they are skipped with a message. Run with `cargo bench --bench service_map`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::webdriver::{Browser, chromium};
use common::*;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use meshgate_meshsim::{Flavor, Simulator, SyntheticMesh};
use meshgate_pdata::otlp::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value as Json;
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SERVICES: usize = 1000;
const EDGES: usize = 5000;
const VIEWPORT: (u32, u32) = (1400, 900);

/// A gateway like pipelines/istio-mesh.yaml's derive path (OTLP in, `servicegraph`,
/// derived metrics to a scrape endpoint), loaded with the synthetic mesh and settled.
fn loaded_gateway(dir: &Scratch) -> (Gateway, usize, usize) {
    let (otlp, scrape) = (free_port(), free_port());
    let cfg = format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
connectors:
  servicegraph:
    store:
      ttl: 10s
      max_items: 500000
exporters:
  prometheus:
    endpoint: 127.0.0.1:{scrape}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [servicegraph]
    metrics:
      receivers: [servicegraph]
      exporters: [prometheus]
"
    );
    let gw = Gateway::start(dir, "gw", &cfg);
    let mesh = SyntheticMesh::new(SERVICES, EDGES)
        .with_seed(1)
        .generate()
        .expect("the synthetic mesh");
    let roots = mesh.roots_for_coverage(8.0);
    let sim = Simulator::new(mesh.topology, Flavor::EnvoyOtlp).with_seed(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let span_s = roots as f64 / sim.roots_per_second();
    let g = sim
        .with_start(now - ((span_s + 10.0) * 1e9) as u64)
        .generate_roots(roots);
    let mut batch = ExportTraceServiceRequest::default();
    let mut in_batch = 0;
    let requests = g.requests.len();
    for (i, req) in g.requests.into_iter().enumerate() {
        for rs in req.resource_spans {
            in_batch += rs.scope_spans.iter().map(|s| s.spans.len()).sum::<usize>();
            batch.resource_spans.push(rs);
        }
        if in_batch >= 2000 || i + 1 == requests {
            let body = std::mem::take(&mut batch).encode_to_vec();
            post_traces(otlp, &body);
            in_batch = 0;
        }
    }
    let spans = g.truth.spans.total as f64;
    gw.wait_metrics(Duration::from_secs(90), |m| {
        m.sum(
            "meshgate_connector_received_items_total",
            &[("connector", "servicegraph"), ("signal", "traces")],
        ) >= spans
            && m.sum("meshgate_connector_servicegraph_store_items", &[]) == 0.0
    });
    let (status, body) = http_get(gw.admin, "/api/v1/topology?window=5m").expect("topology");
    assert_eq!(status, 200, "{body}");
    let topo: Json = serde_json::from_str(&body).expect("topology JSON");
    let nodes = topo["nodes"].as_array().map_or(0, Vec::len);
    let edges = topo["edges"].as_array().map_or(0, Vec::len);
    eprintln!(
        "service_map: gateway holds {nodes} nodes and {edges} edges from {} spans ({} bytes of topology JSON)",
        spans,
        body.len()
    );
    (gw, nodes, edges)
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

fn service_map(c: &mut Criterion) {
    let dir = Scratch::new("bench-service-map");
    let (gw, nodes, edges) = loaded_gateway(&dir);

    let mut g = c.benchmark_group(format!("service_map/{nodes}_nodes_{edges}_edges"));
    for (name, query) in [
        ("topology_api/json", "window=5m"),
        ("topology_api/nodegraph", "window=5m&format=nodegraph"),
        // What the page loads: the map without exemplars; a click fetches one neighbourhood.
        (
            "topology_api/json_without_exemplars",
            "window=5m&exemplars=false",
        ),
        (
            "topology_api/one_node",
            "window=5m&node=istio-ingressgateway.istio-system",
        ),
    ] {
        let path = format!("/api/v1/topology?{query}");
        g.bench_function(name, |b| {
            b.iter(|| {
                let (status, body) = http_get(gw.admin, &path).expect("GET topology");
                assert_eq!(status, 200);
                black_box(body.len())
            })
        });
    }

    let Some((chromium_bin, chromedriver)) = chromium() else {
        g.finish();
        return;
    };
    let browser = Browser::start(&dir, &chromium_bin, &chromedriver, VIEWPORT)
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://127.0.0.1:{}/service-map?window=5m&refresh=0",
        gw.admin
    );
    let mut parts: Vec<Json> = Vec::new();
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    g.bench_function("page/first_load", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                browser.navigate(&url).unwrap_or_else(|e| panic!("{e}"));
                let last = browser
                    .wait_for(
                        "window.meshgateServiceMap && window.meshgateServiceMap.ready \
                         && window.meshgateServiceMap.lastLoad",
                        Duration::from_secs(120),
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(last["nodes"].as_u64(), Some(nodes as u64), "{last}");
                assert_eq!(last["edges"].as_u64(), Some(edges as u64), "{last}");
                total += ms(&last["totalMs"]);
                parts.push(last);
            }
            total
        })
    });
    g.bench_function("page/redraw", |b| {
        b.iter_custom(|iters| {
            let v = browser
                .execute(
                    "let t = 0; for (let i = 0; i < arguments[0]; i++) \
                     t += window.meshgateServiceMap.redraw(); return t;",
                    &[Json::from(iters)],
                )
                .unwrap_or_else(|e| panic!("{e}"));
            ms(&v)
        })
    });
    g.finish();

    // Nothing to report when a filter (`-- topology_api`) skipped the page benchmarks.
    if !parts.is_empty() {
        let n = parts.len() as f64;
        let mean = |k: &str| parts.iter().filter_map(|p| p[k].as_f64()).sum::<f64>() / n;
        eprintln!(
            "service_map: first load over {} loads, mean ms: fetch {:.1}, parse {:.1}, layout {:.1}, \
             draw {:.1}, total {:.1}",
            parts.len(),
            mean("fetchMs"),
            mean("parseMs"),
            mean("layoutMs"),
            mean("drawMs"),
            mean("totalMs")
        );
    }
}

/// A millisecond count the page reported, as a duration.
fn ms(v: &Json) -> Duration {
    let ms = v
        .as_f64()
        .unwrap_or_else(|| panic!("the page reported {v}, not milliseconds"));
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

criterion_group! {
    name = benches;
    config = config();
    targets = service_map
}
criterion_main!(benches);
