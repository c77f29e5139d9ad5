//! Whole-simulation tests: span shapes per flavor, determinism, delivery, and the ground truth
//! checked against an independent in-memory derivation of the shared semantics (every span in
//! hand, no time limits) applied to the spans actually emitted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use meshgate_pdata::attributes::{get, get_str, kv_str, value_to_string};
use meshgate_pdata::mesh::{effective_status, is_failed, span_or_resource_str};
use meshgate_pdata::otlp::{KeyValue, Span, any_value::Value, span::SpanKind};
use prost::Message;

use crate::truth::{
    EdgeKey, EdgeTruth, RedKey, RedTruth, SpanCounts, USER_NODE, connection_type, kind_label,
    normalise_peer, span_seconds, status_label,
};
use crate::{Flavor, Generated, Simulator, Topology};

fn topology(file: &str) -> Topology {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(file);
    Topology::from_file(&path).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn inline(text: &str) -> Topology {
    Topology::from_yaml_str(text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// A span as received, with its resource (Zipkin: `service.name` = the local endpoint).
#[derive(Debug, Clone)]
struct Received {
    span: Span,
    resource: Vec<KeyValue>,
    shared: bool,
}

fn received(g: &Generated) -> Vec<Received> {
    let mut out = Vec::new();
    for r in &g.requests {
        for rs in &r.resource_spans {
            let resource = rs.resource.clone().unwrap_or_default().attributes;
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(Received {
                        span: s.clone(),
                        resource: resource.clone(),
                        shared: false,
                    });
                }
            }
        }
    }
    for body in &g.zipkin {
        let spans: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
        for z in spans {
            out.push(from_zipkin(&z));
        }
    }
    out
}

/// What a Zipkin receiver makes of a Zipkin v2 span: tags become string attributes,
/// microseconds become nanoseconds, the local service name becomes the resource.
fn from_zipkin(z: &serde_json::Value) -> Received {
    let hexid = |k: &str| {
        z[k].as_str()
            .map(|s| hex::decode(s).unwrap())
            .unwrap_or_default()
    };
    let kind = match z["kind"].as_str().unwrap() {
        "SERVER" => SpanKind::Server,
        "CLIENT" => SpanKind::Client,
        "PRODUCER" => SpanKind::Producer,
        "CONSUMER" => SpanKind::Consumer,
        other => panic!("kind {other}"),
    };
    let ts = z["timestamp"].as_u64().unwrap();
    let dur = z["duration"].as_u64().unwrap();
    let attributes = z["tags"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| kv_str(k, v.as_str().expect("Zipkin tags are strings")))
        .collect();
    Received {
        span: Span {
            trace_id: hexid("traceId"),
            span_id: hexid("id"),
            parent_span_id: hexid("parentId"),
            name: z["name"].as_str().unwrap().to_string(),
            kind: kind as i32,
            start_time_unix_nano: ts * 1000,
            end_time_unix_nano: (ts + dur) * 1000,
            attributes,
            ..Default::default()
        },
        resource: vec![kv_str(
            "service.name",
            z["localEndpoint"]["serviceName"].as_str().unwrap(),
        )],
        shared: z["shared"].as_bool().unwrap_or(false),
    }
}

fn node(r: &Received) -> String {
    let find = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| span_or_resource_str(&r.span, &r.resource, k).map(|v| v.into_owned()))
    };
    let name = find(&["istio.canonical_service", "service.name"])
        .unwrap_or_else(|| "unknown_service".into());
    match find(&["istio.namespace", "service.namespace", "k8s.namespace.name"]) {
        Some(ns) if !name.ends_with(&format!(".{ns}")) => format!("{name}.{ns}"),
        _ => name,
    }
}

fn kind(r: &Received) -> SpanKind {
    SpanKind::try_from(r.span.kind).unwrap()
}

/// The reference derivation: edges, RED series and span classes from received spans.
struct Derived {
    edges: BTreeMap<EdgeKey, EdgeTruth>,
    red: BTreeMap<RedKey, RedTruth>,
    counts: SpanCounts,
}

