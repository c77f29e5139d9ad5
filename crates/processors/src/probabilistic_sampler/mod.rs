//! `probabilistic_sampler`: keeps a fixed share of traces (and log records), deciding from
//! the trace id alone, so every instance and every request agrees on a trace without any
//! per-trace state. Options and semantics follow the OpenTelemetry Collector's
//! probabilistic sampler processor and the OpenTelemetry spec "TraceState: Probability
//! Sampling".
//!
//! # Modes
//!
//! - `proportional` (default): randomness `R` is the low 56 bits of the trace id, or the
//!   explicit `rv` of the span's `ot` trace state entry. The span is kept when `R >= T`,
//!   where `T` is the 56-bit rejection threshold of `sampling_percentage` multiplied by the
//!   probability an earlier stage already applied (its `th`): this stage cuts the volume it
//!   receives by the configured ratio, whatever happened upstream.
//! - `equalizing`: same randomness; `T` is the threshold of `sampling_percentage` itself, so
//!   items sampled less upstream are sampled down to that rate and items already sampled
//!   more pass. The decision depends on `R` alone, so a trace whose spans arrive with
//!   different thresholds is still kept or dropped as a whole.
//! - `hash_seed`: `R` comes from a 32-bit FNV-1a hash of `hash_seed` and the trace id,
//!   bucketed in 14 bits exactly as the collector does, so a meshgate and a collector
//!   sharing the seed keep the same traces. Chosen by default when `hash_seed` is set.
//!   Spans that already carry a `th` or `rv` are an error in this mode (the two sources of
//!   randomness cannot be combined), handled per `fail_closed`.
//!
//! Kept spans get the effective threshold written as `th` into the `ot` member of their
//! W3C `tracestate` (plus the hash as `rv` in `hash_seed` mode), never lower than a
//! threshold they arrived with, so backends can compute adjusted counts
//! (`2^56 / (2^56 - T)`). Other `ot` sub-keys and other vendors' members are kept.
//!
//! # Errors
//!
//! An item whose sampling information is unusable — a malformed `tracestate` (or malformed
//! `sampling.threshold`/`sampling.randomness` log attributes), no randomness (trace id
//! missing or all zeros, no `rv`, no `from_attribute` value), a threshold its own
//! randomness contradicts, or a `hash_seed`-mode conflict — is dropped when `fail_closed`
//! is true (the default) and passed on unchanged otherwise (a contradicted `th` is
//! erased, as the spec asks). Either way it is counted.
//!
//! # Logs
//!
//! Log records are sampled by their trace id, so records of a kept trace are kept with it;
//! a record without a trace id (or every record, with `attribute_source: record`) is
//! sampled by the hash of its `from_attribute` value. The threshold is recorded in the
//! `sampling.threshold` attribute (and hashed randomness in `sampling.randomness`).
//!
//! # Priority
//!
//! A span attribute `sampling.priority` of `0` drops the span and a positive value keeps
//! it, whatever the probability (OpenTracing convention, as in the collector). In logs
//! pipelines the attribute named by `sampling_priority` gives a record its own sampling
//! percentage (`0` drops, `100` keeps). These act per item, so they can split a trace.
//!
//! # Self-metrics
//!
//! `meshgate_processor_sampler_kept_items_total`, `meshgate_processor_dropped_items_total`
//! with `reason="sampled_out"` (the decision, or a priority of 0) or
//! `reason="sampling_error"` (dropped by `fail_closed`), and
//! `meshgate_processor_sampler_errors_total{error}` for every item with unusable sampling
//! information, dropped or not; all labelled `processor`, `pipeline` and `signal`.
//! Items in = kept + sampled_out + sampling_error.

pub use meshgate_pdata::sampling::{threshold, tracestate};

use meshgate_engine::telemetry::Counter;
use meshgate_engine::{
    BuildContext, Factory, Processor, ProcessorContext, ProcessorFactory, Registry,
};
use meshgate_pdata::attributes::{get, remove, upsert, value_to_string};
use meshgate_pdata::otlp::any_value::Value;
use meshgate_pdata::otlp::{KeyValue, LogRecord, Span};
use meshgate_pdata::{Payload, Signal};
use schemars::JsonSchema;
use serde::Deserialize;
use std::borrow::Cow;
use threshold::{MIN_PROBABILITY, Randomness, Threshold, hash_seed_threshold};
use tracestate::TraceState;

