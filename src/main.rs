//! `meshgate`: the telemetry gateway binary. `run` starts the pipelines from config files,
//! `validate` checks config files and reports every problem, `components` lists what can be
//! configured, `schema` prints the config's JSON Schema, `query` runs SQL over the Parquet lake.

use clap::{Parser, Subcommand};
use meshgate_config::{Catalog, Diagnostic, Format, Loaded, Severity};
use meshgate_engine::{Components, Health, Registry, Service};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// mimalloc instead of the system allocator: decoding and freeing OTLP requests is
/// allocation-heavy (dozens of strings per span), and glibc's free-list consolidation showed
/// up as ~15% of the pass-through profile (see benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The pipeline used by `meshgate run` without `-c`.
const DEFAULT_PIPELINE: &str = include_str!("../pipelines/default.yaml");

#[derive(Parser)]
#[command(
    name = "meshgate",
    version,
    about = "A telemetry gateway for service meshes: OTLP in, processed, batched and exported.",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without -c, runs the embedded default pipeline (OTLP gRPC :4317 and
    /// HTTP :4318 on 127.0.0.1, batch, a Parquet lake under ./meshgate-data/lake).
    Run {
        /// Config file (YAML, TOML or JSON). Repeat to merge several; later files win.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Vec<PathBuf>,
        /// How long a shutdown (SIGTERM/SIGINT) may take to deliver queued data.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        drain_timeout: Duration,
    },
    /// Check config files and print every problem found; exit 1 if there is an error.
    Validate {
        /// Config file. Repeat to merge several; later files win.
        #[arg(short = 'c', long = "config", value_name = "FILE", required = true)]
        config: Vec<PathBuf>,
    },
    /// List every component type and the signals it supports.
    Components,
    /// Print the JSON Schema of the config file format.
    Schema,
    /// Run SQL over the Parquet lake written by the `parquet` exporter. Tables: `spans`,
    /// `logs`, `metrics`, each with the partition columns `date` ('YYYY-MM-DD') and `hour`
    /// ('00'-'23', UTC); filter on them to read only the folders needed.
    Query {
        /// The lake directory (the `path` of the parquet exporter). Default: the default
        /// pipeline's lake, `$MESHGATE_DATA_DIR/lake` (`./meshgate-data/lake`).
        #[arg(long, value_name = "DIR", default_value_os_t = default_lake())]
        lake: PathBuf,
        /// The SQL query (DataFusion dialect), e.g.
        /// "SELECT service_name, count(*) FROM spans GROUP BY 1".
        #[arg(value_name = "SQL")]
        sql: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
        format: QueryFormat,
    },
}

/// Output formats of `meshgate query`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum QueryFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row.
    Json,
}

/// Where the default pipeline writes its lake.
fn default_lake() -> PathBuf {
    std::env::var_os("MESHGATE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./meshgate-data"))
        .join("lake")
}

