//! The fast path end to end: a real Dovecot running herald's shipped push script
//! (`dist/dovecot/herald-push.lua`) through its push_notification plugin, herald's `POST /push`
//! waking the IDLE session, and the alert at a loopback webhook.
//!
//! That the alert came through the push is shown twice: herald counts the fetch a push
//! started (`herald_push_fetches_total`), and the alert arrives well before Dovecot's own IDLE
//! notice could have (Dovecot holds those 500 ms). The script must never hold Dovecot's
//! delivery up for long: with herald stopped, or frozen by SIGSTOP, an APPEND or an LMTP
//! delivery is confirmed within the script's timeout.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{start_herald, write_config, Imap, DEADLINE};
use herald_testkit::{plain_mail, Dovecot, HeraldProcess, Push, Receiver};

/// The script's default connect/read timeout (`DEFAULT_TIMEOUT` in herald-push.lua).
const SCRIPT_TIMEOUT: Duration = Duration::from_millis(500);

/// Dovecot's IDLE notice delay (`NOTIFY_DELAY_MSECS`): an alert sooner than this after the
/// APPEND was confirmed cannot have come through IDLE.
const IDLE_NOTICE: Duration = Duration::from_millis(500);

/// Room for a loaded 2-core CI machine on top of the script's timeout.
const SLACK: Duration = Duration::from_millis(700);

const TOKEN: &str = "push-test-token";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/dovecot/herald-push.lua")
}

/// A Dovecot pushing to herald's `/push` on `port`, and a herald configuration watching its
/// INBOX, serving on `port`, with the token on both sides.
struct Setup {
    dovecot: Dovecot,
    receiver: Receiver,
    config: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let port = herald_testkit::free_port();
    let dovecot = Dovecot::start_push(Push {
        url: format!("http://127.0.0.1:{port}/push"),
        script: script(),
        token: Some(TOKEN.to_owned()),
    })
    .await
    .expect("dovecot");
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &receiver);
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "[defaults]",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\npush_token = \"{TOKEN}\"\n\n[defaults]"),
    );
    std::fs::write(&config, text).expect("config");
    Setup {
        dovecot,
        receiver,
        config,
        port,
        _dir: dir,
    }
}

/// The value of the metric line starting with `name` (a full series, labels included).
async fn metric(port: u16, name: &str) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

const PUSH_FETCHES: &str = "herald_push_fetches_total";
const WOKE: &str = "herald_pushes_total{outcome=\"woke\"}";

