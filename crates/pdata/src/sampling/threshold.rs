//! The arithmetic of OpenTelemetry consistent probability sampling ("TraceState: Probability
//! Sampling"): 56-bit rejection thresholds (`th`), 56-bit randomness values (`rv`, or the
//! low 56 bits of a trace id), their hexadecimal encodings, and the seeded hash that turns
//! any byte string into randomness.
//!
//! An item is kept when its randomness `R` is at least the threshold `T`; the probability of
//! that is `(2^56 - T) / 2^56`, and each kept item stands for `2^56 / (2^56 - T)` items of
//! the population (its adjusted count). Everything here is integer arithmetic on `u64`, so
//! two instances (or a meshgate and an OpenTelemetry Collector) compute bit-identical
//! thresholds and decisions.

use std::fmt;

/// Number of distinct 56-bit values: `2^56`. A threshold of this value rejects everything.
pub const MAX_ADJUSTED_COUNT: u64 = 1 << 56;

/// The smallest sampling probability a threshold can express: `2^-56`.
pub const MIN_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED_COUNT as f64;

/// Hex digits in a full 56-bit value.
const DIGITS: usize = 14;

/// Number of hash buckets of `hash_seed` mode: 14 bits, as in the OpenTelemetry Collector.
pub const HASH_BUCKETS: u32 = 1 << 14;

/// A 56-bit rejection threshold: items whose randomness is below it are dropped.
///
/// `0` keeps everything (`th:0`); [`Threshold::NEVER`] (`2^56`) drops everything and has no
/// `th` encoding (zero probability is not a probability in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

impl Threshold {
    /// Keeps every item (100%).
    pub const ALWAYS: Threshold = Threshold(0);
    /// Keeps no item (0%).
    pub const NEVER: Threshold = Threshold(MAX_ADJUSTED_COUNT);

    /// A threshold from its 56-bit value; `None` above `2^56`.
    pub fn from_unsigned(v: u64) -> Option<Threshold> {
        (v <= MAX_ADJUSTED_COUNT).then_some(Threshold(v))
    }

    /// The 56-bit value (`2^56` for [`Threshold::NEVER`]).
    pub fn unsigned(self) -> u64 {
        self.0
    }

    /// The threshold that keeps a fraction `probability` of items, rounded to `precision`
    /// significant hexadecimal digits (1-14). As in the OpenTelemetry Collector, the
    /// precision is raised by one digit for every leading `f` (tiny probabilities) or
    /// leading `0` (probabilities near 1) of the threshold, so the relative error stays
    /// small at both ends. `None` when `probability` is outside `[2^-56, 1]`.
    pub fn from_probability(probability: f64, precision: u8) -> Option<Threshold> {
        if !(MIN_PROBABILITY..=1.0).contains(&probability) {
            return None;
        }
        if probability == 1.0 {
            return Some(Threshold::ALWAYS);
        }
        let base = i32::from(precision.clamp(1, DIGITS as u8));
        // Every factor of 16 below 1 in the probability (or in its complement) is one
        // leading `f` (or `0`) hex digit that carries no information of its own.
        let leading = |x: f64| -binary_exponent(x) / 4;
        let digits =
            (base + leading(probability).max(leading(1.0 - probability))).min(DIGITS as i32) as u32;
        // `probability >= 2^-56`, so `scaled >= 1` and the threshold is below `2^56`.
        let scaled = (probability * MAX_ADJUSTED_COUNT as f64).round() as u64;
        let exact = MAX_ADJUSTED_COUNT - scaled;
        let shift = 4 * (DIGITS as u32 - digits);
        if shift == 0 {
            return Some(Threshold(exact));
        }
        let rounded = ((exact + (1 << (shift - 1))) >> shift) << shift;
        // Rounding up must never reach "reject everything"; truncate instead.
        let th = if rounded >= MAX_ADJUSTED_COUNT {
            (exact >> shift) << shift
        } else {
            rounded
        };
        Some(Threshold(th))
    }

    /// The fraction of items this threshold keeps, in `[0, 1]`.
    pub fn probability(self) -> f64 {
        (MAX_ADJUSTED_COUNT - self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }

    /// How many items of the population one kept item represents: `2^56 / (2^56 - T)`
    /// (infinite for [`Threshold::NEVER`]).
    pub fn adjusted_count(self) -> f64 {
        MAX_ADJUSTED_COUNT as f64 / (MAX_ADJUSTED_COUNT - self.0) as f64
    }

    /// Whether an item with randomness `r` is kept: `r >= T`.
    pub fn keeps(self, r: Randomness) -> bool {
        r.0 >= self.0
    }

    /// Parses a `th` value: 1 to 14 hex digits, implicitly padded with trailing zeros.
    pub fn parse(s: &str) -> Result<Threshold, &'static str> {
        if s.is_empty() || s.len() > DIGITS {
            return Err("`th` must have 1 to 14 hexadecimal digits");
        }
        let v = parse_hex(s).ok_or("`th` must have 1 to 14 hexadecimal digits")?;
        Ok(Threshold(v << (4 * (DIGITS - s.len()))))
    }

