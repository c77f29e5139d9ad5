//! Derive first, then sample, end to end against the real binary: simulated Istio traffic
//! (`meshgate-meshsim`, the `shop` topology) goes through one receiver into two pipelines.
//! `traces/derive` feeds `spanmetrics` and `servicegraph`, which see every span; `traces/store`
//! runs `tail_sampling` (keep errors, slow traces and 5 % of the rest) into the Parquet lake.
//! Checked: the derived metrics count every span and every request of the ground truth; the
//! lake holds only whole traces, every error trace and every slow trace, and about 5 % of the
//! others; and the counters add up (in = out + sampled out, exporter received = lake rows).

mod common;

use common::*;
use meshgate_meshsim::{Flavor, Simulator, Topology};
use meshgate_pdata::otlp::ExportTraceServiceRequest;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ROOTS: u64 = 1000;
/// The latency policy's threshold.
const SLOW_MS: u64 = 100;

struct TraceTruth {
    spans: u64,
    failed: bool,
    duration_ms: f64,
}

fn truth_by_trace(requests: &[ExportTraceServiceRequest]) -> BTreeMap<String, TraceTruth> {
    let mut bounds: BTreeMap<String, (u64, u64, u64, bool)> = BTreeMap::new();
    for r in requests {
        for rs in &r.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let e =
                        bounds
                            .entry(hex::encode(&s.trace_id))
                            .or_insert((0, u64::MAX, 0, false));
                    e.0 += 1;
                    e.1 = e.1.min(s.start_time_unix_nano);
                    e.2 = e.2.max(s.end_time_unix_nano);
                    e.3 |= meshgate_pdata::mesh::is_failed(s);
                }
            }
        }
    }
    bounds
        .into_iter()
        .map(|(t, (n, start, end, failed))| {
            (
                t,
                TraceTruth {
                    spans: n,
                    failed,
                    duration_ms: (end - start) as f64 / 1e6,
                },
            )
        })
        .collect()
}

/// `meshgate query --format csv`, rows without the header.
fn query(lake: &Path, sql: &str) -> Vec<Vec<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["query", "--lake"])
        .arg(lake)
        .args(["--format", "csv", sql])
        .output()
        .expect("run meshgate query");
    assert!(
        out.status.success(),
        "meshgate query failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn metrics_see_every_span_while_the_lake_keeps_only_the_sampled_whole_traces() {
    let dir = Scratch::new("sampling_e2e");
    let lake = dir.path("lake");
    let http = free_port();
    let scrape = free_port();
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         connectors:\n  spanmetrics:\n    metrics_flush_interval: 200ms\n  servicegraph:\n    \
         metrics_flush_interval: 200ms\n    store:\n      ttl: 5s\n\
         processors:\n  tail_sampling:\n    decision_wait: 4s\n    decision_wait_after_root: 1s\n    \
         policies:\n      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}\n      \
         - {{name: slow, type: latency, latency: {{threshold_ms: {SLOW_MS}}}}}\n      \
         - {{name: five-percent, type: probabilistic, probabilistic: {{sampling_percentage: 5}}}}\n\
         exporters:\n  parquet:\n    path: {}\n    max_age: 1h\n  prometheus:\n    endpoint: 127.0.0.1:{scrape}\n\
         service:\n  pipelines:\n    traces/derive:\n      receivers: [otlp]\n      exporters: [spanmetrics, servicegraph]\n    \
         traces/store:\n      receivers: [otlp]\n      processors: [tail_sampling]\n      exporters: [parquet]\n    \
         metrics:\n      receivers: [spanmetrics, servicegraph]\n      exporters: [prometheus]\n",
        lake.display()
    );
    let mut gw = Gateway::start(&dir, "sampling", &config);

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/meshsim/topologies/shop.yaml");
    let sim = Simulator::new(Topology::from_file(&path).unwrap(), Flavor::EnvoyOtlp).with_seed(31);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let start = now - ((ROOTS as f64 / sim.roots_per_second() + 10.0) * 1e9) as u64;
    let generated = sim.with_start(start).generate_roots(ROOTS);
    let traces = truth_by_trace(&generated.requests);
    assert_eq!(traces.len() as u64, ROOTS);
    let spans: u64 = traces.values().map(|t| t.spans).sum();
    for r in &generated.requests {
        post_traces(http, &r.encode_to_vec());
    }

    // Derivation saw everything: every span counted by spanmetrics, every request of the truth
    // in the service graph (after the store's TTL turned unpaired callers into virtual edges).
    let total_requests = generated.truth.total_requests() as f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = http_get(scrape, "/metrics").expect("scrape");
        let m = Metrics::parse(&text);
        let calls = m.sum("traces_span_metrics_calls_total", &[]);
        let requests = m.sum("traces_service_graph_request_total", &[]);
        if calls == spans as f64 && requests == total_requests {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "derived metrics incomplete: calls {calls} of {spans}, graph requests {requests} of {total_requests}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every trace decided (root + 1 s, or 4 s), then drain: the lake is complete.
    gw.wait_metrics(Duration::from_secs(20), |m| {
        m.sum("meshgate_processor_tail_sampling_traces_pending", &[]) == 0.0
            && m.sum("meshgate_processor_tail_sampling_traces_decided_total", &[]) >= ROOTS as f64
    });
    let m = gw.metrics();
    let store = [("pipeline", "traces/store")];
    let items_in = m.sum("meshgate_pipeline_items_in_total", &store);
    let items_out = m.sum("meshgate_pipeline_items_out_total", &store);
    let sampled_out = m.sum(
        "meshgate_processor_dropped_items_total",
        &[("pipeline", "traces/store"), ("reason", "sampled_out")],
    );
    assert_eq!(items_in, spans as f64);
    assert_eq!(items_out + sampled_out, items_in, "in = out + sampled out");
    assert_eq!(
        m.sum(
            "meshgate_connector_received_items_total",
            &[("connector", "spanmetrics")]
        ),
        spans as f64
    );
    assert_eq!(
        m.sum(
            "meshgate_connector_received_items_total",
            &[("connector", "servicegraph")]
        ),
        spans as f64
    );
    assert!(gw.stop().success(), "{}", gw.log_text());

    // The lake: whole traces only, and exactly the ones the policies call for.
    let rows = query(
        &lake,
        "SELECT trace_id, count(*) AS n FROM spans GROUP BY trace_id",
    );
    let kept: BTreeMap<String, u64> = rows
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    let lake_rows: u64 = kept.values().sum();
    assert_eq!(
        lake_rows as f64, items_out,
        "every span the pipeline let out is in the lake"
    );
    let mut must = BTreeSet::new();
    let mut others = 0;
    for (t, truth) in &traces {
        if truth.failed || truth.duration_ms >= SLOW_MS as f64 {
            must.insert(t.clone());
        } else {
            others += 1;
        }
    }
    assert!(
        !must.is_empty(),
        "the shop topology has errors and slow traces"
    );
    for (t, n) in &kept {
        let truth = traces
            .get(t)
            .unwrap_or_else(|| panic!("unknown trace {t} in the lake"));
        assert_eq!(*n, truth.spans, "trace {t} is whole in the lake");
    }
    for t in &must {
        assert!(
            kept.contains_key(t),
            "error or slow trace {t} was not kept: {:?}",
            traces[t].duration_ms
        );
    }
    let kept_others = kept.keys().filter(|t| !must.contains(*t)).count();
    let share = kept_others as f64 / others as f64;
    assert!(
        (0.015..=0.10).contains(&share),
        "{kept_others} of {others} other traces kept ({:.1} %), expected about 5 %",
        share * 100.0
    );
}
