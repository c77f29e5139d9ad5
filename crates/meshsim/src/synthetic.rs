//! Large synthetic meshes: a generated [`Topology`] of any size, for scale tests and benchmarks
//! (the service map at 1,000 services and 5,000 edges) where a hand-written topology file
//! would be thousands of lines.
//!
//! The shape is a layered call graph, like a real mesh behind an ingress gateway:
//!
//! - the entry service `istio-ingressgateway.istio-system` (layer 0) calls every *frontend*
//!   (layer 1, about 5% of the services);
//! - every other service sits in one of the deeper layers `2..=depth`, and is called by at
//!   least one service of the layer above it (so every service is reachable from the ingress);
//! - the remaining calls go from a service to a deeper layer (mostly the next one, mostly the
//!   same namespace), or to a database, a message queue or an external API (every one of
//!   those has at least one caller);
//! - a fraction of the calls are error-prone (`error_rate` 5–30%; HTTP ones also refuse a few
//!   connections and are retried).
//!
//! Calls only go to deeper layers, so the graph is acyclic, as the simulator requires. Call
//! probabilities are chosen so that, in expectation, *every* call is made equally often per
//! root request ([`Synthetic::traversals_per_root`]): a simulation of
//! [`Synthetic::roots_for_coverage`] roots exercises nearly every edge a few times at the
//! least possible cost, instead of hammering the frontends and never reaching the leaves.
//!
//! Everything is deterministic from [`SyntheticMesh::seed`].
//!
//! The topology files' sanity limit [`crate::topology::MAX_CALLS_PER_REQUEST`] (every
//! probability taken as 1) does not apply: a dense graph of this size has millions of paths,
//! but the calls are probabilistic and a root request makes
//! [`Synthetic::expected_calls_per_root`] calls on average (about `edges / frontends`).
//!
//! ```
//! use meshgate_meshsim::{Flavor, Simulator, SyntheticMesh};
//!
//! let mesh = SyntheticMesh::new(60, 240).with_seed(3).generate()?;
//! assert_eq!(mesh.topology.services.len(), 60);
//! assert_eq!(mesh.topology.calls.len(), 240);
//! let roots = mesh.roots_for_coverage(6.0);
//! let generated = Simulator::new(mesh.topology.clone(), Flavor::EnvoyOtlp).generate_roots(roots);
//! assert_eq!(generated.truth.traces, roots);
//! # Ok::<(), String>(())
//! ```

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::topology::{
    Call, Database, Entry, External, HttpRequest, Latency, Multiplicity, Queue, Service, Settings,
    Target, Topology,
};

/// Name of the entry service (an Istio ingress gateway).
pub const INGRESS_NAME: &str = "istio-ingressgateway";
/// Namespace of the entry service.
pub const INGRESS_NAMESPACE: &str = "istio-system";

/// Team-like namespace names; beyond them, `<name>-<n>`.
const NAMESPACES: &[&str] = &[
    "shop",
    "payments",
    "identity",
    "catalog",
    "search",
    "shipping",
    "billing",
    "media",
    "social",
    "ads",
    "analytics",
    "support",
    "inventory",
    "pricing",
    "fraud",
    "messaging",
    "accounts",
    "reviews",
    "loyalty",
    "partners",
    "content",
    "growth",
    "platform",
    "risk",
];

/// Domain nouns of service names (`<noun>-<role>`).
const NOUNS: &[&str] = &[
    "orders",
    "cart",
    "checkout",
    "users",
    "profile",
    "session",
    "auth",
    "token",
    "product",
    "price",
    "stock",
    "warehouse",
    "delivery",
    "tracking",
    "invoice",
    "ledger",
    "refund",
    "coupon",
    "offer",
    "banner",
    "image",
    "video",
    "thumbnail",
    "comment",
    "rating",
    "feed",
    "notify",
    "email",
    "sms",
    "push",
    "report",
    "metrics",
    "audit",
    "search",
    "index",
    "suggest",
    "ranking",
    "geo",
    "address",
    "tax",
    "currency",
    "wallet",
    "card",
    "fraud",
    "risk",
    "partner",
    "ticket",
    "chat",
];

/// Roles of service names (`<noun>-<role>`).
const ROLES: &[&str] = &[
    "api", "svc", "worker", "gateway", "backend", "reader", "writer", "cache", "sync", "store",
];