fn derive(spans: &[Received]) -> Derived {
    let key = |r: &Received| (r.span.trace_id.clone(), r.span.span_id.clone());
    // Parent resolution: a shared server span is the parent of whatever names its id (the
    // callee's own calls), not the caller's client span of the same id.
    let mut by_id: HashMap<(Vec<u8>, Vec<u8>), usize> = HashMap::new();
    for (i, r) in spans.iter().enumerate() {
        let e = by_id.entry(key(r)).or_insert(i);
        if r.shared {
            *e = i;
        }
    }
    let parent_of = |r: &Received| -> Option<usize> {
        (!r.span.parent_span_id.is_empty())
            .then(|| {
                by_id
                    .get(&(r.span.trace_id.clone(), r.span.parent_span_id.clone()))
                    .copied()
            })
            .flatten()
    };
    let mut has_client_child = HashSet::new();
    for r in spans {
        if kind(r) == SpanKind::Client
            && let Some(p) = parent_of(r)
            && kind(&spans[p]) == SpanKind::Client
        {
            has_client_child.insert(p);
        }
    }
    let intra = |i: usize| -> bool {
        let r = &spans[i];
        let dir = get_str(&r.span.attributes, "direction");
        match kind(r) {
            SpanKind::Client => dir == Some("inbound") || has_client_child.contains(&i),
            SpanKind::Server => {
                dir == Some("outbound")
                    || (!r.shared
                        && parent_of(r).is_some_and(|p| kind(&spans[p]) == SpanKind::Server))
            }
            _ => false,
        }
    };
    let mut counts = SpanCounts {
        total: spans.len() as u64,
        ..Default::default()
    };
    let mut edges: BTreeMap<EdgeKey, EdgeTruth> = BTreeMap::new();
    let mut add = |k: EdgeKey, c: Option<&Received>, s: Option<&Received>| {
        let e = edges.entry(k).or_default();
        e.requests += 1;
        let failed = c.is_some_and(|c| is_failed(&c.span)) || s.is_some_and(|s| is_failed(&s.span));
        e.failed += u64::from(failed);
        if let Some(c) = c {
            e.client_seconds.push(span_seconds(&c.span));
        }
        if let Some(s) = s {
            e.server_seconds.push(span_seconds(&s.span));
        }
    };
    let mut paired_clients = HashSet::new();
    for (i, r) in spans.iter().enumerate() {
        if intra(i) {
            counts.intra_workload += 1;
            continue;
        }
        if !matches!(kind(r), SpanKind::Server | SpanKind::Consumer) {
            continue;
        }
        if r.span.parent_span_id.is_empty() {
            counts.roots += 1;
            add(
                EdgeKey::new(USER_NODE, &node(r), connection_type::VIRTUAL_NODE),
                None,
                Some(r),
            );
            continue;
        }
        let client = if r.shared {
            spans.iter().position(|c| {
                kind(c) == SpanKind::Client
                    && c.span.trace_id == r.span.trace_id
                    && c.span.span_id == r.span.span_id
            })
        } else {
            parent_of(r)
        };
        let client = client
            .filter(|&c| {
                matches!(kind(&spans[c]), SpanKind::Client | SpanKind::Producer) && !intra(c)
            })
            .unwrap_or_else(|| panic!("server span {:?} has no client", r.span.name));
        assert!(paired_clients.insert(client), "a client span pairs once");
        counts.paired += 1;
        add(
            EdgeKey::new(&node(&spans[client]), &node(r), connection_type::PAIRED),
            Some(&spans[client]),
            Some(r),
        );
    }
    for (i, r) in spans.iter().enumerate() {
        if paired_clients.contains(&i)
            || intra(i)
            || !matches!(kind(r), SpanKind::Client | SpanKind::Producer)
        {
            continue;
        }
        let a = &r.span.attributes;
        let upstream_host = get_str(a, "upstream_cluster")
            .and_then(|c| c.rsplit("||").next())
            .map(str::to_string);
        let peer = [
            "peer.service",
            "db.name",
            "db.namespace",
            "server.address",
            "net.peer.name",
        ]
        .iter()
        .find_map(|k| get(a, k).map(value_to_string))
        .or(upstream_host)
        .unwrap_or_else(|| panic!("unpaired client {:?} has no peer", r.span.name));
        let ctype = if get(a, "db.system").is_some() {
            connection_type::DATABASE
        } else if kind(r) == SpanKind::Producer || get(a, "messaging.system").is_some() {
            connection_type::MESSAGING_SYSTEM
        } else {
            connection_type::VIRTUAL_NODE
        };
        counts.virtual_clients += 1;
        add(
            EdgeKey::new(&node(r), &normalise_peer(&peer), ctype),
            Some(r),
            None,
        );
    }
    let mut red: BTreeMap<RedKey, RedTruth> = BTreeMap::new();
    for r in spans {
        let service = get_str(&r.resource, "service.name").unwrap().to_string();
        let e = red
            .entry(RedKey {
                service,
                span_name: r.span.name.clone(),
                kind: kind_label(r.span.kind).into(),
                status: status_label(effective_status(&r.span)).into(),
            })
            .or_default();
        e.calls += 1;
        e.durations_seconds.push(span_seconds(&r.span));
    }
    Derived { edges, red, counts }
}

