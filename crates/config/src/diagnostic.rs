//! Problem reports that point at the exact key and line, rendered ripgrep-style.

use std::fmt;
use std::path::PathBuf;

/// How bad a problem is: errors block startup, warnings are printed and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// The config works but probably not as intended (e.g. an unused component).
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// Where in which file a problem is, so users can jump straight to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file as given by the user (or the origin name for text loaded from memory).
    pub file: PathBuf,
    /// 1-based line. `0` means the problem concerns the whole file (e.g. it cannot be read)
    /// and no line is known; it is then not rendered.
    pub line: usize,
    /// 1-based column, `0` when unknown.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        Ok(())
    }
}

/// A precise problem report: what is wrong, at which key path, in which file and line, and how
/// to fix it. Validation returns every problem at once so users fix a file in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Dotted path of the offending key, e.g. `receivers.otlp.protocols.grpc.endpoint`;
    /// list items are written `[i]`. Empty when the problem concerns a whole file.
    pub key_path: String,
    /// The file and line, when known.
    pub location: Option<Location>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we know.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `key_path` without location; the validator fills the location in.
    pub fn error(key_path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            key_path: key_path.into(),
            location: None,
            message: message.into(),
            help: None,
        }
    }

    /// A warning at `key_path` without location.
    pub fn warning(key_path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(key_path, message)
        }
    }

    /// Adds a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the location.
    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    /// True for errors (the ones that block startup).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Renders `error: file:line: key.path: message` and an indented `help:` line.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_ripgrep() {
        let d = Diagnostic::error(
            "receivers.otlp.protocols.grpc.endpiont",
            "unknown key `endpiont`",
        )
        .with_help("did you mean `endpoint`?")
        .at(Some(Location {
            file: "pipeline.yaml".into(),
            line: 12,
            column: 9,
        }));
        assert_eq!(
            d.to_string(),
            "error: pipeline.yaml:12: receivers.otlp.protocols.grpc.endpiont: unknown key `endpiont`\n  help: did you mean `endpoint`?"
        );
        let w = Diagnostic::warning("receivers.zipkin", "unused");
        assert_eq!(w.to_string(), "warning: receivers.zipkin: unused");
        let whole = Diagnostic::error("", "cannot read file").at(Some(Location {
            file: "x.yaml".into(),
            line: 0,
            column: 0,
        }));
        assert_eq!(whole.to_string(), "error: x.yaml: cannot read file");
    }
}
