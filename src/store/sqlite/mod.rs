//! The SQLite backend: one file in WAL mode. Ingest's commits (and the operator's) are on
//! the disk when they return (`synchronous = FULL`); the outbox's bookkeeping survives a
//! crash of the process without an fsync of its own (see [`Durability`]).
//!
//! Every call runs on tokio's blocking pool (`spawn_blocking`), never on a runtime thread:
//! an fsync must not stall IMAP or the HTTP server. One connection behind a mutex serves
//! them all: each call is a short statement or transaction, and SQLite serialises writers
//! anyway (mini-redis's `db.rs` on when a std mutex is right); the daemon's runtime has one
//! blocking thread for the same reason. `spawn_blocking` rather than a thread of the store's
//! own also keeps tokio's paused test clock from jumping ahead while a call is running.
//!
//! The schema is versioned (`migrations`), and [`Access::Daemon`] holds an exclusive lock
//! on `PATH.lock` (see `lock`) for as long as it runs.

mod dispatch;
mod expect;
mod lock;
mod migrations;
mod silences;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use herald_bridges::Severity;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{
    now_ms, Access, AdminStore, Batch, Committed, Cursor, Due, IngestStore, MailboxId, OutboxStore,
    Recent, Result, Reused, Routed, Row, RowState, StoreError,
};

/// The SQLite store.
pub(super) struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Conn>,
    /// Held for the daemon's life: dropping it releases the lock.
    _owner: Option<lock::Owner>,
}

fn db_error(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::backend(context, e)
}

impl SqliteStore {
    /// Opens the database at `path` for `access` (blocking: call it off the runtime).
    pub(super) fn open(path: &Path, access: Access) -> Result<SqliteStore> {
        let owner = match access {
            Access::Daemon => Some(lock::Owner::take(path)?),
            Access::Admin | Access::ReadOnly => {
                if !path.exists() {
                    return Err(StoreError::NotFound {
                        path: path.to_owned(),
                    });
                }
                None
            }
        };
        let flags = match access {
            Access::Daemon => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            Access::Admin => OpenFlags::SQLITE_OPEN_READ_WRITE,
            Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let opening = || format!("cannot open the state database {}", path.display());
        let mut conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError::backend(opening(), e))?;
        let setup = |conn: &Connection| -> rusqlite::Result<()> {
            if access != Access::ReadOnly {
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "FULL")?;
            }
            conn.pragma_update(None, "foreign_keys", "ON")?;
            // 1 MiB of page cache instead of SQLite's 2 MiB default: the hot pages are the
            // outbox index and the newest alerts, and herald's footprint is meant to stay ~10 MB.
            conn.pragma_update(None, "cache_size", -1024)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))
        };
        setup(&conn).map_err(|e| StoreError::backend(opening(), e))?;
        match access {
            Access::Daemon => {
                migrations::migrate(&mut conn, path)?;
                // A crash leaves the rows it was delivering `sending`: they were not confirmed.
                conn.execute(
                    "UPDATE outbox SET state = 'pending' WHERE state = 'sending'",
                    [],
                )
                .map_err(db_error("cannot recover the outbox"))?;
            }
            Access::Admin | Access::ReadOnly => migrations::require_current(&conn, path)?,
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(Conn {
                    connection: conn,
                    synchronous: Durability::Synced,
                }),
                _owner: owner,
            }),
        })
    }

    /// Runs `work` with the connection on the blocking pool, its writes as durable as
    /// `durability` says.
    async fn run<T, F>(&self, context: &'static str, durability: Durability, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn();
            conn.durability(durability).map_err(db_error(context))?;
            work(&mut conn.connection).map_err(db_error(context))
        })
        .await
        .map_err(|e| StoreError::backend(context, e))?
    }
}

/// How durable a call's writes must be when it returns.
///
/// Only a commit that precedes an effect outside the store must be on the disk: ingest's,
/// before mail is marked processed on the server (and the operator's commands, which a person
/// expects to stick). The outbox's own bookkeeping (dispatched rows, claims, sent marks,
/// retries) needs only to survive the process: in WAL mode with `synchronous = NORMAL` a
/// commit is in the OS's hands when it returns, so a kill -9 loses none of it; a power loss
/// may roll it back to an earlier consistent state (the WAL is replayed up to its last synced
/// frame, in order), which at worst repeats deliveries and never loses an alert, since every
/// alert's ingest commit was synced. That saves an fsync (about 4 ms on the development
/// machine's disk) per delivery and per dispatch on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Reads only: the setting is left as it is.
    Read,
    /// Survives a crash of the process (`synchronous = NORMAL`).
    Crash,
    /// On the disk (`synchronous = FULL`).
    Synced,
}

