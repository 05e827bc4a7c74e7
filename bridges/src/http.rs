//! What every HTTP sink shares: the client, the default reading of a response, `Retry-After`,
//! and errors stripped of their URL (a webhook URL is a credential, and reqwest's errors
//! carry the full URL).

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};

use crate::{Outcome, SinkError};

/// How much of an error body is kept for the log line: enough for any API's error message.
const ERROR_BODY_CHARS: usize = 300;

/// Builds a client with a per-request timeout. rustls only, with the platform's roots.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, SinkError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SinkError::Client(e.without_url().to_string()))
}

/// The default reading of an HTTP status (Vector's and Alertmanager's): 2xx delivered;
/// 408, 429 and 5xx except 501 retried, after `Retry-After` when given; every other status
/// rejected.
pub(crate) fn classify_status(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    let reason = format!("HTTP {}: {}", status.as_u16(), excerpt(body));
    let transient = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED);
    if transient {
        Outcome::Retry {
            after: retry_after(headers, SystemTime::now()),
            reason,
        }
    } else {
        Outcome::Rejected { reason }
    }
}

/// Reads a response and classifies it with [`classify_status`].
pub(crate) async fn read_response(response: Response) -> Outcome {
    let status = response.status();
    let headers = response.headers().clone();
    let body = if status.is_success() {
        String::new()
    } else {
        response.text().await.unwrap_or_default()
    };
    classify_status(status, &headers, &body)
}

/// The outcome of a request that got no response. Every transport failure is transient;
/// the reason never includes the URL.
pub(crate) fn transport_error(error: reqwest::Error) -> Outcome {
    let kind = if error.is_connect() {
        "cannot connect"
    } else if error.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    Outcome::Retry {
        after: None,
        reason: format!("{kind}: {}", error_chain(&error.without_url())),
    }
}

/// An error and its sources on one line, as `a: b: c`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

fn excerpt(body: &str) -> String {
    crate::text::one_line(body, ERROR_BODY_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(retry: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(retry).unwrap());
        h
    }

    #[test]
    fn status_table() {
        for code in 100..=599u16 {
            let status = StatusCode::from_u16(code).unwrap();
            let outcome = classify_status(status, &HeaderMap::new(), "");
            let expected = match code {
                200..=299 => "delivered",
                408 | 429 => "retry",
                501 => "rejected",
                500..=599 => "retry",
                _ => "rejected",
            };
            let got = match outcome {
                Outcome::Delivered => "delivered",
                Outcome::Retry { .. } => "retry",
                Outcome::Rejected { .. } => "rejected",
            };
            assert_eq!(got, expected, "status {code}");
        }
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&later), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
