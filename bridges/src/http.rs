//! What every HTTP sink shares: the client, the default reading of a response, `Retry-After`,
//! the per-sink rate-limit gate, and errors stripped of their URL (a webhook URL is a
//! credential, and reqwest's errors carry the full URL).
//!
//! Guarantees: redirects are never followed (a 3xx is an answer, so credentials are never
//! replayed to another host); no reason string built here contains a URL; a response body is
//! read to at most [`MAX_BODY_BYTES`]; every delay a server names (429 `Retry-After`, Discord's
//! `X-RateLimit-Reset-After` at zero remaining) holds back the sink's next request.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::ratelimit::{Rate, RateLimiter, MAX_DEFER};
use crate::{Outcome, SinkError};

/// How much of an error body is kept for the log line: enough for any API's error message.
const ERROR_BODY_CHARS: usize = 300;

/// How much of a response body is read: every API answer we parse (Slack's `ok`, a Twilio
/// Message, a Discord message object) is a few KB; a larger body is cut, not buffered.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Builds a client with a per-request timeout. rustls only, with the platform's roots; no
/// redirects (the generic-webhook guidance in reference/sinks.md §6.1 \[SW\]: 3xx = failure).
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, SinkError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SinkError::Client(e.without_url().to_string()))
}

/// A pure response classifier: status, headers and (capped) body to an outcome.
pub(crate) type Classify = fn(StatusCode, &HeaderMap, &str) -> Outcome;

/// A request that got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TransportFailure {
    /// `true` when the request provably never reached the server (connection refused, DNS,
    /// TLS handshake): retrying cannot duplicate anything.
    pub never_sent: bool,
    /// What went wrong, without the URL.
    pub reason: String,
}

impl TransportFailure {
    /// Every transport failure is transient.
    pub fn into_outcome(self) -> Outcome {
        Outcome::Retry {
            after: None,
            reason: self.reason,
        }
    }
}

/// One sink's connection to its API: the client and the sink's own rate-limit gate.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub client: reqwest::Client,
    limiter: RateLimiter,
}

impl Endpoint {
    /// A client with `timeout`, paced at `rate`.
    pub fn new(timeout: Duration, rate: Option<Rate>) -> Result<Endpoint, SinkError> {
        Ok(Endpoint {
            client: client(timeout)?,
            limiter: RateLimiter::new(rate),
        })
    }

    /// Waits for the gate, sends and reads the answer. A Discord-style "bucket empty" header
    /// holds back this sink's next request.
    pub async fn exchange(&self, request: RequestBuilder) -> Result<Answer, TransportFailure> {
        self.limiter.acquire().await;
        let response = request.send().await.map_err(transport_failure)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_body(response).await;
        if let Some(pause) = rate_limit_hint(&headers) {
            self.pause(status, pause);
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Holds back this sink's next request when `outcome` names a delay (a 429's
    /// `Retry-After`).
    pub fn honour(&self, status: StatusCode, outcome: &Outcome) {
        if let Outcome::Retry {
            after: Some(after), ..
        } = outcome
        {
            self.pause(status, *after);
        }
    }

    fn pause(&self, status: StatusCode, pause: Duration) {
        tracing::debug!(
            status = status.as_u16(),
            pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            "Server asked for a pause; holding this sink's next request."
        );
        self.limiter.defer(pause);
    }

    /// One attempt: [`Endpoint::exchange`], `classify`, [`Endpoint::honour`]; a transport
    /// failure is a plain retry.
    pub async fn attempt(&self, request: RequestBuilder, classify: Classify) -> Outcome {
        match self.exchange(request).await {
            Ok(answer) => {
                let outcome = classify(answer.status, &answer.headers, &answer.body);
                self.honour(answer.status, &outcome);
                outcome
            }
            Err(failure) => failure.into_outcome(),
        }
    }
}

/// The `timeout` of most HTTP sinks: 10 s. A healthy API answers in well under a second; a
/// slow one must not hold the sink's queue for long, and the attempt is retried anyway.
pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A header value that carries a secret (`Bearer …`, an API key): marked sensitive, so that
/// neither reqwest nor hyper ever shows it; an invalid one is reported without its value.
pub(crate) fn secret_header(
    key: &'static str,
    value: &str,
) -> Result<reqwest::header::HeaderValue, SinkError> {
    let mut header =
        reqwest::header::HeaderValue::from_str(value).map_err(|_| SinkError::Invalid {
            key,
            message: "not a valid header value (control characters or non-ASCII)".into(),
        })?;
    header.set_sensitive(true);
    Ok(header)
}

impl Endpoint {
    /// POSTs `body` as JSON to `url` with `headers`: one [`Endpoint::attempt`].
    pub async fn post_json(
        &self,
        url: &SecretUrl,
        headers: &HeaderMap,
        body: &serde_json::Value,
        classify: Classify,
    ) -> Outcome {
        let request = self
            .client
            .post(url.0.clone())
            .headers(headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default());
        self.attempt(request, classify).await
    }
}

/// A URL that is a credential (Slack and Discord webhooks, a webhook with a token): its
/// `Debug` is redacted, so a sink value can be debug-printed safely.
#[derive(Clone)]
pub(crate) struct SecretUrl(pub reqwest::Url);

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("**REDACTED**")
    }
}

