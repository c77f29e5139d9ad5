//! Reading config files: parse (with the `config` crate), substitute `${env:...}` per file,
//! index key locations per file, then deep-merge all files in order (again with `config`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::diagnostic::{Diagnostic, Location};
use crate::env::{EnvLookup, substitute_tree};
use crate::locate::{KeyIndex, parent_path, toml_index, yaml_index};

/// The syntax of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// YAML (the default; also what unknown extensions are read as).
    Yaml,
    /// TOML. Locations are best-effort, see [`Loaded`].
    Toml,
    /// JSON.
    Json,
}

impl Format {
    /// Detects the format by extension: `.yaml`/`.yml`, `.toml`, `.json`; anything else is YAML,
    /// the format of the collector files users bring along.
    pub fn from_path(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("toml") => Format::Toml,
            Some("json") => Format::Json,
            _ => Format::Yaml,
        }
    }

    fn file_format(self) -> config::FileFormat {
        match self {
            Format::Yaml => config::FileFormat::Yaml,
            Format::Toml => config::FileFormat::Toml,
            Format::Json => config::FileFormat::Json,
        }
    }
}

#[derive(Debug, Clone)]
struct FileIndex {
    file: PathBuf,
    keys: KeyIndex,
}

/// Config files read, env-substituted and merged, plus where each key came from.
///
/// Several files merge deeply in order, later ones win: maps merge key by key, scalars and
/// lists are replaced whole. Locations of YAML and JSON keys are exact; TOML locations are
/// best-effort (keys inside inline tables and multi-line arrays fall back to their nearest
/// indexed ancestor).
#[derive(Debug, Clone)]
pub struct Loaded {
    value: Value,
    files: Vec<FileIndex>,
}

fn std_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A diagnostic about a whole file or a line in it.
fn file_error(file: &Path, line: usize, column: usize, message: String) -> Diagnostic {
    Diagnostic::error("", message).at(Some(Location {
        file: file.to_path_buf(),
        line,
        column,
    }))
}

/// Pulls `line N` / `column M` out of a parser message (serde_json and toml both say so).
fn line_col_from_message(msg: &str) -> (usize, usize) {
    fn number_after(msg: &str, word: &str) -> usize {
        msg.find(word)
            .map(|i| &msg[i + word.len()..])
            .map(|rest| {
                rest.trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
    (number_after(msg, "line"), number_after(msg, "column"))
}

/// Converts `config`'s value tree to JSON.
fn config_to_json(v: config::Value) -> Value {
    use config::ValueKind as K;
    match v.kind {
        K::Nil => Value::Null,
        K::Boolean(b) => Value::Bool(b),
        K::I64(i) => Value::from(i),
        K::U64(u) => Value::from(u),
        K::I128(i) => i64::try_from(i)
            .map(Value::from)
            .or_else(|_| u64::try_from(i).map(Value::from))
            .unwrap_or_else(|_| Value::String(i.to_string())),
        K::U128(u) => u64::try_from(u)
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(u.to_string())),
        K::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        K::String(s) => Value::String(s),
        K::Table(t) => Value::Object(sorted_entries(t)),
        K::Array(a) => Value::Array(a.into_iter().map(config_to_json).collect()),
    }
}

/// Converts a `config` table to a JSON map, inserting keys in sorted order so the result is
/// deterministic even when `serde_json` is built with `preserve_order`.
fn sorted_entries(t: config::Map<String, config::Value>) -> serde_json::Map<String, Value> {
    let mut entries: Vec<(String, config::Value)> = t.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
        .into_iter()
        .map(|(k, v)| (k, config_to_json(v)))
        .collect()
}

/// Converts JSON back to `config`'s value tree, for merging.
fn json_to_config(v: &Value) -> config::Value {
    use config::ValueKind as K;
    let kind = match v {
        Value::Null => K::Nil,
        Value::Bool(b) => K::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                K::I64(i)
            } else if let Some(u) = n.as_u64() {
                K::U64(u)
            } else {
                K::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => K::String(s.clone()),
        Value::Array(a) => K::Array(a.iter().map(json_to_config).collect()),
        Value::Object(o) => K::Table(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_config(v)))
                .collect(),
        ),
    };
    config::Value::new(None, kind)
}

