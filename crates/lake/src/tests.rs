//! Unit tests of conversion, partitioning, rolling, atomic publication and queries.

use crate::query::{OutputFormat, run, write_results};
use crate::writer::{LakeWriter, WriterConfig, partition_path, stale_temporaries};
use crate::{to_record_batch, writer};
use arrow::array::{
    Array, AsArray, FixedSizeBinaryArray, Float64Array, Int32Array, Int64Array, MapArray,
    StringArray,
};
use arrow::datatypes::{Int32Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use meshgate_pdata::Payload;
use meshgate_pdata::attributes::{kv, kv_str};
use meshgate_pdata::otlp::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// 2026-05-01T10:15:00Z in ns.
const T0: u64 = 1_777_630_500_000_000_000;
const HOUR: u64 = 3_600_000_000_000;

struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "meshgate-lake-{}-{name}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn resource(service: &str, extra: Vec<KeyValue>) -> Option<Resource> {
    let mut attributes = vec![kv_str("service.name", service)];
    attributes.extend(extra);
    Some(Resource {
        attributes,
        ..Default::default()
    })
}

fn span(i: u8, start: u64, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        name: format!("op-{i}"),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 5_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn traces(service: &str, spans: Vec<Span>) -> Payload {
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service, vec![kv_str("k8s.namespace.name", "shop")]),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "envoy".into(),
                    version: "1.31".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    })
}

fn str_col<'a>(b: &'a RecordBatch, name: &str) -> &'a StringArray {
    b.column_by_name(name).unwrap().as_string::<i32>()
}

fn dict_value(b: &RecordBatch, name: &str, row: usize) -> String {
    let d = b.column_by_name(name).unwrap().as_dictionary::<Int32Type>();
    let values = d.values().as_string::<i32>();
    values.value(d.keys().value(row) as usize).to_string()
}

fn map_entries(b: &RecordBatch, name: &str, row: usize) -> Vec<(String, Option<String>)> {
    let m: &MapArray = b.column_by_name(name).unwrap().as_map();
    let e = m.value(row);
    let k = e.column(0).as_string::<i32>();
    let v = e.column(1).as_string::<i32>();
    (0..e.len())
        .map(|i| {
            (
                k.value(i).to_string(),
                v.is_valid(i).then(|| v.value(i).to_string()),
            )
        })
        .collect()
}

