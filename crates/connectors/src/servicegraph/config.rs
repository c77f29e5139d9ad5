//! Config of the `servicegraph` connector. Key names follow the OpenTelemetry Collector's
//! `servicegraph` connector where the meaning is the same (`latency_histogram_buckets`,
//! `dimensions`, `store.ttl`, `store.max_items`, `virtual_node_peer_attributes`,
//! `database_name_attributes`, `metrics_flush_interval`); the rest is meshgate's own.

use meshgate_config::DurationValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

/// Config of the `servicegraph` connector.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceGraphConfig {
    /// Upper bounds of the latency histograms (`..._server_seconds`, `..._client_seconds`),
    /// strictly increasing durations. Default: `[2ms, 4ms, 6ms, 8ms, 10ms, 50ms, 100ms, 200ms,
    /// 400ms, 800ms, 1s, 1400ms, 2s, 5s, 10s, 15s]` (the collector's spanmetrics buckets).
    pub latency_histogram_buckets: Option<Vec<DurationValue>>,
    /// Span or resource attribute keys added to every edge series, read on each side: the
    /// client span's value becomes label `client_<key>`, the server span's `server_<key>`.
    /// Each distinct combination of values is its own series, so keep them low-cardinality.
    /// Default: `[]`.
    pub dimensions: Vec<String>,
    /// Where a span waits for the other half of its call. Default: `ttl: 10s`,
    /// `max_items: 100000`.
    pub store: StoreConfig,
    /// Attributes, in order, that name the server of a CLIENT/PRODUCER span that never found
    /// its SERVER/CONSUMER partner (an uninstrumented peer: a database, a queue, an external
    /// API). The first one present names a virtual server node. Istio cluster names
    /// (`outbound|9080||reviews.default.svc.cluster.local`) contribute their host, and
    /// Kubernetes service names `<svc>.<ns>.svc[.<domain>]` become `<svc>.<ns>` so a request
    /// that never reached an instrumented server names the same node it would have.
    /// Default: `[peer.service, db.name, db.namespace, server.address, net.peer.name,
    /// upstream_cluster]`.
    pub virtual_node_peer_attributes: Vec<String>,
    /// Attributes that name the database of a database call (a span carrying `db.system`),
    /// tried after `virtual_node_peer_attributes` found nothing. Database edges get
    /// `connection_type="database"`. Default: `[db.name, db.namespace]`.
    pub database_name_attributes: Vec<String>,
    /// How often the cumulative edge metrics are emitted into the metrics pipelines (also
    /// once at shutdown). Default: `15s`.
    pub metrics_flush_interval: DurationValue,
    /// An edge series that saw no request for this long stops being emitted and is
    /// forgotten (counted on `meshgate_connector_servicegraph_series_expired_total`); it
    /// starts again from zero, with a new start time, if the edge comes back. `0s` keeps
    /// every series forever. Default: `5m`.
    pub metrics_expiration: DurationValue,
    /// How a span's service (its graph node) is named. Default: the defaults of its fields.
    pub identity: IdentityConfig,
    /// Which spans take part: `all` (default), or `proxy`: only spans of mesh proxies
    /// (`component=proxy` as Envoy sets it, or a `direction` attribute as Linkerd sets it),
    /// so application spans cannot add or split edges. Default: `all`.
    pub spans: SpanSelection,
    /// Adds the data-point attribute `meshgate.instance.id` to every series, so the
    /// cumulative series of several gateway replicas never clash in one backend (as in
    /// `spanmetrics`). Turn it on when more than one replica runs the service graph.
    /// Default: `false`.
    pub include_instance_id: bool,
    /// The value of `meshgate.instance.id`; only with `include_instance_id: true`. Default:
    /// the `HOSTNAME` environment variable (the pod name on Kubernetes), else the machine's
    /// host name.
    pub instance_id: Option<String>,
    /// The live topology served on the admin endpoint's `/api/v1/topology`. Default:
    /// `retention: 1h`, `resolution: 10s`.
    pub topology: TopologyConfig,
}

impl Default for ServiceGraphConfig {
    fn default() -> Self {
        ServiceGraphConfig {
            latency_histogram_buckets: None,
            dimensions: Vec::new(),
            store: StoreConfig::default(),
            virtual_node_peer_attributes: strings(&[
                "peer.service",
                "db.name",
                "db.namespace",
                "server.address",
                "net.peer.name",
                "upstream_cluster",
            ]),
            database_name_attributes: strings(&["db.name", "db.namespace"]),
            metrics_flush_interval: DurationValue(Duration::from_secs(15)),
            metrics_expiration: DurationValue(Duration::from_secs(300)),
            identity: IdentityConfig::default(),
            spans: SpanSelection::All,
            include_instance_id: false,
            instance_id: None,
            topology: TopologyConfig::default(),
        }
    }
}

