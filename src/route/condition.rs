//! A rule's `match`: the conditions as written ([`RawMatch`], [`Values`]), their validation,
//! and the compiled [`Condition`]s that matching tests.
//!
//! Guarantees: every kind, severity, glob, regex and header name is checked when the
//! configuration is read, with its location; testing a compiled condition compiles nothing
//! and allocates nothing (kinds and severities are bit sets), and the conditions of a rule
//! come out cheapest first.

use std::collections::BTreeMap;
use std::ops::Range;

use herald_bridges::text::one_line;
use herald_bridges::{Alert, Kind, Severity};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::explain::EXPLAIN_VALUE_CHARS;
use super::glob::{glob_regex, Patterns};
use crate::classify::Message;
use crate::error::{ConfigError, Locate};

/// `match = { ... }` as written. Read by hand because `header.NAME` keys are open-ended.
#[derive(Debug, Default)]
pub(super) struct RawMatch {
    kind: Option<Spanned<Values>>,
    host: Option<Spanned<Values>>,
    user: Option<Spanned<Values>>,
    command: Option<Spanned<Values>>,
    from: Option<Spanned<Values>>,
    to: Option<Spanned<Values>>,
    account: Option<Spanned<Values>>,
    mailbox: Option<Spanned<Values>>,
    subject: Option<Spanned<Values>>,
    body: Option<Spanned<Values>>,
    severity: Option<Spanned<Values>>,
    failed: Option<Spanned<bool>>,
    /// `header.NAME` conditions: (NAME, value), in the order written.
    headers: Vec<(String, Spanned<Values>)>,
}

/// The keys `match` accepts, for the "unknown field" error.
const MATCH_KEYS: &[&str] = &[
    "kind",
    "host",
    "user",
    "command",
    "from",
    "to",
    "account",
    "mailbox",
    "subject",
    "body",
    "header.NAME",
    "failed",
    "severity",
];

impl<'de> Deserialize<'de> for RawMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MatchVisitor;
        impl<'de> Visitor<'de> for MatchVisitor {
            type Value = RawMatch;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of conditions, e.g. { kind = \"cron\", failed = true }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMatch, A::Error> {
                let mut raw = RawMatch::default();
                while let Some(key) = map.next_key::<String>()? {
                    let slot = match key.as_str() {
                        "kind" => &mut raw.kind,
                        "host" => &mut raw.host,
                        "user" => &mut raw.user,
                        "command" => &mut raw.command,
                        "from" => &mut raw.from,
                        "to" => &mut raw.to,
                        "account" => &mut raw.account,
                        "mailbox" => &mut raw.mailbox,
                        "subject" => &mut raw.subject,
                        "body" => &mut raw.body,
                        "severity" => &mut raw.severity,
                        "failed" => {
                            raw.failed = Some(map.next_value()?);
                            continue;
                        }
                        // `header.X = ...` unquoted: TOML makes it the table `header = { X = ... }`.
                        "header" => {
                            let table: BTreeMap<String, Spanned<Values>> = map.next_value()?;
                            raw.headers.extend(table);
                            continue;
                        }
                        other => match other.strip_prefix("header.") {
                            Some(name) => {
                                raw.headers.push((name.to_owned(), map.next_value()?));
                                continue;
                            }
                            None => return Err(de::Error::unknown_field(other, MATCH_KEYS)),
                        },
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(raw)
            }
        }
        d.deserialize_map(MatchVisitor)
    }
}

/// A condition's value: one string, or a list of strings meaning "any of".
#[derive(Debug)]
enum Values {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValuesVisitor;
        impl<'de> Visitor<'de> for ValuesVisitor {
            type Value = Values;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Values, E> {
                Ok(Values::One(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Values, E> {
                Ok(Values::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(Values::Many(items))
            }
        }
        d.deserialize_any(ValuesVisitor)
    }
}

/// One value of a condition with where it was written and its key for errors.
pub(super) struct Item<'a> {
    pub(super) text: &'a str,
    pub(super) span: Range<usize>,
    pub(super) key: String,
}

/// The values of `value`, each with its span and key (`KEY` or `KEY[i]` in a list); an empty
/// list is an error, since it could never match.
fn items<'a>(
    value: &'a Spanned<Values>,
    key: &str,
    locate: &dyn Locate,
) -> Result<Vec<Item<'a>>, ConfigError> {
    match value.get_ref() {
        Values::One(text) => Ok(vec![Item {
            text,
            span: value.span(),
            key: key.to_owned(),
        }]),
        Values::Many(list) if list.is_empty() => Err(locate.at(
            value.span(),
            key,
            "an empty list matches nothing; remove the key to match everything".into(),
        )),
        Values::Many(list) => Ok(list
            .iter()
            .enumerate()
            .map(|(i, item)| Item {
                text: item.get_ref(),
                span: item.span(),
                key: format!("{key}[{i}]"),
            })
            .collect()),
    }
}

