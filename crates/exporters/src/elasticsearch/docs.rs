//! The documents written per mapping mode, and the bulk action that indexes each.
//!
//! Every span or log record becomes exactly one document (one bulk item), so the exporter's
//! item accounting maps one to one onto the engine's.

use meshgate_pdata::Payload;
use meshgate_pdata::attributes::{any_to_json, get, value_to_string};
use meshgate_pdata::otlp::any_value::Value as AnyVal;
use meshgate_pdata::otlp::{
    AnyValue, InstrumentationScope, KeyValue, LogRecord, Resource, Span, span, status,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

/// How spans and log records are shaped into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum MappingMode {
    /// OpenTelemetry-native documents in data streams `traces-<dataset>.otel-<namespace>` /
    /// `logs-<dataset>.otel-<namespace>` (the shape of the OpenTelemetry Collector's `otel`
    /// mapping mode).
    #[default]
    Otel,
    /// Elastic Common Schema field names (`trace.id`, `service.name`, `event.outcome`...) in
    /// `traces-generic-default` / `logs-generic-default`.
    Ecs,
    /// OpenSearch Trace Analytics documents as Data Prepper writes them (`otel-v1-apm-span`,
    /// `logs-otel-v1`).
    Dataprepper,
}

impl MappingMode {
    /// Name used in template names and the schemas folder.
    pub fn as_str(self) -> &'static str {
        match self {
            MappingMode::Otel => "otel",
            MappingMode::Ecs => "ecs",
            MappingMode::Dataprepper => "dataprepper",
        }
    }

    /// The fixed index of a mode (otel routes per document instead).
    pub(crate) fn default_index(self, traces: bool) -> Option<&'static str> {
        match (self, traces) {
            (MappingMode::Otel, _) => None,
            (MappingMode::Ecs, true) => Some("traces-generic-default"),
            (MappingMode::Ecs, false) => Some("logs-generic-default"),
            (MappingMode::Dataprepper, true) => Some("otel-v1-apm-span"),
            (MappingMode::Dataprepper, false) => Some("logs-otel-v1"),
        }
    }
}

/// One bulk item: the action line and the document line, each ending in `\n`.
pub(crate) type Item = Vec<u8>;

/// Turns payloads into bulk items.
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    pub mode: MappingMode,
    /// Explicit index / data stream for spans, overriding the mode's.
    pub traces_index: Option<String>,
    /// Explicit index / data stream for log records, overriding the mode's.
    pub logs_index: Option<String>,
}

/// Lowercase hex of an id (`""` for an empty one).
fn hex_id(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

/// RFC 3339 with nanoseconds, e.g. `2023-11-14T22:13:20.000000000Z`.
pub(crate) fn timestamp(nanos: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
}

fn attr_json(kv: &KeyValue) -> Value {
    kv.value
        .as_ref()
        .and_then(|v| v.value.as_ref())
        .map(any_to_json)
        .unwrap_or(Value::Null)
}

/// Attributes as a JSON object with their keys as written (`http.method`), leaving out the
/// data stream routing keys.
fn attrs_object(attrs: &[KeyValue]) -> Map<String, Value> {
    attrs
        .iter()
        .filter(|kv| !kv.key.starts_with("data_stream."))
        .map(|kv| (kv.key.clone(), attr_json(kv)))
        .collect()
}

fn body_text(body: Option<&AnyValue>) -> Option<String> {
    body.and_then(|b| b.value.as_ref()).map(value_to_string)
}

fn action(index: &str, id: Option<&str>) -> Value {
    match id {
        Some(id) => json!({"create": {"_index": index, "_id": id}}),
        None => json!({"create": {"_index": index}}),
    }
}

fn push_item(out: &mut Vec<Item>, action: &Value, doc: &Value) {
    let mut line = serde_json::to_vec(action).unwrap_or_default();
    line.push(b'\n');
    // Serialising a `Value` cannot fail.
    serde_json::to_writer(&mut line, doc).unwrap_or_default();
    line.push(b'\n');
    out.push(line);
}

/// Sets `path` (dotted) in `obj`, creating intermediate objects.
fn put(obj: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        None => {
            obj.insert(path.to_string(), v);
        }
        Some((head, rest)) => {
            let child = obj
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(m) = child {
                put(m, rest, v);
            }
        }
    }
}

