//! The live service map page (`GET /service-map` on the admin endpoint) end to end, in a real
//! headless Chromium (Debian's `chromium` and `chromium-driver` packages, driven over W3C
//! WebDriver by `common::webdriver`):
//!
//! - The `shop` mesh of the simulator (`meshgate-meshsim`), sent as Envoy OTLP spans to a
//!   gateway with an istio-mesh.yaml-like pipeline: the page loads, draws exactly the nodes and
//!   edges of `/api/v1/topology` and of the simulator's ground truth; a real mouse click on a
//!   node and on an edge (at the position the page reports, through its own hit-testing)
//!   selects it and `#details` shows its name, requests/s, error rate and the exemplar trace
//!   ids, which are trace ids the simulator sent; typing part of a name and Enter in
//!   `#search` selects that service; changing `#window` reloads with the new
//!   window, a `#refresh` period reloads on its own; the console stays free of errors. A
//!   screenshot is saved to `target/service-map-e2e.png` for review.
//! - A synthetic mesh of 1,000 services and 5,000 edges (`meshgate_meshsim::SyntheticMesh`):
//!   the page gets ready, draws every node and edge of the API and the truth, and a click
//!   still selects (no timing assertions; benches/service_map.rs measures the times).
//!
//! Needs the Chromium peers (`scripts/peers/install.sh chromium chromium-driver`); skipped
//! without them unless `MESHGATE_REQUIRE_PEERS=1`, which makes their absence a failure.

mod common;

use common::webdriver::{Browser, base64_decode, chromium};
use common::*;
use meshgate_meshsim::{Flavor, Generated, Simulator, SyntheticMesh, Topology};
use meshgate_pdata::otlp::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{Value as Json, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The browser viewport, and the size of the screenshot.
const VIEWPORT: (u32, u32) = (1400, 900);

/// Spans per OTLP request when posting a simulation (a batching collector's request size).
const SPANS_PER_POST: usize = 2000;

/// An istio-mesh.yaml-like gateway: OTLP and Zipkin in, every span to `spanmetrics` and
/// `servicegraph`, the traces also through `batch` to a store (`debug` here), the derived
/// metrics to a scrape endpoint. `store_ttl` bounds how long an unpaired span waits.
fn gateway(dir: &Scratch, otlp: u16, store_ttl: &str) -> Gateway {
    let (zipkin, scrape) = (free_port(), free_port());
    let cfg = format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
  zipkin:
    endpoint: 127.0.0.1:{zipkin}
processors:
  memory_limiter:
    limit_percentage: 80
  batch:
    send_batch_size: 2048
    timeout: 500ms
connectors:
  spanmetrics:
    dimensions:
      - name: http.method
    metrics_flush_interval: 1s
  servicegraph:
    store:
      ttl: {store_ttl}
      max_items: 500000
    metrics_flush_interval: 1s
exporters:
  debug:
    verbosity: basic
  prometheus:
    endpoint: 127.0.0.1:{scrape}
service:
  pipelines:
    traces/derive:
      receivers: [otlp, zipkin]
      processors: [memory_limiter]
      exporters: [spanmetrics, servicegraph]
    traces/store:
      receivers: [otlp, zipkin]
      processors: [memory_limiter, batch]
      exporters: [debug]
    metrics:
      receivers: [spanmetrics, servicegraph]
      processors: [memory_limiter]
      exporters: [prometheus]
"
    );
    Gateway::start(dir, "gw", &cfg)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// `roots` root requests of `topology` in the Envoy OTLP flavor, simulated to end shortly
/// before now (well inside the page's default 5 minute window).
fn simulate(topology: Topology, seed: u64, roots: u64) -> Generated {
    let sim = Simulator::new(topology, Flavor::EnvoyOtlp).with_seed(seed);
    let span_s = roots as f64 / sim.roots_per_second();
    let start = now_ns() - ((span_s + 10.0) * 1e9) as u64;
    let g = sim.with_start(start).generate_roots(roots);
    assert_eq!(g.truth.traces, roots);
    g
}

/// Posts every span of `g` as OTLP/HTTP protobuf, [`SPANS_PER_POST`] spans a request (the
/// simulator's requests merged, as a collector in front would batch them); the spans sent.
fn post_all(port: u16, g: &Generated) -> u64 {
    let started = Instant::now();
    let mut batch = ExportTraceServiceRequest::default();
    let mut in_batch = 0;
    let mut posts = 0;
    let mut send = |batch: &mut ExportTraceServiceRequest| {
        let body = std::mem::take(batch).encode_to_vec();
        post_traces(port, &body);
        posts += 1;
    };
    for req in &g.requests {
        for rs in &req.resource_spans {
            in_batch += rs.scope_spans.iter().map(|s| s.spans.len()).sum::<usize>();
            batch.resource_spans.push(rs.clone());
        }
        if in_batch >= SPANS_PER_POST {
            send(&mut batch);
            in_batch = 0;
        }
    }
    if !batch.resource_spans.is_empty() {
        send(&mut batch);
    }
    let spans = g.span_count() as u64;
    eprintln!(
        "posted {spans} spans in {posts} requests in {:?}",
        started.elapsed()
    );
    spans
}

/// Waits until the servicegraph connector has read every span and its store is empty (every
/// pair joined, every unpaired span expired into its virtual edge): the topology is final.
fn wait_settled(gw: &Gateway, spans: u64, timeout: Duration) {
    gw.wait_metrics(timeout, |m| {
        m.sum(
            "meshgate_connector_received_items_total",
            &[("connector", "servicegraph"), ("signal", "traces")],
        ) >= spans as f64
            && m.sum(
                "meshgate_connector_servicegraph_store_items",
                &[("connector", "servicegraph")],
            ) == 0.0
    });
}

/// Every trace id the simulation sent, as 32 lower-case hex digits.
fn trace_ids(g: &Generated) -> BTreeSet<String> {
    g.requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| hex::encode(&s.trace_id))
        .collect()
}

