//! `jaeger`: sends traces to Jaeger.
//!
//! Two protocols:
//! - `otlp` (default): OTLP/gRPC to a Jaeger v2 collector (or a v1 collector with its OTLP
//!   receiver enabled), port 4317. The data goes out exactly as the `otlp` exporter sends it.
//! - `grpc`: Jaeger's native `jaeger.api_v2.CollectorService/PostSpans`, port 14250, for
//!   Jaeger v1 collectors. Spans are converted as described in [`translate`]; each payload is
//!   sent as one `PostSpans` call (the spans of every process in one batch), so a retry never
//!   duplicates spans an earlier call already delivered.
//!
//! Both go through the `otlp` exporter's gRPC client: its lazily connected channel, headers,
//! compression, deadline and error rules (`UNAVAILABLE` and friends retry,
//! `RESOURCE_EXHAUSTED` only with a `RetryInfo`).

pub mod model;
pub mod translate;

use crate::common::{self, Compression, parse_config};
use crate::otlp::{OtlpConfig, OtlpExporter};
use meshgate_config::{ByteSize, DurationValue};
use meshgate_engine::exporter_helper::{QueueConfig, RetryConfig};
use meshgate_engine::{BuildContext, ExportError, Exported, Exporter, ExporterFactory, Factory};
use meshgate_pdata::{Payload, Signal};
use prost::Message;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Wire protocol of the `jaeger` exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum JaegerProtocol {
    /// OTLP/gRPC, for Jaeger v2 collectors (port 4317).
    #[default]
    Otlp,
    /// Jaeger's native gRPC `api_v2.CollectorService/PostSpans`, for Jaeger v1 collectors
    /// (port 14250).
    Grpc,
}

/// Compression of requests to Jaeger (both protocols accept gzip).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum JaegerCompression {
    /// gzip.
    #[default]
    Gzip,
    /// No compression.
    None,
}

impl From<JaegerCompression> for Compression {
    fn from(c: JaegerCompression) -> Self {
        match c {
            JaegerCompression::Gzip => Compression::Gzip,
            JaegerCompression::None => Compression::None,
        }
    }
}

/// Config of the `jaeger` exporter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JaegerConfig {
    /// Collector address, `host:port` or `http://host:port` (required): the OTLP/gRPC port
    /// (4317) with `protocol: otlp`, the `api_v2` gRPC port (14250) with `protocol: grpc`.
    /// `https://` is rejected: TLS is not supported yet.
    pub endpoint: String,
    /// `otlp`: OTLP/gRPC to a Jaeger v2 collector; `grpc`: Jaeger's native
    /// `api_v2.CollectorService/PostSpans` for Jaeger v1 collectors. Default: `otlp`.
    #[serde(default)]
    pub protocol: JaegerProtocol,
    /// Request compression: `gzip` or `none`. Default: `gzip`.
    #[serde(default)]
    pub compression: JaegerCompression,
    /// Deadline of one export attempt (retries get a fresh one). Default: `5s`.
    #[serde(default = "default_timeout")]
    pub timeout: DurationValue,
    /// Extra gRPC metadata sent with every request, e.g. a tenant header. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Largest batch sent, measured as encoded OTLP protobuf: bigger batches are split before
    /// they are queued (gRPC servers refuse messages over 4 MiB by default). With
    /// `protocol: grpc` a quarter of it is used, as the Jaeger encoding repeats scope and
    /// status tags on every span and can be over three times larger than OTLP. `0` disables
    /// the cap. Default: `4MiB`.
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

impl JaegerConfig {
    /// The settings of the gRPC client, as the `otlp` exporter takes them.
    fn grpc_client(&self) -> OtlpConfig {
        OtlpConfig {
            endpoint: self.endpoint.clone(),
            compression: self.compression.into(),
            timeout: self.timeout,
            headers: self.headers.clone(),
            max_request_size: self.max_request_size,
            sending_queue: self.sending_queue.clone(),
            retry_on_failure: self.retry_on_failure.clone(),
        }
    }
}

