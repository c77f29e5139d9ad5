//! End-to-end: the real `meshgate` binary, fed by the real OpenTelemetry Python SDK and by
//! telemetrygen over gRPC and HTTP, writing through the `file` exporter; every item must
//! arrive unchanged and `/metrics` must account for every one of them.

mod common;

use common::*;
use meshgate_pdata::attributes::any_to_json;
use meshgate_pdata::{Payload, Signal};
use std::collections::BTreeMap;
use std::time::Duration;

fn file_pipeline(grpc: u16, http: u16, out: &std::path::Path, signals: &[&str]) -> String {
    let mut cfg = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         processors:\n  batch:\n    timeout: 100ms\n\
         exporters:\n"
    );
    for s in signals {
        cfg.push_str(&format!(
            "  file/{s}:\n    path: {}/{s}.jsonl\n    flush_interval: 100ms\n",
            out.display()
        ));
    }
    cfg.push_str("service:\n  pipelines:\n");
    for s in signals {
        cfg.push_str(&format!(
            "    {s}:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [file/{s}]\n"
        ));
    }
    cfg
}

/// span id (hex) → (trace id, parent id, name, attributes as JSON).
fn spans_by_id(
    payloads: &[Payload],
) -> BTreeMap<String, (String, String, String, serde_json::Value)> {
    let mut out = BTreeMap::new();
    for p in payloads {
        let Payload::Traces(t) = p else {
            panic!("not traces")
        };
        for rs in &t.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let attrs: serde_json::Map<String, serde_json::Value> = s
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                kv.value
                                    .as_ref()
                                    .and_then(|v| v.value.as_ref())
                                    .map(any_to_json)
                                    .unwrap_or_default(),
                            )
                        })
                        .collect();
                    let prev = out.insert(
                        hex(&s.span_id),
                        (
                            hex(&s.trace_id),
                            hex(&s.parent_span_id),
                            s.name.clone(),
                            attrs.into(),
                        ),
                    );
                    assert!(prev.is_none(), "span {} delivered twice", hex(&s.span_id));
                }
            }
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn assert_traces_delivered(
    summary: &serde_json::Value,
    got: &BTreeMap<String, (String, String, String, serde_json::Value)>,
) {
    let spans = summary["spans"].as_array().expect("spans in summary");
    assert!(!spans.is_empty());
    for s in spans {
        let id = s["span_id"].as_str().unwrap();
        let (trace, parent, name, attrs) = got
            .get(id)
            .unwrap_or_else(|| panic!("span {id} ({}) did not arrive", s["name"]));
        assert_eq!(trace, s["trace_id"].as_str().unwrap(), "trace id of {id}");
        assert_eq!(
            parent,
            s["parent_span_id"].as_str().unwrap(),
            "parent of {id}"
        );
        assert_eq!(name, s["name"].as_str().unwrap(), "name of {id}");
        for (k, v) in s["attributes"].as_object().unwrap() {
            assert_eq!(&attrs[k], v, "attribute {k} of span {id}");
        }
    }
}

#[test]
fn python_sdk_traces_over_grpc_and_http_arrive_unchanged_and_counted() {
    let Some(py) = python() else { return };
    let dir = Scratch::new("py-traces");
    let (grpc, http) = (free_port(), free_port());
    let mut gw = Gateway::start(&dir, "gw", &file_pipeline(grpc, http, &dir.0, &["traces"]));
    let a = otel_send(
        &py,
        &[
            "--signal",
            "traces",
            "--protocol",
            "grpc",
            "--endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--count",
            "200",
            "--run-id",
            "grpc",
            "--compression",
            "gzip",
        ],
    );
    let b = otel_send(
        &py,
        &[
            "--signal",
            "traces",
            "--protocol",
            "http",
            "--endpoint",
            &format!("http://127.0.0.1:{http}"),
            "--count",
            "150",
            "--run-id",
            "http",
            "--compression",
            "gzip",
        ],
    );
    let m = gw.wait_metrics(Duration::from_secs(15), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file/traces")],
        ) >= 350.0
    });
    let door = [("receiver", "otlp"), ("signal", "traces")];
    assert_eq!(
        m.sum(
            "meshgate_receiver_received_items_total",
            &[door[0], door[1], ("transport", "grpc")]
        ),
        200.0
    );
    assert_eq!(
        m.sum(
            "meshgate_receiver_received_items_total",
            &[door[0], door[1], ("transport", "http")]
        ),
        150.0
    );
    assert_eq!(
        m.sum("meshgate_receiver_accepted_items_total", &door),
        350.0
    );
    assert_eq!(m.sum("meshgate_receiver_refused_items_total", &door), 0.0);
    assert_eq!(
        m.sum(
            "meshgate_exporter_received_items_total",
            &[("exporter", "file/traces")]
        ),
        350.0
    );
    assert_eq!(
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file/traces")]
        ),
        350.0
    );
    assert_eq!(
        m.sum(
            "meshgate_exporter_dropped_items_total",
            &[("exporter", "file/traces")]
        ),
        0.0
    );
    assert!(gw.stop().success(), "{}", gw.log_text());
    let got = spans_by_id(&read_jsonl(&dir.path("traces.jsonl"), Signal::Traces));
    assert_eq!(got.len(), 350);
    assert_traces_delivered(&a, &got);
    assert_traces_delivered(&b, &got);
}

