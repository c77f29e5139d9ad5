//! Where spans wait for their trace's decision, and where decided trace ids are remembered.
//!
//! - [`Store`]: the pending traces, each holding its spans moved out of the incoming requests
//!   (never copied) with a shared handle on the resource and scope they came with
//!   ([`Origin`]); two first-in-first-out queues say which trace is due next (by
//!   `decision_wait` from its first span, and by the grace after its root span) and which is
//!   the oldest (evicted first under pressure). Entries of traces decided earlier are skipped
//!   lazily and compacted.
//! - [`DecisionCache`]: a bounded first-in-first-out set of decided trace ids.
//! - [`Output`]: rebuilds an OTLP request from decided traces and late spans, one
//!   `ResourceSpans` per origin, moving the resource out when no pending trace still needs it.
//!
//! Memory accounting: [`Store::bytes`] estimates the heap held by pending traces (span
//! structs and their strings, attribute lists, bookkeeping) plus every live origin, counted
//! once however many traces share it. An origin's bytes are released when its last handle
//! goes, which is why every handle is dropped through [`Store::release`] or
//! [`Output::finish`].

use meshgate_pdata::Payload;
use meshgate_pdata::otlp::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, any_value::Value, span,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::mem::size_of;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A trace id as a fixed-size key. Receivers reject ids that are not 16 bytes; anything else
/// that reaches the processor is zero-padded or cut to 16 bytes.
pub type TraceKey = [u8; 16];

/// The key of a trace id.
pub fn trace_key(id: &[u8]) -> TraceKey {
    let mut k = [0u8; 16];
    let n = id.len().min(16);
    k[..n].copy_from_slice(&id[..n]);
    k
}

/// Whether a span is a root: it has no parent (an empty or all-zero parent span id).
pub fn is_root(s: &Span) -> bool {
    s.parent_span_id.iter().all(|b| *b == 0)
}

/// The resource and scope of one incoming `ScopeSpans`, shared by all its spans whatever
/// trace they belong to, so spans can be held per trace without copying either.
#[derive(Debug)]
pub struct Origin {
    resource: Option<Resource>,
    resource_schema_url: String,
    scope: Option<InstrumentationScope>,
    scope_schema_url: String,
    /// Estimated heap bytes of this origin, including its `Arc` allocation.
    bytes: usize,
}

impl Origin {
    /// An origin of spans received with this resource and scope.
    pub fn new(
        resource: Option<Resource>,
        resource_schema_url: String,
        scope: Option<InstrumentationScope>,
        scope_schema_url: String,
    ) -> Self {
        let bytes = 2 * size_of::<usize>()
            + size_of::<Origin>()
            // Entity references are rare and not re-exported here: a flat 64 bytes each.
            + resource
                .as_ref()
                .map_or(0, |r| kv_heap(&r.attributes) + r.entity_refs.capacity() * 64)
            + resource_schema_url.capacity()
            + scope.as_ref().map_or(0, |s| {
                s.name.capacity() + s.version.capacity() + kv_heap(&s.attributes)
            })
            + scope_schema_url.capacity();
        Self {
            resource,
            resource_schema_url,
            scope,
            scope_schema_url,
            bytes,
        }
    }

    /// The resource's attributes (empty without a resource).
    pub fn resource_attributes(&self) -> &[KeyValue] {
        self.resource.as_ref().map_or(&[], |r| &r.attributes)
    }
}

/// The spans received so far for one trace, each with the origin it came with.
#[derive(Debug, Default)]
pub struct TraceData {
    /// Origins of the spans; consecutive spans of one origin share an entry.
    origins: Vec<Arc<Origin>>,
    /// For each span, its index in `origins`.
    origin_of: Vec<u32>,
    spans: Vec<Span>,
}

impl TraceData {
    /// The spans, in arrival order.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Number of spans.
    pub fn span_count(&self) -> usize {
        self.spans.len()
    }

    /// The resource attributes of every origin (an origin may appear more than once).
    pub fn resources(&self) -> impl Iterator<Item = &[KeyValue]> {
        self.origins.iter().map(|o| o.resource_attributes())
    }

