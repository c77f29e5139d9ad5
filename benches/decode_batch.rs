//! Ingest-path micro benchmarks on Istio-sidecar-shaped trace requests (100 and 1000 spans):
//! protobuf decode, decode + id validation, OTLP/JSON decode, and batch merge + split.
//! Throughput is reported in spans. Run with `cargo bench --bench decode_batch`.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meshgate_loadgen::mesh_request;
use meshgate_pdata::otlp::ExportTraceServiceRequest;
use meshgate_pdata::{Payload, Signal};
use prost::Message;
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 2] = [100, 1000];

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_proto");
    for n in SIZES {
        let bytes = mesh_request(n, 1).encode_to_vec();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &bytes, |b, bytes| {
            b.iter(|| ExportTraceServiceRequest::decode(black_box(bytes.as_slice())).unwrap())
        });
    }
    g.finish();
}

fn decode_validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_proto_validate");
    for n in SIZES {
        let bytes = mesh_request(n, 2).encode_to_vec();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &bytes, |b, bytes| {
            b.iter(|| {
                let req = ExportTraceServiceRequest::decode(black_box(bytes.as_slice())).unwrap();
                let mut p = Payload::Traces(req);
                let rej = meshgate_pdata::validate::remove_invalid(&mut p);
                assert_eq!(rej.count, 0);
                p
            })
        });
    }
    g.finish();
}

fn decode_json(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_json");
    for n in SIZES {
        let body = meshgate_pdata::json::encode(&Payload::Traces(mesh_request(n, 3)));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &body, |b, body| {
            b.iter(|| meshgate_pdata::json::decode(Signal::Traces, black_box(body)).unwrap())
        });
    }
    g.finish();
}

fn merge_split(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_merge10_split8192");
    for n in SIZES {
        // Ten requests as a receiver would hand them on (decoded), merged into one batch and
        // cut into pieces of at most 8192 spans, as the batch processor does.
        let decoded: Vec<Payload> = (0..10)
            .map(|i| {
                let bytes = mesh_request(n, 100 + i).encode_to_vec();
                Payload::Traces(ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap())
            })
            .collect();
        g.throughput(Throughput::Elements(10 * n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &decoded, |b, decoded| {
            b.iter_batched(
                || decoded.clone(),
                |parts| {
                    let mut batch = Payload::empty(Signal::Traces);
                    for p in parts {
                        batch.merge(p).unwrap();
                    }
                    batch.split(8192)
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, decode_validate, decode_json, merge_split
}
criterion_main!(benches);