#[test]
fn spans_promote_mesh_attributes_including_envoy_string_status_codes() {
    let envoy = vec![
        kv_str("http.method", "GET"),
        kv_str("http.status_code", "503"),
        kv_str(
            "upstream_cluster",
            "outbound|9080||reviews.default.svc.cluster.local",
        ),
        kv_str("peer.address", "10.0.0.7"),
        kv_str("istio.namespace", "default"),
        kv_str("istio.canonical_service", "productpage"),
        kv_str("response_flags", "UF"),
        kv_str("node_id", "sidecar~10.0.0.7~productpage.default"),
    ];
    let semconv = vec![
        kv_str("http.method", "POST"), // older spelling loses to the newer one
        kv_str("http.request.method", "PUT"),
        kv("http.response.status_code", any_value::Value::IntValue(201)),
        kv_str("network.peer.address", "10.0.0.9"),
        kv("retries", any_value::Value::IntValue(3)),
        kv("sampled", any_value::Value::BoolValue(true)),
    ];
    let no_response = vec![kv_str("http.status_code", "0")];
    let garbage = vec![kv_str("http.status_code", "n/a")];
    let mut with_parent = span(5, T0, vec![]);
    with_parent.parent_span_id = vec![9; 8];
    with_parent.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: "boom".into(),
    });
    with_parent.events = vec![span::Event {
        name: "exception".into(),
        ..Default::default()
    }];
    let p = traces(
        "productpage.default",
        vec![
            span(1, T0, envoy),
            span(2, T0, semconv),
            span(3, T0, no_response),
            span(4, T0, garbage),
            with_parent,
        ],
    );
    let b = to_record_batch(&p).unwrap().unwrap();
    assert_eq!(b.num_rows(), 5);
    assert_eq!(b.schema(), crate::schema::spans());

    let method = str_col(&b, "http_method");
    assert_eq!(method.value(0), "GET");
    assert_eq!(method.value(1), "PUT");
    assert!(method.is_null(2));
    let status = b
        .column_by_name("http_status_code")
        .unwrap()
        .as_any()
        .downcast_ref::<Int32Array>()
        .unwrap();
    assert_eq!(status.value(0), 503);
    assert_eq!(status.value(1), 201);
    assert_eq!(status.value(2), 0);
    assert!(status.is_null(3));
    assert_eq!(
        str_col(&b, "upstream_cluster").value(0),
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    assert_eq!(str_col(&b, "peer_address").value(0), "10.0.0.7");
    assert_eq!(str_col(&b, "peer_address").value(1), "10.0.0.9");
    // Span attribute first, then the resource's k8s.namespace.name.
    assert_eq!(str_col(&b, "k8s_namespace").value(0), "default");
    assert_eq!(str_col(&b, "k8s_namespace").value(1), "shop");
    assert_eq!(
        str_col(&b, "istio_canonical_service").value(0),
        "productpage"
    );
    assert_eq!(str_col(&b, "response_flags").value(0), "UF");

    // Promoted keys leave the map; the others stay, typed values as text.
    assert_eq!(
        map_entries(&b, "attributes", 0),
        vec![(
            "node_id".into(),
            Some("sidecar~10.0.0.7~productpage.default".into())
        )]
    );
    assert_eq!(
        map_entries(&b, "attributes", 1),
        vec![
            ("http.method".into(), Some("POST".into())),
            ("retries".into(), Some("3".into())),
            ("sampled".into(), Some("true".into())),
        ]
    );
    // An unparsable status code is kept rather than lost.
    assert_eq!(
        map_entries(&b, "attributes", 3),
        vec![("http.status_code".into(), Some("n/a".into()))]
    );
    assert!(
        map_entries(&b, "resource_attributes", 0)
            .contains(&("service.name".into(), Some("productpage.default".into())))
    );

    assert_eq!(dict_value(&b, "service_name", 0), "productpage.default");
    assert_eq!(dict_value(&b, "kind", 0), "CLIENT");
    assert_eq!(dict_value(&b, "status_code", 0), "UNSET");
    assert_eq!(dict_value(&b, "status_code", 4), "ERROR");
    assert_eq!(str_col(&b, "status_message").value(4), "boom");
    assert!(str_col(&b, "status_message").is_null(0));
    let parent = b
        .column_by_name("parent_span_id")
        .unwrap()
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .unwrap();
    assert!(parent.is_null(0));
    assert_eq!(parent.value(4), [9u8; 8]);
    let tid = b
        .column_by_name("trace_id")
        .unwrap()
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .unwrap();
    assert_eq!(tid.value(1), [2u8; 16]);
    let dur = b
        .column_by_name("duration_ns")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(dur.value(0), 5_000_000);
    let start = b
        .column_by_name("start_time")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    assert_eq!(start.value(0), T0 as i64);
    assert_eq!(str_col(&b, "scope_name").value(0), "envoy");
    let events = b
        .column_by_name("events_count")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!(events.value(4), 1);
    assert!(b.column_by_name("event_names").unwrap().is_null(0));
}

#[test]
fn empty_payloads_give_no_batch_and_missing_service_is_unknown() {
    assert!(to_record_batch(&traces("x", vec![])).unwrap().is_none());
    let mut p = traces("x", vec![span(1, T0, vec![])]);
    if let Payload::Traces(t) = &mut p {
        t.resource_spans[0].resource = None;
        t.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3]; // bad length
    }
    let b = to_record_batch(&p).unwrap().unwrap();
    assert_eq!(dict_value(&b, "service_name", 0), "unknown_service");
    let tid = b
        .column_by_name("trace_id")
        .unwrap()
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .unwrap();
    assert_eq!(&tid.value(0)[..4], &[1, 2, 3, 0]);
}

