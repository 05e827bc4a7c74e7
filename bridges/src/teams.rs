//! The Microsoft Teams sink: POSTs an Adaptive Card to a Workflows webhook (the Power
//! Automate / Teams Workflows template "Post to a channel when a webhook request is
//! received") \[TEAMS-WF\] (reference/sinks.md §6.2).
//!
//! The Office 365 connectors behind Teams' old "Incoming Webhook" URLs
//! (`…webhook.office.com/webhookb2/…`) are retired by Microsoft \[TEAMS-DEP\]; create a
//! Workflows webhook instead (its URL is on `…logic.azure.com…` or `…powerplatform.com…` and
//! carries its signature, `sig=`, so the URL is the credential).
//!
//! Body: `{"type": "message", "attachments": [{"contentType":
//! "application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard 1.4>}]}` \[TEAMS-WF\].
//! The card: the severity label and title in bold, coloured by severity (attention, warning,
//! accent; good for a recovery); a `FactSet` of the fields (host, user, command, exit status,
//! repeats, kind, rule); the summary (or the sink's template); and the first lines of the
//! body in monospace. `msteams.width = "Full"` lets the card use the channel's width.
//!
//! Dispatch's notifications: a digest keeps the title ("12 problems: …"), facts and summary
//! and lists its members (host, command, `×count`, first–last time) in place of the excerpt,
//! then "… and N more"; a recovery is labelled `RESOLVED`, coloured good and leaves out the
//! excerpt; a reminder shows a "Repeats" fact.
//!
//! Guarantees:
//! - Mail text cannot format or link: text is in `TextRun`s, which parse no Markdown
//!   \[AC-RUN\]; fact titles and values (which Teams renders as Markdown \[TEAMS-FMT\]) have
//!   every Markdown character (`\ * _ ~ `` ` `` [ ] < >`) backslash-escaped; and every `{`
//!   is followed by a zero-width space, so mail cannot form an Adaptive Cards `{{DATE(…)}}`
//!   function \[AC-TEXT\].
//! - The whole body stays under Teams' 28 KB message limit \[TEAMS-LIM\]: every text is cut
//!   to a byte budget as serialized, the budgets adding up to [`BODY_BYTES`] with the card's
//!   markup; cuts fall between characters and escapes, marked `…`.
//! - 2xx (Workflows answers 202: the flow accepted the request and posts on its own) is
//!   delivered; 429 is retried after `Retry-After`; 400 (a card the flow cannot parse), 401/403
//!   (a bad or revoked signature), 404 (the flow is gone) and other 4xx are rejected with the
//!   service's error `code` and `message`; 5xx retried.
//! - Paced at 4 requests/s by default, above which Teams webhooks are throttled
//!   \[TEAMS-LIM\].
//! - The webhook URL is a secret: never in an outcome, a log line or [`Config::render`] output.
//!
//! \[TEAMS-WF\]: learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/add-incoming-webhook
//! (Workflows: "Post to a channel when a webhook request is received"; the `message` with an
//! Adaptive Card attachment).
//! \[TEAMS-DEP\]: MicrosoftDocs/msteams-docs `msteams-platform/includes/deprecation-note.md`
//! (retirement of Office 365 connectors within Teams).
//! \[TEAMS-LIM\]: the same page and learn.microsoft.com/connectors/teams ("the message size
//! limit is 28 KB"; throttling past four requests per second).
//! \[TEAMS-FMT\]: learn.microsoft.com/microsoftteams/platform/task-modules-and-cards/cards/cards-format
//! (Markdown in `TextBlock`, `Fact.Title` and `Fact.Value`; no HTML).
//! \[AC-RUN\]: learn.microsoft.com/adaptive-cards/schema-explorer/text-run ("Markdown is not
//! supported"; version 1.2).
//! \[AC-TEXT\]: learn.microsoft.com/adaptive-cards/authoring-cards/text-features (the
//! CommonMark subset; `{{DATE()}}` and `{{TIME()}}`).

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{self, Endpoint};
use crate::present;
use crate::ratelimit::{self, Rate, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::template::Template;
use crate::text::{fit, one_line, ZWSP};
use crate::{Alert, Outcome, Secret, Severity, Sink, SinkError};

/// The body, serialized: Teams' 28 KB less a margin for what the flow wraps around it
/// \[TEAMS-LIM\].
pub const BODY_BYTES: usize = 24_000;
/// The title, as serialized.
pub const TITLE_BYTES: usize = 600;
/// One fact's value, as serialized.
pub const FACT_BYTES: usize = 600;
/// The summary or template output, as serialized.
pub const MAIN_BYTES: usize = 4000;
/// The Adaptive Card schema version: 1.4, which Teams renders everywhere \[TEAMS-FMT\].
pub const CARD_VERSION: &str = "1.4";
/// Four requests per second, past which Teams throttles a webhook \[TEAMS-LIM\].
pub const DEFAULT_RATE: Rate = Rate::new(4, Duration::from_secs(1));
/// What a card of no text costs: the envelope, the card and its elements' markup (measured:
/// about 600 bytes, plus some 100 per line element and 50 per fact).
const MARKUP_BYTES: usize = 1000;
/// A line's markup in the card (a `RichTextBlock` holding one `TextRun`).
const LINE_MARKUP_BYTES: usize = 110;
/// A fact's markup (`{"title": …, "value": …}` and its name).
const FACT_MARKUP_BYTES: usize = 60;

/// `type = "teams"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Workflows webhook URL (a secret: its `sig=` is the credential; or
    /// `webhook_url_file`).
    pub webhook_url: Secret,
    /// A minijinja template replacing the summary (see [`crate::template`]); plain text.
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(
        default = "http::default_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub timeout: Duration,
    /// Client-side pacing; default `"4/s"` \[TEAMS-LIM\]; `"off"` to disable.
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

impl SinkKind for Config {
    const TYPE: &'static str = "teams";

    type Sink = Teams;

    /// Checks the URL without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        crate::webhook::http_url("webhook_url", &self.webhook_url)?;
        Ok(())
    }

    /// The request body for `alert`, as sent.
    fn render(&self, alert: &Alert) -> Value {
        payload(alert, self.template.as_ref())
    }

    fn build(&self) -> Result<Teams, SinkError> {
        Teams::new(self)
    }

    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        vec![Fixture::secret(json!({
            "webhook_url": format!(
                "{base_url}/workflows/1/triggers/manual/paths/invoke?api-version=1&sig={mark}teams"
            ),
            "rate_limit": "off",
        }))]
    }
}

