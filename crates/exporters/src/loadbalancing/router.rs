//! The routing core: the current ring and its endpoints, each endpoint's bounded queue and
//! senders, and the moves that keep data alive when the ring changes.
//!
//! Life of an item: [`Router::route`] cuts a batch into one share per owner and puts each
//! share on its owner's queue (`routed`). An endpoint's senders take shares off the queue
//! (merging neighbours up to the request size), send them with the endpoint's OTLP client
//! and retry only that request (`sent`, or `dropped` with a reason). When the resolver
//! removes an endpoint, its queued shares, and any request of it that fails or is waiting
//! for a retry, are cut again over the new ring and queued at their new owners (`rerouted` at
//! the old endpoint, `routed` again at the new ones). A request already on the wire is left
//! to finish (bounded by `protocol.otlp.timeout`) so a healthy endpoint that is scaled away
//! does not receive its data twice.
//!
//! Per endpoint and signal: `routed = sent + dropped + rerouted + queued`, with queued the
//! `meshgate_exporter_loadbalancing_queue_items` gauge (waiting or being sent).

use super::config::{OtlpProtocol, RoutingKey};
use super::ring::Ring;
use super::split::split;
use crate::otlp::OtlpExporter;
use meshgate_engine::exporter_helper::{DropReason, OnFull, QueueConfig, RetryConfig};
use meshgate_engine::telemetry::{Counter, Gauge, Registry};
use meshgate_engine::{ExportError, Exporter};
use meshgate_pdata::{Payload, Signal};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The drop reasons an endpoint counts, in label order.
const REASONS: [DropReason; 5] = [
    DropReason::QueueFull,
    DropReason::PermanentError,
    DropReason::RetriesExhausted,
    DropReason::RejectedByBackend,
    DropReason::Shutdown,
];

/// The signals routed, in label order.
const SIGNALS: [Signal; 2] = [Signal::Traces, Signal::Logs];

fn sig_index(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        // Metrics never get here: `export` refuses them before routing.
        Signal::Logs | Signal::Metrics => 1,
    }
}

