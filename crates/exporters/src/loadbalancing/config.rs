//! Config of the `loadbalancing` exporter: the OpenTelemetry Collector's key names
//! (`routing_key`, `protocol.otlp`, `resolver.static|dns`) plus a `file` resolver.

use crate::common::{self, Compression};
use crate::otlp::{OtlpConfig, OtlpExporter};
use meshgate_config::{ByteSize, DurationValue};
use meshgate_engine::exporter_helper::{QueueConfig, RetryConfig};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::time::Duration;

/// Port used when an endpoint or the `dns` resolver names none: the OTLP/gRPC port.
pub const DEFAULT_PORT: u16 = 4317;

/// What a span or log record is routed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
pub enum RoutingKey {
    /// The trace id: every span of a trace, and every log record carrying that trace id,
    /// reaches the same endpoint (what tail sampling and the service graph need). Log records
    /// without a trace id are spread by a stable hash of the record.
    #[default]
    #[serde(rename = "traceID")]
    TraceId,
    /// The resource's `service.name`: all spans and logs of one service reach the same
    /// endpoint (per-service RED metrics without clashing series). Resources without
    /// `service.name` are routed together, as one unnamed service.
    #[serde(rename = "service")]
    Service,
}

/// Config of the `loadbalancing` exporter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancingConfig {
    /// What spans and log records are routed by: `traceID` or `service`. Default: `traceID`.
    #[serde(default)]
    pub routing_key: RoutingKey,
    /// How data is sent to each endpoint. Default: `otlp` with the `otlp` exporter's defaults.
    #[serde(default)]
    pub protocol: ProtocolConfig,
    /// Where the endpoints come from: exactly one of `static`, `dns` or `file` (required).
    pub resolver: ResolverConfig,
    /// The queue in front of the routing step (the engine's `sending_queue`; `num_consumers`
    /// is ignored: batches are routed one after another). Set `on_full: block` here and in
    /// `protocol.otlp.sending_queue` for backpressure to reach the clients. Default: 1000
    /// batches, `on_full: drop`.
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

/// `protocol`: the exporter each endpoint gets.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtocolConfig {
    /// OTLP/gRPC settings shared by every endpoint. Default: the `otlp` exporter's defaults.
    #[serde(default)]
    pub otlp: OtlpProtocol,
}

/// `protocol.otlp`: every option of the `otlp` exporter except `endpoint`, which the resolver
/// supplies. The queue and retries apply to each endpoint on its own.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpProtocol {
    /// Request compression: `gzip`, `zstd` or `none`. Default: `gzip`.
    #[serde(default)]
    pub compression: Compression,
    /// Deadline of one send attempt. Also how long an attempt already on the wire may finish
    /// when its endpoint leaves the ring before its data is re-routed, and how long a failing
    /// endpoint keeps retrying once the drain has started. Default: `5s`.
    #[serde(default = "default_timeout")]
    pub timeout: DurationValue,
    /// Extra gRPC metadata sent with every request. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Largest request sent to one endpoint, as encoded protobuf; bigger batches are split
    /// before routing, and queued shares are merged up to it. `0` disables the cap (shares
    /// are then merged up to 4 MiB). Default: `4MiB`.
    #[serde(default = "crate::common::default_max_request_size")]
    pub max_request_size: ByteSize,
    /// Each endpoint's own queue: `queue_size` shares, `num_consumers` concurrent sends,
    /// `on_full: drop` (that endpoint's share is dropped, counted, the others flow) or
    /// `block` (routing waits up to `block_timeout` for room, then fails the whole batch
    /// retryably without queueing any of it). Default: 10 consumers, 1000 shares,
    /// `on_full: drop`, `block_timeout: 5s`.
    #[serde(default)]
    pub sending_queue: QueueConfig,
    /// Retries of each endpoint's failed sends; only the failing endpoint's share is sent
    /// again. Default: enabled, 5s initial, x1.5, 30s max interval, 300s max elapsed time.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

