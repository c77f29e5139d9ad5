//! Topology files: which services exist, which calls they make, how fast and how often they
//! fail, and which databases, queues and external APIs they use.
//!
//! A topology is read from YAML (or JSON) with the same loader as meshgate's pipeline files,
//! so every problem is reported with its file, line and key path (`calls[2].to: ...`), all at
//! once. Shape (every key except `services`, `entry` and a call's `from`/`to` is optional):
//!
//! ```yaml
//! description: Istio's Bookinfo sample
//! services:
//!   - { name: productpage, namespace: default, app_spans: true }
//!   - { name: reviews, versions: [v1, v2, v3] }
//!   - { name: ratings }
//! entry: { service: productpage, rate: 20, path: /productpage, latency: { lognormal: { median: 8, p99: 40 } } }
//! calls:
//!   - { from: productpage, to: reviews, path: /reviews/0, latency: { uniform: [2, 6] }, retries: 2, connect_failure_rate: 0.01 }
//!   - { from: reviews, from_versions: [v2, v3], to: ratings, error_rate: 0.02 }
//!   - { from: reviews, to: reviews-db, operation: SELECT }
//!   - { from: ratings, to: api.weather.example.com, probability: 0.1 }
//! databases: [{ name: reviews-db, system: mysql }]
//! queues: [{ name: kafka, system: kafka, destination: ratings-events }]
//! externals: [{ host: api.weather.example.com }]
//! settings: { network_latency_ms: 0.2, proxy_overhead_ms: 0.1, retry_backoff_ms: 25 }
//! ```
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `services[].name` | required | Kubernetes service name (DNS label) |
//! | `services[].namespace` | `default` | namespace; the graph node is `name.namespace` |
//! | `services[].versions` | `[v1]` | canonical revisions, one pod each, picked uniformly |
//! | `services[].port` | 8080 | service port |
//! | `services[].app_spans` | false | the app reports SDK spans too (Envoy OTLP flavor) |
//! | `entry.service` | required | service receiving root requests |
//! | `entry.rate` | required | root requests per second (Poisson arrivals) |
//! | `entry.method`, `.path`, `.route` | `GET`, `/`, the path | the users' request |
//! | `entry.latency` | 1 ms | the entry service's own time |
//! | `entry.error_rate` | 0 | probability of a 5xx answer |
//! | `calls[].from`, `.to` | required | caller service; callee service (`name` or `name.namespace`), database, queue or external (host or name) |
//! | `calls[].count` / `.probability` | `count: 1` | times per request served, or once with this probability |
//! | `calls[].from_versions` | all | only from these versions of the caller |
//! | `calls[].method`, `.path`, `.route` | `GET`, `/`, the path | HTTP calls |
//! | `calls[].operation` | `SELECT` / `publish` | database and queue calls |
//! | `calls[].latency` | 1 ms | the callee's own time (its calls come on top) |
//! | `calls[].error_rate` | 0 | probability an attempt gets a 5xx (a failed query) |
//! | `calls[].connect_failure_rate` | 0 | probability an attempt never reaches the callee (HTTP) |
//! | `calls[].retries` | 0 | extra attempts after a failed one (HTTP, at most 10) |
//! | `databases[]` | | `name` (`db.name`, the node), `system` (`db.system`), `host`, `port` |
//! | `queues[]` | | `name` (`peer.service`, the node), `system`, `destination` (default: name), `host` |
//! | `externals[]` | | `host` (the node), `name`, `port` (443/80), `scheme` (`https`) |
//! | `settings.network_latency_ms` | 0.2 | one way, pod to pod |
//! | `settings.proxy_overhead_ms` | 0.1 | one way, proxy to its app |
//! | `settings.retry_backoff_ms` | 25 | between attempts |
//! | `settings.connect_failure_ms` | 1 | duration of an attempt that never connects |
//! | `settings.cluster_domain`, `.mesh_id`, `.cluster_id`, `.zone` | `cluster.local`, `cluster.local`, `Kubernetes`, `us-east1-b` | names in attributes |
//!
//! Latencies are milliseconds: a number (fixed), `{ fixed: 5 }`, `{ uniform: [min, max] }` or
//! `{ lognormal: { median: m, p99: p } }`; samples are whole microseconds. The call graph
//! between services must be acyclic (a simulated request must end), and one root request may
//! make at most [`MAX_CALLS_PER_REQUEST`] calls. Examples ship in `crates/meshsim/topologies/`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use meshgate_config::{Diagnostic, Format, Loaded, Location};
use rand::Rng;
use serde_json::{Map, Value};

/// Largest number of calls (attempts included) one root request may make; above this a
/// topology is almost certainly a typo (`count: 100` three levels deep) and would stall tests.
pub const MAX_CALLS_PER_REQUEST: u64 = 10_000;

/// A validated topology: everything the simulator needs, with names resolved to indexes.
///
/// Build it with [`Topology::from_file`] or [`Topology::from_yaml_str`], which check it. A
/// value changed by hand must keep what they check: indexes in range, probabilities in
/// [0, 1], at least one version per service, and no cycle among service calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Free text from the file, shown by tools (`description:`).
    pub description: Option<String>,
    /// The mesh's workloads, each with a sidecar (or Linkerd proxy).
    pub services: Vec<Service>,
    /// Where root requests (from users outside the mesh) arrive.
    pub entry: Entry,
    /// The calls services make while serving a request, in the order they make them.
    pub calls: Vec<Call>,
    /// Databases: uninstrumented peers reached through the application's client library.
    pub databases: Vec<Database>,
    /// Message brokers the applications publish to (PRODUCER spans, no consumer).
    pub queues: Vec<Queue>,
    /// HTTP APIs outside the mesh, reached through the caller's proxy.
    pub externals: Vec<External>,
    /// Network and proxy constants and the Istio/Kubernetes names used in span attributes.
    pub settings: Settings,
}

/// One workload of the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Kubernetes service / app name (a DNS label), e.g. `reviews`.
    pub name: String,
    /// Kubernetes namespace. Default `default`.
    pub namespace: String,
    /// Deployed versions (Istio's canonical revision); each request picks one uniformly, each
    /// version is its own pod and proxy. Default `[v1]`.
    pub versions: Vec<String>,
    /// Service port. Default 8080.
    pub port: u16,
    /// Whether the application's HTTP server and client are instrumented with an
    /// OpenTelemetry SDK, so their spans interleave with the sidecar's (Envoy OTLP flavor; the
    /// Zipkin and Linkerd flavors report proxy spans only). Database and queue calls are
    /// always reported by the application's client library, whatever this says. Default false.
    pub app_spans: bool,
}

impl Service {
    /// The service graph node of this workload: `name.namespace` (the identity rule).
    pub fn node_id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// The in-cluster DNS name, `name.namespace.svc.<cluster_domain>`.
    pub fn fqdn(&self, cluster_domain: &str) -> String {
        format!("{}.{}.svc.{cluster_domain}", self.name, self.namespace)
    }
}

