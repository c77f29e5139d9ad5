//! `memory_limiter`: refuses new data while the process uses too much memory, so overload
//! turns into a retryable refusal to the client instead of an out-of-memory kill. Options
//! and semantics follow the OpenTelemetry Collector's memory limiter.
//!
//! A background task samples the process's resident memory every `check_interval`. When it
//! reaches the soft limit (`limit - spike_limit`), the processor's [`AdmissionGate`] refuses
//! new data with [`RefusalReason::MemoryLimit`] until usage drops below the soft limit again.
//! Data already admitted passes through unchanged. Rust has no garbage collector to force,
//! so unlike the collector there is no GC step at the hard limit: refusing is the only lever.

use meshgate_config::DurationValue;
use meshgate_engine::telemetry::Gauge;
use meshgate_engine::{
    AdmissionGate, BuildContext, Factory, Processor, ProcessorContext, ProcessorFactory, Refusal,
    RefusalReason, Registry,
};
use meshgate_pdata::{Payload, Signal};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// Config of the `memory_limiter` processor. Set exactly one of `limit_mib` and
/// `limit_percentage`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLimiterConfig {
    /// How often memory usage is measured. Must be greater than zero. Default: `1s`.
    pub check_interval: DurationValue,
    /// Hard memory limit of the process in MiB (resident memory). `0` means unset; then
    /// `limit_percentage` must be set. Default: `0`.
    pub limit_mib: u64,
    /// Headroom below `limit_mib` for spikes between two measurements, in MiB: new data is
    /// refused from `limit_mib - spike_limit_mib` on (the soft limit). Must be smaller than
    /// `limit_mib`. `0` means the default: 20% of the limit.
    pub spike_limit_mib: u64,
    /// Hard memory limit as a percentage (1-100) of the memory available: the cgroup v2 limit
    /// (`/sys/fs/cgroup/memory.max`) when set, else the machine's total memory
    /// (`MemTotal` in `/proc/meminfo`). `0` means unset; then `limit_mib` must be set.
    /// Default: `0`.
    pub limit_percentage: u32,
    /// Spike headroom as a percentage of the available memory, used with
    /// `limit_percentage`. Must be smaller than `limit_percentage`. `0` means the default:
    /// 20% of the limit.
    pub spike_limit_percentage: u32,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        Self {
            check_interval: DurationValue(Duration::from_secs(1)),
            limit_mib: 0,
            spike_limit_mib: 0,
            limit_percentage: 0,
            spike_limit_percentage: 0,
        }
    }
}

/// The limits a memory limiter enforces, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The hard limit.
    pub limit: u64,
    /// Headroom below the hard limit; the soft limit is `limit - spike`.
    pub spike: u64,
}

impl Limits {
    /// From which usage on new data is refused.
    pub fn soft_limit(&self) -> u64 {
        self.limit.saturating_sub(self.spike)
    }
}

impl MemoryLimiterConfig {
    /// Resolves the configured limits; `total_memory` is only called for percentages.
    pub fn limits(
        &self,
        total_memory: impl FnOnce() -> Result<u64, String>,
    ) -> Result<Limits, String> {
        if self.check_interval.0.is_zero() {
            return Err("`check_interval` must be greater than zero".into());
        }
        match (self.limit_mib > 0, self.limit_percentage > 0) {
            (true, true) => {
                Err("set exactly one of `limit_mib` and `limit_percentage`, not both".into())
            }
            (false, false) => Err(
                "set `limit_mib` (MiB) or `limit_percentage` (of total memory); neither is set"
                    .into(),
            ),
            (true, false) => {
                if self.spike_limit_percentage > 0 {
                    return Err(
                        "`spike_limit_percentage` goes with `limit_percentage`; with \
                                `limit_mib` use `spike_limit_mib`"
                            .into(),
                    );
                }
                if self.spike_limit_mib >= self.limit_mib {
                    return Err(format!(
                        "`spike_limit_mib` ({}) must be smaller than `limit_mib` ({})",
                        self.spike_limit_mib, self.limit_mib
                    ));
                }
                let limit = self.limit_mib.saturating_mul(MIB);
                let spike = match self.spike_limit_mib {
                    0 => limit / 5,
                    s => s * MIB,
                };
                Ok(Limits { limit, spike })
            }
            (false, true) => {
                if self.spike_limit_mib > 0 {
                    return Err("`spike_limit_mib` goes with `limit_mib`; with \
                                `limit_percentage` use `spike_limit_percentage`"
                        .into());
                }
                if self.limit_percentage > 100 {
                    return Err(format!(
                        "`limit_percentage` ({}) must be between 1 and 100",
                        self.limit_percentage
                    ));
                }
                if self.spike_limit_percentage >= self.limit_percentage {
                    return Err(format!(
                        "`spike_limit_percentage` ({}) must be smaller than `limit_percentage` ({})",
                        self.spike_limit_percentage, self.limit_percentage
                    ));
                }
                let total = total_memory()?;
                let limit = total / 100 * u64::from(self.limit_percentage);
                let spike = match self.spike_limit_percentage {
                    0 => limit / 5,
                    s => total / 100 * u64::from(s),
                };
                Ok(Limits { limit, spike })
            }
        }
    }
}

