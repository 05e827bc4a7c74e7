//! The IRC sink: one persistent connection (plain or TLS) per sink, shared by all deliveries,
//! posting each alert to every configured channel with `PRIVMSG` or `NOTICE`
//! (reference/sinks.md §5).
//!
//! Files: [`lines`] turns an alert into message texts (pure), [`wire`] parses and builds
//! protocol lines, [`transport`] connects, [`conn`] runs the connection.
//!
//! # Targets
//!
//! Each channel is a target ([`Sink::targets`]): the outbox keeps one row per (alert,
//! channel), so a channel herald is banned from never holds up or re-sends to another.
//!
//! # When the connection starts
//!
//! [`SinkConfig::build`](crate::SinkConfig::build) is synchronous and may run without a tokio
//! runtime (`herald check`), so building only prepares channels; the connection task is
//! spawned on the first delivery, on the runtime that delivers. The first alert therefore
//! waits for connect + registration + join (bounded by `timeout`), and a sink that is never
//! used never connects. [`Config::render`] is pure: it shows the lines with the worst-case
//! prefix length, since the real one is only known once connected.
//!
//! # Guarantees
//!
//! - A delivery is `Delivered` only once the server answered a `PING` sent after the alert's
//!   lines (IRC has no receipt; servers handle a client's lines in order) and no error named
//!   the channel meanwhile; otherwise it is `Retry` (connection lost, not joined, timeout).
//!   Never `Rejected` except for a target no longer configured: every IRC failure may heal.
//! - No mail content can inject a command: see [`lines`] and [`wire`].
//! - Each relayed line fits 512 bytes, cut on UTF-8 boundaries; at most `max_lines` lines per
//!   alert; flood-controlled by a token bucket (see [`conn`]).
//! - `password`, `sasl_password` and channel keys are [`Secret`]s: never in `Debug`, logs,
//!   outcomes or [`Config::render`] output.

pub mod conn;
pub mod lines;
pub mod transport;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use self::conn::{Channel, Command, Job, Settings, Status};
use self::lines::{Identity, Style};
use crate::ratelimit::Rate;
use crate::sink::{deserialize_duration, CloseFuture, DeliverFuture, Fixture, SinkKind};
use crate::{Alert, Outcome, Secret, Sink, SinkError};

/// IRC over TLS \[MIRC\].
pub const TLS_PORT: u16 = 6697;
/// Plain-text IRC \[MIRC\].
pub const PLAIN_PORT: u16 = 6667;
/// Lines per alert by default: a header, the summary and two lines of body (the issue's
/// default); more goes into "… N more lines".
pub const DEFAULT_MAX_LINES: usize = 4;
/// Flood control burst: RFC 1459 §8.10 lets a client run 10 s ahead at 2 s per message (a
/// burst of 5); 4 keeps one line of margin for the server's own counting \[RFC1459 §8.10\].
pub const DEFAULT_FLOOD_BURST: u32 = 4;
/// Flood control rate: one line per 2 s, the RFC's sustained rate \[RFC1459 §8.10\].
pub const DEFAULT_FLOOD_INTERVAL: Duration = Duration::from_secs(2);
/// Own `PING` after this much input silence: half of ngIRCd's default `PingTimeout` (120 s)
/// \[NGIRCD\], so herald notices a dead link before the server does.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(60);
/// The link is dead when the `PING` got no answer for this long (ngIRCd's `PongTimeout` is
/// 20 s \[NGIRCD\]; 30 s allows for a queue ahead of the `PONG`).
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(30);
/// Reconnect backoff floor: 1 s (style.md §7: sinks start at 1 s).
pub const RECONNECT_MIN: Duration = Duration::from_secs(1);
/// Reconnect backoff cap: 2 min, between style.md's IMAP cap (80 s) and its sink cap (5 min);
/// an alert relay should come back quickly, but servers throttle rapid reconnects.
pub const RECONNECT_MAX: Duration = Duration::from_secs(120);
/// Longest nick accepted in the config: servers' NICKLEN is 9 to 30 in practice (RFC 2812
/// §1.2.1 says 9; ngIRCd's `MaxNickLength` defaults to 9 \[NGIRCD\]).
pub const MAX_NICK: usize = 30;
/// Channel names are at most 50 characters \[RFC2812\] §1.3.
pub const MAX_CHANNEL: usize = 50;
/// Longest `username` accepted (servers cut it to `USERLEN`, commonly 10).
pub const MAX_USERNAME: usize = 30;

