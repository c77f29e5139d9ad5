//! The service graph itself: reads spans, pairs callers with callees through the pairing
//! store (`store.rs`), and keeps one cumulative series per edge (client side, server side,
//! connection type) plus the topology buckets, both fed by the same observations.
//!
//! A plain struct with the clock passed in, so tests and benchmarks drive it directly; the
//! engine connector in `mod.rs` wraps it.
//!
//! How each span is read (the shared contract, `semantics.md`):
//! - CLIENT/PRODUCER spans are callers, keyed by their own id; SERVER/CONSUMER spans are
//!   callees, keyed by their parent id (a Zipkin shared span by its own id). The first half
//!   to arrive waits in the store, the second completes the pair: one edge observation.
//! - Hops inside one workload are not edges: a Linkerd CLIENT with `direction=inbound` or
//!   SERVER with `direction=outbound`, a CLIENT whose child is a CLIENT (an application's
//!   client span wrapping its sidecar's), a SERVER whose parent is a SERVER (an
//!   application's server span inside its sidecar's). The partner such a local hop would
//!   pair with is a local hop too. Parent-child facts are learnt from the request itself
//!   when both spans are in it, else from a *marker* the child leaves in the store for a
//!   parent still to come. A marker only applies to a caller of the child's own node.
//! - A root SERVER/CONSUMER span is an edge from `user` at once. After `store.ttl`, a caller
//!   with a peer attribute is an edge to a virtual node; any other half is counted expired.
//!
//!   A proxy's SERVER span (`component=proxy`) leaves a marker under its own id for an
//!   application SERVER child that may arrive in a later request.
//!
//! Known limits, none of which adds or loses an edge request:
//! - Under Zipkin shared ids, an application SERVER span (a child of the shared id) that
//!   arrives while the client waits and before the shared SERVER span pairs with the client
//!   in its place: the request is counted once, with the application's server latency.
//! - "Intra-workload" needs both spans to name the same node: an SDK whose `service.name`
//!   differs from its sidecar's identity (see `identity`) makes its client spans virtual
//!   edges. For the same reason a Zipkin-shared self-call (`a -> a`) whose server makes a
//!   further call before the client span arrives is taken for a local hop.

use super::config::{ServiceGraphConfig, SpanSelection};
use super::hash::FastMap;
use super::identity::{self, KeyTable, NodeId, Nodes, SideId, Sides, Slots, USER_NODE, View};
use super::store::{Conn, Entry, Expired, Half, Key, Marker, Store};
use super::topology::{Observation, Topology, class};
use crate::histogram::ExplicitHistogram;
use meshgate_pdata::attributes::kv_str;
use meshgate_pdata::otlp::{
    ExportMetricsServiceRequest, ExportTraceServiceRequest, HistogramDataPoint,
    InstrumentationScope, KeyValue, Metric, NumberDataPoint, Resource, ResourceMetrics,
    ScopeMetrics, Span, any_value, metric, number_data_point, span::SpanKind,
};
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `traces_service_graph_request_total`.
pub const REQUEST_TOTAL: &str = "traces_service_graph_request_total";
/// `traces_service_graph_request_failed_total`.
pub const REQUEST_FAILED_TOTAL: &str = "traces_service_graph_request_failed_total";
/// `traces_service_graph_request_server_seconds`.
pub const REQUEST_SERVER_SECONDS: &str = "traces_service_graph_request_server_seconds";
/// `traces_service_graph_request_client_seconds`.
pub const REQUEST_CLIENT_SECONDS: &str = "traces_service_graph_request_client_seconds";
/// `traces_service_graph_request_network_seconds`: meshgate's addition, not a Tempo or
/// OpenTelemetry Collector metric. The network latency of paired calls: client span duration
/// minus server span duration, clamped at 0; same labels and buckets as the others, only on
/// paired series (`connection_type=""`).
pub const REQUEST_NETWORK_SECONDS: &str = "traces_service_graph_request_network_seconds";
/// The data-point attribute naming the gateway instance (shared with `spanmetrics`).
pub const INSTANCE_ID_ATTRIBUTE: &str = "meshgate.instance.id";
/// `service.name` of the emitted resource, so Prometheus gives the series `job="meshgate"`.
pub const RESOURCE_SERVICE_NAME: &str = "meshgate";
/// Instrumentation scope of the emitted metrics (`otel_scope_name` in Prometheus).
pub const SCOPE_NAME: &str = "meshgate/servicegraph";

