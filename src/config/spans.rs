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

    /// A TOML or deserialization error, with the key found from its span, in plain words
    /// (see [`plain_words`]).
    pub(super) fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let span = error.span();
        // A file that does not parse has no tree to find the key in: the line says it.
        let key = span.clone().and_then(|span| {
            key_at(self.text, span.clone()).or_else(|| key_on_line(self.text, span.start))
        });
        ConfigError {
            file: self.path.to_owned(),
            position: span.map(|s| line_column(self.text, s.start)),
            message: plain_words(error.message().trim(), key.as_deref()),
            key,
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

/// What toml and serde say, in words for the person editing the file: their messages name
/// Rust types (`expected u16`) and lexer states (`invalid float, expected `nan``). Never
/// quotes a string value, which may be a secret.
pub(super) fn plain_words(message: &str, key: Option<&str>) -> String {
    const VALUE_HELP: &str = "quote strings (\"like this\"); numbers are written 30 or 1.5, \
                              booleans true or false, durations as strings (\"30s\")";
    if message == "duplicate key" {
        let name = key.and_then(|k| k.rsplit('.').next()).unwrap_or("this key");
        return format!("duplicate key: {name} is already set earlier in this table; keep one");
    }
    if message.starts_with("invalid float")
        || message.starts_with("invalid integer")
        || message.starts_with("invalid boolean")
        || message.starts_with("invalid number")
        || message.starts_with("string values must be quoted")
    {
        return format!("not a value TOML knows: {VALUE_HELP}");
    }
    if message.starts_with("invalid basic string") || message.contains("literal string") {
        return "a string is not closed: its closing quote is missing".to_owned();
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!(
                "expected {}, found {}",
                expected_words(expected),
                found_words(found)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!(
                "{} is out of range: expected {}",
                found_words(found),
                expected_words(expected)
            );
        }
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return format!("{field} is required here and missing");
    }
    message.to_owned()
}

/// serde's `expected` (a Rust type or a visitor's phrase) in words.
fn expected_words(expected: &str) -> String {
    match expected {
        "u8" => "a whole number from 0 to 255".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "u32" | "u64" | "usize" => "a whole number, 0 or more".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list ([...])".into(),
        "a map" => "a table".into(),
        "socket address" => "an address and port such as \"127.0.0.1:9469\"".into(),
        other if other.starts_with("struct ") => "a table".into(),
        other => other.into(),
    }
}

/// serde's `unexpected` in words; the value itself only if it is a number or a boolean.
fn found_words(found: &str) -> String {
    let value = found
        .split_once('`')
        .and_then(|(_, rest)| rest.strip_suffix('`'));
    let kind = found.split('`').next().unwrap_or(found).trim();
    match (kind, value) {
        ("integer", Some(v)) => format!("the number {v}"),
        ("floating point", Some(v)) => format!("the number {}", v.to_lowercase()),
        ("boolean", Some(v)) => format!("the boolean {v}"),
        ("string" | "character", _) => "a string".into(),
        ("sequence", _) => "a list".into(),
        ("map", _) => "a table".into(),
        _ => kind.into(),
    }
}

/// The dotted key written on the line holding byte `offset`, for text that does not parse:
/// the table header above it (`[server]`, the third `[[rules]]` as `rules[2]`) and the key
/// before the line's `=`.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let (name, _) = line.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || name.starts_with('[') || name.starts_with('#') {
        return None;
    }
    let headers: Vec<&str> = before
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .collect();
    let prefix = headers.last().map(|header| {
        let array = header.starts_with("[[");
        let table = header
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim();
        if array {
            let index = headers
                .iter()
                .filter(|h| h.starts_with("[[") && h.trim_matches(['[', ']', ' ']) == table)
                .count()
                .saturating_sub(1);
            format!("{table}[{index}]")
        } else {
            table.to_owned()
        }
    });
    Some(match prefix {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}.{name}"),
        _ => name.to_owned(),
    })
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
