//! The Opsgenie sink: the Alert API v2 — `POST {api_base}/v2/alerts` to create,
//! `POST {api_base}/v2/alerts/{alias}/close?identifierType=alias` to close — with
//! `Authorization: GenieKey <api_key>` (an API integration's key) \[OG-API\]
//! (reference/sinks.md §6.2). The EU instance is `api_base = "https://api.eu.opsgenie.com"`.
//!
//! Atlassian ends Opsgenie's sales (2025-06-04) and then its support and REST API
//! (2027-04-05) \[OG-EOL\]; Jira Service Management's alerts take over.
//!
//! An alert is created with `message` = the alert's title, `alias` = the incident key,
//! `description` = [`present::plain`]'s text (summary or template, fields, body excerpt),
//! `priority` from the severity (critical P1, warning P3, info P5), `source` (the sink's
//! `source`, default `herald`), `entity` = the host, `tags` (`herald`, the kind, the sink's
//! `tags`) and `details` (host, user, command, rule, exit status, subject, …) \[OG-API\].
//!
//! Dispatch's notifications: like PagerDuty, Opsgenie keeps one alert per *group*
//! ([`Sink::tracks_incidents`]): the `alias` is [`crate::pagerduty::dedup_key`] — the
//! alert's `group_key` (else its `dedup_key`), at most 255 characters, within Opsgenie's 512
//! \[OG-FIELDS\] — so a storm grouped across hosts is one alert, Opsgenie counts repeats of an
//! open alias instead of opening another \[OG-API\], and the recovery (sent once the group's
//! last problem recovers) closes it, with a note. A digest's message is dispatch's title
//! ("12 problems: …"), its description lists the members (host, command, `×count`,
//! first–last time) and its details say `problems` and `more`. A reminder folds into the
//! open alert and shows a "Repeats" field.
//!
//! Guarantees:
//! - Within Opsgenie's limits \[OG-FIELDS\]: `message` ≤ 130 characters, `description` ≤
//!   15,000, `source` ≤ 100, `entity` ≤ 512, at most 20 tags of ≤ 50 characters, `details`
//!   ≤ 8,000 characters in all (keys and values; the least useful are left out first); cuts
//!   fall between characters, marked `…`.
//! - `message` is the one field Opsgenie renders as HTML \[OG-FIELDS\]: mail's `&`, `<`, `>`
//!   and `"` are escaped there; the other fields are plain text. The alias is one
//!   percent-encoded path segment of the close URL, so no key can reach another endpoint.
//! - The API is asynchronous: 202 (`"Request will be processed"`) is delivered \[OG-API\];
//!   429 and 5xx are retried (a 429 after its `Retry-After`); 400, 401/403 (a bad or
//!   read-only key), 404, 422 (a field rejected) and other 4xx are rejected with Opsgenie's
//!   `message` and `errors`.
//! - The API key travels only in the `Authorization` header (marked sensitive), never in an
//!   outcome, a log line or [`Config::render`] output.
//!
//! \[OG-API\]: docs.opsgenie.com/docs/alert-api (create alert, close alert with
//! `identifierType=alias`, the `GenieKey` header, 202 with a `requestId`; the EU endpoint).
//! \[OG-FIELDS\]: docs.opsgenie.com/docs/alerts-and-alert-fields (message 130, alias 512,
//! description 15,000, entity 512, 20 tags of 50, details 8,000 characters; HTML in message).
//! \[OG-EOL\]: support.atlassian.com/opsgenie (end of sale, end of support).

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http::{self, Endpoint};
use crate::present::{self, PlainLimits};
use crate::ratelimit::{self, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::template::Template;
use crate::text::{fit_chars, no_escape, one_line};
use crate::{Alert, Outcome, Secret, Severity, Sink, SinkError};

/// The Alert API's base \[OG-API\]; the EU one is `https://api.eu.opsgenie.com`.
pub const DEFAULT_API_BASE: &str = "https://api.opsgenie.com";
/// `message`: 130 characters \[OG-FIELDS\].
pub const MESSAGE_CHARS: usize = 130;
/// `description`: 15,000 characters \[OG-FIELDS\].
pub const DESCRIPTION_CHARS: usize = 15_000;
/// `source`: 100 characters \[OG-API\].
pub const SOURCE_CHARS: usize = 100;
/// `entity`: 512 characters \[OG-FIELDS\].
pub const ENTITY_CHARS: usize = 512;
/// `tags`: at most 20 \[OG-FIELDS\].
pub const MAX_TAGS: usize = 20;
/// One tag: 50 characters \[OG-FIELDS\].
pub const TAG_CHARS: usize = 50;
/// `details`, keys and values together: 8,000 characters \[OG-FIELDS\].
pub const DETAILS_CHARS: usize = 8000;
/// One detail's value: a long command's worth, so one field cannot crowd out the others.
pub const DETAIL_CHARS: usize = 1000;
/// A close request's `note`: the recovery's label and title (Opsgenie allows 25,000).
const NOTE_CHARS: usize = 1000;

const LIMITS: PlainLimits = PlainLimits {
    title: MESSAGE_CHARS,
    message: DESCRIPTION_CHARS,
    cost: present::per_char,
};

/// `type = "opsgenie"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An API integration's key (a secret; or `api_key_file`).
    pub api_key: Secret,
    /// The API's base URL: `https://api.opsgenie.com` (default) or the EU
    /// `https://api.eu.opsgenie.com`.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The alerts' `source` (at most 100 characters).
    #[serde(default = "default_source")]
    pub source: String,
    /// Tags added to every alert, after `herald` and the kind (at most 50 characters each).
    #[serde(default)]
    pub tags: Vec<String>,
    /// A minijinja template replacing the description's summary (see [`crate::template`]);
    /// plain text.
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(
        default = "http::default_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub timeout: Duration,
    /// Client-side pacing, e.g. `"10/s"`; default off (Opsgenie's limits are per plan; its
    /// 429s are honoured).
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_owned()
}

fn default_source() -> String {
    "herald".to_owned()
}

impl Config {
    /// `{api_base}/v2/alerts` followed by `segments`, each one percent-encoded path segment.
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, SinkError> {
        let mut url = crate::webhook::http_url("api_base", &Secret::new(self.api_base.clone()))?;
        url.path_segments_mut()
            .map_err(|()| SinkError::Invalid {
                key: "api_base",
                message: "must be an http:// or https:// URL".into(),
            })?
            .pop_if_empty()
            .extend(["v2", "alerts"])
            .extend(segments);
        Ok(url)
    }
}

impl SinkKind for Config {
    const TYPE: &'static str = "opsgenie";

    type Sink = Opsgenie;

    /// Checks the key, base URL, source and tags without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        self.url(&[])?;
        let key = self.api_key.expose();
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SinkError::Invalid {
                key: "api_key",
                message: "must be the API integration's key (no spaces)".into(),
            });
        }
        http::secret_header("api_key", &format!("GenieKey {key}"))?;
        let source = self.source.trim();
        if source.is_empty() || source.chars().count() > SOURCE_CHARS {
            return Err(SinkError::Invalid {
                key: "source",
                message: format!("must be 1 to {SOURCE_CHARS} characters"),
            });
        }
        if self.tags.len() > MAX_TAGS - 2 {
            return Err(SinkError::Invalid {
                key: "tags",
                message: format!("at most {} (herald adds two)", MAX_TAGS - 2),
            });
        }
        if let Some(bad) = self
            .tags
            .iter()
            .find(|t| t.trim().is_empty() || t.chars().count() > TAG_CHARS || t.contains(','))
        {
            return Err(SinkError::Invalid {
                key: "tags",
                message: format!("{bad:?}: a tag is 1 to {TAG_CHARS} characters, no comma"),
            });
        }
        Ok(())
    }

    /// The request body for `alert`, as sent: the create request's, or on a recovery the
    /// close request's (the key travels in a header, the alias also in the close URL).
    fn render(&self, alert: &Alert) -> Value {
        payload(alert, &self.options(), self.template.as_ref())
    }

    fn build(&self) -> Result<Opsgenie, SinkError> {
        Opsgenie::new(self)
    }

    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        vec![Fixture::secret(json!({
            "api_key": format!("{mark}-opsgenie-0000-0000"),
            "api_base": base_url,
        }))]
    }
}

