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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch the mailbox and dispatch alerts until SIGTERM/SIGINT.
    Run(ConfigArg),
    /// Validate the configuration.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also log in to the IMAP server and select the mailbox.
        #[arg(long)]
        connect: bool,
    },
    /// Show what herald would do with each message; sends nothing.
    Classify {
        #[command(flatten)]
        config: ConfigArg,
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
        #[command(flatten)]
        config: ConfigArg,
        /// The sink's name, as in `[sinks.NAME]`.
        name: String,
    },
    /// Inspect and act on queued and dead deliveries.
    Outbox {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum OutboxAction {
    /// Every delivery not yet made: pending, in flight, or dead.
    List,
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

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// Configuration file [default: $HERALD_CONFIG, ./herald.toml, /etc/herald/herald.toml].
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Exit statuses, as the spec promises.
const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;

/// Runs herald with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run(arg) => load(&arg).map(|config| {
            runtime().and_then(|rt| {
                rt.block_on(crate::daemon::run(config, crate::daemon::shutdown_signal()))
            })
        }),
        Command::Check { config, connect } => load(&config).map(|config| check(&config, connect)),
        Command::Classify {
            config,
            json,
            explain,
            render,
            files,
        } => optional_config(&config).map(|config| {
            let output = Output {
                json,
                explain,
                render,
            };
            classify(config.as_ref(), output, &files)
        }),
        Command::TestSink { config, name } => load(&config).and_then(|config| {
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
        Command::Outbox { config, action } => load(&config).map(|config| outbox(&config, &action)),
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
        Ok(Err(error)) => {
            tracing::error!(error = %chain(error.as_ref()), "herald failed.");
            ExitCode::from(EXIT_FAILURE)
        }
        Ok(Ok(())) => ExitCode::SUCCESS,
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: journald and `docker logs` get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
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

fn load(arg: &ConfigArg) -> Result<Config, ConfigError> {
    Config::load(&config::locate(arg.config.as_deref()))
}

/// The configuration if one is given or found; `classify` works without one.
fn optional_config(arg: &ConfigArg) -> Result<Option<Config>, ConfigError> {
    let path = config::locate(arg.config.as_deref());
    let explicit =
        arg.config.is_some() || std::env::var_os("HERALD_CONFIG").is_some_and(|v| !v.is_empty());
    if !explicit && !path.exists() {
        return Ok(None);
    }
    Config::load(&path).map(Some)
}

fn check(config: &Config, connect: bool) -> Result<()> {
    println!(
        "{}: OK ({} sink{}, {} rule{})",
        config.path.display(),
        config.sinks.len(),
        if config.sinks.len() == 1 { "" } else { "s" },
        config.rules.len(),
        if config.rules.len() == 1 { "" } else { "s" },
    );
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
    Ok(())
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
        |c| Router::new(c.rules.clone(), c.default_sinks.clone()),
    );
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
            }
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} file(s) could not be read");
    }
    Ok(())
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
        OutboxAction::List => Access::ReadOnly,
        OutboxAction::Retry { .. } | OutboxAction::Drop { .. } => Access::Admin,
    };
    runtime()?.block_on(async {
        let store = store::open(config.state.path.clone(), access).await?;
        match action {
            OutboxAction::List => {
                let rows = store.unsent().await?;
                let now = store::now_ms();
                let age = |ms: i64| {
                    humantime::format_duration(std::time::Duration::from_secs(
                        u64::try_from((now - ms) / 1000).unwrap_or(0),
                    ))
                    .to_string()
                };
                println!(
                    "{:>6}  {:<8}  {:<16}  {:>8}  {:>10}  {:<24}  ERROR",
                    "ID", "STATE", "SINK", "ATTEMPTS", "AGE", "TITLE"
                );
                for row in &rows {
                    let sink = if row.target.is_empty() {
                        row.sink.clone()
                    } else {
                        format!("{}:{}", row.sink, row.target)
                    };
                    println!(
                        "{:>6}  {:<8}  {:<16}  {:>8}  {:>10}  {:<24}  {}",
                        row.id,
                        row.state,
                        herald_bridges::text::truncate(&sink, 16),
                        row.attempts,
                        age(row.created_at),
                        herald_bridges::text::one_line(&row.title, 24),
                        herald_bridges::text::one_line(row.last_error.as_deref().unwrap_or(""), 80),
                    );
                }
                let dead = rows.iter().filter(|r| r.state == RowState::Dead).count();
                println!("{} undelivered ({dead} dead)", rows.len());
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