    /// The `th` encoding: hex digits with trailing zeros removed (`0` for 100%).
    /// [`Threshold::NEVER`] has no encoding; callers never record it.
    pub fn encode(self) -> Hex {
        debug_assert!(
            self.0 < MAX_ADJUSTED_COUNT,
            "a NEVER threshold has no encoding"
        );
        let mut hex = Hex::full(self.0 & (MAX_ADJUSTED_COUNT - 1));
        while hex.len > 1 && hex.buf[hex.len - 1] == b'0' {
            hex.len -= 1;
        }
        hex
    }
}

/// A 56-bit randomness value `R`, compared against thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Randomness(u64);

impl Randomness {
    /// Randomness from a 56-bit value; `None` at or above `2^56`.
    pub fn from_unsigned(v: u64) -> Option<Randomness> {
        (v < MAX_ADJUSTED_COUNT).then_some(Randomness(v))
    }

    /// The 56-bit value.
    pub fn unsigned(self) -> u64 {
        self.0
    }

    /// The low 56 bits (last 7 bytes, big-endian) of a valid trace id, as W3C Trace Context
    /// Level 2 specifies. `None` when the id is not 16 bytes or is all zeros (invalid).
    pub fn from_trace_id(id: &[u8]) -> Option<Randomness> {
        let id: &[u8; 16] = id.try_into().ok()?;
        if id.iter().all(|b| *b == 0) {
            return None;
        }
        let mut low = [0u8; 8];
        low[1..].copy_from_slice(&id[9..]);
        Some(Randomness(u64::from_be_bytes(low)))
    }

    /// Parses an `rv` value: exactly 14 hex digits.
    pub fn parse(s: &str) -> Result<Randomness, &'static str> {
        if s.len() != DIGITS {
            return Err("`rv` must have exactly 14 hexadecimal digits");
        }
        parse_hex(s)
            .map(Randomness)
            .ok_or("`rv` must have exactly 14 hexadecimal digits")
    }

    /// The `rv` encoding: always 14 hex digits.
    pub fn encode(self) -> Hex {
        Hex::full(self.0)
    }

    /// Randomness from hashing `bytes` with `seed`, laid out so that the spec's comparison
    /// `R >= T` against [`hash_seed_threshold`] is exactly the OpenTelemetry Collector's
    /// `hash_seed` rule `bucket < scaled percentage`, where `bucket` is the low 14 bits of
    /// 32-bit FNV-1a over the seed (4 bytes, little-endian) followed by `bytes`. Instances
    /// sharing the seed (meshgate or collector) therefore keep the same items, and the
    /// recorded `rv` lets later consistent samplers agree with the decision.
    ///
    /// Layout, most to least significant: 14 bits `16383 - bucket` (decides), 28 bits mixed
    /// from the 18 hash bits the bucket does not use, 14 bits `bucket`.
    pub fn from_hash(bytes: &[u8], seed: u32) -> Randomness {
        let h = fnv1a32(&seed.to_le_bytes(), bytes);
        let bucket = u64::from(h & (HASH_BUCKETS - 1));
        let rest = u64::from(h >> 14);
        let mixed = rest ^ (rest << 10);
        Randomness(((u64::from(HASH_BUCKETS) - 1 - bucket) << 42) | (mixed << 14) | bucket)
    }
}

/// The threshold of `hash_seed` mode for `percentage`, computed exactly as the OpenTelemetry
/// Collector does (in 32-bit floating point, truncated to one of 16384 buckets) so that
/// both keep the same items. `None` when the percentage truncates to zero buckets.
pub fn hash_seed_threshold(percentage: f32) -> Option<Threshold> {
    const SCALE: f32 = HASH_BUCKETS as f32 / 100.0;
    let scaled = ((percentage.min(100.0) * SCALE) as u32).min(HASH_BUCKETS);
    if scaled == 0 {
        return None;
    }
    Some(Threshold(u64::from(HASH_BUCKETS - scaled) << 42))
}