/// How `--explain` shows what a condition wanted: the value, or "one of a, b".
fn shown(items: &[Item<'_>]) -> String {
    match items {
        [one] => one.text.to_owned(),
        _ => {
            let texts: Vec<&str> = items.iter().map(|i| i.text).collect();
            format!("one of {}", texts.join(", "))
        }
    }
}

/// One bit per [`Kind`].
fn kind_bit(kind: Kind) -> u16 {
    1 << (kind as u16)
}

/// One bit per [`Severity`].
fn severity_bit(severity: Severity) -> u8 {
    1 << (severity as u8)
}

const SEVERITIES: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

/// `"warning"`, `">= warning"`, `"< critical"`, ... as a set of severities.
fn severity_set(text: &str) -> Option<u8> {
    let text = text.trim();
    type Compare = fn(&Severity, &Severity) -> bool;
    let (compare, name): (Compare, &str) = if let Some(rest) = text.strip_prefix(">=") {
        (Severity::ge, rest)
    } else if let Some(rest) = text.strip_prefix("<=") {
        (Severity::le, rest)
    } else if let Some(rest) = text.strip_prefix('>') {
        (Severity::gt, rest)
    } else if let Some(rest) = text.strip_prefix('<') {
        (Severity::lt, rest)
    } else {
        (Severity::eq, text)
    };
    let bound = SEVERITIES.into_iter().find(|s| s.as_str() == name.trim())?;
    Some(
        SEVERITIES
            .into_iter()
            .filter(|s| compare(s, &bound))
            .fold(0, |set, s| set | severity_bit(s)),
    )
}

/// What one condition tests.
#[derive(Debug, Clone)]
enum Test {
    Kind(u16),
    Severity(u8),
    Failed(bool),
    Host(Patterns),
    User(Patterns),
    Command(Patterns),
    From(Patterns),
    To(Patterns),
    Account(Patterns),
    Mailbox(Patterns),
    /// The header name as written, compared case-insensitively.
    Header(String, Patterns),
    Subject(Patterns),
    Body(Patterns),
}

/// One condition of a rule's `match`.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    /// What it tests, compiled.
    test: Test,
    /// The value as written, for `--explain`.
    expected: String,
}

impl Condition {
    /// Whether it holds. Compiles and allocates nothing.
    pub(super) fn holds(&self, message: &Message, alert: &Alert) -> bool {
        match &self.test {
            Test::Kind(set) => set & kind_bit(alert.kind) != 0,
            Test::Severity(set) => set & severity_bit(alert.severity) != 0,
            Test::Failed(want) => alert.failed == Some(*want),
            Test::Host(p) => alert.host.as_deref().is_some_and(|v| p.is_match(v)),
            Test::User(p) => alert.user.as_deref().is_some_and(|v| p.is_match(v)),
            Test::Command(p) => alert.command.as_deref().is_some_and(|v| p.is_match(v)),
            Test::From(p) => message.from.as_deref().is_some_and(|v| p.is_match(v)),
            Test::To(p) => message.to.iter().any(|v| p.is_match(v)),
            Test::Account(p) => alert.account.as_deref().is_some_and(|v| p.is_match(v)),
            Test::Mailbox(p) => alert.mailbox.as_deref().is_some_and(|v| p.is_match(v)),
            Test::Header(name, p) => message
                .headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && p.is_match(v)),
            Test::Subject(p) => p.is_match(&message.subject),
            Test::Body(p) => p.is_match(&message.body),
        }
    }

    /// The key as written in `match`.
    fn key(&self) -> String {
        match &self.test {
            Test::Kind(_) => "kind".into(),
            Test::Severity(_) => "severity".into(),
            Test::Failed(_) => "failed".into(),
            Test::Host(_) => "host".into(),
            Test::User(_) => "user".into(),
            Test::Command(_) => "command".into(),
            Test::From(_) => "from".into(),
            Test::To(_) => "to".into(),
            Test::Account(_) => "account".into(),
            Test::Mailbox(_) => "mailbox".into(),
            Test::Header(name, _) => format!("header.{name}"),
            Test::Subject(_) => "subject".into(),
            Test::Body(_) => "body".into(),
        }
    }

    /// Why it failed, for `--explain`: `kind: expected cron, got other`.
    pub(super) fn explain_failure(&self, message: &Message, alert: &Alert) -> String {
        let quote = |v: Option<&str>| match v {
            Some(v) => format!("{:?}", one_line(v, EXPLAIN_VALUE_CHARS)),
            None => "null".to_owned(),
        };
        let got = match &self.test {
            Test::Kind(_) => alert.kind.as_str().to_owned(),
            Test::Severity(_) => alert.severity.as_str().to_owned(),
            Test::Failed(_) => alert
                .failed
                .map_or_else(|| "null".to_owned(), |f| f.to_string()),
            Test::Host(_) => quote(alert.host.as_deref()),
            Test::User(_) => quote(alert.user.as_deref()),
            Test::Command(_) => quote(alert.command.as_deref()),
            Test::From(_) => quote(message.from.as_deref()),
            Test::Account(_) => quote(alert.account.as_deref()),
            Test::Mailbox(_) => quote(alert.mailbox.as_deref()),
            Test::To(_) if message.to.is_empty() => "no recipients".to_owned(),
            Test::To(_) => {
                let all: Vec<String> = message.to.iter().map(|t| quote(Some(t))).collect();
                all.join(", ")
            }
            Test::Header(name, _) => {
                let values: Vec<String> = message
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| quote(Some(v)))
                    .collect();
                if values.is_empty() {
                    "no such header".to_owned()
                } else {
                    values.join(", ")
                }
            }
            Test::Subject(_) => quote(Some(&message.subject)),
            Test::Body(_) => "no match in the body".to_owned(),
        };
        let expected = match &self.test {
            Test::Subject(_) | Test::Body(_) | Test::Header(..) => {
                format!("a match for {}", self.expected)
            }
            _ => self.expected.clone(),
        };
        format!("{}: expected {expected}, got {got}", self.key())
    }
}

