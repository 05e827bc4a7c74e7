//! `herald silence add|list|expire` on the real binary, beside a store held open the way a
//! running daemon holds it: what the commands write, the daemon's store reads; bad matchers
//! and times are refused with exit status 2 before anything is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use herald::store::{self, Access, Store};
use serde_json::Value;

/// A configuration whose state is `dir/herald.db`.
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("herald.toml");
    let text = format!(
        "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
         [state]\npath = {:?}\n\
         [sinks.hook]\ntype = \"webhook\"\nurl = \"https://hooks.example.net/x\"\n",
        dir.join("herald.db").display().to_string()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// `herald silence -c CONFIG ARGS...`, local time UTC so that `--until` is predictable.
fn silence(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("silence")
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("HERALD_CONFIG")
        .env("TZ", "UTC")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running herald")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    stdout(out)
}

/// `silence list --json [--all]`, parsed.
fn listed(config: &Path, all: bool) -> Vec<Value> {
    let args: &[&str] = if all {
        &["list", "--json", "--all"]
    } else {
        &["list", "--json"]
    };
    succeeded(&silence(config, args))
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect()
}

/// The state a daemon made and still holds open.
async fn daemon(dir: &Path) -> Arc<dyn Store> {
    store::open(dir.join("herald.db"), Access::Daemon)
        .await
        .expect("daemon store")
}

#[tokio::test]
async fn add_list_expire_beside_a_running_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let daemon = daemon(dir.path()).await;

    let added = succeeded(&silence(
        &config,
        &[
            "add",
            "--for",
            "30m",
            "--comment",
            "deploy of web",
            "host=web*",
            "kind=cron",
        ],
    ));
    assert!(
        added.starts_with("1: silenced until ") && added.contains("(in 30m)"),
        "{added}"
    );
    let added = succeeded(&silence(
        &config,
        &[
            "add",
            "--until",
            "2099-12-24T08:00",
            "subject~(?i)disk full",
        ],
    ));
    assert!(
        added.starts_with("2: silenced until 2099-12-24 08:00"),
        "{added}"
    );

    let list = listed(&config, false);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["id"], 2, "newest first");
    assert_eq!(list[0]["ends_at"], "2099-12-24T08:00:00Z");
    assert_eq!(
        list[0]["matchers"],
        serde_json::json!(["subject~(?i)disk full"])
    );
    assert_eq!(list[0]["comment"], "");
    let first = &list[1];
    assert_eq!(first["id"], 1);
    assert_eq!(
        first["matchers"],
        serde_json::json!(["host=web*", "kind=cron"])
    );
    assert_eq!(first["comment"], "deploy of web");
    assert_eq!(first["suppressed"], 0);
    assert_eq!(first["active"], true);
    let keys: Vec<&str> = first
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "matchers",
            "starts_at",
            "ends_at",
            "comment",
            "suppressed",
            "active"
        ]
    );
    let time = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a string"))
            .expect("RFC 3339")
            .timestamp()
    };
    assert_eq!(
        time(&first["ends_at"]) - time(&first["starts_at"]),
        30 * 60,
        "--for counts from now"
    );

    // The daemon reads what the command wrote, with no restart.
    let active = daemon
        .silences(Some(store::now_ms()))
        .await
        .expect("silences");
    assert_eq!(active.iter().map(|s| s.id).collect::<Vec<_>>(), [2, 1]);

    let text = succeeded(&silence(&config, &["list"]));
    assert!(text.contains("host=web* kind=cron"), "{text}");
    assert!(text.contains("deploy of web"), "{text}");
    assert!(text.contains("\"subject~(?i)disk full\""), "{text}");
    assert!(text.trim_end().ends_with("2 active"), "{text}");

    let expired = succeeded(&silence(&config, &["expire", "1"]));
    assert!(expired.starts_with("1: expired"), "{expired}");
    let list = listed(&config, false);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], 2);
    let all = listed(&config, true);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["id"], 1);
    assert_eq!(all[1]["active"], false);
    assert!(daemon
        .silences(Some(store::now_ms()))
        .await
        .expect("silences")
        .iter()
        .all(|s| s.id != 1));
    let text = succeeded(&silence(&config, &["list", "--all"]));
    assert!(text.contains(" ended "), "{text}");
    assert!(text.trim_end().ends_with("1 active, 1 ended"), "{text}");

    for id in ["1", "99"] {
        let out = silence(&config, &["expire", id]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("no active silence with id {id}")),
            "{}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn bad_matchers_and_times_exit_2_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let _daemon = daemon(dir.path()).await;

    let cases: &[(&[&str], &str)] = &[
        (
            &["add", "hostname=web*"],
            "herald: silence add: \"hostname=web*\": unknown key `hostname` (keys: kind, host,",
        ),
        (
            &["add", "web01"],
            "herald: silence add: \"web01\": no `=` or `~`: write key=glob or key~regex",
        ),
        (
            &["add", "kind=cron", "subject~(disk"],
            "herald: silence add: \"subject~(disk\": invalid regex",
        ),
        (
            &["add", "to=root@*"],
            "the alert keeps neither its recipients nor its headers",
        ),
        (
            &["add", "header.X-Mailer~^smartd"],
            "the alert keeps neither its recipients nor its headers",
        ),
        (
            &["add", "--until", "2001-01-01T00:00", "host=web*"],
            "herald: silence add: the silence would end at 2001-01-01 00:00 +00:00, which is not in the future",
        ),
        (
            &["add", "--until", "next tuesday", "host=web*"],
            "herald: silence add: --until: \"next tuesday\" is not a time",
        ),
        (&["add", "--for", "2x", "host=web*"], "--for"),
        (
            &["add", "--for", "1h", "--until", "2099-01-01T00:00", "host=web*"],
            "cannot be used with",
        ),
        (&["add"], "<MATCHER>"),
    ];
    for (args, message) in cases {
        let out = silence(&config, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    assert!(listed(&config, true).is_empty(), "nothing was stored");
}

#[tokio::test]
async fn until_takes_rfc3339_with_any_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let _daemon = daemon(dir.path()).await;
    succeeded(&silence(
        &config,
        &["add", "--until", "2099-06-01T12:00:00+02:00", "user=root"],
    ));
    let list = listed(&config, false);
    assert_eq!(list[0]["ends_at"], "2099-06-01T10:00:00Z", "{list:?}");
}

#[test]
fn without_a_state_the_commands_say_so_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    for args in [&["list"][..], &["add", "host=web*"], &["expire", "1"]] {
        let out = silence(&config, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no state database at"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(
        !dir.path().join("herald.db").exists(),
        "nothing was created"
    );
}
