//! The Slack sink: an incoming webhook (`webhook_url`) or a bot token (`token` + `channel`)
//! posting with `chat.postMessage` (reference/sinks.md §1).
//!
//! Message: a notification `text` (severity emoji + title), a `header` block with the title, a
//! `section` of labelled fields (host, user, command, exit status, repeats, kind, rule), a
//! `section` with the summary (or the sink's template) and a `section` with the first lines of
//! the body in a code block. `unfurl_links`/`unfurl_media` are off; `link_names` and `parse`
//! are never sent.
//!
//! Dispatch's notifications (see [`crate::present`]):
//! - A digest keeps the header (dispatch's title, "12 problems: …"), fields and summary, and
//!   lists its members in place of the body excerpt: one `section` with a line per member
//!   (host, command, `×count`, first–last time), as many as fit the section's 3000
//!   characters, then "… and N more" (with a template too: the list follows its text).
//! - A recovery is labelled `RESOLVED` with a check-mark emoji (blocks have no colour) and
//!   leaves out the body excerpt: the message says what recovered, not the mail's details.
//! - A reminder shows a "Repeats" field ("37 since 03:00").
//!
//! Guarantees:
//! - Mail text cannot format: the fields, the summary and a digest's list are `plain_text`
//!   objects (mrkdwn has no escape for `*`, `_`, `~` \[SL-FMT-NOESC\]); only the body
//!   excerpt is mrkdwn, inside a code block, which Slack does not format.
//! - Mail text cannot mention or link: `&`, `<`, `>` are escaped in every string \[SL-FMT\],
//!   so `<!channel>`, `<@U…>`, `<!subteam^…>` cannot form, and without `link_names`/`parse`
//!   a literal `@channel` stays text \[SL-FMT-OLD\]. Backtick runs are broken with a
//!   zero-width space, so mail cannot close the code block early.
//! - Every block is within Slack's limits (header 150, section 3000, ≤10 fields) and the whole
//!   message stays under ~12,000 characters, the observed `msg_blocks_too_long` threshold
//!   \[SL-BOLT2509\]; cuts fall between characters and between escapes, marked with `…`.
//! - Paced at 1 message/s by default \[SL-RL\]; a 429's `Retry-After` holds the next request.
//! - The webhook URL and token are secrets: never in outcomes, logs or [`Config::render`] output.
//! - Bot mode reads the body: HTTP 200 with `"ok": false` is a failure \[SL-WEB\]; only
//!   rate-limit and internal errors are retried \[SL-APIREF\].

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{self, Endpoint};
use crate::ratelimit::{self, Rate, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::template::Template;
use crate::text::{fit_chars, one_line};
use crate::{present, Alert, Outcome, Secret, Severity, Sink, SinkError};

/// Slack's Web API base \[SL-PM\].
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
/// `header` block text: 150 characters \[SL-HDR\].
pub const HEADER_CHARS: usize = 150;
/// `section` text: 3000 characters \[SL-SEC\].
pub const SECTION_CHARS: usize = 3000;
/// One `section.fields` item: Slack allows 2000 \[SL-SEC\]; 300 keeps six fields well inside
/// the whole-message budget.
pub const FIELD_CHARS: usize = 300;
/// `section.fields`: at most 10 items \[SL-SEC\].
pub const MAX_FIELDS: usize = 10;
/// The notification `text`: Slack truncates at 40,000 \[SL-APIREF\]; it is only the one-line
/// fallback here, so a title's worth is enough.
pub const TEXT_CHARS: usize = 300;
/// All block text together: ~13k failed in practice \[SL-BOLT2509\]; the blocks above add up to
/// at most 150 + 7×(300+20) + 2×3000 ≈ 8,400 (a digest's list takes the excerpt's section).
pub const MESSAGE_CHARS: usize = 12_000;
/// Slack's documented 1 message/s for webhooks and per channel for chat.postMessage \[SL-RL\].
pub const DEFAULT_RATE: Rate = Rate::new(1, Duration::from_secs(1));

/// `type = "slack"`: give `webhook_url`, or `token` and `channel`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An incoming-webhook URL (a secret: it is the credential).
    #[serde(default)]
    pub webhook_url: Option<Secret>,
    /// A bot token (`xoxb-…`) with `chat:write`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// The channel for bot mode: an ID (`C…`, preferred) or a name.
    #[serde(default)]
    pub channel: Option<String>,
    /// The Web API base for bot mode.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// A minijinja template replacing the summary and excerpt sections (see
    /// [`crate::template`]); its strings arrive Slack-escaped, so it may use mrkdwn.
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Client-side pacing; default `"1/s"` \[SL-RL\]; `"off"` to disable.
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

/// 10 s: Slack answers in well under a second; the attempt is retried anyway.
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where a validated config sends.
enum Mode<'c> {
    Webhook(&'c Secret),
    Bot { token: &'c Secret, channel: &'c str },
}

impl Config {
    fn mode(&self) -> Result<Mode<'_>, SinkError> {
        match (&self.webhook_url, &self.token, &self.channel) {
            (Some(url), None, None) => Ok(Mode::Webhook(url)),
            (None, Some(token), Some(channel)) if !channel.trim().is_empty() => {
                Ok(Mode::Bot { token, channel })
            }
            (None, Some(_), _) => Err(SinkError::Invalid {
                key: "channel",
                message: "bot mode (`token`) needs a channel".into(),
            }),
            (Some(_), None, Some(_)) => Err(SinkError::Invalid {
                key: "channel",
                message: "an incoming webhook posts to the channel chosen when it was \
                          installed; `channel` applies only with `token`"
                    .into(),
            }),
            (Some(_), Some(_), _) => Err(SinkError::Invalid {
                key: "token",
                message: "give either `webhook_url` or `token`, not both".into(),
            }),
            (None, None, _) => Err(SinkError::Invalid {
                key: "webhook_url",
                message: "give `webhook_url`, or `token` and `channel`".into(),
            }),
        }
    }
}

