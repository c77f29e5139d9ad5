//! `dependencies`: the service graph written as Jaeger dependency documents, so Jaeger's
//! "System Architecture" view and `GET /api/dependencies` work without Jaeger's Spark batch
//! job.
//!
//! What Jaeger reads (checked against the Elasticsearch/OpenSearch dependency store of Jaeger
//! v2.13, `internal/storage/v2/elasticsearch/depstore`):
//!
//! * documents `{"timestamp": <RFC 3339>, "dependencies": [{"parent", "child", "callCount"}]}`
//!   (no other field is read);
//! * in the index `<prefix>jaeger-dependencies-<date>`, where a non-empty `index_prefix` is
//!   followed by `-` unless it already ends with one, and `<date>` is the UTC date of the
//!   document's timestamp in the storage's `indices.dependencies.date_layout` (Go layout,
//!   default `2006-01-02`); with `use_aliases`, the write alias
//!   `<prefix>jaeger-dependencies-write` instead;
//! * a query `endTs`/`lookback` searches the daily indices of that span for documents with
//!   `timestamp` in `[endTs - lookback, endTs]`, reads at most the storage's `max_doc_count`
//!   (default 10000) of them, and adds up `callCount` per (parent, child);
//! * no mapping is needed: Jaeger's own template for these indices (when it installs one)
//!   has no mappings, and the cluster maps `timestamp` as a date dynamically; so nothing is
//!   installed here.
//!
//! The exporter reads the `traces_service_graph_request_total` data points it receives (the
//! `servicegraph` connector's, or Tempo's / the OpenTelemetry Collector's of the same name):
//! delta points are added as they are; cumulative points are turned into increments per
//! series (resource, scope and point attributes), handling counter resets and restarted
//! series (a new start time). Every `interval`, the calls gathered since the last document
//! are written as one document per exporter (timestamp = when it is written; only edges with
//! calls). Since Jaeger adds documents up, several gateway replicas, each with its own
//! exporter, add up to the whole graph.
//!
//! Delivery: each document has a fixed `_id` and is written with `create`. One the cluster
//! refuses for now (connection errors, 5xx, 429) is kept as it is, timestamp included, and
//! resent after the `retry_on_failure` backoff until `max_elapsed_time` after its first
//! attempt, so a resend of a document that did arrive answers 409 and is not counted twice;
//! a permanent refusal drops it. At shutdown the calls gathered since the last interval are
//! written in one last attempt. `/metrics` counts every data point by outcome and every
//! document and call by what became of it.
//!
//! Edges from `user` (the client of root spans, `connection_type=virtual_node`) are left
//! out: Jaeger's own dependency jobs only link services that call each other, and `user` is
//! no service. Edges to virtual nodes (databases, queues, external APIs named by the calling
//! span) are kept, with the virtual node as the child, and a paired edge and a virtual edge
//! between the same two nodes (a retry that never reached the server) add up.

use super::ElasticsearchExporter;
use super::bulk::ItemOutcome;
use super::docs::Item;
use meshgate_config::DurationValue;
use meshgate_engine::telemetry::{Counter, Gauge, Registry};
use meshgate_pdata::attributes::{get, value_to_string};
use meshgate_pdata::otlp::{
    ExportMetricsServiceRequest, KeyValue, NumberDataPoint, metric, number_data_point,
};
use prost::Message;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tracing::{debug, warn};

/// The metric whose data points become dependency links.
pub const REQUEST_TOTAL: &str = "traces_service_graph_request_total";
/// Client of the edges from root spans (Tempo's and the collector's spelling).
const USER: &str = "user";
/// `connection_type` of edges from `user` and to virtual nodes.
const VIRTUAL_NODE: &str = "virtual_node";
/// OTLP `AGGREGATION_TEMPORALITY_DELTA`.
const DELTA: i32 = 1;
/// OTLP `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: i32 = 2;
/// Most documents held for another attempt; past it the oldest is given up. A document is a
/// few kilobytes, so this bounds the backlog of an unreachable cluster (with
/// `retry_on_failure.max_elapsed_time: 0s`, retried forever) to a few megabytes.
const MAX_UNSENT_DOCUMENTS: usize = 1000;

/// `dependencies`: write the service graph as Jaeger dependency documents. Its presence lets
/// the exporter take the `metrics` signal.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DependenciesConfig {
    /// The `indices.index_prefix` of the Jaeger storage that reads the documents; as in
    /// Jaeger, a `-` is put between it and `jaeger-dependencies-` unless it ends with one;
    /// empty (or null, as an unset `${env:VAR:-}` gives) means none. Default: none.
    pub index_prefix: Option<String>,
    /// The storage's `indices.dependencies.date_layout`: a Go time layout made of `2006`
    /// (year), `01` (month), `02` (day), `15` (hour) and the separators `-`, `.`, `_`. The
    /// date is the UTC date of the document. Default: `"2006-01-02"`.
    pub date_layout: String,
    /// The storage's `use_aliases`: write to the alias `<prefix>jaeger-dependencies-write`
    /// (kept by Jaeger's rollover tooling) instead of dated indices. Default: `false`.
    pub use_aliases: bool,
    /// How often the calls gathered are written, as one document. Jaeger reads at most
    /// `max_doc_count` (default 10000) documents per query: a query over `lookback` reads
    /// `lookback / interval` documents per gateway replica, e.g. 288 a day per replica at
    /// `5m`. Default: `5m`.
    pub interval: DurationValue,
    /// How long the last value of a cumulative series is kept after its last data point (as
    /// the collector's `cumulativetodelta` processor's `max_staleness`); `0s` keeps it
    /// forever. A series seen again after it was forgotten starts from its next value.
    /// Default: `1h`.
    pub max_staleness: DurationValue,
}