/// Breaks `{{` so that mail cannot call an Adaptive Cards function \[AC-TEXT\]; the text of a
/// `TextRun` needs nothing else \[AC-RUN\].
fn escape_run(ch: char, out: &mut String) {
    out.push(ch);
    if ch == '{' {
        out.push(ZWSP);
    }
}

/// [`escape_run`] plus a backslash before every character CommonMark's inline syntax uses,
/// for fact titles and values, which Teams renders as Markdown \[TEAMS-FMT\].
fn escape_markdown(ch: char, out: &mut String) {
    if matches!(ch, '\\' | '*' | '_' | '~' | '`' | '[' | ']' | '<' | '>') {
        out.push('\\');
    }
    escape_run(ch, out);
}

fn cut(text: &str, budget: usize, escape: fn(char, &mut String)) -> String {
    fit(text, budget, "…", escape, present::json_bytes)
}

fn bytes(text: &str) -> usize {
    text.chars().map(present::json_bytes).sum()
}

/// The card's colour for `alert`: good for a recovery, else by severity.
fn color(alert: &Alert) -> &'static str {
    if alert.resolve {
        return "Good";
    }
    match alert.severity {
        Severity::Critical => "Attention",
        Severity::Warning => "Warning",
        Severity::Info => "Accent",
    }
}

/// One line of text, never parsed as Markdown.
fn line(text: String, monospace: bool) -> Value {
    let mut run = json!({"type": "TextRun", "text": text});
    if let (true, Some(object)) = (monospace, run.as_object_mut()) {
        object.insert("fontType".into(), json!("Monospace"));
    }
    json!({"type": "RichTextBlock", "inlines": [run], "spacing": "None"})
}

/// Lines of `text` as [`line`] elements, within `budget` bytes of text and markup together.
fn lines(text: &str, budget: usize, monospace: bool, out: &mut Vec<Value>) -> usize {
    let mut used = 0;
    for raw in text.lines() {
        let room = budget.saturating_sub(used + LINE_MARKUP_BYTES);
        let text = cut(raw, room, escape_run);
        if room == 0 || (text.is_empty() && !raw.is_empty()) {
            break;
        }
        used += bytes(&text) + LINE_MARKUP_BYTES;
        out.push(line(text, monospace));
    }
    used
}

