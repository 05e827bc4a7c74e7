//! fail2ban mail actions.
//!
//! Format, from fail2ban's `action.d/sendmail-common.conf`, `sendmail.conf`,
//! `sendmail-whois*.conf`, `sendmail-buffered.conf` and `mail*.conf`:
//! - `Subject: [Fail2Ban] JAIL: started on FQ-HOSTNAME` / `stopped on FQ-HOSTNAME`
//!   (`The jail JAIL has been started successfully.` / `... stopped.`)
//! - `Subject: [Fail2Ban] JAIL: banned IP from FQ-HOSTNAME`, body `The IP IP has just been
//!   banned by Fail2Ban after\nN attempts against JAIL.` (the whois/lines variants append whois
//!   output and matching log lines).
//! - `sendmail-buffered`: `Subject: [Fail2Ban] JAIL: summary from FQ-HOSTNAME`.
//!
//! A ban is fail2ban working as intended: failed false, default severity info. So are start and
//! stop, which are routine at every restart.

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::{Finding, Message};

static SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\[Fail2Ban\] ([^:]+): (?:(banned|unbanned) (\S+) from (\S+)|(started|stopped) on (\S+)|(summary) from (\S+))")
        .unwrap_or_else(|_| unreachable!())
});

static ATTEMPTS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d+) attempts against").unwrap_or_else(|_| unreachable!()));

/// Recognises a fail2ban mail.
pub(super) fn recognise(message: &Message) -> Option<Finding> {
    let captures = SUBJECT.captures(message.subject.trim())?;
    let jail = captures.get(1)?.as_str().trim();
    let (action, ip, host) = if let Some(action) = captures.get(2) {
        (
            action.as_str(),
            captures.get(3).map(|m| m.as_str()),
            captures.get(4)?.as_str(),
        )
    } else if let Some(action) = captures.get(5) {
        (action.as_str(), None, captures.get(6)?.as_str())
    } else {
        (captures.get(7)?.as_str(), None, captures.get(8)?.as_str())
    };
    let action = match action {
        "banned" => "ban",
        "unbanned" => "unban",
        "started" => "start",
        "stopped" => "stop",
        other => other,
    };
    let mut finding = Finding::new(Kind::Fail2ban, Severity::Info);
    finding.title = match ip {
        Some(ip) => format!("fail2ban on {host}: {jail} {action} {ip}"),
        None => format!("fail2ban on {host}: jail {jail} {action}"),
    };
    finding.summary = message
        .body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.eq_ignore_ascii_case("hi,"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    finding.dedup_key = format!("fail2ban:{host}:{jail}:{action}:{}", ip.unwrap_or(""));
    finding.host = Some(host.to_owned());
    finding.failed = Some(false);
    finding.fact("jail", jail);
    finding.fact("action", action);
    if let Some(ip) = ip {
        finding.fact("ip", ip);
    }
    if let Some(n) = ATTEMPTS
        .captures(&message.body)
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse::<i64>().ok())
    {
        finding.number("failures", n);
    }
    Some(finding)
}