impl Default for DependenciesConfig {
    fn default() -> Self {
        Self {
            index_prefix: None,
            date_layout: "2006-01-02".into(),
            use_aliases: false,
            interval: DurationValue(Duration::from_secs(300)),
            max_staleness: DurationValue(Duration::from_secs(3600)),
        }
    }
}

/// One element of a date layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Year,
    Month,
    Day,
    Hour,
    Sep(char),
}

/// Where documents go: the index of a timestamp.
#[derive(Debug, Clone)]
pub(crate) struct Naming {
    /// `<prefix>jaeger-dependencies-`.
    base: String,
    layout: Vec<Part>,
    use_aliases: bool,
}

impl Naming {
    /// Checks and compiles the naming options.
    pub(crate) fn new(cfg: &DependenciesConfig) -> Result<Naming, String> {
        let prefix = cfg.index_prefix.as_deref().unwrap_or_default().trim();
        let base = match prefix {
            "" => "jaeger-dependencies-".to_string(),
            p if p.ends_with('-') => format!("{p}jaeger-dependencies-"),
            p => format!("{p}-jaeger-dependencies-"),
        };
        if !prefix.is_empty() {
            super::check_index("dependencies.index_prefix", &Some(prefix.to_string()))?;
        }
        Ok(Naming {
            base,
            layout: parse_layout(&cfg.date_layout)?,
            use_aliases: cfg.use_aliases,
        })
    }

    /// The index (or write alias) of a document stamped `unix_ms`.
    pub(crate) fn index(&self, unix_ms: u64) -> String {
        if self.use_aliases {
            return format!("{}write", self.base);
        }
        // `YYYY-MM-DDTHH:MM:SSZ`, always in UTC.
        let t = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms))
            .to_string();
        let mut out = self.base.clone();
        for p in &self.layout {
            match p {
                Part::Year => out.push_str(&t[0..4]),
                Part::Month => out.push_str(&t[5..7]),
                Part::Day => out.push_str(&t[8..10]),
                Part::Hour => out.push_str(&t[11..13]),
                Part::Sep(c) => out.push(*c),
            }
        }
        out
    }
}

/// Parses the supported subset of Go's time layouts.
fn parse_layout(layout: &str) -> Result<Vec<Part>, String> {
    let bad = |why: &str| {
        format!(
            "`dependencies.date_layout` `{layout}` {why}: use Jaeger's date layout, e.g. \
             `2006-01-02` (the default), `2006.01.02` or `2006-01-02-15`"
        )
    };
    let mut parts = Vec::new();
    let mut rest = layout;
    while !rest.is_empty() {
        let (part, len) = if rest.starts_with("2006") {
            (Part::Year, 4)
        } else if rest.starts_with("01") {
            (Part::Month, 2)
        } else if rest.starts_with("02") {
            (Part::Day, 2)
        } else if rest.starts_with("15") {
            (Part::Hour, 2)
        } else {
            let c = rest.chars().next().unwrap_or_default();
            if !matches!(c, '-' | '.' | '_') {
                return Err(bad(&format!(
                    "has `{c}`; only 2006, 01, 02, 15 and the separators - . _ are supported"
                )));
            }
            (Part::Sep(c), 1)
        };
        if !matches!(part, Part::Sep(_)) && parts.contains(&part) {
            return Err(bad("names a date field twice"));
        }
        parts.push(part);
        rest = &rest[len..];
    }
    for (need, name) in [(Part::Year, "2006"), (Part::Month, "01"), (Part::Day, "02")] {
        if !parts.contains(&need) {
            return Err(bad(&format!("lacks `{name}`")));
        }
    }
    Ok(parts)
}

/// What became of the data points of one metrics payload. Every point lands in exactly one
/// field.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PointTally {
    /// Request-count points read (their calls, possibly none, were added).
    pub used: u64,
    /// First points of cumulative series that started before the exporter did (or whose
    /// start is unknown): they set the baseline, their calls cannot be placed in time.
    pub baseline: u64,
    /// Points of edges from `user` (root spans), left out.
    pub user: u64,
    /// Cumulative points older than the last one seen of their series, left out.
    pub out_of_order: u64,
    /// Request-count points that cannot be read: no `client` or `server`, not a monotonic
    /// sum, unknown temporality, a negative or non-finite value.
    pub invalid: u64,
    /// Points of other metrics.
    pub ignored: u64,
}

