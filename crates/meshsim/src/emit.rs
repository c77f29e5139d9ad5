//! Span exporters as the proxies and SDKs run them: each one buffers its finished spans and
//! flushes a request when it holds enough spans or when its timer fires (Envoy: 5 spans or
//! 5 s). So one trace arrives split over many requests from different emitters, at different
//! times, the way a gateway really receives it.

use std::collections::BTreeMap;
use std::time::Duration;

use meshgate_pdata::attributes::value_to_string;
use meshgate_pdata::otlp::{
    ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans, ScopeSpans,
    Span, span::SpanKind, status::StatusCode,
};
use serde::Serialize;

/// When an emitter sends what it buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Send as soon as this many spans are buffered (at least 1).
    pub max_spans: usize,
    /// Send what is buffered every this often (each emitter's timer has its own phase).
    pub interval: Duration,
}

/// The flush policies of the two kinds of emitters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicies {
    /// Proxies (Envoy sidecars, Linkerd proxies). Default: 5 spans or 5 s, Envoy's
    /// `min_flush_spans` and flush interval.
    pub proxy: FlushPolicy,
    /// Application SDKs. Default: 512 spans or 5 s, the OpenTelemetry batch span processor's.
    pub app: FlushPolicy,
}

impl Default for FlushPolicies {
    fn default() -> Self {
        FlushPolicies {
            proxy: FlushPolicy {
                max_spans: 5,
                interval: Duration::from_secs(5),
            },
            app: FlushPolicy {
                max_spans: 512,
                interval: Duration::from_secs(5),
            },
        }
    }
}

/// One export request, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// When the emitter sent it (simulated clock, Unix nanoseconds).
    pub at_unix_nano: u64,
    /// Spans in it.
    pub spans: usize,
    /// The request itself.
    pub body: Body,
}

/// The request body of a [`Delivery`].
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// An OTLP trace export request (Envoy OpenTelemetry tracer, Linkerd, SDKs).
    Otlp(ExportTraceServiceRequest),
    /// A Zipkin v2 JSON array, the body of `POST /api/v2/spans`.
    Zipkin(Vec<u8>),
}

/// A finished span waiting in its emitter.
#[derive(Debug, Clone)]
pub(crate) struct SimSpan {
    pub span: Span,
    /// Zipkin `shared` (a server span reusing its client's id).
    pub shared: bool,
    /// Zipkin `remoteEndpoint` address and port.
    pub remote: Option<(String, u16)>,
    /// Creation order, to break ties deterministically.
    pub seq: u64,
}

/// Zipkin `localEndpoint` of an emitter.
#[derive(Debug, Clone)]
pub(crate) struct ZipkinLocal {
    pub service_name: String,
    pub ipv4: String,
}

/// One proxy or one application SDK instance.
#[derive(Debug)]
pub(crate) struct Emitter {
    pub resource: Vec<KeyValue>,
    pub scope: Option<InstrumentationScope>,
    pub zipkin: Option<ZipkinLocal>,
    policy_max: usize,
    interval_ns: u64,
    pending: Vec<SimSpan>,
    buffer: Vec<SimSpan>,
    next_tick: u64,
}

/// A flushed request before encoding.
pub(crate) struct Flush {
    pub at: u64,
    pub emitter: usize,
    pub seq: u64,
    pub spans: Vec<SimSpan>,
}

impl Emitter {
    pub fn new(
        resource: Vec<KeyValue>,
        scope: Option<InstrumentationScope>,
        zipkin: Option<ZipkinLocal>,
        policy: FlushPolicy,
        first_tick: u64,
    ) -> Self {
        Emitter {
            resource,
            scope,
            zipkin,
            policy_max: policy.max_spans.max(1),
            interval_ns: (policy.interval.as_nanos() as u64).max(1),
            pending: Vec::new(),
            buffer: Vec::new(),
            next_tick: first_tick,
        }
    }

    /// Adds a finished span; it is sent by a later flush.
    pub fn push(&mut self, span: SimSpan) {
        self.pending.push(span);
    }

