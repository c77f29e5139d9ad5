//! The `spanmetrics` config, with the OpenTelemetry Collector's key names, and its resolution
//! into the [`Settings`] the aggregator runs on (metric and label names, bucket bounds in the
//! chosen unit, the instance id).

use crate::histogram::DEFAULT_BOUNDS_SECONDS;
use meshgate_config::DurationValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

/// Data-point attribute of the series that collects new combinations past
/// `aggregation_cardinality_limit` (the OpenTelemetry metrics SDK's name for it).
pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";
/// Data-point attribute naming the meshgate replica that produced a series
/// (`include_instance_id`).
pub const INSTANCE_ATTRIBUTE: &str = "meshgate.instance.id";
/// `service.name` when a span's resource has none (the OpenTelemetry SDK default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Config of the `spanmetrics` connector.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    /// The duration histogram: unit, explicit or exponential buckets, or none. Default:
    /// seconds, explicit buckets from 2ms to 15s.
    pub histogram: HistogramConfig,
    /// Extra labels taken from span attributes (then resource attributes), each with an
    /// optional `default` used when the attribute is missing; without a default the label is
    /// left out. Default: none.
    pub dimensions: Vec<Dimension>,
    /// Built-in labels to leave out of every series (and of its identity): any of
    /// `service.name`, `span.name`, `span.kind`, `status.code` (Tempo spellings `service`,
    /// `span_name`, `span_kind`, `status_code` work too). Default: none.
    pub exclude_dimensions: Vec<String>,
    /// `AGGREGATION_TEMPORALITY_CUMULATIVE` (running totals since the series was created) or
    /// `AGGREGATION_TEMPORALITY_DELTA` (what happened since the previous flush; only series
    /// that saw spans are emitted). Default: `AGGREGATION_TEMPORALITY_CUMULATIVE`.
    pub aggregation_temporality: Temporality,
    /// How often the metrics are emitted (they are also emitted at shutdown). Default: `15s`.
    pub metrics_flush_interval: DurationValue,
    /// A series that saw no span for this long is removed (counted on
    /// `meshgate_connector_spanmetrics_series_expired_total`); a cumulative series that comes
    /// back starts again from zero. `0s` keeps series forever. Default: `5m`.
    pub metrics_expiration: DurationValue,
    /// Trace and span ids of sample spans attached to the duration histogram points, so a
    /// dashboard can jump from a slow bucket to a trace. Default: `enabled: false`.
    pub exemplars: ExemplarsConfig,
    /// Prefix of the metric names: `<namespace>.calls` and `<namespace>.duration`; empty for
    /// bare `calls` / `duration`. Not allowed with `naming: tempo`. Default:
    /// `traces.span.metrics`.
    pub namespace: Option<String>,
    /// Metric and label names: `otel` (the OpenTelemetry Collector's) or `tempo` (Grafana
    /// Tempo's metrics-generator: `traces_spanmetrics_calls_total`,
    /// `traces_spanmetrics_latency`, labels `service`, `span_name`, `span_kind`,
    /// `status_code`). Default: `otel`.
    pub naming: Naming,
    /// Most label combinations tracked at once, over all services (overflow series not
    /// counted). Past it, spans of a new combination go to one overflow series per service,
    /// labelled `otel.metric.overflow=true` (and `service.name`), counted on
    /// `meshgate_connector_spanmetrics_overflow_spans_total`; once expiry frees room, new
    /// combinations get their own series again. `0` means no limit. Default: `10000`.
    pub aggregation_cardinality_limit: usize,
    /// Adds the data-point attribute `meshgate.instance.id` to every series, so several
    /// replicas deriving metrics for the same services never emit clashing series.
    /// Default: `false`.
    pub include_instance_id: bool,
    /// The value of `meshgate.instance.id`; only with `include_instance_id: true`. Default:
    /// the `HOSTNAME` environment variable (the pod name on Kubernetes), else the machine's
    /// hostname.
    pub instance_id: Option<String>,
    /// Resource attributes that, besides `service.name`, tell the output resources apart and
    /// are copied onto them (e.g. `service.namespace`, `deployment.environment`). Default:
    /// none (one output resource per `service.name`).
    pub resource_metrics_key_attributes: Vec<String>,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        Self {
            histogram: HistogramConfig::default(),
            dimensions: Vec::new(),
            exclude_dimensions: Vec::new(),
            aggregation_temporality: Temporality::Cumulative,
            metrics_flush_interval: DurationValue(Duration::from_secs(15)),
            metrics_expiration: DurationValue(Duration::from_secs(300)),
            exemplars: ExemplarsConfig::default(),
            namespace: None,
            naming: Naming::Otel,
            aggregation_cardinality_limit: 10_000,
            include_instance_id: false,
            instance_id: None,
            resource_metrics_key_attributes: Vec::new(),
        }
    }
}

