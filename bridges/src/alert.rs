//! The alert: what herald knows about one message after classification and rules.
//!
//! Its serialized form is the contract scripts rely on (`herald classify --json`, the webhook
//! body): fields may be added, never renamed or removed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of system mail a message is. `Other` is the catch-all: a message no parser
/// recognises still becomes an alert of this kind, never nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Cron,
    Sudo,
    Anacron,
    Smartd,
    Mdadm,
    UnattendedUpgrades,
    Apticron,
    Logwatch,
    Fail2ban,
    Systemd,
    Zed,
    Apcupsd,
    Bounce,
    Other,
    /// herald's own: expected mail did not come (an `[[expect]]` deadline passed).
    Missing,
}

impl Kind {
    /// Every kind, in the order of the spec; for tables and for validating rule matches.
    pub const ALL: [Kind; 15] = [
        Kind::Cron,
        Kind::Sudo,
        Kind::Anacron,
        Kind::Smartd,
        Kind::Mdadm,
        Kind::UnattendedUpgrades,
        Kind::Apticron,
        Kind::Logwatch,
        Kind::Fail2ban,
        Kind::Systemd,
        Kind::Zed,
        Kind::Apcupsd,
        Kind::Bounce,
        Kind::Other,
        Kind::Missing,
    ];

    /// The name used in JSON, in rules and in dedup keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cron => "cron",
            Kind::Sudo => "sudo",
            Kind::Anacron => "anacron",
            Kind::Smartd => "smartd",
            Kind::Mdadm => "mdadm",
            Kind::UnattendedUpgrades => "unattended-upgrades",
            Kind::Apticron => "apticron",
            Kind::Logwatch => "logwatch",
            Kind::Fail2ban => "fail2ban",
            Kind::Systemd => "systemd",
            Kind::Zed => "zed",
            Kind::Apcupsd => "apcupsd",
            Kind::Bounce => "bounce",
            Kind::Other => "other",
            Kind::Missing => "missing",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent an alert is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// The name used in JSON and rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert, as classified and routed. Every string here may come from a stranger's mail:
/// sinks must escape or strip it for their medium.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The message's `Message-ID` header, with its angle brackets, if it had one.
    pub message_id: Option<String>,
    /// What the message is.
    pub kind: Kind,
    /// The machine the alert is about (not the relay that delivered the mail).
    pub host: Option<String>,
    /// The cron job's owner or the sudo user.
    pub user: Option<String>,
    /// The cron command or the sudo command.
    pub command: Option<String>,
    /// `true`: a failure or a problem; `false`: success or information; `None`: not applicable.
    pub failed: Option<bool>,
    /// The exit status, where the mail states one.
    pub exit_status: Option<i32>,
    /// From the matching rule, else the parser's default.
    pub severity: Severity,
    /// The name of the rule that decided the alert's routing, if any.
    pub rule: Option<String>,
    /// One line saying what happened.
    pub title: String,
    /// The most useful line or two of the message.
    pub summary: String,
    /// Alerts with equal keys are repeats of one problem (PagerDuty folds them).
    pub dedup_key: String,
    /// Kind-specific typed fields.
    pub facts: BTreeMap<String, serde_json::Value>,
    /// The message's decoded subject.
    pub subject: String,
    /// The message's `From` address.
    pub from: Option<String>,
    /// The message's `Date`, as RFC 3339, if it had a valid one.
    pub date: Option<String>,
    /// The start of the decoded body text, bounded (see [`Alert::BODY_EXCERPT_CHARS`]).
    pub body: String,
    /// Whether the message was larger than herald fetches (`max_message_bytes`).
    pub truncated: bool,
    /// The IMAP account the mail was found in (`[[imap]] name`); `None` for a message read
    /// from a file and for herald's own notices. Absent in alerts stored by herald 0.1.
    #[serde(default)]
    pub account: Option<String>,
    /// The folder the mail was found in; `None` where `account` is.
    #[serde(default)]
    pub mailbox: Option<String>,
    /// Whether the mail's `Received:` chain stays within `[trust]`'s networks (or a trusted
    /// server vouched for it): `false` means it came from outside and may be forged. `None`
    /// without `[trust]`, and for herald's own alerts. Absent in alerts stored before it.
    #[serde(default)]
    pub trusted: Option<bool>,
    /// Set by a rule's `resolve = true` for mails that report recovery: sinks that track
    /// incidents (PagerDuty) close the incident with this alert's `dedup_key` instead of
    /// opening one. Absent from JSON when false, so existing consumers see no change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resolve: bool,
    /// Set by dispatch on what it sends: the key of the group the notification belongs to
    /// (the values of the rule's `group_by`, joined by `:`; with the default
    /// `group_by = ["dedup_key"]` it is the `dedup_key`). Sinks that track incidents
    /// (PagerDuty) key them by it, so a storm grouped across hosts is one incident. Absent
    /// from `classify` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
    /// Set by dispatch on a reminder: the repeats of this problem that were folded since it
    /// was last notified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<Repeats>,
    /// Set by dispatch on a digest: the problems it lists (two or more; at most
    /// [`Alert::DIGEST_MAX_MEMBERS`], the rest counted in `digest_more`). The digest's own
    /// `title` and `summary` already say, in short, what the members say at length, so a sink
    /// that shows only those stays correct.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digest: Vec<Member>,
    /// How many problems of the digest are not listed in `digest`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub digest_more: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Repeats of one problem folded into a reminder ("failed 37 more times since 03:00").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeats {
    /// How many alerts were folded.
    pub count: u64,
    /// When the first folded alert came (RFC 3339).
    pub since: String,
    /// When the last one came (RFC 3339).
    pub last: String,
}

