//! The Discord sink: executes a webhook (`webhook_url`, optionally into `thread_id`, posting as
//! `username`) with one embed per alert (reference/sinks.md §2).
//!
//! Embed: the title, a description with the summary (or the sink's template) and the first
//! lines of the body in a code block, inline fields (host, user, command, exit status,
//! repeats, kind, rule), a colour by severity and a footer. Sent with `?wait=true`, so a 2xx
//! means Discord saved the message (without it a failed save still answers 204) \[DC-WH\].
//!
//! Dispatch's notifications (see [`crate::present`]):
//! - A digest keeps the title (dispatch's, "12 problems: …") and fields; its description is
//!   the summary, then a line per member (host, command, `×count`, first–last time) in place of
//!   the body excerpt, as many as fit the description's 4096 characters and the embed's 6000,
//!   then "… and N more" (with a template too: the list follows its text).
//! - A recovery is labelled `RESOLVED`, coloured green ([`COLOR_RESOLVED`]) and leaves out the
//!   body excerpt.
//! - A reminder shows a "Repeats" field ("37 since 03:00").
//!
//! Guarantees:
//! - Nothing pings: every request carries `allowed_mentions: {"parse": []}` \[DC-MSG\], and every
//!   `@` from mail is followed by a zero-width space, so `@everyone`, `@here`, `<@id>` and
//!   `<@&role>` do not even render as mentions. Backtick runs are broken the same way, so
//!   mail cannot close the code block.
//! - Mail cannot format or link: outside the code block its markdown is escaped with
//!   backslashes (`[text](https://…)` shows as typed, not as a masked link; `# heading`,
//!   `||spoiler||`, `**bold**`, `> quote` show as typed), and format characters (U+202E and
//!   the other bidi controls, zero-width characters) are dropped, see [`crate::text`].
//! - Every field is within Discord's limits (title 256, description 4096, field value 1024,
//!   footer 2048, all embed text ≤ 6000) \[DC-MSG\]; cuts are on characters, marked `…`.
//! - A 429's `retry_after` (JSON, float seconds) or `Retry-After` holds the next request, and
//!   so does `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset-After` \[DC-RL\]. A 404 means the
//!   webhook is gone and is rejected, never retried \[DC-RL\].
//! - The webhook URL (which contains the token) is never in an outcome, a log line or
//!   [`Config::render`] output.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, CONTENT_TYPE, USER_AGENT};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{self, Endpoint};
use crate::ratelimit::{self, Rate, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::template::Template;
use crate::text::{fit_chars, is_format, one_line, ZWSP};
use crate::{present, Alert, Outcome, Secret, Severity, Sink, SinkError};

/// `embed.title`: 256 characters \[DC-MSG\].
pub const TITLE_CHARS: usize = 256;
/// `embed.description`: 4096 characters \[DC-MSG\].
pub const DESCRIPTION_CHARS: usize = 4096;
/// `field.value`: Discord allows 1024 \[DC-MSG\]; 256 keeps six fields small beside the
/// description.
pub const FIELD_CHARS: usize = 256;
/// `footer.text`: Discord allows 2048 \[DC-MSG\]; ours is a short fixed line.
pub const FOOTER_CHARS: usize = 100;
/// All embed text together: 6000 characters \[DC-MSG\].
pub const EMBED_TOTAL_CHARS: usize = 6000;
/// The summary's share of the description: enough for dispatch's digest summary or a mail's
/// first lines, leaving the rest to the excerpt or a digest's members.
const SUMMARY_CHARS: usize = 1000;
/// Webhook name: 1–80 characters \[DC-WH\].
pub const USERNAME_CHARS: usize = 80;
/// Red `0x992D22`, as Alertmanager's Discord notifier uses for firing alerts \[DC-MSG\], \[AM-DC\].
pub const COLOR_CRITICAL: u32 = 0x99_2D22;
/// Orange `0xE67E22` (Discord's palette orange; our choice for warnings).
pub const COLOR_WARNING: u32 = 0xE6_7E22;
/// Grey `0x95A5A6` (Discord's palette grey; our choice for information).
pub const COLOR_INFO: u32 = 0x95_A5A6;
/// Green `0x2ECC71` (Discord's palette green \[DC-MSG\]) for a recovery, whatever its severity.
pub const COLOR_RESOLVED: u32 = 0x2E_CC71;
/// Discord's staff-stated 5 requests / 2 s per webhook \[DC-367\] (approximate; headers rule).
pub const DEFAULT_RATE: Rate = Rate::new(5, Duration::from_secs(2));
/// `DiscordBot ($url, $version)`, the form Discord asks of clients \[DC-REF\].
const DISCORD_USER_AGENT: &str = concat!(
    "DiscordBot (https://crates.io/crates/herald, ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// `type = "discord"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `https://discord.com/api/v10/webhooks/{id}/{token}` (a secret: it holds the token).
    pub webhook_url: Secret,
    /// Post into this thread of the webhook's channel (a snowflake).
    #[serde(default)]
    pub thread_id: Option<String>,
    /// Overrides the webhook's name (1–80 characters, no "clyde" or "discord").
    #[serde(default)]
    pub username: Option<String>,
    /// A minijinja template replacing the embed description (see [`crate::template`]).
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Client-side pacing; default `"5/2s"` \[DC-367\]; `"off"` to disable.
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

/// 10 s: Discord answers in well under a second; the attempt is retried anyway.
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SinkKind for Config {
    const TYPE: &'static str = "discord";

    type Sink = Discord;

    /// Checks the URL, thread and username without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        self.request_url()?;
        if let Some(thread) = &self.thread_id {
            if thread.is_empty() || thread.len() > 20 || !thread.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(SinkError::Invalid {
                    key: "thread_id",
                    message: "must be a Discord ID (digits)".into(),
                });
            }
        }
        if let Some(name) = &self.username {
            let lower = name.to_lowercase();
            let count = name.trim().chars().count();
            if count == 0 || count > USERNAME_CHARS {
                return Err(SinkError::Invalid {
                    key: "username",
                    message: format!("must be 1 to {USERNAME_CHARS} characters"),
                });
            }
            if lower.contains("clyde") || lower.contains("discord") {
                return Err(SinkError::Invalid {
                    key: "username",
                    message: "must not contain \"clyde\" or \"discord\"".into(),
                });
            }
        }
        Ok(())
    }

    /// The request body for `alert`, as sent.
    fn render(&self, alert: &Alert) -> Value {
        payload(alert, self.username.as_deref(), self.template.as_ref())
    }

    fn build(&self) -> Result<Discord, SinkError> {
        Discord::new(self)
    }

    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        vec![Fixture::secret(json!({
            "webhook_url": format!("{base_url}/api/v10/webhooks/1/{mark}discord"),
            "rate_limit": "off",
        }))]
    }
}

