//! `google.rpc` messages, declared by hand (field numbers from the public API definitions) so
//! no extra proto dependency is needed: the error model of gRPC status details and of OTLP/HTTP
//! error bodies, and `RetryInfo`, with which servers tell clients when to retry.

use std::time::Duration;

/// `google.rpc.Status`: the error model of gRPC details and OTLP/HTTP error bodies.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Type URL of [`RetryInfo`] inside an `Any`.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The `RetryInfo` delay carried in an encoded `google.rpc.Status`, if any.
/// `Some(Duration::ZERO)` means "RetryInfo present without a delay".
pub fn retry_delay(status_bytes: &[u8]) -> Option<Duration> {
    use prost::Message;
    if status_bytes.is_empty() {
        return None;
    }
    let status = Status::decode(status_bytes).ok()?;
    status
        .details
        .iter()
        .find(|a| a.type_url == RETRY_INFO_TYPE || a.type_url.ends_with("/google.rpc.RetryInfo"))
        .map(|a| {
            RetryInfo::decode(a.value.as_slice())
                .ok()
                .and_then(|r| r.retry_delay)
                .map(|d| {
                    Duration::new(
                        d.seconds.max(0) as u64,
                        d.nanos.clamp(0, 999_999_999) as u32,
                    )
                })
                .unwrap_or(Duration::ZERO)
        })
}

/// An encoded `google.rpc.Status` carrying a `RetryInfo` with `delay`: what a server puts in
/// gRPC `grpc-status-details-bin` to tell clients when to retry.
pub fn status_with_retry(code: i32, message: &str, delay: Duration) -> Vec<u8> {
    use prost::Message;
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    Status {
        code,
        message: message.to_string(),
        details: vec![Any {
            type_url: RETRY_INFO_TYPE.to_string(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}
