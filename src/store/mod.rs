//! The state store, behind one interface per stage.
//!
//! Each stage sees only what it needs: [`IngestStore`] (cursors, the fetched batch, marks, the
//! first-start backlog), [`DispatchStore`] (routed alerts not yet dispatched, and the outbox
//! rows dispatch creates for them), [`OutboxStore`] (the delivery workers' claims and
//! outcomes) and [`AdminStore`] (the operator's commands, readiness and pruning). They are
//! async traits, so a backend that talks to a server and one that runs blocking SQLite calls
//! off the runtime's threads look the same to the stages. [`open`] picks the backend; today that
//! is SQLite (`sqlite/`).
//!
//! # The life of an alert
//!
//! ```text
//! ingest:   fetched mail ──commit──> alert (routed sinks, undispatched) + marks + cursor
//! dispatch: undispatched alerts + problems + groups ──commit──> fates, outbox rows (one per
//!           sink target), new problem and group state, silence counts; timers likewise
//! deliver:  outbox row: pending ──claim──> sending ──> sent | pending (retry) | dead
//! ```
//!
//! Each arrow is one transaction, and nothing downstream of an arrow happens before it
//! commits: the mailbox marks mail processed only after the ingest commit; a worker sees a row
//! only after the dispatch commit; a row is `sent` only after its sink confirmed, each row as
//! soon as it is confirmed. A crash therefore loses nothing, and repeats at most the
//! deliveries that were in flight. Rows left `sending` by a crash return to `pending` when the
//! daemon opens the store. A dead letter's notice is an ordinary alert, committed with the
//! dead row and handed to dispatch like any other. Dispatch's own state (problems, groups and their
//! timers) commits with the rows it creates, so a timer that fired is either still due after a
//! crash or done with its rows. An alert that goes nowhere (dropped by a rule, routed nowhere)
//! is stored already dispatched, with its fate, so `herald alerts` can show it.
//!
//! An alert's identity is its content key, `IDENTITY#DIGEST`: the Message-ID (else a hash of
//! the header block) and a hash of the fetched bytes. Mail seen again under new UIDs (a
//! recreated mailbox, a restored backup: the same bytes) alerts only once, while a different
//! message reusing a Message-ID is alerted on, and the commit reports it ([`Reused`]). Keys
//! stored by herald before 0.3 are the `IDENTITY` alone; a new key whose identity is stored
//! so still counts as known, so a rescan after an upgrade does not re-alert on old mail (those
//! rows leave with the 30-day pruning).
//!
//! # One owner
//!
//! [`Access::Daemon`] is exclusive: a second `herald run` on the same state refuses to start
//! ([`StoreError::Locked`]) instead of resetting the first one's in-flight rows. It also
//! refuses to start fresh where a state has been before and is now gone or empty
//! ([`StoreError::Vanished`]). [`Access::Admin`] (outbox retry and drop, silence add and
//! expire) writes beside a running daemon but never creates the state or resets rows;
//! [`Access::ReadOnly`] (outbox list, silence list, alerts) changes nothing at all.
//!
//! # What a backend must provide (the SQL a PostgreSQL backend needs)
//!
//! - `mailboxes (account, folder) → (uidvalidity, last_uid)`: an upsert whose `last_uid` only
//!   grows within one UIDVALIDITY (`greatest(...)` in PostgreSQL, `max(...)` in SQLite).
//! - `alerts`: `id` (bigserial), `account`, `folder`, `uidvalidity`, `uid`, `content_key`
//!   (unique; NULL for herald's own notices), `created_at` (ms), the alert as JSON (`jsonb`),
//!   `sinks` (the routed sink names, JSON) and `dispatched_at` (NULL until dispatched), with a
//!   partial index on undispatched ids. Ingest inserts with `ON CONFLICT (content_key) DO
//!   NOTHING` and must learn which rows were new (`RETURNING id`).
//! - `outbox`: one row per (alert, sink, target) with `state` in pending | sending | sent |
//!   dead, `priority` (the severity: claims take the most severe first), `attempts`,
//!   `next_attempt_at`, `last_error`; an index on (sink, state, next_attempt_at). Claiming is `UPDATE ... SET state = 'sending' WHERE id IN (SELECT ...
//!   FOR UPDATE SKIP LOCKED) RETURNING ...` in PostgreSQL, so replicas never claim one row
//!   twice; SQLite has one writer and claims in a transaction.
//! - `backlog` and `imap_marks`: sets of `(account, folder, uidvalidity, uid)`.
//! - `problems` (by `dedup_key`; indexes on group, on reminder time where repeats are folded,
//!   on expiry), `groups` (by id; a partial index on pending digest time) and `silences` (an
//!   index on their end). Dispatch reads them, decides, and writes them back in its commit;
//!   with several replicas one dispatcher at a time must own them (a lease), since a pass is
//!   read-decide-write.
//! - Every multi-statement write is one transaction; dispatch reads undispatched alerts and
//!   writes their rows in one (PostgreSQL: `FOR UPDATE SKIP LOCKED` on the alerts too).
//! - Schema changes are numbered migrations applied at open, each in its own transaction
//!   (SQLite: `PRAGMA user_version`; PostgreSQL: a `schema_version` table under an advisory
//!   lock, so two replicas starting at once do not both migrate).
//! - Ownership: SQLite takes an exclusive lock on a file beside the database; PostgreSQL has
//!   no owner, replicas share, and a lease per mailbox decides who holds its IMAP session.

