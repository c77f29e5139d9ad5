//! `prometheus`: a scrape endpoint (`GET /metrics`) serving the current value of every series
//! received, in the text exposition format 0.0.4, or OpenMetrics 1.0 when the scraper asks
//! for it (`Accept: application/openmetrics-text`). Series not updated for
//! `metric_expiration` disappear. Delta sums and histograms are accumulated.

use super::ResourceToTelemetry;
use super::translate::{Kind, Options, Series, Translator, Value, format_float};
use crate::common;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use meshgate_config::DurationValue;
use meshgate_engine::{BuildContext, ExportError, Exported, Exporter, ExporterFactory, Factory};
use meshgate_pdata::{Payload, Signal};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Config of the `prometheus` exporter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// Address the scrape endpoint listens on (`GET /metrics`); `0.0.0.0:8889` to accept
    /// other hosts. Default: `127.0.0.1:8889`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Prefix of every metric name (`<namespace>_`). Default: none.
    #[serde(default)]
    pub namespace: String,
    /// Labels added to every series that does not have them. Default: none.
    #[serde(default)]
    pub const_labels: BTreeMap<String, String>,
    /// `enabled: true` puts every resource attribute on every series as a label (instead of
    /// only on `target_info`). Default: `enabled: false`.
    #[serde(default)]
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
    /// A series not updated for this long is no longer served (and a delta series' running
    /// total is forgotten). Default: `5m`.
    #[serde(default = "default_expiration")]
    pub metric_expiration: DurationValue,
    /// Answer in OpenMetrics 1.0 when the scraper's `Accept` asks for
    /// `application/openmetrics-text`; when false always text format 0.0.4. Default: `true`.
    #[serde(default = "default_true")]
    pub enable_open_metrics: bool,
    /// Write each sample's timestamp (the OTLP point's time); otherwise the scraper stamps
    /// samples with the scrape time. Default: `false`.
    #[serde(default)]
    pub send_timestamps: bool,
}

fn default_endpoint() -> String {
    "127.0.0.1:8889".into()
}
fn default_expiration() -> DurationValue {
    DurationValue(Duration::from_secs(300))
}
fn default_true() -> bool {
    true
}

fn parse(config: &serde_json::Value) -> Result<(ScrapeConfig, SocketAddr), String> {
    let cfg: ScrapeConfig = common::parse_config(config)?;
    let addr: SocketAddr = cfg.endpoint.trim().parse().map_err(|_| {
        format!(
            "`endpoint` `{}` is not a host:port address, e.g. `127.0.0.1:8889`",
            cfg.endpoint
        )
    })?;
    if cfg.metric_expiration.0.is_zero() {
        return Err("`metric_expiration` must be greater than 0s".into());
    }
    Ok((cfg, addr))
}

/// Factory of the `prometheus` exporter.
pub struct PrometheusExporterFactory;

impl Factory for PrometheusExporterFactory {
    fn type_name(&self) -> &'static str {
        "prometheus"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn description(&self) -> &'static str {
        "Serves received metrics on a Prometheus scrape endpoint (text format / OpenMetrics)"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(ScrapeConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        parse(config).map(|_| ())
    }
}

impl ExporterFactory for PrometheusExporterFactory {
    /// Binds the endpoint (a busy port fails startup) and starts serving it.
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let (cfg, addr) = parse(ctx.config)?;
        Ok(Arc::new(ScrapeExporter::start(&cfg, addr)?))
    }
    fn uses_queue_and_retry(&self) -> bool {
        false
    }
}

/// The current series and how to render them.
pub struct Store {
    translator: Translator,
    series: Mutex<Series_>,
    expiration: Duration,
    open_metrics: bool,
    send_timestamps: bool,
}

#[derive(Default)]
struct Series_ {
    map: HashMap<String, (Series, Instant)>,
    last_sweep: Option<Instant>,
}

impl Store {
    /// A store for `cfg`.
    pub fn new(cfg: &ScrapeConfig) -> Self {
        let opts = Options {
            namespace: cfg.namespace.clone(),
            resource_to_telemetry: cfg.resource_to_telemetry_conversion.enabled,
            extra_labels: Vec::new(),
        }
        .with_extra_labels(&cfg.const_labels);
        Self {
            translator: Translator::new(opts, cfg.metric_expiration.0),
            series: Mutex::new(Series_::default()),
            expiration: cfg.metric_expiration.0,
            open_metrics: cfg.enable_open_metrics,
            send_timestamps: cfg.send_timestamps,
        }
    }

