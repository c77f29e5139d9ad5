//! `tail_sampling`: holds the spans of each trace and decides once per whole trace, by
//! policies, whether to keep it. Config keys, policy types and the way votes combine follow
//! the OpenTelemetry Collector's tail sampling processor: a matching `drop` policy or
//! inverted policy vetoes; otherwise any policy voting to sample keeps the trace (see
//! [`Decision`]).
//!
//! What meshgate does differently, and why:
//!
//! - **Early decisions.** The collector always waits `decision_wait` (30 s) after a trace's
//!   first span. Spans are exported when they end and a root span ends last, so once the root
//!   has arrived only export delays remain: the trace is decided
//!   `decision_wait_after_root` (5 s) after its root span, or at `decision_wait` if that is
//!   earlier. Traces whose root never comes (partial traces, Linkerd, which never starts a
//!   trace) still wait the full `decision_wait`. Less memory per trace, fresher data.
//! - **Late spans follow the decision.** Decided trace ids go into two bounded FIFO caches
//!   (`decision_cache`); a later span of a sampled trace is passed on at once, one of a
//!   trace not sampled is dropped, both counted in `late_spans_total{decision}`. With a
//!   cache disabled (size 0), late spans start a new pending trace, as in the collector.
//! - **A memory bound that never drops silently.** Pending traces are bounded by `num_traces`
//!   and by `max_memory` (estimated heap bytes, see [`PendingStats`]). Over either bound the
//!   oldest pending traces are *decided* right away with the spans they have, rather than
//!   dropped undecided as the collector does: an error trace evicted early is still kept.
//!   Evictions are counted in `evicted_traces_total{reason}`.
//! - **Shutdown** decides every pending trace with what it has (or drops them with
//!   `drop_pending_traces_on_shutdown`, counted as dropped with `reason="shutdown"`).
//!
//! Timing: pending traces are checked when the pipeline calls
//! [`Processor::on_deadline`] and at the end of each incoming request, at most every
//! [`DECISION_TICK`], so decisions are batched: the traces decided together leave as one
//! request. The logic takes the time as an argument ([`TailSampler::process_at`]...), so
//! tests and benchmarks drive it deterministically.
//!
//! Output: the spans of sampled traces are moved (never copied) from the requests they came
//! in; the output request has one `ResourceSpans` per incoming resource/scope pair, with the
//! original resource, scope and schema URLs. Accounting on `/metrics` adds up: spans in =
//! spans out + `meshgate_processor_dropped_items_total{reason="sampled_out"|"shutdown"}` +
//! `meshgate_processor_tail_sampling_spans_pending`.

mod config;
mod policy;
mod store;
#[cfg(test)]
mod tests;

pub use config::{
    AndConfig, BooleanAttributeConfig, CompositeConfig, DecisionCacheConfig, DropConfig,
    LatencyConfig, NumericAttributeConfig, PolicyConfig, PolicyType, ProbabilisticConfig,
    RateAllocationConfig, RateLimitingConfig, SpanCountConfig, StatusCodeConfig, StatusCodeName,
    StringAttributeConfig, TailSamplingConfig, TraceStateConfig,
};
pub use policy::Decision;

use meshgate_engine::telemetry::{Counter, Gauge};
use meshgate_engine::{
    BuildContext, Factory, Processor, ProcessorContext, ProcessorFactory, Registry,
};
use meshgate_pdata::otlp::{ExportTraceServiceRequest, ResourceSpans, Span};
use meshgate_pdata::{Payload, Signal};
use policy::Policies;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{DecisionCache, Origin, Output, PendingTrace, Store, TraceKey, Trigger, trace_key};

/// Shortest time between two decision passes: decisions are batched into one outgoing
/// request per pass, and a trace is decided at most this late.
pub const DECISION_TICK: Duration = Duration::from_millis(100);

/// Factory of the `tail_sampling` processor.
pub struct TailSamplingFactory;

impl Factory for TailSamplingFactory {
    fn type_name(&self) -> &'static str {
        "tail_sampling"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }
    fn description(&self) -> &'static str {
        "Holds each trace's spans and keeps or drops whole traces by policies (latency, \
         attributes, status, rate...), deciding early once the root span has arrived."
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(TailSamplingConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        let cfg = TailSamplingConfig::from_json(config)?;
        cfg.validate()?;
        Policies::compile(&cfg).map(|_| ())
    }
}