/// One already-substituted file as a `config` source, so `config` does the merging.
#[derive(Debug, Clone)]
struct JsonSource(serde_json::Map<String, Value>);

impl config::Source for JsonSource {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        Ok(self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), json_to_config(v)))
            .collect())
    }
}

/// Parses, indexes and substitutes one file.
fn load_one(
    text: &str,
    format: Format,
    file: &Path,
    env: EnvLookup<'_>,
) -> Result<(serde_json::Map<String, Value>, FileIndex), Vec<Diagnostic>> {
    // Index first for YAML: its scanner reports syntax errors with exact positions.
    let keys = match format {
        Format::Yaml => yaml_index(text).map_err(|e| {
            vec![file_error(
                file,
                e.line,
                e.column,
                format!("invalid YAML: {}", e.message),
            )]
        })?,
        Format::Json => yaml_index(text).unwrap_or_default(),
        Format::Toml => toml_index(text),
    };
    let parsed = config::Config::builder()
        .add_source(config::File::from_str(text, format.file_format()))
        .build()
        .and_then(|c| config::Source::collect(&c))
        .map_err(|e| {
            let cause = match &e {
                config::ConfigError::FileParse { cause, .. } => cause.to_string(),
                other => other.to_string(),
            };
            let (line, column) = line_col_from_message(&cause);
            // TOML messages carry a multi-line source excerpt; keep the explanation only.
            let message = cause
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | "))
                .unwrap_or("")
                .to_string();
            let kind = match format {
                Format::Yaml => "YAML",
                Format::Toml => "TOML",
                Format::Json => "JSON",
            };
            vec![file_error(
                file,
                line,
                column,
                format!("invalid {kind}: {message}"),
            )]
        })?;
    let mut map: serde_json::Map<String, Value> = sorted_entries(parsed);
    let index = FileIndex {
        file: file.to_path_buf(),
        keys,
    };
    let mut problems = Vec::new();
    for (key, value) in map.iter_mut() {
        substitute_tree(value, key, env, &mut problems);
    }
    if !problems.is_empty() {
        return Err(problems
            .into_iter()
            .map(|(path, e)| {
                let location = locate_in(std::slice::from_ref(&index), &path);
                let mut d = Diagnostic::error(path, e.message).at(location);
                d.help = e.help;
                d
            })
            .collect());
    }
    Ok((map, index))
}

fn locate_in(files: &[FileIndex], key_path: &str) -> Option<Location> {
    let mut path = Some(key_path);
    while let Some(p) = path {
        for f in files.iter().rev() {
            if let Some(&(line, column)) = f.keys.get(p) {
                return Some(Location {
                    file: f.file.clone(),
                    line,
                    column,
                });
            }
        }
        path = parent_path(p);
    }
    // Nothing is indexed (e.g. an empty file): point at the last file as a whole.
    files.last().map(|f| Location {
        file: f.file.clone(),
        line: 0,
        column: 0,
    })
}

impl Loaded {
    /// Reads and merges `paths` in order, substituting from the process environment.
    /// A missing file or a parse error yields a diagnostic naming the file (and line).
    pub fn from_files(paths: &[PathBuf]) -> Result<Loaded, Vec<Diagnostic>> {
        Self::from_files_with_env(paths, &std_env)
    }

