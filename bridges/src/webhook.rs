//! The webhook sink: POSTs the alert as JSON — the same fields as `herald classify --json` —
//! to a URL. The URL is treated as a secret (it often embeds a token) and never logged.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::sink::{deserialize_duration, DeliverFuture};
use crate::{http, Alert, Secret, Sink, SinkError};

/// `type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to POST (a secret: it may carry a token).
    pub url: Secret,
    /// Extra request headers, e.g. `Authorization` (values are secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// How long one attempt may take before it counts as failed and is retried.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
}

/// 10 s: a healthy receiver answers in milliseconds; a slow one must not hold the sink's
/// queue for long, and the attempt is retried anyway.
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// Checks the URL and headers without sending anything.
    pub fn validate(&self) -> Result<(), SinkError> {
        let url = reqwest::Url::parse(self.url.expose()).map_err(|e| SinkError::Invalid {
            key: "url",
            message: format!("not a valid URL ({e})"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SinkError::Invalid {
                key: "url",
                message: "must be an http:// or https:// URL".into(),
            });
        }
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
        Ok(())
    }
}

/// The request body for `alert`.
pub fn payload(alert: &Alert) -> serde_json::Value {
    serde_json::to_value(alert).unwrap_or(serde_json::Value::Null)
}

/// POSTs alerts to one URL.
#[derive(Debug)]
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
}

impl Webhook {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Webhook, SinkError> {
        config.validate()?;
        let url = reqwest::Url::parse(config.url.expose()).map_err(|e| SinkError::Invalid {
            key: "url",
            message: format!("not a valid URL ({e})"),
        })?;
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
        Ok(Webhook {
            client: http::client(config.timeout)?,
            url,
            headers,
        })
    }
}

impl Sink for Webhook {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let request = self
                .client
                .post(self.url.clone())
                .headers(self.headers.clone())
                .json(&payload(alert));
            match request.send().await {
                Ok(response) => http::read_response(response).await,
                Err(error) => http::transport_error(error),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let config = Config {
            url: Secret::new("ftp://token@x"),
            headers: BTreeMap::new(),
            timeout: default_timeout(),
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.starts_with("url:") && !error.contains("token"),
            "{error}"
        );
    }
}
