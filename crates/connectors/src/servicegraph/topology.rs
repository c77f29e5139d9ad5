//! The live topology behind `GET /api/v1/topology`: per (client node, server node) time
//! buckets, fed by the same observations as the edge metrics, summed over the requested
//! window.
//!
//! Buckets are `topology.resolution` wide and kept for `topology.retention`. Only buckets that
//! saw a request exist, and a bucket's histograms are `u32` counts, so an idle edge costs
//! nothing and a busy one about 450 bytes per bucket (three latency histograms and three
//! exemplar calls: the newest failed, the slowest and the newest).
//!
//! Window math: a window `w` answered at `now` sums the buckets starting at or after
//! `now - w` (so the first bucket boundary at or after it), up to and including the bucket
//! holding `now`; rates divide by `w`. With `now` and `w` on bucket boundaries the sum covers
//! exactly `[now - w, now]`.

use super::hash::FastMap;
use super::identity::{NodeId, Nodes, USER_NODE};
use super::store::Key;
use crate::histogram::ExplicitHistogram;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Kind of the observations an edge bucket saw, as bits (an edge may see several: requests
/// that reached the server pair, those that failed to connect become virtual).
pub(crate) mod class {
    /// A paired call.
    pub const PAIRED: u8 = 1;
    /// A root server span: the client is `user`.
    pub const USER: u8 = 2;
    /// An unpaired caller with a peer: a virtual server.
    pub const VIRTUAL: u8 = 4;
    /// ... that is a database.
    pub const DATABASE: u8 = 8;
    /// ... that is a messaging system.
    pub const MESSAGING: u8 = 16;
}

/// One call as both the metrics and the topology record it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Observation {
    /// Client span duration in seconds, when there is a client span.
    pub client: Option<f64>,
    /// Server span duration in seconds, when there is a server span.
    pub server: Option<f64>,
    /// Either side failed.
    pub failed: bool,
    /// How many calls it stands for.
    pub weight: u64,
    /// The call's trace id and the span id it is known by (the client span's, or the server
    /// span's for `user` edges): the exemplar a person can open in a trace viewer.
    pub call: Key,
}

impl Observation {
    /// The latency a person sees for this call: the client's when there is a client span,
    /// else the server's.
    fn latency(&self) -> f64 {
        self.client.or(self.server).unwrap_or(0.0)
    }

    /// The network latency of a paired call: client duration minus server duration, clamped
    /// at 0 (clock skew and rounding can make the server span look longer). `None` unless both
    /// sides were seen, so only paired edges have it.
    pub fn network(&self) -> Option<f64> {
        match (self.client, self.server) {
            (Some(c), Some(s)) => Some((c - s).max(0.0)),
            _ => None,
        }
    }
}

/// Latencies of one side in one bucket.
#[derive(Default)]
struct Lat {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// `bounds.len() + 1` counts once anything was recorded; empty before.
    counts: Box<[u32]>,
}

impl Lat {
    fn record(&mut self, bounds: &[f64], v: f64, weight: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len() + 1].into_boxed_slice();
            self.min = f64::INFINITY;
            self.max = f64::NEG_INFINITY;
        }
        let i = bounds.partition_point(|b| *b < v);
        let w = u32::try_from(weight).unwrap_or(u32::MAX);
        self.counts[i] = self.counts[i].saturating_add(w);
        self.count += weight;
        self.sum += v * weight as f64;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn add_to(&self, h: &mut ExplicitHistogram) {
        if self.count == 0 {
            return;
        }
        for (a, b) in h.bucket_counts.iter_mut().zip(self.counts.iter()) {
            *a += *b as u64;
        }
        h.count += self.count;
        h.sum += self.sum;
        h.min = h.min.min(self.min);
        h.max = h.max.max(self.max);
    }
}

struct Bucket {
    tick: u64,
    classes: u8,
    requests: u64,
    failed: u64,
    client: Lat,
    server: Lat,
    /// Client minus server duration of paired calls.
    network: Lat,
    /// Calls worth opening, see [`Exemplars`].
    exemplars: Exemplars,
}

/// One call kept as an example of an edge: its ids, latency, outcome and when it was seen.
#[derive(Clone, Copy, Debug)]
struct Exemplar {
    call: Key,
    latency: f64,
    failed: bool,
    at: u64,
}

