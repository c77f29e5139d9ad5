//! Validation of a loaded config against a [`Catalog`]: structure, ids, component bodies
//! (against their JSON Schemas) and pipeline wiring. Reports every problem, not just the first.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::ids::{ComponentId, Kind, PipelineId, Signal};
use crate::load::Loaded;
use crate::locate::{join_index, join_key};
use crate::model::{Catalog, Config, PipelineConfig, TelemetryConfig};
use crate::schema_check::{check, describe};
use crate::suggest::{help_for_unknown, quoted_list};

/// The keys allowed at the top of a config file.
pub(crate) const TOP_LEVEL_KEYS: [&str; 6] = [
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
    "service",
];
/// The keys allowed under `service`.
pub(crate) const SERVICE_KEYS: [&str; 3] = ["pipelines", "extensions", "telemetry"];
/// The keys allowed in a pipeline.
pub(crate) const PIPELINE_KEYS: [&str; 3] = ["receivers", "processors", "exporters"];

/// Validates everything and reports EVERY problem found. Returns `Some(config)` only when
/// there are no errors; warnings (e.g. unused components) never block.
///
/// Diagnostics are ordered by file (in load order) and line, so they read top to bottom.
pub fn validate(loaded: &Loaded, catalog: &dyn Catalog) -> (Option<Config>, Vec<Diagnostic>) {
    let mut v = Validator {
        loaded,
        catalog,
        diags: Vec::new(),
        config: Config::default(),
        defined: BTreeMap::new(),
        used: BTreeSet::new(),
        connector_uses: BTreeMap::new(),
    };
    v.run();
    let mut diags = v.diags;
    diags.sort_by_key(|d| match &d.location {
        Some(l) => (false, loaded.file_rank(&l.file), l.line, l.column),
        None => (true, 0, 0, 0),
    });
    let ok = !diags.iter().any(Diagnostic::is_error);
    (ok.then_some(v.config), diags)
}

/// What the validator knows about one defined component.
struct Defined {
    /// The signals it supports (a connector: consumes); None when its type is unknown
    /// (already reported).
    signals: Option<Vec<Signal>>,
    /// A connector's emitted signals.
    produces: Option<Vec<Signal>>,
    /// Signals it takes only with a key its body lacks, as `(signal, key)`.
    unmet: Vec<(Signal, &'static str)>,
}

/// Where one connector is used: `(pipeline, key path of the list item)` per side.
#[derive(Default)]
struct ConnectorUse {
    as_exporter: Vec<(PipelineId, String)>,
    as_receiver: Vec<(PipelineId, String)>,
}

struct Validator<'a> {
    loaded: &'a Loaded,
    catalog: &'a dyn Catalog,
    diags: Vec<Diagnostic>,
    config: Config,
    defined: BTreeMap<(KindKey, ComponentId), Defined>,
    used: BTreeSet<(KindKey, ComponentId)>,
    connector_uses: BTreeMap<ComponentId, ConnectorUse>,
}

/// `Kind` as an orderable key.
type KindKey = u8;

fn kind_key(kind: Kind) -> KindKey {
    match kind {
        Kind::Receiver => 0,
        Kind::Processor => 1,
        Kind::Exporter => 2,
        Kind::Connector => 3,
        Kind::Extension => 4,
    }
}