/// A channel: `"#ops"`, or `{ name = "#ops", key = "…" }` for a channel with a key (`+k`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ChannelSpec {
    /// A channel without a key.
    Name(String),
    /// A channel with a key.
    Keyed(KeyedChannel),
}

/// A channel with a key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyedChannel {
    /// The channel name (`#ops`).
    pub name: String,
    /// The channel key (a secret).
    pub key: Secret,
}

impl ChannelSpec {
    /// The channel name.
    pub fn name(&self) -> &str {
        match self {
            ChannelSpec::Name(name) => name,
            ChannelSpec::Keyed(keyed) => &keyed.name,
        }
    }

    fn key(&self) -> Option<&Secret> {
        match self {
            ChannelSpec::Name(_) => None,
            ChannelSpec::Keyed(keyed) => Some(&keyed.key),
        }
    }
}

/// `type = "irc"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server's host name or address (also the TLS server name).
    pub server: String,
    /// The port; default 6697 with TLS, 6667 without \[MIRC\].
    #[serde(default)]
    pub port: Option<u16>,
    /// Use TLS (default `true`); the certificate is always verified.
    #[serde(default = "default_tls")]
    pub tls: bool,
    /// Extra CA certificates (PEM) to trust besides the platform's, for a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The nick; when taken, `nick_`, `nick_2` … are tried, and the nick is reclaimed later.
    #[serde(default = "default_nick")]
    pub nick: String,
    /// The `USER` name; default: the nick.
    #[serde(default)]
    pub username: Option<String>,
    /// The real name (shown by WHOIS).
    #[serde(default = "default_realname")]
    pub realname: String,
    /// The server password (`PASS`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// SASL PLAIN account (with `sasl_password`); the server must offer SASL then.
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// SASL PLAIN password.
    #[serde(default)]
    pub sasl_password: Option<Secret>,
    /// The channels to post to; each is a separate delivery target.
    pub channels: Vec<ChannelSpec>,
    /// Send `NOTICE` (never answered by bots, but some clients highlight it) instead of
    /// `PRIVMSG` (default) \[MIRC-MSG\].
    #[serde(default)]
    pub notice: bool,
    /// Colour the severity tag as well as making it bold.
    #[serde(default)]
    pub colour: bool,
    /// At most this many lines per alert (≥ 2), the last one saying how many more there were.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Flood control: lines that may be sent back to back.
    #[serde(default = "default_flood_burst")]
    pub flood_burst: u32,
    /// Flood control: one more line per this interval once the burst is used (`"0s"`: off).
    #[serde(
        default = "default_flood_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub flood_interval: Duration,
    /// Send a `PING` after this much silence from the server.
    #[serde(
        default = "default_ping_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub ping_interval: Duration,
    /// Declare the link dead when that `PING` is unanswered for this long.
    #[serde(
        default = "default_ping_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub ping_timeout: Duration,
    /// How long one delivery attempt may take, waiting for the connection and channel,
    /// flood control and the server's confirmation included.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
}

fn default_tls() -> bool {
    true
}
fn default_nick() -> String {
    "herald".to_owned()
}
fn default_realname() -> String {
    "herald alert relay".to_owned()
}
fn default_max_lines() -> usize {
    DEFAULT_MAX_LINES
}
fn default_flood_burst() -> u32 {
    DEFAULT_FLOOD_BURST
}
fn default_flood_interval() -> Duration {
    DEFAULT_FLOOD_INTERVAL
}
fn default_ping_interval() -> Duration {
    DEFAULT_PING_INTERVAL
}
fn default_ping_timeout() -> Duration {
    DEFAULT_PING_TIMEOUT
}
/// 2 min: the first delivery connects, registers and joins (a few lines at the flood rate),
/// and a queue of alerts ahead of this one drains at one line per 2 s.
fn default_timeout() -> Duration {
    Duration::from_secs(120)
}

