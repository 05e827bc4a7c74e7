//! The exec sink: runs a command per alert — `command = ["/usr/local/bin/page", "--team",
//! "ops"]`, an argv run directly, never through a shell — with the alert's JSON (the fields
//! of `herald classify --json`, as the webhook sends them) on stdin and its main fields in
//! `HERALD_*` environment variables ([`environment`]).
//!
//! Environment: the command gets `PATH`, `HOME`, `LANG`, `LC_ALL`, `LC_CTYPE`, `TZ` and
//! `TMPDIR` from herald and nothing else of herald's (which may hold the IMAP password), plus
//! `HERALD_KIND`, `HERALD_SEVERITY`, `HERALD_LABEL` (`CRITICAL`…, `RESOLVED` on a recovery),
//! `HERALD_TITLE`, `HERALD_SUMMARY`, `HERALD_DEDUP_KEY`, `HERALD_RESOLVE` (`true`/`false`),
//! `HERALD_TEXT` (the `template`'s output, else `LABEL: title`) and, when the alert has them,
//! `HERALD_HOST`, `HERALD_USER`, `HERALD_COMMAND`, `HERALD_EXIT_STATUS`, `HERALD_RULE`,
//! `HERALD_GROUP_KEY`, `HERALD_REPEATS` (a reminder's count) and `HERALD_PROBLEMS` (a digest's
//! count). Every value is on one line, without NUL or other control characters, and at most
//! [`ENV_VALUE_CHARS`] characters: mail text cannot add a variable or break a `read` loop.
//!
//! Dispatch's notifications: a digest's members are in the stdin JSON (`digest`,
//! `digest_more`) and its count in `HERALD_PROBLEMS`; a recovery has `HERALD_RESOLVE=true`
//! and `HERALD_LABEL=RESOLVED`; a reminder has `HERALD_REPEATS`.
//!
//! Outcome, after the `sysexits.h` convention: exit status 0 is delivered; 75 (`EX_TEMPFAIL`)
//! is retried; any other status is rejected, with the first line of the command's stderr as
//! the reason; death by a signal is retried; a command that cannot be found or executed is
//! rejected.
//!
//! Guarantees:
//! - No shell: the argv is executed as given, and no alert text ever reaches it (mail text
//!   only in stdin and the environment).
//! - The command cannot outlive its `timeout` (default 30 s): it runs in a process group of
//!   its own, and the whole group (its children too) is killed with SIGKILL when the timeout
//!   passes, when something the command left running still holds its output open at the
//!   timeout, and when the delivery is abandoned (the future dropped at shutdown). A timeout
//!   is retried. (A command that leaves its group on purpose, with `setsid`, escapes this.)
//! - Output is bounded: at most [`OUTPUT_BYTES`] each of stdout and stderr are kept (the rest
//!   is read and dropped, so the command never blocks on a full pipe); a command that does
//!   not read its stdin is fine.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use crate::ratelimit::{self, RateLimiter, RateSetting};
use crate::sink::{deserialize_duration, DeliverFuture, Fixture, SinkKind};
use crate::template::Template;
use crate::text::one_line;
use crate::{present, Alert, Outcome, Sink, SinkError};

/// The most of stdout and of stderr that is kept: the reason needs one line, a debug log a
/// few; a runaway command's megabytes are read and dropped.
pub const OUTPUT_BYTES: usize = 64 * 1024;
/// The longest `HERALD_*` value: Linux allows 128 KiB per variable, but a title or summary
/// worth paging is far shorter, and the whole alert is on stdin.
pub const ENV_VALUE_CHARS: usize = 4096;
/// `EX_TEMPFAIL` from `sysexits.h`: "temporary failure … try again later".
pub const EX_TEMPFAIL: i32 = 75;
/// The most of stderr's first line kept in the reason.
const REASON_CHARS: usize = 300;
/// After the group is killed, how long its pipes may take to close before herald stops
/// reading them (a process that left the group may hold them forever).
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);
/// What the command inherits of herald's environment: enough to find programs and speak the
/// locale, and no secret.
const KEPT_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/// `type = "exec"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The program (an absolute path, or a bare name looked up in `PATH`) and its arguments.
    pub command: Vec<String>,
    /// A minijinja template for `HERALD_TEXT` (see [`crate::template`]); default
    /// `LABEL: title`.
    #[serde(default)]
    pub template: Option<Template>,
    /// How long the command may run before its process group is killed and the alert retried.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Client-side pacing, e.g. `"10/m"`; default off.
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

/// 30 s: a paging script calls an API or two; one that takes longer is stuck.
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn invalid(message: &str) -> SinkError {
    SinkError::Invalid {
        key: "command",
        message: message.to_owned(),
    }
}

impl SinkKind for Config {
    const TYPE: &'static str = "exec";

    type Sink = Exec;