/// The calls a bucket keeps as examples: the newest failed one, the slowest one and the newest
/// one. Three fixed slots, so a busy edge costs the same as a quiet one, and the ones people
/// open first (errors, then the tail) survive any amount of ordinary traffic.
#[derive(Default)]
struct Exemplars {
    failed: Option<Exemplar>,
    slowest: Option<Exemplar>,
    newest: Option<Exemplar>,
}

impl Exemplars {
    fn record(&mut self, obs: &Observation, at: u64) {
        let e = Exemplar {
            call: obs.call,
            latency: obs.latency(),
            failed: obs.failed,
            at,
        };
        if e.failed {
            self.failed = Some(e);
        }
        if self.slowest.is_none_or(|s| e.latency > s.latency) {
            self.slowest = Some(e);
        }
        self.newest = Some(e);
    }
}

/// Most exemplars an edge or node lists in the topology JSON.
const MAX_EXEMPLARS: usize = 5;

/// The exemplars of an edge's buckets worth considering, gathered newest bucket first, kept
/// small however many buckets the window spans: the first failed and newest ones seen, and
/// the slowest.
#[derive(Default)]
struct Candidates {
    failed: Vec<Exemplar>,
    newest: Vec<Exemplar>,
    slowest: Vec<Exemplar>,
}

