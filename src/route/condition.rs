//! A rule's `match`: the conditions as written ([`RawMatch`], [`Values`]), their validation,
//! and the compiled [`Condition`]s that matching tests.
//!
//! Guarantees: every kind, severity, glob, regex, header name and window name is checked when
//! the configuration is read, with its location; testing a compiled condition compiles nothing
//! and allocates nothing (kinds and severities are bit sets, windows are compiled once), and
//! the conditions of a rule come out cheapest first.

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{DateTime, Utc};
use herald_bridges::text::one_line;
use herald_bridges::{Alert, Kind, Severity};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::explain::EXPLAIN_VALUE_CHARS;
use super::glob::{glob_regex, Patterns};
use super::window::Window;
use crate::classify::Message;
use crate::error::{ConfigError, Locate};

/// `match = { ... }` as written. Read by hand because `header.NAME` keys are open-ended.
#[derive(Debug, Default)]
pub(crate) struct RawMatch {
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
    trusted: Option<Spanned<bool>>,
    during: Option<Spanned<Values>>,
    not_during: Option<Spanned<Values>>,
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
    "trusted",
    "severity",
    "during",
    "not_during",
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
                        "during" => &mut raw.during,
                        "not_during" => &mut raw.not_during,
                        "failed" => {
                            raw.failed = Some(map.next_value()?);
                            continue;
                        }
                        "trusted" => {
                            raw.trusted = Some(map.next_value()?);
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
    Trusted(bool),
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
    /// `during`: the instant is in any of these windows (by name).
    During(Vec<(String, Window)>),
    /// `not_during`: the instant is in none of these windows.
    NotDuring(Vec<(String, Window)>),
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
    /// Whether it holds at `now`. Compiles and allocates nothing.
    pub(super) fn holds(&self, message: &Message, alert: &Alert, now: DateTime<Utc>) -> bool {
        match &self.test {
            Test::Kind(set) => set & kind_bit(alert.kind) != 0,
            Test::Severity(set) => set & severity_bit(alert.severity) != 0,
            Test::Failed(want) => alert.failed == Some(*want),
            Test::Trusted(want) => alert.trusted == Some(*want),
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
            Test::During(windows) => windows.iter().any(|(_, w)| w.contains(now)),
            Test::NotDuring(windows) => !windows.iter().any(|(_, w)| w.contains(now)),
        }
    }

    /// The key as written in `match`.
    fn key(&self) -> String {
        match &self.test {
            Test::Kind(_) => "kind".into(),
            Test::Severity(_) => "severity".into(),
            Test::Failed(_) => "failed".into(),
            Test::Trusted(_) => "trusted".into(),
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
            Test::During(_) => "during".into(),
            Test::NotDuring(_) => "not_during".into(),
        }
    }

    /// For a window condition, whether it held at `now` and what the windows' clocks said
    /// (see [`Condition::window_note_of`]); `None` for any other condition.
    pub(super) fn window_note(&self, now: DateTime<Utc>) -> Option<String> {
        match &self.test {
            Test::During(windows) => Some(self.window_note_of(windows, true, now)),
            Test::NotDuring(windows) => Some(self.window_note_of(windows, false, now)),
            _ => None,
        }
    }

    /// Why it failed at `now`, for `--explain`: `kind: expected cron, got other`, or for a
    /// window condition its [`Condition::window_note`].
    pub(super) fn explain_failure(
        &self,
        message: &Message,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> String {
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
            Test::Trusted(_) => alert
                .trusted
                .map_or_else(|| "null".to_owned(), |t| t.to_string()),
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
            Test::During(windows) => return self.window_note_of(windows, true, now),
            Test::NotDuring(windows) => return self.window_note_of(windows, false, now),
        };
        let expected = match &self.test {
            Test::Subject(_) | Test::Body(_) | Test::Header(..) => {
                format!("a match for {}", self.expected)
            }
            _ => self.expected.clone(),
        };
        format!("{}: expected {expected}, got {got}", self.key())
    }

    /// A window condition at `now`: `during night: no (now 23:10 Wed Europe/Berlin)`, or with
    /// a list `not_during night or weekend: no, in weekend (now 10:00 Sat Europe/Berlin)`.
    /// `during` says whether the condition wants the instant inside the windows or outside.
    fn window_note_of(
        &self,
        windows: &[(String, Window)],
        during: bool,
        now: DateTime<Utc>,
    ) -> String {
        let open: Vec<&str> = windows
            .iter()
            .filter(|(_, w)| w.contains(now))
            .map(|(name, _)| name.as_str())
            .collect();
        let held = open.is_empty() != during;
        let mut note = format!(
            "{} {}: {}",
            self.key(),
            self.expected,
            if held { "yes" } else { "no" }
        );
        // With one window, yes or no already says whether it was open.
        if windows.len() > 1 && !open.is_empty() {
            note.push_str(", in ");
            note.push_str(&open.join(" and "));
        }
        // Windows in the same zone show the same clock: each zone once.
        let mut clocks: Vec<String> = Vec::new();
        for (_, window) in windows {
            let clock = window.clock(now).to_string();
            if !clocks.contains(&clock) {
                clocks.push(clock);
            }
        }
        note.push_str(" (now ");
        note.push_str(&clocks.join(", "));
        note.push(')');
        note
    }
}

impl RawMatch {
    /// The compiled conditions, cheapest first; `windows` are the `[windows.NAME]` that
    /// `during` and `not_during` may name.
    pub(super) fn validate(
        &self,
        key: &str,
        windows: &BTreeMap<String, Window>,
        locate: &dyn Locate,
    ) -> Result<Vec<Condition>, ConfigError> {
        let mut conditions = Vec::new();
        let sub = |name: &str| format!("{key}.{name}");
        // Cheapest first: bit tests, then short strings, then windows (a time zone lookup),
        // then headers, subject and body.
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
        if let Some(trusted) = &self.trusted {
            conditions.push(Condition {
                test: Test::Trusted(*trusted.get_ref()),
                expected: trusted.get_ref().to_string(),
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
        for (name, value, build) in [
            ("during", &self.during, Test::During as fn(_) -> Test),
            ("not_during", &self.not_during, Test::NotDuring),
        ] {
            let Some(value) = value else { continue };
            let items = items(value, &sub(name), locate)?;
            let named = items
                .iter()
                .map(|item| named_window(item, windows, locate))
                .collect::<Result<Vec<_>, _>>()?;
            // "night or weekend": reads right after both `during` and `not_during`.
            let names: Vec<&str> = items.iter().map(|i| i.text).collect();
            conditions.push(Condition {
                test: build(named),
                expected: names.join(" or "),
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

/// The window one `during` or `not_during` value names.
fn named_window(
    item: &Item<'_>,
    windows: &BTreeMap<String, Window>,
    locate: &dyn Locate,
) -> Result<(String, Window), ConfigError> {
    match windows.get(item.text) {
        Some(window) => Ok((item.text.to_owned(), *window)),
        None => {
            let defined = if windows.is_empty() {
                "none is defined: add a [windows.NAME] table".to_owned()
            } else {
                let names: Vec<&str> = windows.keys().map(String::as_str).collect();
                format!("defined: {}", names.join(", "))
            };
            Err(locate.at(
                item.span.clone(),
                &item.key,
                format!("unknown window {:?} ({defined})", item.text),
            ))
        }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone as _;

    use super::*;
    use crate::config::Config;
    use crate::route::{explain_text, route_at, Router};

    const HEAD: &str =
        "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
        [sinks.a]\ntype = \"console\"\n\
        [windows.night]\nfrom = \"22:00\"\nto = \"07:00\"\ntimezone = \"Europe/Berlin\"\n\
        [windows.weekend]\ndays = [\"sat\", \"sun\"]\ntimezone = \"Europe/Berlin\"\n\
        [windows.nyc]\nfrom = \"09:00\"\nto = \"17:00\"\ntimezone = \"America/New_York\"\n";

    /// The first line after [`HEAD`].
    const FIRST_LINE: usize = 19;

    fn parse(rules: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), &format!("{HEAD}{rules}"), &|_| None)
    }

    fn config(rules: &str) -> Config {
        parse(rules).unwrap_or_else(|e| panic!("{e}"))
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap_or_else(|| panic!("{y}-{mo}-{d} {h}:{mi}"))
    }

    /// Wednesday 2026-05-06 23:10 in Berlin (CEST, UTC+2): night, not the weekend.
    fn wednesday_night() -> DateTime<Utc> {
        utc(2026, 5, 6, 21, 10)
    }

    /// Saturday 2026-05-09 12:00 in Berlin: the weekend, not night; 06:00 in New York.
    fn saturday_noon() -> DateTime<Utc> {
        utc(2026, 5, 9, 10, 0)
    }

    /// Wednesday 2026-05-06 12:00 in Berlin: neither; 06:00 in New York.
    fn wednesday_noon() -> DateTime<Utc> {
        utc(2026, 5, 6, 10, 0)
    }

    /// Whether the rule `match = { CONDITION }` matches the sample alert at `now`.
    fn matches_at(condition: &str, now: DateTime<Utc>) -> bool {
        let c = config(&format!(
            "[[rules]]\nname = \"r\"\nmatch = {{ {condition} }}\nsinks = [\"a\"]\n"
        ));
        c.rules[0].matches(&Message::default(), &Alert::sample(), now)
    }

    #[test]
    fn during_is_any_of_and_not_during_none_of() {
        assert!(matches_at("during = \"night\"", wednesday_night()));
        assert!(!matches_at("during = \"night\"", wednesday_noon()));
        assert!(matches_at(
            "during = [\"night\", \"weekend\"]",
            saturday_noon()
        ));
        assert!(matches_at(
            "during = [\"night\", \"weekend\"]",
            wednesday_night()
        ));
        assert!(!matches_at(
            "during = [\"night\", \"weekend\"]",
            wednesday_noon()
        ));
        assert!(!matches_at("not_during = \"night\"", wednesday_night()));
        assert!(matches_at("not_during = \"night\"", wednesday_noon()));
        assert!(!matches_at(
            "not_during = [\"night\", \"weekend\"]",
            saturday_noon()
        ));
        assert!(matches_at(
            "not_during = [\"night\", \"weekend\"]",
            wednesday_noon()
        ));
        // Both, and with other conditions: all must hold. The sample alert is a warning.
        let both = "severity = \"warning\", during = \"weekend\", not_during = \"night\"";
        assert!(matches_at(both, saturday_noon()));
        assert!(!matches_at(both, utc(2026, 5, 9, 21, 0)), "Saturday 23:00");
        assert!(!matches_at(
            "severity = \"critical\", during = \"weekend\"",
            saturday_noon()
        ));
    }

    #[test]
    fn windows_are_tested_after_globs_and_before_the_subject() {
        let c = config(
            "[[rules]]\nname = \"r\"\nmatch = { subject = \"^nope\", during = \"night\", host = \"db*\" }\n",
        );
        let failure = |host: &str, now| {
            let mut alert = Alert::sample();
            alert.host = Some(host.into());
            c.rules[0]
                .first_failure(&Message::default(), &alert, now)
                .map(Condition::key)
        };
        assert_eq!(failure("web01", wednesday_noon()).as_deref(), Some("host"));
        assert_eq!(failure("db01", wednesday_noon()).as_deref(), Some("during"));
        assert_eq!(
            failure("db01", wednesday_night()).as_deref(),
            Some("subject")
        );
    }

    #[test]
    fn explain_shows_the_clock_of_failed_and_held_window_conditions() {
        let c = config(
            "[[rules]]\nname = \"night\"\nmatch = { during = \"night\" }\nsinks = [\"a\"]\ncontinue = true\n\
             [[rules]]\nname = \"quiet\"\nmatch = { not_during = [\"night\", \"weekend\"] }\n\
             [[rules]]\nname = \"both\"\nmatch = { during = \"night\", kind = \"sudo\" }\n\
             [[rules]]\nname = \"zones\"\nmatch = { during = [\"nyc\", \"weekend\"] }\n",
        );
        let router = Router::new(c.rules.clone(), c.default_sinks.clone());
        let mail = b"From: root@web01\r\nSubject: hi\r\n\r\nbody\r\n";
        let (decision, trace) = router.explain_at(mail, false, None, wednesday_night());
        assert_eq!(decision.sinks, ["a"]);
        let seen: Vec<(&str, Option<&str>, Vec<&str>)> = trace
            .iter()
            .map(|t| {
                let windows = t.windows.iter().map(String::as_str).collect();
                (t.rule.as_str(), t.failed.as_deref(), windows)
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "night",
                    None,
                    vec!["during night: yes (now 23:10 Wed Europe/Berlin)"]
                ),
                (
                    "quiet",
                    Some("not_during night or weekend: no, in night (now 23:10 Wed Europe/Berlin)"),
                    vec![]
                ),
                // Kind is tested first, and fails: the window was not tested.
                ("both", Some("kind: expected sudo, got other"), vec![]),
                (
                    "zones",
                    Some("during nyc or weekend: no (now 17:10 Wed America/New_York, 23:10 Wed Europe/Berlin)"),
                    vec![]
                ),
            ]
        );
        let text = explain_text(&trace);
        assert!(
            text.contains(
                "    rule night: matched; during night: yes (now 23:10 Wed Europe/Berlin)\n"
            ),
            "{text}"
        );
        let json = serde_json::json!(trace);
        assert_eq!(
            json[0]["windows"],
            serde_json::json!(["during night: yes (now 23:10 Wed Europe/Berlin)"])
        );
        assert_eq!(json[1].get("windows"), None, "left out when empty");
    }

    #[test]
    fn decide_at_routes_by_the_given_instant() {
        let c =
            config("[[rules]]\nname = \"r\"\nmatch = { during = \"weekend\" }\nsinks = [\"a\"]\n");
        let router = Router::new(c.rules.clone(), vec!["default".into()]);
        let mail = b"Subject: hi\r\n\r\nbody\r\n";
        assert_eq!(
            router.decide_at(mail, false, None, saturday_noon()).sinks,
            ["a"]
        );
        assert_eq!(
            router.decide_at(mail, false, None, wednesday_noon()).sinks,
            ["default"]
        );
        let d = route_at(
            &c.rules,
            &c.default_sinks,
            &Message::default(),
            Alert::sample(),
            saturday_noon(),
        );
        assert_eq!(d.alert.rule.as_deref(), Some("r"));
    }

    #[test]
    fn unknown_window_names_are_located() {
        let cases = [
            (
                "{ during = \"nite\" }",
                "rules[0].match.during",
                20,
                "unknown window \"nite\" (defined: night, nyc, weekend)",
            ),
            (
                "{ not_during = [\"night\", \"weekends\"] }",
                "rules[0].match.not_during[1]",
                34,
                "unknown window \"weekends\"",
            ),
            (
                "{ during = [] }",
                "rules[0].match.during",
                20,
                "an empty list matches nothing",
            ),
        ];
        for (m, key, column, message) in cases {
            let error = parse(&format!("[[rules]]\nname = \"r\"\nmatch = {m}\n")).unwrap_err();
            assert_eq!(error.key.as_deref(), Some(key), "{error}");
            assert_eq!(error.position, Some((FIRST_LINE + 2, column)), "{error}");
            assert!(error.message.contains(message), "{error}");
        }
        let none = Config::parse(
            Path::new("t.toml"),
            "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
             [[rules]]\nname = \"r\"\nmatch = { during = \"night\" }\n",
            &|_| None,
        )
        .unwrap_err();
        assert!(
            none.message
                .contains("none is defined: add a [windows.NAME] table"),
            "{none}"
        );
    }
}
