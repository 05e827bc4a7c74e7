//! Shared set-up for the integration tests: a herald configuration for a test Dovecot and a
//! loopback webhook receiver, and the herald binary started on it.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_testkit::{Dovecot, HeraldProcess, Receiver};

/// Long enough for a loaded CI machine; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How herald reaches the test Dovecot.
#[derive(Debug, Clone)]
pub struct Imap {
    pub tls: &'static str,
    pub port: u16,
    pub ca_file: Option<PathBuf>,
    /// Extra `[imap]` lines, e.g. `processed = "delete"`.
    pub extra: String,
}

impl Imap {
    pub fn plain(dovecot: &Dovecot) -> Imap {
        Imap {
            tls: "none",
            port: dovecot.port(),
            ca_file: None,
            extra: String::new(),
        }
    }

    pub fn with(mut self, line: &str) -> Imap {
        self.extra.push_str(line);
        self.extra.push('\n');
        self
    }
}

/// Writes a configuration to `dir/herald.toml`: IMAP as given, the state in `state_dir`, a
/// webhook sink `hook` pointing at `receiver`, a rule sending cron mail to it and everything
/// else to it by default.
pub fn write_config(dir: &Path, state_dir: &Path, imap: &Imap, receiver: &Receiver) -> PathBuf {
    let ca = imap
        .ca_file
        .as_ref()
        .map(|p| format!("ca_file = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    let text = format!(
        r#"[imap]
host = "127.0.0.1"
port = {port}
tls = "{tls}"
{ca}username = "herald"
password = "${{TEST_IMAP_PASSWORD}}"
{extra}
[state]
path = "{state}"

[defaults]
sinks = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
timeout = "5s"

[[rules]]
name = "cron-failures"
match = {{ kind = "cron" }}
severity = "critical"
sinks = ["hook"]
"#,
        port = imap.port,
        tls = imap.tls,
        extra = imap.extra,
        state = state_dir.join("herald.db").display(),
        url = receiver.url(),
    );
    let path = dir.join("herald.toml");
    std::fs::write(&path, text).expect("writing the test configuration");
    path
}

/// Starts `herald run` on `config` and waits until it has taken its first look at the mailbox.
pub async fn start_herald(config: &Path) -> HeraldProcess {
    let herald = spawn(&["run", "-c", config.to_str().expect("utf-8 path")]);
    herald
        .wait_for_stderr("Selected mailbox", DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("herald did not start: {e:#}\n{}", herald.stderr()));
    herald
}

/// Starts herald on `config`, appends a mail titled `title` to INBOX, waits for its alert
/// at `receiver`, and stops herald: one alert end to end over whatever `config` says.
pub async fn one_alert_through(
    config: &Path,
    dovecot: &Dovecot,
    receiver: &mut Receiver,
    title: &str,
) {
    let mut herald = start_herald(config).await;
    dovecot
        .append("INBOX", &herald_testkit::plain_mail(title, "x\n"))
        .await
        .expect("append");
    let got = receiver
        .next(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{title}: {e:#}\n{}", herald.stderr()));
    assert_eq!(got.body["title"], title);
    herald.sigterm().expect("sigterm");
    herald.wait_exit(DEADLINE).await.expect("exit");
}

/// `text` as it appears inside a quoted logfmt value of herald's log (`"` and `\` escaped).
pub fn logged(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Spawns the herald binary with the test password in its environment and debug logs.
pub fn spawn(args: &[&str]) -> HeraldProcess {
    spawn_env(args, &[])
}

/// `herald run -c config` with `envs` added to [`spawn`]'s environment.
pub fn spawn_with(config: &Path, envs: &[(&str, &str)]) -> HeraldProcess {
    spawn_env(&["run", "-c", config.to_str().expect("utf-8 path")], envs)
}

fn spawn_env(args: &[&str], envs: &[(&str, &str)]) -> HeraldProcess {
    let mut all = vec![
        ("TEST_IMAP_PASSWORD", herald_testkit::PASSWORD),
        ("HERALD_LOG", "debug"),
    ];
    all.extend_from_slice(envs);
    HeraldProcess::spawn(Path::new(env!("CARGO_BIN_EXE_herald")), args, &all)
        .expect("spawning herald")
}

/// Waits until `check` holds for the flags of `uid` in INBOX.
pub async fn wait_for_flags(
    dovecot: &Dovecot,
    uid: u32,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let flags = dovecot.flags("INBOX", uid).await.expect("reading flags");
        if check(&flags) {
            return flags;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flags of {uid} stayed {flags:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
