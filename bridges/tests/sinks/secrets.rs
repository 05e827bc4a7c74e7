//! G12: no secret in any outcome, log line, `Debug`, validation error or rendered payload,
//! whatever the server does (Alertmanager's `AssertNotifyLeaksNoSecret`).

use std::net::SocketAddr;

use base64::Engine as _;
use serde_json::json;

use super::capture::capture;
use super::server::{dropping_server, refused_addr, Reply, Server};
use super::*;

const MARK: &str = "SEKRIT";

/// Every sink type, with every secret holding [`MARK`], pointed at `addr`.
fn configs(addr: SocketAddr) -> Vec<SinkConfig> {
    let base = format!("http://{addr}");
    vec![
        config(
            "slack",
            json!({"webhook_url": format!("{base}/services/T000/B000/{MARK}slack"), "rate_limit": "off"}),
        ),
        config(
            "slack",
            json!({"token": format!("xoxb-{MARK}bot"), "channel": "C1", "api_url": format!("{base}/api"), "rate_limit": "off"}),
        ),
        config(
            "discord",
            json!({"webhook_url": format!("{base}/api/v10/webhooks/1/{MARK}discord"), "rate_limit": "off"}),
        ),
        config(
            "pagerduty",
            json!({"routing_key": format!("{MARK}pagerduty00000000000000000"), "url": format!("{base}/v2/enqueue"), "rate_limit": "off"}),
        ),
        config(
            "twilio",
            json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": format!("{MARK}twilio"),
                                "from": "+14155550000", "to": ["+14155552345"], "api_base": base}),
        ),
        config(
            "twilio",
            json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "api_key_sid": "SK0123456789abcdef0123456789abcdef",
                                "api_key_secret": format!("{MARK}twiliokey"), "from": "+14155550000", "to": ["+14155552345"], "api_base": base}),
        ),
        config(
            "irc",
            json!({"server": addr.ip().to_string(), "port": addr.port(), "tls": false,
                   "password": format!("{MARK}pass"), "sasl_username": "bot",
                   "sasl_password": format!("{MARK}sasl"),
                   "channels": [{"name": "#ops", "key": format!("{MARK}key")}],
                   "timeout": "1s"}),
        ),
        config(
            "webhook",
            json!({"url": format!("{base}/hook?token={MARK}url"), "headers": {"Authorization": format!("Bearer {MARK}hdr")},
                                 "secret": format!("{MARK}-signing-key-0123456789abcdef")}),
        ),
    ]
}

fn leaks(text: &str) -> bool {
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("AC0123456789abcdef0123456789abcdef:{MARK}twilio"));
    text.contains(MARK) || text.contains(&basic)
}

async fn assert_no_leak(addr: SocketAddr, what: &str) {
    let (captured, _guard) = capture();
    let mut seen = Vec::new();
    for config in configs(addr) {
        seen.push(format!("{config:?}"));
        seen.push(config.render(&hostile_alert()).to_string());
        let sink = build(&config);
        for target in sink.targets() {
            for _ in 0..2 {
                let outcome = sink.deliver_to(&hostile_alert(), &target).await;
                assert_ne!(
                    outcome,
                    Outcome::Delivered,
                    "{what}: {}",
                    config.type_name()
                );
                seen.push(format!("{outcome:?} {}", reason(&outcome)));
            }
        }
    }
    seen.extend(captured.lines());
    for line in &seen {
        assert!(!leaks(line), "{what}: secret in {line}");
    }
}

#[tokio::test]
async fn no_secret_when_the_connection_is_refused() {
    assert_no_leak(refused_addr().await, "refused").await;
}

#[tokio::test]
async fn no_secret_when_the_connection_drops() {
    let (addr, _task) = dropping_server().await;
    assert_no_leak(addr, "dropped").await;
}

#[tokio::test]
async fn no_secret_when_the_server_errs() {
    let server = Server::script(vec![
        Reply::new(500, "internal error"),
        Reply::new(429, "slow down").header("retry-after", "0"),
        Reply::new(
            400,
            r#"{"code": 21211, "message": "bad", "ok": false, "error": "invalid_auth"}"#,
        ),
    ])
    .await;
    assert_no_leak(server.addr, "server errors").await;
}

#[test]
fn no_secret_in_validation_errors() {
    for (type_name, table) in [
        ("slack", json!({"webhook_url": format!("{MARK} not a url")})),
        ("slack", json!({"webhook_url": format!("ftp://{MARK}@x/")})),
        (
            "slack",
            json!({"token": format!("xoxb-{MARK}\n"), "channel": "C1"}),
        ),
        ("discord", json!({"webhook_url": format!("{MARK}/x")})),
        ("pagerduty", json!({"routing_key": format!("{MARK} key")})),
        (
            "twilio",
            json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": MARK, "api_key_sid": "SK0123456789abcdef0123456789abcdef",
                          "api_key_secret": MARK, "from": "+1415555000", "to": ["+14155552345"]}),
        ),
        (
            "webhook",
            json!({"url": format!("{MARK}:/x"), "secret": MARK}),
        ),
        (
            "irc",
            json!({"server": "irc.example.net", "channels": ["#a"], "password": format!("{MARK}\r\nQUIT")}),
        ),
        (
            "irc",
            json!({"server": "irc.example.net", "channels": [{"name": "#a", "key": format!("{MARK} x")}]}),
        ),
        (
            "webhook",
            json!({"url": "https://example.net/", "secret": format!("whsec_{MARK}!!")}),
        ),
        (
            "webhook",
            json!({"url": "https://example.net/", "headers": {"X": format!("{MARK}\n")}}),
        ),
    ] {
        let config = SinkConfig::deserialize_typed(type_name, table).unwrap();
        let error = config.validate().expect_err(type_name).to_string();
        assert!(!error.contains(MARK), "{error}");
        assert!(config.build().is_err());
    }
}

#[tokio::test]
async fn no_secret_in_debug_of_built_sinks() {
    use herald_bridges::{discord, irc, pagerduty, slack, twilio, webhook};
    let addr = refused_addr().await;
    for config in configs(addr) {
        let debug = match &config {
            SinkConfig::Slack(c) => format!("{:?}", slack::Slack::new(c).unwrap()),
            SinkConfig::Discord(c) => format!("{:?}", discord::Discord::new(c).unwrap()),
            SinkConfig::PagerDuty(c) => format!("{:?}", pagerduty::PagerDuty::new(c).unwrap()),
            SinkConfig::Twilio(c) => format!("{:?}", twilio::Twilio::new(c).unwrap()),
            SinkConfig::Webhook(c) => format!("{:?}", webhook::Webhook::new(c).unwrap()),
            SinkConfig::Irc(c) => format!("{:?}", irc::Irc::new(c).unwrap()),
            other => format!("{other:?}"),
        };
        assert!(!leaks(&debug), "{debug}");
    }
}
