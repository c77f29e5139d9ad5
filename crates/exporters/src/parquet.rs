//! `parquet`: writes traces, logs and metrics into a local Parquet lake that `meshgate query`
//! (and DuckDB, pyarrow, Spark...) can read. Schemas, partitioning and file publication are
//! in `meshgate-lake`; this is the component around it.
//!
//! Conversion to Arrow happens on the exporter's worker; the file I/O runs on tokio's
//! blocking pool, and the writers' std mutexes are only ever locked there, never across an
//! `.await`. Files older than `max_age` are published by a ticker even when no data arrives,
//! and every open file is published at shutdown, after the queue drained.
//!
//! No queue or retries: like `file`, the exporter is local and called in order from one
//! worker. A write that fails (disk full, permissions) is reported as a permanent error, so
//! the batch is dropped and counted rather than retried forever against a broken disk; the
//! damaged file is discarded and the next batch starts a new one.

use crate::common::{io_error_text, parse_config};
use meshgate_config::{ByteSize, DurationValue};
use meshgate_engine::{BuildContext, ExportError, Exported, Exporter, ExporterFactory, Factory};
use meshgate_lake::{LakeWriter, WriterConfig};
use meshgate_pdata::{Payload, Signal};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tracing::{debug, warn};

/// Column compression of the Parquet files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ParquetCompression {
    /// zstd (level 3): the smallest files for a modest CPU cost.
    #[default]
    Zstd,
    /// snappy: faster to write, larger files.
    Snappy,
    /// No compression.
    None,
}

/// Config of the `parquet` exporter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    /// Lake directory (required). Files go to
    /// `<path>/signal=traces|logs|metrics/date=YYYY-MM-DD/hour=HH/part-*.parquet`; it is
    /// created when missing. Point `meshgate query --lake` at it.
    pub path: PathBuf,
    /// Rows after which a file is closed and published. Default: `1000000`.
    #[serde(default = "default_max_rows")]
    #[schemars(range(min = 1))]
    pub max_rows: u64,
    /// Size (estimated compressed bytes, written plus buffered) after which a file is closed
    /// and published. Default: `128MiB`.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Longest time a file stays open: data becomes queryable at most this long after it
    /// arrived (files are also published at shutdown). Default: `5m`.
    #[serde(default = "default_max_age")]
    pub max_age: DurationValue,
    /// Rows per Parquet row group (the unit readers skip by statistics; memory held per
    /// open file grows with it). Default: `65536`.
    #[serde(default = "default_row_group_rows")]
    #[schemars(range(min = 1))]
    pub row_group_rows: u64,
    /// Column compression: `zstd`, `snappy` or `none`. Default: `zstd`.
    #[serde(default)]
    pub compression: ParquetCompression,
}

fn default_max_rows() -> u64 {
    1_000_000
}
fn default_max_bytes() -> ByteSize {
    ByteSize(128 * 1024 * 1024)
}
fn default_max_age() -> DurationValue {
    DurationValue(Duration::from_secs(300))
}
fn default_row_group_rows() -> u64 {
    65_536
}

impl ParquetConfig {
    /// Checks the values without touching the disk beyond looking at `path`.
    fn writer_config(&self) -> Result<WriterConfig, String> {
        if self.path.as_os_str().is_empty() {
            return Err("`path` is empty; set it to the lake directory".into());
        }
        if self.path.exists() && !self.path.is_dir() {
            return Err(format!(
                "`path` {} exists and is not a directory",
                self.path.display()
            ));
        }
        if self.max_rows == 0 {
            return Err("`max_rows` must be at least 1".into());
        }
        if self.row_group_rows == 0 {
            return Err("`row_group_rows` must be at least 1".into());
        }
        if self.max_bytes.0 < 1024 {
            return Err(format!(
                "`max_bytes` is {} bytes; use at least 1KiB (files would hold one batch each)",
                self.max_bytes.0
            ));
        }
        if self.max_age.0.is_zero() {
            return Err("`max_age` must be longer than 0s".into());
        }
        Ok(WriterConfig {
            max_rows: usize::try_from(self.max_rows).unwrap_or(usize::MAX),
            max_bytes: self.max_bytes.0,
            max_age: self.max_age.0,
            row_group_rows: usize::try_from(self.row_group_rows).unwrap_or(usize::MAX),
            compression: match self.compression {
                ParquetCompression::Zstd => meshgate_lake::Compression::Zstd,
                ParquetCompression::Snappy => meshgate_lake::Compression::Snappy,
                ParquetCompression::None => meshgate_lake::Compression::None,
            },
        })
    }
}

