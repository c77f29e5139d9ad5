//! The `jaeger.api_v2` protobuf messages that `CollectorService/PostSpans` carries, declared by
//! hand. Field numbers and enum values follow Jaeger's public API definition
//! (`proto/api_v2/model.proto` and `collector.proto` of `jaegertracing/jaeger-idl`).
//!
//! Jaeger's Go code gives the id fields custom types, which changes nothing on the wire: a
//! trace id is 16 bytes (high 64 bits then low 64 bits, big-endian), a span id 8 bytes
//! (big-endian), exactly the byte order OTLP uses.

/// `google.protobuf.Duration`, shared with the `google.rpc` messages.
pub use meshgate_pdata::rpc::ProtoDuration as Duration;

/// gRPC path of `jaeger.api_v2.CollectorService/PostSpans`.
pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `jaeger.api_v2.ValueType`: which `v_*` field of a [`KeyValue`] holds the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ValueType {
    String = 0,
    Bool = 1,
    Int64 = 2,
    Float64 = 3,
    Binary = 4,
}

/// `jaeger.api_v2.KeyValue`: a tag or a log field.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(enumeration = "ValueType", tag = "2")]
    pub v_type: i32,
    #[prost(string, tag = "3")]
    pub v_str: String,
    #[prost(bool, tag = "4")]
    pub v_bool: bool,
    #[prost(int64, tag = "5")]
    pub v_int64: i64,
    #[prost(double, tag = "6")]
    pub v_float64: f64,
    #[prost(bytes = "vec", tag = "7")]
    pub v_binary: Vec<u8>,
}

impl KeyValue {
    /// A string tag.
    pub fn string(key: impl Into<String>, v: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            v_type: ValueType::String as i32,
            v_str: v.into(),
            ..Default::default()
        }
    }
    /// A boolean tag.
    pub fn bool(key: impl Into<String>, v: bool) -> Self {
        Self {
            key: key.into(),
            v_type: ValueType::Bool as i32,
            v_bool: v,
            ..Default::default()
        }
    }
    /// A 64-bit integer tag.
    pub fn int64(key: impl Into<String>, v: i64) -> Self {
        Self {
            key: key.into(),
            v_type: ValueType::Int64 as i32,
            v_int64: v,
            ..Default::default()
        }
    }
    /// A floating-point tag.
    pub fn float64(key: impl Into<String>, v: f64) -> Self {
        Self {
            key: key.into(),
            v_type: ValueType::Float64 as i32,
            v_float64: v,
            ..Default::default()
        }
    }
    /// A binary tag.
    pub fn binary(key: impl Into<String>, v: Vec<u8>) -> Self {
        Self {
            key: key.into(),
            v_type: ValueType::Binary as i32,
            v_binary: v,
            ..Default::default()
        }
    }
}

/// `jaeger.api_v2.Log`: a timestamped event of a span.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Log {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "2")]
    pub fields: Vec<KeyValue>,
}

/// `jaeger.api_v2.SpanRefType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SpanRefType {
    ChildOf = 0,
    FollowsFrom = 1,
}

/// `jaeger.api_v2.SpanRef`: a reference from one span to another.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanRef {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(enumeration = "SpanRefType", tag = "3")]
    pub ref_type: i32,
}

/// `jaeger.api_v2.Process`: the service that emitted spans.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(message, repeated, tag = "2")]
    pub tags: Vec<KeyValue>,
}

/// `jaeger.api_v2.Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub operation_name: String,
    #[prost(message, repeated, tag = "4")]
    pub references: Vec<SpanRef>,
    #[prost(uint32, tag = "5")]
    pub flags: u32,
    #[prost(message, optional, tag = "6")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub duration: Option<Duration>,
    #[prost(message, repeated, tag = "8")]
    pub tags: Vec<KeyValue>,
    #[prost(message, repeated, tag = "9")]
    pub logs: Vec<Log>,
    /// The span's own process; takes priority over the batch's.
    #[prost(message, optional, tag = "10")]
    pub process: Option<Process>,
    #[prost(string, tag = "11")]
    pub process_id: String,
    #[prost(string, repeated, tag = "12")]
    pub warnings: Vec<String>,
}

/// `jaeger.api_v2.Batch`: spans and the process of those that carry none of their own.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
    #[prost(message, optional, tag = "2")]
    pub process: Option<Process>,
}

