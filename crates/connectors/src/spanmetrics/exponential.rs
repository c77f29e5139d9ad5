//! Base-2 exponential histograms (OpenTelemetry's `ExponentialHistogram`): bucket `i` at
//! scale `s` holds values in `(2^(i/2^s), 2^((i+1)/2^s)]`. The scale starts at its finest and
//! drops, merging neighbouring buckets pairwise, whenever the values seen would need more than
//! `max_size` buckets, so one config fits latencies from microseconds to minutes.

use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;

/// The finest scale used (the OpenTelemetry SDKs' maximum).
pub const MAX_SCALE: i32 = 20;
/// The coarsest scale: bucket widths of 2^1024, enough for every finite double in 2 buckets.
pub const MIN_SCALE: i32 = -10;

/// One exponential histogram's running state (positive values and zeros only: durations).
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialHistogram {
    max_size: usize,
    scale: i32,
    /// Index of `counts[0]`.
    offset: i32,
    /// Counts of the positive buckets from `offset`; empty when no positive value was seen.
    counts: Vec<u64>,
    /// Values equal to zero (and negative ones, which a duration cannot really be).
    pub zero_count: u64,
    /// Number of recorded values.
    pub count: u64,
    /// Sum of recorded values.
    pub sum: f64,
    /// Smallest recorded value (`+inf` when empty).
    pub min: f64,
    /// Largest recorded value (`-inf` when empty).
    pub max: f64,
}

impl ExponentialHistogram {
    /// An empty histogram using at most `max_size` buckets (at least 2).
    pub fn new(max_size: usize) -> Self {
        ExponentialHistogram {
            max_size: max_size.max(2),
            scale: MAX_SCALE,
            offset: 0,
            counts: Vec::new(),
            zero_count: 0,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// The current scale.
    pub fn scale(&self) -> i32 {
        self.scale
    }

    /// Index of the first positive bucket.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Counts of the positive buckets, from [`ExponentialHistogram::offset`].
    pub fn bucket_counts(&self) -> &[u64] {
        &self.counts
    }

    /// The positive buckets as OTLP writes them.
    pub fn positive_buckets(&self) -> Buckets {
        Buckets {
            offset: self.offset,
            bucket_counts: self.counts.clone(),
        }
    }

    /// Records `value` `weight` times. Non-finite values are ignored; values `<= 0` count as
    /// zeros.
    pub fn record(&mut self, value: f64, weight: u64) {
        if !value.is_finite() || weight == 0 {
            return;
        }
        let value = value.max(0.0);
        self.count += weight;
        self.sum += value * weight as f64;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if value == 0.0 {
            self.zero_count += weight;
            return;
        }
        let mut index = bucket_index(value, self.scale);
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(weight);
            return;
        }
        let last = self.offset + self.counts.len() as i32 - 1;
        let (lo, hi) = (index.min(self.offset), index.max(last));
        let mut change = 0;
        while (i64::from(hi >> change) - i64::from(lo >> change) + 1) as usize > self.max_size
            && self.scale - change > MIN_SCALE
        {
            change += 1;
        }
        if change > 0 {
            self.downscale(change);
            index >>= change;
        }
        if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        }
        let at = (index - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += weight;
    }

    /// Halves the resolution `change` times, merging buckets in place.
    fn downscale(&mut self, change: i32) {
        let new_offset = self.offset >> change;
        let mut len = 0;
        for i in 0..self.counts.len() {
            let j = (((self.offset + i as i32) >> change) - new_offset) as usize;
            if j != i {
                self.counts[j] += self.counts[i];
                self.counts[i] = 0;
            }
            len = j + 1;
        }
        self.counts.truncate(len);
        self.offset = new_offset;
        self.scale -= change;
    }

    /// Empties the histogram and returns to the finest scale (delta temporality starts every
    /// interval afresh). Keeps the bucket allocation.
    pub fn clear(&mut self) {
        self.scale = MAX_SCALE;
        self.offset = 0;
        self.counts.clear();
        self.zero_count = 0;
        self.count = 0;
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
    }
}

/// The bucket holding a positive finite `value` at `scale`: `ceil(log2(value) * 2^scale) - 1`,
/// exact for powers of two (which are the upper bound of their bucket).
pub fn bucket_index(value: f64, scale: i32) -> i32 {
    let value = value.max(f64::MIN_POSITIVE);
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let mantissa = bits & ((1u64 << 52) - 1);
    if scale <= 0 {
        let e = if mantissa == 0 {
            exponent - 1
        } else {
            exponent
        };
        return e >> -scale;
    }
    if mantissa == 0 {
        return (exponent << scale) - 1;
    }
    // value = 2^exponent * m with m in (1, 2): the index lies in [exponent << scale,
    // ((exponent + 1) << scale) - 1]; log2(m) keeps full precision whatever the exponent.
    let m = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1023u64 << 52));
    let within = (m.log2() * f64::from(1u32 << scale)).floor() as i32;
    (exponent << scale) + within.clamp(0, (1 << scale) - 1)
}

