//! OTLP metrics → Prometheus series, as the OpenTelemetry specification's "Prometheus and
//! OpenMetrics Compatibility" section describes it. Shared by the `prometheusremotewrite`
//! and `prometheus` (scrape) exporters.
//!
//! - Metric names: characters outside `[a-zA-Z0-9_:]` become `_` (runs collapse to one), the
//!   unit is appended as a word (`s` → `_seconds`, `By` → `_bytes`, `m/s` →
//!   `_meters_per_second`, `{...}` annotations dropped, `1` → `_ratio` on gauges only) unless
//!   the name already holds it, monotonic sums end in `_total` (never twice), an optional
//!   namespace is prepended, a leading digit gets `_`.
//! - Label names: invalid characters become `_`, a leading digit gets `key_`, a single leading
//!   `_` gets `key`; attributes that collide after sanitising are joined with `;` (sorted by
//!   original key).
//! - `job` = `service.namespace/service.name` (or `service.name`), `instance` =
//!   `service.instance.id`; the scope adds `otel_scope_name` / `otel_scope_version`; the other
//!   resource attributes go on a `target_info` gauge (value 1) carrying `job`/`instance`, or on
//!   every series with `resource_to_telemetry_conversion`. Extra labels (`external_labels`,
//!   `const_labels`) are added to every series that does not already have the label.
//! - Gauges and non-monotonic sums → gauges; monotonic sums → counters; histograms →
//!   `_bucket{le}` (cumulative, `+Inf` = count), `_sum`, `_count`; summaries →
//!   `{quantile}`, `_sum`, `_count`. Exponential histograms have no classic Prometheus form
//!   (Remote Write 1.0 carries no native histograms): their points are dropped and counted.
//! - Delta sums and histograms are accumulated into cumulative ones per series (see
//!   [`DeltaStore`]); a point flagged `NoRecordedValue` becomes the Prometheus staleness marker.

use meshgate_pdata::attributes::value_to_string;
use meshgate_pdata::otlp::{
    ExportMetricsServiceRequest, HistogramDataPoint, KeyValue, NumberDataPoint, Resource, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::metrics::v1::SummaryDataPoint;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Prometheus staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
/// OTLP `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const FLAG_NO_RECORDED_VALUE: u32 = 1;
/// OTLP aggregation temporality values.
const TEMPORALITY_DELTA: i32 = 1;

/// Most delta series tracked for delta→cumulative conversion; points of new series beyond it
/// are dropped (counted) until idle series expire.
pub const MAX_DELTA_SERIES: usize = 500_000;

/// The Prometheus staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
    Summary,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// A metric family: its name (for counters including `_total`), type, help and unit word.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: String,
    /// The unit as it appears in the name (`seconds`, `bytes`...), empty if none.
    pub unit: String,
}

/// Sorted `(name, value)` label pairs, without `__name__`.
pub type Labels = Vec<(String, String)>;

/// A histogram in Prometheus form.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    /// `(upper bound, cumulative count)`, ending with `(+Inf, count)`.
    pub buckets: Vec<(f64, u64)>,
    pub sum: Option<f64>,
    pub count: u64,
}

/// A summary in Prometheus form.
#[derive(Debug, Clone, PartialEq)]
pub struct Summ {
    /// `(quantile, value)`.
    pub quantiles: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: u64,
}

/// The value of one series at one time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(Hist),
    Summary(Summ),
}

/// One translated OTLP data point (or a `target_info` point).
#[derive(Debug, Clone)]
pub struct Series {
    pub family: Arc<Family>,
    pub labels: Labels,
    pub timestamp_ms: i64,
    pub value: Value,
    /// `NoRecordedValue`: every sample is the staleness marker.
    pub stale: bool,
    /// Index of the OTLP data point it came from, for accounting; `None` for `target_info`.
    pub point: Option<u32>,
}

/// One Prometheus sample of a [`Series`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Every label including `__name__` (and `le` / `quantile`), sorted by name.
    pub labels: Labels,
    pub value: f64,
}

/// Formats a float the way Prometheus writes `le` / `quantile` values and sample values:
/// `+Inf`, `-Inf`, `NaN`, shortest round-trip decimal otherwise.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl Series {
    /// Key identifying the series (family name and labels).
    pub fn key(&self) -> String {
        series_key(&self.family.name, &self.labels)
    }

    /// The Prometheus samples: one for numbers, `_bucket`s + `_sum` + `_count` for
    /// histograms, quantiles + `_sum` + `_count` for summaries.
    pub fn samples(&self) -> Vec<Sample> {
        let stale = self.stale;
        let v = |x: f64| if stale { stale_nan() } else { x };
        let mk = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
            let mut labels = Vec::with_capacity(self.labels.len() + 2);
            labels.push((
                "__name__".to_string(),
                format!("{}{suffix}", self.family.name),
            ));
            labels.extend(self.labels.iter().cloned());
            if let Some((k, val)) = extra {
                labels.retain(|(n, _)| n != k);
                labels.push((k.to_string(), val));
            }
            labels.sort_by(|a, b| a.0.cmp(&b.0));
            Sample { labels, value }
        };
        match &self.value {
            Value::Number(x) => vec![mk("", None, v(*x))],
            Value::Histogram(h) => {
                let mut out = Vec::with_capacity(h.buckets.len() + 2);
                for (le, c) in &h.buckets {
                    out.push(mk("_bucket", Some(("le", format_float(*le))), v(*c as f64)));
                }
                if let Some(s) = h.sum {
                    out.push(mk("_sum", None, v(s)));
                }
                out.push(mk("_count", None, v(h.count as f64)));
                out
            }
            Value::Summary(s) => {
                let mut out = Vec::with_capacity(s.quantiles.len() + 2);
                for (q, x) in &s.quantiles {
                    out.push(mk("", Some(("quantile", format_float(*q))), v(*x)));
                }
                out.push(mk("_sum", None, v(s.sum)));
                out.push(mk("_count", None, v(s.count as f64)));
                out
            }
        }
    }
}

