//! The command line without servers: configuration errors exit 2 with their location;
//! `classify` works without a configuration.

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

const CONFIG: &str = r#"[imap]
host = "127.0.0.1"
tls = "none"
username = "alerts"
password = "${HERALD_TEST_PW}"

[sinks.hook]
type = "webhook"
url = "https://hooks.example.net/T0KEN-SECRET"

[[rules]]
name = "cron"
match = { kind = "cron" }
sinks = ["hook"]
"#;

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("herald.toml");
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

fn assert_config_error(text: &str, env: &[(&str, &str)], location: &str, message: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), text);
    for command in ["check", "run"] {
        let out = herald(&[command, "-c", &path], env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("{path}:{location}")),
            "{command}: {stderr}"
        );
        assert!(stderr.contains(message), "{command}: {stderr}");
        assert!(
            !stderr.contains("T0KEN-SECRET") && !stderr.contains("pw-value"),
            "{stderr}"
        );
    }
}

#[test]
fn check_accepts_a_valid_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), CONFIG);
    let out = herald(&["check", "-c", &path], &[("HERALD_TEST_PW", "pw-value")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK (1 sink, 1 rule)"), "{stdout}");
    assert!(!stdout.contains("T0KEN-SECRET") && !stdout.contains("pw-value"));
}

#[test]
fn unknown_key_exits_2_with_its_location() {
    let text = CONFIG.replace("username", "usrname = \"x\"\nusername");
    assert_config_error(
        &text,
        &[("HERALD_TEST_PW", "pw-value")],
        "4:1: imap.usrname",
        "unknown field `usrname`",
    );
}

#[test]
fn missing_env_var_exits_2_with_its_location() {
    assert_config_error(
        CONFIG,
        &[],
        "5:12: imap.password",
        "environment variable HERALD_TEST_PW is not set",
    );
}

#[test]
fn rule_naming_unknown_sink_exits_2_with_its_location() {
    let text = CONFIG.replace("sinks = [\"hook\"]", "sinks = [\"hook\", \"pager\"]");
    assert_config_error(
        &text,
        &[("HERALD_TEST_PW", "pw-value")],
        "14:18: rules[0].sinks",
        "unknown sink \"pager\"",
    );
}

#[test]
fn missing_config_file_exits_2() {
    let out = herald(&["check", "-c", "/nonexistent/herald.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("/nonexistent/herald.toml: cannot read configuration"));
}

#[test]
fn classify_json_without_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mail = dir.path().join("cron.eml");
    std::fs::write(
        &mail,
        herald_testkit::cron_mail(
            "web01.example.net",
            "root",
            "/usr/local/bin/backup.sh",
            "error: disk full\n",
        ),
    )
    .expect("write");
    let out = herald(&["classify", "--json", mail.to_str().expect("path")], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = line.lines().collect();
    assert_eq!(lines.len(), 1);
    let json: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
    let keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        &keys[..17],
        [
            "file",
            "message_id",
            "kind",
            "host",
            "user",
            "command",
            "failed",
            "exit_status",
            "severity",
            "rule",
            "dropped",
            "sinks",
            "title",
            "summary",
            "dedup_key",
            "facts",
            "subject"
        ]
    );
    assert_eq!(json["kind"], "cron");
    assert_eq!(json["host"], "web01.example.net");
    assert_eq!(json["sinks"], serde_json::json!([]));
    assert_eq!(json["failed"], true);
}

#[test]
fn classify_reads_stdin_and_never_fails_on_garbage() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["classify", "--json", "-"])
        .env_remove("HERALD_CONFIG")
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::io::Write::write_all(
        child.stdin.as_mut().expect("stdin"),
        b"\x00\xff\xfe not mail \r\n\r\n\x1b[31m",
    )
    .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["kind"], "other");
    assert_eq!(json["file"], "-");
}

#[test]
fn version_prints_the_version() {
    let out = herald(&["version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("herald {}", env!("CARGO_PKG_VERSION"))
    );
}

fn webhook_config(dir: &Path, url: &str) -> String {
    write(
        dir,
        &format!(
            "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
             [sinks.hook]\ntype = \"webhook\"\nurl = \"{url}\"\n\
             [sinks.chat]\ntype = \"slack\"\nwebhook_url = \"https://hooks.slack.com/services/T0/B0/S3CRET\"\n\
             [[rules]]\nname = \"all\"\nsinks = [\"hook\", \"chat\"]\n"
        ),
    )
}

async fn herald_async(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("HERALD_CONFIG")
        .output()
        .await
        .expect("running herald")
}

#[tokio::test]
async fn test_sink_delivers_a_sample_alert_and_reports_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver =
        herald_testkit::Receiver::with_script(vec![herald_testkit::Reply::status(503)])
            .await
            .expect("receiver");
    let config = webhook_config(dir.path(), &receiver.url());

    let out = herald_async(&["test-sink", "-c", &config, "hook"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("hook: temporary failure, herald would retry: HTTP 503"),
        "{stderr}"
    );
    receiver
        .next(std::time::Duration::from_secs(5))
        .await
        .expect("first request");

    let out = herald_async(&["test-sink", "-c", &config, "hook"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hook: delivered"
    );
    let got = receiver
        .next(std::time::Duration::from_secs(5))
        .await
        .expect("second request");
    assert_eq!(got.body["title"], "herald test alert for sink hook");

    let out = herald_async(&["test-sink", "-c", &config, "nope"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("sinks.nope: no such sink (defined: chat, hook)"));
}

#[test]
fn classify_render_shows_each_sinks_payload_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = webhook_config(dir.path(), "https://example.net/hook?token=HOOKSECRET");
    let mail = dir.path().join("m.eml");
    std::fs::write(
        &mail,
        herald_testkit::plain_mail("<!channel> disk <b>full</b> & more", "@here everyone\n"),
    )
    .expect("write");
    let out = herald(
        &[
            "classify",
            "--json",
            "--render",
            "-c",
            &config,
            mail.to_str().expect("path"),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("S3CRET") && !stdout.contains("HOOKSECRET"),
        "{stdout}"
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(
        json["payloads"]["hook"]["title"],
        "<!channel> disk <b>full</b> & more"
    );
    let slack = json["payloads"]["chat"].to_string();
    assert!(
        slack.contains("&lt;!channel&gt;") && slack.contains("&amp;"),
        "{slack}"
    );
    assert!(!slack.contains("<!channel>"), "{slack}");
}
