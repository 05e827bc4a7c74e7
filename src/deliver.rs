//! Delivery: one worker per sink drains that sink's outbox rows.
//!
//! Workers are independent, so one sink's outage never delays another. A worker reads due
//! rows in batches, makes one attempt per row, and records the outcome: `sent` only after the
//! sink confirmed, `dead` when the sink rejected the alert for good, otherwise the row stays
//! `pending` and is tried again after [`RETRY_PAUSE`] or the receiver's `Retry-After`. After a
//! failed attempt the worker pauses instead of hammering a sink that is down.
//!
//! Rows confirmed within a batch are recorded together at its end (one fsync per batch, not
//! per alert); a crash in between repeats at most that batch's confirmed deliveries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use herald_bridges::{Outcome, Sink};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::store::{now_ms, Store};

/// How long a failed delivery waits before its next attempt (when the receiver gave no
/// `Retry-After`): long enough not to hammer a sink that is down, short enough that a brief
/// outage delays an alert by seconds.
pub const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Rows read per batch.
const BATCH: usize = 32;

/// How long an idle worker sleeps when no row is scheduled: it is woken by [`Wakers`] anyway.
const IDLE_RECHECK: Duration = Duration::from_secs(3600);

/// One wake-up signal per sink, so the mailbox can tell a worker that rows were committed.
#[derive(Debug, Clone, Default)]
pub struct Wakers(Arc<HashMap<String, Arc<Notify>>>);

impl Wakers {
    /// One signal for each named sink.
    pub fn new<'a>(sinks: impl IntoIterator<Item = &'a String>) -> Wakers {
        Wakers(Arc::new(
            sinks
                .into_iter()
                .map(|name| (name.clone(), Arc::new(Notify::new())))
                .collect(),
        ))
    }

    /// Wakes the workers of `sinks`. A worker that is busy keeps the wake-up for later.
    pub fn wake(&self, sinks: &[String]) {
        for sink in sinks {
            if let Some(notify) = self.0.get(sink) {
                notify.notify_one();
            }
        }
    }

    fn get(&self, sink: &str) -> Arc<Notify> {
        self.0.get(sink).cloned().unwrap_or_default()
    }
}

/// Delivers one sink's rows.
pub struct Worker {
    name: String,
    sink: Box<dyn Sink>,
    store: Arc<Store>,
    wake: Arc<Notify>,
}

impl Worker {
    /// A worker for sink `name`.
    pub fn new(name: String, sink: Box<dyn Sink>, store: Arc<Store>, wakers: &Wakers) -> Worker {
        let wake = wakers.get(&name);
        Worker {
            name,
            sink,
            store,
            wake,
        }
    }

    /// Runs until `stop`; an attempt under way when `stop` comes is finished first (the
    /// caller bounds that with its shutdown deadline). Fails only if the store fails.
    pub async fn run(self, stop: CancellationToken) -> Result<()> {
        while !stop.is_cancelled() {
            let due = self.store.due(&self.name, now_ms(), BATCH)?;
            if due.is_empty() {
                let wait = match self.store.next_due(&self.name)? {
                    Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
                    None => IDLE_RECHECK,
                };
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
            let mut sent = Vec::with_capacity(due.len());
            let mut pause = None;
            for row in due {
                match self.sink.deliver(&row.alert).await {
                    Outcome::Delivered => {
                        info!(sink = %self.name, id = row.id, title = %row.alert.title, "Alert delivered.");
                        sent.push(row.id);
                    }
                    Outcome::Retry { after, reason } => {
                        let delay = after.unwrap_or(RETRY_PAUSE);
                        warn!(sink = %self.name, id = row.id, attempt = row.attempts + 1, error = %reason, retry_in = ?delay, "Delivery failed, will retry.");
                        let at = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                        self.store.mark_retry(row.id, at, &reason)?;
                        pause = Some(delay);
                        break;
                    }
                    Outcome::Rejected { reason } => {
                        error!(sink = %self.name, id = row.id, error = %reason, title = %row.alert.title, "Delivery rejected for good; alert dead-lettered.");
                        self.store.mark_dead(row.id, &reason)?;
                    }
                }
                if stop.is_cancelled() {
                    break;
                }
            }
            self.store.mark_sent(&sent)?;
            if let Some(delay) = pause {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
        Ok(())
    }
}