    /// Appends a span; returns the estimated bytes it added (the origin's own bytes are
    /// accounted for separately, once per origin).
    pub fn push(&mut self, origin: &Arc<Origin>, span: Span) -> usize {
        let mut added = span_heap_bytes(&span);
        let same = self.origins.last().is_some_and(|o| Arc::ptr_eq(o, origin));
        if !same {
            let cap = self.origins.capacity();
            self.origins.push(Arc::clone(origin));
            added += (self.origins.capacity() - cap) * size_of::<Arc<Origin>>();
        }
        let idx = (self.origins.len() - 1) as u32;
        let (span_cap, idx_cap) = (self.spans.capacity(), self.origin_of.capacity());
        self.spans.push(span);
        self.origin_of.push(idx);
        added += (self.spans.capacity() - span_cap) * size_of::<Span>()
            + (self.origin_of.capacity() - idx_cap) * size_of::<u32>();
        added
    }
}

/// A trace waiting for its decision.
#[derive(Debug)]
pub struct PendingTrace {
    /// Its spans.
    pub data: TraceData,
    /// When its first span arrived.
    pub first_seen: Instant,
    /// Distinguishes this trace from an earlier pending trace of the same id in the queues.
    seq: u64,
    /// Whether a root span arrived.
    root_seen: bool,
    /// Estimated bytes of this trace, shared origins excluded.
    bytes: usize,
}

/// Why a trace was decided when it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `decision_wait` passed since its first span.
    DecisionWait,
    /// `decision_wait_after_root` passed since its root span.
    Root,
    /// Evicted to stay under `max_memory`.
    MaxMemory,
    /// Evicted to stay under `num_traces`.
    NumTraces,
    /// The processor is shutting down.
    Shutdown,
}

impl Trigger {
    /// Every trigger, in label order.
    pub const ALL: [Trigger; 5] = [
        Trigger::DecisionWait,
        Trigger::Root,
        Trigger::MaxMemory,
        Trigger::NumTraces,
        Trigger::Shutdown,
    ];

    /// Position in [`Trigger::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Label value on `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::DecisionWait => "decision_wait",
            Trigger::Root => "root",
            Trigger::MaxMemory => "max_memory",
            Trigger::NumTraces => "num_traces",
            Trigger::Shutdown => "shutdown",
        }
    }
}

/// A queue entry: trace `key` (incarnation `seq`) is due, or arrived, at `at`.
#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    key: TraceKey,
    seq: u64,
}

/// Fixed cost of a pending trace: its table entry (with the table's slack) and its entry in
/// the arrival queue.
const TRACE_OVERHEAD: usize = size_of::<(TraceKey, PendingTrace)>() * 8 / 7 + 1 + size_of::<Due>();

/// The pending traces.
#[derive(Debug)]
pub struct Store {
    traces: HashMap<TraceKey, PendingTrace>,
    /// One entry per trace in arrival order: due at `at + wait`; the front is the oldest.
    arrivals: VecDeque<Due>,
    /// Traces whose root arrived, due at `at`, in order.
    roots: VecDeque<Due>,
    wait: Duration,
    root_wait: Option<Duration>,
    bytes: usize,
    spans: usize,
    next_seq: u64,
}

impl Store {
    /// A store deciding traces `wait` after their first span, or `root_wait` after their root
    /// span when that is earlier. `capacity` sizes the trace table.
    pub fn new(wait: Duration, root_wait: Option<Duration>, capacity: usize) -> Self {
        Self {
            traces: HashMap::with_capacity(capacity),
            arrivals: VecDeque::with_capacity(capacity),
            roots: VecDeque::new(),
            wait,
            root_wait,
            bytes: 0,
            spans: 0,
            next_seq: 0,
        }
    }

    /// Pending traces.
    pub fn len(&self) -> usize {
        self.traces.len()
    }

    /// Spans of the pending traces.
    pub fn spans(&self) -> usize {
        self.spans
    }

    /// Estimated bytes of the pending traces and of the origins still alive.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Wraps a new origin for sharing and counts its bytes.
    pub fn adopt(&mut self, origin: Origin) -> Arc<Origin> {
        self.bytes += origin.bytes;
        Arc::new(origin)
    }

