//! The Arrow schemas of the lake's three tables, and their deterministic JSON rendering (the
//! files under `schemas/parquet/`, which a test keeps in step with this code).
//!
//! Design choices, for whoever queries the files:
//! - ids are fixed-size binary (16 bytes trace, 8 bytes span), so they cost 24 bytes a span
//!   instead of 48 hex characters; render them with `encode(trace_id, 'hex')` in SQL.
//! - times are `Timestamp(ns, UTC)`, so `now() - interval '1 hour'` comparisons just work.
//! - low-cardinality strings (service, kind, status, metric name...) are dictionary-encoded.
//! - the attributes Envoy, Istio and Linkerd set on every span that queries filter on are
//!   promoted to typed columns (see [`crate::convert`] for the keys read); every other
//!   attribute stays in the `attributes` map as text.

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, OnceLock};

/// `Timestamp(ns, UTC)`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `Dictionary(Int32, Utf8)`.
pub fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// `Map<Utf8, Utf8>` exactly as [`arrow::array::MapBuilder`] builds it with the default
/// field names (`entries`, `keys`, `values`), keys not null, values nullable, unsorted.
pub fn map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

/// `List<item: T>` as the list builders build it (items nullable).
pub fn list_type(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// One column: name, type, nullability and what it holds.
struct Col(&'static str, DataType, bool, &'static str);

fn build(cols: Vec<Col>) -> (SchemaRef, Vec<&'static str>) {
    let docs = cols.iter().map(|c| c.3).collect();
    let fields: Vec<Field> = cols
        .into_iter()
        .map(|Col(name, dt, nullable, _)| Field::new(name, dt, nullable))
        .collect();
    (Arc::new(Schema::new(fields)), docs)
}

fn spans_def() -> (SchemaRef, Vec<&'static str>) {
    let ts = timestamp_type;
    build(vec![
        Col(
            "trace_id",
            DataType::FixedSizeBinary(16),
            false,
            "16-byte trace id",
        ),
        Col(
            "span_id",
            DataType::FixedSizeBinary(8),
            false,
            "8-byte span id",
        ),
        Col(
            "parent_span_id",
            DataType::FixedSizeBinary(8),
            true,
            "8-byte parent span id; null for a root span",
        ),
        Col(
            "trace_state",
            DataType::Utf8,
            true,
            "W3C tracestate; null when empty",
        ),
        Col(
            "service_name",
            dict_type(),
            false,
            "resource `service.name` (`unknown_service` when missing)",
        ),
        Col("name", DataType::Utf8, false, "span name (operation)"),
        Col(
            "kind",
            dict_type(),
            false,
            "UNSPECIFIED, INTERNAL, SERVER, CLIENT, PRODUCER or CONSUMER",
        ),
        Col(
            "start_time",
            ts(),
            false,
            "span start (UTC); the partition `date`/`hour` come from it",
        ),
        Col("end_time", ts(), false, "span end (UTC)"),
        Col(
            "duration_ns",
            DataType::Int64,
            false,
            "end - start in nanoseconds (0 when end < start)",
        ),
        Col(
            "status_code",
            dict_type(),
            false,
            "UNSET, OK or ERROR, as sent (no Envoy error inference)",
        ),
        Col(
            "status_message",
            DataType::Utf8,
            true,
            "status message; null when empty",
        ),
        Col(
            "http_method",
            DataType::Utf8,
            true,
            "`http.request.method` or `http.method`",
        ),
        Col(
            "http_status_code",
            DataType::Int32,
            true,
            "`http.response.status_code` or `http.status_code`, integers and Envoy's strings (\"200\"); Envoy's \"0\" (no response) stays 0",
        ),
        Col(
            "upstream_cluster",
            DataType::Utf8,
            true,
            "Envoy `upstream_cluster`, e.g. `outbound|9080||reviews.default.svc.cluster.local`",
        ),
        Col("peer_service", DataType::Utf8, true, "`peer.service`"),
        Col(
            "peer_address",
            DataType::Utf8,
            true,
            "`network.peer.address` or `peer.address`",
        ),
        Col(
            "k8s_namespace",
            DataType::Utf8,
            true,
            "`k8s.namespace.name` or `istio.namespace` (span, else resource)",
        ),
        Col(
            "istio_canonical_service",
            DataType::Utf8,
            true,
            "`istio.canonical_service`",
        ),
        Col(
            "response_flags",
            DataType::Utf8,
            true,
            "Envoy `response_flags` (`-`, `UH`, `UF`, `URX`...)",
        ),
        Col(
            "attributes",
            map_type(),
            false,
            "every other span attribute, as text (arrays and maps as JSON)",
        ),
        Col(
            "resource_attributes",
            map_type(),
            false,
            "every resource attribute, as text",
        ),
        Col(
            "scope_name",
            DataType::Utf8,
            true,
            "instrumentation scope name",
        ),
        Col(
            "scope_version",
            DataType::Utf8,
            true,
            "instrumentation scope version",
        ),
        Col(
            "events_count",
            DataType::Int32,
            false,
            "number of span events",
        ),
        Col(
            "event_names",
            list_type(DataType::Utf8),
            true,
            "names of the span events in order; null when none",
        ),
        Col(
            "links_count",
            DataType::Int32,
            false,
            "number of span links",
        ),
    ])
}

fn logs_def() -> (SchemaRef, Vec<&'static str>) {
    let ts = timestamp_type;
    build(vec![
        Col(
            "time",
            ts(),
            false,
            "record time; the observed time when the record has none; partitions come from it",
        ),
        Col(
            "observed_time",
            ts(),
            true,
            "when the record was observed; null when not set",
        ),
        Col(
            "severity_number",
            DataType::Int32,
            false,
            "OTLP severity number (0 unspecified, 9 INFO, 17 ERROR...)",
        ),
        Col(
            "severity_text",
            dict_type(),
            true,
            "severity text as sent; null when empty",
        ),
        Col(
            "body",
            DataType::Utf8,
            true,
            "body as text (strings as-is, other values as JSON); null when absent",
        ),
        Col(
            "trace_id",
            DataType::FixedSizeBinary(16),
            true,
            "16-byte trace id; null when absent",
        ),
        Col(
            "span_id",
            DataType::FixedSizeBinary(8),
            true,
            "8-byte span id; null when absent",
        ),
        Col(
            "service_name",
            dict_type(),
            false,
            "resource `service.name` (`unknown_service` when missing)",
        ),
        Col(
            "attributes",
            map_type(),
            false,
            "log record attributes, as text",
        ),
        Col(
            "resource_attributes",
            map_type(),
            false,
            "resource attributes, as text",
        ),
        Col(
            "scope_name",
            DataType::Utf8,
            true,
            "instrumentation scope name",
        ),
        Col(
            "scope_version",
            DataType::Utf8,
            true,
            "instrumentation scope version",
        ),
    ])
}

fn metrics_def() -> (SchemaRef, Vec<&'static str>) {
    let ts = timestamp_type;
    build(vec![
        Col(
            "time",
            ts(),
            false,
            "data point time; partitions come from it",
        ),
        Col(
            "start_time",
            ts(),
            true,
            "start of the aggregation interval; null when not set",
        ),
        Col("metric_name", dict_type(), false, "metric name"),
        Col(
            "metric_type",
            dict_type(),
            false,
            "gauge, sum, histogram, exponential_histogram or summary",
        ),
        Col("unit", dict_type(), true, "unit; null when empty"),
        Col(
            "temporality",
            dict_type(),
            true,
            "delta or cumulative (sums and histograms); null otherwise",
        ),
        Col("is_monotonic", DataType::Boolean, true, "sums only"),
        Col(
            "service_name",
            dict_type(),
            false,
            "resource `service.name` (`unknown_service` when missing)",
        ),
        Col(
            "attributes",
            map_type(),
            false,
            "data point attributes, as text",
        ),
        Col(
            "resource_attributes",
            map_type(),
            false,
            "resource attributes, as text",
        ),
        Col(
            "scope_name",
            DataType::Utf8,
            true,
            "instrumentation scope name",
        ),
        Col(
            "value",
            DataType::Float64,
            true,
            "gauge and sum value (integers converted); null for distributions",
        ),
        Col(
            "count",
            DataType::Int64,
            true,
            "histogram / exponential histogram / summary count",
        ),
        Col(
            "sum",
            DataType::Float64,
            true,
            "histogram / exponential histogram / summary sum",
        ),
        Col(
            "min",
            DataType::Float64,
            true,
            "histogram minimum, when sent",
        ),
        Col(
            "max",
            DataType::Float64,
            true,
            "histogram maximum, when sent",
        ),
        Col(
            "bucket_counts",
            list_type(DataType::Int64),
            true,
            "explicit-bucket histogram counts",
        ),
        Col(
            "explicit_bounds",
            list_type(DataType::Float64),
            true,
            "explicit-bucket histogram upper bounds",
        ),
        Col(
            "quantiles",
            list_type(DataType::Float64),
            true,
            "summary quantiles (0..1)",
        ),
        Col(
            "quantile_values",
            list_type(DataType::Float64),
            true,
            "summary values at `quantiles`",
        ),
    ])
}

fn cached(
    cell: &'static OnceLock<(SchemaRef, Vec<&'static str>)>,
    f: fn() -> (SchemaRef, Vec<&'static str>),
) -> &'static (SchemaRef, Vec<&'static str>) {
    cell.get_or_init(f)
}

