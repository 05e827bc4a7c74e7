//! Reload on SIGHUP, end to end against a real Dovecot and loopback webhooks: reloads in the
//! middle of a stream of mail lose and repeat no alert; an invalid file on reload leaves the
//! running configuration in charge, logs the located error at ERROR and counts it in
//! /metrics; a changed rule, a new sink and a new folder take effect.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{start_herald, write_config, Imap, DEADLINE};
use herald_testkit::{free_port, plain_mail, Dovecot, HeraldProcess, Receiver};

/// Waits until stderr holds `needle` at least `n` times.
async fn wait_for_count(herald: &HeraldProcess, needle: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while herald.stderr().matches(needle).count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needle:?} not {n} times:\n{}",
            herald.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `receiver` has taken `n` posts.
async fn wait_for_posts(receiver: &Receiver, n: usize, herald: &HeraldProcess) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while receiver.count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} posts:\n{}",
            receiver.count(),
            herald.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn titles(receiver: &Receiver) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for post in receiver.received() {
        let title = post.body["title"].as_str().unwrap_or_default().to_owned();
        *seen.entry(title).or_insert(0) += 1;
    }
    seen
}

fn append_to(path: &Path, text: &str) {
    let mut config = std::fs::read_to_string(path).expect("config");
    config.push_str(text);
    std::fs::write(path, config).expect("config");
}

async fn scrape(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_a_stream_of_mail_lose_and_repeat_nothing() {
    const MAILS: usize = 40;
    const RELOADS: usize = 3;
    let dovecot = Arc::new(Dovecot::start().await.expect("dovecot"));
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &receiver);
    // Slow answers keep deliveries in flight when a reload comes.
    receiver.set_delay(Duration::from_millis(150));
    let mut herald = start_herald(&config).await;

    let writer = {
        let dovecot = dovecot.clone();
        tokio::spawn(async move {
            for i in 0..MAILS {
                dovecot
                    .append("INBOX", &plain_mail(&format!("mail {i:02}"), "x\n"))
                    .await
                    .expect("append");
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    for n in 1..=RELOADS {
        // Each reload starts once some mail of the stream has arrived.
        wait_for_posts(&receiver, n * MAILS / (RELOADS + 1), &herald).await;
        herald.sighup().expect("sighup");
        wait_for_count(&herald, "Configuration reloaded.", n).await;
    }
    writer.await.expect("writer");
    wait_for_posts(&receiver, MAILS, &herald).await;
    // A graceful stop finishes every delivery in flight: a repeat would be posted by now.
    herald.sigterm().expect("sigterm");
    herald.wait_exit(DEADLINE).await.expect("exit");

    let seen = titles(&receiver);
    let expected: BTreeMap<String, usize> =
        (0..MAILS).map(|i| (format!("mail {i:02}"), 1)).collect();
    assert_eq!(seen, expected, "{}", herald.stderr());
    assert_eq!(
        herald.stderr().matches("Configuration reloaded.").count(),
        RELOADS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_on_reload_keeps_the_running_configuration() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let mut receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &receiver);
    let port = free_port();
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "[defaults]",
            &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n\n[defaults]"),
        ),
    )
    .expect("config");
    let mut herald = start_herald(&config).await;

    // A rule naming a sink that does not exist, on a line of its own.
    append_to(
        &config,
        "\n[[rules]]\nname = \"broken\"\nsinks = [\"pager\"]\n",
    );
    let line = std::fs::read_to_string(&config)
        .expect("config")
        .lines()
        .position(|l| l == "sinks = [\"pager\"]")
        .expect("the broken line")
        + 1;
    herald.sighup().expect("sighup");
    herald
        .wait_for_stderr("keeping the running one", DEADLINE)
        .await
        .expect("the refusal");
    let stderr = herald.stderr();
    let refusal = stderr
        .lines()
        .find(|l| l.contains("keeping the running one"))
        .expect("the refusal line");
    assert!(refusal.contains("level=ERROR"), "{refusal}");
    assert!(
        refusal.contains(&format!(
            "herald.toml:{line}:10: rules[1].sinks: unknown sink"
        )),
        "{refusal}"
    );

    // The old configuration still runs: mail flows, and the error is counted.
    dovecot
        .append("INBOX", &plain_mail("after the bad reload", "x\n"))
        .await
        .expect("append");
    let got = receiver.next(DEADLINE).await.expect("alert");
    assert_eq!(got.body["title"], "after the bad reload");
    let metrics = scrape(port).await;
    assert!(
        metrics.contains("herald_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_config_reloads_total{result=\"ok\"} 0"),
        "{metrics}"
    );
    assert!(
        !herald.stderr().contains("Configuration reloaded."),
        "{}",
        herald.stderr()
    );
    herald.sigterm().expect("sigterm");
    assert!(herald.wait_exit(DEADLINE).await.expect("exit").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rule_a_new_sink_and_a_new_folder_take_effect() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    dovecot.create_mailbox("Cron").await.expect("create Cron");
    let mut receiver = Receiver::start().await.expect("receiver");
    let mut pager = Receiver::start().await.expect("second receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let imap = Imap::plain(&dovecot).with("mailboxes = [\"INBOX\"]");
    let config: PathBuf = write_config(dir.path(), dir.path(), &imap, &receiver);
    let mut herald = start_herald(&config).await;

    dovecot
        .append("INBOX", &plain_mail("disk full before", "x\n"))
        .await
        .expect("append");
    let before = receiver.next(DEADLINE).await.expect("alert before");
    assert_eq!(before.body["title"], "disk full before");
    assert_eq!(before.body["severity"], "info");

    // Mail about full disks now goes to a new sink, as critical; Cron is watched too.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "mailboxes = [\"INBOX\"]",
            "mailboxes = [\"INBOX\", \"Cron\"]",
        ),
    )
    .expect("config");
    append_to(
        &config,
        &format!(
            "\n[sinks.pager]\ntype = \"webhook\"\nurl = \"{}\"\n\n[[rules]]\nname = \"disks\"\nmatch = {{ subject = \"disk full\" }}\nseverity = \"critical\"\nsinks = [\"pager\"]\n",
            pager.url()
        ),
    );
    herald.sighup().expect("sighup");
    herald
        .wait_for_stderr("Configuration reloaded.", DEADLINE)
        .await
        .expect("reloaded");
    dovecot
        .append("INBOX", &plain_mail("disk full after", "x\n"))
        .await
        .expect("append");
    let after = pager
        .next(DEADLINE)
        .await
        .expect("alert after, at the new sink");
    assert_eq!(after.body["title"], "disk full after");
    assert_eq!(after.body["severity"], "critical");
    assert_eq!(after.body["rule"], "disks");
    herald
        .wait_for_stderr("mailbox=default/Cron", DEADLINE)
        .await
        .expect("the new folder watched");
    dovecot
        .append("Cron", &plain_mail("in the new folder", "x\n"))
        .await
        .expect("append");
    let in_cron = receiver.next(DEADLINE).await.expect("alert from Cron");
    assert_eq!(in_cron.body["title"], "in the new folder");
    assert_eq!(in_cron.body["mailbox"], "Cron");
    herald.sigterm().expect("sigterm");
    assert!(herald.wait_exit(DEADLINE).await.expect("exit").success());
    assert_eq!(
        receiver.count(),
        2,
        "the old sink got the first alert and Cron's, not the disk one"
    );
}
