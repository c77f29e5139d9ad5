//! A connector's task: reads the payloads its upstream pipelines fan out to it, runs the
//! connector, and admits what it derives into its downstream pipelines like a receiver would.

use crate::component::Connector;
use crate::consumer::Consumers;
use crate::telemetry::Registry;
use meshgate_pdata::{Payload, Signal};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Capacity of a connector's input queue, in batches. Upstream pipelines wait (they never drop)
/// when it is full, so derivation sees every admitted span; the wait turns into backpressure at
/// the receivers when a connector cannot keep up.
pub const CONNECTOR_QUEUE: usize = 16;

/// How long a connector waits for room in a downstream pipeline before the derived data is
/// refused and counted (`meshgate_receiver_refused_items_total{receiver="<connector>"}`).
pub const CONNECTOR_ADMISSION_WAIT: Duration = Duration::from_secs(5);

/// The sending side of a connector's input queue, held by each upstream pipeline.
#[derive(Clone)]
pub struct ConnectorInput {
    /// `type[/name]` of the connector.
    pub id: String,
    /// Bounded queue into the connector's task.
    pub tx: mpsc::Sender<Arc<Payload>>,
}

/// Runs until every upstream pipeline has dropped its [`ConnectorInput`], then flushes the
/// connector and returns, dropping its consumers so the downstream pipelines drain.
pub async fn run(
    id: String,
    mut rx: mpsc::Receiver<Arc<Payload>>,
    mut connector: Box<dyn Connector>,
    consumers: Consumers,
    telemetry: Registry,
) {
    // Per signal, created when the first payload of it arrives.
    let mut items_in: [Option<crate::telemetry::Counter>; 3] = [None, None, None];
    let unrouted = telemetry.counter(
        "meshgate_connector_dropped_items_total",
        "Items a connector derived for a signal no downstream pipeline receives.",
        &[("connector", &id), ("reason", "no_pipeline")],
    );
    let mut out = Vec::new();
    loop {
        let next = match connector.deadline() {
            Some(d) => tokio::select! {
                m = rx.recv() => Some(m),
                _ = tokio::time::sleep_until(d.into()) => None,
            },
            None => Some(rx.recv().await),
        };
        match next {
            Some(Some(data)) => {
                let signal = data.signal();
                let slot = Signal::ALL.iter().position(|s| *s == signal).unwrap_or(0);
                items_in[slot]
                    .get_or_insert_with(|| {
                        telemetry.counter(
                            "meshgate_connector_received_items_total",
                            "Items a connector read from its upstream pipelines.",
                            &[("connector", &id), ("signal", signal.as_str())],
                        )
                    })
                    .add(data.item_count() as u64);
                connector.consume(&data, &mut out);
            }
            Some(None) => break,
            None => connector.on_deadline(&mut out),
        }
        deliver(&id, &mut out, &consumers, &unrouted).await;
    }
    connector.flush(&mut out);
    deliver(&id, &mut out, &consumers, &unrouted).await;
    tracing::debug!(connector = %id, "connector drained");
}