/// A map key for a family name and its labels.
pub fn series_key(name: &str, labels: &Labels) -> String {
    let mut k = String::with_capacity(64);
    k.push_str(name);
    for (n, v) in labels {
        k.push('\u{1}');
        k.push_str(n);
        k.push('\u{2}');
        k.push_str(v);
    }
    k
}

// ---------------------------------------------------------------------------------------
// Names.

/// A metric unit as a name word (`s` → `seconds`), or the sanitised unit itself.
fn unit_word(u: &str) -> String {
    let w = match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => return name_tokens(other).join("_"),
    };
    w.to_string()
}

/// A per-unit (after `/`) as a word (`s` → `second`).
fn per_unit_word(u: &str) -> String {
    let w = match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => return name_tokens(other).join("_"),
    };
    w.to_string()
}

/// The words of a name: runs of `[a-zA-Z0-9:]`.
fn name_tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Removes `{...}` annotations from a UCUM unit.
fn strip_annotations(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// The unit suffix words for `unit` (`ms` → `milliseconds`, `By/s` → `bytes_per_second`,
/// `1` → empty; `{requests}` → empty).
pub fn unit_suffix(unit: &str, gauge: bool) -> String {
    let unit = strip_annotations(unit);
    if unit.is_empty() {
        return String::new();
    }
    if unit == "1" {
        return if gauge { "ratio".into() } else { String::new() };
    }
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), p.trim()),
        None => (unit.as_str(), ""),
    };
    let main = if main.is_empty() || main == "1" {
        String::new()
    } else {
        unit_word(main)
    };
    let per = if per.is_empty() {
        String::new()
    } else {
        per_unit_word(per)
    };
    match (main.is_empty(), per.is_empty()) {
        (true, true) => String::new(),
        (false, true) => main,
        (true, false) => format!("per_{per}"),
        (false, false) => format!("{main}_per_{per}"),
    }
}

/// The Prometheus metric name of an OTLP metric.
pub fn metric_name(name: &str, unit: &str, kind: Kind, monotonic: bool, namespace: &str) -> String {
    let counter = kind == Kind::Counter && monotonic;
    let mut tokens = name_tokens(name);
    if counter {
        tokens.retain(|t| t != "total");
    }
    let suffix = unit_suffix(unit, kind == Kind::Gauge);
    if !suffix.is_empty() {
        let words: Vec<&str> = suffix.split('_').collect();
        let already = if words.len() == 1 {
            tokens.iter().any(|t| t == words[0])
        } else {
            tokens.len() >= words.len()
                && tokens[tokens.len() - words.len()..]
                    .iter()
                    .zip(&words)
                    .all(|(a, b)| a == b)
        };
        if !already {
            tokens.extend(words.iter().map(|w| w.to_string()));
        }
    }
    if counter {
        tokens.push("total".into());
    }
    let mut out = tokens.join("_");
    let ns = name_tokens(namespace).join("_");
    if !ns.is_empty() {
        out = if out.is_empty() {
            ns
        } else {
            format!("{ns}_{out}")
        };
    }
    if out.is_empty() {
        return "_".into();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A valid Prometheus label name for an attribute key.
pub fn label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "key_");
    } else if s.starts_with('_') && !s.starts_with("__") {
        s.insert_str(0, "key");
    }
    s
}

/// Attributes as sanitised labels; keys colliding after sanitising get their values joined
/// with `;` in the order of their original keys.
fn attr_labels(attrs: &[KeyValue], skip: &[&str], out: &mut BTreeMap<String, String>) {
    let mut groups: BTreeMap<String, Vec<(&str, String)>> = BTreeMap::new();
    for kv in attrs {
        if kv.key.is_empty() || skip.contains(&kv.key.as_str()) {
            continue;
        }
        let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        groups
            .entry(label_name(&kv.key))
            .or_default()
            .push((&kv.key, value_to_string(v)));
    }
    for (name, mut vals) in groups {
        vals.sort_by(|a, b| a.0.cmp(b.0));
        let joined = vals
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
            .join(";");
        out.insert(name, joined);
    }
}

fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
    meshgate_pdata::attributes::get(attrs, key)
        .map(value_to_string)
        .filter(|s| !s.is_empty())
}

/// `job` and `instance` of a resource.
pub fn job_instance(resource: Option<&Resource>) -> (Option<String>, Option<String>) {
    let attrs: &[KeyValue] = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
    let name = attr_str(attrs, "service.name");
    let ns = attr_str(attrs, "service.namespace");
    let job = match (ns, name) {
        (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
        (None, Some(n)) => Some(n),
        (Some(ns), None) => Some(ns),
        (None, None) => None,
    };
    (job, attr_str(attrs, "service.instance.id"))
}

const IDENTIFYING: [&str; 3] = ["service.name", "service.namespace", "service.instance.id"];

// ---------------------------------------------------------------------------------------
// Delta → cumulative.

#[derive(Debug, Clone)]
enum Acc {
    Number(f64),
    Hist {
        bounds: Vec<f64>,
        /// Per-bucket (not cumulative) counts.
        counts: Vec<u64>,
        sum: Option<f64>,
        count: u64,
    },
}

struct DeltaEntry {
    acc: Acc,
    /// `time_unix_nano` of the last point added.
    last_ns: u64,
    seen: Instant,
}

/// Running totals of delta series, keyed by series identity (family name and labels; the
/// start time of the first point is the cumulative series' start). Bounded to
/// [`MAX_DELTA_SERIES`]; series idle for longer than the expiry are forgotten (a series that
/// comes back after that restarts from zero, which Prometheus reads as a counter reset).
///
/// A point whose time equals the last one added is not added again (the same point sent
/// twice, e.g. by a client retry): the current total is reported. An older point is out of
/// order and dropped.
pub struct DeltaStore {
    map: HashMap<String, DeltaEntry>,
    idle: Duration,
    max: usize,
    last_sweep: Instant,
}

enum Accumulated {
    Ok(Acc),
    OutOfOrder,
    Full,
}

impl DeltaStore {
    /// A store forgetting series idle for `idle`.
    pub fn new(idle: Duration) -> Self {
        Self::with_capacity(idle, MAX_DELTA_SERIES)
    }

    /// A store holding at most `max` series.
    pub fn with_capacity(idle: Duration, max: usize) -> Self {
        Self {
            map: HashMap::new(),
            idle,
            max,
            last_sweep: Instant::now(),
        }
    }

    /// Series tracked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn sweep(&mut self, now: Instant) {
        let idle = self.idle;
        self.map
            .retain(|_, e| now.saturating_duration_since(e.seen) <= idle);
        self.last_sweep = now;
    }

    fn add(&mut self, key: String, time_ns: u64, delta: Acc, now: Instant) -> Accumulated {
        if now.saturating_duration_since(self.last_sweep) > self.idle / 4 {
            self.sweep(now);
        }
        if !self.map.contains_key(&key) && self.map.len() >= self.max {
            self.sweep(now);
            if self.map.len() >= self.max {
                return Accumulated::Full;
            }
        }
        let e = self.map.entry(key).or_insert_with(|| DeltaEntry {
            acc: match &delta {
                Acc::Number(_) => Acc::Number(0.0),
                Acc::Hist { bounds, counts, .. } => Acc::Hist {
                    bounds: bounds.clone(),
                    counts: vec![0; counts.len()],
                    sum: None,
                    count: 0,
                },
            },
            last_ns: 0,
            seen: now,
        });
        e.seen = now;
        if e.last_ns != 0 && time_ns < e.last_ns {
            return Accumulated::OutOfOrder;
        }
        if e.last_ns != 0 && time_ns == e.last_ns {
            return Accumulated::Ok(e.acc.clone());
        }
        e.last_ns = time_ns;
        match (&mut e.acc, delta) {
            (Acc::Number(total), Acc::Number(d)) => *total += d,
            (
                Acc::Hist {
                    bounds,
                    counts,
                    sum,
                    count,
                },
                Acc::Hist {
                    bounds: b,
                    counts: c,
                    sum: s,
                    count: n,
                },
            ) => {
                if *bounds != b || counts.len() != c.len() {
                    // New bucket layout: restart from this point (a reset for Prometheus).
                    *bounds = b;
                    *counts = c;
                    *sum = s;
                    *count = n;
                } else {
                    counts.iter_mut().zip(&c).for_each(|(a, x)| *a += x);
                    *sum = match (*sum, s) {
                        (Some(a), Some(x)) => Some(a + x),
                        (None, x) => x,
                        (a, None) => a,
                    };
                    *count += n;
                }
            }
            (acc, d) => *acc = d,
        }
        Accumulated::Ok(e.acc.clone())
    }
}

// ---------------------------------------------------------------------------------------
// Conversion.

/// Translation settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Prefix of every metric name (`namespace_`), empty for none.
    pub namespace: String,
    /// Every resource attribute as a label on every series.
    pub resource_to_telemetry: bool,
    /// Labels added to every series that does not have them (`external_labels`,
    /// `const_labels`); names already sanitised.
    pub extra_labels: Vec<(String, String)>,
}

