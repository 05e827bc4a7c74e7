//! The Telegram sink: the Bot API's `sendMessage` (`POST {api_base}/bot<token>/sendMessage`)
//! into one chat, optionally one forum topic (`message_thread_id`) \[TG-SEND\]
//! (reference/sinks.md §6.2).
//!
//! Message (`parse_mode = "HTML"` \[TG-FMT\]): a severity emoji and the title in bold, one
//! bold-labelled line per field (host, user, command, exit status, repeats, kind, rule), the
//! summary (or the sink's template), and the first lines of the body in `<pre>` — see
//! [`present::html`]. Link previews are off by default (`disable_web_page_preview`, sent as
//! `link_preview_options.is_disabled`, which replaced the old parameter in Bot API 7.0
//! \[TG-SEND\]).
//!
//! Dispatch's notifications: a digest keeps the title ("12 problems: …"), fields and summary
//! and lists its members (host, command, `×count`, first–last time) in place of the excerpt,
//! then "… and N more"; a recovery is labelled `RESOLVED` with a check mark and leaves out
//! the excerpt; a reminder shows a "Repeats" line.
//!
//! Guarantees:
//! - Mail text cannot format, link or break the message: `&`, `<`, `>` and `"` are escaped in
//!   every string \[TG-FMT\], so the only tags are ours (`<b>`, `<pre>`), always balanced.
//! - The text is at most 4,096 characters after entity parsing \[TG-SEND\]: herald counts the
//!   HTML as sent, tags and entities included, in UTF-16 code units (how Telegram counts), so
//!   the parsed text is always within it; cuts fall between characters and escapes, marked
//!   `…`.
//! - The bot token is in the URL path: the URL is kept as a [`http::SecretUrl`], every
//!   transport error is stripped of its URL, and Telegram's error bodies never echo it, so it
//!   is never in an outcome, a log line or [`Config::render`] output.
//! - 2xx with `ok: true` is delivered; 429 is retried after the body's
//!   `parameters.retry_after` (or `Retry-After`) \[TG-ERR\]; 400 (chat not found, bad
//!   markup), 401 (bad token) and 403 (bot blocked or removed) are rejected with Telegram's
//!   `description` — a group upgraded to a supergroup names its new `chat_id`
//!   (`migrate_to_chat_id`); 5xx retried.
//! - Paced at 20 messages per minute by default, Telegram's limit for one group \[TG-FAQ\].
//!
//! \[TG-SEND\]: core.telegram.org/bots/api#sendmessage (`chat_id`, `message_thread_id`,
//! `text` 1–4096 characters after entities parsing, `parse_mode`, `link_preview_options`).
//! \[TG-FMT\]: core.telegram.org/bots/api#formatting-options (HTML style: `<b>`, `<pre>`; only
//! `&lt;`, `&gt;`, `&amp;` and `&quot;` named entities).
//! \[TG-ERR\]: core.telegram.org/bots/api#making-requests and #responseparameters (`ok`,
//! `error_code`, `description`, `parameters.retry_after`, `parameters.migrate_to_chat_id`).
//! \[TG-FAQ\]: core.telegram.org/bots/faq ("no more than 20 messages per minute" in a group,
//! about one per second in a chat).

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{self, Endpoint};
use crate::present::{self, HtmlLimits};
use crate::ratelimit::{self, Rate, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::template::Template;
use crate::text::one_line;
use crate::{Alert, Outcome, Secret, Severity, Sink, SinkError};

/// The Bot API's base \[TG-SEND\]; a self-hosted Bot API server has its own.
pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";
/// `text`: 4096 characters after entities parsing \[TG-SEND\].
pub const TEXT_UNITS: usize = 4096;
/// The title line: a notification's worth.
pub const TITLE_UNITS: usize = 256;
/// One field's value: room for a long command while seven fields stay under half the text.
pub const FIELD_UNITS: usize = 300;
/// The summary or template output: leaves the rest to the excerpt or a digest's members.
pub const MAIN_UNITS: usize = 1000;
/// 20 messages per minute, Telegram's limit for a group \[TG-FAQ\].
pub const DEFAULT_RATE: Rate = Rate::new(20, Duration::from_secs(60));

/// What [`payload`] lets the text take.
const LIMITS: HtmlLimits = HtmlLimits {
    // The emoji and a space go before the HTML.
    total: TEXT_UNITS - 3,
    title: TITLE_UNITS,
    field: FIELD_UNITS,
    main: MAIN_UNITS,
    cost: present::utf16_units,
};

/// A chat: its numeric ID (`-1001234567890`) or a channel's `@username` \[TG-SEND\].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ChatId {
    /// A numeric ID (groups and supergroups are negative).
    Id(i64),
    /// `@channelusername`, or a numeric ID written as a string.
    Name(String),
}