fn invalid(key: &'static str, message: impl Into<String>) -> SinkError {
    SinkError::Invalid {
        key,
        message: message.into(),
    }
}

/// RFC 2812 §2.3.1: `nickname = ( letter / special ) *( letter / digit / special / "-" )`.
fn valid_nick(nick: &str) -> bool {
    let special = |c: char| "[]\\`_^{|}".contains(c);
    let mut chars = nick.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || special(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || special(c) || c == '-')
}

/// No CR, LF, NUL (they end or corrupt a line \[RFC2812\] §2.3) and no other control character.
fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

impl Config {
    fn username(&self) -> &str {
        self.username.as_deref().unwrap_or(&self.nick)
    }

    fn port(&self) -> u16 {
        self.port
            .unwrap_or(if self.tls { TLS_PORT } else { PLAIN_PORT })
    }

    fn style(&self) -> Style {
        Style {
            notice: self.notice,
            colour: self.colour,
            max_lines: self.max_lines,
        }
    }
}

impl SinkKind for Config {
    const TYPE: &'static str = "irc";

    type Sink = Irc;

    /// Checks every value without I/O; errors never contain a secret's value.
    fn validate(&self) -> Result<(), SinkError> {
        let server = self.server.trim();
        if server.is_empty()
            || server.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(invalid("server", "must be a host name or address"));
        }
        if self.tls {
            rustls::pki_types::ServerName::try_from(server)
                .map_err(|_| invalid("server", "not a valid TLS server name"))?;
        } else if self.ca_file.is_some() {
            return Err(invalid("ca_file", "only applies with `tls = true`"));
        }
        if self.port == Some(0) {
            return Err(invalid("port", "must be 1-65535"));
        }
        if !valid_nick(&self.nick) || self.nick.len() > MAX_NICK {
            return Err(invalid(
                "nick",
                format!("must be 1-{MAX_NICK} characters: a letter or one of []\\`_^{{|}}, then letters, digits, those or '-'"),
            ));
        }
        let user = self.username();
        if user.is_empty()
            || user.len() > MAX_USERNAME
            || user.contains(|c: char| c.is_whitespace() || c.is_control() || c == '@' || c == ':')
        {
            return Err(invalid(
                "username",
                format!("must be 1-{MAX_USERNAME} characters without spaces, '@' or ':'"),
            ));
        }
        if self.realname.trim().is_empty() || has_control(&self.realname) {
            return Err(invalid("realname", "must be non-empty text on one line"));
        }
        if let Some(password) = &self.password {
            if password.expose().is_empty() || has_control(password.expose()) {
                return Err(invalid(
                    "password",
                    "must be non-empty and have no control characters",
                ));
            }
        }
        match (&self.sasl_username, &self.sasl_password) {
            (None, None) => {}
            (Some(user), Some(password)) => {
                if user.is_empty() || has_control(user) {
                    return Err(invalid(
                        "sasl_username",
                        "must be non-empty text on one line",
                    ));
                }
                if password.expose().is_empty() || password.expose().contains('\0') {
                    return Err(invalid(
                        "sasl_password",
                        "must be non-empty and have no NUL",
                    ));
                }
            }
            (Some(_), None) => return Err(invalid("sasl_password", "needed with `sasl_username`")),
            (None, Some(_)) => return Err(invalid("sasl_username", "needed with `sasl_password`")),
        }
        if self.channels.is_empty() {
            return Err(invalid("channels", "name at least one channel"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for channel in &self.channels {
            let name = channel.name();
            let valid = name.starts_with(['#', '&', '+', '!'])
                && name.chars().count() >= 2
                && name.chars().count() <= MAX_CHANNEL
                && !name.contains(|c: char| c.is_whitespace() || c.is_control() || c == ',');
            if !valid {
                return Err(invalid(
                    "channels",
                    format!(
                        "{:?} is not a channel name (#, &, + or ! then up to {} characters without spaces or commas)",
                        crate::text::one_line(name, 60),
                        MAX_CHANNEL - 1
                    ),
                ));
            }
            if !seen.insert(conn::fold(name)) {
                return Err(invalid("channels", format!("{name} is listed twice")));
            }
            if let Some(key) = channel.key() {
                let key = key.expose();
                if key.is_empty()
                    || key.contains(|c: char| c.is_whitespace() || c.is_control() || c == ',')
                {
                    return Err(invalid(
                        "channels",
                        format!("the key of {name} must be non-empty, without spaces or commas"),
                    ));
                }
            }
        }
        if !(2..=100).contains(&self.max_lines) {
            return Err(invalid("max_lines", "must be 2-100"));
        }
        if self.flood_burst == 0 {
            return Err(invalid("flood_burst", "must be at least 1"));
        }
        if self.ping_interval < Duration::from_secs(1) || self.ping_timeout < Duration::from_secs(1)
        {
            return Err(invalid(
                "ping_interval",
                "ping_interval and ping_timeout must be at least 1s",
            ));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be positive"));
        }
        Ok(())
    }

    /// What delivery sends for `alert` (pure, for `herald classify --render`): the command,
    /// the channels and the message texts, split for the longest prefix herald could have
    /// (once connected the real prefix is known and lines may be longer).
    fn render(&self, alert: &Alert) -> Value {
        let style = self.style();
        let longest = self
            .channels
            .iter()
            .map(ChannelSpec::name)
            .max_by_key(|name| name.len())
            .unwrap_or("#");
        let budget = lines::budget(&self.worst_identity(), style.verb(), longest);
        json!({
            "command": style.verb(),
            "targets": self.channels.iter().map(ChannelSpec::name).collect::<Vec<_>>(),
            "lines": lines::render(alert, style, budget),
        })
    }

    fn build(&self) -> Result<Irc, SinkError> {
        Irc::new(self)
    }

    /// A server password, SASL and a channel key, over plain TCP.
    fn secret_fixtures(_base_url: &str, addr: SocketAddr, mark: &str) -> Vec<Fixture> {
        vec![Fixture::secret(json!({
            "server": addr.ip().to_string(),
            "port": addr.port(),
            "tls": false,
            "password": format!("{mark}pass"),
            "sasl_username": "bot",
            "sasl_password": format!("{mark}sasl"),
            "channels": [{"name": "#ops", "key": format!("{mark}key")}],
            "timeout": "1s",
        }))]
    }
}

impl Config {
    /// The longest prefix herald may have: a fallback nick, the longer of `username` and
    /// the default USERLEN (the server may prepend `~`), the longest host.
    fn worst_identity(&self) -> Identity {
        Identity {
            nick: format!("{}{}", self.nick, "_".repeat(conn::NICK_SUFFIX_BYTES)),
            user: None,
            host: None,
            userlen: Some(self.username().len().max(lines::DEFAULT_USERLEN)),
        }
    }

    fn settings(&self) -> Result<Settings, SinkError> {
        let tls = if self.tls {
            Some(
                crate::tls::client_config(self.ca_file.as_deref(), None)
                    .map_err(SinkError::Client)?,
            )
        } else {
            None
        };
        let rate = self.flood_rate();
        Ok(Settings {
            server: self.server.trim().to_owned(),
            port: self.port(),
            tls,
            nick: self.nick.clone(),
            username: self.username().to_owned(),
            realname: self.realname.clone(),
            password: self.password.clone(),
            sasl: self.sasl_username.clone().zip(self.sasl_password.clone()),
            channels: self
                .channels
                .iter()
                .map(|c| Channel {
                    name: c.name().to_owned(),
                    key: c.key().cloned(),
                })
                .collect(),
            style: self.style(),
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            rate,
            reconnect_min: RECONNECT_MIN,
            reconnect_max: RECONNECT_MAX,
        })
    }

    /// The token bucket used for flood control (`None` when off): `flood_burst` lines, then
    /// one per `flood_interval`.
    pub fn flood_rate(&self) -> Option<Rate> {
        (!self.flood_interval.is_zero()).then(|| {
            Rate::new(
                self.flood_burst,
                self.flood_interval.saturating_mul(self.flood_burst),
            )
        })
    }
}

/// What the connection task needs, held until the first delivery spawns it.
struct Start {
    settings: Arc<Settings>,
    commands: mpsc::UnboundedReceiver<Command>,
    status: watch::Sender<Status>,
}

/// Posts alerts to IRC channels over one shared connection.
pub struct Irc {
    server: String,
    channels: Vec<String>,
    timeout: Duration,
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
    start: Mutex<Option<Start>>,
}

impl std::fmt::Debug for Irc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Irc")
            .field("server", &self.server)
            .field("channels", &self.channels)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Irc {
    /// Builds the sink (reads `ca_file`); no connection is made until the first delivery.
    pub fn new(config: &Config) -> Result<Irc, SinkError> {
        config.validate()?;
        let settings = Arc::new(config.settings()?);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(Status::default());
        Ok(Irc {
            server: format!("{}:{}", settings.server, settings.port),
            channels: settings.channels.iter().map(|c| c.name.clone()).collect(),
            timeout: config.timeout,
            commands,
            status,
            start: Mutex::new(Some(Start {
                settings,
                commands: commands_rx,
                status: status_tx,
            })),
        })
    }

    /// Spawns the connection task if it is not running yet (needs a tokio runtime, which a
    /// delivery always has).
    pub fn connect(&self) {
        let start = self
            .start
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(start) = start {
            tokio::spawn(conn::run(start.settings, start.commands, start.status));
        }
    }

    /// How many times the sink registered with the server so far (reconnects included).
    pub fn sessions(&self) -> u64 {
        self.status.borrow().sessions
    }

    /// A snapshot of the connection's state, for health reporting.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    async fn send(&self, alert: &Alert, target: &str) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let channel = conn::fold(target);
        self.connect();
        let mut status = self.status.clone();
        let ready = tokio::time::timeout_at(
            deadline,
            status.wait_for(|s| s.registered && s.joined.contains(&channel)),
        )
        .await
        .map(|r| r.is_ok()); // drop the borrow: a watch::Ref must not live across an await
        match ready {
            Ok(true) => {}
            Ok(false) => return retry("the IRC connection task has ended"),
            Err(_) => {
                let why = self.status.borrow().why_not(&channel);
                return retry(&why);
            }
        }
        let (done, answer) = oneshot::channel();
        let job = Job {
            alert: alert.clone(),
            target: target.to_owned(),
            done,
        };
        if self.commands.send(Command::Deliver(Box::new(job))).is_err() {
            return retry("the IRC connection task has ended");
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(Ok(()))) => Outcome::Delivered,
            Ok(Ok(Err(reason))) => retry(&reason),
            Ok(Err(_)) => retry("the IRC connection task has ended"),
            Err(_) => retry(&format!(
                "the server did not confirm within {}",
                humantime::format_duration(self.timeout)
            )),
        }
    }
}

