//! No secret reaches herald's output at any log level: `herald run` at `HERALD_LOG=trace`
//! (everything every crate logs) against a private Dovecot, delivering one alert to a webhook
//! and a PagerDuty sink on loopback, never prints the IMAP password, the webhook URL's token,
//! its signing secret or header, or the routing key, on stderr or stdout.
//!
//! Before the cap on the IMAP wire loggers (src/cli.rs), async-imap's TRACE line
//! `LOGIN "herald" "secret"` gave the password away.

mod common;

use common::DEADLINE;
use herald_testkit::{cron_mail, Dovecot, Receiver, PASSWORD};

/// Distinctive values, so that finding one in the output can only mean it leaked.
const URL_TOKEN: &str = "urltok-5Jq8wZ1v";
const SIGNING_SECRET: &str = "signkey-Hc3mT9pQ-7d2e4f6a8b0c";
const HEADER_TOKEN: &str = "hdrtok-Xw2Lr7Ne";
const ROUTING_KEY: &str = "R0UT1NGKEY4f8d2c9b7a6e5d4c3b2a1f0";

#[tokio::test]
async fn trace_logging_prints_no_secret() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let mut hook = Receiver::start().await.expect("webhook receiver");
    let mut pager = Receiver::start().await.expect("pagerduty receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("herald.toml");
    let text = format!(
        r#"[imap]
host = "127.0.0.1"
port = {port}
tls = "none"
username = "herald"
password = "${{TEST_IMAP_PASSWORD}}"

[state]
path = "{state}"

[defaults]
sinks = ["hook"]

[sinks.hook]
type = "webhook"
url = "{hook}/{URL_TOKEN}?token={URL_TOKEN}"
secret = "{SIGNING_SECRET}"
headers = {{ Authorization = "Bearer {HEADER_TOKEN}" }}

[sinks.pd]
type = "pagerduty"
routing_key = "{ROUTING_KEY}"
url = "http://127.0.0.1:{pager_port}/v2/enqueue"

[[rules]]
name = "cron-failures"
match = {{ kind = "cron" }}
sinks = ["hook", "pd"]
"#,
        port = dovecot.port(),
        state = dir.path().join("herald.db").display(),
        hook = hook.url(),
        pager_port = pager.port(),
    );
    std::fs::write(&config, text).expect("writing the configuration");

    let mut herald = common::spawn_with(&config, &[("HERALD_LOG", "trace")]);
    herald
        .wait_for_stderr("Selected mailbox", DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("herald did not start: {e:#}\n{}", herald.stderr()));
    dovecot
        .append(
            "INBOX",
            &cron_mail(
                "web01.example.net",
                "root",
                "/usr/local/bin/backup.sh",
                "backup: error: disk full\n",
            ),
        )
        .await
        .expect("append");
    let got = hook
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("webhook: {e:#}\n{}", herald.stderr()));
    // The secrets were really used: the request carried them.
    assert!(got.path.contains(URL_TOKEN), "{}", got.path);
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {HEADER_TOKEN}").as_str())
    );
    let event = pager
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("pagerduty: {e:#}\n{}", herald.stderr()));
    assert_eq!(event.body["routing_key"], ROUTING_KEY);
    herald.sigterm().expect("sigterm");
    herald.wait_exit(DEADLINE).await.expect("exit");

    let stderr = herald.stderr();
    let output = format!("{stderr}\n{}", herald.stdout());
    // The check can fail: TRACE lines (rustls, reqwest, hyper, …) were written, and with
    // them the IMAP exchange at DEBUG.
    assert!(stderr.contains("level=TRACE"), "no TRACE output:\n{stderr}");
    assert!(stderr.contains("Logged out"), "{stderr}");
    for secret in [
        PASSWORD,
        URL_TOKEN,
        SIGNING_SECRET,
        HEADER_TOKEN,
        ROUTING_KEY,
    ] {
        let at = output.find(secret);
        assert!(
            at.is_none(),
            "{secret:?} leaked: …{}…",
            at.map(|i| excerpt(&output, i)).unwrap_or_default()
        );
    }
}

/// About a line of `text` around byte `at`, on character boundaries.
fn excerpt(text: &str, at: usize) -> String {
    let start = (0..=at.saturating_sub(200))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let end = (at + 200..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text.get(start..end).unwrap_or_default().to_owned()
}
