//! The `zipkin` receiver: Zipkin v2 spans over HTTP, so Envoy's Zipkin tracer (Istio's
//! long-time default) and any Zipkin reporter can point at meshgate unchanged.
//!
//! `POST /api/v2/spans` takes a `ListOfSpans` as JSON (`application/json`, also when
//! `Content-Type` is missing) or protobuf (`application/x-protobuf`, `zipkin.proto3`), plain,
//! gzip or zstd, and answers `202 Accepted` as Zipkin servers do. Malformed bodies get `400`
//! with the parser's message and position, oversized ones `413`, other content types or
//! encodings `415`, other methods `405`, other paths `404` (Zipkin v1 at `/api/v1/spans` is
//! not supported and says so). A span that is invalid on its own (missing or non-hex
//! `traceId`/`id`, a wrong-typed field, an unknown `kind`) is dropped and counted as
//! `refused{reason="invalid"}` while the rest of the request goes through; the `202` body then
//! names how many were dropped and the first reason (a request whose every span is invalid
//! gets `400`). Pipeline backpressure answers `429` and a memory limiter or draining `503`,
//! both with `Retry-After`, exactly as the `otlp` receiver's HTTP side.
//!
//! # Mapping to OTLP
//!
//! Following the OpenTelemetry Collector's `zipkin` receiver (pkg/translator/zipkin):
//!
//! - `traceId` (16 or 32 hex digits; shorter ids are left-padded) and `id` (16) become the
//!   span's ids; `parentId` the parent (none when absent, all zeros or equal to `id`).
//! - `kind` CLIENT/SERVER/PRODUCER/CONSUMER map to the same OTLP kind; absent is INTERNAL
//!   (or what a `span.kind` tag says, which is then consumed).
//! - `timestamp` and `duration` (µs) give start and end (ns). No timestamp: start at the
//!   epoch and `otel.zipkin.absentField.startTime = true`, as the Collector does.
//! - `localEndpoint.serviceName` is the resource's `service.name`; spans are grouped into one
//!   `ResourceSpans` per local service (none when absent). Scope: from the `otel.scope.name`/
//!   `otel.scope.version` (or older `otel.library.*`) tags, else none, like the Collector.
//! - Endpoint addresses use the current semantic conventions, as the Collector does behind
//!   its `EmitV1NetworkConventions` gate: local `network.local.address`/`network.local.port`,
//!   remote `network.peer.address`/`network.peer.port` (IPv6 preferred when both are set).
//!   The remote `serviceName` becomes `peer.service` (what the Collector wrote for years; its
//!   gate writes `service.peer.name`), the name meshgate's service graph reads for an
//!   unpaired client's peer. These replace same-named tags.
//! - Tags become string attributes in their order (typed with `parse_string_tags`), except
//!   the ones consumed: `w3c.tracestate` (the trace state), `otel.status_code`/
//!   `otel.status_description`, the scope tags, `otlp.link.<n>` (span links, in the Collector
//!   exporter's `trace|span|state|{attrs}|dropped` form; kept as a tag when they do not
//!   parse). Tags named like resource attributes (`service.namespace`, `k8s.*`...) stay on
//!   the span, where the mesh identity rules look first; the Collector moves them to the
//!   resource, but only from the first span of each service.
//! - Status: a known `otel.status_code` tag wins (an explicit OK beats an `error` tag, as in
//!   the mesh failure rule); otherwise an `error` tag whose value is not `false` makes the
//!   status ERROR, with the value as message unless it is empty or `true`. The `error` tag
//!   itself is kept, so rules written against Envoy's `error=true` still match.
//! - `annotations` become span events named by their value. Events with attributes come
//!   back from both encodings that write them: the OpenTelemetry SDKs' Zipkin exporters'
//!   `{"name": {attrs}}` (the OpenTelemetry spec's mapping; the Collector keeps it as the
//!   name) and the Collector exporter's `name|{attrs}|dropped`.
//! - `shared: true` becomes the boolean attribute `zipkin.shared = true`. Envoy's
//!   `shared_span_context` makes the server side of a call reuse the client span's id, so such
//!   a SERVER span's own span id (not its parent id) is the id of the CLIENT span it pairs
//!   with: the servicegraph connector pairs `zipkin.shared` server spans by their own span id.
//! - `debug` (Zipkin's "force sampling", `X-B3-Flags: 1`) is not mapped, as in the
//!   Collector: the OpenTelemetry SDKs' Zipkin exporters set it on every sampled span, so it
//!   carries no signal and would only add an attribute to every span.
//!
//! Envoy 1.12–1.14 wrote `timestamp`/`duration` as JSON strings (envoyproxy/envoy#9341);
//! they are accepted, as are numbers and booleans as tag values.

