//! Delivery: one worker per sink drains that sink's outbox rows.
//!
//! The outbox has one row per (alert, sink, target): a sink with several targets (Twilio's
//! recipients) gets independent rows, so one bad number never blocks or re-sends the others.
//! Workers are independent, so one sink's outage never delays another.
//!
//! A worker claims due rows in batches (`pending` → `sending`), makes one attempt per row,
//! and records the outcome, as the sink's response classifier decided:
//! - delivered: `sent`, only after the sink confirmed;
//! - retry: back to `pending`, due again after the receiver's `Retry-After` if it gave one
//!   (no request before it), else after a capped exponential backoff with full jitter
//!   (`retry_min` doubling up to `retry_max`). One failure is taken as the alert's own (a
//!   payload the receiver chokes on): the next row is tried at once, so a poisoned alert
//!   never holds up the healthy ones behind it. A `Retry-After`, or a second failure in a
//!   row, means the sink itself is down or throttling: the worker pauses (for the
//!   `Retry-After`, else a backoff that grows with the failures in a row) before trying
//!   anything else, so a sink that is down is not hammered, and the rest of the batch goes
//!   back to `pending` untouched;
//! - rejected, or still undelivered `max_age` after the alert was stored: `dead` — logged at
//!   ERROR and announced through the `[defaults] fallback` sink in the same transaction.
//!
//! Each delivery is recorded as soon as its sink answered: a confirmed one is `sent` before
//! the next is attempted, so a crash repeats at most the one delivery in flight.
//!
//! A dead letter's notice is an ordinary alert routed to the fallback sink: it is committed
//! with the dead row and handed to dispatch, which writes its rows like any other alert's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use herald_bridges::backoff::Backoff;
use herald_bridges::{Outcome, Sink};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::DeliveryPolicy;
use crate::dispatch::Fanout;
use crate::metrics::{self, Metrics};
use crate::store::{now_ms, Due, OutboxStore, Routed};

mod notice;

/// Rows claimed per batch: enough to keep a fast sink busy, few enough that a shutdown or a
/// failure returns little to `pending`.
const BATCH: usize = 32;

/// How often an idle worker looks at the outbox even when not woken: `herald outbox retry`
/// (another process) changes rows without waking it.
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// The delay before retry number `attempt + 1` under `policy`.
pub fn backoff(attempt: u32, policy: &DeliveryPolicy) -> Duration {
    Backoff::new(policy.retry_min, policy.retry_max).delay(attempt)
}

/// Milliseconds since the epoch on tokio's clock: the wall clock at the worker's start plus
/// the monotonic time since, so that tests with a paused clock see time pass.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall_ms: i64,
    start: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            wall_ms: now_ms(),
            start: Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.wall_ms.saturating_add(elapsed)
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What every sink's worker shares.
#[derive(Clone)]
pub struct Shared {
    /// The outbox.
    pub store: Arc<dyn OutboxStore>,
    /// Told when a dead letter's notice waits for dispatch.
    pub dispatch: Arc<Notify>,
    /// `[defaults] fallback`: the sink that announces dead letters.
    pub fallback: Option<String>,
    /// Where outcomes are counted.
    pub metrics: Arc<Metrics>,
}

/// Delivers one sink's rows.
pub struct Worker {
    name: String,
    sink: Arc<dyn Sink>,
    store: Arc<dyn OutboxStore>,
    policy: DeliveryPolicy,
    fallback: Option<String>,
    metrics: Arc<Metrics>,
    /// Notified when there are rows for this sink.
    wake: Arc<Notify>,
    /// Told when a dead letter's notice waits for dispatch.
    dispatch: Arc<Notify>,
    clock: Clock,
}

impl Worker {
    /// A worker for sink `name`, woken through `fanout`; dead letters are announced through
    /// `shared.fallback` (unless that is this very sink).
    pub fn new(
        name: String,
        sink: Arc<dyn Sink>,
        policy: DeliveryPolicy,
        fanout: &Fanout,
        shared: Shared,
    ) -> Worker {
        let wake = fanout.signal(&name);
        let fallback = shared.fallback.filter(|f| *f != name);
        Worker {
            name,
            sink,
            store: shared.store,
            policy,
            fallback,
            metrics: shared.metrics,
            wake,
            dispatch: shared.dispatch,
            clock: Clock::new(),
        }
    }

