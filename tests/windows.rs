//! Time windows end to end: `[windows.NAME]` and the `during` / `not_during` conditions route
//! by the instant given (fixed here, never the real clock), across daylight saving changes;
//! `check` locates a bad window; `classify --explain` shows the clock a window condition saw.

use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, TimeZone, Utc};
use herald::config::Config;
use herald::route::Router;
use serde_json::Value;

const HEAD: &str = r#"[imap]
host = "127.0.0.1"
tls = "none"
username = "alerts"
password = "pw"

[defaults]
sinks = ["archive"]

[sinks.chat]
type = "console"

[sinks.archive]
type = "console"

"#;

/// The line number of the first line after [`HEAD`].
const NEXT_LINE: usize = 16;

/// The spec's example: warnings at night go to chat.
const NIGHT: &str = r#"[windows.night]
from = "01:00"
to = "03:00"
timezone = "Europe/Berlin"

[[rules]]
name = "night-warnings-to-chat"
match = { severity = "warning", during = "night" }
sinks = ["chat"]
"#;

fn router(windows_and_rules: &str) -> Router {
    let config = Config::parse(
        Path::new("herald.toml"),
        &format!("{HEAD}{windows_and_rules}"),
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Router::new(config.rules, config.default_sinks)
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .unwrap_or_else(|| panic!("{y}-{mo}-{d} {h}:{mi}:{s}"))
}

/// A failed cron job: a warning.
fn warning_mail() -> Vec<u8> {
    herald_testkit::cron_mail("web01.example.net", "root", "/bin/false", "it failed\n")
}

#[test]
fn a_window_over_the_spring_forward_hour_routes_by_the_wall_clock() {
    let router = router(NIGHT);
    let mail = warning_mail();
    let sinks = |now| router.decide_at(&mail, false, None, now).sinks;
    // Berlin, 2026-03-29: 02:00 CET (01:00 UTC) becomes 03:00 CEST.
    assert_eq!(
        sinks(utc(2026, 3, 28, 23, 59, 59)),
        ["archive"],
        "00:59:59 CET"
    );
    assert_eq!(sinks(utc(2026, 3, 29, 0, 0, 0)), ["chat"], "01:00 CET");
    assert_eq!(sinks(utc(2026, 3, 29, 0, 59, 59)), ["chat"], "01:59:59 CET");
    assert_eq!(sinks(utc(2026, 3, 29, 1, 0, 0)), ["archive"], "03:00 CEST");
    // The day before, the same window is two hours long.
    assert_eq!(sinks(utc(2026, 3, 28, 1, 30, 0)), ["chat"], "02:30 CET");
}

#[test]
fn a_window_over_the_fall_back_hour_holds_through_both_passes() {
    let router = router(NIGHT);
    let mail = warning_mail();
    let sinks = |now| router.decide_at(&mail, false, None, now).sinks;
    // Berlin, 2026-10-25: 03:00 CEST (01:00 UTC) becomes 02:00 CET.
    assert_eq!(
        sinks(utc(2026, 10, 24, 22, 59, 59)),
        ["archive"],
        "00:59:59 CEST"
    );
    assert_eq!(sinks(utc(2026, 10, 24, 23, 0, 0)), ["chat"], "01:00 CEST");
    assert_eq!(
        sinks(utc(2026, 10, 25, 0, 59, 59)),
        ["chat"],
        "02:59:59 CEST"
    );
    assert_eq!(
        sinks(utc(2026, 10, 25, 1, 0, 0)),
        ["chat"],
        "02:00 CET again"
    );
    assert_eq!(
        sinks(utc(2026, 10, 25, 1, 59, 59)),
        ["chat"],
        "02:59:59 CET"
    );
    assert_eq!(sinks(utc(2026, 10, 25, 2, 0, 0)), ["archive"], "03:00 CET");
}

#[test]
fn new_york_nights_and_weekdays() {
    let router = router(
        r#"[windows.night]
from = "22:00"
to = "06:00"
days = ["mon", "tue", "wed", "thu", "fri"]
timezone = "America/New_York"

[windows.weekend]
days = ["sat", "sun"]
timezone = "America/New_York"

[[rules]]
name = "off-hours"
match = { during = ["night", "weekend"] }
sinks = ["chat"]
"#,
    );
    let mail = warning_mail();
    let rule = |now| router.decide_at(&mail, false, None, now).alert.rule;
    let off = Some("off-hours".to_owned());
    // 2026-03-08, Sunday: New York springs forward at 07:00 UTC (02:00 EST -> 03:00 EDT).
    assert_eq!(rule(utc(2026, 3, 8, 6, 59, 59)), off, "Sunday 01:59:59 EST");
    assert_eq!(rule(utc(2026, 3, 8, 7, 0, 0)), off, "Sunday 03:00 EDT");
    // Friday 22:00 EST to Saturday: Friday's night, then the weekend.
    assert_eq!(rule(utc(2026, 3, 6, 2, 59, 0)), None, "Thursday 21:59 EST");
    assert_eq!(rule(utc(2026, 3, 6, 15, 0, 0)), None, "Friday 10:00 EST");
    assert_eq!(rule(utc(2026, 3, 7, 3, 0, 0)), off, "Friday 22:00 EST");
    // Monday 05:59 EDT is Sunday night, not listed, but Monday's own night starts at 22:00.
    assert_eq!(rule(utc(2026, 3, 9, 9, 59, 0)), None, "Monday 05:59 EDT");
    assert_eq!(rule(utc(2026, 3, 10, 2, 0, 0)), off, "Monday 22:00 EDT");
    assert_eq!(rule(utc(2026, 3, 10, 9, 59, 0)), off, "Tuesday 05:59 EDT");
}

fn herald(args: &[&str], tz: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("HERALD_CONFIG")
        .env("HERALD_LOG", "warn")
        .env("TZ", tz)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running herald")
}

fn write_config(dir: &Path, windows_and_rules: &str) -> String {
    let path = dir.join("herald.toml");
    std::fs::write(&path, format!("{HEAD}{windows_and_rules}")).expect("write config");
    path.display().to_string()
}

/// `check` refuses `windows_and_rules` (after [`HEAD`]) with `path:LINE:COL: KEY: ...message`,
/// LINE counted from the first line after the head (0).
fn assert_rejected(text: &str, line: usize, column: usize, key: &str, message: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), text);
    let out = herald(&["check", "-c", &config], "UTC");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let location = format!("{config}:{}:{column}: {key}: ", NEXT_LINE + line);
    assert!(
        stderr.contains(&location),
        "expected {location:?} in {stderr}"
    );
    assert!(stderr.contains(message), "expected {message:?} in {stderr}");
}

