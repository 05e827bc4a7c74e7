//! One IMAP folder as a source: one session at a time, watching the folder with IDLE, and
//! the ingest of what it finds (fetch, classify, route, commit, mark processed).
//!
//! Each watched folder of each account runs its own [`Mailbox`] loop, with its own session
//! and its own cursor (keyed by `(account, folder)`), so a slow or failing folder never holds
//! up another (chatmail's one loop per inbox).
//!
//! A session's life: connect (implicit TLS, STARTTLS or plain), log in, SELECT, then loop:
//! fetch everything above the cursor, store it, mark it processed on the server, IDLE until
//! the server reports a change or the refresh interval passes, and fetch again. Any error or
//! timeout drops the session — a session whose command was cut short may be mid-response and
//! is never reused — and a new one is made after a capped, jittered backoff (2 s → 80 s, as
//! chatmail found works; reset after each successful SELECT).
//!
//! What this module guarantees, with the store (see `store`):
//! - nothing is marked processed on the server before its alert is committed;
//! - every fetch filters out UIDs at or below the cursor (`UID FETCH n:*` returns the last
//!   message even when its UID is below n, RFC 3501 §6.4.8);
//! - after every IDLE exit and every reconnect, new mail is fetched, and a change reported
//!   while not idling is not missed (unsolicited EXISTS are checked before each IDLE);
//! - a push hint ([`crate::push`]) leaves IDLE (DONE) and fetches at once; hints arriving
//!   during a fetch make one more fetch after it, and push-started fetches are at least
//!   [`MIN_FETCH_GAP`] apart. A hint only starts a fetch: what is fetched is decided by the
//!   cursor, as after any IDLE exit;
//! - the first start on a mailbox (or after its UIDVALIDITY changed) alerts only on unseen
//!   mail younger than `first_start_window`; the rest is recorded as baseline;
//! - at most `max_message_bytes` of any message is fetched, and a batch is committed every
//!   [`CHUNK`] messages, so memory stays bounded however much mail is waiting;
//! - a message the server cannot give (a Maildir file it cannot read: Dovecot answers its
//!   FETCH with what it has, no body, then `BYE` or `NO`) is counted against its UID, across
//!   reconnects; after [`POISON_LIMIT`] failures it is skipped — processed for the cursor, not
//!   marked on the server — and one alert names it, so the mail after it flows. What came
//!   before it in the same FETCH is committed first. When a FETCH of several messages fails
//!   without naming one, the next pass fetches them one at a time to find it. The counts
//!   live in memory (one [`Mailbox`] outlives its sessions): a restart forgets them, which
//!   costs at most [`POISON_LIMIT`] more attempts, while a skipped UID stays behind the
//!   stored cursor for good;
//! - a mark the server refuses (a `move:` folder that does not exist, a read-only mailbox) is
//!   logged at ERROR and retried after a growing delay ([`MARK_RETRY`]), in the same session:
//!   the marks stay pending in the store, and new mail is still fetched and alerted on;
//! - a message's content key is its Message-ID (else a hash of its header block) and a hash
//!   of its fetched bytes ([`content_key`]): the same bytes again (a recreated mailbox)
//!   alert once, while a different message reusing a Message-ID alerts, with a WARN naming
//!   the earlier alert.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use async_imap::imap_proto::{Response, Status};
use async_imap::types::UnsolicitedResponse;
use futures::TryStreamExt;
use herald_bridges::backoff::Backoff;
use herald_bridges::{Alert, Kind, Severity};
use tokio::sync::Notify;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Account, Processed};
use crate::error::chain;
use crate::metrics::Metrics;
use crate::push::{PushWake, MIN_FETCH_GAP};
use crate::route::{Decision, Router};
use crate::store::{self, IngestStore, MailboxId, StoreError};

mod session;

use session::{Idled, Imap, Selected, Session};

/// Messages committed per transaction: one fsync per chunk rather than per message, and a
/// bound on the alerts held in memory.
pub const CHUNK: usize = 128;

/// UIDs per UID FETCH / STORE command when the set is an explicit list, keeping command
/// lines far below servers' limits (Dovecot accepts 64 KiB: `imap_max_line_length`).
const UID_SET_LIMIT: usize = 500;

/// Reconnect backoff, 2 s to 80 s (chatmail's BACKOFF_MIN_MS / BACKOFF_MAX_MS), reset after
/// each successful SELECT.
const RECONNECT: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(80));

/// Failed fetches of one message, counted across reconnects, after which it is skipped as
/// unreadable. More than one, so a passing hiccup never skips mail; few, so a poison message
/// holds up the mail behind it for seconds (one reconnect each), not forever.
pub const POISON_LIMIT: u32 = 3;

/// Delay before marking processed is tried again after the server refused it: 10 s, then
/// growing to 10 min. A refusal is a configuration or server problem a person must fix; the
/// retries only notice the fix, so they need not be frequent.
pub const MARK_RETRY: Backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(600));

/// Logs in and selects each folder of `account`, and checks that a `move:` target exists
/// (naming the server's hierarchy separator when the target uses another), then logs out:
/// `herald check --connect`.
pub async fn probe(account: &Account) -> Result<()> {
    for folder in &account.folders {
        let id = MailboxId::new(&account.name, folder);
        let health = Metrics::new().session(&id.to_string());
        let imap = Imap::new(account.imap.clone(), &id, health)?;
        let mut session = imap.connect().await.map_err(SessionError::into_inner)?;
        imap.select(&mut session)
            .await
            .map_err(SessionError::into_inner)?;
        let checked = match &account.imap.processed {
            Processed::Move(target) => check_move_target(&imap, &mut session, target).await,
            _ => Ok(()),
        };
        imap.logout(session).await;
        checked?;
    }
    Ok(())
}

