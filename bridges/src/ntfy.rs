//! The ntfy sink: publishes to a topic on ntfy.sh or a self-hosted ntfy server as JSON —
//! `POST {server}/` with `{"topic", "title", "message", "priority", "tags"}` \[NTFY\]
//! (reference/sinks.md §6.2).
//!
//! Message: the title is the severity label and the alert's title; the message is
//! [`present::plain`] (summary or template, fields, body excerpt). `priority` follows the
//! severity — critical 5 (max), warning 4 (high), info 3 (default) — and a recovery is 3;
//! `tags` are an emoji shortcode for the severity (`rotating_light`, `warning`,
//! `information_source`; `white_check_mark` on a recovery) and the alert's kind, so the phone
//! shows the emoji before the title \[NTFY\].
//!
//! Dispatch's notifications: a digest's message lists its members (host, command, `×count`,
//! first–last time) after the summary, with "… and N more"; a recovery is titled
//! `RESOLVED: …` at the default priority and leaves out the body excerpt; a reminder shows a
//! `Repeats:` line.
//!
//! Guarantees:
//! - Plain text only: `markdown` is never sent, so ntfy shows mail text as it is and no mail
//!   can format, link or add action buttons; the JSON body carries every field, so no mail
//!   text ever becomes a header \[NTFY\].
//! - The message is at most [`MESSAGE_BYTES`] (ntfy.sh's default `message-size-limit` of
//!   4,096 bytes, beyond which ntfy turns the message into an attachment \[NTFY-CFG\]) and the
//!   title at most [`TITLE_CHARS`]; cuts fall between characters, marked with `…`.
//! - Auth: `token` (an access token, sent as `Authorization: Bearer`) or `username` and
//!   `password` (HTTP Basic) \[NTFY\]; both are secrets, never in outcomes, logs or
//!   [`Config::render`] output (the body holds none).
//! - 2xx delivered; 429 (ntfy's visitor request limit) and 5xx retried, after `Retry-After`
//!   when given; 401/403 (bad credentials, topic not allowed), 413 and every other status
//!   rejected, with ntfy's own `error` as the reason. Paced by default at ntfy.sh's visitor
//!   limit: a burst of 60, then one request per 5 s \[NTFY-CFG\].
//!
//! \[NTFY\]: docs.ntfy.sh/publish ("Publish as JSON", "Message priority", "Tags & emojis",
//! "Authentication"). \[NTFY-CFG\]: docs.ntfy.sh/config (`message-size-limit`,
//! `visitor-request-limit-burst`, `visitor-request-limit-replenish`).

