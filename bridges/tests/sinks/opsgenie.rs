//! The Opsgenie sink against a fake Alert API v2.

use std::time::Duration;

use herald_bridges::opsgenie;
use serde_json::{json, Value};

use super::server::{Reply, Request, Server};
use super::*;

const KEY: &str = "eb243592-faa2-4ba2-a551q-1afdf565c889";

fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"message": message, "took": 0.001, "requestId": "r-1"}),
    )
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

/// The create request's rules \[OG-FIELDS\].
fn check(alert: &Value) -> Result<(), String> {
    let ensure = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    ensure(
        (1..=130).contains(&chars(&alert["message"])),
        "message length",
    )?;
    ensure(chars(&alert["alias"]) <= 512, "alias over 512")?;
    ensure(
        chars(&alert["description"]) <= 15_000,
        "description over 15000",
    )?;
    ensure(chars(&alert["source"]) <= 100, "source over 100")?;
    ensure(chars(&alert["entity"]) <= 512, "entity over 512")?;
    let tags = alert["tags"].as_array().ok_or("tags")?;
    ensure(tags.len() <= 20, "over 20 tags")?;
    ensure(
        tags.iter().all(|t| (1..=50).contains(&chars(t))),
        "tag length",
    )?;
    let details = alert["details"].as_object().ok_or("details")?;
    let total: usize = details
        .iter()
        .map(|(k, v)| k.chars().count() + chars(v))
        .sum();
    ensure(total <= 8000, "details over 8000")?;
    ensure(
        details.values().all(Value::is_string),
        "details not strings",
    )?;
    ensure(
        matches!(
            alert["priority"].as_str(),
            Some("P1" | "P2" | "P3" | "P4" | "P5")
        ),
        "priority",
    )
}

/// A fake Alert API: create at `/v2/alerts`, close at `/v2/alerts/{alias}/close`.
fn fake(script: Vec<Reply>) -> impl Fn(&Request, usize) -> Reply + Send + Sync {
    move |req, index| {
        if req.header("authorization").as_deref() != Some(&format!("GenieKey {KEY}")) {
            return error(401, "Could not authenticate");
        }
        let body = req.json();
        if req.method != "POST" {
            return error(405, "Method not allowed");
        }
        let valid = if req.path() == "/v2/alerts" {
            check(&body)
        } else if req.path().starts_with("/v2/alerts/") && req.path().ends_with("/close") {
            if req.query() == "identifierType=alias" {
                Ok(())
            } else {
                Err("identifierType".into())
            }
        } else {
            return error(404, "Not found");
        };
        if let Err(why) = valid {
            return Reply::json(
                422,
                json!({"message": "Request body is not processable. Please check the errors.",
                       "errors": {"field": why}, "took": 0.0, "requestId": "r-2"}),
            );
        }
        script.get(index).cloned().unwrap_or_else(|| {
            Reply::json(
                202,
                json!({"result": "Request will be processed", "took": 0.1, "requestId": format!("r{index}")}),
            )
        })
    }
}

async fn opsgenie(script: Vec<Reply>, extra: Value) -> (Server, SinkConfig) {
    let server = Server::start(fake(script)).await;
    let mut table = json!({"api_key": KEY, "api_base": server.url("")});
    for (key, value) in extra.as_object().unwrap() {
        table[key] = value.clone();
    }
    (server, config("opsgenie", table))
}

#[tokio::test]
async fn creates_an_alert() {
    let (server, config) = opsgenie(vec![], json!({"tags": ["backups", "cron"]})).await;
    let mut alert = Alert::sample();
    alert.rule = Some("backups".into());
    alert.exit_status = Some(2);
    alert.severity = Severity::Critical;
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let request = &server.requests()[0];
    assert_eq!(request.path(), "/v2/alerts");
    let body = request.json();
    assert_eq!(
        body["message"],
        "cron on web01.example.net: /usr/local/bin/backup.sh"
    );
    assert_eq!(body["alias"], alert.dedup_key);
    assert_eq!(body["priority"], "P1");
    assert_eq!(body["source"], "herald");
    assert_eq!(body["entity"], "web01.example.net");
    assert_eq!(body["tags"], json!(["herald", "cron", "backups"]));
    assert_eq!(body["details"]["Exit status"], "2");
    assert_eq!(body["details"]["Rule"], "backups");
    assert!(body["description"]
        .as_str()
        .unwrap()
        .starts_with("backup.sh: error: cannot stat /srv/data"));
    assert_eq!(config.render(&alert), body);
    for (severity, priority) in [(Severity::Warning, "P3"), (Severity::Info, "P5")] {
        alert.severity = severity;
        assert_eq!(config.render(&alert)["priority"], priority);
    }
}