static SPANS: OnceLock<(SchemaRef, Vec<&'static str>)> = OnceLock::new();
static LOGS: OnceLock<(SchemaRef, Vec<&'static str>)> = OnceLock::new();
static METRICS: OnceLock<(SchemaRef, Vec<&'static str>)> = OnceLock::new();

/// Schema of the `spans` table (partition columns not included).
pub fn spans() -> SchemaRef {
    cached(&SPANS, spans_def).0.clone()
}

/// Schema of the `logs` table (partition columns not included).
pub fn logs() -> SchemaRef {
    cached(&LOGS, logs_def).0.clone()
}

/// Schema of the `metrics` table (partition columns not included).
pub fn metrics() -> SchemaRef {
    cached(&METRICS, metrics_def).0.clone()
}

/// The three tables: (table name, `signal=` folder name, schema, column docs).
pub fn tables() -> [(
    &'static str,
    &'static str,
    SchemaRef,
    &'static [&'static str],
); 3] {
    let s = cached(&SPANS, spans_def);
    let l = cached(&LOGS, logs_def);
    let m = cached(&METRICS, metrics_def);
    [
        ("spans", "traces", s.0.clone(), &s.1),
        ("logs", "logs", l.0.clone(), &l.1),
        ("metrics", "metrics", m.0.clone(), &m.1),
    ]
}

/// A stable, readable name of an Arrow type, e.g. `timestamp(ns, UTC)`, `map<utf8, utf8>`.
pub fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Boolean => "bool".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float64 => "float64".into(),
        DataType::Utf8 => "utf8".into(),
        DataType::FixedSizeBinary(n) => format!("fixed_size_binary({n})"),
        DataType::Timestamp(unit, tz) => {
            let u = match unit {
                TimeUnit::Second => "s",
                TimeUnit::Millisecond => "ms",
                TimeUnit::Microsecond => "us",
                TimeUnit::Nanosecond => "ns",
            };
            match tz {
                Some(tz) => format!("timestamp({u}, {tz})"),
                None => format!("timestamp({u})"),
            }
        }
        DataType::Dictionary(k, v) => format!("dictionary({}, {})", type_name(k), type_name(v)),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "map<{}, {}>",
                type_name(kv[0].data_type()),
                type_name(kv[1].data_type())
            ),
            other => format!("map<{other:?}>"),
        },
        other => format!("{other:?}"),
    }
}

