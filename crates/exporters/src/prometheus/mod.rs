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

#[cfg(test)]
mod tests {
    use meshgate_engine::Factory;

    /// Every config field is documented with its default or "required" (as the crate-wide
    /// schema test demands).
    #[test]
    fn schemas_describe_every_field_and_its_default() {
        let factories: [&dyn Factory; 2] = [
            &super::PrometheusRemoteWriteExporterFactory,
            &super::PrometheusExporterFactory,
        ];
        for f in factories {
            let schema = serde_json::to_value(f.schema()).unwrap();
            let props = schema["properties"].as_object().unwrap();
            for (name, p) in props {
                let d = p["description"].as_str().unwrap_or_default();
                assert!(
                    d.contains("Default") || d.to_lowercase().contains("required"),
                    "{}.{name}: {d:?}",
                    f.type_name()
                );
            }
            assert_eq!(schema["additionalProperties"], false, "{}", f.type_name());
        }
    }
}
