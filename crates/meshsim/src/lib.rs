//! A service mesh traffic simulator with exact ground truth.
//!
//! Given a [`Topology`] (services, calls, rates, latencies, error rates, retries, databases,
//! queues, external APIs), it emits the trace telemetry a real mesh would send a gateway, in
//! one of three shapes ([`Flavor`]):
//!
//! - **Envoy OTLP**: Istio sidecars through Envoy's OpenTelemetry tracer. Every attribute is a
//!   string (`http.status_code: "503"`, `error: "true"`), Envoy's own attributes (`node_id`,
//!   `upstream_cluster`, `response_flags`...) and Istio's `istio.*` tags; resource
//!   `service.name` = `app.namespace`. Services with `app_spans: true` also report their SDK's
//!   spans, interleaved: app CLIENT → sidecar CLIENT → sidecar SERVER → app SERVER.
//! - **Envoy Zipkin**: Zipkin v2 JSON, with Envoy's shared span context (the server span
//!   reuses the client span's id, `"shared": true`) or without.
//! - **Linkerd**: four spans per hop with `direction`, span name = the URI path, status UNSET,
//!   new semantic convention attribute names.
//!
//! Retries give one client span per attempt; an attempt that never reached the server has no
//! server span. Calls to databases, queues and external APIs have only their client (or
//! producer) span. Each proxy and SDK flushes its own requests (5 spans or 5 s for proxies),
//! so one trace is split over many requests from several emitters.
//!
//! Alongside the telemetry it records the [`GroundTruth`]: the service graph edges (with
//! failed counts and exact latencies) and RED series that meshgate's `servicegraph` and
//! `spanmetrics` connectors must derive from it, under the semantics they share (node id
//! `name.namespace`, intra-workload hops are not edges, `user` edges for roots, virtual nodes
//! with FQDN normalisation, the mesh failure rule of [`meshgate_pdata::mesh`]).
//!
//! Everything is deterministic from the seed. Tests use [`Simulator::generate_roots`] and
//! [`Generated::shuffled`]; the load generator streams with [`Simulator::stream`].
//!
//! ```
//! use meshgate_meshsim::{Flavor, Simulator, Topology};
//!
//! let topology = Topology::from_yaml_str(
//!     "services: [{ name: web }, { name: api }]\n\
//!      entry: { service: web, rate: 10 }\n\
//!      calls: [{ from: web, to: api, retries: 1, connect_failure_rate: 0.5 }]\n",
//!     "demo.yaml",
//! )
//! .map_err(|e| e.to_string())?;
//! let generated = Simulator::new(topology, Flavor::EnvoyOtlp).with_seed(7).generate_roots(100);
//! let truth = &generated.truth;
//! assert_eq!(truth.edge("user", "web.default", "virtual_node").unwrap().requests, 100);
//! let paired = truth.edge("web.default", "api.default", "").map_or(0, |e| e.requests);
//! let unreached = truth.edge("web.default", "api.default", "virtual_node").map_or(0, |e| e.requests);
//! assert!(paired + unreached >= 100, "retries add attempts");
//! # Ok::<(), String>(())
//! ```

mod emit;
mod sim;
pub mod synthetic;
pub mod topology;
pub mod truth;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use meshgate_pdata::otlp::{ExportTraceServiceRequest, ResourceSpans, ScopeSpans};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

pub use emit::{Body, Delivery, FlushPolicies, FlushPolicy};
pub use synthetic::{Synthetic, SyntheticMesh};
pub use topology::{Topology, TopologyError};
pub use truth::GroundTruth;

use emit::Flush;
use sim::{Engine, mix};

/// The shape of the telemetry: which proxy and which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// Istio sidecars through Envoy's OpenTelemetry tracer (OTLP), with SDK spans from
    /// services marked `app_spans`.
    EnvoyOtlp,
    /// Envoy's Zipkin tracer (Zipkin v2 JSON). `shared`: Envoy's `shared_span_context`
    /// (its default, true): the server span reuses the client span's id.
    EnvoyZipkin {
        /// Server spans share the client span's id (`"shared": true`).
        shared: bool,
    },
    /// Linkerd proxies (OTLP), four spans per hop.
    Linkerd,
}

