//! Receivers: where telemetry enters meshgate.
//!
//! `otlp` takes OTLP over gRPC (`TraceService`, `MetricsService`, `LogsService`) and over HTTP
//! (`/v1/traces`, `/v1/metrics`, `/v1/logs`, protobuf and JSON), validates every item, and
//! hands the valid ones to the engine, answering with OTLP partial success for the rest.

pub mod otlp;

/// Registers every receiver type of this crate.
pub fn register(c: meshgate_engine::Components) -> meshgate_engine::Components {
    c.receiver(otlp::OtlpFactory)
}
