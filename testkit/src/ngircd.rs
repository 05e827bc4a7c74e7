//! [`Ngircd`]: a private, real ngIRCd server per test, and [`IrcClient`]: a minimal IRC client
//! that joins channels and records what arrives, independent of herald's own IRC code.
//!
//! Invariants:
//! - Each server has its own configuration, log and certificate in a temporary directory,
//!   listens on free loopback ports only, runs in the foreground (`ngircd -n`) and is killed
//!   on drop.
//! - "Started" means our own log said the server is ready *and* the plain port accepts a
//!   connection; a failed bind (port stolen between choosing and binding) is retried on other
//!   ports.
//! - As root, ngIRCd drops to `nobody`/`nogroup` (`ServerUID`/`ServerGID`); identd, DNS and
//!   PAM are off so registration is immediate; `MaxConnectionsIP = 0` lets reconnect tests
//!   open as many connections as they like.
//! - Server-side throttling (`MaxPenaltyTime`) is off unless asked for, so tests are fast;
//!   [`NgircdOptions::penalties`] turns ngIRCd's normal flood penalties back on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::tls::{write_self_signed, CertFiles};

/// Where Debian's `ngircd` package installs the server.
const NGIRCD_BIN: &str = "/usr/sbin/ngircd";

/// ngIRCd starts in milliseconds; the margin is for a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline for a graceful stop (SIGTERM): ngIRCd tells its clients and exits at once.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Interval between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Fresh ports tried when one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;

/// Nicks up to 30 characters (ngIRCd's default `MaxNickLength` is 9, too short for test
/// nicks like `herald-observer`).
pub const MAX_NICK_LENGTH: usize = 30;

/// How a test server is set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NgircdOptions {
    /// Also listen with TLS on [`Ngircd::tls_port`], with a fresh self-signed certificate.
    pub tls: bool,
    /// Keep ngIRCd's normal flood penalties (otherwise `MaxPenaltyTime = 0`).
    pub penalties: bool,
}

/// A running private ngIRCd. Killed on drop.
#[derive(Debug)]
pub struct Ngircd {
    /// Config, log and certificate; removed on drop.
    dir: TempDir,
    options: NgircdOptions,
    port: u16,
    tls_port: Option<u16>,
    certs: Option<CertFiles>,
    /// The server name, unique per instance (ngIRCd wants a dot in it).
    name: String,
    child: Option<Child>,
}

impl Ngircd {
    /// Starts a plain-text server.
    pub async fn start() -> Result<Self> {
        Self::start_with(NgircdOptions::default()).await
    }

