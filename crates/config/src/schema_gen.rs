//! JSON Schema (draft 2020-12) of the whole config file, for editors (YAML language server)
//! and for a checked-in `schemas/` file that CI diffs against the code.

use serde_json::{Map, Value, json};

use crate::ids::Kind;
use crate::model::{Catalog, TelemetryConfig};
use crate::validate::PIPELINE_KEYS;

const DEFS_PREFIX: &str = "#/$defs/";

/// Keywords whose values are data, not schemas: `$ref`s inside them are left alone.
const DATA_KEYWORDS: [&str; 4] = ["const", "enum", "default", "examples"];

fn escape_token(t: &str) -> String {
    t.replace('~', "~0").replace('/', "~1")
}

fn unescape_token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

/// Rewrites a `$ref` of a schema imported as `$defs[def_name]`.
fn rewrite_ref(r: &str, def_name: &str) -> String {
    if r == "#" {
        return format!("{DEFS_PREFIX}{}", escape_token(def_name));
    }
    if let Some(rest) = r.strip_prefix(DEFS_PREFIX) {
        let (first, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let new_name = format!("{def_name}.{}", unescape_token(first));
        return format!("{DEFS_PREFIX}{}{tail}", escape_token(&new_name));
    }
    if let Some(rest) = r.strip_prefix("#/") {
        return format!("{DEFS_PREFIX}{}/{rest}", escape_token(def_name));
    }
    r.to_string()
}

fn rewrite_refs(v: &mut Value, def_name: &str) {
    match v {
        Value::Object(m) => {
            for (k, sub) in m.iter_mut() {
                if k == "$ref" {
                    if let Value::String(r) = sub {
                        *r = rewrite_ref(r, def_name);
                    }
                } else if !DATA_KEYWORDS.contains(&k.as_str()) {
                    rewrite_refs(sub, def_name);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, def_name)),
        _ => {}
    }
}

/// Moves a standalone schema (with its own `$defs`) into `defs` under `def_name`, prefixing
/// its definitions with `def_name.` so different components cannot clash, and returns a
/// `$ref` to it.
fn import(schema: &Value, def_name: &str, defs: &mut Map<String, Value>) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(m) = &mut schema {
        m.remove("$schema");
        for key in ["$defs", "definitions"] {
            if let Some(Value::Object(inner)) = m.remove(key) {
                for (name, mut sub) in inner {
                    rewrite_refs(&mut sub, def_name);
                    defs.insert(format!("{def_name}.{name}"), sub);
                }
            }
        }
    }
    rewrite_refs(&mut schema, def_name);
    defs.insert(def_name.to_string(), schema);
    json!({ "$ref": format!("{DEFS_PREFIX}{}", escape_token(def_name)) })
}

/// A copy with every object's keys in sorted order, whatever map `serde_json` was built with.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The regex a component key of type `type_name` must match: `^TYPE(/[^/]+)?$`.
fn key_pattern(type_name: &str) -> String {
    format!("^{}(/[^/]+)?$", regex::escape(type_name))
}

/// The JSON Schema (draft 2020-12) of the whole config file given the catalog.
///
/// Component schemas live in `$defs` as `receiver.otlp`, `exporter.otlp` ... (their own
/// definitions as `receiver.otlp.Name`), and each section maps `^TYPE(/[^/]+)?$` to them via
/// `patternProperties`. Output is deterministic (sorted keys) so it can be checked in and diffed.
pub fn config_schema(catalog: &dyn Catalog) -> Value {
    let mut defs = Map::new();
    let mut properties = Map::new();
    for kind in Kind::ALL {
        let mut names = catalog.type_names(kind);
        names.sort();
        names.dedup();
        let mut patterns = Map::new();
        for name in names {
            let Some(spec) = catalog.component(kind, &name) else {
                continue;
            };
            let reference = import(
                spec.schema.as_value(),
                &format!("{}.{name}", kind.as_str()),
                &mut defs,
            );
            // `batch:` with no body is allowed and means "all defaults".
            patterns.insert(
                key_pattern(&name),
                json!({ "anyOf": [{ "type": "null" }, reference] }),
            );
        }
        properties.insert(
            kind.section().to_string(),
            json!({
                "description": format!("{} by `type[/name]`.", kind.section()),
                "type": ["object", "null"],
                "patternProperties": patterns,
                "additionalProperties": false,
            }),
        );
    }
    let telemetry = import(
        schemars::schema_for!(TelemetryConfig).as_value(),
        "service.telemetry",
        &mut defs,
    );
    defs.insert(
        "component_id".into(),
        json!({
            "description": "`type[/name]`, e.g. `otlp` or `otlp/internal`.",
            "type": "string",
            "pattern": "^[A-Za-z][A-Za-z0-9_]{0,62}(/[^/\\s]+)?$",
        }),
    );
    let id_list = |min: u64| {
        json!({
            "type": "array",
            "items": { "$ref": "#/$defs/component_id" },
            "minItems": min,
            "uniqueItems": true,
        })
    };
    let mut pipeline_props = Map::new();
    for key in PIPELINE_KEYS {
        let min = if key == "processors" { 0 } else { 1 };
        pipeline_props.insert(key.to_string(), id_list(min));
    }
    defs.insert(
        "pipeline".into(),
        json!({
            "description": "Components chained into one pipeline; processors run in order.",
            "type": "object",
            "properties": pipeline_props,
            "required": ["receivers", "exporters"],
            "additionalProperties": false,
        }),
    );
    properties.insert(
        "service".into(),
        json!({
            "description": "Which pipelines and extensions run.",
            "type": "object",
            "properties": {
                "pipelines": {
                    "type": "object",
                    "minProperties": 1,
                    "patternProperties": {
                        "^(traces|metrics|logs)(/[^/]+)?$": { "$ref": "#/$defs/pipeline" }
                    },
                    "additionalProperties": false,
                },
                "extensions": id_list(0),
                "telemetry": { "anyOf": [{ "type": "null" }, telemetry] },
            },
            "required": ["pipelines"],
            "additionalProperties": false,
        }),
    );
    sorted(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "meshgate configuration",
        "type": "object",
        "properties": properties,
        "required": ["service"],
        "additionalProperties": false,
        "$defs": defs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCatalog;
    use crate::{Format, Loaded};

    #[test]
    fn refs_are_rewritten() {
        assert_eq!(rewrite_ref("#", "receiver.otlp"), "#/$defs/receiver.otlp");
        assert_eq!(
            rewrite_ref("#/$defs/Retry", "exporter.otlp"),
            "#/$defs/exporter.otlp.Retry"
        );
        assert_eq!(
            rewrite_ref("#/$defs/A~1B/properties/x", "exporter.otlp"),
            "#/$defs/exporter.otlp.A~1B/properties/x"
        );
        assert_eq!(
            rewrite_ref("#/properties/x", "exporter.otlp"),
            "#/$defs/exporter.otlp/properties/x"
        );
        assert_eq!(rewrite_ref("https://x/y", "a"), "https://x/y");
    }

    #[test]
    fn schema_shape() {
        let s = config_schema(&TestCatalog);
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(s["additionalProperties"], false);
        let exporters = &s["properties"]["exporters"];
        assert_eq!(exporters["additionalProperties"], false);
        assert_eq!(
            exporters["patternProperties"]["^otlp(/[^/]+)?$"]["anyOf"][1]["$ref"],
            "#/$defs/exporter.otlp"
        );
        assert!(s["$defs"]["exporter.otlp"]["properties"]["endpoint"].is_object());
        assert!(
            s["$defs"].get("exporter.otlp.Retry").is_some(),
            "{:#}",
            s["$defs"]
        );
        assert_eq!(
            s["properties"]["service"]["properties"]["pipelines"]["patternProperties"]["^(traces|metrics|logs)(/[^/]+)?$"]
                ["$ref"],
            "#/$defs/pipeline"
        );
        assert!(s["$defs"].get("service.telemetry").is_some());
        assert!(s["$defs"]["exporter.otlp"].get("$schema").is_none());
    }

    /// Every `$ref` in the generated schema points at something that exists.
    #[test]
    fn all_refs_resolve() {
        fn walk(v: &Value, root: &Value, count: &mut usize) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let pointer = r.strip_prefix('#').unwrap();
                        assert!(root.pointer(pointer).is_some(), "dangling {r}");
                        *count += 1;
                    }
                    m.values().for_each(|x| walk(x, root, count));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, root, count)),
                _ => {}
            }
        }
        let s = config_schema(&TestCatalog);
        let mut count = 0;
        walk(&s, &s, &mut count);
        assert!(count > 10, "{count}");
    }

    #[test]
    fn output_is_deterministic_and_sorted() {
        let a = serde_json::to_string_pretty(&config_schema(&TestCatalog)).unwrap();
        let b = serde_json::to_string_pretty(&config_schema(&TestCatalog)).unwrap();
        assert_eq!(a, b);
        fn check_sorted(v: &Value) {
            if let Value::Object(m) = v {
                let keys: Vec<&String> = m.keys().collect();
                let mut s = keys.clone();
                s.sort();
                assert_eq!(keys, s);
                m.values().for_each(check_sorted);
            } else if let Value::Array(a) = v {
                a.iter().for_each(check_sorted);
            }
        }
        check_sorted(&config_schema(&TestCatalog));
    }

    /// The generated schema, run through our own validator, accepts a good file and rejects
    /// the same mistakes `validate` does.
    #[test]
    fn generated_schema_agrees_with_the_validator() {
        let schema = config_schema(&TestCatalog);
        let good = "receivers:\n  otlp:\nprocessors:\n  batch:\n    timeout: 1s\nexporters:\n  otlp/b:\n    endpoint: x\nservice:\n  telemetry:\n  pipelines:\n    traces/a:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp/b]\n";
        let loaded = Loaded::from_str_with_env(good, Format::Yaml, "<t>", &|_: &str| None).unwrap();
        let problems = crate::schema_check::check(&schema, loaded.value(), "");
        assert!(problems.is_empty(), "{problems:#?}");

        let bad = "receivers:\n  otlpp:\nexporters:\n  otlp:\n    endpoint: x\n    retry_on_failure:\n      max_elapsed_time: 7\nservice:\n  pipelines:\n    trace:\n      receivers: [otlp]\n      exporters: [otlp]\n";
        let loaded = Loaded::from_str_with_env(bad, Format::Yaml, "<t>", &|_: &str| None).unwrap();
        let problems: Vec<String> = crate::schema_check::check(&schema, loaded.value(), "")
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert!(
            problems.contains(&"receivers.otlpp: unknown key `otlpp`".to_string()),
            "{problems:#?}"
        );
        assert!(
            problems.contains(&"service.pipelines.trace: unknown key `trace`".to_string()),
            "{problems:#?}"
        );
        assert!(
            problems.contains(&"exporters.otlp.retry_on_failure.max_elapsed_time: expected a string, found an integer `7`".to_string()),
            "{problems:#?}"
        );
    }
}