/// The node and edge ids the truth says the topology has: every client and server of an
/// edge, and `client->server` per node pair.
fn truth_ids(g: &Generated) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut nodes = BTreeSet::new();
    let mut edges = BTreeSet::new();
    for k in g.truth.edges.keys() {
        nodes.insert(k.client.clone());
        nodes.insert(k.server.clone());
        edges.insert(format!("{}->{}", k.client, k.server));
    }
    (nodes, edges)
}

/// The topology API's answer for `window`.
fn topology(gw: &Gateway, window: &str) -> Json {
    let (status, body) = http_get(gw.admin, &format!("/api/v1/topology?window={window}"))
        .expect("GET /api/v1/topology");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("topology JSON")
}

fn ids(items: &Json) -> BTreeSet<String> {
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|i| {
            i["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no id: {i}"))
                .to_string()
        })
        .collect()
}

fn by_id<'a>(items: &'a Json, id: &str) -> &'a Json {
    items
        .as_array()
        .expect("an array")
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {items}"))
}

fn string_set(v: &Json, what: &str) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: not an array: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what}: not a string: {s}"))
                .to_string()
        })
        .collect()
}

/// Sets equal, or a panic naming what is missing and what is extra.
fn assert_same_ids(what: &str, got: &BTreeSet<String>, want: &BTreeSet<String>) {
    let missing: Vec<_> = want.difference(got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} ids, {} wanted; missing {missing:?}; extra {extra:?}",
        got.len(),
        want.len()
    );
}