fn sorted_edges(m: &BTreeMap<EdgeKey, EdgeTruth>) -> BTreeMap<EdgeKey, EdgeTruth> {
    m.iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            v.client_seconds.sort_by(f64::total_cmp);
            v.server_seconds.sort_by(f64::total_cmp);
            (k.clone(), v)
        })
        .collect()
}

fn sorted_red(m: &BTreeMap<RedKey, RedTruth>) -> BTreeMap<RedKey, RedTruth> {
    m.iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            v.durations_seconds.sort_by(f64::total_cmp);
            (k.clone(), v)
        })
        .collect()
}

/// The truth equals what the semantics derive from the emitted spans, in every mode.
fn check_truth(g: &Generated) {
    let spans = received(g);
    let d = derive(&spans);
    let t = &g.truth;
    assert_eq!(d.counts, t.spans, "{}: span classes", g.flavor);
    assert_eq!(
        t.spans.total,
        t.spans.roots + 2 * t.spans.paired + t.spans.virtual_clients + t.spans.intra_workload
    );
    assert_eq!(spans.len() as u64, t.spans.total);
    assert_eq!(
        sorted_edges(&d.edges),
        sorted_edges(&t.edges),
        "{}: edges",
        g.flavor
    );
    assert_eq!(sorted_red(&d.red), sorted_red(&t.red), "{}: RED", g.flavor);
    assert_eq!(t.total_calls(), t.spans.total);
    let proxy: Vec<Received> = spans
        .into_iter()
        .filter(|r| {
            get_str(&r.span.attributes, "component") == Some("proxy")
                || get(&r.span.attributes, "direction").is_some()
        })
        .collect();
    assert_eq!(
        sorted_edges(&derive(&proxy).edges),
        sorted_edges(&t.proxy_only_edges),
        "{}: proxy-only edges",
        g.flavor
    );
}

#[test]
fn the_truth_matches_the_spans_for_every_topology_and_flavor() {
    for file in ["bookinfo.yaml", "shop.yaml", "linkerd-emojivoto.yaml"] {
        for flavor in Flavor::ALL {
            let g = Simulator::new(topology(file), flavor)
                .with_seed(42)
                .generate_roots(300);
            assert_eq!(g.truth.traces, 300);
            check_truth(&g);
            // Delivered differently, the same spans mean the same.
            check_truth(&g.shuffled(9));
        }
    }
}

