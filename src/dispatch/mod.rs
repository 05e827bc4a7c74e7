//! Dispatch: the one stateful stage between routing and delivery, and the only place that
//! creates outbox rows.
//!
//! It reads the alerts that ingest (or a dead letter's notice) committed as undispatched and
//! decides, per alert, whether its sinks hear of it now, later in a digest, or not at all:
//! repeats of a problem are folded into reminders, problems of one group go out together,
//! recoveries resolve, silences suppress (`lifecycle` has the semantics, `policy` the keys).
//! Its timers (a group's next digest, a problem's reminder, a quiet problem's end) are rows
//! in the store, so a restart keeps them: nothing re-pages after a restart, and a pending
//! digest is neither lost nor sent twice.
//!
//! Each pass reads the state it needs, decides in memory, and commits the alerts' fates, the
//! outbox rows and the new state in one transaction, then wakes the sinks' workers. A crash
//! before the commit leaves the alerts undispatched and the timers due, to be decided again;
//! after it, everything is decided once.
//!
//! Time is the tokio clock anchored to the wall clock at start ([`Clock`]), so tests run
//! the timers on tokio's paused clock.
//!
//! A sink that routing named but the configuration no longer has (an alert queued before a
//! sink was removed) gets no row, with a warning: there is nothing to deliver it with.

mod lifecycle;
pub mod policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use herald_bridges::{Alert, Sink};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::silence::Matchers;
use crate::store::{Decisions, Destination, Fate, Payload, State, Store, Undispatched};
use lifecycle::Pass;
use policy::Policies;

/// Alerts decided per transaction: one commit for a burst, and a bound on the alerts held
/// in memory (half an ingest chunk: a drain keeps dispatch and delivery going in step).
const BATCH: usize = 64;

/// How often dispatch looks for work when not woken. Every writer wakes it, so this only
/// matters after a wake-up was missed: a backstop, not a schedule.
const RECHECK: Duration = Duration::from_secs(5);

/// What dispatch needs to know of the sinks: each sink's targets, to write one outbox row
/// per destination, whether it hears of recoveries, and a wake-up signal per sink, to tell
/// its worker that rows were committed.
#[derive(Debug, Clone, Default)]
pub struct Fanout(Arc<HashMap<String, Outlet>>);

#[derive(Debug, Default)]
struct Outlet {
    targets: Vec<String>,
    recoveries: bool,
    incidents: bool,
    wake: Arc<Notify>,
}

