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
//!
//! Pass 1 is `substitute`; `imap` and `sinks` read and check the `[imap]` and `[sinks.NAME]`
//! tables; the rest of passes 2 and 3 is here; `spans` turns spans into the errors' positions
//! and keys.

mod imap;
mod sinks;
mod spans;
mod substitute;
mod trust;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_bridges::sink::deserialize_duration;
use herald_bridges::SinkConfig;
use serde::de::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::dispatch::policy::{Humane, Policies, Policy, RawPolicy};
pub use crate::error::ConfigError;
use crate::expect::{Expectation, RawExpect};
use crate::route::{RawRule, RawWindow, Rule, Window};
pub use imap::{
    Account, ImapConfig, Processed, TlsMode, DEFAULT_ACCOUNT, DEFAULT_MAX_MESSAGE_BYTES,
};
pub use sinks::DeliveryPolicy;
use spans::{join_key, Context};
use substitute::substitute_table;
pub use trust::{Network, TrustConfig, Untrusted};

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
    #[serde(default, deserialize_with = "deserialize_listen")]
    pub listen: Option<std::net::SocketAddr>,
    /// How long deliveries in flight may take to finish at shutdown.
    #[serde(
        default = "default_shutdown_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub shutdown_timeout: Duration,
    /// The secret push hints must carry (`X-Herald-Token`, the script's `herald_push_token`);
    /// unset: hints are taken from anyone who can reach `listen`.
    pub push_token: Option<herald_bridges::Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: None,
            shutdown_timeout: default_shutdown_timeout(),
            push_token: None,
        }
    }
}

/// `listen`: an IP address and port (`127.0.0.1:9469`, `[::]:9469`), or `localhost:PORT`,
/// which is loopback (`127.0.0.1`). No other name is looked up: validation does no I/O.
fn deserialize_listen<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let port = text
        .strip_prefix("localhost:")
        .and_then(|port| port.parse::<u16>().ok());
    match port {
        Some(port) => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        None => Err(format!(
            "{text:?} is not an address to listen on: write an IP address and port \
             (\"127.0.0.1:9469\", \"[::]:9469\") or \"localhost:9469\""
        )),
    }
}

/// 20 s (Vector's and reliability.md G10's): under the 30 s that Docker and systemd wait
/// before SIGKILL.
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(20)
}

/// `[log]`: how herald writes its log lines (which ones: `HERALD_LOG`).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `"text"` (logfmt) or `"json"` (one object per line); `HERALD_LOG_FORMAT` overrides it.
    #[serde(default)]
    pub format: crate::logging::LogFormat,
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
    /// The lifecycle keys every rule inherits (see `dispatch::policy`).
    group_by: Option<Spanned<Vec<Spanned<String>>>>,
    group_wait: Option<Humane>,
    group_interval: Option<Humane>,
    repeat_interval: Option<Humane>,
    resolve_after: Option<Humane>,
}

impl RawDefaults {
    fn take_policy(&mut self) -> RawPolicy {
        RawPolicy {
            group_by: self.group_by.take(),
            group_wait: self.group_wait.take(),
            group_interval: self.group_interval.take(),
            repeat_interval: self.repeat_interval.take(),
            resolve_after: self.resolve_after.take(),
        }
    }
}

/// The file as deserialized, before validation (`[sinks.*]` is read separately).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    state: StateConfig,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    windows: BTreeMap<String, RawWindow>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    expect: Vec<RawExpect>,
    trust: Option<trust::RawTrust>,
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
    /// `[log]`.
    pub log: LogConfig,
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
    /// `[windows.NAME]`, by name: the time windows that rules' `during` conditions name.
    pub windows: BTreeMap<String, Window>,
    /// The lifecycle keys of `[defaults]` and of each rule that overrides one.
    pub policies: Policies,
    /// `[[expect]]`, in order, each name once.
    pub expectations: Vec<Expectation>,
    /// `[trust]`: which relays hand mail on as internal; `None`: no trust walk (`trusted` null).
    pub trust: Option<TrustConfig>,
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

impl Context<'_> {
    fn validate(
        &self,
        mut raw: RawConfig,
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
        let mut policies = Policies {
            defaults: raw
                .defaults
                .take_policy()
                .over(&Policy::default(), "defaults", self)?,
            rules: Default::default(),
        };
        let mut windows = BTreeMap::new();
        for (name, window) in &raw.windows {
            let window = window.validate(&join_key("windows", name), self)?;
            windows.insert(name.clone(), window);
        }
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (index, mut rule) in raw.rules.into_iter().enumerate() {
            let key = format!("rules[{index}]");
            let (name, policy) = rule.take_policy();
            if !policy.is_empty() {
                let policy = policy.over(&policies.defaults, &key, self)?;
                policies.rules.entry(name).or_insert(policy);
            }
            let sink = |name: &Spanned<String>| known(name, &format!("{key}.sinks"));
            rules.push(rule.validate(&key, &sink, &windows, self)?);
        }
        let mut expectations: Vec<Expectation> = Vec::with_capacity(raw.expect.len());
        for (index, expect) in raw.expect.into_iter().enumerate() {
            let key = format!("expect[{index}]");
            let span = expect.name_span();
            let expectation = expect.validate(&key, &known, &windows, self)?;
            if expectations.iter().any(|e| e.name == expectation.name) {
                return Err(self.error(
                    span,
                    &format!("{key}.name"),
                    format!(
                        "another [[expect]] is already called {:?}: names must be unique (the alerts' dedup_key is missing:NAME)",
                        expectation.name
                    ),
                ));
            }
            expectations.push(expectation);
        }
        let trust = raw.trust.take().map(|t| t.validate(self)).transpose()?;
        if let Some(token) = &raw.server.push_token {
            let problem = if raw.server.listen.is_none() {
                Some("needs [server] listen: push hints arrive there")
            } else if token.expose().is_empty() {
                Some("must not be empty (leave it out to take hints without a token)")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ConfigError {
                    file: self.path.to_owned(),
                    position: None,
                    key: Some("server.push_token".to_owned()),
                    message: problem.to_owned(),
                });
            }
        }
        Ok(Config {
            path: self.path.to_owned(),
            accounts,
            state: raw.state,
            server: raw.server,
            log: raw.log,
            default_sinks,
            fallback,
            sinks,
            delivery,
            rules,
            windows,
            policies,
            expectations,
            trust,
        })
    }
}

fn names(sinks: &BTreeMap<String, SinkConfig>) -> String {
    if sinks.is_empty() {
        "none".into()
    } else {
        sinks.keys().cloned().collect::<Vec<_>>().join(", ")
    }
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
        let text = include_str!("../../config.example.toml");
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
    fn push_token_file_is_read_and_needs_listen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t0ken\n").unwrap();
        let server = format!(
            "[server]\nlisten = \"127.0.0.1:9469\"\npush_token_file = {:?}\n",
            file.display().to_string()
        );
        let config = parse(&format!("{server}{MINIMAL}")).unwrap();
        let token = config.server.push_token.as_ref().map(|t| t.expose());
        assert_eq!(token, Some("t0ken"));
        assert!(!format!("{config:?}").contains("t0ken"));

        let without_listen = server.replace("listen = \"127.0.0.1:9469\"\n", "");
        let error = parse(&format!("{without_listen}{MINIMAL}")).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("server.push_token"), "{error}");
        std::fs::write(&file, "").unwrap();
        let error = parse(&format!("{server}{MINIMAL}")).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("server.push_token"), "{error}");
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
}