/// The connection, and the `synchronous` setting it has now.
struct Conn {
    connection: Connection,
    synchronous: Durability,
}

impl Conn {
    /// Sets `synchronous` for what `durability` needs, if it is not set so already.
    fn durability(&mut self, durability: Durability) -> rusqlite::Result<()> {
        if durability == Durability::Read || durability == self.synchronous {
            return Ok(());
        }
        let value = if durability == Durability::Synced {
            "FULL"
        } else {
            "NORMAL"
        };
        self.connection.pragma_update(None, "synchronous", value)?;
        self.synchronous = durability;
        Ok(())
    }
}

impl Inner {
    fn conn(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock cannot leave a transaction half-applied (SQLite
        // rolls back an unfinished one), so a poisoned lock is safe to keep using.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An alert stored as JSON, read back; a row that does not parse is a corrupt store.
///
/// Alerts are encoded and decoded by the caller, outside the store's lock: the lock is held
/// for SQL only, and the JSON work (a few kilobytes an alert) stays on the runtime's threads.
fn decode<T: serde::de::DeserializeOwned>(id: i64, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::backend(format!("alert {id} in the state database is unreadable"), e)
    })
}

/// A routed alert as stored: its JSON, its sinks' JSON and its Message-ID.
struct Encoded {
    alert: String,
    sinks: String,
    message_id: Option<String>,
}

impl Encoded {
    fn of(routed: &Routed) -> Result<Encoded> {
        let encode = |e| StoreError::backend("cannot encode an alert", e);
        Ok(Encoded {
            alert: serde_json::to_string(&routed.alert).map_err(encode)?,
            sinks: serde_json::to_string(&routed.sinks).map_err(encode)?,
            message_id: routed.alert.message_id.clone(),
        })
    }
}

/// Inserts a routed alert, undispatched; `None` when its content key is already stored.
fn insert_alert(
    tx: &rusqlite::Transaction<'_>,
    source: Option<(&MailboxId, u32, u32)>,
    content_key: Option<&str>,
    alert: &Encoded,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO alerts (account, folder, uidvalidity, uid, message_id, content_key, created_at, alert, sinks)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (content_key) DO NOTHING",
    )?;
    let inserted = insert.execute(params![
        source.map(|(m, ..)| m.account.as_str()),
        source.map(|(m, ..)| m.folder.as_str()),
        source.map(|(_, v, _)| v),
        source.map(|(.., uid)| uid),
        alert.message_id,
        content_key,
        now,
        alert.alert,
        alert.sinks
    ])?;
    Ok((inserted > 0).then(|| tx.last_insert_rowid()))
}

/// The identity part of a content key `IDENTITY#DIGEST` (see the store's docs), where the
/// digest is 64 hex digits; `None` for a key of another form (an older herald's, a test's).
fn identity(content_key: &str) -> Option<&str> {
    let (identity, digest) = content_key.rsplit_once('#')?;
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(identity)
}

/// Whether herald before 0.3 stored `identity` as a whole key: the same message, as it was
/// identified then (its bytes were not hashed, so this is the best match there is).
fn legacy_known(tx: &rusqlite::Transaction<'_>, identity: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM alerts WHERE content_key = ?1")?
        .exists([identity])
}

/// The earliest other alert stored under the Message-ID identity `identity` (`mid:...`) with
/// different bytes: its id and title. A range scan of the content-key index.
fn earlier_with_id(
    tx: &rusqlite::Transaction<'_>,
    identity: &str,
    id: i64,
) -> rusqlite::Result<Option<(i64, String)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, content_key, coalesce(json_extract(alert, '$.title'), '') FROM alerts
         WHERE content_key > ?1 AND content_key < ?2 AND id <> ?3 ORDER BY id LIMIT 8",
    )?;
    // `#` + 1 is `$`: every key `IDENTITY#...` sorts between the two bounds.
    let rows = stmt.query_map(
        params![format!("{identity}#"), format!("{identity}$"), id],
        |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        },
    )?;
    for row in rows {
        let (earlier, key, title) = row?;
        // A longer Message-ID that merely starts with this one's falls in the range too.
        if self::identity(&key) == Some(identity) {
            return Ok(Some((earlier, title)));
        }
    }
    Ok(None)
}