/// Measures current memory usage in bytes; `None` when it cannot be read.
pub type Sampler = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// Resident memory of this process: `VmRSS` of `/proc/self/status`, else resident pages of
/// `/proc/self/statm` times 4 KiB.
pub fn process_rss() -> Option<u64> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    {
        return Some(kib * 1024);
    }
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Memory available to this process: the cgroup v2 limit when it is a number, else (or if
/// larger) `MemTotal` from `/proc/meminfo`.
pub fn total_memory() -> Result<u64, String> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    match (cgroup, meminfo) {
        (Some(c), Some(m)) => Ok(c.min(m)),
        (Some(c), None) => Ok(c),
        (None, Some(m)) => Ok(m),
        (None, None) => Err(
            "cannot determine total memory for `limit_percentage` (read neither \
                             /sys/fs/cgroup/memory.max nor MemTotal in /proc/meminfo); use \
                             `limit_mib`"
                .into(),
        ),
    }
}

/// Factory of the `memory_limiter` processor.
pub struct MemoryLimiterFactory;

impl Factory for MemoryLimiterFactory {
    fn type_name(&self) -> &'static str {
        "memory_limiter"
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn description(&self) -> &'static str {
        "Refuses new data (retryably) while process memory is above a soft limit."
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(MemoryLimiterConfig)
    }
    fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        serde_json::from_value::<MemoryLimiterConfig>(config.clone())
            .map_err(|e| e.to_string())?
            .limits(total_memory)
            .map(|_| ())
    }
}

impl ProcessorFactory for MemoryLimiterFactory {
    fn build(
        &self,
        ctx: BuildContext<'_>,
        pipeline: &ProcessorContext,
    ) -> Result<Box<dyn Processor>, String> {
        let cfg: MemoryLimiterConfig = ctx.parse()?;
        let limits = cfg
            .limits(total_memory)
            .map_err(|e| format!("{}: {e}", ctx.id))?;
        if process_rss().is_none() {
            return Err(format!(
                "{}: cannot measure process memory (/proc/self/status and /proc/self/statm are \
                 unreadable); memory_limiter needs Linux procfs",
                ctx.id
            ));
        }
        let limiter = MemoryLimiter::new(
            &ctx.id,
            &pipeline.pipeline,
            limits,
            cfg.check_interval.0,
            Arc::new(process_rss),
            ctx.telemetry,
        )
        .map_err(|e| format!("{}: {e}", ctx.id))?;
        Ok(Box::new(limiter))
    }
}

/// State shared by the processor, its sampling task and its admission gate.
struct State {
    id: String,
    pipeline: String,
    limits: Limits,
    retry_after: Duration,
    refusing: AtomicBool,
    usage: AtomicU64,
    usage_gauge: Gauge,
    refusing_gauge: Gauge,
}

impl State {
    /// Records one usage measurement and flips the refusal state when it crosses the soft
    /// limit.
    fn observe(&self, usage: u64) {
        self.usage.store(usage, Ordering::Relaxed);
        self.usage_gauge
            .set(i64::try_from(usage).unwrap_or(i64::MAX));
        let soft = self.limits.soft_limit();
        let refuse = usage >= soft;
        let was = self.refusing.swap(refuse, Ordering::Relaxed);
        self.refusing_gauge.set(i64::from(refuse));
        match (was, refuse) {
            (false, true) => tracing::warn!(
                processor = %self.id,
                pipeline = %self.pipeline,
                usage_mib = usage / MIB,
                soft_limit_mib = soft / MIB,
                limit_mib = self.limits.limit / MIB,
                "memory usage is above the soft limit; refusing new data"
            ),
            (true, false) => tracing::info!(
                processor = %self.id,
                pipeline = %self.pipeline,
                usage_mib = usage / MIB,
                soft_limit_mib = soft / MIB,
                "memory usage is below the soft limit again; accepting data"
            ),
            _ => {}
        }
    }
}