/// Factory of the `jaeger` exporter.
pub struct JaegerExporterFactory;

impl Factory for JaegerExporterFactory {
    fn type_name(&self) -> &'static str {
        "jaeger"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }
    fn description(&self) -> &'static str {
        "Sends traces to Jaeger over OTLP/gRPC (v2) or Jaeger's native gRPC api_v2 (v1)"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(JaegerConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        let cfg: JaegerConfig = parse_config(config)?;
        OtlpExporter::prepare(&cfg.grpc_client()).map(|_| ())
    }
}

impl ExporterFactory for JaegerExporterFactory {
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let cfg: JaegerConfig = parse_config(ctx.config)?;
        Ok(Arc::new(JaegerExporter::new(&cfg)?))
    }
}

/// The `jaeger` exporter.
pub struct JaegerExporter {
    protocol: JaegerProtocol,
    /// The gRPC client (and, with `protocol: otlp`, the whole exporter).
    client: OtlpExporter,
    max_request_bytes: Option<usize>,
}

impl JaegerExporter {
    /// Builds the exporter; the channel connects on first use.
    pub fn new(cfg: &JaegerConfig) -> Result<Self, String> {
        let client = OtlpExporter::new(&cfg.grpc_client())?;
        let limit = cfg.max_request_size.0 as usize;
        let max_request_bytes = match cfg.protocol {
            _ if limit == 0 => None,
            JaegerProtocol::Otlp => Some(limit),
            // The engine measures batches as OTLP; the Jaeger encoding repeats scope and
            // status tags on every span: ~1.5x for typical spans, over 3x for bare ones.
            JaegerProtocol::Grpc => Some((limit / 4).max(1)),
        };
        Ok(Self {
            protocol: cfg.protocol,
            client,
            max_request_bytes,
        })
    }
}

#[async_trait::async_trait]
impl Exporter for JaegerExporter {
    fn max_request_bytes(&self) -> Option<usize> {
        self.max_request_bytes
    }

