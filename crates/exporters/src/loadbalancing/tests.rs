//! End-to-end tests of the `loadbalancing` exporter against in-process OTLP/gRPC servers.

use super::config::parse;
use super::ring::{Ring, hash_bytes};
use super::split::testdata;
use super::{LoadBalancingExporter, LoadBalancingExporterFactory};
use crate::common::testutil;
use meshgate_engine::exporter_helper::{self, QueueConfig, RetryConfig};
use meshgate_engine::{Exporter, ExporterFactory, Factory, Registry, shutdown_channel};
use meshgate_pdata::Payload;
use meshgate_pdata::otlp::grpc::{
    LogsService, LogsServiceServer, TraceService, TraceServiceServer,
};
use meshgate_pdata::otlp::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

/// What a test backend does with the next requests.
#[derive(Clone)]
enum Behaviour {
    Ok,
    /// Answers `UNAVAILABLE` to this many requests, then accepts.
    FailFirst(usize),
    /// Never answers (the client's timeout ends each attempt).
    Stall,
}

/// An OTLP/gRPC server recording every request it sees and every one it accepted.
#[derive(Clone)]
struct Backend {
    addr: String,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Every request, including failed and stalled ones.
    attempts: Arc<Mutex<Vec<Payload>>>,
    /// Requests answered OK.
    accepted: Arc<Mutex<Vec<Payload>>>,
}

impl Backend {
    async fn handle(&self, p: Payload) -> Result<(), Status> {
        self.attempts.lock().unwrap().push(p.clone());
        let b = {
            let mut b = self.behaviour.lock().unwrap();
            let now = b.clone();
            if let Behaviour::FailFirst(n) = &mut *b {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    *b = Behaviour::Ok;
                }
            }
            now
        };
        match b {
            Behaviour::Ok => {
                self.accepted.lock().unwrap().push(p);
                Ok(())
            }
            Behaviour::FailFirst(_) => Err(Status::unavailable("test outage")),
            Behaviour::Stall => std::future::pending().await,
        }
    }

    fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    fn attempts(&self) -> Vec<Payload> {
        self.attempts.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<Payload> {
        self.accepted.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl TraceService for Backend {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.handle(Payload::Traces(request.into_inner())).await?;
        Ok(Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Backend {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.handle(Payload::Logs(request.into_inner())).await?;
        Ok(Response::new(Default::default()))
    }
}

/// Accepted connections as a stream, for `serve_with_incoming`.
struct Incoming(tokio::net::TcpListener);

impl tonic::codegen::tokio_stream::Stream for Incoming {
    type Item = std::io::Result<tokio::net::TcpStream>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_accept(cx).map(|r| Some(r.map(|(s, _)| s)))
    }
}

async fn backend_on(listener: tokio::net::TcpListener) -> Backend {
    let addr = listener.local_addr().unwrap().to_string();
    let b = Backend {
        addr,
        behaviour: Arc::new(Mutex::new(Behaviour::Ok)),
        attempts: Arc::default(),
        accepted: Arc::default(),
    };
    let svc = b.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(svc.clone()).accept_compressed(CompressionEncoding::Gzip),
            )
            .add_service(LogsServiceServer::new(svc).accept_compressed(CompressionEncoding::Gzip))
            .serve_with_incoming(Incoming(listener))
            .await
            .unwrap();
    });
    b
}

async fn backend() -> Backend {
    backend_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

async fn backends(n: usize) -> Vec<Backend> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(backend().await);
    }
    // Sorted like the ring's endpoints, so index i is ring owner i.
    out.sort_by(|a, b| a.addr.cmp(&b.addr));
    out
}

