//! The sampling policies, compiled from config, and the rule that turns their votes into one
//! decision per trace (the OpenTelemetry Collector's):
//!
//! - a `drop` policy that matched, or an inverted policy (`invert_match`) that matched, means
//!   not sampled, whatever the other policies say;
//! - otherwise a policy voting "sampled" means sampled;
//! - otherwise an inverted policy that did not match ("inverted sampled") means sampled
//!   unless another policy voted "not sampled" (a `drop` policy that did not match has no
//!   say here);
//! - otherwise not sampled.
//!
//! Attribute policies look at every span's attributes and every resource's attributes, and
//! read values the way mesh proxies send them: Envoy sends every attribute as a string, so
//! `"503"` is a number for `numeric_attribute`, `"true"` a boolean for `boolean_attribute`,
//! and `string_attribute` compares any value by its text form.

use super::config::{PolicyConfig, PolicyType, StatusCodeName, TailSamplingConfig};
use super::store::{TraceData, TraceKey};
use meshgate_pdata::attributes::{get, value_to_string};
use meshgate_pdata::mesh::effective_status;
use meshgate_pdata::otlp::{any_value::Value, status::StatusCode};
use regex::Regex;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// One policy's vote on a trace (the collector's decisions). The votes of the top-level
/// policies combine into the trace's decision: `Dropped` or `InvertNotSampled` from any policy
/// means not sampled; otherwise any `Sampled` means sampled; otherwise `InvertSampled` means
/// sampled when no policy (other than a `drop` policy) voted `NotSampled`; otherwise not
/// sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The policy matched: sample.
    Sampled,
    /// The policy did not match.
    NotSampled,
    /// An inverted policy did not match: sample unless another policy says no.
    InvertSampled,
    /// An inverted policy matched: do not sample, whatever the others say.
    InvertNotSampled,
    /// A `drop` policy matched: do not sample, whatever the others say.
    Dropped,
}

impl Decision {
    /// Every decision, in label order.
    pub const ALL: [Decision; 5] = [
        Decision::Sampled,
        Decision::NotSampled,
        Decision::InvertSampled,
        Decision::InvertNotSampled,
        Decision::Dropped,
    ];

    /// Label value on `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Sampled => "sampled",
            Decision::NotSampled => "not_sampled",
            Decision::InvertSampled => "inverted_sampled",
            Decision::InvertNotSampled => "inverted_not_sampled",
            Decision::Dropped => "dropped",
        }
    }

    /// Position in [`Decision::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the vote is to sample (as `and`, `drop` and `composite` read sub-policies).
    fn samples(self) -> bool {
        matches!(self, Decision::Sampled | Decision::InvertSampled)
    }
}

/// The vote of a matching policy.
fn vote(found: bool, invert: bool) -> Decision {
    match (invert, found) {
        (false, true) => Decision::Sampled,
        (false, false) => Decision::NotSampled,
        (true, true) => Decision::InvertNotSampled,
        (true, false) => Decision::InvertSampled,
    }
}

/// A token bucket holding at most one second of `rate`, full at start.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: rate,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.rate);
            if now > last {
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
    }

    fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Exact values or regular expressions, with an optional memory of regex results.
#[derive(Debug)]
enum StringMatcher {
    Exact(HashSet<String>),
    Regex {
        patterns: Vec<Regex>,
        cache: HashMap<String, bool>,
        cache_max: usize,
    },
}

impl StringMatcher {
    fn matches(&mut self, v: &Value) -> bool {
        match v {
            Value::StringValue(s) => self.matches_str(s),
            other => self.matches_str(&value_to_string(other)),
        }
    }

    fn matches_str(&mut self, s: &str) -> bool {
        match self {
            StringMatcher::Exact(set) => set.contains(s),
            StringMatcher::Regex {
                patterns,
                cache,
                cache_max,
            } => {
                if *cache_max == 0 {
                    return patterns.iter().any(|r| r.is_match(s));
                }
                if let Some(m) = cache.get(s) {
                    return *m;
                }
                let m = patterns.iter().any(|r| r.is_match(s));
                if cache.len() >= *cache_max {
                    cache.clear();
                }
                cache.insert(s.to_string(), m);
                m
            }
        }
    }
}

