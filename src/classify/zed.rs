//! ZFS Event Daemon (ZED) notifications, from OpenZFS `cmd/zed/zed.d/*.sh`:
//!
//! - `statechange-notify.sh`: `ZFS device fault for pool POOL on HOST`; body `The number of
//!   I/O errors ... marked the device as faulted.` / `... degraded.` / `ZFS has detected that a
//!   device was removed.`, then ` impact:`, `eid:`, `class:`, `state:`, `host:`, `time:`,
//!   `vpath:`, `vguid:`, `pool: POOL (GUID)` lines.
//! - `data-notify.sh`, `checksum-notify.sh`/`io-notify.sh`: `ZFS SUBCLASS error for POOL on
//!   HOST`; body `ZFS has detected a data error:` and the same key lines.
//! - `scrub_finish-notify.sh`/`resilver_finish-notify.sh`, `trim_finish-notify.sh`,
//!   `generic-notify.sh`: `ZFS SUBCLASS event for POOL on HOST` (generic: `for POOL` may be
//!   missing); body `ZFS has finished a scrub:` (or posted the event) with the key lines, then
//!   `zpool status POOL`.
//!
//! Default severity: critical for a device fault and for data errors; warning for checksum and
//! I/O errors and for a finished scrub or resilver whose `zpool status` is not clean; info
//! otherwise.

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::text::{field, first_word};
use super::{is_host_name, Finding, Message};

static SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^ZFS (?:(device fault) for pool (\S+)|(\S+) (event|error)(?: for (\S+))?) on (\S+)$",
    )
    .unwrap_or_else(|_| unreachable!())
});

/// Recognises a ZED notification.
pub(super) fn recognise(message: &Message) -> Option<Finding> {
    let captures = SUBJECT.captures(message.subject.trim())?;
    let body = &message.body;
    let fault = captures.get(1).is_some();
    let subject_pool = captures
        .get(2)
        .or_else(|| captures.get(5))
        .map(|m| m.as_str());
    let class = field(body, "class")
        .or_else(|| captures.get(3).map(|m| m.as_str()))
        .unwrap_or("statechange");
    let is_error = captures.get(4).is_some_and(|m| m.as_str() == "error");
    let host = field(body, "host")
        .filter(|h| is_host_name(h))
        .or_else(|| captures.get(6).map(|m| m.as_str()))
        .unwrap_or_default()
        .to_owned();
    let pool = field(body, "pool")
        .and_then(first_word)
        .or(subject_pool)
        .unwrap_or_default();
    let vdev_state = field(body, "state");
    let vpath = field(body, "vpath");
    let event = class.replace('.', "_");
    let event = event.as_str();
    let clean_status = body.contains("errors: No known data errors")
        && !body
            .lines()
            .any(|l| super::text::field_of_line(l, "state").is_some_and(|s| s != "ONLINE"));
    let (severity, failed) = if fault {
        (Severity::Critical, true)
    } else if is_error {
        if event == "data" {
            (Severity::Critical, true)
        } else {
            (Severity::Warning, true)
        }
    } else if matches!(event, "scrub_finish" | "resilver_finish") {
        if clean_status || !body.contains("errors:") {
            (Severity::Info, false)
        } else {
            (Severity::Warning, true)
        }
    } else {
        (Severity::Info, false)
    };
    let mut finding = Finding::new(Kind::Zed, severity);
    finding.title = if fault {
        format!(
            "ZFS device {} in pool {pool} on {host}",
            vdev_state.unwrap_or("fault")
        )
    } else if is_error {
        format!("ZFS {event} error in pool {pool} on {host}")
    } else {
        format!("ZFS {event} for pool {pool} on {host}")
    };
    let first = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    finding.summary = match (vpath, field(body, "scan")) {
        (Some(v), _) => format!("{first} {v}"),
        (None, Some(scan)) => match vdev_state {
            Some(state) => format!("pool {pool} {state}: {scan}"),
            None => format!("pool {pool}: {scan}"),
        },
        (None, None) => first.to_owned(),
    };
    finding.dedup_key = format!("zed:{host}:{pool}:{event}:{}", vpath.unwrap_or(""));
    finding.host = (!host.is_empty()).then_some(host);
    finding.failed = Some(failed);
    finding.fact("pool", pool);
    finding.fact("event", event);
    if let Some(s) = vdev_state.filter(|_| fault) {
        finding.fact("vdev_state", s);
    }
    if let Some(v) = vpath {
        finding.fact("device", v);
    }
    if let Some(eid) = field(body, "eid").and_then(|e| e.parse::<i64>().ok()) {
        finding.number("eid", eid);
    }
    if let Some(errors) = field(body, "errors") {
        finding.fact("errors", errors);
    }
    Some(finding)
}
