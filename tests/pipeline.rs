//! End-to-end tests of the foundation: a real Dovecot, the herald binary, a loopback webhook.
//! Each test has its own Dovecot, state directory and receiver.

mod common;

use std::time::Duration;

use common::{start_herald, wait_for_flags, write_config, Imap, DEADLINE};
use herald_testkit::{cron_mail, plain_mail, Dovecot, Receiver};

struct Env {
    dovecot: Dovecot,
    receiver: Receiver,
    dir: tempfile::TempDir,
}

async fn env(dovecot: Dovecot) -> Env {
    Env {
        dovecot,
        receiver: Receiver::start().await.expect("receiver"),
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

impl Env {
    fn config(&self, imap: &Imap) -> std::path::PathBuf {
        write_config(self.dir.path(), self.dir.path(), imap, &self.receiver)
    }
}

const BACKUP: &str = "/usr/local/bin/backup.sh";
const FAILURE: &str = "backup.sh: error: cannot stat /srv/data: No such file or directory\n";

#[tokio::test]
async fn cron_mail_becomes_a_typed_alert_at_the_webhook_and_is_marked_seen() {
    let mut env = env(Dovecot::start().await.expect("dovecot")).await;
    let config = env.config(&Imap::plain(&env.dovecot));
    let herald = start_herald(&config).await;

    let uid = env
        .dovecot
        .append(
            "INBOX",
            &cron_mail("web01.example.net", "root", BACKUP, FAILURE),
        )
        .await
        .expect("append");
    let got = env
        .receiver
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
    let alert = &got.body;
    assert_eq!(alert["kind"], "cron");
    assert_eq!(alert["host"], "web01.example.net");
    assert_eq!(alert["user"], "root");
    assert_eq!(alert["command"], BACKUP);
    assert_eq!(alert["failed"], true);
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["rule"], "cron-failures");
    assert_eq!(
        alert["dedup_key"],
        format!("cron:web01.example.net:root:{BACKUP}")
    );
    assert_eq!(got.header("content-type"), Some("application/json"));

    wait_for_flags(&env.dovecot, uid, |f| f.iter().any(|f| f == "\\Seen")).await;
}

#[tokio::test]
async fn non_cron_mail_becomes_other_with_its_subject() {
    let mut env = env(Dovecot::start().await.expect("dovecot")).await;
    let config = env.config(&Imap::plain(&env.dovecot));
    let _herald = start_herald(&config).await;

    env.dovecot
        .append(
            "INBOX",
            &plain_mail("Disk quota report", "All volumes below 80%.\n"),
        )
        .await
        .expect("append");
    let alert = env.receiver.next(DEADLINE).await.expect("alert").body;
    assert_eq!(alert["kind"], "other");
    assert_eq!(alert["title"], "Disk quota report");
    assert_eq!(alert["summary"], "All volumes below 80%.");
    assert_eq!(alert["rule"], serde_json::Value::Null);
}

#[tokio::test]
async fn restart_repeats_nothing_and_delivers_mail_that_arrived_while_down() {
    let mut env = env(Dovecot::start().await.expect("dovecot")).await;
    let config = env.config(&Imap::plain(&env.dovecot));
    let mut herald = start_herald(&config).await;

    env.dovecot
        .append("INBOX", &plain_mail("first", "1\n"))
        .await
        .expect("append");
    assert_eq!(
        env.receiver.next(DEADLINE).await.expect("first").body["title"],
        "first"
    );
    herald.sigterm().expect("sigterm");
    let status = herald.wait_exit(DEADLINE).await.expect("exit");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        herald.stderr()
    );

    env.dovecot
        .append("INBOX", &plain_mail("while down", "2\n"))
        .await
        .expect("append");
    let herald = start_herald(&config).await;
    let got = env
        .receiver
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
    assert_eq!(got.body["title"], "while down");

    // A sentinel: mail is processed in UID order, so a repeat of "first" would arrive before it.
    env.dovecot
        .append("INBOX", &plain_mail("sentinel", "3\n"))
        .await
        .expect("append");
    assert_eq!(
        env.receiver.next(DEADLINE).await.expect("sentinel").body["title"],
        "sentinel"
    );
    assert_eq!(env.receiver.count(), 3, "a message was delivered twice");
}

