//! `otlp`: sends every signal to an OTLP/gRPC backend (another collector, Jaeger, Tempo...).
//!
//! One lazily connected channel is shared by all senders, so a backend that is down at
//! startup does not fail the gateway; requests then fail with a retryable `UNAVAILABLE` until
//! it comes up. Errors follow the OTLP specification's retry rules.

use crate::common::{self, Compression, parse_config};
use meshgate_config::{ByteSize, DurationValue};
use meshgate_engine::exporter_helper::{QueueConfig, RetryConfig};
use meshgate_engine::{BuildContext, ExportError, Exported, Exporter, ExporterFactory, Factory};
use meshgate_pdata::otlp::{
    ExportLogsServiceResponse, ExportMetricsServiceResponse, ExportTraceServiceResponse,
};
use meshgate_pdata::{Payload, Signal};
use prost::Message;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

/// Largest message the exporter encodes or decodes (64 MiB).
const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Config of the `otlp` exporter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Backend address, `host:port` or `http://host:port` (required). `https://` is rejected:
    /// TLS is not supported yet.
    pub endpoint: String,
    /// Request compression: `gzip`, `zstd` or `none`. Default: `gzip`.
    #[serde(default)]
    pub compression: Compression,
    /// Deadline of one export attempt (retries get a fresh one). Default: `5s`.
    #[serde(default = "default_timeout")]
    pub timeout: DurationValue,
    /// Extra gRPC metadata sent with every request, e.g. an API key. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Largest request sent, as encoded protobuf: bigger batches are split before they are
    /// queued (gRPC servers refuse messages over 4 MiB by default). `0` disables the cap.
    /// Default: `4MiB`.
    #[serde(default = "crate::common::default_max_request_size")]
    pub max_request_size: ByteSize,
    /// The exporter's queue (see the engine's `sending_queue`). Default: 10 consumers, 1000
    /// batches, `on_full: drop`.
    #[serde(default)]
    pub sending_queue: QueueConfig,
    /// Retries of retryable failures. Default: enabled, 5s initial, x1.5, 30s max interval,
    /// 300s max elapsed time.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

fn default_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(5))
}

/// Factory of the `otlp` exporter.
pub struct OtlpExporterFactory;

impl Factory for OtlpExporterFactory {
    fn type_name(&self) -> &'static str {
        "otlp"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "Sends traces, metrics and logs to an OTLP/gRPC backend"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(OtlpConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        OtlpExporter::prepare(&parse_config(config)?).map(|_| ())
    }
}

impl ExporterFactory for OtlpExporterFactory {
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let cfg: OtlpConfig = parse_config(ctx.config)?;
        Ok(Arc::new(OtlpExporter::new(&cfg)?))
    }
}

/// gRPC method paths of the three OTLP export services.
const TRACES_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const METRICS_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const LOGS_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// A codec sending an already encoded request and decoding a protobuf response `R`.
///
/// The generated OTLP clients take the request by value, which would force a deep clone of
/// every batch (an allocation per span, attribute and string) on every attempt, since the
/// engine keeps the batch for retries. Encoding straight from the borrowed payload costs one
/// buffer instead; the wire format is identical.
struct PreEncoded<R>(PhantomData<fn() -> R>);

impl<R> Default for PreEncoded<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> Codec for PreEncoded<R> {
    type Encode = bytes::Bytes;
    type Decode = R;
    type Encoder = BytesEncoder;
    type Decoder = ProtoDecoder<R>;
    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }
    fn decoder(&mut self) -> ProtoDecoder<R> {
        ProtoDecoder(PhantomData)
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: bytes::Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

struct ProtoDecoder<R>(PhantomData<fn() -> R>);

impl<R: Message + Default> Decoder for ProtoDecoder<R> {
    type Item = R;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, tonic::Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))
    }
}

/// The `otlp` exporter.
pub struct OtlpExporter {
    max_request_bytes: Option<usize>,
    grpc: tonic::client::Grpc<Channel>,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    timeout: Duration,
    endpoint: String,
}

