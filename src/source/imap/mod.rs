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
//! - the first start on a mailbox (or after its UIDVALIDITY changed) alerts only on unseen
//!   mail younger than `first_start_window`; the rest is recorded as baseline;
//! - at most `max_message_bytes` of any message is fetched, and a batch is committed every
//!   [`CHUNK`] messages, so memory stays bounded however much mail is waiting.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use async_imap::types::UnsolicitedResponse;
use futures::StreamExt;
use herald_bridges::backoff::Backoff;
use tokio::sync::Notify;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Account, Processed};
use crate::error::chain;
use crate::metrics::Metrics;
use crate::route::{Decision, Router};
use crate::store::{self, IngestStore, MailboxId, StoreError};

mod session;

use session::{Imap, Selected, Session};

/// Messages committed per transaction: one fsync per chunk rather than per message, and a
/// bound on the alerts held in memory.
pub const CHUNK: usize = 128;

/// UIDs per UID FETCH / STORE command when the set is an explicit list, keeping command
/// lines far below servers' limits (Dovecot accepts 64 KiB: `imap_max_line_length`).
const UID_SET_LIMIT: usize = 500;

/// Reconnect backoff, 2 s to 80 s (chatmail's BACKOFF_MIN_MS / BACKOFF_MAX_MS), reset after
/// each successful SELECT.
const RECONNECT: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(80));

