//! Logwatch reports.
//!
//! Format, from logwatch.pl: `Subject: Logwatch for HOST (OS)` (the `$Config{'subject'}`
//! default, `Logwatch for $Config{'hostname'} ($OSname)`), body:
//!
//! ```text
//!  ################### Logwatch 7.5.6 (07/23/21) ####################
//!         Processing Initiated: Tue Nov 24 06:25:02 2026
//!         Date Range Processed: yesterday
//!                               ( 2026-Nov-23 )
//!                               Period is day.
//!         Detail Level of Output: 0
//!         Type of Output/Format: mail / text
//!         Logfiles for Host: web01
//!  ##################################################################
//!
//!  --------------------- SSHD Begin ------------------------
//! ```
//!
//! A digest, not an event: failed false, default severity info. HTML output
//! (`--format html`) is made text by `parse` first.

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::text::field;
use super::{is_host_name, Finding, Message};

static SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Logwatch for (\S+)(?: \(([^)]*)\))?").unwrap_or_else(|_| unreachable!())
});

static SECTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-+ (.+?) Begin -+$").unwrap_or_else(|_| unreachable!()));

static VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"#+ Logwatch (\S+)").unwrap_or_else(|_| unreachable!()));

/// Recognises a Logwatch report.
pub(super) fn recognise(message: &Message) -> Option<Finding> {
    let captures = SUBJECT.captures(message.subject.trim())?;
    let subject_host = captures.get(1)?.as_str();
    let os = captures.get(2).map(|m| m.as_str());
    let body = &message.body;
    let host = field(body, "Logfiles for Host")
        .filter(|h| is_host_name(h))
        .unwrap_or(subject_host)
        .to_owned();
    let range = field(body, "Date Range Processed");
    let sections: Vec<&str> = body
        .lines()
        .filter_map(|l| SECTION.captures(l.trim()))
        .filter_map(|c| c.get(1))
        .map(|m| m.as_str())
        .collect();
    let mut finding = Finding::new(Kind::Logwatch, Severity::Info);
    finding.title = format!("Logwatch report for {host}");
    finding.summary = if sections.is_empty() {
        format!("Logwatch for {host}: no sections")
    } else {
        format!("sections: {}", sections.join(", "))
    };
    finding.dedup_key = format!("logwatch:{host}");
    finding.host = Some(host);
    finding.failed = Some(false);
    if let Some(os) = os {
        finding.fact("os", os);
    }
    if let Some(range) = range {
        finding.fact("date_range", range);
    }
    if let Some(v) = VERSION.captures(body).and_then(|c| c.get(1)) {
        finding.fact("version", v.as_str());
    }
    finding.list("sections", sections);
    Some(finding)
}