/// OTLP `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: i32 = 2;

/// What happened to the spans read, cumulative since start. Every span read ends up in
/// exactly one outcome once it left the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Spans that formed a pair (two per edge observation).
    pub paired: u64,
    /// Root SERVER/CONSUMER spans, edges from `user`.
    pub user: u64,
    /// Unpaired callers that became edges to a virtual node.
    pub virtual_node: u64,
    /// Hops inside one workload (sidecar/application interleaving, Linkerd local hops).
    pub intra_workload: u64,
    /// Halves that found no partner within the TTL and named no peer.
    pub expired: u64,
    /// Spans refused because the store was full.
    pub dropped: u64,
    /// Spans that are no edge end: INTERNAL, non-proxy in proxy mode, invalid ids, or a
    /// duplicate of a half already waiting.
    pub skipped: u64,
    /// Edge series forgotten after `metrics_expiration` without a request.
    pub series_expired: u64,
    /// Intra-workload markers not stored because their map was full.
    pub markers_dropped: u64,
}

/// An edge series: both sides (with their dimension values) and the connection type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct SeriesKey {
    client: SideId,
    server: SideId,
    conn: Conn,
}

/// Cumulative state of one edge series.
struct Series {
    start: u64,
    last: u64,
    total: u64,
    failed: u64,
    client: Option<ExplicitHistogram>,
    server: Option<ExplicitHistogram>,
    /// Client minus server duration, for paired calls only.
    network: Option<ExplicitHistogram>,
}

/// Facts about a span id learnt from the request being read.
#[derive(Clone, Copy, Default)]
struct Local {
    bits: u8,
    /// With [`CALLER_LOCAL`]: the node of the child that made the caller local.
    node: NodeId,
}
/// A span with this id is in the request.
const PRESENT: u8 = 1;
/// ... and it is a SERVER span.
const IS_SERVER: u8 = 2;
/// ... and it has been handled already.
const PROCESSED: u8 = 4;
/// A child of this id says a CLIENT span with this id is intra-workload.
const CALLER_LOCAL: u8 = 8;
/// The CLIENT span with this id was found intra-workload: so is its callee.
const INTRA_CALLER: u8 = 16;

/// The service graph: pairing store, edge series, topology buckets and their interners.
pub struct ServiceGraph {
    bounds: Vec<f64>,
    client_labels: Vec<String>,
    server_labels: Vec<String>,
    ttl: u64,
    expiration: u64,
    instance_id: Option<String>,
    proxy_only: bool,
    keys: KeyTable,
    slots: Slots,
    nodes: Nodes,
    sides: Sides,
    user_side: SideId,
    store: Store,
    series: FastMap<SeriesKey, Series>,
    topology: Topology,
    stats: Stats,
    local: FastMap<Key, Local>,
    span_idx: Vec<u32>,
    res_idx: Vec<u32>,
    expired: Expired,
    no_dims: Vec<Option<Cow<'static, str>>>,
}