fn logs_payload() -> Payload {
    Payload::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("envoy-gw", vec![]),
            scope_logs: vec![ScopeLogs {
                scope: None,
                log_records: vec![
                    LogRecord {
                        time_unix_nano: T0,
                        observed_time_unix_nano: T0 + 1,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("GET /a 200".into())),
                        }),
                        attributes: vec![kv_str("response_code", "200")],
                        trace_id: vec![7; 16],
                        span_id: vec![7; 8],
                        ..Default::default()
                    },
                    LogRecord {
                        observed_time_unix_nano: T0 + HOUR,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::IntValue(42)),
                        }),
                        ..Default::default()
                    },
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    })
}

#[test]
fn logs_convert_with_time_fallback_and_null_ids() {
    let b = to_record_batch(&logs_payload()).unwrap().unwrap();
    assert_eq!(b.schema(), crate::schema::logs());
    let t = b
        .column_by_name("time")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    assert_eq!(t.value(0), T0 as i64);
    assert_eq!(t.value(1), (T0 + HOUR) as i64); // observed time when no time
    assert_eq!(str_col(&b, "body").value(0), "GET /a 200");
    assert_eq!(str_col(&b, "body").value(1), "42");
    assert!(b.column_by_name("trace_id").unwrap().is_null(1));
    assert!(b.column_by_name("severity_text").unwrap().is_null(1));
    assert_eq!(dict_value(&b, "severity_text", 0), "INFO");
    assert_eq!(
        map_entries(&b, "attributes", 0),
        vec![("response_code".into(), Some("200".into()))]
    );
}

fn metrics_payload() -> Payload {
    let dp = |v: number_data_point::Value| NumberDataPoint {
        time_unix_nano: T0,
        start_time_unix_nano: T0 - HOUR,
        value: Some(v),
        attributes: vec![kv_str("code", "200")],
        ..Default::default()
    };
    Payload::Metrics(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("reviews", vec![]),
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics: vec![
                    Metric {
                        name: "queue_depth".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![dp(number_data_point::Value::AsInt(7))],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "requests".into(),
                        unit: "1".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![dp(number_data_point::Value::AsDouble(12.5))],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "latency".into(),
                        unit: "s".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: T0,
                                count: 6,
                                sum: Some(1.5),
                                bucket_counts: vec![1, 2, 3],
                                explicit_bounds: vec![0.1, 1.0],
                                min: Some(0.01),
                                max: Some(2.0),
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        })),
                        ..Default::default()
                    },
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    })
}

#[test]
fn metrics_convert_numbers_and_histograms() {
    let b = to_record_batch(&metrics_payload()).unwrap().unwrap();
    assert_eq!(b.schema(), crate::schema::metrics());
    assert_eq!(b.num_rows(), 3);
    let value = b
        .column_by_name("value")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(value.value(0), 7.0);
    assert_eq!(value.value(1), 12.5);
    assert!(value.is_null(2));
    assert_eq!(dict_value(&b, "metric_type", 0), "gauge");
    assert_eq!(dict_value(&b, "metric_type", 1), "sum");
    assert_eq!(dict_value(&b, "temporality", 1), "cumulative");
    assert_eq!(dict_value(&b, "temporality", 2), "delta");
    assert!(b.column_by_name("temporality").unwrap().is_null(0));
    let counts = b.column_by_name("bucket_counts").unwrap().as_list::<i32>();
    assert!(counts.is_null(0));
    let c = counts.value(2);
    assert_eq!(
        c.as_primitive::<arrow::datatypes::Int64Type>().values(),
        &[1, 2, 3]
    );
    let count = b
        .column_by_name("count")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(count.value(2), 6);
}

