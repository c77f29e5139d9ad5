//! A test catalog whose component schemas come from real schemars-derived structs.

#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::{ByteSize, Catalog, ComponentSpec, DurationValue, Kind, Signal};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    /// `host:port` to listen on.
    #[serde(default = "default_grpc")]
    pub endpoint: String,
    #[serde(default)]
    pub max_recv_msg_size: Option<ByteSize>,
}

fn default_grpc() -> String {
    "0.0.0.0:4317".into()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    #[serde(default)]
    pub grpc: Option<GrpcSettings>,
    #[serde(default)]
    pub http: Option<GrpcSettings>,
}

/// A fake `otlp` receiver.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiver {
    #[serde(default)]
    pub protocols: Option<Protocols>,
}

/// A fake `batch` processor.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Batch {
    pub timeout: DurationValue,
    #[schemars(range(min = 1))]
    pub send_batch_size: u32,
    pub send_batch_max_size: ByteSize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            timeout: DurationValue(std::time::Duration::from_millis(200)),
            send_batch_size: 8192,
            send_batch_max_size: ByteSize(0),
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    #[serde(default)]
    pub enabled: bool,
    pub max_elapsed_time: DurationValue,
}

/// A fake `otlp` exporter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporter {
    pub endpoint: String,
    #[serde(default)]
    pub retry_on_failure: Option<Retry>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub compression: Option<Compression>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A fake `file` exporter that only handles traces and logs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileExporter {
    pub path: String,
}

/// A fake `health_check` extension.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A fake `count` connector.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountConnector {
    #[serde(default)]
    pub prefix: Option<String>,
}

/// Receivers: otlp. Processors: batch. Exporters: otlp, file (traces, logs). Extensions:
/// health_check. Connectors: count (traces and logs in, metrics out), forward (any signal
/// in, the same out).
pub struct TestCatalog;

impl Catalog for TestCatalog {
    fn component(&self, kind: Kind, type_name: &str) -> Option<ComponentSpec> {
        let all = Signal::ALL.to_vec();
        let (signals, schema) = match (kind, type_name) {
            (Kind::Receiver, "otlp") => (all, schemars::schema_for!(OtlpReceiver)),
            (Kind::Processor, "batch") => (all, schemars::schema_for!(Batch)),
            (Kind::Exporter, "otlp") => (all, schemars::schema_for!(OtlpExporter)),
            (Kind::Exporter, "file") => (
                vec![Signal::Traces, Signal::Logs],
                schemars::schema_for!(FileExporter),
            ),
            (Kind::Extension, "health_check") => (vec![], schemars::schema_for!(HealthCheck)),
            (Kind::Connector, "count") => {
                return Some(ComponentSpec {
                    signals: vec![Signal::Traces, Signal::Logs],
                    produces: vec![Signal::Metrics],
                    schema: schemars::schema_for!(CountConnector),
                    signal_requires: Vec::new(),
                });
            }
            (Kind::Connector, "forward") => {
                return Some(ComponentSpec {
                    signals: Signal::ALL.to_vec(),
                    produces: Signal::ALL.to_vec(),
                    schema: schemars::schema_for!(CountConnector),
                    signal_requires: Vec::new(),
                });
            }
            _ => return None,
        };
        Some(ComponentSpec {
            signals,
            produces: Vec::new(),
            schema,
            signal_requires: Vec::new(),
        })
    }

    fn type_names(&self, kind: Kind) -> Vec<String> {
        let names: &[&str] = match kind {
            Kind::Receiver => &["otlp"],
            Kind::Processor => &["batch"],
            Kind::Exporter => &["otlp", "file"],
            Kind::Connector => &["count", "forward"],
            Kind::Extension => &["health_check"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }
}
