//! Sink tests against loopback servers that behave like the real APIs (see `fakes`), plus
//! exhaustive status tables, property tests on payload limits and secret-leak checks.

mod capture;
mod fakes;
mod limits;
mod server;

mod discord;
mod exec;
mod gotify;
mod irc;
mod matrix;
mod ntfy;
mod opsgenie;
mod pagerduty;
mod proptests;
mod pushover;
mod secrets;
mod slack;
mod status_tables;
mod teams;
mod telegram;
mod twilio;
mod webhook;

use std::time::Duration;

use herald_bridges::{Alert, Kind, Member, Outcome, Repeats, Severity, Sink, SinkConfig};

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

/// The group key of [`digest_alert`]: cron failures of one command, across hosts.
pub const GROUP_KEY: &str = "cron:-:/usr/local/bin/backup.sh";

/// A digest as dispatch makes it: `n` hosts failing the same cron job three times each
/// between 03:00 and 03:12, and `more` problems beyond those listed.
pub fn digest_alert(n: usize, more: u64) -> Alert {
    let total = n as u64 + more;
    let mut alert = Alert::sample();
    alert.host = None;
    alert.title = format!("{total} problems: cron /usr/local/bin/backup.sh");
    alert.summary = format!("web01, web02, web03, … ({total} hosts)");
    alert.body = String::new();
    alert.dedup_key = GROUP_KEY.into();
    alert.group_key = Some(GROUP_KEY.into());
    alert.digest = (1..=n)
        .map(|i| {
            let host = format!("web{i:02}.example.net");
            Member {
                kind: Kind::Cron,
                dedup_key: format!("cron:{host}:root:/usr/local/bin/backup.sh"),
                title: format!("cron on {host}: /usr/local/bin/backup.sh"),
                host: Some(host),
                user: Some("root".into()),
                command: Some("/usr/local/bin/backup.sh".into()),
                failed: Some(true),
                severity: Severity::Warning,
                summary: "backup.sh: error: cannot stat /srv/data".into(),
                count: 3,
                first: "2026-08-01T03:00:00Z".into(),
                last: "2026-08-01T03:12:00Z".into(),
                reminder: false,
            }
        })
        .collect();
    alert.digest_more = more;
    alert
}

/// The biggest digest dispatch makes, of the worst members: 50 (plus 200 unlisted), each
/// with the hostile text of [`hostile_alert`] in a 1,000-character title, host and command.
pub fn hostile_digest() -> Alert {
    let hostile = hostile_alert();
    let mut alert = digest_alert(Alert::DIGEST_MAX_MEMBERS, 200);
    alert.severity = Severity::Critical;
    alert.title = hostile.title.clone();
    for (i, member) in alert.digest.iter_mut().enumerate() {
        let text: String = format!("{i} {}", hostile.title)
            .chars()
            .cycle()
            .take(1000)
            .collect();
        member.title = text.clone();
        member.summary = text.clone();
        member.host = Some(text.clone());
        member.command = (i % 2 == 0).then(|| text.clone());
        member.user = Some(text.clone());
        member.first = text.clone();
        member.last = text;
        member.count = u64::MAX;
    }
    alert
}

/// A reminder as dispatch makes it: 37 more failures since 03:00.
pub fn reminder_alert() -> Alert {
    let mut alert = Alert::sample();
    alert.repeats = Some(Repeats {
        count: 37,
        since: "2026-08-01T03:00:00Z".into(),
        last: "2026-08-01T05:00:00Z".into(),
    });
    alert
}

/// A recovery, grouped as dispatch sends it.
pub fn recovery_alert() -> Alert {
    let mut alert = Alert::sample();
    alert.resolve = true;
    alert.severity = Severity::Info;
    alert.title = "cron on web01.example.net: /usr/local/bin/backup.sh succeeded".into();
    alert.summary = "backup.sh: done".into();
    alert.group_key = Some(GROUP_KEY.into());
    alert
}

/// The member line [`digest_alert`] shows for host `i`.
pub fn member_line(i: usize) -> String {
    format!("web{i:02}.example.net: /usr/local/bin/backup.sh ×3 (03:00–03:12)")
}

/// The number in a digest's last line "… and N more"; `None` for any other line.
pub fn more_count(line: &str) -> Option<u64> {
    line.strip_prefix("… and ")
        .and_then(|l| l.strip_suffix(" more"))
        .and_then(|n| n.parse().ok())
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
