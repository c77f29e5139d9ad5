//! SQL over the lake with DataFusion (`meshgate query`).
//!
//! The tables `spans`, `logs` and `metrics` are listing tables over
//! `<lake>/signal=traces|logs|metrics/`, with the partition columns `date` (`YYYY-MM-DD`)
//! and `hour` (`00`-`23`, UTC) read from the folder names: a filter on them (`WHERE date =
//! '2026-05-01' AND hour >= '10'`) skips whole folders before any file is opened. Filters on
//! `start_time`/`time` also prune, through the row-group statistics of the Parquet files.
//! A table whose folder does not exist yet is registered empty, so every query that names
//! it still plans.

use crate::schema;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Output format of query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An aligned text table with a header.
    #[default]
    Table,
    /// CSV with a header line; nested values (maps, lists) rendered as text.
    Csv,
    /// One JSON object per row (JSON lines); maps become objects, lists arrays.
    Json,
}

/// The partition columns every table has.
fn partition_cols() -> Vec<(String, DataType)> {
    vec![
        ("date".to_string(), DataType::Utf8),
        ("hour".to_string(), DataType::Utf8),
    ]
}

/// A session with the lake's tables registered.
pub async fn session(lake: &Path) -> Result<SessionContext, String> {
    if !lake.is_dir() {
        return Err(format!(
            "lake directory {} does not exist (it is the `path` of the parquet exporter)",
            lake.display()
        ));
    }
    let lake = std::fs::canonicalize(lake)
        .map_err(|e| format!("cannot open lake directory {}: {e}", lake.display()))?;
    let ctx = SessionContext::new();
    for (table, folder, file_schema, _) in schema::tables() {
        let dir = lake.join(format!("signal={folder}"));
        let provider: Arc<dyn datafusion::datasource::TableProvider> = if dir.is_dir() {
            let url = ListingTableUrl::parse(format!("{}/", dir.display()))
                .map_err(|e| format!("bad lake path {}: {e}", dir.display()))?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(partition_cols());
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(file_schema.clone());
            Arc::new(ListingTable::try_new(config).map_err(|e| e.to_string())?)
        } else {
            let schema = with_partitions(&file_schema);
            Arc::new(MemTable::try_new(schema, vec![vec![]]).map_err(|e| e.to_string())?)
        };
        ctx.register_table(table, provider)
            .map_err(|e| e.to_string())?;
    }
    Ok(ctx)
}

fn with_partitions(file_schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for (name, dt) in partition_cols() {
        fields.push(Field::new(name, dt, false));
    }
    Arc::new(Schema::new(fields))
}

/// Runs `sql` and returns the result schema and batches.
pub async fn run(lake: &Path, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let ctx = session(lake).await?;
    let df = ctx.sql(sql).await.map_err(clean_error)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(clean_error)?;
    Ok((schema, batches))
}

/// DataFusion errors carry a category prefix and sometimes a backtrace hint; keep the
/// message a user can act on.
fn clean_error(e: datafusion::error::DataFusionError) -> String {
    let s = e.strip_backtrace();
    s.trim().to_string()
}

/// Runs `sql` over the lake and writes the result to `out` in `format`.
pub async fn query(
    lake: &Path,
    sql: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), String> {
    let (schema, batches) = run(lake, sql).await?;
    write_results(&schema, &batches, format, out)
}

/// Writes query results in `format`.
pub fn write_results(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), String> {
    let w = |e: std::io::Error| format!("cannot write the results: {e}");
    match format {
        OutputFormat::Table => {
            let t = arrow::util::pretty::pretty_format_batches_with_schema(schema.clone(), batches)
                .map_err(|e| e.to_string())?;
            writeln!(out, "{t}").map_err(w)?;
        }
        OutputFormat::Csv => {
            let opts = FormatOptions::default().with_null("");
            let header: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| csv_field(f.name()))
                .collect();
            writeln!(out, "{}", header.join(",")).map_err(w)?;
            let mut line = String::new();
            for b in batches {
                let fmts = b
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                for row in 0..b.num_rows() {
                    line.clear();
                    for (i, f) in fmts.iter().enumerate() {
                        if i > 0 {
                            line.push(',');
                        }
                        line.push_str(&csv_field(&f.value(row).to_string()));
                    }
                    writeln!(out, "{line}").map_err(w)?;
                }
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                writer.write(b).map_err(|e| e.to_string())?;
            }
            writer.finish().map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(w)
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
