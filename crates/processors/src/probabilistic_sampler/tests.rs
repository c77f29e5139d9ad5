//! Tests of the `probabilistic_sampler` processor: config, decisions on spans and log
//! records, trace state edits, error handling, self-metrics and the kept fraction.

use super::threshold::hash_seed_threshold;
use super::*;
use crate::testutil::{all_logs, all_spans, build, build_err, logs, run, traces};
use meshgate_pdata::attributes::{get_str, kv, kv_str};
use serde_json::json;

const ID: &str = "probabilistic_sampler";

/// A valid trace id whose low 56 bits (its randomness) are `r`.
fn id_r(r: u64) -> Vec<u8> {
    assert!(r < 1 << 56);
    let mut id = vec![0xab; 16];
    id[8..].copy_from_slice(&r.to_be_bytes());
    id
}

fn span_with(trace_id: Vec<u8>, trace_state: &str, name: &str) -> Span {
    Span {
        name: name.to_string(),
        trace_id,
        span_id: vec![1; 8],
        trace_state: trace_state.to_string(),
        ..Default::default()
    }
}

fn log_with(trace_id: Vec<u8>, attrs: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        trace_id,
        attributes: attrs,
        ..Default::default()
    }
}

fn sampler(cfg: serde_json::Value, signal: Signal) -> (Box<dyn Processor>, Registry) {
    let r = Registry::new();
    let p = build(&ProbabilisticSamplerFactory, ID, cfg, signal, &r).unwrap();
    (p, r)
}

fn config(cfg: serde_json::Value) -> ProbabilisticSamplerConfig {
    serde_json::from_value(cfg).unwrap()
}

/// The spans that came out, in order.
fn kept_spans(p: &mut dyn Processor, spans: Vec<Span>) -> Vec<Span> {
    run(p, traces(&[("service.name", "svc")], spans))
        .iter()
        .flat_map(all_spans)
        .cloned()
        .collect()
}

/// The log records that came out, in order.
fn kept_logs(p: &mut dyn Processor, records: Vec<LogRecord>) -> Vec<LogRecord> {
    run(p, logs(&[("service.name", "svc")], records))
        .iter()
        .flat_map(all_logs)
        .cloned()
        .collect()
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

fn states(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.trace_state.as_str()).collect()
}

/// A counter of this processor, with one extra label or none.
fn metric(r: &Registry, signal: Signal, name: &'static str, extra: Option<(&str, &str)>) -> u64 {
    let mut labels = vec![
        ("processor", ID),
        ("pipeline", signal.as_str()),
        ("signal", signal.as_str()),
    ];
    labels.extend(extra);
    r.counter(name, "", &labels).get()
}

/// `(kept, sampled_out, sampling_error)` of a processor.
fn outcomes(r: &Registry, signal: Signal) -> (u64, u64, u64) {
    let dropped = "meshgate_processor_dropped_items_total";
    (
        metric(
            r,
            signal,
            "meshgate_processor_sampler_kept_items_total",
            None,
        ),
        metric(r, signal, dropped, Some(("reason", "sampled_out"))),
        metric(r, signal, dropped, Some(("reason", "sampling_error"))),
    )
}

fn errors(r: &Registry, signal: Signal, error: &str) -> u64 {
    metric(
        r,
        signal,
        "meshgate_processor_sampler_errors_total",
        Some(("error", error)),
    )
}

/// `n` pseudo-random valid trace ids (splitmix64, fixed seed: reproducible).
fn random_ids(n: usize, seed: u64) -> Vec<[u8; 16]> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&next().to_le_bytes());
            id[8..].copy_from_slice(&next().to_le_bytes());
            id
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Config

#[test]
fn defaults() {
    let c = config(json!({"sampling_percentage": 10}));
    assert_eq!(c.sampling_percentage, 10.0);
    assert_eq!(c.hash_seed, 0);
    assert_eq!(c.mode, None);
    assert!(c.fail_closed);
    assert_eq!(c.sampling_precision, 4);
    assert_eq!(c.attribute_source, AttributeSource::TraceId);
    assert_eq!(c.from_attribute, "");
    assert_eq!(c.sampling_priority, "");
    assert_eq!(
        ProbabilisticSamplerFactory.signals(),
        [Signal::Traces, Signal::Logs]
    );
}

