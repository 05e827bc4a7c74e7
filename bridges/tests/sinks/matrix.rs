//! The Matrix sink against a fake homeserver (`PUT …/send/m.room.message/{txnId}`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use herald_bridges::matrix;
use serde_json::{json, Value};

use super::server::{Reply, Request, Server};
use super::*;

const TOKEN: &str = "syt_aGVyYWxk_fake_token";
const ROOM: &str = "!ops/room?x:example.org";
/// [`ROOM`] as one percent-encoded path segment.
const ROOM_SEGMENT: &str = "!ops%2Froom%3Fx:example.org";

fn error(status: u16, errcode: &str, error: &str) -> Reply {
    Reply::json(status, json!({"errcode": errcode, "error": error}))
}

/// What a homeserver accepts of an `m.room.message`: a body, an HTML `formatted_body` of
/// the recommended tags, the event within 65,536 bytes.
fn check(content: &Value) -> Result<(), String> {
    let size = serde_json::to_vec(content).unwrap().len();
    if size > 60_000 {
        return Err(format!("event of {size} bytes"));
    }
    if !matches!(content["msgtype"].as_str(), Some("m.text" | "m.notice")) {
        return Err("msgtype".into());
    }
    if content["body"].as_str().is_none_or(str::is_empty) {
        return Err("body missing".into());
    }
    if content["format"] != "org.matrix.custom.html" {
        return Err("format".into());
    }
    let html = content["formatted_body"].as_str().ok_or("formatted_body")?;
    let mut rest = html;
    let mut open = Vec::new();
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').ok_or("unclosed <")? + start;
        match &rest[start + 1..end] {
            "br" => {}
            tag @ ("b" | "pre") => open.push(tag),
            tag @ ("/b" | "/pre") if open.pop() == Some(&tag[1..]) => {}
            other => return Err(format!("tag <{other}>")),
        }
        rest = &rest[end + 1..];
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed {open:?}"))
    }
}

/// A fake homeserver: checks the path, token and content; remembers transaction IDs and
/// answers a repeated one with the first event, as the spec requires.
fn fake(script: Vec<Reply>) -> impl Fn(&Request, usize) -> Reply + Send + Sync {
    let seen: Mutex<HashMap<String, usize>> = Mutex::default();
    move |req, index| {
        let prefix = format!("/_matrix/client/v3/rooms/{ROOM_SEGMENT}/send/m.room.message/");
        let Some(txn) = req.path().strip_prefix(&prefix) else {
            return error(404, "M_UNRECOGNIZED", "Unrecognized request");
        };
        if req.method != "PUT" {
            return error(405, "M_UNRECOGNIZED", "Unrecognized request");
        }
        if req.header("authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return error(401, "M_UNKNOWN_TOKEN", "Invalid access token passed.");
        }
        if let Err(why) = check(&req.json()) {
            return error(400, "M_BAD_JSON", &why);
        }
        if let Some(reply) = script.get(index) {
            return reply.clone();
        }
        let mut seen = seen.lock().unwrap();
        let first = *seen.entry(txn.to_owned()).or_insert(index);
        Reply::json(200, json!({"event_id": format!("$event{first}")}))
    }
}

async fn matrix(script: Vec<Reply>) -> (Server, SinkConfig) {
    let server = Server::start(fake(script)).await;
    let config = config(
        "matrix",
        json!({"homeserver": server.url("/"), "access_token": TOKEN, "room_id": ROOM,
               "rate_limit": "off"}),
    );
    (server, config)
}

#[tokio::test]
async fn sends_plain_and_html_bodies() {
    let (server, config) = matrix(vec![]).await;
    let alert = Alert::sample();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let request = &server.requests()[0];
    let content = request.json();
    assert_eq!(content["msgtype"], "m.text");
    let body = content["body"].as_str().unwrap();
    assert!(
        body.starts_with("WARNING: cron on web01.example.net: /usr/local/bin/backup.sh\n\n"),
        "{body}"
    );
    assert!(body.contains("Host: web01.example.net"));
    let html = content["formatted_body"].as_str().unwrap();
    assert!(
        html.starts_with("<b>WARNING: cron on web01.example.net"),
        "{html}"
    );
    assert!(
        html.contains("<br><b>Host:</b> web01.example.net<br>"),
        "{html}"
    );
    assert!(html.contains("<pre>backup.sh: error"));
    assert_eq!(config.render(&alert), content);
    let txn = request.path().rsplit('/').next().unwrap();
    assert_eq!(txn, matrix::txn_id(&alert, ROOM));
}