/// Database systems, cycled.
const DB_SYSTEMS: &[&str] = &["postgresql", "mysql", "redis", "mongodb"];

/// Broker systems, cycled.
const QUEUE_SYSTEMS: &[&str] = &["kafka", "rabbitmq"];

/// External API providers (`api.<word>.example.com`); beyond them, `<word>-<n>`.
const EXTERNALS: &[&str] = &[
    "payments", "maps", "mail", "sms", "tax", "shipping", "fx", "captcha", "geoip", "cdn",
];

/// The parameters of a synthetic mesh. Build with [`SyntheticMesh::new`] (which scales the
/// other parameters to the size) and adjust the public fields or `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticMesh {
    /// Mesh services, the ingress gateway included. At least 2.
    pub services: usize,
    /// Namespaces the services other than the ingress are spread over (the ingress is in
    /// `istio-system`). Default: one per 50 services, at least 1.
    pub namespaces: usize,
    /// Calls, i.e. distinct caller → callee pairs of the service graph, not counting the
    /// `user -> istio-ingressgateway.istio-system` edge of the root requests.
    pub edges: usize,
    /// Databases (`<noun>-db`, PostgreSQL, MySQL, Redis, MongoDB in turn). Default: one per
    /// 50 services, at least 1.
    pub databases: usize,
    /// Message brokers the services publish to. Default: 2 (or 0 below 20 services).
    pub queues: usize,
    /// External HTTP APIs (`api.<name>.example.com`). Default: one per 200 services, at
    /// least 1.
    pub externals: usize,
    /// Layers of services below the ingress (frontends are layer 1). Default 4.
    pub depth: usize,
    /// Fraction of calls that are error-prone. Default 0.03.
    pub error_edges: f64,
    /// Root requests per second at the ingress. Default 100.
    pub rate: f64,
    /// Seed of every random choice. Default 0.
    pub seed: u64,
}

/// A generated synthetic mesh: the topology and what a simulation of it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    /// The topology, ready for [`crate::Simulator::new`].
    pub topology: Topology,
    /// The smallest expected number of times a call is made per root request. Nearly every
    /// call has this rate; a few have more (a probability capped at 1 leaves surplus visits).
    pub traversals_per_root: f64,
    /// Expected calls (attempts included) per root request.
    pub expected_calls_per_root: f64,
}

impl Synthetic {
    /// Root requests to simulate so each call is made `per_call` times on average. Calls are
    /// random, so with `per_call = k` about `e^-k` of the edges are still missing (0.03% for
    /// 8); compare against the simulation's ground truth, not the topology, when every edge
    /// matters.
    pub fn roots_for_coverage(&self, per_call: f64) -> u64 {
        (per_call / self.traversals_per_root).ceil().max(1.0) as u64
    }

    /// Expected calls (attempts included) per root request.
    pub fn expected_calls_per_root(&self) -> f64 {
        self.expected_calls_per_root
    }

    /// Every service graph node the topology can produce: `user`, every service
    /// (`name.namespace`), database, queue and external host.
    pub fn node_ids(&self) -> Vec<String> {
        let t = &self.topology;
        let mut out = vec![crate::truth::USER_NODE.to_string()];
        out.extend(t.services.iter().map(Service::node_id));
        out.extend(t.databases.iter().map(|d| d.name.clone()));
        out.extend(t.queues.iter().map(|q| q.name.clone()));
        out.extend(t.externals.iter().map(|e| e.host.clone()));
        out
    }

    /// The service graph node a call reaches.
    pub fn target_node(&self, target: Target) -> String {
        let t = &self.topology;
        match target {
            Target::Service(s) => t.services[s].node_id(),
            Target::Database(d) => t.databases[d].name.clone(),
            Target::Queue(q) => t.queues[q].name.clone(),
            Target::External(e) => t.externals[e].host.clone(),
        }
    }
}

