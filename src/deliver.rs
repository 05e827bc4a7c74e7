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
//!   (`retry_min` doubling up to `retry_max`). The worker then pauses for that delay before
//!   trying anything else, so a sink that is down is not hammered, and the rest of the batch
//!   goes back to `pending` untouched;
//! - rejected, or still undelivered `max_age` after the alert was stored: `dead` — logged at
//!   ERROR and announced through the `[defaults] fallback` sink in the same transaction.
//!
//! Rows confirmed within a batch are recorded together at its end (one fsync per batch, not
//! per alert); a crash in between repeats at most that batch's confirmed deliveries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use herald_bridges::{Alert, Kind, Outcome, Severity, Sink};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::DeliveryPolicy;
use crate::metrics::{self, Metrics};
use crate::store::{now_ms, Destination, Due, Store};

/// Rows read per batch.
const BATCH: usize = 32;

/// How often an idle worker looks at the outbox even when not woken: `herald outbox retry`
/// (another process) changes rows without waking it.
const IDLE_RECHECK: Duration = Duration::from_secs(5);

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

/// The delay before retry number `attempt + 1`: uniformly random between `min` and
/// `min × 2^attempt` capped at `max` ("full jitter" with a floor, so retries of many rows
/// spread out instead of arriving together, yet never come back at once).
pub fn backoff(attempt: u32, policy: &DeliveryPolicy) -> Duration {
    let min = policy.retry_min.as_millis();
    let ceiling = min
        .saturating_mul(1u128 << attempt.min(40))
        .min(policy.retry_max.as_millis())
        .max(min);
    let low = u64::try_from(min).unwrap_or(u64::MAX);
    let high = u64::try_from(ceiling).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(low..=high))
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

/// Delivers one sink's rows.
pub struct Worker {
    name: String,
    sink: Arc<dyn Sink>,
    store: Arc<Store>,
    policy: DeliveryPolicy,
    fanout: Fanout,
    fallback: Option<String>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    clock: Clock,
}

