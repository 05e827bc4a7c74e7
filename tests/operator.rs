//! The operator's command line: `-c` anywhere, completions, the man page, `health`,
//! `outbox list --json --state`, `check` warnings, and configuration errors in plain words.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Output};

fn herald(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("HERALD_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running herald")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A complete configuration: no warnings.
fn config(state: &Path, extra: &str) -> String {
    format!(
        r#"[imap]
host = "127.0.0.1"
tls = "none"
username = "alerts"
password = "${{HERALD_TEST_UNSET_PW:-pw-default}}"

[state]
path = "{}"

[defaults]
sinks = ["hook"]
fallback = "hook"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
{extra}"#,
        state.display()
    )
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("herald.toml");
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[test]
fn config_flag_works_before_and_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &config(&dir.path().join("herald.db"), ""));
    for args in [
        ["-c", &path, "check"],
        ["check", "-c", &path],
        ["--config", &path, "check"],
    ] {
        let out = herald(&args, &[]);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("OK (1 sink, 0 rules)"),
            "{args:?}"
        );
        // ${VAR:-default} gave the unset password its default; a complete file warns nothing.
        assert!(
            !text(&out.stderr).contains("warning:"),
            "{}",
            text(&out.stderr)
        );
    }
    // Nested subcommands too: the file is read (its state path is the one asked about).
    let out = herald(&["outbox", "list", "-c", &path, "--json"], &[]);
    assert!(
        text(&out.stderr).contains(&format!(
            "no state database at {}",
            dir.path().join("herald.db").display()
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = herald(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(
            script.contains("outbox") && script.contains("config"),
            "{shell}"
        );
    }
    // The bash script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.bash");
    std::fs::write(&file, herald(&["completions", "bash"], &[]).stdout).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    let bad = herald(&["completions", "tcsh"], &[]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_committed_man_page_is_the_generated_one() {
    let out = herald(&["man"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    for section in [
        ".TH herald 1",
        ".SH SYNOPSIS",
        ".SH COMMANDS",
        "herald outbox list",
        "herald completions",
        ".SH CONFIGURATION",
        "[defaults]",
        "EXIT STATUS",
    ] {
        assert!(page.contains(section), "{section} missing from herald(1)");
    }
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/herald.1"))
        .expect("docs/herald.1");
    assert!(
        committed == page,
        "docs/herald.1 is out of date: cargo run -- man > docs/herald.1"
    );
}

/// A one-request HTTP server on loopback answering `status`; returns its port and the
/// request line it got.
fn one_answer(status: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 512];
        let n = stream.read(&mut request).unwrap();
        write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        text(&request[..n]).lines().next().unwrap_or("").to_owned()
    });
    (port, handle)
}

#[test]
fn health_asks_readyz_and_exits_by_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    for (status, code) in [("200 OK", 0), ("503 Service Unavailable", 1)] {
        let (port, server) = one_answer(status);
        let path = write(
            dir.path(),
            &config(
                &dir.path().join("herald.db"),
                &format!("[server]\nlisten = \"localhost:{port}\"\n"),
            ),
        );
        let out = herald(&["health", "-c", &path], &[]);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
        assert_eq!(server.join().unwrap(), "GET /readyz HTTP/1.1");
    }
    // Nothing listening: a sentence, exit 1.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = write(
        dir.path(),
        &config(
            &dir.path().join("herald.db"),
            &format!("[server]\nlisten = \"0.0.0.0:{port}\"\n"),
        ),
    );
    let out = herald(&["health", "-c", &path], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("cannot connect to http://127.0.0.1:{port}/readyz")),
        "{}",
        text(&out.stderr)
    );
    // No listen address: nothing to ask.
    let path = write(dir.path(), &config(&dir.path().join("herald.db"), ""));
    let out = herald(&["health", "-c", &path], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("[server] listen is not set"));
}

#[test]
fn check_warns_about_a_configuration_that_delivers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A file where a directory should be: the state cannot be made.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let path = write(
        dir.path(),
        &format!(
            r#"[imap]
host = "127.0.0.1"
tls = "none"
username = "alerts"
password = "p"

[state]
path = "{}/herald.db"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"

[[rules]]
name = "cron"
match = {{ kind = "cron" }}

[[rules]]
name = "sudo"
match = {{ kind = "sudo" }}
sinks = ["hook"]
"#,
            blocker.display()
        ),
    );
    let out = herald(&["check", "-c", &path], &[]);
    assert_eq!(out.status.code(), Some(0), "warnings are not errors");
    let stderr = text(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 4, "{stderr}");
    assert!(stderr.contains("[defaults] sinks is empty"), "{stderr}");
    assert!(stderr.contains("rule \"cron\" routes nowhere"), "{stderr}");
    assert!(!stderr.contains("rule \"sudo\""), "{stderr}");
    assert!(
        stderr.contains("[defaults] fallback is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("is not a directory"), "{stderr}");
    assert!(text(&out.stdout).contains("OK (1 sink, 2 rules)"));
}

#[test]
fn check_connect_says_ok_only_after_logging_in() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9: the login fails, so there is no OK.
    let text_ = config(&dir.path().join("herald.db"), "").replace(
        "tls = \"none\"",
        "tls = \"none\"\nport = 9\ntimeout = \"2s\"",
    );
    let path = write(dir.path(), &text_);
    let out = herald(&["check", "--connect", "-c", &path], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("OK"), "{}", text(&out.stdout));
}