/// The checked parts of an [`OtlpConfig`].
pub(crate) struct Prepared {
    uri: String,
    timeout: Duration,
    endpoint: Endpoint,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

/// `host:port` or `http://host:port` as a URI tonic accepts.
fn endpoint_uri(endpoint: &str) -> Result<String, String> {
    let e = endpoint.trim();
    if e.is_empty() {
        return Err("`endpoint` is empty; write `host:port`, e.g. `tempo:4317`".into());
    }
    if e.starts_with("https://") {
        return Err(format!(
            "endpoint `{e}`: TLS is not supported yet; use a plain `http://` endpoint (e.g. behind a mesh sidecar that adds mTLS)"
        ));
    }
    if e.starts_with("http://") {
        return Ok(e.to_string());
    }
    if e.contains("://") {
        return Err(format!(
            "endpoint `{e}`: unsupported scheme; write `host:port` or `http://host:port`"
        ));
    }
    Ok(format!("http://{e}"))
}

impl OtlpExporter {
    /// Everything `new` checks, without creating the channel (which needs a runtime): the
    /// endpoint, the timeout and the headers. `meshgate validate` runs this too.
    pub(crate) fn prepare(cfg: &OtlpConfig) -> Result<Prepared, String> {
        let uri = endpoint_uri(&cfg.endpoint)?;
        let timeout = cfg.timeout.0;
        if timeout.is_zero() {
            return Err("`timeout` must be greater than 0s".into());
        }
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("endpoint `{}` is not a valid address: {e}", cfg.endpoint))?
            .timeout(timeout)
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let mut headers = Vec::with_capacity(cfg.headers.len());
        for (k, v) in &cfg.headers {
            if k.to_ascii_lowercase().ends_with("-bin") {
                return Err(format!(
                    "header `{k}`: binary (`-bin`) metadata is not supported"
                ));
            }
            let key = AsciiMetadataKey::from_bytes(k.as_bytes())
                .map_err(|_| format!("header name `{k}` is not a valid gRPC metadata key"))?;
            let value = AsciiMetadataValue::try_from(v.as_str())
                .map_err(|_| format!("header `{k}`: value is not valid printable ASCII"))?;
            headers.push((key, value));
        }
        Ok(Prepared {
            uri,
            timeout,
            endpoint,
            headers,
        })
    }

    /// Builds the exporter; the channel connects on first use.
    pub fn new(cfg: &OtlpConfig) -> Result<Self, String> {
        let Prepared {
            uri,
            timeout,
            endpoint,
            headers,
        } = Self::prepare(cfg)?;
        let channel = endpoint.connect_lazy();
        let enc = match cfg.compression {
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
            Compression::None => None,
        };
        let mut grpc = tonic::client::Grpc::new(channel)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        if let Some(enc) = enc {
            grpc = grpc.send_compressed(enc);
        }
        Ok(Self {
            max_request_bytes: (cfg.max_request_size.0 > 0)
                .then_some(cfg.max_request_size.0 as usize),
            grpc,
            headers,
            timeout,
            endpoint: uri,
        })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(self.timeout);
        let md = req.metadata_mut();
        for (k, v) in &self.headers {
            md.insert(k.clone(), v.clone());
        }
        req
    }

    async fn unary<R: Message + Default + Send + Sync + 'static>(
        &self,
        body: Vec<u8>,
        path: &'static str,
    ) -> Result<R, tonic::Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
        let path = http::uri::PathAndQuery::from_static(path);
        let resp = grpc
            .unary(
                self.request(bytes::Bytes::from(body)),
                path,
                PreEncoded::<R>::default(),
            )
            .await?;
        Ok(resp.into_inner())
    }

    /// One attempt at a unary call of `path` with an encoded request `body`, bounded by the
    /// export deadline, a failure mapped by the OTLP retry rules. `what` describes the data
    /// in messages. The `jaeger` exporter sends its native requests through this too.
    pub(crate) async fn call<R: Message + Default + Send + Sync + 'static>(
        &self,
        body: Vec<u8>,
        path: &'static str,
        what: &str,
    ) -> Result<R, ExportError> {
        // The channel enforces the timeout too; this also bounds the connect phase.
        match tokio::time::timeout(
            self.timeout + Duration::from_millis(100),
            self.unary(body, path),
        )
        .await
        {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(status)) => Err(map_status(&status, what, &self.endpoint)),
            Err(_) => Err(ExportError::retryable(format!(
                "sending {what} to {} timed out after {:?}",
                self.endpoint, self.timeout
            ))),
        }
    }
}

/// Maps a gRPC status to an export error following the OTLP/gRPC specification.
pub(crate) fn map_status(status: &tonic::Status, what: &str, endpoint: &str) -> ExportError {
    let retry_delay = meshgate_pdata::rpc::retry_delay(status.details());
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        // Only when the server says when to come back; otherwise it is a hard limit.
        Code::ResourceExhausted => retry_delay.is_some(),
        _ => false,
    };
    let message = format!(
        "sending {what} to {endpoint} failed: {:?}: {}",
        status.code(),
        status.message()
    );
    ExportError {
        retryable,
        retry_after: if retryable {
            retry_delay.filter(|d| !d.is_zero())
        } else {
            None
        },
        message,
    }
}

#[async_trait::async_trait]
impl Exporter for OtlpExporter {
    fn max_request_bytes(&self) -> Option<usize> {
        self.max_request_bytes
    }

