//! The `tail_sampling` config: the OpenTelemetry Collector's keys and policy shapes
//! (`policies: [{name, type, <type>: {...}}]`), plus meshgate's early decision after the
//! root span (`decision_wait_after_root`) and memory bound (`max_memory`).
//!
//! Parsing reports the key path of a bad policy (`policies[2].string_attribute: ...`), which
//! serde alone cannot do for list elements.

use meshgate_config::{ByteSize, DurationValue};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Config of the `tail_sampling` processor.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TailSamplingConfig {
    /// Longest a trace is held, counted from its first span, before it is decided with the
    /// spans received so far. Must be greater than zero. Default: `30s`.
    pub decision_wait: DurationValue,
    /// meshgate's early decision: once a trace's root span (a span without a parent) has
    /// arrived, the trace is decided this long after it, if that is earlier than
    /// `decision_wait`. Proxies and SDKs export a span when it ends and the root ends last,
    /// so this grace only has to cover export delays (Envoy flushes every 5 s or 5 spans).
    /// Spans arriving after the decision follow it through the decision caches. `0s`
    /// disables early decisions (every trace waits the full `decision_wait`, as in the
    /// collector). Default: `5s`.
    pub decision_wait_after_root: DurationValue,
    /// Most traces held at once. When a new trace arrives and this many are pending, the
    /// oldest pending trace is decided right away with the spans it has (counted in
    /// `meshgate_processor_tail_sampling_evicted_traces_total{reason="num_traces"}`). Must be
    /// greater than zero. Default: `50000`.
    pub num_traces: usize,
    /// Expected number of new traces per second; only sizes the trace table up front
    /// (`0`: grow as needed). Default: `0`.
    pub expected_new_traces_per_sec: usize,
    /// Bound on the estimated memory of pending traces (spans, their resources and scopes,
    /// bookkeeping). While above it, the oldest pending traces are decided right away with
    /// the spans they have (counted in
    /// `meshgate_processor_tail_sampling_evicted_traces_total{reason="max_memory"}`); nothing
    /// is dropped without a decision. Sizing: an Envoy sidecar span takes about 2.3 KB held
    /// (about 2.8 times its protobuf size), so budget spans per second times the decision
    /// latency (`decision_wait_after_root` plus export delays) times 2.3 KB. Must be greater
    /// than zero. Default: `256MiB`.
    pub max_memory: ByteSize,
    /// Caches of decided trace ids, so spans arriving after their trace was decided follow
    /// the decision (sampled: passed on at once; not sampled: dropped). Default: both
    /// `100000`.
    pub decision_cache: DecisionCacheConfig,
    /// Stop evaluating policies at the first one that votes to sample; `drop` policies are
    /// still all evaluated and still veto. Saves work when rate-limited policies come last.
    /// Default: `false`.
    pub sample_on_first_match: bool,
    /// At shutdown, drop the pending traces instead of deciding them with the spans they
    /// have (dropped spans are counted with `reason="shutdown"`). Default: `false`.
    pub drop_pending_traces_on_shutdown: bool,
    /// The sampling policies, evaluated for every trace. The trace is sampled when a policy
    /// votes to sample (or an inverted policy matches and no policy voted not to sample),
    /// unless a `drop` policy matched or an inverted policy (`invert_match`) voted not to
    /// sample. At least one is required; names must be unique.
    pub policies: Vec<PolicyConfig>,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        Self {
            decision_wait: DurationValue(Duration::from_secs(30)),
            decision_wait_after_root: DurationValue(Duration::from_secs(5)),
            num_traces: 50_000,
            expected_new_traces_per_sec: 0,
            max_memory: ByteSize(256 << 20),
            decision_cache: DecisionCacheConfig::default(),
            sample_on_first_match: false,
            drop_pending_traces_on_shutdown: false,
            policies: Vec::new(),
        }
    }
}

/// Sizes of the decided-trace-id caches (first in, first out).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Trace ids of sampled traces remembered; later spans of them are passed on at once.
    /// About 50 bytes each, outside `max_memory`. `0` disables the cache (late spans then
    /// start a new pending trace). Default: `100000`.
    pub sampled_cache_size: usize,
    /// Trace ids of traces not sampled remembered; later spans of them are dropped. About 50
    /// bytes each, outside `max_memory`. `0` disables the cache. Default: `100000`.
    pub non_sampled_cache_size: usize,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        Self {
            sampled_cache_size: 100_000,
            non_sampled_cache_size: 100_000,
        }
    }
}

