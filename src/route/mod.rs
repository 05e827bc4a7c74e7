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
//! | `trusted` | `trusted = true` | the alert's `trusted` equals this (see Trust below); null (no `[trust]`, or herald's own alert) matches neither |
//! | `severity` | `severity = "critical"`, `severity = ["warning", "critical"]`, `severity = ">= warning"` | the alert's severity *before this rule's actions* is one of these; `>=`, `>`, `<=`, `<` compare by urgency (`info < warning < critical`) |
//! | `during` | `during = "night"`, `during = ["night", "weekend"]` | the time the mail is routed (when it is ingested) is in any of these `[windows.NAME]` |
//! | `not_during` | `not_during = "office-hours"` | that time is in none of these windows |
//!
//! `[windows.NAME]` (Alertmanager's `time_intervals`): `from = "22:00"` and `to = "07:00"`
//! (local wall-clock `HH:MM`, `to` not included; defaults `"00:00"` and `"24:00"`; `from`
//! later than `to` runs past midnight, and belongs to the day it started on: 22:00 Friday to
//! 07:00 Saturday is `fri`; `from` equal to `to` is the whole day), `days = ["mon", ...,
//! "sun"]` (default every day), `timezone = "Europe/Berlin"` (an IANA name; default the
//! system's local time zone, which honours `TZ`). The instant is converted to the zone's
//! wall-clock time before comparing, so across a daylight saving change a window keeps to the
//! clock on the wall: over a skipped hour it is shorter, over a repeated hour longer.
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
//! # Trust
//!
//! With `[trust]`, the message's `Received:` chain is walked ([`crate::classify::trust`])
//! before any rule: the alert's `trusted` is set, and for untrusted mail `facts.origin` (the
//! `address` and `host` of the hop where it came in from outside), so rules can match and
//! templates show them. After the rules, `untrusted` applies whatever they said: `"mark"`
//! sets an untrusted alert's severity to `info`, prefixes its title with
//! [`UNVERIFIED_PREFIX`] and its `dedup_key` with [`UNVERIFIED_KEY_PREFIX`] (so it can neither
//! fold, open nor close a genuine problem); `"drop"` drops it (its `rule` then reads
//! [`TRUST_RULE`]); `"keep"` leaves it to the rules. Under `"mark"` and `"drop"` untrusted mail
//! feeds no expectation. A message that is not mail at all has no chain to vouch for it and
//! is untrusted. herald's own alerts (`route_own`) have no mail behind them: `trusted` stays
//! null.
//!
//! # Invariants
//!
//! - Everything is checked when the configuration is read, with the location of the offending
//!   value: unknown kinds, severities and windows, globs and regexes that do not compile,
//!   window times, days and time zones that do not exist, templates that do not compile or
//!   name a variable that does not exist, and `drop = true` together with `continue` or
//!   `sinks` (which could never take effect).
//! - Matching compiles nothing and allocates nothing: kinds and severities are bit sets, globs,
//!   regexes and windows are compiled once, and conditions are tested cheapest first.
//! - Matching takes the instant that `during` tests as an argument ([`Router::decide_at`],
//!   [`route_at`]), so a test can fix it; [`Router::decide`] and [`route`] read the clock once
//!   per message, when it is routed (ingested).
//! - A template that fails when rendered never loses the alert: the text from before the
//!   template stays, and a warning is logged.
//!
//! # Layout
//!
//! `rule` reads and validates a rule and applies its actions, `condition` its `match`,
//! `glob` the patterns of string conditions, `window` the `[windows.NAME]` that `during`
//! tests, `template` its templates; `explain` is `--explain`'s trace, `typical` the sample
//! rules. Evaluation is here.

mod condition;
mod explain;
mod glob;
mod rule;
mod template;
mod typical;
mod window;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_bridges::text::one_line;
use herald_bridges::{Alert, Severity};

use crate::classify::trust::Verdict;
use crate::classify::Message;
use crate::config::{TrustConfig, Untrusted};
use crate::error::{ConfigError, Locate};
use crate::expect::Expectation;
use condition::Condition;

pub(crate) use condition::RawMatch;
pub use explain::{explain_json, explain_text, trust_json, trust_text, RuleTrace};
pub(crate) use glob::glob_regex;
pub(crate) use rule::RawRule;
pub use rule::Rule;
pub use template::{DEDUP_KEY_MAX_CHARS, SUMMARY_MAX_CHARS, TITLE_MAX_CHARS};
pub use typical::{typical_config_toml, typical_rules_toml};
pub(crate) use window::RawWindow;
pub use window::Window;
pub use window::Zone;

