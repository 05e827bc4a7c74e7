//! [`Dovecot`]: a private, real Dovecot IMAP server per test, in its own temporary
//! directory, on free loopback ports (see `shared/reference/dovecot.md`).
//!
//! Invariants:
//! - The server runs in the foreground (`dovecot -F`) in its own process group, so the
//!   master and every child it forks (log, config, anvil, auth, imap-login, imap) can be
//!   signalled and accounted for together; [`Drop`] kills the whole group and waits until
//!   no member is alive, so no test leaks a server.
//! - "Started" means a connection to the plain port got *this* instance's greeting: the
//!   greeting carries a per-instance token, so a port stolen by another test's server is
//!   never mistaken for ours. All listeners are bound by the master before any greeting
//!   is served, and a failed bind is fatal, so the implicit-TLS port is up too.
//! - Any user logs in with [`PASSWORD`] (static passdb); mail is stored as `nobody`
//!   because Dovecot refuses to access mail as root.
//! - Started with [`Dovecot::start_push`], it also listens for LMTP on a loopback port and
//!   runs herald's push script (`dist/dovecot/herald-push.lua`) through the push_notification
//!   plugin's Lua driver, exactly as the README tells an operator to.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustix::process::Signal;
use tempfile::TempDir;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::imap::{quote, RawImap};
use crate::process::{process_group_members, signal_group, wait_group_gone};
use crate::tls::{write_self_signed, write_self_signed_ca, CertFiles};

/// Where Debian's `dovecot-core` installs the server.
const DOVECOT_BIN: &str = "/usr/sbin/dovecot";

/// The user name tests log in with; the static passdb accepts any name.
pub const USER: &str = "herald";

/// The password of every user (static passdb).
pub const PASSWORD: &str = "secret";

/// Deadline for a start: Dovecot starts in well under a second (reference doc); the margin
/// is for a loaded 2-core CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline for a graceful stop. With every process signalled at once, stop takes tens of
/// milliseconds (restart measured at ~40 ms). SIGTERM to the master alone takes over a
/// second: it SIGQUITs children still alive and then sleeps a fixed second
/// (`services_monitor_wait_and_kill` in Dovecot's `service-monitor.c`).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline for the last process of a killed group to disappear.
const GROUP_GONE_TIMEOUT: Duration = Duration::from_secs(5);

/// Interval between readiness probes while starting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Fresh port pairs tried when a port turns out to be taken between choosing and binding.
const PORT_ATTEMPTS: usize = 5;

/// Writes a server certificate and key into a directory: [`write_self_signed`] or
/// [`write_self_signed_ca`].
type WriteCert = fn(&Path, &str) -> Result<CertFiles>;

/// Per user and IP connection limit. Dovecot's default of 10 locks out tests whose clients
/// reconnect quickly while old connections are still being torn down.
const MAX_USERIP_CONNECTIONS: u32 = 100;

/// A running private Dovecot. Killed, with all its children, on drop.
#[derive(Debug)]
pub struct Dovecot {
    /// Holds config, logs, certificates, runtime state and the mail; removed on drop.
    dir: TempDir,
    /// Plain IMAP port (STARTTLS offered when TLS is on).
    port: u16,
    /// Implicit-TLS port, when started with [`Dovecot::start_tls`].
    tls_port: Option<u16>,
    /// Server certificate and key, when TLS is on.
    certs: Option<CertFiles>,
    /// Put into the greeting so readiness probes recognise this instance.
    token: String,
    /// The master process; `None` while stopped.
    child: Option<Child>,
    /// The instance's process group (the master's pid), kept apart from `child` so that
    /// children are still cleaned up after the master died on its own.
    pgid: Option<u32>,
    /// Settings appended to the configuration (see [`Dovecot::set_extra_config`]).
    extra: String,
    /// The push plugin's settings, when started with [`Dovecot::start_push`].
    push: Option<Push>,
    /// LMTP port on 127.0.0.1, when started with [`Dovecot::start_push`].
    lmtp_port: Option<u16>,
}

/// How [`Dovecot::start_push`] configures the push_notification plugin.
#[derive(Debug, Clone)]
pub struct Push {
    /// `herald_push_url`: where the script POSTs its hints.
    pub url: String,
    /// The Lua script (`dist/dovecot/herald-push.lua`).
    pub script: PathBuf,
    /// `herald_push_token`, when set.
    pub token: Option<String>,
}

