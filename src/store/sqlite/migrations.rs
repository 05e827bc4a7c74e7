//! Versioned schema migrations, chatmail-style: an ordered list of steps, the database's
//! version in `PRAGMA user_version`, and each step applied in its own transaction together
//! with the version it reaches, so a crash mid-migration leaves the previous version intact.
//!
//! A new database runs every step from the first, exactly like one written by herald 0.1
//! (whose schema is step 1 and whose `user_version` is 0): one path, tested with a database
//! made by the 0.1 code (`tests/fixtures/state-0.1.db`). Steps are never edited once
//! released; a change is a new step.

use std::path::Path;

use rusqlite::Connection;

use crate::store::StoreError;

/// The steps; step N (1-based) takes the database from version N-1 to N.
const STEPS: &[&str] = &[
    // 1: herald 0.1's schema. `IF NOT EXISTS`, since a 0.1 database has it at version 0.
    "
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
    ",
    // 2: several accounts (a mailbox is `(account, folder)`; 0.1's one account is
    // `default`), delivery by priority (an outbox row carries its alert's severity), and the
    // dispatch stage (an alert carries its routed sinks and is
    // undispatched until dispatch has written its outbox rows). 0.1's alerts already have
    // their rows: they are dispatched, with the sinks their rows name. Herald's own notices
    // (0.1 filed them under the mailbox `herald:dead-letters`) belong to no mailbox.
    "
    CREATE TABLE mailboxes_v2 (
        account     TEXT NOT NULL,
        folder      TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        last_uid    INTEGER NOT NULL,
        PRIMARY KEY (account, folder)
    ) WITHOUT ROWID;
    INSERT INTO mailboxes_v2 SELECT 'default', name, uidvalidity, last_uid FROM mailboxes;
    DROP TABLE mailboxes;
    ALTER TABLE mailboxes_v2 RENAME TO mailboxes;

    CREATE TABLE alerts_v2 (
        id            INTEGER PRIMARY KEY,
        account       TEXT,
        folder        TEXT,
        uidvalidity   INTEGER,
        uid           INTEGER,
        message_id    TEXT,
        content_key   TEXT,
        created_at    INTEGER NOT NULL,
        alert         TEXT NOT NULL,
        sinks         TEXT NOT NULL DEFAULT '[]',
        dispatched_at INTEGER
    );
    INSERT INTO alerts_v2 (id, account, folder, uidvalidity, uid, message_id, content_key,
                           created_at, alert, sinks, dispatched_at)
        SELECT id,
               CASE WHEN mailbox LIKE 'herald:%' THEN NULL ELSE 'default' END,
               CASE WHEN mailbox LIKE 'herald:%' THEN NULL ELSE mailbox END,
               CASE WHEN mailbox LIKE 'herald:%' THEN NULL ELSE uidvalidity END,
               CASE WHEN mailbox LIKE 'herald:%' THEN NULL ELSE uid END,
               message_id, content_key, created_at, alert,
               coalesce((SELECT json_group_array(sink) FROM
                            (SELECT sink FROM outbox WHERE alert_id = alerts.id GROUP BY sink ORDER BY min(id))
                        ), '[]'),
               created_at
        FROM alerts;
    DROP TABLE alerts;
    ALTER TABLE alerts_v2 RENAME TO alerts;
    CREATE UNIQUE INDEX alerts_content ON alerts (content_key);
    CREATE INDEX alerts_undispatched ON alerts (id) WHERE dispatched_at IS NULL;

    -- Within a sink, critical rows go before warning before info (claims order by it).
    ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    UPDATE outbox SET priority = (
        SELECT CASE json_extract(alerts.alert, '$.severity')
                   WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END
        FROM alerts WHERE alerts.id = outbox.alert_id);
    -- The outbox's indexes hold pending rows only: a claim (pending -> sending) leaves them,
    -- and acknowledging a delivery (sending -> sent), done once per delivery, touches no index
    -- at all. A claim walks `outbox_claim` in its order and stops at its limit, instead of
    -- sorting every due row of the sink (a drain of 10,000 rows would sort them per claim).
    DROP INDEX outbox_due;
    CREATE INDEX outbox_due ON outbox (sink, next_attempt_at) WHERE state = 'pending';
    CREATE INDEX outbox_claim ON outbox (sink, priority DESC, next_attempt_at, id)
        WHERE state = 'pending';

    CREATE TABLE backlog_v2 (
        account     TEXT NOT NULL,
        folder      TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid         INTEGER NOT NULL,
        PRIMARY KEY (account, folder, uidvalidity, uid)
    ) WITHOUT ROWID;
    INSERT INTO backlog_v2 SELECT 'default', mailbox, uidvalidity, uid FROM backlog;
    DROP TABLE backlog;
    ALTER TABLE backlog_v2 RENAME TO backlog;

    CREATE TABLE imap_marks_v2 (
        account     TEXT NOT NULL,
        folder      TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid         INTEGER NOT NULL,
        PRIMARY KEY (account, folder, uidvalidity, uid)
    ) WITHOUT ROWID;
    INSERT INTO imap_marks_v2 SELECT 'default', mailbox, uidvalidity, uid FROM imap_marks;
    DROP TABLE imap_marks;
    ALTER TABLE imap_marks_v2 RENAME TO imap_marks;
    ",
    // 3: alert management. `problems` (one per open `dedup_key`: its group, its counts and
    // timers, its latest alert) and `groups` (when each last notified, when its pending
    // digest is due) are dispatch's state; `silences` are the operator's; an alert's `fate`
    // is what dispatch made of it (`herald alerts`). Every alert before this step was sent
    // as it came, with no state to carry over.
    "
    ALTER TABLE alerts ADD COLUMN fate TEXT;
    CREATE TABLE problems (
        dedup_key    TEXT PRIMARY KEY,
        group_id     TEXT NOT NULL,
        open         INTEGER NOT NULL,
        first_at     INTEGER NOT NULL,
        last_at      INTEGER NOT NULL,
        notified_at  INTEGER,
        folded       INTEGER NOT NULL DEFAULT 0,
        folded_since INTEGER,
        remind_at    INTEGER,
        expire_at    INTEGER NOT NULL,
        pending      INTEGER NOT NULL DEFAULT 0,
        alert_id     INTEGER NOT NULL REFERENCES alerts (id),
        sinks        TEXT NOT NULL
    );
    CREATE INDEX problems_group ON problems (group_id);
    CREATE INDEX problems_remind ON problems (remind_at) WHERE folded > 0;
    CREATE INDEX problems_expire ON problems (expire_at);
    CREATE TABLE groups (
        id          TEXT PRIMARY KEY,
        key         TEXT NOT NULL,
        notified_at INTEGER,
        flush_at    INTEGER
    );
    CREATE INDEX groups_flush ON groups (flush_at) WHERE flush_at IS NOT NULL;
    CREATE TABLE silences (
        id         INTEGER PRIMARY KEY,
        matchers   TEXT NOT NULL,
        starts_at  INTEGER NOT NULL,
        ends_at    INTEGER NOT NULL,
        comment    TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        suppressed INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX silences_active ON silences (ends_at);
    ",
    // 4: expectations (`[[expect]]`): when each was started and last seen, the time its
    // mail is expected next, and since when it is missing. `timing` is the `every` or
    // `schedule` the expected time was computed for, so a changed one starts afresh.
    "
    CREATE TABLE expectations (
        name          TEXT PRIMARY KEY,
        timing        TEXT NOT NULL,
        started_at    INTEGER NOT NULL,
        last_seen     INTEGER,
        expected_at   INTEGER NOT NULL,
        missing_since INTEGER
    );
    ",
];

/// The version this build writes.
pub(super) const CURRENT: u32 = STEPS.len() as u32;

fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn failed(path: &Path, step: usize) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| {
        StoreError::backend(
            format!(
                "cannot migrate the state database {} to schema version {step}",
                path.display()
            ),
            e,
        )
    }
}