use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{self, Endpoint};
use crate::present::{self, PlainLimits};
use crate::ratelimit::{self, Rate, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::template::Template;
use crate::text::one_line;
use crate::{Alert, Outcome, Secret, Severity, Sink, SinkError};

/// ntfy.sh, the public server \[NTFY\].
pub const DEFAULT_SERVER: &str = "https://ntfy.sh";
/// ntfy.sh's `message-size-limit`: 4,096 bytes; a longer message becomes an attachment
/// \[NTFY-CFG\], which a phone does not show.
pub const MESSAGE_BYTES: usize = 4096;
/// ntfy documents no title limit; a notification shows one line of it, and 250 characters
/// (Pushover's documented limit) is more than any screen.
pub const TITLE_CHARS: usize = 250;
/// ntfy's topic names: 1–64 characters of `[-_A-Za-z0-9]` \[NTFY\].
pub const TOPIC_CHARS: usize = 64;
/// ntfy.sh's visitor limit: a burst of 60 requests, then one per 5 s \[NTFY-CFG\].
pub const DEFAULT_RATE: Rate = Rate::new(60, Duration::from_secs(300));

/// `type = "ntfy"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The topic to publish to (on ntfy.sh, anyone who knows it can read it: pick one that is
    /// hard to guess, or use access control).
    pub topic: String,
    /// The server: ntfy.sh or a self-hosted one.
    #[serde(default = "default_server")]
    pub server: String,
    /// An access token (`tk_…`), sent as `Authorization: Bearer`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A user for HTTP Basic auth (with `password`), instead of `token`.
    #[serde(default)]
    pub username: Option<String>,
    /// The password for `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A minijinja template replacing the summary (see [`crate::template`]); plain text.
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(
        default = "http::default_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub timeout: Duration,
    /// Client-side pacing; default `"60/5m"` (ntfy.sh's visitor limit); `"off"` to disable.
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

fn default_server() -> String {
    DEFAULT_SERVER.to_owned()
}

impl Config {
    /// The `Authorization` value, if any: the token, or Basic of username and password.
    fn authorization(&self) -> Result<Option<String>, SinkError> {
        match (&self.token, &self.username, &self.password) {
            (None, None, None) => Ok(None),
            (Some(token), None, None) => Ok(Some(format!("Bearer {}", token.expose()))),
            (None, Some(user), Some(password)) => {
                if user.contains(':') {
                    return Err(invalid("username", "must not contain ':' (HTTP Basic)"));
                }
                let pair = format!("{user}:{}", password.expose());
                Ok(Some(format!("Basic {}", STANDARD.encode(pair))))
            }
            (Some(_), _, _) => Err(invalid(
                "token",
                "give either `token` or `username` and `password`, not both",
            )),
            (None, _, _) => Err(invalid("password", "`username` and `password` go together")),
        }
    }

    fn endpoint(&self) -> Result<reqwest::Url, SinkError> {
        crate::webhook::http_url("server", &Secret::new(self.server.clone()))
    }
}

fn invalid(key: &'static str, message: &str) -> SinkError {
    SinkError::Invalid {
        key,
        message: message.to_owned(),
    }
}

impl SinkKind for Config {
    const TYPE: &'static str = "ntfy";

    type Sink = Ntfy;

    /// Checks the topic, server and credentials without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        let topic_ok = (1..=TOPIC_CHARS).contains(&self.topic.len())
            && self
                .topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !topic_ok {
            return Err(invalid(
                "topic",
                "must be 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        self.endpoint()?;
        if let Some(auth) = self.authorization()? {
            http::secret_header("token", &auth)?;
        }
        Ok(())
    }

    /// The request body for `alert`, as sent (credentials travel in a header, not here).
    fn render(&self, alert: &Alert) -> Value {
        payload(alert, &self.topic, self.template.as_ref())
    }

    fn build(&self) -> Result<Ntfy, SinkError> {
        Ntfy::new(self)
    }

    /// A token and a username/password pair (with its Basic form).
    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        let password = format!("{mark}ntfypw");
        vec![
            Fixture::secret(json!({
                "topic": "alerts", "server": base_url, "token": format!("tk_{mark}ntfy"),
                "rate_limit": "off",
            })),
            Fixture::Secret {
                encoded: vec![STANDARD.encode(format!("herald:{password}"))],
                table: json!({
                    "topic": "alerts", "server": base_url, "username": "herald",
                    "password": password, "rate_limit": "off",
                }),
            },
        ]
    }
}

/// ntfy's priority for `alert`: 5 max, 4 high, 3 default \[NTFY\].
pub fn priority(alert: &Alert) -> u8 {
    if alert.resolve {
        return 3;
    }
    match alert.severity {
        Severity::Critical => 5,
        Severity::Warning => 4,
        Severity::Info => 3,
    }
}

fn emoji(alert: &Alert) -> &'static str {
    if alert.resolve {
        return "white_check_mark";
    }
    match alert.severity {
        Severity::Critical => "rotating_light",
        Severity::Warning => "warning",
        Severity::Info => "information_source",
    }
}

/// What ntfy shows: titles by characters, messages by bytes.
pub const LIMITS: PlainLimits = PlainLimits {
    title: TITLE_CHARS,
    message: MESSAGE_BYTES,
    cost: present::utf8_bytes,
};

/// The JSON body for `alert`, published to `topic`.
pub fn payload(alert: &Alert, topic: &str, template: Option<&Template>) -> Value {
    let text = present::plain(alert, template, "ntfy", LIMITS);
    json!({
        "topic": topic,
        "title": text.title,
        "message": text.message,
        "priority": priority(alert),
        "tags": [emoji(alert), alert.kind.as_str()],
    })
}

/// Classifies ntfy's answer by the default table (2xx delivered; 408, 429 and 5xx but 501
/// retried; the rest rejected), with ntfy's JSON error (`{"code": 40101, "error":
/// "unauthorized"}`) as the reason when it sent one.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        code: Option<u64>,
        error: String,
    }
    let detail = match serde_json::from_str::<Error>(body) {
        Ok(Error { code, error }) => {
            let error = one_line(&error, 200);
            code.map_or(error.clone(), |code| format!("{error} ({code})"))
        }
        Err(_) => http::excerpt(body),
    };
    http::classify_status_saying(status, headers, &detail)
}