/// Log record attribute holding the threshold of a sampled record (the `th` of spans).
pub const LOG_THRESHOLD_ATTRIBUTE: &str = "sampling.threshold";
/// Log record attribute holding explicit randomness of a record (the `rv` of spans).
pub const LOG_RANDOMNESS_ATTRIBUTE: &str = "sampling.randomness";
/// Span attribute forcing the decision (OpenTracing): `0` drops, positive keeps.
pub const SPAN_PRIORITY_ATTRIBUTE: &str = "sampling.priority";

/// Config of the `probabilistic_sampler` processor.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticSamplerConfig {
    /// Percentage of traces (in a logs pipeline: of log records) to keep, e.g. `15.3`.
    /// `0` drops everything; `100` or more keeps everything. Read as a 32-bit float, like
    /// the collector. Required (no default).
    pub sampling_percentage: f32,
    /// Seed of the trace id hash of `hash_seed` mode, and of the `from_attribute` hash in
    /// every mode. All instances of one tier must share it to keep the same traces; tiers
    /// sampling one after the other should use different seeds. A non-zero value selects
    /// `hash_seed` mode when `mode` is not set. Default: `0`.
    #[serde(default)]
    pub hash_seed: u32,
    /// How decisions are made: `proportional`, `equalizing` or `hash_seed` (see the
    /// component documentation). Default: unset, meaning `hash_seed` when `hash_seed` is
    /// non-zero (and in logs pipelines with `attribute_source: record`), `proportional`
    /// otherwise.
    #[serde(default)]
    pub mode: Option<SamplerMode>,
    /// What happens to an item whose sampling information is unusable (malformed
    /// `tracestate`, no randomness, inconsistent threshold, `th`/`rv` under `hash_seed`):
    /// `true` drops it, `false` passes it on unchanged. Either way it is counted in
    /// `meshgate_processor_sampler_errors_total`. Default: `true`.
    #[serde(default = "default_fail_closed")]
    pub fail_closed: bool,
    /// Significant hexadecimal digits (1-14) of the thresholds this processor computes and
    /// writes to `th`: with `4`, the probability applied is within about 0.01% (relative)
    /// of the one asked for (10% is applied as 10.0006%, `th:e666`). Digits are added
    /// automatically for probabilities near 0 or 1. `hash_seed` thresholds have at most
    /// 14 bits and are always exact. Default: `4`.
    #[serde(default = "default_precision")]
    #[schemars(range(min = 1, max = 14))]
    pub sampling_precision: u8,
    /// Logs only: where a log record's randomness comes from. `traceID`: its trace id, or
    /// the hash of `from_attribute` when it has none; `record`: always the hash of
    /// `from_attribute` (then required). Ignored in traces pipelines. Default: `traceID`.
    #[serde(default)]
    pub attribute_source: AttributeSource,
    /// Logs only: the log record attribute whose value (its bytes, or its text) is hashed
    /// with `hash_seed` to sample records without a trace id, or every record with
    /// `attribute_source: record`. Empty means none: such records have no randomness.
    /// Ignored in traces pipelines. Default: `""`.
    #[serde(default)]
    pub from_attribute: String,
    /// Logs only: the log record attribute that overrides `sampling_percentage` for its
    /// record: a number (or numeric string) `0` drops the record, `100` or more keeps it,
    /// anything between is the record's own percentage; negative or non-numeric values
    /// are ignored. Empty means none. Spans always honour `sampling.priority` instead.
    /// Default: `""`.
    #[serde(default)]
    pub sampling_priority: String,
}

fn default_fail_closed() -> bool {
    true
}

fn default_precision() -> u8 {
    4
}

/// The sampling modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SamplerMode {
    /// 14-bit FNV-1a hash of `hash_seed` and the trace id (collector-compatible).
    HashSeed,
    /// OpenTelemetry consistent sampling, multiplying any upstream probability by ours.
    Proportional,
    /// OpenTelemetry consistent sampling down to one probability for every item.
    Equalizing,
}

