//! `resource`: runs [`actions`](crate::actions) on resource attributes (the attributes of
//! the service or proxy that produced the data), for every signal, like the OpenTelemetry
//! Collector's resource processor.

use crate::actions::{ActionConfig, Actions};
use meshgate_engine::{BuildContext, Factory, Processor, ProcessorContext, ProcessorFactory};
use meshgate_pdata::otlp::Resource;
use meshgate_pdata::{Payload, Signal};
use schemars::JsonSchema;
use serde::Deserialize;

/// Config of the `resource` processor.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Actions applied, in order, to the resource attributes of every resource in the data.
    /// Required, at least one.
    pub actions: Vec<ActionConfig>,
}

/// Factory of the `resource` processor.
pub struct ResourceFactory;

impl Factory for ResourceFactory {
    fn type_name(&self) -> &'static str {
        "resource"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "Inserts, updates, upserts, deletes or hashes resource attributes."
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(ResourceConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        let cfg: ResourceConfig =
            serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
        Actions::compile(&cfg.actions).map(|_| ())
    }
}

impl ProcessorFactory for ResourceFactory {
    fn build(
        &self,
        ctx: BuildContext<'_>,
        _pipeline: &ProcessorContext,
    ) -> Result<Box<dyn Processor>, String> {
        let cfg: ResourceConfig = ctx.parse()?;
        let actions = Actions::compile(&cfg.actions).map_err(|e| format!("{}: {e}", ctx.id))?;
        Ok(Box::new(ResourceProcessor { actions }))
    }
}

struct ResourceProcessor {
    actions: Actions,
}

impl ResourceProcessor {
    fn apply(&self, resource: &mut Option<Resource>) {
        match resource {
            Some(r) => self.actions.apply(&mut r.attributes),
            None => {
                // Only materialise a resource when an action actually wrote something.
                let mut attrs = Vec::new();
                self.actions.apply(&mut attrs);
                if !attrs.is_empty() {
                    *resource = Some(Resource {
                        attributes: attrs,
                        ..Default::default()
                    });
                }
            }
        }
    }
}

impl Processor for ResourceProcessor {
    fn process(&mut self, mut data: Payload, out: &mut Vec<Payload>) {
        match &mut data {
            Payload::Traces(t) => t
                .resource_spans
                .iter_mut()
                .for_each(|r| self.apply(&mut r.resource)),
            Payload::Metrics(m) => m
                .resource_metrics
                .iter_mut()
                .for_each(|r| self.apply(&mut r.resource)),
            Payload::Logs(l) => l
                .resource_logs
                .iter_mut()
                .for_each(|r| self.apply(&mut r.resource)),
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
    use serde_json::json;

    fn processor(actions: serde_json::Value, signal: Signal) -> Box<dyn Processor> {
        build(
            &ResourceFactory,
            "resource",
            json!({ "actions": actions }),
            signal,
            &Registry::new(),
        )
        .unwrap()
    }

    fn res_attrs(p: &Payload) -> Vec<meshgate_pdata::otlp::KeyValue> {
        let r = match p {
            Payload::Traces(t) => &t.resource_spans[0].resource,
            Payload::Metrics(m) => &m.resource_metrics[0].resource,
            Payload::Logs(l) => &l.resource_logs[0].resource,
        };
        r.as_ref().map(|r| r.attributes.clone()).unwrap_or_default()
    }

    #[test]
    fn upsert_on_every_signal() {
        let actions = json!([
            {"key": "deployment.environment", "action": "upsert", "value": "prod"},
            {"key": "k8s.pod.ip", "action": "delete"},
        ]);
        let inputs = [
            traces(
                &[("service.name", "a"), ("k8s.pod.ip", "10.0.0.1")],
                vec![span("s", &[])],
            ),
            logs(&[("deployment.environment", "dev")], vec![log(9, &[])]),
            metrics(&[], vec![gauge("up", &[&[]])]),
        ];
        for data in inputs {
            let mut p = processor(actions.clone(), data.signal());
            let out = run(p.as_mut(), data);
            let attrs = res_attrs(&out[0]);
            assert_eq!(get_str(&attrs, "deployment.environment"), Some("prod"));
            assert_eq!(get(&attrs, "k8s.pod.ip"), None);
        }
    }

    #[test]
    fn missing_resource_created_only_when_written() {
        let mut p = processor(json!([{"key": "a", "action": "delete"}]), Signal::Traces);
        let mut data = traces(&[], vec![span("s", &[])]);
        if let Payload::Traces(t) = &mut data {
            t.resource_spans[0].resource = None;
        }
        let out = run(p.as_mut(), data.clone());
        assert_eq!(out[0], data);
        let mut p = processor(
            json!([{"key": "a", "action": "insert", "value": 1}]),
            Signal::Traces,
        );
        let out = run(p.as_mut(), data);
        assert_eq!(res_attrs(&out[0]).len(), 1);
    }

    #[test]
    fn config_errors() {
        let e = build_err(
            &ResourceFactory,
            json!({"actions": [{"key": "a", "action": "update"}]}),
            Signal::Logs,
        );
        assert_eq!(
            e,
            "p: actions[0]: `update` needs `value` or `from_attribute`"
        );
    }
}