/// Waits for the next alert and returns how long after `confirmed` it arrived.
async fn alert_after(
    receiver: &mut Receiver,
    herald: &HeraldProcess,
    confirmed: Instant,
    title: &str,
) -> Duration {
    let got = receiver
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{title}: {e:#}\n{}", herald.stderr()));
    assert_eq!(got.body["title"], title);
    let latency = got.at.saturating_duration_since(confirmed);
    eprintln!("{title}: confirmed → webhook in {latency:?}");
    latency
}

async fn stop(mut herald: HeraldProcess) {
    herald.sigterm().expect("sigterm");
    herald.wait_exit(DEADLINE).await.expect("exit");
}

#[tokio::test]
async fn append_and_lmtp_delivery_arrive_through_the_push() {
    let mut s = setup().await;
    let herald = start_herald(&s.config).await;
    // The first look at the mailbox is done; let the session settle into IDLE.
    herald
        .wait_for_stderr("Idling.", DEADLINE)
        .await
        .expect("idle");
    let before = metric(s.port, PUSH_FETCHES).await;

    s.dovecot
        .append("INBOX", &plain_mail("pushed by APPEND", "x\n"))
        .await
        .expect("append");
    let confirmed = Instant::now();
    let latency = alert_after(&mut s.receiver, &herald, confirmed, "pushed by APPEND").await;
    let after_append = metric(s.port, PUSH_FETCHES).await;
    assert!(
        after_append > before,
        "no push-started fetch\n{}",
        herald.stderr()
    );
    assert!(
        latency < IDLE_NOTICE,
        "APPEND → webhook took {latency:?}: not the push path\n{}",
        herald.stderr()
    );

    s.dovecot
        .deliver_lmtp(&plain_mail("pushed by LMTP", "x\n"))
        .await
        .expect("lmtp");
    let confirmed = Instant::now();
    let latency = alert_after(&mut s.receiver, &herald, confirmed, "pushed by LMTP").await;
    assert!(metric(s.port, PUSH_FETCHES).await > after_append);
    assert!(
        latency < IDLE_NOTICE,
        "LMTP → webhook took {latency:?}: not the push path\n{}",
        herald.stderr()
    );
    assert!(metric(s.port, WOKE).await >= 2);
    stop(herald).await;
}

/// A reload (SIGHUP) makes new sessions; hints reach them, not the stopped ones.
#[tokio::test]
async fn pushes_reach_the_mailboxes_of_a_reloaded_configuration() {
    let mut s = setup().await;
    let mut herald = start_herald(&s.config).await;
    herald.sighup().expect("sighup");
    herald
        .wait_for_stderr("Configuration reloaded.", DEADLINE)
        .await
        .expect("reloaded");
    // The new session's first look is done once it idles.
    let idled = herald.stderr().matches("Idling.").count();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while herald.stderr().matches("Idling.").count() <= idled {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            herald.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = metric(s.port, PUSH_FETCHES).await;
    s.dovecot
        .append("INBOX", &plain_mail("pushed after a reload", "x\n"))
        .await
        .expect("append");
    let confirmed = Instant::now();
    let latency = alert_after(&mut s.receiver, &herald, confirmed, "pushed after a reload").await;
    assert!(metric(s.port, PUSH_FETCHES).await > before);
    assert!(latency < IDLE_NOTICE, "{latency:?}\n{}", herald.stderr());
    stop(herald).await;
}

#[tokio::test]
async fn a_stopped_or_frozen_herald_does_not_hold_up_delivery() {
    let mut s = setup().await;
    // No herald at all: the connection is refused at once.
    let started = Instant::now();
    s.dovecot
        .append("INBOX", &plain_mail("nobody listening", "x\n"))
        .await
        .expect("append");
    s.dovecot
        .deliver_lmtp(&plain_mail("nobody listening either", "x\n"))
        .await
        .expect("lmtp");
    let took = started.elapsed();
    assert!(took < SCRIPT_TIMEOUT, "with herald stopped: {took:?}");

    // herald frozen: the connection is accepted by the kernel, and the script's read times
    // out. Each delivery waits about the timeout, no more.
    let herald = start_herald(&s.config).await;
    herald
        .wait_for_stderr("Idling.", DEADLINE)
        .await
        .expect("idle");
    // Both mails from before are alerted on (the first start window takes unseen mail).
    for _ in 0..2 {
        s.receiver.next(DEADLINE).await.expect("the earlier mail");
    }
    signal(&herald, "STOP");
    let started = Instant::now();
    s.dovecot
        .append("INBOX", &plain_mail("herald frozen", "x\n"))
        .await
        .expect("append");
    let append = started.elapsed();
    let started = Instant::now();
    s.dovecot
        .deliver_lmtp(&plain_mail("herald still frozen", "x\n"))
        .await
        .expect("lmtp");
    let lmtp = started.elapsed();
    signal(&herald, "CONT");
    eprintln!("with herald frozen: APPEND {append:?}, LMTP {lmtp:?}");
    for took in [append, lmtp] {
        assert!(
            took < SCRIPT_TIMEOUT + SLACK,
            "with herald frozen: {took:?} (script timeout {SCRIPT_TIMEOUT:?})"
        );
    }
    // The hints were lost, but IDLE still brings the mail.
    let mut titles = Vec::new();
    for _ in 0..2 {
        let got = s
            .receiver
            .next(DEADLINE)
            .await
            .expect("the frozen-time mail");
        titles.push(got.body["title"].as_str().unwrap_or_default().to_owned());
    }
    titles.sort();
    assert_eq!(titles, ["herald frozen", "herald still frozen"]);
    stop(herald).await;
}

#[tokio::test]
async fn a_push_storm_is_coalesced_and_rate_limited() {
    let mut s = setup().await;
    let herald = start_herald(&s.config).await;
    herald
        .wait_for_stderr("Idling.", DEADLINE)
        .await
        .expect("idle");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/push", s.port);
    let hint = r#"{"user":"herald","mailbox":"INBOX","uidvalidity":1,"uid":1}"#;

    // A hint without the token, and one for a mailbox nobody watches, wake nothing.
    let refused = client.post(&url).body(hint).send().await.expect("post");
    assert_eq!(refused.status().as_u16(), 403);
    let unknown = client
        .post(&url)
        .header("X-Herald-Token", TOKEN)
        .body(r#"{"user":"someone-else","mailbox":"INBOX"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(unknown.status().as_u16(), 204);
    assert_eq!(
        metric(s.port, "herald_pushes_total{outcome=\"unknown\"}").await,
        1
    );
    assert_eq!(
        metric(s.port, "herald_pushes_total{outcome=\"refused\"}").await,
        1
    );

    let before = metric(s.port, PUSH_FETCHES).await;
    const HINTS: u64 = 400;
    let started = Instant::now();
    let mut sending = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        sending.spawn(async move {
            for _ in 0..HINTS / 8 {
                let response = client
                    .post(&url)
                    .header("X-Herald-Token", TOKEN)
                    .body(hint)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(response.status().as_u16(), 204);
            }
        });
    }
    while let Some(done) = sending.join_next().await {
        done.expect("sender");
    }
    let elapsed = started.elapsed();
    eprintln!("{HINTS} hints in {elapsed:?}");
    // A mail in the middle of nothing still arrives: the storm did not wedge the session.
    s.dovecot
        .append("INBOX", &plain_mail("after the storm", "x\n"))
        .await
        .expect("append");
    let got = s
        .receiver
        .next(DEADLINE)
        .await
        .expect("alert after the storm");
    assert_eq!(got.body["title"], "after the storm");
    let fetches = metric(s.port, PUSH_FETCHES).await - before;
    assert!(metric(s.port, WOKE).await >= HINTS);
    // At most one fetch per 20 ms while the storm lasts, one at each end of it, and the
    // APPEND's own hint (with one more if it came during that fetch).
    let limit = elapsed.as_millis().div_ceil(20) as u64 + 4;
    eprintln!("{fetches} push-started fetches (limit {limit})");
    assert!(
        fetches <= limit && fetches < HINTS / 2,
        "{HINTS} hints in {elapsed:?} made {fetches} fetches (limit {limit})"
    );
    stop(herald).await;
}

/// Sends `signal` (`STOP`, `CONT`) to herald.
fn signal(herald: &HeraldProcess, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(herald.pid().to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Runs `herald push-test` on `config`: whether it succeeded, and its stdout and stderr.
async fn push_test(config: &Path) -> (bool, String, String) {
    let mut run = common::spawn(&["push-test", "-c", config.to_str().expect("utf-8 path")]);
    let status = run.wait_exit(DEADLINE).await.expect("push-test exits");
    (status.success(), run.stdout(), run.stderr())
}

/// No scratch folder is left behind (Maildir++ keeps folders as `.name` directories).
fn no_scratch_folder(dovecot: &Dovecot) {
    let maildir = dovecot.dir().join("mail").join(dovecot.user());
    let left: Vec<String> = std::fs::read_dir(&maildir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.contains("herald-push-test"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch folders left: {left:?}");
}

#[tokio::test]
async fn push_test_tells_whether_pushes_arrive() {
    let s = setup().await;
    // herald not running: push-test listens itself.
    let (ok, out, err) = push_test(&s.config).await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("Dovecot's push reached"), "{out}");
    no_scratch_folder(&s.dovecot);

    // The daemon running: push-test watches its counters.
    let herald = start_herald(&s.config).await;
    let (ok, out, err) = push_test(&s.config).await;
    assert!(ok, "{out}\n{err}\n{}", herald.stderr());
    assert!(out.contains("reached the running herald"), "{out}");
    no_scratch_folder(&s.dovecot);
    stop(herald).await;

    // The wrong token is named as such.
    let text = std::fs::read_to_string(&s.config)
        .expect("config")
        .replace(TOKEN, "not-the-token");
    std::fs::write(&s.config, text).expect("config");
    let (ok, out, err) = push_test(&s.config).await;
    assert!(!ok, "{out}");
    assert!(err.contains("wrong token"), "{err}");
}

#[tokio::test]
async fn push_test_fails_plainly_without_the_plugin() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &receiver);
    let port = herald_testkit::free_port();
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "[defaults]",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n\n[defaults]"),
    );
    std::fs::write(&config, text).expect("config");
    let started = Instant::now();
    let (ok, out, err) = push_test(&config).await;
    assert!(!ok, "{out}");
    assert!(err.contains("No push reached"), "{err}");
    assert!(started.elapsed() < DEADLINE);
    no_scratch_folder(&dovecot);
}
