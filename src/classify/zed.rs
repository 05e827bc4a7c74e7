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
//!
//! Recoveries: ZED mails a state change only into a bad state (`statechange-notify.sh` exits
//! for any state but `FAULTED`, `DEGRADED`, `REMOVED` and `UNAVAIL`), so no mail says "device
//! online". What says the pool is whole again is a finished resilver (always mailed) or scrub
//! (mailed for a healthy pool only with `ZED_NOTIFY_VERBOSE=1`), whose `zpool status` is for
//! the whole pool and names no one device. So a device fault and a finished scrub or resilver
//! share the pool's key, `zed:HOST:POOL`: a clean one (pool `ONLINE`, `No known data errors`)
//! is a recovery (`failed = false`) that resolves the fault, an unclean one repeats it, and
//! one without `zpool status` output is neither (`failed` null). A
//! second device faulting in a pool whose problem is open is a repeat of that problem (sent
//! with its reminder), not a new page. Data, checksum and I/O error mails keep keys of their
//! own (`zed:HOST:POOL:CLASS:VPATH`; a data error must page even while a device fault is
//! open) and close after `resolve_after`; so do other events (`trim_finish`, generic), which
//! say nothing about the pool's health.

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
    let pool_not_online = body
        .lines()
        .any(|l| super::text::field_of_line(l, "state").is_some_and(|s| s != "ONLINE"));
    let clean_status = body.contains("errors: No known data errors") && !pool_not_online;
    let (severity, failed) = if fault {
        (Severity::Critical, Some(true))
    } else if is_error {
        if event == "data" {
            (Severity::Critical, Some(true))
        } else {
            (Severity::Warning, Some(true))
        }
    } else if matches!(event, "scrub_finish" | "resilver_finish") {
        if clean_status {
            (Severity::Info, Some(false))
        } else if pool_not_online || body.contains("errors:") {
            (Severity::Warning, Some(true))
        } else {
            // No `zpool status` (the command failed): nothing says whether the pool is whole,
            // so this must neither resolve a device fault nor open a problem.
            (Severity::Info, None)
        }
    } else {
        (Severity::Info, Some(false))
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
    let pool_health = fault || matches!(event, "scrub_finish" | "resilver_finish");
    finding.dedup_key = if pool_health {
        // One problem per pool: the scrub or resilver that reports it whole names no device.
        format!("zed:{host}:{pool}")
    } else {
        format!("zed:{host}:{pool}:{event}:{}", vpath.unwrap_or(""))
    };
    finding.host = (!host.is_empty()).then_some(host);
    finding.failed = failed;
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

#[cfg(test)]
mod tests {
    use super::super::{classify, parse};

    const RESILVER: &[u8] = include_bytes!("../../tests/corpus/zed/resilver-finish-clean.eml");

    /// Without `zpool status` nothing says the pool is whole: no recovery, no problem.
    #[test]
    fn finish_without_status_resolves_nothing() {
        let text = String::from_utf8_lossy(RESILVER);
        let cut = text.split(" state: ONLINE").next().unwrap_or_default();
        let alert = classify(&parse(cut.as_bytes(), false));
        assert_eq!(alert.dedup_key, "zed:nas2:tank");
        assert_eq!(alert.failed, None);
    }

    /// Events that say nothing of the pool's health keep their own keys.
    #[test]
    fn trim_finish_is_not_pool_health() {
        let raw = String::from_utf8_lossy(RESILVER)
            .replace("resilver_finish", "trim_finish")
            .replace("finished a resilver", "finished a trim");
        let alert = classify(&parse(raw.as_bytes(), false));
        assert_eq!(alert.failed, Some(false));
        assert_eq!(alert.dedup_key, "zed:nas2:tank:trim_finish:");
    }
}