/// `type`, `dataset` and `namespace` of a data stream name `type-dataset-namespace`.
fn data_stream_parts(name: &str) -> Option<(&str, &str, &str)> {
    let (ty, rest) = name.split_once('-')?;
    let (dataset, namespace) = rest.rsplit_once('-')?;
    (!ty.is_empty() && !dataset.is_empty() && !namespace.is_empty())
        .then_some((ty, dataset, namespace))
}

fn data_stream_object(name: &str) -> Option<Value> {
    data_stream_parts(name).map(|(t, d, n)| json!({"type": t, "dataset": d, "namespace": n}))
}

/// Replaces what Elasticsearch forbids in a data stream's dataset or namespace.
fn sanitize_ds(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| match c {
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The first string value of `key` in the record's, then the scope's, then the resource's
/// attributes.
fn routing_value(levels: [&[KeyValue]; 3], key: &str) -> Option<String> {
    levels.iter().find_map(|attrs| match get(attrs, key) {
        Some(AnyVal::StringValue(s)) if !s.is_empty() => Some(s.clone()),
        Some(v @ (AnyVal::IntValue(_) | AnyVal::BoolValue(_))) => Some(value_to_string(v)),
        _ => None,
    })
}

/// Index and `data_stream` object of an otel-mode document.
fn otel_route(kind: &str, levels: [&[KeyValue]; 3]) -> (String, Value) {
    let dataset = routing_value(levels, "data_stream.dataset")
        .map(|d| sanitize_ds(&d, 100))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "generic".into());
    let dataset = if dataset.ends_with(".otel") {
        dataset
    } else {
        format!("{dataset}.otel")
    };
    let namespace = routing_value(levels, "data_stream.namespace")
        .map(|n| sanitize_ds(&n, 100))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    (
        format!("{kind}-{dataset}-{namespace}"),
        json!({"type": kind, "dataset": dataset, "namespace": namespace}),
    )
}

fn otel_kind(k: i32) -> &'static str {
    match span::SpanKind::try_from(k).unwrap_or(span::SpanKind::Unspecified) {
        span::SpanKind::Unspecified => "Unspecified",
        span::SpanKind::Internal => "Internal",
        span::SpanKind::Server => "Server",
        span::SpanKind::Client => "Client",
        span::SpanKind::Producer => "Producer",
        span::SpanKind::Consumer => "Consumer",
    }
}

fn status_code(s: Option<&meshgate_pdata::otlp::Status>) -> status::StatusCode {
    s.and_then(|s| status::StatusCode::try_from(s.code).ok())
        .unwrap_or(status::StatusCode::Unset)
}

fn status_name(c: status::StatusCode) -> &'static str {
    match c {
        status::StatusCode::Unset => "Unset",
        status::StatusCode::Ok => "Ok",
        status::StatusCode::Error => "Error",
    }
}

fn resource_object(res: Option<&Resource>, schema_url: &str) -> Value {
    let mut m = Map::new();
    m.insert(
        "attributes".into(),
        Value::Object(attrs_object(res.map(|r| &r.attributes[..]).unwrap_or(&[]))),
    );
    if let Some(r) = res.filter(|r| r.dropped_attributes_count > 0) {
        m.insert(
            "dropped_attributes_count".into(),
            r.dropped_attributes_count.into(),
        );
    }
    if !schema_url.is_empty() {
        m.insert("schema_url".into(), schema_url.into());
    }
    Value::Object(m)
}

fn scope_object(scope: Option<&InstrumentationScope>, schema_url: &str) -> Value {
    let mut m = Map::new();
    if let Some(s) = scope {
        if !s.name.is_empty() {
            m.insert("name".into(), s.name.clone().into());
        }
        if !s.version.is_empty() {
            m.insert("version".into(), s.version.clone().into());
        }
        if !s.attributes.is_empty() {
            m.insert(
                "attributes".into(),
                Value::Object(attrs_object(&s.attributes)),
            );
        }
        if s.dropped_attributes_count > 0 {
            m.insert(
                "dropped_attributes_count".into(),
                s.dropped_attributes_count.into(),
            );
        }
    }
    if !schema_url.is_empty() {
        m.insert("schema_url".into(), schema_url.into());
    }
    Value::Object(m)
}