/// `type = "telegram"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bot's token from @BotFather, `123456:ABC-…` (a secret; or `token_file`).
    pub token: Secret,
    /// The chat to post into.
    pub chat_id: ChatId,
    /// A forum supergroup's topic to post into.
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    /// Whether links in the message get no preview (default: none).
    #[serde(default = "yes")]
    pub disable_web_page_preview: bool,
    /// The Bot API's base URL (a self-hosted Bot API server, or a test fake).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// A minijinja template replacing the summary (see [`crate::template`]); its strings
    /// arrive HTML-escaped, so it may use Telegram's HTML tags.
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(
        default = "http::default_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub timeout: Duration,
    /// Client-side pacing; default `"20/m"` \[TG-FAQ\]; `"off"` to disable.
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

fn yes() -> bool {
    true
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_owned()
}

impl Config {
    /// `{api_base}/bot{token}/sendMessage`.
    fn endpoint(&self) -> Result<reqwest::Url, SinkError> {
        let token = self.token.expose();
        // The token goes into the path: a `/`, `?` or `#` would move it into another part
        // of the URL (and a log line). Telegram's tokens are `<digits>:<base64url>`.
        let valid = token.split_once(':').is_some_and(|(id, secret)| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !secret.is_empty()
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !valid {
            return Err(SinkError::Invalid {
                key: "token",
                message: "must be the bot's token from @BotFather (<digits>:<letters>)".into(),
            });
        }
        crate::webhook::http_url("api_base", &Secret::new(self.api_base.clone()))?;
        let url = format!(
            "{}/bot{token}/sendMessage",
            self.api_base.trim_end_matches('/')
        );
        crate::webhook::http_url("api_base", &Secret::new(url))
    }
}

impl SinkKind for Config {
    const TYPE: &'static str = "telegram";

    type Sink = Telegram;

    /// Checks the token, chat and base URL without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        self.endpoint()?;
        if let ChatId::Name(name) = &self.chat_id {
            let numeric = name
                .strip_prefix('-')
                .unwrap_or(name)
                .bytes()
                .all(|b| b.is_ascii_digit());
            let username = name.strip_prefix('@').is_some_and(|u| {
                !u.is_empty() && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            if name.is_empty() || !(numeric || username) {
                return Err(SinkError::Invalid {
                    key: "chat_id",
                    message: "must be a chat's numeric ID or a channel's @username".into(),
                });
            }
        }
        Ok(())
    }

    /// The request body for `alert`, as sent (the token travels in the URL, not here).
    fn render(&self, alert: &Alert) -> Value {
        payload(alert, &self.target(), self.template.as_ref())
    }

    fn build(&self) -> Result<Telegram, SinkError> {
        Telegram::new(self)
    }

    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        vec![Fixture::secret(json!({
            "token": format!("123456:{mark}telegram"),
            "chat_id": -1001234567890i64,
            "api_base": base_url,
            "rate_limit": "off",
        }))]
    }
}

/// Where a message goes and how, from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The chat.
    pub chat_id: ChatId,
    /// The forum topic, if any.
    pub message_thread_id: Option<i64>,
    /// No link previews.
    pub disable_web_page_preview: bool,
}

impl Config {
    fn target(&self) -> Target {
        Target {
            chat_id: self.chat_id.clone(),
            message_thread_id: self.message_thread_id,
            disable_web_page_preview: self.disable_web_page_preview,
        }
    }
}

fn emoji(alert: &Alert) -> &'static str {
    if alert.resolve {
        return "✅";
    }
    match alert.severity {
        Severity::Critical => "🚨",
        Severity::Warning => "⚠️",
        Severity::Info => "ℹ️",
    }
}

/// The `sendMessage` body for `alert`.
pub fn payload(alert: &Alert, target: &Target, template: Option<&Template>) -> Value {
    let html = present::html(alert, template, "telegram", LIMITS, "\n");
    let mut message = json!({
        "chat_id": target.chat_id,
        "text": format!("{} {html}", emoji(alert)),
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": target.disable_web_page_preview},
    });
    if let (Some(thread), Some(object)) = (target.message_thread_id, message.as_object_mut()) {
        object.insert("message_thread_id".into(), json!(thread));
    }
    message
}