mod expect;
mod silences;
mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use herald_bridges::{Alert, Severity};

pub use expect::{ExpectStore, Expected, Sighting};
pub use silences::{Silence, SilenceStore};

/// Milliseconds since the Unix epoch: the store's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One watched folder of one IMAP account: what a cursor, a mark and a backlog entry belong to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId {
    /// The account's name (`[[imap]] name`; `default` for a lone unnamed `[imap]`).
    pub account: String,
    /// The folder, as the server names it (`INBOX`, `Cron`).
    pub folder: String,
}

impl MailboxId {
    /// The mailbox `folder` of `account`.
    pub fn new(account: impl Into<String>, folder: impl Into<String>) -> MailboxId {
        MailboxId {
            account: account.into(),
            folder: folder.into(),
        }
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.folder)
    }
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

/// An alert and where routing sent it.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The alert.
    pub alert: Alert,
    /// The sinks it goes to, by name, in order; never empty.
    pub sinks: Vec<String>,
}

/// One fetched message of a batch.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its UID.
    pub uid: u32,
    /// Its content key: a message already stored under this key is not stored again.
    pub content_key: String,
    /// Its alert and sinks; `None` when a rule dropped it or it was routed nowhere.
    pub routed: Option<Routed>,
    /// Its alert when it goes nowhere, and why ([`Fate::Dropped`] or [`Fate::Unrouted`]):
    /// stored as already dispatched, so `herald alerts` can say what became of it.
    pub settled: Option<(Alert, Fate)>,
}

/// What ingest commits in one transaction.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The mailbox the messages came from.
    pub mailbox: MailboxId,
    /// Its UIDVALIDITY.
    pub uidvalidity: u32,
    /// The messages.
    pub messages: Vec<Fetched>,
    /// The cursor after the batch (it never moves back within a UIDVALIDITY).
    pub cursor: u32,
    /// Whether each message is to be marked processed on the server (a pending mark).
    pub mark: bool,
    /// The expectations the batch's mail fed, each once.
    pub sightings: Vec<Sighting>,
}

/// What an ingest commit found out beyond storing the batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The UIDs whose content key was already stored (mail seen before, under other UIDs or
    /// by an earlier run), which stored nothing.
    pub known: Vec<u32>,
    /// Messages stored whose Message-ID an earlier, different message already had.
    pub reused: Vec<Reused>,
}

/// A message stored although an earlier one had its Message-ID: a different message reusing
/// the ID (a stranger's mail, a broken mailer), or the same one altered on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reused {
    /// The new message's UID.
    pub uid: u32,
    /// The earlier alert's id in the store.
    pub earlier_id: i64,
    /// The earlier alert's title.
    pub earlier_title: String,
}

/// A routed alert that dispatch has not yet decided on.
#[derive(Debug, Clone)]
pub struct Undispatched {
    /// The alert's id in the store.
    pub id: i64,
    /// The alert and where routing sent it.
    pub routed: Routed,
}

