//! Expectations as the store keeps them: their clocks, advanced by ingest's sightings and by
//! the watcher's raises, each in the transaction that stores the alert it makes.

use async_trait::async_trait;

use super::{Result, Routed};

/// One expectation's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The expectation's name.
    pub name: String,
    /// The timing its `expected_at` was computed for (`every 1day`, `schedule 30 3 * * *`).
    pub timing: String,
    /// When herald first ran with it (ms).
    pub started_at: i64,
    /// When its mail last came (ms).
    pub last_seen: Option<i64>,
    /// When its mail is expected next (ms); missing after that plus the grace.
    pub expected_at: i64,
    /// Since when it is missing (ms): set by a raise, cleared by a sighting.
    pub missing_since: Option<i64>,
}

/// A mail an expectation waited for, committed with the mail.
#[derive(Debug, Clone)]
pub struct Sighting {
    /// The expectation's name.
    pub name: String,
    /// Its timing, as [`Expected::timing`].
    pub timing: String,
    /// When its mail is expected next, counted from this one (ms).
    pub next: i64,
    /// The alert that resolves its `missing` problem, stored only if it is missing.
    pub recovery: Option<Routed>,
}

/// What the expectation watcher and `herald expect` need.
#[async_trait]
pub trait ExpectStore: Send + Sync {
    /// Every expectation's state.
    async fn expected(&self) -> Result<Vec<Expected>>;
    /// Stores these states as they are (new expectations, or ones whose timing changed).
    async fn track(&self, rows: Vec<Expected>) -> Result<()>;
    /// A missed deadline of `name`, expected at `expected_at`: in one transaction, marks it
    /// missing (since `now`, unless it already is), moves its expected time to `next`, and
    /// stores `alert` (undispatched) if given. False, changing nothing, if its expected time
    /// is no longer `expected_at` (a sighting came first).
    async fn raise(
        &self,
        name: &str,
        expected_at: i64,
        next: i64,
        now: i64,
        alert: Option<Routed>,
    ) -> Result<bool>;
}
