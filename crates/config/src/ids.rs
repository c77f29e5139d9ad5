//! Identifiers used in config files: signals, component kinds, component and pipeline ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::suggest::help_for_unknown;

/// Telemetry signal kinds: the data model's own type, so a parsed pipeline id and a running
/// pipeline speak of the same thing.
pub use meshgate_pdata::Signal;

/// Parses a signal name (`traces`, `metrics`, `logs`), with a did-you-mean on failure.
pub(crate) fn parse_signal(s: &str) -> Result<Signal, IdError> {
    Signal::ALL
        .into_iter()
        .find(|sig| sig.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = Signal::ALL.iter().map(|s| s.as_str()).collect();
            IdError {
                message: format!("unknown signal `{s}`"),
                help: Some(help_for_unknown(s, &names, "signals")),
            }
        })
}

/// Which config section a component lives in; used to look components up in a [`crate::Catalog`]
/// and to word messages ("unknown receiver type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Accepts telemetry from outside (`receivers:`).
    Receiver,
    /// Transforms telemetry inside a pipeline (`processors:`).
    Processor,
    /// Sends telemetry out (`exporters:`).
    Exporter,
    /// Exporter of one pipeline and receiver of another (`connectors:`).
    Connector,
    /// Runs beside the pipelines, e.g. health checks (`extensions:`).
    Extension,
}

impl Kind {
    /// Every kind, in config-file order.
    pub const ALL: [Kind; 5] = [
        Kind::Receiver,
        Kind::Processor,
        Kind::Exporter,
        Kind::Connector,
        Kind::Extension,
    ];

    /// The singular word used in messages: `receiver`, `processor`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
            Kind::Connector => "connector",
            Kind::Extension => "extension",
        }
    }

    /// The top-level config section holding components of this kind: `receivers`, ...
    pub fn section(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
            Kind::Connector => "connectors",
            Kind::Extension => "extensions",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a component id, pipeline id or signal name could not be parsed; rendered into a
/// [`crate::Diagnostic`] by the validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    /// What is wrong, e.g. "component type must not be empty".
    pub message: String,
    /// How to fix it, when we know.
    pub help: Option<String>,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

impl std::error::Error for IdError {}

/// Checks the type part of an id: an ASCII letter then letters, digits or `_`, as the
/// OpenTelemetry Collector requires, so collector files keep working.
fn check_type(type_name: &str, full: &str) -> Result<(), IdError> {
    let mut chars = type_name.chars();
    match chars.next() {
        None => Err(IdError {
            message: format!("`{full}` has an empty type"),
            help: Some("write `type` or `type/name`, e.g. `otlp` or `otlp/internal`".into()),
        }),
        Some(c) if !c.is_ascii_alphabetic() => Err(IdError {
            message: format!("type `{type_name}` must start with an ASCII letter"),
            help: None,
        }),
        Some(_) => match chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
            Some(bad) => Err(IdError {
                message: format!("type `{type_name}` contains the invalid character `{bad}`"),
                help: Some("types use only ASCII letters, digits and `_`".into()),
            }),
            None if type_name.len() > 63 => Err(IdError {
                message: format!("type `{type_name}` is longer than 63 characters"),
                help: None,
            }),
            None => Ok(()),
        },
    }
}

/// Checks the name part of an id: non-empty, no `/`, whitespace or control characters.
fn check_name(name: &str, full: &str) -> Result<(), IdError> {
    if name.is_empty() {
        return Err(IdError {
            message: format!("`{full}` has an empty name after `/`"),
            help: Some("drop the `/` or add a name, e.g. `otlp/internal`".into()),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| *c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(IdError {
            message: format!("name `{name}` in `{full}` contains the invalid character {bad:?}"),
            help: Some("names must not contain `/`, whitespace or control characters".into()),
        });
    }
    Ok(())
}

fn split_id(s: &str) -> (&str, Option<&str>) {
    match s.split_once('/') {
        Some((t, n)) => (t, Some(n)),
        None => (s, None),
    }
}

/// `type[/name]` as in the OpenTelemetry Collector, e.g. `otlp`, `otlp/internal`: the type picks
/// the factory, the optional name lets one type be configured several times.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    /// The component type, e.g. `otlp`.
    pub type_name: String,
    /// The instance name after `/`, if any.
    pub name: Option<String>,
}

impl ComponentId {
    /// An id without a name, e.g. `batch`. Does not check the characters; use `parse` for input.
    pub fn new(type_name: impl Into<String>) -> Self {
        ComponentId {
            type_name: type_name.into(),
            name: None,
        }
    }

    /// An id with a name, e.g. `otlp/internal`. Does not check the characters.
    pub fn with_name(type_name: impl Into<String>, name: impl Into<String>) -> Self {
        ComponentId {
            type_name: type_name.into(),
            name: Some(name.into()),
        }
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.type_name)?;
        if let Some(name) = &self.name {
            write!(f, "/{name}")?;
        }
        Ok(())
    }
}