    async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
        let Payload::Traces(traces) = data else {
            return Err(ExportError::permanent(format!(
                "the jaeger exporter sends traces only, not {}",
                data.signal()
            )));
        };
        match self.protocol {
            JaegerProtocol::Otlp => self.client.export(data).await,
            JaegerProtocol::Grpc => {
                let Some(req) = translate::post_spans_request(traces) else {
                    return Ok(Exported::default());
                };
                let _: model::PostSpansResponse = self
                    .client
                    .call(
                        req.encode_to_vec(),
                        model::POST_SPANS_PATH,
                        &common::describe(data),
                    )
                    .await?;
                Ok(Exported::default())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model::{PostSpansRequest, PostSpansResponse};
    use super::*;
    use crate::common::testutil;
    use meshgate_pdata::attributes::kv_str;
    use meshgate_pdata::otlp::grpc::{TraceService, TraceServiceServer};
    use meshgate_pdata::otlp::*;
    use std::marker::PhantomData;
    use std::sync::Mutex;
    use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
    use tonic::transport::server::TcpIncoming;
    use tonic::{Code, Status};

    /// A protobuf codec for the test server (encodes `E`, decodes `D`).
    struct TestCodec<E, D>(PhantomData<fn(E) -> D>);

    impl<E: Message + Send + 'static, D: Message + Default + Send + 'static> Codec for TestCodec<E, D> {
        type Encode = E;
        type Decode = D;
        type Encoder = TestCodec<E, ()>;
        type Decoder = TestCodec<(), D>;
        fn encoder(&mut self) -> Self::Encoder {
            TestCodec(PhantomData)
        }
        fn decoder(&mut self) -> Self::Decoder {
            TestCodec(PhantomData)
        }
    }

    impl<E: Message> Encoder for TestCodec<E, ()> {
        type Item = E;
        type Error = Status;
        fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            item.encode(dst)
                .map_err(|e| Status::internal(e.to_string()))
        }
    }

    impl<D: Message + Default> Decoder for TestCodec<(), D> {
        type Item = D;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
            D::decode(src)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()))
        }
    }

    /// What the native test server answers.
    #[derive(Clone)]
    enum Behaviour {
        Ok,
        Fail(Code),
        ExhaustedRetryIn(Duration),
    }

    /// A request as received: the message, `x-tenant` and `grpc-encoding`.
    type Seen = (PostSpansRequest, Option<String>, Option<String>);

    /// A Jaeger v1 collector's `CollectorService` built on our own messages.
    #[derive(Clone)]
    struct Collector {
        behaviour: Arc<Mutex<Behaviour>>,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl tonic::server::NamedService for Collector {
        const NAME: &'static str = "jaeger.api_v2.CollectorService";
    }

    impl tonic::server::UnaryService<PostSpansRequest> for Collector {
        type Response = PostSpansResponse;
        type Future = BoxFuture<tonic::Response<PostSpansResponse>, Status>;
        fn call(&mut self, request: tonic::Request<PostSpansRequest>) -> Self::Future {
            let header = |k: &str| {
                request
                    .metadata()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
            };
            let (tenant, enc) = (header("x-tenant"), header("grpc-encoding"));
            self.seen
                .lock()
                .unwrap()
                .push((request.into_inner(), tenant, enc));
            let b = self.behaviour.lock().unwrap().clone();
            Box::pin(async move {
                match b {
                    Behaviour::Ok => Ok(tonic::Response::new(PostSpansResponse {})),
                    Behaviour::Fail(code) => Err(Status::new(code, "test failure")),
                    Behaviour::ExhaustedRetryIn(d) => Err(Status::with_details(
                        Code::ResourceExhausted,
                        "busy",
                        meshgate_pdata::rpc::status_with_retry(
                            Code::ResourceExhausted as i32,
                            "busy",
                            d,
                        )
                        .into(),
                    )),
                }
            })
        }
    }

    impl<B> Service<http::Request<B>> for Collector
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            let svc = self.clone();
            Box::pin(async move {
                if req.uri().path() != model::POST_SPANS_PATH {
                    return Ok(Status::unimplemented("no such method").into_http());
                }
                let mut grpc = tonic::server::Grpc::new(TestCodec::<
                    PostSpansResponse,
                    PostSpansRequest,
                >(PhantomData))
                .accept_compressed(CompressionEncoding::Gzip);
                Ok(grpc.unary(svc, req).await)
            })
        }
    }

    async fn start_collector() -> (Collector, String) {
        let collector = Collector {
            behaviour: Arc::new(Mutex::new(Behaviour::Ok)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let svc = collector.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        (collector, addr)
    }

    /// A received OTLP request and its `grpc-encoding`.
    type OtlpSeen = (ExportTraceServiceRequest, Option<String>);

    /// An OTLP trace service recording what it receives.
    #[derive(Clone, Default)]
    struct OtlpSink(Arc<Mutex<Vec<OtlpSeen>>>);

    #[tonic::async_trait]
    impl TraceService for OtlpSink {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
            let enc = request
                .metadata()
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            self.0.lock().unwrap().push((request.into_inner(), enc));
            Ok(tonic::Response::new(Default::default()))
        }
    }

    async fn start_otlp() -> (OtlpSink, String) {
        let sink = OtlpSink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let svc =
            TraceServiceServer::new(sink.clone()).accept_compressed(CompressionEncoding::Gzip);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        (sink, addr)
    }

    fn exporter(body: serde_json::Value) -> JaegerExporter {
        JaegerExporter::new(&parse_config(&body).unwrap()).unwrap()
    }

    /// Two services in one payload.
    fn two_services() -> Payload {
        let Payload::Traces(mut t) = testutil::traces(2) else {
            unreachable!()
        };
        let mut other = t.resource_spans[0].clone();
        other.resource = Some(Resource {
            attributes: vec![kv_str("service.name", "payments")],
            ..Default::default()
        });
        other.scope_spans[0].spans.truncate(1);
        other.scope_spans[0].spans[0].span_id = vec![0xee; 8];
        other.scope_spans[0].spans[0].parent_span_id = vec![1; 8];
        t.resource_spans.push(other);
        Payload::Traces(t)
    }

    #[tokio::test]
    async fn native_protocol_posts_one_request_per_payload() {
        let (collector, addr) = start_collector().await;
        let exp = exporter(serde_json::json!({
            "endpoint": addr,
            "protocol": "grpc",
            "headers": {"x-tenant": "mesh"},
        }));
        let data = two_services();
        let done = exp.export(&data).await.unwrap();
        assert_eq!(done.rejected, 0);

        let seen = collector.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one PostSpans call for both processes");
        let (req, tenant, enc) = &seen[0];
        assert_eq!(tenant.as_deref(), Some("mesh"));
        assert_eq!(enc.as_deref(), Some("gzip"));
        let Payload::Traces(t) = &data else {
            unreachable!()
        };
        assert_eq!(Some(req), translate::post_spans_request(t).as_ref());

        let batch = req.batch.as_ref().unwrap();
        assert_eq!(batch.process.as_ref().unwrap().service_name, "checkout");
        assert_eq!(batch.spans.len(), 3);
        let s = &batch.spans[0];
        assert_eq!(s.trace_id, vec![1; 16]);
        assert_eq!(s.span_id, vec![1; 8]);
        assert_eq!(s.operation_name, "GET /item/0");
        assert!(s.process.is_none());
        assert!(
            s.tags
                .contains(&model::KeyValue::string("otel.scope.name", "envoy"))
        );
        let last = &batch.spans[2];
        assert_eq!(last.process.as_ref().unwrap().service_name, "payments");
        assert_eq!(last.references[0].span_id, vec![1; 8]);
        assert_eq!(
            last.references[0].ref_type,
            model::SpanRefType::ChildOf as i32
        );
    }

    #[tokio::test]
    async fn native_protocol_without_compression_and_without_spans() {
        let (collector, addr) = start_collector().await;
        let exp = exporter(serde_json::json!({
            "endpoint": format!("http://{addr}"),
            "protocol": "grpc",
            "compression": "none",
        }));
        exp.export(&testutil::traces(1)).await.unwrap();
        // No spans: nothing to send.
        exp.export(&Payload::Traces(Default::default()))
            .await
            .unwrap();
        let seen = collector.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].2, None);
    }

    #[tokio::test]
    async fn native_errors_follow_the_retry_rules() {
        let (collector, addr) = start_collector().await;
        let exp = exporter(serde_json::json!({"endpoint": addr, "protocol": "grpc"}));
        *collector.behaviour.lock().unwrap() = Behaviour::Fail(Code::Unavailable);
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
        assert!(
            e.message.contains("Unavailable: test failure"),
            "{}",
            e.message
        );

        *collector.behaviour.lock().unwrap() = Behaviour::Fail(Code::InvalidArgument);
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(!e.retryable, "{e:?}");
        assert!(e.message.contains("test failure"), "{}", e.message);

        *collector.behaviour.lock().unwrap() =
            Behaviour::ExhaustedRetryIn(Duration::from_millis(1500));
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
        assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));
    }

    #[tokio::test]
    async fn down_collector_is_retryable() {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let exp = exporter(serde_json::json!({
            "endpoint": format!("127.0.0.1:{port}"),
            "protocol": "grpc",
            "timeout": "1s",
        }));
        let e = exp.export(&testutil::traces(1)).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
    }

    #[tokio::test]
    async fn otlp_protocol_sends_otlp_unchanged() {
        let (sink, addr) = start_otlp().await;
        let exp = exporter(serde_json::json!({"endpoint": addr}));
        let data = two_services();
        exp.export(&data).await.unwrap();
        let seen = sink.0.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(Payload::Traces(seen[0].0.clone()), data);
        assert_eq!(seen[0].1.as_deref(), Some("gzip"));
    }

    #[tokio::test]
    async fn only_traces_are_sent() {
        let exp = exporter(serde_json::json!({"endpoint": "127.0.0.1:1"}));
        let e = exp.export(&testutil::logs(1)).await.unwrap_err();
        assert!(!e.retryable, "{e:?}");
        assert_eq!(JaegerExporterFactory.signals(), [Signal::Traces]);
    }

    #[tokio::test]
    async fn max_request_bytes_per_protocol() {
        let otlp = exporter(serde_json::json!({"endpoint": "x:4317"}));
        assert_eq!(otlp.max_request_bytes(), Some(4 * 1024 * 1024));
        let native = exporter(serde_json::json!({"endpoint": "x:14250", "protocol": "grpc"}));
        assert_eq!(native.max_request_bytes(), Some(1024 * 1024));
        let off = exporter(serde_json::json!({"endpoint": "x:1", "max_request_size": 0}));
        assert_eq!(off.max_request_bytes(), None);
    }

    #[tokio::test]
    async fn factory_checks_and_builds() {
        let check = |v: serde_json::Value| JaegerExporterFactory.check(&v);
        assert!(
            check(serde_json::json!({}))
                .unwrap_err()
                .contains("endpoint")
        );
        assert!(check(serde_json::json!({"endpoint": ""})).is_err());
        let e = check(serde_json::json!({"endpoint": "https://jaeger:4317"})).unwrap_err();
        assert!(e.contains("TLS is not supported yet"), "{e}");
        assert!(check(serde_json::json!({"endpoint": "ftp://jaeger:1"})).is_err());
        assert!(check(serde_json::json!({"endpoint": "j:1", "protocol": "thrift"})).is_err());
        assert!(check(serde_json::json!({"endpoint": "j:1", "compression": "zstd"})).is_err());
        assert!(check(serde_json::json!({"endpoint": "j:1", "bogus": 1})).is_err());
        assert!(check(serde_json::json!({"endpoint": "j:1", "timeout": "0s"})).is_err());
        assert!(
            check(serde_json::json!({"endpoint": "j:1", "headers": {"bad key": "v"}})).is_err()
        );
        let full = serde_json::json!({
            "endpoint": "jaeger-collector:14250",
            "protocol": "grpc",
            "compression": "none",
            "timeout": "2s",
            "headers": {"x-tenant": "mesh"},
            "max_request_size": "1MiB",
            "sending_queue": {"queue_size": 10},
            "retry_on_failure": {"enabled": false},
        });
        check(full.clone()).unwrap();
        let reg = meshgate_engine::Registry::new();
        JaegerExporterFactory
            .build(testutil::ctx(&full, &reg))
            .unwrap();
        assert!(
            JaegerExporterFactory
                .build(testutil::ctx(
                    &serde_json::json!({"endpoint": "j:1", "sending_queue": null}),
                    &reg
                ))
                .is_ok()
        );
    }

    #[test]
    fn schema_documents_every_field_with_its_default() {
        let schema = serde_json::to_value(JaegerExporterFactory.schema()).unwrap();
        let props = schema["properties"].as_object().unwrap();
        for key in [
            "endpoint",
            "protocol",
            "compression",
            "timeout",
            "headers",
            "max_request_size",
            "sending_queue",
            "retry_on_failure",
        ] {
            let d = props[key]["description"].as_str().unwrap_or_default();
            assert!(
                d.contains("Default") || d.contains("required"),
                "{key}: {d:?}"
            );
        }
        assert_eq!(props.len(), 8);
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], serde_json::json!(["endpoint"]));
    }
}