impl Flavor {
    /// Every flavor, for tests that cover them all.
    pub const ALL: [Flavor; 4] = [
        Flavor::EnvoyOtlp,
        Flavor::EnvoyZipkin { shared: true },
        Flavor::EnvoyZipkin { shared: false },
        Flavor::Linkerd,
    ];

    /// Whether requests are Zipkin JSON (else OTLP).
    pub fn is_zipkin(self) -> bool {
        matches!(self, Flavor::EnvoyZipkin { .. })
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::EnvoyOtlp => "envoy-otlp",
            Flavor::EnvoyZipkin { shared: true } => "envoy-zipkin",
            Flavor::EnvoyZipkin { shared: false } => "envoy-zipkin-unshared",
            Flavor::Linkerd => "linkerd",
        })
    }
}

impl FromStr for Flavor {
    type Err = String;

    /// `envoy-otlp`, `envoy-zipkin` (shared span context), `envoy-zipkin-unshared`, `linkerd`.
    fn from_str(s: &str) -> Result<Self, String> {
        Flavor::ALL
            .into_iter()
            .find(|f| f.to_string() == s)
            .ok_or_else(|| {
                format!(
                    "unknown flavor `{s}`; expected one of {}",
                    Flavor::ALL.map(|f| f.to_string()).join(", ")
                )
            })
    }
}

/// 2026-01-01T00:00:00Z, the default simulated start (fixed, so output is reproducible).
pub const DEFAULT_START_UNIX_NANO: u64 = 1_767_225_600_000_000_000;

/// A configured simulation. Cheap to clone; every generation starts from the same state, so
/// the same settings always give the same output.
#[derive(Debug, Clone)]
pub struct Simulator {
    topology: Arc<Topology>,
    flavor: Flavor,
    seed: u64,
    start_unix_nano: u64,
    rate_multiplier: f64,
    flush: FlushPolicies,
}

impl Simulator {
    /// A simulation of `topology` in `flavor`, seed 0, starting at
    /// [`DEFAULT_START_UNIX_NANO`], at the topology's rate, with the default flush policies.
    pub fn new(topology: Topology, flavor: Flavor) -> Self {
        Simulator {
            topology: Arc::new(topology),
            flavor,
            seed: 0,
            start_unix_nano: DEFAULT_START_UNIX_NANO,
            rate_multiplier: 1.0,
            flush: FlushPolicies::default(),
        }
    }

    /// Sets the seed of every random choice (arrivals, ids, latencies, failures).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the simulated clock's start (Unix nanoseconds; rounded down to a microsecond so
    /// Zipkin's microsecond timestamps stay exact).
    pub fn with_start(mut self, unix_nano: u64) -> Self {
        self.start_unix_nano = unix_nano / 1000 * 1000;
        self
    }

    /// Multiplies the entry rate (the load generator's `--rate`).
    ///
    /// # Panics
    /// When `multiplier` is not a finite number above 0.
    pub fn with_rate_multiplier(mut self, multiplier: f64) -> Self {
        assert!(
            multiplier.is_finite() && multiplier > 0.0,
            "rate multiplier must be above 0, got {multiplier}"
        );
        self.rate_multiplier = multiplier;
        self
    }

    /// Sets when proxies and SDKs flush their spans.
    pub fn with_flush(mut self, flush: FlushPolicies) -> Self {
        self.flush = flush;
        self
    }

    /// The topology simulated.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The flavor emitted.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Root requests per second after the multiplier.
    pub fn roots_per_second(&self) -> f64 {
        self.topology.entry.rate * self.rate_multiplier
    }

    /// A streaming simulation, for sending in real time.
    pub fn stream(&self) -> MeshStream {
        let engine = Engine::new(
            self.topology.clone(),
            self.flavor,
            self.seed,
            self.start_unix_nano,
            self.flush,
        );
        let mut arrivals = StdRng::seed_from_u64(mix(self.seed ^ 0xA5A5_A5A5));
        let mean_us = 1e6 / self.roots_per_second();
        let first = self.start_unix_nano + interarrival_ns(&mut arrivals, mean_us);
        MeshStream {
            engine,
            zipkin: self.flavor.is_zipkin(),
            seed: self.seed,
            arrivals,
            mean_interarrival_us: mean_us,
            next_arrival: first,
            roots: 0,
            flush_seq: 0,
        }
    }

