//! meshgate's Parquet lake: every signal stored as Parquet files in Hive-style partitions,
//! queryable with SQL without another system.
//!
//! - [`schema`]: the Arrow schemas of the `spans`, `logs` and `metrics` tables (checked in
//!   under `schemas/parquet/`, kept in step by a test).
//! - [`convert`]: OTLP payload → Arrow record batch, straight into column builders.
//! - [`writer`]: partitioned, rolling, atomically published Parquet files.
//! - [`query`]: DataFusion over the lake (`meshgate query`).

pub mod convert;
pub mod query;
pub mod schema;
pub mod writer;

/// The Arrow and DataFusion versions the lake is built with, for callers' type names.
pub use arrow;
pub use datafusion;

pub use convert::to_record_batch;
pub use query::OutputFormat;
pub use writer::{Compression, LakeWriter, Published, WriterConfig};

/// The lake table of a signal.
pub fn table_of(signal: meshgate_pdata::Signal) -> &'static str {
    match signal {
        meshgate_pdata::Signal::Traces => "spans",
        meshgate_pdata::Signal::Logs => "logs",
        meshgate_pdata::Signal::Metrics => "metrics",
    }
}

#[cfg(test)]
mod tests;