#[tokio::test]
async fn first_start_alerts_only_on_unseen_mail_and_records_the_rest() {
    let mut env = env(Dovecot::start().await.expect("dovecot")).await;
    env.dovecot
        .append_flagged("INBOX", &["\\Seen"], &plain_mail("old and read", "x\n"))
        .await
        .expect("append");
    env.dovecot
        .append("INBOX", &plain_mail("recent unread", "y\n"))
        .await
        .expect("append");
    let config = env.config(&Imap::plain(&env.dovecot));
    let herald = start_herald(&config).await;

    let first = env
        .receiver
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
    assert_eq!(first.body["title"], "recent unread");
    env.dovecot
        .append("INBOX", &plain_mail("sentinel", "z\n"))
        .await
        .expect("append");
    assert_eq!(
        env.receiver.next(DEADLINE).await.expect("sentinel").body["title"],
        "sentinel"
    );
    assert_eq!(env.receiver.count(), 2, "the read message alerted");
    assert!(
        herald.stderr().contains("alerting=1"),
        "{}",
        herald.stderr()
    );
}

#[tokio::test]
async fn a_message_over_max_message_bytes_is_fetched_in_part_and_still_alerts() {
    let mut env = env(Dovecot::start().await.expect("dovecot")).await;
    let config = env.config(&Imap::plain(&env.dovecot).with("max_message_bytes = 4096"));
    let _herald = start_herald(&config).await;

    let body = format!("{FAILURE}{}", "filler line of job output\n".repeat(8000));
    env.dovecot
        .append(
            "INBOX",
            &cron_mail("db1.example.net", "postgres", "pg_dump -Fc main", &body),
        )
        .await
        .expect("append");
    let alert = env.receiver.next(DEADLINE).await.expect("alert").body;
    assert_eq!(alert["kind"], "cron");
    assert_eq!(alert["truncated"], true);
    assert_eq!(alert["command"], "pg_dump -Fc main");
    assert!(alert["body"].as_str().expect("body").len() < 4096);
}

#[tokio::test]
async fn processed_keyword_move_and_delete() {
    for (processed, check) in [
        ("keyword:$Herald", "keyword"),
        ("move:Done", "move"),
        ("delete", "delete"),
        ("none", "none"),
    ] {
        let mut env = env(Dovecot::start().await.expect("dovecot")).await;
        env.dovecot.create_mailbox("Done").await.expect("create");
        let config =
            env.config(&Imap::plain(&env.dovecot).with(&format!("processed = {processed:?}")));
        let mut herald = start_herald(&config).await;
        let uid = env
            .dovecot
            .append("INBOX", &plain_mail("x", "y\n"))
            .await
            .expect("append");
        env.receiver.next(DEADLINE).await.expect("alert");
        // Marks follow the commit; a SIGTERM lets herald finish its cycle, so after a clean
        // exit the server holds the final state.
        herald.sigterm().expect("sigterm");
        assert!(herald.wait_exit(DEADLINE).await.expect("exit").success());
        let inbox = env.dovecot.uids("INBOX").await.expect("uids");
        match check {
            "keyword" => {
                let flags = env.dovecot.flags("INBOX", uid).await.expect("flags");
                assert!(flags.contains(&"$Herald".to_string()), "{flags:?}");
                assert!(!flags.contains(&"\\Seen".to_string()), "{flags:?}");
            }
            "move" => {
                assert!(inbox.is_empty(), "{inbox:?}\n{}", herald.stderr());
                assert_eq!(env.dovecot.uids("Done").await.expect("uids").len(), 1);
            }
            "delete" => assert!(inbox.is_empty(), "{inbox:?}\n{}", herald.stderr()),
            _ => assert_eq!(
                env.dovecot.flags("INBOX", uid).await.expect("flags"),
                Vec::<String>::new()
            ),
        }
    }
}

