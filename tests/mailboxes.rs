//! Several mailboxes and accounts end to end, and the state's one owner: two folders of one
//! account and two accounts on two Dovecots, each with its own IDLE session and cursor; alerts
//! carry `account` and `mailbox`, and rules match them; a second `herald run` on the same
//! state refuses to start; commands that only read never create a state.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{spawn, start_herald, wait_for_flags, Imap, DEADLINE};
use herald_testkit::{plain_mail, Dovecot, Receiver};
use serde_json::Value;

/// An `[[imap]]` entry for `dovecot`.
fn account(name: &str, dovecot: &Dovecot, folders: &[&str]) -> String {
    let folders: Vec<String> = folders.iter().map(|f| format!("{f:?}")).collect();
    format!(
        "[[imap]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"herald\"\n\
         password = \"${{TEST_IMAP_PASSWORD}}\"\nmailboxes = [{}]\n\n",
        dovecot.port(),
        folders.join(", ")
    )
}

/// A configuration of `accounts`, the state in `dir`, everything to the webhook `receiver`,
/// and a rule that makes mail found in a folder called `Cron` critical.
fn config(dir: &Path, accounts: &str, receiver: &Receiver) -> PathBuf {
    let text = format!(
        "{accounts}[state]\npath = \"{}\"\n\n[defaults]\nsinks = [\"hook\"]\n\n\
         [sinks.hook]\ntype = \"webhook\"\nurl = \"{}\"\ntimeout = \"5s\"\n\n\
         [[rules]]\nname = \"cron-folder\"\nmatch = {{ mailbox = \"Cron\" }}\nseverity = \"critical\"\nsinks = [\"hook\"]\n",
        dir.join("herald.db").display(),
        receiver.url()
    );
    let path = dir.join("herald.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// The next `n` alerts the receiver gets, by title.
async fn next_alerts(
    receiver: &mut Receiver,
    n: usize,
    herald: &herald_testkit::HeraldProcess,
) -> Vec<Value> {
    let mut alerts = Vec::new();
    for _ in 0..n {
        let got = receiver
            .next(DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
        alerts.push(got.body);
    }
    alerts.sort_by(|a, b| a["title"].as_str().cmp(&b["title"].as_str()));
    alerts
}

#[tokio::test]
async fn two_folders_of_one_account_each_alert_with_their_mailbox() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    dovecot.create_mailbox("Cron").await.expect("create Cron");
    let mut receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().unwrap();
    // The 0.1 spelling with `mailboxes` added: one unnamed `[imap]` account.
    let imap = format!(
        "[imap]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"herald\"\n\
         password = \"${{TEST_IMAP_PASSWORD}}\"\nmailboxes = [\"INBOX\", \"Cron\"]\n\n",
        dovecot.port()
    );
    let config = config(dir.path(), &imap, &receiver);
    let herald = start_herald(&config).await;
    herald
        .wait_for_stderr("mailbox=default/Cron", DEADLINE)
        .await
        .expect("both folders watched");

    let in_inbox = dovecot
        .append("INBOX", &plain_mail("a note in the inbox", "x\n"))
        .await
        .expect("append");
    let in_cron = dovecot
        .append("Cron", &plain_mail("a note in the cron folder", "x\n"))
        .await
        .expect("append");
    let alerts = next_alerts(&mut receiver, 2, &herald).await;
    assert_eq!(alerts[0]["title"], "a note in the cron folder");
    assert_eq!(
        (&alerts[0]["account"], &alerts[0]["mailbox"]),
        (&Value::from("default"), &Value::from("Cron"))
    );
    assert_eq!(
        alerts[0]["severity"], "critical",
        "the mailbox rule matched"
    );
    assert_eq!(alerts[0]["rule"], "cron-folder");
    assert_eq!(alerts[1]["title"], "a note in the inbox");
    assert_eq!(alerts[1]["mailbox"], "INBOX");
    assert_ne!(alerts[1]["severity"], "critical");
    wait_for_flags(&dovecot, in_inbox, |f| f.iter().any(|f| f == "\\Seen")).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !dovecot
        .flags("Cron", in_cron)
        .await
        .expect("flags")
        .iter()
        .any(|f| f == "\\Seen")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Cron mail never marked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.count(), 2);
}

#[tokio::test]
async fn two_accounts_keep_their_own_cursors_across_a_restart() {
    let hub = Dovecot::start().await.expect("dovecot");
    let site = Dovecot::start().await.expect("dovecot");
    let mut receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().unwrap();
    let accounts = account("hub", &hub, &["INBOX"]) + &account("site2", &site, &["INBOX"]);
    let config = config(dir.path(), &accounts, &receiver);
    let mut herald = start_herald(&config).await;
    herald
        .wait_for_stderr("mailbox=site2/INBOX", DEADLINE)
        .await
        .expect("both accounts watched");

    hub.append("INBOX", &plain_mail("from the hub", "x\n"))
        .await
        .expect("append");
    site.append("INBOX", &plain_mail("from site 2", "x\n"))
        .await
        .expect("append");
    let alerts = next_alerts(&mut receiver, 2, &herald).await;
    assert_eq!(
        (&alerts[0]["title"], &alerts[0]["account"]),
        (&Value::from("from site 2"), &Value::from("site2"))
    );
    assert_eq!(
        (&alerts[1]["title"], &alerts[1]["account"]),
        (&Value::from("from the hub"), &Value::from("hub"))
    );

    herald.sigterm().expect("sigterm");
    assert!(herald.wait_exit(DEADLINE).await.expect("exit").success());
    // While herald is down, one more mail on the second account only.
    site.append("INBOX", &plain_mail("while herald was down", "x\n"))
        .await
        .expect("append");
    let herald = start_herald(&config).await;
    let got = receiver
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
    assert_eq!(got.body["title"], "while herald was down");
    assert_eq!(got.body["account"], "site2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 3, "nothing repeated");
}

#[tokio::test]
async fn a_second_herald_on_the_same_state_refuses_to_start() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let mut receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &receiver);
    let first = start_herald(&config).await;

    let mut second = spawn(&["run", "-c", config.to_str().expect("path")]);
    let status = second.wait_exit(DEADLINE).await.expect("exit");
    assert_eq!(status.code(), Some(1), "{}", second.stderr());
    assert!(
        second.stderr().contains("another herald is running on"),
        "{}",
        second.stderr()
    );
    assert!(
        !second.stderr().contains("Selected mailbox"),
        "it must not touch the mailbox: {}",
        second.stderr()
    );

    // The first one is undisturbed.
    dovecot
        .append("INBOX", &plain_mail("still delivered once", "x\n"))
        .await
        .expect("append");
    let got = receiver
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", first.stderr()));
    assert_eq!(got.body["title"], "still delivered once");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn a_vanished_state_file_is_refused_not_replaced() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &receiver);
    let mut herald = start_herald(&config).await;
    herald.sigterm().expect("sigterm");
    assert!(herald.wait_exit(DEADLINE).await.expect("exit").success());

    let db = dir.path().join("herald.db");
    std::fs::remove_file(&db).expect("remove the state");
    let _ = std::fs::remove_file(dir.path().join("herald.db-wal"));
    let mut again = spawn(&["run", "-c", config.to_str().expect("path")]);
    let status = again.wait_exit(DEADLINE).await.expect("exit");
    assert_eq!(status.code(), Some(1), "{}", again.stderr());
    let stderr = again.stderr();
    assert!(stderr.contains("is missing"), "{stderr}");
    assert!(
        stderr.contains("to start with an empty state on purpose, delete"),
        "{stderr}"
    );
    assert!(!db.exists(), "no new state was made");
}

#[tokio::test]
async fn outbox_list_on_a_wrong_path_says_so_and_creates_nothing() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("not-here");
    let config = common::write_config(dir.path(), &state, &Imap::plain(&dovecot), &receiver);
    let mut list = spawn(&["outbox", "-c", config.to_str().expect("path"), "list"]);
    let status = list.wait_exit(DEADLINE).await.expect("exit");
    assert_eq!(status.code(), Some(1), "{}", list.stderr());
    assert!(
        list.stderr().contains("no state database at"),
        "{}",
        list.stderr()
    );
    assert!(!state.exists(), "nothing was created");
}