/// One problem listed in a digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The problem's kind.
    pub kind: Kind,
    /// The machine it is about.
    pub host: Option<String>,
    /// The cron owner or sudo user.
    pub user: Option<String>,
    /// The cron or sudo command.
    pub command: Option<String>,
    /// Whether its latest alert reports a failure.
    pub failed: Option<bool>,
    /// Its latest alert's severity.
    pub severity: Severity,
    /// Its latest alert's title.
    pub title: String,
    /// Its latest alert's summary.
    pub summary: String,
    /// The problem: its `dedup_key`.
    pub dedup_key: String,
    /// How many alerts of the problem the digest covers (at least one).
    pub count: u64,
    /// When the first of them came (RFC 3339).
    pub first: String,
    /// When the last of them came (RFC 3339).
    pub last: String,
    /// Whether this is a reminder of a problem notified before (not a new one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reminder: bool,
}

impl Alert {
    /// How much body text an alert carries: enough for any sink's excerpt, small enough that
    /// a queue of thousands of alerts stays a few megabytes.
    pub const BODY_EXCERPT_CHARS: usize = 4000;

    /// How many problems a digest lists: enough for a storm across a rack, few enough that
    /// one outbox row stays small (each member carries no body).
    pub const DIGEST_MAX_MEMBERS: usize = 50;

    /// A sample alert: what `herald test-sink` sends and what sink tests start from.
    pub fn sample() -> Alert {
        Alert {
            message_id: Some("<herald-test@localhost>".into()),
            kind: Kind::Cron,
            host: Some("web01.example.net".into()),
            user: Some("root".into()),
            command: Some("/usr/local/bin/backup.sh".into()),
            failed: Some(true),
            exit_status: None,
            severity: Severity::Warning,
            rule: None,
            title: "cron on web01.example.net: /usr/local/bin/backup.sh".into(),
            summary: "backup.sh: error: cannot stat /srv/data: No such file or directory".into(),
            dedup_key: "cron:web01.example.net:root:/usr/local/bin/backup.sh".into(),
            facts: BTreeMap::new(),
            subject: "Cron <root@web01> /usr/local/bin/backup.sh".into(),
            from: Some("root@web01.example.net".into()),
            date: None,
            body: "backup.sh: error: cannot stat /srv/data: No such file or directory\n".into(),
            truncated: false,
            account: None,
            mailbox: None,
            trusted: None,
            resolve: false,
            group_key: None,
            repeats: None,
            digest: Vec::new(),
            digest_more: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_match_serde() {
        for kind in Kind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, serde_json::Value::String(kind.as_str().into()));
        }
    }

    #[test]
    fn severity_orders_by_urgency() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    }
}
