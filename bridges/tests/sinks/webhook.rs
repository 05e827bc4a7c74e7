use std::time::{Duration, SystemTime};

use herald_bridges::webhook::{message_id, signature};
use serde_json::json;

use super::server::{refused_addr, Reply, Server};
use super::*;

const KEY: &[u8] = b"herald-test-signing-key-0123456789";
const SECRET: &str = "whsec_aGVyYWxkLXRlc3Qtc2lnbmluZy1rZXktMDEyMzQ1Njc4OQ==";

async fn webhook(script: Vec<Reply>) -> (Server, SinkConfig) {
    let server = Server::script(if script.is_empty() {
        vec![Reply::new(204, "")]
    } else {
        script
    })
    .await;
    let config = config(
        "webhook",
        json!({"url": server.url("/hook"), "headers": {"Authorization": "Bearer hdr"}, "secret": SECRET}),
    );
    (server, config)
}

#[tokio::test]
async fn body_is_the_alert_json_signed() {
    let (server, config) = webhook(vec![Reply::new(200, "{}")]).await;
    let alert = hostile_alert();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let request = &server.requests()[0];
    let sent: Alert = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(sent, alert, "the body is the alert, intact");
    assert_eq!(request.json(), config.render(&alert));
    assert_eq!(request.header("authorization").unwrap(), "Bearer hdr");
    assert_eq!(request.header("content-type").unwrap(), "application/json");
    let id = request.header("webhook-id").unwrap();
    assert_eq!(id, message_id(&request.body));
    let timestamp: u64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(timestamp) < 60);
    assert_eq!(
        request.header("webhook-signature").unwrap(),
        signature(KEY, &id, timestamp, &request.body)
    );
}

#[tokio::test]
async fn the_id_is_stable_across_retries() {
    let (server, config) = webhook(vec![Reply::new(503, ""), Reply::new(200, "")]).await;
    let sink = build(&config);
    assert!(is_retry(&sink.deliver(&Alert::sample()).await));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    let r = server.requests();
    assert_eq!(r[0].header("webhook-id"), r[1].header("webhook-id"));
}

#[tokio::test]
async fn retry_after_holds_the_next_request() {
    let (server, config) = webhook(vec![
        Reply::new(429, "").header("retry-after", "1"),
        Reply::new(200, ""),
    ])
    .await;
    let sink = build(&config);
    assert_eq!(
        retry_after(&sink.deliver(&Alert::sample()).await),
        Some(Duration::from_secs(1))
    );
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
}

#[tokio::test]
async fn permanent_errors_and_redirects_are_rejected_once() {
    for reply in [
        Reply::new(400, "bad"),
        Reply::new(410, "gone"),
        Reply::new(302, "").header("location", "http://127.0.0.1:1/elsewhere"),
    ] {
        let (server, config) = webhook(vec![reply]).await;
        assert!(is_rejected(&build(&config).deliver(&Alert::sample()).await));
        assert_eq!(server.requests().len(), 1, "no retry, no redirect followed");
    }
}

#[tokio::test]
async fn connection_refused_is_retried() {
    let addr = refused_addr().await;
    let config = config("webhook", json!({"url": format!("http://{addr}/hook")}));
    assert!(is_retry(&build(&config).deliver(&Alert::sample()).await));
}

#[tokio::test]
async fn a_digest_is_one_body_with_its_members() {
    let (server, config) = webhook(vec![]).await;
    let sink = build(&config);
    for alert in [digest_alert(12, 3), hostile_digest()] {
        assert_eq!(sink.deliver(&alert).await, Outcome::Delivered);
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one request per digest");
    for (request, alert) in requests.iter().zip([digest_alert(12, 3), hostile_digest()]) {
        let body = request.json();
        assert_eq!(body, config.render(&alert));
        let sent: Alert = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent, alert, "every member, intact");
        assert_eq!(body["group_key"], GROUP_KEY);
        assert_eq!(body["digest"].as_array().unwrap().len(), alert.digest.len());
    }
    let ordinary = requests[0].json();
    assert_eq!(ordinary["digest_more"], 3);
    assert_eq!(ordinary["digest"][11]["host"], "web12.example.net");
    assert_eq!(ordinary["digest"][11]["count"], 3);
    // The sink sets no limit of its own: dispatch bounds a digest to 50 members without
    // bodies, so even the worst one is a fraction of a megabyte.
    assert!(
        requests[1].body.len() < 1_000_000,
        "{}",
        requests[1].body.len()
    );
}
