//! The lake writer: Hive-style partitions, rolling files, atomic publication.
//!
//! Layout: `<lake>/signal=<traces|logs|metrics>/date=YYYY-MM-DD/hour=HH/part-<ms>-<id>.parquet`,
//! partitioned by each row's event time in UTC (span start, log time, point time), so a query
//! on `date`/`hour` reads only the folders it needs.
//!
//! A file is written under a hidden temporary name, `.part-<ms>-<id>.parquet.tmp`, in the
//! folder it will live in, and renamed to its final name only after the Parquet footer is
//! written and the data is fsynced. Readers never see a partial file: DataFusion (and
//! `meshgate query`) list only `*.parquet`, pyarrow's dataset discovery skips names starting
//! with `.` or `_`, and a `*.parquet` glob in DuckDB matches neither. A crash mid-write leaves
//! only the hidden temporary behind (see [`stale_temporaries`]).
//!
//! One open file per partition; a file is closed and published when it reaches `max_rows`
//! or `max_bytes`, when it is older than `max_age` ([`LakeWriter::roll_expired`]), or at
//! [`LakeWriter::close_all`].

use arrow::array::{AsArray, BooleanArray};
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Column compression of the Parquet files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// zstd level 3: the best ratio for telemetry at a modest CPU cost.
    #[default]
    Zstd,
    /// snappy: faster, larger files.
    Snappy,
    /// none.
    None,
}

/// When files are rolled, and how they are encoded.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Rows after which a file is closed.
    pub max_rows: usize,
    /// Bytes (written plus buffered, an estimate of the final size) after which a file is
    /// closed.
    pub max_bytes: u64,
    /// Age after which an open file is closed even if small, so data becomes queryable.
    pub max_age: Duration,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Column compression.
    pub compression: Compression,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_rows: 1_000_000,
            max_bytes: 128 * 1024 * 1024,
            max_age: Duration::from_secs(300),
            row_group_rows: 65_536,
            compression: Compression::Zstd,
        }
    }
}

/// A partition: hours since the Unix epoch (UTC).
type HourKey = i64;

const NS_PER_HOUR: i64 = 3_600_000_000_000;

/// `date=YYYY-MM-DD/hour=HH` of an hour since the epoch.
pub fn partition_path(hour: HourKey) -> String {
    let days = hour.div_euclid(24);
    let h = hour.rem_euclid(24);
    let (y, m, d) = civil_from_days(days);
    format!("date={y:04}-{m:02}-{d:02}/hour={h:02}")
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

struct OpenFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: ArrowWriter<File>,
    rows: usize,
    opened: Instant,
}

/// What a write or a roll did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Published {
    /// Files closed and renamed to their final name.
    pub files: Vec<PathBuf>,
}

/// Writes the batches of one table into its `signal=` folder.
pub struct LakeWriter {
    root: PathBuf,
    schema: SchemaRef,
    time_col: usize,
    cfg: WriterConfig,
    props: WriterProperties,
    open: BTreeMap<HourKey, OpenFile>,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> String {
    let s = e.to_string();
    let s = s
        .find(" (os error")
        .map_or(s.as_str(), |i| &s[..i])
        .to_string();
    format!("cannot {what} {}: {s}", p.display())
}

impl LakeWriter {
    /// A writer of `table` (`spans`, `logs` or `metrics`) under `lake`. Creates nothing until
    /// the first write.
    pub fn new(lake: &Path, table: &str, cfg: WriterConfig) -> Result<Self, String> {
        let (_, folder, schema, _) = crate::schema::tables()
            .into_iter()
            .find(|t| t.0 == table)
            .ok_or_else(|| format!("unknown lake table `{table}`"))?;
        let time_col = schema
            .index_of(crate::convert::time_column(table))
            .map_err(|e| e.to_string())?;
        let compression = match cfg.compression {
            Compression::Zstd => PqCompression::ZSTD(ZstdLevel::default()),
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::None => PqCompression::UNCOMPRESSED,
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
            .set_created_by(format!("meshgate {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            root: lake.join(format!("signal={folder}")),
            schema,
            time_col,
            cfg,
            props,
            open: BTreeMap::new(),
        })
    }

    /// The `signal=` folder this writer fills.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Rows written to files not yet published.
    pub fn pending_rows(&self) -> usize {
        self.open.values().map(|f| f.rows).sum()
    }

    /// Writes a batch (of this writer's schema), splitting it by hour of event time, and
    /// publishes the files that reached their row or byte limit.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<Published, String> {
        if batch.num_rows() == 0 {
            return Ok(Published::default());
        }
        if batch.schema().fields() != self.schema.fields() {
            return Err("batch does not have the table's schema".into());
        }
        let times = batch
            .column(self.time_col)
            .as_primitive::<TimestampNanosecondType>();
        let hour_of = |i: usize| times.value(i).div_euclid(NS_PER_HOUR);
        let first = hour_of(0);
        let mut published = Published::default();
        if (1..batch.num_rows()).all(|i| hour_of(i) == first) {
            self.write_to(first, batch, &mut published)?;
        } else {
            let mut hours: Vec<HourKey> = (0..batch.num_rows()).map(hour_of).collect();
            hours.sort_unstable();
            hours.dedup();
            for h in hours {
                let mask: BooleanArray = (0..batch.num_rows())
                    .map(|i| Some(hour_of(i) == h))
                    .collect();
                let part =
                    arrow::compute::filter_record_batch(batch, &mask).map_err(|e| e.to_string())?;
                self.write_to(h, &part, &mut published)?;
            }
        }
        Ok(published)
    }

