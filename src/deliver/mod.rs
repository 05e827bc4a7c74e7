//! Delivery: one worker per sink drains that sink's outbox rows.
//!
//! The outbox has one row per (alert, sink, target): a sink with several targets (Twilio's
//! recipients) gets independent rows, so one bad number never blocks or re-sends the others.
//! Workers are independent, so one sink's outage never delays another.
//!
//! A worker claims due rows in batches (`pending` → `sending`), the most severe first, and
//! starts them in that order with up to the sink's `concurrency` in flight at once (its own
//! task each, so a slow receiver's round trips overlap). Each makes one attempt and records
//! its outcome as soon as it answers, as the sink's response classifier decided:
//! - delivered: `sent`, only after the sink confirmed;
//! - retry: back to `pending`, due again after the receiver's `Retry-After` if it gave one
//!   (no request before it), else after a capped exponential backoff with full jitter
//!   (`retry_min` doubling up to `retry_max`). One failure is taken as the alert's own (a
//!   payload the receiver chokes on): the next row starts at once, so a poisoned alert
//!   never holds up the healthy ones behind it. A `Retry-After`, or a second failure in a
//!   row (in the order attempts answer), means the sink itself is down or throttling: the
//!   worker pauses (for the `Retry-After`, else a backoff that grows with each pause in a
//!   row) and the claimed rows not yet started go back to `pending` untouched. Deliveries
//!   already in flight finish and are recorded (their failures neither lengthen the pause
//!   nor count towards the next, except a longer `Retry-After`), none starts until the pause
//!   ends, and then one at a time until an attempt succeeds, so a sink that is down is not
//!   hammered;
//! - rejected, or still undelivered `max_age` after the alert was stored: `dead` — logged at
//!   ERROR and announced through the `[defaults] fallback` sink in the same transaction.
//!
//! Each delivery is recorded as soon as its own attempt answered, whatever the others in
//! flight are doing, so a crash repeats at most the deliveries in flight: `concurrency` of
//! them (one with `concurrency = 1`, where deliveries are also made strictly one after the
//! other, in claim order). Rate limits are the sink's own, one bucket shared by every
//! delivery in flight, so they pace the total. At shutdown no delivery starts, the claimed
//! rows not started go back to `pending`, and those in flight finish (the caller bounds that
//! with its shutdown deadline; a row cut off stays `sending` and is `pending` again at the
//! next start).
//!
//! A dead letter's notice is an ordinary alert routed to the fallback sink: it is committed
//! with the dead row and handed to dispatch, which writes its rows like any other alert's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use herald_bridges::backoff::Backoff;
use herald_bridges::{Outcome, Sink};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::DeliveryPolicy;
use crate::dispatch::Fanout;
use crate::metrics::{self, Metrics};
use crate::store::{now_ms, Due, OutboxStore, Routed};

mod notice;

/// Rows claimed per batch: enough to keep a fast sink busy, few enough that a shutdown or a
/// failure returns little to `pending`, and that a critical alert dispatched meanwhile waits
/// behind at most one batch.
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
    core: Arc<Core>,
    /// Notified when there are rows for this sink.
    wake: Arc<Notify>,
}

/// What one sink's deliveries need, shared by the tasks that make them.
struct Core {
    name: String,
    sink: Arc<dyn Sink>,
    store: Arc<dyn OutboxStore>,
    policy: DeliveryPolicy,
    fallback: Option<String>,
    metrics: Arc<Metrics>,
    /// Told when a dead letter's notice waits for dispatch.
    dispatch: Arc<Notify>,
    clock: Clock,
}

/// What an attempt, already recorded, tells about the sink itself.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A definite answer (delivered, or this alert rejected): the sink is up.
    Definite,
    /// A transient failure, with the receiver's `Retry-After` if it gave one.
    Failed { after: Option<Duration> },
}

/// The sink's health, judged from its answers in the order they came.
#[derive(Debug, Default)]
struct Health {
    /// Failed attempts in a row, not counting those that answered during a pause: they were
    /// started before the sink was judged unwell and tell nothing new. One followed by a
    /// success was that alert's own problem; two in a row mean the sink itself is unwell.
    failures: u32,
    /// While set, no delivery starts before it.
    paused_until: Option<Instant>,
}