/// A `match` table compiled on its own, outside a rule (an `[[expect]]`'s): every condition
/// must hold, exactly as in a rule.
#[derive(Debug, Clone)]
pub struct Matcher(Vec<Condition>);

impl Matcher {
    /// Compiles `raw`; `key` names the table for errors.
    pub(crate) fn new(
        raw: &RawMatch,
        key: &str,
        windows: &BTreeMap<String, Window>,
        locate: &dyn Locate,
    ) -> Result<Matcher, ConfigError> {
        raw.validate(key, windows, locate).map(Matcher)
    }

    /// Whether every condition holds for `message` and `alert` at `now`.
    pub fn holds(&self, message: &Message, alert: &Alert, now: DateTime<Utc>) -> bool {
        self.0.iter().all(|c| c.holds(message, alert, now))
    }
}

/// What `untrusted = "mark"` puts before an untrusted alert's title.
pub const UNVERIFIED_PREFIX: &str = "[unverified] ";

/// What `untrusted = "mark"` puts before an untrusted alert's `dedup_key`.
pub const UNVERIFIED_KEY_PREFIX: &str = "unverified:";

/// The `rule` of an alert that `untrusted = "drop"` dropped, so that the log and `herald
/// alerts` say what dropped it ("dropped by rule [trust]").
pub const TRUST_RULE: &str = "[trust]";

/// Where an alert goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The alert with the rules' actions applied (`rule`, `severity`, templates, `resolve`).
    pub alert: Alert,
    /// The sinks to deliver to, each once, in the order named.
    pub sinks: Vec<String>,
    /// A rule said `drop = true`.
    pub dropped: bool,
    /// The expectations (`[[expect]]`) the message feeds, by name: dropped mail counts too.
    pub expected: Vec<String>,
    /// The trust walk's verdict, with `[trust]` (for `classify --explain`).
    pub trust: Option<Verdict>,
}

/// Everything needed to turn a raw message into a routing decision.
#[derive(Debug, Clone)]
pub struct Router {
    rules: Vec<Rule>,
    default_sinks: Vec<String>,
    expectations: Arc<Vec<Expectation>>,
    trust: Option<Arc<TrustConfig>>,
}

impl Router {
    /// The router for a validated configuration.
    pub fn new(rules: Vec<Rule>, default_sinks: Vec<String>) -> Router {
        Router {
            rules,
            default_sinks,
            expectations: Arc::default(),
            trust: None,
        }
    }

    /// The router, also walking each message's `Received:` chain with `[trust]` (see Trust
    /// above); `None`: no walk, `trusted` stays null.
    pub fn trusting(mut self, trust: Option<TrustConfig>) -> Router {
        self.trust = trust.map(Arc::new);
        self
    }

    /// The router, also telling which of `expectations` each message feeds.
    pub fn expecting(mut self, expectations: Vec<Expectation>) -> Router {
        self.expectations = Arc::new(expectations);
        self
    }

    /// The expectations it knows.
    pub fn expectations(&self) -> &[Expectation] {
        &self.expectations
    }

    /// Routes an alert herald made itself (an expectation's), with no mail behind it: the
    /// rules see its alert fields; `sinks` take it if no rule routes it.
    pub fn route_own(&self, alert: Alert, sinks: &[String], now: DateTime<Utc>) -> Decision {
        let message = crate::expect::message_of(&alert);
        let sinks = if sinks.is_empty() {
            &self.default_sinks
        } else {
            sinks
        };
        route_at(&self.rules, sinks, &message, alert, now)
    }

    /// Which expectations `message`, classified and routed as `alert`, feeds.
    fn feeds(&self, message: &Message, alert: &Alert, now: DateTime<Utc>) -> Vec<String> {
        // Only mail herald believes keeps an expectation alive: a stranger must not be able to
        // hide a dead backup by mailing "backup done" (with `untrusted = "keep"` the
        // expectations' own `match` decides, as the rules do).
        let believed = alert.trusted != Some(false)
            || self
                .trust
                .as_deref()
                .is_some_and(|t| matches!(t.untrusted, Untrusted::Keep));
        if !believed {
            return Vec::new();
        }
        self.expectations
            .iter()
            .filter(|e| e.matches(message, alert, now))
            .map(|e| e.name.clone())
            .collect()
    }