/// Context shared by the items of one scope.
struct Ctx<'a> {
    resource: Option<&'a Resource>,
    resource_schema_url: &'a str,
    scope: Option<&'a InstrumentationScope>,
    scope_schema_url: &'a str,
}

impl Ctx<'_> {
    fn resource_attrs(&self) -> &[KeyValue] {
        self.resource.map(|r| &r.attributes[..]).unwrap_or(&[])
    }
    fn scope_attrs(&self) -> &[KeyValue] {
        self.scope.map(|s| &s.attributes[..]).unwrap_or(&[])
    }
}

/// Root span facts for Data Prepper's `traceGroup` fields.
struct TraceGroup {
    name: String,
    end: u64,
    duration: u64,
    status: i32,
}

impl Encoder {
    /// The bulk items of `data`, one per span or log record (metrics yield none).
    pub(crate) fn encode(&self, data: &Payload) -> Vec<Item> {
        let mut out = Vec::with_capacity(data.item_count());
        match data {
            Payload::Traces(t) => {
                let groups = if self.mode == MappingMode::Dataprepper {
                    trace_groups(t)
                } else {
                    HashMap::new()
                };
                for rs in &t.resource_spans {
                    for ss in &rs.scope_spans {
                        let ctx = Ctx {
                            resource: rs.resource.as_ref(),
                            resource_schema_url: &rs.schema_url,
                            scope: ss.scope.as_ref(),
                            scope_schema_url: &ss.schema_url,
                        };
                        for s in &ss.spans {
                            let (index, id, doc) = match self.mode {
                                MappingMode::Otel => self.otel_span(&ctx, s),
                                MappingMode::Ecs => self.ecs_span(&ctx, s),
                                MappingMode::Dataprepper => self.dp_span(&ctx, s, &groups),
                            };
                            push_item(&mut out, &action(&index, id.as_deref()), &doc);
                        }
                    }
                }
            }
            Payload::Logs(l) => {
                for rl in &l.resource_logs {
                    for sl in &rl.scope_logs {
                        let ctx = Ctx {
                            resource: rl.resource.as_ref(),
                            resource_schema_url: &rl.schema_url,
                            scope: sl.scope.as_ref(),
                            scope_schema_url: &sl.schema_url,
                        };
                        for r in &sl.log_records {
                            let (index, doc) = match self.mode {
                                MappingMode::Otel => self.otel_log(&ctx, r),
                                MappingMode::Ecs => self.ecs_log(&ctx, r),
                                MappingMode::Dataprepper => self.dp_log(&ctx, r),
                            };
                            push_item(&mut out, &action(&index, None), &doc);
                        }
                    }
                }
            }
            Payload::Metrics(_) => {}
        }
        out
    }

    fn fixed_index(&self, traces: bool) -> Option<String> {
        let explicit = if traces {
            &self.traces_index
        } else {
            &self.logs_index
        };
        explicit
            .clone()
            .or_else(|| self.mode.default_index(traces).map(String::from))
    }

    /// Index and data_stream object for otel/ecs documents.
    fn route(&self, traces: bool, levels: [&[KeyValue]; 3]) -> (String, Option<Value>) {
        let kind = if traces { "traces" } else { "logs" };
        match (self.mode, self.fixed_index(traces)) {
            (_, Some(index)) => {
                let ds = data_stream_object(&index);
                (index, ds)
            }
            (_, None) => {
                let (index, ds) = otel_route(kind, levels);
                (index, Some(ds))
            }
        }
    }

    // ---- otel -------------------------------------------------------------------------

