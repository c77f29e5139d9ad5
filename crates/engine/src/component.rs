//! The component model: what a receiver, processor and exporter are, how they are built from
//! config, and the errors they exchange with the engine.

use crate::admin::ApiRoutes;
use crate::consumer::Consumers;
use crate::telemetry::Registry;
use meshgate_pdata::{Payload, Signal};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why data was refused at the door. Every reason is retryable by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// A pipeline's input queue stayed full for the admission wait: downstream is slower than
    /// the incoming rate.
    Backpressure,
    /// A `memory_limiter` is above its soft limit.
    MemoryLimit,
    /// The gateway is draining for shutdown.
    ShuttingDown,
}

impl RefusalReason {
    /// Label value on `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Backpressure => "backpressure",
            RefusalReason::MemoryLimit => "memory_limit",
            RefusalReason::ShuttingDown => "shutting_down",
        }
    }
}

/// A retryable refusal handed back to the client (gRPC `UNAVAILABLE`, HTTP 503/429 with
/// `Retry-After`).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Why.
    pub reason: RefusalReason,
    /// When the client should try again.
    pub retry_after: Duration,
    /// Human-readable detail naming the component that refused.
    pub message: String,
}

/// The outcome of one export attempt that did not fully succeed.
#[derive(Debug, Clone)]
pub struct ExportError {
    /// Whether trying again may succeed (network errors, 5xx, 429, gRPC UNAVAILABLE...).
    pub retryable: bool,
    /// A delay the backend asked for (`Retry-After`, gRPC RetryInfo).
    pub retry_after: Option<Duration>,
    /// What went wrong, for the log.
    pub message: String,
}

impl ExportError {
    /// An error worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            retry_after: None,
            message: message.into(),
        }
    }
    /// An error that will not go away by retrying (e.g. 400 Bad Request).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            retry_after: None,
            message: message.into(),
        }
    }
}

/// A successful export; the backend may still have rejected some items (OTLP partial success).
#[derive(Debug, Clone, Default)]
pub struct Exported {
    /// Items the backend reported as rejected.
    pub rejected: u64,
    /// The backend's message about them.
    pub message: Option<String>,
}

/// Signalled once when the gateway starts shutting down. Cheap to clone and wait on.
#[derive(Clone)]
pub struct ShutdownSignal(tokio::sync::watch::Receiver<bool>);

/// The sending half of a [`ShutdownSignal`].
pub struct ShutdownTrigger(tokio::sync::watch::Sender<bool>);

/// A new shutdown trigger and its signal.
pub fn shutdown_channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (ShutdownTrigger(tx), ShutdownSignal(rx))
}

impl ShutdownTrigger {
    /// Fires the signal (idempotent).
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
    /// A signal that fires with this trigger.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal(self.0.subscribe())
    }
}

impl ShutdownSignal {
    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
    /// Resolves when shutdown starts (immediately if it already has).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}

/// A running receiver: listens, decodes, validates and hands data to its [`Consumers`].
#[async_trait::async_trait]
pub trait Receiver: Send + 'static {
    /// Binds the listeners (a bind failure fails startup with a clear error) and returns the
    /// task serving them. The task must stop accepting new data when `shutdown` fires, finish
    /// the requests in flight, and then return, dropping its consumers so the pipelines drain.
    async fn start(
        self: Box<Self>,
        shutdown: ShutdownSignal,
    ) -> Result<tokio::task::JoinHandle<()>, String>;
}

/// Something that can veto admission of new data into a pipeline (a `memory_limiter`).
pub trait AdmissionGate: Send + Sync + 'static {
    /// `Err` refuses the data with a retryable error.
    fn check(&self) -> Result<(), Refusal>;
}

/// A processor: a synchronous step in a pipeline's chain. All processors of one pipeline run
/// in one task, so a step is a function call, not a channel hop.
pub trait Processor: Send + 'static {
    /// Handles one payload and pushes what it produces (zero, one or many payloads) to `out`.
    fn process(&mut self, data: Payload, out: &mut Vec<Payload>);
    /// When this processor next wants [`Processor::on_deadline`] called (a batch timeout).
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// Called at or after [`Processor::deadline`].
    fn on_deadline(&mut self, _out: &mut Vec<Payload>) {}
    /// Emits everything held, at shutdown.
    fn flush(&mut self, _out: &mut Vec<Payload>) {}
    /// A gate checked before data is admitted into the pipeline.
    fn admission_gate(&self) -> Option<Arc<dyn AdmissionGate>> {
        None
    }
}

/// An exporter: sends a payload to a backend. Queueing, retries and accounting are done
/// around it by the engine's exporter helper, so an implementation only encodes and sends.
#[async_trait::async_trait]
pub trait Exporter: Send + Sync + 'static {
    /// One attempt at sending `data`.
    async fn export(&self, data: &Payload) -> Result<Exported, ExportError>;
    /// Called once after the queue drained, to flush and close connections or files.
    async fn shutdown(&self) {}
    /// Items this exporter accepted from the engine (counted `sent` there) but could not
    /// deliver by the end of [`Exporter::shutdown`]: an exporter with queues of its own (the
    /// `loadbalancing` exporter's per-endpoint queues) reports them here, so the drain report
    /// does not look complete when it was not. Read once, after `shutdown` returned.
    fn undelivered(&self) -> u64 {
        0
    }
    /// The largest request the backend accepts, in protobuf-encoded bytes. Batches above it
    /// are split before they are queued, so a retry never resends a piece twice.
    fn max_request_bytes(&self) -> Option<usize> {
        None
    }
}

