//! Classification: raw message bytes → a typed [`Alert`] (before rules).
//!
//! [`parse`] turns bytes from a stranger into a [`Message`] — decoded subject, addresses,
//! headers and body text — and never panics, whatever the input: a message mail-parser cannot
//! make sense of still yields a `Message` (its bytes as lossy text, `malformed` set). Decoding
//! (MIME multipart, quoted-printable, base64, RFC 2047 encoded words, legacy charsets such as
//! ISO-8859-x and Windows-1252, HTML-only mail made readable) is mail-parser's, with
//! `full_encoding`; line endings are normalised to LF so parsers and rules see one form.
//!
//! [`classify`] then asks each built-in parser, one module per family, whether it recognises the
//! message; the first that does fills in kind, host, user, command and the rest. Anything
//! unrecognised becomes kind `other` with its subject and first line, so nothing is dropped
//! for being unknown. Every string an alert carries is bounded (see the `MAX_*` constants and
//! [`one_line`]), because every byte of it may be hostile. Rules are applied later, by `route`.
//!
//! # Recoveries
//!
//! Dispatch keeps a *problem* per `dedup_key`: a failure opens it, and an alert with
//! `failed = false` and the same key resolves it (PagerDuty resolves, chat posts "resolved").
//! So where a program mails both the failure and its end, the parser gives both the same key
//! and the recovery `failed = false` (severity info):
//!
//! | program | failure mail | recovery mail | shared key |
//! |---|---|---|---|
//! | apcupsd | `onbattery` (`… Power Failure !!!`) | `offbattery` (`… Power has returned...`) | `apcupsd:HOST:UPS:power` |
//! | apcupsd | `commfailure` (`… Communications with UPS … lost`) | `commok` (`… restored`) | `apcupsd:HOST:UPS:comm` |
//! | mdadm | `Fail`, `FailSpare`, `DegradedArray`, `DeviceDisappeared` | `RebuildFinished`, `SpareActive` with every member up in mdstat — sent only by a `PROGRAM` script in mdadm's format, never by mdadm | `mdadm:HOST:ARRAY` |
//! | ZED | `ZFS device fault for pool POOL` (`FAULTED`, `DEGRADED`, `REMOVED`, `UNAVAIL`) | `resilver_finish`, or `scrub_finish` (healthy only with `ZED_NOTIFY_VERBOSE=1`), with the pool `ONLINE` and no known data errors | `zed:HOST:POOL` |
//! | cron | a run whose output reports a failure, or Debian's `(failed)` | a run that prints something and reports none (cron mails only output) | `cron:HOST:USER:COMMAND` |
//! | systemd-cron 2 | `[HOST] Failure: SOURCE` | `[HOST] Output: SOURCE` (only when the job printed something) | `cron:HOST:USER:COMMAND` |
//! | anacron | a run with a failing script (`run-parts: … exited with return code N`) or failure words | a run with output and no failure | `anacron:HOST:JOB` |
//! | systemd | `OnFailure=` status mail (`Active: failed`, `Result:` not `success`) | `OnSuccess=` status mail of the same unit | `systemd:HOST:UNIT` |
//!
//! The rest pair with nothing, and their problems close after `resolve_after` (24 h by
//! default) or by a rule's `resolve = true`: smartd (it mails only warnings; when a condition
//! clears it logs `warning condition reset` to syslog and mails nothing), apcupsd `changeme`,
//! mdadm `SparesMissing`, ZED data, checksum and I/O errors, systemd-cron 1 (`job UNIT
//! failed`, failures only), and cron jobs that print nothing when they succeed. A recovery
//! must not resolve what it does not end, so informational mails keep keys of their own
//! (mdadm `TestMessage`, smartd `EmailTest`, ZED `trim_finish`).

mod apcupsd;
mod apt;
mod bounce;
mod cron;
mod fail2ban;
mod html;
mod logwatch;
mod mdadm;
mod smartd;
mod sudo;
mod systemd;
mod text;
pub mod trust;
mod zed;

use std::collections::BTreeMap;

use herald_bridges::text::one_line;
use herald_bridges::{Alert, Kind, Severity};
use mail_parser::{MimeHeaders, PartType};

/// How much decoded body text is kept for classification and rules: a cron job can print
/// megabytes; what identifies a message and what a human reads in an alert is at its start.
pub const MAX_BODY_CHARS: usize = 64 * 1024;