/// Every number written in `text`, with half a unit of its last digit (what rounding to the
/// written precision may have moved it): `1,234.5` is (1234.5, 0.05), `1.2k` is (1200, 50),
/// `2.5%` is (2.5, 0.05).
fn numbers(text: &str) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut s = String::new();
        let mut decimals: Option<i32> = None;
        while i < chars.len() {
            let c = chars[i];
            let digit_next = chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
            if c.is_ascii_digit() {
                s.push(c);
                decimals = decimals.map(|d| d + 1);
            } else if c == '.' && digit_next && decimals.is_none() {
                s.push(c);
                decimals = Some(0);
            } else if c == ',' && digit_next && decimals.is_none() {
                // A thousands separator.
            } else {
                break;
            }
            i += 1;
        }
        let Ok(mut v) = s.parse::<f64>() else {
            continue;
        };
        let mut half = 0.5 * 10f64.powi(-decimals.unwrap_or(0));
        let scale = match chars.get(i) {
            Some('k') => 1e3,
            Some('M') => 1e6,
            Some('G') => 1e9,
            _ => 1.0,
        };
        v *= scale;
        half *= scale;
        out.push((v, half));
    }
    out
}

/// Whether `text` shows `value` as written for people: some number in it is `value` rounded
/// to the precision it is written with.
fn shows(text: &str, value: f64) -> bool {
    numbers(text)
        .iter()
        .any(|&(n, half)| (n - value).abs() <= half * (1.0 + 1e-9))
}

/// Whether `text` mentions the count `n` (plain or with thousands separators).
fn mentions_count(text: &str, n: usize) -> bool {
    numbers(text).iter().any(|&(v, _)| v == n as f64)
}

/// The page's URL on the gateway.
fn page_url(gw: &Gateway, query: &str) -> String {
    format!("http://127.0.0.1:{}/service-map?{query}", gw.admin)
}

/// The state the page reports through `window.meshgateServiceMap`.
fn map_state(b: &Browser) -> Json {
    b.execute(
        "const m = window.meshgateServiceMap;
         return { ready: m.ready, loads: m.loads, renders: m.renders, lastLoad: m.lastLoad,
                  lastDrawMs: m.lastDrawMs, selected: m.selected,
                  nodes: m.nodeIds(), edges: m.edgeIds() };",
        &[],
    )
    .unwrap_or_else(|e| panic!("read meshgateServiceMap: {e}"))
}

/// Opens the page and waits until the first topology is drawn.
fn open(b: &Browser, url: &str, timeout: Duration) -> Json {
    b.navigate(url).unwrap_or_else(|e| panic!("{e}"));
    b.wait_for(
        "window.meshgateServiceMap && window.meshgateServiceMap.ready === true",
        timeout,
    )
    .unwrap_or_else(|e| panic!("the page never got ready: {e}"));
    map_state(b)
}

/// Checks the API's nodes and edges equal the truth's, opens the page (window 5m, no
/// refresh) and checks it drew exactly those; returns the page's state.
fn open_and_check_drawn(
    b: &Browser,
    gw: &Gateway,
    api: &Json,
    truth: &(BTreeSet<String>, BTreeSet<String>),
    timeout: Duration,
) -> Json {
    let (truth_nodes, truth_edges) = truth;
    assert_same_ids("API nodes vs truth", &ids(&api["nodes"]), truth_nodes);
    assert_same_ids("API edges vs truth", &ids(&api["edges"]), truth_edges);
    let state = open(b, &page_url(gw, "window=5m&refresh=0"), timeout);
    assert_same_ids(
        "drawn nodes vs API",
        &string_set(&state["nodes"], "nodeIds()"),
        truth_nodes,
    );
    assert_same_ids(
        "drawn edges vs API",
        &string_set(&state["edges"], "edgeIds()"),
        truth_edges,
    );
    state
}

