//! The Gotify sink: `POST {server}/message` with an application token, JSON `{"title",
//! "message", "priority", "extras"}` \[GOTIFY-API\] (reference/sinks.md §6.2).
//!
//! Message: the title is the severity label and the alert's title; the message is
//! [`present::plain`] (summary or template, fields, body excerpt). `priority` follows the
//! severity — critical 8, warning 5, info 2 (Gotify's Android client: 1–3 a silent
//! notification, 4–7 one with sound, 8–10 one that also pops up \[GOTIFY-API\]) — and a
//! recovery is 2. `extras` sets `client::display.contentType` to `text/plain` \[GOTIFY-EXT\].
//!
//! Dispatch's notifications: a digest's message lists its members (host, command, `×count`,
//! first–last time) after the summary, with "… and N more"; a recovery is titled
//! `RESOLVED: …` at the low priority and leaves out the body excerpt; a reminder shows a
//! `Repeats:` line.
//!
//! Guarantees:
//! - Plain text: `contentType` is `text/plain`, so clients render no Markdown from mail (no
//!   links, images or formatting) \[GOTIFY-EXT\].
//! - The app token travels only in the `X-Gotify-Key` header \[GOTIFY-API\] — never in the
//!   URL (`?token=` would land in proxies' access logs), outcomes, logs or
//!   [`Config::render`] output.
//! - Gotify documents no length limit (it stores the text as given); herald keeps the title
//!   to [`TITLE_CHARS`] and the message to [`MESSAGE_CHARS`], so a storm cannot store
//!   megabytes per notification; cuts fall between characters, marked with `…`.
//! - 2xx delivered; 400 (bad message), 401/403 (bad or revoked token) and every other 4xx but
//!   408 and 429 rejected, with Gotify's `errorDescription` as the reason; 408, 429 and 5xx
//!   (but 501) retried. No default pacing: the server is the user's own.
//!
//! \[GOTIFY-API\]: gotify.net/docs/pushmsg and gotify.net/api-docs (`POST /message`,
//! `X-Gotify-Key`, the error model `{"error", "errorCode", "errorDescription"}`).
//! \[GOTIFY-EXT\]: gotify.net/docs/msgextras (`client::display`).

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{self, Endpoint};
use crate::present::{self, PlainLimits};
use crate::ratelimit::{self, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::template::Template;
use crate::text::one_line;
use crate::{Alert, Outcome, Secret, Severity, Sink, SinkError};

/// The header that carries the application token \[GOTIFY-API\].
pub const TOKEN_HEADER: &str = "x-gotify-key";
/// The title: no documented limit; one line of a notification, as for Pushover.
pub const TITLE_CHARS: usize = 250;
/// The message: no documented limit; ntfy's 4,096, in characters — a screenful and more.
pub const MESSAGE_CHARS: usize = 4096;

/// `type = "gotify"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server's base URL, e.g. `https://gotify.example.net` (or with a path prefix).
    pub server: String,
    /// The application token (a secret), created in Gotify's Apps tab.
    pub token: Secret,
    /// A minijinja template replacing the summary (see [`crate::template`]); plain text.
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(
        default = "http::default_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub timeout: Duration,
    /// Client-side pacing, e.g. `"10/s"`; default off (the server is the user's own).
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

impl Config {
    /// `{server}/message`.
    fn endpoint(&self) -> Result<reqwest::Url, SinkError> {
        let url = format!("{}/message", self.server.trim_end_matches('/'));
        crate::webhook::http_url("server", &Secret::new(url))
    }
}

impl SinkKind for Config {
    const TYPE: &'static str = "gotify";

    type Sink = Gotify;

    /// Checks the server and token without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        self.endpoint()?;
        if self.token.expose().trim().is_empty() {
            return Err(SinkError::Invalid {
                key: "token",
                message: "must be the application's token".into(),
            });
        }
        http::secret_header("token", self.token.expose())?;
        Ok(())
    }

    /// The request body for `alert`, as sent (the token travels in a header, not here).
    fn render(&self, alert: &Alert) -> Value {
        payload(alert, self.template.as_ref())
    }

    fn build(&self) -> Result<Gotify, SinkError> {
        Gotify::new(self)
    }

    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        vec![Fixture::secret(json!({
            "server": base_url,
            "token": format!("A{mark}gotify"),
        }))]
    }
}

/// Gotify's priority for `alert`: 8 critical, 5 warning, 2 info and recoveries.
pub fn priority(alert: &Alert) -> u8 {
    if alert.resolve {
        return 2;
    }
    match alert.severity {
        Severity::Critical => 8,
        Severity::Warning => 5,
        Severity::Info => 2,
    }
}

/// What herald lets a Gotify notification hold.
pub const LIMITS: PlainLimits = PlainLimits {
    title: TITLE_CHARS,
    message: MESSAGE_CHARS,
    cost: present::per_char,
};

/// The JSON body for `alert`.
pub fn payload(alert: &Alert, template: Option<&Template>) -> Value {
    let text = present::plain(alert, template, "gotify", LIMITS);
    json!({
        "title": text.title,
        "message": text.message,
        "priority": priority(alert),
        "extras": {"client::display": {"contentType": "text/plain"}},
    })
}

/// Classifies Gotify's answer by the default table (2xx delivered; 408, 429 and 5xx but 501
/// retried; 400, 401, 403 and the rest rejected), with Gotify's `errorDescription` as the
/// reason when it sent its error model.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Error {
        error: String,
        #[serde(default)]
        error_description: String,
    }
    let detail = match serde_json::from_str::<Error>(body) {
        Ok(Error {
            error,
            error_description,
        }) => one_line(&format!("{error}: {error_description}"), 300),
        Err(_) => http::excerpt(body),
    };
    http::classify_status_saying(status, headers, &detail)
}

/// Pushes alerts to one Gotify application.
#[derive(Debug)]
pub struct Gotify {
    endpoint: Endpoint,
    url: http::SecretUrl,
    /// `X-Gotify-Key` (sensitive).
    headers: HeaderMap,
    template: Option<Template>,
}

impl Gotify {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Gotify, SinkError> {
        config.validate()?;
        let mut headers = HeaderMap::new();
        headers.insert(
            TOKEN_HEADER,
            http::secret_header("token", config.token.expose())?,
        );
        Ok(Gotify {
            endpoint: Endpoint::new(
                config.timeout,
                ratelimit::effective(config.rate_limit, None),
            )?,
            url: http::SecretUrl(config.endpoint()?),
            headers,
            template: config.template.clone(),
        })
    }
}

impl Sink for Gotify {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let body = payload(alert, self.template.as_ref());
            self.endpoint
                .post_json(&self.url, &self.headers, &body, classify)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_severity() {
        let mut alert = Alert::sample();
        for (severity, expected) in [
            (Severity::Critical, 8),
            (Severity::Warning, 5),
            (Severity::Info, 2),
        ] {
            alert.severity = severity;
            assert_eq!(priority(&alert), expected);
        }
        alert.severity = Severity::Critical;
        alert.resolve = true;
        assert_eq!(priority(&alert), 2);
    }

    #[test]
    fn gotify_errors_word_the_reason() {
        let body = r#"{"error":"Unauthorized","errorCode":401,"errorDescription":"you need to provide a valid access token"}"#;
        let outcome = classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), body);
        assert_eq!(
            outcome,
            Outcome::Rejected {
                reason: "HTTP 401: Unauthorized: you need to provide a valid access token".into()
            }
        );
    }
}
