//! Cutting a payload into one share per owning endpoint, keeping each item's resource and
//! scope (a share is a valid OTLP request of its own).

use super::config::RoutingKey;
use super::ring::{KeyHasher, Ring, hash_bytes};
use meshgate_pdata::Payload;
use meshgate_pdata::attributes::get_str;
use meshgate_pdata::otlp::{
    ExportLogsServiceRequest, ExportTraceServiceRequest, LogRecord, Resource, ResourceLogs,
    ResourceSpans, ScopeLogs, ScopeSpans, any_value,
};

/// The routing key hash of a resource's service (`service.name`, empty when absent).
fn service_hash(resource: Option<&Resource>) -> u64 {
    let name = resource
        .and_then(|r| get_str(&r.attributes, "service.name"))
        .unwrap_or("");
    hash_bytes(name.as_bytes())
}

/// Whether a trace id identifies a trace (present and not all zeros).
fn has_trace_id(id: &[u8]) -> bool {
    !id.is_empty() && id.iter().any(|b| *b != 0)
}

/// The routing key hash of a log record without a trace id: its timestamps, severity and
/// string body, so the same record always goes to the same endpoint (on every instance and
/// every retry) while records spread evenly.
fn untraced_log_hash(r: &LogRecord) -> u64 {
    let mut h = KeyHasher::default();
    h.write_u64(r.time_unix_nano);
    h.write_u64(r.observed_time_unix_nano);
    h.write_u64(r.severity_number as u64);
    h.write(r.severity_text.as_bytes());
    if let Some(any_value::Value::StringValue(s)) = r.body.as_ref().and_then(|b| b.value.as_ref()) {
        h.write(s.as_bytes());
    }
    h.finish()
}

/// The routing key hash of a log record under `traceID` routing: its trace id (the same hash
/// as its trace's spans, so logs meet their trace), else [`untraced_log_hash`].
fn log_hash(r: &LogRecord) -> u64 {
    if has_trace_id(&r.trace_id) {
        hash_bytes(&r.trace_id)
    } else {
        untraced_log_hash(r)
    }
}

/// Splits `data` over the ring: `(owner index, share)` for every endpoint that owns at least
/// one item, in endpoint order. Metrics are not routed (the caller refuses them).
pub fn split(data: &Payload, ring: &Ring, key: RoutingKey) -> Vec<(usize, Payload)> {
    if ring.is_empty() || data.is_empty() {
        return Vec::new();
    }
    match data {
        Payload::Traces(t) => split_traces(t, ring, key)
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, r)| {
                (
                    i,
                    Payload::Traces(ExportTraceServiceRequest { resource_spans: r }),
                )
            })
            .collect(),
        Payload::Logs(l) => split_logs(l, ring, key)
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, r)| {
                (
                    i,
                    Payload::Logs(ExportLogsServiceRequest { resource_logs: r }),
                )
            })
            .collect(),
        Payload::Metrics(_) => Vec::new(),
    }
}

fn split_traces(
    t: &ExportTraceServiceRequest,
    ring: &Ring,
    key: RoutingKey,
) -> Vec<Vec<ResourceSpans>> {
    let n = ring.len();
    let mut out: Vec<Vec<ResourceSpans>> = vec![Vec::new(); n];
    for rs in &t.resource_spans {
        if key == RoutingKey::Service || n == 1 {
            let owner = if n == 1 {
                0
            } else {
                ring.owner(service_hash(rs.resource.as_ref()))
            };
            out[owner].push(rs.clone());
            continue;
        }
        // Per owner: the scopes of this resource that hold some of its spans.
        let mut scopes: Vec<Vec<ScopeSpans>> = vec![Vec::new(); n];
        for ss in &rs.scope_spans {
            let mut per: Vec<Option<ScopeSpans>> = vec![None; n];
            // Spans of one trace usually come together: hash each trace id once per run.
            let mut last: Option<(&[u8], usize)> = None;
            for span in &ss.spans {
                let owner = match last {
                    Some((id, o)) if id == span.trace_id.as_slice() => o,
                    _ => {
                        let o = ring.owner(hash_bytes(&span.trace_id));
                        last = Some((&span.trace_id, o));
                        o
                    }
                };
                per[owner]
                    .get_or_insert_with(|| ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: Vec::new(),
                        schema_url: ss.schema_url.clone(),
                    })
                    .spans
                    .push(span.clone());
            }
            for (o, s) in per.into_iter().enumerate() {
                if let Some(s) = s {
                    scopes[o].push(s);
                }
            }
        }
        for (o, s) in scopes.into_iter().enumerate() {
            if !s.is_empty() {
                out[o].push(ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: s,
                    schema_url: rs.schema_url.clone(),
                });
            }
        }
    }
    out
}