    /// Drops a handle on an origin, un-counting the origin when it was the last one.
    pub fn release(&mut self, origin: Arc<Origin>) {
        if let Ok(o) = Arc::try_unwrap(origin) {
            self.bytes -= o.bytes;
        }
    }

    /// Drops a decided trace's spans, releasing its origins.
    pub fn discard(&mut self, data: TraceData) {
        for o in data.origins {
            self.release(o);
        }
    }

    /// Adds a span to the pending trace `key`; gives the span back when no such trace is
    /// pending.
    pub fn append(
        &mut self,
        key: &TraceKey,
        span: Span,
        origin: &Arc<Origin>,
        now: Instant,
    ) -> Option<Span> {
        let Some(t) = self.traces.get_mut(key) else {
            return Some(span);
        };
        let root = !t.root_seen && is_root(&span);
        let added = t.data.push(origin, span);
        t.bytes += added;
        self.bytes += added;
        self.spans += 1;
        if root {
            t.root_seen = true;
            let (first_seen, seq) = (t.first_seen, t.seq);
            self.root_arrived(*key, seq, first_seen, now);
        }
        None
    }

    /// Starts a pending trace with its first span.
    pub fn start(&mut self, key: TraceKey, span: Span, origin: &Arc<Origin>, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let root = is_root(&span);
        let mut data = TraceData::default();
        let bytes = TRACE_OVERHEAD + data.push(origin, span);
        self.traces.insert(
            key,
            PendingTrace {
                data,
                first_seen: now,
                seq,
                root_seen: root,
                bytes,
            },
        );
        self.arrivals.push_back(Due { at: now, key, seq });
        self.bytes += bytes;
        self.spans += 1;
        if root {
            self.root_arrived(key, seq, now, now);
        }
    }

    fn root_arrived(&mut self, key: TraceKey, seq: u64, first_seen: Instant, now: Instant) {
        if let Some(grace) = self.root_wait {
            let at = now + grace;
            if at < first_seen + self.wait {
                self.roots.push_back(Due { at, key, seq });
            }
        }
    }

    /// When the next trace is due (possibly a trace decided already, which costs one early
    /// wake-up), `None` when nothing is queued.
    pub fn next_due(&self) -> Option<Instant> {
        let by_wait = self.arrivals.front().map(|d| d.at + self.wait);
        let by_root = self.roots.front().map(|d| d.at);
        match (by_wait, by_root) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the next trace due at `now`, with what made it due.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TraceKey, PendingTrace, Trigger)> {
        loop {
            self.skip_stale();
            let by_root = self.roots.front().filter(|d| d.at <= now).copied();
            let (due, trigger) = match by_root {
                Some(d) => {
                    self.roots.pop_front();
                    (d, Trigger::Root)
                }
                None => match self.arrivals.front() {
                    Some(d) if d.at + self.wait <= now => {
                        let d = *d;
                        self.arrivals.pop_front();
                        (d, Trigger::DecisionWait)
                    }
                    _ => return None,
                },
            };
            if let Some(t) = self.take(&due) {
                return Some((due.key, t, trigger));
            }
        }
    }

    /// Takes the trace that arrived first.
    pub fn pop_oldest(&mut self) -> Option<(TraceKey, PendingTrace)> {
        while let Some(d) = self.arrivals.pop_front() {
            if let Some(t) = self.take(&d) {
                return Some((d.key, t));
            }
        }
        None
    }

    /// Removes the trace of a queue entry if that entry is current; un-counts its own bytes
    /// (its origins are un-counted as they are released).
    fn take(&mut self, d: &Due) -> Option<PendingTrace> {
        if !Self::is_live(&self.traces, d) {
            return None;
        }
        let t = self.traces.remove(&d.key)?;
        self.bytes -= t.bytes;
        self.spans -= t.data.span_count();
        self.compact();
        Some(t)
    }

    fn is_live(traces: &HashMap<TraceKey, PendingTrace>, d: &Due) -> bool {
        traces.get(&d.key).is_some_and(|t| t.seq == d.seq)
    }

    /// Pops queue entries of traces decided already from the queue fronts, so
    /// [`Store::next_due`] is exact again.
    pub fn skip_stale(&mut self) {
        while self
            .arrivals
            .front()
            .is_some_and(|d| !Self::is_live(&self.traces, d))
        {
            self.arrivals.pop_front();
        }
        while self
            .roots
            .front()
            .is_some_and(|d| !Self::is_live(&self.traces, d))
        {
            self.roots.pop_front();
        }
    }