    async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
        let what = common::describe(data);
        match data {
            Payload::Traces(t) => {
                let r: ExportTraceServiceResponse =
                    self.call(t.encode_to_vec(), TRACES_PATH, &what).await?;
                Ok(common::from_trace_ps(r.partial_success))
            }
            Payload::Metrics(m) => {
                let r: ExportMetricsServiceResponse =
                    self.call(m.encode_to_vec(), METRICS_PATH, &what).await?;
                Ok(common::from_metrics_ps(r.partial_success))
            }
            Payload::Logs(l) => {
                let r: ExportLogsServiceResponse =
                    self.call(l.encode_to_vec(), LOGS_PATH, &what).await?;
                Ok(common::from_logs_ps(r.partial_success))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil;
    use meshgate_pdata::otlp::grpc::{
        LogsService, LogsServiceServer, TraceService, TraceServiceServer,
    };
    use meshgate_pdata::otlp::*;
    use std::sync::Mutex;
    use tokio::net::TcpListener;
    use tokio_stream_shim::Incoming;

    /// What the test server answers to the next trace export.
    #[derive(Clone)]
    enum Behaviour {
        Ok,
        Partial(i64, &'static str),
        Fail(Code),
        ExhaustedRetryIn(Duration),
    }

    type Seen = (Payload, Option<String>, Option<String>);

    #[derive(Clone)]
    struct Server {
        behaviour: Arc<Mutex<Behaviour>>,
        /// (payload, `x-api-key`, `grpc-encoding`) of every request.
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Server {
        async fn export(
            &self,
            request: Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let key = request
                .metadata()
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let enc = request
                .metadata()
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            self.seen
                .lock()
                .unwrap()
                .push((Payload::Traces(request.into_inner()), key, enc));
            let b = self.behaviour.lock().unwrap().clone();
            match b {
                Behaviour::Ok => Ok(tonic::Response::new(Default::default())),
                Behaviour::Partial(n, msg) => {
                    Ok(tonic::Response::new(ExportTraceServiceResponse {
                        partial_success: Some(ExportTracePartialSuccess {
                            rejected_spans: n,
                            error_message: msg.into(),
                        }),
                    }))
                }
                Behaviour::Fail(code) => Err(tonic::Status::new(code, "test failure")),
                Behaviour::ExhaustedRetryIn(d) => Err(tonic::Status::with_details(
                    Code::ResourceExhausted,
                    "slow down",
                    meshgate_pdata::rpc::status_with_retry(
                        Code::ResourceExhausted as i32,
                        "slow down",
                        d,
                    )
                    .into(),
                )),
            }
        }
    }

    #[tonic::async_trait]
    impl LogsService for Server {
        async fn export(
            &self,
            request: Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            let n = Payload::Logs(request.into_inner()).item_count() as i64;
            Ok(tonic::Response::new(ExportLogsServiceResponse {
                partial_success: Some(ExportLogsPartialSuccess {
                    rejected_log_records: n,
                    error_message: "all logs refused".into(),
                }),
            }))
        }
    }

    /// A minimal stream of accepted connections, so the test needs no extra crate.
    mod tokio_stream_shim {
        use std::pin::Pin;
        use std::task::{Context, Poll};
        use tokio::net::{TcpListener, TcpStream};

        pub struct Incoming(pub TcpListener);

        impl tonic::codegen::tokio_stream::Stream for Incoming {
            type Item = std::io::Result<TcpStream>;
            fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                self.0.poll_accept(cx).map(|r| Some(r.map(|(s, _)| s)))
            }
        }
    }

    async fn start_server() -> (Server, String) {
        let server = Server {
            behaviour: Arc::new(Mutex::new(Behaviour::Ok)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = server.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(
                    TraceServiceServer::new(svc.clone())
                        .accept_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Zstd),
                )
                .add_service(LogsServiceServer::new(svc))
                .serve_with_incoming(Incoming(listener))
                .await
                .unwrap();
        });
        (server, addr.to_string())
    }

    fn exporter(endpoint: &str, extra: serde_json::Value) -> OtlpExporter {
        let mut body =
            serde_json::json!({ "endpoint": endpoint, "headers": {"x-api-key": "s3cret"} });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let cfg: OtlpConfig = serde_json::from_value(body).unwrap();
        OtlpExporter::new(&cfg).unwrap()
    }

    #[tokio::test]
    async fn exports_traces_with_headers_and_gzip() {
        let (server, addr) = start_server().await;
        let exp = exporter(&addr, serde_json::json!({}));
        let data = testutil::traces(3);
        let done = exp.export(&data).await.unwrap();
        assert_eq!(done.rejected, 0);
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, data);
        assert_eq!(seen[0].1.as_deref(), Some("s3cret"));
        assert_eq!(seen[0].2.as_deref(), Some("gzip"));
    }

    #[tokio::test]
    async fn zstd_and_http_scheme_work() {
        let (server, addr) = start_server().await;
        let exp = exporter(
            &format!("http://{addr}"),
            serde_json::json!({"compression": "zstd"}),
        );
        exp.export(&testutil::traces(1)).await.unwrap();
        assert_eq!(server.seen.lock().unwrap()[0].2.as_deref(), Some("zstd"));
    }

    #[tokio::test]
    async fn partial_success_is_reported() {
        let (server, addr) = start_server().await;
        *server.behaviour.lock().unwrap() = Behaviour::Partial(2, "bad span ids");
        let exp = exporter(&addr, serde_json::json!({"compression": "none"}));
        let done = exp.export(&testutil::traces(3)).await.unwrap();
        assert_eq!(done.rejected, 2);
        assert_eq!(done.message.as_deref(), Some("bad span ids"));

        // Logs go to their own service.
        let done = exp.export(&testutil::logs(4)).await.unwrap();
        assert_eq!(done.rejected, 4);
        assert_eq!(done.message.as_deref(), Some("all logs refused"));
    }

    #[tokio::test]
    async fn unavailable_is_retryable_invalid_argument_is_not() {
        let (server, addr) = start_server().await;
        let exp = exporter(&addr, serde_json::json!({}));
        *server.behaviour.lock().unwrap() = Behaviour::Fail(Code::Unavailable);
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
        assert_eq!(e.retry_after, None);

        *server.behaviour.lock().unwrap() = Behaviour::Fail(Code::InvalidArgument);
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(!e.retryable, "{e:?}");
        assert!(e.message.contains("InvalidArgument"), "{}", e.message);
        assert!(e.message.contains("test failure"), "{}", e.message);

        // RESOURCE_EXHAUSTED without RetryInfo is permanent.
        *server.behaviour.lock().unwrap() = Behaviour::Fail(Code::ResourceExhausted);
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(!e.retryable, "{e:?}");
    }

    #[tokio::test]
    async fn resource_exhausted_with_retry_info_is_retryable_with_delay() {
        let (server, addr) = start_server().await;
        *server.behaviour.lock().unwrap() =
            Behaviour::ExhaustedRetryIn(Duration::from_millis(2500));
        let exp = exporter(&addr, serde_json::json!({}));
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
        assert_eq!(e.retry_after, Some(Duration::from_millis(2500)));
    }

    #[tokio::test]
    async fn unimplemented_service_is_permanent() {
        let (_server, addr) = start_server().await;
        let exp = exporter(&addr, serde_json::json!({}));
        // The test server has no metrics service.
        let e = exp.export(&testutil::metrics(2)).await.unwrap_err();
        assert!(!e.retryable, "{e:?}");
    }

    #[tokio::test]
    async fn down_backend_does_not_fail_build_and_is_retryable() {
        // Bind then drop to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let exp = exporter(
            &format!("127.0.0.1:{port}"),
            serde_json::json!({"timeout": "1s"}),
        );
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
    }

