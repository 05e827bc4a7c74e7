//! The command line: parses arguments, loads the configuration, runs the command, and maps
//! the result to the exit status (0 success, 1 runtime failure, 2 bad usage or configuration).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};

use crate::config::{self, Config, ConfigError};
use crate::error::chain;
use crate::route::{Decision, Router};
use crate::store::{self, Access, RowState};

/// herald: turns a mailbox of Unix system mail into alerts.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None)]
struct Cli {
    /// Configuration file [default: $HERALD_CONFIG, ./herald.toml, /etc/herald/herald.toml].
    // Global: `herald -c FILE check` and `herald check -c FILE` both work.
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch the mailbox and dispatch alerts until SIGTERM/SIGINT; SIGHUP reloads.
    Run,
    /// Validate the configuration.
    Check {
        /// Also log in to the IMAP server and select the mailbox.
        #[arg(long)]
        connect: bool,
    },
    /// Check that Dovecot's push hints reach herald: APPEND to a scratch folder (deleted
    /// after) and wait a few seconds for the hint at [server] listen.
    PushTest,
    /// Show what herald would do with each message; sends nothing.
    Classify {
        /// One JSON object per message (JSON Lines).
        #[arg(long)]
        json: bool,
        /// For each rule: whether it matched and, if not, which condition failed.
        #[arg(long)]
        explain: bool,
        /// Add each target sink's exact payload (`payloads`) to the JSON.
        #[arg(long, requires = "json")]
        render: bool,
        /// Message files (.eml); `-` reads one message from standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Send one test alert through one sink and report the outcome.
    TestSink {
        /// The sink's name, as in `[sinks.NAME]`.
        name: String,
    },
    /// Inspect and act on queued and dead deliveries.
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// Silence alerts for a while: matching alerts are counted, never sent.
    Silence {
        #[command(subcommand)]
        action: SilenceAction,
    },
    /// Show the expectations (`[[expect]]`): when each was last seen, when it is due.
    Expect {
        #[command(subcommand)]
        action: ExpectAction,
    },
    /// The recent alerts and what became of each: sent, grouped, folded, silenced, dropped.
    Alerts {
        /// How far back to look.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// One JSON object per alert (JSON Lines).
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon whether it is ready: exit 0 if it is, 1 if not.
    ///
    /// Asks `GET /readyz` on `[server] listen`: for container health checks, where there is
    /// no curl.
    Health {
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print a shell completion script to standard output.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page herald(1), in roff, to standard output.
    Man,
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum ExpectAction {
    /// Each expectation: timing, last seen, next deadline, state.
    List {
        /// One JSON object per expectation (JSON Lines).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum OutboxAction {
    /// Every delivery not yet made: pending, in flight, or dead.
    List {
        /// One JSON object per delivery (JSON Lines).
        #[arg(long)]
        json: bool,
        /// Only the deliveries in this state.
        #[arg(long, value_name = "STATE", value_parser = ["pending", "sending", "dead"])]
        state: Option<String>,
    },
    /// Send a pending or dead delivery again, now.
    Retry {
        /// The row's id, from `outbox list`.
        id: i64,
    },
    /// Give up a pending or dead delivery for good.
    Drop {
        /// The row's id, from `outbox list`.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum SilenceAction {
    /// Silence the alerts every MATCHER holds for, from now on.
    Add {
        /// How long it holds (`30m`, `2h`, `1d`) [default: 2h].
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// When it ends: RFC 3339 (`2026-12-24T08:00:00+01:00`) or `YYYY-MM-DDTHH:MM` in
        /// local time.
        #[arg(long, value_name = "TIME", conflicts_with = "duration")]
        until: Option<String>,
        /// Why it was made (shown by `silence list`).
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// `key=glob` or `key~regex`, all of which must hold. Keys: kind, host, user, command,
        /// from, account, mailbox, rule, dedup_key, subject, body, severity, failed.
        #[arg(value_name = "MATCHER", required = true)]
        matchers: Vec<String>,
    },
    /// The silences in force (with `--all`, the ended ones too), newest first.
    List {
        /// One JSON object per silence (JSON Lines).
        #[arg(long)]
        json: bool,
        /// Also the silences that have ended.
        #[arg(long)]
        all: bool,
    },
    /// End a silence now; what it suppressed stays unsent.
    Expire {
        /// The silence's id, from `silence list`.
        id: i64,
    },
}

/// The command line's definition, for the manual page and the completion scripts.
pub(crate) fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Exit statuses, as the spec promises.
const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;

/// Runs herald with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = crate::logging::use_environment() {
        eprintln!("herald: {message}");
        return ExitCode::from(EXIT_CONFIG);
    }
    init_logging();
    let file = cli.config.as_deref();
    let daemon = matches!(cli.command, Command::Run);
    let result = match cli.command {
        Command::Run => load(file).map(|config| {
            runtime().and_then(|rt| {
                rt.block_on(async {
                    let reloads = crate::daemon::hangups()?;
                    crate::daemon::run_reloading(config, crate::daemon::shutdown_signal(), reloads)
                        .await
                })
            })
        }),
        Command::Check { connect } => load(file).map(|config| check(&config, connect)),
        Command::PushTest => load(file).map(|config| {
            runtime()
                .and_then(|rt| rt.block_on(crate::push_test::run(&config)))
                .map(|sentence| println!("{sentence}"))
        }),
        Command::Classify {
            json,
            explain,
            render,
            files,
        } => optional_config(file).map(|config| {
            let output = Output {
                json,
                explain,
                render,
            };
            classify(config.as_ref(), output, &files)
        }),
        Command::TestSink { name } => load(file).and_then(|config| {
            let sink = config
                .sinks
                .get(&name)
                .cloned()
                .ok_or_else(|| ConfigError {
                    file: config.path.clone(),
                    position: None,
                    key: Some(format!("sinks.{name}")),
                    message: format!(
                        "no such sink (defined: {})",
                        config.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                })?;
            Ok(test_sink(&name, &sink))
        }),
        Command::Outbox { action } => load(file).map(|config| outbox(&config, &action)),
        Command::Silence { action } => {
            // A wrong matcher or time is bad usage: said before the configuration is read,
            // and the state is not touched.
            let action = match SilenceCommand::new(action, store::now_ms()) {
                Ok(action) => action,
                Err(message) => {
                    eprintln!("herald: {message}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            load(file).map(|config| silence(&config, action))
        }
        Command::Expect {
            action: ExpectAction::List { json },
        } => load(file).map(|config| expect_list(&config, json)),
        Command::Alerts { since, json } => load(file).map(|config| alerts(&config, since, json)),
        Command::Health { timeout } => load(file).map(|config| {
            let listen = config.server.listen.ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: [server] listen is not set, so there is no /readyz to ask",
                    config.path.display()
                )
            })?;
            runtime()?.block_on(crate::health::check(listen, timeout))
        }),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut command(), "herald", &mut std::io::stdout());
            Ok(Ok(()))
        }
        Command::Man => Ok(crate::manual::render()
            .and_then(|page| std::io::stdout().write_all(&page).map_err(Into::into))),
        Command::Version => {
            println!("herald {}", env!("CARGO_PKG_VERSION"));
            Ok(Ok(()))
        }
    };
    match result {
        Err(error) => {
            eprintln!("herald: configuration error: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
        // The daemon's last word goes to its log, in the log's format; a command run by hand
        // says what went wrong as a sentence.
        Ok(Err(error)) if daemon => {
            tracing::error!(error = %chain(error.as_ref()), "herald failed.");
            ExitCode::from(EXIT_FAILURE)
        }
        Ok(Err(error)) => {
            eprintln!("herald: {}", chain(error.as_ref()));
            ExitCode::from(EXIT_FAILURE)
        }
        Ok(Ok(())) => ExitCode::SUCCESS,
    }
}

/// Crates that log the IMAP wire at TRACE: async-imap writes every command it sends, so
/// `LOGIN "alerts" "<password>"` too, and every response it decodes.
const WIRE_LOGGERS: [&str; 2] = ["async_imap", "imap_proto"];

/// Installs the stderr logger: `HERALD_LOG` (any `tracing` filter, default `info`) decides,
/// except that [`WIRE_LOGGERS`] never log below DEBUG. The cap is a second filter beside the
/// user's, not a directive added to it, so no filter can undo it: neither `trace`, nor
/// `async_imap=trace`, nor a span-scoped directive. (Redacting the password from the
/// formatted line instead would depend on how async-imap quotes it; it logs nothing worth
/// knowing at TRACE that herald's own DEBUG lines do not say.) log-crate records, which
/// async-imap emits, reach the same filters through tracing-log under their module target.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let cap = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() <= tracing::Level::DEBUG || !is_wire_logger(meta.target())
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(crate::logging::Formatter)
        .with_filter(cap)
        .with_filter(filter);
    tracing_subscriber::registry().with(layer).init();
}

/// Whether `target` (a module path) is one of [`WIRE_LOGGERS`] or inside one.
fn is_wire_logger(target: &str) -> bool {
    WIRE_LOGGERS.iter().any(|name| {
        target
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // Two workers: herald's work is I/O-bound, and a small thread pool keeps memory low. One
    // blocking thread: the store, its main user, has one connection and serialises its calls
    // anyway, and every thread that allocates costs a glibc malloc arena (measured: 18.6 MB
    // peak RSS in the 10,000-message drain with tokio's default pool, 15.6 MB with one).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let config = Config::load(&config::locate(file))?;
    crate::logging::use_config(config.log.format);
    Ok(config)
}

/// The configuration if one is given or found; `classify` works without one.
fn optional_config(file: Option<&Path>) -> Result<Option<Config>, ConfigError> {
    let path = config::locate(file);
    let explicit =
        file.is_some() || std::env::var_os("HERALD_CONFIG").is_some_and(|v| !v.is_empty());
    if !explicit && !path.exists() {
        return Ok(None);
    }
    let config = Config::load(&path)?;
    crate::logging::use_config(config.log.format);
    Ok(Some(config))
}

fn check(config: &Config, connect: bool) -> Result<()> {
    // The IMAP login first: OK means everything asked for was checked.
    if connect {
        let rt = runtime()?;
        for account in &config.accounts {
            rt.block_on(crate::source::imap::probe(account))?;
            let folders: Vec<String> = account.folders.iter().map(|f| format!("{f:?}")).collect();
            let account_name = if account.name == config::DEFAULT_ACCOUNT {
                String::new()
            } else {
                format!(" (account {})", account.name)
            };
            println!(
                "{}{account_name}: logged in, mailbox{} {} selected",
                account.imap.host,
                if folders.len() == 1 { "" } else { "es" },
                folders.join(", ")
            );
        }
    }
    for warning in warnings(config) {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: OK ({} sink{}, {} rule{})",
        config.path.display(),
        config.sinks.len(),
        if config.sinks.len() == 1 { "" } else { "s" },
        config.rules.len(),
        if config.rules.len() == 1 { "" } else { "s" },
    );
    Ok(())
}

/// What `check` warns about: a configuration that is valid but loses alerts or cannot run.
fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.default_sinks.is_empty() {
        warnings.push(
            "[defaults] sinks is empty: an alert that no rule routes is logged and counted, \
             never delivered"
                .to_owned(),
        );
        for rule in config.rules.iter().filter(|r| r.falls_to_defaults()) {
            warnings.push(format!(
                "rule {:?} routes nowhere: it names no sinks and [defaults] sinks is empty \
                 (give it sinks, or drop = true to drop on purpose)",
                rule.name
            ));
        }
    }
    if config.fallback.is_none() {
        warnings.push(
            "[defaults] fallback is not set: a dead letter (an alert a sink rejected for good \
             or never took) is only logged"
                .to_owned(),
        );
    }
    if let Err(problem) = writable(&config.state.path) {
        warnings.push(format!(
            "[state] path {}: {problem}; herald run will fail",
            config.state.path.display()
        ));
    }
    warnings
}

/// Whether this process could write the state at `path` (the database or, before the first
/// run, a file in the nearest existing directory above it, which `run` creates the rest of).
/// Tried for real, with a probe file removed at once: permission bits do not tell for root,
/// ACLs or a read-only mount.
fn writable(path: &Path) -> Result<(), String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("cannot be written ({e})"));
    }
    let mut dir = path.parent();
    while let Some(candidate) = dir {
        let candidate = if candidate.as_os_str().is_empty() {
            Path::new(".")
        } else {
            candidate
        };
        if candidate.exists() && !candidate.is_dir() {
            return Err(format!("{} is not a directory", candidate.display()));
        }
        if candidate.is_dir() {
            let probe = candidate.join(format!(".herald-check-{}", std::process::id()));
            return match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
            {
                Ok(_) => {
                    let _ = std::fs::remove_file(&probe);
                    Ok(())
                }
                Err(e) => Err(format!(
                    "the directory {} cannot be written ({e})",
                    candidate.display()
                )),
            };
        }
        dir = candidate.parent();
    }
    Err("no directory above it exists".to_owned())
}

/// What `classify` prints for each message.
#[derive(Debug, Clone, Copy)]
struct Output {
    /// JSON Lines rather than text.
    json: bool,
    /// Add each rule's verdict.
    explain: bool,
    /// Add each target sink's payload (JSON only).
    render: bool,
}

fn classify(config: Option<&Config>, output: Output, files: &[PathBuf]) -> Result<()> {
    let router = config.map_or_else(
        || Router::new(Vec::new(), Vec::new()),
        |c| {
            Router::new(c.rules.clone(), c.default_sinks.clone())
                .expecting(c.expectations.clone())
                .trusting(c.trust.clone())
        },
    );
    let policies = config.map(|c| c.policies.clone()).unwrap_or_default();
    // A file is judged as the first account would fetch it.
    let max = config
        .and_then(|c| c.accounts.first())
        .map_or(config::DEFAULT_MAX_MESSAGE_BYTES, |a| {
            a.imap.max_message_bytes
        });
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let mut out = std::io::stdout().lock();
    let mut failures = 0;
    for file in files {
        let raw = match read_message(file) {
            Ok(raw) => raw,
            Err(error) => {
                eprintln!("herald: {}: {error:#}", file.display());
                failures += 1;
                continue;
            }
        };
        let truncated = raw.len() > max;
        let (decision, trace) = router.explain(raw.get(..max).unwrap_or(&raw), truncated, None);
        if output.json {
            let mut object = classify_json(file, &decision);
            if output.explain {
                crate::route::explain_json(&mut object, &trace);
                crate::route::trust_json(&mut object, decision.trust.as_ref());
                if let Value::Object(fields) = &mut object {
                    let policy = policies.of(decision.alert.rule.as_deref());
                    fields.insert("group_key".into(), policy.group_key(&decision.alert).into());
                    fields.insert("lifecycle".into(), policy.describe().into());
                    fields.insert("expects".into(), json!(decision.expected));
                    if let Some(problem) = resolves(&decision) {
                        fields.insert("resolves".into(), problem.into());
                    }
                }
            }
            if let (true, Value::Object(fields), Some(config)) =
                (output.render, &mut object, config)
            {
                fields.insert("payloads".into(), payloads(config, &decision));
            }
            writeln!(out, "{object}")?;
        } else {
            writeln!(out, "{}", classify_text(file, &decision))?;
            if output.explain {
                write!(out, "{}", crate::route::explain_text(&trace))?;
                write!(out, "{}", crate::route::trust_text(decision.trust.as_ref()))?;
                let policy = policies.of(decision.alert.rule.as_deref());
                writeln!(
                    out,
                    "    group {} ({})",
                    herald_bridges::text::one_line(&policy.group_key(&decision.alert), 200),
                    policy.describe()
                )?;
                for name in &decision.expected {
                    writeln!(out, "    feeds expectation {name}")?;
                }
                if let Some(problem) = resolves(&decision) {
                    writeln!(
                        out,
                        "    a recovery: resolves the open problem {}, if there is one",
                        herald_bridges::text::one_line(&problem, 200)
                    )?;
                }
            }
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} file(s) could not be read");
    }
    Ok(())
}

/// The problem a recovery resolves (if it is open): its `dedup_key`.
fn resolves(decision: &Decision) -> Option<String> {
    let alert = &decision.alert;
    (!decision.dropped && (alert.resolve || alert.failed == Some(false)))
        .then(|| alert.dedup_key.clone())
}

/// What each target sink would send for `decision`: exactly the payload, never a secret.
fn payloads(config: &Config, decision: &Decision) -> Value {
    let mut payloads = Map::new();
    for name in &decision.sinks {
        if let Some(sink) = config.sinks.get(name) {
            payloads.insert(name.clone(), sink.render(&decision.alert));
        }
    }
    Value::Object(payloads)
}

fn outbox(config: &Config, action: &OutboxAction) -> Result<()> {
    // Listing only reads; retry and drop write beside a running daemon. Neither creates the
    // state or resets the rows a running daemon is delivering.
    let access = match action {
        OutboxAction::List { .. } => Access::ReadOnly,
        OutboxAction::Retry { .. } | OutboxAction::Drop { .. } => Access::Admin,
    };
    runtime()?.block_on(async {
        let store = store::open(config.state.path.clone(), access).await?;
        match action {
            OutboxAction::List { json, state } => {
                let rows: Vec<_> = store
                    .unsent()
                    .await?
                    .into_iter()
                    .filter(|row| state.as_deref().is_none_or(|s| row.state.as_str() == s))
                    .collect();
                let mut out = std::io::stdout().lock();
                if *json {
                    for row in &rows {
                        writeln!(out, "{}", outbox_json(row))?;
                    }
                    return Ok(());
                }
                let now = store::now_ms();
                let age = |ms: i64| {
                    humantime::format_duration(std::time::Duration::from_secs(
                        u64::try_from((now - ms) / 1000).unwrap_or(0),
                    ))
                    .to_string()
                };
                // The title is last and whole (on one line): it is what tells rows apart.
                writeln!(
                    out,
                    "{:>6}  {:<8}  {:<16}  {:>8}  {:>10}  {:<40}  TITLE",
                    "ID", "STATE", "SINK", "ATTEMPTS", "AGE", "ERROR"
                )?;
                for row in &rows {
                    let sink = if row.target.is_empty() {
                        row.sink.clone()
                    } else {
                        format!("{}:{}", row.sink, row.target)
                    };
                    writeln!(
                        out,
                        "{:>6}  {:<8}  {:<16}  {:>8}  {:>10}  {:<40}  {}",
                        row.id,
                        row.state,
                        herald_bridges::text::truncate(&sink, 16),
                        row.attempts,
                        age(row.created_at),
                        herald_bridges::text::one_line(
                            row.last_error.as_deref().unwrap_or("-"),
                            40
                        ),
                        herald_bridges::text::one_line(&row.title, 1000),
                    )?;
                }
                let dead = rows.iter().filter(|r| r.state == RowState::Dead).count();
                writeln!(out, "{} undelivered ({dead} dead)", rows.len())?;
                Ok(())
            }
            OutboxAction::Retry { id } => {
                anyhow::ensure!(
                    store.retry_now(*id).await?,
                    "no pending or dead delivery with id {id}"
                );
                println!("{id}: queued for an attempt now");
                Ok(())
            }
            OutboxAction::Drop { id } => {
                anyhow::ensure!(
                    store.drop_row(*id).await?,
                    "no pending or dead delivery with id {id}"
                );
                println!("{id}: dropped");
                Ok(())
            }
        }
    })
}

/// One `outbox list --json` line: every field, the title and error whole.
fn outbox_json(row: &store::Row) -> Value {
    json!({
        "id": row.id,
        "state": row.state.as_str(),
        "sink": row.sink,
        "target": row.target,
        "attempts": row.attempts,
        "created_at": rfc3339(row.created_at),
        "next_attempt_at": rfc3339(row.next_attempt_at),
        "last_error": row.last_error,
        "title": row.title,
    })
}

fn expect_list(config: &Config, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        let store = store::open(config.state.path.clone(), Access::ReadOnly).await?;
        let stored = store.expected().await?;
        let time = |at: Option<i64>| {
            at.and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M")
                        .to_string()
                })
                .unwrap_or_else(|| "-".into())
        };
        let mut out = std::io::stdout().lock();
        if !json {
            writeln!(
                out,
                "{:<24}  {:<28}  {:<16}  {:<16}  STATE",
                "NAME", "TIMING", "LAST SEEN", "DUE BY"
            )?;
        }
        for e in &config.expectations {
            let state = stored.iter().find(|s| s.name == e.name);
            let due = state.map(|s| e.deadline(s.expected_at));
            let condition = match state {
                None => "not started (herald has not run with it)".to_owned(),
                Some(s) => match s.missing_since {
                    Some(since) => format!("missing since {}", time(Some(since))),
                    None => "ok".to_owned(),
                },
            };
            if json {
                let rfc = |at: Option<i64>| {
                    at.and_then(chrono::DateTime::from_timestamp_millis)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                };
                writeln!(
                    out,
                    "{}",
                    json!({
                        "name": e.name,
                        "timing": e.timing.describe(),
                        "grace": humantime::format_duration(e.grace).to_string(),
                        "last_seen": rfc(state.and_then(|s| s.last_seen)),
                        "due": rfc(due),
                        "missing_since": rfc(state.and_then(|s| s.missing_since)),
                        "state": match state {
                            None => "new",
                            Some(s) if s.missing_since.is_some() => "missing",
                            Some(_) => "ok",
                        },
                    })
                )?;
            } else {
                writeln!(
                    out,
                    "{:<24}  {:<28}  {:<16}  {:<16}  {condition}",
                    herald_bridges::text::one_line(&e.name, 24),
                    herald_bridges::text::one_line(&e.timing.describe(), 28),
                    time(state.and_then(|s| s.last_seen)),
                    time(due),
                )?;
            }
        }
        Ok(())
    })
}

