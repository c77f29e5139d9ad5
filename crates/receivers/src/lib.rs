//! Receivers: where telemetry enters meshgate.
//!
//! `otlp` takes OTLP over gRPC (`TraceService`, `MetricsService`, `LogsService`) and over HTTP
//! (`/v1/traces`, `/v1/metrics`, `/v1/logs`, protobuf and JSON), validates every item, and
//! hands the valid ones to the engine, answering with OTLP partial success for the rest.
//! `zipkin` takes Zipkin v2 spans (JSON and protobuf on `POST /api/v2/spans`, what Envoy's
//! Zipkin tracer sends) and maps them to OTLP the way the OpenTelemetry Collector does.

mod http_common;
pub mod otlp;
pub mod zipkin;

/// Registers every receiver type of this crate.
pub fn register(c: meshgate_engine::Components) -> meshgate_engine::Components {
    c.receiver(otlp::OtlpFactory)
        .receiver(zipkin::ZipkinFactory)
}
