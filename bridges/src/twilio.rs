//! The Twilio SMS sink: Programmable Messaging's create-Message call, one request per
//! recipient (reference/sinks.md §4).
//!
//! # Recipients are targets
//!
//! Each number in `to` is its own delivery: [`Sink::targets`] lists them and
//! [`Sink::deliver_to`] sends to one, so the outbox keeps one row per (alert, sink, number)
//! and one bad number (21211, 21610) never blocks or re-sends to the others.
//!
//! # Retries and duplicates
//!
//! Like every HTTP sink (reference/sinks.md, cross-sink rules): 429 / 20429 and 408 are
//! retried after `Retry-After`; 5xx (but 501) and connection failures are retried with
//! herald's backoff until the sink's `max_age`; other 4xx are rejected with Twilio's error
//! code (21211 invalid number, 21610 STOP, … \[TW-CHG\]: unknown 4xx codes are permanent).
//! A 503 or a refused connection means the request was not processed. A 500, 502, 504 or a
//! connection lost mid-request may have created the Message anyway: it is retried too — a
//! possible duplicate SMS beats a page that never comes — with a WARN "possible duplicate".
//! (herald 0.1 dead-lettered the SMS after a second such failure, so two 503s a few seconds
//! apart during a Twilio incident lost the page.)
//!
//! # Dispatch's notifications
//!
//! A digest is one SMS per recipient, dispatch's title and summary: the count and the first
//! few hosts ("WARNING: 12 problems: cron …" then "web01, web02, … (12 hosts)"), the title
//! cut to half the budget so the hosts always show. A reminder is an ordinary SMS (dispatch
//! puts the repeats into the summary). A recovery reads "RESOLVED: …", but is sent only
//! when the table says `notify_resolved = true` ([`Sink::notify_resolved`]; by default SMS
//! stays quiet about recoveries, so dispatch does not queue them).
//!
//! Guarantees: the body is at most `max_chars` units (default 320, Twilio's recommendation
//! \[TW-SEG\]; at most 1,600 \[TW-OAI\]) in the encoding it will be sent in (see [`crate::sms`]);
//! the auth token / API key secret travels only in the `Authorization` header and never in an
//! outcome, log line or [`Config::render`] output.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{self, Endpoint};
use crate::ratelimit::{self, RateSetting};
use crate::sink::{
    deserialize_duration, deserialize_optional_duration, DeliverFuture, Fixture, SinkKind,
};
use crate::sms::{self, Encoding};
use crate::template::Template;
use crate::text::one_line;
use crate::{present, Alert, Outcome, Secret, Sink, SinkError};

/// Twilio's REST base (US1); regional edges are `https://api.{edge}.{region}.twilio.com`
/// \[TW-REG\], \[TW-EDGE\].
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";
/// Twilio's deliverability recommendation: ≤ 320 characters \[TW-SEG\].
pub const DEFAULT_MAX_CHARS: usize = 320;
/// `Body`: up to 1,600 characters \[TW-OAI\].
pub const MAX_CHARS: usize = 1600;
/// The smallest budget accepted: room for a severity and a few words of title.
pub const MIN_CHARS: usize = 40;
/// `ValidityPeriod`: 1–36,000 s \[TW-OAI\].
pub const MAX_VALIDITY: Duration = Duration::from_secs(36_000);

/// `type = "twilio"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The account (`AC` + 32 hex digits).
    pub account_sid: String,
    /// The account's auth token (with `account_sid`), or use an API key instead.
    #[serde(default)]
    pub auth_token: Option<Secret>,
    /// An API key (`SK` + 32 hex digits), Twilio's recommended credential \[TW-AUTH\].
    #[serde(default)]
    pub api_key_sid: Option<String>,
    /// The API key's secret.
    #[serde(default)]
    pub api_key_secret: Option<Secret>,
    /// The sending number (E.164) or sender ID; or use `messaging_service_sid`.
    #[serde(default)]
    pub from: Option<String>,
    /// A Messaging Service (`MG` + 32 hex digits) that picks the sender.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// The recipients (E.164, e.g. `+14155552345`); each is its own delivery.
    pub to: Vec<String>,
    /// The REST base: Twilio's, or a regional edge.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The text budget in segment units (default 320, at most 1,600).
    #[serde(default = "default_max_chars")]
    pub max_chars: usize,
    /// `auto` (default) or `gsm7` (see [`crate::sms`]).
    #[serde(default)]
    pub encoding: Encoding,
    /// Drop the SMS if Twilio cannot send it within this time (1 s to 10 h), so a stale
    /// page is never delivered.
    #[serde(default, deserialize_with = "deserialize_optional_duration")]
    pub validity_period: Option<Duration>,
    /// Also send recoveries (alerts with `resolve` set) by SMS; default `false`: a page at
    /// night that says all is well again is rarely worth it.
    #[serde(default)]
    pub notify_resolved: bool,
    /// A minijinja template replacing the SMS text (see [`crate::template`]).
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Client-side pacing, e.g. `"1/s"`; default off (Twilio queues by sender throughput).
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_owned()
}

