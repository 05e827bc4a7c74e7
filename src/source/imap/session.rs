//! One IMAP session's mechanics: connect (implicit TLS, STARTTLS or plain), log in, select,
//! IDLE, and every command under the configured timeout.
//!
//! A plaintext/TLS mismatch fails in seconds with the `tls` setting the port wants: a
//! plaintext client at an implicit-TLS port hears no greeting (the server waits for a
//! ClientHello), so after [`GREETING_PATIENCE`] of silence a second connection asks the port
//! for TLS ([`herald_bridges::tls::speaks_tls`]); a TLS client at a plaintext port gets
//! non-TLS bytes, and a second connection reads the greeting it sent. TLS errors are one
//! sentence saying what to do ([`herald_bridges::tls::explain`]).
//!
//! A session whose command was cut short may be mid-response, so every failure here is
//! returned, never recovered in place: the caller drops the session and makes a new one.
//! IDLE is left through async-imap's interrupt, never by dropping its future (chatmail's
//! lesson, style.md §10).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use async_imap::extensions::idle::IdleResponse;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{drain_for_new_mail, SessionError};

/// How long a plaintext connection waits for the greeting before checking whether the port
/// speaks TLS: servers greet at once (Dovecot in milliseconds), so this costs a slow server
/// only one extra connection, and a mismatch is reported after about this long rather than
/// after the whole `timeout`.
const GREETING_PATIENCE: Duration = Duration::from_secs(1);

/// How long a mismatch probe's own connection may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
use crate::config::{ImapConfig, TlsMode};
use crate::error::chain;
use crate::metrics::SessionHealth;
use crate::push::PushWake;
use crate::store::MailboxId;

/// A byte stream IMAP can run over: plain TCP or TLS.
pub(super) trait ImapStream: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> ImapStream for T {}

/// A logged-in session.
pub(super) type Session = async_imap::Session<Box<dyn ImapStream>>;

/// How to reach and talk to the server: connection, login, commands under timeouts.
pub(super) struct Imap {
    /// The account's settings.
    pub(super) config: ImapConfig,
    /// The folder this session selects.
    pub(super) folder: String,
    /// `account/folder`, for log lines.
    label: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Where this session's health is reported (readiness, `herald_imap_*`).
    pub(super) health: Arc<SessionHealth>,
}

/// How an IDLE ended.
pub(super) enum Idled {
    /// The server reported a change, or it was time to refresh or retry marks.
    Woke(Session),
    /// A push hint arrived.
    Pushed(Session),
    /// `stop` was cancelled; the session is logged out.
    Stopped,
}

/// What the server told us at SELECT.
#[derive(Debug, Clone, Copy)]
pub(super) struct Selected {
    /// The folder's UIDVALIDITY.
    pub(super) uidvalidity: u32,
    /// The UID the next message will get.
    pub(super) uidnext: u32,
}

impl Imap {
    /// How to reach `folder` with `config`; reads the TLS roots now.
    pub(super) fn new(
        config: ImapConfig,
        mailbox: &MailboxId,
        health: Arc<SessionHealth>,
    ) -> Result<Self> {
        let tls = match *config.tls.get_ref() {
            TlsMode::None => None,
            TlsMode::Implicit | TlsMode::Starttls => Some(
                herald_bridges::tls::client_config(
                    config.ca_file.as_deref(),
                    config.tls_fingerprint.as_ref().map(|pin| *pin.get_ref()),
                )
                .map_err(anyhow::Error::msg)?,
            ),
        };
        Ok(Imap {
            config,
            folder: mailbox.folder.clone(),
            label: mailbox.to_string(),
            tls,
            health,
        })
    }