impl SinkKind for Config {
    const TYPE: &'static str = "slack";

    type Sink = Slack;

    /// Checks the mode, URLs and token without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        match self.mode()? {
            Mode::Webhook(url) => {
                crate::webhook::http_url("webhook_url", url)?;
            }
            Mode::Bot { token, .. } => {
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| SinkError::Invalid {
                        key: "token",
                        message: "not a valid token".into(),
                    })?;
                api_endpoint(&self.api_url)?;
            }
        }
        Ok(())
    }

    /// The request body for `alert`, as sent (the token travels in a header, not here).
    fn render(&self, alert: &Alert) -> Value {
        let channel = match self.mode() {
            Ok(Mode::Bot { channel, .. }) => Some(channel),
            _ => None,
        };
        payload(alert, channel, self.template.as_ref())
    }

    fn build(&self) -> Result<Slack, SinkError> {
        Slack::new(self)
    }

    /// An incoming webhook and a bot token.
    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        let url = format!("{base_url}/services/T000/B000/{mark}slack");
        let token = format!("xoxb-{mark}bot");
        [
            json!({"webhook_url": url, "rate_limit": "off"}),
            json!({"token": token, "channel": "C1", "api_url": format!("{base_url}/api"), "rate_limit": "off"}),
        ]
        .map(Fixture::secret)
        .into()
    }
}

fn api_endpoint(api_url: &str) -> Result<reqwest::Url, SinkError> {
    let url = format!("{}/chat.postMessage", api_url.trim_end_matches('/'));
    crate::webhook::http_url("api_url", &Secret::new(url))
}

/// Slack's three control characters, escaped in this order \[SL-FMT\]; backtick runs broken.
fn escape(ch: char, out: &mut String) {
    match ch {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        _ => crate::text::escape_backticks(ch, out),
    }
}

fn escaped(text: &str) -> String {
    fit_chars(text, usize::MAX, escape)
}

fn emoji(alert: &Alert) -> &'static str {
    if alert.resolve {
        return ":white_check_mark:";
    }
    match alert.severity {
        Severity::Critical => ":rotating_light:",
        Severity::Warning => ":warning:",
        Severity::Info => ":information_source:",
    }
}