    /// Simulates exactly `n` root requests (arriving at the topology's rate) and everything
    /// they cause, with every emitter flushed at the end.
    pub fn generate_roots(&self, n: u64) -> Generated {
        let mut s = self.stream();
        s.simulate_roots(n);
        Generated::from_deliveries(self.flavor, s.finish())
    }

    /// Simulates the root requests arriving during `duration` from the start.
    pub fn generate_for(&self, duration: Duration) -> Generated {
        let mut s = self.stream();
        let mut deliveries = s.advance_to(self.start_unix_nano + duration.as_nanos() as u64);
        let (rest, truth) = s.finish();
        deliveries.extend(rest);
        Generated::from_deliveries(self.flavor, (deliveries, truth))
    }
}

/// Exponential inter-arrival time of a Poisson process, in whole microseconds.
fn interarrival_ns(rng: &mut StdRng, mean_us: f64) -> u64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    ((-u.ln() * mean_us).round() as u64) * 1000
}

/// A simulation in progress: simulated time moves forward with [`MeshStream::advance_to`],
/// which returns the requests the emitters send up to then, in time order.
pub struct MeshStream {
    engine: Engine,
    zipkin: bool,
    seed: u64,
    arrivals: StdRng,
    mean_interarrival_us: f64,
    next_arrival: u64,
    roots: u64,
    flush_seq: u64,
}

impl MeshStream {
    /// Simulates every root request arriving before `until_unix_nano` and returns the
    /// requests sent at or before it, ordered by send time. Spans still held by emitters come
    /// in later calls. Chunking does not change the output: advancing in many small steps
    /// gives the same requests as one big step.
    pub fn advance_to(&mut self, until_unix_nano: u64) -> Vec<Delivery> {
        while self.next_arrival < until_unix_nano {
            self.simulate_next_root();
        }
        let mut flushes = Vec::new();
        for (i, e) in self.engine.emitters.iter_mut().enumerate() {
            e.flush_until(until_unix_nano, i, &mut self.flush_seq, &mut flushes);
        }
        self.encode(flushes)
    }

    /// Whether the ground truth keeps every duration (the default; histograms and sums need
    /// them) or only counts. A stream that runs for hours (the load generator) turns them off
    /// so its memory stays flat.
    pub fn keep_durations(&mut self, keep: bool) {
        self.engine.keep_durations = keep;
    }

    /// Simulates the next `n` root requests, whatever their arrival times. Their spans are
    /// returned by later [`MeshStream::advance_to`] or [`MeshStream::finish`] calls.
    pub fn simulate_roots(&mut self, n: u64) {
        for _ in 0..n {
            self.simulate_next_root();
        }
    }

    fn simulate_next_root(&mut self) {
        let trace_seed = mix(self.seed ^ mix(self.roots.wrapping_add(1)));
        self.engine.root(self.next_arrival, trace_seed);
        self.roots += 1;
        self.next_arrival += interarrival_ns(&mut self.arrivals, self.mean_interarrival_us);
    }

    /// Flushes every emitter (at the timer ticks that would send what they hold) and returns
    /// the remaining requests with the ground truth of everything simulated.
    pub fn finish(mut self) -> (Vec<Delivery>, GroundTruth) {
        let mut flushes = Vec::new();
        for (i, e) in self.engine.emitters.iter_mut().enumerate() {
            e.flush_all(i, &mut self.flush_seq, &mut flushes);
        }
        let deliveries = self.encode(flushes);
        (deliveries, std::mem::take(&mut self.engine.truth))
    }

    /// The ground truth of what was simulated so far (including spans not yet sent).
    pub fn truth(&self) -> &GroundTruth {
        &self.engine.truth
    }

    /// Root requests simulated so far.
    pub fn roots(&self) -> u64 {
        self.roots
    }

    /// When the next root request arrives (Unix ns).
    pub fn next_arrival_unix_nano(&self) -> u64 {
        self.next_arrival
    }

