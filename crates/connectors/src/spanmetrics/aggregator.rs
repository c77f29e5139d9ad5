//! The RED aggregation itself, free of the engine: [`SpanMetrics`] takes trace requests and a
//! `now`, and hands back an OTLP metrics request on [`SpanMetrics::collect`]. Benchmarks and
//! tests drive it directly; the connector wraps it with a clock and a flush timer.
//!
//! Hot path: a span's series is found by a keyed hash of its borrowed label values (the
//! resource's id, span name, kind, status, dimension values) and confirmed by comparing those
//! values, so a span of a known series costs no allocation; only a new series copies its
//! labels. Non-string attribute values are rendered into one reused text buffer.

use super::config::{
    HistogramKind, INSTANCE_ATTRIBUTE, OVERFLOW_ATTRIBUTE, Settings, SpanMetricsConfig,
    UNKNOWN_SERVICE,
};
use super::exponential::ExponentialHistogram;
use crate::histogram::ExplicitHistogram;
use meshgate_pdata::attributes::{get, kv, kv_str, value_to_string};
use meshgate_pdata::mesh::effective_status;
use meshgate_pdata::otlp::{
    ExportMetricsServiceRequest, ExportTraceServiceRequest, Histogram, HistogramDataPoint,
    InstrumentationScope, KeyValue, Metric, NumberDataPoint, Resource, ResourceMetrics,
    ScopeMetrics, Span, Sum, any_value::Value, metric, number_data_point, span::SpanKind,
    status::StatusCode,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram as OtlpExponentialHistogram,
    ExponentialHistogramDataPoint, exemplar,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

/// Name of the instrumentation scope of every emitted metric.
pub const SCOPE_NAME: &str = "meshgate/spanmetrics";

/// Running totals of what the aggregator did, for self-telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Spans consumed.
    pub spans: u64,
    /// Series currently held, overflow series included.
    pub series: usize,
    /// Series removed after `metrics_expiration` without spans.
    pub series_expired: u64,
    /// Spans recorded into an overflow series because the cardinality limit was reached.
    pub overflow_spans: u64,
}

/// RED metrics from spans: one calls counter and one duration histogram per series.
pub struct SpanMetrics {
    settings: Settings,
    state: State,
}

impl SpanMetrics {
    /// An aggregator for `config` (validated here; the instance id, when asked for, comes from
    /// `instance_id`, else `HOSTNAME`, else the machine's hostname).
    pub fn new(config: &SpanMetricsConfig) -> Result<Self, String> {
        let settings = config.resolve(|k| std::env::var(k).ok(), crate::system_hostname)?;
        Ok(Self::with_settings(settings))
    }

    pub(crate) fn with_settings(settings: Settings) -> Self {
        let seed = RandomState::new();
        // Any odd-ish non-zero start works for the exemplar reservoir's xorshift.
        let rng = seed.hash_one(0x5eed_u64) | 1;
        SpanMetrics {
            settings,
            state: State {
                seed,
                resources: Table::default(),
                series: Table::default(),
                tracked: 0,
                last_collect: None,
                rng,
                stats: Stats::default(),
                scratch: String::new(),
            },
        }
    }

