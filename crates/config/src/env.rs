//! `${env:VAR}` / `${env:VAR:-default}` substitution in string values.
//!
//! Substitution runs on parsed string values, never on keys, so a variable can never change the
//! shape of the document. `$$` is an escaped `$`. Shell-style `${VAR}` and other providers
//! (`${file:...}`) are rejected with a hint instead of being passed through silently.

use serde_json::Value;

/// Looks an environment variable up; injectable so tests need not touch the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One substitution problem inside one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubstError {
    pub message: String,
    pub help: Option<String>,
}

/// The result of substituting one string.
#[derive(Debug, PartialEq)]
pub(crate) struct Substituted {
    pub text: String,
    /// The whole input was exactly one `${env:...}` reference, so the result is re-typed.
    pub whole: bool,
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Substitutes every reference in `s`, collecting all problems.
pub(crate) fn substitute(s: &str, env: EnvLookup<'_>) -> Result<Substituted, Vec<SubstError>> {
    let mut out = String::with_capacity(s.len());
    let mut errors = Vec::new();
    let mut rest = s;
    let mut references = 0usize;
    let mut only_reference = true;
    while let Some(pos) = rest.find('$') {
        if pos > 0 {
            only_reference = false;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            only_reference = false;
            rest = tail;
            continue;
        }
        let Some(body_start) = after.strip_prefix('{') else {
            // A lone `$` is literal text.
            out.push('$');
            only_reference = false;
            rest = after;
            continue;
        };
        let Some(end) = body_start.find('}') else {
            errors.push(SubstError {
                message: format!("unterminated `${{` in `{s}`"),
                help: Some(
                    "close the reference with `}`, or write `$${` for a literal `${`".into(),
                ),
            });
            out.push_str(&rest[pos..]);
            rest = "";
            break;
        };
        let body = &body_start[..end];
        let reference = &rest[pos..pos + 3 + end];
        rest = &body_start[end + 1..];
        references += 1;
        match body.split_once(':') {
            Some(("env", spec)) => {
                let (name, default) = match spec.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (spec, None),
                };
                if !valid_var_name(name) {
                    errors.push(SubstError {
                        message: format!(
                            "invalid environment variable name `{name}` in `{reference}`"
                        ),
                        help: Some(
                            "names use ASCII letters, digits and `_`, and do not start with a digit; defaults are written `${env:NAME:-default}`"
                                .into(),
                        ),
                    });
                    continue;
                }
                match (env(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => errors.push(SubstError {
                        message: format!("environment variable `{name}` is not set"),
                        help: Some(format!(
                            "set `{name}`, or give a default: `${{env:{name}:-value}}`"
                        )),
                    }),
                }
            }
            Some((provider, _)) => errors.push(SubstError {
                message: format!("unsupported config provider `{provider}` in `{reference}`"),
                help: Some(
                    "only `${env:NAME}` and `${env:NAME:-default}` are supported; write `$$` for a literal `$`"
                        .into(),
                ),
            }),
            None => errors.push(SubstError {
                message: format!("unsupported substitution `{reference}`"),
                help: Some(format!(
                    "write `${{env:{body}}}` to read the environment variable, or `$${{{body}}}` for a literal `${{{body}}}`"
                )),
            }),
        }
    }
    if !rest.is_empty() {
        only_reference = false;
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(Substituted {
            text: out,
            whole: references == 1 && only_reference,
        })
    } else {
        Err(errors)
    }
}

/// Types a substituted string the way YAML types a plain scalar: `4317` is an integer, `true` a
/// boolean, `1.5` a float, empty or `null` is null, anything else stays a string.
pub(crate) fn retype(text: &str) -> Value {
    match yaml_rust2::Yaml::from_str(text) {
        yaml_rust2::Yaml::Integer(i) => Value::from(i),
        yaml_rust2::Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(text.to_string())),
        yaml_rust2::Yaml::Boolean(b) => Value::Bool(b),
        yaml_rust2::Yaml::Null => Value::Null,
        _ => Value::String(text.to_string()),
    }
}