impl AdmissionGate for State {
    fn check(&self) -> Result<(), Refusal> {
        if !self.refusing.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(Refusal {
            reason: RefusalReason::MemoryLimit,
            retry_after: self.retry_after,
            message: format!(
                "memory usage {} MiB is above the soft limit {} MiB ({}); retry later",
                self.usage.load(Ordering::Relaxed) / MIB,
                self.limits.soft_limit() / MIB,
                self.id
            ),
        })
    }
}

/// Aborts the sampling task when the processor is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running memory limiter.
pub struct MemoryLimiter {
    state: Arc<State>,
    sampler: Sampler,
    _task: AbortOnDrop,
}

impl MemoryLimiter {
    /// Starts a limiter that measures usage with `sampler` now and then every
    /// `check_interval` on a background task (so it must be called inside a tokio runtime).
    /// The task stops when the limiter is dropped. Tests pass a fake sampler.
    pub fn new(
        id: &str,
        pipeline: &str,
        limits: Limits,
        check_interval: Duration,
        sampler: Sampler,
        telemetry: &Registry,
    ) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "memory_limiter must be started inside the tokio runtime".to_string())?;
        let state = Arc::new(State {
            id: id.to_string(),
            pipeline: pipeline.to_string(),
            limits,
            retry_after: check_interval.max(Duration::from_secs(1)),
            refusing: AtomicBool::new(false),
            usage: AtomicU64::new(0),
            usage_gauge: telemetry.gauge(
                "meshgate_processor_memory_limiter_usage_bytes",
                "Process memory usage last measured by a memory_limiter, in bytes.",
                &[("processor", id)],
            ),
            refusing_gauge: telemetry.gauge(
                "meshgate_processor_memory_limiter_refusing",
                "1 while a memory_limiter refuses new data, else 0.",
                &[("processor", id)],
            ),
        });
        if let Some(u) = sampler() {
            state.observe(u);
        }
        let task = runtime.spawn({
            let state = Arc::downgrade(&state);
            let sampler = sampler.clone();
            async move {
                let mut tick = tokio::time::interval(check_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await; // The first tick is immediate; usage was just measured.
                loop {
                    tick.tick().await;
                    let Some(state) = state.upgrade() else { break };
                    if let Some(u) = sampler() {
                        state.observe(u);
                    }
                }
            }
        });
        Ok(Self {
            state,
            sampler,
            _task: AbortOnDrop(task),
        })
    }

    /// Measures usage right now (besides the periodic measurement).
    pub fn check_now(&self) {
        if let Some(u) = (self.sampler)() {
            self.state.observe(u);
        }
    }

    /// Whether new data is being refused.
    pub fn is_refusing(&self) -> bool {
        self.state.refusing.load(Ordering::Relaxed)
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.state.limits
    }
}

impl Processor for MemoryLimiter {
    fn process(&mut self, data: Payload, out: &mut Vec<Payload>) {
        out.push(data);
    }