/// Clicks `kind` `id` with a real mouse click where the page says it is, and returns the
/// text of `#details` once the page has selected it.
fn click(b: &Browser, kind: &str, id: &str) -> String {
    let pos = b
        .execute(
            "return window.meshgateServiceMap.screenPosition(arguments[0], arguments[1]);",
            &[json!(kind), json!(id)],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let (x, y) = (
        pos["x"]
            .as_f64()
            .unwrap_or_else(|| panic!("no screen position of {kind} {id}: {pos}")),
        pos["y"].as_f64().expect("y"),
    );
    let (w, h) = (f64::from(VIEWPORT.0), f64::from(VIEWPORT.1));
    assert!(
        (0.0..w).contains(&x) && (0.0..h).contains(&y),
        "{kind} {id} is drawn off screen at ({x}, {y})"
    );
    b.click_at(x, y).unwrap_or_else(|e| panic!("{e}"));
    let want = json!({ "kind": kind, "id": id });
    b.wait_for(
        &format!(
            "(() => {{ const s = window.meshgateServiceMap.selected; \
             return s && s.kind === {} && s.id === {}; }})()",
            json!(kind),
            json!(id)
        ),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("clicking at ({x}, {y}) did not select {want}: {e}"));
    let details = b.find("#details").unwrap_or_else(|e| panic!("{e}"));
    let shown = b
        .wait_for(
            "!document.querySelector('#details').hidden && \
             document.querySelector('#details').innerText.trim().length > 0",
            Duration::from_secs(10),
        )
        .is_ok();
    assert!(
        shown,
        "#details stays hidden or empty after selecting {want}"
    );
    b.text(&details).unwrap_or_else(|e| panic!("{e}"))
}

/// The exemplar trace ids `#details` lists, once the page has fetched them (it loads the map
/// without exemplars and fetches the selection's neighbourhood with them).
fn shown_exemplars(b: &Browser) -> Vec<String> {
    let state = b
        .wait_for(
            "['loaded', 'failed'].includes(document.querySelector('#details').dataset.exemplars) \
             && document.querySelector('#details').dataset.exemplars",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("#details never finished loading exemplars: {e}"));
    assert_eq!(
        state,
        json!("loaded"),
        "#details could not load exemplars: {}",
        b.find("#details")
            .and_then(|d| b.text(&d))
            .unwrap_or_else(|e| e)
    );
    let els = b
        .find_all("#details .exemplar")
        .unwrap_or_else(|e| panic!("{e}"));
    els.iter()
        .map(|e| {
            b.text(e)
                .unwrap_or_else(|err| panic!("{err}"))
                .trim()
                .to_string()
        })
        .collect()
}

/// The exemplar trace ids of a node or edge of the API answer.
fn api_exemplars(item: &Json) -> Vec<String> {
    item["exemplars"]
        .as_array()
        .unwrap_or_else(|| panic!("no exemplars in {item}"))
        .iter()
        .map(|e| {
            e["trace_id"]
                .as_str()
                .unwrap_or_else(|| panic!("exemplar without trace_id: {e}"))
                .to_string()
        })
        .collect()
}

/// `#details` of a clicked item shows its name, requests/s and error rate, and exactly its
/// exemplars, each a trace id the simulator sent.
fn check_details(
    what: &str,
    text: &str,
    item: &Json,
    names: &[&str],
    sent: &BTreeSet<String>,
    shown: &[String],
) {
    for name in names {
        assert!(
            text.contains(name),
            "{what}: #details does not name {name}:\n{text}"
        );
    }
    let rps = item["requests_per_second"]
        .as_f64()
        .expect("requests_per_second");
    assert!(
        shows(text, rps),
        "{what}: #details does not show {rps} requests/s:\n{text}"
    );
    let err = item["error_rate"].as_f64().expect("error_rate");
    assert!(
        shows(text, err) || shows(text, err * 100.0),
        "{what}: #details does not show the error rate {err}:\n{text}"
    );
    let want = api_exemplars(item);
    assert!(
        !want.is_empty(),
        "{what}: the API lists no exemplars: {item}"
    );
    assert_eq!(
        shown.iter().collect::<BTreeSet<_>>(),
        want.iter().collect::<BTreeSet<_>>(),
        "{what}: the .exemplar trace ids of #details are not the API's"
    );
    for t in shown {
        assert!(
            t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()),
            "{what}: exemplar {t:?} is not a 32-hex trace id"
        );
        assert!(
            sent.contains(t),
            "{what}: exemplar trace {t} was never sent"
        );
    }
}

