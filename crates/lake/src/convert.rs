//! OTLP payload → Arrow [`RecordBatch`] in the lake's schemas.
//!
//! One pass over the payload appends straight into column builders: no intermediate row
//! structs, no per-span `String` for attribute values (numbers are formatted into the string
//! builder's buffer; only arrays and maps go through JSON). Promoted attributes are found in
//! one scan of the span's attribute list and left out of its `attributes` map.

use crate::schema;
use arrow::array::{
    ArrayRef, BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, MapBuilder, StringBuilder, StringDictionaryBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::Int32Type;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use meshgate_pdata::Payload;
use meshgate_pdata::attributes::value_to_string;
use meshgate_pdata::otlp::{
    AnyValue, ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest,
    InstrumentationScope, KeyValue, Resource, any_value::Value, metric, number_data_point,
};
use std::fmt::Write as _;
use std::sync::Arc;

/// `service.name` when a resource has none (as the OpenTelemetry SDKs default it).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// The name of the event-time column of each table (what partitions are computed from).
pub fn time_column(table: &str) -> &'static str {
    match table {
        "spans" => "start_time",
        _ => "time",
    }
}

/// Converts a payload into one batch of its table (`spans`, `logs` or `metrics`); `None`
/// when the payload holds no item.
pub fn to_record_batch(payload: &Payload) -> Result<Option<RecordBatch>, ArrowError> {
    if payload.is_empty() {
        return Ok(None);
    }
    match payload {
        Payload::Traces(t) => spans(t).map(Some),
        Payload::Logs(l) => logs(l).map(Some),
        Payload::Metrics(m) => metrics(m).map(Some),
    }
}

fn ns(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .and_then(|r| meshgate_pdata::attributes::get_str(&r.attributes, "service.name"))
        .filter(|s| !s.is_empty())
        .unwrap_or(UNKNOWN_SERVICE)
}

/// Appends an OTLP value as text without allocating for scalars.
fn append_text(b: &mut StringBuilder, v: Option<&AnyValue>) {
    match v.and_then(|v| v.value.as_ref()) {
        None => b.append_null(),
        Some(Value::StringValue(s)) => b.append_value(s),
        Some(Value::BoolValue(x)) => b.append_value(if *x { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(b, "{i}");
            b.append_value("");
        }
        Some(Value::DoubleValue(d)) => {
            let _ = write!(b, "{d}");
            b.append_value("");
        }
        Some(Value::BytesValue(bytes)) => {
            for byte in bytes {
                let _ = write!(b, "{byte:02x}");
            }
            b.append_value("");
        }
        Some(other) => b.append_value(value_to_string(other)),
    }
}

fn append_opt_str(b: &mut StringBuilder, s: &str) {
    if s.is_empty() {
        b.append_null()
    } else {
        b.append_value(s)
    }
}

/// Appends an id of `n` bytes; a missing id is null when `nullable`, and an id of the wrong
/// length (which validation upstream normally refuses) is zero-padded or truncated.
fn append_id(b: &mut FixedSizeBinaryBuilder, id: &[u8], n: usize, nullable: bool) {
    if id.is_empty() && nullable {
        b.append_null();
        return;
    }
    let r = if id.len() == n {
        b.append_value(id)
    } else {
        let mut buf = [0u8; 16];
        let k = id.len().min(n);
        buf[..k].copy_from_slice(&id[..k]);
        b.append_value(&buf[..n])
    };
    debug_assert!(r.is_ok());
}

type TextMap = MapBuilder<StringBuilder, StringBuilder>;

fn text_map() -> TextMap {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

/// Appends a key/value list as one map entry, skipping the keys at `skip` (indices).
fn append_map(b: &mut TextMap, attrs: &[KeyValue], skip: &[usize]) -> Result<(), ArrowError> {
    for (i, kv) in attrs.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        b.keys().append_value(&kv.key);
        append_text(b.values(), kv.value.as_ref());
    }
    b.append(true)
}

fn scope_parts(scope: Option<&InstrumentationScope>) -> (&str, &str) {
    scope.map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()))
}