/// The message for `alert`: `channel` set for bot mode, `template` replacing the main text.
pub fn payload(alert: &Alert, channel: Option<&str>, template: Option<&Template>) -> Value {
    let title = one_line(&alert.title, usize::MAX);
    let label = present::severity_label(alert);
    let text = fit_chars(
        &format!("{} {label}: {title}", emoji(alert)),
        TEXT_CHARS,
        escape,
    );
    let mut blocks = vec![json!({
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": fit_chars(&format!("{label}: {title}"), HEADER_CHARS, escape),
            "emoji": true,
        },
    })];
    let fields: Vec<Value> = present::fields(alert)
        .into_iter()
        .take(MAX_FIELDS)
        .map(|(name, value)| {
            let value = fit_chars(&one_line(&value, usize::MAX), FIELD_CHARS, escape);
            plain(format!("{name}: {value}"))
        })
        .collect();
    blocks.push(json!({"type": "section", "fields": fields}));
    let templated = template.and_then(|t| t.render_or_default("slack", alert, &escaped));
    match templated {
        Some(main) if !main.trim().is_empty() => {
            blocks.push(section(fit_chars(
                &main,
                SECTION_CHARS,
                crate::text::no_escape,
            )));
        }
        _ => {
            if !alert.summary.trim().is_empty() {
                let summary = fit_chars(&alert.summary, SECTION_CHARS, escape);
                blocks.push(json!({"type": "section", "text": plain(summary)}));
            }
            // A digest's body is not its members' (its list follows); a recovery's is noise.
            let excerpt = present::excerpt(alert);
            if !excerpt.is_empty() && alert.digest.is_empty() && !alert.resolve {
                // "```\n" + "\n```" take 8 of the section's characters.
                let inner = fit_chars(&excerpt, SECTION_CHARS - 8, escape);
                blocks.push(section(format!("```\n{inner}\n```")));
            }
        }
    }
    let (members, _) = present::digest_lines(alert, usize::MAX, SECTION_CHARS, escape);
    if !members.is_empty() {
        blocks.push(json!({"type": "section", "text": plain(members.join("\n"))}));
    }
    let mut message = json!({
        "text": text,
        "blocks": blocks,
        "mrkdwn": true,
        "unfurl_links": false,
        "unfurl_media": false,
    });
    if let (Some(channel), Some(object)) = (channel, message.as_object_mut()) {
        object.insert("channel".into(), Value::String(channel.to_owned()));
    }
    message
}

/// A `section` in mrkdwn: for the code-block excerpt (mrkdwn does not format inside a code
/// block, and its backtick runs are broken) and the operator's own template.
fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// A `plain_text` object: mail text shown as written. mrkdwn has no escape for `*`, `_`, `~`
/// or backticks \[SL-FMT-NOESC\], so mail text outside the code block goes here, where
/// none of them formats (the three-character escape still applies \[SL-FMT\]).
fn plain(text: String) -> Value {
    json!({"type": "plain_text", "text": text, "emoji": false})
}

/// Classifies an incoming-webhook answer: 2xx (body `ok`) delivered; otherwise the default
/// status table, with Slack's plain-text error (`invalid_payload`, `channel_not_found`, …) as
/// the reason \[SL-WHERR\].
pub fn classify_webhook(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    http::classify_status(status, headers, body)
}

/// Slack API errors worth retrying: rate limits and Slack's own failures \[SL-APIREF\].
const TRANSIENT_ERRORS: &[&str] = &[
    "ratelimited",
    "rate_limited",
    "fatal_error",
    "internal_error",
    "service_unavailable",
    "request_timeout",
];

/// Classifies a `chat.postMessage` answer: non-2xx by the default table; 2xx by the body's
/// `ok` (HTTP 200 with `"ok": false` is an error \[SL-WEB\]).
pub fn classify_api(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    if !status.is_success() {
        return http::classify_status(status, headers, body);
    }
    #[derive(Deserialize)]
    struct Answer {
        ok: bool,
        #[serde(default)]
        error: Option<String>,
    }
    match serde_json::from_str::<Answer>(body) {
        Ok(Answer { ok: true, .. }) => Outcome::Delivered,
        Ok(Answer { error, .. }) => {
            let error = error.unwrap_or_else(|| "unknown error".into());
            let reason = format!("Slack error: {}", one_line(&error, 100));
            if TRANSIENT_ERRORS.contains(&error.as_str()) {
                Outcome::Retry {
                    after: http::retry_after(headers, SystemTime::now()),
                    reason,
                }
            } else {
                Outcome::Rejected { reason }
            }
        }
        // A 200 that is not Slack's envelope (a proxy's page): the post is unconfirmed.
        Err(_) => Outcome::Retry {
            after: None,
            reason: format!("unreadable answer: {}", http::excerpt(body)),
        },
    }
}

