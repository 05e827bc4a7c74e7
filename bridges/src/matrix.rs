//! The Matrix sink: the client-server API's
//! `PUT {homeserver}/_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}` with
//! `Authorization: Bearer <access_token>` \[MX-SEND\] (reference/sinks.md §6.2).
//!
//! Message: an `m.room.message` of `msgtype` `m.text` (or `m.notice`, which push rules
//! usually keep silent \[MX-NOTICE\]) whose `body` is the plain text of
//! [`present::plain`] (title, summary or template, fields, body excerpt) and whose
//! `formatted_body` (`format: org.matrix.custom.html`) is [`present::html`]: the title in
//! bold, bold-labelled fields, the summary, the excerpt in `<pre>` \[MX-HTML\].
//!
//! Dispatch's notifications: a digest keeps the title ("12 problems: …"), fields and summary
//! and lists its members (host, command, `×count`, first–last time) in place of the excerpt,
//! then "… and N more"; a recovery is labelled `RESOLVED` and leaves out the excerpt; a
//! reminder shows a "Repeats" line.
//!
//! # Idempotency
//!
//! The homeserver treats a repeated `txnId` (for the same access token) as the same request
//! and answers with the first event's ID instead of posting again \[MX-TXN\], which makes
//! herald's at-least-once delivery exactly-once in the room as long as the server remembers
//! the transaction. The `txnId` is [`txn_id`]: `msg_` and a SHA-256 digest of the alert as
//! herald stores it (its JSON, every field) and the room. Two deliveries are therefore "the
//! same" exactly when they carry the same alert to the same room: a retry of an outbox row,
//! or a resend after a crash. A reminder (its `repeats` differ), a digest, a recovery
//! (`resolve`) or another mail (another `message_id`, `date`, body …) is another message.
//!
//! Guarantees:
//! - Mail text cannot format or link: `&`, `<`, `>` and `"` are escaped in `formatted_body`,
//!   whose only tags are ours (`<b>`, `<br>`, `<pre>`); `body` is plain text.
//! - The content stays well under the 65,536-byte event limit \[MX-SIZE\]: `body` and
//!   `formatted_body` are each cut to [`TEXT_BYTES`] as serialized; cuts fall between
//!   characters and escapes, marked `…`.
//! - 2xx is delivered; `M_LIMIT_EXCEEDED` (429) is retried after its `retry_after_ms` or
//!   `Retry-After` \[MX-RL\]; `M_FORBIDDEN` (not in the room), `M_UNKNOWN_TOKEN` (401) and
//!   other 4xx are rejected with the server's `errcode` and `error` \[MX-ERR\]; 5xx retried.
//! - The room ID is percent-encoded as one path segment; the access token travels only in
//!   the `Authorization` header (marked sensitive), never in an outcome, a log line or
//!   [`Config::render`] output.
//! - Paced at 10 messages then one per 5 s by default: Synapse's default `rc_message`
//!   (0.2/s, burst 10) \[SYN-RC\].
//!
//! \[MX-SEND\]: spec.matrix.org/latest/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid.
//! \[MX-TXN\]: spec.matrix.org/latest/client-server-api/#transaction-identifiers.
//! \[MX-HTML\]: spec.matrix.org/latest/client-server-api/#mroommessage-msgtypes (`m.text`,
//! `format`, `formatted_body`, the recommended HTML subset).
//! \[MX-NOTICE\]: spec.matrix.org/latest/client-server-api/#mnotice and the `.m.rule.suppress_notices`
//! push rule.
//! \[MX-SIZE\]: spec.matrix.org/latest/client-server-api/#size-limits (65,536 bytes per event).
//! \[MX-RL\]: spec.matrix.org/latest/client-server-api/#rate-limiting (`M_LIMIT_EXCEEDED`,
//! `retry_after_ms`; `Retry-After` since v1.10).
//! \[MX-ERR\]: spec.matrix.org/latest/client-server-api/#standard-error-response.
//! \[SYN-RC\]: element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#rc_message.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{self, Endpoint};
use crate::present::{self, HtmlLimits, PlainLimits};
use crate::ratelimit::{self, Rate, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::template::Template;
use crate::text::one_line;
use crate::{Alert, Outcome, Secret, Sink, SinkError};

/// Each of `body` and `formatted_body`, in bytes as serialized: both together, with the
/// event's envelope and signatures, stay far below 65,536 \[MX-SIZE\].
pub const TEXT_BYTES: usize = 24_000;
/// Synapse's default `rc_message`: 0.2 messages/s with a burst of 10 \[SYN-RC\].
pub const DEFAULT_RATE: Rate = Rate::new(10, Duration::from_secs(50));
/// The longest room ID accepted: the spec's 255-byte limit on IDs \[MX-SIZE\].
const ROOM_ID_BYTES: usize = 255;

const PLAIN: PlainLimits = PlainLimits {
    title: 600,
    // The title and a blank line go before it.
    message: TEXT_BYTES - 604,
    cost: present::json_bytes,
};

const HTML: HtmlLimits = HtmlLimits {
    total: TEXT_BYTES,
    title: 600,
    field: 600,
    main: 4000,
    cost: present::json_bytes,
};

/// `msgtype`: `m.text`, or `m.notice` for a bot that should not notify \[MX-NOTICE\].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MsgType {
    /// An ordinary message (notifies like one).
    #[serde(rename = "m.text")]
    Text,
    /// An automated notice.
    #[serde(rename = "m.notice")]
    Notice,
}

