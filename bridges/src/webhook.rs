//! The webhook sink: POSTs the alert as JSON — the same fields as `herald classify --json` —
//! to a URL. The URL is treated as a secret (it often embeds a token) and never logged.
//!
//! Dispatch's notifications need nothing of their own here: they are alerts, so the body
//! carries their fields as they are — `group_key`, `repeats` on a reminder, `resolve: true`
//! on a recovery, and on a digest `digest` (the member problems, in one body) and
//! `digest_more`. The sink sets no size limit of its own (the body is the alert, intact, for
//! receivers that verify it); a digest stays small because dispatch lists at most
//! [`Alert::DIGEST_MAX_MEMBERS`] members and members carry no mail body.
//!
//! The fields are the mail's text as decoded, format characters (U+202E, zero-width
//! spaces) included: the body is data for programs, JSON-escaped, and the same as
//! `classify --json` prints; a receiver that shows it to people sanitises it as the chat
//! sinks do (`herald_bridges::text::strip_format`).
//!
//! # Signature
//!
//! With `secret` set, every request carries Standard Webhooks headers \[SW\]
//! (reference/sinks.md §6.1), so a receiver can verify origin and freshness:
//!
//! ```text
//! webhook-id: msg_<32 hex digits>          stable across retries of one alert: an idempotency key
//! webhook-timestamp: <unix seconds>        when this attempt was signed
//! webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>
//! ```
//!
//! `key` is the base64-decoded part after `whsec_` when the secret has that prefix (the spec's
//! format), else the secret's bytes. The exact bytes sent are the bytes signed. A receiver
//! should recompute the signature, compare in constant time and reject stale timestamps.
//!
//! Guarantees: the body is exactly [`payload`]; 3xx is never followed; neither the URL, the
//! header values nor the secret appear in an outcome or a log line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::http::{self, Endpoint};
use crate::ratelimit::{self, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::{Alert, Secret, Sink, SinkError};

/// The shortest signing key accepted: Standard Webhooks asks for at least 24 bytes (192
/// bits) \[SW\].
const MIN_KEY_BYTES: usize = 24;

/// The Standard Webhooks secret prefix \[SW\].
const SECRET_PREFIX: &str = "whsec_";

/// `type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to POST (a secret: it may carry a token).
    pub url: Secret,
    /// Extra request headers, e.g. `Authorization` (values are secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// The signing secret (`whsec_<base64>` or raw); unset: requests are not signed.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// How long one attempt may take before it counts as failed and is retried.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Client-side pacing, e.g. `"10/s"`; default off (the receiver is ours).
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

/// 10 s: a healthy receiver answers in milliseconds; a slow one must not hold the sink's
/// queue for long, and the attempt is retried anyway (\[SW\] suggests 15–30 s as the upper end).
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SinkKind for Config {
    const TYPE: &'static str = "webhook";

    type Sink = Webhook;

    /// Checks the URL, headers and secret without sending anything.
    fn validate(&self) -> Result<(), SinkError> {
        http_url("url", &self.url)?;
        for (name, value) in &self.headers {
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                SinkError::Invalid {
                    key: "headers",
                    message: format!("{name:?} is not a valid header name"),
                }
            })?;
            reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                SinkError::Invalid {
                    key: "headers",
                    message: format!("the value of {name:?} is not a valid header value"),
                }
            })?;
        }
        if let Some(secret) = &self.secret {
            signing_key(secret)?;
        }
        Ok(())
    }

    /// The request body for `alert`: [`payload`].
    fn render(&self, alert: &Alert) -> serde_json::Value {
        payload(alert)
    }

    fn build(&self) -> Result<Webhook, SinkError> {
        Webhook::new(self)
    }

    fn secret_fixtures(base_url: &str, _addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        vec![Fixture::secret(serde_json::json!({
            "url": format!("{base_url}/hook?token={mark}url"),
            "headers": {"Authorization": format!("Bearer {mark}hdr")},
            "secret": format!("{mark}-signing-key-0123456789abcdef"),
        }))]
    }
}

/// Parses a secret URL as http(s), with errors that never show it.
pub(crate) fn http_url(key: &'static str, url: &Secret) -> Result<reqwest::Url, SinkError> {
    let parsed = reqwest::Url::parse(url.expose()).map_err(|e| SinkError::Invalid {
        key,
        message: format!("not a valid URL ({e})"),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SinkError::Invalid {
            key,
            message: "must be an http:// or https:// URL".into(),
        });
    }
    Ok(parsed)
}

