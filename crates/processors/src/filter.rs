//! `filter`: drops spans, log records, metrics and metric data points that match
//! conditions.
//!
//! The config keeps the OpenTelemetry Collector's layout (`traces.span`, `logs.log_record`,
//! `metrics.metric`, `metrics.datapoint`: lists of conditions, an item matching ANY of them
//! is dropped), but a condition is a small structured object instead of an OTTL statement:
//! every field given must match (AND). OTTL strings (`'attributes["x"] == "y"'`) are not
//! supported and are rejected with a config error.
//!
//! Resources and scopes left empty by filtering are removed, and so are metrics whose data
//! points were all dropped; a request that ends up empty is not passed on.

use crate::actions::AttributeValue;
use crate::points::{point_count, retain_points};
use meshgate_engine::telemetry::Counter;
use meshgate_engine::{BuildContext, Factory, Processor, ProcessorContext, ProcessorFactory};
use meshgate_pdata::attributes::{get, value_to_string};
use meshgate_pdata::otlp::{KeyValue, LogRecord, Metric, Resource, Span, span, status};
use meshgate_pdata::{Payload, Signal};
use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Config of the `filter` processor. Sections for signals other than the pipeline's are
/// ignored, so one filter can serve pipelines of every signal.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Conditions for trace pipelines. Default: none (nothing dropped).
    pub traces: TracesFilter,
    /// Conditions for log pipelines. Default: none (nothing dropped).
    pub logs: LogsFilter,
    /// Conditions for metric pipelines. Default: none (nothing dropped).
    pub metrics: MetricsFilter,
}

/// Trace conditions.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TracesFilter {
    /// A span matching any of these conditions is dropped. Fields that apply: `name` (span
    /// name), `kind`, `status`, `attributes` (span attributes), `resource_attributes`.
    /// Default: empty.
    pub span: Vec<Condition>,
}

/// Log conditions.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogsFilter {
    /// A log record matching any of these conditions is dropped. Fields that apply:
    /// `severity_below`, `attributes` (log record attributes), `resource_attributes`.
    /// Default: empty.
    pub log_record: Vec<Condition>,
}

/// Metric conditions.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsFilter {
    /// A metric (with all its data points) matching any of these conditions is dropped.
    /// Fields that apply: `name` (metric name), `resource_attributes`. Default: empty.
    pub metric: Vec<Condition>,
    /// A data point matching any of these conditions is dropped. Fields that apply: `name`
    /// (name of the point's metric), `attributes` (data point attributes),
    /// `resource_attributes`. Default: empty.
    pub datapoint: Vec<Condition>,
}

/// One condition: an item matches when EVERY field given matches (AND); a list of
/// conditions drops an item matching ANY of them (OR). At least one field is required.
/// This is a deliberate simplification of the collector's OTTL conditions; OTTL strings are
/// not supported.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Regular expression on the span name or metric name, unanchored (`^...$` for a whole
    /// name match). Spans, metrics and data points only.
    pub name: Option<String>,
    /// Span kind: `server`, `client`, `internal`, `producer` or `consumer`. Spans only.
    pub kind: Option<SpanKindName>,
    /// Span status code: `unset`, `ok` or `error`. Spans only.
    pub status: Option<StatusName>,
    /// Matches log records whose severity number is below this level (`TRACE`, `DEBUG`,
    /// `INFO`, `WARN`, `ERROR`, `FATAL`), e.g. `INFO` drops TRACE and DEBUG. Records without
    /// a severity number (0, unspecified) never match. Log records only.
    pub severity_below: Option<SeverityName>,
    /// Conditions on the item's own attributes (span, log record or data point), by key;
    /// all must hold. Values are compared in their text form, so `{ "equals": "200" }`
    /// matches both the string `"200"` and the integer `200`.
    #[serde(default)]
    pub attributes: BTreeMap<String, ValueMatch>,
    /// Conditions on resource attributes, by key, in the same form as `attributes`; all
    /// must hold.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, ValueMatch>,
}