#[tokio::test]
async fn starttls_and_implicit_tls_with_a_private_ca() {
    let mut env = env(Dovecot::start_tls().await.expect("dovecot")).await;
    let ca = env.dovecot.ca_path().expect("ca").to_owned();
    for (tls, port) in [
        ("starttls", env.dovecot.port()),
        ("implicit", env.dovecot.tls_port().expect("tls port")),
    ] {
        let imap = Imap {
            tls: if tls == "starttls" {
                "starttls"
            } else {
                "implicit"
            },
            port,
            ca_file: Some(ca.clone()),
            extra: String::new(),
        };
        let state = tempfile::tempdir().expect("tempdir");
        let config = write_config(env.dir.path(), state.path(), &imap, &env.receiver);
        common::one_alert_through(&config, &env.dovecot, &mut env.receiver, tls).await;
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let env = env(Dovecot::start_tls().await.expect("dovecot")).await;
    let wrong = herald_testkit::write_unrelated_ca(env.dir.path()).expect("ca");
    let imap = Imap {
        tls: "implicit",
        port: env.dovecot.tls_port().expect("tls port"),
        ca_file: Some(wrong),
        extra: String::new(),
    };
    let herald = common::spawn(&["run", "-c", env.config(&imap).to_str().expect("path")]);
    herald
        .wait_for_stderr("TLS handshake with 127.0.0.1 failed", DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
    // Refused whichever way rustls words it: an unknown issuer, or (the unrelated CA has
    // the same name) a signature that does not verify.
    assert!(
        herald.stderr().contains("invalid peer certificate"),
        "{}",
        herald.stderr()
    );
    assert!(!herald.stderr().contains("Selected mailbox"));
}

#[tokio::test]
async fn wrong_password_unreachable_server_and_missing_mailbox_are_reported_and_retried() {
    let env = env(Dovecot::start().await.expect("dovecot")).await;
    let cases = [
        (
            Imap::plain(&env.dovecot).with("timeout = \"5s\""),
            "password",
            common::logged("login as \"herald\" refused"),
        ),
        (
            Imap::plain(&env.dovecot).with("mailbox = \"Nope\""),
            "mailbox",
            common::logged("cannot select mailbox \"Nope\""),
        ),
        (
            Imap {
                port: herald_testkit::free_port(),
                ..Imap::plain(&env.dovecot)
            },
            "unreachable",
            "cannot connect to 127.0.0.1".to_owned(),
        ),
    ];
    for (imap, case, expected) in cases {
        let state = tempfile::tempdir().expect("tempdir");
        let config = write_config(state.path(), state.path(), &imap, &env.receiver);
        let mut text = std::fs::read_to_string(&config).expect("config");
        if case == "password" {
            text = text.replace("${TEST_IMAP_PASSWORD}", "wrong");
        }
        std::fs::write(&config, text).expect("config");
        let herald = common::spawn(&["run", "-c", config.to_str().expect("path")]);
        herald
            .wait_for_stderr(&expected, DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:#}\n{}", herald.stderr()));
        let log = herald.stderr();
        let line = log.lines().find(|l| l.contains(&expected)).expect("line");
        assert!(
            line.contains("WARN") && line.contains("retry_in="),
            "{case}: {line}"
        );
        assert!(
            !log.contains(herald_testkit::PASSWORD) || case == "password",
            "{case}: password in log"
        );
        assert!(!log.contains("wrong\""), "{case}: password in log");
    }
}

#[tokio::test]
async fn a_full_disk_stops_herald_without_marking_mail_processed() {
    let mut env = env(Dovecot::start().await.expect("dovecot")).await;
    let mount = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(mount.path())
        .status()
        .expect("mount");
    assert!(status.success(), "cannot mount a tmpfs (tests run as root)");
    let _unmount = Unmount(mount.path().to_owned());

    let config = write_config(
        env.dir.path(),
        mount.path(),
        &Imap::plain(&env.dovecot),
        &env.receiver,
    );
    let mut herald = start_herald(&config).await;
    herald
        .wait_for_stderr("First start on this mailbox", DEADLINE)
        .await
        .expect("baseline");
    // Fill the filesystem to the last byte.
    let filler = mount.path().join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);

    let body = "x".repeat(200_000);
    let uid = env
        .dovecot
        .append("INBOX", &plain_mail("must survive a full disk", &body))
        .await
        .expect("append");
    let status = herald
        .wait_exit(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
    assert_eq!(status.code(), Some(1), "{}", herald.stderr());
    assert!(
        herald.stderr().contains("cannot store alerts"),
        "{}",
        herald.stderr()
    );
    let flags = env.dovecot.flags("INBOX", uid).await.expect("flags");
    assert!(
        !flags.contains(&"\\Seen".to_string()),
        "marked processed: {flags:?}"
    );
    assert_eq!(env.receiver.count(), 0);

    std::fs::remove_file(&filler).expect("remove filler");
    let herald = start_herald(&config).await;
    let got = env
        .receiver
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
    assert_eq!(got.body["title"], "must survive a full disk");
    wait_for_flags(&env.dovecot, uid, |f| f.iter().any(|f| f == "\\Seen")).await;
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn idle_latency_is_close_to_dovecots_own_notice() {
    let mut env = env(Dovecot::start().await.expect("dovecot")).await;
    let config = env.config(&Imap::plain(&env.dovecot));
    let _herald = start_herald(&config).await;
    // Let herald settle into IDLE: the first message may arrive during catch-up.
    env.dovecot
        .append("INBOX", &plain_mail("warm-up", "x\n"))
        .await
        .expect("append");
    env.receiver.next(DEADLINE).await.expect("warm-up");
    let start = std::time::Instant::now();
    env.dovecot
        .append("INBOX", &plain_mail("timed", "x\n"))
        .await
        .expect("append");
    let got = env.receiver.next(DEADLINE).await.expect("timed");
    let latency = got.at.duration_since(start);
    // Dovecot holds IDLE notices for 500 ms; anything under 3 s shows IDLE (not a poll) woke
    // herald. The benchmark measures the precise figure.
    assert!(latency < Duration::from_secs(3), "latency {latency:?}");
}

#[tokio::test]
async fn each_twilio_recipient_is_its_own_delivery() {
    let env = env(Dovecot::start().await.expect("dovecot")).await;
    let rejected = r#"{"code": 21211, "message": "The 'To' number +15550000001 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
    let mut twilio = Receiver::with_script(vec![herald_testkit::Reply::status(400)
        .header("content-type", "application/json")
        .body(rejected)])
    .await
    .expect("receiver");
    let config = env.config(&Imap::plain(&env.dovecot));
    let mut text = std::fs::read_to_string(&config).expect("config");
    text = text.replace(
        "sinks = [\"hook\"]\n\n[sinks.hook]",
        "sinks = [\"sms\"]\n\n[sinks.hook]",
    );
    text.push_str(&format!(
        "\n[sinks.sms]\ntype = \"twilio\"\naccount_sid = \"AC00000000000000000000000000000000\"\nauth_token = \"tw-token\"\n\
         from = \"+15005550006\"\nto = [\"+15550000001\", \"+15550000002\"]\napi_base = \"http://127.0.0.1:{}\"\n",
        twilio.port()
    ));
    std::fs::write(&config, text).expect("config");
    let herald = start_herald(&config).await;

    env.dovecot
        .append("INBOX", &plain_mail("disk full", "x\n"))
        .await
        .expect("append");
    let to = |r: &herald_testkit::Received| {
        let body = String::from_utf8_lossy(&r.raw).to_string();
        body.split('&')
            .find_map(|kv| kv.strip_prefix("To="))
            .unwrap_or_default()
            .to_owned()
    };
    let first = twilio
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
    let second = twilio.next(DEADLINE).await.expect("second recipient");
    // The two recipients are delivered at once, so in either order; the fake answers in
    // its script's order, so which one got the 400 is whichever asked first.
    let mut answers = [(to(&first), first.status), (to(&second), second.status)];
    answers.sort();
    let rejected = answers
        .iter()
        .find(|(_, status)| *status == 400)
        .map(|(to, _)| to.clone())
        .expect("one recipient rejected");
    assert_eq!(
        answers.map(|(to, _)| to),
        ["%2B15550000001".to_string(), "%2B15550000002".to_string()]
    );
    herald
        .wait_for_stderr("dead-lettered", DEADLINE)
        .await
        .expect("dead letter logged");

    // The next alert goes to both again; the rejected one was not retried in between.
    env.dovecot
        .append("INBOX", &plain_mail("sentinel", "x\n"))
        .await
        .expect("append");
    let third = twilio.next(DEADLINE).await.expect("third");
    let fourth = twilio.next(DEADLINE).await.expect("fourth");
    let mut next = [to(&third), to(&fourth)];
    next.sort();
    assert_eq!(
        next,
        ["%2B15550000001".to_string(), "%2B15550000002".to_string()]
    );
    for r in [&third, &fourth] {
        assert!(
            String::from_utf8_lossy(&r.raw).contains("sentinel"),
            "the rejected recipient {rejected} was not retried in between"
        );
    }
    assert!(!herald.stderr().contains("tw-token"));
}

#[tokio::test]
async fn check_connect_logs_in_or_says_why_not() {
    let env = env(Dovecot::start().await.expect("dovecot")).await;
    let config = env.config(&Imap::plain(&env.dovecot));
    let mut ok = common::spawn(&["check", "--connect", "-c", config.to_str().expect("path")]);
    let status = ok.wait_exit(DEADLINE).await.expect("exit");
    assert!(status.success(), "{}", ok.stderr());
    assert!(
        ok.stdout()
            .contains("logged in, mailbox \"INBOX\" selected"),
        "{}",
        ok.stdout()
    );
    let stdout = ok.stdout();
    let (logged_in, said_ok) = (stdout.find("logged in"), stdout.find(": OK ("));
    assert!(
        logged_in.is_some() && said_ok > logged_in,
        "OK after the login: {stdout}"
    );

    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("${TEST_IMAP_PASSWORD}", "wrong");
    std::fs::write(&config, text).expect("config");
    let mut refused = common::spawn(&["check", "--connect", "-c", config.to_str().expect("path")]);
    let status = refused.wait_exit(DEADLINE).await.expect("exit");
    assert_eq!(status.code(), Some(1), "{}", refused.stderr());
    assert!(
        refused.stderr().contains("login as \"herald\" refused"),
        "{}",
        refused.stderr()
    );
    // OK only once logged in; the server's reply in its own words, no Rust debug dump.
    assert!(!refused.stdout().contains("OK"), "{}", refused.stdout());
    for dump in ["code:", "Some(", "None", "info:"] {
        assert!(!refused.stderr().contains(dump), "{}", refused.stderr());
    }

    let config = env.config(&Imap::plain(&env.dovecot).with("mailboxes = [\"Nope\"]"));
    let mut missing = common::spawn(&["check", "--connect", "-c", config.to_str().expect("path")]);
    let status = missing.wait_exit(DEADLINE).await.expect("exit");
    assert_eq!(status.code(), Some(1), "{}", missing.stderr());
    assert!(
        missing.stderr().contains("cannot select mailbox \"Nope\""),
        "{}",
        missing.stderr()
    );
    for dump in ["code:", "Some(", "None", "information:"] {
        assert!(!missing.stderr().contains(dump), "{}", missing.stderr());
    }
}

#[tokio::test]
async fn a_failing_sink_does_not_delay_another() {
    let mut env = env(Dovecot::start().await.expect("dovecot")).await;
    let down = Receiver::with_script(vec![herald_testkit::Reply::status(503); 100])
        .await
        .expect("receiver");
    let config = env.config(&Imap::plain(&env.dovecot));
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "sinks = [\"hook\"]\n\n[sinks.hook]",
        "sinks = [\"down\", \"hook\"]\n\n[sinks.hook]",
    );
    std::fs::write(
        &config,
        format!(
            "{text}\n[sinks.down]\ntype = \"webhook\"\nurl = \"{}\"\n",
            down.url()
        ),
    )
    .expect("config");
    let herald = start_herald(&config).await;

    for i in 0..3 {
        env.dovecot
            .append("INBOX", &plain_mail(&format!("m{i}"), "x\n"))
            .await
            .expect("append");
    }
    // All three arrive while the other sink keeps failing (in any order: the webhook
    // delivers several at once).
    let mut titles = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let got = env
            .receiver
            .next(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
        titles.insert(got.body["title"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(titles, ["m0", "m1", "m2"].map(String::from).into());
    herald
        .wait_for_stderr("Delivery failed, will retry.", DEADLINE)
        .await
        .expect("retrying");
    assert!(down.count() >= 1);
}

#[tokio::test]
async fn a_cron_failure_reaches_an_irc_channel_and_herald_quits_cleanly() {
    let env = env(Dovecot::start().await.expect("dovecot")).await;
    let ircd = herald_testkit::Ngircd::start().await.expect("ngircd");
    let mut watcher = herald_testkit::IrcClient::connect(ircd.port(), "watcher")
        .await
        .expect("client");
    watcher.join("#ops").await.expect("join");
    let config = env.config(&Imap::plain(&env.dovecot));
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "severity = \"critical\"\nsinks = [\"hook\"]",
        "severity = \"critical\"\nsinks = [\"hook\", \"irc\"]",
    );
    let text = format!(
        "{text}\n[sinks.irc]\ntype = \"irc\"\nserver = \"127.0.0.1\"\nport = {}\ntls = false\nnick = \"herald\"\nchannels = [\"#ops\"]\n",
        ircd.port()
    );
    std::fs::write(&config, text).expect("config");
    let mut herald = start_herald(&config).await;

    env.dovecot
        .append(
            "INBOX",
            &cron_mail(
                "web01.example.net",
                "root",
                BACKUP,
                "error: disk full\r\nQUIT :injected\r\n",
            ),
        )
        .await
        .expect("append");
    let lines = watcher
        .messages("herald", "#ops", 1, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
    assert!(
        lines[0].text().contains("cron on web01.example.net"),
        "{:?}",
        lines[0]
    );
    herald
        .wait_for_stderr("sink=irc", DEADLINE)
        .await
        .expect("delivery logged");

    herald.sigterm().expect("sigterm");
    assert!(herald.wait_exit(DEADLINE).await.expect("exit").success());
    let quit = watcher
        .wait_for(DEADLINE, |l| {
            l.command == "QUIT" && l.nick() == Some("herald")
        })
        .await
        .expect("herald said QUIT at shutdown");
    assert!(!quit.text().contains("injected"));
    assert!(watcher
        .tail(50)
        .lines()
        .all(|l| !l.contains("injected") || l.contains("PRIVMSG")));
}

/// `daemon::run` takes its shutdown signal as a parameter: the whole pipeline runs inside the
/// test process, delivers, and stops when told, releasing the state for the next run.
#[tokio::test]
async fn the_whole_pipeline_runs_in_process_and_stops_when_told() {
    let mut env = env(Dovecot::start().await.expect("dovecot")).await;
    let path = env.config(&Imap::plain(&env.dovecot));
    let load = || {
        let text = std::fs::read_to_string(&path).expect("config");
        let env_var = |name: &str| {
            (name == "TEST_IMAP_PASSWORD").then(|| herald_testkit::PASSWORD.to_owned())
        };
        herald::config::Config::parse(&path, &text, &env_var).expect("valid config")
    };
    let run = |config| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(herald::daemon::run(config, async {
            let _ = stopped.await;
        }));
        (stop, daemon)
    };
    type Running = (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    );
    let stop_and_wait = |(stop, daemon): Running| async move {
        stop.send(()).expect("the daemon is running");
        tokio::time::timeout(DEADLINE, daemon)
            .await
            .expect("stops when told")
            .expect("no panic")
            .expect("clean stop");
    };
    let first = run(load());
    env.dovecot
        .append(
            "INBOX",
            &cron_mail("web01.example.net", "root", BACKUP, FAILURE),
        )
        .await
        .expect("append");
    let got = env.receiver.next(DEADLINE).await.expect("delivered");
    assert_eq!(got.body["command"], BACKUP);
    assert_eq!(got.body["mailbox"], "INBOX");
    stop_and_wait(first).await;

    // The lock went with it: a second run in the same process owns the state again.
    let second = run(load());
    env.dovecot
        .append("INBOX", &plain_mail("after the restart", "x\n"))
        .await
        .expect("append");
    let got = env
        .receiver
        .next(DEADLINE)
        .await
        .expect("the second run delivers");
    assert_eq!(got.body["title"], "after the restart");
    stop_and_wait(second).await;
    assert_eq!(env.receiver.count(), 2, "nothing delivered twice");
}