impl Candidates {
    /// Adds a bucket's exemplars; buckets come newest first.
    fn add(&mut self, ex: &Exemplars) {
        if let Some(e) = ex.failed
            && self.failed.len() < MAX_EXEMPLARS
        {
            self.failed.push(e);
        }
        if let Some(e) = ex.newest
            && self.newest.len() < MAX_EXEMPLARS
        {
            self.newest.push(e);
        }
        if let Some(e) = ex.slowest {
            let at = self.slowest.partition_point(|s| s.latency >= e.latency);
            if at < MAX_EXEMPLARS {
                self.slowest.insert(at, e);
                self.slowest.truncate(MAX_EXEMPLARS);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Exemplar> {
        self.failed.iter().chain(&self.slowest).chain(&self.newest)
    }
}

/// Picks up to [`MAX_EXEMPLARS`] calls out of `candidates`, one per trace: failed calls first
/// (newest first), then the slowest, then the newest.
fn pick_exemplars<'a>(candidates: impl Iterator<Item = &'a Exemplar>) -> Vec<ExemplarView> {
    let mut all: Vec<&Exemplar> = candidates.collect();
    let mut picked: Vec<&Exemplar> = Vec::with_capacity(MAX_EXEMPLARS);
    let mut take = |ordered: &[&'a Exemplar], only_failed: bool| {
        for e in ordered.iter().filter(|e| e.failed || !only_failed) {
            if picked.len() == MAX_EXEMPLARS {
                return;
            }
            if !picked.iter().any(|p| p.call.trace == e.call.trace) {
                picked.push(e);
            }
        }
    };
    all.sort_by_key(|e| std::cmp::Reverse(e.at));
    take(&all, true);
    let newest_first = all.clone();
    all.sort_by(|a, b| b.latency.total_cmp(&a.latency));
    take(&all, false);
    take(&newest_first, false);
    picked
        .into_iter()
        .map(|e| ExemplarView {
            trace_id: Hex(e.call.trace),
            span_id: Hex(e.call.span),
            duration_seconds: e.latency,
            failed: e.failed,
            timestamp: Timestamp(e.at),
        })
        .collect()
}

/// Per node pair buckets.
pub(crate) struct Topology {
    res_ns: u64,
    retention: Duration,
    /// Buckets kept per edge: enough for a window of `retention` starting mid-bucket.
    keep: u64,
    edges: FastMap<(NodeId, NodeId), VecDeque<Bucket>>,
}

impl Topology {
    /// Buckets of `resolution`, kept for `retention`.
    pub(crate) fn new(retention: Duration, resolution: Duration) -> Topology {
        let res_ns = (resolution.as_nanos() as u64).max(1);
        let keep = (retention.as_nanos() as u64).div_ceil(res_ns) + 1;
        Topology {
            res_ns,
            retention,
            keep,
            edges: FastMap::default(),
        }
    }

    /// The longest window answered.
    pub(crate) fn retention(&self) -> Duration {
        self.retention
    }

    /// Number of node pairs with buckets.
    pub(crate) fn len(&self) -> usize {
        self.edges.len()
    }

    /// Every node referenced, for the interner sweep.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.edges.keys().flat_map(|(a, b)| [*a, *b])
    }

    /// Adds one observation of the edge `client -> server` at `now` (unix ns).
    pub(crate) fn record(
        &mut self,
        client: NodeId,
        server: NodeId,
        class: u8,
        obs: &Observation,
        bounds: &[f64],
        now: u64,
    ) {
        let tick = now / self.res_ns;
        let buckets = self.edges.entry((client, server)).or_default();
        let fresh = buckets.back().is_none_or(|b| b.tick < tick);
        if fresh {
            buckets.push_back(Bucket {
                tick,
                classes: 0,
                requests: 0,
                failed: 0,
                client: Lat::default(),
                server: Lat::default(),
                network: Lat::default(),
                exemplars: Exemplars::default(),
            });
            while buckets.len() as u64 > self.keep {
                buckets.pop_front();
            }
        }
        // `now` never goes backwards in the connector; should a caller pass an older time,
        // the newest bucket takes it rather than the past being rewritten.
        let Some(b) = buckets.back_mut() else {
            return;
        };
        b.classes |= class;
        b.requests += obs.weight;
        if obs.failed {
            b.failed += obs.weight;
        }
        if let Some(v) = obs.client {
            b.client.record(bounds, v, obs.weight);
        }
        if let Some(v) = obs.server {
            b.server.record(bounds, v, obs.weight);
        }
        if let Some(v) = obs.network() {
            b.network.record(bounds, v, obs.weight);
        }
        b.exemplars.record(obs, now);
    }

    /// Drops buckets older than the retention and pairs left without any.
    pub(crate) fn trim(&mut self, now: u64) {
        let oldest = (now / self.res_ns).saturating_sub(self.keep - 1);
        self.edges.retain(|_, b| {
            while b.front().is_some_and(|x| x.tick < oldest) {
                b.pop_front();
            }
            !b.is_empty()
        });
    }

    /// The topology over `q.window` (already capped to the retention) at `now`, as owned
    /// data: the caller serialises it after letting go of the graph's lock. `Err` names an
    /// unknown `q.node`.
    pub(crate) fn query(
        &self,
        q: &Query,
        now: u64,
        nodes: &Nodes,
        bounds: &[f64],
    ) -> Result<View, String> {
        let window_ns = q.window.as_nanos() as u64;
        let window_s = q.window.as_secs_f64();
        let now_tick = now / self.res_ns;
        let from_tick = now.saturating_sub(window_ns).div_ceil(self.res_ns);

        struct NodeAgg {
            id: NodeId,
            kind: u8,
            requests: u64,
            failed: u64,
            server: ExplicitHistogram,
            client: ExplicitHistogram,
            /// Exemplar candidates of the calls it served, and of those it made.
            served: Candidates,
            made: Candidates,
        }
        let new_agg = |id: NodeId| NodeAgg {
            id,
            kind: u8::MAX,
            requests: 0,
            failed: 0,
            server: ExplicitHistogram::new(bounds),
            client: ExplicitHistogram::new(bounds),
            served: Candidates::default(),
            made: Candidates::default(),
        };
        let wanted = q.node.as_deref();
        let mut node_aggs: BTreeMap<&str, NodeAgg> = BTreeMap::new();
        let mut edges: Vec<EdgeView> = Vec::new();
        let (mut ch, mut sh, mut nh) = (
            ExplicitHistogram::new(bounds),
            ExplicitHistogram::new(bounds),
            ExplicitHistogram::new(bounds),
        );
        for ((c, s), buckets) in &self.edges {
            let (cn, sn) = (nodes.get(*c), nodes.get(*s));
            let touches = wanted.is_none_or(|w| *cn.id == *w || *sn.id == *w);
            let (mut classes, mut requests, mut failed) = (0u8, 0u64, 0u64);
            for h in [&mut ch, &mut sh, &mut nh] {
                h.clear();
            }
            let mut candidates = Candidates::default();
            for b in buckets
                .iter()
                .rev()
                .take_while(|b| b.tick >= from_tick)
                .filter(|b| b.tick <= now_tick)
            {
                classes |= b.classes;
                requests += b.requests;
                failed += b.failed;
                b.client.add_to(&mut ch);
                b.server.add_to(&mut sh);
                b.network.add_to(&mut nh);
                if q.exemplars {
                    candidates.add(&b.exemplars);
                }
            }
            if classes == 0 {
                continue;
            }
            if touches {
                let conn = if classes & class::PAIRED != 0 {
                    ""
                } else if classes & class::DATABASE != 0 {
                    "database"
                } else if classes & class::MESSAGING != 0 {
                    "messaging_system"
                } else {
                    "virtual_node"
                };
                edges.push(EdgeView {
                    id: format!("{}->{}", cn.id, sn.id),
                    source: cn.id.clone(),
                    target: sn.id.clone(),
                    connection_type: conn,
                    requests,
                    requests_per_second: rate(requests, window_s),
                    failed,
                    error_rate: ratio(failed, requests),
                    client_latency_seconds: quantiles(&ch, bounds),
                    server_latency_seconds: quantiles(&sh, bounds),
                    network_latency_seconds: quantiles(&nh, bounds),
                    exemplars: q.exemplars.then(|| pick_exemplars(candidates.iter())),
                });
            }
            // Kinds, strongest first: a node that sent or served a traced request is a
            // service; a peer only seen from unpaired callers is what they called; `user`
            // only ever calls.
            let client_kind = if *c == USER_NODE && classes == class::USER {
                KIND_USER
            } else {
                KIND_SERVICE
            };
            let server_kind = if classes & (class::PAIRED | class::USER) != 0 {
                KIND_SERVICE
            } else if classes & class::DATABASE != 0 {
                KIND_DATABASE
            } else if classes & class::MESSAGING != 0 {
                KIND_MESSAGING
            } else {
                KIND_VIRTUAL
            };
            let ca = node_aggs.entry(&cn.id).or_insert_with(|| new_agg(*c));
            ca.kind = ca.kind.min(client_kind);
            merge_candidates(&mut ca.made, &candidates);
            let sa = node_aggs.entry(&sn.id).or_insert_with(|| new_agg(*s));
            sa.kind = sa.kind.min(server_kind);
            sa.requests += requests;
            sa.failed += failed;
            sa.server.merge(&sh);
            sa.client.merge(&ch);
            merge_candidates(&mut sa.served, &candidates);
        }
        if let Some(w) = wanted
            && !node_aggs.contains_key(w)
        {
            return Err(format!(
                "no node `{w}` in the last {}: it made and served no call in the window \
                 (node ids are as in the topology's `nodes[].id`, e.g. `reviews.default`)",
                meshgate_config::DurationValue(q.window)
            ));
        }
        // With `node`, that node and the other ends of its edges.
        let shown: Option<std::collections::BTreeSet<&str>> = wanted.map(|w| {
            edges
                .iter()
                .flat_map(|e| [&*e.source, &*e.target])
                .chain([w])
                .collect()
        });
        let nodes_out: Vec<NodeView> = node_aggs
            .into_iter()
            .filter(|(id, _)| shown.as_ref().is_none_or(|s| s.contains(id)))
            .map(|(_, a)| {
                let n = nodes.get(a.id);
                // A node's latency is how long it took to serve; peers nobody traced
                // inside (virtual nodes) are measured from their callers.
                let lat = if a.server.count > 0 {
                    quantiles(&a.server, bounds)
                } else {
                    quantiles(&a.client, bounds)
                };
                // What it served; a node that only calls (`user`) shows what it called.
                let exemplars = q.exemplars.then(|| {
                    if a.served.newest.is_empty() {
                        pick_exemplars(a.made.iter())
                    } else {
                        pick_exemplars(a.served.iter())
                    }
                });
                NodeView {
                    id: n.id.clone(),
                    name: n.name.clone(),
                    namespace: n.namespace.clone(),
                    kind: KIND_NAMES[a.kind.min(KIND_USER) as usize],
                    requests: a.requests,
                    requests_per_second: rate(a.requests, window_s),
                    failed: a.failed,
                    error_rate: ratio(a.failed, a.requests),
                    latency_seconds: lat,
                    exemplars,
                }
            })
            .collect();
        edges.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Ok(View {
            window_seconds: window_s,
            resolution_seconds: self.res_ns as f64 / 1e9,
            generated_at: Timestamp(now),
            nodes: nodes_out,
            edges,
        })
    }
}

const KIND_SERVICE: u8 = 0;
const KIND_DATABASE: u8 = 1;
const KIND_MESSAGING: u8 = 2;
const KIND_VIRTUAL: u8 = 3;
const KIND_USER: u8 = 4;
const KIND_NAMES: [&str; 5] = ["service", "database", "messaging", "virtual", "user"];

/// Folds an edge's candidates into a node's, keeping the node's lists as small as an edge's.
fn merge_candidates(into: &mut Candidates, from: &Candidates) {
    let newest_first = |a: &Exemplar, b: &Exemplar| b.at.cmp(&a.at);
    for (list, add) in [
        (&mut into.failed, &from.failed),
        (&mut into.newest, &from.newest),
    ] {
        list.extend_from_slice(add);
        list.sort_by(newest_first);
        list.truncate(MAX_EXEMPLARS);
    }
    into.slowest.extend_from_slice(&from.slowest);
    into.slowest.sort_by(|a, b| b.latency.total_cmp(&a.latency));
    into.slowest.truncate(MAX_EXEMPLARS);
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b > 0 { a as f64 / b as f64 } else { 0.0 }
}

fn quantiles(h: &ExplicitHistogram, bounds: &[f64]) -> Option<Quantiles> {
    (h.count > 0).then(|| Quantiles {
        p50: h.quantile(bounds, 0.50),
        p95: h.quantile(bounds, 0.95),
        p99: h.quantile(bounds, 0.99),
    })
}

/// Parses the `window` query parameter: a duration such as `5m`; absent means `5m`; capped at
/// the retention.
pub(crate) fn parse_window(
    query: &BTreeMap<String, String>,
    retention: Duration,
) -> Result<Duration, String> {
    let w = match query.get("window") {
        None => Duration::from_secs(300),
        Some(raw) => {
            raw.parse::<meshgate_config::DurationValue>()
                .map_err(|e| {
                    format!(
                        "invalid `window` parameter: {e}; write a duration such as `5m` or `30s`"
                    )
                })?
                .0
        }
    };
    if w.is_zero() {
        return Err("invalid `window` parameter: it must be greater than 0, e.g. `5m`".into());
    }
    Ok(w.min(retention))
}

/// The shapes the topology API answers in, chosen by its `format` query parameter, so one
/// endpoint serves both meshgate's own JSON and what Grafana's node graph panel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `format=json` or no parameter: the topology JSON of [`Topology::query`].
    Json,
    /// `format=nodegraph`: Grafana's node graph shape, see [`nodegraph`].
    NodeGraph,
}