/// For `herald push-test`: creates `folder` in `account` and appends `raw` to it; returns
/// once the server confirmed the APPEND (so Dovecot's push script has run).
pub async fn append_to_new_folder(account: &Account, folder: &str, raw: &[u8]) -> Result<()> {
    let id = MailboxId::new(&account.name, folder);
    let imap = Imap::new(
        account.imap.clone(),
        &id,
        Metrics::new().session(&id.to_string()),
    )?;
    let mut session = imap.connect().await.map_err(SessionError::into_inner)?;
    let result = async {
        imap.command(session.create(folder)).await?;
        imap.command(session.append(folder, Some("(\\Seen)"), None, raw))
            .await
    }
    .await
    .map_err(SessionError::into_inner);
    imap.logout(session).await;
    result
}

/// For `herald push-test`: deletes `folder` (and its mail) from `account`.
pub async fn delete_folder(account: &Account, folder: &str) -> Result<()> {
    let id = MailboxId::new(&account.name, folder);
    let imap = Imap::new(
        account.imap.clone(),
        &id,
        Metrics::new().session(&id.to_string()),
    )?;
    let mut session = imap.connect().await.map_err(SessionError::into_inner)?;
    let result = imap
        .command(session.delete(folder))
        .await
        .map_err(SessionError::into_inner);
    imap.logout(session).await;
    result
}