fn default_max_chars() -> usize {
    DEFAULT_MAX_CHARS
}

/// 15 s: Twilio answers in well under a second, but a timeout here is an ambiguous failure
/// (it may have sent), so be patient rather than risk a duplicate.
fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

/// `prefix` + 32 hex digits, as Twilio's SIDs \[TW-OAI\].
fn is_sid(text: &str, prefix: &str) -> bool {
    text.len() == 34
        && text.starts_with(prefix)
        && text
            .get(2..)
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// E.164: `+`, a non-zero digit, at most 15 digits in all; a channel prefix such as
/// `whatsapp:` is allowed \[TW-OAI\].
fn is_e164(text: &str) -> bool {
    let number = text.rsplit_once(':').map_or(text, |(_, n)| n);
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn invalid(key: &'static str, message: impl Into<String>) -> SinkError {
    SinkError::Invalid {
        key,
        message: message.into(),
    }
}

impl SinkKind for Config {
    const TYPE: &'static str = "twilio";

    type Sink = Twilio;

    /// Checks SIDs, credentials, sender, recipients and limits without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        if !is_sid(&self.account_sid, "AC") {
            return Err(invalid(
                "account_sid",
                "must be AC followed by 32 hex digits",
            ));
        }
        self.credentials()?;
        match (&self.from, &self.messaging_service_sid) {
            (Some(from), None) => {
                if from.trim().is_empty() || from.chars().any(char::is_control) {
                    return Err(invalid("from", "must be a number or sender ID"));
                }
            }
            (None, Some(sid)) => {
                if !is_sid(sid, "MG") {
                    return Err(invalid(
                        "messaging_service_sid",
                        "must be MG followed by 32 hex digits",
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    "from",
                    "give exactly one of `from` and `messaging_service_sid`",
                ))
            }
        }
        if self.to.is_empty() {
            return Err(invalid("to", "needs at least one recipient"));
        }
        for (index, number) in self.to.iter().enumerate() {
            if !is_e164(number) {
                return Err(invalid(
                    "to",
                    format!(
                        "recipient {} is not an E.164 number like +14155552345",
                        index + 1
                    ),
                ));
            }
            if self.to.iter().take(index).any(|n| n == number) {
                return Err(invalid(
                    "to",
                    format!("recipient {} is listed twice", index + 1),
                ));
            }
        }
        if !(MIN_CHARS..=MAX_CHARS).contains(&self.max_chars) {
            return Err(invalid(
                "max_chars",
                format!("must be between {MIN_CHARS} and {MAX_CHARS}"),
            ));
        }
        if let Some(validity) = self.validity_period {
            if validity < Duration::from_secs(1) || validity > MAX_VALIDITY {
                return Err(invalid("validity_period", "must be between 1s and 10h"));
            }
        }
        self.messages_url()?;
        Ok(())
    }

    /// The form fields sent to each recipient, as JSON objects (one per `to` entry).
    fn render(&self, alert: &Alert) -> Value {
        let body = text(alert, self.max_chars, self.encoding, self.template.as_ref());
        Value::Array(
            self.to
                .iter()
                .map(|to| {
                    let fields: serde_json::Map<String, Value> = self
                        .form(&body, to)
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), Value::String(v)))
                        .collect();
                    Value::Object(fields)
                })
                .collect(),
        )
    }

    fn build(&self) -> Result<Twilio, SinkError> {
        Twilio::new(self)
    }

    /// An auth token and an API key, each with its HTTP Basic credentials.
    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
        const KEY: &str = "SK0123456789abcdef0123456789abcdef";
        let (from, to) = ("+14155550000", ["+14155552345"]);
        let basic = |user: &str, password: &str| STANDARD.encode(format!("{user}:{password}"));
        let token = format!("{mark}twilio");
        let key_secret = format!("{mark}twiliokey");
        vec![
            Fixture::Secret {
                encoded: vec![basic(ACCOUNT, &token)],
                table: json!({"account_sid": ACCOUNT, "auth_token": token,
                              "from": from, "to": to, "api_base": base_url}),
            },
            Fixture::Secret {
                encoded: vec![basic(KEY, &key_secret)],
                table: json!({"account_sid": ACCOUNT, "api_key_sid": KEY, "api_key_secret": key_secret,
                              "from": from, "to": to, "api_base": base_url}),
            },
        ]
    }
}