    /// Drops stale entries from the middle of the queues once they outnumber live ones
    /// (traces decided early leave their arrival entry behind), keeping the queues in
    /// proportion to the pending traces. Amortised O(1) per decision.
    fn compact(&mut self) {
        let limit = 2 * self.traces.len() + 1024;
        let traces = &self.traces;
        if self.arrivals.len() > limit {
            self.arrivals.retain(|d| Self::is_live(traces, d));
        }
        if self.roots.len() > limit {
            self.roots.retain(|d| Self::is_live(traces, d));
        }
    }
}

/// A bounded set of decided trace ids; when full, the oldest id is forgotten.
#[derive(Debug)]
pub struct DecisionCache {
    set: HashSet<TraceKey>,
    order: VecDeque<TraceKey>,
    capacity: usize,
}

impl DecisionCache {
    /// A cache of up to `capacity` ids (`0`: remembers nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Remembers `key`.
    pub fn insert(&mut self, key: TraceKey) {
        if self.capacity == 0 || !self.set.insert(key) {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(key);
    }

    /// Whether `key` is remembered.
    pub fn contains(&self, key: &TraceKey) -> bool {
        self.set.contains(key)
    }

    /// Ids remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.set.len()
    }
}

/// Builds one outgoing request from sampled traces and late spans.
#[derive(Debug, Default)]
pub struct Output {
    /// One slot per origin, in first-use order.
    slots: Vec<(Arc<Origin>, Vec<Span>)>,
    /// Slot of an origin, by the origin's address (stable while the slot holds it).
    index: HashMap<usize, usize>,
    /// Scratch: slot of each origin of the trace being added.
    scratch: Vec<usize>,
    spans: usize,
}

impl Output {
    fn slot(&mut self, origin: &Arc<Origin>) -> usize {
        let next = self.slots.len();
        let slot = *self
            .index
            .entry(Arc::as_ptr(origin) as usize)
            .or_insert(next);
        if slot == next {
            self.slots.push((Arc::clone(origin), Vec::new()));
        }
        slot
    }

    /// Adds a span that is passed on right away (a late span of a sampled trace).
    pub fn push_span(&mut self, origin: &Arc<Origin>, span: Span) {
        let slot = self.slot(origin);
        self.slots[slot].1.push(span);
        self.spans += 1;
    }

    /// Adds every span of a sampled trace; the trace's origin handles are released through
    /// `store` (the output holds its own).
    pub fn push_trace(&mut self, data: TraceData, store: &mut Store) {
        let TraceData {
            origins,
            origin_of,
            spans,
        } = data;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend(origins.iter().map(|o| self.slot(o)));
        self.spans += spans.len();
        for (span, o) in spans.into_iter().zip(origin_of) {
            self.slots[scratch[o as usize]].1.push(span);
        }
        self.scratch = scratch;
        for o in origins {
            store.release(o);
        }
    }

    /// The request, `None` when empty. An origin no pending trace needs any more is moved
    /// into it (and un-counted from `store`); a shared one is copied.
    pub fn finish(self, store: &mut Store) -> Option<Payload> {
        if self.spans == 0 {
            for (o, _) in self.slots {
                store.release(o);
            }
            return None;
        }
        let mut resource_spans = Vec::with_capacity(self.slots.len());
        for (origin, spans) in self.slots {
            let (resource, resource_url, scope, scope_url) = match Arc::try_unwrap(origin) {
                Ok(o) => {
                    store.bytes -= o.bytes;
                    (
                        o.resource,
                        o.resource_schema_url,
                        o.scope,
                        o.scope_schema_url,
                    )
                }
                Err(shared) => (
                    shared.resource.clone(),
                    shared.resource_schema_url.clone(),
                    shared.scope.clone(),
                    shared.scope_schema_url.clone(),
                ),
            };
            resource_spans.push(ResourceSpans {
                resource,
                scope_spans: vec![ScopeSpans {
                    scope,
                    spans,
                    schema_url: scope_url,
                }],
                schema_url: resource_url,
            });
        }
        Some(Payload::Traces(ExportTraceServiceRequest {
            resource_spans,
        }))
    }
}