/// The pairing store: spans waiting for the other half of their call.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// How long a span waits for its partner. Longer than the collector's `2s` on purpose:
    /// Envoy flushes its spans every 5 s per proxy and SDKs every 5 s per process, so the
    /// client and server halves of one call routinely arrive several seconds apart. After
    /// it, a caller with a peer attribute becomes an edge to a virtual node, a root server
    /// an edge from `user` (immediately, in fact), anything else is counted `expired`.
    /// Default: `10s`.
    pub ttl: DurationValue,
    /// Most entries held at once (waiting spans, plus the small markers that remember a
    /// sidecar's parent). When full, a span that would have to wait is dropped and counted
    /// `dropped`. Default: `100000`.
    #[schemars(range(min = 1))]
    pub max_items: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            ttl: DurationValue(Duration::from_secs(10)),
            max_items: 100_000,
        }
    }
}

/// How a span's node is named: `<name>.<namespace>` when a namespace is known and the name
/// does not already end with it, else `<name>`; `unknown_service` when no name attribute is
/// present. Attributes are read from the span first, then from its resource.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Attributes naming the service, first present wins. With the default, Istio proxy
    /// spans (`istio.canonical_service=reviews`) and SDK spans (`service.name=reviews`)
    /// name the same node. Default: `[istio.canonical_service, service.name]`.
    pub service_attributes: Vec<String>,
    /// Attributes naming the namespace, first present wins. Default: `[istio.namespace,
    /// service.namespace, k8s.namespace.name]`.
    pub namespace_attributes: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            service_attributes: strings(&["istio.canonical_service", "service.name"]),
            namespace_attributes: strings(&[
                "istio.namespace",
                "service.namespace",
                "k8s.namespace.name",
            ]),
        }
    }
}

/// Which spans the service graph reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpanSelection {
    /// Every span.
    All,
    /// Only mesh proxy spans (`component=proxy`, or a `direction` attribute).
    Proxy,
}

/// Time buckets kept for `/api/v1/topology`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// The longest window the API can answer; older buckets are dropped. Memory grows with
    /// `retention / resolution` per active edge (about 250 bytes a bucket). Default: `1h`.
    pub retention: DurationValue,
    /// Width of one time bucket; windows start on a bucket boundary. Default: `10s`.
    pub resolution: DurationValue,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            retention: DurationValue(Duration::from_secs(3600)),
            resolution: DurationValue(Duration::from_secs(10)),
        }
    }
}

/// Most buckets one topology edge may keep (`retention / resolution`), so a typo such as
/// `resolution: 1ms` cannot make every edge hold millions of buckets.
pub const MAX_TOPOLOGY_BUCKETS: u128 = 100_000;

