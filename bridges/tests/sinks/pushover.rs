//! Pushover against a loopback fake of its Message API (pushover.net/api).

use std::time::Duration;

use herald_bridges::{pushover, Severity};
use proptest::prelude::*;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::json;

use super::fakes::form;
use super::ntfy::{any_alert, check_accounted, check_plain};
use super::server::{Reply, Request, Server};
use super::*;

const TOKEN: &str = "azGDORePK8gMaC0QOYAMyEEuzJnyUi";
const USER: &str = "uQiRzpo4DXghDmr9QzzfQu27cmVRsG";

fn invalid(errors: &[&str]) -> Reply {
    Reply::json(
        400,
        json!({"status": 0, "request": "5042853c-402d-4a18-abcb-168734a801de", "errors": errors}),
    )
}

fn field<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The fake: the Message API's checks, as documented.
fn fake(script: Vec<Reply>) -> impl Fn(&Request, usize) -> Reply {
    move |req, index| {
        if req.method != "POST" || req.path() != "/1/messages.json" {
            return Reply::new(404, "");
        }
        if req.header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
            return invalid(&["message cannot be blank"]);
        }
        let form = form(req);
        if field(&form, "token") != Some(TOKEN) {
            return invalid(&["application token is invalid"]);
        }
        if field(&form, "user") != Some(USER) {
            return invalid(&[
                "user identifier is not a valid user, group, or subscribed user key",
            ]);
        }
        let message = field(&form, "message").unwrap_or("");
        if message.is_empty() || message.chars().count() > pushover::MESSAGE_CHARS {
            return invalid(&["message cannot be blank or longer than 1024 characters"]);
        }
        if field(&form, "title").unwrap_or("").chars().count() > pushover::TITLE_CHARS {
            return invalid(&["title is too long"]);
        }
        if field(&form, "html").is_some() {
            return invalid(&["test fake: herald must not send html"]);
        }
        match field(&form, "priority") {
            Some("-1" | "0" | "1") => {}
            Some("2") => {
                let secs = |name| field(&form, name).and_then(|v| v.parse::<u64>().ok());
                if secs("retry").is_none_or(|r| r < 30) {
                    return invalid(&["retry is invalid"]);
                }
                if secs("expire").is_none_or(|e| e > 10_800) {
                    return invalid(&["expire must be supplied with priority=2"]);
                }
            }
            _ => return invalid(&["priority is invalid"]),
        }
        script.get(index).cloned().unwrap_or_else(|| {
            Reply::json(
                200,
                json!({"status": 1, "request": "647d2300-702c-4b38-8b2f-d56326ae460b"}),
            )
        })
    }
}

async fn pushover_sink(extra: serde_json::Value, script: Vec<Reply>) -> (Server, SinkConfig) {
    let server = Server::start(fake(script)).await;
    let mut table =
        json!({"token": TOKEN, "user": USER, "api_url": server.url("/1/messages.json")});
    for (k, v) in extra.as_object().unwrap() {
        table[k] = v.clone();
    }
    (server, config("pushover", table))
}

#[tokio::test]
async fn sends_a_form_with_token_and_user() {
    let (server, config) = pushover_sink(
        json!({"url": "https://grafana.example.net/d/ops", "url_title": "Dashboard", "device": "phone"}),
        vec![],
    )
    .await;
    let alert = Alert::sample();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let form = form(&server.requests()[0]);
    assert_eq!(
        field(&form, "title"),
        Some("WARNING: cron on web01.example.net: /usr/local/bin/backup.sh")
    );
    assert_eq!(field(&form, "priority"), Some("0"));
    assert_eq!(field(&form, "url_title"), Some("Dashboard"));
    assert_eq!(field(&form, "device"), Some("phone"));
    assert!(field(&form, "retry").is_none());
    // What `render` shows is what was sent, secrets redacted.
    let rendered = config.render(&alert);
    for (name, value) in &form {
        let shown = rendered[name.as_str()].as_str().unwrap();
        match name.as_str() {
            "token" | "user" => assert_eq!(shown, "**REDACTED**"),
            _ => assert_eq!(shown, value, "{name}"),
        }
    }
}

#[tokio::test]
async fn emergencies_repeat_until_acknowledged() {
    let (server, config) = pushover_sink(
        json!({"emergency": true, "retry": "2m", "expire": "3h"}),
        vec![],
    )
    .await;
    let sink = build(&config);
    let mut critical = Alert::sample();
    critical.severity = Severity::Critical;
    let mut recovery = recovery_alert();
    recovery.severity = Severity::Critical;
    for alert in [&critical, &recovery, &hostile_alert()] {
        assert_eq!(sink.deliver(alert).await, Outcome::Delivered);
    }
    let requests = server.requests();
    let first = form(&requests[0]);
    assert_eq!(field(&first, "priority"), Some("2"));
    assert_eq!(field(&first, "retry"), Some("120"));
    assert_eq!(field(&first, "expire"), Some("10800"));
    let second = form(&requests[1]);
    assert_eq!(
        field(&second, "priority"),
        Some("-1"),
        "a recovery is quiet"
    );
    assert!(field(&second, "title").unwrap().starts_with("RESOLVED: "));
    let hostile = form(&requests[2]);
    check_plain(
        &hostile_alert(),
        field(&hostile, "title").unwrap(),
        field(&hostile, "message").unwrap(),
        pushover::LIMITS,
    )
    .unwrap();
}