#[test]
fn bad_windows_are_located() {
    assert_rejected(
        "[windows.night]\nfrom = \"22:00\"\ntimezone = \"Europe/Berln\"\n",
        2,
        12,
        "windows.night.timezone",
        "unknown time zone \"Europe/Berln\"",
    );
    assert_rejected(
        "[windows.night]\nfrom = \"22.00\"\n",
        1,
        8,
        "windows.night.from",
        "invalid time \"22.00\"",
    );
    assert_rejected(
        "[windows.\"late shift\"]\ndays = [\"mon\", \"thurs\"]\n",
        1,
        16,
        "windows.\"late shift\".days[1]",
        "unknown day \"thurs\"",
    );
    assert_rejected(
        "[windows.night]\nfrm = \"22:00\"\n",
        1,
        1,
        "windows.night.frm",
        "unknown field `frm`",
    );
    assert_rejected(
        "[windows.night]\n\n[[rules]]\nname = \"r\"\nmatch = { not_during = \"nigth\" }\n",
        4,
        24,
        "rules[0].match.not_during",
        "unknown window \"nigth\" (defined: night)",
    );
}

/// `classify --json --explain` of a warning mail at the real time, in zone `tz`: only what
/// does not depend on the time is checked.
fn explain(tz: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "[windows.always]\n\n[[rules]]\nname = \"never\"\nmatch = { not_during = \"always\" }\nsinks = [\"chat\"]\n\n\
         [[rules]]\nname = \"always\"\nmatch = { during = \"always\" }\nsinks = [\"chat\"]\n",
    );
    let mail = dir.path().join("m.eml");
    std::fs::write(&mail, warning_mail()).expect("write mail");
    let mail = mail.display().to_string();
    let out = herald(
        &["classify", "--json", "--explain", "-c", &config, &mail],
        tz,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["rule"], "always", "{v}");
    let text = herald(&["classify", "--explain", "-c", &config, &mail], tz);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("    rule always: matched; during always: yes (now "),
        "{text}"
    );
    v["explain"].as_array().expect("explain").clone()
}

#[test]
fn explain_shows_the_local_clock_and_honours_tz() {
    // A POSIX zone without daylight saving time (no tz database needed): its offset is known
    // whenever the test runs.
    let trace = explain("IST-5:30");
    let failed = trace[0]["failed"].as_str().expect("failed");
    assert!(
        failed.starts_with("not_during always: no (now "),
        "{failed}"
    );
    assert!(failed.ends_with(" local UTC+05:30)"), "{failed}");
    let held = trace[1]["windows"][0].as_str().expect("a held window");
    assert!(held.starts_with("during always: yes (now "), "{held}");
    assert!(held.ends_with(" local UTC+05:30)"), "{held}");
    assert_eq!(
        trace[0].get("windows"),
        None,
        "nothing held before the failure"
    );
    let utc = explain("UTC");
    let held = utc[1]["windows"][0].as_str().expect("a held window");
    assert!(held.ends_with(" local UTC+00:00)"), "{held}");
}
