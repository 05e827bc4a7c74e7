//! The notice that announces a dead letter through the `[defaults] fallback` sink, so that
//! a delivery herald gave up on is never silent.

use herald_bridges::{Alert, Kind, Severity};

use crate::store::Due;

/// The alert that announces a dead letter through the fallback sink.
pub(super) fn dead_letter(sink: &str, row: &Due, reason: &str) -> Alert {
    let original = &row.alert;
    let mut facts = std::collections::BTreeMap::new();
    facts.insert("dead_sink".into(), serde_json::json!(sink));
    facts.insert("dead_row".into(), serde_json::json!(row.id));
    facts.insert("original_title".into(), serde_json::json!(original.title));
    facts.insert(
        "original_dedup_key".into(),
        serde_json::json!(original.dedup_key),
    );
    facts.insert("reason".into(), serde_json::json!(reason));
    Alert {
        message_id: None,
        kind: Kind::Other,
        host: original.host.clone(),
        user: None,
        command: None,
        failed: Some(true),
        exit_status: None,
        severity: Severity::Critical,
        rule: None,
        title: herald_bridges::text::truncate(
            &format!("herald could not deliver to {sink}: {}", original.title),
            300,
        ),
        summary: herald_bridges::text::truncate(reason, 500),
        dedup_key: format!("herald:dead-letter:{sink}:{}", original.dedup_key),
        facts,
        subject: String::new(),
        from: None,
        date: None,
        body: format!(
            "`herald outbox list` shows the row; `herald outbox retry {}` sends it again.",
            row.id
        ),
        truncated: false,
        account: None,
        mailbox: None,
        trusted: None,
        resolve: false,
        group_key: None,
        repeats: None,
        digest: Vec::new(),
        digest_more: 0,
    }
}
