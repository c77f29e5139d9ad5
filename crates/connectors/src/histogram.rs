//! Explicit-bucket histograms as both connectors accumulate them: counts per bucket, sum, min
//! and max, merged cheaply and turned into OTLP data points.

/// Upper bounds in seconds used when a connector's config names none: the collector's
/// spanmetrics defaults, from 2 ms to 15 s.
pub const DEFAULT_BOUNDS_SECONDS: &[f64] = &[
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];

/// One histogram's running state over fixed upper bounds (`bounds.len() + 1` buckets, the
/// last one open-ended, as in OTLP: bucket `i` counts values `<= bounds[i]` and `> bounds[i-1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExplicitHistogram {
    /// Count per bucket.
    pub bucket_counts: Vec<u64>,
    /// Number of recorded values.
    pub count: u64,
    /// Sum of recorded values.
    pub sum: f64,
    /// Smallest recorded value (`+inf` when empty).
    pub min: f64,
    /// Largest recorded value (`-inf` when empty).
    pub max: f64,
}

impl ExplicitHistogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &[f64]) -> Self {
        ExplicitHistogram {
            bucket_counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Records `value` `weight` times (weights come from sampling-adjusted counts).
    pub fn record(&mut self, bounds: &[f64], value: f64, weight: u64) {
        let i = bounds.partition_point(|b| *b < value);
        self.bucket_counts[i] += weight;
        self.count += weight;
        self.sum += value * weight as f64;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds another histogram over the same bounds.
    pub fn merge(&mut self, other: &ExplicitHistogram) {
        for (a, b) in self.bucket_counts.iter_mut().zip(&other.bucket_counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Forgets every recorded value, keeping the allocation (delta temporality starts each
    /// interval from zero).
    pub fn clear(&mut self) {
        self.bucket_counts.iter_mut().for_each(|c| *c = 0);
        self.count = 0;
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
    }

    /// The `q` quantile (0..=1) estimated by linear interpolation inside the bucket holding
    /// it, the way Prometheus' `histogram_quantile` does; `None` when empty.
    pub fn quantile(&self, bounds: &[f64], q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut seen = 0u64;
        for (i, c) in self.bucket_counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            if (seen + c) as f64 >= rank {
                let lower = if i == 0 {
                    0.0f64.min(self.min)
                } else {
                    bounds[i - 1]
                };
                let upper = bounds.get(i).copied().unwrap_or(self.max);
                let lower = lower.max(self.min.min(upper));
                let upper = upper.min(self.max).max(lower);
                let into = (rank - seen as f64) / *c as f64;
                return Some(lower + (upper - lower) * into.clamp(0.0, 1.0));
            }
            seen += c;
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_bucket_whose_upper_bound_holds_them() {
        let b = [1.0, 2.0];
        let mut h = ExplicitHistogram::new(&b);
        for v in [0.5, 1.0, 1.5, 2.0, 3.0] {
            h.record(&b, v, 1);
        }
        assert_eq!(h.bucket_counts, vec![2, 2, 1]);
        assert_eq!(h.count, 5);
        assert_eq!(h.sum, 8.0);
        assert_eq!((h.min, h.max), (0.5, 3.0));
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let b = [1.0, 2.0, 4.0];
        let mut h = ExplicitHistogram::new(&b);
        for _ in 0..100 {
            h.record(&b, 1.5, 1);
        }
        let p50 = h.quantile(&b, 0.5).unwrap();
        assert!((1.0..=2.0).contains(&p50), "{p50}");
        assert_eq!(ExplicitHistogram::new(&b).quantile(&b, 0.5), None);
        let mut m = ExplicitHistogram::new(&b);
        m.record(&b, 3.0, 2);
        m.merge(&h);
        assert_eq!(m.count, 102);
        assert_eq!(m.bucket_counts, vec![0, 100, 2, 0]);
        m.clear();
        assert_eq!(m, ExplicitHistogram::new(&b));
    }
}
