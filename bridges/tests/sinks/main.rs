//! Sink tests against loopback servers that behave like the real APIs (see `fakes`), plus
//! exhaustive status tables, property tests on payload limits and secret-leak checks.

mod capture;
mod fakes;
mod limits;
mod server;

mod discord;
mod irc;
mod pagerduty;
mod proptests;
mod secrets;
mod slack;
mod status_tables;
mod twilio;
mod webhook;

use std::time::Duration;

use herald_bridges::{Alert, Outcome, Severity, Sink, SinkConfig};

/// Builds a sink from a JSON table, through the same path as the config loader.
pub fn config(type_name: &str, table: serde_json::Value) -> SinkConfig {
    let config = SinkConfig::deserialize_typed(type_name, table).expect("config deserializes");
    config.validate().expect("config validates");
    config
}

pub fn build(config: &SinkConfig) -> Box<dyn Sink> {
    config.build().expect("sink builds")
}

/// Mail that tries everything: mentions of every kind, markup, code fences, control
/// characters, non-ASCII and emoji, a 50 KB body and oversized fields.
pub fn hostile_alert() -> Alert {
    let mut alert = Alert::sample();
    let poison = "@everyone @here <!channel> <!here|@here> <@U024BE7LH> <@&123456> <#C024BE7LR> \
                  <!subteam^S123> *bold* _it_ ~s~ ``` & &amp; <script>alert(1)</script> \
                  Ünïcødé 日本語 🔥👩‍👩‍👧 \u{202E}rtl";
    alert.severity = Severity::Critical;
    alert.title = format!("Cron <root@web01> {poison}\r\nInjected: line");
    alert.summary = format!("{poison} {}", "summary ".repeat(500));
    alert.host = Some(format!("web01 {poison}"));
    alert.user = Some("root`@everyone`".into());
    alert.command = Some(format!("/bin/sh -c '{}'", "x".repeat(5000)));
    alert.exit_status = Some(1);
    let line = format!("{poison}\r\n```\n@everyone\n\0\x07\t");
    let mut body = String::new();
    while body.len() < 50 * 1024 {
        body.push_str(&line);
    }
    alert.body = body;
    alert.dedup_key = format!("cron:{}", "k".repeat(400));
    alert
        .facts
        .insert("huge".into(), serde_json::json!("f".repeat(20_000)));
    alert
}

pub fn is_retry(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Retry { .. })
}

pub fn is_rejected(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Rejected { .. })
}

pub fn retry_after(outcome: &Outcome) -> Option<Duration> {
    match outcome {
        Outcome::Retry { after, .. } => *after,
        _ => None,
    }
}

pub fn reason(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Delivered => "",
        Outcome::Retry { reason, .. } | Outcome::Rejected { reason } => reason,
    }
}

/// The time between two recorded requests.
pub fn gap(requests: &[server::Request], a: usize, b: usize) -> Duration {
    requests[b].at.duration_since(requests[a].at)
}