/// Fails, saying why, unless the server lists `target` as a folder mail can be moved to.
async fn check_move_target(imap: &Imap, session: &mut Session, target: &str) -> Result<()> {
    let names = imap
        .command(async {
            session
                .list(Some(""), Some("*"))
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await
        .map_err(SessionError::into_inner)?;
    let selectable = |name: &str| {
        names.iter().any(|n| {
            n.name() == target_name(name)
                && !n
                    .attributes()
                    .iter()
                    .any(|a| matches!(a, async_imap::types::NameAttribute::NoSelect))
        })
    };
    if selectable(target) {
        return Ok(());
    }
    let separator = names.iter().find_map(|n| n.delimiter()).unwrap_or("/");
    let mut message = format!(
        "processed = \"move:{target}\": the server has no folder {target:?} to move processed mail to"
    );
    if let Some(other) = ['/', '.']
        .into_iter()
        .find(|&c| target.contains(c) && c.to_string() != separator)
    {
        let suggested = target.replace(other, separator);
        message.push_str(&format!(
            "; the server's hierarchy separator is {separator:?}, not {other:?}: write \"move:{suggested}\""
        ));
        if !selectable(&suggested) {
            message.push_str(" and create that folder");
        }
    } else {
        message.push_str("; create it first");
    }
    let mut listed: Vec<&str> = names.iter().map(|n| n.name()).collect();
    listed.sort_unstable();
    let more = listed.len().saturating_sub(20);
    listed.truncate(20);
    message.push_str(&format!(" (folders: {}", listed.join(", ")));
    if more > 0 {
        message.push_str(&format!(", and {more} more"));
    }
    message.push(')');
    bail!(message)
}

/// `name` as LIST reports it: `INBOX` is case-insensitive (RFC 3501 §5.1).
fn target_name(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    }
}

/// Watches one folder and feeds the store.
pub struct Mailbox {
    imap: Imap,
    id: MailboxId,
    router: Router,
    store: Arc<dyn IngestStore>,
    /// Told after every commit that stored alerts: dispatch has work.
    dispatch: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// What failed fetches left to know, across sessions (see [`Unreadable`]).
    unreadable: Mutex<Unreadable>,
    /// Marking processed after the server refused it (see [`MARK_RETRY`]), across sessions.
    marking: Mutex<MarkRetry>,
    /// Set when a look at the unsolicited responses (for a FETCH's failure) found new mail
    /// announced, which the session loop would otherwise no longer see.
    announced: AtomicBool,
    /// Push hints for this folder (see [`crate::push`]).
    push: Arc<PushWake>,
}

/// The fetch failures of one mailbox, kept in memory across its sessions.
#[derive(Debug, Default)]
struct Unreadable {
    /// The UIDVALIDITY the counts belong to: a new one makes them meaningless.
    uidvalidity: u32,
    /// Failed fetches by UID.
    failures: HashMap<u32, Failure>,
    /// A FETCH of several messages failed without naming one: the next pass fetches one at
    /// a time, to find which.
    one_by_one: bool,
}

/// One UID's failed fetches.
#[derive(Debug, Default)]
struct Failure {
    /// How many so far.
    count: u32,
    /// Its size, when the server said (`RFC822.SIZE` comes from the Maildir file's name).
    size: Option<u32>,
}

/// When marking processed may be tried again.
#[derive(Debug, Default)]
struct MarkRetry {
    /// Refusals in a row.
    refusals: u32,
    /// Not before then; `None`: now.
    until: Option<Instant>,
}

impl Mailbox {
    /// Prepares the folder `folder` of `account` (TLS roots are read here, so a bad
    /// `ca_file` fails at start).
    pub fn new(
        account: &Account,
        folder: &str,
        router: Router,
        store: Arc<dyn IngestStore>,
        dispatch: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let id = MailboxId::new(&account.name, folder);
        let health = metrics.session(&id.to_string());
        Ok(Mailbox {
            imap: Imap::new(account.imap.clone(), &id, health)?,
            id,
            router,
            store,
            dispatch,
            metrics,
            unreadable: Mutex::default(),
            marking: Mutex::default(),
            announced: AtomicBool::new(false),
            push: Arc::default(),
        })
    }

    /// Where push hints for this folder go: register it with [`crate::push::Pushes`].
    pub fn push_wake(&self) -> Arc<PushWake> {
        self.push.clone()
    }

    /// Which folder of which account this is.
    pub fn id(&self) -> &MailboxId {
        &self.id
    }

    /// Runs until `stop` is cancelled, reconnecting after every failure. Returns an error
    /// only for failures that reconnecting cannot fix (the store cannot be written).
    pub async fn run(&self, stop: CancellationToken) -> Result<()> {
        let mut failures = 0;
        while !stop.is_cancelled() {
            let result = self.session(&stop, &mut failures).await;
            self.imap.health.set_live(false);
            match result {
                Ok(()) => break,
                Err(SessionError::Fatal(error)) => return Err(error),
                Err(SessionError::Imap(error)) => {
                    self.metrics.imap_reconnect();
                    let delay = RECONNECT.delay(failures);
                    failures = failures.saturating_add(1);
                    warn!(
                        server = %self.imap.config.host,
                        mailbox = %self.id,
                        error = %chain(error.as_ref()),
                        retry_in = ?delay,
                        "IMAP session failed, reconnecting."
                    );
                    tokio::select! {
                        () = sleep(delay) => {}
                        () = stop.cancelled() => break,
                    }
                }
            }
        }
        Ok(())
    }

    /// One session, from connect to an error or to `stop`.
    async fn session(
        &self,
        stop: &CancellationToken,
        failures: &mut u32,
    ) -> Result<(), SessionError> {
        let mut session = self.imap.connect().await?;
        let selected = self.imap.select(&mut session).await?;
        *failures = 0;
        self.imap.health.set_live(true);
        let has_idle = self
            .imap
            .command(session.capabilities())
            .await?
            .has_str("IDLE");
        if !has_idle {
            warn!(server = %self.imap.config.host, mailbox = %self.id, interval = ?self.imap.config.poll_interval, "Server lacks IDLE, polling.");
        }
        self.start_mailbox(&mut session, selected).await?;
        // A push-started fetch begins no sooner than this (see MIN_FETCH_GAP).
        let mut next_push_fetch = Instant::now();
        loop {
            self.fetch_new(&mut session, selected).await?;
            self.apply_marks(&mut session, selected).await?;
            if stop.is_cancelled() {
                break;
            }
            let announced = self.announced.swap(false, Ordering::Relaxed);
            if drain_for_new_mail(&session.unsolicited_responses) || announced {
                continue;
            }
            if self.push.take() {
                // Hints came while fetching (all of them together): look once more.
                tokio::select! {
                    () = tokio::time::sleep_until(next_push_fetch) => {}
                    () = stop.cancelled() => {}
                }
                next_push_fetch = self.pushed();
                continue;
            }
            session = if has_idle {
                let push = (&*self.push, next_push_fetch);
                match self
                    .imap
                    .idle(session, stop, self.mark_retry_at(), push)
                    .await?
                {
                    Idled::Woke(session) => session,
                    Idled::Pushed(session) => {
                        next_push_fetch = self.pushed();
                        session
                    }
                    Idled::Stopped => return Ok(()),
                }
            } else {
                tokio::select! {
                    () = sleep(self.imap.config.poll_interval) => {}
                    () = stop.cancelled() => {}
                    () = async {
                        tokio::time::sleep_until(next_push_fetch).await;
                        self.push.wait().await;
                    } => next_push_fetch = self.pushed(),
                }
                self.imap.command(session.noop()).await?;
                session
            };
        }
        self.imap.logout(session).await;
        Ok(())
    }

    /// Counts a fetch a push started; returns when the next one may start.
    fn pushed(&self) -> Instant {
        self.metrics.push_fetch();
        debug!(mailbox = %self.id, "Push hint: fetching.");
        Instant::now() + MIN_FETCH_GAP
    }

    /// On the first start on this mailbox (or a new UIDVALIDITY), records the baseline: the
    /// cursor moves to the last existing message, and only unseen mail younger than the window
    /// is processed, through the backlog.
    async fn start_mailbox(
        &self,
        session: &mut Session,
        selected: Selected,
    ) -> Result<(), SessionError> {
        let cursor = self.store.cursor(&self.id).await.map_err(fatal)?;
        match cursor {
            // UIDs only grow: the cursor below UIDNEXT is the normal case.
            Some(c) if c.uidvalidity == selected.uidvalidity && c.last_uid < selected.uidnext => {
                return self.process_backlog(session, selected).await
            }
            Some(c) if c.uidvalidity == selected.uidvalidity => warn!(
                mailbox = %self.id,
                cursor = c.last_uid,
                uidnext = selected.uidnext,
                "UIDNEXT went backwards without a UIDVALIDITY change (a restored mailbox?); rescanning. Mail already alerted on is recognised and skipped."
            ),
            Some(c) => warn!(
                mailbox = %self.id,
                old = c.uidvalidity,
                new = selected.uidvalidity,
                "UIDVALIDITY changed: the mailbox was recreated; rescanning. Mail already alerted on is recognised and skipped."
            ),
            None => {}
        }
        let window = chrono::Duration::from_std(self.imap.config.first_start_window)
            .unwrap_or(chrono::Duration::days(1));
        let since = chrono::Utc::now() - window;
        let last = selected.uidnext.saturating_sub(1);
        let found = self
            .imap
            .command(session.uid_search(format!("UNSEEN SINCE {}", since.format("%-d-%b-%Y"))))
            .await?;
        let mut candidates: Vec<u32> = found.into_iter().filter(|&uid| uid <= last).collect();
        candidates.sort_unstable();
        // SEARCH SINCE has day granularity; INTERNALDATE gives the exact arrival time.
        let mut recent = Vec::with_capacity(candidates.len());
        for set in uid_sets(&candidates) {
            let mut stream = self
                .imap
                .command(session.uid_fetch(set, "(UID INTERNALDATE)"))
                .await?;
            while let Some(item) = self.imap.next(&mut stream).await? {
                let young = item.internal_date().is_none_or(|date| date >= since);
                if let Some(uid) = item
                    .uid
                    .filter(|uid| young && candidates.binary_search(uid).is_ok())
                {
                    recent.push(uid);
                }
            }
        }
        recent.sort_unstable();
        recent.dedup();
        let alerting = recent.len();
        self.store
            .record_baseline(&self.id, selected.uidvalidity, last, recent)
            .await
            .map_err(fatal)?;
        info!(
            mailbox = %self.id,
            alerting,
            baseline = last,
            window = %humantime::format_duration(self.imap.config.first_start_window),
            "First start on this mailbox: only recent unseen mail will alert; older mail is recorded as seen."
        );
        self.process_backlog(session, selected).await
    }

    /// Processes the UIDs the baseline left to alert on.
    async fn process_backlog(
        &self,
        session: &mut Session,
        selected: Selected,
    ) -> Result<(), SessionError> {
        loop {
            let backlog = self
                .store
                .backlog(&self.id, selected.uidvalidity, UID_SET_LIMIT)
                .await
                .map_err(fatal)?;
            let Some(set) = uid_sets(&backlog).into_iter().next() else {
                return Ok(());
            };
            let done = self.fetch_and_store(session, selected, &set, 0).await?;
            // Whatever the server no longer has (expunged meanwhile) leaves the backlog too.
            let gone: Vec<u32> = backlog
                .iter()
                .copied()
                .filter(|uid| !done.contains(uid))
                .collect();
            self.store
                .finish_backlog(&self.id, selected.uidvalidity, gone)
                .await
                .map_err(fatal)?;
            self.apply_marks(session, selected).await?;
        }
    }

    /// Fetches and stores every message above the cursor.
    async fn fetch_new(
        &self,
        session: &mut Session,
        selected: Selected,
    ) -> Result<(), SessionError> {
        let cursor = self
            .store
            .cursor(&self.id)
            .await
            .map_err(fatal)?
            .map_or(0, |c| c.last_uid);
        let set = format!("{}:*", cursor.saturating_add(1));
        self.fetch_and_store(session, selected, &set, cursor)
            .await?;
        Ok(())
    }

    /// Fetches `set`, keeps the messages above `floor`, and commits them in chunks; returns
    /// the UIDs stored. After a FETCH of several messages failed without naming one, fetches
    /// them one at a time, so the one that fails is known.
    async fn fetch_and_store(
        &self,
        session: &mut Session,
        selected: Selected,
        set: &str,
        floor: u32,
    ) -> Result<Vec<u32>, SessionError> {
        if !self.unreadable(selected).one_by_one {
            return self.fetch_set(session, selected, set, floor, None).await;
        }
        // `UID SEARCH UID n:*` has the same `*` semantics as FETCH: filtered the same way.
        let found = self
            .imap
            .command(session.uid_search(format!("UID {set}")))
            .await?;
        let mut uids: Vec<u32> = found.into_iter().filter(|&uid| uid > floor).collect();
        uids.sort_unstable();
        debug!(mailbox = %self.id, count = uids.len(), "Fetching one message at a time after a failed FETCH.");
        let mut stored = Vec::with_capacity(uids.len());
        for uid in uids {
            let one = uid.to_string();
            stored.extend(
                self.fetch_set(session, selected, &one, floor, Some(uid))
                    .await?,
            );
        }
        self.unreadable(selected).one_by_one = false;
        Ok(stored)
    }

    /// Fetches `set` (or the one UID `alone`), keeps the messages above `floor`, and commits
    /// them in chunks; returns the UIDs stored. A message the server did not give — a
    /// response without its body, or no response for `alone` — ends the fetch: what came
    /// before it is committed, what came after it is left for the next fetch (so the cursor
    /// never passes it), and it is counted against its UID ([`Mailbox::failed_fetch`]).
    async fn fetch_set(
        &self,
        session: &mut Session,
        selected: Selected,
        set: &str,
        floor: u32,
        alone: Option<u32>,
    ) -> Result<Vec<u32>, SessionError> {
        let max = self.imap.config.max_message_bytes;
        let query = format!("(UID RFC822.SIZE BODY.PEEK[]<0.{max}>)");
        let origin = Some((self.id.account.as_str(), self.id.folder.as_str()));
        let mut stored = Vec::new();
        let mut chunk = Vec::with_capacity(CHUNK);
        // The lowest UID the server answered without its body, with its size if it gave one.
        let mut failed: Option<(u32, Option<u32>)> = None;
        let mut got_alone = false;
        let mut stream = self.imap.command(session.uid_fetch(set, &query)).await?;
        let ended = loop {
            let item = match self.imap.next(&mut stream).await {
                Ok(Some(item)) => item,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            let Some(uid) = item.uid.filter(|&uid| uid > floor) else {
                continue; // below the cursor (`n:*` semantics) or an unsolicited FETCH
            };
            if failed.is_some_and(|(first, _)| uid > first) {
                continue; // fetched again after the failed one is dealt with
            }
            let Some(raw) = item.body() else {
                failed = Some((uid, item.size));
                continue;
            };
            got_alone |= alone == Some(uid);
            crate::crashpoint::hit("after-fetch");
            self.metrics.messages_fetched(1);
            let truncated = item.size.is_some_and(|size| size > max);
            let decision = self.router.decide(raw, truncated, origin);
            let content_key = content_key(decision.alert.message_id.as_deref(), raw);
            chunk.push((uid, content_key, decision));
            if chunk.len() >= CHUNK && failed.is_none() {
                stored.extend(self.commit(selected, std::mem::take(&mut chunk)).await?);
            }
        };
        drop(stream);
        if let Some((first, _)) = failed {
            chunk.retain(|(uid, ..)| *uid < first);
        }
        // What arrived whole is kept even when the fetch broke off: it is not fetched again.
        stored.extend(self.commit(selected, chunk).await?);
        ended?;
        // async-imap ends a FETCH's stream at its tagged response, NO included, and files an
        // untagged NO or BYE with the unsolicited responses: the server's word is there.
        let (new_mail, complaint) = drain(&session.unsolicited_responses);
        if new_mail {
            self.announced.store(true, Ordering::Relaxed);
        }
        let failed = failed.or_else(|| alone.filter(|_| !got_alone).map(|uid| (uid, None)));
        match (failed, complaint) {
            (Some((uid, size)), complaint) => {
                Err(self.failed_fetch(selected, uid, size, complaint).await)
            }
            (None, Some(complaint)) if alone.is_none() => {
                self.unreadable(selected).one_by_one = true;
                Err(anyhow!(
                    "FETCH {set} failed: {complaint} (fetching one message at a time next, to find the one that fails)"
                )
                .into())
            }
            // Whole (a complaint beside a message fetched alone and whole is not about it).
            (None, _) => {
                let mut unreadable = self.unreadable(selected);
                if !unreadable.failures.is_empty() {
                    unreadable.failures.retain(|uid, _| !stored.contains(uid));
                }
                drop(unreadable);
                Ok(stored)
            }
        }
    }

    /// The failure bookkeeping for `selected`'s UIDVALIDITY (a new one forgets the old).
    fn unreadable(&self, selected: Selected) -> MutexGuard<'_, Unreadable> {
        // Only plain updates happen under this lock; a poisoned one holds valid counts.
        let mut unreadable = self
            .unreadable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if unreadable.uidvalidity != selected.uidvalidity {
            *unreadable = Unreadable {
                uidvalidity: selected.uidvalidity,
                ..Unreadable::default()
            };
        }
        unreadable
    }

    /// Counts a failed fetch of `uid`; at [`POISON_LIMIT`], skips it and stores the alert
    /// that names it. Returns the error that ends the session either way: a server that
    /// failed a FETCH may have closed the connection (Dovecot does, by default).
    async fn failed_fetch(
        &self,
        selected: Selected,
        uid: u32,
        size: Option<u32>,
        complaint: Option<String>,
    ) -> SessionError {
        let error = complaint.unwrap_or_else(|| "the server sent no content for it".to_owned());
        let (count, size) = {
            let mut unreadable = self.unreadable(selected);
            let failure = unreadable.failures.entry(uid).or_default();
            failure.count = failure.count.saturating_add(1);
            failure.size = size.or(failure.size);
            (failure.count, failure.size)
        };
        if count < POISON_LIMIT {
            return anyhow!("cannot fetch message UID {uid} (failure {count} of {POISON_LIMIT} before it is skipped): {error}").into();
        }
        let now = chrono::Utc::now();
        let alert = unreadable_notice(&self.id, selected.uidvalidity, uid, size, &error);
        let decision = self.router.route_own(alert, &[], now);
        let notice = (!decision.dropped && !decision.sinks.is_empty()).then(|| store::Routed {
            alert: decision.alert,
            sinks: decision.sinks,
        });
        let sinks = notice.as_ref().map(|n| n.sinks.join(","));
        if let Err(e) = self
            .store
            .skip_unreadable(&self.id, selected.uidvalidity, uid, notice)
            .await
        {
            return fatal(e);
        }
        self.unreadable(selected).failures.remove(&uid);
        self.metrics
            .message_skipped(&format!("{} UID {uid}", self.id));
        error!(
            mailbox = %self.id,
            uid,
            size,
            error = %error,
            sinks = sinks.as_deref().unwrap_or("none: a rule dropped the alert, or no sink takes it"),
            "The server failed to give this message {POISON_LIMIT} times: skipped. It is left on the server, not marked processed; look at it there (its file may be unreadable)."
        );
        if sinks.is_some() {
            self.dispatch.notify_one();
        }
        anyhow!("message UID {uid} skipped after {POISON_LIMIT} failed fetches: {error}").into()
    }

    /// Commits a chunk: alerts with their routed sinks, marks and the cursor, in one
    /// transaction; then tells dispatch.
    async fn commit(
        &self,
        selected: Selected,
        chunk: Vec<(u32, String, Decision)>,
    ) -> Result<Vec<u32>, SessionError> {
        if chunk.is_empty() {
            return Ok(Vec::new());
        }
        let cursor = chunk.iter().map(|(uid, ..)| *uid).max().unwrap_or(0);
        let sightings = self.sightings(&chunk);
        let mut fates = Vec::with_capacity(chunk.len());
        let messages = chunk
            .into_iter()
            .map(|(uid, content_key, decision)| {
                let Decision {
                    alert,
                    sinks,
                    dropped,
                    ..
                } = decision;
                let fate = Fate::of(uid, &alert, dropped, &sinks);
                let (routed, settled) = match &fate.route {
                    Route::Sinks(_) => (Some(store::Routed { alert, sinks }), None),
                    Route::Dropped { .. } => {
                        let rule = alert.rule.clone();
                        (None, Some((alert, store::Fate::Dropped { rule })))
                    }
                    Route::Nowhere => (None, Some((alert, store::Fate::Unrouted))),
                };
                fates.push(fate);
                store::Fetched {
                    uid,
                    content_key,
                    routed,
                    settled,
                }
            })
            .collect();
        let batch = store::Batch {
            mailbox: self.id.clone(),
            uidvalidity: selected.uidvalidity,
            messages,
            cursor,
            mark: self.imap.config.processed != Processed::None,
            sightings,
        };
        let committed = self.store.commit_reporting(batch).await.map_err(|e| {
            SessionError::Fatal(
                anyhow::Error::new(e).context("cannot store alerts; nothing was marked processed"),
            )
        })?;
        let mut stored_any = false;
        for fate in &fates {
            let uid = fate.uid;
            if committed.known.contains(&uid) {
                info!(mailbox = %self.id, uid, title = %fate.title, "Already alerted on (the same message under another UID); skipped.");
                continue;
            }
            if let Some(reused) = committed.reused.iter().find(|r| r.uid == uid) {
                warn!(
                    mailbox = %self.id,
                    uid,
                    message_id = fate.message_id.as_deref().unwrap_or(""),
                    title = %fate.title,
                    earlier_alert = reused.earlier_id,
                    earlier_title = %reused.earlier_title,
                    "A different message reuses the Message-ID of an earlier alert (forged, or altered on the way); alerting on it too."
                );
            }
            match &fate.route {
                Route::Dropped { rule } => {
                    debug!(mailbox = %self.id, uid, rule = %rule, "Alert dropped by rule.");
                }
                Route::Nowhere => {
                    self.metrics.alert(&fate.kind, fate.rule.as_deref());
                    self.metrics.unrouted();
                    warn!(mailbox = %self.id, uid, kind = %fate.kind, title = %fate.title, "Alert matched no rule with sinks and [defaults] sinks is empty; not delivered.");
                }
                Route::Sinks(sinks) => {
                    stored_any = true;
                    self.metrics.alert(&fate.kind, fate.rule.as_deref());
                    info!(mailbox = %self.id, uid, kind = %fate.kind, rule = fate.rule.as_deref().unwrap_or("-"), sinks = %sinks, "Alert queued.");
                }
            }
        }
        crate::crashpoint::hit("after-commit");
        if stored_any {
            self.dispatch.notify_one();
        }
        Ok(fates.iter().map(|f| f.uid).collect())
    }

    /// The expectations a chunk's mail fed, each once: the next expected time counts from
    /// now, and the recovery alert is ready in case the expectation is missing.
    fn sightings(&self, chunk: &[(u32, String, Decision)]) -> Vec<store::Sighting> {
        let now = chrono::Utc::now();
        let mut sightings: Vec<store::Sighting> = Vec::new();
        for name in chunk.iter().flat_map(|(.., d)| &d.expected) {
            if sightings.iter().any(|s| &s.name == name) {
                continue;
            }
            let Some(e) = self.router.expectations().iter().find(|e| &e.name == name) else {
                continue;
            };
            let decision = self
                .router
                .route_own(e.returned(now.timestamp_millis()), &e.sinks, now);
            let recovery =
                (!decision.dropped && !decision.sinks.is_empty()).then(|| store::Routed {
                    alert: decision.alert,
                    sinks: decision.sinks,
                });
            debug!(mailbox = %self.id, expectation = %name, "Expected mail seen.");
            sightings.push(store::Sighting {
                name: name.clone(),
                timing: e.timing.describe(),
                next: e.timing.next(now.timestamp_millis()),
                recovery,
            });
        }
        sightings
    }

    /// Marks stored messages processed on the server, then forgets the marks. A mark the
    /// server refuses is logged at ERROR and left pending, to be tried again after
    /// [`MARK_RETRY`]: the session goes on, so new mail is still alerted on meanwhile.
    async fn apply_marks(
        &self,
        session: &mut Session,
        selected: Selected,
    ) -> Result<(), SessionError> {
        if self.mark_retry_at().is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        let marks = self
            .store
            .pending_marks(&self.id, selected.uidvalidity)
            .await
            .map_err(fatal)?;
        if marks.is_empty() {
            return Ok(());
        }
        crate::crashpoint::hit("before-flag");
        let mut done = Vec::with_capacity(marks.len());
        let mut refused = None;
        for uids in marks.chunks(UID_SET_LIMIT) {
            let Some(set) = uid_sets(uids).into_iter().next() else {
                continue;
            };
            if let Err(refusal) = self.mark(session, &set).await? {
                refused = Some(refusal);
                break;
            }
            done.extend_from_slice(uids);
        }
        let pending = marks.len() - done.len();
        if !done.is_empty() {
            self.store
                .clear_marks(&self.id, selected.uidvalidity, done)
                .await
                .map_err(fatal)?;
        }
        let mut marking = self
            .marking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match refused {
            None => *marking = MarkRetry::default(),
            Some(refusal) => {
                let delay = MARK_RETRY.delay(marking.refusals);
                marking.refusals = marking.refusals.saturating_add(1);
                marking.until = Some(Instant::now() + delay);
                error!(
                    mailbox = %self.id,
                    server = %self.imap.config.host,
                    processed = %describe(&self.imap.config.processed),
                    refused = %refusal,
                    pending,
                    retry_in = ?delay,
                    "The server refused to mark processed mail; the marks stay pending and are retried. New mail is still alerted on. (`herald check --connect` checks a move: folder.)"
                );
            }
        }
        Ok(())
    }

    /// When marking is next tried after a refusal; `None` when it is not held back.
    fn mark_retry_at(&self) -> Option<Instant> {
        self.marking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .until
    }

    /// Marks the messages of `set` processed; `Ok(Err(reply))` when the server refused.
    async fn mark(
        &self,
        session: &mut Session,
        set: &str,
    ) -> Result<Result<(), String>, SessionError> {
        let flag = |flag: &str| format!("UID STORE {set} +FLAGS.SILENT ({flag})");
        match &self.imap.config.processed {
            Processed::None => Ok(Ok(())),
            Processed::Seen => self.imap.checked(session, &flag("\\Seen")).await,
            Processed::Keyword(keyword) => self.imap.checked(session, &flag(keyword)).await,
            Processed::Delete => match self.imap.checked(session, &flag("\\Deleted")).await? {
                Ok(()) => {
                    self.imap
                        .checked(session, &format!("UID EXPUNGE {set}"))
                        .await
                }
                refused => Ok(refused),
            },
            Processed::Move(folder) => {
                self.imap
                    .checked(session, &format!("UID MOVE {set} {}", quoted(folder)))
                    .await
            }
        }
    }
}

/// `processed` as configured, for log lines.
fn describe(processed: &Processed) -> String {
    match processed {
        Processed::Seen => "seen".to_owned(),
        Processed::Keyword(keyword) => format!("keyword:{keyword}"),
        Processed::Move(folder) => format!("move:{folder}"),
        Processed::Delete => "delete".to_owned(),
        Processed::None => "none".to_owned(),
    }
}

/// `text` as an IMAP quoted string (the configuration already refuses `"`, CR and LF).
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// What became of one message, remembered across the commit for its log line.
struct Fate {
    uid: u32,
    message_id: Option<String>,
    kind: String,
    rule: Option<String>,
    title: String,
    route: Route,
}

enum Route {
    Dropped { rule: String },
    Nowhere,
    Sinks(String),
}

impl Fate {
    fn of(uid: u32, alert: &herald_bridges::Alert, dropped: bool, sinks: &[String]) -> Fate {
        let route = if dropped {
            Route::Dropped {
                rule: alert.rule.clone().unwrap_or_default(),
            }
        } else if sinks.is_empty() {
            Route::Nowhere
        } else {
            Route::Sinks(sinks.join(","))
        };
        Fate {
            uid,
            message_id: alert.message_id.clone(),
            kind: alert.kind.as_str().to_owned(),
            rule: alert.rule.clone(),
            title: alert.title.clone(),
            route,
        }
    }
}

/// A store failure: reconnecting cannot fix it.
fn fatal(error: StoreError) -> SessionError {
    SessionError::Fatal(anyhow::Error::new(error))
}

/// Empties the unsolicited-response queue; true if the server announced new mail that the
/// last fetch may not have seen.
pub(super) fn drain_for_new_mail(queue: &async_channel::Receiver<UnsolicitedResponse>) -> bool {
    drain(queue).0
}

/// Empties the unsolicited-response queue: whether the server announced new mail, and the
/// first complaint it made (an untagged `NO`, `BAD` or `BYE`, with its text).
fn drain(queue: &async_channel::Receiver<UnsolicitedResponse>) -> (bool, Option<String>) {
    let mut new_mail = false;
    let mut complaint = None;
    while let Ok(response) = queue.try_recv() {
        match response {
            UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_) => new_mail = true,
            UnsolicitedResponse::Other(data) if complaint.is_none() => {
                if let Response::Data { status, outcome } = data.parsed() {
                    let word = match status {
                        Status::No => "NO",
                        Status::Bad => "BAD",
                        Status::Bye => "BYE",
                        Status::Ok | Status::PreAuth => continue,
                    };
                    let text = outcome.information.as_deref().unwrap_or("").trim();
                    complaint = Some(herald_bridges::text::truncate(
                        &format!("{word} {text}"),
                        300,
                    ));
                }
            }
            _ => {}
        }
    }
    (new_mail, complaint)
}

