//! Mesh-shaped OTLP trace requests for meshgate's benchmarks and load generator.
//!
//! The spans look like what Istio sidecars send through Envoy's OpenTelemetry tracer (see
//! `docs/mesh-telemetry.md` in the shared docs): one resource per proxy with `service.name` =
//! `<app>.<namespace>`, CLIENT (outbound) and SERVER (inbound) spans named
//! `<host>:<port>/*`, every attribute a string (`http.status_code` = `"200"`), Envoy's own
//! attributes (`node_id`, `upstream_cluster`, `response_flags`, `guid:x-request-id`, ...) and
//! the literal `istio.*` tags Istio adds to every span. Ids come from a counter-based mixer
//! (splitmix64), not a crypto RNG, so building requests stays cheap.
//!
//! Whole simulated meshes (traces, retries, databases, Linkerd and Zipkin shapes) come from
//! `meshgate-meshsim`; [`mesh`] holds what the `mesh` subcommand needs on top of it.

pub mod mesh;

use meshgate_pdata::attributes::kv_str;
use meshgate_pdata::otlp::{
    ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, span,
};

/// Bookinfo workloads used as proxies: (app, version, pod suffix, pod ip, port).
const WORKLOADS: [(&str, &str, &str, &str, u16); 4] = [
    ("productpage", "v1", "6b746f74dc-9stvt", "10.0.1.7", 9080),
    ("reviews", "v1", "7d8c5f8b9d-xk2lp", "10.0.1.12", 9080),
    ("ratings", "v1", "5b6d9bd7c7-qv9ms", "10.0.2.4", 9080),
    ("details", "v1", "79f774bdb9-wqzr4", "10.0.2.9", 9080),
];

/// Where each workload's CLIENT spans go (index into [`WORKLOADS`]).
const CALLEE: [usize; 4] = [1, 2, 3, 0];

/// splitmix64: a fast, well-mixed 64-bit counter hash.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A non-zero 64-bit id derived from `seed` and `n`.
fn id64(seed: u64, n: u64) -> u64 {
    let v = mix(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ mix(n));
    if v == 0 { 1 } else { v }
}

fn put_ids(s: &mut Span, seed: u64, i: u64) {
    // Spans come in CLIENT/SERVER pairs sharing one trace; the SERVER span's parent is the
    // CLIENT span (Istio sets `shared_span_context: false`).
    let pair = i / 2;
    let trace_hi = id64(seed, pair << 1);
    let trace_lo = id64(seed, (pair << 1) | 1);
    s.trace_id.clear();
    s.trace_id.extend_from_slice(&trace_hi.to_be_bytes());
    s.trace_id.extend_from_slice(&trace_lo.to_be_bytes());
    let client_id = id64(seed ^ 0x5EED, pair << 1);
    s.parent_span_id.clear();
    s.span_id.clear();
    if i % 2 == 0 {
        s.span_id.extend_from_slice(&client_id.to_be_bytes());
    } else {
        s.span_id
            .extend_from_slice(&id64(seed ^ 0x5EED, (pair << 1) | 1).to_be_bytes());
        s.parent_span_id.extend_from_slice(&client_id.to_be_bytes());
    }
}