fn signing_key(secret: &Secret) -> Result<Vec<u8>, SinkError> {
    let raw = secret.expose();
    let key = match raw.strip_prefix(SECRET_PREFIX) {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SinkError::Invalid {
                key: "secret",
                message: format!("after {SECRET_PREFIX:?} it must be base64"),
            })?,
        None => raw.as_bytes().to_vec(),
    };
    if key.len() < MIN_KEY_BYTES {
        return Err(SinkError::Invalid {
            key: "secret",
            message: format!("must be at least {MIN_KEY_BYTES} bytes"),
        });
    }
    Ok(key)
}

/// The request body for `alert`.
pub fn payload(alert: &Alert) -> serde_json::Value {
    serde_json::to_value(alert).unwrap_or(serde_json::Value::Null)
}

/// The `webhook-id` for a body: a digest of it, so every retry of one alert has the same id.
pub fn message_id(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// The `webhook-signature` value for `body` sent as `id` at `timestamp` (unix seconds).
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error branch is unreachable but handled.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// Classifies the receiver's answer by the default table: 2xx delivered; 408, 429 and 5xx
/// except 501 retried (after `Retry-After`); every other status, 3xx included, rejected \[SW\].
pub fn classify(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> crate::Outcome {
    http::classify_status(status, headers, body)
}

/// POSTs alerts to one URL.
#[derive(Debug)]
pub struct Webhook {
    endpoint: Endpoint,
    url: http::SecretUrl,
    headers: reqwest::header::HeaderMap,
    key: Option<SigningKey>,
}

/// The decoded signing key; its `Debug` is redacted.
struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl Webhook {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Webhook, SinkError> {
        config.validate()?;
        let url = http_url("url", &config.url)?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.headers {
            if let (Ok(name), Ok(mut value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value.expose()),
            ) {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        let key = config
            .secret
            .as_ref()
            .map(signing_key)
            .transpose()?
            .map(SigningKey);
        Ok(Webhook {
            endpoint: Endpoint::new(
                config.timeout,
                ratelimit::effective(config.rate_limit, None),
            )?,
            url: http::SecretUrl(url),
            headers,
            key,
        })
    }
}

impl Sink for Webhook {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(&payload(alert)).unwrap_or_default();
            let mut request = self
                .endpoint
                .client
                .post(self.url.0.clone())
                .headers(self.headers.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            if let Some(key) = &self.key {
                let id = message_id(&body);
                let timestamp = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                request = request
                    .header(
                        "webhook-signature",
                        signature(&key.0, &id, timestamp, &body),
                    )
                    .header("webhook-id", id)
                    .header("webhook-timestamp", timestamp.to_string());
            }
            self.endpoint.attempt(request.body(body), classify).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Config {
        Config {
            url: Secret::new(url),
            headers: BTreeMap::new(),
            secret: None,
            timeout: default_timeout(),
            rate_limit: None,
        }
    }

    #[test]
    fn payload_has_the_classify_fields() {
        let body = payload(&Alert::sample());
        for key in [
            "message_id",
            "kind",
            "host",
            "user",
            "command",
            "failed",
            "exit_status",
            "severity",
            "rule",
            "title",
            "summary",
            "dedup_key",
            "facts",
        ] {
            assert!(body.get(key).is_some(), "missing {key}");
        }
        assert_eq!(body["kind"], "cron");
    }

    #[test]
    fn invalid_url_is_reported_without_its_value() {
        let error = config("ftp://token@x").validate().unwrap_err().to_string();
        assert!(
            error.starts_with("url:") && !error.contains("token"),
            "{error}"
        );
    }

    #[test]
    fn signature_matches_an_independent_computation() {
        // Computed with Python's hmac/hashlib/base64 from the Standard Webhooks definition.
        let secret = Secret::new("whsec_aGVyYWxkLXRlc3Qtc2lnbmluZy1rZXktMDEyMzQ1Njc4OQ==");
        let key = signing_key(&secret).unwrap();
        assert_eq!(key, b"herald-test-signing-key-0123456789");
        assert_eq!(
            signature(&key, "msg_abc", 1_700_000_000, br#"{"a":1}"#),
            "v1,35NZuQKaw/FekqhusK2/sXFhhF+MpNY3d/ToSzR1VNk="
        );
        assert_eq!(
            message_id(br#"{"a":1}"#),
            "msg_015abd7f5cc57a2dd94b7590f04ad808"
        );
    }

    #[test]
    fn short_or_malformed_secrets_are_refused_without_their_value() {
        for bad in ["whsec_!!notbase64", "shortsecret", "whsec_c2hvcnQ="] {
            let mut c = config("https://example.net/hook");
            c.secret = Some(Secret::new(bad));
            let error = c.validate().unwrap_err().to_string();
            assert!(
                error.starts_with("secret:") && !error.contains(bad),
                "{error}"
            );
        }
    }
}