impl PointTally {
    /// `(outcome label, count)` pairs.
    fn outcomes(&self) -> [(&'static str, u64); 6] {
        [
            ("used", self.used),
            ("baseline", self.baseline),
            ("user", self.user),
            ("out_of_order", self.out_of_order),
            ("invalid", self.invalid),
            ("ignored", self.ignored),
        ]
    }
}

/// Last data point of one cumulative series.
#[derive(Debug, Clone, Copy)]
struct SeriesState {
    start: u64,
    time: u64,
    value: f64,
    /// Exporter clock (unix nanos) when it was last updated, for `max_staleness`.
    seen: u64,
}

/// Turns request-count data points into calls per (parent, child). A plain struct with the
/// clock passed in, so tests drive it directly.
#[derive(Debug)]
pub(crate) struct Aggregator {
    /// Unix nanos the exporter started at: a cumulative series that started at or after it
    /// is new, so its first value is all calls made since.
    started: u64,
    max_staleness: u64,
    series: HashMap<Vec<u8>, SeriesState>,
    /// The newest point time of any series forgotten after `max_staleness`: a series seen
    /// for the first time that started before it may be a forgotten one coming back, so its
    /// first value is a baseline, not new calls.
    watermark: u64,
    /// Calls gathered per (parent, child) since the last document; fractions of calls
    /// (sampling-adjusted doubles) stay until they add up to whole ones.
    pending: BTreeMap<(String, String), f64>,
}

/// Order-independent identity of a series: resource, scope and point attributes.
fn series_key(resource: &[KeyValue], scope: &str, attrs: &[KeyValue]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, list) in [(b'r', resource), (b'p', attrs)] {
        let mut enc: Vec<Vec<u8>> = list.iter().map(|kv| kv.encode_to_vec()).collect();
        enc.sort();
        out.push(tag);
        for e in enc {
            out.extend_from_slice(&(e.len() as u32).to_le_bytes());
            out.extend_from_slice(&e);
        }
    }
    out.push(b's');
    out.extend_from_slice(scope.as_bytes());
    out
}

/// A point attribute as text; absent and empty are alike.
fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    get(attrs, key)
        .map(value_to_string)
        .filter(|s| !s.is_empty())
}

fn point_value(p: &NumberDataPoint) -> Option<f64> {
    let v = match p.value? {
        number_data_point::Value::AsInt(i) => i as f64,
        number_data_point::Value::AsDouble(d) => d,
    };
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// How one point was read.
enum Read {
    Calls(f64),
    Baseline,
    OutOfOrder,
}

impl Aggregator {
    /// An aggregator for an exporter started at `started` (unix nanos).
    pub(crate) fn new(started: u64, max_staleness: Duration) -> Aggregator {
        Aggregator {
            started,
            max_staleness: max_staleness.as_nanos() as u64,
            series: HashMap::new(),
            watermark: 0,
            pending: BTreeMap::new(),
        }
    }

    /// Reads every data point of `req`, received at `now` (unix nanos).
    pub(crate) fn consume(&mut self, req: &ExportMetricsServiceRequest, now: u64) -> PointTally {
        let mut t = PointTally::default();
        for rm in &req.resource_metrics {
            let resource: &[KeyValue] = rm
                .resource
                .as_ref()
                .map_or(&[], |r| r.attributes.as_slice());
            for sm in &rm.scope_metrics {
                let scope = sm.scope.as_ref().map_or("", |s| s.name.as_str());
                for m in &sm.metrics {
                    let points = meshgate_pdata::metric_points(m) as u64;
                    if m.name != REQUEST_TOTAL {
                        t.ignored += points;
                        continue;
                    }
                    let Some(metric::Data::Sum(sum)) = &m.data else {
                        t.invalid += points;
                        continue;
                    };
                    let temporality = sum.aggregation_temporality;
                    if !sum.is_monotonic || !matches!(temporality, DELTA | CUMULATIVE) {
                        t.invalid += points;
                        continue;
                    }
                    for p in &sum.data_points {
                        self.point(resource, scope, p, temporality == CUMULATIVE, now, &mut t);
                    }
                }
            }
        }
        t
    }

    fn point(
        &mut self,
        resource: &[KeyValue],
        scope: &str,
        p: &NumberDataPoint,
        cumulative: bool,
        now: u64,
        t: &mut PointTally,
    ) {
        let (Some(client), Some(server), Some(value)) = (
            attr(&p.attributes, "client"),
            attr(&p.attributes, "server"),
            point_value(p),
        ) else {
            t.invalid += 1;
            return;
        };
        if client == USER && attr(&p.attributes, "connection_type").as_deref() == Some(VIRTUAL_NODE)
        {
            t.user += 1;
            return;
        }
        let read = if cumulative {
            self.cumulative(series_key(resource, scope, &p.attributes), p, value, now)
        } else {
            Read::Calls(value)
        };
        match read {
            Read::Calls(calls) => {
                t.used += 1;
                if calls > 0.0 {
                    *self.pending.entry((client, server)).or_default() += calls;
                }
            }
            Read::Baseline => t.baseline += 1,
            Read::OutOfOrder => t.out_of_order += 1,
        }
    }

    /// The calls a cumulative point adds since the last point of its series.
    fn cumulative(&mut self, key: Vec<u8>, p: &NumberDataPoint, value: f64, now: u64) -> Read {
        let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
        let fresh = SeriesState {
            start,
            time,
            value,
            seen: now,
        };
        let Some(s) = self.series.get_mut(&key) else {
            // First sight: new calls only when the series provably began after the exporter
            // did and after any forgotten series' last point.
            let new = start != 0 && start >= self.started && start > self.watermark;
            self.series.insert(key, fresh);
            return if new {
                Read::Calls(value)
            } else {
                Read::Baseline
            };
        };
        if start < s.start || (start == s.start && time < s.time) {
            return Read::OutOfOrder;
        }
        let calls = if start > s.start || value < s.value {
            // Restarted (new start time) or reset: everything counted since is new.
            value
        } else {
            value - s.value
        };
        *s = fresh;
        Read::Calls(calls)
    }

    /// Forgets cumulative series not updated for `max_staleness` at `now`; returns how many.
    pub(crate) fn expire(&mut self, now: u64) -> usize {
        if self.max_staleness == 0 {
            return 0;
        }
        let before = self.series.len();
        let (limit, mut watermark) = (self.max_staleness, self.watermark);
        self.series.retain(|_, s| {
            let keep = now.saturating_sub(s.seen) < limit;
            if !keep {
                watermark = watermark.max(s.time);
            }
            keep
        });
        self.watermark = watermark;
        before - self.series.len()
    }

    /// Takes the whole calls gathered per (parent, child), in name order; fractions stay.
    pub(crate) fn take(&mut self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        self.pending.retain(|(parent, child), calls| {
            // A hair of tolerance, so 0.1 + 0.2 + 0.7 counts as the one call it is.
            let whole = (*calls + 1e-9).floor();
            if whole >= 1.0 {
                out.push((parent.clone(), child.clone(), whole as u64));
                *calls = (*calls - whole).max(0.0);
            }
            *calls > 1e-9
        });
        out
    }

    /// Cumulative series tracked.
    pub(crate) fn series_len(&self) -> usize {
        self.series.len()
    }
}

/// One dependency document, ready to be (re)sent under the same id.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    /// The bulk item: `create` action with a fixed `_id` (a resend of a document that did
    /// arrive answers 409 and is not counted twice), then the document.
    pub item: Item,
    /// Sum of its `callCount`s.
    pub calls: u64,
    /// When it was first sent, for `retry_on_failure.max_elapsed_time`.
    pub first_try: Instant,
}

