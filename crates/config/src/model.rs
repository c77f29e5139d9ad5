//! The validated config model and the catalog interface the validator consults.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ComponentId, Kind, PipelineId, Signal};

/// The components one pipeline chains together, in order. Processors run in the listed order;
/// receivers and exporters fan in and out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PipelineConfig {
    /// Where data enters (receivers or connectors).
    pub receivers: Vec<ComponentId>,
    /// The processing chain, in order.
    pub processors: Vec<ComponentId>,
    /// Where data leaves (exporters or connectors).
    pub exporters: Vec<ComponentId>,
}

/// Log output format of the gateway's own logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `service.telemetry.logs`: how the gateway logs about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogsTelemetry {
    /// Level or `tracing` env-filter directive, e.g. `info` or `info,meshgate_engine=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogsTelemetry {
    fn default() -> Self {
        LogsTelemetry {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `service.telemetry.admin`: the admin HTTP server (health, `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminTelemetry {
    /// `host:port` the admin server listens on.
    pub endpoint: String,
}

impl Default for AdminTelemetry {
    fn default() -> Self {
        AdminTelemetry {
            endpoint: "127.0.0.1:13133".into(),
        }
    }
}

/// `service.telemetry`: the gateway's self-observability settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Own logs.
    pub logs: LogsTelemetry,
    /// Admin endpoint.
    pub admin: AdminTelemetry,
}

/// The `service` section: which pipelines and extensions actually run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceConfig {
    /// Pipelines by id.
    pub pipelines: BTreeMap<PipelineId, PipelineConfig>,
    /// Extensions to start, in order.
    pub extensions: Vec<ComponentId>,
    /// Self-telemetry settings.
    pub telemetry: TelemetryConfig,
}

/// The validated config. Component bodies stay JSON values: each component's factory
/// deserializes its own typed struct, so this crate need not know every component.
/// A component written with no body (`batch:`) has the body `{}` so its defaults apply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `receivers:` bodies by id.
    pub receivers: BTreeMap<ComponentId, serde_json::Value>,
    /// `processors:` bodies by id.
    pub processors: BTreeMap<ComponentId, serde_json::Value>,
    /// `exporters:` bodies by id.
    pub exporters: BTreeMap<ComponentId, serde_json::Value>,
    /// `connectors:` bodies by id.
    pub connectors: BTreeMap<ComponentId, serde_json::Value>,
    /// `extensions:` bodies by id.
    pub extensions: BTreeMap<ComponentId, serde_json::Value>,
    /// `service:`.
    pub service: ServiceConfig,
}

impl Config {
    /// The components of one section.
    pub fn section(&self, kind: Kind) -> &BTreeMap<ComponentId, serde_json::Value> {
        match kind {
            Kind::Receiver => &self.receivers,
            Kind::Processor => &self.processors,
            Kind::Exporter => &self.exporters,
            Kind::Connector => &self.connectors,
            Kind::Extension => &self.extensions,
        }
    }

    pub(crate) fn section_mut(
        &mut self,
        kind: Kind,
    ) -> &mut BTreeMap<ComponentId, serde_json::Value> {
        match kind {
            Kind::Receiver => &mut self.receivers,
            Kind::Processor => &mut self.processors,
            Kind::Exporter => &mut self.exporters,
            Kind::Connector => &mut self.connectors,
            Kind::Extension => &mut self.extensions,
        }
    }
}

/// What the validator and schema generator need to know about one component type.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// Signals the component can handle; a pipeline of another signal may not use it.
    pub signals: Vec<Signal>,
    /// For a connector, the signals it emits: the pipelines that may list it under
    /// `receivers` (its `signals` are those it consumes, as an exporter). Empty otherwise.
    pub produces: Vec<Signal>,
    /// JSON Schema of the component's config body, from `schemars::schema_for!(TheConfig)`.
    pub schema: schemars::Schema,
    /// Signals the component takes only when a key of its body is set, as `(signal, key)`:
    /// the `elasticsearch` exporter takes metrics only with `dependencies`. Empty for most.
    pub signal_requires: Vec<(Signal, &'static str)>,
}

/// What the validator needs to know about each component type. Implemented by the binary from
/// its component registry, so this crate does not depend on the component crates.
pub trait Catalog {
    /// The spec of `type_name` in section `kind`, or None when unknown.
    fn component(&self, kind: Kind, type_name: &str) -> Option<ComponentSpec>;
    /// All known type names of a section (for "did you mean" and error messages).
    fn type_names(&self, kind: Kind) -> Vec<String>;
}
