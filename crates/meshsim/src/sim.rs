//! The simulation itself: one root request at a time, depth first through the topology,
//! building the spans each proxy and SDK would report and recording the ground truth they
//! imply as it goes.
//!
//! Timing of one HTTP hop `A -> B` (all integers, microsecond multiples): A's application
//! issues the call at `s`; A's proxy sends attempt `k` at `t`; B's proxy receives it at
//! `t + net`, B's application at `t + net + ovh`, works (half its own time, its calls in
//! order, the other half) until `e`; B's proxy answers at `e + ovh`, A's proxy has the
//! answer at `e + ovh + net`. Retries follow after `retry_backoff`. The application has the
//! final answer one `ovh` after the last attempt.
//!
//! Spans per flavor (wire spans are the service graph's edge ends):
//!
//! | | caller, around the attempts | per attempt (wire) | callee (wire) | callee, inside |
//! |---|---|---|---|---|
//! | Envoy OTLP | app CLIENT if `app_spans` | sidecar CLIENT | sidecar SERVER | app SERVER if `app_spans` |
//! | Envoy Zipkin | — | CLIENT | SERVER (shared id when `shared`) | — |
//! | Linkerd | outbound SERVER | outbound CLIENT | inbound SERVER | inbound CLIENT |
//!
//! Database and queue calls are made by the application's client library, so in every flavor
//! they are application spans (OTLP SDK spans, or Zipkin spans under the workload's name).

use std::sync::Arc;

