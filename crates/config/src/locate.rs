//! Key path → line/column indexes for config files, so diagnostics can point at lines.
//!
//! YAML and JSON are indexed exactly with `yaml-rust2`'s event parser and its markers (JSON is
//! YAML as far as the parser is concerned). TOML is indexed best-effort by scanning lines for
//! `[table]`, `[[array]]` headers and `key = value` lines: keys inside inline tables
//! (`a = { b = 1 }`) and items of multi-line arrays are not indexed, so problems there point at
//! the nearest indexed ancestor instead.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};

/// Line and column (both 1-based) of each key path in one file.
pub(crate) type KeyIndex = HashMap<String, (usize, usize)>;

/// `parent.key`, or `key` at the root. The single place paths are built, so the validator's
/// paths and the index's paths always agree.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn join_index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// The path one level up: `a.b[2]` → `a.b` → `a` → ``; None at the root.
pub(crate) fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    match path.rfind(['.', '[']) {
        Some(i) => Some(&path[..i]),
        None => Some(""),
    }
}

/// A parse error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

/// Indexes a YAML (or JSON) document. Fails with the scanner's position on syntax errors.
pub(crate) fn yaml_index(text: &str) -> Result<KeyIndex, ParseError> {
    let mut index = KeyIndex::new();
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut documents = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| ParseError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let pos = (mark.line(), mark.col() + 1);
        let (is_start_map, is_start_seq) = match &event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(ParseError {
                        line: pos.0,
                        column: pos.1,
                        message: "a config file must hold exactly one YAML document".into(),
                    });
                }
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                continue;
            }
            Event::MappingStart(..) => (true, false),
            Event::SequenceStart(..) => (false, true),
            Event::Scalar(..) | Event::Alias(_) => (false, false),
            _ => continue,
        };
        let node_path = match stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                None => {
                    // This node is a key.
                    let Event::Scalar(key, ..) = &event else {
                        // Complex keys are not supported by the loader either; stop indexing.
                        return Ok(index);
                    };
                    let key_path = join_key(path, key);
                    index.entry(key_path).or_insert(pos);
                    *pending_key = Some(key.clone());
                    continue;
                }
                Some(key) => join_key(path, &key),
            },
            Some(Frame::Seq { path, next }) => {
                let p = join_index(path, *next);
                *next += 1;
                index.entry(p.clone()).or_insert(pos);
                p
            }
        };
        if is_start_map {
            stack.push(Frame::Map {
                path: node_path,
                pending_key: None,
            });
        } else if is_start_seq {
            stack.push(Frame::Seq {
                path: node_path,
                next: 0,
            });
        }
    }
    Ok(index)
}

/// Splits a TOML dotted key (`a."b.c".d`) into its parts; None if it does not look like a key.
fn toml_key_parts(key: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in key.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '.') => parts.push(std::mem::take(&mut cur).trim().to_string()),
            (None, c) if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/' => {
                cur.push(c)
            }
            (None, c) if c.is_whitespace() => {}
            (None, _) => return None,
        }
    }
    parts.push(cur.trim().to_string());
    if parts.iter().any(String::is_empty) {
        return None;
    }
    Some(parts)
}

/// The byte offset of the first `ch` outside quotes.
fn find_unquoted(line: &str, ch: char) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == ch => return Some(i),
            None => {}
        }
    }
    None
}

/// Best-effort TOML index; see the module docs for what it cannot see.
pub(crate) fn toml_index(text: &str) -> KeyIndex {
    let mut index = KeyIndex::new();
    let mut table = String::new();
    let mut array_counts: HashMap<String, usize> = HashMap::new();
    let mut in_multiline: Option<&str> = None;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        if let Some(delim) = in_multiline {
            if raw.matches(delim).count() % 2 == 1 {
                in_multiline = None;
            }
            continue;
        }
        let line = match find_unquoted(raw, '#') {
            Some(i) => &raw[..i],
            None => raw,
        };
        let indent = line.len() - line.trim_start().len();
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            if let Some(parts) = toml_key_parts(header) {
                let base = parts.join(".");
                let count = array_counts.entry(base.clone()).or_insert(0);
                table = join_index(&base, *count);
                *count += 1;
                index.entry(base).or_insert((line_no, indent + 1));
                index.entry(table.clone()).or_insert((line_no, indent + 1));
            }
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if let Some(parts) = toml_key_parts(header) {
                table = parts.join(".");
                // Every prefix of a header is implicitly defined there too.
                let mut p = String::new();
                for part in &parts {
                    p = join_key(&p, part);
                    index.entry(p.clone()).or_insert((line_no, indent + 1));
                }
            }
            continue;
        }
        if let Some(eq) = find_unquoted(line, '=') {
            if let Some(parts) = toml_key_parts(&line[..eq]) {
                let mut p = table.clone();
                for part in &parts {
                    p = join_key(&p, part);
                    index.entry(p.clone()).or_insert((line_no, indent + 1));
                }
            }
            let value = &line[eq + 1..];
            for delim in ["\"\"\"", "'''"] {
                if value.matches(delim).count() % 2 == 1 {
                    in_multiline = Some(delim);
                }
            }
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(join_key("", "a"), "a");
        assert_eq!(join_key("a", "b/c"), "a.b/c");
        assert_eq!(join_index("a", 2), "a[2]");
        assert_eq!(parent_path("a.b[2]"), Some("a.b"));
        assert_eq!(parent_path("a.b"), Some("a"));
        assert_eq!(parent_path("a"), Some(""));
        assert_eq!(parent_path(""), None);
    }

    #[test]
    fn yaml_keys_have_lines() {
        let text = "receivers:\n  otlp/x:\n    protocols:\n      grpc:\n        endpoint: a\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp/x]\n      exporters:\n        - debug\n";
        let idx = yaml_index(text).unwrap();
        assert_eq!(idx["receivers"], (1, 1));
        assert_eq!(idx["receivers.otlp/x"], (2, 3));
        assert_eq!(idx["receivers.otlp/x.protocols.grpc.endpoint"], (5, 9));
        assert_eq!(idx["service.pipelines.traces.receivers[0]"].0, 9);
        assert_eq!(idx["service.pipelines.traces.exporters[0]"], (11, 11));
    }

    #[test]
    fn json_is_indexed_by_the_yaml_parser() {
        let text =
            "{\n  \"exporters\": {\n    \"debug\": {\n      \"verbosity\": 3\n    }\n  }\n}\n";
        let idx = yaml_index(text).unwrap();
        assert_eq!(idx["exporters.debug.verbosity"].0, 4);
    }

    #[test]
    fn yaml_syntax_errors_have_lines() {
        let err = yaml_index("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
        let err = yaml_index("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn toml_best_effort() {
        let text = "# c\n[receivers.\"otlp/x\".protocols]\ngrpc.endpoint = \"a\" # c\n\n[service.pipelines.traces]\nreceivers = [\"otlp/x\"]\ndoc = \"\"\"\nfake = 1\n\"\"\"\n[[exporters.list]]\na = 1\n[[exporters.list]]\na = 2\n";
        let idx = toml_index(text);
        assert_eq!(idx["receivers"].0, 2);
        assert_eq!(idx["receivers.otlp/x.protocols"].0, 2);
        assert_eq!(idx["receivers.otlp/x.protocols.grpc.endpoint"].0, 3);
        assert_eq!(idx["service.pipelines.traces.receivers"].0, 6);
        assert!(!idx.contains_key("service.pipelines.traces.fake"));
        assert_eq!(idx["exporters.list[1].a"].0, 13);
    }
}