/// Moves `mailbox`'s cursor up to `cursor` within `uidvalidity` (never back), or starts it
/// there under a new UIDVALIDITY.
fn advance_cursor(
    tx: &rusqlite::Transaction<'_>,
    mailbox: &MailboxId,
    uidvalidity: u32,
    cursor: u32,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO mailboxes (account, folder, uidvalidity, last_uid) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (account, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity,
             last_uid = max(excluded.last_uid,
                            CASE WHEN mailboxes.uidvalidity = excluded.uidvalidity
                                 THEN mailboxes.last_uid ELSE 0 END)",
        params![mailbox.account, mailbox.folder, uidvalidity, cursor],
    )
    .map(drop)
}

#[async_trait]
impl IngestStore for SqliteStore {
    async fn cursor(&self, mailbox: &MailboxId) -> Result<Option<Cursor>> {
        let mailbox = mailbox.clone();
        self.run(
            "cannot read the mailbox cursor",
            Durability::Read,
            move |conn| {
                conn.query_row(
                "SELECT uidvalidity, last_uid FROM mailboxes WHERE account = ?1 AND folder = ?2",
                [&mailbox.account, &mailbox.folder],
                |row| {
                    Ok(Cursor {
                        uidvalidity: row.get(0)?,
                        last_uid: row.get(1)?,
                    })
                },
            )
            .optional()
            },
        )
        .await
    }

    async fn commit_reporting(&self, batch: Batch) -> Result<Committed> {
        let Batch {
            mailbox,
            uidvalidity,
            messages,
            cursor,
            mark,
            sightings,
        } = batch;
        let sightings = sightings
            .into_iter()
            .map(|s| {
                let recovery = s.recovery.as_ref().map(Encoded::of).transpose()?;
                Ok((s, recovery))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = messages
            .into_iter()
            .map(|m| {
                let alert = match (&m.routed, m.settled) {
                    (Some(routed), _) => Some((Encoded::of(routed)?, None)),
                    (None, Some((alert, fate))) => {
                        let encoded = Encoded::of(&Routed {
                            alert,
                            sinks: Vec::new(),
                        })?;
                        let fate = serde_json::to_string(&fate)
                            .map_err(|e| StoreError::backend("cannot encode an alert", e))?;
                        Some((encoded, Some(fate)))
                    }
                    (None, None) => None,
                };
                Ok((m.uid, m.content_key, alert))
            })
            .collect::<Result<Vec<_>>>()?;
        self
            .run("cannot commit to the state database", Durability::Synced, move |conn| {
                crate::crashpoint::wedge("store-commit");
                let (account, folder) = (&mailbox.account, &mailbox.folder);
                let tx = conn.transaction()?;
                let now = now_ms();
                let mut committed = Committed::default();
                {
                    let mut insert_mark = tx.prepare_cached(
                        "INSERT OR IGNORE INTO imap_marks (account, folder, uidvalidity, uid) VALUES (?1, ?2, ?3, ?4)",
                    )?;
                    let mut done = tx.prepare_cached(
                        "DELETE FROM backlog WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3 AND uid = ?4",
                    )?;
                    let mut settle = tx.prepare_cached(
                        "UPDATE alerts SET dispatched_at = ?2, fate = ?3 WHERE id = ?1",
                    )?;
                    for (uid, content_key, alert) in &rows {
                        done.execute(params![account, folder, uidvalidity, uid])?;
                        if mark {
                            insert_mark.execute(params![account, folder, uidvalidity, uid])?;
                        }
                        let Some((alert, settled)) = alert else {
                            continue;
                        };
                        let identity = identity(content_key);
                        if let Some(identity) = identity {
                            if legacy_known(&tx, identity)? {
                                committed.known.push(*uid);
                                continue;
                            }
                        }
                        let source = Some((&mailbox, uidvalidity, *uid));
                        let Some(id) = insert_alert(&tx, source, Some(content_key), alert, now)? else {
                            committed.known.push(*uid);
                            continue;
                        };
                        // An alert that goes nowhere is dispatched as it is stored.
                        if let Some(fate) = settled {
                            settle.execute(params![id, now, fate])?;
                        }
                        if let Some(identity) = identity.filter(|i| i.starts_with("mid:")) {
                            if let Some((earlier_id, earlier_title)) = earlier_with_id(&tx, identity, id)? {
                                committed.reused.push(Reused { uid: *uid, earlier_id, earlier_title });
                            }
                        }
                    }
                }
                expect::record_sightings(&tx, &sightings, now)?;
                advance_cursor(&tx, &mailbox, uidvalidity, cursor)?;
                tx.commit()?;
                Ok(committed)
            })
            .await
    }

    async fn skip_unreadable(
        &self,
        mailbox: &MailboxId,
        uidvalidity: u32,
        uid: u32,
        notice: Option<Routed>,
    ) -> Result<()> {
        let mailbox = mailbox.clone();
        let notice = notice.as_ref().map(Encoded::of).transpose()?;
        self.run("cannot record an unreadable message", Durability::Synced, move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM backlog WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3 AND uid = ?4",
                params![mailbox.account, mailbox.folder, uidvalidity, uid],
            )?;
            if let Some(notice) = notice {
                // No content key, like a dead letter's notice: herald's own, not a message.
                insert_alert(&tx, None, None, &notice, now_ms())?;
            }
            advance_cursor(&tx, &mailbox, uidvalidity, uid)?;
            tx.commit()
        })
        .await
    }

