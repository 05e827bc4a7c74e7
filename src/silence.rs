//! Silence matchers: what `herald silence add` takes and what dispatch tests each alert with.
//!
//! A matcher is `key=glob` or `key~regex`; a silence holds for an alert when all of its
//! matchers do. They are tested at dispatch time, where only the [`Alert`] is left (not the
//! raw headers), so the keys are the alert's own fields, with the same meaning and case rules
//! as the same key in a rule's `match` (see the `route` module docs):
//!
//! | key | `=` | `~` |
//! |---|---|---|
//! | `host`, `from` | glob, case-insensitive | regex |
//! | `user`, `command`, `account`, `mailbox`, `rule`, `dedup_key` | glob, case-sensitive | regex |
//! | `kind` | glob on the kind's name; must name or match a real kind | regex |
//! | `subject`, `body` | glob on the whole decoded subject / body excerpt | regex, unanchored |
//! | `severity` | `info`, `warning` or `critical` | — |
//! | `failed` | `true` or `false` | — |
//!
//! Globs are the rules' globs (`route::glob_regex`): they match the whole value. Regexes are
//! Rust `regex` syntax, unanchored, case-sensitive unless `(?i)`. A field the alert does not
//! have (no host, `failed` not applicable) matches no matcher on it, not even `host=*`.
//!
//! Guarantees: [`Matchers::parse`] rejects, in plain words, an unknown key, a key without
//! `=` or `~`, a glob or regex that does not compile, and an empty list; `header.NAME` and
//! `to` are rejected with the reason (they are not kept in the alert). Matching compiles
//! nothing.

use herald_bridges::{Alert, Kind, Severity};
use regex::Regex;

use crate::route::glob_regex;

/// The keys a matcher may name, for error messages.
const KEYS: &str =
    "kind, host, user, command, from, account, mailbox, rule, dedup_key, subject, body, severity, failed";

/// A silence's matchers, compiled: a silence holds for an alert when every one matches.
#[derive(Debug, Clone)]
pub struct Matchers(Vec<Matcher>);

/// Why a silence's matchers cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    /// No matcher at all: a silence of everything is refused.
    #[error("a silence needs at least one matcher (key=glob or key~regex, e.g. host=web*)")]
    Empty,
    /// One matcher is wrong.
    #[error("{matcher:?}: {reason}")]
    Invalid {
        /// The matcher as written.
        matcher: String,
        /// What is wrong with it, in plain words.
        reason: String,
    },
}

#[derive(Debug, Clone)]
enum Matcher {
    /// A glob or regex on a string field; a missing field never matches.
    Text(Field, Regex),
    Severity(Severity),
    Failed(bool),
}

/// A string field of the alert that a matcher can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Kind,
    Host,
    User,
    Command,
    From,
    Account,
    Mailbox,
    Rule,
    DedupKey,
    Subject,
    Body,
}

impl Field {
    fn named(key: &str) -> Option<Field> {
        Some(match key {
            "kind" => Field::Kind,
            "host" => Field::Host,
            "user" => Field::User,
            "command" => Field::Command,
            "from" => Field::From,
            "account" => Field::Account,
            "mailbox" => Field::Mailbox,
            "rule" => Field::Rule,
            "dedup_key" => Field::DedupKey,
            "subject" => Field::Subject,
            "body" => Field::Body,
            _ => return None,
        })
    }

    /// Whether a glob on this field ignores case: as in `match`, host names and mail
    /// addresses do, Unix names, commands and herald's own names do not.
    fn case_insensitive(self) -> bool {
        matches!(self, Field::Host | Field::From)
    }

    fn value(self, alert: &Alert) -> Option<&str> {
        match self {
            Field::Kind => Some(alert.kind.as_str()),
            Field::Host => alert.host.as_deref(),
            Field::User => alert.user.as_deref(),
            Field::Command => alert.command.as_deref(),
            Field::From => alert.from.as_deref(),
            Field::Account => alert.account.as_deref(),
            Field::Mailbox => alert.mailbox.as_deref(),
            Field::Rule => alert.rule.as_deref(),
            Field::DedupKey => Some(&alert.dedup_key),
            Field::Subject => Some(&alert.subject),
            Field::Body => Some(&alert.body),
        }
    }
}

