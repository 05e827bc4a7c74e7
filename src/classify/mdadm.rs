//! mdadm --monitor mail (Linux software RAID).
//!
//! Format, from mdadm's Monitor.c `alert()`/`send_event_email`: mail is sent only for events
//! starting `Fail`, `Test`, `Spares` or `Degrade` (`Fail`, `FailSpare`, `TestMessage`,
//! `SparesMissing`, `DegradedArray`):
//!
//! ```text
//! From: mdadm monitoring <root>
//! Subject: EVENT event on ARRAY:HOST
//!
//! This is an automatically generated mail message from mdadm
//! running on HOST
//!
//! A EVENT event had been detected on md device ARRAY.
//!
//! It could be related to component device DEVICE.
//!
//! Faithfully yours, etc.
//!
//! P.S. The /proc/mdstat file currently contains the following:
//! ```
//!
//! (ARRAY may itself contain a colon, e.g. `/dev/md/web01:0`, so HOST is after the last one.)
//! Default severity: critical for `Fail`, `FailSpare`, `DegradedArray`; warning for
//! `SparesMissing` and unknown events; info for `TestMessage`.

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::{is_host_name, Finding, Message};

static SUBJECT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\w+) event on (\S+)$").unwrap_or_else(|_| unreachable!()));

static COMPONENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"related to component device (\S+?)\.?\s*$").unwrap_or_else(|_| unreachable!())
});

/// Recognises an mdadm mail.
pub(super) fn recognise(message: &Message) -> Option<Finding> {
    let captures = SUBJECT.captures(message.subject.trim())?;
    let event = captures.get(1)?.as_str();
    let (array, subject_host) = captures.get(2)?.as_str().rsplit_once(':')?;
    let body = &message.body;
    let from_mdadm = body.contains("generated mail message from mdadm")
        || message.header("From").is_some_and(|f| f.contains("mdadm"));
    let known = matches!(
        event,
        "Fail" | "FailSpare" | "DegradedArray" | "SparesMissing" | "TestMessage"
    );
    if !from_mdadm && !known {
        return None;
    }
    let running_on = body
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("running on "))
        .map(str::trim)
        .filter(|h| is_host_name(h));
    let host = running_on.unwrap_or(subject_host).to_owned();
    let component = body
        .lines()
        .find_map(|l| COMPONENT.captures(l.trim()))
        .and_then(|c| c.get(1))
        .map(|m| m.as_str());
    let extra = body
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("Extra information:"))
        .map(|e| e.trim().trim_end_matches('.'));
    let (severity, failed) = match event {
        "Fail" | "FailSpare" | "DegradedArray" => (Severity::Critical, true),
        "TestMessage" => (Severity::Info, false),
        _ => (Severity::Warning, true),
    };
    let mut finding = Finding::new(Kind::Mdadm, severity);
    finding.title = format!("mdadm {event} on {host} {array}");
    finding.summary = match component {
        Some(c) => format!("{event} event on {array} (component device {c})"),
        None => format!("{event} event on {array}"),
    };
    finding.dedup_key = format!("mdadm:{host}:{array}:{event}");
    finding.host = Some(host);
    finding.failed = Some(failed);
    finding.fact("event", event);
    finding.fact("array", array);
    if let Some(c) = component {
        finding.fact("device", c);
    }
    if let Some(e) = extra {
        finding.fact("extra", e);
    }
    if let Some(status) = mdstat_line(body, array) {
        finding.fact("mdstat", &status);
    }
    Some(finding)
}

/// The `/proc/mdstat` lines for `array` (`md0 : active raid1 sdb1[1](F) sda1[0]` and the
/// status line under it, e.g. `... [2/1] [U_]`), joined.
fn mdstat_line(body: &str, array: &str) -> Option<String> {
    let name = array.rsplit('/').next()?;
    if name.is_empty() {
        return None;
    }
    let mut lines = body
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&format!("{name} :")));
    let first = lines.next()?.trim();
    let second = lines.next().map(str::trim).unwrap_or_default();
    Some(format!("{first} {second}").trim().to_owned())
}