impl SamplerMode {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerMode::HashSeed => "hash_seed",
            SamplerMode::Proportional => "proportional",
            SamplerMode::Equalizing => "equalizing",
        }
    }
}

/// Where log records get their randomness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum AttributeSource {
    /// The trace id, falling back to `from_attribute`.
    #[default]
    #[serde(rename = "traceID")]
    TraceId,
    /// The `from_attribute` value.
    #[serde(rename = "record")]
    Record,
}

impl ProbabilisticSamplerConfig {
    /// Checks values and relations between options.
    pub fn validate(&self) -> Result<(), String> {
        let p = self.sampling_percentage;
        if !p.is_finite() || p < 0.0 {
            return Err(format!(
                "`sampling_percentage` must be a number from 0 to 100 (above 100 keeps \
                 everything), got {p}"
            ));
        }
        if p > 0.0 && f64::from(p) / 100.0 < MIN_PROBABILITY {
            return Err(format!(
                "`sampling_percentage` {p} is below the smallest probability a sampling \
                 threshold can express (2^-56, about 1.4e-15 %); use 0 to drop everything"
            ));
        }
        if !(1..=14).contains(&self.sampling_precision) {
            return Err(format!(
                "`sampling_precision` must be from 1 to 14 hexadecimal digits, got {}",
                self.sampling_precision
            ));
        }
        if self.attribute_source == AttributeSource::Record && self.from_attribute.is_empty() {
            return Err(
                "`attribute_source: record` needs `from_attribute`: the log record attribute \
                 whose value is hashed"
                    .into(),
            );
        }
        let may_hash = match self.mode {
            Some(mode) => mode == SamplerMode::HashSeed,
            None => self.hash_seed != 0 || self.attribute_source == AttributeSource::Record,
        };
        if may_hash && p > 0.0 && hash_seed_threshold(p).is_none() {
            return Err(format!(
                "`sampling_percentage` {p} is below the resolution of `hash_seed` mode (1 in \
                 16384, about 0.0061 %) and would drop everything; use 0 for that, or \
                 `mode: proportional`"
            ));
        }
        Ok(())
    }

    /// The mode used in a pipeline of `signal`.
    pub fn effective_mode(&self, signal: Signal) -> SamplerMode {
        self.mode.unwrap_or(
            if self.hash_seed != 0
                || (signal == Signal::Logs && self.attribute_source == AttributeSource::Record)
            {
                SamplerMode::HashSeed
            } else {
                SamplerMode::Proportional
            },
        )
    }
}

/// Factory of the `probabilistic_sampler` processor (traces and logs pipelines).
pub struct ProbabilisticSamplerFactory;

impl Factory for ProbabilisticSamplerFactory {
    fn type_name(&self) -> &'static str {
        "probabilistic_sampler"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "Keeps a share of traces and logs decided from the trace id (consistent across \
         instances); records the threshold in the W3C tracestate."
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(ProbabilisticSamplerConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        serde_json::from_value::<ProbabilisticSamplerConfig>(config.clone())
            .map_err(|e| e.to_string())?
            .validate()
    }
}

impl ProcessorFactory for ProbabilisticSamplerFactory {
    fn build(
        &self,
        ctx: BuildContext<'_>,
        pipeline: &ProcessorContext,
    ) -> Result<Box<dyn Processor>, String> {
        let cfg: ProbabilisticSamplerConfig = ctx.parse()?;
        cfg.validate().map_err(|e| format!("{}: {e}", ctx.id))?;
        let mode = cfg.effective_mode(pipeline.signal);
        let sampler = Sampler::new(&cfg, mode).map_err(|e| format!("{}: {e}", ctx.id))?;
        Ok(Box::new(ProbabilisticSampler {
            sampler,
            counters: Counters::new(ctx.telemetry, &ctx.id, pipeline),
            id: ctx.id,
            warned: [false; SamplingError::ALL.len()],
        }))
    }
}

