//! The mailbox: one IMAP session at a time, watching one folder with IDLE.
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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use async_imap::extensions::idle::IdleResponse;
use async_imap::types::UnsolicitedResponse;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{ImapConfig, Processed, TlsMode};
use crate::deliver::Fanout;
use crate::metrics::Metrics;
use crate::route::Router;
use crate::store::{self, Store};

/// Messages committed per transaction: one fsync per chunk rather than per message, and a
/// bound on the alerts held in memory.
pub const CHUNK: usize = 128;

/// UIDs per UID FETCH / STORE command when the set is an explicit list, keeping command
/// lines far below servers' limits (Dovecot accepts 64 KiB: `imap_max_line_length`).
const UID_SET_LIMIT: usize = 500;

/// Reconnect backoff bounds (chatmail's BACKOFF_MIN_MS / BACKOFF_MAX_MS).
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(80);

/// Logs in and selects the mailbox, then logs out: `herald check --connect`.
pub async fn probe(config: &ImapConfig) -> Result<()> {
    let imap = Imap::new(config.clone(), Metrics::new())?;
    let mut session = imap.connect().await.map_err(SessionError::into_inner)?;
    imap.select(&mut session)
        .await
        .map_err(SessionError::into_inner)?;
    imap.logout(session).await;
    Ok(())
}

/// A byte stream IMAP can run over: plain TCP or TLS.
trait ImapStream: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> ImapStream for T {}

type Session = async_imap::Session<Box<dyn ImapStream>>;

/// How to reach and talk to the server: connection, login, commands under timeouts.
struct Imap {
    config: ImapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    metrics: Arc<Metrics>,
}

/// Watches one mailbox and feeds the store.
pub struct Mailbox {
    imap: Imap,
    router: Router,
    store: Arc<Store>,
    fanout: Fanout,
}

/// What the server told us at SELECT.
#[derive(Debug, Clone, Copy)]
struct Selected {
    uidvalidity: u32,
    uidnext: u32,
}

impl Mailbox {
    /// Prepares the mailbox (TLS roots are read here, so a bad `ca_file` fails at start).
    pub fn new(
        config: ImapConfig,
        router: Router,
        store: Arc<Store>,
        fanout: Fanout,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        Ok(Mailbox {
            imap: Imap::new(config, metrics)?,
            router,
            store,
            fanout,
        })
    }