fn retry(reason: &str) -> Outcome {
    Outcome::Retry {
        after: None,
        reason: reason.to_owned(),
    }
}

impl Sink for Irc {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let mut first_failure = None;
            for channel in &self.channels {
                let outcome = self.send(alert, channel).await;
                if first_failure.is_none() {
                    first_failure = match outcome {
                        Outcome::Delivered => None,
                        Outcome::Retry { after, reason } => Some(Outcome::Retry {
                            after,
                            reason: format!("{channel}: {reason}"),
                        }),
                        Outcome::Rejected { reason } => Some(Outcome::Rejected {
                            reason: format!("{channel}: {reason}"),
                        }),
                    };
                }
            }
            first_failure.unwrap_or(Outcome::Delivered)
        })
    }

    fn targets(&self) -> Vec<String> {
        self.channels.clone()
    }

    fn deliver_to<'a>(&'a self, alert: &'a Alert, target: &'a str) -> DeliverFuture<'a> {
        Box::pin(async move {
            if !self.channels.iter().any(|c| c == target) {
                return Outcome::Rejected {
                    reason: "the channel is no longer in the sink's `channels` list".into(),
                };
            }
            self.send(alert, target).await
        })
    }

    fn close(&self) -> CloseFuture<'_> {
        Box::pin(async move {
            // Never started: nothing to close (and nothing to spawn).
            let never_started = self
                .start
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take()
                .is_some();
            if never_started {
                return;
            }
            let (ack, done) = oneshot::channel();
            if self.commands.send(Command::Quit(ack)).is_ok() {
                let _ = done.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn config() -> Config {
        serde_json::from_value(json!({
            "server": "irc.example.net",
            "channels": ["#ops", {"name": "#secure", "key": "sesame"}],
        }))
        .unwrap()
    }

    #[test]
    fn defaults_validate() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.port(), TLS_PORT);
        assert_eq!(c.username(), "herald");
        assert_eq!(
            c.flood_rate(),
            Some(Rate::new(4, Duration::from_secs(8))),
            "burst 4, then one per 2 s"
        );
    }

    #[test]
    fn rejects_bad_values_without_echoing_secrets() {
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("nick", json!({"nick": "9lives"})),
            ("nick", json!({"nick": "a b"})),
            ("channels", json!({"channels": []})),
            ("channels", json!({"channels": ["ops"]})),
            ("channels", json!({"channels": ["#a,#b"]})),
            ("channels", json!({"channels": ["#a", "#A"]})),
            (
                "channels",
                json!({"channels": [{"name": "#a", "key": "SEKRIT x"}]}),
            ),
            ("password", json!({"password": "SEKRIT\r\nQUIT"})),
            ("sasl_password", json!({"sasl_username": "u"})),
            ("realname", json!({"realname": "a\nb"})),
            ("max_lines", json!({"max_lines": 1})),
            ("ca_file", json!({"tls": false, "ca_file": "/x"})),
            ("server", json!({"server": "irc example"})),
        ];
        for (key, patch) in cases {
            let mut table = json!({"server": "irc.example.net", "channels": ["#ops"]});
            for (k, v) in patch.as_object().unwrap() {
                table[k] = v.clone();
            }
            let config: Config = serde_json::from_value(table).unwrap();
            let error = config.validate().expect_err(key).to_string();
            assert!(error.starts_with(&format!("{key}:")), "{key}: {error}");
            assert!(!error.contains("SEKRIT"), "{error}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<Config, _> =
            serde_json::from_value(json!({"server": "s", "channels": ["#a"], "chanels": ["#b"]}));
        assert!(r.is_err());
    }

    #[test]
    fn render_is_pure_and_within_budget() {
        let c = config();
        let mut alert = Alert::sample();
        alert.body = "é".repeat(3000);
        let v = c.render(&alert);
        assert_eq!(v["command"], "PRIVMSG");
        assert_eq!(v["targets"], json!(["#ops", "#secure"]));
        let lines = v["lines"].as_array().unwrap();
        assert_eq!(lines.len(), DEFAULT_MAX_LINES);
        // Relayed: ":" nick(8) "!" user(11) "@" host(63) " PRIVMSG #secure :" text CRLF.
        for line in lines {
            let relayed = 1
                + 8
                + 1
                + 11
                + 1
                + 63
                + " PRIVMSG #secure :".len()
                + line.as_str().unwrap().len()
                + 2;
            assert!(relayed <= 512, "{relayed}");
        }
        assert!(!v.to_string().contains("sesame"));
    }

    #[tokio::test(start_paused = true)]
    async fn default_flood_bucket_paces_lines() {
        // Burst 4, then one line per 2 s, through the limiter the connection uses.
        let limiter = crate::ratelimit::RateLimiter::new(config().flood_rate());
        let start = tokio::time::Instant::now();
        let mut at = Vec::new();
        for _ in 0..7 {
            limiter.acquire().await;
            at.push(start.elapsed().as_millis());
        }
        assert_eq!(at, [0, 0, 0, 0, 2000, 4000, 6000]);
    }
}