    /// Records every span of `request`. `now` (Unix nanoseconds) stamps series creation and
    /// activity, for start times and expiry.
    pub fn consume(&mut self, request: &ExportTraceServiceRequest, now: u64) {
        let settings = &self.settings;
        let st = &mut self.state;
        let mut scratch = std::mem::take(&mut st.scratch);
        let n_dims = settings.dimensions.len();
        let mut resource_dims: Vec<Val<'_>> = Vec::with_capacity(n_dims);
        let mut dims: Vec<Val<'_>> = Vec::with_capacity(n_dims);
        let mut keys: Vec<Val<'_>> = Vec::with_capacity(settings.key_attributes.len());
        for rs in &request.resource_spans {
            if rs.scope_spans.iter().all(|ss| ss.spans.is_empty()) {
                continue;
            }
            scratch.clear();
            let rattrs: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
            let service = match get(rattrs, "service.name") {
                None => Val::Str(UNKNOWN_SERVICE),
                Some(Value::StringValue(s)) if s.is_empty() => Val::Str(UNKNOWN_SERVICE),
                Some(v) => Val::of(v, &mut scratch),
            };
            keys.clear();
            for k in &settings.key_attributes {
                keys.push(get(rattrs, k).map_or(Val::Absent, |v| Val::of(v, &mut scratch)));
            }
            resource_dims.clear();
            for d in &settings.dimensions {
                let v = match get(rattrs, &d.name) {
                    Some(v) => Val::of(v, &mut scratch),
                    None => d.default.as_deref().map_or(Val::Absent, Val::Str),
                };
                resource_dims.push(v);
            }
            let resource = st.resource_id(service, &keys, &scratch);
            let mark = scratch.len();
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                scratch.truncate(mark);
                dims.clear();
                for (d, fallback) in settings.dimensions.iter().zip(&resource_dims) {
                    dims.push(
                        get(&span.attributes, &d.name)
                            .map_or(*fallback, |v| Val::of(v, &mut scratch)),
                    );
                }
                st.record(settings, resource, span, &dims, &scratch, now);
            }
        }
        // Keep the buffer's allocation for the next request.
        scratch.clear();
        st.scratch = scratch;
    }

    /// The metrics as of `now` (Unix nanoseconds): every series (cumulative) or every series
    /// that saw spans since the previous collect (delta), one resource per service. Then
    /// starts a new interval (exemplars, and for delta the values, start over) and removes
    /// series idle for `metrics_expiration`.
    pub fn collect(&mut self, now: u64) -> ExportMetricsServiceRequest {
        let set = &self.settings;
        let st = &mut self.state;
        let mut groups: HashMap<u32, Vec<u32>> = HashMap::new();
        for (id, s) in st.series.iter() {
            if !set.delta || s.touched {
                groups.entry(s.resource).or_default().push(id);
            }
        }
        let mut order: Vec<u32> = groups.keys().copied().collect();
        order.sort_by(|a, b| {
            let (a, b) = (st.resources.get(*a), st.resources.get(*b));
            (&a.service, &a.keys).cmp(&(&b.service, &b.keys))
        });
        let temporality = if set.delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let mut resource_metrics = Vec::with_capacity(order.len());
        for rid in order {
            let ids = &groups[&rid];
            let r = st.resources.get(rid);
            let mut calls = Vec::with_capacity(ids.len());
            let mut explicit = Vec::new();
            let mut exponential = Vec::new();
            for &id in ids {
                let s = st.series.get(id);
                let attributes = point_attributes(set, r, s);
                let start = match (set.delta, st.last_collect) {
                    (true, Some(t)) => t,
                    _ => s.created,
                };
                let exemplars = s.exemplars();
                match (&s.hist, &set.histogram) {
                    (Hist::Explicit(h), HistogramKind::Explicit(bounds)) => {
                        explicit.push(HistogramDataPoint {
                            attributes: attributes.clone(),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: h.count,
                            sum: Some(h.sum),
                            bucket_counts: h.bucket_counts.clone(),
                            explicit_bounds: bounds.clone(),
                            exemplars,
                            flags: 0,
                            min: (h.count > 0).then_some(h.min),
                            max: (h.count > 0).then_some(h.max),
                        })
                    }
                    (Hist::Exponential(h), _) => exponential.push(ExponentialHistogramDataPoint {
                        attributes: attributes.clone(),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        count: h.count,
                        sum: Some(h.sum),
                        scale: h.scale(),
                        zero_count: h.zero_count,
                        positive: Some(h.positive_buckets()),
                        negative: None,
                        flags: 0,
                        exemplars,
                        min: (h.count > 0).then_some(h.min),
                        max: (h.count > 0).then_some(h.max),
                        zero_threshold: 0.0,
                    }),
                    _ => {}
                }
                calls.push(NumberDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(
                        i64::try_from(s.calls).unwrap_or(i64::MAX),
                    )),
                    ..Default::default()
                });
            }
            let mut metrics = vec![Metric {
                name: set.calls_name.clone(),
                description: "Spans recorded, by service, span name, kind and status.".to_string(),
                unit: set.calls_unit.to_string(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: calls,
                    aggregation_temporality: temporality,
                    is_monotonic: true,
                })),
                ..Default::default()
            }];
            let description = "Span durations (end - start).".to_string();
            let unit = set.duration_unit.to_string();
            match set.histogram {
                HistogramKind::Disabled => {}
                HistogramKind::Explicit(_) => metrics.push(Metric {
                    name: set.duration_name.clone(),
                    description,
                    unit,
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: explicit,
                        aggregation_temporality: temporality,
                    })),
                    ..Default::default()
                }),
                HistogramKind::Exponential(_) => metrics.push(Metric {
                    name: set.duration_name.clone(),
                    description,
                    unit,
                    data: Some(metric::Data::ExponentialHistogram(
                        OtlpExponentialHistogram {
                            data_points: exponential,
                            aggregation_temporality: temporality,
                        },
                    )),
                    ..Default::default()
                }),
            }
            let mut resource_attributes = vec![kv_str("service.name", &r.service)];
            for (k, v) in set.key_attributes.iter().zip(&r.keys) {
                if let Some(v) = v {
                    resource_attributes.push(kv_str(k, v));
                }
            }
            resource_metrics.push(ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource_attributes,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        st.start_interval(set, now);
        ExportMetricsServiceRequest { resource_metrics }
    }

    /// What the aggregator has done so far.
    pub fn stats(&self) -> Stats {
        Stats {
            series: self.state.series.len,
            ..self.state.stats
        }
    }
}

