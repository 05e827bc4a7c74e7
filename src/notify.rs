//! The systemd notification protocol (`sd_notify(3)`), spoken by herald itself: one unix
//! datagram per message to the socket named by `$NOTIFY_SOCKET` (a path, or an abstract name
//! when it starts with `@`). Without `$NOTIFY_SOCKET` every call is a no-op, so herald runs the
//! same under any supervisor.
//!
//! What herald says, and when (see `daemon`): `READY=1` once the configuration is loaded, the
//! store open and the pipeline started; `STATUS=` whenever the IMAP sessions' state changes;
//! `WATCHDOG=1` every half `$WATCHDOG_USEC`, but only after the store answered a write probe
//! within that time, so a wedged herald stops petting the watchdog and systemd restarts it;
//! `RELOADING=1` and then `READY=1` around a reload; `STOPPING=1` at shutdown.
//!
//! [`Supervision`] is the task that decides what to say after READY=1: it polls the IMAP
//! sessions' state for `STATUS=`, and a store probe of its own for the watchdog.
//!
//! Sending never fails the caller: a lost notification is logged at DEBUG, since systemd
//! either hears the next one or acts on the missing one (a start or watchdog timeout), which
//! is the right outcome for a herald that cannot reach it.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::chain;
use crate::metrics::Metrics;
use crate::store::Store;

/// Where notifications go, read from the environment once.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// `$NOTIFY_SOCKET`; `None`: not supervised by systemd (or not asked to notify).
    socket: Option<String>,
    /// Half of `$WATCHDOG_USEC`, when it is meant for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier the environment asks for.
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        // `$WATCHDOG_PID`, when set, names the process the watchdog is for (sd_watchdog_enabled).
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && ours)
            .map(|usec| Duration::from_micros(usec / 2));
        Notifier { socket, watchdog }
    }

    /// How often to send `WATCHDOG=1` (half the watchdog timeout), if systemd wants it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog)
    }

    /// Whether anyone listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `message` (newline-separated `KEY=value` assignments).
    pub fn send(&self, message: &str) {
        let Some(socket) = &self.socket else {
            return;
        };
        if let Err(error) = send_to(socket, message) {
            debug!(%error, socket = %socket, "Cannot notify systemd.");
        }
    }
}

fn send_to(socket: &str, message: &str) -> std::io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        datagram.send_to_addr(message.as_bytes(), &address)?;
    } else {
        datagram.send_to(message.as_bytes(), socket)?;
    }
    Ok(())
}

/// A `STATUS=` value: one line, no newline (which would start another assignment).
pub fn status_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

/// The IMAP half of `STATUS=`: how many watched mailboxes have a session, and which not.
pub fn imap_status(metrics: &Metrics) -> String {
    let states = metrics.session_states();
    let up = states.iter().filter(|(_, live)| *live).count();
    let down: Vec<&str> = states
        .iter()
        .filter(|(_, live)| !*live)
        .map(|(name, _)| name.as_str())
        .collect();
    let mut status = format!("IMAP: {up} of {} mailboxes up", states.len());
    if !down.is_empty() {
        status.push_str(&format!(" (waiting for {})", down.join(", ")));
    }
    status
}

/// How often `STATUS=` is brought up to date (sent only when it changed).
const STATUS_POLL: Duration = Duration::from_millis(500);

/// Tells systemd how herald is: `STATUS=` when the IMAP state changes, and `WATCHDOG=1` while
/// the store answers (see [`crate::notify`]).
pub struct Supervision {
    /// Wakes the status loop at once (after a reload).
    changed: Arc<Notify>,
}

impl Supervision {
    /// Starts telling systemd (if it listens) until `stop`.
    pub fn spawn(
        notifier: &Notifier,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Supervision {
        let changed = Arc::new(Notify::new());
        if !notifier.enabled() {
            return Supervision { changed };
        }
        // The store's heartbeat: when a write probe last came back, in ms after `origin`.
        let origin = tokio::time::Instant::now();
        let heartbeat = Arc::new(AtomicU64::new(0));
        let watchdog = notifier.watchdog_interval();
        if let Some(interval) = watchdog {
            let (heartbeat, stop) = (heartbeat.clone(), stop.clone());
            tokio::spawn(async move {
                // One probe at a time: a wedged store holds this one, and no more pile up.
                loop {
                    match store.check_writable().await {
                        Ok(()) => heartbeat.store(millis_since(origin), Ordering::Relaxed),
                        Err(error) => debug!(error = %chain(&error), "The store probe failed."),
                    }
                    tokio::select! {
                        () = tokio::time::sleep(interval / 2) => {}
                        () = stop.cancelled() => break,
                    }
                }
            });
        }
        let (notifier, wake) = (notifier.clone(), changed.clone());
        tokio::spawn(async move {
            let mut said = String::new();
            let mut next_pet = tokio::time::Instant::now();
            let mut withheld = false;
            loop {
                let status = status_line(&imap_status(&metrics));
                if status != said {
                    notifier.send(&status);
                    said = status;
                }
                // Before the first probe came back there is nothing to say either way.
                let probed = heartbeat.load(Ordering::Relaxed) > 0;
                if let (Some(interval), true) = (watchdog, probed) {
                    let now = tokio::time::Instant::now();
                    if now >= next_pet {
                        next_pet = now + interval;
                        // Alive: the store answered within the watchdog's half period.
                        let age =
                            millis_since(origin).saturating_sub(heartbeat.load(Ordering::Relaxed));
                        if age <= u64::try_from(interval.as_millis()).unwrap_or(u64::MAX) {
                            notifier.send("WATCHDOG=1");
                            withheld = false;
                        } else if !withheld {
                            withheld = true;
                            warn!(
                                silent_for_ms = age,
                                "The store is not answering; no longer telling systemd herald is alive."
                            );
                        }
                    }
                }
                let tick = watchdog.map_or(STATUS_POLL, |w| w.min(STATUS_POLL));
                tokio::select! {
                    () = tokio::time::sleep(tick) => {}
                    () = wake.notified() => {}
                    () = stop.cancelled() => break,
                }
            }
        });
        Supervision { changed }
    }

    /// Brings `STATUS=` up to date now.
    pub fn changed(&self) {
        self.changed.notify_one();
    }
}

fn millis_since(origin: tokio::time::Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some(path.display().to_string()),
            watchdog: None,
        };
        notifier.send("READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("herald-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = UnixDatagram::bind_addr(&address).unwrap();
        let notifier = Notifier {
            socket: Some(format!("@{name}")),
            watchdog: None,
        };
        notifier.send("WATCHDOG=1");
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_line("a\nb=c"), "STATUS=a b=c");
    }
}
