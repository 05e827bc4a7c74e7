//! The Pushover sink: `POST https://api.pushover.net/1/messages.json`, a form with the
//! application `token`, the `user` (or group) key, `title`, `message` and `priority`
//! \[PO-API\].
//!
//! Message: the title is the severity label and the alert's title; the message is
//! [`present::plain`] (summary or template, fields, body excerpt). `priority` follows the
//! severity — critical 1 (high: bypasses quiet hours), warning 0 (normal), info -1 (quiet: no
//! sound) — and a recovery is -1. With `emergency = true` a critical alert is priority 2
//! instead: Pushover repeats it every `retry` until acknowledged or `expire` passes
//! \[PO-PRIO\]. `device`, `url` and `url_title` are passed on when set.
//!
//! Dispatch's notifications: a digest's message lists its members (host, command, `×count`,
//! first–last time) after the summary, with "… and N more"; a recovery is titled
//! `RESOLVED: …`, quiet, never an emergency, and leaves out the body excerpt; a reminder
//! shows a `Repeats:` line.
//!
//! Guarantees:
//! - Plain text: `html` is never sent, so Pushover shows mail text as it is \[PO-API\].
//! - The title is at most 250 characters and the message at most 1,024 \[PO-API\]; cuts fall
//!   between characters, marked with `…`. `url` (512) and `url_title` (100) are checked when
//!   the configuration is read, as are `retry` (at least 30 s) and `expire` (at most
//!   10,800 s) \[PO-PRIO\].
//! - The token and user key are secrets: they travel only in the request body, and
//!   [`Config::render`] shows them as `**REDACTED**`; never in outcomes or logs.
//! - HTTP 200 with `"status": 1` delivered, with another status rejected; a 4xx other than
//!   408 and 429 rejected with Pushover's `errors` (Pushover: do not resend a request it
//!   refused); 429 (the application's message limit) and 5xx retried, a 5xx no sooner than
//!   [`SERVER_ERROR_WAIT`] ("no more than once every 5 seconds") \[PO-API\].
//!
//! \[PO-API\]: pushover.net/api ("Message API", "Limits", "Response", "Being Friendly to our
//! API"). \[PO-PRIO\]: pushover.net/api#priority (emergency `retry` and `expire`).

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE};
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

/// The Message API endpoint \[PO-API\].
pub const DEFAULT_API_URL: &str = "https://api.pushover.net/1/messages.json";
/// `title`: 250 characters \[PO-API\].
pub const TITLE_CHARS: usize = 250;
/// `message`: 1,024 characters \[PO-API\].
pub const MESSAGE_CHARS: usize = 1024;
/// `url`: 512 characters \[PO-API\].
pub const URL_CHARS: usize = 512;
/// `url_title`: 100 characters \[PO-API\].
pub const URL_TITLE_CHARS: usize = 100;
/// An emergency's `retry`: at least 30 s \[PO-PRIO\].
pub const MIN_RETRY: Duration = Duration::from_secs(30);
/// An emergency's `expire`: at most 10,800 s (3 h) \[PO-PRIO\].
pub const MAX_EXPIRE: Duration = Duration::from_secs(10_800);
/// After a 5xx: "do not retry more than once every 5 seconds" \[PO-API\].
pub const SERVER_ERROR_WAIT: Duration = Duration::from_secs(5);
/// What [`Config::render`] shows instead of the token and user key.
const REDACTED: &str = "**REDACTED**";

