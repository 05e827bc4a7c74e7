//! The fast path: push hints from Dovecot's push_notification plugin (herald's Lua script,
//! `dist/dovecot/herald-push.lua`) wake the mailbox they name, so its session fetches at once
//! instead of waiting for Dovecot's IDLE notice, which Dovecot holds for 500 ms.
//!
//! A hint is `POST /push` on `[server] listen` with `{"user", "mailbox", ...}` (see
//! `crate::serve`). What this module guarantees:
//! - a hint is only ever a reason to look: nothing in its body is believed or stored. The
//!   session fetches over IMAP as always, from its own cursor; the uid and uidvalidity the
//!   script sends are not even read. A forged hint costs at most one empty fetch;
//! - a hint naming no watched mailbox (`user` is an account's `username`, `mailbox` one of its
//!   folders; `INBOX` in any case) is counted (`herald_pushes_total{outcome="unknown"}`) and
//!   ignored; so is one whose body is not the script's JSON (`malformed`);
//! - with `[server] push_token` set, a hint without that token in `X-Herald-Token` is
//!   refused (`refused`); the comparison takes the same time wherever the tokens differ;
//! - hints coalesce: any number arriving while a mailbox fetches leave one pending wake
//!   ([`PushWake`]), and the session waits at least [`MIN_FETCH_GAP`] between push-started
//!   fetches, so a flood cannot make it fetch more than 50 times a second;
//! - waking is a flag and a [`Notify`]: the HTTP answer never waits for the mailbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use herald_bridges::Secret;
use subtle::ConstantTimeEq as _;
use tokio::sync::Notify;

use crate::metrics::{Metrics, PushOutcome};

/// The header the script sends `herald_push_token` in.
pub const TOKEN_HEADER: &str = "x-herald-token";

/// The largest hint body read. The script's are under 200 bytes plus the names.
pub const MAX_BODY: usize = 4096;

/// Least time between two fetches a push started in one mailbox: at most 50 a second.
pub const MIN_FETCH_GAP: Duration = Duration::from_millis(20);

/// One mailbox's pending push: set by hints, taken by its session.
#[derive(Debug, Default)]
pub struct PushWake {
    /// A hint arrived that the session has not yet acted on.
    pending: AtomicBool,
    /// Wakes a session waiting in [`PushWake::wait`].
    notify: Notify,
}

impl PushWake {
    /// Marks a push pending and wakes the session if it waits.
    pub fn wake(&self) {
        self.pending.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Takes the pending push, if any: `true` once per burst of hints.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::SeqCst)
    }

    /// Resolves once a push is pending, and takes it.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is looked at, so a wake in between is not lost.
            notified.as_mut().enable();
            if self.take() {
                return;
            }
            notified.await;
        }
    }
}

/// Where hints go: the watched mailboxes by `(username, folder)`, and the token they need.
/// One lives as long as the `/push` endpoint; a reload replaces what is in it
/// ([`Pushes::reset`], then [`Pushes::register`] for each new mailbox).
#[derive(Debug)]
pub struct Pushes {
    /// The current configuration's mailboxes and token. Held only for map operations, never
    /// across an await.
    routes: RwLock<Routes>,
    metrics: Arc<Metrics>,
}

/// What [`Pushes`] routes by.
#[derive(Debug, Default)]
struct Routes {
    /// Keyed by username and folder (`INBOX` uppercased); several accounts may share a name.
    targets: HashMap<(String, String), Vec<Arc<PushWake>>>,
    /// `[server] push_token`.
    token: Option<Secret>,
}

/// The part of the script's body herald reads. The rest (uidvalidity, uid) is not used.
#[derive(serde::Deserialize)]
struct Hint {
    user: String,
    mailbox: String,
}

impl Pushes {
    /// No mailboxes yet; hints need `token` when it is set.
    pub fn new(token: Option<Secret>, metrics: Arc<Metrics>) -> Pushes {
        Pushes {
            routes: RwLock::new(Routes {
                targets: HashMap::new(),
                token,
            }),
            metrics,
        }
    }

    /// Forgets every mailbox and takes `token` from now on: a reloaded configuration.
    pub fn reset(&self, token: Option<Secret>) {
        *self.write() = Routes {
            targets: HashMap::new(),
            token,
        };
    }

    /// Hints for `username`'s `folder` wake `wake`.
    pub fn register(&self, username: &str, folder: &str, wake: Arc<PushWake>) {
        self.write()
            .targets
            .entry((username.to_owned(), folder_key(folder).to_owned()))
            .or_default()
            .push(wake);
    }

