//! The PagerDuty sink: Events API v2 (reference/sinks.md §3).
//!
//! A normal alert is a `trigger` with `payload.severity` from the alert's, `source` = host,
//! `component` = command, `group` = rule, `class` = kind and `custom_details` holding the typed
//! fields. An alert a rule marked `resolve` sends `event_action: resolve` with the same
//! `dedup_key`, closing the incident its failures opened.
//!
//! Dispatch's notifications: PagerDuty keeps one incident per *group*
//! ([`Sink::tracks_incidents`]), keyed by the alert's `group_key`, so a storm grouped across
//! hosts is one incident and dispatch sends its recovery (a `resolve` with the group key) only
//! once the group's last problem recovers. A digest is one `trigger` on that key whose
//! summary starts with the count ("12 problems: …") and whose `custom_details.members` lists
//! the problems (host, command, count, first and last time, …; `more` counts those not
//! listed). A reminder is an ordinary `trigger`, folded into the open incident.
//!
//! Guarantees:
//! - `dedup_key` is a pure function of the alert's `group_key` (when set and not blank) or
//!   else its `dedup_key`: repeats of one failing job, and a resend after a crash, fold into
//!   one incident \[PD-TRIG\], and the recovery resolves it. It is ≤ 255 characters
//!   \[PD-TRIG\] (a longer key becomes a prefix plus a SHA-256 digest, still stable).
//! - `payload.summary` ≤ 1024 characters \[PD-TRIG\]; the whole event ≤ 512,000 bytes: a
//!   digest's members take at most [`MEMBERS_BYTES`] (the rest counted in `more`), and when the
//!   event is still over, the other `custom_details` are dropped, as Alertmanager does
//!   \[PD-OV\], \[AM-PD\].
//! - 202 is delivered; 400 rejected with PagerDuty's `message`/`errors`; 429 and 5xx retried,
//!   a 429 no sooner than its `Retry-After`, or 30 s when none is given \[PD-RL\].
//! - The routing key is a secret: it travels only in the request body, and [`Config::render`]
//!   shows it as `**REDACTED**`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::http::{self, Endpoint};
use crate::ratelimit::{self, Rate, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::template::Template;
use crate::text::{fit_chars, no_escape, one_line, strip_format};
use crate::{present, Alert, Outcome, Secret, Severity, Sink, SinkError};

/// The Events API v2 endpoint \[PD-TRIG\]; the EU one is `https://events.eu.pagerduty.com/v2/enqueue`
/// \[AP-PD\].
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// `payload.summary`: 1024 characters \[PD-TRIG\], \[AM-PD\].
pub const SUMMARY_CHARS: usize = 1024;
/// `dedup_key`: 255 characters \[PD-TRIG\].
pub const DEDUP_KEY_CHARS: usize = 255;
/// The whole event: 512 KB; Alertmanager's 512,000 bytes \[PD-OV\], \[AM-PD\].
pub const MAX_EVENT_BYTES: usize = 512_000;
/// `component`, `group`, `class`: PagerDuty states no limit; 255 keeps them label-sized.
pub const LABEL_CHARS: usize = 255;
/// A digest's `custom_details.members`, serialized: under half the event, so the members and
/// the rest of the details fit together in all but absurd cases; 50 members of ordinary size
/// take a few kilobytes.
pub const MEMBERS_BYTES: usize = 200_000;
/// A member's title and summary in `custom_details`: as long as the event's own summary.
const MEMBER_TEXT_CHARS: usize = SUMMARY_CHARS;
/// The body excerpt in `custom_details`: as many lines as chat sinks show.
const EXCERPT_LINES: usize = present::EXCERPT_LINES;
/// ~120 events/min per integration key \[PD-RL\].
pub const DEFAULT_RATE: Rate = Rate::new(120, Duration::from_secs(60));
/// A 429 without `Retry-After`: "e.g. 3 retries 30 s apart" \[PD-RL\].
pub const DEFAULT_429_WAIT: Duration = Duration::from_secs(30);
/// `source` is required on triggers \[PD-TRIG\]; used when the alert names no host.
const UNKNOWN_SOURCE: &str = "unknown-host";
/// What [`Config::render`] shows instead of the routing key.
const REDACTED: &str = "**REDACTED**";

/// `type = "pagerduty"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The integration's 32-character routing key (a secret).
    pub routing_key: Secret,
    /// The Events API v2 endpoint (e.g. the EU one).
    #[serde(default = "default_url")]
    pub url: String,
    /// A minijinja template replacing `payload.summary` (see [`crate::template`]).
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Client-side pacing; default `"120/m"` \[PD-RL\]; `"off"` to disable.
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

fn default_url() -> String {
    DEFAULT_URL.to_owned()
}

/// 10 s: the Events API answers quickly; the attempt is retried anyway.
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SinkKind for Config {
    const TYPE: &'static str = "pagerduty";

    type Sink = PagerDuty;

    /// Checks the key and URL without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        let key = self.routing_key.expose();
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SinkError::Invalid {
                key: "routing_key",
                message: "must be the integration's key (no spaces)".into(),
            });
        }
        crate::webhook::http_url("url", &Secret::new(self.url.clone()))?;
        Ok(())
    }

    /// The event for `alert`, as sent, with the routing key redacted.
    fn render(&self, alert: &Alert) -> Value {
        payload(alert, REDACTED, self.template.as_ref())
    }

    fn build(&self) -> Result<PagerDuty, SinkError> {
        PagerDuty::new(self)
    }

    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        vec![Fixture::secret(json!({
            "routing_key": format!("{mark}pagerduty00000000000000000"),
            "url": format!("{base_url}/v2/enqueue"),
            "rate_limit": "off",
        }))]
    }
}