    async fn record_baseline(
        &self,
        mailbox: &MailboxId,
        uidvalidity: u32,
        last: u32,
        recent: Vec<u32>,
    ) -> Result<()> {
        let mailbox = mailbox.clone();
        self.run("cannot record the baseline", Durability::Synced, move |conn| {
            let (account, folder) = (&mailbox.account, &mailbox.folder);
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO mailboxes (account, folder, uidvalidity, last_uid) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity,
                     last_uid = excluded.last_uid",
                params![account, folder, uidvalidity, last],
            )?;
            tx.execute(
                "DELETE FROM backlog WHERE account = ?1 AND folder = ?2",
                [account, folder],
            )?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO backlog (account, folder, uidvalidity, uid) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for uid in recent {
                    insert.execute(params![account, folder, uidvalidity, uid])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn backlog(
        &self,
        mailbox: &MailboxId,
        uidvalidity: u32,
        limit: usize,
    ) -> Result<Vec<u32>> {
        self.select_uids(
            "cannot read the backlog",
            "SELECT uid FROM backlog WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3
             ORDER BY uid LIMIT ?4",
            mailbox,
            uidvalidity,
            limit,
        )
        .await
    }

    async fn finish_backlog(
        &self,
        mailbox: &MailboxId,
        uidvalidity: u32,
        uids: Vec<u32>,
    ) -> Result<()> {
        self.delete_uids(
            "DELETE FROM backlog WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3 AND uid = ?4",
            mailbox,
            uidvalidity,
            uids,
            false,
        )
        .await
    }

    async fn pending_marks(&self, mailbox: &MailboxId, uidvalidity: u32) -> Result<Vec<u32>> {
        self.select_uids(
            "cannot read the pending marks",
            "SELECT uid FROM imap_marks WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3
             ORDER BY uid LIMIT ?4",
            mailbox,
            uidvalidity,
            usize::MAX,
        )
        .await
    }

    async fn clear_marks(
        &self,
        mailbox: &MailboxId,
        uidvalidity: u32,
        uids: Vec<u32>,
    ) -> Result<()> {
        self.delete_uids(
            "DELETE FROM imap_marks WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3 AND uid = ?4",
            mailbox,
            uidvalidity,
            uids,
            true,
        )
        .await
    }
}

impl SqliteStore {
    /// Up to `limit` UIDs of `mailbox` that `sql` selects (parameters: account, folder,
    /// UIDVALIDITY, limit).
    async fn select_uids(
        &self,
        context: &'static str,
        sql: &'static str,
        mailbox: &MailboxId,
        uidvalidity: u32,
        limit: usize,
    ) -> Result<Vec<u32>> {
        let mailbox = mailbox.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(context, Durability::Read, move |conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let uids = stmt
                .query_map(
                    params![mailbox.account, mailbox.folder, uidvalidity, limit],
                    |row| row.get(0),
                )?
                .collect();
            uids
        })
        .await
    }

    /// Deletes `uids` of `mailbox` with `sql`; with `older_too`, also every mark of another
    /// UIDVALIDITY (their UIDs no longer name anything).
    async fn delete_uids(
        &self,
        sql: &'static str,
        mailbox: &MailboxId,
        uidvalidity: u32,
        uids: Vec<u32>,
        older_too: bool,
    ) -> Result<()> {
        let mailbox = mailbox.clone();
        self.run("cannot update the state database", Durability::Crash, move |conn| {
            let tx = conn.transaction()?;
            {
                let mut delete = tx.prepare_cached(sql)?;
                for uid in uids {
                    delete.execute(params![mailbox.account, mailbox.folder, uidvalidity, uid])?;
                }
            }
            if older_too {
                tx.execute(
                    "DELETE FROM imap_marks WHERE account = ?1 AND folder = ?2 AND uidvalidity <> ?3",
                    params![mailbox.account, mailbox.folder, uidvalidity],
                )?;
            }
            tx.commit()
        })
        .await
    }

    /// Runs `sql` (one `?1` parameter) for each id, in one transaction.
    async fn update_each(&self, ids: Vec<i64>, sql: &'static str) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.run("cannot update the outbox", Durability::Crash, move |conn| {
            let tx = conn.transaction()?;
            {
                let mut update = tx.prepare_cached(sql)?;
                for id in ids {
                    update.execute([id])?;
                }
            }
            tx.commit()
        })
        .await
    }
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn claim(&self, sink: &str, now: i64, limit: usize) -> Result<Vec<Due>> {
        let sink = sink.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .run("cannot claim deliveries", Durability::Crash, move |conn| {
                let tx = conn.transaction()?;
                let due = {
                    // Without statistics the planner could pick `outbox_due` and sort every due
                    // row of the sink for each claim; `outbox_claim` is already in claim order.
                    let mut stmt = tx.prepare_cached(
                        "SELECT o.id, o.target, a.created_at, a.alert, o.attempts
                     FROM outbox o INDEXED BY outbox_claim JOIN alerts a ON a.id = o.alert_id
                     WHERE o.sink = ?1 AND o.state = 'pending' AND o.next_attempt_at <= ?2
                     ORDER BY o.priority DESC, o.next_attempt_at, o.id LIMIT ?3",
                    )?;
                    let due = stmt
                        .query_map(params![sink, now, limit], |row| {
                            Ok((
                                row.get::<_, i64>(0)?,
                                row.get::<_, String>(1)?,
                                row.get::<_, i64>(2)?,
                                row.get::<_, String>(3)?,
                                row.get::<_, u32>(4)?,
                            ))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    let mut claim =
                        tx.prepare_cached("UPDATE outbox SET state = 'sending' WHERE id = ?1")?;
                    for (id, ..) in &due {
                        claim.execute([id])?;
                    }
                    due
                };
                tx.commit()?;
                Ok(due)
            })
            .await?;
        rows.into_iter()
            .map(|(id, target, created_at, alert, attempts)| {
                Ok(Due {
                    id,
                    target,
                    created_at,
                    alert: decode(id, &alert)?,
                    attempts,
                })
            })
            .collect()
    }

    async fn release(&self, ids: Vec<i64>) -> Result<()> {
        self.update_each(
            ids,
            "UPDATE outbox SET state = 'pending' WHERE id = ?1 AND state = 'sending'",
        )
        .await
    }

    async fn requeue_sending(&self) -> Result<usize> {
        self.run("cannot recover the outbox", Durability::Crash, |conn| {
            conn.execute(
                "UPDATE outbox SET state = 'pending' WHERE state = 'sending'",
                [],
            )
        })
        .await
    }

    async fn next_due(&self, sink: &str) -> Result<Option<i64>> {
        let sink = sink.to_owned();
        self.run("cannot read the outbox", Durability::Read, move |conn| {
            conn.query_row(
                "SELECT min(next_attempt_at) FROM outbox WHERE sink = ?1 AND state = 'pending'",
                [sink],
                |row| row.get(0),
            )
        })
        .await
    }

    async fn mark_sent(&self, id: i64) -> Result<()> {
        self.run(
            "cannot mark a delivery sent",
            Durability::Crash,
            move |conn| {
                conn.prepare_cached(
                    "UPDATE outbox SET state = 'sent', attempts = attempts + 1, last_error = NULL,
                 updated_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, now_ms()])
                .map(drop)
            },
        )
        .await
    }

    async fn mark_retry(&self, id: i64, next_attempt_at: i64, error: String) -> Result<()> {
        self.run(
            "cannot record a failed delivery",
            Durability::Crash,
            move |conn| {
                conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = attempts + 1, next_attempt_at = ?2,
                 last_error = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, next_attempt_at, error, now_ms()],
            )
            .map(drop)
            },
        )
        .await
    }

    async fn mark_dead(
        &self,
        id: i64,
        attempted: bool,
        error: String,
        notice: Option<Routed>,
    ) -> Result<()> {
        let notice = notice.as_ref().map(Encoded::of).transpose()?;
        self.run(
            "cannot record a dead letter",
            Durability::Synced,
            move |conn| {
                let tx = conn.transaction()?;
                let now = now_ms();
                tx.execute(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + ?2, last_error = ?3,
                 updated_at = ?4 WHERE id = ?1",
                    params![id, i64::from(attempted), error, now],
                )?;
                if let Some(notice) = notice {
                    // No content key: a notice is herald's own, never a re-delivered message.
                    insert_alert(&tx, None, None, &notice, now)?;
                }
                tx.commit()
            },
        )
        .await
    }
}

