//! Locations: turning the byte spans of the spanned TOML parse into a [`ConfigError`]'s line,
//! column and dotted key (`imap.password`, `rules[2].sinks`, `sinks."my sink".url`).
//!
//! Guarantees: positions are 1-based and count characters, not bytes; the key named is the
//! innermost one whose key or value holds the span.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::ConfigError;
use crate::error::Locate;

/// The file being loaded, for turning spans into positions and key names.
pub(super) struct Context<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Context<'_> {
    pub(super) fn error(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.path.to_owned(),
            position: Some(line_column(self.text, span.start)),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }

    /// A TOML or deserialization error, with the key found from its span.
    pub(super) fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let span = error.span();
        let key = span.clone().and_then(|span| key_at(self.text, span));
        ConfigError {
            file: self.path.to_owned(),
            position: span.map(|s| line_column(self.text, s.start)),
            key,
            message: error.message().trim().to_owned(),
        }
    }
}

impl Locate for Context<'_> {
    fn at(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        self.error(span, key, message)
    }
}

pub(super) fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// 1-based line and column (in characters) of byte `offset`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The dotted key whose key or value holds `span`: the innermost one.
fn key_at(text: &str, span: Range<usize>) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut found = None;
    find_key(doc.get_ref(), "", &span, &mut found);
    found
}

fn find_key(table: &DeTable<'_>, prefix: &str, span: &Range<usize>, found: &mut Option<String>) {
    for (key, value) in table.iter() {
        let path = join_key(prefix, key.get_ref());
        let in_key = contains(&key.span(), span);
        if in_key || contains(&value.span(), span) {
            *found = Some(path.clone());
        }
        if in_key {
            continue;
        }
        find_in_value(value, &path, span, found);
    }
}

fn find_in_value(
    value: &Spanned<DeValue<'_>>,
    path: &str,
    span: &Range<usize>,
    found: &mut Option<String>,
) {
    match value.get_ref() {
        DeValue::Table(inner) => find_key(inner, path, span, found),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                // A `[[rules]]` item's span is only its header line: look inside tables anyway.
                let table = matches!(item.get_ref(), DeValue::Table(_));
                if table || contains(&item.span(), span) {
                    if table && contains(&item.span(), span) {
                        *found = Some(item_path.clone());
                    }
                    find_in_value(item, &item_path, span, found);
                }
            }
        }
        _ => {}
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
}

/// The span of the key at dotted `path` (only plain `a.b.c` paths).
pub(super) fn span_of_key(text: &str, path: &str) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, value) = table.get_key_value(part)?;
        if parts.peek().is_none() {
            return Some(key.span());
        }
        table = value.get_ref().as_table()?;
    }
    None
}
