//! The delivery guarantees end to end (reliability.md): crashes at every crash point and at
//! random moments lose nothing; a sink that is down gets everything once it is back; a
//! recreated mailbox does not repeat alerts; Dovecot restarts and half-open links are
//! survived; shutdown is bounded even with a hanging sink.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{spawn, start_herald, wait_for_flags, write_config, Imap, DEADLINE};
use herald_testkit::{plain_mail, Dovecot, Fault, FaultProxy, HeraldProcess, Receiver, Reply};

/// A Dovecot, a receiver and a state directory.
struct Env {
    dovecot: Dovecot,
    receiver: Receiver,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new(receiver: Receiver) -> Env {
        Env {
            dovecot: Dovecot::start().await.expect("dovecot"),
            receiver,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The standard test configuration, with `extra` appended to the webhook sink's table
    /// (its last table) and `imap` lines added.
    fn config(&self, imap: Imap, sink_extra: &str) -> std::path::PathBuf {
        let path = write_config(self.dir.path(), self.dir.path(), &imap, &self.receiver);
        let text = std::fs::read_to_string(&path).expect("config");
        let text = text.replace(
            "timeout = \"5s\"\n",
            &format!("timeout = \"5s\"\n{sink_extra}\n"),
        );
        std::fs::write(&path, text).expect("config");
        path
    }
}

/// Delivered (HTTP 200) requests per alert title.
fn delivered(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in receiver.received().into_iter().filter(|r| r.status == 200) {
        let title = r.body["title"].as_str().unwrap_or_default().to_owned();
        *counts.entry(title).or_insert(0) += 1;
    }
    counts
}

/// Waits until every title has been delivered at least once.
async fn wait_delivered(
    receiver: &Receiver,
    titles: &[String],
    herald: Option<&HeraldProcess>,
) -> HashMap<String, usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let counts = delivered(receiver);
        if titles.iter().all(|t| counts.contains_key(t)) {
            return counts;
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<_> = titles.iter().filter(|t| !counts.contains_key(*t)).collect();
            panic!(
                "not delivered: {missing:?}\n{}",
                herald.map(|h| h.stderr()).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const FAST_RETRY: &str = "retry_min = \"200ms\"\nretry_max = \"1s\"";

#[tokio::test]
async fn a_sink_down_for_a_while_gets_everything_once_it_is_back() {
    let script = vec![Reply::status(503).body("{\"error\":\"maintenance\"}"); 6];
    let env = Env::new(Receiver::with_script(script).await.expect("receiver")).await;
    let config = env.config(Imap::plain(&env.dovecot), FAST_RETRY);
    let herald = start_herald(&config).await;
    let titles: Vec<String> = (0..5).map(|i| format!("while down {i}")).collect();
    for t in &titles {
        env.dovecot
            .append("INBOX", &plain_mail(t, "x\n"))
            .await
            .expect("append");
    }
    let counts = wait_delivered(&env.receiver, &titles, Some(&herald)).await;
    assert!(
        counts.values().all(|&n| n == 1),
        "delivered twice: {counts:?}"
    );
    assert!(
        env.receiver
            .received()
            .iter()
            .filter(|r| r.status == 503)
            .count()
            == 6
    );
    assert!(herald.stderr().contains("Delivery failed, will retry."));
}

#[tokio::test]
async fn a_crash_at_any_crash_point_loses_nothing() {
    for point in [
        "after-fetch",
        "after-commit",
        "after-dispatch",
        "before-flag",
        "after-send-before-mark",
    ] {
        let env = Env::new(Receiver::start().await.expect("receiver")).await;
        let config = env.config(Imap::plain(&env.dovecot), "");
        let config_arg = config.to_str().expect("path");
        let mut herald = HeraldProcess::spawn(
            std::path::Path::new(env!("CARGO_BIN_EXE_herald")),
            &["run", "-c", config_arg],
            &[
                ("TEST_IMAP_PASSWORD", herald_testkit::PASSWORD),
                ("HERALD_CRASH_POINT", point),
                ("HERALD_LOG", "debug"),
            ],
        )
        .expect("spawn");
        herald
            .wait_for_stderr("Selected mailbox", DEADLINE)
            .await
            .expect("started");
        let titles: Vec<String> = (0..3).map(|i| format!("{point} {i}")).collect();
        let mut uids = Vec::new();
        for t in &titles {
            uids.push(
                env.dovecot
                    .append("INBOX", &plain_mail(t, "x\n"))
                    .await
                    .expect("append"),
            );
        }
        let status = herald.wait_exit(DEADLINE).await.expect("crash");
        assert!(!status.success(), "{point}: herald did not crash");
        assert!(
            herald
                .stderr()
                .contains(&format!("crash point {point} reached")),
            "{point}: {}",
            herald.stderr()
        );

        let herald = start_herald(&config).await;
        let counts = wait_delivered(&env.receiver, &titles, Some(&herald)).await;
        if point != "after-send-before-mark" {
            assert!(
                counts.values().all(|&n| n == 1),
                "{point}: repeated: {counts:?}"
            );
        } else {
            assert!(
                counts.values().all(|&n| n <= 2),
                "{point}: repeated more than once: {counts:?}"
            );
        }
        for uid in uids {
            wait_for_flags(&env.dovecot, uid, |f| f.iter().any(|f| f == "\\Seen")).await;
        }
    }
}

#[tokio::test]
async fn random_kills_during_a_stream_lose_nothing() {
    let env = Env::new(Receiver::start().await.expect("receiver")).await;
    let config = env.config(Imap::plain(&env.dovecot), "");
    let titles: Vec<String> = (0..40).map(|i| format!("stream {i}")).collect();
    let mut herald = start_herald(&config).await;
    let mut kills = 0;
    for (i, t) in titles.iter().enumerate() {
        env.dovecot
            .append("INBOX", &plain_mail(t, "x\n"))
            .await
            .expect("append");
        if i % 8 == 7 {
            // SIGKILL at a random moment within the next 300 ms, then start again.
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
            herald.kill().expect("kill");
            herald.wait_exit(DEADLINE).await.expect("killed");
            kills += 1;
            herald = start_herald(&config).await;
        }
    }
    let counts = wait_delivered(&env.receiver, &titles, Some(&herald)).await;
    let repeats: usize = counts.values().map(|n| n - 1).sum();
    // Only a delivery in flight at a kill can repeat: at most a batch per kill.
    assert!(
        repeats <= kills * 32,
        "{repeats} repeats after {kills} kills: {counts:?}"
    );
}

#[tokio::test]
async fn a_recreated_mailbox_alerts_only_on_new_mail() {
    let env = Env::new(Receiver::start().await.expect("receiver")).await;
    env.dovecot.create_mailbox("Alerts").await.expect("create");
    let config = env.config(
        Imap::plain(&env.dovecot).with("mailbox = \"Alerts\""),
        FAST_RETRY,
    );
    let herald = start_herald(&config).await;
    let old: Vec<Vec<u8>> = (0..5)
        .map(|i| plain_mail(&format!("old {i}"), "x\n"))
        .collect();
    for raw in &old {
        env.dovecot.append("Alerts", raw).await.expect("append");
    }
    let titles: Vec<String> = (0..5).map(|i| format!("old {i}")).collect();
    wait_delivered(&env.receiver, &titles, Some(&herald)).await;
    let before = env
        .dovecot
        .uidvalidity("Alerts")
        .await
        .expect("uidvalidity");

    env.dovecot.delete_mailbox("Alerts").await.expect("delete");
    env.dovecot.create_mailbox("Alerts").await.expect("create");
    assert_ne!(
        env.dovecot
            .uidvalidity("Alerts")
            .await
            .expect("uidvalidity"),
        before
    );
    // Dovecot may still be removing the old folder's files when the first APPEND to the new
    // one comes ("Mailbox was deleted under us"): the test's own set-up waits for it.
    let append = |raw: Vec<u8>| {
        let dovecot = &env.dovecot;
        async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            loop {
                match dovecot.append("Alerts", &raw).await {
                    Ok(_) => return,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        eprintln!("append to the recreated folder: {e:#}; again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("append: {e:#}"),
                }
            }
        }
    };
    for raw in &old {
        append(raw.clone()).await;
    }
    let new: Vec<String> = (0..2).map(|i| format!("new {i}")).collect();
    for t in &new {
        append(plain_mail(t, "x\n")).await;
    }
    let counts = wait_delivered(&env.receiver, &new, Some(&herald)).await;
    assert_eq!(
        counts.values().sum::<usize>(),
        7,
        "old mail alerted again: {counts:?}\n{}",
        herald.stderr()
    );
    assert!(
        herald.stderr().contains("UIDVALIDITY changed"),
        "{}",
        herald.stderr()
    );
}

#[tokio::test]
async fn mail_arriving_around_a_dovecot_restart_is_delivered() {
    let mut env = Env::new(Receiver::start().await.expect("receiver")).await;
    let config = env.config(Imap::plain(&env.dovecot).with("timeout = \"5s\""), "");
    let herald = start_herald(&config).await;
    env.dovecot
        .append("INBOX", &plain_mail("before restart", "x\n"))
        .await
        .expect("append");
    env.dovecot.restart().await.expect("restart");
    env.dovecot
        .append("INBOX", &plain_mail("after restart", "x\n"))
        .await
        .expect("append");
    let titles = vec!["before restart".to_string(), "after restart".to_string()];
    let counts = wait_delivered(&env.receiver, &titles, Some(&herald)).await;
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

#[tokio::test]
async fn a_half_open_imap_connection_is_detected_and_replaced() {
    let env = Env::new(Receiver::start().await.expect("receiver")).await;
    let proxy = FaultProxy::start(([127, 0, 0, 1], env.dovecot.port()).into())
        .await
        .expect("proxy");
    let imap = Imap {
        port: proxy.port(),
        ..Imap::plain(&env.dovecot)
    }
    .with("idle_keepalive = \"2s\"")
    .with("timeout = \"2s\"");
    let config = env.config(imap, "");
    let herald = start_herald(&config).await;
    herald
        .wait_for_stderr("First start on this mailbox", DEADLINE)
        .await
        .expect("baseline");
    proxy.set(Fault::BlackHole);
    env.dovecot
        .append("INBOX", &plain_mail("sent into the void", "x\n"))
        .await
        .expect("append");
    herald
        .wait_for_stderr("IMAP session failed, reconnecting.", DEADLINE)
        .await
        .expect("dead link noticed");
    proxy.set(Fault::Pass);
    let accepted = proxy.accepted();
    proxy
        .wait_accepted(accepted + 1, DEADLINE * 3)
        .await
        .expect("reconnected");
    wait_delivered(
        &env.receiver,
        &["sent into the void".to_string()],
        Some(&herald),
    )
    .await;
}

#[tokio::test]
async fn shutdown_is_bounded_with_a_hanging_sink_and_the_alert_survives() {
    let receiver = Receiver::start().await.expect("receiver");
    let proxy = FaultProxy::start(([127, 0, 0, 1], receiver.port()).into())
        .await
        .expect("proxy");
    let env = Env::new(receiver).await;
    let path = write_config(
        env.dir.path(),
        env.dir.path(),
        &Imap::plain(&env.dovecot),
        &env.receiver,
    );
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replace(
            &format!(":{}/", env.receiver.port()),
            &format!(":{}/", proxy.port()),
        )
        .replace("timeout = \"5s\"", "timeout = \"60s\"")
        .replace(
            "[defaults]",
            "[server]\nshutdown_timeout = \"2s\"\n\n[defaults]",
        );
    std::fs::write(&path, text).expect("config");
    proxy.set(Fault::BlackHole);
    let mut herald = start_herald(&path).await;
    env.dovecot
        .append("INBOX", &plain_mail("stuck", "x\n"))
        .await
        .expect("append");
    proxy
        .wait_accepted(1, DEADLINE)
        .await
        .expect("delivery attempt");

    let started = std::time::Instant::now();
    herald.sigterm().expect("sigterm");
    let status = herald.wait_exit(DEADLINE).await.expect("exit");
    let took = started.elapsed();
    assert!(status.success(), "{status:?}\n{}", herald.stderr());
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    assert!(
        herald
            .stderr()
            .contains("Deliveries still in flight at the shutdown deadline"),
        "{}",
        herald.stderr()
    );
    assert!(delivered(&env.receiver).is_empty());

    proxy.set(Fault::Pass);
    let herald = start_herald(&path).await;
    let counts = wait_delivered(&env.receiver, &["stuck".to_string()], Some(&herald)).await;
    assert_eq!(counts["stuck"], 1);
}

#[tokio::test]
async fn outbox_lists_retries_and_drops_dead_deliveries() {
    let script = vec![
        Reply::status(410).body("gone"),
        Reply::status(410).body("gone"),
    ];
    let env = Env::new(Receiver::with_script(script).await.expect("receiver")).await;
    let config = env.config(Imap::plain(&env.dovecot), "");
    let config_arg = config.to_str().expect("path").to_owned();
    let herald = start_herald(&config).await;
    env.dovecot
        .append("INBOX", &plain_mail("rejected once", "x\n"))
        .await
        .expect("append");
    env.dovecot
        .append("INBOX", &plain_mail("rejected twice", "x\n"))
        .await
        .expect("append");
    herald
        .wait_for_stderr("dead-lettered", DEADLINE)
        .await
        .expect("dead");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let list = loop {
        let mut out = spawn(&["outbox", "-c", &config_arg, "list"]);
        assert!(
            out.wait_exit(DEADLINE).await.expect("exit").success(),
            "{}",
            out.stderr()
        );
        let dead = out
            .stdout()
            .lines()
            .filter(|l| l.contains(" dead "))
            .count();
        if dead == 2 || tokio::time::Instant::now() > deadline {
            break out.stdout();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(list.contains("2 undelivered"), "{list}");
    let ids: Vec<String> = list
        .lines()
        .filter(|l| l.contains(" dead "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(list.contains("HTTP 410"), "{list}");

    let mut retry = spawn(&["outbox", "-c", &config_arg, "retry", &ids[0]]);
    assert!(
        retry.wait_exit(DEADLINE).await.expect("exit").success(),
        "{}",
        retry.stderr()
    );
    let mut drop = spawn(&["outbox", "-c", &config_arg, "drop", &ids[1]]);
    assert!(
        drop.wait_exit(DEADLINE).await.expect("exit").success(),
        "{}",
        drop.stderr()
    );
    let mut again = spawn(&["outbox", "-c", &config_arg, "drop", &ids[1]]);
    assert_eq!(
        again.wait_exit(DEADLINE).await.expect("exit").code(),
        Some(1)
    );

    // The running daemon picks the retried row up by itself.
    wait_delivered(&env.receiver, &["rejected once".to_string()], Some(&herald)).await;
    assert!(!delivered(&env.receiver).contains_key("rejected twice"));
}

#[tokio::test]
async fn a_fetch_cut_half_way_or_reset_is_retried_on_a_new_connection() {
    for fault in [Fault::CutAfter(20_000), Fault::Reset] {
        let env = Env::new(Receiver::start().await.expect("receiver")).await;
        let proxy = FaultProxy::start(([127, 0, 0, 1], env.dovecot.port()).into())
            .await
            .expect("proxy");
        let imap = Imap {
            port: proxy.port(),
            ..Imap::plain(&env.dovecot)
        }
        .with("timeout = \"3s\"");
        let herald = start_herald(&env.config(imap, "")).await;
        herald
            .wait_for_stderr("First start on this mailbox", DEADLINE)
            .await
            .expect("baseline");
        let accepted = proxy.accepted();
        // A large message: its literal is far longer than the cut.
        proxy.set(fault);
        let title = format!("big message through {fault:?}");
        env.dovecot
            .append(
                "INBOX",
                &plain_mail(&title, &"0123456789abcdef\n".repeat(10_000)),
            )
            .await
            .expect("append");
        herald
            .wait_for_stderr("IMAP session failed, reconnecting.", DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e:#}"));
        proxy.set(Fault::Pass);
        proxy
            .wait_accepted(accepted + 1, DEADLINE * 3)
            .await
            .expect("reconnected");
        let counts =
            wait_delivered(&env.receiver, std::slice::from_ref(&title), Some(&herald)).await;
        assert_eq!(counts[&title], 1, "{fault:?}");
    }
}

#[tokio::test]
async fn readyz_follows_the_imap_session_and_metrics_count() {
    let mut env = Env::new(Receiver::start().await.expect("receiver")).await;
    let port = herald_testkit::free_port();
    let path = env.config(Imap::plain(&env.dovecot).with("timeout = \"3s\""), "");
    let text = std::fs::read_to_string(&path).expect("config").replace(
        "[defaults]",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n\n[defaults]"),
    );
    std::fs::write(&path, text).expect("config");
    let herald = start_herald(&path).await;
    let client = reqwest::Client::new();
    let get = |what: &'static str| {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("http://127.0.0.1:{port}/{what}"))
                .send()
                .await
                .expect("request");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }
    };
    let wait_status = |what: &'static str, want: u16| async move {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (status, body) = get(what).await;
            if status == want {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/{what} stayed {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(get("healthz").await.0, 200);
    wait_status("readyz", 200).await;

    env.dovecot
        .append("INBOX", &plain_mail("counted", "x\n"))
        .await
        .expect("append");
    wait_delivered(&env.receiver, &["counted".to_string()], Some(&herald)).await;
    let metrics = wait_status("metrics", 200).await;
    assert!(
        metrics.contains("herald_deliveries_total{sink=\"hook\",outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_alerts_total{kind=\"other\",rule=\"\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("herald_imap_session_up 1"), "{metrics}");

    env.dovecot.stop().await.expect("stop");
    let body = wait_status("readyz", 503).await;
    assert!(body.contains("IMAP"), "{body}");
    assert_eq!(get("healthz").await.0, 200);
    env.dovecot.restart().await.expect("start again");
    wait_status("readyz", 200).await;
    let metrics = get("metrics").await.1;
    assert!(
        !metrics.contains("herald_imap_reconnects_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_server_without_idle_is_polled() {
    let mut env = Env::new(Receiver::start().await.expect("receiver")).await;
    env.dovecot
        .set_extra_config("imap_capability = IMAP4rev1 LITERAL+ UIDPLUS MOVE");
    env.dovecot.restart().await.expect("restart without IDLE");
    let config = env.config(Imap::plain(&env.dovecot).with("poll_interval = \"1s\""), "");
    let herald = start_herald(&config).await;
    herald
        .wait_for_stderr("Server lacks IDLE, polling.", DEADLINE)
        .await
        .expect("polling");
    env.dovecot
        .append("INBOX", &plain_mail("polled", "x\n"))
        .await
        .expect("append");
    wait_delivered(&env.receiver, &["polled".to_string()], Some(&herald)).await;
}

#[tokio::test]
async fn uidnext_going_backwards_triggers_a_rescan_without_repeats() {
    let mut env = Env::new(Receiver::start().await.expect("receiver")).await;
    let config = env.config(Imap::plain(&env.dovecot), "");
    let mut herald = start_herald(&config).await;
    for i in 0..2 {
        env.dovecot
            .append("INBOX", &plain_mail(&format!("kept {i}"), "x\n"))
            .await
            .expect("append");
    }
    wait_delivered(
        &env.receiver,
        &["kept 0".to_string(), "kept 1".to_string()],
        Some(&herald),
    )
    .await;
    // Take a copy of the mailbox as it is now (a backup).
    herald.sigterm().expect("sigterm");
    herald.wait_exit(DEADLINE).await.expect("exit");
    env.dovecot.stop().await.expect("stop");
    let mail = env.dovecot.dir().join("mail");
    let backup = env.dir.path().join("backup");
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .expect("cp");
        assert!(status.success());
    };
    copy(&mail, &backup);
    env.dovecot.restart().await.expect("start");
    let mut herald_again = start_herald(&config).await;
    for i in 0..3 {
        env.dovecot
            .append("INBOX", &plain_mail(&format!("lost in restore {i}"), "x\n"))
            .await
            .expect("append");
    }
    let lost: Vec<String> = (0..3).map(|i| format!("lost in restore {i}")).collect();
    wait_delivered(&env.receiver, &lost, Some(&herald_again)).await;
    // A clean stop: a kill here could leave a confirmed delivery unmarked, and its repeat
    // (allowed after a kill) is not what this test is about.
    herald_again.sigterm().expect("sigterm");
    herald_again.wait_exit(DEADLINE).await.expect("exit");

    // Restore the backup: same UIDVALIDITY, but UIDNEXT is back below herald's cursor.
    env.dovecot.stop().await.expect("stop");
    std::fs::remove_dir_all(&mail).expect("remove");
    copy(&backup, &mail);
    env.dovecot.restart().await.expect("start");
    let herald = start_herald(&config).await;
    herald
        .wait_for_stderr("UIDNEXT went backwards", DEADLINE)
        .await
        .expect("rescan");
    env.dovecot
        .append("INBOX", &plain_mail("after restore", "x\n"))
        .await
        .expect("append");
    let counts = wait_delivered(&env.receiver, &["after restore".to_string()], Some(&herald)).await;
    assert!(counts.values().all(|&n| n == 1), "repeated: {counts:?}");
    assert_eq!(counts.len(), 6, "{counts:?}");
}

/// Mail with Message-ID `<one-id@example.org>`, subject `subject` and `body`.
fn with_shared_id(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: root@example.org\r\nTo: herald@localhost\r\nSubject: {subject}\r\nMessage-ID: <one-id@example.org>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn a_reused_message_id_alerts_with_a_warning_and_a_replay_alerts_once() {
    let env = Env::new(Receiver::start().await.expect("receiver")).await;
    let path = env.config(Imap::plain(&env.dovecot), "");
    let genuine = with_shared_id("genuine", "the real report");
    for raw in [
        genuine.clone(),
        with_shared_id("impostor", "a stranger's mail reusing its Message-ID"),
        // A replay: the same bytes under a new UID, as a restored mailbox holds them.
        genuine,
    ] {
        env.dovecot.append("INBOX", &raw).await.expect("append");
    }
    let herald = start_herald(&path).await;
    wait_delivered(
        &env.receiver,
        &["genuine".to_string(), "impostor".to_string()],
        Some(&herald),
    )
    .await;
    wait_for_flags(&env.dovecot, 3, |f| f.iter().any(|f| f == "\\Seen")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = delivered(&env.receiver);
    assert_eq!(counts.get("genuine"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("impostor"), Some(&1), "{counts:?}");
    let log = herald.stderr();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reuses the Message-ID"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains("WARN")
            && warned[0].contains("title=impostor")
            && warned[0].contains("earlier_title=genuine")
            && warned[0].contains("earlier_alert="),
        "{}",
        warned[0]
    );
    assert_eq!(log.matches("Already alerted on").count(), 1, "{log}");
}

#[tokio::test]
async fn a_missing_move_target_fails_check_and_refused_marks_back_off_while_alerts_flow() {
    let env = Env::new(Receiver::start().await.expect("receiver")).await;
    // Dovecot's Maildir++ separator is `.`: this is the folder `Done` inside `Alerts`.
    env.dovecot
        .create_mailbox("Alerts.Done")
        .await
        .expect("create");
    let check = |target: &str| {
        let path = env.config(
            Imap::plain(&env.dovecot).with(&format!("processed = \"move:{target}\"")),
            "",
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["check", "--connect", "-c", path.to_str().expect("utf-8")])
            .env("TEST_IMAP_PASSWORD", herald_testkit::PASSWORD)
            .output()
            .expect("herald check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = check("Alerts.Done");
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = check("Nowhere");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no folder \"Nowhere\"") && stderr.contains("create it first"),
        "{stderr}"
    );
    let (code, stderr) = check("Alerts/Done");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("separator is \".\"") && stderr.contains("write \"move:Alerts.Done\""),
        "{stderr}"
    );

    // Run with it anyway (the last config written): alerts flow, marks wait, no relogin loop.
    let path = env.dir.path().join("herald.toml");
    env.dovecot
        .append("INBOX", &plain_mail("before start", "x\n"))
        .await
        .expect("append");
    let herald = start_herald(&path).await;
    wait_delivered(&env.receiver, &["before start".to_string()], Some(&herald)).await;
    herald
        .wait_for_stderr("The server refused to mark processed mail", DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
    env.dovecot
        .append("INBOX", &plain_mail("during the backoff", "x\n"))
        .await
        .expect("append");
    wait_delivered(
        &env.receiver,
        &["during the backoff".to_string()],
        Some(&herald),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = herald.stderr();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("The server refused to mark processed mail"))
        .collect();
    // MARK_RETRY waits 10 s before the first retry: one ERROR so far, not one per second.
    assert_eq!(refused.len(), 1, "{log}");
    assert!(refused[0].contains("ERROR"), "{}", refused[0]);
    assert!(!log.contains("IMAP session failed"), "{log}");
    assert_eq!(
        env.dovecot.uids("INBOX").await.expect("uids"),
        vec![1, 2],
        "nothing moved"
    );
}