/// The most headers kept from one message: real system mail has a few dozen (cron adds one
/// `X-Cron-Env` per variable); a hostile message could have millions.
pub const MAX_HEADERS: usize = 256;

/// The longest header value kept, in characters (RFC 5322 §2.1.1 allows 998 per physical line;
/// folded values can be longer, and nothing herald reads needs more).
pub const MAX_HEADER_CHARS: usize = 2000;

/// The longest subject kept, in characters (the same reasoning as [`MAX_HEADER_CHARS`]).
pub const MAX_SUBJECT_CHARS: usize = 1000;

/// The longest host, user, unit or similar name put in an alert. A DNS name is at most 253
/// characters (RFC 1035 §2.3.4); user and unit names are shorter.
pub(crate) const MAX_NAME_CHARS: usize = 255;

/// The longest command put in an alert (cron command lines, sudo commands).
pub(crate) const MAX_COMMAND_CHARS: usize = 1000;

/// The longest title and summary (one line each, for chat and SMS).
pub(crate) const MAX_LINE_CHARS: usize = 300;

/// The longest text fact value (a diagnostic, a package list).
pub(crate) const MAX_FACT_CHARS: usize = 1000;

/// The most items in a list fact (packages, recipients).
pub(crate) const MAX_FACT_ITEMS: usize = 200;

/// A parsed message: the view that parsers and rules work on.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// `Message-ID`, with angle brackets.
    pub message_id: Option<String>,
    /// Decoded `Subject`, empty when missing, at most [`MAX_SUBJECT_CHARS`] characters.
    pub subject: String,
    /// The first `From` address.
    pub from: Option<String>,
    /// Every `To` address.
    pub to: Vec<String>,
    /// `Date` as RFC 3339, when valid.
    pub date: Option<String>,
    /// The headers of the top-level part, in order: (name as written, unfolded raw value), at
    /// most [`MAX_HEADERS`] of them, each value at most [`MAX_HEADER_CHARS`] characters.
    pub headers: Vec<(String, String)>,
    /// Decoded body text (the first text part, or HTML made readable), with LF line endings,
    /// at most [`MAX_BODY_CHARS`] characters.
    pub body: String,
    /// The text of the first `message/delivery-status` part (RFC 3464), when there is one,
    /// with LF line endings and bounded like `body`. Bounce parsing reads it.
    pub delivery_status: Option<String>,
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

    /// The values of every header called `name` (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first non-blank line of the body, trimmed.
    pub fn first_line(&self) -> Option<&str> {
        self.body.lines().map(str::trim).find(|l| !l.is_empty())
    }

    /// The domain of the `From` address, lower-cased, when it names a machine (not
    /// `localhost`). Local mailers write `user@$(hostname)`, so for mail that names no host
    /// elsewhere this is the best guess at the machine it is about.
    pub fn from_domain(&self) -> Option<String> {
        let (_, domain) = self.from.as_deref()?.rsplit_once('@')?;
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let local = matches!(
            domain.as_str(),
            "" | "localhost" | "localhost.localdomain" | "localdomain"
        );
        (!local && is_host_name(&domain)).then_some(domain)
    }
}

/// The most bytes of one message that are parsed. What identifies system mail is in its headers
/// and the start of its body ([`MAX_BODY_CHARS`] characters are kept); parsing beyond that
/// would only cost time (mail-parser decodes a whole part at once). A longer input is cut here
/// and the message marked `truncated`, as if fetched with a smaller `max_message_bytes`.
pub const MAX_PARSE_BYTES: usize = 128 * 1024;

/// The most lines that may start a MIME part or a header field in the bytes parsed. mail-parser
/// keeps a record for every part and every header field, a few hundred bytes each, so 128 KiB
/// of `--b` lines or of `X-Filler: 1` lines would cost megabytes; system mail has a few dozen.
/// Counting body lines that merely look like fields (`Error: ...`) makes the cut conservative:
/// it only ever shortens what is parsed, and the message is then marked `truncated`.
pub const MAX_STRUCTURE_LINES: usize = 1024;

