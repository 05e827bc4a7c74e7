//! Delivery: one worker per sink drains that sink's outbox rows.
//!
//! The outbox has one row per (alert, sink, target): a sink with several targets (Twilio's
//! recipients) gets independent rows, so one bad number never blocks or re-sends the others.
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

use crate::store::{now_ms, Destination, Store};

/// How long a failed delivery waits before its next attempt (when the receiver gave no
/// `Retry-After`): long enough not to hammer a sink that is down, short enough that a brief
/// outage delays an alert by seconds.
pub const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Rows read per batch.
const BATCH: usize = 32;

/// How long an idle worker sleeps when no row is scheduled: it is woken by [`Wakers`] anyway.
const IDLE_RECHECK: Duration = Duration::from_secs(3600);

/// What the mailbox needs to know of the sinks: each sink's targets, to write one outbox row
/// per destination, and a wake-up signal per sink, to tell its worker that rows were committed.
#[derive(Debug, Clone, Default)]
pub struct Fanout(Arc<HashMap<String, Outlet>>);

#[derive(Debug, Default)]
struct Outlet {
    targets: Vec<String>,
    wake: Arc<Notify>,
}

impl Fanout {
    /// From each sink's name and targets.
    pub fn new(sinks: impl IntoIterator<Item = (String, Vec<String>)>) -> Fanout {
        Fanout(Arc::new(
            sinks
                .into_iter()
                .map(|(name, targets)| {
                    let outlet = Outlet {
                        targets,
                        wake: Arc::default(),
                    };
                    (name, outlet)
                })
                .collect(),
        ))
    }

    /// Every destination of the named sinks, in order.
    pub fn destinations(&self, sinks: &[String]) -> Vec<Destination> {
        sinks
            .iter()
            .filter_map(|sink| self.0.get(sink).map(|outlet| (sink, outlet)))
            .flat_map(|(sink, outlet)| {
                outlet.targets.iter().map(|target| Destination {
                    sink: sink.clone(),
                    target: target.clone(),
                })
            })
            .collect()
    }

    /// Wakes the workers of `sinks`. A worker that is busy keeps the wake-up for later.
    pub fn wake(&self, sinks: &[String]) {
        for sink in sinks {
            if let Some(outlet) = self.0.get(sink) {
                outlet.wake.notify_one();
            }
        }
    }

    fn signal(&self, sink: &str) -> Arc<Notify> {
        self.0.get(sink).map(|o| o.wake.clone()).unwrap_or_default()
    }
}

/// Delivers one sink's rows.
pub struct Worker {
    name: String,
    sink: Arc<dyn Sink>,
    store: Arc<Store>,
    wake: Arc<Notify>,
}

impl Worker {
    /// A worker for sink `name`.
    pub fn new(name: String, sink: Arc<dyn Sink>, store: Arc<Store>, fanout: &Fanout) -> Worker {
        let wake = fanout.signal(&name);
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
                match self.sink.deliver_to(&row.alert, &row.target).await {
                    Outcome::Delivered => {
                        info!(sink = %self.name, id = row.id, target = %row.target, title = %row.alert.title, "Alert delivered.");
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
