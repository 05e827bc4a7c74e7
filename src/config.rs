//! Configuration: the TOML file, validated completely before anything starts.
//!
//! Loading happens in three passes over a spanned parse of the file, so that every error names
//! the file, line, column and key:
//! 1. substitution: every string value's `${NAME}` is replaced by the environment variable,
//!    and every secret key's `*_file` twin (`password_file`, `token_file`, …) is replaced by the
//!    file's contents (one trailing newline removed, as Docker and systemd credentials have);
//! 2. deserialization into typed structs that reject unknown keys; each sink table is read by
//!    its own `type`, so even an error inside a sink points at its key;
//! 3. validation without I/O: rules name existing sinks, regexes compile, plaintext IMAP only
//!    to loopback.
//!
//! Secret values never appear in an error: errors carry locations and key names, not values.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_bridges::sink::deserialize_duration;
use herald_bridges::{Secret, SinkConfig};
use serde::de::{Deserialize, Deserializer, Error as _};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub use crate::error::ConfigError;
use crate::error::Locate;
use crate::route::{RawRule, Rule};

/// The secret keys that may be given as a `*_file` twin instead, across all tables.
const SECRET_KEYS: &[&str] = &[
    "password",
    "token",
    "url",
    "webhook_url",
    "routing_key",
    "auth_token",
    "api_key_secret",
    "sasl_password",
    "secret",
];

/// How the IMAP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS, port 993).
    #[default]
    Implicit,
    /// Plain connection upgraded with STARTTLS (port 143); refused if the server lacks it.
    Starttls,
    /// No TLS: only to a loopback address, or with `allow_plaintext = true`.
    None,
}

/// What herald does to a message on the server once its alert is safely stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Set `\Seen`.
    Seen,
    /// Set this keyword (e.g. `$Herald`).
    Keyword(String),
    /// Move to this folder.
    Move(String),
    /// Delete and expunge.
    Delete,
    /// Leave the message untouched; herald's own cursor is the only record.
    None,
}

impl<'de> Deserialize<'de> for Processed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let invalid = || {
            D::Error::custom(format!(
                "invalid value {text:?}: expected \"seen\", \"keyword:NAME\", \"move:FOLDER\", \"delete\" or \"none\""
            ))
        };
        Ok(match text.split_once(':') {
            None if text == "seen" => Processed::Seen,
            None if text == "delete" => Processed::Delete,
            None if text == "none" => Processed::None,
            Some(("keyword", name)) if is_atom(name) => Processed::Keyword(name.to_owned()),
            Some(("move", folder)) if !folder.is_empty() && !folder.contains(['"', '\r', '\n']) => {
                Processed::Move(folder.to_owned())
            }
            _ => return Err(invalid()),
        })
    }
}

/// An IMAP atom (RFC 3501 §9): what a keyword may be. `\` is allowed only as the leading
/// character of a system flag, which a keyword is not.
fn is_atom(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        })
}

/// An `[imap]` table (or one `[[imap]]` entry): one account on one server.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// The account's name: required with several accounts; the alerts' `account`.
    name: Option<Spanned<String>>,
    /// Server host name or address.
    pub host: String,
    /// Port; default 993 for `tls = "implicit"`, 143 otherwise.
    pub port: Option<u16>,
    /// `implicit`, `starttls` or `none`.
    #[serde(default = "default_tls")]
    pub tls: Spanned<TlsMode>,
    /// An extra trust root (PEM), added to the platform's.
    pub ca_file: Option<PathBuf>,
    /// Permits `tls = "none"` to a non-loopback host.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Login name.
    pub username: String,
    /// Login password (or `password_file`).
    pub password: Secret,
    /// The one folder to watch (0.1's key; `mailboxes` names several).
    mailbox: Option<Spanned<String>>,
    /// The folders to watch, one IDLE session each.
    mailboxes: Option<Spanned<Vec<Spanned<String>>>>,
    /// What to do to a message once processed.
    #[serde(default = "default_processed")]
    pub processed: Processed,
    /// Re-issue IDLE this often; RFC 2177 lets servers drop a client idle for 30 minutes.
    #[serde(
        default = "default_idle_refresh",
        deserialize_with = "deserialize_duration"
    )]
    pub idle_refresh: Duration,
    /// How often to look for new mail when the server lacks IDLE.
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub poll_interval: Duration,
    /// Fetch at most this many bytes of a message; the rest is noted as truncated.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// On the first start on a mailbox, process unseen mail younger than this; older mail is
    /// recorded as already seen, so years of history page nobody.
    #[serde(
        default = "default_first_start_window",
        deserialize_with = "deserialize_duration"
    )]
    pub first_start_window: Duration,
    /// How long IDLE may hear nothing before the connection is checked with DONE: Dovecot
    /// says "still here" every 2 minutes, so silence means a dead link.
    #[serde(
        default = "default_idle_keepalive",
        deserialize_with = "deserialize_duration"
    )]
    pub idle_keepalive: Duration,
    /// Limit for connecting, logging in and every command outside IDLE.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
}

