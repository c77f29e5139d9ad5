//! The derived metrics end to end, against the real binary, checked EXACTLY against the mesh
//! simulator's ground truth (`meshgate-meshsim`):
//!
//! - Istio/Envoy OTLP spans of the `shop` topology (SDK spans interleaved with the sidecars',
//!   a database, a cache, a queue, an external API, retries that never reached the server),
//!   shuffled and split so client and server halves arrive in any order, posted as OTLP
//!   protobuf; `spanmetrics` and `servicegraph` feed `prometheusremotewrite` into a real
//!   Prometheus (`MESHGATE_PROMETHEUS_URL`), and the values queried back equal the truth:
//!   request and failed counts per edge, histogram counts and every bucket per edge and side
//!   (client, server, and the network latency of paired calls), RED calls, duration counts
//!   and sums per series. `/metrics` accounts for every span.
//! - Grafana's Tempo Service Graph view: with `spanmetrics` in Tempo's naming, the PromQL
//!   Grafana's Tempo data source builds for its node graph and its RED table (mirrored from
//!   its source, see the section at the end) runs against that Prometheus and answers every
//!   truth edge, node and RED row, with the truth's numbers.
//! - Envoy's Zipkin tracer with shared span context through the `zipkin` receiver: the edges
//!   equal the truth (a shared client/server id pair is one edge, never two).
//! - Linkerd's four spans per hop through OTLP: the edges equal the truth (local hops are no
//!   edges).
//! - `GET /api/v1/topology?window=5m` answers every truth edge with its request and failed
//!   counts, the same counts the gateway's own edge metrics report, nodes with their kinds,
//!   and a 400 naming the parameter for `window=banana`.
//!
//! The Zipkin, Linkerd and topology tests read the metrics from the gateway's `prometheus`
//! scrape exporter, so they need no peer.

mod common;

use common::*;
use meshgate_meshsim::truth::{EdgeKey, EdgeTruth, GroundTruth, RedKey, RedTruth, bucket_counts};
use meshgate_meshsim::{Flavor, Generated, Simulator, Topology};
use meshgate_pdata::otlp::span::SpanKind;
use prost::Message;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Latency bucket upper bounds configured on both connectors, in milliseconds; fine enough
/// that the simulated latencies (0.3 ms to a few hundred ms) spread over many buckets, and
/// with bounds that fixed simulated latencies hit exactly (`le` is inclusive).
const BOUNDS_MS: [u64; 12] = [1, 2, 3, 5, 8, 10, 25, 50, 100, 250, 500, 1000];

/// How long a span waits for its partner in the servicegraph store. It must exceed the time
/// the test takes to post everything (checked), so every pair the truth has does pair; after
/// it, unpaired callers become virtual edges.
const STORE_TTL: Duration = Duration::from_secs(6);

fn bounds() -> Vec<f64> {
    BOUNDS_MS
        .iter()
        .map(|ms| Duration::from_millis(*ms).as_secs_f64())
        .collect()
}

fn bounds_yaml() -> String {
    let items: Vec<String> = BOUNDS_MS.iter().map(|ms| format!("{ms}ms")).collect();
    format!("[{}]", items.join(", "))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `roots` root requests of `file` (under crates/meshsim/topologies) in `flavor`, simulated
/// to end shortly before now, shuffled and split so spans arrive in any order.
fn simulate(file: &str, flavor: Flavor, seed: u64, roots: u64) -> Generated {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/meshsim/topologies")
        .join(file);
    let topology = Topology::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let sim = Simulator::new(topology, flavor).with_seed(seed);
    let span_s = roots as f64 / sim.roots_per_second();
    let start = now_ns() - ((span_s + 10.0) * 1e9) as u64;
    let generated = sim.with_start(start).generate_roots(roots).shuffled(seed);
    assert_eq!(generated.truth.traces, roots);
    generated
}

/// Posts every request of `g` to the gateway (OTLP protobuf on `/v1/traces`, or Zipkin JSON
/// on `/api/v2/spans`), each answered 2xx; returns the spans sent. Panics when posting took
/// longer than [`STORE_TTL`] allows (pairs could then expire before their partner came, and
/// the comparison with the truth would be meaningless).
fn post_all(port: u16, g: &Generated) -> u64 {
    post_all_pausing(port, g, Duration::ZERO)
}

/// [`post_all`], pausing `pause` halfway through the OTLP requests, so the connectors flush
/// (and Prometheus stores) a sample between the two halves and the counters grow within a
/// `rate` window instead of all at once.
fn post_all_pausing(port: u16, g: &Generated, pause: Duration) -> u64 {
    let started = Instant::now();
    for (i, req) in g.requests.iter().enumerate() {
        if i == g.requests.len() / 2 {
            std::thread::sleep(pause);
        }
        let body = req.encode_to_vec();
        post_traces(port, &body);
    }
    for body in &g.zipkin {
        let (status, _, answer) = http_request(
            port,
            "POST",
            "/api/v2/spans",
            &[("Content-Type", "application/json")],
            body,
        )
        .expect("POST /api/v2/spans");
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    }
    let took = started.elapsed();
    eprintln!(
        "posted {} requests ({} spans) in {took:?}",
        g.requests.len() + g.zipkin.len(),
        g.span_count()
    );
    assert!(
        took < STORE_TTL - Duration::from_secs(1),
        "posting {} requests took {took:?}, too close to the store TTL {STORE_TTL:?} for exact \
         pairing; lower the number of roots",
        g.requests.len() + g.zipkin.len()
    );
    g.span_count() as u64
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type Series = Vec<(BTreeMap<String, String>, f64)>;

/// The instant vector of `q` from Prometheus.
fn prom_query(url: &str, q: &str) -> Series {
    let (status, body) =
        http_get_url(&format!("{url}/api/v1/query?query={}", encode(q))).expect("query Prometheus");
    assert_eq!(status, 200, "{q}: {body}");
    let v: Json = serde_json::from_str(&body).expect("Prometheus answers JSON");
    v["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{q}: no result in {body}"))
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let value = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (labels, value)
        })
        .collect()
}

fn label<'a>(l: &'a BTreeMap<String, String>, k: &str) -> &'a str {
    l.get(k).map_or("", String::as_str)
}

/// Edge key of a series (Prometheus drops empty labels: a paired edge has no
/// `connection_type`).
fn edge_key(l: &BTreeMap<String, String>) -> EdgeKey {
    EdgeKey::new(
        label(l, "client"),
        label(l, "server"),
        label(l, "connection_type"),
    )
}

/// One value per edge; panics on two series for one edge (a clash would hide a double count).
fn by_edge(series: &Series) -> BTreeMap<EdgeKey, f64> {
    let mut out = BTreeMap::new();
    for (l, v) in series {
        let k = edge_key(l);
        assert!(
            out.insert(k.clone(), *v).is_none(),
            "two series for edge {k:?}: {series:?}"
        );
    }
    out
}

/// The truth as one number per edge; edges where `f` is 0 are left out (they have no
/// series, e.g. the client histogram of a `user` edge).
fn truth_by_edge(t: &GroundTruth, f: impl Fn(&EdgeTruth) -> u64) -> BTreeMap<EdgeKey, f64> {
    t.edges
        .iter()
        .filter(|(_, e)| f(e) > 0)
        .map(|(k, e)| (k.clone(), f(e) as f64))
        .collect()
}