fn alerts(config: &Config, since: std::time::Duration, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        let store = store::open(config.state.path.clone(), Access::ReadOnly).await?;
        let since =
            store::now_ms().saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
        let recent = store.recent(since, crate::history::LIMIT).await?;
        let mut out = std::io::stdout().lock();
        if json {
            for r in &recent {
                writeln!(out, "{}", crate::history::json(r))?;
            }
        } else {
            write!(out, "{}", crate::history::text(&recent))?;
        }
        Ok(())
    })
}

/// A `silence` command with its arguments checked.
#[derive(Debug)]
enum SilenceCommand {
    Add(store::Silence),
    List { json: bool, all: bool },
    Expire(i64),
}

/// How long a silence holds when neither `--for` nor `--until` is given.
const DEFAULT_SILENCE: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

impl SilenceCommand {
    /// Checks the matchers and works out the end; the error is the plain message shown.
    fn new(action: SilenceAction, now: i64) -> Result<SilenceCommand, String> {
        match action {
            SilenceAction::List { json, all } => Ok(SilenceCommand::List { json, all }),
            SilenceAction::Expire { id } => Ok(SilenceCommand::Expire(id)),
            SilenceAction::Add {
                duration,
                until,
                comment,
                matchers,
            } => {
                crate::silence::Matchers::parse(&matchers)
                    .map_err(|e| format!("silence add: {e}"))?;
                let ends_at = match until {
                    Some(text) => {
                        parse_until(&text).map_err(|e| format!("silence add: --until: {e}"))?
                    }
                    None => i64::try_from(duration.unwrap_or(DEFAULT_SILENCE).as_millis())
                        .ok()
                        .and_then(|ms| now.checked_add(ms))
                        .ok_or("silence add: --for: too long")?,
                };
                if ends_at <= now {
                    return Err(format!(
                        "silence add: the silence would end at {}, which is not in the future",
                        local_time(ends_at)
                    ));
                }
                Ok(SilenceCommand::Add(store::Silence {
                    id: 0,
                    matchers,
                    starts_at: now,
                    ends_at,
                    comment: comment.unwrap_or_default(),
                    created_at: now,
                    suppressed: 0,
                }))
            }
        }
    }
}

