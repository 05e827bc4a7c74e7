//! [`SilenceStore`] on SQLite: the `silences` table (schema step 3).
//!
//! A silence is one row; its matchers are a JSON array of the strings the operator wrote, so
//! a later herald reads them with its own parser. Adding and expiring are the operator's
//! commands, made beside a running daemon: they are on the disk when they return
//! ([`Durability::Synced`]), and a daemon sees them on its next read. Expiring only moves
//! `ends_at`; the row, and its count of suppressed alerts, stay.

use async_trait::async_trait;
use rusqlite::params;

use super::{Durability, SqliteStore};
use crate::store::{Result, Silence, SilenceStore, StoreError};

/// A row as read, its matchers still JSON: they are decoded outside the store's lock.
type RawSilence = (i64, String, i64, i64, String, i64, u64);

#[async_trait]
impl SilenceStore for SqliteStore {
    async fn add_silence(&self, silence: Silence) -> Result<i64> {
        let matchers = serde_json::to_string(&silence.matchers)
            .map_err(|e| StoreError::backend("cannot encode a silence", e))?;
        self.run(
            "cannot store the silence",
            Durability::Synced,
            move |conn| {
                conn.execute(
                    "INSERT INTO silences (matchers, starts_at, ends_at, comment, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        matchers,
                        silence.starts_at,
                        silence.ends_at,
                        silence.comment,
                        silence.created_at
                    ],
                )?;
                Ok(conn.last_insert_rowid())
            },
        )
        .await
    }

    async fn silences(&self, active_at: Option<i64>) -> Result<Vec<Silence>> {
        let rows = self
            .run("cannot read the silences", Durability::Read, move |conn| {
                // `silences_active` (on `ends_at`) keeps the daemon's frequent read of the
                // active ones short however many expired silences have piled up.
                let mut stmt = conn.prepare_cached(
                    "SELECT id, matchers, starts_at, ends_at, comment, created_at, suppressed
                     FROM silences
                     WHERE ?1 IS NULL OR (ends_at > ?1 AND starts_at <= ?1)
                     ORDER BY id DESC",
                )?;
                let rows = stmt
                    .query_map([active_at], |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                            row.get(5)?,
                            row.get(6)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<RawSilence>>>();
                rows
            })
            .await?;
        rows.into_iter()
            .map(
                |(id, matchers, starts_at, ends_at, comment, created_at, suppressed)| {
                    let matchers = serde_json::from_str(&matchers).map_err(|e| {
                        StoreError::backend(
                            format!("silence {id} in the state database is unreadable"),
                            e,
                        )
                    })?;
                    Ok(Silence {
                        id,
                        matchers,
                        starts_at,
                        ends_at,
                        comment,
                        created_at,
                        suppressed,
                    })
                },
            )
            .collect()
    }

    async fn expire_silence(&self, id: i64, now: i64) -> Result<bool> {
        self.run(
            "cannot expire the silence",
            Durability::Synced,
            move |conn| {
                conn.execute(
                    "UPDATE silences SET ends_at = ?2 WHERE id = ?1 AND ends_at > ?2",
                    params![id, now],
                )
                .map(|n| n > 0)
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::store::testing::store;
    use crate::store::{open, Access, Silence};

    const HOUR: i64 = 3_600_000;

    fn silence(matchers: &[&str], starts_at: i64, ends_at: i64, comment: &str) -> Silence {
        Silence {
            id: 0,
            matchers: matchers.iter().map(|m| (*m).to_owned()).collect(),
            starts_at,
            ends_at,
            comment: comment.into(),
            created_at: starts_at,
            suppressed: 7,
        }
    }

    #[tokio::test]
    async fn silences_are_added_listed_newest_first_and_expired() {
        let (_dir, store) = store().await;
        let now = 1_000 * HOUR;
        let first = store
            .add_silence(silence(&["host=web*"], now, now + 2 * HOUR, "deploy"))
            .await
            .unwrap();
        let second = store
            .add_silence(silence(
                &["kind=cron", "subject~(?i)disk"],
                now,
                now + HOUR,
                "",
            ))
            .await
            .unwrap();
        assert_ne!(first, second);

        let all = store.silences(None).await.unwrap();
        assert_eq!(
            all.iter().map(|s| s.id).collect::<Vec<_>>(),
            [second, first]
        );
        assert_eq!(
            all[1],
            Silence {
                id: first,
                suppressed: 0,
                ..silence(&["host=web*"], now, now + 2 * HOUR, "deploy")
            },
            "stored as given, and counting from zero"
        );
        assert_eq!(all[0].matchers, ["kind=cron", "subject~(?i)disk"]);

        let active = |at| {
            let store = store.clone();
            async move {
                store
                    .silences(Some(at))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| s.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(active(now).await, [second, first]);
        assert_eq!(active(now - 1).await, [0; 0], "not yet started");
        assert_eq!(active(now + HOUR).await, [first], "ends_at is exclusive");

        assert!(store.expire_silence(first, now + 10).await.unwrap());
        assert_eq!(active(now + 10).await, [second]);
        assert!(
            !store.expire_silence(first, now + 20).await.unwrap(),
            "already expired"
        );
        assert!(
            !store.expire_silence(second, now + HOUR).await.unwrap(),
            "already over by itself"
        );
        assert!(!store.expire_silence(999, now).await.unwrap(), "no such id");
        let expired = store.silences(None).await.unwrap();
        assert_eq!(expired.len(), 2, "expired silences are kept");
        assert_eq!(expired[1].ends_at, now + 10);
    }

    async fn open_at(path: &Path, access: Access) -> std::sync::Arc<dyn crate::store::Store> {
        open(path.to_owned(), access).await.unwrap()
    }

    #[tokio::test]
    async fn the_operator_adds_and_expires_beside_a_running_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let daemon = open_at(&path, Access::Daemon).await;
        let admin = open_at(&path, Access::Admin).await;
        let reader = open_at(&path, Access::ReadOnly).await;
        let id = admin
            .add_silence(silence(&["user=root"], 0, i64::MAX, "maintenance"))
            .await
            .unwrap();
        assert_eq!(daemon.silences(Some(1)).await.unwrap()[0].id, id);
        assert_eq!(
            reader.silences(None).await.unwrap()[0].comment,
            "maintenance"
        );
        assert!(admin.expire_silence(id, 5).await.unwrap());
        assert!(daemon.silences(Some(5)).await.unwrap().is_empty());
        assert!(
            reader
                .add_silence(silence(&["user=root"], 0, 1, ""))
                .await
                .is_err(),
            "a read-only store writes nothing"
        );
    }

    #[tokio::test]
    async fn an_unreadable_row_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let store = open_at(&path, Access::Daemon).await;
        let id = store
            .add_silence(silence(&["user=root"], 0, 10, ""))
            .await
            .unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE silences SET matchers = 'not json'", [])
            .unwrap();
        let error = store.silences(None).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("silence {id} in the state database is unreadable")
        );
    }
}
