//! The processor end to end: spans of a trace across requests, timing of decisions, late
//! spans, bounds, shutdown, output shape and accounting.

use super::*;
use crate::testutil::{build, build_err};
use meshgate_engine::Registry;
use meshgate_pdata::attributes::{get_str, kv_str};
use meshgate_pdata::otlp::{InstrumentationScope, Resource, ScopeSpans, Status, status};
use serde_json::json;

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

fn sampler(cfg: serde_json::Value) -> (TailSampler, Registry) {
    let r = Registry::new();
    let cfg = TailSamplingConfig::from_json(&cfg).unwrap();
    let s = TailSampler::new(&cfg, &r, "tail_sampling", "traces").unwrap();
    (s, r)
}

/// A 16-byte trace id from a number.
fn tid(n: u32) -> Vec<u8> {
    let mut id = vec![0xab; 16];
    id[12..].copy_from_slice(&n.to_be_bytes());
    id
}

/// A span of trace `trace`; `parent: None` makes it a root.
fn sp(trace: u32, name: &str, parent: Option<u8>) -> Span {
    Span {
        trace_id: tid(trace),
        span_id: vec![name.len() as u8 + 1; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.to_string(),
        attributes: vec![kv_str("component", "proxy")],
        ..Default::default()
    }
}

fn failed(mut s: Span) -> Span {
    s.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: String::new(),
    });
    s
}

/// One request from proxy `service` with these spans.
fn req(service: &str, spans: Vec<Span>) -> Payload {
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// (service.name, span name) of every span in the outputs, in order.
fn spans_out(out: &[Payload]) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for p in out {
        let Payload::Traces(t) = p else {
            panic!("traces expected")
        };
        for rs in &t.resource_spans {
            let svc = rs
                .resource
                .as_ref()
                .and_then(|r| get_str(&r.attributes, "service.name"))
                .unwrap_or_default()
                .to_string();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    v.push((svc.clone(), s.name.clone()));
                }
            }
        }
    }
    v
}

fn counter(r: &Registry, name: &'static str, extra: &[(&str, &str)]) -> u64 {
    let mut labels = vec![("processor", "tail_sampling"), ("pipeline", "traces")];
    labels.extend_from_slice(extra);
    r.counter(name, "", &labels).get()
}

fn dropped(r: &Registry, reason: &str) -> u64 {
    counter(
        r,
        "meshgate_processor_dropped_items_total",
        &[("signal", "traces"), ("reason", reason)],
    )
}

fn decided(r: &Registry, decision: &str, trigger: &str) -> u64 {
    counter(
        r,
        "meshgate_processor_tail_sampling_traces_decided_total",
        &[("decision", decision), ("trigger", trigger)],
    )
}

fn late(r: &Registry, decision: &str) -> u64 {
    counter(
        r,
        "meshgate_processor_tail_sampling_late_spans_total",
        &[("decision", decision)],
    )
}

fn evicted(r: &Registry, reason: &str) -> u64 {
    counter(
        r,
        "meshgate_processor_tail_sampling_evicted_traces_total",
        &[("reason", reason)],
    )
}

fn run_at(s: &mut TailSampler, data: Payload, now: Instant) -> Vec<Payload> {
    let mut out = Vec::new();
    s.process_at(data, now, &mut out);
    out
}

fn tick(s: &mut TailSampler, now: Instant) -> Vec<Payload> {
    let mut out = Vec::new();
    s.on_deadline_at(now, &mut out);
    out
}

fn errors_policy() -> serde_json::Value {
    json!([{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}])
}