async fn deliver(
    id: &str,
    out: &mut Vec<Payload>,
    consumers: &Consumers,
    unrouted: &crate::telemetry::Counter,
) {
    for data in out.drain(..) {
        match consumers.get(data.signal()) {
            Some(c) => {
                if let Err(r) = c.consume_waiting(data, CONNECTOR_ADMISSION_WAIT).await {
                    tracing::warn!(connector = %id, "derived data refused downstream: {}", r.message);
                }
            }
            None => unrouted.add(data.item_count() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::component::*;
    use crate::consumer::Consumers;
    use crate::{Components, Health, Registry, Service};
    use meshgate_pdata::otlp::*;
    use meshgate_pdata::{Payload, Signal};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Sends `SPANS` single-span requests at start.
    struct Burst;
    const SPANS: usize = 250;
    struct BurstReceiver(Consumers);
    #[async_trait::async_trait]
    impl Receiver for BurstReceiver {
        async fn start(
            self: Box<Self>,
            _shutdown: ShutdownSignal,
        ) -> Result<tokio::task::JoinHandle<()>, String> {
            let c = self.0.traces.clone().expect("wired for traces");
            Ok(tokio::spawn(async move {
                for i in 0..SPANS {
                    let span = Span {
                        trace_id: vec![1; 16],
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: "op".into(),
                        ..Default::default()
                    };
                    let req = ExportTraceServiceRequest {
                        resource_spans: vec![ResourceSpans {
                            scope_spans: vec![ScopeSpans {
                                spans: vec![span],
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                    };
                    c.consume(Payload::Traces(req)).await.expect("admitted");
                }
            }))
        }
    }

    /// Counts spans and emits the count as one gauge point at each deadline and at flush.
    struct Count {
        spans: u64,
        next: std::time::Instant,
    }
    impl Connector for Count {
        fn consume(&mut self, data: &Payload, _out: &mut Vec<Payload>) {
            self.spans += data.item_count() as u64;
        }
        fn deadline(&self) -> Option<std::time::Instant> {
            Some(self.next)
        }
        fn on_deadline(&mut self, out: &mut Vec<Payload>) {
            self.next += Duration::from_secs(3600);
            self.flush(out);
        }
        fn flush(&mut self, out: &mut Vec<Payload>) {
            let point = NumberDataPoint {
                value: Some(number_data_point::Value::AsInt(self.spans as i64)),
                ..Default::default()
            };
            out.push(Payload::Metrics(ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![Metric {
                            name: "spans".into(),
                            data: Some(metric::Data::Gauge(Gauge {
                                data_points: vec![point],
                            })),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }));
        }
    }

    /// Keeps what it is sent.
    struct Keep(Arc<Mutex<Vec<i64>>>);
    #[async_trait::async_trait]
    impl Exporter for Keep {
        async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
            if let Payload::Metrics(m) = data {
                for rm in &m.resource_metrics {
                    for sm in &rm.scope_metrics {
                        for metric in &sm.metrics {
                            if let Some(metric::Data::Gauge(g)) = &metric.data {
                                for p in &g.data_points {
                                    if let Some(number_data_point::Value::AsInt(v)) = p.value {
                                        self.0.lock().unwrap().push(v);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Ok(Exported::default())
        }
    }

    macro_rules! factory {
        ($t:ty, $name:literal, $signals:expr) => {
            impl Factory for $t {
                fn type_name(&self) -> &'static str {
                    $name
                }
                fn signals(&self) -> &'static [Signal] {
                    $signals
                }
                fn description(&self) -> &'static str {
                    "test"
                }
                fn schema(&self) -> schemars::Schema {
                    schemars::json_schema!({"type": ["object", "null"]})
                }
            }
        };
    }
    factory!(Burst, "burst", &[Signal::Traces]);
    struct CountFactory;
    factory!(CountFactory, "count", &[Signal::Traces]);
    struct KeepFactory(Arc<Mutex<Vec<i64>>>);
    factory!(KeepFactory, "keep", &[Signal::Metrics, Signal::Traces]);

    impl ReceiverFactory for Burst {
        fn build(&self, _: BuildContext<'_>, c: Consumers) -> Result<Box<dyn Receiver>, String> {
            Ok(Box::new(BurstReceiver(c)))
        }
    }
    impl ConnectorFactory for CountFactory {
        fn produces(&self) -> &'static [Signal] {
            &[Signal::Metrics]
        }
        fn build(&self, _: BuildContext<'_>) -> Result<Box<dyn Connector>, String> {
            Ok(Box::new(Count {
                spans: 0,
                next: std::time::Instant::now() + Duration::from_secs(3600),
            }))
        }
    }
    impl ExporterFactory for KeepFactory {
        fn build(&self, _: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
            Ok(Arc::new(Keep(self.0.clone())))
        }
        fn uses_queue_and_retry(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn a_connector_derives_from_every_span_and_flushes_on_drain() {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let components = Components::default()
            .receiver(Burst)
            .connector(CountFactory)
            .exporter(KeepFactory(kept.clone()));
        let text = "receivers: {burst: }\nconnectors: {count: }\nexporters: {keep: }\n\
                    service:\n  pipelines:\n    traces: {receivers: [burst], exporters: [count, keep]}\n    metrics: {receivers: [count], exporters: [keep]}\n";
        let loaded =
            meshgate_config::Loaded::from_str(text, meshgate_config::Format::Yaml, "test.yaml")
                .unwrap();
        let (config, diags) = meshgate_config::validate(&loaded, &components);
        let config = config.unwrap_or_else(|| panic!("{diags:?}"));
        let telemetry = Registry::new();
        let service = Service::start(
            &config,
            &components,
            &telemetry,
            &Default::default(),
            Arc::new(Health::default()),
        )
        .await
        .unwrap();
        // Let the burst go through, then drain: the count must cover every span.
        for _ in 0..200 {
            if telemetry.render().contains(&format!(
                "meshgate_connector_received_items_total{{connector=\"count\",signal=\"traces\"}} {SPANS}"
            )) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = service.shutdown(Duration::from_secs(5)).await;
        assert!(report.complete, "{report:?}");
        assert_eq!(*kept.lock().unwrap(), vec![SPANS as i64]);
        let text = telemetry.render();
        assert!(
            text.contains("meshgate_receiver_accepted_items_total{receiver=\"count\",signal=\"metrics\",transport=\"\"} 1"),
            "{text}"
        );
    }
}
