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
//! Since the 2023 rework of Monitor.c (event enums) the list is exact — `Fail`, `TestMessage`,
//! `SparesMissing`, `DegradedArray` — so `FailSpare` is mailed only by older versions.
//! Default severity: critical for `Fail`, `FailSpare`, `DegradedArray`, `DeviceDisappeared`;
//! warning for `SparesMissing` and unknown events; info for `TestMessage`.
//!
//! Recoveries: the events that end a degraded array, `RebuildFinished` and `SpareActive`, are
//! never mailed by mdadm itself — it passes them only to a `PROGRAM` (`--program`) script. A
//! script that mails them in mdadm's format (subject `EVENT event on ARRAY:HOST`, the
//! `/proc/mdstat` postscript) is recognised: the array's redundancy events (`Fail`,
//! `FailSpare`, `DegradedArray`, `DeviceDisappeared`, `RebuildFinished`, `SpareActive`) all
//! have the key `mdadm:HOST:ARRAY`, and a `RebuildFinished` or `SpareActive` whose mdstat shows
//! every member up (`[UU]`, no `_`) is a recovery (`failed = false`, info) that resolves the
//! array's open problem. One that still shows a missing member — mdadm also says
//! `RebuildFinished` when a rebuild was aborted — is the array still degraded (`failed = true`,
//! critical). Without such a script a degraded array's problem closes after `resolve_after` or
//! by a rule's `resolve = true`. Other events keep a key of their own,
//! `mdadm:HOST:ARRAY:EVENT`: a `TestMessage` must not resolve a degraded array, and
//! `SparesMissing` is a separate problem with no event that ends it.

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::{is_host_name, Finding, Message};

static SUBJECT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\w+) event on (\S+)$").unwrap_or_else(|_| unreachable!()));

/// The member status in `/proc/mdstat`, e.g. `[U_]`: one `U` per working member, `_` per
/// missing one.
static MEMBERS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[([U_]+)\]").unwrap_or_else(|_| unreachable!()));

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
        "Fail"
            | "FailSpare"
            | "DegradedArray"
            | "SparesMissing"
            | "TestMessage"
            | "DeviceDisappeared"
            | "RebuildFinished"
            | "SpareActive"
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
    let mdstat = mdstat_line(body, array);
    let (severity, failed) = match event {
        "Fail" | "FailSpare" | "DegradedArray" | "DeviceDisappeared" => (Severity::Critical, true),
        // Finished or aborted: only the array's member status says which.
        "RebuildFinished" | "SpareActive" if mdstat.as_deref().is_some_and(missing_member) => {
            (Severity::Critical, true)
        }
        "RebuildFinished" | "SpareActive" | "TestMessage" => (Severity::Info, false),
        _ => (Severity::Warning, true),
    };
    let mut finding = Finding::new(Kind::Mdadm, severity);
    finding.title = format!("mdadm {event} on {host} {array}");
    finding.summary = match component {
        Some(c) => format!("{event} event on {array} (component device {c})"),
        None => format!("{event} event on {array}"),
    };
    finding.dedup_key = if redundancy_event(event) {
        // One problem per array, so that the event ending it resolves what opened it.
        format!("mdadm:{host}:{array}")
    } else {
        format!("mdadm:{host}:{array}:{event}")
    };
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
    if let Some(status) = &mdstat {
        finding.fact("mdstat", status);
    }
    Some(finding)
}

/// Events about whether an array has all its members: they open and end one problem.
fn redundancy_event(event: &str) -> bool {
    matches!(
        event,
        "Fail"
            | "FailSpare"
            | "DegradedArray"
            | "DeviceDisappeared"
            | "RebuildFinished"
            | "SpareActive"
    )
}

/// Whether an mdstat status (see [`mdstat_line`]) shows a missing member (`[U_]`).
fn missing_member(status: &str) -> bool {
    MEMBERS
        .captures_iter(status)
        .filter_map(|c| c.get(1))
        .any(|m| m.as_str().contains('_'))
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

#[cfg(test)]
mod tests {
    use super::super::{classify, parse};
    use herald_bridges::Severity;

    const REBUILT: &[u8] = include_bytes!("../../tests/corpus/mdadm/rebuild-finished.eml");

    #[test]
    fn aborted_rebuild_is_still_degraded() {
        let raw = String::from_utf8_lossy(REBUILT).replace("[2/2] [UU]", "[2/1] [U_]");
        let alert = classify(&parse(raw.as_bytes(), false));
        assert_eq!(alert.failed, Some(true));
        assert_eq!(alert.severity, Severity::Critical);
        assert_eq!(alert.dedup_key, "mdadm:store1.example.net:/dev/md0");
    }

    #[test]
    fn test_message_does_not_share_the_array_key() {
        let raw = String::from_utf8_lossy(REBUILT).replace("RebuildFinished", "TestMessage");
        let alert = classify(&parse(raw.as_bytes(), false));
        assert_eq!(alert.failed, Some(false));
        assert_eq!(
            alert.dedup_key,
            "mdadm:store1.example.net:/dev/md0:TestMessage"
        );
    }

    #[test]
    fn member_status() {
        assert!(super::missing_member(
            "md0 : active raid1 sda1[0] 976 blocks [2/1] [U_]"
        ));
        assert!(!super::missing_member(
            "md0 : active raid1 sdb1[1](F) sda1[0] [2/2] [UU]"
        ));
        assert!(!super::missing_member(""));
    }
}
