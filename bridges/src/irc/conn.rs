//! The IRC connection task: one persistent connection per sink, shared by every delivery.
//!
//! # Life cycle
//!
//! [`run`] loops over *sessions*. A session connects (TCP or TLS), registers (`CAP LS 302`,
//! `PASS`, `NICK`, `USER`, SASL PLAIN when configured, `CAP END`; 433/436/437 try `nick_`,
//! `nick_2`, …), joins every channel (with its key), then serves deliveries until the link
//! fails. Between sessions it waits a capped exponential backoff with jitter; the backoff
//! resets after a successful registration.
//!
//! While connected it answers the server's `PING` (ahead of queued lines), rejoins a channel
//! it was kicked or parted from (and retries failed joins every `ping_interval`), tries to get
//! its configured nick back when it had to take another, and sends its own `PING` after
//! `ping_interval` without any input: no input for `ping_interval + ping_timeout` means the
//! link is dead.
//!
//! # Delivery confirmation
//!
//! IRC has no receipt. Servers handle one client's lines in order, so a `PING` sent after an
//! alert's lines is answered only after those lines were handled: a delivery counts once the
//! `PONG` for the next `PING` after its lines arrives (several queued deliveries share one
//! `PING`). An error numeric naming the channel before that `PONG` (404 cannot send, 403, 442,
//! …) fails the delivery. A session that ends first fails every unconfirmed delivery, which
//! the caller then retries after the reconnect.
//!
//! # Flood control
//!
//! Every line, registration included, takes a token from one token bucket that outlives the
//! sessions (default: 4 lines at once, then 1 per 2 s, RFC 1459 §8.10's server-side rule), so
//! no server disconnects herald for flooding. Lines queue meanwhile; `PONG` and keepalive
//! `PING`s go to the front of the queue.
//!
//! Secrets (`PASS`, `AUTHENTICATE` lines) are never logged: no outgoing line is.

use crate::backoff::Backoff;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::lines::{self, Identity, Style};
use super::transport::{self, Stream};
use super::wire::{self, Message};
use crate::ratelimit::{Rate, RateLimiter};
use crate::{Alert, Secret};

/// The longest server line read: 512 bytes plus IRCv3's 8,191 bytes of tags \[MIRC\], rounded
/// up. Anything longer is skipped, so a hostile server cannot grow herald's memory.
const MAX_INBOUND_LINE: u64 = 16 * 1024;

/// How many deliveries share one confirming `PING` at most, so that a long queue still gets
/// confirmations along the way.
const MAX_BATCH: usize = 8;

/// Nick attempts before giving up on a session: `nick`, `nick_`, `nick_2` … `nick_9`.
pub const NICK_ATTEMPTS: u32 = 10;

/// The most bytes a fallback nick adds (`_9`).
pub const NICK_SUFFIX_BYTES: usize = 2;

/// How often the keepalive and join-retry checks run.
const TICK: Duration = Duration::from_millis(500);

/// Registration must finish within this: a server that accepts the connection but never sends
/// 001 (stuck, or waiting for a CAP END that got lost) is treated as down.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);

/// Connecting (TCP and TLS) must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `QUIT` may take to reach the socket at shutdown.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Error numerics that answer a `PRIVMSG`/`NOTICE` to a channel: 401 no such nick/channel,
/// 403 no such channel, 404 cannot send to channel, 412 no text, 417 input too long,
/// 442 not on channel, 477 need a registered nick \[MIRC-NUM\].
const SEND_ERRORS: &[&str] = &["401", "403", "404", "412", "417", "442", "477"];

/// Error numerics that answer a `JOIN`: 403 no such channel, 405 too many channels,
/// 471 full, 473 invite only, 474 banned, 475 bad key, 476 bad mask, 477 need a registered
/// nick \[MIRC-NUM\], \[MIRC-CH\].
const JOIN_ERRORS: &[&str] = &["403", "405", "471", "473", "474", "475", "476", "477"];

/// One channel to join.
#[derive(Debug, Clone)]
pub struct Channel {
    /// As configured (the delivery target name).
    pub name: String,
    /// The channel key, if the channel has one (`+k`).
    pub key: Option<Secret>,
}