fn split_logs(
    l: &ExportLogsServiceRequest,
    ring: &Ring,
    key: RoutingKey,
) -> Vec<Vec<ResourceLogs>> {
    let n = ring.len();
    let mut out: Vec<Vec<ResourceLogs>> = vec![Vec::new(); n];
    for rl in &l.resource_logs {
        if key == RoutingKey::Service || n == 1 {
            let owner = if n == 1 {
                0
            } else {
                ring.owner(service_hash(rl.resource.as_ref()))
            };
            out[owner].push(rl.clone());
            continue;
        }
        let mut scopes: Vec<Vec<ScopeLogs>> = vec![Vec::new(); n];
        for sl in &rl.scope_logs {
            let mut per: Vec<Option<ScopeLogs>> = vec![None; n];
            for record in &sl.log_records {
                let owner = ring.owner(log_hash(record));
                per[owner]
                    .get_or_insert_with(|| ScopeLogs {
                        scope: sl.scope.clone(),
                        log_records: Vec::new(),
                        schema_url: sl.schema_url.clone(),
                    })
                    .log_records
                    .push(record.clone());
            }
            for (o, s) in per.into_iter().enumerate() {
                if let Some(s) = s {
                    scopes[o].push(s);
                }
            }
        }
        for (o, s) in scopes.into_iter().enumerate() {
            if !s.is_empty() {
                out[o].push(ResourceLogs {
                    resource: rl.resource.clone(),
                    scope_logs: s,
                    schema_url: rl.schema_url.clone(),
                });
            }
        }
    }
    out
}

/// Test data shared by the routing and end-to-end tests.
#[cfg(test)]
pub(crate) mod testdata {
    use meshgate_pdata::Payload;
    use meshgate_pdata::attributes::kv_str;
    use meshgate_pdata::otlp::*;

    /// A 16-byte trace id made from `n`, spread over all bytes.
    pub fn trace_id(n: u64) -> Vec<u8> {
        let a = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
        let b = n.rotate_left(17).wrapping_mul(0xc2b2_ae3d_27d4_eb4f) | 1;
        [a.to_be_bytes(), b.to_be_bytes()].concat()
    }