impl SyntheticMesh {
    /// `services` services and `edges` calls, the other parameters scaled to the size.
    pub fn new(services: usize, edges: usize) -> Self {
        SyntheticMesh {
            services,
            namespaces: (services / 50).max(1),
            edges,
            databases: (services / 50).max(1),
            queues: if services < 20 { 0 } else { 2 },
            externals: (services / 200).max(1),
            depth: 4,
            error_edges: 0.03,
            rate: 100.0,
            seed: 0,
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the number of namespaces.
    pub fn with_namespaces(mut self, namespaces: usize) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Sets the root request rate.
    pub fn with_rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    /// Frontends (layer 1): about 5% of the services below the ingress, at least 1.
    fn frontends(&self) -> usize {
        let below = self.services - 1;
        ((below as f64 * 0.05).round() as usize).clamp(1, below)
    }

    /// Layer sizes `1..=depth` (index 0 is layer 1): the frontends, then the rest spread
    /// over the deeper layers with weights 2, 3, 4... (wider towards the leaves).
    fn layer_sizes(&self) -> Vec<usize> {
        let below = self.services - 1;
        let front = self.frontends();
        let depth = self.depth.min(below - front + 1).max(1);
        let mut sizes = vec![front];
        let rest = below - front;
        if depth > 1 {
            let weights: Vec<usize> = (2..=depth).collect();
            let total: usize = weights.iter().sum();
            let mut left = rest;
            for (i, w) in weights.iter().enumerate() {
                let n = if i + 1 == weights.len() {
                    left
                } else {
                    (rest * w / total).max(1).min(left)
                };
                sizes.push(n);
                left -= n;
            }
        } else {
            sizes[0] += rest;
        }
        sizes.retain(|&n| n > 0);
        sizes
    }

    /// Checks the parameters: sizes and the number of edges the shape can hold.
    fn check(&self) -> Result<Vec<usize>, String> {
        if self.services < 2 {
            return Err(format!(
                "a synthetic mesh needs at least 2 services (the ingress and a frontend), got {}",
                self.services
            ));
        }
        if self.namespaces == 0 {
            return Err("a synthetic mesh needs at least 1 namespace".into());
        }
        if self.depth == 0 {
            return Err("a synthetic mesh needs a depth of at least 1 (the frontends)".into());
        }
        if !(0.0..=1.0).contains(&self.error_edges) {
            return Err(format!(
                "error_edges is a fraction of the calls, in [0, 1]; got {}",
                self.error_edges
            ));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!("rate must be a number above 0, got {}", self.rate));
        }
        let sizes = self.layer_sizes();
        let below = self.services - 1;
        let dependencies = self.databases + self.queues + self.externals;
        // The ingress calls every frontend, every deeper service has a parent, every
        // dependency a caller.
        let min = sizes[0] + (below - sizes[0]) + dependencies;
        // Every pair (caller, deeper service) and every (non-ingress service, dependency).
        let mut max = sizes[0];
        let mut deeper = below;
        for n in &sizes {
            deeper -= n;
            max += n * deeper;
        }
        max += below * dependencies;
        if self.edges < min || self.edges > max {
            return Err(format!(
                "{} edges do not fit a synthetic mesh of {} services over {} layers with {} \
                 databases, queues and external APIs: it needs between {min} and {max}",
                self.edges,
                self.services,
                sizes.len(),
                dependencies
            ));
        }
        Ok(sizes)
    }

    /// Generates the topology, or says why these parameters cannot make one.
    pub fn generate(&self) -> Result<Synthetic, String> {
        let sizes = self.check()?;
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x5EED_0F4E_5B00);

        // ---- services: the ingress, then layer by layer, namespaces spread at random -----
        let namespaces: Vec<String> = (0..self.namespaces)
            .map(|i| match NAMESPACES.get(i) {
                Some(n) => (*n).to_string(),
                None => format!(
                    "{}-{}",
                    NAMESPACES[i % NAMESPACES.len()],
                    i / NAMESPACES.len()
                ),
            })
            .collect();
        let mut services = vec![service(INGRESS_NAME, INGRESS_NAMESPACE)];
        let mut layer_of = vec![0usize];
        let mut ns_of = vec![usize::MAX];
        let mut layers: Vec<Vec<usize>> = vec![vec![0]];
        let mut used: HashSet<(usize, String)> = HashSet::new();
        for (l, &n) in sizes.iter().enumerate() {
            let mut members = Vec::with_capacity(n);
            for i in 0..n {
                // Every namespace gets frontends and services in every layer when it can.
                let ns = if i < self.namespaces {
                    i
                } else {
                    rng.random_range(0..self.namespaces)
                };
                let name = unique_name(&mut rng, &mut used, ns);
                members.push(services.len());
                services.push(service(&name, &namespaces[ns]));
                layer_of.push(l + 1);
                ns_of.push(ns);
            }
            layers.push(members);
        }
        let deepest = layers.len() - 1;

        // ---- dependencies ------------------------------------------------------------------
        let databases: Vec<Database> = (0..self.databases)
            .map(|i| {
                let system = DB_SYSTEMS[i % DB_SYSTEMS.len()];
                let noun = NOUNS[(i * 7 + 3) % NOUNS.len()];
                let suffix = if system == "redis" { "cache" } else { "db" };
                let name = if i < NOUNS.len() {
                    format!("{noun}-{suffix}")
                } else {
                    format!("{noun}-{suffix}-{}", i / NOUNS.len())
                };
                let port = match system {
                    "postgresql" => 5432,
                    "mysql" => 3306,
                    "redis" => 6379,
                    _ => 27017,
                };
                Database {
                    host: format!(
                        "{name}.{}.svc.cluster.local",
                        namespaces[i % namespaces.len()]
                    ),
                    name,
                    system: system.to_string(),
                    port: Some(port),
                }
            })
            .collect();
        let queues: Vec<Queue> = (0..self.queues)
            .map(|i| {
                let system = QUEUE_SYSTEMS[i % QUEUE_SYSTEMS.len()];
                let name = if i < QUEUE_SYSTEMS.len() {
                    system.to_string()
                } else {
                    format!("{system}-{}", i / QUEUE_SYSTEMS.len())
                };
                Queue {
                    destination: format!("{}-events", NOUNS[(i * 11 + 5) % NOUNS.len()]),
                    host: Some(format!("{name}.infra.svc.cluster.local")),
                    name,
                    system: system.to_string(),
                }
            })
            .collect();
        let externals: Vec<External> = (0..self.externals)
            .map(|i| {
                let word = match EXTERNALS.get(i) {
                    Some(w) => (*w).to_string(),
                    None => format!("{}-{}", EXTERNALS[i % EXTERNALS.len()], i / EXTERNALS.len()),
                };
                External {
                    host: format!("api.{word}.example.com"),
                    name: None,
                    port: 443,
                    scheme: "https".into(),
                }
            })
            .collect();
        let dependencies: Vec<Target> = (0..databases.len())
            .map(Target::Database)
            .chain((0..queues.len()).map(Target::Queue))
            .chain((0..externals.len()).map(Target::External))
            .collect();

        // ---- edges: ingress -> frontends, a parent for each deeper service, a caller for
        // each dependency, then random extra calls up to the budget ----------------------------
        let mut edges = Edges::with_capacity(self.edges);
        for &f in &layers[1] {
            edges.add(0, Target::Service(f));
        }
        for l in 2..=deepest {
            for &s in &layers[l] {
                let parent = pick_same_ns(&mut rng, &layers[l - 1], &ns_of, ns_of[s]);
                edges.add(parent, Target::Service(s));
            }
        }
        let leaves: Vec<usize> = layers[deepest].clone();
        let inner: Vec<usize> = layers[1..deepest].iter().flatten().copied().collect();
        for (i, &dep) in dependencies.iter().enumerate() {
            // A database belongs to a namespace (its host says which): one of its services
            // calls it. Queues and externals are shared.
            let caller = match dep {
                Target::Database(_) => pick_same_ns(&mut rng, &leaves, &ns_of, i % self.namespaces),
                _ => *leaves
                    .choose(&mut rng)
                    .expect("the deepest layer has services"),
            };
            edges.add(caller, dep);
        }
        let mut misses = 0usize;
        while edges.pairs.len() < self.edges {
            // Mostly an inner service calling a deeper one (the next layer three times in
            // four, the same namespace four times in five); else a dependency called by a
            // leaf (two times in three) or an inner service.
            let to_service =
                !inner.is_empty() && (dependencies.is_empty() || rng.random_bool(0.85));
            let (from, to) = if to_service {
                let from = *inner.choose(&mut rng).expect("inner services");
                let l = layer_of[from];
                let to_layer = if l + 1 == deepest || rng.random_bool(0.75) {
                    l + 1
                } else {
                    rng.random_range(l + 1..=deepest)
                };
                let to = if rng.random_bool(0.8) {
                    pick_same_ns(&mut rng, &layers[to_layer], &ns_of, ns_of[from])
                } else {
                    *layers[to_layer].choose(&mut rng).expect("non-empty layer")
                };
                (from, Target::Service(to))
            } else {
                let pool = if inner.is_empty() || rng.random_bool(0.67) {
                    &leaves
                } else {
                    &inner
                };
                let from = *pool.choose(&mut rng).expect("non-empty pool");
                (from, *dependencies.choose(&mut rng).expect("dependencies"))
            };
            if !edges.add(from, to) {
                misses += 1;
                // Near the densest possible graph random picks keep hitting taken pairs:
                // fill the rest in a fixed order.
                if misses > 20 * self.edges {
                    edges.fill(self.edges, &layers, &layer_of, &dependencies);
                    break;
                }
            }
        }
        let mut pairs = edges.pairs;
        if pairs.len() != self.edges {
            return Err(format!(
                "could only place {} of {} edges in a synthetic mesh of {} services",
                pairs.len(),
                self.edges,
                self.services
            ));
        }

        // ---- call details and probabilities ------------------------------------------------
        // Calls ordered by caller layer, so every caller's expected visits are known (all its
        // callers are in shallower layers) when its own calls get their probabilities.
        pairs.sort_by_key(|(from, to)| (layer_of[*from], *from, target_order(*to)));
        let tau = 1.0 / sizes[0] as f64;
        let mut visits = vec![0.0f64; services.len()];
        visits[0] = 1.0;
        let mut calls = Vec::with_capacity(pairs.len());
        let mut expected_calls = 0.0;
        let mut min_traversals = f64::INFINITY;
        for (from, to) in pairs {
            let error_prone = rng.random_bool(self.error_edges);
            let mut call = call_to(&mut rng, &services, &databases, to, error_prone);
            call.from = from;
            let v = visits[from];
            let p = if v > 0.0 { (tau / v).min(1.0) } else { 1.0 };
            call.times = if p >= 1.0 {
                Multiplicity::Count(1)
            } else {
                Multiplicity::Probability(p)
            };
            let fail = call.connect_failure_rate + call.error_rate;
            let attempts: f64 = (0..=call.retries).map(|i| fail.powi(i as i32)).sum();
            let made = v * p.min(1.0);
            expected_calls += made * attempts;
            min_traversals = min_traversals.min(made);
            if let Target::Service(s) = to {
                visits[s] += made * attempts * (1.0 - call.connect_failure_rate);
            }
            calls.push(call);
        }

        let entry = Entry {
            service: 0,
            rate: self.rate,
            request: http("GET", "/"),
            latency: lognormal(1.0, 5.0),
            error_rate: 0.001,
        };
        let topology = Topology {
            description: Some(format!(
                "synthetic mesh: {} services in {} namespaces, {} edges, {} databases, {} \
                 queues, {} external APIs, depth {}, seed {}",
                self.services,
                self.namespaces,
                self.edges,
                self.databases,
                self.queues,
                self.externals,
                sizes.len(),
                self.seed
            )),
            services,
            entry,
            calls,
            databases,
            queues,
            externals,
            settings: Settings::default(),
        };
        Ok(Synthetic {
            topology,
            traversals_per_root: min_traversals,
            expected_calls_per_root: expected_calls,
        })
    }
}

