//! Dispatch against the real SQLite store, on tokio's paused clock: each test feeds alerts
//! as ingest commits them, runs passes as the daemon would, and reads the outbox rows the
//! sinks would deliver.

use std::time::Duration;

use herald_bridges::sink::DeliverFuture;
use herald_bridges::{Alert, Outcome, Severity};
use tokio::time::advance;

use super::policy::{GroupField, Policy};
use super::*;
use crate::store::testing::store;
use crate::store::{Batch, Fetched, MailboxId, Routed, Silence};

/// A sink for the fan-out only: these tests read rows, they never deliver.
struct Flags {
    recoveries: bool,
    incidents: bool,
}

impl Sink for Flags {
    fn deliver<'a>(&'a self, _: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async { Outcome::Delivered })
    }
    fn notify_resolved(&self) -> bool {
        self.recoveries
    }
    fn tracks_incidents(&self) -> bool {
        self.incidents
    }
}

const CHAT: Flags = Flags {
    recoveries: true,
    incidents: false,
};
const SMS: Flags = Flags {
    recoveries: false,
    incidents: false,
};
const PAGER: Flags = Flags {
    recoveries: true,
    incidents: true,
};

struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
    uid: u32,
}

fn policies(policy: Policy) -> Policies {
    Policies {
        defaults: policy,
        rules: HashMap::new(),
    }
}

impl Rig {
    async fn new(policy: Policy) -> Rig {
        let (dir, store) = store().await;
        let metrics = Metrics::new();
        let fanout = Fanout::new([
            ("chat".to_owned(), &CHAT as &dyn Sink),
            ("sms".to_owned(), &SMS as &dyn Sink),
            ("pd".to_owned(), &PAGER as &dyn Sink),
        ]);
        let dispatcher = Dispatcher::new(
            store.clone(),
            fanout,
            policies(policy),
            Arc::new(Notify::new()),
            metrics.clone(),
            Clock::start(),
        );
        Rig {
            _dir: dir,
            store,
            dispatcher,
            metrics,
            uid: 0,
        }
    }

    /// A dispatcher on the same state, as after a restart.
    fn restart(&mut self, policy: Policy) {
        self.dispatcher = Dispatcher::new(
            self.store.clone(),
            Fanout::new([
                ("chat".to_owned(), &CHAT as &dyn Sink),
                ("sms".to_owned(), &SMS as &dyn Sink),
                ("pd".to_owned(), &PAGER as &dyn Sink),
            ]),
            policies(policy),
            Arc::new(Notify::new()),
            self.metrics.clone(),
            self.dispatcher.clock,
        );
    }

    /// Commits `alert` as ingest does, routed to `sinks`, and runs one dispatch pass.
    async fn feed(&mut self, alert: Alert, sinks: &[&str]) {
        self.uid += 1;
        let batch = Batch {
            mailbox: MailboxId::new("default", "INBOX"),
            uidvalidity: 1,
            messages: vec![Fetched {
                uid: self.uid,
                content_key: format!("k{}", self.uid),
                routed: Some(Routed {
                    alert,
                    sinks: sinks.iter().map(|s| (*s).to_owned()).collect(),
                }),
                settled: None,
            }],
            cursor: self.uid,
            mark: false,
            sightings: Vec::new(),
        };
        self.store.commit(batch).await.unwrap();
        self.pass().await;
    }

    /// One dispatch pass and the timers, as the daemon's loop runs them.
    async fn pass(&self) {
        self.dispatcher.run_timers().await.unwrap();
        while self.dispatcher.dispatch_waiting().await.unwrap() > 0 {}
    }

    /// The alerts `sink` would deliver now (claimed and marked sent).
    async fn sent(&self, sink: &str) -> Vec<Alert> {
        let due = self.store.claim(sink, i64::MAX, 1000).await.unwrap();
        for d in &due {
            self.store.mark_sent(d.id).await.unwrap();
        }
        due.into_iter().map(|d| d.alert).collect()
    }
}

/// A failing cron job on `host`.
fn failure(host: &str) -> Alert {
    let mut alert = Alert::sample();
    alert.host = Some(host.to_owned());
    alert.title = format!("cron on {host}: /usr/local/bin/backup.sh");
    alert.dedup_key = format!("cron:{host}:root:/usr/local/bin/backup.sh");
    alert
}

fn recovery(host: &str) -> Alert {
    let mut alert = failure(host);
    alert.failed = Some(false);
    alert.severity = Severity::Info;
    alert
}

fn storm_policy() -> Policy {
    Policy {
        group_by: vec![GroupField::Kind, GroupField::Command],
        ..Policy::default()
    }
}