impl Default for OtlpProtocol {
    fn default() -> Self {
        Self {
            compression: Compression::default(),
            timeout: default_timeout(),
            headers: BTreeMap::new(),
            max_request_size: common::default_max_request_size(),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

fn default_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(5))
}

impl OtlpProtocol {
    /// The `otlp` exporter config of one endpoint. Queue and retries are the load balancer's
    /// own, so the per-endpoint client gets neither.
    pub fn client_config(&self, endpoint: &str) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.to_string(),
            compression: self.compression,
            timeout: self.timeout,
            headers: self.headers.clone(),
            max_request_size: self.max_request_size,
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::disabled(),
        }
    }
}

/// `resolver`: exactly one source of endpoints.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolverConfig {
    /// A fixed list of endpoints. Default: unset.
    #[serde(rename = "static", default)]
    pub static_list: Option<StaticResolver>,
    /// The A/AAAA records of a hostname (a Kubernetes headless Service), re-resolved on an
    /// interval. Default: unset.
    #[serde(default)]
    pub dns: Option<DnsResolver>,
    /// A file listing one endpoint per line, re-read when it changes. Default: unset.
    #[serde(default)]
    pub file: Option<FileResolver>,
}

/// `resolver.static`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticResolver {
    /// The endpoints, `host:port` (`host` alone means port 4317) (required, at least one).
    pub hostnames: Vec<String>,
}

/// `resolver.dns`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsResolver {
    /// The name to resolve, e.g. `meshgate-tier2-headless.observability.svc.cluster.local`
    /// (required). Every address it resolves to becomes an endpoint.
    pub hostname: String,
    /// Port of every resolved address. Default: `4317`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Time between resolutions. Default: `5s`.
    #[serde(default = "default_dns_interval")]
    pub interval: DurationValue,
    /// Deadline of one resolution; a failed or timed-out resolution keeps the current
    /// endpoints. Default: `1s`.
    #[serde(default = "default_dns_timeout")]
    pub timeout: DurationValue,
}

/// `resolver.file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileResolver {
    /// The file: one `host:port` per line; blank lines and lines starting with `#` are
    /// ignored (required). A file that cannot be read or holds an invalid line keeps the
    /// current endpoints.
    pub path: String,
    /// How often the file is checked for changes. Default: `1s`.
    #[serde(default = "default_file_interval")]
    pub interval: DurationValue,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_dns_interval() -> DurationValue {
    DurationValue(Duration::from_secs(5))
}
fn default_dns_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(1))
}
fn default_file_interval() -> DurationValue {
    DurationValue(Duration::from_secs(1))
}

/// The one resolver a checked config names.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolverChoice {
    /// Fixed, normalised endpoints.
    Static(Vec<String>),
    /// `hostname`, `port`, `interval`, `timeout`.
    Dns {
        /// Name to resolve.
        hostname: String,
        /// Port of every address.
        port: u16,
        /// Time between resolutions.
        interval: Duration,
        /// Deadline of one resolution.
        timeout: Duration,
    },
    /// `path`, `interval`.
    File {
        /// The endpoints file.
        path: std::path::PathBuf,
        /// Time between checks.
        interval: Duration,
    },
}

/// Collector resolvers meshgate does not have, with what to use instead.
const UNSUPPORTED_RESOLVERS: [(&str, &str); 2] = [
    (
        "k8s",
        "the `k8s` resolver is not supported: use `dns` with the headless Service of the \
         second tier (its A records list the ready pods), or `file`",
    ),
    (
        "aws_cloud_map",
        "the `aws_cloud_map` resolver is not supported: use `dns` or `file`",
    ),
];

/// Collector routing keys that only apply to metrics, which this exporter does not route.
const METRIC_ROUTING_KEYS: [&str; 4] = ["resource", "metric", "streamID", "attributes"];