/// Fast retries and short timeouts for tests, plus `extra` merged into `protocol.otlp`.
fn body(resolver: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut otlp = json!({
        "timeout": "1s",
        "retry_on_failure": {"initial_interval": "20ms", "max_interval": "50ms", "max_elapsed_time": "30s"},
        "sending_queue": {"num_consumers": 1},
    });
    if let (Some(o), Some(e)) = (otlp.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    json!({"resolver": resolver, "protocol": {"otlp": otlp}})
}

fn static_of(bs: &[Backend]) -> serde_json::Value {
    json!({"static": {"hostnames": bs.iter().map(|b| b.addr.clone()).collect::<Vec<_>>()}})
}

fn build(body: &serde_json::Value, reg: &Registry) -> LoadBalancingExporter {
    let (cfg, resolver) = parse(body).unwrap();
    LoadBalancingExporter::new("loadbalancing", cfg, resolver, reg).unwrap()
}

/// Sum of the series of `name` whose labels include every `(key, value)` of `labels`.
fn metric(reg: &Registry, name: &str, labels: &[(&str, &str)]) -> i64 {
    reg.render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum()
}

fn items(reg: &Registry, endpoint: &str, outcome: &str) -> i64 {
    let mut labels = vec![("outcome", outcome)];
    if !endpoint.is_empty() {
        labels.push(("endpoint", endpoint));
    }
    metric(reg, "meshgate_exporter_loadbalancing_items_total", &labels)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `(span id → trace id)` of every span in `payloads`; panics on a duplicated span.
fn spans(payloads: &[Payload]) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut out = HashMap::new();
    for p in payloads {
        let Payload::Traces(t) = p else { continue };
        for s in t
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let dup = out.insert(s.span_id.clone(), s.trace_id.clone());
            assert!(dup.is_none(), "span {:?} delivered twice", s.span_id);
        }
    }
    out
}

/// Checks that every span of `sent` was accepted exactly once, by the owner of its trace on
/// `ring` (`bs` sorted like the ring's endpoints).
fn assert_exactly_once_at_owner(sent: &[Payload], bs: &[Backend], ring: &Ring) {
    let want = spans(sent);
    let mut all = Vec::new();
    for (i, b) in bs.iter().enumerate() {
        let got = spans(&b.accepted());
        for trace in got.values() {
            assert_eq!(
                ring.owner_name(hash_bytes(trace)),
                ring.endpoints()[i],
                "a span reached {} though its trace belongs elsewhere",
                b.addr
            );
        }
        all.extend(b.accepted());
    }
    // `spans` panics on duplicates across all backends.
    let got = spans(&all);
    assert_eq!(got.len(), want.len(), "spans lost");
    assert_eq!(got, want);
}

#[tokio::test]
async fn static_resolver_delivers_every_span_and_log_exactly_once_to_its_owner() {
    let bs = backends(3).await;
    let reg = Registry::new();
    let exp = build(&body(static_of(&bs), json!({})), &reg);
    let ring = Ring::new(&bs.iter().map(|b| b.addr.clone()).collect::<Vec<_>>());
    assert_eq!(exp.endpoints(), ring.endpoints());
    let sent = vec![testdata::traces(0, 300, 4), testdata::traces(300, 300, 4)];
    for p in &sent {
        exp.export(p).await.unwrap();
    }
    let logs = testdata::logs(100, 60);
    exp.export(&logs).await.unwrap();
    exp.shutdown().await;

    assert_exactly_once_at_owner(&sent, &bs, &ring);
    // Logs: each traced record at its trace's owner, every record once.
    let mut records = 0;
    for (i, b) in bs.iter().enumerate() {
        for p in b.accepted() {
            let Payload::Logs(l) = p else { continue };
            for r in l
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
            {
                records += 1;
                if !r.trace_id.is_empty() {
                    assert_eq!(ring.owner(hash_bytes(&r.trace_id)), i);
                }
            }
        }
    }
    assert_eq!(records, 160);

    // Accounting: every endpoint sent what was routed to it; nothing is left.
    for b in &bs {
        let routed = items(&reg, &b.addr, "routed");
        assert!(routed > 0, "{} got no share", b.addr);
        assert_eq!(items(&reg, &b.addr, "sent"), routed);
        assert_eq!(items(&reg, &b.addr, "dropped"), 0);
        assert_eq!(
            metric(
                &reg,
                "meshgate_exporter_loadbalancing_queue_items",
                &[("endpoint", &b.addr)]
            ),
            0
        );
    }
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_loadbalancing_items_total",
            &[("outcome", "sent"), ("signal", "traces")]
        ),
        2400
    );
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_loadbalancing_items_total",
            &[("outcome", "sent"), ("signal", "logs")]
        ),
        160
    );
    assert_eq!(
        metric(&reg, "meshgate_exporter_loadbalancing_endpoints", &[]),
        3
    );
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_loadbalancing_ring_changes_total",
            &[]
        ),
        1
    );
}

