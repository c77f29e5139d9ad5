//! Reading and rewriting the W3C `tracestate` of a span: its OpenTelemetry member `ot`
//! (`ot=th:c;rv:9b8233f7e3a151;...`) carries the sampling threshold and explicit
//! randomness; every other member belongs to some other vendor and is passed on verbatim.
//!
//! Parsing borrows the span's string and allocates nothing, so spans that end up dropped
//! cost no allocation; only a kept span whose sampling information changes gets a new
//! string.

use super::threshold::{Randomness, Threshold};
use std::fmt;

/// Longest `ot` value the OpenTelemetry spec allows.
const MAX_OT_LEN: usize = 256;
/// Most list members W3C Trace Context allows in a `tracestate`.
const MAX_MEMBERS: usize = 32;

/// Why a `tracestate` could not be used for sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceStateError(pub &'static str);

impl fmt::Display for TraceStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A parsed `tracestate`, borrowing the original text.
#[derive(Debug, Clone, Default)]
pub struct TraceState<'a> {
    raw: &'a str,
    /// The value of the `ot` member, when there is one.
    ot: Option<&'a str>,
    /// The `th` sub-key of `ot`: the threshold applied by earlier sampling stages.
    pub th: Option<Threshold>,
    /// The `rv` sub-key of `ot`: explicit randomness replacing the trace id's.
    pub rv: Option<Randomness>,
}

/// The non-empty list members of a `tracestate`, without their optional white space.
fn members(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
}

/// The key of a list member (`key=value`), or of an `ot` sub-member (`key:value`).
fn key_of(member: &str, sep: char) -> &str {
    member.split_once(sep).map_or(member, |(k, _)| k)
}