/// Encodes one document of `edges` stamped `unix_ms`.
pub(crate) fn document(
    naming: &Naming,
    id: &str,
    unix_ms: u64,
    edges: &[(String, String, u64)],
) -> Doc {
    let ts = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms));
    let links: Vec<serde_json::Value> = edges
        .iter()
        .map(|(parent, child, calls)| json!({"parent": parent, "child": child, "callCount": calls}))
        .collect();
    let action = json!({"create": {"_index": naming.index(unix_ms), "_id": id}});
    let doc = json!({"timestamp": ts.to_string(), "dependencies": links});
    let mut item = serde_json::to_vec(&action).unwrap_or_default();
    item.push(b'\n');
    serde_json::to_writer(&mut item, &doc).unwrap_or_default();
    item.push(b'\n');
    Doc {
        item,
        calls: edges.iter().map(|e| e.2).sum(),
        first_try: Instant::now(),
    }
}

/// The exporter's self-telemetry for dependencies.
struct Counters {
    /// By outcome, in [`PointTally::outcomes`] order.
    points: [Counter; 6],
    docs_written: Counter,
    calls_written: Counter,
    docs_rejected: Counter,
    calls_rejected: Counter,
    docs_given_up: Counter,
    calls_given_up: Counter,
    docs_retried: Counter,
    duplicates: Counter,
    series: Gauge,
    unsent: Gauge,
}

impl Counters {
    fn new(telemetry: &Registry, id: &str) -> Counters {
        let points = PointTally::default().outcomes().map(|(o, _)| {
            telemetry.counter(
                "meshgate_exporter_elasticsearch_dependencies_points_total",
                "Metric data points read for Jaeger dependencies, by outcome: used, baseline \
                 (first point of a series older than the exporter), user (edges from root \
                 spans, left out), out_of_order, invalid (unreadable request counts), ignored \
                 (other metrics).",
                &[("exporter", id), ("outcome", o)],
            )
        });
        let docs = |o: &str| {
            telemetry.counter(
                "meshgate_exporter_elasticsearch_dependencies_documents_total",
                "Jaeger dependency documents by outcome: written, rejected (refused by the \
                 cluster for good), given_up (still failing when retries ran out, at shutdown, \
                 or past the backlog limit).",
                &[("exporter", id), ("outcome", o)],
            )
        };
        let calls = |o: &str| {
            telemetry.counter(
                "meshgate_exporter_elasticsearch_dependencies_calls_total",
                "Calls (sum of callCount) in Jaeger dependency documents, by the document's \
                 outcome.",
                &[("exporter", id), ("outcome", o)],
            )
        };
        Counters {
            points,
            docs_written: docs("written"),
            calls_written: calls("written"),
            docs_rejected: docs("rejected"),
            calls_rejected: calls("rejected"),
            docs_given_up: docs("given_up"),
            calls_given_up: calls("given_up"),
            docs_retried: telemetry.counter(
                "meshgate_exporter_elasticsearch_dependencies_document_retries_total",
                "Jaeger dependency documents kept for another attempt at the next interval.",
                &[("exporter", id)],
            ),
            duplicates: telemetry.counter(
                "meshgate_exporter_elasticsearch_dependencies_document_duplicates_total",
                "Resent Jaeger dependency documents answered 409 (the first attempt had \
                 arrived), counted as written.",
                &[("exporter", id)],
            ),
            series: telemetry.gauge(
                "meshgate_exporter_elasticsearch_dependencies_series",
                "Cumulative request-count series whose last value is kept.",
                &[("exporter", id)],
            ),
            unsent: telemetry.gauge(
                "meshgate_exporter_elasticsearch_dependencies_unsent_documents",
                "Jaeger dependency documents waiting for another attempt.",
                &[("exporter", id)],
            ),
        }
    }
}

