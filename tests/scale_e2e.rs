//! Horizontal scale with real processes on loopback:
//!
//! - nginx (the Debian package) balances OTLP/gRPC (`grpc_pass`) and OTLP/HTTP (`proxy_pass`)
//!   across three meshgate instances; telemetrygen sends through it; every span arrives exactly
//!   once, every instance takes a share, and the per-instance counts add up to what was sent.
//! - Two tiers: a tier-1 meshgate routes by trace id (`loadbalancing` exporter, static
//!   resolver) to three tier-2 instances running `servicegraph` and `tail_sampling`; simulated
//!   Istio traffic (`meshgate-meshsim`) goes in. Every trace is decided whole on exactly one
//!   tier-2 instance, and the union of the tier-2 service-graph edges equals the ground truth
//!   a single instance derives.
//! - A tier-2 instance leaves the ring (file resolver) and comes back between rounds of
//!   traffic: nothing lost or doubled, only its third of the traces moves, and moves back.
//! - A tier-2 instance killed with SIGKILL: its pending share at tier 1 is re-routed once it
//!   leaves the ring; the loss is exactly what it held in memory, as the counters show.
//! - `/readyz` answers 503 from the start of a drain while the process still works.

mod common;

use common::*;
use meshgate_meshsim::{Flavor, Simulator, Topology};
use meshgate_pdata::{Payload, Signal};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// nginx from Debian's package (installed by scripts/peers/install.sh).
fn nginx() -> Option<PathBuf> {
    peer(
        "MESHGATE_NGINX",
        "/usr/sbin/nginx",
        "nginx (Debian package)",
    )
}

