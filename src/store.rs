//! The state store: SQLite in WAL mode with `synchronous = FULL`, so a commit is on disk
//! when it returns.
//!
//! It holds three things:
//! - `mailboxes`: per mailbox, its UIDVALIDITY and the highest UID processed (the cursor);
//! - `alerts` and `outbox`: each stored alert and one outbox row per (sink, target), in state
//!   `pending` → `sending` (claimed by the sink's worker) → `sent`, or back to `pending` after
//!   a failed attempt, or `dead` when the sink rejected it for good or it grew too old. Rows
//!   left `sending` by a crash return to `pending` when the store is opened;
//! - each alert's content key (its Message-ID, else a hash of its header block), so that mail
//!   seen again under new UIDs (a recreated mailbox, a restored backup) alerts only once;
//! - `imap_marks`: messages whose alert is stored but that are not yet marked processed on
//!   the server (flagged, moved or deleted);
//! - `backlog`: messages at or below the cursor still to be processed — the recent unseen
//!   mail found at a first start, when the cursor jumps to the end of the mailbox at once.
//!
//! The ordering rule: one transaction stores a fetched batch's alerts, their outbox rows,
//! their pending marks and the advanced cursor. Only after it commits does the mailbox touch
//! the server, and it clears a mark only after the server confirmed it. A crash anywhere
//! therefore loses nothing: uncommitted messages are above the cursor and are fetched again;
//! committed ones are in the outbox; unconfirmed marks are retried on the next connection.
//! A delivery is marked `sent` only after its sink confirmed it, so at worst a delivery in
//! flight at a crash is repeated.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use herald_bridges::Alert;
use rusqlite::{params, Connection, OptionalExtension};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mailboxes (
    name        TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    last_uid    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id          INTEGER PRIMARY KEY,
    mailbox     TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    message_id  TEXT,
    content_key TEXT,
    created_at  INTEGER NOT NULL,
    alert       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY,
    alert_id        INTEGER NOT NULL REFERENCES alerts (id),
    sink            TEXT NOT NULL,
    target          TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_alert ON outbox (alert_id);
-- What makes a message the same message: UIDs are reused after a restore and renumbered when
-- a mailbox is recreated, its content key is not.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_content ON alerts (content_key);
CREATE TABLE IF NOT EXISTS backlog (
    mailbox     TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    PRIMARY KEY (mailbox, uidvalidity, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imap_marks (
    mailbox     TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    PRIMARY KEY (mailbox, uidvalidity, uid)
) WITHOUT ROWID;
";

/// Milliseconds since the Unix epoch: the store's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A mailbox's position: which UIDVALIDITY the cursor belongs to, and the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The mailbox's UIDVALIDITY when the cursor was stored.
    pub uidvalidity: u32,
    /// The highest UID processed; every message up to it has its alert stored.
    pub last_uid: u32,
}

/// One delivery destination: a sink, and one of its targets (see `Sink::targets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The sink's name.
    pub sink: String,
    /// The target within the sink (`""` for single-target sinks).
    pub target: String,
}

/// One processed message of a batch.
#[derive(Debug, Clone)]
pub struct Processed<'a> {
    /// Its UID.
    pub uid: u32,
    /// Its content key: a message already stored under this key is not stored again.
    pub content_key: &'a str,
    /// Its alert and destinations; `None` when a rule dropped it or no sink was configured.
    pub delivery: Option<(&'a Alert, &'a [Destination])>,
}

