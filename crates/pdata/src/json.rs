//! The OTLP/JSON encoding (OTLP spec, "JSON Protobuf Encoding"): lowerCamelCase field names,
//! trace and span ids as hex strings, enums as integers, 64-bit integers as decimal strings
//! (numbers are accepted on input too), unknown fields ignored.

use crate::otlp::{
    ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest,
};
use crate::{Payload, Signal};

/// Decodes an OTLP/JSON export request of `signal`. The error says what was wrong and where
/// (line and column in the body).
pub fn decode(signal: Signal, body: &[u8]) -> Result<Payload, String> {
    let res = match signal {
        Signal::Traces => {
            serde_json::from_slice::<ExportTraceServiceRequest>(body).map(Payload::Traces)
        }
        Signal::Metrics => {
            serde_json::from_slice::<ExportMetricsServiceRequest>(body).map(Payload::Metrics)
        }
        Signal::Logs => serde_json::from_slice::<ExportLogsServiceRequest>(body).map(Payload::Logs),
    };
    res.map_err(|e| format!("invalid OTLP/JSON {signal} request: {e}"))
}

/// Encodes a payload as one line of OTLP/JSON (no trailing newline).
pub fn encode(payload: &Payload) -> Vec<u8> {
    let res = match payload {
        Payload::Traces(t) => serde_json::to_vec(t),
        Payload::Metrics(m) => serde_json::to_vec(m),
        Payload::Logs(l) => serde_json::to_vec(l),
    };
    // Serialising these types cannot fail: every map key is a string and no value is a
    // non-finite float that serde_json refuses... except NaN/inf doubles, written as null.
    res.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{any_value::Value, span::SpanKind};

    const SPEC_EXAMPLE: &str = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{
          "scope": {"name": "my.library", "version": "1.0.0",
                    "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
          "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173",
            "name": "I'm a server span",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": 1544712661000000000,
            "kind": 2,
            "attributes": [
              {"key": "my.span.attr", "value": {"stringValue": "some value"}},
              {"key": "count", "value": {"intValue": "42"}},
              {"key": "n", "value": {"intValue": 7}},
              {"key": "unknownField", "value": {"boolValue": true}, "ignored": 1}
            ],
            "status": {"code": 2, "message": "boom"}
          }]
        }]
      }]
    }"#;

    #[test]
    fn decodes_the_spec_example() {
        let Payload::Traces(t) = decode(Signal::Traces, SPEC_EXAMPLE.as_bytes()).unwrap() else {
            panic!()
        };
        let span = &t.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            hex::encode(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(hex::encode(&span.span_id), "eee19b7ec3c1b174");
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(
            crate::attributes::get(&span.attributes, "count"),
            Some(&Value::IntValue(42))
        );
        assert_eq!(
            crate::attributes::get(&span.attributes, "n"),
            Some(&Value::IntValue(7))
        );
    }

    #[test]
    fn round_trips() {
        let p = decode(Signal::Traces, SPEC_EXAMPLE.as_bytes()).unwrap();
        let text = encode(&p);
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(
            s.contains("\"traceId\":\"5b8efff798038103d269b633813fc60c\""),
            "{s}"
        );
        assert!(
            s.contains("\"startTimeUnixNano\":\"1544712660000000000\""),
            "{s}"
        );
        assert!(s.contains("\"kind\":2"), "{s}");
        assert_eq!(decode(Signal::Traces, &text).unwrap(), p);
    }

    #[test]
    fn errors_name_the_place() {
        let e = decode(
            Signal::Traces,
            br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("line 1 column"), "{e}");
        let e = decode(Signal::Logs, b"{not json").unwrap_err();
        assert!(e.starts_with("invalid OTLP/JSON logs request"), "{e}");
    }
}
