use std::time::Duration;

use serde_json::json;

use super::fakes;
use super::limits;
use super::server::{refused_addr, Reply, Server};
use super::*;

const KEY: &str = "e93facc04764012d7bfb002500d5d1a6";

async fn pagerduty(script: Vec<Reply>) -> (Server, SinkConfig) {
    let server = Server::start(fakes::pagerduty(KEY, script)).await;
    let config = config(
        "pagerduty",
        json!({"routing_key": KEY, "url": server.url("/v2/enqueue"), "rate_limit": "off"}),
    );
    (server, config)
}

#[tokio::test]
async fn trigger_carries_the_alert() {
    let (server, config) = pagerduty(vec![]).await;
    let mut alert = Alert::sample();
    alert.rule = Some("backups".into());
    alert.exit_status = Some(2);
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let event = server.requests()[0].json();
    assert_eq!(event["routing_key"], KEY);
    assert_eq!(event["event_action"], "trigger");
    assert_eq!(event["dedup_key"], alert.dedup_key);
    let p = &event["payload"];
    assert_eq!(p["summary"], alert.title);
    assert_eq!(p["source"], "web01.example.net");
    assert_eq!(p["severity"], "warning");
    assert_eq!(p["component"], "/usr/local/bin/backup.sh");
    assert_eq!(p["group"], "backups");
    assert_eq!(p["class"], "cron");
    assert_eq!(p["custom_details"]["exit_status"], 2);
    assert_eq!(p["custom_details"]["user"], "root");
    // render shows the same event, key redacted.
    let mut rendered = config.render(&alert);
    assert_eq!(rendered["routing_key"], "**REDACTED**");
    rendered["routing_key"] = json!(KEY);
    assert_eq!(rendered, event);
}

#[tokio::test]
async fn repeats_fold_and_recovery_resolves() {
    let (server, config) = pagerduty(vec![]).await;
    let sink = build(&config);
    let mut alert = Alert::sample();
    alert.message_id = Some("<one@x>".into());
    assert_eq!(sink.deliver(&alert).await, Outcome::Delivered);
    alert.message_id = Some("<two@x>".into());
    alert.date = Some("2026-08-01T12:00:00Z".into());
    assert_eq!(sink.deliver(&alert).await, Outcome::Delivered);
    alert.resolve = true;
    assert_eq!(sink.deliver(&alert).await, Outcome::Delivered);
    let keys: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.json()["dedup_key"].clone())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    let resolve = server.requests()[2].json();
    assert_eq!(
        resolve,
        json!({"routing_key": KEY, "event_action": "resolve", "dedup_key": keys[0]})
    );
}