impl Config {
    /// The URL requested: the webhook with `?wait=true` (and `thread_id`).
    fn request_url(&self) -> Result<reqwest::Url, SinkError> {
        let mut url = crate::webhook::http_url("webhook_url", &self.webhook_url)?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("wait", "true");
            if let Some(thread) = &self.thread_id {
                query.append_pair("thread_id", thread);
            }
        }
        Ok(url)
    }
}

/// Makes mail text literal in Discord's markdown (titles, fields, the description): a
/// backslash before every character that formats or links anywhere (`*`, `_`, `~`, `|` for
/// spoilers, `[` and `]` for masked links (an escaped bracket is enough to break
/// `[text](url)`, so parentheses stay as they are), `` ` ``, `<` for `<#channel>`, `<t:…>` and
/// custom emoji, `\` itself) and before `#`, `>` and `-` at the start of a line (headings,
/// quotes, lists, `-#` subtext); Discord's markdown takes a backslash before punctuation as
/// an escape, showing the character and hiding the backslash. Mentions are defused with `@` + zero-width space (a backslash would not stop
/// `@everyone` in every client). Stateful (it tracks the start of lines), so each text gets
/// a fresh one.
fn escape() -> impl FnMut(char, &mut String) {
    let mut line_start = true;
    move |ch, out| {
        match ch {
            _ if is_format(ch) => return,
            '@' => {
                out.push('@');
                out.push(ZWSP);
            }
            '\\' | '*' | '_' | '~' | '|' | '[' | ']' | '`' | '<' => {
                out.push('\\');
                out.push(ch);
            }
            '#' | '>' | '-' if line_start => {
                out.push('\\');
                out.push(ch);
            }
            _ => out.push(ch),
        }
        line_start = ch == '\n' || (line_start && ch == ' ');
    }
}