#[test]
fn partition_paths_are_utc_dates_and_hours() {
    assert_eq!(partition_path(0), "date=1970-01-01/hour=00");
    assert_eq!(partition_path(-1), "date=1969-12-31/hour=23");
    // 2024-02-29T13:00Z = 1709211600 s.
    assert_eq!(
        partition_path(1_709_211_600 / 3600),
        "date=2024-02-29/hour=13"
    );
    assert_eq!(
        partition_path((T0 / HOUR) as i64),
        "date=2026-05-01/hour=10"
    );
    assert_eq!(
        partition_path(1_798_761_600 / 3600 - 1),
        "date=2026-12-31/hour=23"
    );
}

fn visible_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rows_in(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|f| {
            let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(f).unwrap(),
            )
            .unwrap();
            r.metadata().file_metadata().num_rows() as usize
        })
        .sum()
}

fn spans_at(n: u8, start: u64) -> RecordBatch {
    let spans = (0..n).map(|i| span(i + 1, start, vec![])).collect();
    to_record_batch(&traces("svc", spans)).unwrap().unwrap()
}

#[test]
fn writes_hive_partitions_by_event_hour() {
    let dir = TempDir::new("partitions");
    let mut w = LakeWriter::new(&dir.0, "spans", WriterConfig::default()).unwrap();
    // One batch straddling two hours.
    let spans = vec![
        span(1, T0, vec![]),
        span(2, T0 + HOUR, vec![]),
        span(3, T0, vec![]),
    ];
    let b = to_record_batch(&traces("svc", spans)).unwrap().unwrap();
    assert!(w.write(&b).unwrap().files.is_empty());
    assert_eq!(w.pending_rows(), 3);
    let published = w.close_all().unwrap().files;
    assert_eq!(published.len(), 2);
    let rel: Vec<String> = published
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .strip_prefix(&dir.0)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        rel,
        [
            "signal=traces/date=2026-05-01/hour=10",
            "signal=traces/date=2026-05-01/hour=11"
        ]
    );
    assert_eq!(rows_in(&published[..1]), 2);
    assert_eq!(rows_in(&published[1..]), 1);
    for p in &published {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with("part-") && name.ends_with(".parquet"),
            "{name}"
        );
    }
    assert!(stale_temporaries(w.root()).is_empty());
}

#[test]
fn rolls_files_by_rows_bytes_and_age_with_sensible_row_groups() {
    let dir = TempDir::new("roll");
    // Rows: at 4 rows a file is published.
    let cfg = WriterConfig {
        max_rows: 4,
        row_group_rows: 2,
        ..Default::default()
    };
    let mut w = LakeWriter::new(&dir.0, "spans", cfg).unwrap();
    let mut published = 0;
    for _ in 0..5 {
        published += w.write(&spans_at(2, T0)).unwrap().files.len();
    }
    assert_eq!(published, 2);
    assert_eq!(w.pending_rows(), 2);
    w.close_all().unwrap();
    let files = visible_files(&dir.0);
    assert_eq!(files.len(), 3);
    assert_eq!(rows_in(&files), 10);
    let meta = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&files[0]).unwrap(),
    )
    .unwrap()
    .metadata()
    .clone();
    assert!(meta.num_row_groups() >= 2, "row groups of 2 rows");
    assert_eq!(
        meta.row_group(0).column(0).compression(),
        parquet::basic::Compression::ZSTD(Default::default())
    );

    // Bytes: any write exceeds 1 byte.
    let dir = TempDir::new("roll-bytes");
    let cfg = WriterConfig {
        max_bytes: 1,
        compression: writer::Compression::Snappy,
        ..Default::default()
    };
    let mut w = LakeWriter::new(&dir.0, "spans", cfg).unwrap();
    for _ in 0..3 {
        assert_eq!(w.write(&spans_at(1, T0)).unwrap().files.len(), 1);
    }
    assert_eq!(visible_files(&dir.0).len(), 3);

    // Age: nothing expires within the hour, everything at zero.
    let dir = TempDir::new("roll-age");
    let mut w = LakeWriter::new(&dir.0, "spans", WriterConfig::default()).unwrap();
    w.write(&spans_at(3, T0)).unwrap();
    assert!(w.roll_expired().unwrap().files.is_empty());
    let cfg = WriterConfig {
        max_age: Duration::ZERO,
        ..Default::default()
    };
    let mut w = LakeWriter::new(&dir.0, "spans", cfg).unwrap();
    w.write(&spans_at(3, T0)).unwrap();
    assert_eq!(w.roll_expired().unwrap().files.len(), 1);
    assert_eq!(visible_files(&dir.0).len(), 1);
}