impl Health {
    /// Takes `answer` in at `now`; true if it starts a pause.
    fn record(&mut self, answer: Answer, policy: &DeliveryPolicy, now: Instant) -> bool {
        let Answer::Failed { after } = answer else {
            self.failures = 0;
            return false;
        };
        if let Some(until) = self.paused_until {
            // Already paused: only the receiver asking for longer changes that.
            if let Some(after) = after {
                self.paused_until = Some(until.max(now + after));
            }
            return false;
        }
        self.failures = self.failures.saturating_add(1);
        // The receiver said when to come back (a 429's Retry-After), or a second attempt in
        // a row failed: the sink is down or throttling, so nothing more goes to it for a
        // while — longer the longer it fails. A single failure may be the alert's own (a body
        // the receiver chokes on): the next row starts at once, so it never holds up the rest.
        if after.is_none() && self.failures < 2 {
            return false;
        }
        let delay = after.unwrap_or_else(|| backoff(self.failures - 2, policy));
        self.paused_until = Some(now + delay);
        true
    }

    /// Ends a pause whose time has come.
    fn resume_if_due(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    /// How many deliveries may be in flight now: none while paused; after a pause, until an
    /// attempt succeeds, one at a time (a probe), so a sink still down costs one request per
    /// pause and not `concurrency`.
    fn limit(&self, concurrency: usize) -> usize {
        match (self.paused_until, self.failures) {
            (Some(_), _) => 0,
            (None, 2..) => 1,
            (None, _) => concurrency,
        }
    }
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
            core: Arc::new(Core {
                name,
                sink,
                store: shared.store,
                policy,
                fallback,
                metrics: shared.metrics,
                dispatch: shared.dispatch,
                clock: Clock::new(),
            }),
            wake,
        }
    }

    /// Runs until `stop`; the attempts under way when `stop` comes are finished and recorded
    /// first (the caller bounds that with its shutdown deadline), the claimed rows not yet
    /// started are released. Fails only if the store fails (or a delivery task panicked).
    pub async fn run(self, stop: CancellationToken) -> Result<()> {
        let Worker { core, wake } = self;
        // The config reader keeps it in 1..=64; 0 would deliver nothing, ever.
        let concurrency = core.policy.concurrency.max(1);
        let mut health = Health::default();
        // Claimed, not yet started, in claim order (the most severe first).
        let mut queue: VecDeque<Due> = VecDeque::new();
        // At most `concurrency` tasks: one is spawned only when fewer are in flight.
        let mut in_flight: JoinSet<Result<Answer>> = JoinSet::new();
        // Whether a claim may find more rows: false once one came back short, until the
        // worker is woken or has nothing in flight, so that each answer does not cost an
        // empty claim.
        let mut claimable = true;
        while !stop.is_cancelled() {
            health.resume_if_due(Instant::now());
            while !stop.is_cancelled() && in_flight.len() < health.limit(concurrency) {
                if queue.is_empty() {
                    if !claimable {
                        break;
                    }
                    let due = core
                        .store
                        .claim(&core.name, core.clock.now_ms(), BATCH)
                        .await?;
                    claimable = due.len() == BATCH;
                    if due.is_empty() {
                        break;
                    }
                    queue.extend(due);
                }
                let Some(row) = queue.pop_front() else {
                    break;
                };
                if core.clock.now_ms().saturating_sub(row.created_at) > ms(core.policy.max_age) {
                    core.expire(&row).await?;
                    continue;
                }
                let core = core.clone();
                in_flight.spawn(async move { core.attempt(row).await });
            }
            if in_flight.is_empty() && health.paused_until.is_none() {
                // Nothing in flight and nothing due: wait for new rows or the next retry.
                let wait = match core.store.next_due(&core.name).await? {
                    Some(at) => {
                        Duration::from_millis(u64::try_from(at - core.clock.now_ms()).unwrap_or(0))
                    }
                    None => IDLE_RECHECK,
                };
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait.min(IDLE_RECHECK)) => {}
                    () = stop.cancelled() => {}
                }
                claimable = true;
                continue;
            }
            let pause = health.paused_until;
            tokio::select! {
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let answer = joined.map_err(|e| {
                        anyhow!("a delivery to sink {:?} did not finish: {e}", core.name)
                    })??;
                    if health.record(answer, &core.policy, Instant::now()) {
                        // Their turn did not come: back to `pending`, untouched, so that
                        // the pause holds them no longer than it holds new ones.
                        core.store.release(queue.drain(..).map(|row| row.id).collect()).await?;
                    }
                }
                () = tokio::time::sleep_until(pause.unwrap_or_else(Instant::now)),
                    if pause.is_some() => {
                    claimable = true;
                }
                () = wake.notified(), if !claimable => claimable = true,
                () = stop.cancelled() => {}
            }
        }
        core.store
            .release(queue.into_iter().map(|row| row.id).collect())
            .await?;
        while let Some(joined) = in_flight.join_next().await {
            joined
                .map_err(|e| anyhow!("a delivery to sink {:?} did not finish: {e}", core.name))??;
        }
        Ok(())
    }
}

