//! ntfy against a loopback fake of its JSON publishing (docs.ntfy.sh/publish), plus the
//! checks shared by the plain-text push sinks (ntfy, Gotify, Pushover).

use std::time::Duration;

use base64::Engine as _;
use herald_bridges::present::PlainLimits;
use herald_bridges::{ntfy, Severity};
use proptest::prelude::*;
use serde_json::json;

use super::server::{Reply, Request, Server};
use super::*;

const TOKEN: &str = "tk_herald0test";

/// What a plain-text notification must be: within its limits, not empty, no control
/// characters but line feeds (none in the title), and a title that starts with the label and
/// the start of the alert's title.
pub fn check_plain(
    alert: &Alert,
    title: &str,
    message: &str,
    limits: PlainLimits,
) -> Result<(), String> {
    let cost = |text: &str| text.chars().map(limits.cost).sum::<usize>();
    if cost(title) > limits.title || cost(message) > limits.message {
        return Err(format!(
            "over the limits: {title:?} / {} long",
            message.len()
        ));
    }
    if message.trim().is_empty() {
        return Err("empty message".into());
    }
    for text in [title, message] {
        if text.chars().any(|c| c.is_control() && c != '\n') || title.contains('\n') {
            return Err(format!("control character in {text:?}"));
        }
    }
    let start: String = alert
        .title
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .take(20)
        .collect();
    let label = herald_bridges::present::severity_label(alert);
    if !title.starts_with(&format!("{label}: {start}")) {
        return Err(format!("title {title:?}"));
    }
    Ok(())
}

/// Every problem of a digest made by [`digest_alert`] is listed or counted in `message`.
pub fn check_accounted(alert: &Alert, message: &str) -> Result<(), String> {
    let listed = (1..=alert.digest.len())
        .filter(|&i| message.lines().any(|line| line == member_line(i)))
        .count() as u64;
    let more = message.lines().find_map(more_count).unwrap_or(0);
    if listed + more != herald_bridges::present::problems(alert) {
        return Err(format!("{listed} listed + {more} more: {message}"));
    }
    Ok(())
}

/// The fake: `POST /` with a JSON body naming the topic; the auth it was given.
fn fake(auth: Option<String>, script: Vec<Reply>) -> impl Fn(&Request, usize) -> Reply {
    move |req, index| {
        let error = |status: u16, code: u32, text: &str| {
            Reply::json(
                status,
                json!({"code": code, "http": status, "error": text, "link": "https://ntfy.sh/docs"}),
            )
        };
        if req.method != "POST" || req.path() != "/" {
            return error(404, 40401, "page not found");
        }
        if req.header("authorization") != auth {
            return error(401, 40101, "unauthorized");
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
            return error(
                400,
                40024,
                "invalid request: request body must be message JSON",
            );
        };
        if body["topic"] != "alerts" {
            return error(403, 40301, "forbidden");
        }
        let message = body["message"].as_str().unwrap_or("");
        if message.len() > ntfy::MESSAGE_BYTES {
            return error(413, 41301, "message too large");
        }
        let priority = body["priority"].as_u64().unwrap_or(0);
        if body.get("markdown").is_some() || !(1..=5).contains(&priority) {
            return error(400, 40007, "invalid priority or markdown");
        }
        script.get(index).cloned().unwrap_or_else(|| {
            Reply::json(
                200,
                json!({"id": "x", "time": 1, "event": "message", "topic": "alerts"}),
            )
        })
    }
}

async fn ntfy_sink(
    table: serde_json::Value,
    auth: Option<String>,
    script: Vec<Reply>,
) -> (Server, SinkConfig) {
    let server = Server::start(fake(auth, script)).await;
    let mut full = json!({"topic": "alerts", "server": server.url(""), "rate_limit": "off"});
    for (k, v) in table.as_object().unwrap() {
        full[k] = v.clone();
    }
    (server, config("ntfy", full))
}