/// The calls placed so far: distinct (caller, callee) pairs in the order they were added.
struct Edges {
    pairs: Vec<(usize, Target)>,
    seen: HashSet<(usize, Target)>,
}

impl Edges {
    fn with_capacity(n: usize) -> Self {
        Edges {
            pairs: Vec::with_capacity(n),
            seen: HashSet::with_capacity(n),
        }
    }

    /// Adds the pair unless it is already there; whether it was added.
    fn add(&mut self, from: usize, to: Target) -> bool {
        let new = self.seen.insert((from, to));
        if new {
            self.pairs.push((from, to));
        }
        new
    }

    /// Adds free pairs in a fixed order (every service below the ingress to every dependency
    /// and every deeper service) until there are `want`.
    fn fill(&mut self, want: usize, layers: &[Vec<usize>], layer_of: &[usize], deps: &[Target]) {
        let services: Vec<usize> = layers[1..].iter().flatten().copied().collect();
        for &from in &services {
            let targets = deps.iter().copied().chain(
                services
                    .iter()
                    .filter(|&&to| layer_of[to] > layer_of[from])
                    .map(|&to| Target::Service(to)),
            );
            for to in targets {
                if self.pairs.len() == want {
                    return;
                }
                self.add(from, to);
            }
        }
    }
}

