//! A small JSON Schema validator over `serde_json::Value`, written for the schemas `schemars`
//! generates, with messages meant for people editing YAML.
//!
//! Supported: `$ref` (JSON pointers into the same document, e.g. `#/$defs/X`), `type` (one or
//! several, incl. `null`), `properties`, `required`, `additionalProperties` (false or a schema),
//! `patternProperties`, `unevaluatedProperties: false` (approximated), `enum`, `const`,
//! `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`, integer `format`s (`uint32`...),
//! `minLength`/`maxLength`, `pattern`, our `humantime-duration` and `byte-size` formats, `items`,
//! `prefixItems`, `minItems`/`maxItems`, `uniqueItems`, `allOf`, `anyOf`/`oneOf` (any branch
//! validating is accepted; otherwise the most plausible branch's problems are reported).
//! Unknown keywords are ignored. Every problem is reported, each with its full key path.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::locate::{join_index, join_key};
use crate::suggest::{did_you_mean, help_for_unknown, quoted_list};
use crate::values::{
    BYTE_SIZE_FORMAT, BYTE_SIZE_HELP, ByteSize, DURATION_FORMAT, DURATION_HELP, parse_duration,
};

/// What kind of problem, used to rank `anyOf`/`oneOf` branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProblemKind {
    /// The value has the wrong type.
    Type,
    /// The value is not one of the allowed literals (`enum`/`const`).
    Literal,
    /// Anything else.
    Other,
}

/// One problem found in an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub path: String,
    pub message: String,
    pub help: Option<String>,
    pub kind: ProblemKind,
}

/// Refuses to follow `$ref` chains deeper than this (guards against `{"$ref": "#"}` loops).
const MAX_DEPTH: usize = 128;

/// Validates `instance` (found at `path`) against the schema document `root`.
pub(crate) fn check(root: &Value, instance: &Value, path: &str) -> Vec<Problem> {
    let checker = Checker {
        root,
        regexes: RefCell::new(HashMap::new()),
    };
    let mut out = Vec::new();
    checker.validate(root, instance, path, 0, &mut out);
    out
}

struct Checker<'a> {
    root: &'a Value,
    regexes: RefCell<HashMap<String, Option<regex::Regex>>>,
}

/// "a string", "an integer"... for messages.
fn type_phrase(t: &str) -> &'static str {
    match t {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "object" => "a mapping",
        "array" => "a list",
        "null" => "null",
        _ => "a value of an unknown type",
    }
}

/// Describes a value for "found ..." messages: "a string `abc`", "a list", "null".
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean `{b}`"),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("an integer `{n}`"),
        Value::Number(n) => format!("a number `{n}`"),
        Value::String(s) => {
            let shown: String = s.chars().take(60).collect();
            let ellipsis = if s.chars().count() > 60 { "…" } else { "" };
            format!("a string `{shown}{ellipsis}`")
        }
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn is_integer(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.is_i64() || n.is_u64())
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => is_integer(v),
        _ => true,
    }
}