/// The browser console has no errors.
fn check_console(b: &Browser) {
    let errors: Vec<String> = b
        .console()
        .into_iter()
        .filter(|l| l.starts_with("SEVERE"))
        .collect();
    assert!(
        errors.is_empty(),
        "browser console errors:\n{}",
        errors.join("\n")
    );
}

/// Where the review screenshot goes: `target/service-map-e2e.png`.
fn screenshot_path(name: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join(name)
}

#[test]
fn the_page_draws_the_simulated_mesh_and_a_click_shows_the_details() {
    let Some((chromium_bin, chromedriver)) = chromium() else {
        return;
    };
    let dir = Scratch::new("service-map-e2e");
    let otlp = free_port();
    let gw = gateway(&dir, otlp, "3s");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/meshsim/topologies/shop.yaml");
    let topo = Topology::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let g = simulate(topo, 21, 300);
    let spans = post_all(otlp, &g);
    wait_settled(&gw, spans, Duration::from_secs(40));
    let sent = trace_ids(&g);

    let api = topology(&gw, "5m");
    let truth = truth_ids(&g);
    let (truth_nodes, truth_edges) = &truth;
    let browser = Browser::start(&dir, &chromium_bin, &chromedriver, VIEWPORT)
        .unwrap_or_else(|e| panic!("{e}"));
    let state = open_and_check_drawn(&browser, &gw, &api, &truth, Duration::from_secs(30));
    assert_eq!(state["loads"], 1, "one load so far: {state}");
    assert!(state["renders"].as_u64() >= Some(1), "{state}");
    let last = &state["lastLoad"];
    assert_eq!(
        last["nodes"].as_u64(),
        Some(truth_nodes.len() as u64),
        "{last}"
    );
    assert_eq!(
        last["edges"].as_u64(),
        Some(truth_edges.len() as u64),
        "{last}"
    );
    for k in ["fetchMs", "parseMs", "layoutMs", "drawMs", "totalMs"] {
        assert!(
            last[k].as_f64().is_some_and(|v| v >= 0.0),
            "lastLoad.{k}: {last}"
        );
    }
    let status = browser
        .text(&browser.find("#status").unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        mentions_count(&status, truth_edges.len()) && status.contains("updated"),
        "#status does not say {} edges and when: {status:?}",
        truth_edges.len()
    );
    let details_hidden = browser
        .execute(
            "const d = document.querySelector('#details'); \
             return d.hidden || d.innerText.trim() === '';",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        details_hidden, true,
        "#details shows something before any click"
    );

    // A node: the shop's frontend.
    let node_id = "frontend.shop";
    let node = by_id(&api["nodes"], node_id);
    let text = click(&browser, "node", node_id);
    let shown = shown_exemplars(&browser);
    let name = node["name"].as_str().expect("node name");
    check_details("node frontend.shop", &text, node, &[name], &sent, &shown);

    // The edge with the most failed calls (the shop has retried connection failures,
    // failed queries and 5xx answers).
    let edge = api["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .max_by_key(|e| e["failed"].as_u64().unwrap_or(0))
        .expect("an edge");
    assert!(
        edge["failed"].as_u64() > Some(0),
        "some calls of the shop fail: {api}"
    );
    let edge_id = edge["id"].as_str().expect("edge id").to_string();
    let name_of = |id: &Json| {
        by_id(&api["nodes"], id.as_str().expect("node id"))["name"]
            .as_str()
            .expect("node name")
            .to_string()
    };
    let (source, target) = (name_of(&edge["source"]), name_of(&edge["target"]));
    let text = click(&browser, "edge", &edge_id);
    let shown = shown_exemplars(&browser);
    check_details(
        &format!("edge {edge_id}"),
        &text,
        edge,
        &[&source, &target],
        &sent,
        &shown,
    );
    let failed_exemplar = edge["exemplars"]
        .as_array()
        .expect("exemplars")
        .iter()
        .any(|e| e["failed"] == true);
    assert!(
        failed_exemplar,
        "failed calls come first among the exemplars: {edge}"
    );

    // The search box: part of a name and Enter goes to the best match and selects it.
    let search = browser.find("#search").unwrap_or_else(|e| panic!("{e}"));
    browser
        .send_keys(&search, "recommend\u{E007}")
        .unwrap_or_else(|e| panic!("{e}"));
    browser
        .wait_for(
            "(() => { const s = window.meshgateServiceMap.selected; \
             return s && s.kind === 'node' && s.id === 'recommendations.ml'; })()",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("searching `recommend` did not select recommendations.ml: {e}"));
    let title = browser
        .execute(
            "return document.querySelector('#details h2').textContent;",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        title,
        json!("recommendations"),
        "#details names the found service"
    );
    let pos = browser
        .execute(
            "return window.meshgateServiceMap.screenPosition('node', 'recommendations.ml');",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        pos["x"]
            .as_f64()
            .is_some_and(|x| x > 0.0 && x < f64::from(VIEWPORT.0)),
        "the found service is on screen: {pos}"
    );

    // Another window: the page reloads with it.
    let before = map_state(&browser)["loads"].as_u64().expect("loads");
    let option = browser
        .find("#window option[value='15m']")
        .unwrap_or_else(|e| panic!("{e}"));
    browser.click(&option).unwrap_or_else(|e| panic!("{e}"));
    browser
        .wait_for(
            &format!("window.meshgateServiceMap.loads > {before}"),
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| panic!("choosing window 15m did not reload: {e}"));
    let fetched = browser
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)\
             .filter(n => n.includes('/api/v1/topology'));",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let fetched = string_set(&fetched, "topology fetches");
    assert!(
        fetched.iter().any(|u| u.contains("window=15m")),
        "no topology fetch with window=15m: {fetched:?}"
    );
    let api15 = topology(&gw, "15m");
    let after = map_state(&browser);
    assert_same_ids(
        "drawn edges, 15m",
        &string_set(&after["edges"], "edgeIds()"),
        &ids(&api15["edges"]),
    );

    // A refresh period: the page reloads on its own.
    let before = after["loads"].as_u64().expect("loads");
    let option = browser
        .find("#refresh option[value='5']")
        .unwrap_or_else(|e| panic!("{e}"));
    browser.click(&option).unwrap_or_else(|e| panic!("{e}"));
    browser
        .wait_for(
            &format!("window.meshgateServiceMap.loads > {before}"),
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("refresh every 5s did not reload: {e}"));

    // Back on the clicked edge for the review screenshot.
    click(&browser, "edge", &edge_id);
    check_console(&browser);
    let png = screenshot_path("service-map-e2e.png");
    browser.screenshot(&png).unwrap_or_else(|e| panic!("{e}"));
    check_png_size(&png, VIEWPORT);
    println!("service map screenshot: {}", png.display());
    eprintln!("service map screenshot: {}", png.display());
}

