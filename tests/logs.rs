//! herald's log lines, end to end: with `[log] format = "json"` every stderr line is one JSON
//! object; with `HERALD_LOG_FORMAT=text` over it (the environment wins) every line is strict
//! logfmt, values with spaces, quotes and backslashes quoted and escaped so that they read
//! back exactly. Either way "Serving /metrics" is said once and no secret (the IMAP password,
//! a token in the webhook URL) appears, at any level.

mod common;

use std::path::Path;

use common::{spawn_with, write_config, Imap, DEADLINE};
use herald_testkit::{free_port, plain_mail, Dovecot, Receiver};
use serde_json::Value;

/// A subject that breaks naive key=value output: spaces, quotes, `=`, a backslash.
const SUBJECT: &str = r#"disk "sda" = 99% full \ check"#;
const HOOK_TOKEN: &str = "s3cr3t-hook-token";

/// Runs herald through a start, one alert, a refused reload and a stop; returns its stderr.
async fn exercise(config_format: &str, env: &[(&str, &str)]) -> String {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let mut receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &receiver);
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(
            "[defaults]",
            &format!(
                "[server]\nlisten = \"127.0.0.1:{}\"\n\n[log]\nformat = \"{config_format}\"\n\n[defaults]",
                free_port()
            ),
        )
        .replace("/hook\"", &format!("/hook?token={HOOK_TOKEN}\""));
    std::fs::write(&config, text).expect("config");
    let mut envs = vec![("HERALD_LOG", "trace")];
    envs.extend_from_slice(env);
    let mut herald = spawn_with(&config, &envs);
    herald
        .wait_for_stderr("Selected mailbox", DEADLINE)
        .await
        .expect("start");
    dovecot
        .append("INBOX", &plain_mail(SUBJECT, "x\n"))
        .await
        .expect("append");
    let got = receiver.next(DEADLINE).await.expect("alert");
    assert_eq!(got.body["title"], SUBJECT);
    herald
        .wait_for_stderr("Alert delivered.", DEADLINE)
        .await
        .expect("delivered");
    append(
        &config,
        "\n[[rules]]\nname = \"broken\"\nsinks = [\"pager\"]\n",
    );
    herald.sighup().expect("sighup");
    herald
        .wait_for_stderr("keeping the running one", DEADLINE)
        .await
        .expect("refused reload");
    herald.sigterm().expect("sigterm");
    herald.wait_exit(DEADLINE).await.expect("exit");
    let stderr = herald.stderr();
    for secret in [herald_testkit::PASSWORD, HOOK_TOKEN] {
        assert!(!stderr.contains(secret), "{secret} in the log:\n{stderr}");
    }
    assert_eq!(
        stderr.matches("Serving /metrics").count(),
        1,
        "\"Serving /metrics\" not said once:\n{stderr}"
    );
    stderr
}

fn append(path: &Path, text: &str) {
    let mut config = std::fs::read_to_string(path).expect("config");
    config.push_str(text);
    std::fs::write(path, config).expect("config");
}

/// Splits a logfmt line into its pairs, strictly: `key=value` separated by single spaces,
/// keys of letters, digits, `_`, `.` and `-`, values bare (no space, `"`, `=`, `\` or control
/// character, not empty) or quoted with `\"`, `\\`, `\n`, `\r`, `\t`, `\uXXXX` escapes.
fn logfmt(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if !(c.is_ascii_alphanumeric() || "_.-".contains(c)) {
                return Err(format!("bad key character {c:?}"));
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() || chars.next() != Some('=') {
            return Err(format!("no key=value at {key:?}"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quote".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('"') => value.push('"'),
                        Some('\\') => value.push('\\'),
                        Some('n') => value.push('\n'),
                        Some('r') => value.push('\r'),
                        Some('t') => value.push('\t'),
                        Some('u') => {
                            let hex: String = chars.by_ref().take(4).collect();
                            let code = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                            value.push(char::from_u32(code).ok_or("bad \\u")?);
                        }
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some(c) if c.is_control() => return Err("raw control character".into()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                if c == '"' || c == '=' || c == '\\' || c.is_control() {
                    return Err(format!("{c:?} in a bare value"));
                }
                value.push(c);
                chars.next();
            }
            if value.is_empty() {
                return Err(format!("empty bare value for {key}"));
            }
        }
        pairs.push((key, value));
        match chars.next() {
            None => return Ok(pairs),
            Some(' ') if chars.peek().is_some_and(|c| *c != ' ') => {}
            other => return Err(format!("{other:?} after a value")),
        }
    }
}

#[test]
fn the_logfmt_parser_is_strict() {
    assert!(logfmt(r#"a=1 b="x \"y\"""#).is_ok());
    for bad in [
        "a=1  b=2",
        "a=x y",
        "a=",
        r#"a="open"#,
        "a=1 ",
        "2026-12-02T15:00:00Z  INFO herald started. version=0.1.0",
        r#"error=say "hi""#,
    ] {
        assert!(logfmt(bad).is_err(), "{bad:?} accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_text_over_config_json_is_strict_logfmt() {
    let stderr = exercise("json", &[("HERALD_LOG_FORMAT", "text")]).await;
    let mut titles = Vec::new();
    for line in stderr.lines() {
        let pairs = logfmt(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let keys: Vec<&str> = pairs.iter().take(3).map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["time", "level", "msg"], "{line}");
        titles.extend(
            pairs
                .into_iter()
                .filter(|(k, _)| k == "title")
                .map(|(_, v)| v),
        );
    }
    assert!(titles.iter().any(|t| t == SUBJECT), "{titles:?}\n{stderr}");
    let refusal = stderr
        .lines()
        .find(|l| l.contains("keeping the running one"))
        .expect("refusal");
    assert!(refusal.contains("level=ERROR"), "{refusal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_json_is_one_object_per_line() {
    let stderr = exercise("json", &[]).await;
    let mut titles = Vec::new();
    for line in stderr.lines() {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        let keys: Vec<&str> = object.keys().take(3).map(String::as_str).collect();
        assert_eq!(keys, ["time", "level", "msg"], "{line}");
        if let Some(title) = object.get("title").and_then(Value::as_str) {
            titles.push(title.to_owned());
        }
    }
    assert!(titles.iter().any(|t| t == SUBJECT), "{titles:?}\n{stderr}");
    let refusal: Value = serde_json::from_str(
        stderr
            .lines()
            .find(|l| l.contains("keeping the running one"))
            .expect("refusal"),
    )
    .expect("json");
    assert_eq!(refusal["level"], "ERROR");
    assert!(
        refusal["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown sink \"pager\"")),
        "{refusal}"
    );
}
