//! `servicegraph`: the service topology derived from spans. It pairs each CLIENT/PRODUCER
//! span with the SERVER/CONSUMER span it called (across requests, in a store bounded by a TTL
//! and a size), and emits the Tempo / OpenTelemetry Collector edge metrics
//! (`traces_service_graph_request_total`, `..._failed_total`, `..._server_seconds`,
//! `..._client_seconds` with `client`, `server`, `connection_type` and configured
//! dimensions) into the metrics pipelines it feeds, plus meshgate's own
//! `traces_service_graph_request_network_seconds` (client minus server duration of paired
//! calls, not a Tempo metric). The same state answers `GET /api/v1/topology?window=5m` on the
//! admin endpoint: nodes and edges with request rate, error rate and latency percentiles
//! (`format=json`, the default), or the same as Grafana's node graph panel reads
//! (`format=nodegraph`, see `topology::nodegraph`), with exemplar calls per edge and node;
//! and the live service map page that draws it, `GET /service-map` (see `page`).
//!
//! Mesh shapes it understands: Zipkin shared span ids, Envoy sidecars interleaved with
//! application spans, Linkerd's four spans per hop, uninstrumented peers (virtual nodes from
//! `peer.service`, database and messaging attributes, Envoy's `upstream_cluster`), root
//! server spans (edges from `user`). See [`graph`] for the rules.
//!
//! Output: one `ResourceMetrics` with resource `service.name=meshgate` (Prometheus `job`),
//! scope `meshgate/servicegraph`, cumulative temporality, every `metrics_flush_interval` and
//! once at shutdown. Self-telemetry on `/metrics`, labelled `connector=<id>`:
//! `meshgate_connector_servicegraph_spans_total{outcome}`, `..._store_items`,
//! `..._store_markers`, `..._edges`, `..._series_expired_total`,
//! `..._markers_dropped_total`.

pub mod config;
pub mod graph;
mod hash;
mod identity;
mod page;
mod store;
mod topology;

pub use config::ServiceGraphConfig;
pub use graph::{ServiceGraph, Stats};
use topology::Format;
pub use topology::{Format as TopologyFormat, Query as TopologyQuery, View as TopologyView};

use meshgate_engine::admin::{ApiRequest, ApiResponse};
use meshgate_engine::telemetry::{Counter, Gauge, Registry};
use meshgate_engine::{BuildContext, Connector, ConnectorFactory, Factory};
use meshgate_pdata::{Payload, Signal};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// The admin API path the topology is served on.
pub const TOPOLOGY_PATH: &str = "/api/v1/topology";

/// Builds `servicegraph` connectors.
pub struct ServiceGraphFactory;

impl Factory for ServiceGraphFactory {
    fn type_name(&self) -> &'static str {
        "servicegraph"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }
    fn description(&self) -> &'static str {
        "Service graph edges (request count, failures, client/server latency) from spans; \
         live topology on /api/v1/topology."
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(ServiceGraphConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        if config.is_null() {
            return Ok(());
        }
        serde_json::from_value::<ServiceGraphConfig>(config.clone())
            .map_err(|e| e.to_string())?
            .validate()
    }
}

impl ConnectorFactory for ServiceGraphFactory {
    fn produces(&self) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn build(&self, ctx: BuildContext<'_>) -> Result<Box<dyn Connector>, String> {
        // A body-less `servicegraph:` means the defaults.
        let cfg: ServiceGraphConfig = if ctx.config.is_null() {
            ServiceGraphConfig::default()
        } else {
            ctx.parse()?
        };
        let graph = ServiceGraph::new(&cfg).map_err(|e| format!("{}: {e}", ctx.id))?;
        let graph = Arc::new(Mutex::new(graph));
        let clock = Clock::new();
        let api_graph = Arc::clone(&graph);
        ctx.api.register(
            TOPOLOGY_PATH,
            &ctx.id,
            Arc::new(move |req: &ApiRequest| topology_response(&api_graph, req, clock.now())),
        );
        // The live service map page that reads it (`/service-map`, shared by all connectors).
        page::register(&ctx.api);
        let ttl = cfg.store.ttl.0;
        let flush_every = cfg.metrics_flush_interval.0;
        let now = Instant::now();
        Ok(Box::new(ServiceGraphConnector {
            graph,
            clock,
            flush_every,
            expire_every: (ttl / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)),
            next_flush: now + flush_every,
            next_expire: now + ttl,
            pending: 0,
            telemetry: SelfTelemetry::new(ctx.telemetry, &ctx.id),
            published: Stats::default(),
        }))
    }
}

/// Answers one topology API call.
fn topology_response(
    graph: &Mutex<ServiceGraph>,
    req: &ApiRequest,
    now: SystemTime,
) -> ApiResponse {
    // The lock is held only while the numbers are summed; the answer (megabytes for a big
    // mesh) is serialised after, so spans keep flowing meanwhile.
    let (q, view) = {
        let g = lock(graph);
        let q = match topology::parse_query(&req.query, g.topology_retention()) {
            Ok(q) => q,
            Err(e) => return ApiResponse::error(400, e),
        };
        let view = g.topology_view(&q, now);
        (q, view)
    };
    let view = match view {
        Ok(v) => v,
        Err(e) => return ApiResponse::error(404, e),
    };
    match q.format {
        Format::Json => ApiResponse::json(&view),
        Format::NodeGraph => ApiResponse::json(&topology::nodegraph(&view)),
    }
}

fn lock(graph: &Mutex<ServiceGraph>) -> MutexGuard<'_, ServiceGraph> {
    // A panic while holding the lock leaves consistent-enough counters; keep serving.
    graph.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wall-clock time that never jumps: the wall clock at start plus monotonic time since, so