/// The Workflows body for `alert`: one message with one Adaptive Card.
pub fn payload(alert: &Alert, template: Option<&Template>) -> Value {
    let title = format!(
        "{}: {}",
        present::severity_label(alert),
        one_line(&alert.title, usize::MAX)
    );
    let title = cut(&title, TITLE_BYTES, escape_run);
    let mut used = MARKUP_BYTES + bytes(&title);
    let facts: Vec<Value> = present::fields(alert)
        .into_iter()
        .map(|(name, value)| {
            let value = cut(&value, FACT_BYTES, escape_markdown);
            used += name.len() + bytes(&value) + FACT_MARKUP_BYTES;
            json!({"title": name, "value": value})
        })
        .collect();
    // The title is a run too (bold, large, coloured), so mail's `*` stays a `*`.
    let mut body = vec![json!({
        "type": "RichTextBlock",
        "inlines": [{
            "type": "TextRun",
            "text": title,
            "weight": "Bolder",
            "size": "Medium",
            "color": color(alert),
        }],
    })];
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    let main = template
        .and_then(|t| t.render_or_default("teams", alert, &|s| s.to_owned()))
        .filter(|text| !text.trim().is_empty())
        .unwrap_or_else(|| alert.summary.clone());
    let main = crate::text::first_lines(&main, present::EXCERPT_LINES);
    used += lines(&main, MAIN_BYTES, false, &mut body);
    let room = BODY_BYTES.saturating_sub(used);
    if !alert.digest.is_empty() {
        // Each member's line costs its markup as well as its text.
        let members = alert.digest.len() + 1;
        let text_room = room.saturating_sub(members * LINE_MARKUP_BYTES);
        let listed = present::digest_within(alert, text_room, escape_run, present::json_bytes);
        body.extend(listed.into_iter().map(|text| line(text, false)));
    } else if !alert.resolve {
        lines(&present::excerpt(alert), room, true, &mut body);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": CARD_VERSION,
                "msteams": {"width": "Full"},
                "body": body,
            },
        }],
    })
}

/// Classifies a Workflows answer: 2xx (202) delivered; otherwise the default table (429
/// after `Retry-After`), with the service's `error.code` and `error.message` as the reason.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    #[derive(Deserialize)]
    struct Answer {
        error: Error,
    }
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let detail = match serde_json::from_str::<Answer>(body) {
        Ok(Answer { error }) => one_line(&format!("{}: {}", error.code, error.message), 300),
        Err(_) => http::excerpt(body),
    };
    http::classify_status_saying(status, headers, &detail)
}

/// Posts alerts to one Teams channel through a Workflows webhook.
#[derive(Debug)]
pub struct Teams {
    endpoint: Endpoint,
    url: http::SecretUrl,
    template: Option<Template>,
}

impl Teams {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Teams, SinkError> {
        config.validate()?;
        let rate = ratelimit::effective(config.rate_limit, Some(DEFAULT_RATE));
        Ok(Teams {
            endpoint: Endpoint::new(config.timeout, rate)?,
            url: http::SecretUrl(crate::webhook::http_url(
                "webhook_url",
                &config.webhook_url,
            )?),
            template: config.template.clone(),
        })
    }
}

impl Sink for Teams {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let body = payload(alert, self.template.as_ref());
            self.endpoint
                .post_json(&self.url, &HeaderMap::new(), &body, classify)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_functions_are_defused() {
        let mut escaped = String::new();
        for ch in "**b** [x](y) {{DATE(2017-02-14T06:08:00Z)}} \\".chars() {
            escape_markdown(ch, &mut escaped);
        }
        assert_eq!(
            escaped,
            format!("\\*\\*b\\*\\* \\[x\\](y) {{{ZWSP}{{{ZWSP}DATE(2017-02-14T06:08:00Z)}}}} \\\\")
        );
    }

    #[test]
    fn a_hostile_body_stays_under_the_limit() {
        let mut alert = Alert::sample();
        alert.title = "\"\\".repeat(5000);
        alert.summary = "\"{".repeat(5000);
        alert.host = Some("*_".repeat(5000));
        alert.body = format!("{}\n", "\u{1}\"é".repeat(200)).repeat(100);
        let size = serde_json::to_vec(&payload(&alert, None)).unwrap().len();
        assert!(size <= BODY_BYTES, "{size}");
    }
}
