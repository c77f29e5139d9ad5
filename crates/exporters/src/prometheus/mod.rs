//! Prometheus exporters: `prometheusremotewrite` (push, Remote Write 1.0) and `prometheus`
//! (a scrape endpoint), over one OTLP → Prometheus translation ([`translate`]).

pub mod remote_write;
pub mod scrape;
pub mod translate;

pub use remote_write::PrometheusRemoteWriteExporterFactory;
pub use scrape::PrometheusExporterFactory;

use schemars::JsonSchema;
use serde::Deserialize;

/// `resource_to_telemetry_conversion`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceToTelemetry {
    /// Every resource attribute becomes a label of every series. Default: `false`.
    pub enabled: bool,
}
