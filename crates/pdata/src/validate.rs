//! Item-level validation for OTLP partial success.
//!
//! One span with a bad id must not cost the other spans of its request: receivers remove the
//! invalid items, pass the rest on and report the removed ones in the response's
//! `partial_success`. The rules follow the OTLP spec: a trace id is 16 bytes and a span id 8,
//! neither all zeros; a parent span id and the ids on a log record are empty or well formed.

use crate::Payload;

/// What validation removed from a request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Number of items removed.
    pub count: usize,
    /// The first problem found, phrased for the client (e.g. "span 3 of scope 0 of resource 1:
    /// trace_id is 8 bytes, expected 16").
    pub first_error: Option<String>,
}

impl Rejected {
    fn note(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// The partial-success message for the client: the first problem and how many items were
    /// rejected in all.
    pub fn message(&self) -> String {
        match &self.first_error {
            Some(e) if self.count > 1 => format!("{e} (and {} more rejected)", self.count - 1),
            Some(e) => e.clone(),
            None => String::new(),
        }
    }
}

fn id_problem(name: &str, id: &[u8], len: usize, optional: bool) -> Option<String> {
    if id.is_empty() && optional {
        return None;
    }
    if id.len() != len {
        return Some(format!("{name} is {} bytes, expected {len}", id.len()));
    }
    if id.iter().all(|b| *b == 0) {
        return Some(format!("{name} is all zeros"));
    }
    None
}

/// Removes invalid items from `payload` in place and reports what was removed. Empty scopes
/// and resources left behind are removed too.
pub fn remove_invalid(payload: &mut Payload) -> Rejected {
    let mut rej = Rejected::default();
    match payload {
        Payload::Traces(t) => {
            for (ri, r) in t.resource_spans.iter_mut().enumerate() {
                for (si, s) in r.scope_spans.iter_mut().enumerate() {
                    let mut i = 0;
                    s.spans.retain(|span| {
                        let problem = id_problem("trace_id", &span.trace_id, 16, false)
                            .or_else(|| id_problem("span_id", &span.span_id, 8, false))
                            .or_else(|| {
                                id_problem("parent_span_id", &span.parent_span_id, 8, true)
                            });
                        let keep = problem.is_none();
                        if let Some(p) = problem {
                            rej.note(|| format!("span {i} of scope {si} of resource {ri}: {p}"));
                        }
                        i += 1;
                        keep
                    });
                }
                r.scope_spans.retain(|s| !s.spans.is_empty());
            }
            t.resource_spans.retain(|r| !r.scope_spans.is_empty());
        }
        Payload::Logs(l) => {
            for (ri, r) in l.resource_logs.iter_mut().enumerate() {
                for (si, s) in r.scope_logs.iter_mut().enumerate() {
                    let mut i = 0;
                    s.log_records.retain(|rec| {
                        let problem = id_problem("trace_id", &rec.trace_id, 16, true)
                            .or_else(|| id_problem("span_id", &rec.span_id, 8, true));
                        let keep = problem.is_none();
                        if let Some(p) = problem {
                            rej.note(|| {
                                format!("log record {i} of scope {si} of resource {ri}: {p}")
                            });
                        }
                        i += 1;
                        keep
                    });
                }
                r.scope_logs.retain(|s| !s.log_records.is_empty());
            }
            l.resource_logs.retain(|r| !r.scope_logs.is_empty());
        }
        Payload::Metrics(m) => {
            for (ri, r) in m.resource_metrics.iter_mut().enumerate() {
                for (si, s) in r.scope_metrics.iter_mut().enumerate() {
                    let mut i = 0;
                    s.metrics.retain(|metric| {
                        let problem = if metric.name.is_empty() {
                            Some("metric name is empty".to_string())
                        } else if metric.data.is_none() {
                            Some(format!("metric `{}` has no data", metric.name))
                        } else {
                            None
                        };
                        let keep = problem.is_none();
                        if let Some(p) = problem {
                            // A metric counts as its points; a metric with no data as one.
                            let points = crate::payload::metric_points(metric).max(1);
                            rej.note(|| format!("metric {i} of scope {si} of resource {ri}: {p}"));
                            rej.count += points - 1;
                        }
                        i += 1;
                        keep
                    });
                }
                r.scope_metrics.retain(|s| !s.metrics.is_empty());
            }
            m.resource_metrics.retain(|r| !r.scope_metrics.is_empty());
        }
    }
    rej
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::*;

    fn span(trace: Vec<u8>, id: Vec<u8>) -> Span {
        Span {
            trace_id: trace,
            span_id: id,
            ..Default::default()
        }
    }

    #[test]
    fn bad_ids_are_removed_and_reported() {
        let mut p = Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span(vec![1; 16], vec![2; 8]),
                        span(vec![1; 8], vec![2; 8]),
                        span(vec![0; 16], vec![2; 8]),
                        span(vec![1; 16], vec![2; 8]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let r = remove_invalid(&mut p);
        assert_eq!(r.count, 2);
        assert_eq!(p.item_count(), 2);
        assert_eq!(
            r.message(),
            "span 1 of scope 0 of resource 0: trace_id is 8 bytes, expected 16 (and 1 more rejected)"
        );
    }

    #[test]
    fn all_invalid_leaves_empty_payload() {
        let mut p = Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(vec![], vec![])],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        assert_eq!(remove_invalid(&mut p).count, 1);
        let Payload::Traces(t) = &p else { panic!() };
        assert!(t.resource_spans.is_empty());
    }

    #[test]
    fn logs_without_ids_are_valid() {
        let mut p = Payload::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        LogRecord::default(),
                        LogRecord {
                            trace_id: vec![1; 3],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let r = remove_invalid(&mut p);
        assert_eq!(r.count, 1);
        assert_eq!(p.item_count(), 1);
    }
}