/// The alert that names a message skipped as unreadable: herald's own, like a dead letter's
/// notice (`deliver::notice`), so a person goes and looks at the message on the server.
fn unreadable_notice(
    mailbox: &MailboxId,
    uidvalidity: u32,
    uid: u32,
    size: Option<u32>,
    error: &str,
) -> Alert {
    let mut facts = std::collections::BTreeMap::new();
    facts.insert("uid".into(), serde_json::json!(uid));
    facts.insert("uidvalidity".into(), serde_json::json!(uidvalidity));
    facts.insert("size".into(), serde_json::json!(size));
    facts.insert("error".into(), serde_json::json!(error));
    facts.insert("attempts".into(), serde_json::json!(POISON_LIMIT));
    let size_text = size.map_or_else(|| "unknown size".to_owned(), |n| format!("{n} bytes"));
    Alert {
        message_id: None,
        kind: Kind::Other,
        host: None,
        user: None,
        command: None,
        failed: Some(true),
        exit_status: None,
        severity: Severity::Warning,
        rule: None,
        title: herald_bridges::text::truncate(
            &format!("herald could not read message UID {uid} in {mailbox}"),
            300,
        ),
        summary: herald_bridges::text::truncate(
            &format!("The server failed {POISON_LIMIT} fetches of it ({size_text}): {error}"),
            500,
        ),
        dedup_key: format!("herald:unreadable:{mailbox}:{uidvalidity}:{uid}"),
        facts,
        subject: String::new(),
        from: None,
        date: None,
        body: format!(
            "herald skipped message UID {uid} (UIDVALIDITY {uidvalidity}, {size_text}) in {mailbox} and alerts on the mail after it. The message is still on the server, not marked processed: look at it there (in a Maildir, its file may have the wrong owner or a read error) and at the server's log."
        ),
        truncated: false,
        account: Some(mailbox.account.clone()),
        mailbox: Some(mailbox.folder.clone()),
        trusted: None,
        resolve: false,
        group_key: None,
        repeats: None,
        digest: Vec::new(),
        digest_more: 0,
    }
}

