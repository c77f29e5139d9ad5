//! One pipeline's task: takes requests from its input queue, runs them through the processor
//! chain (a function call per processor, no channel hops), and fans the results out to each
//! exporter's own queue.

use crate::component::Processor;
use crate::connector::ConnectorInput;
use crate::exporter_helper::{ExporterQueue, OnFull};
use crate::telemetry::Registry;
use meshgate_pdata::Payload;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Runs until the input queue closes (every receiver feeding it stopped), then flushes the
/// processors in order and returns, dropping its exporter handles.
pub async fn run(
    pipeline: String,
    mut rx: mpsc::Receiver<Payload>,
    mut processors: Vec<Box<dyn Processor>>,
    exporters: Vec<Arc<ExporterQueue>>,
    connectors: Vec<ConnectorInput>,
    telemetry: Registry,
) {
    let outputs = Outputs {
        exporters,
        connectors,
    };
    let items_in = telemetry.counter(
        "meshgate_pipeline_items_in_total",
        "Items entering the pipeline's processor chain.",
        &[("pipeline", &pipeline)],
    );
    let items_out = telemetry.counter(
        "meshgate_pipeline_items_out_total",
        "Items leaving the processor chain towards the exporters (after filtering, sampling).",
        &[("pipeline", &pipeline)],
    );
    loop {
        let deadline = processors.iter().filter_map(|p| p.deadline()).min();
        let next = match deadline {
            Some(d) => tokio::select! {
                m = rx.recv() => Some(m),
                _ = tokio::time::sleep_until(d.into()) => None,
            },
            None => Some(rx.recv().await),
        };
        match next {
            Some(Some(data)) => {
                items_in.add(data.item_count() as u64);
                let out = run_chain(&mut processors, 0, vec![data]);
                fan_out(out, &outputs, &items_out).await;
            }
            Some(None) => break,
            None => {
                let now = std::time::Instant::now();
                for i in 0..processors.len() {
                    if processors[i].deadline().is_some_and(|d| d <= now) {
                        let mut out = Vec::new();
                        processors[i].on_deadline(&mut out);
                        let out = run_chain(&mut processors, i + 1, out);
                        fan_out(out, &outputs, &items_out).await;
                    }
                }
            }
        }
    }
    for i in 0..processors.len() {
        let mut out = Vec::new();
        processors[i].flush(&mut out);
        let out = run_chain(&mut processors, i + 1, out);
        fan_out(out, &outputs, &items_out).await;
    }
    tracing::debug!(pipeline = %pipeline, "pipeline drained");
}

fn run_chain(
    processors: &mut [Box<dyn Processor>],
    from: usize,
    mut data: Vec<Payload>,
) -> Vec<Payload> {
    for p in processors.iter_mut().skip(from) {
        if data.is_empty() {
            break;
        }
        let mut next = Vec::with_capacity(data.len());
        for d in data {
            p.process(d, &mut next);
        }
        data = next;
    }
    data
}

/// Where a pipeline's output goes.
struct Outputs {
    exporters: Vec<Arc<ExporterQueue>>,
    connectors: Vec<ConnectorInput>,
}

/// Offers each batch to every exporter and connector. Non-blocking queues first; exporters with
/// `on_full: block` whose queue is full are then waited on, each up to its `block_timeout`.
/// Connectors are waited on without a limit: they are in-process and derive from every span,
/// so a full connector queue slows this pipeline (and, through it, the receivers) instead of
/// losing data.
async fn fan_out(batches: Vec<Payload>, outputs: &Outputs, items_out: &crate::telemetry::Counter) {
    let exporters = &outputs.exporters;
    for data in batches {
        if data.is_empty() {
            continue;
        }
        items_out.add(data.item_count() as u64);
        // One shared copy for every exporter: they only read it.
        let data = Arc::new(data);
        let mut encoded_len = None;
        let mut waiting = Vec::new();
        for e in exporters {
            let pieces = match e.max_request_bytes() {
                Some(max) => {
                    let len = *encoded_len.get_or_insert_with(|| data.encoded_len());
                    if len > max {
                        Payload::clone(&data)
                            .split_by_bytes(len, max)
                            .into_iter()
                            .map(Arc::new)
                            .collect()
                    } else {
                        vec![data.clone()]
                    }
                }
                None => vec![data.clone()],
            };
            for piece in pieces {
                if let Err(d) = e.try_offer(piece) {
                    debug_assert_eq!(e.on_full(), OnFull::Block);
                    waiting.push((e, d));
                }
            }
        }
        for c in &outputs.connectors {
            if c.tx.send(data.clone()).await.is_err() {
                tracing::error!(connector = %c.id, "connector task has stopped; its derivation misses this batch");
            }
        }
        let start = tokio::time::Instant::now();
        for (e, d) in waiting {
            e.offer_until(d, start + e.block_timeout()).await;
        }
    }
}
