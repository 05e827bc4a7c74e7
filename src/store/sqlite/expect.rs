//! Expectations in SQLite: their states, and the raise that stores a `missing` alert.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Transaction};

use super::{insert_alert, Durability, Encoded, SqliteStore};
use crate::store::{now_ms, ExpectStore, Expected, Result, Routed, Sighting};

/// Records `sightings` in `tx` (part of an ingest commit): each expectation seen now, its
/// next expected time moved on, and, if it was missing, its recovery alert stored.
pub(super) fn record_sightings(
    tx: &Transaction<'_>,
    sightings: &[(Sighting, Option<Encoded>)],
    now: i64,
) -> rusqlite::Result<()> {
    for (sighting, recovery) in sightings {
        let missing: Option<Option<i64>> = tx
            .query_row(
                "SELECT missing_since FROM expectations WHERE name = ?1",
                [&sighting.name],
                |row| row.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT INTO expectations (name, timing, started_at, last_seen, expected_at)
             VALUES (?1, ?2, ?3, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET timing = excluded.timing, last_seen = excluded.last_seen,
                 expected_at = excluded.expected_at, missing_since = NULL",
            params![sighting.name, sighting.timing, now, sighting.next],
        )?;
        if let (Some(Some(_)), Some(recovery)) = (missing, recovery) {
            insert_alert(tx, None, None, recovery, now)?;
        }
    }
    Ok(())
}

fn expected(row: &rusqlite::Row<'_>) -> rusqlite::Result<Expected> {
    Ok(Expected {
        name: row.get(0)?,
        timing: row.get(1)?,
        started_at: row.get(2)?,
        last_seen: row.get(3)?,
        expected_at: row.get(4)?,
        missing_since: row.get(5)?,
    })
}

#[async_trait]
impl ExpectStore for SqliteStore {
    async fn expected(&self) -> Result<Vec<Expected>> {
        self.run("cannot read expectations", Durability::Read, |conn| {
            conn.prepare_cached(
                "SELECT name, timing, started_at, last_seen, expected_at, missing_since
                 FROM expectations ORDER BY name",
            )?
            .query_map([], expected)?
            .collect()
        })
        .await
    }

    async fn track(&self, rows: Vec<Expected>) -> Result<()> {
        self.run(
            "cannot store expectations",
            Durability::Synced,
            move |conn| {
                let tx = conn.transaction()?;
                {
                    let mut upsert = tx.prepare_cached(
                        "INSERT OR REPLACE INTO expectations
                     (name, timing, started_at, last_seen, expected_at, missing_since)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for r in &rows {
                        upsert.execute(params![
                            r.name,
                            r.timing,
                            r.started_at,
                            r.last_seen,
                            r.expected_at,
                            r.missing_since
                        ])?;
                    }
                }
                tx.commit()
            },
        )
        .await
    }

    async fn raise(
        &self,
        name: &str,
        expected_at: i64,
        next: i64,
        now: i64,
        alert: Option<Routed>,
    ) -> Result<bool> {
        let name = name.to_owned();
        let alert = alert.as_ref().map(Encoded::of).transpose()?;
        self.run("cannot raise a missing alert", Durability::Synced, move |conn| {
            let tx = conn.transaction()?;
            let moved = tx.execute(
                "UPDATE expectations SET expected_at = ?3, missing_since = coalesce(missing_since, ?4)
                 WHERE name = ?1 AND expected_at = ?2",
                params![name, expected_at, next, now],
            )?;
            if moved == 0 {
                return Ok(false);
            }
            if let Some(alert) = &alert {
                insert_alert(&tx, None, None, alert, now_ms())?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}