/// `histogram`: how span durations are recorded.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HistogramConfig {
    /// Unit of the recorded durations and of the metric: `s` or `ms`. Default: `s`.
    pub unit: DurationUnit,
    /// Explicit bucket bounds. Exclusive with `exponential`. Default (when neither is set):
    /// explicit buckets `2ms, 4ms, 6ms, 8ms, 10ms, 50ms, 100ms, 200ms, 400ms, 800ms, 1s,
    /// 1400ms, 2s, 5s, 10s, 15s`.
    #[serde(deserialize_with = "present_or_default")]
    pub explicit: Option<ExplicitBuckets>,
    /// Base-2 exponential buckets that adapt their scale to the values seen. Exclusive with
    /// `explicit`. `exponential:` with no body uses the defaults. Default: not used.
    #[serde(deserialize_with = "present_or_default")]
    pub exponential: Option<ExponentialBuckets>,
    /// No duration histogram at all, only the calls counter. Default: `false`.
    pub disable: bool,
}

/// A key written without a body (`exponential:` in YAML, i.e. null) selects that option with
/// its defaults instead of silently meaning "not set".
fn present_or_default<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// `histogram.explicit`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExplicitBuckets {
    /// Upper bounds of the buckets as durations (`2ms`, `100ms`, `1s`), strictly increasing;
    /// values above the last go to an open-ended bucket. Default: `2ms` to `15s` (see
    /// `histogram.explicit`).
    pub buckets: Option<Vec<DurationValue>>,
}

/// `histogram.exponential`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExponentialBuckets {
    /// Most buckets per data point; the scale drops (buckets widen) when the values need
    /// more. At least 2. Default: `160`.
    #[schemars(range(min = 2))]
    pub max_size: u32,
}

impl Default for ExponentialBuckets {
    fn default() -> Self {
        Self { max_size: 160 }
    }
}

/// Unit of the duration histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
pub enum DurationUnit {
    /// Seconds (OTLP unit `s`; Prometheus `_seconds`).
    #[default]
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds (OTLP unit `ms`; Prometheus `_milliseconds`).
    #[serde(rename = "ms")]
    Milliseconds,
}

/// One configured dimension.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    /// Attribute key, looked up on the span, then on its resource; also the label name.
    /// Required.
    pub name: String,
    /// Label value when the attribute is missing; without it the label is left out.
    /// Default: none.
    #[serde(default)]
    pub default: Option<String>,
}

/// `aggregation_temporality`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Temporality {
    /// Running totals since the series was created.
    #[serde(rename = "AGGREGATION_TEMPORALITY_CUMULATIVE")]
    Cumulative,
    /// Only what happened since the previous flush.
    #[serde(rename = "AGGREGATION_TEMPORALITY_DELTA")]
    Delta,
}

/// `exemplars`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExemplarsConfig {
    /// Attach exemplars to the duration histogram points. Default: `false`.
    pub enabled: bool,
    /// Most exemplars per data point and flush, sampled uniformly among the spans of the
    /// interval. At least 1. Default: `5`.
    #[schemars(range(min = 1))]
    pub max_per_data_point: usize,
}

impl Default for ExemplarsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_per_data_point: 5,
        }
    }
}

/// `naming`: whose metric and label names to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// The OpenTelemetry Collector's: `traces.span.metrics.calls` / `.duration`, labels
    /// `service.name`, `span.name`, `span.kind`, `status.code`.
    Otel,
    /// Grafana Tempo's: `traces_spanmetrics_calls_total` / `traces_spanmetrics_latency`
    /// (seconds), labels `service`, `span_name`, `span_kind`, `status_code`.
    Tempo,
}

/// The four built-in labels, in the order they appear on a data point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Builtin {
    Service,
    SpanName,
    SpanKind,
    StatusCode,
}

impl Builtin {
    const ALL: [Builtin; 4] = [
        Builtin::Service,
        Builtin::SpanName,
        Builtin::SpanKind,
        Builtin::StatusCode,
    ];