/// Everything a connection needs, fixed when the sink is built.
#[derive(Debug)]
pub struct Settings {
    /// Host name or address to connect to (and the TLS server name).
    pub server: String,
    /// TCP port.
    pub port: u16,
    /// TLS client configuration, `None` for plain text.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The nick to register with (fallbacks derive from it).
    pub nick: String,
    /// The `USER` name.
    pub username: String,
    /// The `USER` real name.
    pub realname: String,
    /// `PASS`, if any.
    pub password: Option<Secret>,
    /// SASL PLAIN account and password, if any.
    pub sasl: Option<(String, Secret)>,
    /// Channels to join, in order.
    pub channels: Vec<Channel>,
    /// How alerts are shown.
    pub style: Style,
    /// Input silence after which herald sends its own `PING`.
    pub ping_interval: Duration,
    /// Further silence after which the link is dead.
    pub ping_timeout: Duration,
    /// Client-side flood control, `None` for none.
    pub rate: Option<Rate>,
    /// Shortest wait before reconnecting.
    pub reconnect_min: Duration,
    /// Longest wait before reconnecting.
    pub reconnect_max: Duration,
}

/// A request to the connection task.
#[derive(Debug)]
pub enum Command {
    /// Send an alert to one channel and answer once the server confirmed it.
    Deliver(Box<Job>),
    /// Send `QUIT`, close the connection, end the task, then answer.
    Quit(oneshot::Sender<()>),
}

/// One alert for one channel.
#[derive(Debug)]
pub struct Job {
    /// The alert.
    pub alert: Alert,
    /// The channel, as configured.
    pub target: String,
    /// `Ok` once confirmed; `Err(reason)` when it may not have arrived.
    pub done: oneshot::Sender<Result<(), String>>,
}

impl Job {
    fn fail(self, reason: &str) {
        let _ = self.done.send(Err(reason.to_owned()));
    }
}

/// What deliveries can see of the connection.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Registered (001 received) on the current connection.
    pub registered: bool,
    /// Channels joined right now (ASCII-lower-cased names).
    pub joined: BTreeSet<String>,
    /// Why a channel could not be joined, by lower-cased name.
    pub join_errors: BTreeMap<String, String>,
    /// Why the last session ended or failed to start.
    pub last_error: Option<String>,
    /// How many sessions registered so far (1 after the first connect; +1 per reconnect).
    pub sessions: u64,
}

impl Status {
    /// Why a delivery to `channel` (lower-cased) cannot be made now.
    pub fn why_not(&self, channel: &str) -> String {
        if let Some(error) = self.join_errors.get(channel) {
            return error.clone();
        }
        if self.registered {
            return format!("not (yet) in {channel}");
        }
        match &self.last_error {
            Some(error) => format!("not connected: {error}"),
            None => "not connected yet".to_owned(),
        }
    }
}

/// Lower-cases a channel or nick for comparison (`CASEMAPPING=ascii`; the rfc1459 mapping's
/// `[]\~` ↔ `{}|^` is ignored, as channel names rarely use them).
pub fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The nick for registration attempt `attempt` (0 = the configured one).
pub fn alternate_nick(nick: &str, attempt: u32) -> String {
    match attempt {
        0 => nick.to_owned(),
        1 => format!("{nick}_"),
        n => format!("{nick}_{n}"),
    }
}

/// Runs the connection until every sender is dropped or [`Command::Quit`] arrives.
pub async fn run(
    settings: Arc<Settings>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    status: watch::Sender<Status>,
) {
    let limiter = Arc::new(RateLimiter::new(settings.rate));
    let mut failures = 0u32;
    loop {
        let ended = session(&settings, &limiter, &mut commands, &status, &mut failures).await;
        status.send_modify(|s| {
            s.registered = false;
            s.joined.clear();
        });
        let reason = match ended {
            End::Quit(ack) => {
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
            End::Lost(reason) => reason,
        };
        let delay = Backoff::new(settings.reconnect_min, settings.reconnect_max).delay(failures);
        failures = failures.saturating_add(1);
        tracing::warn!(
            sink = "irc",
            server = %settings.server,
            error = %reason,
            retry_in = ?delay,
            "IRC connection lost, will reconnect."
        );
        status.send_modify(|s| s.last_error = Some(reason));
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Quit(ack)) => {
                        let _ = ack.send(());
                        return;
                    }
                    Some(Command::Deliver(job)) => job.fail("not connected"),
                },
            }
        }
    }
}

