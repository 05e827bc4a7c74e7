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
}

impl Kind {
    /// Every kind, in the order of the spec; for tables and for validating rule matches.
    pub const ALL: [Kind; 14] = [
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
    /// Set by a rule's `resolve = true` for mails that report recovery: sinks that track
    /// incidents (PagerDuty) close the incident with this alert's `dedup_key` instead of
    /// opening one. Absent from JSON when false, so existing consumers see no change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resolve: bool,
}

impl Alert {
    /// How much body text an alert carries: enough for any sink's excerpt, small enough that
    /// a queue of thousands of alerts stays a few megabytes.
    pub const BODY_EXCERPT_CHARS: usize = 4000;

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
            resolve: false,
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
