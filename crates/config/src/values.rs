//! Value types shared by every component config: durations and byte sizes written the way
//! humans write them (`5s`, `4MiB`), with serde and JSON Schema support.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// JSON Schema `format` of [`DurationValue`]; a custom name because the standard `duration`
/// format means ISO 8601 (`PT5S`), which would make editors reject `5s`.
pub const DURATION_FORMAT: &str = "humantime-duration";
/// JSON Schema `format` of [`ByteSize`].
pub const BYTE_SIZE_FORMAT: &str = "byte-size";

/// Loose pattern for editors; the exact check is done by `humantime` in the validator.
const DURATION_PATTERN: &str = r"^\s*([0-9]+\s*[A-Za-zµ]+\s*)+$|^\s*0\s*$";
const BYTE_SIZE_PATTERN: &str = r"^\s*[0-9]+(\.[0-9]+)?\s*([kKmMgGtTpP][iI]?)?[bB]?\s*$";

/// A duration written with units, e.g. `5s`, `200ms`, `1m30s` (parsed by `humantime`).
///
/// Bare integers are rejected on purpose: `timeout: 5` is ambiguous (seconds? milliseconds?)
/// and a silent unit guess is a classic source of outages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DurationValue(pub Duration);

impl DurationValue {
    /// Wraps a duration.
    pub fn new(d: Duration) -> Self {
        DurationValue(d)
    }
}

impl From<Duration> for DurationValue {
    fn from(d: Duration) -> Self {
        DurationValue(d)
    }
}

impl From<DurationValue> for Duration {
    fn from(d: DurationValue) -> Self {
        d.0
    }
}

/// Explains why `s` is not a duration.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration `{s}`: {e}"))
}

/// The help text shown for bad durations.
pub(crate) const DURATION_HELP: &str = "write a number with a unit, e.g. `5s`, `200ms`, `1m30s`";

impl FromStr for DurationValue {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(DurationValue)
    }
}

impl fmt::Display for DurationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for DurationValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit such as `5s` or `200ms`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl JsonSchema for DurationValue {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": DURATION_FORMAT,
            "pattern": DURATION_PATTERN,
            "description": "A duration with units, e.g. `5s`, `200ms`, `1m30s`.",
        })
    }
}

/// A size in bytes: an integer (bytes) or a string with a unit, e.g. `512KiB`, `4MiB`, `10MB`.
///
/// Binary units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024, decimal units (`KB`, `MB`...)
/// powers of 1000, as in the SI/IEC standards, so `10MB` means what the disk vendor means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// The help text shown for bad byte sizes.
pub(crate) const BYTE_SIZE_HELP: &str =
    "write a number of bytes or a number with a unit, e.g. `512KiB`, `4MiB`, `10MB`";

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        let invalid = || format!("invalid byte size `{s}`");
        if num.is_empty() {
            return Err(invalid());
        }
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "m" | "mb" => 1_000_000,
            "g" | "gb" => 1_000_000_000,
            "t" | "tb" => 1_000_000_000_000,
            "p" | "pb" => 1_000_000_000_000_000,
            "ki" | "kib" => 1 << 10,
            "mi" | "mib" => 1 << 20,
            "gi" | "gib" => 1 << 30,
            "ti" | "tib" => 1 << 40,
            "pi" | "pib" => 1 << 50,
            _ => return Err(format!("invalid byte size `{s}`: unknown unit `{unit}`")),
        };
        if let Ok(n) = num.parse::<u64>() {
            return n
                .checked_mul(mult)
                .map(ByteSize)
                .ok_or_else(|| format!("byte size `{s}` is too large"));
        }
        let f: f64 = num.parse().map_err(|_| invalid())?;
        let bytes = (f * mult as f64).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("byte size `{s}` is too large"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that divides exactly (binary first), e.g. `4MiB`, `10MB`, `100B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 8] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
            (1_000_000_000_000, "TB"),
            (1_000_000_000, "GB"),
            (1_000_000, "MB"),
            (1_000, "KB"),
        ];
        if self.0 > 0 {
            for (size, name) in UNITS {
                if self.0.is_multiple_of(size) {
                    return write!(f, "{}{name}", self.0 / size);
                }
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    /// Serialized as a plain integer so any consumer can read it without our unit parser.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size: an integer or a string such as `4MiB`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("byte size must not be negative, found {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // One schema with two types: `minimum` only applies to integers and `pattern` only to
        // strings, which keeps error messages simpler than a oneOf.
        json_schema!({
            "type": ["integer", "string"],
            "minimum": 0,
            "format": BYTE_SIZE_FORMAT,
            "pattern": BYTE_SIZE_PATTERN,
            "description": "A size in bytes: an integer, or a string with a unit such as `512KiB`, `4MiB`, `10MB`.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_only() {
        let d: DurationValue = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(90));
        let d: DurationValue = serde_json::from_str("\"200ms\"").unwrap();
        assert_eq!(d.0, Duration::from_millis(200));
        assert!(serde_json::from_str::<DurationValue>("5").is_err());
        assert!(serde_json::from_str::<DurationValue>("\"5x\"").is_err());
        assert_eq!(DurationValue(Duration::from_secs(90)).to_string(), "1m 30s");
        assert_eq!(
            serde_json::to_string(&DurationValue(Duration::from_secs(5))).unwrap(),
            "\"5s\""
        );
    }

    #[test]
    fn byte_sizes_parse() {
        let cases = [
            ("\"512KiB\"", 512 * 1024),
            ("\"4MiB\"", 4 << 20),
            ("\"1GiB\"", 1 << 30),
            ("\"10MB\"", 10_000_000),
            ("\"100B\"", 100),
            ("\"1.5KiB\"", 1536),
            ("\"2048\"", 2048),
            ("4096", 4096),
        ];
        for (json, want) in cases {
            let b: ByteSize = serde_json::from_str(json).unwrap();
            assert_eq!(b.0, want, "{json}");
        }
        assert!(serde_json::from_str::<ByteSize>("-1").is_err());
        assert!(serde_json::from_str::<ByteSize>("\"4 parsecs\"").is_err());
        assert!(serde_json::from_str::<ByteSize>("\"MiB\"").is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
        assert_eq!(ByteSize(10_000_000).to_string(), "10MB");
        assert_eq!(ByteSize(100).to_string(), "100B");
        assert_eq!(ByteSize(0).to_string(), "0B");
    }

    #[test]
    fn schemas_match_parsers() {
        let d = schemars::schema_for!(DurationValue);
        assert_eq!(d.get("type").unwrap(), "string");
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for ok in ["5s", "200ms", "1m30s", "1m 30s", "0"] {
            assert!(re.is_match(ok), "{ok}");
        }
        let b = schemars::schema_for!(ByteSize);
        assert_eq!(
            b.get("type").unwrap(),
            &serde_json::json!(["integer", "string"])
        );
        let re = regex::Regex::new(BYTE_SIZE_PATTERN).unwrap();
        for ok in ["512KiB", "4MiB", "10MB", "100B", "1.5 GiB", "7"] {
            assert!(re.is_match(ok), "{ok}");
        }
        assert!(!re.is_match("4 parsecs"));
    }
}