#[async_trait]
impl AdminStore for SqliteStore {
    async fn unsent(&self) -> Result<Vec<Row>> {
        self.run("cannot read the outbox", Durability::Read, |conn| {
            let mut stmt = conn.prepare(
                "SELECT o.id, o.sink, o.target, o.state, o.attempts, o.next_attempt_at, a.created_at,
                        o.last_error, coalesce(json_extract(a.alert, '$.title'), '')
                 FROM outbox o JOIN alerts a ON a.id = o.alert_id
                 WHERE o.state <> 'sent' ORDER BY o.id",
            )?;
            let rows = stmt
                .query_map([], |row| {
                    let id = row.get(0)?;
                    let state: String = row.get(3)?;
                    Ok(Row {
                        id,
                        sink: row.get(1)?,
                        target: row.get(2)?,
                        state: parse_state(3, &state)?,
                        attempts: row.get(4)?,
                        next_attempt_at: row.get(5)?,
                        created_at: row.get(6)?,
                        last_error: row.get(7)?,
                        title: row.get(8)?,
                    })
                })?
                .collect();
            rows
        })
        .await
    }

    async fn retry_now(&self, id: i64) -> Result<bool> {
        self.run(
            "cannot update the outbox",
            Durability::Synced,
            move |conn| {
                conn.execute(
                    "UPDATE outbox SET state = 'pending', next_attempt_at = ?2, updated_at = ?2
                 WHERE id = ?1 AND state IN ('pending', 'dead')",
                    params![id, now_ms()],
                )
                .map(|n| n > 0)
            },
        )
        .await
    }