/// One policy: a `name`, a `type` and the section of that type (`always_sample` has none).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name of the policy, unique among its siblings; the `policy` label of
    /// `meshgate_processor_tail_sampling_policy_decisions_total`.
    pub name: String,
    /// The policy type; its section (same name) holds its options.
    #[serde(rename = "type")]
    pub kind: PolicyType,
    /// Options of a `latency` policy.
    pub latency: Option<LatencyConfig>,
    /// Options of a `numeric_attribute` policy.
    pub numeric_attribute: Option<NumericAttributeConfig>,
    /// Options of a `string_attribute` policy.
    pub string_attribute: Option<StringAttributeConfig>,
    /// Options of a `boolean_attribute` policy.
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    /// Options of a `status_code` policy.
    pub status_code: Option<StatusCodeConfig>,
    /// Options of a `probabilistic` policy.
    pub probabilistic: Option<ProbabilisticConfig>,
    /// Options of a `rate_limiting` policy.
    pub rate_limiting: Option<RateLimitingConfig>,
    /// Options of a `span_count` policy.
    pub span_count: Option<SpanCountConfig>,
    /// Options of a `trace_state` policy.
    pub trace_state: Option<TraceStateConfig>,
    /// Options of an `and` policy.
    pub and: Option<AndConfig>,
    /// Options of a `drop` policy.
    pub drop: Option<DropConfig>,
    /// Options of a `composite` policy.
    pub composite: Option<CompositeConfig>,
}

/// Policy types (the collector's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    /// Samples every trace.
    AlwaysSample,
    /// Samples traces lasting at least `threshold_ms` (and at most `upper_threshold_ms`).
    Latency,
    /// Samples traces with a numeric attribute in a range.
    NumericAttribute,
    /// Samples traces with a string attribute equal to (or matching) one of some values.
    StringAttribute,
    /// Samples traces with a boolean attribute of a given value.
    BooleanAttribute,
    /// Samples traces with a span of one of some status codes.
    StatusCode,
    /// Samples a share of traces, by a hash of the trace id.
    Probabilistic,
    /// Samples traces while the sampled spans stay under a rate.
    RateLimiting,
    /// Samples traces whose span count is in a range.
    SpanCount,
    /// Samples traces with a W3C trace state entry of some values.
    TraceState,
    /// Samples traces every sub-policy samples.
    And,
    /// Drops (never samples) traces every sub-policy samples.
    Drop,
    /// Samples by sub-policies in order, each within its share of a total span rate.
    Composite,
}

impl PolicyType {
    /// The config name, also the name of the type's section.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::AlwaysSample => "always_sample",
            PolicyType::Latency => "latency",
            PolicyType::NumericAttribute => "numeric_attribute",
            PolicyType::StringAttribute => "string_attribute",
            PolicyType::BooleanAttribute => "boolean_attribute",
            PolicyType::StatusCode => "status_code",
            PolicyType::Probabilistic => "probabilistic",
            PolicyType::RateLimiting => "rate_limiting",
            PolicyType::SpanCount => "span_count",
            PolicyType::TraceState => "trace_state",
            PolicyType::And => "and",
            PolicyType::Drop => "drop",
            PolicyType::Composite => "composite",
        }
    }
}

impl PolicyConfig {
    /// The sections given, by name (to check that exactly the one of `type` is there).
    pub(crate) fn sections(&self) -> Vec<&'static str> {
        let given = [
            ("latency", self.latency.is_some()),
            ("numeric_attribute", self.numeric_attribute.is_some()),
            ("string_attribute", self.string_attribute.is_some()),
            ("boolean_attribute", self.boolean_attribute.is_some()),
            ("status_code", self.status_code.is_some()),
            ("probabilistic", self.probabilistic.is_some()),
            ("rate_limiting", self.rate_limiting.is_some()),
            ("span_count", self.span_count.is_some()),
            ("trace_state", self.trace_state.is_some()),
            ("and", self.and.is_some()),
            ("drop", self.drop.is_some()),
            ("composite", self.composite.is_some()),
        ];
        given.iter().filter(|(_, g)| *g).map(|(n, _)| *n).collect()
    }
}

