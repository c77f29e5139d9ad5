//! Zipkin v2 spans to OTLP, the way the OpenTelemetry Collector's `zipkin` receiver maps them
//! (pkg/translator/zipkin), with the differences listed on [`super`].

use super::model::{Endpoint, Kind, ZipkinSpan};
use meshgate_pdata::attributes::{kv, upsert};
use meshgate_pdata::otlp::{
    ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans, ScopeSpans,
    Span, Status, any_value::Value, span, status::StatusCode,
};
use std::collections::HashMap;

/// Resource attribute naming the local endpoint's service.
pub(crate) const SERVICE_NAME: &str = "service.name";
/// The local endpoint's IP address.
pub(crate) const LOCAL_ADDRESS: &str = "network.local.address";
/// The local endpoint's port.
pub(crate) const LOCAL_PORT: &str = "network.local.port";
/// The remote endpoint's service name: what the service graph names an unpaired client's
/// peer after.
pub(crate) const PEER_SERVICE: &str = "peer.service";
/// The remote endpoint's IP address.
pub(crate) const PEER_ADDRESS: &str = "network.peer.address";
/// The remote endpoint's port.
pub(crate) const PEER_PORT: &str = "network.peer.port";
/// `true` on a shared span (`"shared": true`): see [`super`].
pub(crate) const SHARED: &str = "zipkin.shared";
/// `true` when the span had no timestamp (the Collector's key): its start is the epoch.
pub(crate) const START_ABSENT: &str = "otel.zipkin.absentField.startTime";

/// How tags become attributes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// Type tag values that look like integers, doubles or booleans.
    pub parse_string_tags: bool,
}

/// Builds the OTLP request: one `ResourceSpans` per local service name (in order of first
/// appearance; spans without one share a resource without `service.name`), one `ScopeSpans`
/// per instrumentation scope named by `otel.scope.*`/`otel.library.*` tags.
pub(crate) fn to_otlp(
    spans: impl IntoIterator<Item = ZipkinSpan>,
    opts: Options,
) -> ExportTraceServiceRequest {
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut by_service: HashMap<String, usize> = HashMap::new();
    let mut no_service: Option<usize> = None;
    for mut z in spans {
        let service = z
            .local_endpoint
            .as_mut()
            .map(|e| std::mem::take(&mut e.service_name))
            .filter(|s| !s.is_empty());
        let (scope, otlp) = span_to_otlp(z, opts);
        let ri = match service {
            Some(name) => match by_service.get(name.as_str()) {
                Some(i) => *i,
                None => {
                    out.push(resource_spans(Some(name.clone())));
                    by_service.insert(name, out.len() - 1);
                    out.len() - 1
                }
            },
            None => *no_service.get_or_insert_with(|| {
                out.push(resource_spans(None));
                out.len() - 1
            }),
        };
        let scopes = &mut out[ri].scope_spans;
        let si = match scopes
            .iter()
            .position(|s| same_scope(s.scope.as_ref(), &scope))
        {
            Some(i) => i,
            None => {
                scopes.push(ScopeSpans {
                    scope: (!scope.name.is_empty() || !scope.version.is_empty()).then_some(scope),
                    ..Default::default()
                });
                scopes.len() - 1
            }
        };
        scopes[si].spans.push(otlp);
    }
    ExportTraceServiceRequest {
        resource_spans: out,
    }
}

