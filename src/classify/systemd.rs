//! systemd unit failure mail: whatever script an `OnFailure=` (or `OnSuccess=`) unit runs —
//! the Arch wiki's `status_email_user@.service`, openSUSE's `systemd-status-mail`, and the
//! many like them — mails `systemctl status --full UNIT`. systemd itself sends no mail, so the
//! subject varies (`[HOST] UNIT failed`, `[Failed] UNIT`, `UNIT`, `Service UNIT on HOST has
//! failed`); the body's `systemctl status` output is what identifies it:
//!
//! ```text
//! × backup.service - Nightly backup
//!      Loaded: loaded (/etc/systemd/system/backup.service; static)
//!      Active: failed (Result: exit-code) since Tue 2026-11-24 03:00:02 UTC; 1s ago
//!     Process: 4242 ExecStart=/usr/local/bin/backup (code=exited, status=2)
//!    Main PID: 4242 (code=exited, status=2)
//! ```
//!
//! (`systemctl` prints `●`, `×` or `○` before the unit name, depending on version and state.)
//! Host: `[HOST]` or `on HOST` in the subject, else the sender's domain (these scripts send
//! from `root@$(hostname)`).
//!
//! Recoveries: a unit whose `OnFailure=` and `OnSuccess=` (systemd 249 and later) both start
//! such a script mails on every run; `failed` is read from the status block (`Active: failed`
//! or a `Result:` other than `success`), never from the subject, and the key is
//! `systemd:HOST:UNIT` either way, so the success mail resolves the failure. For that the host
//! must come out the same from both subjects: a bracketed status or result word (`[Failed]`,
//! `[Success]`, `[exit-code]` from `$MONITOR_SERVICE_RESULT`, ...) is not taken for a host.

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::text::{field, first_failure_line};
use super::{Finding, Message, MAX_COMMAND_CHARS};

/// The unit line `● NAME.service - Description`.
static UNIT_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^\s*(?:[●×○*↻✗]\s*)?([A-Za-z0-9@_.:\\-]+\.(?:service|timer|socket|mount|path|target|scope|swap|automount|slice))(?: - (.*))?$")
        .unwrap_or_else(|_| unreachable!())
});

/// `Active: failed (Result: exit-code) since ...`.
static ACTIVE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\S+)(?: \(([^)]*)\))?").unwrap_or_else(|_| unreachable!()));

/// `(code=exited, status=2)` or `(code=killed, signal=KILL)` or `status=1/FAILURE`.
static CODE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\(code=(\w+), (?:status=(-?\d+)(?:/(\w+))?|signal=(\w+))\)")
        .unwrap_or_else(|_| unreachable!())
});

static SUBJECT_HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\[([A-Za-z0-9._-]+)\]|(?-u:\b)on ([A-Za-z0-9._-]+)")
        .unwrap_or_else(|_| unreachable!())
});

/// Bracketed words in subjects that are a status, not a host (`[Failed] UNIT`), including
/// systemd's service results (`$MONITOR_SERVICE_RESULT` in an `OnFailure=`/`OnSuccess=` unit):
/// a failure mail and the success mail that resolves it must name the same host.
const STATUS_WORDS: [&str; 22] = [
    "failed",
    "failure",
    "success",
    "succeeded",
    "successful",
    "ok",
    "done",
    "recovered",
    "resolved",
    "error",
    "alert",
    "warning",
    "info",
    "systemd",
    "exit-code",
    "signal",
    "core-dump",
    "timeout",
    "watchdog",
    "start-limit-hit",
    "resources",
    "oom-kill",
];

/// What `systemctl status` says about a unit.
#[derive(Debug, Clone, Default)]
pub(super) struct UnitStatus {
    /// The unit name, e.g. `backup.service`.
    pub unit: String,
    /// The unit's description.
    pub description: Option<String>,
    /// The active state (`failed`, `active`, `inactive`).
    pub active: Option<String>,
    /// `Result:` from the Active line (`exit-code`, `signal`, `timeout`, `success`).
    pub result: Option<String>,
    /// The exit status of the main process, when it exited.
    pub exit_status: Option<i32>,
    /// The signal that killed the main process, when one did.
    pub signal: Option<String>,
    /// The ExecStart command line, with a leading `/bin/sh -c` removed.
    pub command: Option<String>,
}

