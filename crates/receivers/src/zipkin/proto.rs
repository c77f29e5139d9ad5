//! Zipkin v2 protobuf (`application/x-protobuf`): the `zipkin.proto3` messages written by
//! hand, field numbers as in openzipkin/zipkin-api `zipkin.proto`:
//!
//! ```text
//! ListOfSpans { repeated Span spans = 1; }
//! Span { bytes trace_id = 1; bytes parent_id = 2; bytes id = 3; Kind kind = 4;
//!        string name = 5; fixed64 timestamp = 6; uint64 duration = 7;
//!        Endpoint local_endpoint = 8; Endpoint remote_endpoint = 9;
//!        repeated Annotation annotations = 10; map<string, string> tags = 11;
//!        bool debug = 12; bool shared = 13; }
//! Kind { SPAN_KIND_UNSPECIFIED = 0; CLIENT = 1; SERVER = 2; PRODUCER = 3; CONSUMER = 4; }
//! Endpoint { string service_name = 1; bytes ipv4 = 2; bytes ipv6 = 3; int32 port = 4; }
//! Annotation { fixed64 timestamp = 1; string value = 2; }
//! ```
//!
//! Ids are big-endian bytes: a trace id of 8 or 16, a span id of 8.

use super::model::{Annotation as ZAnnotation, Endpoint as ZEndpoint, Kind, ZipkinSpan};
use super::model::{bytes_id, check_ids};
use prost::Message;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// `zipkin.proto3.ListOfSpans`: the body of `POST /api/v2/spans`.
#[derive(Clone, PartialEq, Message)]
pub struct ListOfSpans {
    /// The spans, in no particular order.
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
}

/// `zipkin.proto3.Span`.
#[derive(Clone, PartialEq, Message)]
pub struct Span {
    /// 8 or 16 bytes, big-endian.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// Empty for a root span, else 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub parent_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    /// `Kind` enum value; 0 means absent (a local span).
    #[prost(int32, tag = "4")]
    pub kind: i32,
    /// The operation.
    #[prost(string, tag = "5")]
    pub name: String,
    /// Epoch microseconds of the start; 0 when absent.
    #[prost(fixed64, tag = "6")]
    pub timestamp: u64,
    /// Microseconds; 0 when absent.
    #[prost(uint64, tag = "7")]
    pub duration: u64,
    /// The host that recorded the span.
    #[prost(message, optional, tag = "8")]
    pub local_endpoint: Option<Endpoint>,
    /// The other side of an RPC or messaging span.
    #[prost(message, optional, tag = "9")]
    pub remote_endpoint: Option<Endpoint>,
    /// Timestamped events.
    #[prost(message, repeated, tag = "10")]
    pub annotations: Vec<Annotation>,
    /// String tags (a `BTreeMap` so their order is deterministic).
    #[prost(btree_map = "string, string", tag = "11")]
    pub tags: BTreeMap<String, String>,
    /// Force-sampled (`X-B3-Flags: 1`); decoded but not mapped (see the `zipkin` module).
    #[prost(bool, tag = "12")]
    pub debug: bool,
    /// The server side of a span whose id the client started (Envoy's
    /// `shared_span_context`).
    #[prost(bool, tag = "13")]
    pub shared: bool,
}

/// `zipkin.proto3.Endpoint`.
#[derive(Clone, PartialEq, Message)]
pub struct Endpoint {
    /// The service's name.
    #[prost(string, tag = "1")]
    pub service_name: String,
    /// 4 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub ipv4: Vec<u8>,
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub ipv6: Vec<u8>,
    /// 0 when absent.
    #[prost(int32, tag = "4")]
    pub port: i32,
}

