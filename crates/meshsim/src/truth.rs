//! The ground truth of a simulation: the service graph edges and RED series that the spans it
//! emitted must produce, under meshgate's derivation semantics (node identity `name.namespace`,
//! intra-workload hops are not edges, `user` edges for roots, virtual nodes for uninstrumented
//! peers, failed when either side failed under [`meshgate_pdata::mesh::is_failed`]).
//!
//! Everything is exact: counts are integers and every duration is the span's
//! `(end - start) as f64 / 1e9`, the value the connectors compute from the same span. Sums of
//! many durations depend on the order they are added in, so compare sums with a tolerance
//! (or recompute them from [`EdgeTruth::client_seconds`] in the connector's order).

use std::collections::BTreeMap;

use meshgate_pdata::mesh::effective_status;
use meshgate_pdata::otlp::{Span, span::SpanKind, status::StatusCode};

/// The client node of edges whose caller is outside the mesh (root requests).
pub const USER_NODE: &str = "user";

/// Values of the `connection_type` edge label.
pub mod connection_type {
    /// A client span paired with its server span.
    pub const PAIRED: &str = "";
    /// A root request (`user` client) or a call to an uninstrumented non-database peer.
    pub const VIRTUAL_NODE: &str = "virtual_node";
    /// A call to a database (`db.system` present).
    pub const DATABASE: &str = "database";
    /// A message published to a broker (PRODUCER span).
    pub const MESSAGING_SYSTEM: &str = "messaging_system";
}

/// One service graph edge: the labels `client`, `server`, `connection_type`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    /// Client node id (`user` for roots).
    pub client: String,
    /// Server node id (a virtual node for uninstrumented peers).
    pub server: String,
    /// One of [`connection_type`]'s values.
    pub connection_type: String,
}

impl EdgeKey {
    /// Builds a key.
    pub fn new(client: &str, server: &str, connection_type: &str) -> Self {
        EdgeKey {
            client: client.to_string(),
            server: server.to_string(),
            connection_type: connection_type.to_string(),
        }
    }
}

/// What one edge must count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeTruth {
    /// `traces_service_graph_request_total`.
    pub requests: u64,
    /// `traces_service_graph_request_failed_total`.
    pub failed: u64,
    /// Client span durations in seconds, one per request that has a client side (not for
    /// `user` edges).
    pub client_seconds: Vec<f64>,
    /// Server span durations in seconds, one per request that has a server side (not for
    /// virtual peers).
    pub server_seconds: Vec<f64>,
}