/// What the configuration adds to every alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `source`.
    pub source: String,
    /// Extra tags.
    pub tags: Vec<String>,
}

impl Config {
    fn options(&self) -> Options {
        Options {
            source: self.source.trim().to_owned(),
            tags: self.tags.iter().map(|t| t.trim().to_owned()).collect(),
        }
    }
}

/// `P1` critical, `P3` warning, `P5` info \[OG-API\].
pub fn priority(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "P1",
        Severity::Warning => "P3",
        Severity::Info => "P5",
    }
}

/// The `alias`: [`crate::pagerduty::dedup_key`] (never empty, at most 255 characters), except
/// that `.` and `..`, which a URL path would resolve instead of carrying, get a `herald:`
/// prefix, in the create request as in the close URL.
pub fn alias(alert: &Alert) -> String {
    match crate::pagerduty::dedup_key(alert) {
        key if key == "." || key == ".." => format!("herald:{key}"),
        key => key,
    }
}

/// The request body for `alert`: a create request, or a close request on a recovery.
pub fn payload(alert: &Alert, options: &Options, template: Option<&Template>) -> Value {
    let label = |text: &str, max: usize| fit_chars(&one_line(text, usize::MAX), max, no_escape);
    if alert.resolve {
        let note = format!("{}: {}", present::severity_label(alert), alert.title);
        return json!({"source": options.source, "note": label(&note, NOTE_CHARS)});
    }
    let title = one_line(&alert.title, usize::MAX);
    let message = match fit_chars(&title, MESSAGE_CHARS, present::html_escape) {
        // A title of nothing printable: the message is required.
        m if m.is_empty() => present::severity_label(alert),
        m => m,
    };
    let description = present::plain(alert, template, "opsgenie", LIMITS).message;
    let mut tags: Vec<String> = Vec::new();
    for tag in ["herald", alert.kind.as_str()]
        .into_iter()
        .chain(options.tags.iter().map(String::as_str))
    {
        let tag = label(tag, TAG_CHARS);
        if !tag.is_empty() && !tags.contains(&tag) && tags.len() < MAX_TAGS {
            tags.push(tag);
        }
    }
    let mut body = json!({
        "message": message,
        "alias": alias(alert),
        "description": description,
        "priority": priority(alert.severity),
        "source": label(&options.source, SOURCE_CHARS),
        "tags": tags,
        "details": details(alert),
    });
    let entity = alert.host.as_deref().map(|h| label(h, ENTITY_CHARS));
    if let (Some(entity), Some(object)) = (entity.filter(|e| !e.is_empty()), body.as_object_mut()) {
        object.insert("entity".into(), json!(entity));
    }
    body
}