#[tokio::test]
async fn digests_list_their_members_within_1024() {
    let (server, config) = pushover_sink(json!({}), vec![]).await;
    let sink = build(&config);
    for alert in [digest_alert(50, 200), hostile_digest()] {
        assert_eq!(sink.deliver(&alert).await, Outcome::Delivered);
    }
    let requests = server.requests();
    let message = field(&form(&requests[0]), "message").unwrap().to_owned();
    assert!(message.contains(&member_line(1)), "{message}");
    check_accounted(&digest_alert(50, 200), &message).unwrap();
    let hostile = form(&requests[1]);
    check_plain(
        &hostile_digest(),
        field(&hostile, "title").unwrap(),
        field(&hostile, "message").unwrap(),
        pushover::LIMITS,
    )
    .unwrap();
}

#[tokio::test]
async fn answers_are_classified() {
    // Refused input: rejected once, with Pushover's errors.
    let (server, config) = pushover_sink(json!({"user": "uwrongwrongwrong"}), vec![]).await;
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert!(is_rejected(&outcome), "{outcome:?}");
    assert!(reason(&outcome).contains("user identifier is not a valid user"));
    assert_eq!(server.requests().len(), 1);
    // Over the monthly limit, then a server error (no sooner than 5 s), then a 200 with a
    // status other than 1.
    let (_server, config) = pushover_sink(
        json!({}),
        vec![
            Reply::json(
                429,
                json!({"status": 0, "errors": ["application is over its message limit"]}),
            )
            .header("retry-after", "1"),
            Reply::new(500, "oops"),
            Reply::json(200, json!({"status": 0, "errors": ["message is invalid"]})),
        ],
    )
    .await;
    let sink = build(&config);
    let limited = sink.deliver(&Alert::sample()).await;
    assert_eq!(
        retry_after(&limited),
        Some(Duration::from_secs(1)),
        "{limited:?}"
    );
    let failed = sink.deliver(&Alert::sample()).await;
    assert_eq!(
        retry_after(&failed),
        Some(pushover::SERVER_ERROR_WAIT),
        "{failed:?}"
    );
    // The 5 s wait holds the next request back; Pushover then refuses the message.
    let start = std::time::Instant::now();
    let refused = sink.deliver(&Alert::sample()).await;
    assert!(start.elapsed() >= Duration::from_millis(4900));
    assert_eq!(reason(&refused), "Pushover error: message is invalid");
}

#[test]
fn invalid_secrets_are_refused_without_their_value() {
    const MARK: &str = "SEKRIT";
    for (type_name, table) in [
        (
            "pushover",
            json!({"token": format!("{MARK} key"), "user": USER}),
        ),
        (
            "pushover",
            json!({"token": TOKEN, "user": format!("{MARK}\n")}),
        ),
        (
            "ntfy",
            json!({"topic": "alerts", "token": format!("tk_{MARK}\r\nX-Evil: 1")}),
        ),
        (
            "ntfy",
            json!({"topic": "alerts", "username": format!("{MARK}:x"), "password": MARK}),
        ),
        (
            "gotify",
            json!({"server": "https://gotify.example.net", "token": format!("{MARK}\n")}),
        ),
        (
            "gotify",
            json!({"server": format!("{MARK} not a url"), "token": "A"}),
        ),
    ] {
        let config = SinkConfig::deserialize_typed(type_name, table).unwrap();
        let error = config.validate().expect_err(type_name).to_string();
        assert!(!error.contains(MARK), "{error}");
        assert!(config.build().is_err());
    }
}

#[test]
fn status_table() {
    for code in 100..=599u16 {
        let status = StatusCode::from_u16(code).unwrap();
        let h = HeaderMap::new();
        let ok = pushover::classify(status, &h, r#"{"status":1,"request":"r"}"#);
        let refused = pushover::classify(status, &h, r#"{"status":0,"errors":["e"]}"#);
        let kind = |o: &Outcome| match o {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Rejected { .. } => "rejected",
        };
        let expected = match code {
            200..=299 => "delivered",
            408 | 429 => "retry",
            501 => "rejected",
            500..=599 => "retry",
            _ => "rejected",
        };
        assert_eq!(kind(&ok), expected, "{code}");
        let expected = if (200..300).contains(&code) {
            "rejected"
        } else {
            expected
        };
        assert_eq!(kind(&refused), expected, "{code}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn form_fits(alert in any_alert()) {
        let rendered = SinkConfig::deserialize_typed(
            "pushover",
            json!({"token": TOKEN, "user": USER, "emergency": true}),
        )
        .unwrap()
        .render(&alert);
        let (title, message) = (rendered["title"].as_str().unwrap(), rendered["message"].as_str().unwrap());
        check_plain(&alert, title, message, pushover::LIMITS).map_err(TestCaseError::fail)?;
        if !alert.digest.is_empty() {
            check_accounted(&alert, message).map_err(TestCaseError::fail)?;
        }
        let priority: i8 = rendered["priority"].as_str().unwrap().parse().unwrap();
        prop_assert!((-1..=2).contains(&priority));
        prop_assert_eq!(priority == 2, rendered.get("retry").is_some());
    }
}