impl MsgType {
    fn as_str(self) -> &'static str {
        match self {
            MsgType::Text => "m.text",
            MsgType::Notice => "m.notice",
        }
    }
}

/// `type = "matrix"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The homeserver's client-server base URL, e.g. `https://matrix.example.org`.
    pub homeserver: String,
    /// The bot account's access token (a secret; or `access_token_file`).
    pub access_token: Secret,
    /// The room's ID, `!opaque:example.org` (not an alias); the bot must have joined it.
    pub room_id: String,
    /// `"m.text"` (default) or `"m.notice"`.
    #[serde(default = "default_msgtype")]
    pub msgtype: MsgType,
    /// A minijinja template replacing the summary (see [`crate::template`]); in
    /// `formatted_body` its strings arrive HTML-escaped, so it may use HTML.
    #[serde(default)]
    pub template: Option<Template>,
    /// How long one attempt may take.
    #[serde(
        default = "http::default_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub timeout: Duration,
    /// Client-side pacing; default `"10/50s"` \[SYN-RC\]; `"off"` to disable.
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

fn default_msgtype() -> MsgType {
    MsgType::Text
}

impl Config {
    /// `{homeserver}/_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}`.
    fn url(&self, txn: &str) -> Result<reqwest::Url, SinkError> {
        let mut url =
            crate::webhook::http_url("homeserver", &Secret::new(self.homeserver.clone()))?;
        url.path_segments_mut()
            .map_err(|()| SinkError::Invalid {
                key: "homeserver",
                message: "must be an http:// or https:// URL".into(),
            })?
            .pop_if_empty()
            .extend([
                "_matrix",
                "client",
                "v3",
                "rooms",
                &self.room_id,
                "send",
                "m.room.message",
                txn,
            ]);
        Ok(url)
    }
}

impl SinkKind for Config {
    const TYPE: &'static str = "matrix";

    type Sink = Matrix;

    /// Checks the homeserver, token and room without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        self.url("x")?;
        let room = &self.room_id;
        if !room.starts_with('!')
            || room.len() < 2
            || room.len() > ROOM_ID_BYTES
            || room.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SinkError::Invalid {
                key: "room_id",
                message: "must be a room ID (\"!…\", see the room's advanced settings), \
                          not an alias"
                    .into(),
            });
        }
        if self.access_token.expose().trim().is_empty() {
            return Err(SinkError::Invalid {
                key: "access_token",
                message: "must be the bot's access token".into(),
            });
        }
        http::secret_header(
            "access_token",
            &format!("Bearer {}", self.access_token.expose()),
        )?;
        Ok(())
    }

    /// The event content for `alert`, as sent (the token travels in a header, the
    /// transaction ID in the URL).
    fn render(&self, alert: &Alert) -> Value {
        payload(alert, self.msgtype, self.template.as_ref())
    }

    fn build(&self) -> Result<Matrix, SinkError> {
        Matrix::new(self)
    }

    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        vec![Fixture::secret(json!({
            "homeserver": base_url,
            "access_token": format!("syt_{mark}matrix"),
            "room_id": "!ops:example.org",
            "rate_limit": "off",
        }))]
    }
}