    /// Spans simulated but not yet sent.
    pub fn held_spans(&self) -> usize {
        self.engine.emitters.iter().map(|e| e.held()).sum()
    }

    fn encode(&self, mut flushes: Vec<Flush>) -> Vec<Delivery> {
        flushes.sort_unstable_by_key(|f| (f.at, f.emitter, f.seq));
        flushes
            .into_iter()
            .map(|f| {
                let emitter = &self.engine.emitters[f.emitter];
                let spans = f.spans.len();
                let body = if self.zipkin {
                    Body::Zipkin(emitter.zipkin(&f.spans))
                } else {
                    Body::Otlp(emitter.otlp(f.spans))
                };
                Delivery {
                    at_unix_nano: f.at,
                    spans,
                    body,
                }
            })
            .collect()
    }
}

/// A finished simulation: what was sent, in send order, and what it means.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The flavor emitted.
    pub flavor: Flavor,
    /// OTLP requests (Envoy OTLP and Linkerd flavors), one per emitter flush.
    pub requests: Vec<ExportTraceServiceRequest>,
    /// Zipkin v2 JSON bodies (Envoy Zipkin flavor), one per emitter flush.
    pub zipkin: Vec<Vec<u8>>,
    /// The ground truth.
    pub truth: GroundTruth,
}

impl Generated {
    fn from_deliveries(flavor: Flavor, (deliveries, truth): (Vec<Delivery>, GroundTruth)) -> Self {
        let mut requests = Vec::new();
        let mut zipkin = Vec::new();
        for d in deliveries {
            match d.body {
                Body::Otlp(r) => requests.push(r),
                Body::Zipkin(z) => zipkin.push(z),
            }
        }
        Generated {
            flavor,
            requests,
            zipkin,
            truth,
        }
    }

    /// Spans in all requests.
    pub fn span_count(&self) -> usize {
        let otlp: usize = self
            .requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let zipkin: usize = self
            .zipkin
            .iter()
            .map(|b| {
                serde_json::from_slice::<Vec<serde_json::Value>>(b)
                    .map(|v| v.len())
                    .unwrap_or(0)
            })
            .sum();
        otlp + zipkin
    }

    /// The same spans in a different delivery: every request's spans shuffled and split into
    /// random smaller requests (same resource and scope), and all requests shuffled, so spans
    /// arrive out of order and a client span may come long before or after its server span.
    /// Deterministic from `seed`; the ground truth is unchanged.
    pub fn shuffled(&self, seed: u64) -> Generated {
        let mut rng = StdRng::seed_from_u64(mix(seed ^ 0x5EED));
        let mut requests = Vec::new();
        for req in &self.requests {
            for rs in &req.resource_spans {
                for ss in &rs.scope_spans {
                    let mut spans = ss.spans.clone();
                    spans.shuffle(&mut rng);
                    while !spans.is_empty() {
                        let n = rng.random_range(1..=spans.len());
                        let rest = spans.split_off(n);
                        requests.push(ExportTraceServiceRequest {
                            resource_spans: vec![ResourceSpans {
                                resource: rs.resource.clone(),
                                scope_spans: vec![ScopeSpans {
                                    scope: ss.scope.clone(),
                                    spans,
                                    schema_url: ss.schema_url.clone(),
                                }],
                                schema_url: rs.schema_url.clone(),
                            }],
                        });
                        spans = rest;
                    }
                }
            }
        }
        requests.shuffle(&mut rng);
        let mut zipkin = Vec::new();
        for body in &self.zipkin {
            let mut spans: Vec<serde_json::Value> =
                serde_json::from_slice(body).expect("the simulator writes JSON arrays");
            spans.shuffle(&mut rng);
            while !spans.is_empty() {
                let n = rng.random_range(1..=spans.len());
                let rest = spans.split_off(n);
                zipkin.push(serde_json::to_vec(&spans).expect("JSON values serialize"));
                spans = rest;
            }
        }
        zipkin.shuffle(&mut rng);
        Generated {
            flavor: self.flavor,
            requests,
            zipkin,
            truth: self.truth.clone(),
        }
    }
}
