//! Dispatch's half of the SQLite store: undispatched alerts, the problems and groups state,
//! and the one transaction that commits a dispatch pass.
//!
//! A pass reads its state, decides in memory, and commits; it is never interleaved with
//! another pass, because one dispatcher owns the state (SQLite has one writer process, and
//! the daemon one dispatch task). The commit still checks that each alert it decides is
//! undispatched, so that a pass decided twice (a replay after an error) changes nothing.

use std::collections::BTreeSet;

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::{decode, insert_alert, priority, Durability, Encoded, SqliteStore};
use crate::store::{
    now_ms, Alert, Decisions, DispatchStore, Group, Payload, Problem, Result, Routed, State,
    StoreError, Undispatched,
};

const PROBLEM_COLUMNS: &str = "dedup_key, group_id, open, first_at, last_at, notified_at, folded,
     folded_since, remind_at, expire_at, pending, alert_id, sinks";

fn problem(row: &rusqlite::Row<'_>) -> rusqlite::Result<Read> {
    let problem = Problem {
        dedup_key: row.get(0)?,
        group_id: row.get(1)?,
        open: row.get(2)?,
        first_at: row.get(3)?,
        last_at: row.get(4)?,
        notified_at: row.get(5)?,
        folded: row.get(6)?,
        folded_since: row.get(7)?,
        remind_at: row.get(8)?,
        expire_at: row.get(9)?,
        pending: row.get(10)?,
        alert_id: row.get(11)?,
        sinks: Vec::new(),
    };
    Ok((problem, row.get(12)?))
}

fn group(row: &rusqlite::Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        id: row.get(0)?,
        key: row.get(1)?,
        notified_at: row.get(2)?,
        flush_at: row.get(3)?,
    })
}

/// `(?, ?, …)` for `n` values.
fn placeholders(n: usize) -> String {
    let mut list = "?,".repeat(n);
    list.pop();
    format!("({list})")
}

/// A problem as read, with its sinks still JSON (decoded outside the store's lock).
type Read = (Problem, String);

/// The groups `ids` and all their problems, plus `problems` already read.
fn read_groups(
    conn: &Connection,
    mut ids: BTreeSet<String>,
    mut problems: Vec<Read>,
) -> rusqlite::Result<(Vec<Read>, Vec<Group>)> {
    ids.extend(problems.iter().map(|(p, _)| p.group_id.clone()));
    let mut groups = Vec::new();
    if ids.is_empty() {
        return Ok((problems, groups));
    }
    let list = placeholders(ids.len());
    let mut stmt = conn.prepare(&format!(
        "SELECT id, key, notified_at, flush_at FROM groups WHERE id IN {list}"
    ))?;
    groups.extend(
        stmt.query_map(params_from_iter(&ids), group)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    );
    let known: BTreeSet<String> = problems.iter().map(|(p, _)| p.dedup_key.clone()).collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT {PROBLEM_COLUMNS} FROM problems WHERE group_id IN {list}"
    ))?;
    for found in stmt.query_map(params_from_iter(&ids), problem)? {
        let found = found?;
        if !known.contains(&found.0.dedup_key) {
            problems.push(found);
        }
    }
    Ok((problems, groups))
}