#[tokio::test]
async fn a_crash_mid_write_leaves_no_visible_file_and_queries_still_work() {
    let dir = TempDir::new("crash");
    let mut w = LakeWriter::new(&dir.0, "spans", WriterConfig::default()).unwrap();
    w.write(&spans_at(3, T0)).unwrap();
    w.close_all().unwrap();
    // A second file in the same partition, half written, then the process "dies": the writer
    // is never closed (no footer, no rename). Forget, not drop, so no destructor runs.
    let mut crashed = LakeWriter::new(&dir.0, "spans", WriterConfig::default()).unwrap();
    crashed.write(&spans_at(4, T0)).unwrap();
    crashed.write(&spans_at(4, T0 + HOUR)).unwrap();
    std::mem::forget(crashed);

    let visible = visible_files(&dir.0);
    assert_eq!(visible.len(), 1, "{visible:?}");
    let tmps = stale_temporaries(&dir.0.join("signal=traces"));
    assert_eq!(tmps.len(), 2, "{tmps:?}");
    // The temporaries are unreadable as Parquet: exactly what must stay hidden.
    assert!(
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&tmps[0]).unwrap()
        )
        .is_err()
    );
    let (_, batches) = run(&dir.0, "SELECT count(*) AS n FROM spans")
        .await
        .unwrap();
    let n = batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!(n, 3);
    // Even a query of the partition holding only a temporary plans and reads nothing.
    let (_, batches) = run(&dir.0, "SELECT count(*) FROM spans WHERE hour = '11'")
        .await
        .unwrap();
    let n = batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!(n, 0);
}

#[test]
fn an_unclosed_file_is_not_visible_until_published() {
    let dir = TempDir::new("atomic");
    let mut w = LakeWriter::new(&dir.0, "logs", WriterConfig::default()).unwrap();
    let b = to_record_batch(&logs_payload()).unwrap().unwrap();
    w.write(&b).unwrap();
    assert!(visible_files(&dir.0).is_empty());
    assert_eq!(stale_temporaries(&dir.0.join("signal=logs")).len(), 2);
    let published = w.close_all().unwrap().files;
    assert_eq!(published.len(), 2);
    assert_eq!(visible_files(&dir.0), published);
    assert!(stale_temporaries(&dir.0.join("signal=logs")).is_empty());
    assert!(LakeWriter::new(&dir.0, "nope", WriterConfig::default()).is_err());
}