/// The `dedup_key` for an alert: its `group_key` when dispatch set one that is not blank (one
/// incident per group), else its `dedup_key`; that key when it fits, else a 190-character
/// prefix, `#` and the SHA-256 of the whole key in hex (190 + 1 + 64 = 255).
///
/// Never empty: PagerDuty rejects a `resolve` without a key \[PD-TRIG\], and a trigger
/// without one could never be resolved. A blank key (a `dedup_key` template that rendered
/// nothing) becomes `herald:` and a digest of what names the problem (kind, host, user,
/// command), so a failure and its recovery still meet.
pub fn dedup_key(alert: &Alert) -> String {
    let key = alert
        .group_key
        .as_ref()
        .filter(|key| !key.trim().is_empty())
        .unwrap_or(&alert.dedup_key);
    if key.trim().is_empty() {
        let mut hash = Sha256::new();
        for part in [
            Some(alert.kind.as_str()),
            alert.host.as_deref(),
            alert.user.as_deref(),
            alert.command.as_deref(),
        ] {
            // A length prefix keeps ("ab", "c") and ("a", "bc") apart.
            let part = part.unwrap_or_default();
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        return format!("herald:{}", hex(&hash.finalize()));
    }
    if key.chars().count() <= DEDUP_KEY_CHARS {
        return key.to_owned();
    }
    let prefix: String = key.chars().take(DEDUP_KEY_CHARS - 65).collect();
    format!("{prefix}#{}", hex(&Sha256::digest(key.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// `source` is required on triggers: the host, or [`UNKNOWN_SOURCE`] when the alert names none
/// or its host is nothing printable (a host of only control characters is empty on one line).
fn source(alert: &Alert) -> String {
    alert
        .host
        .as_deref()
        .map(label)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| UNKNOWN_SOURCE.to_owned())
}

fn label(text: &str) -> String {
    fit_chars(&one_line(text, usize::MAX), LABEL_CHARS, no_escape)
}

/// The event for `alert`, carrying `routing_key`.
pub fn payload(alert: &Alert, routing_key: &str, template: Option<&Template>) -> Value {
    if alert.resolve {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key(alert),
        });
    }
    let main = template
        .and_then(|t| t.render_or_default("pagerduty", alert, &|s| s.to_owned()))
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| alert.title.clone());
    let mut main = one_line(&main, usize::MAX);
    let problems = present::problems(alert);
    // The count first, where the incident list shows it (dispatch's title already starts so).
    if !alert.digest.is_empty() && !main.starts_with(&format!("{problems} ")) {
        main = format!("{problems} problems: {main}");
    }
    let summary = fit_chars(&main, SUMMARY_CHARS, no_escape);
    let mut details = serde_json::Map::new();
    details.insert("kind".into(), json!(alert.kind));
    for (name, value) in [
        ("host", &alert.host),
        ("user", &alert.user),
        ("command", &alert.command),
        ("rule", &alert.rule),
        ("from", &alert.from),
        ("date", &alert.date),
        ("message_id", &alert.message_id),
    ] {
        if let Some(value) = value {
            // Shown in PagerDuty's UI: no bidi override or zero-width character from mail.
            details.insert(name.into(), json!(strip_format(value)));
        }
    }
    if let Some(failed) = alert.failed {
        details.insert("failed".into(), json!(failed));
    }
    if let Some(status) = alert.exit_status {
        details.insert("exit_status".into(), json!(status));
    }
    details.insert("subject".into(), json!(strip_format(&alert.subject)));
    details.insert("summary".into(), json!(strip_format(&alert.summary)));
    details.insert(
        "body".into(),
        json!(crate::text::first_lines(&alert.body, EXCERPT_LINES)),
    );
    if alert.truncated {
        details.insert("truncated".into(), json!(true));
    }
    if !alert.facts.is_empty() {
        details.insert("facts".into(), json!(alert.facts));
    }
    let digest = digest_details(alert);
    details.extend(digest.clone());
    let mut inner = json!({
        "summary": summary,
        "source": source(alert),
        "severity": severity(alert.severity),
        "class": alert.kind.as_str(),
        "custom_details": Value::Object(details),
    });
    if let Some(object) = inner.as_object_mut() {
        if let Some(command) = &alert.command {
            object.insert("component".into(), json!(label(command)));
        }
        if let Some(rule) = &alert.rule {
            object.insert("group".into(), json!(label(rule)));
        }
        if let Some(date) = &alert.date {
            object.insert("timestamp".into(), json!(date));
        }
    }
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(alert),
        "payload": inner,
        "client": "herald",
    });
    let size = serde_json::to_vec(&event).map_or(usize::MAX, |v| v.len());
    if size > MAX_EVENT_BYTES {
        if let Some(details) = event
            .get_mut("payload")
            .and_then(|p| p.get_mut("custom_details"))
        {
            // The members are bounded apart (MEMBERS_BYTES): they are what a digest is for.
            let mut kept = digest;
            kept.insert(
                "note".into(),
                json!(format!(
                    "custom details dropped: the event exceeded {MAX_EVENT_BYTES} bytes"
                )),
            );
            *details = Value::Object(kept);
        }
    }
    event
}

