//! The live service map: `GET /service-map` on the admin endpoint, a page that reads
//! [`TOPOLOGY_PATH`](super::TOPOLOGY_PATH) and draws the topology on a canvas (namespace
//! boxes, call-depth columns, edges coloured by error rate and as wide as their request rate,
//! details and exemplar trace ids on click, a window selector, periodic refresh).
//!
//! The page is three embedded files under `ui/` (our own code; no libraries, fonts or other
//! hosts), served with `Cache-Control: no-cache` so an upgraded gateway never mixes an old
//! script with a new page. All URLs are relative (`service-map.js`, `api/v1/topology`), so
//! the page also works behind a reverse proxy that mounts the admin endpoint under a prefix.
//!
//! Contract with the headless-browser test and the render benchmark: query parameters
//! `window` (default `5m`), `refresh` (seconds, default 10, `0` = off) and `component`
//! (passed on to the API); DOM ids `map`, `details`, `window`, `refresh`, `status`,
//! `search`; exemplar trace ids as `.exemplar` elements; and `window.meshgateServiceMap`
//! with `ready`, `renders`, `loads`, `lastLoad` (`fetchMs`, `parseMs`, `layoutMs`, `drawMs`,
//! `totalMs`, `nodes`, `edges`), `lastDrawMs`, `nodeIds()`, `edgeIds()`,
//! `screenPosition(kind, id)`, `selected` (`{kind: "node" | "edge" | "namespaces", id}`),
//! `select(kind, id)`, `fit()`, `lastError`, `reload()` and `redraw()`. `#details` carries
//! `data-exemplars` = `loading` | `loaded` | `failed`: the map is loaded with
//! `exemplars=false` and a selection fetches its neighbourhood (`node=<id>`) with them.

use meshgate_engine::admin::{ApiRequest, ApiResponse, ApiRoutes};
use std::sync::Arc;

/// Where the page is served on the admin endpoint.
pub const PAGE_PATH: &str = "/service-map";
/// The page's script (the HTML refers to it relatively, as `service-map.js`).
const SCRIPT_PATH: &str = "/service-map.js";
/// The page's style sheet (`service-map.css`).
const STYLE_PATH: &str = "/service-map.css";

const HTML: &str = include_str!("ui/service-map.html");
const SCRIPT: &str = include_str!("ui/service-map.js");
const STYLE: &str = include_str!("ui/service-map.css");