    fn otel_span(&self, ctx: &Ctx<'_>, s: &Span) -> (String, Option<String>, Value) {
        let (index, ds) = self.route(
            true,
            [&s.attributes, ctx.scope_attrs(), ctx.resource_attrs()],
        );
        let mut d = Map::new();
        d.insert(
            "@timestamp".into(),
            timestamp(s.start_time_unix_nano).into(),
        );
        if let Some(ds) = ds {
            d.insert("data_stream".into(), ds);
        }
        d.insert("trace_id".into(), hex_id(&s.trace_id).into());
        d.insert("span_id".into(), hex_id(&s.span_id).into());
        if !s.parent_span_id.is_empty() {
            d.insert("parent_span_id".into(), hex_id(&s.parent_span_id).into());
        }
        if !s.trace_state.is_empty() {
            d.insert("trace_state".into(), s.trace_state.clone().into());
        }
        d.insert("name".into(), s.name.clone().into());
        d.insert("kind".into(), otel_kind(s.kind).into());
        d.insert(
            "duration".into(),
            s.end_time_unix_nano
                .saturating_sub(s.start_time_unix_nano)
                .into(),
        );
        let mut st = Map::new();
        st.insert(
            "code".into(),
            status_name(status_code(s.status.as_ref())).into(),
        );
        if let Some(m) = s.status.as_ref().filter(|st| !st.message.is_empty()) {
            st.insert("message".into(), m.message.clone().into());
        }
        d.insert("status".into(), Value::Object(st));
        d.insert(
            "attributes".into(),
            Value::Object(attrs_object(&s.attributes)),
        );
        for (k, n) in [
            ("dropped_attributes_count", s.dropped_attributes_count),
            ("dropped_events_count", s.dropped_events_count),
            ("dropped_links_count", s.dropped_links_count),
        ] {
            if n > 0 {
                d.insert(k.into(), n.into());
            }
        }
        if !s.links.is_empty() {
            let links: Vec<Value> = s
                .links
                .iter()
                .map(|l| {
                    let mut m = Map::new();
                    m.insert("trace_id".into(), hex_id(&l.trace_id).into());
                    m.insert("span_id".into(), hex_id(&l.span_id).into());
                    if !l.trace_state.is_empty() {
                        m.insert("trace_state".into(), l.trace_state.clone().into());
                    }
                    if !l.attributes.is_empty() {
                        m.insert(
                            "attributes".into(),
                            Value::Object(attrs_object(&l.attributes)),
                        );
                    }
                    if l.dropped_attributes_count > 0 {
                        m.insert(
                            "dropped_attributes_count".into(),
                            l.dropped_attributes_count.into(),
                        );
                    }
                    Value::Object(m)
                })
                .collect();
            d.insert("links".into(), Value::Array(links));
        }
        d.insert(
            "resource".into(),
            resource_object(ctx.resource, ctx.resource_schema_url),
        );
        d.insert(
            "scope".into(),
            scope_object(ctx.scope, ctx.scope_schema_url),
        );
        (index, None, Value::Object(d))
    }

    fn otel_log(&self, ctx: &Ctx<'_>, r: &LogRecord) -> (String, Value) {
        let (index, ds) = self.route(
            false,
            [&r.attributes, ctx.scope_attrs(), ctx.resource_attrs()],
        );
        let mut d = Map::new();
        let ts = if r.time_unix_nano > 0 {
            r.time_unix_nano
        } else {
            r.observed_time_unix_nano
        };
        d.insert("@timestamp".into(), timestamp(ts).into());
        if r.observed_time_unix_nano > 0 {
            d.insert(
                "observed_timestamp".into(),
                timestamp(r.observed_time_unix_nano).into(),
            );
        }
        if let Some(ds) = ds {
            d.insert("data_stream".into(), ds);
        }
        if !r.trace_id.is_empty() {
            d.insert("trace_id".into(), hex_id(&r.trace_id).into());
        }
        if !r.span_id.is_empty() {
            d.insert("span_id".into(), hex_id(&r.span_id).into());
        }
        if !r.severity_text.is_empty() {
            d.insert("severity_text".into(), r.severity_text.clone().into());
        }
        if r.severity_number != 0 {
            d.insert("severity_number".into(), r.severity_number.into());
        }
        if !r.event_name.is_empty() {
            d.insert("event_name".into(), r.event_name.clone().into());
        }
        match r.body.as_ref().and_then(|b| b.value.as_ref()) {
            None => {}
            Some(v @ (AnyVal::KvlistValue(_) | AnyVal::ArrayValue(_))) => {
                d.insert("body".into(), json!({"structured": any_to_json(v)}));
            }
            Some(v) => {
                d.insert("body".into(), json!({"text": value_to_string(v)}));
            }
        }
        d.insert(
            "attributes".into(),
            Value::Object(attrs_object(&r.attributes)),
        );
        if r.dropped_attributes_count > 0 {
            d.insert(
                "dropped_attributes_count".into(),
                r.dropped_attributes_count.into(),
            );
        }
        d.insert(
            "resource".into(),
            resource_object(ctx.resource, ctx.resource_schema_url),
        );
        d.insert(
            "scope".into(),
            scope_object(ctx.scope, ctx.scope_schema_url),
        );
        (index, Value::Object(d))
    }