    /// Moves every pending span that ended at or before `until` through the buffer, and fires
    /// the timer ticks up to `until`. A tick at time T sends the spans that ended at or before
    /// T; reaching `max_spans` sends at the end time of the span that filled the buffer.
    pub fn flush_until(&mut self, until: u64, me: usize, seq: &mut u64, out: &mut Vec<Flush>) {
        self.pending
            .sort_unstable_by_key(|s| (s.span.end_time_unix_nano, s.seq));
        let ready = self
            .pending
            .partition_point(|s| s.span.end_time_unix_nano <= until);
        let rest = self.pending.split_off(ready);
        let ready = std::mem::replace(&mut self.pending, rest);
        for s in ready {
            let end = s.span.end_time_unix_nano;
            while self.next_tick < end {
                self.tick(me, seq, out);
            }
            self.buffer.push(s);
            if self.buffer.len() >= self.policy_max {
                self.emit(end, me, seq, out);
            }
        }
        while self.next_tick <= until {
            self.tick(me, seq, out);
        }
    }

    /// Sends everything still held, at the timer ticks that would send it.
    pub fn flush_all(&mut self, me: usize, seq: &mut u64, out: &mut Vec<Flush>) {
        if let Some(last) = self.pending.iter().map(|s| s.span.end_time_unix_nano).max() {
            self.flush_until(last, me, seq, out);
        }
        if !self.buffer.is_empty() {
            self.tick(me, seq, out);
        }
    }

    fn tick(&mut self, me: usize, seq: &mut u64, out: &mut Vec<Flush>) {
        let at = self.next_tick;
        if !self.buffer.is_empty() {
            self.emit(at, me, seq, out);
        }
        self.next_tick += self.interval_ns;
    }

    fn emit(&mut self, at: u64, me: usize, seq: &mut u64, out: &mut Vec<Flush>) {
        *seq += 1;
        out.push(Flush {
            at,
            emitter: me,
            seq: *seq,
            spans: std::mem::take(&mut self.buffer),
        });
    }

    /// Spans not yet sent.
    pub fn held(&self) -> usize {
        self.pending.len() + self.buffer.len()
    }