async fn lake_with_all_signals(dir: &Path) {
    let mut w = LakeWriter::new(dir, "spans", WriterConfig::default()).unwrap();
    let spans = vec![
        span(1, T0, vec![kv_str("http.status_code", "200")]),
        span(2, T0, vec![kv_str("http.status_code", "503")]),
        span(3, T0 + HOUR, vec![kv_str("http.status_code", "200")]),
    ];
    w.write(
        &to_record_batch(&traces("productpage", spans))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    w.close_all().unwrap();
    let mut w = LakeWriter::new(dir, "logs", WriterConfig::default()).unwrap();
    w.write(&to_record_batch(&logs_payload()).unwrap().unwrap())
        .unwrap();
    w.close_all().unwrap();
    let mut w = LakeWriter::new(dir, "metrics", WriterConfig::default()).unwrap();
    w.write(&to_record_batch(&metrics_payload()).unwrap().unwrap())
        .unwrap();
    w.close_all().unwrap();
}

fn int64(b: &RecordBatch, col: usize, row: usize) -> i64 {
    b.column(col)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(row)
}

#[tokio::test]
async fn queries_use_partitions_maps_and_every_table() {
    let dir = TempDir::new("query");
    lake_with_all_signals(&dir.0).await;
    let (_, b) = run(
        &dir.0,
        "SELECT count(*) FROM spans WHERE date = '2026-05-01' AND hour = '10' AND http_status_code >= 500",
    )
    .await
    .unwrap();
    assert_eq!(int64(&b[0], 0, 0), 1);
    let (_, b) = run(
        &dir.0,
        "SELECT count(*) FROM spans WHERE resource_attributes['k8s.namespace.name'] = 'shop'",
    )
    .await
    .unwrap();
    assert_eq!(int64(&b[0], 0, 0), 3);
    let (_, b) = run(
        &dir.0,
        "SELECT count(*) FROM logs WHERE attributes['response_code'] = '200'",
    )
    .await
    .unwrap();
    assert_eq!(int64(&b[0], 0, 0), 1);
    let (_, b) = run(
        &dir.0,
        "SELECT sum(value) FROM metrics WHERE metric_name = 'requests'",
    )
    .await
    .unwrap();
    assert_eq!(
        b[0].column(0)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .value(0),
        12.5
    );

    // The partition filter reaches the scan (pruning), rather than filtering afterwards.
    let (_, b) = run(&dir.0, "EXPLAIN SELECT name FROM spans WHERE hour = '11'")
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&b)
        .unwrap()
        .to_string();
    assert!(text.contains("hour=11/part-"), "{text}");
    assert!(!text.contains("hour=10/"), "not pruned: {text}");

    // An empty lake: tables exist and are empty.
    let empty = TempDir::new("query-empty");
    let (_, b) = run(&empty.0, "SELECT count(*) FROM spans").await.unwrap();
    assert_eq!(int64(&b[0], 0, 0), 0);
    let err = run(&empty.0.join("missing"), "SELECT 1").await.unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    let err = run(&empty.0, "SELECT nope FROM spans").await.unwrap_err();
    assert!(err.contains("nope"), "{err}");
}

#[tokio::test]
async fn results_print_as_table_csv_and_json() {
    let dir = TempDir::new("formats");
    lake_with_all_signals(&dir.0).await;
    let sql = "SELECT service_name, name, http_status_code, attributes, encode(trace_id, 'hex') AS trace FROM spans ORDER BY name";
    let (schema, batches) = run(&dir.0, sql).await.unwrap();
    let render = |f| {
        let mut out = Vec::new();
        write_results(&schema, &batches, f, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let table = render(OutputFormat::Table);
    assert!(table.contains("| service_name | name "), "{table}");
    assert!(table.contains("| productpage  | op-1 | 200"), "{table}");
    let csv = render(OutputFormat::Csv);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "service_name,name,http_status_code,attributes,trace"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[1].starts_with("productpage,op-1,200,"), "{csv}");
    assert!(
        lines[1].ends_with(",01010101010101010101010101010101"),
        "{csv}"
    );
    let json = render(OutputFormat::Json);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["http_status_code"], 503);
    assert_eq!(rows[1]["service_name"], "productpage");

    // No rows: the table still shows the header.
    let (schema, batches) = run(&dir.0, "SELECT name FROM spans WHERE false")
        .await
        .unwrap();
    let mut out = Vec::new();
    write_results(&schema, &batches, OutputFormat::Table, &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().contains("| name |"));
}