#[test]
fn spans_of_one_trace_across_many_requests_are_decided_together() {
    let (mut s, r) = sampler(json!({
        "decision_wait": "10s", "decision_wait_after_root": "0s", "policies": errors_policy()
    }));
    let t0 = Instant::now();
    // Trace 1 (with an error deep inside) and trace 2 (clean) interleave over six requests
    // from three proxies; the error arrives in the middle.
    let steps = [
        req("frontend", vec![sp(1, "f1", Some(9)), sp(2, "f2", Some(9))]),
        req("reviews", vec![sp(1, "r1", Some(1))]),
        req("ratings", vec![sp(2, "q2", Some(2))]),
        req("ratings", vec![failed(sp(1, "q1", Some(2)))]),
        req("reviews", vec![sp(2, "r2", Some(1)), sp(1, "r1b", Some(1))]),
        req("frontend", vec![sp(1, "root1", None), sp(2, "root2", None)]),
    ];
    for (i, p) in steps.into_iter().enumerate() {
        assert!(run_at(&mut s, p, t0 + S(i as u64)).is_empty());
    }
    assert_eq!(s.pending().traces, 2);
    assert_eq!(s.pending().spans, 9);
    // Root spans do not count: early decisions are off.
    assert_eq!(s.next_decision_at(), Some(t0 + S(10)));
    assert!(tick(&mut s, t0 + S(9)).is_empty());
    let out = tick(&mut s, t0 + S(10));
    assert_eq!(out.len(), 1, "decided traces leave in one request");
    let got = spans_out(&out);
    let want: Vec<(String, String)> = [
        ("frontend", "f1"),
        ("frontend", "root1"),
        ("reviews", "r1"),
        ("reviews", "r1b"),
        ("ratings", "q1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let mut sorted = got.clone();
    sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(
        sorted, want_sorted,
        "every span of trace 1 with its own resource"
    );
    assert_eq!(dropped(&r, "sampled_out"), 4, "trace 2's spans");
    assert_eq!(decided(&r, "sampled", "decision_wait"), 1);
    assert_eq!(decided(&r, "not_sampled", "decision_wait"), 1);
    assert_eq!(s.pending(), PendingStats::default());
    assert_eq!(s.next_decision_at(), None);
}

#[test]
fn late_spans_follow_the_cached_decision() {
    let (mut s, r) = sampler(json!({"decision_wait": "1s", "policies": errors_policy()}));
    let t0 = Instant::now();
    run_at(
        &mut s,
        req("a", vec![failed(sp(1, "x", Some(1))), sp(2, "y", Some(1))]),
        t0,
    );
    assert_eq!(spans_out(&tick(&mut s, t0 + S(1))).len(), 1);
    // Late spans: trace 1's passes through at once, trace 2's is dropped.
    let out = run_at(
        &mut s,
        req(
            "b",
            vec![
                sp(1, "late1", Some(1)),
                sp(2, "late2", Some(1)),
                sp(1, "root1", None),
            ],
        ),
        t0 + S(5),
    );
    assert_eq!(
        spans_out(&out),
        [
            ("b".to_string(), "late1".to_string()),
            ("b".to_string(), "root1".to_string())
        ]
    );
    assert_eq!(s.pending().traces, 0, "late spans start no new trace");
    assert_eq!(late(&r, "sampled"), 2);
    assert_eq!(late(&r, "not_sampled"), 1);
    assert_eq!(dropped(&r, "sampled_out"), 2);

    // Without caches, a late span is a new trace (the collector's behaviour).
    let (mut s, r) = sampler(json!({"decision_wait": "1s", "policies": errors_policy(),
        "decision_cache": {"sampled_cache_size": 0, "non_sampled_cache_size": 0}}));
    run_at(&mut s, req("a", vec![failed(sp(1, "x", Some(1)))]), t0);
    tick(&mut s, t0 + S(1));
    assert!(run_at(&mut s, req("b", vec![sp(1, "late", Some(1))]), t0 + S(2)).is_empty());
    assert_eq!(s.pending().traces, 1);
    assert_eq!(late(&r, "sampled"), 0);
}

#[test]
fn decision_cache_forgets_oldest_ids() {
    let (mut s, r) = sampler(
        json!({"decision_wait": "1s", "decision_wait_after_root": "0s",
        "decision_cache": {"sampled_cache_size": 2, "non_sampled_cache_size": 2},
        "policies": [{"name": "all", "type": "always_sample"}]}),
    );
    let t0 = Instant::now();
    run_at(
        &mut s,
        req("a", (1..=3).map(|t| sp(t, "s", Some(1))).collect()),
        t0,
    );
    assert_eq!(spans_out(&tick(&mut s, t0 + S(1))).len(), 3);
    // Trace 1's id fell out of the 2-entry cache; 2 and 3 are remembered.
    let out = run_at(
        &mut s,
        req("a", (1..=3).map(|t| sp(t, "late", Some(1))).collect()),
        t0 + S(2),
    );
    assert_eq!(spans_out(&out).len(), 2);
    assert_eq!(late(&r, "sampled"), 2);
    assert_eq!(s.pending().traces, 1);
}

#[test]
fn early_decision_after_root_versus_full_decision_wait() {
    let cfg = |after_root: &str| {
        json!({"decision_wait": "30s", "decision_wait_after_root": after_root,
            "policies": [{"name": "all", "type": "always_sample"}]})
    };
    let t0 = Instant::now();
    let (mut s, r) = sampler(cfg("2s"));
    // Trace 1: a child, then its root 1s later: due 2s after the root.
    run_at(&mut s, req("a", vec![sp(1, "child", Some(1))]), t0);
    // Trace 2: never gets a root.
    run_at(&mut s, req("a", vec![sp(2, "orphan", Some(1))]), t0);
    run_at(&mut s, req("gw", vec![sp(1, "root", None)]), t0 + S(1));
    assert_eq!(s.next_decision_at(), Some(t0 + S(3)));
    // A child arriving within the grace still makes the decision.
    run_at(
        &mut s,
        req("b", vec![sp(1, "slow-child", Some(1))]),
        t0 + MS(2500),
    );
    assert!(tick(&mut s, t0 + MS(2999)).is_empty());
    let out = tick(&mut s, t0 + S(3));
    let names: Vec<String> = spans_out(&out).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names.len(), 3);
    for n in ["child", "root", "slow-child"] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    assert_eq!(decided(&r, "sampled", "root"), 1);
    // The orphan waits the full decision_wait.
    assert_eq!(s.next_decision_at(), Some(t0 + S(30)));
    assert_eq!(spans_out(&tick(&mut s, t0 + S(30))).len(), 1);
    assert_eq!(decided(&r, "sampled", "decision_wait"), 1);
    // Mean decision latency: (3s + 30s) / 2.
    assert_eq!(
        counter(
            &r,
            "meshgate_processor_tail_sampling_decision_age_milliseconds_total",
            &[]
        ),
        33_000
    );

    // With `0s` the root changes nothing.
    let (mut s, r) = sampler(cfg("0s"));
    run_at(&mut s, req("a", vec![sp(1, "child", Some(1))]), t0);
    run_at(&mut s, req("gw", vec![sp(1, "root", None)]), t0 + S(1));
    assert_eq!(s.next_decision_at(), Some(t0 + S(30)));
    assert!(tick(&mut s, t0 + S(3)).is_empty());
    assert_eq!(spans_out(&tick(&mut s, t0 + S(30))).len(), 2);
    assert_eq!(decided(&r, "sampled", "root"), 0);
}

#[test]
fn decisions_are_batched_by_the_tick_and_run_inside_process() {
    let (mut s, _r) = sampler(json!({"decision_wait": "1s",
        "policies": [{"name": "all", "type": "always_sample"}]}));
    let t0 = Instant::now();
    run_at(&mut s, req("a", vec![sp(1, "a", Some(1))]), t0);
    run_at(&mut s, req("a", vec![sp(2, "b", Some(1))]), t0 + MS(10));
    assert_eq!(tick(&mut s, t0 + S(1)).len(), 1);
    // Trace 2 was due 10ms later, but the next pass is a tick after the last one.
    assert_eq!(s.next_decision_at(), Some(t0 + S(1) + DECISION_TICK));
    // A busy pipeline may never call on_deadline: an overdue pass runs in process.
    let out = run_at(&mut s, req("a", vec![sp(3, "c", Some(1))]), t0 + S(2));
    assert_eq!(spans_out(&out), [("a".to_string(), "b".to_string())]);
    assert_eq!(s.pending().traces, 1);
}

#[test]
fn memory_bound_holds_under_a_flood_of_never_ending_traces() {
    let max = 256 * 1024;
    let (mut s, r) = sampler(json!({"decision_wait": "1h", "max_memory": max,
        "policies": [{"name": "some", "type": "probabilistic", "probabilistic": {"sampling_percentage": 25}}]}));
    let t0 = Instant::now();
    let (mut spans_in, mut spans_out_n) = (0u64, 0u64);
    // 5000 traces, none ever completes (no root, decision_wait far away); each request
    // carries one more span of 20 traces, so every trace keeps growing.
    for round in 0..50u32 {
        for batch in 0..250u32 {
            let spans: Vec<Span> = (0..20)
                .map(|k| {
                    let mut x = sp(batch * 20 + k, "never-ends", Some(1));
                    x.attributes
                        .push(kv_str("http.url", &format!("/items/{round}/{k}")));
                    x
                })
                .collect();
            spans_in += spans.len() as u64;
            let out = run_at(&mut s, req("svc", spans), t0 + MS(u64::from(round)));
            spans_out_n += spans_out(&out).len() as u64;
            let p = s.pending();
            assert!(p.bytes <= max, "{} > {max} bytes pending", p.bytes);
            assert_eq!(
                spans_in,
                spans_out_n + dropped(&r, "sampled_out") + p.spans as u64,
                "spans in = out + dropped + pending"
            );
        }
    }
    let ev = evicted(&r, "max_memory");
    assert!(ev > 1000, "{ev} evictions");
    assert_eq!(
        ev,
        decided(&r, "sampled", "max_memory") + decided(&r, "not_sampled", "max_memory"),
        "every eviction is a decision"
    );
    assert!(
        spans_out_n > 0,
        "evicted traces are decided, not dropped undecided"
    );
    let per_trace = s.pending().bytes_per_trace().unwrap();
    assert!(per_trace > 200, "{per_trace} bytes per trace");
    let gauge = r.gauge(
        "meshgate_processor_tail_sampling_memory_bytes",
        "",
        &[("processor", "tail_sampling"), ("pipeline", "traces")],
    );
    assert_eq!(gauge.get() as usize, s.pending().bytes);
}

#[test]
fn num_traces_bound_decides_the_oldest() {
    let (mut s, r) = sampler(json!({"num_traces": 3,
        "policies": [{"name": "all", "type": "always_sample"}]}));
    let t0 = Instant::now();
    let mut out = Vec::new();
    for t in 1..=5 {
        out.extend(run_at(
            &mut s,
            req("a", vec![sp(t, &format!("t{t}"), Some(1))]),
            t0,
        ));
    }
    assert_eq!(
        spans_out(&out),
        [
            ("a".to_string(), "t1".to_string()),
            ("a".to_string(), "t2".to_string())
        ]
    );
    assert_eq!(evicted(&r, "num_traces"), 2);
    assert_eq!(decided(&r, "sampled", "num_traces"), 2);
    assert_eq!(s.pending().traces, 3);
    // Spans of a pending trace do not count as new traces.
    run_at(&mut s, req("a", vec![sp(5, "more", Some(1))]), t0);
    assert_eq!(evicted(&r, "num_traces"), 2);
}

#[test]
fn flush_decides_everything_pending_or_drops_on_request() {
    let t0 = Instant::now();
    let (mut s, r) = sampler(json!({"policies": errors_policy()}));
    run_at(
        &mut s,
        req("a", vec![failed(sp(1, "e", Some(1))), sp(2, "ok", Some(1))]),
        t0,
    );
    let mut out = Vec::new();
    s.flush_at(t0 + S(1), &mut out);
    assert_eq!(spans_out(&out), [("a".to_string(), "e".to_string())]);
    assert_eq!(decided(&r, "sampled", "shutdown"), 1);
    assert_eq!(decided(&r, "not_sampled", "shutdown"), 1);
    assert_eq!(s.pending(), PendingStats::default());

    let (mut s, r) =
        sampler(json!({"policies": errors_policy(), "drop_pending_traces_on_shutdown": true}));
    run_at(
        &mut s,
        req("a", vec![failed(sp(1, "e", Some(1))), sp(2, "ok", Some(1))]),
        t0,
    );
    let mut out = Vec::new();
    s.flush_at(t0 + S(1), &mut out);
    assert!(out.is_empty());
    assert_eq!(dropped(&r, "shutdown"), 2);
    assert_eq!(decided(&r, "sampled", "shutdown"), 0);
    assert_eq!(s.pending(), PendingStats::default());
}

#[test]
fn output_keeps_resource_scope_and_schema_urls() {
    let (mut s, _r) = sampler(json!({"decision_wait": "1s",
        "policies": [{"name": "all", "type": "always_sample"}]}));
    let scope = |name: &str| {
        Some(InstrumentationScope {
            name: name.to_string(),
            version: "1.2".into(),
            ..Default::default()
        })
    };
    let input = Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", "shop"),
                    kv_str("k8s.pod.name", "p-1"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![
                ScopeSpans {
                    scope: scope("http"),
                    spans: vec![sp(1, "a", Some(1))],
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                },
                ScopeSpans {
                    scope: scope("db"),
                    spans: vec![sp(1, "b", Some(1)), sp(2, "c", Some(1))],
                    schema_url: String::new(),
                },
            ],
            schema_url: "https://opentelemetry.io/schemas/1.25.0".into(),
        }],
    });
    let t0 = Instant::now();
    run_at(&mut s, input, t0);
    let out = tick(&mut s, t0 + S(1));
    let Payload::Traces(t) = &out[0] else {
        panic!()
    };
    let mut seen = Vec::new();
    for rs in &t.resource_spans {
        assert_eq!(rs.schema_url, "https://opentelemetry.io/schemas/1.25.0");
        let res = rs.resource.as_ref().unwrap();
        assert_eq!(get_str(&res.attributes, "k8s.pod.name"), Some("p-1"));
        for ss in &rs.scope_spans {
            let sc = ss.scope.as_ref().unwrap();
            assert_eq!(sc.version, "1.2");
            let url_ok = if sc.name == "http" {
                ss.schema_url == "https://opentelemetry.io/schemas/1.26.0"
            } else {
                ss.schema_url.is_empty()
            };
            assert!(url_ok, "{} has schema url {}", sc.name, ss.schema_url);
            for x in &ss.spans {
                seen.push((sc.name.clone(), x.name.clone()));
            }
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("db".to_string(), "b".to_string()),
            ("db".to_string(), "c".to_string()),
            ("http".to_string(), "a".to_string())
        ]
    );
    assert_eq!(s.pending().bytes, 0, "every origin released");
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn accounting_adds_up_and_memory_returns_to_zero() {
    let (mut s, r) = sampler(json!({
        "decision_wait": "3s", "decision_wait_after_root": "500ms", "num_traces": 300,
        "max_memory": "2MiB",
        "decision_cache": {"sampled_cache_size": 50, "non_sampled_cache_size": 50},
        "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "some", "type": "probabilistic", "probabilistic": {"sampling_percentage": 20}},
            {"name": "limit", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 500}},
            {"name": "no-health", "type": "drop", "drop": {"drop_sub_policy": [
                {"name": "h", "type": "string_attribute", "string_attribute": {"key": "url.path", "values": ["/health"]}}]}}
        ]
    }));
    let services = ["gw", "shop", "cart", "db"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0 = Instant::now();
    let (mut spans_in, mut spans_out_n) = (0u64, 0u64);
    let check = |s: &TailSampler, spans_in: u64, spans_out_n: u64| {
        let dropped = dropped(&r, "sampled_out") + dropped(&r, "shutdown");
        assert_eq!(spans_in, spans_out_n + dropped + s.pending().spans as u64);
    };
    for step in 0..2000u64 {
        let now = t0 + MS(step * 10);
        let n = 1 + rng.below(12) as usize;
        let spans: Vec<Span> = (0..n)
            .map(|_| {
                // Traces live for a while: ids drift forward with time.
                let trace = (step / 5 + rng.below(40)) as u32;
                let mut x = sp(trace, "op", if rng.below(8) == 0 { None } else { Some(1) });
                if rng.below(50) == 0 {
                    x = failed(x);
                }
                if rng.below(30) == 0 {
                    x.attributes.push(kv_str("url.path", "/health"));
                }
                x
            })
            .collect();
        spans_in += n as u64;
        let svc = services[rng.below(4) as usize];
        spans_out_n += spans_out(&run_at(&mut s, req(svc, spans), now)).len() as u64;
        check(&s, spans_in, spans_out_n);
        if rng.below(3) == 0 {
            spans_out_n += spans_out(&tick(&mut s, now)).len() as u64;
            check(&s, spans_in, spans_out_n);
        }
        assert!(s.pending().traces <= 300);
        assert!(s.pending().bytes <= 2 << 20);
    }
    let mut out = Vec::new();
    s.flush_at(t0 + S(100), &mut out);
    spans_out_n += spans_out(&out).len() as u64;
    check(&s, spans_in, spans_out_n);
    assert_eq!(s.pending(), PendingStats::default(), "no bytes left behind");
    assert!(
        late(&r, "sampled") + late(&r, "not_sampled") > 0,
        "the workload had late spans"
    );
    assert!(decided(&r, "sampled", "root") > 0);
    assert!(spans_out_n > 0 && dropped(&r, "sampled_out") > 0);
}