use meshgate_pdata::attributes::{kv, kv_str};
use meshgate_pdata::otlp::{
    InstrumentationScope, KeyValue, Span, Status, any_value::Value, span::SpanKind,
    status::StatusCode,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Flavor;
use crate::emit::{Emitter, FlushPolicies, SimSpan, ZipkinLocal};
use crate::topology::{Call, HttpRequest, Latency, Multiplicity, Service, Target, Topology};
use crate::truth::{EdgeKey, GroundTruth, USER_NODE, connection_type, normalise_peer};

/// The address root requests come from (outside the mesh).
const USER_IP: &str = "192.168.10.20";
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0";
/// Instrumentation scope of application SDK spans.
const SDK_SCOPE: &str = "meshgate-meshsim/app";

/// splitmix64: derives independent seeds from one.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stable hash of a string (FNV-1a), for pod names and addresses that do not depend on the
/// seed.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One pod of a service version: its proxy and its application each export spans.
#[derive(Debug, Clone)]
struct Pod {
    name: String,
    ip: String,
    proxy: usize,
    app: usize,
}

/// State of one trace while it is simulated.
struct Trace {
    rng: StdRng,
    trace_id: Vec<u8>,
    request_id: String,
}

impl Trace {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut trace_id = vec![0u8; 16];
        while trace_id.iter().all(|&b| b == 0) {
            rng.fill(&mut trace_id[..]);
        }
        let a: u128 = rng.random();
        let request_id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            (a >> 96) as u32,
            (a >> 80) as u16,
            (a >> 68) as u16 & 0xfff,
            ((a >> 52) as u16 & 0x3fff) | 0x8000,
            a as u64 & 0xffff_ffff_ffff
        );
        Trace {
            rng,
            trace_id,
            request_id,
        }
    }

    fn new_id(&mut self) -> Vec<u8> {
        loop {
            let v: u64 = self.rng.random();
            if v != 0 {
                return v.to_be_bytes().to_vec();
            }
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The callee answered 503.
    ServerError,
    /// The attempt never reached the callee.
    ConnectFailure,
}

impl Outcome {
    /// The HTTP status the caller's application finally sees (Envoy and Linkerd answer a
    /// connection failure themselves).
    fn app_status(self, flavor: Flavor) -> i64 {
        match self {
            Outcome::Ok => 200,
            Outcome::ServerError => 503,
            Outcome::ConnectFailure if flavor == Flavor::Linkerd => 502,
            Outcome::ConnectFailure => 503,
        }
    }
}

/// Where an HTTP call goes.
struct HttpTarget {
    /// `Some(service index)` for mesh services, `None` for external APIs.
    service: Option<usize>,
    /// DNS name (`reviews.default.svc.cluster.local`, `api.example.com`).
    fqdn: String,
    /// Host as the caller writes it in the URL.
    url_host: String,
    port: u16,
    scheme: String,
    /// Address answering external calls (external APIs have no pod).
    external_ip: String,
}

/// How the callee's wire span links to the caller's.
enum Link {
    /// A root request from outside the mesh.
    Root,
    /// An attempt from a client span.
    Child {
        client_id: Vec<u8>,
        client_parent: Vec<u8>,
    },
}

/// The callee's wire span, returned unpushed so the caller can record the edge first.
struct Served {
    span: Span,
    emitter: usize,
    shared: bool,
    pod_ip: String,
}

/// The simulator's state across traces.
pub(crate) struct Engine {
    topo: Arc<Topology>,
    flavor: Flavor,
    calls_by: Vec<Vec<usize>>,
    pods: Vec<Vec<Pod>>,
    pub(crate) emitters: Vec<Emitter>,
    red_service: Vec<String>,
    pub(crate) truth: GroundTruth,
    /// Whether the truth keeps every duration (tests) or only counts (long streams).
    pub(crate) keep_durations: bool,
    span_seq: u64,
}

impl Engine {
    pub(crate) fn new(
        topo: Arc<Topology>,
        flavor: Flavor,
        seed: u64,
        start: u64,
        flush: FlushPolicies,
    ) -> Self {
        let mut emitters = Vec::new();
        let mut red_service = Vec::new();
        let mut pods = Vec::new();
        let mut k = 0u64;
        for svc in &topo.services {
            let mut versions = Vec::new();
            for version in &svc.versions {
                let h = fnv(&format!("{}.{}.{version}", svc.name, svc.namespace));
                let name = format!(
                    "{}-{version}-{:010x}-{}",
                    svc.name,
                    (h >> 24) & 0xff_ffff_ffff,
                    pod_suffix(h)
                );
                let ip = format!(
                    "10.{}.{}.{}",
                    1 + k / 62_500 % 250,
                    k / 250 % 250,
                    k % 250 + 2
                );
                k += 1;
                let node = svc.node_id();
                let (proxy_resource, proxy_scope, proxy_red) = match flavor {
                    Flavor::EnvoyOtlp => (vec![kv_str("service.name", &node)], None, node.clone()),
                    Flavor::EnvoyZipkin { .. } => (Vec::new(), None, node.clone()),
                    Flavor::Linkerd => (
                        vec![
                            kv_str("service.name", &svc.name),
                            kv_str("k8s.namespace.name", &svc.namespace),
                            kv_str("k8s.pod.name", &name),
                        ],
                        Some(InstrumentationScope {
                            name: "linkerd-proxy".into(),
                            ..Default::default()
                        }),
                        svc.name.clone(),
                    ),
                };
                let (app_resource, app_scope, app_red) = match flavor {
                    Flavor::EnvoyZipkin { .. } => (Vec::new(), None, node.clone()),
                    _ => (
                        vec![
                            kv_str("service.name", &svc.name),
                            kv_str("service.namespace", &svc.namespace),
                            kv_str("service.version", version),
                            kv_str("service.instance.id", &name),
                            kv_str("telemetry.sdk.name", "opentelemetry"),
                            kv_str("telemetry.sdk.language", "java"),
                        ],
                        Some(InstrumentationScope {
                            name: SDK_SCOPE.into(),
                            ..Default::default()
                        }),
                        svc.name.clone(),
                    ),
                };
                let zipkin = matches!(flavor, Flavor::EnvoyZipkin { .. }).then(|| ZipkinLocal {
                    service_name: node.clone(),
                    ipv4: ip.clone(),
                });
                let phase = |idx: usize, interval: std::time::Duration| {
                    let ns = (interval.as_nanos() as u64).max(1);
                    // Whole microseconds, like every other simulated time.
                    start + mix(seed ^ mix(idx as u64)) % ns / 1000 * 1000
                };
                let proxy = emitters.len();
                emitters.push(Emitter::new(
                    proxy_resource,
                    proxy_scope,
                    zipkin.clone(),
                    flush.proxy,
                    phase(proxy, flush.proxy.interval),
                ));
                red_service.push(proxy_red);
                let app = emitters.len();
                emitters.push(Emitter::new(
                    app_resource,
                    app_scope,
                    zipkin,
                    flush.app,
                    phase(app, flush.app.interval),
                ));
                red_service.push(app_red);
                versions.push(Pod {
                    name,
                    ip,
                    proxy,
                    app,
                });
            }
            pods.push(versions);
        }
        Engine {
            calls_by: topo.calls_by_service(),
            topo,
            flavor,
            pods,
            emitters,
            red_service,
            truth: GroundTruth::default(),
            keep_durations: true,
            span_seq: 0,
        }
    }

    fn net(&self) -> u64 {
        self.topo.settings.network_latency_us * 1000
    }

    fn ovh(&self) -> u64 {
        self.topo.settings.proxy_overhead_us * 1000
    }

    fn zipkin(&self) -> bool {
        matches!(self.flavor, Flavor::EnvoyZipkin { .. })
    }

    /// Zipkin span names are lowercase by convention; keep the truth on what is sent.
    fn name(&self, s: String) -> String {
        if self.zipkin() { s.to_lowercase() } else { s }
    }

    fn push(&mut self, emitter: usize, span: Span, shared: bool, remote: Option<(String, u16)>) {
        self.truth
            .record_red(&self.red_service[emitter], &span, self.keep_durations);
        self.truth.spans.total += 1;
        self.span_seq += 1;
        self.emitters[emitter].push(SimSpan {
            span,
            shared,
            remote,
            seq: self.span_seq,
        });
    }

    /// Simulates one root request arriving at `arrival` (Unix ns).
    pub(crate) fn root(&mut self, arrival: u64, trace_seed: u64) {
        let topo = self.topo.clone();
        let entry = &topo.entry;
        let mut tr = Trace::new(trace_seed);
        let failed = tr.rng.random_bool(entry.error_rate);
        let svc = &topo.services[entry.service];
        let host = svc.fqdn(&topo.settings.cluster_domain);
        let served = self.serve(
            &mut tr,
            entry.service,
            Link::Root,
            arrival,
            &entry.latency,
            failed,
            &entry.request,
            (&host, USER_IP),
        );
        self.truth.traces += 1;
        self.truth.spans.roots += 1;
        self.truth.record_edge(
            EdgeKey::new(USER_NODE, &svc.node_id(), connection_type::VIRTUAL_NODE),
            None,
            Some(&served.span),
            true,
            self.keep_durations,
        );
        self.push(served.emitter, served.span, served.shared, None);
    }

    /// Service `b` handles one request (a root or an attempt) that its proxy receives at
    /// `t0`. Pushes the spans inside `b` and returns its wire (proxy SERVER) span.
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &mut self,
        tr: &mut Trace,
        b: usize,
        link: Link,
        t0: u64,
        latency: &Latency,
        failed: bool,
        req: &HttpRequest,
        (url_host, caller_ip): (&str, &str),
    ) -> Served {
        let topo = self.topo.clone();
        let svc = &topo.services[b];
        let ver = tr.rng.random_range(0..svc.versions.len());
        let pod = self.pods[b][ver].clone();
        let (id, parent, shared) = match link {
            Link::Root => (tr.new_id(), Vec::new(), false),
            Link::Child {
                client_id,
                client_parent,
            } => match self.flavor {
                Flavor::EnvoyZipkin { shared: true } => (client_id, client_parent, true),
                _ => (tr.new_id(), client_id, false),
            },
        };
        let inner = match self.flavor {
            Flavor::EnvoyOtlp if svc.app_spans => Some(tr.new_id()),
            Flavor::Linkerd => Some(tr.new_id()),
            _ => None,
        };
        let ctx = inner.clone().unwrap_or_else(|| id.clone());
        let app_start = t0 + self.ovh();
        let app_end = self.work(tr, b, ver, &ctx, app_start, latency);
        let end = app_end + self.ovh();
        let status = if failed { 503 } else { 200 };
        let response_size = if failed {
            95
        } else {
            tr.rng.random_range(180..4_000)
        };
        let fqdn = svc.fqdn(&topo.settings.cluster_domain);
        let port = svc.port;

        if let Some(inner_id) = inner {
            let span = match self.flavor {
                Flavor::Linkerd => {
                    let mut attrs = linkerd_attrs("inbound", req, "http", &pod.ip, port, status);
                    attrs.push(kv_str("network.transport", "tcp"));
                    self.span(
                        tr,
                        inner_id,
                        &id,
                        req.path.clone(),
                        SpanKind::Client,
                        app_start,
                        app_end,
                        attrs,
                        StatusCode::Unset,
                    )
                }
                _ => {
                    let attrs = vec![
                        kv_str("http.request.method", &req.method),
                        kv_str("url.scheme", "http"),
                        kv_str("url.path", &req.path),
                        kv_str("http.route", &req.route),
                        kv_str("server.address", url_host),
                        kv("server.port", Value::IntValue(i64::from(port))),
                        kv_str("client.address", caller_ip),
                        kv_str("user_agent.original", USER_AGENT),
                        kv("http.response.status_code", Value::IntValue(status)),
                    ];
                    let name = format!("{} {}", req.method, req.route);
                    self.span(
                        tr,
                        inner_id,
                        &id,
                        name,
                        SpanKind::Server,
                        app_start,
                        app_end,
                        attrs,
                        sdk_status(failed),
                    )
                }
            };
            let emitter = if self.flavor == Flavor::Linkerd {
                pod.proxy
            } else {
                pod.app
            };
            self.truth.spans.intra_workload += 1;
            self.push(emitter, span, false, None);
        }

        let span = match self.flavor {
            Flavor::Linkerd => {
                let mut attrs = linkerd_attrs("inbound", req, "http", &fqdn, port, status);
                attrs.push(kv_str("network.transport", "tcp"));
                self.span(
                    tr,
                    id,
                    &parent,
                    req.path.clone(),
                    SpanKind::Server,
                    t0,
                    end,
                    attrs,
                    StatusCode::Unset,
                )
            }
            _ => {
                let cluster = format!("inbound|{port}||");
                let mut attrs = self.envoy_common(
                    svc,
                    &pod,
                    tr,
                    req,
                    &format!("http://{url_host}:{port}{}", req.path),
                );
                attrs.extend([
                    kv_str("peer.address", caller_ip),
                    kv_str("request_size", "0"),
                    kv_str("response_size", &response_size.to_string()),
                    kv_str("response_flags", "-"),
                    kv_str("upstream_cluster", &cluster),
                    kv_str("upstream_cluster.name", &cluster),
                    kv_str("upstream_address", &format!("{}:{port}", pod.ip)),
                    kv_str("http.status_code", &status.to_string()),
                ]);
                if failed {
                    attrs.push(kv_str("error", "true"));
                }
                attrs.extend(self.istio_tags(svc, ver));
                let name = self.name(format!("{fqdn}:{port}/*"));
                self.span(
                    tr,
                    id,
                    &parent,
                    name,
                    SpanKind::Server,
                    t0,
                    end,
                    attrs,
                    StatusCode::Unset,
                )
            }
        };
        Served {
            span,
            emitter: pod.proxy,
            shared,
            pod_ip: pod.ip,
        }
    }

    /// Service `svc` (version `ver`) works on a request from `start`; `ctx` is the span its
    /// outgoing calls descend from. Returns when it is done.
    fn work(
        &mut self,
        tr: &mut Trace,
        svc: usize,
        ver: usize,
        ctx: &[u8],
        start: u64,
        latency: &Latency,
    ) -> u64 {
        let topo = self.topo.clone();
        let own = latency.sample(&mut tr.rng) * 1000;
        let before = own / 2 / 1000 * 1000;
        let mut t = start + before;
        let version = &topo.services[svc].versions[ver];
        for i in 0..self.calls_by[svc].len() {
            let call = &topo.calls[self.calls_by[svc][i]];
            if call
                .from_versions
                .as_ref()
                .is_some_and(|vs| !vs.contains(version))
            {
                continue;
            }
            let n = match call.times {
                Multiplicity::Count(n) => n,
                Multiplicity::Probability(p) => u32::from(tr.rng.random_bool(p)),
            };
            for _ in 0..n {
                t = match call.to {
                    Target::Database(_) | Target::Queue(_) => {
                        self.client_library_call(tr, svc, ver, ctx, call, t)
                    }
                    Target::Service(_) | Target::External(_) => {
                        self.http_call(tr, svc, ver, ctx, call, t)
                    }
                };
            }
        }
        t + (own - before)
    }

    /// A database query or a publish, reported by the application's client library.
    fn client_library_call(
        &mut self,
        tr: &mut Trace,
        a: usize,
        ver: usize,
        ctx: &[u8],
        call: &Call,
        s: u64,
    ) -> u64 {
        let topo = self.topo.clone();
        let svc = &topo.services[a];
        let pod = self.pods[a][ver].clone();
        let end = s + call.latency.sample(&mut tr.rng) * 1000 + 2 * self.net();
        let failed = tr.rng.random_bool(call.error_rate);
        let id = tr.new_id();
        let (name, kind, attrs, peer, ctype) = match call.to {
            Target::Database(d) => {
                let db = &topo.databases[d];
                let mut attrs = vec![
                    kv_str("db.system", &db.system),
                    kv_str("db.name", &db.name),
                    kv_str("db.operation", &call.operation),
                    kv_str("server.address", &db.host),
                ];
                if let Some(p) = db.port {
                    attrs.push(kv("server.port", Value::IntValue(i64::from(p))));
                }
                (
                    format!("{} {}", call.operation, db.name),
                    SpanKind::Client,
                    attrs,
                    &db.name,
                    connection_type::DATABASE,
                )
            }
            Target::Queue(q) => {
                let q = &topo.queues[q];
                let mut attrs = vec![
                    kv_str("messaging.system", &q.system),
                    kv_str("messaging.destination.name", &q.destination),
                    kv_str("messaging.operation", &call.operation),
                    kv_str("peer.service", &q.name),
                ];
                if let Some(h) = &q.host {
                    attrs.push(kv_str("server.address", h));
                }
                (
                    format!("{} {}", call.operation, q.destination),
                    SpanKind::Producer,
                    attrs,
                    &q.name,
                    connection_type::MESSAGING_SYSTEM,
                )
            }
            _ => unreachable!("HTTP calls go through http_call"),
        };
        let name = self.name(name);
        let span = self.span(tr, id, ctx, name, kind, s, end, attrs, sdk_status(failed));
        self.truth.spans.virtual_clients += 1;
        self.truth.record_edge(
            EdgeKey::new(&svc.node_id(), &normalise_peer(peer), ctype),
            Some(&span),
            None,
            false,
            self.keep_durations,
        );
        self.push(pod.app, span, false, None);
        end
    }

    /// An HTTP call through the caller's proxy, with its attempts.
    fn http_call(
        &mut self,
        tr: &mut Trace,
        a: usize,
        ver: usize,
        ctx: &[u8],
        call: &Call,
        s: u64,
    ) -> u64 {
        let topo = self.topo.clone();
        let settings = &topo.settings;
        let asvc = &topo.services[a];
        let pod = self.pods[a][ver].clone();
        let target = match call.to {
            Target::Service(b) => {
                let bs = &topo.services[b];
                HttpTarget {
                    service: Some(b),
                    fqdn: bs.fqdn(&settings.cluster_domain),
                    url_host: if bs.namespace == asvc.namespace {
                        bs.name.clone()
                    } else {
                        bs.node_id()
                    },
                    port: bs.port,
                    scheme: "http".into(),
                    external_ip: String::new(),
                }
            }
            Target::External(e) => {
                let ext = &topo.externals[e];
                let h = fnv(&ext.host);
                HttpTarget {
                    service: None,
                    fqdn: ext.host.clone(),
                    url_host: ext.host.clone(),
                    port: ext.port,
                    scheme: ext.scheme.clone(),
                    external_ip: format!("203.0.113.{}", h % 250 + 2),
                }
            }
            _ => unreachable!("only HTTP targets"),
        };
        let url = format!(
            "{}://{}:{}{}",
            target.scheme, target.url_host, target.port, call.request.path
        );
        let outer = match self.flavor {
            Flavor::EnvoyOtlp if asvc.app_spans => Some(tr.new_id()),
            Flavor::Linkerd => Some(tr.new_id()),
            _ => None,
        };
        let attempt_parent = outer.clone().unwrap_or_else(|| ctx.to_vec());
        let mut t = s + self.ovh();
        let mut outcome = Outcome::Ok;
        for attempt in 0..=call.retries {
            let u: f64 = tr.rng.random();
            outcome = if u < call.connect_failure_rate {
                Outcome::ConnectFailure
            } else if u < call.connect_failure_rate + call.error_rate {
                Outcome::ServerError
            } else {
                Outcome::Ok
            };
            let last = attempt == call.retries || outcome == Outcome::Ok;
            let client_id = tr.new_id();
            // The callee's side, when the attempt reaches a mesh service.
            let served = match (target.service, outcome) {
                (Some(b), Outcome::Ok | Outcome::ServerError) => Some(self.serve(
                    tr,
                    b,
                    Link::Child {
                        client_id: client_id.clone(),
                        client_parent: attempt_parent.clone(),
                    },
                    t + self.net(),
                    &call.latency,
                    outcome == Outcome::ServerError,
                    &call.request,
                    (&target.url_host, &pod.ip),
                )),
                _ => None,
            };
            let end = match (&served, outcome) {
                (Some(sv), _) => sv.span.end_time_unix_nano + self.net(),
                (None, Outcome::ConnectFailure) => t + settings.connect_failure_us * 1000,
                (None, _) => t + call.latency.sample(&mut tr.rng) * 1000 + 2 * self.net(),
            };
            let upstream_ip = match &served {
                Some(sv) => Some(sv.pod_ip.clone()),
                None if outcome != Outcome::ConnectFailure => Some(target.external_ip.clone()),
                None => None,
            };
            let span = match self.flavor {
                Flavor::Linkerd => {
                    let status = outcome.app_status(self.flavor);
                    let attrs = linkerd_attrs(
                        "outbound",
                        &call.request,
                        &target.scheme,
                        &target.fqdn,
                        target.port,
                        status,
                    );
                    self.span(
                        tr,
                        client_id,
                        &attempt_parent,
                        call.request.path.clone(),
                        SpanKind::Client,
                        t,
                        end,
                        attrs,
                        StatusCode::Unset,
                    )
                }
                _ => {
                    let (code, flags) = match outcome {
                        Outcome::Ok => ("200", "-"),
                        Outcome::ServerError => ("503", "-"),
                        Outcome::ConnectFailure if last && call.retries > 0 => ("0", "UF,URX"),
                        Outcome::ConnectFailure => ("0", "UF"),
                    };
                    let response_size = match outcome {
                        Outcome::Ok => tr.rng.random_range(180..4_000),
                        Outcome::ServerError => 95,
                        Outcome::ConnectFailure => 0,
                    };
                    let cluster = format!("outbound|{}||{}", target.port, target.fqdn);
                    let mut attrs = self.envoy_common(asvc, &pod, tr, &call.request, &url);
                    attrs.extend([
                        kv_str("peer.address", &pod.ip),
                        kv_str("request_size", "0"),
                        kv_str("response_size", &response_size.to_string()),
                        kv_str("response_flags", flags),
                        kv_str("upstream_cluster", &cluster),
                        kv_str("upstream_cluster.name", &cluster),
                    ]);
                    if let Some(ip) = &upstream_ip {
                        attrs.push(kv_str("upstream_address", &format!("{ip}:{}", target.port)));
                    }
                    attrs.push(kv_str("http.status_code", code));
                    if outcome != Outcome::Ok {
                        attrs.push(kv_str("error", "true"));
                    }
                    attrs.extend(self.istio_tags(asvc, ver));
                    let name = self.name(format!("{}:{}/*", target.fqdn, target.port));
                    self.span(
                        tr,
                        client_id,
                        &attempt_parent,
                        name,
                        SpanKind::Client,
                        t,
                        end,
                        attrs,
                        StatusCode::Unset,
                    )
                }
            };
            let a_node = asvc.node_id();
            match served {
                Some(sv) => {
                    let b_node = topo.services[target.service.expect("served")].node_id();
                    self.truth.spans.paired += 1;
                    self.truth.record_edge(
                        EdgeKey::new(&a_node, &b_node, connection_type::PAIRED),
                        Some(&span),
                        Some(&sv.span),
                        true,
                        self.keep_durations,
                    );
                    self.push(sv.emitter, sv.span, sv.shared, None);
                }
                None => {
                    self.truth.spans.virtual_clients += 1;
                    self.truth.record_edge(
                        EdgeKey::new(
                            &a_node,
                            &normalise_peer(&target.fqdn),
                            connection_type::VIRTUAL_NODE,
                        ),
                        Some(&span),
                        None,
                        true,
                        self.keep_durations,
                    );
                }
            }
            let remote = if self.zipkin() {
                upstream_ip.map(|ip| (ip, target.port))
            } else {
                None
            };
            self.push(pod.proxy, span, false, remote);
            t = end;
            if last {
                break;
            }
            t += settings.retry_backoff_us * 1000;
        }
        let end = t + self.ovh();
        if let Some(outer_id) = outer {
            let status = outcome.app_status(self.flavor);
            let (span, emitter) = match self.flavor {
                Flavor::Linkerd => {
                    let attrs = linkerd_attrs(
                        "outbound",
                        &call.request,
                        &target.scheme,
                        &target.fqdn,
                        target.port,
                        status,
                    );
                    (
                        self.span(
                            tr,
                            outer_id,
                            ctx,
                            call.request.path.clone(),
                            SpanKind::Server,
                            s,
                            end,
                            attrs,
                            StatusCode::Unset,
                        ),
                        pod.proxy,
                    )
                }
                _ => {
                    let attrs = vec![
                        kv_str("http.request.method", &call.request.method),
                        kv_str("url.full", &url),
                        kv_str("server.address", &target.url_host),
                        kv("server.port", Value::IntValue(i64::from(target.port))),
                        kv("http.response.status_code", Value::IntValue(status)),
                    ];
                    let span = self.span(
                        tr,
                        outer_id,
                        ctx,
                        call.request.method.clone(),
                        SpanKind::Client,
                        s,
                        end,
                        attrs,
                        sdk_status(outcome != Outcome::Ok),
                    );
                    (span, pod.app)
                }
            };
            self.truth.spans.intra_workload += 1;
            self.push(emitter, span, false, None);
        }
        end
    }

    /// Attributes every Envoy HTTP span of `svc` carries (strings, as Envoy sends them).
    fn envoy_common(
        &self,
        svc: &Service,
        pod: &Pod,
        tr: &Trace,
        req: &HttpRequest,
        url: &str,
    ) -> Vec<KeyValue> {
        vec![
            kv_str(
                "node_id",
                &format!(
                    "sidecar~{}~{}.{}~{}.svc.{}",
                    pod.ip,
                    pod.name,
                    svc.namespace,
                    svc.namespace,
                    self.topo.settings.cluster_domain
                ),
            ),
            kv_str("zone", &self.topo.settings.zone),
            kv_str("guid:x-request-id", &tr.request_id),
            kv_str("http.url", url),
            kv_str("http.method", &req.method),
            kv_str("downstream_cluster", "-"),
            kv_str("user_agent", USER_AGENT),
            kv_str("http.protocol", "HTTP/1.1"),
            kv_str("component", "proxy"),
        ]
    }

    /// The literal tags Istio adds to every span of a sidecar.
    fn istio_tags(&self, svc: &Service, ver: usize) -> [KeyValue; 5] {
        let s = &self.topo.settings;
        [
            kv_str("istio.canonical_service", &svc.name),
            kv_str("istio.canonical_revision", &svc.versions[ver]),
            kv_str("istio.mesh_id", &s.mesh_id),
            kv_str("istio.namespace", &svc.namespace),
            kv_str("istio.cluster_id", &s.cluster_id),
        ]
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        tr: &Trace,
        id: Vec<u8>,
        parent: &[u8],
        name: String,
        kind: SpanKind,
        start: u64,
        end: u64,
        attributes: Vec<KeyValue>,
        status: StatusCode,
    ) -> Span {
        Span {
            trace_id: tr.trace_id.clone(),
            span_id: id,
            parent_span_id: parent.to_vec(),
            // W3C `sampled`: proxies and SDKs only report sampled spans.
            flags: 0x01,
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            status: (status != StatusCode::Unset).then(|| Status {
                code: status as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }
}

/// An SDK span's status: ERROR for failures, else left UNSET (OpenTelemetry HTTP semconv).
fn sdk_status(failed: bool) -> StatusCode {
    if failed {
        StatusCode::Error
    } else {
        StatusCode::Unset
    }
}

/// Attributes of a Linkerd proxy span (new semantic conventions, typed values).
fn linkerd_attrs(
    direction: &str,
    req: &HttpRequest,
    scheme: &str,
    host: &str,
    port: u16,
    status: i64,
) -> Vec<KeyValue> {
    vec![
        kv_str("direction", direction),
        kv_str("http.request.method", &req.method),
        kv_str("url.scheme", scheme),
        kv_str("url.path", &req.path),
        kv_str("url.full", &format!("{scheme}://{host}:{port}{}", req.path)),
        kv_str("server.address", host),
        kv("server.port", Value::IntValue(i64::from(port))),
        kv_str("user_agent.original", USER_AGENT),
        kv("http.response.status_code", Value::IntValue(status)),
    ]
}

/// Kubernetes-style 5-character pod suffix (consonants and digits).
fn pod_suffix(h: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}