    /// Records a request's points; returns the points it could not translate and why.
    pub fn ingest(&self, req: &meshgate_pdata::otlp::ExportMetricsServiceRequest) -> Exported {
        let conv = self.translator.convert(req);
        let now = Instant::now();
        let mut s = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for series in conv.series {
            let key = series.key();
            if series.stale {
                s.map.remove(&key);
                continue;
            }
            match s.map.get_mut(&key) {
                Some((old, seen)) => {
                    if series.timestamp_ms >= old.timestamp_ms {
                        *old = series;
                    }
                    *seen = now;
                }
                None => {
                    s.map.insert(key, (series, now));
                }
            }
        }
        if s.last_sweep
            .is_none_or(|t| now.duration_since(t) > self.expiration / 4)
        {
            let exp = self.expiration;
            s.map
                .retain(|_, (_, seen)| now.duration_since(*seen) <= exp);
            s.last_sweep = Some(now);
        }
        Exported {
            rejected: conv.dropped,
            message: (!conv.drop_reasons.is_empty()).then(|| conv.drop_reasons.join("; ")),
        }
    }

    /// Series currently served.
    pub fn len(&self) -> usize {
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    /// Whether no series is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The exposition for a scraper sending `accept`: `(content type, body)`.
    pub fn render(&self, accept: &str) -> (&'static str, String) {
        let om = self.open_metrics && accept.contains("application/openmetrics-text");
        let now = Instant::now();
        let mut s = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let exp = self.expiration;
        s.map
            .retain(|_, (_, seen)| now.duration_since(*seen) <= exp);
        let mut families: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
        for (series, _) in s.map.values() {
            families
                .entry(series.family.name.as_str())
                .or_default()
                .push(series);
        }
        let mut out = String::with_capacity(256 * s.map.len() + 16);
        for (name, mut list) in families {
            list.sort_by(|a, b| a.labels.cmp(&b.labels));
            let fam = &list[0].family;
            let fam_name = if om && fam.kind == Kind::Counter {
                name.strip_suffix("_total").unwrap_or(name)
            } else {
                name
            };
            let kind = if om && fam.name == "target_info" {
                // OpenMetrics has an `info` type; `target_info` is its `target` family.
                "info"
            } else {
                fam.kind.as_str()
            };
            let fam_name = if kind == "info" {
                fam_name.strip_suffix("_info").unwrap_or(fam_name)
            } else {
                fam_name
            };
            let _ = writeln!(out, "# TYPE {fam_name} {kind}");
            if om && !fam.unit.is_empty() && fam_name.ends_with(&format!("_{}", fam.unit)) {
                let _ = writeln!(out, "# UNIT {fam_name} {}", fam.unit);
            }
            if !fam.help.is_empty() {
                let _ = writeln!(out, "# HELP {fam_name} {}", escape_help(&fam.help, om));
            }
            for series in list {
                let ts = self.send_timestamps.then(|| {
                    if om {
                        format!(" {}", format_float(series.timestamp_ms as f64 / 1000.0))
                    } else {
                        format!(" {}", series.timestamp_ms)
                    }
                });
                write_series(&mut out, series, ts.as_deref().unwrap_or(""));
            }
        }
        if om {
            out.push_str("# EOF\n");
            (OPENMETRICS_CONTENT_TYPE, out)
        } else {
            (TEXT_CONTENT_TYPE, out)
        }
    }
}

fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(h: &str, om: bool) -> String {
    let mut s = String::with_capacity(h.len());
    for c in h.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' if om => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    s
}

fn write_series(out: &mut String, series: &Series, ts: &str) {
    let name = &series.family.name;
    let mut line = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
        out.push_str(name);
        out.push_str(suffix);
        let mut labels: Vec<(&str, &str)> = series
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some((k, v)) = &extra {
            labels.retain(|l| l.0 != *k);
            labels.push((k, v.as_str()));
        }
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                escape_label_value(v, out);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        out.push_str(&format_float(value));
        out.push_str(ts);
        out.push('\n');
    };
    match &series.value {
        Value::Number(v) => line("", None, *v),
        Value::Histogram(h) => {
            for (le, c) in &h.buckets {
                line("_bucket", Some(("le", format_float(*le))), *c as f64);
            }
            line("_count", None, h.count as f64);
            if let Some(s) = h.sum {
                line("_sum", None, s);
            }
        }
        Value::Summary(s) => {
            for (q, v) in &s.quantiles {
                line("", Some(("quantile", format_float(*q))), *v);
            }
            line("_count", None, s.count as f64);
            line("_sum", None, s.sum);
        }
    }
}