/// Every component this build of meshgate knows.
fn components() -> Components {
    let c = Components::default();
    let c = meshgate_receivers::register(c);
    let c = meshgate_processors::register(c);
    let c = meshgate_connectors::register(c);
    meshgate_exporters::register(c)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Components => {
            print_components();
            ExitCode::SUCCESS
        }
        Command::Schema => {
            let schema = meshgate_config::config_schema(&components());
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Query { lake, sql, format } => query(&lake, &sql, format),
        Command::Validate { config } => {
            let comps = components();
            match load_and_validate(&config, &comps) {
                Some(_) => {
                    eprintln!("meshgate: config is valid");
                    ExitCode::SUCCESS
                }
                None => ExitCode::FAILURE,
            }
        }
        Command::Run {
            config,
            drain_timeout,
        } => {
            let comps = components();
            let Some(cfg) = load_and_validate(&config, &comps) else {
                return ExitCode::FAILURE;
            };
            init_logs(&cfg.service.telemetry.logs);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("meshgate")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("meshgate: error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(cfg, comps, drain_timeout)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("meshgate: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Loads the files (or the embedded default), validates, prints diagnostics to stderr.
fn load_and_validate(files: &[PathBuf], comps: &Components) -> Option<meshgate_config::Config> {
    let loaded = if files.is_empty() {
        Loaded::from_str(DEFAULT_PIPELINE, Format::Yaml, "<default pipeline>")
    } else {
        Loaded::from_files(files)
    };
    let loaded = match loaded {
        Ok(l) => l,
        Err(diags) => {
            report(&diags);
            return None;
        }
    };
    let (config, mut diags) = meshgate_config::validate(&loaded, comps as &dyn Catalog);
    // What the schema cannot express (field relations, regexes, URLs), checked by each
    // component the way `run` would.
    let mut ok = config.is_some();
    if let Some(cfg) = &config {
        for (path, message) in comps.check(cfg) {
            ok = false;
            diags.push(Diagnostic::error(path.clone(), message).at(loaded.locate(&path)));
        }
    }
    report(&diags);
    config.filter(|_| ok)
}

fn report(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        eprintln!(
            "meshgate: {errors} error{} in the config",
            if errors == 1 { "" } else { "s" }
        );
    }
}

/// `meshgate query`: runs `sql` over the lake and prints the result to stdout.
fn query(lake: &std::path::Path, sql: &str, format: QueryFormat) -> ExitCode {
    let format = match format {
        QueryFormat::Table => meshgate_lake::OutputFormat::Table,
        QueryFormat::Csv => meshgate_lake::OutputFormat::Csv,
        QueryFormat::Json => meshgate_lake::OutputFormat::Json,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgate: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    match rt.block_on(meshgate_lake::query::query(lake, sql, format, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshgate: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_components() {
    let mut last_kind = None;
    for c in components().list() {
        if last_kind != Some(c.kind) {
            println!("{}:", c.kind.section());
            last_kind = Some(c.kind);
        }
        let list = |s: &[meshgate_pdata::Signal]| {
            s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
        };
        let signals = match c.produces {
            [] => list(c.signals),
            produces => format!("{} -> {}", list(c.signals), list(produces)),
        };
        println!("  {:<22} {:<22} {}", c.type_name, signals, c.description);
    }
}

fn init_logs(cfg: &meshgate_config::LogsTelemetry) {
    use tracing_subscriber::EnvFilter;
    // MESHGATE_LOG overrides the configured level (same syntax as RUST_LOG).
    let filter = std::env::var("MESHGATE_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&cfg.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.format {
        meshgate_config::LogFormat::Json => builder.json().init(),
        meshgate_config::LogFormat::Text => builder.with_target(false).init(),
    }
}

async fn run(
    cfg: meshgate_config::Config,
    comps: Components,
    drain_timeout: Duration,
) -> Result<(), String> {
    let telemetry = Registry::new();
    let health = Arc::new(Health::default());
    let api = meshgate_engine::ApiRoutes::default();
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (admin_addr, admin_task) = meshgate_engine::admin::serve(
        &cfg.service.telemetry.admin.endpoint,
        telemetry.clone(),
        health.clone(),
        api.clone(),
        async move {
            let _ = admin_stop_rx.await;
        },
    )
    .await?;
    tracing::info!(
        "admin endpoint on http://{admin_addr} (/metrics, /healthz, /readyz; with a \
         servicegraph connector also /service-map and /api/v1/topology)"
    );
    let service = Service::start(&cfg, &comps, &telemetry, &api, health).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: draining for up to {drain_timeout:?}");
    let report = service.shutdown(drain_timeout).await;
    if report.complete {
        tracing::info!("drained in {:?}; all accepted data delivered", report.took);
    } else {
        tracing::warn!(
            "drain ended after {:?}: {} item(s) could not be delivered (see meshgate_exporter_dropped_items_total{{reason=\"shutdown\"}})",
            report.took,
            report.dropped
        );
    }
    let _ = admin_stop_tx.send(());
    let _ = admin_task.await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use meshgate_config::{Catalog, Kind};

    /// Every top-level option of every component says its default (or that it is required),
    /// and unknown keys are refused: the README tables and editors' hints come from these
    /// schemas, and a typo must never be ignored.
    #[test]
    fn every_component_option_states_its_default_and_unknown_keys_are_refused() {
        let comps = super::components();
        let mut problems = Vec::new();
        for c in comps.list() {
            let spec = comps.component(c.kind, c.type_name).expect("listed");
            let schema = spec.schema.as_value();
            let what = format!("{}.{}", c.kind.section(), c.type_name);
            if schema["additionalProperties"] != false {
                problems.push(format!("{what}: unknown keys are not refused"));
            }
            let Some(props) = schema["properties"].as_object() else {
                problems.push(format!("{what}: no properties"));
                continue;
            };
            for (name, p) in props {
                let d = p["description"].as_str().unwrap_or_default();
                if !(d.contains("Default")
                    || d.contains("default")
                    || d.to_lowercase().contains("required"))
                {
                    problems.push(format!("{what}.{name}: {d:?}"));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(comps.list().iter().any(|c| c.kind == Kind::Connector));
    }
}
