//! The rule engine through the binary: `herald classify --json --explain` shows what every rule
//! made of a message, and an invalid glob, regex or template stops `check` with its location.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("HERALD_CONFIG")
        .env("HERALD_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running herald")
}

/// The configuration's first lines; rules follow on line [`RULES_LINE`].
const HEAD: &str = r#"[imap]
host = "127.0.0.1"
tls = "none"
username = "alerts"
password = "pw"

[defaults]
sinks = ["chat"]

[sinks.pager]
type = "console"

[sinks.chat]
type = "console"

[sinks.archive]
type = "console"

"#;

/// The line number of the first line after [`HEAD`].
const RULES_LINE: usize = 19;

const RULES: &str = r#"[[rules]]
name = "archive"
sinks = ["archive"]
continue = true

[[rules]]
name = "sudo"
match = { kind = "sudo" }
sinks = ["chat"]

[[rules]]
name = "logwatch-noise"
match = { subject = "(?i)^logwatch for" }
drop = true

[[rules]]
name = "db-hosts"
match = { kind = "cron", host = "DB*.example.net" }
sinks = ["pager"]

[[rules]]
name = "backup-failures"
match = { kind = ["cron", "anacron"], failed = true, user = "root", command = "*/backup.sh", to = "root@*", from = "*@web01.example.net", "header.X-Cron-Env" = "^<SHELL=", body = "cannot stat", severity = ">= warning" }
severity = "critical"
sinks = ["pager", "chat"]
title = "backup failed on {{ host }} ({{ to | join(', ') }})"
summary = "{{ summary }} [{{ severity }}]"
dedup_key = "backup:{{ host }}"

[[rules]]
name = "recovered"
match = { subject = "(?i)recovered" }
resolve = true
sinks = ["pager"]

[[rules]]
name = "never"
sinks = ["chat"]
"#;

struct Fixture {
    dir: tempfile::TempDir,
    config: String,
}

impl Fixture {
    fn new(rules: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("herald.toml");
        std::fs::write(&config, format!("{HEAD}{rules}")).expect("write config");
        Fixture {
            config: config.display().to_string(),
            dir,
        }
    }

    fn mail(&self, name: &str, raw: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, raw).expect("write mail");
        path
    }

    /// `classify --json --explain` on one file: its JSON object.
    fn classify(&self, file: &Path) -> Value {
        let file = file.display().to_string();
        let out = herald(&["classify", "--json", "--explain", "-c", &self.config, &file]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{stdout}");
        serde_json::from_str(lines.first().expect("one line")).expect("JSON")
    }
}

fn backup_mail() -> Vec<u8> {
    herald_testkit::cron_mail(
        "web01.example.net",
        "root",
        "/usr/local/bin/backup.sh",
        "backup.sh: error: cannot stat /srv/data: No such file or directory\n",
    )
}

#[test]
fn every_match_key_and_action_through_the_binary() {
    let f = Fixture::new(RULES);
    let v = f.classify(&f.mail("backup.eml", &backup_mail()));
    assert_eq!(v["kind"], "cron");
    assert_eq!(v["rule"], "backup-failures");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["dropped"], false);
    assert_eq!(v["sinks"], json!(["archive", "pager", "chat"]));
    assert_eq!(
        v["title"],
        "backup failed on web01.example.net (root@web01.example.net)"
    );
    assert!(
        v["summary"]
            .as_str()
            .is_some_and(|s| s.ends_with("[critical]") && s.contains("cannot stat")),
        "{v}"
    );
    assert_eq!(v["dedup_key"], "backup:web01.example.net");
    assert_eq!(v.get("resolve"), None, "absent when false");
    assert_eq!(
        v["explain"],
        json!([
            {"rule": "archive", "matched": true, "failed": null, "reached": true},
            {"rule": "sudo", "matched": false, "failed": "kind: expected sudo, got cron", "reached": true},
            {"rule": "logwatch-noise", "matched": false,
             "failed": "subject: expected a match for (?i)^logwatch for, got \"Cron <root@web01> /usr/local/bin/backup.sh\"",
             "reached": true},
            {"rule": "db-hosts", "matched": false,
             "failed": "host: expected DB*.example.net, got \"web01.example.net\"", "reached": true},
            {"rule": "backup-failures", "matched": true, "failed": null, "reached": true},
            {"rule": "recovered", "matched": false,
             "failed": "not reached: rule \"backup-failures\" decided", "reached": false},
            {"rule": "never", "matched": false,
             "failed": "not reached: rule \"backup-failures\" decided", "reached": false},
        ])
    );
}