#[test]
fn edge_counts_follow_the_topology() {
    let t = inline(concat!(
        "services: [{ name: a, app_spans: true }, { name: b, namespace: x }, { name: c }]\n",
        "databases: [{ name: orders, system: postgresql }]\n",
        "queues: [{ name: kafka, system: kafka }]\n",
        "externals: [{ host: api.example.com }]\n",
        "entry: { service: a, rate: 100 }\n",
        "calls:\n",
        "  - { from: a, to: b, count: 3 }\n",
        "  - { from: b, to: c }\n",
        "  - { from: b, to: orders, count: 2 }\n",
        "  - { from: c, to: kafka }\n",
        "  - { from: a, to: api.example.com }\n",
    ));
    for flavor in Flavor::ALL {
        let g = Simulator::new(t.clone(), flavor)
            .with_seed(1)
            .generate_roots(50);
        let tr = &g.truth;
        let req = |c: &str, s: &str, ct: &str| tr.edge(c, s, ct).map_or(0, |e| e.requests);
        assert_eq!(req("user", "a.default", "virtual_node"), 50, "{flavor}");
        assert_eq!(req("a.default", "b.x", ""), 150, "{flavor}");
        assert_eq!(req("b.x", "c.default", ""), 150, "{flavor}");
        assert_eq!(req("b.x", "orders", "database"), 300, "{flavor}");
        assert_eq!(
            req("c.default", "kafka", "messaging_system"),
            150,
            "{flavor}"
        );
        assert_eq!(
            req("a.default", "api.example.com", "virtual_node"),
            50,
            "{flavor}"
        );
        assert_eq!(tr.edges.len(), 6, "{flavor}: {:?}", tr.edges.keys());
        assert_eq!(tr.total_requests(), 850);
        assert!(tr.edges.values().all(|e| e.failed == 0));
        let user = tr.edge("user", "a.default", "virtual_node").unwrap();
        assert!(user.client_seconds.is_empty() && user.server_seconds.len() == 50);
        let db = tr.edge("b.x", "orders", "database").unwrap();
        assert!(db.server_seconds.is_empty() && db.client_seconds.len() == 300);
        assert_eq!(
            tr.proxy_only_edges.len(),
            4,
            "database and queue spans come from SDKs"
        );
    }
}

#[test]
fn retries_are_counted_per_attempt() {
    // Every attempt fails to connect: three client spans per call, no server span, each a
    // failed request to the virtual node named after the service's FQDN.
    let t = inline(
        "services: [{ name: a }, { name: b }]\nentry: { service: a, rate: 10 }\ncalls: [{ from: a, to: b, retries: 2, connect_failure_rate: 1 }]\n",
    );
    for flavor in Flavor::ALL {
        let g = Simulator::new(t.clone(), flavor).generate_roots(10);
        let e = g
            .truth
            .edge("a.default", "b.default", "virtual_node")
            .unwrap();
        assert_eq!((e.requests, e.failed), (30, 30), "{flavor}");
        assert!(
            e.client_seconds.iter().all(|&s| s == 0.001),
            "connect_failure_ms default"
        );
        assert!(g.truth.edge("a.default", "b.default", "").is_none());
        check_truth(&g);
    }
    // Every attempt reaches b and fails: paired, failed, 3 attempts each.
    let t = inline(
        "services: [{ name: a }, { name: b }]\nentry: { service: a, rate: 10 }\ncalls: [{ from: a, to: b, retries: 2, error_rate: 1 }]\n",
    );
    let g = Simulator::new(t, Flavor::EnvoyOtlp).generate_roots(10);
    let e = g.truth.edge("a.default", "b.default", "").unwrap();
    assert_eq!((e.requests, e.failed, e.server_seconds.len()), (30, 30, 30));
    let failed_server = RedKey {
        service: "b.default".into(),
        span_name: "b.default.svc.cluster.local:8080/*".into(),
        kind: "SPAN_KIND_SERVER".into(),
        status: "STATUS_CODE_ERROR".into(),
    };
    assert_eq!(g.truth.red[&failed_server].calls, 30);
}

#[test]
fn retry_attempts_are_spaced_by_the_backoff() {
    let t = inline(
        "services: [{ name: a }, { name: b }]\nentry: { service: a, rate: 10 }\ncalls: [{ from: a, to: b, retries: 1, error_rate: 1, latency: 2 }]\nsettings: { network_latency_ms: 0.5, proxy_overhead_ms: 0.1, retry_backoff_ms: 25 }\n",
    );
    let g = Simulator::new(t, Flavor::EnvoyOtlp).generate_roots(1);
    let spans = received(&g);
    let mut clients: Vec<&Span> = spans
        .iter()
        .map(|r| &r.span)
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    clients.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(clients.len(), 2);
    // b: 2 ms own time + 2 × 0.1 ms proxy; the client adds 2 × 0.5 ms of network.
    assert_eq!(
        clients[0].end_time_unix_nano - clients[0].start_time_unix_nano,
        3_200_000
    );
    assert_eq!(
        clients[1].start_time_unix_nano - clients[0].end_time_unix_nano,
        25_000_000
    );
    let server = spans
        .iter()
        .find(|r| r.span.kind == SpanKind::Server as i32 && !r.span.parent_span_id.is_empty())
        .unwrap();
    assert_eq!(
        server.span.end_time_unix_nano - server.span.start_time_unix_nano,
        2_200_000
    );
}

fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a Value> {
    get(&s.attributes, k)
}

#[test]
fn envoy_otlp_spans_look_like_istio_sidecars_with_sdk_spans_interleaved() {
    let t = inline(
        "services: [{ name: front, app_spans: true }, { name: reviews, app_spans: true, port: 9080 }]\nentry: { service: front, rate: 1 }\ncalls: [{ from: front, to: reviews, path: /reviews/0, route: '/reviews/{id}', error_rate: 1 }]\n",
    );
    let g = Simulator::new(t, Flavor::EnvoyOtlp).generate_roots(1);
    let spans = received(&g);
    assert_eq!(
        spans.len(),
        6,
        "root sidecar+app SERVER, app CLIENT, sidecar CLIENT, sidecar+app SERVER"
    );
    let by_id: HashMap<&[u8], &Received> = spans
        .iter()
        .map(|r| (r.span.span_id.as_slice(), r))
        .collect();
    let proxy: Vec<&Received> = spans
        .iter()
        .filter(|r| get_str(&r.span.attributes, "component") == Some("proxy"))
        .collect();
    assert_eq!(proxy.len(), 3);
    for r in &proxy {
        assert!(
            r.span.attributes.iter().all(|kv| matches!(
                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(Value::StringValue(_))
            )),
            "Envoy attributes are all strings"
        );
        for k in [
            "node_id",
            "upstream_cluster",
            "response_flags",
            "guid:x-request-id",
            "istio.canonical_service",
            "istio.canonical_revision",
            "istio.mesh_id",
            "istio.namespace",
            "istio.cluster_id",
            "http.status_code",
        ] {
            assert!(attr(&r.span, k).is_some(), "{k} on {}", r.span.name);
        }
        assert!(r.span.status.is_none(), "Envoy leaves the status UNSET");
        let svc = get_str(&r.resource, "service.name").unwrap();
        assert!(svc == "front.default" || svc == "reviews.default");
    }
    // app CLIENT -> sidecar CLIENT -> sidecar SERVER -> app SERVER
    let app_server = spans
        .iter()
        .find(|r| r.span.name == "GET /reviews/{id}")
        .expect("the callee's SDK SERVER span is named after its route");
    assert_eq!(
        get_str(&app_server.resource, "service.name"),
        Some("reviews")
    );
    assert_eq!(
        get_str(&app_server.resource, "service.namespace"),
        Some("default")
    );
    assert_eq!(
        attr(&app_server.span, "http.response.status_code"),
        Some(&Value::IntValue(503))
    );
    assert!(is_failed(&app_server.span));
    let sidecar_server = by_id[app_server.span.parent_span_id.as_slice()];
    assert_eq!(sidecar_server.span.kind, SpanKind::Server as i32);
    assert_eq!(
        sidecar_server.span.name,
        "reviews.default.svc.cluster.local:9080/*"
    );
    assert_eq!(
        get_str(&sidecar_server.span.attributes, "http.status_code"),
        Some("503")
    );
    assert_eq!(
        get_str(&sidecar_server.span.attributes, "error"),
        Some("true")
    );
    assert_eq!(
        get_str(&sidecar_server.span.attributes, "upstream_cluster"),
        Some("inbound|9080||")
    );
    let sidecar_client = by_id[sidecar_server.span.parent_span_id.as_slice()];
    assert_eq!(sidecar_client.span.kind, SpanKind::Client as i32);
    assert_eq!(
        get_str(&sidecar_client.span.attributes, "upstream_cluster"),
        Some("outbound|9080||reviews.default.svc.cluster.local")
    );
    assert_eq!(
        get_str(&sidecar_client.span.attributes, "istio.canonical_service"),
        Some("front")
    );
    assert!(
        get_str(&sidecar_client.span.attributes, "node_id")
            .unwrap()
            .starts_with("sidecar~10.")
    );
    let app_client = by_id[sidecar_client.span.parent_span_id.as_slice()];
    assert_eq!(
        (app_client.span.kind, app_client.span.name.as_str()),
        (SpanKind::Client as i32, "GET")
    );
    assert_eq!(get_str(&app_client.resource, "service.name"), Some("front"));
    let front_app_server = by_id[app_client.span.parent_span_id.as_slice()];
    let root = by_id[front_app_server.span.parent_span_id.as_slice()];
    assert!(
        root.span.parent_span_id.is_empty(),
        "the entry sidecar's SERVER span is the root"
    );
    // Each outer span encloses the inner one.
    for (outer, inner) in [
        (app_client, sidecar_client),
        (sidecar_client, sidecar_server),
        (sidecar_server, app_server),
    ] {
        assert!(outer.span.start_time_unix_nano < inner.span.start_time_unix_nano);
        assert!(outer.span.end_time_unix_nano > inner.span.end_time_unix_nano);
    }
    let ids: HashSet<&[u8]> = spans.iter().map(|r| r.span.trace_id.as_slice()).collect();
    assert_eq!(ids.len(), 1, "one trace");
}