#[test]
fn the_page_draws_a_thousand_services_and_five_thousand_edges() {
    let Some((chromium_bin, chromedriver)) = chromium() else {
        return;
    };
    let dir = Scratch::new("service-map-e2e-large");
    let otlp = free_port();
    let gw = gateway(&dir, otlp, "10s");
    let mesh = SyntheticMesh::new(1000, 5000)
        .with_seed(1)
        .generate()
        .unwrap_or_else(|e| panic!("{e}"));
    let roots = mesh.roots_for_coverage(8.0);
    let g = simulate(mesh.topology.clone(), 1, roots);
    let spans = post_all(otlp, &g);
    wait_settled(&gw, spans, Duration::from_secs(90));

    let api = topology(&gw, "5m");
    let truth = truth_ids(&g);
    let (truth_nodes, truth_edges) = &truth;
    // The mesh is the size asked for: 5,000 calls plus the users' edge; 8 calls per edge
    // on average leave a handful unexercised (e^-8).
    assert!(
        truth_edges.len() > 4980 && truth_nodes.len() > 1020,
        "{} nodes and {} edges exercised",
        truth_nodes.len(),
        truth_edges.len()
    );
    let browser = Browser::start(&dir, &chromium_bin, &chromedriver, VIEWPORT)
        .unwrap_or_else(|e| panic!("{e}"));
    let state = open_and_check_drawn(&browser, &gw, &api, &truth, Duration::from_secs(120));
    eprintln!(
        "first load of {} nodes / {} edges: {}",
        truth_nodes.len(),
        truth_edges.len(),
        state["lastLoad"]
    );

    // Still responsive: a click selects and shows the ingress gateway.
    let ingress = "istio-ingressgateway.istio-system";
    let text = click(&browser, "node", ingress);
    assert!(text.contains("istio-ingressgateway"), "#details:\n{text}");
    let edge = format!("user->{ingress}");
    let text = click(&browser, "edge", &edge);
    assert!(text.contains("istio-ingressgateway"), "#details:\n{text}");
    let ms = browser
        .execute("return window.meshgateServiceMap.redraw();", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ms.as_f64().is_some_and(|v| v >= 0.0),
        "redraw() returns its ms: {ms}"
    );
    check_console(&browser);
    let png = screenshot_path("service-map-e2e-large.png");
    browser.screenshot(&png).unwrap_or_else(|e| panic!("{e}"));
    check_png_size(&png, VIEWPORT);
    eprintln!("large service map screenshot: {}", png.display());
}

