//! `loadbalancing`: sends every span of a trace (and every log record of it) to the same one
//! of several OTLP/gRPC endpoints, so a second tier running `tail_sampling` and
//! `servicegraph` sees whole traces. Keys are placed on a consistent-hash ring ([`ring`]):
//! adding or removing one of N endpoints moves only about 1/N of the traces. The endpoints
//! come from a static list, the A/AAAA records of a DNS name (a Kubernetes headless Service),
//! or a file (`resolver.rs`).
//!
//! Unlike the OpenTelemetry Collector's exporter of the same name, each endpoint has its own
//! bounded queue and senders (`router.rs`): `export` cuts a batch into one share per owner,
//! queues the shares and returns; each endpoint retries only its own requests, so one failing
//! endpoint never makes the others' shares be sent twice. When an endpoint leaves the ring,
//! what is queued for it (and what it fails to send) is cut again over the new ring and
//! queued at the new owners instead of being lost.
//!
//! # Accounting
//!
//! The engine runs this exporter `ordered` (one engine sender, no engine retries, the
//! top-level `sending_queue` in front): its counters see an item as `sent` once it is
//! queued at its endpoint, and as `dropped{reason="retries_exhausted"}` when `on_full: block`
//! waited `block_timeout` in vain (then no part of the batch was queued). What happens after
//! that is counted per endpoint and signal by
//! `meshgate_exporter_loadbalancing_items_total{exporter,endpoint,signal,outcome}`:
//!
//! `routed = sent + dropped + rerouted + queue_items` for every endpoint, where `routed`
//! counts items queued at the endpoint (from `export` or re-routed from an endpoint that
//! left), `rerouted` items moved away from it, and `queue_items` is the
//! `meshgate_exporter_loadbalancing_queue_items{exporter,endpoint}` gauge. Summed over the
//! endpoints, `routed - rerouted` equals the engine's `sent` for the exporter. Drops have a
//! reason in `meshgate_exporter_loadbalancing_dropped_items_total` (`queue_full`,
//! `permanent_error`, `retries_exhausted`, `rejected_by_backend`, `shutdown`). Also:
//! `..._ring_changes_total`, `..._endpoints`, `..._send_failures_total{endpoint}` and
//! `..._resolver_errors_total`.
//!
//! # Drain
//!
//! [`Exporter::shutdown`] stops the resolver, lets endpoints that already left re-route
//! what they hold, then sends every queue. An endpoint that fails during the drain keeps
//! retrying for one `protocol.otlp.timeout` (its last attempt may take one more), then drops
//! what it holds, counted with `reason="shutdown"`: the drain of this exporter takes at most
//! about twice `protocol.otlp.timeout` beyond the time healthy endpoints need to send.

pub mod config;
mod resolver;
pub mod ring;
mod router;
mod split;
#[cfg(test)]
mod tests;

use crate::otlp::OtlpExporter;
use config::{LoadBalancingConfig, ResolverChoice};
use meshgate_engine::{BuildContext, ExportError, Exported, Exporter, ExporterFactory, Factory};
use meshgate_pdata::{Payload, Signal};
use router::{Router, Settings};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::info;

/// Merge cap of queued shares when `max_request_size` is 0 (uncapped).
const UNCAPPED_MERGE_BYTES: usize = 4 * 1024 * 1024;

/// Factory of the `loadbalancing` exporter.
pub struct LoadBalancingExporterFactory;

impl Factory for LoadBalancingExporterFactory {
    fn type_name(&self) -> &'static str {
        "loadbalancing"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "Routes spans and logs by trace id (or service) over a consistent-hash ring of OTLP/gRPC endpoints (static, DNS or file resolver)"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(LoadBalancingConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        config::parse(config).map(|_| ())
    }
}

