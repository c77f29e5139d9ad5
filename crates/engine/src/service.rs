//! Builds the running service from a validated config: exporters with their queues, one task
//! per pipeline running its processor chain and fanning out to its exporters, and receivers
//! wired to every pipeline that names them. Also the ordered drain on shutdown.

use crate::component::{
    BuildContext, ConnectorFactory, ExporterFactory, Factory, ProcessorContext, ProcessorFactory,
    ReceiverFactory, ShutdownTrigger, shutdown_channel,
};
use crate::connector::ConnectorInput;
use crate::consumer::{Consumer, Consumers, PipelineInput};
use crate::exporter_helper::{self, ExporterQueue, ExporterStats, QueueConfig, RetryConfig};
use crate::health::Health;
use crate::pipeline;
use crate::telemetry::Registry;
use meshgate_config::{Catalog, ComponentId, ComponentSpec, Config, Kind};
use meshgate_pdata::Signal;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Capacity of a pipeline's input queue, in requests. Small on purpose: the batch processor
/// and the exporter queues do the buffering; this only smooths bursts between the receivers
/// and the pipeline task, and a full queue turns into a retryable refusal quickly.
pub const PIPELINE_QUEUE: usize = 64;

/// Every component type the binary knows, by section. Also the [`Catalog`] the config
/// validator consults, so what validates is exactly what can be built.
#[derive(Default)]
pub struct Components {
    receivers: BTreeMap<&'static str, Box<dyn ReceiverFactory>>,
    processors: BTreeMap<&'static str, Box<dyn ProcessorFactory>>,
    exporters: BTreeMap<&'static str, Box<dyn ExporterFactory>>,
    connectors: BTreeMap<&'static str, Box<dyn ConnectorFactory>>,
}

/// One row of `meshgate components`.
pub struct ComponentInfo {
    /// Section.
    pub kind: Kind,
    /// Type name.
    pub type_name: &'static str,
    /// Supported signals (a connector: the signals it consumes).
    pub signals: &'static [Signal],
    /// A connector's emitted signals; empty for other kinds.
    pub produces: &'static [Signal],
    /// One-line description.
    pub description: &'static str,
}

impl Components {
    /// Registers a receiver type.
    pub fn receiver(mut self, f: impl ReceiverFactory + 'static) -> Self {
        self.receivers.insert(f.type_name(), Box::new(f));
        self
    }
    /// Registers a processor type.
    pub fn processor(mut self, f: impl ProcessorFactory + 'static) -> Self {
        self.processors.insert(f.type_name(), Box::new(f));
        self
    }
    /// Registers an exporter type.
    pub fn exporter(mut self, f: impl ExporterFactory + 'static) -> Self {
        self.exporters.insert(f.type_name(), Box::new(f));
        self
    }

    /// Registers a connector type.
    pub fn connector(mut self, f: impl ConnectorFactory + 'static) -> Self {
        self.connectors.insert(f.type_name(), Box::new(f));
        self
    }

    /// Runs every defined component's [`Factory::check`] on its body and returns the
    /// problems as `(section.id, message)`, so a config that validates also builds.
    pub fn check(&self, config: &Config) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut run = |kind: Kind, f: Option<&dyn Factory>, id: &ComponentId, body| {
            if let Some(f) = f
                && let Err(e) = f.check(body)
            {
                out.push((format!("{}.{id}", kind.section()), e));
            }
        };
        for (id, body) in &config.receivers {
            let f = self.receivers.get(id.type_name.as_str());
            run(
                Kind::Receiver,
                f.map(|f| f.as_ref() as &dyn Factory),
                id,
                body,
            );
        }
        for (id, body) in &config.processors {
            let f = self.processors.get(id.type_name.as_str());
            run(
                Kind::Processor,
                f.map(|f| f.as_ref() as &dyn Factory),
                id,
                body,
            );
        }
        for (id, body) in &config.exporters {
            let f = self.exporters.get(id.type_name.as_str());
            run(
                Kind::Exporter,
                f.map(|f| f.as_ref() as &dyn Factory),
                id,
                body,
            );
        }
        for (id, body) in &config.connectors {
            let f = self.connectors.get(id.type_name.as_str());
            run(
                Kind::Connector,
                f.map(|f| f.as_ref() as &dyn Factory),
                id,
                body,
            );
        }
        out
    }

    /// Every registered type, by section then name.
    pub fn list(&self) -> Vec<ComponentInfo> {
        let mut out = Vec::new();
        for f in self.receivers.values() {
            out.push(info_of(Kind::Receiver, f.as_ref()));
        }
        for f in self.processors.values() {
            out.push(info_of(Kind::Processor, f.as_ref()));
        }
        for f in self.exporters.values() {
            out.push(info_of(Kind::Exporter, f.as_ref()));
        }
        for f in self.connectors.values() {
            out.push(ComponentInfo {
                produces: f.produces(),
                ..info_of(Kind::Connector, f.as_ref())
            });
        }
        out
    }
}