impl Validator<'_> {
    fn error(&mut self, path: &str, message: String, help: Option<String>) {
        let mut d = Diagnostic::error(path, message).at(self.loaded.locate(path));
        d.help = help;
        self.diags.push(d);
    }

    fn warning(&mut self, path: &str, message: String, help: Option<String>) {
        let mut d = Diagnostic::warning(path, message).at(self.loaded.locate(path));
        d.help = help;
        self.diags.push(d);
    }

    fn unknown_keys(
        &mut self,
        map: &serde_json::Map<String, Value>,
        path: &str,
        allowed: &[&str],
        what: &str,
    ) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let help = help_for_unknown(key, allowed, what);
                self.error(
                    &join_key(path, key),
                    format!("unknown key `{key}`"),
                    Some(help),
                );
            }
        }
    }

    fn run(&mut self) {
        let root = self.loaded.value();
        let Some(root) = root.as_object() else {
            self.error(
                "",
                format!(
                    "expected a mapping at the top of the file, found {}",
                    describe(root)
                ),
                None,
            );
            return;
        };
        self.unknown_keys(root, "", &TOP_LEVEL_KEYS, "top-level keys");
        for kind in Kind::ALL {
            if let Some(section) = root.get(kind.section()) {
                self.components(kind, section);
            }
        }
        match root.get("service") {
            None => self.error(
                "service",
                "missing `service` section, so no pipeline would run".into(),
                Some("add `service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}` naming your components".into()),
            ),
            Some(service) => self.service(service),
        }
        self.connectors_wired();
        self.unused();
    }

    fn components(&mut self, kind: Kind, section: &Value) {
        let section_path = kind.section();
        let map = match section {
            Value::Null => return,
            Value::Object(m) => m,
            other => {
                self.error(
                    section_path,
                    format!(
                        "expected a mapping of `type[/name]` to settings, found {}",
                        describe(other)
                    ),
                    None,
                );
                return;
            }
        };
        for (key, body) in map {
            let path = join_key(section_path, key);
            let id: ComponentId = match key.parse() {
                Ok(id) => id,
                Err(e) => {
                    self.error(
                        &path,
                        format!("invalid {kind} id `{key}`: {}", e.message),
                        e.help,
                    );
                    continue;
                }
            };
            let spec = self.catalog.component(kind, &id.type_name);
            if spec.is_none() {
                let mut names = self.catalog.type_names(kind);
                names.sort();
                let help = if names.is_empty() {
                    format!("this build has no {kind} types")
                } else {
                    help_for_unknown(&id.type_name, &names, &format!("{kind} types"))
                };
                self.error(
                    &path,
                    format!("unknown {kind} type `{}`", id.type_name),
                    Some(help),
                );
            }
            let body = match body {
                Value::Null => Value::Object(serde_json::Map::new()),
                other => other.clone(),
            };
            if let Some(spec) = &spec {
                for p in check(spec.schema.as_value(), &body, &path) {
                    self.error(&p.path, p.message, p.help);
                }
            }
            let unmet = spec.as_ref().map_or_else(Vec::new, |s| {
                s.signal_requires
                    .iter()
                    .filter(|(_, key)| body.get(*key).is_none_or(Value::is_null))
                    .copied()
                    .collect()
            });
            self.defined.insert(
                (kind_key(kind), id.clone()),
                Defined {
                    signals: spec.as_ref().map(|s| s.signals.clone()),
                    produces: spec.map(|s| s.produces),
                    unmet,
                },
            );
            self.config.section_mut(kind).insert(id, body);
        }
    }

    fn service(&mut self, service: &Value) {
        let Some(map) = service.as_object() else {
            self.error(
                "service",
                format!(
                    "expected a mapping with `pipelines`, found {}",
                    describe(service)
                ),
                None,
            );
            return;
        };
        self.unknown_keys(map, "service", &SERVICE_KEYS, "keys under `service`");
        if let Some(t) = map.get("telemetry") {
            self.telemetry(t);
        }
        if let Some(e) = map.get("extensions") {
            self.service_extensions(e);
        }
        match map.get("pipelines") {
            None | Some(Value::Null) => self.error(
                "service.pipelines",
                "no pipelines are defined, so nothing would run".into(),
                Some(
                    "add e.g. `pipelines: {traces: {receivers: [otlp], exporters: [debug]}}`"
                        .into(),
                ),
            ),
            Some(Value::Object(p)) if p.is_empty() => self.error(
                "service.pipelines",
                "no pipelines are defined, so nothing would run".into(),
                Some("add e.g. `traces: {receivers: [otlp], exporters: [debug]}`".into()),
            ),
            Some(Value::Object(p)) => {
                for (key, body) in p {
                    self.pipeline(key, body);
                }
            }
            Some(other) => self.error(
                "service.pipelines",
                format!(
                    "expected a mapping of pipeline ids to pipelines, found {}",
                    describe(other)
                ),
                None,
            ),
        }
    }

    fn telemetry(&mut self, value: &Value) {
        let path = "service.telemetry";
        let value = match value {
            Value::Null => Value::Object(serde_json::Map::new()),
            v => v.clone(),
        };
        let schema = schemars::schema_for!(TelemetryConfig);
        let problems = check(schema.as_value(), &value, path);
        if !problems.is_empty() {
            for p in problems {
                self.error(&p.path, p.message, p.help);
            }
            return;
        }
        match serde_json::from_value(value) {
            Ok(t) => self.config.service.telemetry = t,
            Err(e) => self.error(path, format!("invalid telemetry settings: {e}"), None),
        }
    }

    /// Parses a list of component ids at `path`, reporting non-strings, bad ids and duplicates.
    fn id_list(&mut self, value: Option<&Value>, path: &str) -> Vec<(String, ComponentId)> {
        let items = match value {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.error(
                    path,
                    format!(
                        "expected a list of component ids, found {}",
                        describe(other)
                    ),
                    Some("write e.g. `[otlp, otlp/internal]`".into()),
                );
                return Vec::new();
            }
        };
        let mut out: Vec<(String, ComponentId)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = join_index(path, i);
            let Some(s) = item.as_str() else {
                self.error(
                    &item_path,
                    format!("expected a component id, found {}", describe(item)),
                    None,
                );
                continue;
            };
            match s.parse::<ComponentId>() {
                Ok(id) if out.iter().any(|(_, seen)| *seen == id) => self.error(
                    &item_path,
                    format!("`{id}` is listed twice"),
                    Some("list each component once".into()),
                ),
                Ok(id) => out.push((item_path, id)),
                Err(e) => self.error(
                    &item_path,
                    format!("invalid component id `{s}`: {}", e.message),
                    e.help,
                ),
            }
        }
        out
    }

    fn service_extensions(&mut self, value: &Value) {
        let path = "service.extensions";
        for (item_path, id) in self.id_list(Some(value), path) {
            let key = (kind_key(Kind::Extension), id.clone());
            if self.defined.contains_key(&key) {
                self.used.insert(key);
                self.config.service.extensions.push(id);
            } else {
                let help = self.not_defined_help(&[Kind::Extension], &id);
                self.error(
                    &item_path,
                    format!("extension `{id}` is not defined under `extensions`"),
                    Some(help),
                );
            }
        }
    }

    fn defined_ids(&self, kinds: &[Kind]) -> Vec<String> {
        self.defined
            .keys()
            .filter(|(k, _)| kinds.iter().any(|kind| kind_key(*kind) == *k))
            .map(|(_, id)| id.to_string())
            .collect()
    }

    fn not_defined_help(&self, kinds: &[Kind], id: &ComponentId) -> String {
        let ids = self.defined_ids(kinds);
        let sections: Vec<&str> = kinds.iter().map(|k| k.section()).collect();
        if ids.is_empty() {
            format!("define it under `{}`", sections[0])
        } else {
            help_for_unknown(
                &id.to_string(),
                &ids,
                &format!("ids defined under {}", quoted_list(&sections)),
            )
        }
    }

    fn pipeline(&mut self, key: &str, body: &Value) {
        let path = join_key("service.pipelines", key);
        let id: PipelineId = match key.parse() {
            Ok(id) => id,
            Err(e) => {
                self.error(&path, e.message, e.help);
                return;
            }
        };
        let empty = serde_json::Map::new();
        let map = match body {
            Value::Object(m) => m,
            Value::Null => &empty,
            other => {
                self.error(
                    &path,
                    format!("expected a mapping with `receivers`, `processors` and `exporters`, found {}", describe(other)),
                    None,
                );
                return;
            }
        };
        self.unknown_keys(map, &path, &PIPELINE_KEYS, "pipeline keys");
        let mut pipeline = PipelineConfig::default();
        let roles: [(&str, Kind, &[Kind]); 3] = [
            (
                "receivers",
                Kind::Receiver,
                &[Kind::Receiver, Kind::Connector],
            ),
            ("processors", Kind::Processor, &[Kind::Processor]),
            (
                "exporters",
                Kind::Exporter,
                &[Kind::Exporter, Kind::Connector],
            ),
        ];
        for (role, role_kind, kinds) in roles {
            let role_path = join_key(&path, role);
            let ids = self.id_list(map.get(role), &role_path);
            if ids.is_empty() && role_kind != Kind::Processor {
                self.error(
                    if map.contains_key(role) {
                        &role_path
                    } else {
                        &path
                    },
                    format!("pipeline `{id}` has no {role}"),
                    Some(format!(
                        "list at least one {role_kind}, e.g. `{role}: [otlp]`"
                    )),
                );
            }
            for (item_path, cid) in ids {
                let Some(kind) = kinds
                    .iter()
                    .copied()
                    .find(|k| self.defined.contains_key(&(kind_key(*k), cid.clone())))
                else {
                    let help = self.not_defined_help(kinds, &cid);
                    self.error(
                        &item_path,
                        format!(
                            "pipeline `{id}` names {role_kind} `{cid}`, which is not defined under `{}`",
                            role_kind.section()
                        ),
                        Some(help),
                    );
                    continue;
                };
                let key = (kind_key(kind), cid.clone());
                let as_receiver = role_kind == Kind::Receiver;
                let signals = self.defined.get(&key).and_then(|d| {
                    if kind == Kind::Connector && as_receiver {
                        d.produces.clone()
                    } else {
                        d.signals.clone()
                    }
                });
                if let Some(signals) = signals
                    && !signals.contains(&id.signal)
                {
                    let supported: Vec<&str> = signals.iter().map(|s| s.as_str()).collect();
                    let (message, help) = if kind != Kind::Connector {
                        (
                            format!("{kind} `{cid}` does not support signal `{}`", id.signal),
                            if supported.is_empty() {
                                format!("`{cid}` supports no signals")
                            } else {
                                format!("`{cid}` supports {}", quoted_list(&supported))
                            },
                        )
                    } else if as_receiver {
                        (
                            format!(
                                "connector `{cid}` does not emit signal `{}`, so it cannot be a receiver of pipeline `{id}`",
                                id.signal
                            ),
                            format!(
                                "`{cid}` emits {}; list it under `receivers` of such a pipeline",
                                quoted_list(&supported)
                            ),
                        )
                    } else {
                        (
                            format!(
                                "connector `{cid}` does not consume signal `{}`, so it cannot be an exporter of pipeline `{id}`",
                                id.signal
                            ),
                            format!(
                                "`{cid}` consumes {}; list it under `exporters` of such a pipeline",
                                quoted_list(&supported)
                            ),
                        )
                    };
                    self.error(&item_path, message, Some(help));
                } else if !as_receiver
                    && let Some((_, key)) = self
                        .defined
                        .get(&key)
                        .and_then(|d| d.unmet.iter().find(|(s, _)| *s == id.signal))
                {
                    let section = kind.section();
                    self.error(
                        &item_path,
                        format!(
                            "{kind} `{cid}` takes signal `{}` only with `{section}.{cid}.{key}` set",
                            id.signal
                        ),
                        Some(format!(
                            "add `{key}:` to `{section}.{cid}` (`{key}: {{}}` for its defaults), or remove `{cid}` from pipeline `{id}`"
                        )),
                    );
                }
                if kind == Kind::Connector {
                    let uses = self.connector_uses.entry(cid.clone()).or_default();
                    let side = if as_receiver {
                        &mut uses.as_receiver
                    } else {
                        &mut uses.as_exporter
                    };
                    side.push((id.clone(), item_path.clone()));
                }
                self.used.insert(key);
                match role_kind {
                    Kind::Receiver => pipeline.receivers.push(cid),
                    Kind::Processor => pipeline.processors.push(cid),
                    _ => pipeline.exporters.push(cid),
                }
            }
        }
        self.config.service.pipelines.insert(id, pipeline);
    }

    /// A connector must be both an exporter of some pipeline and a receiver of another, and
    /// connectors must not chain pipelines into a loop (data would circle forever).
    fn connectors_wired(&mut self) {
        let uses = std::mem::take(&mut self.connector_uses);
        for (cid, u) in &uses {
            let known = self
                .defined
                .get(&(kind_key(Kind::Connector), cid.clone()))
                .is_some_and(|d| d.signals.is_some());
            if !known {
                continue;
            }
            if u.as_receiver.is_empty()
                && let Some((pid, path)) = u.as_exporter.first()
            {
                self.error(
                    path,
                    format!(
                        "connector `{cid}` is an exporter of pipeline `{pid}` but no pipeline receives from it, so what it derives would go nowhere"
                    ),
                    Some(format!(
                        "list `{cid}` under `receivers` of the pipeline that should get its output, e.g. `metrics: {{receivers: [{cid}], exporters: [...]}}`"
                    )),
                );
            }
            if u.as_exporter.is_empty()
                && let Some((pid, path)) = u.as_receiver.first()
            {
                self.error(
                    path,
                    format!(
                        "connector `{cid}` is a receiver of pipeline `{pid}` but no pipeline exports to it, so it would never get data"
                    ),
                    Some(format!(
                        "list `{cid}` under `exporters` of the pipeline it should read, e.g. `traces: {{receivers: [otlp], exporters: [{cid}]}}`"
                    )),
                );
            }
        }
        // Pipeline graph through connectors; report the first loop found.
        let mut next: BTreeMap<&PipelineId, Vec<(&PipelineId, &ComponentId)>> = BTreeMap::new();
        for (cid, u) in &uses {
            for (from, _) in &u.as_exporter {
                for (to, _) in &u.as_receiver {
                    next.entry(from).or_default().push((to, cid));
                }
            }
        }
        fn visit<'a>(
            p: &'a PipelineId,
            next: &BTreeMap<&'a PipelineId, Vec<(&'a PipelineId, &'a ComponentId)>>,
            path: &mut Vec<(&'a PipelineId, Option<&'a ComponentId>)>,
            done: &mut BTreeSet<&'a PipelineId>,
        ) -> Option<Vec<(&'a PipelineId, Option<&'a ComponentId>)>> {
            if let Some(i) = path.iter().position(|(q, _)| *q == p) {
                let mut cycle = path[i..].to_vec();
                cycle.push((p, None));
                return Some(cycle);
            }
            if done.contains(p) {
                return None;
            }
            for (to, via) in next.get(p).into_iter().flatten() {
                path.push((p, Some(via)));
                let found = visit(to, next, path, done);
                path.pop();
                if found.is_some() {
                    return found;
                }
            }
            done.insert(p);
            None
        }
        let mut done = BTreeSet::new();
        let starts: Vec<&PipelineId> = next.keys().copied().collect();
        for p in starts {
            if let Some(cycle) = visit(p, &next, &mut Vec::new(), &mut done) {
                let mut text = String::new();
                for (q, via) in &cycle {
                    text.push_str(&format!("`{q}`"));
                    if let Some(c) = via {
                        text.push_str(&format!(" -> {c} -> "));
                    }
                }
                let first = cycle[0].0.to_string();
                self.error(
                    &join_key("service.pipelines", &first),
                    format!("connectors make the pipelines a loop: {text}"),
                    Some(
                        "a connector's output must not flow back into a pipeline that feeds it"
                            .into(),
                    ),
                );
                break;
            }
        }
    }

    fn unused(&mut self) {
        let unused: Vec<(Kind, ComponentId)> = Kind::ALL
            .into_iter()
            .flat_map(|kind| {
                self.defined
                    .keys()
                    .filter(move |(k, _)| *k == kind_key(kind))
                    .filter(|key| !self.used.contains(*key))
                    .map(move |(_, id)| (kind, id.clone()))
            })
            .collect();
        for (kind, id) in unused {
            let path = join_key(kind.section(), &id.to_string());
            if kind == Kind::Extension {
                self.warning(
                    &path,
                    format!("extension `{id}` is defined but not enabled, so it will not run"),
                    Some("list it under `service.extensions`, or remove it".into()),
                );
            } else {
                self.warning(
                    &path,
                    format!("{kind} `{id}` is defined but not used by any pipeline"),
                    Some("add it to a pipeline under `service.pipelines`, or remove it".into()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;
    use crate::diagnostic::Severity;
    use crate::testing::TestCatalog;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("4317".into()),
            "ON" => Some("true".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> (Option<Config>, Vec<Diagnostic>) {
        let loaded = Loaded::from_str_with_env(text, Format::Yaml, "pipeline.yaml", &env)
            .unwrap_or_else(|d| panic!("load failed: {d:#?}"));
        validate(&loaded, &TestCatalog)
    }

    fn rendered(diags: &[Diagnostic]) -> Vec<String> {
        diags.iter().map(ToString::to_string).collect()
    }

    fn assert_has(diags: &[Diagnostic], want: &str) {
        let r = rendered(diags);
        assert!(
            r.iter().any(|d| d == want),
            "missing:\n{want}\nin:\n{}",
            r.join("\n")
        );
    }

    const GOOD: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:${env:PORT}
processors:
  batch:
exporters:
  otlp/backend:
    endpoint: backend:4317
    retry_on_failure:
      enabled: ${env:ON}
      max_elapsed_time: 1m30s
    compression: zstd
  file:
    path: /tmp/spans.json
extensions:
  health_check:
service:
  extensions: [health_check]
  telemetry:
    logs:
      format: json
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/backend, file]
    metrics/red:
      receivers: [otlp]
      exporters: [otlp/backend]
";

    #[test]
    fn good_config_validates() {
        let (config, diags) = run(GOOD);
        assert!(diags.is_empty(), "{:#?}", rendered(&diags));
        let config = config.unwrap();
        assert_eq!(config.processors[&ComponentId::new("batch")], json!({}));
        let exp = &config.exporters[&ComponentId::with_name("otlp", "backend")];
        assert_eq!(exp["retry_on_failure"]["enabled"], json!(true));
        assert_eq!(
            config.receivers[&ComponentId::new("otlp")]["protocols"]["grpc"]["endpoint"],
            json!("0.0.0.0:4317")
        );
        let red: PipelineId = "metrics/red".parse().unwrap();
        assert_eq!(
            config.service.pipelines[&red],
            PipelineConfig {
                receivers: vec![ComponentId::new("otlp")],
                processors: vec![],
                exporters: vec![ComponentId::with_name("otlp", "backend")],
            }
        );
        assert_eq!(
            config.service.extensions,
            vec![ComponentId::new("health_check")]
        );
        assert_eq!(config.service.telemetry.logs.format, crate::LogFormat::Json);
        assert_eq!(config.service.telemetry.logs.level, "info");
        assert_eq!(config.service.telemetry.admin.endpoint, "127.0.0.1:13133");
        // Bodies deserialize into the component's own types.
        let batch: crate::testing::Batch =
            serde_json::from_value(config.processors[&ComponentId::new("batch")].clone()).unwrap();
        assert_eq!(batch.send_batch_size, 8192);
    }

    #[test]
    fn unknown_top_level_and_service_keys() {
        let text = format!("{GOOD}recievers: {{}}\n");
        let (config, diags) = run(&text);
        assert!(config.is_none());
        assert_has(
            &diags,
            "error: pipeline.yaml:32: recievers: unknown key `recievers`\n  help: did you mean `receivers`?",
        );
        let text = GOOD.replace("  telemetry:", "  telemtry: {}\n  telemetry:");
        let (_, diags) = run(&text);
        assert_has(
            &diags,
            "error: pipeline.yaml:21: service.telemtry: unknown key `telemtry`\n  help: did you mean `telemetry`?",
        );
    }

    #[test]
    fn unknown_component_types_and_bad_ids() {
        let text = GOOD
            .replace("receivers:\n  otlp:", "receivers:\n  otlpp:")
            .replace("  file:\n", "  /x:\n");
        let (_, diags) = run(&text);
        assert_has(
            &diags,
            "error: pipeline.yaml:2: receivers.otlpp: unknown receiver type `otlpp`\n  help: did you mean `otlp`?",
        );
        assert!(
            rendered(&diags).iter().any(|d| d
                .starts_with("error: pipeline.yaml:15: exporters./x: invalid exporter id `/x`")),
            "{:#?}",
            rendered(&diags)
        );
        let text = GOOD.replace("  batch:", "  zzzzz:");
        let (_, diags) = run(&text);
        assert_has(
            &diags,
            "error: pipeline.yaml:7: processors.zzzzz: unknown processor type `zzzzz`\n  help: valid processor types: `batch`",
        );
    }

    #[test]
    fn component_bodies_report_every_problem_with_lines() {
        let text = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpiont: x
        max_recv_msg_size: 4 parsecs
processors:
  batch:
    send_batch_size: 0
    timeout: 5
exporters:
  otlp/backend:
    retry_on_failure:
      max_elapsed_time: 5x
    headers:
      a: 1
    compression: gzipp
    tags: abc
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/backend]
";
        let (config, diags) = run(text);
        assert!(config.is_none());
        assert_has(
            &diags,
            "error: pipeline.yaml:5: receivers.otlp.protocols.grpc.endpiont: unknown key `endpiont`\n  help: did you mean `endpoint`?",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:9: processors.batch.send_batch_size: must be at least 1, found 0",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:10: processors.batch.timeout: expected a string, found an integer `5`\n  help: write a number with a unit, e.g. `5s`, `200ms`, `1m30s`",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:12: exporters.otlp/backend.endpoint: missing required key `endpoint`",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:16: exporters.otlp/backend.headers.a: expected a string, found an integer `1`",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:17: exporters.otlp/backend.compression: expected one of `none`, `gzip`, `zstd`, found a string `gzipp`\n  help: did you mean `gzip`?",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:18: exporters.otlp/backend.tags: expected a list, found a string `abc`",
        );
        let r = rendered(&diags);
        assert!(r.iter().any(|d| d.starts_with(
            "error: pipeline.yaml:14: exporters.otlp/backend.retry_on_failure.max_elapsed_time: invalid duration `5x`"
        )), "{r:#?}");
        assert!(r.iter().any(|d| d.starts_with(
            "error: pipeline.yaml:6: receivers.otlp.protocols.grpc.max_recv_msg_size: invalid byte size `4 parsecs`"
        )), "{r:#?}");
        assert_eq!(diags.len(), 9, "{r:#?}");
        // Sorted by line.
        let lines: Vec<usize> = diags
            .iter()
            .map(|d| d.location.as_ref().unwrap().line)
            .collect();
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    }

    #[test]
    fn pipeline_wiring_errors() {
        let text = "\
receivers:
  otlp:
processors:
  batch:
exporters:
  file:
    path: /tmp/x
  otlp:
    endpoint: x
service:
  pipelines:
    trace:
      receivers: [otlp]
      exporters: [otlp]
    metrics:
      receivers: [otlp/x]
      processors: [batch, batch]
      exporters: [file]
      exportrs: [otlp]
    logs:
      processors: [batch]
    traces/empty:
      receivers: []
      exporters: [otlp, 5]
";
        let (config, diags) = run(text);
        assert!(config.is_none());
        assert_has(
            &diags,
            "error: pipeline.yaml:12: service.pipelines.trace: pipeline `trace` has an unknown signal `trace`\n  help: did you mean `traces`?",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:16: service.pipelines.metrics.receivers[0]: pipeline `metrics` names receiver `otlp/x`, which is not defined under `receivers`\n  help: did you mean `otlp`?",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:17: service.pipelines.metrics.processors[1]: `batch` is listed twice\n  help: list each component once",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:18: service.pipelines.metrics.exporters[0]: exporter `file` does not support signal `metrics`\n  help: `file` supports `traces`, `logs`",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:19: service.pipelines.metrics.exportrs: unknown key `exportrs`\n  help: did you mean `exporters`?",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:20: service.pipelines.logs: pipeline `logs` has no receivers\n  help: list at least one receiver, e.g. `receivers: [otlp]`",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:20: service.pipelines.logs: pipeline `logs` has no exporters\n  help: list at least one exporter, e.g. `exporters: [otlp]`",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:23: service.pipelines.traces/empty.receivers: pipeline `traces/empty` has no receivers\n  help: list at least one receiver, e.g. `receivers: [otlp]`",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:24: service.pipelines.traces/empty.exporters[1]: expected a component id, found an integer `5`",
        );
    }

    #[test]
    fn unused_components_only_warn() {
        let text = format!("{GOOD}connectors:\n");
        let text = text.replace(
            "  file:\n    path: /tmp/spans.json\n",
            "  file:\n    path: /tmp/spans.json\n  otlp/unused:\n    endpoint: x\n",
        );
        let text = text.replace("  extensions: [health_check]\n", "");
        let (config, diags) = run(&text);
        assert!(config.is_some(), "{:#?}", rendered(&diags));
        assert!(diags.iter().all(|d| d.severity == Severity::Warning));
        assert_has(
            &diags,
            "warning: pipeline.yaml:17: exporters.otlp/unused: exporter `otlp/unused` is defined but not used by any pipeline\n  help: add it to a pipeline under `service.pipelines`, or remove it",
        );
        assert_has(
            &diags,
            "warning: pipeline.yaml:20: extensions.health_check: extension `health_check` is defined but not enabled, so it will not run\n  help: list it under `service.extensions`, or remove it",
        );
        assert_eq!(diags.len(), 2);
    }

    const WITH_CONNECTOR: &str = "\
receivers:
  otlp:
exporters:
  otlp:
    endpoint: backend:4317
connectors:
  count:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp, count]
    metrics:
      receivers: [otlp, count]
      exporters: [otlp]
";

    #[test]
    fn a_connector_joins_a_pipeline_it_consumes_to_one_it_emits_into() {
        let (config, diags) = run(WITH_CONNECTOR);
        assert!(diags.is_empty(), "{:#?}", rendered(&diags));
        let config = config.unwrap();
        let count = ComponentId::new("count");
        assert!(config.connectors.contains_key(&count));
        let pipelines = &config.service.pipelines;
        assert!(
            pipelines[&"traces".parse().unwrap()]
                .exporters
                .contains(&count)
        );
        assert!(
            pipelines[&"metrics".parse().unwrap()]
                .receivers
                .contains(&count)
        );
    }

    #[test]
    fn a_connector_is_checked_against_the_signals_on_each_side() {
        let text = "\
receivers:
  otlp:
exporters:
  otlp:
    endpoint: backend:4317
connectors:
  count:
service:
  pipelines:
    traces:
      receivers: [count]
      exporters: [otlp]
    metrics:
      receivers: [otlp]
      exporters: [count]
";
        let (config, diags) = run(text);
        assert!(config.is_none());
        assert_has(
            &diags,
            "error: pipeline.yaml:11: service.pipelines.traces.receivers[0]: connector `count` does not emit signal `traces`, so it cannot be a receiver of pipeline `traces`\n  help: `count` emits `metrics`; list it under `receivers` of such a pipeline",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:15: service.pipelines.metrics.exporters[0]: connector `count` does not consume signal `metrics`, so it cannot be an exporter of pipeline `metrics`\n  help: `count` consumes `traces`, `logs`; list it under `exporters` of such a pipeline",
        );
    }

    #[test]
    fn a_connector_needs_both_sides() {
        let text = WITH_CONNECTOR.replace(
            "      receivers: [otlp, count]\n",
            "      receivers: [otlp]\n",
        );
        let (config, diags) = run(&text);
        assert!(config.is_none());
        assert_has(
            &diags,
            "error: pipeline.yaml:12: service.pipelines.traces.exporters[1]: connector `count` is an exporter of pipeline `traces` but no pipeline receives from it, so what it derives would go nowhere\n  help: list `count` under `receivers` of the pipeline that should get its output, e.g. `metrics: {receivers: [count], exporters: [...]}`",
        );
        let text = WITH_CONNECTOR.replace(
            "      exporters: [otlp, count]\n",
            "      exporters: [otlp]\n",
        );
        let (_, diags) = run(&text);
        assert_has(
            &diags,
            "error: pipeline.yaml:14: service.pipelines.metrics.receivers[1]: connector `count` is a receiver of pipeline `metrics` but no pipeline exports to it, so it would never get data\n  help: list `count` under `exporters` of the pipeline it should read, e.g. `traces: {receivers: [otlp], exporters: [count]}`",
        );
    }

    #[test]
    fn connectors_may_not_make_a_loop() {
        let text = "\
receivers:
  otlp:
exporters:
  otlp:
    endpoint: backend:4317
connectors:
  forward/a:
  forward/b:
service:
  pipelines:
    traces/one:
      receivers: [otlp, forward/b]
      exporters: [forward/a]
    traces/two:
      receivers: [forward/a]
      exporters: [otlp, forward/b]
";
        let (config, diags) = run(text);
        assert!(config.is_none());
        assert_has(
            &diags,
            "error: pipeline.yaml:11: service.pipelines.traces/one: connectors make the pipelines a loop: `traces/one` -> forward/a -> `traces/two` -> forward/b -> `traces/one`\n  help: a connector's output must not flow back into a pipeline that feeds it",
        );
    }

    #[test]
    fn connectors_must_be_defined_and_known() {
        let text = GOOD.replace(
            "      exporters: [otlp/backend, file]\n",
            "      exporters: [otlp/backend, file, spanmetrics]\n",
        ) + "connectors:\n  spanmetrics:\n";
        let (config, diags) = run(&text);
        assert!(config.is_none());
        assert_has(
            &diags,
            "error: pipeline.yaml:33: connectors.spanmetrics: unknown connector type `spanmetrics`\n  help: valid connector types: `count`, `forward`",
        );
        // Being unknown is reported once; the pipeline reference resolves to the definition.
        assert_eq!(
            diags.iter().filter(|d| d.is_error()).count(),
            1,
            "{:#?}",
            rendered(&diags)
        );
    }

    #[test]
    fn service_level_problems() {
        let (_, diags) = run("receivers:\n  otlp:\n");
        assert!(
            rendered(&diags)
                .iter()
                .any(|d| d.contains("service: missing `service` section"))
        );
        let (_, diags) = run(
            "service:\n  pipelines: {}\n  extensions: [nope]\n  telemetry:\n    logs:\n      format: xml\n",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:2: service.pipelines: no pipelines are defined, so nothing would run\n  help: add e.g. `traces: {receivers: [otlp], exporters: [debug]}`",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:3: service.extensions[0]: extension `nope` is not defined under `extensions`\n  help: define it under `extensions`",
        );
        assert_has(
            &diags,
            "error: pipeline.yaml:6: service.telemetry.logs.format: expected one of `text`, `json`, found a string `xml`",
        );
    }

    #[test]
    fn toml_and_json_configs_validate_with_locations() {
        let toml = "\
[receivers.otlp]

[exporters.\"otlp/backend\"]
endpont = \"x\"

[service.pipelines.traces]
receivers = [\"otlp\"]
exporters = [\"otlp/backend\"]
";
        let loaded = Loaded::from_str_with_env(toml, Format::Toml, "p.toml", &env).unwrap();
        let (_, diags) = validate(&loaded, &TestCatalog);
        assert_has(
            &diags,
            "error: p.toml:4: exporters.otlp/backend.endpont: unknown key `endpont`\n  help: did you mean `endpoint`?",
        );
        let json = "{\n  \"receivers\": {\"otlp\": null},\n  \"exporters\": {\"file\": {\"path\": 7}},\n  \"service\": {\"pipelines\": {\"traces\": {\"receivers\": [\"otlp\"], \"exporters\": [\"file\"]}}}\n}\n";
        let loaded = Loaded::from_str_with_env(json, Format::Json, "p.json", &env).unwrap();
        let (_, diags) = validate(&loaded, &TestCatalog);
        assert_has(
            &diags,
            "error: p.json:3: exporters.file.path: expected a string, found an integer `7`",
        );
        assert_eq!(diags.len(), 1);
    }

    #[test]
    fn merged_files_point_at_the_file_that_set_the_value() {
        let dir = crate::load::tests::TempDir::new();
        let a = dir.write("a.yaml", GOOD);
        let b = dir.write("b.yaml", "processors:\n  batch:\n    send_batch_size: 0\n");
        let loaded = Loaded::from_files_with_env(&[a, b.clone()], &env).unwrap();
        let (_, diags) = validate(&loaded, &TestCatalog);
        assert_eq!(diags.len(), 1, "{:#?}", rendered(&diags));
        assert_eq!(diags[0].location.as_ref().unwrap().file, b);
        assert_eq!(diags[0].location.as_ref().unwrap().line, 3);
    }
}
