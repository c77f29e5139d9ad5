//! The door into the pipelines: receivers hand each decoded request to a [`Consumer`], which
//! admits it into every pipeline the receiver feeds, or refuses it as a whole with a retryable
//! error, and counts every item either way.

use crate::component::{AdmissionGate, Refusal, RefusalReason};
use crate::telemetry::{Counter, Registry};
use meshgate_pdata::{Payload, Signal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a receiver waits for room in a pipeline's input queue before refusing. Short,
/// because Envoy and most SDKs time out quickly and retry anyway.
pub const ADMISSION_WAIT: Duration = Duration::from_millis(500);

/// The entry of one pipeline.
#[derive(Clone)]
pub struct PipelineInput {
    /// Pipeline id, for messages.
    pub pipeline: String,
    /// Bounded input queue of the pipeline task.
    pub tx: mpsc::Sender<Payload>,
    /// Gates (memory limiters) checked before admission.
    pub gates: Vec<Arc<dyn AdmissionGate>>,
}

/// Per receiver, signal and transport: the items counted at the door.
#[derive(Clone)]
struct DoorCounters {
    received: Counter,
    accepted: Counter,
    refused_invalid: Counter,
    refused_backpressure: Counter,
    refused_memory: Counter,
    refused_shutdown: Counter,
}

/// Hands data from one receiver, for one signal, into its pipelines.
#[derive(Clone)]
pub struct Consumer {
    signal: Signal,
    receiver: String,
    inputs: Arc<[PipelineInput]>,
    draining: Arc<AtomicBool>,
    telemetry: Registry,
    counters: DoorCounters,
}

impl Consumer {
    /// A consumer feeding `inputs`; `draining` is set by the engine when shutdown starts.
    pub fn new(
        receiver: &str,
        signal: Signal,
        inputs: Vec<PipelineInput>,
        draining: Arc<AtomicBool>,
        telemetry: &Registry,
    ) -> Self {
        let counters = door_counters(telemetry, receiver, signal, "");
        Consumer {
            signal,
            receiver: receiver.to_string(),
            inputs: inputs.into(),
            draining,
            telemetry: telemetry.clone(),
            counters,
        }
    }

    /// The same consumer, counting under the `transport` label (`grpc`, `http`).
    pub fn with_transport(&self, transport: &str) -> Self {
        let mut c = self.clone();
        c.counters = door_counters(&self.telemetry, &self.receiver, self.signal, transport);
        c
    }

    /// The signal this consumer carries.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Counts `n` items that the receiver rejected as invalid (OTLP partial success).
    pub fn reject_invalid(&self, n: usize) {
        self.counters.received.add(n as u64);
        self.counters.refused_invalid.add(n as u64);
    }

    /// Admits `data` into every pipeline, or refuses all of it. An empty payload is accepted
    /// without touching the pipelines.
    pub async fn consume(&self, data: Payload) -> Result<(), Refusal> {
        self.consume_waiting(data, ADMISSION_WAIT).await
    }

    /// [`Consumer::consume`], waiting up to `wait` for room in the pipelines. Connectors wait
    /// longer than receivers: there is no client to retry what they derived.
    pub async fn consume_waiting(&self, data: Payload, wait: Duration) -> Result<(), Refusal> {
        let items = data.item_count() as u64;
        self.counters.received.add(items);
        if items == 0 {
            return Ok(());
        }
        match self.admit(data, wait).await {
            Ok(()) => {
                self.counters.accepted.add(items);
                Ok(())
            }
            Err(r) => {
                match r.reason {
                    RefusalReason::Backpressure => self.counters.refused_backpressure.add(items),
                    RefusalReason::MemoryLimit => self.counters.refused_memory.add(items),
                    RefusalReason::ShuttingDown => self.counters.refused_shutdown.add(items),
                }
                Err(r)
            }
        }
    }

    async fn admit(&self, data: Payload, wait: Duration) -> Result<(), Refusal> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(Refusal {
                reason: RefusalReason::ShuttingDown,
                retry_after: Duration::from_secs(1),
                message: "meshgate is shutting down; send to another instance".into(),
            });
        }
        for input in self.inputs.iter() {
            for gate in &input.gates {
                gate.check()?;
            }
        }
        // Reserve room in every pipeline first, so the request is admitted everywhere or
        // nowhere: a retry after a refusal never duplicates data into some pipelines.
        let deadline = tokio::time::Instant::now() + wait;
        let mut permits = Vec::with_capacity(self.inputs.len());
        for input in self.inputs.iter() {
            match tokio::time::timeout_at(deadline, input.tx.reserve()).await {
                Ok(Ok(permit)) => permits.push(permit),
                Ok(Err(_)) => {
                    return Err(Refusal {
                        reason: RefusalReason::ShuttingDown,
                        retry_after: Duration::from_secs(1),
                        message: format!("pipeline `{}` has stopped", input.pipeline),
                    });
                }
                Err(_) => {
                    return Err(Refusal {
                        reason: RefusalReason::Backpressure,
                        retry_after: Duration::from_secs(1),
                        message: format!(
                            "pipeline `{}` is full (its exporters are slower than the incoming data); retry later",
                            input.pipeline
                        ),
                    });
                }
            }
        }
        let n = permits.len();
        let mut data = Some(data);
        for (i, permit) in permits.into_iter().enumerate() {
            let d = if i + 1 == n {
                data.take()
            } else {
                data.clone()
            };
            if let Some(d) = d {
                permit.send(d);
            }
        }
        Ok(())
    }
}

fn door_counters(t: &Registry, receiver: &str, signal: Signal, transport: &str) -> DoorCounters {
    let s = signal.as_str();
    let base = [
        ("receiver", receiver),
        ("signal", s),
        ("transport", transport),
    ];
    let refused = |reason: &str| {
        t.counter(
            "meshgate_receiver_refused_items_total",
            "Items refused at the receiver, by reason; the client was told (retryable refusal or partial success).",
            &[base[0], base[1], base[2], ("reason", reason)],
        )
    };
    DoorCounters {
        received: t.counter(
            "meshgate_receiver_received_items_total",
            "Items (spans, metric points, log records) received; received = accepted + refused.",
            &base,
        ),
        accepted: t.counter(
            "meshgate_receiver_accepted_items_total",
            "Items admitted into the pipelines.",
            &base,
        ),
        refused_invalid: refused("invalid"),
        refused_backpressure: refused(RefusalReason::Backpressure.as_str()),
        refused_memory: refused(RefusalReason::MemoryLimit.as_str()),
        refused_shutdown: refused(RefusalReason::ShuttingDown.as_str()),
    }
}

/// The consumers a receiver delivers to, one per signal it is wired for.
#[derive(Clone, Default)]
pub struct Consumers {
    /// Traces consumer, when some traces pipeline uses the receiver.
    pub traces: Option<Consumer>,
    /// Metrics consumer.
    pub metrics: Option<Consumer>,
    /// Logs consumer.
    pub logs: Option<Consumer>,
}

impl Consumers {
    /// The consumer of `signal`, if wired.
    pub fn get(&self, signal: Signal) -> Option<&Consumer> {
        match signal {
            Signal::Traces => self.traces.as_ref(),
            Signal::Metrics => self.metrics.as_ref(),
            Signal::Logs => self.logs.as_ref(),
        }
    }

    /// Sets the consumer of its signal.
    pub fn set(&mut self, c: Consumer) {
        match c.signal() {
            Signal::Traces => self.traces = Some(c),
            Signal::Metrics => self.metrics = Some(c),
            Signal::Logs => self.logs = Some(c),
        }
    }
}