    /// Encodes a flush as an OTLP request: one resource, one scope.
    pub fn otlp(&self, spans: Vec<SimSpan>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: self.resource.clone(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: self.scope.clone(),
                    spans: spans.into_iter().map(|s| s.span).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Encodes a flush as a Zipkin v2 JSON array.
    pub fn zipkin(&self, spans: &[SimSpan]) -> Vec<u8> {
        let local = self
            .zipkin
            .as_ref()
            .expect("Zipkin emitters have a local endpoint");
        let spans: Vec<ZipkinSpan<'_>> = spans.iter().map(|s| zipkin_span(s, local)).collect();
        serde_json::to_vec(&spans).expect("Zipkin spans serialize")
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan<'a> {
    trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    id: String,
    kind: &'static str,
    name: &'a str,
    timestamp: u64,
    duration: u64,
    local_endpoint: ZipkinEndpoint<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_endpoint: Option<ZipkinEndpoint<'a>>,
    tags: BTreeMap<&'a str, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    shared: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinEndpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<&'a str>,
    ipv4: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

fn zipkin_span<'a>(s: &'a SimSpan, local: &'a ZipkinLocal) -> ZipkinSpan<'a> {
    let span = &s.span;
    let kind = match SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
        // Zipkin has no INTERNAL kind: a local span has no kind at all. The simulator does not
        // make such spans.
        _ => "CLIENT",
    };
    let mut tags: BTreeMap<&str, String> = span
        .attributes
        .iter()
        .filter_map(|kv| {
            let v = kv.value.as_ref()?.value.as_ref()?;
            Some((kv.key.as_str(), value_to_string(v)))
        })
        .collect();
    // Zipkin carries failure as the `error` tag (an SDK's explicit ERROR status).
    if span
        .status
        .as_ref()
        .is_some_and(|st| st.code == StatusCode::Error as i32)
    {
        tags.entry("error").or_insert_with(|| "true".to_string());
    }
    let start_us = span.start_time_unix_nano / 1000;
    let end_us = span.end_time_unix_nano / 1000;
    ZipkinSpan {
        trace_id: hex::encode(&span.trace_id),
        parent_id: (!span.parent_span_id.is_empty()).then(|| hex::encode(&span.parent_span_id)),
        id: hex::encode(&span.span_id),
        kind,
        name: &span.name,
        timestamp: start_us,
        duration: end_us - start_us,
        local_endpoint: ZipkinEndpoint {
            service_name: Some(&local.service_name),
            ipv4: &local.ipv4,
            port: None,
        },
        remote_endpoint: s.remote.as_ref().map(|(ip, port)| ZipkinEndpoint {
            service_name: None,
            ipv4: ip,
            port: Some(*port),
        }),
        tags,
        shared: s.shared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(end_ms: u64, seq: u64) -> SimSpan {
        SimSpan {
            span: Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                start_time_unix_nano: 0,
                end_time_unix_nano: end_ms * 1_000_000,
                ..Default::default()
            },
            shared: false,
            remote: None,
            seq,
        }
    }

    fn emitter(max: usize) -> Emitter {
        Emitter::new(
            vec![],
            None,
            None,
            FlushPolicy {
                max_spans: max,
                interval: Duration::from_secs(5),
            },
            5_000_000_000,
        )
    }

    #[test]
    fn flushes_at_max_spans_and_on_timer_ticks() {
        let mut e = emitter(3);
        for (i, end) in [1000, 1200, 1100, 1300, 6000, 7000].into_iter().enumerate() {
            e.push(span(end, i as u64));
        }
        let mut out = Vec::new();
        let mut seq = 0;
        e.flush_until(4_000_000_000, 0, &mut seq, &mut out);
        // Three spans fill the buffer at 1.2 s (ends sorted: 1.0, 1.1, 1.2); 1.3 s waits.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].at, 1_200_000_000);
        assert_eq!(out[0].spans.len(), 3);
        e.flush_until(5_000_000_000, 0, &mut seq, &mut out);
        assert_eq!(
            (out.len(), out[1].at, out[1].spans.len()),
            (2, 5_000_000_000, 1)
        );
        assert_eq!(e.held(), 2);
        e.flush_all(0, &mut seq, &mut out);
        assert_eq!(out.len(), 3, "6 s and 7 s go together at the 10 s tick");
        assert_eq!((out[2].at, out[2].spans.len()), (10_000_000_000, 2));
        assert_eq!(e.held(), 0);
    }

    #[test]
    fn zipkin_json_uses_microseconds_hex_ids_and_string_tags() {
        let mut s = span(3, 0);
        s.span.start_time_unix_nano = 1_000_000;
        s.span.parent_span_id = vec![3; 8];
        s.span.kind = SpanKind::Client as i32;
        s.span.name = "get".into();
        s.span.attributes = vec![meshgate_pdata::attributes::kv(
            "server.port",
            meshgate_pdata::otlp::any_value::Value::IntValue(5432),
        )];
        s.span.status = Some(meshgate_pdata::otlp::Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        });
        s.shared = true;
        let e = Emitter::new(
            vec![],
            None,
            Some(ZipkinLocal {
                service_name: "a.ns".into(),
                ipv4: "10.0.0.1".into(),
            }),
            FlushPolicies::default().proxy,
            0,
        );
        let v: serde_json::Value = serde_json::from_slice(&e.zipkin(&[s])).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{
                "traceId": "01010101010101010101010101010101",
                "parentId": "0303030303030303",
                "id": "0202020202020202",
                "kind": "CLIENT",
                "name": "get",
                "timestamp": 1000,
                "duration": 2000,
                "localEndpoint": {"serviceName": "a.ns", "ipv4": "10.0.0.1"},
                "tags": {"server.port": "5432", "error": "true"},
                "shared": true
            }])
        );
    }
}