/// 32-bit FNV-1a over the concatenation of `a` and `b`: the hash of `hash_seed` mode,
/// kept identical to the collector's so both decide alike.
pub fn fnv1a32(a: &[u8], b: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    a.iter().chain(b).fold(OFFSET_BASIS, |h, &byte| {
        (h ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

/// A hex encoding held on the stack (no allocation per item).
#[derive(Clone, Copy)]
pub struct Hex {
    buf: [u8; DIGITS],
    len: usize,
}

impl Hex {
    /// All 14 digits of a 56-bit value, lower case.
    fn full(v: u64) -> Hex {
        const DIGIT: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; DIGITS];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = DIGIT[((v >> (4 * (DIGITS - 1 - i))) & 0xf) as usize];
        }
        Hex { buf, len: DIGITS }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("0")
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Parses up to 14 hex digits (either case), nothing else (no sign, no prefix).
fn parse_hex(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > DIGITS || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// The exponent `e` of `x = m * 2^e` with `m` in `[0.5, 1)`, for a positive normal `x`
/// (C's `frexp`). Sampling probabilities and their complements are at least `2^-56`.
fn binary_exponent(x: f64) -> i32 {
    ((x.to_bits() >> 52) & 0x7ff) as i32 - 1022
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(p: f64, precision: u8) -> String {
        Threshold::from_probability(p, precision)
            .unwrap()
            .encode()
            .to_string()
    }

    #[test]
    fn spec_table_thresholds() {
        // The 1-in-N table of the OpenTelemetry spec, at precision 3, 4 and 5.
        let cases: [(f64, [&str; 3]); 12] = [
            (1.0, ["0", "0", "0"]),
            (0.5, ["8", "8", "8"]),
            (1.0 / 3.0, ["aab", "aaab", "aaaab"]),
            (0.25, ["c", "c", "c"]),
            (0.2, ["ccd", "cccd", "ccccd"]),
            (0.125, ["e", "e", "e"]),
            (0.1, ["e66", "e666", "e6666"]),
            (0.0625, ["f", "f", "f"]),
            (0.01, ["fd71", "fd70a", "fd70a4"]),
            (0.001, ["ffbe7", "ffbe77", "ffbe76d"]),
            (0.0001, ["fff972", "fff9724", "fff97247"]),
            (0.00001, ["ffff584", "ffff583a", "ffff583a5"]),
        ];
        for (p, want) in cases {
            for (precision, want) in [3u8, 4, 5].into_iter().zip(want) {
                assert_eq!(th(p, precision), want, "p={p} precision={precision}");
            }
        }
    }

    #[test]
    fn precision_counts_significant_digits_after_leading_zeros() {
        // Threshold 0x000456789a...: the three leading zeros do not count as precision.
        let p = 1.0 - f64::from(0x456789a_u32) / 2f64.powi(40);
        assert_eq!(th(p, 14), "000456789a");
        assert_eq!(th(p, 4), "0004568");
        assert_eq!(th(p, 1), "0004");
        // Rounding down and up.
        let p = 1.0 - f64::from(0x12345678_u32) / 2f64.powi(32);
        assert_eq!(th(p, 14), "12345678");
        assert_eq!(th(p, 7), "1234568");
        assert_eq!(th(p, 3), "123");
    }

    #[test]
    fn full_precision_and_extremes() {
        assert_eq!(th(1.0 / 3.0, 14), "aaaaaaaaaaaaac");
        let min = Threshold::from_probability(MIN_PROBABILITY, 4).unwrap();
        assert_eq!(min.encode().as_str(), "ffffffffffffff");
        assert_eq!(min.unsigned(), MAX_ADJUSTED_COUNT - 1);
        assert_eq!(Threshold::from_probability(MIN_PROBABILITY / 2.0, 4), None);
        assert_eq!(Threshold::from_probability(0.0, 4), None);
        assert_eq!(Threshold::from_probability(1.5, 4), None);
        assert_eq!(Threshold::from_probability(f64::NAN, 4), None);
        // Precision is clamped into 1..=14.
        assert_eq!(th(0.1, 0), "e");
        assert_eq!(th(0.1, 99), th(0.1, 14));
    }

    #[test]
    fn parse_and_encode_th() {
        for (s, v) in [
            ("0", 0u64),
            ("c", 0xc0_0000_0000_0000),
            ("e666", 0xe6_6600_0000_0000),
            ("fd70a4", 0xfd_70a4_0000_0000),
            ("ffffffffffffff", 0xff_ffff_ffff_ffff),
            ("C", 0xc0_0000_0000_0000),
        ] {
            let t = Threshold::parse(s).unwrap();
            assert_eq!(t.unsigned(), v, "{s}");
            assert_eq!(t.encode().as_str(), s.to_ascii_lowercase());
        }
        // Trailing zeros are dropped on encoding.
        assert_eq!(Threshold::parse("c000").unwrap().encode().as_str(), "c");
        for bad in ["", "fffffffffffffff", "g", "+1", "-1", " c", "0x1"] {
            assert!(Threshold::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn probability_and_adjusted_count() {
        let c = Threshold::parse("c").unwrap();
        assert_eq!(c.probability(), 0.25);
        assert_eq!(c.adjusted_count(), 4.0);
        assert_eq!(Threshold::ALWAYS.adjusted_count(), 1.0);
        assert_eq!(Threshold::NEVER.probability(), 0.0);
        let tenth = Threshold::parse("e666").unwrap();
        assert!((tenth.adjusted_count() - 9.99938968568813).abs() < 1e-9);
        assert!((tenth.probability() - 0.100006103515625).abs() < 1e-15);
    }

    #[test]
    fn randomness_values() {
        let r = Randomness::parse("9b8233f7e3a151").unwrap();
        assert_eq!(r.unsigned(), 0x9b_8233_f7e3_a151);
        assert_eq!(r.encode().as_str(), "9b8233f7e3a151");
        // Leading zeros are kept: rv is always 14 digits.
        let small = Randomness::from_unsigned(0x1f).unwrap();
        assert_eq!(small.encode().as_str(), "0000000000001f");
        assert_eq!(Randomness::from_unsigned(MAX_ADJUSTED_COUNT), None);
        for bad in ["", "9b8233f7e3a15", "9b8233f7e3a1511", "9b8233f7e3a15g"] {
            assert!(Randomness::parse(bad).is_err(), "{bad:?}");
        }
        // The spec's example: rv 9b8233f7e3a151 passes 50% (th:8) but not 25% (th:c).
        assert!(Threshold::parse("8").unwrap().keeps(r));
        assert!(!Threshold::parse("c").unwrap().keeps(r));
        assert!(Threshold::ALWAYS.keeps(Randomness::from_unsigned(0).unwrap()));
        let top = Randomness::from_unsigned(MAX_ADJUSTED_COUNT - 1).unwrap();
        assert!(!Threshold::NEVER.keeps(top));
    }

    #[test]
    fn trace_id_randomness_is_the_low_56_bits() {
        let id: Vec<u8> = (1..=16).collect();
        assert_eq!(
            Randomness::from_trace_id(&id).unwrap().unsigned(),
            0x0a_0b0c_0d0e_0f10
        );
        assert_eq!(Randomness::from_trace_id(&[0; 16]), None);
        assert_eq!(Randomness::from_trace_id(&[1; 8]), None);
        assert_eq!(Randomness::from_trace_id(&[]), None);
        // Only the high bytes set: valid id, randomness zero.
        let mut id = [0u8; 16];
        id[0] = 1;
        assert_eq!(Randomness::from_trace_id(&id).unwrap().unsigned(), 0);
    }

    #[test]
    fn fnv1a_reference_vectors() {
        assert_eq!(fnv1a32(b"", b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a", b""), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foo", b"bar"), 0xbf9c_f968);
    }

    #[test]
    fn hash_randomness_matches_the_bucket_rule() {
        // For every percentage, R >= T exactly when the 14-bit bucket is below the scaled
        // percentage: the spec's comparison reproduces the collector's hash_seed rule.
        let mut x = 0x1234_5678_9abc_def0_u64;
        for pct in [0.01f32, 1.0, 10.0, 15.3, 33.3, 50.0, 99.99, 100.0] {
            let t = hash_seed_threshold(pct).unwrap();
            let scaled = (pct * (16384.0f32 / 100.0)) as u32;
            for _ in 0..2000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let id = x.to_le_bytes();
                let r = Randomness::from_hash(&id, 7);
                let bucket = fnv1a32(&7u32.to_le_bytes(), &id) & 0x3fff;
                assert_eq!(t.keeps(r), bucket < scaled, "pct={pct}");
                assert!(r.unsigned() < MAX_ADJUSTED_COUNT);
            }
        }
        assert_eq!(hash_seed_threshold(100.0), Some(Threshold::ALWAYS));
        assert_eq!(hash_seed_threshold(250.0), Some(Threshold::ALWAYS));
        assert_eq!(hash_seed_threshold(0.005), None);
        // 25% is 4096 of 16384 buckets: the same threshold as the consistent modes.
        assert_eq!(hash_seed_threshold(25.0).unwrap().encode().as_str(), "c");
    }

    #[test]
    fn hash_randomness_depends_on_the_seed() {
        let id = [7u8; 16];
        assert_eq!(Randomness::from_hash(&id, 1), Randomness::from_hash(&id, 1));
        assert_ne!(Randomness::from_hash(&id, 1), Randomness::from_hash(&id, 2));
    }
}