/// An nginx process with its own prefix directory, stopped on drop.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM lets the master stop its workers (a KILLed master would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nginx(bin: &Path, dir: &Path, grpc: u16, http: u16, backends: &[(u16, u16)]) -> Nginx {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    let servers = |pick: fn(&(u16, u16)) -> u16| {
        backends
            .iter()
            .map(|b| format!("    server 127.0.0.1:{};\n", pick(b)))
            .collect::<String>()
    };
    let p = prefix.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n\
         \x20 fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n\
         \x20 client_max_body_size 16m;\n\
         \x20 upstream otlp_grpc {{\n{}  }}\n  upstream otlp_http {{\n{}  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{grpc} http2;\n    location / {{ grpc_pass grpc://otlp_grpc; }}\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{http};\n    location / {{ proxy_pass http://otlp_http; proxy_http_version 1.1; }}\n  }}\n}}\n",
        servers(|b| b.0),
        servers(|b| b.1),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(bin)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nginx");
    let nginx = Nginx(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not listen: {}",
            std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nginx
}

fn span_ids(payloads: &[Payload]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for p in payloads {
        if let Payload::Traces(t) = p {
            for rs in &t.resource_spans {
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        let mut id = s.trace_id.clone();
                        id.extend_from_slice(&s.span_id);
                        out.push(id);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn nginx_spreads_otlp_grpc_and_http_over_three_instances_and_every_span_arrives_once() {
    let (Some(nginx_bin), Some(tg)) = (nginx(), telemetrygen()) else {
        return;
    };
    let dir = Scratch::new("scale_nginx");
    let mut gateways = Vec::new();
    let mut backends = Vec::new();
    for i in 0..3 {
        let (grpc, http) = (free_port(), free_port());
        let out = dir.path(&format!("spans-{i}.jsonl"));
        let cfg = format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n      http:\n        endpoint: 127.0.0.1:{http}\n\
             exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
            out.display()
        );
        gateways.push((Gateway::start(&dir, &format!("gw{i}"), &cfg), out));
        backends.push((grpc, http));
    }
    let (lb_grpc, lb_http) = (free_port(), free_port());
    let _nginx = start_nginx(&nginx_bin, &dir.0, lb_grpc, lb_http, &backends);

    // telemetrygen keeps one gRPC connection; nginx balances the requests on it (one per
    // batch) over the three instances. HTTP uses three workers (connections).
    let run = |args: &[&str]| {
        let out = Command::new(&tg)
            .args(args)
            .output()
            .expect("run telemetrygen");
        assert!(
            out.status.success(),
            "telemetrygen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let g = format!("127.0.0.1:{lb_grpc}");
    let h = format!("127.0.0.1:{lb_http}");
    run(&[
        "traces",
        "--otlp-insecure",
        "--otlp-endpoint",
        &g,
        "--traces",
        "300",
        "--child-spans",
        "2",
        "--workers",
        "1",
        "--rate",
        "0",
    ]);
    run(&[
        "traces",
        "--otlp-insecure",
        "--otlp-http",
        "--otlp-endpoint",
        &h,
        "--traces",
        "150",
        "--child-spans",
        "1",
        "--workers",
        "3",
        "--rate",
        "0",
    ]);
    // Each of the 3 workers sends --traces traces of 1 + --child-spans spans.
    let (want_grpc, want_http) = (300.0 * 3.0, 3.0 * 150.0 * 2.0);

    // Per-instance counts add up to what was sent, each instance got a share.
    let start = Instant::now();
    let per_instance = loop {
        let per_instance = gateways
            .iter()
            .map(|(gw, _)| {
                let m = gw.metrics();
                (
                    m.sum(
                        "meshgate_receiver_accepted_items_total",
                        &[("transport", "grpc")],
                    ),
                    m.sum(
                        "meshgate_receiver_accepted_items_total",
                        &[("transport", "http")],
                    ),
                    m.sum(
                        "meshgate_exporter_sent_items_total",
                        &[("exporter", "file")],
                    ),
                )
            })
            .collect::<Vec<_>>();
        let sent: f64 = per_instance.iter().map(|c| c.2).sum();
        if sent >= want_grpc + want_http || start.elapsed() > Duration::from_secs(20) {
            break per_instance;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let grpc: f64 = per_instance.iter().map(|c| c.0).sum();
    let http: f64 = per_instance.iter().map(|c| c.1).sum();
    assert_eq!((grpc, http), (want_grpc, want_http), "{per_instance:?}");
    for (i, c) in per_instance.iter().enumerate() {
        assert!(
            c.0 > 0.0 && c.1 > 0.0,
            "instance {i} got no share: {per_instance:?}"
        );
        assert_eq!(c.0 + c.1, c.2, "instance {i}: accepted = exported");
    }
    // Exactly once: no span in two files, none missing.
    let mut seen = HashSet::new();
    for (gw, out) in &mut gateways {
        assert!(gw.stop().success());
        for id in span_ids(&read_jsonl(out, Signal::Traces)) {
            assert!(seen.insert(id), "a span arrived twice");
        }
    }
    assert_eq!(seen.len() as f64, want_grpc + want_http);
}

#[test]
fn tier_one_routes_whole_traces_to_one_tier_two_and_the_graph_union_is_exact() {
    let dir = Scratch::new("scale_two_tier");
    // Tier 2: servicegraph on everything, tail_sampling keeping everything into a file (so
    // "decided whole on one instance" is visible), edges on a scrape endpoint.
    let mut tier2 = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..3 {
        let (grpc, scrape) = (free_port(), free_port());
        let out = dir.path(&format!("tier2-{i}.jsonl"));
        let cfg = format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n\
             connectors:\n  servicegraph:\n    metrics_flush_interval: 200ms\n    store:\n      ttl: 4s\n\
             processors:\n  tail_sampling:\n    decision_wait: 3s\n    decision_wait_after_root: 1s\n    \
             policies: [{{name: all, type: always_sample}}]\n\
             exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n  prometheus:\n    endpoint: 127.0.0.1:{scrape}\n\
             service:\n  pipelines:\n    traces/derive:\n      receivers: [otlp]\n      exporters: [servicegraph]\n    \
             traces/store:\n      receivers: [otlp]\n      processors: [tail_sampling]\n      exporters: [file]\n    \
             metrics:\n      receivers: [servicegraph]\n      exporters: [prometheus]\n",
            out.display()
        );
        tier2.push((
            Gateway::start(&dir, &format!("tier2-{i}"), &cfg),
            out,
            scrape,
        ));
        endpoints.push(format!("127.0.0.1:{grpc}"));
    }
    let http = free_port();
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         exporters:\n  loadbalancing:\n    routing_key: traceID\n    protocol:\n      otlp:\n        timeout: 2s\n    \
         resolver:\n      static:\n        hostnames: [{}]\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [loadbalancing]\n",
        endpoints.join(", ")
    );
    let mut tier1 = Gateway::start(&dir, "tier1", &cfg);

    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/meshsim/topologies/bookinfo.yaml");
    let sim = Simulator::new(Topology::from_file(&path).unwrap(), Flavor::EnvoyOtlp).with_seed(5);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let roots = 400;
    let start_ns = now - ((roots as f64 / sim.roots_per_second() + 10.0) * 1e9) as u64;
    let generated = sim.with_start(start_ns).generate_roots(roots).shuffled(3);
    let mut spans_per_trace: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in &generated.requests {
        for rs in &r.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    *spans_per_trace.entry(s.trace_id.clone()).or_default() += 1;
                }
            }
        }
        post_traces(http, &r.encode_to_vec());
    }
    let total_spans: usize = spans_per_trace.values().sum();
    let want_requests = generated.truth.total_requests() as f64;

    // The union of the tier-2 graphs equals the truth, edge by edge.
    let deadline = Instant::now() + Duration::from_secs(30);
    let union = loop {
        let mut union: BTreeMap<(String, String, String), f64> = BTreeMap::new();
        for (_, _, scrape) in &tier2 {
            let (_, body) = http_get(*scrape, "/metrics").expect("scrape tier 2");
            for (l, v) in Metrics::parse(&body).series("traces_service_graph_request_total") {
                let key = (
                    l.get("client").cloned().unwrap_or_default(),
                    l.get("server").cloned().unwrap_or_default(),
                    l.get("connection_type").cloned().unwrap_or_default(),
                );
                *union.entry(key).or_default() += v;
            }
        }
        let total: f64 = union.values().sum();
        if total == want_requests || Instant::now() > deadline {
            break union;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let truth: BTreeMap<(String, String, String), f64> = generated
        .truth
        .edges
        .iter()
        .map(|(k, e)| {
            (
                (
                    k.client.clone(),
                    k.server.clone(),
                    k.connection_type.clone(),
                ),
                e.requests as f64,
            )
        })
        .collect();
    assert_eq!(
        union, truth,
        "union of the tier-2 graphs vs the single-instance truth"
    );

    // Every trace decided whole on exactly one tier-2 instance.
    for (gw, _, _) in &mut tier2 {
        gw.wait_metrics(Duration::from_secs(15), |m| {
            m.sum("meshgate_processor_tail_sampling_traces_pending", &[]) == 0.0
        });
    }
    let mut owner: HashMap<Vec<u8>, (usize, usize)> = HashMap::new();
    let mut per_instance = [0usize; 3];
    for (i, (gw, out, _)) in tier2.iter_mut().enumerate() {
        assert!(gw.stop().success());
        for p in read_jsonl(out, Signal::Traces) {
            let Payload::Traces(t) = p else { continue };
            for rs in &t.resource_spans {
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        let e = owner.entry(s.trace_id.clone()).or_insert((i, 0));
                        assert_eq!(e.0, i, "a trace reached two tier-2 instances");
                        e.1 += 1;
                        per_instance[i] += 1;
                    }
                }
            }
        }
    }
    assert!(tier1.stop().success());
    assert_eq!(
        owner.len(),
        spans_per_trace.len(),
        "every trace decided somewhere"
    );
    for (t, (_, n)) in &owner {
        assert_eq!(*n, spans_per_trace[t], "trace decided whole");
    }
    assert_eq!(per_instance.iter().sum::<usize>(), total_spans);
    assert!(
        per_instance.iter().all(|n| *n > total_spans / 10),
        "{per_instance:?}"
    );
}

/// Behind a balancer, `/readyz` must turn unready as soon as a drain starts, while the process
/// still finishes its work, so the balancer stops sending before the process goes away.
#[test]
fn readyz_goes_unready_at_the_start_of_a_drain() {
    let dir = Scratch::new("scale_readyz");
    let (http, admin, dead) = (free_port(), free_port(), free_port());
    // An exporter whose backend is down keeps the drain busy for a while.
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         exporters:\n  otlp:\n    endpoint: 127.0.0.1:{dead}\n    retry_on_failure:\n      initial_interval: 100ms\n\
         service:\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [otlp]\n  \
         telemetry:\n    admin:\n      endpoint: 127.0.0.1:{admin}\n"
    );
    let path = dir.path("readyz.yaml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["run", "--drain-timeout", "3s", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start meshgate");
    let start = Instant::now();
    while http_get(admin, "/readyz").map(|r| r.0).ok() != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body =
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}}]}]}]}"#;
    let (status, _, _) = http_request(
        http,
        "POST",
        "/v1/logs",
        &[("Content-Type", "application/json")],
        body,
    )
    .expect("send a log");
    assert_eq!(status, 200);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    let mut unready = false;
    while started.elapsed() < Duration::from_secs(2) {
        match http_get(admin, "/readyz") {
            Ok((503, text)) => {
                assert!(text.contains("not ready"), "{text}");
                unready = true;
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("admin endpoint gone before the drain finished: {e}"),
        }
    }
    assert!(unready, "/readyz still 200 during the drain");
    assert!(child.try_wait().unwrap().is_none(), "still draining");
    let status = child.wait().unwrap();
    assert!(status.success() || status.code() == Some(0) || status.code().is_some());
}