    /// Connects, secures and logs in.
    pub(super) async fn connect(&self) -> Result<Session, SessionError> {
        let address = (self.config.host.as_str(), self.config.port());
        let tcp = timeout(self.config.timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                anyhow!(
                    "connecting to {}:{} timed out",
                    self.config.host,
                    self.config.port()
                )
            })?
            .with_context(|| {
                format!(
                    "cannot connect to {}:{}",
                    self.config.host,
                    self.config.port()
                )
            })?;
        // IDLE notifications and small commands: send each write at once.
        tcp.set_nodelay(true).context("cannot set TCP_NODELAY")?;
        let client = match *self.config.tls.get_ref() {
            TlsMode::Implicit => {
                let stream = self.handshake(tcp).await?;
                let mut client = async_imap::Client::new(stream);
                self.greeting(&mut client).await?;
                client
            }
            TlsMode::Starttls => {
                let mut plain = async_imap::Client::new(Box::new(tcp) as Box<dyn ImapStream>);
                self.greeting(&mut plain).await?;
                self.command(plain.run_command_and_check_ok("STARTTLS", None))
                    .await
                    .map_err(|e| match e {
                        SessionError::Imap(error) => {
                            SessionError::Imap(error.context("the server refused STARTTLS"))
                        }
                        fatal => fatal,
                    })?;
                let tcp = plain.into_inner();
                let stream = self.handshake(tcp).await?;
                async_imap::Client::new(stream)
            }
            TlsMode::None => {
                let mut client = async_imap::Client::new(Box::new(tcp) as Box<dyn ImapStream>);
                self.greeting(&mut client).await?;
                client
            }
        };
        let login = timeout(
            self.config.timeout,
            client.login(&self.config.username, self.config.password.expose()),
        )
        .await
        .map_err(|_| anyhow!("login timed out"))?;
        match login {
            Ok(session) => Ok(session),
            Err((async_imap::error::Error::No(text), _)) => Err(anyhow!(
                "login as {:?} refused: {} (check username and password)",
                self.config.username,
                server_text(&text)
            )
            .into()),
            Err((error, _)) => Err(plain(error).context("login failed").into()),
        }
    }

    async fn handshake<S>(&self, stream: S) -> Result<Box<dyn ImapStream>, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug + 'static,
    {
        let tls = self
            .tls
            .clone()
            .ok_or_else(|| anyhow!("TLS is not configured"))?;
        let name = rustls_pki_types::ServerName::try_from(self.config.host.clone())
            .with_context(|| format!("{:?} is not a valid TLS server name", self.config.host))?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        let error = match timeout(self.config.timeout, connector.connect(name, stream)).await {
            Ok(Ok(stream)) => return Ok(Box::new(stream)),
            Ok(Err(error)) => error,
            Err(_) => return Err(anyhow!("TLS handshake timed out").into()),
        };
        let (host, port) = (self.config.host.as_str(), self.config.port());
        let greeting = if herald_bridges::tls::is_not_tls(&error) {
            herald_bridges::tls::plaintext_greeting(host, port, PROBE_TIMEOUT).await
        } else {
            None
        };
        // One sentence, not a chain: its own words already name rustls' error.
        let why = match (greeting, herald_bridges::tls::explain(&error)) {
            (Some(greeting), _) => format!(
                "port {port} speaks plaintext IMAP, not TLS (it greeted {greeting:?}): set \
                 tls = \"starttls\" for this port, or give the server's implicit-TLS port \
                 (usually 993)"
            ),
            (None, Some(why)) => why,
            (None, None) => error.to_string(),
        };
        Err(anyhow!("TLS handshake with {host} failed: {why}").into())
    }

    /// Reads the server's greeting on a plaintext connection; a port that stays silent for
    /// [`GREETING_PATIENCE`] and answers a ClientHello is reported as a TLS port.
    async fn greeting(
        &self,
        client: &mut async_imap::Client<Box<dyn ImapStream>>,
    ) -> Result<(), SessionError> {
        let read = timeout(self.config.timeout, client.read_response());
        tokio::pin!(read);
        let (host, port) = (self.config.host.as_str(), self.config.port());
        let speaks_tls = async {
            tokio::time::sleep(GREETING_PATIENCE).await;
            herald_bridges::tls::speaks_tls(host, port, PROBE_TIMEOUT).await
        };
        let response = tokio::select! {
            response = &mut read => response,
            true = speaks_tls => {
                return Err(anyhow!(
                    "port {port} speaks TLS and sent no IMAP greeting: set tls = \"implicit\" \
                     for this port, or give the server's STARTTLS port (usually 143)"
                )
                .into())
            }
        };
        match response {
            Err(_) => Err(anyhow!("the server sent no greeting").into()),
            Ok(Err(error)) => Err(anyhow::Error::new(error)
                .context("cannot read the greeting")
                .into()),
            Ok(Ok(None)) => {
                Err(anyhow!("the server closed the connection before its greeting").into())
            }
            Ok(Ok(Some(_))) => Ok(()),
        }
    }

    pub(super) async fn select(&self, session: &mut Session) -> Result<Selected, SessionError> {
        let mailbox = match self.command(session.select(&self.folder)).await {
            Ok(mailbox) => mailbox,
            Err(SessionError::Imap(error)) => {
                return Err(anyhow!(
                    "cannot select mailbox {:?}: {} (does it exist?)",
                    self.folder,
                    chain(error.as_ref())
                )
                .into())
            }
            Err(other) => return Err(other),
        };
        let uidvalidity = mailbox
            .uid_validity
            .ok_or_else(|| anyhow!("the server reported no UIDVALIDITY"))?;
        let uidnext = mailbox
            .uid_next
            .ok_or_else(|| anyhow!("the server reported no UIDNEXT"))?;
        debug!(mailbox = %self.label, uidvalidity, uidnext, exists = mailbox.exists, "Selected mailbox.");
        Ok(Selected {
            uidvalidity,
            uidnext,
        })
    }

    pub(super) async fn logout(&self, mut session: Session) {
        match timeout(Duration::from_secs(5), session.logout()).await {
            Ok(Ok(())) => debug!("Logged out."),
            Ok(Err(error)) => debug!(%error, "LOGOUT failed."),
            Err(_) => debug!("LOGOUT timed out."),
        }
    }

    /// Runs one IMAP command under the command timeout.
    pub(super) async fn command<T>(
        &self,
        command: impl std::future::Future<Output = async_imap::error::Result<T>>,
    ) -> Result<T, SessionError> {
        match timeout(self.config.timeout, command).await {
            Ok(Ok(value)) => {
                self.health.contact();
                Ok(value)
            }
            Ok(Err(error)) => Err(plain(error).into()),
            Err(_) => Err(anyhow!(
                "IMAP command timed out after {}",
                humantime::format_duration(self.config.timeout)
            )
            .into()),
        }
    }

    /// The next item of a FETCH response, under the command timeout.
    pub(super) async fn next<S>(
        &self,
        stream: &mut S,
    ) -> Result<Option<async_imap::types::Fetch>, SessionError>
    where
        S: futures::Stream<Item = async_imap::error::Result<async_imap::types::Fetch>> + Unpin,
    {
        match timeout(self.config.timeout, stream.next()).await {
            Err(_) => Err(anyhow!(
                "FETCH timed out after {}",
                humantime::format_duration(self.config.timeout)
            )
            .into()),
            Ok(None) => Ok(None),
            Ok(Some(Ok(fetch))) => {
                self.health.contact();
                Ok(Some(fetch))
            }
            Ok(Some(Err(error))) => Err(plain(error).context("FETCH failed").into()),
        }
    }

    /// Runs `command`, whose only answer is its completion, under the command timeout.
    /// `Ok(Err(reply))` when the server refused it (`NO`, `BAD`): the session is intact, its
    /// caller decides. async-imap's own STORE and EXPUNGE end their streams at the tagged
    /// reply whatever it says, so a refusal would pass unseen; this reads it.
    pub(super) async fn checked(
        &self,
        session: &mut Session,
        command: &str,
    ) -> Result<Result<(), String>, SessionError> {
        use async_imap::error::Error;
        match timeout(
            self.config.timeout,
            session.run_command_and_check_ok(command),
        )
        .await
        {
            Ok(Ok(())) => {
                self.health.contact();
                Ok(Ok(()))
            }
            Ok(Err(Error::No(text) | Error::Bad(text))) => {
                self.health.contact();
                Ok(Err(server_text(&text)))
            }
            Ok(Err(error)) => Err(plain(error).into()),
            Err(_) => Err(anyhow!(
                "IMAP command timed out after {}",
                humantime::format_duration(self.config.timeout)
            )
            .into()),
        }
    }

    /// IDLEs until the server reports something, the refresh interval passes, `wake` comes
    /// (a retry the caller has scheduled) or `stop`. Returns the session to fetch with, or
    /// `None` after a clean logout on `stop`.
    /// IDLEs until the server reports a change, the refresh (or `wake`) time, `stop`, or a
    /// push on `push.0` (heard no sooner than `push.1`), then leaves IDLE with DONE.
    pub(super) async fn idle(
        &self,
        session: Session,
        stop: &CancellationToken,
        wake: Option<Instant>,
        push: (&PushWake, Instant),
    ) -> Result<Idled, SessionError> {
        // async-imap's `init` files whatever arrives before the `+` continuation (an EXISTS
        // sent right after the last command's completion) in the unsolicited queue, where the
        // IDLE wait never looks: check it once IDLE has begun, and leave at once if mail came.
        let queue = session.unsolicited_responses.clone();
        let mut handle = session.idle();
        self.command(handle.init()).await?;
        if drain_for_new_mail(&queue) {
            debug!("New mail announced as IDLE began; fetching.");
            return self.command(handle.done()).await.map(Idled::Woke);
        }
        debug!(mailbox = %self.label, "Idling.");
        let refresh = Instant::now() + self.config.idle_refresh;
        let refresh_at = wake.map_or(refresh, |wake| wake.min(refresh));
        let (push, push_not_before) = push;
        let (response, stopped, pushed) = {
            let (wait, interrupt) = handle.wait_with_timeout(self.config.idle_keepalive);
            tokio::pin!(wait);
            let mut interrupt = Some(interrupt);
            let mut stopped = false;
            let mut pushed = false;
            // Interrupting (dropping the stop source) lets the wait future finish cleanly;
            // dropping the future itself could leave the stream mid-response.
            let response = loop {
                tokio::select! {
                    response = &mut wait => break response,
                    () = tokio::time::sleep_until(refresh_at), if interrupt.is_some() => {
                        interrupt = None;
                    }
                    () = stop.cancelled(), if interrupt.is_some() => {
                        stopped = true;
                        interrupt = None;
                    }
                    () = async {
                        tokio::time::sleep_until(push_not_before).await;
                        push.wait().await;
                    }, if interrupt.is_some() => {
                        pushed = true;
                        interrupt = None;
                    }
                }
            };
            drop(interrupt);
            (response, stopped, pushed)
        };
        let response = response.context("IDLE failed")?;
        if !matches!(response, IdleResponse::Timeout) {
            self.health.contact();
        }
        match response {
            IdleResponse::NewData(data) => debug!(response = ?data.parsed(), "IDLE woke up."),
            IdleResponse::Timeout => {
                debug!(silence = ?self.config.idle_keepalive, "IDLE heard nothing; checking the connection with DONE.")
            }
            IdleResponse::ManualInterrupt => {}
        }
        let session = self.command(handle.done()).await?;
        if stopped {
            self.logout(session).await;
            return Ok(Idled::Stopped);
        }
        Ok(if pushed {
            Idled::Pushed(session)
        } else {
            Idled::Woke(session)
        })
    }
}