/// How many spans one span stands for: its sampling-adjusted count from the `ot=th:` threshold
/// of its trace state (a span kept by a 10 % sampler upstream counts 10), 1 without one, so
/// RED rates stay right under upstream head sampling.
fn span_weight(span: &Span) -> u64 {
    if span.trace_state.is_empty() {
        return 1;
    }
    meshgate_pdata::sampling::weight(&span.trace_state, &span.span_id)
}

/// An attribute value borrowed from the request or the config, or rendered into the scratch
/// buffer (non-string values), without allocating per span.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Absent,
    Str(&'a str),
    /// A byte range of the scratch buffer.
    Text(u32, u32),
}

impl<'a> Val<'a> {
    /// `v` as label text: strings borrowed, other values rendered the way
    /// [`value_to_string`] does (so `200` and `"200"` are one series).
    fn of(v: &'a Value, scratch: &mut String) -> Val<'a> {
        let start = scratch.len() as u32;
        match v {
            Value::StringValue(s) => return Val::Str(s),
            Value::BoolValue(b) => scratch.push_str(if *b { "true" } else { "false" }),
            Value::IntValue(i) => {
                let _ = write!(scratch, "{i}");
            }
            Value::DoubleValue(d) => {
                let _ = write!(scratch, "{d}");
            }
            other => scratch.push_str(&value_to_string(other)),
        }
        Val::Text(start, scratch.len() as u32)
    }

    fn get<'b>(self, scratch: &'b str) -> Option<&'b str>
    where
        'a: 'b,
    {
        match self {
            Val::Absent => None,
            Val::Str(s) => Some(s),
            Val::Text(a, b) => Some(&scratch[a as usize..b as usize]),
        }
    }
}

fn hash_opt(h: &mut impl Hasher, v: Option<&str>) {
    match v {
        None => h.write_u8(0),
        Some(s) => {
            h.write_u8(1);
            s.hash(h);
        }
    }
}