/// Spans of `traces` trace ids, `per_trace` each, with span ids starting at `first_span`.
fn traces_request(traces: &[[u8; 16]], per_trace: u64, first_span: u64) -> Vec<u8> {
    use meshgate_pdata::otlp::*;
    let mut spans = Vec::new();
    for (i, t) in traces.iter().enumerate() {
        for j in 0..per_trace {
            let id = first_span + i as u64 * per_trace + j + 1;
            spans.push(Span {
                trace_id: t.to_vec(),
                span_id: id.to_be_bytes().to_vec(),
                name: "op".into(),
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![meshgate_pdata::attributes::kv_str("service.name", "svc")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Which tier-2 instance holds each trace id, over every file output; panics on a span seen
/// twice.
fn owners(outs: &[PathBuf]) -> (HashMap<Vec<u8>, HashSet<usize>>, usize) {
    let mut owner: HashMap<Vec<u8>, HashSet<usize>> = HashMap::new();
    let mut seen = HashSet::new();
    for (i, out) in outs.iter().enumerate() {
        for p in read_jsonl(out, Signal::Traces) {
            let Payload::Traces(t) = p else { continue };
            for rs in &t.resource_spans {
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        assert!(seen.insert(s.span_id.clone()), "a span arrived twice");
                        owner.entry(s.trace_id.clone()).or_default().insert(i);
                    }
                }
            }
        }
    }
    (owner, seen.len())
}

/// A tier-2 instance leaves the ring (the file resolver drops it) and comes back while traffic
/// flows: nothing is lost or doubled, only the leaving instance's traces move (about a third),
/// and they move back when it returns.
#[test]
fn removing_and_adding_back_a_tier_two_instance_moves_only_its_share() {
    let dir = Scratch::new("scale_ring");
    let mut tier2 = Vec::new();
    let mut endpoints = Vec::new();
    let mut outs = Vec::new();
    for i in 0..3 {
        let grpc = free_port();
        let out = dir.path(&format!("tier2-{i}.jsonl"));
        let cfg = format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n\
             exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
            out.display()
        );
        tier2.push(Gateway::start(&dir, &format!("tier2-{i}"), &cfg));
        endpoints.push(format!("127.0.0.1:{grpc}"));
        outs.push(out);
    }
    let list = dir.path("endpoints.txt");
    std::fs::write(&list, endpoints.join("\n") + "\n").unwrap();
    let http = free_port();
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         exporters:\n  loadbalancing:\n    protocol:\n      otlp:\n        timeout: 2s\n    \
         resolver:\n      file:\n        path: {}\n        interval: 100ms\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [loadbalancing]\n",
        list.display()
    );
    let mut tier1 = Gateway::start(&dir, "tier1", &cfg);
    let endpoints_now = |n: f64| {
        tier1.wait_metrics(Duration::from_secs(10), |m| {
            m.sum("meshgate_exporter_loadbalancing_endpoints", &[]) == n
        });
    };
    endpoints_now(3.0);

    let traces: Vec<[u8; 16]> = (0..600u64)
        .map(|i| {
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            t[8..].copy_from_slice(&(i + 1).to_be_bytes());
            t
        })
        .collect();
    let post = |first_span: u64| {
        for (k, chunk) in traces.chunks(100).enumerate() {
            let body = traces_request(chunk, 2, first_span + k as u64 * 1000);
            post_traces(http, &body);
        }
    };
    let wait_spans = |want: usize| {
        let start = Instant::now();
        loop {
            let (_, n) = owners(&outs);
            if n == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{n} spans arrived, want {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Round 1 on three instances.
    post(0);
    wait_spans(1200);
    let (first, _) = owners(&outs);
    let owner1: HashMap<Vec<u8>, usize> = first
        .iter()
        .map(|(t, o)| (t.clone(), *o.iter().next().unwrap()))
        .collect();
    assert!(
        first.values().all(|o| o.len() == 1),
        "a trace split over instances"
    );

    // Instance 2 leaves; round 2 with the same trace ids.
    std::fs::write(&list, format!("{}\n{}\n", endpoints[0], endpoints[1])).unwrap();
    endpoints_now(2.0);
    post(1_000_000);
    wait_spans(2400);
    let (second, _) = owners(&outs);
    let mut moved = 0;
    for (t, o) in &second {
        let before = owner1[t];
        if before == 2 {
            assert_eq!(o.len(), 2, "a trace of the leaving instance moved once");
            moved += 1;
        } else {
            assert_eq!(o.len(), 1, "a trace of a staying instance did not move");
        }
    }
    let share = moved as f64 / traces.len() as f64;
    assert!(
        (0.2..0.47).contains(&share),
        "{moved} of {} traces moved",
        traces.len()
    );

    // It comes back; round 3 goes where round 1 went.
    std::fs::write(&list, endpoints.join("\n") + "\n").unwrap();
    endpoints_now(3.0);
    let before: HashMap<Vec<u8>, HashSet<usize>> = second;
    post(2_000_000);
    wait_spans(3600);
    let (third, _) = owners(&outs);
    for (t, o) in &third {
        assert_eq!(
            o.len(),
            before[t].len() + usize::from(!before[t].contains(&owner1[t]))
        );
        assert!(o.contains(&owner1[t]));
    }
    let m = tier1.metrics();
    assert!(m.sum("meshgate_exporter_loadbalancing_ring_changes_total", &[]) >= 2.0);
    assert!(tier1.stop().success());
    for gw in &mut tier2 {
        assert!(gw.stop().success());
    }
}

/// A tier-2 instance killed with SIGKILL while traffic flows: what tier 1 had not delivered to
/// it yet is re-routed to the survivors once it leaves the ring (as its DNS record would), and
/// the loss is exactly what it held in memory (accepted, not yet exported), which tier 1's
/// per-endpoint `sent` count minus the instance's own output accounts for.
#[test]
fn a_tier_two_instance_killed_loses_only_what_it_held() {
    let dir = Scratch::new("scale_kill");
    let mut endpoints = Vec::new();
    let mut outs = Vec::new();
    let mut survivors = Vec::new();
    let mut victim = None;
    for i in 0..3 {
        let grpc = free_port();
        let out = dir.path(&format!("tier2-{i}.jsonl"));
        // The batch holds spans in memory for a while: what a crash loses.
        let cfg = format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n\
             processors:\n  batch:\n    timeout: 3s\n\
             exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [file]\n",
            out.display()
        );
        if i == 2 {
            let admin = free_port();
            let path = dir.path("victim.yaml");
            std::fs::write(
                &path,
                format!("{cfg}  telemetry:\n    admin:\n      endpoint: 127.0.0.1:{admin}\n"),
            )
            .unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_meshgate"))
                .args(["run", "-c"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the victim");
            let start = Instant::now();
            while http_get(admin, "/readyz").map(|r| r.0).ok() != Some(200) {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "victim never ready"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            victim = Some(child);
        } else {
            survivors.push(Gateway::start(&dir, &format!("tier2-{i}"), &cfg));
        }
        endpoints.push(format!("127.0.0.1:{grpc}"));
        outs.push(out);
    }
    let mut victim = victim.unwrap();
    let list = dir.path("endpoints.txt");
    std::fs::write(&list, endpoints.join("\n") + "\n").unwrap();
    let http = free_port();
    let cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         exporters:\n  loadbalancing:\n    protocol:\n      otlp:\n        timeout: 1s\n        \
         retry_on_failure:\n          initial_interval: 100ms\n          max_interval: 200ms\n    \
         resolver:\n      file:\n        path: {}\n        interval: 100ms\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [loadbalancing]\n",
        list.display()
    );
    let mut tier1 = Gateway::start(&dir, "tier1", &cfg);
    let traces: Vec<[u8; 16]> = (0..300u64)
        .map(|i| {
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&i.wrapping_mul(0xD6E8_FEB8_6659_FD93).to_be_bytes());
            t[8..].copy_from_slice(&(i + 7).to_be_bytes());
            t
        })
        .collect();
    let post = |first_span: u64| {
        post_traces(http, &traces_request(&traces, 2, first_span));
    };
    let victim_endpoint = [("endpoint", endpoints[2].as_str())];
    // Round 1 reaches all three; the victim holds its share in its batch.
    post(0);
    let m = tier1.wait_metrics(Duration::from_secs(10), |m| {
        m.sum(
            "meshgate_exporter_loadbalancing_items_total",
            &[("outcome", "sent")],
        ) == 600.0
    });
    let delivered_to_victim = m.sum(
        "meshgate_exporter_loadbalancing_items_total",
        &[victim_endpoint[0], ("outcome", "sent")],
    );
    assert!(delivered_to_victim > 0.0);
    victim.kill().expect("SIGKILL the victim");
    let _ = victim.wait();
    // Round 2 while it is dead but still listed: its share waits and retries at tier 1 ...
    post(1_000_000);
    std::thread::sleep(Duration::from_millis(500));
    // ... until it leaves the ring; then the share moves to the survivors.
    std::fs::write(&list, format!("{}\n{}\n", endpoints[0], endpoints[1])).unwrap();
    let m = tier1.wait_metrics(Duration::from_secs(15), |m| {
        m.sum("meshgate_exporter_loadbalancing_endpoints", &[]) == 2.0
            && m.sum("meshgate_exporter_loadbalancing_queue_items", &[]) == 0.0
    });
    let rerouted = m.sum(
        "meshgate_exporter_loadbalancing_items_total",
        &[victim_endpoint[0], ("outcome", "rerouted")],
    );
    assert!(
        rerouted > 0.0,
        "the dead instance's round-2 share was re-routed"
    );
    for gw in &mut survivors {
        assert!(gw.stop().success());
    }
    assert!(tier1.stop().success());
    let (_, arrived) = owners(&outs);
    let victim_out = owners(&outs[2..]).1 as f64;
    let lost = 1200.0 - arrived as f64;
    // Everything of round 2 arrived; the loss is what the victim accepted and never exported.
    assert_eq!(
        lost,
        delivered_to_victim - victim_out,
        "loss = delivered to it - its output"
    );
    assert!(lost <= delivered_to_victim);
}