/// Where `raw` must be cut so that at most [`MAX_STRUCTURE_LINES`] lines start a part
/// (`--...`) or look like a header field (`Name: ...`); `None` when it need not be.
fn structure_cut(raw: &[u8]) -> Option<usize> {
    let mut seen = 0;
    let mut start = 0;
    while start < raw.len() {
        let Some(line) = raw.get(start..) else {
            break;
        };
        let field_like = line.starts_with(b"--")
            || line
                .iter()
                .take(80)
                .position(|&b| !(b'!'..=b'~').contains(&b) || b == b':')
                .is_some_and(|i| i > 0 && line.get(i) == Some(&b':'));
        if field_like {
            seen += 1;
            if seen > MAX_STRUCTURE_LINES {
                return Some(start);
            }
        }
        match line.iter().position(|&b| b == b'\n') {
            Some(end) => start += end + 1,
            None => break,
        }
    }
    None
}

/// Parses `raw`; `truncated` says whether `raw` is only the start of the message.
pub fn parse(raw: &[u8], truncated: bool) -> Message {
    let (raw, truncated) = match raw.get(..MAX_PARSE_BYTES) {
        Some(head) if raw.len() > MAX_PARSE_BYTES => (head, true),
        _ => (raw, truncated),
    };
    let (raw, truncated) = match structure_cut(raw) {
        Some(cut) => (raw.get(..cut).unwrap_or(raw), true),
        None => (raw, truncated),
    };
    let Some(parsed) = mail_parser::MessageParser::default().parse(raw) else {
        return unparsable(raw, truncated);
    };
    if parsed.headers().is_empty() {
        return unparsable(raw, truncated);
    }
    let body = body_text(&parsed)
        .map(|text| normalise_text(&text))
        .unwrap_or_default();
    let delivery_status = parsed
        .parts
        .iter()
        .find(|part| {
            part.content_type().is_some_and(|ct| {
                ct.ctype().eq_ignore_ascii_case("message")
                    && ct.subtype().is_some_and(|s| {
                        s.eq_ignore_ascii_case("delivery-status")
                            || s.eq_ignore_ascii_case("global-delivery-status")
                    })
            })
        })
        .map(|part| match &part.body {
            PartType::Text(text) | PartType::Html(text) => normalise_text(text),
            _ => normalise_text(&String::from_utf8_lossy(part.contents())),
        });
    Message {
        message_id: parsed
            .message_id()
            .map(|id| format!("<{}>", one_line(id, MAX_HEADER_CHARS))),
        subject: one_line(parsed.subject().unwrap_or_default(), MAX_SUBJECT_CHARS),
        from: parsed
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(|a| one_line(a, MAX_NAME_CHARS)),
        to: parsed
            .to()
            .map(|a| {
                a.iter()
                    .filter_map(|a| a.address())
                    .take(MAX_FACT_ITEMS)
                    .map(|a| one_line(a, MAX_NAME_CHARS))
                    .collect()
            })
            .unwrap_or_default(),
        date: parsed
            .date()
            .filter(|d| d.is_valid())
            .map(|d| d.to_rfc3339()),
        headers: parsed
            .headers_raw()
            .take(MAX_HEADERS)
            .map(|(name, value)| (one_line(name, MAX_NAME_CHARS), unfold(value)))
            .collect(),
        body,
        delivery_status,
        truncated,
        malformed: false,
    }
}

/// The first text body: a text part as decoded (re-decoded as Windows-1252 when it is
/// unlabelled 8-bit that is not UTF-8), or an HTML part made readable.
fn body_text(parsed: &mail_parser::Message<'_>) -> Option<String> {
    let part = parsed
        .text_body
        .first()
        .or_else(|| parsed.html_body.first())
        .and_then(|id| parsed.parts.get(*id as usize))?;
    match &part.body {
        PartType::Text(text) => {
            if text.contains(char::REPLACEMENT_CHARACTER)
                && part.encoding == mail_parser::Encoding::None
                && part
                    .content_type()
                    .and_then(|ct| ct.attribute("charset"))
                    .is_none()
            {
                let raw = parsed
                    .raw_message
                    .get(part.offset_body as usize..part.offset_end as usize);
                let decoder =
                    mail_parser::decoders::charsets::map::charset_decoder(b"windows-1252");
                if let (Some(raw), Some(decode)) = (raw, decoder) {
                    return Some(decode(raw));
                }
            }
            Some(text.to_string())
        }
        PartType::Html(html) => Some(html::to_text(html)),
        _ => None,
    }
}