impl Fanout {
    /// From each sink and its name.
    pub fn new<'a>(sinks: impl IntoIterator<Item = (String, &'a dyn Sink)>) -> Fanout {
        Fanout(Arc::new(
            sinks
                .into_iter()
                .map(|(name, sink)| {
                    let outlet = Outlet {
                        targets: sink.targets(),
                        recoveries: sink.notify_resolved(),
                        incidents: sink.tracks_incidents(),
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

    /// Whether `sink` hears of a problem's recovery, when other problems of its group are
    /// (`others_open`) or are not still open. A sink no longer configured is kept, so that
    /// the usual warning says it is missing.
    fn wants_recovery(&self, sink: &str, others_open: bool) -> bool {
        self.0
            .get(sink)
            .is_none_or(|o| o.recoveries && !(o.incidents && others_open))
    }

    /// The signal that wakes `sink`'s worker.
    pub fn signal(&self, sink: &str) -> Arc<Notify> {
        self.0.get(sink).map(|o| o.wake.clone()).unwrap_or_default()
    }
}

/// Milliseconds since the epoch, as the tokio clock tells them: the wall clock at start
/// plus the tokio time since, so that a paused test clock moves dispatch's timers.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: i64,
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock that reads the wall clock now.
    pub fn start() -> Clock {
        Clock {
            wall: crate::store::now_ms(),
            start: tokio::time::Instant::now(),
        }
    }

    /// Now (ms since the epoch).
    pub fn now(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.wall.saturating_add(elapsed)
    }

    /// The tokio instant of `at` (ms since the epoch).
    pub(crate) fn instant(&self, at: i64) -> tokio::time::Instant {
        let ahead = u64::try_from(at.saturating_sub(self.now())).unwrap_or(0);
        tokio::time::Instant::now() + Duration::from_millis(ahead)
    }
}

/// The silences' matchers, compiled once per silence: the list is read again on every
/// pass (a new or expired silence applies to the next alert dispatched), its regexes are not.
#[derive(Default)]
struct Silences(HashMap<i64, Matchers>);

/// The dispatch stage.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    fanout: Fanout,
    policies: Policies,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    clock: Clock,
    silences: tokio::sync::Mutex<Silences>,
}

impl Dispatcher {
    /// Dispatches from `store` to the sinks of `fanout` under `policies`; `wake` is what
    /// writers of undispatched alerts notify; `clock` tells the time (the daemon's one clock).
    pub fn new(
        store: Arc<dyn Store>,
        fanout: Fanout,
        policies: Policies,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Dispatcher {
        Dispatcher {
            store,
            fanout,
            policies,
            wake,
            metrics,
            clock,
            silences: Default::default(),
        }
    }

    /// Runs until `stop`. Fails only if the store fails.
    pub async fn run(self, stop: CancellationToken) -> Result<()> {
        while !stop.is_cancelled() {
            let timers = self.run_timers().await?;
            if self.dispatch_waiting().await? == 0 && timers == 0 {
                let next = self
                    .store
                    .next_timer()
                    .await
                    .context("cannot read dispatch timers")?;
                let recheck = tokio::time::Instant::now() + RECHECK;
                let until = next.map_or(recheck, |at| self.clock.instant(at).min(recheck));
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep_until(until) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
        Ok(())
    }

    /// The silences that match each alert: read afresh, so that a silence made or expired
    /// while herald runs holds from the next pass on.
    async fn silences_for(&self, alerts: &[Undispatched], now: i64) -> Result<Vec<Vec<i64>>> {
        let stored = self
            .store
            .silences(Some(now))
            .await
            .context("cannot read silences")?;
        let mut compiled = self.silences.lock().await;
        compiled
            .0
            .retain(|id, _| stored.iter().any(|s| s.id == *id));
        for s in &stored {
            if let std::collections::hash_map::Entry::Vacant(slot) = compiled.0.entry(s.id) {
                match Matchers::parse(&s.matchers) {
                    Ok(m) => {
                        slot.insert(m);
                    }
                    Err(error) => {
                        warn!(silence = s.id, %error, "A stored silence does not parse; it is ignored.");
                    }
                }
            }
        }
        Ok(alerts
            .iter()
            .map(|u| {
                let mut ids: Vec<i64> = compiled
                    .0
                    .iter()
                    .filter(|(_, m)| m.matches(&u.routed.alert))
                    .map(|(id, _)| *id)
                    .collect();
                ids.sort_unstable();
                ids
            })
            .collect())
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
        let now = self.clock.now();
        let silenced = self.silences_for(&waiting, now).await?;
        let mut keys = Vec::with_capacity(waiting.len());
        let mut groups = Vec::with_capacity(waiting.len());
        for u in &waiting {
            let alert = &u.routed.alert;
            let policy = self.policies.of(alert.rule.as_deref());
            keys.push(alert.dedup_key.clone());
            groups.push(lifecycle::group_id(
                alert.rule.as_deref(),
                &policy.group_key(alert),
            ));
        }
        let state = self
            .store
            .state(keys, groups)
            .await
            .context("cannot read dispatch state")?;
        let alerts = self.shown_alerts(&state).await?;
        let count = waiting.len();
        let mut pass = Pass::new(&self.policies, &self.fanout, state, alerts, now);
        for (u, silences) in waiting.into_iter().zip(silenced) {
            debug!(id = u.id, "Dispatching alert.");
            pass.alert(u.id, u.routed, silences);
        }
        self.commit(pass.finish()).await?;
        Ok(count)
    }

    /// Runs the timers that have come; returns how many notifications they made.
    pub async fn run_timers(&self) -> Result<usize> {
        let now = self.clock.now();
        let state = self
            .store
            .due(now)
            .await
            .context("cannot read dispatch timers")?;
        if state.problems.is_empty() && state.groups.is_empty() {
            return Ok(0);
        }
        let alerts = self.shown_alerts(&state).await?;
        let mut pass = Pass::new(&self.policies, &self.fanout, state, alerts, now);
        pass.timers();
        let decisions = pass.finish();
        let made = decisions.notifications.len();
        self.commit(decisions).await?;
        if made > 0 {
            crate::crashpoint::hit("after-timers");
        }
        Ok(made)
    }

    /// The stored alerts a notification of `state` may show: those of pending and folded
    /// problems.
    async fn shown_alerts(&self, state: &State) -> Result<HashMap<i64, Alert>> {
        let ids: Vec<i64> = state
            .problems
            .iter()
            .filter(|p| p.pending || p.folded > 0)
            .map(|p| p.alert_id)
            .collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .store
            .alerts(ids)
            .await
            .context("cannot read the alerts of pending problems")?
            .into_iter()
            .collect())
    }

    /// Commits a pass, counts it, and wakes the sinks it gave rows to.
    async fn commit(&self, decisions: Decisions) -> Result<()> {
        let mut woken: Vec<String> = Vec::new();
        for d in decisions.notifications.iter().flat_map(|n| &n.destinations) {
            if !woken.contains(&d.sink) {
                woken.push(d.sink.clone());
            }
        }
        let fates: Vec<Fate> = decisions.decided.iter().map(|(_, f)| f.clone()).collect();
        let digests = decisions
            .notifications
            .iter()
            .filter(|n| matches!(&n.payload, Payload::New(a) if !a.digest.is_empty()))
            .count();
        let committed = self
            .store
            .dispatch(decisions)
            .await
            .context("cannot commit dispatched alerts")?;
        if !committed {
            warn!("A dispatch pass found its alerts already dispatched; it changed nothing.");
            return Ok(());
        }
        crate::crashpoint::hit("after-dispatch");
        for fate in &fates {
            self.metrics.dispatched(fate);
        }
        self.metrics.digests_sent(digests as u64);
        for sink in &woken {
            self.fanout.signal(sink).notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