#[tokio::test]
async fn a_failing_endpoint_retries_only_its_own_share() {
    let bs = backends(3).await;
    let victim = &bs[1];
    victim.set(Behaviour::FailFirst(2));
    let reg = Registry::new();
    let exp = build(&body(static_of(&bs), json!({})), &reg);
    let data = testdata::traces(0, 300, 2);
    exp.export(&data).await.unwrap();
    wait_until("all 600 spans are sent", || items(&reg, "", "sent") == 600).await;

    for b in &bs {
        let attempts = b.attempts();
        if b.addr == victim.addr {
            // Two failures, then the same share once more.
            assert_eq!(attempts.len(), 3);
            assert!(attempts.iter().all(|a| *a == attempts[0]));
            assert_eq!(
                metric(
                    &reg,
                    "meshgate_exporter_loadbalancing_send_failures_total",
                    &[("endpoint", &b.addr)]
                ),
                2
            );
        } else {
            // The others' shares were sent once and never again.
            assert_eq!(attempts.len(), 1, "{} received a resend", b.addr);
            assert_eq!(
                metric(
                    &reg,
                    "meshgate_exporter_loadbalancing_send_failures_total",
                    &[("endpoint", &b.addr)]
                ),
                0
            );
        }
        assert_eq!(b.accepted().len(), 1);
    }
    let ring = Ring::new(&bs.iter().map(|b| b.addr.clone()).collect::<Vec<_>>());
    assert_exactly_once_at_owner(&[data], &bs, &ring);
    exp.shutdown().await;
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "meshgate-lb-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
}

