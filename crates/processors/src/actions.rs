//! Attribute actions shared by the `attributes` processor (span, log record and data point
//! attributes) and the `resource` processor (resource attributes): `insert`, `update`,
//! `upsert`, `delete` and `hash`, as in the OpenTelemetry Collector.
//!
//! Actions are validated and compiled once at build time ([`Actions::compile`]); applying
//! them to a key/value list ([`Actions::apply`]) allocates only for the values it writes.

use meshgate_pdata::attributes::value_to_string;
use meshgate_pdata::otlp::{AnyValue, KeyValue, any_value::Value};
use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A literal attribute value in config: a string, integer, float or boolean, written as a
/// plain JSON/YAML scalar and stored as the matching OTLP value type.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AttributeValue {
    /// A boolean (`true`, `false`).
    Bool(bool),
    /// An integer (`200`).
    Int(i64),
    /// A floating-point number (`0.5`).
    Double(f64),
    /// A string (`"reviews"`). Quote numbers to store them as strings (`"200"`).
    String(String),
}

impl AttributeValue {
    /// The OTLP value.
    pub fn to_otlp(&self) -> Value {
        match self {
            AttributeValue::Bool(b) => Value::BoolValue(*b),
            AttributeValue::Int(i) => Value::IntValue(*i),
            AttributeValue::Double(d) => Value::DoubleValue(*d),
            AttributeValue::String(s) => Value::StringValue(s.clone()),
        }
    }

    /// The value as text, as [`value_to_string`] renders the same OTLP value.
    pub fn as_text(&self) -> String {
        value_to_string(&self.to_otlp())
    }
}

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Adds the attribute only when the key is absent.
    Insert,
    /// Replaces the value only when the key is present.
    Update,
    /// Sets the attribute whether or not it is present.
    Upsert,
    /// Removes the attribute (`key`), or every attribute whose key matches `pattern`.
    Delete,
    /// Replaces the value by the lowercase hex SHA-256 of its text form (`key` or `pattern`).
    Hash,
}

impl ActionKind {
    fn as_str(self) -> &'static str {
        match self {
            ActionKind::Insert => "insert",
            ActionKind::Update => "update",
            ActionKind::Upsert => "upsert",
            ActionKind::Delete => "delete",
            ActionKind::Hash => "hash",
        }
    }
}

/// One action on attributes. Actions run in the order listed.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The attribute key to act on. Exactly one of `key` and `pattern` is required.
    pub key: Option<String>,
    /// A regular expression (unanchored: use `^...$` to match whole keys); `delete` and
    /// `hash` then act on every attribute whose key matches. Only valid with `delete` and
    /// `hash`; exactly one of `key` and `pattern` is required.
    pub pattern: Option<String>,
    /// `insert`, `update`, `upsert`, `delete` or `hash`.
    pub action: ActionKind,
    /// The value to write (string, integer, float or boolean) for `insert`, `update` and
    /// `upsert`. Exactly one of `value` and `from_attribute` is required for those actions.
    pub value: Option<AttributeValue>,
    /// Copy the value of this other attribute of the same item instead of a literal `value`
    /// (`insert`, `update`, `upsert`). Nothing is written when that attribute is absent.
    pub from_attribute: Option<String>,
}

/// Where a written value comes from.
#[derive(Debug, Clone)]
enum Source {
    Literal(Value),
    FromAttribute(String),
}