    /// Starts a server with `options`.
    pub async fn start_with(options: NgircdOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("herald-ngircd-")
            .tempdir()
            .context("creating ngIRCd temp dir")?;
        // ngIRCd drops to nobody and must still be able to write its pid file.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .context("chmod ngIRCd temp dir")?;
        let certs = if options.tls {
            let certs = write_self_signed(dir.path(), "server")?;
            for file in [&certs.cert, &certs.key] {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644))
                    .context("chmod certificate")?;
            }
            Some(certs)
        } else {
            None
        };
        let token: String = dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        let mut server = Ngircd {
            dir,
            options,
            port: 0,
            tls_port: None,
            certs,
            name: format!("{token}.herald.test"),
            child: None,
        };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = crate::free_port();
            server.tls_port = options.tls.then(crate::free_port);
            match server.run().await {
                Ok(()) => return Ok(server),
                Err(e) if server.log().contains("Can't bind socket") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .context("ngIRCd: ports taken repeatedly")
    }

    /// The plain-text port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port on 127.0.0.1, when started with TLS.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The server certificate (self-signed), the one a client must trust.
    pub fn ca_path(&self) -> Option<&Path> {
        self.certs.as_ref().map(|c| c.cert.as_path())
    }

    /// The server's name as it appears in prefixes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instance's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything ngIRCd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ngircd.log")).unwrap_or_default()
    }

    fn config(&self) -> String {
        let uid = if rustix::process::geteuid().is_root() {
            "ServerUID = nobody\nServerGID = nogroup\n"
        } else {
            ""
        };
        let penalty = if self.options.penalties { -1 } else { 0 };
        let dir = self.dir.path().display();
        let mut conf = format!(
            "[Global]\n\
             Name = {name}\n\
             Info = herald test server\n\
             AdminInfo1 = herald tests\n\
             AdminInfo2 = loopback\n\
             AdminEMail = nobody@localhost\n\
             Listen = 127.0.0.1\n\
             Ports = {port}\n\
             MotdPhrase = herald test server\n\
             PidFile = {dir}/ngircd.pid\n\
             {uid}\
             [Limits]\n\
             MaxNickLength = {MAX_NICK_LENGTH}\n\
             MaxConnectionsIP = 0\n\
             MaxPenaltyTime = {penalty}\n\
             PingTimeout = 120\n\
             PongTimeout = 20\n\
             [Options]\n\
             PAM = no\n\
             Ident = no\n\
             DNS = no\n",
            name = self.name,
            port = self.port,
        );
        if let (Some(certs), Some(tls_port)) = (&self.certs, self.tls_port) {
            conf.push_str(&format!(
                "[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {tls_port}\n",
                certs.cert.display(),
                certs.key.display()
            ));
        }
        conf
    }

    async fn run(&mut self) -> Result<()> {
        let conf = self.dir.path().join("ngircd.conf");
        std::fs::write(&conf, self.config()).context("writing ngircd.conf")?;
        let log_path = self.dir.path().join("ngircd.log");
        let log = std::fs::File::create(&log_path).context("creating ngircd.log")?;
        let log2 = log.try_clone().context("cloning log handle")?;
        let mut child = Command::new(NGIRCD_BIN)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .context("spawning ngircd")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("polling ngircd")? {
                bail!("ngircd exited ({status}) while starting:\n{}", self.log());
            }
            let ready = self.log().contains(&format!("Server \"{}\"", self.name))
                && TcpStream::connect(("127.0.0.1", self.port)).await.is_ok();
            if ready {
                break;
            }
            if self.log().contains("Can't bind socket") {
                let _ = child.kill().await;
                bail!("ngircd could not bind:\n{}", self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                bail!("ngircd not ready within {START_TIMEOUT:?}:\n{}", self.log());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server with SIGTERM (it sends `ERROR` to its clients) and waits for it.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            child.kill().await.context("killing ngircd")?;
            bail!(
                "ngircd did not stop within {STOP_TIMEOUT:?}:\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// Kills the server with SIGKILL (clients see the connection drop) and reaps it.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing ngircd")?;
        }
        Ok(())
    }

    /// Starts the server again on the same ports after [`Ngircd::stop`] or [`Ngircd::kill`].
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.run()
            .await
            .context("restarting ngircd on its old ports")
    }
}

/// One line as a client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcLine {
    /// The bytes as received, CR LF included.
    pub bytes: Vec<u8>,
    /// The line as text (lossy for invalid UTF-8), without CR LF.
    pub raw: String,
    /// The source (`nick!user@host` or a server name).
    pub source: Option<String>,
    /// The command or numeric, upper-cased.
    pub command: String,
    /// Parameters, the trailing one last.
    pub params: Vec<String>,
}

impl IrcLine {
    fn parse(bytes: Vec<u8>) -> IrcLine {
        let raw = String::from_utf8_lossy(&bytes)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        let mut rest = raw.as_str();
        let mut source = None;
        if let Some(after) = rest.strip_prefix(':') {
            let (s, r) = after.split_once(' ').unwrap_or((after, ""));
            source = Some(s.to_owned());
            rest = r;
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut params = Vec::new();
        while !rest.is_empty() {
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing.to_owned());
                break;
            }
            let (p, r) = rest.split_once(' ').unwrap_or((rest, ""));
            if !p.is_empty() {
                params.push(p.to_owned());
            }
            rest = r;
        }
        IrcLine {
            command: command.to_ascii_uppercase(),
            bytes,
            raw: raw.clone(),
            source,
            params,
        }
    }

    /// The source's nick, when the source is a user.
    pub fn nick(&self) -> Option<&str> {
        self.source.as_deref().and_then(|s| s.split('!').next())
    }

    /// The last parameter (the text of a message).
    pub fn text(&self) -> &str {
        self.params.last().map_or("", String::as_str)
    }

    /// Parameter `index`, or "".
    pub fn param(&self, index: usize) -> &str {
        self.params.get(index).map_or("", String::as_str)
    }
}

