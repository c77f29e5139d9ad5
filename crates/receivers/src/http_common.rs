//! What every HTTP receiver of this crate does the same way, whatever its payload format:
//! reading the `Content-Encoding`, reading the body under `max_request_body_size` (both as
//! sent and after decompression, since a small gzip body can expand hugely), and turning an
//! engine refusal into `429`/`503` with `Retry-After`.
//!
//! The error *bodies* are the receivers' own (OTLP answers with a `google.rpc.Status`, Zipkin
//! with plain text), so these helpers return a status and a message and let the caller render
//! them.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use meshgate_engine::RefusalReason;
use std::io::Read;
use std::time::Duration;

/// A `Content-Encoding` the receivers can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// No encoding (header absent, empty or `identity`).
    Identity,
    /// `gzip` (several concatenated members are read as one stream).
    Gzip,
    /// `zstd`.
    Zstd,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Zstd => "zstd",
        }
    }
}

/// A request the receiver cannot read: the status to answer and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyError {
    /// `400`, `413` or `415`.
    pub status: StatusCode,
    /// What is wrong, phrased for the client.
    pub message: String,
}

/// The request's `Content-Encoding`; an unsupported one is an error message for a `415`.
pub(crate) fn content_coding(headers: &HeaderMap) -> Result<Coding, String> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Coding::Identity);
    };
    let c = v.to_str().unwrap_or("?").trim().to_ascii_lowercase();
    match c.as_str() {
        "" | "identity" => Ok(Coding::Identity),
        "gzip" => Ok(Coding::Gzip),
        "zstd" => Ok(Coding::Zstd),
        _ => Err(format!(
            "unsupported Content-Encoding `{c}`: send gzip, zstd or no encoding"
        )),
    }
}

/// Reads the whole body, at most `limit` bytes as sent and `limit` bytes after decoding
/// `coding`; more is a `413`, an unreadable or corrupt body a `400`.
pub(crate) async fn read_body(
    body: Body,
    coding: Coding,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let raw = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            // to_bytes fails with a length-limit error when the body is too big.
            let too_big = std::error::Error::source(&e)
                .map(|s| s.to_string().contains("length limit"))
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            return Err(if too_big {
                BodyError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!(
                        "request body is larger than max_request_body_size ({limit} bytes)"
                    ),
                }
            } else {
                BodyError {
                    status: StatusCode::BAD_REQUEST,
                    message: format!("cannot read request body: {e}"),
                }
            });
        }
    };
    match coding {
        Coding::Identity => Ok(raw),
        c => decompress(c, &raw, limit).map(Bytes::from),
    }
}

/// Decompresses at most `limit` bytes; more is a `413`.
pub(crate) fn decompress(coding: Coding, raw: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let res = match coding {
        Coding::Identity => {
            out.extend_from_slice(raw);
            Ok(raw.len())
        }
        Coding::Gzip => flate2::read::MultiGzDecoder::new(raw)
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        Coding::Zstd => match zstd::stream::read::Decoder::new(raw) {
            Ok(d) => d.take(limit as u64 + 1).read_to_end(&mut out),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = res {
        return Err(BodyError {
            status: StatusCode::BAD_REQUEST,
            message: format!("body is not valid {}: {e}", coding.name()),
        });
    }
    if out.len() > limit {
        return Err(BodyError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "decompressed body is larger than max_request_body_size ({limit} bytes)"
            ),
        });
    }
    Ok(out)
}

/// The HTTP status of an engine refusal: `429` when a pipeline is full (the client should
/// slow down), `503` when a memory limiter refuses or the gateway is draining.
pub(crate) fn refusal_status(reason: RefusalReason) -> StatusCode {
    match reason {
        RefusalReason::Backpressure => StatusCode::TOO_MANY_REQUESTS,
        RefusalReason::MemoryLimit | RefusalReason::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Adds `Retry-After` in whole seconds (at least 1, as the header has no finer unit).
pub(crate) fn set_retry_after(resp: &mut Response, after: Duration) {
    let secs = after.as_secs().max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use std::io::Write;

    #[test]
    fn content_codings() {
        let mut h = HeaderMap::new();
        assert_eq!(content_coding(&h), Ok(Coding::Identity));
        for (v, want) in [
            ("gzip", Coding::Gzip),
            (" ZSTD ", Coding::Zstd),
            ("identity", Coding::Identity),
            ("", Coding::Identity),
        ] {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(v));
            assert_eq!(content_coding(&h), Ok(want), "{v:?}");
        }
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(
            content_coding(&h).unwrap_err(),
            "unsupported Content-Encoding `br`: send gzip, zstd or no encoding"
        );
    }

    #[test]
    fn decompression_is_bounded() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[7u8; 1000]).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decompress(Coding::Gzip, &gz, 1000).unwrap(),
            vec![7u8; 1000]
        );
        let e = decompress(Coding::Gzip, &gz, 999).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("999"));
        let z = zstd::encode_all(&[1u8; 10][..], 1).unwrap();
        assert_eq!(decompress(Coding::Zstd, &z, 10).unwrap(), vec![1u8; 10]);
        let e = decompress(Coding::Gzip, b"not gzip", 10).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.starts_with("body is not valid gzip"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn bodies_are_limited_as_sent_and_after_decoding() {
        let ok = read_body(Body::from(vec![1u8; 10]), Coding::Identity, 10)
            .await
            .unwrap();
        assert_eq!(ok.len(), 10);
        let e = read_body(Body::from(vec![1u8; 11]), Coding::Identity, 10)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            e.message,
            "request body is larger than max_request_body_size (10 bytes)"
        );
        let z = zstd::encode_all(&[0u8; 100][..], 1).unwrap();
        assert!(z.len() <= 50);
        let e = read_body(Body::from(z.clone()), Coding::Zstd, 50)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.starts_with("decompressed body"), "{}", e.message);
        let ok = read_body(Body::from(z), Coding::Zstd, 100).await.unwrap();
        assert_eq!(&ok[..], &[0u8; 100][..]);
    }

    #[test]
    fn refusals_map_to_retryable_statuses() {
        assert_eq!(
            refusal_status(RefusalReason::Backpressure),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            refusal_status(RefusalReason::MemoryLimit),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            refusal_status(RefusalReason::ShuttingDown),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let mut r = StatusCode::TOO_MANY_REQUESTS.into_response();
        set_retry_after(&mut r, Duration::from_millis(300));
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        set_retry_after(&mut r, Duration::from_secs(7));
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
    }
}