impl Source {
    fn resolve(&self, attrs: &[KeyValue]) -> Option<Value> {
        match self {
            Source::Literal(v) => Some(v.clone()),
            Source::FromAttribute(k) => meshgate_pdata::attributes::get(attrs, k).cloned(),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Source),
    Update(Source),
    Upsert(Source),
    Delete,
    Hash,
}

#[derive(Debug, Clone)]
enum Target {
    Key(String),
    Pattern(Regex),
}

#[derive(Debug, Clone)]
struct Action {
    target: Target,
    op: Op,
}

/// A validated, compiled list of actions.
#[derive(Debug, Clone)]
pub struct Actions(Vec<Action>);

impl Actions {
    /// Validates and compiles `actions`; errors name the offending entry (`actions[2]: ...`).
    pub fn compile(actions: &[ActionConfig]) -> Result<Actions, String> {
        if actions.is_empty() {
            return Err("`actions` is empty; list at least one action".into());
        }
        actions
            .iter()
            .enumerate()
            .map(|(i, a)| compile_one(a).map_err(|e| format!("actions[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Actions)
    }

    /// Applies every action, in order, to one attribute list.
    pub fn apply(&self, attrs: &mut Vec<KeyValue>) {
        for a in &self.0 {
            match (&a.target, &a.op) {
                (Target::Key(key), op) => apply_to_key(attrs, key, op),
                (Target::Pattern(re), Op::Delete) => attrs.retain(|kv| !re.is_match(&kv.key)),
                (Target::Pattern(re), _) => attrs
                    .iter_mut()
                    .filter(|kv| re.is_match(&kv.key))
                    .for_each(hash_in_place),
            }
        }
    }
}

fn compile_one(a: &ActionConfig) -> Result<Action, String> {
    let name = a.action.as_str();
    let target = match (&a.key, &a.pattern) {
        (Some(_), Some(_)) => return Err("set either `key` or `pattern`, not both".into()),
        (None, None) => return Err(format!("`{name}` needs `key` (or `pattern`)")),
        (Some(k), None) => Target::Key(k.clone()),
        (None, Some(p)) => {
            if !matches!(a.action, ActionKind::Delete | ActionKind::Hash) {
                return Err(format!(
                    "`pattern` is only supported with `delete` and `hash`, not `{name}`; use `key`"
                ));
            }
            Target::Pattern(Regex::new(p).map_err(|e| format!("invalid `pattern` `{p}`: {e}"))?)
        }
    };
    let source = || match (&a.value, &a.from_attribute) {
        (Some(v), None) => Ok(Source::Literal(v.to_otlp())),
        (None, Some(f)) => Ok(Source::FromAttribute(f.clone())),
        (Some(_), Some(_)) => Err(format!(
            "`{name}` takes either `value` or `from_attribute`, not both"
        )),
        (None, None) => Err(format!("`{name}` needs `value` or `from_attribute`")),
    };
    let op = match a.action {
        ActionKind::Insert => Op::Insert(source()?),
        ActionKind::Update => Op::Update(source()?),
        ActionKind::Upsert => Op::Upsert(source()?),
        ActionKind::Delete | ActionKind::Hash => {
            if a.value.is_some() || a.from_attribute.is_some() {
                return Err(format!("`{name}` takes no `value` or `from_attribute`"));
            }
            if a.action == ActionKind::Delete {
                Op::Delete
            } else {
                Op::Hash
            }
        }
    };
    Ok(Action { target, op })
}

fn apply_to_key(attrs: &mut Vec<KeyValue>, key: &str, op: &Op) {
    let pos = attrs.iter().position(|kv| kv.key == key);
    let set = |attrs: &mut Vec<KeyValue>, pos: Option<usize>, v: Value| match pos {
        Some(i) => attrs[i].value = Some(AnyValue { value: Some(v) }),
        None => attrs.push(meshgate_pdata::attributes::kv(key, v)),
    };
    match op {
        Op::Insert(src) if pos.is_none() => {
            if let Some(v) = src.resolve(attrs) {
                set(attrs, None, v);
            }
        }
        Op::Update(src) if pos.is_some() => {
            if let Some(v) = src.resolve(attrs) {
                set(attrs, pos, v);
            }
        }
        Op::Upsert(src) => {
            if let Some(v) = src.resolve(attrs) {
                set(attrs, pos, v);
            }
        }
        Op::Delete => {
            attrs.retain(|kv| kv.key != key);
        }
        Op::Hash => {
            if let Some(i) = pos {
                hash_in_place(&mut attrs[i]);
            }
        }
        Op::Insert(_) | Op::Update(_) => {}
    }
}

/// Replaces the value by the lowercase hex SHA-256 of its text form; absent values stay.
fn hash_in_place(kv: &mut KeyValue) {
    if let Some(AnyValue { value: Some(v) }) = &mut kv.value {
        let digest = Sha256::digest(value_to_string(v).as_bytes());
        *v = Value::StringValue(hex::encode(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_pdata::attributes::{get, kv_str};
    use serde_json::json;

    fn compile(v: serde_json::Value) -> Result<Actions, String> {
        let cfgs: Vec<ActionConfig> = serde_json::from_value(v).map_err(|e| e.to_string())?;
        Actions::compile(&cfgs)
    }

    pub(crate) fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn insert_update_upsert_delete() {
        let a = compile(json!([
            {"key": "env", "action": "insert", "value": "prod"},
            {"key": "team", "action": "insert", "value": "ignored"},
            {"key": "missing", "action": "update", "value": 1},
            {"key": "region", "action": "update", "value": 2.5},
            {"key": "on", "action": "upsert", "value": true},
            {"key": "copy", "action": "upsert", "from_attribute": "team"},
            {"key": "nothing", "action": "upsert", "from_attribute": "absent"},
            {"key": "secret", "action": "delete"},
        ]))
        .unwrap();
        let mut attrs = vec![
            kv_str("team", "a"),
            kv_str("region", "eu"),
            kv_str("secret", "x"),
        ];
        a.apply(&mut attrs);
        assert_eq!(get(&attrs, "env"), Some(&Value::StringValue("prod".into())));
        assert_eq!(get(&attrs, "team"), Some(&Value::StringValue("a".into())));
        assert_eq!(get(&attrs, "missing"), None);
        assert_eq!(get(&attrs, "region"), Some(&Value::DoubleValue(2.5)));
        assert_eq!(get(&attrs, "on"), Some(&Value::BoolValue(true)));
        assert_eq!(get(&attrs, "copy"), Some(&Value::StringValue("a".into())));
        assert_eq!(get(&attrs, "nothing"), None);
        assert_eq!(get(&attrs, "secret"), None);
        assert_eq!(attrs.len(), 5);
    }

    #[test]
    fn hash_and_patterns() {
        let a = compile(json!([
            {"key": "user", "action": "hash"},
            {"key": "code", "action": "hash"},
            {"pattern": "^token\\.", "action": "hash"},
            {"pattern": "^tmp_", "action": "delete"},
        ]))
        .unwrap();
        let mut attrs = vec![
            kv_str("user", "alice"),
            meshgate_pdata::attributes::kv("code", Value::IntValue(200)),
            kv_str("token.a", "t1"),
            kv_str("token.b", "t2"),
            kv_str("my.token.c", "kept"),
            kv_str("tmp_1", "x"),
            kv_str("tmp_2", "y"),
            kv_str("keep_tmp_", "z"),
        ];
        a.apply(&mut attrs);
        assert_eq!(get(&attrs, "user"), Some(&Value::StringValue(sha("alice"))));
        assert_eq!(
            sha("alice"),
            "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90"
        );
        assert_eq!(get(&attrs, "code"), Some(&Value::StringValue(sha("200"))));
        assert_eq!(get(&attrs, "token.a"), Some(&Value::StringValue(sha("t1"))));
        assert_eq!(get(&attrs, "token.b"), Some(&Value::StringValue(sha("t2"))));
        assert_eq!(
            get(&attrs, "my.token.c"),
            Some(&Value::StringValue("kept".into()))
        );
        let keys: Vec<&str> = attrs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "user",
                "code",
                "token.a",
                "token.b",
                "my.token.c",
                "keep_tmp_"
            ]
        );
    }

    #[test]
    fn value_types_map_to_otlp() {
        let vals: Vec<AttributeValue> =
            serde_json::from_value(json!(["s", 7, 1.5, false, "200"])).unwrap();
        assert_eq!(
            vals.iter().map(AttributeValue::to_otlp).collect::<Vec<_>>(),
            [
                Value::StringValue("s".into()),
                Value::IntValue(7),
                Value::DoubleValue(1.5),
                Value::BoolValue(false),
                Value::StringValue("200".into()),
            ]
        );
    }

    #[test]
    fn errors_name_the_action() {
        let cases = [
            (json!([]), "`actions` is empty"),
            (
                json!([{"key": "a", "action": "delete"}, {"key": "b", "action": "delete"},
                       {"key": "c", "action": "upsert"}]),
                "actions[2]: `upsert` needs `value` or `from_attribute`",
            ),
            (
                json!([{"key": "a", "action": "insert", "value": 1, "from_attribute": "b"}]),
                "actions[0]: `insert` takes either `value` or `from_attribute`, not both",
            ),
            (
                json!([{"action": "delete"}]),
                "actions[0]: `delete` needs `key` (or `pattern`)",
            ),
            (
                json!([{"key": "a", "pattern": "b", "action": "delete"}]),
                "actions[0]: set either `key` or `pattern`, not both",
            ),
            (
                json!([{"pattern": "a", "action": "upsert", "value": 1}]),
                "actions[0]: `pattern` is only supported with `delete` and `hash`, not `upsert`",
            ),
            (
                json!([{"pattern": "(", "action": "delete"}]),
                "actions[0]: invalid `pattern` `(`",
            ),
            (
                json!([{"key": "a", "action": "hash", "value": "x"}]),
                "actions[0]: `hash` takes no `value` or `from_attribute`",
            ),
            (
                json!([{"key": "a", "action": "extract"}]),
                "unknown variant `extract`",
            ),
        ];
        for (cfg, want) in cases {
            let e = compile(cfg.clone()).unwrap_err();
            assert!(e.contains(want), "{cfg}: {e}");
        }
    }
}