    fn otel_name(self) -> &'static str {
        match self {
            Builtin::Service => "service.name",
            Builtin::SpanName => "span.name",
            Builtin::SpanKind => "span.kind",
            Builtin::StatusCode => "status.code",
        }
    }

    fn tempo_name(self) -> &'static str {
        match self {
            Builtin::Service => "service",
            Builtin::SpanName => "span_name",
            Builtin::SpanKind => "span_kind",
            Builtin::StatusCode => "status_code",
        }
    }

    fn label(self, naming: Naming) -> &'static str {
        match naming {
            Naming::Otel => self.otel_name(),
            Naming::Tempo => self.tempo_name(),
        }
    }

    fn parse(s: &str) -> Option<Builtin> {
        Builtin::ALL
            .into_iter()
            .find(|b| b.otel_name() == s || b.tempo_name() == s)
    }
}

/// How durations are aggregated, resolved from `histogram`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HistogramKind {
    /// `histogram.disable`.
    Disabled,
    /// Upper bounds in the histogram's unit.
    Explicit(Vec<f64>),
    /// Exponential with at most this many buckets.
    Exponential(usize),
}

/// A config resolved into what the aggregator needs on its hot path and at flush.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub calls_name: String,
    pub calls_unit: &'static str,
    pub duration_name: String,
    pub duration_unit: &'static str,
    /// Nanoseconds per unit of the histogram (1e9 for seconds, 1e6 for milliseconds).
    pub nanos_per_unit: f64,
    pub histogram: HistogramKind,
    /// Label names of the built-ins, `None` when excluded.
    pub service_label: Option<&'static str>,
    pub span_name_label: Option<&'static str>,
    pub span_kind_label: Option<&'static str>,
    pub status_label: Option<&'static str>,
    pub dimensions: Vec<Dimension>,
    pub delta: bool,
    /// 0 = never.
    pub expiration_nanos: u64,
    /// 0 = exemplars disabled.
    pub exemplars_per_point: usize,
    /// 0 = unlimited.
    pub cardinality_limit: usize,
    pub instance_id: Option<String>,
    pub key_attributes: Vec<String>,
}

