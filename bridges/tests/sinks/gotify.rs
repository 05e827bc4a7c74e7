//! Gotify against a loopback fake of `POST /message` (gotify.net/api-docs).

use std::time::Duration;

use herald_bridges::gotify;
use proptest::prelude::*;
use serde_json::json;

use super::ntfy::{any_alert, check_accounted, check_plain};
use super::server::{Reply, Request, Server};
use super::*;

const TOKEN: &str = "AgotifyAppToken.";

fn error(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": error, "errorCode": status, "errorDescription": description}),
    )
}

/// The fake, under a path prefix as a reverse proxy would mount it.
fn fake(script: Vec<Reply>) -> impl Fn(&Request, usize) -> Reply {
    move |req, index| {
        if req.method != "POST" || req.path() != "/gotify/message" {
            return error(404, "Not Found", "page not found");
        }
        if !req.query().is_empty() {
            return Reply::new(500, "test fake: the token must not be in the URL");
        }
        if req.header("x-gotify-key").as_deref() != Some(TOKEN) {
            return error(
                401,
                "Unauthorized",
                "you need to provide a valid access token or user credentials to access this api",
            );
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
            return error(400, "Bad Request", "invalid JSON");
        };
        if body["message"].as_str().unwrap_or("").is_empty() {
            return error(400, "Bad Request", "Field 'message' is required");
        }
        script.get(index).cloned().unwrap_or_else(|| {
            Reply::json(
                200,
                json!({"id": 25, "appid": 5, "message": body["message"], "title": body["title"],
                       "priority": body["priority"], "extras": body["extras"], "date": "2026-08-01T03:00:00Z"}),
            )
        })
    }
}

async fn gotify_sink(token: &str, script: Vec<Reply>) -> (Server, SinkConfig) {
    let server = Server::start(fake(script)).await;
    let config = config(
        "gotify",
        json!({"server": server.url("/gotify/"), "token": token}),
    );
    (server, config)
}

#[tokio::test]
async fn posts_plain_text_with_the_token_in_a_header() {
    let (server, config) = gotify_sink(TOKEN, vec![]).await;
    let alert = Alert::sample();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let request = &server.requests()[0];
    assert_eq!(request.uri, "/gotify/message", "no token in the URL");
    assert_eq!(request.header("content-type").unwrap(), "application/json");
    let body = request.json();
    assert_eq!(body, config.render(&alert));
    assert_eq!(
        body["title"],
        "WARNING: cron on web01.example.net: /usr/local/bin/backup.sh"
    );
    assert_eq!(body["priority"], 5);
    assert_eq!(
        body["extras"],
        json!({"client::display": {"contentType": "text/plain"}})
    );
    assert!(!body.to_string().contains(TOKEN));
}

#[tokio::test]
async fn hostile_mail_digests_and_recoveries() {
    let (server, config) = gotify_sink(TOKEN, vec![]).await;
    let sink = build(&config);
    let alerts = [
        hostile_alert(),
        digest_alert(12, 3),
        hostile_digest(),
        recovery_alert(),
    ];
    for alert in &alerts {
        assert_eq!(sink.deliver(alert).await, Outcome::Delivered);
    }
    let requests = server.requests();
    for (request, alert) in requests.iter().zip(&alerts) {
        let body = request.json();
        let (title, message) = (
            body["title"].as_str().unwrap(),
            body["message"].as_str().unwrap(),
        );
        check_plain(alert, title, message, gotify::LIMITS).unwrap();
    }
    assert_eq!(requests[0].json()["priority"], 8);
    check_accounted(&alerts[1], requests[1].json()["message"].as_str().unwrap()).unwrap();
    let recovery = requests[3].json();
    assert!(recovery["title"]
        .as_str()
        .unwrap()
        .starts_with("RESOLVED: cron on web01"));
    assert_eq!(recovery["priority"], 2);
}

#[tokio::test]
async fn answers_are_classified() {
    // A revoked token: rejected with Gotify's description, once.
    let (server, config) = gotify_sink("Arevoked", vec![]).await;
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert!(is_rejected(&outcome), "{outcome:?}");
    assert!(reason(&outcome).starts_with("HTTP 401: Unauthorized: you need"));
    assert_eq!(server.requests().len(), 1);
    for (reply, retried) in [
        (error(400, "Bad Request", "bad"), false),
        (error(403, "Forbidden", "you are not allowed"), false),
        (Reply::new(503, "unavailable"), true),
        (Reply::new(429, "").header("retry-after", "1"), true),
    ] {
        let (_server, config) = gotify_sink(TOKEN, vec![reply]).await;
        let outcome = build(&config).deliver(&Alert::sample()).await;
        assert_eq!(is_retry(&outcome), retried, "{outcome:?}");
        assert_eq!(is_rejected(&outcome), !retried, "{outcome:?}");
    }
    let (server, config) =
        gotify_sink(TOKEN, vec![Reply::new(429, "").header("retry-after", "1")]).await;
    let sink = build(&config);
    assert!(is_retry(&sink.deliver(&Alert::sample()).await));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
}

#[test]
fn status_table() {
    super::status_tables::assert_default_table(gotify::classify, "");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn payload_fits(alert in any_alert()) {
        let body = gotify::payload(&alert, None);
        let (title, message) = (body["title"].as_str().unwrap(), body["message"].as_str().unwrap());
        check_plain(&alert, title, message, gotify::LIMITS).map_err(TestCaseError::fail)?;
        if !alert.digest.is_empty() {
            check_accounted(&alert, message).map_err(TestCaseError::fail)?;
        }
    }
}
