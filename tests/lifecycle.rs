//! Alert management end to end, against a real Dovecot and a loopback webhook: repeats fold
//! (also across a restart), a storm is one post and one digest, a kill -9 around a pending
//! digest neither loses nor doubles it, a silence made while herald runs applies within
//! seconds, and `herald alerts` says what became of each mail.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{start_herald, write_config, Imap, DEADLINE};
use herald_testkit::{cron_mail, plain_mail, Dovecot, Receiver};
use serde_json::Value;

const BACKUP: &str = "/usr/local/bin/backup.sh";

struct Env {
    dovecot: Dovecot,
    receiver: Receiver,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        Env {
            dovecot: Dovecot::start().await.expect("dovecot"),
            receiver: Receiver::start().await.expect("receiver"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The standard test configuration; `rule` lines go into its cron rule (the last table),
    /// `tail` after it.
    fn config(&self, rule: &str, tail: &str) -> std::path::PathBuf {
        let path = write_config(
            self.dir.path(),
            self.dir.path(),
            &Imap::plain(&self.dovecot),
            &self.receiver,
        );
        let mut text = std::fs::read_to_string(&path).expect("config");
        text.push_str(rule);
        text.push('\n');
        text.push_str(tail);
        std::fs::write(&path, text).expect("config");
        path
    }

    async fn fail(&self, host: &str) {
        self.dovecot
            .append(
                "INBOX",
                &cron_mail(host, "root", BACKUP, "backup.sh: failed\n"),
            )
            .await
            .expect("append");
    }

    /// The bodies the webhook took (HTTP 200).
    fn posts(&self) -> Vec<Value> {
        self.receiver
            .received()
            .into_iter()
            .filter(|r| r.status == 200)
            .map(|r| r.body)
            .collect()
    }
}

/// Runs the herald binary with `args` and returns its standard output.
fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("TEST_IMAP_PASSWORD", herald_testkit::PASSWORD)
        .env("HERALD_LOG", "warn")
        .output()
        .expect("running herald");
    assert!(
        out.status.success(),
        "herald {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `herald alerts --json`, one value per alert.
fn alerts(config: &Path) -> Vec<Value> {
    cli(&["alerts", "-c", config.to_str().expect("path"), "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Waits until `check` holds, failing with `what` at the deadline.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fate outcomes of the alerts `herald alerts` lists, once `n` of them are decided.
async fn fates(config: &Path, n: usize) -> Vec<String> {
    until(&format!("{n} alerts decided"), || {
        let decided: Vec<String> = alerts(config)
            .iter()
            .filter_map(|a| a["fate"]["outcome"].as_str().map(str::to_owned))
            .collect();
        (decided.len() >= n).then_some(decided)
    })
    .await
}

/// Every host a post names: its own and its digest members'.
fn hosts(posts: &[Value]) -> BTreeSet<String> {
    let mut hosts = BTreeSet::new();
    for post in posts {
        if post["digest"].as_array().is_some_and(|d| !d.is_empty()) {
            for member in post["digest"].as_array().into_iter().flatten() {
                hosts.extend(member["host"].as_str().map(str::to_owned));
            }
        } else {
            hosts.extend(post["host"].as_str().map(str::to_owned));
        }
    }
    hosts
}

#[tokio::test]
async fn repeats_fold_across_a_restart_and_herald_alerts_says_so() {
    let env = Env::new().await;
    let config = env.config(
        "",
        "[[rules]]\nname = \"noise\"\nmatch = { subject = \"^noise\" }\ndrop = true\n",
    );
    let mut daemon = start_herald(&config).await;
    for _ in 0..5 {
        env.fail("web01.example.net").await;
    }
    env.dovecot
        .append("INBOX", &plain_mail("noise from a script", "x\n"))
        .await
        .expect("append");
    let decided = fates(&config, 6).await;
    // A fate is decided when the alert is committed to the outbox; the post follows it.
    until("the page posted", || {
        (!env.posts().is_empty()).then_some(())
    })
    .await;
    assert_eq!(env.posts().len(), 1, "five repeats: one post");
    assert_eq!(decided.iter().filter(|f| *f == "folded").count(), 4);

    daemon.sigterm().expect("sigterm");
    daemon.wait_exit(DEADLINE).await.expect("stopped");
    let _herald = start_herald(&config).await;
    env.fail("web01.example.net").await;
    until("the repeat after the restart folded", || {
        let folded = alerts(&config)
            .iter()
            .filter(|a| a["fate"]["outcome"] == "folded")
            .count();
        (folded == 5).then_some(())
    })
    .await;
    assert_eq!(env.posts().len(), 1, "a restart does not re-page");

    let listed = alerts(&config);
    let notified = listed
        .iter()
        .find(|a| a["fate"]["outcome"] == "notified")
        .expect("the page");
    assert_eq!(notified["deliveries"][0]["sink"], "hook");
    assert_eq!(notified["deliveries"][0]["state"], "sent");
    let dropped = listed
        .iter()
        .find(|a| a["fate"]["outcome"] == "dropped")
        .expect("the dropped mail is listed");
    assert_eq!(dropped["fate"]["rule"], "noise");
    let text = cli(&["alerts", "-c", config.to_str().expect("path")]);
    assert!(text.contains("dropped by rule noise"), "{text}");
    assert!(
        text.contains("folded: repeat 1 of cron:web01.example.net"),
        "{text}"
    );
}

#[tokio::test]
async fn a_storm_is_one_post_and_one_digest_naming_every_host() {
    let env = Env::new().await;
    let config = env.config(
        "group_by = [\"kind\", \"command\"]\ngroup_interval = \"2s\"",
        "",
    );
    let _herald = start_herald(&config).await;
    env.fail("web00.example.net").await;
    until("the first post", || (!env.posts().is_empty()).then_some(())).await;
    for i in 1..12 {
        env.fail(&format!("web{i:02}.example.net")).await;
    }
    let posts = until("all 12 hosts named", || {
        let posts = env.posts();
        (hosts(&posts).len() == 12).then_some(posts)
    })
    .await;
    assert!(posts.len() <= 3, "{} posts", posts.len());
    let digest = posts.last().expect("a digest");
    assert!(
        digest["title"]
            .as_str()
            .is_some_and(|t| t.ends_with("problems: cron /usr/local/bin/backup.sh")),
        "{digest}"
    );
    assert_eq!(digest["group_key"], "cron:/usr/local/bin/backup.sh");
}

#[tokio::test]
async fn a_kill_as_a_digest_is_committed_neither_loses_nor_doubles_it() {
    let env = Env::new().await;
    let config = env.config(
        "group_by = [\"kind\", \"command\"]\ngroup_interval = \"2s\"",
        "",
    );
    let mut herald = common::spawn_with(&config, &[("HERALD_CRASH_POINT", "after-timers")]);
    herald
        .wait_for_stderr("Selected mailbox", DEADLINE)
        .await
        .expect("started");
    env.fail("web01.example.net").await;
    until("the first post", || (!env.posts().is_empty()).then_some(())).await;
    env.fail("web02.example.net").await;
    env.fail("web03.example.net").await;
    // The digest is committed when the group's interval ends, and herald dies right there.
    let status = herald.wait_exit(DEADLINE).await.expect("crash");
    assert!(!status.success());
    assert!(herald.stderr().contains("crash point after-timers reached"));
    assert_eq!(
        env.posts().len(),
        1,
        "the digest was not delivered before the crash"
    );

    let herald = start_herald(&config).await;
    let posts = until("the digest after the restart", || {
        let posts = env.posts();
        (posts.len() >= 2).then_some(posts)
    })
    .await;
    assert_eq!(
        hosts(&posts[1..]),
        ["web02.example.net", "web03.example.net"]
            .map(String::from)
            .into(),
    );
    // Another interval passes: the digest is not sent again.
    env.fail("web04.example.net").await;
    until("web04 notified", || {
        hosts(&env.posts())
            .contains("web04.example.net")
            .then_some(())
    })
    .await;
    let digests = env
        .posts()
        .iter()
        .filter(|p| {
            p["digest"]
                .as_array()
                .is_some_and(|d| d.iter().any(|m| m["host"] == "web02.example.net"))
        })
        .count();
    assert_eq!(digests, 1, "{}", herald.stderr());
}

#[tokio::test]
async fn a_silence_made_while_herald_runs_applies_within_seconds() {
    let env = Env::new().await;
    let config = env.config("", "");
    let config_arg = config.to_str().expect("path");
    let _herald = start_herald(&config).await;
    let added = cli(&[
        "silence",
        "-c",
        config_arg,
        "add",
        "--for",
        "1h",
        "--comment",
        "disk swap",
        "host=web01.*",
    ]);
    let id = added.split(':').next().expect("an id").trim().to_owned();
    env.fail("web01.example.net").await;
    env.fail("web02.example.net").await;
    until("web02 delivered", || {
        hosts(&env.posts())
            .contains("web02.example.net")
            .then_some(())
    })
    .await;
    let suppressed = until("the silence counted", || {
        let line = cli(&["silence", "-c", config_arg, "list", "--json"]);
        let silence: Value = serde_json::from_str(line.lines().next()?).ok()?;
        (silence["suppressed"] == 1).then_some(silence)
    })
    .await;
    assert_eq!(suppressed["comment"], "disk swap");
    assert!(!hosts(&env.posts()).contains("web01.example.net"));

    cli(&["silence", "-c", config_arg, "expire", &id]);
    env.fail("web01.example.net").await;
    until("web01 delivered once the silence ended", || {
        hosts(&env.posts())
            .contains("web01.example.net")
            .then_some(())
    })
    .await;
    assert_eq!(
        env.posts().len(),
        2,
        "the silenced alert is not replayed: web02, then the new web01"
    );
    let fates = fates(&config, 3).await;
    assert_eq!(fates.iter().filter(|f| *f == "silenced").count(), 1);
}