impl SpanMetricsConfig {
    /// Checks what the schema cannot: exclusive options, bucket order, name clashes. The
    /// message names the key to fix.
    pub fn validate(&self) -> Result<(), String> {
        let h = &self.histogram;
        if h.explicit.is_some() && h.exponential.is_some() {
            return Err(
                "`histogram.explicit` and `histogram.exponential` are exclusive: keep one".into(),
            );
        }
        if let Some(buckets) = h.explicit.as_ref().and_then(|e| e.buckets.as_ref()) {
            if buckets.is_empty() {
                return Err(
                    "`histogram.explicit.buckets` is empty: list at least one bound, \
                            or remove the key for the defaults"
                        .into(),
                );
            }
            for (i, pair) in buckets.windows(2).enumerate() {
                if pair[1].0 <= pair[0].0 {
                    return Err(format!(
                        "`histogram.explicit.buckets` must be strictly increasing: \
                         [{}] ({}) is not greater than [{i}] ({})",
                        i + 1,
                        pair[1],
                        pair[0]
                    ));
                }
            }
        }
        if let Some(e) = &h.exponential
            && e.max_size < 2
        {
            return Err(format!(
                "`histogram.exponential.max_size` is {}: it must be at least 2",
                e.max_size
            ));
        }
        if self.exemplars.enabled && h.disable {
            return Err("`exemplars.enabled` needs the duration histogram, which \
                        `histogram.disable: true` turns off"
                .into());
        }
        if self.exemplars.enabled && self.exemplars.max_per_data_point == 0 {
            return Err("`exemplars.max_per_data_point` must be at least 1".into());
        }
        if self.metrics_flush_interval.0.is_zero() {
            return Err("`metrics_flush_interval` must be greater than 0s".into());
        }
        if self.naming == Naming::Tempo {
            if self.namespace.is_some() {
                return Err(
                    "`namespace` does not apply with `naming: tempo` (Tempo's names \
                            are fixed): remove one of them"
                        .into(),
                );
            }
            if h.unit == DurationUnit::Milliseconds {
                return Err(
                    "`naming: tempo` records `traces_spanmetrics_latency` in seconds, \
                            as Tempo does: remove `histogram.unit: ms`"
                        .into(),
                );
            }
        }
        let mut excluded = HashSet::new();
        for name in &self.exclude_dimensions {
            let Some(b) = Builtin::parse(name) else {
                return Err(format!(
                    "`exclude_dimensions`: `{name}` is not a built-in label; valid: \
                     `service.name`, `span.name`, `span.kind`, `status.code`"
                ));
            };
            if !excluded.insert(b) {
                return Err(format!("`exclude_dimensions` lists `{name}` twice"));
            }
        }
        let reserved: Vec<&str> = Builtin::ALL
            .iter()
            .map(|b| b.label(self.naming))
            .chain([OVERFLOW_ATTRIBUTE, INSTANCE_ATTRIBUTE])
            .collect();
        let mut seen = HashSet::new();
        for (i, d) in self.dimensions.iter().enumerate() {
            if d.name.is_empty() {
                return Err(format!("`dimensions[{i}].name` is empty"));
            }
            if reserved.contains(&d.name.as_str()) {
                return Err(format!(
                    "`dimensions[{i}]`: `{}` is a label spanmetrics always sets; remove it",
                    d.name
                ));
            }
            if !seen.insert(d.name.as_str()) {
                return Err(format!(
                    "`dimensions[{i}]`: `{}` is listed twice; keep one",
                    d.name
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, k) in self.resource_metrics_key_attributes.iter().enumerate() {
            if k.is_empty() {
                return Err(format!("`resource_metrics_key_attributes[{i}]` is empty"));
            }
            if k == "service.name" {
                return Err(format!(
                    "`resource_metrics_key_attributes[{i}]`: `service.name` always tells the \
                     output resources apart; remove it"
                ));
            }
            if !seen.insert(k.as_str()) {
                return Err(format!(
                    "`resource_metrics_key_attributes[{i}]`: `{k}` is listed twice"
                ));
            }
        }
        match &self.instance_id {
            Some(_) if !self.include_instance_id => {
                return Err(
                    "`instance_id` is set but `include_instance_id` is false: set \
                            `include_instance_id: true` to use it"
                        .into(),
                );
            }
            Some(id) if id.trim().is_empty() => {
                return Err("`instance_id` is empty: remove it to use the hostname".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// Validates and resolves the config. `env` reads an environment variable and `hostname`
    /// the machine's hostname (injected so tests need neither).
    pub(crate) fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
        hostname: impl Fn() -> Option<String>,
    ) -> Result<Settings, String> {
        self.validate()?;
        let h = &self.histogram;
        let (nanos_per_unit, unit_name) = match h.unit {
            DurationUnit::Seconds => (1e9, "s"),
            DurationUnit::Milliseconds => (1e6, "ms"),
        };
        let histogram = if h.disable {
            HistogramKind::Disabled
        } else if let Some(e) = &h.exponential {
            HistogramKind::Exponential(e.max_size as usize)
        } else {
            let bounds = match h.explicit.as_ref().and_then(|e| e.buckets.as_ref()) {
                Some(b) => b
                    .iter()
                    .map(|d| d.0.as_nanos() as f64 / nanos_per_unit)
                    .collect(),
                None => DEFAULT_BOUNDS_SECONDS
                    .iter()
                    .map(|s| s * 1e9 / nanos_per_unit)
                    .collect(),
            };
            HistogramKind::Explicit(bounds)
        };
        let (calls_name, calls_unit, duration_name, duration_unit) = match self.naming {
            Naming::Otel => {
                let ns = self.namespace.as_deref().unwrap_or("traces.span.metrics");
                let name = |m: &str| {
                    if ns.is_empty() {
                        m.to_string()
                    } else {
                        format!("{ns}.{m}")
                    }
                };
                (name("calls"), "{call}", name("duration"), unit_name)
            }
            // No OTLP unit: the Prometheus translation would append `_seconds`, and
            // Tempo's dashboards query `traces_spanmetrics_latency_bucket`.
            Naming::Tempo => (
                "traces_spanmetrics_calls_total".to_string(),
                "",
                "traces_spanmetrics_latency".to_string(),
                "",
            ),
        };
        let excluded: Vec<Builtin> = self
            .exclude_dimensions
            .iter()
            .filter_map(|n| Builtin::parse(n))
            .collect();
        let label = |b: Builtin| (!excluded.contains(&b)).then(|| b.label(self.naming));
        let instance_id = if self.include_instance_id {
            let id = self
                .instance_id
                .clone()
                .or_else(|| env("HOSTNAME").filter(|s| !s.trim().is_empty()))
                .or_else(|| hostname().filter(|s| !s.trim().is_empty()))
                .ok_or(
                    "`include_instance_id` is true but neither `instance_id` nor the HOSTNAME \
                     environment variable is set and the hostname cannot be read: set \
                     `instance_id`",
                )?;
            Some(id.trim().to_string())
        } else {
            None
        };
        Ok(Settings {
            calls_name,
            calls_unit,
            duration_name,
            duration_unit,
            nanos_per_unit,
            histogram,
            service_label: label(Builtin::Service),
            span_name_label: label(Builtin::SpanName),
            span_kind_label: label(Builtin::SpanKind),
            status_label: label(Builtin::StatusCode),
            dimensions: self.dimensions.clone(),
            delta: self.aggregation_temporality == Temporality::Delta,
            expiration_nanos: self.metrics_expiration.0.as_nanos().min(u64::MAX as u128) as u64,
            exemplars_per_point: if self.exemplars.enabled {
                self.exemplars.max_per_data_point
            } else {
                0
            },
            cardinality_limit: self.aggregation_cardinality_limit,
            instance_id,
            key_attributes: self.resource_metrics_key_attributes.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<SpanMetricsConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    fn resolve(v: serde_json::Value) -> Result<Settings, String> {
        parse(v)?.resolve(|_| None, || None)
    }

    #[test]
    fn defaults_are_the_collectors_names_with_seconds_and_default_buckets() {
        let s = resolve(json!({})).unwrap();
        assert_eq!(s.calls_name, "traces.span.metrics.calls");
        assert_eq!(s.calls_unit, "{call}");
        assert_eq!(s.duration_name, "traces.span.metrics.duration");
        assert_eq!(s.duration_unit, "s");
        assert_eq!(
            s.histogram,
            HistogramKind::Explicit(DEFAULT_BOUNDS_SECONDS.to_vec())
        );
        assert!(!s.delta);
        assert_eq!(s.expiration_nanos, 300_000_000_000);
        assert_eq!(s.cardinality_limit, 10_000);
        assert_eq!(s.exemplars_per_point, 0);
        assert_eq!(s.instance_id, None);
        assert_eq!(
            (
                s.service_label,
                s.span_name_label,
                s.span_kind_label,
                s.status_label
            ),
            (
                Some("service.name"),
                Some("span.name"),
                Some("span.kind"),
                Some("status.code")
            )
        );
        let c = parse(json!({})).unwrap();
        assert_eq!(c.metrics_flush_interval.0, Duration::from_secs(15));
    }

    #[test]
    fn bucket_durations_convert_to_the_unit() {
        let s = resolve(
            json!({"histogram": {"unit": "ms", "explicit": {"buckets": ["2ms", "100ms", "1s"]}}}),
        )
        .unwrap();
        assert_eq!(
            s.histogram,
            HistogramKind::Explicit(vec![2.0, 100.0, 1000.0])
        );
        assert_eq!(s.duration_unit, "ms");
        let s = resolve(json!({"histogram": {"explicit": {"buckets": ["2ms", "1s"]}}})).unwrap();
        assert_eq!(s.histogram, HistogramKind::Explicit(vec![0.002, 1.0]));
        let s = resolve(json!({"histogram": {"unit": "ms"}})).unwrap();
        assert_eq!(
            s.histogram,
            HistogramKind::Explicit(DEFAULT_BOUNDS_SECONDS.iter().map(|b| b * 1000.0).collect())
        );
        let s = resolve(json!({"histogram": {"exponential": {}}})).unwrap();
        assert_eq!(s.histogram, HistogramKind::Exponential(160));
        // `exponential:` with no body in YAML arrives as null: selected, with defaults.
        let s = resolve(json!({"histogram": {"exponential": null}})).unwrap();
        assert_eq!(s.histogram, HistogramKind::Exponential(160));
        let s = resolve(json!({"histogram": {"explicit": null}})).unwrap();
        assert_eq!(
            s.histogram,
            HistogramKind::Explicit(DEFAULT_BOUNDS_SECONDS.to_vec())
        );
    }

    #[test]
    fn namespace_and_tempo_naming() {
        let s = resolve(json!({"namespace": "mesh"})).unwrap();
        assert_eq!(
            (s.calls_name.as_str(), s.duration_name.as_str()),
            ("mesh.calls", "mesh.duration")
        );
        let s = resolve(json!({"namespace": ""})).unwrap();
        assert_eq!(s.calls_name, "calls");
        let s = resolve(json!({"naming": "tempo", "exclude_dimensions": ["span_kind"]})).unwrap();
        assert_eq!(s.calls_name, "traces_spanmetrics_calls_total");
        assert_eq!(s.duration_name, "traces_spanmetrics_latency");
        assert_eq!(s.service_label, Some("service"));
        assert_eq!(s.span_kind_label, None);
        assert_eq!(s.nanos_per_unit, 1e9);
    }

    #[test]
    fn instance_id_comes_from_config_then_hostname_env_then_the_machine() {
        let c = parse(json!({"include_instance_id": true, "instance_id": " gw-1 "})).unwrap();
        let s = c
            .resolve(|_| Some("pod-7".into()), || Some("host".into()))
            .unwrap();
        assert_eq!(s.instance_id.as_deref(), Some("gw-1"));
        let c = parse(json!({"include_instance_id": true})).unwrap();
        let env = |k: &str| (k == "HOSTNAME").then(|| "pod-7".to_string());
        assert_eq!(
            c.resolve(env, || None).unwrap().instance_id.as_deref(),
            Some("pod-7")
        );
        assert_eq!(
            c.resolve(|_| None, || Some("host-3".into()))
                .unwrap()
                .instance_id
                .as_deref(),
            Some("host-3")
        );
        let e = c.resolve(|_| None, || None).unwrap_err();
        assert!(e.contains("set `instance_id`"), "{e}");
        assert!(crate::system_hostname().is_none_or(|h| !h.is_empty()));
    }

    #[test]
    fn invalid_combinations_are_explained() {
        let cases = [
            (
                json!({"histogram": {"explicit": {}, "exponential": {}}}),
                "`histogram.explicit` and `histogram.exponential` are exclusive",
            ),
            (
                json!({"histogram": {"explicit": {"buckets": []}}}),
                "`histogram.explicit.buckets` is empty",
            ),
            (
                json!({"histogram": {"explicit": {"buckets": ["10ms", "5ms"]}}}),
                "[1] (5ms) is not greater than [0] (10ms)",
            ),
            (
                json!({"histogram": {"exponential": {"max_size": 1}}}),
                "must be at least 2",
            ),
            (
                json!({"histogram": {"disable": true}, "exemplars": {"enabled": true}}),
                "`exemplars.enabled` needs the duration histogram",
            ),
            (
                json!({"exemplars": {"enabled": true, "max_per_data_point": 0}}),
                "`exemplars.max_per_data_point` must be at least 1",
            ),
            (json!({"metrics_flush_interval": "0s"}), "greater than 0s"),
            (
                json!({"naming": "tempo", "namespace": "x"}),
                "`namespace` does not apply with `naming: tempo`",
            ),
            (
                json!({"naming": "tempo", "histogram": {"unit": "ms"}}),
                "remove `histogram.unit: ms`",
            ),
            (
                json!({"exclude_dimensions": ["http.method"]}),
                "`http.method` is not a built-in label",
            ),
            (
                json!({"exclude_dimensions": ["span.kind", "span_kind"]}),
                "lists `span_kind` twice",
            ),
            (
                json!({"dimensions": [{"name": "span.name"}]}),
                "`span.name` is a label spanmetrics always sets",
            ),
            (
                json!({"naming": "tempo", "dimensions": [{"name": "service"}]}),
                "`service` is a label spanmetrics always sets",
            ),
            (
                json!({"dimensions": [{"name": "a"}, {"name": "a", "default": "x"}]}),
                "`dimensions[1]`: `a` is listed twice",
            ),
            (
                json!({"dimensions": [{"name": ""}]}),
                "`dimensions[0].name` is empty",
            ),
            (
                json!({"resource_metrics_key_attributes": ["service.name"]}),
                "`service.name` always tells the output resources apart",
            ),
            (
                json!({"resource_metrics_key_attributes": ["a", "a"]}),
                "`a` is listed twice",
            ),
            (
                json!({"instance_id": "x"}),
                "`include_instance_id` is false",
            ),
            (
                json!({"include_instance_id": true, "instance_id": " "}),
                "`instance_id` is empty",
            ),
        ];
        for (cfg, want) in cases {
            let e = resolve(cfg.clone()).unwrap_err();
            assert!(e.contains(want), "{cfg}: {e}");
        }
        let e = parse(json!({"aggregation_temporality": "DELTA"})).unwrap_err();
        assert!(e.contains("AGGREGATION_TEMPORALITY_DELTA"), "{e}");
        let e = parse(json!({"dimensions": [{"default": "x"}]})).unwrap_err();
        assert!(e.contains("missing field `name`"), "{e}");
    }
}
