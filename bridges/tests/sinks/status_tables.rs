//! G4: every status from 100 to 599 → the expected outcome, per sink.

use herald_bridges::{discord, pagerduty, slack, twilio, webhook};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::*;

fn kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered => "delivered",
        Outcome::Retry { .. } => "retry",
        Outcome::Rejected { .. } => "rejected",
    }
}

/// The default table: 2xx delivered; 408, 429, 5xx but 501 retried; the rest rejected.
fn default_table(code: u16) -> &'static str {
    match code {
        200..=299 => "delivered",
        408 | 429 => "retry",
        501 => "rejected",
        500..=599 => "retry",
        _ => "rejected",
    }
}

fn each_status(mut check: impl FnMut(u16, StatusCode)) {
    for code in 100..=599u16 {
        check(code, StatusCode::from_u16(code).unwrap());
    }
}

#[test]
fn slack_webhook_table() {
    each_status(|code, status| {
        let outcome = slack::classify_webhook(status, &HeaderMap::new(), "ok");
        assert_eq!(kind(&outcome), default_table(code), "{code}");
    });
}

#[test]
fn slack_api_table() {
    each_status(|code, status| {
        let h = HeaderMap::new();
        let ok = slack::classify_api(status, &h, r#"{"ok":true}"#);
        assert_eq!(kind(&ok), default_table(code), "{code}");
        let refused =
            slack::classify_api(status, &h, r#"{"ok":false,"error":"channel_not_found"}"#);
        let expected = if (200..300).contains(&code) {
            "rejected"
        } else {
            default_table(code)
        };
        assert_eq!(kind(&refused), expected, "{code}");
        let limited = slack::classify_api(status, &h, r#"{"ok":false,"error":"ratelimited"}"#);
        let expected = if (200..300).contains(&code) {
            "retry"
        } else {
            default_table(code)
        };
        assert_eq!(kind(&limited), expected, "{code}");
    });
}

#[test]
fn discord_table() {
    each_status(|code, status| {
        let outcome = discord::classify(status, &HeaderMap::new(), r#"{"code":0,"message":"m"}"#);
        assert_eq!(kind(&outcome), default_table(code), "{code}");
    });
}

#[test]
fn pagerduty_table() {
    each_status(|code, status| {
        let outcome = pagerduty::classify(status, &HeaderMap::new(), "");
        assert_eq!(kind(&outcome), default_table(code), "{code}");
        if code == 429 {
            assert_eq!(retry_after(&outcome), Some(pagerduty::DEFAULT_429_WAIT));
        }
    });
}

#[test]
fn twilio_table() {
    each_status(|code, status| {
        // Twilio's error code only words the reason: the status decides, as everywhere.
        let outcome =
            twilio::classify(status, &HeaderMap::new(), r#"{"code":21211,"message":"m"}"#);
        assert_eq!(kind(&outcome), default_table(code), "{code}");
    });
}

#[test]
fn webhook_table() {
    each_status(|code, status| {
        let outcome = webhook::classify(status, &HeaderMap::new(), "");
        assert_eq!(kind(&outcome), default_table(code), "{code}");
    });
}

/// Every status from 100 to 599 through `classify` with `body`: the default table. The sinks
/// that keep it (and only word their reasons differently) share this check.
pub fn assert_default_table(classify: fn(StatusCode, &HeaderMap, &str) -> Outcome, body: &str) {
    for code in 100..=599u16 {
        let outcome = classify(StatusCode::from_u16(code).unwrap(), &HeaderMap::new(), body);
        assert_eq!(kind(&outcome), default_table(code), "{code}");
    }
}
