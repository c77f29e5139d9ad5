//! OpenTelemetry consistent probability sampling: thresholds and randomness in the W3C trace
//! state. The `probabilistic_sampler` processor writes them; the connectors read them back to
//! weight a span by its adjusted count, so derived rates stay right under upstream sampling.

pub mod threshold;
pub mod tracestate;

/// How many spans of the unsampled population a span stands for: `2^56 / (2^56 - th)` from the
/// `ot=th:` member of its W3C trace state, or 1 when it carries none (or one that does not
/// parse: such a span is counted as itself rather than guessed at).
pub fn adjusted_count(trace_state: &str) -> f64 {
    if !trace_state.contains("th:") {
        return 1.0;
    }
    match tracestate::TraceState::parse(trace_state) {
        Ok(ts) => ts.th.map_or(1.0, |t| t.adjusted_count()),
        Err(_) => 1.0,
    }
}

/// [`adjusted_count`] as a whole number of items, for counters and histogram buckets: the
/// fractional part is rounded up or down by a uniform draw derived from `span_id` (stable, so
/// every instance weighs a span alike), which keeps every sum unbiased: 1/0.3 = 3.33 becomes 3
/// for two spans in three and 4 for the third.
pub fn weight(trace_state: &str, span_id: &[u8]) -> u64 {
    let a = adjusted_count(trace_state);
    if a == 1.0 {
        return 1;
    }
    let whole = a.floor();
    let frac = a - whole;
    let mut x = span_id.iter().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01B3)
    });
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
    whole as u64 + u64::from(u < frac)
}

#[cfg(test)]
mod tests {
    use super::{adjusted_count, weight};

    #[test]
    fn whole_weights_are_unbiased() {
        assert_eq!(weight("", &[1; 8]), 1);
        assert_eq!(weight("ot=th:c", &[1; 8]), 4);
        // 1/0.3: on average 3.33 over many spans.
        let th = super::threshold::Threshold::from_probability(0.3, 4).unwrap();
        let ts = format!("ot=th:{}", th.encode().as_str());
        let want = adjusted_count(&ts);
        let n = 100_000u64;
        let total: u64 = (0..n).map(|i| weight(&ts, &i.to_be_bytes())).sum();
        let mean = total as f64 / n as f64;
        assert!((mean - want).abs() / want < 0.01, "{mean} vs {want}");
        assert!((3..=4).contains(&weight(&ts, &[7; 8])));
    }

    #[test]
    fn adjusted_counts_follow_the_threshold() {
        assert_eq!(adjusted_count(""), 1.0);
        assert_eq!(adjusted_count("vendor=x"), 1.0);
        assert_eq!(adjusted_count("ot=th:0"), 1.0);
        assert_eq!(adjusted_count("ot=th:8"), 2.0);
        assert_eq!(adjusted_count("ot=th:c"), 4.0);
        assert_eq!(adjusted_count("vendor=x,ot=rv:abcdefabcdefab;th:c"), 4.0);
        let ten = adjusted_count("ot=th:e666");
        assert!((ten - 10.0).abs() < 0.01, "{ten}");
        assert_eq!(
            adjusted_count("ot=th:zz"),
            1.0,
            "malformed counts as itself"
        );
    }
}