/// What decides, resolved from the config once.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// `sampling_percentage: 0`.
    Never,
    /// Hashed randomness against a 14-bit threshold.
    HashSeed { threshold: Threshold },
    /// `ratio` times the arriving probability; `own` is the threshold with none arriving.
    Proportional { ratio: f64, own: Threshold },
    /// One threshold for every item.
    Equalizing { threshold: Threshold },
}

/// Why an item's sampling information is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SamplingError {
    /// The tracestate (or a log sampling attribute) does not parse.
    Malformed,
    /// No trace id, `rv` or `from_attribute` value to draw randomness from.
    MissingRandomness,
    /// The arriving threshold is above the item's randomness: it should not exist.
    InconsistentThreshold,
    /// `hash_seed` mode met an item carrying `th` or `rv`.
    HashSeedConflict,
}

impl SamplingError {
    const ALL: [SamplingError; 4] = [
        SamplingError::Malformed,
        SamplingError::MissingRandomness,
        SamplingError::InconsistentThreshold,
        SamplingError::HashSeedConflict,
    ];

    /// The `error` label value.
    fn label(self) -> &'static str {
        match self {
            SamplingError::Malformed => "malformed",
            SamplingError::MissingRandomness => "missing_randomness",
            SamplingError::InconsistentThreshold => "inconsistent_threshold",
            SamplingError::HashSeedConflict => "hash_seed_conflict",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The explanation logged the first time this error is seen.
    fn explanation(self) -> &'static str {
        match self {
            SamplingError::Malformed => "its sampling information does not parse",
            SamplingError::MissingRandomness => {
                "it has no randomness: its trace id is missing or all zeros and it has no \
                 `rv` (or `from_attribute` value)"
            }
            SamplingError::InconsistentThreshold => {
                "its arriving threshold `th` is above its randomness, so an earlier stage \
                 should have dropped it"
            }
            SamplingError::HashSeedConflict => {
                "it carries OpenTelemetry consistent-sampling information (`th` or `rv`), \
                 which `hash_seed` mode cannot combine with its hash; use `mode: \
                 proportional` or `mode: equalizing` for such data"
            }
        }
    }
}

/// A priority attribute's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Priority {
    /// No override: the configured sampling decides.
    Defer,
    /// Drop whatever the sampling says.
    Drop,
    /// Keep whatever the sampling says (even after an error).
    Keep,
    /// Sample this item with this probability instead of the configured one.
    Probability(f64),
}

/// What sampling needs to know about one item.
#[derive(Debug, Clone, Copy, Default)]
struct Facts {
    /// The randomness compared with the threshold.
    randomness: Option<Randomness>,
    /// `randomness` was computed by hashing and must be recorded on the item (`rv`,
    /// `sampling.randomness`) so later consistent samplers agree with this decision.
    hashed: bool,
    /// The threshold applied by earlier stages (`th`, `sampling.threshold`).
    arriving: Option<Threshold>,
    /// Explicit randomness set by an earlier stage (`rv`, `sampling.randomness`).
    explicit: Option<Randomness>,
}

/// The outcome for one item.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// Kept: record `th` (never below the arriving threshold) and, when set, `rv`.
    Record {
        th: Threshold,
        rv: Option<Randomness>,
    },
    /// Kept as it came (fail-open after an error, or forced by priority).
    AsIs,
    /// Kept with its arriving threshold erased, since its randomness contradicts it.
    EraseThreshold,
    /// Dropped by the decision (or by a priority of 0).
    SampledOut,
    /// Dropped because its sampling information is unusable and `fail_closed` is set.
    Failed,
}

/// The decision logic, free of any payload plumbing.
#[derive(Debug, Clone)]
struct Sampler {
    rule: Rule,
    fail_closed: bool,
    precision: u8,
    hash_seed: u32,
    /// Logs: the trace id is the first source of randomness.
    logs_use_trace_id: bool,
    /// Logs: the attribute hashed when the trace id is not used.
    from_attribute: Option<String>,
    /// Logs: the priority attribute.
    priority_attribute: Option<String>,
}