/// Factory of the `parquet` exporter.
pub struct ParquetExporterFactory;

impl Factory for ParquetExporterFactory {
    fn type_name(&self) -> &'static str {
        "parquet"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "Writes a Parquet lake (Hive partitions by signal/date/hour) for `meshgate query`"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(ParquetConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        parse_config::<ParquetConfig>(config)?
            .writer_config()
            .map(|_| ())
    }
}

impl ExporterFactory for ParquetExporterFactory {
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let cfg: ParquetConfig = parse_config(ctx.config)?;
        let wc = cfg
            .writer_config()
            .map_err(|e| format!("parquet exporter: {e}"))?;
        Ok(Arc::new(ParquetExporter::open(cfg.path, wc)?))
    }
    fn uses_queue_and_retry(&self) -> bool {
        false
    }
}

struct Inner {
    path: PathBuf,
    /// One writer per table, indexed like [`Signal::ALL`]; locked only on the blocking pool.
    writers: [Mutex<LakeWriter>; 3],
    closed: AtomicBool,
}

fn index(signal: Signal) -> usize {
    Signal::ALL
        .iter()
        .position(|s| *s == signal)
        .expect("every signal is in ALL")
}

impl Inner {
    fn writer(&self, signal: Signal) -> std::sync::MutexGuard<'_, LakeWriter> {
        self.writers[index(signal)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes expired files of every table; logs failures.
    fn roll_expired(&self) {
        for s in Signal::ALL {
            match self.writer(s).roll_expired() {
                Ok(p) if !p.files.is_empty() => {
                    debug!(
                        files = p.files.len(),
                        "parquet exporter: published {s} files"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(path = %self.path.display(), "parquet exporter: {e}"),
            }
        }
    }
}

/// The `parquet` exporter.
pub struct ParquetExporter {
    inner: Arc<Inner>,
}

impl ParquetExporter {
    /// An exporter writing under `path` (created when missing).
    pub fn open(path: PathBuf, cfg: WriterConfig) -> Result<Self, String> {
        std::fs::create_dir_all(&path).map_err(|e| {
            format!(
                "parquet exporter: cannot create the lake directory {}: {}",
                path.display(),
                io_error_text(&e)
            )
        })?;
        let w = |s: Signal| {
            LakeWriter::new(&path, meshgate_lake::table_of(s), cfg.clone())
                .map(Mutex::new)
                .map_err(|e| format!("parquet exporter: {e}"))
        };
        let [a, b, c] = Signal::ALL;
        let inner = Arc::new(Inner {
            writers: [w(a)?, w(b)?, w(c)?],
            path,
            closed: AtomicBool::new(false),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Check often enough that a file is published within ~max_age + 10%.
            let tick = (cfg.max_age / 10).clamp(Duration::from_millis(50), Duration::from_secs(10));
            rt.spawn(age_ticker(Arc::downgrade(&inner), tick));
        }
        Ok(Self { inner })
    }
}

/// Publishes files that reached `max_age` even when no new data arrives.
async fn age_ticker(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        if i.closed.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || i.roll_expired()).await;
    }
}

#[async_trait::async_trait]
impl Exporter for ParquetExporter {
    async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
        let batch = match meshgate_lake::to_record_batch(data) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(Exported::default()),
            Err(e) => {
                return Err(ExportError::permanent(format!(
                    "parquet exporter: cannot convert {} {}: {e}",
                    data.item_count(),
                    data.signal()
                )));
            }
        };
        let signal = data.signal();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = inner.writer(signal);
            let published = w.write(&batch)?;
            if !published.files.is_empty() {
                debug!(
                    files = published.files.len(),
                    "parquet exporter: published {signal} files"
                );
            }
            // Also publish this table's files that are past max_age.
            w.roll_expired().map(|_| ())
        })
        .await
        .map_err(|e| ExportError::permanent(format!("parquet exporter: write task failed: {e}")))?
        .map_err(|e| ExportError::permanent(format!("parquet exporter: {e}")))?;
        Ok(Exported::default())
    }

    async fn shutdown(&self) {
        let inner = self.inner.clone();
        inner.closed.store(true, Ordering::Release);
        let res = tokio::task::spawn_blocking(move || {
            let mut first_err = None;
            for s in Signal::ALL {
                if let Err(e) = inner.writer(s).close_all() {
                    first_err.get_or_insert(e);
                }
            }
            first_err
        })
        .await;
        match res {
            Ok(None) => {}
            Ok(Some(e)) => {
                warn!(path = %self.inner.path.display(), "parquet exporter: final flush failed: {e}")
            }
            Err(e) => {
                warn!(path = %self.inner.path.display(), "parquet exporter: final flush failed: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "meshgate-exporters-pq-{}-{name}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn parquet_files(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn writes_every_signal_and_publishes_on_shutdown() {
        let dir = TempDir::new("all");
        let reg = meshgate_engine::Registry::new();
        let cfg = serde_json::json!({"path": dir.0, "compression": "snappy"});
        let exp = ParquetExporterFactory
            .build(testutil::ctx(&cfg, &reg))
            .unwrap();
        for p in [testutil::traces(3), testutil::logs(2), testutil::metrics(4)] {
            exp.export(&p).await.unwrap();
        }
        exp.export(&testutil::traces(0)).await.unwrap();
        assert!(
            parquet_files(&dir.0).is_empty(),
            "published before shutdown"
        );
        exp.shutdown().await;
        let files = parquet_files(&dir.0);
        let rel: Vec<String> = files
            .iter()
            .map(|f| {
                let r = f
                    .strip_prefix(&dir.0)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                r[..r.rfind('/').unwrap()].to_string()
            })
            .collect();
        // testutil's data is at 2023-11-14T22:13:20Z.
        assert_eq!(
            rel,
            [
                "signal=logs/date=2023-11-14/hour=22",
                "signal=metrics/date=2023-11-14/hour=22",
                "signal=traces/date=2023-11-14/hour=22",
            ]
        );
        let (_, b) = meshgate_lake::query::run(
            &dir.0,
            "SELECT (SELECT count(*) FROM spans) + (SELECT count(*) FROM logs) * 10 + (SELECT count(*) FROM metrics) * 100",
        )
        .await
        .unwrap();
        let v = arrow_i64(&b);
        assert_eq!(v, 3 + 20 + 400);
    }

    fn arrow_i64(b: &[meshgate_lake::arrow::record_batch::RecordBatch]) -> i64 {
        let mut out = Vec::new();
        meshgate_lake::query::write_results(
            &b[0].schema(),
            b,
            meshgate_lake::OutputFormat::Csv,
            &mut out,
        )
        .unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn max_age_publishes_without_new_data() {
        let dir = TempDir::new("age");
        let cfg = WriterConfig {
            max_age: Duration::from_millis(100),
            ..Default::default()
        };
        let exp = ParquetExporter::open(dir.0.clone(), cfg).unwrap();
        exp.export(&testutil::logs(1)).await.unwrap();
        let start = std::time::Instant::now();
        while parquet_files(&dir.0).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5), "not published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        exp.shutdown().await;
        assert_eq!(parquet_files(&dir.0).len(), 1);
    }

    #[test]
    fn check_validates_without_creating_anything() {
        let dir = TempDir::new("check");
        let f = ParquetExporterFactory;
        let ok = serde_json::json!({"path": dir.0.join("lake")});
        f.check(&ok).unwrap();
        assert!(!dir.0.exists(), "check created files");
        std::fs::create_dir_all(&dir.0).unwrap();
        let file = dir.0.join("plain");
        std::fs::write(&file, b"x").unwrap();
        for (bad, needle) in [
            (serde_json::json!({}), "path"),
            (serde_json::json!({"path": ""}), "empty"),
            (serde_json::json!({"path": file}), "not a directory"),
            (
                serde_json::json!({"path": "/tmp/l", "max_rows": 0}),
                "max_rows",
            ),
            (
                serde_json::json!({"path": "/tmp/l", "row_group_rows": 0}),
                "row_group_rows",
            ),
            (
                serde_json::json!({"path": "/tmp/l", "max_bytes": "10B"}),
                "max_bytes",
            ),
            (
                serde_json::json!({"path": "/tmp/l", "max_age": "0s"}),
                "max_age",
            ),
            (
                serde_json::json!({"path": "/tmp/l", "compression": "lz4"}),
                "lz4",
            ),
            (serde_json::json!({"path": "/tmp/l", "rows": 1}), "rows"),
        ] {
            let err = f.check(&bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let reg = meshgate_engine::Registry::new();
        let cfg = serde_json::json!({"path": file.join("lake")});
        let err = ParquetExporterFactory
            .build(testutil::ctx(&cfg, &reg))
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("cannot create the lake directory"), "{err}");
        assert!(!err.contains("os error"), "{err}");
        assert!(!ParquetExporterFactory.uses_queue_and_retry());
    }
}
