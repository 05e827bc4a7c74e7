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

use std::sync::OnceLock;

/// The crash point chosen for this process, if any.
fn chosen() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT
        .get_or_init(|| {
            std::env::var("HERALD_CRASH_POINT")
                .ok()
                .filter(|p| !p.is_empty())
        })
        .as_deref()
}

/// Aborts the process if `point` is the chosen crash point.
pub fn hit(point: &str) {
    if chosen() == Some(point) {
        eprintln!("herald: crash point {point} reached, aborting");
        std::process::abort();
    }
}