#[test]
fn envoy_zipkin_shares_the_client_span_id_unless_told_not_to() {
    let t = inline(
        "services: [{ name: a }, { name: b }, { name: c }]\nentry: { service: a, rate: 1 }\ncalls: [{ from: a, to: b }, { from: b, to: c }]\n",
    );
    for shared in [true, false] {
        let g = Simulator::new(t.clone(), Flavor::EnvoyZipkin { shared }).generate_roots(1);
        assert!(g.requests.is_empty());
        let raw: Vec<serde_json::Value> = g
            .zipkin
            .iter()
            .flat_map(|b| serde_json::from_slice::<Vec<serde_json::Value>>(b).unwrap())
            .collect();
        assert_eq!(raw.len(), 5);
        for z in &raw {
            assert!(
                z["tags"]
                    .as_object()
                    .unwrap()
                    .values()
                    .all(|v| v.is_string())
            );
            assert_eq!(z["tags"]["component"], "proxy");
            assert!(
                z["localEndpoint"]["serviceName"]
                    .as_str()
                    .unwrap()
                    .ends_with(".default")
            );
            assert_eq!(z["traceId"].as_str().unwrap().len(), 32);
        }
        let servers: Vec<&serde_json::Value> = raw
            .iter()
            .filter(|z| z["kind"] == "SERVER" && z.get("parentId").is_some())
            .collect();
        assert_eq!(servers.len(), 2);
        for s in servers {
            let client = raw
                .iter()
                .find(|z| {
                    z["kind"] == "CLIENT"
                        && z["tags"]["istio.canonical_service"]
                            != s["tags"]["istio.canonical_service"]
                        && (z["id"] == s["id"] || z["id"] == s["parentId"])
                })
                .unwrap();
            if shared {
                assert_eq!(s["shared"], true);
                assert_eq!(s["id"], client["id"]);
                assert_eq!(s["parentId"], client["parentId"]);
            } else {
                assert!(s.get("shared").is_none());
                assert_eq!(s["parentId"], client["id"]);
            }
            assert!(
                client["remoteEndpoint"]["ipv4"]
                    .as_str()
                    .unwrap()
                    .starts_with("10.")
            );
        }
        check_truth(&g);
    }
}

#[test]
fn linkerd_makes_four_spans_per_hop() {
    let t = inline(
        "services: [{ name: web, namespace: emojivoto }, { name: voting, namespace: emojivoto }]\nentry: { service: web, rate: 1, path: /api/vote }\ncalls: [{ from: web, to: voting, method: POST, path: /vote, error_rate: 1 }]\n",
    );
    let g = Simulator::new(t, Flavor::Linkerd).generate_roots(1);
    let spans = received(&g);
    // Root: inbound SERVER + inbound CLIENT; the hop: outbound SERVER + CLIENT, inbound
    // SERVER + CLIENT.
    assert_eq!(spans.len(), 6);
    let hop: Vec<(&str, i32, &str)> = spans
        .iter()
        .filter(|r| r.span.name == "/vote")
        .map(|r| {
            (
                get_str(&r.span.attributes, "direction").unwrap(),
                r.span.kind,
                get_str(&r.resource, "service.name").unwrap(),
            )
        })
        .collect();
    let mut hop_sorted = hop;
    hop_sorted.sort();
    let (s, c) = (SpanKind::Server as i32, SpanKind::Client as i32);
    assert_eq!(
        hop_sorted,
        vec![
            ("inbound", s, "voting"),
            ("inbound", c, "voting"),
            ("outbound", s, "web"),
            ("outbound", c, "web")
        ]
    );
    for r in &spans {
        assert!(r.span.status.is_none(), "Linkerd leaves the status UNSET");
        assert_eq!(
            get_str(&r.resource, "k8s.namespace.name"),
            Some("emojivoto")
        );
        assert!(get_str(&r.span.attributes, "http.request.method").is_some());
        assert!(get_str(&r.span.attributes, "url.path").is_some());
    }
    let endpoint = spans
        .iter()
        .find(|r| {
            r.span.name == "/vote"
                && r.span.kind == c
                && get_str(&r.span.attributes, "direction") == Some("outbound")
        })
        .unwrap();
    assert_eq!(
        attr(&endpoint.span, "http.response.status_code"),
        Some(&Value::IntValue(503))
    );
    assert_eq!(
        get_str(&endpoint.span.attributes, "server.address"),
        Some("voting.emojivoto.svc.cluster.local")
    );
    assert!(
        g.truth
            .edge("web.emojivoto", "voting.emojivoto", "")
            .is_some_and(|e| e.failed == 1)
    );
    assert_eq!(
        g.truth.spans.intra_workload, 3,
        "inbound CLIENTs and the outbound SERVER"
    );
    check_truth(&g);
}