#[test]
fn metrics_are_on_the_registry() {
    let (mut s, r) = sampler(json!({"decision_wait": "1s", "policies": errors_policy()}));
    let t0 = Instant::now();
    run_at(&mut s, req("a", vec![failed(sp(1, "e", Some(1)))]), t0);
    let text = r.render();
    assert!(text.contains(
        "meshgate_processor_tail_sampling_traces_pending{processor=\"tail_sampling\",pipeline=\"traces\"} 1"
    ), "{text}");
    assert!(text.contains(
        "meshgate_processor_tail_sampling_spans_pending{processor=\"tail_sampling\",pipeline=\"traces\"} 1"
    ));
    assert!(text.contains("# TYPE meshgate_processor_tail_sampling_memory_bytes gauge"));
    tick(&mut s, t0 + S(1));
    let text = r.render();
    assert!(text.contains(
        "meshgate_processor_tail_sampling_policy_decisions_total{processor=\"tail_sampling\",pipeline=\"traces\",policy=\"errors\",decision=\"sampled\"} 1"
    ), "{text}");
    assert!(text.contains(
        "meshgate_processor_tail_sampling_policy_decisions_total{processor=\"tail_sampling\",pipeline=\"traces\",policy=\"errors\",decision=\"dropped\"} 0"
    ));
    assert!(text.contains("meshgate_processor_tail_sampling_evicted_traces_total{processor=\"tail_sampling\",pipeline=\"traces\",reason=\"max_memory\"} 0"));
    assert!(
        text.contains("meshgate_processor_tail_sampling_late_spans_total{processor=\"tail_sampling\",pipeline=\"traces\",decision=\"not_sampled\"")
    );
    assert!(text.contains(
        "meshgate_processor_tail_sampling_traces_pending{processor=\"tail_sampling\",pipeline=\"traces\"} 0"
    ));
}

