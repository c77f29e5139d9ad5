//! Behaviour of the service graph on hand-built spans shaped like what Envoy/Istio, Zipkin,
//! Linkerd and SDKs send.

use super::config::SpanSelection;
use super::graph::{
    INSTANCE_ID_ATTRIBUTE, REQUEST_CLIENT_SECONDS, REQUEST_FAILED_TOTAL, REQUEST_NETWORK_SECONDS,
    REQUEST_SERVER_SECONDS, REQUEST_TOTAL, RESOURCE_SERVICE_NAME, SCOPE_NAME,
};
use super::*;
use meshgate_engine::{ApiRoutes, BuildContext};
use meshgate_pdata::attributes::kv_str;
use meshgate_pdata::otlp::{
    ExportMetricsServiceRequest, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, Status, any_value, metric, number_data_point, span::SpanKind,
    status::StatusCode,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A round start time (a multiple of the topology resolution).
const T0: u64 = 1_700_000_000;

fn at(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_secs_f64(secs)
}

/// A span with its resource, as one arrives.
#[derive(Clone)]
struct Item {
    res: Vec<KeyValue>,
    span: Span,
}

fn id(trace: u8, n: u8) -> Vec<u8> {
    vec![0xab, 0, 0, 0, 0, 0, trace, n]
}

fn kvs(a: &[(&str, &str)]) -> Vec<KeyValue> {
    a.iter().map(|(k, v)| kv_str(k, v)).collect()
}

/// A span of `kind` in trace `trace` with id `n`, parent `parent`, lasting `ms`.
fn item(
    res: &[(&str, &str)],
    kind: SpanKind,
    trace: u8,
    n: u8,
    parent: Option<u8>,
    ms: u64,
    attrs: &[(&str, &str)],
) -> Item {
    let start = T0 * 1_000_000_000;
    Item {
        res: kvs(res),
        span: Span {
            trace_id: vec![trace; 16],
            span_id: id(trace, n),
            parent_span_id: parent.map(|p| id(trace, p)).unwrap_or_default(),
            name: format!("span-{n}"),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + ms * 1_000_000,
            attributes: kvs(attrs),
            ..Default::default()
        },
    }
}

fn svc(name: &str) -> Vec<(&str, &str)> {
    vec![("service.name", name)]
}

fn client(from: &str, trace: u8, n: u8, parent: Option<u8>, ms: u64) -> Item {
    item(&svc(from), SpanKind::Client, trace, n, parent, ms, &[])
}

fn server(to: &str, trace: u8, n: u8, parent: Option<u8>, ms: u64) -> Item {
    item(&svc(to), SpanKind::Server, trace, n, parent, ms, &[])
}

/// One request holding `items` in order, one resource each.
fn request(items: &[&Item]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: items
            .iter()
            .map(|i| ResourceSpans {
                resource: Some(Resource {
                    attributes: i.res.clone(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![i.span.clone()],
                    ..Default::default()
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn cfg() -> ServiceGraphConfig {
    ServiceGraphConfig::default()
}

fn graph(c: ServiceGraphConfig) -> ServiceGraph {
    ServiceGraph::new(&c).unwrap()
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        _ => panic!("{} is not a string", kv.key),
    }
}

fn attrs(a: &[KeyValue]) -> BTreeMap<String, String> {
    a.iter().map(|kv| (kv.key.clone(), text(kv))).collect()
}

fn edge_name(a: &[KeyValue]) -> String {
    let l = attrs(a);
    format!("{}->{}:{}", l["client"], l["server"], l["connection_type"])
}

fn metric<'a>(m: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a metric::Data> {
    m.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|x| x.name == name)
        .and_then(|x| x.data.as_ref())
}

/// `client->server:connection_type` → value of a counter.
fn counter(m: &ExportMetricsServiceRequest, name: &str) -> BTreeMap<String, i64> {
    match metric(m, name) {
        Some(metric::Data::Sum(s)) => s
            .data_points
            .iter()
            .map(|p| {
                let v = match p.value {
                    Some(number_data_point::Value::AsInt(v)) => v,
                    _ => panic!("not an int"),
                };
                (edge_name(&p.attributes), v)
            })
            .collect(),
        None => BTreeMap::new(),
        other => panic!("{name} is {other:?}"),
    }
}

/// `client->server:connection_type` → (count, sum) of a histogram.
fn histogram(m: &ExportMetricsServiceRequest, name: &str) -> BTreeMap<String, (u64, f64)> {
    match metric(m, name) {
        Some(metric::Data::Histogram(h)) => h
            .data_points
            .iter()
            .map(|p| (edge_name(&p.attributes), (p.count, p.sum.unwrap_or(0.0))))
            .collect(),
        None => BTreeMap::new(),
        other => panic!("{name} is {other:?}"),
    }
}

fn edges(g: &mut ServiceGraph, now: f64) -> BTreeMap<String, i64> {
    counter(&g.collect(at(now)), REQUEST_TOTAL)
}

fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Every span read ends in exactly one outcome.
fn outcomes(s: &Stats) -> u64 {
    s.paired + s.user + s.virtual_node + s.intra_workload + s.expired + s.dropped + s.skipped
}

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

#[test]
fn a_pair_forms_in_either_order_in_one_request_or_across_requests() {
    let c = client("frontend", 1, 1, None, 30);
    let s = server("backend", 1, 2, Some(1), 20);
    for order in [[&c, &s], [&s, &c]] {
        for split in [false, true] {
            let mut g = graph(cfg());
            if split {
                g.consume(&request(&[order[0]]), at(0.0));
                assert_eq!(g.store_len(), 1);
                g.consume(&request(&[order[1]]), at(4.0));
            } else {
                g.consume(&request(&order), at(0.0));
            }
            assert_eq!(g.store_len(), 0);
            let m = g.collect(at(5.0));
            assert_eq!(
                counter(&m, REQUEST_TOTAL),
                map(&[("frontend->backend:", 1)])
            );
            assert_eq!(
                counter(&m, REQUEST_FAILED_TOTAL),
                map(&[("frontend->backend:", 0)])
            );
            let (n, sum) = histogram(&m, REQUEST_CLIENT_SECONDS)["frontend->backend:"];
            assert_eq!(n, 1);
            assert!((sum - 0.030).abs() < 1e-9, "{sum}");
            let (n, sum) = histogram(&m, REQUEST_SERVER_SECONDS)["frontend->backend:"];
            assert_eq!(n, 1);
            assert!((sum - 0.020).abs() < 1e-9, "{sum}");
            assert_eq!(g.stats().paired, 2);
        }
    }
}

#[test]
fn a_self_call_between_two_instances_of_one_service_is_an_edge() {
    let mut g = graph(cfg());
    g.consume(
        &request(&[
            &client("cart", 1, 1, None, 5),
            &server("cart", 1, 2, Some(1), 4),
        ]),
        at(0.0),
    );
    assert_eq!(edges(&mut g, 1.0), map(&[("cart->cart:", 1)]));
}

#[test]
fn zipkin_shared_spans_pair_by_the_same_id_once() {
    let zc = client("frontend", 9, 1, Some(50), 30);
    let zs = item(
        &svc("backend"),
        SpanKind::Server,
        9,
        1,
        Some(50),
        25,
        &[("zipkin.shared", "true")],
    );
    // The backend's own outbound call is a child of the shared id: it must not be taken for
    // a sidecar client inside the frontend.
    let zo = item(
        &svc("backend"),
        SpanKind::Client,
        9,
        3,
        Some(1),
        5,
        &[("peer.service", "db")],
    );
    for order in permutations(&[&zc, &zs, &zo]) {
        let mut g = graph(cfg());
        for (i, it) in order.iter().enumerate() {
            g.consume(&request(&[it]), at(i as f64));
        }
        g.expire_all(at(4.0));
        assert_eq!(
            edges(&mut g, 5.0),
            map(&[("frontend->backend:", 1), ("backend->db:virtual_node", 1)]),
            "order {:?}",
            order
                .iter()
                .map(|i| i.span.name.clone())
                .collect::<Vec<_>>()
        );
        let s = g.stats();
        assert_eq!((s.paired, s.virtual_node), (2, 1));
        assert_eq!(outcomes(&s), 3);
    }
}

#[test]
fn an_application_server_span_inside_a_shared_zipkin_span_is_intra_workload() {
    let zc = client("frontend", 9, 1, None, 30);
    let zs = item(
        &svc("backend"),
        SpanKind::Server,
        9,
        1,
        None,
        25,
        &[("zipkin.shared", "true")],
    );
    let zd = server("backend", 9, 2, Some(1), 20);
    for order in permutations(&[&zc, &zs, &zd]) {
        let mut g = graph(cfg());
        for (i, it) in order.iter().enumerate() {
            g.consume(&request(&[it]), at(i as f64));
        }
        g.expire_all(at(4.0));
        let names: Vec<String> = order.iter().map(|i| i.span.name.clone()).collect();
        assert_eq!(
            edges(&mut g, 5.0),
            map(&[("frontend->backend:", 1)]),
            "{names:?}"
        );
        let s = g.stats();
        assert_eq!((s.paired, outcomes(&s)), (2, 3), "{names:?}");
        let pos = |n: &Item| order.iter().position(|i| std::ptr::eq(*i, n)).unwrap_or(0);
        let m = g.collect(at(5.0));
        let (_, sum) = histogram(&m, REQUEST_SERVER_SECONDS)["frontend->backend:"];
        if pos(&zd) < pos(&zs) && pos(&zc) < pos(&zs) {
            // The application span came while the client waited and the shared span had not:
            // nothing tells them apart yet, so it pairs. The call is still counted once.
            assert!((sum - 0.020).abs() < 1e-9, "{names:?}: {sum}");
        } else {
            assert!(
                (sum - 0.025).abs() < 1e-9,
                "{names:?}: the shared span is the server side: {sum}"
            );
            // Arriving after the pair completed, the application span can only expire.
            let after = pos(&zd) > pos(&zs) && pos(&zd) > pos(&zc);
            assert_eq!(
                (s.intra_workload, s.expired),
                if after { (0, 1) } else { (1, 0) }
            );
        }
    }
}

/// The four spans of one call through two Istio sidecars with instrumented applications.
fn istio_interleaved() -> Vec<Item> {
    let app = |name| vec![("service.name", name), ("service.namespace", "default")];
    let proxy = |name| vec![("service.name", name)];
    vec![
        // productpage's SDK client span; its peer attribute would make it a virtual edge
        // were it not recognised as wrapping the sidecar's span.
        item(
            &app("productpage"),
            SpanKind::Client,
            7,
            1,
            Some(9),
            40,
            &[
                ("server.address", "reviews"),
                ("http.request.method", "GET"),
            ],
        ),
        item(
            &proxy("productpage.default"),
            SpanKind::Client,
            7,
            2,
            Some(1),
            35,
            &[
                ("component", "proxy"),
                ("istio.canonical_service", "productpage"),
                ("istio.namespace", "default"),
                (
                    "upstream_cluster",
                    "outbound|9080||reviews.default.svc.cluster.local",
                ),
                ("http.status_code", "200"),
            ],
        ),
        item(
            &proxy("reviews.default"),
            SpanKind::Server,
            7,
            3,
            Some(2),
            30,
            &[
                ("component", "proxy"),
                ("istio.canonical_service", "reviews"),
                ("istio.namespace", "default"),
            ],
        ),
        item(&app("reviews"), SpanKind::Server, 7, 4, Some(3), 25, &[]),
    ]
}

#[test]
fn envoy_sidecar_and_application_spans_give_one_edge_in_every_arrival_order() {
    let items = istio_interleaved();
    let refs: Vec<&Item> = items.iter().collect();
    for order in permutations(&refs) {
        for together in [false, true] {
            let mut g = graph(cfg());
            if together {
                g.consume(&request(&order), at(0.0));
            } else {
                for (i, it) in order.iter().enumerate() {
                    g.consume(&request(&[it]), at(i as f64));
                }
            }
            g.expire_all(at(60.0));
            let names: Vec<String> = order.iter().map(|i| i.span.name.clone()).collect();
            assert_eq!(
                edges(&mut g, 61.0),
                map(&[("productpage.default->reviews.default:", 1)]),
                "order {names:?}, one request: {together}"
            );
            let s = g.stats();
            assert_eq!(s.paired, 2, "{names:?}");
            assert_eq!(s.virtual_node, 0, "{names:?}");
            // Whichever comes first: the application's server span after its sidecar's (the
            // sidecar's marker) or before it (waiting under the sidecar's id).
            assert_eq!(s.intra_workload, 2, "{names:?}");
            assert_eq!(s.expired, 0, "{names:?}");
            assert_eq!(outcomes(&s), 4);
            assert_eq!(g.store_len(), 0);
        }
    }
}

#[test]
fn the_server_latency_of_an_interleaved_call_is_the_sidecars() {
    let items = istio_interleaved();
    let mut g = graph(cfg());
    g.consume(&request(&items.iter().collect::<Vec<_>>()), at(0.0));
    let m = g.collect(at(1.0));
    let e = "productpage.default->reviews.default:";
    assert!((histogram(&m, REQUEST_CLIENT_SECONDS)[e].1 - 0.035).abs() < 1e-9);
    assert!((histogram(&m, REQUEST_SERVER_SECONDS)[e].1 - 0.030).abs() < 1e-9);
}

/// One Linkerd hop web → emoji: outbound server, outbound endpoint, inbound server, inbound
/// router; optionally with the applications' spans around it.
fn linkerd_hop(with_apps: bool) -> Vec<Item> {
    let proxy = |name| vec![("service.name", name), ("k8s.namespace.name", "emojivoto")];
    let app = |name| vec![("service.name", name), ("service.namespace", "emojivoto")];
    let mut v = vec![
        item(
            &proxy("web"),
            SpanKind::Server,
            11,
            2,
            Some(1),
            12,
            &[
                ("direction", "outbound"),
                ("http.response.status_code", "200"),
            ],
        ),
        item(
            &proxy("web"),
            SpanKind::Client,
            11,
            3,
            Some(2),
            11,
            &[
                ("direction", "outbound"),
                ("server.address", "emoji-svc.emojivoto.svc.cluster.local"),
            ],
        ),
        item(
            &proxy("emoji"),
            SpanKind::Server,
            11,
            4,
            Some(3),
            9,
            &[("direction", "inbound")],
        ),
        item(
            &proxy("emoji"),
            SpanKind::Client,
            11,
            5,
            Some(4),
            8,
            &[("direction", "inbound"), ("server.address", "localhost")],
        ),
    ];
    if with_apps {
        v.push(item(
            &app("web"),
            SpanKind::Client,
            11,
            1,
            None,
            15,
            &[("server.address", "emoji-svc")],
        ));
        v.push(item(
            &app("emoji"),
            SpanKind::Server,
            11,
            6,
            Some(5),
            6,
            &[],
        ));
    }
    v
}

#[test]
fn a_linkerd_hop_is_one_edge_in_every_arrival_order() {
    for with_apps in [false, true] {
        let items = linkerd_hop(with_apps);
        let refs: Vec<&Item> = items.iter().collect();
        for order in permutations(&refs) {
            let mut g = graph(cfg());
            for (i, it) in order.iter().enumerate() {
                g.consume(&request(&[it]), at(i as f64));
            }
            g.expire_all(at(60.0));
            let names: Vec<String> = order.iter().map(|i| i.span.name.clone()).collect();
            assert_eq!(
                edges(&mut g, 61.0),
                map(&[("web.emojivoto->emoji.emojivoto:", 1)]),
                "{names:?}"
            );
            let s = g.stats();
            assert_eq!((s.paired, s.virtual_node), (2, 0), "{names:?}");
            assert_eq!(outcomes(&s), items.len() as u64, "{names:?}");
        }
        // All in one request, every local hop is recognised as such.
        let mut g = graph(cfg());
        g.consume(&request(&refs), at(0.0));
        g.expire_all(at(60.0));
        let s = g.stats();
        assert_eq!(s.intra_workload, items.len() as u64 - 2);
        assert_eq!(edges(&mut g, 61.0).len(), 1);
    }
}

#[test]
fn unpaired_callers_with_a_peer_become_virtual_nodes_after_the_ttl() {
    let front = svc("frontend");
    let items = [
        item(
            &front,
            SpanKind::Client,
            1,
            1,
            None,
            10,
            &[("peer.service", "payments")],
        ),
        item(
            &front,
            SpanKind::Client,
            1,
            2,
            None,
            10,
            &[
                ("db.system", "postgresql"),
                ("db.name", "orders"),
                ("server.address", "pg-0"),
            ],
        ),
        item(
            &front,
            SpanKind::Producer,
            1,
            3,
            None,
            10,
            &[
                ("messaging.system", "kafka"),
                ("server.address", "kafka-broker"),
            ],
        ),
        item(
            &[("service.name", "productpage.default")],
            SpanKind::Client,
            1,
            4,
            None,
            10,
            &[
                ("component", "proxy"),
                ("error", "true"),
                ("http.status_code", "0"),
                ("response_flags", "UF"),
                (
                    "upstream_cluster",
                    "outbound|9080||reviews.default.svc.cluster.local",
                ),
            ],
        ),
        item(
            &front,
            SpanKind::Client,
            1,
            5,
            None,
            10,
            &[("http.method", "GET")],
        ),
        item(
            &front,
            SpanKind::Client,
            1,
            6,
            None,
            10,
            &[("net.peer.name", "api.stripe.com")],
        ),
    ];
    let mut g = graph(cfg());
    g.consume(&request(&items.iter().collect::<Vec<_>>()), at(0.0));
    g.expire(at(9.9));
    assert_eq!(edges(&mut g, 9.9), map(&[]), "nothing before the TTL");
    g.expire(at(10.0));
    let m = g.collect(at(10.0));
    assert_eq!(
        counter(&m, REQUEST_TOTAL),
        map(&[
            ("frontend->api.stripe.com:virtual_node", 1),
            ("frontend->kafka-broker:messaging_system", 1),
            ("frontend->orders:database", 1),
            ("frontend->payments:virtual_node", 1),
            ("productpage.default->reviews.default:virtual_node", 1),
        ])
    );
    assert_eq!(
        counter(&m, REQUEST_FAILED_TOTAL)["productpage.default->reviews.default:virtual_node"],
        1,
        "Envoy's string error=true fails the edge"
    );
    assert!(
        histogram(&m, REQUEST_SERVER_SECONDS).is_empty(),
        "no server side"
    );
    assert_eq!(histogram(&m, REQUEST_CLIENT_SECONDS).len(), 5);
    let s = g.stats();
    assert_eq!((s.virtual_node, s.expired), (5, 1));
    assert_eq!(g.store_len(), 0);
}

#[test]
fn database_name_attributes_name_databases_the_peer_list_misses() {
    let mut c = cfg();
    c.virtual_node_peer_attributes = vec!["peer.service".into()];
    let mut g = graph(c);
    let db = item(
        &svc("frontend"),
        SpanKind::Client,
        1,
        1,
        None,
        3,
        &[("db.system", "mongodb"), ("db.namespace", "catalog")],
    );
    let not_db = item(
        &svc("frontend"),
        SpanKind::Client,
        1,
        2,
        None,
        3,
        &[("db.name", "x")],
    );
    g.consume(&request(&[&db, &not_db]), at(0.0));
    g.expire(at(11.0));
    assert_eq!(
        edges(&mut g, 11.0),
        map(&[("frontend->catalog:database", 1)])
    );
    assert_eq!(g.stats().expired, 1);
}

#[test]
fn a_root_server_span_is_an_edge_from_user_at_once() {
    let mut g = graph(cfg());
    g.consume(&request(&[&server("gateway", 1, 1, None, 40)]), at(0.0));
    let consumer = item(&svc("worker"), SpanKind::Consumer, 2, 1, None, 5, &[]);
    g.consume(&request(&[&consumer]), at(0.0));
    assert_eq!(g.store_len(), 0);
    let m = g.collect(at(1.0));
    assert_eq!(
        counter(&m, REQUEST_TOTAL),
        map(&[
            ("user->gateway:virtual_node", 1),
            ("user->worker:virtual_node", 1)
        ])
    );
    assert_eq!(
        histogram(&m, REQUEST_SERVER_SECONDS)["user->gateway:virtual_node"].0,
        1
    );
    assert!(histogram(&m, REQUEST_CLIENT_SECONDS).is_empty());
    assert_eq!(g.stats().user, 2);
}

#[test]
fn a_call_fails_when_either_side_failed() {
    let mut g = graph(cfg());
    // Client failed (Envoy string), server fine.
    let c1 = item(
        &svc("a"),
        SpanKind::Client,
        1,
        1,
        None,
        1,
        &[("error", "true")],
    );
    let s1 = server("b", 1, 2, Some(1), 1);
    // Server failed by its 5xx string status.
    let c2 = client("a", 2, 1, None, 1);
    let s2 = item(
        &svc("b"),
        SpanKind::Server,
        2,
        2,
        Some(1),
        1,
        &[("http.status_code", "503")],
    );
    // An explicit OK status wins over the 503.
    let c3 = client("a", 3, 1, None, 1);
    let mut s3 = item(
        &svc("b"),
        SpanKind::Server,
        3,
        2,
        Some(1),
        1,
        &[("http.status_code", "503")],
    );
    s3.span.status = Some(Status {
        code: StatusCode::Ok as i32,
        message: String::new(),
    });
    // An explicit ERROR on the client.
    let mut c4 = client("a", 4, 1, None, 1);
    c4.span.status = Some(Status {
        code: StatusCode::Error as i32,
        message: String::new(),
    });
    let s4 = server("b", 4, 2, Some(1), 1);
    g.consume(&request(&[&c1, &s1, &c2, &s2, &c3, &s3, &c4, &s4]), at(0.0));
    let m = g.collect(at(1.0));
    assert_eq!(counter(&m, REQUEST_TOTAL), map(&[("a->b:", 4)]));
    assert_eq!(counter(&m, REQUEST_FAILED_TOTAL), map(&[("a->b:", 3)]));
}

#[test]
fn dimensions_become_client_and_server_labels() {
    let mut c = cfg();
    c.dimensions = vec!["http.method".into(), "version".into()];
    let mut g = graph(c);
    let cl = item(
        &svc("a"),
        SpanKind::Client,
        1,
        1,
        None,
        1,
        &[("http.method", "GET")],
    );
    let sv = item(
        &[("service.name", "b"), ("version", "v2")],
        SpanKind::Server,
        1,
        2,
        Some(1),
        1,
        &[],
    );
    let cl2 = item(
        &svc("a"),
        SpanKind::Client,
        2,
        1,
        None,
        1,
        &[("http.method", "POST")],
    );
    let sv2 = item(
        &[("service.name", "b"), ("version", "v2")],
        SpanKind::Server,
        2,
        2,
        Some(1),
        1,
        &[],
    );
    g.consume(&request(&[&cl, &sv, &cl2, &sv2]), at(0.0));
    let m = g.collect(at(1.0));
    let Some(metric::Data::Sum(s)) = metric(&m, REQUEST_TOTAL) else {
        panic!("no {REQUEST_TOTAL}");
    };
    let got: Vec<BTreeMap<String, String>> =
        s.data_points.iter().map(|p| attrs(&p.attributes)).collect();
    let want = |method: &str| -> BTreeMap<String, String> {
        [
            ("client", "a"),
            ("server", "b"),
            ("connection_type", ""),
            ("client_http.method", method),
            ("server_version", "v2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    assert_eq!(got, vec![want("GET"), want("POST")]);
}

#[test]
fn a_full_store_drops_and_counts_what_would_have_waited() {
    let mut c = cfg();
    c.store.max_items = 3;
    let mut g = graph(c);
    let spans: Vec<Item> = (1..=5).map(|n| client("a", 1, n, None, 1)).collect();
    g.consume(&request(&spans.iter().collect::<Vec<_>>()), at(0.0));
    assert_eq!(g.store_len(), 3);
    assert_eq!(g.stats().dropped, 2);
    // A span completing a waiting pair needs no room.
    g.consume(&request(&[&server("b", 1, 9, Some(1), 1)]), at(1.0));
    assert_eq!(g.stats().paired, 2);
    assert_eq!(g.stats().dropped, 2);
}

#[test]
fn markers_for_parents_that_never_come_cannot_crowd_out_spans() {
    let mut c = cfg();
    c.store.max_items = 10;
    let mut g = graph(c);
    // Twenty calls whose clients' parents never arrive: each leaves a marker.
    for t in 1..=20u8 {
        g.consume(
            &request(&[
                &client("a", t, 1, Some(9), 1),
                &server("b", t, 2, Some(1), 1),
            ]),
            at(0.0),
        );
    }
    assert_eq!(g.markers_len(), 10);
    assert_eq!(g.stats().markers_dropped, 10);
    assert_eq!(g.stats().paired, 40);
    // Spans still find room.
    let lonely: Vec<Item> = (1..=5).map(|n| client("a", 100, n, None, 1)).collect();
    g.consume(&request(&lonely.iter().collect::<Vec<_>>()), at(1.0));
    assert_eq!((g.store_len(), g.stats().dropped), (5, 0));
    g.expire(at(10.0));
    assert_eq!(g.markers_len(), 0, "markers expire with the TTL");
}

#[test]
fn the_ttl_expires_unpaired_halves_and_only_then() {
    let mut g = graph(cfg());
    g.consume(&request(&[&client("a", 1, 1, None, 1)]), at(0.0));
    g.consume(&request(&[&server("b", 2, 2, Some(1), 1)]), at(5.0));
    g.expire(at(9.999));
    assert_eq!(g.store_len(), 2);
    g.expire(at(10.0));
    assert_eq!((g.store_len(), g.stats().expired), (1, 1));
    // The server half waited from 5 s: it only goes at 15 s.
    g.consume(&request(&[&client("a", 2, 2, None, 1)]), at(14.0));
    assert_eq!(
        edges(&mut g, 14.0),
        map(&[]),
        "a different span id does not pair"
    );
    g.consume(&request(&[&client("a", 2, 1, None, 1)]), at(14.5));
    assert_eq!(edges(&mut g, 14.5), map(&[("a->b:", 1)]));
    g.expire(at(100.0));
    assert_eq!(g.store_len(), 0);
    assert_eq!(outcomes(&g.stats()), 4);
}

#[test]
fn memory_stays_bounded_when_half_the_spans_never_find_a_partner() {
    let mut c = cfg();
    c.store.max_items = 500;
    c.store.ttl = meshgate_config::DurationValue(Duration::from_secs(1));
    c.metrics_expiration = meshgate_config::DurationValue(Duration::from_secs(5));
    c.topology.retention = meshgate_config::DurationValue(Duration::from_secs(10));
    c.topology.resolution = meshgate_config::DurationValue(Duration::from_secs(1));
    let mut g = graph(c);
    let mut read = 0u64;
    let mut max_store = 0;
    for tick in 0..300u64 {
        let now = tick as f64 * 0.1;
        let mut spans = Vec::new();
        for i in 0..200u64 {
            let mut trace = (tick * 1000 + i).to_be_bytes().to_vec();
            trace.extend([7u8; 8]);
            // Services come and go, as ephemeral names do.
            let name = format!("svc-{}", (tick / 50) * 10 + i % 10);
            let mut pair = match i % 4 {
                // A client and its server.
                0 | 2 => vec![
                    client(&name, 0, 1, None, 2),
                    server("backend", 0, 2, Some(1), 1),
                ],
                // A server whose client never comes.
                1 => vec![server("backend", 0, 2, Some(3), 1)],
                // A client whose server never comes, naming no peer.
                _ => vec![client(&name, 0, 1, None, 2)],
            };
            for s in &mut pair {
                s.span.trace_id = trace.clone();
            }
            spans.extend(pair);
        }
        read += spans.len() as u64;
        g.consume(&request(&spans.iter().collect::<Vec<_>>()), at(now));
        g.expire(at(now));
        max_store = max_store.max(g.store_len());
        if tick % 10 == 0 {
            g.collect(at(now));
        }
    }
    assert!(max_store <= 500, "{max_store}");
    assert!(g.stats().dropped > 0, "the bound was reached");
    g.expire_all(at(60.0));
    assert_eq!(g.store_len(), 0);
    assert_eq!(outcomes(&g.stats()), read, "every span is accounted for");
    g.collect(at(200.0));
    assert_eq!(g.series_len(), 0, "every series idled out");
    let (nodes, sides, topo) = g.interned_len();
    assert_eq!((nodes, sides, topo), (1, 1, 0), "only `user` is left");
}

#[test]
fn proxy_mode_reads_only_proxy_spans() {
    let mut c = cfg();
    c.spans = SpanSelection::Proxy;
    let mut g = graph(c);
    let sdk_c = client("a", 1, 1, None, 1);
    let sdk_s = server("b", 1, 2, Some(1), 1);
    let env_c = item(
        &svc("a"),
        SpanKind::Client,
        2,
        1,
        None,
        1,
        &[("component", "proxy")],
    );
    let env_s = item(
        &svc("b"),
        SpanKind::Server,
        2,
        2,
        Some(1),
        1,
        &[("component", "proxy")],
    );
    let l_c = item(
        &svc("c"),
        SpanKind::Client,
        3,
        1,
        None,
        1,
        &[("direction", "outbound")],
    );
    let l_s = item(
        &svc("d"),
        SpanKind::Server,
        3,
        2,
        Some(1),
        1,
        &[("direction", "inbound")],
    );
    g.consume(
        &request(&[&sdk_c, &sdk_s, &env_c, &env_s, &l_c, &l_s]),
        at(0.0),
    );
    assert_eq!(edges(&mut g, 1.0), map(&[("a->b:", 1), ("c->d:", 1)]));
    assert_eq!(g.stats().skipped, 2);
}

#[test]
fn identity_prefers_istio_names_and_joins_the_namespace() {
    let mut g = graph(cfg());
    let sdk = item(
        &[
            ("service.name", "productpage"),
            ("service.namespace", "default"),
        ],
        SpanKind::Client,
        1,
        1,
        None,
        1,
        &[],
    );
    let envoy = item(
        &[("service.name", "reviews.default")],
        SpanKind::Server,
        1,
        2,
        Some(1),
        1,
        &[
            ("istio.canonical_service", "reviews"),
            ("istio.namespace", "default"),
        ],
    );
    let k8s = item(
        &[("service.name", "ratings"), ("k8s.namespace.name", "prod")],
        SpanKind::Server,
        2,
        2,
        Some(1),
        1,
        &[],
    );
    let nameless = item(&[], SpanKind::Client, 2, 1, None, 1, &[]);
    g.consume(&request(&[&sdk, &envoy, &k8s, &nameless]), at(0.0));
    assert_eq!(
        edges(&mut g, 1.0),
        map(&[
            ("productpage.default->reviews.default:", 1),
            ("unknown_service->ratings.prod:", 1),
        ])
    );

    let mut c = cfg();
    c.identity.service_attributes = vec!["app".into()];
    c.identity.namespace_attributes = vec![];
    let mut g = graph(c);
    let a = item(
        &[("app", "web"), ("service.namespace", "x")],
        SpanKind::Client,
        1,
        1,
        None,
        1,
        &[],
    );
    let b = item(
        &[("service.name", "api")],
        SpanKind::Server,
        1,
        2,
        Some(1),
        1,
        &[("app", "api-v2")],
    );
    g.consume(&request(&[&a, &b]), at(0.0));
    assert_eq!(edges(&mut g, 1.0), map(&[("web->api-v2:", 1)]));
}

#[test]
fn metric_names_labels_units_and_resource_are_exact() {
    let mut c = cfg();
    c.include_instance_id = true;
    c.instance_id = Some("gw-0".into());
    let mut g = graph(c);
    g.consume(
        &request(&[&client("a", 1, 1, None, 3), &server("b", 1, 2, Some(1), 2)]),
        at(1.0),
    );
    let m = g.collect(at(20.0));
    assert_eq!(m.resource_metrics.len(), 1);
    let rm = &m.resource_metrics[0];
    assert_eq!(
        attrs(&rm.resource.as_ref().unwrap().attributes),
        BTreeMap::from([(
            "service.name".to_string(),
            RESOURCE_SERVICE_NAME.to_string()
        )])
    );
    let sm = &rm.scope_metrics[0];
    assert_eq!(sm.scope.as_ref().unwrap().name, SCOPE_NAME);
    let names: Vec<(&str, &str)> = sm
        .metrics
        .iter()
        .map(|m| (m.name.as_str(), m.unit.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("traces_service_graph_request_total", "{request}"),
            ("traces_service_graph_request_failed_total", "{request}"),
            ("traces_service_graph_request_server_seconds", "s"),
            ("traces_service_graph_request_client_seconds", "s"),
            ("traces_service_graph_request_network_seconds", "s"),
        ]
    );
    let want: BTreeMap<String, String> = [
        ("client", "a"),
        ("server", "b"),
        ("connection_type", ""),
        (INSTANCE_ID_ATTRIBUTE, "gw-0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let start = T0 * 1_000_000_000 + 1_000_000_000;
    let end = T0 * 1_000_000_000 + 20_000_000_000;
    for m in &sm.metrics {
        match m.data.as_ref().unwrap() {
            metric::Data::Sum(s) => {
                assert!(s.is_monotonic);
                assert_eq!(s.aggregation_temporality, 2, "cumulative");
                let p = &s.data_points[0];
                assert_eq!(attrs(&p.attributes), want);
                assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (start, end));
            }
            metric::Data::Histogram(h) => {
                assert_eq!(h.aggregation_temporality, 2, "cumulative");
                let p = &h.data_points[0];
                assert_eq!(attrs(&p.attributes), want);
                assert_eq!(p.explicit_bounds, crate::histogram::DEFAULT_BOUNDS_SECONDS);
                assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
                assert_eq!(p.count, 1);
                assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (start, end));
            }
            other => panic!("{other:?}"),
        }
    }
    // Cumulative: a later collect keeps counting from the same start.
    g.consume(
        &request(&[&client("a", 2, 1, None, 3), &server("b", 2, 2, Some(1), 2)]),
        at(21.0),
    );
    let m = g.collect(at(30.0));
    assert_eq!(counter(&m, REQUEST_TOTAL), map(&[("a->b:", 2)]));
}

#[test]
fn idle_series_expire_and_zero_keeps_them() {
    let pair = || request(&[&client("a", 1, 1, None, 3), &server("b", 1, 2, Some(1), 2)]);
    let mut g = graph(cfg());
    g.consume(&pair(), at(0.0));
    assert_eq!(edges(&mut g, 299.0).len(), 1);
    assert!(g.collect(at(300.0)).resource_metrics.is_empty());
    assert_eq!(g.stats().series_expired, 1);
    let mut c = cfg();
    c.metrics_expiration = meshgate_config::DurationValue(Duration::ZERO);
    let mut g = graph(c);
    g.consume(&pair(), at(0.0));
    assert_eq!(edges(&mut g, 1e6).len(), 1);
}

/// The `format=nodegraph` answer over `window` at `now`, as JSON.
fn nodegraph(g: &ServiceGraph, window: Duration, now: SystemTime) -> serde_json::Value {
    let q = topology::Query {
        window,
        format: topology::Format::NodeGraph,
        exemplars: false,
        node: None,
    };
    let view = g.topology_view(&q, now).unwrap();
    serde_json::to_value(topology::nodegraph(&view)).unwrap()
}

#[test]
fn topology_sums_the_buckets_of_the_window() {
    let mut g = graph(cfg());
    for i in 0..10u8 {
        g.consume(
            &request(&[
                &client("a", i, 1, None, 30),
                &server("b", i, 2, Some(1), 20),
            ]),
            at(0.0),
        );
    }
    for i in 10..15u8 {
        let mut s = server("b", i, 2, Some(1), 20);
        if i < 12 {
            s.span.attributes.push(kv_str("http.status_code", "500"));
        }
        g.consume(&request(&[&client("a", i, 1, None, 30), &s]), at(100.0));
    }
    g.consume(&request(&[&server("a", 20, 1, None, 50)]), at(250.0));
    let db = item(
        &svc("b"),
        SpanKind::Client,
        21,
        1,
        None,
        5,
        &[("db.system", "redis"), ("db.name", "cache")],
    );
    g.consume(&request(&[&db]), at(250.0));
    g.expire(at(265.0));

    let t = g.topology(Duration::from_secs(300), at(300.0));
    assert_eq!(t["window_seconds"], 300.0);
    assert_eq!(t["resolution_seconds"], 10.0);
    assert_eq!(t["generated_at"], "2023-11-14T22:18:20.000Z");
    let edge = |t: &serde_json::Value, id: &str| -> serde_json::Value {
        t["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let ab = edge(&t, "a->b");
    assert_eq!(ab["source"], "a");
    assert_eq!(ab["target"], "b");
    assert_eq!(ab["connection_type"], "");
    assert_eq!(ab["requests"], 15);
    assert_eq!(ab["failed"], 2);
    assert_eq!(ab["requests_per_second"], 15.0 / 300.0);
    assert_eq!(ab["error_rate"], 2.0 / 15.0);
    let p50 = ab["server_latency_seconds"]["p50"].as_f64().unwrap();
    assert!((0.01..=0.05).contains(&p50), "{p50}");
    assert!(ab["client_latency_seconds"]["p99"].as_f64().unwrap() <= 0.05);
    assert_eq!(edge(&t, "user->a")["connection_type"], "virtual_node");
    assert_eq!(edge(&t, "b->cache")["connection_type"], "database");
    assert!(edge(&t, "b->cache")["server_latency_seconds"].is_null());

    let nodes: BTreeMap<String, serde_json::Value> = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_string(), n.clone()))
        .collect();
    let kinds: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|(k, n)| (k.as_str(), n["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("a", "service"),
            ("b", "service"),
            ("cache", "database"),
            ("user", "user")
        ])
    );
    assert_eq!(
        nodes["b"]["requests"], 15,
        "a node's stats are the requests it served"
    );
    assert_eq!(nodes["a"]["requests"], 1);
    assert_eq!(nodes["user"]["requests"], 0);
    assert!(nodes["user"]["latency_seconds"].is_null());
    assert!(nodes["cache"]["latency_seconds"]["p50"].as_f64().unwrap() <= 0.006);
    assert_eq!(nodes["b"]["namespace"], serde_json::Value::Null);

    // Shorter windows start at later bucket boundaries.
    let t = g.topology(Duration::from_secs(200), at(300.0));
    assert_eq!(edge(&t, "a->b")["requests"], 5);
    assert_eq!(edge(&t, "a->b")["requests_per_second"], 5.0 / 200.0);
    let t = g.topology(Duration::from_secs(60), at(300.0));
    assert!(edge(&t, "a->b").is_null());
    assert_eq!(edge(&t, "user->a")["requests"], 1);
    // Windows beyond the retention are capped.
    let t = g.topology(Duration::from_secs(7200), at(300.0));
    assert_eq!(t["window_seconds"], 3600.0);
    // Buckets past the retention are gone.
    g.collect(at(4000.0));
    let t = g.topology(Duration::from_secs(3600), at(4000.0));
    assert_eq!(t["edges"].as_array().unwrap().len(), 0);
}

/// Paired calls `a -> b` with client/server durations in ms (and a failure on the `failed`
/// ones), a root server span on `a` and an unpaired database call from `b`, expired at 265 s.
fn network_graph(pairs: &[(u64, u64, bool)]) -> ServiceGraph {
    let mut g = graph(cfg());
    for (i, (c_ms, s_ms, failed)) in pairs.iter().enumerate() {
        let t = i as u8;
        let mut s = server("b", t, 2, Some(1), *s_ms);
        if *failed {
            s.span.attributes.push(kv_str("http.status_code", "500"));
        }
        g.consume(&request(&[&client("a", t, 1, None, *c_ms), &s]), at(100.0));
    }
    g.consume(&request(&[&server("a", 200, 1, None, 50)]), at(250.0));
    let db = item(
        &svc("b"),
        SpanKind::Client,
        201,
        1,
        None,
        5,
        &[("db.system", "redis"), ("db.name", "cache")],
    );
    g.consume(&request(&[&db]), at(250.0));
    g.expire(at(265.0));
    g
}

#[test]
fn network_latency_is_client_minus_server_per_paired_edge() {
    // 37-20 = 17 ms, 300-50 = 250 ms, 10-25 clamps to 0.
    let mut g = network_graph(&[(37, 20, false), (300, 50, false), (10, 25, false)]);
    let m = g.collect(at(270.0));
    let Some(metric::Data::Histogram(h)) = metric(&m, REQUEST_NETWORK_SECONDS) else {
        panic!("no {REQUEST_NETWORK_SECONDS}");
    };
    assert_eq!(h.data_points.len(), 1, "only the paired edge has one");
    let p = &h.data_points[0];
    assert_eq!(edge_name(&p.attributes), "a->b:");
    assert_eq!(p.explicit_bounds, crate::histogram::DEFAULT_BOUNDS_SECONDS);
    // Bounds 0.002 .. 0.01, 0.05, 0.1, 0.2, 0.4, ...: 0 in the first bucket, 0.017 in
    // (0.01, 0.05], 0.25 in (0.2, 0.4].
    let mut want = vec![0u64; p.explicit_bounds.len() + 1];
    want[0] = 1;
    want[5] = 1;
    want[8] = 1;
    assert_eq!(p.bucket_counts, want);
    assert_eq!(p.count, 3);
    assert!((p.sum.unwrap() - 0.267).abs() < 1e-9, "{:?}", p.sum);
    assert_eq!(p.min, Some(0.0));
    assert!((p.max.unwrap() - 0.25).abs() < 1e-9, "{:?}", p.max);
    // The other histograms still carry every edge.
    assert_eq!(histogram(&m, REQUEST_CLIENT_SECONDS).len(), 2);
    assert_eq!(histogram(&m, REQUEST_SERVER_SECONDS).len(), 2);

    let t = g.topology(Duration::from_secs(300), at(300.0));
    let edge = |id: &str| {
        t["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap()
            .clone()
    };
    let net = &edge("a->b")["network_latency_seconds"];
    let (p50, p99) = (net["p50"].as_f64().unwrap(), net["p99"].as_f64().unwrap());
    assert!((0.01..=0.05).contains(&p50), "{net}");
    assert!((0.2..=0.25 + 1e-9).contains(&p99), "{net}");
    assert!(edge("user->a")["network_latency_seconds"].is_null());
    assert!(edge("b->cache")["network_latency_seconds"].is_null());
}

#[test]
fn topology_lists_exemplar_calls_failed_first_then_slowest_then_newest() {
    let mut g = graph(cfg());
    // Trace i: a -> b taking 10 + i ms, each in a bucket of its own; traces 3 and 7 fail;
    // trace 40 is the slowest, in the oldest bucket; 30 quick calls share the newest one.
    // A bucket keeps its newest failed, slowest and newest call.
    let call = |g: &mut ServiceGraph, trace: u8, ms: u64, fail: bool, t: f64| {
        let mut s = server("b", trace, 2, Some(1), ms);
        if fail {
            s.span.attributes.push(kv_str("http.status_code", "503"));
        }
        g.consume(&request(&[&client("a", trace, 1, None, ms + 1), &s]), at(t));
    };
    call(&mut g, 40, 900, false, 50.0);
    for i in 0..10u8 {
        call(
            &mut g,
            i,
            10 + i as u64,
            i == 3 || i == 7,
            60.0 + 10.0 * i as f64,
        );
    }
    for i in 100..130u8 {
        call(&mut g, i, 5, false, 200.0);
    }
    let t = g.topology(Duration::from_secs(300), at(250.0));
    let ab = t["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "a->b")
        .cloned()
        .unwrap();
    let ex = ab["exemplars"].as_array().unwrap();
    let traces: Vec<&str> = ex.iter().map(|e| e["trace_id"].as_str().unwrap()).collect();
    let hex = |b: u8| hex::encode([b; 16]);
    // Failed newest first (7, then 3), then the slowest (40, then 9 and 8), at most five,
    // one per trace.
    assert_eq!(traces, [hex(7), hex(3), hex(40), hex(9), hex(8)], "{ex:#?}");
    assert_eq!(ex[0]["failed"], true);
    assert_eq!(ex[2]["failed"], false);
    // The client span's id and latency: the call as the caller saw it.
    assert_eq!(ex[2]["span_id"], hex::encode(id(40, 1)));
    assert_eq!(ex[2]["duration_seconds"], 0.901);
    assert_eq!(ex[0]["timestamp"], "2023-11-14T22:15:30.000Z");
    // A node lists what it served; `user`-like pure callers what they made.
    let node = |id: &str| {
        t["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(node("b")["exemplars"], ab["exemplars"]);
    assert_eq!(node("a")["exemplars"], ab["exemplars"]);
    // A window that ends before the failures shows only what it holds.
    let early = g.topology(Duration::from_secs(60), at(55.0));
    let ex = early["edges"][0]["exemplars"].as_array().unwrap().clone();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0]["trace_id"], hex(40));
}

#[test]
fn topology_can_leave_exemplars_out_and_narrow_to_one_node() {
    let mut g = graph(cfg());
    // a -> b -> c, and d -> c: asking for `b` gives a, b, c and the two edges touching b, with
    // c's numbers whole (it also served d).
    for i in 0..4u8 {
        g.consume(
            &request(&[
                &client("a", i, 1, None, 30),
                &server("b", i, 2, Some(1), 25),
                &client("b", i, 3, Some(2), 10),
                &server("c", i, 4, Some(3), 8),
                &client("d", i, 5, None, 9),
                &server("c", i, 6, Some(5), 7),
            ]),
            at(0.0),
        );
    }
    let q = |exemplars: bool, node: Option<&str>| topology::Query {
        window: Duration::from_secs(60),
        format: topology::Format::Json,
        exemplars,
        node: node.map(str::to_string),
    };
    let json =
        |q: &topology::Query| serde_json::to_value(g.topology_view(q, at(10.0)).unwrap()).unwrap();
    let ids = |t: &serde_json::Value, key: &str| -> Vec<String> {
        t[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    let whole = json(&q(true, None));
    assert_eq!(ids(&whole, "edges"), ["a->b", "b->c", "d->c"]);
    // One bucket: its slowest call (the first of equals) and its newest.
    let traces = |e: &serde_json::Value| -> Vec<String> {
        e["exemplars"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["trace_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        traces(&whole["edges"][0]),
        [hex::encode([0u8; 16]), hex::encode([3u8; 16])]
    );
    let lean = json(&q(false, None));
    assert_eq!(ids(&lean, "edges"), ids(&whole, "edges"));
    for key in ["edges", "nodes"] {
        for item in lean[key].as_array().unwrap() {
            assert!(item.get("exemplars").is_none(), "{item}");
        }
    }
    assert_eq!(lean["edges"][1]["requests"], whole["edges"][1]["requests"]);

    let b = json(&q(true, Some("b")));
    assert_eq!(ids(&b, "edges"), ["a->b", "b->c"]);
    assert_eq!(ids(&b, "nodes"), ["a", "b", "c"]);
    let c = &b["nodes"][2];
    assert_eq!(c["requests"], 8, "c's numbers count what d sent too");
    assert_eq!(traces(&b["edges"][1]), traces(&whole["edges"][1]));

    let e = g
        .topology_view(&q(true, Some("nope")), at(10.0))
        .unwrap_err();
    assert!(e.starts_with("no node `nope` in the last 1m"), "{e}");
}

#[test]
fn nodegraph_has_grafanas_fields_and_the_topology_numbers() {
    let g = network_graph(&[
        (30, 20, false),
        (30, 20, true),
        (30, 20, false),
        (30, 20, false),
    ]);
    let topo = g.topology(Duration::from_secs(300), at(300.0));
    let ng = nodegraph(&g, Duration::from_secs(300), at(300.0));
    assert_eq!(
        ng.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["edges", "nodes"]
    );
    let nodes = ng["nodes"].as_array().unwrap();
    let edges = ng["edges"].as_array().unwrap();
    let node_fields = [
        "id",
        "title",
        "subtitle",
        "mainstat",
        "secondarystat",
        "arc__success",
        "arc__failed",
        "detail__kind",
        "detail__namespace",
        "detail__requests",
        "detail__failed",
        "detail__error_rate",
        "detail__p50_ms",
        "detail__p99_ms",
    ];
    let ids: std::collections::BTreeSet<&str> =
        nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), nodes.len(), "node ids are unique");
    assert_eq!(
        ids.iter().copied().collect::<Vec<_>>(),
        ["a", "b", "cache", "user"]
    );
    for n in nodes {
        let mut keys: Vec<&str> = n.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        let mut want = node_fields.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "every row has every field: {n}");
        let (ok, bad) = (
            n["arc__success"].as_f64().unwrap(),
            n["arc__failed"].as_f64().unwrap(),
        );
        assert!((ok + bad - 1.0).abs() < 1e-12, "arcs sum to 1: {n}");
        assert!(
            (0.0..=1.0).contains(&ok) && (0.0..=1.0).contains(&bad),
            "{n}"
        );
    }
    let node = |id: &str| nodes.iter().find(|n| n["id"] == id).unwrap();
    let b = node("b");
    assert_eq!(b["title"], "b");
    assert_eq!(b["subtitle"], "service", "the kind without a namespace");
    assert_eq!(b["mainstat"], 4.0 / 300.0);
    assert_eq!(b["arc__failed"], 0.25);
    assert_eq!(b["arc__success"], 0.75);
    assert_eq!(b["detail__requests"], 4);
    assert_eq!(b["detail__failed"], 1);
    let p95 = topo["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "b")
        .unwrap()["latency_seconds"]["p95"]
        .as_f64()
        .unwrap();
    assert_eq!(b["secondarystat"], p95 * 1000.0);
    assert!((10.0..=20.0).contains(&(p95 * 1000.0)), "{b}");
    let user = node("user");
    assert_eq!(
        (&user["subtitle"], &user["mainstat"], &user["secondarystat"]),
        (&json!("user"), &json!(0.0), &serde_json::Value::Null)
    );
    assert_eq!(
        (&user["arc__success"], &user["arc__failed"]),
        (&json!(1.0), &json!(0.0)),
        "nothing served: all success"
    );
    assert_eq!(node("cache")["subtitle"], "database");

    let mut edge_ids = std::collections::BTreeSet::new();
    for e in edges {
        assert!(
            edge_ids.insert(e["id"].as_str().unwrap()),
            "edge ids are unique"
        );
        for end in ["source", "target"] {
            assert!(ids.contains(e[end].as_str().unwrap()), "{end} of {e}");
        }
        for f in ["mainstat", "secondarystat", "detail__network_p95_ms"] {
            assert!(e.get(f).is_some(), "{f} in {e}");
        }
    }
    let edge = |id: &str| edges.iter().find(|e| e["id"] == id).unwrap();
    let ab = edge("a->b");
    assert_eq!((&ab["source"], &ab["target"]), (&json!("a"), &json!("b")));
    assert_eq!(ab["mainstat"], 4.0 / 300.0);
    let server_p95 = topo["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "a->b")
        .unwrap()["server_latency_seconds"]["p95"]
        .as_f64()
        .unwrap();
    assert_eq!(ab["secondarystat"], server_p95 * 1000.0);
    assert_eq!(ab["detail__error_rate"], 0.25);
    assert!(ab["detail__network_p95_ms"].as_f64().unwrap() > 0.0);
    // Without a server span the edge shows what its caller saw.
    let db = edge("b->cache");
    assert!(db["detail__server_p95_ms"].is_null());
    assert_eq!(db["secondarystat"], db["detail__client_p95_ms"]);
    assert!(db["secondarystat"].as_f64().unwrap() <= 6.0);
    assert!(db["detail__network_p95_ms"].is_null());
}

#[test]
fn nodegraph_subtitle_is_the_namespace_when_known() {
    let mut g = graph(cfg());
    let c = item(
        &[("service.name", "web"), ("service.namespace", "shop")],
        SpanKind::Client,
        1,
        1,
        None,
        3,
        &[],
    );
    g.consume(&request(&[&c, &server("api", 1, 2, Some(1), 2)]), at(0.0));
    let ng = nodegraph(&g, Duration::from_secs(60), at(10.0));
    let web = ng["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "web.shop")
        .unwrap();
    assert_eq!(
        (&web["title"], &web["subtitle"]),
        (&json!("web"), &json!("shop"))
    );
    assert_eq!(web["detail__namespace"], "shop");
}

#[test]
fn the_connector_emits_metrics_serves_topology_and_reports_itself() {
    let registry = meshgate_engine::Registry::new();
    let api = ApiRoutes::default();
    let body = serde_json::json!({"metrics_flush_interval": "1h"});
    let mut c = ServiceGraphFactory
        .build(BuildContext {
            id: "servicegraph/mesh".into(),
            config: &body,
            telemetry: &registry,
            api: api.clone(),
        })
        .unwrap();
    let mut out = Vec::new();
    let traces = request(&[
        &client("a", 1, 1, None, 3),
        &server("b", 1, 2, Some(1), 2),
        &client("a", 2, 1, None, 3),
    ]);
    c.consume(&Payload::Traces(traces), &mut out);
    assert!(out.is_empty(), "metrics leave on the flush interval");
    let d = c.deadline().unwrap();
    assert!(
        d <= Instant::now() + Duration::from_secs(11),
        "the store's expiry is scheduled"
    );

    let ok = api.call(
        TOPOLOGY_PATH,
        &ApiRequest {
            query: BTreeMap::from([("window".to_string(), "1m".to_string())]),
        },
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let v: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(v["window_seconds"], 60.0);
    assert_eq!(v["edges"][0]["id"], "a->b");
    let bad = api.call(
        TOPOLOGY_PATH,
        &ApiRequest {
            query: BTreeMap::from([("window".to_string(), "soon".to_string())]),
        },
    );
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("window"), "{}", bad.body);
    let call = |pairs: &[(&str, &str)]| {
        api.call(
            TOPOLOGY_PATH,
            &ApiRequest {
                query: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        )
    };
    let ng = call(&[("window", "1m"), ("format", "nodegraph")]);
    assert_eq!(ng.status, 200, "{}", ng.body);
    let ngv: serde_json::Value = serde_json::from_str(&ng.body).unwrap();
    assert_eq!(ngv["edges"][0]["id"], "a->b");
    assert_eq!(
        ngv["edges"][0]["mainstat"],
        1.0 / 60.0,
        "the window applies"
    );
    assert_eq!(ngv["nodes"][1]["title"], "b");
    let json_format = call(&[("window", "1m"), ("format", "json")]);
    let explicit: serde_json::Value = serde_json::from_str(&json_format.body).unwrap();
    assert_eq!(
        (&explicit["nodes"], &explicit["edges"]),
        (&v["nodes"], &v["edges"]),
        "json is the default"
    );
    let bad = call(&[("format", "graphviz")]);
    assert_eq!(bad.status, 400);
    for want in ["`format`", "graphviz", "`json`", "`nodegraph`"] {
        assert!(bad.body.contains(want), "{want} in {}", bad.body);
    }

    c.flush(&mut out);
    assert_eq!(out.len(), 1);
    let Payload::Metrics(m) = &out[0] else {
        panic!("not metrics");
    };
    assert_eq!(counter(m, REQUEST_TOTAL), map(&[("a->b:", 1)]));
    let text = registry.render();
    for line in [
        "meshgate_connector_servicegraph_spans_total{connector=\"servicegraph/mesh\",outcome=\"paired\"} 2",
        "meshgate_connector_servicegraph_spans_total{connector=\"servicegraph/mesh\",outcome=\"expired\"} 1",
        "meshgate_connector_servicegraph_store_items{connector=\"servicegraph/mesh\"} 0",
        "meshgate_connector_servicegraph_edges{connector=\"servicegraph/mesh\"} 1",
        "meshgate_connector_servicegraph_series_expired_total{connector=\"servicegraph/mesh\"} 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[test]
fn the_factory_checks_its_config_and_documents_every_field() {
    use meshgate_engine::Factory;
    let f = ServiceGraphFactory;
    assert!(f.check(&serde_json::json!({})).is_ok());
    let e = f
        .check(&serde_json::json!({"store": {"max_items": 0}}))
        .unwrap_err();
    assert!(e.contains("store.max_items"), "{e}");
    let schema = serde_json::to_value(f.schema()).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    fn walk(v: &serde_json::Value, path: &str) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (name, p) in props {
                let d = p["description"].as_str().unwrap_or_default();
                let nested = p.get("$ref").is_some() || p.get("properties").is_some();
                assert!(
                    nested || d.contains("Default"),
                    "{path}.{name} does not state its default: {d:?}"
                );
            }
        }
        if let Some(defs) = v.get("$defs").and_then(|d| d.as_object()) {
            for (name, d) in defs {
                walk(d, name);
            }
        }
    }
    walk(&schema, "servicegraph");
}

#[test]
fn head_sampled_calls_count_with_their_adjusted_count() {
    let mut c = client("frontend", 9, 1, None, 30);
    let mut s = server("backend", 9, 2, Some(1), 20);
    c.span.trace_state = "ot=th:c".into(); // kept at 25 %: stands for 4 calls
    s.span.trace_state = "ot=th:c".into();
    let plain_c = client("frontend", 8, 1, None, 30);
    let plain_s = server("backend", 8, 2, Some(1), 20);
    let mut g = graph(cfg());
    g.consume(&request(&[&c, &s, &plain_c, &plain_s]), at(0.0));
    let m = g.collect(at(1.0));
    assert_eq!(
        counter(&m, REQUEST_TOTAL),
        map(&[("frontend->backend:", 5)])
    );
    assert_eq!(
        histogram(&m, REQUEST_SERVER_SECONDS)["frontend->backend:"].0,
        5
    );
    let topo = g.topology(Duration::from_secs(60), at(1.0));
    assert_eq!(topo["edges"][0]["requests"], 5);
}