impl FromStr for ComponentId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (type_name, name) = split_id(s);
        check_type(type_name, s)?;
        if let Some(name) = name {
            check_name(name, s)?;
        }
        Ok(ComponentId {
            type_name: type_name.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl Serialize for ComponentId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ComponentId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `traces`, `metrics/red`...: the key of a pipeline under `service.pipelines`. The signal part
/// decides which data the pipeline carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    /// The signal this pipeline carries.
    pub signal: Signal,
    /// The pipeline name after `/`, if any.
    pub name: Option<String>,
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.signal.as_str())?;
        if let Some(name) = &self.name {
            write!(f, "/{name}")?;
        }
        Ok(())
    }
}

impl FromStr for PipelineId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (signal, name) = split_id(s);
        let signal = parse_signal(signal).map_err(|e: IdError| IdError {
            message: format!("pipeline `{s}` has an {}", e.message),
            help: e.help,
        })?;
        if let Some(name) = name {
            check_name(name, s)?;
        }
        Ok(PipelineId {
            signal,
            name: name.map(str::to_string),
        })
    }
}

impl Serialize for PipelineId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PipelineId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_round_trips() {
        for s in Signal::ALL {
            assert_eq!(parse_signal(s.as_str()).unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
        }
        let err = parse_signal("trace").unwrap_err();
        assert_eq!(err.message, "unknown signal `trace`");
        assert_eq!(err.help.as_deref(), Some("did you mean `traces`?"));
        assert_eq!(
            serde_json::to_string(&Signal::Metrics).unwrap(),
            "\"metrics\""
        );
    }

    #[test]
    fn kind_names() {
        assert_eq!(Kind::Receiver.as_str(), "receiver");
        assert_eq!(Kind::Connector.section(), "connectors");
        assert_eq!(Kind::ALL.len(), 5);
    }

    #[test]
    fn component_id_parses_and_displays() {
        let id: ComponentId = "otlp/internal".parse().unwrap();
        assert_eq!(id, ComponentId::with_name("otlp", "internal"));
        assert_eq!(id.to_string(), "otlp/internal");
        let id: ComponentId = "memory_limiter".parse().unwrap();
        assert_eq!(id, ComponentId::new("memory_limiter"));
        assert_eq!(id.to_string(), "memory_limiter");
        assert!(ComponentId::new("a") < ComponentId::with_name("a", "b"));
    }

    #[test]
    fn component_id_rejects_bad_input() {
        for bad in ["", "/x", "otlp/", "1otlp", "ot-lp", "otlp/a/b", "otlp/a b"] {
            assert!(bad.parse::<ComponentId>().is_err(), "{bad:?} should fail");
        }
        let err = "/x".parse::<ComponentId>().unwrap_err();
        assert!(err.message.contains("empty type"), "{err}");
    }

    #[test]
    fn pipeline_id_parses() {
        let id: PipelineId = "metrics/red".parse().unwrap();
        assert_eq!(id.signal, Signal::Metrics);
        assert_eq!(id.name.as_deref(), Some("red"));
        assert_eq!(id.to_string(), "metrics/red");
        assert_eq!("logs".parse::<PipelineId>().unwrap().name, None);
        let err = "trace/x".parse::<PipelineId>().unwrap_err();
        assert!(err.message.contains("unknown signal `trace`"), "{err}");
        assert_eq!(err.help.as_deref(), Some("did you mean `traces`?"));
        assert!("traces/".parse::<PipelineId>().is_err());
    }

    #[test]
    fn ids_serde_as_strings() {
        let id: ComponentId = serde_json::from_str("\"otlp/a\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"otlp/a\"");
        assert!(serde_json::from_str::<ComponentId>("\"\"").is_err());
        let p: PipelineId = serde_json::from_str("\"traces/x\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"traces/x\"");
    }
}