impl Config {
    /// The Basic-auth pair: API key when given, else account SID and auth token.
    fn credentials(&self) -> Result<(&str, &Secret), SinkError> {
        match (&self.auth_token, &self.api_key_sid, &self.api_key_secret) {
            (Some(token), None, None) => Ok((&self.account_sid, token)),
            (None, Some(sid), Some(secret)) => {
                if is_sid(sid, "SK") {
                    Ok((sid, secret))
                } else {
                    Err(invalid(
                        "api_key_sid",
                        "must be SK followed by 32 hex digits",
                    ))
                }
            }
            (Some(_), _, _) => Err(invalid(
                "auth_token",
                "give either `auth_token` or `api_key_sid` and `api_key_secret`, not both",
            )),
            (None, _, _) => Err(invalid(
                "auth_token",
                "give `auth_token`, or `api_key_sid` and `api_key_secret`",
            )),
        }
    }

    fn messages_url(&self) -> Result<reqwest::Url, SinkError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.api_base.trim_end_matches('/'),
            self.account_sid
        );
        crate::webhook::http_url("api_base", &Secret::new(url))
    }

    /// The form fields of one request.
    fn form(&self, body: &str, to: &str) -> Vec<(&'static str, String)> {
        let mut form = vec![("To", to.to_owned())];
        if let Some(from) = &self.from {
            form.push(("From", from.clone()));
        }
        if let Some(sid) = &self.messaging_service_sid {
            form.push(("MessagingServiceSid", sid.clone()));
        }
        form.push(("Body", body.to_owned()));
        if let Some(validity) = self.validity_period {
            form.push(("ValidityPeriod", validity.as_secs().to_string()));
        }
        form
    }
}

/// The SMS text for `alert`: severity (or `RESOLVED`) and title, host (when the title lacks
/// it), summary — or the template's output — normalized for `encoding` and cut to
/// `max_units`. A digest's title takes at most half the budget, so that its summary (the
/// hosts) still shows.
pub fn text(
    alert: &Alert,
    max_units: usize,
    encoding: Encoding,
    template: Option<&Template>,
) -> String {
    let rendered = template
        .and_then(|t| t.render_or_default("twilio", alert, &|s| s.to_owned()))
        .filter(|s| !s.trim().is_empty());
    let raw = match rendered {
        Some(text) => text.trim().to_owned(),
        None => {
            let title_chars = if alert.digest.is_empty() {
                usize::MAX
            } else {
                max_units / 2
            };
            let title = one_line(&alert.title, title_chars);
            let mut lines = vec![format!("{}: {title}", present::severity_label(alert))];
            if let Some(host) = &alert.host {
                if !title.contains(host.as_str()) {
                    lines.push(format!("host {}", one_line(host, usize::MAX)));
                }
            }
            let summary = one_line(&alert.summary, max_units);
            if !summary.is_empty() {
                lines.push(summary);
            }
            lines.join("\n")
        }
    };
    sms::fit(&sms::normalize(&raw, encoding), max_units)
}

/// Twilio error codes that need the operator, with what to tell them \[TW-20003\], \[TW-21211\],
/// \[TW-21608\], \[TW-21610\].
fn hint(code: i64) -> Option<&'static str> {
    match code {
        20003 => Some("authentication failed: wrong credentials, or a key from another region"),
        21211 => Some("invalid 'To' number"),
        21608 => Some("trial account: the recipient is not verified"),
        21610 => Some("the recipient replied STOP to this sender"),
        _ => None,
    }
}