/// Reads `systemctl status` output at the start of `body`, when it has a unit line followed by
/// `Loaded:` and `Active:` lines.
pub(super) fn unit_status(body: &str) -> Option<UnitStatus> {
    // The status block is at the top; do not search megabytes of journal for it.
    let head = super::text::prefix(body, 8 * 1024);
    let unit_line = UNIT_LINE.captures(head)?;
    let after = head.get(unit_line.get(0)?.end()..)?;
    field(after, "Loaded")?;
    let active_text = field(after, "Active")?;
    let active = ACTIVE.captures(active_text);
    let mut status = UnitStatus {
        unit: unit_line.get(1)?.as_str().to_owned(),
        description: unit_line.get(2).map(|m| m.as_str().trim().to_owned()),
        active: active
            .as_ref()
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().to_owned()),
        result: active
            .as_ref()
            .and_then(|c| c.get(2))
            .and_then(|m| m.as_str().strip_prefix("Result: "))
            .map(str::to_owned),
        ..UnitStatus::default()
    };
    let block = after.split("\n\n").next().unwrap_or_default();
    let main = field(block, "Main PID").and_then(|l| CODE.captures(l));
    let process_line = block
        .lines()
        .filter_map(|l| super::text::field_of_line(l, "Process"))
        .find(|l| l.contains("ExecStart="));
    let code = main.or_else(|| process_line.and_then(|l| CODE.captures(l)));
    if let Some(code) = code {
        status.exit_status = code.get(2).and_then(|m| m.as_str().parse().ok());
        status.signal = code.get(4).map(|m| m.as_str().to_owned());
    }
    status.command = process_line.and_then(|l| {
        let (_, rest) = l.split_once("ExecStart=")?;
        let command = rest.rsplit_once(" (code=").map_or(rest, |(c, _)| c);
        let command = command.strip_prefix("/bin/sh -c ").unwrap_or(command);
        Some(herald_bridges::text::one_line(command, MAX_COMMAND_CHARS))
    });
    Some(status)
}

/// Recognises a unit status mail.
pub(super) fn recognise(message: &Message) -> Option<Finding> {
    let status = unit_status(&message.body)?;
    let subject_host = SUBJECT_HOST
        .captures(&message.subject)
        .and_then(|c| c.get(1).or_else(|| c.get(2)))
        .map(|m| m.as_str())
        .filter(|h| !STATUS_WORDS.iter().any(|w| w.eq_ignore_ascii_case(h)))
        .map(str::to_owned);
    let host = subject_host.or_else(|| message.from_domain());
    let failed = status.active.as_deref() == Some("failed")
        || status.result.as_deref().is_some_and(|r| r != "success");
    let mut finding = Finding::new(
        Kind::Systemd,
        if failed {
            Severity::Warning
        } else {
            Severity::Info
        },
    );
    let on = host
        .as_deref()
        .map(|h| format!(" on {h}"))
        .unwrap_or_default();
    let unit = &status.unit;
    finding.title = if failed {
        format!("systemd unit {unit} failed{on}")
    } else {
        format!(
            "systemd unit {unit} {}{on}",
            status.active.as_deref().unwrap_or("status")
        )
    };
    let journal = message.body.split_once("\n\n").map_or("", |(_, rest)| rest);
    finding.summary = first_failure_line(journal)
        .map(str::to_owned)
        .or_else(|| field(&message.body, "Active").map(|a| format!("Active: {a}")))
        .unwrap_or_default();
    finding.dedup_key = format!("systemd:{}:{unit}", host.as_deref().unwrap_or(""));
    finding.host = host;
    finding.failed = Some(failed);
    finding.exit_status = status.exit_status;
    finding.command = status.command.clone();
    finding.fact("unit", unit);
    if let Some(d) = &status.description {
        finding.fact("description", d);
    }
    if let Some(a) = &status.active {
        finding.fact("active", a);
    }
    if let Some(r) = &status.result {
        finding.fact("result", r);
    }
    if let Some(s) = &status.signal {
        finding.fact("signal", s);
    }
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_block() {
        let body = "× backup.service - Nightly backup\n     Loaded: loaded (/etc/systemd/system/backup.service; static)\n     Active: failed (Result: exit-code) since Tue 2026-11-24 03:00:02 UTC; 1s ago\n    Process: 4242 ExecStart=/bin/sh -c /usr/local/bin/backup --all (code=exited, status=2)\n   Main PID: 4242 (code=exited, status=2)\n\nNov 24 backup[4242]: error: disk full\n";
        let s = unit_status(body).unwrap();
        assert_eq!(s.unit, "backup.service");
        assert_eq!(s.active.as_deref(), Some("failed"));
        assert_eq!(s.result.as_deref(), Some("exit-code"));
        assert_eq!(s.exit_status, Some(2));
        assert_eq!(s.command.as_deref(), Some("/usr/local/bin/backup --all"));
    }

    #[test]
    fn result_words_are_not_hosts() {
        const FAILED: &[u8] =
            include_bytes!("../../tests/corpus/systemd/arch-status-email-failed.eml");
        for (subject, result) in [
            ("[exit-code] borg-backup.service", "exit-code"),
            ("[Succeeded] borg-backup.service", "exit-code"),
            ("[arch1.example.net] borg-backup.service", "exit-code"),
        ] {
            let raw = String::from_utf8_lossy(FAILED)
                .replace("[Failed] borg-backup.service", subject)
                .replace("(Result: exit-code)", &format!("(Result: {result})"));
            let alert = super::super::classify(&super::super::parse(raw.as_bytes(), false));
            assert_eq!(
                alert.dedup_key, "systemd:arch1.example.net:borg-backup.service",
                "{subject}"
            );
        }
    }

    #[test]
    fn no_status_block_is_none() {
        assert!(unit_status("hello.service - world\n").is_none());
        assert!(unit_status("").is_none());
    }
}
