//! `herald classify --explain`: what each rule made of a message ([`RuleTrace`]), and its two
//! renderings, JSON and text.
//!
//! Guarantees: one trace entry per rule, in order, including the rules never reached; the
//! actual values quoted are single lines of at most [`EXPLAIN_VALUE_CHARS`] characters; a
//! window condition (`during`, `not_during`) shows the wall-clock time it was tested at,
//! whether it failed or held. With `[trust]`, the trust walk's hops and verdict are shown too
//! ([`trust_json`], [`trust_text`]).

use std::fmt::Write as _;

use serde::Serialize;

use crate::classify::trust::Verdict;

/// How much of an actual value `--explain` quotes: enough to recognise it.
pub(super) const EXPLAIN_VALUE_CHARS: usize = 80;

/// What happened with one rule, for `herald classify --explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    /// The rule's name.
    pub rule: String,
    /// Whether all its conditions held.
    pub matched: bool,
    /// The first condition that failed (`kind: expected cron, got other`), or why the rule was
    /// not tried; `null` when it matched.
    pub failed: Option<String>,
    /// Whether the rule was tried at all: `false` once an earlier rule decided.
    pub reached: bool,
    /// The window conditions that held, up to the first that failed (`during night: yes (now
    /// 23:10 Wed Europe/Berlin)`): which time the rule saw. Left out of the JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<String>,
}

/// Adds `"explain": [...]` to a `classify --json` object.
pub fn explain_json(object: &mut serde_json::Value, trace: &[RuleTrace]) {
    if let serde_json::Value::Object(map) = object {
        map.insert("explain".into(), serde_json::json!(trace));
    }
}

/// The `classify --explain` text: one indented line per rule, the window conditions that held
/// after its outcome: `rule night-chat: matched; during night: yes (now 23:10 Wed UTC)`.
pub fn explain_text(trace: &[RuleTrace]) -> String {
    let mut out = String::new();
    for t in trace {
        let mut outcome = match (&t.failed, t.reached) {
            (None, _) => "matched".to_owned(),
            (Some(_), false) => "not reached".to_owned(),
            (Some(why), true) => format!("no match: {why}"),
        };
        for held in &t.windows {
            outcome.push_str("; ");
            outcome.push_str(held);
        }
        // Writing to a String cannot fail.
        let _ = writeln!(out, "    rule {}: {outcome}", t.rule);
    }
    out
}

/// Adds `"trust": {...}` (the walk's hops and verdict) to a `classify --json` object, when
/// there was a walk.
pub fn trust_json(object: &mut serde_json::Value, verdict: Option<&Verdict>) {
    if let (serde_json::Value::Object(map), Some(verdict)) = (object, verdict) {
        map.insert("trust".into(), serde_json::json!(verdict));
    }
}

/// The trust walk for `classify --explain`: one indented line per hop, then the verdict
/// (`    trust: hop 1 from 10.0.0.5: trusted network`); empty when there was no walk.
pub fn trust_text(verdict: Option<&Verdict>) -> String {
    let mut out = String::new();
    for line in verdict.map(Verdict::explain_lines).unwrap_or_default() {
        // Hosts come from mail: one line each, bounded.
        let line = herald_bridges::text::one_line(&line, 4 * EXPLAIN_VALUE_CHARS);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "    {line}");
    }
    out
}