/// An outbox row due for delivery.
#[derive(Debug, Clone)]
pub struct Due {
    /// The row's id.
    pub id: i64,
    /// The sink's target for this row.
    pub target: String,
    /// When the alert was stored (ms since the epoch), for `max_age`.
    pub created_at: i64,
    /// The alert to deliver.
    pub alert: Alert,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// An outbox row as `herald outbox list` shows it.
#[derive(Debug, Clone)]
pub struct Row {
    /// The row's id (what `outbox retry` and `outbox drop` take).
    pub id: i64,
    /// The sink.
    pub sink: String,
    /// The sink's target (`""` for single-target sinks).
    pub target: String,
    /// `pending`, `sending` or `dead`.
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (ms).
    pub next_attempt_at: i64,
    /// When the alert was stored (ms).
    pub created_at: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The alert's title.
    pub title: String,
}

/// The store. One connection, shared behind a mutex: every operation is a short statement or
/// transaction, and SQLite serialises writers anyway.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open state database {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 1 MiB of page cache instead of SQLite's 2 MiB default: the hot pages are the outbox
        // index and the newest alerts, and herald's whole footprint is meant to stay ~10 MB.
        conn.pragma_update(None, "cache_size", -1024)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("cannot create the schema in {}", path.display()))?;
        // A crash leaves the rows it was delivering `sending`: they were not confirmed.
        conn.execute(
            "UPDATE outbox SET state = 'pending' WHERE state = 'sending'",
            [],
        )
        .context("cannot recover the outbox")?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half-applied (SQLite
        // rolls back an unfinished one), so a poisoned lock is safe to keep using.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The stored cursor of `mailbox`.
    pub fn cursor(&self, mailbox: &str) -> Result<Option<Cursor>> {
        let conn = self.conn();
        conn.query_row(
            "SELECT uidvalidity, last_uid FROM mailboxes WHERE name = ?1",
            [mailbox],
            |row| {
                Ok(Cursor {
                    uidvalidity: row.get(0)?,
                    last_uid: row.get(1)?,
                })
            },
        )
        .optional()
        .context("cannot read the mailbox cursor")
    }

    /// Stores a batch in one transaction: each message's alert and outbox rows, a pending
    /// mark for each message when `mark` is set, and the cursor moved to `cursor`. Returns the
    /// sinks that got new rows, and the UIDs whose content key was already stored (mail seen
    /// before, under other UIDs or by an earlier run), which got none.
    pub fn commit_batch(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        batch: &[Processed<'_>],
        cursor: u32,
        mark: bool,
    ) -> Result<(Vec<String>, Vec<u32>)> {
        let mut conn = self.conn();
        let mut known = Vec::new();
        let tx = conn.transaction()?;
        let now = now_ms();
        let mut touched: Vec<String> = Vec::new();
        {
            let mut insert_alert = tx.prepare_cached(
                "INSERT INTO alerts (mailbox, uidvalidity, uid, message_id, content_key, created_at, alert)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (content_key) DO NOTHING",
            )?;
            let mut insert_row = tx.prepare_cached(
                "INSERT INTO outbox (alert_id, sink, target, state, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?4)",
            )?;
            let mut insert_mark = tx.prepare_cached(
                "INSERT OR IGNORE INTO imap_marks (mailbox, uidvalidity, uid) VALUES (?1, ?2, ?3)",
            )?;
            let mut done = tx.prepare_cached(
                "DELETE FROM backlog WHERE mailbox = ?1 AND uidvalidity = ?2 AND uid = ?3",
            )?;
            for item in batch {
                done.execute(params![mailbox, uidvalidity, item.uid])?;
                if mark {
                    insert_mark.execute(params![mailbox, uidvalidity, item.uid])?;
                }
                let Some((alert, destinations)) = item.delivery else {
                    continue;
                };
                let json = serde_json::to_string(alert)?;
                let inserted = insert_alert.execute(params![
                    mailbox,
                    uidvalidity,
                    item.uid,
                    alert.message_id,
                    item.content_key,
                    now,
                    json
                ])?;
                if inserted == 0 {
                    known.push(item.uid);
                    continue;
                }
                let alert_id = tx.last_insert_rowid();
                for d in destinations {
                    insert_row.execute(params![alert_id, d.sink, d.target, now])?;
                    if !touched.contains(&d.sink) {
                        touched.push(d.sink.clone());
                    }
                }
            }
        }
        tx.execute(
            "INSERT INTO mailboxes (name, uidvalidity, last_uid) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET uidvalidity = excluded.uidvalidity,
                 last_uid = max(excluded.last_uid,
                                CASE WHEN mailboxes.uidvalidity = excluded.uidvalidity
                                     THEN mailboxes.last_uid ELSE 0 END)",
            params![mailbox, uidvalidity, cursor],
        )?;
        tx.commit().context("cannot commit to the state database")?;
        Ok((touched, known))
    }

    /// Records a first start (or a new UIDVALIDITY): the cursor jumps to `last` and `recent`
    /// are the UIDs still to process. One transaction, so a crash leaves either the old state
    /// (the baseline is taken again) or the new one.
    pub fn record_baseline(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        last: u32,
        recent: &[u32],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO mailboxes (name, uidvalidity, last_uid) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET uidvalidity = excluded.uidvalidity,
                 last_uid = excluded.last_uid",
            params![mailbox, uidvalidity, last],
        )?;
        tx.execute("DELETE FROM backlog WHERE mailbox = ?1", [mailbox])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO backlog (mailbox, uidvalidity, uid) VALUES (?1, ?2, ?3)",
            )?;
            for uid in recent {
                insert.execute(params![mailbox, uidvalidity, uid])?;
            }
        }
        tx.commit().context("cannot commit to the state database")?;
        Ok(())
    }

    /// Up to `limit` backlog UIDs, lowest first.
    pub fn backlog(&self, mailbox: &str, uidvalidity: u32, limit: usize) -> Result<Vec<u32>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT uid FROM backlog WHERE mailbox = ?1 AND uidvalidity = ?2 ORDER BY uid LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let uids = stmt
            .query_map(params![mailbox, uidvalidity, limit], |row| row.get(0))?
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(uids)
    }

    /// Removes backlog UIDs that turned out to be gone from the server.
    pub fn finish_backlog(&self, mailbox: &str, uidvalidity: u32, uids: &[u32]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare_cached(
                "DELETE FROM backlog WHERE mailbox = ?1 AND uidvalidity = ?2 AND uid = ?3",
            )?;
            for uid in uids {
                delete.execute(params![mailbox, uidvalidity, uid])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// UIDs whose alert is stored but that are not yet marked processed on the server.
    pub fn pending_marks(&self, mailbox: &str, uidvalidity: u32) -> Result<Vec<u32>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT uid FROM imap_marks WHERE mailbox = ?1 AND uidvalidity = ?2 ORDER BY uid",
        )?;
        let uids = stmt
            .query_map(params![mailbox, uidvalidity], |row| row.get(0))?
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(uids)
    }

    /// Forgets marks the server confirmed; marks of an older UIDVALIDITY are dropped too,
    /// since their UIDs no longer name anything.
    pub fn clear_marks(&self, mailbox: &str, uidvalidity: u32, uids: &[u32]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare_cached(
                "DELETE FROM imap_marks WHERE mailbox = ?1 AND uidvalidity = ?2 AND uid = ?3",
            )?;
            for uid in uids {
                delete.execute(params![mailbox, uidvalidity, uid])?;
            }
        }
        tx.execute(
            "DELETE FROM imap_marks WHERE mailbox = ?1 AND uidvalidity <> ?2",
            params![mailbox, uidvalidity],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Claims up to `limit` pending rows of `sink` due at `now`, oldest first: they become
    /// `sending` until marked sent, retried, dead or released.
    pub fn claim(&self, sink: &str, now: i64, limit: usize) -> Result<Vec<Due>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let rows = {
            let mut stmt = tx.prepare_cached(
                "SELECT o.id, o.target, a.created_at, a.alert, o.attempts
                 FROM outbox o JOIN alerts a ON a.id = o.alert_id
                 WHERE o.sink = ?1 AND o.state = 'pending' AND o.next_attempt_at <= ?2
                 ORDER BY o.next_attempt_at, o.id LIMIT ?3",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(params![sink, now, limit], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get::<_, String>(3)?,
                        row.get(4)?,
                    ))
                })?
                .collect::<Result<Vec<(i64, String, i64, String, u32)>, _>>()?;
            let mut claim =
                tx.prepare_cached("UPDATE outbox SET state = 'sending' WHERE id = ?1")?;
            for (id, ..) in &rows {
                claim.execute([id])?;
            }
            rows
        };
        tx.commit()?;
        rows.into_iter()
            .map(|(id, target, created_at, json, attempts)| {
                let alert = serde_json::from_str(&json)
                    .with_context(|| format!("outbox row {id} holds an unreadable alert"))?;
                Ok(Due {
                    id,
                    target,
                    created_at,
                    alert,
                    attempts,
                })
            })
            .collect()
    }

    /// Returns claimed rows to `pending` untouched (their turn did not come).
    pub fn release(&self, ids: &[i64]) -> Result<()> {
        self.update_each(
            ids,
            "UPDATE outbox SET state = 'pending' WHERE id = ?1 AND state = 'sending'",
        )
    }

    /// When `sink`'s next pending row falls due, if it has one.
    pub fn next_due(&self, sink: &str) -> Result<Option<i64>> {
        let conn = self.conn();
        conn.query_row(
            "SELECT min(next_attempt_at) FROM outbox WHERE sink = ?1 AND state = 'pending'",
            [sink],
            |row| row.get(0),
        )
        .context("cannot read the outbox")
    }

    /// Marks rows delivered.
    pub fn mark_sent(&self, ids: &[i64]) -> Result<()> {
        self.update_each(
            ids,
            "UPDATE outbox SET state = 'sent', attempts = attempts + 1, last_error = NULL,
             updated_at = unixepoch('subsec') * 1000 WHERE id = ?1",
        )
    }

    /// Runs `sql` (one `?1` parameter) for each id, in one transaction.
    fn update_each(&self, ids: &[i64], sql: &str) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut update = tx.prepare_cached(sql)?;
            for id in ids {
                update.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a failed attempt; the row is tried again at `next_attempt_at`.
    pub fn mark_retry(&self, id: i64, next_attempt_at: i64, error: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE outbox SET state = 'pending', attempts = attempts + 1, next_attempt_at = ?2,
             last_error = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, next_attempt_at, error, now_ms()],
        )?;
        Ok(())
    }

    /// Gives a row up (the sink rejected it for good, or it grew too old). With `notice`, in
    /// the same transaction, queues an alert about it to the given destinations (the
    /// `fallback` sink), so a dead letter is never silent.
    pub fn mark_dead(
        &self,
        id: i64,
        attempted: bool,
        error: &str,
        notice: Option<(&Alert, &[Destination])>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_ms();
        tx.execute(
            "UPDATE outbox SET state = 'dead', attempts = attempts + ?2, last_error = ?3,
             updated_at = ?4 WHERE id = ?1",
            params![id, i64::from(attempted), error, now],
        )?;
        if let Some((alert, destinations)) = notice {
            // No content key: a notice is herald's own, never a re-delivered message.
            tx.execute(
                "INSERT INTO alerts (mailbox, uidvalidity, uid, created_at, alert)
                 VALUES ('herald:dead-letters', 0, ?1, ?2, ?3)",
                params![id, now, serde_json::to_string(alert)?],
            )?;
            let alert_id = tx.last_insert_rowid();
            for d in destinations {
                tx.execute(
                    "INSERT INTO outbox (alert_id, sink, target, state, next_attempt_at, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?4)",
                    params![alert_id, d.sink, d.target, now],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every row not yet sent (pending, sending, dead), oldest first: `herald outbox list`.
    pub fn unsent(&self) -> Result<Vec<Row>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT o.id, o.sink, o.target, o.state, o.attempts, o.next_attempt_at, a.created_at,
                    o.last_error, a.alert
             FROM outbox o JOIN alerts a ON a.id = o.alert_id
             WHERE o.state <> 'sent' ORDER BY o.id",
        )?;
        let rows = stmt
            .query_map([], |row| {
                let json: String = row.get(8)?;
                let title = serde_json::from_str::<Alert>(&json)
                    .map(|a| a.title)
                    .unwrap_or_default();
                Ok(Row {
                    id: row.get(0)?,
                    sink: row.get(1)?,
                    target: row.get(2)?,
                    state: row.get(3)?,
                    attempts: row.get(4)?,
                    next_attempt_at: row.get(5)?,
                    created_at: row.get(6)?,
                    last_error: row.get(7)?,
                    title,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Queues a pending or dead row for an attempt now; false if there is no such unsent row.
    pub fn retry_now(&self, id: i64) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE outbox SET state = 'pending', next_attempt_at = ?2, updated_at = ?2
             WHERE id = ?1 AND state IN ('pending', 'dead')",
            params![id, now_ms()],
        )?;
        Ok(changed > 0)
    }

    /// Deletes an unsent row; false if there is no such row.
    pub fn drop_row(&self, id: i64) -> Result<bool> {
        let changed = self.conn().execute(
            "DELETE FROM outbox WHERE id = ?1 AND state IN ('pending', 'dead')",
            [id],
        )?;
        Ok(changed > 0)
    }

    /// Forgets alerts older than `before` (ms) whose rows are all finished. Their content keys
    /// go with them: this is how long a re-delivered message is recognised.
    pub fn prune(&self, before: i64) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let finished = "SELECT id FROM alerts WHERE created_at < ?1 AND NOT EXISTS (
             SELECT 1 FROM outbox WHERE outbox.alert_id = alerts.id AND state IN ('pending', 'sending'))";
        tx.execute(
            &format!("DELETE FROM outbox WHERE alert_id IN ({finished})"),
            [before],
        )?;
        let removed = tx.execute(
            &format!("DELETE FROM alerts WHERE id IN ({finished})"),
            [before],
        )?;
        tx.commit()?;
        Ok(removed)
    }

    /// Fails unless the database can be written now: takes the write lock and lets it go.
    pub fn check_writable(&self) -> Result<()> {
        let conn = self.conn();
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .context("the state database is not writable")
    }

    /// Row counts by sink and state, for `herald check` and tests.
    pub fn counts(&self) -> Result<Vec<(String, String, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT sink, state, count(*) FROM outbox GROUP BY sink, state ORDER BY sink, state",
        )?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(sinks: &[&str]) -> Vec<Destination> {
        sinks
            .iter()
            .map(|s| Destination {
                sink: (*s).into(),
                target: String::new(),
            })
            .collect()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sub/herald.db")).unwrap();
        (dir, store)
    }

    /// Stores one alert per uid (content key `k{uid}`) for `sinks`.
    fn put(store: &Store, uidvalidity: u32, uids: &[u32], sinks: &[&str]) {
        let alert = Alert::sample();
        let destinations = to(sinks);
        let keys: Vec<String> = uids.iter().map(|u| format!("k{u}")).collect();
        let batch: Vec<_> = uids
            .iter()
            .zip(&keys)
            .map(|(uid, key)| Processed {
                uid: *uid,
                content_key: key,
                delivery: Some((&alert, &destinations[..])),
            })
            .collect();
        store
            .commit_batch(
                "INBOX",
                uidvalidity,
                &batch,
                uids.iter().copied().max().unwrap_or(0),
                false,
            )
            .unwrap();
    }

    #[test]
    fn batch_commit_stores_alerts_rows_marks_and_cursor() {
        let (_dir, store) = store();
        let alert = Alert::sample();
        let sinks = to(&["a", "b"]);
        let batch = [
            Processed {
                uid: 3,
                content_key: "k3",
                delivery: Some((&alert, &sinks)),
            },
            Processed {
                uid: 4,
                content_key: "k4",
                delivery: None,
            },
        ];
        let (touched, known) = store.commit_batch("INBOX", 7, &batch, 4, true).unwrap();
        assert_eq!(touched, vec!["a".to_string(), "b".to_string()]);
        assert!(known.is_empty());
        assert_eq!(
            store.cursor("INBOX").unwrap(),
            Some(Cursor {
                uidvalidity: 7,
                last_uid: 4
            })
        );
        assert_eq!(store.pending_marks("INBOX", 7).unwrap(), vec![3, 4]);
        assert_eq!(store.claim("a", now_ms(), 10).unwrap().len(), 1);

        // Re-processing the same UID (a crash before the marks reached the server) adds nothing.
        let (touched, known) = store
            .commit_batch("INBOX", 7, &batch[..1], 4, true)
            .unwrap();
        assert!(touched.is_empty());
        assert_eq!(known, vec![3]);
        assert_eq!(store.claim("b", now_ms(), 10).unwrap().len(), 1);
        assert!(
            store.claim("b", now_ms(), 10).unwrap().is_empty(),
            "claimed rows are not due"
        );

        store.clear_marks("INBOX", 7, &[3]).unwrap();
        assert_eq!(store.pending_marks("INBOX", 7).unwrap(), vec![4]);
    }

    #[test]
    fn a_known_content_key_is_not_stored_again_under_new_uids() {
        let (_dir, store) = store();
        put(&store, 1, &[1, 2], &["a"]);
        // The mailbox was recreated: same messages, new UIDVALIDITY and UIDs, plus a new one.
        let alert = Alert::sample();
        let sinks = to(&["a"]);
        let batch = [
            Processed {
                uid: 1,
                content_key: "k1",
                delivery: Some((&alert, &sinks[..])),
            },
            Processed {
                uid: 2,
                content_key: "k2",
                delivery: Some((&alert, &sinks[..])),
            },
            Processed {
                uid: 3,
                content_key: "k-new",
                delivery: Some((&alert, &sinks[..])),
            },
        ];
        store.commit_batch("INBOX", 2, &batch, 3, false).unwrap();
        assert_eq!(
            store.claim("a", now_ms(), 10).unwrap().len(),
            3,
            "2 old + 1 new"
        );
    }

    #[test]
    fn rows_left_sending_return_to_pending_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        {
            let store = Store::open(&path).unwrap();
            put(&store, 1, &[1], &["a"]);
            assert_eq!(store.claim("a", now_ms(), 10).unwrap().len(), 1);
            assert_eq!(store.unsent().unwrap()[0].state, "sending");
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.unsent().unwrap()[0].state, "pending");
        assert_eq!(store.claim("a", now_ms(), 10).unwrap().len(), 1);
    }

    #[test]
    fn cursor_never_moves_back_within_a_uidvalidity() {
        let (_dir, store) = store();
        store.commit_batch("INBOX", 7, &[], 10, false).unwrap();
        store.commit_batch("INBOX", 7, &[], 5, false).unwrap();
        assert_eq!(store.cursor("INBOX").unwrap().map(|c| c.last_uid), Some(10));
        store.commit_batch("INBOX", 8, &[], 2, false).unwrap();
        assert_eq!(
            store.cursor("INBOX").unwrap(),
            Some(Cursor {
                uidvalidity: 8,
                last_uid: 2
            })
        );
    }

    #[test]
    fn outbox_states() {
        let (_dir, store) = store();
        put(&store, 1, &[1, 2, 3], &["a"]);
        let due = store.claim("a", now_ms(), 10).unwrap();
        assert_eq!(due.len(), 3);
        store.mark_sent(&[due[0].id]).unwrap();
        store.mark_dead(due[1].id, true, "rejected", None).unwrap();
        store
            .mark_retry(due[2].id, now_ms() + 60_000, "503")
            .unwrap();
        assert!(store.claim("a", now_ms(), 10).unwrap().is_empty());
        assert!(store.next_due("a").unwrap().unwrap() > now_ms());
        let counts = store.counts().unwrap();
        let states: Vec<_> = counts.iter().map(|(_, s, n)| (s.as_str(), *n)).collect();
        assert_eq!(states, vec![("dead", 1), ("pending", 1), ("sent", 1)]);
    }

    #[test]
    fn release_returns_claimed_rows_untouched() {
        let (_dir, store) = store();
        put(&store, 1, &[1, 2], &["a"]);
        let due = store.claim("a", now_ms(), 10).unwrap();
        store.release(&[due[1].id]).unwrap();
        let again = store.claim("a", now_ms(), 10).unwrap();
        assert_eq!(
            (again.len(), again[0].id, again[0].attempts),
            (1, due[1].id, 0)
        );
    }

    #[test]
    fn a_dead_letter_queues_its_notice_in_the_same_transaction() {
        let (_dir, store) = store();
        put(&store, 1, &[1], &["a"]);
        let row = store.claim("a", now_ms(), 10).unwrap().remove(0);
        let mut notice = Alert::sample();
        notice.title = "herald could not deliver".into();
        store
            .mark_dead(
                row.id,
                true,
                "HTTP 404",
                Some((&notice, &to(&["fallback"]))),
            )
            .unwrap();
        let queued = store.claim("fallback", now_ms(), 10).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].alert.title, "herald could not deliver");
        let dead = store
            .unsent()
            .unwrap()
            .into_iter()
            .find(|r| r.id == row.id)
            .unwrap();
        assert_eq!(
            (
                dead.state.as_str(),
                dead.attempts,
                dead.last_error.as_deref()
            ),
            ("dead", 1, Some("HTTP 404"))
        );
    }

    #[test]
    fn outbox_retry_and_drop() {
        let (_dir, store) = store();
        put(&store, 1, &[1, 2], &["a"]);
        let due = store.claim("a", now_ms(), 10).unwrap();
        store.mark_dead(due[0].id, true, "gone", None).unwrap();
        store
            .mark_retry(due[1].id, now_ms() + 3_600_000, "503")
            .unwrap();
        assert!(store.retry_now(due[0].id).unwrap());
        assert!(store.drop_row(due[1].id).unwrap());
        assert!(!store.drop_row(due[1].id).unwrap());
        assert!(!store.retry_now(999).unwrap());
        let rows = store.unsent().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].id, rows[0].state.as_str()), (due[0].id, "pending"));
    }

    #[test]
    fn prune_forgets_only_finished_old_alerts() {
        let (_dir, store) = store();
        put(&store, 1, &[1, 2], &["a"]);
        let due = store.claim("a", now_ms(), 10).unwrap();
        store.mark_sent(&[due[0].id]).unwrap();
        store.release(&[due[1].id]).unwrap();
        assert_eq!(
            store.prune(now_ms() + 1).unwrap(),
            1,
            "only the finished one"
        );
        assert_eq!(store.unsent().unwrap().len(), 1);
    }

    #[test]
    fn baseline_and_backlog() {
        let (_dir, store) = store();
        store.commit_batch("INBOX", 1, &[], 3, false).unwrap();
        store.record_baseline("INBOX", 2, 100, &[98, 99]).unwrap();
        assert_eq!(
            store.cursor("INBOX").unwrap(),
            Some(Cursor {
                uidvalidity: 2,
                last_uid: 100
            })
        );
        assert_eq!(store.backlog("INBOX", 2, 10).unwrap(), vec![98, 99]);
        let batch = [Processed {
            uid: 98,
            content_key: "k98",
            delivery: None,
        }];
        store.commit_batch("INBOX", 2, &batch, 98, false).unwrap();
        assert_eq!(
            store.cursor("INBOX").unwrap().map(|c| c.last_uid),
            Some(100)
        );
        assert_eq!(store.backlog("INBOX", 2, 10).unwrap(), vec![99]);
        store.finish_backlog("INBOX", 2, &[99]).unwrap();
        assert!(store.backlog("INBOX", 2, 10).unwrap().is_empty());
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        {
            let store = Store::open(&path).unwrap();
            store.commit_batch("INBOX", 1, &[], 9, false).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.cursor("INBOX").unwrap().map(|c| c.last_uid), Some(9));
    }
}
