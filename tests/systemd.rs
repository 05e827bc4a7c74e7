//! herald under systemd: `dist/herald.service` passes `systemd-analyze verify` without a word
//! on stderr and rates 2.0 or better in `systemd-analyze security`, and herald speaks the
//! notify protocol over `$NOTIFY_SOCKET` to a real unix datagram socket: READY=1 once it
//! runs, STATUS= with the IMAP sessions' state, WATCHDOG=1 periodically, RELOADING=1 and
//! READY=1 around a SIGHUP, and no WATCHDOG=1 once the store is wedged.
//!
//! The unit tests need `systemd-analyze` (Debian's `systemd` package, which scripts/test.sh
//! installs); without it they fail rather than pass unchecked.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{spawn_with, write_config, Imap, DEADLINE};
use herald_testkit::{plain_mail, Dovecot, Receiver};
use tokio::net::UnixDatagram;

const UNIT: &str = include_str!("../dist/herald.service");

/// The unit, with ExecStart pointing at the herald under test (`verify` checks that the
/// binary exists), in a directory of its own under its own name.
fn unit_copy(dir: &Path) -> PathBuf {
    let path = dir.join("herald.service");
    let text = UNIT.replace("/usr/bin/herald", env!("CARGO_BIN_EXE_herald"));
    assert_ne!(text, UNIT, "the unit's ExecStart names /usr/bin/herald");
    std::fs::write(&path, text).expect("writing the unit");
    path
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze").args(args).output().expect(
        "systemd-analyze is missing: install Debian's systemd package (scripts/test.sh does)",
    )
}

#[test]
fn the_unit_verifies_without_a_word() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_copy(dir.path());
    let out = systemd_analyze(&["verify", unit.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys and other warnings: anything said is a failure.
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn the_unit_is_hardened_and_has_what_herald_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_copy(dir.path());
    let out = systemd_analyze(&["security", "--offline=yes", unit.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let level: f64 = stdout
        .lines()
        .find_map(|line| line.split("herald.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    assert!(level <= 2.0, "exposure {level}:\n{stdout}");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=herald",
        "ConfigurationDirectory=herald",
        "LoadCredential=",
        "User=herald",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            UNIT.lines().any(|l| l.starts_with(line)),
            "the unit lacks {line}"
        );
    }
}

/// Every datagram the socket got, in order.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<String>>>);

impl Heard {
    fn all(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }

    /// Waits until a datagram at index `from` or later satisfies `check`; returns its index.
    async fn wait(&self, from: usize, what: &str, check: impl Fn(&str) -> bool) -> usize {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(i) = self.all().iter().skip(from).position(|m| check(m)) {
                return from + i;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} after #{from}; heard {:?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn listen(path: &Path) -> Heard {
    let socket = UnixDatagram::bind(path).expect("binding the notify socket");
    let heard = Heard::default();
    let sink = heard.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            sink.0.lock().expect("lock").push(text);
        }
    });
    heard
}

fn has(message: &str, assignment: &str) -> bool {
    message.lines().any(|l| l == assignment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_speaks_the_notify_protocol_and_starves_the_watchdog_when_wedged() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &receiver);
    let socket = dir.path().join("notify.sock");
    let heard = listen(&socket);
    // A 2 s watchdog: herald pets it every second while the store answers.
    let mut herald = spawn_with(
        &config,
        &[
            ("NOTIFY_SOCKET", socket.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "2000000"),
            ("HERALD_WEDGE_POINT", "store-commit"),
        ],
    );

    let ready = heard.wait(0, "READY=1", |m| has(m, "READY=1")).await;
    heard
        .wait(0, "STATUS= with the session up", |m| {
            has(m, "STATUS=IMAP: 1 of 1 mailboxes up")
        })
        .await;
    let mut at = ready;
    for _ in 0..3 {
        at = heard
            .wait(at + 1, "WATCHDOG=1", |m| has(m, "WATCHDOG=1"))
            .await;
    }

    herald.sighup().expect("sighup");
    let reloading = heard
        .wait(at, "RELOADING=1", |m| has(m, "RELOADING=1"))
        .await;
    heard
        .wait(reloading + 1, "READY=1 after the reload", |m| {
            has(m, "READY=1")
        })
        .await;
    heard
        .wait(reloading + 1, "STATUS= up again after the reload", |m| {
            has(m, "STATUS=IMAP: 1 of 1 mailboxes up")
        })
        .await;
    let after_reload = heard.all().len();
    heard
        .wait(after_reload, "WATCHDOG=1 after the reload", |m| {
            has(m, "WATCHDOG=1")
        })
        .await;

    // A mail makes ingest commit, which hangs in the store holding its connection.
    dovecot
        .append("INBOX", &plain_mail("wedge", "x\n"))
        .await
        .expect("append");
    herald
        .wait_for_stderr("wedge point store-commit reached", DEADLINE)
        .await
        .expect("the wedge");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !herald
        .stderr()
        .split("wedge point store-commit reached")
        .nth(1)
        .is_some_and(|after| after.contains("The store is not answering"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "herald did not notice the wedged store:\n{}",
            herald.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let starved = heard.all().len();
    // Absence can only be shown over a window: three watchdog periods without a pet, after
    // which systemd would have restarted herald.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let since: Vec<String> = heard.all().into_iter().skip(starved).collect();
    assert!(
        !since.iter().any(|m| has(m, "WATCHDOG=1")),
        "WATCHDOG=1 while wedged: {since:?}"
    );
    herald.kill().expect("kill");
}
