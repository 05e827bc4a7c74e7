//! cron and anacron mail: Vixie/Debian cron, cronie, OpenBSD cron, systemd-cron (both of its
//! subject formats), and anacron (kind `anacron`).
//!
//! Formats, from the programs' sources:
//! - Vixie cron and cronie (`do_command.c`): `Subject: Cron <USER@HOST> COMMAND`, where HOST is
//!   `first_word(hostname, ".")` (OpenBSD cron: the full hostname), then one
//!   `X-Cron-Env: <NAME=value>` header per variable of the job's environment. Debian's cron
//!   appends ` (failed)` to the subject when the job exited non-zero
//!   (`"Subject: Cron <%s@%s> %s%s", ..., status?" (failed)":""`). Otherwise cron mails only
//!   when a job printed something and does not say how it exited, so "failed" is read from the
//!   output's words.
//! - systemd-cron 1.x (`mail_on_failure`): `Subject: [HOST] job UNIT failed`, body
//!   `systemctl status UNIT`.
//! - systemd-cron 2.x (`mail_for_job`): `Subject: [HOST] Failure: SOURCE` or
//!   `[HOST] Output: SOURCE` (`Failure` when the unit's ActiveState is `failed`), SOURCE being
//!   a path (`/etc/cron.daily/foo`) or `USER's crontab "SCHEDULE COMMAND"`; `X-Mailer:
//!   systemd-cron VERSION`; body `systemctl status -n0 UNIT` then the job's journal.
//! - anacron (`runjob.c`): `From: Anacron <USER>`, `Subject: Anacron job 'IDENT' on HOST`,
//!   body the job's output (on Debian usually run-parts', ending
//!   `run-parts: /etc/cron.daily/x exited with return code N` on failure).
//!
//! Recoveries: cron (and anacron) mail only when a job prints something, so a job's success
//! resolves its failure only if it prints something on success too. A run's mail, failed or
//! not, has the key `cron:HOST:USER:COMMAND` (`anacron:HOST:JOB`): the subject's command
//! without Debian's ` (failed)`, and for systemd-cron 2 the same SOURCE in `Failure:` and
//! `Output:` subjects, so the success mail (`failed = false`, info) resolves the failure.
//! systemd-cron 1 mails failures only (`job UNIT failed`), so those close after
//! `resolve_after`. One mail covers one run of the command — for `run-parts` all its scripts
//! — so the next run's mail says whether that run failed.
//!
//! Only a few, harmless `X-Cron-Env` variables become facts: a crontab's environment can hold
//! secrets, and alerts must not carry them.

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::systemd::unit_status;
use super::text::{first_failure_line, reports_failure};
use super::{is_host_name, summary_of, Finding, Message, MAX_COMMAND_CHARS};

static CLASSIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Cron <([^@>\s]+)@([^>\s]+)>\s*(.*?)(\s\(failed\))?$")
        .unwrap_or_else(|_| unreachable!())
});

static SYSTEMD_CRON_V1: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\[([^\]\s]+)\] job (\S+) failed$").unwrap_or_else(|_| unreachable!())
});

static SYSTEMD_CRON_V2: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\[([^\]\s]+)\] (Failure|Output): (.+)$").unwrap_or_else(|_| unreachable!())
});

static ANACRON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Anacron job '(.*)' on (\S+)$").unwrap_or_else(|_| unreachable!())
});

/// run-parts' report of a script that failed (Debian's run-parts.c:
/// `"%s exited with return code %d"`).
static RUN_PARTS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^run-parts: (\S+) exited with return code (-?\d+)")
        .unwrap_or_else(|_| unreachable!())
});

/// `X-Cron-Env` variables safe to show: they say where and how the job ran, never a secret.
const SAFE_ENV: [&str; 7] = ["SHELL", "HOME", "LOGNAME", "USER", "PATH", "MAILTO", "LANG"];