/// `--until`: an RFC 3339 time, or `YYYY-MM-DDTHH:MM` in local time; ms since the epoch.
fn parse_until(text: &str) -> Result<i64, String> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").map_err(|_| {
        format!("{text:?} is not a time (write 2026-12-24T08:00, or RFC 3339 with an offset)")
    })?;
    // At a clock change the hour repeated has two instants (the earlier is taken: a silence
    // ends no later than asked) and the hour skipped has none.
    naive
        .and_local_timezone(chrono::Local)
        .earliest()
        .map(|time| time.timestamp_millis())
        .ok_or_else(|| format!("{text} does not exist in local time (a clock change skips it)"))
}

/// A time for people: local, to the minute.
fn local_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M %:z")
                .to_string()
        },
    )
}

/// A time for scripts: RFC 3339 in UTC, to the second.
fn rfc3339(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms).map_or(Value::Null, |t| {
        json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    })
}

/// How far `ms` is from `now`, roughly: to the minute within a day (`1h 59m`), to the hour
/// beyond (`22days 1h`).
fn distance(now: i64, ms: i64) -> String {
    let minutes = u64::try_from((ms - now).abs() / 60_000).unwrap_or(0);
    if minutes == 0 {
        return "under a minute".to_owned();
    }
    let minutes = if minutes >= 24 * 60 {
        minutes / 60 * 60
    } else {
        minutes
    };
    humantime::format_duration(std::time::Duration::from_secs(minutes * 60)).to_string()
}

