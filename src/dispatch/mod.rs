//! Dispatch: the one stateful stage between routing and delivery, and the only place that
//! creates outbox rows.
//!
//! It reads the alerts that ingest (or a dead letter's notice) committed as undispatched,
//! decides for each which destinations hear about it now, writes those outbox rows and marks
//! the alert dispatched, all in one transaction, then wakes the sinks' workers. Today the
//! decision is the plain fan-out: every target of every routed sink. Grouping, folding of
//! repeats and silences decide here too, with their state committed in the same transaction
//! as the rows they create, so a crash neither loses a notification nor sends one twice: an
//! alert is either still undispatched (and is decided again after a restart) or dispatched
//! with its rows.
//!
//! A sink that routing named but the configuration no longer has (an alert queued before a
//! sink was removed) gets no row, with a warning: there is nothing to deliver it with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::store::{Destination, Dispatch, DispatchStore};

/// Alerts decided per transaction: one commit for a burst, and a bound on the alerts held
/// in memory (half an ingest chunk: a drain keeps dispatch and delivery going in step).
const BATCH: usize = 64;

/// How often dispatch looks for work when not woken. Every writer wakes it, so this only
/// matters after a wake-up was missed: a backstop, not a schedule.
const RECHECK: Duration = Duration::from_secs(5);

/// What dispatch needs to know of the sinks: each sink's targets, to write one outbox row
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

    /// Every destination of the named sinks, in order; sinks that do not exist are skipped.
    fn destinations(&self, sinks: &[String]) -> (Vec<Destination>, Vec<String>) {
        let mut missing = Vec::new();
        let mut destinations = Vec::new();
        for sink in sinks {
            match self.0.get(sink) {
                Some(outlet) => {
                    destinations.extend(outlet.targets.iter().map(|target| Destination {
                        sink: sink.clone(),
                        target: target.clone(),
                    }))
                }
                None => missing.push(sink.clone()),
            }
        }
        (destinations, missing)
    }

    /// The signal that wakes `sink`'s worker.
    pub fn signal(&self, sink: &str) -> Arc<Notify> {
        self.0.get(sink).map(|o| o.wake.clone()).unwrap_or_default()
    }
}

/// The dispatch stage.
pub struct Dispatcher {
    store: Arc<dyn DispatchStore>,
    fanout: Fanout,
    wake: Arc<Notify>,
}

impl Dispatcher {
    /// Dispatches from `store` to the sinks of `fanout`; `wake` is what writers of
    /// undispatched alerts notify.
    pub fn new(store: Arc<dyn DispatchStore>, fanout: Fanout, wake: Arc<Notify>) -> Dispatcher {
        Dispatcher {
            store,
            fanout,
            wake,
        }
    }

    /// Runs until `stop`. Fails only if the store fails.
    pub async fn run(self, stop: CancellationToken) -> Result<()> {
        while !stop.is_cancelled() {
            if self.dispatch_waiting().await? == 0 {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(RECHECK) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
        Ok(())
    }

    /// Dispatches one batch of waiting alerts; returns how many.
    pub async fn dispatch_waiting(&self) -> Result<usize> {
        let waiting = self
            .store
            .undispatched(BATCH)
            .await
            .context("cannot read undispatched alerts")?;
        if waiting.is_empty() {
            return Ok(0);
        }
        let mut woken: Vec<String> = Vec::new();
        let decisions: Vec<Dispatch> = waiting
            .iter()
            .map(|alert| {
                let (destinations, missing) = self.fanout.destinations(&alert.routed.sinks);
                if !missing.is_empty() {
                    warn!(id = alert.id, title = %alert.routed.alert.title, sinks = %missing.join(","), "Alert routed to sinks that are no longer configured; not delivered there.");
                }
                for d in &destinations {
                    if !woken.contains(&d.sink) {
                        woken.push(d.sink.clone());
                    }
                }
                debug!(id = alert.id, rows = destinations.len(), "Alert dispatched.");
                Dispatch {
                    alert_id: alert.id,
                    severity: alert.routed.alert.severity,
                    destinations,
                }
            })
            .collect();
        self.store
            .dispatch(decisions)
            .await
            .context("cannot commit dispatched alerts")?;
        crate::crashpoint::hit("after-dispatch");
        for sink in &woken {
            self.fanout.signal(sink).notify_one();
        }
        Ok(waiting.len())
    }
}