/// Why one start attempt did not succeed.
enum Attempt {
    /// A listener port was taken: worth retrying on other ports.
    PortTaken(anyhow::Error),
    /// Anything else: retrying would not help.
    Failed(anyhow::Error),
}

impl Dovecot {
    /// Starts a plain-text instance (`ssl = no`) with one listener.
    pub async fn start() -> Result<Self> {
        Self::launch(None).await
    }

    /// Starts an instance with a fresh self-signed certificate for `localhost` and
    /// 127.0.0.1: [`Dovecot::port`] offers STARTTLS, [`Dovecot::tls_port`] is implicit TLS,
    /// and [`Dovecot::ca_path`] is the PEM for clients to trust.
    pub async fn start_tls() -> Result<Self> {
        Self::launch(Some(write_self_signed)).await
    }

    /// As [`Dovecot::start_tls`], with the kind of certificate `openssl req -x509` makes:
    /// self-signed and CA:TRUE ([`write_self_signed_ca`]), which a client must pin.
    pub async fn start_tls_self_signed_ca() -> Result<Self> {
        Self::launch(Some(write_self_signed_ca)).await
    }

    /// Starts a plain-text instance that also delivers over LMTP ([`Dovecot::lmtp_port`])
    /// and runs the push_notification plugin with `push`'s Lua script, for IMAP APPEND and
    /// LMTP delivery alike. Login names and LMTP recipients lose their domain
    /// (`auth_username_format = %Ln`), so `herald@localhost` is [`USER`]'s INBOX.
    pub async fn start_push(push: Push) -> Result<Self> {
        Self::launch_with(None, Some(push)).await
    }

    async fn launch(tls: Option<WriteCert>) -> Result<Self> {
        Self::launch_with(tls, None).await
    }

