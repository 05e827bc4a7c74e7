//! `herald push-test`: whether Dovecot's push hints reach herald, tried for real.
//!
//! It creates a scratch folder of its own in the first account, APPENDs a message there (which
//! makes a Dovecot with herald's push script POST a hint to `herald_push_url`), waits up to
//! [`PUSH_WAIT`] for that hint, and deletes the folder again, whatever happened. Where the
//! hint is looked for depends on who holds `[server] listen`:
//! - nobody (herald is not running): push-test listens there itself, with the daemon's own
//!   `/push` code and `[server] push_token`, and waits for the hint naming its folder;
//! - the running daemon: push-test reads the daemon's `/metrics` before and after, and looks
//!   for its `herald_pushes_total` to grow (the scratch folder is not watched, so the daemon
//!   counts the hint as `unknown` and does nothing else with it).
//!
//! It says in one sentence what it found: the hint arrived (and how soon), it arrived but with
//! the wrong token or for another user name, or nothing came.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use async_trait::async_trait;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::config::{Account, Config};
use crate::metrics::{Metrics, PushOutcome};
use crate::push::{PushWake, Pushes};
use crate::serve::StoreProbe;

/// How long a hint may take to arrive after the APPEND was confirmed. The script sends it
/// before Dovecot confirms the APPEND, so anything but nothing arrives in milliseconds.
pub const PUSH_WAIT: Duration = Duration::from_secs(5);

/// Runs the test; `Ok` holds the sentence to print, `Err` the sentence saying what failed.
pub async fn run(config: &Config) -> Result<String> {
    let Some(listen) = config.server.listen else {
        bail!("[server] listen is not set, so herald has no /push for Dovecot to call: set it, and point herald_push_url at it (README: Fast path: Dovecot push)");
    };
    let account = config
        .accounts
        .first()
        .context("the configuration has no IMAP account")?;
    let folder = format!(
        "herald-push-test-{}-{}",
        std::process::id(),
        crate::store::now_ms()
    );
    let result = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => own_listener(listener, config, account, &folder).await,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            via_daemon(listen, account, &folder).await
        }
        Err(error) => Err(anyhow::Error::new(error)
            .context(format!("cannot listen on {listen} ([server] listen)"))),
    };
    // The folder goes whatever happened; a failure to delete it is worth saying, but not
    // instead of the result.
    if let Err(error) = crate::source::imap::delete_folder(account, &folder).await {
        tracing::warn!(%folder, error = %crate::error::chain(error.as_ref()), "Cannot delete the scratch folder; delete it by hand.");
    }
    result
}

/// herald is not running: serve `/push` on `listener` and wait for the hint.
async fn own_listener(
    listener: tokio::net::TcpListener,
    config: &Config,
    account: &Account,
    folder: &str,
) -> Result<String> {
    let listen = listener.local_addr().context("cannot read the address")?;
    let metrics = Metrics::new();
    let pushes = Pushes::new(config.server.push_token.clone(), metrics.clone());
    let wake = Arc::new(PushWake::default());
    pushes.register(&account.imap.username, folder, wake.clone());
    let stop = CancellationToken::new();
    let server = tokio::spawn(crate::serve::serve_on(
        listener,
        metrics.clone(),
        Arc::new(NoStore),
        Arc::new(pushes),
        Duration::ZERO,
        stop.clone(),
    ));
    let started = Instant::now();
    let appended = append(account, folder).await;
    let heard = match appended {
        Ok(()) => tokio::time::timeout(PUSH_WAIT, wake.wait()).await.is_ok(),
        Err(_) => false,
    };
    let elapsed = started.elapsed();
    stop.cancel();
    let _ = server.await;
    appended?;
    if heard {
        return Ok(format!(
            "Dovecot's push reached {listen}: the hint for an APPEND to {folder} arrived within {} ms (herald was not running; push-test listened itself).",
            elapsed.as_millis()
        ));
    }
    bail!(no_push(
        listen,
        folder,
        metrics.push_count(PushOutcome::Refused),
        metrics.push_count(PushOutcome::Unknown) + metrics.push_count(PushOutcome::Malformed),
        &account.imap.username
    ))
}

