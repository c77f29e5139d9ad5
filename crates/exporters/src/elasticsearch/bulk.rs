//! The `_bulk` request body and the reading of its per-item answers.

use super::docs::Item;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Write;

/// Path and query of the bulk request: `filter_path` keeps the response to what is read.
pub(crate) const BULK_PATH: &str =
    "/_bulk?filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";

/// The NDJSON body holding `items[i]` for every `i` in `pending`, gzip'd when asked.
pub(crate) fn body(items: &[Item], pending: &[usize], gzip: bool) -> std::io::Result<Vec<u8>> {
    let len: usize = pending.iter().map(|&i| items[i].len()).sum();
    if !gzip {
        let mut out = Vec::with_capacity(len);
        for &i in pending {
            out.extend_from_slice(&items[i]);
        }
        return Ok(out);
    }
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(len / 6 + 64),
        flate2::Compression::fast(),
    );
    for &i in pending {
        enc.write_all(&items[i])?;
    }
    enc.finish()
}

#[derive(Debug, Deserialize)]
pub(crate) struct BulkResponse {
    #[serde(default)]
    pub errors: bool,
    #[serde(default)]
    pub items: Vec<HashMap<String, ItemResult>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ItemResult {
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub error: Option<ItemError>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ItemError {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What became of one bulk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemOutcome {
    /// Indexed (2xx).
    Indexed,
    /// `create` of an id that exists (409): a duplicate of what was already delivered.
    Duplicate,
    /// Throttled or temporarily unavailable (429, 502, 503, 504): send again.
    Retry { status: u16 },
    /// Refused for good (mapping or parse errors...): dropped.
    Rejected {
        status: u16,
        kind: String,
        reason: String,
    },
}

/// Whether an item (or whole-request) status is worth sending again.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// The outcome of each of `expected` items, in request order. `Err` when the body is not a
/// bulk response or its item count does not match.
pub(crate) fn parse(body: &[u8], expected: usize) -> Result<Vec<ItemOutcome>, String> {
    let resp: BulkResponse =
        serde_json::from_slice(body).map_err(|e| format!("undecodable bulk response: {e}"))?;
    if !resp.errors && resp.items.is_empty() {
        // `filter_path` drops `items` entirely when... never, but be lenient: no errors.
        return Ok(vec![ItemOutcome::Indexed; expected]);
    }
    if resp.items.len() != expected {
        return Err(format!(
            "bulk response lists {} items for {expected} sent",
            resp.items.len()
        ));
    }
    Ok(resp
        .items
        .into_iter()
        .map(|m| {
            let Some(r) = m.into_values().next() else {
                return ItemOutcome::Rejected {
                    status: 0,
                    kind: "malformed_response".into(),
                    reason: "empty bulk item".into(),
                };
            };
            match r.status {
                200..=299 => ItemOutcome::Indexed,
                409 => ItemOutcome::Duplicate,
                s if is_retryable_status(s) => ItemOutcome::Retry { status: s },
                s => {
                    let e = r.error.unwrap_or_default();
                    ItemOutcome::Rejected {
                        status: s,
                        kind: if e.kind.is_empty() {
                            "unknown".into()
                        } else {
                            e.kind
                        },
                        reason: e.reason.unwrap_or_default(),
                    }
                }
            }
        })
        .collect())
}

/// The `type` and `reason` of an Elasticsearch error body (`{"error":{"type":..,"reason":..}}`),
/// else the start of the text.
pub(crate) fn error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Wrapper {
        error: serde_json::Value,
    }
    if let Ok(w) = serde_json::from_slice::<Wrapper>(body) {
        if let Some(o) = w.error.as_object() {
            let t = o.get("type").and_then(|v| v.as_str()).unwrap_or_default();
            let r = o.get("reason").and_then(|v| v.as_str()).unwrap_or_default();
            return format!("{t}: {r}");
        }
        if let Some(s) = w.error.as_str() {
            return s.to_string();
        }
    }
    let mut end = body.len().min(300);
    while end > 0 && std::str::from_utf8(&body[..end]).is_err() {
        end -= 1;
    }
    String::from_utf8_lossy(&body[..end]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mixed_items() {
        let body = br#"{"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [x]"}}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}
        ]}"#;
        let r = parse(body, 4).unwrap();
        assert_eq!(r[0], ItemOutcome::Indexed);
        assert_eq!(r[1], ItemOutcome::Duplicate);
        assert_eq!(
            r[2],
            ItemOutcome::Rejected {
                status: 400,
                kind: "mapper_parsing_exception".into(),
                reason: "failed to parse field [x]".into()
            }
        );
        assert_eq!(r[3], ItemOutcome::Retry { status: 429 });
        assert!(parse(body, 3).is_err());
        assert!(parse(b"<html>", 1).is_err());
        assert_eq!(
            parse(br#"{"errors":false}"#, 2).unwrap(),
            vec![ItemOutcome::Indexed; 2]
        );
    }

    #[test]
    fn body_joins_pending_items_and_gzips() {
        use std::io::Read;
        let items = vec![b"a\n1\n".to_vec(), b"b\n2\n".to_vec(), b"c\n3\n".to_vec()];
        assert_eq!(body(&items, &[0, 2], false).unwrap(), b"a\n1\nc\n3\n");
        let gz = body(&items, &[1], true).unwrap();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "b\n2\n");
    }

    #[test]
    fn error_text_reads_elasticsearch_errors() {
        assert_eq!(
            error_text(br#"{"error":{"type":"security_exception","reason":"missing authentication"},"status":401}"#),
            "security_exception: missing authentication"
        );
        assert_eq!(error_text(b"plain words"), "plain words");
    }
}