/// Parses the `format` query parameter: absent or `json`, or `nodegraph`.
pub(crate) fn parse_format(query: &BTreeMap<String, String>) -> Result<Format, String> {
    match query.get("format").map(String::as_str) {
        None | Some("json") => Ok(Format::Json),
        Some("nodegraph") => Ok(Format::NodeGraph),
        Some(other) => Err(format!(
            "unsupported `format` parameter `{other}`; accepted values are `json` (the default) \
             and `nodegraph` (Grafana's node graph panel)"
        )),
    }
}

/// One topology call's parameters, from its query string (see [`parse_query`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// `window`: how far back, capped at the retention. Default `5m`.
    pub window: Duration,
    /// `format`: `json` or `nodegraph`.
    pub format: Format,
    /// `exemplars=false` leaves the exemplar calls out: most of a big mesh's answer, and the
    /// service map page fetches them only for what is clicked. Default `true`.
    pub exemplars: bool,
    /// `node=<id>`: only that node, its edges and the nodes at their other ends (with their
    /// full numbers). Default: everything.
    pub node: Option<String>,
}

/// Parses the topology API's query string: `window`, `format`, `exemplars`, `node` (and
/// `component`, which the router consumed). Unknown parameters are refused by name, so a typo
/// does not silently answer something else.
pub(crate) fn parse_query(
    query: &BTreeMap<String, String>,
    retention: Duration,
) -> Result<Query, String> {
    if let Some(k) = query.keys().find(|k| {
        !matches!(
            k.as_str(),
            "window" | "format" | "exemplars" | "node" | "component"
        )
    }) {
        return Err(format!(
            "unknown parameter `{k}`; the topology API takes `window`, `format`, `exemplars`, \
             `node` and `component`"
        ));
    }
    let exemplars = match query.get("exemplars").map(String::as_str) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return Err(format!(
                "invalid `exemplars` parameter `{other}`; write `true` or `false`"
            ));
        }
    };
    let node = match query.get("node") {
        Some(n) if n.is_empty() => {
            return Err(
                "invalid `node` parameter: it is empty; give a node id such as \
                        `reviews.default`"
                    .into(),
            );
        }
        other => other.cloned(),
    };
    Ok(Query {
        window: parse_window(query, retention)?,
        format: parse_format(query)?,
        exemplars,
        node,
    })
}