fn finish(table: &str, columns: Vec<ArrayRef>) -> Result<RecordBatch, ArrowError> {
    let schema = match table {
        "spans" => schema::spans(),
        "logs" => schema::logs(),
        _ => schema::metrics(),
    };
    RecordBatch::try_new(schema, columns)
}

// ---------------------------------------------------------------------------------------
// spans

/// Span attributes promoted to columns: the column, then the keys read in order of
/// preference (newer semantic conventions first).
const PROMOTED: [(&str, &[&str]); 8] = [
    ("http_method", &["http.request.method", "http.method"]),
    (
        "http_status_code",
        &["http.response.status_code", "http.status_code"],
    ),
    ("upstream_cluster", &["upstream_cluster"]),
    ("peer_service", &["peer.service"]),
    ("peer_address", &["network.peer.address", "peer.address"]),
    ("k8s_namespace", &["k8s.namespace.name", "istio.namespace"]),
    ("istio_canonical_service", &["istio.canonical_service"]),
    ("response_flags", &["response_flags"]),
];
const HTTP_STATUS: usize = 1;
const NAMESPACE: usize = 5;

/// For each promoted column, the index of the attribute that fills it (best key first).
fn find_promoted(attrs: &[KeyValue]) -> [Option<usize>; 8] {
    let mut found: [Option<(usize, usize)>; 8] = [None; 8]; // (attr index, key rank)
    for (i, kv) in attrs.iter().enumerate() {
        for (col, (_, keys)) in PROMOTED.iter().enumerate() {
            if let Some(rank) = keys.iter().position(|k| *k == kv.key)
                && found[col].is_none_or(|(_, r)| rank < r)
            {
                found[col] = Some((i, rank));
            }
        }
    }
    found.map(|f| f.map(|(i, _)| i))
}

/// An HTTP status from an integer or a decimal string (`"200"`, Envoy's `"0"`).
pub fn http_status(v: Option<&AnyValue>) -> Option<i32> {
    match v?.value.as_ref()? {
        Value::IntValue(i) => i32::try_from(*i).ok(),
        Value::StringValue(s) => s.trim().parse().ok(),
        Value::DoubleValue(d) if d.fract() == 0.0 && d.abs() < 1e9 => Some(*d as i32),
        _ => None,
    }
}

const KINDS: [&str; 6] = [
    "UNSPECIFIED",
    "INTERNAL",
    "SERVER",
    "CLIENT",
    "PRODUCER",
    "CONSUMER",
];
const STATUSES: [&str; 3] = ["UNSET", "OK", "ERROR"];