/// Posts alerts to Slack.
#[derive(Debug)]
pub struct Slack {
    endpoint: Endpoint,
    url: http::SecretUrl,
    /// `Some` in bot mode: the `Authorization` header value (sensitive).
    auth: Option<reqwest::header::HeaderValue>,
    channel: Option<String>,
    template: Option<Template>,
}

impl Slack {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Slack, SinkError> {
        config.validate()?;
        let (url, auth, channel) = match config.mode()? {
            Mode::Webhook(url) => (crate::webhook::http_url("webhook_url", url)?, None, None),
            Mode::Bot { token, channel } => {
                let mut auth =
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                        .map_err(|_| SinkError::Invalid {
                        key: "token",
                        message: "not a valid token".into(),
                    })?;
                auth.set_sensitive(true);
                (
                    api_endpoint(&config.api_url)?,
                    Some(auth),
                    Some(channel.to_owned()),
                )
            }
        };
        let rate = ratelimit::effective(config.rate_limit, Some(DEFAULT_RATE));
        Ok(Slack {
            endpoint: Endpoint::new(config.timeout, rate)?,
            url: http::SecretUrl(url),
            auth,
            channel,
            template: config.template.clone(),
        })
    }
}

impl Sink for Slack {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let body = payload(alert, self.channel.as_deref(), self.template.as_ref());
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let request = self
                .endpoint
                .client
                .post(self.url.0.clone())
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .body(body);
            match &self.auth {
                Some(auth) => {
                    let request = request.header(AUTHORIZATION, auth.clone());
                    self.endpoint.attempt(request, classify_api).await
                }
                None => self.endpoint.attempt(request, classify_webhook).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook_config() -> Config {
        Config {
            webhook_url: Some(Secret::new("https://hooks.slack.com/services/T0/B0/SECRET")),
            token: None,
            channel: None,
            api_url: default_api_url(),
            template: None,
            timeout: default_timeout(),
            rate_limit: None,
        }
    }

    #[test]
    fn modes_are_exclusive() {
        assert!(webhook_config().validate().is_ok());
        let mut c = webhook_config();
        c.channel = Some("C1".into());
        assert!(c.validate().is_err());
        c.token = Some(Secret::new("xoxb-1"));
        assert!(c.validate().is_err(), "both url and token");
        c.webhook_url = None;
        assert!(c.validate().is_ok());
        c.channel = None;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("channel:"));
        c.token = None;
        assert!(c.validate().is_err());
    }

    #[test]
    fn escapes_slack_control_characters() {
        let mut a = Alert::sample();
        a.title = "<!channel> & <@U123> ```".into();
        let p = payload(&a, None, None);
        let text = p.to_string();
        assert!(!text.contains("<!channel>") && !text.contains("<@U123>"));
        assert!(text.contains("&lt;!channel&gt; &amp; &lt;@U123&gt;"));
        assert!(!text.contains("link_names") && !text.contains("\"parse\""));
    }

    #[test]
    fn api_body_decides() {
        let h = HeaderMap::new();
        let ok = StatusCode::OK;
        assert_eq!(
            classify_api(ok, &h, r#"{"ok":true,"ts":"1"}"#),
            Outcome::Delivered
        );
        assert!(matches!(
            classify_api(ok, &h, r#"{"ok":false,"error":"channel_not_found"}"#),
            Outcome::Rejected { reason } if reason.contains("channel_not_found")
        ));
        assert!(matches!(
            classify_api(ok, &h, r#"{"ok":false,"error":"ratelimited"}"#),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify_api(ok, &h, "<html>"),
            Outcome::Retry { .. }
        ));
    }
}
