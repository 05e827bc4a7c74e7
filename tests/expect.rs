//! Expectations and recoveries end to end, against a real Dovecot and loopback fakes: an
//! expectation going quiet raises `missing` in time and its mail's return resolves it, a
//! deadline that passed while herald was stopped fires at start, and a UPS's power failure
//! then power return is one PagerDuty incident, triggered then resolved.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{start_herald, write_config, Imap, DEADLINE};
use herald_testkit::{cron_mail, Dovecot, Receiver};
use serde_json::Value;

const HEARTBEAT: &str = "/usr/local/bin/heartbeat";

fn posts(receiver: &Receiver) -> Vec<Value> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body)
        .collect()
}

/// Waits until the receiver has more than `n` posts; returns the new one.
async fn post_after(receiver: &Receiver, n: usize, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(post) = posts(receiver).get(n) {
            return post.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no post {n} within {within:?}: {:?}",
            posts(receiver)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn expect_list(config: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "expect",
            "-c",
            config.to_str().expect("path"),
            "list",
            "--json",
        ])
        .env("TEST_IMAP_PASSWORD", herald_testkit::PASSWORD)
        .output()
        .expect("running herald");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

#[tokio::test]
async fn a_quiet_expectation_raises_missing_and_its_return_resolves_it() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &receiver);
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[[expect]]\nname = \"heartbeat\"\nmatch = {{ kind = \"cron\", command = \"{HEARTBEAT}\" }}\n\
         every = \"12s\"\ngrace = \"1s\"\nseverity = \"critical\"\nsinks = [\"hook\"]\n"
    ));
    std::fs::write(&config, text).expect("config");
    let heartbeat = || cron_mail("db02.example.net", "root", HEARTBEAT, "ok\n");

    let mut herald = start_herald(&config).await;
    dovecot.append("INBOX", &heartbeat()).await.expect("append");
    post_after(&receiver, 0, DEADLINE).await; // the heartbeat's own cron alert
    let seen = Instant::now();
    let listed = expect_list(&config);
    assert_eq!(listed[0]["name"], "heartbeat");
    assert_eq!(listed[0]["state"], "ok");
    assert!(listed[0]["last_seen"].is_string());

    // Quiet now: missing 12 s + 1 s after the heartbeat.
    let missing = post_after(&receiver, 1, Duration::from_secs(13) + DEADLINE).await;
    let waited = seen.elapsed();
    assert_eq!(missing["kind"], "missing");
    assert_eq!(missing["dedup_key"], "missing:heartbeat");
    assert_eq!(missing["severity"], "critical");
    assert!(
        missing["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("expected mail missing: heartbeat (last seen ")),
        "{missing}"
    );
    assert!(
        waited >= Duration::from_secs(12),
        "raised early: {waited:?}"
    );
    assert_eq!(expect_list(&config)[0]["state"], "missing");

    // It comes back: resolved.
    dovecot.append("INBOX", &heartbeat()).await.expect("append");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let resolved = loop {
        if let Some(p) = posts(&receiver)
            .into_iter()
            .find(|p| p["kind"] == "missing" && p["resolve"] == true)
        {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            posts(&receiver)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(resolved["dedup_key"], "missing:heartbeat");
    assert_eq!(expect_list(&config)[0]["state"], "ok");

    // Stopped past the next deadline: it fires at the next start.
    herald.sigterm().expect("sigterm");
    herald.wait_exit(DEADLINE).await.expect("stopped");
    let before = posts(&receiver).len();
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(posts(&receiver).len(), before, "nothing while stopped");
    let started = Instant::now();
    let _herald = start_herald(&config).await;
    let fired = post_after(&receiver, before, DEADLINE).await;
    assert_eq!(fired["kind"], "missing");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_power_failure_and_its_return_are_one_pagerduty_incident() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let pagerduty = Receiver::start().await.expect("receiver");
    let hook = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &hook);
    let mut text = std::fs::read_to_string(&config).expect("config");
    text = text.replace(
        "[[rules]]",
        &format!(
            "[sinks.pd]\ntype = \"pagerduty\"\nrouting_key = \"0123456789abcdef0123456789abcdef\"\nurl = \"{}\"\n\n\
             [[rules]]\nname = \"power\"\nmatch = {{ kind = \"apcupsd\" }}\nsinks = [\"pd\"]\n\n[[rules]]",
            pagerduty.url()
        ),
    );
    std::fs::write(&config, text).expect("config");
    let herald = start_herald(&config).await;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/apcupsd");
    let mail = |name: &str| std::fs::read(corpus.join(name)).expect("corpus mail");

    dovecot
        .append("INBOX", &mail("onbattery.eml"))
        .await
        .expect("append");
    let trigger = tokio::time::timeout(DEADLINE, post_after(&pagerduty, 0, DEADLINE * 2))
        .await
        .unwrap_or_else(|_| panic!("no trigger: {}", herald.stderr()));
    assert_eq!(trigger["event_action"], "trigger");
    dovecot
        .append("INBOX", &mail("offbattery.eml"))
        .await
        .expect("append");
    let resolve = post_after(&pagerduty, 1, DEADLINE).await;
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"], "one incident");
    assert_eq!(trigger["dedup_key"], "apcupsd:rack1:rack1-ups:power");
}
