//! Jaeger dependencies without Jaeger's batch job, end to end: a real Jaeger v2 (the pinned
//! binary, `MESHGATE_JAEGER`) reading a real OpenSearch 2.19 (`MESHGATE_OPENSEARCH_URL`,
//! started by `scripts/peers/services.sh`) answers `GET /api/dependencies` with exactly the
//! service graph of the simulated mesh traffic meshgate received.
//!
//! Two gateways (two replicas) each run `otlp` → `servicegraph` → `elasticsearch` with
//! `dependencies` into the same index prefix; each gets its own simulated `shop` traffic
//! (Istio/Envoy OTLP with SDK spans, a database, a cache, a queue, an external API, retries
//! that never reached the server). Replica A writes every second; replica B's interval is
//! longer than the test, so its calls reach Jaeger only through its shutdown flush, and then
//! Jaeger must add both replicas' documents up. The truth
//! per (parent, child) is the simulator's edge request count summed over connection types
//! (a paired call and an attempt that never reached the server are both calls of the
//! parent), without the `user` edges of root spans; databases, queues and external APIs
//! appear as children under their virtual node names. The counts stay exact after more
//! intervals and after the gateways' shutdown flush, and each gateway's `/metrics` accounts
//! for every data point and call.

mod common;

use common::*;
use meshgate_meshsim::truth::GroundTruth;
use meshgate_meshsim::{Flavor, Generated, Simulator, Topology};
use prost::Message;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a span waits for its partner in the servicegraph store; posting must take less.
const STORE_TTL: Duration = Duration::from_secs(6);
/// `dependencies.interval` of replica A, which writes as it goes.
const INTERVAL: Duration = Duration::from_secs(1);
/// `dependencies.interval` of replica B: longer than the test, so all it writes is what its
/// shutdown flushes.
const NEVER: Duration = Duration::from_secs(3600);
/// Root requests simulated per gateway.
const ROOTS: u64 = 150;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A Jaeger v2 process reading OpenSearch, killed on drop.
struct Jaeger {
    child: Child,
    query: u16,
    log: PathBuf,
}