fn info_of(kind: Kind, f: &(impl crate::component::Factory + ?Sized)) -> ComponentInfo {
    ComponentInfo {
        kind,
        type_name: f.type_name(),
        signals: f.signals(),
        produces: &[],
        description: f.description(),
    }
}

fn spec_of(f: &(impl crate::component::Factory + ?Sized)) -> ComponentSpec {
    ComponentSpec {
        signals: f.signals().to_vec(),
        produces: Vec::new(),
        schema: f.schema(),
        signal_requires: f.signal_requires().to_vec(),
    }
}

impl Catalog for Components {
    fn component(&self, kind: Kind, type_name: &str) -> Option<ComponentSpec> {
        match kind {
            Kind::Receiver => self.receivers.get(type_name).map(|f| spec_of(f.as_ref())),
            Kind::Processor => self.processors.get(type_name).map(|f| spec_of(f.as_ref())),
            Kind::Exporter => self.exporters.get(type_name).map(|f| spec_of(f.as_ref())),
            Kind::Connector => self.connectors.get(type_name).map(|f| ComponentSpec {
                produces: f.produces().to_vec(),
                ..spec_of(f.as_ref())
            }),
            Kind::Extension => None,
        }
    }

    fn type_names(&self, kind: Kind) -> Vec<String> {
        let keys: Vec<&&str> = match kind {
            Kind::Receiver => self.receivers.keys().collect(),
            Kind::Processor => self.processors.keys().collect(),
            Kind::Exporter => self.exporters.keys().collect(),
            Kind::Connector => self.connectors.keys().collect(),
            Kind::Extension => Vec::new(),
        };
        keys.into_iter().map(|k| k.to_string()).collect()
    }
}

/// The running gateway.
pub struct Service {
    receiver_stop: ShutdownTrigger,
    receivers: Vec<(String, JoinHandle<()>)>,
    pipelines: Vec<(String, JoinHandle<()>)>,
    connectors: Vec<JoinHandle<()>>,
    exporters: Vec<JoinHandle<()>>,
    exporter_stats: Vec<ExporterStats>,
    hard_stop: ShutdownTrigger,
    draining: Arc<AtomicBool>,
    health: Arc<Health>,
}

/// What the drain achieved.
#[derive(Debug, Default)]
pub struct DrainReport {
    /// Whether everything flushed before the timeout.
    pub complete: bool,
    /// Items dropped because the timeout passed (all exporters).
    pub dropped: u64,
    /// How long the drain took.
    pub took: Duration,
}