#[test]
fn uninstrumented_peers_have_only_client_spans_with_peer_attributes() {
    let g = Simulator::new(topology("shop.yaml"), Flavor::EnvoyOtlp)
        .with_seed(3)
        .generate_roots(400);
    let spans = received(&g);
    let db: Vec<&Received> = spans
        .iter()
        .filter(|r| attr(&r.span, "db.system").is_some())
        .collect();
    assert!(!db.is_empty());
    for r in &db {
        assert_eq!(r.span.kind, SpanKind::Client as i32);
        assert!(attr(&r.span, "db.name").is_some() && attr(&r.span, "server.address").is_some());
        assert!(
            get_str(&r.resource, "service.namespace").is_some(),
            "an SDK span"
        );
    }
    let producers: Vec<&Received> = spans
        .iter()
        .filter(|r| r.span.kind == SpanKind::Producer as i32)
        .collect();
    assert!(!producers.is_empty());
    assert!(
        producers
            .iter()
            .all(|r| get_str(&r.span.attributes, "peer.service") == Some("kafka"))
    );
    let external: Vec<&Received> = spans
        .iter()
        .filter(|r| {
            get_str(&r.span.attributes, "upstream_cluster")
                == Some("outbound|443||api.payments.example.com")
        })
        .collect();
    assert!(!external.is_empty());
    let e = g
        .truth
        .edge("checkout.shop", "api.payments.example.com", "virtual_node")
        .unwrap();
    assert_eq!(
        e.requests as usize,
        external.len(),
        "one edge request per attempt"
    );
    assert!(e.failed > 0, "the payment API fails sometimes");
    assert!(
        g.truth
            .edge("checkout.shop", "orders", "database")
            .is_some()
    );
    assert!(g.truth.edge("catalog.shop", "orders", "database").is_some());
    assert!(g.truth.edge("cart.shop", "carts", "database").is_some());
    assert!(
        g.truth
            .edge("frontend.shop", "recommendations.ml", "")
            .is_some(),
        "cross-namespace edge"
    );
}