/// Recognises cron, systemd-cron and anacron mail.
pub(super) fn recognise(message: &Message) -> Option<Finding> {
    let subject = message.subject.trim();
    if subject.starts_with("Cron <") {
        return classic(message, subject);
    }
    if subject.starts_with("Anacron job ") {
        return anacron(message, subject);
    }
    if subject.starts_with('[') {
        return systemd_cron(message, subject);
    }
    None
}

fn classic(message: &Message, subject: &str) -> Option<Finding> {
    let captures = CLASSIC.captures(subject)?;
    let user = captures.get(1)?.as_str();
    let host = full_host_name(captures.get(2)?.as_str(), message.from.as_deref());
    let command = captures.get(3).map_or("", |m| m.as_str());
    let debian_failed = captures.get(4).is_some();
    let failed = debian_failed || reports_failure(&message.body);
    let mut finding = job(
        Kind::Cron,
        &host,
        user,
        command,
        failed,
        None,
        failure_summary(message),
    );
    if debian_failed {
        finding.flag("exit_nonzero", true);
    }
    let mut any_env = false;
    for value in message.headers_named("X-Cron-Env") {
        any_env = true;
        let value = value.trim().trim_start_matches('<').trim_end_matches('>');
        if let Some((name, value)) = value.split_once('=') {
            if SAFE_ENV.contains(&name) {
                finding.fact(&format!("env_{}", name.to_ascii_lowercase()), value);
            }
        }
    }
    if any_env {
        finding.flag("cron_env", true);
    }
    finding.fact("cron", "vixie");
    Some(finding)
}

fn systemd_cron(message: &Message, subject: &str) -> Option<Finding> {
    let status = unit_status(&message.body);
    if let Some(captures) = SYSTEMD_CRON_V1.captures(subject) {
        let host = captures.get(1)?.as_str();
        let unit = captures.get(2)?.as_str();
        let command = status
            .as_ref()
            .and_then(|s| s.command.clone())
            .unwrap_or_else(|| unit.to_owned());
        let mut finding = job(
            Kind::Cron,
            host,
            "",
            &command,
            true,
            status.as_ref().and_then(|s| s.exit_status),
            failure_summary(message),
        );
        finding.user = None;
        finding.fact("cron", "systemd-cron");
        finding.fact("unit", unit);
        if let Some(result) = status.as_ref().and_then(|s| s.result.as_deref()) {
            finding.fact("result", result);
        }
        return Some(finding);
    }
    let captures = SYSTEMD_CRON_V2.captures(subject)?;
    let is_systemd_cron = message
        .header("X-Mailer")
        .is_some_and(|m| m.starts_with("systemd-cron"))
        || message
            .header("From")
            .is_some_and(|f| f.contains("(systemd-cron)"))
        || status.is_some();
    if !is_systemd_cron {
        return None;
    }
    let host = captures.get(1)?.as_str();
    let failed = captures.get(2)?.as_str() == "Failure";
    let source = captures.get(3)?.as_str();
    // `alice's crontab "0 * * * * /usr/local/bin/sync"` or `/etc/cron.daily/logrotate`.
    let (user, command) = match source.split_once("'s crontab") {
        Some((user, rest)) => (user.trim(), crontab_command(rest)),
        None => ("", crontab_command(source)),
    };
    let exit_status = status.as_ref().and_then(|s| s.exit_status);
    let mut finding = job(
        Kind::Cron,
        host,
        user,
        &command,
        failed,
        exit_status,
        failure_summary(message),
    );
    if user.is_empty() {
        finding.user = None;
    }
    finding.fact("cron", "systemd-cron");
    finding.fact("source", source);
    if let Some(status) = status {
        finding.fact("unit", &status.unit);
        if let Some(result) = status.result.as_deref() {
            finding.fact("result", result);
        }
    }
    Some(finding)
}

