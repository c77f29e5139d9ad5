//! OTLP traces to Jaeger's `api_v2` model, as Jaeger shows OTLP data today.
//!
//! - Each resource becomes a process: `service.name` is the service name (`unknown_service`
//!   when absent), the other resource attributes are process tags. Resources with identical
//!   processes share one batch.
//! - A span keeps its 128-bit trace id and 64-bit span id; its name is the operation name;
//!   the parent becomes a `CHILD_OF` reference, each link a `FOLLOWS_FROM` reference (or
//!   `CHILD_OF` when the link carries `opentracing.ref_type: child_of`, as Jaeger's own
//!   OTLP→Jaeger conversion does).
//! - Tags, in this order: `otel.scope.name` / `otel.scope.version`, the span's attributes
//!   (strings, booleans, integers and doubles keep their type, bytes are `BINARY`, arrays and
//!   maps are JSON strings), `span.kind`, `otel.status_code` (`OK` / `ERROR`), `error=true`
//!   on error, `otel.status_description`, `w3c.tracestate`.
//! - Events become logs: an `event` field with the event's name, then its attributes.
//! - `flags` is 1 (sampled): a span that reached an exporter was recorded.

use super::model::{self, KeyValue, SpanRefType};
use meshgate_pdata::attributes;
use meshgate_pdata::otlp::{self, ExportTraceServiceRequest, any_value::Value};

/// Service name of a resource without `service.name` (the OpenTelemetry default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Link attribute naming an OpenTracing reference type (`child_of` / `follows_from`).
const REF_TYPE_ATTRIBUTE: &str = "opentracing.ref_type";

/// The request's spans grouped into one batch per distinct process, in order of first
/// appearance. Resources without spans produce no batch.
pub fn batches(req: &ExportTraceServiceRequest) -> Vec<model::Batch> {
    let mut out: Vec<model::Batch> = Vec::new();
    for rs in &req.resource_spans {
        let spans: Vec<model::Span> = rs
            .scope_spans
            .iter()
            .flat_map(|ss| ss.spans.iter().map(move |s| span(s, ss.scope.as_ref())))
            .collect();
        if spans.is_empty() {
            continue;
        }
        let process = process(rs.resource.as_ref());
        match out
            .iter_mut()
            .find(|b| b.process.as_ref() == Some(&process))
        {
            Some(b) => b.spans.extend(spans),
            None => out.push(model::Batch {
                spans,
                process: Some(process),
            }),
        }
    }
    out
}

/// One `PostSpans` request carrying every span of `req`, so a payload is one RPC and a retry
/// never resends spans that an earlier RPC delivered. The first process is the batch's; spans
/// of the other processes carry their own (`Span.process` takes priority over
/// `Batch.process` in Jaeger's collectors). `None` when there are no spans.
pub fn post_spans_request(req: &ExportTraceServiceRequest) -> Option<model::PostSpansRequest> {
    let mut batches = batches(req).into_iter();
    let mut batch = batches.next()?;
    for b in batches {
        let process = b.process;
        batch.spans.extend(b.spans.into_iter().map(|mut s| {
            s.process = process.clone();
            s
        }));
    }
    Some(model::PostSpansRequest { batch: Some(batch) })
}

/// The process of a resource.
pub fn process(resource: Option<&otlp::Resource>) -> model::Process {
    let attrs = resource
        .map(|r| r.attributes.as_slice())
        .unwrap_or_default();
    let service_name = attributes::get(attrs, "service.name")
        .map(attributes::value_to_string)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_string());
    model::Process {
        service_name,
        tags: attrs
            .iter()
            .filter(|kv| kv.key != "service.name")
            .map(tag)
            .collect(),
    }
}

/// An attribute as a Jaeger tag.
pub fn tag(kv: &otlp::KeyValue) -> KeyValue {
    let key = kv.key.clone();
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        None => KeyValue::string(key, ""),
        Some(Value::StringValue(s)) => KeyValue::string(key, s.clone()),
        Some(Value::BoolValue(b)) => KeyValue::bool(key, *b),
        Some(Value::IntValue(i)) => KeyValue::int64(key, *i),
        Some(Value::DoubleValue(d)) => KeyValue::float64(key, *d),
        Some(Value::BytesValue(b)) => KeyValue::binary(key, b.clone()),
        // Arrays and maps as JSON; a string index is meaningless outside profiles.
        Some(v) => KeyValue::string(key, attributes::value_to_string(v)),
    }
}