fn resource_spans(service: Option<String>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: service
                .map(|s| vec![kv(SERVICE_NAME, Value::StringValue(s))])
                .unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn same_scope(have: Option<&InstrumentationScope>, want: &InstrumentationScope) -> bool {
    match have {
        Some(h) => h.name == want.name && h.version == want.version,
        None => want.name.is_empty() && want.version.is_empty(),
    }
}

/// The tags the translation consumes instead of copying them to attributes.
#[derive(Default)]
struct Special {
    trace_state: Option<String>,
    status_code: Option<String>,
    status_description: Option<String>,
    error: Option<String>,
    scope_name: Option<String>,
    library_name: Option<String>,
    scope_version: Option<String>,
    library_version: Option<String>,
    span_kind: Option<String>,
    links: Vec<(usize, String)>,
}

fn span_to_otlp(z: ZipkinSpan, opts: Options) -> (InstrumentationScope, Span) {
    let mut special = Special::default();
    let mut attributes: Vec<KeyValue> = Vec::with_capacity(z.tags.len() + 8);
    for (k, v) in z.tags {
        match k.as_str() {
            "w3c.tracestate" => special.trace_state = Some(v),
            "otel.status_code" => special.status_code = Some(v),
            "otel.status_description" => special.status_description = Some(v),
            "otel.scope.name" => special.scope_name = Some(v),
            "otel.library.name" => special.library_name = Some(v),
            "otel.scope.version" => special.scope_version = Some(v),
            "otel.library.version" => special.library_version = Some(v),
            "span.kind" if z.kind.is_none() && kind_from_tag(&v).is_some() => {
                special.span_kind = Some(v)
            }
            "error" => {
                special.error = Some(v.clone());
                attributes.push(tag(k, v, opts));
            }
            _ => match link_index(&k) {
                Some(i) => special.links.push((i, v)),
                None => attributes.push(tag(k, v, opts)),
            },
        }
    }

    let status = status(&mut special, &mut attributes, opts);
    let links = links(&mut special.links, &mut attributes, opts);
    let scope = InstrumentationScope {
        name: special
            .scope_name
            .or(special.library_name)
            .unwrap_or_default(),
        version: special
            .scope_version
            .or(special.library_version)
            .unwrap_or_default(),
        ..Default::default()
    };
    let kind = match z.kind {
        Some(k) => otlp_kind(k),
        None => special
            .span_kind
            .as_deref()
            .and_then(kind_from_tag)
            .unwrap_or(span::SpanKind::Internal),
    };

    if let Some(e) = &z.local_endpoint {
        endpoint_attributes(&mut attributes, e, None, LOCAL_ADDRESS, LOCAL_PORT);
    }
    if let Some(e) = &z.remote_endpoint {
        endpoint_attributes(
            &mut attributes,
            e,
            Some(PEER_SERVICE),
            PEER_ADDRESS,
            PEER_PORT,
        );
    }
    if z.shared {
        upsert(&mut attributes, SHARED, Value::BoolValue(true));
    }
    // `debug` is not mapped (see the module docs of `zipkin`).
    if z.timestamp == 0 {
        upsert(&mut attributes, START_ABSENT, Value::BoolValue(true));
    }

    let start = z.timestamp.saturating_mul(1000);
    let end = start.saturating_add(z.duration.saturating_mul(1000));
    let events = z
        .annotations
        .into_iter()
        .map(|a| event(a.timestamp.saturating_mul(1000), a.value))
        .collect();
    let span = Span {
        trace_id: z.trace_id.to_vec(),
        span_id: z.id.to_vec(),
        trace_state: special.trace_state.unwrap_or_default(),
        parent_span_id: z.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: z.name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        events,
        links,
        status,
        ..Default::default()
    };
    (scope, span)
}

fn otlp_kind(k: Kind) -> span::SpanKind {
    match k {
        Kind::Client => span::SpanKind::Client,
        Kind::Server => span::SpanKind::Server,
        Kind::Producer => span::SpanKind::Producer,
        Kind::Consumer => span::SpanKind::Consumer,
    }
}

/// A `span.kind` tag (OpenTracing style, or `internal` as the Collector's Zipkin exporter
/// writes for internal spans) on a span without `kind`.
fn kind_from_tag(v: &str) -> Option<span::SpanKind> {
    if v.eq_ignore_ascii_case("internal") {
        return Some(span::SpanKind::Internal);
    }
    Kind::parse(v).map(otlp_kind)
}

/// `otlp.link.<n>` (n < 128, the Collector's bound) → `Some(n)`.
fn link_index(key: &str) -> Option<usize> {
    let n: usize = key.strip_prefix("otlp.link.")?.parse().ok()?;
    (n < 128).then_some(n)
}

/// A tag as an attribute: a string, or typed under `parse_string_tags`.
fn tag(key: String, value: String, opts: Options) -> KeyValue {
    let v = if opts.parse_string_tags {
        typed(value)
    } else {
        Value::StringValue(value)
    };
    KeyValue {
        key,
        value: Some(meshgate_pdata::otlp::AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// The Collector's `parse_string_tags` rule: `-?\d+` an integer (when it fits), `-?\d+\.\d+`
/// a double, `true`/`false` a boolean, anything else stays a string.
fn typed(s: String) -> Value {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let unsigned = s.strip_prefix('-').unwrap_or(&s);
    if digits(unsigned) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::IntValue(i);
        }
    } else if let Some((int, frac)) = unsigned.split_once('.')
        && digits(int)
        && digits(frac)
        && let Ok(d) = s.parse::<f64>()
    {
        return Value::DoubleValue(d);
    }
    match s.as_str() {
        "true" => Value::BoolValue(true),
        "false" => Value::BoolValue(false),
        _ => Value::StringValue(s),
    }
}

/// The span status: an `otel.status_code` tag (`OK`/`ERROR`/`UNSET`, also spelled
/// `STATUS_CODE_*`) wins and is consumed with `otel.status_description`; otherwise an `error`
/// tag whose value is not `false` means ERROR, its value (unless empty or `true`) being the
/// message. The `error` tag itself stays an attribute.
fn status(special: &mut Special, attrs: &mut Vec<KeyValue>, opts: Options) -> Option<Status> {
    let error_message = special
        .error
        .as_deref()
        .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("true"));
    let error_set = special
        .error
        .as_deref()
        .is_some_and(|v| !v.eq_ignore_ascii_case("false"));
    if let Some(raw) = special.status_code.take() {
        let code = raw.trim();
        let code = code.strip_prefix("STATUS_CODE_").unwrap_or(code);
        let code = [
            ("UNSET", StatusCode::Unset),
            ("OK", StatusCode::Ok),
            ("ERROR", StatusCode::Error),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(code))
        .map(|(_, c)| c);
        match code {
            Some(StatusCode::Unset) if !error_set => {
                special.status_description = None;
                return None;
            }
            Some(StatusCode::Unset) => {
                special.status_description = None;
            }
            Some(code) => {
                let message = match special.status_description.take() {
                    Some(d) => d,
                    None if code == StatusCode::Error => {
                        error_message.unwrap_or_default().to_string()
                    }
                    None => String::new(),
                };
                return Some(Status {
                    code: code as i32,
                    message,
                });
            }
            None => {
                // Not a status we know: keep both tags as they came.
                attrs.push(tag("otel.status_code".into(), raw, opts));
                if let Some(d) = special.status_description.take() {
                    attrs.push(tag("otel.status_description".into(), d, opts));
                }
            }
        }
    } else if let Some(d) = special.status_description.take() {
        attrs.push(tag("otel.status_description".into(), d, opts));
    }
    error_set.then(|| Status {
        code: StatusCode::Error as i32,
        message: error_message.map(str::to_string).unwrap_or_default(),
    })
}

/// Span links from `otlp.link.<n>` tags, as the Collector's Zipkin exporter writes them:
/// `traceId|spanId|traceState|{json attributes}|droppedAttributesCount`. A tag that does not
/// parse stays an attribute.
fn links(
    raw: &mut Vec<(usize, String)>,
    attrs: &mut Vec<KeyValue>,
    opts: Options,
) -> Vec<span::Link> {
    raw.sort_by_key(|(i, _)| *i);
    let mut out = Vec::with_capacity(raw.len());
    for (i, v) in raw.drain(..) {
        match parse_link(&v) {
            Some(l) => out.push(l),
            None => attrs.push(tag(format!("otlp.link.{i}"), v, opts)),
        }
    }
    out
}

fn parse_link(v: &str) -> Option<span::Link> {
    let parts: Vec<&str> = v.split('|').collect();
    if parts.len() < 5 {
        return None;
    }
    let n = parts.len();
    let trace_id = optional_hex::<16>(parts[0])?;
    let span_id = optional_hex::<8>(parts[1])?;
    let attributes = json_attributes(&parts[3..n - 1].join("|"))?;
    let dropped = parts[n - 1].parse().ok()?;
    Some(span::Link {
        trace_id,
        span_id,
        trace_state: parts[2].to_string(),
        attributes,
        dropped_attributes_count: dropped,
        ..Default::default()
    })
}

/// Exactly `2 * N` hex digits, or empty.
fn optional_hex<const N: usize>(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    if s.len() != 2 * N {
        return None;
    }
    super::model::hex_id::<N>("link", s)
        .ok()
        .map(|b| b.to_vec())
}

/// An annotation as a span event. Plain annotations become an event named by their value.
/// Two encodings of events with attributes are read back: the OpenTelemetry SDKs' Zipkin
/// exporters write `{"<name>": {<attributes>}}` (the OpenTelemetry spec's mapping), the
/// Collector's Zipkin exporter `name|{<attributes>}|droppedAttributesCount`.
fn event(time_unix_nano: u64, value: String) -> span::Event {
    if let Some((name, attributes)) = parse_otel_event(&value) {
        return span::Event {
            time_unix_nano,
            name,
            attributes,
            ..Default::default()
        };
    }
    if let Some((name, attributes, dropped)) = parse_collector_event(&value) {
        return span::Event {
            time_unix_nano,
            name: name.to_string(),
            attributes,
            dropped_attributes_count: dropped,
        };
    }
    span::Event {
        time_unix_nano,
        name: value,
        ..Default::default()
    }
}

/// `{"<name>": {<attributes>}}`: exactly one key whose value is an object.
fn parse_otel_event(v: &str) -> Option<(String, Vec<KeyValue>)> {
    if !(v.starts_with('{') && v.ends_with('}')) {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(v).ok()?;
    if map.len() != 1 {
        return None;
    }
    let (name, attrs) = map.into_iter().next()?;
    match attrs {
        serde_json::Value::Object(attrs) => Some((name, attributes_of(attrs))),
        _ => None,
    }
}

fn parse_collector_event(v: &str) -> Option<(&str, Vec<KeyValue>, u32)> {
    let (name, rest) = v.split_once('|')?;
    let (json, dropped) = rest.rsplit_once('|')?;
    let dropped = dropped.parse().ok()?;
    Some((name, json_attributes(json)?, dropped))
}

/// A JSON object's attributes (see [`attributes_of`]), or `None` when `json` is not one.
fn json_attributes(json: &str) -> Option<Vec<KeyValue>> {
    if !json.starts_with('{') {
        return None;
    }
    serde_json::from_str(json).ok().map(attributes_of)
}

/// A JSON object's strings, numbers and booleans as attributes (integral numbers as
/// integers), the Collector's reading of its own encoding; arrays, objects and nulls are
/// left out.
fn attributes_of(map: serde_json::Map<String, serde_json::Value>) -> Vec<KeyValue> {
    map.into_iter()
        .filter_map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => Value::StringValue(s),
                serde_json::Value::Bool(b) => Value::BoolValue(b),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Value::IntValue(i),
                    None => {
                        let d = n.as_f64()?;
                        if d.fract() == 0.0 && d.abs() < i64::MAX as f64 {
                            Value::IntValue(d as i64)
                        } else {
                            Value::DoubleValue(d)
                        }
                    }
                },
                _ => return None,
            };
            Some(kv(&k, v))
        })
        .collect()
}

