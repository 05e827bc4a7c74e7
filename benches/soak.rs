//! The soak test (reliability.md G13), a command rather than a test, in two modes:
//!
//! ```sh
//! cargo bench --bench soak -- 10      # minutes of chaos
//! cargo bench --bench soak -- kills   # 20 SIGKILLs in a 300-message stream, 200 ms sink
//! ```
//!
//! Without a mode it does nothing, so that a plain `cargo bench` (which passes only `--bench`)
//! does not start a ten-minute soak.
//!
//! Both modes run a private Dovecot, a loopback webhook receiver as the oracle and the herald
//! binary with one webhook sink, so one sink worker with up to [`IN_FLIGHT`] deliveries in
//! flight: since each delivery is marked `sent` as soon as its sink confirmed it, a SIGKILL
//! repeats at most the deliveries in flight, and the bound is **duplicates ≤ kills ×
//! IN_FLIGHT**. Both print duplicates per kill beside that bound.
//!
//! *Minutes of chaos*: fault-injecting proxies sit on the IMAP link and on the sink link. A
//! producer appends uniquely marked mail throughout, while a chaos loop SIGKILLs herald,
//! restarts Dovecot and switches proxy faults (black hole, reset, cut, refuse, delay). When
//! the chaos stops, every fault is cleared and the oracle is given two minutes to see
//! everything. It prints what was produced, lost and duplicated, duplicates per kill, and the
//! latency of a fresh message — and exits non-zero if anything was lost. The bound is printed
//! but not enforced here: a sink link reset after the receiver saw a request also repeats it.
//!
//! *Kills* (the per-delivery acknowledgement scenario): no proxies; the receiver answers every
//! request 200 after holding it for 200 ms (recorded first, so a kill in that window repeats
//! it). 300 uniquely titled messages are appended every 50–100 ms, and herald is SIGKILLed
//! 20 times at random moments spread over the stream (one kill in each twentieth of it, at a
//! random message and a random delay after it) and restarted after each. Then it waits, under
//! a deadline, until every message reached the receiver and herald's outbox is empty, and
//! prints produced, delivered, lost, duplicated, kills and duplicates per kill — and exits
//! non-zero if anything was lost or if duplicates exceed kills.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use herald_testkit::{plain_mail, Dovecot, Fault, FaultProxy, HeraldProcess, Receiver};
use tokio::sync::RwLock;

/// Messages in the kills stream, SIGKILLs over it, and how long every sink answer takes: the
/// issue's scenario.
const KILL_MESSAGES: usize = 300;
const KILLS: usize = 20;
const SINK_DELAY: Duration = Duration::from_millis(200);

/// What the command line asks for.
enum Mode {
    /// Minutes of chaos.
    Chaos(f64),
    /// The kills scenario.
    Kills,
}

/// The first argument that is not a flag (cargo appends `--bench`), if it names a mode.
fn mode() -> Option<Mode> {
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'))?;
    if arg == "kills" {
        return Some(Mode::Kills);
    }
    arg.parse::<f64>()
        .ok()
        .filter(|m| m.is_finite() && *m > 0.0)
        .map(Mode::Chaos)
}

fn herald(config: &Path) -> Result<HeraldProcess> {
    HeraldProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_herald")),
        &["run", "-c", config.to_str().context("path")?],
        &[("HERALD_LOG", "warn")],
    )
}

/// Writes a configuration with one webhook sink, `hook`, and returns its path.
fn write_config(dir: &Path, imap_port: u16, sink_port: u16, sink_timeout: &str) -> Result<PathBuf> {
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[imap]\nhost = \"127.0.0.1\"\nport = {imap_port}\ntls = \"none\"\nusername = \"herald\"\npassword = \"secret\"\n\
             idle_keepalive = \"3s\"\ntimeout = \"3s\"\n\
             [state]\npath = \"{}\"\n[server]\nshutdown_timeout = \"2s\"\n[defaults]\nsinks = [\"hook\"]\n\
             [sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{sink_port}/hook\"\ntimeout = \"{sink_timeout}\"\n\
             retry_min = \"200ms\"\nretry_max = \"2s\"\n",
            dir.join("herald.db").display(),
        ),
    )?;
    Ok(config)
}

/// SIGKILLs herald, waits until it is gone, and starts it again.
async fn kill_and_restart(process: &mut HeraldProcess, config: &Path) -> Result<()> {
    process.kill()?;
    process.wait_exit(Duration::from_secs(10)).await?;
    *process = herald(config)?;
    Ok(())
}