/// How a session ended.
enum End {
    /// Asked to stop (with the answer to send once stopped), or every sender dropped.
    Quit(Option<oneshot::Sender<()>>),
    /// The connection failed or was lost.
    Lost(String),
}

/// Aborts a task when dropped, so a session never leaves its reader or writer behind.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn session(
    settings: &Settings,
    limiter: &Arc<RateLimiter>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    status: &watch::Sender<Status>,
    failures: &mut u32,
) -> End {
    let connect = transport::connect(
        &settings.server,
        settings.port,
        settings.tls.as_ref(),
        CONNECT_TIMEOUT,
    );
    tokio::pin!(connect);
    let stream = loop {
        tokio::select! {
            result = &mut connect => match result {
                Ok(stream) => break stream,
                Err(error) => return End::Lost(error),
            },
            command = commands.recv() => match command {
                None => return End::Quit(None),
                Some(Command::Quit(ack)) => return End::Quit(Some(ack)),
                Some(Command::Deliver(job)) => job.fail("not connected"),
            },
        }
    };
    let (read_half, write_half) = tokio::io::split(stream);
    let (inbound_tx, mut inbound) = mpsc::channel(256);
    let _reader = AbortOnDrop(tokio::spawn(reader(read_half, inbound_tx)));
    let (urgent_tx, urgent_rx) = mpsc::unbounded_channel();
    let (normal_tx, normal_rx) = mpsc::unbounded_channel();
    let mut writer = AbortOnDrop(tokio::spawn(writer(
        write_half,
        urgent_rx,
        normal_rx,
        Arc::clone(limiter),
    )));
    let mut state = State::new(settings, status, urgent_tx, normal_tx);
    state.register();
    let started = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            biased;
            message = inbound.recv() => match message {
                Some(Ok(message)) => {
                    state.last_input = Instant::now();
                    if let Err(error) = state.handle(message, failures) {
                        break End::Lost(error);
                    }
                }
                Some(Err(error)) => break End::Lost(error),
                None => break End::Lost("connection reader ended".into()),
            },
            written = &mut writer.0 => {
                break End::Lost(written.unwrap_or_else(|e| format!("writer failed: {e}")));
            }
            command = commands.recv() => match command {
                None => break state.quit(&mut writer).await,
                Some(Command::Quit(ack)) => {
                    let end = state.quit(&mut writer).await;
                    let _ = ack.send(());
                    break end;
                }
                Some(Command::Deliver(job)) => {
                    state.deliver(*job);
                    // Take what else is queued right now, then confirm them all with one PING.
                    let mut more = 1;
                    while more < MAX_BATCH {
                        match commands.try_recv() {
                            Ok(Command::Deliver(job)) => state.deliver(*job),
                            Ok(Command::Quit(ack)) => {
                                // Unconfirmed jobs fail below; answer once the QUIT is out.
                                let end = state.quit(&mut writer).await;
                                let _ = ack.send(());
                                state.fail_all("shutting down");
                                return end;
                            }
                            Err(_) => break,
                        }
                        more += 1;
                    }
                    state.confirm();
                }
            },
            _ = tick.tick() => {
                if let Err(error) = state.on_tick(started) {
                    break End::Lost(error);
                }
            }
        }
    };
    let reason = match &result {
        End::Lost(reason) => {
            format!("connection lost before the server confirmed delivery: {reason}")
        }
        End::Quit(_) => "shutting down".to_owned(),
    };
    state.fail_all(&reason);
    result
}

/// A delivery whose lines were queued, waiting for its `PONG`.
struct Pending {
    /// Lower-cased channel.
    channel: String,
    done: oneshot::Sender<Result<(), String>>,
    /// Set when the server answered one of its lines with an error.
    error: Option<String>,
}

/// Deliveries sharing one confirming `PING`.
struct Batch {
    token: String,
    jobs: Vec<Pending>,
}

