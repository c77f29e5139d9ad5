//! meshgate's in-pipeline processors, named and configured like their OpenTelemetry
//! Collector counterparts so an existing collector file mostly just works:
//!
//! - [`batch`]: groups requests into batches by size and age, splits oversized requests;
//! - [`memory_limiter`]: refuses new data (retryably) while the process is above its soft
//!   memory limit;
//! - [`attributes`]: inserts, updates, upserts, deletes and hashes span, log record and
//!   data point attributes;
//! - [`resource`]: the same actions on resource attributes;
//! - [`filter`]: drops spans, log records, metrics and data points matching conditions;
//! - [`probabilistic_sampler`]: keeps a fixed share of traces (and logs), consistently across
//!   instances, recording the sampling threshold in the W3C trace state;
//! - [`tail_sampling`]: holds each trace's spans and decides once per whole trace by policies.
//!
//! Processors are synchronous steps: all processors of a pipeline run in one task, and an
//! instance is built per pipeline. Every config is a typed struct whose doc comments become
//! the JSON Schema descriptions; options the collector has but meshgate does not support are
//! rejected by name (`deny_unknown_fields`), never silently ignored.

pub mod actions;
pub mod attributes;
pub mod batch;
pub mod filter;
pub mod memory_limiter;
mod points;
pub mod probabilistic_sampler;
pub mod resource;
pub mod tail_sampling;

#[cfg(test)]
mod testutil;

pub use attributes::AttributesFactory;
pub use batch::BatchFactory;
pub use filter::FilterFactory;
pub use memory_limiter::MemoryLimiterFactory;
pub use probabilistic_sampler::ProbabilisticSamplerFactory;
pub use resource::ResourceFactory;
pub use tail_sampling::TailSamplingFactory;

/// Registers every processor type of this crate.
pub fn register(c: meshgate_engine::Components) -> meshgate_engine::Components {
    c.processor(BatchFactory)
        .processor(MemoryLimiterFactory)
        .processor(AttributesFactory)
        .processor(ResourceFactory)
        .processor(FilterFactory)
        .processor(ProbabilisticSamplerFactory)
        .processor(TailSamplingFactory)
}

#[cfg(test)]
mod tests {
    use meshgate_config::{Catalog, Kind};

    #[test]
    fn registers_all_seven() {
        let c = super::register(meshgate_engine::Components::default());
        let mut names = c.type_names(Kind::Processor);
        names.sort();
        assert_eq!(
            names,
            [
                "attributes",
                "batch",
                "filter",
                "memory_limiter",
                "probabilistic_sampler",
                "resource",
                "tail_sampling"
            ]
        );
    }
}
