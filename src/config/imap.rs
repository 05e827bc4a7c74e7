//! `[imap]` and `[[imap]]`: the IMAP accounts, their connection settings and defaults, and
//! the reader that turns the table (or array of tables) into validated [`Account`]s.
//!
//! Guarantees: every account has a name, unique among accounts ([`DEFAULT_ACCOUNT`] only for
//! a lone `[imap]` without one); every account watches at least one folder, each once; and
//! plaintext IMAP (`tls = "none"`) goes only to a loopback host unless `allow_plaintext`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use herald_bridges::sink::deserialize_duration;
use herald_bridges::tls::Fingerprint;
use herald_bridges::Secret;
use serde::de::{Deserialize, Deserializer, Error as _};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::spans::Context;
use super::ConfigError;

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
    /// An extra trust root (PEM), added to the platform's; a certificate in it is also
    /// accepted as the server's own when presented exactly (a self-signed one).
    pub ca_file: Option<PathBuf>,
    /// `"sha256:HEX"`: accept only the server certificate with this SHA-256 (see
    /// `herald_bridges::tls`).
    pub tls_fingerprint: Option<Spanned<Fingerprint>>,
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

impl Context<'_> {
    /// Reads `[imap]` (one account) or `[[imap]]` (several), with each key's location.
    pub(super) fn accounts(
        &self,
        value: Option<Spanned<DeValue<'_>>>,
    ) -> Result<Vec<Account>, ConfigError> {
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

    /// Plaintext IMAP only to loopback, unless the user insists; a pin only with TLS.
    fn check_tls(&self, key: &str, imap: &ImapConfig) -> Result<(), ConfigError> {
        if let (TlsMode::None, Some(pin)) = (imap.tls.get_ref(), &imap.tls_fingerprint) {
            return Err(self.error(
                pin.span(),
                &format!("{key}.tls_fingerprint"),
                "only applies with tls = \"implicit\" or \"starttls\"",
            ));
        }
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
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(imap_lines: &str) -> Result<Config, crate::config::ConfigError> {
        let text = format!(
            "[imap]\nhost = \"127.0.0.1\"\nusername = \"a\"\npassword = \"p\"\n{imap_lines}\n\
             [sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n"
        );
        Config::parse(Path::new("herald.toml"), &text, &|_| None)
    }

    #[test]
    fn tls_fingerprint_is_parsed_and_a_bad_one_is_located() {
        let hex = "0A".repeat(32);
        let config = parse(&format!("tls_fingerprint = \"sha256:{hex}\"")).unwrap();
        let pin = config.accounts[0].imap.tls_fingerprint.as_ref().unwrap();
        assert_eq!(pin.get_ref().to_string(), format!("sha256:{hex}"));
        let colons = vec!["0a"; 32].join(":");
        assert!(parse(&format!("tls_fingerprint = \"sha256:{colons}\"")).is_ok());

        let error = parse("tls_fingerprint = \"sha256:ABCD\"").unwrap_err();
        assert_eq!(error.position, Some((5, 19)), "{error}");
        assert!(error.to_string().contains("tls_fingerprint"), "{error}");
        assert!(error.to_string().contains("64 hex digits"), "{error}");

        let error = parse(&format!(
            "tls = \"none\"\ntls_fingerprint = \"sha256:{hex}\""
        ))
        .unwrap_err();
        assert!(
            error.to_string().contains("only applies with tls"),
            "{error}"
        );
    }
}