/// Parses and checks a config body: everything `meshgate validate` can know without
/// touching the network or the file system.
pub fn parse(body: &serde_json::Value) -> Result<(LoadBalancingConfig, ResolverChoice), String> {
    if let Some(key) = body.get("routing_key").and_then(|v| v.as_str())
        && METRIC_ROUTING_KEYS.contains(&key)
    {
        return Err(format!(
            "routing_key `{key}` routes metrics, which the loadbalancing exporter does not \
             handle; use `traceID` or `service` in traces and logs pipelines"
        ));
    }
    if let Some(resolver) = body.get("resolver").and_then(|v| v.as_object()) {
        for (name, why) in UNSUPPORTED_RESOLVERS {
            if resolver.contains_key(name) {
                return Err(format!("resolver.{name}: {why}"));
            }
        }
    }
    if body
        .pointer("/protocol/otlp/endpoint")
        .is_some_and(|v| !v.is_null())
    {
        return Err(
            "protocol.otlp.endpoint must not be set: the endpoints come from `resolver`".into(),
        );
    }
    for key in ["retry_on_failure", "timeout"] {
        if body.get(key).is_some_and(|v| !v.is_null()) {
            return Err(format!(
                "`{key}` belongs under `protocol.otlp`: each endpoint sends and retries its \
                 own share (write `protocol: {{otlp: {{{key}: ...}}}}`)"
            ));
        }
    }
    if body.get("resolver").is_none_or(|v| v.is_null()) {
        return Err(
            "`resolver` is required: one of `static: {hostnames: [...]}`, \
             `dns: {hostname: ...}` or `file: {path: ...}`"
                .into(),
        );
    }
    let cfg: LoadBalancingConfig = common::parse_config(body)?;
    let resolver = cfg.check()?;
    Ok((cfg, resolver))
}

impl LoadBalancingConfig {
    /// Checks the relations between the options and returns the chosen resolver.
    pub fn check(&self) -> Result<ResolverChoice, String> {
        // Timeout and headers, as the `otlp` exporter checks them.
        OtlpExporter::prepare(&self.protocol.otlp.client_config("localhost:4317"))
            .map_err(|e| format!("protocol.otlp: {e}"))?;
        let r = &self.resolver;
        let named: Vec<&str> = [
            r.static_list.as_ref().map(|_| "static"),
            r.dns.as_ref().map(|_| "dns"),
            r.file.as_ref().map(|_| "file"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if named.len() != 1 {
            return Err(if named.is_empty() {
                "resolver: name one of `static`, `dns` or `file`".to_string()
            } else {
                format!(
                    "resolver: name exactly one resolver, not {}",
                    named
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )
            });
        }
        if let Some(s) = &r.static_list {
            let list = parse_endpoint_list(s.hostnames.iter().map(String::as_str))
                .map_err(|e| format!("resolver.static.hostnames: {e}"))?;
            if list.is_empty() {
                return Err("resolver.static.hostnames: list at least one endpoint".into());
            }
            for e in &list {
                check_endpoint_address(e).map_err(|e| format!("resolver.static.hostnames: {e}"))?;
            }
            return Ok(ResolverChoice::Static(list));
        }
        if let Some(d) = &r.dns {
            let host = d.hostname.trim();
            if host.is_empty() {
                return Err(
                    "resolver.dns.hostname is empty; write the name to resolve, e.g. \
                            `meshgate-tier2-headless.observability.svc.cluster.local`"
                        .into(),
                );
            }
            if host.contains("://") || host.contains(':') || host.contains('/') {
                return Err(format!(
                    "resolver.dns.hostname `{host}` must be a bare name: no scheme, path or \
                     port (the port goes in `resolver.dns.port`)"
                ));
            }
            if d.port == 0 {
                return Err("resolver.dns.port must be between 1 and 65535".into());
            }
            if d.interval.0.is_zero() {
                return Err("resolver.dns.interval must be greater than 0s".into());
            }
            if d.timeout.0.is_zero() {
                return Err("resolver.dns.timeout must be greater than 0s".into());
            }
            return Ok(ResolverChoice::Dns {
                hostname: host.to_string(),
                port: d.port,
                interval: d.interval.0,
                timeout: d.timeout.0,
            });
        }
        let f = r.file.as_ref().expect("one resolver is named");
        if f.path.trim().is_empty() {
            return Err("resolver.file.path is empty".into());
        }
        if f.interval.0.is_zero() {
            return Err("resolver.file.interval must be greater than 0s".into());
        }
        Ok(ResolverChoice::File {
            path: f.path.trim().into(),
            interval: f.interval.0,
        })
    }
}

/// An endpoint as the ring names it: `host:port`, without scheme, port 4317 when none is
/// given, IPv6 addresses in brackets. Two spellings of one address (`http://a:4317`, `a`)
/// become the same endpoint, so instances configured either way build the same ring.
pub fn normalize_endpoint(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("an endpoint is empty".into());
    }
    let rest = if let Some(r) = s.strip_prefix("http://") {
        r
    } else if s.starts_with("https://") {
        return Err(format!(
            "endpoint `{s}`: TLS is not supported yet; use plain `host:port` (e.g. behind a \
             mesh sidecar that adds mTLS)"
        ));
    } else if s.contains("://") {
        return Err(format!(
            "endpoint `{s}`: unsupported scheme; write `host:port`"
        ));
    } else {
        s
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(format!("endpoint `{s}` has a path; write `host:port`"));
    }
    let (host, port): (String, Option<&str>) = if let Some(v6) = rest.strip_prefix('[') {
        let Some(end) = v6.find(']') else {
            return Err(format!("endpoint `{s}`: unclosed `[` in an IPv6 address"));
        };
        let after = &v6[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                format!("endpoint `{s}`: expected `:port` after the IPv6 address")
            })?),
        };
        (format!("[{}]", &v6[..end]), port)
    } else if rest.parse::<Ipv6Addr>().is_ok() {
        (format!("[{rest}]"), None)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("endpoint `{s}` has no host"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(format!(
                    "endpoint `{s}`: port `{p}` is not a number between 1 and 65535"
                ));
            }
        },
    };
    Ok(format!("{host}:{port}"))
}