impl ProcessorFactory for TailSamplingFactory {
    fn build(
        &self,
        ctx: BuildContext<'_>,
        pipeline: &ProcessorContext,
    ) -> Result<Box<dyn Processor>, String> {
        let cfg =
            TailSamplingConfig::from_json(ctx.config).map_err(|e| format!("{}: {e}", ctx.id))?;
        let sampler = TailSampler::new(&cfg, ctx.telemetry, &ctx.id, &pipeline.pipeline)
            .map_err(|e| format!("{}: {e}", ctx.id))?;
        Ok(Box::new(sampler))
    }
}

/// What is pending right now. `bytes` is an estimate of the heap they hold: span structs,
/// their strings and attribute lists, the resources and scopes they reference (each counted
/// once, however many traces share it) and per-trace bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingStats {
    /// Pending traces.
    pub traces: usize,
    /// Spans of the pending traces.
    pub spans: usize,
    /// Estimated bytes of the pending traces (what `max_memory` bounds).
    pub bytes: usize,
}

impl PendingStats {
    /// Mean estimated bytes per pending trace, `None` when nothing is pending.
    pub fn bytes_per_trace(&self) -> Option<usize> {
        self.bytes.checked_div(self.traces)
    }
}

/// Self-telemetry handles, resolved once.
struct Metrics {
    traces_pending: Gauge,
    spans_pending: Gauge,
    memory_bytes: Gauge,
    /// By policy index, then [`Decision::index`].
    policy: Vec<[Counter; 5]>,
    /// By sampled (1) or not (0), then [`Trigger::index`].
    decided: [[Counter; 5]; 2],
    /// Late spans: not sampled (0), sampled (1).
    late: [Counter; 2],
    evicted_memory: Counter,
    evicted_num_traces: Counter,
    dropped_sampled_out: Counter,
    dropped_shutdown: Counter,
    decision_age_ms: Counter,
}

impl Metrics {
    fn new(r: &Registry, id: &str, pipeline: &str, policies: &Policies) -> Self {
        let base = [("processor", id), ("pipeline", pipeline)];
        fn labels<'a>(
            base: &[(&'a str, &'a str)],
            extra: &[(&'a str, &'a str)],
        ) -> Vec<(&'a str, &'a str)> {
            base.iter().chain(extra).copied().collect()
        }
        let gauge = |name, help| r.gauge(name, help, &base);
        let decision = |sampled: bool| if sampled { "sampled" } else { "not_sampled" };
        let dropped = |reason| {
            r.counter(
                "meshgate_processor_dropped_items_total",
                "Items a processor dropped on purpose, by reason.",
                &labels(
                    &base,
                    &[("signal", Signal::Traces.as_str()), ("reason", reason)],
                ),
            )
        };
        Self {
            traces_pending: gauge(
                "meshgate_processor_tail_sampling_traces_pending",
                "Traces held by a tail_sampling processor, waiting for their decision.",
            ),
            spans_pending: gauge(
                "meshgate_processor_tail_sampling_spans_pending",
                "Spans of the traces held by a tail_sampling processor.",
            ),
            memory_bytes: gauge(
                "meshgate_processor_tail_sampling_memory_bytes",
                "Estimated memory of the traces held by a tail_sampling processor (bounded by \
                 max_memory).",
            ),
            policy: policies
                .names()
                .map(|name| {
                    Decision::ALL.map(|d| {
                        r.counter(
                            "meshgate_processor_tail_sampling_policy_decisions_total",
                            "Votes of each tail sampling policy, one per trace it evaluated.",
                            &labels(&base, &[("policy", name), ("decision", d.as_str())]),
                        )
                    })
                })
                .collect(),
            decided: [false, true].map(|s| {
                Trigger::ALL.map(|t| {
                    r.counter(
                        "meshgate_processor_tail_sampling_traces_decided_total",
                        "Traces decided, by final decision and by what made them due \
                         (decision_wait, root, max_memory, num_traces, shutdown).",
                        &labels(&base, &[("decision", decision(s)), ("trigger", t.as_str())]),
                    )
                })
            }),
            late: [false, true].map(|s| {
                r.counter(
                    "meshgate_processor_tail_sampling_late_spans_total",
                    "Spans arriving after their trace was decided, routed by the decision cache.",
                    &labels(&base, &[("decision", decision(s))]),
                )
            }),
            evicted_memory: r.counter(
                "meshgate_processor_tail_sampling_evicted_traces_total",
                "Traces decided before they were due to stay within a bound, by bound.",
                &labels(&base, &[("reason", "max_memory")]),
            ),
            evicted_num_traces: r.counter(
                "meshgate_processor_tail_sampling_evicted_traces_total",
                "Traces decided before they were due to stay within a bound, by bound.",
                &labels(&base, &[("reason", "num_traces")]),
            ),
            dropped_sampled_out: dropped("sampled_out"),
            dropped_shutdown: dropped("shutdown"),
            decision_age_ms: r.counter(
                "meshgate_processor_tail_sampling_decision_age_milliseconds_total",
                "Sum over decided traces of the time from their first span to their decision; \
                 divided by traces_decided_total, the mean decision latency.",
                &base,
            ),
        }
    }
}

