//! What every exporter gets for free: a bounded queue of its own, a pool of senders, retries
//! with exponential backoff and jitter that honour the backend's `Retry-After`, and exact
//! accounting of every item.
//!
//! For each exporter and signal, `received = sent + dropped{reason} + queued`, where queued is
//! the `meshgate_exporter_queue_items` gauge (items waiting or being sent).

use crate::component::{ExportError, Exporter, ShutdownSignal};
use crate::telemetry::{Counter, Gauge, Registry};
use meshgate_config::DurationValue;
use meshgate_pdata::{Payload, Signal};
use rand::Rng;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tracing::{debug, warn};

/// What the queue does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Drop the batch for this exporter (counted as `queue_full`) so the other exporters of
    /// the pipeline keep flowing. A stalled backend never slows the others.
    #[default]
    Drop,
    /// Wait up to `block_timeout` for room, holding up the pipeline, so that backpressure
    /// reaches the clients as retryable refusals; drop (counted) after the timeout.
    Block,
}

/// `sending_queue`: the exporter's own bounded queue.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Concurrent senders taking batches from the queue.
    #[schemars(range(min = 1, max = 1024))]
    pub num_consumers: usize,
    /// Capacity of the queue, in batches.
    #[schemars(range(min = 1))]
    pub queue_size: usize,
    /// What happens when the queue is full: `drop` or `block`.
    pub on_full: OnFull,
    /// With `on_full: block`, how long to wait for room before dropping.
    pub block_timeout: DurationValue,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            num_consumers: 10,
            queue_size: 1000,
            on_full: OnFull::Drop,
            block_timeout: DurationValue(Duration::from_secs(5)),
        }
    }
}

/// `retry_on_failure`: exponential backoff with jitter for retryable errors.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retry at all; when false a failed batch is dropped at once.
    pub enabled: bool,
    /// First wait after a failure.
    pub initial_interval: DurationValue,
    /// Each wait is multiplied by a random factor in `[1 - f, 1 + f]`.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub randomization_factor: f64,
    /// Growth of the wait after each failure.
    #[schemars(range(min = 1.0))]
    pub multiplier: f64,
    /// Upper bound of one wait.
    pub max_interval: DurationValue,
    /// Give up (drop, counted as `retries_exhausted`) after this long; `0s` retries forever.
    pub max_elapsed_time: DurationValue,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: DurationValue(Duration::from_secs(5)),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: DurationValue(Duration::from_secs(30)),
            max_elapsed_time: DurationValue(Duration::from_secs(300)),
        }
    }
}

impl RetryConfig {
    /// No retries (local exporters).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// Why an exporter dropped items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The exporter's queue was full.
    QueueFull,
    /// The backend answered with a non-retryable error.
    PermanentError,
    /// Retries went on for `max_elapsed_time`.
    RetriesExhausted,
    /// The backend accepted the request but rejected these items (partial success).
    RejectedByBackend,
    /// The drain timeout passed during shutdown.
    Shutdown,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::PermanentError,
        DropReason::RetriesExhausted,
        DropReason::RejectedByBackend,
        DropReason::Shutdown,
    ];
    /// Label value on `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::PermanentError => "permanent_error",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::RejectedByBackend => "rejected_by_backend",
            DropReason::Shutdown => "shutdown",
        }
    }
}

#[derive(Clone)]
struct SignalCounters {
    received: Counter,
    sent: Counter,
    retries: Counter,
    dropped: [Counter; 5],
}

impl SignalCounters {
    fn new(t: &Registry, exporter: &str, signal: Signal) -> Self {
        let l = [("exporter", exporter), ("signal", signal.as_str())];
        Self {
            received: t.counter(
                "meshgate_exporter_received_items_total",
                "Items handed to the exporter by its pipelines; received = sent + dropped + queued.",
                &l,
            ),
            sent: t.counter(
                "meshgate_exporter_sent_items_total",
                "Items the backend accepted.",
                &l,
            ),
            retries: t.counter(
                "meshgate_exporter_send_failures_total",
                "Failed send attempts of batches that were then retried.",
                &l,
            ),
            dropped: DropReason::ALL.map(|r| {
                t.counter(
                    "meshgate_exporter_dropped_items_total",
                    "Items the exporter gave up on, by reason.",
                    &[l[0], l[1], ("reason", r.as_str())],
                )
            }),
        }
    }
    fn drop(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].add(n);
    }
}