impl RawMatch {
    pub(super) fn validate(
        &self,
        key: &str,
        locate: &dyn Locate,
    ) -> Result<Vec<Condition>, ConfigError> {
        let mut conditions = Vec::new();
        let sub = |name: &str| format!("{key}.{name}");
        // Cheapest first: bit tests, then short strings, then headers, subject and body.
        if let Some(value) = &self.kind {
            let items = items(value, &sub("kind"), locate)?;
            let mut set = 0;
            for item in &items {
                set |= kind_set(item, locate)?;
            }
            conditions.push(Condition {
                test: Test::Kind(set),
                expected: shown(&items),
            });
        }
        if let Some(value) = &self.severity {
            let items = items(value, &sub("severity"), locate)?;
            let mut set = 0;
            for item in &items {
                set |= severity_set(item.text).ok_or_else(|| {
                    locate.at(
                        item.span.clone(),
                        &item.key,
                        format!(
                            "unknown severity {:?} (info, warning or critical, optionally after >=, >, <= or <)",
                            item.text
                        ),
                    )
                })?;
            }
            conditions.push(Condition {
                test: Test::Severity(set),
                expected: shown(&items),
            });
        }
        if let Some(failed) = &self.failed {
            conditions.push(Condition {
                test: Test::Failed(*failed.get_ref()),
                expected: failed.get_ref().to_string(),
            });
        }
        type Build = fn(Patterns) -> Test;
        let globs: [(&str, &Option<Spanned<Values>>, bool, Build); 7] = [
            ("host", &self.host, true, Test::Host),
            ("user", &self.user, false, Test::User),
            ("command", &self.command, false, Test::Command),
            ("from", &self.from, true, Test::From),
            ("to", &self.to, true, Test::To),
            // Account names are herald's own; folder names are the server's, case-sensitive
            // (RFC 3501 §5.1) except INBOX, which herald's config spells as the server does.
            ("account", &self.account, false, Test::Account),
            ("mailbox", &self.mailbox, false, Test::Mailbox),
        ];
        for (name, value, case_insensitive, build) in globs {
            let Some(value) = value else { continue };
            let items = items(value, &sub(name), locate)?;
            conditions.push(Condition {
                test: build(Patterns::globs(&items, case_insensitive, locate)?),
                expected: shown(&items),
            });
        }
        for (name, value) in &self.headers {
            let header_key = sub(&format!("header.{name}"));
            let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if !valid {
                return Err(locate.at(
                    value.span(),
                    &header_key,
                    format!("invalid header name {name:?} (RFC 5322: printable ASCII, no `:`)"),
                ));
            }
            let items = items(value, &header_key, locate)?;
            conditions.push(Condition {
                test: Test::Header(name.clone(), Patterns::regexes(&items, locate)?),
                expected: shown(&items),
            });
        }
        for (name, value, build) in [
            ("subject", &self.subject, Test::Subject as Build),
            ("body", &self.body, Test::Body as Build),
        ] {
            let Some(value) = value else { continue };
            let items = items(value, &sub(name), locate)?;
            conditions.push(Condition {
                test: build(Patterns::regexes(&items, locate)?),
                expected: shown(&items),
            });
        }
        Ok(conditions)
    }
}

/// The kinds one `kind` value names: an exact name, or a glob that must match at least one.
fn kind_set(item: &Item<'_>, locate: &dyn Locate) -> Result<u16, ConfigError> {
    let names = || {
        let kinds: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        kinds.join(", ")
    };
    if item.text.contains(['*', '?', '[', '\\']) {
        let re = glob_regex(item.text, false).map_err(|m| {
            locate.at(
                item.span.clone(),
                &item.key,
                format!("invalid glob {:?}: {m}", item.text),
            )
        })?;
        let set = Kind::ALL
            .into_iter()
            .filter(|k| re.is_match(k.as_str()))
            .fold(0, |set, k| set | kind_bit(k));
        if set == 0 {
            return Err(locate.at(
                item.span.clone(),
                &item.key,
                format!("{:?} matches no kind (kinds: {})", item.text, names()),
            ));
        }
        return Ok(set);
    }
    Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == item.text)
        .map(kind_bit)
        .ok_or_else(|| {
            locate.at(
                item.span.clone(),
                &item.key,
                format!("unknown kind {:?} (one of: {})", item.text, names()),
            )
        })
}
