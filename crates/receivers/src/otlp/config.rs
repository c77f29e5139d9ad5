use meshgate_config::{ByteSize, DurationValue};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

/// `receivers.otlp`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Which transports to serve. Writing a protocol with no body (`grpc:`) enables it with
    /// its defaults; leaving it out disables it.
    pub protocols: Protocols,
}

/// `receivers.otlp.protocols`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC.
    #[serde(default, deserialize_with = "present_or_null")]
    pub grpc: Option<GrpcConfig>,
    /// OTLP/HTTP.
    #[serde(default, deserialize_with = "present_or_null")]
    pub http: Option<HttpConfig>,
}

/// A key written with an empty body (`grpc:`) means "enabled with defaults".
fn present_or_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// `receivers.otlp.protocols.grpc`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `host:port` to listen on. Default `127.0.0.1:4317`; use `0.0.0.0:4317` to accept
    /// connections from other hosts (pods, sidecars).
    pub endpoint: String,
    /// Largest accepted request, after decompression. Default `4MiB`; bigger requests get
    /// `RESOURCE_EXHAUSTED`.
    pub max_recv_msg_size: ByteSize,
    /// Close each client connection after this long (with a GOAWAY), so clients reconnect and
    /// an L4 load balancer spreads them over new replicas. Default: unset (never).
    pub max_connection_age: Option<DurationValue>,
    /// After `max_connection_age`, how long in-flight requests may still finish. Default: unset
    /// (no limit).
    pub max_connection_age_grace: Option<DurationValue>,
    /// Concurrent HTTP/2 streams per connection. Default: unset (the HTTP/2 default).
    pub max_concurrent_streams: Option<u32>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:4317".into(),
            max_recv_msg_size: ByteSize(4 * 1024 * 1024),
            max_connection_age: None,
            max_connection_age_grace: None,
            max_concurrent_streams: None,
        }
    }
}

/// `receivers.otlp.protocols.http`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on. Default `127.0.0.1:4318`.
    pub endpoint: String,
    /// Largest accepted body, both as sent and after decompression. Default `20MiB`; bigger
    /// bodies get `413`.
    pub max_request_body_size: ByteSize,
    /// Path for traces. Default `/v1/traces`.
    pub traces_url_path: String,
    /// Path for metrics. Default `/v1/metrics`.
    pub metrics_url_path: String,
    /// Path for logs. Default `/v1/logs`.
    pub logs_url_path: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:4318".into(),
            max_request_body_size: ByteSize(20 * 1024 * 1024),
            traces_url_path: "/v1/traces".into(),
            metrics_url_path: "/v1/metrics".into(),
            logs_url_path: "/v1/logs".into(),
        }
    }
}