/// A session failure: `Imap` ones are fixed by reconnecting, `Fatal` ones are not.
#[derive(Debug)]
pub(super) enum SessionError {
    Imap(anyhow::Error),
    Fatal(anyhow::Error),
}

impl SessionError {
    fn into_inner(self) -> anyhow::Error {
        match self {
            SessionError::Imap(error) | SessionError::Fatal(error) => error,
        }
    }
}

impl From<anyhow::Error> for SessionError {
    fn from(error: anyhow::Error) -> Self {
        SessionError::Imap(error)
    }
}

/// What identifies a message across UIDs and UIDVALIDITYs: `IDENTITY#DIGEST`, where the
/// identity is its Message-ID (`mid:`), else a hash of its header block (`hdr:`, the header
/// holds Date, Received and the rest of its delivery trace), and the digest is a SHA-256 of
/// the bytes fetched (at most `max_message_bytes`). The digest tells a different message
/// reusing a Message-ID from a replay of the same one; the identity alone is what herald
/// before 0.3 stored, which the store still matches (see `store`).
fn content_key(message_id: Option<&str>, raw: &[u8]) -> String {
    let identity = match message_id.filter(|id| id.len() > 2) {
        Some(id) => format!("mid:{id}"),
        None => {
            let end = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
                .unwrap_or(raw.len());
            format!("hdr:{}", sha256_hex(raw.get(..end).unwrap_or(raw)))
        }
    };
    format!("{identity}#{}", sha256_hex(raw))
}