fn same_values(stored: &[Option<Box<str>>], vals: &[Val<'_>], scratch: &str) -> bool {
    stored.len() == vals.len()
        && stored
            .iter()
            .zip(vals)
            .all(|(s, v)| s.as_deref() == v.get(scratch))
}

fn owned_values(vals: &[Val<'_>], scratch: &str) -> Box<[Option<Box<str>>]> {
    vals.iter().map(|v| v.get(scratch).map(Box::from)).collect()
}

struct State {
    /// Random keys of the series hash, so crafted label values cannot force collisions.
    seed: RandomState,
    resources: Table<ResourceEntry>,
    series: Table<Series>,
    /// Series counted against the cardinality limit (all but the overflow series).
    tracked: usize,
    last_collect: Option<u64>,
    /// xorshift64 state for exemplar reservoir sampling.
    rng: u64,
    stats: Stats,
    scratch: String,
}

/// One output resource: a `service.name` and the values of the key attributes.
struct ResourceEntry {
    service: Box<str>,
    keys: Box<[Option<Box<str>>]>,
    /// Series of this resource, overflow series included; the entry goes with the last one.
    series: usize,
    overflow: Option<u32>,
}

struct Series {
    resource: u32,
    /// Empty when `span.name` is excluded.
    name: Box<str>,
    /// 0 when excluded.
    kind: i32,
    /// 0 when excluded.
    status: i32,
    dims: Box<[Option<Box<str>>]>,
    overflow: bool,
    created: u64,
    last_seen: u64,
    /// Saw a span since the previous collect.
    touched: bool,
    calls: u64,
    hist: Hist,
    exemplars: Vec<StoredExemplar>,
    /// Spans offered to the exemplar reservoir this interval.
    exemplars_seen: u64,
}

impl Series {
    fn exemplars(&self) -> Vec<Exemplar> {
        self.exemplars
            .iter()
            .map(|e| Exemplar {
                filtered_attributes: Vec::new(),
                time_unix_nano: e.time,
                span_id: e.span_id.to_vec(),
                trace_id: e.trace_id.to_vec(),
                value: Some(exemplar::Value::AsDouble(e.value)),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct StoredExemplar {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    value: f64,
    time: u64,
}

enum Hist {
    None,
    Explicit(ExplicitHistogram),
    Exponential(ExponentialHistogram),
}

impl Hist {
    fn new(kind: &HistogramKind) -> Hist {
        match kind {
            HistogramKind::Disabled => Hist::None,
            HistogramKind::Explicit(b) => Hist::Explicit(ExplicitHistogram::new(b)),
            HistogramKind::Exponential(n) => Hist::Exponential(ExponentialHistogram::new(*n)),
        }
    }

    fn record(&mut self, kind: &HistogramKind, value: f64, weight: u64) {
        match (self, kind) {
            (Hist::Explicit(h), HistogramKind::Explicit(bounds)) => h.record(bounds, value, weight),
            (Hist::Exponential(h), _) => h.record(value, weight),
            _ => {}
        }
    }

    fn clear(&mut self) {
        match self {
            Hist::None => {}
            Hist::Explicit(h) => h.clear(),
            Hist::Exponential(h) => h.clear(),
        }
    }
}

impl State {
    /// The id of the resource (`service`, `keys`), created when new.
    fn resource_id(&mut self, service: Val<'_>, keys: &[Val<'_>], scratch: &str) -> u32 {
        let service = service.get(scratch).unwrap_or(UNKNOWN_SERVICE);
        let mut h = self.seed.build_hasher();
        service.hash(&mut h);
        for k in keys {
            hash_opt(&mut h, k.get(scratch));
        }
        let hash = h.finish();
        let found = self.resources.find(hash, |r| {
            *r.service == *service && same_values(&r.keys, keys, scratch)
        });
        found.unwrap_or_else(|| {
            self.resources.insert(
                hash,
                ResourceEntry {
                    service: service.into(),
                    keys: owned_values(keys, scratch),
                    series: 0,
                    overflow: None,
                },
            )
        })
    }

    /// Records one span into its series (created when new, or the overflow series past the
    /// cardinality limit).
    fn record(
        &mut self,
        set: &Settings,
        resource: u32,
        span: &Span,
        dims: &[Val<'_>],
        scratch: &str,
        now: u64,
    ) {
        self.stats.spans += 1;
        let weight = span_weight(span);
        let name: &str = if set.span_name_label.is_some() {
            &span.name
        } else {
            ""
        };
        let kind = if set.span_kind_label.is_some() {
            SpanKind::try_from(span.kind).map_or(0, |k| k as i32)
        } else {
            0
        };
        let status = if set.status_label.is_some() {
            effective_status(span) as i32
        } else {
            0
        };
        let mut h = self.seed.build_hasher();
        h.write_u32(resource);
        name.hash(&mut h);
        h.write_i32(kind);
        h.write_i32(status);
        for v in dims {
            hash_opt(&mut h, v.get(scratch));
        }
        let hash = h.finish();
        let found = self.series.find(hash, |s| {
            s.resource == resource
                && !s.overflow
                && s.kind == kind
                && s.status == status
                && *s.name == *name
                && same_values(&s.dims, dims, scratch)
        });
        let id = match found {
            Some(id) => id,
            None if set.cardinality_limit > 0 && self.tracked >= set.cardinality_limit => {
                self.stats.overflow_spans += 1;
                self.overflow_series(set, resource, hash, now)
            }
            None => {
                self.tracked += 1;
                self.resources.get_mut(resource).series += 1;
                self.series.insert(
                    hash,
                    Series {
                        resource,
                        name: name.into(),
                        kind,
                        status,
                        dims: owned_values(dims, scratch),
                        overflow: false,
                        created: now,
                        last_seen: now,
                        touched: false,
                        calls: 0,
                        hist: Hist::new(&set.histogram),
                        exemplars: Vec::new(),
                        exemplars_seen: 0,
                    },
                )
            }
        };
        let s = self.series.get_mut(id);
        s.calls += weight;
        s.last_seen = s.last_seen.max(now);
        s.touched = true;
        if matches!(s.hist, Hist::None) {
            return;
        }
        let value = span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano) as f64
            / set.nanos_per_unit;
        s.hist.record(&set.histogram, value, weight);
        let max = set.exemplars_per_point;
        if max == 0 {
            return;
        }
        let (Ok(trace_id), Ok(span_id)) = (
            <[u8; 16]>::try_from(span.trace_id.as_slice()),
            <[u8; 8]>::try_from(span.span_id.as_slice()),
        ) else {
            return;
        };
        let e = StoredExemplar {
            trace_id,
            span_id,
            value,
            time: span.end_time_unix_nano,
        };
        // Reservoir sampling: every span of the interval has the same chance to be kept.
        s.exemplars_seen += 1;
        if s.exemplars.len() < max {
            s.exemplars.push(e);
        } else {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let j = (self.rng % s.exemplars_seen) as usize;
            if j < max {
                s.exemplars[j] = e;
            }
        }
    }

    /// The overflow series of `resource`, created when missing.
    fn overflow_series(&mut self, set: &Settings, resource: u32, hash: u64, now: u64) -> u32 {
        if let Some(id) = self.resources.get(resource).overflow {
            return id;
        }
        let id = self.series.insert(
            // Never looked up by hash: the resource entry points at it.
            hash,
            Series {
                resource,
                name: "".into(),
                kind: 0,
                status: 0,
                dims: Box::new([]),
                overflow: true,
                created: now,
                last_seen: now,
                touched: false,
                calls: 0,
                hist: Hist::new(&set.histogram),
                exemplars: Vec::new(),
                exemplars_seen: 0,
            },
        );
        let r = self.resources.get_mut(resource);
        r.overflow = Some(id);
        r.series += 1;
        id
    }

    /// After a collect: new exemplar interval, delta values back to zero, idle series gone.
    fn start_interval(&mut self, set: &Settings, now: u64) {
        let mut expired = Vec::new();
        for (id, s) in self.series.iter_mut() {
            s.exemplars.clear();
            s.exemplars_seen = 0;
            if set.delta && s.touched {
                s.calls = 0;
                s.hist.clear();
            }
            s.touched = false;
            if set.expiration_nanos > 0 && now.saturating_sub(s.last_seen) >= set.expiration_nanos {
                expired.push(id);
            }
        }
        for id in expired {
            let s = self.series.remove(id);
            self.stats.series_expired += 1;
            let r = self.resources.get_mut(s.resource);
            r.series -= 1;
            if s.overflow {
                r.overflow = None;
            } else {
                self.tracked -= 1;
            }
            if r.series == 0 {
                self.resources.remove(s.resource);
            }
        }
        self.last_collect = Some(now);
    }
}

/// The attributes of a series' data points.
fn point_attributes(set: &Settings, r: &ResourceEntry, s: &Series) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(5 + s.dims.len());
    if let Some(l) = set.service_label {
        a.push(kv_str(l, &r.service));
    }
    if s.overflow {
        a.push(kv(OVERFLOW_ATTRIBUTE, Value::BoolValue(true)));
    } else {
        if let Some(l) = set.span_name_label {
            a.push(kv_str(l, &s.name));
        }
        if let Some(l) = set.span_kind_label {
            let k = SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified);
            a.push(kv_str(l, k.as_str_name()));
        }
        if let Some(l) = set.status_label {
            let c = StatusCode::try_from(s.status).unwrap_or(StatusCode::Unset);
            a.push(kv_str(l, c.as_str_name()));
        }
        for (d, v) in set.dimensions.iter().zip(&s.dims) {
            if let Some(v) = v {
                a.push(kv_str(&d.name, v));
            }
        }
    }
    if let Some(id) = &set.instance_id {
        a.push(kv_str(INSTANCE_ATTRIBUTE, id));
    }
    a
}

const NIL: u32 = u32::MAX;

/// A hasher for keys that already are hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A slab of values found by a precomputed hash plus an equality check, so a lookup needs
/// only borrowed data. Ids stay stable until removal and are then reused.
struct Table<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    /// First slot of each hash's chain (several only on a full 64-bit collision).
    heads: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    len: usize,
}

struct Slot<T> {
    hash: u64,
    next: u32,
    value: Option<T>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            heads: HashMap::default(),
            len: 0,
        }
    }
}