impl Core {
    /// Makes one attempt at `row` and records its outcome at once.
    async fn attempt(&self, row: Due) -> Result<Answer> {
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
                Ok(Answer::Definite)
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
                Ok(Answer::Failed { after })
            }
            Outcome::Rejected { reason } => {
                self.metrics
                    .delivery(&self.name, metrics::Outcome::Rejected);
                self.dead_letter(&row, true, &reason).await?;
                // A definite answer: the sink is up, only this alert is refused.
                Ok(Answer::Definite)
            }
        }
    }

    /// Gives up a row that outlived `max_age` without trying it again.
    async fn expire(&self, row: &Due) -> Result<()> {
        let reason = format!(
            "not delivered within max_age ({}) after {} attempts",
            humantime::format_duration(self.policy.max_age),
            row.attempts
        );
        self.metrics.delivery(&self.name, metrics::Outcome::Expired);
        self.dead_letter(row, false, &reason).await
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn backoff_follows_the_sink_policy() {
        let policy = DeliveryPolicy {
            retry_min: Duration::from_secs(3),
            retry_max: Duration::from_secs(10),
            max_age: Duration::from_secs(3600),
            concurrency: 1,
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
            concurrency: 1,
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
            concurrency: 1,
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
        let judge = Arc::new(Judge {
            verdict,
            calls: Mutex::default(),
        });
        let alerts: Vec<_> = titles.iter().map(|t| (*t, Severity::Warning)).collect();
        let (dir, store, worker) =
            worker_for(&alerts, judge.clone(), DeliveryPolicy::default()).await;
        (dir, store, judge, worker)
    }

    /// A store with one dispatched row for sink `s` per (title, severity), in that order, and
    /// a worker delivering them to `sink` under `policy`.
    async fn worker_for(
        alerts: &[(&str, Severity)],
        sink: Arc<dyn Sink>,
        policy: DeliveryPolicy,
    ) -> (tempfile::TempDir, Arc<dyn Store>, Worker) {
        let (dir, store) = testing::store().await;
        let uids: Vec<u32> = (1..=alerts.len() as u32).collect();
        let mut batch = testing::batch(1, &uids, &["s"], false);
        for (message, (title, severity)) in batch.messages.iter_mut().zip(alerts) {
            if let Some(routed) = &mut message.routed {
                routed.alert.title = (*title).to_owned();
                routed.alert.severity = *severity;
            }
        }
        store.commit(batch).await.unwrap();
        testing::dispatch_all(&*store).await;
        let shared = Shared {
            store: store.clone(),
            dispatch: Arc::new(Notify::new()),
            fallback: None,
            metrics: Metrics::new(),
        };
        let fanout = Fanout::new([("s".to_string(), &*sink)]);
        let worker = Worker::new("s".into(), sink, policy, &fanout, shared);
        (dir, store, worker)
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

    /// A sink that takes `latency` to answer each delivery (by `verdict`, on the title),
    /// pacing its starts through `limiter` if it has one, as the HTTP sinks do; it records who
    /// started when, and how many were in flight at most.
    struct Slow {
        latency: Duration,
        verdict: fn(&str) -> Outcome,
        limiter: Option<herald_bridges::ratelimit::RateLimiter>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        calls: Mutex<Vec<(String, Instant)>>,
    }

    impl Slow {
        fn new(latency: Duration, verdict: fn(&str) -> Outcome) -> Slow {
            Slow {
                latency,
                verdict,
                limiter: None,
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                calls: Mutex::default(),
            }
        }

        fn calls_between(&self, from: Duration, to: Duration, started: Instant) -> usize {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, at)| *at - started >= from && *at - started < to)
                .count()
        }
    }

    impl Sink for Slow {
        fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
            Box::pin(async move {
                if let Some(limiter) = &self.limiter {
                    limiter.acquire().await;
                }
                self.calls
                    .lock()
                    .unwrap()
                    .push((alert.title.clone(), Instant::now()));
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(self.latency).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                (self.verdict)(&alert.title)
            })
        }
    }

    fn delivered(_: &str) -> Outcome {
        Outcome::Delivered
    }

    fn with_concurrency(concurrency: usize) -> DeliveryPolicy {
        DeliveryPolicy {
            concurrency,
            ..DeliveryPolicy::default()
        }
    }

    /// Runs `worker` until every row of `s` is sent (paused time); returns how long it took.
    async fn drain(worker: Worker, store: &dyn Store) -> Duration {
        let started = Instant::now();
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        tokio::time::timeout(Duration::from_secs(600), until(store, RowState::Sent))
            .await
            .expect("every row is sent");
        let took = started.elapsed();
        stop.cancel();
        task.await.unwrap().unwrap();
        took
    }

    fn titles(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("alert {i}")).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_deliveries_divide_the_drain_time() {
        const N: usize = 40;
        const LATENCY: Duration = Duration::from_millis(100);
        for concurrency in [1, 4, 8] {
            let names = titles(N);
            let alerts: Vec<_> = names
                .iter()
                .map(|t| (t.as_str(), Severity::Warning))
                .collect();
            let sink = Arc::new(Slow::new(LATENCY, delivered));
            let (_dir, store, worker) =
                worker_for(&alerts, sink.clone(), with_concurrency(concurrency)).await;
            let took = drain(worker, &*store).await;
            // N / concurrency round trips back to back; the margin is `until`'s 100 ms poll
            // and one batch boundary.
            let ideal = LATENCY * u32::try_from(N.div_ceil(concurrency)).unwrap();
            assert!(
                took >= ideal && took <= ideal + Duration::from_millis(250),
                "concurrency {concurrency}: {took:?}, ideally {ideal:?}"
            );
            assert_eq!(
                sink.max_in_flight.load(Ordering::SeqCst),
                concurrency,
                "never more than concurrency in flight, and that many used"
            );
            assert_eq!(sink.calls.lock().unwrap().len(), N, "each delivered once");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_one_keeps_strict_order() {
        use Severity::{Critical, Info, Warning};
        let alerts = [
            ("info 1", Info),
            ("critical 1", Critical),
            ("warning 1", Warning),
            ("info 2", Info),
            ("critical 2", Critical),
            ("warning 2", Warning),
        ];
        let sink = Arc::new(Slow::new(Duration::from_millis(100), delivered));
        let (_dir, store, worker) = worker_for(&alerts, sink.clone(), with_concurrency(1)).await;
        drain(worker, &*store).await;
        let calls = sink.calls.lock().unwrap().clone();
        let order: Vec<_> = calls.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            order,
            [
                "critical 1",
                "critical 2",
                "warning 1",
                "warning 2",
                "info 1",
                "info 2"
            ]
        );
        assert_eq!(sink.max_in_flight.load(Ordering::SeqCst), 1);
        for pair in calls.windows(2) {
            assert!(
                pair[1].1 - pair[0].1 >= Duration::from_millis(100),
                "each starts after the previous answered: {calls:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn with_concurrency_the_most_severe_start_first() {
        use Severity::{Critical, Info, Warning};
        let alerts = [
            ("info 1", Info),
            ("info 2", Info),
            ("warning 1", Warning),
            ("critical 1", Critical),
            ("info 3", Info),
            ("critical 2", Critical),
        ];
        let sink = Arc::new(Slow::new(Duration::from_millis(100), delivered));
        let (_dir, store, worker) = worker_for(&alerts, sink.clone(), with_concurrency(3)).await;
        drain(worker, &*store).await;
        let calls = sink.calls.lock().unwrap().clone();
        let first: Vec<_> = calls[..3].iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            first,
            ["critical 1", "critical 2", "warning 1"],
            "{calls:?}"
        );
        assert!(
            calls[3].1 > calls[2].1,
            "the rest after a slot freed: {calls:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_paces_the_total_across_concurrent_deliveries() {
        let names = titles(12);
        let alerts: Vec<_> = names.iter().map(|t| (t.as_str(), Severity::Info)).collect();
        let mut sink = Slow::new(Duration::from_millis(10), delivered);
        // 2 back to back, then one every 500 ms.
        sink.limiter = Some(herald_bridges::ratelimit::RateLimiter::new(Some(
            herald_bridges::ratelimit::Rate::new(2, Duration::from_secs(1)),
        )));
        let sink = Arc::new(sink);
        let (_dir, store, worker) = worker_for(&alerts, sink.clone(), with_concurrency(4)).await;
        let took = drain(worker, &*store).await;
        let calls = sink.calls.lock().unwrap().clone();
        let span = calls[11].1 - calls[0].1;
        assert!(
            span >= Duration::from_secs(5) && took < Duration::from_secs(6),
            "10 paced starts after the burst: {span:?}, {took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_sink_lets_deliveries_in_flight_finish_and_starts_no_more() {
        let names = titles(10);
        let alerts: Vec<_> = names.iter().map(|t| (t.as_str(), Severity::Info)).collect();
        let sink = Arc::new(Slow::new(Duration::from_millis(100), |_| server_error()));
        let policy = DeliveryPolicy {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_age: Duration::from_secs(86400),
            concurrency: 4,
        };
        let (_dir, store, worker) = worker_for(&alerts, sink.clone(), policy).await;
        let started = Instant::now();
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        tokio::time::sleep(Duration::from_millis(2150)).await;
        let ms = Duration::from_millis;
        // Four at once; at 100 ms they fail: the first failure may be its alert's own, so its
        // slot is refilled; the second pauses the sink for retry_min (1 s).
        assert_eq!(sink.calls_between(ms(0), ms(1), started), 4);
        assert_eq!(sink.calls_between(ms(100), ms(101), started), 1);
        assert_eq!(
            sink.calls_between(ms(101), ms(1100), started),
            0,
            "nothing starts during the pause, while the ones in flight finish"
        );
        // After it, one probe; its failure pauses again, for 1–2 s.
        assert_eq!(sink.calls_between(ms(1100), ms(2150), started), 1);
        stop.cancel();
        task.await.unwrap().unwrap();
        let rows = store.unsent().await.unwrap();
        assert!(
            rows.iter().all(|r| r.state == RowState::Pending),
            "every failure recorded, unstarted rows released: {rows:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_lets_deliveries_in_flight_finish_and_releases_the_rest() {
        let names = titles(10);
        let alerts: Vec<_> = names.iter().map(|t| (t.as_str(), Severity::Info)).collect();
        let sink = Arc::new(Slow::new(Duration::from_millis(100), delivered));
        let (_dir, store, worker) = worker_for(&alerts, sink.clone(), with_concurrency(4)).await;
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(sink.calls.lock().unwrap().len(), 4);
        let rows = store.unsent().await.unwrap();
        assert_eq!(
            rows.len(),
            6,
            "the four in flight were delivered and marked"
        );
        assert!(
            rows.iter().all(|r| r.state == RowState::Pending),
            "claimed rows not started go back to pending: {rows:?}"
        );
    }
}