/// Sort key of targets: services first, then databases, queues, externals.
fn target_order(t: Target) -> (u8, usize) {
    match t {
        Target::Service(i) => (0, i),
        Target::Database(i) => (1, i),
        Target::Queue(i) => (2, i),
        Target::External(i) => (3, i),
    }
}

fn service(name: &str, namespace: &str) -> Service {
    Service {
        name: name.to_string(),
        namespace: namespace.to_string(),
        versions: vec!["v1".to_string()],
        port: 8080,
        app_spans: false,
    }
}

/// A `<noun>-<role>` name not yet used in namespace `ns` (numbered once they run out).
fn unique_name(rng: &mut StdRng, used: &mut HashSet<(usize, String)>, ns: usize) -> String {
    for _ in 0..32 {
        let name = format!(
            "{}-{}",
            NOUNS.choose(rng).expect("nouns"),
            ROLES.choose(rng).expect("roles")
        );
        if used.insert((ns, name.clone())) {
            return name;
        }
    }
    let base = format!(
        "{}-{}",
        NOUNS.choose(rng).expect("nouns"),
        ROLES.choose(rng).expect("roles")
    );
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| used.insert((ns, name.clone())))
        .expect("an unused number")
}

/// A random member of `pool` in namespace `ns` when there is one, else any member.
fn pick_same_ns(rng: &mut StdRng, pool: &[usize], ns_of: &[usize], ns: usize) -> usize {
    let same: Vec<usize> = pool.iter().copied().filter(|&s| ns_of[s] == ns).collect();
    *same
        .choose(rng)
        .or_else(|| pool.choose(rng))
        .expect("a non-empty pool")
}