/// Logs in and selects each folder of `account`, then logs out: `herald check --connect`.
pub async fn probe(account: &Account) -> Result<()> {
    for folder in &account.folders {
        let id = MailboxId::new(&account.name, folder);
        let health = Metrics::new().session(&id.to_string());
        let imap = Imap::new(account.imap.clone(), &id, health)?;
        let mut session = imap.connect().await.map_err(SessionError::into_inner)?;
        imap.select(&mut session)
            .await
            .map_err(SessionError::into_inner)?;
        imap.logout(session).await;
    }
    Ok(())
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
        })
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
        loop {
            self.fetch_new(&mut session, selected).await?;
            self.apply_marks(&mut session, selected).await?;
            if stop.is_cancelled() {
                break;
            }
            if drain_for_new_mail(&session.unsolicited_responses) {
                continue;
            }
            session = if has_idle {
                match self.imap.idle(session, stop).await? {
                    Some(session) => session,
                    None => return Ok(()),
                }
            } else {
                tokio::select! {
                    () = sleep(self.imap.config.poll_interval) => {}
                    () = stop.cancelled() => {}
                }
                self.imap.command(session.noop()).await?;
                session
            };
        }
        self.imap.logout(session).await;
        Ok(())
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
    /// the UIDs stored.
    async fn fetch_and_store(
        &self,
        session: &mut Session,
        selected: Selected,
        set: &str,
        floor: u32,
    ) -> Result<Vec<u32>, SessionError> {
        let max = self.imap.config.max_message_bytes;
        let query = format!("(UID RFC822.SIZE BODY.PEEK[]<0.{max}>)");
        let origin = Some((self.id.account.as_str(), self.id.folder.as_str()));
        let mut stored = Vec::new();
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut stream = self.imap.command(session.uid_fetch(set, &query)).await?;
        while let Some(item) = self.imap.next(&mut stream).await? {
            let Some(uid) = item.uid.filter(|&uid| uid > floor) else {
                continue; // below the cursor (`n:*` semantics) or an unsolicited FETCH
            };
            crate::crashpoint::hit("after-fetch");
            self.metrics.messages_fetched(1);
            let raw = item.body().unwrap_or_default();
            let truncated = item.size.is_some_and(|size| size > max);
            let decision = self.router.decide(raw, truncated, origin);
            let content_key = content_key(decision.alert.message_id.as_deref(), raw);
            chunk.push((uid, content_key, decision));
            if chunk.len() >= CHUNK {
                stored.extend(self.commit(selected, std::mem::take(&mut chunk)).await?);
            }
        }
        drop(stream);
        stored.extend(self.commit(selected, chunk).await?);
        Ok(stored)
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
        let known = self.store.commit(batch).await.map_err(|e| {
            SessionError::Fatal(
                anyhow::Error::new(e).context("cannot store alerts; nothing was marked processed"),
            )
        })?;
        let mut stored_any = false;
        for fate in &fates {
            let uid = fate.uid;
            if known.contains(&uid) {
                info!(mailbox = %self.id, uid, title = %fate.title, "Already alerted on (the same message under another UID); skipped.");
                continue;
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

    /// Marks stored messages processed on the server, then forgets the marks.
    async fn apply_marks(
        &self,
        session: &mut Session,
        selected: Selected,
    ) -> Result<(), SessionError> {
        let marks = self
            .store
            .pending_marks(&self.id, selected.uidvalidity)
            .await
            .map_err(fatal)?;
        if marks.is_empty() {
            return Ok(());
        }
        crate::crashpoint::hit("before-flag");
        for set in uid_sets(&marks) {
            match &self.imap.config.processed {
                Processed::None => {}
                Processed::Seen => self.imap.store_flag(session, &set, "\\Seen").await?,
                Processed::Keyword(keyword) => self.imap.store_flag(session, &set, keyword).await?,
                Processed::Delete => {
                    self.imap.store_flag(session, &set, "\\Deleted").await?;
                    self.imap
                        .command(async {
                            session.uid_expunge(&set).await?.count().await;
                            Ok(())
                        })
                        .await?;
                }
                Processed::Move(folder) => {
                    self.imap
                        .command(session.uid_mv(&set, folder))
                        .await
                        .map_err(|e| match e {
                            SessionError::Imap(error) => {
                                SessionError::Imap(error.context(format!(
                            "cannot move processed mail to {folder:?} (does the folder exist?)"
                        )))
                            }
                            fatal => fatal,
                        })?;
                }
            }
        }
        self.store
            .clear_marks(&self.id, selected.uidvalidity, marks)
            .await
            .map_err(fatal)?;
        Ok(())
    }
}

/// What became of one message, remembered across the commit for its log line.
struct Fate {
    uid: u32,
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
    let mut new_mail = false;
    while let Ok(response) = queue.try_recv() {
        if matches!(
            response,
            UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
        ) {
            new_mail = true;
        }
    }
    new_mail
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

/// What identifies a message across UIDs and UIDVALIDITYs: its Message-ID, else a hash of
/// its header block (which holds Date, Received and the rest of its delivery trace).
fn content_key(message_id: Option<&str>, raw: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    if let Some(id) = message_id.filter(|id| id.len() > 2) {
        return format!("mid:{id}");
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(raw.len());
    let digest = Sha256::digest(raw.get(..end).unwrap_or(raw));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("hdr:{hex}")
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
    fn content_key_prefers_message_id_else_hashes_headers() {
        assert_eq!(content_key(Some("<a@b>"), b"x"), "mid:<a@b>");
        let one = content_key(None, b"Subject: a\r\nDate: 1\r\n\r\nbody one");
        let same_headers = content_key(None, b"Subject: a\r\nDate: 1\r\n\r\nbody two");
        let other = content_key(None, b"Subject: a\r\nDate: 2\r\n\r\nbody one");
        assert_eq!(one, same_headers);
        assert_ne!(one, other);
        assert!(one.starts_with("hdr:") && one.len() == 4 + 64);
    }

    #[test]
    fn uid_sets_compress_runs_and_split() {
        assert_eq!(uid_sets(&[1, 2, 3, 5, 7, 8]), vec!["1:3,5,7:8"]);
        assert!(uid_sets(&[]).is_empty());
        let many: Vec<u32> = (1..=1001).map(|n| n * 2).collect();
        assert_eq!(uid_sets(&many).len(), 3);
    }
}