#[tokio::test(start_paused = true)]
async fn thirty_repeats_make_one_page_then_one_reminder_with_the_count() {
    let mut rig = Rig::new(Policy::default()).await;
    for _ in 0..30 {
        rig.feed(failure("web01"), &["sms"]).await;
        advance(Duration::from_secs(60)).await;
    }
    let first = rig.sent("sms").await;
    assert_eq!(
        first.len(),
        1,
        "30 repeats within repeat_interval: one page"
    );
    assert!(first[0].repeats.is_none());

    // At repeat_interval after the page, the 29 folded repeats are reminded of once.
    advance(Duration::from_secs(4 * 3600 - 30 * 60)).await;
    rig.pass().await;
    let reminder = rig.sent("sms").await;
    assert_eq!(reminder.len(), 1);
    let repeats = reminder[0].repeats.as_ref().expect("a reminder");
    assert_eq!(repeats.count, 29);
    assert!(
        reminder[0]
            .summary
            .starts_with("failed 29 more times since "),
        "{}",
        reminder[0].summary
    );
    // Nothing more to remind of: no further notification.
    advance(Duration::from_secs(5 * 3600)).await;
    rig.pass().await;
    assert!(rig.sent("sms").await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_repeat_interval() {
    let mut rig = Rig::new(Policy::default()).await;
    rig.feed(failure("web01"), &["chat"]).await;
    assert_eq!(rig.sent("chat").await.len(), 1);
    rig.restart(Policy::default());
    advance(Duration::from_secs(600)).await;
    rig.feed(failure("web01"), &["chat"]).await;
    assert!(
        rig.sent("chat").await.is_empty(),
        "a repeat after a restart is folded, not re-paged"
    );
}

#[tokio::test(start_paused = true)]
async fn a_storm_across_hosts_is_one_page_and_one_digest_naming_every_host() {
    let mut rig = Rig::new(storm_policy()).await;
    for i in 0..12 {
        rig.feed(failure(&format!("web{i:02}")), &["chat"]).await;
        advance(Duration::from_millis(400)).await;
    }
    let first = rig.sent("chat").await;
    assert_eq!(
        first.len(),
        1,
        "the first alert of a quiet group goes at once"
    );
    assert_eq!(first[0].host.as_deref(), Some("web00"));
    assert_eq!(
        first[0].group_key.as_deref(),
        Some("cron:/usr/local/bin/backup.sh")
    );

    advance(Duration::from_secs(60)).await;
    rig.pass().await;
    let digest = rig.sent("chat").await;
    assert_eq!(digest.len(), 1, "the other 11 in one digest");
    let hosts: Vec<&str> = digest[0]
        .digest
        .iter()
        .filter_map(|m| m.host.as_deref())
        .collect();
    assert_eq!(hosts.len(), 11);
    for i in 1..12 {
        assert!(hosts.contains(&format!("web{i:02}").as_str()));
    }
    assert_eq!(
        digest[0].title,
        "11 problems: cron /usr/local/bin/backup.sh"
    );
    assert!(
        digest[0].summary.ends_with("(11 hosts)"),
        "{}",
        digest[0].summary
    );
    assert_eq!(digest[0].dedup_key, "cron:/usr/local/bin/backup.sh");
}

#[tokio::test(start_paused = true)]
async fn group_wait_collects_the_first_alerts_into_one_digest() {
    let mut rig = Rig::new(Policy {
        group_wait: Duration::from_secs(30),
        ..storm_policy()
    })
    .await;
    for host in ["a", "b", "c"] {
        rig.feed(failure(host), &["chat"]).await;
    }
    assert!(rig.sent("chat").await.is_empty(), "waiting for group_wait");
    advance(Duration::from_secs(30)).await;
    rig.pass().await;
    let sent = rig.sent("chat").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].digest.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_run_loop_wakes_for_a_pending_digest() {
    let mut rig = Rig::new(storm_policy()).await;
    rig.feed(failure("a"), &["chat"]).await;
    rig.feed(failure("b"), &["chat"]).await;
    assert_eq!(rig.sent("chat").await.len(), 1);
    let stop = CancellationToken::new();
    let Rig {
        dispatcher, store, ..
    } = rig;
    let running = tokio::spawn(dispatcher.run(stop.clone()));
    // The paused clock jumps to the loop's timer; the digest is due 60 s after the page.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let digest = loop {
        let due = store.claim("chat", i64::MAX, 10).await.unwrap();
        if !due.is_empty() {
            break due;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no digest by the deadline"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(digest[0].alert.host.as_deref(), Some("b"));
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_recovery_resolves_where_wanted_and_reopens_cleanly() {
    let mut rig = Rig::new(Policy::default()).await;
    rig.feed(failure("web01"), &["chat", "sms", "pd"]).await;
    for sink in ["chat", "sms", "pd"] {
        assert_eq!(rig.sent(sink).await.len(), 1);
    }
    rig.feed(recovery("web01"), &["chat"]).await;
    let chat = rig.sent("chat").await;
    assert_eq!(chat.len(), 1);
    assert!(chat[0].resolve);
    assert!(
        rig.sent("sms").await.is_empty(),
        "SMS is not told of recoveries"
    );
    let pd = rig.sent("pd").await;
    assert_eq!(pd.len(), 1, "PagerDuty resolves its incident");
    assert!(pd[0].resolve);

    // The problem is closed: the next failure pages at once.
    rig.feed(failure("web01"), &["sms"]).await;
    assert_eq!(rig.sent("sms").await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_incident_resolves_when_the_groups_last_problem_recovers() {
    let mut rig = Rig::new(storm_policy()).await;
    rig.feed(failure("a"), &["chat", "pd"]).await;
    advance(Duration::from_secs(61)).await;
    rig.feed(failure("b"), &["chat", "pd"]).await;
    assert_eq!(rig.sent("pd").await.len(), 2);
    rig.sent("chat").await;
    rig.feed(recovery("a"), &["chat"]).await;
    assert_eq!(
        rig.sent("chat").await.len(),
        1,
        "chat hears of each recovery"
    );
    assert!(
        rig.sent("pd").await.is_empty(),
        "b still fails: the incident stays"
    );
    rig.feed(recovery("b"), &["chat"]).await;
    let pd = rig.sent("pd").await;
    assert_eq!(pd.len(), 1);
    assert_eq!(
        pd[0].group_key.as_deref(),
        Some("cron:/usr/local/bin/backup.sh")
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_and_its_recovery_in_one_pass_are_both_told() {
    let mut rig = Rig::new(Policy::default()).await;
    // Committed together, dispatched in one pass.
    rig.uid += 2;
    let batch = Batch {
        mailbox: MailboxId::new("default", "INBOX"),
        uidvalidity: 1,
        messages: [failure("web01"), recovery("web01")]
            .into_iter()
            .enumerate()
            .map(|(i, alert)| Fetched {
                uid: i as u32 + 1,
                content_key: format!("k{i}"),
                routed: Some(Routed {
                    alert,
                    sinks: vec!["pd".into()],
                }),
                settled: None,
            })
            .collect(),
        cursor: 2,
        mark: false,
        sightings: Vec::new(),
    };
    rig.store.commit(batch).await.unwrap();
    rig.pass().await;
    let sent = rig.sent("pd").await;
    assert_eq!(sent.len(), 2, "triggered, then resolved");
    assert!(!sent[0].resolve && sent[1].resolve);
}

#[tokio::test(start_paused = true)]
async fn a_problem_that_recovers_before_its_digest_never_pages() {
    let mut rig = Rig::new(Policy {
        group_wait: Duration::from_secs(30),
        ..Policy::default()
    })
    .await;
    rig.feed(failure("web01"), &["chat"]).await;
    rig.feed(recovery("web01"), &["chat"]).await;
    advance(Duration::from_secs(60)).await;
    rig.pass().await;
    assert!(rig.sent("chat").await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_quiet_problem_closes_and_its_next_failure_pages() {
    let mut rig = Rig::new(Policy {
        resolve_after: Duration::from_secs(3600),
        ..Policy::default()
    })
    .await;
    rig.feed(failure("web01"), &["chat"]).await;
    assert_eq!(rig.sent("chat").await.len(), 1);
    advance(Duration::from_secs(3601)).await;
    rig.pass().await;
    assert!(rig.sent("chat").await.is_empty(), "it closes quietly");
    rig.feed(failure("web01"), &["chat"]).await;
    assert_eq!(rig.sent("chat").await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn repeat_interval_zero_sends_every_repeat() {
    let mut rig = Rig::new(Policy {
        repeat_interval: Duration::ZERO,
        ..Policy::default()
    })
    .await;
    for _ in 0..3 {
        rig.feed(failure("web01"), &["chat"]).await;
    }
    let sent = rig.sent("chat").await;
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|a| a.repeats.is_none()));
}

#[tokio::test(start_paused = true)]
async fn a_silence_suppresses_counts_and_replays_nothing() {
    let mut rig = Rig::new(Policy::default()).await;
    let now = rig.dispatcher.clock.now();
    let id = rig
        .store
        .add_silence(Silence {
            id: 0,
            matchers: vec!["host=web01".into()],
            starts_at: now,
            ends_at: now + 3_600_000,
            comment: "maintenance".into(),
            created_at: now,
            suppressed: 0,
        })
        .await
        .unwrap();
    rig.feed(failure("web01"), &["chat"]).await;
    rig.feed(failure("web01"), &["chat"]).await;
    rig.feed(failure("web02"), &["chat"]).await;
    let sent = rig.sent("chat").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].host.as_deref(), Some("web02"));
    let stored = rig.store.silences(None).await.unwrap();
    assert_eq!(stored[0].suppressed, 2);

    rig.store
        .expire_silence(id, rig.dispatcher.clock.now())
        .await
        .unwrap();
    rig.pass().await;
    assert!(
        rig.sent("chat").await.is_empty(),
        "nothing silenced is replayed"
    );
    rig.feed(failure("web01"), &["chat"]).await;
    assert_eq!(rig.sent("chat").await.len(), 1, "the silence has ended");
}

#[tokio::test(start_paused = true)]
async fn metrics_count_what_dispatch_decided() {
    let mut rig = Rig::new(Policy::default()).await;
    for _ in 0..3 {
        rig.feed(failure("web01"), &["chat"]).await;
    }
    let text = rig.metrics.encode(&[]);
    assert!(
        text.contains("herald_dispatched_total{outcome=\"notified\"} 1"),
        "{text}"
    );
    assert!(text.contains("herald_dispatched_total{outcome=\"folded\"} 2"));
}
