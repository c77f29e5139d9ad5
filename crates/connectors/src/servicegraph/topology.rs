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
use serde_json::{Value as Json, json};
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
fn pick_exemplars<'a>(candidates: impl Iterator<Item = &'a Exemplar>) -> Json {
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
    Json::Array(
        picked
            .into_iter()
            .map(|e| {
                json!({
                    "trace_id": hex::encode(e.call.trace),
                    "span_id": hex::encode(e.call.span),
                    "duration_seconds": e.latency,
                    "failed": e.failed,
                    "timestamp": rfc3339(e.at),
                })
            })
            .collect(),
    )
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

    /// The topology JSON over `window` (already capped to the retention) at `now`.
    pub(crate) fn query(&self, window: Duration, now: u64, nodes: &Nodes, bounds: &[f64]) -> Json {
        let window_ns = window.as_nanos() as u64;
        let window_s = window.as_secs_f64();
        let now_tick = now / self.res_ns;
        let from_tick = now.saturating_sub(window_ns).div_ceil(self.res_ns);
        let empty_hist = || ExplicitHistogram::new(bounds);

        struct NodeAgg {
            kind: u8,
            requests: u64,
            failed: u64,
            server: ExplicitHistogram,
            client: ExplicitHistogram,
            /// Exemplar candidates of the calls it served, and of those it made.
            served: Candidates,
            made: Candidates,
        }
        let mut node_aggs: BTreeMap<&str, (NodeId, NodeAgg)> = BTreeMap::new();
        let mut edges_json: BTreeMap<String, Json> = BTreeMap::new();
        for ((c, s), buckets) in &self.edges {
            let (mut classes, mut requests, mut failed) = (0u8, 0u64, 0u64);
            let (mut ch, mut sh, mut nh) = (empty_hist(), empty_hist(), empty_hist());
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
                candidates.add(&b.exemplars);
            }
            if classes == 0 {
                continue;
            }
            let (cn, sn) = (nodes.get(*c), nodes.get(*s));
            let conn = if classes & (class::PAIRED) != 0 {
                ""
            } else if classes & class::DATABASE != 0 {
                "database"
            } else if classes & class::MESSAGING != 0 {
                "messaging_system"
            } else {
                "virtual_node"
            };
            let id = format!("{}->{}", cn.id, sn.id);
            edges_json.insert(
                id.clone(),
                json!({
                    "id": id,
                    "source": &*cn.id,
                    "target": &*sn.id,
                    "connection_type": conn,
                    "requests": requests,
                    "requests_per_second": rate(requests, window_s),
                    "failed": failed,
                    "error_rate": ratio(failed, requests),
                    "client_latency_seconds": quantiles(&ch, bounds),
                    "server_latency_seconds": quantiles(&sh, bounds),
                    "network_latency_seconds": quantiles(&nh, bounds),
                    "exemplars": pick_exemplars(candidates.iter()),
                }),
            );
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
            let new_agg = |id: NodeId| {
                (
                    id,
                    NodeAgg {
                        kind: u8::MAX,
                        requests: 0,
                        failed: 0,
                        server: empty_hist(),
                        client: empty_hist(),
                        served: Candidates::default(),
                        made: Candidates::default(),
                    },
                )
            };
            let ca = &mut node_aggs.entry(&cn.id).or_insert_with(|| new_agg(*c)).1;
            ca.kind = ca.kind.min(client_kind);
            let sa = &mut node_aggs.entry(&sn.id).or_insert_with(|| new_agg(*s)).1;
            sa.kind = sa.kind.min(server_kind);
            sa.requests += requests;
            sa.failed += failed;
            sa.server.merge(&sh);
            sa.client.merge(&ch);
            merge_candidates(&mut sa.served, &candidates);
            let ca = &mut node_aggs.get_mut(&*cn.id).expect("inserted above").1;
            merge_candidates(&mut ca.made, &candidates);
        }
        let nodes_json: Vec<Json> = node_aggs
            .into_values()
            .map(|(id, a)| {
                let n = nodes.get(id);
                // A node's latency is how long it took to serve; peers nobody traced
                // inside (virtual nodes) are measured from their callers.
                let lat = if a.server.count > 0 {
                    quantiles(&a.server, bounds)
                } else {
                    quantiles(&a.client, bounds)
                };
                json!({
                    "id": &*n.id,
                    "name": &*n.name,
                    "namespace": n.namespace.as_deref(),
                    "kind": KIND_NAMES[a.kind.min(KIND_USER) as usize],
                    "requests": a.requests,
                    "requests_per_second": rate(a.requests, window_s),
                    "failed": a.failed,
                    "error_rate": ratio(a.failed, a.requests),
                    "latency_seconds": lat,
                    // What it served; a node that only calls (`user`) shows what it called.
                    "exemplars": if a.served.newest.is_empty() {
                        pick_exemplars(a.made.iter())
                    } else {
                        pick_exemplars(a.served.iter())
                    },
                })
            })
            .collect();
        json!({
            "window_seconds": window_s,
            "resolution_seconds": self.res_ns as f64 / 1e9,
            "generated_at": rfc3339(now),
            "nodes": nodes_json,
            "edges": edges_json.into_values().collect::<Vec<_>>(),
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

fn quantiles(h: &ExplicitHistogram, bounds: &[f64]) -> Json {
    if h.count == 0 {
        return Json::Null;
    }
    json!({
        "p50": h.quantile(bounds, 0.50),
        "p95": h.quantile(bounds, 0.95),
        "p99": h.quantile(bounds, 0.99),
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
pub(crate) enum Format {
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

/// Reshapes the topology JSON of [`Topology::query`] into Grafana's node graph panel data:
/// `{"nodes": [...], "edges": [...]}`, one row per node and edge with the panel's field names,
/// so a JSON data source (e.g. Infinity with root `nodes` / `edges`) feeds the panel directly.
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
pub(crate) fn nodegraph(topology: &Json) -> Json {
    let rows = |key: &str| topology[key].as_array().map_or(&[][..], Vec::as_slice);
    let nodes: Vec<Json> = rows("nodes")
        .iter()
        .map(|n| {
            let error_rate = n["error_rate"].as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
            let subtitle = match &n["namespace"] {
                Json::String(ns) => Json::String(ns.clone()),
                _ => n["kind"].clone(),
            };
            let lat = &n["latency_seconds"];
            json!({
                "id": n["id"],
                "title": n["name"],
                "subtitle": subtitle,
                "mainstat": n["requests_per_second"],
                "secondarystat": millis(&lat["p95"]),
                "arc__success": 1.0 - error_rate,
                "arc__failed": error_rate,
                "detail__kind": n["kind"],
                "detail__namespace": n["namespace"],
                "detail__requests": n["requests"],
                "detail__failed": n["failed"],
                "detail__error_rate": n["error_rate"],
                "detail__p50_ms": millis(&lat["p50"]),
                "detail__p99_ms": millis(&lat["p99"]),
            })
        })
        .collect();
    let edges: Vec<Json> = rows("edges")
        .iter()
        .map(|e| {
            let (client, server) = (&e["client_latency_seconds"], &e["server_latency_seconds"]);
            let p95 = if server.is_null() {
                &client["p95"]
            } else {
                &server["p95"]
            };
            json!({
                "id": e["id"],
                "source": e["source"],
                "target": e["target"],
                "mainstat": e["requests_per_second"],
                "secondarystat": millis(p95),
                "detail__connection_type": e["connection_type"],
                "detail__requests": e["requests"],
                "detail__failed": e["failed"],
                "detail__error_rate": e["error_rate"],
                "detail__client_p95_ms": millis(&client["p95"]),
                "detail__server_p95_ms": millis(&server["p95"]),
                "detail__network_p95_ms": millis(&e["network_latency_seconds"]["p95"]),
            })
        })
        .collect();
    json!({ "nodes": nodes, "edges": edges })
}

/// Seconds (a JSON number or null) as milliseconds.
fn millis(seconds: &Json) -> Json {
    seconds.as_f64().map_or(Json::Null, |s| json!(s * 1000.0))
}

/// `unix_ns` as an RFC 3339 UTC timestamp with milliseconds (`2024-05-01T12:00:00.000Z`).
pub(crate) fn rfc3339(unix_ns: u64) -> String {
    let ms = unix_ns / 1_000_000;
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
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