/// Brings the database up to [`CURRENT`].
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found = version(conn).map_err(failed(path, 0))?;
    if found > CURRENT {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known: CURRENT,
        });
    }
    let fresh = conn
        .query_row("SELECT count(*) = 0 FROM sqlite_master", [], |row| {
            row.get::<_, bool>(0)
        })
        .map_err(failed(path, 0))?;
    // Tables are rebuilt under the outbox's foreign key; SQLite's recipe for that is to turn
    // the checks off outside the transaction and verify them before committing.
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(failed(path, 0))?;
    for (index, sql) in STEPS.iter().enumerate().skip(found as usize) {
        let step = index + 1;
        let tx = conn.transaction().map_err(failed(path, step))?;
        tx.execute_batch(sql).map_err(failed(path, step))?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .map_err(failed(path, step))?;
        if let Some(table) = broken {
            return Err(failed(path, step)(rusqlite::Error::InvalidParameterName(
                format!("a foreign key of table {table} is broken"),
            )));
        }
        tx.pragma_update(None, "user_version", step)
            .map_err(failed(path, step))?;
        tx.commit().map_err(failed(path, step))?;
        if !fresh {
            tracing::info!(path = %path.display(), version = step, "Migrated the state database.");
        }
    }
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(failed(path, CURRENT as usize))
}

/// Fails unless the database is at [`CURRENT`]: a command beside the daemon never migrates.
pub(super) fn require_current(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found = version(conn).map_err(failed(path, 0))?;
    match found.cmp(&CURRENT) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known: CURRENT,
        }),
        std::cmp::Ordering::Less => Err(StoreError::backend(
            format!(
                "the state database {} has schema version {found}; `herald run` migrates it to {CURRENT} when it starts",
                path.display()
            ),
            "an older schema",
        )),
    }
}