/// A server's answer, its body read to at most [`MAX_BODY_BYTES`].
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Reads at most [`MAX_BODY_BYTES`] of the body, lossily as UTF-8; a broken body reads as
/// whatever arrived before the break.
async fn read_body(mut response: Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY_BYTES - bytes.len();
                bytes.extend(chunk.iter().take(room));
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Discord's bucket headers: `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset-After:
/// <seconds>` means the next request would be a 429 until then \[DC-RL\]. Other APIs don't send
/// `Reset-After`, so this is inert for them.
pub(crate) fn rate_limit_hint(headers: &HeaderMap) -> Option<Duration> {
    let remaining = header_str(headers, "x-ratelimit-remaining")?;
    if remaining.trim() != "0" {
        return None;
    }
    seconds(header_str(headers, "x-ratelimit-reset-after")?)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok()
}

/// A non-negative decimal number of seconds, capped at [`MAX_DEFER`].
pub(crate) fn seconds(text: &str) -> Option<Duration> {
    let value: f64 = text.trim().parse().ok()?;
    secs_f64(value)
}

/// Seconds as a float to a duration: `None` for negatives and NaN, capped at [`MAX_DEFER`].
pub(crate) fn secs_f64(value: f64) -> Option<Duration> {
    if value.is_nan() || value < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(value).map_or(MAX_DEFER, |d| d.min(MAX_DEFER)))
}

/// The default reading of an HTTP status (Vector's and Alertmanager's): 2xx delivered;
/// 408, 429 and 5xx except 501 retried, after `Retry-After` when given; every other status
/// rejected.
pub(crate) fn classify_status(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    classify_status_saying(status, headers, &excerpt(body))
}

/// [`classify_status`] with the reason's detail given (an API's own error message, already on
/// one line and bounded) instead of the body's excerpt.
pub(crate) fn classify_status_saying(
    status: StatusCode,
    headers: &HeaderMap,
    detail: &str,
) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    let reason = format!("HTTP {}: {detail}", status.as_u16());
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

/// [`classify_status_saying`], where a retry waits for `hint` when the API named a delay in
/// its body (Telegram's `parameters.retry_after`, Matrix's `retry_after_ms`), else for
/// `Retry-After`.
pub(crate) fn classify_hinted(
    status: StatusCode,
    headers: &HeaderMap,
    detail: &str,
    hint: Option<Duration>,
) -> Outcome {
    match classify_status_saying(status, headers, detail) {
        Outcome::Retry { after, reason } => Outcome::Retry {
            after: hint.or(after),
            reason,
        },
        other => other,
    }
}

/// A request that got no response, described without its URL. A connect error (refused,
/// DNS, TLS handshake) means the request never left; anything else (timeout, reset mid-way)
/// is ambiguous.
pub(crate) fn transport_failure(error: reqwest::Error) -> TransportFailure {
    let never_sent = error.is_connect();
    let kind = if never_sent {
        "cannot connect"
    } else if error.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    TransportFailure {
        never_sent,
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
    if let Ok(value) = value.parse::<f64>() {
        return secs_f64(value);
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_DEFER),
    )
}

/// A body on one line, cut for a log line.
pub(crate) fn excerpt(body: &str) -> String {
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
        assert_eq!(retry_after(&headers("-1"), now), None);
        assert_eq!(retry_after(&headers("NaN"), now), None);
        assert_eq!(retry_after(&headers("1e300"), now), Some(MAX_DEFER));
        assert_eq!(
            retry_after(&headers("0.25"), now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}

#[cfg(test)]
mod paused_clock {
    //! G4's "a 429 with `Retry-After: 7` waits at least 7 s", per sink classifier, through
    //! the same `honour` → gate path a real response takes, on tokio's paused clock (no
    //! sockets: a paused clock auto-advances whenever the runtime idles, which would fire
    //! reqwest's own timeouts early).
    use super::*;
    use reqwest::header::HeaderValue;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn every_sink_waits_out_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let classifiers: [(&str, Classify); 7] = [
            ("default", classify_status),
            ("slack webhook", crate::slack::classify_webhook),
            ("slack api", crate::slack::classify_api),
            ("discord", crate::discord::classify),
            ("pagerduty", crate::pagerduty::classify),
            ("webhook", crate::webhook::classify),
            ("twilio", crate::twilio::classify),
        ];
        let all: Vec<(&str, Outcome)> = classifiers
            .iter()
            .map(|(name, classify)| (*name, classify(StatusCode::TOO_MANY_REQUESTS, &headers, "")))
            .collect();
        for (name, outcome) in all {
            let endpoint = Endpoint::new(Duration::from_secs(10), None).unwrap();
            endpoint.honour(StatusCode::TOO_MANY_REQUESTS, &outcome);
            let start = Instant::now();
            endpoint.limiter.acquire().await;
            assert_eq!(start.elapsed(), Duration::from_secs(7), "{name}");
            // Once waited out, the gate is open again.
            let again = Instant::now();
            endpoint.limiter.acquire().await;
            assert_eq!(again.elapsed(), Duration::ZERO, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn discord_bucket_headers_hold_the_gate() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        headers.insert("x-ratelimit-reset-after", HeaderValue::from_static("2.5"));
        assert_eq!(rate_limit_hint(&headers), Some(Duration::from_millis(2500)));
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("3"));
        assert_eq!(rate_limit_hint(&headers), None);
    }
}
