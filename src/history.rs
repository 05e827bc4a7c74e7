//! `herald alerts`: the recent alerts and what became of each, the first thing to look at
//! when "herald didn't tell me".
//!
//! Each alert shows what dispatch decided (notified, grouped for a digest, folded as a
//! repeat, resolved a problem, silenced, dropped by a rule, routed nowhere) and, for every
//! outbox row it has, the sink and the row's state. Notifications dispatch made itself
//! (reminders, digests, recoveries) are listed too, as `notice`. Text is one line per alert
//! (mail content cut and made one line, so a hostile subject cannot fake a line);
//! `--json` is one object per line.

use chrono::{DateTime, Local, SecondsFormat};
use herald_bridges::text::one_line;
use serde_json::{json, Value};

use crate::store::{Fate, Recent};

/// How many alerts `herald alerts` shows at most: the newest.
pub const LIMIT: usize = 1000;

fn local(at: i64) -> String {
    DateTime::from_timestamp_millis(at)
        .map(|t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

fn rfc3339(at: i64) -> String {
    DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The outbox rows, as `chat sent, sms:+1555… pending (2 attempts: HTTP 503)`.
fn deliveries(recent: &Recent) -> String {
    recent
        .deliveries
        .iter()
        .map(|(sink, target, state, attempts, error)| {
            let name = if target.is_empty() {
                sink.clone()
            } else {
                format!("{sink}:{target}")
            };
            let mut text = format!("{name} {state}");
            if *attempts > 1 || error.is_some() {
                text.push_str(&format!(" ({attempts} attempts"));
                if let Some(error) = error {
                    text.push_str(": ");
                    text.push_str(&one_line(error, 60));
                }
                text.push(')');
            }
            text
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What became of the alert, in words.
fn outcome(recent: &Recent) -> String {
    let sent = || {
        let rows = deliveries(recent);
        if rows.is_empty() {
            "no sink".to_owned()
        } else {
            rows
        }
    };
    match &recent.fate {
        None => "waiting for dispatch".into(),
        Some(Fate::Notified { digest: false, .. }) => format!("notified: {}", sent()),
        Some(Fate::Notified {
            group,
            digest: true,
        }) => {
            format!("notified in a digest of group {}", one_line(group, 60))
        }
        // Its rows came when the group notified with it alone: it went out after the wait.
        Some(Fate::Grouped { group, .. }) if !recent.deliveries.is_empty() => format!(
            "notified after waiting for group {}: {}",
            one_line(group, 60),
            sent()
        ),
        Some(Fate::Grouped { group, due_at }) => format!(
            "grouped in {} (its notification due {})",
            one_line(group, 60),
            local(*due_at)
        ),
        Some(Fate::Folded { problem, count }) => format!(
            "folded: repeat {count} of {} (a reminder comes at repeat_interval)",
            one_line(problem, 60)
        ),
        Some(Fate::Resolved { problem, notified }) => {
            if *notified {
                format!("resolved {}: {}", one_line(problem, 60), sent())
            } else {
                format!("resolved {} before it was notified", one_line(problem, 60))
            }
        }
        Some(Fate::Silenced { silences }) => format!(
            "silenced by {}",
            silences
                .iter()
                .map(|s| format!("silence {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(Fate::Dropped { rule }) => {
            format!("dropped by rule {}", rule.as_deref().unwrap_or("?"))
        }
        Some(Fate::Unrouted) => "routed nowhere (no rule with sinks, no [defaults] sinks)".into(),
        Some(Fate::Notice { group }) => {
            let what = if !recent.alert.digest.is_empty() {
                "digest"
            } else if recent.alert.resolve {
                "recovery"
            } else {
                "reminder"
            };
            format!("{what} for {}: {}", one_line(group, 60), sent())
        }
    }
}

/// The text listing: a header, then one line per alert.
pub fn text(recent: &[Recent]) -> String {
    let mut out = format!(
        "{:>6}  {:<19}  {:<8}  {:<10}  {:<40}  WHAT BECAME OF IT\n",
        "ID", "TIME", "SEVERITY", "KIND", "TITLE"
    );
    for r in recent {
        out.push_str(&format!(
            "{:>6}  {:<19}  {:<8}  {:<10}  {:<40}  {}\n",
            r.id,
            local(r.created_at),
            r.alert.severity.as_str(),
            r.alert.kind.as_str(),
            one_line(&r.alert.title, 40),
            outcome(r)
        ));
    }
    out.push_str(&format!("{} alerts\n", recent.len()));
    out
}

/// One JSON object for an alert (`--json`).
pub fn json(r: &Recent) -> Value {
    json!({
        "id": r.id,
        "time": rfc3339(r.created_at),
        "kind": r.alert.kind,
        "host": r.alert.host,
        "severity": r.alert.severity,
        "rule": r.alert.rule,
        "title": r.alert.title,
        "dedup_key": r.alert.dedup_key,
        "group_key": r.alert.group_key,
        "fate": r.fate,
        "outcome": outcome(r),
        "deliveries": r.deliveries.iter().map(|(sink, target, state, attempts, error)| json!({
            "sink": sink,
            "target": target,
            "state": state.as_str(),
            "attempts": attempts,
            "error": error,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use herald_bridges::Alert;

    use super::*;
    use crate::store::RowState;

    fn recent(fate: Option<Fate>) -> Recent {
        Recent {
            id: 7,
            created_at: 0,
            alert: Alert::sample(),
            fate,
            deliveries: vec![(
                "chat".into(),
                String::new(),
                RowState::Pending,
                2,
                Some("HTTP 503\nretry".into()),
            )],
        }
    }

    #[test]
    fn each_fate_says_what_became_of_the_alert() {
        let cases = [
            (None, "waiting for dispatch"),
            (
                Some(Fate::Notified {
                    group: "g".into(),
                    digest: false,
                }),
                "notified: chat pending (2 attempts: HTTP 503 retry)",
            ),
            (
                Some(Fate::Silenced {
                    silences: vec![3, 4],
                }),
                "silenced by silence 3, silence 4",
            ),
            (
                Some(Fate::Dropped {
                    rule: Some("noise".into()),
                }),
                "dropped by rule noise",
            ),
            (
                Some(Fate::Folded {
                    problem: "p".into(),
                    count: 5,
                }),
                "folded: repeat 5 of p",
            ),
        ];
        for (fate, expected) in cases {
            let said = outcome(&recent(fate));
            assert!(said.starts_with(expected), "{said:?} vs {expected:?}");
        }
    }

    #[test]
    fn a_hostile_title_stays_on_its_line() {
        let mut r = recent(None);
        r.alert.title = "ok\n     8  fake line".into();
        let out = text(&[r]);
        assert_eq!(out.lines().count(), 3, "{out}");
        let value = json(&recent(Some(Fate::Unrouted)));
        assert_eq!(value["fate"]["outcome"], "unrouted");
    }
}