fn spans(req: &ExportTraceServiceRequest) -> Result<RecordBatch, ArrowError> {
    let n: usize = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut trace_state = StringBuilder::with_capacity(n, 0);
    let mut service = StringDictionaryBuilder::<Int32Type>::new();
    let mut name = StringBuilder::with_capacity(n, n * 24);
    let mut kind = StringDictionaryBuilder::<Int32Type>::new();
    let mut start = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut duration = Int64Builder::with_capacity(n);
    let mut status_code = StringDictionaryBuilder::<Int32Type>::new();
    let mut status_message = StringBuilder::with_capacity(n, 0);
    let mut promoted: [StringBuilder; 8] =
        std::array::from_fn(|_| StringBuilder::with_capacity(n, 0));
    let mut http_status_code = Int32Builder::with_capacity(n);
    let mut attributes = text_map();
    let mut resource_attributes = text_map();
    let mut scope_name = StringBuilder::with_capacity(n, 0);
    let mut scope_version = StringBuilder::with_capacity(n, 0);
    let mut events_count = Int32Builder::with_capacity(n);
    let mut event_names = ListBuilder::new(StringBuilder::new());
    let mut links_count = Int32Builder::with_capacity(n);

    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref();
        let svc = service_name(resource);
        let res_attrs = resource.map_or(&[][..], |r| &r.attributes[..]);
        let res_ns = meshgate_pdata::attributes::get_str(res_attrs, "k8s.namespace.name");
        for ss in &rs.scope_spans {
            let (sname, sversion) = scope_parts(ss.scope.as_ref());
            for span in &ss.spans {
                append_id(&mut trace_id, &span.trace_id, 16, false);
                append_id(&mut span_id, &span.span_id, 8, false);
                append_id(&mut parent, &span.parent_span_id, 8, true);
                append_opt_str(&mut trace_state, &span.trace_state);
                service.append_value(svc);
                name.append_value(&span.name);
                kind.append_value(
                    KINDS
                        .get(span.kind as usize)
                        .copied()
                        .unwrap_or("UNSPECIFIED"),
                );
                let (s, e) = (ns(span.start_time_unix_nano), ns(span.end_time_unix_nano));
                start.append_value(s);
                end.append_value(e);
                duration.append_value(e.saturating_sub(s).max(0));
                let (code, msg) = span
                    .status
                    .as_ref()
                    .map_or((0, ""), |st| (st.code, st.message.as_str()));
                status_code.append_value(STATUSES.get(code as usize).copied().unwrap_or("UNSET"));
                append_opt_str(&mut status_message, msg);

                let mut found = find_promoted(&span.attributes);
                let status =
                    found[HTTP_STATUS].and_then(|i| http_status(span.attributes[i].value.as_ref()));
                if status.is_none() {
                    // Not a number: keep it in the map rather than lose it.
                    found[HTTP_STATUS] = None;
                }
                http_status_code.append_option(status);
                for (col, b) in promoted.iter_mut().enumerate() {
                    if col == HTTP_STATUS {
                        continue;
                    }
                    match found[col] {
                        Some(i) => append_text(b, span.attributes[i].value.as_ref()),
                        None if col == NAMESPACE => b.append_option(res_ns),
                        None => b.append_null(),
                    }
                }
                let mut skip = [usize::MAX; 8];
                for (slot, f) in skip.iter_mut().zip(found) {
                    if let Some(i) = f {
                        *slot = i;
                    }
                }
                append_map(&mut attributes, &span.attributes, &skip)?;
                append_map(&mut resource_attributes, res_attrs, &[])?;
                append_opt_str(&mut scope_name, sname);
                append_opt_str(&mut scope_version, sversion);
                events_count.append_value(i32::try_from(span.events.len()).unwrap_or(i32::MAX));
                if span.events.is_empty() {
                    event_names.append_null();
                } else {
                    for ev in &span.events {
                        event_names.values().append_value(&ev.name);
                    }
                    event_names.append(true);
                }
                links_count.append_value(i32::try_from(span.links.len()).unwrap_or(i32::MAX));
            }
        }
    }
    let [
        method,
        _status,
        upstream,
        peer_service,
        peer_address,
        k8s_ns,
        canonical,
        flags,
    ] = promoted;
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(service.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(duration.finish()),
        Arc::new(status_code.finish()),
        Arc::new(status_message.finish()),
    ];
    let mut method = method;
    cols.push(Arc::new(method.finish()));
    cols.push(Arc::new(http_status_code.finish()));
    for mut b in [
        upstream,
        peer_service,
        peer_address,
        k8s_ns,
        canonical,
        flags,
    ] {
        cols.push(Arc::new(b.finish()));
    }
    cols.push(Arc::new(attributes.finish()));
    cols.push(Arc::new(resource_attributes.finish()));
    cols.push(Arc::new(scope_name.finish()));
    cols.push(Arc::new(scope_version.finish()));
    cols.push(Arc::new(events_count.finish()));
    cols.push(Arc::new(event_names.finish()));
    cols.push(Arc::new(links_count.finish()));
    finish("spans", cols)
}

// ---------------------------------------------------------------------------------------
// logs