impl Sampler {
    fn new(cfg: &ProbabilisticSamplerConfig, mode: SamplerMode) -> Result<Sampler, String> {
        let pct = cfg.sampling_percentage.min(100.0);
        let ratio = (f64::from(pct) / 100.0).max(MIN_PROBABILITY);
        let precision = cfg.sampling_precision;
        let consistent = |ratio: f64| {
            Threshold::from_probability(ratio, precision)
                .ok_or_else(|| format!("`sampling_percentage` {pct} is out of range"))
        };
        let rule = if pct == 0.0 {
            Rule::Never
        } else {
            match mode {
                SamplerMode::HashSeed => Rule::HashSeed {
                    threshold: hash_seed_threshold(pct).ok_or_else(|| {
                        format!("`sampling_percentage` {pct} is below `hash_seed` resolution")
                    })?,
                },
                SamplerMode::Proportional => Rule::Proportional {
                    ratio,
                    own: consistent(ratio)?,
                },
                SamplerMode::Equalizing => Rule::Equalizing {
                    threshold: consistent(ratio)?,
                },
            }
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(Sampler {
            rule,
            fail_closed: cfg.fail_closed,
            precision,
            hash_seed: cfg.hash_seed,
            logs_use_trace_id: cfg.attribute_source == AttributeSource::TraceId,
            from_attribute: non_empty(&cfg.from_attribute),
            priority_attribute: non_empty(&cfg.sampling_priority),
        })
    }

    /// The threshold this stage applies to an item that arrived with `arriving`.
    fn rule_threshold(&self, arriving: Option<Threshold>) -> Threshold {
        match self.rule {
            Rule::Never => Threshold::NEVER,
            Rule::HashSeed { threshold } | Rule::Equalizing { threshold } => threshold,
            Rule::Proportional { own, .. } if arriving.is_none() => own,
            Rule::Proportional { ratio, .. } => {
                let p = arriving.map_or(1.0, Threshold::probability) * ratio;
                // Below 2^-56 the product cannot be expressed: nothing is kept.
                Threshold::from_probability(p, self.precision).unwrap_or(Threshold::NEVER)
            }
        }
    }

    /// Checks that `facts` allow a decision.
    fn check(&self, f: &Facts) -> Result<(), SamplingError> {
        if matches!(self.rule, Rule::HashSeed { .. })
            && (f.arriving.is_some() || f.explicit.is_some())
        {
            return Err(SamplingError::HashSeedConflict);
        }
        let r = f.randomness.ok_or(SamplingError::MissingRandomness)?;
        match f.arriving {
            Some(t) if !t.keeps(r) => Err(SamplingError::InconsistentThreshold),
            _ => Ok(()),
        }
    }

    /// Decides one item. Returns the verdict and the error its facts had, if any.
    fn decide(
        &self,
        facts: Result<Facts, SamplingError>,
        priority: Priority,
    ) -> (Verdict, Option<SamplingError>) {
        let (facts, error) = match facts {
            Ok(f) => (Some(f), self.check(&f).err()),
            Err(e) => (None, Some(e)),
        };
        let mut t = match (&facts, error) {
            (Some(f), None) => self.rule_threshold(f.arriving),
            _ if self.fail_closed => Threshold::NEVER,
            _ => Threshold::ALWAYS,
        };
        match priority {
            Priority::Defer => {}
            Priority::Drop => t = Threshold::NEVER,
            Priority::Keep => t = Threshold::ALWAYS,
            // A record's own probability replaces the configured one, not error handling.
            Priority::Probability(p) if error.is_none() => {
                t = Threshold::from_probability(p, self.precision).unwrap_or(Threshold::NEVER)
            }
            Priority::Probability(_) => {}
        }
        let randomness = facts.and_then(|f| f.randomness);
        let keep = t == Threshold::ALWAYS || randomness.is_some_and(|r| t.keeps(r));
        let verdict = match (keep, facts, error) {
            (false, _, Some(_)) if self.fail_closed && priority != Priority::Drop => {
                Verdict::Failed
            }
            (false, _, _) => Verdict::SampledOut,
            (true, Some(f), None) => Verdict::Record {
                th: t.max(f.arriving.unwrap_or(Threshold::ALWAYS)),
                rv: randomness.filter(|_| f.hashed),
            },
            (true, Some(_), Some(SamplingError::InconsistentThreshold)) => Verdict::EraseThreshold,
            (true, _, _) => Verdict::AsIs,
        };
        (verdict, error)
    }

    /// The facts of a span with a parsed trace state.
    fn span_facts(&self, trace_id: &[u8], ts: &TraceState<'_>) -> Facts {
        let (randomness, hashed) = match self.rule {
            Rule::HashSeed { .. } => (
                Randomness::from_trace_id(trace_id)
                    .map(|_| Randomness::from_hash(trace_id, self.hash_seed)),
                true,
            ),
            _ => (ts.rv.or_else(|| Randomness::from_trace_id(trace_id)), false),
        };
        Facts {
            randomness,
            hashed,
            arriving: ts.th,
            explicit: ts.rv,
        }
    }

    /// Decides one span and edits its trace state when it is kept.
    fn sample_span(&self, span: &mut Span, tally: &mut Tally) -> bool {
        let priority = span_priority(&span.attributes);
        if priority == Priority::Drop
            || (matches!(self.rule, Rule::Never) && priority == Priority::Defer)
        {
            tally.sampled_out += 1;
            return false;
        }
        let (verdict, mut error, rewrite) = {
            let parsed = TraceState::parse(&span.trace_state);
            let facts = match &parsed {
                Ok(ts) => Ok(self.span_facts(&span.trace_id, ts)),
                Err(e) => Err(tally.note(SamplingError::Malformed, e.0)),
            };
            let (verdict, error) = self.decide(facts, priority);
            let rewrite = match (verdict, &parsed) {
                (Verdict::Record { th, rv }, Ok(ts)) => {
                    Some(ts.with_sampling(Some(th), rv.or(ts.rv)))
                }
                (Verdict::EraseThreshold, Ok(ts)) => Some(ts.with_sampling(None, ts.rv)),
                _ => None,
            };
            (verdict, error, rewrite)
        };
        let mut keep = !matches!(verdict, Verdict::SampledOut | Verdict::Failed);
        match rewrite {
            Some(Ok(state)) => span.trace_state = state,
            Some(Err(e)) => {
                // The `ot` value would outgrow its limit: the decision cannot be recorded.
                error = Some(tally.note(SamplingError::Malformed, e.0));
                if self.fail_closed && priority != Priority::Keep {
                    keep = false;
                }
            }
            None => {}
        }
        tally.count(keep, verdict, error)
    }

    /// The facts of a log record.
    fn log_facts(&self, rec: &LogRecord, tally: &mut Tally) -> Result<Facts, SamplingError> {
        let attrs = &rec.attributes;
        let arriving = log_sampling_attribute(attrs, LOG_THRESHOLD_ATTRIBUTE, Threshold::parse)
            .map_err(|e| tally.note(SamplingError::Malformed, e))?;
        let explicit = log_sampling_attribute(attrs, LOG_RANDOMNESS_ATTRIBUTE, Randomness::parse)
            .map_err(|e| tally.note(SamplingError::Malformed, e))?;
        let from_trace_id = if self.logs_use_trace_id {
            Randomness::from_trace_id(&rec.trace_id)
        } else {
            None
        };
        let (randomness, hashed) = match (self.rule, explicit, from_trace_id) {
            (Rule::HashSeed { .. }, _, Some(_)) => (
                Some(Randomness::from_hash(&rec.trace_id, self.hash_seed)),
                true,
            ),
            (Rule::HashSeed { .. }, _, None) => (self.attribute_randomness(attrs), true),
            (_, Some(r), _) => (Some(r), false),
            (_, None, Some(r)) => (Some(r), false),
            (_, None, None) => (self.attribute_randomness(attrs), true),
        };
        Ok(Facts {
            randomness,
            hashed: hashed && randomness.is_some(),
            arriving,
            explicit,
        })
    }

    /// The hash of the `from_attribute` value; `None` when unset, absent or empty.
    fn attribute_randomness(&self, attrs: &[KeyValue]) -> Option<Randomness> {
        let value = get(attrs, self.from_attribute.as_deref()?)?;
        let bytes: Cow<'_, [u8]> = match value {
            Value::StringValue(s) => Cow::Borrowed(s.as_bytes()),
            Value::BytesValue(b) => Cow::Borrowed(b),
            other => Cow::Owned(value_to_string(other).into_bytes()),
        };
        (!bytes.is_empty()).then(|| Randomness::from_hash(&bytes, self.hash_seed))
    }