/// The topology over a window, as the API serves it (see the README for the fields). Owned,
/// so it is built under the graph's lock and serialised after.
#[derive(Serialize, Debug)]
pub struct View {
    window_seconds: f64,
    resolution_seconds: f64,
    generated_at: Timestamp,
    nodes: Vec<NodeView>,
    edges: Vec<EdgeView>,
}

/// A node: a service, `user`, or a peer nobody traced inside.
#[derive(Serialize, Debug)]
struct NodeView {
    id: Box<str>,
    name: Box<str>,
    namespace: Option<Box<str>>,
    kind: &'static str,
    requests: u64,
    requests_per_second: f64,
    failed: u64,
    error_rate: f64,
    latency_seconds: Option<Quantiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exemplars: Option<Vec<ExemplarView>>,
}

/// An edge: calls from `source` to `target`.
#[derive(Serialize, Debug)]
struct EdgeView {
    id: String,
    source: Box<str>,
    target: Box<str>,
    connection_type: &'static str,
    requests: u64,
    requests_per_second: f64,
    failed: u64,
    error_rate: f64,
    client_latency_seconds: Option<Quantiles>,
    server_latency_seconds: Option<Quantiles>,
    network_latency_seconds: Option<Quantiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exemplars: Option<Vec<ExemplarView>>,
}

