//! OTLP/HTTP: `POST /v1/traces|metrics|logs` with `application/x-protobuf` or
//! `application/json` bodies, optionally gzip- or zstd-compressed. Responses come back in the
//! request's encoding; errors carry a `google.rpc.Status` body as the OTLP spec asks.

use super::{HttpConfig, Outcome};
use crate::http_common;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use meshgate_engine::{Consumer, Consumers, ShutdownSignal};
use meshgate_pdata::Signal;
use prost::Message;
use std::sync::Arc;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

struct Route {
    signal: Signal,
    consumer: Consumer,
    max_size: usize,
}

fn error(status: StatusCode, enc: Encoding, message: String) -> Response {
    // gRPC code equivalents, for clients that read the body.
    let code = match status {
        StatusCode::BAD_REQUEST => 3,
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::TOO_MANY_REQUESTS => 8,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
        _ => 2,
    };
    let bytes = match enc {
        Encoding::Protobuf => meshgate_pdata::rpc::Status {
            code,
            message,
            details: Vec::new(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    };
    (status, [(header::CONTENT_TYPE, enc.content_type())], bytes).into_response()
}

async fn handle(State(route): State<Arc<Route>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let enc = match content_type(&parts.headers) {
        Ok(e) => e,
        Err(msg) => return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, Encoding::Json, msg),
    };
    let coding = match http_common::content_coding(&parts.headers) {
        Ok(c) => c,
        Err(msg) => return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, enc, msg),
    };
    let bytes = match http_common::read_body(body, coding, route.max_size).await {
        Ok(b) => b,
        Err(e) => return error(e.status, enc, e.message),
    };
    let decoded = match enc {
        Encoding::Protobuf => super::decode_protobuf(route.signal, &bytes),
        Encoding::Json => meshgate_pdata::json::decode(route.signal, &bytes),
    };
    let data = match decoded {
        Ok(d) => d,
        Err(msg) => return error(StatusCode::BAD_REQUEST, enc, msg),
    };
    match super::export(&route.consumer, data).await {
        Outcome::Accepted(rej) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, enc.content_type())],
            super::response(route.signal, &rej, enc == Encoding::Json),
        )
            .into_response(),
        Outcome::Refused(r) => {
            let mut resp = error(http_common::refusal_status(r.reason), enc, r.message);
            http_common::set_retry_after(&mut resp, r.retry_after);
            resp
        }
    }
}

fn content_type(h: &HeaderMap) -> Result<Encoding, String> {
    let Some(ct) = h.get(header::CONTENT_TYPE) else {
        return Err("missing Content-Type: send application/x-protobuf or application/json".into());
    };
    let ct = ct.to_str().unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(format!(
            "unsupported Content-Type `{ct}`: send application/x-protobuf or application/json"
        )),
    }
}

/// Binds the HTTP listener and serves until shutdown.
pub(crate) async fn start(
    id: &str,
    cfg: &HttpConfig,
    consumers: &Consumers,
    shutdown: ShutdownSignal,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(&cfg.endpoint)
        .await
        .map_err(|e| format!("protocols.http: cannot listen on {}: {e}", cfg.endpoint))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let max_size = cfg.max_request_body_size.0 as usize;
    let mut app = Router::new();
    for (signal, path) in [
        (Signal::Traces, &cfg.traces_url_path),
        (Signal::Metrics, &cfg.metrics_url_path),
        (Signal::Logs, &cfg.logs_url_path),
    ] {
        if let Some(c) = consumers.get(signal) {
            let route = Arc::new(Route {
                signal,
                consumer: c.with_transport("http"),
                max_size,
            });
            app = app.route(path, post(handle).with_state(route));
        }
    }
    let app = app
        .fallback(|req: Request<Body>| async move {
            error(
                StatusCode::NOT_FOUND,
                Encoding::Json,
                format!("no OTLP endpoint at {} on this receiver", req.uri().path()),
            )
        })
        .layer(DefaultBodyLimit::disable());
    tracing::info!(receiver = %id, "OTLP/HTTP listening on {addr}");
    let id = id.to_string();
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.wait())
            .await
        {
            tracing::error!(receiver = %id, "OTLP/HTTP server failed: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(
            content_type(&h)
                .unwrap_err()
                .contains("missing Content-Type")
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(content_type(&h) == Ok(Encoding::Json));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        assert!(content_type(&h) == Ok(Encoding::Protobuf));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(content_type(&h).unwrap_err().contains("`text/plain`"));
    }
}