#[tokio::test]
async fn the_group_is_one_alert_and_the_recovery_closes_it() {
    let (server, config) = opsgenie(vec![], json!({"source": "herald@web"})).await;
    let sink = build(&config);
    assert!(
        sink.tracks_incidents(),
        "dispatch must hold recoveries for the group"
    );
    let mut web01 = Alert::sample();
    web01.group_key = Some(GROUP_KEY.into());
    let mut web02 = web01.clone();
    web02.host = Some("web02.example.net".into());
    for alert in [&web01, &web02, &recovery_alert()] {
        assert_eq!(sink.deliver(alert).await, Outcome::Delivered);
    }
    let requests = server.requests();
    assert_eq!(requests[0].json()["alias"], GROUP_KEY);
    assert_eq!(requests[1].json()["alias"], GROUP_KEY);
    assert_eq!(
        requests[2].uri,
        "/v2/alerts/cron:-:%2Fusr%2Flocal%2Fbin%2Fbackup.sh/close?identifierType=alias"
    );
    assert_eq!(
        requests[2].json(),
        json!({"source": "herald@web", "note": "RESOLVED: cron on web01.example.net: /usr/local/bin/backup.sh succeeded"})
    );
}

#[tokio::test]
async fn hostile_mail_fits_and_cannot_reach_another_endpoint() {
    let (server, config) = opsgenie(vec![], json!({})).await;
    let mut alert = hostile_alert();
    alert.group_key = Some("../../v1/x?y#z".into());
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let body = server.requests()[0].json();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("Cron &lt;root@web01&gt; @everyone"),
        "{message}"
    );
    assert!(!message.contains('<'));
    alert.resolve = true;
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    assert_eq!(
        server.requests()[1].uri,
        "/v2/alerts/..%2F..%2Fv1%2Fx%3Fy%23z/close?identifierType=alias"
    );
    check(&config.render(&hostile_digest())).unwrap();
}

#[tokio::test]
async fn digest_lists_members_in_the_description() {
    let (server, config) = opsgenie(vec![], json!({})).await;
    assert_eq!(
        build(&config).deliver(&digest_alert(12, 3)).await,
        Outcome::Delivered
    );
    let body = server.requests()[0].json();
    assert_eq!(
        body["message"],
        "15 problems: cron /usr/local/bin/backup.sh"
    );
    assert_eq!(body["alias"], GROUP_KEY);
    let description = body["description"].as_str().unwrap();
    let lines: Vec<&str> = description.lines().collect();
    let first = lines.iter().position(|l| *l == member_line(1)).unwrap();
    assert_eq!(lines[first + 11], member_line(12));
    assert_eq!(more_count(lines[first + 12]), Some(3));
    assert_eq!(body["details"]["Problems"], "15");
    let reminder = config.render(&reminder_alert());
    assert_eq!(reminder["details"]["Repeats"], "37 since 03:00");
}

#[tokio::test]
async fn rate_limited_waits_for_retry_after() {
    let (server, config) = opsgenie(
        vec![error(429, "You are making too many requests").header("retry-after", "1")],
        json!({}),
    )
    .await;
    let sink = build(&config);
    let first = sink.deliver(&Alert::sample()).await;
    assert_eq!(retry_after(&first), Some(Duration::from_secs(1)));
    assert_eq!(reason(&first), "HTTP 429: You are making too many requests");
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
}

#[tokio::test]
async fn refusals_are_rejected_and_outages_retried() {
    let server = Server::start(fake(vec![])).await;
    let config = config(
        "opsgenie",
        json!({"api_key": "wrong-key", "api_base": server.url("/")}),
    );
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert_eq!(
        outcome,
        Outcome::Rejected {
            reason: "HTTP 401: Could not authenticate".into()
        }
    );
    let (server, config) = opsgenie(vec![error(503, "Service unavailable")], json!({})).await;
    let sink = build(&config);
    assert!(is_retry(&sink.deliver(&Alert::sample()).await));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn status_table() {
    super::status_tables::assert_default_table(opsgenie::classify, r#"{"message":"m","took":0.0}"#);
}

#[test]
fn keys_sources_and_tags_are_checked() {
    for (table, key) in [
        (json!({"api_key": "SEKRIT key"}), "api_key"),
        (json!({"api_key": "k", "api_base": "SEKRIT"}), "api_base"),
        (json!({"api_key": "k", "source": ""}), "source"),
        (json!({"api_key": "k", "tags": ["a,b"]}), "tags"),
        (json!({"api_key": "k", "tags": ["x".repeat(51)]}), "tags"),
    ] {
        let config = SinkConfig::deserialize_typed("opsgenie", table).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.starts_with(&format!("{key}:")), "{error}");
        assert!(!error.contains("SEKRIT"), "{error}");
    }
}