/// Classifies a create-Message answer \[TW-OAI\], \[TW-ERRJSON\]: 2xx delivered (unless the
/// Message is already `failed`); 429 / code 20429 and 408 retried after `Retry-After` (not
/// processed \[TW-20429\]); 5xx except 501 retried with backoff; every other status
/// rejected, with Twilio's `code`, `message` and `more_info` (unknown 4xx codes are
/// permanent \[TW-CHG\]).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    #[derive(Deserialize, Default)]
    struct Answer {
        #[serde(default)]
        code: Option<i64>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        more_info: Option<String>,
        #[serde(default)]
        status: Option<Value>,
        #[serde(default)]
        error_code: Option<Value>,
    }
    let answer: Answer = serde_json::from_str(body).unwrap_or_default();
    if status.is_success() {
        let state = answer.status.as_ref().and_then(Value::as_str).unwrap_or("");
        if matches!(state, "failed" | "undelivered" | "canceled") {
            let code = answer.error_code.map(|c| c.to_string()).unwrap_or_default();
            return Outcome::Rejected {
                reason: format!("message {state} at once (error code {code})"),
            };
        }
        return Outcome::Delivered;
    }
    let mut reason = format!("HTTP {}", status.as_u16());
    match (&answer.code, &answer.message) {
        (Some(code), message) => {
            reason.push_str(&format!(": Twilio error {code}"));
            if let Some(hint) = hint(*code) {
                reason.push_str(&format!(" ({hint})"));
            }
            if let Some(message) = message {
                reason.push_str(&format!(": {}", one_line(message, 200)));
            }
            if let Some(more) = &answer.more_info {
                reason.push_str(&format!(" [{}]", one_line(more, 100)));
            }
        }
        (None, _) => {
            reason.push_str(&format!(": {}", http::excerpt(body)));
        }
    }
    let transient = status == StatusCode::TOO_MANY_REQUESTS
        || answer.code == Some(20429)
        // The server gave up waiting for our request: nothing was processed.
        || status == StatusCode::REQUEST_TIMEOUT
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED);
    if transient {
        if may_have_sent(status) {
            reason.push_str(" (the SMS may have been sent: retrying anyway)");
        }
        return Outcome::Retry {
            after: http::retry_after(headers, SystemTime::now()),
            reason,
        };
    }
    Outcome::Rejected { reason }
}

/// Whether an error status leaves open that the Message was created: a 5xx other than 503
/// (Service Unavailable: not processed) and 501 (never retried).
fn may_have_sent(status: StatusCode) -> bool {
    status.is_server_error()
        && status != StatusCode::SERVICE_UNAVAILABLE
        && status != StatusCode::NOT_IMPLEMENTED
}

/// Sends alerts by SMS, one request per recipient.
#[derive(Debug)]
pub struct Twilio {
    config: Config,
    endpoint: Endpoint,
    url: reqwest::Url,
}

impl Twilio {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Twilio, SinkError> {
        config.validate()?;
        let rate = ratelimit::effective(config.rate_limit, None);
        Ok(Twilio {
            config: config.clone(),
            endpoint: Endpoint::new(config.timeout, rate)?,
            url: config.messages_url()?,
        })
    }

    async fn send(&self, alert: &Alert, to: &str) -> Outcome {
        let (user, password) = match self.config.credentials() {
            Ok(pair) => pair,
            Err(error) => {
                return Outcome::Rejected {
                    reason: error.to_string(),
                }
            }
        };
        let body = text(
            alert,
            self.config.max_chars,
            self.config.encoding,
            self.config.template.as_ref(),
        );
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.config.form(&body, to))
            .finish();
        let request = self
            .endpoint
            .client
            .post(self.url.clone())
            .basic_auth(user, Some(password.expose()))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form);
        let (outcome, maybe_sent) = match self.endpoint.exchange(request).await {
            Ok(answer) => {
                let outcome = classify(answer.status, &answer.headers, &answer.body);
                self.endpoint.honour(answer.status, &outcome);
                (outcome, may_have_sent(answer.status))
            }
            Err(failure) => (
                Outcome::Retry {
                    after: None,
                    reason: failure.reason,
                },
                !failure.never_sent,
            ),
        };
        if maybe_sent && matches!(outcome, Outcome::Retry { .. }) {
            tracing::warn!(
                sink = "twilio",
                "The SMS may have been sent before the failure; retrying: possible duplicate SMS."
            );
        }
        outcome
    }
}

