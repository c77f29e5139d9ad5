//! OTLP/HTTP: `POST /v1/traces|metrics|logs` with `application/x-protobuf` or
//! `application/json` bodies, optionally gzip- or zstd-compressed. Responses come back in the
//! request's encoding; errors carry a `google.rpc.Status` body as the OTLP spec asks.

use super::{HttpConfig, Outcome};
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use meshgate_engine::{Consumer, Consumers, RefusalReason, ShutdownSignal};
use meshgate_pdata::Signal;
use prost::Message;
use std::io::Read;
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
    let coding = match parts
        .headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => None,
        Some(c) if c.is_empty() || c == "identity" => None,
        Some(c) if c == "gzip" || c == "zstd" => Some(c),
        Some(c) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                enc,
                format!("unsupported Content-Encoding `{c}`: send gzip, zstd or no encoding"),
            );
        }
    };
    let raw = match axum::body::to_bytes(body, route.max_size).await {
        Ok(b) => b,
        Err(e) => {
            // to_bytes fails with a length-limit error when the body is too big.
            let too_big = std::error::Error::source(&e)
                .map(|s| s.to_string().contains("length limit"))
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            return if too_big {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    enc,
                    format!(
                        "request body is larger than max_request_body_size ({} bytes)",
                        route.max_size
                    ),
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    enc,
                    format!("cannot read request body: {e}"),
                )
            };
        }
    };
    let bytes = match coding.as_deref() {
        None => raw.to_vec(),
        Some(c) => match decompress(c, &raw, route.max_size) {
            Ok(b) => b,
            Err((status, msg)) => return error(status, enc, msg),
        },
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
            let status = match r.reason {
                RefusalReason::Backpressure => StatusCode::TOO_MANY_REQUESTS,
                RefusalReason::MemoryLimit | RefusalReason::ShuttingDown => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            let mut resp = error(status, enc, r.message);
            let secs = r.retry_after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
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

/// Decompresses at most `limit` bytes; more is a 413 (a small gzip body can expand hugely).
fn decompress(coding: &str, raw: &[u8], limit: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let res = match coding {
        "gzip" => flate2::read::MultiGzDecoder::new(raw)
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        _ => match zstd::stream::read::Decoder::new(raw) {
            Ok(d) => d.take(limit as u64 + 1).read_to_end(&mut out),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = res {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("body is not valid {coding}: {e}"),
        ));
    }
    if out.len() > limit {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed body is larger than max_request_body_size ({limit} bytes)"),
        ));
    }
    Ok(out)
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
    use std::io::Write;

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

    #[test]
    fn decompression_is_bounded() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[7u8; 1000]).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress("gzip", &gz, 1000).unwrap(), vec![7u8; 1000]);
        let (status, msg) = decompress("gzip", &gz, 999).unwrap_err();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(msg.contains("999"));
        let z = zstd::encode_all(&[1u8; 10][..], 1).unwrap();
        assert_eq!(decompress("zstd", &z, 10).unwrap(), vec![1u8; 10]);
        let (status, _) = decompress("gzip", b"not gzip", 10).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
