//! Connectors: the exporter of one pipeline and the receiver of another. Both derive metrics
//! from every span of a `traces` pipeline, before any sampling:
//!
//! - `spanmetrics`: RED metrics (calls, errors, duration) per service, span name, kind and
//!   status, plus configured dimensions.
//! - `servicegraph`: the service topology (who calls whom, how often, how slowly, how often
//!   failing) as metrics, and live on the admin endpoint's `/api/v1/topology`.

pub mod histogram;
pub mod servicegraph;
pub mod spanmetrics;

/// Registers every connector type of this crate.
pub fn register(c: meshgate_engine::Components) -> meshgate_engine::Components {
    c.connector(spanmetrics::SpanMetricsFactory)
        .connector(servicegraph::ServiceGraphFactory)
}

/// The machine's hostname as the kernel reports it, when readable: the default
/// `meshgate.instance.id` of both connectors after the `HOSTNAME` variable.
pub(crate) fn system_hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
