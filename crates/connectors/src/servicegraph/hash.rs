//! A fast keyed hasher for the service graph's hot maps (the pairing store keyed by trace and
//! span id, interned names, edge series). std's SipHash costs more than the rest of a store
//! lookup; this folded multiply is a few nanoseconds. Its keys are random per map builder, and
//! the 128-bit fold spreads every input bit over the whole output, so span ids crafted to share
//! low bits do not pile into one bucket.

use std::hash::{BuildHasher, Hasher};

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`FoldHasher`]s with per-builder random keys.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FoldBuild {
    seed: u64,
    finish: u64,
}

impl Default for FoldBuild {
    fn default() -> Self {
        let r = std::collections::hash_map::RandomState::new();
        let seed = r.hash_one(0x5EED_u64);
        let finish = r.hash_one(0xF1_u64) | 1;
        FoldBuild { seed, finish }
    }
}

impl BuildHasher for FoldBuild {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher {
            state: self.seed,
            finish: self.finish,
        }
    }
}

/// The hasher: each 64-bit word is xored in and folded through a 128-bit multiply.
pub(crate) struct FoldHasher {
    state: u64,
    finish: u64,
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.write_u64(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.state = fold(self.state ^ x, MUL);
    }
    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64);
    }
    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.write_u64(x as u64);
    }
    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        fold(self.state, self.finish)
    }
}

/// A `HashMap` using [`FoldBuild`].
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, FoldBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_differing_only_in_high_bits_spread_over_low_bits() {
        let b = FoldBuild::default();
        let mut low = std::collections::HashSet::new();
        for i in 0..1024u64 {
            low.insert(b.hash_one(i << 40) & 0x3ff);
        }
        // A good hash fills most of 1024 buckets with 1024 keys (~63% expected).
        assert!(low.len() > 500, "{}", low.len());
        assert_ne!(b.hash_one("abc"), b.hash_one("abd"));
        assert_ne!(b.hash_one(""), b.hash_one("\0"));
    }
}