/// One session's protocol state.
struct State<'a> {
    settings: &'a Settings,
    status: &'a watch::Sender<Status>,
    urgent: mpsc::UnboundedSender<String>,
    normal: mpsc::UnboundedSender<String>,
    registered: bool,
    nick_attempt: u32,
    /// Capabilities from a multi-line `CAP LS`.
    caps: String,
    identity: Identity,
    last_input: Instant,
    /// When the outstanding keepalive `PING` was sent.
    keepalive: Option<Instant>,
    /// When herald last asked for its configured nick or re-sent joins.
    last_retry: Instant,
    joined: BTreeSet<String>,
    next_token: u64,
    /// Jobs whose lines are queued but not yet followed by a `PING`.
    unconfirmed: Vec<Pending>,
    /// Batches waiting for their `PONG`, oldest first.
    awaiting: VecDeque<Batch>,
}

impl<'a> State<'a> {
    fn new(
        settings: &'a Settings,
        status: &'a watch::Sender<Status>,
        urgent: mpsc::UnboundedSender<String>,
        normal: mpsc::UnboundedSender<String>,
    ) -> State<'a> {
        State {
            settings,
            status,
            urgent,
            normal,
            registered: false,
            nick_attempt: 0,
            caps: String::new(),
            identity: Identity {
                nick: settings.nick.clone(),
                user: None,
                host: None,
                userlen: None,
            },
            last_input: Instant::now(),
            keepalive: None,
            last_retry: Instant::now(),
            joined: BTreeSet::new(),
            next_token: 0,
            unconfirmed: Vec::new(),
            awaiting: VecDeque::new(),
        }
    }

    fn send(&self, line: String) {
        let _ = self.normal.send(line);
    }

    fn send_urgent(&self, line: String) {
        let _ = self.urgent.send(line);
    }

    /// The registration burst, in the order of reference/sinks.md §5.1 \[MIRC\].
    fn register(&mut self) {
        let s = self.settings;
        self.send(wire::line("CAP", &["LS", "302"], None));
        if let Some(password) = &s.password {
            self.send(wire::line("PASS", &[], Some(password.expose())));
        }
        self.send(wire::line("NICK", &[&s.nick], None));
        self.send(wire::line(
            "USER",
            &[&s.username, "0", "*"],
            Some(&s.realname),
        ));
    }

    fn join_all(&mut self) {
        for channel in &self.settings.channels {
            if !self.joined.contains(&fold(&channel.name)) {
                self.join(channel);
            }
        }
    }

    fn join(&self, channel: &Channel) {
        let line = match &channel.key {
            Some(key) => wire::line("JOIN", &[&channel.name, key.expose()], None),
            None => wire::line("JOIN", &[&channel.name], None),
        };
        self.send(line);
    }

    fn is_me(&self, nick: &str) -> bool {
        fold(nick) == fold(&self.identity.nick)
    }

    fn configured(&self, channel: &str) -> Option<&'a Channel> {
        let key = fold(channel);
        self.settings.channels.iter().find(|c| fold(&c.name) == key)
    }

    fn publish(&self) {
        let joined = self.joined.clone();
        let registered = self.registered;
        self.status.send_modify(|s| {
            s.registered = registered;
            s.joined = joined;
        });
    }

    fn set_join_error(&self, channel: &str, error: String) {
        let key = fold(channel);
        self.status.send_modify(|s| {
            s.join_errors.insert(key, error);
        });
    }

    /// Handles one server line; `Err` ends the session.
    fn handle(&mut self, m: Message, failures: &mut u32) -> Result<(), String> {
        let code = m.command.as_str();
        match code {
            "PING" => self.send_urgent(wire::line("PONG", &[], Some(m.last()))),
            "PONG" => self.on_pong(m.last()),
            "ERROR" => {
                return Err(format!(
                    "server closed the link: {}",
                    lines::strip(m.last())
                ))
            }
            "CAP" => self.on_cap(&m)?,
            "AUTHENTICATE" if m.param(0) == "+" => {
                if let Some((user, password)) = &self.settings.sasl {
                    for line in wire::sasl_plain(user, password.expose()) {
                        self.send(line);
                    }
                }
            }
            // 903 success, 907 already authenticated: registration may finish [V3-SASL].
            "903" | "907" => self.send(wire::line("CAP", &["END"], None)),
            "902" | "904" | "905" | "906" => {
                // Never CAP END after a failure: that would register unauthenticated.
                return Err(format!("SASL authentication failed ({code})"));
            }
            "464" => return Err("the server refused the password (464)".into()),
            "465" => return Err("banned from the server (465)".into()),
            "001" => self.on_welcome(&m, failures),
            "005" => self.on_isupport(&m),
            // RPL_HOSTHIDDEN: the host others now see.
            "396" => self.identity.host = Some(m.param(1).to_owned()),
            "432" if !self.registered => {
                return Err(format!(
                    "the server refuses the nick {} (432): check `nick` and the server's NICKLEN",
                    self.identity.nick
                ))
            }
            "433" | "436" | "437" if !self.registered => {
                self.nick_attempt += 1;
                if self.nick_attempt >= NICK_ATTEMPTS {
                    return Err(format!(
                        "nick {} and its alternates are taken",
                        self.settings.nick
                    ));
                }
                self.identity.nick = alternate_nick(&self.settings.nick, self.nick_attempt);
                tracing::info!(sink = "irc", nick = %self.identity.nick, "IRC nick in use, trying another.");
                self.send(wire::line("NICK", &[&self.identity.nick], None));
            }
            "JOIN" => self.on_join(&m),
            "KICK" if self.is_me(m.param(1)) => {
                let by = m.source_nick().unwrap_or("?").to_owned();
                self.lost_channel(m.param(0), &format!("kicked from {} by {by}", m.param(0)));
            }
            "PART" if m.source_nick().is_some_and(|n| self.is_me(n)) => {
                self.lost_channel(m.param(0), &format!("removed from {}", m.param(0)));
            }
            "NICK" if m.source_nick().is_some_and(|n| self.is_me(n)) => {
                self.identity.nick = m.param(0).to_owned();
            }
            _ => {}
        }
        if SEND_ERRORS.contains(&code) {
            self.on_send_error(&m);
        }
        if JOIN_ERRORS.contains(&code) {
            let channel = m.param(1);
            if self.configured(channel).is_some() && !self.joined.contains(&fold(channel)) {
                let error = format!("cannot join {channel}: {code} {}", lines::strip(m.last()));
                tracing::error!(sink = "irc", %error, "IRC channel join failed, will retry.");
                self.set_join_error(channel, error);
            }
        }
        Ok(())
    }

    fn on_cap(&mut self, m: &Message) -> Result<(), String> {
        match m.param(1).to_ascii_uppercase().as_str() {
            "LS" => {
                // `CAP * LS * :caps` continues; `CAP * LS :caps` ends [V3-CAP].
                let more = m.params.len() >= 4 && m.param(2) == "*";
                self.caps.push(' ');
                self.caps.push_str(m.last());
                if more {
                    return Ok(());
                }
                if self.settings.sasl.is_none() {
                    self.send(wire::line("CAP", &["END"], None));
                    return Ok(());
                }
                let offers_plain = self.caps.split(' ').any(|cap| {
                    cap == "sasl"
                        || cap
                            .strip_prefix("sasl=")
                            .is_some_and(|mechs| mechs.split(',').any(|m| m == "PLAIN"))
                });
                if !offers_plain {
                    return Err("the server offers no SASL PLAIN".into());
                }
                self.send(wire::line("CAP", &["REQ"], Some("sasl")));
            }
            "ACK" if m.last().split(' ').any(|cap| cap == "sasl") => {
                self.send(wire::line("AUTHENTICATE", &["PLAIN"], None));
            }
            "NAK" => return Err("the server refused the sasl capability".into()),
            _ => {}
        }
        Ok(())
    }

    fn on_welcome(&mut self, m: &Message, failures: &mut u32) {
        self.registered = true;
        *failures = 0;
        if !m.param(0).is_empty() {
            self.identity.nick = m.param(0).to_owned();
        }
        // "Welcome to the Internet Relay Network nick!user@host" (most servers).
        if let Some((_, user, host)) = m.last().split(' ').next_back().and_then(wire::split_prefix)
        {
            self.identity.user = Some(user.to_owned());
            self.identity.host = Some(host.to_owned());
        }
        self.status.send_modify(|s| {
            s.sessions += 1;
            s.last_error = None;
        });
        self.publish();
        tracing::info!(sink = "irc", server = %self.settings.server, nick = %self.identity.nick, "Connected to IRC.");
        self.join_all();
        self.last_retry = Instant::now();
    }

    fn on_isupport(&mut self, m: &Message) {
        let count = m.params.len().saturating_sub(1);
        for token in m.params.iter().take(count).skip(1) {
            if let Some(len) = token.strip_prefix("USERLEN=") {
                self.identity.userlen = len.parse().ok();
            }
        }
    }

    fn on_join(&mut self, m: &Message) {
        let Some(source) = m.source.as_deref() else {
            return;
        };
        let Some((nick, user, host)) = wire::split_prefix(source) else {
            return;
        };
        if !self.is_me(nick) {
            return;
        }
        // The echo of our own JOIN: the exact prefix others see [MIRC-CH].
        self.identity.user = Some(user.to_owned());
        self.identity.host = Some(host.to_owned());
        let channel = m.param(0);
        if self.configured(channel).is_some() {
            self.joined.insert(fold(channel));
            self.status.send_modify(|s| {
                s.join_errors.remove(&fold(channel));
            });
            self.publish();
        }
    }

    fn lost_channel(&mut self, channel: &str, why: &str) {
        let Some(configured) = self.configured(channel) else {
            return;
        };
        self.joined.remove(&fold(channel));
        self.publish();
        tracing::warn!(sink = "irc", channel = %configured.name, reason = %lines::strip(why), "Left an IRC channel, rejoining.");
        self.join(configured);
    }

    /// Queues a job's lines (it is confirmed by the next [`State::confirm`]).
    fn deliver(&mut self, job: Job) {
        if job.done.is_closed() {
            return; // the caller gave up before anything was sent
        }
        let channel = fold(&job.target);
        if !self.registered || !self.joined.contains(&channel) {
            let why = self.status.borrow().why_not(&channel);
            job.fail(&why);
            return;
        }
        let verb = self.settings.style.verb();
        let budget = lines::budget(&self.identity, verb, &job.target);
        for text in lines::render(&job.alert, self.settings.style, budget) {
            self.send(wire::line(verb, &[&job.target], Some(&text)));
        }
        self.unconfirmed.push(Pending {
            channel,
            done: job.done,
            error: None,
        });
    }

    /// Sends one `PING` after the queued jobs' lines; its `PONG` confirms them.
    fn confirm(&mut self) {
        if self.unconfirmed.is_empty() {
            return;
        }
        self.next_token += 1;
        let token = format!("herald-{}", self.next_token);
        self.send(wire::line("PING", &[], Some(&token)));
        self.awaiting.push_back(Batch {
            token,
            jobs: std::mem::take(&mut self.unconfirmed),
        });
    }

    fn on_pong(&mut self, token: &str) {
        self.keepalive = None;
        let Some(index) = self.awaiting.iter().position(|b| b.token == token) else {
            return;
        };
        for batch in self.awaiting.drain(..=index) {
            for job in batch.jobs {
                let result = match job.error {
                    None => Ok(()),
                    Some(error) => Err(error),
                };
                let _ = job.done.send(result);
            }
        }
    }

    fn on_send_error(&mut self, m: &Message) {
        let channel = fold(m.param(1));
        let error = format!("{} {}: {}", m.command, m.param(1), lines::strip(m.last()));
        let batches = self
            .awaiting
            .iter_mut()
            .map(|b| &mut b.jobs)
            .chain(std::iter::once(&mut self.unconfirmed));
        for jobs in batches {
            let mut hit = false;
            for job in jobs.iter_mut().filter(|j| j.channel == channel) {
                job.error.get_or_insert_with(|| error.clone());
                hit = true;
            }
            if hit {
                break;
            }
        }
    }

    fn on_tick(&mut self, started: Instant) -> Result<(), String> {
        let now = Instant::now();
        if !self.registered {
            if now.duration_since(started) > REGISTER_TIMEOUT {
                return Err("registration timed out".into());
            }
            return Ok(());
        }
        let silent = now.duration_since(self.last_input);
        let s = self.settings;
        if silent > s.ping_interval + s.ping_timeout {
            return Err(format!(
                "no answer from the server for {}",
                humantime::format_duration(Duration::from_secs(silent.as_secs()))
            ));
        }
        if silent > s.ping_interval && self.keepalive.is_none() {
            self.keepalive = Some(now);
            self.send_urgent(wire::line("PING", &[], Some("herald-keepalive")));
        }
        if now.duration_since(self.last_retry) > s.ping_interval {
            self.last_retry = now;
            self.join_all();
            if !self.is_me(&s.nick) {
                self.send(wire::line("NICK", &[&s.nick], None));
            }
        }
        Ok(())
    }

    /// Sends `QUIT` and waits (briefly) for it to be written.
    async fn quit(&mut self, writer: &mut AbortOnDrop<String>) -> End {
        self.send_urgent(wire::line("QUIT", &[], Some("herald shutting down")));
        // Closing both queues lets the writer finish what is queued and shut the stream down.
        let (urgent, _) = mpsc::unbounded_channel();
        let (normal, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.urgent, urgent));
        drop(std::mem::replace(&mut self.normal, normal));
        let _ = tokio::time::timeout(QUIT_TIMEOUT, &mut writer.0).await;
        End::Quit(None)
    }

    fn fail_all(&mut self, reason: &str) {
        let jobs = self
            .awaiting
            .drain(..)
            .flat_map(|b| b.jobs)
            .chain(self.unconfirmed.drain(..));
        for job in jobs {
            let _ = job.done.send(Err(reason.to_owned()));
        }
    }
}