/// `zipkin.proto3.Annotation`.
#[derive(Clone, PartialEq, Message)]
pub struct Annotation {
    /// Epoch microseconds.
    #[prost(fixed64, tag = "1")]
    pub timestamp: u64,
    /// Usually a short code such as `ws` (wire send).
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Decodes a `ListOfSpans`: the whole request fails only when the protobuf is malformed;
/// each span is `Ok(span)` or `Err(why that span is invalid)`.
pub(crate) fn decode(body: &[u8]) -> Result<Vec<Result<ZipkinSpan, String>>, String> {
    let list = ListOfSpans::decode(body)
        .map_err(|e| format!("malformed Zipkin v2 protobuf ListOfSpans: {e}"))?;
    Ok(list.spans.into_iter().map(Span::into_span).collect())
}

impl Endpoint {
    fn into_endpoint(self) -> ZEndpoint {
        // Wrong-sized addresses and out-of-range ports are left out, as Zipkin does.
        ZEndpoint {
            service_name: self.service_name,
            ipv4: <[u8; 4]>::try_from(self.ipv4.as_slice())
                .ok()
                .map(Ipv4Addr::from),
            ipv6: <[u8; 16]>::try_from(self.ipv6.as_slice())
                .ok()
                .map(Ipv6Addr::from),
            port: u16::try_from(self.port).unwrap_or(0),
        }
    }
}

impl Span {
    fn into_span(self) -> Result<ZipkinSpan, String> {
        let trace_id = bytes_id::<16>("trace_id", &self.trace_id, Some(8))?;
        let id = bytes_id::<8>("id", &self.id, None)?;
        let parent_id = if self.parent_id.is_empty() {
            None
        } else {
            Some(bytes_id::<8>("parent_id", &self.parent_id, None)?)
        };
        let parent_id = check_ids(trace_id, id, parent_id, "trace_id", "id")?;
        let kind = match self.kind {
            0 => None,
            1 => Some(Kind::Client),
            2 => Some(Kind::Server),
            3 => Some(Kind::Producer),
            4 => Some(Kind::Consumer),
            k => {
                return Err(format!(
                    "`kind` {k} is not CLIENT (1), SERVER (2), PRODUCER (3) or CONSUMER (4)"
                ));
            }
        };
        Ok(ZipkinSpan {
            trace_id,
            id,
            parent_id,
            kind,
            name: self.name,
            timestamp: self.timestamp,
            duration: self.duration,
            local_endpoint: self.local_endpoint.map(Endpoint::into_endpoint),
            remote_endpoint: self.remote_endpoint.map(Endpoint::into_endpoint),
            annotations: self
                .annotations
                .into_iter()
                .map(|a| ZAnnotation {
                    timestamp: a.timestamp,
                    value: a.value,
                })
                .collect(),
            tags: self.tags.into_iter().collect(),
            shared: self.shared,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protobuf key: field number and wire type.
    fn key(field: u8, wire: u8) -> u8 {
        (field << 3) | wire
    }

    /// A length-delimited field (length as a varint).
    fn ld(field: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![key(field, 2)];
        let mut n = payload.len();
        while n >= 0x80 {
            v.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        v.push(n as u8);
        v.extend_from_slice(payload);
        v
    }

    /// A Span written byte by byte from zipkin.proto, independently of the prost structs.
    fn hand_built_span() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(ld(1, &[0xaa; 8])); // trace_id: 8 bytes
        s.extend(ld(2, &[0x01; 8])); // parent_id
        s.extend(ld(3, &[0x02; 8])); // id
        s.extend([key(4, 0), 2]); // kind = SERVER
        s.extend(ld(5, b"ingress")); // name
        s.push(key(6, 1)); // timestamp, fixed64 little-endian
        s.extend(1_700_000_000_000_000u64.to_le_bytes());
        s.extend([key(7, 0), 0xe8, 0x07]); // duration = 1000 (varint)
        let mut local = ld(1, b"reviews.default");
        local.extend(ld(2, &[10, 0, 0, 7]));
        local.extend([key(4, 0), 0x80, 0x47]); // port 9088
        s.extend(ld(8, &local));
        let mut remote = ld(1, b"productpage");
        remote.extend(ld(
            3,
            &[
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0, 0x01,
            ],
        ));
        s.extend(ld(9, &remote));
        let mut ann = vec![key(1, 1)];
        ann.extend(1_700_000_000_000_500u64.to_le_bytes());
        ann.extend(ld(2, b"wr"));
        s.extend(ld(10, &ann));
        let mut tag = ld(1, b"http.status_code");
        tag.extend(ld(2, b"503"));
        s.extend(ld(11, &tag));
        let mut tag = ld(1, b"error");
        tag.extend(ld(2, b"true"));
        s.extend(ld(11, &tag));
        s.extend([key(12, 0), 1]); // debug
        s.extend([key(13, 0), 1]); // shared
        ld(1, &s)
    }

    #[test]
    fn hand_built_bytes_decode_field_by_field() {
        let mut spans = decode(&hand_built_span()).unwrap();
        assert_eq!(spans.len(), 1);
        let s = spans.remove(0).unwrap();
        assert_eq!(s.trace_id[..8], [0; 8]);
        assert_eq!(s.trace_id[8..], [0xaa; 8]);
        assert_eq!(s.parent_id, Some([1; 8]));
        assert_eq!(s.id, [2; 8]);
        assert_eq!(s.kind, Some(Kind::Server));
        assert_eq!(s.name, "ingress");
        assert_eq!(s.timestamp, 1_700_000_000_000_000);
        assert_eq!(s.duration, 1000);
        let le = s.local_endpoint.unwrap();
        assert_eq!(le.service_name, "reviews.default");
        assert_eq!(le.ipv4, Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(le.port, 9088);
        let re = s.remote_endpoint.unwrap();
        assert_eq!(re.address().as_deref(), Some("2001:db8::c001"));
        assert_eq!(
            s.annotations,
            vec![ZAnnotation {
                timestamp: 1_700_000_000_000_500,
                value: "wr".into()
            }]
        );
        assert_eq!(
            s.tags,
            vec![
                ("error".to_string(), "true".to_string()),
                ("http.status_code".to_string(), "503".to_string())
            ]
        );
        assert!(s.shared);
    }

    #[test]
    fn prost_encoding_round_trips_through_the_hand_built_bytes() {
        let list = ListOfSpans::decode(hand_built_span().as_slice()).unwrap();
        let again = ListOfSpans::decode(list.encode_to_vec().as_slice()).unwrap();
        assert_eq!(list, again);
        assert_eq!(list.spans[0].local_endpoint.as_ref().unwrap().port, 9088);
    }

    #[test]
    fn invalid_spans_and_malformed_bodies() {
        let span = |trace: Vec<u8>, id: Vec<u8>, kind: i32| Span {
            trace_id: trace,
            id,
            kind,
            ..Default::default()
        };
        let body = ListOfSpans {
            spans: vec![
                span(vec![1; 16], vec![2; 8], 1),
                span(vec![1; 5], vec![2; 8], 0),
                span(vec![1; 16], vec![], 0),
                span(vec![1; 16], vec![2; 8], 9),
                span(vec![0; 16], vec![2; 8], 0),
            ],
        }
        .encode_to_vec();
        let errs: Vec<String> = decode(&body)
            .unwrap()
            .into_iter()
            .map(|r| r.err().unwrap_or_default())
            .collect();
        assert_eq!(
            errs,
            [
                "",
                "`trace_id` is 5 bytes, expected 8 or 16",
                "`id` is missing",
                "`kind` 9 is not CLIENT (1), SERVER (2), PRODUCER (3) or CONSUMER (4)",
                "`trace_id` is all zeros",
            ]
        );
        let e = decode(b"\x0a\xff\xff\xff garbage").unwrap_err();
        assert!(
            e.starts_with("malformed Zipkin v2 protobuf ListOfSpans: "),
            "{e}"
        );
        assert!(decode(b"").unwrap().is_empty());
    }

    #[test]
    fn bad_addresses_are_ignored() {
        let e = Endpoint {
            service_name: "x".into(),
            ipv4: vec![1, 2, 3],
            ipv6: vec![0; 15],
            port: -1,
        }
        .into_endpoint();
        assert_eq!((e.ipv4, e.ipv6, e.port), (None, None, 0));
    }
}