fn delivered(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in receiver.received().into_iter().filter(|r| r.status == 200) {
        if let Some(title) = r.body["title"].as_str() {
            *counts.entry(title.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// Polls the receiver until every produced title arrived or `timeout` passed.
async fn settle(
    receiver: &Receiver,
    produced: &[String],
    timeout: Duration,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + timeout;
    let mut counts = delivered(receiver);
    while produced.iter().any(|t| !counts.contains_key(t)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        counts = delivered(receiver);
    }
    counts
}

/// What the oracle saw of the produced titles.
struct Tally<'a> {
    lost: Vec<&'a String>,
    duplicates: usize,
    unknown: usize,
}

fn tally<'a>(produced: &'a [String], counts: &HashMap<String, usize>) -> Tally<'a> {
    Tally {
        lost: produced
            .iter()
            .filter(|t| !counts.contains_key(*t))
            .collect(),
        duplicates: produced
            .iter()
            .filter_map(|t| counts.get(t))
            .map(|n| n - 1)
            .sum(),
        unknown: counts.keys().filter(|t| !produced.contains(t)).count(),
    }
}

impl Tally<'_> {
    /// The counts and duplicates per kill, as both modes print them.
    fn print(&self, produced: usize, kills: usize) {
        println!(
            "  produced {produced}, delivered {} (unique), lost {}, duplicated {}, unknown {}, kills {kills}",
            produced - self.lost.len(),
            self.lost.len(),
            self.duplicates,
            self.unknown
        );
        println!("  {}", per_kill(self.duplicates, kills));
    }

    /// Fails, naming them, if any message was lost.
    fn fail_if_lost(&self) -> Result<()> {
        if !self.lost.is_empty() {
            println!("  lost: {:?}", self.lost);
            anyhow::bail!("{} messages lost", self.lost.len());
        }
        Ok(())
    }
}

/// Deliveries a webhook sink has in flight at most: its default `concurrency`.
const IN_FLIGHT: usize = 4;

/// "duplicates per kill" and the bound, as both modes print them.
fn per_kill(duplicates: usize, kills: usize) -> String {
    let ratio = if kills == 0 {
        "n/a".to_owned()
    } else {
        format!("{:.2}", duplicates as f64 / kills as f64)
    };
    let verdict = if duplicates <= kills * IN_FLIGHT {
        "within"
    } else {
        "OVER"
    };
    format!(
        "duplicates per kill {ratio} ({duplicates} / {kills}); bound: one sink worker, so at most {IN_FLIGHT} deliveries in flight per kill: duplicates <= kills x {IN_FLIGHT} ({verdict})"
    )
}

/// Whether `herald outbox list` reports no undelivered row (so no repeat is still queued).
async fn outbox_empty(config: &Path) -> Result<bool> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["outbox", "-c", config.to_str().context("path")?, "list"])
        .env("HERALD_LOG", "warn")
        .output()
        .await
        .context("running herald outbox list")?;
    anyhow::ensure!(
        out.status.success(),
        "herald outbox list failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).contains("\n0 undelivered"))
}

#[tokio::main]
async fn main() -> Result<()> {
    match mode() {
        Some(Mode::Chaos(minutes)) => chaos(minutes).await,
        Some(Mode::Kills) => kills().await,
        None => {
            eprintln!(
                "soak: nothing to do; run `cargo bench --bench soak -- MINUTES` or `-- kills`"
            );
            Ok(())
        }
    }
}