/// The `prometheus` exporter: its store and the server task.
pub struct ScrapeExporter {
    store: Arc<Store>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    addr: SocketAddr,
}

async fn serve_metrics(State(store): State<Arc<Store>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (ct, body) = store.render(accept);
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}

impl ScrapeExporter {
    /// Binds `addr` and serves `/metrics` on the current tokio runtime.
    pub fn start(cfg: &ScrapeConfig, addr: SocketAddr) -> Result<Self, String> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "the scrape endpoint needs a running tokio runtime".to_string())?;
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr}: {}", common::io_error_text(&e)))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let addr = std_listener.local_addr().unwrap_or(addr);
        let store = Arc::new(Store::new(cfg));
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(serve_metrics))
            .with_state(store.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let _guard = handle.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let task = handle.spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::warn!("prometheus scrape endpoint on {addr} failed: {e}");
            }
        });
        tracing::info!("prometheus exporter: serving /metrics on {addr}");
        Ok(Self {
            store,
            stop: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The series store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[async_trait::async_trait]
impl Exporter for ScrapeExporter {
    async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
        match data {
            Payload::Metrics(m) => Ok(self.store.ingest(m)),
            _ => Ok(Exported::default()),
        }
    }

    async fn shutdown(&self) {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task
            && tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
        {
            tracing::warn!("prometheus scrape endpoint did not stop within 5s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::translate::tests::{T0, gauge, histogram, request, sum, summary_metric};

    fn cfg(extra: serde_json::Value) -> ScrapeConfig {
        let mut c =
            serde_json::json!({"endpoint": "127.0.0.1:0", "const_labels": {"cluster": "eu-1"}});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        common::parse_config(&c).unwrap()
    }

    fn payload() -> meshgate_pdata::otlp::ExportMetricsServiceRequest {
        let mut r = request(vec![
            sum("http.requests", "", false, &[(T0, 5.0)]),
            gauge("queue.depth", "", T0, 3),
            histogram("rpc.duration", false, T0, &[1, 2, 3, 4]),
            summary_metric("gc.pause", T0),
        ]);
        if let Some(meshgate_pdata::otlp::metric::Data::Sum(s)) =
            &mut r.resource_metrics[0].scope_metrics[0].metrics[0].data
        {
            s.data_points[0]
                .attributes
                .push(meshgate_pdata::attributes::kv_str("path", "/a\"b\\c"));
        }
        r
    }

    const L: &str = r#"cluster="eu-1",instance="pod-1",job="shop/checkout",otel_scope_name="envoy",otel_scope_version="1.2""#;

    #[test]
    fn text_format() {
        let s = Store::new(&cfg(serde_json::json!({})));
        s.ingest(&payload());
        let (ct, body) = s.render("text/plain");
        assert_eq!(ct, TEXT_CONTENT_TYPE);
        let want = [
            "# TYPE gc_pause_milliseconds summary".to_string(),
            format!("gc_pause_milliseconds{{{L},quantile=\"0.5\"}} 10"),
            format!("gc_pause_milliseconds{{{L},quantile=\"0.99\"}} 40"),
            format!("gc_pause_milliseconds_count{{{L}}} 10"),
            format!("gc_pause_milliseconds_sum{{{L}}} 123"),
            "# TYPE http_requests_total counter".to_string(),
            "# HELP http_requests_total http.requests help".to_string(),
            r#"http_requests_total{cluster="eu-1",http_method="GET",instance="pod-1",job="shop/checkout",otel_scope_name="envoy",otel_scope_version="1.2",path="/a\"b\\c"} 5"#.to_string(),
            "# TYPE queue_depth gauge".to_string(),
            format!("queue_depth{{{L}}} 3"),
            "# TYPE rpc_duration_seconds histogram".to_string(),
            format!("rpc_duration_seconds_bucket{{{L},le=\"0.1\"}} 1"),
            format!("rpc_duration_seconds_bucket{{{L},le=\"0.5\"}} 3"),
            format!("rpc_duration_seconds_bucket{{{L},le=\"1\"}} 6"),
            format!("rpc_duration_seconds_bucket{{{L},le=\"+Inf\"}} 10"),
            format!("rpc_duration_seconds_count{{{L}}} 10"),
            format!("rpc_duration_seconds_sum{{{L}}} 2"),
            "# TYPE target_info gauge".to_string(),
            "# HELP target_info Target metadata".to_string(),
            r#"target_info{cluster="eu-1",host_name="node-7",instance="pod-1",job="shop/checkout",k8s_pod_name="checkout-abc"} 1"#.to_string(),
        ];
        assert_eq!(body.lines().collect::<Vec<_>>(), want, "{body}");
    }

    #[test]
    fn open_metrics_when_asked() {
        let s = Store::new(&cfg(serde_json::json!({"send_timestamps": true})));
        s.ingest(&payload());
        let (ct, body) = s.render("application/openmetrics-text;version=1.0.0,text/plain;q=0.5");
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(body.contains("# TYPE http_requests counter\n"), "{body}");
        assert!(
            body.contains(
                "# TYPE rpc_duration_seconds histogram\n# UNIT rpc_duration_seconds seconds\n"
            ),
            "{body}"
        );
        assert!(body.contains("# TYPE target info\n"), "{body}");
        assert!(
            body.contains(&format!("queue_depth{{{L}}} 3 1700000000\n")),
            "{body}"
        );
        // Disabled: always text.
        let s = Store::new(&cfg(serde_json::json!({"enable_open_metrics": false})));
        s.ingest(&payload());
        let (ct, body) = s.render("application/openmetrics-text");
        assert_eq!(ct, TEXT_CONTENT_TYPE);
        assert!(!body.contains("# EOF"));
    }

    #[test]
    fn current_values_deltas_stale_and_expiry() {
        let s = Store::new(&cfg(serde_json::json!({"metric_expiration": "200ms"})));
        for i in 1..=3 {
            let mut r = request(vec![sum("calls", "", true, &[(T0 + i, 2.0)])]);
            r.resource_metrics[0].resource = None;
            s.ingest(&r);
        }
        let (_, body) = s.render("");
        assert!(body.contains(r#"calls_total{cluster="eu-1",http_method="GET",otel_scope_name="envoy",otel_scope_version="1.2"} 6"#), "{body}");
        // A gauge goes to its newest value; an older point does not win.
        let g = |t, v| {
            let mut r = request(vec![gauge("g", "", t, v)]);
            r.resource_metrics[0].resource = None;
            r
        };
        s.ingest(&g(T0 + 2_000_000, 7));
        s.ingest(&g(T0 + 1_000_000, 1));
        assert!(s.render("").1.contains("} 7\n"));
        // NoRecordedValue removes the series.
        let mut stale = g(T0 + 3_000_000, 0);
        if let Some(meshgate_pdata::otlp::metric::Data::Gauge(x)) =
            &mut stale.resource_metrics[0].scope_metrics[0].metrics[0].data
        {
            x.data_points[0].flags = 1;
        }
        s.ingest(&stale);
        assert!(!s.render("").1.contains("# TYPE g gauge"));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(s.render("").1, "");
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn serves_over_http_and_stops_on_shutdown() {
        let e = ScrapeExporter::start(&cfg(serde_json::json!({})), "127.0.0.1:0".parse().unwrap())
            .unwrap();
        let addr = e.local_addr();
        e.export(&Payload::Metrics(payload())).await.unwrap();
        let body = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n").unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        })
        .await
        .unwrap();
        assert!(body.contains("application/openmetrics-text"), "{body}");
        assert!(body.contains("rpc_duration_seconds_bucket"), "{body}");
        // The port is taken while it runs.
        let c = cfg(serde_json::json!({}));
        assert!(
            ScrapeExporter::start(&c, addr)
                .err()
                .unwrap()
                .contains("cannot listen")
        );
        e.shutdown().await;
        assert!(std::net::TcpStream::connect(addr).is_err());
    }

    #[test]
    fn config_is_checked_without_binding() {
        let f = PrometheusExporterFactory;
        f.check(&serde_json::json!(null)).unwrap();
        assert!(f.check(&serde_json::json!({"endpoint": "nope"})).is_err());
        assert!(
            f.check(&serde_json::json!({"metric_expiration": "0s"}))
                .is_err()
        );
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = held.local_addr().unwrap().to_string();
        f.check(&serde_json::json!({"endpoint": busy})).unwrap();
    }
}