/// A test on one attribute: exactly one of `equals`, `regex` or `exists`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueMatch {
    /// The attribute is present and its text form equals this value (`{ "equals": "200" }`).
    Equals(AttributeValue),
    /// The attribute is present and its text form matches this regular expression,
    /// unanchored (`{ "regex": "^5.." }`).
    Regex(String),
    /// `{ "exists": true }`: the attribute is present; `false`: it is absent.
    Exists(bool),
}

/// Span kind names.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpanKindName {
    /// `SPAN_KIND_SERVER`.
    Server,
    /// `SPAN_KIND_CLIENT`.
    Client,
    /// `SPAN_KIND_INTERNAL`.
    Internal,
    /// `SPAN_KIND_PRODUCER`.
    Producer,
    /// `SPAN_KIND_CONSUMER`.
    Consumer,
}

/// Span status code names.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusName {
    /// `STATUS_CODE_UNSET`.
    Unset,
    /// `STATUS_CODE_OK`.
    Ok,
    /// `STATUS_CODE_ERROR`.
    Error,
}

/// Log severity levels (the lowest severity number of each range).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum SeverityName {
    /// Severity number 1.
    Trace,
    /// Severity number 5.
    Debug,
    /// Severity number 9.
    Info,
    /// Severity number 13.
    Warn,
    /// Severity number 17.
    Error,
    /// Severity number 21.
    Fatal,
}

impl SeverityName {
    fn number(self) -> i32 {
        match self {
            SeverityName::Trace => 1,
            SeverityName::Debug => 5,
            SeverityName::Info => 9,
            SeverityName::Warn => 13,
            SeverityName::Error => 17,
            SeverityName::Fatal => 21,
        }
    }
}

/// What a condition list applies to, for validation and error messages.
#[derive(Clone, Copy)]
enum Context {
    Span,
    LogRecord,
    Metric,
    DataPoint,
}

impl Context {
    fn path(self) -> &'static str {
        match self {
            Context::Span => "traces.span",
            Context::LogRecord => "logs.log_record",
            Context::Metric => "metrics.metric",
            Context::DataPoint => "metrics.datapoint",
        }
    }
    fn items(self) -> &'static str {
        match self {
            Context::Span => "spans",
            Context::LogRecord => "log records",
            Context::Metric => "metrics",
            Context::DataPoint => "data points",
        }
    }
}

enum Matcher {
    Equals(String),
    Regex(Regex),
    Exists(bool),
}