/// The issue's scenario: 20 SIGKILLs in a 300-message stream with a 200 ms sink.
async fn kills() -> Result<()> {
    let dovecot = Arc::new(Dovecot::start().await?);
    let receiver = Receiver::start().await?;
    receiver.set_delay(SINK_DELAY);
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), dovecot.port(), receiver.port(), "5s")?;
    let mut herald_process = herald(&config)?;

    // The producer: KILL_MESSAGES uniquely titled messages, one every 50–100 ms.
    let appended = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (dovecot, appended) = (dovecot.clone(), appended.clone());
        tokio::spawn(async move {
            let mut titles = Vec::with_capacity(KILL_MESSAGES);
            for n in 0..KILL_MESSAGES {
                let title = format!("kills-{n}");
                let mail = plain_mail(&title, &format!("unique body {n}\n"));
                let mut attempt = 0;
                while let Err(e) = dovecot.append("INBOX", &mail).await {
                    attempt += 1;
                    if attempt >= 5 {
                        return Err(e.context(format!("appending {title}")));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                titles.push(title);
                appended.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(50..=100))).await;
            }
            anyhow::Ok(titles)
        })
    };

    // One kill in each twentieth of the stream: after a random message of it, plus a random
    // delay, so kills land anywhere in a delivery.
    let stream_start = Instant::now();
    let stream_deadline = stream_start + Duration::from_secs(120);
    let segment = KILL_MESSAGES / KILLS;
    let mut kills = 0;
    for i in 0..KILLS {
        let target = i * segment + fastrand::usize(1..=segment);
        while appended.load(Ordering::SeqCst) < target {
            anyhow::ensure!(
                Instant::now() < stream_deadline && !producer.is_finished(),
                "the stream stalled at {} of {KILL_MESSAGES} messages",
                appended.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..100))).await;
        kill_and_restart(&mut herald_process, &config).await?;
        kills += 1;
    }
    let produced = producer.await??;
    let stream = stream_start.elapsed();

    // Everything must arrive; then the outbox must be empty, so that no repeat is still queued
    // and the count of duplicates is final.
    let drain_start = Instant::now();
    let counts = settle(&receiver, &produced, Duration::from_secs(180)).await;
    let outbox_deadline = Instant::now() + Duration::from_secs(30);
    let mut drained = false;
    while Instant::now() < outbox_deadline {
        if outbox_empty(&config).await? {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain = drain_start.elapsed();
    herald_process.sigterm()?;
    herald_process.wait_exit(Duration::from_secs(10)).await?;
    let counts = if drained {
        delivered(&receiver)
    } else {
        counts
    };
    let tally = tally(&produced, &counts);

    println!(
        "herald soak, kills: {KILL_MESSAGES} messages every 50-100 ms, {KILLS} SIGKILLs, sink answers after {} ms",
        SINK_DELAY.as_millis()
    );
    println!(
        "  stream {:.1} s, then everything delivered {:.1} s later{}",
        stream.as_secs_f64(),
        drain.as_secs_f64(),
        if drained { "" } else { " (outbox NOT empty)" }
    );
    tally.print(produced.len(), kills);
    tally.fail_if_lost()?;
    if tally.duplicates > kills * IN_FLIGHT {
        anyhow::bail!(
            "{} duplicates from {kills} kills: more than the deliveries in flight",
            tally.duplicates
        );
    }
    anyhow::ensure!(
        drained,
        "herald's outbox was not empty 30 s after everything arrived"
    );
    Ok(())
}

/// Minutes of chaos: kills, Dovecot restarts and link faults.
async fn chaos(minutes: f64) -> Result<()> {
    let dovecot = Arc::new(RwLock::new(Dovecot::start().await?));
    let receiver = Receiver::start().await?;
    let port = dovecot.read().await.port();
    let imap_proxy = FaultProxy::start(([127, 0, 0, 1], port).into()).await?;
    let sink_proxy = FaultProxy::start(([127, 0, 0, 1], receiver.port()).into()).await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), imap_proxy.port(), sink_proxy.port(), "2s")?;
    let mut herald_process = herald(&config)?;
    herald_process
        .wait_for_stderr("", Duration::from_secs(1))
        .await
        .ok();

    // The producer: one uniquely marked message every ~100 ms, retried while Dovecot restarts.
    let produced = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let producer = {
        let (dovecot, produced, stop) = (dovecot.clone(), produced.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let title = format!("soak-{n}");
                let mail = plain_mail(&title, &format!("unique body {n}\n"));
                if dovecot.read().await.append("INBOX", &mail).await.is_ok() {
                    if let Ok(mut p) = produced.lock() {
                        p.push(title);
                    }
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(fastrand::u64(20..180))).await;
            }
        })
    };

    let (mut kills, mut restarts, mut imap_faults, mut sink_faults) = (0, 0, 0, 0);
    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(2000..8000))).await;
        match fastrand::u8(0..4) {
            0 => {
                kill_and_restart(&mut herald_process, &config).await?;
                kills += 1;
            }
            1 => {
                dovecot.write().await.restart().await?;
                restarts += 1;
            }
            2 => {
                let fault = [
                    Fault::BlackHole,
                    Fault::Reset,
                    Fault::CutAfter(fastrand::usize(1..4000)),
                    Fault::Refuse,
                ][fastrand::usize(0..4)];
                imap_proxy.set(fault);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(500..5000))).await;
                imap_proxy.set(Fault::Pass);
                imap_faults += 1;
            }
            _ => {
                let fault = [
                    Fault::BlackHole,
                    Fault::Refuse,
                    Fault::Reset,
                    Fault::Delay(Duration::from_millis(700)),
                ][fastrand::usize(0..4)];
                sink_proxy.set(fault);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(500..5000))).await;
                sink_proxy.set(Fault::Pass);
                sink_faults += 1;
            }
        }
    }
    stop.cancel();
    producer.await?;
    imap_proxy.set(Fault::Pass);
    sink_proxy.set(Fault::Pass);

    let produced: Vec<String> = produced.lock().map(|p| p.clone()).unwrap_or_default();
    let counts = settle(&receiver, &produced, Duration::from_secs(120)).await;
    let tally = tally(&produced, &counts);

    let fresh_start = Instant::now();
    dovecot
        .read()
        .await
        .append("INBOX", &plain_mail("fresh", "x\n"))
        .await?;
    let mut fresh = None;
    while Instant::now() < fresh_start + Duration::from_secs(30) {
        if delivered(&receiver).contains_key("fresh") {
            fresh = Some(fresh_start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    herald_process.sigterm()?;
    herald_process.wait_exit(Duration::from_secs(10)).await?;

    println!("herald soak: {minutes} min of chaos");
    println!("  chaos: {kills} herald kills (SIGKILL), {restarts} Dovecot restarts, {imap_faults} IMAP link faults, {sink_faults} sink link faults");
    tally.print(produced.len(), kills);
    println!(
        "  (not enforced here: a sink link reset after the receiver saw a request repeats it too)"
    );
    match fresh {
        Some(latency) => println!(
            "  a fresh message after the chaos: delivered in {:.0} ms",
            latency.as_secs_f64() * 1000.0
        ),
        None => println!("  a fresh message after the chaos: NOT delivered within 30 s"),
    }
    tally.fail_if_lost()?;
    if fresh.is_none() {
        anyhow::bail!("herald did not recover");
    }
    Ok(())
}