    fn write_to(
        &mut self,
        hour: HourKey,
        batch: &RecordBatch,
        published: &mut Published,
    ) -> Result<(), String> {
        if !self.open.contains_key(&hour) {
            let f = self.create(hour)?;
            self.open.insert(hour, f);
        }
        let f = self.open.get_mut(&hour).expect("just inserted");
        if let Err(e) = f.writer.write(batch) {
            // The file may be damaged: give it up (it stays hidden) and report.
            let f = self.open.remove(&hour).expect("present");
            let _ = std::fs::remove_file(&f.tmp);
            return Err(format!("cannot write {}: {e}", f.tmp.display()));
        }
        f.rows += batch.num_rows();
        let bytes = (f.writer.bytes_written() + f.writer.in_progress_size()) as u64;
        if f.rows >= self.cfg.max_rows || bytes >= self.cfg.max_bytes {
            let f = self.open.remove(&hour).expect("present");
            published.files.push(Self::publish(f)?);
        }
        Ok(())
    }

    fn create(&self, hour: HourKey) -> Result<OpenFile, String> {
        let dir = self.root.join(partition_path(hour));
        std::fs::create_dir_all(&dir).map_err(|e| io("create directory", &dir, e))?;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let id: u64 = rand::random();
        let name = format!("part-{ms}-{id:016x}.parquet");
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
            .map_err(|e| format!("cannot start {}: {e}", tmp.display()))?;
        Ok(OpenFile {
            tmp,
            dest: dir.join(name),
            writer,
            rows: 0,
            opened: Instant::now(),
        })
    }

    /// Writes the footer, fsyncs, and renames the file to its visible name.
    fn publish(mut f: OpenFile) -> Result<PathBuf, String> {
        let res = f
            .writer
            .finish()
            .map_err(|e| format!("cannot finish {}: {e}", f.tmp.display()))
            .and_then(|_| {
                f.writer
                    .inner()
                    .sync_all()
                    .map_err(|e| io("sync", &f.tmp, e))
            })
            .and_then(|_| std::fs::rename(&f.tmp, &f.dest).map_err(|e| io("rename", &f.tmp, e)));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&f.tmp);
            return Err(e);
        }
        // Make the rename itself durable.
        if let Some(dir) = f.dest.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(f.dest)
    }

    /// Publishes the files open for longer than `max_age`.
    pub fn roll_expired(&mut self) -> Result<Published, String> {
        let max_age = self.cfg.max_age;
        let expired: Vec<HourKey> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= max_age)
            .map(|(h, _)| *h)
            .collect();
        self.publish_keys(expired)
    }

    /// Publishes every open file (at shutdown).
    pub fn close_all(&mut self) -> Result<Published, String> {
        let all: Vec<HourKey> = self.open.keys().copied().collect();
        self.publish_keys(all)
    }

    /// Publishes the files of `keys`; tries them all and reports the first error.
    fn publish_keys(&mut self, keys: Vec<HourKey>) -> Result<Published, String> {
        let mut published = Published::default();
        let mut first_err = None;
        for k in keys {
            if let Some(f) = self.open.remove(&k) {
                match Self::publish(f) {
                    Ok(p) => published.files.push(p),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(published),
        }
    }
}

/// Hidden temporaries (`.part-*.parquet.tmp`) under a `signal=` folder: what a crash leaves.
/// They are never read; remove them when no gateway writes to the folder.
pub fn stale_temporaries(signal_root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![signal_root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(".part-") && n.ends_with(".parquet.tmp"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