    /// `traces` traces of `spans_per_trace` spans each, over two services and two scopes,
    /// the spans of each trace interleaved with the others'. Span ids are unique:
    /// `trace index * 1000 + span index`.
    pub fn traces(first: u64, traces: u64, spans_per_trace: u64) -> Payload {
        let mut resource_spans = Vec::new();
        for (svc, scopes) in [
            ("frontend", ["envoy", "sdk"]),
            ("checkout", ["envoy", "sdk"]),
        ] {
            let mut scope_spans = Vec::new();
            for scope in scopes {
                let mut spans = Vec::new();
                for s in 0..spans_per_trace {
                    for t in first..first + traces {
                        // Each (service, scope) pair takes a quarter of the spans of a trace.
                        let slot = match (svc, scope) {
                            ("frontend", "envoy") => 0,
                            ("frontend", _) => 1,
                            ("checkout", "envoy") => 2,
                            _ => 3,
                        };
                        if s % 4 != slot {
                            continue;
                        }
                        spans.push(Span {
                            trace_id: trace_id(t),
                            span_id: (t * 1000 + s + 1).to_be_bytes().to_vec(),
                            name: format!("{svc}/{scope}/{s}"),
                            ..Default::default()
                        });
                    }
                }
                scope_spans.push(ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: scope.into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                });
            }
            resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", svc)],
                    ..Default::default()
                }),
                scope_spans,
                schema_url: String::new(),
            });
        }
        Payload::Traces(ExportTraceServiceRequest { resource_spans })
    }

    /// Log records: `traced` of them with the trace ids of traces `0..traced`, then
    /// `untraced` without a trace id.
    pub fn logs(traced: u64, untraced: u64) -> Payload {
        let mut records = Vec::new();
        for t in 0..traced {
            records.push(LogRecord {
                trace_id: trace_id(t),
                time_unix_nano: t,
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("traced {t}"))),
                }),
                ..Default::default()
            });
        }
        for u in 0..untraced {
            records.push(LogRecord {
                time_unix_nano: 1_700_000_000_000_000_000 + u,
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("untraced {u}"))),
                }),
                ..Default::default()
            });
        }
        Payload::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    log_records: records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn ring3() -> Ring {
        Ring::new(&["a:4317", "b:4317", "c:4317"])
    }

    fn spans_of(p: &Payload) -> Vec<(String, String, meshgate_pdata::otlp::Span)> {
        let Payload::Traces(t) = p else {
            panic!("not traces")
        };
        let mut out = Vec::new();
        for rs in &t.resource_spans {
            let svc = get_str(&rs.resource.as_ref().unwrap().attributes, "service.name")
                .unwrap()
                .to_string();
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().unwrap().name.clone();
                assert_eq!(ss.schema_url, "https://opentelemetry.io/schemas/1.30.0");
                for s in &ss.spans {
                    out.push((svc.clone(), scope.clone(), s.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn trace_routing_keeps_each_trace_whole_and_structure_intact() {
        let ring = ring3();
        let data = traces(0, 300, 8);
        let shares = split(&data, &ring, RoutingKey::TraceId);
        assert_eq!(shares.len(), 3, "300 traces reach all three endpoints");
        let mut owner_of_trace: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut seen = HashSet::new();
        let mut total = 0;
        for (owner, share) in &shares {
            for (svc, scope, span) in spans_of(share) {
                // Resource and scope travelled with the span.
                assert!(span.name.starts_with(&format!("{svc}/{scope}/")));
                assert_eq!(ring.owner(hash_bytes(&span.trace_id)), *owner);
                let prev = owner_of_trace.insert(span.trace_id.clone(), *owner);
                assert!(
                    prev.is_none_or(|p| p == *owner),
                    "trace split over endpoints"
                );
                assert!(seen.insert(span.span_id.clone()), "span duplicated");
                total += 1;
            }
        }
        assert_eq!(total, data.item_count());
        // Every endpoint got a fair part.
        for (_, share) in &shares {
            let n = share.item_count();
            assert!((400..=1200).contains(&n), "unbalanced share of {n} spans");
        }
    }

    #[test]
    fn service_routing_sends_each_resource_whole() {
        let ring = ring3();
        let data = traces(0, 50, 4);
        let shares = split(&data, &ring, RoutingKey::Service);
        let mut total = 0;
        for (owner, share) in &shares {
            for (svc, _, _) in spans_of(share) {
                assert_eq!(ring.owner(hash_bytes(svc.as_bytes())), *owner);
                total += 1;
            }
        }
        assert_eq!(total, data.item_count());
        // Both services' owners are what the ring says, and the same on every call.
        let again = split(&data, &ring, RoutingKey::Service);
        assert_eq!(shares, again);
    }

    #[test]
    fn logs_follow_their_trace_and_untraced_logs_spread_stably() {
        let ring = ring3();
        let data = logs(200, 300);
        let shares = split(&data, &ring, RoutingKey::TraceId);
        let mut untraced_per_owner = [0usize; 3];
        let mut total = 0;
        for (owner, share) in &shares {
            let Payload::Logs(l) = share else { panic!() };
            for rl in &l.resource_logs {
                assert_eq!(
                    get_str(&rl.resource.as_ref().unwrap().attributes, "service.name"),
                    Some("checkout")
                );
                for r in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                    total += 1;
                    if r.trace_id.is_empty() {
                        untraced_per_owner[*owner] += 1;
                    } else {
                        // The same endpoint as the trace's spans.
                        assert_eq!(ring.owner(hash_bytes(&r.trace_id)), *owner);
                    }
                }
            }
        }
        assert_eq!(total, 500);
        assert!(
            untraced_per_owner.iter().all(|n| *n > 50),
            "untraced logs are spread: {untraced_per_owner:?}"
        );
        assert_eq!(split(&data, &ring, RoutingKey::TraceId), shares, "stable");
        // By service: one resource, one endpoint.
        let by_service = split(&data, &ring, RoutingKey::Service);
        assert_eq!(by_service.len(), 1);
        assert_eq!(by_service[0].0, ring.owner(hash_bytes(b"checkout")));
    }

    #[test]
    fn one_endpoint_takes_everything_and_empty_inputs_give_nothing() {
        let ring = Ring::new(&["only:4317"]);
        let data = traces(0, 10, 3);
        assert_eq!(
            split(&data, &ring, RoutingKey::TraceId),
            vec![(0, data.clone())]
        );
        assert!(split(&data, &Ring::default(), RoutingKey::TraceId).is_empty());
        assert!(
            split(
                &Payload::empty(meshgate_pdata::Signal::Traces),
                &ring3(),
                RoutingKey::TraceId
            )
            .is_empty()
        );
    }
}