/// Interpolated percentiles of a latency histogram, in seconds.
#[derive(Serialize, Debug, Clone, Copy)]
struct Quantiles {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

/// One exemplar call.
#[derive(Serialize, Debug)]
struct ExemplarView {
    trace_id: Hex<16>,
    span_id: Hex<8>,
    duration_seconds: f64,
    failed: bool,
    timestamp: Timestamp,
}

/// Bytes written as lowercase hex without an intermediate string.
#[derive(Debug, Clone, Copy)]
struct Hex<const N: usize>([u8; N]);

impl<const N: usize> std::fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Unix nanoseconds written as an RFC 3339 UTC timestamp with milliseconds
/// (`2024-05-01T12:00:00.000Z`).
#[derive(Debug, Clone, Copy)]
struct Timestamp(u64);

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0 / 1_000_000;
        let secs = ms / 1000;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            ms % 1000
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Grafana's node graph panel data: `{"nodes": [...], "edges": [...]}`, one row per node and
/// edge with the panel's field names, so a JSON data source (e.g. Infinity with root `nodes` /
/// `edges`) feeds the panel directly.
///
/// Nodes: `id`; `title` the service name; `subtitle` the namespace, else the kind
/// (`service`, `database`, `messaging`, `virtual`, `user`); `mainstat` requests per second
/// served; `secondarystat` p95 latency in milliseconds (null without a measured request);
/// `arc__success` and `arc__failed` the success and error fractions of the requests served,
/// summing to 1 (1 and 0 for a node that served nothing); `detail__*` fields shown when the
/// node is clicked. Edges: `id` (`source->target`), `source`, `target` (node ids);
/// `mainstat` requests per second; `secondarystat` p95 server latency in milliseconds, or
/// the client's p95 for edges without a server span (virtual nodes, databases, messaging);
/// `detail__*` fields. Every row carries every field (null where unknown), so the data
/// frame's columns do not depend on the first row.
#[derive(Serialize, Debug)]
pub struct NodeGraph<'a> {
    nodes: Vec<NodeGraphNode<'a>>,
    edges: Vec<NodeGraphEdge<'a>>,
}

/// A node row of [`NodeGraph`].
#[derive(Serialize, Debug)]
struct NodeGraphNode<'a> {
    id: &'a str,
    title: &'a str,
    subtitle: &'a str,
    mainstat: f64,
    secondarystat: Option<f64>,
    #[serde(rename = "arc__success")]
    arc_success: f64,
    #[serde(rename = "arc__failed")]
    arc_failed: f64,
    #[serde(rename = "detail__kind")]
    detail_kind: &'a str,
    #[serde(rename = "detail__namespace")]
    detail_namespace: Option<&'a str>,
    #[serde(rename = "detail__requests")]
    detail_requests: u64,
    #[serde(rename = "detail__failed")]
    detail_failed: u64,
    #[serde(rename = "detail__error_rate")]
    detail_error_rate: f64,
    #[serde(rename = "detail__p50_ms")]
    detail_p50_ms: Option<f64>,
    #[serde(rename = "detail__p99_ms")]
    detail_p99_ms: Option<f64>,
}