/// One problem dispatch knows of: a `dedup_key`, its group, and what has been said of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The problem: its alerts' `dedup_key`.
    pub dedup_key: String,
    /// Its group's id (see [`Group::id`]).
    pub group_id: String,
    /// Whether a failure (or an alert of severity warning or more) opened it, so that a
    /// recovery resolves it; a problem of informational alerts only folds their repeats.
    pub open: bool,
    /// Its first alert (ms).
    pub first_at: i64,
    /// Its latest alert (ms).
    pub last_at: i64,
    /// When it was last notified (ms); `None` while its first notification is pending.
    pub notified_at: Option<i64>,
    /// Alerts since that notification that were counted instead of sent.
    pub folded: u64,
    /// When the first of those came (ms).
    pub folded_since: Option<i64>,
    /// When its folded repeats are next reminded of (ms).
    pub remind_at: Option<i64>,
    /// When it closes quietly unless a new alert comes (ms).
    pub expire_at: i64,
    /// Whether it waits for its group's next notification (new, or with a reminder due).
    pub pending: bool,
    /// Its latest alert's id: what a reminder or a digest shows of it.
    pub alert_id: i64,
    /// The sinks its alerts were routed to: where its notifications and recovery go.
    pub sinks: Vec<String>,
}

/// A group: the problems that share a rule and the values of its `group_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The rule's name and the group key, which together name the group.
    pub id: String,
    /// The group key: what PagerDuty keys the group's incident by.
    pub key: String,
    /// When the group last notified (ms); `None` for a group that has not yet.
    pub notified_at: Option<i64>,
    /// When its pending problems are next notified (ms); `None` when none is pending.
    pub flush_at: Option<i64>,
}

/// Dispatch's state for a set of problems and groups, as read from the store.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The problems asked for, and every problem of the groups asked for or theirs.
    pub problems: Vec<Problem>,
    /// Those problems' groups, and the groups asked for, where they exist.
    pub groups: Vec<Group>,
}

/// What dispatch made of an alert: kept with it for `herald alerts`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Fate {
    /// Notified at once (alone, or in a digest) to its sinks.
    Notified {
        /// The group it notified as.
        group: String,
        /// Whether it went in a digest with other problems.
        digest: bool,
    },
    /// Waiting for its group's next notification (a `group_wait` or `group_interval`).
    Grouped {
        /// The group.
        group: String,
        /// When the group notifies (ms).
        due_at: i64,
    },
    /// A repeat of a problem already notified: counted, not sent.
    Folded {
        /// The problem.
        problem: String,
        /// Its repeats folded so far, this one included.
        count: u64,
    },
    /// A recovery that resolved an open problem.
    Resolved {
        /// The problem.
        problem: String,
        /// Whether the problem had been notified (so its sinks heard of the recovery).
        notified: bool,
    },
    /// Matched a silence.
    Silenced {
        /// The silences that matched.
        silences: Vec<i64>,
    },
    /// A rule said `drop = true`.
    Dropped {
        /// The rule.
        rule: Option<String>,
    },
    /// No rule routed it and `[defaults] sinks` is empty.
    Unrouted,
    /// A notification dispatch made: a reminder, a digest or a recovery notice.
    Notice {
        /// The group it is about.
        group: String,
    },
}

/// What an outbox row delivers.
#[derive(Debug, Clone)]
pub enum Payload {
    /// An alert already stored, optionally with its stored form replaced first (dispatch sets
    /// its `group_key`, or marks a recovery `resolve`).
    Stored {
        /// The alert's id.
        id: i64,
        /// Its new form, if it changes.
        rewrite: Option<Alert>,
    },
    /// A new alert made by dispatch (a reminder, a digest, a recovery): stored as dispatched.
    New(Alert),
}

/// One notification: what is sent and where.
#[derive(Debug, Clone)]
pub struct Notification {
    /// What is sent.
    pub payload: Payload,
    /// Its severity: within a sink, critical rows are delivered before warning before info.
    pub severity: Severity,
    /// One outbox row for each.
    pub destinations: Vec<Destination>,
}

/// Everything one dispatch pass decided, committed in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    /// Alerts leaving "undispatched", each with its fate. One that another pass already
    /// dispatched makes the whole commit a no-op ([`DispatchStore::dispatch`] returns false).
    pub decided: Vec<(i64, Fate)>,
    /// The outbox rows to create.
    pub notifications: Vec<Notification>,
    /// Problems created or changed.
    pub problems: Vec<Problem>,
    /// Problems closed (resolved, or quiet for `resolve_after`), by `dedup_key`.
    pub closed: Vec<String>,
    /// Groups created or changed.
    pub groups: Vec<Group>,
    /// Groups left without problems, by id.
    pub ended: Vec<String>,
    /// Alerts suppressed, by silence id.
    pub suppressed: Vec<(i64, u64)>,
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