    /// Runs until `stop` is cancelled, reconnecting after every failure. Returns an error
    /// only for failures that reconnecting cannot fix (the store cannot be written).
    pub async fn run(&self, stop: CancellationToken) -> Result<()> {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        while !stop.is_cancelled() {
            let result = self.session(&stop, &mut backoff).await;
            self.imap.metrics.imap_session(false);
            match result {
                Ok(()) => break,
                Err(SessionError::Fatal(error)) => return Err(error),
                Err(SessionError::Imap(error)) => {
                    self.imap.metrics.imap_reconnect();
                    let delay = backoff.next();
                    warn!(
                        server = %self.imap.config.host,
                        mailbox = %self.imap.config.mailbox,
                        error = %format!("{error:#}"),
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
        backoff: &mut Backoff,
    ) -> Result<(), SessionError> {
        let mut session = self.imap.connect().await?;
        let selected = self.imap.select(&mut session).await?;
        backoff.reset();
        self.imap.metrics.imap_session(true);
        let has_idle = self
            .imap
            .command(session.capabilities())
            .await?
            .has_str("IDLE");
        if !has_idle {
            warn!(server = %self.imap.config.host, interval = ?self.imap.config.poll_interval, "Server lacks IDLE, polling.");
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
                match self.idle(session, stop).await? {
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
        let cursor = self
            .store
            .cursor(&self.imap.config.mailbox)
            .map_err(SessionError::Fatal)?;
        match cursor {
            // UIDs only grow: the cursor below UIDNEXT is the normal case.
            Some(c) if c.uidvalidity == selected.uidvalidity && c.last_uid < selected.uidnext => {
                return self.process_backlog(session, selected).await
            }
            Some(c) if c.uidvalidity == selected.uidvalidity => warn!(
                mailbox = %self.imap.config.mailbox,
                cursor = c.last_uid,
                uidnext = selected.uidnext,
                "UIDNEXT went backwards without a UIDVALIDITY change (a restored mailbox?); rescanning. Mail already alerted on is recognised and skipped."
            ),
            Some(c) => warn!(
                mailbox = %self.imap.config.mailbox,
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
        self.store
            .record_baseline(
                &self.imap.config.mailbox,
                selected.uidvalidity,
                last,
                &recent,
            )
            .map_err(SessionError::Fatal)?;
        info!(
            mailbox = %self.imap.config.mailbox,
            alerting = recent.len(),
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
                .backlog(
                    &self.imap.config.mailbox,
                    selected.uidvalidity,
                    UID_SET_LIMIT,
                )
                .map_err(SessionError::Fatal)?;
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
                .finish_backlog(&self.imap.config.mailbox, selected.uidvalidity, &gone)
                .map_err(SessionError::Fatal)?;
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
            .cursor(&self.imap.config.mailbox)
            .map_err(SessionError::Fatal)?
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
        let mut stored = Vec::new();
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut stream = self.imap.command(session.uid_fetch(set, &query)).await?;
        while let Some(item) = self.imap.next(&mut stream).await? {
            let Some(uid) = item.uid.filter(|&uid| uid > floor) else {
                continue; // below the cursor (`n:*` semantics) or an unsolicited FETCH
            };
            crate::crashpoint::hit("after-fetch");
            self.imap.metrics.messages_fetched(1);
            let raw = item.body().unwrap_or_default();
            let truncated = item.size.is_some_and(|size| size > max);
            let decision = self.router.decide(raw, truncated);
            let key = content_key(decision.alert.message_id.as_deref(), raw);
            chunk.push((uid, key, decision));
            if chunk.len() >= CHUNK {
                stored.extend(self.commit(selected, &mut chunk)?);
            }
        }
        drop(stream);
        stored.extend(self.commit(selected, &mut chunk)?);
        Ok(stored)
    }

    /// Commits a chunk: alerts, outbox rows, marks and the cursor, in one transaction.
    fn commit(
        &self,
        selected: Selected,
        chunk: &mut Vec<(u32, String, crate::route::Decision)>,
    ) -> Result<Vec<u32>, SessionError> {
        if chunk.is_empty() {
            return Ok(Vec::new());
        }
        // One row per destination: a sink with several targets gets one row for each.
        let destinations: Vec<Vec<store::Destination>> = chunk
            .iter()
            .map(|(_, _, decision)| {
                if decision.dropped {
                    Vec::new()
                } else {
                    self.fanout.destinations(&decision.sinks)
                }
            })
            .collect();
        let batch: Vec<store::Processed<'_>> = chunk
            .iter()
            .zip(&destinations)
            .map(|((uid, key, decision), to)| store::Processed {
                uid: *uid,
                content_key: key,
                delivery: (!to.is_empty()).then_some((&decision.alert, to.as_slice())),
            })
            .collect();
        let cursor = chunk.iter().map(|(uid, ..)| *uid).max().unwrap_or(0);
        let mark = self.imap.config.processed != Processed::None;
        let (touched, known) = self
            .store
            .commit_batch(
                &self.imap.config.mailbox,
                selected.uidvalidity,
                &batch,
                cursor,
                mark,
            )
            .map_err(|e| {
                SessionError::Fatal(e.context("cannot store alerts; nothing was marked processed"))
            })?;
        for (uid, _, decision) in chunk.iter() {
            let alert = &decision.alert;
            if known.contains(uid) {
                info!(uid, title = %alert.title, "Already alerted on (the same message under another UID); skipped.");
                continue;
            }
            if !decision.dropped {
                self.imap
                    .metrics
                    .alert(alert.kind.as_str(), alert.rule.as_deref());
            }
            if decision.dropped {
                debug!(
                    uid,
                    rule = alert.rule.as_deref().unwrap_or(""),
                    "Alert dropped by rule."
                );
            } else if decision.sinks.is_empty() {
                self.imap.metrics.unrouted();
                warn!(uid, kind = %alert.kind, title = %alert.title, "Alert matched no rule with sinks and [defaults] sinks is empty; not delivered.");
            } else {
                info!(uid, kind = %alert.kind, rule = alert.rule.as_deref().unwrap_or("-"), sinks = %decision.sinks.join(","), "Alert queued.");
            }
        }
        crate::crashpoint::hit("after-commit");
        self.fanout.wake(&touched);
        let uids = chunk.drain(..).map(|(uid, ..)| uid).collect();
        Ok(uids)
    }

    /// Marks stored messages processed on the server, then forgets the marks.
    async fn apply_marks(
        &self,
        session: &mut Session,
        selected: Selected,
    ) -> Result<(), SessionError> {
        let marks = self
            .store
            .pending_marks(&self.imap.config.mailbox, selected.uidvalidity)
            .map_err(SessionError::Fatal)?;
        if marks.is_empty() {
            return Ok(());
        }
        crate::crashpoint::hit("before-flag");
        for set in uid_sets(&marks) {
            match &self.imap.config.processed {
                Processed::None => {}
                Processed::Seen => self.store_flag(session, &set, "\\Seen").await?,
                Processed::Keyword(keyword) => self.store_flag(session, &set, keyword).await?,
                Processed::Delete => {
                    self.store_flag(session, &set, "\\Deleted").await?;
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
            .clear_marks(&self.imap.config.mailbox, selected.uidvalidity, &marks)
            .map_err(SessionError::Fatal)?;
        Ok(())
    }

    async fn store_flag(
        &self,
        session: &mut Session,
        set: &str,
        flag: &str,
    ) -> Result<(), SessionError> {
        let query = format!("+FLAGS.SILENT ({flag})");
        self.imap
            .command(async {
                let responses = session.uid_store(set, &query).await?;
                responses.count().await;
                Ok(())
            })
            .await
    }

    /// IDLEs until the server reports something, the refresh interval passes or `stop`.
    /// Returns the session to fetch with, or `None` after a clean logout on `stop`.
    async fn idle(
        &self,
        session: Session,
        stop: &CancellationToken,
    ) -> Result<Option<Session>, SessionError> {
        // async-imap's `init` files whatever arrives before the `+` continuation (an EXISTS
        // sent right after the last command's completion) in the unsolicited queue, where the
        // IDLE wait never looks: check it once IDLE has begun, and leave at once if mail came.
        let queue = session.unsolicited_responses.clone();
        let mut handle = session.idle();
        self.imap.command(handle.init()).await?;
        if drain_for_new_mail(&queue) {
            debug!("New mail announced as IDLE began; fetching.");
            return self.imap.command(handle.done()).await.map(Some);
        }
        let refresh_at = Instant::now() + self.imap.config.idle_refresh;
        let (response, stopped) = {
            let (wait, interrupt) = handle.wait_with_timeout(self.imap.config.idle_keepalive);
            tokio::pin!(wait);
            let mut interrupt = Some(interrupt);
            let mut stopped = false;
            // Interrupting (dropping the stop source) lets the wait future finish cleanly;
            // dropping the future itself could leave the stream mid-response.
            let response = loop {
                tokio::select! {
                    response = &mut wait => break response,
                    () = tokio::time::sleep_until(refresh_at), if interrupt.is_some() => {
                        interrupt = None;
                    }
                    () = stop.cancelled(), if interrupt.is_some() => {
                        stopped = true;
                        interrupt = None;
                    }
                }
            };
            drop(interrupt);
            (response, stopped)
        };
        let response = response.context("IDLE failed")?;
        if !matches!(response, IdleResponse::Timeout) {
            self.imap.metrics.server_contact();
        }
        match response {
            IdleResponse::NewData(data) => debug!(response = ?data.parsed(), "IDLE woke up."),
            IdleResponse::Timeout => {
                debug!(silence = ?self.imap.config.idle_keepalive, "IDLE heard nothing; checking the connection with DONE.")
            }
            IdleResponse::ManualInterrupt => {}
        }
        let session = self.imap.command(handle.done()).await?;
        if stopped {
            self.imap.logout(session).await;
            return Ok(None);
        }
        Ok(Some(session))
    }
}

impl Imap {
    fn new(config: ImapConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let tls = match *config.tls.get_ref() {
            TlsMode::None => None,
            TlsMode::Implicit | TlsMode::Starttls => Some(
                herald_bridges::tls::client_config(config.ca_file.as_deref())
                    .map_err(anyhow::Error::msg)?,
            ),
        };
        Ok(Imap {
            config,
            tls,
            metrics,
        })
    }

    /// Connects, secures and logs in.
    async fn connect(&self) -> Result<Session, SessionError> {
        let address = (self.config.host.as_str(), self.config.port());
        let tcp = timeout(self.config.timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                anyhow!(
                    "connecting to {}:{} timed out",
                    self.config.host,
                    self.config.port()
                )
            })?
            .with_context(|| {
                format!(
                    "cannot connect to {}:{}",
                    self.config.host,
                    self.config.port()
                )
            })?;
        // IDLE notifications and small commands: send each write at once.
        tcp.set_nodelay(true).context("cannot set TCP_NODELAY")?;
        let client = match *self.config.tls.get_ref() {
            TlsMode::Implicit => {
                let stream = self.handshake(tcp).await?;
                let mut client = async_imap::Client::new(stream);
                self.greeting(&mut client).await?;
                client
            }
            TlsMode::Starttls => {
                let mut plain = async_imap::Client::new(Box::new(tcp) as Box<dyn ImapStream>);
                self.greeting(&mut plain).await?;
                self.command(plain.run_command_and_check_ok("STARTTLS", None))
                    .await
                    .map_err(|e| match e {
                        SessionError::Imap(error) => {
                            SessionError::Imap(error.context("the server refused STARTTLS"))
                        }
                        fatal => fatal,
                    })?;
                let tcp = plain.into_inner();
                let stream = self.handshake(tcp).await?;
                async_imap::Client::new(stream)
            }
            TlsMode::None => {
                let mut client = async_imap::Client::new(Box::new(tcp) as Box<dyn ImapStream>);
                self.greeting(&mut client).await?;
                client
            }
        };
        let login = timeout(
            self.config.timeout,
            client.login(&self.config.username, self.config.password.expose()),
        )
        .await
        .map_err(|_| anyhow!("login timed out"))?;
        match login {
            Ok(session) => Ok(session),
            Err((async_imap::error::Error::No(text), _)) => Err(anyhow!(
                "login as {:?} refused: {} (check username and password)",
                self.config.username,
                text.trim()
            )
            .into()),
            Err((error, _)) => Err(anyhow::Error::new(error).context("login failed").into()),
        }
    }

    async fn handshake<S>(&self, stream: S) -> Result<Box<dyn ImapStream>, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug + 'static,
    {
        let tls = self
            .tls
            .clone()
            .ok_or_else(|| anyhow!("TLS is not configured"))?;
        let name = rustls_pki_types::ServerName::try_from(self.config.host.clone())
            .with_context(|| format!("{:?} is not a valid TLS server name", self.config.host))?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        let stream = timeout(self.config.timeout, connector.connect(name, stream))
            .await
            .map_err(|_| anyhow!("TLS handshake timed out"))?
            .with_context(|| format!("TLS handshake with {} failed", self.config.host))?;
        Ok(Box::new(stream))
    }

    async fn greeting(
        &self,
        client: &mut async_imap::Client<Box<dyn ImapStream>>,
    ) -> Result<(), SessionError> {
        match timeout(self.config.timeout, client.read_response()).await {
            Err(_) => Err(anyhow!("the server sent no greeting").into()),
            Ok(Err(error)) => Err(anyhow::Error::new(error)
                .context("cannot read the greeting")
                .into()),
            Ok(Ok(None)) => {
                Err(anyhow!("the server closed the connection before its greeting").into())
            }
            Ok(Ok(Some(_))) => Ok(()),
        }
    }

    async fn select(&self, session: &mut Session) -> Result<Selected, SessionError> {
        let mailbox = match self.command(session.select(&self.config.mailbox)).await {
            Ok(mailbox) => mailbox,
            Err(SessionError::Imap(error)) => {
                return Err(anyhow!(
                    "cannot select mailbox {:?}: {error:#} (does it exist?)",
                    self.config.mailbox
                )
                .into())
            }
            Err(other) => return Err(other),
        };
        let uidvalidity = mailbox
            .uid_validity
            .ok_or_else(|| anyhow!("the server reported no UIDVALIDITY"))?;
        let uidnext = mailbox
            .uid_next
            .ok_or_else(|| anyhow!("the server reported no UIDNEXT"))?;
        debug!(mailbox = %self.config.mailbox, uidvalidity, uidnext, exists = mailbox.exists, "Selected mailbox.");
        Ok(Selected {
            uidvalidity,
            uidnext,
        })
    }

    async fn logout(&self, mut session: Session) {
        match timeout(Duration::from_secs(5), session.logout()).await {
            Ok(Ok(())) => debug!("Logged out."),
            Ok(Err(error)) => debug!(%error, "LOGOUT failed."),
            Err(_) => debug!("LOGOUT timed out."),
        }
    }

    /// Runs one IMAP command under the command timeout.
    async fn command<T>(
        &self,
        command: impl std::future::Future<Output = async_imap::error::Result<T>>,
    ) -> Result<T, SessionError> {
        match timeout(self.config.timeout, command).await {
            Ok(Ok(value)) => {
                self.metrics.server_contact();
                Ok(value)
            }
            Ok(Err(error)) => Err(anyhow::Error::new(error).into()),
            Err(_) => Err(anyhow!("IMAP command timed out after {:?}", self.config.timeout).into()),
        }
    }

    /// The next item of a FETCH response, under the command timeout.
    async fn next<S>(
        &self,
        stream: &mut S,
    ) -> Result<Option<async_imap::types::Fetch>, SessionError>
    where
        S: futures::Stream<Item = async_imap::error::Result<async_imap::types::Fetch>> + Unpin,
    {
        match timeout(self.config.timeout, stream.next()).await {
            Err(_) => Err(anyhow!("FETCH timed out after {:?}", self.config.timeout).into()),
            Ok(None) => Ok(None),
            Ok(Some(Ok(fetch))) => {
                self.metrics.server_contact();
                Ok(Some(fetch))
            }
            Ok(Some(Err(error))) => Err(anyhow::Error::new(error).context("FETCH failed").into()),
        }
    }
}

/// Empties the unsolicited-response queue; true if the server announced new mail that the
/// last fetch may not have seen.
fn drain_for_new_mail(queue: &async_channel::Receiver<UnsolicitedResponse>) -> bool {
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
enum SessionError {
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

/// Capped exponential backoff with full jitter.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    /// The next delay: uniformly random in [min, current], then current doubles up to max.
    fn next(&mut self) -> Duration {
        let low = self.min.as_millis() as u64;
        let high = (self.current.as_millis() as u64).max(low);
        self.current = (self.current * 2).min(self.max);
        Duration::from_millis(fastrand::u64(low..=high))
    }

    fn reset(&mut self) {
        self.current = self.min;
    }
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

    #[test]
    fn backoff_is_capped_jittered_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(80));
        for _ in 0..20 {
            let d = b.next();
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(80));
        }
        assert_eq!(b.current, Duration::from_secs(80));
        b.reset();
        assert_eq!(b.next(), Duration::from_secs(2));
    }
}
