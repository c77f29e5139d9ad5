//! Data point access common to every metric type (gauge, sum, histogram, exponential
//! histogram, summary): each has its own point struct, all of them carry `attributes`.

use meshgate_pdata::otlp::{KeyValue, Metric, metric::Data};

/// Calls `f` with the attributes of every data point of `m`.
pub(crate) fn for_each_point_attributes(m: &mut Metric, mut f: impl FnMut(&mut Vec<KeyValue>)) {
    match &mut m.data {
        Some(Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(Data::Histogram(h)) => h.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(Data::ExponentialHistogram(h)) => {
            h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
        }
        Some(Data::Summary(s)) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        None => {}
    }
}

/// Keeps the data points of `m` for which `keep(attributes)` is true; returns how many were
/// removed.
pub(crate) fn retain_points(m: &mut Metric, mut keep: impl FnMut(&[KeyValue]) -> bool) -> usize {
    fn retain<T>(v: &mut Vec<T>, mut keep: impl FnMut(&T) -> bool) -> usize {
        let before = v.len();
        v.retain(|p| keep(p));
        before - v.len()
    }
    match &mut m.data {
        Some(Data::Gauge(g)) => retain(&mut g.data_points, |p| keep(&p.attributes)),
        Some(Data::Sum(s)) => retain(&mut s.data_points, |p| keep(&p.attributes)),
        Some(Data::Histogram(h)) => retain(&mut h.data_points, |p| keep(&p.attributes)),
        Some(Data::ExponentialHistogram(h)) => retain(&mut h.data_points, |p| keep(&p.attributes)),
        Some(Data::Summary(s)) => retain(&mut s.data_points, |p| keep(&p.attributes)),
        None => 0,
    }
}

/// Number of data points in `m`.
pub(crate) fn point_count(m: &Metric) -> usize {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}