/// Documents waiting to be sent, and the id sequence.
struct Writer {
    unsent: Vec<Doc>,
    seq: u64,
    /// The wait before the next resend of `unsent`, growing as `retry_on_failure` says.
    backoff: Duration,
}

/// Why documents are being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// An interval ended: a new document of the calls gathered, plus any unsent ones.
    Interval,
    /// Only the unsent documents, after their backoff.
    Retry,
    /// Shutdown: like `Interval`, one attempt, whatever fails is given up.
    Last,
}

/// The runtime state of `dependencies` inside an exporter.
pub(crate) struct Dependencies {
    naming: Naming,
    pub(crate) interval: Duration,
    aggregator: Mutex<Aggregator>,
    writer: tokio::sync::Mutex<Writer>,
    /// The exporter's id, for logs.
    id: String,
    /// Distinguishes this process's document ids from other replicas' and earlier runs'.
    run_id: String,
    counters: Counters,
    stop: Arc<Notify>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When the unsent documents are due again (None: nothing unsent).
    retry_at: Mutex<Option<tokio::time::Instant>>,
}

/// Unix nanos of `t`.
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A random id for this exporter instance, the stem of its document ids.
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_nanos(SystemTime::now()));
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

impl Dependencies {
    /// Checks the options; starts nothing.
    pub(crate) fn new(
        cfg: &DependenciesConfig,
        id: &str,
        telemetry: &Registry,
    ) -> Result<Dependencies, String> {
        let interval = cfg.interval.0;
        if interval < Duration::from_millis(100) {
            return Err("`dependencies.interval` must be at least 100ms".into());
        }
        Ok(Dependencies {
            naming: Naming::new(cfg)?,
            interval,
            id: id.to_string(),
            aggregator: Mutex::new(Aggregator::new(
                unix_nanos(SystemTime::now()),
                cfg.max_staleness.0,
            )),
            writer: tokio::sync::Mutex::new(Writer {
                unsent: Vec::new(),
                seq: 0,
                backoff: Duration::ZERO,
            }),
            run_id: run_id(),
            counters: Counters::new(telemetry, id),
            stop: Arc::new(Notify::new()),
            task: Mutex::new(None),
            retry_at: Mutex::new(None),
        })
    }

    fn aggregator(&self) -> MutexGuard<'_, Aggregator> {
        self.aggregator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads a metrics payload into the calls of the current interval.
    pub(crate) fn consume(&self, req: &ExportMetricsServiceRequest) -> PointTally {
        let mut a = self.aggregator();
        let t = a.consume(req, unix_nanos(SystemTime::now()));
        self.counters.series.set(a.series_len() as i64);
        drop(a);
        for (c, (_, n)) in self.counters.points.iter().zip(t.outcomes()) {
            c.add(n);
        }
        t
    }