/// `latency`: the trace's duration is from its earliest span start to its latest span end.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Lowest trace duration sampled, in milliseconds (inclusive). Required.
    pub threshold_ms: u64,
    /// Highest trace duration sampled, in milliseconds (inclusive); `0` means no upper
    /// bound. When non-zero it must be greater than `threshold_ms`. Default: `0`.
    #[serde(default)]
    pub upper_threshold_ms: u64,
}

/// `numeric_attribute`: a span or resource attribute holding a number in a range. Integer,
/// double and numeric string values (Envoy sends `http.status_code` as `"503"`) all count.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    /// Attribute key, looked up on every span and resource of the trace. Required.
    pub key: String,
    /// Lowest value that matches (inclusive); no lower bound when absent. At least one of
    /// `min_value` and `max_value` is required.
    #[serde(default)]
    pub min_value: Option<f64>,
    /// Highest value that matches (inclusive); no upper bound when absent.
    #[serde(default)]
    pub max_value: Option<f64>,
    /// Inverts the policy: traces with a matching value are not sampled (this veto beats
    /// other policies' votes, as in the collector), all others are. Default: `false`.
    #[serde(default)]
    pub invert_match: bool,
}

/// `string_attribute`: a span or resource attribute equal to (or matching) one of `values`.
/// Values are compared in their text form, so `"200"` also matches the integer `200`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    /// Attribute key, looked up on every span and resource of the trace. Required.
    pub key: String,
    /// Values (or, with `enabled_regex_matching`, unanchored regular expressions) that
    /// match. At least one is required.
    pub values: Vec<String>,
    /// Treat `values` as regular expressions. Default: `false`.
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// With regular expressions, remember the result for up to this many distinct attribute
    /// values (the memory is cleared when full). `0` disables the cache. Default: `0`.
    #[serde(default)]
    pub cache_max_size: usize,
    /// Inverts the policy: traces with a matching value are not sampled (a veto, as in the
    /// collector), all others (including traces without the attribute) are. Default:
    /// `false`.
    #[serde(default)]
    pub invert_match: bool,
}

/// `boolean_attribute`: a span or resource attribute with a boolean value. The strings
/// `"true"` and `"false"` (any case; what Envoy sends) count as booleans.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    /// Attribute key, looked up on every span and resource of the trace. Required.
    pub key: String,
    /// The value that matches. Required.
    pub value: bool,
    /// Inverts the policy: traces with a matching value are not sampled (a veto, as in the
    /// collector), all others are. Default: `false`.
    #[serde(default)]
    pub invert_match: bool,
}

/// `status_code`: a span whose status is one of `status_codes`, read with the mesh rule
/// (`meshgate_pdata::mesh::effective_status`): an `UNSET` span with `error=true`, an HTTP
/// status of 500 or more or a non-zero gRPC status (integers or Envoy's strings) is `ERROR`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// Status codes that match: `OK`, `ERROR`, `UNSET`. At least one is required.
    pub status_codes: Vec<StatusCodeName>,
}

/// Span status codes as the collector writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum StatusCodeName {
    /// `STATUS_CODE_OK`.
    Ok,
    /// `STATUS_CODE_ERROR`, or `UNSET` with a failure under the mesh rule.
    Error,
    /// `STATUS_CODE_UNSET` without a failure under the mesh rule.
    Unset,
}

/// `probabilistic`: samples `sampling_percentage` percent of traces by a hash of the salt and
/// the trace id, so every instance with the same salt decides a trace the same way.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Salt mixed into the hash; give tiers that sample independently different salts.
    /// Default: empty.
    #[serde(default)]
    pub hash_salt: String,
    /// Percentage of traces sampled, from `0` to `100`. Required.
    pub sampling_percentage: f64,
}

/// `rate_limiting`: samples traces while the spans sampled by this policy stay within a rate
/// (a token bucket holding up to one second of spans, refilled continuously). A trace with
/// more spans than the bucket holds is never sampled by it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Spans per second. Must be greater than zero. Required.
    pub spans_per_second: u64,
}

