//! Attribute access on OTLP key/value lists.
//!
//! Processors and exporters look attributes up by key and compare them as strings (Envoy sends
//! every attribute as a string, SDKs send typed values; a rule written as `"200"` must match
//! both). These helpers give that one behaviour everywhere.

use crate::otlp::{AnyValue, KeyValue, any_value::Value};

/// A string-valued key/value pair.
pub fn kv_str(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// A key/value pair holding `value`.
pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// The value of `key`, if present.
pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The value of `key` as a string slice, when it is a string.
pub fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match get(attrs, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// Renders a value as text the way a user writes it in config: strings as-is, numbers and
/// booleans in their usual form, arrays and maps as JSON.
pub fn value_to_string(v: &Value) -> String {
    match v {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(b) => hex::encode(b),
        // Only meaningful inside a profiles dictionary, which meshgate does not carry.
        Value::StringValueStrindex(i) => format!("strindex:{i}"),
        Value::ArrayValue(_) | Value::KvlistValue(_) => {
            serde_json::to_string(&any_to_json(v)).unwrap_or_default()
        }
    }
}

/// A JSON rendering of an attribute value (arrays and maps stay structured).
pub fn any_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::StringValue(s) => serde_json::Value::String(s.clone()),
        Value::BoolValue(b) => serde_json::Value::Bool(*b),
        Value::IntValue(i) => serde_json::Value::from(*i),
        Value::DoubleValue(d) => serde_json::Value::from(*d),
        Value::BytesValue(b) => serde_json::Value::String(hex::encode(b)),
        Value::StringValueStrindex(i) => serde_json::Value::String(format!("strindex:{i}")),
        Value::ArrayValue(a) => serde_json::Value::Array(
            a.values
                .iter()
                .map(|x| x.value.as_ref().map(any_to_json).unwrap_or_default())
                .collect(),
        ),
        Value::KvlistValue(l) => serde_json::Value::Object(
            l.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value
                            .as_ref()
                            .and_then(|v| v.value.as_ref())
                            .map(any_to_json)
                            .unwrap_or_default(),
                    )
                })
                .collect(),
        ),
    }
}

/// Sets `key` to `value`: replaces an existing entry or appends a new one.
pub fn upsert(attrs: &mut Vec<KeyValue>, key: &str, value: Value) {
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = Some(AnyValue { value: Some(value) }),
        None => attrs.push(kv(key, value)),
    }
}

/// Removes every entry of `key`; returns whether one was present.
pub fn remove(attrs: &mut Vec<KeyValue>, key: &str) -> bool {
    let before = attrs.len();
    attrs.retain(|kv| kv.key != key);
    attrs.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_get_remove() {
        let mut a = vec![kv_str("a", "1")];
        upsert(&mut a, "a", Value::IntValue(2));
        upsert(&mut a, "b", Value::BoolValue(true));
        assert_eq!(get(&a, "a"), Some(&Value::IntValue(2)));
        assert_eq!(value_to_string(get(&a, "b").unwrap()), "true");
        assert!(remove(&mut a, "a"));
        assert!(!remove(&mut a, "a"));
        assert_eq!(a.len(), 1);
        assert_eq!(get_str(&[kv_str("k", "v")], "k"), Some("v"));
    }
}