/// A compiled policy.
#[derive(Debug)]
enum Policy {
    AlwaysSample,
    Latency {
        min_ns: u64,
        max_ns: Option<u64>,
    },
    Numeric {
        key: String,
        min: f64,
        max: f64,
        invert: bool,
    },
    String {
        key: String,
        matcher: StringMatcher,
        invert: bool,
    },
    Boolean {
        key: String,
        value: bool,
        invert: bool,
    },
    StatusCode {
        ok: bool,
        error: bool,
        unset: bool,
    },
    Probabilistic {
        /// FNV-1a state after the salt.
        salted: u64,
        /// Hashes below this are sampled; `None` samples everything.
        threshold: Option<u64>,
    },
    RateLimiting(TokenBucket),
    SpanCount {
        min: u64,
        max: u64,
    },
    TraceState {
        key: String,
        values: HashSet<String>,
    },
    And(Vec<Policy>),
    Drop(Vec<Policy>),
    Composite {
        /// Sub-policies in evaluation order, each with its share of the rate.
        subs: Vec<(Policy, TokenBucket)>,
        total: TokenBucket,
    },
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// A final mix so sequential ids spread over the whole range (splitmix64's finaliser).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether any resource or span of the trace has `key` with a value `pred` accepts.
fn any_value(t: &TraceData, key: &str, mut pred: impl FnMut(&Value) -> bool) -> bool {
    t.resources()
        .filter_map(|attrs| get(attrs, key))
        .any(&mut pred)
        || t.spans()
            .iter()
            .filter_map(|s| get(&s.attributes, key))
            .any(&mut pred)
}

/// A numeric reading of a value: integers, doubles and numeric strings (Envoy's `"503"`).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::IntValue(i) => Some(*i as f64),
        Value::DoubleValue(d) => Some(*d),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean reading of a value: booleans and the strings `true`/`false` in any case.
fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::BoolValue(b) => Some(*b),
        Value::StringValue(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
        Value::StringValue(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// From the earliest span start to the latest span end, in nanoseconds.
fn duration_ns(t: &TraceData) -> u64 {
    let start = t.spans().iter().map(|s| s.start_time_unix_nano).min();
    let end = t.spans().iter().map(|s| s.end_time_unix_nano).max();
    match (start, end) {
        (Some(s), Some(e)) => e.saturating_sub(s),
        _ => 0,
    }
}

/// Whether a W3C trace state (`k1=v1,k2=v2`) has `key` with one of `values`.
fn trace_state_has(state: &str, key: &str, values: &HashSet<String>) -> bool {
    state
        .split(',')
        .filter_map(|member| member.split_once('='))
        .any(|(k, v)| k.trim() == key && values.contains(v.trim()))
}

impl Policy {
    fn evaluate(&mut self, t: &TraceData, id: &TraceKey, now: Instant) -> Decision {
        match self {
            Policy::AlwaysSample => Decision::Sampled,
            Policy::Latency { min_ns, max_ns } => {
                let d = duration_ns(t);
                vote(d >= *min_ns && max_ns.is_none_or(|m| d <= m), false)
            }
            Policy::Numeric {
                key,
                min,
                max,
                invert,
            } => {
                let (min, max) = (*min, *max);
                let found = any_value(t, key, |v| number(v).is_some_and(|x| x >= min && x <= max));
                vote(found, *invert)
            }
            Policy::String {
                key,
                matcher,
                invert,
            } => {
                let found = any_value(t, key, |v| matcher.matches(v));
                vote(found, *invert)
            }
            Policy::Boolean { key, value, invert } => {
                let want = *value;
                let found = any_value(t, key, |v| boolean(v) == Some(want));
                vote(found, *invert)
            }
            Policy::StatusCode { ok, error, unset } => {
                let found = t.spans().iter().any(|s| match effective_status(s) {
                    StatusCode::Ok => *ok,
                    StatusCode::Error => *error,
                    StatusCode::Unset => *unset,
                });
                vote(found, false)
            }
            Policy::Probabilistic { salted, threshold } => match threshold {
                None => Decision::Sampled,
                Some(th) => vote(mix(fnv1a(*salted, id)) < *th, false),
            },
            Policy::RateLimiting(bucket) => {
                vote(bucket.try_take(t.span_count() as f64, now), false)
            }
            Policy::SpanCount { min, max } => {
                let n = t.span_count() as u64;
                vote(n >= *min && (*max == 0 || n <= *max), false)
            }
            Policy::TraceState { key, values } => {
                let found = t
                    .spans()
                    .iter()
                    .any(|s| trace_state_has(&s.trace_state, key, values));
                vote(found, false)
            }
            Policy::And(subs) => {
                for p in subs.iter_mut() {
                    if !p.evaluate(t, id, now).samples() {
                        return Decision::NotSampled;
                    }
                }
                Decision::Sampled
            }
            Policy::Drop(subs) => {
                for p in subs.iter_mut() {
                    if !p.evaluate(t, id, now).samples() {
                        return Decision::NotSampled;
                    }
                }
                Decision::Dropped
            }
            Policy::Composite { subs, total } => {
                let n = t.span_count() as f64;
                for (p, share) in subs.iter_mut() {
                    if !p.evaluate(t, id, now).samples() {
                        continue;
                    }
                    share.refill(now);
                    total.refill(now);
                    if share.tokens >= n && total.tokens >= n {
                        share.tokens -= n;
                        total.tokens -= n;
                        return Decision::Sampled;
                    }
                    // Out of room: the next sub-policy may still take the trace.
                }
                Decision::NotSampled
            }
        }
    }
}

/// Where a policy list sits, for the nesting rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    And,
    Drop,
    Composite,
}

impl Level {
    fn parent(self) -> &'static str {
        match self {
            Level::Top => "the top level",
            Level::And => "an `and` policy",
            Level::Drop => "a `drop` policy",
            Level::Composite => "a `composite` policy",
        }
    }
}

fn non_empty(s: &str, at: &str) -> Result<(), String> {
    if s.is_empty() {
        Err(format!("{at}: must not be empty"))
    } else {
        Ok(())
    }
}

/// Compiles a list of sibling policies (names unique among them).
fn compile_list(
    list: &[PolicyConfig],
    path: &str,
    level: Level,
) -> Result<Vec<(String, Policy)>, String> {
    if list.is_empty() {
        return Err(format!("{path}: needs at least one policy"));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        non_empty(p.name.trim(), &format!("{at}.name"))?;
        if let Some(j) = seen.insert(&p.name, i) {
            return Err(format!(
                "{at}.name: `{}` is already the name of {path}[{j}]; policy names must be unique",
                p.name
            ));
        }
        out.push((p.name.clone(), compile_one(p, &at, level)?));
    }
    Ok(out)
}

fn compile_one(p: &PolicyConfig, at: &str, level: Level) -> Result<Policy, String> {
    let t = p.kind.as_str();
    let allowed = match p.kind {
        PolicyType::And => matches!(level, Level::Top | Level::Composite),
        PolicyType::Drop | PolicyType::Composite => level == Level::Top,
        _ => true,
    };
    if !allowed {
        return Err(format!(
            "{at}.type: `{t}` policies cannot be nested in {}",
            level.parent()
        ));
    }
    for s in p.sections() {
        if s != t {
            let hint = if p.kind == PolicyType::AlwaysSample {
                "it has no options".to_string()
            } else {
                format!("its options go under `{t}`")
            };
            return Err(format!(
                "{at}.{s}: does not apply to a policy of type `{t}` ({hint})"
            ));
        }
    }
    fn need<'a, T>(section: &'a Option<T>, at: &str, t: &str) -> Result<&'a T, String> {
        section
            .as_ref()
            .ok_or_else(|| format!("{at}: a `{t}` policy needs its options under `{t}`"))
    }
    let at_s = format!("{at}.{t}");
    Ok(match p.kind {
        PolicyType::AlwaysSample => Policy::AlwaysSample,
        PolicyType::Latency => {
            let c = need(&p.latency, at, t)?;
            if c.upper_threshold_ms != 0 && c.upper_threshold_ms <= c.threshold_ms {
                return Err(format!(
                    "{at_s}.upper_threshold_ms ({}) must be greater than threshold_ms ({}), or \
                     0 for no upper bound",
                    c.upper_threshold_ms, c.threshold_ms
                ));
            }
            Policy::Latency {
                min_ns: c.threshold_ms.saturating_mul(1_000_000),
                max_ns: (c.upper_threshold_ms != 0)
                    .then(|| c.upper_threshold_ms.saturating_mul(1_000_000)),
            }
        }
        PolicyType::NumericAttribute => {
            let c = need(&p.numeric_attribute, at, t)?;
            non_empty(&c.key, &format!("{at_s}.key"))?;
            if c.min_value.is_none() && c.max_value.is_none() {
                return Err(format!("{at_s}: needs `min_value`, `max_value` or both"));
            }
            let (min, max) = (
                c.min_value.unwrap_or(f64::NEG_INFINITY),
                c.max_value.unwrap_or(f64::INFINITY),
            );
            if min > max {
                return Err(format!(
                    "{at_s}.min_value ({min}) must not be greater than max_value ({max})"
                ));
            }
            Policy::Numeric {
                key: c.key.clone(),
                min,
                max,
                invert: c.invert_match,
            }
        }
        PolicyType::StringAttribute => {
            let c = need(&p.string_attribute, at, t)?;
            non_empty(&c.key, &format!("{at_s}.key"))?;
            if c.values.is_empty() {
                return Err(format!("{at_s}.values: needs at least one value"));
            }
            let matcher = if c.enabled_regex_matching {
                let patterns = c
                    .values
                    .iter()
                    .enumerate()
                    .map(|(j, v)| {
                        Regex::new(v)
                            .map_err(|e| format!("{at_s}.values[{j}]: invalid regex `{v}`: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                StringMatcher::Regex {
                    patterns,
                    cache: HashMap::new(),
                    cache_max: c.cache_max_size,
                }
            } else {
                StringMatcher::Exact(c.values.iter().cloned().collect())
            };
            Policy::String {
                key: c.key.clone(),
                matcher,
                invert: c.invert_match,
            }
        }
        PolicyType::BooleanAttribute => {
            let c = need(&p.boolean_attribute, at, t)?;
            non_empty(&c.key, &format!("{at_s}.key"))?;
            Policy::Boolean {
                key: c.key.clone(),
                value: c.value,
                invert: c.invert_match,
            }
        }
        PolicyType::StatusCode => {
            let c = need(&p.status_code, at, t)?;
            if c.status_codes.is_empty() {
                return Err(format!(
                    "{at_s}.status_codes: needs at least one of OK, ERROR, UNSET"
                ));
            }
            let has = |n| c.status_codes.contains(&n);
            Policy::StatusCode {
                ok: has(StatusCodeName::Ok),
                error: has(StatusCodeName::Error),
                unset: has(StatusCodeName::Unset),
            }
        }
        PolicyType::Probabilistic => {
            let c = need(&p.probabilistic, at, t)?;
            let pct = c.sampling_percentage;
            if !(0.0..=100.0).contains(&pct) {
                return Err(format!(
                    "{at_s}.sampling_percentage: must be between 0 and 100, got {pct}"
                ));
            }
            Policy::Probabilistic {
                salted: fnv1a(FNV_OFFSET, c.hash_salt.as_bytes()),
                threshold: (pct < 100.0).then(|| (pct / 100.0 * 2f64.powi(64)) as u64),
            }
        }
        PolicyType::RateLimiting => {
            let c = need(&p.rate_limiting, at, t)?;
            if c.spans_per_second == 0 {
                return Err(format!("{at_s}.spans_per_second: must be greater than 0"));
            }
            Policy::RateLimiting(TokenBucket::new(c.spans_per_second as f64))
        }
        PolicyType::SpanCount => {
            let c = need(&p.span_count, at, t)?;
            if c.max_spans != 0 && c.max_spans < c.min_spans {
                return Err(format!(
                    "{at_s}.max_spans ({}) must be at least min_spans ({}), or 0 for no upper \
                     bound",
                    c.max_spans, c.min_spans
                ));
            }
            Policy::SpanCount {
                min: c.min_spans,
                max: c.max_spans,
            }
        }
        PolicyType::TraceState => {
            let c = need(&p.trace_state, at, t)?;
            non_empty(&c.key, &format!("{at_s}.key"))?;
            if c.values.is_empty() {
                return Err(format!("{at_s}.values: needs at least one value"));
            }
            Policy::TraceState {
                key: c.key.clone(),
                values: c.values.iter().cloned().collect(),
            }
        }
        PolicyType::And => {
            let c = need(&p.and, at, t)?;
            let subs = compile_list(
                &c.and_sub_policy,
                &format!("{at_s}.and_sub_policy"),
                Level::And,
            )?;
            Policy::And(subs.into_iter().map(|(_, p)| p).collect())
        }
        PolicyType::Drop => {
            let c = need(&p.drop, at, t)?;
            let subs = compile_list(
                &c.drop_sub_policy,
                &format!("{at_s}.drop_sub_policy"),
                Level::Drop,
            )?;
            Policy::Drop(subs.into_iter().map(|(_, p)| p).collect())
        }
        PolicyType::Composite => compile_composite(p, at, &at_s)?,
    })
}

fn compile_composite(p: &PolicyConfig, at: &str, at_s: &str) -> Result<Policy, String> {
    let c = p
        .composite
        .as_ref()
        .ok_or_else(|| format!("{at}: a `composite` policy needs its options under `composite`"))?;
    if c.max_total_spans_per_second == 0 {
        return Err(format!(
            "{at_s}.max_total_spans_per_second: must be greater than 0"
        ));
    }
    let subs = compile_list(
        &c.composite_sub_policy,
        &format!("{at_s}.composite_sub_policy"),
        Level::Composite,
    )?;
    let names: Vec<&str> = subs.iter().map(|(n, _)| n.as_str()).collect();
    let n = names.len();
    let find = |name: &str| names.iter().position(|x| *x == name);
    let order: Vec<usize> = if c.policy_order.is_empty() {
        (0..n).collect()
    } else {
        let mut listed = vec![false; n];
        let mut order = Vec::with_capacity(n);
        for (j, name) in c.policy_order.iter().enumerate() {
            let idx = find(name).ok_or_else(|| {
                format!(
                    "{at_s}.policy_order[{j}]: no sub-policy named `{name}` in composite_sub_policy"
                )
            })?;
            if listed[idx] {
                return Err(format!(
                    "{at_s}.policy_order[{j}]: `{name}` is listed twice"
                ));
            }
            listed[idx] = true;
            order.push(idx);
        }
        if let Some(missing) = listed.iter().position(|l| !l) {
            return Err(format!(
                "{at_s}.policy_order: sub-policy `{}` is missing; list every sub-policy once",
                names[missing]
            ));
        }
        order
    };
    let mut percent: Vec<Option<f64>> = vec![None; n];
    for (j, a) in c.rate_allocation.iter().enumerate() {
        let idx = find(&a.policy).ok_or_else(|| {
            format!(
                "{at_s}.rate_allocation[{j}].policy: no sub-policy named `{}` in \
                 composite_sub_policy",
                a.policy
            )
        })?;
        if !(a.percent > 0.0 && a.percent <= 100.0) {
            return Err(format!(
                "{at_s}.rate_allocation[{j}].percent: must be greater than 0 and at most 100, \
                 got {}",
                a.percent
            ));
        }
        if percent[idx].is_some() {
            return Err(format!(
                "{at_s}.rate_allocation[{j}].policy: `{}` already has an allocation",
                a.policy
            ));
        }
        percent[idx] = Some(a.percent);
    }
    let allocated: f64 = percent.iter().flatten().sum();
    if allocated > 100.0 + 1e-9 {
        return Err(format!(
            "{at_s}.rate_allocation: the percentages add up to {allocated}, more than 100"
        ));
    }
    let unallocated = percent.iter().filter(|p| p.is_none()).count();
    let rest = (100.0 - allocated).max(0.0);
    if unallocated > 0 && rest <= 1e-9 {
        let idx = percent.iter().position(Option::is_none).unwrap_or(0);
        return Err(format!(
            "{at_s}.rate_allocation: the allocations use all 100%, leaving nothing for \
             sub-policy `{}`; give it a share or remove it",
            names[idx]
        ));
    }
    let share = if unallocated > 0 {
        rest / unallocated as f64
    } else {
        0.0
    };
    let max_total = c.max_total_spans_per_second as f64;
    let mut policies: Vec<Option<Policy>> = subs.into_iter().map(|(_, p)| Some(p)).collect();
    let subs = order
        .into_iter()
        .map(|idx| {
            let pct = percent[idx].unwrap_or(share);
            let policy = policies[idx]
                .take()
                .expect("each sub-policy is ordered once");
            (policy, TokenBucket::new(max_total * pct / 100.0))
        })
        .collect();
    Ok(Policy::Composite {
        subs,
        total: TokenBucket::new(max_total),
    })
}

/// The top-level policies of one processor and the rule combining their votes.
#[derive(Debug)]
pub struct Policies {
    list: Vec<(String, Policy)>,
    sample_on_first_match: bool,
}

impl Policies {
    /// Compiles and checks every policy of a config; errors name the key path.
    pub fn compile(cfg: &TailSamplingConfig) -> Result<Self, String> {
        Ok(Self {
            list: compile_list(&cfg.policies, "policies", Level::Top)?,
            sample_on_first_match: cfg.sample_on_first_match,
        })
    }

    /// The policy names, in config order (index = the index passed to `record`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|(n, _)| n.as_str())
    }

    /// Decides a trace: `true` samples it. `record` gets each evaluated policy's index and
    /// vote. `now` drives the rate-limiting policies.
    pub fn evaluate(
        &mut self,
        t: &TraceData,
        id: &TraceKey,
        now: Instant,
        mut record: impl FnMut(usize, Decision),
    ) -> bool {
        let (mut sampled, mut not_sampled, mut inv_sampled, mut inv_not, mut dropped) =
            (false, false, false, false, false);
        let mut matched = false;
        for (i, (_, policy)) in self.list.iter_mut().enumerate() {
            let is_drop = matches!(policy, Policy::Drop(_));
            if matched && !is_drop {
                continue;
            }
            let d = policy.evaluate(t, id, now);
            record(i, d);
            match d {
                Decision::Sampled => {
                    sampled = true;
                    matched = self.sample_on_first_match;
                }
                Decision::NotSampled => not_sampled |= !is_drop,
                Decision::InvertSampled => inv_sampled = true,
                Decision::InvertNotSampled => inv_not = true,
                Decision::Dropped => dropped = true,
            }
        }
        !(dropped || inv_not) && (sampled || (inv_sampled && !not_sampled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail_sampling::store::Origin;
    use meshgate_pdata::attributes::{kv, kv_str};
    use meshgate_pdata::otlp::{KeyValue, Resource, Span, Status};
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Duration;

    /// A trace of `spans`, all with one resource of these attributes.
    fn trace(resource: Vec<KeyValue>, spans: Vec<Span>) -> TraceData {
        let o = Arc::new(Origin::new(
            Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            String::new(),
            None,
            String::new(),
        ));
        let mut t = TraceData::default();
        for s in spans {
            t.push(&o, s);
        }
        t
    }

    fn span(attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: attrs,
            ..Default::default()
        }
    }

    fn timed(start_ms: u64, end_ms: u64) -> Span {
        Span {
            start_time_unix_nano: 1_700_000_000_000_000_000 + start_ms * 1_000_000,
            end_time_unix_nano: 1_700_000_000_000_000_000 + end_ms * 1_000_000,
            ..span(vec![])
        }
    }

    fn with_status(code: StatusCode, attrs: Vec<KeyValue>) -> Span {
        Span {
            status: Some(Status {
                code: code as i32,
                message: String::new(),
            }),
            ..span(attrs)
        }
    }

    /// Compiles one top-level policy from its JSON.
    fn policy(p: serde_json::Value) -> Policy {
        let cfg = TailSamplingConfig::from_json(&json!({ "policies": [p] })).unwrap();
        Policies::compile(&cfg).unwrap().list.remove(0).1
    }

    fn compile_err(policies: serde_json::Value) -> String {
        let cfg = TailSamplingConfig::from_json(&json!({ "policies": policies })).unwrap();
        Policies::compile(&cfg).unwrap_err()
    }

    fn eval(p: &mut Policy, t: &TraceData) -> Decision {
        p.evaluate(t, &[7; 16], Instant::now())
    }

    use Decision::*;

    #[test]
    fn always_sample() {
        let mut p = policy(json!({"name": "a", "type": "always_sample"}));
        assert_eq!(eval(&mut p, &trace(vec![], vec![span(vec![])])), Sampled);
    }

    #[test]
    fn latency_is_first_start_to_last_end() {
        let mut p =
            policy(json!({"name": "l", "type": "latency", "latency": {"threshold_ms": 100}}));
        // Two short spans far apart make a long trace.
        let long = trace(vec![], vec![timed(0, 10), timed(140, 150)]);
        let short = trace(vec![], vec![timed(0, 10), timed(20, 99)]);
        assert_eq!(eval(&mut p, &long), Sampled);
        assert_eq!(eval(&mut p, &short), NotSampled);
        assert_eq!(eval(&mut p, &trace(vec![], vec![timed(0, 100)])), Sampled);
        let mut bounded = policy(json!({"name": "l", "type": "latency",
            "latency": {"threshold_ms": 100, "upper_threshold_ms": 200}}));
        assert_eq!(eval(&mut bounded, &long), Sampled);
        assert_eq!(
            eval(&mut bounded, &trace(vec![], vec![timed(0, 200)])),
            Sampled
        );
        assert_eq!(
            eval(&mut bounded, &trace(vec![], vec![timed(0, 201)])),
            NotSampled
        );
    }

    #[test]
    fn numeric_attribute_reads_envoy_strings_ints_doubles_and_resources() {
        let mut p = policy(json!({"name": "n", "type": "numeric_attribute",
            "numeric_attribute": {"key": "http.status_code", "min_value": 500, "max_value": 599}}));
        let envoy = trace(
            vec![],
            vec![
                span(vec![kv_str("http.status_code", "200")]),
                span(vec![kv_str("http.status_code", " 503")]),
            ],
        );
        assert_eq!(eval(&mut p, &envoy), Sampled);
        let sdk = trace(
            vec![],
            vec![span(vec![kv("http.status_code", Value::IntValue(500))])],
        );
        assert_eq!(eval(&mut p, &sdk), Sampled);
        let dbl = trace(
            vec![],
            vec![span(vec![kv(
                "http.status_code",
                Value::DoubleValue(599.0),
            )])],
        );
        assert_eq!(eval(&mut p, &dbl), Sampled);
        let ok = trace(
            vec![],
            vec![
                span(vec![kv_str("http.status_code", "404")]),
                span(vec![kv_str("http.status_code", "n/a")]),
            ],
        );
        assert_eq!(eval(&mut p, &ok), NotSampled);
        let on_resource = trace(vec![kv_str("http.status_code", "502")], vec![span(vec![])]);
        assert_eq!(eval(&mut p, &on_resource), Sampled);
        // Only a lower bound.
        let mut min_only = policy(json!({"name": "n", "type": "numeric_attribute",
            "numeric_attribute": {"key": "retries", "min_value": 3}}));
        let many = trace(
            vec![],
            vec![span(vec![kv("retries", Value::IntValue(1_000_000))])],
        );
        assert_eq!(eval(&mut min_only, &many), Sampled);
        // Inverted: a match vetoes, anything else votes to sample.
        let mut inv = policy(json!({"name": "n", "type": "numeric_attribute",
            "numeric_attribute": {"key": "http.status_code", "min_value": 500, "invert_match": true}}));
        assert_eq!(eval(&mut inv, &envoy), InvertNotSampled);
        assert_eq!(eval(&mut inv, &ok), InvertSampled);
        assert_eq!(
            eval(&mut inv, &trace(vec![], vec![span(vec![])])),
            InvertSampled
        );
    }

    #[test]
    fn string_attribute_exact_regex_text_form_and_invert() {
        let mut p = policy(json!({"name": "s", "type": "string_attribute",
            "string_attribute": {"key": "service.name", "values": ["reviews.default", "200"]}}));
        assert_eq!(
            eval(
                &mut p,
                &trace(
                    vec![kv_str("service.name", "reviews.default")],
                    vec![span(vec![])]
                )
            ),
            Sampled
        );
        assert_eq!(
            eval(
                &mut p,
                &trace(vec![kv_str("service.name", "reviews")], vec![span(vec![])])
            ),
            NotSampled
        );
        // Exact means exact: no substring match.
        assert_eq!(
            eval(
                &mut p,
                &trace(
                    vec![],
                    vec![span(vec![kv_str("service.name", "reviews.default.x")])]
                )
            ),
            NotSampled
        );
        // An integer matches by its text form.
        assert_eq!(
            eval(
                &mut p,
                &trace(
                    vec![],
                    vec![span(vec![kv("service.name", Value::IntValue(200))])]
                )
            ),
            Sampled
        );

        let mut re = policy(json!({"name": "s", "type": "string_attribute",
            "string_attribute": {"key": "url.path", "values": ["^/health", "^/metrics$"],
                "enabled_regex_matching": true, "cache_max_size": 2}}));
        let health = trace(vec![], vec![span(vec![kv_str("url.path", "/healthz")])]);
        let api = trace(vec![], vec![span(vec![kv_str("url.path", "/api/metrics")])]);
        for _ in 0..3 {
            // Repeated, so cached results are exercised and the cache is cleared when full.
            assert_eq!(eval(&mut re, &health), Sampled);
            assert_eq!(eval(&mut re, &api), NotSampled);
            assert_eq!(
                eval(
                    &mut re,
                    &trace(vec![], vec![span(vec![kv_str("url.path", "/metrics")])])
                ),
                Sampled
            );
        }
        if let Policy::String {
            matcher: StringMatcher::Regex { cache, .. },
            ..
        } = &re
        {
            assert!(cache.len() <= 2);
        } else {
            panic!("regex matcher expected");
        }

        let mut inv = policy(json!({"name": "s", "type": "string_attribute",
            "string_attribute": {"key": "url.path", "values": ["/health"], "invert_match": true}}));
        assert_eq!(
            eval(
                &mut inv,
                &trace(vec![], vec![span(vec![kv_str("url.path", "/health")])])
            ),
            InvertNotSampled
        );
        assert_eq!(eval(&mut inv, &api), InvertSampled);
        // Without the attribute at all, an inverted policy votes to sample.
        assert_eq!(
            eval(&mut inv, &trace(vec![], vec![span(vec![])])),
            InvertSampled
        );
    }

    #[test]
    fn boolean_attribute_reads_envoy_strings() {
        let mut p = policy(json!({"name": "b", "type": "boolean_attribute",
            "boolean_attribute": {"key": "error", "value": true}}));
        assert_eq!(
            eval(
                &mut p,
                &trace(vec![], vec![span(vec![kv_str("error", "true")])])
            ),
            Sampled
        );
        assert_eq!(
            eval(
                &mut p,
                &trace(vec![], vec![span(vec![kv_str("error", "TRUE")])])
            ),
            Sampled
        );
        assert_eq!(
            eval(
                &mut p,
                &trace(
                    vec![],
                    vec![span(vec![kv("error", Value::BoolValue(true))])]
                )
            ),
            Sampled
        );
        assert_eq!(
            eval(
                &mut p,
                &trace(vec![], vec![span(vec![kv_str("error", "false")])])
            ),
            NotSampled
        );
        assert_eq!(
            eval(
                &mut p,
                &trace(vec![], vec![span(vec![kv_str("error", "yes")])])
            ),
            NotSampled
        );
        assert_eq!(
            eval(
                &mut p,
                &trace(
                    vec![kv("error", Value::BoolValue(true))],
                    vec![span(vec![])]
                )
            ),
            Sampled
        );
        let mut inv = policy(json!({"name": "b", "type": "boolean_attribute",
            "boolean_attribute": {"key": "app.do_not_sample", "value": true, "invert_match": true}}));
        assert_eq!(
            eval(
                &mut inv,
                &trace(
                    vec![],
                    vec![span(vec![kv_str("app.do_not_sample", "true")])]
                )
            ),
            InvertNotSampled
        );
        assert_eq!(
            eval(&mut inv, &trace(vec![], vec![span(vec![])])),
            InvertSampled
        );
    }

    #[test]
    fn status_code_uses_the_mesh_failure_rule() {
        let mut p = policy(json!({"name": "e", "type": "status_code",
            "status_code": {"status_codes": ["ERROR"]}}));
        let explicit = trace(
            vec![],
            vec![
                with_status(StatusCode::Ok, vec![]),
                with_status(StatusCode::Error, vec![]),
            ],
        );
        assert_eq!(eval(&mut p, &explicit), Sampled);
        // Older Envoy: status UNSET, HTTP 503 as a string.
        let envoy = trace(
            vec![],
            vec![with_status(
                StatusCode::Unset,
                vec![kv_str("http.status_code", "503")],
            )],
        );
        assert_eq!(eval(&mut p, &envoy), Sampled);
        let fine = trace(
            vec![],
            vec![
                with_status(StatusCode::Unset, vec![kv_str("http.status_code", "404")]),
                span(vec![]),
            ],
        );
        assert_eq!(eval(&mut p, &fine), NotSampled);
        // An explicit OK wins over the attributes.
        let ok = trace(
            vec![],
            vec![with_status(
                StatusCode::Ok,
                vec![kv_str("http.status_code", "503")],
            )],
        );
        assert_eq!(eval(&mut p, &ok), NotSampled);
        let mut unset = policy(json!({"name": "u", "type": "status_code",
            "status_code": {"status_codes": ["UNSET", "OK"]}}));
        assert_eq!(eval(&mut unset, &fine), Sampled);
        assert_eq!(eval(&mut unset, &envoy), NotSampled);
        assert_eq!(eval(&mut unset, &ok), Sampled);
    }

    #[test]
    fn probabilistic_is_consistent_and_near_the_percentage() {
        let t = trace(vec![], vec![span(vec![])]);
        let now = Instant::now();
        let mut ten = policy(json!({"name": "p", "type": "probabilistic",
            "probabilistic": {"sampling_percentage": 10}}));
        let mut salted = policy(json!({"name": "p", "type": "probabilistic",
            "probabilistic": {"sampling_percentage": 10, "hash_salt": "tier-2"}}));
        let (mut hits, mut salted_hits, mut both) = (0, 0, 0);
        for i in 0..20_000u64 {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&i.to_be_bytes());
            let a = ten.evaluate(&t, &id, now) == Sampled;
            assert_eq!(
                a,
                ten.evaluate(&t, &id, now) == Sampled,
                "same id, same decision"
            );
            let b = salted.evaluate(&t, &id, now) == Sampled;
            hits += a as u32;
            salted_hits += b as u32;
            both += (a && b) as u32;
        }
        assert!((1_700..2_300).contains(&hits), "{hits}");
        assert!((1_700..2_300).contains(&salted_hits), "{salted_hits}");
        // Different salts decide independently: about 1% are sampled by both.
        assert!(both < 400, "{both}");
        let mut all = policy(
            json!({"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 100}}),
        );
        let mut none = policy(
            json!({"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 0}}),
        );
        for i in 0..100u8 {
            assert_eq!(all.evaluate(&t, &[i; 16], now), Sampled);
            assert_eq!(none.evaluate(&t, &[i; 16], now), NotSampled);
        }
    }

    #[test]
    fn rate_limiting_counts_spans_per_second() {
        let mut p = policy(json!({"name": "r", "type": "rate_limiting",
            "rate_limiting": {"spans_per_second": 10}}));
        let four = trace(vec![], (0..4).map(|_| span(vec![])).collect());
        let t0 = Instant::now();
        let id = [1; 16];
        assert_eq!(p.evaluate(&four, &id, t0), Sampled);
        assert_eq!(p.evaluate(&four, &id, t0), Sampled);
        // 8 of 10 used: a third 4-span trace does not fit this second.
        assert_eq!(p.evaluate(&four, &id, t0), NotSampled);
        // Half a second refills 5 spans.
        assert_eq!(
            p.evaluate(&four, &id, t0 + Duration::from_millis(500)),
            Sampled
        );
        assert_eq!(
            p.evaluate(&four, &id, t0 + Duration::from_millis(500)),
            NotSampled
        );
        // The bucket never holds more than a second's worth.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.evaluate(&four, &id, later), Sampled);
        assert_eq!(p.evaluate(&four, &id, later), Sampled);
        assert_eq!(p.evaluate(&four, &id, later), NotSampled);
        // A trace bigger than a second's worth never fits.
        let big = trace(vec![], (0..11).map(|_| span(vec![])).collect());
        assert_eq!(
            p.evaluate(&big, &id, later + Duration::from_secs(60)),
            NotSampled
        );
    }

    #[test]
    fn span_count_range() {
        let mut p = policy(json!({"name": "c", "type": "span_count",
            "span_count": {"min_spans": 2, "max_spans": 3}}));
        let n = |k| trace(vec![], (0..k).map(|_| span(vec![])).collect());
        assert_eq!(eval(&mut p, &n(1)), NotSampled);
        assert_eq!(eval(&mut p, &n(2)), Sampled);
        assert_eq!(eval(&mut p, &n(3)), Sampled);
        assert_eq!(eval(&mut p, &n(4)), NotSampled);
        let mut open =
            policy(json!({"name": "c", "type": "span_count", "span_count": {"min_spans": 2}}));
        assert_eq!(eval(&mut open, &n(400)), Sampled);
    }

    #[test]
    fn trace_state_members() {
        let mut p = policy(json!({"name": "t", "type": "trace_state",
            "trace_state": {"key": "tenant", "values": ["gold", "silver"]}}));
        let with = |ts: &str| {
            trace(
                vec![],
                vec![
                    span(vec![]),
                    Span {
                        trace_state: ts.into(),
                        ..span(vec![])
                    },
                ],
            )
        };
        assert_eq!(eval(&mut p, &with("ot=th:8, tenant=gold")), Sampled);
        assert_eq!(eval(&mut p, &with("tenant=silver")), Sampled);
        assert_eq!(eval(&mut p, &with("tenant=bronze,other=gold")), NotSampled);
        assert_eq!(eval(&mut p, &with("")), NotSampled);
        assert_eq!(eval(&mut p, &with("mytenant=gold")), NotSampled);
    }

    #[test]
    fn and_needs_every_sub_policy() {
        let mut p = policy(
            json!({"name": "a", "type": "and", "and": {"and_sub_policy": [
                {"name": "svc", "type": "string_attribute", "string_attribute": {"key": "service.name", "values": ["reviews"]}},
                {"name": "slow", "type": "latency", "latency": {"threshold_ms": 100}},
                {"name": "not-health", "type": "string_attribute", "string_attribute": {"key": "url.path", "values": ["/health"], "invert_match": true}}
            ]}}),
        );
        let res = vec![kv_str("service.name", "reviews")];
        assert_eq!(
            eval(&mut p, &trace(res.clone(), vec![timed(0, 150)])),
            Sampled
        );
        assert_eq!(
            eval(&mut p, &trace(res.clone(), vec![timed(0, 50)])),
            NotSampled
        );
        assert_eq!(
            eval(
                &mut p,
                &trace(vec![kv_str("service.name", "ratings")], vec![timed(0, 150)])
            ),
            NotSampled
        );
        let health = Span {
            attributes: vec![kv_str("url.path", "/health")],
            ..timed(0, 150)
        };
        // Inside `and`, an inverted match is a plain no.
        assert_eq!(eval(&mut p, &trace(res, vec![health])), NotSampled);
    }

    #[test]
    fn drop_matches_like_and_but_votes_dropped() {
        let mut p = policy(
            json!({"name": "d", "type": "drop", "drop": {"drop_sub_policy": [
                {"name": "health", "type": "string_attribute", "string_attribute": {"key": "url.path", "values": ["^/health"], "enabled_regex_matching": true}}
            ]}}),
        );
        assert_eq!(
            eval(
                &mut p,
                &trace(vec![], vec![span(vec![kv_str("url.path", "/healthz")])])
            ),
            Dropped
        );
        assert_eq!(
            eval(
                &mut p,
                &trace(vec![], vec![span(vec![kv_str("url.path", "/api")])])
            ),
            NotSampled
        );
    }

    #[test]
    fn composite_allocates_rates_in_order() {
        // 100 spans/s: errors get 50%, everything else shares the remaining 50%.
        let mut p = policy(json!({"name": "c", "type": "composite", "composite": {
            "max_total_spans_per_second": 100,
            "policy_order": ["errors", "rest"],
            "composite_sub_policy": [
                {"name": "rest", "type": "always_sample"},
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
            ],
            "rate_allocation": [{"policy": "errors", "percent": 50}]
        }}));
        let ten = |failed: bool| {
            trace(
                vec![],
                (0..10)
                    .map(|_| {
                        with_status(
                            if failed {
                                StatusCode::Error
                            } else {
                                StatusCode::Ok
                            },
                            vec![],
                        )
                    })
                    .collect(),
            )
        };
        let (err, ok) = (ten(true), ten(false));
        let t0 = Instant::now();
        let id = [3; 16];
        let mut sampled = |t: &TraceData, at: Instant| p.evaluate(t, &id, at) == Sampled;
        // Errors first: 5 traces of 10 spans fill their 50 spans/s.
        for _ in 0..5 {
            assert!(sampled(&err, t0));
        }
        // A 6th error trace falls through to `rest`, which has its own 50.
        for _ in 0..5 {
            assert!(sampled(&err, t0));
        }
        // Both shares are used up: nothing more this second, errors or not.
        assert!(!sampled(&err, t0));
        assert!(!sampled(&ok, t0));
        // One second later both shares are back; plain traces can only use `rest`.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..5 {
            assert!(sampled(&ok, t1));
        }
        assert!(!sampled(&ok, t1));
        assert!(sampled(&err, t1), "the errors share is still free");
    }

    #[test]
    fn composite_total_caps_the_shares() {
        // Two sub-policies with 60% + 40% allocations of 10 spans/s: the total holds even
        // when evaluation order gives the first one everything it can take.
        let mut p = policy(json!({"name": "c", "type": "composite", "composite": {
            "max_total_spans_per_second": 10,
            "composite_sub_policy": [
                {"name": "a", "type": "always_sample"},
                {"name": "b", "type": "always_sample"}
            ],
            "rate_allocation": [{"policy": "a", "percent": 60}, {"policy": "b", "percent": 40}]
        }}));
        let one = trace(vec![], vec![span(vec![])]);
        let t0 = Instant::now();
        let n = (0..100)
            .filter(|_| p.evaluate(&one, &[1; 16], t0) == Sampled)
            .count();
        assert_eq!(n, 10);
    }

    /// Runs the top-level combination over policies given as JSON.
    fn decide(policies: serde_json::Value, t: &TraceData) -> (bool, Vec<Decision>) {
        let cfg = TailSamplingConfig::from_json(&json!({ "policies": policies })).unwrap();
        let mut ps = Policies::compile(&cfg).unwrap();
        let mut votes = Vec::new();
        let s = ps.evaluate(t, &[1; 16], Instant::now(), |_, d| votes.push(d));
        (s, votes)
    }

    #[test]
    fn combination_rule() {
        let failed = trace(
            vec![],
            vec![span(vec![
                kv_str("error", "true"),
                kv_str("url.path", "/health"),
            ])],
        );
        let plain = trace(vec![], vec![span(vec![kv_str("url.path", "/api")])]);
        let errors = json!({"name": "errors", "type": "boolean_attribute", "boolean_attribute": {"key": "error", "value": true}});
        let drop_health = json!({"name": "no-health", "type": "drop", "drop": {"drop_sub_policy": [
            {"name": "h", "type": "string_attribute", "string_attribute": {"key": "url.path", "values": ["/health"]}}]}});
        let not_health = json!({"name": "not-health", "type": "string_attribute",
            "string_attribute": {"key": "url.path", "values": ["/health"], "invert_match": true}});
        let never = json!({"name": "never", "type": "probabilistic", "probabilistic": {"sampling_percentage": 0}});

        // Sampled by one policy.
        assert_eq!(
            decide(json!([errors, never]), &failed),
            (true, vec![Sampled, NotSampled])
        );
        // A drop policy wins over a sample vote.
        assert_eq!(
            decide(json!([errors, drop_health]), &failed),
            (false, vec![Sampled, Dropped])
        );
        // A non-matching drop policy has no say.
        assert_eq!(
            decide(json!([drop_health, not_health]), &plain),
            (true, vec![NotSampled, InvertSampled])
        );
        // An inverted match vetoes a sample vote.
        assert_eq!(
            decide(json!([errors, not_health]), &failed),
            (false, vec![Sampled, InvertNotSampled])
        );
        // An inverted "sample" loses to a plain "not sampled".
        assert_eq!(
            decide(json!([not_health, never]), &plain),
            (false, vec![InvertSampled, NotSampled])
        );
        // Nothing voted to sample.
        assert_eq!(decide(json!([errors]), &plain), (false, vec![NotSampled]));
    }

    #[test]
    fn sample_on_first_match_stops_early_but_drop_still_vetoes() {
        let t = trace(vec![], vec![span(vec![kv_str("url.path", "/health")])]);
        let cfg = TailSamplingConfig::from_json(&json!({"sample_on_first_match": true, "policies": [
            {"name": "all", "type": "always_sample"},
            {"name": "limit", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 1}},
            {"name": "d", "type": "drop", "drop": {"drop_sub_policy": [
                {"name": "h", "type": "string_attribute", "string_attribute": {"key": "url.path", "values": ["/health"]}}]}}
        ]}))
        .unwrap();
        let mut ps = Policies::compile(&cfg).unwrap();
        let mut seen = Vec::new();
        let s = ps.evaluate(&t, &[1; 16], Instant::now(), |i, d| seen.push((i, d)));
        assert!(!s);
        assert_eq!(seen, vec![(0, Sampled), (2, Dropped)]);
        assert_eq!(ps.names().collect::<Vec<_>>(), ["all", "limit", "d"]);
    }

    #[test]
    fn compile_errors_name_the_key() {
        let e = compile_err(
            json!([{"name": "a", "type": "always_sample"}, {"name": "a", "type": "always_sample"}]),
        );
        assert_eq!(
            e,
            "policies[1].name: `a` is already the name of policies[0]; policy names must be unique"
        );
        let e = compile_err(
            json!([{"name": "s", "type": "string_attribute", "numeric_attribute": {"key": "k", "min_value": 1}}]),
        );
        assert_eq!(
            e,
            "policies[0].numeric_attribute: does not apply to a policy of type `string_attribute` (its options go under `string_attribute`)"
        );
        let e = compile_err(json!([{"name": "s", "type": "string_attribute"}]));
        assert_eq!(
            e,
            "policies[0]: a `string_attribute` policy needs its options under `string_attribute`"
        );
        let e = compile_err(json!([{"name": "s", "type": "string_attribute",
            "string_attribute": {"key": "k", "values": ["ok", "(unclosed"], "enabled_regex_matching": true}}]));
        assert!(
            e.starts_with("policies[0].string_attribute.values[1]: invalid regex `(unclosed`"),
            "{e}"
        );
        let e = compile_err(
            json!([{"name": "s", "type": "string_attribute", "string_attribute": {"key": "k", "values": []}}]),
        );
        assert_eq!(
            e,
            "policies[0].string_attribute.values: needs at least one value"
        );
        let e = compile_err(
            json!([{"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "k"}}]),
        );
        assert_eq!(
            e,
            "policies[0].numeric_attribute: needs `min_value`, `max_value` or both"
        );
        let e = compile_err(
            json!([{"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "k", "min_value": 5, "max_value": 1}}]),
        );
        assert_eq!(
            e,
            "policies[0].numeric_attribute.min_value (5) must not be greater than max_value (1)"
        );
        let e = compile_err(
            json!([{"name": "l", "type": "latency", "latency": {"threshold_ms": 500, "upper_threshold_ms": 100}}]),
        );
        assert!(e.starts_with("policies[0].latency.upper_threshold_ms (100) must be greater than threshold_ms (500)"), "{e}");
        let e = compile_err(
            json!([{"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 101}}]),
        );
        assert_eq!(
            e,
            "policies[0].probabilistic.sampling_percentage: must be between 0 and 100, got 101"
        );
        let e = compile_err(
            json!([{"name": "r", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 0}}]),
        );
        assert_eq!(
            e,
            "policies[0].rate_limiting.spans_per_second: must be greater than 0"
        );
        let e = compile_err(
            json!([{"name": "c", "type": "span_count", "span_count": {"min_spans": 5, "max_spans": 2}}]),
        );
        assert!(
            e.starts_with("policies[0].span_count.max_spans (2) must be at least min_spans (5)"),
            "{e}"
        );
        let e = compile_err(
            json!([{"name": "s", "type": "status_code", "status_code": {"status_codes": []}}]),
        );
        assert!(
            e.starts_with("policies[0].status_code.status_codes: needs at least one"),
            "{e}"
        );
        let e = compile_err(
            json!([{"name": "t", "type": "trace_state", "trace_state": {"key": "", "values": ["x"]}}]),
        );
        assert_eq!(e, "policies[0].trace_state.key: must not be empty");
        let e = compile_err(json!([{"name": " ", "type": "always_sample"}]));
        assert_eq!(e, "policies[0].name: must not be empty");
        let e = compile_err(
            json!([{"name": "a", "type": "and", "and": {"and_sub_policy": [
            {"name": "b", "type": "and", "and": {"and_sub_policy": [{"name": "c", "type": "always_sample"}]}}]}}]),
        );
        assert_eq!(
            e,
            "policies[0].and.and_sub_policy[0].type: `and` policies cannot be nested in an `and` policy"
        );
        let e = compile_err(json!([{"name": "a", "type": "and", "and": {"and_sub_policy": []}}]));
        assert_eq!(
            e,
            "policies[0].and.and_sub_policy: needs at least one policy"
        );
        let e = compile_err(
            json!([{"name": "a", "type": "always_sample", "latency": {"threshold_ms": 1}}]),
        );
        assert_eq!(
            e,
            "policies[0].latency: does not apply to a policy of type `always_sample` (it has no options)"
        );
    }

    #[test]
    fn composite_config_errors() {
        let comp = |extra: serde_json::Value| {
            let mut c = json!({"max_total_spans_per_second": 100, "composite_sub_policy": [
                {"name": "a", "type": "always_sample"}, {"name": "b", "type": "always_sample"}]});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            compile_err(json!([{"name": "c", "type": "composite", "composite": c}]))
        };
        assert_eq!(
            comp(json!({"policy_order": ["a", "x"]})),
            "policies[0].composite.policy_order[1]: no sub-policy named `x` in composite_sub_policy"
        );
        assert_eq!(
            comp(json!({"policy_order": ["a", "a"]})),
            "policies[0].composite.policy_order[1]: `a` is listed twice"
        );
        assert_eq!(
            comp(json!({"policy_order": ["b"]})),
            "policies[0].composite.policy_order: sub-policy `a` is missing; list every sub-policy once"
        );
        assert_eq!(
            comp(json!({"rate_allocation": [{"policy": "z", "percent": 10}]})),
            "policies[0].composite.rate_allocation[0].policy: no sub-policy named `z` in composite_sub_policy"
        );
        assert_eq!(
            comp(json!({"rate_allocation": [{"policy": "a", "percent": 0}]})),
            "policies[0].composite.rate_allocation[0].percent: must be greater than 0 and at most 100, got 0"
        );
        assert_eq!(
            comp(
                json!({"rate_allocation": [{"policy": "a", "percent": 70}, {"policy": "b", "percent": 40}]})
            ),
            "policies[0].composite.rate_allocation: the percentages add up to 110, more than 100"
        );
        assert!(
            comp(json!({"rate_allocation": [{"policy": "a", "percent": 100}]}))
                .contains("leaving nothing for sub-policy `b`")
        );
        assert!(comp(json!({"rate_allocation": [{"policy": "a", "percent": 10}, {"policy": "a", "percent": 10}]}))
            .contains("`a` already has an allocation"));
        assert_eq!(
            comp(json!({"max_total_spans_per_second": 0})),
            "policies[0].composite.max_total_spans_per_second: must be greater than 0"
        );
        let e = compile_err(json!([{"name": "c", "type": "composite", "composite": {
            "max_total_spans_per_second": 1, "composite_sub_policy": [
                {"name": "d", "type": "drop", "drop": {"drop_sub_policy": [{"name": "x", "type": "always_sample"}]}}]}}]));
        assert_eq!(
            e,
            "policies[0].composite.composite_sub_policy[0].type: `drop` policies cannot be nested in a `composite` policy"
        );
    }
}