fn silence(config: &Config, command: SilenceCommand) -> Result<()> {
    // Listing only reads; add and expire write beside a running daemon, which reads the
    // silences again within seconds. Neither creates the state.
    let access = match command {
        SilenceCommand::List { .. } => Access::ReadOnly,
        SilenceCommand::Add(_) | SilenceCommand::Expire(_) => Access::Admin,
    };
    runtime()?.block_on(async {
        let store = store::open(config.state.path.clone(), access).await?;
        let now = store::now_ms();
        match command {
            SilenceCommand::Add(silence) => {
                let (starts_at, ends_at) = (silence.starts_at, silence.ends_at);
                let id = store.add_silence(silence).await?;
                println!(
                    "{id}: silenced until {} (in {})",
                    local_time(ends_at),
                    distance(starts_at, ends_at)
                );
            }
            SilenceCommand::List { json, all } => {
                let silences = store.silences((!all).then_some(now)).await?;
                let active = |s: &store::Silence| s.starts_at <= now && now < s.ends_at;
                if json {
                    let mut out = std::io::stdout().lock();
                    for s in &silences {
                        let object = json!({
                            "id": s.id,
                            "matchers": s.matchers,
                            "starts_at": rfc3339(s.starts_at),
                            "ends_at": rfc3339(s.ends_at),
                            "comment": s.comment,
                            "suppressed": s.suppressed,
                            "active": active(s),
                        });
                        writeln!(out, "{object}")?;
                    }
                    return Ok(());
                }
                println!(
                    "{:>6}  {:<23}  {:<12}  {:>10}  {:<32}  COMMENT",
                    "ID", "UNTIL", "LEFT", "SUPPRESSED", "MATCHERS"
                );
                for s in &silences {
                    let left = if active(s) {
                        distance(now, s.ends_at)
                    } else if s.ends_at <= now {
                        "ended".to_owned()
                    } else {
                        "not started".to_owned()
                    };
                    // Quoted where a space would make the list ambiguous.
                    let matchers: Vec<String> = s
                        .matchers
                        .iter()
                        .map(|m| {
                            if m.contains(char::is_whitespace) {
                                format!("{m:?}")
                            } else {
                                m.clone()
                            }
                        })
                        .collect();
                    let line = format!(
                        "{:>6}  {:<23}  {:<12}  {:>10}  {:<32}  {}",
                        s.id,
                        local_time(s.ends_at),
                        left,
                        s.suppressed,
                        herald_bridges::text::one_line(&matchers.join(" "), 80),
                        herald_bridges::text::one_line(&s.comment, 80),
                    );
                    println!("{}", line.trim_end());
                }
                let in_force = silences.iter().filter(|s| active(s)).count();
                if all {
                    println!("{in_force} active, {} ended", silences.len() - in_force);
                } else {
                    println!("{in_force} active");
                }
            }
            SilenceCommand::Expire(id) => {
                anyhow::ensure!(
                    store.expire_silence(id, now).await?,
                    "no active silence with id {id}"
                );
                println!("{id}: expired; the alerts it suppressed stay unsent");
            }
        }
        Ok(())
    })
}

