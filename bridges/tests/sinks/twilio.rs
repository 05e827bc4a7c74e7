use std::time::Duration;

use herald_bridges::sms;
use serde_json::json;

use super::fakes::{self, form, TWILIO_INVALID_TO, TWILIO_STOPPED_TO};
use super::server::{dropping_server, refused_addr, Reply, Server};
use super::*;

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "authtoken-value";
const KEY_SID: &str = "SKfedcba9876543210fedcba9876543210";
const KEY_SECRET: &str = "apikey-secret-value";
const ALICE: &str = "+14155552345";
const BOB: &str = "+447700900123";

fn table(api_base: String, to: &[&str]) -> serde_json::Value {
    json!({
        "account_sid": ACCOUNT, "auth_token": AUTH_TOKEN, "from": "+14155550000",
        "to": to, "api_base": api_base, "validity_period": "10m",
    })
}

async fn twilio(script: Vec<Reply>, to: &[&str]) -> (Server, SinkConfig) {
    let server = Server::start(fakes::twilio(ACCOUNT, ACCOUNT, AUTH_TOKEN, script)).await;
    let config = config("twilio", table(server.url(""), to));
    (server, config)
}

#[tokio::test]
async fn each_recipient_is_its_own_delivery() {
    let (server, config) = twilio(vec![], &[ALICE, BOB]).await;
    let sink = build(&config);
    assert_eq!(sink.targets(), vec![ALICE.to_owned(), BOB.to_owned()]);
    for target in sink.targets() {
        assert_eq!(
            sink.deliver_to(&Alert::sample(), &target).await,
            Outcome::Delivered
        );
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let first = form(&requests[0]);
    let get = |k: &str| {
        first
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("To"), ALICE);
    assert_eq!(get("From"), "+14155550000");
    assert_eq!(get("ValidityPeriod"), "600");
    assert_eq!(
        get("Body"),
        "WARNING: cron on web01.example.net: /usr/local/bin/backup.sh\n\
         backup.sh: error: cannot stat /srv/data: No such file or directory"
    );
    assert_eq!(form(&requests[1])[0], ("To".to_owned(), BOB.to_owned()));
    let rendered = config.render(&Alert::sample());
    assert_eq!(rendered[1]["To"], BOB);
    assert_eq!(rendered[0]["Body"], get("Body"));
}

#[tokio::test]
async fn one_bad_number_never_blocks_the_others() {
    let (server, config) =
        twilio(vec![], &[TWILIO_INVALID_TO, ALICE, TWILIO_STOPPED_TO, BOB]).await;
    let sink = build(&config);
    let mut outcomes = Vec::new();
    for target in sink.targets() {
        outcomes.push(sink.deliver_to(&Alert::sample(), &target).await);
    }
    assert!(
        is_rejected(&outcomes[0]) && reason(&outcomes[0]).contains("21211"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], Outcome::Delivered);
    assert!(is_rejected(&outcomes[2]) && reason(&outcomes[2]).contains("21610"));
    assert!(reason(&outcomes[2]).contains("STOP"));
    assert_eq!(outcomes[3], Outcome::Delivered);
    assert_eq!(server.requests().len(), 4, "each number tried exactly once");
}

#[tokio::test]
async fn api_key_and_messaging_service() {
    let server = Server::start(fakes::twilio(ACCOUNT, KEY_SID, KEY_SECRET, vec![])).await;
    let config = config(
        "twilio",
        json!({"account_sid": ACCOUNT, "api_key_sid": KEY_SID, "api_key_secret": KEY_SECRET,
               "messaging_service_sid": "MG0123456789abcdef0123456789abcdef", "to": [ALICE],
               "api_base": server.url("/")}),
    );
    assert_eq!(
        build(&config).deliver(&Alert::sample()).await,
        Outcome::Delivered
    );
    let sent = form(&server.requests()[0]);
    assert!(sent.iter().any(|(k, _)| k == "MessagingServiceSid"));
    assert!(!sent.iter().any(|(k, _)| k == "From"));
}

#[tokio::test]
async fn hostile_alert_is_short_and_gsm7() {
    let (server, config) = twilio(vec![], &[ALICE]).await;
    assert_eq!(
        build(&config).deliver(&hostile_alert()).await,
        Outcome::Delivered
    );
    let sent = form(&server.requests()[0]);
    let body = &sent.iter().find(|(k, _)| k == "Body").unwrap().1;
    assert!(
        sms::units(body) <= 320,
        "{} units: {body}",
        sms::units(body)
    );
    assert!(
        body.starts_with("CRITICAL: Cron <root@web01> @everyone"),
        "{body}"
    );
    assert!(!body.contains('🔥') && !body.contains('\r') && !body.contains('\0'));
}

#[tokio::test]
async fn gsm7_encoding_and_long_budget() {
    let server = Server::start(fakes::twilio(ACCOUNT, ACCOUNT, AUTH_TOKEN, vec![])).await;
    let mut t = table(server.url(""), &[ALICE]);
    t["encoding"] = json!("gsm7");
    t["max_chars"] = json!(1600);
    let config = config("twilio", t);
    let mut alert = hostile_alert();
    alert.summary = "日本語 ".repeat(2000);
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let sent = form(&server.requests()[0]);
    let body = &sent.iter().find(|(k, _)| k == "Body").unwrap().1;
    assert!(body.chars().all(sms::is_gsm), "{body}");
    assert!(sms::units(body) <= 1600 && sms::units(body) > 1500);
}

#[tokio::test]
async fn too_many_requests_is_retried_after_the_delay() {
    let (server, config) = twilio(
        vec![Reply::json(
            429,
            json!({"code": 20429, "message": "Too Many Requests", "status": 429}),
        )
        .header("retry-after", "1")],
        &[ALICE],
    )
    .await;
    let sink = build(&config);
    let first = sink.deliver_to(&Alert::sample(), ALICE).await;
    assert_eq!(
        retry_after(&first),
        Some(Duration::from_secs(1)),
        "{first:?}"
    );
    assert_eq!(
        sink.deliver_to(&Alert::sample(), ALICE).await,
        Outcome::Delivered
    );
    assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
}

#[tokio::test]
async fn server_error_then_success() {
    let (server, config) = twilio(vec![Reply::new(500, "")], &[ALICE]).await;
    let sink = build(&config);
    assert!(is_retry(&sink.deliver_to(&Alert::sample(), ALICE).await));
    assert_eq!(
        sink.deliver_to(&Alert::sample(), ALICE).await,
        Outcome::Delivered
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_503_then_201_is_retried_then_delivered() {
    // Twilio's 503 means "not processed": retried quietly, and delivered once Twilio is back.
    let (server, config) = twilio(vec![Reply::new(503, "")], &[ALICE]).await;
    let sink = build(&config);
    let (captured, _guard) = super::capture::capture();
    let first = sink.deliver_to(&Alert::sample(), ALICE).await;
    assert!(
        is_retry(&first) && retry_after(&first).is_none(),
        "{first:?}"
    );
    assert_eq!(
        sink.deliver_to(&Alert::sample(), ALICE).await,
        Outcome::Delivered
    );
    assert_eq!(server.requests().len(), 2);
    assert!(!captured.lines().iter().any(|l| l.contains("duplicate")));
}

#[tokio::test]
async fn server_errors_are_retried_for_as_long_as_they_last() {
    // 0.1 dead-lettered the SMS at the second 5xx: an outage of a few seconds lost the page.
    let (server, config) = twilio(
        vec![
            Reply::new(503, ""),
            Reply::new(502, ""),
            Reply::new(500, ""),
            Reply::new(503, ""),
        ],
        &[ALICE],
    )
    .await;
    let sink = build(&config);
    let (captured, _guard) = super::capture::capture();
    for _ in 0..4 {
        let outcome = sink.deliver_to(&Alert::sample(), ALICE).await;
        assert!(is_retry(&outcome), "{outcome:?}");
    }
    assert_eq!(
        sink.deliver_to(&Alert::sample(), ALICE).await,
        Outcome::Delivered
    );
    assert_eq!(server.requests().len(), 5);
    // A 502 or 500 may have created the Message: the operator is told of a possible duplicate.
    assert!(captured
        .lines()
        .iter()
        .any(|l| l.starts_with("WARN") && l.contains("possible duplicate")));
}

#[tokio::test]
async fn a_dropped_connection_is_retried_again_and_again() {
    let (addr, _task) = dropping_server().await;
    let mut t = table(format!("http://{addr}"), &[ALICE]);
    t["timeout"] = json!("2s");
    let sink = build(&config("twilio", t));
    for _ in 0..3 {
        let outcome = sink.deliver_to(&Alert::sample(), ALICE).await;
        assert!(is_retry(&outcome), "{outcome:?}");
    }
}

#[tokio::test]
async fn connection_refused_is_retried_freely() {
    let addr = refused_addr().await;
    let sink = build(&config("twilio", table(format!("http://{addr}"), &[ALICE])));
    for _ in 0..3 {
        let outcome = sink.deliver_to(&Alert::sample(), ALICE).await;
        assert!(
            is_retry(&outcome) && reason(&outcome).starts_with("cannot connect"),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn removed_recipient_is_rejected_without_a_request() {
    let (server, config) = twilio(vec![], &[ALICE]).await;
    let outcome = build(&config).deliver_to(&Alert::sample(), BOB).await;
    assert!(is_rejected(&outcome));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn deliver_sends_to_everyone_for_test_sink() {
    let (server, config) = twilio(vec![], &[ALICE, TWILIO_INVALID_TO, BOB]).await;
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert!(
        is_rejected(&outcome) && reason(&outcome).starts_with("recipient 2:"),
        "{outcome:?}"
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn template_replaces_the_text() {
    let server = Server::start(fakes::twilio(ACCOUNT, ACCOUNT, AUTH_TOKEN, vec![])).await;
    let mut t = table(server.url(""), &[ALICE]);
    t["template"] = json!("{{ severity|upper }} {{ host }}: {{ summary }}");
    let sink = build(&config("twilio", t));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    let sent = form(&server.requests()[0]);
    assert_eq!(
        sent.iter().find(|(k, _)| k == "Body").unwrap().1,
        "WARNING web01.example.net: backup.sh: error: cannot stat /srv/data: No such file or directory"
    );
}

#[tokio::test]
async fn recoveries_are_sent_only_when_the_table_says_so() {
    let (server, quiet) = twilio(vec![], &[ALICE]).await;
    assert!(!build(&quiet).notify_resolved(), "default: quiet");
    let mut t = table(server.url(""), &[ALICE]);
    t["notify_resolved"] = json!(true);
    let sink = build(&config("twilio", t));
    assert!(sink.notify_resolved());
    // When asked to, it sends a recovery that reads as one.
    assert_eq!(
        sink.deliver_to(&recovery_alert(), ALICE).await,
        Outcome::Delivered
    );
    let sent = form(&server.requests()[0]);
    assert_eq!(
        sent.iter().find(|(k, _)| k == "Body").unwrap().1,
        "RESOLVED: cron on web01.example.net: /usr/local/bin/backup.sh succeeded\n\
         backup.sh: done"
    );
    let mut t = table(server.url(""), &[ALICE]);
    t["notify_resolved"] = json!("yes");
    assert!(
        SinkConfig::deserialize_typed("twilio", t).is_err(),
        "a bool"
    );
}

#[test]
fn a_digest_is_one_sms_with_the_count_and_hosts() {
    let sms_config = config("twilio", table("https://api.twilio.com".into(), &[ALICE]));
    let rendered = sms_config.render(&digest_alert(12, 0));
    assert_eq!(
        rendered[0]["Body"],
        "WARNING: 12 problems: cron /usr/local/bin/backup.sh\nweb01, web02, web03, ... (12 hosts)"
    );
    // However long the title, the hosts still show.
    let mut alert = digest_alert(12, 0);
    alert.title = format!("12 problems: cron {}", "/very/long/path".repeat(100));
    let rendered = sms_config.render(&alert);
    let body = rendered[0]["Body"].as_str().unwrap();
    assert!(sms::units(body) <= 320, "{body}");
    assert!(
        body.starts_with("WARNING: 12 problems: cron /very/long/path"),
        "{body}"
    );
    assert!(
        body.ends_with("\nweb01, web02, web03, ... (12 hosts)"),
        "{body}"
    );
    // The hostile worst case stays within the budget too.
    let rendered = sms_config.render(&hostile_digest());
    let body = rendered[0]["Body"].as_str().unwrap();
    assert!(sms::units(body) <= 320, "{body}");
    assert!(body.contains("(250 hosts)"), "{body}");
}