/// Estimated heap bytes of a key/value list (the list itself and what its entries own).
fn kv_heap(kvs: &Vec<KeyValue>) -> usize {
    kvs.capacity() * size_of::<KeyValue>()
        + kvs
            .iter()
            .map(|kv| kv.key.capacity() + kv.value.as_ref().map_or(0, any_heap))
            .sum::<usize>()
}

fn any_heap(v: &AnyValue) -> usize {
    match &v.value {
        Some(Value::StringValue(s)) => s.capacity(),
        Some(Value::BytesValue(b)) => b.capacity(),
        Some(Value::ArrayValue(a)) => {
            a.values.capacity() * size_of::<AnyValue>()
                + a.values.iter().map(any_heap).sum::<usize>()
        }
        Some(Value::KvlistValue(l)) => kv_heap(&l.values),
        _ => 0,
    }
}

/// Estimated heap bytes a span owns (its strings, ids, attributes, events and links), not
/// counting the span struct itself (which lives in its trace's span list).
pub fn span_heap_bytes(s: &Span) -> usize {
    s.trace_id.capacity()
        + s.span_id.capacity()
        + s.parent_span_id.capacity()
        + s.trace_state.capacity()
        + s.name.capacity()
        + kv_heap(&s.attributes)
        + s.events.capacity() * size_of::<span::Event>()
        + s.events
            .iter()
            .map(|e| e.name.capacity() + kv_heap(&e.attributes))
            .sum::<usize>()
        + s.links.capacity() * size_of::<span::Link>()
        + s.links
            .iter()
            .map(|l| {
                l.trace_id.capacity()
                    + l.span_id.capacity()
                    + l.trace_state.capacity()
                    + kv_heap(&l.attributes)
            })
            .sum::<usize>()
        + s.status.as_ref().map_or(0, |st| st.message.capacity())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_pdata::attributes::kv_str;

    fn origin(service: &str) -> Origin {
        Origin::new(
            Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            String::new(),
            None,
            String::new(),
        )
    }

    fn span(trace: u8, parent: bool) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![1; 8],
            parent_span_id: if parent { vec![2; 8] } else { Vec::new() },
            name: "op".into(),
            attributes: vec![kv_str("http.status_code", "200")],
            ..Default::default()
        }
    }

    #[test]
    fn trace_key_pads_and_cuts() {
        assert_eq!(trace_key(&[1; 16]), [1; 16]);
        let k = trace_key(&[7; 8]);
        assert_eq!(&k[..8], &[7; 8]);
        assert_eq!(&k[8..], &[0; 8]);
        assert_eq!(trace_key(&[3; 20]), [3; 16]);
        assert!(is_root(&span(1, false)));
        assert!(!is_root(&span(1, true)));
        assert!(is_root(&Span {
            parent_span_id: vec![0; 8],
            ..Default::default()
        }));
    }

    #[test]
    fn bytes_return_to_zero_when_everything_is_decided() {
        let t0 = Instant::now();
        let mut store = Store::new(Duration::from_secs(10), None, 0);
        let a = store.adopt(origin("a"));
        let b = store.adopt(origin("b"));
        let origins_bytes = store.bytes();
        assert!(origins_bytes > 0);
        store.start([1; 16], span(1, true), &a, t0);
        assert!(store.append(&[1; 16], span(1, true), &a, t0).is_none());
        store.start([2; 16], span(2, true), &a, t0);
        assert!(store.append(&[1; 16], span(1, false), &b, t0).is_none());
        assert!(store.append(&[3; 16], span(3, true), &b, t0).is_some());
        // The ingestion handles go; the traces still hold the origins.
        store.release(a);
        store.release(b);
        assert_eq!(store.len(), 2);
        assert_eq!(store.spans(), 3 + 1);
        assert!(store.bytes() > origins_bytes + 2 * TRACE_OVERHEAD);

        let (k, t) = store.pop_oldest().unwrap();
        assert_eq!(k, [1; 16]);
        assert_eq!(t.data.span_count(), 3);
        assert_eq!(t.data.resources().count(), 2);
        let mut out = Output::default();
        out.push_trace(t.data, &mut store);
        let (k, t) = store.pop_oldest().unwrap();
        assert_eq!(k, [2; 16]);
        store.discard(t.data);
        assert_eq!(store.len(), 0);
        // Origin `a` is still held by the output.
        assert!(store.bytes() > 0);
        let p = out.finish(&mut store).unwrap();
        assert_eq!(p.item_count(), 3);
        assert_eq!(store.bytes(), 0);
        assert_eq!(store.spans(), 0);
    }

    #[test]
    fn due_by_wait_and_by_root_in_order() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut store = Store::new(s(30), Some(s(2)), 0);
        let o = store.adopt(origin("a"));
        store.start([1; 16], span(1, true), &o, t0);
        store.start([2; 16], span(2, true), &o, t0 + s(1));
        // Trace 2's root arrives at 3s: due at 5s, long before trace 1's 30s.
        assert!(
            store
                .append(&[2; 16], span(2, false), &o, t0 + s(3))
                .is_none()
        );
        // A second root changes nothing.
        assert!(
            store
                .append(&[2; 16], span(2, false), &o, t0 + s(4))
                .is_none()
        );
        assert_eq!(store.next_due(), Some(t0 + s(5)));
        assert!(store.pop_due(t0 + s(4)).is_none());
        let (k, t, trigger) = store.pop_due(t0 + s(5)).unwrap();
        assert_eq!((k, trigger), ([2; 16], Trigger::Root));
        store.discard(t.data);
        // Trace 2's arrival entry is stale and skipped.
        store.skip_stale();
        assert_eq!(store.next_due(), Some(t0 + s(30)));
        let (k, t, trigger) = store.pop_due(t0 + s(31)).unwrap();
        assert_eq!((k, trigger), ([1; 16], Trigger::DecisionWait));
        store.discard(t.data);
        assert!(store.pop_due(t0 + s(100)).is_none());
        assert_eq!(store.next_due(), None);
        store.release(o);
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn root_grace_beyond_decision_wait_is_not_queued() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut store = Store::new(s(5), Some(s(10)), 0);
        let o = store.adopt(origin("a"));
        store.start([1; 16], span(1, false), &o, t0);
        assert_eq!(store.next_due(), Some(t0 + s(5)));
        let (_, t, trigger) = store.pop_due(t0 + s(5)).unwrap();
        assert_eq!(trigger, Trigger::DecisionWait);
        store.discard(t.data);
        store.release(o);
    }

    #[test]
    fn stale_queue_entries_are_compacted() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut store = Store::new(s(30), Some(Duration::ZERO), 0);
        let o = store.adopt(origin("a"));
        // One long-lived trace at the front, then many traces decided by their root.
        store.start([0; 16], span(0, true), &o, t0);
        for i in 0..5000u32 {
            let mut key = [9u8; 16];
            key[..4].copy_from_slice(&i.to_be_bytes());
            let mut sp = span(1, false);
            sp.trace_id = key.to_vec();
            store.start(key, sp, &o, t0);
            let (_, t, trigger) = store.pop_due(t0).unwrap();
            assert_eq!(trigger, Trigger::Root);
            store.discard(t.data);
        }
        assert_eq!(store.len(), 1);
        assert!(store.arrivals.len() <= 2 * store.len() + 1024 + 1);
        store.release(o);
    }

    #[test]
    fn decision_cache_forgets_oldest() {
        let mut c = DecisionCache::new(2);
        c.insert([1; 16]);
        c.insert([2; 16]);
        c.insert([2; 16]);
        assert_eq!(c.len(), 2);
        c.insert([3; 16]);
        assert!(!c.contains(&[1; 16]));
        assert!(c.contains(&[2; 16]) && c.contains(&[3; 16]));
        let mut off = DecisionCache::new(0);
        off.insert([1; 16]);
        assert!(!off.contains(&[1; 16]));
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn span_bytes_grow_with_content() {
        let small = span_heap_bytes(&span(1, true));
        let mut big = span(1, true);
        big.attributes.push(kv_str("url.full", &"x".repeat(1000)));
        assert!(span_heap_bytes(&big) >= small + 1000);
    }
}
