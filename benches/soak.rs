//! The soak test (reliability.md G13), a command rather than a test:
//!
//! ```sh
//! cargo bench --bench soak -- 10      # minutes of chaos
//! ```
//!
//! Without a number of minutes it does nothing, so that a plain `cargo bench` does not start
//! a ten-minute soak.
//!
//! A private Dovecot, a loopback webhook receiver as the oracle, fault-injecting proxies on the
//! IMAP link and on the sink link, and the herald binary. A producer appends uniquely marked
//! mail throughout, while a chaos loop SIGKILLs herald, restarts Dovecot and switches proxy
//! faults (black hole, reset, cut, refuse, delay). When the chaos stops, every fault is
//! cleared and the oracle is given two minutes to see everything. It prints what was produced,
//! lost and duplicated, and the latency of a fresh message — and exits non-zero if anything
//! was lost.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use herald_testkit::{plain_mail, Dovecot, Fault, FaultProxy, HeraldProcess, Receiver};
use tokio::sync::RwLock;

fn herald(config: &Path) -> Result<HeraldProcess> {
    HeraldProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_herald")),
        &["run", "-c", config.to_str().context("path")?],
        &[("HERALD_LOG", "warn")],
    )
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

#[tokio::main]
async fn main() -> Result<()> {
    let minutes: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10.0);
    let dovecot = Arc::new(RwLock::new(Dovecot::start().await?));
    let receiver = Receiver::start().await?;
    let port = dovecot.read().await.port();
    let imap_proxy = FaultProxy::start(([127, 0, 0, 1], port).into()).await?;
    let sink_proxy = FaultProxy::start(([127, 0, 0, 1], receiver.port()).into()).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[imap]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"herald\"\npassword = \"secret\"\n\
             idle_keepalive = \"3s\"\ntimeout = \"3s\"\n\
             [state]\npath = \"{}\"\n[server]\nshutdown_timeout = \"2s\"\n[defaults]\nsinks = [\"hook\"]\n\
             [sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\ntimeout = \"2s\"\n\
             retry_min = \"200ms\"\nretry_max = \"2s\"\n",
            imap_proxy.port(),
            dir.path().join("herald.db").display(),
            sink_proxy.port()
        ),
    )?;
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
                herald_process.kill()?;
                herald_process.wait_exit(Duration::from_secs(10)).await?;
                herald_process = herald(&config)?;
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
    let settle = Instant::now() + Duration::from_secs(120);
    let mut counts = delivered(&receiver);
    while produced.iter().any(|t| !counts.contains_key(t)) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(200)).await;
        counts = delivered(&receiver);
    }
    let lost: Vec<&String> = produced
        .iter()
        .filter(|t| !counts.contains_key(*t))
        .collect();
    let duplicates: usize = produced
        .iter()
        .filter_map(|t| counts.get(t))
        .map(|n| n - 1)
        .sum();
    let unknown = counts.keys().filter(|t| !produced.contains(t)).count();

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
    println!(
        "  produced {}, delivered {}, lost {}, duplicated {}, unknown {}",
        produced.len(),
        produced.len() - lost.len(),
        lost.len(),
        duplicates,
        unknown
    );
    match fresh {
        Some(latency) => println!(
            "  a fresh message after the chaos: delivered in {:.0} ms",
            latency.as_secs_f64() * 1000.0
        ),
        None => println!("  a fresh message after the chaos: NOT delivered within 30 s"),
    }
    if !lost.is_empty() {
        println!("  lost: {lost:?}");
        anyhow::bail!("{} messages lost", lost.len());
    }
    if fresh.is_none() {
        anyhow::bail!("herald did not recover");
    }
    Ok(())
}