/// Normalised, sorted endpoints from raw entries; the same endpoint twice is an error (it
/// would otherwise silently get one share, not two).
pub fn parse_endpoint_list<'a>(raw: impl Iterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for r in raw {
        out.push(normalize_endpoint(r)?);
    }
    out.sort();
    if let Some(w) = out.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("endpoint `{}` is listed twice", w[0]));
    }
    Ok(out)
}

/// The endpoints of a resolver file: one per line, blank lines and `#` comments ignored.
/// Errors name the line.
pub fn parse_endpoint_file(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let e = normalize_endpoint(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        check_endpoint_address(&e).map_err(|e| format!("line {}: {e}", i + 1))?;
        out.push(e);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether the gRPC client accepts a normalised endpoint as an address.
fn check_endpoint_address(endpoint: &str) -> Result<(), String> {
    let uri = format!("http://{endpoint}");
    uri.parse::<http::Uri>()
        .map(|_| ())
        .map_err(|e| format!("endpoint `{endpoint}` is not a valid address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: serde_json::Value) -> String {
        parse(&body).map(|_| ()).unwrap_err()
    }

    #[test]
    fn defaults_and_static_resolver() {
        let (cfg, r) = parse(&json!({
            "resolver": {"static": {"hostnames": ["b:4317", "http://a", "[::1]:5000", "::2"]}}
        }))
        .unwrap();
        assert_eq!(cfg.routing_key, RoutingKey::TraceId);
        assert_eq!(cfg.protocol.otlp.timeout.0, Duration::from_secs(5));
        assert_eq!(cfg.protocol.otlp.max_request_size.0, 4 * 1024 * 1024);
        assert_eq!(cfg.protocol.otlp.sending_queue.queue_size, 1000);
        assert!(cfg.protocol.otlp.retry_on_failure.enabled);
        assert_eq!(
            r,
            ResolverChoice::Static(vec![
                "[::1]:5000".into(),
                "[::2]:4317".into(),
                "a:4317".into(),
                "b:4317".into()
            ])
        );
    }

    #[test]
    fn dns_and_file_resolvers_with_defaults() {
        let (cfg, r) = parse(&json!({
            "routing_key": "service",
            "resolver": {"dns": {"hostname": "tier2-headless.obs.svc.cluster.local"}}
        }))
        .unwrap();
        assert_eq!(cfg.routing_key, RoutingKey::Service);
        assert_eq!(
            r,
            ResolverChoice::Dns {
                hostname: "tier2-headless.obs.svc.cluster.local".into(),
                port: 4317,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
            }
        );
        let (_, r) = parse(&json!({
            "resolver": {"file": {"path": "/etc/meshgate/tier2", "interval": "200ms"}},
            "protocol": {"otlp": {"timeout": "1s", "compression": "none",
                                   "sending_queue": {"on_full": "block"},
                                   "retry_on_failure": {"initial_interval": "10ms"}}},
            "sending_queue": {"queue_size": 10, "on_full": "block"}
        }))
        .unwrap();
        assert_eq!(
            r,
            ResolverChoice::File {
                path: "/etc/meshgate/tier2".into(),
                interval: Duration::from_millis(200)
            }
        );
    }

    #[test]
    fn config_errors_name_the_problem() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (json!({}), "`resolver` is required"),
            (
                json!({"resolver": {}}),
                "name one of `static`, `dns` or `file`",
            ),
            (
                json!({"resolver": {"static": {"hostnames": ["a"]}, "dns": {"hostname": "b"}}}),
                "exactly one resolver, not `static` and `dns`",
            ),
            (
                json!({"resolver": {"static": {"hostnames": []}}}),
                "list at least one endpoint",
            ),
            (
                json!({"resolver": {"static": {"hostnames": ["a:4317", "http://a"]}}}),
                "`a:4317` is listed twice",
            ),
            (
                json!({"resolver": {"static": {"hostnames": ["https://a:4317"]}}}),
                "TLS is not supported yet",
            ),
            (
                json!({"resolver": {"static": {"hostnames": ["a:99999"]}}}),
                "port `99999` is not a number",
            ),
            (
                json!({"resolver": {"static": {"hostnames": ["a:4317/v1"]}}}),
                "has a path",
            ),
            (
                json!({"resolver": {"dns": {"hostname": "svc:4317"}}}),
                "must be a bare name",
            ),
            (
                json!({"resolver": {"dns": {"hostname": " "}}}),
                "resolver.dns.hostname is empty",
            ),
            (
                json!({"resolver": {"dns": {"hostname": "svc", "interval": "0s"}}}),
                "interval must be greater than 0s",
            ),
            (
                json!({"resolver": {"file": {"path": ""}}}),
                "resolver.file.path is empty",
            ),
            (
                json!({"resolver": {"k8s": {"service": "lb-svc.ns"}}}),
                "`k8s` resolver is not supported",
            ),
            (
                json!({"routing_key": "metric", "resolver": {"dns": {"hostname": "x"}}}),
                "routes metrics",
            ),
            (
                json!({"routing_key": "spanID", "resolver": {"dns": {"hostname": "x"}}}),
                "unknown variant `spanID`",
            ),
            (
                json!({"protocol": {"otlp": {"endpoint": "x:1"}}, "resolver": {"dns": {"hostname": "x"}}}),
                "protocol.otlp.endpoint must not be set",
            ),
            (
                json!({"retry_on_failure": {"enabled": false}, "resolver": {"dns": {"hostname": "x"}}}),
                "belongs under `protocol.otlp`",
            ),
            (
                json!({"protocol": {"otlp": {"timeout": "0s"}}, "resolver": {"dns": {"hostname": "x"}}}),
                "protocol.otlp: `timeout` must be greater than 0s",
            ),
            (
                json!({"protocol": {"otlp": {"headers": {"bad key": "v"}}}, "resolver": {"dns": {"hostname": "x"}}}),
                "not a valid gRPC metadata key",
            ),
            (
                json!({"bogus": 1, "resolver": {"dns": {"hostname": "x"}}}),
                "unknown field `bogus`",
            ),
        ];
        for (body, want) in cases {
            let e = err(body.clone());
            assert!(e.contains(want), "{body}: got `{e}`, want `{want}`");
        }
    }

    #[test]
    fn endpoint_files_skip_comments_and_name_bad_lines() {
        let list = parse_endpoint_file("# tier 2\n\n b:4317 \nhttp://a:4317\na:4317\n").unwrap();
        assert_eq!(list, ["a:4317", "b:4317"]);
        let e = parse_endpoint_file("a:4317\nb:notaport\n").unwrap_err();
        assert!(e.starts_with("line 2:") && e.contains("notaport"), "{e}");
        assert!(parse_endpoint_file("").unwrap().is_empty());
    }
}