/// Serves the page and its assets. They are the same for every `servicegraph` connector
/// (the page passes `?component=` on to the API), so they are shared routes: a second
/// connector's registration is a no-op and `?component=` never makes them 404.
pub(crate) fn register(api: &ApiRoutes) {
    api.register_shared(
        PAGE_PATH,
        Arc::new(|_: &ApiRequest| ApiResponse::html(HTML)),
    );
    api.register_shared(
        SCRIPT_PATH,
        Arc::new(|_: &ApiRequest| ApiResponse::javascript(SCRIPT)),
    );
    api.register_shared(
        STYLE_PATH,
        Arc::new(|_: &ApiRequest| ApiResponse::css(STYLE)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicegraph::{ServiceGraphFactory, TOPOLOGY_PATH};
    use meshgate_engine::telemetry::Registry;
    use meshgate_engine::{BuildContext, ConnectorFactory};

    fn get(api: &ApiRoutes, path: &str, query: &[(&str, &str)]) -> ApiResponse {
        let mut req = ApiRequest::default();
        for (k, v) in query {
            req.query.insert(k.to_string(), v.to_string());
        }
        api.call(path, &req)
    }

    /// Every `attr="value"` in `text`.
    fn attribute_values<'a>(text: &'a str, attr: &str) -> Vec<&'a str> {
        let needle = format!(" {attr}=\"");
        text.match_indices(&needle)
            .map(|(at, _)| {
                let rest = &text[at + needle.len()..];
                &rest[..rest.find('"').expect("closed attribute")]
            })
            .collect()
    }

    #[test]
    fn the_page_and_its_assets_are_served_with_their_types() {
        let api = ApiRoutes::default();
        register(&api);
        for (path, ty, body) in [
            (PAGE_PATH, "text/html; charset=utf-8", HTML),
            (SCRIPT_PATH, "text/javascript; charset=utf-8", SCRIPT),
            (STYLE_PATH, "text/css; charset=utf-8", STYLE),
        ] {
            // `component` picks a connector for the API; the page answers whatever it says.
            let r = get(&api, path, &[("component", "servicegraph/other")]);
            assert_eq!((r.status, r.content_type), (200, ty), "{path}");
            assert_eq!(r.cache_control, Some("no-cache"), "{path}");
            assert_eq!(r.body, body, "{path}");
            assert!(!body.trim().is_empty(), "{path}");
        }
        assert!(HTML.starts_with("<!doctype html>"));
    }

    #[test]
    fn every_servicegraph_connector_serves_the_page_once_next_to_the_api() {
        let api = ApiRoutes::default();
        let telemetry = Registry::new();
        let config = serde_json::Value::Null;
        let mut connectors = Vec::new();
        for id in ["servicegraph", "servicegraph/b"] {
            connectors.push(
                ServiceGraphFactory
                    .build(BuildContext {
                        id: id.to_string(),
                        config: &config,
                        telemetry: &telemetry,
                        api: api.clone(),
                    })
                    .unwrap(),
            );
        }
        let page = get(&api, PAGE_PATH, &[("component", "servicegraph/b")]);
        assert_eq!((page.status, page.body.as_str()), (200, HTML));
        let topology = get(
            &api,
            TOPOLOGY_PATH,
            &[("component", "servicegraph/b"), ("window", "1m")],
        );
        assert_eq!(topology.status, 200, "{}", topology.body);
        let json: serde_json::Value = serde_json::from_str(&topology.body).unwrap();
        assert_eq!(json["window_seconds"], 60.0);
    }

    #[test]
    fn the_page_refers_only_to_its_own_assets() {
        let mut refs = attribute_values(HTML, "src");
        refs.extend(attribute_values(HTML, "href"));
        refs.sort_unstable();
        assert_eq!(refs, ["data:,", "service-map.css", "service-map.js"]);
        let api = ApiRoutes::default();
        register(&api);
        for asset in ["service-map.css", "service-map.js"] {
            // Relative to `/service-map`, `x` is `/x`.
            assert_eq!(get(&api, &format!("/{asset}"), &[]).status, 200, "{asset}");
        }
        // The script reads nothing but the topology API (the map, and a selection's
        // neighbourhood with its exemplars), also by a relative URL.
        assert_eq!(SCRIPT.matches("fetch(").count(), 2);
        assert_eq!(
            SCRIPT
                .matches(&format!("\"{}?\"", &TOPOLOGY_PATH[1..]))
                .count(),
            2
        );
        for (name, text) in [("html", HTML), ("js", SCRIPT), ("css", STYLE)] {
            for banned in [
                "http://",
                "https://",
                "//cdn",
                "@import",
                "url(",
                "<iframe",
                "new WebSocket",
                "XMLHttpRequest",
                "import(",
                "eval(",
            ] {
                assert!(
                    !text.contains(banned),
                    "{name} asset contains `{banned}`: the page must use only its own assets"
                );
            }
        }
    }

    #[test]
    fn the_contract_names_are_in_the_page() {
        for id in ["map", "details", "window", "refresh", "status", "search"] {
            assert!(
                HTML.contains(&format!("id=\"{id}\"")),
                "no #{id} in the page"
            );
        }
        assert_eq!(
            attribute_values(HTML, "value")
                .into_iter()
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>(),
            ["1m", "5m", "15m", "1h", "0", "5", "10", "30", "60"],
            "window and refresh choices"
        );
        assert!(SCRIPT.contains("window.meshgateServiceMap = {"));
        for member in [
            "get ready()",
            "get renders()",
            "get loads()",
            "get lastLoad()",
            "get lastDrawMs()",
            "get selected()",
            "nodeIds:",
            "edgeIds:",
            "screenPosition,",
            "reload,",
            "redraw:",
            "fetchMs:",
            "parseMs:",
            "layoutMs:",
            "drawMs,",
            "totalMs:",
            "class: \"exemplar\"",
            "params.get(\"window\")",
            "params.get(\"refresh\")",
            "params.get(\"component\")",
            "performance.now()",
        ] {
            assert!(SCRIPT.contains(member), "the script lacks `{member}`");
        }
        assert!(STYLE.contains(".exemplar"));
    }
}
