//! Where the endpoints come from: a static list, the A/AAAA records of a DNS name, or a file.
//!
//! A resolver hands complete, sorted endpoint lists to [`Router::apply`]. A failed or empty
//! resolution never empties the ring: the current endpoints stay until a resolution names
//! others (a DNS hiccup or a half-written file must not stop all traffic).

use super::config::{ResolverChoice, parse_endpoint_file};
use super::router::Router;
use meshgate_engine::telemetry::Counter;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// What a resolver knows before the exporter starts.
pub(super) struct Initial {
    /// The static list, or the file's current endpoints; `None` for DNS, whose first
    /// resolution runs in [`run`] right away.
    pub endpoints: Option<Vec<String>>,
    /// The file's content as read, so the watcher sees any later change (even one made
    /// before it first looks).
    pub file_text: Option<String>,
}

/// Reads what is known now. An unreadable or invalid file fails the build, so a wrong path
/// is caught at startup.
pub(super) fn initial(choice: &ResolverChoice) -> Result<Initial, String> {
    match choice {
        ResolverChoice::Static(list) => Ok(Initial {
            endpoints: Some(list.clone()),
            file_text: None,
        }),
        ResolverChoice::File { path, .. } => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "resolver.file: cannot read {}: {}",
                    path.display(),
                    crate::common::io_error_text(&e)
                )
            })?;
            let endpoints = parse_endpoint_file(&text)
                .map_err(|e| format!("resolver.file: {}: {e}", path.display()))?;
            Ok(Initial {
                endpoints: Some(endpoints),
                file_text: Some(text),
            })
        }
        ResolverChoice::Dns { .. } => Ok(Initial {
            endpoints: None,
            file_text: None,
        }),
    }
}

/// Keeps the ring up to date until the task is aborted. `errors` counts failed resolutions.
pub(super) async fn run(
    choice: ResolverChoice,
    initial: Initial,
    router: Arc<Router>,
    errors: Counter,
    id: String,
) {
    match choice {
        ResolverChoice::Static(_) => {}
        ResolverChoice::Dns {
            hostname,
            port,
            interval,
            timeout,
        } => {
            let lookup = move || {
                let host = hostname.clone();
                async move {
                    tokio::net::lookup_host((host.as_str(), port))
                        .await
                        .map(|addrs| addrs.collect::<Vec<SocketAddr>>())
                        .map_err(|e| e.to_string())
                }
            };
            run_dns(lookup, interval, timeout, &router, &errors, &id).await;
        }
        ResolverChoice::File { path, interval } => {
            watch_file(&path, initial.file_text, interval, &router, &errors, &id).await;
        }
    }
}

/// Resolves with `lookup` every `interval` (the first time at once). Addresses are sorted and
/// deduplicated, so every instance builds the same ring whatever order the DNS server
/// answers in.
pub(super) async fn run_dns<F, Fut>(
    mut lookup: F,
    interval: Duration,
    timeout: Duration,
    router: &Arc<Router>,
    errors: &Counter,
    id: &str,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<SocketAddr>, String>>,
{
    loop {
        match tokio::time::timeout(timeout, lookup()).await {
            Ok(Ok(addrs)) if !addrs.is_empty() => {
                let mut list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
                list.sort();
                list.dedup();
                router.apply(list);
            }
            Ok(Ok(_)) => {
                errors.add(1);
                warn!(exporter = %id, "DNS resolution returned no address; keeping the current endpoints");
            }
            Ok(Err(e)) => {
                errors.add(1);
                warn!(exporter = %id, "DNS resolution failed; keeping the current endpoints: {e}");
            }
            Err(_) => {
                errors.add(1);
                warn!(exporter = %id, "DNS resolution timed out after {timeout:?}; keeping the current endpoints");
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Re-reads the endpoints file every `interval` and applies it when its content changed. A
/// problem is logged once per distinct content (or error), not on every check.
async fn watch_file(
    path: &Path,
    first: Option<String>,
    interval: Duration,
    router: &Arc<Router>,
    errors: &Counter,
    id: &str,
) {
    // What was last seen: the content, or the read error.
    let mut last: Option<Result<String, String>> = first.map(Ok);
    loop {
        tokio::time::sleep(interval).await;
        let now = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| crate::common::io_error_text(&e));
        if last.as_ref() == Some(&now) {
            continue;
        }
        match &now {
            Ok(text) => match parse_endpoint_file(text) {
                Ok(list) if !list.is_empty() => {
                    debug!(exporter = %id, file = %path.display(), "endpoints file changed");
                    router.apply(list);
                }
                Ok(_) => {
                    errors.add(1);
                    warn!(exporter = %id, file = %path.display(), "endpoints file lists no endpoint; keeping the current endpoints");
                }
                Err(e) => {
                    errors.add(1);
                    warn!(exporter = %id, file = %path.display(), "endpoints file is invalid, keeping the current endpoints: {e}");
                }
            },
            Err(e) => {
                errors.add(1);
                warn!(exporter = %id, file = %path.display(), "cannot read the endpoints file, keeping the current endpoints: {e}");
            }
        }
        last = Some(now);
    }
}

/// The resolver in a few words, for the startup log.
pub(super) fn describe(choice: &ResolverChoice) -> String {
    match choice {
        ResolverChoice::Static(l) => format!("static ({} endpoints)", l.len()),
        ResolverChoice::Dns { hostname, port, .. } => format!("dns {hostname}:{port}"),
        ResolverChoice::File { path, .. } => format!("file {}", path.display()),
    }
}