    // ---- ecs --------------------------------------------------------------------------

    /// ECS fields shared by spans and logs: service, host, HTTP, URL and the labels.
    fn ecs_common(&self, d: &mut Map<String, Value>, ctx: &Ctx<'_>, attrs: &[KeyValue]) {
        let res = ctx.resource_attrs();
        for (otel, ecs) in [
            ("service.name", "service.name"),
            ("service.version", "service.version"),
            ("service.namespace", "service.namespace"),
            ("service.instance.id", "service.instance.id"),
            ("host.name", "host.name"),
        ] {
            if let Some(v) = get(attrs, otel).or_else(|| get(res, otel)) {
                put(d, ecs, value_to_string(v).into());
            }
        }
        let mut used: Vec<&str> = vec![
            "service.name",
            "service.version",
            "service.namespace",
            "service.instance.id",
            "host.name",
        ];
        for (keys, ecs, numeric) in [
            (
                &["http.request.method", "http.method"][..],
                "http.request.method",
                false,
            ),
            (
                &["http.response.status_code", "http.status_code"][..],
                "http.response.status_code",
                true,
            ),
            (&["url.full", "http.url"][..], "url.full", false),
        ] {
            if let Some(v) = keys.iter().find_map(|k| get(attrs, k)) {
                let j = if numeric {
                    match v {
                        AnyVal::IntValue(i) => json!(i),
                        other => value_to_string(other)
                            .parse::<i64>()
                            .map(Value::from)
                            .unwrap_or_else(|_| value_to_string(other).into()),
                    }
                } else {
                    value_to_string(v).into()
                };
                put(d, ecs, j);
            }
            used.extend_from_slice(keys);
        }
        let mut labels = Map::new();
        for kv in res.iter().chain(attrs) {
            if used.contains(&kv.key.as_str()) || kv.key.starts_with("data_stream.") {
                continue;
            }
            let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
                continue;
            };
            // ECS labels are flat keyword fields: no dots in their names.
            labels.insert(kv.key.replace('.', "_"), value_to_string(v).into());
        }
        if !labels.is_empty() {
            d.insert("labels".into(), Value::Object(labels));
        }
    }

    fn ecs_span(&self, ctx: &Ctx<'_>, s: &Span) -> (String, Option<String>, Value) {
        let (index, ds) = self.route(
            true,
            [&s.attributes, ctx.scope_attrs(), ctx.resource_attrs()],
        );
        let mut d = Map::new();
        d.insert(
            "@timestamp".into(),
            timestamp(s.start_time_unix_nano).into(),
        );
        if let Some(ds) = ds {
            d.insert("data_stream".into(), ds);
        }
        let span_id = hex_id(&s.span_id);
        put(&mut d, "trace.id", hex_id(&s.trace_id).into());
        put(&mut d, "span.id", span_id.clone().into());
        put(&mut d, "span.name", s.name.clone().into());
        let kind = span::SpanKind::try_from(s.kind).unwrap_or(span::SpanKind::Unspecified);
        let kind_name = kind.as_str_name().trim_start_matches("SPAN_KIND_");
        put(&mut d, "span.kind", kind_name.into());
        if !s.parent_span_id.is_empty() {
            put(&mut d, "parent.id", hex_id(&s.parent_span_id).into());
        }
        // Elastic APM's notion: entry spans (root, server, consumer) are transactions.
        if s.parent_span_id.is_empty()
            || matches!(kind, span::SpanKind::Server | span::SpanKind::Consumer)
        {
            put(&mut d, "transaction.id", span_id.into());
        }
        let outcome = match status_code(s.status.as_ref()) {
            status::StatusCode::Ok => "success",
            status::StatusCode::Error => "failure",
            status::StatusCode::Unset => "unknown",
        };
        put(&mut d, "event.outcome", outcome.into());
        put(
            &mut d,
            "event.duration",
            s.end_time_unix_nano
                .saturating_sub(s.start_time_unix_nano)
                .into(),
        );
        if let Some(m) = s.status.as_ref().filter(|st| !st.message.is_empty()) {
            d.insert("message".into(), m.message.clone().into());
        }
        self.ecs_common(&mut d, ctx, &s.attributes);
        (index, None, Value::Object(d))
    }

    fn ecs_log(&self, ctx: &Ctx<'_>, r: &LogRecord) -> (String, Value) {
        let (index, ds) = self.route(
            false,
            [&r.attributes, ctx.scope_attrs(), ctx.resource_attrs()],
        );
        let mut d = Map::new();
        let ts = if r.time_unix_nano > 0 {
            r.time_unix_nano
        } else {
            r.observed_time_unix_nano
        };
        d.insert("@timestamp".into(), timestamp(ts).into());
        if let Some(ds) = ds {
            d.insert("data_stream".into(), ds);
        }
        if let Some(body) = body_text(r.body.as_ref()) {
            d.insert("message".into(), body.into());
        }
        if !r.severity_text.is_empty() {
            put(&mut d, "log.level", r.severity_text.clone().into());
        }
        if r.severity_number != 0 {
            put(&mut d, "event.severity", r.severity_number.into());
        }
        if !r.trace_id.is_empty() {
            put(&mut d, "trace.id", hex_id(&r.trace_id).into());
        }
        if !r.span_id.is_empty() {
            put(&mut d, "span.id", hex_id(&r.span_id).into());
        }
        self.ecs_common(&mut d, ctx, &r.attributes);
        (index, Value::Object(d))
    }

    // ---- dataprepper ------------------------------------------------------------------

    fn dp_span(
        &self,
        ctx: &Ctx<'_>,
        s: &Span,
        groups: &HashMap<&[u8], TraceGroup>,
    ) -> (String, Option<String>, Value) {
        let index = self.fixed_index(true).unwrap_or_default();
        let span_id = hex_id(&s.span_id);
        let duration = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano);
        let mut d = Map::new();
        d.insert("traceId".into(), hex_id(&s.trace_id).into());
        d.insert("spanId".into(), span_id.clone().into());
        d.insert("traceState".into(), s.trace_state.clone().into());
        d.insert("parentSpanId".into(), hex_id(&s.parent_span_id).into());
        d.insert("name".into(), s.name.clone().into());
        d.insert(
            "kind".into(),
            span::SpanKind::try_from(s.kind)
                .unwrap_or(span::SpanKind::Unspecified)
                .as_str_name()
                .into(),
        );
        d.insert("startTime".into(), timestamp(s.start_time_unix_nano).into());
        d.insert("endTime".into(), timestamp(s.end_time_unix_nano).into());
        d.insert("durationInNanos".into(), duration.into());
        d.insert(
            "serviceName".into(),
            get(ctx.resource_attrs(), "service.name")
                .map(|v| Value::from(value_to_string(v)))
                .unwrap_or(Value::Null),
        );
        d.insert("events".into(), dp_events(s));
        d.insert("links".into(), dp_links(s));
        d.insert(
            "droppedAttributesCount".into(),
            s.dropped_attributes_count.into(),
        );
        d.insert("droppedEventsCount".into(), s.dropped_events_count.into());
        d.insert("droppedLinksCount".into(), s.dropped_links_count.into());
        match groups.get(&s.trace_id[..]) {
            Some(g) => {
                d.insert("traceGroup".into(), g.name.clone().into());
                d.insert("traceGroupFields.endTime".into(), timestamp(g.end).into());
                d.insert("traceGroupFields.durationInNanos".into(), g.duration.into());
                d.insert("traceGroupFields.statusCode".into(), g.status.into());
            }
            None => {
                d.insert("traceGroup".into(), Value::Null);
                d.insert("traceGroupFields.endTime".into(), Value::Null);
                d.insert("traceGroupFields.durationInNanos".into(), Value::Null);
                d.insert("traceGroupFields.statusCode".into(), Value::Null);
            }
        }
        d.insert(
            "status.code".into(),
            (status_code(s.status.as_ref()) as i32).into(),
        );
        if let Some(m) = s.status.as_ref().filter(|st| !st.message.is_empty()) {
            d.insert("status.message".into(), m.message.clone().into());
        }
        if let Some(sc) = ctx.scope {
            if !sc.name.is_empty() {
                d.insert("instrumentationScope.name".into(), sc.name.clone().into());
            }
            if !sc.version.is_empty() {
                d.insert(
                    "instrumentationScope.version".into(),
                    sc.version.clone().into(),
                );
            }
        }
        dp_attrs(&mut d, "span.attributes.", &s.attributes);
        dp_attrs(&mut d, "resource.attributes.", ctx.resource_attrs());
        (index, Some(span_id), Value::Object(d))
    }

    fn dp_log(&self, ctx: &Ctx<'_>, r: &LogRecord) -> (String, Value) {
        let index = self.fixed_index(false).unwrap_or_default();
        let mut d = Map::new();
        let ts = if r.time_unix_nano > 0 {
            r.time_unix_nano
        } else {
            r.observed_time_unix_nano
        };
        d.insert("@timestamp".into(), timestamp(ts).into());
        d.insert("time".into(), timestamp(r.time_unix_nano).into());
        d.insert(
            "observedTime".into(),
            timestamp(r.observed_time_unix_nano).into(),
        );
        d.insert("traceId".into(), hex_id(&r.trace_id).into());
        d.insert("spanId".into(), hex_id(&r.span_id).into());
        d.insert("flags".into(), r.flags.into());
        d.insert("severityText".into(), r.severity_text.clone().into());
        d.insert("severityNumber".into(), r.severity_number.into());
        d.insert(
            "body".into(),
            body_text(r.body.as_ref())
                .map(Value::from)
                .unwrap_or(Value::Null),
        );
        d.insert(
            "serviceName".into(),
            get(ctx.resource_attrs(), "service.name")
                .map(|v| Value::from(value_to_string(v)))
                .unwrap_or(Value::Null),
        );
        d.insert("schemaUrl".into(), ctx.scope_schema_url.into());
        d.insert(
            "droppedAttributesCount".into(),
            r.dropped_attributes_count.into(),
        );
        if let Some(sc) = ctx.scope {
            if !sc.name.is_empty() {
                d.insert("instrumentationScope.name".into(), sc.name.clone().into());
            }
            if !sc.version.is_empty() {
                d.insert(
                    "instrumentationScope.version".into(),
                    sc.version.clone().into(),
                );
            }
        }
        dp_attrs(&mut d, "log.attributes.", &r.attributes);
        dp_attrs(&mut d, "resource.attributes.", ctx.resource_attrs());
        (index, Value::Object(d))
    }
}