impl ExporterFactory for LoadBalancingExporterFactory {
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let (cfg, resolver) = config::parse(ctx.config)?;
        Ok(Arc::new(LoadBalancingExporter::new(
            &ctx.id,
            cfg,
            resolver,
            ctx.telemetry,
        )?))
    }
    /// One engine sender and no engine retries: routing is a quick hand-off to the
    /// endpoints' own queues, which retry per endpoint (see the module documentation).
    fn ordered(&self) -> bool {
        true
    }
}

/// The `loadbalancing` exporter.
pub struct LoadBalancingExporter {
    router: Arc<Router>,
    resolver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    max_request_bytes: Option<usize>,
    block_timeout: Duration,
}

impl LoadBalancingExporter {
    /// Builds the exporter and starts its resolver; static and file endpoints are on the
    /// ring before this returns. Needs a Tokio runtime.
    pub fn new(
        id: &str,
        cfg: LoadBalancingConfig,
        resolver: ResolverChoice,
        telemetry: &meshgate_engine::Registry,
    ) -> Result<Self, String> {
        let otlp = cfg.protocol.otlp;
        let max = otlp.max_request_size.0 as usize;
        let max_request_bytes = (max > 0).then_some(max);
        let queue = otlp.sending_queue.clone();
        let retry = otlp.retry_on_failure.clone();
        let block_timeout = queue.block_timeout.0;
        let mut first = resolver::initial(&resolver)?;
        // The per-endpoint client must accept the settings (checked once here, so a bad
        // header is a build error rather than an endpoint silently left out).
        OtlpExporter::prepare(&otlp.client_config("localhost:4317"))
            .map_err(|e| format!("protocol.otlp: {e}"))?;
        let router = Router::new(
            Settings {
                id: id.to_string(),
                routing: cfg.routing_key,
                otlp,
                queue,
                retry,
                merge_bytes: max_request_bytes.unwrap_or(UNCAPPED_MERGE_BYTES),
            },
            telemetry,
        );
        if let Some(list) = first.endpoints.take() {
            router.apply(list);
        }
        let errors = telemetry.counter(
            "meshgate_exporter_loadbalancing_resolver_errors_total",
            "Resolutions that failed or found no endpoint (the current endpoints were kept).",
            &[("exporter", id)],
        );
        info!(exporter = %id, resolver = %resolver::describe(&resolver), "load balancing over {} endpoint(s)", router.current().ring.len());
        let task = tokio::spawn(resolver::run(
            resolver,
            first,
            router.clone(),
            errors,
            id.to_string(),
        ));
        Ok(Self {
            router,
            resolver: Mutex::new(Some(task)),
            max_request_bytes,
            block_timeout,
        })
    }

    /// The endpoints currently on the ring, sorted.
    pub fn endpoints(&self) -> Vec<String> {
        self.router.current().ring.endpoints().to_vec()
    }

    fn stop_resolver(&self) -> Option<tokio::task::JoinHandle<()>> {
        let task = self
            .resolver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = &task {
            t.abort();
        }
        task
    }
}

#[async_trait::async_trait]
impl Exporter for LoadBalancingExporter {
    fn max_request_bytes(&self) -> Option<usize> {
        self.max_request_bytes
    }

    async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
        if data.signal() == Signal::Metrics {
            return Err(ExportError::permanent(
                "the loadbalancing exporter routes traces and logs, not metrics",
            ));
        }
        if data.is_empty() {
            return Ok(Exported::default());
        }
        let deadline = tokio::time::Instant::now() + self.block_timeout;
        self.router.route(data, deadline).await?;
        Ok(Exported::default())
    }

    async fn shutdown(&self) {
        if let Some(task) = self.stop_resolver() {
            let _ = task.await;
        }
        self.router.shutdown().await;
    }

    fn undelivered(&self) -> u64 {
        self.router.dropped_on_shutdown()
    }
}

impl Drop for LoadBalancingExporter {
    fn drop(&mut self) {
        self.stop_resolver();
        self.router.abort();
    }
}