/// Sends a sample alert through one sink.
fn test_sink(name: &str, sink: &herald_bridges::SinkConfig) -> Result<()> {
    let mut alert = herald_bridges::Alert::sample();
    alert.title = format!("herald test alert for sink {name}");
    alert.summary = "If you can read this, herald can deliver to this sink.".into();
    alert.dedup_key = format!("herald-test:{name}");
    let built = sink
        .build()
        .with_context(|| format!("cannot build sink {name:?}"))?;
    let outcome = runtime()?.block_on(built.deliver(&alert));
    match outcome {
        herald_bridges::Outcome::Delivered => {
            println!("{name}: delivered");
            Ok(())
        }
        herald_bridges::Outcome::Retry { after, reason } => {
            let after = after
                .map(|d| format!(" (retry after {})", humantime::format_duration(d)))
                .unwrap_or_default();
            anyhow::bail!("{name}: temporary failure, herald would retry{after}: {reason}")
        }
        herald_bridges::Outcome::Rejected { reason } => {
            anyhow::bail!("{name}: rejected, herald would not retry: {reason}")
        }
    }
}

fn read_message(file: &Path) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut raw)
            .context("cannot read standard input")?;
    } else {
        raw = std::fs::read(file).context("cannot read")?;
    }
    Ok(raw)
}