#[tokio::test]
async fn an_endpoint_leaving_the_file_has_its_queued_data_rerouted_exactly_once() {
    let bs = backends(3).await;
    let stalled = bs[2].clone();
    stalled.set(Behaviour::Stall);
    let path = temp_file("reroute");
    std::fs::write(
        &path,
        format!("# tier 2\n{}\n{}\n{}\n", bs[0].addr, bs[1].addr, bs[2].addr),
    )
    .unwrap();
    let reg = Registry::new();
    let exp = build(
        &body(
            json!({"file": {"path": path.to_str().unwrap(), "interval": "20ms"}}),
            json!({"timeout": "2s"}),
        ),
        &reg,
    );
    assert_eq!(exp.endpoints().len(), 3);
    let sent = vec![
        testdata::traces(0, 200, 2),
        testdata::traces(200, 200, 2),
        testdata::traces(400, 200, 2),
    ];
    // The stalled endpoint's first share goes on the wire and hangs there...
    exp.export(&sent[0]).await.unwrap();
    wait_until("the stalled endpoint received its first request", || {
        stalled.attempts().len() == 1
    })
    .await;
    let on_the_wire = items(&reg, &stalled.addr, "routed");
    // ...and the next shares wait in its queue.
    exp.export(&sent[1]).await.unwrap();
    exp.export(&sent[2]).await.unwrap();
    let held = items(&reg, &stalled.addr, "routed");
    let queued = held - on_the_wire;
    assert!(on_the_wire > 0 && queued > 0);
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_loadbalancing_queue_items",
            &[("endpoint", &stalled.addr)]
        ),
        held
    );

    // The stalled endpoint leaves the ring: its queue moves at once; the request on the
    // wire follows when its attempt times out (2s).
    std::fs::write(&path, format!("{}\n{}\n", bs[0].addr, bs[1].addr)).unwrap();
    wait_until("the queued shares are re-routed", || {
        items(&reg, &stalled.addr, "rerouted") >= queued
    })
    .await;
    assert_eq!(exp.endpoints().len(), 2);
    assert_eq!(items(&reg, &stalled.addr, "rerouted"), queued);
    wait_until("every span is sent", || items(&reg, "", "sent") == 1200).await;

    // Everything the stalled endpoint held moved, and arrived once at its new owner.
    assert_eq!(stalled.attempts().len(), 1, "nothing else was tried there");
    assert!(stalled.accepted().is_empty());
    assert_eq!(items(&reg, &stalled.addr, "rerouted"), held);
    assert_eq!(items(&reg, &stalled.addr, "sent"), 0);
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_loadbalancing_queue_items",
            &[("endpoint", &stalled.addr)]
        ),
        0
    );
    let two = Ring::new(&[bs[0].addr.clone(), bs[1].addr.clone()]);
    assert_exactly_once_at_owner(&sent, &bs[..2], &two);
    // routed - rerouted over all endpoints = what export accepted.
    assert_eq!(
        items(&reg, "", "routed") - items(&reg, "", "rerouted"),
        1200
    );
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_loadbalancing_ring_changes_total",
            &[]
        ),
        2
    );
    exp.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn the_file_resolver_keeps_the_ring_when_the_file_turns_bad() {
    let bs = backends(2).await;
    let path = temp_file("bad");
    std::fs::write(&path, format!("{}\n{}\n", bs[0].addr, bs[1].addr)).unwrap();
    let reg = Registry::new();
    let exp = build(
        &body(
            json!({"file": {"path": path.to_str().unwrap(), "interval": "20ms"}}),
            json!({}),
        ),
        &reg,
    );
    let errors = || {
        metric(
            &reg,
            "meshgate_exporter_loadbalancing_resolver_errors_total",
            &[],
        )
    };
    std::fs::write(&path, "not a port:x\n").unwrap();
    wait_until("the bad line is reported", || errors() == 1).await;
    std::fs::write(&path, "# nothing\n").unwrap();
    wait_until("the empty file is reported", || errors() == 2).await;
    std::fs::remove_file(&path).unwrap();
    wait_until("the missing file is reported", || errors() == 3).await;
    assert_eq!(exp.endpoints().len(), 2, "the ring survived");
    std::fs::write(&path, format!("{}\n", bs[1].addr)).unwrap();
    wait_until("the ring follows the file again", || {
        exp.endpoints() == [bs[1].addr.clone()]
    })
    .await;
    exp.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn dns_resolver_finds_localhost() {
    let first = backend().await;
    let port: u16 = first.addr.rsplit(':').next().unwrap().parse().unwrap();
    let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host(("localhost", port))
        .await
        .unwrap()
        .collect();
    // A backend on every address localhost has (127.0.0.1, and ::1 where it resolves).
    let mut bs = vec![first.clone()];
    for a in &resolved {
        if a.to_string() != first.addr {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .expect("bind the other loopback address");
            bs.push(backend_on(l).await);
        }
    }
    let reg = Registry::new();
    let exp = build(
        &body(
            json!({"dns": {"hostname": "localhost", "port": port, "interval": "100ms"}}),
            json!({}),
        ),
        &reg,
    );
    wait_until("localhost is resolved", || !exp.endpoints().is_empty()).await;
    let eps = exp.endpoints();
    assert!(eps.contains(&format!("127.0.0.1:{port}")), "{eps:?}");
    assert_eq!(eps.len(), bs.len());
    let data = testdata::traces(0, 50, 2);
    exp.export(&data).await.unwrap();
    exp.shutdown().await;
    let mut all = Vec::new();
    for b in &bs {
        all.extend(b.accepted());
    }
    assert_eq!(spans(&all), spans(&[data]));
}

/// One scripted DNS answer: addresses, or a failure.
type DnsAnswer = Result<Vec<&'static str>, String>;

#[tokio::test]
async fn dns_answers_are_sorted_and_failures_keep_the_current_endpoints() {
    let b = backend().await;
    let reg = Registry::new();
    let exp = build(&body(static_of(&[b]), json!({})), &reg);
    let answers: Arc<Mutex<Vec<DnsAnswer>>> = Arc::new(Mutex::new(vec![
        Ok(vec!["10.0.0.2:4317", "10.0.0.1:4317", "10.0.0.2:4317"]),
        Err("SERVFAIL".into()),
        Ok(vec![]),
        Ok(vec!["10.0.0.1:4317", "10.0.0.2:4317"]),
        Ok(vec!["10.0.0.3:4317"]),
    ]));
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let errors = reg.counter("test_dns_errors", "test", &[]);
    let lookup = {
        let answers = answers.clone();
        move || {
            let next = {
                let mut a = answers.lock().unwrap();
                if a.is_empty() {
                    None
                } else {
                    Some(a.remove(0))
                }
            };
            async move {
                match next {
                    Some(r) => r.map(|l| l.iter().map(|s| s.parse().unwrap()).collect()),
                    None => std::future::pending().await,
                }
            }
        }
    };
    let start = exp.endpoints();
    let router = exp.router.clone();
    let watcher = {
        let (router, seen) = (router.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let eps = router.current().ring.endpoints().to_vec();
                {
                    let mut s = seen.lock().unwrap();
                    if s.last() != Some(&eps) {
                        s.push(eps);
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let dns = {
        let (router, errors) = (router.clone(), errors.clone());
        tokio::spawn(async move {
            super::resolver::run_dns(
                lookup,
                Duration::from_millis(30),
                Duration::from_secs(1),
                &router,
                &errors,
                "test",
            )
            .await
        })
    };
    wait_until("every answer was used", || {
        answers.lock().unwrap().is_empty()
    })
    .await;
    wait_until("the last answer is applied", || {
        exp.endpoints() == ["10.0.0.3:4317"]
    })
    .await;
    dns.abort();
    watcher.abort();
    let seen = seen.lock().unwrap().clone();
    let want: Vec<Vec<String>> = vec![
        start,
        vec!["10.0.0.1:4317".into(), "10.0.0.2:4317".into()],
        vec!["10.0.0.3:4317".into()],
    ];
    assert_eq!(seen, want);
    assert_eq!(errors.get(), 2);
    // Static start, then two changes (the repeated answer changed nothing).
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_loadbalancing_ring_changes_total",
            &[]
        ),
        3
    );
}

#[tokio::test]
async fn the_drain_sends_healthy_queues_and_counts_what_a_failing_endpoint_held() {
    let bs = backends(2).await;
    bs[0].set(Behaviour::FailFirst(usize::MAX));
    let reg = Registry::new();
    // A long backoff: the drain must not wait it out.
    let exp = build(
        &body(
            static_of(&bs),
            json!({"retry_on_failure": {"initial_interval": "60s", "max_interval": "60s", "randomization_factor": 0.0}}),
        ),
        &reg,
    );
    exp.export(&testdata::traces(0, 200, 2)).await.unwrap();
    exp.export(&testdata::traces(200, 200, 2)).await.unwrap();
    wait_until("the failing endpoint failed once", || {
        bs[0].attempts().len() == 1
    })
    .await;
    let started = std::time::Instant::now();
    exp.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let failing = &bs[0].addr;
    let routed = items(&reg, failing, "routed");
    assert!(routed > 0);
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_loadbalancing_dropped_items_total",
            &[("endpoint", failing), ("reason", "shutdown")]
        ),
        routed
    );
    assert_eq!(items(&reg, &bs[1].addr, "sent"), 800 - routed);
    assert_eq!(spans(&bs[1].accepted()).len() as i64, 800 - routed);
    // The engine's drain report learns what the engine had counted as sent but was lost.
    assert_eq!(exp.undelivered() as i64, routed);
}

#[tokio::test]
async fn full_queues_block_then_fail_whole_or_drop_only_their_share() {
    // Block: the stalled endpoint's queue (1 share) fills; the next batch fails retryably
    // without queueing anything anywhere.
    let bs = backends(1).await;
    bs[0].set(Behaviour::Stall);
    let reg = Registry::new();
    let exp = build(
        &body(
            static_of(&bs),
            json!({"timeout": "30s", "sending_queue": {"num_consumers": 1, "queue_size": 1, "on_full": "block", "block_timeout": "100ms"}}),
        ),
        &reg,
    );
    exp.export(&testdata::traces(0, 10, 1)).await.unwrap();
    wait_until("the first share is on the wire", || {
        bs[0].attempts().len() == 1
    })
    .await;
    exp.export(&testdata::traces(10, 10, 1)).await.unwrap();
    let e = exp.export(&testdata::traces(20, 10, 1)).await.unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert!(e.message.contains("stayed full"), "{}", e.message);
    assert_eq!(
        items(&reg, "", "routed"),
        20,
        "the refused batch was not queued"
    );
    drop(exp);

    // Drop: the full endpoint's share is dropped and counted; export succeeds.
    let bs = backends(1).await;
    bs[0].set(Behaviour::Stall);
    let reg = Registry::new();
    let exp = build(
        &body(
            static_of(&bs),
            json!({"timeout": "30s", "sending_queue": {"num_consumers": 1, "queue_size": 1}}),
        ),
        &reg,
    );
    exp.export(&testdata::traces(0, 10, 1)).await.unwrap();
    wait_until("the first share is on the wire", || {
        bs[0].attempts().len() == 1
    })
    .await;
    exp.export(&testdata::traces(10, 10, 1)).await.unwrap();
    exp.export(&testdata::traces(20, 10, 1)).await.unwrap();
    assert_eq!(items(&reg, "", "routed"), 30);
    assert_eq!(
        metric(
            &reg,
            "meshgate_exporter_loadbalancing_dropped_items_total",
            &[("reason", "queue_full")]
        ),
        10
    );
    drop(exp);
}

#[tokio::test]
async fn accounting_through_the_engine_adds_up() {
    let bs = backends(3).await;
    bs[0].set(Behaviour::FailFirst(1));
    let reg = Registry::new();
    let b = body(static_of(&bs), json!({}));
    let exp = LoadBalancingExporterFactory
        .build(testutil::ctx(&b, &reg))
        .unwrap();
    assert!(LoadBalancingExporterFactory.ordered());
    // As the engine runs an `ordered` exporter: one sender, no engine retries.
    let (_stop, hard_stop) = shutdown_channel();
    let (queue, _stats, task) = exporter_helper::start(
        "test",
        exp,
        QueueConfig {
            num_consumers: 1,
            ..QueueConfig::default()
        },
        RetryConfig::disabled(),
        &reg,
        hard_stop,
    );
    let mut total = 0;
    for i in 0..5 {
        let p = testdata::traces(i * 100, 100, 3);
        total += p.item_count() as i64;
        queue.try_offer(Arc::new(p)).unwrap();
    }
    drop(queue);
    task.await.unwrap();
    let engine_sent = metric(&reg, "meshgate_exporter_sent_items_total", &[]);
    assert_eq!(engine_sent, total);
    assert_eq!(
        items(&reg, "", "routed") - items(&reg, "", "rerouted"),
        engine_sent
    );
    assert_eq!(items(&reg, "", "sent"), total);
    let mut delivered = Vec::new();
    for b in &bs {
        delivered.extend(b.accepted());
    }
    assert_eq!(spans(&delivered).len() as i64, total);
}

#[tokio::test]
async fn factory_checks_and_builds() {
    let f = LoadBalancingExporterFactory;
    assert_eq!(f.type_name(), "loadbalancing");
    assert!(
        f.check(&json!({"resolver": {"static": {"hostnames": ["a:4317"]}}}))
            .is_ok()
    );
    let e = f
        .check(&json!({"resolver": {"static": {"hostnames": ["a:4317"]}, "file": {"path": "/x"}}}))
        .unwrap_err();
    assert!(e.contains("exactly one resolver"), "{e}");
    let reg = Registry::new();
    let missing = json!({"resolver": {"file": {"path": "/nonexistent/meshgate/tier2"}}});
    let e = f
        .build(testutil::ctx(&missing, &reg))
        .map(|_| ())
        .unwrap_err();
    assert!(
        e.contains("cannot read /nonexistent/meshgate/tier2") && e.contains("No such file"),
        "{e}"
    );
    let exp = f
        .build(testutil::ctx(
            &json!({"resolver": {"static": {"hostnames": ["127.0.0.1:1"]}}}),
            &reg,
        ))
        .unwrap();
    let e = exp.export(&testutil::metrics(1)).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("not metrics"), "{e:?}");
    let schema = serde_json::to_string(&f.schema()).unwrap();
    for key in [
        "routing_key",
        "traceID",
        "hostnames",
        "interval",
        "sending_queue",
    ] {
        assert!(schema.contains(key), "schema lacks {key}");
    }
}

#[tokio::test]
async fn dns_resolution_that_never_succeeds_fails_exports_retryably() {
    let reg = Registry::new();
    let exp = build(
        &body(
            json!({"dns": {"hostname": "nonexistent.invalid", "interval": "50ms", "timeout": "50ms"}}),
            json!({"sending_queue": {"block_timeout": "200ms"}}),
        ),
        &reg,
    );
    let e = exp.export(&testdata::traces(0, 1, 1)).await.unwrap_err();
    assert!(
        e.retryable && e.message.contains("no endpoint is known yet"),
        "{e:?}"
    );
}