/// Classifies a Bot API answer: 2xx delivered (unless the body says `ok: false`); 429
/// retried after `parameters.retry_after` or `Retry-After`; otherwise the default table, with
/// Telegram's `description` as the reason \[TG-ERR\].
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    #[derive(Deserialize)]
    struct Answer {
        ok: bool,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        parameters: Option<Parameters>,
    }
    #[derive(Deserialize)]
    struct Parameters {
        #[serde(default)]
        retry_after: Option<f64>,
        #[serde(default)]
        migrate_to_chat_id: Option<i64>,
    }
    let answer = serde_json::from_str::<Answer>(body).ok();
    let detail = match &answer {
        Some(Answer {
            description: Some(description),
            parameters,
            ..
        }) => {
            let mut detail = one_line(description, 300);
            if let Some(chat) = parameters.as_ref().and_then(|p| p.migrate_to_chat_id) {
                detail.push_str(&format!(" (the group is now chat_id {chat})"));
            }
            detail
        }
        _ => http::excerpt(body),
    };
    if status.is_success() {
        return match answer {
            Some(Answer { ok: false, .. }) => Outcome::Rejected {
                reason: format!("Telegram error: {detail}"),
            },
            _ => Outcome::Delivered,
        };
    }
    let hint = answer
        .and_then(|a| a.parameters)
        .and_then(|p| p.retry_after)
        .and_then(http::secs_f64);
    http::classify_hinted(status, headers, &detail, hint)
}

/// Posts alerts to one Telegram chat.
#[derive(Debug)]
pub struct Telegram {
    endpoint: Endpoint,
    /// Holds the token.
    url: http::SecretUrl,
    target: Target,
    template: Option<Template>,
}

impl Telegram {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Telegram, SinkError> {
        config.validate()?;
        let rate = ratelimit::effective(config.rate_limit, Some(DEFAULT_RATE));
        Ok(Telegram {
            endpoint: Endpoint::new(config.timeout, rate)?,
            url: http::SecretUrl(config.endpoint()?),
            target: config.target(),
            template: config.template.clone(),
        })
    }
}

impl Sink for Telegram {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let body = payload(alert, &self.target, self.template.as_ref());
            self.endpoint
                .post_json(&self.url, &HeaderMap::new(), &body, classify)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(token: &str, chat: ChatId) -> Config {
        Config {
            token: Secret::new(token),
            chat_id: chat,
            message_thread_id: None,
            disable_web_page_preview: true,
            api_base: default_api_base(),
            template: None,
            timeout: http::default_timeout(),
            rate_limit: None,
        }
    }

    #[test]
    fn token_and_chat_are_checked() {
        let ok = config("123456:AAE_x-y", ChatId::Id(-100));
        assert!(ok.validate().is_ok());
        assert_eq!(
            ok.endpoint().unwrap().path(),
            "/bot123456:AAE_x-y/sendMessage"
        );
        for token in ["", "123456", "abc:def", "1:a/b", "1:a?b", "1:a b", "1:"] {
            let error = config(token, ChatId::Id(1)).validate().unwrap_err();
            assert!(error.to_string().starts_with("token:"), "{token:?}");
        }
        for chat in ["@ops_alerts", "-1001234", "42"] {
            assert!(config("1:a", ChatId::Name(chat.into())).validate().is_ok());
        }
        for chat in ["", "@", "ops", "@a b", "--1"] {
            assert!(
                config("1:a", ChatId::Name(chat.into())).validate().is_err(),
                "{chat:?}"
            );
        }
    }

    #[test]
    fn markup_from_mail_is_escaped() {
        let mut alert = Alert::sample();
        alert.title = "<b>x</b> & <a href=\"https://evil\">y</a>".into();
        alert.body = "</pre><b>bold</b>".into();
        let target = config("1:a", ChatId::Id(1)).target();
        let text = payload(&alert, &target, None)["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(text.contains("&lt;b&gt;x&lt;/b&gt; &amp; &lt;a href=&quot;https://evil&quot;"));
        assert_eq!(text.matches("<b>").count(), text.matches("</b>").count());
        assert_eq!(text.matches("<pre>").count(), 1);
        assert_eq!(text.matches("</pre>").count(), 1, "{text}");
    }

    #[test]
    fn retry_after_comes_from_the_body() {
        let body = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 15","parameters":{"retry_after":15}}"#;
        let outcome = classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body);
        assert_eq!(
            outcome,
            Outcome::Retry {
                after: Some(Duration::from_secs(15)),
                reason: "HTTP 429: Too Many Requests: retry after 15".into()
            }
        );
        let body = r#"{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-1001}}"#;
        let outcome = classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
        assert!(
            matches!(&outcome, Outcome::Rejected { reason } if reason.ends_with("(the group is now chat_id -1001)")),
            "{outcome:?}"
        );
        let outcome = classify(StatusCode::OK, &HeaderMap::new(), r#"{"ok":false}"#);
        assert!(matches!(outcome, Outcome::Rejected { .. }));
    }
}