/// `span_count`: the number of spans received for the trace is in a range (inclusive).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    /// Fewest spans. Default: `0`.
    #[serde(default)]
    pub min_spans: u64,
    /// Most spans; `0` means no upper bound. When non-zero it must be at least `min_spans`.
    /// Default: `0`.
    #[serde(default)]
    pub max_spans: u64,
}

/// `trace_state`: a span's W3C trace state has `key` with one of `values`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceStateConfig {
    /// Trace state key (list member key, e.g. `ot` or `vendor@tenant`). Required.
    pub key: String,
    /// Values that match (exactly). At least one is required.
    pub values: Vec<String>,
}

/// `and`: samples when every sub-policy votes to sample.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    /// The sub-policies (any type but `and`, `drop` and `composite`); evaluation stops at the
    /// first that does not sample. At least one is required.
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// `drop`: never samples a trace every sub-policy votes to sample; this beats every other
/// policy's vote.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// The sub-policies (any type but `and`, `drop` and `composite`). At least one is
    /// required.
    pub drop_sub_policy: Vec<PolicyConfig>,
}

/// `composite`: sub-policies are tried in `policy_order`; the first that votes to sample
/// samples the trace if its share of the rate and the total rate still have room for the
/// trace's spans (token buckets of one second). A sub-policy out of room passes the trace on
/// to the next.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// Most spans per second sampled by the whole composite policy. Must be greater than
    /// zero. Required.
    pub max_total_spans_per_second: u64,
    /// Names of the sub-policies in evaluation order; each sub-policy exactly once. Empty:
    /// the order of `composite_sub_policy`. Default: empty.
    #[serde(default)]
    pub policy_order: Vec<String>,
    /// The sub-policies (any type but `drop` and `composite`). At least one is required.
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Shares of `max_total_spans_per_second` by sub-policy name, in percent; they may sum
    /// to at most 100. Sub-policies without one share what is left equally (so a last
    /// `always_sample` takes the remaining capacity). Default: none (equal shares).
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocationConfig>,
}

/// A sub-policy's share of a composite policy's rate.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateAllocationConfig {
    /// Name of a sub-policy in `composite_sub_policy`.
    pub policy: String,
    /// Its share of `max_total_spans_per_second`, in percent (greater than 0, at most 100).
    pub percent: f64,
}

/// Collector policy types meshgate does not implement, rejected by name.
const UNSUPPORTED_TYPES: [(&str, &str); 3] = [
    (
        "ottl_condition",
        "OTTL is not supported; use string_attribute, numeric_attribute or boolean_attribute",
    ),
    (
        "bytes_limiting",
        "use rate_limiting (spans per second) instead",
    ),
    (
        "trace_flags",
        "meshgate receives sampled spans only from proxies that honour the flag; use \
         probabilistic or always_sample",
    ),
];

/// Where sub-policies live in a policy: (section, list key).
const SUB_POLICY_LISTS: [(&str, &str); 3] = [
    ("and", "and_sub_policy"),
    ("drop", "drop_sub_policy"),
    ("composite", "composite_sub_policy"),
];

impl TailSamplingConfig {
    /// Parses a config body, naming the key path of a bad policy in the error.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        if let Some(list) = value.get("policies").and_then(Value::as_array) {
            reject_unsupported(list, "policies")?;
        }
        serde_json::from_value::<TailSamplingConfig>(value.clone()).map_err(|e| {
            value
                .get("policies")
                .and_then(Value::as_array)
                .and_then(|list| locate(list, "policies"))
                .unwrap_or_else(|| e.to_string())
        })
    }

    /// Checks the top-level options (policies are checked when they are compiled).
    pub fn validate(&self) -> Result<(), String> {
        if self.decision_wait.0.is_zero() {
            return Err("`decision_wait` must be greater than 0s".into());
        }
        if self.num_traces == 0 {
            return Err("`num_traces` must be greater than 0".into());
        }
        if self.max_memory.0 == 0 {
            return Err("`max_memory` must be greater than 0".into());
        }
        if self.policies.is_empty() {
            return Err("`policies` needs at least one policy, e.g. \
                 `[{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]`"
                .into());
        }
        Ok(())
    }
}