fn default_tls() -> Spanned<TlsMode> {
    Spanned::new(0..0, TlsMode::Implicit)
}
fn default_processed() -> Processed {
    Processed::Seen
}
/// 25 minutes: under RFC 2177's 29-minute ceiling, with margin for clock skew.
fn default_idle_refresh() -> Duration {
    Duration::from_secs(25 * 60)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}
/// 256 KiB: far more than any system mail needs to be recognised, small enough that a
/// burst of huge messages cannot exhaust memory.
fn default_max_message_bytes() -> u32 {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// `max_message_bytes` when no configuration says otherwise (also `classify` without one).
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 256 * 1024;
fn default_first_start_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
/// 5 minutes: Dovecot sends `* OK Still here` every 2 minutes (`imap_idle_notify_interval`),
/// so this much silence means a dead link (reliability.md G6).
fn default_idle_keepalive() -> Duration {
    Duration::from_secs(5 * 60)
}
/// 60 s, as reliability.md G6: generous for a slow server, short enough to notice a dead one.
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

/// One IMAP account, validated: its name, the folders watched in it, and how to reach it.
#[derive(Debug, Clone)]
pub struct Account {
    /// `name`, or [`DEFAULT_ACCOUNT`] for a lone `[imap]` without one.
    pub name: String,
    /// The folders to watch (at least one, each once).
    pub folders: Vec<String>,
    /// The connection and session settings.
    pub imap: ImapConfig,
}

/// The name of a lone `[imap]` account that gives none (and of herald 0.1's one account).
pub const DEFAULT_ACCOUNT: &str = "default";

/// The folder watched when `[imap]` names none.
const DEFAULT_FOLDER: &str = "INBOX";

impl ImapConfig {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match *self.tls.get_ref() {
            TlsMode::Implicit => 993,
            TlsMode::Starttls | TlsMode::None => 143,
        })
    }
}

/// `[state]`: where herald keeps its database.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The SQLite database file.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            path: default_state_path(),
        }
    }
}

fn default_state_path() -> PathBuf {
    PathBuf::from("/var/lib/herald/herald.db")
}

/// `[server]`: the daemon process itself.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; unset: not served.
    pub listen: Option<std::net::SocketAddr>,
    /// How long deliveries in flight may take to finish at shutdown.
    #[serde(
        default = "default_shutdown_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: None,
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

/// 20 s (Vector's and reliability.md G10's): under the 30 s that Docker and systemd wait
/// before SIGKILL.
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(20)
}

/// `[defaults]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    /// Where alerts that no rule routes go.
    #[serde(default)]
    sinks: Vec<Spanned<String>>,
    /// Where dead letters are announced.
    fallback: Option<Spanned<String>>,
}

/// How herald retries one sink's deliveries: keys of `[sinks.NAME]` that herald reads itself
/// (the sink never sees them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// The first retry's delay, and the floor of every later one.
    pub retry_min: Duration,
    /// The ceiling of the exponential backoff.
    pub retry_max: Duration,
    /// A row still undelivered this long after its alert was stored is dead-lettered.
    pub max_age: Duration,
}