/// The command of a crontab line as systemd-cron quotes it: `"0 * * * * cmd"` → `cmd`,
/// `"@daily cmd"` → `cmd`; text without quotes is returned as it is.
fn crontab_command(text: &str) -> String {
    let text = text.trim();
    let Some(quoted) = text
        .strip_prefix('"')
        .and_then(|t| t.rsplit_once('"'))
        .map(|(inner, _)| inner)
    else {
        return text.to_owned();
    };
    let words: Vec<&str> = quoted.split_whitespace().collect();
    let skip = if words.first().is_some_and(|w| w.starts_with('@')) {
        1
    } else {
        5
    };
    if words.len() > skip {
        words
            .iter()
            .skip(skip)
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        quoted.to_owned()
    }
}

fn anacron(message: &Message, subject: &str) -> Option<Finding> {
    let captures = ANACRON.captures(subject)?;
    let ident = captures.get(1)?.as_str();
    let host = full_host_name(captures.get(2)?.as_str(), message.from.as_deref());
    let user = message
        .from
        .as_deref()
        .and_then(|f| f.split_once('@'))
        .map_or("root", |(u, _)| u);
    let run_parts = RUN_PARTS.captures(&message.body);
    let exit_status = run_parts
        .as_ref()
        .and_then(|c| c.get(2))
        .and_then(|m| m.as_str().parse::<i32>().ok());
    let failed = exit_status.is_some_and(|s| s != 0) || reports_failure(&message.body);
    let summary = run_parts
        .as_ref()
        .and_then(|c| c.get(0))
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| failure_summary(message));
    let mut finding = job(
        Kind::Anacron,
        &host,
        user,
        ident,
        failed,
        exit_status,
        summary,
    );
    finding.title = format!("anacron on {host}: {ident}");
    finding.dedup_key = format!("anacron:{host}:{ident}");
    if let Some(script) = run_parts.as_ref().and_then(|c| c.get(1)) {
        finding.fact("failed_script", script.as_str());
    }
    Some(finding)
}

/// A cron-like finding: title `cron on HOST: COMMAND`, dedup key `KIND:HOST:USER:COMMAND`,
/// warning when failed, else info.
fn job(
    kind: Kind,
    host: &str,
    user: &str,
    command: &str,
    failed: bool,
    exit_status: Option<i32>,
    summary: String,
) -> Finding {
    let command = herald_bridges::text::one_line(command, MAX_COMMAND_CHARS);
    let mut finding = Finding::new(
        kind,
        if failed {
            Severity::Warning
        } else {
            Severity::Info
        },
    );
    finding.title = format!("{kind} on {host}: {command}");
    finding.dedup_key = format!("{kind}:{host}:{user}:{command}");
    finding.host = Some(host.to_owned());
    finding.user = Some(user.to_owned());
    finding.command = Some(command);
    finding.failed = Some(failed);
    finding.exit_status = exit_status;
    finding.summary = summary;
    finding
}

/// The first line reporting a failure, else the first line of output.
fn failure_summary(message: &Message) -> String {
    let body = journal_output(&message.body);
    first_failure_line(body)
        .or_else(|| {
            // run-parts prints `/etc/cron.daily/NAME:` before each script's output.
            body.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !is_run_parts_header(l))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| summary_of(message))
}

/// run-parts' `/etc/cron.daily/NAME:` line before a script's output.
fn is_run_parts_header(line: &str) -> bool {
    line.starts_with('/') && line.ends_with(':')
}

/// systemd-cron's body starts with `systemctl status` (whose `Active: failed` line would
/// otherwise be the "failure line"); the job's own output is in the journal after it.
fn journal_output(body: &str) -> &str {
    match body.split_once("\n\n") {
        Some((head, rest)) if head.contains("Loaded: ") && head.contains("Active: ") => rest,
        _ => body,
    }
}