fn reject_unsupported(list: &[Value], path: &str) -> Result<(), String> {
    for (i, p) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
        if let Some((_, hint)) = UNSUPPORTED_TYPES.iter().find(|(n, _)| *n == t) {
            return Err(format!(
                "{at}.type: policy type `{t}` is not supported by meshgate ({hint})"
            ));
        }
        for (section, key) in SUB_POLICY_LISTS {
            if let Some(sub) = p
                .pointer(&format!("/{section}/{key}"))
                .and_then(Value::as_array)
            {
                reject_unsupported(sub, &format!("{at}.{section}.{key}"))?;
            }
        }
    }
    Ok(())
}

/// Finds the first policy (depth first) that does not parse and names its path.
fn locate(list: &[Value], path: &str) -> Option<String> {
    for (i, p) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        for (section, key) in SUB_POLICY_LISTS {
            let sub = p
                .pointer(&format!("/{section}/{key}"))
                .and_then(Value::as_array);
            if let Some(e) = sub.and_then(|sub| locate(sub, &format!("{at}.{section}.{key}"))) {
                return Some(e);
            }
        }
        if let Some(obj) = p.as_object() {
            for (section, v) in obj {
                if let Some(e) = section_error(section, v) {
                    return Some(format!("{at}.{section}: {e}"));
                }
            }
        }
        if let Err(e) = serde_json::from_value::<PolicyConfig>(p.clone()) {
            return Some(format!("{at}: {e}"));
        }
    }
    None
}