    /// Checks the argv and timeout without running anything.
    fn validate(&self) -> Result<(), SinkError> {
        let Some(program) = self.command.first() else {
            return Err(invalid(
                "must name a program: [\"/path/to/program\", \"arg\", …]",
            ));
        };
        if program.is_empty() || (program.contains('/') && !program.starts_with('/')) {
            return Err(invalid(
                "the program must be an absolute path or a bare name found in PATH",
            ));
        }
        if self.command.iter().any(|arg| arg.contains('\0')) {
            return Err(invalid("no argument may contain NUL"));
        }
        if self.timeout.is_zero() {
            return Err(SinkError::Invalid {
                key: "timeout",
                message: "must be above zero".into(),
            });
        }
        Ok(())
    }

    /// `{"command", "env", "stdin"}`: what would run, with what (nothing is run).
    fn render(&self, alert: &Alert) -> Value {
        let env: serde_json::Map<String, Value> = environment(alert, self.template.as_ref())
            .into_iter()
            .map(|(name, value)| (name.to_owned(), Value::String(value)))
            .collect();
        json!({"command": self.command, "env": env, "stdin": alert})
    }

    fn build(&self) -> Result<Exec, SinkError> {
        Exec::new(self)
    }

    fn secret_fixtures(_base_url: &str, _addr: SocketAddr, _mark: &str) -> Vec<Fixture> {
        vec![Fixture::NoSecret {
            table: json!({"command": ["true"]}),
        }]
    }
}

/// The `HERALD_*` variables for `alert` (see the module documentation), in a fixed order.
pub fn environment(alert: &Alert, template: Option<&Template>) -> Vec<(&'static str, String)> {
    let label = present::severity_label(alert);
    let text = template
        .and_then(|t| t.render_or_default("exec", alert, &|s| s.to_owned()))
        .filter(|text| !text.trim().is_empty())
        .unwrap_or_else(|| format!("{label}: {}", alert.title));
    let mut env = vec![
        ("HERALD_KIND", alert.kind.as_str().to_owned()),
        ("HERALD_SEVERITY", alert.severity.as_str().to_owned()),
        ("HERALD_LABEL", label),
        ("HERALD_TITLE", alert.title.clone()),
        ("HERALD_SUMMARY", alert.summary.clone()),
        ("HERALD_DEDUP_KEY", alert.dedup_key.clone()),
        ("HERALD_RESOLVE", alert.resolve.to_string()),
        ("HERALD_TEXT", text),
    ];
    for (name, value) in [
        ("HERALD_HOST", &alert.host),
        ("HERALD_USER", &alert.user),
        ("HERALD_COMMAND", &alert.command),
        ("HERALD_RULE", &alert.rule),
        ("HERALD_GROUP_KEY", &alert.group_key),
    ] {
        if let Some(value) = value {
            env.push((name, value.clone()));
        }
    }
    if let Some(status) = alert.exit_status {
        env.push(("HERALD_EXIT_STATUS", status.to_string()));
    }
    if let Some(repeats) = &alert.repeats {
        env.push(("HERALD_REPEATS", repeats.count.to_string()));
    }
    if !alert.digest.is_empty() {
        env.push(("HERALD_PROBLEMS", present::problems(alert).to_string()));
    }
    env.into_iter()
        .map(|(name, value)| (name, one_line(&value, ENV_VALUE_CHARS)))
        .collect()
}

/// The outcome of a command that exited with `status`, having written `stderr`.
pub fn classify(status: ExitStatus, stderr: &[u8]) -> Outcome {
    let said = String::from_utf8_lossy(stderr);
    let line = said
        .lines()
        .map(|line| one_line(line, REASON_CHARS))
        .find(|line| !line.is_empty());
    let with_line = |what: String| match &line {
        Some(line) => format!("{what}: {line}"),
        None => what,
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Delivered,
        (Some(EX_TEMPFAIL), _) => Outcome::Retry {
            after: None,
            reason: with_line(format!("exit status {EX_TEMPFAIL} (EX_TEMPFAIL)")),
        },
        (Some(code), _) => Outcome::Rejected {
            reason: with_line(format!("exit status {code}")),
        },
        (None, signal) => Outcome::Retry {
            after: None,
            reason: with_line(format!("killed by signal {}", signal.unwrap_or_default())),
        },
    }
}

/// Runs a command per alert.
#[derive(Debug)]
pub struct Exec {
    command: Vec<String>,
    template: Option<Template>,
    timeout: Duration,
    limiter: RateLimiter,
}

impl Exec {
    /// Builds the sink; fails like [`Config::validate`].
    pub fn new(config: &Config) -> Result<Exec, SinkError> {
        config.validate()?;
        Ok(Exec {
            command: config.command.clone(),
            template: config.template.clone(),
            timeout: config.timeout,
            limiter: RateLimiter::new(ratelimit::effective(config.rate_limit, None)),
        })
    }