/// A plain-text IRC client for tests: registers, joins, answers `PING`, records every line.
#[derive(Debug)]
pub struct IrcClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// The nick the server gave us.
    pub nick: String,
    /// Every line received so far, in order.
    pub seen: Vec<IrcLine>,
}

impl IrcClient {
    /// Connects to 127.0.0.1:`port` and registers as `nick` (waits for 001).
    pub async fn connect(port: u16, nick: &str) -> Result<IrcClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        let (read, writer) = stream.into_split();
        let mut client = IrcClient {
            reader: BufReader::new(read),
            writer,
            nick: nick.to_owned(),
            seen: Vec::new(),
        };
        client.send(&format!("NICK {nick}")).await?;
        client
            .send(&format!("USER {nick} 0 * :test client"))
            .await?;
        let welcome = client
            .wait_for(Duration::from_secs(10), |l| {
                l.command == "001" || l.command == "433"
            })
            .await?;
        if welcome.command == "433" {
            bail!("nick {nick} is in use");
        }
        Ok(client)
    }

    /// Sends one raw line (CR LF appended).
    pub async fn send(&mut self, line: &str) -> Result<()> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .context("writing to the IRC server")
    }

    /// Joins `channel` and waits for the server's echo.
    pub async fn join(&mut self, channel: &str) -> Result<()> {
        self.send(&format!("JOIN {channel}")).await?;
        let nick = self.nick.clone();
        let channel_lc = channel.to_ascii_lowercase();
        self.wait_for(Duration::from_secs(10), |l| {
            l.command == "JOIN"
                && l.nick() == Some(nick.as_str())
                && l.param(0).to_ascii_lowercase() == channel_lc
        })
        .await?;
        Ok(())
    }

    /// The next line (answering `PING`s on the way), or an error after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<IrcLine> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(timeout, self.reader.read_until(b'\n', &mut buf))
            .await
            .context("timed out waiting for a line")?
            .context("reading from the IRC server")?;
        if n == 0 {
            bail!("the IRC server closed the connection");
        }
        let line = IrcLine::parse(buf);
        if line.command == "PING" {
            let token = line.text().to_owned();
            self.send(&format!("PONG :{token}")).await?;
        }
        self.seen.push(line.clone());
        Ok(line)
    }

    /// Reads until a line matches `pred`, within `timeout` overall.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&IrcLine) -> bool,
    ) -> Result<IrcLine> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next(left).await.with_context(|| {
                format!(
                    "no matching line within {timeout:?}; last lines:\n{}",
                    self.tail(15)
                )
            })?;
            if pred(&line) {
                return Ok(line);
            }
        }
    }

    /// The `PRIVMSG`/`NOTICE` lines from a nick starting with `from` to `channel` seen so
    /// far, reading more until there are `count` of them or `timeout` passes.
    pub async fn messages(
        &mut self,
        from: &str,
        channel: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<IrcLine>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<IrcLine> = self
                .seen
                .iter()
                .filter(|l| is_message_from(l, from, channel))
                .cloned()
                .collect();
            if found.len() >= count {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = self.next(left).await {
                bail!(
                    "{} of {count} messages from {from} in {channel}: {e}; last lines:\n{}",
                    found.len(),
                    self.tail(15)
                );
            }
        }
    }

    /// Reads (and records) whatever arrives within `window`; for asserting that something did
    /// *not* happen after an event that would have caused it.
    pub async fn drain(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if self.next(left).await.is_err() {
                break;
            }
        }
    }

    /// The last `n` lines seen, one per line, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let skip = self.seen.len().saturating_sub(n);
        self.seen
            .iter()
            .skip(skip)
            .map(|l| l.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whether `line` is a `PRIVMSG` or `NOTICE` to `channel` from a nick starting with `from`.
pub fn is_message_from(line: &IrcLine, from: &str, channel: &str) -> bool {
    (line.command == "PRIVMSG" || line.command == "NOTICE")
        && line.nick().is_some_and(|n| n.starts_with(from))
        && line.param(0).eq_ignore_ascii_case(channel)
}
