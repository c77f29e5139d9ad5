use crate::otlp::{
    ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest, Metric,
    ResourceLogs, ResourceMetrics, ResourceSpans, ScopeLogs, ScopeMetrics, ScopeSpans, metric,
};
use prost::Message;

/// The three telemetry signals; a pipeline carries exactly one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    /// Every signal, in the order pipelines are listed.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// Lower-case name as used in config keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One unit of telemetry travelling through a pipeline: an OTLP export request of one signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Payload {
    /// The signal this payload belongs to.
    pub fn signal(&self) -> Signal {
        match self {
            Payload::Traces(_) => Signal::Traces,
            Payload::Metrics(_) => Signal::Metrics,
            Payload::Logs(_) => Signal::Logs,
        }
    }

    /// An empty payload of `signal`, the seed of a batch.
    pub fn empty(signal: Signal) -> Payload {
        match signal {
            Signal::Traces => Payload::Traces(Default::default()),
            Signal::Metrics => Payload::Metrics(Default::default()),
            Signal::Logs => Payload::Logs(Default::default()),
        }
    }

    /// Items as meshgate counts them: spans, metric data points, log records.
    pub fn item_count(&self) -> usize {
        match self {
            Payload::Traces(t) => span_count(&t.resource_spans),
            Payload::Metrics(m) => point_count(&m.resource_metrics),
            Payload::Logs(l) => log_count(&l.resource_logs),
        }
    }

    /// Size of the payload encoded as OTLP protobuf, in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Payload::Traces(t) => t.encoded_len(),
            Payload::Metrics(m) => m.encoded_len(),
            Payload::Logs(l) => l.encoded_len(),
        }
    }

    /// True when the payload holds no items.
    pub fn is_empty(&self) -> bool {
        self.item_count() == 0
    }

    /// Appends `other`'s resources to this payload. Both must be of the same signal; a
    /// mismatch is a programming error and returns `other` back untouched.
    pub fn merge(&mut self, other: Payload) -> Result<(), Payload> {
        match (self, other) {
            (Payload::Traces(a), Payload::Traces(b)) => a.resource_spans.extend(b.resource_spans),
            (Payload::Metrics(a), Payload::Metrics(b)) => {
                a.resource_metrics.extend(b.resource_metrics)
            }
            (Payload::Logs(a), Payload::Logs(b)) => a.resource_logs.extend(b.resource_logs),
            (_, other) => return Err(other),
        }
        Ok(())
    }

    /// Removes and returns the first `max_items` items as a payload of their own, keeping
    /// resource and scope of every moved item; `self` keeps the rest.
    pub fn split_off_front(&mut self, max_items: usize) -> Payload {
        match self {
            Payload::Traces(t) => Payload::Traces(ExportTraceServiceRequest {
                resource_spans: take_front(&mut t.resource_spans, max_items, &TRACES),
            }),
            Payload::Metrics(m) => Payload::Metrics(ExportMetricsServiceRequest {
                resource_metrics: take_front(&mut m.resource_metrics, max_items, &METRICS),
            }),
            Payload::Logs(l) => Payload::Logs(ExportLogsServiceRequest {
                resource_logs: take_front(&mut l.resource_logs, max_items, &LOGS),
            }),
        }
    }

    /// Splits the payload into pieces of at most `max_items` items each, in order.
    pub fn split(mut self, max_items: usize) -> Vec<Payload> {
        let max_items = max_items.max(1);
        let mut out = Vec::new();
        while self.item_count() > max_items {
            out.push(self.split_off_front(max_items));
        }
        out.push(self);
        out
    }
}

impl Payload {
    /// Splits the payload into pieces whose protobuf encoding is at most `max_bytes`, keeping
    /// order. `encoded_len` is the payload's current encoded size (the caller usually has it).
    /// A single item larger than `max_bytes` stays a piece of its own: the backend decides.
    pub fn split_by_bytes(self, encoded_len: usize, max_bytes: usize) -> Vec<Payload> {
        let items = self.item_count();
        if encoded_len <= max_bytes || items <= 1 {
            return vec![self];
        }
        // Aim 10% under the limit, then check each piece: sizes vary from item to item.
        let pieces = (encoded_len * 11 / 10).div_ceil(max_bytes.max(1)).max(2);
        let per_piece = items.div_ceil(pieces);
        let mut out = Vec::with_capacity(pieces);
        for piece in self.split(per_piece) {
            let len = piece.encoded_len();
            if len > max_bytes && piece.item_count() > 1 {
                out.extend(piece.split_by_bytes(len, max_bytes));
            } else {
                out.push(piece);
            }
        }
        out
    }
}

