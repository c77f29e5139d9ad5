//! `batch`: groups incoming requests into larger batches, sent when they hold enough items
//! or are old enough, and splits oversized requests. Same options and semantics as the
//! OpenTelemetry Collector's batch processor.
//!
//! Items are spans, metric data points or log records. Requests are merged with
//! [`Payload::merge`] (resources are appended, not deduplicated) and cut with
//! [`Payload::split_off_front`], which keeps each item's resource and scope.

use meshgate_config::DurationValue;
use meshgate_engine::telemetry::Counter;
use meshgate_engine::{BuildContext, Factory, Processor, ProcessorContext, ProcessorFactory};
use meshgate_pdata::{Payload, Signal};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Config of the `batch` processor.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Number of items (spans, metric data points, log records) at which a batch is sent,
    /// regardless of `timeout`. A trigger, not a cap: a batch can be larger (see
    /// `send_batch_max_size`). `0` sends every request as soon as it arrives. Default: `8192`.
    pub send_batch_size: usize,
    /// Largest number of items in one batch: bigger batches and bigger incoming requests are
    /// split into pieces of at most this many items. `0` means no cap. When non-zero it must
    /// be greater than or equal to `send_batch_size`. Default: `0`.
    pub send_batch_max_size: usize,
    /// Longest a non-empty batch waits after its first item arrived before it is sent,
    /// whatever its size. `0s` sends every request immediately (still split by
    /// `send_batch_max_size`). Default: `200ms`.
    pub timeout: DurationValue,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            send_batch_size: 8192,
            send_batch_max_size: 0,
            timeout: DurationValue(Duration::from_millis(200)),
        }
    }
}

impl BatchConfig {
    /// Checks the relations between the options.
    pub fn validate(&self) -> Result<(), String> {
        if self.send_batch_max_size != 0 && self.send_batch_max_size < self.send_batch_size {
            return Err(format!(
                "`send_batch_max_size` ({}) must be greater than or equal to `send_batch_size` \
                 ({}), or 0 for no cap",
                self.send_batch_max_size, self.send_batch_size
            ));
        }
        Ok(())
    }
}

/// Factory of the `batch` processor.
pub struct BatchFactory;

impl Factory for BatchFactory {
    fn type_name(&self) -> &'static str {
        "batch"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "Groups data into batches by size and timeout; splits oversized requests."
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(BatchConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        serde_json::from_value::<BatchConfig>(config.clone())
            .map_err(|e| e.to_string())?
            .validate()
    }
}

impl ProcessorFactory for BatchFactory {
    fn build(
        &self,
        ctx: BuildContext<'_>,
        pipeline: &ProcessorContext,
    ) -> Result<Box<dyn Processor>, String> {
        let cfg: BatchConfig = ctx.parse()?;
        cfg.validate().map_err(|e| format!("{}: {e}", ctx.id))?;
        let counter = |trigger: &str| {
            ctx.telemetry.counter(
                "meshgate_processor_batch_sent_total",
                "Batches sent by a batch processor, by what triggered the send.",
                &[
                    ("processor", &ctx.id),
                    ("pipeline", &pipeline.pipeline),
                    ("trigger", trigger),
                ],
            )
        };
        Ok(Box::new(Batch {
            send_batch_size: cfg.send_batch_size,
            max_size: cfg.send_batch_max_size,
            timeout: cfg.timeout.0,
            signal: pipeline.signal,
            held: Payload::empty(pipeline.signal),
            held_items: 0,
            first_at: None,
            sent_size: counter("size"),
            sent_timeout: counter("timeout"),
            sent_shutdown: counter("shutdown"),
        }))
    }
}

/// The running batch processor of one pipeline.
struct Batch {
    send_batch_size: usize,
    /// 0 = no cap.
    max_size: usize,
    timeout: Duration,
    signal: Signal,
    /// The batch being built.
    held: Payload,
    /// `held.item_count()`, kept to avoid walking the tree on every request.
    held_items: usize,
    /// When the first item of the held batch arrived.
    first_at: Option<Instant>,
    sent_size: Counter,
    sent_timeout: Counter,
    sent_shutdown: Counter,
}

impl Batch {
    /// Emits the whole held batch (split by the cap) and counts it under `counter`.
    fn emit_all(&mut self, out: &mut Vec<Payload>, counter: &Counter) {
        self.first_at = None;
        if self.held_items == 0 {
            return;
        }
        self.held_items = 0;
        let batch = std::mem::replace(&mut self.held, Payload::empty(self.signal));
        if self.max_size > 0 {
            let parts = batch.split(self.max_size);
            counter.add(parts.len() as u64);
            out.extend(parts);
        } else {
            counter.add(1);
            out.push(batch);
        }
    }
}

impl Processor for Batch {
    fn process(&mut self, data: Payload, out: &mut Vec<Payload>) {
        let n = data.item_count();
        if n == 0 {
            return;
        }
        if let Err(other) = self.held.merge(data) {
            // A payload of another signal cannot happen in a wired pipeline; pass it on
            // rather than lose it.
            out.push(other);
            return;
        }
        self.held_items += n;
        let now = Instant::now();
        self.first_at.get_or_insert(now);
        if self.timeout.is_zero() {
            let counter = self.sent_size.clone();
            self.emit_all(out, &counter);
            return;
        }
        let mut sent = false;
        while self.held_items > 0 && self.held_items >= self.send_batch_size {
            sent = true;
            if self.max_size > 0 && self.held_items > self.max_size {
                out.push(self.held.split_off_front(self.max_size));
                self.held_items -= self.max_size;
                self.sent_size.add(1);
            } else {
                let counter = self.sent_size.clone();
                self.emit_all(out, &counter);
            }
        }
        if sent && self.held_items > 0 {
            // The remainder starts a new batch, with a fresh timeout (as in the collector).
            self.first_at = Some(now);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.timeout)
    }