impl Matchers {
    /// Compiles matchers as the operator wrote them (`host=web*`, `subject~(?i)disk`).
    pub fn parse(matchers: &[String]) -> Result<Matchers, MatcherError> {
        if matchers.is_empty() {
            return Err(MatcherError::Empty);
        }
        matchers
            .iter()
            .map(|text| {
                Matcher::parse(text).map_err(|reason| MatcherError::Invalid {
                    matcher: text.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()
            .map(Matchers)
    }

    /// Whether every matcher holds for `alert`.
    pub fn matches(&self, alert: &Alert) -> bool {
        self.0.iter().all(|m| m.matches(alert))
    }
}

impl Matcher {
    fn parse(text: &str) -> Result<Matcher, String> {
        // The key ends at the first `=` or `~`: what follows is the pattern, which may
        // contain either character itself (`subject~a=b`).
        let Some(at) = text.find(['=', '~']) else {
            return Err(format!(
                "no `=` or `~`: write key=glob or key~regex (keys: {KEYS})"
            ));
        };
        let (key, rest) = text.split_at(at);
        let mut rest = rest.chars();
        let regex = rest.next() == Some('~');
        let pattern = rest.as_str();
        if key.is_empty() {
            return Err(format!("no key before `=` or `~` (keys: {KEYS})"));
        }
        if key == "to" || key.starts_with("header.") || key == "header" {
            return Err(format!(
                "`{key}` is not available to silences: they are applied at dispatch, where the \
                 alert keeps neither its recipients nor its headers (a rule's `match` can test \
                 them)"
            ));
        }
        match key {
            "severity" => severity(regex, pattern).map(Matcher::Severity),
            "failed" => failed(regex, pattern).map(Matcher::Failed),
            _ => {
                let field = Field::named(key)
                    .ok_or_else(|| format!("unknown key `{key}` (keys: {KEYS})"))?;
                let re = if regex {
                    Regex::new(pattern).map_err(|e| format!("invalid regex: {e}"))?
                } else {
                    let re = glob_regex(pattern, field.case_insensitive())
                        .map_err(|m| format!("invalid glob {pattern:?}: {m}"))?;
                    if field == Field::Kind && !Kind::ALL.iter().any(|k| re.is_match(k.as_str())) {
                        return Err(format!(
                            "{pattern:?} names no kind (kinds: {})",
                            Kind::ALL.map(Kind::as_str).join(", ")
                        ));
                    }
                    re
                };
                Ok(Matcher::Text(field, re))
            }
        }
    }

    fn matches(&self, alert: &Alert) -> bool {
        match self {
            Matcher::Text(field, re) => field.value(alert).is_some_and(|v| re.is_match(v)),
            Matcher::Severity(severity) => alert.severity == *severity,
            Matcher::Failed(failed) => alert.failed == Some(*failed),
        }
    }
}

fn severity(regex: bool, text: &str) -> Result<Severity, String> {
    let names = [Severity::Info, Severity::Warning, Severity::Critical];
    names
        .into_iter()
        .find(|s| !regex && s.as_str() == text)
        .ok_or_else(|| "write severity=info, severity=warning or severity=critical".to_owned())
}

fn failed(regex: bool, text: &str) -> Result<bool, String> {
    match (regex, text) {
        (false, "true") => Ok(true),
        (false, "false") => Ok(false),
        _ => Err("write failed=true or failed=false".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(matchers: &[&str]) -> Result<Matchers, MatcherError> {
        let owned: Vec<String> = matchers.iter().map(|m| (*m).to_owned()).collect();
        Matchers::parse(&owned)
    }

    /// Whether `matchers` silence the sample alert (cron, web01.example.net, root, failed,
    /// warning).
    fn silences(matchers: &[&str]) -> bool {
        silences_alert(matchers, &Alert::sample())
    }

    fn silences_alert(matchers: &[&str], alert: &Alert) -> bool {
        parse(matchers).unwrap().matches(alert)
    }

    fn reason(matcher: &str) -> String {
        match parse(&[matcher]) {
            Err(MatcherError::Invalid { reason, .. }) => reason,
            other => panic!("{matcher}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn kind_is_a_glob_on_the_kinds_name() {
        assert!(silences(&["kind=cron"]));
        assert!(silences(&["kind=c*"]));
        assert!(!silences(&["kind=sudo"]));
        assert!(
            reason("kind=CRON").contains("names no kind"),
            "kind names are lower-case"
        );
        assert!(silences(&["kind~^cr"]));
        assert!(reason("kind=crom").contains("names no kind (kinds: cron, sudo"));
    }

    #[test]
    fn host_and_from_globs_ignore_case() {
        assert!(silences(&["host=web*"]));
        assert!(silences(&["host=WEB01.Example.NET"]));
        assert!(!silences(&["host=web01"]), "a glob matches the whole value");
        assert!(silences(&["from=*@web01.EXAMPLE.net"]));
        assert!(!silences(&["from=*@example.org"]));
        let mut alert = Alert::sample();
        alert.host = None;
        assert!(
            !silences_alert(&["host=*"], &alert),
            "no host never matches"
        );
    }

    #[test]
    fn user_command_account_mailbox_rule_and_dedup_key_globs_keep_case() {
        assert!(silences(&["user=root"]));
        assert!(!silences(&["user=ROOT"]));
        assert!(silences(&["command=/usr/local/bin/*"]));
        assert!(!silences(&["command=*BACKUP*"]));
        assert!(silences(&["dedup_key=cron:web01.example.net:*"]));
        assert!(!silences(&["rule=*"]), "the sample alert has no rule");
        assert!(!silences(&["account=*"]));
        let mut alert = Alert::sample();
        alert.rule = Some("cron-failures".into());
        alert.account = Some("hub".into());
        alert.mailbox = Some("Cron".into());
        assert!(silences_alert(
            &["rule=cron-*", "account=hub", "mailbox=Cron"],
            &alert
        ));
        assert!(!silences_alert(&["mailbox=cron"], &alert));
    }

    #[test]
    fn subject_and_body_take_regexes_and_globs() {
        assert!(silences(&["subject~^Cron <root@"]));
        assert!(!silences(&["subject~^cron"]), "regexes keep case");
        assert!(silences(&["subject~(?i)^cron"]));
        assert!(silences(&["body~cannot stat"]));
        assert!(!silences(&["body~No space left"]));
        assert!(silences(&["subject=Cron*backup.sh"]));
        assert!(
            silences(&["body=*/srv/data*"]),
            "a glob spans the body's lines"
        );
        assert!(
            silences(&["host~^web\\d+\\."]),
            "any text key takes a regex"
        );
        assert!(silences(&["subject~a|Cron"]));
    }

    #[test]
    fn severity_and_failed() {
        assert!(silences(&["severity=warning"]));
        assert!(!silences(&["severity=critical"]));
        assert!(silences(&["failed=true"]));
        assert!(!silences(&["failed=false"]));
        let mut alert = Alert::sample();
        alert.failed = None;
        assert!(
            !silences_alert(&["failed=false"], &alert),
            "not applicable matches neither"
        );
        assert!(reason("severity=urgent").contains("severity=critical"));
        assert!(reason("severity~crit").contains("severity=critical"));
        assert!(reason("failed=yes").contains("failed=true or failed=false"));
    }

    #[test]
    fn every_matcher_must_hold() {
        assert!(silences(&["kind=cron", "host=web*", "failed=true"]));
        assert!(!silences(&["kind=cron", "host=db*"]));
    }

    #[test]
    fn the_pattern_may_contain_the_operators() {
        let mut alert = Alert::sample();
        alert.subject = "a=b~c".into();
        assert!(silences_alert(&["subject=a=b~c"], &alert));
        assert!(silences_alert(&["subject~=b~"], &alert));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(parse(&[]).unwrap_err(), MatcherError::Empty);
        assert!(reason("hostname=web*").starts_with("unknown key `hostname` (keys: kind, host"));
        assert!(reason("web01").starts_with("no `=` or `~`"));
        assert!(reason("=web01").starts_with("no key before"));
        assert!(reason("subject~(unclosed").starts_with("invalid regex:"));
        assert!(reason("host=web[01").contains("`[` without a closing `]`"));
        for key in ["to=root@*", "header.X-Mailer~^smartd", "header=x"] {
            assert!(
                reason(key).contains("the alert keeps neither its recipients nor its headers"),
                "{key}: {}",
                reason(key)
            );
        }
        let error = parse(&["kind=cron", "hostname=x"]).unwrap_err();
        assert!(
            error.to_string().starts_with("\"hostname=x\": unknown key"),
            "{error}"
        );
    }
}