/// An edge row of [`NodeGraph`].
#[derive(Serialize, Debug)]
struct NodeGraphEdge<'a> {
    id: &'a str,
    source: &'a str,
    target: &'a str,
    mainstat: f64,
    secondarystat: Option<f64>,
    #[serde(rename = "detail__connection_type")]
    detail_connection_type: &'a str,
    #[serde(rename = "detail__requests")]
    detail_requests: u64,
    #[serde(rename = "detail__failed")]
    detail_failed: u64,
    #[serde(rename = "detail__error_rate")]
    detail_error_rate: f64,
    #[serde(rename = "detail__client_p95_ms")]
    detail_client_p95_ms: Option<f64>,
    #[serde(rename = "detail__server_p95_ms")]
    detail_server_p95_ms: Option<f64>,
    #[serde(rename = "detail__network_p95_ms")]
    detail_network_p95_ms: Option<f64>,
}

/// Reshapes a topology into Grafana's node graph panel data.
pub(crate) fn nodegraph(view: &View) -> NodeGraph<'_> {
    let ms = |q: Option<Quantiles>, pick: fn(&Quantiles) -> Option<f64>| {
        q.as_ref().and_then(pick).map(|s| s * 1000.0)
    };
    let nodes = view
        .nodes
        .iter()
        .map(|n| {
            let error_rate = n.error_rate.clamp(0.0, 1.0);
            NodeGraphNode {
                id: &n.id,
                title: &n.name,
                subtitle: n.namespace.as_deref().unwrap_or(n.kind),
                mainstat: n.requests_per_second,
                secondarystat: ms(n.latency_seconds, |q| q.p95),
                arc_success: 1.0 - error_rate,
                arc_failed: error_rate,
                detail_kind: n.kind,
                detail_namespace: n.namespace.as_deref(),
                detail_requests: n.requests,
                detail_failed: n.failed,
                detail_error_rate: n.error_rate,
                detail_p50_ms: ms(n.latency_seconds, |q| q.p50),
                detail_p99_ms: ms(n.latency_seconds, |q| q.p99),
            }
        })
        .collect();
    let edges = view
        .edges
        .iter()
        .map(|e| {
            let p95 = if e.server_latency_seconds.is_none() {
                e.client_latency_seconds
            } else {
                e.server_latency_seconds
            };
            NodeGraphEdge {
                id: &e.id,
                source: &e.source,
                target: &e.target,
                mainstat: e.requests_per_second,
                secondarystat: ms(p95, |q| q.p95),
                detail_connection_type: e.connection_type,
                detail_requests: e.requests,
                detail_failed: e.failed,
                detail_error_rate: e.error_rate,
                detail_client_p95_ms: ms(e.client_latency_seconds, |q| q.p95),
                detail_server_p95_ms: ms(e.server_latency_seconds, |q| q.p95),
                detail_network_p95_ms: ms(e.network_latency_seconds, |q| q.p95),
            }
        })
        .collect();
    NodeGraph { nodes, edges }
}