    /// The priority of a log record from the configured attribute.
    fn log_priority(&self, attrs: &[KeyValue]) -> Priority {
        let Some(name) = self.priority_attribute.as_deref() else {
            return Priority::Defer;
        };
        match get(attrs, name).and_then(numeric) {
            Some(v) if v < 0.0 || v.is_nan() => Priority::Defer,
            Some(0.0) => Priority::Drop,
            Some(v) if v >= 100.0 => Priority::Keep,
            Some(v) => Priority::Probability(v / 100.0),
            None => Priority::Defer,
        }
    }

    /// Decides one log record and records the sampling attributes when it is kept.
    fn sample_log(&self, rec: &mut LogRecord, tally: &mut Tally) -> bool {
        let priority = self.log_priority(&rec.attributes);
        if priority == Priority::Drop
            || (matches!(self.rule, Rule::Never) && priority == Priority::Defer)
        {
            tally.sampled_out += 1;
            return false;
        }
        let facts = self.log_facts(rec, tally);
        let (verdict, error) = self.decide(facts, priority);
        match verdict {
            Verdict::Record { th, rv } => {
                let th = th.encode().as_str().to_string();
                upsert(
                    &mut rec.attributes,
                    LOG_THRESHOLD_ATTRIBUTE,
                    Value::StringValue(th),
                );
                if let Some(rv) = rv {
                    let rv = rv.encode().as_str().to_string();
                    upsert(
                        &mut rec.attributes,
                        LOG_RANDOMNESS_ATTRIBUTE,
                        Value::StringValue(rv),
                    );
                }
            }
            Verdict::EraseThreshold => {
                remove(&mut rec.attributes, LOG_THRESHOLD_ATTRIBUTE);
            }
            _ => {}
        }
        let keep = !matches!(verdict, Verdict::SampledOut | Verdict::Failed);
        tally.count(keep, verdict, error)
    }
}