/// What a factory gets to build a component.
pub struct BuildContext<'a> {
    /// `type[/name]` of the component, for logs and metric labels.
    pub id: String,
    /// The component's config body (already validated against its schema).
    pub config: &'a serde_json::Value,
    /// The self-telemetry registry.
    pub telemetry: &'a Registry,
    /// Routes on the admin endpoint besides the built-in ones; a component that serves state
    /// or pages over HTTP (the service graph's `/api/v1/topology` and `/service-map`)
    /// registers its handlers here.
    pub api: ApiRoutes,
}

impl BuildContext<'_> {
    /// Deserialises the component's typed config.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.config.clone()).map_err(|e| format!("{}: {e}", self.id))
    }
}

/// What a processor factory additionally learns: the pipeline and signal it serves (a
/// processor instance is built once per pipeline, as in the OpenTelemetry Collector).
pub struct ProcessorContext {
    /// The pipeline's id (`traces`, `metrics/red`...).
    pub pipeline: String,
    /// The pipeline's signal.
    pub signal: Signal,
}

/// Shared description of a component type: name, signals, config schema.
pub trait Factory: Send + Sync {
    /// The config type name (`otlp`, `batch`...).
    fn type_name(&self) -> &'static str;
    /// The signals it handles.
    fn signals(&self) -> &'static [Signal];
    /// One line for `meshgate components`.
    fn description(&self) -> &'static str;
    /// JSON Schema of its config body.
    fn schema(&self) -> schemars::Schema;
    /// Signals it takes only when a key of its body is set, as `(signal, key)`, so
    /// `meshgate validate` refuses a pipeline that would feed it data it cannot use. Default:
    /// none.
    fn signal_requires(&self) -> &'static [(Signal, &'static str)] {
        &[]
    }
    /// Checks a config body beyond what its schema can say (relations between fields,
    /// regexes, URLs) without building anything, so `meshgate validate` reports what `run`
    /// would refuse. The message needs no component id: the caller adds the key path.
    fn check(&self, _config: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

/// Builds receivers of one type.
pub trait ReceiverFactory: Factory {
    /// Builds a receiver that delivers into `consumers` (one per signal it is wired for).
    fn build(
        &self,
        ctx: BuildContext<'_>,
        consumers: Consumers,
    ) -> Result<Box<dyn Receiver>, String>;
}

/// Builds processors of one type.
pub trait ProcessorFactory: Factory {
    /// Builds the processor instance for one pipeline.
    fn build(
        &self,
        ctx: BuildContext<'_>,
        pipeline: &ProcessorContext,
    ) -> Result<Box<dyn Processor>, String>;
}

/// Builds exporters of one type.
pub trait ExporterFactory: Factory {
    /// Builds the exporter; the engine wraps it in a queue with retries configured by
    /// [`crate::exporter_helper::QueueRetryConfig`] fields read from the same body.
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String>;
    /// Whether the engine's queue and retry settings apply (`sending_queue`,
    /// `retry_on_failure`). Local exporters (debug, file) return false and are called in
    /// order from a single worker.
    fn uses_queue_and_retry(&self) -> bool {
        true
    }
    /// Whether batches must reach the backend in the order they were queued (Prometheus
    /// refuses samples older than a series' newest). The engine then keeps the configured
    /// `sending_queue` but runs one sender and does no retries of its own: the exporter
    /// retries inside `export`, and a retryable error it still returns drops the batch
    /// (`retries_exhausted`), so no later batch ever overtakes an earlier one.
    fn ordered(&self) -> bool {
        false
    }
}

/// A connector: the exporter of one pipeline and the receiver of another, as in the
/// OpenTelemetry Collector. `spanmetrics` and `servicegraph` consume the spans of a `traces`
/// pipeline and emit metrics into a `metrics` pipeline. The engine runs each connector in its
/// own task behind a bounded queue: upstream pipelines block (never drop) when it is behind,
/// so what it derives covers every span that was admitted.
pub trait Connector: Send + 'static {
    /// Reads one payload of an upstream pipeline and pushes whatever it emits right away
    /// (usually nothing: derived metrics leave on [`Connector::on_deadline`]).
    fn consume(&mut self, data: &Payload, out: &mut Vec<Payload>);
    /// When this connector next wants [`Connector::on_deadline`] called (flush interval,
    /// expiry of unpaired spans).
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// Called at or after [`Connector::deadline`].
    fn on_deadline(&mut self, _out: &mut Vec<Payload>) {}
    /// Emits everything held, at shutdown, after the upstream pipelines drained.
    fn flush(&mut self, _out: &mut Vec<Payload>) {}
}

/// Builds connectors of one type. [`Factory::signals`] are the signals it consumes (the
/// pipelines it may export from); [`ConnectorFactory::produces`] the signals it emits (the
/// pipelines it may receive into).
pub trait ConnectorFactory: Factory {
    /// Signals of the pipelines that may list the connector under `receivers`.
    fn produces(&self) -> &'static [Signal];
    /// Builds the one instance shared by every pipeline that names the connector.
    fn build(&self, ctx: BuildContext<'_>) -> Result<Box<dyn Connector>, String>;
}
