//! Classification: raw message bytes → a typed [`Alert`] (before rules).
//!
//! [`parse`] turns bytes from a stranger into a [`Message`] — decoded subject, addresses,
//! headers and body text — and never panics, whatever the input: a message mail-parser cannot
//! make sense of still yields a `Message` (empty fields, `malformed` set). [`classify`] then asks
//! each built-in parser in turn whether it recognises the message; the first that does fills in
//! kind, host, user, command and the rest. Anything unrecognised becomes kind `other` with its
//! subject, so nothing is dropped for being unknown.

mod cron;

use std::collections::BTreeMap;

use herald_bridges::text::one_line;
use herald_bridges::{Alert, Kind, Severity};

/// How much decoded body text is kept for classification and rules: a cron job can print
/// megabytes; what identifies a message and what a human reads in an alert is at its start.
pub const MAX_BODY_CHARS: usize = 64 * 1024;

/// A parsed message: the view that parsers and rules work on.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// `Message-ID`, with angle brackets.
    pub message_id: Option<String>,
    /// Decoded `Subject`, empty when missing.
    pub subject: String,
    /// The first `From` address.
    pub from: Option<String>,
    /// Every `To` address.
    pub to: Vec<String>,
    /// `Date` as RFC 3339, when valid.
    pub date: Option<String>,
    /// Every header of the top-level part, in order: (name as written, unfolded raw value).
    pub headers: Vec<(String, String)>,
    /// Decoded body text (the first text part, or HTML made readable), at most
    /// [`MAX_BODY_CHARS`] characters.
    pub body: String,
    /// Whether herald fetched only the start of a larger message.
    pub truncated: bool,
    /// Whether the bytes were not recognisable as a mail message at all.
    pub malformed: bool,
}

impl Message {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first non-blank line of the body, trimmed.
    pub fn first_line(&self) -> Option<&str> {
        self.body.lines().map(str::trim).find(|l| !l.is_empty())
    }
}

/// Parses `raw`; `truncated` says whether `raw` is only the start of the message.
pub fn parse(raw: &[u8], truncated: bool) -> Message {
    let Some(parsed) = mail_parser::MessageParser::default().parse(raw) else {
        return Message {
            truncated,
            malformed: true,
            ..Message::default()
        };
    };
    let body = parsed
        .body_text(0)
        .or_else(|| parsed.body_html(0))
        .map(|text| text.chars().take(MAX_BODY_CHARS).collect())
        .unwrap_or_default();
    Message {
        message_id: parsed.message_id().map(|id| format!("<{id}>")),
        subject: parsed.subject().unwrap_or_default().to_owned(),
        from: parsed
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_owned),
        to: parsed
            .to()
            .map(|a| {
                a.iter()
                    .filter_map(|a| a.address())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        date: parsed
            .date()
            .filter(|d| d.is_valid())
            .map(|d| d.to_rfc3339()),
        headers: parsed
            .headers_raw()
            .map(|(name, value)| (name.to_owned(), unfold(value)))
            .collect(),
        body,
        truncated,
        malformed: parsed.headers().is_empty(),
    }
}

/// Joins a folded header value onto one line and trims it.
fn unfold(value: &str) -> String {
    value
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a built-in parser found; turned into an [`Alert`] by [`classify`].
#[derive(Debug, Clone)]
struct Finding {
    kind: Kind,
    host: Option<String>,
    user: Option<String>,
    command: Option<String>,
    failed: Option<bool>,
    exit_status: Option<i32>,
    severity: Severity,
    title: String,
    summary: String,
    dedup_key: String,
    facts: BTreeMap<String, serde_json::Value>,
}

/// Classifies a parsed message with the built-in parsers (no rules applied yet).
pub fn classify(message: &Message) -> Alert {
    let finding = cron::recognise(message).unwrap_or_else(|| other(message));
    Alert {
        message_id: message.message_id.clone(),
        kind: finding.kind,
        host: finding.host,
        user: finding.user,
        command: finding.command,
        failed: finding.failed,
        exit_status: finding.exit_status,
        severity: finding.severity,
        rule: None,
        title: finding.title,
        summary: finding.summary,
        dedup_key: finding.dedup_key,
        facts: finding.facts,
        subject: message.subject.clone(),
        from: message.from.clone(),
        date: message.date.clone(),
        body: message
            .body
            .chars()
            .take(Alert::BODY_EXCERPT_CHARS)
            .collect(),
        truncated: message.truncated,
        resolve: false,
    }
}

/// The catch-all: the subject and the first line say what the message is.
fn other(message: &Message) -> Finding {
    let subject = one_line(&message.subject, 200);
    let title = if message.malformed {
        "unreadable message (not in mail format)".to_owned()
    } else if subject.is_empty() {
        "(no subject)".to_owned()
    } else {
        subject.clone()
    };
    let mut facts = BTreeMap::new();
    if message.malformed {
        facts.insert("malformed".into(), serde_json::Value::Bool(true));
    }
    Finding {
        kind: Kind::Other,
        host: None,
        user: None,
        command: None,
        failed: None,
        exit_status: None,
        severity: Severity::Info,
        title,
        summary: summary_of(message),
        dedup_key: format!(
            "other:{}:{}",
            message.from.as_deref().unwrap_or(""),
            subject
        ),
        facts,
    }
}

/// The first non-blank body line, on one line and bounded.
fn summary_of(message: &Message) -> String {
    one_line(message.first_line().unwrap_or_default(), 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_becomes_other_without_panicking() {
        for raw in [
            &b""[..],
            b"\0\xff\xfe",
            b"no colon here\n\nbody",
            b":\n:\n\n",
        ] {
            let alert = classify(&parse(raw, false));
            assert_eq!(alert.kind, Kind::Other);
        }
    }

    #[test]
    fn plain_message_is_other_with_subject() {
        let raw = b"From: a@b.example\r\nSubject: Hello there\r\n\r\nfirst line\r\nsecond\r\n";
        let alert = classify(&parse(raw, false));
        assert_eq!(alert.kind, Kind::Other);
        assert_eq!(alert.title, "Hello there");
        assert_eq!(alert.summary, "first line");
        assert_eq!(alert.from.as_deref(), Some("a@b.example"));
    }
}