/// cron puts gethostname() in the subject, often a short name; the sender address
/// (`root@web01.example.net`) usually carries the full one. Use it when it extends the short one.
fn full_host_name(short: &str, from: Option<&str>) -> String {
    let domain = from.and_then(|f| f.rsplit_once('@')).map(|(_, d)| d);
    match domain {
        Some(d)
            if is_host_name(d)
                && d.strip_prefix(short)
                    .is_some_and(|rest| rest.starts_with('.')) =>
        {
            d.to_owned()
        }
        _ => short.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{classify, parse};
    use herald_bridges::Kind;

    const DEBIAN: &str = "From: root@web01.example.net (Cron Daemon)\r\n\
To: root@web01.example.net\r\n\
Subject: Cron <root@web01> /usr/local/bin/backup.sh\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=UTF-8\r\n\
X-Cron-Env: <SHELL=/bin/sh>\r\n\
X-Cron-Env: <HOME=/root>\r\n\
X-Cron-Env: <LOGNAME=root>\r\n\
X-Cron-Env: <API_TOKEN=hunter2>\r\n\
Message-Id: <20261124120001.1234@web01.example.net>\r\n\
Date: Tue, 24 Nov 2026 12:00:01 +0000\r\n\
\r\n\
backup.sh: error: cannot stat /srv/data: No such file or directory\r\n";

    #[test]
    fn debian_cron_failure() {
        let alert = classify(&parse(DEBIAN.as_bytes(), false));
        assert_eq!(alert.kind, Kind::Cron);
        assert_eq!(alert.host.as_deref(), Some("web01.example.net"));
        assert_eq!(alert.user.as_deref(), Some("root"));
        assert_eq!(alert.command.as_deref(), Some("/usr/local/bin/backup.sh"));
        assert_eq!(alert.failed, Some(true));
        assert_eq!(
            alert.dedup_key,
            "cron:web01.example.net:root:/usr/local/bin/backup.sh"
        );
        assert_eq!(
            alert.summary,
            "backup.sh: error: cannot stat /srv/data: No such file or directory"
        );
        let json = serde_json::to_string(&alert).unwrap();
        assert!(!json.contains("hunter2"), "secrets from X-Cron-Env leaked");
        assert!(json.contains("env_shell"));
    }

    #[test]
    fn informational_output_is_not_a_failure() {
        let raw = DEBIAN.replace(
            "backup.sh: error: cannot stat /srv/data: No such file or directory",
            "rotated 3 logs",
        );
        let alert = classify(&parse(raw.as_bytes(), false));
        assert_eq!(alert.failed, Some(false));
    }

    #[test]
    fn debian_failed_suffix() {
        let raw = DEBIAN
            .replace("backup.sh\r\n", "backup.sh (failed)\r\n")
            .replace(
                "backup.sh: error: cannot stat /srv/data: No such file or directory",
                "done",
            );
        let alert = classify(&parse(raw.as_bytes(), false));
        assert_eq!(alert.failed, Some(true));
        assert_eq!(alert.command.as_deref(), Some("/usr/local/bin/backup.sh"));
    }

    #[test]
    fn crontab_commands() {
        assert_eq!(
            super::crontab_command(" \"0 * * * * /usr/bin/x --y\""),
            "/usr/bin/x --y"
        );
        assert_eq!(super::crontab_command("\"@daily run\""), "run");
        assert_eq!(
            super::crontab_command("/etc/cron.daily/a"),
            "/etc/cron.daily/a"
        );
        assert_eq!(super::crontab_command("\"\""), "");
    }

    #[test]
    fn short_host_kept_when_sender_differs() {
        assert_eq!(
            super::full_host_name("db1", Some("root@relay.example")),
            "db1"
        );
        assert_eq!(
            super::full_host_name("db1", Some("root@db10.example")),
            "db1"
        );
        assert_eq!(
            super::full_host_name("db1", Some("root@db1.example")),
            "db1.example"
        );
    }
}