fn http(method: &str, path: &str) -> HttpRequest {
    HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        route: path.to_string(),
    }
}

/// A log-normal latency with this median and p99, in milliseconds.
fn lognormal(median_ms: f64, p99_ms: f64) -> Latency {
    Latency::LogNormal {
        mu: (median_ms * 1000.0).ln(),
        sigma: (p99_ms / median_ms).ln() / 2.326_347_874_040_841,
    }
}

/// The call `to` with its request, latency and failure rates (probability set by the caller).
fn call_to(
    rng: &mut StdRng,
    services: &[Service],
    databases: &[Database],
    to: Target,
    error_prone: bool,
) -> Call {
    let error_rate = if error_prone {
        rng.random_range(0.05..0.3)
    } else {
        0.0
    };
    let mut call = Call {
        from: 0,
        from_versions: None,
        to,
        times: Multiplicity::Count(1),
        request: http("GET", "/"),
        operation: String::new(),
        latency: Latency::Fixed { us: 1000 },
        error_rate,
        connect_failure_rate: 0.0,
        retries: 0,
    };
    match to {
        Target::Service(s) => {
            let method = if rng.random_bool(0.2) { "POST" } else { "GET" };
            let noun = services[s].name.split('-').next().unwrap_or("items");
            call.request = http(method, &format!("/v1/{noun}"));
            let median = rng.random_range(0.5..8.0);
            call.latency = lognormal(median, median * rng.random_range(3.0..8.0));
            if error_prone && rng.random_bool(0.5) {
                call.connect_failure_rate = 0.02;
                call.retries = 1;
            }
        }
        Target::Database(d) => {
            let ops: &[&str] = if databases[d].system == "redis" {
                &["GET", "SET", "HGETALL"]
            } else {
                &["SELECT", "INSERT", "UPDATE"]
            };
            call.operation = ops.choose(rng).expect("operations").to_string();
            let median = rng.random_range(0.3..4.0);
            call.latency = lognormal(median, median * 5.0);
        }
        Target::Queue(_) => {
            call.operation = "publish".into();
            call.latency = lognormal(0.8, 4.0);
        }
        Target::External(_) => {
            call.request = http("POST", "/v1/requests");
            let median = rng.random_range(30.0..120.0);
            call.latency = lognormal(median, median * 4.0);
            call.connect_failure_rate = if error_prone { 0.05 } else { 0.005 };
            call.retries = 2;
        }
    }
    call
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truth::{USER_NODE, connection_type};
    use crate::{Flavor, Simulator};
    use std::collections::{BTreeMap, BTreeSet};

    fn mesh(services: usize, edges: usize, seed: u64) -> Synthetic {
        SyntheticMesh::new(services, edges)
            .with_seed(seed)
            .generate()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The distinct (caller node, callee node) pairs of the calls.
    fn call_pairs(m: &Synthetic) -> BTreeSet<(String, String)> {
        m.topology
            .calls
            .iter()
            .map(|c| (m.topology.services[c.from].node_id(), m.target_node(c.to)))
            .collect()
    }

    #[test]
    fn the_thousand_service_mesh_has_the_requested_counts() {
        let m = mesh(1000, 5000, 1);
        let t = &m.topology;
        assert_eq!(t.services.len(), 1000);
        assert_eq!(t.calls.len(), 5000);
        assert_eq!(call_pairs(&m).len(), 5000, "every call is a distinct edge");
        assert_eq!(t.databases.len(), 20);
        assert_eq!(t.queues.len(), 2);
        assert_eq!(t.externals.len(), 5);
        let namespaces: BTreeSet<&str> = t.services.iter().map(|s| s.namespace.as_str()).collect();
        assert_eq!(
            namespaces.len(),
            21,
            "20 namespaces and istio-system: {namespaces:?}"
        );
        let ids: BTreeSet<String> = m.node_ids().into_iter().collect();
        assert_eq!(ids.len(), 1 + 1000 + 20 + 2 + 5, "node ids are unique");
        assert_eq!(
            t.services[t.entry.service].node_id(),
            "istio-ingressgateway.istio-system"
        );
        for s in &t.services {
            assert!(
                !s.name.is_empty()
                    && s.name.len() <= 63
                    && s.name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{} is a DNS label",
                s.name
            );
        }
        let error_prone = t.calls.iter().filter(|c| c.error_rate > 0.0).count();
        assert!(
            (75..=225).contains(&error_prone),
            "about 3% of 5000 calls are error-prone: {error_prone}"
        );
        assert!(
            t.calls
                .iter()
                .any(|c| c.retries > 0 && c.connect_failure_rate > 0.0)
        );
        // The cost of a simulation: about edges / frontends calls per root.
        let per_root = m.expected_calls_per_root();
        assert!((80.0..=160.0).contains(&per_root), "{per_root}");
        assert!(m.traversals_per_root > 0.015 && m.traversals_per_root <= 1.0 / 50.0 + 1e-12);
    }

    #[test]
    fn generation_is_deterministic_by_seed() {
        assert_eq!(mesh(300, 1200, 7), mesh(300, 1200, 7));
        assert_ne!(mesh(300, 1200, 7).topology, mesh(300, 1200, 8).topology);
    }

    #[test]
    fn the_call_graph_is_acyclic_and_every_node_is_reachable_from_the_ingress() {
        for (services, edges, seed) in [(1000, 5000, 2), (40, 120, 3), (2, 3, 0), (12, 30, 4)] {
            let m = SyntheticMesh::new(services, edges)
                .with_seed(seed)
                .generate()
                .unwrap();
            let t = &m.topology;
            let what = format!("{services} services / {edges} edges");
            // Kahn's algorithm over the service-to-service calls: every service is removed.
            let mut indegree = vec![0usize; t.services.len()];
            for c in &t.calls {
                if let Target::Service(s) = c.to {
                    indegree[s] += 1;
                }
            }
            let by = t.calls_by_service();
            let mut ready: Vec<usize> = (0..t.services.len())
                .filter(|&s| indegree[s] == 0)
                .collect();
            assert_eq!(
                ready,
                vec![t.entry.service],
                "{what}: only the ingress is uncalled"
            );
            let mut removed = 0;
            while let Some(s) = ready.pop() {
                removed += 1;
                for &ci in &by[s] {
                    if let Target::Service(to) = t.calls[ci].to {
                        indegree[to] -= 1;
                        if indegree[to] == 0 {
                            ready.push(to);
                        }
                    }
                }
            }
            assert_eq!(removed, t.services.len(), "{what}: the calls form a cycle");
            // Reachable: walk every call with a probability above 0 from the entry.
            let mut reached = BTreeSet::from([t.services[t.entry.service].node_id()]);
            let mut stack = vec![t.entry.service];
            let mut seen = vec![false; t.services.len()];
            seen[t.entry.service] = true;
            while let Some(s) = stack.pop() {
                for &ci in &by[s] {
                    let c = &t.calls[ci];
                    if let Multiplicity::Probability(p) = c.times {
                        assert!(p > 0.0 && p <= 1.0, "{what}: probability {p}");
                    }
                    reached.insert(m.target_node(c.to));
                    if let Target::Service(to) = c.to
                        && !seen[to]
                    {
                        seen[to] = true;
                        stack.push(to);
                    }
                }
            }
            reached.insert(USER_NODE.to_string());
            let all: BTreeSet<String> = m.node_ids().into_iter().collect();
            assert_eq!(
                reached, all,
                "{what}: every node is reachable from the ingress"
            );
        }
    }

    #[test]
    fn a_simulation_covers_the_edges_evenly_and_the_failures_show() {
        let m = mesh(120, 600, 5);
        let roots = m.roots_for_coverage(10.0);
        let g = Simulator::new(m.topology.clone(), Flavor::EnvoyOtlp)
            .with_seed(5)
            .generate_roots(roots);
        let truth = &g.truth;
        assert_eq!(truth.traces, roots);
        // The edges the truth has, per node pair (every connection type together).
        let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (k, e) in &truth.edges {
            *got.entry((k.client.clone(), k.server.clone())).or_default() += e.requests;
        }
        let ingress = m.topology.services[0].node_id();
        assert_eq!(got.get(&(USER_NODE.to_string(), ingress)), Some(&roots));
        let want = call_pairs(&m);
        let got_pairs: BTreeSet<(String, String)> = got
            .keys()
            .filter(|(c, _)| c != USER_NODE)
            .cloned()
            .collect();
        assert!(
            got_pairs.is_subset(&want),
            "the truth has only the topology's edges"
        );
        // Ten expected traversals per call: e^-10 of 600 edges, i.e. none, are missing.
        let missing: Vec<_> = want.difference(&got_pairs).collect();
        assert!(missing.len() <= 2, "edges never exercised: {missing:?}");
        // Evenly: the median edge is made about ten times (retries add attempts).
        let mut counts: Vec<u64> = got
            .iter()
            .filter(|((c, _), _)| c != USER_NODE)
            .map(|(_, n)| *n)
            .collect();
        counts.sort_unstable();
        let median = counts[counts.len() / 2];
        assert!(
            (6..=16).contains(&median),
            "median requests per edge {median}"
        );
        // Every attempt is one edge request; the roots' `user` edge is not a call.
        let calls = (truth.total_requests() - roots) as f64;
        let expected = m.expected_calls_per_root() * roots as f64;
        assert!(
            (calls - expected).abs() < 0.15 * expected,
            "{calls} calls simulated, {expected} expected"
        );
        let failed: u64 = truth.edges.values().map(|e| e.failed).sum();
        assert!(failed > 0, "error-prone edges fail");
        assert!(
            truth
                .edges
                .keys()
                .any(|k| k.connection_type == connection_type::DATABASE)
        );
        assert!(
            truth
                .edges
                .keys()
                .any(|k| k.connection_type == connection_type::MESSAGING_SYSTEM)
        );
    }

    #[test]
    fn impossible_parameters_are_refused_with_the_reason() {
        let e = SyntheticMesh::new(1, 0).generate().unwrap_err();
        assert!(e.contains("at least 2 services"), "{e}");
        let e = SyntheticMesh::new(100, 10).generate().unwrap_err();
        assert!(
            e.contains("10 edges do not fit") && e.contains("between"),
            "{e}"
        );
        let e = SyntheticMesh::new(10, 1_000_000).generate().unwrap_err();
        assert!(e.contains("do not fit"), "{e}");
        let e = SyntheticMesh::new(10, 20)
            .with_namespaces(0)
            .generate()
            .unwrap_err();
        assert!(e.contains("namespace"), "{e}");
        let e = SyntheticMesh::new(10, 20)
            .with_rate(0.0)
            .generate()
            .unwrap_err();
        assert!(e.contains("rate"), "{e}");
    }

    #[test]
    fn the_densest_mesh_is_filled_exactly() {
        let base = SyntheticMesh::new(12, 0);
        let max = match base.generate() {
            Err(e) => e
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("{e}")),
            Ok(_) => panic!("0 edges cannot hold the tree"),
        };
        let m = SyntheticMesh { edges: max, ..base }.generate().unwrap();
        assert_eq!(call_pairs(&m).len(), max);
    }
}