/// The entry point of root requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Index into [`Topology::services`].
    pub service: usize,
    /// Root requests per second (a Poisson process).
    pub rate: f64,
    /// The request users send.
    pub request: HttpRequest,
    /// The entry service's own processing time per request (its calls come on top).
    pub latency: Latency,
    /// Probability that the entry service answers a root request with a 5xx.
    pub error_rate: f64,
}

/// An HTTP request's method, path and route template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`... Default `GET`.
    pub method: String,
    /// The request path, e.g. `/reviews/0`. Default `/`.
    pub path: String,
    /// The server's route template (SDK span names use it), e.g. `/reviews/{id}`. Default:
    /// the path.
    pub route: String,
}

/// What a call reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Index into [`Topology::services`].
    Service(usize),
    /// Index into [`Topology::databases`].
    Database(usize),
    /// Index into [`Topology::queues`].
    Queue(usize),
    /// Index into [`Topology::externals`].
    External(usize),
}

impl Target {
    /// Whether the call is HTTP through the caller's proxy (services and external APIs), as
    /// opposed to a database or broker protocol made by the application's client library.
    pub fn is_http(self) -> bool {
        matches!(self, Target::Service(_) | Target::External(_))
    }
}

/// How many times a call is made per request served.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Multiplicity {
    /// Exactly this many times (`count:`).
    Count(u32),
    /// Once with this probability (`probability:`).
    Probability(f64),
}

/// A call one service makes while serving a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Index of the calling service.
    pub from: usize,
    /// Only when the caller runs one of these versions (`from_versions:`); all when `None`.
    pub from_versions: Option<Vec<String>>,
    /// The callee.
    pub to: Target,
    /// How often per request served. Default `count: 1`.
    pub times: Multiplicity,
    /// The HTTP request (services and externals).
    pub request: HttpRequest,
    /// The operation for databases (`SELECT`...) and queues (`publish`).
    pub operation: String,
    /// The callee's own processing time (its own calls come on top); for databases, queues
    /// and externals the time they take to answer.
    pub latency: Latency,
    /// Probability that an attempt reaches the callee and gets a 5xx (or a failed query).
    pub error_rate: f64,
    /// Probability that an attempt never reaches the callee (connection failure, Envoy
    /// `UF`). Services and externals only.
    pub connect_failure_rate: f64,
    /// Extra attempts after a failed one (Envoy `retry_on: 5xx,connect-failure`). Services and
    /// externals only. Default 0.
    pub retries: u32,
}

/// A database reached by the application's client library (the proxy only sees TCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// The database name (`db.name`); also the service graph's virtual node.
    pub name: String,
    /// `db.system`, e.g. `postgresql`, `mysql`, `redis`.
    pub system: String,
    /// Server host (`server.address`). Default: the name.
    pub host: String,
    /// Server port, when given.
    pub port: Option<u16>,
}

/// A message broker destination the applications publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// The broker's name (`peer.service`); also the service graph's virtual node.
    pub name: String,
    /// `messaging.system`, e.g. `kafka`, `rabbitmq`.
    pub system: String,
    /// `messaging.destination.name`. Default: the name.
    pub destination: String,
    /// Broker host (`server.address`), when given.
    pub host: Option<String>,
}

/// An HTTP API outside the mesh (an Istio `ServiceEntry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// The host name; calls may refer to it by this or by `name`.
    pub host: String,
    /// An optional short name calls may use in `to:`.
    pub name: Option<String>,
    /// Port. Default 443.
    pub port: u16,
    /// `https` (default) or `http`.
    pub scheme: String,
}

/// Constants of the simulated network and the names that go into span attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// One-way network latency between two pods, in microseconds. Default 200 (0.2 ms).
    pub network_latency_us: u64,
    /// Time a request spends between a proxy and its local application, each way, in
    /// microseconds. Default 100.
    pub proxy_overhead_us: u64,
    /// Wait between a failed attempt and its retry, in microseconds. Default 25000 (Envoy's
    /// base retry interval).
    pub retry_backoff_us: u64,
    /// Duration of an attempt that never reaches the callee, in microseconds. Default 1000.
    pub connect_failure_us: u64,
    /// Kubernetes cluster domain. Default `cluster.local`.
    pub cluster_domain: String,
    /// `istio.mesh_id`. Default `cluster.local`.
    pub mesh_id: String,
    /// `istio.cluster_id`. Default `Kubernetes`.
    pub cluster_id: String,
    /// Envoy's `zone` attribute. Default `us-east1-b`.
    pub zone: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            network_latency_us: 200,
            proxy_overhead_us: 100,
            retry_backoff_us: 25_000,
            connect_failure_us: 1_000,
            cluster_domain: "cluster.local".into(),
            mesh_id: "cluster.local".into(),
            cluster_id: "Kubernetes".into(),
            zone: "us-east1-b".into(),
        }
    }
}

/// A latency distribution. Samples are whole microseconds (at least 1), so every simulated
/// timestamp is exact in Zipkin's microsecond units as well as OTLP's nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Always this many microseconds.
    Fixed {
        /// The value.
        us: u64,
    },
    /// Uniform between the two bounds (inclusive), in microseconds.
    Uniform {
        /// Lower bound.
        min_us: u64,
        /// Upper bound.
        max_us: u64,
    },
    /// Log-normal: `exp(mu + sigma * z)` microseconds, `z` standard normal.
    LogNormal {
        /// Log of the median in microseconds.
        mu: f64,
        /// Spread: `(ln p99 - ln median) / 2.326`.
        sigma: f64,
    },
}

/// The standard normal quantile of 0.99, to turn a p99 into a log-normal sigma.
const Z99: f64 = 2.326_347_874_040_841;

impl Latency {
    /// Draws one latency, in microseconds (at least 1).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let v = match *self {
            Latency::Fixed { us } => us,
            Latency::Uniform { min_us, max_us } => rng.random_range(min_us..=max_us),
            Latency::LogNormal { mu, sigma } => {
                // Box-Muller; `1 - u` keeps the logarithm's argument in (0, 1].
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                // Capped at an hour: a far tail sample must not stall a simulation.
                (mu + sigma * z).exp().round().min(3.6e9) as u64
            }
        };
        v.max(1)
    }

    /// Milliseconds → the fixed distribution (rounded to whole microseconds).
    pub fn fixed_ms(ms: f64) -> Latency {
        Latency::Fixed { us: ms_to_us(ms) }
    }
}

fn ms_to_us(ms: f64) -> u64 {
    (ms * 1000.0).round().max(1.0) as u64
}