/// What is kept of bytes that are not a mail message: their text, so that the `other` alert
/// still shows what arrived.
fn unparsable(raw: &[u8], truncated: bool) -> Message {
    // Cut the bytes before decoding: four bytes per character at most.
    let head = raw.get(..raw.len().min(MAX_BODY_CHARS * 4)).unwrap_or(raw);
    Message {
        body: normalise_text(&String::from_utf8_lossy(head)),
        truncated,
        malformed: true,
        ..Message::default()
    }
}

/// Decoded text with LF line endings, NUL bytes removed, at most [`MAX_BODY_CHARS`] characters.
fn normalise_text(text: &str) -> String {
    // Cut first (the count is in characters, so find the byte offset of the last one kept).
    let text = match text.char_indices().nth(MAX_BODY_CHARS) {
        Some((end, _)) => text.get(..end).unwrap_or(text),
        None => text,
    };
    if !text.contains(['\r', '\0']) {
        return text.to_owned();
    }
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\0', "")
}

/// Joins a folded header value onto one line, trims it and bounds it.
fn unfold(value: &str) -> String {
    one_line(value, MAX_HEADER_CHARS)
}

/// Whether `name` looks like a host name: letters, digits, `-`, `_` and `.`, not empty.
pub(crate) fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
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

impl Finding {
    /// A finding of `kind` with nothing known yet.
    fn new(kind: Kind, severity: Severity) -> Finding {
        Finding {
            kind,
            host: None,
            user: None,
            command: None,
            failed: None,
            exit_status: None,
            severity,
            title: String::new(),
            summary: String::new(),
            dedup_key: String::new(),
            facts: BTreeMap::new(),
        }
    }

    /// Adds a text fact, bounded; empty values are left out.
    fn fact(&mut self, name: &str, value: &str) {
        let value = one_line(value, MAX_FACT_CHARS);
        if !value.is_empty() {
            self.facts
                .insert(name.to_owned(), serde_json::Value::String(value));
        }
    }

    /// Adds a boolean fact.
    fn flag(&mut self, name: &str, value: bool) {
        self.facts
            .insert(name.to_owned(), serde_json::Value::Bool(value));
    }

    /// Adds an integer fact.
    fn number(&mut self, name: &str, value: i64) {
        self.facts
            .insert(name.to_owned(), serde_json::Value::from(value));
    }

    /// Adds a list fact, each item bounded, at most [`MAX_FACT_ITEMS`] items.
    fn list<'a>(&mut self, name: &str, items: impl IntoIterator<Item = &'a str>) {
        let items: Vec<serde_json::Value> = items
            .into_iter()
            .map(|i| one_line(i, MAX_NAME_CHARS))
            .filter(|i| !i.is_empty())
            .take(MAX_FACT_ITEMS)
            .map(serde_json::Value::String)
            .collect();
        self.facts
            .insert(name.to_owned(), serde_json::Value::Array(items));
    }
}

/// The built-in parsers, in the order they are asked. Those recognising a message by a
/// distinctive subject come first; `systemd` (recognised by `systemctl status` output in the
/// body, whatever the subject) comes last, so that systemd-cron's mail, which also carries
/// that output, is claimed by `cron` first.
const PARSERS: [fn(&Message) -> Option<Finding>; 12] = [
    bounce::recognise,
    sudo::recognise,
    cron::recognise,
    smartd::recognise,
    mdadm::recognise,
    apt::recognise_unattended_upgrades,
    apt::recognise_apticron,
    logwatch::recognise,
    fail2ban::recognise,
    zed::recognise,
    apcupsd::recognise,
    systemd::recognise,
];

