//! G12: no secret in any outcome, log line, `Debug`, validation error or rendered payload,
//! whatever the server does (Alertmanager's `AssertNotifyLeaksNoSecret`).

use std::net::SocketAddr;

use herald_bridges::sink::Fixture;
use serde_json::json;

use super::capture::capture;
use super::server::{dropping_server, refused_addr, Reply, Server};
use super::*;

const MARK: &str = "SEKRIT";

/// Every registered sink's secret fixtures, pointed at `addr`.
struct Fixtures {
    cases: Vec<Case>,
    /// The forms secrets take on the wire without showing [`MARK`] (HTTP Basic credentials).
    encoded: Vec<String>,
}

/// The fixtures of every `SinkConfig::TYPES` entry, with every secret holding [`MARK`]: each
/// type must give at least one, and one without [`MARK`] must say it has no secret.
fn fixtures(addr: SocketAddr) -> Fixtures {
    let mut all = Fixtures {
        cases: Vec::new(),
        encoded: Vec::new(),
    };
    for &type_name in SinkConfig::TYPES {
        let fixtures = SinkConfig::secret_fixtures(type_name, addr, MARK).expect(type_name);
        assert!(!fixtures.is_empty(), "{type_name}: no fixture");
        for fixture in fixtures {
            let (table, secret) = match fixture {
                Fixture::Secret { table, encoded } => {
                    assert!(table.to_string().contains(MARK), "{type_name}: {table}");
                    all.encoded.extend(encoded);
                    (table, true)
                }
                Fixture::NoSecret { table } => {
                    assert!(!table.to_string().contains(MARK), "{type_name}: {table}");
                    (table, false)
                }
            };
            let config = config(type_name, table);
            assert_eq!(config.type_name(), type_name);
            all.cases.push(Case { config, secret });
        }
    }
    all
}

struct Case {
    config: SinkConfig,
    /// From [`Fixture::Secret`] (`true`) or [`Fixture::NoSecret`].
    secret: bool,
}

impl Fixtures {
    fn leaks(&self, text: &str) -> bool {
        text.contains(MARK) || self.encoded.iter().any(|form| text.contains(form.as_str()))
    }
}

async fn assert_no_leak(addr: SocketAddr, what: &str) {
    let (captured, _guard) = capture();
    let fixtures = fixtures(addr);
    let mut seen = Vec::new();
    for Case { config, secret } in &fixtures.cases {
        seen.push(format!("{config:?}"));
        seen.push(config.render(&hostile_alert()).to_string());
        let sink = build(config);
        if !secret {
            // Nothing to leak to a server (the console has none; it would print to stdout).
            continue;
        }
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
        assert!(!fixtures.leaks(line), "{what}: secret in {line}");
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
    let fixtures = fixtures(refused_addr().await);
    for Case { config, .. } in &fixtures.cases {
        let debug = config.built_debug().expect("sink builds");
        assert!(!fixtures.leaks(&debug), "{debug}");
    }
}