impl Matcher {
    fn matches(&self, attrs: &[KeyValue], key: &str) -> bool {
        match (self, get(attrs, key)) {
            (Matcher::Exists(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Matcher::Equals(s), Some(v)) => value_to_string(v) == *s,
            (Matcher::Regex(re), Some(v)) => re.is_match(&value_to_string(v)),
        }
    }
}

/// A compiled condition.
struct Cond {
    name: Option<Regex>,
    kind: Option<i32>,
    status: Option<i32>,
    severity_below: Option<i32>,
    attributes: Vec<(String, Matcher)>,
    resource_attributes: Vec<(String, Matcher)>,
}

fn all_match(list: &[(String, Matcher)], attrs: &[KeyValue]) -> bool {
    list.iter().all(|(k, m)| m.matches(attrs, k))
}

impl Cond {
    fn compile(c: &Condition, ctx: Context, index: usize) -> Result<Cond, String> {
        let at = |field: &str| format!("{}[{index}]{field}", ctx.path());
        let not_for = |field: &str| {
            Err(format!(
                "{}: `{field}` does not apply to {}",
                at(""),
                ctx.items()
            ))
        };
        let allowed = |field: &str| -> bool {
            match ctx {
                Context::Span => !matches!(field, "severity_below"),
                Context::LogRecord => matches!(
                    field,
                    "severity_below" | "attributes" | "resource_attributes"
                ),
                Context::Metric => matches!(field, "name" | "resource_attributes"),
                Context::DataPoint => {
                    matches!(field, "name" | "attributes" | "resource_attributes")
                }
            }
        };
        let given = [
            ("name", c.name.is_some()),
            ("kind", c.kind.is_some()),
            ("status", c.status.is_some()),
            ("severity_below", c.severity_below.is_some()),
            ("attributes", !c.attributes.is_empty()),
            ("resource_attributes", !c.resource_attributes.is_empty()),
        ];
        if !given.iter().any(|(_, g)| *g) {
            return Err(format!(
                "{}: a condition needs at least one field (an empty one would drop all {})",
                at(""),
                ctx.items()
            ));
        }
        for (field, g) in given {
            if g && !allowed(field) {
                return not_for(field);
            }
        }
        let regex = |field: String, re: &str| {
            Regex::new(re).map_err(|e| format!("{field}: invalid regex `{re}`: {e}"))
        };
        let matchers = |field: &str, m: &BTreeMap<String, ValueMatch>| {
            m.iter()
                .map(|(k, v)| {
                    let matcher = match v {
                        ValueMatch::Equals(v) => Matcher::Equals(v.as_text()),
                        ValueMatch::Regex(re) => {
                            Matcher::Regex(regex(at(&format!(".{field}.{k}")), re)?)
                        }
                        ValueMatch::Exists(b) => Matcher::Exists(*b),
                    };
                    Ok((k.clone(), matcher))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(Cond {
            name: c
                .name
                .as_deref()
                .map(|re| regex(at(".name"), re))
                .transpose()?,
            kind: c.kind.map(|k| {
                (match k {
                    SpanKindName::Server => span::SpanKind::Server,
                    SpanKindName::Client => span::SpanKind::Client,
                    SpanKindName::Internal => span::SpanKind::Internal,
                    SpanKindName::Producer => span::SpanKind::Producer,
                    SpanKindName::Consumer => span::SpanKind::Consumer,
                }) as i32
            }),
            status: c.status.map(|s| {
                (match s {
                    StatusName::Unset => status::StatusCode::Unset,
                    StatusName::Ok => status::StatusCode::Ok,
                    StatusName::Error => status::StatusCode::Error,
                }) as i32
            }),
            severity_below: c.severity_below.map(SeverityName::number),
            attributes: matchers("attributes", &c.attributes)?,
            resource_attributes: matchers("resource_attributes", &c.resource_attributes)?,
        })
    }

    fn name_ok(&self, name: &str) -> bool {
        self.name.as_ref().is_none_or(|re| re.is_match(name))
    }

    fn resource_ok(&self, resource: &[KeyValue]) -> bool {
        all_match(&self.resource_attributes, resource)
    }

    fn matches_span(&self, s: &Span, resource: &[KeyValue]) -> bool {
        self.name_ok(&s.name)
            && self.kind.is_none_or(|k| s.kind == k)
            && self
                .status
                .is_none_or(|c| s.status.as_ref().map_or(0, |st| st.code) == c)
            && all_match(&self.attributes, &s.attributes)
            && self.resource_ok(resource)
    }

    fn matches_log(&self, r: &LogRecord, resource: &[KeyValue]) -> bool {
        self.severity_below
            .is_none_or(|min| r.severity_number > 0 && r.severity_number < min)
            && all_match(&self.attributes, &r.attributes)
            && self.resource_ok(resource)
    }
}

fn compile_all(conds: &[Condition], ctx: Context) -> Result<Vec<Cond>, String> {
    conds
        .iter()
        .enumerate()
        .map(|(i, c)| Cond::compile(c, ctx, i))
        .collect()
}

fn attrs_of(r: &Option<Resource>) -> &[KeyValue] {
    r.as_ref().map_or(&[], |r| &r.attributes)
}

/// Explains that OTTL statements (the collector's form: a list of strings) are not
/// supported, before serde's generic "p: traces.span[0]: OTTL conditions are not supported" would.
/// Parses and compiles every section (even those another signal's pipeline uses): span,
/// log record, metric and data point conditions.
fn compile_config(config: &serde_json::Value) -> Result<[Vec<Cond>; 4], String> {
    reject_ottl(config)?;
    let cfg: FilterConfig = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    Ok([
        compile_all(&cfg.traces.span, Context::Span)?,
        compile_all(&cfg.logs.log_record, Context::LogRecord)?,
        compile_all(&cfg.metrics.metric, Context::Metric)?,
        compile_all(&cfg.metrics.datapoint, Context::DataPoint)?,
    ])
}

fn reject_ottl(config: &serde_json::Value) -> Result<(), String> {
    for ctx in [
        Context::Span,
        Context::LogRecord,
        Context::Metric,
        Context::DataPoint,
    ] {
        let pointer = format!("/{}", ctx.path().replace('.', "/"));
        let Some(serde_json::Value::Array(items)) = config.pointer(&pointer) else {
            continue;
        };
        if let Some(i) = items.iter().position(serde_json::Value::is_string) {
            return Err(format!(
                "{}[{i}]: OTTL conditions are not supported; write a condition object, e.g. \
                 `{{name: \"^health\", attributes: {{http.status_code: {{equals: \"200\"}}}}}}`",
                ctx.path()
            ));
        }
    }
    Ok(())
}

/// Factory of the `filter` processor.
pub struct FilterFactory;

impl Factory for FilterFactory {
    fn type_name(&self) -> &'static str {
        "filter"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "Drops spans, log records, metrics or data points matching conditions."
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(FilterConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        compile_config(config).map(|_| ())
    }
}

impl ProcessorFactory for FilterFactory {
    fn build(
        &self,
        ctx: BuildContext<'_>,
        pipeline: &ProcessorContext,
    ) -> Result<Box<dyn Processor>, String> {
        let id = &ctx.id;
        let [span, log_record, metric, datapoint] =
            compile_config(ctx.config).map_err(|e| format!("{id}: {e}"))?;
        let dropped = ctx.telemetry.counter(
            "meshgate_processor_dropped_items_total",
            "Items a processor dropped on purpose, by reason.",
            &[
                ("processor", id),
                ("pipeline", &pipeline.pipeline),
                ("signal", pipeline.signal.as_str()),
                ("reason", "filtered"),
            ],
        );
        Ok(Box::new(Filter {
            span,
            log_record,
            metric,
            datapoint,
            dropped,
        }))
    }
}

struct Filter {
    span: Vec<Cond>,
    log_record: Vec<Cond>,
    metric: Vec<Cond>,
    datapoint: Vec<Cond>,
    dropped: Counter,
}

impl Filter {
    /// Filters in place; returns the number of items dropped.
    fn filter(&self, data: &mut Payload) -> usize {
        let mut dropped = 0;
        match data {
            Payload::Traces(t) if !self.span.is_empty() => {
                t.resource_spans.retain_mut(|rs| {
                    let res = attrs_of(&rs.resource);
                    rs.scope_spans.retain_mut(|ss| {
                        let before = ss.spans.len();
                        ss.spans
                            .retain(|s| !self.span.iter().any(|c| c.matches_span(s, res)));
                        dropped += before - ss.spans.len();
                        !ss.spans.is_empty()
                    });
                    !rs.scope_spans.is_empty()
                });
            }
            Payload::Logs(l) if !self.log_record.is_empty() => {
                l.resource_logs.retain_mut(|rl| {
                    let res = attrs_of(&rl.resource);
                    rl.scope_logs.retain_mut(|sl| {
                        let before = sl.log_records.len();
                        sl.log_records
                            .retain(|r| !self.log_record.iter().any(|c| c.matches_log(r, res)));
                        dropped += before - sl.log_records.len();
                        !sl.log_records.is_empty()
                    });
                    !rl.scope_logs.is_empty()
                });
            }
            Payload::Metrics(m) if !(self.metric.is_empty() && self.datapoint.is_empty()) => {
                m.resource_metrics.retain_mut(|rm| {
                    let res = attrs_of(&rm.resource);
                    rm.scope_metrics.retain_mut(|sm| {
                        sm.metrics
                            .retain_mut(|m| self.keep_metric(m, res, &mut dropped));
                        !sm.metrics.is_empty()
                    });
                    !rm.scope_metrics.is_empty()
                });
            }
            _ => {}
        }
        dropped
    }

    /// Applies metric then data point conditions to one metric; false drops the metric.
    fn keep_metric(&self, m: &mut Metric, res: &[KeyValue], dropped: &mut usize) -> bool {
        if self
            .metric
            .iter()
            .any(|c| c.name_ok(&m.name) && c.resource_ok(res))
        {
            *dropped += point_count(m);
            return false;
        }
        // Conditions whose metric-level parts fail cannot match any point of this metric.
        let live: Vec<&Cond> = self
            .datapoint
            .iter()
            .filter(|c| c.name_ok(&m.name) && c.resource_ok(res))
            .collect();
        if live.is_empty() {
            return true;
        }
        let had_points = point_count(m) > 0;
        *dropped += retain_points(m, |attrs| {
            !live.iter().any(|c| all_match(&c.attributes, attrs))
        });
        !had_points || point_count(m) > 0
    }
}

impl Processor for Filter {
    fn process(&mut self, mut data: Payload, out: &mut Vec<Payload>) {
        let dropped = self.filter(&mut data);
        if dropped > 0 {
            self.dropped.add(dropped as u64);
            if data.is_empty() {
                return;
            }
        }
        out.push(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use meshgate_engine::Registry;
    use meshgate_pdata::otlp::Status;
    use serde_json::json;

    fn filter(cfg: serde_json::Value, signal: Signal) -> (Box<dyn Processor>, Registry) {
        let r = Registry::new();
        let p = build(&FilterFactory, "filter/x", cfg, signal, &r).unwrap();
        (p, r)
    }

    fn dropped(r: &Registry, signal: Signal) -> u64 {
        r.counter(
            "meshgate_processor_dropped_items_total",
            "",
            &[
                ("processor", "filter/x"),
                ("pipeline", signal.as_str()),
                ("signal", signal.as_str()),
                ("reason", "filtered"),
            ],
        )
        .get()
    }

    fn kept_span_names(out: &[Payload]) -> Vec<String> {
        out.iter()
            .flat_map(all_spans)
            .map(|s| s.name.clone())
            .collect()
    }

    fn with_kind_status(mut s: Span, kind: span::SpanKind, code: status::StatusCode) -> Span {
        s.kind = kind as i32;
        s.status = Some(Status {
            code: code as i32,
            ..Default::default()
        });
        s
    }

    #[test]
    fn span_name_regex() {
        let (mut p, r) = filter(
            json!({"traces": {"span": [{"name": "^(health|readyz)"}]}}),
            Signal::Traces,
        );
        let out = run(
            p.as_mut(),
            traces(
                &[],
                vec![
                    span("healthcheck", &[]),
                    span("GET /api", &[]),
                    span("readyz", &[]),
                ],
            ),
        );
        assert_eq!(kept_span_names(&out), ["GET /api"]);
        assert_eq!(dropped(&r, Signal::Traces), 2);
    }

    #[test]
    fn span_kind_and_status_are_anded() {
        use span::SpanKind::*;
        use status::StatusCode::*;
        let (mut p, _) = filter(
            json!({"traces": {"span": [{"kind": "client", "status": "ok"}, {"kind": "internal"}]}}),
            Signal::Traces,
        );
        let out = run(
            p.as_mut(),
            traces(
                &[],
                vec![
                    with_kind_status(span("client-ok", &[]), Client, Ok),
                    with_kind_status(span("client-err", &[]), Client, Error),
                    with_kind_status(span("server-ok", &[]), Server, Ok),
                    with_kind_status(span("internal", &[]), Internal, Unset),
                ],
            ),
        );
        assert_eq!(kept_span_names(&out), ["client-err", "server-ok"]);
    }

    #[test]
    fn status_unset_matches_missing_status() {
        let (mut p, _) = filter(
            json!({"traces": {"span": [{"status": "unset"}]}}),
            Signal::Traces,
        );
        let out = run(
            p.as_mut(),
            traces(
                &[],
                vec![
                    span("no-status", &[]),
                    with_kind_status(
                        span("err", &[]),
                        span::SpanKind::Server,
                        status::StatusCode::Error,
                    ),
                ],
            ),
        );
        assert_eq!(kept_span_names(&out), ["err"]);
    }

    #[test]
    fn attribute_equals_regex_exists() {
        let (mut p, r) = filter(
            json!({"traces": {"span": [
                {"attributes": {"http.status_code": {"equals": 200}, "component": {"equals": "proxy"}}},
                {"attributes": {"http.url": {"regex": "/health"}}},
                {"attributes": {"debug": {"exists": true}}},
                {"name": "^keep-unless-no-peer$", "attributes": {"peer.service": {"exists": false}}},
            ]}}),
            Signal::Traces,
        );
        let out = run(
            p.as_mut(),
            traces(
                &[],
                vec![
                    span(
                        "ok-proxy",
                        &[("http.status_code", "200"), ("component", "proxy")],
                    ),
                    span("ok-app", &[("http.status_code", "200")]),
                    span(
                        "err-proxy",
                        &[("http.status_code", "503"), ("component", "proxy")],
                    ),
                    span("health", &[("http.url", "http://x/healthz")]),
                    span("debug", &[("debug", "")]),
                    span("keep-unless-no-peer", &[]),
                    span("keep-unless-no-peer", &[("peer.service", "db")]),
                ],
            ),
        );
        let names = kept_span_names(&out);
        assert_eq!(names, ["ok-app", "err-proxy", "keep-unless-no-peer"]);
        assert_eq!(dropped(&r, Signal::Traces), 4);
    }

    #[test]
    fn int_attribute_matches_string_rule() {
        let (mut p, _) = filter(
            json!({"traces": {"span": [{"attributes": {"code": {"equals": "500"}}}]}}),
            Signal::Traces,
        );
        let mut s = span("typed", &[]);
        s.attributes.push(meshgate_pdata::attributes::kv(
            "code",
            meshgate_pdata::otlp::any_value::Value::IntValue(500),
        ));
        assert!(run(p.as_mut(), traces(&[], vec![s])).is_empty());
    }

    #[test]
    fn resource_attributes_and_empty_resources_removed() {
        let (mut p, _) = filter(
            json!({"traces": {"span": [{"resource_attributes": {"service.name": {"equals": "noisy"}}}]}}),
            Signal::Traces,
        );
        let mut data = traces(&[("service.name", "noisy")], vec![span("a", &[])]);
        let Payload::Traces(other) = traces(&[("service.name", "quiet")], vec![span("b", &[])])
        else {
            panic!()
        };
        data.merge(Payload::Traces(other)).unwrap();
        let out = run(p.as_mut(), data);
        let Payload::Traces(t) = &out[0] else {
            panic!()
        };
        assert_eq!(t.resource_spans.len(), 1);
        assert_eq!(kept_span_names(&out), ["b"]);
        // Everything dropped: nothing passed on.
        assert!(
            run(
                p.as_mut(),
                traces(&[("service.name", "noisy")], vec![span("a", &[])])
            )
            .is_empty()
        );
    }

    #[test]
    fn log_severity_below() {
        let (mut p, r) = filter(
            json!({"logs": {"log_record": [{"severity_below": "INFO"}]}}),
            Signal::Logs,
        );
        let out = run(
            p.as_mut(),
            logs(
                &[],
                vec![
                    log(0, &[]),
                    log(1, &[]),
                    log(5, &[]),
                    log(8, &[]),
                    log(9, &[]),
                    log(17, &[]),
                ],
            ),
        );
        let sev: Vec<i32> = all_logs(&out[0])
            .iter()
            .map(|l| l.severity_number)
            .collect();
        assert_eq!(sev, [0, 9, 17]);
        assert_eq!(dropped(&r, Signal::Logs), 3);
    }

    #[test]
    fn log_attributes_and_severity_anded() {
        let (mut p, _) = filter(
            json!({"logs": {"log_record": [{"severity_below": "WARN", "attributes": {"path": {"regex": "^/health"}}}]}}),
            Signal::Logs,
        );
        let out = run(
            p.as_mut(),
            logs(
                &[],
                vec![
                    log(9, &[("path", "/healthz")]),
                    log(17, &[("path", "/healthz")]),
                    log(9, &[("path", "/api")]),
                ],
            ),
        );
        assert_eq!(all_logs(&out[0]).len(), 2);
    }

    #[test]
    fn metrics_by_name_and_datapoint() {
        let (mut p, r) = filter(
            json!({"metrics": {
                "metric": [{"name": "^go_"}],
                "datapoint": [
                    {"name": "^http_", "attributes": {"route": {"equals": "/health"}}},
                    {"attributes": {"le": {"exists": true}}},
                ],
            }}),
            Signal::Metrics,
        );
        let out = run(
            p.as_mut(),
            metrics(
                &[],
                vec![
                    gauge("go_goroutines", &[&[], &[]]),
                    gauge(
                        "http_requests",
                        &[&[("route", "/health")], &[("route", "/api")]],
                    ),
                    gauge("db_calls", &[&[("route", "/health")]]),
                    gauge("only_le", &[&[("le", "1")]]),
                ],
            ),
        );
        let ms = all_metrics(&out[0]);
        let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["http_requests", "db_calls"]);
        assert_eq!(gauge_points(ms[0]).len(), 1);
        assert_eq!(dropped(&r, Signal::Metrics), 4);
    }

    #[test]
    fn other_signals_sections_are_ignored() {
        let (mut p, _) = filter(json!({"traces": {"span": [{"name": "."}]}}), Signal::Logs);
        let data = logs(&[], vec![log(1, &[])]);
        assert_eq!(run(p.as_mut(), data.clone()), vec![data]);
        let (mut p, _) = filter(json!({}), Signal::Traces);
        let data = n_spans(2);
        assert_eq!(run(p.as_mut(), data.clone()), vec![data]);
    }

    #[test]
    fn config_errors() {
        let cases = [
            (
                json!({"traces": {"span": [{}]}}),
                "p: traces.span[0]: a condition needs at least one field",
            ),
            (
                json!({"traces": {"span": [{"name": "a"}, {"severity_below": "INFO"}]}}),
                "p: traces.span[1]: `severity_below` does not apply to spans",
            ),
            (
                json!({"logs": {"log_record": [{"name": "x"}]}}),
                "p: logs.log_record[0]: `name` does not apply to log records",
            ),
            (
                json!({"metrics": {"metric": [{"attributes": {"a": {"exists": true}}}]}}),
                "p: metrics.metric[0]: `attributes` does not apply to metrics",
            ),
            (
                json!({"metrics": {"datapoint": [{"kind": "server"}]}}),
                "`kind` does not apply to data points",
            ),
            (
                json!({"traces": {"span": [{"name": "("}]}}),
                "p: traces.span[0].name: invalid regex `(`",
            ),
            (
                json!({"traces": {"span": [{"attributes": {"k": {"regex": "["}}}]}}),
                "p: traces.span[0].attributes.k: invalid regex `[`",
            ),
            (
                json!({"traces": {"span": ["attributes[\"x\"] == \"y\""]}}),
                "p: traces.span[0]: OTTL conditions are not supported",
            ),
            (
                json!({"traces": {"span": [{"kind": "sideways"}]}}),
                "unknown variant `sideways`",
            ),
            (
                json!({"traces": {"span": [{"attributes": {"k": {"equals": "1", "regex": "2"}}}]}}),
                "p: ",
            ),
            (
                json!({"error_mode": "ignore"}),
                "unknown field `error_mode`",
            ),
        ];
        for (cfg, want) in cases {
            let e = build_err(&FilterFactory, cfg.clone(), Signal::Traces);
            assert!(e.contains(want), "{cfg}: {e}");
        }
    }
}