/// Data Prepper's flattening: `<prefix><key with every '.' replaced by '@'>`, so an
/// attribute never becomes an object path.
fn dp_attrs(d: &mut Map<String, Value>, prefix: &str, attrs: &[KeyValue]) {
    for kv in attrs {
        d.insert(
            format!("{prefix}{}", kv.key.replace('.', "@")),
            attr_json(kv),
        );
    }
}

fn dp_events(s: &Span) -> Value {
    Value::Array(
        s.events
            .iter()
            .map(|e| {
                json!({
                    "time": timestamp(e.time_unix_nano),
                    "name": e.name,
                    "attributes": Value::Object(attrs_object(&e.attributes)),
                    "droppedAttributesCount": e.dropped_attributes_count,
                })
            })
            .collect(),
    )
}

fn dp_links(s: &Span) -> Value {
    Value::Array(
        s.links
            .iter()
            .map(|l| {
                json!({
                    "traceId": hex_id(&l.trace_id),
                    "spanId": hex_id(&l.span_id),
                    "traceState": l.trace_state,
                    "attributes": Value::Object(attrs_object(&l.attributes)),
                    "droppedAttributesCount": l.dropped_attributes_count,
                })
            })
            .collect(),
    )
}

/// Root spans (no parent) of the batch, by trace id.
fn trace_groups(t: &meshgate_pdata::otlp::ExportTraceServiceRequest) -> HashMap<&[u8], TraceGroup> {
    let mut m = HashMap::new();
    for s in t
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .filter(|s| s.parent_span_id.is_empty())
    {
        m.insert(
            &s.trace_id[..],
            TraceGroup {
                name: s.name.clone(),
                end: s.end_time_unix_nano,
                duration: s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano),
                status: status_code(s.status.as_ref()) as i32,
            },
        );
    }
    m
}