/// The `classify --json` object: the spec's fields first, in its order, then extras.
pub fn classify_json(file: &Path, decision: &Decision) -> Value {
    let alert = &decision.alert;
    let mut object = Map::new();
    object.insert("file".into(), json!(file.display().to_string()));
    let Value::Object(fields) = json!(alert) else {
        return Value::Object(object);
    };
    for key in [
        "message_id",
        "kind",
        "host",
        "user",
        "command",
        "failed",
        "exit_status",
        "severity",
        "rule",
    ] {
        object.insert(key.into(), fields.get(key).cloned().unwrap_or(Value::Null));
    }
    object.insert("dropped".into(), json!(decision.dropped));
    object.insert("sinks".into(), json!(decision.sinks));
    for (key, value) in fields {
        if key != "body" && !object.contains_key(&key) {
            object.insert(key, value);
        }
    }
    Value::Object(object)
}

fn classify_text(file: &Path, decision: &Decision) -> String {
    let alert = &decision.alert;
    let route = if decision.dropped {
        "dropped".to_owned()
    } else if decision.sinks.is_empty() {
        "no sink".to_owned()
    } else {
        format!("→ {}", decision.sinks.join(", "))
    };
    format!(
        "{}: {} [{}] {} ({route}; rule: {})",
        file.display(),
        alert.kind,
        alert.severity,
        herald_bridges::text::one_line(&alert.title, 200),
        alert.rule.as_deref().unwrap_or("-"),
    )
}

#[cfg(test)]
mod tests {
    use super::is_wire_logger;

    #[test]
    fn wire_loggers_are_recognised_by_module_path() {
        assert!(is_wire_logger("async_imap"));
        assert!(is_wire_logger("async_imap::imap_stream"));
        assert!(is_wire_logger("imap_proto::parser"));
        assert!(!is_wire_logger("async_imap_extra"));
        assert!(!is_wire_logger("herald::source::imap"));
    }
}