    async fn launch_with(tls: Option<WriteCert>, push: Option<Push>) -> Result<Self> {
        let mut dovecot = Self::prepare(tls)?;
        let tls = tls.is_some();
        let lmtp = push.is_some();
        dovecot.push = push;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let (port, tls_port, lmtp_port) = free_ports().context("choosing ports")?;
            dovecot.port = port;
            dovecot.tls_port = tls.then_some(tls_port);
            dovecot.lmtp_port = lmtp.then_some(lmtp_port);
            match dovecot.run().await {
                Ok(()) => return Ok(dovecot),
                Err(Attempt::PortTaken(e)) => last = Some(e),
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!(
                "Dovecot: ports taken {PORT_ATTEMPTS} times in a row"
            )))
    }

    /// Creates the directory, mail dir and certificates (with `tls`); ports are chosen later.
    fn prepare(tls: Option<WriteCert>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("herald-dovecot-")
            .tempdir()
            .context("creating Dovecot temp dir")?;
        // Dovecot's unprivileged processes must be able to traverse it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .context("chmod 0755 on Dovecot temp dir")?;
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).context("creating mail dir")?;
        let uid = lookup_id("/etc/passwd", "nobody")?;
        let gid = lookup_id("/etc/group", "nogroup")?;
        std::os::unix::fs::chown(&mail, Some(uid), Some(gid))
            .context("chown mail dir to nobody:nogroup (are we root?)")?;
        let certs = tls.map(|write| write(dir.path(), "server")).transpose()?;
        let token = format!(
            "herald-testkit-{}",
            dir.path()
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("dovecot")
        );
        Ok(Self {
            dir,
            port: 0,
            tls_port: None,
            certs,
            token,
            child: None,
            pgid: None,
            extra: String::new(),
            push: None,
            lmtp_port: None,
        })
    }

    /// Plain IMAP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// LMTP port on 127.0.0.1, when started with [`Dovecot::start_push`].
    pub fn lmtp_port(&self) -> Option<u16> {
        self.lmtp_port
    }

    /// Delivers `raw` to [`USER`]'s INBOX over LMTP, as Postfix would; returns once Dovecot
    /// confirmed the delivery (`250`). Needs [`Dovecot::start_push`].
    pub async fn deliver_lmtp(&self, raw: &[u8]) -> Result<()> {
        let port = self
            .lmtp_port
            .context("this Dovecot has no LMTP listener (start it with Dovecot::start_push)")?;
        crate::lmtp::deliver(port, &format!("{USER}@localhost"), raw).await
    }

    /// Implicit-TLS (imaps) port on 127.0.0.1, when started with TLS.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The user name to log in with (any name works; this one is conventional).
    pub fn user(&self) -> &str {
        USER
    }

    /// The password every user has.
    pub fn password(&self) -> &str {
        PASSWORD
    }

    /// The instance's directory (config, `dovecot.log`, mail under `mail/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PEM of the server's self-signed certificate, the one a client must trust.
    pub fn ca_path(&self) -> Option<&Path> {
        self.certs.as_ref().map(|c| c.cert.as_path())
    }

    /// Pid of the master process (also its process group id) while running.
    pub fn pid(&self) -> Option<u32> {
        self.pgid
    }

    /// Contents of `dovecot.log` (empty if not yet written).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Stops the server gracefully, the way systemd does (`KillMode=control-group`): SIGTERM
    /// to every process of the instance, so each IMAP session sends `* BYE Server shutting
    /// down.` and closes; then waits for the master and makes sure nothing of the group is
    /// left.
    ///
    /// SIGTERM to the master alone would not do: Dovecot 2.3's master then exits but leaves
    /// running `imap` processes serving their clients, without a BYE, until the clients
    /// hang up.
    pub async fn stop(&mut self) -> Result<()> {
        let child = self.child.take();
        let Some(pgid) = self.pgid.take() else {
            return Ok(());
        };
        signal_group(pgid, Signal::TERM)?;
        if let Some(mut child) = child {
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                signal_group(pgid, Signal::KILL)?;
                child.wait().await.context("reaping killed Dovecot")?;
                bail!(
                    "Dovecot did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed\n{}",
                    self.logs()
                );
            }
        }
        // The master waits for its children, so this normally finds nobody.
        signal_group(pgid, Signal::KILL)?;
        wait_group_gone_async(pgid).await
    }

    /// Stops and starts again with the same ports, configuration and mail.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        match self.run().await {
            Ok(()) => Ok(()),
            Err(Attempt::PortTaken(e) | Attempt::Failed(e)) => {
                Err(e.context("restarting Dovecot on its old ports"))
            }
        }
    }

    /// A fresh logged-in [`RawImap`] connection to the plain port.
    pub async fn connect(&self) -> Result<RawImap> {
        RawImap::connect(self.port, USER, PASSWORD).await
    }

    /// Appends `raw` to `mailbox` over IMAP and returns its UID. When this returns, the
    /// server has confirmed the APPEND.
    pub async fn append(&self, mailbox: &str, raw: &[u8]) -> Result<u32> {
        self.append_flagged(mailbox, &[], raw).await
    }

    /// Like [`Dovecot::append`], with flags such as `\Seen`.
    pub async fn append_flagged(&self, mailbox: &str, flags: &[&str], raw: &[u8]) -> Result<u32> {
        let mut imap = self.connect().await?;
        let uid = imap.append(mailbox, flags, raw).await?;
        logout(imap).await;
        Ok(uid)
    }

    /// Creates `mailbox`.
    pub async fn create_mailbox(&self, mailbox: &str) -> Result<()> {
        self.simple(&format!("CREATE {}", quote(mailbox))).await
    }

    /// Deletes `mailbox` and its messages.
    pub async fn delete_mailbox(&self, mailbox: &str) -> Result<()> {
        self.simple(&format!("DELETE {}", quote(mailbox))).await
    }

    /// Flags of message `uid` in `mailbox`, without `\Recent`: that one is per session,
    /// depends on which connection looked first, and so means nothing to an assertion.
    pub async fn flags(&self, mailbox: &str, uid: u32) -> Result<Vec<String>> {
        let mut imap = self.connect().await?;
        imap.examine(mailbox).await?;
        let mut flags = imap.uid_flags(uid).await?;
        logout(imap).await;
        flags.retain(|f| !f.eq_ignore_ascii_case("\\Recent"));
        Ok(flags)
    }

    /// The Maildir file of message `uid` in `INBOX` of [`USER`], found through Dovecot's
    /// `dovecot-uidlist` (`UID [extensions] :BASENAME`) in `new/` or `cur/` (Dovecot moves it
    /// there, adding `:2,FLAGS`, once a session has seen it).
    pub fn inbox_file(&self, uid: u32) -> Result<std::path::PathBuf> {
        let maildir = self.dir.path().join("mail").join(USER);
        let list = std::fs::read_to_string(maildir.join("dovecot-uidlist"))
            .context("reading dovecot-uidlist")?;
        let base = list
            .lines()
            .skip(1)
            .find(|line| line.split(' ').next() == Some(&uid.to_string()))
            .and_then(|line| line.split_once(':'))
            .map(|(_, base)| base.to_owned())
            .with_context(|| format!("UID {uid} not in dovecot-uidlist:\n{list}"))?;
        for sub in ["new", "cur"] {
            for entry in std::fs::read_dir(maildir.join(sub)).context("reading the Maildir")? {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                if name == base || name.starts_with(&format!("{base}:")) {
                    return Ok(path);
                }
            }
        }
        bail!("no Maildir file for UID {uid} ({base})")
    }

    /// All UIDs in `mailbox`, ascending.
    pub async fn uids(&self, mailbox: &str) -> Result<Vec<u32>> {
        let mut imap = self.connect().await?;
        imap.examine(mailbox).await?;
        let mut uids = imap.uid_search("ALL").await?;
        logout(imap).await;
        uids.sort_unstable();
        Ok(uids)
    }

    /// UIDVALIDITY of `mailbox`.
    pub async fn uidvalidity(&self, mailbox: &str) -> Result<u32> {
        let mut imap = self.connect().await?;
        let selected = imap.examine(mailbox).await?;
        logout(imap).await;
        Ok(selected.uidvalidity)
    }

    async fn simple(&self, cmd: &str) -> Result<()> {
        let mut imap = self.connect().await?;
        imap.command(cmd).await?;
        logout(imap).await;
        Ok(())
    }

    /// One start attempt on the current ports: write the config, spawn, wait for our
    /// greeting.
    async fn run(&mut self) -> std::result::Result<(), Attempt> {
        let conf = self.dir.path().join("dovecot.conf");
        std::fs::write(&conf, self.config())
            .context("writing dovecot.conf")
            .map_err(Attempt::Failed)?;
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("dovecot.out"))
            .context("opening dovecot.out")
            .map_err(Attempt::Failed)?;
        let output2 = output
            .try_clone()
            .context("cloning dovecot.out handle")
            .map_err(Attempt::Failed)?;
        let child = Command::new(DOVECOT_BIN)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            // Own process group: lets Drop kill the master and all its children at once.
            .process_group(0)
            .stdin(Stdio::null())
            // Errors before the log process is up (bad config) only go to stderr.
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(output2))
            .spawn()
            .with_context(|| format!("spawning {DOVECOT_BIN} (apt-get install dovecot-imapd)"))
            .map_err(Attempt::Failed)?;
        self.pgid = child.id();
        self.child = Some(child);

        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(status)) => status,
                Some(Err(e)) => return Err(Attempt::Failed(e.into())),
                None => None,
            };
            if let Some(status) = exited {
                // Nothing should be left, but a half-started instance must not linger.
                self.kill();
                let logs = self.logs();
                let error = anyhow::anyhow!(
                    "Dovecot exited during startup ({status}) on ports {} / {:?}\n{logs}",
                    self.port,
                    self.tls_port
                );
                return Err(if logs.contains("Address already in use") {
                    Attempt::PortTaken(error)
                } else {
                    Attempt::Failed(error)
                });
            }
            if greeting_contains(self.port, &self.token).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill();
                return Err(Attempt::Failed(anyhow::anyhow!(
                    "Dovecot did not greet on port {} within {START_TIMEOUT:?}\n{}",
                    self.port,
                    self.logs()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn config(&self) -> String {
        let dir = self.dir.path().display();
        let ssl = match &self.certs {
            Some(certs) => format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}",
                certs.cert.display(),
                certs.key.display()
            ),
            None => "ssl = no".to_owned(),
        };
        let push = self.push.as_ref().map_or_else(String::new, |push| {
            let token = push
                .token
                .as_ref()
                .map(|t| format!("  herald_push_token = {t}\n"))
                .unwrap_or_default();
            format!(
                "auth_username_format = %Ln
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
mail_plugins = $mail_plugins notify push_notification mail_lua push_notification_lua
plugin {{
  push_notification_driver = lua:file={script}
  herald_push_url = {url}
{token}}}
",
                lmtp = self.lmtp_port.unwrap_or(0),
                script = push.script.display(),
                url = push.url,
            )
        });
        let protocols = if self.push.is_some() {
            "imap lmtp"
        } else {
            "imap"
        };
        format!(
            "# Written by herald-testkit; see shared/reference/dovecot.md.
protocols = {protocols}
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{dir}/mail/%u
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_max_userip_connections = {MAX_USERIP_CONNECTIONS}
login_greeting = Dovecot ready ({token})
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port}
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
{push}{extra}
",
            extra = self.extra,
            token = self.token,
            port = self.port,
            tls_port = self.tls_port.unwrap_or(0),
        )
    }

    /// Settings appended to the configuration from the next [`Dovecot::restart`] on, e.g.
    /// `imap_capability = IMAP4rev1 UIDPLUS` for a server that does not offer IDLE.
    pub fn set_extra_config(&mut self, text: &str) {
        self.extra = text.to_owned();
    }

    /// Startup output and the log, for error messages.
    fn logs(&self) -> String {
        let out = std::fs::read_to_string(self.dir.path().join("dovecot.out")).unwrap_or_default();
        format!(
            "--- dovecot.out ---\n{out}--- dovecot.log ---\n{}",
            self.log()
        )
    }

    /// SIGKILLs the whole process group and waits (bounded) until it is gone.
    /// Synchronous, for `Drop`.
    fn kill(&mut self) {
        let pgid = self.pgid.take();
        if let Some(pgid) = pgid {
            // Errors are ignored: this runs in Drop, and the wait below is the real check.
            let _ = signal_group(pgid, Signal::KILL);
        }
        if let Some(mut child) = self.child.take() {
            // Reap the master so it does not linger as a zombie of the test process.
            let deadline = std::time::Instant::now() + GROUP_GONE_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(pgid) = pgid {
            // Children are reparented to init, which reaps them; wait until none is alive.
            let _ = wait_group_gone(pgid, GROUP_GONE_TIMEOUT);
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Logs out, ignoring errors: the caller's operation already succeeded, and a server that
/// is shutting down may not answer LOGOUT.
async fn logout(imap: RawImap) {
    let _ = imap.logout().await;
}

/// Whether a connection to `port` is greeted with a line containing `token`.
async fn greeting_contains(port: u16, token: &str) -> bool {
    let probe = async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut line = String::new();
        tokio::io::BufReader::new(stream)
            .read_line(&mut line)
            .await
            .ok()?;
        Some(line.contains(token))
    };
    // A listener that accepts but never greets must not stall the startup loop.
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(true))
    )
}