/// The daemon holds `listen`: watch its push counters while appending.
async fn via_daemon(listen: SocketAddr, account: &Account, folder: &str) -> Result<String> {
    let before = push_counts(listen).await?;
    let started = Instant::now();
    append(account, folder).await?;
    let deadline = tokio::time::Instant::now() + PUSH_WAIT;
    let mut now = push_counts(listen).await?;
    while now.total() == before.total() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = push_counts(listen).await?;
    }
    let elapsed = started.elapsed();
    if now.refused > before.refused {
        bail!(no_push(listen, folder, 1, 0, &account.imap.username));
    }
    if now.total() > before.total() {
        return Ok(format!(
            "Dovecot's push reached the running herald at {listen}: its push count grew within {} ms of an APPEND to {folder}.",
            elapsed.as_millis()
        ));
    }
    bail!(no_push(listen, folder, 0, 0, &account.imap.username))
}

/// The sentence for a hint that did not come as it should.
fn no_push(listen: SocketAddr, folder: &str, refused: u64, other: u64, user: &str) -> String {
    if refused > 0 {
        return format!("A push reached {listen} with a missing or wrong token: Dovecot's herald_push_token must be herald's [server] push_token.");
    }
    if other > 0 {
        return format!("A push reached {listen} but did not name {user:?}'s folder {folder}: herald matches Dovecot's user name to [imap] username (check auth_username_format).");
    }
    format!(
        "No push reached {listen} within {} s of an APPEND to {folder}: Dovecot does not run herald's push script, or its herald_push_url does not point here (README: Fast path: Dovecot push). IDLE still works, 0.5 s slower.",
        PUSH_WAIT.as_secs()
    )
}

/// Creates `folder` and appends a small message to it.
async fn append(account: &Account, folder: &str) -> Result<()> {
    let raw = format!(
        "From: herald <herald@localhost>\r\nTo: herald <herald@localhost>\r\nSubject: herald push-test\r\nDate: {}\r\nMessage-ID: <{folder}@herald>\r\n\r\nherald push-test: this folder is deleted again at once.\r\n",
        chrono::Utc::now().to_rfc2822()
    );
    crate::source::imap::append_to_new_folder(account, folder, raw.as_bytes())
        .await
        .with_context(|| format!("cannot APPEND to a scratch folder {folder:?}"))
}

/// The daemon's `herald_pushes_total`, by outcome.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    refused: u64,
    other: u64,
}

impl Counts {
    fn total(self) -> u64 {
        self.refused + self.other
    }
}

/// Reads the running daemon's push counters from its `/metrics`.
async fn push_counts(listen: SocketAddr) -> Result<Counts> {
    let text = get_metrics(listen)
        .await
        .with_context(|| format!("{listen} is taken but does not answer like herald's /metrics"))?;
    let mut counts = Counts::default();
    let mut found = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("herald_pushes_total{outcome=\"") else {
            continue;
        };
        let Some((outcome, value)) = rest.split_once("\"} ") else {
            continue;
        };
        let value: u64 = value.trim().parse().unwrap_or(0);
        found = true;
        if outcome == PushOutcome::Refused.as_str() {
            counts.refused += value;
        } else {
            counts.other += value;
        }
    }
    if !found {
        bail!("{listen} answers /metrics without herald_pushes_total: is it an older herald?");
    }
    Ok(counts)
}

/// `GET /metrics` over HTTP/1.0 (the connection closes after the answer): the body.
async fn get_metrics(listen: SocketAddr) -> Result<String> {
    let target = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(target).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: herald\r\n\r\n")
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        anyhow::Ok(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("no answer within 5 s")??;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// push-test's server has no store: `/readyz` says so, `/metrics` has no outbox.
struct NoStore;

#[async_trait]
impl StoreProbe for NoStore {
    async fn probe_writable(&self) -> Result<()> {
        bail!("herald push-test has no state database")
    }

    async fn outbox_counts(&self) -> Result<Vec<(String, String, u64)>> {
        Ok(Vec::new())
    }
}
