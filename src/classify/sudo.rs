//! sudo's security mail (sudoers `mail_badpass`, `mail_no_user`, `mail_no_host`,
//! `mail_no_perms`, `mail_always`, `mail_all_cmnd`).
//!
//! Format, from sudo's mailer (plugins/sudoers/logging.c `send_mail`, 1.9's lib/eventlog
//! `send_mail`): `Subject: *** SECURITY information for HOST ***` (the sudoers `mailsub`
//! default, `%h` = host; configurable, so the body decides), `Auto-Submitted: auto-generated`,
//! and a body of one log line:
//!
//! ```text
//! HOST : DATE : USER : REASON ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls -l
//! ```
//!
//! REASON is absent for `mail_always`/`mail_all_cmnd` (the command was allowed); otherwise it
//! is one of `user NOT in sudoers`, `user NOT authorized on host`, `command not allowed`,
//! `N incorrect password attempt(s)`, `a password is required`, `unknown user` … sudo ≥ 1.9 may
//! add `GROUP=`, `TSID=`, `ENV=`, `CHROOT=` before `COMMAND=`, which comes last.

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::{is_host_name, Finding, Message};

static SUBJECT_HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"SECURITY information for (\S+)").unwrap_or_else(|_| unreachable!())
});

/// One parsed sudo log line.
#[derive(Debug, Default)]
struct LogLine<'a> {
    host: &'a str,
    date: &'a str,
    user: &'a str,
    reason: Option<&'a str>,
    tty: Option<&'a str>,
    pwd: Option<&'a str>,
    target_user: Option<&'a str>,
    target_group: Option<&'a str>,
    command: Option<&'a str>,
    line: &'a str,
}

/// Parses `HOST : DATE : USER : [REASON ; ]KEY=value ; ... ; COMMAND=...`.
fn parse_line(line: &str) -> Option<LogLine<'_>> {
    let line = line.trim();
    let mut parts = line.splitn(4, " : ");
    let host = parts.next()?.trim();
    let date = parts.next()?.trim();
    let user = parts.next()?.trim();
    let rest = parts.next()?.trim();
    if host.is_empty() || user.is_empty() || user.contains(char::is_whitespace) {
        return None;
    }
    if !rest.contains("TTY=") && !rest.contains("COMMAND=") && !rest.contains("USER=") {
        return None;
    }
    let (fields, command) = match rest.split_once("COMMAND=") {
        Some((fields, command)) => (fields, Some(command.trim())),
        None => (rest, None),
    };
    let mut parsed = LogLine {
        host,
        date,
        user,
        command,
        line: rest,
        ..LogLine::default()
    };
    for item in fields
        .split(" ; ")
        .map(|i| i.trim().trim_end_matches(';').trim())
    {
        match item.split_once('=') {
            Some(("TTY", v)) => parsed.tty = Some(v),
            Some(("PWD", v)) => parsed.pwd = Some(v),
            Some(("USER", v)) => parsed.target_user = Some(v),
            Some(("GROUP", v)) => parsed.target_group = Some(v),
            Some((k, _)) if k.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {}
            _ if !item.is_empty() && parsed.reason.is_none() => parsed.reason = Some(item),
            _ => {}
        }
    }
    Some(parsed)
}

/// The event a reason names, for rules and dedup keys.
fn event_of(reason: Option<&str>) -> &'static str {
    let Some(reason) = reason else {
        return "command_run";
    };
    let lower = reason.to_ascii_lowercase();
    if lower.contains("incorrect password") || lower.contains("authentication failure") {
        "bad_password"
    } else if lower.contains("not in sudoers") {
        "not_in_sudoers"
    } else if lower.contains("not authorized on host") || lower.contains("not allowed on host") {
        "not_allowed_on_host"
    } else if lower.contains("command not allowed") {
        "command_not_allowed"
    } else if lower.contains("password is required") {
        "password_required"
    } else if lower.contains("unknown user") || lower.contains("unknown group") {
        "unknown_user"
    } else {
        "other"
    }
}

/// Recognises a sudo mail: a subject in sudo's default form, or a body whose first lines
/// include a sudo log line.
pub(super) fn recognise(message: &Message) -> Option<Finding> {
    let subject_host = SUBJECT_HOST
        .captures(&message.subject)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str());
    let line = message
        .body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(5)
        .find_map(parse_line);
    if subject_host.is_none() && line.is_none() {
        return None;
    }
    let line = line.unwrap_or_default();
    let host = if is_host_name(line.host) {
        line.host
    } else {
        subject_host.unwrap_or_default()
    };
    let event = event_of(line.reason);
    let failed = event != "command_run";
    let mut finding = Finding::new(
        Kind::Sudo,
        if failed {
            Severity::Warning
        } else {
            Severity::Info
        },
    );
    let user = line.user;
    let command = line.command.unwrap_or_default();
    let what = line.reason.unwrap_or("ran a command");
    finding.title = if user.is_empty() {
        format!("sudo on {host}: security information")
    } else {
        format!("sudo on {host}: {user}: {what}")
    };
    finding.summary = if line.line.is_empty() {
        super::summary_of(message)
    } else {
        format!("{user} : {}", line.line)
    };
    finding.dedup_key = format!("sudo:{host}:{user}:{event}:{command}");
    finding.host = (!host.is_empty()).then(|| host.to_owned());
    finding.user = (!user.is_empty()).then(|| user.to_owned());
    finding.command = line.command.map(str::to_owned);
    finding.failed = Some(failed);
    finding.fact("event", event);
    if let Some(reason) = line.reason {
        finding.fact("reason", reason);
    }
    if let Some(tty) = line.tty {
        finding.fact("tty", tty);
    }
    if let Some(pwd) = line.pwd {
        finding.fact("pwd", pwd);
    }
    if let Some(target) = line.target_user {
        finding.fact("target_user", target);
    }
    if let Some(group) = line.target_group {
        finding.fact("target_group", group);
    }
    finding.fact("date", line.date);
    if let Some(attempts) = line
        .reason
        .filter(|_| event == "bad_password")
        .and_then(super::text::first_word)
        .and_then(|n| n.parse::<i64>().ok())
    {
        finding.number("attempts", attempts);
    }
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_refusal() {
        let l = parse_line("web01 : Nov 24 12:00:01 : mallory : user NOT in sudoers ; TTY=pts/3 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh -c 'a ; b'").unwrap();
        assert_eq!(l.host, "web01");
        assert_eq!(l.user, "mallory");
        assert_eq!(l.reason, Some("user NOT in sudoers"));
        assert_eq!(l.tty, Some("pts/3"));
        assert_eq!(l.target_user, Some("root"));
        assert_eq!(l.command, Some("/bin/sh -c 'a ; b'"));
    }

    #[test]
    fn parses_mail_always() {
        let l = parse_line(
            "db1 : Nov 24 12:00:01 : alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id",
        )
        .unwrap();
        assert_eq!(l.reason, None);
        assert_eq!(event_of(l.reason), "command_run");
    }

    #[test]
    fn rejects_other_lines() {
        assert!(parse_line("hello : world").is_none());
        assert!(parse_line("a : b : c : d").is_none());
    }
}