#[test]
fn host_glob_is_case_insensitive() {
    let f = Fixture::new(RULES);
    let mail = herald_testkit::cron_mail("db02.example.net", "root", "/bin/true", "ok\n");
    let v = f.classify(&f.mail("db.eml", &mail));
    assert_eq!(v["rule"], "db-hosts");
    assert_eq!(v["sinks"], json!(["archive", "pager"]));
}

#[test]
fn a_failing_condition_is_named() {
    // The same job, but succeeding: the parser calls it info, so backup-failures fails on
    // `severity` (conditions are tested, and reported, cheapest first: kind, severity, failed,
    // globs, headers, subject, body); the last rule decides.
    let f = Fixture::new(RULES);
    let mail = herald_testkit::cron_mail(
        "web01.example.net",
        "root",
        "/usr/local/bin/backup.sh",
        "all good\n",
    );
    let v = f.classify(&f.mail("ok.eml", &mail));
    assert_eq!(v["rule"], "never");
    assert_eq!(v["sinks"], json!(["archive", "chat"]));
    let explain = v["explain"].as_array().expect("explain");
    let backup = explain
        .iter()
        .find(|e| e["rule"] == "backup-failures")
        .expect("backup-failures");
    assert_eq!(backup["failed"], "severity: expected >= warning, got info");
}

#[test]
fn drop_and_resolve() {
    let f = Fixture::new(RULES);
    let v = f.classify(&f.mail(
        "lw.eml",
        &herald_testkit::plain_mail("Logwatch for web01 (Linux)", "lots\n"),
    ));
    assert_eq!(
        (&v["kind"], &v["rule"], &v["dropped"], &v["sinks"]),
        (
            &json!("logwatch"),
            &json!("logwatch-noise"),
            &json!(true),
            &json!([])
        )
    );
    let v = f.classify(&f.mail(
        "rec.eml",
        &herald_testkit::plain_mail("web01 RECOVERED", "fine again\n"),
    ));
    assert_eq!(v["rule"], "recovered");
    assert_eq!(v["resolve"], true);
    assert_eq!(v["sinks"], json!(["archive", "pager"]));
}

#[test]
fn unrouted_alerts_go_to_defaults() {
    let f = Fixture::new(
        "[[rules]]\nname = \"sev\"\nmatch = { kind = \"other\" }\nseverity = \"warning\"\n",
    );
    let v = f.classify(&f.mail("x.eml", &herald_testkit::plain_mail("hello", "hi\n")));
    assert_eq!(
        (&v["rule"], &v["severity"], &v["sinks"]),
        (&json!("sev"), &json!("warning"), &json!(["chat"]))
    );
}