/// The checked-in rendering of a table's schema: pretty JSON, one object per column in order,
/// with a trailing newline. Deterministic: depends only on the code.
pub fn render(table: &str) -> Option<String> {
    let (name, folder, schema, docs) = tables().into_iter().find(|t| t.0 == table)?;
    let columns: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .zip(docs.iter())
        .map(|(f, doc)| {
            serde_json::json!({
                "name": f.name(),
                "type": type_name(f.data_type()),
                "nullable": f.is_nullable(),
                "description": doc,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "table": name,
        "path": format!("signal={folder}/date=YYYY-MM-DD/hour=HH/*.parquet"),
        "partition_columns": [
            {"name": "date", "type": "utf8", "description": "UTC date of the event time, YYYY-MM-DD"},
            {"name": "hour", "type": "utf8", "description": "UTC hour of the event time, 00-23"},
        ],
        "columns": columns,
    });
    let mut s = serde_json::to_string_pretty(&doc).ok()?;
    s.push('\n');
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn schema_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/parquet")
    }

    /// The files under `schemas/parquet/` are what the code writes. Regenerate them with
    /// `MESHGATE_UPDATE_SCHEMAS=1 cargo test -p meshgate-lake checked_in_schemas`.
    #[test]
    fn checked_in_schemas_match_the_code() {
        let update = std::env::var("MESHGATE_UPDATE_SCHEMAS").as_deref() == Ok("1");
        let mut drift = Vec::new();
        for (table, _, _, _) in tables() {
            let file = schema_dir().join(format!("{table}.json"));
            let want = render(table).unwrap();
            if update {
                std::fs::create_dir_all(schema_dir()).unwrap();
                std::fs::write(&file, &want).unwrap();
                continue;
            }
            let have = std::fs::read_to_string(&file).unwrap_or_default();
            if have != want {
                drift.push(format!("schemas/parquet/{table}.json"));
            }
        }
        assert!(
            drift.is_empty(),
            "the Parquet schemas in the code differ from the checked-in files {drift:?}.\n\
             If the change is intended, regenerate them with:\n  \
             MESHGATE_UPDATE_SCHEMAS=1 cargo test -p meshgate-lake checked_in_schemas\n\
             and commit schemas/parquet/ with the code (readers of the lake depend on it)."
        );
    }

    #[test]
    fn every_column_is_documented_and_names_are_unique() {
        for (table, _, schema, docs) in tables() {
            assert_eq!(schema.fields().len(), docs.len(), "{table}");
            let mut names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), docs.len(), "{table}: duplicate column");
            assert!(docs.iter().all(|d| !d.is_empty()), "{table}");
            for reserved in ["date", "hour"] {
                assert!(
                    schema.field_with_name(reserved).is_err(),
                    "{table}.{reserved}"
                );
            }
        }
    }

    #[test]
    fn type_names_are_readable() {
        assert_eq!(type_name(&timestamp_type()), "timestamp(ns, UTC)");
        assert_eq!(type_name(&dict_type()), "dictionary(int32, utf8)");
        assert_eq!(type_name(&map_type()), "map<utf8, utf8>");
        assert_eq!(type_name(&list_type(DataType::Float64)), "list<float64>");
    }
}