    /// Parses, classifies and routes one message now; `truncated` says `raw` is only its
    /// start, `origin` is the `(account, folder)` it was found in (none for a file).
    pub fn decide(&self, raw: &[u8], truncated: bool, origin: Option<(&str, &str)>) -> Decision {
        self.decide_at(raw, truncated, origin, Utc::now())
    }

    /// [`Router::decide`] as if it were `now`: the instant `during` and `not_during` test.
    pub fn decide_at(
        &self,
        raw: &[u8],
        truncated: bool,
        origin: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Decision {
        let (message, mut alert) = classified(raw, truncated, origin);
        let verdict = self.assess(&message, &mut alert);
        let mut decision = route_at(&self.rules, &self.default_sinks, &message, alert, now);
        self.enforce(&mut decision, verdict);
        decision.expected = self.feeds(&message, &decision.alert, now);
        decision
    }

    /// [`Router::decide`], and what each rule made of the message (`classify --explain`).
    pub fn explain(
        &self,
        raw: &[u8],
        truncated: bool,
        origin: Option<(&str, &str)>,
    ) -> (Decision, Vec<RuleTrace>) {
        self.explain_at(raw, truncated, origin, Utc::now())
    }

    /// [`Router::explain`] as if it were `now`.
    pub fn explain_at(
        &self,
        raw: &[u8],
        truncated: bool,
        origin: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> (Decision, Vec<RuleTrace>) {
        let (message, mut alert) = classified(raw, truncated, origin);
        let verdict = self.assess(&message, &mut alert);
        let mut trace = Vec::with_capacity(self.rules.len());
        let mut decision = evaluate(
            &self.rules,
            &self.default_sinks,
            &message,
            alert,
            now,
            Some(&mut trace),
        );
        self.enforce(&mut decision, verdict);
        decision.expected = self.feeds(&message, &decision.alert, now);
        (decision, trace)
    }

    /// Before the rules: the trust walk's verdict on `message`, recorded in `alert`
    /// (`trusted`, and `facts.origin` when untrusted); `None` without `[trust]`.
    fn assess(&self, message: &Message, alert: &mut Alert) -> Option<Verdict> {
        let config = self.trust.as_deref()?;
        let verdict = if message.malformed {
            Verdict {
                trusted: false,
                origin: None,
                hops: Vec::new(),
                vouched: None,
                reason: "not in mail format: no Received chain to read".to_owned(),
            }
        } else {
            crate::classify::trust::walk(&message.headers, config)
        };
        alert.trusted = Some(verdict.trusted);
        if let (false, Some(origin)) = (verdict.trusted, &verdict.origin) {
            alert
                .facts
                .insert("origin".to_owned(), serde_json::json!(origin));
        }
        Some(verdict)
    }

    /// After the rules: `[trust] untrusted` applied to an untrusted alert, whatever the rules
    /// said; `verdict` is kept for `--explain`.
    fn enforce(&self, decision: &mut Decision, verdict: Option<Verdict>) {
        decision.trust = verdict;
        let Some(config) = self.trust.as_deref() else {
            return;
        };
        if decision.alert.trusted != Some(false) {
            return;
        }
        match config.untrusted {
            Untrusted::Keep => {}
            Untrusted::Mark => {
                let alert = &mut decision.alert;
                // Info is the lowest severity: capping at it is setting it.
                alert.severity = Severity::Info;
                alert.title = one_line(
                    &format!("{UNVERIFIED_PREFIX}{}", alert.title),
                    TITLE_MAX_CHARS,
                );
                // A problem of its own: a forged "failed" must not fold the genuine failure
                // that follows into a repeat, nor a forged "recovered" close a real page (or
                // resolve its PagerDuty incident, which shares the key).
                alert.dedup_key = one_line(
                    &format!("{UNVERIFIED_KEY_PREFIX}{}", alert.dedup_key),
                    DEDUP_KEY_MAX_CHARS,
                );
            }
            Untrusted::Drop if decision.dropped => {}
            Untrusted::Drop => {
                let origin = decision
                    .trust
                    .as_ref()
                    .and_then(|v| v.origin.as_ref())
                    .map_or_else(|| "unreadable".to_owned(), |o| o.address.to_string());
                tracing::info!(%origin, title = %decision.alert.title, "Mail from outside the [trust] networks dropped (untrusted = \"drop\").");
                decision.dropped = true;
                decision.sinks.clear();
                decision.alert.rule = Some(TRUST_RULE.to_owned());
            }
        }
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

/// Applies `rules` to `alert` now.
pub fn route(
    rules: &[Rule],
    default_sinks: &[String],
    message: &Message,
    alert: Alert,
) -> Decision {
    route_at(rules, default_sinks, message, alert, Utc::now())
}

/// [`route`] as if it were `now`: the instant `during` and `not_during` test.
pub fn route_at(
    rules: &[Rule],
    default_sinks: &[String],
    message: &Message,
    alert: Alert,
    now: DateTime<Utc>,
) -> Decision {
    evaluate(rules, default_sinks, message, alert, now, None)
}

/// [`route_at`], recording each rule's outcome in `trace` when given.
fn evaluate(
    rules: &[Rule],
    default_sinks: &[String],
    message: &Message,
    mut alert: Alert,
    now: DateTime<Utc>,
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
                windows: Vec::new(),
            });
            continue;
        }
        let failure = rule.first_failure(message, &alert, now);
        if let Some(trace) = trace.as_deref_mut() {
            trace.push(RuleTrace {
                rule: rule.name.clone(),
                matched: failure.is_none(),
                failed: failure.map(|c| c.explain_failure(message, &alert, now)),
                reached: true,
                windows: rule.held_windows(message, &alert, now),
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
        expected: Vec::new(),
        trust: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::error::ConfigError;
    use herald_bridges::{Kind, Severity};
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
    fn trusted_condition() {
        let mut alert = Alert::sample();
        assert!(
            !matches_alert("trusted = true", alert.clone()),
            "null: neither"
        );
        assert!(!matches_alert("trusted = false", alert.clone()));
        alert.trusted = Some(true);
        assert!(matches_alert("trusted = true", alert.clone()));
        assert!(!matches_alert("trusted = false", alert.clone()));
        alert.trusted = Some(false);
        assert!(matches_alert("trusted = false", alert));
        let c = config("[[rules]]\nname = \"t\"\nmatch = { trusted = true }\n");
        let mut trace = Vec::new();
        evaluate(
            &c.rules,
            &c.default_sinks,
            &message(),
            Alert::sample(),
            DateTime::UNIX_EPOCH,
            Some(&mut trace),
        );
        assert_eq!(
            trace[0].failed.as_deref(),
            Some("trusted: expected true, got null")
        );
    }

    /// A failing cron job's mail that reached the hub from `peer`.
    fn cron_via(peer: &str) -> Vec<u8> {
        let mut raw = format!(
            "Received: from web01.example.net (web01.example.net [{peer}])\r\n\tby hub.example.net (Postfix) with ESMTP id 4Y7Gk12QZnz9sQ; Tue, 24 Nov 2026 03:10:02 +0000 (UTC)\r\n"
        )
        .into_bytes();
        raw.extend(herald_testkit::cron_mail(
            "web01.example.net",
            "root",
            "/usr/local/bin/backup.sh",
            "backup.sh: failed\n",
        ));
        raw
    }

    fn trusting(rules: &str, untrusted: &str) -> Router {
        let c = config(&format!(
            "{rules}[trust]\nnetworks = [\"10.0.0.0/8\"]\nuntrusted = \"{untrusted}\"\n"
        ));
        Router::new(c.rules.clone(), c.default_sinks.clone()).trusting(c.trust.clone())
    }

    const PAGE: &str = "[[rules]]\nname = \"page\"\nmatch = { kind = \"cron\" }\nseverity = \"critical\"\nsinks = [\"a\"]\n";

    #[test]
    fn trusted_mail_is_routed_as_the_rules_say() {
        let d = trusting(PAGE, "mark").decide(&cron_via("10.1.2.3"), false, None);
        assert_eq!(d.alert.trusted, Some(true));
        assert_eq!(d.alert.severity, Severity::Critical);
        assert!(!d.alert.title.starts_with(UNVERIFIED_PREFIX));
        assert!(!d.alert.facts.contains_key("origin"));
        assert_eq!(d.sinks, ["a"]);
        assert!(d.trust.is_some_and(|v| v.trusted));
        let d = Router::new(Vec::new(), Vec::new()).decide(&cron_via("203.0.113.5"), false, None);
        assert_eq!(d.alert.trusted, None, "no [trust]: null");
        assert_eq!(d.trust, None);
    }

    #[test]
    fn a_marked_stranger_has_a_problem_of_its_own_and_feeds_no_expectation() {
        let expect = "[[expect]]\nname = \"backup\"\nmatch = { kind = \"cron\" }\nevery = \"1d\"\n";
        let router = |untrusted: &str| {
            let c = config(&format!(
                "{PAGE}{expect}[trust]\nnetworks = [\"10.0.0.0/8\"]\nuntrusted = \"{untrusted}\"\n"
            ));
            Router::new(c.rules.clone(), c.default_sinks.clone())
                .trusting(c.trust.clone())
                .expecting(c.expectations.clone())
        };
        let genuine = router("mark").decide(&cron_via("10.1.2.3"), false, None);
        let forged = router("mark").decide(&cron_via("203.0.113.5"), false, None);
        assert_eq!(genuine.expected, ["backup"]);
        assert_eq!(
            forged.alert.dedup_key,
            format!("{UNVERIFIED_KEY_PREFIX}{}", genuine.alert.dedup_key),
            "a forged mail must not share the genuine problem (nor its PagerDuty incident)"
        );
        assert!(forged.expected.is_empty(), "{:?}", forged.expected);
        let dropped = router("drop").decide(&cron_via("203.0.113.5"), false, None);
        assert!(dropped.expected.is_empty(), "{:?}", dropped.expected);
        let kept = router("keep").decide(&cron_via("203.0.113.5"), false, None);
        assert_eq!(
            kept.expected,
            ["backup"],
            "keep: the expectation's match decides"
        );
        assert_eq!(kept.alert.dedup_key, genuine.alert.dedup_key);
    }

    #[test]
    fn untrusted_modes_apply_after_the_rules() {
        let forged = cron_via("203.0.113.5");
        let d = trusting(PAGE, "mark").decide(&forged, false, None);
        assert_eq!(d.alert.trusted, Some(false));
        assert_eq!(d.alert.severity, Severity::Info, "the rule said critical");
        assert_eq!(
            d.alert.title,
            "[unverified] cron on web01.example.net: /usr/local/bin/backup.sh"
        );
        assert_eq!(
            d.alert.facts["origin"],
            serde_json::json!({"address": "203.0.113.5", "host": "web01.example.net"})
        );
        assert_eq!(
            (d.sinks.as_slice(), d.dropped),
            (["a".to_owned()].as_slice(), false)
        );

        let d = trusting(PAGE, "drop").decide(&forged, false, None);
        assert!(d.dropped && d.sinks.is_empty(), "{d:?}");
        assert_eq!(d.alert.rule.as_deref(), Some(TRUST_RULE));

        let d = trusting(PAGE, "keep").decide(&forged, false, None);
        assert_eq!(
            (d.alert.trusted, d.alert.severity, d.dropped),
            (Some(false), Severity::Critical, false)
        );
        assert!(d.alert.title.starts_with("cron on"));

        // Rules see `trusted` (and the origin) before the mode applies.
        let strangers =
            "[[rules]]\nname = \"strangers\"\nmatch = { trusted = false }\nsinks = [\"b\"]\n\
                         title = \"from {{ facts.origin.address }}\"\n";
        let d = trusting(&format!("{strangers}{PAGE}"), "mark").decide(&forged, false, None);
        assert_eq!(d.alert.rule.as_deref(), Some("strangers"));
        assert_eq!(d.sinks, ["b"]);
        assert_eq!(d.alert.title, "[unverified] from 203.0.113.5");
        let (explained, _) = trusting(PAGE, "mark").explain(&forged, false, None);
        assert_eq!(
            explained.alert,
            trusting(PAGE, "mark").decide(&forged, false, None).alert
        );
        let text = explain_text(&[]) + &trust_text(explained.trust.as_ref());
        assert!(
            text.contains("    trust: hop 1 from 203.0.113.5 (web01.example.net): origin\n"),
            "{text}"
        );
    }

    #[test]
    fn unparsable_mail_is_untrusted() {
        let malformed = Message {
            malformed: true,
            ..Message::default()
        };
        let mut alert = Alert::sample();
        let verdict = trusting(PAGE, "mark").assess(&malformed, &mut alert);
        assert_eq!(alert.trusted, Some(false));
        assert!(verdict.is_some_and(|v| v.reason.starts_with("not in mail format")));
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
            DateTime::UNIX_EPOCH,
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
            DateTime::UNIX_EPOCH,
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