    // A panic while the lock was held cannot leave the map half-changed in a way that
    // matters (a hint is only a hint), so a poisoned lock is used as it is.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        self.routes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Routes> {
        self.routes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Acts on one hint: `token` is the `X-Herald-Token` header's value, `body` the request
    /// body (at most [`MAX_BODY`] bytes; `None` when it was longer or did not arrive).
    pub fn hint(&self, token: Option<&[u8]>, body: Option<&[u8]>) -> PushOutcome {
        let outcome = self.judge(token, body);
        self.metrics.push(outcome);
        outcome
    }

    fn judge(&self, token: Option<&[u8]>, body: Option<&[u8]>) -> PushOutcome {
        let routes = self.read();
        if let Some(expected) = &routes.token {
            let given = token.unwrap_or_default();
            if !bool::from(given.ct_eq(expected.expose().as_bytes())) {
                return PushOutcome::Refused;
            }
        }
        let Some(hint) = body.and_then(|body| serde_json::from_slice::<Hint>(body).ok()) else {
            return PushOutcome::Malformed;
        };
        match routes
            .targets
            .get(&(hint.user, folder_key(&hint.mailbox).to_owned()))
        {
            Some(wakes) => {
                for wake in wakes {
                    wake.wake();
                }
                PushOutcome::Woke
            }
            None => PushOutcome::Unknown,
        }
    }
}

/// `folder` as a key: `INBOX` is case-insensitive (RFC 3501 §5.1), other names are not.
fn folder_key(folder: &str) -> &str {
    if folder.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        folder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushes(token: Option<&str>) -> (Pushes, Arc<PushWake>) {
        let pushes = Pushes::new(token.map(Secret::new), Metrics::new());
        let wake = Arc::new(PushWake::default());
        pushes.register("alerts", "INBOX", wake.clone());
        (pushes, wake)
    }

    #[test]
    fn a_hint_for_a_watched_mailbox_wakes_it_once_per_burst() {
        let (pushes, wake) = pushes(None);
        for mailbox in ["INBOX", "inbox"] {
            let body =
                format!(r#"{{"user":"alerts","mailbox":"{mailbox}","uid":3,"uidvalidity":1}}"#);
            assert_eq!(pushes.hint(None, Some(body.as_bytes())), PushOutcome::Woke);
        }
        assert!(wake.take());
        assert!(!wake.take(), "two hints, one pending wake");
    }

    #[test]
    fn unknown_and_malformed_hints_wake_nothing() {
        let (pushes, wake) = pushes(None);
        let cases: [(&[u8], PushOutcome); 5] = [
            (
                br#"{"user":"other","mailbox":"INBOX"}"#,
                PushOutcome::Unknown,
            ),
            (
                br#"{"user":"alerts","mailbox":"Junk"}"#,
                PushOutcome::Unknown,
            ),
            (br#"{"user":"alerts"}"#, PushOutcome::Malformed),
            (b"\xff\xfe not json", PushOutcome::Malformed),
            (br#"{"user":7,"mailbox":"INBOX"}"#, PushOutcome::Malformed),
        ];
        for (body, outcome) in cases {
            assert_eq!(pushes.hint(None, Some(body)), outcome);
        }
        assert_eq!(pushes.hint(None, None), PushOutcome::Malformed);
        assert!(!wake.take());
    }

    #[test]
    fn with_a_token_only_the_right_one_is_heard() {
        let (pushes, wake) = pushes(Some("s3cret"));
        let body: &[u8] = br#"{"user":"alerts","mailbox":"INBOX"}"#;
        for token in [None, Some(&b""[..]), Some(b"s3cre"), Some(b"s3cret!")] {
            assert_eq!(pushes.hint(token, Some(body)), PushOutcome::Refused);
        }
        assert!(!wake.take());
        assert_eq!(pushes.hint(Some(b"s3cret"), Some(body)), PushOutcome::Woke);
        assert!(wake.take());
    }

    #[tokio::test]
    async fn wait_sees_a_wake_from_before_and_during_it() {
        let wake = Arc::new(PushWake::default());
        wake.wake();
        wake.wait().await;
        let waiting = tokio::spawn({
            let wake = wake.clone();
            async move { wake.wait().await }
        });
        tokio::task::yield_now().await;
        wake.wake();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined");
        assert!(!wake.take());
    }
}
