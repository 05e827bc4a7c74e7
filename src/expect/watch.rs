//! The expectation watcher: one task that raises `missing` alerts when deadlines pass.
//!
//! It reads the expectations' state from the store (ingest moves it on with each sighting),
//! sleeps until the earliest deadline, and for each one passed commits, in one transaction,
//! the `missing` alert (routed by the rules, the expectation's `sinks` by default) and the
//! expectation's next expected time: the first one after now, so that a long outage raises one
//! alert, not one per missed period. Then it wakes dispatch. A sighting only moves a
//! deadline later, so waking at the earliest known one is never too late; the raise checks
//! that no sighting came in between.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Expectation, Timing};
use crate::dispatch::Clock;
use crate::route::Router;
use crate::store::{Expected, Routed, Store};

/// How often the watcher looks again when no deadline is near: a backstop for a sighting
/// that would make a later deadline the earliest (it can only make deadlines later).
const RECHECK: Duration = Duration::from_secs(300);

/// The watcher.
pub struct Watcher {
    store: Arc<dyn Store>,
    router: Router,
    wake: Arc<Notify>,
    clock: Clock,
}

/// The first expected time of `timing` after `now`, continuing from `expected_at`.
fn next_after(timing: &Timing, expected_at: i64, now: i64) -> i64 {
    match timing {
        Timing::Every(every) => {
            let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
            let behind = now.saturating_sub(expected_at).max(0);
            expected_at.saturating_add((behind / every + 1).saturating_mul(every))
        }
        Timing::Schedule { .. } => timing.next(now.max(expected_at)),
    }
}

impl Watcher {
    /// Watches the expectations `router` knows; raised alerts are routed by it and wake
    /// `wake` (dispatch); `clock` tells the time.
    pub fn new(store: Arc<dyn Store>, router: Router, wake: Arc<Notify>, clock: Clock) -> Watcher {
        Watcher {
            store,
            router,
            wake,
            clock,
        }
    }

    /// Starts the clock of expectations that have none (new ones, or ones whose timing
    /// changed: from their last sighting).
    async fn track(&self) -> Result<()> {
        let now = self.clock.now();
        let stored = self
            .store
            .expected()
            .await
            .context("cannot read expectations")?;
        let mut rows = Vec::new();
        for e in self.router.expectations() {
            let timing = e.timing.describe();
            match stored.iter().find(|s| s.name == e.name) {
                Some(s) if s.timing == timing => {}
                Some(s) => rows.push(Expected {
                    timing,
                    expected_at: e.timing.next(s.last_seen.unwrap_or(now)),
                    ..s.clone()
                }),
                None => rows.push(Expected {
                    name: e.name.clone(),
                    timing,
                    started_at: now,
                    last_seen: None,
                    expected_at: e.timing.next(now),
                    missing_since: None,
                }),
            }
        }
        if !rows.is_empty() {
            self.store
                .track(rows)
                .await
                .context("cannot store expectations")?;
        }
        Ok(())
    }

    /// Raises every expectation whose deadline has passed; returns the earliest deadline
    /// still to come.
    pub async fn check(&self) -> Result<Option<i64>> {
        let now = self.clock.now();
        let stored = self
            .store
            .expected()
            .await
            .context("cannot read expectations")?;
        let mut earliest: Option<i64> = None;
        for e in self.router.expectations() {
            let Some(state) = stored.iter().find(|s| s.name == e.name) else {
                continue;
            };
            let deadline = e.deadline(state.expected_at);
            if deadline > now {
                earliest = Some(earliest.map_or(deadline, |t| t.min(deadline)));
                continue;
            }
            let next = next_after(&e.timing, state.expected_at, now);
            let routed = self.routed(e, state, now);
            let raised = self
                .store
                .raise(&e.name, state.expected_at, next, now, routed)
                .await
                .context("cannot raise a missing alert")?;
            if raised {
                warn!(expectation = %e.name, "Expected mail did not come; raising a missing alert.");
                self.wake.notify_one();
            }
            let deadline = e.deadline(next);
            earliest = Some(earliest.map_or(deadline, |t| t.min(deadline)));
        }
        Ok(earliest)
    }

    /// The `missing` alert for `e`, routed; `None` when a rule drops it or nothing takes it.
    fn routed(&self, e: &Expectation, state: &Expected, now: i64) -> Option<Routed> {
        let alert = e.missing(state.expected_at, state.last_seen, state.started_at);
        let at = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
        let decision = self.router.route_own(alert, &e.sinks, at);
        if decision.dropped || decision.sinks.is_empty() {
            info!(expectation = %e.name, "A missing alert was dropped by a rule or routed nowhere.");
            return None;
        }
        Some(Routed {
            alert: decision.alert,
            sinks: decision.sinks,
        })
    }

