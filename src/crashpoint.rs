//! Crash points: named places in the pipeline where a test can make herald abort, to prove
//! that a crash at that exact moment loses nothing (reliability.md G1).
//!
//! `HERALD_CRASH_POINT=NAME` makes the process abort (no unwinding, no destructors, like
//! `kill -9`) the first time it reaches point NAME. Unset, a point costs one load of a
//! once-initialised value. The points: `after-fetch` (a message fetched, nothing stored),
//! `after-commit` (alerts committed by ingest, nothing dispatched or marked on the server),
//! `after-dispatch` (outbox rows committed, no worker woken), `after-timers` (a digest or
//! reminder committed by dispatch's timers, not yet delivered), `before-flag` (about to
//! mark messages processed), `after-send-before-mark` (a sink confirmed, the row not yet
//! marked sent).
//!
//! `HERALD_WEDGE_POINT=NAME` instead makes the thread that reaches point NAME hang forever,
//! holding whatever it holds, to prove that a wedged herald is noticed (the systemd watchdog
//! stops being fed). The point: `store-commit` (inside ingest's store transaction, with the
//! store's connection held: every later store call waits behind it).

use std::sync::OnceLock;

/// The point named by the environment variable `var` for this process, if any.
fn named(var: &'static str, cell: &'static OnceLock<Option<String>>) -> Option<&'static str> {
    cell.get_or_init(|| std::env::var(var).ok().filter(|p| !p.is_empty()))
        .as_deref()
}

/// The crash point chosen for this process, if any.
fn chosen() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    named("HERALD_CRASH_POINT", &POINT)
}

/// Hangs the calling thread for good if `point` is the chosen wedge point.
pub fn wedge(point: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    if named("HERALD_WEDGE_POINT", &POINT) == Some(point) {
        eprintln!("herald: wedge point {point} reached, hanging");
        loop {
            std::thread::park();
        }
    }
}

/// Aborts the process if `point` is the chosen crash point.
pub fn hit(point: &str) {
    if chosen() == Some(point) {
        eprintln!("herald: crash point {point} reached, aborting");
        std::process::abort();
    }
}
