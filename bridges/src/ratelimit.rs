//! Per-sink pacing: a token bucket plus a "not before" gate.
//!
//! Every HTTP sink owns one [`RateLimiter`], so one sink's limits never delay another. Before
//! each request the sink awaits [`RateLimiter::acquire`]; after a 429 (or any answer naming a
//! delay) it calls [`RateLimiter::defer`]. Guarantees: no request starts before the latest
//! deferral has passed, and over any window no more than `burst + window × rate` requests
//! start. Built on `tokio::time`, so it is exact under a paused test clock.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tokio::time::Instant;

/// The longest delay a server may impose with one answer. A `Retry-After` of days (a bug or a
/// hostile server) would otherwise silence the sink past every alert's useful life; 1 h is
/// longer than any documented wait (PagerDuty's "a few minutes" \[PD-OV\], Discord's
/// `retry_after` of seconds \[DC-RL\] in reference/sinks.md), and the outbox retries after it.
pub const MAX_DEFER: Duration = Duration::from_secs(3600);

/// `burst` requests, refilled evenly over `period`: `"1/s"`, `"5/2s"`, `"120/m"`.
#[derive(Clone, Copy, PartialEq)]
pub struct Rate {
    /// Bucket size: how many requests may start back to back.
    pub burst: u32,
    /// How long the bucket takes to refill completely.
    pub period: Duration,
}

impl Rate {
    /// `burst` requests per `period`.
    pub const fn new(burst: u32, period: Duration) -> Rate {
        Rate { burst, period }
    }

    /// Parses `"N/period"`, where period is a unit (`s`, `m`, `h`) or a duration (`2s`).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let error = || format!("invalid rate {text:?} (e.g. \"1/s\", \"5/2s\", \"120/m\")");
        let (count, period) = text.trim().split_once('/').ok_or_else(error)?;
        let burst: u32 = count.trim().parse().map_err(|_| error())?;
        let period = period.trim();
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            humantime::parse_duration(period)
        } else {
            humantime::parse_duration(&format!("1{period}"))
        }
        .map_err(|_| error())?;
        if burst == 0 || period.is_zero() {
            return Err(error());
        }
        Ok(Rate { burst, period })
    }

    /// The time one token takes to come back.
    fn interval(self) -> Duration {
        self.period / self.burst.max(1)
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.burst,
            humantime::format_duration(self.period)
        )
    }
}

/// A sink's `rate_limit` key: a [`Rate`], or `"off"`. Absent means the sink's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateSetting {
    /// No client-side pacing (server 429s are still honoured).
    Off,
    /// Pace requests at this rate.
    Limit(Rate),
}

impl<'de> Deserialize<'de> for RateSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "off" {
            return Ok(RateSetting::Off);
        }
        Rate::parse(&text)
            .map(RateSetting::Limit)
            .map_err(serde::de::Error::custom)
    }
}

/// Resolves an optional setting against a sink's default.
pub fn effective(setting: Option<RateSetting>, default: Option<Rate>) -> Option<Rate> {
    match setting {
        None => default,
        Some(RateSetting::Off) => None,
        Some(RateSetting::Limit(rate)) => Some(rate),
    }
}

#[derive(Debug)]
struct State {
    /// Tokens available at `updated` (fractional while refilling).
    tokens: f64,
    updated: Instant,
    /// No request may start before this instant (from the last deferral).
    not_before: Option<Instant>,
}

/// A token bucket and a "not before" gate for one sink.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Option<Rate>,
    state: Mutex<State>,
}

impl RateLimiter {
    /// A limiter pacing at `rate`, or only gating deferrals when `None`.
    pub fn new(rate: Option<Rate>) -> RateLimiter {
        RateLimiter {
            rate,
            state: Mutex::new(State {
                tokens: rate.map_or(0.0, |r| f64::from(r.burst)),
                updated: Instant::now(),
                not_before: None,
            }),
        }
    }

    /// Waits until a request may start, and takes its token.
    pub async fn acquire(&self) {
        while let Some(wait) = self.try_acquire(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token if a request may start at `now`; otherwise says how long to wait.
    fn try_acquire(&self, now: Instant) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(not_before) = state.not_before {
            if now < not_before {
                return Some(not_before - now);
            }
            state.not_before = None;
        }
        let rate = self.rate?;
        let interval = rate.interval();
        let elapsed = now.saturating_duration_since(state.updated);
        let refill = if interval.is_zero() {
            f64::from(rate.burst)
        } else {
            elapsed.as_secs_f64() / interval.as_secs_f64()
        };
        state.tokens = (state.tokens + refill).min(f64::from(rate.burst));
        state.updated = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            return None;
        }
        let missing = 1.0 - state.tokens;
        // At least 1 ms, so rounding can never make this a busy loop.
        let wait = Duration::try_from_secs_f64(missing * interval.as_secs_f64())
            .unwrap_or(interval)
            .max(Duration::from_millis(1));
        Some(wait)
    }

    /// No request may start until `after` from now (capped at [`MAX_DEFER`]); a later deferral
    /// already in force is kept.
    pub fn defer(&self, after: Duration) {
        let until = Instant::now() + after.min(MAX_DEFER);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.not_before.is_none_or(|t| t < until) {
            state.not_before = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(Rate::parse("1/s"), Ok(Rate::new(1, Duration::from_secs(1))));
        assert_eq!(
            Rate::parse("5/2s"),
            Ok(Rate::new(5, Duration::from_secs(2)))
        );
        assert_eq!(
            Rate::parse("120/m"),
            Ok(Rate::new(120, Duration::from_secs(60)))
        );
        for bad in ["0/s", "1/0s", "x/s", "1", "1/parsec", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_paces_after_the_burst() {
        let limiter = RateLimiter::new(Some(Rate::new(2, Duration::from_secs(2))));
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "burst of 2 is immediate");
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn deferral_holds_every_request_until_it_passes() {
        let limiter = RateLimiter::new(None);
        let start = Instant::now();
        limiter.acquire().await;
        limiter.defer(Duration::from_secs(7));
        limiter.defer(Duration::from_secs(3)); // an earlier one never shortens the gate
        limiter.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(7));
        assert!(start.elapsed() < Duration::from_millis(7010));
        limiter.acquire().await;
        assert!(start.elapsed() < Duration::from_millis(7010));
    }

    #[tokio::test(start_paused = true)]
    async fn deferral_is_capped() {
        let limiter = RateLimiter::new(None);
        let start = Instant::now();
        limiter.defer(Duration::from_secs(10 * 24 * 3600));
        limiter.acquire().await;
        assert_eq!(start.elapsed(), MAX_DEFER);
    }

    #[tokio::test(start_paused = true)]
    async fn limiters_are_independent() {
        let slow = RateLimiter::new(None);
        let fast = RateLimiter::new(None);
        slow.defer(Duration::from_secs(60));
        let start = Instant::now();
        fast.acquire().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