/// Substitutes every string value under `value` (path `path`), reporting problems as
/// `(key_path, error)` pairs.
pub(crate) fn substitute_tree(
    value: &mut Value,
    path: &str,
    env: EnvLookup<'_>,
    problems: &mut Vec<(String, SubstError)>,
) {
    match value {
        Value::String(s) => {
            if !s.contains('$') {
                return;
            }
            match substitute(s, env) {
                Ok(Substituted { text, whole: true }) => *value = retype(&text),
                Ok(Substituted { text, whole: false }) => *s = text,
                Err(errs) => problems.extend(errs.into_iter().map(|e| (path.to_string(), e))),
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_tree(item, &crate::locate::join_index(path, i), env, problems);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                substitute_tree(v, &crate::locate::join_key(path, k), env, problems);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("4317".into()),
            "HOST" => Some("collector".into()),
            "FLAG" => Some("true".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn sub(s: &str) -> Result<Substituted, Vec<SubstError>> {
        substitute(s, &env)
    }

    #[test]
    fn substitutes_references_and_defaults() {
        assert_eq!(
            sub("${env:HOST}:${env:PORT}").unwrap().text,
            "collector:4317"
        );
        assert!(!sub("${env:HOST}:${env:PORT}").unwrap().whole);
        assert_eq!(sub("${env:NOPE:-fallback}").unwrap().text, "fallback");
        assert_eq!(sub("${env:EMPTY:-d}").unwrap().text, "d");
        assert_eq!(sub("${env:EMPTY}").unwrap().text, "");
        assert_eq!(sub("${env:NOPE:-}").unwrap().text, "");
        assert_eq!(sub("${env:NOPE:-a:b}").unwrap().text, "a:b");
        assert!(sub("${env:PORT}").unwrap().whole);
        assert!(!sub(" ${env:PORT}").unwrap().whole);
    }

    #[test]
    fn dollar_escapes() {
        assert_eq!(sub("cost: $$5").unwrap().text, "cost: $5");
        assert_eq!(sub("$${env:HOST}").unwrap().text, "${env:HOST}");
        assert_eq!(sub("a$b").unwrap().text, "a$b");
        assert_eq!(sub("end$").unwrap().text, "end$");
    }

    #[test]
    fn reports_problems() {
        let e = sub("${env:MISSING}").unwrap_err();
        assert_eq!(e[0].message, "environment variable `MISSING` is not set");
        assert!(
            e[0].help
                .as_deref()
                .unwrap()
                .contains("${env:MISSING:-value}")
        );
        let e = sub("${PORT}").unwrap_err();
        assert_eq!(e[0].message, "unsupported substitution `${PORT}`");
        assert!(e[0].help.as_deref().unwrap().contains("`${env:PORT}`"));
        let e = sub("${file:/x}").unwrap_err();
        assert!(e[0].message.contains("provider `file`"));
        let e = sub("${env:A").unwrap_err();
        assert!(e[0].message.contains("unterminated"));
        let e = sub("${env:1A}").unwrap_err();
        assert!(e[0].message.contains("invalid environment variable name"));
        // Every problem of a string is reported.
        assert_eq!(sub("${env:X1} ${env:X2}").unwrap_err().len(), 2);
    }

    #[test]
    fn whole_references_are_retyped() {
        let mut v = json!({
            "port": "${env:PORT}",
            "flag": "${env:FLAG}",
            "addr": "${env:HOST}:${env:PORT}",
            "ratio": "${env:R:-0.5}",
            "list": ["${env:PORT}", "x"],
            "${env:PORT}": "keys are never substituted"
        });
        let mut problems = Vec::new();
        substitute_tree(&mut v, "", &env, &mut problems);
        assert!(problems.is_empty());
        assert_eq!(
            v,
            json!({
                "port": 4317,
                "flag": true,
                "addr": "collector:4317",
                "ratio": 0.5,
                "list": [4317, "x"],
                "${env:PORT}": "keys are never substituted"
            })
        );
    }

    #[test]
    fn tree_problems_carry_paths() {
        let mut v = json!({"a": {"b": ["ok", "${env:NOPE}"]}});
        let mut problems = Vec::new();
        substitute_tree(&mut v, "", &env, &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "a.b[1]");
    }
}