/// `unix_ns` as an RFC 3339 UTC timestamp with milliseconds (`2024-05-01T12:00:00.000Z`).
#[cfg(test)]
pub(crate) fn rfc3339(unix_ns: u64) -> String {
    Timestamp(unix_ns).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_714_564_800_123_000_000),
            "2024-05-01T12:00:00.123Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn window_parameter_is_checked_and_capped() {
        let q = |w: &str| BTreeMap::from([("window".to_string(), w.to_string())]);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            parse_window(&BTreeMap::new(), hour).unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            parse_window(&q("30s"), hour).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(parse_window(&q("1d"), hour).unwrap(), hour);
        let e = parse_window(&q("five"), hour).unwrap_err();
        assert!(e.contains("`window`") && e.contains("five"), "{e}");
        assert!(
            parse_window(&q("0s"), hour)
                .unwrap_err()
                .contains("`window`")
        );
    }

    #[test]
    fn query_parameters_are_checked_by_name() {
        let q = |pairs: &[(&str, &str)]| {
            let m: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            parse_query(&m, Duration::from_secs(3600))
        };
        let all = q(&[]).unwrap();
        assert_eq!(
            all,
            Query {
                window: Duration::from_secs(300),
                format: Format::Json,
                exemplars: true,
                node: None,
            }
        );
        let some = q(&[
            ("window", "1m"),
            ("format", "nodegraph"),
            ("exemplars", "false"),
            ("node", "reviews.default"),
            ("component", "servicegraph/x"),
        ])
        .unwrap();
        assert_eq!(some.window, Duration::from_secs(60));
        assert_eq!(some.format, Format::NodeGraph);
        assert!(!some.exemplars);
        assert_eq!(some.node.as_deref(), Some("reviews.default"));
        assert!(q(&[("exemplars", "0")]).is_ok_and(|q| !q.exemplars));
        assert!(q(&[("exemplars", "1")]).is_ok_and(|q| q.exemplars));
        for (pairs, want) in [
            (
                &[("exemplar", "false")][..],
                "unknown parameter `exemplar`; the topology API takes `window`, `format`, `exemplars`, `node` and `component`",
            ),
            (
                &[("exemplars", "no")][..],
                "invalid `exemplars` parameter `no`; write `true` or `false`",
            ),
            (&[("node", "")][..], "invalid `node` parameter: it is empty"),
            (&[("window", "0s")][..], "invalid `window` parameter"),
            (
                &[("format", "csv")][..],
                "unsupported `format` parameter `csv`",
            ),
        ] {
            let e = q(pairs).unwrap_err();
            assert!(e.contains(want), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn ids_and_times_are_written_without_detours() {
        assert_eq!(
            serde_json::to_string(&Hex([0xab, 0x01, 0xff])).unwrap(),
            "\"ab01ff\""
        );
        assert_eq!(
            serde_json::to_string(&Timestamp(1_714_564_800_123_000_000)).unwrap(),
            "\"2024-05-01T12:00:00.123Z\""
        );
    }

    #[test]
    fn format_parameter_names_the_accepted_values() {
        let q = |f: &str| BTreeMap::from([("format".to_string(), f.to_string())]);
        assert_eq!(parse_format(&BTreeMap::new()), Ok(Format::Json));
        assert_eq!(parse_format(&q("json")), Ok(Format::Json));
        assert_eq!(parse_format(&q("nodegraph")), Ok(Format::NodeGraph));
        let e = parse_format(&q("dot")).unwrap_err();
        assert!(
            e.contains("`format`") && e.contains("`dot`") && e.contains("`json`"),
            "{e}"
        );
        assert!(e.contains("`nodegraph`"), "{e}");
        assert!(parse_format(&q("NodeGraph")).is_err(), "values are exact");
    }

    #[test]
    fn network_latency_is_client_minus_server_clamped_and_only_for_pairs() {
        let o = |client, server| Observation {
            client,
            server,
            failed: false,
            weight: 1,
            call: Key::new(&[1; 16], &[2; 8]).expect("valid ids"),
        };
        assert_eq!(o(Some(0.5), Some(0.125)).network(), Some(0.375));
        assert_eq!(o(Some(0.1), Some(0.3)).network(), Some(0.0));
        assert_eq!(o(Some(0.1), None).network(), None);
        assert_eq!(o(None, Some(0.1)).network(), None);

        let bounds = [0.01, 0.1, 1.0];
        let mut t = Topology::new(Duration::from_secs(60), Duration::from_secs(10));
        t.record(1, 2, class::PAIRED, &o(Some(0.5), Some(0.125)), &bounds, 0);
        t.record(1, 2, class::PAIRED, &o(Some(0.1), Some(0.3)), &bounds, 0);
        t.record(1, 3, class::VIRTUAL, &o(Some(0.1), None), &bounds, 0);
        let b = &t.edges[&(1, 2)][0];
        assert_eq!(b.network.count, 2);
        assert_eq!(b.network.sum, 0.375);
        assert_eq!(&*b.network.counts, &[1, 0, 1, 0]);
        assert_eq!(t.edges[&(1, 3)][0].network.count, 0);
    }

    #[test]
    fn buckets_are_trimmed_to_the_retention() {
        let mut t = Topology::new(Duration::from_secs(60), Duration::from_secs(10));
        let o = Observation {
            client: Some(0.1),
            server: None,
            failed: false,
            weight: 1,
            call: Key::new(&[1; 16], &[2; 8]).expect("valid ids"),
        };
        for s in 0..200u64 {
            t.record(1, 2, class::VIRTUAL, &o, &[1.0], s * 1_000_000_000);
        }
        assert!(t.edges[&(1, 2)].len() as u64 <= t.keep);
        t.trim(10_000 * 1_000_000_000);
        assert_eq!(t.len(), 0);
    }
}
