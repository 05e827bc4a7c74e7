//! Silences as the store keeps them: made and expired by `herald silence`, read by dispatch.

use async_trait::async_trait;

use super::Result;

/// One silence as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    /// Its id (what `silence expire` takes).
    pub id: i64,
    /// Its matchers as the operator wrote them (`host=web*`, `subject~(?i)disk`).
    pub matchers: Vec<String>,
    /// When it starts to hold (ms).
    pub starts_at: i64,
    /// When it stops (ms); expiring a silence sets this to the time of expiry.
    pub ends_at: i64,
    /// Why it was made.
    pub comment: String,
    /// When it was made (ms).
    pub created_at: i64,
    /// How many alerts it has suppressed.
    pub suppressed: u64,
}

/// What `herald silence` and dispatch need of silences.
#[async_trait]
pub trait SilenceStore: Send + Sync {
    /// Stores a new silence (its `id` and `suppressed` are ignored); returns its id.
    async fn add_silence(&self, silence: Silence) -> Result<i64>;
    /// Every silence, newest first (by id); with `active_at`, only those holding then:
    /// `starts_at <= active_at < ends_at`.
    async fn silences(&self, active_at: Option<i64>) -> Result<Vec<Silence>>;
    /// Ends a silence at `now` (its `ends_at` becomes `now`; the row and its count stay);
    /// false if there is no such silence or it had already ended by `now`.
    async fn expire_silence(&self, id: i64, now: i64) -> Result<bool>;
}