#[test]
fn output_is_deterministic_from_the_seed() {
    let sim = Simulator::new(topology("bookinfo.yaml"), Flavor::EnvoyOtlp).with_seed(5);
    let a = sim.generate_roots(50);
    let b = sim.generate_roots(50);
    assert_eq!(a, b);
    let bytes = |g: &Generated| {
        g.requests
            .iter()
            .map(|r| r.encode_to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(bytes(&a), bytes(&b));
    let c = sim.clone().with_seed(6).generate_roots(50);
    assert_ne!(bytes(&a), bytes(&c));
    let z = Simulator::new(
        topology("bookinfo.yaml"),
        Flavor::EnvoyZipkin { shared: true },
    )
    .with_seed(5);
    assert_eq!(z.generate_roots(20).zipkin, z.generate_roots(20).zipkin);
    assert_eq!(a.shuffled(1), a.shuffled(1));
    assert_ne!(a.shuffled(1).requests, a.shuffled(2).requests);
}

#[test]
fn streaming_in_steps_gives_the_same_requests_as_one_step() {
    let sim = Simulator::new(topology("shop.yaml"), Flavor::Linkerd).with_seed(11);
    let whole = sim.generate_for(std::time::Duration::from_secs(3));
    let mut s = sim.stream();
    let start = crate::DEFAULT_START_UNIX_NANO;
    let mut deliveries = Vec::new();
    let mut last = 0;
    for step in 1..=30u64 {
        let chunk = s.advance_to(start + step * 100_000_000);
        for d in &chunk {
            assert!(d.at_unix_nano >= last, "deliveries come in time order");
            assert!(d.at_unix_nano <= start + step * 100_000_000);
            last = d.at_unix_nano;
        }
        deliveries.extend(chunk);
    }
    let (rest, truth) = s.finish();
    deliveries.extend(rest);
    assert_eq!(truth, whole.truth);
    let requests: Vec<_> = deliveries
        .into_iter()
        .map(|d| match d.body {
            crate::Body::Otlp(r) => r,
            crate::Body::Zipkin(_) => unreachable!(),
        })
        .collect();
    assert_eq!(requests, whole.requests);
    // About 50 roots per second for 3 s.
    assert!((100..200).contains(&truth.traces), "{}", truth.traces);
}

#[test]
fn traces_are_split_across_requests_of_small_flushes() {
    let g = Simulator::new(topology("bookinfo.yaml"), Flavor::EnvoyOtlp)
        .with_seed(2)
        .generate_roots(200);
    let mut requests_per_trace: HashMap<Vec<u8>, HashSet<usize>> = HashMap::new();
    for (i, r) in g.requests.iter().enumerate() {
        assert_eq!(r.resource_spans.len(), 1, "one emitter per request");
        let spans = &r.resource_spans[0].scope_spans[0].spans;
        assert!(
            (1..=5).contains(&spans.len()),
            "Envoy flushes every 5 spans"
        );
        for s in spans {
            requests_per_trace
                .entry(s.trace_id.clone())
                .or_default()
                .insert(i);
        }
    }
    assert_eq!(requests_per_trace.len(), 200);
    assert!(
        requests_per_trace.values().all(|r| r.len() >= 2),
        "every trace spans several requests"
    );
    let mut p = meshgate_pdata::Payload::Traces(g.requests[0].clone());
    assert_eq!(
        meshgate_pdata::validate::remove_invalid(&mut p).count,
        0,
        "valid ids"
    );
    let shuffled = g.shuffled(3);
    assert_eq!(shuffled.span_count(), g.span_count());
    assert!(shuffled.requests.len() > g.requests.len(), "split further");
}

#[test]
fn root_requests_are_user_edges_and_failures_follow_error_rates() {
    let t = inline(
        "services: [{ name: a }, { name: b }]\nentry: { service: a, rate: 100, error_rate: 0.2 }\ncalls: [{ from: a, to: b, error_rate: 0.5 }]\n",
    );
    let g = Simulator::new(t, Flavor::EnvoyOtlp)
        .with_seed(8)
        .generate_roots(2000);
    let user = g.truth.edge("user", "a.default", "virtual_node").unwrap();
    assert_eq!(user.requests, 2000);
    assert!((300..500).contains(&user.failed), "{}", user.failed);
    let ab = g.truth.edge("a.default", "b.default", "").unwrap();
    assert!((850..1150).contains(&ab.failed), "{}", ab.failed);
    assert_eq!(g.truth.spans.roots, 2000);
}

#[test]
fn long_streams_can_keep_counts_without_durations() {
    let sim = Simulator::new(topology("bookinfo.yaml"), Flavor::EnvoyOtlp).with_seed(4);
    let full = sim.generate_roots(100).truth;
    let mut s = sim.stream();
    s.keep_durations(false);
    s.simulate_roots(100);
    let (_, counts) = s.finish();
    assert_eq!(counts.spans, full.spans);
    for (k, e) in &counts.edges {
        assert_eq!(
            (e.requests, e.failed),
            (full.edges[k].requests, full.edges[k].failed)
        );
        assert!(e.client_seconds.is_empty() && e.server_seconds.is_empty());
    }
    for (k, r) in &counts.red {
        assert_eq!(r.calls, full.red[k].calls);
        assert!(r.durations_seconds.is_empty());
    }
}
