//! What mesh proxies mean by their spans, in one place: whether a span failed, read the way
//! Envoy, Istio and Linkerd actually report it. Both derivations (RED metrics and the service
//! graph) use this, so a call counts as failed in one exactly when it does in the other.

use crate::attributes::{get, value_to_string};
use crate::otlp::{KeyValue, Span, any_value::Value, status::StatusCode};

/// The span's status code after the mesh rule: an explicit `OK` or `ERROR` status wins; when
/// the status is `UNSET` (older Envoy, Linkerd) the span is `ERROR` if it carries `error=true`
/// (boolean or the string Envoy sends), an HTTP status of 500 or more (`http.status_code` or
/// `http.response.status_code`, integer or string), or a non-zero `grpc.status_code`
/// (`rpc.grpc.status_code`). `"0"` (no response) alone is not a failure: Envoy adds
/// `error=true` when there was none.
pub fn effective_status(span: &Span) -> StatusCode {
    let declared = span
        .status
        .as_ref()
        .map(|s| StatusCode::try_from(s.code).unwrap_or(StatusCode::Unset))
        .unwrap_or(StatusCode::Unset);
    if declared != StatusCode::Unset {
        return declared;
    }
    if attributes_say_failed(&span.attributes) {
        StatusCode::Error
    } else {
        StatusCode::Unset
    }
}

/// Whether the span failed under [`effective_status`].
pub fn is_failed(span: &Span) -> bool {
    effective_status(span) == StatusCode::Error
}

fn attributes_say_failed(attrs: &[KeyValue]) -> bool {
    let mut failed = false;
    for kv in attrs {
        let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        failed |= match kv.key.as_str() {
            "error" => match v {
                Value::BoolValue(b) => *b,
                Value::StringValue(s) => s.eq_ignore_ascii_case("true"),
                _ => false,
            },
            "http.status_code" | "http.response.status_code" => as_int(v).is_some_and(|c| c >= 500),
            "grpc.status_code" | "rpc.grpc.status_code" => as_int(v).is_some_and(|c| c != 0),
            _ => false,
        };
    }
    failed
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::IntValue(i) => Some(*i),
        Value::StringValue(s) => s.trim().parse().ok(),
        Value::DoubleValue(d) => Some(*d as i64),
        _ => None,
    }
}

/// A string attribute of the span, else of its resource (Istio puts its `istio.*` tags on the
/// span; SDKs put identity on the resource).
pub fn span_or_resource_str<'a>(
    span: &'a Span,
    resource: &'a [KeyValue],
    key: &str,
) -> Option<std::borrow::Cow<'a, str>> {
    let v = get(&span.attributes, key).or_else(|| get(resource, key))?;
    match v {
        Value::StringValue(s) if s.is_empty() => None,
        Value::StringValue(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        other => Some(std::borrow::Cow::Owned(value_to_string(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{kv, kv_str};
    use crate::otlp::Status;

    fn span(attrs: Vec<KeyValue>, code: StatusCode) -> Span {
        Span {
            attributes: attrs,
            status: Some(Status {
                code: code as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn envoy_string_attributes_count_as_failures_when_status_is_unset() {
        let u = StatusCode::Unset;
        assert!(is_failed(&span(vec![kv_str("error", "true")], u)));
        assert!(is_failed(&span(
            vec![kv("error", Value::BoolValue(true))],
            u
        )));
        assert!(is_failed(&span(vec![kv_str("http.status_code", "503")], u)));
        assert!(is_failed(&span(
            vec![kv("http.response.status_code", Value::IntValue(500))],
            u
        )));
        assert!(is_failed(&span(vec![kv_str("grpc.status_code", "14")], u)));
        assert!(!is_failed(&span(
            vec![kv_str("http.status_code", "404")],
            u
        )));
        assert!(!is_failed(&span(vec![kv_str("http.status_code", "0")], u)));
        assert!(!is_failed(&span(vec![kv_str("grpc.status_code", "0")], u)));
        assert!(!is_failed(&span(vec![kv_str("error", "false")], u)));
    }

    #[test]
    fn an_explicit_status_wins() {
        assert!(!is_failed(&span(
            vec![kv_str("http.status_code", "503")],
            StatusCode::Ok
        )));
        assert!(is_failed(&span(vec![], StatusCode::Error)));
        assert_eq!(
            effective_status(&Span::default()),
            StatusCode::Unset,
            "no status at all is UNSET"
        );
    }
}