impl Options {
    /// Sanitises `extra` into [`Options::extra_labels`].
    pub fn with_extra_labels<'a>(
        mut self,
        extra: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        self.extra_labels = extra
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (label_name(k), v.clone()))
            .collect();
        self
    }
}

/// The outcome of translating one request.
#[derive(Debug, Default)]
pub struct Converted {
    pub series: Vec<Series>,
    /// OTLP data points that could not be translated.
    pub dropped: u64,
    /// Why, for the log (one entry per reason).
    pub drop_reasons: Vec<String>,
    /// OTLP data points translated (for accounting: `points + dropped` = the request's).
    pub points: u64,
}

impl Converted {
    fn drop(&mut self, n: u64, why: &str) {
        if n == 0 {
            return;
        }
        self.dropped += n;
        if !self.drop_reasons.iter().any(|r| r.starts_with(why)) {
            self.drop_reasons.push(why.to_string());
        }
    }
}

/// Translates OTLP metrics into Prometheus series, keeping delta running totals.
pub struct Translator {
    opts: Options,
    deltas: Mutex<DeltaStore>,
}

fn ns_to_ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

fn number(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

fn hist_from(bounds: &[f64], counts: &[u64], sum: Option<f64>, count: u64) -> Hist {
    let mut buckets = Vec::with_capacity(bounds.len() + 1);
    let mut cum = 0u64;
    for (b, c) in bounds.iter().zip(counts) {
        cum += c;
        buckets.push((*b, cum));
    }
    buckets.push((f64::INFINITY, count));
    Hist {
        buckets,
        sum,
        count,
    }
}

impl Translator {
    /// A translator whose delta series expire after `delta_idle`.
    pub fn new(opts: Options, delta_idle: Duration) -> Self {
        Self {
            opts,
            deltas: Mutex::new(DeltaStore::new(delta_idle)),
        }
    }

    /// Series tracked for delta→cumulative conversion.
    pub fn delta_series(&self) -> usize {
        self.deltas.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Translates one request.
    pub fn convert(&self, req: &ExportMetricsServiceRequest) -> Converted {
        let now = Instant::now();
        let mut out = Converted::default();
        let mut deltas = self.deltas.lock().unwrap_or_else(|e| e.into_inner());
        let mut point_idx: u32 = 0;
        for rm in &req.resource_metrics {
            let resource = rm.resource.as_ref();
            let (job, instance) = job_instance(resource);
            let rattrs: &[KeyValue] = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
            // Labels shared by every series of this resource, before point attributes.
            let mut resource_labels = BTreeMap::new();
            if self.opts.resource_to_telemetry {
                attr_labels(rattrs, &[], &mut resource_labels);
            }
            let mut max_ts: i64 = 0;
            let mut any_point = false;
            for sm in &rm.scope_metrics {
                let (scope_name, scope_version) = sm
                    .scope
                    .as_ref()
                    .map(|s| (s.name.as_str(), s.version.as_str()))
                    .unwrap_or(("", ""));
                let base = |attrs: &[KeyValue]| -> Labels {
                    let mut m = resource_labels.clone();
                    attr_labels(attrs, &[], &mut m);
                    if !scope_name.is_empty() {
                        m.insert("otel_scope_name".into(), scope_name.into());
                    }
                    if !scope_version.is_empty() {
                        m.insert("otel_scope_version".into(), scope_version.into());
                    }
                    if let Some(j) = &job {
                        m.insert("job".into(), j.clone());
                    }
                    if let Some(i) = &instance {
                        m.insert("instance".into(), i.clone());
                    }
                    for (k, v) in &self.opts.extra_labels {
                        m.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    m.retain(|k, v| !v.is_empty() && k != "__name__");
                    m.into_iter().collect()
                };
                for m in &sm.metrics {
                    let Some(data) = &m.data else { continue };
                    let mut emit = |out: &mut Converted,
                                    family: &Arc<Family>,
                                    labels: Labels,
                                    time_ns: u64,
                                    value: Value,
                                    stale: bool,
                                    idx: u32| {
                        let ts = ns_to_ms(time_ns);
                        max_ts = max_ts.max(ts);
                        any_point = true;
                        out.points += 1;
                        out.series.push(Series {
                            family: family.clone(),
                            labels,
                            timestamp_ms: ts,
                            value,
                            stale,
                            point: Some(idx),
                        });
                    };
                    match data {
                        metric::Data::Gauge(g) => {
                            let fam = self.family(m, Kind::Gauge, false);
                            for p in &g.data_points {
                                let idx = point_idx;
                                point_idx += 1;
                                let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
                                emit(
                                    &mut out,
                                    &fam,
                                    base(&p.attributes),
                                    p.time_unix_nano,
                                    Value::Number(number(p)),
                                    stale,
                                    idx,
                                );
                            }
                        }
                        metric::Data::Sum(s) => {
                            let kind = if s.is_monotonic {
                                Kind::Counter
                            } else {
                                Kind::Gauge
                            };
                            let fam = self.family(m, kind, s.is_monotonic);
                            let delta = s.aggregation_temporality == TEMPORALITY_DELTA;
                            for p in &s.data_points {
                                let idx = point_idx;
                                point_idx += 1;
                                let labels = base(&p.attributes);
                                let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
                                let mut v = number(p);
                                if delta && !stale {
                                    let key = series_key(&fam.name, &labels);
                                    match deltas.add(key, p.time_unix_nano, Acc::Number(v), now) {
                                        Accumulated::Ok(Acc::Number(t)) => v = t,
                                        Accumulated::Ok(_) => {}
                                        Accumulated::OutOfOrder => {
                                            out.drop(
                                                1,
                                                "delta point older than the last one of its series",
                                            );
                                            continue;
                                        }
                                        Accumulated::Full => {
                                            out.drop(1, "too many delta series tracked");
                                            continue;
                                        }
                                    }
                                }
                                emit(
                                    &mut out,
                                    &fam,
                                    labels,
                                    p.time_unix_nano,
                                    Value::Number(v),
                                    stale,
                                    idx,
                                );
                            }
                        }
                        metric::Data::Histogram(h) => {
                            let fam = self.family(m, Kind::Histogram, false);
                            let delta = h.aggregation_temporality == TEMPORALITY_DELTA;
                            for p in &h.data_points {
                                let idx = point_idx;
                                point_idx += 1;
                                match self.histogram(p, &fam, delta, &mut deltas, now, &base) {
                                    Ok((labels, hist)) => emit(
                                        &mut out,
                                        &fam,
                                        labels,
                                        p.time_unix_nano,
                                        Value::Histogram(hist),
                                        p.flags & FLAG_NO_RECORDED_VALUE != 0,
                                        idx,
                                    ),
                                    Err(why) => out.drop(1, why),
                                }
                            }
                        }
                        metric::Data::Summary(s) => {
                            let fam = self.family(m, Kind::Summary, false);
                            for p in &s.data_points {
                                let idx = point_idx;
                                point_idx += 1;
                                emit(
                                    &mut out,
                                    &fam,
                                    base(&p.attributes),
                                    p.time_unix_nano,
                                    Value::Summary(summary(p)),
                                    p.flags & FLAG_NO_RECORDED_VALUE != 0,
                                    idx,
                                );
                            }
                        }
                        metric::Data::ExponentialHistogram(h) => {
                            point_idx += h.data_points.len() as u32;
                            out.drop(
                                h.data_points.len() as u64,
                                "exponential histograms have no Prometheus Remote Write 1.0 / text form",
                            );
                        }
                    }
                }
            }
            // target_info: the non-identifying resource attributes, once per resource.
            let mut info = BTreeMap::new();
            attr_labels(rattrs, &IDENTIFYING, &mut info);
            if any_point && !info.is_empty() {
                if let Some(j) = &job {
                    info.insert("job".into(), j.clone());
                }
                if let Some(i) = &instance {
                    info.insert("instance".into(), i.clone());
                }
                for (k, v) in &self.opts.extra_labels {
                    info.entry(k.clone()).or_insert_with(|| v.clone());
                }
                info.retain(|k, v| !v.is_empty() && k != "__name__");
                out.series.push(Series {
                    family: Arc::new(Family {
                        name: metric_name(
                            "target_info",
                            "",
                            Kind::Gauge,
                            false,
                            &self.opts.namespace,
                        ),
                        kind: Kind::Gauge,
                        help: "Target metadata".into(),
                        unit: String::new(),
                    }),
                    labels: info.into_iter().collect(),
                    timestamp_ms: max_ts,
                    value: Value::Number(1.0),
                    stale: false,
                    point: None,
                });
            }
        }
        out
    }

    fn family(&self, m: &meshgate_pdata::otlp::Metric, kind: Kind, monotonic: bool) -> Arc<Family> {
        Arc::new(Family {
            name: metric_name(&m.name, &m.unit, kind, monotonic, &self.opts.namespace),
            kind,
            help: m.description.clone(),
            unit: unit_suffix(&m.unit, kind == Kind::Gauge),
        })
    }

    fn histogram(
        &self,
        p: &HistogramDataPoint,
        fam: &Family,
        delta: bool,
        deltas: &mut DeltaStore,
        now: Instant,
        base: &dyn Fn(&[KeyValue]) -> Labels,
    ) -> Result<(Labels, Hist), &'static str> {
        if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
            return Err("histogram with bucket_counts not matching explicit_bounds");
        }
        let labels = base(&p.attributes);
        let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
        let (bounds, counts) = if p.bucket_counts.is_empty() {
            (&[][..], &[][..])
        } else {
            (&p.explicit_bounds[..], &p.bucket_counts[..])
        };
        if delta && !stale {
            let key = series_key(&fam.name, &labels);
            let d = Acc::Hist {
                bounds: bounds.to_vec(),
                counts: counts.to_vec(),
                sum: p.sum,
                count: p.count,
            };
            return match deltas.add(key, p.time_unix_nano, d, now) {
                Accumulated::Ok(Acc::Hist {
                    bounds,
                    counts,
                    sum,
                    count,
                }) => Ok((labels, hist_from(&bounds, &counts, sum, count))),
                Accumulated::Ok(_) => Err("histogram series changed type"),
                Accumulated::OutOfOrder => Err("delta point older than the last one of its series"),
                Accumulated::Full => Err("too many delta series tracked"),
            };
        }
        Ok((labels, hist_from(bounds, counts, p.sum, p.count)))
    }
}

fn summary(p: &SummaryDataPoint) -> Summ {
    let mut quantiles: Vec<(f64, f64)> = p
        .quantile_values
        .iter()
        .map(|q| (q.quantile, q.value))
        .collect();
    quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
    Summ {
        quantiles,
        sum: p.sum,
        count: p.count,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use meshgate_pdata::attributes::kv_str;
    use meshgate_pdata::otlp::*;
    use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;

    pub const T0: u64 = 1_700_000_000_000_000_000;

    pub fn resource() -> Resource {
        Resource {
            attributes: vec![
                kv_str("service.name", "checkout"),
                kv_str("service.namespace", "shop"),
                kv_str("service.instance.id", "pod-1"),
                kv_str("k8s.pod.name", "checkout-abc"),
                kv_str("host.name", "node-7"),
            ],
            ..Default::default()
        }
    }

    pub fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "envoy".into(),
                        version: "1.2".into(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    pub fn sum(name: &str, unit: &str, delta: bool, points: &[(u64, f64)]) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            description: format!("{name} help"),
            data: Some(metric::Data::Sum(Sum {
                data_points: points
                    .iter()
                    .map(|(t, v)| NumberDataPoint {
                        attributes: vec![kv_str("http.method", "GET")],
                        start_time_unix_nano: T0,
                        time_unix_nano: *t,
                        value: Some(number_data_point::Value::AsDouble(*v)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: if delta { 1 } else { 2 },
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }

    pub fn gauge(name: &str, unit: &str, t: u64, v: i64) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    time_unix_nano: t,
                    value: Some(number_data_point::Value::AsInt(v)),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        }
    }

    pub fn histogram(name: &str, delta: bool, t: u64, counts: &[u64]) -> Metric {
        Metric {
            name: name.into(),
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    start_time_unix_nano: T0,
                    time_unix_nano: t,
                    count: counts.iter().sum(),
                    sum: Some(counts.iter().sum::<u64>() as f64 * 0.2),
                    bucket_counts: counts.to_vec(),
                    explicit_bounds: vec![0.1, 0.5, 1.0],
                    ..Default::default()
                }],
                aggregation_temporality: if delta { 1 } else { 2 },
            })),
            ..Default::default()
        }
    }

    pub fn summary_metric(name: &str, t: u64) -> Metric {
        Metric {
            name: name.into(),
            unit: "ms".into(),
            data: Some(metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: t,
                    count: 10,
                    sum: 123.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 40.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 10.0,
                        },
                    ],
                    ..Default::default()
                }],
            })),
            ..Default::default()
        }
    }

    fn tr(opts: Options) -> Translator {
        Translator::new(opts, Duration::from_secs(300))
    }

    /// `name{labels} value` lines of every sample, sorted.
    pub fn lines(c: &Converted) -> Vec<String> {
        let mut v: Vec<String> = c
            .series
            .iter()
            .flat_map(|s| s.samples())
            .map(|s| {
                let name = &s.labels.iter().find(|l| l.0 == "__name__").unwrap().1;
                let l: Vec<String> = s
                    .labels
                    .iter()
                    .filter(|l| l.0 != "__name__")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!("{name}{{{}}} {}", l.join(","), format_float(s.value))
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn metric_names_follow_the_specification() {
        let c = |n, u, k, m| metric_name(n, u, k, m, "");
        assert_eq!(
            c("http.server.duration", "s", Kind::Histogram, false),
            "http_server_duration_seconds"
        );
        assert_eq!(
            c("http.server.duration", "ms", Kind::Histogram, false),
            "http_server_duration_milliseconds"
        );
        assert_eq!(
            c("requests", "{request}", Kind::Counter, true),
            "requests_total"
        );
        assert_eq!(
            c("requests_total", "1", Kind::Counter, true),
            "requests_total"
        );
        assert_eq!(
            c("io.bytes.total", "By", Kind::Counter, true),
            "io_bytes_total"
        );
        assert_eq!(
            c("io.read", "By", Kind::Counter, true),
            "io_read_bytes_total"
        );
        assert_eq!(
            c("cpu.utilization", "1", Kind::Gauge, false),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            c("cpu.utilization_ratio", "1", Kind::Gauge, false),
            "cpu_utilization_ratio"
        );
        assert_eq!(c("queue.size", "{item}", Kind::Gauge, false), "queue_size");
        assert_eq!(
            c("throughput", "By/s", Kind::Gauge, false),
            "throughput_bytes_per_second"
        );
        assert_eq!(
            c("latency_seconds", "s", Kind::Summary, false),
            "latency_seconds"
        );
        assert_eq!(
            c("up-down..counter", "", Kind::Gauge, false),
            "up_down_counter"
        );
        assert_eq!(
            c("2xx.responses", "", Kind::Counter, true),
            "_2xx_responses_total"
        );
        assert_eq!(c("temp", "Cel", Kind::Gauge, false), "temp_celsius");
        assert_eq!(c("foo", "requests", Kind::Gauge, false), "foo_requests");
        assert_eq!(
            metric_name("calls", "", Kind::Counter, true, "mesh"),
            "mesh_calls_total"
        );
    }

    #[test]
    fn label_names_are_sanitised_and_collisions_joined() {
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("0day"), "key_0day");
        assert_eq!(label_name("_private"), "key_private");
        assert_eq!(label_name("__reserved"), "__reserved");
        let mut m = BTreeMap::new();
        attr_labels(
            &[kv_str("a.b", "1"), kv_str("a_b", "2"), kv_str("c", "")],
            &[],
            &mut m,
        );
        assert_eq!(m["a_b"], "1;2");
    }

    #[test]
    fn sums_gauges_and_target_info() {
        let t = tr(Options::default().with_extra_labels(&BTreeMap::from([(
            "cluster".to_string(),
            "eu-1".to_string(),
        )])));
        let c = t.convert(&request(vec![
            sum(
                "http.requests",
                "{request}",
                false,
                &[(T0 + 1_000_000_000, 7.0)],
            ),
            gauge("queue.depth", "", T0 + 2_000_000_000, 3),
        ]));
        assert_eq!(c.points, 2);
        assert_eq!(c.dropped, 0);
        let base = "cluster=eu-1,instance=pod-1,job=shop/checkout,otel_scope_name=envoy,otel_scope_version=1.2";
        assert_eq!(
            lines(&c),
            [
                "http_requests_total{cluster=eu-1,http_method=GET,instance=pod-1,job=shop/checkout,otel_scope_name=envoy,otel_scope_version=1.2} 7".to_string(),
                format!("queue_depth{{{base}}} 3"),
                "target_info{cluster=eu-1,host_name=node-7,instance=pod-1,job=shop/checkout,k8s_pod_name=checkout-abc} 1".to_string(),
            ]
        );
        let info = c
            .series
            .iter()
            .find(|s| s.family.name == "target_info")
            .unwrap();
        assert_eq!(info.timestamp_ms, ns_to_ms(T0 + 2_000_000_000));
        assert_eq!(c.series[0].timestamp_ms, 1_700_000_001_000);
    }

    #[test]
    fn resource_to_telemetry_puts_resource_attributes_on_every_series() {
        let t = tr(Options {
            resource_to_telemetry: true,
            ..Default::default()
        });
        let c = t.convert(&request(vec![gauge("g", "", T0, 1)]));
        let l = lines(&c);
        assert!(l[0].starts_with("g{host_name=node-7,instance=pod-1,job=shop/checkout,k8s_pod_name=checkout-abc,otel_scope_name=envoy,otel_scope_version=1.2,service_instance_id=pod-1,service_name=checkout,service_namespace=shop} 1"), "{l:?}");
    }

    #[test]
    fn external_labels_do_not_override_the_series_own() {
        let t = tr(Options::default()
            .with_extra_labels(&BTreeMap::from([("job".to_string(), "ext".to_string())])));
        let c = t.convert(&request(vec![gauge("g", "", T0, 1)]));
        assert!(lines(&c)[0].contains("job=shop/checkout"));
        let mut req = request(vec![gauge("g", "", T0, 1)]);
        req.resource_metrics[0].resource = None;
        let c = t.convert(&req);
        assert_eq!(
            lines(&c),
            ["g{job=ext,otel_scope_name=envoy,otel_scope_version=1.2} 1"]
        );
    }

    #[test]
    fn histograms_become_cumulative_buckets_sum_and_count() {
        let t = tr(Options::default());
        let mut req = request(vec![histogram("rpc.duration", false, T0, &[1, 2, 3, 4])]);
        req.resource_metrics[0].resource = None;
        let c = t.convert(&req);
        let s = "otel_scope_name=envoy,otel_scope_version=1.2";
        assert_eq!(
            lines(&c),
            [
                format!("rpc_duration_seconds_bucket{{le=+Inf,{s}}} 10"),
                format!("rpc_duration_seconds_bucket{{le=0.1,{s}}} 1"),
                format!("rpc_duration_seconds_bucket{{le=0.5,{s}}} 3"),
                format!("rpc_duration_seconds_bucket{{le=1,{s}}} 6"),
                format!("rpc_duration_seconds_count{{{s}}} 10"),
                format!("rpc_duration_seconds_sum{{{s}}} 2"),
            ]
        );
        // Mismatched buckets: dropped and counted.
        let mut req = request(vec![histogram("bad", false, T0, &[1, 2])]);
        req.resource_metrics[0].resource = None;
        let c = t.convert(&req);
        assert_eq!((c.points, c.dropped), (0, 1));
    }

    #[test]
    fn summaries_become_quantiles_sum_and_count() {
        let t = tr(Options::default());
        let mut req = request(vec![summary_metric("gc.pause", T0)]);
        req.resource_metrics[0].resource = None;
        let s = "otel_scope_name=envoy,otel_scope_version=1.2";
        assert_eq!(
            lines(&t.convert(&req)),
            [
                format!("gc_pause_milliseconds_count{{{s}}} 10"),
                format!("gc_pause_milliseconds_sum{{{s}}} 123"),
                format!("gc_pause_milliseconds{{{s},quantile=0.5}} 10"),
                format!("gc_pause_milliseconds{{{s},quantile=0.99}} 40"),
            ]
        );
    }

    #[test]
    fn delta_sums_and_histograms_are_accumulated() {
        let t = tr(Options::default());
        let s = |t_ns: u64, v: f64| request(vec![sum("calls", "", true, &[(t_ns, v)])]);
        let value = |c: &Converted| match c.series[0].value {
            Value::Number(v) => v,
            _ => panic!(),
        };
        assert_eq!(value(&t.convert(&s(T0 + 1, 2.0))), 2.0);
        assert_eq!(value(&t.convert(&s(T0 + 2, 3.0))), 5.0);
        // The same point again (a client retry): not added twice.
        assert_eq!(value(&t.convert(&s(T0 + 2, 3.0))), 5.0);
        // An older point: dropped.
        let c = t.convert(&s(T0 + 1, 9.0));
        assert_eq!((c.points, c.dropped), (0, 1));
        assert_eq!(value(&t.convert(&s(T0 + 3, 4.0))), 9.0);
        // Several points of one series in one request.
        let c = t.convert(&request(vec![sum(
            "calls",
            "",
            true,
            &[(T0 + 4, 1.0), (T0 + 5, 1.0)],
        )]));
        let v: Vec<f64> = c
            .series
            .iter()
            .filter_map(|s| match s.value {
                Value::Number(v) if s.point.is_some() => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(v, [10.0, 11.0]);
        assert_eq!(t.delta_series(), 1);

        let h = |t_ns: u64, c: &[u64]| request(vec![histogram("lat", true, t_ns, c)]);
        t.convert(&h(T0 + 1, &[1, 0, 0, 0]));
        let c = t.convert(&h(T0 + 2, &[0, 2, 0, 1]));
        match &c.series[0].value {
            Value::Histogram(h) => {
                assert_eq!(
                    h.buckets.iter().map(|b| b.1).collect::<Vec<_>>(),
                    [1, 3, 3, 4]
                );
                assert_eq!(h.count, 4);
                assert!((h.sum.unwrap() - 0.8).abs() < 1e-9);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn delta_store_is_bounded_and_expires_idle_series() {
        let mut d = DeltaStore::with_capacity(Duration::from_secs(60), 2);
        let now = Instant::now();
        assert!(matches!(
            d.add("a".into(), 1, Acc::Number(1.0), now),
            Accumulated::Ok(_)
        ));
        assert!(matches!(
            d.add("b".into(), 1, Acc::Number(1.0), now),
            Accumulated::Ok(_)
        ));
        assert!(matches!(
            d.add("c".into(), 1, Acc::Number(1.0), now),
            Accumulated::Full
        ));
        let later = now + Duration::from_secs(61);
        assert!(matches!(
            d.add("c".into(), 2, Acc::Number(1.0), later),
            Accumulated::Ok(_)
        ));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn no_recorded_value_becomes_the_stale_marker() {
        let t = tr(Options::default());
        let mut m = gauge("g", "", T0, 5);
        if let Some(metric::Data::Gauge(g)) = &mut m.data {
            g.data_points[0].flags = 1;
        }
        let mut h = histogram("h", true, T0, &[1, 1, 1, 1]);
        if let Some(metric::Data::Histogram(x)) = &mut h.data {
            x.data_points[0].flags = 1;
        }
        let c = t.convert(&request(vec![m, h]));
        let samples: Vec<Sample> = c
            .series
            .iter()
            .filter(|s| s.point.is_some())
            .flat_map(|s| s.samples())
            .collect();
        assert_eq!(samples.len(), 1 + 4 + 2);
        assert!(samples.iter().all(|s| s.value.to_bits() == STALE_NAN_BITS));
        // A stale delta point does not touch the running total.
        assert_eq!(t.delta_series(), 0);
    }

    #[test]
    fn exponential_histograms_are_dropped_and_counted() {
        let t = tr(Options::default());
        let m = Metric {
            name: "e".into(),
            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![Default::default(); 3],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        };
        let c = t.convert(&request(vec![m, gauge("g", "", T0, 1)]));
        assert_eq!((c.points, c.dropped), (1, 3));
        assert_eq!(c.series[0].point, Some(3));
        assert!(c.drop_reasons[0].contains("exponential"));
    }
}
