//! The Zipkin v2 span as both wire formats (JSON and `zipkin.proto3`) decode to it, with its
//! ids already checked, so the translation to OTLP is written once.

use std::net::{Ipv4Addr, Ipv6Addr};

/// `Span.kind`. Absent means a local (in-process) span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Client,
    Server,
    Producer,
    Consumer,
}

impl Kind {
    /// The kind named `s` (Zipkin writes `CLIENT`; any case is accepted).
    pub(crate) fn parse(s: &str) -> Option<Kind> {
        const KINDS: [(&str, Kind); 4] = [
            ("CLIENT", Kind::Client),
            ("SERVER", Kind::Server),
            ("PRODUCER", Kind::Producer),
            ("CONSUMER", Kind::Consumer),
        ];
        KINDS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, k)| *k)
    }
}

/// `Endpoint`: a node of the service graph. Addresses and ports that do not parse are left
/// out (Zipkin's own server ignores them too), never a reason to drop the span.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Endpoint {
    /// Empty when absent.
    pub service_name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// 0 when absent.
    pub port: u16,
}

impl Endpoint {
    /// The address to report: IPv6 when both are set (as the Collector does), else IPv4.
    pub(crate) fn address(&self) -> Option<String> {
        match (self.ipv6, self.ipv4) {
            (Some(v6), _) => Some(v6.to_string()),
            (None, Some(v4)) => Some(v4.to_string()),
            (None, None) => None,
        }
    }
}

/// `Annotation`: a timestamped event.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Annotation {
    /// Epoch microseconds; 0 when absent.
    pub timestamp: u64,
    pub value: String,
}

/// One valid Zipkin v2 span.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ZipkinSpan {
    /// Left-padded to 16 bytes when the client sent a 64-bit trace id.
    pub trace_id: [u8; 16],
    pub id: [u8; 8],
    /// `None` for a root span (also when the parent is all zeros or equals `id`).
    pub parent_id: Option<[u8; 8]>,
    pub kind: Option<Kind>,
    pub name: String,
    /// Epoch microseconds; 0 when absent.
    pub timestamp: u64,
    /// Microseconds; 0 when absent.
    pub duration: u64,
    pub local_endpoint: Option<Endpoint>,
    pub remote_endpoint: Option<Endpoint>,
    pub annotations: Vec<Annotation>,
    /// In the order received (JSON) or sorted by key (protobuf maps have no order).
    pub tags: Vec<(String, String)>,
    pub shared: bool,
}

/// Parses a hex id of at most `2 * N` digits (any case), left-padding shorter ones with
/// zeros as Zipkin does. `field` names it in the error (`traceId`, `id`, `parentId`).
pub(crate) fn hex_id<const N: usize>(field: &str, text: &str) -> Result<[u8; N], String> {
    let digits = text.as_bytes();
    if digits.is_empty() {
        return Err(format!("`{field}` is missing"));
    }
    if digits.len() > 2 * N {
        return Err(format!(
            "`{field}` `{}` has {} hex digits, at most {} allowed",
            shorten(text),
            digits.len(),
            2 * N
        ));
    }
    let mut out = [0u8; N];
    // Right-align the digits in 2N nibbles.
    let offset = 2 * N - digits.len();
    for (i, d) in digits.iter().enumerate() {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => {
                return Err(format!(
                    "`{field}` `{}` is not hex (0-9, a-f)",
                    shorten(text)
                ));
            }
        };
        let nibble = offset + i;
        out[nibble / 2] |= if nibble & 1 == 0 { v << 4 } else { v };
    }
    Ok(out)
}

/// A `bytes` id of the protobuf encoding: exactly `N` bytes, or `short` bytes left-padded
/// (a 64-bit trace id), or empty (missing).
pub(crate) fn bytes_id<const N: usize>(
    field: &str,
    bytes: &[u8],
    short: Option<usize>,
) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    match bytes.len() {
        0 => Err(format!("`{field}` is missing")),
        n if n == N || Some(n) == short => {
            out[N - n..].copy_from_slice(bytes);
            Ok(out)
        }
        n => Err(match short {
            Some(s) => format!("`{field}` is {n} bytes, expected {s} or {N}"),
            None => format!("`{field}` is {n} bytes, expected {N}"),
        }),
    }
}

