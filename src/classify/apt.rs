//! Debian/Ubuntu package update mail: unattended-upgrades and apticron.
//!
//! unattended-upgrades (`unattended-upgrade`, `send_summary_mail`), two subject generations:
//! - 1.x/2.x: `[reboot required] [package on hold] unattended-upgrades result for HOST: SUCCESS`
//!   (or `FAILURE`); body starts `Unattended upgrade result: RESULT TEXT`.
//! - 0.x: `[reboot required] unattended-upgrades result for 'HOST': True` (or `'False'`);
//!   body starts `Unattended upgrade returned: True`.
//!
//! Body sections: `Warning: A reboot is required to complete this upgrade`, then
//! `Packages that were upgraded:` / `Packages that are upgraded:` / `Packages that attempted
//! to upgrade:` (names on the following indented line(s)), `Packages with upgradable origin
//! but kept back:`, `Packages that were auto-removed:`, `Package installation log:`,
//! `Unattended-upgrades log:`. Default severity: info on success, warning on failure.
//!
//! apticron (`/usr/sbin/apticron`): `Subject: N DISTRO package update(s) for HOST`, body
//! `apticron report [DATE]`, `apticron has detected that some packages need upgrading on:`,
//! then the FQDN and `[ IPs ]`, then `The following packages are currently pending an
//! upgrade:` with one `NAME VERSION` per line. Informational: default severity info.

use std::sync::LazyLock;

use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::text::block_after;
use super::{is_host_name, Finding, Message};

static UU_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^((?:\[[^\]]*\]\s*)*)unattended-upgrades result for '?([^':\s]+)'?:\s*'?(\w+)'?")
        .unwrap_or_else(|_| unreachable!())
});

static APTICRON_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\d+) (?:\S+ )?package update\(s\) for (\S+)").unwrap_or_else(|_| unreachable!())
});

/// The package list headings of unattended-upgrades' report, across versions.
const UPGRADED_HEADINGS: [&str; 3] = [
    "Packages that were upgraded:",
    "Packages that are upgraded:",
    "Packages that attempted to upgrade:",
];

/// Recognises an unattended-upgrades report.
pub(super) fn recognise_unattended_upgrades(message: &Message) -> Option<Finding> {
    let captures = UU_SUBJECT.captures(message.subject.trim())?;
    let flags = captures.get(1).map_or("", |m| m.as_str());
    let host = captures.get(2)?.as_str();
    let result = captures.get(3)?.as_str();
    let success = matches!(result.to_ascii_lowercase().as_str(), "success" | "true");
    let body = &message.body;
    let reboot = flags.contains("reboot required") || body.contains("A reboot is required");
    let on_hold = flags.contains("package on hold");
    let result_text = body.lines().map(str::trim).find_map(|l| {
        l.strip_prefix("Unattended upgrade result:")
            .or_else(|| l.strip_prefix("Unattended upgrade returned:"))
            .map(str::trim)
    });
    let packages: Vec<&str> = UPGRADED_HEADINGS
        .iter()
        .map(|h| block_after(body, h))
        .find(|b| !b.is_empty())
        .unwrap_or_default()
        .into_iter()
        .flat_map(str::split_whitespace)
        .collect();
    let kept_back: Vec<&str> = block_after(body, "kept back:")
        .into_iter()
        .flat_map(str::split_whitespace)
        .collect();
    let removed: Vec<&str> = block_after(body, "Packages that were auto-removed:")
        .into_iter()
        .flat_map(str::split_whitespace)
        .collect();
    let mut finding = Finding::new(
        Kind::UnattendedUpgrades,
        if success {
            Severity::Info
        } else {
            Severity::Warning
        },
    );
    let count = packages.len();
    let packages_text = packages.join(" ");
    finding.title = if success {
        format!("unattended-upgrades on {host}: {count} package(s) upgraded")
    } else {
        format!("unattended-upgrades on {host} failed")
    };
    if reboot {
        finding.title.push_str(" (reboot required)");
    }
    finding.summary = match result_text {
        // 0.x says only `True`/`False`; the package list says more.
        Some(r) if r.eq_ignore_ascii_case("true") && count > 0 => {
            format!("upgraded: {packages_text}")
        }
        Some(r) => r.to_owned(),
        None => super::summary_of(message),
    };
    finding.dedup_key = format!(
        "unattended-upgrades:{host}:{}",
        if success { "success" } else { "failure" }
    );
    finding.host = Some(host.to_owned());
    finding.failed = Some(!success);
    finding.fact("result", result);
    finding.flag("reboot_required", reboot);
    finding.flag("packages_on_hold", on_hold);
    finding.list("packages", packages);
    if !kept_back.is_empty() {
        finding.list("kept_back", kept_back);
    }
    if !removed.is_empty() {
        finding.list("removed", removed);
    }
    Some(finding)
}

/// Recognises an apticron report.
pub(super) fn recognise_apticron(message: &Message) -> Option<Finding> {
    let subject = APTICRON_SUBJECT.captures(message.subject.trim());
    let body = &message.body;
    let body_says = body.contains("apticron has detected that some packages need upgrading");
    if subject.is_none() && !body_says {
        return None;
    }
    let on = block_after(body, "need upgrading on:");
    let host = on
        .first()
        .copied()
        .filter(|h| is_host_name(h))
        .or_else(|| subject.as_ref().and_then(|c| c.get(2)).map(|m| m.as_str()))
        .unwrap_or_default()
        .to_owned();
    let addresses = on
        .get(1)
        .map(|l| l.trim_start_matches('[').trim_end_matches(']').trim())
        .unwrap_or_default();
    let pending = block_after(body, "currently pending an upgrade:");
    let names: Vec<&str> = pending
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let count = subject
        .as_ref()
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse::<i64>().ok())
        .unwrap_or_else(|| i64::try_from(names.len()).unwrap_or(i64::MAX));
    let mut finding = Finding::new(Kind::Apticron, Severity::Info);
    finding.title = format!("apticron: {count} package update(s) pending on {host}");
    finding.summary = if pending.is_empty() {
        super::summary_of(message)
    } else {
        pending.join(", ")
    };
    finding.dedup_key = format!("apticron:{host}");
    finding.host = (!host.is_empty()).then_some(host);
    finding.failed = Some(false);
    finding.number("count", count);
    finding.list("packages", names);
    finding.list("pending", pending);
    finding.fact("addresses", addresses);
    Some(finding)
}
