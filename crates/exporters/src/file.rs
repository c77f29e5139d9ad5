//! `file`: appends every batch as one OTLP/JSON line to a local file (the Collector's
//! `file` exporter format), with optional size-based rotation.
//!
//! Encoding happens on the async worker; the write itself runs on tokio's blocking pool, so a
//! slow disk never stalls the runtime. Data sits in a buffer for at most `flush_interval`
//! and is flushed and fsynced at shutdown, so whoever reads the file after the gateway exits
//! sees every line.

use crate::common::{io_error_text, parse_config};
use meshgate_config::DurationValue;
use meshgate_engine::{BuildContext, ExportError, Exported, Exporter, ExporterFactory, Factory};
use meshgate_pdata::{Payload, Signal};
use schemars::JsonSchema;
use serde::Deserialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tracing::warn;

const MIB: u64 = 1024 * 1024;

/// Output format of the `file` exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// OTLP/JSON, one export request per line.
    #[default]
    Json,
}

/// `rotation`: size-based rotation of the output file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Size in MiB the file may reach before it is rotated to `<path>.1`. Default: `100`.
    #[schemars(range(min = 1))]
    pub max_megabytes: u64,
    /// Rotated files kept (`<path>.1` is the newest); older ones are deleted. Default: `5`.
    pub max_backups: u32,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            max_megabytes: 100,
            max_backups: 5,
        }
    }
}

/// Config of the `file` exporter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// File to append to (required); missing parent directories are created.
    pub path: PathBuf,
    /// Size-based rotation. Default: none (the file grows without limit); when the block is
    /// present its fields default to `max_megabytes: 100`, `max_backups: 5`.
    #[serde(default)]
    pub rotation: Option<RotationConfig>,
    /// Longest time written data stays in memory before it is flushed to the file; it is
    /// always flushed at shutdown. `0s` flushes after every batch. Default: `1s`.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: DurationValue,
    /// Output format; only `json` (OTLP/JSON, one export request per line). Default: `json`.
    #[serde(default)]
    pub format: FileFormat,
}

fn default_flush_interval() -> DurationValue {
    DurationValue(Duration::from_secs(1))
}

/// Factory of the `file` exporter.
pub struct FileExporterFactory;

impl Factory for FileExporterFactory {
    fn type_name(&self) -> &'static str {
        "file"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "Appends OTLP/JSON lines (one export request per line) to a file, with rotation"
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(FileConfig)
    }
}

impl ExporterFactory for FileExporterFactory {
    fn build(&self, ctx: BuildContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let cfg: FileConfig = parse_config(ctx.config)?;
        if cfg.path.as_os_str().is_empty() {
            return Err("file exporter: `path` is empty".into());
        }
        if cfg.rotation.as_ref().is_some_and(|r| r.max_megabytes == 0) {
            return Err("file exporter: `rotation.max_megabytes` must be at least 1".into());
        }
        let rotation = cfg.rotation.map(|r| Rotation {
            max_bytes: r.max_megabytes.saturating_mul(MIB),
            max_backups: r.max_backups,
        });
        Ok(Arc::new(FileExporter::open(
            cfg.path,
            rotation,
            cfg.flush_interval.0,
        )?))
    }
    fn uses_queue_and_retry(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy)]
struct Rotation {
    max_bytes: u64,
    max_backups: u32,
}

struct State {
    writer: BufWriter<File>,
    /// Bytes in the current file, buffered ones included.
    size: u64,
    dirty: bool,
    last_flush: Instant,
}

struct Inner {
    path: PathBuf,
    rotation: Option<Rotation>,
    flush_interval: Duration,
    state: Mutex<State>,
    closed: AtomicBool,
}

/// The `file` exporter.
pub struct FileExporter {
    inner: Arc<Inner>,
}

fn open_file(path: &Path) -> Result<(File, u64), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "file exporter: cannot create directory {}: {}",
                dir.display(),
                io_error_text(&e)
            )
        })?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            format!(
                "file exporter: cannot open {}: {}",
                path.display(),
                io_error_text(&e)
            )
        })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}

fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl FileExporter {
    fn open(
        path: PathBuf,
        rotation: Option<Rotation>,
        flush_interval: Duration,
    ) -> Result<Self, String> {
        let (file, size) = open_file(&path)?;
        let inner = Arc::new(Inner {
            path,
            rotation,
            flush_interval,
            state: Mutex::new(State {
                writer: BufWriter::with_capacity(256 * 1024, file),
                size,
                dirty: false,
                last_flush: Instant::now(),
            }),
            closed: AtomicBool::new(false),
        });
        if !flush_interval.is_zero()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(flush_ticker(Arc::downgrade(&inner), flush_interval));
        }
        Ok(Self { inner })
    }
}