/// `details`: string values, most useful first, as many as fit [`DETAILS_CHARS`].
fn details(alert: &Alert) -> Map<String, Value> {
    let mut candidates = present::fields(alert);
    if !alert.digest.is_empty() {
        candidates.push(("Problems", present::problems(alert).to_string()));
        let listed = alert.digest.len().to_string();
        candidates.push(("Listed", listed));
    }
    for (name, value) in [
        ("Subject", Some(&alert.subject)),
        ("From", alert.from.as_ref()),
        ("Date", alert.date.as_ref()),
        ("Message-ID", alert.message_id.as_ref()),
    ] {
        if let Some(value) = value {
            candidates.push((name, value.clone()));
        }
    }
    let mut details = Map::new();
    let mut used = 0usize;
    for (name, value) in candidates {
        let value = fit_chars(&one_line(&value, usize::MAX), DETAIL_CHARS, no_escape);
        let cost = name.chars().count() + value.chars().count();
        if value.is_empty() || used + cost > DETAILS_CHARS {
            continue;
        }
        used += cost;
        details.insert(name.to_owned(), Value::String(value));
    }
    details
}

/// Classifies an Alert API answer: 2xx (202) delivered; otherwise the default table (429 and
/// 5xx retried, a 429 after `Retry-After`), with Opsgenie's `message` and `errors` as the
/// reason \[OG-API\].
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    #[derive(Deserialize)]
    struct Error {
        message: String,
        #[serde(default)]
        errors: Map<String, Value>,
    }
    let detail = match serde_json::from_str::<Error>(body) {
        Ok(Error { message, errors }) => {
            let errors: Vec<String> = errors
                .iter()
                .map(|(field, why)| format!("{field}: {}", why.as_str().unwrap_or_default()))
                .collect();
            let text = if errors.is_empty() {
                message
            } else {
                format!("{message} ({})", errors.join("; "))
            };
            one_line(&text, 300)
        }
        Err(_) => http::excerpt(body),
    };
    http::classify_status_saying(status, headers, &detail)
}

