//! Bounces: delivery status notifications (RFC 3464), e.g. when alert mail to a user fails.
//!
//! A DSN is `multipart/report; report-type=delivery-status` with a human-readable part, a
//! `message/delivery-status` part, and the returned message or its headers. The status part is
//! one per-message block (`Reporting-MTA: dns; mx.example.net`, `Arrival-Date:`) and one block
//! per recipient (`Final-Recipient: rfc822; user@example.net`, `Original-Recipient:`,
//! `Action: failed|delayed|delivered|relayed|expanded`, `Status: 5.1.1`, `Remote-MTA:`,
//! `Diagnostic-Code: smtp; 550 5.1.1 ...`), fields possibly folded (RFC 3464 §2.1.1).
//!
//! Bounces without a status part (old Exim, some appliances) are recognised by a
//! `MAILER-DAEMON`/`postmaster` sender and a bounce subject; their recipient is read from the
//! first `<address>:` or indented address line (Postfix's and Exim's human-readable text).
//!
//! Default severity: warning when delivery failed, info when delayed (failed true: it is a
//! problem, but the MTA is still trying) or succeeded (failed false).

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::{Finding, Message};

static BOUNCE_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(undeliver(ed|able)|returned mail|mail delivery (failed|system)|delivery (status notification|failure|has failed)|failure notice|non.?delivery|delayed mail|warning: could not send)")
        .unwrap_or_else(|_| unreachable!())
});

static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^\s*<?([^\s<>@:]+@[A-Za-z0-9.-]+)>?:?\s*(.*)$")
        .unwrap_or_else(|_| unreachable!())
});

static STATUS_CODE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)([245]\.\d{1,3}\.\d{1,3})(?-u:\b)").unwrap_or_else(|_| unreachable!())
});

/// The fields of one block of a delivery-status part, unfolded.
fn blocks(status: &str) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in status.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        if out.len() > 100 {
            break;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn get<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `rfc822; user@example.net` → `user@example.net`.
fn typed_value(value: &str) -> &str {
    value.split_once(';').map_or(value, |(_, v)| v).trim()
}

/// Recognises a bounce.
pub(super) fn recognise(message: &Message) -> Option<Finding> {
    let from_daemon = message.from.as_deref().is_some_and(|f| {
        let local = f.split('@').next().unwrap_or_default().to_ascii_lowercase();
        local == "mailer-daemon" || local == "postmaster"
    });
    let is_report = message.header("Content-Type").is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.contains("multipart/report") && ct.contains("delivery-status")
    });
    let subject_says = BOUNCE_SUBJECT.is_match(message.subject.trim());
    let status = message.delivery_status.as_deref();
    if status.is_none() && !is_report && !(from_daemon && subject_says) {
        return None;
    }
    let blocks = status.map(blocks).unwrap_or_default();
    let per_message = blocks
        .iter()
        .find(|b| get(b, "reporting-mta").is_some())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let recipients: Vec<&Vec<(String, String)>> = blocks
        .iter()
        .filter(|b| get(b, "final-recipient").is_some() || get(b, "action").is_some())
        .collect();
    let recipient_block = recipients
        .iter()
        .find(|b| get(b, "action").is_some_and(|a| a.eq_ignore_ascii_case("failed")))
        .or_else(|| recipients.first())
        .map(|b| b.as_slice())
        .unwrap_or_default();
    let body_address = ADDRESS.captures(super::text::prefix(&message.body, 16 * 1024));
    // The explanation after the address: the rest of its line and the indented lines under it
    // (Postfix: `<a@b>: host mx said: 550 ...`, Exim: `  a@b` then `    SMTP error ...`).
    let body_explanation = body_address.as_ref().and_then(|c| {
        let all = c.get(0)?;
        let rest = message.body.get(all.end()..)?;
        let mut text = c.get(2).map_or("", |m| m.as_str()).trim().to_owned();
        for line in rest
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with([' ', '\t']) && !l.trim().is_empty())
            .take(10)
        {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(line.trim());
        }
        (!text.is_empty()).then_some(text)
    });
    let recipient = get(recipient_block, "final-recipient")
        .map(typed_value)
        .or_else(|| get(recipient_block, "original-recipient").map(typed_value))
        .or_else(|| {
            body_address
                .as_ref()
                .and_then(|c| c.get(1))
                .map(|m| m.as_str())
        })
        .unwrap_or_default();
    let diagnostic = get(recipient_block, "diagnostic-code")
        .map(typed_value)
        .or(body_explanation.as_deref());
    let status_code = get(recipient_block, "status")
        .and_then(super::text::first_word)
        .or_else(|| {
            diagnostic
                .and_then(|d| STATUS_CODE.captures(d))
                .and_then(|c| c.get(1))
                .map(|m| m.as_str())
        });
    let action = get(recipient_block, "action")
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| {
            if status_code.is_some_and(|s| s.starts_with('4'))
                || message.subject.to_ascii_lowercase().contains("delay")
            {
                "delayed".to_owned()
            } else {
                "failed".to_owned()
            }
        });
    let reporting_mta = get(per_message, "reporting-mta").map(typed_value);
    let (severity, failed) = match action.as_str() {
        "failed" => (Severity::Warning, true),
        "delayed" => (Severity::Info, true),
        _ => (Severity::Info, false),
    };
    let mut finding = Finding::new(Kind::Bounce, severity);
    let code = status_code.map(|s| format!(" ({s})")).unwrap_or_default();
    finding.title = if recipient.is_empty() {
        format!("bounce: delivery {action}{code}")
    } else {
        format!("bounce: delivery to {recipient} {action}{code}")
    };
    finding.summary = diagnostic
        .map(str::to_owned)
        .unwrap_or_else(|| super::summary_of(message));
    finding.dedup_key = format!("bounce:{recipient}:{}", status_code.unwrap_or(&action));
    finding.host = reporting_mta
        .filter(|h| super::is_host_name(h))
        .map(str::to_owned)
        .or_else(|| message.from_domain());
    finding.failed = Some(failed);
    finding.fact("recipient", recipient);
    finding.fact("action", &action);
    if let Some(s) = status_code {
        finding.fact("status", s);
    }
    if let Some(d) = diagnostic {
        finding.fact("diagnostic", d);
    }
    if let Some(r) = get(recipient_block, "remote-mta").map(typed_value) {
        finding.fact("remote_mta", r);
    }
    if let Some(r) = reporting_mta {
        finding.fact("reporting_mta", r);
    }
    if let Some(o) = get(recipient_block, "original-recipient").map(typed_value) {
        finding.fact("original_recipient", o);
    }
    if recipients.len() > 1 {
        finding.number(
            "recipients",
            i64::try_from(recipients.len()).unwrap_or(i64::MAX),
        );
    }
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfolds_blocks() {
        let b = blocks("Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b\nAction: failed\nDiagnostic-Code: smtp; 550 no\n  such user\n");
        assert_eq!(b.len(), 2);
        assert_eq!(
            get(b.get(1).unwrap(), "diagnostic-code"),
            Some("smtp; 550 no such user")
        );
    }
}