fn logs(req: &ExportLogsServiceRequest) -> Result<RecordBatch, ArrowError> {
    let n = req
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut observed = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut sev_num = Int32Builder::with_capacity(n);
    let mut sev_text = StringDictionaryBuilder::<Int32Type>::new();
    let mut body = StringBuilder::with_capacity(n, n * 64);
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut service = StringDictionaryBuilder::<Int32Type>::new();
    let mut attributes = text_map();
    let mut resource_attributes = text_map();
    let mut scope_name = StringBuilder::with_capacity(n, 0);
    let mut scope_version = StringBuilder::with_capacity(n, 0);
    // The same wall clock for every record of the batch that has no time at all.
    let now = now_ns();
    for rl in &req.resource_logs {
        let resource = rl.resource.as_ref();
        let svc = service_name(resource);
        let res_attrs = resource.map_or(&[][..], |r| &r.attributes[..]);
        for sl in &rl.scope_logs {
            let (sname, sversion) = scope_parts(sl.scope.as_ref());
            for r in &sl.log_records {
                let t = if r.time_unix_nano != 0 {
                    r.time_unix_nano
                } else if r.observed_time_unix_nano != 0 {
                    r.observed_time_unix_nano
                } else {
                    now
                };
                time.append_value(ns(t));
                if r.observed_time_unix_nano == 0 {
                    observed.append_null();
                } else {
                    observed.append_value(ns(r.observed_time_unix_nano));
                }
                sev_num.append_value(r.severity_number);
                if r.severity_text.is_empty() {
                    sev_text.append_null();
                } else {
                    sev_text.append_value(&r.severity_text);
                }
                append_text(&mut body, r.body.as_ref());
                append_id(&mut trace_id, &r.trace_id, 16, true);
                append_id(&mut span_id, &r.span_id, 8, true);
                service.append_value(svc);
                append_map(&mut attributes, &r.attributes, &[])?;
                append_map(&mut resource_attributes, res_attrs, &[])?;
                append_opt_str(&mut scope_name, sname);
                append_opt_str(&mut scope_version, sversion);
            }
        }
    }
    finish(
        "logs",
        vec![
            Arc::new(time.finish()),
            Arc::new(observed.finish()),
            Arc::new(sev_num.finish()),
            Arc::new(sev_text.finish()),
            Arc::new(body.finish()),
            Arc::new(trace_id.finish()),
            Arc::new(span_id.finish()),
            Arc::new(service.finish()),
            Arc::new(attributes.finish()),
            Arc::new(resource_attributes.finish()),
            Arc::new(scope_name.finish()),
            Arc::new(scope_version.finish()),
        ],
    )
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// metrics

struct MetricBuilders {
    time: TimestampNanosecondBuilder,
    start: TimestampNanosecondBuilder,
    name: StringDictionaryBuilder<Int32Type>,
    mtype: StringDictionaryBuilder<Int32Type>,
    unit: StringDictionaryBuilder<Int32Type>,
    temporality: StringDictionaryBuilder<Int32Type>,
    monotonic: BooleanBuilder,
    service: StringDictionaryBuilder<Int32Type>,
    attributes: TextMap,
    resource_attributes: TextMap,
    scope_name: StringBuilder,
    value: Float64Builder,
    count: Int64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<Int64Builder>,
    bounds: ListBuilder<Float64Builder>,
    quantiles: ListBuilder<Float64Builder>,
    quantile_values: ListBuilder<Float64Builder>,
}

/// What is common to every point of one metric.
struct MetricCtx<'a> {
    name: &'a str,
    mtype: &'static str,
    unit: &'a str,
    temporality: Option<&'static str>,
    monotonic: Option<bool>,
    service: &'a str,
    res_attrs: &'a [KeyValue],
    scope_name: &'a str,
}

/// One point's own fields.
#[derive(Default)]
struct Point<'a> {
    time: u64,
    start: u64,
    attrs: &'a [KeyValue],
    value: Option<f64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    buckets: Option<(&'a [u64], &'a [f64])>,
    quantiles: Option<&'a [(f64, f64)]>,
}