/// Each error is a sentence with its location and key; no Rust type or debug output.
#[test]
fn configuration_errors_are_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("herald.db");
    let cases: &[(&str, &str, &str)] = &[
        (
            "[server]\nshutdown_timeout = nan\n",
            "server.shutdown_timeout: expected a string, found the number nan",
            "NaN",
        ),
        (
            "[server]\nshutdown_timeout = 20x\n",
            "server.shutdown_timeout: not a value TOML knows: quote strings",
            "invalid float",
        ),
        (
            "[server]\nlisten = \"mybox:9469\"\n",
            "server.listen: \"mybox:9469\" is not an address to listen on",
            "syntax",
        ),
        (
            "[server]\nlisten = 9469\n",
            "server.listen: expected a string, found the number 9469",
            "invalid type",
        ),
        (
            "[[rules]]\nname = \"a\"\nsinks = [\"hook\"]\nname = \"b\"\n",
            "rules[0].name: duplicate key: name is already set earlier in this table",
            "expected",
        ),
    ];
    for (extra, said, never) in cases {
        let path = write(dir.path(), &config(&state, extra));
        let out = herald(&["check", "-c", &path], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {stderr}");
        assert!(stderr.contains(said), "{extra}: {stderr}");
        assert!(!stderr.contains(never), "{extra}: {stderr}");
    }
    let port = config(&state, "").replace("tls = \"none\"", "tls = \"none\"\nport = 70000");
    let out = herald(&["check", "-c", &write(dir.path(), &port)], &[]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(":4:8: imap.port: the number 70000 is out of range: expected a whole number from 0 to 65535"),
        "{stderr}"
    );
    assert!(!stderr.contains("u16"), "{stderr}");
    // An unquoted secret is not echoed.
    let bare = config(&state, "").replace(
        "password = \"${HERALD_TEST_UNSET_PW:-pw-default}\"",
        "password = s3cr3t",
    );
    let out = herald(&["check", "-c", &write(dir.path(), &bare)], &[]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("imap.password: not a value TOML knows"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-0.1.db");

#[tokio::test]
async fn outbox_list_json_and_state_filter_with_whole_titles() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("herald.db");
    std::fs::copy(FIXTURE, &state).unwrap();
    // Migrated as `herald run` would; then the commands read it.
    let store = herald::store::open(state.clone(), herald::store::Access::Daemon)
        .await
        .unwrap();
    let rows = store.unsent().await.unwrap();
    drop(store);
    let dead = rows
        .iter()
        .filter(|r| r.state == herald::store::RowState::Dead)
        .count();
    assert!(dead > 0 && dead < rows.len(), "the fixture has both kinds");
    let longest = rows
        .iter()
        .map(|r| r.title.clone())
        .max_by_key(String::len)
        .unwrap();
    assert!(
        longest.chars().count() > 24,
        "a title longer than the old column"
    );

    let path = write(dir.path(), &config(&state, ""));
    let out = herald(&["outbox", "list", "--json", "-c", &path], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), rows.len());
    for line in &lines {
        for key in [
            "id",
            "state",
            "sink",
            "attempts",
            "created_at",
            "title",
            "last_error",
        ] {
            assert!(line.get(key).is_some(), "{key} missing: {line}");
        }
    }
    assert!(lines.iter().any(|l| l["title"] == longest.as_str()));

    let out = herald(
        &["outbox", "list", "--json", "--state", "dead", "-c", &path],
        &[],
    );
    let dead_lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead_lines.len(), dead);
    assert!(dead_lines.iter().all(|l| l["state"] == "dead"));

    // The text table shows the whole title too.
    let out = herald(&["outbox", "list", "-c", &path], &[]);
    let table = text(&out.stdout);
    assert!(table.contains(&longest), "{table}");
    assert!(table.ends_with(&format!("{} undelivered ({dead} dead)\n", rows.len())));
    let bad = herald(&["outbox", "list", "--state", "lost", "-c", &path], &[]);
    assert_eq!(bad.status.code(), Some(2));
}

/// The configuration the Debian package installs passes `check` as it is, without warnings
/// but the state's (this machine may have no /var/lib/herald).
#[test]
fn the_packaged_configuration_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/herald.toml");
    let out = herald(&["check", "-c", path], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .all(|l| l.contains("[state] path")),
        "{stderr}"
    );
}
