//! `attributes`: runs [`actions`](crate::actions) on the attributes of every span (traces),
//! log record (logs) and metric data point (metrics), like the OpenTelemetry Collector's
//! attributes processor. The collector's `include`/`exclude` match properties and its
//! `extract`/`convert` actions are not supported (rejected as unknown); put a `filter`
//! processor or a separate pipeline in front when only some items should change.

use crate::actions::{ActionConfig, Actions};
use crate::points::for_each_point_attributes;
use meshgate_engine::{BuildContext, Factory, Processor, ProcessorContext, ProcessorFactory};
use meshgate_pdata::{Payload, Signal};
use schemars::JsonSchema;
use serde::Deserialize;

/// Config of the `attributes` processor.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// Actions applied, in order, to the attributes of each span, log record or metric data
    /// point. Required, at least one.
    pub actions: Vec<ActionConfig>,
}

/// Factory of the `attributes` processor.
pub struct AttributesFactory;

impl Factory for AttributesFactory {
    fn type_name(&self) -> &'static str {
        "attributes"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "Inserts, updates, upserts, deletes or hashes span, log record and data point attributes."
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(AttributesConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        let cfg: AttributesConfig =
            serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
        Actions::compile(&cfg.actions).map(|_| ())
    }
}

impl ProcessorFactory for AttributesFactory {
    fn build(
        &self,
        ctx: BuildContext<'_>,
        _pipeline: &ProcessorContext,
    ) -> Result<Box<dyn Processor>, String> {
        let cfg: AttributesConfig = ctx.parse()?;
        let actions = Actions::compile(&cfg.actions).map_err(|e| format!("{}: {e}", ctx.id))?;
        Ok(Box::new(AttributesProcessor { actions }))
    }
}

struct AttributesProcessor {
    actions: Actions,
}

impl Processor for AttributesProcessor {
    fn process(&mut self, mut data: Payload, out: &mut Vec<Payload>) {
        let a = &self.actions;
        match &mut data {
            Payload::Traces(t) => t
                .resource_spans
                .iter_mut()
                .flat_map(|r| &mut r.scope_spans)
                .flat_map(|s| &mut s.spans)
                .for_each(|s| a.apply(&mut s.attributes)),
            Payload::Logs(l) => l
                .resource_logs
                .iter_mut()
                .flat_map(|r| &mut r.scope_logs)
                .flat_map(|s| &mut s.log_records)
                .for_each(|r| a.apply(&mut r.attributes)),
            Payload::Metrics(m) => m
                .resource_metrics
                .iter_mut()
                .flat_map(|r| &mut r.scope_metrics)
                .flat_map(|s| &mut s.metrics)
                .for_each(|m| for_each_point_attributes(m, |attrs| a.apply(attrs))),
        }
        out.push(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use meshgate_engine::Registry;
    use meshgate_pdata::attributes::{get, get_str};
    use meshgate_pdata::otlp::any_value::Value;
    use serde_json::json;

    fn processor(actions: serde_json::Value, signal: Signal) -> Box<dyn Processor> {
        build(
            &AttributesFactory,
            "attributes/x",
            json!({ "actions": actions }),
            signal,
            &Registry::new(),
        )
        .unwrap()
    }

    #[test]
    fn span_attributes() {
        let mut p = processor(
            json!([
                {"key": "env", "action": "insert", "value": "prod"},
                {"key": "http.status_code", "action": "update", "value": 200},
                {"key": "user.id", "action": "hash"},
                {"pattern": "^guid:", "action": "delete"},
            ]),
            Signal::Traces,
        );
        let data = traces(
            &[("service.name", "reviews")],
            vec![
                span(
                    "a",
                    &[
                        ("http.status_code", "200"),
                        ("user.id", "u1"),
                        ("guid:x-request-id", "g"),
                    ],
                ),
                span("b", &[("env", "dev")]),
            ],
        );
        let out = run(p.as_mut(), data);
        assert_eq!(out.len(), 1);
        let spans = all_spans(&out[0]);
        assert_eq!(get_str(&spans[0].attributes, "env"), Some("prod"));
        assert_eq!(
            get(&spans[0].attributes, "http.status_code"),
            Some(&Value::IntValue(200))
        );
        assert_eq!(get_str(&spans[0].attributes, "user.id").unwrap().len(), 64);
        assert_eq!(get(&spans[0].attributes, "guid:x-request-id"), None);
        assert_eq!(get_str(&spans[1].attributes, "env"), Some("dev"));
        assert_eq!(get(&spans[1].attributes, "http.status_code"), None);
        // Resource attributes are untouched by `attributes`.
        let Payload::Traces(t) = &out[0] else {
            panic!()
        };
        assert_eq!(
            t.resource_spans[0]
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .len(),
            1
        );
    }

    #[test]
    fn log_record_attributes() {
        let mut p = processor(
            json!([
                {"key": "level", "action": "upsert", "from_attribute": "severity"},
                {"key": "path", "action": "delete"},
            ]),
            Signal::Logs,
        );
        let out = run(
            p.as_mut(),
            logs(
                &[],
                vec![log(9, &[("severity", "info"), ("path", "/x")]), log(9, &[])],
            ),
        );
        let recs = all_logs(&out[0]);
        assert_eq!(get_str(&recs[0].attributes, "level"), Some("info"));
        assert_eq!(get(&recs[0].attributes, "path"), None);
        assert!(recs[1].attributes.is_empty());
    }

    #[test]
    fn datapoint_attributes() {
        let mut p = processor(
            json!([
                {"key": "cluster", "action": "upsert", "value": "east"},
                {"pattern": "^pod", "action": "delete"},
            ]),
            Signal::Metrics,
        );
        let out = run(
            p.as_mut(),
            metrics(
                &[],
                vec![gauge(
                    "up",
                    &[&[("pod", "a"), ("pod_ip", "1")], &[("cluster", "west")]],
                )],
            ),
        );
        let ms = all_metrics(&out[0]);
        let points = gauge_points(ms[0]);
        assert_eq!(points[0].len(), 1);
        assert_eq!(get_str(points[0], "cluster"), Some("east"));
        assert_eq!(get_str(points[1], "cluster"), Some("east"));
    }

    #[test]
    fn config_errors() {
        let e = build_err(
            &AttributesFactory,
            json!({"actions": [{"key": "a", "action": "delete"}, {"key": "b", "action": "delete"},
                               {"key": "c", "action": "upsert"}]}),
            Signal::Traces,
        );
        assert_eq!(
            e,
            "p: actions[2]: `upsert` needs `value` or `from_attribute`"
        );
        let e = build_err(&AttributesFactory, json!({}), Signal::Traces);
        assert!(e.contains("missing field `actions`"), "{e}");
        let e = build_err(
            &AttributesFactory,
            json!({"actions": [{"key": "a", "action": "delete"}], "include": {}}),
            Signal::Traces,
        );
        assert!(e.contains("unknown field `include`"), "{e}");
    }
}
