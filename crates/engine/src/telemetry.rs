//! meshgate's own metrics: counters and gauges every component reports, rendered in the
//! Prometheus text format on the admin endpoint's `/metrics`.
//!
//! A tiny registry of atomics rather than a metrics crate: the hot path is one relaxed atomic
//! add on a handle the component resolved once at build time, and the output is exactly the
//! families and labels the README documents.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (queue lengths, capacities, states).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds `n` (may be negative).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum FamilyKind {
    Counter,
    Gauge,
}

enum Cell {
    Counter(Counter),
    Gauge(Gauge),
}

struct Family {
    help: &'static str,
    kind: FamilyKind,
    series: BTreeMap<Vec<(String, String)>, Cell>,
}

/// The registry of every self-telemetry series. Cloning shares it.
#[derive(Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

impl Registry {
    /// A new, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn cell(
        &self,
        name: &'static str,
        help: &'static str,
        kind: FamilyKind,
        labels: &[(&str, &str)],
    ) -> Option<Cell> {
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let fam = fams.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        debug_assert!(fam.kind == kind, "metric {name} registered with two kinds");
        let key: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cell = fam.series.entry(key).or_insert_with(|| match kind {
            FamilyKind::Counter => Cell::Counter(Counter::default()),
            FamilyKind::Gauge => Cell::Gauge(Gauge::default()),
        });
        Some(match cell {
            Cell::Counter(c) => Cell::Counter(c.clone()),
            Cell::Gauge(g) => Cell::Gauge(g.clone()),
        })
    }

    /// The counter `name{labels}`, created at zero on first use (so a series shows up on
    /// `/metrics` before anything happened, which makes absent-vs-zero unambiguous).
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        match self.cell(name, help, FamilyKind::Counter, labels) {
            Some(Cell::Counter(c)) => c,
            _ => Counter::default(),
        }
    }

    /// The gauge `name{labels}`, created at zero on first use.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        match self.cell(name, help, FamilyKind::Gauge, labels) {
            Some(Cell::Gauge(g)) => g,
            _ => Gauge::default(),
        }
    }

    /// Every series in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(4096);
        for (name, fam) in fams.iter() {
            let kind = match fam.kind {
                FamilyKind::Counter => "counter",
                FamilyKind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, cell) in &fam.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = match cell {
                    Cell::Counter(c) => writeln!(out, " {}", c.get()),
                    Cell::Gauge(g) => writeln!(out, " {}", g.get()),
                };
            }
        }
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_sorted_with_labels() {
        let r = Registry::new();
        let c = r.counter("b_total", "B things.", &[("x", "1"), ("y", "q\"uote")]);
        c.add(3);
        r.counter("b_total", "B things.", &[("x", "1"), ("y", "q\"uote")])
            .add(2);
        r.gauge("a_size", "A size.", &[]).set(-4);
        let text = r.render();
        assert_eq!(
            text,
            "# HELP a_size A size.\n# TYPE a_size gauge\na_size -4\n\
             # HELP b_total B things.\n# TYPE b_total counter\nb_total{x=\"1\",y=\"q\\\"uote\"} 5\n"
        );
    }
}