    /// Runs until `stop`; an attempt under way when `stop` comes is finished first (the
    /// caller bounds that with its shutdown deadline). Fails only if the store fails.
    pub async fn run(self, stop: CancellationToken) -> Result<()> {
        // Failed attempts in a row, across batches: one failure followed by a success was
        // that alert's own problem; two in a row mean the sink itself is unwell.
        let mut failures: u32 = 0;
        while !stop.is_cancelled() {
            let due = self
                .store
                .claim(&self.name, self.clock.now_ms(), BATCH)
                .await?;
            if due.is_empty() {
                let wait = match self.store.next_due(&self.name).await? {
                    Some(at) => {
                        Duration::from_millis(u64::try_from(at - self.clock.now_ms()).unwrap_or(0))
                    }
                    None => IDLE_RECHECK,
                };
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(wait.min(IDLE_RECHECK)) => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
            let mut rows = due.into_iter();
            let mut pause = None;
            for row in rows.by_ref() {
                if self.clock.now_ms().saturating_sub(row.created_at) > ms(self.policy.max_age) {
                    let reason = format!(
                        "not delivered within max_age ({}) after {} attempts",
                        humantime::format_duration(self.policy.max_age),
                        row.attempts
                    );
                    self.metrics.delivery(&self.name, metrics::Outcome::Expired);
                    self.dead_letter(&row, false, &reason).await?;
                    continue;
                }
                let outcome = self.sink.deliver_to(&row.alert, &row.target).await;
                crate::crashpoint::hit("after-send-before-mark");
                match outcome {
                    Outcome::Delivered => {
                        info!(sink = %self.name, id = row.id, target = %row.target, title = %row.alert.title, "Alert delivered.");
                        self.metrics
                            .delivery(&self.name, metrics::Outcome::Delivered);
                        let age = self.clock.now_ms().saturating_sub(row.created_at);
                        self.metrics
                            .delivery_latency(&self.name, age as f64 / 1000.0);
                        self.store.mark_sent(row.id).await?;
                        failures = 0;
                    }
                    Outcome::Retry { after, reason } => {
                        self.metrics.delivery(&self.name, metrics::Outcome::Retry);
                        let delay = after.unwrap_or_else(|| backoff(row.attempts, &self.policy));
                        warn!(sink = %self.name, id = row.id, attempt = row.attempts + 1, error = %reason, retry_in = ?delay, "Delivery failed, will retry.");
                        self.store
                            .mark_retry(
                                row.id,
                                self.clock.now_ms().saturating_add(ms(delay)),
                                reason,
                            )
                            .await?;
                        failures = failures.saturating_add(1);
                        // The receiver said when to come back (a 429's Retry-After), or a
                        // second attempt in a row failed: the sink is down or throttling, so
                        // nothing more goes to it for a while — longer the longer it fails.
                        // A single failure may be the alert's own (a body the receiver chokes
                        // on): the next row is tried at once, so it never holds up the rest.
                        if after.is_some() || failures >= 2 {
                            let sink_delay = backoff(failures.saturating_sub(2), &self.policy);
                            pause = Some(after.unwrap_or(sink_delay));
                            break;
                        }
                    }
                    Outcome::Rejected { reason } => {
                        self.metrics
                            .delivery(&self.name, metrics::Outcome::Rejected);
                        self.dead_letter(&row, true, &reason).await?;
                        // A definite answer: the sink is up, only this alert is refused.
                        failures = 0;
                    }
                }
                if stop.is_cancelled() {
                    break;
                }
            }
            self.store.release(rows.map(|row| row.id).collect()).await?;
            if let Some(delay) = pause {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
        Ok(())
    }

    /// Gives a row up, loudly: an ERROR line, and a notice through the fallback sink.
    async fn dead_letter(&self, row: &Due, attempted: bool, reason: &str) -> Result<()> {
        error!(sink = %self.name, id = row.id, target = %row.target, error = %reason, title = %row.alert.title, "Alert dead-lettered: it will not be delivered to this sink.");
        self.metrics.dead_letter(&self.name);
        let notice = self.fallback.as_ref().map(|fallback| Routed {
            alert: notice::dead_letter(&self.name, row, reason),
            sinks: vec![fallback.clone()],
        });
        let announced = notice.is_some();
        self.store
            .mark_dead(row.id, attempted, reason.to_owned(), notice)
            .await?;
        if announced {
            self.dispatch.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;
    use crate::store::{RowState, Store};
    use herald_bridges::sink::DeliverFuture;
    use herald_bridges::{Alert, Severity};
    use std::sync::Mutex;

    #[test]
    fn backoff_follows_the_sink_policy() {
        let policy = DeliveryPolicy {
            retry_min: Duration::from_secs(3),
            retry_max: Duration::from_secs(10),
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(backoff(0, &policy), policy.retry_min);
        for attempt in 0..40 {
            let d = backoff(attempt, &policy);
            assert!(d >= policy.retry_min && d <= policy.retry_max, "{d:?}");
        }
    }

    /// A sink that answers from a script and records when it was called.
    struct Scripted {
        script: Mutex<Vec<Outcome>>,
        calls: Mutex<Vec<Instant>>,
    }

    impl Sink for Scripted {
        fn deliver<'a>(&'a self, _alert: &'a Alert) -> DeliverFuture<'a> {
            Box::pin(async move {
                self.calls.lock().unwrap().push(Instant::now());
                let mut script = self.script.lock().unwrap();
                if script.is_empty() {
                    Outcome::Delivered
                } else {
                    script.remove(0)
                }
            })
        }
    }

    async fn setup(
        script: Vec<Outcome>,
        policy: DeliveryPolicy,
        fallback: bool,
    ) -> (tempfile::TempDir, Arc<dyn Store>, Arc<Scripted>, Worker) {
        let (dir, store) = testing::store().await;
        testing::put(&*store, 1, &[1], &["s"]).await;
        let sink = Arc::new(Scripted {
            script: Mutex::new(script),
            calls: Mutex::default(),
        });
        let fanout = Fanout::new([
            ("s".to_string(), &*sink as &dyn Sink),
            ("fb".to_string(), &*sink as &dyn Sink),
        ]);
        let shared = Shared {
            store: store.clone(),
            dispatch: Arc::new(Notify::new()),
            fallback: fallback.then(|| "fb".to_string()),
            metrics: Metrics::new(),
        };
        let worker = Worker::new("s".into(), sink.clone(), policy, &fanout, shared);
        (dir, store, sink, worker)
    }

    /// Runs `worker` until its row reaches `state` (within `limit`, paused time), then for
    /// `settle` more, then stops it.
    async fn run_until(
        worker: Worker,
        store: &dyn Store,
        state: RowState,
        limit: Duration,
        settle: Duration,
    ) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        tokio::time::timeout(limit, until(store, state))
            .await
            .unwrap_or_else(|_| panic!("never reached {state}"));
        tokio::time::sleep(settle).await;
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    async fn until(store: &dyn Store, state: RowState) {
        loop {
            let rows = store.unsent().await.unwrap();
            if (state == RowState::Sent && rows.iter().all(|r| r.sink != "s"))
                || rows.iter().any(|r| r.sink == "s" && r.state == state)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_to_the_second() {
        let retry = Outcome::Retry {
            after: Some(Duration::from_secs(7)),
            reason: "HTTP 429".into(),
        };
        let (_dir, store, sink, worker) =
            setup(vec![retry], DeliveryPolicy::default(), false).await;
        run_until(
            worker,
            &*store,
            RowState::Sent,
            Duration::from_secs(60),
            Duration::from_secs(0),
        )
        .await;
        let calls = sink.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        let gap = calls[1] - calls[0];
        assert!(
            gap >= Duration::from_secs(7) && gap < Duration::from_secs(8),
            "{gap:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_between_failures() {
        let fail = || Outcome::Retry {
            after: None,
            reason: "HTTP 503".into(),
        };
        let policy = DeliveryPolicy {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_age: Duration::from_secs(86400),
        };
        let (_dir, store, sink, worker) =
            setup(vec![fail(), fail(), fail(), fail(), fail()], policy, false).await;
        run_until(
            worker,
            &*store,
            RowState::Sent,
            Duration::from_secs(3600),
            Duration::from_secs(0),
        )
        .await;
        let calls = sink.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 6);
        let total = calls[5] - calls[0];
        // At least 5 × 1 s, at most 1 + 2 + 4 + 8 + 16 s (plus polling slack).
        assert!(
            total >= Duration::from_secs(5) && total <= Duration::from_secs(32),
            "{total:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_row_is_dead_lettered_and_announced() {
        let fail = || Outcome::Retry {
            after: Some(Duration::from_secs(20)),
            reason: "HTTP 503".into(),
        };
        let policy = DeliveryPolicy {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_age: Duration::from_secs(60),
        };
        let (_dir, store, sink, worker) =
            setup((0..10).map(|_| fail()).collect(), policy, true).await;
        run_until(
            worker,
            &*store,
            RowState::Dead,
            Duration::from_secs(600),
            Duration::from_secs(0),
        )
        .await;
        assert!(
            sink.calls.lock().unwrap().len() <= 4,
            "attempts stop at max_age"
        );
        testing::dispatch_all(&*store).await;
        let notice = store.claim("fb", i64::MAX, 10).await.unwrap();
        assert_eq!(notice.len(), 1);
        assert!(
            notice[0]
                .alert
                .title
                .starts_with("herald could not deliver to s:"),
            "{}",
            notice[0].alert.title
        );
        assert_eq!(notice[0].alert.severity, Severity::Critical);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_is_not_retried() {
        let (_dir, store, sink, worker) = setup(
            vec![Outcome::Rejected {
                reason: "HTTP 404".into(),
            }],
            DeliveryPolicy::default(),
            false,
        )
        .await;
        run_until(
            worker,
            &*store,
            RowState::Dead,
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
        .await;
        assert_eq!(sink.calls.lock().unwrap().len(), 1);
    }

    /// A sink that answers by the alert's title and records who was called when.
    struct Judge {
        verdict: fn(&str) -> Outcome,
        calls: Mutex<Vec<(String, Instant)>>,
    }

    impl Sink for Judge {
        fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
            Box::pin(async move {
                self.calls
                    .lock()
                    .unwrap()
                    .push((alert.title.clone(), Instant::now()));
                (self.verdict)(&alert.title)
            })
        }
    }

    /// A store with one dispatched row for sink `s` per title, and a worker with `judge`.
    async fn judged(
        titles: &[&str],
        verdict: fn(&str) -> Outcome,
    ) -> (tempfile::TempDir, Arc<dyn Store>, Arc<Judge>, Worker) {
        let (dir, store) = testing::store().await;
        let uids: Vec<u32> = (1..=titles.len() as u32).collect();
        let mut batch = testing::batch(1, &uids, &["s"], false);
        for (message, title) in batch.messages.iter_mut().zip(titles) {
            if let Some(routed) = &mut message.routed {
                routed.alert.title = (*title).to_owned();
            }
        }
        store.commit(batch).await.unwrap();
        testing::dispatch_all(&*store).await;
        let judge = Arc::new(Judge {
            verdict,
            calls: Mutex::default(),
        });
        let shared = Shared {
            store: store.clone(),
            dispatch: Arc::new(Notify::new()),
            fallback: None,
            metrics: Metrics::new(),
        };
        let fanout = Fanout::new([("s".to_string(), &*judge as &dyn Sink)]);
        let worker = Worker::new(
            "s".into(),
            judge.clone(),
            DeliveryPolicy::default(),
            &fanout,
            shared,
        );
        (dir, store, judge, worker)
    }

    fn server_error() -> Outcome {
        Outcome::Retry {
            after: None,
            reason: "HTTP 500".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_alert_that_keeps_failing_does_not_hold_up_the_others() {
        let (_dir, store, judge, worker) =
            judged(&["poison", "ok 1", "ok 2"], |title| match title {
                "poison" => server_error(),
                _ => Outcome::Delivered,
            })
            .await;
        let started = Instant::now();
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        let healthy_sent = async {
            loop {
                let rows = store.unsent().await.unwrap();
                if rows.len() == 1 {
                    return rows;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let left = tokio::time::timeout(Duration::from_secs(60), healthy_sent)
            .await
            .expect("the healthy alerts are delivered");
        assert_eq!(left[0].title, "poison");
        let calls = judge.calls.lock().unwrap().clone();
        let ok: Vec<_> = calls.iter().filter(|(t, _)| t.starts_with("ok")).collect();
        assert_eq!(ok.len(), 2);
        assert!(
            ok.iter()
                .all(|(_, at)| *at - started < Duration::from_millis(100)),
            "delivered at once, not after the poisoned alert's backoff: {calls:?}"
        );
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_that_is_down_is_paused_after_two_failures_in_a_row() {
        let (_dir, _store, judge, worker) =
            judged(&["a", "b", "c", "d", "e"], |_| server_error()).await;
        let started = Instant::now();
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let early = judge
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at - started < Duration::from_millis(500))
            .count();
        assert_eq!(early, 2, "one probe after the first failure, then a pause");
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_pauses_the_sink_at_once() {
        let (_dir, _store, judge, worker) = judged(&["a", "b", "c"], |_| Outcome::Retry {
            after: Some(Duration::from_secs(30)),
            reason: "HTTP 429".into(),
        })
        .await;
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(
            judge.calls.lock().unwrap().len(),
            1,
            "nothing before Retry-After"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(judge.calls.lock().unwrap().len(), 2, "one attempt after it");
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