#[tokio::test]
async fn hostile_alert_fits() {
    let (server, config) = pagerduty(vec![]).await;
    let alert = hostile_alert();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let event = server.requests()[0].json();
    assert_eq!(event["payload"]["severity"], "critical");
    assert_eq!(event["dedup_key"].as_str().unwrap().chars().count(), 255);
    assert!(event["payload"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("Cron <root@web01> @everyone"));
}

#[tokio::test]
async fn rate_limited_waits_for_retry_after() {
    let (server, config) = pagerduty(vec![
        Reply::new(429, "Request Limit Exceeded").header("retry-after", "1")
    ])
    .await;
    let sink = build(&config);
    let first = sink.deliver(&Alert::sample()).await;
    assert_eq!(retry_after(&first), Some(Duration::from_secs(1)));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
}

#[tokio::test]
async fn rate_limited_without_retry_after_waits_30s() {
    let (_server, config) = pagerduty(vec![Reply::new(429, "Request Limit Exceeded")]).await;
    let first = build(&config).deliver(&Alert::sample()).await;
    assert_eq!(retry_after(&first), Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn server_error_then_success() {
    let (server, config) = pagerduty(vec![Reply::new(503, "")]).await;
    let sink = build(&config);
    assert!(is_retry(&sink.deliver(&Alert::sample()).await));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn invalid_event_is_rejected_with_its_errors() {
    let server = Server::start(fakes::pagerduty(KEY, vec![])).await;
    let config = config(
        "pagerduty",
        json!({"routing_key": "wrongkey0000000000000000000000000", "url": server.url("/v2/enqueue")}),
    );
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert!(is_rejected(&outcome), "{outcome:?}");
    assert!(reason(&outcome).contains("Event object is invalid: Invalid routing key"));
    assert!(!reason(&outcome).contains("wrongkey"));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn connection_refused_is_retried() {
    let addr = refused_addr().await;
    let config = config(
        "pagerduty",
        json!({"routing_key": KEY, "url": format!("http://{addr}/v2/enqueue")}),
    );
    assert!(is_retry(&build(&config).deliver(&Alert::sample()).await));
}

#[tokio::test]
async fn template_replaces_the_summary() {
    let server = Server::start(fakes::pagerduty(KEY, vec![])).await;
    let config = config(
        "pagerduty",
        json!({"routing_key": KEY, "url": server.url("/v2/enqueue"),
               "template": "[{{ kind }}] {{ host }} exit {{ exit_status or '?' }}"}),
    );
    assert_eq!(
        build(&config).deliver(&Alert::sample()).await,
        Outcome::Delivered
    );
    assert_eq!(
        server.requests()[0].json()["payload"]["summary"],
        "[cron] web01.example.net exit ?"
    );
}

#[tokio::test]
async fn the_group_is_the_incident() {
    let (server, config) = pagerduty(vec![]).await;
    let sink = build(&config);
    assert!(
        sink.tracks_incidents(),
        "dispatch must hold recoveries for the group"
    );
    let mut web01 = Alert::sample();
    web01.group_key = Some(GROUP_KEY.into());
    let mut web02 = web01.clone();
    web02.host = Some("web02.example.net".into());
    web02.dedup_key = "cron:web02.example.net:root:/usr/local/bin/backup.sh".into();
    let recovery = recovery_alert();
    for alert in [&web01, &web02, &recovery] {
        assert_eq!(sink.deliver(alert).await, Outcome::Delivered);
    }
    let events: Vec<_> = server.requests().iter().map(|r| r.json()).collect();
    for event in &events {
        assert_eq!(event["dedup_key"], GROUP_KEY, "{event}");
    }
    assert_eq!(
        events[2],
        json!({"routing_key": KEY, "event_action": "resolve", "dedup_key": GROUP_KEY})
    );
    // A blank group key is no group: the problem's own key, as before.
    web01.group_key = Some(" ".into());
    assert_eq!(config.render(&web01)["dedup_key"], web01.dedup_key);
    // A long one is bounded like any key.
    web01.group_key = Some("g".repeat(1000));
    let key = config.render(&web01)["dedup_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(key.chars().count(), 255);
    assert!(key.starts_with("ggg"));
}

#[tokio::test]
async fn digest_is_one_event_listing_its_members() {
    let (server, config) = pagerduty(vec![]).await;
    let alert = digest_alert(12, 3);
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one event per group");
    let event = requests[0].json();
    let mut rendered = config.render(&alert);
    rendered["routing_key"] = json!(KEY);
    assert_eq!(rendered, event);
    assert_eq!(event["dedup_key"], GROUP_KEY);
    assert_eq!(
        event["payload"]["summary"],
        "15 problems: cron /usr/local/bin/backup.sh"
    );
    let details = &event["payload"]["custom_details"];
    assert_eq!(details["problems"], 15);
    assert_eq!(details["more"], 3);
    let members = details["members"].as_array().unwrap();
    assert_eq!(members.len(), 12);
    assert_eq!(
        members[11],
        json!({
            "kind": "cron", "host": "web12.example.net", "user": "root",
            "command": "/usr/local/bin/backup.sh", "severity": "warning", "failed": true,
            "title": "cron on web12.example.net: /usr/local/bin/backup.sh",
            "summary": "backup.sh: error: cannot stat /srv/data",
            "count": 3, "first": "2026-08-01T03:00:00Z", "last": "2026-08-01T03:12:00Z",
        })
    );
}

#[test]
fn a_digest_summary_always_says_the_count() {
    let config = config(
        "pagerduty",
        json!({"routing_key": KEY, "template": "cron {{ command }} failing"}),
    );
    let event = config.render(&digest_alert(12, 0));
    assert_eq!(
        event["payload"]["summary"],
        "12 problems: cron /usr/local/bin/backup.sh failing"
    );
}

#[tokio::test]
async fn hostile_digest_fits_and_keeps_its_members() {
    let (server, config) = pagerduty(vec![]).await;
    let mut alert = hostile_digest();
    // Enough details besides the members to push the event over 512 KB.
    alert
        .facts
        .insert("huge".into(), json!("f".repeat(400_000)));
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let event = server.requests()[0].json();
    limits::pagerduty(&event).unwrap();
    let details = &event["payload"]["custom_details"];
    assert!(details["note"].is_string(), "the other details dropped");
    assert!(details.get("facts").is_none());
    let listed = details["members"].as_array().unwrap().len() as u64;
    assert!(listed >= 25, "{listed}");
    assert_eq!(listed + details["more"].as_u64().unwrap_or(0), 250);
    assert_eq!(details["problems"], 250);
}
