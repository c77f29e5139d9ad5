//! meshgate's exporters: where telemetry leaves the gateway.
//!
//! | type       | signals | sends to |
//! |------------|---------|----------|
//! | `otlp`     | all     | an OTLP/gRPC backend (collector, Jaeger, Tempo...) |
//! | `otlphttp` | all     | an OTLP/HTTP backend, protobuf encoding |
//! | `debug`    | all     | the gateway's own log |
//! | `file`     | all     | a local file, one OTLP/JSON export request per line |
//! | `jaeger`   | traces  | Jaeger: OTLP to a v2 collector, or the native `api_v2` gRPC collector |
//! | `elasticsearch` | traces, logs (metrics with `dependencies`) | Elasticsearch / OpenSearch `_bulk` (otel, ecs, dataprepper mappings; service graph as Jaeger dependency documents) |
//! | `prometheusremotewrite` | metrics | Prometheus Remote Write 1.0 |
//! | `prometheus` | metrics | a scrape endpoint with the current value of every series |
//! | `parquet` | all | a Hive-partitioned Parquet lake queried by `meshgate query` |
//! | `loadbalancing` | traces, logs | OTLP/gRPC endpoints chosen by trace id or service on a consistent-hash ring |
//!
//! An exporter implements one send attempt ([`meshgate_engine::Exporter::export`]) and maps
//! the backend's answer to the OTLP rules: partial success becomes
//! [`meshgate_engine::Exported::rejected`], transient failures become retryable
//! [`meshgate_engine::ExportError`]s carrying the backend's requested delay. Queueing,
//! retries with backoff and item accounting are done around it by the engine's exporter
//! helper, configured by the `sending_queue` and `retry_on_failure` blocks that the network
//! exporters accept. The local exporters (`debug`, `file`) run without queue or retries, in
//! order, on one worker.

mod common;
pub mod debug;
pub mod elasticsearch;
pub mod file;
pub mod jaeger;
pub mod loadbalancing;
pub mod otlp;
pub mod otlphttp;
pub mod parquet;
pub mod prometheus;

pub use common::Compression;
pub use debug::DebugExporterFactory;
pub use file::FileExporterFactory;
pub use otlp::OtlpExporterFactory;
pub use otlphttp::OtlpHttpExporterFactory;

/// Registers every exporter of this crate.
pub fn register(c: meshgate_engine::Components) -> meshgate_engine::Components {
    c.exporter(OtlpExporterFactory)
        .exporter(OtlpHttpExporterFactory)
        .exporter(DebugExporterFactory)
        .exporter(FileExporterFactory)
        .exporter(elasticsearch::ElasticsearchExporterFactory)
        .exporter(jaeger::JaegerExporterFactory)
        .exporter(parquet::ParquetExporterFactory)
        .exporter(prometheus::PrometheusRemoteWriteExporterFactory)
        .exporter(prometheus::PrometheusExporterFactory)
        .exporter(loadbalancing::LoadBalancingExporterFactory)
}

#[cfg(test)]
mod tests {
    #[test]
    fn registers_all_exporters() {
        let c = super::register(meshgate_engine::Components::default());
        let mut names: Vec<_> = c.list().iter().map(|i| i.type_name).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "debug",
                "elasticsearch",
                "file",
                "jaeger",
                "loadbalancing",
                "otlp",
                "otlphttp",
                "parquet",
                "prometheus",
                "prometheusremotewrite"
            ]
        );
    }
}