/// `type = "pushover"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The application's API token (a secret).
    pub token: Secret,
    /// The user or group key to notify (a secret: with the token it lets anyone page you).
    pub user: Secret,
    /// Only this device (or comma-separated devices) of the user; default all.
    #[serde(default)]
    pub device: Option<String>,
    /// A supplementary URL shown with every message (a dashboard, a runbook).
    #[serde(default)]
    pub url: Option<String>,
    /// The text shown for `url`.
    #[serde(default)]
    pub url_title: Option<String>,
    /// Critical alerts as emergencies (priority 2), repeated until acknowledged.
    #[serde(default)]
    pub emergency: bool,
    /// How often Pushover repeats an emergency (at least 30 s).
    #[serde(default = "default_retry", deserialize_with = "deserialize_duration")]
    pub retry: Duration,
    /// How long Pushover keeps repeating an emergency (at most 3 h).
    #[serde(default = "default_expire", deserialize_with = "deserialize_duration")]
    pub expire: Duration,
    /// The Message API endpoint.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// A minijinja template replacing the summary (see [`crate::template`]); plain text.
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(
        default = "http::default_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub timeout: Duration,
    /// Client-side pacing, e.g. `"1/s"`; default off (Pushover limits messages per month,
    /// not per second).
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

/// 60 s: every minute until acknowledged, Pushover's own example \[PO-PRIO\].
fn default_retry() -> Duration {
    Duration::from_secs(60)
}

/// 1 h: an hour of repeats, then the page is left for the next alert.
fn default_expire() -> Duration {
    Duration::from_secs(3600)
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

fn invalid(key: &'static str, message: String) -> SinkError {
    SinkError::Invalid { key, message }
}

/// A key of 30 letters and digits, as Pushover issues tokens and user keys \[PO-API\]; checked
/// loosely (printable ASCII, no spaces), so a format change does not break herald.
fn key_ok(key: &Secret) -> bool {
    let key = key.expose();
    !key.is_empty() && key.chars().all(|c| c.is_ascii_graphic())
}

impl SinkKind for Config {
    const TYPE: &'static str = "pushover";

    type Sink = Pushover;

    /// Checks keys, URLs and the emergency timings without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        if !key_ok(&self.token) {
            return Err(invalid(
                "token",
                "must be the application's API token".into(),
            ));
        }
        if !key_ok(&self.user) {
            return Err(invalid("user", "must be a user or group key".into()));
        }
        crate::webhook::http_url("api_url", &Secret::new(self.api_url.clone()))?;
        for (key, value, max) in [
            ("url", &self.url, URL_CHARS),
            ("url_title", &self.url_title, URL_TITLE_CHARS),
            ("device", &self.device, URL_TITLE_CHARS),
        ] {
            if value.as_ref().is_some_and(|v| v.chars().count() > max) {
                return Err(invalid(key, format!("at most {max} characters")));
            }
        }
        if self.retry < MIN_RETRY {
            return Err(invalid("retry", "must be at least 30s".into()));
        }
        if self.expire > MAX_EXPIRE || self.expire < self.retry {
            return Err(invalid(
                "expire",
                "must be at least `retry` and at most 3h (10800s)".into(),
            ));
        }
        Ok(())
    }

    /// The form fields for `alert`, as sent, with the token and user key redacted.
    fn render(&self, alert: &Alert) -> Value {
        let fields = self.form(alert, REDACTED, REDACTED);
        Value::Object(
            fields
                .into_iter()
                .map(|(name, value)| (name.to_owned(), Value::String(value)))
                .collect(),
        )
    }

    fn build(&self) -> Result<Pushover, SinkError> {
        Pushover::new(self)
    }

    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        vec![Fixture::secret(json!({
            "token": format!("a{mark}token"),
            "user": format!("u{mark}user"),
            "api_url": format!("{base_url}/1/messages.json"),
            "emergency": true,
        }))]
    }
}

/// Pushover's priority for `alert` \[PO-PRIO\]: 1 critical (2 with `emergency`), 0 warning, -1
/// info and recoveries.
pub fn priority(alert: &Alert, emergency: bool) -> i8 {
    if alert.resolve {
        return -1;
    }
    match alert.severity {
        Severity::Critical if emergency => 2,
        Severity::Critical => 1,
        Severity::Warning => 0,
        Severity::Info => -1,
    }
}

/// What Pushover accepts \[PO-API\].
pub const LIMITS: PlainLimits = PlainLimits {
    title: TITLE_CHARS,
    message: MESSAGE_CHARS,
    cost: present::per_char,
};

impl Config {
    /// The form for `alert`, in order, carrying `token` and `user`.
    fn form(&self, alert: &Alert, token: &str, user: &str) -> Vec<(&'static str, String)> {
        let text = present::plain(alert, self.template.as_ref(), "pushover", LIMITS);
        let priority = priority(alert, self.emergency);
        let mut form = vec![
            ("token", token.to_owned()),
            ("user", user.to_owned()),
            ("title", text.title),
            ("message", text.message),
            ("priority", priority.to_string()),
        ];
        if priority == 2 {
            form.push(("retry", self.retry.as_secs().to_string()));
            form.push(("expire", self.expire.as_secs().to_string()));
        }
        for (name, value) in [
            ("device", &self.device),
            ("url", &self.url),
            ("url_title", &self.url_title),
        ] {
            if let Some(value) = value {
                form.push((name, value.clone()));
            }
        }
        form
    }
}

