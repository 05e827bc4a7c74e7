//! The alert-management benchmark: `cargo bench --bench dispatch`.
//!
//! Runs the dispatch stage in-process against the real SQLite store, with sinks built from
//! a real configuration, and prints:
//! (a) 30 identical cron failures a minute apart, followed for a day: SMS per phone (two
//!     phones). Target: ≤ 2.
//! (b) a storm of 12 hosts failing within 5 s, grouped by `["kind", "command"]`, followed for
//!     ten minutes: Slack posts, and how many of the 12 hosts they name. Target: ≤ 3 posts
//!     naming all 12.
//! (c) 1,000 mixed alerts (300 problems over 60 hosts and 5 jobs, in a seeded random order)
//!     through dispatch one at a time, on the wall clock: the time from the ingest commit to
//!     the outbox rows committed, p50 and p99, for first alerts and for all; beside the same
//!     run with folding off (`repeat_interval = "0s"`, the plain fan-out), so the difference
//!     is what alert management adds; and the process's peak RSS. Target: < 2 ms p50 added.
//!
//! (a) and (b) run on tokio's paused clock, so a day passes in well under a second.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use herald::config::Config;
use herald::dispatch::{Clock, Dispatcher, Fanout};
use herald::metrics::Metrics;
use herald::store::{self, Access, Batch, Fetched, MailboxId, Routed, Store};
use herald_bridges::{Alert, Sink};
use tokio::sync::Notify;

const SINKS: &str = r#"
[sinks.sms]
type = "twilio"
account_sid = "AC00000000000000000000000000000000"
auth_token = "secret"
from = "+15005550006"
to = ["+15551230001", "+15551230002"]
api_base = "http://127.0.0.1:9"

[sinks.slack]
type = "slack"
webhook_url = "http://127.0.0.1:9/hook"
"#;

/// A store, a dispatcher for `lifecycle` (TOML lines for `[defaults]`), and the uid counter.
struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    dispatcher: Dispatcher,
    uid: u32,
}

async fn rig(lifecycle: &str) -> Result<Rig> {
    let dir = tempfile::tempdir()?;
    let text = format!(
        "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
         [state]\npath = \"{}\"\n[defaults]\nsinks = [\"slack\"]\n{lifecycle}\n{SINKS}",
        dir.path().join("herald.db").display()
    );
    let config = Config::parse(Path::new("bench.toml"), &text, &|_| None)?;
    let store = store::open(config.state.path.clone(), Access::Daemon).await?;
    let mut sinks: Vec<(String, Box<dyn Sink>)> = Vec::new();
    for (name, sink) in &config.sinks {
        sinks.push((name.clone(), sink.build()?));
    }
    let fanout = Fanout::new(sinks.iter().map(|(n, s)| (n.clone(), &**s)));
    let dispatcher = Dispatcher::new(
        store.clone(),
        fanout,
        config.policies.clone(),
        Arc::new(Notify::new()),
        Metrics::new(),
        Clock::start(),
    );
    Ok(Rig {
        _dir: dir,
        store,
        dispatcher,
        uid: 0,
    })
}

impl Rig {
    /// Commits `alert` as ingest does.
    async fn commit(&mut self, alert: Alert, sinks: &[&str]) -> Result<()> {
        self.uid += 1;
        self.store
            .commit(Batch {
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
            })
            .await?;
        Ok(())
    }

    /// The timers and every waiting alert, as the daemon's loop runs them.
    async fn pass(&self) -> Result<()> {
        self.dispatcher.run_timers().await?;
        while self.dispatcher.dispatch_waiting().await? > 0 {}
        Ok(())
    }

    /// The rows `sink` has, claimed and marked sent.
    async fn sent(&self, sink: &str) -> Result<Vec<(String, Alert)>> {
        let due = self.store.claim(sink, i64::MAX, 10_000).await?;
        for d in &due {
            self.store.mark_sent(d.id).await?;
        }
        Ok(due.into_iter().map(|d| (d.target, d.alert)).collect())
    }

    /// Moves the paused clock by `total` in `step`s, running passes on the way.
    async fn follow(&self, total: Duration, step: Duration) -> Result<()> {
        let mut passed = Duration::ZERO;
        while passed < total {
            tokio::time::advance(step).await;
            passed += step;
            self.pass().await?;
        }
        Ok(())
    }
}

fn cron_failure(host: &str, command: &str) -> Alert {
    let mut alert = Alert::sample();
    alert.host = Some(host.to_owned());
    alert.command = Some(command.to_owned());
    alert.title = format!("cron on {host}: {command}");
    alert.dedup_key = format!("cron:{host}:root:{command}");
    alert
}