/// An async-imap error as a sentence: a `NO` or `BAD` reply is the server's own words (what
/// async-imap puts in it is a Rust debug dump, `code: None, info: Some("...")`).
fn plain(error: async_imap::error::Error) -> anyhow::Error {
    use async_imap::error::Error;
    match error {
        Error::No(text) => anyhow!("the server refused: {}", server_text(&text)),
        Error::Bad(text) => anyhow!("the server called the command bad: {}", server_text(&text)),
        Error::ConnectionLost => anyhow!("the server closed the connection"),
        other => anyhow::Error::new(other),
    }
}

/// The human text in async-imap's debug dump of a status reply: the `information` string,
/// with the response code (`[NONEXISTENT]`) before it when there is one.
fn server_text(dump: &str) -> String {
    let quoted = |marker: &str| -> Option<String> {
        let start = dump.find(marker)? + marker.len();
        let rest = dump.get(start..)?;
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                '"' => return Some(out),
                c => out.push(c),
            }
        }
        None
    };
    let info = quoted("info: Some(\"").or_else(|| quoted("information: Some(\""));
    // `code: Some(Nonexistent)` or `code: Some(Parse)`: a response code's name.
    let code = dump.find("code: Some(").and_then(|at| {
        let name: String = dump
            .get(at + "code: Some(".len()..)?
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        (!name.is_empty()).then(|| name.to_uppercase())
    });
    match (code, info) {
        (Some(code), Some(info)) => format!("[{code}] {}", info.trim()),
        (None, Some(info)) => info.trim().to_owned(),
        (Some(code), None) => format!("[{code}]"),
        // Not a dump after all (or an empty one): as it is.
        (None, None) if !dump.contains("None") => dump.trim().to_owned(),
        (None, None) => "no reason given".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::server_text;

    #[test]
    fn server_replies_are_the_servers_words() {
        assert_eq!(
            server_text("code: None, info: Some(\"Authentication failed.\")"),
            "Authentication failed."
        );
        assert_eq!(
            server_text("outcome: StatusResponse { code: Some(Nonexistent), information: Some(\"Mailbox doesn't exist: X\") }"),
            "[NONEXISTENT] Mailbox doesn't exist: X"
        );
        assert_eq!(server_text("code: None, info: None"), "no reason given");
        assert_eq!(server_text("plain words"), "plain words");
    }
}