/// `jaeger.api_v2.PostSpansRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostSpansRequest {
    #[prost(message, optional, tag = "1")]
    pub batch: Option<Batch>,
}

/// `jaeger.api_v2.PostSpansResponse` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostSpansResponse {}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample() -> PostSpansRequest {
        let process = Process {
            service_name: "checkout".into(),
            tags: vec![KeyValue::string("host.name", "node-1")],
        };
        PostSpansRequest {
            batch: Some(Batch {
                spans: vec![Span {
                    trace_id: (1..=16).collect(),
                    span_id: (1..=8).collect(),
                    operation_name: "GET /cart".into(),
                    references: vec![
                        SpanRef {
                            trace_id: vec![7; 16],
                            span_id: vec![8; 8],
                            ref_type: SpanRefType::ChildOf as i32,
                        },
                        SpanRef {
                            trace_id: vec![9; 16],
                            span_id: vec![10; 8],
                            ref_type: SpanRefType::FollowsFrom as i32,
                        },
                    ],
                    flags: 1,
                    start_time: Some(Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 123,
                    }),
                    duration: Some(Duration {
                        seconds: 1,
                        nanos: 5,
                    }),
                    tags: vec![
                        KeyValue::string("s", "v"),
                        KeyValue::bool("b", true),
                        KeyValue::int64("i", -42),
                        KeyValue::float64("f", 1.5),
                        KeyValue::binary("x", vec![0, 255]),
                    ],
                    logs: vec![Log {
                        timestamp: Some(Timestamp {
                            seconds: 1_700_000_000,
                            nanos: 500,
                        }),
                        fields: vec![KeyValue::string("event", "retry")],
                    }],
                    process: Some(process.clone()),
                    process_id: "p1".into(),
                    warnings: vec!["clock skew".into()],
                }],
                process: Some(process),
            }),
        }
    }

    #[test]
    fn round_trips() {
        let req = sample();
        let bytes = req.encode_to_vec();
        assert_eq!(PostSpansRequest::decode(bytes.as_slice()).unwrap(), req);
        assert!(PostSpansResponse::decode(&[][..]).is_ok());
    }

    /// Hand-checked wire bytes pin the field numbers and wire types, independently of prost.
    #[test]
    fn field_numbers_on_the_wire() {
        // KeyValue{key:"k", v_type:INT64, v_int64:3}: tag 1 (LEN), tag 2 (VARINT), tag 5.
        assert_eq!(
            KeyValue::int64("k", 3).encode_to_vec(),
            [0x0a, 1, b'k', 0x10, 2, 0x28, 3]
        );
        // v_float64 is tag 6 fixed64, v_binary tag 7, v_bool tag 4, v_str tag 3.
        assert_eq!(
            KeyValue::float64("", 1.0).encode_to_vec()[..3],
            [0x10, 3, 0x31]
        );
        assert_eq!(
            KeyValue::binary("", vec![9]).encode_to_vec(),
            [0x10, 4, 0x3a, 1, 9]
        );
        assert_eq!(KeyValue::bool("", true).encode_to_vec(), [0x10, 1, 0x20, 1]);
        assert_eq!(KeyValue::string("", "a").encode_to_vec(), [0x1a, 1, b'a']);
        // SpanRef: trace_id 1, span_id 2, ref_type 3.
        let r = SpanRef {
            trace_id: vec![1],
            span_id: vec![2],
            ref_type: SpanRefType::FollowsFrom as i32,
        };
        assert_eq!(r.encode_to_vec(), [0x0a, 1, 1, 0x12, 1, 2, 0x18, 1]);
        // Span: flags 5 (varint), process 10, process_id 11, warnings 12.
        let s = Span {
            flags: 1,
            process: Some(Process::default()),
            process_id: "p".into(),
            warnings: vec!["w".into()],
            ..Default::default()
        };
        assert_eq!(
            s.encode_to_vec(),
            [0x28, 1, 0x52, 0, 0x5a, 1, b'p', 0x62, 1, b'w']
        );
        // Batch: spans 1, process 2; PostSpansRequest: batch 1.
        let b = PostSpansRequest {
            batch: Some(Batch {
                spans: vec![Span::default()],
                process: Some(Process {
                    service_name: "s".into(),
                    tags: vec![],
                }),
            }),
        };
        assert_eq!(
            b.encode_to_vec(),
            [0x0a, 7, 0x0a, 0, 0x12, 3, 0x0a, 1, b's']
        );
    }
}