mod config;
mod http;
mod json;
mod model;
pub mod proto;
mod translate;

pub use config::ZipkinConfig;

/// Decodes a Zipkin v2 JSON `ListOfSpans` body into the OTLP request the receiver would admit,
/// with the problems of the spans left out (`span <i>: <why>`). The receiver's own mapping,
/// public so tests and benchmarks can feed Zipkin-shaped traffic to the pipeline stages without
/// an HTTP round trip. Errs when the body itself does not parse.
pub fn json_to_otlp(
    body: &[u8],
    parse_string_tags: bool,
) -> Result<(meshgate_pdata::otlp::ExportTraceServiceRequest, Vec<String>), String> {
    let mut problems = Vec::new();
    let mut valid = Vec::new();
    for (i, span) in json::decode(body)?.into_iter().enumerate() {
        match span {
            Ok(s) => valid.push(s),
            Err(why) => problems.push(format!("span {i}: {why}")),
        }
    }
    let opts = translate::Options { parse_string_tags };
    Ok((translate::to_otlp(valid, opts), problems))
}

use meshgate_engine::{
    BuildContext, Consumer, Consumers, Factory, Receiver, ReceiverFactory, ShutdownSignal,
};
use meshgate_pdata::Signal;

/// Builds `zipkin` receivers.
pub struct ZipkinFactory;

impl Factory for ZipkinFactory {
    fn type_name(&self) -> &'static str {
        "zipkin"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }
    fn description(&self) -> &'static str {
        "Zipkin v2 spans (JSON and protobuf) on POST /api/v2/spans (:9411), e.g. from Envoy's Zipkin tracer"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(ZipkinConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        serde_json::from_value::<ZipkinConfig>(config.clone())
            .map_err(|e| e.to_string())?
            .validate()
    }
}

impl ReceiverFactory for ZipkinFactory {
    fn build(
        &self,
        ctx: BuildContext<'_>,
        consumers: Consumers,
    ) -> Result<Box<dyn Receiver>, String> {
        let config: ZipkinConfig = ctx.parse()?;
        config.validate().map_err(|e| format!("{}: {e}", ctx.id))?;
        let consumer = consumers.traces.ok_or_else(|| {
            format!(
                "{}: the zipkin receiver only carries traces; add it to a traces pipeline",
                ctx.id
            )
        })?;
        Ok(Box::new(ZipkinReceiver {
            id: ctx.id,
            config,
            consumer,
        }))
    }
}

struct ZipkinReceiver {
    id: String,
    config: ZipkinConfig,
    consumer: Consumer,
}

#[async_trait::async_trait]
impl Receiver for ZipkinReceiver {
    async fn start(
        self: Box<Self>,
        shutdown: ShutdownSignal,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        http::start(&self.id, &self.config, self.consumer, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_describes_and_checks_its_config() {
        let f = ZipkinFactory;
        assert_eq!(f.type_name(), "zipkin");
        assert_eq!(f.signals(), &[Signal::Traces]);
        let schema = serde_json::to_value(f.schema()).unwrap();
        for key in ["endpoint", "max_request_body_size", "parse_string_tags"] {
            assert!(
                schema["properties"][key].is_object(),
                "{key} missing in {schema}"
            );
        }
        assert!(f.check(&serde_json::json!({})).is_ok());
        assert!(
            f.check(&serde_json::json!({"endpoint": "nope"}))
                .unwrap_err()
                .contains("not `host:port`")
        );
        assert!(
            f.check(&serde_json::json!({"parse_string_tag": true}))
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
