//! The consistent-hash ring that maps a routing key (a trace id, a service name) to an endpoint.
//!
//! Every endpoint is placed on a 64-bit circle at [`VIRTUAL_NODES`] points; a key belongs to
//! the endpoint owning the first point at or after the key's hash (wrapping around). Removing
//! one of N endpoints therefore moves only the keys that endpoint owned (about 1/N of them), to
//! the endpoints owning the next points; adding one takes about 1/(N+1) of the keys from the
//! others and moves nothing else.
//!
//! The hash is FNV-1a (64-bit) followed by the MurmurHash3 `fmix64` finaliser (FNV alone mixes
//! its last bytes poorly, which would cluster the virtual nodes of similar endpoint names). It
//! is fixed here, not seeded per process, so every meshgate instance given the same endpoint
//! list builds the same ring and sends a trace to the same place, whatever order the list
//! came in. Changing it, or [`VIRTUAL_NODES`], re-routes many keys when instances of
//! two versions run side by side; `hash_is_stable` pins known values so that cannot happen by
//! accident.

/// Points per endpoint on the ring. The per-endpoint share of keys varies with a relative
/// standard deviation of about `1/sqrt(VIRTUAL_NODES)`: 7% at 200 points (one instance of ten
/// getting 15% more than its fair share), 3% at 1000. The price is a larger ring, N × 1000
/// entries of 16 bytes binary-searched per key (two more steps than at 200), rebuilt only
/// when the endpoints change.
pub const VIRTUAL_NODES: u32 = 1000;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A streaming FNV-1a hasher with an `fmix64` finish: the ring's one hash function.
#[derive(Clone, Copy)]
pub struct KeyHasher(u64);

impl Default for KeyHasher {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl KeyHasher {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        self.0 = h;
    }

    /// Feeds a number as its 8 little-endian bytes.
    pub fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }

    /// The finished 64-bit hash.
    pub fn finish(self) -> u64 {
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^= k >> 33;
        k
    }
}

/// The ring hash of one byte string (a trace id, a service name).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = KeyHasher::default();
    h.write(bytes);
    h.finish()
}

/// A consistent-hash ring over a set of endpoints.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    /// `(point, endpoint index)`, sorted by point then index.
    points: Vec<(u64, u32)>,
    /// The endpoints, sorted and without duplicates; owners are indices into this list.
    endpoints: Vec<String>,
}

impl Ring {
    /// The ring of `endpoints` (order and duplicates do not matter).
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Ring {
        let mut names: Vec<String> = endpoints.iter().map(|e| e.as_ref().to_string()).collect();
        names.sort();
        names.dedup();
        let mut points = Vec::with_capacity(names.len() * VIRTUAL_NODES as usize);
        for (i, name) in names.iter().enumerate() {
            for v in 0..VIRTUAL_NODES {
                let mut h = KeyHasher::default();
                h.write(name.as_bytes());
                h.write(b"#");
                h.write(&v.to_le_bytes());
                points.push((h.finish(), i as u32));
            }
        }
        points.sort_unstable();
        Ring {
            points,
            endpoints: names,
        }
    }

    /// The endpoints, sorted.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// True when there is no endpoint to route to.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Index (into [`Ring::endpoints`]) of the endpoint owning a key hash. The ring must not
    /// be empty.
    pub fn owner(&self, key_hash: u64) -> usize {
        debug_assert!(!self.points.is_empty(), "owner() on an empty ring");
        let i = self.points.partition_point(|p| p.0 < key_hash);
        let i = if i == self.points.len() { 0 } else { i };
        self.points[i].1 as usize
    }

    /// The endpoint owning a key hash.
    pub fn owner_name(&self, key_hash: u64) -> &str {
        &self.endpoints[self.owner(key_hash)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random 16-byte trace ids from a fixed seed (splitmix64).
    fn trace_ids(n: usize) -> Vec<[u8; 16]> {
        let mut s: u64 = 0x1234_5678;
        let mut next = move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..n)
            .map(|_| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&next().to_le_bytes());
                id[8..].copy_from_slice(&next().to_le_bytes());
                id
            })
            .collect()
    }

    fn endpoints(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:4317", i + 1)).collect()
    }

    #[test]
    fn hash_is_stable() {
        // FNV-1a's published test vector, before the finaliser.
        let mut h = KeyHasher::default();
        h.write(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
        // Pinned: every instance, and every version, must route the same way.
        assert_eq!(hash_bytes(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash_bytes(b"meshgate"), 0x6275_f91b_d7d8_884b);
        let ring = Ring::new(&["a:4317", "b:4317", "c:4317"]);
        let owners: Vec<&str> = (0u8..12)
            .map(|i| ring.owner_name(hash_bytes(&[i; 16])))
            .collect();
        assert_eq!(
            owners,
            [
                "c:4317", "a:4317", "a:4317", "a:4317", "c:4317", "b:4317", "c:4317", "c:4317",
                "c:4317", "b:4317", "a:4317", "a:4317"
            ]
        );
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        let a = Ring::new(&["x:1", "y:1", "z:1"]);
        let b = Ring::new(&["z:1", "x:1", "y:1", "x:1"]);
        assert_eq!(a.endpoints(), b.endpoints());
        for id in trace_ids(2000) {
            let h = hash_bytes(&id);
            assert_eq!(a.owner_name(h), b.owner_name(h));
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let ids = trace_ids(200_000);
        for n in [3, 5, 10, 20] {
            let ring = Ring::new(&endpoints(n));
            let mut counts = vec![0usize; n];
            for id in &ids {
                counts[ring.owner(hash_bytes(id))] += 1;
            }
            let fair = ids.len() as f64 / n as f64;
            for (i, c) in counts.iter().enumerate() {
                let dev = (*c as f64 - fair).abs() / fair;
                assert!(
                    dev < 0.10,
                    "{n} endpoints: endpoint {i} got {c} keys, {:.1}% off the fair {fair}",
                    dev * 100.0
                );
            }
        }
    }

    #[test]
    fn removing_one_of_n_moves_only_its_keys() {
        let ids = trace_ids(100_000);
        for n in [3, 4, 8] {
            let all = endpoints(n);
            let before = Ring::new(&all);
            let gone = &all[1];
            let rest: Vec<String> = all.iter().filter(|e| *e != gone).cloned().collect();
            let after = Ring::new(&rest);
            let mut moved = 0usize;
            for id in &ids {
                let h = hash_bytes(id);
                let (a, b) = (before.owner_name(h), after.owner_name(h));
                if a != b {
                    // Only the removed endpoint's keys move.
                    assert_eq!(a, gone.as_str());
                    moved += 1;
                } else {
                    assert_ne!(a, gone.as_str());
                }
            }
            let share = moved as f64 / ids.len() as f64;
            let ideal = 1.0 / n as f64;
            assert!(
                (share - ideal).abs() < ideal * 0.2,
                "{n} endpoints: removing one moved {:.1}% of keys, ideal {:.1}%",
                share * 100.0,
                ideal * 100.0
            );
        }
    }

    #[test]
    fn adding_one_moves_keys_only_to_it() {
        let ids = trace_ids(100_000);
        let three = endpoints(3);
        let four = endpoints(4);
        let before = Ring::new(&three);
        let after = Ring::new(&four);
        let mut moved = 0usize;
        for id in &ids {
            let h = hash_bytes(id);
            let (a, b) = (before.owner_name(h), after.owner_name(h));
            if a != b {
                assert_eq!(b, four[3].as_str());
                moved += 1;
            }
        }
        let share = moved as f64 / ids.len() as f64;
        assert!((share - 0.25).abs() < 0.05, "moved {share}");
    }
}