fn reason_index(r: DropReason) -> usize {
    REASONS.iter().position(|x| *x == r).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything the router needs from the config.
pub(super) struct Settings {
    /// The exporter's id, for labels and logs.
    pub id: String,
    /// What items are routed by.
    pub routing: RoutingKey,
    /// The per-endpoint client settings.
    pub otlp: OtlpProtocol,
    /// Each endpoint's queue.
    pub queue: QueueConfig,
    /// Each endpoint's retries.
    pub retry: RetryConfig,
    /// Queued shares are merged into one request up to this many encoded bytes.
    pub merge_bytes: usize,
}

#[derive(Clone)]
struct SignalCounters {
    routed: Counter,
    sent: Counter,
    rerouted: Counter,
    dropped: Counter,
    reasons: [Counter; 5],
}

/// One endpoint's self-telemetry.
struct EndpointCounters {
    signals: [SignalCounters; 2],
    queue_items: Gauge,
    send_failures: Counter,
}

impl EndpointCounters {
    fn new(t: &Registry, exporter: &str, endpoint: &str) -> Self {
        let signals = SIGNALS.map(|s| {
            let outcome = |o: &str| {
                t.counter(
                    "meshgate_exporter_loadbalancing_items_total",
                    "Items by endpoint and outcome; per endpoint and signal, routed = sent + \
                     dropped + rerouted + queue_items.",
                    &[
                        ("exporter", exporter),
                        ("endpoint", endpoint),
                        ("signal", s.as_str()),
                        ("outcome", o),
                    ],
                )
            };
            SignalCounters {
                routed: outcome("routed"),
                sent: outcome("sent"),
                rerouted: outcome("rerouted"),
                dropped: outcome("dropped"),
                reasons: REASONS.map(|r| {
                    t.counter(
                        "meshgate_exporter_loadbalancing_dropped_items_total",
                        "Items an endpoint gave up on, by reason (they add up to \
                         items_total{outcome=\"dropped\"}).",
                        &[
                            ("exporter", exporter),
                            ("endpoint", endpoint),
                            ("signal", s.as_str()),
                            ("reason", r.as_str()),
                        ],
                    )
                }),
            }
        });
        Self {
            signals,
            queue_items: t.gauge(
                "meshgate_exporter_loadbalancing_queue_items",
                "Items waiting in an endpoint's queue or being sent to it.",
                &[("exporter", exporter), ("endpoint", endpoint)],
            ),
            send_failures: t.counter(
                "meshgate_exporter_loadbalancing_send_failures_total",
                "Failed send attempts to an endpoint (then retried, re-routed or dropped).",
                &[("exporter", exporter), ("endpoint", endpoint)],
            ),
        }
    }

    fn of(&self, s: Signal) -> &SignalCounters {
        &self.signals[sig_index(s)]
    }

    fn routed(&self, s: Signal, n: u64) {
        self.of(s).routed.add(n);
        self.queue_items.add(n as i64);
    }

    fn sent(&self, s: Signal, n: u64, rejected: u64) {
        let rejected = rejected.min(n);
        self.of(s).sent.add(n - rejected);
        if rejected > 0 {
            self.count_drop(s, rejected, DropReason::RejectedByBackend);
        }
        self.queue_items.add(-(n as i64));
    }

    /// Counts `n` items that were queued or in flight as dropped.
    fn dropped(&self, s: Signal, n: u64, reason: DropReason) {
        self.count_drop(s, n, reason);
        self.queue_items.add(-(n as i64));
    }

    fn count_drop(&self, s: Signal, n: u64, reason: DropReason) {
        let c = self.of(s);
        c.dropped.add(n);
        c.reasons[reason_index(reason)].add(n);
    }

    /// Items dropped at the drain, all signals.
    fn dropped_on_shutdown(&self) -> u64 {
        let i = reason_index(DropReason::Shutdown);
        self.signals.iter().map(|c| c.reasons[i].get()).sum()
    }

    fn rerouted(&self, s: Signal, n: u64) {
        self.of(s).rerouted.add(n);
        self.queue_items.add(-(n as i64));
    }
}

/// A share waiting in an endpoint's queue.
struct Entry {
    data: Payload,
    items: u64,
    bytes: usize,
    /// Whether it holds one of the queue's capacity permits (re-routed shares do not: they
    /// only move between queues, so the total stays bounded by the sum of capacities).
    permit: bool,
}

/// What one sender sends in one request: one or more merged shares.
pub(super) struct Batch {
    data: Payload,
    items: u64,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// Set when the endpoint left the ring; nothing is queued here afterwards.
    removed: bool,
}

/// One endpoint of the ring: an OTLP client, a bounded queue and its senders.
pub(super) struct Endpoint {
    name: String,
    client: OtlpExporter,
    queue: Mutex<Queue>,
    /// Capacity of the queue, in shares; closed when the endpoint leaves the ring.
    permits: Arc<Semaphore>,
    /// Wakes senders when a share is queued, the endpoint is removed or the drain starts.
    work: Notify,
    removed: watch::Sender<bool>,
    counters: EndpointCounters,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Endpoint {
    /// Queues a share unless the endpoint left the ring (the share is then given back).
    fn push(&self, data: Payload, permit: bool) -> Result<(), Payload> {
        let items = data.item_count() as u64;
        let bytes = data.encoded_len();
        let signal = data.signal();
        {
            let mut q = lock(&self.queue);
            if q.removed {
                return Err(data);
            }
            q.entries.push_back(Entry {
                data,
                items,
                bytes,
                permit,
            });
            self.counters.routed(signal, items);
        }
        self.work.notify_one();
        Ok(())
    }

    /// The next request to send: the front share merged with the shares behind it of the
    /// same signal, up to `merge_bytes`. `None` when the sender should stop: the endpoint
    /// left the ring, or the drain started and the queue is empty.
    async fn next_batch(
        &self,
        merge_bytes: usize,
        draining: &watch::Sender<Option<Instant>>,
    ) -> Option<Batch> {
        loop {
            let notified = self.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut q = lock(&self.queue);
                if q.removed {
                    return None;
                }
                if let Some(first) = q.entries.pop_front() {
                    let mut permits = usize::from(first.permit);
                    let mut items = first.items;
                    let mut bytes = first.bytes;
                    let mut data = first.data;
                    while let Some(next) = q.entries.front() {
                        if next.data.signal() != data.signal() || bytes + next.bytes > merge_bytes {
                            break;
                        }
                        let next = q.entries.pop_front().expect("front exists");
                        permits += usize::from(next.permit);
                        items += next.items;
                        bytes += next.bytes;
                        // Same signal: merge cannot fail.
                        let _ = data.merge(next.data);
                    }
                    let more = !q.entries.is_empty();
                    drop(q);
                    if permits > 0 {
                        self.permits.add_permits(permits);
                    }
                    if more {
                        self.work.notify_one();
                    }
                    return Some(Batch { data, items });
                }
                if draining.borrow().is_some() {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Drops everything queued (counted with `reason`).
    fn abandon_queue(&self, reason: DropReason) -> u64 {
        let taken = std::mem::take(&mut lock(&self.queue).entries);
        let (mut n, mut permits) = (0, 0);
        for e in taken {
            self.counters.dropped(e.data.signal(), e.items, reason);
            n += e.items;
            permits += usize::from(e.permit);
        }
        self.permits.add_permits(permits);
        n
    }

    async fn join_workers(&self) {
        let handles = std::mem::take(&mut *lock(&self.workers));
        for h in handles {
            let _ = h.await;
        }
    }

    fn abort_workers(&self) {
        for h in lock(&self.workers).iter() {
            h.abort();
        }
    }
}

/// The ring and the endpoints it names (same order), replaced as a whole on every change.
#[derive(Default)]
pub(super) struct Snapshot {
    /// The ring; owner `i` is `endpoints[i]`.
    pub ring: Ring,
    /// The endpoints, sorted like the ring's.
    pub endpoints: Vec<Arc<Endpoint>>,
}

/// The routing core shared by the exporter, the resolver task and the senders.
pub(super) struct Router {
    s: Settings,
    telemetry: Registry,
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// Endpoints that left the ring and may still hold a request on the wire.
    retired: Mutex<Vec<Arc<Endpoint>>>,
    /// When the drain started: the deadline after which failing endpoints stop retrying.
    draining: watch::Sender<Option<Instant>>,
    ring_changes: Counter,
    endpoints_gauge: Gauge,
}

impl Router {
    /// A router with no endpoint yet: [`Router::apply`] brings the first ones.
    pub fn new(s: Settings, telemetry: &Registry) -> Arc<Router> {
        let ring_changes = telemetry.counter(
            "meshgate_exporter_loadbalancing_ring_changes_total",
            "Times the resolver changed the set of endpoints (the first set included).",
            &[("exporter", &s.id)],
        );
        let endpoints_gauge = telemetry.gauge(
            "meshgate_exporter_loadbalancing_endpoints",
            "Endpoints currently on the ring.",
            &[("exporter", &s.id)],
        );
        Arc::new(Router {
            s,
            telemetry: telemetry.clone(),
            snapshot: watch::channel(Arc::new(Snapshot::default())).0,
            retired: Mutex::new(Vec::new()),
            draining: watch::channel(None).0,
            ring_changes,
            endpoints_gauge,
        })
    }

    /// The current ring and endpoints.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Makes `list` (normalised `host:port`s) the ring. An empty list is ignored, so once the
    /// first endpoints are known there is always an owner to re-route to. Endpoints that
    /// left have their queued data re-routed at once.
    pub fn apply(self: &Arc<Self>, mut list: Vec<String>) {
        list.sort();
        list.dedup();
        let current = self.current();
        if list.is_empty() || current.ring.endpoints() == list.as_slice() {
            return;
        }
        let mut kept = Vec::with_capacity(list.len());
        let mut added = Vec::new();
        for name in &list {
            if let Some(e) = current.endpoints.iter().find(|e| &e.name == name) {
                kept.push(e.clone());
                continue;
            }
            match self.start_endpoint(name) {
                Ok(e) => {
                    added.push(name.clone());
                    kept.push(e);
                }
                Err(err) => {
                    warn!(exporter = %self.s.id, endpoint = %name, "endpoint left out of the ring: {err}")
                }
            }
        }
        let names: Vec<&str> = kept.iter().map(|e| e.name.as_str()).collect();
        // Nothing usable, or only the same endpoints again (one that cannot start is left
        // out on every resolution).
        if kept.is_empty() || current.ring.endpoints() == names.as_slice() {
            return;
        }
        let ring = Ring::new(&names);
        debug_assert_eq!(ring.endpoints(), names.as_slice(), "owners index `kept`");
        let removed: Vec<Arc<Endpoint>> = current
            .endpoints
            .iter()
            .filter(|e| !list.contains(&e.name))
            .cloned()
            .collect();
        let n = kept.len();
        // Publish first: whoever finds a removed endpoint below retries on this snapshot.
        self.snapshot.send_replace(Arc::new(Snapshot {
            ring,
            endpoints: kept,
        }));
        self.ring_changes.add(1);
        self.endpoints_gauge.set(n as i64);
        let gone: Vec<&str> = removed.iter().map(|e| e.name.as_str()).collect();
        info!(exporter = %self.s.id, endpoints = n, added = ?added, removed = ?gone, "load-balancing ring changed");
        for e in removed {
            self.retire(e);
        }
    }

    fn start_endpoint(self: &Arc<Self>, name: &str) -> Result<Arc<Endpoint>, String> {
        let client = OtlpExporter::new(&self.s.otlp.client_config(name))?;
        let e = Arc::new(Endpoint {
            name: name.to_string(),
            client,
            queue: Mutex::new(Queue::default()),
            permits: Arc::new(Semaphore::new(self.s.queue.queue_size.max(1))),
            work: Notify::new(),
            removed: watch::channel(false).0,
            counters: EndpointCounters::new(&self.telemetry, &self.s.id, name),
            workers: Mutex::new(Vec::new()),
        });
        let mut workers = lock(&e.workers);
        for _ in 0..self.s.queue.num_consumers.max(1) {
            let (router, ep) = (self.clone(), e.clone());
            workers.push(tokio::spawn(async move { router.run_sender(ep).await }));
        }
        drop(workers);
        Ok(e)
    }

    /// Takes an endpoint out of service: its queue is re-routed now, its senders re-route
    /// what they hold once their current attempt ends.
    fn retire(self: &Arc<Self>, e: Arc<Endpoint>) {
        let taken = {
            let mut q = lock(&e.queue);
            q.removed = true;
            std::mem::take(&mut q.entries)
        };
        e.permits.close();
        e.removed.send_replace(true);
        e.work.notify_waiters();
        let mut moved = 0;
        for entry in taken {
            moved += entry.items;
            self.reroute(&e, entry.data, entry.items);
        }
        if moved > 0 {
            info!(exporter = %self.s.id, endpoint = %e.name, items = moved, "re-routed the queue of an endpoint that left the ring");
        }
        let mut retired = lock(&self.retired);
        retired.retain(|r| lock(&r.workers).iter().any(|h| !h.is_finished()));
        retired.push(e);
    }

    /// Moves data held for `from` (which left the ring) to its owners on the current ring.
    fn reroute(&self, from: &Endpoint, data: Payload, items: u64) {
        from.counters.rerouted(data.signal(), items);
        self.place(data);
    }

    /// Queues data on its owners of the current ring regardless of their capacity (it only
    /// moves between queues). The ring is never empty here: data exists only after a first
    /// ring was published, and [`Router::apply`] never publishes an empty one.
    fn place(&self, mut data: Payload) {
        loop {
            let snap = self.current();
            debug_assert!(!snap.ring.is_empty(), "re-routing with no endpoint");
            let mut left = Payload::empty(data.signal());
            for (i, share) in split(&data, &snap.ring, self.s.routing) {
                if let Err(share) = snap.endpoints[i].push(share, false) {
                    let _ = left.merge(share);
                }
            }
            if left.is_empty() {
                return;
            }
            // An owner left the ring meanwhile: the new snapshot is already published.
            data = left;
        }
    }

    /// Queues every share of `data` on its owner. With `on_full: block` either every share is
    /// queued or, when some queue stays full until `deadline`, none is (so the batch can be
    /// retried or dropped as a whole without duplicates). With `on_full: drop` a share whose
    /// queue is full is dropped and counted at that endpoint; the others are queued.
    pub async fn route(&self, data: &Payload, deadline: Instant) -> Result<(), ExportError> {
        let mut rx = self.snapshot.subscribe();
        let first = tokio::time::timeout_at(deadline, async {
            rx.wait_for(|s| !s.ring.is_empty()).await.map(|s| s.clone())
        })
        .await;
        let mut snap = match first {
            Ok(Ok(s)) => s,
            _ => {
                return Err(ExportError::retryable(format!(
                    "{}: no endpoint is known yet (the resolver has not found any)",
                    self.s.id
                )));
            }
        };
        loop {
            let shares = split(data, &snap.ring, self.s.routing);
            if self.s.queue.on_full == OnFull::Drop {
                for (i, share) in shares {
                    let ep = &snap.endpoints[i];
                    match ep.permits.clone().try_acquire_owned() {
                        Ok(p) => self.push_with_permit(ep, share, p),
                        Err(TryAcquireError::NoPermits) => {
                            let n = share.item_count() as u64;
                            ep.counters.routed(share.signal(), n);
                            ep.counters
                                .dropped(share.signal(), n, DropReason::QueueFull);
                            debug!(exporter = %self.s.id, endpoint = %ep.name, items = n, "endpoint queue full: share dropped");
                        }
                        Err(TryAcquireError::Closed) => self.place(share),
                    }
                }
                return Ok(());
            }
            let mut permits: Vec<OwnedSemaphorePermit> = Vec::with_capacity(shares.len());
            let mut changed = false;
            for (i, _) in &shares {
                let ep = &snap.endpoints[*i];
                match tokio::time::timeout_at(deadline, ep.permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => permits.push(p),
                    Ok(Err(_closed)) => {
                        changed = true;
                        break;
                    }
                    Err(_) => {
                        return Err(ExportError::retryable(format!(
                            "{}: the queue of endpoint {} stayed full for {:?}; none of the \
                             batch was queued",
                            self.s.id, ep.name, self.s.queue.block_timeout.0
                        )));
                    }
                }
            }
            if changed {
                // An owner left the ring while we waited: cut again over the new ring.
                snap = self.current();
                continue;
            }
            for ((i, share), p) in shares.into_iter().zip(permits) {
                self.push_with_permit(&snap.endpoints[i], share, p);
            }
            return Ok(());
        }
    }

    fn push_with_permit(&self, ep: &Endpoint, share: Payload, permit: OwnedSemaphorePermit) {
        match ep.push(share, true) {
            Ok(()) => permit.forget(),
            Err(share) => {
                drop(permit);
                self.place(share);
            }
        }
    }

    /// One sender of an endpoint: sends queued shares until the endpoint leaves the ring or
    /// the drain empties its queue.
    async fn run_sender(self: Arc<Self>, ep: Arc<Endpoint>) {
        while let Some(batch) = ep.next_batch(self.s.merge_bytes, &self.draining).await {
            self.deliver(&ep, batch).await;
        }
    }

    /// Sends one request, retrying only it, until it is sent, dropped or re-routed.
    async fn deliver(&self, ep: &Endpoint, batch: Batch) {
        let Batch { data, items } = batch;
        let signal = data.signal();
        let retry = &self.s.retry;
        let started = Instant::now();
        let mut interval = retry.initial_interval.0;
        let mut removed = ep.removed.subscribe();
        let mut draining = self.draining.subscribe();
        loop {
            if *removed.borrow() {
                return self.reroute(ep, data, items);
            }
            // Not cancelled when the endpoint leaves: a request on the wire may have reached
            // it, and cancelling would send it twice. The client's timeout bounds it.
            let err = match ep.client.export(&data).await {
                Ok(done) => {
                    if done.rejected > 0 {
                        warn!(exporter = %self.s.id, endpoint = %ep.name, rejected = done.rejected, "endpoint rejected items: {}", done.message.unwrap_or_default());
                    }
                    ep.counters.sent(signal, items, done.rejected);
                    return;
                }
                Err(e) => e,
            };
            if !err.retryable {
                warn!(exporter = %self.s.id, endpoint = %ep.name, items, "dropped: the endpoint refused the request (not retryable): {}", err.message);
                ep.counters
                    .dropped(signal, items, DropReason::PermanentError);
                return;
            }
            ep.counters.send_failures.add(1);
            if *removed.borrow() {
                debug!(exporter = %self.s.id, endpoint = %ep.name, items, "send to a removed endpoint failed: re-routing");
                return self.reroute(ep, data, items);
            }
            let drain_deadline = *draining.borrow();
            if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                let rest = ep.abandon_queue(DropReason::Shutdown);
                ep.counters.dropped(signal, items, DropReason::Shutdown);
                warn!(exporter = %self.s.id, endpoint = %ep.name, items = items + rest, "dropped at the drain: the endpoint kept failing: {}", err.message);
                return;
            }
            if !retry.enabled {
                warn!(exporter = %self.s.id, endpoint = %ep.name, items, "dropped: send failed and retry_on_failure is disabled: {}", err.message);
                ep.counters
                    .dropped(signal, items, DropReason::RetriesExhausted);
                return;
            }
            let mut wait = err
                .retry_after
                .unwrap_or_else(|| jitter(interval, retry.randomization_factor));
            let max_elapsed = retry.max_elapsed_time.0;
            if !max_elapsed.is_zero() && started.elapsed() + wait > max_elapsed {
                warn!(exporter = %self.s.id, endpoint = %ep.name, items, "dropped: still failing after {:?}: {}", started.elapsed(), err.message);
                ep.counters
                    .dropped(signal, items, DropReason::RetriesExhausted);
                return;
            }
            if let Some(d) = drain_deadline {
                // Draining: the last attempt starts by the deadline at the latest.
                wait = wait.min(d.saturating_duration_since(Instant::now()));
            }
            debug!(exporter = %self.s.id, endpoint = %ep.name, "send failed, retrying in {wait:?}: {}", err.message);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = removed.wait_for(|r| *r) => return self.reroute(ep, data, items),
                // The drain started: try again now rather than after a long backoff.
                _ = draining.wait_for(|d| d.is_some()), if drain_deadline.is_none() => {}
            }
            interval = interval
                .mul_f64(retry.multiplier.max(1.0))
                .min(retry.max_interval.0);
        }
    }

    /// Drains: endpoints that already left finish and re-route what they hold, then every
    /// endpoint sends its queue. A failing endpoint keeps retrying for one
    /// `protocol.otlp.timeout` after the drain starts (its last attempt may take one more),
    /// then drops what it holds, counted with `reason="shutdown"`. The resolver must be
    /// stopped first.
    pub async fn shutdown(&self) {
        let retired = std::mem::take(&mut *lock(&self.retired));
        for e in retired {
            e.join_workers().await;
        }
        self.draining
            .send_replace(Some(Instant::now() + self.s.otlp.timeout.0));
        let snap = self.current();
        for e in &snap.endpoints {
            e.work.notify_waiters();
        }
        for e in &snap.endpoints {
            e.join_workers().await;
        }
        let lost: u64 = snap
            .endpoints
            .iter()
            .map(|e| e.counters.dropped_on_shutdown())
            .sum();
        if lost > 0 {
            warn!(exporter = %self.s.id, items = lost, "could not deliver to failing endpoints during the drain (meshgate_exporter_loadbalancing_dropped_items_total{{reason=\"shutdown\"}})");
        }
    }

    /// Items dropped at shutdown over every endpoint, current and retired: what the engine
    /// counted as sent but no endpoint received.
    pub fn dropped_on_shutdown(&self) -> u64 {
        let retired: u64 = lock(&self.retired)
            .iter()
            .map(|e| e.counters.dropped_on_shutdown())
            .sum();
        let current: u64 = self
            .current()
            .endpoints
            .iter()
            .map(|e| e.counters.dropped_on_shutdown())
            .sum();
        retired + current
    }

    /// Stops every sender at once (the exporter was dropped without a drain).
    pub fn abort(&self) {
        for e in lock(&self.retired).iter() {
            e.abort_workers();
        }
        for e in &self.current().endpoints {
            e.abort_workers();
        }
    }
}

/// `d` multiplied by a random factor in `[1 - f, 1 + f]`, so endpoints that failed together
/// do not retry in lockstep.
fn jitter(d: Duration, f: f64) -> Duration {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
    let f = f.clamp(0.0, 1.0);
    d.mul_f64((1.0 + (unit * 2.0 - 1.0) * f).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        let d = Duration::from_millis(1000);
        for _ in 0..200 {
            let j = jitter(d, 0.5);
            assert!(j >= Duration::from_millis(500) && j <= Duration::from_millis(1500));
        }
        assert_eq!(jitter(d, 0.0), d);
    }
}
