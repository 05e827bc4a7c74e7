//! What the chat and paging sinks show of an alert, shared so that every sink shows the same
//! facts in the same order and no sink re-invents the selection.
//!
//! Everything here is plain, unescaped text straight from the alert (hostile): each sink
//! escapes and cuts it for its medium. The order is the order of usefulness, so a sink that
//! must cut from the end keeps the most useful part.

use crate::Alert;

/// How many body lines an excerpt keeps: enough to show a cron job's error, few enough for a
/// chat message.
pub const EXCERPT_LINES: usize = 20;

/// The labelled facts of an alert, most useful first; absent ones are left out.
pub fn fields(alert: &Alert) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    if let Some(host) = &alert.host {
        fields.push(("Host", host.clone()));
    }
    if let Some(user) = &alert.user {
        fields.push(("User", user.clone()));
    }
    if let Some(command) = &alert.command {
        fields.push(("Command", command.clone()));
    }
    if let Some(status) = alert.exit_status {
        fields.push(("Exit status", status.to_string()));
    }
    fields.push(("Kind", alert.kind.as_str().to_owned()));
    if let Some(rule) = &alert.rule {
        fields.push(("Rule", rule.clone()));
    }
    // On one line, and none left empty: a value of nothing but control characters (hostile
    // mail) would otherwise become an empty field, which Discord and Slack reject.
    fields
        .into_iter()
        .map(|(name, value)| (name, crate::text::one_line(&value, usize::MAX)))
        .filter(|(_, value)| !value.is_empty())
        .collect()
}

/// `CRITICAL`, `WARNING`, `INFO`.
pub fn severity_label(alert: &Alert) -> String {
    alert.severity.as_str().to_uppercase()
}

/// The start of the body as lines for a code block (see [`crate::text::first_lines`]), with a
/// note when herald itself fetched only part of the message.
pub fn excerpt(alert: &Alert) -> String {
    let mut text = crate::text::first_lines(&alert.body, EXCERPT_LINES);
    if alert.truncated {
        text.push_str("\n[message truncated]");
    }
    text
}