    async fn drop_row(&self, id: i64) -> Result<bool> {
        self.run(
            "cannot update the outbox",
            Durability::Synced,
            move |conn| {
                conn.execute(
                    "DELETE FROM outbox WHERE id = ?1 AND state IN ('pending', 'dead')",
                    [id],
                )
                .map(|n| n > 0)
            },
        )
        .await
    }

    async fn prune(&self, before: i64) -> Result<usize> {
        self.run(
            "cannot prune the state database",
            Durability::Crash,
            move |conn| {
                let tx = conn.transaction()?;
                let finished =
                    "SELECT id FROM alerts WHERE created_at < ?1 AND dispatched_at IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM outbox
                     WHERE outbox.alert_id = alerts.id AND state IN ('pending', 'sending'))
                 AND NOT EXISTS (SELECT 1 FROM problems WHERE problems.alert_id = alerts.id)";
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
            },
        )
        .await
    }

    async fn check_writable(&self) -> Result<()> {
        self.run(
            "the state database is not writable",
            Durability::Read,
            |conn| conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;"),
        )
        .await
    }

    async fn recent(&self, since: i64, limit: usize) -> Result<Vec<Recent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .run("cannot read recent alerts", Durability::Read, move |conn| {
                let mut alerts = conn.prepare(
                    "SELECT id, created_at, alert, fate FROM (
                         SELECT id, created_at, alert, fate FROM alerts WHERE created_at >= ?1
                         ORDER BY id DESC LIMIT ?2) ORDER BY id",
                )?;
                let mut rows = conn.prepare_cached(
                    "SELECT sink, target, state, attempts, last_error FROM outbox WHERE alert_id = ?1 ORDER BY id",
                )?;
                let mut found = Vec::new();
                for alert in alerts.query_map(params![since, limit], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<String>>(3)?,
                    ))
                })? {
                    let (id, created_at, alert, fate) = alert?;
                    let deliveries = rows
                        .query_map([id], |row| {
                            Ok((
                                row.get::<_, String>(0)?,
                                row.get::<_, String>(1)?,
                                parse_state(2, &row.get::<_, String>(2)?)?,
                                row.get::<_, u32>(3)?,
                                row.get::<_, Option<String>>(4)?,
                            ))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    found.push((id, created_at, alert, fate, deliveries));
                }
                Ok(found)
            })
            .await?;
        rows.into_iter()
            .map(|(id, created_at, alert, fate, deliveries)| {
                Ok(Recent {
                    id,
                    created_at,
                    alert: decode(id, &alert)?,
                    fate: fate.map(|f| decode(id, &f)).transpose()?,
                    deliveries,
                })
            })
            .collect()
    }

    async fn counts(&self) -> Result<Vec<(String, RowState, u64)>> {
        self.run("cannot count the outbox", Durability::Read, |conn| {
            let mut stmt = conn.prepare(
                "SELECT sink, state, count(*) FROM outbox GROUP BY sink, state ORDER BY sink, state",
            )?;
            let rows = stmt
                .query_map([], |row| {
                    let state: String = row.get(1)?;
                    Ok((row.get(0)?, parse_state(1, &state)?, row.get(2)?))
                })?
                .collect();
            rows
        })
        .await
    }
}