async fn wait_group_gone_async(pgid: u32) -> Result<()> {
    let deadline = tokio::time::Instant::now() + GROUP_GONE_TIMEOUT;
    loop {
        let left = process_group_members(pgid);
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("Dovecot processes still alive after stop: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two distinct free loopback ports (both bound at once, so they differ).
#[cfg(test)]
fn free_port_pair() -> Result<(u16, u16)> {
    let (a, b, _) = free_ports()?;
    Ok((a, b))
}

/// Three distinct free loopback ports (all bound at once, so they differ): IMAP, IMAPS, LMTP.
fn free_ports() -> Result<(u16, u16, u16)> {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0");
    let (a, b, c) = (bind()?, bind()?, bind()?);
    Ok((
        a.local_addr()?.port(),
        b.local_addr()?.port(),
        c.local_addr()?.port(),
    ))
}

/// Numeric id of `name` in a passwd-format file (`/etc/passwd`, `/etc/group`).
fn lookup_id(file: &str, name: &str) -> Result<u32> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    text.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
        .and_then(|fields| fields.get(2)?.parse().ok())
        .with_context(|| format!("{name} not found in {file}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port taken between choosing and binding is reported as retryable, for either
    /// listener, and the failed master leaves nothing behind.
    #[tokio::test]
    async fn a_taken_port_is_retryable() {
        for tls in [false, true] {
            let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let taken_port = taken.local_addr().unwrap().port();
            let (free, free2) = free_port_pair().unwrap();
            let mut dovecot = Dovecot::prepare(tls.then_some(write_self_signed)).unwrap();
            (dovecot.port, dovecot.tls_port) = if tls {
                (free, Some(taken_port))
            } else {
                (taken_port, None)
            };
            match dovecot.run().await {
                Err(Attempt::PortTaken(e)) => {
                    assert!(format!("{e:#}").contains("Address already in use"), "{e:#}")
                }
                Err(Attempt::Failed(e)) => panic!("not classified as port taken: {e:#}"),
                Ok(()) => panic!("started on a taken port (tls: {tls})"),
            }
            assert!(dovecot.child.is_none() && dovecot.pgid.is_none());
            // The same instance then starts on free ports.
            (dovecot.port, dovecot.tls_port) = (free, tls.then_some(free2));
            assert!(dovecot.run().await.is_ok(), "{}", dovecot.logs());
        }
    }
}