impl Worker {
    /// A worker for sink `name`; dead letters are announced through `fallback` (unless that
    /// is this very sink).
    pub fn new(
        name: String,
        sink: Arc<dyn Sink>,
        store: Arc<Store>,
        policy: DeliveryPolicy,
        fanout: Fanout,
        fallback: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Worker {
        let wake = fanout.signal(&name);
        let fallback = fallback.filter(|f| *f != name);
        Worker {
            name,
            sink,
            store,
            policy,
            fanout,
            fallback,
            metrics,
            wake,
            clock: Clock::new(),
        }
    }

    /// Runs until `stop`; an attempt under way when `stop` comes is finished first (the
    /// caller bounds that with its shutdown deadline). Fails only if the store fails.
    pub async fn run(self, stop: CancellationToken) -> Result<()> {
        while !stop.is_cancelled() {
            let due = self.store.claim(&self.name, self.clock.now_ms(), BATCH)?;
            if due.is_empty() {
                let wait = match self.store.next_due(&self.name)? {
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
            let mut sent = Vec::with_capacity(due.len());
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
                    self.dead_letter(&row, false, &reason)?;
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
                        sent.push(row.id);
                    }
                    Outcome::Retry { after, reason } => {
                        let delay = after.unwrap_or_else(|| backoff(row.attempts, &self.policy));
                        warn!(sink = %self.name, id = row.id, attempt = row.attempts + 1, error = %reason, retry_in = ?delay, "Delivery failed, will retry.");
                        self.store.mark_retry(
                            row.id,
                            self.clock.now_ms().saturating_add(ms(delay)),
                            &reason,
                        )?;
                        pause = Some(delay);
                        break;
                    }
                    Outcome::Rejected { reason } => {
                        self.metrics
                            .delivery(&self.name, metrics::Outcome::Rejected);
                        self.dead_letter(&row, true, &reason)?;
                    }
                }
                if stop.is_cancelled() {
                    break;
                }
            }
            self.store.mark_sent(&sent)?;
            self.store
                .release(&rows.map(|row| row.id).collect::<Vec<_>>())?;
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
    fn dead_letter(&self, row: &Due, attempted: bool, reason: &str) -> Result<()> {
        error!(sink = %self.name, id = row.id, target = %row.target, error = %reason, title = %row.alert.title, "Alert dead-lettered: it will not be delivered to this sink.");
        self.metrics.dead_letter(&self.name);
        let notice = self.fallback.as_ref().map(|fallback| {
            let alert = dead_letter_notice(&self.name, row, reason);
            let destinations = self.fanout.destinations(std::slice::from_ref(fallback));
            (alert, destinations)
        });
        self.store.mark_dead(
            row.id,
            attempted,
            reason,
            notice.as_ref().map(|(alert, to)| (alert, to.as_slice())),
        )?;
        if let Some(fallback) = &self.fallback {
            self.fanout.wake(std::slice::from_ref(fallback));
        }
        Ok(())
    }
}

/// The alert that announces a dead letter through the fallback sink.
fn dead_letter_notice(sink: &str, row: &Due, reason: &str) -> Alert {
    let original = &row.alert;
    let mut facts = std::collections::BTreeMap::new();
    facts.insert("dead_sink".into(), serde_json::json!(sink));
    facts.insert("dead_row".into(), serde_json::json!(row.id));
    facts.insert("original_title".into(), serde_json::json!(original.title));
    facts.insert(
        "original_dedup_key".into(),
        serde_json::json!(original.dedup_key),
    );
    facts.insert("reason".into(), serde_json::json!(reason));
    Alert {
        message_id: None,
        kind: Kind::Other,
        host: original.host.clone(),
        user: None,
        command: None,
        failed: Some(true),
        exit_status: None,
        severity: Severity::Critical,
        rule: None,
        title: herald_bridges::text::truncate(
            &format!("herald could not deliver to {sink}: {}", original.title),
            300,
        ),
        summary: herald_bridges::text::truncate(reason, 500),
        dedup_key: format!("herald:dead-letter:{sink}:{}", original.dedup_key),
        facts,
        subject: String::new(),
        from: None,
        date: None,
        body: format!(
            "`herald outbox list` shows the row; `herald outbox retry {}` sends it again.",
            row.id
        ),
        truncated: false,
        resolve: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Processed;
    use herald_bridges::sink::DeliverFuture;
    use std::sync::Mutex;

    #[test]
    fn backoff_doubles_from_min_to_max_with_jitter() {
        let policy = DeliveryPolicy {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_age: Duration::from_secs(3600),
        };
        for attempt in 0..50 {
            let ceiling = Duration::from_secs((1u64 << attempt.min(20)).min(300));
            for _ in 0..20 {
                let d = backoff(attempt, &policy);
                assert!(
                    d >= policy.retry_min && d <= ceiling,
                    "attempt {attempt}: {d:?}"
                );
            }
        }
        // Jitter: the delays of one attempt are not all equal.
        let delays: std::collections::HashSet<_> = (0..50).map(|_| backoff(8, &policy)).collect();
        assert!(delays.len() > 10);
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

    fn setup(
        script: Vec<Outcome>,
        policy: DeliveryPolicy,
        fallback: bool,
    ) -> (tempfile::TempDir, Arc<Store>, Arc<Scripted>, Worker) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("h.db")).unwrap());
        let alert = Alert::sample();
        let to = [Destination {
            sink: "s".into(),
            target: String::new(),
        }];
        let batch = [Processed {
            uid: 1,
            content_key: "k1",
            delivery: Some((&alert, &to[..])),
        }];
        store.commit_batch("INBOX", 1, &batch, 1, false).unwrap();
        let sink = Arc::new(Scripted {
            script: Mutex::new(script),
            calls: Mutex::default(),
        });
        let fanout = Fanout::new([
            ("s".to_string(), vec![String::new()]),
            ("fb".to_string(), vec![String::new()]),
        ]);
        let worker = Worker::new(
            "s".into(),
            sink.clone(),
            store.clone(),
            policy,
            fanout,
            fallback.then(|| "fb".to_string()),
            Metrics::new(),
        );
        (dir, store, sink, worker)
    }

    /// Runs `worker` until its row reaches `state` (within `limit`, paused time), then for
    /// `settle` more, then stops it.
    async fn run_until(
        worker: Worker,
        store: &Store,
        state: &str,
        limit: Duration,
        settle: Duration,
    ) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        tokio::time::timeout(limit, until(store, state))
            .await
            .expect(state);
        tokio::time::sleep(settle).await;
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    async fn until(store: &Store, state: &str) {
        loop {
            let rows = store.unsent().unwrap();
            if (state == "sent" && rows.iter().all(|r| r.sink != "s"))
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
        let (_dir, store, sink, worker) = setup(vec![retry], DeliveryPolicy::default(), false);
        run_until(
            worker,
            &store,
            "sent",
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
            setup(vec![fail(), fail(), fail(), fail(), fail()], policy, false);
        run_until(
            worker,
            &store,
            "sent",
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
        let (_dir, store, sink, worker) = setup((0..10).map(|_| fail()).collect(), policy, true);
        run_until(
            worker,
            &store,
            "dead",
            Duration::from_secs(600),
            Duration::from_secs(0),
        )
        .await;
        assert!(
            sink.calls.lock().unwrap().len() <= 4,
            "attempts stop at max_age"
        );
        let notice = store.claim("fb", i64::MAX, 10).unwrap();
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
        );
        run_until(
            worker,
            &store,
            "dead",
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
        .await;
        assert_eq!(sink.calls.lock().unwrap().len(), 1);
    }
}