/// Where an outbox row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowState {
    /// Waiting for its turn (or for its retry time).
    Pending,
    /// Claimed by the sink's worker: an attempt is under way.
    Sending,
    /// The sink confirmed it.
    Sent,
    /// Given up: rejected for good, or too old.
    Dead,
}

impl RowState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Pending => "pending",
            RowState::Sending => "sending",
            RowState::Sent => "sent",
            RowState::Dead => "dead",
        }
    }

    /// The state named `name`, if it is one.
    pub fn parse(name: &str) -> Option<RowState> {
        [
            RowState::Pending,
            RowState::Sending,
            RowState::Sent,
            RowState::Dead,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for RowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Pending, sending or dead.
    pub state: RowState,
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

/// A recent alert and what became of it, as `herald alerts` shows it.
#[derive(Debug, Clone)]
pub struct Recent {
    /// The alert's id.
    pub id: i64,
    /// When it was stored (ms).
    pub created_at: i64,
    /// The alert (as dispatch last wrote it).
    pub alert: Alert,
    /// What dispatch made of it; `None` while it waits for dispatch.
    pub fate: Option<Fate>,
    /// Its outbox rows: sink, target, state, attempts, last error.
    pub deliveries: Vec<(String, String, RowState, u32, Option<String>)>,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another `herald run` owns the state.
    #[error(
        "another herald is running on {path} (it holds {lock}); stop it first, or give this one its own [state] path"
    )]
    Locked {
        /// The state database.
        path: PathBuf,
        /// The lock file the other process holds.
        lock: PathBuf,
    },
    /// The state was here before and is gone or empty: starting fresh would lose queued
    /// alerts and re-page old mail.
    #[error(
        "the state database {path} is {what}, but herald has kept its state there before ({marker} exists); its queued alerts and mailbox cursors would be lost. Restore it from a backup, or, to start with an empty state on purpose, delete {marker}"
    )]
    Vanished {
        /// The state database.
        path: PathBuf,
        /// "missing" or "empty (0 bytes)".
        what: &'static str,
        /// The file that proves a state existed (the lock file).
        marker: PathBuf,
    },
    /// A command that only reads or administers the state found none.
    #[error(
        "no state database at {path}: herald has not run with this [state] path (is the path right?)"
    )]
    NotFound {
        /// Where it looked.
        path: PathBuf,
    },
    /// The database was written by a newer herald.
    #[error("the state database {path} has schema version {found}, newer than this herald's {known}: upgrade herald")]
    TooNew {
        /// The database.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The newest this build knows.
        known: u32,
    },
    /// Anything else: the database failed (full disk, I/O error, corruption).
    #[error("{context}")]
    Backend {
        /// What was being done.
        context: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// A backend failure while doing `context`.
    pub(crate) fn backend(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Backend {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// What the store's calls return.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What ingest (one source per mailbox) needs.
#[async_trait]
pub trait IngestStore: Send + Sync {
    /// The stored cursor of `mailbox`.
    async fn cursor(&self, mailbox: &MailboxId) -> Result<Option<Cursor>>;
    /// Commits a batch in one transaction: each message's routed alert (undispatched), a
    /// pending mark per message when asked, the backlog entries it finishes, and the cursor.
    /// Returns the UIDs whose content key was already stored (mail seen before, under other
    /// UIDs or by an earlier run), which stored nothing. The batch is consumed as it is
    /// encoded, so a chunk's alerts and their JSON are not held twice.
    async fn commit(&self, batch: Batch) -> Result<Vec<u32>> {
        Ok(self.commit_reporting(batch).await?.known)
    }
    /// [`IngestStore::commit`], also reporting the messages stored whose Message-ID an
    /// earlier, different message had (for ingest's WARN).
    async fn commit_reporting(&self, batch: Batch) -> Result<Committed>;
    /// Records a message the server cannot give (a poison message): it counts as processed
    /// for the cursor and the backlog, so it is not fetched again, but it gets no mark, so it
    /// stays on the server untouched for a person to look at. `notice`, the alert that names
    /// it, is stored in the same transaction, undispatched.
    async fn skip_unreadable(
        &self,
        mailbox: &MailboxId,
        uidvalidity: u32,
        uid: u32,
        notice: Option<Routed>,
    ) -> Result<()>;
    /// Records a first start (or a new UIDVALIDITY): the cursor jumps to `last` and `recent`
    /// are the UIDs still to process. One transaction.
    async fn record_baseline(
        &self,
        mailbox: &MailboxId,
        uidvalidity: u32,
        last: u32,
        recent: Vec<u32>,
    ) -> Result<()>;
    /// Up to `limit` backlog UIDs, lowest first.
    async fn backlog(
        &self,
        mailbox: &MailboxId,
        uidvalidity: u32,
        limit: usize,
    ) -> Result<Vec<u32>>;
    /// Removes backlog UIDs that turned out to be gone from the server.
    async fn finish_backlog(
        &self,
        mailbox: &MailboxId,
        uidvalidity: u32,
        uids: Vec<u32>,
    ) -> Result<()>;
    /// UIDs whose alert is stored but that are not yet marked processed on the server.
    async fn pending_marks(&self, mailbox: &MailboxId, uidvalidity: u32) -> Result<Vec<u32>>;
    /// Forgets marks the server confirmed, and every mark of an older UIDVALIDITY.
    async fn clear_marks(
        &self,
        mailbox: &MailboxId,
        uidvalidity: u32,
        uids: Vec<u32>,
    ) -> Result<()>;
}

/// What dispatch needs.
#[async_trait]
pub trait DispatchStore: Send + Sync {
    /// Up to `limit` undispatched alerts, oldest first.
    async fn undispatched(&self, limit: usize) -> Result<Vec<Undispatched>>;
    /// The problems named by `dedup_keys`, the groups named by `groups`, and, for each of
    /// those groups and each group of a problem found, the group and all its problems.
    async fn state(&self, dedup_keys: Vec<String>, groups: Vec<String>) -> Result<State>;
    /// The state whose timers have come at `now`: groups due to notify, problems due for a
    /// reminder or to close, with their groups and their groups' problems.
    async fn due(&self, now: i64) -> Result<State>;
    /// When the next timer of [`DispatchStore::due`] comes, if any.
    async fn next_timer(&self) -> Result<Option<i64>>;
    /// The stored alerts with these ids (those that exist).
    async fn alerts(&self, ids: Vec<i64>) -> Result<Vec<(i64, Alert)>>;
    /// Commits a pass in one transaction: fates, outbox rows, state, silence counts. Returns
    /// false, having changed nothing, when one of its alerts was already dispatched.
    async fn dispatch(&self, decisions: Decisions) -> Result<bool>;
}

/// What a delivery worker needs.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` pending rows of `sink` due at `now`, the most severe first and
    /// then the longest due: they become `sending` until marked sent, retried, dead or
    /// released.
    async fn claim(&self, sink: &str, now: i64, limit: usize) -> Result<Vec<Due>>;
    /// Returns claimed rows to `pending` untouched (their turn did not come).
    async fn release(&self, ids: Vec<i64>) -> Result<()>;
    /// Returns every `sending` row to `pending`: after a reload abandoned deliveries in flight
    /// at its deadline (unconfirmed, so they are attempted again, as after a crash). Only
    /// while no worker runs. Returns how many.
    async fn requeue_sending(&self) -> Result<usize>;
    /// When `sink`'s next pending row falls due, if it has one.
    async fn next_due(&self, sink: &str) -> Result<Option<i64>>;
    /// Marks one row delivered (the sink confirmed it).
    async fn mark_sent(&self, id: i64) -> Result<()>;
    /// Records a failed attempt; the row is tried again at `next_attempt_at`.
    async fn mark_retry(&self, id: i64, next_attempt_at: i64, error: String) -> Result<()>;
    /// Gives a row up. With `notice`, in the same transaction, stores an alert about it,
    /// routed to the notice's sinks and handed to dispatch like any other alert.
    async fn mark_dead(
        &self,
        id: i64,
        attempted: bool,
        error: String,
        notice: Option<Routed>,
    ) -> Result<()>;
}

/// What the operator's commands, readiness and housekeeping need.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Every row not yet sent (pending, sending, dead), oldest first.
    async fn unsent(&self) -> Result<Vec<Row>>;
    /// Queues a pending or dead row for an attempt now; false if there is no such row.
    async fn retry_now(&self, id: i64) -> Result<bool>;
    /// Deletes a pending or dead row; false if there is no such row.
    async fn drop_row(&self, id: i64) -> Result<bool>;
    /// Forgets alerts older than `before` (ms) that are dispatched and whose rows are all
    /// finished; their content keys go with them. Returns how many.
    async fn prune(&self, before: i64) -> Result<usize>;
    /// Fails unless the store can take a write now.
    async fn check_writable(&self) -> Result<()>;
    /// Row counts by sink and state.
    async fn counts(&self) -> Result<Vec<(String, RowState, u64)>>;
    /// The alerts stored since `since` (ms), newest last, at most the `limit` newest.
    async fn recent(&self, since: i64, limit: usize) -> Result<Vec<Recent>>;
}

/// Everything a daemon's stages need, from one backend.
pub trait Store:
    IngestStore + DispatchStore + OutboxStore + AdminStore + SilenceStore + ExpectStore
{
}
impl<T> Store for T where
    T: IngestStore + DispatchStore + OutboxStore + AdminStore + SilenceStore + ExpectStore
{
}

/// How a process uses the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `herald run`: the one owner. Creates the state on a first start, migrates it, and
    /// returns rows a crash left `sending` to `pending`.
    Daemon,
    /// Commands that change rows beside a running daemon (`outbox retry`, `outbox drop`):
    /// never create the state, never reset rows.
    Admin,
    /// Commands that only read (`outbox list`): change nothing.
    ReadOnly,
}