/// Parses an optional string sampling attribute of a log record with `parse`.
fn log_sampling_attribute<T>(
    attrs: &[KeyValue],
    key: &str,
    parse: fn(&str) -> Result<T, &'static str>,
) -> Result<Option<T>, &'static str> {
    match get(attrs, key) {
        None => Ok(None),
        Some(Value::StringValue(s)) => parse(s).map(Some),
        Some(_) => Err("a log sampling attribute is not a string"),
    }
}

/// A number from an int, double or numeric string value.
fn numeric(v: &Value) -> Option<f64> {
    match v {
        Value::IntValue(i) => Some(*i as f64),
        Value::DoubleValue(d) => Some(*d),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The `sampling.priority` of a span: `0` drops, positive keeps, anything else defers.
fn span_priority(attrs: &[KeyValue]) -> Priority {
    match get(attrs, SPAN_PRIORITY_ATTRIBUTE).and_then(numeric) {
        Some(0.0) => Priority::Drop,
        Some(v) if v > 0.0 => Priority::Keep,
        _ => Priority::Defer,
    }
}

/// Counts of one payload, added to the counters once.
#[derive(Debug, Default)]
struct Tally {
    kept: u64,
    sampled_out: u64,
    failed: u64,
    errors: [u64; SamplingError::ALL.len()],
    /// The first detail seen of each error kind, for the log.
    details: [Option<&'static str>; SamplingError::ALL.len()],
}

impl Tally {
    /// Remembers a detail of an error (the first of each kind); returns the error.
    fn note(&mut self, e: SamplingError, detail: &'static str) -> SamplingError {
        self.details[e.index()].get_or_insert(detail);
        e
    }

    /// Counts an item's outcome; returns `keep`.
    fn count(&mut self, keep: bool, verdict: Verdict, error: Option<SamplingError>) -> bool {
        if let Some(e) = error {
            self.errors[e.index()] += 1;
        }
        match (keep, verdict) {
            (true, _) => self.kept += 1,
            (false, Verdict::SampledOut) => self.sampled_out += 1,
            (false, _) => self.failed += 1,
        }
        keep
    }
}

/// The self-metrics of one processor instance.
struct Counters {
    kept: Counter,
    sampled_out: Counter,
    failed: Counter,
    errors: [Counter; SamplingError::ALL.len()],
}

impl Counters {
    fn new(telemetry: &Registry, id: &str, pipeline: &ProcessorContext) -> Counters {
        let base = [
            ("processor", id),
            ("pipeline", pipeline.pipeline.as_str()),
            ("signal", pipeline.signal.as_str()),
        ];
        let with = |k: &'static str, v: &'static str| {
            let mut l = base.to_vec();
            l.push((k, v));
            l
        };
        let dropped = |reason| {
            telemetry.counter(
                "meshgate_processor_dropped_items_total",
                "Items a processor dropped on purpose, by reason.",
                &with("reason", reason),
            )
        };
        Counters {
            kept: telemetry.counter(
                "meshgate_processor_sampler_kept_items_total",
                "Items a sampling processor passed on.",
                &base,
            ),
            sampled_out: dropped("sampled_out"),
            failed: dropped("sampling_error"),
            errors: SamplingError::ALL.map(|e| {
                telemetry.counter(
                    "meshgate_processor_sampler_errors_total",
                    "Items whose sampling information was unusable (dropped or passed on \
                     per fail_closed), by error.",
                    &with("error", e.label()),
                )
            }),
        }
    }
}

/// The running sampler of one pipeline.
struct ProbabilisticSampler {
    sampler: Sampler,
    counters: Counters,
    id: String,
    /// Error kinds already logged once.
    warned: [bool; SamplingError::ALL.len()],
}

impl ProbabilisticSampler {
    fn record(&mut self, tally: &Tally) {
        let c = &self.counters;
        for (counter, n) in [
            (&c.kept, tally.kept),
            (&c.sampled_out, tally.sampled_out),
            (&c.failed, tally.failed),
        ] {
            if n > 0 {
                counter.add(n);
            }
        }
        for e in SamplingError::ALL {
            let n = tally.errors[e.index()];
            if n == 0 {
                continue;
            }
            c.errors[e.index()].add(n);
            if !std::mem::replace(&mut self.warned[e.index()], true) {
                tracing::warn!(
                    processor = %self.id,
                    error = e.label(),
                    detail = tally.details[e.index()].unwrap_or(""),
                    fail_closed = self.sampler.fail_closed,
                    "an item could not be sampled: {}; it was {} (logged once, further \
                     items are counted in meshgate_processor_sampler_errors_total)",
                    e.explanation(),
                    if self.sampler.fail_closed { "dropped" } else { "passed on" },
                );
            }
        }
    }
}

impl Processor for ProbabilisticSampler {
    fn process(&mut self, mut data: Payload, out: &mut Vec<Payload>) {
        let mut tally = Tally::default();
        let sampler = &self.sampler;
        match &mut data {
            Payload::Traces(t) => t.resource_spans.retain_mut(|rs| {
                rs.scope_spans.retain_mut(|ss| {
                    ss.spans.retain_mut(|s| sampler.sample_span(s, &mut tally));
                    !ss.spans.is_empty()
                });
                !rs.scope_spans.is_empty()
            }),
            Payload::Logs(l) => l.resource_logs.retain_mut(|rl| {
                rl.scope_logs.retain_mut(|sl| {
                    sl.log_records
                        .retain_mut(|r| sampler.sample_log(r, &mut tally));
                    !sl.log_records.is_empty()
                });
                !rl.scope_logs.is_empty()
            }),
            // Not wired for metrics (the factory declares traces and logs only).
            Payload::Metrics(_) => {}
        }
        self.record(&tally);
        if !data.is_empty() {
            out.push(data);
        }
    }
}

#[cfg(test)]
mod tests;