fn temporality(t: i32) -> Option<&'static str> {
    match t {
        1 => Some("delta"),
        2 => Some("cumulative"),
        _ => None,
    }
}

impl MetricBuilders {
    fn new(n: usize) -> Self {
        Self {
            time: TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            start: TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            name: StringDictionaryBuilder::new(),
            mtype: StringDictionaryBuilder::new(),
            unit: StringDictionaryBuilder::new(),
            temporality: StringDictionaryBuilder::new(),
            monotonic: BooleanBuilder::with_capacity(n),
            service: StringDictionaryBuilder::new(),
            attributes: text_map(),
            resource_attributes: text_map(),
            scope_name: StringBuilder::with_capacity(n, 0),
            value: Float64Builder::with_capacity(n),
            count: Int64Builder::with_capacity(n),
            sum: Float64Builder::with_capacity(n),
            min: Float64Builder::with_capacity(n),
            max: Float64Builder::with_capacity(n),
            bucket_counts: ListBuilder::new(Int64Builder::new()),
            bounds: ListBuilder::new(Float64Builder::new()),
            quantiles: ListBuilder::new(Float64Builder::new()),
            quantile_values: ListBuilder::new(Float64Builder::new()),
        }
    }

    fn append(&mut self, m: &MetricCtx<'_>, p: Point<'_>) -> Result<(), ArrowError> {
        self.time.append_value(ns(p.time));
        if p.start == 0 {
            self.start.append_null();
        } else {
            self.start.append_value(ns(p.start));
        }
        self.name.append_value(m.name);
        self.mtype.append_value(m.mtype);
        if m.unit.is_empty() {
            self.unit.append_null();
        } else {
            self.unit.append_value(m.unit);
        }
        self.temporality.append_option(m.temporality);
        self.monotonic.append_option(m.monotonic);
        self.service.append_value(m.service);
        append_map(&mut self.attributes, p.attrs, &[])?;
        append_map(&mut self.resource_attributes, m.res_attrs, &[])?;
        append_opt_str(&mut self.scope_name, m.scope_name);
        self.value.append_option(p.value);
        self.count
            .append_option(p.count.map(|c| i64::try_from(c).unwrap_or(i64::MAX)));
        self.sum.append_option(p.sum);
        self.min.append_option(p.min);
        self.max.append_option(p.max);
        match p.buckets {
            Some((counts, bounds)) => {
                for c in counts {
                    self.bucket_counts
                        .values()
                        .append_value(i64::try_from(*c).unwrap_or(i64::MAX));
                }
                self.bucket_counts.append(true);
                self.bounds.values().append_slice(bounds);
                self.bounds.append(true);
            }
            None => {
                self.bucket_counts.append_null();
                self.bounds.append_null();
            }
        }
        match p.quantiles {
            Some(q) => {
                for (quantile, value) in q {
                    self.quantiles.values().append_value(*quantile);
                    self.quantile_values.values().append_value(*value);
                }
                self.quantiles.append(true);
                self.quantile_values.append(true);
            }
            None => {
                self.quantiles.append_null();
                self.quantile_values.append_null();
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        finish(
            "metrics",
            vec![
                Arc::new(self.time.finish()),
                Arc::new(self.start.finish()),
                Arc::new(self.name.finish()),
                Arc::new(self.mtype.finish()),
                Arc::new(self.unit.finish()),
                Arc::new(self.temporality.finish()),
                Arc::new(self.monotonic.finish()),
                Arc::new(self.service.finish()),
                Arc::new(self.attributes.finish()),
                Arc::new(self.resource_attributes.finish()),
                Arc::new(self.scope_name.finish()),
                Arc::new(self.value.finish()),
                Arc::new(self.count.finish()),
                Arc::new(self.sum.finish()),
                Arc::new(self.min.finish()),
                Arc::new(self.max.finish()),
                Arc::new(self.bucket_counts.finish()),
                Arc::new(self.bounds.finish()),
                Arc::new(self.quantiles.finish()),
                Arc::new(self.quantile_values.finish()),
            ],
        )
    }
}

fn metrics(req: &ExportMetricsServiceRequest) -> Result<RecordBatch, ArrowError> {
    let mut b = MetricBuilders::new(1024);
    let mut q: Vec<(f64, f64)> = Vec::new();
    for rm in &req.resource_metrics {
        let resource = rm.resource.as_ref();
        let service = service_name(resource);
        let res_attrs = resource.map_or(&[][..], |r| &r.attributes[..]);
        for sm in &rm.scope_metrics {
            let (scope_name, _) = scope_parts(sm.scope.as_ref());
            for m in &sm.metrics {
                let mut ctx = MetricCtx {
                    name: &m.name,
                    mtype: "gauge",
                    unit: &m.unit,
                    temporality: None,
                    monotonic: None,
                    service,
                    res_attrs,
                    scope_name,
                };
                let number = |v: &Option<number_data_point::Value>| match v {
                    Some(number_data_point::Value::AsDouble(d)) => Some(*d),
                    Some(number_data_point::Value::AsInt(i)) => Some(*i as f64),
                    None => None,
                };
                match &m.data {
                    None => {}
                    Some(metric::Data::Gauge(g)) => {
                        for p in &g.data_points {
                            b.append(
                                &ctx,
                                Point {
                                    time: p.time_unix_nano,
                                    start: p.start_time_unix_nano,
                                    attrs: &p.attributes,
                                    value: number(&p.value),
                                    ..Default::default()
                                },
                            )?;
                        }
                    }
                    Some(metric::Data::Sum(s)) => {
                        ctx.mtype = "sum";
                        ctx.temporality = temporality(s.aggregation_temporality);
                        ctx.monotonic = Some(s.is_monotonic);
                        for p in &s.data_points {
                            b.append(
                                &ctx,
                                Point {
                                    time: p.time_unix_nano,
                                    start: p.start_time_unix_nano,
                                    attrs: &p.attributes,
                                    value: number(&p.value),
                                    ..Default::default()
                                },
                            )?;
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        ctx.mtype = "histogram";
                        ctx.temporality = temporality(h.aggregation_temporality);
                        for p in &h.data_points {
                            b.append(
                                &ctx,
                                Point {
                                    time: p.time_unix_nano,
                                    start: p.start_time_unix_nano,
                                    attrs: &p.attributes,
                                    count: Some(p.count),
                                    sum: p.sum,
                                    min: p.min,
                                    max: p.max,
                                    buckets: Some((&p.bucket_counts, &p.explicit_bounds)),
                                    ..Default::default()
                                },
                            )?;
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        ctx.mtype = "exponential_histogram";
                        ctx.temporality = temporality(h.aggregation_temporality);
                        for p in &h.data_points {
                            b.append(
                                &ctx,
                                Point {
                                    time: p.time_unix_nano,
                                    start: p.start_time_unix_nano,
                                    attrs: &p.attributes,
                                    count: Some(p.count),
                                    sum: p.sum,
                                    min: p.min,
                                    max: p.max,
                                    ..Default::default()
                                },
                            )?;
                        }
                    }
                    Some(metric::Data::Summary(s)) => {
                        ctx.mtype = "summary";
                        for p in &s.data_points {
                            q.clear();
                            q.extend(p.quantile_values.iter().map(|v| (v.quantile, v.value)));
                            b.append(
                                &ctx,
                                Point {
                                    time: p.time_unix_nano,
                                    start: p.start_time_unix_nano,
                                    attrs: &p.attributes,
                                    count: Some(p.count),
                                    sum: Some(p.sum),
                                    quantiles: Some(&q),
                                    ..Default::default()
                                },
                            )?;
                        }
                    }
                }
            }
        }
    }
    b.finish()
}