async fn repeats() -> Result<()> {
    let mut rig = rig("").await?;
    let mut per_phone = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        rig.commit(cron_failure("web01", "/usr/local/bin/backup.sh"), &["sms"])
            .await?;
        rig.pass().await?;
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    rig.follow(Duration::from_secs(24 * 3600), Duration::from_secs(60))
        .await?;
    let sent = rig.sent("sms").await?;
    for (target, _) in &sent {
        *per_phone.entry(target.clone()).or_default() += 1;
    }
    let reminder = sent
        .iter()
        .find_map(|(_, a)| a.repeats.as_ref().map(|_| a.summary.clone()))
        .unwrap_or_default();
    println!(
        "(a) 30 identical failures, followed for 24 h: SMS per phone {:?} (target ≤ 2); reminder: {reminder:?}",
        per_phone.values().collect::<Vec<_>>()
    );
    Ok(())
}

async fn storm() -> Result<()> {
    let mut rig = rig("group_by = [\"kind\", \"command\"]").await?;
    for i in 0..12 {
        rig.commit(
            cron_failure(&format!("web{i:02}"), "/usr/local/bin/backup.sh"),
            &["slack"],
        )
        .await?;
        rig.pass().await?;
        tokio::time::advance(Duration::from_millis(400)).await;
    }
    rig.follow(Duration::from_secs(600), Duration::from_secs(1))
        .await?;
    let posts = rig.sent("slack").await?;
    let mut named = BTreeSet::new();
    for (_, alert) in &posts {
        named.extend(alert.host.clone());
        named.extend(alert.digest.iter().filter_map(|m| m.host.clone()));
    }
    println!(
        "(b) storm of 12 hosts in 5 s, grouped by kind and command: {} Slack posts naming {} of 12 hosts (target ≤ 3 naming 12)",
        posts.len(),
        named.len()
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Dispatch times of 1,000 mixed alerts, first alerts and all.
async fn mixed(lifecycle: &str) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut rig = rig(lifecycle).await?;
    let mut rng = fastrand::Rng::with_seed(10);
    let jobs = [
        "/usr/local/bin/backup.sh",
        "certbot renew",
        "/usr/sbin/logrotate",
        "apt-get update",
        "run-parts /etc/cron.daily",
    ];
    let mut seen = BTreeSet::new();
    let (mut first, mut all) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        // 300 problems: 60 hosts × 5 jobs.
        let host = format!("host{:02}", rng.usize(..60));
        let job = jobs[rng.usize(..jobs.len())];
        let mut alert = cron_failure(&host, job);
        if rng.u8(..10) == 0 {
            alert.failed = Some(false);
            alert.severity = herald_bridges::Severity::Info;
        }
        let is_first = seen.insert(alert.dedup_key.clone());
        rig.commit(alert, &["slack", "sms"]).await?;
        let start = Instant::now();
        rig.dispatcher.dispatch_waiting().await?;
        let took = start.elapsed();
        all.push(took);
        if is_first {
            first.push(took);
        }
    }
    first.sort();
    all.sort();
    Ok((first, all))
}

fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM")
}

fn main() -> Result<()> {
    println!("herald dispatch benchmark (SQLite state, sinks built from a configuration)");
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    paused.block_on(async {
        repeats().await?;
        storm().await
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let before = peak_rss_kib()?;
        let (plain_first, plain_all) = mixed("repeat_interval = \"0s\"").await?;
        let (first, all) = mixed("").await?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "(c) 1,000 mixed alerts, commit to rows committed: first alerts p50 {:.2} ms p99 {:.2} ms (n = {}); all p50 {:.2} ms p99 {:.2} ms",
            ms(percentile(&first, 0.5)),
            ms(percentile(&first, 0.99)),
            first.len(),
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 0.99)),
        );
        println!(
            "    plain fan-out (repeat_interval = 0s): first p50 {:.2} ms p99 {:.2} ms; added by alert management: p50 {:+.2} ms (target < 2 ms)",
            ms(percentile(&plain_first, 0.5)),
            ms(percentile(&plain_first, 0.99)),
            ms(percentile(&first, 0.5)) - ms(percentile(&plain_first, 0.5)),
        );
        let _ = plain_all;
        println!(
            "    peak RSS of the benchmark process: {} KiB before, {} KiB after",
            before,
            peak_rss_kib()?
        );
        Ok(())
    })
}