/// Unix nanoseconds of `t` (0 before the epoch).
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl ServiceGraph {
    /// A graph configured by `cfg` (which is validated here too).
    pub fn new(cfg: &ServiceGraphConfig) -> Result<ServiceGraph, String> {
        cfg.validate()?;
        let mut keys = KeyTable::default();
        let slots = Slots::new(cfg, &mut keys);
        let nodes = Nodes::new();
        let mut sides = Sides::new();
        let no_dims: Vec<Option<Cow<'static, str>>> = vec![None; cfg.dimensions.len()];
        let user_side = sides.intern(USER_NODE, &no_dims);
        Ok(ServiceGraph {
            bounds: cfg.bounds_seconds(),
            client_labels: cfg
                .dimensions
                .iter()
                .map(|d| format!("client_{d}"))
                .collect(),
            server_labels: cfg
                .dimensions
                .iter()
                .map(|d| format!("server_{d}"))
                .collect(),
            ttl: cfg.store.ttl.0.as_nanos() as u64,
            expiration: cfg.metrics_expiration.0.as_nanos() as u64,
            instance_id: cfg.effective_instance_id(),
            proxy_only: cfg.spans == SpanSelection::Proxy,
            keys,
            slots,
            nodes,
            sides,
            user_side,
            store: Store::new(cfg.store.max_items),
            series: FastMap::default(),
            topology: Topology::new(cfg.topology.retention.0, cfg.topology.resolution.0),
            stats: Stats::default(),
            local: FastMap::default(),
            span_idx: Vec::new(),
            res_idx: Vec::new(),
            expired: Expired::default(),
            no_dims,
        })
    }

    /// The outcome counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Entries with spans waiting in the pairing store.
    pub fn store_len(&self) -> usize {
        self.store.len()
    }

    /// Intra-workload markers held (see [`crate::servicegraph::graph`]).
    pub fn markers_len(&self) -> usize {
        self.store.markers_len()
    }

    /// Live edge series.
    pub fn series_len(&self) -> usize {
        self.series.len()
    }

    /// Sizes of what grows with traffic besides the store and the series: interned nodes,
    /// interned sides, node pairs with topology buckets (tests prove they stay bounded).
    pub fn interned_len(&self) -> (usize, usize, usize) {
        (self.nodes.len(), self.sides.len(), self.topology.len())
    }

    /// The longest window the topology answers.
    pub fn topology_retention(&self) -> Duration {
        self.topology.retention()
    }

    /// Reads every span of `req`, seen at `now`.
    pub fn consume(&mut self, req: &ExportTraceServiceRequest, now: SystemTime) {
        let now = unix_nanos(now);
        self.index(req);
        let mut span_idx = std::mem::take(&mut self.span_idx);
        let mut res_idx = std::mem::take(&mut self.res_idx);
        let mut dims: Vec<Option<Cow<'_, str>>> = Vec::with_capacity(self.client_labels.len());
        for rs in &req.resource_spans {
            let res: &[KeyValue] = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            self.keys.scan(res, &mut res_idx);
            let mut res_node = None;
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
                    let role = match kind {
                        SpanKind::Client | SpanKind::Producer => Role::Caller,
                        SpanKind::Server | SpanKind::Consumer => Role::Callee,
                        _ => {
                            self.skip(span);
                            continue;
                        }
                    };
                    self.keys.scan(&span.attributes, &mut span_idx);
                    let view = View {
                        span: &span.attributes,
                        span_idx: &span_idx,
                        res,
                        res_idx: &res_idx,
                    };
                    self.span(span, kind, role, &view, &mut res_node, &mut dims, now);
                }
            }
        }
        self.span_idx = span_idx;
        self.res_idx = res_idx;
        self.local.clear();
        if self.local.capacity() > 65_536 {
            // One huge request must not pin its index forever.
            self.local.shrink_to(4096);
        }
    }

    /// Expires what waited longer than the TTL at `now`: callers with a peer become edges to
    /// virtual nodes, the rest is counted expired.
    pub fn expire(&mut self, now: SystemTime) {
        self.expire_at(unix_nanos(now), false);
    }

    /// Treats everything still waiting as expired: at shutdown, after the upstream pipelines
    /// drained, no partner can come any more.
    pub fn expire_all(&mut self, now: SystemTime) {
        self.expire_at(unix_nanos(now), true);
    }

    /// The cumulative edge metrics at `now`. Also forgets series idle for longer than
    /// `metrics_expiration`, drops topology buckets past the retention and frees interned
    /// names nothing refers to any more. Empty (no `resource_metrics`) when there is no edge.
    pub fn collect(&mut self, now: SystemTime) -> ExportMetricsServiceRequest {
        let now = unix_nanos(now);
        if self.expiration > 0 {
            let before = self.series.len();
            let exp = self.expiration;
            self.series.retain(|_, s| now.saturating_sub(s.last) < exp);
            self.stats.series_expired += (before - self.series.len()) as u64;
        }
        self.topology.trim(now);
        self.sweep();
        if self.series.is_empty() {
            return ExportMetricsServiceRequest::default();
        }
        self.build_metrics(now)
    }

    /// The topology `q` asks for at `now`, for the API to serialise once the graph's lock
    /// is released; `Err` names an unknown `q.node`.
    pub fn topology_view(
        &self,
        q: &super::topology::Query,
        now: SystemTime,
    ) -> Result<super::topology::View, String> {
        let q = super::topology::Query {
            window: q.window.min(self.topology.retention()),
            ..q.clone()
        };
        self.topology
            .query(&q, unix_nanos(now), &self.nodes, &self.bounds)
    }

    /// The whole topology over `window` at `now` as JSON, for tests.
    #[cfg(test)]
    pub(crate) fn topology(&self, window: Duration, now: SystemTime) -> serde_json::Value {
        let q = super::topology::Query {
            window,
            format: super::topology::Format::Json,
            exemplars: true,
            node: None,
        };
        serde_json::to_value(self.topology_view(&q, now).expect("no node filter"))
            .expect("serialisable")
    }

    // ----- reading spans ------------------------------------------------------------------

    /// First pass over a request: which span ids it holds and which are SERVER spans, so
    /// parent/child rules between spans of one request need no store traffic.
    fn index(&mut self, req: &ExportTraceServiceRequest) {
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    if let Some(k) = Key::new(&span.trace_id, &span.span_id) {
                        let l = self.local.entry(k).or_default();
                        l.bits |= PRESENT;
                        if span.kind == SpanKind::Server as i32 {
                            l.bits |= IS_SERVER;
                        }
                    }
                }
            }
        }
    }

    /// A span that is no edge end; it may still clear a marker its child left for it.
    fn skip(&mut self, span: &Span) {
        self.stats.skipped += 1;
        if self.store.has_markers()
            && let Some(k) = Key::new(&span.trace_id, &span.span_id)
        {
            self.store.take_marker(&k);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn span<'a>(
        &mut self,
        span: &'a Span,
        kind: SpanKind,
        role: Role,
        view: &View<'a, '_>,
        res_node: &mut Option<NodeId>,
        dims: &mut Vec<Option<Cow<'a, str>>>,
        now: u64,
    ) {
        let Some(own) = Key::new(&span.trace_id, &span.span_id) else {
            self.stats.skipped += 1;
            return;
        };
        let parent = if span.parent_span_id.is_empty() || span.parent_span_id == [0; 8] {
            None
        } else {
            match Key::new(&span.trace_id, &span.parent_span_id) {
                Some(k) => Some(k),
                None => {
                    self.stats.skipped += 1;
                    return;
                }
            }
        };
        if self.proxy_only
            && !view.is(self.slots.component, "proxy")
            && view.value(self.slots.direction).is_none()
        {
            self.skip(span);
            return;
        }
        match role {
            Role::Caller => self.caller(span, kind, own, parent, view, res_node, dims, now),
            Role::Callee => self.callee(span, kind, own, parent, view, res_node, dims, now),
        }
        if let Some(l) = self.local.get_mut(&own) {
            l.bits |= PROCESSED;
        }
    }

    /// The node of the span in `view`, from the resource's cache when the span itself
    /// carries no identity attribute.
    fn node_of(&mut self, view: &View<'_, '_>, res_node: &mut Option<NodeId>) -> NodeId {
        let own =
            view.span_has_any(&self.slots.service) || view.span_has_any(&self.slots.namespace);
        if !own && let Some(n) = *res_node {
            return n;
        }
        let (name, ns) = identity::identity(view, &self.slots);
        let n = self.nodes.intern(&name, ns.as_deref());
        if !own {
            *res_node = Some(n);
        }
        n
    }

    fn side_of<'a>(
        &mut self,
        node: NodeId,
        view: &View<'a, '_>,
        dims: &mut Vec<Option<Cow<'a, str>>>,
    ) -> SideId {
        dims.clear();
        dims.extend(self.slots.dims.iter().map(|s| view.text(*s)));
        self.sides.intern(node, dims)
    }

    fn half(&self, span: &Span, side: SideId, rpc: bool, shared: bool, now: u64) -> Half {
        let d = span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano);
        Half {
            side,
            duration: d as f64 / 1e9,
            // Sampling-adjusted count (`ot=th:` in the trace state), 1 without one.
            weight: if span.trace_state.is_empty() {
                1
            } else {
                meshgate_pdata::sampling::weight(&span.trace_state, &span.span_id)
            },
            expires: now.saturating_add(self.ttl),
            peer: None,
            conn: Conn::Virtual,
            failed: meshgate_pdata::mesh::is_failed(span),
            rpc,
            shared,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn caller<'a>(
        &mut self,
        span: &'a Span,
        kind: SpanKind,
        own: Key,
        parent: Option<Key>,
        view: &View<'a, '_>,
        res_node: &mut Option<NodeId>,
        dims: &mut Vec<Option<Cow<'a, str>>>,
        now: u64,
    ) {
        let client = kind == SpanKind::Client;
        let node = self.node_of(view, res_node);
        let local = self.local.get(&own).copied().unwrap_or_default();
        // A marker under this id is consumed whatever it says.
        let marker = self.store.take_marker(&own);
        let intra = client
            && (view.is(self.slots.direction, "inbound")
                || (local.bits & CALLER_LOCAL != 0 && local.node == node)
                || marker.is_some_and(|m| !m.server && m.node == node));
        let half = if intra {
            None
        } else {
            let side = self.side_of(node, view, dims);
            Some(self.half(span, side, client, false, now))
        };
        let mut partner = None;
        match self.store.get_mut(&own) {
            Some(e) => {
                match half {
                    None => {
                        if e.callee.take().is_some() {
                            // The callee of a local hop is a local hop too.
                            self.stats.intra_workload += 1;
                        }
                    }
                    Some(h) => {
                        if let Some(c) = e.callee.take() {
                            partner = Some(c);
                        } else if e.caller.is_some() {
                            self.stats.skipped += 1;
                        } else {
                            let mut h = h;
                            self.fill_peer(&mut h, kind, view);
                            if let Some(e) = self.store.get_mut(&own) {
                                e.caller = Some(h);
                            }
                        }
                    }
                }
                self.store.settle(&own);
            }
            None => {
                if let Some(mut h) = half {
                    self.fill_peer(&mut h, kind, view);
                    let entry = Entry {
                        caller: Some(h),
                        callee: None,
                    };
                    if self.store.insert(own, entry).is_err() {
                        self.stats.dropped += 1;
                    }
                }
            }
        }
        if intra {
            self.stats.intra_workload += 1;
            if let Some(l) = self.local.get_mut(&own) {
                l.bits |= INTRA_CALLER;
            }
        }
        if let (Some(h), Some(c)) = (half, partner) {
            self.pair(own, &h, &c, now);
        }
        if client && let Some(p) = parent {
            // A CLIENT whose child is a CLIENT is an application's span around its sidecar's:
            // tell the parent.
            self.mark_caller_local(p, node, now);
        }
    }

    /// The virtual peer of a caller that is about to wait.
    fn fill_peer(&mut self, h: &mut Half, kind: SpanKind, view: &View<'_, '_>) {
        h.peer = identity::peer_node(view, &self.slots, &mut self.nodes);
        h.conn = if view.value(self.slots.db_system).is_some() {
            Conn::Database
        } else if kind == SpanKind::Producer || view.value(self.slots.messaging_system).is_some() {
            Conn::Messaging
        } else {
            Conn::Virtual
        };
    }

    /// The CLIENT span with key `p`, if of `node`, is a hop inside the workload: silence it
    /// now if it waits, or leave a note for when it comes.
    fn mark_caller_local(&mut self, p: Key, node: NodeId, now: u64) {
        let mut handled_here = false;
        if let Some(l) = self.local.get_mut(&p)
            && l.bits & PRESENT != 0
        {
            if l.bits & PROCESSED == 0 {
                if l.bits & CALLER_LOCAL == 0 {
                    l.bits |= CALLER_LOCAL;
                    l.node = node;
                }
                return;
            }
            // Handled earlier in this request: if it was a caller it waits in the store.
            handled_here = true;
        }
        if let Some(e) = self.store.get_mut(&p)
            && let Some(c) = e.caller
        {
            if c.rpc && self.sides.node(c.side) == node {
                e.caller = None;
                self.stats.intra_workload += 1;
                self.store.settle(&p);
            }
            return;
        }
        if !handled_here {
            let marker = Marker {
                expires: now.saturating_add(self.ttl),
                node,
                server: false,
            };
            if self.store.add_marker(p, marker).is_err() {
                self.stats.markers_dropped += 1;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn callee<'a>(
        &mut self,
        span: &'a Span,
        kind: SpanKind,
        own: Key,
        parent: Option<Key>,
        view: &View<'a, '_>,
        res_node: &mut Option<NodeId>,
        dims: &mut Vec<Option<Cow<'a, str>>>,
        now: u64,
    ) {
        let server = kind == SpanKind::Server;
        let shared = view.is_true(self.slots.zipkin_shared);
        // What waits under this span's own id: a marker from a CLIENT child (moot: this is no
        // CLIENT; for a shared span, the CLIENT child is the server side's), or an
        // application SERVER span whose parent is this one.
        self.store.take_marker(&own);
        if !shared
            && server
            && let Some(e) = self.store.get_mut(&own)
            && e.callee.is_some_and(|d| !d.shared)
        {
            e.callee = None;
            self.stats.intra_workload += 1;
            self.store.settle(&own);
        }
        if server && view.is(self.slots.direction, "outbound") {
            // Linkerd's outbound SERVER span receives from its own application.
            self.stats.intra_workload += 1;
            if let Some(p) = parent {
                let node = self.node_of(view, res_node);
                self.mark_caller_local(p, node, now);
            }
            return;
        }
        let node = self.node_of(view, res_node);
        if !shared && server {
            if let Some(p) = parent
                && self.store.has_markers()
                && let Some(m) = self.store.take_marker(&p)
            {
                if m.server && m.node == node {
                    // An application SERVER span inside its sidecar's, which came earlier.
                    self.stats.intra_workload += 1;
                    return;
                }
                // Not ours to consume (a CLIENT child's note for its parent): put it back.
                let _ = self.store.add_marker(p, m);
            }
            if view.is(self.slots.component, "proxy") {
                let marker = Marker {
                    expires: now.saturating_add(self.ttl),
                    node,
                    server: true,
                };
                if self.store.add_marker(own, marker).is_err() {
                    self.stats.markers_dropped += 1;
                }
            }
        }
        let key = match (shared, parent) {
            (true, _) => own,
            (false, Some(p)) => p,
            (false, None) => {
                let side = self.side_of(node, view, dims);
                let h = self.half(span, side, server, false, now);
                let obs = Observation {
                    client: None,
                    server: Some(h.duration),
                    failed: h.failed,
                    weight: h.weight,
                    call: own,
                };
                self.record(self.user_side, side, Conn::Virtual, class::USER, &obs, now);
                self.stats.user += 1;
                return;
            }
        };
        if !shared {
            let bits = self.local.get(&key).map_or(0, |l| l.bits);
            // An application SERVER span inside its sidecar's, both in this request; or the
            // callee of a caller already found to be a local hop.
            if (server && bits & (PRESENT | IS_SERVER) == PRESENT | IS_SERVER)
                || bits & INTRA_CALLER != 0
            {
                self.stats.intra_workload += 1;
                return;
            }
        }
        let side = self.side_of(node, view, dims);
        let h = self.half(span, side, server, shared, now);
        let mut partner = None;
        match self.store.get_mut(&key) {
            Some(e) => {
                let mut take = true;
                if let Some(existing) = e.callee {
                    if existing.shared && !shared && server {
                        // Its parent is the shared SERVER span: a hop inside the workload.
                        self.stats.intra_workload += 1;
                        take = false;
                    } else if !existing.shared && shared {
                        e.callee = None;
                        self.stats.intra_workload += 1;
                    } else {
                        self.stats.skipped += 1;
                        take = false;
                    }
                }
                if take {
                    match e.caller.take() {
                        Some(c) => partner = Some(c),
                        None => e.callee = Some(h),
                    }
                }
                self.store.settle(&key);
            }
            None => {
                let entry = Entry {
                    caller: None,
                    callee: Some(h),
                };
                if self.store.insert(key, entry).is_err() {
                    self.stats.dropped += 1;
                }
            }
        }
        if let Some(c) = partner {
            self.pair(key, &c, &h, now);
        }
    }

    // ----- edges --------------------------------------------------------------------------

    /// Records the call `key` (trace id, caller's span id) once both its halves are known.
    fn pair(&mut self, key: Key, caller: &Half, callee: &Half, now: u64) {
        let obs = Observation {
            client: Some(caller.duration),
            server: Some(callee.duration),
            failed: caller.failed || callee.failed,
            weight: caller.weight,
            call: key,
        };
        self.record(
            caller.side,
            callee.side,
            Conn::Paired,
            class::PAIRED,
            &obs,
            now,
        );
        self.stats.paired += 2;
    }

    fn expire_at(&mut self, now: u64, all: bool) {
        let mut ex = std::mem::take(&mut self.expired);
        ex.callers.clear();
        ex.callees = 0;
        self.store.expire(now, all, &mut ex);
        self.stats.expired += ex.callees;
        for (key, c) in &ex.callers {
            let Some(peer) = c.peer else {
                self.stats.expired += 1;
                continue;
            };
            let server = self.sides.intern(peer, &self.no_dims);
            let obs = Observation {
                client: Some(c.duration),
                server: None,
                failed: c.failed,
                weight: c.weight,
                call: *key,
            };
            let cls = match c.conn {
                Conn::Database => class::DATABASE,
                Conn::Messaging => class::MESSAGING,
                _ => class::VIRTUAL,
            };
            self.record(c.side, server, c.conn, cls, &obs, now);
            self.stats.virtual_node += 1;
        }
        self.expired = ex;
    }

    /// Adds one observation to its series and to the topology.
    fn record(
        &mut self,
        client: SideId,
        server: SideId,
        conn: Conn,
        cls: u8,
        obs: &Observation,
        now: u64,
    ) {
        let key = SeriesKey {
            client,
            server,
            conn,
        };
        let s = self.series.entry(key).or_insert_with(|| Series {
            start: now,
            last: now,
            total: 0,
            failed: 0,
            client: None,
            server: None,
            network: None,
        });
        s.last = now;
        s.total += obs.weight;
        if obs.failed {
            s.failed += obs.weight;
        }
        let bounds = &self.bounds;
        if let Some(v) = obs.client {
            s.client
                .get_or_insert_with(|| ExplicitHistogram::new(bounds))
                .record(bounds, v, obs.weight);
        }
        if let Some(v) = obs.server {
            s.server
                .get_or_insert_with(|| ExplicitHistogram::new(bounds))
                .record(bounds, v, obs.weight);
        }
        if let Some(v) = obs.network() {
            s.network
                .get_or_insert_with(|| ExplicitHistogram::new(bounds))
                .record(bounds, v, obs.weight);
        }
        let (cn, sn) = (self.sides.node(client), self.sides.node(server));
        self.topology.record(cn, sn, cls, obs, &self.bounds, now);
    }

    /// Frees the sides and nodes no series, waiting half, marker or topology bucket uses.
    fn sweep(&mut self) {
        let mut side_marks = vec![false; self.sides.capacity()];
        let mut node_marks = vec![false; self.nodes.capacity()];
        side_marks[self.user_side as usize] = true;
        for k in self.series.keys() {
            side_marks[k.client as usize] = true;
            side_marks[k.server as usize] = true;
        }
        for h in self.store.halves() {
            side_marks[h.side as usize] = true;
            if let Some(p) = h.peer {
                node_marks[p as usize] = true;
            }
        }
        for n in self.store.marker_nodes().chain(self.topology.nodes()) {
            node_marks[n as usize] = true;
        }
        self.sides.sweep(&side_marks, &mut node_marks);
        self.nodes.sweep(&node_marks);
    }

    fn labels(&self, k: &SeriesKey) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(4 + 2 * self.client_labels.len());
        a.push(kv_str(
            "client",
            &self.nodes.get(self.sides.node(k.client)).id,
        ));
        a.push(kv_str(
            "server",
            &self.nodes.get(self.sides.node(k.server)).id,
        ));
        a.push(kv_str("connection_type", k.conn.as_str()));
        for (label, v) in self.client_labels.iter().zip(self.sides.dims(k.client)) {
            if let Some(v) = v {
                a.push(kv_str(label, v));
            }
        }
        for (label, v) in self.server_labels.iter().zip(self.sides.dims(k.server)) {
            if let Some(v) = v {
                a.push(kv_str(label, v));
            }
        }
        if let Some(i) = &self.instance_id {
            a.push(kv_str(INSTANCE_ID_ATTRIBUTE, i));
        }
        a
    }

    fn build_metrics(&self, now: u64) -> ExportMetricsServiceRequest {
        let mut rows: Vec<(Vec<KeyValue>, &Series)> = self
            .series
            .iter()
            .map(|(k, s)| (self.labels(k), s))
            .collect();
        rows.sort_by(|a, b| label_order(&a.0, &b.0));
        let counter = |name: &str, description: &str, value: fn(&Series) -> u64| Metric {
            name: name.into(),
            description: description.into(),
            unit: "{request}".into(),
            data: Some(metric::Data::Sum(meshgate_pdata::otlp::Sum {
                data_points: rows
                    .iter()
                    .map(|(attrs, s)| NumberDataPoint {
                        attributes: attrs.clone(),
                        start_time_unix_nano: s.start,
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsInt(value(s) as i64)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: CUMULATIVE,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let histogram =
            |name: &str, description: &str, side: fn(&Series) -> Option<&ExplicitHistogram>| {
                Metric {
                    name: name.into(),
                    description: description.into(),
                    unit: "s".into(),
                    data: Some(metric::Data::Histogram(meshgate_pdata::otlp::Histogram {
                        data_points: rows
                            .iter()
                            .filter_map(|(attrs, s)| {
                                let h = side(s)?;
                                Some(HistogramDataPoint {
                                    attributes: attrs.clone(),
                                    start_time_unix_nano: s.start,
                                    time_unix_nano: now,
                                    count: h.count,
                                    sum: Some(h.sum),
                                    bucket_counts: h.bucket_counts.clone(),
                                    explicit_bounds: self.bounds.clone(),
                                    min: (h.count > 0).then_some(h.min),
                                    max: (h.count > 0).then_some(h.max),
                                    ..Default::default()
                                })
                            })
                            .collect(),
                        aggregation_temporality: CUMULATIVE,
                    })),
                    ..Default::default()
                }
            };
        let mut metrics = vec![
            counter(
                REQUEST_TOTAL,
                "Requests between two services (client span paired with server span, or one \
                 side with a virtual node).",
                |s| s.total,
            ),
            counter(
                REQUEST_FAILED_TOTAL,
                "Requests between two services where either side failed.",
                |s| s.failed,
            ),
            histogram(
                REQUEST_SERVER_SECONDS,
                "Duration of the server span of requests between two services.",
                |s| s.server.as_ref(),
            ),
            histogram(
                REQUEST_CLIENT_SECONDS,
                "Duration of the client span of requests between two services.",
                |s| s.client.as_ref(),
            ),
            histogram(
                REQUEST_NETWORK_SECONDS,
                "Network latency of requests between two services: client span duration minus \
                 server span duration (at least 0), for paired calls only. A meshgate metric, \
                 not a Tempo one.",
                |s| s.network.as_ref(),
            ),
        ];
        metrics.retain(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => !h.data_points.is_empty(),
            _ => true,
        });
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", RESOURCE_SERVICE_NAME)],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }
}

#[derive(Clone, Copy)]
enum Role {
    Caller,
    Callee,
}

/// Orders series by their labels (client, server, connection type first), so the output is
/// deterministic.
fn label_order(a: &[KeyValue], b: &[KeyValue]) -> std::cmp::Ordering {
    fn text(kv: &KeyValue) -> (&str, &str) {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => (kv.key.as_str(), s.as_str()),
            _ => (kv.key.as_str(), ""),
        }
    }
    a.iter().map(text).cmp(b.iter().map(text))
}