/// Reads lines into parsed messages; the last item is the reason reading stopped.
async fn reader(read_half: ReadHalf<Box<dyn Stream>>, out: mpsc::Sender<Result<Message, String>>) {
    let mut input = BufReader::new(read_half);
    let mut buf = Vec::new();
    let end = loop {
        buf.clear();
        match (&mut input)
            .take(MAX_INBOUND_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) => break "the server closed the connection".to_owned(),
            Ok(n) => {
                if !buf.ends_with(b"\n") && n as u64 == MAX_INBOUND_LINE {
                    // Overlong: skip to the end of the line.
                    loop {
                        buf.clear();
                        match (&mut input)
                            .take(MAX_INBOUND_LINE)
                            .read_until(b'\n', &mut buf)
                            .await
                        {
                            Ok(0) => break,
                            Ok(_) if buf.ends_with(b"\n") => break,
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    continue;
                }
                if let Some(message) = Message::parse(&buf) {
                    if out.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => break format!("read failed: {error}"),
        }
    };
    let _ = out.send(Err(end)).await;
}

/// Writes queued lines, urgent ones first, each after taking a flood-control token; returns
/// why it stopped.
async fn writer(
    mut output: WriteHalf<Box<dyn Stream>>,
    mut urgent: mpsc::UnboundedReceiver<String>,
    mut normal: mpsc::UnboundedReceiver<String>,
    limiter: Arc<RateLimiter>,
) -> String {
    loop {
        let line = tokio::select! {
            biased;
            Some(line) = urgent.recv() => line,
            Some(line) = normal.recv() => line,
            else => break,
        };
        limiter.acquire().await;
        // `wire::line` already guarantees this; a second, independent check is cheap.
        let mut bytes: Vec<u8> = line
            .bytes()
            .map(|b| {
                if matches!(b, b'\r' | b'\n' | 0) {
                    b' '
                } else {
                    b
                }
            })
            .collect();
        bytes.extend_from_slice(b"\r\n");
        if let Err(error) = output.write_all(&bytes).await {
            return format!("write failed: {error}");
        }
        if let Err(error) = output.flush().await {
            return format!("write failed: {error}");
        }
    }
    let _ = output.shutdown().await;
    "closed".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_alternates() {
        assert_eq!(alternate_nick("herald", 0), "herald");
        assert_eq!(alternate_nick("herald", 1), "herald_");
        assert_eq!(alternate_nick("herald", 9), "herald_9");
        let longest = alternate_nick("h", NICK_ATTEMPTS - 1).len() - 1;
        assert!(longest <= NICK_SUFFIX_BYTES);
    }
}