/// The tail sampling processor of one pipeline. Public so benchmarks can drive it with their
/// own clock; the pipeline uses it through [`Processor`].
pub struct TailSampler {
    policies: Policies,
    store: Store,
    sampled: DecisionCache,
    not_sampled: DecisionCache,
    num_traces: usize,
    max_bytes: usize,
    drop_on_shutdown: bool,
    /// No decision pass before this (see [`DECISION_TICK`]).
    not_before: Option<Instant>,
    metrics: Metrics,
}

impl TailSampler {
    /// Builds a sampler from a config (checked here), reporting on `telemetry` under the
    /// labels `processor=id` and `pipeline`.
    pub fn new(
        cfg: &TailSamplingConfig,
        telemetry: &Registry,
        id: &str,
        pipeline: &str,
    ) -> Result<Self, String> {
        cfg.validate()?;
        let policies = Policies::compile(cfg)?;
        let wait = cfg.decision_wait.0;
        let root_wait = Some(cfg.decision_wait_after_root.0).filter(|d| !d.is_zero());
        let capacity = ((cfg.expected_new_traces_per_sec as f64 * wait.as_secs_f64()) as usize)
            .min(cfg.num_traces);
        Ok(Self {
            metrics: Metrics::new(telemetry, id, pipeline, &policies),
            policies,
            store: Store::new(wait, root_wait, capacity),
            sampled: DecisionCache::new(cfg.decision_cache.sampled_cache_size),
            not_sampled: DecisionCache::new(cfg.decision_cache.non_sampled_cache_size),
            num_traces: cfg.num_traces,
            max_bytes: usize::try_from(cfg.max_memory.0).unwrap_or(usize::MAX),
            drop_on_shutdown: cfg.drop_pending_traces_on_shutdown,
            not_before: None,
        })
    }

    /// What is pending.
    pub fn pending(&self) -> PendingStats {
        PendingStats {
            traces: self.store.len(),
            spans: self.store.spans(),
            bytes: self.store.bytes(),
        }
    }

    /// Takes in one request at time `now`: spans join their pending trace, start a new one,
    /// or (late spans of decided traces) are passed on or dropped. Then decides the traces
    /// that are due. Sampled spans leave in at most one request pushed to `out`.
    pub fn process_at(&mut self, data: Payload, now: Instant, out: &mut Vec<Payload>) {
        let req = match data {
            Payload::Traces(t) => t,
            // Not wired for other signals; pass them on rather than lose them.
            other => {
                out.push(other);
                return;
            }
        };
        let mut output = Output::default();
        self.ingest(req, now, &mut output);
        if self.next_decision_at().is_some_and(|d| d <= now) {
            self.decide_due(now, &mut output);
        }
        self.store.skip_stale();
        self.finish(output, out);
    }

    /// When traces are next due for a decision (`None`: nothing pending).
    pub fn next_decision_at(&self) -> Option<Instant> {
        let due = self.store.next_due()?;
        Some(match self.not_before {
            Some(nb) if nb > due => nb,
            _ => due,
        })
    }

    /// Decides the traces due at `now`.
    pub fn on_deadline_at(&mut self, now: Instant, out: &mut Vec<Payload>) {
        let mut output = Output::default();
        self.decide_due(now, &mut output);
        self.finish(output, out);
    }

    /// Decides (or, with `drop_pending_traces_on_shutdown`, drops) every pending trace.
    pub fn flush_at(&mut self, now: Instant, out: &mut Vec<Payload>) {
        let mut output = Output::default();
        while let Some((key, trace)) = self.store.pop_oldest() {
            if self.drop_on_shutdown {
                let n = trace.data.span_count();
                self.metrics.dropped_shutdown.add(n as u64);
                self.store.discard(trace.data);
            } else {
                self.decide(key, trace, Trigger::Shutdown, now, &mut output);
            }
        }
        self.finish(output, out);
    }