#[tokio::test]
async fn a_retry_reuses_the_transaction() {
    let (server, config) = matrix(vec![Reply::new(502, "Bad Gateway")]).await;
    let sink = build(&config);
    let alert = Alert::sample();
    assert!(is_retry(&sink.deliver(&alert).await));
    assert_eq!(sink.deliver(&alert).await, Outcome::Delivered);
    assert_eq!(sink.deliver(&alert).await, Outcome::Delivered);
    let mut reminder = reminder_alert();
    reminder.message_id = alert.message_id.clone();
    assert_eq!(sink.deliver(&reminder).await, Outcome::Delivered);
    let paths: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert_eq!(paths[0], paths[1], "the same alert: the same txnId");
    assert_eq!(paths[1], paths[2]);
    assert_ne!(paths[2], paths[3], "a reminder is another message");
}

#[tokio::test]
async fn notices_when_configured() {
    let server = Server::start(fake(vec![])).await;
    let config = config(
        "matrix",
        json!({"homeserver": server.url(""), "access_token": TOKEN, "room_id": ROOM,
               "msgtype": "m.notice"}),
    );
    assert_eq!(
        build(&config).deliver(&Alert::sample()).await,
        Outcome::Delivered
    );
    assert_eq!(server.requests()[0].json()["msgtype"], "m.notice");
}

#[tokio::test]
async fn hostile_mail_is_escaped_and_fits() {
    let (server, config) = matrix(vec![]).await;
    assert_eq!(
        build(&config).deliver(&hostile_alert()).await,
        Outcome::Delivered
    );
    let content = server.requests()[0].json();
    let html = content["formatted_body"].as_str().unwrap();
    assert!(!html.contains("<script>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&lt;@U024BE7LH&gt;"));
    check(&config.render(&hostile_digest())).unwrap();
}

#[tokio::test]
async fn digest_and_recovery() {
    let (server, config) = matrix(vec![]).await;
    let sink = build(&config);
    assert_eq!(sink.deliver(&digest_alert(12, 3)).await, Outcome::Delivered);
    assert_eq!(sink.deliver(&recovery_alert()).await, Outcome::Delivered);
    let requests = server.requests();
    let digest = requests[0].json();
    let html = digest["formatted_body"].as_str().unwrap();
    for i in 1..=12 {
        assert!(
            html.contains(&format!("{}<br>", member_line(i))),
            "{i}: {html}"
        );
    }
    assert!(html.ends_with("… and 3 more"), "{html}");
    let body = digest["body"].as_str().unwrap();
    assert!(body.contains(&member_line(12)));
    let recovery = requests[1].json();
    let html = recovery["formatted_body"].as_str().unwrap();
    assert!(html.starts_with("<b>RESOLVED: cron on web01"), "{html}");
    assert!(!html.contains("<pre>"));
}

#[tokio::test]
async fn limit_exceeded_waits_retry_after_ms() {
    let (server, config) = matrix(vec![Reply::json(
        429,
        json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 1000}),
    )])
    .await;
    let sink = build(&config);
    let first = sink.deliver(&Alert::sample()).await;
    assert_eq!(retry_after(&first), Some(Duration::from_secs(1)));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
}

#[tokio::test]
async fn refusals_are_rejected() {
    for (reply, expected) in [
        (
            error(403, "M_FORBIDDEN", "User @herald:example.org not in room"),
            "HTTP 403: M_FORBIDDEN: User @herald:example.org not in room",
        ),
        (
            error(401, "M_UNKNOWN_TOKEN", "Invalid access token passed."),
            "HTTP 401: M_UNKNOWN_TOKEN: Invalid access token passed.",
        ),
    ] {
        let (_server, config) = matrix(vec![reply]).await;
        let outcome = build(&config).deliver(&Alert::sample()).await;
        assert_eq!(
            outcome,
            Outcome::Rejected {
                reason: expected.into()
            }
        );
    }
    // A wrong token, as the fake checks it.
    let server = Server::start(fake(vec![])).await;
    let config = config(
        "matrix",
        json!({"homeserver": server.url(""), "access_token": "syt_wrong", "room_id": ROOM}),
    );
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert!(is_rejected(&outcome) && !reason(&outcome).contains("syt_wrong"));
}

#[test]
fn status_table() {
    super::status_tables::assert_default_table(
        matrix::classify,
        r#"{"errcode":"M_UNKNOWN","error":"x"}"#,
    );
}

#[test]
fn room_aliases_and_bad_tokens_are_refused() {
    for (table, key) in [
        (
            json!({"homeserver": "https://m.example", "access_token": "t", "room_id": "#ops:example.org"}),
            "room_id",
        ),
        (
            json!({"homeserver": "https://m.example", "access_token": "SEKRIT\n", "room_id": "!r:x"}),
            "access_token",
        ),
        (
            json!({"homeserver": "https://m.example", "access_token": " ", "room_id": "!r:x"}),
            "access_token",
        ),
        (
            json!({"homeserver": "matrix.example.org", "access_token": "t", "room_id": "!r:x"}),
            "homeserver",
        ),
    ] {
        let config = SinkConfig::deserialize_typed("matrix", table).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.starts_with(&format!("{key}:")), "{error}");
        assert!(!error.contains("SEKRIT"));
    }
}