/// Everything wrong with a topology file, each problem with its file, line and key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyError {
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        let n = self.diagnostics.len();
        write!(
            f,
            "{n} error{} in the topology",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for TopologyError {}

impl Topology {
    /// Reads a topology file (YAML, or JSON by extension).
    pub fn from_file(path: &Path) -> Result<Topology, TopologyError> {
        let loaded = Loaded::from_files(&[path.to_path_buf()])
            .map_err(|diagnostics| TopologyError { diagnostics })?;
        Self::from_loaded(&loaded)
    }

    /// Reads topology YAML from memory; `origin` names it in error messages.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Topology, TopologyError> {
        let loaded = Loaded::from_str(text, Format::Yaml, origin)
            .map_err(|diagnostics| TopologyError { diagnostics })?;
        Self::from_loaded(&loaded)
    }

    fn from_loaded(loaded: &Loaded) -> Result<Topology, TopologyError> {
        let mut p = Parser {
            loaded,
            diagnostics: Vec::new(),
        };
        let topology = p.topology(loaded.value());
        if p.diagnostics.is_empty()
            && let Some(t) = topology
        {
            return Ok(t);
        }
        let mut diagnostics = p.diagnostics;
        diagnostics.sort_by(|a, b| {
            let line = |d: &Diagnostic| d.location.as_ref().map(|l| (l.line, l.column));
            line(a).cmp(&line(b))
        });
        Err(TopologyError { diagnostics })
    }

    /// Indexes of the calls each service makes, in file order.
    pub fn calls_by_service(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.services.len()];
        for (i, c) in self.calls.iter().enumerate() {
            out[c.from].push(i);
        }
        out
    }

    /// The most calls (attempts included) one root request can make: every `probability`
    /// taken as 1, every attempt failing.
    pub fn max_calls_per_request(&self) -> u64 {
        let by_service = self.calls_by_service();
        let mut memo: Vec<Option<u64>> = vec![None; self.services.len()];
        max_calls(self, &by_service, self.entry.service, &mut memo)
    }
}

/// Calls made while serving one request at `svc`, worst case. The graph is acyclic (checked
/// before this runs), so the recursion ends.
fn max_calls(t: &Topology, by: &[Vec<usize>], svc: usize, memo: &mut Vec<Option<u64>>) -> u64 {
    if let Some(v) = memo[svc] {
        return v;
    }
    let mut total: u64 = 0;
    for &ci in &by[svc] {
        let c = &t.calls[ci];
        let times = match c.times {
            Multiplicity::Count(n) => u64::from(n),
            Multiplicity::Probability(_) => 1,
        };
        let attempts = u64::from(c.retries) + 1;
        let below = match c.to {
            Target::Service(s) => max_calls(t, by, s, memo),
            _ => 0,
        };
        total = total.saturating_add(times.saturating_mul(attempts).saturating_mul(1 + below));
    }
    memo[svc] = Some(total);
    total
}

/// Top-level keys of a topology file.
const ROOT_KEYS: &[&str] = &[
    "description",
    "services",
    "entry",
    "calls",
    "databases",
    "queues",
    "externals",
    "settings",
];

/// What a name in `to:` / `from:` refers to, while resolving.
#[derive(Debug, Clone)]
enum Named {
    One(Target, String),
    /// A bare service name shared by services of several namespaces.
    Ambiguous(Vec<String>),
}

struct Parser<'a> {
    loaded: &'a Loaded,
    diagnostics: Vec<Diagnostic>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The closest candidate to `input`, when it is a plausible typo.
pub(crate) fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let max_edits = match input.chars().count() {
        0..=2 => 0,
        3..=4 => 1,
        _ => 2,
    };
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        if c == input {
            continue;
        }
        let edits = strsim::osa_distance(input, c);
        let similarity = strsim::jaro_winkler(input, c);
        if !((max_edits > 0 && edits <= max_edits) || (input.len() >= 5 && similarity >= 0.85)) {
            continue;
        }
        let score = similarity - edits as f64;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// A Kubernetes DNS label: lowercase letters, digits and `-`, alphanumeric at both ends, at