    #[tokio::test]
    async fn factory_validates_config() {
        let reg = meshgate_engine::Registry::new();
        let build = |v: serde_json::Value| {
            OtlpExporterFactory
                .build(testutil::ctx(&v, &reg))
                .map(|_| ())
        };
        let e = build(serde_json::json!({"endpoint": "https://x:4317"})).unwrap_err();
        assert!(e.contains("TLS is not supported yet"), "{e}");
        assert!(
            build(serde_json::json!({}))
                .unwrap_err()
                .contains("endpoint")
        );
        assert!(build(serde_json::json!({"endpoint": "x:1", "bogus": 1})).is_err());
        assert!(
            build(serde_json::json!({"endpoint": "x:1", "headers": {"bad key": "v"}})).is_err()
        );
        build(serde_json::json!({
            "endpoint": "collector:4317",
            "compression": "none",
            "timeout": "2s",
            "sending_queue": {"queue_size": 10},
            "retry_on_failure": {"enabled": false},
        }))
        .unwrap();
        let schema = serde_json::to_string(&OtlpExporterFactory.schema()).unwrap();
        assert!(schema.contains("sending_queue") && schema.contains("Default: `gzip`"));
    }

    /// An address that accepts connections and never answers.
    async fn black_hole() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        addr
    }

    #[tokio::test]
    async fn silent_backend_times_out_retryably() {
        let addr = black_hole().await;
        let exp = exporter(&addr, serde_json::json!({"timeout": "300ms"}));
        let started = std::time::Instant::now();
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