    fn on_deadline(&mut self, out: &mut Vec<Payload>) {
        let counter = self.sent_timeout.clone();
        self.emit_all(out, &counter);
    }

    fn flush(&mut self, out: &mut Vec<Payload>) {
        let counter = self.sent_shutdown.clone();
        self.emit_all(out, &counter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{all_spans, build, build_err, n_spans, run};
    use meshgate_engine::Registry;
    use serde_json::json;

    fn sent(r: &Registry, trigger: &str) -> u64 {
        r.counter(
            "meshgate_processor_batch_sent_total",
            "",
            &[
                ("processor", "batch"),
                ("pipeline", "traces"),
                ("trigger", trigger),
            ],
        )
        .get()
    }

    fn counts(out: &[Payload]) -> Vec<usize> {
        out.iter().map(Payload::item_count).collect()
    }

    #[test]
    fn defaults() {
        let c: BatchConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(c.send_batch_size, 8192);
        assert_eq!(c.send_batch_max_size, 0);
        assert_eq!(c.timeout.0, Duration::from_millis(200));
    }

    #[test]
    fn size_trigger_sends_when_enough_items() {
        let r = Registry::new();
        let mut p = build(
            &BatchFactory,
            "batch",
            json!({"send_batch_size": 10}),
            Signal::Traces,
            &r,
        )
        .unwrap();
        assert!(run(p.as_mut(), n_spans(4)).is_empty());
        assert!(p.deadline().is_some());
        assert!(run(p.as_mut(), n_spans(4)).is_empty());
        let out = run(p.as_mut(), n_spans(4));
        // Size is a trigger, not a cap: all 12 go out together, in order.
        assert_eq!(counts(&out), vec![12]);
        let names: Vec<&str> = all_spans(&out[0]).iter().map(|s| s.name.as_str()).collect();
        assert_eq!(&names[..5], ["s0", "s1", "s2", "s3", "s0"]);
        assert_eq!(p.deadline(), None);
        assert_eq!(sent(&r, "size"), 1);
    }

    #[test]
    fn timeout_trigger_sends_what_is_held() {
        let r = Registry::new();
        let mut p = build(
            &BatchFactory,
            "batch",
            json!({"timeout": "10ms"}),
            Signal::Traces,
            &r,
        )
        .unwrap();
        assert_eq!(p.deadline(), None);
        let before = Instant::now();
        assert!(run(p.as_mut(), n_spans(3)).is_empty());
        let d = p.deadline().expect("a held batch has a deadline");
        assert!(d >= before + Duration::from_millis(10));
        assert!(d <= Instant::now() + Duration::from_millis(10));
        // Later items do not push the deadline back.
        assert!(run(p.as_mut(), n_spans(2)).is_empty());
        assert_eq!(p.deadline(), Some(d));
        std::thread::sleep(Duration::from_millis(15));
        assert!(p.deadline().unwrap() <= Instant::now());
        let mut out = Vec::new();
        p.on_deadline(&mut out);
        assert_eq!(counts(&out), vec![5]);
        assert_eq!(p.deadline(), None);
        assert_eq!(sent(&r, "timeout"), 1);
        assert_eq!(sent(&r, "size"), 0);
    }

    #[test]
    fn max_size_splits_oversized_request() {
        let r = Registry::new();
        let cfg = json!({"send_batch_size": 4, "send_batch_max_size": 6});
        let mut p = build(&BatchFactory, "batch", cfg, Signal::Traces, &r).unwrap();
        let out = run(p.as_mut(), n_spans(15));
        // 6 + 6 sent; the last 3 are below send_batch_size and wait for more or the timeout.
        assert_eq!(counts(&out), vec![6, 6]);
        assert_eq!(sent(&r, "size"), 2);
        assert!(p.deadline().is_some());
        let mut out = Vec::new();
        p.flush(&mut out);
        assert_eq!(counts(&out), vec![3]);
        assert_eq!(sent(&r, "shutdown"), 1);
    }

    #[test]
    fn zero_timeout_sends_immediately_split_by_cap() {
        let r = Registry::new();
        let cfg = json!({"timeout": "0s", "send_batch_size": 0, "send_batch_max_size": 4});
        let mut p = build(&BatchFactory, "batch", cfg, Signal::Traces, &r).unwrap();
        assert_eq!(counts(&run(p.as_mut(), n_spans(9))), vec![4, 4, 1]);
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn flush_emits_held_and_empty_flush_emits_nothing() {
        let r = Registry::new();
        let mut p = build(&BatchFactory, "batch", json!({}), Signal::Traces, &r).unwrap();
        let mut out = Vec::new();
        p.flush(&mut out);
        assert!(out.is_empty());
        assert!(run(p.as_mut(), n_spans(2)).is_empty());
        assert!(run(p.as_mut(), n_spans(0)).is_empty());
        p.flush(&mut out);
        assert_eq!(counts(&out), vec![2]);
        assert_eq!(sent(&r, "shutdown"), 1);
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn config_errors() {
        let e = build_err(
            &BatchFactory,
            json!({"send_batch_size": 100, "send_batch_max_size": 10}),
            Signal::Logs,
        );
        assert!(
            e.contains("`send_batch_max_size` (10) must be greater than or equal to `send_batch_size` (100)"),
            "{e}"
        );
        let e = build_err(&BatchFactory, json!({"metadata_keys": ["x"]}), Signal::Logs);
        assert!(e.contains("unknown field `metadata_keys`"), "{e}");
        let e = build_err(&BatchFactory, json!({"timeout": 5}), Signal::Logs);
        assert!(e.contains("duration"), "{e}");
    }
}
