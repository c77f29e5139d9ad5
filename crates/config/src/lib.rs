//! `meshgate-config`: the pipeline config model, loading (YAML/TOML/JSON with
//! `${env:VAR:-default}` substitution), validation with exact key paths and lines, and JSON
//! Schema generation.
//!
//! The flow is [`Loaded::from_files`] → [`validate`] (with a [`Catalog`] of known components)
//! → [`Config`]. Every problem comes back as a [`Diagnostic`] pointing at a key and a line, and
//! all of them are reported at once. Component bodies stay JSON values in [`Config`]; each
//! component factory deserializes its own typed struct, whose `schemars` schema the catalog
//! hands to the validator (and to [`config_schema`] for editors).
//!
//! ```
//! use meshgate_config::{Catalog, ComponentSpec, Format, Kind, Loaded, Signal, validate};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct DebugExporter {
//!     #[serde(default)]
//!     verbosity: Option<String>,
//! }
//!
//! struct MyCatalog;
//! impl Catalog for MyCatalog {
//!     fn component(&self, kind: Kind, type_name: &str) -> Option<ComponentSpec> {
//!         matches!((kind, type_name), (Kind::Receiver | Kind::Exporter, "debug")).then(|| {
//!             ComponentSpec {
//!                 signals: Signal::ALL.to_vec(),
//!                 produces: Vec::new(),
//!                 schema: schemars::schema_for!(DebugExporter),
//!                 signal_requires: Vec::new(),
//!             }
//!         })
//!     }
//!     fn type_names(&self, _kind: Kind) -> Vec<String> {
//!         vec!["debug".to_string()]
//!     }
//! }
//!
//! let text = "receivers:\n  debug:\nexporters:\n  debug:\n    verbosty: high\n\
//!             service:\n  pipelines:\n    traces:\n      receivers: [debug]\n      exporters: [debug]\n";
//! let loaded = Loaded::from_str(text, Format::Yaml, "pipeline.yaml").map_err(|d| d[0].to_string())?;
//! let (config, diagnostics) = validate(&loaded, &MyCatalog);
//! assert!(config.is_none());
//! assert_eq!(
//!     diagnostics[0].to_string(),
//!     "error: pipeline.yaml:5: exporters.debug.verbosty: unknown key `verbosty`\n  help: did you mean `verbosity`?"
//! );
//! # Ok::<(), String>(())
//! ```

mod diagnostic;
mod env;
mod ids;
mod load;
mod locate;
mod model;
mod schema_check;
mod schema_gen;
mod suggest;
#[cfg(test)]
mod testing;
mod validate;
mod values;

pub use diagnostic::{Diagnostic, Location, Severity};
pub use env::EnvLookup;
pub use ids::{ComponentId, IdError, Kind, PipelineId, Signal};
pub use load::{Format, Loaded};
pub use model::{
    AdminTelemetry, Catalog, ComponentSpec, Config, LogFormat, LogsTelemetry, PipelineConfig,
    ServiceConfig, TelemetryConfig,
};
pub use schema_gen::config_schema;
pub use validate::validate;
pub use values::{BYTE_SIZE_FORMAT, ByteSize, DURATION_FORMAT, DurationValue};
