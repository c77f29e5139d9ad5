//! "Did you mean" suggestions for misspelled keys, types and signals.

/// The candidate closest to `input`, when it is close enough to be a plausible typo.
///
/// Close enough means an optimal-string-alignment distance of at most 2 (1 for short inputs,
/// so `a` never suggests `b`) or a Jaro-Winkler similarity of at least 0.85 for longer words.
pub(crate) fn did_you_mean<'a, I, S>(input: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a S>,
    S: AsRef<str> + ?Sized + 'a,
{
    let max_edits = match input.chars().count() {
        0..=2 => 0,
        3..=4 => 1,
        _ => 2,
    };
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let candidate = candidate.as_ref();
        if candidate == input {
            continue;
        }
        let edits = strsim::osa_distance(input, candidate);
        let similarity = strsim::jaro_winkler(input, candidate);
        let lower_match = input.eq_ignore_ascii_case(candidate);
        let plausible = lower_match
            || (max_edits > 0 && edits <= max_edits)
            || (input.len() >= 5 && similarity >= 0.85);
        if !plausible {
            continue;
        }
        // Prefer case-insensitive matches, then fewer edits, then higher similarity.
        let score = if lower_match { 10.0 } else { 0.0 } + similarity - edits as f64;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// The help line for an unknown name: a suggestion when one is close, otherwise the valid names.
pub(crate) fn help_for_unknown<S: AsRef<str>>(input: &str, candidates: &[S], what: &str) -> String {
    match did_you_mean(input, candidates) {
        Some(s) => format!("did you mean `{s}`?"),
        None if candidates.is_empty() => format!("no {what} is available here"),
        None => format!("valid {what}: {}", quoted_list(candidates)),
    }
}

/// `a`, `b`, `c` — for messages that list alternatives.
pub(crate) fn quoted_list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let keys = ["endpoint", "timeout", "headers"];
        assert_eq!(did_you_mean("endpiont", &keys).as_deref(), Some("endpoint"));
        assert_eq!(did_you_mean("timout", &keys).as_deref(), Some("timeout"));
        assert_eq!(did_you_mean("zzz", &keys), None);
        assert_eq!(
            did_you_mean("otlpp", &["otlp", "zipkin"]).as_deref(),
            Some("otlp")
        );
        assert_eq!(did_you_mean("a", &["b"]), None);
        assert_eq!(
            did_you_mean("Traces", &["traces"]).as_deref(),
            Some("traces")
        );
    }

    #[test]
    fn help_lists_names_when_nothing_is_close() {
        assert_eq!(
            help_for_unknown("qqq", &["otlp", "zipkin"], "receiver types"),
            "valid receiver types: `otlp`, `zipkin`"
        );
    }
}