impl Jaeger {
    /// Starts `bin` with OpenSearch storage under `prefix`, every listener on a free
    /// loopback port, and waits until its query API answers.
    fn start(bin: &Path, dir: &Scratch, opensearch: &str, prefix: &str) -> Jaeger {
        let (query, query_grpc, otlp) = (free_port(), free_port(), free_port());
        // One shard, no replica: a single-node test cluster stays green.
        let index = "{ shards: 1, replicas: 0 }";
        let config = format!(
            "service:\n  extensions: [jaeger_storage, jaeger_query]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: []\n      exporters: [jaeger_storage_exporter]\n  telemetry:\n    metrics:\n      level: none\n    logs:\n      level: info\n\
             extensions:\n  jaeger_storage:\n    backends:\n      os:\n        opensearch:\n          server_urls: [\"{opensearch}\"]\n          indices:\n            index_prefix: \"{prefix}\"\n            spans: {index}\n            services: {index}\n            dependencies: {index}\n            sampling: {index}\n\
             \x20 jaeger_query:\n    storage:\n      traces: os\n    enable_tracing: false\n    http:\n      endpoint: 127.0.0.1:{query}\n    grpc:\n      endpoint: 127.0.0.1:{query_grpc}\n\
             receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{otlp}\n\
             exporters:\n  jaeger_storage_exporter:\n    trace_storage: os\n"
        );
        let cfg = dir.path("jaeger.yaml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.path("jaeger.log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(format!("file:{}", cfg.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut j = Jaeger { child, query, log };
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(query, "/api/services") {
                return j;
            }
            if let Ok(Some(status)) = j.child.try_wait() {
                panic!("Jaeger exited with {status}; its log:\n{}", j.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Jaeger's query API not up after 60s; its log:\n{}",
                j.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `parent -> child` → callCount from `GET /api/dependencies` over the last hour.
    fn dependencies(&self) -> BTreeMap<(String, String), u64> {
        let end_ms = now_ns() / 1_000_000;
        let path = format!("/api/dependencies?endTs={end_ms}&lookback=3600000");
        let (status, body) = http_get(self.query, &path).expect("GET /api/dependencies");
        assert_eq!(status, 200, "{body}\nJaeger log:\n{}", self.log_text());
        let v: Json = serde_json::from_str(&body).expect("Jaeger answers JSON");
        let mut out = BTreeMap::new();
        for l in v["data"].as_array().expect("`data` is a list") {
            let key = (
                l["parent"].as_str().unwrap().to_string(),
                l["child"].as_str().unwrap().to_string(),
            );
            let calls = l["callCount"].as_u64().unwrap();
            assert!(
                out.insert(key.clone(), calls).is_none(),
                "{key:?} twice: {body}"
            );
        }
        out
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `roots` root requests of the `shop` topology, ending shortly before now, shuffled so
/// client and server halves arrive in any order.
fn simulate(seed: u64) -> Generated {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/meshsim/topologies/shop.yaml");
    let topology = Topology::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let sim = Simulator::new(topology, Flavor::EnvoyOtlp).with_seed(seed);
    let span_s = ROOTS as f64 / sim.roots_per_second();
    let start = now_ns() - ((span_s + 10.0) * 1e9) as u64;
    sim.with_start(start).generate_roots(ROOTS).shuffled(seed)
}

/// Posts every request of `g` as OTLP protobuf; returns the spans sent.
fn post_all(port: u16, g: &Generated) -> u64 {
    let started = Instant::now();
    for req in &g.requests {
        post_traces(port, &req.encode_to_vec());
    }
    assert!(
        started.elapsed() < STORE_TTL - Duration::from_secs(1),
        "posting took {:?}, too close to the store TTL for exact pairing",
        started.elapsed()
    );
    g.span_count() as u64
}

/// What Jaeger must show for `truth`: requests per (client, server) over every connection
/// type, without the edges from `user`.
fn jaeger_truth(truth: &GroundTruth, into: &mut BTreeMap<(String, String), u64>) {
    for (k, e) in &truth.edges {
        if k.client == "user" && k.connection_type == "virtual_node" {
            continue;
        }
        *into
            .entry((k.client.clone(), k.server.clone()))
            .or_default() += e.requests;
    }
}

/// The `user` edge requests of `truth` (data points the exporter leaves out).
fn user_requests(truth: &GroundTruth) -> u64 {
    truth
        .edges
        .iter()
        .filter(|(k, _)| k.client == "user")
        .map(|(_, e)| e.requests)
        .sum()
}

fn differences(
    got: &BTreeMap<(String, String), u64>,
    want: &BTreeMap<(String, String), u64>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            Some(g) if g == w => {}
            Some(g) => diffs.push(format!("  {} -> {}: got {g}, want {w}", k.0, k.1)),
            None => diffs.push(format!("  {} -> {}: missing, want {w}", k.0, k.1)),
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            diffs.push(format!("  {} -> {}: got {g}, not in the truth", k.0, k.1));
        }
    }
    diffs
}

fn gateway_config(http: u16, opensearch: &str, prefix: &str, interval: Duration) -> String {
    format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         connectors:\n  servicegraph:\n    metrics_flush_interval: 500ms\n    store:\n      ttl: {}ms\n\
         exporters:\n  elasticsearch:\n    endpoints: [\"{opensearch}\"]\n    dependencies:\n      index_prefix: \"{prefix}\"\n      interval: {}ms\n    retry_on_failure:\n      initial_interval: 100ms\n      max_interval: 500ms\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [servicegraph]\n\
         \x20   metrics:\n      receivers: [servicegraph]\n      exporters: [elasticsearch]\n",
        STORE_TTL.as_millis(),
        interval.as_millis()
    )
}

const DEPS: &str = "meshgate_exporter_elasticsearch_dependencies_";

fn deps(m: &Metrics, what: &str, outcome: &str) -> f64 {
    m.sum(
        &format!("{DEPS}{what}"),
        &[("exporter", "elasticsearch"), ("outcome", outcome)],
    )
}

/// The servicegraph read all `spans` and its store is empty, so the request counts it emits
/// from now on are final.
fn wait_settled(gw: &Gateway, spans: u64) {
    gw.wait_metrics(STORE_TTL + Duration::from_secs(20), |m| {
        m.sum(
            "meshgate_connector_servicegraph_spans_total",
            &[("connector", "servicegraph")],
        ) >= spans as f64
            && m.sum(
                "meshgate_connector_servicegraph_store_items",
                &[("connector", "servicegraph")],
            ) == 0.0
    });
}

/// Every data point the exporter took has one outcome and none was unreadable; returns
/// the scrape.
fn check_points(gw: &Gateway, truth: &GroundTruth) -> Metrics {
    // Points are counted as the exporter takes them, `sent` once it returned: wait for a
    // scrape between two payloads.
    let points = |m: &Metrics| -> f64 {
        ["used", "user", "ignored"]
            .iter()
            .map(|o| deps(m, "points_total", o))
            .sum()
    };
    let sent = |m: &Metrics| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "elasticsearch"), ("signal", "metrics")],
        )
    };
    let m = gw.wait_metrics(Duration::from_secs(20), |m| {
        sent(m) > 0.0 && points(m) == sent(m)
    });
    for o in ["baseline", "out_of_order", "invalid"] {
        assert_eq!(deps(&m, "points_total", o), 0.0, "{o}: {}", m.text);
    }
    assert!(
        deps(&m, "points_total", "user") > 0.0 && user_requests(truth) > 0,
        "the user edges were seen and left out: {}",
        m.text
    );
    assert!(
        deps(&m, "points_total", "ignored") > 0.0,
        "the failed counts and histograms are ignored: {}",
        m.text
    );
    m
}

/// The calls the exporter wrote are the calls of its own truth, none failed.
fn check_written(gw: &Gateway, truth: &GroundTruth) {
    let mut want = BTreeMap::new();
    jaeger_truth(truth, &mut want);
    let want_calls = want.values().sum::<u64>() as f64;
    let m = gw.wait_metrics(Duration::from_secs(20), |m| {
        deps(m, "calls_total", "written") >= want_calls
    });
    assert_eq!(deps(&m, "calls_total", "written"), want_calls, "{}", m.text);
    for bad in ["rejected", "given_up"] {
        assert_eq!(deps(&m, "calls_total", bad), 0.0, "{}", m.text);
        assert_eq!(deps(&m, "documents_total", bad), 0.0, "{}", m.text);
    }
    assert!(deps(&m, "documents_total", "written") >= 1.0);
}

/// Polls Jaeger until its dependencies equal `want`.
fn wait_for_jaeger(jaeger: &Jaeger, want: &BTreeMap<(String, String), u64>, gw: &Gateway) {
    let start = Instant::now();
    loop {
        let got = jaeger.dependencies();
        let diffs = differences(&got, want);
        if diffs.is_empty() {
            eprintln!(
                "Jaeger matched the truth after {:?}: {got:?}",
                start.elapsed()
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Jaeger's /api/dependencies differs from the truth after 60s ({} edges):\n{}\n\
             gateway log:\n{}\nJaeger log:\n{}",
            diffs.len(),
            diffs.join("\n"),
            gw.log_text(),
            jaeger.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn jaeger_on_opensearch_shows_the_service_graph_as_dependencies() {
    let Some(opensearch) = service("MESHGATE_OPENSEARCH_URL", "OpenSearch") else {
        return;
    };
    let Some(jaeger_bin) = peer("MESHGATE_JAEGER", "bin/jaeger", "Jaeger v2") else {
        return;
    };
    let opensearch = opensearch.trim_end_matches('/').to_string();
    // This run's own indices, so reruns and concurrent runs never mix.
    let prefix = format!("mgdeps{}x{}", std::process::id(), now_ns() % 1_000_000_000);
    let dir = Scratch::new("jaeger-deps-e2e");
    let jaeger = Jaeger::start(&jaeger_bin, &dir, &opensearch, &prefix);
    assert!(jaeger.dependencies().is_empty(), "a fresh prefix is empty");

    let (http_a, http_b) = (free_port(), free_port());
    let cfg_a = gateway_config(http_a, &opensearch, &prefix, INTERVAL);
    let cfg_b = gateway_config(http_b, &opensearch, &prefix, NEVER);
    let mut gw_a = Gateway::start(&dir, "gw-a", &cfg_a);
    let mut gw_b = Gateway::start(&dir, "gw-b", &cfg_b);
    let (g_a, g_b) = (simulate(21), simulate(22));
    let (mut want_a, mut want_both) = (BTreeMap::new(), BTreeMap::new());
    jaeger_truth(&g_a.truth, &mut want_a);
    jaeger_truth(&g_a.truth, &mut want_both);
    jaeger_truth(&g_b.truth, &mut want_both);
    // Every kind of child is there: services, a database, a queue, external APIs.
    for ct in ["", "virtual_node", "database", "messaging_system"] {
        assert!(
            g_a.truth
                .edges
                .keys()
                .any(|k| k.connection_type == ct && k.client != "user"),
            "no `{ct}` edge in the truth"
        );
    }
    eprintln!(
        "truth: {} parent/child links, {} calls ({} from replica A)",
        want_both.len(),
        want_both.values().sum::<u64>(),
        want_a.values().sum::<u64>()
    );
    let spans_a = post_all(http_a, &g_a);
    let spans_b = post_all(http_b, &g_b);
    wait_settled(&gw_a, spans_a);
    wait_settled(&gw_b, spans_b);

    // Replica A writes every interval; B holds its calls until its interval ends.
    wait_for_jaeger(&jaeger, &want_a, &gw_a);
    check_points(&gw_a, &g_a.truth);
    check_written(&gw_a, &g_a.truth);
    let m = check_points(&gw_b, &g_b.truth);
    assert_eq!(deps(&m, "documents_total", "written"), 0.0, "{}", m.text);

    // Later intervals (the connector keeps sending the same cumulative values) add nothing.
    std::thread::sleep(INTERVAL * 3);
    let diffs = differences(&jaeger.dependencies(), &want_a);
    assert!(
        diffs.is_empty(),
        "later intervals changed Jaeger's dependencies:\n{}",
        diffs.join("\n")
    );
    // Replica B's calls arrive with its shutdown flush, and add up with A's; A's shutdown
    // adds nothing.
    assert!(gw_a.stop().success(), "{}", gw_a.log_text());
    assert!(gw_b.stop().success(), "{}", gw_b.log_text());
    wait_for_jaeger(&jaeger, &want_both, &gw_b);
    std::thread::sleep(Duration::from_secs(2)); // past OpenSearch's refresh interval
    let diffs = differences(&jaeger.dependencies(), &want_both);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));

    // The documents are where Jaeger's own writer would put them: daily indices
    // `<prefix>-jaeger-dependencies-YYYY-MM-DD`.
    let (status, body) = http_get_url(&format!(
        "{opensearch}/_cat/indices/{prefix}-jaeger-dependencies-*?h=index"
    ))
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let indices: Vec<&str> = body.lines().map(str::trim).collect();
    assert!(!indices.is_empty());
    for index in &indices {
        let date = index
            .strip_prefix(&format!("{prefix}-jaeger-dependencies-"))
            .unwrap_or_else(|| panic!("{index}"));
        let b = date.as_bytes();
        assert!(
            b.len() == 10
                && b[4] == b'-'
                && b[7] == b'-'
                && date.replace('-', "").bytes().all(|c| c.is_ascii_digit()),
            "{index}"
        );
    }
    // Leave the shared cluster as it was: this run's indices and Jaeger's templates for them.
    let port = opensearch.rsplit(':').next().unwrap().parse().unwrap();
    for path in indices
        .iter()
        .map(|i| format!("/{i}"))
        .chain(["span", "service"].map(|t| format!("/_template/{prefix}-jaeger-{t}")))
    {
        let _ = http_request(port, "DELETE", &path, &[], &[]);
    }
}
