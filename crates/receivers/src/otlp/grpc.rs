//! OTLP/gRPC: one generic service serves the three export RPCs.
//!
//! The generated tonic servers decode with a codec that reports malformed protobuf as
//! `INTERNAL`; OTLP clients must see `INVALID_ARGUMENT` (not retryable) for that, and
//! `RESOURCE_EXHAUSTED` for oversized messages, so meshgate routes the RPCs itself through
//! `tonic::server::Grpc` with its own codec.

use super::{GrpcConfig, Outcome};
use bytes::{Buf, BufMut, Bytes};
use meshgate_engine::{Consumer, Consumers, RefusalReason, ShutdownSignal};
use meshgate_pdata::{Payload, Signal};
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// One of the three OTLP export services.
pub(crate) trait ExportService: Clone + Send + Sync + 'static {
    const NAME: &'static str;
    const SIGNAL: Signal;
}

#[derive(Clone)]
pub(crate) struct TraceSvc;
impl ExportService for TraceSvc {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;
}
#[derive(Clone)]
pub(crate) struct MetricsSvc;
impl ExportService for MetricsSvc {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;
}
#[derive(Clone)]
pub(crate) struct LogsSvc;
impl ExportService for LogsSvc {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: Signal = Signal::Logs;
}

struct Inner {
    consumer: Consumer,
    max_size: usize,
}

/// The tower service of one OTLP export RPC.
pub(crate) struct OtlpGrpc<S> {
    inner: Arc<Inner>,
    _svc: PhantomData<S>,
}

impl<S> Clone for OtlpGrpc<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _svc: PhantomData,
        }
    }
}

impl<S: ExportService> NamedService for OtlpGrpc<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: ExportService, B> Service<http::Request<B>> for OtlpGrpc<S>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            if !req.uri().path().ends_with("/Export") {
                return Ok(Status::unimplemented(format!(
                    "{} has no method {}",
                    S::NAME,
                    req.uri().path()
                ))
                .into_http());
            }
            let codec = RawCodec {
                signal: S::SIGNAL,
                max_size: inner.max_size,
            };
            // tonic refuses beyond twice the limit before buffering; the codec refuses above
            // the limit itself with the OTLP-expected status.
            let mut grpc = tonic::server::Grpc::new(codec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(inner.max_size.saturating_mul(2));
            Ok(grpc.unary(Handler::<S>(inner, PhantomData), req).await)
        })
    }
}

struct Handler<S>(Arc<Inner>, PhantomData<S>);

impl<S: ExportService> UnaryService<Payload> for Handler<S> {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Payload>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            match super::export(&inner.consumer, request.into_inner()).await {
                Outcome::Accepted(rej) => Ok(Response::new(Bytes::from(super::response(
                    S::SIGNAL,
                    &rej,
                    false,
                )))),
                Outcome::Refused(r) => Err(refusal_status(&r)),
            }
        })
    }
}

fn refusal_status(r: &meshgate_engine::Refusal) -> Status {
    // UNAVAILABLE is retryable for every OTLP client; the message says why.
    let prefix = match r.reason {
        RefusalReason::Backpressure => "overloaded",
        RefusalReason::MemoryLimit => "memory limit reached",
        RefusalReason::ShuttingDown => "shutting down",
    };
    let message = format!("{prefix}: {}", r.message);
    // RetryInfo tells OTLP clients how long to back off (the gRPC twin of Retry-After).
    let details = meshgate_pdata::rpc::status_with_retry(
        tonic::Code::Unavailable as i32,
        &message,
        r.retry_after,
    );
    Status::with_details(tonic::Code::Unavailable, message, Bytes::from(details))
}

/// Decodes requests straight into a [`Payload`]; encodes already-encoded responses.
struct RawCodec {
    signal: Signal,
    max_size: usize,
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Payload;
    type Encoder = RawEncoder;
    type Decoder = PayloadDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> PayloadDecoder {
        PayloadDecoder {
            signal: self.signal,
            max_size: self.max_size,
        }
    }
}

struct RawEncoder;
impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

struct PayloadDecoder {
    signal: Signal,
    max_size: usize,
}
impl Decoder for PayloadDecoder {
    type Item = Payload;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Payload>, Status> {
        let len = src.remaining();
        if len > self.max_size {
            return Err(Status::resource_exhausted(format!(
                "request of {len} bytes is larger than max_recv_msg_size ({} bytes)",
                self.max_size
            )));
        }
        let bytes = src.copy_to_bytes(len);
        super::decode_protobuf(self.signal, &bytes)
            .map(Some)
            .map_err(Status::invalid_argument)
    }
}

/// Binds the gRPC listener and serves until shutdown.
pub(crate) async fn start(
    id: &str,
    cfg: &GrpcConfig,
    consumers: &Consumers,
    shutdown: ShutdownSignal,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(&cfg.endpoint)
        .await
        .map_err(|e| format!("protocols.grpc: cannot listen on {}: {e}", cfg.endpoint))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(age) = &cfg.max_connection_age {
        builder = builder.max_connection_age(age.0);
    }
    if let Some(grace) = &cfg.max_connection_age_grace {
        builder = builder.max_connection_age_grace(grace.0);
    }
    builder = builder.max_concurrent_streams(cfg.max_concurrent_streams);
    // OTLP requests are large (hundreds of KB to MBs): bigger frames and windows mean fewer
    // buffer growths and WINDOW_UPDATE round trips per request.
    builder = builder
        .max_frame_size(Some(1 << 20))
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20));
    let max_size = cfg.max_recv_msg_size.0 as usize;
    let svc = |c: &Consumer| {
        Arc::new(Inner {
            consumer: c.with_transport("grpc"),
            max_size,
        })
    };
    let mut routes = tonic::service::Routes::default();
    if let Some(c) = &consumers.traces {
        routes = routes.add_service(OtlpGrpc::<TraceSvc> {
            inner: svc(c),
            _svc: PhantomData,
        });
    }
    if let Some(c) = &consumers.metrics {
        routes = routes.add_service(OtlpGrpc::<MetricsSvc> {
            inner: svc(c),
            _svc: PhantomData,
        });
    }
    if let Some(c) = &consumers.logs {
        routes = routes.add_service(OtlpGrpc::<LogsSvc> {
            inner: svc(c),
            _svc: PhantomData,
        });
    }
    let router = builder.add_routes(routes);
    tracing::info!(receiver = %id, "OTLP/gRPC listening on {addr}");
    let id = id.to_string();
    Ok(tokio::spawn(async move {
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown.wait())
            .await
        {
            tracing::error!(receiver = %id, "OTLP/gRPC server failed: {e}");
        }
    }))
}