    /// [`Loaded::from_files`] with an explicit environment, for tests and embedding.
    pub fn from_files_with_env(
        paths: &[PathBuf],
        env: EnvLookup<'_>,
    ) -> Result<Loaded, Vec<Diagnostic>> {
        let mut diagnostics = Vec::new();
        let mut parts = Vec::new();
        for path in paths {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    diagnostics.push(file_error(path, 0, 0, format!("cannot read file: {e}")));
                    continue;
                }
            };
            match load_one(&text, Format::from_path(path), path, env) {
                Ok(part) => parts.push(part),
                Err(d) => diagnostics.extend(d),
            }
        }
        if !diagnostics.is_empty() {
            return Err(diagnostics);
        }
        Self::merge(parts)
    }

    /// Loads config text from memory; `origin` is shown as the file name in diagnostics
    /// (e.g. `<default pipeline>`).
    pub fn from_str(text: &str, format: Format, origin: &str) -> Result<Loaded, Vec<Diagnostic>> {
        Self::from_str_with_env(text, format, origin, &std_env)
    }

    /// [`Loaded::from_str`] with an explicit environment, for tests and embedding.
    pub fn from_str_with_env(
        text: &str,
        format: Format,
        origin: &str,
        env: EnvLookup<'_>,
    ) -> Result<Loaded, Vec<Diagnostic>> {
        let part = load_one(text, format, Path::new(origin), env)?;
        Self::merge(vec![part])
    }

    fn merge(
        parts: Vec<(serde_json::Map<String, Value>, FileIndex)>,
    ) -> Result<Loaded, Vec<Diagnostic>> {
        let mut builder = config::Config::builder();
        let mut files = Vec::with_capacity(parts.len());
        for (map, index) in parts {
            builder = builder.add_source(JsonSource(map));
            files.push(index);
        }
        let merged = builder
            .build()
            .and_then(|c| config::Source::collect(&c))
            .map_err(|e| {
                vec![Diagnostic::error(
                    "",
                    format!("cannot merge config files: {e}"),
                )]
            })?;
        let value = Value::Object(sorted_entries(merged));
        Ok(Loaded { value, files })
    }

    /// Where `key_path` is defined: the LAST file defining it wins, as it does for the value.
    /// For a key that does not exist (e.g. a missing required key) the nearest existing
    /// ancestor is returned.
    pub fn locate(&self, key_path: &str) -> Option<Location> {
        locate_in(&self.files, key_path)
    }

    /// The merged document.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The position of `file` in load order (unknown files sort last), for ordering diagnostics.
    pub(crate) fn file_rank(&self, file: &Path) -> usize {
        self.files
            .iter()
            .position(|f| f.file == file)
            .unwrap_or(self.files.len())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed when dropped.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "meshgate-config-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "4317".to_string())
    }

    #[test]
    fn format_by_extension() {
        assert_eq!(Format::from_path(Path::new("a.yml")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("a.YAML")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("a.toml")), Format::Toml);
        assert_eq!(Format::from_path(Path::new("a.json")), Format::Json);
        assert_eq!(Format::from_path(Path::new("a.conf")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("noext")), Format::Yaml);
    }

    #[test]
    fn loads_yaml_with_types_and_nulls() {
        let text = "receivers:\n  otlp:\n    port: 4317\n    ratio: 0.5\n    on: true\n    tags: [a, b]\nprocessors:\n  batch:\n";
        let l = Loaded::from_str_with_env(text, Format::Yaml, "<test>", &no_env).unwrap();
        assert_eq!(
            l.value(),
            &json!({
                "receivers": {"otlp": {"port": 4317, "ratio": 0.5, "on": true, "tags": ["a", "b"]}},
                "processors": {"batch": null}
            })
        );
        let loc = l.locate("receivers.otlp.ratio").unwrap();
        assert_eq!(
            (loc.file.to_str().unwrap(), loc.line, loc.column),
            ("<test>", 4, 5)
        );
        // A missing key falls back to its nearest existing ancestor.
        assert_eq!(l.locate("receivers.otlp.nope.deeper").unwrap().line, 2);
    }

    #[test]
    fn empty_text_is_an_empty_config() {
        let l = Loaded::from_str_with_env("", Format::Yaml, "<empty>", &no_env).unwrap();
        assert_eq!(l.value(), &json!({}));
    }

    #[test]
    fn env_substitution_happens_per_file_with_locations() {
        let text = "receivers:\n  otlp:\n    port: ${env:PORT}\n    host: ${env:HOST}\n    addr: ${HOST}\n";
        let errs = Loaded::from_str_with_env(text, Format::Yaml, "p.yaml", &env).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        let rendered: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            rendered.contains(
                &"error: p.yaml:4: receivers.otlp.host: environment variable `HOST` is not set\n  help: set `HOST`, or give a default: `${env:HOST:-value}`".to_string()
            ),
            "{rendered:#?}"
        );
        assert!(rendered.iter().any(|r| r.starts_with(
            "error: p.yaml:5: receivers.otlp.addr: unsupported substitution `${HOST}`"
        )));

        let ok = "receivers:\n  otlp:\n    port: ${env:PORT}\n    addr: \"0.0.0.0:${env:PORT}\"\n";
        let l = Loaded::from_str_with_env(ok, Format::Yaml, "p.yaml", &env).unwrap();
        assert_eq!(l.value()["receivers"]["otlp"]["port"], json!(4317));
        assert_eq!(
            l.value()["receivers"]["otlp"]["addr"],
            json!("0.0.0.0:4317")
        );
    }

    #[test]
    fn yaml_syntax_error_has_line() {
        let text = "receivers:\n  otlp:\n    port: [1, 2\n  bad\n";
        let errs = Loaded::from_str_with_env(text, Format::Yaml, "bad.yaml", &no_env).unwrap_err();
        assert_eq!(errs.len(), 1);
        let loc = errs[0].location.as_ref().unwrap();
        assert_eq!(loc.file, PathBuf::from("bad.yaml"));
        assert!(loc.line >= 3, "{:?}", errs[0]);
        assert!(errs[0].message.starts_with("invalid YAML"), "{}", errs[0]);
    }

    #[test]
    fn json_and_toml_parse_errors_have_lines() {
        let errs = Loaded::from_str_with_env(
            "{\n  \"a\": 1,\n  \"b\": \n}",
            Format::Json,
            "x.json",
            &no_env,
        )
        .unwrap_err();
        assert_eq!(errs[0].location.as_ref().unwrap().line, 4, "{}", errs[0]);
        assert!(errs[0].message.starts_with("invalid JSON"), "{}", errs[0]);

        let errs =
            Loaded::from_str_with_env("[a]\nb = 1\nc = = 2\n", Format::Toml, "x.toml", &no_env)
                .unwrap_err();
        assert_eq!(errs[0].location.as_ref().unwrap().line, 3, "{}", errs[0]);
        assert!(errs[0].message.starts_with("invalid TOML"), "{}", errs[0]);
    }

    #[test]
    fn missing_file_is_reported_with_every_other_problem() {
        let dir = TempDir::new();
        let bad = dir.write("bad.yaml", "a: [\n");
        let missing = dir.0.join("missing.yaml");
        let errs =
            Loaded::from_files_with_env(&[missing.clone(), bad.clone()], &no_env).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].location.as_ref().unwrap().file, missing);
        assert!(
            errs[0].to_string().contains("cannot read file"),
            "{}",
            errs[0]
        );
        assert_eq!(errs[1].location.as_ref().unwrap().file, bad);
    }

    #[test]
    fn files_merge_deeply_later_wins() {
        let dir = TempDir::new();
        let a = dir.write(
            "a.yaml",
            "receivers:\n  otlp:\n    endpoint: a:1\n    keep: yes-a\n    list: [1, 2, 3]\nexporters:\n  debug:\n",
        );
        let b = dir.write(
            "b.json",
            "{\n  \"receivers\": {\n    \"otlp\": {\n      \"endpoint\": \"b:2\",\n      \"list\": [9]\n    }\n  }\n}\n",
        );
        let c = dir.write("c.toml", "[exporters.debug]\nverbosity = \"detailed\"\n");
        let l = Loaded::from_files_with_env(&[a.clone(), b.clone(), c.clone()], &no_env).unwrap();
        assert_eq!(
            l.value(),
            &json!({
                "receivers": {"otlp": {"endpoint": "b:2", "keep": "yes-a", "list": [9]}},
                "exporters": {"debug": {"verbosity": "detailed"}}
            })
        );
        // Locations come from the last file defining the key.
        let loc = l.locate("receivers.otlp.endpoint").unwrap();
        assert_eq!((loc.file.clone(), loc.line), (b.clone(), 4));
        let loc = l.locate("receivers.otlp.keep").unwrap();
        assert_eq!((loc.file.clone(), loc.line), (a, 4));
        let loc = l.locate("exporters.debug.verbosity").unwrap();
        assert_eq!((loc.file.clone(), loc.line), (c, 2));
    }

    #[test]
    fn keys_with_dots_and_case_survive_loading() {
        let text = "processors:\n  attributes:\n    actions:\n      - key: service.name\n    map:\n      Service.Name: X\n";
        let l = Loaded::from_str_with_env(text, Format::Yaml, "<t>", &no_env).unwrap();
        assert_eq!(
            l.value()["processors"]["attributes"]["map"],
            json!({"Service.Name": "X"})
        );
    }
}