/// Classifies Pushover's answer: 2xx by the body's `status` (1 delivered, else rejected; an
/// unreadable 2xx is unconfirmed, so retried); otherwise the default table with Pushover's
/// `errors` as the reason, a 5xx no sooner than [`SERVER_ERROR_WAIT`].
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    #[derive(Deserialize)]
    struct Answer {
        status: i64,
        #[serde(default)]
        errors: Vec<String>,
    }
    let answer = serde_json::from_str::<Answer>(body).ok();
    let detail = match &answer {
        Some(answer) if !answer.errors.is_empty() => one_line(&answer.errors.join("; "), 300),
        _ => http::excerpt(body),
    };
    if status.is_success() {
        return match answer {
            Some(Answer { status: 1, .. }) => Outcome::Delivered,
            Some(_) => Outcome::Rejected {
                reason: format!("Pushover error: {detail}"),
            },
            // A 200 that is not Pushover's answer (a proxy's page): the message is unconfirmed.
            None => Outcome::Retry {
                after: None,
                reason: format!("unreadable answer: {detail}"),
            },
        };
    }
    match http::classify_status_saying(status, headers, &detail) {
        Outcome::Retry { after, reason } if status.is_server_error() => Outcome::Retry {
            after: Some(after.map_or(SERVER_ERROR_WAIT, |d| d.max(SERVER_ERROR_WAIT))),
            reason,
        },
        outcome => outcome,
    }
}

/// Sends alerts to one Pushover user or group.
#[derive(Debug)]
pub struct Pushover {
    endpoint: Endpoint,
    url: http::SecretUrl,
    config: Config,
}

impl Pushover {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Pushover, SinkError> {
        config.validate()?;
        let url = crate::webhook::http_url("api_url", &Secret::new(config.api_url.clone()))?;
        Ok(Pushover {
            endpoint: Endpoint::new(
                config.timeout,
                ratelimit::effective(config.rate_limit, None),
            )?,
            url: http::SecretUrl(url),
            config: config.clone(),
        })
    }
}

impl Sink for Pushover {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let config = &self.config;
            let fields = config.form(alert, config.token.expose(), config.user.expose());
            let form = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields)
                .finish();
            let request = self
                .endpoint
                .client
                .post(self.url.0.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form);
            self.endpoint.attempt(request, classify).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            token: Secret::new("azGDORePK8gMaC0QOYAMyEEuzJnyUi"),
            user: Secret::new("uQiRzpo4DXghDmr9QzzfQu27cmVRsG"),
            device: None,
            url: None,
            url_title: None,
            emergency: false,
            retry: default_retry(),
            expire: default_expire(),
            api_url: default_api_url(),
            template: None,
            timeout: http::default_timeout(),
            rate_limit: None,
        }
    }

    #[test]
    fn emergency_timings_are_checked() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.retry = Duration::from_secs(29);
        assert!(c.validate().unwrap_err().to_string().starts_with("retry:"));
        let mut c = config();
        c.expire = Duration::from_secs(10_801);
        assert!(c.validate().unwrap_err().to_string().starts_with("expire:"));
        let mut c = config();
        c.url = Some("x".repeat(513));
        assert!(c.validate().unwrap_err().to_string().starts_with("url:"));
    }

    #[test]
    fn only_critical_is_an_emergency() {
        let mut c = config();
        c.emergency = true;
        let mut alert = Alert::sample();
        alert.severity = Severity::Critical;
        let form = c.form(&alert, "t", "u");
        assert!(form.contains(&("priority", "2".into())));
        assert!(form.contains(&("retry", "60".into())));
        assert!(form.contains(&("expire", "3600".into())));
        alert.resolve = true;
        let form = c.form(&alert, "t", "u");
        assert!(form.contains(&("priority", "-1".into())));
        assert!(!form.iter().any(|(name, _)| *name == "retry"));
        c.emergency = false;
        alert.resolve = false;
        assert_eq!(priority(&alert, false), 1);
    }

    #[test]
    fn the_body_status_decides_a_200() {
        let h = HeaderMap::new();
        let ok = StatusCode::OK;
        assert_eq!(
            classify(ok, &h, r#"{"status":1,"request":"x"}"#),
            Outcome::Delivered
        );
        assert!(matches!(
            classify(ok, &h, r#"{"status":0,"errors":["user key is invalid"]}"#),
            Outcome::Rejected { reason } if reason.contains("user key is invalid")
        ));
        assert!(matches!(classify(ok, &h, "<html>"), Outcome::Retry { .. }));
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, &h, ""),
            Outcome::Retry {
                after: Some(SERVER_ERROR_WAIT),
                reason: "HTTP 502: ".into()
            }
        );
    }
}