/// The pipelines' handle on one exporter: offer batches to its queue.
pub struct ExporterQueue {
    id: String,
    tx: mpsc::Sender<Arc<Payload>>,
    queue: QueueConfig,
    max_request_bytes: Option<usize>,
    counters: Arc<[SignalCounters; 3]>,
    queue_items: Gauge,
}

fn sig_index(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

impl ExporterQueue {
    /// The exporter's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How full-queue situations are handled.
    pub fn on_full(&self) -> OnFull {
        self.queue.on_full
    }

    /// The largest request the exporter's backend takes, in encoded bytes; the pipeline
    /// splits bigger batches before offering them.
    pub fn max_request_bytes(&self) -> Option<usize> {
        self.max_request_bytes
    }

    /// The `block_timeout` setting.
    pub fn block_timeout(&self) -> Duration {
        self.queue.block_timeout.0
    }

    fn counters(&self, s: Signal) -> &SignalCounters {
        &self.counters[sig_index(s)]
    }

    /// Offers a batch without waiting. `Err` gives it back when the queue is full and the
    /// policy is `block` (the caller then waits with [`ExporterQueue::offer_until`]); with
    /// `drop` a full queue drops the batch (counted).
    pub fn try_offer(&self, data: Arc<Payload>) -> Result<(), Arc<Payload>> {
        let n = data.item_count() as u64;
        let c = self.counters(data.signal());
        match self.tx.try_send(data) {
            Ok(()) => {
                c.received.add(n);
                self.queue_items.add(n as i64);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(d)) if self.queue.on_full == OnFull::Block => {
                Err(d)
            }
            Err(mpsc::error::TrySendError::Full(_)) | Err(mpsc::error::TrySendError::Closed(_)) => {
                c.received.add(n);
                c.drop(DropReason::QueueFull, n);
                debug!(exporter = %self.id, items = n, "queue full: batch dropped");
                Ok(())
            }
        }
    }

    /// Waits until `deadline` for room; drops (counted) after it.
    pub async fn offer_until(&self, data: Arc<Payload>, deadline: tokio::time::Instant) {
        let n = data.item_count() as u64;
        let c = self.counters(data.signal()).clone();
        c.received.add(n);
        match tokio::time::timeout_at(deadline, self.tx.send(data)).await {
            Ok(Ok(())) => self.queue_items.add(n as i64),
            _ => {
                c.drop(DropReason::QueueFull, n);
                warn!(exporter = %self.id, items = n, "queue stayed full for {:?}: batch dropped", self.queue.block_timeout.0);
            }
        }
    }
}

/// Starts the senders of one exporter. Returns the pipelines' handle and the task that ends
/// once every sender has finished (after the handle and its clones are dropped and the queue
/// drained, or `hard_stop` fired).
pub fn start(
    id: &str,
    exporter: Arc<dyn Exporter>,
    queue: QueueConfig,
    retry: RetryConfig,
    telemetry: &Registry,
    hard_stop: ShutdownSignal,
) -> (
    Arc<ExporterQueue>,
    ExporterStats,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel::<Arc<Payload>>(queue.queue_size.max(1));
    let max_request_bytes = exporter.max_request_bytes();
    let counters = Arc::new(Signal::ALL.map(|s| SignalCounters::new(telemetry, id, s)));
    let queue_items = telemetry.gauge(
        "meshgate_exporter_queue_items",
        "Items waiting in the exporter's queue or being sent.",
        &[("exporter", id)],
    );
    telemetry
        .gauge(
            "meshgate_exporter_queue_capacity_batches",
            "Capacity of the exporter's queue, in batches.",
            &[("exporter", id)],
        )
        .set(queue.queue_size as i64);
    let handle = Arc::new(ExporterQueue {
        id: id.to_string(),
        tx,
        queue: queue.clone(),
        max_request_bytes,
        counters: counters.clone(),
        queue_items: queue_items.clone(),
    });
    let undelivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stats = ExporterStats {
        id: id.to_string(),
        counters: counters.clone(),
        queue_items: queue_items.clone(),
        undelivered: undelivered.clone(),
    };
    let rx = Arc::new(Mutex::new(rx));
    let id = id.to_string();
    let task = tokio::spawn(async move {
        let mut workers = Vec::new();
        for _ in 0..queue.num_consumers.max(1) {
            let w = Worker {
                id: id.clone(),
                exporter: exporter.clone(),
                retry: retry.clone(),
                counters: counters.clone(),
                queue_items: queue_items.clone(),
                hard_stop: hard_stop.clone(),
            };
            let rx = rx.clone();
            workers.push(tokio::spawn(async move { w.run(rx).await }));
        }
        for w in workers {
            let _ = w.await;
        }
        exporter.shutdown().await;
        undelivered.store(exporter.undelivered(), std::sync::atomic::Ordering::SeqCst);
    });
    (handle, stats, task)
}

/// Read access to one exporter's accounting, for the shutdown report.
pub struct ExporterStats {
    id: String,
    counters: Arc<[SignalCounters; 3]>,
    queue_items: Gauge,
    undelivered: Arc<std::sync::atomic::AtomicU64>,
}

impl ExporterStats {
    /// The exporter's id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Items dropped because the drain timeout passed.
    pub fn dropped_on_shutdown(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.dropped[DropReason::Shutdown as usize].get())
            .sum()
    }
    /// Items the exporter had counted as sent but lost inside its own queues at shutdown
    /// ([`crate::Exporter::undelivered`]).
    pub fn undelivered(&self) -> u64 {
        self.undelivered.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Items sent so far, all signals.
    pub fn sent(&self) -> u64 {
        self.counters.iter().map(|c| c.sent.get()).sum()
    }
    /// Items still queued or in flight.
    pub fn queued(&self) -> i64 {
        self.queue_items.get()
    }
}

struct Worker {
    id: String,
    exporter: Arc<dyn Exporter>,
    retry: RetryConfig,
    counters: Arc<[SignalCounters; 3]>,
    queue_items: Gauge,
    hard_stop: ShutdownSignal,
}

enum Outcome {
    Sent { rejected: u64 },
    Dropped(DropReason),
}

impl Worker {
    async fn run(self, rx: Arc<Mutex<mpsc::Receiver<Arc<Payload>>>>) {
        loop {
            let next = tokio::select! {
                biased;
                v = async { rx.lock().await.recv().await } => v,
                _ = self.hard_stop.clone().wait() => {
                    // Drain timeout: count what is still queued and stop.
                    let mut rx = rx.lock().await;
                    while let Ok(data) = rx.try_recv() {
                        let n = data.item_count() as u64;
                        self.counters[sig_index(data.signal())].drop(DropReason::Shutdown, n);
                        self.queue_items.add(-(n as i64));
                    }
                    break;
                }
            };
            let Some(data) = next else { break };
            let n = data.item_count() as u64;
            let c = &self.counters[sig_index(data.signal())];
            let outcome = if self.hard_stop.is_triggered() {
                Outcome::Dropped(DropReason::Shutdown)
            } else {
                self.send(&data, c).await
            };
            match outcome {
                Outcome::Sent { rejected } => {
                    c.sent.add(n - rejected.min(n));
                    if rejected > 0 {
                        c.drop(DropReason::RejectedByBackend, rejected.min(n));
                    }
                }
                Outcome::Dropped(reason) => c.drop(reason, n),
            }
            self.queue_items.add(-(n as i64));
        }
    }

    async fn send(&self, data: &Payload, c: &SignalCounters) -> Outcome {
        let started = tokio::time::Instant::now();
        let mut interval = self.retry.initial_interval.0;
        let n = data.item_count();
        loop {
            let attempt = tokio::select! {
                r = self.exporter.export(data) => r,
                _ = self.hard_stop.clone().wait() => {
                    warn!(exporter = %self.id, items = n, "drain timeout reached during send: batch dropped");
                    return Outcome::Dropped(DropReason::Shutdown);
                }
            };
            let err: ExportError = match attempt {
                Ok(done) => {
                    if done.rejected > 0 {
                        warn!(exporter = %self.id, rejected = done.rejected, "backend rejected items: {}", done.message.unwrap_or_default());
                    }
                    return Outcome::Sent {
                        rejected: done.rejected,
                    };
                }
                Err(e) => e,
            };
            if !err.retryable {
                warn!(exporter = %self.id, items = n, "dropped: backend refused the batch (not retryable): {}", err.message);
                return Outcome::Dropped(DropReason::PermanentError);
            }
            if !self.retry.enabled {
                warn!(exporter = %self.id, items = n, "dropped: send failed and retry_on_failure is disabled: {}", err.message);
                return Outcome::Dropped(DropReason::RetriesExhausted);
            }
            let jitter = {
                let f = self.retry.randomization_factor.clamp(0.0, 1.0);
                let r: f64 = rand::rng().random_range(-f..=f);
                interval.mul_f64(1.0 + r)
            };
            let wait = err.retry_after.unwrap_or(jitter);
            let max_elapsed = self.retry.max_elapsed_time.0;
            if !max_elapsed.is_zero() && started.elapsed() + wait > max_elapsed {
                warn!(exporter = %self.id, items = n, "dropped: still failing after {:?}: {}", started.elapsed(), err.message);
                return Outcome::Dropped(DropReason::RetriesExhausted);
            }
            c.retries.add(1);
            debug!(exporter = %self.id, "send failed, retrying in {wait:?}: {}", err.message);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.hard_stop.clone().wait() => return Outcome::Dropped(DropReason::Shutdown),
            }
            interval = interval
                .mul_f64(self.retry.multiplier.max(1.0))
                .min(self.retry.max_interval.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::{Exported, shutdown_channel};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails its first `fail_first` attempts with `err`, then succeeds, rejecting `reject`.
    struct Flaky {
        calls: AtomicUsize,
        fail_first: usize,
        err: ExportError,
        reject: u64,
    }

    #[async_trait::async_trait]
    impl Exporter for Flaky {
        async fn export(&self, _data: &Payload) -> Result<Exported, ExportError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
                return Err(self.err.clone());
            }
            Ok(Exported {
                rejected: self.reject,
                message: None,
            })
        }
    }

    fn spans(n: usize) -> Payload {
        use meshgate_pdata::otlp::*;
        Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn fast_retry() -> RetryConfig {
        RetryConfig {
            initial_interval: DurationValue(Duration::from_millis(1)),
            max_interval: DurationValue(Duration::from_millis(2)),
            max_elapsed_time: DurationValue(Duration::from_secs(5)),
            ..RetryConfig::default()
        }
    }

    async fn run(exporter: Flaky, retry: RetryConfig, batches: &[usize]) -> Registry {
        let reg = Registry::new();
        let (_stop, signal) = shutdown_channel();
        let (q, _stats, task) = start(
            "x",
            Arc::new(exporter),
            QueueConfig::default(),
            retry,
            &reg,
            signal,
        );
        for n in batches {
            q.try_offer(Arc::new(spans(*n))).unwrap();
        }
        drop(q);
        task.await.unwrap();
        reg
    }

    fn value(reg: &Registry, name: &str, reason: Option<&str>) -> u64 {
        let text = reg.render();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains("signal=\"traces\""))
            .filter(|l| reason.is_none_or(|r| l.contains(&format!("reason=\"{r}\""))))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    #[tokio::test]
    async fn retryable_errors_are_retried_then_sent() {
        let reg = run(
            Flaky {
                calls: AtomicUsize::new(0),
                fail_first: 3,
                err: ExportError::retryable("503"),
                reject: 2,
            },
            fast_retry(),
            &[10],
        )
        .await;
        assert_eq!(
            value(&reg, "meshgate_exporter_received_items_total", None),
            10
        );
        assert_eq!(value(&reg, "meshgate_exporter_sent_items_total", None), 8);
        assert_eq!(
            value(
                &reg,
                "meshgate_exporter_dropped_items_total",
                Some("rejected_by_backend")
            ),
            2
        );
        assert_eq!(
            value(&reg, "meshgate_exporter_send_failures_total", None),
            3
        );
    }

    #[tokio::test]
    async fn permanent_errors_and_exhausted_retries_are_dropped_with_a_reason() {
        let reg = run(
            Flaky {
                calls: AtomicUsize::new(0),
                fail_first: usize::MAX,
                err: ExportError::permanent("400 bad request"),
                reject: 0,
            },
            fast_retry(),
            &[4, 6],
        )
        .await;
        assert_eq!(
            value(
                &reg,
                "meshgate_exporter_dropped_items_total",
                Some("permanent_error")
            ),
            10
        );
        let reg = run(
            Flaky {
                calls: AtomicUsize::new(0),
                fail_first: usize::MAX,
                err: ExportError::retryable("down"),
                reject: 0,
            },
            RetryConfig {
                max_elapsed_time: DurationValue(Duration::from_millis(20)),
                ..fast_retry()
            },
            &[5],
        )
        .await;
        assert_eq!(
            value(
                &reg,
                "meshgate_exporter_dropped_items_total",
                Some("retries_exhausted")
            ),
            5
        );
        assert_eq!(value(&reg, "meshgate_exporter_sent_items_total", None), 0);
    }
}