/// For the body excerpt inside a code block, where Discord renders no markdown (a backslash
/// would show): mentions defused, backtick runs broken so mail cannot close the block.
fn escape_code(ch: char, out: &mut String) {
    if ch == '@' {
        out.push('@');
        out.push(ZWSP);
    } else {
        crate::text::escape_backticks(ch, out);
    }
}

fn escaped(text: &str) -> String {
    fit_chars(text, usize::MAX, escape())
}

/// The embed colour for an alert: green for a recovery, else by severity.
pub fn color(alert: &Alert) -> u32 {
    if alert.resolve {
        return COLOR_RESOLVED;
    }
    match alert.severity {
        Severity::Critical => COLOR_CRITICAL,
        Severity::Warning => COLOR_WARNING,
        Severity::Info => COLOR_INFO,
    }
}

/// The message for `alert`.
pub fn payload(alert: &Alert, username: Option<&str>, template: Option<&Template>) -> Value {
    let title = fit_chars(
        &format!(
            "{}: {}",
            present::severity_label(alert),
            one_line(&alert.title, usize::MAX)
        ),
        TITLE_CHARS,
        escape(),
    );
    let mut used = title.chars().count();
    let mut fields = Vec::new();
    for (name, value) in present::fields(alert) {
        let value = fit_chars(&one_line(&value, usize::MAX), FIELD_CHARS, escape());
        used += name.chars().count() + value.chars().count();
        fields.push(json!({"name": name, "value": value, "inline": name != "Command"}));
    }
    let footer = fit_chars(
        &format!("herald · {}", alert.kind.as_str()),
        FOOTER_CHARS,
        escape(),
    );
    used += footer.chars().count();
    let budget = EMBED_TOTAL_CHARS
        .saturating_sub(used)
        .min(DESCRIPTION_CHARS);
    let templated = template
        .and_then(|t| t.render_or_default("discord", alert, &escaped))
        .filter(|main| !main.trim().is_empty());
    let description = match templated {
        // A template replaces the description, but a digest still lists its members.
        Some(main) if !alert.digest.is_empty() => {
            let main = fit_chars(&main, budget.min(SUMMARY_CHARS), crate::text::no_escape);
            with_rest(main, budget, |room| members(alert, room))
        }
        Some(main) => fit_chars(&main, budget, crate::text::no_escape),
        None => default_description(alert, budget),
    };
    let mut embed = json!({
        "title": title,
        "color": color(alert),
        "fields": fields,
        "footer": {"text": footer},
    });
    if let Some(object) = embed.as_object_mut() {
        if !description.is_empty() {
            object.insert("description".into(), Value::String(description));
        }
    }
    let mut message = json!({
        "allowed_mentions": {"parse": []},
        "embeds": [embed],
    });
    if let (Some(name), Some(object)) = (username, message.as_object_mut()) {
        object.insert("username".into(), Value::String(name.to_owned()));
    }
    message
}

/// Summary, then a digest's member lines or else the excerpt in a code block (none for a
/// recovery), within `budget` characters.
fn default_description(alert: &Alert, budget: usize) -> String {
    let summary = fit_chars(&alert.summary, budget.min(SUMMARY_CHARS), escape());
    with_rest(summary, budget, |room| {
        if !alert.digest.is_empty() {
            return members(alert, room);
        }
        let excerpt = present::excerpt(alert);
        // "```\n" + "\n```" = 8 characters of fence around the excerpt.
        let room = room.saturating_sub(8);
        if excerpt.is_empty() || alert.resolve || room <= 20 {
            return String::new();
        }
        format!("```\n{}\n```", fit_chars(&excerpt, room, escape_code))
    })
}