fn types_of(schema: &Map<String, Value>) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// Renders a literal for messages: strings bare, everything else as JSON.
fn literal(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Integer bounds implied by a `format` such as `uint32`.
fn format_bounds(format: &str) -> Option<(f64, f64)> {
    Some(match format {
        "uint8" => (0.0, u8::MAX as f64),
        "uint16" => (0.0, u16::MAX as f64),
        "uint32" => (0.0, u32::MAX as f64),
        "uint64" | "uint" => (0.0, u64::MAX as f64),
        "int8" => (i8::MIN as f64, i8::MAX as f64),
        "int16" => (i16::MIN as f64, i16::MAX as f64),
        "int32" => (i32::MIN as f64, i32::MAX as f64),
        "int64" | "int" => (i64::MIN as f64, i64::MAX as f64),
        _ => return None,
    })
}

fn problem(path: &str, message: String, help: Option<String>, kind: ProblemKind) -> Problem {
    Problem {
        path: path.to_string(),
        message,
        help,
        kind,
    }
}

/// Unescapes one JSON pointer token.
fn unescape_token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

impl<'a> Checker<'a> {
    /// Resolves a `$ref` inside the root document.
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        let mut cur = self.root;
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = unescape_token(token);
            cur = match cur {
                Value::Object(m) => m.get(&token)?,
                Value::Array(a) => a.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Follows `$ref`s until a schema without one (or the depth limit).
    fn deref(&self, mut schema: &'a Value) -> &'a Value {
        for _ in 0..MAX_DEPTH {
            match schema.get("$ref").and_then(Value::as_str) {
                Some(r) => match self.resolve(r) {
                    Some(s) => schema = s,
                    None => return schema,
                },
                None => return schema,
            }
        }
        schema
    }

    fn regex(&self, pattern: &str) -> Option<regex::Regex> {
        self.regexes
            .borrow_mut()
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok())
            .clone()
    }

    fn validate(
        &self,
        schema: &'a Value,
        inst: &Value,
        path: &str,
        depth: usize,
        out: &mut Vec<Problem>,
    ) {
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                out.push(problem(
                    path,
                    "no value is allowed here".into(),
                    None,
                    ProblemKind::Other,
                ));
                return;
            }
            Value::Object(m) => m,
            _ => return,
        };
        if depth > MAX_DEPTH {
            return;
        }
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match self.resolve(r) {
                Some(target) => self.validate(target, inst, path, depth + 1, out),
                None => out.push(problem(
                    path,
                    format!("internal error: the component schema refers to `{r}`, which it does not define"),
                    None,
                    ProblemKind::Other,
                )),
            }
        }
        let format = schema.get("format").and_then(Value::as_str);
        if let Some(types) = types_of(schema)
            && !types.iter().any(|t| type_matches(t, inst))
        {
            let expected: Vec<&str> = types.iter().map(|t| type_phrase(t)).collect();
            let help = match (format, inst) {
                (Some(DURATION_FORMAT), _) => Some(DURATION_HELP.to_string()),
                (Some(BYTE_SIZE_FORMAT), _) => Some(BYTE_SIZE_HELP.to_string()),
                (_, Value::String(s))
                    if types.contains(&"integer") && s.trim().parse::<i64>().is_ok() =>
                {
                    Some("remove the quotes to write a number".into())
                }
                _ => None,
            };
            out.push(problem(
                path,
                format!(
                    "expected {}, found {}",
                    expected.join(" or "),
                    describe(inst)
                ),
                help,
                ProblemKind::Type,
            ));
            return;
        }
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(inst)
        {
            out.push(self.literal_problem(path, allowed.iter().collect(), inst));
        }
        if let Some(c) = schema.get("const")
            && c != inst
        {
            out.push(self.literal_problem(path, vec![c], inst));
        }
        match inst {
            Value::Number(n) => self.check_number(schema, n, format, path, out),
            Value::String(s) => self.check_string(schema, s, format, path, out),
            Value::Object(m) => self.check_object(schema, m, path, depth, out),
            Value::Array(a) => self.check_array(schema, a, path, depth, out),
            _ => {}
        }
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for sub in all {
                self.validate(sub, inst, path, depth + 1, out);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = schema.get(key) {
                self.check_branches(branches, inst, path, depth, out);
            }
        }
    }

    fn literal_problem(&self, path: &str, allowed: Vec<&Value>, inst: &Value) -> Problem {
        let names: Vec<String> = allowed.iter().map(|v| literal(v)).collect();
        let message = if names.len() == 1 {
            format!("must be `{}`, found {}", names[0], describe(inst))
        } else {
            format!(
                "expected one of {}, found {}",
                quoted_list(&names),
                describe(inst)
            )
        };
        let help = inst
            .as_str()
            .and_then(|s| did_you_mean(s, &names))
            .map(|s| format!("did you mean `{s}`?"));
        problem(path, message, help, ProblemKind::Literal)
    }

    fn check_number(
        &self,
        schema: &Map<String, Value>,
        n: &serde_json::Number,
        format: Option<&str>,
        path: &str,
        out: &mut Vec<Problem>,
    ) {
        let Some(v) = n.as_f64() else { return };
        let get = |k: &str| schema.get(k).and_then(Value::as_f64);
        let shown = |x: f64| {
            Value::from(x)
                .to_string()
                .trim_end_matches(".0")
                .to_string()
        };
        let bounds = format.and_then(format_bounds);
        let min = match (get("minimum"), bounds) {
            (Some(m), Some((b, _))) => Some(m.max(b)),
            (m, b) => m.or(b.map(|b| b.0)),
        };
        let max = match (get("maximum"), bounds) {
            (Some(m), Some((_, b))) => Some(m.min(b)),
            (m, b) => m.or(b.map(|b| b.1)),
        };
        if let Some(min) = min.filter(|m| v < *m) {
            out.push(problem(
                path,
                format!("must be at least {}, found {n}", shown(min)),
                None,
                ProblemKind::Other,
            ));
        }
        if let Some(max) = max.filter(|m| v > *m) {
            out.push(problem(
                path,
                format!("must be at most {}, found {n}", shown(max)),
                None,
                ProblemKind::Other,
            ));
        }
        if let Some(m) = get("exclusiveMinimum").filter(|m| v <= *m) {
            out.push(problem(
                path,
                format!("must be greater than {}, found {n}", shown(m)),
                None,
                ProblemKind::Other,
            ));
        }
        if let Some(m) = get("exclusiveMaximum").filter(|m| v >= *m) {
            out.push(problem(
                path,
                format!("must be less than {}, found {n}", shown(m)),
                None,
                ProblemKind::Other,
            ));
        }
    }

    fn check_string(
        &self,
        schema: &Map<String, Value>,
        s: &str,
        format: Option<&str>,
        path: &str,
        out: &mut Vec<Problem>,
    ) {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            let message = if min == 1 {
                "must not be empty".to_string()
            } else {
                format!("must be at least {min} characters long, found {len}")
            };
            out.push(problem(path, message, None, ProblemKind::Other));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            out.push(problem(
                path,
                format!("must be at most {max} characters long, found {len}"),
                None,
                ProblemKind::Other,
            ));
        }
        match format {
            Some(DURATION_FORMAT) => {
                if let Err(e) = parse_duration(s) {
                    out.push(problem(
                        path,
                        e,
                        Some(DURATION_HELP.into()),
                        ProblemKind::Other,
                    ));
                }
                return;
            }
            Some(BYTE_SIZE_FORMAT) => {
                if let Err(e) = s.parse::<ByteSize>() {
                    out.push(problem(
                        path,
                        e,
                        Some(BYTE_SIZE_HELP.into()),
                        ProblemKind::Other,
                    ));
                }
                return;
            }
            _ => {}
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && let Some(re) = self.regex(pattern)
            && !re.is_match(s)
        {
            out.push(problem(
                path,
                format!("`{s}` does not match the pattern `{pattern}`"),
                schema
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                ProblemKind::Other,
            ));
        }
    }

    /// Property names a schema (and its combinators) declares, for `unevaluatedProperties`.
    fn declared_properties(&self, schema: &'a Value, depth: usize, names: &mut Vec<String>) {
        if depth > MAX_DEPTH {
            return;
        }
        let schema = self.deref(schema);
        if let Some(Value::Object(props)) = schema.get("properties") {
            names.extend(props.keys().cloned());
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(subs)) = schema.get(key) {
                for sub in subs {
                    self.declared_properties(sub, depth + 1, names);
                }
            }
        }
    }

    fn check_object(
        &self,
        schema: &'a Map<String, Value>,
        m: &Map<String, Value>,
        path: &str,
        depth: usize,
        out: &mut Vec<Problem>,
    ) {
        let empty = Map::new();
        let props = match schema.get("properties") {
            Some(Value::Object(p)) => p,
            _ => &empty,
        };
        for (k, sub) in props {
            if let Some(v) = m.get(k) {
                self.validate(sub, v, &join_key(path, k), depth + 1, out);
            }
        }
        if let Some(Value::Array(required)) = schema.get("required") {
            for k in required.iter().filter_map(Value::as_str) {
                if !m.contains_key(k) {
                    out.push(problem(
                        &join_key(path, k),
                        format!("missing required key `{k}`"),
                        None,
                        ProblemKind::Other,
                    ));
                }
            }
        }
        let pattern_props = match schema.get("patternProperties") {
            Some(Value::Object(p)) => Some(p),
            _ => None,
        };
        let additional = schema.get("additionalProperties");
        let unevaluated_closed = additional.is_none()
            && matches!(
                schema.get("unevaluatedProperties"),
                Some(Value::Bool(false))
            );
        let mut known: Vec<String> = props.keys().cloned().collect();
        if unevaluated_closed {
            let obj = Value::Object(schema.clone());
            let mut names = Vec::new();
            self.declared_properties(&obj, depth + 1, &mut names);
            known.extend(names);
        }
        for (k, v) in m {
            if props.contains_key(k) {
                continue;
            }
            let key_path = join_key(path, k);
            let mut matched = false;
            if let Some(pp) = pattern_props {
                for (pattern, sub) in pp {
                    if self.regex(pattern).is_some_and(|re| re.is_match(k)) {
                        matched = true;
                        self.validate(sub, v, &key_path, depth + 1, out);
                    }
                }
            }
            if matched {
                continue;
            }
            let closed = matches!(additional, Some(Value::Bool(false)))
                || (unevaluated_closed && !known.contains(k));
            if closed {
                let help = if known.is_empty() {
                    "no keys are allowed here".to_string()
                } else {
                    help_for_unknown(k, &known, "keys here")
                };
                out.push(problem(
                    &key_path,
                    format!("unknown key `{k}`"),
                    Some(help),
                    ProblemKind::Other,
                ));
            } else if let Some(sub @ Value::Object(_)) = additional {
                self.validate(sub, v, &key_path, depth + 1, out);
            }
        }
    }

    fn check_array(
        &self,
        schema: &'a Map<String, Value>,
        a: &[Value],
        path: &str,
        depth: usize,
        out: &mut Vec<Problem>,
    ) {
        let prefix = match schema.get("prefixItems") {
            Some(Value::Array(p)) => p.as_slice(),
            _ => &[],
        };
        for (i, item) in a.iter().enumerate() {
            let sub = prefix.get(i).or_else(|| schema.get("items"));
            if let Some(sub) = sub {
                self.validate(sub, item, &join_index(path, i), depth + 1, out);
            }
        }
        let n = a.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && n < min
        {
            let message = if min == 1 {
                "must not be empty".to_string()
            } else {
                format!("must have at least {min} items, found {n}")
            };
            out.push(problem(path, message, None, ProblemKind::Other));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && n > max
        {
            out.push(problem(
                path,
                format!("must have at most {max} items, found {n}"),
                None,
                ProblemKind::Other,
            ));
        }
        if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
            for (i, item) in a.iter().enumerate() {
                if a[..i].contains(item) {
                    out.push(problem(
                        &join_index(path, i),
                        format!("duplicate item `{}`", literal(item)),
                        Some("list each value once".into()),
                        ProblemKind::Other,
                    ));
                }
            }
        }
    }

    /// The literal values a branch allows, when it is only a `const`/`enum`.
    fn literals_of(&self, branch: &'a Value) -> Option<Vec<&'a Value>> {
        let b = self.deref(branch);
        if let Some(c) = b.get("const") {
            return Some(vec![c]);
        }
        if let Some(Value::Array(e)) = b.get("enum") {
            return Some(e.iter().collect());
        }
        None
    }

    /// Whether the branch's top-level `type` admits the instance at all.
    fn admits_type(&self, branch: &'a Value, inst: &Value) -> bool {
        let b = self.deref(branch);
        match b.as_object().and_then(types_of) {
            Some(types) => types.iter().any(|t| type_matches(t, inst)),
            None => !matches!(b, Value::Bool(false)),
        }
    }

    fn branch_types(&self, branch: &'a Value, acc: &mut Vec<&'static str>) {
        let b = self.deref(branch);
        if let Some(types) = b.as_object().and_then(types_of) {
            for t in types {
                let p = type_phrase(t);
                if !acc.contains(&p) {
                    acc.push(p);
                }
            }
        }
    }

    fn check_branches(
        &self,
        branches: &'a [Value],
        inst: &Value,
        path: &str,
        depth: usize,
        out: &mut Vec<Problem>,
    ) {
        let mut results = Vec::with_capacity(branches.len());
        for b in branches {
            let mut errs = Vec::new();
            self.validate(b, inst, path, depth + 1, &mut errs);
            if errs.is_empty() {
                return;
            }
            results.push(errs);
        }
        if results.is_empty() {
            return;
        }
        // Literal alternatives (unit enum variants) that fail are summarised together.
        let literals: Vec<&Value> = branches
            .iter()
            .filter(|b| self.admits_type(b, inst))
            .filter_map(|b| self.literals_of(b))
            .flatten()
            .collect();
        let structural: Vec<(usize, usize)> = branches
            .iter()
            .enumerate()
            .filter(|(_, b)| self.admits_type(b, inst) && self.literals_of(b).is_none())
            .map(|(i, _)| {
                let score = results[i]
                    .iter()
                    .map(|p| match p.kind {
                        ProblemKind::Type if p.path == path => 1000,
                        ProblemKind::Literal
                            if crate::locate::parent_path(&p.path) == Some(path) =>
                        {
                            100
                        }
                        ProblemKind::Type => 10,
                        _ => 1,
                    })
                    .sum::<usize>();
                (score, i)
            })
            .collect();
        if let Some(&(_, best)) = structural.iter().min() {
            out.extend(results.swap_remove(best));
            return;
        }
        if !literals.is_empty() {
            out.push(self.literal_problem(path, literals, inst));
            return;
        }
        let mut types = Vec::new();
        for b in branches {
            self.branch_types(b, &mut types);
        }
        let message = if types.is_empty() {
            format!("{} does not match any allowed form", describe(inst))
        } else {
            format!("expected {}, found {}", types.join(" or "), describe(inst))
        };
        out.push(problem(path, message, None, ProblemKind::Type));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ByteSize, DurationValue};
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Retry {
        #[schemars(range(min = 1, max = 10))]
        attempts: u32,
        max_elapsed_time: DurationValue,
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Compression {
        None,
        Gzip,
        /// Documented variants make schemars emit a oneOf of consts.
        Zstd,
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    enum Auth {
        Anonymous,
        Basic { user: String, password: String },
        Bearer(String),
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    enum Policy {
        Latency { threshold_ms: u64 },
        Probabilistic { percent: f64 },
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Body {
        endpoint: String,
        #[serde(default)]
        retry: Option<Retry>,
        #[serde(default)]
        compression: Option<Compression>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        queue_size: Option<ByteSize>,
        #[serde(default)]
        auth: Option<Auth>,
        #[serde(default)]
        policies: Vec<Policy>,
        #[serde(default)]
        #[schemars(length(min = 1))]
        name: Option<String>,
        #[serde(default)]
        ratio: Option<f64>,
    }

    fn run(inst: Value) -> Vec<(String, String)> {
        let schema = schemars::schema_for!(Body);
        check(schema.as_value(), &inst, "exporters.x")
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn valid_body_passes_and_deserializes() {
        let v = json!({
            "endpoint": "a:1",
            "retry": {"attempts": 3, "max_elapsed_time": "1m30s"},
            "compression": "gzip",
            "headers": {"x": "y"},
            "tags": ["a"],
            "queue_size": "4MiB",
            "auth": {"basic": {"user": "u", "password": "p"}},
            "policies": [{"kind": "latency", "threshold_ms": 5}],
            "ratio": 0.5
        });
        assert_eq!(run(v.clone()), vec![]);
        assert!(serde_json::from_value::<Body>(v).is_ok());
        assert_eq!(
            run(json!({"endpoint": "a", "auth": "anonymous", "queue_size": 5})),
            vec![]
        );
        assert_eq!(
            run(json!({"endpoint": "a", "auth": {"bearer": "t"}})),
            vec![]
        );
    }

    #[test]
    fn reports_every_problem_with_paths() {
        let got = run(json!({
            "endpiont": "a:1",
            "retry": {"attempts": 0, "max_elapsed_time": "5x", "extra": 1},
            "headers": {"x": 1},
            "tags": ["a", 2],
            "queue_size": "4 parsecs",
            "name": "",
            "ratio": "abc"
        }));
        let want = [
            ("exporters.x.endpiont", "unknown key `endpiont`"),
            ("exporters.x.endpoint", "missing required key `endpoint`"),
            ("exporters.x.retry.attempts", "must be at least 1, found 0"),
            ("exporters.x.retry.extra", "unknown key `extra`"),
            (
                "exporters.x.headers.x",
                "expected a string, found an integer `1`",
            ),
            (
                "exporters.x.tags[1]",
                "expected a string, found an integer `2`",
            ),
            ("exporters.x.name", "must not be empty"),
            (
                "exporters.x.ratio",
                "expected a number or null, found a string `abc`",
            ),
        ];
        for (path, msg) in want {
            assert!(
                got.iter().any(|(p, m)| p == path && m == msg),
                "missing ({path}, {msg}) in {got:#?}"
            );
        }
        assert!(
            got.iter()
                .any(|(p, m)| p == "exporters.x.retry.max_elapsed_time"
                    && m.starts_with("invalid duration `5x`")),
            "{got:#?}"
        );
        assert!(
            got.iter().any(|(p, m)| p == "exporters.x.queue_size"
                && m.contains("unknown unit `parsecs`")),
            "{got:#?}"
        );
    }

    #[test]
    fn unknown_key_help_suggests_siblings() {
        let schema = schemars::schema_for!(Body);
        let p = check(schema.as_value(), &json!({"endpiont": "a"}), "x");
        let unknown = p.iter().find(|p| p.message.contains("endpiont")).unwrap();
        assert_eq!(unknown.help.as_deref(), Some("did you mean `endpoint`?"));
        let p = check(
            schema.as_value(),
            &json!({"endpoint": "a", "zzzzzz": 1}),
            "x",
        );
        assert!(
            p[0].help
                .as_deref()
                .unwrap()
                .starts_with("valid keys here: ")
        );
    }

    #[test]
    fn enums_and_variants() {
        let got = run(json!({"endpoint": "a", "compression": "gzipp"}));
        assert_eq!(
            got,
            vec![(
                "exporters.x.compression".to_string(),
                "expected one of `none`, `gzip`, `zstd`, found a string `gzipp`".to_string()
            )]
        );
        let schema = schemars::schema_for!(Body);
        let p = check(
            schema.as_value(),
            &json!({"endpoint": "a", "compression": "gzipp"}),
            "x",
        );
        assert_eq!(p[0].help.as_deref(), Some("did you mean `gzip`?"));
        // A struct variant with a wrong field reports inside the variant.
        let got = run(json!({"endpoint": "a", "auth": {"basic": {"user": "u"}}}));
        assert_eq!(
            got,
            vec![(
                "exporters.x.auth.basic.password".to_string(),
                "missing required key `password`".to_string()
            )]
        );
        // Internally tagged: the branch whose tag matches wins.
        let got =
            run(json!({"endpoint": "a", "policies": [{"kind": "probabilistic", "percent": "x"}]}));
        assert_eq!(
            got,
            vec![(
                "exporters.x.policies[0].percent".to_string(),
                "expected a number, found a string `x`".to_string()
            )]
        );
        let got = run(json!({"endpoint": "a", "auth": 5}));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].1.starts_with("expected "), "{got:?}");
        assert!(got[0].1.ends_with("found an integer `5`"), "{got:?}");
    }

    #[test]
    fn type_help_for_durations_and_quoted_numbers() {
        let schema = schemars::schema_for!(Body);
        let p = check(
            schema.as_value(),
            &json!({"endpoint": "a", "retry": {"attempts": "3", "max_elapsed_time": 5}}),
            "x",
        );
        let attempts = p.iter().find(|p| p.path == "x.retry.attempts").unwrap();
        assert_eq!(attempts.message, "expected an integer, found a string `3`");
        assert_eq!(
            attempts.help.as_deref(),
            Some("remove the quotes to write a number")
        );
        let d = p
            .iter()
            .find(|p| p.path == "x.retry.max_elapsed_time")
            .unwrap();
        assert_eq!(d.message, "expected a string, found an integer `5`");
        assert_eq!(d.help.as_deref(), Some(DURATION_HELP));
    }

    #[test]
    fn numeric_bounds_and_formats() {
        let schema = json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "format": "uint8"},
                "b": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "c": {"type": "integer", "maximum": 10},
                "d": {"type": "integer"}
            }
        });
        let p = check(&schema, &json!({"a": 300, "b": 1, "c": 11, "d": 1.5}), "");
        let msgs: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            msgs,
            vec![
                "must be at most 255, found 300",
                "must be less than 1, found 1",
                "must be at most 10, found 11",
                "expected an integer, found a number `1.5`"
            ]
        );
    }

    #[test]
    fn misc_keywords() {
        let schema = json!({
            "$defs": {"S": {"type": "string", "pattern": "^[a-z]+$"}},
            "type": "object",
            "properties": {
                "list": {"type": "array", "items": {"$ref": "#/$defs/S"}, "minItems": 1, "uniqueItems": true},
                "all": {"allOf": [{"type": "integer"}, {"minimum": 5}]},
                "never": false
            },
            "patternProperties": {"^x-": {"type": "boolean"}},
            "additionalProperties": false
        });
        let p = check(
            &schema,
            &json!({"list": ["ab", "AB", "ab"], "all": 3, "x-ok": true, "x-bad": 1, "never": 1}),
            "",
        );
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert!(
            got.contains(&("list[1]", "`AB` does not match the pattern `^[a-z]+$`")),
            "{got:?}"
        );
        assert!(got.contains(&("list[2]", "duplicate item `ab`")), "{got:?}");
        assert!(
            got.contains(&("all", "must be at least 5, found 3")),
            "{got:?}"
        );
        assert!(
            got.contains(&("x-bad", "expected a boolean, found an integer `1`")),
            "{got:?}"
        );
        assert!(
            got.contains(&("never", "no value is allowed here")),
            "{got:?}"
        );
        assert_eq!(got.len(), 5, "{got:?}");
        let p = check(&schema, &json!({"list": []}), "");
        assert_eq!(p[0].message, "must not be empty");
    }

    #[test]
    fn recursive_refs_terminate() {
        let schema = json!({"$ref": "#"});
        assert!(check(&schema, &json!(1), "").is_empty());
        let schema = json!({"$ref": "#/$defs/missing"});
        assert!(
            check(&schema, &json!(1), "")[0]
                .message
                .contains("internal error")
        );
    }
}