/// most 63 characters.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A host name: DNS labels joined by dots.
fn is_host(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

impl Parser<'_> {
    fn locate(&self, path: &str) -> Option<Location> {
        self.loaded.locate(path)
    }

    fn error(&mut self, path: &str, message: impl Into<String>) {
        let d = Diagnostic::error(path, message).at(self.locate(path));
        self.diagnostics.push(d);
    }

    fn error_help(&mut self, path: &str, message: impl Into<String>, help: impl Into<String>) {
        let d = Diagnostic::error(path, message)
            .with_help(help)
            .at(self.locate(path));
        self.diagnostics.push(d);
    }

    /// `v` as a map, reporting keys outside `allowed` (with a suggestion).
    fn object<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Value::Object(map) = v else {
            self.error(path, format!("expected a map, found {}", kind_of(v)));
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let help = match did_you_mean(key, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "valid keys here: {}",
                        allowed
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                self.error_help(&join(path, key), format!("unknown key `{key}`"), help);
            }
        }
        Some(map)
    }

    /// A list under `key` (absent or null = empty).
    fn list<'v>(&mut self, map: &'v Map<String, Value>, key: &str, path: &str) -> &'v [Value] {
        match map.get(key) {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.error(
                    &join(path, key),
                    format!("expected a list, found {}", kind_of(other)),
                );
                &[]
            }
        }
    }

    fn opt_str(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.error(
                    &join(path, key),
                    format!("expected a string, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn req_str(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        if matches!(map.get(key), None | Some(Value::Null)) {
            self.error(path, format!("missing required key `{key}`"));
            return None;
        }
        self.opt_str(map, key, path)
    }

    fn opt_f64(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> Option<f64> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(other) => {
                self.error(
                    &join(path, key),
                    format!("expected a number, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    /// A probability in [0, 1] (default 0).
    fn rate(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> f64 {
        let Some(v) = self.opt_f64(map, key, path) else {
            return 0.0;
        };
        if !(0.0..=1.0).contains(&v) {
            self.error(
                &join(path, key),
                format!("must be a probability between 0 and 1, got {v}"),
            );
            return 0.0;
        }
        v
    }

    fn opt_uint(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        path: &str,
        max: u64,
    ) -> Option<u64> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v <= max => Some(v),
                _ => {
                    self.error(
                        &join(path, key),
                        format!("must be a whole number between 0 and {max}, got {n}"),
                    );
                    None
                }
            },
            Some(other) => {
                self.error(
                    &join(path, key),
                    format!("expected a whole number, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn opt_bool(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.error(
                    &join(path, key),
                    format!("expected true or false, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    /// A non-negative duration in milliseconds, converted to microseconds.
    fn ms(&mut self, map: &Map<String, Value>, key: &str, path: &str, default_us: u64) -> u64 {
        match self.opt_f64(map, key, path) {
            None => default_us,
            Some(v) if v >= 0.0 && v.is_finite() && v <= 3_600_000.0 => (v * 1000.0).round() as u64,
            Some(v) => {
                self.error(
                    &join(path, key),
                    format!("must be between 0 and 3600000 milliseconds, got {v}"),
                );
                default_us
            }
        }
    }

    fn latency(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> Latency {
        let default = Latency::fixed_ms(1.0);
        let path = join(path, key);
        let Some(v) = map.get(key) else {
            return default;
        };
        let positive = |p: &mut Self, v: &Value, at: &str| -> Option<f64> {
            match v.as_f64() {
                Some(x) if x > 0.0 && x.is_finite() && x <= 3_600_000.0 => Some(x),
                Some(x) => {
                    p.error(
                        at,
                        format!("must be more than 0 and at most 3600000 milliseconds, got {x}"),
                    );
                    None
                }
                None => {
                    p.error(
                        at,
                        format!("expected milliseconds (a number), found {}", kind_of(v)),
                    );
                    None
                }
            }
        };
        match v {
            Value::Number(_) => positive(self, v, &path)
                .map(Latency::fixed_ms)
                .unwrap_or(default),
            Value::Object(m) if m.len() == 1 => {
                let (kind, body) = m.iter().next().expect("one entry");
                let at = join(&path, kind);
                match kind.as_str() {
                    "fixed" => positive(self, body, &at)
                        .map(Latency::fixed_ms)
                        .unwrap_or(default),
                    "uniform" => {
                        let Some([lo, hi]) = body
                            .as_array()
                            .and_then(|a| <&[Value; 2]>::try_from(a.as_slice()).ok())
                        else {
                            self.error_help(
                                &at,
                                "expected `[min, max]` in milliseconds",
                                "e.g. `uniform: [2, 8]`",
                            );
                            return default;
                        };
                        let (Some(lo), Some(hi)) =
                            (positive(self, lo, &at), positive(self, hi, &at))
                        else {
                            return default;
                        };
                        if lo > hi {
                            self.error(&at, format!("min ({lo}) is greater than max ({hi})"));
                            return default;
                        }
                        Latency::Uniform {
                            min_us: ms_to_us(lo),
                            max_us: ms_to_us(hi),
                        }
                    }
                    "lognormal" => {
                        let Some(m) = self.object(body, &at, &["median", "p99"]) else {
                            return default;
                        };
                        let (Some(median), Some(p99)) = (m.get("median"), m.get("p99")) else {
                            self.error_help(
                                &at,
                                "needs both `median` and `p99` (milliseconds)",
                                "e.g. `lognormal: { median: 10, p99: 80 }`",
                            );
                            return default;
                        };
                        let (Some(median), Some(p99)) = (
                            positive(self, median, &join(&at, "median")),
                            positive(self, p99, &join(&at, "p99")),
                        ) else {
                            return default;
                        };
                        if p99 <= median {
                            self.error(
                                &at,
                                format!("p99 ({p99}) must be greater than the median ({median})"),
                            );
                            return default;
                        }
                        let mu = (median * 1000.0).ln();
                        Latency::LogNormal {
                            mu,
                            sigma: (p99.ln() - median.ln()) / Z99,
                        }
                    }
                    other => {
                        let help = match did_you_mean(other, ["fixed", "uniform", "lognormal"]) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => "use `fixed`, `uniform` or `lognormal`".to_string(),
                        };
                        self.error_help(
                            &at,
                            format!("unknown latency distribution `{other}`"),
                            help,
                        );
                        default
                    }
                }
            }
            other => {
                self.error_help(
                    &path,
                    format!("expected milliseconds or a distribution, found {}", kind_of(other)),
                    "write `5`, `{ fixed: 5 }`, `{ uniform: [2, 8] }` or `{ lognormal: { median: 10, p99: 80 } }`",
                );
                default
            }
        }
    }

    fn request(&mut self, map: &Map<String, Value>, path: &str) -> HttpRequest {
        let method = self
            .opt_str(map, "method", path)
            .unwrap_or_else(|| "GET".into());
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            self.error(
                &join(path, "method"),
                format!("`{method}` is not an HTTP method (uppercase letters, e.g. GET, POST)"),
            );
        }
        let path_value = self
            .opt_str(map, "path", path)
            .unwrap_or_else(|| "/".into());
        if !path_value.starts_with('/') || path_value.contains(char::is_whitespace) {
            self.error(
                &join(path, "path"),
                format!("`{path_value}` is not a request path (starts with `/`, no spaces)"),
            );
        }
        let route = self
            .opt_str(map, "route", path)
            .unwrap_or_else(|| path_value.clone());
        HttpRequest {
            method,
            path: path_value,
            route,
        }
    }

    fn topology(&mut self, root: &Value) -> Option<Topology> {
        let root = self.object(root, "", ROOT_KEYS)?;
        let description = self.opt_str(root, "description", "");
        let settings = self.settings(root);

        let mut services: Vec<Service> = Vec::new();
        let mut names: HashMap<String, Named> = HashMap::new();
        let mut defined_at: HashMap<String, String> = HashMap::new();
        for (i, v) in self.list(root, "services", "").iter().enumerate() {
            let path = format!("services[{i}]");
            let Some(s) = self.service(v, &path) else {
                continue;
            };
            let qualified = s.node_id();
            if let Some(prev) = defined_at.get(&qualified) {
                self.error(
                    &join(&path, "name"),
                    format!(
                        "service `{}` in namespace `{}` is already defined at {prev}",
                        s.name, s.namespace
                    ),
                );
                continue;
            }
            let target = Target::Service(services.len());
            defined_at.insert(qualified.clone(), path.clone());
            names.insert(qualified.clone(), Named::One(target, path.clone()));
            match names.get_mut(&s.name) {
                Some(Named::One(Target::Service(other), _)) => {
                    let other = services[*other].node_id();
                    names.insert(s.name.clone(), Named::Ambiguous(vec![other, qualified]));
                }
                Some(Named::Ambiguous(list)) => list.push(qualified),
                Some(Named::One(..)) => {}
                None => {
                    names.insert(s.name.clone(), Named::One(target, path.clone()));
                }
            }
            services.push(s);
        }
        if services.is_empty()
            && !self
                .diagnostics
                .iter()
                .any(|d| d.key_path.starts_with("services"))
        {
            self.error_help(
                "services",
                "a topology needs at least one service",
                "add `services: [{ name: frontend }]`",
            );
        }

        let mut databases = Vec::new();
        for (i, v) in self.list(root, "databases", "").iter().enumerate() {
            let path = format!("databases[{i}]");
            if let Some(d) = self.database(v, &path) {
                let t = Target::Database(databases.len());
                self.define(&mut names, &d.name, t, &path, "name");
                databases.push(d);
            }
        }
        let mut queues = Vec::new();
        for (i, v) in self.list(root, "queues", "").iter().enumerate() {
            let path = format!("queues[{i}]");
            if let Some(q) = self.queue(v, &path) {
                let t = Target::Queue(queues.len());
                self.define(&mut names, &q.name, t, &path, "name");
                queues.push(q);
            }
        }
        let mut externals = Vec::new();
        for (i, v) in self.list(root, "externals", "").iter().enumerate() {
            let path = format!("externals[{i}]");
            if let Some(e) = self.external(v, &path) {
                let t = Target::External(externals.len());
                self.define(&mut names, &e.host, t, &path, "host");
                if let Some(n) = &e.name {
                    self.define(&mut names, n, t, &path, "name");
                }
                externals.push(e);
            }
        }

        let entry = match root.get("entry") {
            None | Some(Value::Null) => {
                self.error_help(
                    "",
                    "missing required key `entry`",
                    "add `entry: { service: <name>, rate: 10 }` (root requests per second)",
                );
                None
            }
            Some(v) => self.entry(v, &names),
        };

        let mut calls = Vec::new();
        for (i, v) in self.list(root, "calls", "").iter().enumerate() {
            let path = format!("calls[{i}]");
            if let Some(c) = self.call(v, &path, &names, &services) {
                calls.push((path, c));
            }
        }
        if !self.diagnostics.is_empty() {
            return None;
        }
        self.check_cycles(&services, &calls);
        let topology = Topology {
            description,
            services,
            entry: entry?,
            calls: calls.into_iter().map(|(_, c)| c).collect(),
            databases,
            queues,
            externals,
            settings,
        };
        if !self.diagnostics.is_empty() {
            return None;
        }
        let max = topology.max_calls_per_request();
        if max > MAX_CALLS_PER_REQUEST {
            self.error_help(
                "calls",
                format!("one root request could make up to {max} calls (more than {MAX_CALLS_PER_REQUEST}), counting every `count`, retry and nested call"),
                "lower `count` or `retries` on the calls of deep paths",
            );
            return None;
        }
        Some(topology)
    }

    /// Records a referable name, reporting a clash with an earlier definition.
    fn define(
        &mut self,
        names: &mut HashMap<String, Named>,
        name: &str,
        target: Target,
        path: &str,
        key: &str,
    ) {
        if let Some(prev) = names.get(name) {
            let prev = match prev {
                Named::One(_, p) => p.clone(),
                Named::Ambiguous(list) => format!("services {}", list.join(", ")),
            };
            self.error_help(
                &join(path, key),
                format!("`{name}` is already defined at {prev}"),
                "names that calls refer to must be unique across services, databases, queues and externals",
            );
            return;
        }
        names.insert(name.to_string(), Named::One(target, path.to_string()));
    }

    fn resolve(
        &mut self,
        names: &HashMap<String, Named>,
        name: &str,
        path: &str,
    ) -> Option<Target> {
        match names.get(name) {
            Some(Named::One(t, _)) => Some(*t),
            Some(Named::Ambiguous(list)) => {
                self.error_help(
                    path,
                    format!("`{name}` is ambiguous: it names {}", list.join(" and ")),
                    format!("write the service as `{name}.<namespace>`"),
                );
                None
            }
            None => {
                let help = match did_you_mean(name, names.keys().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "define it under `services`, `databases`, `queues` or `externals`"
                        .to_string(),
                };
                self.error_help(
                    path,
                    format!("unknown service, database, queue or external `{name}`"),
                    help,
                );
                None
            }
        }
    }

    fn settings(&mut self, root: &Map<String, Value>) -> Settings {
        let d = Settings::default();
        let Some(v) = root.get("settings").filter(|v| !v.is_null()) else {
            return d;
        };
        let keys = [
            "network_latency_ms",
            "proxy_overhead_ms",
            "retry_backoff_ms",
            "connect_failure_ms",
            "cluster_domain",
            "mesh_id",
            "cluster_id",
            "zone",
        ];
        let Some(m) = self.object(v, "settings", &keys) else {
            return d;
        };
        let p = "settings";
        let cluster_domain = self
            .opt_str(m, "cluster_domain", p)
            .unwrap_or(d.cluster_domain);
        if !is_host(&cluster_domain) {
            self.error(
                &join(p, "cluster_domain"),
                format!("`{cluster_domain}` is not a DNS domain"),
            );
        }
        let mut connect_failure_us = self.ms(m, "connect_failure_ms", p, d.connect_failure_us);
        if connect_failure_us == 0 {
            connect_failure_us = 1;
        }
        Settings {
            network_latency_us: self.ms(m, "network_latency_ms", p, d.network_latency_us),
            proxy_overhead_us: self.ms(m, "proxy_overhead_ms", p, d.proxy_overhead_us),
            retry_backoff_us: self.ms(m, "retry_backoff_ms", p, d.retry_backoff_us),
            connect_failure_us,
            cluster_domain,
            mesh_id: self.opt_str(m, "mesh_id", p).unwrap_or(d.mesh_id),
            cluster_id: self.opt_str(m, "cluster_id", p).unwrap_or(d.cluster_id),
            zone: self.opt_str(m, "zone", p).unwrap_or(d.zone),
        }
    }

    fn service(&mut self, v: &Value, path: &str) -> Option<Service> {
        let m = self.object(
            v,
            path,
            &["name", "namespace", "versions", "port", "app_spans"],
        )?;
        let name = self.req_str(m, "name", path)?;
        let mut ok = true;
        if !is_dns_label(&name) {
            self.error_help(
                &join(path, "name"),
                format!("`{name}` is not a valid Kubernetes service name"),
                "use lowercase letters, digits and `-` (at most 63)",
            );
            ok = false;
        }
        let namespace = self
            .opt_str(m, "namespace", path)
            .unwrap_or_else(|| "default".into());
        if !is_dns_label(&namespace) {
            self.error_help(
                &join(path, "namespace"),
                format!("`{namespace}` is not a valid Kubernetes namespace"),
                "use lowercase letters, digits and `-` (at most 63)",
            );
            ok = false;
        }
        let mut versions = Vec::new();
        for (i, v) in self.list(m, "versions", path).iter().enumerate() {
            let at = format!("{}[{i}]", join(path, "versions"));
            match v {
                Value::String(s) if is_dns_label(s) && !versions.contains(s) => {
                    versions.push(s.clone())
                }
                Value::String(s) if versions.contains(s) => {
                    self.error(&at, format!("version `{s}` is listed twice"));
                    ok = false;
                }
                other => {
                    self.error_help(
                        &at,
                        format!(
                            "`{}` is not a version name",
                            other
                                .as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| other.to_string())
                        ),
                        "versions are labels like `v1` (lowercase letters, digits, `-`)",
                    );
                    ok = false;
                }
            }
        }
        if versions.is_empty() {
            versions.push("v1".into());
        }
        let port = self.opt_uint(m, "port", path, 65_535).unwrap_or(8080) as u16;
        if port == 0 {
            self.error(&join(path, "port"), "port 0 is not a service port");
            ok = false;
        }
        let app_spans = self.opt_bool(m, "app_spans", path).unwrap_or(false);
        ok.then_some(Service {
            name,
            namespace,
            versions,
            port,
            app_spans,
        })
    }

    fn database(&mut self, v: &Value, path: &str) -> Option<Database> {
        let m = self.object(v, path, &["name", "system", "host", "port"])?;
        let name = self.req_str(m, "name", path);
        let system = self.req_str(m, "system", path);
        let host = self.opt_str(m, "host", path);
        let port = self.opt_uint(m, "port", path, 65_535).map(|p| p as u16);
        let (name, system) = (name?, system?);
        if name.is_empty() || name.contains(char::is_whitespace) {
            self.error(
                &join(path, "name"),
                format!("`{name}` is not a database name (no spaces, not empty)"),
            );
            return None;
        }
        if system.is_empty() || system.contains(char::is_whitespace) {
            self.error_help(
                &join(path, "system"),
                format!("`{system}` is not a `db.system` value"),
                "e.g. postgresql, mysql, redis, mongodb",
            );
            return None;
        }
        if let Some(h) = &host
            && !is_host(h)
        {
            self.error(&join(path, "host"), format!("`{h}` is not a host name"));
            return None;
        }
        Some(Database {
            host: host.unwrap_or_else(|| name.clone()),
            name,
            system,
            port,
        })
    }

    fn queue(&mut self, v: &Value, path: &str) -> Option<Queue> {
        let m = self.object(v, path, &["name", "system", "destination", "host"])?;
        let name = self.req_str(m, "name", path);
        let system = self.req_str(m, "system", path);
        let destination = self.opt_str(m, "destination", path);
        let host = self.opt_str(m, "host", path);
        let (name, system) = (name?, system?);
        if name.is_empty() || name.contains(char::is_whitespace) {
            self.error(
                &join(path, "name"),
                format!("`{name}` is not a broker name (no spaces, not empty)"),
            );
            return None;
        }
        if system.is_empty() || system.contains(char::is_whitespace) {
            self.error_help(
                &join(path, "system"),
                format!("`{system}` is not a `messaging.system` value"),
                "e.g. kafka, rabbitmq, aws_sqs",
            );
            return None;
        }
        if let Some(h) = &host
            && !is_host(h)
        {
            self.error(&join(path, "host"), format!("`{h}` is not a host name"));
            return None;
        }
        Some(Queue {
            destination: destination.unwrap_or_else(|| name.clone()),
            name,
            system,
            host,
        })
    }

    fn external(&mut self, v: &Value, path: &str) -> Option<External> {
        let m = self.object(v, path, &["host", "name", "port", "scheme"])?;
        let host = self.req_str(m, "host", path)?;
        if !is_host(&host) {
            self.error_help(
                &join(path, "host"),
                format!("`{host}` is not a host name"),
                "lowercase DNS labels joined by dots, e.g. api.payments.example.com",
            );
            return None;
        }
        let name = self.opt_str(m, "name", path);
        let scheme = self
            .opt_str(m, "scheme", path)
            .unwrap_or_else(|| "https".into());
        if scheme != "https" && scheme != "http" {
            self.error(
                &join(path, "scheme"),
                format!("`{scheme}` must be `http` or `https`"),
            );
            return None;
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = self
            .opt_uint(m, "port", path, 65_535)
            .unwrap_or(default_port) as u16;
        Some(External {
            host,
            name,
            port,
            scheme,
        })
    }

    fn entry(&mut self, v: &Value, names: &HashMap<String, Named>) -> Option<Entry> {
        let path = "entry";
        let m = self.object(
            v,
            path,
            &[
                "service",
                "rate",
                "method",
                "path",
                "route",
                "latency",
                "error_rate",
            ],
        )?;
        let name = self.req_str(m, "service", path);
        let rate = self.opt_f64(m, "rate", path);
        let request = self.request(m, path);
        let latency = self.latency(m, "latency", path);
        let error_rate = self.rate(m, "error_rate", path);
        let service = match self.resolve(names, &name?, &join(path, "service"))? {
            Target::Service(s) => s,
            other => {
                self.error(
                    &join(path, "service"),
                    format!("the entry must be a service, not {}", describe(other)),
                );
                return None;
            }
        };
        let rate = match rate {
            Some(r) if r > 0.0 && r.is_finite() && r <= 1_000_000.0 => r,
            Some(r) => {
                self.error(
                    &join(path, "rate"),
                    format!("must be more than 0 and at most 1000000 requests per second, got {r}"),
                );
                return None;
            }
            None => {
                self.error_help(
                    path,
                    "missing required key `rate`",
                    "root requests per second, e.g. `rate: 10`",
                );
                return None;
            }
        };
        Some(Entry {
            service,
            rate,
            request,
            latency,
            error_rate,
        })
    }

    fn call(
        &mut self,
        v: &Value,
        path: &str,
        names: &HashMap<String, Named>,
        services: &[Service],
    ) -> Option<Call> {
        let keys = [
            "from",
            "from_versions",
            "to",
            "count",
            "probability",
            "method",
            "path",
            "route",
            "operation",
            "latency",
            "error_rate",
            "connect_failure_rate",
            "retries",
        ];
        let m = self.object(v, path, &keys)?;
        let from = self.req_str(m, "from", path);
        let to = self.req_str(m, "to", path);
        let from = match from.and_then(|f| self.resolve(names, &f, &join(path, "from"))) {
            Some(Target::Service(s)) => Some(s),
            Some(other) => {
                self.error(
                    &join(path, "from"),
                    format!("only services make calls; this is {}", describe(other)),
                );
                None
            }
            None => None,
        };
        let to = to.and_then(|t| self.resolve(names, &t, &join(path, "to")));
        let count = self.opt_uint(m, "count", path, 1000);
        let probability = self.opt_f64(m, "probability", path);
        let times = match (count, probability) {
            (Some(_), Some(_)) => {
                self.error_help(
                    path,
                    "both `count` and `probability` are set",
                    "a call is made `count` times, or once with `probability`; keep one",
                );
                Multiplicity::Count(1)
            }
            (Some(0), None) => {
                self.error_help(
                    &join(path, "count"),
                    "count 0 means the call never happens",
                    "remove the call instead",
                );
                Multiplicity::Count(1)
            }
            (Some(n), None) => Multiplicity::Count(n as u32),
            (None, Some(p)) if p > 0.0 && p <= 1.0 => Multiplicity::Probability(p),
            (None, Some(p)) => {
                self.error(
                    &join(path, "probability"),
                    format!("must be more than 0 and at most 1, got {p}"),
                );
                Multiplicity::Count(1)
            }
            (None, None) => Multiplicity::Count(1),
        };
        let latency = self.latency(m, "latency", path);
        let error_rate = self.rate(m, "error_rate", path);
        let connect_failure_rate = self.rate(m, "connect_failure_rate", path);
        if error_rate + connect_failure_rate > 1.0 {
            self.error(
                path,
                format!(
                    "`error_rate` + `connect_failure_rate` is {} (more than 1)",
                    error_rate + connect_failure_rate
                ),
            );
        }
        let retries = self.opt_uint(m, "retries", path, 10).unwrap_or(0) as u32;
        let mut from_versions = None;
        if let Some(list) = m.get("from_versions").filter(|v| !v.is_null()) {
            let at = join(path, "from_versions");
            match list.as_array() {
                Some(a) if !a.is_empty() => {
                    let mut vs = Vec::new();
                    for (i, v) in a.iter().enumerate() {
                        match (v.as_str(), from) {
                            (Some(s), Some(f)) if services[f].versions.iter().any(|x| x == s) => {
                                vs.push(s.to_string())
                            }
                            (Some(s), Some(f)) => {
                                let help = match did_you_mean(
                                    s,
                                    services[f].versions.iter().map(String::as_str),
                                ) {
                                    Some(x) => format!("did you mean `{x}`?"),
                                    None => format!(
                                        "`{}` has versions {}",
                                        services[f].name,
                                        services[f].versions.join(", ")
                                    ),
                                };
                                self.error_help(
                                    &format!("{at}[{i}]"),
                                    format!("`{}` has no version `{s}`", services[f].name),
                                    help,
                                );
                            }
                            (Some(_), None) => {}
                            (None, _) => self.error(
                                &format!("{at}[{i}]"),
                                format!("expected a version name, found {}", kind_of(v)),
                            ),
                        }
                    }
                    from_versions = Some(vs);
                }
                _ => self.error(&at, "expected a non-empty list of the caller's versions"),
            }
        }
        let to = to?;
        let http = to.is_http();
        let misplaced: &[&str] = if http {
            &["operation"]
        } else {
            &["method", "path", "route", "retries", "connect_failure_rate"]
        };
        for key in misplaced {
            if m.get(*key).is_some_and(|v| !v.is_null()) {
                let why = if http {
                    "`operation` applies to database and queue calls".to_string()
                } else {
                    format!(
                        "`{key}` applies to HTTP calls (services and externals); this call goes to {}",
                        describe(to)
                    )
                };
                self.error(&join(path, key), why);
            }
        }
        let request = self.request(m, path);
        let operation = self
            .opt_str(m, "operation", path)
            .unwrap_or_else(|| match to {
                Target::Queue(_) => "publish".into(),
                _ => "SELECT".into(),
            });
        if operation.is_empty() || operation.contains(char::is_whitespace) {
            self.error(
                &join(path, "operation"),
                format!("`{operation}` is not an operation name (one word, e.g. SELECT)"),
            );
        }
        Some(Call {
            from: from?,
            from_versions,
            to,
            times,
            request,
            operation,
            latency,
            error_rate,
            connect_failure_rate,
            retries,
        })
    }

    /// Reports the first cycle among service-to-service calls.
    fn check_cycles(&mut self, services: &[Service], calls: &[(String, Call)]) {
        let mut edges: Vec<Vec<(usize, &str)>> = vec![Vec::new(); services.len()];
        for (path, c) in calls {
            if let Target::Service(to) = c.to {
                edges[c.from].push((to, path.as_str()));
            }
        }
        // 0 = unvisited, 1 = on the current path, 2 = done.
        let mut state = vec![0u8; services.len()];
        let mut stack: Vec<(usize, &str)> = Vec::new();
        fn visit<'a>(
            n: usize,
            edges: &[Vec<(usize, &'a str)>],
            state: &mut [u8],
            stack: &mut Vec<(usize, &'a str)>,
        ) -> Option<(usize, &'a str)> {
            state[n] = 1;
            for &(m, path) in &edges[n] {
                if state[m] == 1 {
                    stack.push((m, path));
                    return Some((m, path));
                }
                if state[m] == 0 {
                    stack.push((m, path));
                    if let Some(found) = visit(m, edges, state, stack) {
                        return Some(found);
                    }
                    stack.pop();
                }
            }
            state[n] = 2;
            None
        }
        for start in 0..services.len() {
            if state[start] != 0 {
                continue;
            }
            stack.clear();
            stack.push((start, ""));
            if let Some((back_to, path)) = visit(start, &edges, &mut state, &mut stack) {
                let from = stack.iter().position(|&(n, _)| n == back_to).unwrap_or(0);
                let names: Vec<String> = stack[from..]
                    .iter()
                    .map(|&(n, _)| services[n].name.clone())
                    .collect();
                self.error_help(
                    path,
                    format!("calls form a cycle: {}", names.join(" -> ")),
                    "a simulated request must end: remove one of these calls",
                );
                return;
            }
        }
    }
}

fn describe(t: Target) -> &'static str {
    match t {
        Target::Service(_) => "a service",
        Target::Database(_) => "a database",
        Target::Queue(_) => "a queue",
        Target::External(_) => "an external API",
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn parse(text: &str) -> Result<Topology, TopologyError> {
        Topology::from_yaml_str(text, "t.yaml")
    }

    fn errors(text: &str) -> Vec<String> {
        parse(text)
            .expect_err("topology should be rejected")
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    const MINIMAL: &str = "services:\n  - name: a\n  - name: b\n    namespace: shop\nentry: { service: a, rate: 5 }\ncalls:\n  - { from: a, to: b }\n";

    #[test]
    fn a_minimal_file_gets_its_defaults() {
        let t = parse(MINIMAL).unwrap();
        assert_eq!(t.services[0].namespace, "default");
        assert_eq!(t.services[0].versions, vec!["v1"]);
        assert_eq!(t.services[0].port, 8080);
        assert!(!t.services[0].app_spans);
        assert_eq!(t.services[1].node_id(), "b.shop");
        assert_eq!(
            t.services[1].fqdn("cluster.local"),
            "b.shop.svc.cluster.local"
        );
        assert_eq!(t.entry.service, 0);
        assert_eq!(t.entry.rate, 5.0);
        assert_eq!(t.entry.request.path, "/");
        let c = &t.calls[0];
        assert_eq!((c.from, c.to), (0, Target::Service(1)));
        assert_eq!(c.times, Multiplicity::Count(1));
        assert_eq!(c.latency, Latency::Fixed { us: 1000 });
        assert_eq!(c.retries, 0);
        assert_eq!(t.settings, Settings::default());
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("topology.rs");
        let yaml: String = doc
            .lines()
            .skip_while(|l| *l != "//! ```yaml")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| {
                format!(
                    "{}\n",
                    l.trim_start_matches("//!").strip_prefix(' ').unwrap_or("")
                )
            })
            .collect();
        let t = parse(&yaml).unwrap();
        assert_eq!((t.services.len(), t.calls.len()), (3, 4));
        assert_eq!(t.services[1].versions, vec!["v1", "v2", "v3"]);
    }

    #[test]
    fn the_shipped_topologies_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let t =
                Topology::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                t.description.is_some(),
                "{} has a description",
                path.display()
            );
            assert!(!t.calls.is_empty());
            n += 1;
        }
        assert!(n >= 3, "bookinfo, shop and emojivoto ship");
    }

    #[test]
    fn an_unknown_callee_is_named_with_its_line_and_a_suggestion() {
        let e = errors(
            "services: [{ name: reviews }, { name: ratings }]\nentry: { service: reviews, rate: 1 }\ncalls:\n  - from: reviews\n    to: ratngs\n",
        );
        assert_eq!(
            e,
            vec![
                "error: t.yaml:5: calls[0].to: unknown service, database, queue or external `ratngs`\n  help: did you mean `ratings`?"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_reported_with_a_suggestion() {
        let e = errors(
            "services: [{ name: a, app_span: true }]\nentry: { service: a, rate: 1, latncy: 3 }\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("services[0].app_span: unknown key `app_span`")
                && e[0].contains("did you mean `app_spans`?"),
            "{e:?}"
        );
        assert!(
            e[1].contains("entry.latncy") && e[1].contains("`latency`"),
            "{e:?}"
        );
    }

    #[test]
    fn cycles_are_rejected_with_the_path() {
        let e = errors(
            "services: [{ name: a }, { name: b }, { name: c }]\nentry: { service: a, rate: 1 }\ncalls:\n  - { from: a, to: b }\n  - { from: b, to: c }\n  - { from: c, to: b }\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("calls form a cycle: b -> c -> b"), "{e:?}");
        assert!(e[0].starts_with("error: t.yaml:6: calls[2]"), "{e:?}");
        let e = errors(
            "services: [{ name: a }]\nentry: { service: a, rate: 1 }\ncalls: [{ from: a, to: a }]\n",
        );
        assert!(e[0].contains("cycle: a -> a"), "{e:?}");
    }

    #[test]
    fn values_are_checked() {
        let e = errors(concat!(
            "services: [{ name: Bad_Name }, { name: a }, { name: b }]\n",
            "entry: { service: a, rate: 0 }\n",
            "databases: [{ name: db, system: postgresql }]\n",
            "calls:\n",
            "  - { from: a, to: b, count: 2, probability: 0.5 }\n",
            "  - { from: a, to: b, error_rate: 1.5 }\n",
            "  - { from: a, to: db, retries: 2 }\n",
            "  - { from: db, to: a }\n",
            "  - { from: a, to: b, latency: { uniform: [5, 2] } }\n",
            "  - { from: a, to: b, latency: { lognormal: { median: 10, p99: 5 } } }\n",
            "  - { from: a, to: b, latency: { gauss: 3 } }\n",
            "  - { from: a, to: b, from_versions: [v2] }\n",
        ));
        let all = e.join("\n");
        for needle in [
            "services[0].name: `Bad_Name` is not a valid Kubernetes service name",
            "entry.rate: must be more than 0",
            "calls[0]: both `count` and `probability` are set",
            "calls[1].error_rate: must be a probability between 0 and 1, got 1.5",
            "calls[2].retries: `retries` applies to HTTP calls",
            "calls[3].from: only services make calls; this is a database",
            "calls[4].latency.uniform: min (5) is greater than max (2)",
            "calls[5].latency.lognormal: p99 (5) must be greater than the median (10)",
            "calls[6].latency.gauss: unknown latency distribution `gauss`",
            "calls[7].from_versions[0]: `a` has no version `v2`",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }

    #[test]
    fn names_must_be_unique_and_bare_names_unambiguous() {
        let e = errors("services: [{ name: a }, { name: a }]\nentry: { service: a, rate: 1 }\n");
        assert!(
            e[0].contains("service `a` in namespace `default` is already defined at services[0]"),
            "{e:?}"
        );
        let e = errors(
            "services: [{ name: a }]\ndatabases: [{ name: a, system: redis }]\nentry: { service: a, rate: 1 }\n",
        );
        assert!(
            e[0].contains("databases[0].name: `a` is already defined at services[0]"),
            "{e:?}"
        );
        let text = "services: [{ name: a, namespace: x }, { name: a, namespace: y }, { name: f }]\nentry: { service: f, rate: 1 }\ncalls: [{ from: f, to: a }]\n";
        let e = errors(text);
        assert!(
            e[0].contains("`a` is ambiguous: it names a.x and a.y"),
            "{e:?}"
        );
        let t = parse(&text.replace("to: a }", "to: a.y }")).unwrap();
        assert_eq!(t.calls[0].to, Target::Service(1));
    }

    #[test]
    fn missing_sections_and_bad_yaml_are_explained() {
        let e = errors("services: [{ name: a }]\n");
        assert!(e[0].contains("missing required key `entry`"), "{e:?}");
        let e = errors("entry: { service: a, rate: 1 }\n");
        assert!(e.iter().any(|m| m.contains("unknown service")), "{e:?}");
        let e = errors("services: [{ name: a }\n");
        assert!(e[0].contains("invalid YAML"), "{e:?}");
    }

    #[test]
    fn request_explosions_are_refused() {
        let e = errors(
            "services: [{ name: a }, { name: b }, { name: c }]\nentry: { service: a, rate: 1 }\ncalls:\n  - { from: a, to: b, count: 200 }\n  - { from: b, to: c, count: 100 }\n",
        );
        assert!(e[0].contains("could make up to 20200 calls"), "{e:?}");
    }

    #[test]
    fn latency_distributions_sample_in_range() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t = parse("services: [{ name: a }]\nentry: { service: a, rate: 1, latency: { lognormal: { median: 10, p99: 50 } } }\n").unwrap();
        let mut v: Vec<u64> = (0..20_000)
            .map(|_| t.entry.latency.sample(&mut rng))
            .collect();
        v.sort_unstable();
        let median = v[v.len() / 2] as f64;
        let p99 = v[v.len() * 99 / 100] as f64;
        assert!((9_000.0..11_000.0).contains(&median), "median {median}");
        assert!((42_000.0..60_000.0).contains(&p99), "p99 {p99}");
        let u = Latency::Uniform {
            min_us: 5,
            max_us: 7,
        };
        assert!(
            (0..1000)
                .map(|_| u.sample(&mut rng))
                .all(|x| (5..=7).contains(&x))
        );
        assert_eq!(
            Latency::fixed_ms(0.0001).sample(&mut rng),
            1,
            "never below 1 µs"
        );
    }
}