/// `main`, then a blank line and what `rest` makes of the characters left of `budget`.
fn with_rest(main: String, budget: usize, rest: impl FnOnce(usize) -> String) -> String {
    let separator = if main.is_empty() { 0 } else { 2 };
    let part = rest(budget.saturating_sub(main.chars().count() + separator));
    if part.is_empty() {
        return main;
    }
    let mut text = main;
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(&part);
    text
}

/// A digest's member lines within `room` characters.
fn members(alert: &Alert, room: usize) -> String {
    present::digest_lines(alert, usize::MAX, room, escape())
        .0
        .join("\n")
}

/// Classifies an execute-webhook answer: 2xx delivered; 429 retried after the body's
/// `retry_after` (float seconds) or `Retry-After` \[DC-RL\]; 404 rejected (the webhook is gone,
/// and repeats get a client restricted \[DC-RL\]); the rest by the default table, with Discord's
/// `code`/`message` as the reason \[DC-CODES\].
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        code: Option<i64>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        retry_after: Option<f64>,
    }
    let parsed = serde_json::from_str::<Error>(body).ok();
    let detail = match &parsed {
        Some(Error {
            code,
            message: Some(message),
            ..
        }) => format!(
            "Discord error {}: {}",
            code.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            one_line(message, 200)
        ),
        _ => http::excerpt(body),
    };
    let reason = format!("HTTP {}: {detail}", status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS {
        let after = parsed
            .and_then(|e| e.retry_after)
            .and_then(http::secs_f64)
            .or_else(|| http::retry_after(headers, SystemTime::now()));
        return Outcome::Retry { after, reason };
    }
    if status == StatusCode::NOT_FOUND {
        return Outcome::Rejected {
            reason: format!("{reason} (the webhook is gone: reconfigure the sink)"),
        };
    }
    match http::classify_status(status, headers, body) {
        Outcome::Retry { after, .. } => Outcome::Retry { after, reason },
        _ => Outcome::Rejected { reason },
    }
}

/// Posts alerts to one Discord webhook.
#[derive(Debug)]
pub struct Discord {
    endpoint: Endpoint,
    url: http::SecretUrl,
    username: Option<String>,
    template: Option<Template>,
}

impl Discord {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Discord, SinkError> {
        config.validate()?;
        let rate = ratelimit::effective(config.rate_limit, Some(DEFAULT_RATE));
        Ok(Discord {
            endpoint: Endpoint::new(config.timeout, rate)?,
            url: http::SecretUrl(config.request_url()?),
            username: config.username.clone(),
            template: config.template.clone(),
        })
    }
}

impl Sink for Discord {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let body = payload(alert, self.username.as_deref(), self.template.as_ref());
            let request = self
                .endpoint
                .client
                .post(self.url.0.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(USER_AGENT, DISCORD_USER_AGENT)
                .body(serde_json::to_vec(&body).unwrap_or_default());
            self.endpoint.attempt(request, classify).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_never_form() {
        let mut a = Alert::sample();
        a.title = "@everyone <@123> <@&456> @here".into();
        a.body = "```\n@everyone\n```".into();
        let p = payload(&a, None, None);
        assert_eq!(p["allowed_mentions"], json!({"parse": []}));
        let text = p.to_string();
        for bad in ["@everyone", "@here", "<@123>", "<@&456>"] {
            assert!(!text.contains(bad), "{bad} in {text}");
        }
        assert_eq!(
            text.matches("```").count(),
            2,
            "only our own fences: {text}"
        );
    }

    #[test]
    fn rate_limit_body_wins() {
        let outcome = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            r#"{"message":"You are being rate limited.","retry_after":64.57,"global":false}"#,
        );
        assert!(
            matches!(outcome, Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs_f64(64.57))
        );
    }

    #[test]
    fn request_url_waits_and_targets_the_thread() {
        let config = Config {
            webhook_url: Secret::new("https://discord.com/api/v10/webhooks/1/tok"),
            thread_id: Some("42".into()),
            username: None,
            template: None,
            timeout: default_timeout(),
            rate_limit: None,
        };
        assert_eq!(
            config.request_url().unwrap().query(),
            Some("wait=true&thread_id=42")
        );
    }
}