/// Flushes buffered data every `interval` even when no new batch arrives.
async fn flush_ticker(inner: Weak<Inner>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        if i.closed.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            let mut st = i.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.dirty
                && st.last_flush.elapsed() >= i.flush_interval
                && let Err(e) = i.flush(&mut st)
            {
                warn!(path = %i.path.display(), "file exporter: flush failed: {e}");
            }
        })
        .await;
    }
}

impl Inner {
    fn flush(&self, st: &mut State) -> std::io::Result<()> {
        st.writer.flush()?;
        st.dirty = false;
        st.last_flush = Instant::now();
        Ok(())
    }

    /// Renames `path` to `path.1` (shifting older backups up, dropping the oldest) and opens
    /// a fresh `path`.
    fn rotate(&self, st: &mut State, max_backups: u32) -> Result<(), String> {
        let ctx = |what: &str, p: &Path, e: std::io::Error| {
            format!(
                "file exporter: cannot {what} {}: {}",
                p.display(),
                io_error_text(&e)
            )
        };
        st.writer.flush().map_err(|e| ctx("flush", &self.path, e))?;
        if max_backups == 0 {
            std::fs::remove_file(&self.path).map_err(|e| ctx("remove", &self.path, e))?;
        } else {
            let oldest = backup_path(&self.path, max_backups);
            match std::fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ctx("remove", &oldest, e)),
            }
            for n in (1..max_backups).rev() {
                let from = backup_path(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, backup_path(&self.path, n + 1))
                        .map_err(|e| ctx("rename", &from, e))?;
                }
            }
            std::fs::rename(&self.path, backup_path(&self.path, 1))
                .map_err(|e| ctx("rename", &self.path, e))?;
        }
        let (file, size) = open_file(&self.path)?;
        st.writer = BufWriter::with_capacity(256 * 1024, file);
        st.size = size;
        st.last_flush = Instant::now();
        st.dirty = false;
        Ok(())
    }

    /// Writes one newline-terminated line, rotating first when it would overflow the file.
    fn write_line(&self, line: &[u8]) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = self.rotation
            && st.size > 0
            && st.size + line.len() as u64 > r.max_bytes
        {
            self.rotate(&mut st, r.max_backups)?;
        }
        st.writer.write_all(line).map_err(|e| {
            format!(
                "file exporter: cannot write to {}: {}",
                self.path.display(),
                io_error_text(&e)
            )
        })?;
        st.size += line.len() as u64;
        st.dirty = true;
        if st.last_flush.elapsed() >= self.flush_interval {
            self.flush(&mut st).map_err(|e| {
                format!(
                    "file exporter: cannot write to {}: {}",
                    self.path.display(),
                    io_error_text(&e)
                )
            })?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Exporter for FileExporter {
    async fn export(&self, data: &Payload) -> Result<Exported, ExportError> {
        let mut line = meshgate_pdata::json::encode(data);
        line.push(b'\n');
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.write_line(&line))
            .await
            .map_err(|e| ExportError::permanent(format!("file exporter: write task failed: {e}")))?
            .map_err(ExportError::permanent)?;
        Ok(Exported::default())
    }

    async fn shutdown(&self) {
        let inner = self.inner.clone();
        inner.closed.store(true, Ordering::Release);
        let res = tokio::task::spawn_blocking(move || {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            inner.flush(&mut st)?;
            st.writer.get_ref().sync_all()
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(path = %self.inner.path.display(), "file exporter: final flush failed: {e}")
            }
            Err(e) => {
                warn!(path = %self.inner.path.display(), "file exporter: final flush failed: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil;
    use meshgate_pdata::attributes::kv_str;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir()
                .join(format!("meshgate-exporters-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn decode_lines(path: &Path) -> Vec<Payload> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let signal =
                    if v.get("resourceSpans").is_some() || v.get("resource_spans").is_some() {
                        Signal::Traces
                    } else if v.get("resourceLogs").is_some() || v.get("resource_logs").is_some() {
                        Signal::Logs
                    } else {
                        Signal::Metrics
                    };
                meshgate_pdata::json::decode(signal, l.as_bytes()).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn writes_one_decodable_line_per_batch_and_flushes_on_shutdown() {
        let dir = TempDir::new("lines");
        let path = dir.0.join("nested/out.jsonl");
        let reg = meshgate_engine::Registry::new();
        let cfg = serde_json::json!({"path": path, "flush_interval": "1h"});
        let exp = FileExporterFactory
            .build(testutil::ctx(&cfg, &reg))
            .unwrap();
        let batches = vec![testutil::traces(3), testutil::logs(2), testutil::traces(1)];
        for b in &batches {
            exp.export(b).await.unwrap();
        }
        // Buffered for up to an hour: nothing on disk yet.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        exp.shutdown().await;
        assert_eq!(decode_lines(&path), batches);
    }

    #[tokio::test]
    async fn flushes_within_flush_interval_without_new_data() {
        let dir = TempDir::new("ticker");
        let path = dir.0.join("out.jsonl");
        let exp = FileExporter::open(path.clone(), None, Duration::from_millis(50)).unwrap();
        // The first write flushes only if the interval has passed since open.
        exp.export(&testutil::metrics(2)).await.unwrap();
        exp.export(&testutil::metrics(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            decode_lines(&path),
            vec![testutil::metrics(2), testutil::metrics(1)]
        );
    }

    #[tokio::test]
    async fn appends_to_existing_file() {
        let dir = TempDir::new("append");
        let path = dir.0.join("out.jsonl");
        for _ in 0..2 {
            let exp = FileExporter::open(path.clone(), None, Duration::ZERO).unwrap();
            exp.export(&testutil::logs(1)).await.unwrap();
            exp.shutdown().await;
        }
        assert_eq!(decode_lines(&path).len(), 2);
    }

    #[tokio::test]
    async fn rotates_and_keeps_max_backups() {
        let dir = TempDir::new("rotate");
        let path = dir.0.join("out.jsonl");
        let one = testutil::traces(2);
        let line_len = meshgate_pdata::json::encode(&one).len() as u64 + 1;
        // Room for two lines per file.
        let rotation = Rotation {
            max_bytes: line_len * 2 + 1,
            max_backups: 2,
        };
        let exp = FileExporter::open(path.clone(), Some(rotation), Duration::ZERO).unwrap();
        let mut all = Vec::new();
        for i in 0..7 {
            let mut p = testutil::traces(2);
            if let Payload::Traces(t) = &mut p {
                t.resource_spans[0].scope_spans[0].spans[0].name = format!("GET /{i}"); // same length
            }
            exp.export(&p).await.unwrap();
            all.push(p);
        }
        exp.shutdown().await;
        // 7 lines, 2 per file: .2 = lines 2-3, .1 = lines 4-5, current = line 6; lines 0-1 deleted.
        assert_eq!(decode_lines(&path), all[6..].to_vec());
        assert_eq!(decode_lines(&backup_path(&path, 1)), all[4..6].to_vec());
        assert_eq!(decode_lines(&backup_path(&path, 2)), all[2..4].to_vec());
        assert!(!backup_path(&path, 3).exists());
    }

    #[tokio::test]
    async fn rotation_from_config_in_megabytes() {
        let dir = TempDir::new("rotate-mib");
        let path = dir.0.join("big.jsonl");
        let reg = meshgate_engine::Registry::new();
        let cfg = serde_json::json!({
            "path": path,
            "rotation": {"max_megabytes": 1, "max_backups": 1},
            "flush_interval": "0s",
            "format": "json",
        });
        let exp = FileExporterFactory
            .build(testutil::ctx(&cfg, &reg))
            .unwrap();
        // ~600 KiB per line: the second line does not fit in 1 MiB.
        let mut big = testutil::logs(1);
        if let Payload::Logs(l) = &mut big {
            l.resource_logs[0].scope_logs[0].log_records[0]
                .attributes
                .push(kv_str("blob", &"x".repeat(600 * 1024)));
        }
        for _ in 0..3 {
            exp.export(&big).await.unwrap();
        }
        exp.shutdown().await;
        assert_eq!(decode_lines(&path), vec![big.clone()]);
        assert_eq!(decode_lines(&backup_path(&path, 1)), vec![big]);
        assert!(!backup_path(&path, 2).exists());
    }

    #[test]
    fn build_fails_clearly_when_the_file_cannot_be_opened() {
        let dir = TempDir::new("bad");
        std::fs::create_dir_all(&dir.0).unwrap();
        let blocker = dir.0.join("not-a-dir");
        std::fs::write(&blocker, b"x").unwrap();
        let reg = meshgate_engine::Registry::new();
        let cfg = serde_json::json!({"path": blocker.join("out.jsonl")});
        let err = FileExporterFactory
            .build(testutil::ctx(&cfg, &reg))
            .map(|_| ())
            .unwrap_err();
        assert!(err.starts_with("file exporter: cannot "), "{err}");
        assert!(err.contains("not-a-dir"), "{err}");
        assert!(!err.contains("os error"), "{err}");

        // A directory as the path.
        let cfg = serde_json::json!({"path": dir.0});
        let err = FileExporterFactory
            .build(testutil::ctx(&cfg, &reg))
            .map(|_| ())
            .unwrap_err();
        assert!(err.starts_with("file exporter: cannot open"), "{err}");

        for bad in [
            serde_json::json!({}),
            serde_json::json!({"path": "/tmp/x", "format": "proto"}),
            serde_json::json!({"path": "/tmp/x", "rotation": {"max_megabytes": 0}}),
            serde_json::json!({"path": "/tmp/x", "rotation": {"max_files": 3}}),
        ] {
            assert!(
                FileExporterFactory
                    .build(testutil::ctx(&bad, &reg))
                    .is_err(),
                "{bad}"
            );
        }
        assert!(!FileExporterFactory.uses_queue_and_retry());
    }
}