/// Opens the state at `path` for `access`.
pub async fn open(path: PathBuf, access: Access) -> Result<Arc<dyn Store>> {
    let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path, access))
        .await
        .map_err(|e| StoreError::backend("opening the state database failed", e))??;
    Ok(Arc::new(store))
}

/// Test support: a fresh store, and alerts put in it the way the stages do.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A daemon's store in a fresh directory (kept alive by the returned guard).
    pub(crate) async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path().join("sub/herald.db"), Access::Daemon)
            .await
            .unwrap();
        (dir, store)
    }

    /// Destinations: one row for each sink named.
    pub(crate) fn to(sinks: &[&str]) -> Vec<Destination> {
        sinks
            .iter()
            .map(|s| Destination {
                sink: (*s).into(),
                target: String::new(),
            })
            .collect()
    }

    /// A batch of `uids` in `default/INBOX`, each with a sample alert routed to `sinks`
    /// (content key `k{uid}`).
    pub(crate) fn batch(uidvalidity: u32, uids: &[u32], sinks: &[&str], mark: bool) -> Batch {
        Batch {
            mailbox: MailboxId::new("default", "INBOX"),
            uidvalidity,
            messages: uids
                .iter()
                .map(|uid| Fetched {
                    uid: *uid,
                    content_key: format!("k{uid}"),
                    routed: (!sinks.is_empty()).then(|| Routed {
                        alert: Alert::sample(),
                        sinks: sinks.iter().map(|s| (*s).to_owned()).collect(),
                    }),
                    settled: None,
                })
                .collect(),
            cursor: uids.iter().copied().max().unwrap_or(0),
            mark,
            sightings: Vec::new(),
        }
    }

    /// Dispatches every waiting alert to one row per routed sink, as plain fan-out does.
    pub(crate) async fn dispatch_all(store: &dyn Store) {
        let waiting = store.undispatched(usize::MAX).await.unwrap();
        let mut decisions = Decisions::default();
        for u in waiting {
            let group = u.routed.alert.dedup_key.clone();
            decisions.decided.push((
                u.id,
                Fate::Notified {
                    group,
                    digest: false,
                },
            ));
            decisions.notifications.push(Notification {
                payload: Payload::Stored {
                    id: u.id,
                    rewrite: None,
                },
                severity: u.routed.alert.severity,
                destinations: to(&u
                    .routed
                    .sinks
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()),
            });
        }
        assert!(store.dispatch(decisions).await.unwrap());
    }

    /// Commits `uids` routed to `sinks` and dispatches them.
    pub(crate) async fn put(store: &dyn Store, uidvalidity: u32, uids: &[u32], sinks: &[&str]) {
        store
            .commit(batch(uidvalidity, uids, sinks, false))
            .await
            .unwrap();
        dispatch_all(store).await;
    }
}
