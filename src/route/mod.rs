//! Routing: the user's `[[rules]]` applied to a classified alert.
//!
//! # Evaluation
//!
//! Rules are tried in order; every condition a rule's `match` gives must hold for it to match
//! (a rule without `match` matches everything). The first matching rule decides, unless it says
//! `continue = true`: then its actions apply and the next rules are tried too, against the
//! alert *as those actions left it* (so a later `severity` condition sees an earlier rule's
//! `severity` action). Sinks accumulate across `continue` rules, each named once, in order.
//! `drop = true` ends the evaluation and delivers nothing, even to sinks an earlier `continue`
//! rule named. An alert that is not dropped and that no rule sent anywhere (no rule matched, or
//! the matching rules named no sinks) goes to `[defaults] sinks`. The alert's `rule` field names
//! the last rule that matched: the one that decided.
//!
//! # Match keys
//!
//! Every string condition may also be a list, meaning "any of": `kind = ["cron", "anacron"]`.
//!
//! | key | TOML | matches when |
//! |---|---|---|
//! | `kind` | `kind = "cron"`, `kind = ["cron", "anacron"]`, `kind = "*"` | the alert's kind is one of these names (globs allowed; each must name or match a real kind) |
//! | `host` | `host = "web*.example.net"` | glob, case-insensitive, on the alert's host; a missing host never matches |
//! | `user` | `user = "root"` | glob, case-sensitive (Unix names are), on the cron owner / sudo user |
//! | `command` | `command = "/usr/local/bin/*"` | glob, case-sensitive, on the cron / sudo command |
//! | `from` | `from = "*@example.net"` | glob, case-insensitive, on the `From` address (`user@domain`, no display name) |
//! | `to` | `to = "root@*"` | glob, case-insensitive: any one `To` address matches |
//! | `account` | `account = "hub"` | glob, case-sensitive, on the IMAP account's name (`default` for a lone unnamed `[imap]`) |
//! | `mailbox` | `mailbox = "Cron"` | glob, case-sensitive, on the folder the mail was found in |
//! | `subject` | `subject = "(?i)^logwatch for"` | regex (Rust `regex` syntax, unanchored, case-sensitive unless `(?i)`) finds a match in the decoded subject |
//! | `body` | `body = "No space left"` | regex finds a match in the decoded body text (its first 64 KiB) |
//! | `header.NAME` | `"header.X-Mailer" = "^smartd"` or `header = { X-Mailer = "^smartd" }` | regex: any header called NAME (case-insensitive name) has a matching value |
//! | `failed` | `failed = true` | the alert's `failed` equals this; an alert whose `failed` is null (not applicable) matches neither `true` nor `false` |
//! | `severity` | `severity = "critical"`, `severity = ["warning", "critical"]`, `severity = ">= warning"` | the alert's severity *before this rule's actions* is one of these; `>=`, `>`, `<=`, `<` compare by urgency (`info < warning < critical`) |
//!
//! `header.NAME` in TOML: inside the inline table `match = { ... }`, write the key quoted,
//! `"header.X-Cron-Env" = "SHELL"`, or unquoted, `header.X-Cron-Env = "SHELL"` (a dotted key,
//! which TOML reads as the nested table `header = { X-Cron-Env = "SHELL" }`); all three are
//! the same condition. Errors name it `rules[N].match.header.X-Cron-Env`.
//!
//! Globs: `*` is any run of characters (including `.`, `/` and `@`: these are not paths),
//! `?` one character, `[abc]`, `[a-z]` and `[!abc]` (or `[^abc]`) one character of a set, and
//! `\` makes the next character literal. A glob must match the whole value.
//!
//! # Actions
//!
//! `severity`, `sinks`, `drop`, `continue`, `resolve = true` (sets the alert's `resolve`, so
//! PagerDuty resolves the incident with the same `dedup_key`), and the templates `title`,
//! `summary` and `dedup_key`. Templates are minijinja and see every alert field (`kind`, `host`,
//! `user`, `command`, `failed`, `exit_status`, `severity`, `rule`, `title`, `summary`,
//! `dedup_key`, `facts`, `subject`, `from`, `date`, `body`, `message_id`, `truncated`,
//! `resolve`) plus `to` (the list of recipients), with the values after this rule's
//! `severity` and `resolve` actions; the three templates all see the same values (a `summary`
//! template sees the title from before this rule's `title` template). The output is made one
//! line and cut to [`TITLE_MAX_CHARS`], [`SUMMARY_MAX_CHARS`] or [`DEDUP_KEY_MAX_CHARS`].
//!
//! # Invariants
//!
//! - Everything is checked when the configuration is read, with the location of the offending
//!   value: unknown kinds and severities, globs and regexes that do not compile, templates
//!   that do not compile or name a variable that does not exist, and `drop = true` together
//!   with `continue` or `sinks` (which could never take effect).
//! - Matching compiles nothing and allocates nothing: kinds and severities are bit sets, globs
//!   and regexes are compiled once, and conditions are tested cheapest first.
//! - A template that fails when rendered never loses the alert: the text from before the
//!   template stays, and a warning is logged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use herald_bridges::text::one_line;
use herald_bridges::{Alert, Kind, Severity};
use regex::Regex;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::classify::Message;
use crate::error::{ConfigError, Locate};

/// A rendered title's limit: one line a person reads at a glance; sinks cut further for their
/// medium (Slack headers stop at 150).
pub const TITLE_MAX_CHARS: usize = 300;

/// A rendered summary's limit: PagerDuty's `summary` field holds 1024 characters.
pub const SUMMARY_MAX_CHARS: usize = 1000;

/// A rendered dedup key's limit: PagerDuty's `dedup_key` holds 255 characters.
pub const DEDUP_KEY_MAX_CHARS: usize = 255;

/// How much of an actual value `--explain` quotes: enough to recognise it.
const EXPLAIN_VALUE_CHARS: usize = 80;