impl Service {
    /// Builds and starts everything the config's pipelines use. Errors name the component.
    pub async fn start(
        config: &Config,
        components: &Components,
        telemetry: &Registry,
        api: &crate::admin::ApiRoutes,
        health: Arc<Health>,
    ) -> Result<Service, String> {
        let (hard_stop, hard_stop_signal) = shutdown_channel();
        let (receiver_stop, _) = shutdown_channel();
        let draining = Arc::new(AtomicBool::new(false));

        // Exporters, once each, however many pipelines use them.
        let mut exporter_queues: BTreeMap<ComponentId, Arc<ExporterQueue>> = BTreeMap::new();
        let mut exporter_tasks = Vec::new();
        let mut exporter_stats = Vec::new();
        for p in config.service.pipelines.values() {
            for id in &p.exporters {
                if exporter_queues.contains_key(id) || !config.exporters.contains_key(id) {
                    continue;
                }
                let body = config
                    .exporters
                    .get(id)
                    .ok_or_else(|| format!("exporter `{id}` is not defined"))?;
                let factory = components
                    .exporters
                    .get(id.type_name.as_str())
                    .ok_or_else(|| format!("unknown exporter type `{}`", id.type_name))?;
                let ctx = BuildContext {
                    id: id.to_string(),
                    config: body,
                    telemetry,
                    api: api.clone(),
                };
                let exporter = factory
                    .build(ctx)
                    .map_err(|e| format!("exporter `{id}`: {e}"))?;
                let (queue, retry) = if factory.uses_queue_and_retry() && factory.ordered() {
                    (
                        QueueConfig {
                            num_consumers: 1,
                            ..parse_field::<QueueConfig>(body, "sending_queue")
                                .map_err(|e| format!("exporter `{id}`: {e}"))?
                        },
                        RetryConfig::disabled(),
                    )
                } else if factory.uses_queue_and_retry() {
                    (
                        parse_field::<QueueConfig>(body, "sending_queue")
                            .map_err(|e| format!("exporter `{id}`: {e}"))?,
                        parse_field::<RetryConfig>(body, "retry_on_failure")
                            .map_err(|e| format!("exporter `{id}`: {e}"))?,
                    )
                } else {
                    (
                        QueueConfig {
                            num_consumers: 1,
                            ..QueueConfig::default()
                        },
                        RetryConfig::disabled(),
                    )
                };
                let (handle, stats, task) = exporter_helper::start(
                    &id.to_string(),
                    exporter,
                    queue,
                    retry,
                    telemetry,
                    hard_stop_signal.clone(),
                );
                exporter_queues.insert(id.clone(), handle);
                exporter_tasks.push(task);
                exporter_stats.push(stats);
            }
        }

        // Connectors, once each: an input queue now, the task once its downstream pipelines exist.
        let mut connector_inputs: BTreeMap<ComponentId, ConnectorInput> = BTreeMap::new();
        let mut connector_parts = Vec::new();
        for p in config.service.pipelines.values() {
            for id in &p.exporters {
                if connector_inputs.contains_key(id) || config.exporters.contains_key(id) {
                    continue;
                }
                let body = config
                    .connectors
                    .get(id)
                    .ok_or_else(|| format!("connector `{id}` is not defined"))?;
                let factory = components
                    .connectors
                    .get(id.type_name.as_str())
                    .ok_or_else(|| format!("unknown connector type `{}`", id.type_name))?;
                let ctx = BuildContext {
                    id: id.to_string(),
                    config: body,
                    telemetry,
                    api: api.clone(),
                };
                let connector = factory
                    .build(ctx)
                    .map_err(|e| format!("connector `{id}`: {e}"))?;
                let (tx, rx) = tokio::sync::mpsc::channel(crate::connector::CONNECTOR_QUEUE);
                connector_inputs.insert(
                    id.clone(),
                    ConnectorInput {
                        id: id.to_string(),
                        tx,
                    },
                );
                connector_parts.push((id.clone(), rx, connector));
            }
        }

        // Pipelines.
        let mut inputs: BTreeMap<ComponentId, Vec<(Signal, PipelineInput)>> = BTreeMap::new();
        let mut pipeline_tasks = Vec::new();
        for (pid, p) in &config.service.pipelines {
            let signal = pid.signal;
            let pctx = ProcessorContext {
                pipeline: pid.to_string(),
                signal,
            };
            let mut processors = Vec::new();
            for id in &p.processors {
                let body = config
                    .processors
                    .get(id)
                    .ok_or_else(|| format!("processor `{id}` is not defined"))?;
                let factory = components
                    .processors
                    .get(id.type_name.as_str())
                    .ok_or_else(|| format!("unknown processor type `{}`", id.type_name))?;
                let ctx = BuildContext {
                    id: id.to_string(),
                    config: body,
                    telemetry,
                    api: api.clone(),
                };
                processors.push(
                    factory
                        .build(ctx, &pctx)
                        .map_err(|e| format!("processor `{id}` in pipeline `{pid}`: {e}"))?,
                );
            }
            let gates = processors
                .iter()
                .filter_map(|p| p.admission_gate())
                .collect();
            let (tx, rx) = tokio::sync::mpsc::channel(PIPELINE_QUEUE);
            let input = PipelineInput {
                pipeline: pid.to_string(),
                tx,
                gates,
            };
            for r in &p.receivers {
                inputs
                    .entry(r.clone())
                    .or_default()
                    .push((signal, input.clone()));
            }
            let exporters: Vec<Arc<ExporterQueue>> = p
                .exporters
                .iter()
                .filter_map(|e| exporter_queues.get(e).cloned())
                .collect();
            let connectors: Vec<ConnectorInput> = p
                .exporters
                .iter()
                .filter_map(|e| connector_inputs.get(e).cloned())
                .collect();
            let task = tokio::spawn(pipeline::run(
                pid.to_string(),
                rx,
                processors,
                exporters,
                connectors,
                telemetry.clone(),
            ));
            pipeline_tasks.push((pid.to_string(), task));
        }
        // The pipelines own the exporter and connector handles now; dropping ours lets the
        // queues close when the pipelines end.
        drop(exporter_queues);
        drop(connector_inputs);

        // Connector tasks, delivering into the pipelines that list them as receivers. Their
        // consumers never refuse for shutdown: a drain must flush what they derived.
        let never_draining = Arc::new(AtomicBool::new(false));
        let mut connector_tasks = Vec::new();
        for (cid, rx, connector) in connector_parts {
            let wired = inputs.remove(&cid).unwrap_or_default();
            let consumers = consumers_for(&cid, &wired, &never_draining, telemetry);
            connector_tasks.push(tokio::spawn(crate::connector::run(
                cid.to_string(),
                rx,
                connector,
                consumers,
                telemetry.clone(),
            )));
        }

        // Receivers.
        let mut receiver_tasks = Vec::new();
        for (rid, wired) in inputs {
            let body = config
                .receivers
                .get(&rid)
                .ok_or_else(|| format!("receiver `{rid}` is not defined"))?;
            let factory = components
                .receivers
                .get(rid.type_name.as_str())
                .ok_or_else(|| format!("unknown receiver type `{}`", rid.type_name))?;
            let consumers = consumers_for(&rid, &wired, &draining, telemetry);
            let ctx = BuildContext {
                id: rid.to_string(),
                config: body,
                telemetry,
                api: api.clone(),
            };
            let receiver = factory
                .build(ctx, consumers)
                .map_err(|e| format!("receiver `{rid}`: {e}"))?;
            let task = receiver
                .start(receiver_stop.signal())
                .await
                .map_err(|e| format!("receiver `{rid}`: {e}"))?;
            receiver_tasks.push((rid.to_string(), task));
        }
        health.set_running();
        info!(
            pipelines = pipeline_tasks.len(),
            receivers = receiver_tasks.len(),
            exporters = exporter_tasks.len(),
            "meshgate is running"
        );
        Ok(Service {
            receiver_stop,
            receivers: receiver_tasks,
            pipelines: pipeline_tasks,
            connectors: connector_tasks,
            exporters: exporter_tasks,
            exporter_stats,
            hard_stop,
            draining,
            health,
        })
    }