/// Creates and closes Opsgenie alerts for one API integration.
#[derive(Debug)]
pub struct Opsgenie {
    endpoint: Endpoint,
    config: Config,
    /// `Authorization: GenieKey <key>` (sensitive).
    headers: HeaderMap,
}

impl Opsgenie {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Opsgenie, SinkError> {
        config.validate()?;
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            http::secret_header("api_key", &format!("GenieKey {}", config.api_key.expose()))?,
        );
        Ok(Opsgenie {
            endpoint: Endpoint::new(
                config.timeout,
                ratelimit::effective(config.rate_limit, None),
            )?,
            config: config.clone(),
            headers,
        })
    }

    /// Where `alert` goes: the alerts collection, or its alias's close endpoint.
    fn url(&self, alert: &Alert) -> Result<reqwest::Url, SinkError> {
        if !alert.resolve {
            return self.config.url(&[]);
        }
        let mut url = self.config.url(&[&alias(alert), "close"])?;
        url.query_pairs_mut().append_pair("identifierType", "alias");
        Ok(url)
    }
}

impl Sink for Opsgenie {
    /// One alert per group: a recovery must wait for the group's last open problem.
    fn tracks_incidents(&self) -> bool {
        true
    }

    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let url = match self.url(alert) {
                Ok(url) => http::SecretUrl(url),
                Err(error) => {
                    return Outcome::Rejected {
                        reason: error.to_string(),
                    }
                }
            };
            let body = payload(alert, &self.config.options(), self.config.template.as_ref());
            self.endpoint
                .post_json(&url, &self.headers, &body, classify)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_severity() {
        assert_eq!(priority(Severity::Critical), "P1");
        assert_eq!(priority(Severity::Warning), "P3");
        assert_eq!(priority(Severity::Info), "P5");
    }

    #[test]
    fn errors_word_the_reason() {
        let body = r#"{"message":"Request body is not processable. Please check the errors.","errors":{"message":"Message can not be empty."},"took":0.002,"requestId":"r1"}"#;
        let outcome = classify(StatusCode::UNPROCESSABLE_ENTITY, &HeaderMap::new(), body);
        assert_eq!(
            outcome,
            Outcome::Rejected {
                reason: "HTTP 422: Request body is not processable. Please check the errors. \
                         (message: Message can not be empty.)"
                    .into()
            }
        );
    }

    #[test]
    fn details_stay_within_8000_characters() {
        let mut alert = Alert::sample();
        alert.subject = "s".repeat(20_000);
        alert.command = Some("c".repeat(20_000));
        alert.from = Some("f".repeat(20_000));
        let details = details(&alert);
        let total: usize = details
            .iter()
            .map(|(k, v)| k.chars().count() + v.as_str().unwrap().chars().count())
            .sum();
        assert!(total <= DETAILS_CHARS, "{total}");
        assert_eq!(details["Host"], "web01.example.net");
    }
}
