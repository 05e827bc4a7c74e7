//! Child processes for end-to-end tests: [`HeraldProcess`] runs a binary (normally the
//! herald daemon) with its stdout and stderr captured line by line, so a test can wait for
//! a log line under a deadline instead of sleeping, and signal the process like an operator
//! or init system would.
//!
//! Also holds the process-group helpers that [`crate::Dovecot`] uses to make sure no
//! Dovecot child (auth, imap-login, log, …) outlives its test.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the synchronous process-group polls look at `/proc`: short enough that a
/// test hardly waits, long enough not to spin.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A spawned binary whose output is captured; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct HeraldProcess {
    /// The child; `kill_on_drop` is set so a failing test leaks nothing.
    child: Child,
    /// Pid at spawn time, for signals other than SIGKILL.
    pid: u32,
    /// Everything read from stdout so far; the sender lives in the reader task, so the
    /// channel closes when stdout reaches EOF.
    stdout: watch::Receiver<String>,
    /// Everything read from stderr so far; see `stdout`.
    stderr: watch::Receiver<String>,
    /// The two reader tasks, awaited by [`HeraldProcess::wait_exit`] so that output is
    /// complete once the exit status is known.
    readers: Vec<JoinHandle<()>>,
}

impl HeraldProcess {
    /// Spawns `bin` with `args` and extra environment variables (the test's own environment
    /// is inherited). stdin is `/dev/null`. Must be called inside a tokio runtime: the
    /// output readers are tasks.
    pub fn spawn(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child
            .id()
            .context("spawned child has no pid (already reaped?)")?;
        let out = child.stdout.take().context("child stdout not piped")?;
        let err = child.stderr.take().context("child stderr not piped")?;
        let (stdout, out_task) = capture(out);
        let (stderr, err_task) = capture(err);
        Ok(Self {
            child,
            pid,
            stdout,
            stderr,
            readers: vec![out_task, err_task],
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// All stdout text read so far.
    pub fn stdout(&self) -> String {
        self.stdout.borrow().clone()
    }

    /// All stderr text read so far.
    pub fn stderr(&self) -> String {
        self.stderr.borrow().clone()
    }

    /// Waits until stderr contains `needle`; fails at the deadline or when stderr closes
    /// (the process exited) without it, with the output in the error.
    pub async fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> Result<()> {
        wait_for(self.stderr.clone(), "stderr", needle, timeout)
            .await
            .with_context(|| format!("stdout so far:\n{}", self.stdout()))
    }

    /// Waits until stdout contains `needle`; see [`HeraldProcess::wait_for_stderr`].
    pub async fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> Result<()> {
        wait_for(self.stdout.clone(), "stdout", needle, timeout)
            .await
            .with_context(|| format!("stderr so far:\n{}", self.stderr()))
    }

    /// Sends SIGTERM (graceful shutdown). A no-op if the process has already exited, so a
    /// recycled pid is never signalled.
    pub fn sigterm(&mut self) -> Result<()> {
        if self.child.try_wait().context("polling child")?.is_some() {
            return Ok(());
        }
        signal_pid(self.pid, Signal::TERM).context("sending SIGTERM")
    }

    /// Sends SIGHUP (what `systemctl reload` sends). A no-op if the process has exited.
    pub fn sighup(&mut self) -> Result<()> {
        if self.child.try_wait().context("polling child")?.is_some() {
            return Ok(());
        }
        signal_pid(self.pid, Signal::HUP).context("sending SIGHUP")
    }

    /// Sends SIGKILL. A no-op if the process has already exited.
    pub fn kill(&mut self) -> Result<()> {
        if self.child.try_wait().context("polling child")?.is_some() {
            return Ok(());
        }
        self.child.start_kill().context("sending SIGKILL")
    }

    /// Waits for the process to exit and for its output to be fully read.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        let status = match tokio::time::timeout_at(deadline, self.child.wait()).await {
            Ok(status) => status.context("waiting for child")?,
            Err(_) => bail!(
                "process {} did not exit within {timeout:?}\nstderr:\n{}",
                self.pid,
                self.stderr()
            ),
        };
        // A grandchild that inherited the pipes could keep them open forever; the exit
        // status is what the caller asked for, so give up on the rest of the output then.
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout_at(deadline, reader).await;
        }
        Ok(status)
    }
}

/// Starts a task that appends each line of `stream` to a watch channel.
fn capture(
    stream: impl AsyncRead + Unpin + Send + 'static,
) -> (watch::Receiver<String>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(String::new());
    let task = tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            // Lossy decoding: a test must see a log line even if it carries stray bytes.
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => tx.send_modify(|text| text.push_str(&String::from_utf8_lossy(&line))),
            }
        }
    });
    (rx, task)
}

async fn wait_for(
    mut rx: watch::Receiver<String>,
    name: &str,
    needle: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if rx.borrow_and_update().contains(needle) {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!(
                "{name} closed without {needle:?}; {name}:\n{}",
                rx.borrow().as_str()
            ),
            Err(_) => bail!(
                "{needle:?} not in {name} within {timeout:?}; {name}:\n{}",
                rx.borrow().as_str()
            ),
        }
    }
}

fn to_pid(pid: u32) -> Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .with_context(|| format!("invalid pid {pid}"))
}

/// Sends `signal` to one process.
pub(crate) fn signal_pid(pid: u32, signal: Signal) -> Result<()> {
    rustix::process::kill_process(to_pid(pid)?, signal)
        .with_context(|| format!("kill({pid}, {signal:?})"))
}

/// Sends `signal` to every process in group `pgid`; an already empty group is fine.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> Result<()> {
    match rustix::process::kill_process_group(to_pid(pgid)?, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("killpg({pgid}, {signal:?})")),
    }
}

/// Pids of the live (not zombie) processes in process group `pgid`, read from `/proc`.
///
/// Zombies are left out: they run nothing and hold no port; they only wait for their
/// parent (or init, once reparented) to reap them.
pub fn process_group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // Processes vanish while we look: an unreadable stat means "not in the group".
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // The command name in parentheses may contain spaces: parse after the last ')'.
            // Fields then are: state, ppid, pgrp, ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
            state != Some("Z") && pgrp == Some(pgid)
        })
        .collect()
}

/// Polls until process group `pgid` has no live member; returns whether it got there
/// before the deadline. Synchronous so that `Drop` implementations can use it.
pub(crate) fn wait_group_gone(pgid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if process_group_members(pgid).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