impl Sink for Twilio {
    /// Sends to every recipient in turn and reports the first failure. For `herald test-sink`
    /// only: the outbox uses [`Sink::deliver_to`], so a retry never re-sends to a recipient
    /// that already got the SMS.
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let mut first_failure = None;
            for (index, to) in self.config.to.iter().enumerate() {
                let outcome = self.send(alert, to).await;
                if first_failure.is_none() {
                    first_failure = match outcome {
                        Outcome::Delivered => None,
                        Outcome::Retry { after, reason } => Some(Outcome::Retry {
                            after,
                            reason: format!("recipient {}: {reason}", index + 1),
                        }),
                        Outcome::Rejected { reason } => Some(Outcome::Rejected {
                            reason: format!("recipient {}: {reason}", index + 1),
                        }),
                    };
                }
            }
            first_failure.unwrap_or(Outcome::Delivered)
        })
    }

    fn targets(&self) -> Vec<String> {
        self.config.to.clone()
    }

    fn notify_resolved(&self) -> bool {
        self.config.notify_resolved
    }

    fn deliver_to<'a>(&'a self, alert: &'a Alert, target: &'a str) -> DeliverFuture<'a> {
        Box::pin(async move {
            if !self.config.to.iter().any(|to| to == target) {
                return Outcome::Rejected {
                    reason: "the recipient is no longer in the sink's `to` list".into(),
                };
            }
            self.send(alert, target).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn config() -> Config {
        Config {
            account_sid: format!("AC{}", "0".repeat(32)),
            auth_token: Some(Secret::new("tok")),
            api_key_sid: None,
            api_key_secret: None,
            from: Some("+14155550000".into()),
            messaging_service_sid: None,
            to: vec!["+14155552345".into(), "+447700900123".into()],
            api_base: default_api_base(),
            max_chars: DEFAULT_MAX_CHARS,
            encoding: Encoding::Auto,
            validity_period: None,
            notify_resolved: false,
            template: None,
            timeout: default_timeout(),
            rate_limit: None,
        }
    }

    #[test]
    fn validates_ids_numbers_and_credentials() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.to.push("5551234567".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("recipient 3"));
        let mut c = config();
        c.api_key_sid = Some(format!("SK{}", "a".repeat(32)));
        assert!(c.validate().is_err(), "token and key together");
        c.auth_token = None;
        c.api_key_secret = Some(Secret::new("s"));
        assert!(c.validate().is_ok());
        let mut c = config();
        c.messaging_service_sid = Some(format!("MG{}", "1".repeat(32)));
        assert!(c.validate().is_err(), "from and service together");
        c.from = None;
        assert!(c.validate().is_ok());
        c.max_chars = 1601;
        assert!(c.validate().is_err());
        assert!(is_e164("whatsapp:+14155552345"));
        assert!(!is_e164("+0123") && !is_e164("+1") && !is_e164("+1234567890123456"));
    }

    #[test]
    fn server_errors_are_retried_and_flagged_when_the_sms_may_exist() {
        let h = HeaderMap::new();
        for code in [500u16, 502, 503, 504, 599] {
            let status = StatusCode::from_u16(code).expect("status");
            let outcome = classify(status, &h, "");
            let Outcome::Retry { after, reason } = outcome else {
                panic!("{code}: {outcome:?}");
            };
            assert_eq!(
                after, None,
                "{code}: herald's backoff, no Retry-After given"
            );
            // 503 is "not processed"; the others may have created the Message.
            assert_eq!(reason.contains("may have been sent"), code != 503, "{code}");
        }
        assert!(matches!(
            classify(StatusCode::NOT_IMPLEMENTED, &h, ""),
            Outcome::Rejected { .. }
        ));
    }

    #[test]
    fn error_codes_decide() {
        let h = HeaderMap::new();
        let body = |code: i64, status: u16| {
            format!(
                r#"{{"code":{code},"message":"m","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#
            )
        };
        let bad = StatusCode::BAD_REQUEST;
        for code in [21211, 21610, 21608, 99999] {
            assert!(
                matches!(
                    classify(bad, &h, &body(code, 400)),
                    Outcome::Rejected { .. }
                ),
                "{code}"
            );
        }
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h, &body(20429, 429)),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, &h, &body(20003, 401)),
            Outcome::Rejected { reason } if reason.contains("region")
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &h, ""),
            Outcome::Retry { .. }
        ));
        assert_eq!(
            classify(
                StatusCode::CREATED,
                &h,
                r#"{"sid":"SM1","status":"queued"}"#
            ),
            Outcome::Delivered
        );
    }

    #[test]
    fn text_is_short_and_gsm() {
        let mut a = Alert::sample();
        a.title = "“Backup” failed — disk full 🔥".into();
        a.summary = "x".repeat(1000);
        let t = text(&a, 160, Encoding::Auto, None);
        assert!(sms::units(&t) <= 160, "{t}");
        assert!(t.chars().all(sms::is_gsm), "{t}");
        assert!(
            t.starts_with("WARNING: \"Backup\" failed - disk full"),
            "{t}"
        );
        assert!(t.ends_with("..."));
    }
}