    /// Drains: readiness off, receivers stop accepting and finish requests in flight, pipelines
    /// flush their processors (batches), exporters send what is queued. Whatever is still queued
    /// when `timeout` passes is dropped, counted (`reason="shutdown"`) and reported.
    pub async fn shutdown(self, timeout: Duration) -> DrainReport {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        self.health.set_draining();
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.receiver_stop.trigger();
        let mut complete = true;
        for (name, task) in self.receivers {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                warn!(receiver = %name, "receiver did not stop within the drain timeout");
                complete = false;
            }
        }
        for (name, task) in self.pipelines {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                warn!(pipeline = %name, "pipeline did not flush within the drain timeout");
                complete = false;
            }
        }
        for task in self.connectors {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                warn!("a connector did not flush within the drain timeout");
                complete = false;
            }
        }
        let mut pending = Vec::new();
        for task in self.exporters {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(_) => {}
                Err(_) => {
                    complete = false;
                    pending.push(());
                }
            }
        }
        if !complete {
            // Stop the senders; they count what is left and exit promptly.
            self.hard_stop.trigger();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let lost_by = |s: &ExporterStats| {
            s.dropped_on_shutdown() + s.queued().max(0) as u64 + s.undelivered()
        };
        let dropped: u64 = self.exporter_stats.iter().map(lost_by).sum();
        for s in &self.exporter_stats {
            let lost = lost_by(s);
            if lost > 0 {
                warn!(exporter = %s.id(), items = lost, "could not deliver before the drain timeout");
            }
        }
        DrainReport {
            complete: complete && dropped == 0,
            dropped,
            took: started.elapsed(),
        }
    }
}

/// The consumers of a receiver or connector wired into `wired` pipelines, one per signal.
fn consumers_for(
    id: &ComponentId,
    wired: &[(Signal, PipelineInput)],
    draining: &Arc<AtomicBool>,
    telemetry: &Registry,
) -> Consumers {
    let mut consumers = Consumers::default();
    for signal in Signal::ALL {
        let targets: Vec<PipelineInput> = wired
            .iter()
            .filter(|(s, _)| *s == signal)
            .map(|(_, i)| i.clone())
            .collect();
        if !targets.is_empty() {
            consumers.set(Consumer::new(
                &id.to_string(),
                signal,
                targets,
                draining.clone(),
                telemetry,
            ));
        }
    }
    consumers
}

/// Reads an optional field of a component body as a typed value (absent → default).
fn parse_field<T: serde::de::DeserializeOwned + Default>(
    body: &serde_json::Value,
    key: &str,
) -> Result<T, String> {
    match body.get(key) {
        None | Some(serde_json::Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("{key}: {e}")),
    }
}