/// A digest's `custom_details` entries: `problems` (the count), `members` (one object per
/// listed member, its texts on one line and cut, as many as fit [`MEMBERS_BYTES`]) and `more`
/// (the problems not listed). None for an alert that is not a digest.
fn digest_details(alert: &Alert) -> serde_json::Map<String, Value> {
    let mut details = serde_json::Map::new();
    if alert.digest.is_empty() {
        return details;
    }
    let text = |s: &str| fit_chars(&one_line(s, usize::MAX), MEMBER_TEXT_CHARS, no_escape);
    let mut members = Vec::new();
    // "[" and "]", then a comma before each member but the first.
    let mut used = 2usize;
    for member in &alert.digest {
        let mut entry = serde_json::Map::new();
        entry.insert("kind".into(), json!(member.kind));
        for (name, value) in [
            ("host", &member.host),
            ("user", &member.user),
            ("command", &member.command),
        ] {
            if let Some(value) = value {
                entry.insert(name.into(), json!(label(value)));
            }
        }
        entry.insert("severity".into(), json!(member.severity));
        if let Some(failed) = member.failed {
            entry.insert("failed".into(), json!(failed));
        }
        entry.insert("title".into(), json!(text(&member.title)));
        entry.insert("summary".into(), json!(text(&member.summary)));
        entry.insert("count".into(), json!(member.count));
        entry.insert("first".into(), json!(label(&member.first)));
        entry.insert("last".into(), json!(label(&member.last)));
        if member.reminder {
            entry.insert("reminder".into(), json!(true));
        }
        let entry = Value::Object(entry);
        let size = serde_json::to_vec(&entry).map_or(usize::MAX, |v| v.len());
        let cost = size.saturating_add(usize::from(!members.is_empty()));
        if used.saturating_add(cost) > MEMBERS_BYTES {
            break;
        }
        used += cost;
        members.push(entry);
    }
    let more = alert
        .digest_more
        .saturating_add((alert.digest.len() - members.len()) as u64);
    details.insert("problems".into(), json!(present::problems(alert)));
    details.insert("members".into(), Value::Array(members));
    if more > 0 {
        details.insert("more".into(), json!(more));
    }
    details
}