    fn ingest(&mut self, req: ExportTraceServiceRequest, now: Instant, output: &mut Output) {
        for rs in req.resource_spans {
            let ResourceSpans {
                mut resource,
                scope_spans,
                mut schema_url,
            } = rs;
            let n = scope_spans.len();
            for (i, ss) in scope_spans.into_iter().enumerate() {
                if ss.spans.is_empty() {
                    continue;
                }
                // The last scope takes the resource; earlier ones (rare) get a copy.
                let (res, url) = if i + 1 == n {
                    (resource.take(), std::mem::take(&mut schema_url))
                } else {
                    (resource.clone(), schema_url.clone())
                };
                let origin = self
                    .store
                    .adopt(Origin::new(res, url, ss.scope, ss.schema_url));
                for span in ss.spans {
                    self.route(span, &origin, now, output);
                }
                self.store.release(origin);
            }
        }
    }

    fn route(&mut self, span: Span, origin: &Arc<Origin>, now: Instant, output: &mut Output) {
        let key = trace_key(&span.trace_id);
        let Some(span) = self.store.append(&key, span, origin, now) else {
            self.enforce_memory(now, output);
            return;
        };
        if self.sampled.contains(&key) {
            self.metrics.late[1].add(1);
            output.push_span(origin, span);
            return;
        }
        if self.not_sampled.contains(&key) {
            self.metrics.late[0].add(1);
            self.metrics.dropped_sampled_out.add(1);
            return;
        }
        if self.store.len() >= self.num_traces
            && let Some((k, t)) = self.store.pop_oldest()
        {
            self.metrics.evicted_num_traces.add(1);
            self.decide(k, t, Trigger::NumTraces, now, output);
        }
        self.store.start(key, span, origin, now);
        self.enforce_memory(now, output);
    }

    /// Decides the oldest traces until the pending ones fit in `max_memory`.
    fn enforce_memory(&mut self, now: Instant, output: &mut Output) {
        while self.store.bytes() > self.max_bytes {
            let Some((k, t)) = self.store.pop_oldest() else {
                break;
            };
            self.metrics.evicted_memory.add(1);
            self.decide(k, t, Trigger::MaxMemory, now, output);
        }
    }

    fn decide_due(&mut self, now: Instant, output: &mut Output) {
        while let Some((key, trace, trigger)) = self.store.pop_due(now) {
            self.decide(key, trace, trigger, now, output);
        }
        self.store.skip_stale();
        self.not_before = Some(now + DECISION_TICK);
    }

    fn decide(
        &mut self,
        key: TraceKey,
        trace: PendingTrace,
        trigger: Trigger,
        now: Instant,
        output: &mut Output,
    ) {
        let metrics = &self.metrics;
        let sampled = self.policies.evaluate(&trace.data, &key, now, |i, d| {
            metrics.policy[i][d.index()].add(1)
        });
        metrics.decided[usize::from(sampled)][trigger.index()].add(1);
        let age = now.saturating_duration_since(trace.first_seen).as_millis();
        metrics
            .decision_age_ms
            .add(u64::try_from(age).unwrap_or(u64::MAX));
        if sampled {
            self.sampled.insert(key);
            output.push_trace(trace.data, &mut self.store);
        } else {
            self.not_sampled.insert(key);
            metrics
                .dropped_sampled_out
                .add(trace.data.span_count() as u64);
            self.store.discard(trace.data);
        }
    }

    /// Emits the output request, if any, and refreshes the gauges.
    fn finish(&mut self, output: Output, out: &mut Vec<Payload>) {
        if let Some(p) = output.finish(&mut self.store) {
            out.push(p);
        }
        let p = self.pending();
        self.metrics.traces_pending.set(p.traces as i64);
        self.metrics.spans_pending.set(p.spans as i64);
        self.metrics.memory_bytes.set(p.bytes as i64);
    }
}

impl Processor for TailSampler {
    fn process(&mut self, data: Payload, out: &mut Vec<Payload>) {
        self.process_at(data, Instant::now(), out);
    }

    fn deadline(&self) -> Option<Instant> {
        self.next_decision_at()
    }

    fn on_deadline(&mut self, out: &mut Vec<Payload>) {
        self.on_deadline_at(Instant::now(), out);
    }

    fn flush(&mut self, out: &mut Vec<Payload>) {
        self.flush_at(Instant::now(), out);
    }
}
