//! The connectors against the mesh simulator's ground truth: for every example topology and
//! every proxy flavor (Envoy OTLP with interleaved SDK spans, Envoy Zipkin with and without the
//! shared span context, Linkerd), delivered in order, shuffled and split across requests, and
//! streamed in simulated real time through the store's TTL, the service graph has exactly the
//! truth's edges (no missing or doubled edge) with exactly its request and failed counts and
//! latency histograms, and the RED series match exactly. Also: the cardinality limit and
//! expiry of spanmetrics, and the pairing store staying bounded when half the spans never find
//! a partner.

use meshgate_connectors::servicegraph::{ServiceGraph, ServiceGraphConfig};
use meshgate_connectors::spanmetrics::{SpanMetrics, SpanMetricsConfig};
use meshgate_meshsim::truth::{EdgeKey, RedKey, bucket_counts};
use meshgate_meshsim::{Body, Flavor, Generated, GroundTruth, Simulator, Topology};
use meshgate_pdata::attributes::get_str;
use meshgate_pdata::otlp::*;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOPOLOGIES: [&str; 3] = ["bookinfo.yaml", "shop.yaml", "linkerd-emojivoto.yaml"];

fn topology(file: &str) -> Topology {
    let path = format!(
        "{}/../meshsim/topologies/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    Topology::from_file(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The OTLP requests the gateway's pipelines would see: Zipkin bodies go through the zipkin
/// receiver's own mapping.
fn otlp(g: &Generated) -> Vec<ExportTraceServiceRequest> {
    let mut out = g.requests.clone();
    for body in &g.zipkin {
        let (req, problems) = meshgate_receivers::zipkin::json_to_otlp(body, false).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        out.push(req);
    }
    out
}

fn config<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn at(unix_nano: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unix_nano)
}

/// What the service graph emitted for one edge.
#[derive(Debug, Default, PartialEq)]
struct EdgeGot {
    requests: u64,
    failed: u64,
    client_buckets: Option<(Vec<f64>, Vec<u64>)>,
    server_buckets: Option<(Vec<f64>, Vec<u64>)>,
}

fn points(m: &ExportMetricsServiceRequest) -> impl Iterator<Item = &Metric> {
    m.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
}

fn label(attrs: &[KeyValue], key: &str) -> String {
    get_str(attrs, key).unwrap_or_default().to_string()
}

fn edges_of(m: &ExportMetricsServiceRequest) -> BTreeMap<EdgeKey, EdgeGot> {
    let mut out: BTreeMap<EdgeKey, EdgeGot> = BTreeMap::new();
    for metric in points(m) {
        let key = |a: &[KeyValue]| {
            EdgeKey::new(
                &label(a, "client"),
                &label(a, "server"),
                &label(a, "connection_type"),
            )
        };
        match (&metric.data, metric.name.as_str()) {
            (Some(metric::Data::Sum(s)), name) => {
                for p in &s.data_points {
                    let v = match p.value {
                        Some(number_data_point::Value::AsInt(i)) => i as u64,
                        Some(number_data_point::Value::AsDouble(d)) => d as u64,
                        None => 0,
                    };
                    let e = out.entry(key(&p.attributes)).or_default();
                    match name {
                        "traces_service_graph_request_total" => e.requests += v,
                        "traces_service_graph_request_failed_total" => e.failed += v,
                        other => panic!("unexpected sum {other}"),
                    }
                }
            }
            (Some(metric::Data::Histogram(h)), name) => {
                for p in &h.data_points {
                    let e = out.entry(key(&p.attributes)).or_default();
                    let b = Some((p.explicit_bounds.clone(), p.bucket_counts.clone()));
                    assert_eq!(p.count, p.bucket_counts.iter().sum::<u64>());
                    match name {
                        "traces_service_graph_request_client_seconds" => e.client_buckets = b,
                        "traces_service_graph_request_server_seconds" => e.server_buckets = b,
                        // meshgate's own metric (client minus server duration), only on
                        // paired edges; its values are checked by the servicegraph unit tests.
                        "traces_service_graph_request_network_seconds" => assert_eq!(
                            label(&p.attributes, "connection_type"),
                            "",
                            "network latency on an unpaired edge"
                        ),
                        other => panic!("unexpected histogram {other}"),
                    }
                }
            }
            (_, other) => panic!("unexpected metric {other}"),
        }
    }
    out
}

/// Compares every edge exactly; returns a readable diff when anything differs.
fn compare_edges(
    got: &BTreeMap<EdgeKey, EdgeGot>,
    truth: &BTreeMap<EdgeKey, meshgate_meshsim::truth::EdgeTruth>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for (k, t) in truth {
        let Some(g) = got.get(k) else {
            problems.push(format!("missing edge {k:?} ({} requests)", t.requests));
            continue;
        };
        if (g.requests, g.failed) != (t.requests, t.failed) {
            problems.push(format!(
                "edge {k:?}: got {} requests / {} failed, truth {} / {}",
                g.requests, g.failed, t.requests, t.failed
            ));
        }
        for (side, values, hist) in [
            ("client", &t.client_seconds, &g.client_buckets),
            ("server", &t.server_seconds, &g.server_buckets),
        ] {
            match hist {
                None if values.is_empty() => {}
                None => problems.push(format!("edge {k:?}: no {side} histogram")),
                Some((bounds, counts)) => {
                    let want = bucket_counts(values, bounds);
                    if *counts != want {
                        problems.push(format!(
                            "edge {k:?}: {side} buckets {counts:?}, truth {want:?}"
                        ));
                    }
                }
            }
        }
    }
    for k in got.keys() {
        if !truth.contains_key(k) {
            problems.push(format!("extra edge {k:?}: {:?}", got[k]));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Calls and duration buckets per RED series.
fn red_of(m: &ExportMetricsServiceRequest) -> BTreeMap<RedKey, (u64, Vec<f64>, Vec<u64>)> {
    let mut out: BTreeMap<RedKey, (u64, Vec<f64>, Vec<u64>)> = BTreeMap::new();
    let key = |a: &[KeyValue]| RedKey {
        service: label(a, "service.name"),
        span_name: label(a, "span.name"),
        kind: label(a, "span.kind"),
        status: label(a, "status.code"),
    };
    for metric in points(m) {
        match &metric.data {
            Some(metric::Data::Sum(s)) => {
                assert_eq!(metric.name, "traces.span.metrics.calls");
                for p in &s.data_points {
                    let Some(number_data_point::Value::AsInt(v)) = p.value else {
                        panic!("calls are integers")
                    };
                    out.entry(key(&p.attributes)).or_default().0 += v as u64;
                }
            }
            Some(metric::Data::Histogram(h)) => {
                assert_eq!(metric.name, "traces.span.metrics.duration");
                for p in &h.data_points {
                    let e = out.entry(key(&p.attributes)).or_default();
                    e.1 = p.explicit_bounds.clone();
                    e.2 = p.bucket_counts.clone();
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

fn compare_red(
    got: &BTreeMap<RedKey, (u64, Vec<f64>, Vec<u64>)>,
    truth: &GroundTruth,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for (k, t) in &truth.red {
        match got.get(k) {
            None => problems.push(format!("missing RED series {k:?}")),
            Some((calls, bounds, counts)) => {
                if *calls != t.calls {
                    problems.push(format!("{k:?}: {calls} calls, truth {}", t.calls));
                }
                let want = bucket_counts(&t.durations_seconds, bounds);
                if *counts != want {
                    problems.push(format!("{k:?}: buckets {counts:?}, truth {want:?}"));
                }
            }
        }
    }
    for k in got.keys() {
        if !truth.red.contains_key(k) {
            problems.push(format!("extra RED series {k:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Feeds `requests` all at one instant (so only order and splitting matter), then expires
/// everything still waiting, and returns both connectors' output.
fn derive_at_once(
    requests: &[ExportTraceServiceRequest],
    sg_cfg: serde_json::Value,
) -> (ExportMetricsServiceRequest, ExportMetricsServiceRequest) {
    let mut sg = ServiceGraph::new(&config::<ServiceGraphConfig>(sg_cfg)).unwrap();
    let mut sm = SpanMetrics::new(&config::<SpanMetricsConfig>(serde_json::json!({}))).unwrap();
    let now = at(meshgate_meshsim::DEFAULT_START_UNIX_NANO + 3_600_000_000_000);
    let now_ns = meshgate_meshsim::DEFAULT_START_UNIX_NANO + 3_600_000_000_000;
    for r in requests {
        sg.consume(r, now);
        sm.consume(r, now_ns);
    }
    sg.expire_all(now);
    (sg.collect(now), sm.collect(now_ns))
}

#[test]
fn every_mesh_shape_gives_exactly_the_true_graph_and_red_series_in_any_delivery_order() {
    let mut failures = Vec::new();
    let mut checked_edges = 0;
    for file in TOPOLOGIES {
        for flavor in Flavor::ALL {
            let generated = Simulator::new(topology(file), flavor)
                .with_seed(11)
                .generate_roots(400);
            for (how, delivered) in [
                ("in order", generated.clone()),
                ("shuffled", generated.shuffled(5)),
                ("shuffled again", generated.shuffled(6)),
            ] {
                let (graph, red) = derive_at_once(&otlp(&delivered), serde_json::json!({}));
                let what = format!("{file} {flavor} {how}");
                if let Err(e) = compare_edges(&edges_of(&graph), &generated.truth.edges) {
                    failures.push(format!("{what}: service graph:\n{e}"));
                }
                if let Err(e) = compare_red(&red_of(&red), &generated.truth) {
                    failures.push(format!("{what}: RED:\n{e}"));
                }
                checked_edges += generated.truth.edges.len();
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        checked_edges > 100,
        "the topologies have edges: {checked_edges}"
    );
}

#[test]
fn proxy_only_mode_gives_exactly_the_proxy_edges() {
    let mut failures = Vec::new();
    for file in TOPOLOGIES {
        for flavor in [Flavor::EnvoyOtlp, Flavor::Linkerd] {
            let generated = Simulator::new(topology(file), flavor)
                .with_seed(3)
                .generate_roots(300);
            let (graph, _) = derive_at_once(
                &otlp(&generated.shuffled(9)),
                serde_json::json!({"spans": "proxy"}),
            );
            if let Err(e) = compare_edges(&edges_of(&graph), &generated.truth.proxy_only_edges) {
                failures.push(format!("{file} {flavor}:\n{e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Streams the simulation in simulated real time: every request is consumed at the moment
/// its proxy flushed it, and the store expires on a 1 s tick, so the two halves of a pair
/// arrive seconds apart (Envoy flushes every 5 s) and unpaired clients become virtual edges
/// only after the TTL, exactly as in a running gateway.
#[test]
fn streaming_through_the_ttl_keeps_the_graph_exact() {
    for flavor in Flavor::ALL {
        let sim = Simulator::new(topology("shop.yaml"), flavor).with_seed(21);
        let mut stream = sim.stream();
        let mut sg =
            ServiceGraph::new(&config::<ServiceGraphConfig>(serde_json::json!({}))).unwrap();
        let start = meshgate_meshsim::DEFAULT_START_UNIX_NANO;
        let mut t = start;
        let end = start + 60_000_000_000;
        let mut max_store = 0;
        while t < end {
            t += 1_000_000_000;
            for d in stream.advance_to(t) {
                let req = match d.body {
                    Body::Otlp(r) => r,
                    Body::Zipkin(z) => {
                        meshgate_receivers::zipkin::json_to_otlp(&z, false)
                            .unwrap()
                            .0
                    }
                };
                sg.consume(&req, at(d.at_unix_nano));
            }
            sg.expire(at(t));
            max_store = max_store.max(sg.store_len());
        }
        let (rest, truth) = stream.finish();
        for d in rest {
            let req = match d.body {
                Body::Otlp(r) => r,
                Body::Zipkin(z) => {
                    meshgate_receivers::zipkin::json_to_otlp(&z, false)
                        .unwrap()
                        .0
                }
            };
            sg.consume(&req, at(d.at_unix_nano));
        }
        let done = at(end + 60_000_000_000);
        sg.expire(done);
        let got = edges_of(&sg.collect(done));
        if let Err(e) = compare_edges(&got, &truth.edges) {
            panic!("{flavor} streamed:\n{e}");
        }
        assert!(truth.traces > 2000, "{flavor}: a minute at 50 roots/s");
        assert_eq!(sg.stats().dropped, 0);
        assert!(max_store > 0 && max_store < 100_000, "{max_store}");
    }
}

/// Half the traces lose every callee span (their servers never report), and traffic keeps
/// coming for ten simulated minutes: the store holds only about a TTL's worth of waiting
/// callers (it does not grow with time), and with a tight `max_items` it never exceeds it,
/// counting what it had to refuse.
#[test]
fn memory_stays_bounded_when_half_the_spans_never_find_a_partner() {
    let sim = Simulator::new(topology("bookinfo.yaml"), Flavor::EnvoyOtlp).with_seed(8);
    let mut stream = sim.stream();
    let drop_servers = |mut r: ExportTraceServiceRequest| {
        for rs in &mut r.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|s| {
                    let callee = s.kind == span::SpanKind::Server as i32
                        || s.kind == span::SpanKind::Consumer as i32;
                    !(callee && s.trace_id[15] % 2 == 0)
                });
            }
        }
        r
    };
    for max_items in [100_000usize, 40] {
        let mut stream_sg = ServiceGraph::new(&config::<ServiceGraphConfig>(serde_json::json!({
            "store": {"ttl": "10s", "max_items": max_items}
        })))
        .unwrap();
        let start = meshgate_meshsim::DEFAULT_START_UNIX_NANO;
        let mut t = start;
        let mut sizes = Vec::new();
        while t < start + 600_000_000_000 {
            t += 1_000_000_000;
            for d in stream.advance_to(t) {
                if let Body::Otlp(r) = d.body {
                    stream_sg.consume(&drop_servers(r), at(d.at_unix_nano));
                }
            }
            stream_sg.expire(at(t));
            let _ = stream_sg.collect(at(t));
            sizes.push(stream_sg.store_len());
        }
        let max = *sizes.iter().max().unwrap();
        assert!(max <= max_items, "store {max} > max_items {max_items}");
        // Steady state: the second five minutes hold no more than the first.
        let first = sizes[..300].iter().max().unwrap();
        let second = sizes[300..].iter().max().unwrap();
        assert!(
            second <= &(first + first / 5 + 50),
            "grows: {first} then {second}"
        );
        let stats = stream_sg.stats();
        assert!(stats.expired > 0 || stats.virtual_node > 0, "{stats:?}");
        if max_items == 40 {
            assert!(
                stats.dropped > 0,
                "a tight store refuses and counts: {stats:?}"
            );
        } else {
            assert_eq!(stats.dropped, 0, "{stats:?}");
        }
        let (nodes, sides, pairs) = stream_sg.interned_len();
        assert!(
            nodes < 100 && sides < 200 && pairs < 200,
            "{nodes} {sides} {pairs}"
        );
        stream = sim.stream();
    }
}

#[test]
fn spanmetrics_cardinality_limit_loses_no_span_and_expiry_forgets_idle_series() {
    let generated = Simulator::new(topology("shop.yaml"), Flavor::EnvoyOtlp)
        .with_seed(4)
        .generate_roots(300);
    let requests = otlp(&generated);
    let mut sm = SpanMetrics::new(&config::<SpanMetricsConfig>(serde_json::json!({
        "aggregation_cardinality_limit": 5,
        "metrics_expiration": "1m",
    })))
    .unwrap();
    let t0 = meshgate_meshsim::DEFAULT_START_UNIX_NANO;
    for r in &requests {
        sm.consume(r, t0);
    }
    let red = red_of(&sm.collect(t0));
    let total: u64 = red.values().map(|v| v.0).sum();
    assert_eq!(
        total,
        generated.truth.total_calls(),
        "every span is counted somewhere"
    );
    let regular = red
        .keys()
        .filter(|k| !k.service.is_empty() && !k.span_name.is_empty())
        .count();
    assert!(regular <= 5, "{regular} regular series past a limit of 5");
    assert!(red.len() > regular, "the overflow series exist");
    assert!(sm.stats().overflow_spans > 0, "{:?}", sm.stats());
    // Two minutes without spans: every series is emitted one last time, then gone.
    let later = t0 + 120_000_000_000;
    assert!(!sm.collect(later).resource_metrics.is_empty());
    let out = sm.collect(later + 1);
    assert!(
        out.resource_metrics.is_empty(),
        "{} resources left",
        out.resource_metrics.len()
    );
    assert_eq!(sm.stats().series, 0);
    assert!(sm.stats().series_expired > 0);
}

/// Upstream head sampling at 10 % (consistent, by trace id, the threshold written as
/// `ot=th:` in the trace state as a consistent sampler does): weighted by their adjusted counts,
/// the derived request count and RED calls of the whole mesh stay within 3 % of the unsampled
/// ground truth, and every busy edge within three standard deviations of what sampling 10 %
/// of its traces allows (a few hundred sampled calls per edge cannot do better than that).
#[test]
fn sampling_adjusted_counts_keep_derived_rates_right_under_upstream_sampling() {
    use meshgate_pdata::sampling::threshold::{Randomness, Threshold};
    let generated = Simulator::new(topology("shop.yaml"), Flavor::EnvoyOtlp)
        .with_seed(77)
        .generate_roots(10_000);
    let th = Threshold::from_probability(0.10, 4).unwrap();
    let ts = format!("ot=th:{}", th.encode().as_str());
    let mut sampled = Vec::new();
    for r in &generated.requests {
        let mut r = r.clone();
        for rs in &mut r.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans
                    .retain(|s| th.keeps(Randomness::from_trace_id(&s.trace_id).unwrap()));
                for s in &mut ss.spans {
                    s.trace_state = ts.clone();
                }
            }
        }
        sampled.push(r);
    }
    let kept: usize = sampled
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    assert!(kept < generated.span_count() / 8, "about a tenth is kept");
    let (graph, red) = derive_at_once(&sampled, serde_json::json!({}));
    let within = |got: f64, want: f64| (got - want).abs() / want <= 0.03;
    let edges = edges_of(&graph);
    let got_total: u64 = edges.values().map(|e| e.requests).sum();
    let want_total = generated.truth.total_requests();
    assert!(
        within(got_total as f64, want_total as f64),
        "{got_total} vs {want_total}"
    );
    for (k, t) in &generated.truth.edges {
        if t.requests >= 1000 {
            let got = edges.get(k).map_or(0, |e| e.requests) as f64;
            let n = t.requests as f64;
            let sd = (0.9 / (0.1 * n)).sqrt();
            assert!((got - n).abs() / n <= 3.0 * sd, "{k:?}: {got} vs {n}");
        }
    }
    let calls: u64 = red_of(&red).values().map(|v| v.0).sum();
    let want_calls = generated.truth.total_calls();
    assert!(
        within(calls as f64, want_calls as f64),
        "{calls} vs {want_calls}"
    );
}