/// An outbox row's `priority`: higher goes first (the migration maps 0.1's rows the same way).
fn priority(severity: Severity) -> i64 {
    match severity {
        Severity::Critical => 2,
        Severity::Warning => 1,
        Severity::Info => 0,
    }
}

fn parse_state(column: usize, name: &str) -> rusqlite::Result<RowState> {
    RowState::parse(name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!("unknown outbox state {name:?}").into(),
        )
    })
}

/// Where the lock file of the database at `path` is.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod identity_tests {
    use crate::store::testing::{batch, store};
    use crate::store::Reused;

    const DIGEST_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIGEST_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[tokio::test]
    async fn a_reused_message_id_is_stored_and_reported_a_replay_and_an_old_key_are_known() {
        let (_dir, store) = store().await;
        let mut b = batch(1, &[1, 2, 3, 4], &["a"], false);
        b.messages[0].content_key = format!("mid:<x@y>#{DIGEST_A}");
        b.messages[1].content_key = format!("mid:<x@y>#{DIGEST_B}");
        b.messages[2].content_key = format!("mid:<x@y>#{DIGEST_A}");
        // A longer Message-ID starting with the same characters is another message.
        b.messages[3].content_key = format!("mid:<x@y>#z#{DIGEST_B}");
        let committed = store.commit_reporting(b).await.unwrap();
        assert_eq!(committed.known, vec![3]);
        assert_eq!(committed.reused.len(), 1, "{:?}", committed.reused);
        let Reused {
            uid, earlier_title, ..
        } = &committed.reused[0];
        assert_eq!(*uid, 2);
        assert_eq!(earlier_title, &herald_bridges::Alert::sample().title);

        // Keys stored by herald before 0.3 are the identity alone: still the same message.
        let mut old = batch(1, &[5], &["a"], false);
        old.messages[0].content_key = "mid:<old@y>".into();
        store.commit(old).await.unwrap();
        let mut again = batch(2, &[1], &["a"], false);
        again.messages[0].content_key = format!("mid:<old@y>#{DIGEST_A}");
        assert_eq!(store.commit(again).await.unwrap(), vec![1]);
    }
}
