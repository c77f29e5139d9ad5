//! The command line: `validate` reports every problem with file, key path and line; every
//! pipeline in `pipelines/` validates; `components`, `--version` and `schema` work; the
//! checked-in JSON Schema matches the code; `run` with no `-c` serves the default pipeline.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn meshgate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(args)
        .output()
        .expect("run meshgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_pipeline_file_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let (ok, _, err) = meshgate(&["validate", "-c", path.to_str().unwrap()]);
        assert!(ok, "{} does not validate:\n{err}", path.display());
        assert!(!err.contains("warning"), "{}: {err}", path.display());
        n += 1;
    }
    assert!(
        n >= 3,
        "expected the pipelines/ directory to hold ready configs, found {n}"
    );
}

#[test]
fn validate_reports_every_problem_with_file_key_and_line() {
    let dir = Scratch::new("validate");
    let bad = dir.path("bad.yaml");
    std::fs::write(
        &bad,
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpiont: 127.0.0.1:4317\n\
         processors:\n  batch:\n    send_batch_size: -3\n  bacth/x:\n\
         exporters:\n  debug:\n    verbosity: loud\n  file:\n    path: /tmp/x.jsonl\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp, zipkin]\n      processors: [batch]\n      exporters: [debug]\n    logs:\n      receivers: [otlp]\n",
    )
    .unwrap();
    let (ok, _, err) = meshgate(&["validate", "-c", bad.to_str().unwrap()]);
    assert!(!ok);
    let f = bad.display().to_string();
    for needle in [
        format!("{f}:5: receivers.otlp.protocols.grpc.endpiont"),
        "did you mean `endpoint`".to_string(),
        format!("{f}:8: processors.batch.send_batch_size"),
        "unknown processor type `bacth`".to_string(),
        format!("{f}:12: exporters.debug.verbosity"),
        "`zipkin`".to_string(),
        "service.pipelines.logs".to_string(),
        "warning".to_string(),
    ] {
        assert!(err.contains(&needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn validate_runs_each_components_own_checks() {
    let dir = Scratch::new("semantic");
    let bad = dir.path("bad.yaml");
    std::fs::write(
        &bad,
        "receivers:\n  otlp:\n    protocols: {}\n\
         processors:\n  batch:\n    send_batch_size: 100\n    send_batch_max_size: 10\n  memory_limiter:\n    limit_mib: 100\n    limit_percentage: 50\n\
         exporters:\n  otlp:\n    endpoint: https://backend:4317\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [memory_limiter, batch]\n      exporters: [otlp]\n",
    )
    .unwrap();
    let (ok, _, err) = meshgate(&["validate", "-c", bad.to_str().unwrap()]);
    assert!(!ok);
    let f = bad.display().to_string();
    for needle in [
        format!("{f}:2: receivers.otlp: enable at least one of"),
        format!("{f}:5: processors.batch: `send_batch_max_size` (10)"),
        format!("{f}:8: processors.memory_limiter: set exactly one of"),
        format!("{f}:12: exporters.otlp: endpoint `https://backend:4317`: TLS is not supported"),
        "4 errors".to_string(),
    ] {
        assert!(err.contains(&needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn validate_refuses_a_signal_a_component_takes_only_with_a_key_set() {
    let dir = Scratch::new("signal-requires");
    let bad = dir.path("bad.yaml");
    std::fs::write(
        &bad,
        "receivers:\n  otlp:\n    protocols:\n      grpc: {}\n\
         exporters:\n  elasticsearch:\n    endpoints: [http://127.0.0.1:9200]\n  elasticsearch/deps:\n    endpoints: [http://127.0.0.1:9200]\n    dependencies: {}\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      exporters: [elasticsearch/deps, elasticsearch]\n    traces:\n      receivers: [otlp]\n      exporters: [elasticsearch]\n",
    )
    .unwrap();
    let (ok, _, err) = meshgate(&["validate", "-c", bad.to_str().unwrap()]);
    assert!(!ok);
    let f = bad.display().to_string();
    for needle in [
        format!(
            "{f}:15: service.pipelines.metrics.exporters[1]: exporter `elasticsearch` takes signal `metrics` only with `exporters.elasticsearch.dependencies` set"
        ),
        "add `dependencies:` to `exporters.elasticsearch` (`dependencies: {}` for its defaults), or remove `elasticsearch` from pipeline `metrics`".to_string(),
        "1 error".to_string(),
    ] {
        assert!(err.contains(&needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn validate_accepts_env_substitution_and_merges_files() {
    let dir = Scratch::new("merge");
    let a = dir.path("a.yaml");
    let b = dir.path("b.yaml");
    std::fs::write(
        &a,
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: ${env:MG_TEST_UNSET_VAR:-127.0.0.1:4317}\n\
         exporters:\n  debug:\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
    )
    .unwrap();
    // The second file overrides the pipeline's exporter; `debug` stays defined but unused.
    std::fs::write(
        &b,
        "exporters:\n  file:\n    path: $${literal}.jsonl\nservice:\n  pipelines:\n    traces:\n      exporters: [file]\n",
    )
    .unwrap();
    let (ok, _, err) = meshgate(&[
        "validate",
        "-c",
        a.to_str().unwrap(),
        "-c",
        b.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning") && err.contains("exporters.debug"),
        "{err}"
    );
}

#[test]
fn components_version_and_help() {
    let (ok, out, _) = meshgate(&["components"]);
    assert!(ok);
    for c in [
        "otlp",
        "batch",
        "memory_limiter",
        "attributes",
        "resource",
        "filter",
        "otlphttp",
        "debug",
        "file",
    ] {
        assert!(out.contains(c), "{c} missing from:\n{out}");
    }
    assert!(out.contains("traces,metrics,logs"));
    let (ok, out, _) = meshgate(&["--version"]);
    assert!(ok && out.starts_with("meshgate "), "{out}");
    let (ok, out, _) = meshgate(&["--help"]);
    assert!(
        ok && out.contains("validate") && out.contains("components"),
        "{out}"
    );
}

#[test]
fn checked_in_config_schema_matches_the_code() {
    let (ok, out, err) = meshgate(&["schema"]);
    assert!(ok, "{err}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/config.schema.json");
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        file.trim() == out.trim(),
        "schemas/config.schema.json is out of date with the code; regenerate it with\n  cargo run -q -- schema > schemas/config.schema.json"
    );
}

#[test]
fn run_without_config_serves_the_default_pipeline() {
    let dir = Scratch::new("default");
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("run")
        .env("MESHGATE_DATA_DIR", &dir.0)
        .stderr(std::fs::File::create(dir.path("log")).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while http_get(13133, "/readyz").map(|r| r.0).ok() != Some(200) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "default pipeline not ready: {}",
            std::fs::read_to_string(dir.path("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"hello meshgate"}}]}]}]}"#;
    let (s, _, _) = http_request(
        4318,
        "POST",
        "/v1/logs",
        &[("Content-Type", "application/json")],
        body,
    )
    .unwrap();
    assert_eq!(s, 200);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait().unwrap().success());
    // The default lake is where `meshgate query` looks by default.
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["query", "--format", "csv", "SELECT body FROM logs"])
        .env("MESHGATE_DATA_DIR", &dir.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "body\nhello meshgate", "{text}");
}