fn bearer() -> Option<String> {
    Some(format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn publishes_json_with_a_token() {
    let (server, config) = ntfy_sink(json!({"token": TOKEN}), bearer(), vec![]).await;
    let alert = Alert::sample();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let request = &server.requests()[0];
    assert_eq!(request.header("content-type").unwrap(), "application/json");
    let body = request.json();
    assert_eq!(body, config.render(&alert));
    assert_eq!(body["topic"], "alerts");
    assert_eq!(
        body["title"],
        "WARNING: cron on web01.example.net: /usr/local/bin/backup.sh"
    );
    assert_eq!(body["priority"], 4);
    assert_eq!(body["tags"], json!(["warning", "cron"]));
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("backup.sh: error"), "{message}");
    assert!(
        message.contains("\n\nHost: web01.example.net\nUser: root"),
        "{message}"
    );
}

#[tokio::test]
async fn basic_auth_and_a_self_hosted_path() {
    let basic = base64::engine::general_purpose::STANDARD.encode("herald:pw");
    let (server, config) = ntfy_sink(
        json!({"username": "herald", "password": "pw"}),
        Some(format!("Basic {basic}")),
        vec![],
    )
    .await;
    assert_eq!(
        build(&config).deliver(&Alert::sample()).await,
        Outcome::Delivered
    );
    assert_eq!(server.requests().len(), 1);
    // Wrong credentials: ntfy's 401 is final.
    let (server, config) = ntfy_sink(json!({"token": "tk_wrong"}), bearer(), vec![]).await;
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert!(is_rejected(&outcome), "{outcome:?}");
    assert_eq!(reason(&outcome), "HTTP 401: unauthorized (40101)");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn hostile_mail_stays_plain_and_fits() {
    let (server, config) = ntfy_sink(json!({"token": TOKEN}), bearer(), vec![]).await;
    let alert = hostile_alert();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let body = server.requests()[0].json();
    assert_eq!(body["priority"], 5);
    assert!(body.get("markdown").is_none() && body.get("actions").is_none());
    let (title, message) = (
        body["title"].as_str().unwrap(),
        body["message"].as_str().unwrap(),
    );
    check_plain(&alert, title, message, ntfy::LIMITS).unwrap();
    assert!(
        message.len() > 3000,
        "the budget is used: {}",
        message.len()
    );
    assert!(
        title.starts_with("CRITICAL: Cron <root@web01> @everyone"),
        "{title}"
    );
    assert!(message.contains("Ünïcødé 日本語 🔥"));
}

#[tokio::test]
async fn digests_and_recoveries() {
    let (server, config) = ntfy_sink(json!({"token": TOKEN}), bearer(), vec![]).await;
    let sink = build(&config);
    for alert in [digest_alert(12, 3), hostile_digest(), recovery_alert()] {
        assert_eq!(sink.deliver(&alert).await, Outcome::Delivered);
    }
    let requests = server.requests();
    let digest = requests[0].json();
    let message = digest["message"].as_str().unwrap();
    assert!(message.contains(&member_line(1)) && message.contains(&member_line(12)));
    assert!(message.contains("… and 3 more"), "{message}");
    check_accounted(&digest_alert(12, 3), message).unwrap();
    let hostile = requests[1].json();
    check_plain(
        &hostile_digest(),
        hostile["title"].as_str().unwrap(),
        hostile["message"].as_str().unwrap(),
        ntfy::LIMITS,
    )
    .unwrap();
    let recovery = requests[2].json();
    assert!(recovery["title"]
        .as_str()
        .unwrap()
        .starts_with("RESOLVED: cron on web01"));
    assert_eq!(recovery["priority"], 3);
    assert_eq!(recovery["tags"][0], "white_check_mark");
    assert!(!recovery["message"].as_str().unwrap().contains("```"));
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let (server, config) = ntfy_sink(
        json!({"token": TOKEN}),
        bearer(),
        vec![
            Reply::json(
                429,
                json!({"code": 42901, "http": 429, "error": "limit reached: too many requests"}),
            )
            .header("retry-after", "1"),
            Reply::new(502, "bad gateway"),
        ],
    )
    .await;
    let sink = build(&config);
    let first = sink.deliver(&Alert::sample()).await;
    assert_eq!(
        retry_after(&first),
        Some(Duration::from_secs(1)),
        "{first:?}"
    );
    assert!(reason(&first).contains("42901"));
    assert!(is_retry(&sink.deliver(&Alert::sample()).await));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
}

#[test]
fn status_table() {
    super::status_tables::assert_default_table(ntfy::classify, r#"{"code":1,"error":"e"}"#);
}

/// An arbitrary alert: hostile text of any Unicode, any severity, sometimes a recovery.
pub fn any_alert() -> impl Strategy<Value = Alert> {
    let text = |max: usize| {
        proptest::collection::vec(any::<char>(), 0..max)
            .prop_map(|c| c.into_iter().collect::<String>())
    };
    (
        ("[A-Za-z0-9]{1,20}", text(400)),
        text(3000),
        text(20_000),
        proptest::option::of(text(300)),
        0..3u8,
        any::<bool>(),
        0..20usize,
    )
        .prop_map(
            |((prefix, rest), summary, body, host, severity, resolve, members)| {
                let mut alert = if members >= 2 {
                    digest_alert(members, u64::from(severity) * 7)
                } else {
                    Alert::sample()
                };
                alert.title = format!("{prefix}{rest}");
                alert.summary = summary;
                alert.body = body;
                alert.host = host;
                alert.severity =
                    [Severity::Info, Severity::Warning, Severity::Critical][usize::from(severity)];
                alert.resolve = resolve;
                alert
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn payload_fits(alert in any_alert()) {
        let body = ntfy::payload(&alert, "alerts", None);
        let (title, message) = (body["title"].as_str().unwrap(), body["message"].as_str().unwrap());
        check_plain(&alert, title, message, ntfy::LIMITS).map_err(TestCaseError::fail)?;
        if !alert.digest.is_empty() {
            check_accounted(&alert, message).map_err(TestCaseError::fail)?;
        }
        prop_assert!((1..=5).contains(&body["priority"].as_u64().unwrap()));
    }
}
