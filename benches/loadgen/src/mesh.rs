//! Pieces of the load generator's `mesh` mode that are worth testing on their own: which
//! transport a flavor goes over, and the expected service graph as printable rows.

use meshgate_meshsim::{Flavor, GroundTruth};

/// How the requests of a flavor are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPlan {
    /// OTLP over gRPC (`TraceService/Export`).
    OtlpGrpc,
    /// OTLP/HTTP protobuf, `POST /v1/traces`.
    OtlpHttp,
    /// Zipkin v2 JSON, `POST /api/v2/spans`.
    ZipkinHttp,
}

impl SendPlan {
    /// Short name for summaries.
    pub fn name(self) -> &'static str {
        match self {
            SendPlan::OtlpGrpc => "otlp-grpc",
            SendPlan::OtlpHttp => "otlp-http",
            SendPlan::ZipkinHttp => "zipkin-http",
        }
    }
}

/// The transport for `flavor`. `http`: the user's `--protocol` (`Some(true)` = http,
/// `Some(false)` = grpc, `None` = not given). Zipkin flavors only go over HTTP, so asking for
/// gRPC with them is an error rather than a silent switch.
pub fn plan(flavor: Flavor, http: Option<bool>) -> Result<SendPlan, String> {
    match (flavor.is_zipkin(), http) {
        (true, Some(false)) => Err(format!(
            "--protocol grpc does not apply to --flavor {flavor}: Zipkin spans are POSTed as JSON to /api/v2/spans; drop --protocol"
        )),
        (true, _) => Ok(SendPlan::ZipkinHttp),
        (false, Some(true)) => Ok(SendPlan::OtlpHttp),
        (false, _) => Ok(SendPlan::OtlpGrpc),
    }
}

/// One expected service graph edge with its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedEdge {
    /// Client node.
    pub client: String,
    /// Server node.
    pub server: String,
    /// `""`, `virtual_node`, `database` or `messaging_system`.
    pub connection_type: String,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub failed: u64,
}

/// The truth's edges as rows, busiest first (ties by name), for the summary.
pub fn expected_edges(truth: &GroundTruth) -> Vec<ExpectedEdge> {
    let mut rows: Vec<ExpectedEdge> = truth
        .edges
        .iter()
        .map(|(k, v)| ExpectedEdge {
            client: k.client.clone(),
            server: k.server.clone(),
            connection_type: k.connection_type.clone(),
            requests: v.requests,
            failed: v.failed,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| (&a.client, &a.server).cmp(&(&b.client, &b.server)))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_meshsim::{Simulator, Topology};

    #[test]
    fn flavors_pick_their_transport() {
        assert_eq!(plan(Flavor::EnvoyOtlp, None), Ok(SendPlan::OtlpGrpc));
        assert_eq!(plan(Flavor::Linkerd, Some(true)), Ok(SendPlan::OtlpHttp));
        assert_eq!(
            plan(Flavor::EnvoyZipkin { shared: true }, None),
            Ok(SendPlan::ZipkinHttp)
        );
        assert_eq!(
            plan(Flavor::EnvoyZipkin { shared: false }, Some(true)),
            Ok(SendPlan::ZipkinHttp)
        );
        let e = plan(Flavor::EnvoyZipkin { shared: true }, Some(false)).unwrap_err();
        assert!(e.contains("--protocol grpc does not apply"), "{e}");
    }

    #[test]
    fn expected_edges_are_listed_busiest_first() {
        let t = Topology::from_yaml_str(
            "services: [{ name: a }, { name: b }]\nentry: { service: a, rate: 1 }\ncalls: [{ from: a, to: b, count: 2 }]\n",
            "t.yaml",
        )
        .unwrap();
        let g = Simulator::new(t, Flavor::EnvoyOtlp).generate_roots(5);
        let rows = expected_edges(&g.truth);
        assert_eq!(
            rows,
            vec![
                ExpectedEdge {
                    client: "a.default".into(),
                    server: "b.default".into(),
                    connection_type: String::new(),
                    requests: 10,
                    failed: 0
                },
                ExpectedEdge {
                    client: "user".into(),
                    server: "a.default".into(),
                    connection_type: "virtual_node".into(),
                    requests: 5,
                    failed: 0
                },
            ]
        );
    }
}