    /// Starts writing a document every `interval` on the current tokio runtime. The task
    /// holds the exporter weakly: it ends when the exporter is dropped or shut down.
    /// Unsent documents are sent again in between, after their backoff.
    pub(crate) fn start(&self, exporter: Weak<ElasticsearchExporter>) {
        let (interval, stop) = (self.interval, self.stop.clone());
        let task = tokio::spawn(async move {
            let mut next_interval = tokio::time::Instant::now() + interval;
            loop {
                // Hold the exporter only while working, so dropping it ends the task.
                let retry_at = match exporter.upgrade() {
                    Some(exp) => exp.dependencies.as_ref().and_then(|d| d.retry_at()),
                    None => break,
                };
                let (wake, why) = match retry_at {
                    Some(r) if r < next_interval => (r, Flush::Retry),
                    _ => (next_interval, Flush::Interval),
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = stop.notified() => break,
                }
                if why == Flush::Interval {
                    // Keep the cadence, without catching up on intervals missed.
                    next_interval = (next_interval + interval).max(tokio::time::Instant::now());
                }
                let Some(exp) = exporter.upgrade() else { break };
                exp.flush_dependencies(why).await;
            }
        });
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Stops the interval task, waiting for a write in progress to finish.
    pub(crate) async fn stop(&self) {
        self.stop.notify_one();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    /// Stops the interval task without waiting (the exporter is going away).
    pub(crate) fn abort(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }

    fn retry_at(&self) -> Option<tokio::time::Instant> {
        *self.retry_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reject(&self, doc: &Doc, why: &str) {
        self.counters.docs_rejected.add(1);
        self.counters.calls_rejected.add(doc.calls);
        warn!(
            exporter = %self.id,
            "a Jaeger dependency document of {} calls was refused: {why}",
            doc.calls
        );
    }

    fn give_up(&self, doc: &Doc, why: &str) {
        self.counters.docs_given_up.add(1);
        self.counters.calls_given_up.add(doc.calls);
        warn!(
            exporter = %self.id,
            "dropping a Jaeger dependency document of {} calls: {why}",
            doc.calls
        );
    }
}

impl ElasticsearchExporter {
    /// Writes the calls gathered since the last document as a new document (not on
    /// [`Flush::Retry`]), together with the documents an earlier attempt could not write.
    /// Documents refused for now are kept and resent after a backoff until
    /// `retry_on_failure.max_elapsed_time` after their first attempt; [`Flush::Last`] makes
    /// one attempt and gives up whatever fails.
    pub(crate) async fn flush_dependencies(&self, why: Flush) {
        let Some(d) = &self.dependencies else { return };
        let mut w = d.writer.lock().await;
        let now = SystemTime::now();
        if why != Flush::Retry {
            let edges = {
                let mut a = d.aggregator();
                a.expire(unix_nanos(now));
                d.counters.series.set(a.series_len() as i64);
                a.take()
            };
            if !edges.is_empty() {
                w.seq += 1;
                let id = format!("{}-{}", d.run_id, w.seq);
                let ms = unix_nanos(now) / 1_000_000;
                w.unsent.push(document(&d.naming, &id, ms, &edges));
            }
        }
        while w.unsent.len() > MAX_UNSENT_DOCUMENTS {
            let doc = w.unsent.remove(0);
            d.give_up(&doc, "too many documents waiting for the cluster");
        }
        let docs = std::mem::take(&mut w.unsent);
        let mut keep = Vec::new();
        if !docs.is_empty() {
            let items: Vec<Item> = docs.iter().map(|doc| doc.item.clone()).collect();
            let all: Vec<usize> = (0..items.len()).collect();
            let result = self.post_bulk(&items, &all).await;
            let max_elapsed = self.retry.max_elapsed_time.0;
            let retry = |doc: Doc, why_failed: String, keep: &mut Vec<Doc>| {
                let in_time = max_elapsed.is_zero() || doc.first_try.elapsed() < max_elapsed;
                if why != Flush::Last && self.retry.enabled && in_time {
                    d.counters.docs_retried.add(1);
                    debug!(exporter = %self.id, "keeping a dependency document for another attempt: {why_failed}");
                    keep.push(doc);
                } else {
                    d.give_up(&doc, &why_failed);
                }
            };
            match result {
                Ok(outcomes) => {
                    for (doc, o) in docs.into_iter().zip(outcomes) {
                        match o {
                            ItemOutcome::Indexed | ItemOutcome::Duplicate => {
                                if o == ItemOutcome::Duplicate {
                                    d.counters.duplicates.add(1);
                                }
                                d.counters.docs_written.add(1);
                                d.counters.calls_written.add(doc.calls);
                            }
                            ItemOutcome::Retry { status } => {
                                retry(doc, format!("HTTP {status} on the document"), &mut keep)
                            }
                            ItemOutcome::Rejected {
                                status,
                                kind,
                                reason,
                            } => d.reject(&doc, &format!("HTTP {status} {kind}: {reason}")),
                        }
                    }
                }
                Err((e, _)) if e.retryable => {
                    for doc in docs {
                        retry(doc, e.message.clone(), &mut keep);
                    }
                }
                Err((e, _)) => {
                    for doc in docs {
                        d.reject(&doc, &e.message);
                    }
                }
            }
        }
        let retry_at = if keep.is_empty() {
            w.backoff = Duration::ZERO;
            None
        } else {
            w.backoff = if w.backoff.is_zero() {
                self.retry.initial_interval.0
            } else {
                w.backoff
                    .mul_f64(self.retry.multiplier.max(1.0))
                    .min(self.retry.max_interval.0)
            };
            Some(tokio::time::Instant::now() + self.backoff(w.backoff))
        };
        *d.retry_at.lock().unwrap_or_else(|e| e.into_inner()) = retry_at;
        d.counters.unsent.set(keep.len() as i64);
        w.unsent = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_pdata::attributes::kv_str;
    use meshgate_pdata::otlp::{
        Gauge, Histogram, HistogramDataPoint, InstrumentationScope, Metric, Resource,
        ResourceMetrics, ScopeMetrics, Sum,
    };

    const S: u64 = 1_000_000_000; // one second in nanos
    const STARTED: u64 = 1_700_000_000 * S;

    /// A request-count point: client, server, connection type, start, time, value.
    type P<'a> = (&'a str, &'a str, &'a str, u64, u64, i64);

    fn points(ps: &[P]) -> Vec<NumberDataPoint> {
        ps.iter()
            .map(|(c, s, ct, start, time, v)| NumberDataPoint {
                attributes: vec![
                    kv_str("client", c),
                    kv_str("server", s),
                    kv_str("connection_type", ct),
                ],
                start_time_unix_nano: *start,
                time_unix_nano: *time,
                value: Some(number_data_point::Value::AsInt(*v)),
                ..Default::default()
            })
            .collect()
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", "meshgate")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "meshgate/servicegraph".into(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn sum(name: &str, temporality: i32, ps: &[P]) -> Metric {
        Metric {
            name: name.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points(ps),
                aggregation_temporality: temporality,
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }

    fn cumulative(ps: &[P]) -> ExportMetricsServiceRequest {
        request(vec![sum(REQUEST_TOTAL, CUMULATIVE, ps)])
    }

    fn taken(a: &mut Aggregator) -> Vec<(String, String, u64)> {
        a.take()
    }

    fn edges(list: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
        list.iter()
            .map(|(p, c, n)| (p.to_string(), c.to_string(), *n))
            .collect()
    }

    #[test]
    fn cumulative_points_become_increments_per_interval() {
        let mut a = Aggregator::new(STARTED, Duration::from_secs(3600));
        let st = STARTED + S;
        // First sight of series that began after the exporter: all of their value is new.
        let t = a.consume(
            &cumulative(&[
                ("web", "api", "", st, st + S, 5),
                ("api", "db", "database", st, st + S, 2),
            ]),
            STARTED + 2 * S,
        );
        assert_eq!(t.used, 2);
        assert_eq!(taken(&mut a), edges(&[("api", "db", 2), ("web", "api", 5)]));
        // The same values again add nothing; an increase adds the difference.
        a.consume(
            &cumulative(&[
                ("web", "api", "", st, st + 2 * S, 5),
                ("api", "db", "database", st, st + 2 * S, 7),
            ]),
            STARTED + 3 * S,
        );
        a.consume(
            &cumulative(&[("web", "api", "", st, st + 3 * S, 9)]),
            STARTED + 4 * S,
        );
        assert_eq!(taken(&mut a), edges(&[("api", "db", 5), ("web", "api", 4)]));
        // Nothing new: nothing to write.
        assert!(taken(&mut a).is_empty());
    }

    #[test]
    fn resets_restarts_and_out_of_order_points() {
        let mut a = Aggregator::new(STARTED, Duration::ZERO);
        let st = STARTED + S;
        a.consume(&cumulative(&[("a", "b", "", st, st + S, 10)]), STARTED);
        assert_eq!(taken(&mut a), edges(&[("a", "b", 10)]));
        // A lower value under the same start: the counter was reset, all of it is new.
        a.consume(&cumulative(&[("a", "b", "", st, st + 2 * S, 3)]), STARTED);
        assert_eq!(taken(&mut a), edges(&[("a", "b", 3)]));
        // A newer start time: a new incarnation of the series, all of it is new even when
        // higher than the last value.
        let st2 = st + 10 * S;
        a.consume(&cumulative(&[("a", "b", "", st2, st2 + S, 12)]), STARTED);
        assert_eq!(taken(&mut a), edges(&[("a", "b", 12)]));
        // Points of the old incarnation, or older than the last one: left out.
        let t = a.consume(
            &cumulative(&[
                ("a", "b", "", st, st + 30 * S, 50),
                ("a", "b", "", st2, st2, 11),
            ]),
            STARTED,
        );
        assert_eq!((t.out_of_order, t.used), (2, 0));
        assert!(taken(&mut a).is_empty());
        a.consume(
            &cumulative(&[("a", "b", "", st2, st2 + 2 * S, 15)]),
            STARTED,
        );
        assert_eq!(taken(&mut a), edges(&[("a", "b", 3)]));
    }

    #[test]
    fn series_older_than_the_exporter_start_from_a_baseline() {
        let mut a = Aggregator::new(STARTED, Duration::ZERO);
        let t = a.consume(
            &cumulative(&[
                ("a", "b", "", STARTED - S, STARTED + S, 100),
                ("c", "d", "", 0, STARTED + S, 100),
            ]),
            STARTED + S,
        );
        assert_eq!((t.baseline, t.used), (2, 0));
        assert!(taken(&mut a).is_empty());
        a.consume(
            &cumulative(&[
                ("a", "b", "", STARTED - S, STARTED + 2 * S, 104),
                ("c", "d", "", 0, STARTED + 2 * S, 101),
            ]),
            STARTED + 2 * S,
        );
        assert_eq!(taken(&mut a), edges(&[("a", "b", 4), ("c", "d", 1)]));
    }

    #[test]
    fn forgotten_series_coming_back_start_from_a_baseline() {
        let mut a = Aggregator::new(STARTED, Duration::from_secs(60));
        let st = STARTED + S;
        a.consume(&cumulative(&[("a", "b", "", st, st, 4)]), st);
        assert_eq!(taken(&mut a), edges(&[("a", "b", 4)]));
        assert_eq!(a.expire(st + 59 * S), 0);
        assert_eq!(a.expire(st + 61 * S), 1);
        assert_eq!(a.series_len(), 0);
        // The same series again (same start): its value was counted already.
        let t = a.consume(
            &cumulative(&[("a", "b", "", st, st + 70 * S, 6)]),
            st + 70 * S,
        );
        assert_eq!(t.baseline, 1);
        assert!(taken(&mut a).is_empty());
        a.consume(
            &cumulative(&[("a", "b", "", st, st + 71 * S, 8)]),
            st + 71 * S,
        );
        assert_eq!(taken(&mut a), edges(&[("a", "b", 2)]));
        // A series that began after the forgotten one's last point is new.
        let st3 = st + 65 * S;
        a.consume(&cumulative(&[("x", "y", "", st3, st3 + S, 3)]), st + 72 * S);
        assert_eq!(taken(&mut a), edges(&[("x", "y", 3)]));
    }

    #[test]
    fn delta_points_add_up_and_series_of_one_edge_merge() {
        let mut a = Aggregator::new(STARTED, Duration::ZERO);
        let st = STARTED + S;
        // Two replicas (instance ids) and a paired plus a virtual series of the same edge.
        let mut m = sum(
            REQUEST_TOTAL,
            CUMULATIVE,
            &[
                ("web", "api", "", st, st, 3),
                ("web", "api", "", st, st, 4),
                ("web", "api", "virtual_node", st, st, 1),
            ],
        );
        if let Some(metric::Data::Sum(s)) = &mut m.data {
            s.data_points[0]
                .attributes
                .push(kv_str("meshgate.instance.id", "gw-0"));
            s.data_points[1]
                .attributes
                .push(kv_str("meshgate.instance.id", "gw-1"));
        }
        let t = a.consume(&request(vec![m]), st);
        assert_eq!(t.used, 3);
        assert_eq!(a.series_len(), 3);
        assert_eq!(taken(&mut a), edges(&[("web", "api", 8)]));
        let delta = request(vec![sum(
            REQUEST_TOTAL,
            DELTA,
            &[
                ("web", "api", "", st, st + S, 2),
                ("web", "api", "", st + S, st + 2 * S, 5),
            ],
        )]);
        let t = a.consume(&delta, st);
        assert_eq!(t.used, 2);
        assert_eq!(a.series_len(), 3, "delta points keep no state");
        assert_eq!(taken(&mut a), edges(&[("web", "api", 7)]));
    }

    #[test]
    fn every_point_gets_one_outcome() {
        let mut a = Aggregator::new(STARTED, Duration::ZERO);
        let st = STARTED + S;
        let mut double = sum(REQUEST_TOTAL, DELTA, &[("p", "q", "", st, st, 0)]);
        if let Some(metric::Data::Sum(s)) = &mut double.data {
            s.data_points[0].value = Some(number_data_point::Value::AsDouble(0.5));
        }
        let mut not_monotonic = sum(REQUEST_TOTAL, CUMULATIVE, &[("p", "q", "", st, st, 1)]);
        if let Some(metric::Data::Sum(s)) = &mut not_monotonic.data {
            s.is_monotonic = false;
        }
        let metrics = vec![
            sum(
                REQUEST_TOTAL,
                CUMULATIVE,
                &[
                    ("user", "web", "virtual_node", st, st, 9),
                    // A service really named `user` calling another is an edge.
                    ("user", "web", "", st, st, 1),
                    ("", "web", "", st, st, 1),
                    ("web", "api", "", st, st, -1),
                ],
            ),
            sum(REQUEST_TOTAL, 0, &[("p", "q", "", st, st, 1)]),
            not_monotonic,
            double.clone(),
            double,
            sum(
                "traces_service_graph_request_failed_total",
                CUMULATIVE,
                &[("web", "api", "", st, st, 1)],
            ),
            Metric {
                name: "traces_service_graph_request_server_seconds".into(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint::default(); 2],
                    aggregation_temporality: CUMULATIVE,
                })),
                ..Default::default()
            },
            Metric {
                name: REQUEST_TOTAL.into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: points(&[("p", "q", "", st, st, 1)]),
                })),
                ..Default::default()
            },
        ];
        let req = request(metrics);
        let t = a.consume(&req, st);
        assert_eq!(
            t,
            PointTally {
                used: 3,
                baseline: 0,
                user: 1,
                out_of_order: 0,
                invalid: 5,
                ignored: 3,
            }
        );
        let total: u64 = t.outcomes().iter().map(|o| o.1).sum();
        assert_eq!(
            total as usize,
            meshgate_pdata::Payload::Metrics(req).item_count()
        );
        // Half calls add up to a whole one; the user-named service's call is there.
        assert_eq!(taken(&mut a), edges(&[("p", "q", 1), ("user", "web", 1)]));
    }

    #[test]
    fn index_names_follow_jaeger() {
        let cfg = |prefix: &str, layout: &str, aliases: bool| DependenciesConfig {
            index_prefix: Some(prefix.into()),
            date_layout: layout.into(),
            use_aliases: aliases,
            ..Default::default()
        };
        // 2023-11-14T22:13:20Z
        let ms = 1_700_000_000_000;
        let name = |c: DependenciesConfig| Naming::new(&c).unwrap().index(ms);
        assert_eq!(
            name(DependenciesConfig::default()),
            "jaeger-dependencies-2023-11-14"
        );
        assert_eq!(
            name(cfg("prod", "2006-01-02", false)),
            "prod-jaeger-dependencies-2023-11-14"
        );
        assert_eq!(
            name(cfg("prod-", "2006.01.02", false)),
            "prod-jaeger-dependencies-2023.11.14"
        );
        assert_eq!(
            name(cfg("", "2006-01-02-15", false)),
            "jaeger-dependencies-2023-11-14-22"
        );
        assert_eq!(
            name(cfg("prod", "2006-01-02", true)),
            "prod-jaeger-dependencies-write"
        );
        for (layout, why) in [
            ("2006-01", "lacks `02`"),
            ("Jan 2 2006", "has `J`"),
            ("2006-01-02-01", "twice"),
            ("", "lacks `2006`"),
        ] {
            let e = Naming::new(&cfg("", layout, false)).unwrap_err();
            assert!(
                e.contains(why) && e.contains("dependencies.date_layout"),
                "{e}"
            );
        }
        let e = Naming::new(&cfg("Prod", "2006-01-02", false)).unwrap_err();
        assert!(e.contains("dependencies.index_prefix"), "{e}");
    }

    #[test]
    fn documents_have_jaegers_shape() {
        let naming = Naming::new(&DependenciesConfig::default()).unwrap();
        let doc = document(
            &naming,
            "run-1",
            1_700_000_000_123,
            &edges(&[("api", "db", 2), ("web", "api", 5)]),
        );
        assert_eq!(doc.calls, 7);
        let text = String::from_utf8(doc.item).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"create": {"_index": "jaeger-dependencies-2023-11-14", "_id": "run-1"}})
        );
        assert_eq!(
            lines[1],
            json!({
                "timestamp": "2023-11-14T22:13:20.123Z",
                "dependencies": [
                    {"parent": "api", "child": "db", "callCount": 2},
                    {"parent": "web", "child": "api", "callCount": 5},
                ]
            })
        );
    }
}