#[test]
fn python_sdk_metrics_and_logs_arrive_and_are_counted() {
    let Some(py) = python() else { return };
    let dir = Scratch::new("py-ml");
    let (grpc, http) = (free_port(), free_port());
    let mut gw = Gateway::start(
        &dir,
        "gw",
        &file_pipeline(grpc, http, &dir.0, &["metrics", "logs"]),
    );
    let m1 = otel_send(
        &py,
        &[
            "--signal",
            "metrics",
            "--protocol",
            "grpc",
            "--endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--count",
            "40",
        ],
    );
    let m2 = otel_send(
        &py,
        &[
            "--signal",
            "metrics",
            "--protocol",
            "http",
            "--endpoint",
            &format!("http://127.0.0.1:{http}"),
            "--count",
            "30",
        ],
    );
    let l1 = otel_send(
        &py,
        &[
            "--signal",
            "logs",
            "--protocol",
            "grpc",
            "--endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--count",
            "60",
        ],
    );
    let l2 = otel_send(
        &py,
        &[
            "--signal",
            "logs",
            "--protocol",
            "http",
            "--endpoint",
            &format!("http://127.0.0.1:{http}"),
            "--count",
            "70",
            "--compression",
            "gzip",
        ],
    );
    let points = m1["sent"].as_f64().unwrap() + m2["sent"].as_f64().unwrap();
    let logs = l1["sent"].as_f64().unwrap() + l2["sent"].as_f64().unwrap();
    assert_eq!((points, logs), (72.0, 130.0));
    let m = gw.wait_metrics(Duration::from_secs(15), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file/metrics")],
        ) >= points
            && m.sum(
                "meshgate_exporter_sent_items_total",
                &[("exporter", "file/logs")],
            ) >= logs
    });
    assert_eq!(
        m.sum(
            "meshgate_receiver_accepted_items_total",
            &[("signal", "metrics")]
        ),
        points
    );
    assert_eq!(
        m.sum(
            "meshgate_receiver_accepted_items_total",
            &[("signal", "logs")]
        ),
        logs
    );
    assert_eq!(
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file/metrics")]
        ),
        points
    );
    assert_eq!(
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file/logs")]
        ),
        logs
    );
    assert!(gw.stop().success());

    // Logs: every body arrives once with its trace and span ids.
    let mut bodies = BTreeMap::new();
    for p in read_jsonl(&dir.path("logs.jsonl"), Signal::Logs) {
        let Payload::Logs(l) = p else { panic!() };
        for r in l
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
        {
            let body = r
                .body
                .as_ref()
                .and_then(|b| b.value.as_ref())
                .map(any_to_json)
                .unwrap();
            *bodies
                .entry((
                    body.as_str().unwrap().to_string(),
                    hex(&r.trace_id),
                    hex(&r.span_id),
                ))
                .or_insert(0) += 1;
        }
    }
    for sent in [&l1, &l2] {
        for rec in sent["logs"].as_array().unwrap() {
            let key = (
                rec["body"].as_str().unwrap().to_string(),
                rec["trace_id"].as_str().unwrap().to_string(),
                rec["span_id"].as_str().unwrap().to_string(),
            );
            assert!(bodies.contains_key(&key), "log {key:?} missing");
        }
    }
    assert_eq!(bodies.values().sum::<i32>(), 130);

    // Metrics: every counter point arrives with its attribute and value.
    let mut seen = 0;
    for p in read_jsonl(&dir.path("metrics.jsonl"), Signal::Metrics) {
        seen += p.item_count();
    }
    assert_eq!(seen as f64, points);
}

#[test]
fn telemetrygen_traces_and_logs_arrive_over_grpc_and_http() {
    let Some(tg) = telemetrygen() else { return };
    let dir = Scratch::new("tg");
    let (grpc, http) = (free_port(), free_port());
    let mut gw = Gateway::start(
        &dir,
        "gw",
        &file_pipeline(grpc, http, &dir.0, &["traces", "logs"]),
    );
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&tg)
            .args(args)
            .output()
            .expect("run telemetrygen");
        assert!(
            out.status.success(),
            "telemetrygen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let g = format!("127.0.0.1:{grpc}");
    let h = format!("127.0.0.1:{http}");
    // Each trace is a parent and --child-spans children.
    run(&[
        "traces",
        "--otlp-insecure",
        "--otlp-endpoint",
        &g,
        "--traces",
        "25",
        "--child-spans",
        "3",
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
        "15",
        "--child-spans",
        "1",
        "--rate",
        "0",
    ]);
    run(&[
        "logs",
        "--otlp-insecure",
        "--otlp-endpoint",
        &g,
        "--logs",
        "33",
        "--rate",
        "0",
    ]);
    let m = gw.wait_metrics(Duration::from_secs(15), |m| {
        m.sum(
            "meshgate_exporter_sent_items_total",
            &[("exporter", "file/traces")],
        ) >= 130.0
            && m.sum(
                "meshgate_exporter_sent_items_total",
                &[("exporter", "file/logs")],
            ) >= 33.0
    });
    assert_eq!(
        m.sum(
            "meshgate_receiver_accepted_items_total",
            &[("signal", "traces"), ("transport", "grpc")]
        ),
        100.0
    );
    assert_eq!(
        m.sum(
            "meshgate_receiver_accepted_items_total",
            &[("signal", "traces"), ("transport", "http")]
        ),
        30.0
    );
    assert_eq!(
        m.sum(
            "meshgate_receiver_accepted_items_total",
            &[("signal", "logs")]
        ),
        33.0
    );
    assert!(gw.stop().success());
    let got = spans_by_id(&read_jsonl(&dir.path("traces.jsonl"), Signal::Traces));
    assert_eq!(got.len(), 130);
    // Children point at parents that arrived too.
    for (id, (trace, parent, _, _)) in &got {
        if !parent.is_empty() {
            let p = got
                .get(parent)
                .unwrap_or_else(|| panic!("parent of {id} missing"));
            assert_eq!(&p.0, trace);
        }
    }
}