impl Default for DeliveryPolicy {
    /// 1 s → 5 min (Vector's and reliability.md G4's starting points); 24 h: an alert older
    /// than a day is news to no one, and Postfix's five days is far too long for a page.
    fn default() -> Self {
        DeliveryPolicy {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// The `[sinks.NAME]` keys that are [`DeliveryPolicy`]'s.
const POLICY_KEYS: [&str; 3] = ["retry_min", "retry_max", "max_age"];

/// The file as deserialized, before validation (`[sinks.*]` is read separately).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    state: StateConfig,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[imap]`, or each `[[imap]]`: the accounts, in order, each name once.
    pub accounts: Vec<Account>,
    /// `[state]`.
    pub state: StateConfig,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[defaults] sinks`: where unrouted alerts go.
    pub default_sinks: Vec<String>,
    /// `[defaults] fallback`: the sink that announces dead letters.
    pub fallback: Option<String>,
    /// `[sinks.NAME]`, by name.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Each sink's retry policy, by name.
    pub delivery: BTreeMap<String, DeliveryPolicy>,
    /// `[[rules]]`, in order.
    pub rules: Vec<Rule>,
}

/// Where the configuration file is: `-c`, else `$HERALD_CONFIG`, else `./herald.toml`,
/// else `/etc/herald/herald.toml`.
pub fn locate(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    if let Some(path) = std::env::var_os("HERALD_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let local = PathBuf::from("herald.toml");
    if local.exists() {
        return local;
    }
    PathBuf::from("/etc/herald/herald.toml")
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            position: None,
            key: None,
            message: format!("cannot read configuration: {e}"),
        })?;
        Config::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates `text`, looking environment variables up with `env`.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let ctx = Context { path, text };
        let mut doc = DeTable::parse(text).map_err(|e| ctx.toml_error(&e))?;
        substitute_table(&ctx, doc.get_mut(), "", env)?;

        let imap = ctx.accounts(doc.get_mut().remove("imap"))?;
        let sinks_value = doc.get_mut().remove("sinks");
        let mut sinks = BTreeMap::new();
        let mut delivery = BTreeMap::new();
        if let Some(value) = sinks_value {
            let span = value.span();
            let DeValue::Table(table) = value.into_inner() else {
                return Err(ctx.error(span, "sinks", "must be a table of sinks"));
            };
            for (name, value) in table {
                let key = format!("sinks.{}", name.get_ref());
                let (sink, policy) = ctx.sink(&key, value)?;
                let name = name.into_inner().into_owned();
                delivery.insert(name.clone(), policy);
                sinks.insert(name, sink);
            }
        }

        let raw = RawConfig::deserialize(toml::de::Deserializer::from(doc))
            .map_err(|e| ctx.toml_error(&e))?;
        ctx.validate(raw, imap, sinks, delivery)
    }
}

/// The file being loaded, for turning spans into positions and key names.
struct Context<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Context<'_> {
    fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.to_owned(),
            position: Some(line_column(self.text, span.start)),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }

    /// A TOML or deserialization error, with the key found from its span.
    fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let span = error.span();
        let key = span.clone().and_then(|span| key_at(self.text, span));
        ConfigError {
            file: self.path.to_owned(),
            position: span.map(|s| line_column(self.text, s.start)),
            key,
            message: error.message().trim().to_owned(),
        }
    }

    /// Reads `[imap]` (one account) or `[[imap]]` (several), with each key's location.
    fn accounts(&self, value: Option<Spanned<DeValue<'_>>>) -> Result<Vec<Account>, ConfigError> {
        let Some(value) = value else {
            return Err(ConfigError {
                file: self.path.to_owned(),
                position: None,
                key: Some("imap".into()),
                message: "missing: herald needs an [imap] table (or [[imap]] accounts)".into(),
            });
        };
        let span = value.span();
        let tables: Vec<(String, Spanned<DeTable<'_>>)> = match value.into_inner() {
            DeValue::Table(table) => vec![("imap".into(), Spanned::new(span.clone(), table))],
            DeValue::Array(items) => {
                let mut tables = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let key = format!("imap[{i}]");
                    let item_span = item.span();
                    let DeValue::Table(table) = item.into_inner() else {
                        return Err(self.error(item_span, &key, "must be a table"));
                    };
                    tables.push((key, Spanned::new(item_span, table)));
                }
                tables
            }
            _ => return Err(self.error(span, "imap", "must be a table, or an array of tables")),
        };
        if tables.is_empty() {
            return Err(self.error(span, "imap", "names no account"));
        }
        let several = tables.len() > 1;
        let mut accounts: Vec<Account> = Vec::with_capacity(tables.len());
        for (key, table) in tables {
            let table_span = table.span();
            let imap = ImapConfig::deserialize(toml::de::Deserializer::from(table))
                .map_err(|e| self.toml_error(&e))?;
            let name = match &imap.name {
                Some(name) => {
                    let valid = !name.get_ref().is_empty()
                        && !name.get_ref().chars().any(|c| c.is_control() || c == '/');
                    if !valid {
                        return Err(self.error(
                            name.span(),
                            &format!("{key}.name"),
                            "must be a non-empty name without `/` or control characters",
                        ));
                    }
                    if accounts.iter().any(|a| a.name == *name.get_ref()) {
                        return Err(self.error(
                            name.span(),
                            &format!("{key}.name"),
                            format!("account {:?} is defined twice", name.get_ref()),
                        ));
                    }
                    name.get_ref().clone()
                }
                None if several => {
                    return Err(self.error(
                        table_span,
                        &key,
                        "missing key `name`: with several accounts each needs a name (it is the alerts' `account`)",
                    ))
                }
                None => DEFAULT_ACCOUNT.to_owned(),
            };
            let folders = self.folders(&key, &imap)?;
            self.check_tls(&key, &imap)?;
            accounts.push(Account {
                name,
                folders,
                imap,
            });
        }
        Ok(accounts)
    }

    /// The folders an account watches: `mailbox`, or `mailboxes`, or INBOX.
    fn folders(&self, key: &str, imap: &ImapConfig) -> Result<Vec<String>, ConfigError> {
        let given: Vec<&Spanned<String>> = match (&imap.mailbox, &imap.mailboxes) {
            (Some(_), Some(list)) => {
                return Err(self.error(
                    list.span(),
                    &format!("{key}.mailboxes"),
                    "give either `mailbox` or `mailboxes`, not both",
                ))
            }
            (Some(one), None) => vec![one],
            (None, Some(list)) if list.get_ref().is_empty() => {
                return Err(self.error(list.span(), &format!("{key}.mailboxes"), "names no folder"))
            }
            (None, Some(list)) => list.get_ref().iter().collect(),
            (None, None) => return Ok(vec![DEFAULT_FOLDER.to_owned()]),
        };
        let mut folders: Vec<String> = Vec::with_capacity(given.len());
        for folder in given {
            let name = folder.get_ref();
            let at = |message: String| {
                let which = if imap.mailbox.is_some() {
                    "mailbox"
                } else {
                    "mailboxes"
                };
                self.error(folder.span(), &format!("{key}.{which}"), message)
            };
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(at(format!(
                    "invalid folder name {name:?}: empty or with control characters"
                )));
            }
            if folders.contains(name) {
                return Err(at(format!("folder {name:?} is named twice")));
            }
            folders.push(name.clone());
        }
        Ok(folders)
    }

    /// Plaintext IMAP only to loopback, unless the user insists.
    fn check_tls(&self, key: &str, imap: &ImapConfig) -> Result<(), ConfigError> {
        if *imap.tls.get_ref() == TlsMode::None && !imap.allow_plaintext && !is_loopback(&imap.host)
        {
            return Err(self.error(
                imap.tls.span(),
                &format!("{key}.tls"),
                format!(
                    "\"none\" sends the password in clear text to {:?}; use \"implicit\" or \"starttls\", or set allow_plaintext = true",
                    imap.host
                ),
            ));
        }
        Ok(())
    }

    /// Reads one `[sinks.NAME]` table: herald's delivery keys, then the rest by its `type`.
    fn sink(
        &self,
        key: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Result<(SinkConfig, DeliveryPolicy), ConfigError> {
        let span = value.span();
        let DeValue::Table(mut table) = value.into_inner() else {
            return Err(self.error(span, key, "must be a table"));
        };
        let mut policy = DeliveryPolicy::default();
        for name in POLICY_KEYS {
            let Some(value) = table.remove(name) else {
                continue;
            };
            let path = format!("{key}.{name}");
            let text = value.get_ref().as_str().ok_or_else(|| {
                self.error(
                    value.span(),
                    &path,
                    "must be a duration string such as \"30s\"",
                )
            })?;
            let duration = humantime::parse_duration(text).map_err(|e| {
                self.error(
                    value.span(),
                    &path,
                    format!("invalid duration {text:?}: {e}"),
                )
            })?;
            match name {
                "retry_min" => policy.retry_min = duration,
                "retry_max" => policy.retry_max = duration,
                _ => policy.max_age = duration,
            }
        }
        if policy.retry_min.is_zero() || policy.retry_max < policy.retry_min {
            let at =
                span_of_key(self.text, &format!("{key}.retry_max")).unwrap_or_else(|| span.clone());
            return Err(self.error(
                at,
                &format!("{key}.retry_max"),
                "must be at least retry_min, which must be above zero",
            ));
        }
        let Some(type_value) = table.remove("type") else {
            return Err(self.error(
                span,
                key,
                format!(
                    "missing key `type` (one of: {})",
                    SinkConfig::TYPES.join(", ")
                ),
            ));
        };
        let type_span = type_value.span();
        let Some(type_name) = type_value.get_ref().as_str().map(str::to_owned) else {
            return Err(self.error(type_span, &format!("{key}.type"), "must be a string"));
        };
        let deserializer = toml::de::Deserializer::from(Spanned::new(span.clone(), table));
        let config = SinkConfig::deserialize_typed(&type_name, deserializer).map_err(|e| {
            let mut error = self.toml_error(&e);
            if e.message().starts_with("unknown variant") {
                error.position = Some(line_column(self.text, type_span.start));
                error.key = Some(format!("{key}.type"));
            }
            error
        })?;
        config.validate().map_err(|e| match e {
            herald_bridges::SinkError::Invalid {
                key: field,
                message,
            } => {
                let path = format!("{key}.{field}");
                let at = span_of_key(self.text, &path).unwrap_or_else(|| span.clone());
                self.error(at, &path, message)
            }
            other => self.error(span.clone(), key, other.to_string()),
        })?;
        Ok((config, policy))
    }

    fn validate(
        &self,
        raw: RawConfig,
        accounts: Vec<Account>,
        sinks: BTreeMap<String, SinkConfig>,
        delivery: BTreeMap<String, DeliveryPolicy>,
    ) -> Result<Config, ConfigError> {
        let known = |name: &Spanned<String>, key: &str| -> Result<String, ConfigError> {
            if sinks.contains_key(name.get_ref()) {
                Ok(name.get_ref().clone())
            } else {
                Err(self.error(
                    name.span(),
                    key,
                    format!(
                        "unknown sink {:?} (defined: {})",
                        name.get_ref(),
                        names(&sinks)
                    ),
                ))
            }
        };
        let default_sinks = raw
            .defaults
            .sinks
            .iter()
            .map(|s| known(s, "defaults.sinks"))
            .collect::<Result<Vec<_>, _>>()?;
        let fallback = raw
            .defaults
            .fallback
            .as_ref()
            .map(|s| known(s, "defaults.fallback"))
            .transpose()?;
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (index, rule) in raw.rules.into_iter().enumerate() {
            let key = format!("rules[{index}]");
            rules.push(rule.validate(&key, &|name| known(name, &format!("{key}.sinks")), self)?);
        }
        Ok(Config {
            path: self.path.to_owned(),
            accounts,
            state: raw.state,
            server: raw.server,
            default_sinks,
            fallback,
            sinks,
            delivery,
            rules,
        })
    }
}

impl Locate for Context<'_> {
    fn at(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        self.error(span, key, message)
    }
}

fn names(sinks: &BTreeMap<String, SinkConfig>) -> String {
    if sinks.is_empty() {
        "none".into()
    } else {
        sinks.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Pass 1 over one table: `${NAME}` in strings, `*_file` twins of secret keys.
fn substitute_table(
    ctx: &Context<'_>,
    table: &mut DeTable<'_>,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        let path = join_key(prefix, key.get_ref());
        substitute_value(ctx, value, &path, env)?;
    }
    let twins: Vec<String> = table
        .keys()
        .map(|k| k.get_ref().to_string())
        .filter(|k| {
            k.strip_suffix("_file")
                .is_some_and(|stem| SECRET_KEYS.contains(&stem))
        })
        .collect();
    for twin in twins {
        let Some((key, value)) = table.remove_entry(twin.as_str()) else {
            continue;
        };
        let stem = twin.trim_end_matches("_file").to_owned();
        let path = join_key(prefix, &twin);
        if table.contains_key(stem.as_str()) {
            return Err(ctx.error(
                key.span(),
                &path,
                format!("give either `{stem}` or `{twin}`, not both"),
            ));
        }
        let Some(file) = value.get_ref().as_str() else {
            return Err(ctx.error(value.span(), &path, "must be a file path (string)"));
        };
        let content = std::fs::read_to_string(file)
            .map_err(|e| ctx.error(value.span(), &path, format!("cannot read {file:?}: {e}")))?;
        let content = content.strip_suffix('\n').unwrap_or(&content);
        let content = content.strip_suffix('\r').unwrap_or(content).to_owned();
        table.insert(
            Spanned::new(key.span(), Cow::Owned(stem)),
            Spanned::new(value.span(), DeValue::String(Cow::Owned(content))),
        );
    }
    Ok(())
}

fn substitute_value(
    ctx: &Context<'_>,
    value: &mut Spanned<DeValue<'_>>,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(text) if text.contains('$') => {
            let expanded = expand_env(text, env).map_err(|m| ctx.error(span, path, m))?;
            *text = Cow::Owned(expanded);
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_value(ctx, item, &format!("{path}[{i}]"), env)?;
            }
        }
        DeValue::Table(table) => substitute_table(ctx, table, path, env)?,
        _ => {}
    }
    Ok(())
}

/// Replaces each `${NAME}` with the variable's value; `$${` is a literal `${`.
fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        let (before, from_dollar) = rest.split_at(start);
        out.push_str(before);
        if let Some(after) = from_dollar.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = from_dollar.strip_prefix("${") {
            let Some((name, after_name)) = after.split_once('}') else {
                return Err("unterminated `${` (write `$${` for a literal `${`)".into());
            };
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            let value =
                env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = after_name;
        } else {
            out.push('$');
            rest = from_dollar.strip_prefix('$').unwrap_or_default();
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The dotted key whose key or value holds `span`: the innermost one.
fn key_at(text: &str, span: Range<usize>) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut found = None;
    find_key(doc.get_ref(), "", &span, &mut found);
    found
}

fn find_key(table: &DeTable<'_>, prefix: &str, span: &Range<usize>, found: &mut Option<String>) {
    for (key, value) in table.iter() {
        let path = join_key(prefix, key.get_ref());
        let in_key = contains(&key.span(), span);
        if in_key || contains(&value.span(), span) {
            *found = Some(path.clone());
        }
        if in_key {
            continue;
        }
        find_in_value(value, &path, span, found);
    }
}

fn find_in_value(
    value: &Spanned<DeValue<'_>>,
    path: &str,
    span: &Range<usize>,
    found: &mut Option<String>,
) {
    match value.get_ref() {
        DeValue::Table(inner) => find_key(inner, path, span, found),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                // A `[[rules]]` item's span is only its header line: look inside tables anyway.
                let table = matches!(item.get_ref(), DeValue::Table(_));
                if table || contains(&item.span(), span) {
                    if table && contains(&item.span(), span) {
                        *found = Some(item_path.clone());
                    }
                    find_in_value(item, &item_path, span, found);
                }
            }
        }
        _ => {}
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
}

/// The span of the key at dotted `path` (only plain `a.b.c` paths).
fn span_of_key(text: &str, path: &str) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, value) = table.get_key_value(part)?;
        if parts.peek().is_none() {
            return Some(key.span());
        }
        table = value.get_ref().as_table()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let env = |name: &str| (name == "IMAP_PASSWORD").then(|| "hunter2".to_owned());
        Config::parse(Path::new("herald.toml"), text, &env)
    }

    const MINIMAL: &str = r#"
[imap]
host = "127.0.0.1"
tls = "none"
username = "alerts"
password = "${IMAP_PASSWORD}"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
"#;

    #[test]
    fn example_config_loads() {
        let text = include_str!("../config.example.toml");
        let env = |name: &str| {
            Some(if name.ends_with("URL") {
                "https://example.net/h".into()
            } else {
                "x".to_owned()
            })
        };
        let config = Config::parse(Path::new("config.example.toml"), text, &env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.sinks.is_empty());
        assert!(!config.rules.is_empty());
    }

    #[test]
    fn minimal_config_with_env() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.accounts[0].imap.password.expose(), "hunter2");
        assert_eq!(config.accounts[0].imap.port(), 143);
        assert_eq!(config.accounts[0].imap.processed, Processed::Seen);
        assert_eq!(
            config.accounts[0].imap.idle_refresh,
            Duration::from_secs(1500)
        );
    }

    #[test]
    fn unknown_key_is_located() {
        let text = MINIMAL.replace("username", "usernme = \"x\"\nusername");
        let error = parse(&text).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("imap.usernme"), "{error}");
        assert_eq!(error.position, Some((5, 1)), "{error}");
        assert!(error.message.contains("unknown field"), "{error}");
    }

    #[test]
    fn unknown_key_in_sink_is_located() {
        let text = format!("{MINIMAL}timeoutt = \"5s\"\n");
        let error = parse(&text).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("sinks.hook.timeoutt"), "{error}");
        assert_eq!(error.position, Some((11, 1)), "{error}");
    }

    #[test]
    fn unknown_sink_type_is_located() {
        let error = parse(&MINIMAL.replace("\"webhook\"", "\"carrier-pigeon\"")).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("sinks.hook.type"), "{error}");
        assert_eq!(error.position, Some((9, 8)), "{error}");
    }

    #[test]
    fn missing_env_var_is_located_and_named() {
        let error = parse(&MINIMAL.replace("IMAP_PASSWORD", "NOPE_PASSWORD")).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("imap.password"));
        assert_eq!(error.position, Some((6, 12)));
        assert!(error.message.contains("NOPE_PASSWORD"), "{error}");
    }

    #[test]
    fn rule_naming_unknown_sink_is_located() {
        let text = format!(
            "{MINIMAL}\n[[rules]]\nname = \"a\"\nsinks = [\"hook\"]\n\n[[rules]]\nname = \"b\"\nsinks = [\"hook\", \"pager\"]\n"
        );
        let error = parse(&text).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("rules[1].sinks"), "{error}");
        assert_eq!(error.position, Some((18, 18)), "{error}");
        assert!(error.message.contains("\"pager\""), "{error}");
    }

    #[test]
    fn secret_file_twin_is_read_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let text = MINIMAL.replace(
            "password = \"${IMAP_PASSWORD}\"",
            &format!("password_file = {:?}", file.display().to_string()),
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.accounts[0].imap.password.expose(), "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));

        let both = text.replace("password_file", "password = \"x\"\npassword_file");
        let error = parse(&both).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("imap.password_file"), "{error}");
    }

    #[test]
    fn plaintext_to_remote_host_is_refused() {
        let error =
            parse(&MINIMAL.replace("127.0.0.1\"\ntls", "mail.example.net\"\ntls")).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("imap.tls"), "{error}");
    }

    #[test]
    fn invalid_sink_value_points_at_its_key() {
        let error =
            parse(&MINIMAL.replace("http://127.0.0.1:9/hook", "ftp://secret-token@x")).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("sinks.hook.url"), "{error}");
        assert!(!error.to_string().contains("secret-token"), "{error}");
    }

    #[test]
    fn delivery_policy_keys_are_herald_s_and_located() {
        let text = format!("{MINIMAL}retry_min = \"2s\"\nmax_age = \"1h\"\n");
        let config = parse(&text).unwrap();
        let policy = config.delivery["hook"];
        assert_eq!(policy.retry_min, Duration::from_secs(2));
        assert_eq!(policy.retry_max, Duration::from_secs(300));
        assert_eq!(policy.max_age, Duration::from_secs(3600));
        let error = parse(&format!("{MINIMAL}max_age = \"soon\"\n")).unwrap_err();
        assert_eq!(
            (error.key.as_deref(), error.position),
            (Some("sinks.hook.max_age"), Some((11, 11)))
        );
        let error = parse(&format!("{MINIMAL}retry_max = \"0s\"\n")).unwrap_err();
        assert_eq!(
            error.key.as_deref(),
            Some("sinks.hook.retry_max"),
            "{error}"
        );
    }

    #[test]
    fn fallback_must_name_a_sink() {
        let config = parse(&format!("{MINIMAL}[defaults]\nfallback = \"hook\"\n")).unwrap();
        assert_eq!(config.fallback.as_deref(), Some("hook"));
        let error = parse(&format!("{MINIMAL}[defaults]\nfallback = \"pager\"\n")).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("defaults.fallback"), "{error}");
    }

    #[test]
    fn processed_forms() {
        for (text, expected) in [
            ("seen", Processed::Seen),
            ("keyword:$Herald", Processed::Keyword("$Herald".into())),
            ("move:Alerts/Done", Processed::Move("Alerts/Done".into())),
            ("delete", Processed::Delete),
            ("none", Processed::None),
        ] {
            let config = parse(&MINIMAL.replace(
                "tls = \"none\"",
                &format!("tls = \"none\"\nprocessed = {text:?}"),
            ))
            .unwrap();
            assert_eq!(config.accounts[0].imap.processed, expected);
        }
        let error = parse(&MINIMAL.replace(
            "tls = \"none\"",
            "tls = \"none\"\nprocessed = \"keyword:a b\"",
        ))
        .unwrap_err();
        assert_eq!(error.key.as_deref(), Some("imap.processed"), "{error}");
    }

    #[test]
    fn a_0_1_imap_table_is_one_default_account_on_inbox() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.accounts.len(), 1);
        assert_eq!(config.accounts[0].name, DEFAULT_ACCOUNT);
        assert_eq!(config.accounts[0].folders, vec!["INBOX"]);
        let one = parse(&MINIMAL.replace("tls = \"none\"", "tls = \"none\"\nmailbox = \"Cron\""))
            .unwrap();
        assert_eq!(one.accounts[0].folders, vec!["Cron"]);
    }

    const TWO_ACCOUNTS: &str = r#"
[[imap]]
name = "hub"
host = "127.0.0.1"
tls = "none"
username = "alerts"
password = "x"
mailboxes = ["INBOX", "Cron"]

[[imap]]
name = "backup-site"
host = "127.0.0.2"
tls = "none"
username = "alerts"
password = "y"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
"#;

    #[test]
    fn several_accounts_and_folders() {
        let config = parse(TWO_ACCOUNTS).unwrap();
        let names: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, vec!["hub", "backup-site"]);
        assert_eq!(config.accounts[0].folders, vec!["INBOX", "Cron"]);
        assert_eq!(config.accounts[1].folders, vec!["INBOX"]);
        assert_eq!(config.accounts[1].imap.password.expose(), "y");
    }

    #[test]
    fn account_errors_are_located() {
        let cases = [
            (
                TWO_ACCOUNTS.replace("name = \"backup-site\"\n", ""),
                "imap[1]",
                (10, 1),
                "missing key `name`",
            ),
            (
                TWO_ACCOUNTS.replace("backup-site", "hub"),
                "imap[1].name",
                (11, 8),
                "defined twice",
            ),
            (
                TWO_ACCOUNTS.replace("[\"INBOX\", \"Cron\"]", "[\"INBOX\", \"INBOX\"]"),
                "imap[0].mailboxes",
                (8, 23),
                "named twice",
            ),
            (
                TWO_ACCOUNTS.replace("[\"INBOX\", \"Cron\"]", "[]"),
                "imap[0].mailboxes",
                (8, 13),
                "names no folder",
            ),
            (
                TWO_ACCOUNTS.replace("mailboxes =", "mailbox = \"INBOX\"\nmailboxes ="),
                "imap[0].mailboxes",
                (9, 13),
                "not both",
            ),
            (
                TWO_ACCOUNTS.replace("host = \"127.0.0.2\"", "host = \"mail.example.net\""),
                "imap[1].tls",
                (13, 7),
                "clear text",
            ),
            (
                TWO_ACCOUNTS.replace("username = \"alerts\"\npassword = \"y\"", "usernme = \"a\""),
                "imap[1].usernme",
                (14, 1),
                "unknown field",
            ),
        ];
        for (text, key, position, message) in cases {
            let error = parse(&text).unwrap_err();
            assert_eq!(error.key.as_deref(), Some(key), "{error}");
            assert_eq!(error.position, Some(position), "{error}");
            assert!(error.message.contains(message), "{error}");
        }
        let error = parse("[sinks.hook]\ntype = \"console\"\n").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("imap"), "{error}");
    }

    #[test]
    fn env_expansion_forms() {
        let env = |n: &str| (n == "A").then(|| "1".to_owned());
        assert_eq!(expand_env("x${A}y", &env).unwrap(), "x1y");
        assert_eq!(expand_env("$${A} $5", &env).unwrap(), "${A} $5");
        assert!(expand_env("${A", &env).is_err());
        assert!(expand_env("${B}", &env)
            .unwrap_err()
            .contains("B is not set"));
    }
}