#[test]
fn explain_text_prints_one_line_per_rule() {
    let f = Fixture::new(RULES);
    let mail = f.mail("backup.eml", &backup_mail());
    let out = herald(&[
        "classify",
        "--explain",
        "-c",
        &f.config,
        &mail.display().to_string(),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1 + 7 + 1, "{stdout}");
    assert!(lines[1..8].iter().all(|l| l.starts_with("    rule ")));
    // The last line: the alert's group, and the lifecycle keys of the rule that decided.
    assert!(
        lines[8].starts_with("    group backup:web01") && lines[8].contains("repeat_interval 4h"),
        "{stdout}"
    );
    assert!(stdout.contains("    rule sudo: no match: kind: expected sudo, got cron\n"));
    assert!(stdout.contains("    rule backup-failures: matched\n"));
    assert!(stdout.contains("    rule never: not reached\n"));
    let plain = herald(&["classify", "-c", &f.config, &mail.display().to_string()]);
    assert_eq!(String::from_utf8_lossy(&plain.stdout).lines().count(), 1);
}

#[test]
fn without_explain_json_has_no_explain() {
    let f = Fixture::new(RULES);
    let mail = f.mail("backup.eml", &backup_mail());
    let out = herald(&[
        "classify",
        "--json",
        "-c",
        &f.config,
        &mail.display().to_string(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v.get("explain"), None);
    assert_eq!(v["rule"], "backup-failures");
}

/// `check` refuses `rules` (after [`HEAD`]) with `path:LINE:COL: KEY` and `message`, where
/// LINE counts from the first rules line (0).
fn assert_rejected(rules: &str, line: usize, column: usize, key: &str, message: &str) {
    let f = Fixture::new(rules);
    let out = herald(&["check", "-c", &f.config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let location = format!("{}:{}:{column}: {key}: ", f.config, RULES_LINE + line);
    assert!(
        stderr.contains(&location),
        "expected {location:?} in {stderr}"
    );
    assert!(stderr.contains(message), "expected {message:?} in {stderr}");
}

#[test]
fn invalid_rules_are_located() {
    let rule = |m: &str| format!("[[rules]]\nname = \"r\"\nmatch = {m}\nsinks = [\"chat\"]\n");
    assert_rejected(
        &rule("{ subject = \"(unclosed\" }"),
        2,
        21,
        "rules[0].match.subject",
        "invalid regex",
    );
    assert_rejected(
        &rule("{ kind = \"cron\", \"header.X-Cron-Env\" = \"*SHELL\" }"),
        2,
        48,
        "rules[0].match.header.X-Cron-Env",
        "invalid regex",
    );
    assert_rejected(
        &rule("{ from = [\"*@a\", \"[b\"] }"),
        2,
        26,
        "rules[0].match.from[1]",
        "invalid glob \"[b\"",
    );
    assert_rejected(
        &rule("{ kind = \"crn\" }"),
        2,
        18,
        "rules[0].match.kind",
        "unknown kind \"crn\"",
    );
    assert_rejected(
        &rule("{ severity = \"=> warning\" }"),
        2,
        22,
        "rules[0].match.severity",
        "unknown severity",
    );
    assert_rejected(
        "[[rules]]\nname = \"ok\"\n\n[[rules]]\nname = \"t\"\ntitle = \"{{ host \"\n",
        5,
        9,
        "rules[1].title",
        "template does not compile",
    );
    assert_rejected(
        "[[rules]]\nname = \"t\"\nsummary = \"{{ sumary }}\"\n",
        2,
        11,
        "rules[0].summary",
        "unknown variable `sumary`",
    );
    assert_rejected(
        "[[rules]]\nname = \"t\"\nsevertiy = \"info\"\n",
        2,
        1,
        "rules[0].severtiy",
        "unknown field `severtiy`",
    );
}

#[test]
fn invalid_lifecycle_keys_are_located() {
    assert_rejected(
        "[[rules]]\nname = \"r\"\ngroup_by = [\"kind\", \"hots\"]\n",
        2,
        21,
        "rules[0].group_by",
        "unknown field \"hots\": group by any of kind, host",
    );
    assert_rejected(
        "[[rules]]\nname = \"r\"\nrepeat_interval = \"4 hours-ish\"\n",
        2,
        19,
        "rules[0].repeat_interval",
        "invalid duration",
    );
}

#[test]
fn explain_shows_the_group_key_of_the_deciding_rule() {
    let f = Fixture::new(
        "[[rules]]\nname = \"storms\"\nmatch = { kind = \"cron\" }\nsinks = [\"chat\"]\n\
         group_by = [\"kind\", \"command\"]\ngroup_wait = \"30s\"\n",
    );
    let v = f.classify(&f.mail("backup.eml", &backup_mail()));
    assert_eq!(v["group_key"], "cron:/usr/local/bin/backup.sh");
    let lifecycle = v["lifecycle"].as_str().expect("lifecycle");
    assert!(
        lifecycle.contains("group_by kind, command; group_wait 30s; group_interval 1m"),
        "{lifecycle}"
    );
}

#[test]
fn explain_names_the_expectations_a_mail_feeds_and_the_problem_it_resolves() {
    let f = Fixture::new(
        "[[rules]]\nname = \"drop-ok\"\nmatch = { failed = false }\ndrop = true\n\
         [[expect]]\nname = \"db02-ok\"\nmatch = { kind = \"cron\", host = \"db02*\" }\nevery = \"1d\"\n\
         [[expect]]\nname = \"elsewhere\"\nmatch = { host = \"web*\" }\nevery = \"1d\"\n",
    );
    let ok = herald_testkit::cron_mail("db02.example.net", "root", "/bin/true", "ok\n");
    let v = f.classify(&f.mail("ok.eml", &ok));
    assert_eq!(
        v["expects"],
        json!(["db02-ok"]),
        "a dropped mail still feeds it"
    );
    assert!(v.get("resolves").is_none(), "dropped: it resolves nothing");
    let failure = f.classify(&f.mail("backup.eml", &backup_mail()));
    assert_eq!(failure["expects"], json!(["elsewhere"]));
}

#[test]
fn the_example_configuration_checks() {
    let text = include_str!("../config.example.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["check", "-c", &path.display().to_string()])
        .env("IMAP_PASSWORD", "x")
        .env("HOOK_URL", "https://example.net/hook")
        .env(
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/x",
        )
        .env(
            "DISCORD_WEBHOOK_URL",
            "https://discord.com/api/webhooks/1/x",
        )
        .env("PAGERDUTY_ROUTING_KEY", "0123456789abcdef0123456789abcdef")
        .env("TWILIO_AUTH_TOKEN", "x")
        .output()
        .expect("running herald");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
