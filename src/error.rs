//! Errors that more than one stage reports: a configuration error located in its file, and
//! the one way herald prints an error with its causes.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// A configuration that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line and column of the offending key or value, when known.
    pub position: Option<(usize, usize)>,
    /// The dotted key, e.g. `imap.password` or `rules[2].sinks`, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// What a rule's validation needs to report an error at a span.
pub(crate) trait Locate {
    /// An error at `span` for `key`.
    fn at(&self, span: Range<usize>, key: &str, message: String) -> ConfigError;
}

/// Displays an error and its causes on one line, `outer: inner: root` (what `{:#}` does for
/// `anyhow`), for any error type: `error = %chain(&error)` in a log line.
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Chain<'a> {
    Chain(error)
}

/// See [`chain`].
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_every_cause() {
        let error = anyhow::anyhow!("root").context("middle").context("outer");
        assert_eq!(chain(error.as_ref()).to_string(), "outer: middle: root");
    }
}