/// The truth's request and failed counts per edge (the failed counter has a series for every
/// edge, 0 when nothing failed).
fn truth_requests(t: &GroundTruth) -> (BTreeMap<EdgeKey, f64>, BTreeMap<EdgeKey, f64>) {
    let req = t
        .edges
        .iter()
        .map(|(k, e)| (k.clone(), e.requests as f64))
        .collect();
    let failed = t
        .edges
        .iter()
        .map(|(k, e)| (k.clone(), e.failed as f64))
        .collect();
    (req, failed)
}

/// Compares two maps, printing every difference.
fn assert_same<K: Ord + std::fmt::Debug>(
    what: &str,
    got: &BTreeMap<K, f64>,
    want: &BTreeMap<K, f64>,
) {
    let mut diffs = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            Some(g) if g == w => {}
            Some(g) => diffs.push(format!("  {k:?}: got {g}, want {w}")),
            None => diffs.push(format!("  {k:?}: missing, want {w}")),
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            diffs.push(format!("  {k:?}: got {g}, not in the truth"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences from the ground truth:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// Cumulative bucket counts (`le` order, `+Inf` last) of `values` over [`bounds`].
fn cumulative_buckets(values: &[f64]) -> Vec<f64> {
    let mut acc = 0u64;
    bucket_counts(values, &bounds())
        .into_iter()
        .map(|c| {
            acc += c;
            acc as f64
        })
        .collect()
}

/// Index of an `le` label in [`bounds`] (`+Inf` is the last bucket); panics on a bound that
/// was not configured.
fn le_index(le: &str) -> usize {
    let b = bounds();
    if le == "+Inf" {
        return b.len();
    }
    let v: f64 = le.parse().unwrap_or_else(|_| panic!("bad le `{le}`"));
    b.iter()
        .position(|x| *x == v)
        .unwrap_or_else(|| panic!("le `{le}` is not a configured bound ({b:?})"))
}

/// Per edge, the cumulative buckets of a histogram's `_bucket` series.
fn buckets_by_edge(series: &Series) -> BTreeMap<EdgeKey, Vec<f64>> {
    let n = bounds().len() + 1;
    let mut out: BTreeMap<EdgeKey, Vec<Option<f64>>> = BTreeMap::new();
    for (l, v) in series {
        let slot =
            &mut out.entry(edge_key(l)).or_insert_with(|| vec![None; n])[le_index(label(l, "le"))];
        assert!(slot.is_none(), "two bucket series {l:?}");
        *slot = Some(*v);
    }
    out.into_iter()
        .map(|(k, v)| {
            let v = v
                .into_iter()
                .map(|x| x.unwrap_or_else(|| panic!("edge {k:?} misses a bucket")))
                .collect();
            (k, v)
        })
        .collect()
}

/// The histogram checks of one side: `_count` per edge and every bucket per edge. `side`
/// gives the values the truth expects on an edge (none: the edge has no such histogram).
fn check_histograms(
    what: &str,
    counts: &Series,
    buckets: &Series,
    truth: &GroundTruth,
    side: fn(&EdgeTruth) -> Vec<f64>,
) {
    assert_same(
        &format!("{what}_count"),
        &by_edge(counts),
        &truth_by_edge(truth, |e| side(e).len() as u64),
    );
    let got = buckets_by_edge(buckets);
    let want: BTreeMap<EdgeKey, Vec<f64>> = truth
        .edges
        .iter()
        .filter(|(_, e)| !side(e).is_empty())
        .map(|(k, e)| (k.clone(), cumulative_buckets(&side(e))))
        .collect();
    let mut diffs = Vec::new();
    for (k, w) in &want {
        match got.get(k) {
            Some(g) if g == w => {}
            Some(g) => diffs.push(format!("  {k:?}:\n    got  {g:?}\n    want {w:?}")),
            None => diffs.push(format!("  {k:?}: no buckets")),
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        diffs.push(format!("  {k:?}: buckets not in the truth"));
    }
    assert!(
        diffs.is_empty(),
        "{what}_bucket (le = {:?}): {} edges differ from the ground truth:\n{}",
        bounds(),
        diffs.len(),
        diffs.join("\n")
    );
}

/// The network latency the servicegraph must record for each request of `e`: client span
/// duration minus server span duration, clamped at 0 (`Observation::network` in the
/// connector's `topology.rs`), computed from the same two `f64` durations the connector
/// computes, so the values (and their buckets) are exact. Only requests with both sides have
/// one: the truth records a paired request's two durations together, so on an edge with both
/// sides the i-th client and i-th server durations are one call's; other edges have none.
fn network_seconds(e: &EdgeTruth) -> Vec<f64> {
    if e.client_seconds.is_empty() || e.server_seconds.is_empty() {
        return Vec::new();
    }
    assert_eq!(
        (e.client_seconds.len(), e.server_seconds.len()),
        (e.requests as usize, e.requests as usize),
        "an edge with both sides has both durations for every request"
    );
    e.client_seconds
        .iter()
        .zip(&e.server_seconds)
        .map(|(c, s)| (c - s).max(0.0))
        .collect()
}

/// A RED series' identity: `service.name`, `span.name`, `span.kind`, `status.code`.
type RedId = (String, String, String, String);

/// One value per RED series; panics on two series for one identity.
fn red_by_key(series: &Series, name: &str) -> BTreeMap<RedId, f64> {
    let mut out = BTreeMap::new();
    for (l, v) in series {
        let k = red_id(l);
        assert!(
            out.insert(k.clone(), *v).is_none(),
            "{name}: two series for {k:?}"
        );
    }
    out
}

fn red_id(l: &BTreeMap<String, String>) -> RedId {
    (
        label(l, "service_name").to_string(),
        label(l, "span_name").to_string(),
        label(l, "span_kind").to_string(),
        label(l, "status_code").to_string(),
    )
}

/// The truth as one number per RED series.
fn truth_red(t: &GroundTruth, f: impl Fn(&RedTruth) -> f64) -> BTreeMap<RedId, f64> {
    t.red.iter().map(|(k, r)| (truth_red_id(k), f(r))).collect()
}

fn truth_red_id(k: &RedKey) -> RedId {
    (
        k.service.clone(),
        k.span_name.clone(),
        k.kind.clone(),
        k.status.clone(),
    )
}

/// The outcomes a servicegraph connector counts spans under.
const OUTCOMES: [&str; 7] = [
    "paired",
    "user",
    "virtual",
    "intra_workload",
    "expired",
    "dropped",
    "skipped",
];

fn outcomes(m: &Metrics) -> BTreeMap<&'static str, f64> {
    OUTCOMES
        .into_iter()
        .map(|o| {
            let v = m.sum(
                "meshgate_connector_servicegraph_spans_total",
                &[("connector", "servicegraph"), ("outcome", o)],
            );
            (o, v)
        })
        .collect()
}

/// Waits until the `servicegraph` connector has read all `spans` and its store is empty
/// (every span paired, or expired after the TTL: into a virtual edge or dropped), so the
/// metrics it emits from now on are final.
fn wait_settled(gw: &Gateway, spans: u64) -> Metrics {
    gw.wait_metrics(STORE_TTL + Duration::from_secs(20), |m| {
        outcomes(m).values().sum::<f64>() >= spans as f64
            && m.sum(
                "meshgate_connector_servicegraph_store_items",
                &[("connector", "servicegraph")],
            ) == 0.0
    })
}

/// Every span posted was accepted by `receiver` and read by each of `connectors`.
fn check_received(gw: &Gateway, receiver: &str, connectors: &[&str], spans: u64, t: &GroundTruth) {
    assert_eq!(t.spans.total, spans, "the truth classifies every span sent");
    let m = gw.wait_metrics(Duration::from_secs(30), |m| {
        connectors.iter().all(|c| {
            m.sum(
                "meshgate_connector_received_items_total",
                &[("connector", c), ("signal", "traces")],
            ) >= spans as f64
        })
    });
    assert_eq!(
        m.sum(
            "meshgate_receiver_accepted_items_total",
            &[("receiver", receiver), ("signal", "traces")]
        ),
        spans as f64,
        "{}",
        m.text
    );
    for c in connectors {
        assert_eq!(
            m.sum(
                "meshgate_connector_received_items_total",
                &[("connector", c), ("signal", "traces")]
            ),
            spans as f64,
            "{c}: {}",
            m.text
        );
    }
}

/// The servicegraph classified every span the way the truth does (semantics.md): pairs, roots,
/// virtual callers and intra-workload hops, nothing expired, dropped or skipped.
fn check_outcomes(gw: &Gateway, g: &Generated) {
    let s = g.truth.spans;
    let want = BTreeMap::from([
        ("paired", (2 * s.paired) as f64),
        ("user", s.roots as f64),
        ("virtual", s.virtual_clients as f64),
        ("intra_workload", s.intra_workload as f64),
        ("expired", 0.0),
        ("dropped", 0.0),
        ("skipped", 0.0),
    ]);
    let m = gw.metrics();
    assert_same(
        &format!(
            "meshgate_connector_servicegraph_spans_total by outcome (of the {} intra-workload \
             spans, {} are application SERVER spans posted in a later request than their \
             sidecar's SERVER span: semantics.md counts them intra_workload whichever arrives \
             first)",
            s.intra_workload,
            late_app_servers(g)
        ),
        &outcomes(&m),
        &want,
    );
    assert_eq!(
        m.sum(
            "meshgate_connector_servicegraph_store_items",
            &[("connector", "servicegraph")]
        ),
        0.0
    );
}

/// OTLP SERVER spans whose parent is a SERVER span (an application's span inside its
/// sidecar's) posted in a later request than that parent: the arrival order only the store
/// can resolve. For the failure message of [`check_outcomes`].
fn late_app_servers(g: &Generated) -> usize {
    let server = SpanKind::Server as i32;
    let spans = || {
        g.requests.iter().enumerate().flat_map(|(i, r)| {
            r.resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .map(move |s| (i, s))
        })
    };
    let servers: HashMap<(&[u8], &[u8]), usize> = spans()
        .filter(|(_, s)| s.kind == server)
        .map(|(i, s)| ((s.trace_id.as_slice(), s.span_id.as_slice()), i))
        .collect();
    spans()
        .filter(|(i, s)| {
            s.kind == server
                && servers
                    .get(&(s.trace_id.as_slice(), s.parent_span_id.as_slice()))
                    .is_some_and(|p| p < i)
        })
        .count()
}

#[test]
fn envoy_otlp_mesh_metrics_reach_prometheus_equal_to_the_truth() {
    let Some(url) = service("MESHGATE_PROMETHEUS_URL", "Prometheus") else {
        return;
    };
    let url = url.trim_end_matches('/').to_string();
    let run = format!("derive{}x{}", std::process::id(), now_ns() % 1_000_000_000);
    let http = free_port();
    let dir = Scratch::new("derive-e2e-envoy");
    let buckets = bounds_yaml();
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         connectors:\n\
         \x20 spanmetrics:\n    metrics_flush_interval: 500ms\n    histogram:\n      explicit:\n        buckets: {buckets}\n\
         \x20 servicegraph:\n    metrics_flush_interval: 500ms\n    latency_histogram_buckets: {buckets}\n    store:\n      ttl: {}ms\n\
         exporters:\n  prometheusremotewrite:\n    endpoint: {url}/api/v1/write\n    external_labels:\n      e2e_run: {run}\n    retry_on_failure:\n      initial_interval: 100ms\n      max_interval: 300ms\n      max_elapsed_time: 20s\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [spanmetrics, servicegraph]\n\
         \x20   metrics:\n      receivers: [spanmetrics, servicegraph]\n      exporters: [prometheusremotewrite]\n",
        STORE_TTL.as_millis()
    );
    let gw = Gateway::start(&dir, "gw", &cfg);
    let g = simulate("shop.yaml", Flavor::EnvoyOtlp, 11, 250);
    let truth = &g.truth;
    // The truth has every kind of edge, so every pairing rule is exercised.
    for ct in ["", "virtual_node", "database", "messaging_system"] {
        assert!(
            truth.edges.keys().any(|k| k.connection_type == ct),
            "no `{ct}` edge in the truth: {:?}",
            truth.edges.keys()
        );
    }
    assert!(truth.spans.intra_workload > 0);

    let spans = post_all(http, &g);
    check_received(&gw, "otlp", &["spanmetrics", "servicegraph"], spans, truth);
    wait_settled(&gw, spans);
    // The metrics emitted after the store emptied carry the final values; wait for them to
    // reach Prometheus: the total request count is the truth's.
    let sel = format!("{{e2e_run=\"{run}\"}}");
    let want_total = truth.total_requests() as f64;
    let want_calls = truth.total_calls() as f64;
    let start = Instant::now();
    loop {
        let total = prom_query(
            &url,
            &format!("sum(traces_service_graph_request_total{sel})"),
        );
        let calls = prom_query(&url, &format!("sum(traces_span_metrics_calls_total{sel})"));
        let got = |s: &Series| s.first().map_or(0.0, |x| x.1);
        if got(&total) == want_total && got(&calls) == want_calls {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Prometheus has {} edge requests (want {want_total}) and {} span calls (want \
             {want_calls}) after 30s; gateway log:\n{}",
            got(&total),
            got(&calls),
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The service graph, edge by edge.
    let (want_req, want_failed) = truth_requests(truth);
    let q = |name: &str| prom_query(&url, &format!("{name}{sel}"));
    let requests = q("traces_service_graph_request_total");
    assert_same(
        "traces_service_graph_request_total",
        &by_edge(&requests),
        &want_req,
    );
    assert_same(
        "traces_service_graph_request_failed_total",
        &by_edge(&q("traces_service_graph_request_failed_total")),
        &want_failed,
    );
    assert!(
        want_failed.values().any(|f| *f > 0.0),
        "the truth has failures"
    );
    // The labels besides the edge's: the run, the job of the connector's resource, the scope.
    let (l, _) = &requests[0];
    assert_eq!(label(l, "job"), "meshgate", "{l:?}");
    assert_eq!(
        label(l, "otel_scope_name"),
        "meshgate/servicegraph",
        "{l:?}"
    );
    check_histograms(
        "traces_service_graph_request_server_seconds",
        &q("traces_service_graph_request_server_seconds_count"),
        &q("traces_service_graph_request_server_seconds_bucket"),
        truth,
        |e| e.server_seconds.clone(),
    );
    check_histograms(
        "traces_service_graph_request_client_seconds",
        &q("traces_service_graph_request_client_seconds_count"),
        &q("traces_service_graph_request_client_seconds_bucket"),
        truth,
        |e| e.client_seconds.clone(),
    );
    // The network latency (meshgate's own histogram): only on paired edges, one observation
    // per paired call, every bucket exact.
    check_histograms(
        "traces_service_graph_request_network_seconds",
        &q("traces_service_graph_request_network_seconds_count"),
        &q("traces_service_graph_request_network_seconds_bucket"),
        truth,
        network_seconds,
    );
    for (k, e) in &truth.edges {
        // `user` edges are `virtual_node` ones: only client/server pairs have no type.
        let paired = k.connection_type.is_empty();
        assert_eq!(
            network_seconds(e).len() as u64,
            if paired { e.requests } else { 0 },
            "network latency observations of {k:?}"
        );
    }
    // Sums, within float tolerance (the order of additions differs).
    for (name, side) in [
        (
            "traces_service_graph_request_server_seconds_sum",
            (|e: &EdgeTruth| e.server_seconds.clone()) as fn(&EdgeTruth) -> Vec<f64>,
        ),
        (
            "traces_service_graph_request_client_seconds_sum",
            |e: &EdgeTruth| e.client_seconds.clone(),
        ),
        (
            "traces_service_graph_request_network_seconds_sum",
            network_seconds,
        ),
    ] {
        let got = by_edge(&q(name));
        for (k, e) in &truth.edges {
            let want: f64 = side(e).iter().sum();
            if side(e).is_empty() {
                assert!(!got.contains_key(k), "{name}: {k:?} has no such side");
                continue;
            }
            let g = got
                .get(k)
                .unwrap_or_else(|| panic!("{name}: no series for {k:?}"));
            assert!(
                (g - want).abs() <= 1e-9 * want.max(1.0),
                "{name} {k:?}: got {g}, want {want}"
            );
        }
    }

    // RED, series by series.
    let red = |name: &str| red_by_key(&q(name), name);
    assert_same(
        "traces_span_metrics_calls_total",
        &red("traces_span_metrics_calls_total"),
        &truth_red(truth, |r| r.calls as f64),
    );
    assert!(
        truth.red.keys().any(|k| k.status == "STATUS_CODE_ERROR"),
        "the truth has error series"
    );
    assert_same(
        "traces_span_metrics_duration_seconds_count",
        &red("traces_span_metrics_duration_seconds_count"),
        &truth_red(truth, |r| r.durations_seconds.len() as f64),
    );
    let sums = red("traces_span_metrics_duration_seconds_sum");
    let want_sums = truth_red(truth, |r| r.durations_seconds.iter().sum());
    assert_eq!(
        sums.keys().collect::<Vec<_>>(),
        want_sums.keys().collect::<Vec<_>>()
    );
    for (k, want) in &want_sums {
        let g = sums[k];
        assert!(
            (g - want).abs() <= 1e-9 * want.max(1.0),
            "duration sum {k:?}: got {g}, want {want}"
        );
    }
    // Buckets of the RED histogram for every series, from the same bounds.
    let mut got_buckets: BTreeMap<RedId, Vec<Option<f64>>> = BTreeMap::new();
    for (l, v) in q("traces_span_metrics_duration_seconds_bucket") {
        got_buckets
            .entry(red_id(&l))
            .or_insert_with(|| vec![None; BOUNDS_MS.len() + 1])[le_index(label(&l, "le"))] =
            Some(v);
    }
    for (k, r) in &truth.red {
        let key = truth_red_id(k);
        let want: Vec<Option<f64>> = cumulative_buckets(&r.durations_seconds)
            .into_iter()
            .map(Some)
            .collect();
        assert_eq!(
            got_buckets.get(&key),
            Some(&want),
            "duration buckets of {key:?}"
        );
    }
    assert_eq!(got_buckets.len(), truth.red.len());

    // Last, as it is the finest check: how each span was classified.
    check_outcomes(&gw, &g);
}

/// A gateway deriving both connectors' metrics from `receiver_yaml` (the `receivers:` body,
/// receiver id `receiver`) and serving them on its `prometheus` scrape exporter at `scrape`.
fn scrape_gateway(dir: &Scratch, receiver_yaml: &str, receiver: &str, scrape: u16) -> Gateway {
    let buckets = bounds_yaml();
    let cfg = format!(
        "receivers:\n{receiver_yaml}\
         connectors:\n\
         \x20 spanmetrics:\n    metrics_flush_interval: 200ms\n    histogram:\n      explicit:\n        buckets: {buckets}\n\
         \x20 servicegraph:\n    metrics_flush_interval: 200ms\n    latency_histogram_buckets: {buckets}\n    store:\n      ttl: {}ms\n\
         exporters:\n  prometheus:\n    endpoint: 127.0.0.1:{scrape}\n\
         service:\n  pipelines:\n    traces:\n      receivers: [{receiver}]\n      exporters: [spanmetrics, servicegraph]\n\
         \x20   metrics:\n      receivers: [spanmetrics, servicegraph]\n      exporters: [prometheus]\n",
        STORE_TTL.as_millis()
    );
    Gateway::start(dir, "gw", &cfg)
}

/// The gateway's own scrape exporter, once its edge metrics count all `want_requests`
/// requests (they are final then: the store is empty before this is called).
fn final_scrape(gw: &Gateway, scrape: u16, want_requests: u64) -> Metrics {
    let start = Instant::now();
    loop {
        let (status, body) = http_get(scrape, "/metrics").expect("scrape the prometheus exporter");
        assert_eq!(status, 200, "{body}");
        let m = Metrics::parse(&body);
        let total = m.sum("traces_service_graph_request_total", &[]);
        if total == want_requests as f64 {
            return m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the scrape exporter counts {total} edge requests after 20s, want {want_requests}:\n\
             {body}\ngateway log:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every edge metric of a scrape equals the truth: request and failed counts, both
/// histograms' counts and buckets.
fn check_edges(m: &Metrics, truth: &GroundTruth) {
    let (want_req, want_failed) = truth_requests(truth);
    assert_same(
        "traces_service_graph_request_total",
        &by_edge(&m.series("traces_service_graph_request_total")),
        &want_req,
    );
    assert_same(
        "traces_service_graph_request_failed_total",
        &by_edge(&m.series("traces_service_graph_request_failed_total")),
        &want_failed,
    );
    check_histograms(
        "traces_service_graph_request_server_seconds",
        &m.series("traces_service_graph_request_server_seconds_count"),
        &m.series("traces_service_graph_request_server_seconds_bucket"),
        truth,
        |e| e.server_seconds.clone(),
    );
    check_histograms(
        "traces_service_graph_request_client_seconds",
        &m.series("traces_service_graph_request_client_seconds_count"),
        &m.series("traces_service_graph_request_client_seconds_bucket"),
        truth,
        |e| e.client_seconds.clone(),
    );
}

/// The RED calls counter of a scrape equals the truth, series by series.
fn check_red_calls(m: &Metrics, truth: &GroundTruth) {
    let name = "traces_span_metrics_calls_total";
    assert_same(
        name,
        &red_by_key(&m.series(name), name),
        &truth_red(truth, |r| r.calls as f64),
    );
}

#[test]
fn envoy_zipkin_shared_spans_give_the_truth_edges_once() {
    let (port, scrape) = (free_port(), free_port());
    let dir = Scratch::new("derive-e2e-zipkin");
    let gw = scrape_gateway(
        &dir,
        &format!("  zipkin:\n    endpoint: 127.0.0.1:{port}\n"),
        "zipkin",
        scrape,
    );
    let g = simulate("shop.yaml", Flavor::EnvoyZipkin { shared: true }, 12, 200);
    assert!(g.requests.is_empty() && !g.zipkin.is_empty());
    // Shared span context: server spans reuse their client's id.
    let shared = g
        .zipkin
        .iter()
        .flat_map(|b| serde_json::from_slice::<Vec<Json>>(b).unwrap())
        .filter(|s| s["shared"] == Json::Bool(true))
        .count() as u64;
    assert_eq!(
        shared, g.truth.spans.paired,
        "one shared server span per pair"
    );
    let truth = &g.truth;
    let spans = post_all(port, &g);
    check_received(
        &gw,
        "zipkin",
        &["spanmetrics", "servicegraph"],
        spans,
        truth,
    );
    wait_settled(&gw, spans);
    let m = final_scrape(&gw, scrape, truth.total_requests());
    check_edges(&m, truth);
    check_red_calls(&m, truth);
    check_outcomes(&gw, &g);
}

#[test]
fn linkerd_hops_give_the_truth_edges() {
    let (port, scrape) = (free_port(), free_port());
    let dir = Scratch::new("derive-e2e-linkerd");
    let gw = scrape_gateway(
        &dir,
        &format!("  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n"),
        "otlp",
        scrape,
    );
    let g = simulate("linkerd-emojivoto.yaml", Flavor::Linkerd, 13, 200);
    let truth = &g.truth;
    assert!(
        truth.spans.intra_workload > 0,
        "Linkerd's local hops are in the data"
    );
    let spans = post_all(port, &g);
    check_received(&gw, "otlp", &["spanmetrics", "servicegraph"], spans, truth);
    wait_settled(&gw, spans);
    let m = final_scrape(&gw, scrape, truth.total_requests());
    check_edges(&m, truth);
    check_red_calls(&m, truth);
    check_outcomes(&gw, &g);
}

/// What the topology must say about one (client, server) node pair: the truth edges of every
/// connection type between them together.
#[derive(Default, Debug)]
struct PairTruth {
    requests: u64,
    failed: u64,
    connection_types: Vec<String>,
    client_seconds: Vec<f64>,
    server_seconds: Vec<f64>,
}

fn pairs(truth: &GroundTruth) -> BTreeMap<(String, String), PairTruth> {
    let mut out: BTreeMap<(String, String), PairTruth> = BTreeMap::new();
    for (k, e) in &truth.edges {
        let p = out.entry((k.client.clone(), k.server.clone())).or_default();
        p.requests += e.requests;
        p.failed += e.failed;
        p.connection_types.push(k.connection_type.clone());
        p.client_seconds.extend(&e.client_seconds);
        p.server_seconds.extend(&e.server_seconds);
    }
    out
}

/// The connection type the topology reports for a pair: paired wins, then the kinds of
/// virtual peer.
fn pair_connection_type(types: &[String]) -> &'static str {
    for t in ["", "database", "messaging_system"] {
        if types.iter().any(|x| x == t) {
            return t;
        }
    }
    "virtual_node"
}

/// Checks a `{p50, p95, p99}` object against `values`: each estimate lies in the bucket that
/// holds the true quantile (Prometheus-style interpolation inside a bucket, clamped to the
/// observed min and max).
fn check_quantiles(what: &str, got: &Json, values: &[f64]) {
    if values.is_empty() {
        assert!(got.is_null(), "{what}: no values, but {got}");
        return;
    }
    let b = bounds();
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let mut last = f64::NEG_INFINITY;
    for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
        let est = got[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: no {name} in {got}"));
        let rank = q * sorted.len() as f64;
        let v = sorted[(rank.ceil() as usize).clamp(1, sorted.len()) - 1];
        let i = b.partition_point(|x| *x < v);
        let lo = if i == 0 { 0.0 } else { b[i - 1] }.max(min);
        let hi = b.get(i).copied().unwrap_or(max).min(max);
        assert!(
            est >= lo - 1e-12 && est <= hi + 1e-12,
            "{what} {name}: {est} is outside [{lo}, {hi}], the bucket of the true quantile {v}"
        );
        assert!(est >= last, "{what}: quantiles decrease: {got}");
        last = est;
    }
}

#[test]
fn topology_api_reports_the_truth_edges_and_nodes() {
    let (port, scrape) = (free_port(), free_port());
    let dir = Scratch::new("derive-e2e-topology");
    let gw = scrape_gateway(
        &dir,
        &format!("  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n"),
        "otlp",
        scrape,
    );
    let g = simulate("shop.yaml", Flavor::EnvoyOtlp, 14, 200);
    let truth = &g.truth;
    let spans = post_all(port, &g);
    check_received(&gw, "otlp", &["servicegraph"], spans, truth);
    wait_settled(&gw, spans);
    let m = final_scrape(&gw, scrape, truth.total_requests());

    let (status, body) = http_get(gw.admin, "/api/v1/topology?window=5m").expect("GET topology");
    assert_eq!(status, 200, "{body}");
    let topo: Json = serde_json::from_str(&body).expect("topology JSON");
    assert_eq!(topo["window_seconds"], 300.0, "{topo}");

    // Edges: one per node pair, with the truth's counts, and the counts of the gateway's own
    // edge metrics (the same state).
    let want = pairs(truth);
    let mut from_metrics: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for (name, failed) in [
        ("traces_service_graph_request_total", false),
        ("traces_service_graph_request_failed_total", true),
    ] {
        for (l, v) in m.series(name) {
            let e = from_metrics
                .entry((label(&l, "client").into(), label(&l, "server").into()))
                .or_default();
            if failed { e.1 += v } else { e.0 += v }
        }
    }
    let edges = topo["edges"].as_array().expect("edges array");
    let mut got = BTreeMap::new();
    for e in edges {
        let key = (
            e["source"].as_str().expect("source").to_string(),
            e["target"].as_str().expect("target").to_string(),
        );
        assert_eq!(e["id"], format!("{}->{}", key.0, key.1), "{e}");
        assert!(
            got.insert(key.clone(), e).is_none(),
            "two edges for {key:?}"
        );
    }
    let got_counts: BTreeMap<_, f64> = got
        .iter()
        .map(|(k, e)| (k.clone(), e["requests"].as_f64().unwrap()))
        .collect();
    let want_counts: BTreeMap<_, f64> = want
        .iter()
        .map(|(k, p)| (k.clone(), p.requests as f64))
        .collect();
    assert_same("topology edge requests", &got_counts, &want_counts);
    for (k, p) in &want {
        let e = got[k];
        let what = format!("topology edge {}->{}", k.0, k.1);
        assert_eq!(e["failed"].as_u64(), Some(p.failed), "{what}: {e}");
        assert_eq!(
            e["connection_type"],
            pair_connection_type(&p.connection_types),
            "{what}: {e}"
        );
        let rate = e["requests_per_second"].as_f64().unwrap();
        assert!(
            (rate - p.requests as f64 / 300.0).abs() < 1e-12,
            "{what}: {e}"
        );
        let err = e["error_rate"].as_f64().unwrap();
        assert!(
            (err - p.failed as f64 / p.requests as f64).abs() < 1e-12,
            "{what}: {e}"
        );
        check_quantiles(
            &format!("{what} client"),
            &e["client_latency_seconds"],
            &p.client_seconds,
        );
        check_quantiles(
            &format!("{what} server"),
            &e["server_latency_seconds"],
            &p.server_seconds,
        );
        assert_eq!(
            from_metrics.get(k),
            Some(&(p.requests as f64, p.failed as f64)),
            "{what}: the edge metrics disagree with the topology"
        );
    }

    // Nodes: every node of an edge, with its kind and what it served.
    let mut want_nodes: BTreeMap<String, (u8, u64, u64)> = BTreeMap::new();
    const KINDS: [&str; 5] = ["service", "database", "messaging", "virtual", "user"];
    let mut kind = |n: &str, k: u8, req: u64, failed: u64| {
        let e = want_nodes.entry(n.to_string()).or_insert((u8::MAX, 0, 0));
        e.0 = e.0.min(k);
        e.1 += req;
        e.2 += failed;
    };
    for (k, e) in &truth.edges {
        let client_kind = if k.client == "user" { 4 } else { 0 };
        let server_kind = match k.connection_type.as_str() {
            "" => 0,
            _ if k.client == "user" => 0,
            "database" => 1,
            "messaging_system" => 2,
            _ => 3,
        };
        kind(&k.client, client_kind, 0, 0);
        kind(&k.server, server_kind, e.requests, e.failed);
    }
    for n in ["user", "frontend.shop", "orders", "kafka"] {
        assert!(
            want_nodes.contains_key(n),
            "the truth names node {n}: {want_nodes:?}"
        );
    }
    let nodes = topo["nodes"].as_array().expect("nodes array");
    let got_nodes: BTreeMap<String, (String, u64, u64)> = nodes
        .iter()
        .map(|n| {
            (
                n["id"].as_str().expect("node id").to_string(),
                (
                    n["kind"].as_str().expect("node kind").to_string(),
                    n["requests"].as_u64().expect("node requests"),
                    n["failed"].as_u64().expect("node failed"),
                ),
            )
        })
        .collect();
    let want_nodes: BTreeMap<String, (String, u64, u64)> = want_nodes
        .into_iter()
        .map(|(n, (k, r, f))| (n, (KINDS[k as usize].to_string(), r, f)))
        .collect();
    assert_eq!(
        got_nodes, want_nodes,
        "topology nodes (kind, requests, failed)"
    );

    // A bad window is refused with a message naming the parameter and the value.
    let (status, body) = http_get(gw.admin, "/api/v1/topology?window=banana").expect("GET");
    assert_eq!(status, 400, "{body}");
    let err: Json = serde_json::from_str(&body).expect("error JSON");
    let msg = err["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"));
    assert!(msg.contains("`window`") && msg.contains("banana"), "{msg}");
    check_outcomes(&gw, &g);
}

// ---------------------------------------------------------------------------------------
// Grafana's Tempo service graph view.
//
// Grafana's Tempo data source (public/app/plugins/datasource/tempo in grafana/grafana, 12.x)
// draws its Service Graph tab from the Prometheus data source linked under "Service graph"
// in its settings, with the PromQL below (written here from reading that code; the function
// each one mirrors is named on it). Everything is an instant query; `$__range` is the time
// picker's range and `serviceMapQuery` the optional filter typed above the graph. The test
// runs these exact expressions against the real Prometheus, plus the same aggregations over
// the cumulative values instead of their `rate` (a rate over a range extrapolates, so only
// the cumulative form can be compared exactly with the truth's counts).

/// `$__range` as Grafana writes it for a "Last 5 minutes" time picker.
const GRAFANA_RANGE: &str = "300s";

/// `serviceMapMetrics` in `graphTransform.ts`: the four metrics the node graph is built from,
/// in Grafana's order (`secondsMetric`, `totalsMetric`, `failedMetric`, `histogramMetric`).
const GRAFANA_SERVICE_MAP_METRICS: [&str; 4] = [
    "traces_service_graph_request_server_seconds_sum",
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds_bucket",
];

/// `defaultTableFilter` in `graphTransform.ts`: the RED table's rate column lists server
/// spans only.
const GRAFANA_TABLE_FILTER: &str = "span_kind=\"SPAN_KIND_SERVER\"";

/// `rate(<metric><selector>[range])`, or the bare `<metric><selector>` for the cumulative form.
fn rate_or_value(selector: &str, range: Option<&str>) -> String {
    match range {
        Some(r) => format!("rate({selector}[{r}])"),
        None => selector.to_string(),
    }
}

/// The two queries `makePromServiceMapRequest` (`datasource.ts`) sends per metric of
/// [`GRAFANA_SERVICE_MAP_METRICS`], for classic histograms and without the namespace option:
/// `sum by (client, server) (rate(<metric><serviceMapQuery>[$__range]))` (refId = the metric)
/// and `group by (client, connection_type, server) (<metric><serviceMapQuery>)` (refId
/// `<metric>_labels`, which tells Grafana which nodes are virtual). With `range: None`, the
/// first without its `rate`.
fn grafana_service_map_query(
    metric: &str,
    service_map_query: &str,
    range: Option<&str>,
) -> (String, String) {
    (
        format!(
            "sum by (client, server) ({})",
            rate_or_value(&format!("{metric}{service_map_query}"), range)
        ),
        format!("group by (client, connection_type, server) ({metric}{service_map_query})"),
    )
}

/// The label matchers `buildExpr` (`datasource.ts`) puts into a RED query: the metric's own
/// `params`, then the service map filter with its service-graph labels mapped to span-metrics
/// ones (`client_x`/`server_x` → `x`, then the first `client` and the first `server` →
/// `service`), then `extra` (dropped when the filter already names `span_name`).
fn grafana_red_matchers(params: &[&str], service_map_query: &str, extra: &str) -> String {
    let mut q = service_map_query.to_string();
    if q.starts_with('{') && q.ends_with('}') {
        q = q[1..q.len() - 1].to_string();
    }
    let q = q
        .replace("client_", "")
        .replace("server_", "")
        .replacen("client", "service", 1)
        .replacen("server", "service", 1);
    let mut all: Vec<String> = params.iter().map(|p| p.to_string()).collect();
    if q.contains("span_name") {
        all.push(q);
    } else {
        all.extend([q, extra.to_string()].into_iter().filter(|s| !s.is_empty()));
    }
    all.join(",")
}

/// `rateMetric` through `buildExpr` with `defaultTableFilter` (`rateQuery` in
/// `datasource.ts`): the table's rows, the five busiest server span names.
fn grafana_rate_query(service_map_query: &str, range: Option<&str>) -> String {
    let m = grafana_red_matchers(&[], service_map_query, GRAFANA_TABLE_FILTER);
    let inner = format!(
        "sum({}) by (span_name)",
        rate_or_value(&format!("traces_spanmetrics_calls_total{{{m}}}"), range)
    );
    match range {
        Some(_) => format!("topk(5, {inner})"),
        None => inner,
    }
}

/// `errorRateMetric` through `buildExpr` with the rows' span names (`errorAndDurationQuery`
/// in `datasource.ts`): errors of those span names, of any kind.
fn grafana_error_query(service_map_query: &str, names: &[String], range: Option<&str>) -> String {
    let escaped: Vec<String> = names.iter().map(|n| grafana_escape(n)).collect();
    let m = grafana_red_matchers(
        &["status_code=\"STATUS_CODE_ERROR\""],
        service_map_query,
        &format!("span_name=~\"{}\"", escaped.join("|")),
    );
    let inner = format!(
        "sum({}) by (span_name)",
        rate_or_value(&format!("traces_spanmetrics_calls_total{{{m}}}"), range)
    );
    match range {
        Some(_) => format!("topk(5, {inner})"),
        None => inner,
    }
}

/// `durationMetric` through `buildExpr` for one row (`errorAndDurationQuery`): the p90 of the
/// span name's latency histogram, all kinds and statuses together.
fn grafana_duration_query(service_map_query: &str, name: &str, range: Option<&str>) -> String {
    let m = grafana_red_matchers(
        &[],
        service_map_query,
        &format!("span_name=~\"{}\"", grafana_escape(name)),
    );
    format!(
        "histogram_quantile(.9, sum({}) by (le))",
        rate_or_value(&format!("traces_spanmetrics_latency_bucket{{{m}}}"), range)
    )
}

/// A span name as a regex inside a PromQL string, as `getEscapedRegexValues(getEscapedValues
/// (...))` (`datasource.ts`) writes it: `"` and `\` escaped for the string, regex
/// metacharacters escaped with a string-escaped backslash, newlines as `\n`.
fn grafana_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '$' | '^' | '*' | '{' | '}' | '[' | ']' | '\'' | '+' | '?' | '.' | '(' | ')' | '|' => {
                out.push_str("\\\\");
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `histogram_quantile(q, ...)` of cumulative buckets `(le, count)` sorted by `le` and ending
/// with `+Inf`, as Prometheus computes it (linear interpolation inside the bucket holding the
/// rank; the highest finite bound when the rank falls in `+Inf`): the p90 the table must show.
fn prometheus_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let n = buckets.len();
    assert!(n >= 2 && buckets[n - 1].0 == f64::INFINITY);
    let total = buckets[n - 1].1;
    if total == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * total;
    let b = buckets[..n - 1]
        .iter()
        .position(|(_, c)| *c >= rank)
        .unwrap_or(n - 1);
    if b == n - 1 {
        return buckets[n - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// `label=value` rows of a result whose only labels must be `keys`, as one map key each.
fn rows(what: &str, series: &Series, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for (l, v) in series {
        let names: Vec<&str> = l.keys().map(String::as_str).collect();
        assert!(
            names.iter().all(|n| keys.contains(n)),
            "{what}: labels {l:?} beyond Grafana's {keys:?}"
        );
        let key: Vec<String> = keys.iter().map(|k| label(l, k).to_string()).collect();
        assert!(out.insert(key, *v).is_none(), "{what}: two rows for {l:?}");
    }
    out
}

fn pair_row(client: &str, server: &str) -> Vec<String> {
    vec![client.to_string(), server.to_string()]
}

/// Compares two maps within a relative tolerance (sums of durations).
fn assert_close(what: &str, got: &BTreeMap<Vec<String>, f64>, want: &BTreeMap<Vec<String>, f64>) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: rows"
    );
    for (k, w) in want {
        let g = got[k];
        assert!(
            (g - w).abs() <= 1e-9 * w.abs().max(1.0),
            "{what} {k:?}: got {g}, want {w}"
        );
    }
}

/// The RED table of one Service Graph view (`serviceMapQuery` = `filter`), checked against
/// the truth's series `red` (the ones that view can see): Grafana's own queries return the
/// rows the truth has, and their cumulative forms the truth's counts and p90s.
fn check_grafana_red_table(url: &str, filter: &str, red: &[(&RedKey, &RedTruth)]) {
    let what = format!("RED table of {filter}");
    // Rows: the server span names, busiest five.
    let mut want_calls: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for (k, r) in red.iter().filter(|(k, _)| k.kind == "SPAN_KIND_SERVER") {
        *want_calls.entry(vec![k.span_name.clone()]).or_default() += r.calls as f64;
    }
    let rate_q = grafana_rate_query(filter, Some(GRAFANA_RANGE));
    let got = rows(&rate_q, &prom_query(url, &rate_q), &["span_name"]);
    assert_eq!(
        got.len(),
        want_calls.len().min(5),
        "{what}: {rate_q} answers {got:?}; the truth's server span names: {want_calls:?}"
    );
    for (k, v) in &got {
        assert!(
            want_calls.contains_key(k) && v.is_finite() && *v >= 0.0,
            "{what}: {rate_q} answers {k:?} = {v}, not a server span name of the truth"
        );
    }
    let exact_q = grafana_rate_query(filter, None);
    assert_same(
        &format!("{what}: {exact_q}"),
        &rows(&exact_q, &prom_query(url, &exact_q), &["span_name"]),
        &want_calls,
    );
    if got.is_empty() {
        return;
    }
    // Error rate of those rows (any kind), and their p90 duration.
    let names: Vec<String> = got.keys().map(|k| k[0].clone()).collect();
    let mut want_errors: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for (k, r) in red {
        if k.status == "STATUS_CODE_ERROR" && names.contains(&k.span_name) {
            *want_errors.entry(vec![k.span_name.clone()]).or_default() += r.calls as f64;
        }
    }
    let error_q = grafana_error_query(filter, &names, Some(GRAFANA_RANGE));
    let got_errors = rows(&error_q, &prom_query(url, &error_q), &["span_name"]);
    assert_eq!(
        got_errors.keys().collect::<Vec<_>>(),
        want_errors.keys().collect::<Vec<_>>(),
        "{what}: {error_q}"
    );
    let exact_q = grafana_error_query(filter, &names, None);
    assert_same(
        &format!("{what}: {exact_q}"),
        &rows(&exact_q, &prom_query(url, &exact_q), &["span_name"]),
        &want_errors,
    );
    for name in &names {
        let q = grafana_duration_query(filter, name, Some(GRAFANA_RANGE));
        let got = prom_query(url, &q);
        assert!(
            got.len() == 1 && got[0].0.is_empty(),
            "{what}: {q} answers {got:?}, not one unlabelled p90"
        );
        let durations: Vec<f64> = red
            .iter()
            .filter(|(k, _)| &k.span_name == name)
            .flat_map(|(_, r)| r.durations_seconds.iter().copied())
            .collect();
        let mut b: Vec<(f64, f64)> = bounds()
            .into_iter()
            .chain([f64::INFINITY])
            .zip(cumulative_buckets(&durations))
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        let want = prometheus_quantile(0.9, &b);
        let q = grafana_duration_query(filter, name, None);
        let got = prom_query(url, &q);
        assert!(
            got.len() == 1 && (got[0].1 - want).abs() <= 1e-9 * want.max(1.0),
            "{what}: {q} answers {got:?}, want p90 {want} of {} durations",
            durations.len()
        );
    }
}

#[test]
fn grafana_tempo_service_graph_view_queries_answer_the_truth() {
    let Some(url) = service("MESHGATE_PROMETHEUS_URL", "Prometheus") else {
        return;
    };
    let url = url.trim_end_matches('/').to_string();
    let run = format!("grafana{}x{}", std::process::id(), now_ns() % 1_000_000_000);
    let http = free_port();
    let dir = Scratch::new("derive-e2e-grafana");
    let buckets = bounds_yaml();
    // The spanmetrics in Tempo's names (what the RED table queries), the service graph in its
    // only naming, both remote-written.
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         connectors:\n\
         \x20 spanmetrics:\n    naming: tempo\n    metrics_flush_interval: 500ms\n    histogram:\n      explicit:\n        buckets: {buckets}\n\
         \x20 servicegraph:\n    metrics_flush_interval: 500ms\n    latency_histogram_buckets: {buckets}\n    store:\n      ttl: {}ms\n\
         exporters:\n  prometheusremotewrite:\n    endpoint: {url}/api/v1/write\n    external_labels:\n      e2e_run: {run}\n    retry_on_failure:\n      initial_interval: 100ms\n      max_interval: 300ms\n      max_elapsed_time: 20s\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [spanmetrics, servicegraph]\n\
         \x20   metrics:\n      receivers: [spanmetrics, servicegraph]\n      exporters: [prometheusremotewrite]\n",
        STORE_TTL.as_millis()
    );
    let gw = Gateway::start(&dir, "gw", &cfg);
    let g = simulate("shop.yaml", Flavor::EnvoyOtlp, 21, 250);
    let truth = &g.truth;
    // Two halves with flushes in between, so Grafana's rates are not all 0.
    let spans = post_all_pausing(http, &g, Duration::from_millis(1500));
    check_received(&gw, "otlp", &["spanmetrics", "servicegraph"], spans, truth);
    wait_settled(&gw, spans);
    // The filter a user types above the graph to see one cluster; here, this run.
    let filter = format!("{{e2e_run=\"{run}\"}}");
    let (want_total, want_calls) = (truth.total_requests() as f64, truth.total_calls() as f64);
    let start = Instant::now();
    loop {
        let got = |q: &str| prom_query(&url, q).first().map_or(0.0, |x| x.1);
        let total = got(&format!("sum(traces_service_graph_request_total{filter})"));
        let calls = got(&format!("sum(traces_spanmetrics_calls_total{filter})"));
        // `rate` needs two samples in its range: wait until every series has them, as a
        // series seen once (a virtual edge appears only after the store TTL) has no rate yet.
        let samples = |m: &str| {
            got(&format!(
                "min(count_over_time({m}{filter}[{GRAFANA_RANGE}]))"
            ))
        };
        if total == want_total
            && calls == want_calls
            && samples("traces_service_graph_request_total") >= 2.0
            && samples("traces_spanmetrics_calls_total") >= 2.0
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Prometheus has {total} edge requests (want {want_total}) and {calls} span calls \
             (want {want_calls}) after 30s, or some series fewer than 2 samples; gateway \
             log:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The node graph: every (client, server) pair of the truth is one row of each metric
    // (the server histogram only where a server span was seen), with the truth's values.
    let pairs = pairs(truth);
    for metric in GRAFANA_SERVICE_MAP_METRICS {
        // The counters have a row per pair; the server histogram only where a server span
        // was seen (a virtual server has none).
        let histogram = metric.starts_with("traces_service_graph_request_server_seconds");
        let want_rows: BTreeMap<Vec<String>, f64> = pairs
            .iter()
            .filter(|(_, p)| !histogram || !p.server_seconds.is_empty())
            .map(|((c, s), p)| {
                let v = match metric {
                    "traces_service_graph_request_total" => p.requests as f64,
                    "traces_service_graph_request_failed_total" => p.failed as f64,
                    "traces_service_graph_request_server_seconds_sum" => {
                        p.server_seconds.iter().sum()
                    }
                    // Summed over `le`: each request counts once in every bucket at or above
                    // its duration.
                    _ => cumulative_buckets(&p.server_seconds).iter().sum(),
                };
                (pair_row(c, s), v)
            })
            .collect();
        let (sum_q, group_q) = grafana_service_map_query(metric, &filter, Some(GRAFANA_RANGE));
        let got = rows(&sum_q, &prom_query(&url, &sum_q), &["client", "server"]);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want_rows.keys().collect::<Vec<_>>(),
            "{sum_q}: the node graph's edges"
        );
        assert!(
            got.values().all(|v| v.is_finite() && *v >= 0.0),
            "{sum_q}: {got:?}"
        );
        if metric == "traces_service_graph_request_total" {
            assert!(
                got.values().sum::<f64>() > 0.0,
                "{sum_q}: no traffic in the range: {got:?}"
            );
        }
        // The labels query: every truth edge with its connection type.
        let got_labels = rows(
            &group_q,
            &prom_query(&url, &group_q),
            &["client", "connection_type", "server"],
        );
        let want_labels: BTreeMap<Vec<String>, f64> = truth
            .edges
            .iter()
            .filter(|(_, e)| !histogram || !e.server_seconds.is_empty())
            .map(|(k, _)| {
                let row = vec![
                    k.client.clone(),
                    k.connection_type.clone(),
                    k.server.clone(),
                ];
                (row, 1.0)
            })
            .collect();
        assert_same(&group_q, &got_labels, &want_labels);
        // The same aggregation over the cumulative values: the truth's numbers.
        let (exact_q, _) = grafana_service_map_query(metric, &filter, None);
        let exact = rows(&exact_q, &prom_query(&url, &exact_q), &["client", "server"]);
        if metric == "traces_service_graph_request_server_seconds_sum" {
            assert_close(&exact_q, &exact, &want_rows);
        } else {
            assert_same(&exact_q, &exact, &want_rows);
        }
    }
    // Node stats as `mapPromMetricsToServiceMap` (`graphTransform.ts`) adds them up: each
    // row counts for its server node; a node that only calls shows 0.
    let node_stats = |metric: &str| {
        let (exact_q, _) = grafana_service_map_query(metric, &filter, None);
        let mut nodes: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for (k, v) in rows(&exact_q, &prom_query(&url, &exact_q), &["client", "server"]) {
            nodes.entry(vec![k[0].clone()]).or_default();
            *nodes.entry(vec![k[1].clone()]).or_default() += v;
        }
        nodes
    };
    let mut want_nodes: BTreeMap<Vec<String>, (f64, f64)> = BTreeMap::new();
    for ((c, s), p) in &pairs {
        want_nodes.entry(vec![c.clone()]).or_default();
        let n = want_nodes.entry(vec![s.clone()]).or_default();
        n.0 += p.requests as f64;
        n.1 += p.failed as f64;
    }
    assert_same(
        "node requests",
        &node_stats("traces_service_graph_request_total"),
        &want_nodes.iter().map(|(k, v)| (k.clone(), v.0)).collect(),
    );
    assert_same(
        "node failed requests",
        &node_stats("traces_service_graph_request_failed_total"),
        &want_nodes.iter().map(|(k, v)| (k.clone(), v.1)).collect(),
    );

    // The RED table under the graph: the whole mesh, then each node as the user filters on
    // it (`{..., server="<node>"}`, which buildExpr turns into `service="<node>"`).
    let red: Vec<(&RedKey, &RedTruth)> = truth.red.iter().collect();
    check_grafana_red_table(&url, &filter, &red);
    let rate_q = grafana_rate_query(&filter, Some(GRAFANA_RANGE));
    let rates = prom_query(&url, &rate_q);
    assert!(
        rates.iter().map(|r| r.1).sum::<f64>() > 0.0,
        "{rate_q}: no traffic in the range: {rates:?}"
    );
    let servers: std::collections::BTreeSet<&str> =
        truth.edges.keys().map(|k| k.server.as_str()).collect();
    let mut tables = 0;
    for node in servers {
        let node_filter = format!("{{e2e_run=\"{run}\",server=\"{node}\"}}");
        let red: Vec<(&RedKey, &RedTruth)> = truth
            .red
            .iter()
            .filter(|(k, _)| k.service == node)
            .collect();
        // Every instrumented node of the graph has RED rows under its node id: the span
        // metrics' `service` and the graph's node names agree.
        let instrumented = truth
            .edges
            .keys()
            .any(|k| k.server == node && (k.connection_type.is_empty() || k.client == "user"));
        assert_eq!(
            red.iter().any(|(k, _)| k.kind == "SPAN_KIND_SERVER"),
            instrumented,
            "node {node}: server spans under service={node} in the truth"
        );
        tables += usize::from(instrumented);
        check_grafana_red_table(&url, &node_filter, &red);
    }
    assert!(tables >= 4, "the shop has at least four instrumented nodes");
}