impl<T> Table<T> {
    fn find(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<u32> {
        let mut i = *self.heads.get(&hash)?;
        while i != NIL {
            let slot = &self.slots[i as usize];
            if let Some(v) = &slot.value
                && eq(v)
            {
                return Some(i);
            }
            i = slot.next;
        }
        None
    }

    fn insert(&mut self, hash: u64, value: T) -> u32 {
        let slot = Slot {
            hash,
            next: self.heads.get(&hash).copied().unwrap_or(NIL),
            value: Some(value),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.heads.insert(hash, id);
        self.len += 1;
        id
    }

    fn remove(&mut self, id: u32) -> T {
        let slot = &mut self.slots[id as usize];
        let (hash, next) = (slot.hash, slot.next);
        let value = slot.value.take().expect("removing a live table slot");
        let head = self.heads[&hash];
        if head == id {
            if next == NIL {
                self.heads.remove(&hash);
            } else {
                self.heads.insert(hash, next);
            }
        } else {
            let mut i = head;
            while self.slots[i as usize].next != id {
                i = self.slots[i as usize].next;
            }
            self.slots[i as usize].next = next;
        }
        self.free.push(id);
        self.len -= 1;
        value
    }

    fn get(&self, id: u32) -> &T {
        self.slots[id as usize]
            .value
            .as_ref()
            .expect("ids in use point at live slots")
    }

    fn get_mut(&mut self, id: u32) -> &mut T {
        self.slots[id as usize]
            .value
            .as_mut()
            .expect("ids in use point at live slots")
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.value.as_ref().map(|v| (i as u32, v)))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.value.as_mut().map(|v| (i as u32, v)))
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