/// `bytes` as a fixed-width big-endian id: shorter input is left-padded with zeros, longer
/// input keeps its last `width` bytes.
fn id(bytes: &[u8], width: usize) -> Vec<u8> {
    if bytes.len() >= width {
        return bytes[bytes.len() - width..].to_vec();
    }
    let mut v = vec![0; width - bytes.len()];
    v.extend_from_slice(bytes);
    v
}

fn is_unset(id: &[u8]) -> bool {
    id.iter().all(|b| *b == 0)
}

fn timestamp(unix_nanos: u64) -> model::Timestamp {
    model::Timestamp {
        seconds: (unix_nanos / 1_000_000_000) as i64,
        nanos: (unix_nanos % 1_000_000_000) as i32,
    }
}

fn duration(nanos: u64) -> model::Duration {
    model::Duration {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

fn span_kind(kind: i32) -> Option<&'static str> {
    use otlp::span::SpanKind;
    match SpanKind::try_from(kind).ok()? {
        SpanKind::Client => Some("client"),
        SpanKind::Server => Some("server"),
        SpanKind::Producer => Some("producer"),
        SpanKind::Consumer => Some("consumer"),
        SpanKind::Internal => Some("internal"),
        SpanKind::Unspecified => None,
    }
}

/// One OTLP span as a Jaeger span (without process).
pub fn span(s: &otlp::Span, scope: Option<&otlp::InstrumentationScope>) -> model::Span {
    use otlp::status::StatusCode;
    let trace_id = id(&s.trace_id, 16);

    let mut references = Vec::with_capacity(s.links.len() + 1);
    // The parent first: Jaeger takes the first CHILD_OF reference as the parent.
    if !is_unset(&s.parent_span_id) {
        references.push(model::SpanRef {
            trace_id: trace_id.clone(),
            span_id: id(&s.parent_span_id, 8),
            ref_type: SpanRefType::ChildOf as i32,
        });
    }
    for l in &s.links {
        let child_of = attributes::get_str(&l.attributes, REF_TYPE_ATTRIBUTE)
            .is_some_and(|t| t.eq_ignore_ascii_case("child_of"));
        references.push(model::SpanRef {
            trace_id: id(&l.trace_id, 16),
            span_id: id(&l.span_id, 8),
            ref_type: if child_of {
                SpanRefType::ChildOf
            } else {
                SpanRefType::FollowsFrom
            } as i32,
        });
    }

    let mut tags = Vec::with_capacity(s.attributes.len() + 6);
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            tags.push(KeyValue::string("otel.scope.name", scope.name.clone()));
        }
        if !scope.version.is_empty() {
            tags.push(KeyValue::string(
                "otel.scope.version",
                scope.version.clone(),
            ));
        }
    }
    tags.extend(s.attributes.iter().map(tag));
    if let Some(kind) = span_kind(s.kind) {
        tags.push(KeyValue::string("span.kind", kind));
    }
    let (code, message) = s
        .status
        .as_ref()
        .map(|st| (st.code, st.message.as_str()))
        .unwrap_or((StatusCode::Unset as i32, ""));
    match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => tags.push(KeyValue::string("otel.status_code", "OK")),
        Ok(StatusCode::Error) => {
            tags.push(KeyValue::string("otel.status_code", "ERROR"));
            tags.push(KeyValue::bool("error", true));
        }
        _ => {}
    }
    if !message.is_empty() {
        tags.push(KeyValue::string("otel.status_description", message));
    }
    if !s.trace_state.is_empty() {
        tags.push(KeyValue::string("w3c.tracestate", s.trace_state.clone()));
    }

    let logs = s
        .events
        .iter()
        .map(|e| {
            let mut fields = Vec::with_capacity(e.attributes.len() + 1);
            if !e.name.is_empty() {
                fields.push(KeyValue::string("event", e.name.clone()));
            }
            fields.extend(e.attributes.iter().map(tag));
            model::Log {
                timestamp: Some(timestamp(e.time_unix_nano)),
                fields,
            }
        })
        .collect();

    model::Span {
        trace_id,
        span_id: id(&s.span_id, 8),
        operation_name: s.name.clone(),
        references,
        flags: 1,
        start_time: Some(timestamp(s.start_time_unix_nano)),
        duration: Some(duration(
            s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano),
        )),
        tags,
        logs,
        process: None,
        process_id: String::new(),
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_pdata::attributes::{kv, kv_str};
    use meshgate_pdata::otlp::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValueList, Resource, ResourceSpans,
        ScopeSpans, Span, Status, span, status,
    };

    fn tag_of<'a>(tags: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
        tags.iter().find(|t| t.key == key)
    }

    fn trace_id() -> Vec<u8> {
        (0x10..0x20).collect()
    }

    fn request() -> ExportTraceServiceRequest {
        let array = Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(Value::StringValue("a".into())),
                },
                AnyValue {
                    value: Some(Value::IntValue(2)),
                },
            ],
        });
        let map = Value::KvlistValue(KeyValueList {
            values: vec![kv("k", Value::BoolValue(true))],
        });
        let server = Span {
            trace_id: trace_id(),
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            parent_span_id: vec![9; 8],
            trace_state: "vendor=x".into(),
            name: "GET /cart".into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_123_456_789,
            end_time_unix_nano: 1_700_000_001_223_456_789,
            attributes: vec![
                kv_str("http.method", "GET"),
                kv("http.status_code", Value::IntValue(500)),
                kv("ratio", Value::DoubleValue(0.25)),
                kv("cached", Value::BoolValue(false)),
                kv("blob", Value::BytesValue(vec![0xde, 0xad])),
                kv("list", array),
                kv("map", map),
            ],
            events: vec![span::Event {
                time_unix_nano: 1_700_000_000_500_000_000,
                name: "exception".into(),
                attributes: vec![kv_str("exception.message", "boom")],
                dropped_attributes_count: 0,
            }],
            links: vec![
                span::Link {
                    trace_id: vec![0xaa; 16],
                    span_id: vec![0xbb; 8],
                    ..Default::default()
                },
                span::Link {
                    trace_id: vec![0xcc; 16],
                    span_id: vec![0xdd; 8],
                    attributes: vec![kv_str("opentracing.ref_type", "child_of")],
                    ..Default::default()
                },
            ],
            status: Some(Status {
                code: status::StatusCode::Error as i32,
                message: "upstream reset".into(),
            }),
            ..Default::default()
        };
        let root = Span {
            trace_id: trace_id(),
            span_id: vec![9; 8],
            name: "ingress".into(),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_002_000_000_000,
            status: Some(Status {
                code: status::StatusCode::Ok as i32,
                message: String::new(),
            }),
            ..Default::default()
        };
        let resource = |service: Option<&str>| Resource {
            attributes: service
                .map(|s| kv_str("service.name", s))
                .into_iter()
                .chain([kv_str("host.name", "node-1"), kv("pid", Value::IntValue(7))])
                .collect(),
            ..Default::default()
        };
        let scoped = |spans: Vec<Span>| ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "envoy".into(),
                version: "1.31".into(),
                ..Default::default()
            }),
            spans,
            schema_url: String::new(),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(resource(Some("cart"))),
                    scope_spans: vec![scoped(vec![server])],
                    schema_url: String::new(),
                },
                ResourceSpans {
                    resource: Some(resource(None)),
                    scope_spans: vec![ScopeSpans {
                        scope: None,
                        spans: vec![root],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                },
                // Same process as the first: merged into its batch.
                ResourceSpans {
                    resource: Some(resource(Some("cart"))),
                    scope_spans: vec![scoped(vec![Span {
                        trace_id: vec![3; 16],
                        span_id: vec![4; 8],
                        name: "third".into(),
                        ..Default::default()
                    }])],
                    schema_url: String::new(),
                },
                // No spans: no batch.
                ResourceSpans {
                    resource: Some(resource(Some("idle"))),
                    scope_spans: vec![],
                    schema_url: String::new(),
                },
            ],
        }
    }

    #[test]
    fn groups_spans_per_process() {
        let b = batches(&request());
        assert_eq!(b.len(), 2);
        let p0 = b[0].process.as_ref().unwrap();
        assert_eq!(p0.service_name, "cart");
        assert_eq!(
            p0.tags,
            [
                KeyValue::string("host.name", "node-1"),
                KeyValue::int64("pid", 7)
            ]
        );
        let names: Vec<_> = b[0].spans.iter().map(|s| &s.operation_name).collect();
        assert_eq!(names, ["GET /cart", "third"]);
        let p1 = b[1].process.as_ref().unwrap();
        assert_eq!(p1.service_name, UNKNOWN_SERVICE);
        assert_eq!(p1.tags.len(), 2);
        assert!(b.iter().flat_map(|b| &b.spans).all(|s| s.process.is_none()));
    }

    #[test]
    fn maps_ids_references_and_times() {
        let b = batches(&request());
        let s = &b[0].spans[0];
        assert_eq!(s.trace_id, trace_id(), "128-bit trace id kept as 16 bytes");
        assert_eq!(s.span_id, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(s.operation_name, "GET /cart");
        assert_eq!(s.flags, 1);
        assert_eq!(
            s.start_time,
            Some(model::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789
            })
        );
        assert_eq!(
            s.duration,
            Some(model::Duration {
                seconds: 1,
                nanos: 100_000_000
            })
        );
        assert_eq!(
            s.references,
            [
                model::SpanRef {
                    trace_id: trace_id(),
                    span_id: vec![9; 8],
                    ref_type: SpanRefType::ChildOf as i32
                },
                model::SpanRef {
                    trace_id: vec![0xaa; 16],
                    span_id: vec![0xbb; 8],
                    ref_type: SpanRefType::FollowsFrom as i32
                },
                model::SpanRef {
                    trace_id: vec![0xcc; 16],
                    span_id: vec![0xdd; 8],
                    ref_type: SpanRefType::ChildOf as i32
                },
            ]
        );
        // The root has no references; an empty span keeps fixed-width ids and no duration.
        assert!(b[1].spans[0].references.is_empty());
        let third = &b[0].spans[1];
        assert_eq!(third.trace_id, vec![3; 16]);
        assert_eq!(third.duration, Some(model::Duration::default()));
    }

    #[test]
    fn maps_tags() {
        let b = batches(&request());
        let tags = &b[0].spans[0].tags;
        let keys: Vec<_> = tags.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "otel.scope.name",
                "otel.scope.version",
                "http.method",
                "http.status_code",
                "ratio",
                "cached",
                "blob",
                "list",
                "map",
                "span.kind",
                "otel.status_code",
                "error",
                "otel.status_description",
                "w3c.tracestate",
            ]
        );
        let t = |k| tag_of(tags, k).unwrap().clone();
        assert_eq!(
            t("otel.scope.name"),
            KeyValue::string("otel.scope.name", "envoy")
        );
        assert_eq!(
            t("otel.scope.version"),
            KeyValue::string("otel.scope.version", "1.31")
        );
        assert_eq!(t("http.method"), KeyValue::string("http.method", "GET"));
        assert_eq!(
            t("http.status_code"),
            KeyValue::int64("http.status_code", 500)
        );
        assert_eq!(t("ratio"), KeyValue::float64("ratio", 0.25));
        assert_eq!(t("cached"), KeyValue::bool("cached", false));
        assert_eq!(t("blob"), KeyValue::binary("blob", vec![0xde, 0xad]));
        assert_eq!(t("list"), KeyValue::string("list", r#"["a",2]"#));
        assert_eq!(t("map"), KeyValue::string("map", r#"{"k":true}"#));
        assert_eq!(t("span.kind"), KeyValue::string("span.kind", "server"));
        assert_eq!(
            t("otel.status_code"),
            KeyValue::string("otel.status_code", "ERROR")
        );
        assert_eq!(t("error"), KeyValue::bool("error", true));
        assert_eq!(
            t("otel.status_description"),
            KeyValue::string("otel.status_description", "upstream reset")
        );
        assert_eq!(
            t("w3c.tracestate"),
            KeyValue::string("w3c.tracestate", "vendor=x")
        );

        // OK status: status code only; unspecified kind, no scope: no such tags.
        let root = &b[1].spans[0].tags;
        assert_eq!(root, &[KeyValue::string("otel.status_code", "OK")]);
        // Unset status: nothing.
        assert!(tag_of(&b[0].spans[1].tags, "otel.status_code").is_none());
        assert!(tag_of(&b[0].spans[1].tags, "span.kind").is_none());
    }

    #[test]
    fn span_kinds() {
        for (k, want) in [
            (span::SpanKind::Client, Some("client")),
            (span::SpanKind::Server, Some("server")),
            (span::SpanKind::Producer, Some("producer")),
            (span::SpanKind::Consumer, Some("consumer")),
            (span::SpanKind::Internal, Some("internal")),
            (span::SpanKind::Unspecified, None),
        ] {
            let s = span(
                &Span {
                    kind: k as i32,
                    ..Default::default()
                },
                None,
            );
            assert_eq!(tag_of(&s.tags, "span.kind").map(|t| t.v_str.as_str()), want);
        }
    }

    #[test]
    fn events_become_logs() {
        let b = batches(&request());
        let logs = &b[0].spans[0].logs;
        assert_eq!(
            logs,
            &[model::Log {
                timestamp: Some(model::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 500_000_000
                }),
                fields: vec![
                    KeyValue::string("event", "exception"),
                    KeyValue::string("exception.message", "boom"),
                ],
            }]
        );
    }

    #[test]
    fn short_ids_are_padded() {
        let s = span(
            &Span {
                trace_id: vec![1; 8],
                span_id: vec![2; 4],
                parent_span_id: vec![0; 8],
                ..Default::default()
            },
            None,
        );
        assert_eq!(s.trace_id, [vec![0; 8], vec![1; 8]].concat());
        assert_eq!(s.span_id, [0, 0, 0, 0, 2, 2, 2, 2]);
        assert!(s.references.is_empty(), "an all-zero parent is no parent");
    }

    #[test]
    fn one_request_per_payload_with_per_span_processes() {
        let req = post_spans_request(&request()).unwrap();
        let batch = req.batch.unwrap();
        assert_eq!(batch.process.as_ref().unwrap().service_name, "cart");
        let spans: Vec<_> = batch
            .spans
            .iter()
            .map(|s| {
                (
                    s.operation_name.as_str(),
                    s.process.as_ref().map(|p| p.service_name.as_str()),
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                ("GET /cart", None),
                ("third", None),
                ("ingress", Some(UNKNOWN_SERVICE))
            ]
        );
        assert!(post_spans_request(&ExportTraceServiceRequest::default()).is_none());
    }

    /// The native exporter caps batches at a quarter of `max_request_size` (measured as
    /// OTLP) so that the Jaeger encoding, which repeats scope and status tags on every span,
    /// still fits: even bare spans under a long scope name stay below four times their OTLP
    /// size.
    #[test]
    fn jaeger_encoding_stays_under_four_times_otlp() {
        use prost::Message;
        let meshgate_pdata::Payload::Traces(mut t) = crate::common::testutil::traces(200) else {
            unreachable!()
        };
        let typical = post_spans_request(&t).unwrap().encode_to_vec().len();
        assert!(
            typical < 2 * t.encoded_len(),
            "{typical} vs {}",
            t.encoded_len()
        );
        let ss = &mut t.resource_spans[0].scope_spans[0];
        ss.scope = Some(InstrumentationScope {
            name: "io.opentelemetry.instrumentation.spring-webmvc-6.0".into(),
            version: "2.10.0-alpha".into(),
            ..Default::default()
        });
        for s in &mut ss.spans {
            s.attributes.clear();
            s.name = "x".into();
            s.kind = span::SpanKind::Server as i32;
            s.parent_span_id = vec![3; 8];
        }
        let bare = post_spans_request(&t).unwrap().encode_to_vec().len();
        assert!(bare < 4 * t.encoded_len(), "{bare} vs {}", t.encoded_len());
    }
}