/// Classifies a parsed message with the built-in parsers (no rules applied yet).
pub fn classify(message: &Message) -> Alert {
    let finding = if message.malformed {
        None
    } else {
        PARSERS.iter().find_map(|recognise| recognise(message))
    }
    .unwrap_or_else(|| other(message));
    Alert {
        message_id: message.message_id.clone(),
        kind: finding.kind,
        host: finding.host.map(|h| one_line(&h, MAX_NAME_CHARS)),
        user: finding.user.map(|u| one_line(&u, MAX_NAME_CHARS)),
        command: finding.command.map(|c| one_line(&c, MAX_COMMAND_CHARS)),
        failed: finding.failed,
        exit_status: finding.exit_status,
        severity: finding.severity,
        rule: None,
        title: one_line(&finding.title, MAX_LINE_CHARS),
        summary: one_line(&finding.summary, MAX_LINE_CHARS),
        dedup_key: one_line(&finding.dedup_key, MAX_COMMAND_CHARS + 3 * MAX_NAME_CHARS),
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

/// The catch-all: the subject and the first lines say what the message is.
fn other(message: &Message) -> Finding {
    let subject = one_line(&message.subject, 200);
    let mut finding = Finding::new(Kind::Other, Severity::Info);
    finding.title = if message.malformed {
        "unreadable message (not in mail format)".to_owned()
    } else if subject.is_empty() {
        "(no subject)".to_owned()
    } else {
        subject.clone()
    };
    if message.malformed {
        finding.flag("malformed", true);
    }
    let first_lines: Vec<&str> = message
        .body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect();
    finding.list("first_lines", first_lines);
    finding.summary = summary_of(message);
    finding.dedup_key = format!(
        "other:{}:{}",
        message.from.as_deref().unwrap_or(""),
        subject
    );
    finding
}

/// The first non-blank body line, on one line and bounded.
fn summary_of(message: &Message) -> String {
    one_line(message.first_line().unwrap_or_default(), MAX_LINE_CHARS)
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
    fn thousands_of_parts_or_fields_are_cut_and_marked_truncated() {
        let mut parts = String::from(
            "From: a@b.example\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n",
        );
        for i in 0..3000 {
            parts.push_str(&format!(
                "--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
            ));
        }
        let mut fields = String::from("From: a@b.example\r\nSubject: fields\r\n");
        for i in 0..5000 {
            fields.push_str(&format!("X-Filler-{i}: {i}\r\n"));
        }
        fields.push_str("\r\nbody\r\n");
        for (raw, subject) in [(parts, "parts"), (fields, "fields")] {
            let cut = structure_cut(raw.as_bytes()).expect("cut");
            let kept = &raw.as_bytes()[..cut];
            let lines = kept
                .split(|&b| b == b'\n')
                .filter(|l| {
                    l.starts_with(b"--") || l.starts_with(b"Content-Type:") || l.starts_with(b"X-")
                })
                .count();
            assert!(
                lines <= MAX_STRUCTURE_LINES,
                "{subject}: {lines} lines kept"
            );
            let message = parse(raw.as_bytes(), false);
            assert!(message.truncated, "{subject}");
            assert_eq!(message.subject, subject);
        }
        // Ordinary system mail is never cut, even with "Name: value" lines in its body.
        let mut report = String::from("From: root@h.example\r\nSubject: report\r\n\r\n");
        for i in 0..500 {
            report.push_str(&format!("Error: job {i} failed\r\n"));
        }
        assert_eq!(structure_cut(report.as_bytes()), None);
        assert!(!parse(report.as_bytes(), false).truncated);
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

    #[test]
    fn crlf_becomes_lf_and_nul_goes() {
        assert_eq!(normalise_text("a\r\nb\rc\0d\n"), "a\nb\ncd\n");
    }

    #[test]
    fn header_count_and_length_are_bounded() {
        let mut raw = String::from("Subject: x\n");
        for i in 0..1000 {
            raw.push_str(&format!("X-H{i}: {}\n", "v".repeat(5000)));
        }
        raw.push_str("\nbody\n");
        let message = parse(raw.as_bytes(), false);
        assert!(message.headers.len() <= MAX_HEADERS);
        assert!(message
            .headers
            .iter()
            .all(|(_, v)| v.chars().count() <= MAX_HEADER_CHARS));
    }

    /// A corpus message, classified.
    fn corpus(path: &str, raw: &[u8]) -> Alert {
        let alert = classify(&parse(raw, false));
        assert_ne!(alert.kind, Kind::Other, "{path} not recognised");
        alert
    }

    macro_rules! mail {
        ($path:literal) => {
            (
                $path,
                &include_bytes!(concat!("../../tests/corpus/", $path))[..],
            )
        };
    }

    /// Every failure/recovery pair of the table in the module docs: one key, and the recovery
    /// resolves (failed = false, info).
    #[test]
    fn recoveries_share_the_failure_key() {
        let pairs = [
            (
                mail!("apcupsd/onbattery.eml"),
                mail!("apcupsd/offbattery.eml"),
                "apcupsd:rack1:rack1-ups:power",
            ),
            (
                mail!("apcupsd/onbattery.eml"),
                mail!("apcupsd/offbattery-legacy.eml"),
                "apcupsd:rack1:rack1-ups:power",
            ),
            (
                mail!("apcupsd/commfailure.eml"),
                mail!("apcupsd/commok.eml"),
                "apcupsd:closet:closet-ups:comm",
            ),
            (
                mail!("mdadm/degraded-array.eml"),
                mail!("mdadm/rebuild-finished.eml"),
                "mdadm:store1.example.net:/dev/md0",
            ),
            (
                mail!("mdadm/fail.eml"),
                mail!("mdadm/rebuild-finished.eml"),
                "mdadm:store1.example.net:/dev/md0",
            ),
            (
                mail!("mdadm/fail-spare-named-array.eml"),
                mail!("mdadm/spare-active-named-array.eml"),
                "mdadm:web01:/dev/md/web01:0",
            ),
            (
                mail!("zed/statechange-device-removed.eml"),
                mail!("zed/resilver-finish-clean.eml"),
                "zed:nas2:tank",
            ),
            (
                mail!("zed/statechange-device-removed.eml"),
                mail!("zed/scrub-finish-clean.eml"),
                "zed:nas2:tank",
            ),
            (
                mail!("cron/debian-vixie-failure.eml"),
                mail!("cron/debian-vixie-success.eml"),
                "cron:web01.example.net:root:/usr/local/bin/backup.sh",
            ),
            (
                mail!("cron/systemd-cron-v2-failure.eml"),
                mail!("cron/systemd-cron-v2-output-after-failure.eml"),
                "cron:web02:alice:/home/alice/bin/sync-photos --quiet",
            ),
            (
                mail!("anacron/run-parts-failure.eml"),
                mail!("anacron/run-parts-output-after-failure.eml"),
                "anacron:laptop.example.net:cron.daily",
            ),
            (
                mail!("systemd/arch-status-email-failed.eml"),
                mail!("systemd/arch-status-email-success.eml"),
                "systemd:arch1.example.net:borg-backup.service",
            ),
        ];
        for ((fail_path, fail_raw), (ok_path, ok_raw), key) in pairs {
            let failure = corpus(fail_path, fail_raw);
            let recovery = corpus(ok_path, ok_raw);
            assert_eq!(failure.failed, Some(true), "{fail_path}");
            assert_eq!(failure.dedup_key, key, "{fail_path}");
            assert_eq!(recovery.dedup_key, failure.dedup_key, "{ok_path}");
            assert_eq!(recovery.failed, Some(false), "{ok_path}");
            assert_eq!(recovery.severity, Severity::Info, "{ok_path}");
        }
    }

    /// A finished scrub that still finds the pool degraded is the fault again, not its end.
    #[test]
    fn unclean_scrub_repeats_the_fault() {
        let (fault_path, fault_raw) = mail!("zed/statechange-device-faulted.eml");
        let (scrub_path, scrub_raw) = mail!("zed/scrub-finish-errors.eml");
        let fault = corpus(fault_path, fault_raw);
        let scrub = corpus(scrub_path, scrub_raw);
        assert_eq!(fault.dedup_key, "zed:nas3:backup");
        assert_eq!(scrub.dedup_key, fault.dedup_key);
        assert_eq!(scrub.failed, Some(true));
    }

    /// Informational mails must not resolve the problems of their program.
    #[test]
    fn informational_mails_keep_their_own_keys() {
        for ((path, raw), key) in [
            (
                mail!("mdadm/test-message.eml"),
                "mdadm:store2.example.net:/dev/md1:TestMessage",
            ),
            (
                mail!("smartd/email-test.eml"),
                "smartd:nas1.example.net:/dev/sda:EmailTest",
            ),
        ] {
            let alert = corpus(path, raw);
            assert_eq!(alert.failed, Some(false), "{path}");
            assert_eq!(alert.dedup_key, key, "{path}");
        }
    }

    #[test]
    fn from_domain_skips_localhost() {
        let mut m = Message {
            from: Some("root@web01.example.net".into()),
            ..Message::default()
        };
        assert_eq!(m.from_domain().as_deref(), Some("web01.example.net"));
        m.from = Some("root@localhost".into());
        assert_eq!(m.from_domain(), None);
    }
}