    fn admission_gate(&self) -> Option<Arc<dyn AdmissionGate>> {
        Some(self.state.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{build, build_err, n_spans, run};
    use serde_json::json;

    fn fake(usage: &Arc<AtomicU64>) -> Sampler {
        let usage = usage.clone();
        Arc::new(move || Some(usage.load(Ordering::Relaxed)))
    }

    fn limits_of(cfg: serde_json::Value, total: u64) -> Result<Limits, String> {
        let c: MemoryLimiterConfig = serde_json::from_value(cfg).unwrap();
        c.limits(|| Ok(total))
    }

    #[tokio::test(start_paused = true)]
    async fn gate_flips_with_sampled_usage() {
        let r = Registry::new();
        let usage = Arc::new(AtomicU64::new(100 * MIB));
        let limits = Limits {
            limit: 1000 * MIB,
            spike: 200 * MIB,
        };
        let ml = MemoryLimiter::new(
            "memory_limiter/x",
            "traces",
            limits,
            Duration::from_secs(1),
            fake(&usage),
            &r,
        )
        .unwrap();
        let gate = ml.admission_gate().unwrap();
        assert!(gate.check().is_ok());
        let gauge = |name| {
            r.gauge(name, "", &[("processor", "memory_limiter/x")])
                .get()
        };
        assert_eq!(
            gauge("meshgate_processor_memory_limiter_usage_bytes"),
            (100 * MIB) as i64
        );

        // Above the soft limit (800 MiB): refused after the next periodic check.
        usage.store(912 * MIB, Ordering::Relaxed);
        assert!(gate.check().is_ok(), "not measured yet");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let refusal = gate.check().unwrap_err();
        assert_eq!(refusal.reason, RefusalReason::MemoryLimit);
        assert_eq!(refusal.retry_after, Duration::from_secs(1));
        assert_eq!(
            refusal.message,
            "memory usage 912 MiB is above the soft limit 800 MiB (memory_limiter/x); retry later"
        );
        assert!(ml.is_refusing());
        assert_eq!(gauge("meshgate_processor_memory_limiter_refusing"), 1);

        // Exactly at the soft limit still refuses; below it accepts again.
        usage.store(800 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(gate.check().is_err());
        usage.store(799 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(gate.check().is_ok());
        assert_eq!(gauge("meshgate_processor_memory_limiter_refusing"), 0);

        // check_now measures immediately.
        usage.store(2000 * MIB, Ordering::Relaxed);
        ml.check_now();
        assert!(gate.check().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn sampling_task_stops_when_dropped() {
        let calls = Arc::new(AtomicU64::new(0));
        let sampler: Sampler = {
            let calls = calls.clone();
            Arc::new(move || {
                calls.fetch_add(1, Ordering::Relaxed);
                Some(0)
            })
        };
        let ml = MemoryLimiter::new(
            "m",
            "traces",
            Limits {
                limit: MIB,
                spike: 0,
            },
            Duration::from_secs(1),
            sampler,
            &Registry::new(),
        )
        .unwrap();
        let gate = ml.admission_gate().unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 3); // at start, 1s, 2s
        drop(ml);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert!(gate.check().is_ok());
    }

    #[tokio::test]
    async fn built_processor_passes_data_through_and_has_a_gate() {
        let r = Registry::new();
        let mut p = build(
            &MemoryLimiterFactory,
            "memory_limiter",
            json!({"limit_mib": 1_000_000, "check_interval": "50ms"}),
            Signal::Traces,
            &r,
        )
        .unwrap();
        let gate = p.admission_gate().expect("memory_limiter has a gate");
        assert!(gate.check().is_ok());
        let out = run(p.as_mut(), n_spans(3));
        assert_eq!(out, vec![n_spans(3)]);
        let usage = r
            .gauge(
                "meshgate_processor_memory_limiter_usage_bytes",
                "",
                &[("processor", "memory_limiter")],
            )
            .get();
        assert!(usage > 0, "real RSS measured at build");
    }

    #[test]
    fn limits_from_config() {
        assert_eq!(
            limits_of(json!({"limit_mib": 1000}), 0).unwrap(),
            Limits {
                limit: 1000 * MIB,
                spike: 200 * MIB
            }
        );
        assert_eq!(
            limits_of(json!({"limit_mib": 1000, "spike_limit_mib": 100}), 0).unwrap(),
            Limits {
                limit: 1000 * MIB,
                spike: 100 * MIB
            }
        );
        assert_eq!(
            limits_of(json!({"limit_percentage": 50}), 4000 * MIB).unwrap(),
            Limits {
                limit: 2000 * MIB,
                spike: 400 * MIB
            }
        );
        assert_eq!(
            limits_of(
                json!({"limit_percentage": 80, "spike_limit_percentage": 25}),
                4000 * MIB
            )
            .unwrap()
            .soft_limit(),
            2200 * MIB
        );
        let t = total_memory().unwrap();
        assert!(t > 0);
    }

    #[test]
    fn config_errors() {
        let cases = [
            (json!({}), "set `limit_mib` (MiB) or `limit_percentage`"),
            (
                json!({"limit_mib": 10, "limit_percentage": 5}),
                "exactly one of `limit_mib` and `limit_percentage`",
            ),
            (
                json!({"limit_mib": 10, "spike_limit_mib": 10}),
                "`spike_limit_mib` (10) must be smaller than `limit_mib` (10)",
            ),
            (json!({"limit_percentage": 101}), "between 1 and 100"),
            (
                json!({"limit_percentage": 50, "spike_limit_percentage": 60}),
                "must be smaller than `limit_percentage` (50)",
            ),
            (
                json!({"limit_mib": 10, "spike_limit_percentage": 5}),
                "with `limit_mib` use `spike_limit_mib`",
            ),
            (
                json!({"limit_mib": 10, "check_interval": "0s"}),
                "`check_interval` must be greater than zero",
            ),
            (
                json!({"limit_mib": 10, "ballast_size_mib": 5}),
                "unknown field `ballast_size_mib`",
            ),
        ];
        for (cfg, want) in cases {
            let e = build_err(&MemoryLimiterFactory, cfg.clone(), Signal::Metrics);
            assert!(e.contains(want), "{cfg}: {e}");
            assert!(e.starts_with("p: "), "{e}");
        }
    }
}