fn span_count(rs: &[ResourceSpans]) -> usize {
    rs.iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

fn log_count(rl: &[ResourceLogs]) -> usize {
    rl.iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

fn point_count(rm: &[ResourceMetrics]) -> usize {
    rm.iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(metric_points)
        .sum()
}

/// Number of data points in one metric, of any type: what the metrics signal counts as items.
pub fn metric_points(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// How to walk and cut one signal's resource → scope → item tree. The split algorithm is the
/// same for every signal; only these accessors differ.
struct Shape<R, S, I> {
    scopes: fn(&mut R) -> &mut Vec<S>,
    shell_r: fn(&R) -> R,
    items: fn(&mut S) -> &mut Vec<I>,
    shell_s: fn(&S) -> S,
    weight: fn(&I) -> usize,
    /// Splits one item holding `weight > n` items, returning the first `n`.
    cut: fn(&mut I, usize) -> I,
}

const TRACES: Shape<ResourceSpans, ScopeSpans, crate::otlp::Span> = Shape {
    scopes: |r| &mut r.scope_spans,
    shell_r: |r| ResourceSpans {
        resource: r.resource.clone(),
        scope_spans: Vec::new(),
        schema_url: r.schema_url.clone(),
    },
    items: |s| &mut s.spans,
    shell_s: |s| ScopeSpans {
        scope: s.scope.clone(),
        spans: Vec::new(),
        schema_url: s.schema_url.clone(),
    },
    weight: |_| 1,
    cut: |_, _| unreachable!("a span is one item"),
};

const LOGS: Shape<ResourceLogs, ScopeLogs, crate::otlp::LogRecord> = Shape {
    scopes: |r| &mut r.scope_logs,
    shell_r: |r| ResourceLogs {
        resource: r.resource.clone(),
        scope_logs: Vec::new(),
        schema_url: r.schema_url.clone(),
    },
    items: |s| &mut s.log_records,
    shell_s: |s| ScopeLogs {
        scope: s.scope.clone(),
        log_records: Vec::new(),
        schema_url: s.schema_url.clone(),
    },
    weight: |_| 1,
    cut: |_, _| unreachable!("a log record is one item"),
};

const METRICS: Shape<ResourceMetrics, ScopeMetrics, Metric> = Shape {
    scopes: |r| &mut r.scope_metrics,
    shell_r: |r| ResourceMetrics {
        resource: r.resource.clone(),
        scope_metrics: Vec::new(),
        schema_url: r.schema_url.clone(),
    },
    items: |s| &mut s.metrics,
    shell_s: |s| ScopeMetrics {
        scope: s.scope.clone(),
        metrics: Vec::new(),
        schema_url: s.schema_url.clone(),
    },
    weight: metric_points,
    cut: cut_metric,
};

fn cut_metric(m: &mut Metric, n: usize) -> Metric {
    fn front<T>(v: &mut Vec<T>, n: usize) -> Vec<T> {
        let rest = v.split_off(n.min(v.len()));
        std::mem::replace(v, rest)
    }
    let data = match &mut m.data {
        Some(metric::Data::Gauge(g)) => Some(metric::Data::Gauge(crate::otlp::Gauge {
            data_points: front(&mut g.data_points, n),
        })),
        Some(metric::Data::Sum(s)) => Some(metric::Data::Sum(crate::otlp::Sum {
            data_points: front(&mut s.data_points, n),
            aggregation_temporality: s.aggregation_temporality,
            is_monotonic: s.is_monotonic,
        })),
        Some(metric::Data::Histogram(h)) => Some(metric::Data::Histogram(crate::otlp::Histogram {
            data_points: front(&mut h.data_points, n),
            aggregation_temporality: h.aggregation_temporality,
        })),
        Some(metric::Data::ExponentialHistogram(h)) => Some(metric::Data::ExponentialHistogram(
            crate::otlp::ExponentialHistogram {
                data_points: front(&mut h.data_points, n),
                aggregation_temporality: h.aggregation_temporality,
            },
        )),
        Some(metric::Data::Summary(s)) => Some(metric::Data::Summary(crate::otlp::Summary {
            data_points: front(&mut s.data_points, n),
        })),
        None => None,
    };
    Metric {
        name: m.name.clone(),
        description: m.description.clone(),
        unit: m.unit.clone(),
        metadata: m.metadata.clone(),
        data,
    }
}

fn take_front<R, S, I>(resources: &mut Vec<R>, max: usize, shape: &Shape<R, S, I>) -> Vec<R> {
    let mut out = Vec::new();
    let mut budget = max;
    while budget > 0 && !resources.is_empty() {
        let r = &mut resources[0];
        let mut r_out = (shape.shell_r)(r);
        let scopes = (shape.scopes)(r);
        while budget > 0 && !scopes.is_empty() {
            let s = &mut scopes[0];
            let mut s_out = (shape.shell_s)(s);
            let items = (shape.items)(s);
            // Count how many whole items fit.
            let mut take = 0;
            let mut used = 0;
            for it in items.iter() {
                let w = (shape.weight)(it);
                if used + w > budget {
                    break;
                }
                used += w;
                take += 1;
            }
            let rest = items.split_off(take);
            *(shape.items)(&mut s_out) = std::mem::replace(items, rest);
            budget -= used;
            if budget > 0
                && let Some(first) = items.first_mut()
                && (shape.weight)(first) > budget
            {
                // The next item alone is heavier than what is left: cut it.
                (shape.items)(&mut s_out).push((shape.cut)(first, budget));
                budget = 0;
            }
            if !(shape.items)(&mut s_out).is_empty() {
                (shape.scopes)(&mut r_out).push(s_out);
            }
            if (shape.items)(&mut scopes[0]).is_empty() {
                scopes.remove(0);
            } else {
                break;
            }
        }
        if !(shape.scopes)(&mut r_out).is_empty() {
            out.push(r_out);
        }
        if (shape.scopes)(&mut resources[0]).is_empty() {
            resources.remove(0);
        } else if budget == 0 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::*;

    fn spans(resources: usize, scopes: usize, per_scope: usize) -> Payload {
        let rs = (0..resources)
            .map(|r| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![crate::attributes::kv_str(
                        "service.name",
                        &format!("svc{r}"),
                    )],
                    ..Default::default()
                }),
                scope_spans: (0..scopes)
                    .map(|s| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: format!("scope{s}"),
                            ..Default::default()
                        }),
                        spans: (0..per_scope)
                            .map(|i| Span {
                                name: format!("r{r}s{s}i{i}"),
                                ..Default::default()
                            })
                            .collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect();
        Payload::Traces(ExportTraceServiceRequest { resource_spans: rs })
    }

    fn names(p: &Payload) -> Vec<String> {
        let Payload::Traces(t) = p else { panic!() };
        t.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    #[test]
    fn split_keeps_order_and_counts() {
        let p = spans(3, 2, 5);
        assert_eq!(p.item_count(), 30);
        let all = names(&p);
        let parts = p.split(7);
        assert_eq!(
            parts.iter().map(Payload::item_count).collect::<Vec<_>>(),
            vec![7, 7, 7, 7, 2]
        );
        let joined: Vec<String> = parts.iter().flat_map(names).collect();
        assert_eq!(joined, all);
        // Each piece keeps the resource of its spans.
        let Payload::Traces(t) = &parts[1] else {
            panic!()
        };
        assert_eq!(
            t.resource_spans[0].resource.as_ref().unwrap().attributes[0],
            crate::attributes::kv_str("service.name", "svc0")
        );
        assert_eq!(t.resource_spans[1].scope_spans[0].spans[0].name, "r1s0i0");
    }

    #[test]
    fn split_exact_multiple_has_no_empty_tail() {
        let parts = spans(1, 1, 10).split(5);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.item_count() == 5));
    }

    #[test]
    fn metrics_split_cuts_inside_a_metric() {
        let m = Metric {
            name: "m".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: (0..10)
                    .map(|i| NumberDataPoint {
                        value: Some(number_data_point::Value::AsInt(i)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let p = Payload::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![m.clone(), m],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        assert_eq!(p.item_count(), 20);
        let parts = p.split(6);
        assert_eq!(
            parts.iter().map(Payload::item_count).collect::<Vec<_>>(),
            vec![6, 6, 6, 2]
        );
        let Payload::Metrics(second) = &parts[1] else {
            panic!()
        };
        let ms = &second.resource_metrics[0].scope_metrics[0].metrics;
        // 4 points left of the first metric, then 2 of the second; temporality kept.
        assert_eq!(ms.len(), 2);
        assert_eq!(metric_points(&ms[0]), 4);
        let Some(metric::Data::Sum(s)) = &ms[1].data else {
            panic!()
        };
        assert_eq!(s.aggregation_temporality, 2);
        assert!(s.is_monotonic);
    }

    #[test]
    fn split_by_bytes_caps_every_piece() {
        let p = spans(4, 3, 50);
        let len = p.encoded_len();
        let all = names(&p);
        let parts = p.split_by_bytes(len, len / 5);
        assert!(parts.len() >= 5, "{}", parts.len());
        assert!(parts.iter().all(|x| x.encoded_len() <= len / 5));
        assert_eq!(parts.iter().flat_map(names).collect::<Vec<_>>(), all);
        // Already small enough: untouched.
        let p = spans(1, 1, 3);
        let len = p.encoded_len();
        assert_eq!(p.clone().split_by_bytes(len, len), vec![p]);
    }

    #[test]
    fn merge_rejects_other_signal() {
        let mut a = spans(1, 1, 1);
        assert!(a.merge(Payload::empty(Signal::Logs)).is_err());
        a.merge(spans(1, 1, 2)).unwrap();
        assert_eq!(a.item_count(), 3);
    }
}