impl<'a> TraceState<'a> {
    /// Parses `raw`. Members of other vendors only need the `key=value` shape; the `ot`
    /// member must follow the OpenTelemetry grammar (`key:value` sub-members separated by
    /// `;`, keys `[a-z][a-z0-9]*`, values `[A-Za-z0-9._-]*`, at most 256 characters, `th`
    /// of 1-14 and `rv` of exactly 14 hex digits, each at most once).
    pub fn parse(raw: &'a str) -> Result<TraceState<'a>, TraceStateError> {
        let mut ts = TraceState {
            raw,
            ..Default::default()
        };
        if raw.is_empty() {
            return Ok(ts);
        }
        for m in members(raw) {
            let (key, value) = m
                .split_once('=')
                .ok_or(TraceStateError("a tracestate member has no `=`"))?;
            if key.is_empty() {
                return Err(TraceStateError("a tracestate member has an empty key"));
            }
            if key == "ot" {
                if ts.ot.is_some() {
                    return Err(TraceStateError("the tracestate has two `ot` members"));
                }
                ts.ot = Some(value);
            }
        }
        if let Some(ot) = ts.ot {
            ts.parse_ot(ot)?;
        }
        Ok(ts)
    }

    fn parse_ot(&mut self, ot: &str) -> Result<(), TraceStateError> {
        if ot.len() > MAX_OT_LEN {
            return Err(TraceStateError(
                "the `ot` tracestate value is longer than 256 characters",
            ));
        }
        if ot.is_empty() {
            return Ok(());
        }
        for sub in ot.split(';') {
            let (key, value) = sub.split_once(':').ok_or(TraceStateError(
                "an `ot` tracestate entry is not `key:value`",
            ))?;
            let key_ok = key.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            let value_ok = value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !key_ok || !value_ok {
                return Err(TraceStateError(
                    "an `ot` tracestate entry has an invalid key or value",
                ));
            }
            match key {
                "th" if self.th.is_some() => {
                    return Err(TraceStateError("the `ot` tracestate value has two `th`"));
                }
                "th" => self.th = Some(Threshold::parse(value).map_err(TraceStateError)?),
                "rv" if self.rv.is_some() => {
                    return Err(TraceStateError("the `ot` tracestate value has two `rv`"));
                }
                "rv" => self.rv = Some(Randomness::parse(value).map_err(TraceStateError)?),
                _ => {}
            }
        }
        Ok(())
    }

    /// The `tracestate` with `th` and `rv` of the `ot` member set to these values (`None`
    /// removes them). The `ot` member moves to the front, as W3C requires of a modified
    /// member, with `th` and `rv` first and its other sub-keys after them in their order;
    /// the other members follow in their order, verbatim. When `ot` is new and the list is
    /// already full (32 members), the rightmost member is dropped, as W3C prescribes.
    /// Fails when the new `ot` value would exceed 256 characters.
    pub fn with_sampling(
        &self,
        th: Option<Threshold>,
        rv: Option<Randomness>,
    ) -> Result<String, TraceStateError> {
        let mut out = String::with_capacity(self.raw.len() + 40);
        out.push_str("ot=");
        let start = out.len();
        let sep = |out: &mut String| {
            if out.len() > start {
                out.push(';');
            }
        };
        if let Some(th) = th {
            out.push_str("th:");
            out.push_str(th.encode().as_str());
        }
        if let Some(rv) = rv {
            sep(&mut out);
            out.push_str("rv:");
            out.push_str(rv.encode().as_str());
        }
        if let Some(ot) = self.ot.filter(|ot| !ot.is_empty()) {
            for sub in ot.split(';') {
                if !matches!(key_of(sub, ':'), "th" | "rv") {
                    sep(&mut out);
                    out.push_str(sub);
                }
            }
        }
        let ot_len = out.len() - start;
        if ot_len > MAX_OT_LEN {
            return Err(TraceStateError(
                "the `ot` tracestate value would exceed 256 characters",
            ));
        }
        let has_ot = ot_len > 0;
        if !has_ot {
            out.clear();
        }
        let mut room = MAX_MEMBERS - usize::from(has_ot);
        for m in members(self.raw) {
            if key_of(m, '=') == "ot" {
                continue;
            }
            if room == 0 {
                break;
            }
            room -= 1;
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(m);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(s: &str) -> Option<Threshold> {
        Some(Threshold::parse(s).unwrap())
    }

    fn rv(s: &str) -> Option<Randomness> {
        Some(Randomness::parse(s).unwrap())
    }

    #[test]
    fn parses_th_rv_and_other_members() {
        let ts =
            TraceState::parse("congo=t61rcWkgMzE, ot=th:c;rv:9b8233f7e3a151;p:8 ,rojo=1").unwrap();
        assert_eq!(ts.th, th("c"));
        assert_eq!(ts.rv, rv("9b8233f7e3a151"));
        let ts = TraceState::parse("").unwrap();
        assert_eq!((ts.th, ts.rv), (None, None));
        // Empty members and white space are allowed by W3C.
        let ts = TraceState::parse(" , vendor=x,\t,").unwrap();
        assert_eq!(ts.th, None);
        assert_eq!(ts.with_sampling(None, None).unwrap(), "vendor=x");
        // `ot` without sampling keys, and an empty `ot`.
        assert_eq!(TraceState::parse("ot=p:8").unwrap().th, None);
        assert_eq!(TraceState::parse("ot=").unwrap().th, None);
        // Other vendors' members are not interpreted.
        assert!(TraceState::parse("a=th:zz;;;").is_ok());
    }

    #[test]
    fn malformed_tracestates() {
        let long = format!("ot=th:c;x:{}", "a".repeat(250));
        for (raw, why) in [
            ("novalue", "has no `=`"),
            ("=x", "empty key"),
            ("ot=th:c,ot=th:8", "two `ot`"),
            ("ot=th", "not `key:value`"),
            ("ot=th:c;;rv:9b8233f7e3a151", "not `key:value`"),
            ("ot=th:c;Th:8", "invalid key"),
            ("ot=th:c;x:a b", "invalid key or value"),
            ("ot=th:xyz", "`th` must have"),
            ("ot=th:fffffffffffffff", "`th` must have"),
            ("ot=th:", "`th` must have"),
            ("ot=rv:123", "`rv` must have"),
            ("ot=th:c;th:8", "two `th`"),
            ("ot=rv:9b8233f7e3a151;rv:9b8233f7e3a151", "two `rv`"),
            (long.as_str(), "longer than 256"),
        ] {
            let e = TraceState::parse(raw).unwrap_err();
            assert!(e.0.contains(why), "{raw:?}: {e}");
        }
    }

    #[test]
    fn rewrite_sets_th_and_keeps_everything_else() {
        let ts = TraceState::parse("congo=t61rcWkgMzE,ot=p:8;th:8;k1:13, rojo=00f067aa0ba902b7")
            .unwrap();
        assert_eq!(
            ts.with_sampling(th("c"), None).unwrap(),
            "ot=th:c;p:8;k1:13,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        // A new `ot` member goes to the front of other vendors' members.
        let ts = TraceState::parse("congo=t61rcWkgMzE").unwrap();
        assert_eq!(
            ts.with_sampling(th("e666"), rv("0000000000001f")).unwrap(),
            "ot=th:e666;rv:0000000000001f,congo=t61rcWkgMzE"
        );
        // From nothing.
        let ts = TraceState::parse("").unwrap();
        assert_eq!(ts.with_sampling(th("0"), None).unwrap(), "ot=th:0");
        // The explicit randomness is kept when passed back.
        let ts = TraceState::parse("ot=th:0;rv:9b8233f7e3a151").unwrap();
        assert_eq!(
            ts.with_sampling(th("8"), ts.rv).unwrap(),
            "ot=th:8;rv:9b8233f7e3a151"
        );
    }

    #[test]
    fn rewrite_removing_th() {
        let ts = TraceState::parse("ot=th:c;p:8,x=y").unwrap();
        assert_eq!(ts.with_sampling(None, None).unwrap(), "ot=p:8,x=y");
        // An `ot` member left empty disappears.
        let ts = TraceState::parse("x=y,ot=th:c").unwrap();
        assert_eq!(ts.with_sampling(None, None).unwrap(), "x=y");
        let ts = TraceState::parse("ot=th:c").unwrap();
        assert_eq!(ts.with_sampling(None, None).unwrap(), "");
    }

    #[test]
    fn rewrite_respects_the_limits() {
        // 32 members and no `ot`: adding `ot` drops the rightmost member.
        let mut raw: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let full = raw.join(",");
        let ts = TraceState::parse(&full).unwrap();
        let out = ts.with_sampling(th("c"), None).unwrap();
        assert!(out.starts_with("ot=th:c,k0=v,"), "{out}");
        assert!(out.ends_with(",k30=v"), "{out}");
        assert_eq!(out.split(',').count(), 32);
        // Replacing an existing `ot` in a full list drops nothing.
        raw[5] = "ot=th:8".into();
        let full = raw.join(",");
        let ts = TraceState::parse(&full).unwrap();
        let out = ts.with_sampling(th("c"), None).unwrap();
        assert_eq!(out.split(',').count(), 32);
        assert!(out.ends_with(",k31=v"), "{out}");
        // An `ot` value that would outgrow 256 characters is refused.
        let long = format!("ot=x:{}", "a".repeat(250));
        let ts = TraceState::parse(&long).unwrap();
        let e = ts
            .with_sampling(th("e666"), rv("9b8233f7e3a151"))
            .unwrap_err();
        assert!(e.0.contains("exceed 256"), "{e}");
    }
}