/// The lower (exclusive) bound of bucket `index` at `scale`.
pub fn lower_bound(index: i32, scale: i32) -> f64 {
    (f64::from(index) * (-f64::from(scale)).exp2()).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two_are_the_upper_bound_of_their_bucket() {
        assert_eq!(bucket_index(1.0, 0), -1);
        assert_eq!(bucket_index(2.0, 0), 0);
        assert_eq!(bucket_index(3.0, 0), 1);
        assert_eq!(bucket_index(4.0, 0), 1);
        assert_eq!(bucket_index(4.0, -1), 0);
        assert_eq!(bucket_index(5.0, -1), 1);
        assert_eq!(bucket_index(2.0, 1), 1);
        assert_eq!(bucket_index(1.5, 1), 1);
        assert_eq!(bucket_index(1.2, 1), 0);
        assert_eq!(bucket_index(0.5, 3), -9);
        assert_eq!(bucket_index(1.0, MAX_SCALE), -1);
    }

    #[test]
    fn every_value_lies_inside_its_bucket() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Durations from 1ns to ~1h, in seconds.
            let v = 1e-9 * (x % 3_600_000_000_000 + 1) as f64;
            for scale in [-3, 0, 1, 4, 8, 12, 20] {
                let i = bucket_index(v, scale);
                let (lo, hi) = (lower_bound(i, scale), lower_bound(i + 1, scale));
                let tol = hi * 1e-12;
                assert!(
                    v > lo - tol && v <= hi + tol,
                    "{v} scale {scale}: ({lo}, {hi}]"
                );
            }
        }
    }

    #[test]
    fn scale_drops_to_fit_max_size_and_keeps_every_count() {
        let mut h = ExponentialHistogram::new(4);
        h.record(1e-3, 1);
        assert_eq!(h.scale(), MAX_SCALE);
        h.record(1.0, 2);
        h.record(1e3, 3);
        h.record(0.0, 1);
        assert!(h.bucket_counts().len() <= 4, "{:?}", h.bucket_counts());
        assert_eq!(h.bucket_counts().iter().sum::<u64>(), 6);
        assert_eq!((h.count, h.zero_count), (7, 1));
        assert_eq!(h.sum, 1e-3 + 2.0 + 3e3);
        assert_eq!((h.min, h.max), (0.0, 1e3));
        for (v, w) in [(1e-3, 1), (1.0, 2), (1e3, 3)] {
            let i = bucket_index(v, h.scale());
            assert_eq!(h.bucket_counts()[(i - h.offset()) as usize], w, "{v}");
        }
        // Scale is the finest that fits: one step finer would need more than 4 buckets.
        let s = h.scale() + 1;
        assert!(bucket_index(1e3, s) - bucket_index(1e-3, s) + 1 > 4);
    }

    #[test]
    fn values_below_the_offset_grow_the_buckets_downwards() {
        let mut h = ExponentialHistogram::new(160);
        for v in [0.100, 0.050, 0.200, 0.010, 0.101] {
            h.record(v, 1);
        }
        assert!(h.bucket_counts().len() <= 160);
        assert_eq!(h.bucket_counts().iter().sum::<u64>(), 5);
        assert_eq!(h.offset(), bucket_index(0.010, h.scale()));
        assert_eq!(*h.bucket_counts().last().unwrap(), 1);
        let b = h.positive_buckets();
        assert_eq!(b.offset, h.offset());
        h.clear();
        assert_eq!(
            (h.count, h.scale(), h.bucket_counts().len()),
            (0, MAX_SCALE, 0)
        );
        h.record(f64::NAN, 1);
        assert_eq!(h.count, 0);
    }
}