/// store expiry and topology buckets are unaffected by clock steps, and deadlines (monotonic
/// `Instant`s) and timestamps (unix time) agree.
#[derive(Clone, Copy)]
struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }
    fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }
}

/// The `/metrics` series of one connector.
struct SelfTelemetry {
    paired: Counter,
    user: Counter,
    virtual_node: Counter,
    intra_workload: Counter,
    expired: Counter,
    dropped: Counter,
    skipped: Counter,
    series_expired: Counter,
    markers_dropped: Counter,
    store_items: Gauge,
    store_markers: Gauge,
    edges: Gauge,
}

impl SelfTelemetry {
    fn new(r: &Registry, id: &str) -> SelfTelemetry {
        let spans = |outcome: &str| {
            r.counter(
                "meshgate_connector_servicegraph_spans_total",
                "Spans a servicegraph connector read, by outcome: paired, user (root server \
                 span), virtual (unpaired caller to a virtual node), intra_workload, expired \
                 (unpaired, no peer), dropped (store full), skipped (no edge end).",
                &[("connector", id), ("outcome", outcome)],
            )
        };
        SelfTelemetry {
            paired: spans("paired"),
            user: spans("user"),
            virtual_node: spans("virtual"),
            intra_workload: spans("intra_workload"),
            expired: spans("expired"),
            dropped: spans("dropped"),
            skipped: spans("skipped"),
            series_expired: r.counter(
                "meshgate_connector_servicegraph_series_expired_total",
                "Edge series a servicegraph connector forgot after metrics_expiration without \
                 a request.",
                &[("connector", id)],
            ),
            markers_dropped: r.counter(
                "meshgate_connector_servicegraph_markers_dropped_total",
                "Intra-workload markers a servicegraph connector could not store because the \
                 store was full (the application span they were for may become a virtual edge).",
                &[("connector", id)],
            ),
            store_items: r.gauge(
                "meshgate_connector_servicegraph_store_items",
                "Entries waiting in a servicegraph connector's pairing store.",
                &[("connector", id)],
            ),
            store_markers: r.gauge(
                "meshgate_connector_servicegraph_store_markers",
                "Intra-workload markers a servicegraph connector holds for parent spans still to \
                 come (bounded by store.max_items apart from the waiting spans).",
                &[("connector", id)],
            ),
            edges: r.gauge(
                "meshgate_connector_servicegraph_edges",
                "Edge series a servicegraph connector currently emits.",
                &[("connector", id)],
            ),
        }
    }
}

/// The engine-facing connector: the graph behind a mutex shared with the API handler, locked
/// once per batch.
struct ServiceGraphConnector {
    graph: Arc<Mutex<ServiceGraph>>,
    clock: Clock,
    flush_every: Duration,
    expire_every: Duration,
    next_flush: Instant,
    next_expire: Instant,
    /// Spans and markers waiting: expiry ticks are only scheduled while there are some.
    pending: usize,
    telemetry: SelfTelemetry,
    published: Stats,
}

impl ServiceGraphConnector {
    /// Mirrors the graph's counters onto `/metrics`.
    fn publish(&mut self, g: &ServiceGraph) {
        let s = g.stats();
        let p = self.published;
        let t = &self.telemetry;
        t.paired.add(s.paired - p.paired);
        t.user.add(s.user - p.user);
        t.virtual_node.add(s.virtual_node - p.virtual_node);
        t.intra_workload.add(s.intra_workload - p.intra_workload);
        t.expired.add(s.expired - p.expired);
        t.dropped.add(s.dropped - p.dropped);
        t.skipped.add(s.skipped - p.skipped);
        t.series_expired.add(s.series_expired - p.series_expired);
        t.markers_dropped.add(s.markers_dropped - p.markers_dropped);
        t.store_items.set(g.store_len() as i64);
        t.store_markers.set(g.markers_len() as i64);
        t.edges.set(g.series_len() as i64);
        self.pending = g.store_len() + g.markers_len();
        self.published = s;
    }

    fn emit(g: &mut ServiceGraph, now: SystemTime, out: &mut Vec<Payload>) {
        let m = g.collect(now);
        if !m.resource_metrics.is_empty() {
            out.push(Payload::Metrics(m));
        }
    }
}

impl Connector for ServiceGraphConnector {
    fn consume(&mut self, data: &Payload, _out: &mut Vec<Payload>) {
        let Payload::Traces(t) = data else {
            return;
        };
        let graph = Arc::clone(&self.graph);
        let mut g = lock(&graph);
        g.consume(t, self.clock.now());
        self.publish(&g);
    }

    fn deadline(&self) -> Option<Instant> {
        Some(if self.pending > 0 {
            self.next_flush.min(self.next_expire)
        } else {
            self.next_flush
        })
    }

    fn on_deadline(&mut self, out: &mut Vec<Payload>) {
        let graph = Arc::clone(&self.graph);
        let mut g = lock(&graph);
        let now = Instant::now();
        let wall = self.clock.now();
        if now >= self.next_expire {
            g.expire(wall);
            self.next_expire = now + self.expire_every;
        }
        if now >= self.next_flush {
            Self::emit(&mut g, wall, out);
            // Keep the cadence, but never try to catch up on missed flushes.
            self.next_flush = (self.next_flush + self.flush_every).max(now);
        }
        self.publish(&g);
    }

    fn flush(&mut self, out: &mut Vec<Payload>) {
        let graph = Arc::clone(&self.graph);
        let mut g = lock(&graph);
        let wall = self.clock.now();
        g.expire_all(wall);
        Self::emit(&mut g, wall, out);
        self.publish(&g);
    }
}

#[cfg(test)]
mod tests;