/// Classifies an Events API answer: 2xx (202) delivered; 429 retried after `Retry-After` or
/// [`DEFAULT_429_WAIT`]; 400 and other 4xx rejected with PagerDuty's `message` and `errors`
/// \[PD-OV\], \[AM-PD\]; 5xx retried.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        errors: Vec<String>,
    }
    let detail = match serde_json::from_str::<Error>(body) {
        Ok(Error {
            message: Some(message),
            errors,
        }) => one_line(&format!("{message}: {}", errors.join("; ")), 300),
        _ => http::excerpt(body),
    };
    let reason = format!("HTTP {}: {detail}", status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS {
        let after = http::retry_after(headers, SystemTime::now()).unwrap_or(DEFAULT_429_WAIT);
        return Outcome::Retry {
            after: Some(after),
            reason,
        };
    }
    match http::classify_status(status, headers, body) {
        Outcome::Retry { after, .. } => Outcome::Retry { after, reason },
        _ => Outcome::Rejected { reason },
    }
}

/// Sends events to one PagerDuty integration.
#[derive(Debug)]
pub struct PagerDuty {
    endpoint: Endpoint,
    url: reqwest::Url,
    routing_key: Secret,
    template: Option<Template>,
}

impl PagerDuty {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<PagerDuty, SinkError> {
        config.validate()?;
        let rate = ratelimit::effective(config.rate_limit, Some(DEFAULT_RATE));
        Ok(PagerDuty {
            endpoint: Endpoint::new(config.timeout, rate)?,
            url: crate::webhook::http_url("url", &Secret::new(config.url.clone()))?,
            routing_key: config.routing_key.clone(),
            template: config.template.clone(),
        })
    }
}

impl Sink for PagerDuty {
    /// One incident per group: a recovery must wait for the group's last open problem.
    fn tracks_incidents(&self) -> bool {
        true
    }

    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let event = payload(alert, self.routing_key.expose(), self.template.as_ref());
            let request = self
                .endpoint
                .client
                .post(self.url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&event).unwrap_or_default());
            self.endpoint.attempt(request, classify).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_key_is_stable_and_bounded() {
        let mut a = Alert::sample();
        assert_eq!(dedup_key(&a), a.dedup_key);
        a.dedup_key = "é".repeat(1000);
        let k = dedup_key(&a);
        assert_eq!(k.chars().count(), DEDUP_KEY_CHARS);
        assert_eq!(k, dedup_key(&a.clone()));
        let mut b = a.clone();
        b.dedup_key.push('x');
        assert_ne!(dedup_key(&b), k, "the digest covers the whole key");
    }

    #[test]
    fn a_blank_host_still_names_a_source() {
        for host in [None, Some(""), Some(" \u{7}\t")] {
            let mut a = Alert::sample();
            a.host = host.map(str::to_owned);
            let p = payload(&a, "KEY", None);
            assert_eq!(p["payload"]["source"], json!(UNKNOWN_SOURCE), "{host:?}");
        }
    }

    #[test]
    fn blank_key_becomes_a_stable_nonempty_key() {
        let mut a = Alert::sample();
        a.dedup_key = " \t".into();
        let k = dedup_key(&a);
        assert!(
            k.starts_with("herald:") && k.chars().count() <= DEDUP_KEY_CHARS,
            "{k}"
        );
        let mut recovery = a.clone();
        recovery.resolve = true;
        recovery.dedup_key = String::new();
        assert_eq!(payload(&recovery, "KEY", None)["dedup_key"], json!(k));
        let mut other = a.clone();
        other.host = Some("web02.example.net".into());
        assert_ne!(dedup_key(&other), k, "another host is another problem");
    }

    #[test]
    fn resolve_sends_only_the_key() {
        let mut a = Alert::sample();
        a.resolve = true;
        let p = payload(&a, "KEY", None);
        assert_eq!(
            p,
            json!({"routing_key": "KEY", "event_action": "resolve", "dedup_key": a.dedup_key})
        );
    }

    #[test]
    fn oversized_details_are_dropped() {
        let mut a = Alert::sample();
        a.facts.insert("huge".into(), json!("x".repeat(600_000)));
        let p = payload(&a, "KEY", None);
        assert!(serde_json::to_vec(&p).unwrap().len() <= MAX_EVENT_BYTES);
        assert!(p["payload"]["custom_details"]["note"].is_string());
        assert_eq!(p["payload"]["summary"], a.title);
    }
}