/// Endpoint attributes replace same-named tags (as in the Collector).
fn endpoint_attributes(
    attrs: &mut Vec<KeyValue>,
    e: &Endpoint,
    service_key: Option<&str>,
    address_key: &str,
    port_key: &str,
) {
    if let Some(key) = service_key
        && !e.service_name.is_empty()
    {
        upsert(attrs, key, Value::StringValue(e.service_name.clone()));
    }
    if let Some(a) = e.address() {
        upsert(attrs, address_key, Value::StringValue(a));
    }
    if e.port > 0 {
        upsert(attrs, port_key, Value::IntValue(e.port.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Annotation;
    use super::*;
    use meshgate_pdata::attributes::get;
    use std::net::Ipv4Addr;

    fn tags(t: &[(&str, &str)]) -> Vec<(String, String)> {
        t.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn zspan(id: u8, service: &str, t: &[(&str, &str)]) -> ZipkinSpan {
        ZipkinSpan {
            trace_id: [7; 16],
            id: [id; 8],
            name: format!("op{id}"),
            timestamp: 1_700_000_000_000_000,
            duration: 1500,
            local_endpoint: (!service.is_empty()).then(|| Endpoint {
                service_name: service.into(),
                ..Default::default()
            }),
            tags: tags(t),
            ..Default::default()
        }
    }

    fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a Value> {
        get(&s.attributes, k)
    }

    fn str_val(s: &str) -> Value {
        Value::StringValue(s.into())
    }

    fn one(z: ZipkinSpan, opts: Options) -> Span {
        let mut r = to_otlp([z], opts);
        assert_eq!(r.resource_spans.len(), 1);
        r.resource_spans
            .remove(0)
            .scope_spans
            .remove(0)
            .spans
            .remove(0)
    }

    /// What an Istio sidecar's Envoy sends with the Zipkin tracer: a shared SERVER span with
    /// string tags, an `error` tag and a 503 as a string.
    #[test]
    fn envoy_istio_server_span() {
        let mut z = zspan(
            2,
            "reviews.default",
            &[
                ("component", "proxy"),
                (
                    "node_id",
                    "sidecar~10.0.0.7~reviews-v1-abc.default~default.svc.cluster.local",
                ),
                ("http.status_code", "503"),
                ("http.method", "GET"),
                ("response_flags", "UF"),
                ("upstream_cluster", "inbound|9080||"),
                ("error", "true"),
                ("istio.canonical_service", "reviews"),
                ("istio.namespace", "default"),
                ("istio.mesh_id", "cluster.local"),
            ],
        );
        z.kind = Some(Kind::Server);
        z.parent_id = Some([1; 8]);
        z.shared = true;
        z.local_endpoint.as_mut().unwrap().ipv4 = Some(Ipv4Addr::new(10, 0, 0, 7));
        z.local_endpoint.as_mut().unwrap().port = 9080;
        z.remote_endpoint = Some(Endpoint {
            service_name: "productpage.default".into(),
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 9)),
            port: 45678,
            ..Default::default()
        });
        z.annotations = vec![Annotation {
            timestamp: 1_700_000_000_000_100,
            value: "wr".into(),
        }];
        let r = to_otlp([z], Options::default());
        let rs = &r.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes,
            vec![kv(SERVICE_NAME, str_val("reviews.default"))]
        );
        assert_eq!(
            rs.scope_spans[0].scope, None,
            "the Collector sets no scope either"
        );
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.span_id, vec![2; 8]);
        assert_eq!(s.parent_span_id, vec![1; 8]);
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.name, "op2");
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_001_500_000);
        let st = s.status.as_ref().unwrap();
        assert_eq!(
            (st.code, st.message.as_str()),
            (StatusCode::Error as i32, "")
        );
        // Tags stay strings, in order; the error tag is kept.
        assert_eq!(attr(s, "http.status_code"), Some(&str_val("503")));
        assert_eq!(attr(s, "error"), Some(&str_val("true")));
        assert_eq!(
            attr(s, "istio.canonical_service"),
            Some(&str_val("reviews"))
        );
        assert_eq!(s.attributes[0].key, "component");
        assert_eq!(attr(s, LOCAL_ADDRESS), Some(&str_val("10.0.0.7")));
        assert_eq!(attr(s, LOCAL_PORT), Some(&Value::IntValue(9080)));
        assert_eq!(attr(s, PEER_SERVICE), Some(&str_val("productpage.default")));
        assert_eq!(attr(s, PEER_ADDRESS), Some(&str_val("10.0.0.9")));
        assert_eq!(attr(s, PEER_PORT), Some(&Value::IntValue(45678)));
        assert_eq!(attr(s, SHARED), Some(&Value::BoolValue(true)));
        assert_eq!(attr(s, START_ABSENT), None);
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "wr");
        assert_eq!(s.events[0].time_unix_nano, 1_700_000_000_000_100_000);
        // The mesh failure rule agrees.
        assert!(meshgate_pdata::mesh::is_failed(s));
    }

    #[test]
    fn spans_are_grouped_by_local_service_and_scope() {
        let spans = vec![
            zspan(1, "a", &[]),
            zspan(
                2,
                "b",
                &[("otel.library.name", "lib"), ("otel.library.version", "1")],
            ),
            zspan(3, "a", &[("otel.scope.name", "s")]),
            zspan(4, "", &[]),
            zspan(5, "b", &[]),
            zspan(6, "a", &[]),
            zspan(7, "", &[]),
        ];
        let r = to_otlp(spans, Options::default());
        // (resource attributes, [(scope name@version, [first byte of each span id])])
        type Shape = Vec<(Vec<KeyValue>, Vec<(String, Vec<u8>)>)>;
        let shape: Shape = r
            .resource_spans
            .iter()
            .map(|rs| {
                (
                    rs.resource.as_ref().unwrap().attributes.clone(),
                    rs.scope_spans
                        .iter()
                        .map(|ss| {
                            (
                                ss.scope
                                    .as_ref()
                                    .map(|s| format!("{}@{}", s.name, s.version))
                                    .unwrap_or_default(),
                                ss.spans.iter().map(|s| s.span_id[0]).collect(),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (
                    vec![kv(SERVICE_NAME, str_val("a"))],
                    vec![(String::new(), vec![1, 6]), ("s@".into(), vec![3])]
                ),
                (
                    vec![kv(SERVICE_NAME, str_val("b"))],
                    vec![("lib@1".into(), vec![2]), (String::new(), vec![5])]
                ),
                (vec![], vec![(String::new(), vec![4, 7])]),
            ]
        );
        // Scope tags are consumed.
        assert!(
            r.resource_spans[1].scope_spans[0].spans[0]
                .attributes
                .is_empty()
        );
    }

    #[test]
    fn kinds_and_timestamps() {
        for (k, want) in [
            (Some(Kind::Client), span::SpanKind::Client),
            (Some(Kind::Server), span::SpanKind::Server),
            (Some(Kind::Producer), span::SpanKind::Producer),
            (Some(Kind::Consumer), span::SpanKind::Consumer),
            (None, span::SpanKind::Internal),
        ] {
            let mut z = zspan(1, "a", &[]);
            z.kind = k;
            assert_eq!(one(z, Options::default()).kind, want as i32);
        }
        // A span.kind tag on a kind-less span is used and consumed; an unknown one stays.
        let s = one(
            zspan(1, "a", &[("span.kind", "client")]),
            Options::default(),
        );
        assert_eq!(
            (s.kind, s.attributes.len()),
            (span::SpanKind::Client as i32, 0)
        );
        let s = one(zspan(1, "a", &[("span.kind", "weird")]), Options::default());
        assert_eq!(s.kind, span::SpanKind::Internal as i32);
        assert_eq!(attr(&s, "span.kind"), Some(&str_val("weird")));
        // No timestamp: start at the epoch, flagged as the Collector does.
        let mut z = zspan(1, "a", &[]);
        z.timestamp = 0;
        let s = one(z, Options::default());
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (0, 1_500_000)
        );
        assert_eq!(attr(&s, START_ABSENT), Some(&Value::BoolValue(true)));
    }

    #[test]
    fn status_rules() {
        let st = |t: &[(&str, &str)]| {
            let s = one(zspan(1, "a", t), Options::default());
            (
                s.status.map(|s| (s.code, s.message)),
                s.attributes
                    .iter()
                    .map(|kv| kv.key.clone())
                    .collect::<Vec<_>>(),
            )
        };
        let err = StatusCode::Error as i32;
        let ok = StatusCode::Ok as i32;
        assert_eq!(st(&[]), (None, vec![]));
        assert_eq!(
            st(&[("error", "true")]),
            (Some((err, "".into())), vec!["error".into()])
        );
        assert_eq!(
            st(&[("error", "")]),
            (Some((err, "".into())), vec!["error".into()])
        );
        assert_eq!(
            st(&[("error", "connection refused")]),
            (
                Some((err, "connection refused".into())),
                vec!["error".into()]
            )
        );
        assert_eq!(st(&[("error", "false")]), (None, vec!["error".into()]));
        // What OpenTelemetry SDKs' Zipkin exporters write.
        assert_eq!(
            st(&[("otel.status_code", "ERROR"), ("error", "boom")]),
            (Some((err, "boom".into())), vec!["error".into()])
        );
        assert_eq!(
            st(&[
                ("otel.status_code", "STATUS_CODE_ERROR"),
                ("otel.status_description", "bad")
            ]),
            (Some((err, "bad".into())), vec![])
        );
        // An explicit OK wins over an error tag, as in the mesh failure rule.
        assert_eq!(
            st(&[("otel.status_code", "ok"), ("error", "true")]),
            (Some((ok, "".into())), vec!["error".into()])
        );
        assert_eq!(st(&[("otel.status_code", "UNSET")]), (None, vec![]));
        assert_eq!(
            st(&[("otel.status_code", "UNSET"), ("error", "x")]),
            (Some((err, "x".into())), vec!["error".into()])
        );
        assert_eq!(
            st(&[
                ("otel.status_code", "MAYBE"),
                ("otel.status_description", "d")
            ]),
            (
                None,
                vec!["otel.status_code".into(), "otel.status_description".into()]
            )
        );
    }

    #[test]
    fn parse_string_tags_types_values_like_the_collector() {
        let t = [
            ("int", "-42"),
            ("big", "99999999999999999999"),
            ("double", "2.5"),
            ("exp", "1e3"),
            ("bool", "true"),
            ("Bool", "True"),
            ("str", "hello"),
            ("empty", ""),
            ("dot", "1."),
            ("error", "true"),
        ];
        let s = one(
            zspan(1, "a", &t),
            Options {
                parse_string_tags: true,
            },
        );
        assert_eq!(attr(&s, "int"), Some(&Value::IntValue(-42)));
        assert_eq!(attr(&s, "big"), Some(&str_val("99999999999999999999")));
        assert_eq!(attr(&s, "double"), Some(&Value::DoubleValue(2.5)));
        assert_eq!(attr(&s, "exp"), Some(&str_val("1e3")));
        assert_eq!(attr(&s, "bool"), Some(&Value::BoolValue(true)));
        assert_eq!(attr(&s, "Bool"), Some(&str_val("True")));
        assert_eq!(attr(&s, "str"), Some(&str_val("hello")));
        assert_eq!(attr(&s, "empty"), Some(&str_val("")));
        assert_eq!(attr(&s, "dot"), Some(&str_val("1.")));
        assert_eq!(attr(&s, "error"), Some(&Value::BoolValue(true)));
        assert_eq!(s.status.unwrap().code, StatusCode::Error as i32);
        let s = one(zspan(1, "a", &t), Options::default());
        assert_eq!(attr(&s, "int"), Some(&str_val("-42")));
    }

    #[test]
    fn endpoints_trace_state_and_tag_overrides() {
        let mut z = zspan(
            1,
            "a",
            &[("peer.service", "from-tag"), ("w3c.tracestate", "k=v")],
        );
        z.remote_endpoint = Some(Endpoint {
            service_name: "db".into(),
            ipv6: Some("::1".parse().unwrap()),
            ..Default::default()
        });
        let s = one(z, Options::default());
        assert_eq!(s.trace_state, "k=v");
        assert_eq!(attr(&s, PEER_SERVICE), Some(&str_val("db")));
        assert_eq!(attr(&s, PEER_ADDRESS), Some(&str_val("::1")));
        assert_eq!(attr(&s, PEER_PORT), None);
        assert_eq!(
            s.attributes
                .iter()
                .filter(|kv| kv.key == PEER_SERVICE)
                .count(),
            1
        );
    }

    #[test]
    fn collector_encoded_events_and_links_are_read_back() {
        let mut z = zspan(
            1,
            "a",
            &[
                (
                    "otlp.link.1",
                    "0102030405060708090a0b0c0d0e0f10|1112131415161718|s=1|{\"k\":\"v\",\"n\":3}|2",
                ),
                ("otlp.link.0", "|||{}|0"),
                ("otlp.link.2", "garbage"),
            ],
        );
        z.annotations = vec![
            Annotation {
                timestamp: 5,
                value: "exception|{\"exception.message\":\"x|y\",\"n\":1.5,\"ok\":true}|0".into(),
            },
            Annotation {
                timestamp: 6,
                value: "a|b".into(),
            },
        ];
        let s = one(z, Options::default());
        assert_eq!(s.links.len(), 2);
        assert!(s.links[0].trace_id.is_empty());
        assert_eq!(s.links[1].trace_id[0], 1);
        assert_eq!(s.links[1].span_id[7], 0x18);
        assert_eq!(s.links[1].trace_state, "s=1");
        assert_eq!(s.links[1].dropped_attributes_count, 2);
        assert_eq!(get(&s.links[1].attributes, "n"), Some(&Value::IntValue(3)));
        assert_eq!(attr(&s, "otlp.link.2"), Some(&str_val("garbage")));
        assert_eq!(s.events[0].name, "exception");
        assert_eq!(s.events[0].time_unix_nano, 5000);
        assert_eq!(
            get(&s.events[0].attributes, "exception.message"),
            Some(&str_val("x|y"))
        );
        assert_eq!(
            get(&s.events[0].attributes, "n"),
            Some(&Value::DoubleValue(1.5))
        );
        assert_eq!(
            get(&s.events[0].attributes, "ok"),
            Some(&Value::BoolValue(true))
        );
        assert_eq!(s.events[1].name, "a|b");
        assert!(s.events[1].attributes.is_empty());
    }

    #[test]
    fn opentelemetry_encoded_events_are_read_back() {
        let mut z = zspan(1, "a", &[]);
        let ann = |v: &str| Annotation {
            timestamp: 1,
            value: v.into(),
        };
        z.annotations = vec![
            ann(r#"{"retry": {"attempt": 2, "why": "reset"}}"#),
            ann(r#"{"a": 1}"#),
            ann(r#"{"a": {}, "b": {}}"#),
            ann("{not json}"),
        ];
        let s = one(z, Options::default());
        let names: Vec<&str> = s.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "retry",
                r#"{"a": 1}"#,
                r#"{"a": {}, "b": {}}"#,
                "{not json}"
            ]
        );
        assert_eq!(
            get(&s.events[0].attributes, "attempt"),
            Some(&Value::IntValue(2))
        );
        assert_eq!(get(&s.events[0].attributes, "why"), Some(&str_val("reset")));
    }
}