/// The PNG's IHDR says `width` x `height`.
fn check_png_size(path: &Path, (width, height): (u32, u32)) {
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        png.len() > 24 && &png[12..16] == b"IHDR",
        "{} is not a PNG",
        path.display()
    );
    let w = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
    let h = u32::from_be_bytes(png[20..24].try_into().expect("4 bytes"));
    assert_eq!(
        (w, h),
        (width, height),
        "screenshot size of {}",
        path.display()
    );
}

#[test]
fn numbers_are_read_as_people_write_them() {
    assert_eq!(
        numbers("1,234.5 req/s · 2.5% errors · 1.2k/s · 12 ms"),
        vec![(1234.5, 0.05), (2.5, 0.05), (1200.0, 50.0), (12.0, 0.5)]
    );
    assert!(shows("0.67 req/s", 200.0 / 300.0));
    assert!(shows("0.7 req/s", 200.0 / 300.0));
    assert!(!shows("0.8 req/s", 200.0 / 300.0));
    assert!(shows("1.2k/s", 1234.0));
    assert!(mentions_count("1,027 services · 5,001 edges", 5001));
}

#[test]
fn base64_decodes_the_rfc_4648_vectors() {
    for (text, want) in [
        ("", ""),
        ("Zg==", "f"),
        ("Zm8=", "fo"),
        ("Zm9v", "foo"),
        ("Zm9vYg==", "foob"),
        ("Zm9vYmE=", "fooba"),
        ("Zm9vYmFy", "foobar"),
    ] {
        assert_eq!(base64_decode(text).unwrap(), want.as_bytes(), "{text}");
    }
    assert_eq!(base64_decode("+/+/").unwrap(), vec![0xfb, 0xff, 0xbf]);
    assert!(base64_decode("Zm9v!A==").unwrap_err().contains("0x21"));
    assert!(base64_decode("Z").unwrap_err().contains("truncated"));
}