/// Decodes the problems' sink lists (outside the store's lock).
fn finish(read: (Vec<Read>, Vec<Group>)) -> Result<State> {
    let (problems, groups) = read;
    let problems = problems
        .into_iter()
        .map(|(mut p, sinks)| {
            p.sinks = serde_json::from_str(&sinks).map_err(|e| {
                StoreError::backend(
                    format!(
                        "problem {:?} in the state database is unreadable",
                        p.dedup_key
                    ),
                    e,
                )
            })?;
            Ok(p)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(State { problems, groups })
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::backend("cannot encode dispatch state", e))
}

/// A payload as written: the stored alert's new JSON, or a new alert and its fate.
enum Written {
    Stored(i64, Option<String>),
    New(Encoded, String),
}

#[async_trait]
impl DispatchStore for SqliteStore {
    async fn undispatched(&self, limit: usize) -> Result<Vec<Undispatched>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .run("cannot read undispatched alerts", Durability::Read, move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, alert, sinks FROM alerts WHERE dispatched_at IS NULL ORDER BY id LIMIT ?1",
                )?;
                let rows = stmt
                    .query_map([limit], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>();
                rows
            })
            .await?;
        rows.into_iter()
            .map(|(id, alert, sinks)| {
                Ok(Undispatched {
                    id,
                    routed: Routed {
                        alert: decode(id, &alert)?,
                        sinks: decode(id, &sinks)?,
                    },
                })
            })
            .collect()
    }

    async fn state(&self, dedup_keys: Vec<String>, groups: Vec<String>) -> Result<State> {
        let read = self
            .run(
                "cannot read dispatch state",
                Durability::Read,
                move |conn| {
                    let mut problems = Vec::new();
                    {
                        let mut stmt = conn.prepare_cached(&format!(
                            "SELECT {PROBLEM_COLUMNS} FROM problems WHERE dedup_key = ?1"
                        ))?;
                        for key in dedup_keys {
                            if let Some(found) = stmt.query_row([key], problem).optional()? {
                                problems.push(found);
                            }
                        }
                    }
                    read_groups(conn, groups.into_iter().collect(), problems)
                },
            )
            .await?;
        finish(read)
    }

    async fn due(&self, now: i64) -> Result<State> {
        let read = self
            .run(
                "cannot read dispatch timers",
                Durability::Read,
                move |conn| {
                    let ids = conn
                        .prepare_cached(
                            "SELECT id FROM groups WHERE flush_at IS NOT NULL AND flush_at <= ?1",
                        )?
                        .query_map([now], |row| row.get::<_, String>(0))?
                        .collect::<rusqlite::Result<BTreeSet<_>>>()?;
                    let problems = conn
                        .prepare_cached(&format!(
                            "SELECT {PROBLEM_COLUMNS} FROM problems
                         WHERE (folded > 0 AND remind_at <= ?1) OR expire_at <= ?1"
                        ))?
                        .query_map([now], problem)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    read_groups(conn, ids, problems)
                },
            )
            .await?;
        finish(read)
    }

    async fn next_timer(&self) -> Result<Option<i64>> {
        self.run("cannot read dispatch timers", Durability::Read, |conn| {
            conn.query_row(
                "SELECT min(t) FROM (
                     SELECT min(flush_at) AS t FROM groups WHERE flush_at IS NOT NULL
                     UNION ALL SELECT min(remind_at) FROM problems WHERE folded > 0
                     UNION ALL SELECT min(expire_at) FROM problems)",
                [],
                |row| row.get(0),
            )
        })
        .await
    }

    async fn alerts(&self, ids: Vec<i64>) -> Result<Vec<(i64, Alert)>> {
        let rows = self
            .run("cannot read alerts", Durability::Read, move |conn| {
                let mut stmt = conn.prepare_cached("SELECT alert FROM alerts WHERE id = ?1")?;
                let mut rows = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(json) = stmt
                        .query_row([id], |row| row.get::<_, String>(0))
                        .optional()?
                    {
                        rows.push((id, json));
                    }
                }
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(id, json)| Ok((id, decode(id, &json)?)))
            .collect()
    }

    async fn dispatch(&self, decisions: Decisions) -> Result<bool> {
        let Decisions {
            decided,
            notifications,
            problems,
            closed,
            groups,
            ended,
            suppressed,
        } = decisions;
        // JSON is made here, outside the store's lock.
        let decided = decided
            .into_iter()
            .map(|(id, fate)| Ok((id, encode(&fate)?)))
            .collect::<Result<Vec<_>>>()?;
        let notifications = notifications
            .into_iter()
            .map(|n| {
                let written = match n.payload {
                    Payload::Stored { id, rewrite } => {
                        Written::Stored(id, rewrite.as_ref().map(encode).transpose()?)
                    }
                    Payload::New(alert) => {
                        let fate = crate::store::Fate::Notice {
                            group: alert.group_key.clone().unwrap_or_default(),
                        };
                        let encoded = Encoded::of(&Routed {
                            alert,
                            sinks: Vec::new(),
                        })?;
                        Written::New(encoded, encode(&fate)?)
                    }
                };
                Ok((written, priority(n.severity), n.destinations))
            })
            .collect::<Result<Vec<_>>>()?;
        let problems = problems
            .into_iter()
            .map(|p| {
                let sinks = encode(&p.sinks)?;
                Ok((p, sinks))
            })
            .collect::<Result<Vec<_>>>()?;
        self.run("cannot commit dispatched alerts", Durability::Crash, move |conn| {
            let tx = conn.transaction()?;
            let now = now_ms();
            {
                let mut done = tx.prepare_cached(
                    "UPDATE alerts SET dispatched_at = ?2, fate = ?3 WHERE id = ?1 AND dispatched_at IS NULL",
                )?;
                for (id, fate) in &decided {
                    // Only alerts this pass moves out of "undispatched": a pass decided twice
                    // rolls back whole, so it never doubles a row or a count.
                    if done.execute(params![id, now, fate])? == 0 {
                        return Ok(false);
                    }
                }
                let mut rewrite = tx.prepare_cached("UPDATE alerts SET alert = ?2 WHERE id = ?1")?;
                let mut insert_row = tx.prepare_cached(
                    "INSERT INTO outbox (alert_id, sink, target, state, priority, next_attempt_at, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?5, ?5)",
                )?;
                for (written, priority, destinations) in &notifications {
                    let alert_id = match written {
                        Written::Stored(id, json) => {
                            if let Some(json) = json {
                                rewrite.execute(params![id, json])?;
                            }
                            *id
                        }
                        Written::New(encoded, fate) => {
                            let Some(id) = insert_alert(&tx, None, None, encoded, now)? else {
                                continue;
                            };
                            tx.execute(
                                "UPDATE alerts SET dispatched_at = ?2, fate = ?3 WHERE id = ?1",
                                params![id, now, fate],
                            )?;
                            id
                        }
                    };
                    for d in destinations {
                        insert_row.execute(params![alert_id, d.sink, d.target, priority, now])?;
                    }
                }
                let mut upsert = tx.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO problems ({PROBLEM_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ))?;
                for (p, sinks) in &problems {
                    upsert.execute(params![
                        p.dedup_key,
                        p.group_id,
                        p.open,
                        p.first_at,
                        p.last_at,
                        p.notified_at,
                        p.folded,
                        p.folded_since,
                        p.remind_at,
                        p.expire_at,
                        p.pending,
                        p.alert_id,
                        sinks
                    ])?;
                }
                let mut close = tx.prepare_cached("DELETE FROM problems WHERE dedup_key = ?1")?;
                for key in &closed {
                    close.execute([key])?;
                }
                let mut upsert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO groups (id, key, notified_at, flush_at) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for g in &groups {
                    upsert.execute(params![g.id, g.key, g.notified_at, g.flush_at])?;
                }
                let mut end = tx.prepare_cached("DELETE FROM groups WHERE id = ?1")?;
                for id in &ended {
                    end.execute([id])?;
                }
                let mut count = tx.prepare_cached(
                    "UPDATE silences SET suppressed = suppressed + ?2 WHERE id = ?1",
                )?;
                for (id, n) in &suppressed {
                    count.execute(params![id, n])?;
                }
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}