/// One RED series: `service.name`, `span.name`, `span.kind`, `status.code`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RedKey {
    /// `service.name` of the span's resource (for Zipkin, the local endpoint's service name).
    pub service: String,
    /// The span name.
    pub span_name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`...
    pub kind: String,
    /// `STATUS_CODE_UNSET`, `STATUS_CODE_OK` or `STATUS_CODE_ERROR` after the mesh rule.
    pub status: String,
}

/// What one RED series must count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedTruth {
    /// Spans (the calls counter).
    pub calls: u64,
    /// Span durations in seconds (the duration histogram).
    pub durations_seconds: Vec<f64>,
}

/// How the emitted spans divide up for the service graph; every span is in exactly one class,
/// so `total == roots + 2 * paired + virtual_clients + intra_workload`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanCounts {
    /// Every span emitted.
    pub total: u64,
    /// SERVER spans without a parent (one `user` edge each).
    pub roots: u64,
    /// Client/server pairs across the network (two spans each, one edge request each).
    pub paired: u64,
    /// CLIENT/PRODUCER spans that nothing pairs with and that name a peer (one virtual edge
    /// request each): databases, queues, external APIs, attempts that never reached the
    /// server.
    pub virtual_clients: u64,
    /// Spans of a hop inside one workload: SDK spans around sidecar spans, Linkerd's
    /// `direction=inbound` CLIENT and `direction=outbound` SERVER spans.
    pub intra_workload: u64,
}

/// Everything the connectors must derive from a simulation's spans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroundTruth {
    /// Root requests simulated (traces).
    pub traces: u64,
    /// Service graph edges (default span selection: proxy and SDK spans).
    pub edges: BTreeMap<EdgeKey, EdgeTruth>,
    /// The edges when only proxy spans are considered (`spans: proxy`): the same minus the
    /// database and queue edges, which come from application SDK spans.
    pub proxy_only_edges: BTreeMap<EdgeKey, EdgeTruth>,
    /// RED series.
    pub red: BTreeMap<RedKey, RedTruth>,
    /// Span classification.
    pub spans: SpanCounts,
}

impl GroundTruth {
    /// The edge `client -> server` of `connection_type`, if any request took it.
    pub fn edge(&self, client: &str, server: &str, connection_type: &str) -> Option<&EdgeTruth> {
        self.edges
            .get(&EdgeKey::new(client, server, connection_type))
    }

    /// Sum of `requests` over all edges.
    pub fn total_requests(&self) -> u64 {
        self.edges.values().map(|e| e.requests).sum()
    }

    /// Sum of `calls` over all RED series (equals the number of spans).
    pub fn total_calls(&self) -> u64 {
        self.red.values().map(|r| r.calls).sum()
    }

    /// Records one edge request. `client`/`server` are the sides' spans when they exist; the
    /// request failed when either failed under the mesh rule. Durations are kept only with
    /// `keep_durations`.
    pub(crate) fn record_edge(
        &mut self,
        key: EdgeKey,
        client: Option<&Span>,
        server: Option<&Span>,
        from_proxy_spans: bool,
        keep_durations: bool,
    ) {
        let failed = client.is_some_and(meshgate_pdata::mesh::is_failed)
            || server.is_some_and(meshgate_pdata::mesh::is_failed);
        let maps: &mut [&mut BTreeMap<EdgeKey, EdgeTruth>] = if from_proxy_spans {
            &mut [&mut self.edges, &mut self.proxy_only_edges]
        } else {
            &mut [&mut self.edges]
        };
        for map in maps.iter_mut() {
            let e = map.entry(key.clone()).or_default();
            e.requests += 1;
            e.failed += u64::from(failed);
            if !keep_durations {
                continue;
            }
            if let Some(c) = client {
                e.client_seconds.push(span_seconds(c));
            }
            if let Some(s) = server {
                e.server_seconds.push(span_seconds(s));
            }
        }
    }

    /// Records one span in its RED series (its duration only with `keep_durations`).
    pub(crate) fn record_red(&mut self, service: &str, span: &Span, keep_durations: bool) {
        let key = RedKey {
            service: service.to_string(),
            span_name: span.name.clone(),
            kind: kind_label(span.kind).to_string(),
            status: status_label(effective_status(span)).to_string(),
        };
        let r = self.red.entry(key).or_default();
        r.calls += 1;
        if keep_durations {
            r.durations_seconds.push(span_seconds(span));
        }
    }
}

/// A span's duration in seconds, computed exactly as the connectors do.
pub fn span_seconds(span: &Span) -> f64 {
    seconds(span.start_time_unix_nano, span.end_time_unix_nano)
}

/// `(end - start) as f64 / 1e9`, the one conversion used everywhere.
pub fn seconds(start_unix_nano: u64, end_unix_nano: u64) -> f64 {
    end_unix_nano.saturating_sub(start_unix_nano) as f64 / 1e9
}

/// `SPAN_KIND_*` name of an OTLP span kind.
pub fn kind_label(kind: i32) -> &'static str {
    SpanKind::try_from(kind)
        .unwrap_or(SpanKind::Unspecified)
        .as_str_name()
}

/// `STATUS_CODE_*` name of a status code.
pub fn status_label(code: StatusCode) -> &'static str {
    code.as_str_name()
}

/// Counts of `values` in explicit histogram buckets with upper bounds `bounds` (OTLP
/// semantics: bucket `i` holds `bounds[i-1] < v <= bounds[i]`, the last one `v > last bound`),
/// to compare a connector's histogram with the truth.
pub fn bucket_counts(values: &[f64], bounds: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; bounds.len() + 1];
    for &v in values {
        let i = bounds.partition_point(|&b| b < v);
        counts[i] += 1;
    }
    counts
}

/// A peer name as a service graph node: a Kubernetes service FQDN
/// `<svc>.<ns>.svc[.<cluster-domain>]` becomes `<svc>.<ns>`, anything else is kept.
pub fn normalise_peer(name: &str) -> String {
    let mut parts = name.splitn(4, '.');
    if let (Some(svc), Some(ns), Some("svc")) = (parts.next(), parts.next(), parts.next())
        && !svc.is_empty()
        && !ns.is_empty()
    {
        return format!("{svc}.{ns}");
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_have_inclusive_upper_bounds() {
        assert_eq!(
            bucket_counts(&[0.001, 0.005, 0.0051, 0.1, 3.0], &[0.005, 0.01, 1.0]),
            vec![2, 1, 1, 1]
        );
        assert_eq!(bucket_counts(&[], &[1.0]), vec![0, 0]);
    }

    #[test]
    fn kubernetes_fqdns_are_normalised() {
        assert_eq!(
            normalise_peer("reviews.default.svc.cluster.local"),
            "reviews.default"
        );
        assert_eq!(normalise_peer("reviews.default.svc"), "reviews.default");
        assert_eq!(
            normalise_peer("api.payments.example.com"),
            "api.payments.example.com"
        );
        assert_eq!(normalise_peer("orders"), "orders");
    }

    #[test]
    fn seconds_are_computed_from_integer_nanoseconds() {
        assert_eq!(seconds(1_000, 1_501_000), 0.0015);
        assert_eq!(kind_label(SpanKind::Server as i32), "SPAN_KIND_SERVER");
        assert_eq!(status_label(StatusCode::Error), "STATUS_CODE_ERROR");
    }

    #[test]
    fn an_edge_fails_when_either_side_fails() {
        use meshgate_pdata::attributes::kv_str;
        let ok = Span {
            start_time_unix_nano: 0,
            end_time_unix_nano: 2_000_000,
            attributes: vec![kv_str("http.status_code", "200")],
            ..Default::default()
        };
        let bad = Span {
            attributes: vec![kv_str("http.status_code", "503")],
            ..ok.clone()
        };
        let mut t = GroundTruth::default();
        let k = EdgeKey::new("a.ns", "b.ns", connection_type::PAIRED);
        t.record_edge(k.clone(), Some(&ok), Some(&ok), true, true);
        t.record_edge(k.clone(), Some(&ok), Some(&bad), true, true);
        t.record_edge(
            EdgeKey::new("a.ns", "db", "database"),
            Some(&bad),
            None,
            false,
            true,
        );
        let e = t.edge("a.ns", "b.ns", "").unwrap();
        assert_eq!((e.requests, e.failed), (2, 1));
        assert_eq!(e.client_seconds, vec![0.002, 0.002]);
        assert_eq!(t.total_requests(), 3);
        assert_eq!(
            t.proxy_only_edges.len(),
            1,
            "SDK-only edges stay out of proxy mode"
        );
    }
}