impl ServiceGraphConfig {
    /// Checks what the schema cannot: orders, relations and empty values. The message names
    /// the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = &self.latency_histogram_buckets {
            if b.is_empty() {
                return Err("`latency_histogram_buckets` must list at least one bound".into());
            }
            if b[0].0.is_zero() {
                return Err("`latency_histogram_buckets` bounds must be greater than 0".into());
            }
            if let Some(w) = b.windows(2).find(|w| w[0] >= w[1]) {
                return Err(format!(
                    "`latency_histogram_buckets` must be strictly increasing, but {} is followed \
                     by {}",
                    w[0], w[1]
                ));
            }
        }
        check_keys("dimensions", &self.dimensions, false)?;
        check_keys(
            "virtual_node_peer_attributes",
            &self.virtual_node_peer_attributes,
            false,
        )?;
        check_keys(
            "database_name_attributes",
            &self.database_name_attributes,
            false,
        )?;
        check_keys(
            "identity.service_attributes",
            &self.identity.service_attributes,
            true,
        )?;
        check_keys(
            "identity.namespace_attributes",
            &self.identity.namespace_attributes,
            false,
        )?;
        if self.store.ttl.0.is_zero() {
            return Err("`store.ttl` must be greater than 0".into());
        }
        if self.store.max_items == 0 {
            return Err("`store.max_items` must be at least 1".into());
        }
        if self.metrics_flush_interval.0.is_zero() {
            return Err("`metrics_flush_interval` must be greater than 0".into());
        }
        match &self.instance_id {
            Some(_) if !self.include_instance_id => {
                return Err(
                    "`instance_id` is set but `include_instance_id` is false: set \
                     `include_instance_id: true` to use it"
                        .into(),
                );
            }
            Some(s) if s.trim().is_empty() => {
                return Err("`instance_id` is empty: remove it to use the host name".into());
            }
            _ => {}
        }
        let (ret, res) = (self.topology.retention.0, self.topology.resolution.0);
        if res.is_zero() {
            return Err("`topology.resolution` must be greater than 0".into());
        }
        if ret < res {
            return Err(format!(
                "`topology.retention` ({}) must be at least `topology.resolution` ({})",
                self.topology.retention, self.topology.resolution
            ));
        }
        if ret.as_nanos() / res.as_nanos() > MAX_TOPOLOGY_BUCKETS {
            return Err(format!(
                "`topology.retention` / `topology.resolution` must be at most \
                 {MAX_TOPOLOGY_BUCKETS} buckets; raise `topology.resolution`"
            ));
        }
        Ok(())
    }

    /// The histogram bounds in seconds.
    pub fn bounds_seconds(&self) -> Vec<f64> {
        match &self.latency_histogram_buckets {
            Some(b) => b.iter().map(|d| d.0.as_secs_f64()).collect(),
            None => crate::histogram::DEFAULT_BOUNDS_SECONDS.to_vec(),
        }
    }

    /// The instance id to attach, if any.
    pub fn effective_instance_id(&self) -> Option<String> {
        if !self.include_instance_id {
            return None;
        }
        Some(self.instance_id.clone().unwrap_or_else(default_instance_id))
    }
}

fn check_keys(what: &str, keys: &[String], required: bool) -> Result<(), String> {
    if required && keys.is_empty() {
        return Err(format!("`{what}` must list at least one attribute"));
    }
    for (i, k) in keys.iter().enumerate() {
        if k.trim().is_empty() {
            return Err(format!("`{what}[{i}]` is empty"));
        }
        if keys[..i].contains(k) {
            return Err(format!("`{what}` lists `{k}` twice"));
        }
    }
    Ok(())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The default `meshgate.instance.id`: `HOSTNAME` when set (Kubernetes sets it to the pod
/// name), else the kernel's host name, else `unknown`.
pub fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(crate::system_hostname)
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<ServiceGraphConfig, String> {
        let c: ServiceGraphConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate().map(|_| c)
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = parse(serde_json::json!({})).unwrap();
        assert_eq!(c.store.ttl.0, Duration::from_secs(10));
        assert_eq!(c.store.max_items, 100_000);
        assert_eq!(c.metrics_flush_interval.0, Duration::from_secs(15));
        assert_eq!(c.metrics_expiration.0, Duration::from_secs(300));
        assert_eq!(c.topology.retention.0, Duration::from_secs(3600));
        assert_eq!(c.topology.resolution.0, Duration::from_secs(10));
        assert_eq!(c.spans, SpanSelection::All);
        assert_eq!(c.bounds_seconds(), crate::histogram::DEFAULT_BOUNDS_SECONDS);
        assert_eq!(
            c.identity.service_attributes,
            ["istio.canonical_service", "service.name"]
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = |v| parse(v).unwrap_err();
        assert!(err(serde_json::json!({"store": {"ttl": "0s"}})).contains("store.ttl"));
        assert!(
            err(serde_json::json!({"latency_histogram_buckets": ["2s", "1s"]}))
                .contains("strictly increasing")
        );
        assert!(err(serde_json::json!({"dimensions": ["a", "a"]})).contains("twice"));
        assert!(err(serde_json::json!({"spans": "sdk"})).contains("unknown variant"));
        assert!(err(serde_json::json!({"stor": {}})).contains("unknown field"));
        assert!(
            err(serde_json::json!({"topology": {"retention": "1h", "resolution": "1ms"}}))
                .contains("topology.resolution")
        );
        assert!(
            err(serde_json::json!({"identity": {"service_attributes": []}}))
                .contains("identity.service_attributes")
        );
        assert!(err(serde_json::json!({"instance_id": "gw-0"})).contains("include_instance_id"));
        let c = parse(
            serde_json::json!({"latency_histogram_buckets": ["100ms", "1s"],
            "spans": "proxy", "include_instance_id": true, "instance_id": "gw-0"}),
        )
        .unwrap();
        assert_eq!(c.bounds_seconds(), vec![0.1, 1.0]);
        assert_eq!(c.effective_instance_id().as_deref(), Some("gw-0"));
    }
}
