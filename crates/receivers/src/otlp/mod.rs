//! The `otlp` receiver.

mod config;
mod grpc;
mod http;

pub use config::{GrpcConfig, HttpConfig, OtlpConfig, Protocols};

use meshgate_engine::{
    BuildContext, Consumer, Consumers, Factory, Receiver, ReceiverFactory, ShutdownSignal,
};
use meshgate_pdata::otlp::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse, ExportMetricsPartialSuccess,
    ExportMetricsServiceResponse, ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use meshgate_pdata::validate::{Rejected, remove_invalid};
use meshgate_pdata::{Payload, Signal};
use prost::Message;

/// Builds `otlp` receivers.
pub struct OtlpFactory;

impl Factory for OtlpFactory {
    fn type_name(&self) -> &'static str {
        "otlp"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "OTLP over gRPC (:4317) and HTTP (:4318, protobuf and JSON) from SDKs, agents and mesh proxies"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(OtlpConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        let cfg: OtlpConfig = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
        check_protocols(&cfg)
    }
}

impl ReceiverFactory for OtlpFactory {
    fn build(
        &self,
        ctx: BuildContext<'_>,
        consumers: Consumers,
    ) -> Result<Box<dyn Receiver>, String> {
        let config: OtlpConfig = ctx.parse()?;
        check_protocols(&config)?;
        Ok(Box::new(OtlpReceiver {
            id: ctx.id,
            config,
            consumers,
        }))
    }
}

fn check_protocols(cfg: &OtlpConfig) -> Result<(), String> {
    if cfg.protocols.grpc.is_none() && cfg.protocols.http.is_none() {
        return Err("enable at least one of `protocols.grpc` and `protocols.http`".into());
    }
    Ok(())
}

struct OtlpReceiver {
    id: String,
    config: OtlpConfig,
    consumers: Consumers,
}

#[async_trait::async_trait]
impl Receiver for OtlpReceiver {
    async fn start(
        self: Box<Self>,
        shutdown: ShutdownSignal,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        let mut tasks = Vec::new();
        if let Some(g) = &self.config.protocols.grpc {
            tasks.push(grpc::start(&self.id, g, &self.consumers, shutdown.clone()).await?);
        }
        if let Some(h) = &self.config.protocols.http {
            tasks.push(http::start(&self.id, h, &self.consumers, shutdown.clone()).await?);
        }
        Ok(tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        }))
    }
}

/// The outcome of one export request, whatever the transport.
pub(crate) enum Outcome {
    /// Accepted; `Rejected` lists the invalid items removed (partial success).
    Accepted(Rejected),
    /// Refused as a whole, retryably.
    Refused(meshgate_engine::Refusal),
}

/// The transport-independent part of an export: validate, admit, count.
pub(crate) async fn export(consumer: &Consumer, mut data: Payload) -> Outcome {
    let rejected = remove_invalid(&mut data);
    consumer.reject_invalid(rejected.count);
    match consumer.consume(data).await {
        Ok(()) => Outcome::Accepted(rejected),
        Err(r) => Outcome::Refused(r),
    }
}

/// The protobuf `Export*ServiceResponse` for `signal`, with partial success when items were
/// rejected.
pub(crate) fn response(signal: Signal, rejected: &Rejected, json: bool) -> Vec<u8> {
    let n = rejected.count as i64;
    let msg = rejected.message();
    if json {
        // ProtoJSON: int64 counts are strings; an empty response is `{}`.
        let field = match signal {
            Signal::Traces => "rejectedSpans",
            Signal::Metrics => "rejectedDataPoints",
            Signal::Logs => "rejectedLogRecords",
        };
        let body = if n > 0 {
            serde_json::json!({"partialSuccess": {field: n.to_string(), "errorMessage": msg}})
        } else {
            serde_json::json!({})
        };
        return body.to_string().into_bytes();
    }
    match signal {
        Signal::Traces => (ExportTraceServiceResponse {
            partial_success: (n > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: n,
                error_message: msg,
            }),
        })
        .encode_to_vec(),
        Signal::Metrics => (ExportMetricsServiceResponse {
            partial_success: (n > 0).then_some(ExportMetricsPartialSuccess {
                rejected_data_points: n,
                error_message: msg,
            }),
        })
        .encode_to_vec(),
        Signal::Logs => (ExportLogsServiceResponse {
            partial_success: (n > 0).then_some(ExportLogsPartialSuccess {
                rejected_log_records: n,
                error_message: msg,
            }),
        })
        .encode_to_vec(),
    }
}

/// Decodes an OTLP protobuf export request of `signal`.
pub(crate) fn decode_protobuf(signal: Signal, bytes: &[u8]) -> Result<Payload, String> {
    use meshgate_pdata::otlp::*;
    let r = match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(bytes).map(Payload::Traces),
        Signal::Metrics => ExportMetricsServiceRequest::decode(bytes).map(Payload::Metrics),
        Signal::Logs => ExportLogsServiceRequest::decode(bytes).map(Payload::Logs),
    };
    r.map_err(|e| format!("malformed OTLP protobuf {signal} request: {e}"))
}
