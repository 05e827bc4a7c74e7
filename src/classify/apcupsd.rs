//! apcupsd event mail, from the scripts apccontrol runs (`/etc/apcupsd/onbattery`,
//! `offbattery`, `commfailure`, `commok`, `changeme`): each sends `Subject: $MSG` with
//!
//! - onbattery: `HOST UPS NAME Power Failure !!!` (3.14.10 and older: `HOST Power Failure !!!`)
//! - offbattery: `HOST UPS NAME Power has returned...` (older: `HOST Power has returned`)
//! - commfailure: `HOST Communications with UPS NAME lost`
//! - commok: `HOST Communications with UPS NAME restored`
//! - changeme: `HOST UPS NAME battery needs changing NOW.`
//!
//! and a body of `$MSG` followed by `apcaccess status` (`STATUS   : ONBATT`, `BCHARGE  : 100.0
//! Percent`, `TIMELEFT : 30.0 Minutes`, `UPSNAME  : ...`, `MODEL    : ...`).
//! Default severity: critical on battery, warning for lost communication and battery
//! replacement, info when power or communication returns.
//!
//! Those five are the only scripts apcupsd installs; apccontrol's other events (`mainsback`,
//! `annoyme`, `failing`, `timeout`, `loadlimit`, `runlimit`, `doshutdown`, `emergency`,
//! `remotedown`, ...) only `wall` a message. Recoveries: `offbattery` ends `onbattery` (key
//! `apcupsd:HOST:UPS:power`) and `commok` ends `commfailure` (`apcupsd:HOST:UPS:comm`); the
//! recovery is `failed = false` and resolves the open problem. `changeme` has no counterpart
//! (nothing mails "battery replaced"), so its problem (`apcupsd:HOST:UPS:changeme`) closes
//! after `resolve_after` or by a rule's `resolve = true`. UPS is the name in the subject
//! (apccontrol's `$2`, the configured `UPSNAME`), else the body's `UPSNAME` line (3.14.10 and
//! older put no name in the power subjects), so old and new scripts give one key.

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::text::field;
use super::{is_host_name, Finding, Message};

/// The subject. The UPS name after `UPS` is optional: an unset name leaves `UPS Power Failure
/// !!!` (blanks are collapsed when the subject is decoded), which must still be recognised and
/// paired, by the body's `UPSNAME`.
static SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\S+) (?:UPS (?:(\S+) )?)?(Power Failure !!!|Power has returned|battery needs changing NOW|Communications with UPS (\S*) ?(lost|restored))")
        .unwrap_or_else(|_| unreachable!())
});

/// Recognises an apcupsd mail.
pub(super) fn recognise(message: &Message) -> Option<Finding> {
    let subject = message.subject.trim();
    let captures = SUBJECT.captures(subject)?;
    let host = captures.get(1)?.as_str();
    if !is_host_name(host) {
        return None;
    }
    let what = captures.get(3)?.as_str();
    let ups = captures
        .get(2)
        .or_else(|| captures.get(4))
        .map(|m| m.as_str())
        .filter(|u| !u.is_empty());
    let (event, severity, failed) = if what.starts_with("Power Failure") {
        ("onbattery", Severity::Critical, true)
    } else if what.starts_with("Power has returned") {
        ("offbattery", Severity::Info, false)
    } else if what.starts_with("battery needs") {
        ("changeme", Severity::Warning, true)
    } else if captures.get(5).is_some_and(|m| m.as_str() == "lost") {
        ("commfailure", Severity::Warning, true)
    } else {
        ("commok", Severity::Info, false)
    };
    let body = &message.body;
    let ups = ups.or_else(|| field(body, "UPSNAME")).unwrap_or_default();
    let mut finding = Finding::new(Kind::Apcupsd, severity);
    finding.title = one_line_subject(subject);
    let status = field(body, "STATUS");
    let charge = field(body, "BCHARGE");
    let left = field(body, "TIMELEFT");
    let mut summary = vec![format!("UPS {event}")];
    if let Some(s) = status {
        summary.push(format!("status {s}"));
    }
    if let Some(c) = charge {
        summary.push(format!("charge {c}"));
    }
    if let Some(t) = left {
        summary.push(format!("time left {t}"));
    }
    finding.summary = summary.join(", ");
    finding.dedup_key = format!("apcupsd:{host}:{ups}:{}", event_group(event));
    finding.host = Some(host.to_owned());
    finding.failed = Some(failed);
    finding.fact("event", event);
    finding.fact("ups", ups);
    if let Some(s) = status {
        finding.fact("status", s);
    }
    if let Some(c) = charge {
        finding.fact("battery_charge", c);
    }
    if let Some(t) = left {
        finding.fact("time_left", t);
    }
    if let Some(m) = field(body, "MODEL") {
        finding.fact("model", m);
    }
    Some(finding)
}

/// Events that end one another share a dedup key, so that "power returned" resolves "on
/// battery" in sinks that fold by key.
fn event_group(event: &str) -> &str {
    match event {
        "onbattery" | "offbattery" => "power",
        "commfailure" | "commok" => "comm",
        other => other,
    }
}

fn one_line_subject(subject: &str) -> String {
    herald_bridges::text::one_line(subject, super::MAX_LINE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::super::{classify, parse};

    const ONBATTERY: &[u8] = include_bytes!("../../tests/corpus/apcupsd/onbattery.eml");

    /// An unset UPS name leaves `UPS  Power Failure` (one blank once decoded); the body's
    /// `UPSNAME` still gives the key that `offbattery` will have.
    #[test]
    fn unnamed_ups_is_paired_by_the_body() {
        let raw = String::from_utf8_lossy(ONBATTERY).replace("UPS rack1-ups Power", "UPS  Power");
        let alert = classify(&parse(raw.as_bytes(), false));
        assert_eq!(alert.failed, Some(true));
        assert_eq!(alert.dedup_key, "apcupsd:rack1:rack1-ups:power");
    }
}