#[test]
fn mode_resolution_follows_the_collector() {
    let mode = |cfg: serde_json::Value, signal| config(cfg).effective_mode(signal);
    use SamplerMode::*;
    assert_eq!(
        mode(json!({"sampling_percentage": 1}), Signal::Traces),
        Proportional
    );
    assert_eq!(
        mode(json!({"sampling_percentage": 1}), Signal::Logs),
        Proportional
    );
    assert_eq!(
        mode(
            json!({"sampling_percentage": 1, "hash_seed": 9}),
            Signal::Traces
        ),
        HashSeed
    );
    let record =
        json!({"sampling_percentage": 1, "attribute_source": "record", "from_attribute": "a"});
    assert_eq!(mode(record.clone(), Signal::Logs), HashSeed);
    assert_eq!(mode(record, Signal::Traces), Proportional);
    assert_eq!(
        mode(
            json!({"sampling_percentage": 1, "hash_seed": 9, "mode": "equalizing"}),
            Signal::Traces
        ),
        Equalizing
    );
}

#[test]
fn config_errors() {
    let cases = [
        (json!({}), "missing field `sampling_percentage`"),
        (
            json!({"sampling_percentage": -1}),
            "p: `sampling_percentage` must be a number from 0 to 100 (above 100 keeps everything), got -1",
        ),
        (
            json!({"sampling_percentage": 1e-16}),
            "is below the smallest probability a sampling threshold can express",
        ),
        (
            json!({"sampling_percentage": 10, "sampling_precision": 0}),
            "p: `sampling_precision` must be from 1 to 14 hexadecimal digits, got 0",
        ),
        (
            json!({"sampling_percentage": 10, "sampling_precision": 15}),
            "got 15",
        ),
        (
            json!({"sampling_percentage": 10, "attribute_source": "record"}),
            "p: `attribute_source: record` needs `from_attribute`",
        ),
        (
            json!({"sampling_percentage": 0.001, "hash_seed": 3}),
            "below the resolution of `hash_seed` mode",
        ),
        (
            json!({"sampling_percentage": 0.001, "mode": "hash_seed"}),
            "below the resolution of `hash_seed` mode",
        ),
        (
            json!({"sampling_percentage": 10, "mode": "random"}),
            "unknown variant `random`",
        ),
        (
            json!({"sampling_percentage": 10, "attribute_source": "traceid"}),
            "unknown variant `traceid`",
        ),
        (
            json!({"sampling_percentage": 10, "hash_seed": -1}),
            "invalid value",
        ),
        (
            json!({"sampling_percentage": 10, "sampling_rate": 3}),
            "unknown field `sampling_rate`",
        ),
    ];
    for (cfg, want) in cases {
        let e = build_err(&ProbabilisticSamplerFactory, cfg.clone(), Signal::Traces);
        assert!(e.contains(want), "{cfg}: {e}");
        // `meshgate validate` refuses the same configs.
        assert!(ProbabilisticSamplerFactory.check(&cfg).is_err(), "{cfg}");
    }
    // Tiny but expressible percentages are fine outside hash_seed mode; above 100 means 100.
    for ok in [
        json!({"sampling_percentage": 0.001}),
        json!({"sampling_percentage": 250}),
        json!({"sampling_percentage": 0, "hash_seed": 3}),
    ] {
        assert_eq!(ProbabilisticSamplerFactory.check(&ok), Ok(()), "{ok}");
        build(
            &ProbabilisticSamplerFactory,
            ID,
            ok,
            Signal::Logs,
            &Registry::new(),
        )
        .unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Proportional mode and the trace state

#[test]
fn proportional_keeps_by_trace_id_randomness_and_records_th() {
    let (mut p, r) = sampler(json!({"sampling_percentage": 25}), Signal::Traces);
    let out = kept_spans(
        p.as_mut(),
        vec![
            span_with(id_r(0xc0_0000_0000_0000), "", "at-threshold"),
            span_with(id_r(0xbf_ffff_ffff_ffff), "", "just-below"),
            span_with(id_r(0xff_ffff_ffff_ffff), "", "top"),
            span_with(id_r(0), "", "zero"),
        ],
    );
    assert_eq!(names(&out), ["at-threshold", "top"]);
    assert_eq!(states(&out), ["ot=th:c", "ot=th:c"]);
    assert_eq!(outcomes(&r, Signal::Traces), (2, 2, 0));
}

#[test]
fn threshold_encoding_follows_sampling_precision() {
    for (cfg, want) in [
        (json!({"sampling_percentage": 10}), "ot=th:e666"),
        (
            json!({"sampling_percentage": 10, "sampling_precision": 2}),
            "ot=th:e6",
        ),
        (
            json!({"sampling_percentage": 10, "sampling_precision": 14}),
            "ot=th:e6666666666666",
        ),
        (json!({"sampling_percentage": 1}), "ot=th:fd70a"),
        (json!({"sampling_percentage": 100}), "ot=th:0"),
        (json!({"sampling_percentage": 400}), "ot=th:0"),
    ] {
        let (mut p, _) = sampler(cfg.clone(), Signal::Traces);
        let out = kept_spans(
            p.as_mut(),
            vec![span_with(id_r(0xff_0000_0000_0000), "", "s")],
        );
        assert_eq!(states(&out), [want], "{cfg}");
    }
}

#[test]
fn explicit_rv_is_the_randomness_and_is_kept() {
    let (mut p, _) = sampler(json!({"sampling_percentage": 50}), Signal::Traces);
    let out = kept_spans(
        p.as_mut(),
        vec![
            // The trace id alone would be dropped, its rv keeps it.
            span_with(id_r(0), "ot=rv:9b8233f7e3a151", "low-id-high-rv"),
            // The trace id alone would be kept, its rv drops it.
            span_with(
                id_r(0xff_ffff_ffff_ffff),
                "ot=rv:00000000000001",
                "high-id-low-rv",
            ),
            // The example of the collector's documentation: 100% upstream, then 50%.
            span_with(id_r(0), "ot=th:0;rv:9b8233f7e3a151", "example"),
            // No usable trace id, but randomness anyway.
            span_with(vec![0; 16], "ot=rv:f0000000000000", "zero-id"),
        ],
    );
    assert_eq!(names(&out), ["low-id-high-rv", "example", "zero-id"]);
    assert_eq!(
        states(&out),
        [
            "ot=th:8;rv:9b8233f7e3a151",
            "ot=th:8;rv:9b8233f7e3a151",
            "ot=th:8;rv:f0000000000000"
        ]
    );
}

#[test]
fn proportional_multiplies_an_existing_threshold_and_never_lowers_it() {
    let (mut p, _) = sampler(json!({"sampling_percentage": 50}), Signal::Traces);
    let out = kept_spans(
        p.as_mut(),
        vec![
            // 50% upstream × 50% here = 25% (th:c).
            span_with(id_r(0xd0_0000_0000_0000), "ot=th:8", "kept-at-25"),
            span_with(id_r(0x90_0000_0000_0000), "ot=th:8", "dropped-at-25"),
            // 25% upstream × 50% = 12.5% (th:e).
            span_with(id_r(0xf0_0000_0000_0000), "ot=th:c", "kept-at-12.5"),
            span_with(id_r(0xd0_0000_0000_0000), "ot=th:c", "dropped-at-12.5"),
        ],
    );
    assert_eq!(names(&out), ["kept-at-25", "kept-at-12.5"]);
    assert_eq!(states(&out), ["ot=th:c", "ot=th:e"]);

    // At 100% the product rounded to 4 digits (5555) would be below the arriving
    // full-precision threshold: the arriving one stays.
    let (mut p, _) = sampler(json!({"sampling_percentage": 100}), Signal::Traces);
    let out = kept_spans(
        p.as_mut(),
        vec![span_with(
            id_r(0x60_0000_0000_0000),
            "ot=th:55555555555555",
            "s",
        )],
    );
    assert_eq!(states(&out), ["ot=th:55555555555555"]);
}

#[test]
fn equalizing_raises_thresholds_to_its_own_and_decides_whole_traces() {
    let (mut p, _) = sampler(
        json!({"sampling_percentage": 25, "mode": "equalizing"}),
        Signal::Traces,
    );
    // Spans of one trace (same randomness) arriving with different thresholds: all kept,
    // each recording max(arriving, ours).
    let high = id_r(0xf0_0000_0000_0000);
    let out = kept_spans(
        p.as_mut(),
        vec![
            span_with(high.clone(), "ot=th:e", "sampled-more-upstream"),
            span_with(high.clone(), "ot=th:8", "sampled-less-upstream"),
            span_with(high.clone(), "ot=th:0", "unsampled-upstream"),
            span_with(high, "", "no-threshold"),
        ],
    );
    assert_eq!(names(&out).len(), 4);
    assert_eq!(states(&out), ["ot=th:e", "ot=th:c", "ot=th:c", "ot=th:c"]);
    // A trace below our threshold is dropped whole, whatever its spans carry.
    let low = id_r(0x90_0000_0000_0000);
    let out = kept_spans(
        p.as_mut(),
        vec![
            span_with(low.clone(), "ot=th:8", "a"),
            span_with(low.clone(), "ot=th:0", "b"),
            span_with(low, "", "c"),
        ],
    );
    assert!(out.is_empty());
}

#[test]
fn other_vendors_and_ot_sub_keys_are_preserved() {
    let (mut p, _) = sampler(json!({"sampling_percentage": 25}), Signal::Traces);
    let out = kept_spans(
        p.as_mut(),
        vec![
            span_with(
                id_r(0xff_0000_0000_0000),
                "congo=t61rcWkgMzE,ot=p:8;th:0;k1:13, rojo=00f067aa0ba902b7",
                "a",
            ),
            span_with(id_r(0xff_0000_0000_0000), "vendor@tenant=x", "b"),
        ],
    );
    assert_eq!(
        states(&out),
        [
            "ot=th:c;p:8;k1:13,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
            "ot=th:c,vendor@tenant=x"
        ]
    );
}

#[test]
fn emptied_requests_resources_and_scopes_are_removed() {
    let (mut p, r) = sampler(json!({"sampling_percentage": 1}), Signal::Traces);
    let out = run(
        p.as_mut(),
        traces(
            &[],
            vec![span_with(id_r(5), "x=y", "a"), span_with(id_r(6), "", "b")],
        ),
    );
    assert!(out.is_empty());
    assert_eq!(outcomes(&r, Signal::Traces), (0, 2, 0));
    // Emptied resources and scopes are removed from a request that keeps something.
    let Payload::Traces(mut t) = traces(&[("k", "1")], vec![span_with(id_r(5), "", "gone")]) else {
        unreachable!()
    };
    let Payload::Traces(kept) = traces(
        &[("k", "2")],
        vec![span_with(id_r(0xff_0000_0000_0000), "", "kept")],
    ) else {
        unreachable!()
    };
    t.resource_spans.extend(kept.resource_spans);
    let out = run(p.as_mut(), Payload::Traces(t));
    let Payload::Traces(t) = &out[0] else {
        unreachable!()
    };
    assert_eq!(t.resource_spans.len(), 1);
    assert_eq!(names(&kept_spans(p.as_mut(), vec![])), Vec::<&str>::new());
}

// ---------------------------------------------------------------------------------------
// Errors and fail_closed

#[test]
fn malformed_tracestate_follows_fail_closed() {
    let spans = || {
        vec![
            span_with(id_r(0xff_0000_0000_0000), "ot=th:xyz", "bad-th"),
            span_with(id_r(0xff_0000_0000_0000), "not a member", "bad-list"),
            span_with(id_r(0xff_0000_0000_0000), "x=y", "fine"),
        ]
    };
    let (mut p, r) = sampler(json!({"sampling_percentage": 50}), Signal::Traces);
    let out = kept_spans(p.as_mut(), spans());
    assert_eq!(names(&out), ["fine"]);
    assert_eq!(outcomes(&r, Signal::Traces), (1, 0, 2));
    assert_eq!(errors(&r, Signal::Traces, "malformed"), 2);

    let (mut p, r) = sampler(
        json!({"sampling_percentage": 50, "fail_closed": false}),
        Signal::Traces,
    );
    let out = kept_spans(p.as_mut(), spans());
    assert_eq!(names(&out), ["bad-th", "bad-list", "fine"]);
    // Passed on as they came; only the healthy one records a threshold.
    assert_eq!(states(&out), ["ot=th:xyz", "not a member", "ot=th:8,x=y"]);
    assert_eq!(outcomes(&r, Signal::Traces), (3, 0, 0));
    assert_eq!(errors(&r, Signal::Traces, "malformed"), 2);
}

#[test]
fn missing_randomness_follows_fail_closed() {
    for cfg in [
        json!({"sampling_percentage": 50}),
        json!({"sampling_percentage": 50, "hash_seed": 4}),
    ] {
        let spans = || {
            vec![
                span_with(vec![0; 16], "", "zero-id"),
                span_with(vec![], "", "no-id"),
            ]
        };
        let (mut p, r) = sampler(cfg.clone(), Signal::Traces);
        assert!(kept_spans(p.as_mut(), spans()).is_empty());
        assert_eq!(outcomes(&r, Signal::Traces), (0, 0, 2), "{cfg}");
        assert_eq!(errors(&r, Signal::Traces, "missing_randomness"), 2);

        let mut open = cfg.clone();
        open["fail_closed"] = json!(false);
        let (mut p, r) = sampler(open, Signal::Traces);
        let out = kept_spans(p.as_mut(), spans());
        assert_eq!(states(&out), ["", ""], "{cfg}");
        assert_eq!(outcomes(&r, Signal::Traces), (2, 0, 0));
        assert_eq!(errors(&r, Signal::Traces, "missing_randomness"), 2);
    }
}

#[test]
fn inconsistent_arriving_threshold_is_dropped_or_erased() {
    // th:c claims R >= 0xc0..., but the trace id says 0x10...
    let span = || vec![span_with(id_r(0x10_0000_0000_0000), "ot=th:c;p:8,x=y", "s")];
    let (mut p, r) = sampler(json!({"sampling_percentage": 100}), Signal::Traces);
    assert!(kept_spans(p.as_mut(), span()).is_empty());
    assert_eq!(outcomes(&r, Signal::Traces), (0, 0, 1));
    assert_eq!(errors(&r, Signal::Traces, "inconsistent_threshold"), 1);

    let (mut p, r) = sampler(
        json!({"sampling_percentage": 100, "fail_closed": false}),
        Signal::Traces,
    );
    assert_eq!(states(&kept_spans(p.as_mut(), span())), ["ot=p:8,x=y"]);
    assert_eq!(errors(&r, Signal::Traces, "inconsistent_threshold"), 1);
}

// ---------------------------------------------------------------------------------------
// hash_seed mode

#[test]
fn hash_seed_records_threshold_and_hash_randomness() {
    let (mut p, r) = sampler(
        json!({"sampling_percentage": 30, "hash_seed": 22}),
        Signal::Traces,
    );
    let ids = random_ids(400, 1);
    let spans = ids
        .iter()
        .map(|id| span_with(id.to_vec(), "x=y", "s"))
        .collect();
    let out = kept_spans(p.as_mut(), spans);
    let t = hash_seed_threshold(30.0).unwrap();
    let mut want = Vec::new();
    for id in &ids {
        let rv = Randomness::from_hash(id, 22);
        if t.keeps(rv) {
            want.push(format!("ot=th:{};rv:{},x=y", t.encode(), rv.encode()));
        }
    }
    assert!(!want.is_empty() && want.len() < ids.len());
    assert_eq!(states(&out), want);
    let dropped = (ids.len() - want.len()) as u64;
    assert_eq!(
        outcomes(&r, Signal::Traces),
        (want.len() as u64, dropped, 0)
    );
}

#[test]
fn hash_seed_refuses_spans_carrying_consistent_sampling_information() {
    let spans = || {
        vec![
            span_with(id_r(0xff_0000_0000_0000), "ot=th:0", "th"),
            span_with(id_r(0xff_0000_0000_0000), "ot=rv:9b8233f7e3a151", "rv"),
            span_with(id_r(0xff_0000_0000_0000), "ot=p:8", "other"),
        ]
    };
    let (mut p, r) = sampler(
        json!({"sampling_percentage": 100, "hash_seed": 1}),
        Signal::Traces,
    );
    let out = kept_spans(p.as_mut(), spans());
    assert_eq!(names(&out), ["other"]);
    assert_eq!(errors(&r, Signal::Traces, "hash_seed_conflict"), 2);
    assert_eq!(outcomes(&r, Signal::Traces), (1, 0, 2));

    let (mut p, _) = sampler(
        json!({"sampling_percentage": 100, "hash_seed": 1, "fail_closed": false}),
        Signal::Traces,
    );
    let out = kept_spans(p.as_mut(), spans());
    assert_eq!(&states(&out)[..2], ["ot=th:0", "ot=rv:9b8233f7e3a151"]);
}

#[test]
fn two_instances_keep_the_same_whole_traces() {
    let ids = random_ids(600, 7);
    let kept_ids = |spans: &[Span]| {
        let mut v: Vec<(Vec<u8>, String, String)> = spans
            .iter()
            .map(|s| (s.trace_id.clone(), s.name.clone(), s.trace_state.clone()))
            .collect();
        v.sort();
        v
    };
    let mut decisions = Vec::new();
    for cfg in [
        json!({"sampling_percentage": 30, "hash_seed": 22}),
        json!({"sampling_percentage": 30, "hash_seed": 23}),
        json!({"sampling_percentage": 30}),
        json!({"sampling_percentage": 30, "mode": "equalizing"}),
    ] {
        // Instance A gets every trace's three spans in one request; instance B gets them
        // spread over three requests, in another order.
        let spans: Vec<Span> = ids
            .iter()
            .flat_map(|id| (0..3).map(move |i| span_with(id.to_vec(), "", &format!("s{i}"))))
            .collect();
        let (mut a, _) = sampler(cfg.clone(), Signal::Traces);
        let (mut b, _) = sampler(cfg.clone(), Signal::Traces);
        let from_a = kept_ids(&kept_spans(a.as_mut(), spans.clone()));
        let mut from_b = Vec::new();
        for part in 0..3 {
            let name = format!("s{part}");
            let mut chunk: Vec<Span> = spans.iter().filter(|s| s.name == name).cloned().collect();
            chunk.reverse();
            from_b.extend(kept_spans(b.as_mut(), chunk));
        }
        let from_b = kept_ids(&from_b);
        assert_eq!(from_a, from_b, "{cfg}");
        // Whole traces: every kept trace has its three spans.
        let mut per_trace = std::collections::BTreeMap::new();
        for (id, _, _) in &from_a {
            *per_trace.entry(id.clone()).or_insert(0) += 1;
        }
        assert!(per_trace.values().all(|n| *n == 3), "{cfg}");
        let share = per_trace.len() as f64 / ids.len() as f64;
        assert!((0.2..0.4).contains(&share), "{cfg}: {share}");
        decisions.push(per_trace.into_keys().collect::<Vec<_>>());
    }
    // Another seed keeps other traces.
    assert_ne!(decisions[0], decisions[1]);
    // Both consistent modes read the same randomness: same traces.
    assert_eq!(decisions[2], decisions[3]);
}

#[test]
fn kept_fraction_matches_the_setting_over_200k_traces() {
    const N: usize = 200_000;
    let ids = random_ids(N, 42);
    let empty = TraceState::default();
    for mode in [
        SamplerMode::Proportional,
        SamplerMode::Equalizing,
        SamplerMode::HashSeed,
    ] {
        for pct in [1.0f32, 10.0, 25.0, 33.3, 50.0, 90.0] {
            let cfg = config(json!({"sampling_percentage": pct, "hash_seed": 22}));
            let s = Sampler::new(&cfg, mode).unwrap();
            let kept = ids
                .iter()
                .filter(|id| {
                    let facts = Ok(s.span_facts(&id[..], &empty));
                    matches!(s.decide(facts, Priority::Defer).0, Verdict::Record { .. })
                })
                .count();
            let frac = kept as f64 / N as f64;
            let setting = f64::from(pct) / 100.0;
            // The criterion: within 1 percentage point of the setting ...
            assert!(
                (frac - setting).abs() <= 0.01,
                "{mode:?} {pct}%: kept {frac}"
            );
            // ... and, tighter, within 5 standard deviations of the exact probability of
            // the threshold in use (rounded to 4 hex digits, or to 14 bits for hash_seed).
            let exact = s.rule_threshold(None).probability();
            let sigma = (exact * (1.0 - exact) / N as f64).sqrt();
            assert!(
                (frac - exact).abs() <= 5.0 * sigma,
                "{mode:?} {pct}%: kept {frac}, expected {exact} ± {}",
                5.0 * sigma
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Priority

#[test]
fn span_sampling_priority_overrides_the_decision() {
    let prio = |v: Value| {
        let mut s = span_with(id_r(0x10), "", "s");
        s.attributes.push(kv(SPAN_PRIORITY_ATTRIBUTE, v));
        s
    };
    let (mut p, r) = sampler(json!({"sampling_percentage": 0}), Signal::Traces);
    let out = kept_spans(
        p.as_mut(),
        vec![
            prio(Value::IntValue(1)),
            prio(Value::DoubleValue(2.5)),
            prio(Value::StringValue("1".into())),
            prio(Value::IntValue(-1)),
            span_with(id_r(0x10), "", "plain"),
        ],
    );
    assert_eq!(out.len(), 3);
    // A forced keep records probability 1 for a span that had no threshold.
    assert_eq!(states(&out), ["ot=th:0", "ot=th:0", "ot=th:0"]);
    assert_eq!(outcomes(&r, Signal::Traces), (3, 2, 0));

    let (mut p, _) = sampler(json!({"sampling_percentage": 100}), Signal::Traces);
    let mut forced = prio(Value::IntValue(1));
    forced.trace_state = "ot=th:zz".into();
    let out = kept_spans(
        p.as_mut(),
        vec![
            prio(Value::IntValue(0)),
            prio(Value::StringValue("0".into())),
            forced,
        ],
    );
    // Priority 0 drops at 100%; a forced keep survives even a malformed tracestate.
    assert_eq!(states(&out), ["ot=th:zz"]);
}

// ---------------------------------------------------------------------------------------
// Logs

#[test]
fn logs_follow_their_trace_id_like_spans() {
    let cfg = json!({"sampling_percentage": 25});
    let (mut lp, r) = sampler(cfg.clone(), Signal::Logs);
    let (mut tp, _) = sampler(cfg, Signal::Traces);
    let ids = random_ids(300, 3);
    let records = ids
        .iter()
        .map(|id| log_with(id.to_vec(), vec![kv_str("msg", "x")]))
        .collect();
    let kept_records = kept_logs(lp.as_mut(), records);
    let spans = ids
        .iter()
        .map(|id| span_with(id.to_vec(), "", "s"))
        .collect();
    let kept_traces = kept_spans(tp.as_mut(), spans);
    let log_ids: Vec<&Vec<u8>> = kept_records.iter().map(|l| &l.trace_id).collect();
    let span_ids: Vec<&Vec<u8>> = kept_traces.iter().map(|s| &s.trace_id).collect();
    assert_eq!(log_ids, span_ids);
    assert!(!log_ids.is_empty());
    for l in &kept_records {
        assert_eq!(get_str(&l.attributes, LOG_THRESHOLD_ATTRIBUTE), Some("c"));
        assert_eq!(get_str(&l.attributes, LOG_RANDOMNESS_ATTRIBUTE), None);
        assert_eq!(get_str(&l.attributes, "msg"), Some("x"));
    }
    let (kept, out, failed) = outcomes(&r, Signal::Logs);
    assert_eq!((kept as usize, out + kept, failed), (log_ids.len(), 300, 0));
}

#[test]
fn logs_without_trace_id_use_the_hashed_attribute() {
    let (mut p, _) = sampler(
        json!({"sampling_percentage": 50, "from_attribute": "request.id", "hash_seed": 0}),
        Signal::Logs,
    );
    let values: Vec<String> = (0..200).map(|i| format!("req-{i}")).collect();
    let records = values
        .iter()
        .map(|v| log_with(vec![], vec![kv_str("request.id", v)]))
        .collect();
    let out = kept_logs(p.as_mut(), records);
    // Proportional mode (no seed set): threshold 8, randomness from the seeded hash.
    let half = Threshold::parse("8").unwrap();
    let want: Vec<&String> = values
        .iter()
        .filter(|v| half.keeps(Randomness::from_hash(v.as_bytes(), 0)))
        .collect();
    let got: Vec<&str> = out
        .iter()
        .map(|l| get_str(&l.attributes, "request.id").unwrap())
        .collect();
    assert_eq!(got, want);
    for l in &out {
        let v = get_str(&l.attributes, "request.id").unwrap();
        let rv = Randomness::from_hash(v.as_bytes(), 0).encode().to_string();
        assert_eq!(get_str(&l.attributes, LOG_THRESHOLD_ATTRIBUTE), Some("8"));
        assert_eq!(
            get_str(&l.attributes, LOG_RANDOMNESS_ATTRIBUTE),
            Some(rv.as_str())
        );
    }
}

#[test]
fn logs_attribute_source_record_ignores_the_trace_id() {
    let (mut p, _) = sampler(
        json!({"sampling_percentage": 40, "attribute_source": "record", "from_attribute": "pod", "hash_seed": 9}),
        Signal::Logs,
    );
    let t = hash_seed_threshold(40.0).unwrap();
    let pods: Vec<String> = (0..100).map(|i| format!("pod-{i}")).collect();
    let records = pods
        .iter()
        .map(|pod| {
            log_with(
                id_r(0xff_ffff_ffff_ffff),
                vec![
                    kv_str("pod", pod),
                    kv("other", Value::BytesValue(vec![1, 2])),
                ],
            )
        })
        .collect();
    let out = kept_logs(p.as_mut(), records);
    let want: Vec<&String> = pods
        .iter()
        .filter(|pod| t.keeps(Randomness::from_hash(pod.as_bytes(), 9)))
        .collect();
    let got: Vec<&str> = out
        .iter()
        .map(|l| get_str(&l.attributes, "pod").unwrap())
        .collect();
    assert_eq!(got, want);
    assert!(!got.is_empty() && got.len() < pods.len());

    // Bytes values are hashed as bytes.
    let (mut p, _) = sampler(
        json!({"sampling_percentage": 50, "attribute_source": "record", "from_attribute": "b", "hash_seed": 9}),
        Signal::Logs,
    );
    let kept: Vec<u8> = (0u8..64)
        .filter(|i| {
            let rec = log_with(vec![], vec![kv("b", Value::BytesValue(vec![*i]))]);
            !kept_logs(p.as_mut(), vec![rec]).is_empty()
        })
        .collect();
    let t = hash_seed_threshold(50.0).unwrap();
    let want: Vec<u8> = (0u8..64)
        .filter(|i| t.keeps(Randomness::from_hash(&[*i], 9)))
        .collect();
    assert_eq!(kept, want);
}

#[test]
fn logs_without_randomness_follow_fail_closed() {
    let records = || {
        vec![
            log_with(vec![], vec![kv_str("msg", "no id, no attribute")]),
            log_with(vec![0; 16], vec![kv_str("request.id", "")]),
        ]
    };
    let (mut p, r) = sampler(
        json!({"sampling_percentage": 50, "from_attribute": "request.id"}),
        Signal::Logs,
    );
    assert!(kept_logs(p.as_mut(), records()).is_empty());
    assert_eq!(outcomes(&r, Signal::Logs), (0, 0, 2));
    assert_eq!(errors(&r, Signal::Logs, "missing_randomness"), 2);

    let (mut p, r) = sampler(
        json!({"sampling_percentage": 50, "from_attribute": "request.id", "fail_closed": false}),
        Signal::Logs,
    );
    let out = kept_logs(p.as_mut(), records());
    assert_eq!(out, records());
    assert_eq!(outcomes(&r, Signal::Logs), (2, 0, 0));
}

#[test]
fn logs_sampling_attributes_are_read_and_respected() {
    let (mut p, r) = sampler(
        json!({"sampling_percentage": 25, "mode": "equalizing"}),
        Signal::Logs,
    );
    let high = id_r(0xf8_0000_0000_0000);
    let out = kept_logs(
        p.as_mut(),
        vec![
            // Sampled more upstream (12.5%): kept, threshold not lowered.
            log_with(high.clone(), vec![kv_str(LOG_THRESHOLD_ATTRIBUTE, "e")]),
            // Explicit randomness replaces the (missing) trace id.
            log_with(
                vec![],
                vec![kv_str(LOG_RANDOMNESS_ATTRIBUTE, "ff000000000000")],
            ),
            // Malformed values.
            log_with(high.clone(), vec![kv_str(LOG_THRESHOLD_ATTRIBUTE, "xyz")]),
            log_with(high, vec![kv(LOG_RANDOMNESS_ATTRIBUTE, Value::IntValue(5))]),
        ],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(
        get_str(&out[0].attributes, LOG_THRESHOLD_ATTRIBUTE),
        Some("e")
    );
    assert_eq!(
        get_str(&out[1].attributes, LOG_THRESHOLD_ATTRIBUTE),
        Some("c")
    );
    assert_eq!(
        get_str(&out[1].attributes, LOG_RANDOMNESS_ATTRIBUTE),
        Some("ff000000000000")
    );
    assert_eq!(errors(&r, Signal::Logs, "malformed"), 2);
    assert_eq!(outcomes(&r, Signal::Logs), (2, 0, 2));
}

#[test]
fn logs_sampling_priority_sets_the_record_probability() {
    let prio = |r: u64, v: Value| log_with(id_r(r), vec![kv("prio", v)]);
    let (mut p, _) = sampler(
        json!({"sampling_percentage": 0, "sampling_priority": "prio"}),
        Signal::Logs,
    );
    let out = kept_logs(
        p.as_mut(),
        vec![
            prio(0x10, Value::IntValue(100)),
            prio(0x90_0000_0000_0000, Value::DoubleValue(50.0)),
            prio(0x10, Value::DoubleValue(50.0)),
            prio(0x10, Value::StringValue("nope".into())),
        ],
    );
    // 100 keeps at 0%; 50 gives a record 50% of its own; non-numeric leaves it at 0%.
    let th: Vec<Option<&str>> = out
        .iter()
        .map(|l| get_str(&l.attributes, LOG_THRESHOLD_ATTRIBUTE))
        .collect();
    assert_eq!(th, [Some("0"), Some("8")]);

    let (mut p, _) = sampler(
        json!({"sampling_percentage": 1, "sampling_priority": "prio"}),
        Signal::Logs,
    );
    let out = kept_logs(
        p.as_mut(),
        vec![
            prio(0x90_0000_0000_0000, Value::DoubleValue(50.0)),
            prio(0x10_0000_0000_0000, Value::IntValue(50)),
            prio(0xff_ffff_ffff_ffff, Value::IntValue(0)),
            prio(0xff_ffff_ffff_ffff, Value::IntValue(-3)),
        ],
    );
    // 50% for the first two (only the first passes), 0 drops even the top randomness,
    // a negative priority is ignored (1%: the top randomness passes).
    assert_eq!(out.len(), 2);
    assert_eq!(
        get_str(&out[0].attributes, LOG_THRESHOLD_ATTRIBUTE),
        Some("8")
    );
    assert_eq!(
        get_str(&out[1].attributes, LOG_THRESHOLD_ATTRIBUTE),
        Some("fd70a")
    );
}

#[test]
fn metrics_payloads_pass_through() {
    // Never wired (the factory declares traces and logs), but never lost either.
    let (mut p, _) = sampler(json!({"sampling_percentage": 0}), Signal::Traces);
    let m = crate::testutil::metrics(&[], vec![crate::testutil::gauge("g", &[&[]])]);
    assert_eq!(run(p.as_mut(), m.clone()), vec![m]);
}