fn mesh_span(seed: u64, i: u64, w: usize, base_ns: u64) -> Span {
    let (app, version, pod, ip, port) = WORKLOADS[w];
    let client = i % 2 == 0;
    // The callee of a CLIENT span, or this workload itself for a SERVER span.
    let target = if client { CALLEE[w] } else { w };
    let (t_app, _, _, t_ip, t_port) = WORKLOADS[target];
    let host = format!("{t_app}.default.svc.cluster.local");
    // One request in 50 fails the way Envoy reports it: 503, `UH`, `error=true`, status UNSET.
    let failed = mix(seed ^ i) % 50 == 0;
    let status = if failed { "503" } else { "200" };
    let request_id = format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        id64(seed, i) as u32,
        (id64(seed, i) >> 32) as u16,
        (id64(seed, i) >> 48) as u16 & 0xfff,
        (i as u16) & 0xfff,
        id64(seed ^ 1, i) & 0xffff_ffff_ffff
    );
    let cluster = if client {
        format!("outbound|{t_port}||{host}")
    } else {
        format!("inbound|{port}||")
    };
    let mut attributes: Vec<KeyValue> = vec![
        kv_str(
            "node_id",
            &format!("sidecar~{ip}~{app}-{version}-{pod}.default~default.svc.cluster.local"),
        ),
        kv_str("zone", "us-east1-b"),
        kv_str("guid:x-request-id", &request_id),
        kv_str(
            "http.url",
            &format!("http://{t_app}:{t_port}/{t_app}/{}", i % 100),
        ),
        kv_str("http.method", "GET"),
        kv_str("downstream_cluster", "-"),
        kv_str("user_agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0"),
        kv_str("http.protocol", "HTTP/1.1"),
        kv_str(
            "peer.address",
            if client {
                ip
            } else {
                WORKLOADS[CALLEE[(w + 3) % 4]].3
            },
        ),
        kv_str("request_size", "0"),
        kv_str("response_size", if failed { "91" } else { "358" }),
        kv_str("response_flags", if failed { "UH" } else { "-" }),
        kv_str("component", "proxy"),
        kv_str("upstream_cluster", &cluster),
        kv_str("upstream_cluster.name", &cluster),
        kv_str("upstream_address", &format!("{t_ip}:{t_port}")),
        kv_str("http.status_code", status),
        kv_str("istio.canonical_service", app),
        kv_str("istio.canonical_revision", version),
        kv_str("istio.mesh_id", "cluster.local"),
        kv_str("istio.namespace", "default"),
        kv_str("istio.cluster_id", "Kubernetes"),
    ];
    if failed {
        attributes.push(kv_str("error", "true"));
    }
    let start = base_ns + i * 1_000_000;
    let mut s = Span {
        name: format!("{host}:{t_port}/*"),
        kind: if client {
            span::SpanKind::Client
        } else {
            span::SpanKind::Server
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_500_000 + (mix(i) % 20_000_000),
        attributes,
        ..Default::default()
    };
    put_ids(&mut s, seed, i);
    s
}

/// Builds an OTLP trace export request of `n_spans` Istio-sidecar spans, spread over up to four
/// proxies (one resource each, `service.name` = `<app>.default`). Ids are derived from `seed`:
/// different seeds give different trace and span ids, the same seed the same request.
pub fn mesh_request(n_spans: usize, seed: u64) -> ExportTraceServiceRequest {
    let base_ns = 1_764_000_000_000_000_000u64 + (seed % 1_000_000) * 1_000_000_000;
    let n_res = n_spans.clamp(1, WORKLOADS.len());
    let mut resource_spans = Vec::with_capacity(n_res);
    let mut next = 0u64;
    for (w, (app, ..)) in WORKLOADS.iter().enumerate().take(n_res) {
        // Spread spans evenly over the proxies.
        let end = (n_spans * (w + 1) / n_res) as u64;
        let spans: Vec<Span> = (next..end)
            .map(|i| mesh_span(seed, i, w, base_ns))
            .collect();
        next = end;
        resource_spans.push(ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", &format!("{app}.default"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    ExportTraceServiceRequest { resource_spans }
}

/// Gives every span of `req` fresh trace and span ids derived from `seed`, keeping the
/// CLIENT/SERVER parent links, without rebuilding the attributes. Cheaper than
/// [`mesh_request`] when one request template is sent over and over.
pub fn restamp(req: &mut ExportTraceServiceRequest, seed: u64) {
    let mut i = 0u64;
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for s in &mut ss.spans {
                put_ids(s, seed, i);
                i += 1;
            }
        }
    }
}

/// Number of spans in `req`.
pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_pdata::Payload;
    use std::collections::HashSet;

    #[test]
    fn builds_valid_unique_spans() {
        let mut req = mesh_request(1000, 7);
        assert_eq!(span_count(&req), 1000);
        let mut p = Payload::Traces(req.clone());
        assert_eq!(meshgate_pdata::validate::remove_invalid(&mut p).count, 0);
        let ids: HashSet<Vec<u8>> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.span_id.clone())
            .collect();
        assert_eq!(ids.len(), 1000);
        let first = req.resource_spans[0].scope_spans[0].spans[0]
            .span_id
            .clone();
        restamp(&mut req, 8);
        assert_ne!(req.resource_spans[0].scope_spans[0].spans[0].span_id, first);
        assert_eq!(req.resource_spans.len(), 4);
    }
}