/// Publishes alerts to one ntfy topic.
#[derive(Debug)]
pub struct Ntfy {
    endpoint: Endpoint,
    url: http::SecretUrl,
    /// `Authorization`, when configured (sensitive).
    headers: HeaderMap,
    topic: String,
    template: Option<Template>,
}

impl Ntfy {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Ntfy, SinkError> {
        config.validate()?;
        let mut headers = HeaderMap::new();
        if let Some(auth) = config.authorization()? {
            headers.insert(AUTHORIZATION, http::secret_header("token", &auth)?);
        }
        let rate = ratelimit::effective(config.rate_limit, Some(DEFAULT_RATE));
        Ok(Ntfy {
            endpoint: Endpoint::new(config.timeout, rate)?,
            url: http::SecretUrl(config.endpoint()?),
            headers,
            topic: config.topic.clone(),
            template: config.template.clone(),
        })
    }
}

impl Sink for Ntfy {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let body = payload(alert, &self.topic, self.template.as_ref());
            self.endpoint
                .post_json(&self.url, &self.headers, &body, classify)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            topic: "alerts".into(),
            server: default_server(),
            token: None,
            username: None,
            password: None,
            template: None,
            timeout: http::default_timeout(),
            rate_limit: None,
        }
    }

    #[test]
    fn credentials_are_one_kind() {
        let mut c = config();
        assert!(c.validate().is_ok(), "public topic");
        c.token = Some(Secret::new("tk_x"));
        assert!(c.validate().is_ok());
        c.username = Some("u".into());
        assert!(c.validate().unwrap_err().to_string().starts_with("token:"));
        c.token = None;
        assert!(c.validate().is_err(), "username without password");
        c.password = Some(Secret::new("p"));
        assert!(c.validate().is_ok());
        c.topic = "bad topic/../x".into();
        assert!(c.validate().unwrap_err().to_string().starts_with("topic:"));
    }

    #[test]
    fn priorities_follow_severity() {
        let mut alert = Alert::sample();
        for (severity, expected) in [
            (Severity::Critical, 5),
            (Severity::Warning, 4),
            (Severity::Info, 3),
        ] {
            alert.severity = severity;
            assert_eq!(priority(&alert), expected);
        }
        alert.severity = Severity::Critical;
        alert.resolve = true;
        assert_eq!(priority(&alert), 3);
        assert_eq!(payload(&alert, "t", None)["tags"][0], "white_check_mark");
    }

    #[test]
    fn ntfy_errors_word_the_reason() {
        let outcome = classify(
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            r#"{"code":40301,"http":403,"error":"forbidden"}"#,
        );
        assert_eq!(
            outcome,
            Outcome::Rejected {
                reason: "HTTP 403: forbidden (40301)".into()
            }
        );
    }
}