    async fn run(&self, alert: &Alert) -> Outcome {
        let Some((program, args)) = self.command.split_first() else {
            return Outcome::Rejected {
                reason: "no command".into(),
            };
        };
        self.limiter.acquire().await;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(
                KEPT_ENV
                    .iter()
                    .filter_map(|name| std::env::var_os(name).map(|value| (*name, value))),
            )
            .envs(environment(alert, self.template.as_ref()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => return spawn_failure(program, &error),
        };
        // Armed until the command has finished within its time: dropping this future (or any
        // early return) kills the group.
        let mut group = Group(child.id());
        let deadline = Instant::now() + self.timeout;
        let input = serde_json::to_vec(alert).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            // A command that exits without reading its stdin closes the pipe: not an error.
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let mut stdout = child.stdout.take().map(read_bounded);
        let mut stderr = child.stderr.take().map(read_bounded);
        let status = match timeout_at(deadline, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(error)) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("cannot wait for {program}: {error}"),
                }
            }
            Err(_) => {
                group.kill();
                let _ = timeout_at(Instant::now() + DRAIN_AFTER_KILL, child.wait()).await;
                return Outcome::Retry {
                    after: None,
                    reason: format!(
                        "timed out after {}; its process group was killed",
                        humantime::format_duration(self.timeout)
                    ),
                };
            }
        };
        // The command is done; its output is complete once everything holding the pipes (a
        // child it left running) has closed them, which may take no longer than the timeout.
        let err = collect(&mut stderr, deadline, &mut group).await;
        let out = collect(&mut stdout, deadline, &mut group).await;
        group.disarm();
        if let Some(first) = String::from_utf8_lossy(&out).lines().next() {
            tracing::debug!(
                program = program.as_str(),
                stdout = one_line(first, REASON_CHARS),
                "Command said."
            );
        }
        classify(status, &err)
    }
}

/// A reader's bytes; when it is not done by `deadline`, the group is killed and the reader
/// gets [`DRAIN_AFTER_KILL`] more, then whatever it has is given up.
async fn collect(
    reader: &mut Option<JoinHandle<Vec<u8>>>,
    deadline: Instant,
    group: &mut Group,
) -> Vec<u8> {
    let Some(handle) = reader.as_mut() else {
        return Vec::new();
    };
    if let Ok(bytes) = timeout_at(deadline, &mut *handle).await {
        return bytes.unwrap_or_default();
    }
    group.kill();
    match timeout_at(Instant::now() + DRAIN_AFTER_KILL, &mut *handle).await {
        Ok(bytes) => bytes.unwrap_or_default(),
        Err(_) => {
            handle.abort();
            Vec::new()
        }
    }
}

/// Reads `pipe` to its end, keeping the first [`OUTPUT_BYTES`].
fn read_bounded(mut pipe: impl AsyncRead + Unpin + Send + 'static) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => return kept,
                Ok(n) => {
                    let room = OUTPUT_BYTES.saturating_sub(kept.len());
                    kept.extend(buffer.iter().take(n.min(room)));
                }
            }
        }
    })
}

fn spawn_failure(program: &str, error: &std::io::Error) -> Outcome {
    let reason = format!("cannot run {program}: {error}");
    match error.kind() {
        // The configuration is wrong: retrying the same command cannot help.
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            Outcome::Rejected { reason }
        }
        // Out of processes or descriptors: transient.
        _ => Outcome::Retry {
            after: None,
            reason,
        },
    }
}

/// The command's process group (its id is the command's pid, as `process_group(0)` makes
/// it); killed on drop unless disarmed.
#[derive(Debug)]
struct Group(Option<u32>);

impl Group {
    /// SIGKILL to every process of the group, once; an empty group is fine.
    fn kill(&mut self) {
        let pid = self
            .0
            .take()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }

    /// The command finished in time: nothing to kill.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Sink for Exec {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(self.run(alert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(command: &[&str]) -> Config {
        Config {
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            template: None,
            timeout: default_timeout(),
            rate_limit: None,
        }
    }

    #[test]
    fn argv_is_checked() {
        assert!(config(&["/usr/local/bin/page", "--team", "ops"])
            .validate()
            .is_ok());
        assert!(config(&["logger"]).validate().is_ok());
        for bad in [
            &[][..],
            &[""],
            &["bin/page"],
            &["./page"],
            &["/bin/x", "a\0b"],
        ] {
            let error = config(bad).validate().unwrap_err().to_string();
            assert!(error.starts_with("command:"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn environment_is_one_line_and_nul_free() {
        let mut alert = Alert::sample();
        alert.title = "a\0b\r\nHERALD_KIND=forged".into();
        let env = environment(&alert, None);
        let title = &env.iter().find(|(n, _)| *n == "HERALD_TITLE").unwrap().1;
        assert_eq!(title, "a b HERALD_KIND=forged");
        assert!(env
            .iter()
            .all(|(_, v)| !v.contains('\0') && !v.contains('\n')));
        assert!(env.contains(&("HERALD_RESOLVE", "false".into())));
        assert!(env.contains(&("HERALD_KIND", "cron".into())));
    }

    #[test]
    fn exit_statuses_decide() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(classify(exited(0), b"noise"), Outcome::Delivered);
        assert!(matches!(classify(exited(75), b""), Outcome::Retry { .. }));
        assert_eq!(
            classify(exited(2), b"\n  \nno such team: ops\nmore\n"),
            Outcome::Rejected {
                reason: "exit status 2: no such team: ops".into()
            }
        );
        assert!(matches!(
            classify(ExitStatus::from_raw(9), b""),
            Outcome::Retry { reason, .. } if reason == "killed by signal 9"
        ));
    }
}