/// SHA-256 of `bytes`, in lower-case hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compact UID sets (`1:5,7,9:10`) of at most [`UID_SET_LIMIT`] UIDs each, from sorted UIDs.
fn uid_sets(uids: &[u32]) -> Vec<String> {
    uids.chunks(UID_SET_LIMIT)
        .map(|chunk| {
            let mut parts: Vec<String> = Vec::new();
            let mut iter = chunk.iter().copied().peekable();
            while let Some(start) = iter.next() {
                let mut end = start;
                while iter.peek() == Some(&end.saturating_add(1)) {
                    end = end.saturating_add(1);
                    iter.next();
                }
                parts.push(if start == end {
                    start.to_string()
                } else {
                    format!("{start}:{end}")
                });
            }
            parts.join(",")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_key_is_the_message_id_else_the_headers_and_a_digest_of_the_bytes() {
        let raw = b"Message-ID: <a@b>\r\n\r\nbody";
        let key = content_key(Some("<a@b>"), raw);
        let (identity, digest) = key.rsplit_once('#').unwrap();
        assert_eq!(identity, "mid:<a@b>");
        assert_eq!(digest, sha256_hex(raw));
        assert_eq!(digest.len(), 64);
        // The same bytes give the same key; a different message reusing the ID does not.
        assert_eq!(content_key(Some("<a@b>"), raw), key);
        let forged = content_key(Some("<a@b>"), b"Message-ID: <a@b>\r\n\r\nother");
        assert_ne!(forged, key);
        assert!(forged.starts_with("mid:<a@b>#"));
        // Without a Message-ID (or a useless one), the header block names the message.
        let one = content_key(None, b"Subject: a\r\nDate: 1\r\n\r\nbody one");
        let same_headers = content_key(Some("<>"), b"Subject: a\r\nDate: 1\r\n\r\nbody two");
        let other = content_key(None, b"Subject: a\nDate: 2\n\nbody one");
        let identity = |key: &str| key.rsplit_once('#').unwrap().0.to_owned();
        assert_eq!(identity(&one), identity(&same_headers));
        assert_ne!(one, same_headers);
        assert_ne!(identity(&one), identity(&other));
        assert!(one.starts_with("hdr:") && one.len() == 4 + 64 + 1 + 64);
    }

    #[test]
    fn quoted_escapes_for_imap() {
        assert_eq!(quoted("Alerts/Done"), "\"Alerts/Done\"");
        assert_eq!(quoted("a\\b"), "\"a\\\\b\"");
    }

    #[test]
    fn the_unreadable_notice_names_the_message() {
        let alert = unreadable_notice(
            &MailboxId::new("default", "INBOX"),
            7,
            42,
            Some(39),
            "BYE x",
        );
        assert_eq!(
            alert.title,
            "herald could not read message UID 42 in default/INBOX"
        );
        assert_eq!(alert.severity, Severity::Warning);
        assert_eq!(alert.kind, Kind::Other);
        assert!(alert.summary.contains("39 bytes") && alert.summary.contains("BYE x"));
        assert_eq!(alert.dedup_key, "herald:unreadable:default/INBOX:7:42");
    }

    #[test]
    fn uid_sets_compress_runs_and_split() {
        assert_eq!(uid_sets(&[1, 2, 3, 5, 7, 8]), vec!["1:3,5,7:8"]);
        assert!(uid_sets(&[]).is_empty());
        let many: Vec<u32> = (1..=1001).map(|n| n * 2).collect();
        assert_eq!(uid_sets(&many).len(), 3);
    }
}