/// The transaction ID of delivering `alert` to `room`: `msg_` and 32 hex digits of a SHA-256
/// of both (see the module's "Idempotency").
pub fn txn_id(alert: &Alert, room: &str) -> String {
    let mut bytes = serde_json::to_vec(alert).unwrap_or_default();
    // A NUL cannot occur in JSON, so no alert and room run into another pair's bytes.
    bytes.push(0);
    bytes.extend_from_slice(room.as_bytes());
    crate::webhook::message_id(&bytes)
}

/// The `m.room.message` content for `alert`.
pub fn payload(alert: &Alert, msgtype: MsgType, template: Option<&Template>) -> Value {
    let plain = present::plain(alert, template, "matrix", PLAIN);
    json!({
        "msgtype": msgtype.as_str(),
        "body": format!("{}\n\n{}", plain.title, plain.message),
        "format": "org.matrix.custom.html",
        "formatted_body": present::html(alert, template, "matrix", HTML, "<br>"),
    })
}

/// Classifies a homeserver's answer: 2xx delivered; `M_LIMIT_EXCEEDED` retried after
/// `retry_after_ms` or `Retry-After`; otherwise the default table, with the `errcode` and
/// `error` as the reason \[MX-ERR\].
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    #[derive(Deserialize)]
    struct Error {
        errcode: String,
        #[serde(default)]
        error: String,
        #[serde(default)]
        retry_after_ms: Option<f64>,
    }
    let parsed = serde_json::from_str::<Error>(body).ok();
    let detail = match &parsed {
        Some(e) => one_line(&format!("{}: {}", e.errcode, e.error), 300),
        None => http::excerpt(body),
    };
    let hint = parsed
        .and_then(|e| e.retry_after_ms)
        .and_then(|ms| http::secs_f64(ms / 1000.0));
    http::classify_hinted(status, headers, &detail, hint)
}

/// Posts alerts to one Matrix room.
#[derive(Debug)]
pub struct Matrix {
    endpoint: Endpoint,
    config: Config,
    /// `Bearer <access_token>` (sensitive).
    auth: reqwest::header::HeaderValue,
}

impl Matrix {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Matrix, SinkError> {
        config.validate()?;
        let auth = http::secret_header(
            "access_token",
            &format!("Bearer {}", config.access_token.expose()),
        )?;
        let rate = ratelimit::effective(config.rate_limit, Some(DEFAULT_RATE));
        Ok(Matrix {
            endpoint: Endpoint::new(config.timeout, rate)?,
            config: config.clone(),
            auth,
        })
    }
}

impl Sink for Matrix {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let url = match self.config.url(&txn_id(alert, &self.config.room_id)) {
                Ok(url) => url,
                Err(error) => {
                    return Outcome::Rejected {
                        reason: error.to_string(),
                    }
                }
            };
            let body = payload(alert, self.config.msgtype, self.config.template.as_ref());
            let request = self
                .endpoint
                .client
                .put(url)
                .header(AUTHORIZATION, self.auth.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&body).unwrap_or_default());
            self.endpoint.attempt(request, classify).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_one_path_segment() {
        let config: Config = serde_json::from_value(json!({
            "homeserver": "https://matrix.example.org/prefix/",
            "access_token": "syt_x",
            "room_id": "!a/b?c#d:example.org",
        }))
        .unwrap();
        assert!(config.validate().is_ok());
        assert_eq!(
            config.url("msg_1").unwrap().path(),
            "/prefix/_matrix/client/v3/rooms/!a%2Fb%3Fc%23d:example.org/send/m.room.message/msg_1"
        );
    }

    #[test]
    fn the_same_delivery_has_the_same_txn() {
        let alert = Alert::sample();
        let txn = txn_id(&alert, "!r:x");
        assert_eq!(txn, txn_id(&alert.clone(), "!r:x"));
        assert_ne!(txn, txn_id(&alert, "!s:x"), "another room");
        let mut recovery = alert.clone();
        recovery.resolve = true;
        assert_ne!(txn, txn_id(&recovery, "!r:x"));
    }

    #[test]
    fn limit_exceeded_waits_retry_after_ms() {
        let body =
            r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":2500}"#;
        let outcome = classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body);
        assert_eq!(
            outcome,
            Outcome::Retry {
                after: Some(Duration::from_millis(2500)),
                reason: "HTTP 429: M_LIMIT_EXCEEDED: Too many requests".into()
            }
        );
        let body = r#"{"errcode":"M_FORBIDDEN","error":"User not in room"}"#;
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, &HeaderMap::new(), body),
            Outcome::Rejected { reason } if reason == "HTTP 403: M_FORBIDDEN: User not in room"
        ));
    }
}