/// The parse error of one policy section, if it is a section and it does not parse.
fn section_error(section: &str, v: &Value) -> Option<serde_json::Error> {
    fn check<T: serde::de::DeserializeOwned>(v: &Value) -> Option<serde_json::Error> {
        serde_json::from_value::<T>(v.clone()).err()
    }
    match section {
        "latency" => check::<LatencyConfig>(v),
        "numeric_attribute" => check::<NumericAttributeConfig>(v),
        "string_attribute" => check::<StringAttributeConfig>(v),
        "boolean_attribute" => check::<BooleanAttributeConfig>(v),
        "status_code" => check::<StatusCodeConfig>(v),
        "probabilistic" => check::<ProbabilisticConfig>(v),
        "rate_limiting" => check::<RateLimitingConfig>(v),
        "span_count" => check::<SpanCountConfig>(v),
        "trace_state" => check::<TraceStateConfig>(v),
        // Sub-policy lists were located above; what is left is the section's own keys.
        "and" => check::<AndConfig>(v),
        "drop" => check::<DropConfig>(v),
        "composite" => check::<CompositeConfig>(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let c = TailSamplingConfig::from_json(&json!({})).unwrap();
        assert_eq!(c.decision_wait.0, Duration::from_secs(30));
        assert_eq!(c.decision_wait_after_root.0, Duration::from_secs(5));
        assert_eq!(c.num_traces, 50_000);
        assert_eq!(c.expected_new_traces_per_sec, 0);
        assert_eq!(c.max_memory.0, 256 * 1024 * 1024);
        assert_eq!(c.decision_cache.sampled_cache_size, 100_000);
        assert_eq!(c.decision_cache.non_sampled_cache_size, 100_000);
        assert!(!c.sample_on_first_match);
        assert!(!c.drop_pending_traces_on_shutdown);
        assert!(c.policies.is_empty());
        assert!(
            c.validate()
                .unwrap_err()
                .contains("`policies` needs at least one")
        );
    }

    #[test]
    fn collector_shapes_parse() {
        let c = TailSamplingConfig::from_json(&json!({
            "decision_wait": "10s",
            "num_traces": 100,
            "expected_new_traces_per_sec": 10,
            "max_memory": "64MiB",
            "decision_cache": {"sampled_cache_size": 1000, "non_sampled_cache_size": 2000},
            "policies": [
                {"name": "a", "type": "always_sample"},
                {"name": "b", "type": "latency", "latency": {"threshold_ms": 5000, "upper_threshold_ms": 10000}},
                {"name": "c", "type": "numeric_attribute", "numeric_attribute": {"key": "k", "min_value": 50, "max_value": 100}},
                {"name": "d", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
                {"name": "e", "type": "status_code", "status_code": {"status_codes": ["ERROR", "UNSET"]}},
                {"name": "f", "type": "string_attribute", "string_attribute": {"key": "k", "values": ["v", "w*"], "enabled_regex_matching": true, "cache_max_size": 10}},
                {"name": "g", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 35}},
                {"name": "h", "type": "span_count", "span_count": {"min_spans": 2, "max_spans": 20}},
                {"name": "i", "type": "trace_state", "trace_state": {"key": "k", "values": ["v"]}},
                {"name": "j", "type": "boolean_attribute", "boolean_attribute": {"key": "k", "value": true}},
                {"name": "k", "type": "and", "and": {"and_sub_policy": [{"name": "x", "type": "always_sample"}]}},
                {"name": "l", "type": "drop", "drop": {"drop_sub_policy": [{"name": "x", "type": "always_sample"}]}},
                {"name": "m", "type": "composite", "composite": {
                    "max_total_spans_per_second": 1000,
                    "policy_order": ["x", "y"],
                    "composite_sub_policy": [{"name": "x", "type": "always_sample"}, {"name": "y", "type": "always_sample"}],
                    "rate_allocation": [{"policy": "x", "percent": 50}]
                }}
            ]
        }))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.policies.len(), 13);
        assert_eq!(c.max_memory.0, 64 << 20);
        assert_eq!(c.policies[12].kind, PolicyType::Composite);
    }

    #[test]
    fn errors_name_the_policy_path() {
        let e = TailSamplingConfig::from_json(&json!({"policies": [
            {"name": "a", "type": "always_sample"},
            {"name": "b", "type": "and", "and": {"and_sub_policy": [
                {"name": "x", "type": "string_attribute", "string_attribute": {"key": 5, "values": []}}
            ]}}
        ]}))
        .unwrap_err();
        assert!(
            e.starts_with("policies[1].and.and_sub_policy[0].string_attribute: invalid type"),
            "{e}"
        );
        let e = TailSamplingConfig::from_json(&json!({"policies": [{"type": "always_sample"}]}))
            .unwrap_err();
        assert_eq!(e, "policies[0]: missing field `name`");
        let e = TailSamplingConfig::from_json(
            &json!({"policies": [{"name": "a", "type": "sometimes"}]}),
        )
        .unwrap_err();
        assert!(
            e.starts_with("policies[0]: unknown variant `sometimes`"),
            "{e}"
        );
        let e = TailSamplingConfig::from_json(&json!({"policies": [
            {"name": "a", "type": "latency", "latency": {"threshold": 5}}
        ]}))
        .unwrap_err();
        assert!(
            e.starts_with("policies[0].latency: unknown field `threshold`"),
            "{e}"
        );
        let e = TailSamplingConfig::from_json(&json!({"policies": [
            {"name": "a", "type": "drop", "drop": {"drop_sub_policy": [{"name": "o", "type": "ottl_condition"}]}}
        ]}))
        .unwrap_err();
        assert!(
            e.starts_with(
                "policies[0].drop.drop_sub_policy[0].type: policy type `ottl_condition` is not supported"
            ),
            "{e}"
        );
        let e = TailSamplingConfig::from_json(&json!({"decision_wait": 5})).unwrap_err();
        assert!(e.contains("duration"), "{e}");
        let e = TailSamplingConfig::from_json(&json!({"policy": []})).unwrap_err();
        assert!(e.contains("unknown field `policy`"), "{e}");
    }

    #[test]
    fn top_level_validation() {
        let base = |extra: Value| {
            let mut v = json!({"policies": [{"name": "a", "type": "always_sample"}]});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            TailSamplingConfig::from_json(&v).unwrap().validate()
        };
        assert!(base(json!({})).is_ok());
        assert_eq!(
            base(json!({"decision_wait": "0s"})).unwrap_err(),
            "`decision_wait` must be greater than 0s"
        );
        assert_eq!(
            base(json!({"num_traces": 0})).unwrap_err(),
            "`num_traces` must be greater than 0"
        );
        assert_eq!(
            base(json!({"max_memory": "0"})).unwrap_err(),
            "`max_memory` must be greater than 0"
        );
        assert!(base(json!({"decision_wait_after_root": "0s"})).is_ok());
    }
}