/// Checks the ids of a decoded span: trace id and id present and not all zeros; a parent that
/// is all zeros or equal to the span's own id means "no parent" (Zipkin and the Collector
/// read it so).
pub(crate) fn check_ids(
    trace_id: [u8; 16],
    id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    trace_field: &str,
    id_field: &str,
) -> Result<Option<[u8; 8]>, String> {
    if trace_id == [0; 16] {
        return Err(format!("`{trace_field}` is all zeros"));
    }
    if id == [0; 8] {
        return Err(format!("`{id_field}` is all zeros"));
    }
    Ok(parent_id.filter(|p| *p != [0; 8] && *p != id))
}

/// `s`, cut to a length fit for an error message.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_are_left_padded() {
        assert_eq!(
            hex_id::<16>("traceId", "5af7183fb1d4cf5f").unwrap(),
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f
            ]
        );
        assert_eq!(
            hex_id::<16>("traceId", "463ac35c9f6413ad48485a3953bb6124").unwrap()[..4],
            [0x46, 0x3a, 0xc3, 0x5c]
        );
        assert_eq!(
            hex_id::<8>("id", "ABC").unwrap(),
            [0, 0, 0, 0, 0, 0, 0x0a, 0xbc]
        );
        assert_eq!(hex_id::<8>("id", "").unwrap_err(), "`id` is missing");
        assert_eq!(
            hex_id::<8>("id", "xyz").unwrap_err(),
            "`id` `xyz` is not hex (0-9, a-f)"
        );
        assert_eq!(
            hex_id::<8>("parentId", "00000000000000001").unwrap_err(),
            "`parentId` `00000000000000001` has 17 hex digits, at most 16 allowed"
        );
    }

    #[test]
    fn byte_ids() {
        assert_eq!(
            bytes_id::<16>("trace_id", &[1; 8], Some(8)).unwrap(),
            [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
        );
        assert_eq!(
            bytes_id::<16>("trace_id", &[2; 16], Some(8)).unwrap(),
            [2; 16]
        );
        assert_eq!(
            bytes_id::<16>("trace_id", &[2; 5], Some(8)).unwrap_err(),
            "`trace_id` is 5 bytes, expected 8 or 16"
        );
        assert_eq!(
            bytes_id::<8>("id", &[2; 16], None).unwrap_err(),
            "`id` is 16 bytes, expected 8"
        );
        assert_eq!(
            bytes_id::<8>("id", &[], None).unwrap_err(),
            "`id` is missing"
        );
    }

    #[test]
    fn parent_rules() {
        let t = [1; 16];
        assert_eq!(
            check_ids(t, [2; 8], Some([3; 8]), "t", "i"),
            Ok(Some([3; 8]))
        );
        assert_eq!(check_ids(t, [2; 8], Some([0; 8]), "t", "i"), Ok(None));
        assert_eq!(check_ids(t, [2; 8], Some([2; 8]), "t", "i"), Ok(None));
        assert_eq!(
            check_ids([0; 16], [2; 8], None, "traceId", "id").unwrap_err(),
            "`traceId` is all zeros"
        );
        assert_eq!(
            check_ids(t, [0; 8], None, "traceId", "id").unwrap_err(),
            "`id` is all zeros"
        );
    }

    #[test]
    fn kinds_and_addresses() {
        assert_eq!(Kind::parse("client"), Some(Kind::Client));
        assert_eq!(Kind::parse("CONSUMER"), Some(Kind::Consumer));
        assert_eq!(Kind::parse("INTERNAL"), None);
        let mut e = Endpoint {
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 7)),
            ..Default::default()
        };
        assert_eq!(e.address().as_deref(), Some("10.0.0.7"));
        e.ipv6 = Some("2001:db8::c001".parse().unwrap());
        assert_eq!(e.address().as_deref(), Some("2001:db8::c001"));
        assert_eq!(shorten(&"x".repeat(50)), format!("{}...", "x".repeat(40)));
    }
}