/// `[[rules]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    name: Spanned<String>,
    #[serde(default, rename = "match")]
    conditions: RawMatch,
    severity: Option<Severity>,
    sinks: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    drop: bool,
    #[serde(rename = "continue")]
    keep_going: Option<Spanned<bool>>,
    #[serde(default)]
    resolve: bool,
    title: Option<Spanned<String>>,
    summary: Option<Spanned<String>>,
    dedup_key: Option<Spanned<String>>,
}

/// `match = { ... }` as written. Read by hand because `header.NAME` keys are open-ended.
#[derive(Debug, Default)]
struct RawMatch {
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
struct Item<'a> {
    text: &'a str,
    span: Range<usize>,
    key: String,
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

/// Compiled globs or regexes: a value matches if any one of them does.
#[derive(Debug, Clone)]
struct Patterns(Vec<Regex>);

impl Patterns {
    fn is_match(&self, text: &str) -> bool {
        self.0.iter().any(|re| re.is_match(text))
    }

    fn regexes(items: &[Item<'_>], locate: &dyn Locate) -> Result<Patterns, ConfigError> {
        items
            .iter()
            .map(|item| {
                Regex::new(item.text).map_err(|e| {
                    locate.at(item.span.clone(), &item.key, format!("invalid regex: {e}"))
                })
            })
            .collect::<Result<_, _>>()
            .map(Patterns)
    }

    fn globs(
        items: &[Item<'_>],
        case_insensitive: bool,
        locate: &dyn Locate,
    ) -> Result<Patterns, ConfigError> {
        items
            .iter()
            .map(|item| {
                glob_regex(item.text, case_insensitive).map_err(|message| {
                    locate.at(
                        item.span.clone(),
                        &item.key,
                        format!("invalid glob {:?}: {message}", item.text),
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Patterns)
    }
}

/// Translates a shell-style glob into an anchored regex (see the module docs for the syntax).
fn glob_regex(glob: &str, case_insensitive: bool) -> Result<Regex, String> {
    let mut re = String::with_capacity(glob.len() * 2 + 12);
    // `s`: `*` also spans a newline, should a hostile value carry one.
    re.push_str(if case_insensitive {
        "(?is)^(?:"
    } else {
        "(?s)^(?:"
    });
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '\\' => match chars.next() {
                Some(next) => push_literal(&mut re, next),
                None => return Err("a trailing `\\` escapes nothing".into()),
            },
            '[' => {
                re.push('[');
                if chars.next_if(|&n| n == '!' || n == '^').is_some() {
                    re.push('^');
                }
                let mut first = true;
                let mut closed = false;
                while let Some(n) = chars.next() {
                    // A `]` first in the set is a member, as in shells.
                    if n == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    let member = if n == '\\' {
                        chars.next().ok_or("a trailing `\\` escapes nothing")?
                    } else {
                        n
                    };
                    if n != '\\' && member == '-' {
                        re.push('-');
                        continue;
                    }
                    // Characters that mean something inside a regex class (`&&`, `~~` and `--`
                    // are set operations there) are made literal.
                    if matches!(member, '[' | ']' | '\\' | '^' | '&' | '~' | '-') {
                        re.push('\\');
                    }
                    re.push(member);
                }
                if !closed {
                    return Err("`[` without a closing `]`".into());
                }
                re.push(']');
            }
            other => push_literal(&mut re, other),
        }
    }
    re.push_str(")$");
    Regex::new(&re).map_err(|e| match e {
        regex::Error::Syntax(_) => "not a valid character set".to_owned(),
        other => other.to_string(),
    })
}

fn push_literal(re: &mut String, c: char) {
    let mut buf = [0; 4];
    re.push_str(&regex::escape(c.encode_utf8(&mut buf)));
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
struct Condition {
    /// What it tests, compiled.
    test: Test,
    /// The value as written, for `--explain`.
    expected: String,
}

impl Condition {
    /// Whether it holds. Compiles and allocates nothing.
    fn holds(&self, message: &Message, alert: &Alert) -> bool {
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
    fn explain_failure(&self, message: &Message, alert: &Alert) -> String {
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

/// A rule's templates, compiled once.
#[derive(Clone)]
struct Templates {
    /// Holds the templates named `title`, `summary` and `dedup_key` that the rule gives.
    env: Arc<minijinja::Environment<'static>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.templates().map(|(name, _)| name).collect();
        write!(f, "Templates({})", names.join(", "))
    }
}

/// What a template sees: every alert field and the recipients.
#[derive(Serialize)]
struct TemplateContext<'a> {
    #[serde(flatten)]
    alert: &'a Alert,
    to: &'a [String],
    /// Given explicitly: the alert leaves it out of its serialization when false.
    resolve: bool,
}

fn template_environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // Output goes to alert fields, never to HTML: escaping is each sink's business.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// The variables a template may use: the alert's fields (taken from its serialization, so a
/// field added to the model is available at once) and `to`.
fn template_variables() -> Vec<String> {
    let mut names = vec!["to".to_owned(), "resolve".to_owned()];
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(Alert::sample()) {
        names.extend(fields.keys().cloned());
    }
    names.sort();
    names.dedup();
    names
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name, reported in the alert's `rule` field.
    pub name: String,
    /// All must hold; cheapest first.
    conditions: Vec<Condition>,
    severity: Option<Severity>,
    sinks: Vec<String>,
    drop: bool,
    keep_going: bool,
    resolve: bool,
    templates: Option<Templates>,
}

impl RawRule {
    /// Checks kinds, severities, globs, regexes and templates, and resolves sink names with
    /// `sink`; every error carries the offending value's location.
    pub(crate) fn validate(
        self,
        key: &str,
        sink: &dyn Fn(&Spanned<String>) -> Result<String, ConfigError>,
        locate: &dyn Locate,
    ) -> Result<Rule, ConfigError> {
        if self.name.get_ref().trim().is_empty() {
            return Err(locate.at(
                self.name.span(),
                &format!("{key}.name"),
                "must not be empty: `--explain` and the alert's `rule` field show it".into(),
            ));
        }
        let conditions = self.conditions.validate(&format!("{key}.match"), locate)?;
        let keep_going = self.keep_going.as_ref().is_some_and(|k| *k.get_ref());
        if self.drop {
            if let Some(k) = self.keep_going.as_ref().filter(|k| *k.get_ref()) {
                return Err(locate.at(
                    k.span(),
                    &format!("{key}.continue"),
                    "a rule with drop = true ends the evaluation; continue = true would have no effect".into(),
                ));
            }
            if let Some(s) = self.sinks.as_ref().filter(|s| !s.get_ref().is_empty()) {
                return Err(locate.at(
                    s.span(),
                    &format!("{key}.sinks"),
                    "a rule with drop = true delivers nothing; its sinks would never be used"
                        .into(),
                ));
            }
        }
        let sinks = match &self.sinks {
            None => Vec::new(),
            Some(list) => list
                .get_ref()
                .iter()
                .map(sink)
                .collect::<Result<Vec<_>, _>>()?,
        };
        let mut env: Option<minijinja::Environment<'static>> = None;
        for (name, source) in [
            ("title", &self.title),
            ("summary", &self.summary),
            ("dedup_key", &self.dedup_key),
        ] {
            let Some(source) = source else { continue };
            let env = env.get_or_insert_with(template_environment);
            compile_template(env, name, source, &format!("{key}.{name}"), locate)?;
        }
        Ok(Rule {
            name: self.name.into_inner(),
            conditions,
            severity: self.severity,
            sinks,
            drop: self.drop,
            keep_going,
            resolve: self.resolve,
            templates: env.map(|env| Templates { env: Arc::new(env) }),
        })
    }
}

/// Adds template `name` to `env`: a syntax error or an unknown variable is a config error.
fn compile_template(
    env: &mut minijinja::Environment<'static>,
    name: &'static str,
    source: &Spanned<String>,
    key: &str,
    locate: &dyn Locate,
) -> Result<(), ConfigError> {
    let error = |message: String| locate.at(source.span(), key, message);
    env.add_template_owned(name, source.get_ref().clone())
        .map_err(|e| error(format!("template does not compile: {e}")))?;
    let template = env
        .get_template(name)
        .map_err(|e| error(format!("template does not compile: {e}")))?;
    // A misspelt variable would otherwise render as nothing, silently, on every alert.
    let known = template_variables();
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !known.contains(v) && env.globals().all(|(g, _)| g != v))
        .collect();
    unknown.sort();
    if let Some(first) = unknown.first() {
        return Err(error(format!(
            "unknown variable `{first}` in template (available: {})",
            known.join(", ")
        )));
    }
    Ok(())
}

impl RawMatch {
    fn validate(&self, key: &str, locate: &dyn Locate) -> Result<Vec<Condition>, ConfigError> {
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

impl Rule {
    /// Whether every condition holds.
    pub fn matches(&self, message: &Message, alert: &Alert) -> bool {
        self.conditions.iter().all(|c| c.holds(message, alert))
    }

    /// The first condition that does not hold.
    fn first_failure(&self, message: &Message, alert: &Alert) -> Option<&Condition> {
        self.conditions.iter().find(|c| !c.holds(message, alert))
    }

    /// Applies this rule's actions (other than routing) to `alert`.
    fn act(&self, message: &Message, alert: &mut Alert) {
        alert.rule = Some(self.name.clone());
        if let Some(severity) = self.severity {
            alert.severity = severity;
        }
        if self.resolve {
            alert.resolve = true;
        }
        let Some(templates) = &self.templates else {
            return;
        };
        let context = minijinja::Value::from_serialize(TemplateContext {
            alert,
            to: &message.to,
            resolve: alert.resolve,
        });
        let render = |name: &str, max: usize| -> Option<String> {
            let template = templates.env.get_template(name).ok()?;
            match template.render(&context) {
                Ok(text) => {
                    let text = one_line(&text, max);
                    if text.is_empty() {
                        tracing::warn!(
                            rule = %self.name,
                            template = name,
                            "Rule template rendered nothing, keeping the default text."
                        );
                        return None;
                    }
                    Some(text)
                }
                Err(error) => {
                    tracing::warn!(
                        rule = %self.name,
                        template = name,
                        %error,
                        "Rule template failed, keeping the default text."
                    );
                    None
                }
            }
        };
        // Rendered from one snapshot, then assigned: no template sees another's output.
        let title = render("title", TITLE_MAX_CHARS);
        let summary = render("summary", SUMMARY_MAX_CHARS);
        let dedup_key = render("dedup_key", DEDUP_KEY_MAX_CHARS);
        if let Some(title) = title {
            alert.title = title;
        }
        if let Some(summary) = summary {
            alert.summary = summary;
        }
        if let Some(dedup_key) = dedup_key {
            alert.dedup_key = dedup_key;
        }
    }
}

/// Where an alert goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The alert with the rules' actions applied (`rule`, `severity`, templates, `resolve`).
    pub alert: Alert,
    /// The sinks to deliver to, each once, in the order named.
    pub sinks: Vec<String>,
    /// A rule said `drop = true`.
    pub dropped: bool,
}

/// What happened with one rule, for `herald classify --explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    /// The rule's name.
    pub rule: String,
    /// Whether all its conditions held.
    pub matched: bool,
    /// The first condition that failed (`kind: expected cron, got other`), or why the rule was
    /// not tried; `null` when it matched.
    pub failed: Option<String>,
    /// Whether the rule was tried at all: `false` once an earlier rule decided.
    pub reached: bool,
}

/// Everything needed to turn a raw message into a routing decision.
#[derive(Debug, Clone)]
pub struct Router {
    rules: Vec<Rule>,
    default_sinks: Vec<String>,
}

impl Router {
    /// The router for a validated configuration.
    pub fn new(rules: Vec<Rule>, default_sinks: Vec<String>) -> Router {
        Router {
            rules,
            default_sinks,
        }
    }

    /// Parses, classifies and routes one message; `truncated` says `raw` is only its start,
    /// `origin` is the `(account, folder)` it was found in (none for a file).
    pub fn decide(&self, raw: &[u8], truncated: bool, origin: Option<(&str, &str)>) -> Decision {
        let (message, alert) = classified(raw, truncated, origin);
        route(&self.rules, &self.default_sinks, &message, alert)
    }

    /// [`Router::decide`], and what each rule made of the message (`classify --explain`).
    pub fn explain(
        &self,
        raw: &[u8],
        truncated: bool,
        origin: Option<(&str, &str)>,
    ) -> (Decision, Vec<RuleTrace>) {
        let (message, alert) = classified(raw, truncated, origin);
        let mut trace = Vec::with_capacity(self.rules.len());
        let decision = evaluate(
            &self.rules,
            &self.default_sinks,
            &message,
            alert,
            Some(&mut trace),
        );
        (decision, trace)
    }
}

/// The parsed message and its alert, which carries where the message was found.
fn classified(raw: &[u8], truncated: bool, origin: Option<(&str, &str)>) -> (Message, Alert) {
    let message = crate::classify::parse(raw, truncated);
    let mut alert = crate::classify::classify(&message);
    if let Some((account, folder)) = origin {
        alert.account = Some(account.to_owned());
        alert.mailbox = Some(folder.to_owned());
    }
    (message, alert)
}

/// Applies `rules` to `alert`.
pub fn route(
    rules: &[Rule],
    default_sinks: &[String],
    message: &Message,
    alert: Alert,
) -> Decision {
    evaluate(rules, default_sinks, message, alert, None)
}

/// [`route`], recording each rule's outcome in `trace` when given.
fn evaluate(
    rules: &[Rule],
    default_sinks: &[String],
    message: &Message,
    mut alert: Alert,
    mut trace: Option<&mut Vec<RuleTrace>>,
) -> Decision {
    let mut sinks: Vec<String> = Vec::new();
    let mut dropped = false;
    let mut decided_by: Option<&str> = None;
    for rule in rules {
        if let Some(decider) = decided_by {
            let Some(trace) = trace.as_deref_mut() else {
                break;
            };
            trace.push(RuleTrace {
                rule: rule.name.clone(),
                matched: false,
                failed: Some(format!("not reached: rule {decider:?} decided")),
                reached: false,
            });
            continue;
        }
        let failure = rule.first_failure(message, &alert);
        if let Some(trace) = trace.as_deref_mut() {
            trace.push(RuleTrace {
                rule: rule.name.clone(),
                matched: failure.is_none(),
                failed: failure.map(|c| c.explain_failure(message, &alert)),
                reached: true,
            });
        }
        if failure.is_some() {
            continue;
        }
        rule.act(message, &mut alert);
        if rule.drop {
            dropped = true;
            decided_by = Some(&rule.name);
            continue;
        }
        for sink in &rule.sinks {
            if !sinks.contains(sink) {
                sinks.push(sink.clone());
            }
        }
        if !rule.keep_going {
            decided_by = Some(&rule.name);
        }
    }
    if dropped {
        sinks.clear();
    } else if sinks.is_empty() {
        sinks = default_sinks.to_vec();
    }
    Decision {
        alert,
        sinks,
        dropped,
    }
}

/// Adds `"explain": [...]` to a `classify --json` object.
pub fn explain_json(object: &mut serde_json::Value, trace: &[RuleTrace]) {
    if let serde_json::Value::Object(map) = object {
        map.insert("explain".into(), serde_json::json!(trace));
    }
}

/// The `classify --explain` text: one indented line per rule.
pub fn explain_text(trace: &[RuleTrace]) -> String {
    let mut out = String::new();
    for t in trace {
        let outcome = match (&t.failed, t.reached) {
            (None, _) => "matched".to_owned(),
            (Some(_), false) => "not reached".to_owned(),
            (Some(why), true) => format!("no match: {why}"),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "    rule {}: {outcome}", t.rule);
    }
    out
}

/// Twenty rules of the kind a sysadmin writes, over the real kinds; they name the sinks
/// `pager`, `chat` and `archive`. Loaded by the classification benchmark (whose target is
/// 50,000 messages/s on one core with these rules) and by tests; see [`typical_config_toml`]
/// for a complete configuration around them.
pub fn typical_rules_toml() -> &'static str {
    r#"
[[rules]]
name = "archive-everything"
sinks = ["archive"]
continue = true

[[rules]]
name = "bounces"
match = { kind = "bounce" }
severity = "warning"
sinks = ["chat"]

[[rules]]
name = "logwatch-noise"
match = { kind = "logwatch", subject = "(?i)^logwatch for" }
drop = true

[[rules]]
name = "apticron-noise"
match = { kind = "apticron" }
drop = true

[[rules]]
name = "upgrades-ok"
match = { kind = "unattended-upgrades", failed = false }
drop = true

[[rules]]
name = "upgrades-failed"
match = { kind = "unattended-upgrades", failed = true }
severity = "warning"
sinks = ["chat"]
title = "unattended-upgrades failed on {{ host }}"

[[rules]]
name = "disk-health"
match = { kind = ["smartd", "zed"] }
severity = "critical"
sinks = ["pager", "chat"]

[[rules]]
name = "raid-degraded"
match = { kind = "mdadm", body = "(?i)degraded|fail" }
severity = "critical"
sinks = ["pager", "chat"]
dedup_key = "mdadm:{{ host }}"

[[rules]]
name = "raid-other"
match = { kind = "mdadm" }
sinks = ["chat"]

[[rules]]
name = "power"
match = { kind = "apcupsd" }
severity = "critical"
sinks = ["pager"]

[[rules]]
name = "sudo-root-shell"
match = { kind = "sudo", command = "*/bin/*sh" }
severity = "critical"
sinks = ["pager", "chat"]

[[rules]]
name = "sudo"
match = { kind = "sudo" }
severity = "warning"
sinks = ["chat"]

[[rules]]
name = "fail2ban-quiet"
match = { kind = "fail2ban", subject = "(?i)(started|stopped)" }
drop = true

[[rules]]
name = "fail2ban"
match = { kind = "fail2ban" }
sinks = ["chat"]

[[rules]]
name = "backup-failures"
match = { kind = "cron", failed = true, command = "*backup*" }
severity = "critical"
sinks = ["pager", "chat"]
title = "backup failed on {{ host }}: {{ command }}"

[[rules]]
name = "db-cron-failures"
match = { kind = "cron", failed = true, host = "db*.example.net" }
severity = "critical"
sinks = ["pager"]

[[rules]]
name = "cron-failures"
match = { kind = ["cron", "anacron"], failed = true }
severity = "warning"
sinks = ["chat"]

[[rules]]
name = "cron-chatter"
match = { kind = ["cron", "anacron"], failed = false }
drop = true

[[rules]]
name = "systemd-units"
match = { kind = "systemd", "header.X-Systemd-Unit" = "." }
sinks = ["chat"]

[[rules]]
name = "other-from-monitoring"
match = { kind = "other", from = "*@monitoring.example.net", subject = "(?i)\\b(problem|down|critical)\\b" }
severity = "critical"
sinks = ["pager"]
"#
}

/// A complete configuration around [`typical_rules_toml`]: loopback IMAP and console sinks,
/// so that it loads anywhere without secrets.
pub fn typical_config_toml() -> String {
    format!(
        "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"alerts\"\npassword = \"x\"\n\n\
         [defaults]\nsinks = [\"chat\"]\n\n\
         [sinks.pager]\ntype = \"console\"\n[sinks.chat]\ntype = \"console\"\n\
         [sinks.archive]\ntype = \"console\"\n{}",
        typical_rules_toml()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const HEAD: &str = "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
             [defaults]\nsinks = [\"d\"]\n\
             [sinks.a]\ntype = \"console\"\n[sinks.b]\ntype = \"console\"\n[sinks.d]\ntype = \"console\"\n";

    /// The first line after [`HEAD`].
    const FIRST_LINE: usize = 14;

    fn config(rules: &str) -> Config {
        Config::parse(Path::new("t.toml"), &format!("{HEAD}{rules}"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(rules: &str) -> ConfigError {
        Config::parse(Path::new("t.toml"), &format!("{HEAD}{rules}"), &|_| None).unwrap_err()
    }

    /// Asserts the error's key, its line (counted from the first rules line, 0-based) and
    /// column, and a part of its message.
    fn assert_error(rules: &str, key: &str, line: usize, column: usize, message: &str) {
        let e = error(rules);
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert_eq!(e.position, Some((FIRST_LINE + line, column)), "{e}");
        assert!(e.message.contains(message), "{e}");
    }

    fn message() -> Message {
        Message {
            subject: "Cron <root@web01> /usr/local/bin/backup.sh".into(),
            from: Some("root@web01.example.net".into()),
            to: vec!["ops@example.net".into(), "root@web01.example.net".into()],
            headers: vec![
                ("From".into(), "root@web01.example.net".into()),
                ("X-Cron-Env".into(), "<SHELL=/bin/sh>".into()),
                ("X-Cron-Env".into(), "<HOME=/root>".into()),
            ],
            body: "backup.sh: error: cannot stat /srv/data\n".into(),
            ..Message::default()
        }
    }

    fn decide_with(config: &Config, message: &Message, alert: Alert) -> Decision {
        route(&config.rules, &config.default_sinks, message, alert)
    }

    fn decide(config: &Config, kind: Kind, subject: &str) -> Decision {
        let message = Message {
            subject: subject.into(),
            ..Message::default()
        };
        let mut alert = Alert::sample();
        alert.kind = kind;
        decide_with(config, &message, alert)
    }

    /// Whether a single rule with `match = { CONDITION }` matches the sample message/alert.
    fn matches(condition: &str) -> bool {
        matches_alert(condition, Alert::sample())
    }

    fn matches_alert(condition: &str, alert: Alert) -> bool {
        let c = config(&format!(
            "[[rules]]\nname = \"r\"\nmatch = {{ {condition} }}\nsinks = [\"a\"]\n"
        ));
        decide_with(&c, &message(), alert).sinks == ["a"]
    }

    #[test]
    fn first_match_decides() {
        let c = config(
            "[[rules]]\nname = \"cron\"\nmatch = { kind = \"cron\" }\nseverity = \"critical\"\nsinks = [\"a\"]\n\
             [[rules]]\nname = \"all\"\nsinks = [\"b\"]\n",
        );
        let d = decide(&c, Kind::Cron, "x");
        assert_eq!(
            (d.sinks, d.alert.rule.as_deref()),
            (vec!["a".to_string()], Some("cron"))
        );
        assert_eq!(d.alert.severity, Severity::Critical);
        let d = decide(&c, Kind::Other, "x");
        assert_eq!(
            (d.sinks, d.alert.rule.as_deref()),
            (vec!["b".to_string()], Some("all"))
        );
    }

    #[test]
    fn continue_accumulates_and_drop_stops() {
        let c = config(
            "[[rules]]\nname = \"tee\"\nsinks = [\"a\"]\ncontinue = true\n\
             [[rules]]\nname = \"noise\"\nmatch = { subject = \"(?i)^logwatch\" }\ndrop = true\n\
             [[rules]]\nname = \"rest\"\nsinks = [\"b\", \"a\"]\n",
        );
        let d = decide(&c, Kind::Other, "hello");
        assert_eq!(d.sinks, vec!["a", "b"]);
        assert_eq!(d.alert.rule.as_deref(), Some("rest"), "the deciding rule");
        let d = decide(&c, Kind::Other, "Logwatch for web01");
        assert!(d.dropped && d.sinks.is_empty());
        assert_eq!(d.alert.rule.as_deref(), Some("noise"));
    }

    #[test]
    fn continue_actions_are_seen_by_later_severity_conditions() {
        let c = config(
            "[[rules]]\nname = \"raise\"\nmatch = { kind = \"cron\" }\nseverity = \"critical\"\ncontinue = true\n\
             [[rules]]\nname = \"page\"\nmatch = { severity = \"critical\" }\nsinks = [\"a\"]\n",
        );
        let d = decide(&c, Kind::Cron, "x");
        assert_eq!(
            (d.sinks, d.alert.rule.as_deref()),
            (vec!["a".into()], Some("page"))
        );
        assert_eq!(decide(&c, Kind::Sudo, "x").sinks, vec!["d"]);
    }

    #[test]
    fn continue_rule_alone_routes_and_names_itself() {
        let c = config("[[rules]]\nname = \"tee\"\nsinks = [\"a\"]\ncontinue = true\n");
        let d = decide(&c, Kind::Other, "x");
        assert_eq!(
            (d.sinks, d.alert.rule.as_deref()),
            (vec!["a".into()], Some("tee"))
        );
    }

    #[test]
    fn unrouted_goes_to_defaults() {
        let c =
            config("[[rules]]\nname = \"sev\"\nmatch = { kind = \"cron\" }\nseverity = \"info\"\n");
        let d = decide(&c, Kind::Cron, "x");
        assert_eq!(d.sinks, vec!["d"]);
        assert_eq!(d.alert.severity, Severity::Info);
        assert_eq!(decide(&c, Kind::Other, "x").sinks, vec!["d"]);
        assert_eq!(decide(&c, Kind::Other, "x").alert.rule, None);
    }

    #[test]
    fn drop_after_continue_delivers_nothing() {
        let c = config(
            "[[rules]]\nname = \"tee\"\nsinks = [\"a\"]\ncontinue = true\n\
             [[rules]]\nname = \"drop\"\ndrop = true\n",
        );
        let d = decide(&c, Kind::Cron, "x");
        assert!(d.dropped && d.sinks.is_empty(), "{d:?}");
    }

    #[test]
    fn kind_condition() {
        assert!(matches("kind = \"cron\""));
        assert!(!matches("kind = \"sudo\""));
        assert!(matches("kind = [\"sudo\", \"cron\"]"));
        assert!(matches("kind = \"c*\""));
        assert!(!matches("kind = \"s?do\""));
        assert!(matches("kind = \"*\""));
    }

    #[test]
    fn host_condition_is_a_case_insensitive_glob() {
        assert!(matches("host = \"web01.example.net\""));
        assert!(matches("host = \"WEB*.Example.NET\""));
        assert!(matches("host = \"web0?.example.net\""));
        assert!(matches("host = \"web0[0-9].*\""));
        assert!(!matches("host = \"web0[!1].*\""));
        assert!(
            !matches("host = \"web01\""),
            "a glob matches the whole value"
        );
        assert!(matches("host = [\"db*\", \"web*\"]"));
        let mut alert = Alert::sample();
        alert.host = None;
        assert!(
            !matches_alert("host = \"*\"", alert),
            "no host never matches"
        );
    }

    #[test]
    fn user_and_command_are_case_sensitive_globs() {
        assert!(matches("user = \"root\""));
        assert!(!matches("user = \"ROOT\""));
        assert!(matches("user = \"r*\""));
        assert!(matches("command = \"/usr/local/bin/*\""));
        assert!(matches("command = \"*backup*\""));
        assert!(!matches("command = \"*BACKUP*\""));
        let mut alert = Alert::sample();
        alert.command = None;
        assert!(!matches_alert("command = \"*\"", alert));
    }

    #[test]
    fn from_and_to_globs() {
        assert!(matches("from = \"root@*\""));
        assert!(matches("from = \"*@WEB01.example.net\""));
        assert!(!matches("from = \"*@example.org\""));
        assert!(matches("to = \"ops@*\""), "the first recipient");
        assert!(matches("to = \"root@web01*\""), "the second recipient");
        assert!(!matches("to = \"nobody@*\""));
    }

    #[test]
    fn subject_and_body_regexes() {
        assert!(matches("subject = \"^Cron <root@\""));
        assert!(!matches("subject = \"^cron\""), "case-sensitive by default");
        assert!(matches("subject = \"(?i)^cron\""));
        assert!(matches("body = \"cannot stat\""));
        assert!(!matches("body = \"No space left\""));
        assert!(matches("body = [\"No space left\", \"error:\"]"));
    }

    #[test]
    fn header_condition_in_all_three_spellings() {
        for condition in [
            "\"header.X-Cron-Env\" = \"HOME=/root\"",
            "header.X-Cron-Env = \"HOME=/root\"",
            "header = { x-cron-env = \"HOME=/root\" }",
        ] {
            assert!(matches(condition), "{condition}");
        }
        assert!(!matches("\"header.X-Cron-Env\" = \"HOME=/home\""));
        assert!(
            !matches("\"header.X-Mailer\" = \"\""),
            "a missing header never matches"
        );
    }

    #[test]
    fn failed_condition() {
        assert!(matches("failed = true"));
        assert!(!matches("failed = false"));
        let mut alert = Alert::sample();
        alert.failed = None;
        assert!(!matches_alert("failed = false", alert.clone()));
        assert!(!matches_alert("failed = true", alert));
    }

    #[test]
    fn severity_condition() {
        // The sample alert is a warning.
        assert!(matches("severity = \"warning\""));
        assert!(!matches("severity = \"critical\""));
        assert!(matches("severity = [\"critical\", \"warning\"]"));
        assert!(matches("severity = \">= warning\""));
        assert!(matches("severity = \"<=warning\""));
        assert!(!matches("severity = \"> warning\""));
        assert!(!matches("severity = \"< warning\""));
        assert!(matches("severity = \"> info\""));
    }

    #[test]
    fn all_conditions_must_hold() {
        assert!(matches("kind = \"cron\", host = \"web*\", failed = true"));
        assert!(!matches("kind = \"cron\", host = \"db*\", failed = true"));
    }

    #[test]
    fn resolve_action_sets_resolve() {
        let c = config("[[rules]]\nname = \"ok\"\nresolve = true\nsinks = [\"a\"]\n");
        assert!(decide(&c, Kind::Cron, "x").alert.resolve);
        let c = config("[[rules]]\nname = \"ok\"\nsinks = [\"a\"]\n");
        assert!(!decide(&c, Kind::Cron, "x").alert.resolve);
    }

    #[test]
    fn templates_render_alert_fields_and_recipients() {
        let c = config(
            "[[rules]]\nname = \"t\"\nseverity = \"critical\"\n\
             title = \"{{ severity | upper }} {{ kind }} on {{ host }} ({{ rule }})\"\n\
             summary = \"{{ title }} / {{ to | join(', ') }} / {{ subject }} / {{ body }}\"\n\
             dedup_key = \"{{ kind }}:{{ host }}:{{ user }}\"\n",
        );
        let d = decide_with(&c, &message(), Alert::sample());
        assert_eq!(d.alert.title, "CRITICAL cron on web01.example.net (t)");
        assert_eq!(
            d.alert.summary,
            "cron on web01.example.net: /usr/local/bin/backup.sh / ops@example.net, \
             root@web01.example.net / Cron <root@web01> /usr/local/bin/backup.sh / \
             backup.sh: error: cannot stat /srv/data: No such file or directory"
        );
        assert_eq!(d.alert.dedup_key, "cron:web01.example.net:root");
    }

    #[test]
    fn templates_may_use_loops_and_builtins() {
        let c = config(
            "[[rules]]\nname = \"t\"\n\
             title = \"{% for r in to %}{{ loop.index }}={{ r | lower }} {% endfor %}{{ dict(a=1).a }}\"\n",
        );
        let d = decide_with(&c, &message(), Alert::sample());
        assert_eq!(
            d.alert.title,
            "1=ops@example.net 2=root@web01.example.net 1"
        );
    }

    #[test]
    fn templates_see_facts() {
        let c = config("[[rules]]\nname = \"t\"\ntitle = \"disk {{ facts.device }}\"\n");
        let mut alert = Alert::sample();
        alert.facts.insert("device".into(), "/dev/sda".into());
        assert_eq!(
            decide_with(&c, &message(), alert).alert.title,
            "disk /dev/sda"
        );
    }

    #[test]
    fn template_output_is_one_bounded_line() {
        let c = config(
            "[[rules]]\nname = \"t\"\ntitle = \"{% for i in range(100) %}line {{ i }}\\n{% endfor %}\"\n\
             summary = \"{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}{{ body }}\"\n",
        );
        let d = decide_with(&c, &message(), Alert::sample());
        assert!(!d.alert.title.contains('\n'));
        // `one_line` trims the space before its ellipsis: at most, not exactly, the limit.
        assert!((TITLE_MAX_CHARS - 1..=TITLE_MAX_CHARS).contains(&d.alert.title.chars().count()));
        assert!(d.alert.title.ends_with('…'));
        assert!(d.alert.summary.chars().count() <= SUMMARY_MAX_CHARS);
        assert!(d.alert.summary.ends_with('…'));
    }

    #[test]
    fn template_failures_keep_the_default_text() {
        let c = config(
            "[[rules]]\nname = \"t\"\nsinks = [\"a\"]\n\
             title = \"{{ facts.missing.deeper }}\"\n\
             summary = \"{{ title | nosuchfilter }}\"\n\
             dedup_key = \"{% if false %}x{% endif %}\"\n",
        );
        let d = decide_with(&c, &message(), Alert::sample());
        let sample = Alert::sample();
        assert_eq!(d.alert.title, sample.title);
        assert_eq!(d.alert.summary, sample.summary);
        assert_eq!(
            d.alert.dedup_key, sample.dedup_key,
            "empty output keeps the default"
        );
        assert_eq!(d.sinks, vec!["a"], "the alert is still routed");
    }

    #[test]
    fn invalid_values_are_located() {
        let rule = |m: &str| format!("[[rules]]\nname = \"r\"\nmatch = {m}\n");
        assert_error(
            &rule("{ kind = \"cronn\" }"),
            "rules[0].match.kind",
            2,
            18,
            "unknown kind \"cronn\"",
        );
        assert_error(
            &rule("{ kind = [\"cron\", \"sudoo\"] }"),
            "rules[0].match.kind[1]",
            2,
            27,
            "unknown kind",
        );
        assert_error(
            &rule("{ kind = \"x*\" }"),
            "rules[0].match.kind",
            2,
            18,
            "matches no kind",
        );
        assert_error(
            &rule("{ subject = \"(\" }"),
            "rules[0].match.subject",
            2,
            21,
            "invalid regex",
        );
        assert_error(
            &rule("{ body = [\"ok\", \"a{2,1}\"] }"),
            "rules[0].match.body[1]",
            2,
            25,
            "invalid regex",
        );
        assert_error(
            &rule("{ kind = \"cron\", \"header.X-Cron-Env\" = \"[\" }"),
            "rules[0].match.header.X-Cron-Env",
            2,
            48,
            "invalid regex",
        );
        assert_error(
            &rule("{ header.X-Cron-Env = \"[\" }"),
            "rules[0].match.header.X-Cron-Env",
            2,
            31,
            "invalid regex",
        );
        assert_error(
            &rule("{ host = \"web[01\" }"),
            "rules[0].match.host",
            2,
            18,
            "invalid glob \"web[01\": `[` without a closing `]`",
        );
        assert_error(
            &rule("{ to = \"[z-a]@x\" }"),
            "rules[0].match.to",
            2,
            16,
            "invalid glob",
        );
        assert_error(
            &rule("{ severity = \"urgent\" }"),
            "rules[0].match.severity",
            2,
            22,
            "unknown severity \"urgent\"",
        );
        assert_error(
            &rule("{ host = [] }"),
            "rules[0].match.host",
            2,
            18,
            "an empty list matches nothing",
        );
        assert_error(
            &rule("{ hots = \"x\" }"),
            // serde reports an unknown key in an inline table against the table.
            "rules[0].match",
            2,
            9,
            "unknown field `hots`",
        );
    }

    #[test]
    fn invalid_templates_are_located() {
        assert_error(
            "[[rules]]\nname = \"r\"\ntitle = \"{{ host\"\n",
            "rules[0].title",
            2,
            9,
            "template does not compile",
        );
        assert_error(
            "[[rules]]\nname = \"r\"\n\nsummary = \"{% if %}\"\n",
            "rules[0].summary",
            3,
            11,
            "template does not compile",
        );
        assert_error(
            "[[rules]]\nname = \"r\"\ndedup_key = \"{{ hots }}\"\n",
            "rules[0].dedup_key",
            2,
            13,
            "unknown variable `hots`",
        );
    }

    #[test]
    fn contradictory_actions_are_located() {
        assert_error(
            "[[rules]]\nname = \"r\"\ndrop = true\ncontinue = true\n",
            "rules[0].continue",
            3,
            12,
            "drop = true",
        );
        assert_error(
            "[[rules]]\nname = \"r\"\ndrop = true\nsinks = [\"a\"]\n",
            "rules[0].sinks",
            3,
            9,
            "delivers nothing",
        );
        assert_error(
            "[[rules]]\nname = \"\"\n",
            "rules[0].name",
            1,
            8,
            "must not be empty",
        );
    }

    #[test]
    fn explain_traces_every_rule() {
        let c = config(
            "[[rules]]\nname = \"sudo\"\nmatch = { kind = \"sudo\" }\nsinks = [\"a\"]\n\
             [[rules]]\nname = \"hdr\"\nmatch = { \"header.X-Mailer\" = \"smartd\" }\nsinks = [\"a\"]\n\
             [[rules]]\nname = \"subj\"\nmatch = { subject = \"^logwatch\" }\nsinks = [\"a\"]\n\
             [[rules]]\nname = \"tee\"\nmatch = { host = \"web*\" }\nsinks = [\"a\"]\ncontinue = true\n\
             [[rules]]\nname = \"cron\"\nmatch = { kind = \"cron\", failed = true }\nsinks = [\"b\"]\n\
             [[rules]]\nname = \"later\"\nsinks = [\"b\"]\n",
        );
        let mut trace = Vec::new();
        let d = evaluate(
            &c.rules,
            &c.default_sinks,
            &message(),
            Alert::sample(),
            Some(&mut trace),
        );
        assert_eq!(
            d,
            route(&c.rules, &c.default_sinks, &message(), Alert::sample())
        );
        let failed: Vec<(&str, bool, Option<&str>)> = trace
            .iter()
            .map(|t| (t.rule.as_str(), t.matched, t.failed.as_deref()))
            .collect();
        assert_eq!(
            failed,
            [
                ("sudo", false, Some("kind: expected sudo, got cron")),
                (
                    "hdr",
                    false,
                    Some("header.X-Mailer: expected a match for smartd, got no such header")
                ),
                (
                    "subj",
                    false,
                    Some("subject: expected a match for ^logwatch, got \"Cron <root@web01> /usr/local/bin/backup.sh\"")
                ),
                ("tee", true, None),
                ("cron", true, None),
                ("later", false, Some("not reached: rule \"cron\" decided")),
            ]
        );
        assert!(trace.iter().take(5).all(|t| t.reached));
        assert!(!trace.last().is_some_and(|t| t.reached));
        let text = explain_text(&trace);
        assert!(
            text.contains("    rule sudo: no match: kind: expected sudo, got cron\n"),
            "{text}"
        );
        assert!(text.contains("    rule cron: matched\n"), "{text}");
        assert!(text.contains("    rule later: not reached\n"), "{text}");
    }

    #[test]
    fn explain_describes_lists_and_nulls() {
        let c = config(
            "[[rules]]\nname = \"k\"\nmatch = { kind = [\"sudo\", \"smartd\"] }\n\
             [[rules]]\nname = \"f\"\nmatch = { failed = false }\n\
             [[rules]]\nname = \"h\"\nmatch = { host = \"db*\" }\n",
        );
        let mut alert = Alert::sample();
        alert.host = None;
        let mut trace = Vec::new();
        evaluate(
            &c.rules,
            &c.default_sinks,
            &message(),
            alert,
            Some(&mut trace),
        );
        let failed: Vec<_> = trace.iter().filter_map(|t| t.failed.clone()).collect();
        assert_eq!(
            failed,
            [
                "kind: expected one of sudo, smartd, got cron",
                "failed: expected false, got true",
                "host: expected db*, got null",
            ]
        );
    }

    #[test]
    fn glob_translation() {
        let g = |glob: &str, text: &str| glob_regex(glob, false).unwrap().is_match(text);
        assert!(g("a*c", "abbbc") && g("a*c", "ac") && !g("a*c", "acd"));
        assert!(g("a?c", "abc") && !g("a?c", "ac"));
        assert!(g("[]x]", "]") && g("[]x]", "x"));
        assert!(g("[!a]", "b") && !g("[!a]", "a"));
        assert!(g("[a-c]", "b") && g("[a-]", "-"));
        assert!(
            g("a.b", "a.b") && !g("a.b", "axb"),
            "regex metacharacters are literal"
        );
        assert!(g("\\*", "*") && !g("\\*", "x"));
        assert!(g("[&&]", "&") && g("[\\]]", "]"));
        assert!(glob_regex("a\\", false).is_err());
        assert!(glob_regex("[abc", false).is_err());
    }

    #[test]
    fn typical_rules_load_and_route() {
        let c = Config::parse(Path::new("typical.toml"), &typical_config_toml(), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.rules.len(), 20);
        let d = decide_with(&c, &message(), Alert::sample());
        assert_eq!(d.alert.rule.as_deref(), Some("backup-failures"));
        assert_eq!(d.sinks, ["archive", "pager", "chat"]);
        assert_eq!(
            d.alert.title,
            "backup failed on web01.example.net: /usr/local/bin/backup.sh"
        );
    }
}