#[test]
fn factory_builds_checks_and_names_config_errors() {
    let f = TailSamplingFactory;
    let r = Registry::new();
    let good = json!({"policies": [{"name": "all", "type": "always_sample"}]});
    f.check(&good).unwrap();
    let mut p = build(&f, "tail_sampling", good, Signal::Traces, &r).unwrap();
    let mut out = Vec::new();
    p.process(req("a", vec![sp(1, "x", None)]), &mut out);
    assert!(out.is_empty());
    assert!(p.deadline().is_some());
    p.flush(&mut out);
    assert_eq!(spans_out(&out).len(), 1);

    let e = build_err(&f, json!({}), Signal::Traces);
    assert!(
        e.starts_with("p: `policies` needs at least one policy"),
        "{e}"
    );
    let bad = json!({"policies": [{"name": "s", "type": "string_attribute",
        "string_attribute": {"key": "k", "values": ["("], "enabled_regex_matching": true}}]});
    let e = build_err(&f, bad.clone(), Signal::Traces);
    assert!(
        e.starts_with("p: policies[0].string_attribute.values[0]: invalid regex"),
        "{e}"
    );
    assert!(
        f.check(&bad)
            .unwrap_err()
            .starts_with("policies[0].string_attribute.values[0]")
    );
    let e = build_err(
        &f,
        json!({"decision_wait": "0s", "policies": [{"name": "a", "type": "always_sample"}]}),
        Signal::Traces,
    );
    assert_eq!(e, "p: `decision_wait` must be greater than 0s");
    let e = build_err(
        &f,
        json!({"policies": [{"name": "a", "type": "bytes_limiting"}]}),
        Signal::Traces,
    );
    assert!(
        e.contains("policies[0].type: policy type `bytes_limiting` is not supported"),
        "{e}"
    );
    // Every top-level option is described in the schema.
    let schema = f.schema();
    let props = schema.as_value()["properties"].as_object().unwrap().clone();
    for key in [
        "decision_wait",
        "decision_wait_after_root",
        "num_traces",
        "expected_new_traces_per_sec",
        "max_memory",
        "decision_cache",
        "sample_on_first_match",
        "drop_pending_traces_on_shutdown",
        "policies",
    ] {
        assert!(props[key].get("description").is_some(), "{key}");
    }
}

#[test]
fn other_signals_pass_through() {
    let (mut s, _r) = sampler(json!({"policies": [{"name": "all", "type": "always_sample"}]}));
    let logs = crate::testutil::logs(&[], vec![crate::testutil::log(9, &[])]);
    let out = run_at(&mut s, logs, Instant::now());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].signal(), Signal::Logs);
}