    /// Runs until `stop`. Fails only if the store fails.
    pub async fn run(self, stop: CancellationToken) -> Result<()> {
        if self.router.expectations().is_empty() {
            // Nothing to watch; a stage that ends early would stop the daemon.
            stop.cancelled().await;
            return Ok(());
        }
        self.track().await?;
        while !stop.is_cancelled() {
            let earliest = self.check().await?;
            let recheck = tokio::time::Instant::now() + RECHECK;
            let until = earliest.map_or(recheck, |at| self.clock.instant(at).min(recheck));
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = stop.cancelled() => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use herald_bridges::Kind;
    use tokio::time::advance;

    use super::*;
    use crate::config::Config;
    use crate::store::testing::store;
    use crate::store::{Batch, MailboxId, Sighting};

    /// A watcher of one expectation, due 10 s after its last mail, with 5 s of grace.
    fn watcher(store: &Arc<dyn Store>, clock: Clock) -> Watcher {
        let timing = "every = \"10s\"\ngrace = \"5s\"";
        let text = format!(
            "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
             [sinks.pd]\ntype = \"console\"\n\
             [[expect]]\nname = \"backup\"\nmatch = {{ kind = \"cron\" }}\n{timing}\nsinks = [\"pd\"]\n"
        );
        let config = Config::parse(Path::new("t.toml"), &text, &|_| None).unwrap();
        let router = Router::new(config.rules, config.default_sinks).expecting(config.expectations);
        Watcher::new(store.clone(), router, Arc::new(Notify::new()), clock)
    }

    /// The alerts the watcher (or a sighting) stored for dispatch.
    async fn raised(store: &Arc<dyn Store>) -> Vec<herald_bridges::Alert> {
        store
            .undispatched(100)
            .await
            .unwrap()
            .into_iter()
            .map(|u| {
                assert_eq!(u.routed.sinks, ["pd"]);
                u.routed.alert
            })
            .collect()
    }

    /// A mail of the expectation, as ingest commits it.
    async fn sighting(store: &Arc<dyn Store>, w: &Watcher) {
        let e = &w.router.expectations()[0];
        let now = w.clock.now();
        let batch = Batch {
            mailbox: MailboxId::new("default", "INBOX"),
            uidvalidity: 1,
            messages: Vec::new(),
            cursor: 0,
            mark: false,
            sightings: vec![Sighting {
                name: e.name.clone(),
                timing: e.timing.describe(),
                next: e.timing.next(now),
                recovery: Some(Routed {
                    alert: e.returned(now),
                    sinks: vec!["pd".into()],
                }),
            }],
        };
        store.commit(batch).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_expectation_raises_once_per_period_and_its_mail_resolves_it() {
        let (_dir, store) = store().await;
        // One clock for the test, as restarts share the wall clock.
        let clock = Clock::start();
        let w = watcher(&store, clock);
        w.track().await.unwrap();
        advance(Duration::from_secs(14)).await;
        w.check().await.unwrap();
        assert!(raised(&store).await.is_empty(), "within every + grace");
        advance(Duration::from_secs(2)).await;
        w.check().await.unwrap();
        w.check().await.unwrap();
        let alerts = raised(&store).await;
        assert_eq!(alerts.len(), 1, "raised once");
        assert_eq!(alerts[0].kind, Kind::Missing);
        assert_eq!(alerts[0].dedup_key, "missing:backup");
        assert!(alerts[0].title.contains("never seen since"));
        // The next period passes in silence too: raised again (dispatch folds the repeat).
        advance(Duration::from_secs(10)).await;
        w.check().await.unwrap();
        assert_eq!(raised(&store).await.len(), 2);

        sighting(&store, &w).await;
        let alerts = raised(&store).await;
        assert_eq!(alerts.len(), 3);
        assert_eq!(alerts[2].failed, Some(false), "the return resolves it");
        assert_eq!(alerts[2].dedup_key, "missing:backup");
        let state = store.expected().await.unwrap();
        assert_eq!(state[0].missing_since, None);
        assert!(state[0].last_seen.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn mail_in_the_grace_period_keeps_it_quiet() {
        let (_dir, store) = store().await;
        // One clock for the test, as restarts share the wall clock.
        let clock = Clock::start();
        let w = watcher(&store, clock);
        w.track().await.unwrap();
        advance(Duration::from_secs(12)).await;
        sighting(&store, &w).await;
        advance(Duration::from_secs(12)).await;
        w.check().await.unwrap();
        assert!(
            raised(&store).await.is_empty(),
            "the mail came within the grace"
        );
        advance(Duration::from_secs(4)).await;
        w.check().await.unwrap();
        assert_eq!(raised(&store).await.len(), 1, "15 s after the mail");
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_keep_the_clock_and_a_deadline_passed_while_down_fires_once_at_start() {
        let (_dir, store) = store().await;
        // One clock for the test, as restarts share the wall clock.
        let clock = Clock::start();
        let first = watcher(&store, clock);
        first.track().await.unwrap();
        advance(Duration::from_secs(8)).await;
        // A restart before the deadline: the clock is kept, not started again.
        let second = watcher(&store, clock);
        second.track().await.unwrap();
        advance(Duration::from_secs(8)).await;
        second.check().await.unwrap();
        assert_eq!(
            raised(&store).await.len(),
            1,
            "due 15 s after the first start"
        );
        // Down for an hour: one alert at start, not one per missed period.
        advance(Duration::from_secs(3600)).await;
        let third = watcher(&store, clock);
        third.track().await.unwrap();
        third.check().await.unwrap();
        third.check().await.unwrap();
        assert_eq!(raised(&store).await.len(), 2);
        let state = store.expected().await.unwrap();
        assert!(
            state[0].expected_at > third.clock.now(),
            "the next one is ahead"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_run_loop_raises_in_time() {
        let (_dir, store) = store().await;
        // One clock for the test, as restarts share the wall clock.
        let clock = Clock::start();
        let w = watcher(&store, clock);
        let stop = CancellationToken::new();
        let running = tokio::spawn(w.run(stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(16);
        loop {
            if !raised(&store).await.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not raised by its deadline"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stop.cancel();
        running.await.unwrap().unwrap();
    }
}
