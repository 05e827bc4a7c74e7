//! The foundation benchmark: `cargo bench --bench pipeline`.
//!
//! Starts a private Dovecot and a loopback webhook receiver, runs the herald binary against
//! them, and prints in one run:
//! (a) latency from APPEND confirmed to webhook received, p50 and p99, beside Dovecot's own
//!     IDLE notice latency measured by a raw IDLE client in the same run (Dovecot holds
//!     notices for 500 ms by design, so that is the floor);
//! (b) the time to drain 10,000 messages already in the mailbox at start;
//! (c) herald's peak RSS (VmHWM) in each phase, and what each extra watched mailbox adds
//!     (one folder, then nine, each with a message delivered so every session has worked);
//! (d) the hostile corpus: a 50 MB message, one of 100,000 MIME parts, one nested 5,000
//!     multiparts deep and one with 100,000 header lines, then a cron failure; herald's peak
//!     RSS while it alerts on all five, and that it stays up;
//! (e) the push path: Dovecot running herald's push script (`dist/dovecot/herald-push.lua`),
//!     latency from APPEND confirmed to webhook received, p50 and p99, beside Dovecot's own
//!     IDLE notice to a raw client in the same run.
//! Targets: p50 within 5 ms of Dovecot's notice; ≥ 4,000 messages/s drained; peak RSS ≤ 15 MB
//! with one mailbox; at most 1 MB more per extra mailbox; with the push, p50 ≤ 10 ms and at
//! most 1/20 of Dovecot's notice.
//! `HERALD_BENCH_LATENCY_N`, `HERALD_BENCH_DRAIN_N` and `HERALD_BENCH_PUSH_N` change the
//! message counts; `HERALD_BENCH_PHASES` (e.g. `e` or `a,e`) runs only those phases;
//! `HERALD_BENCH_BIN` runs another herald binary than this build's, e.g. the static musl build
//! the container image and the Debian package ship (its RSS is what a deployment sees:
//! no shared C library mapped beside it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use herald_testkit::{plain_mail, Dovecot, HeraldProcess, Push, RawImap, Receiver};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; any other argument is a filter for another harness.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            let latency_n = count("HERALD_BENCH_LATENCY_N", 60);
            let drain_n = count("HERALD_BENCH_DRAIN_N", 10_000);
            let push_n = count("HERALD_BENCH_PUSH_N", 60);
            let phases = std::env::var("HERALD_BENCH_PHASES").unwrap_or_default();
            let run =
                |phase: &str| phases.is_empty() || phases.split(',').any(|p| p.trim() == phase);
            println!("herald pipeline benchmark (Dovecot on loopback, webhook sink)");
            println!("    binary: {}", herald_binary().display());
            if run("a") {
                latency(latency_n).await?;
            }
            if run("b") {
                drain(drain_n).await?;
            }
            if run("c") {
                mailboxes().await?;
            }
            if run("d") {
                hostile().await?;
            }
            if run("e") {
                push(push_n).await?;
            }
            Ok(())
        })
}

fn config(dir: &Path, dovecot: &Dovecot, receiver: &Receiver) -> Result<PathBuf> {
    config_with(dir, dovecot, receiver, "")
}

/// [`config`] with extra `[imap]` lines.
fn config_with(dir: &Path, dovecot: &Dovecot, receiver: &Receiver, imap: &str) -> Result<PathBuf> {
    let path = dir.join("herald.toml");
    std::fs::write(
        &path,
        format!(
            "[imap]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{}\"\npassword = \"{}\"\n{imap}\n\
             [state]\npath = \"{}\"\n[defaults]\nsinks = [\"hook\"]\n\
             [sinks.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
            dovecot.port(),
            dovecot.user(),
            dovecot.password(),
            dir.join("herald.db").display(),
            receiver.url()
        ),
    )?;
    Ok(path)
}

/// The herald binary measured: `HERALD_BENCH_BIN`, or this build's.
fn herald_binary() -> PathBuf {
    std::env::var_os("HERALD_BENCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_herald")),
        PathBuf::from,
    )
}

fn start(config: &Path) -> Result<HeraldProcess> {
    HeraldProcess::spawn(
        &herald_binary(),
        &["run", "-c", config.to_str().context("path")?],
        &[("HERALD_LOG", "warn")],
    )
}

/// Peak resident set size of `pid`, in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// p50 and p99 of `sorted`.
fn p50_p99(sorted: &[Duration]) -> (Duration, Duration) {
    (percentile(sorted, 0.5), percentile(sorted, 0.99))
}

/// After a warm-up message (herald's first start and first IDLE), appends `n` messages titled
/// `"{label} {i}"` and returns, sorted, how long after each APPEND was confirmed the webhook
/// received its alert and the raw client heard Dovecot's IDLE notice.
async fn timed_appends(
    dovecot: &Dovecot,
    receiver: &mut Receiver,
    raw: &mut RawImap,
    label: &str,
    n: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    dovecot
        .append("INBOX", &plain_mail("warm-up", "x\n"))
        .await?;
    receiver.next(Duration::from_secs(30)).await?;
    raw.idle_wait_exists(Duration::from_secs(5)).await?;

    let mut herald_latency = Vec::with_capacity(n);
    let mut dovecot_latency = Vec::with_capacity(n);
    for i in 0..n {
        // Space the messages beyond Dovecot's 500 ms coalescing window: herald's \Seen STORE
        // on the previous message starts that window for the raw client too, and an append
        // inside it would be announced early, making Dovecot's own latency look shorter than
        // it is. Real system mail is this sparse.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let title = format!("{label} {i}");
        dovecot.append("INBOX", &plain_mail(&title, "x\n")).await?;
        let confirmed = Instant::now();
        // Both at once: through IDLE the notice comes first, through a push the alert does.
        let ((_, noticed), got) = tokio::try_join!(
            raw.idle_wait_exists(Duration::from_secs(5)),
            receiver.next(Duration::from_secs(10))
        )?;
        if got.body["title"] != title.as_str() {
            bail!("out of order: {}", got.body["title"]);
        }
        dovecot_latency.push(noticed.duration_since(confirmed));
        herald_latency.push(got.at.saturating_duration_since(confirmed));
    }
    herald_latency.sort();
    dovecot_latency.sort();
    Ok((herald_latency, dovecot_latency))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn latency(n: usize) -> Result<()> {
    let dovecot = Dovecot::start().await?;
    let mut receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let mut herald = start(&config(dir.path(), &dovecot, &receiver)?)?;
    let mut raw = RawImap::connect(dovecot.port(), dovecot.user(), dovecot.password()).await?;
    raw.select("INBOX").await?;
    raw.idle_start().await?;

    let (herald_latency, dovecot_latency) =
        timed_appends(&dovecot, &mut receiver, &mut raw, "latency", n).await?;
    let rss = peak_rss_kib(herald.pid())?;
    herald.sigterm()?;
    herald.wait_exit(Duration::from_secs(30)).await?;
    raw.idle_done().await?;

    let (h50, h99) = p50_p99(&herald_latency);
    let (d50, d99) = p50_p99(&dovecot_latency);
    println!();
    println!("(a) APPEND confirmed -> alert received, {n} messages");
    println!(
        "    Dovecot's own IDLE notice (raw client): p50 {}  p99 {}",
        ms(d50),
        ms(d99)
    );
    println!(
        "    herald, webhook received:               p50 {}  p99 {}",
        ms(h50),
        ms(h99)
    );
    println!(
        "    herald p50 over Dovecot's notice:       {}   (target: within 5 ms)",
        ms(h50.saturating_sub(d50))
    );
    println!("    herald peak RSS: {:.1} MB", rss as f64 / 1024.0);
    Ok(())
}

async fn drain(n: usize) -> Result<()> {
    let dovecot = Dovecot::start().await?;
    let mut receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let config = config(dir.path(), &dovecot, &receiver)?;

    // Fill the mailbox before herald starts. APPEND costs Dovecot an fsync per message (10,000
    // take a minute or more), so the messages are written straight into the Maildir's new/
    // directory, as a local delivery agent would; Dovecot gives them UIDs when herald selects
    // the folder.
    let mut raw = RawImap::connect(dovecot.port(), dovecot.user(), dovecot.password()).await?;
    raw.select("INBOX").await?;
    raw.logout().await?;
    let new = dovecot.dir().join("mail").join(dovecot.user()).join("new");
    for i in 0..n {
        let body = format!("job output line {i}\nerror: something failed\n");
        // One job per message: each is its own problem, so dispatch notifies every one (with
        // repeats of one job it would fold them, and the drain would deliver a handful).
        let command = format!("/usr/local/bin/job-{i}");
        let mail = herald_testkit::cron_mail("web01.example.net", "root", &command, &body);
        let path = new.join(format!("1700000000.M{i}P1.bench"));
        std::fs::write(&path, mail).with_context(|| format!("writing {}", path.display()))?;
        std::os::unix::fs::chown(&path, Some(65534), Some(65534))?;
    }
    println!();
    println!("(b) drain: {n} messages already in the mailbox at start");

    let started = Instant::now();
    let mut herald = start(&config)?;
    let mut first = None;
    for i in 0..n {
        receiver
            .next(Duration::from_secs(60))
            .await
            .with_context(|| format!("after {i} alerts\n{}", herald.stderr()))?;
        first.get_or_insert_with(|| started.elapsed());
    }
    let elapsed = started.elapsed();
    let rss = peak_rss_kib(herald.pid())?;
    herald.sigterm()?;
    herald.wait_exit(Duration::from_secs(30)).await?;
    println!(
        "    herald start -> all {n} alerts received: {:.2} s = {:.0} messages/s   (target: >= 4000/s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!("    first alert after {}", ms(first.unwrap_or_default()));
    println!(
        "    herald peak RSS: {:.1} MB   (target: <= 15 MB)",
        rss as f64 / 1024.0
    );
    Ok(())
}

/// The hostile corpus, each message as written: what strangers can put in a mailbox.
fn hostile_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let head = |subject: &str, content_type: &str| {
        format!(
            "From: stranger@example.org\r\nTo: root@localhost\r\nSubject: {subject}\r\n\
             Message-ID: <{subject}@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n"
        )
    };
    let mut huge = head("huge", "text/plain").into_bytes();
    let line = b"0123456789 the quick brown fox jumps over the lazy dog 0123456789\r\n";
    while huge.len() < 50 << 20 {
        huge.extend_from_slice(line);
    }
    let mut parts = head("parts", "multipart/mixed; boundary=\"b\"");
    for i in 0..100_000 {
        parts.push_str(&format!(
            "--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
        ));
    }
    parts.push_str("--b--\r\n");
    let mut nested = head("nested", "multipart/mixed; boundary=\"n0\"");
    for i in 1..5_000 {
        nested.push_str(&format!(
            "--n{}\r\nContent-Type: multipart/mixed; boundary=\"n{i}\"\r\n\r\n",
            i - 1
        ));
    }
    nested.push_str("--n4999\r\nContent-Type: text/plain\r\n\r\ndeep\r\n");
    let mut headers = String::from("From: stranger@example.org\r\nSubject: headers\r\n");
    for i in 0..100_000 {
        headers.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    headers.push_str("\r\nbody\r\n");
    let sentinel = herald_testkit::cron_mail(
        "web01.example.net",
        "root",
        "/usr/local/bin/after-the-storm",
        "error: still here\n",
    );
    vec![
        ("huge", huge),
        ("parts", parts.into_bytes()),
        ("nested", nested.into_bytes()),
        ("headers", headers.into_bytes()),
        ("sentinel", sentinel),
    ]
}

async fn hostile() -> Result<()> {
    let dovecot = Dovecot::start().await?;
    let mut receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let config = config(dir.path(), &dovecot, &receiver)?;
    let mut raw = RawImap::connect(dovecot.port(), dovecot.user(), dovecot.password()).await?;
    raw.select("INBOX").await?;
    raw.logout().await?;
    // Written straight into the Maildir (as a local delivery agent would), in order.
    let new = dovecot.dir().join("mail").join(dovecot.user()).join("new");
    let corpus = hostile_corpus();
    for (i, (_, mail)) in corpus.iter().enumerate() {
        let path = new.join(format!("1700000000.M{i}P1.hostile"));
        std::fs::write(&path, mail)?;
        std::os::unix::fs::chown(&path, Some(65534), Some(65534))?;
    }
    println!();
    println!("(d) hostile corpus: 50 MB message, 100,000 parts, 5,000-deep nesting, 100,000 headers, then a cron failure");
    let mut herald = start(&config)?;
    for (name, _) in &corpus {
        receiver
            .next(Duration::from_secs(60))
            .await
            .with_context(|| format!("no alert for {name}\n{}", herald.stderr()))?;
    }
    let rss = peak_rss_kib(herald.pid())?;
    herald.sigterm()?;
    let status = herald.wait_exit(Duration::from_secs(30)).await?;
    println!(
        "    all {} alerted; herald exited {status} at SIGTERM; peak RSS: {:.1} MB   (target: <= 15 MB)",
        corpus.len(),
        rss as f64 / 1024.0
    );
    Ok(())
}

/// Peak RSS of herald watching `folders` folders, each having delivered one message.
async fn rss_with_folders(folders: usize) -> Result<u64> {
    let dovecot = Dovecot::start().await?;
    let mut receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let mut names = vec!["INBOX".to_owned()];
    for i in 1..folders {
        let name = format!("Folder{i}");
        dovecot.create_mailbox(&name).await?;
        names.push(name);
    }
    let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let imap = format!("mailboxes = [{}]", list.join(", "));
    let mut herald = start(&config_with(dir.path(), &dovecot, &receiver, &imap)?)?;
    for name in &names {
        dovecot
            .append(name, &plain_mail(&format!("hello from {name}"), "x\n"))
            .await?;
    }
    for i in 0..names.len() {
        receiver
            .next(Duration::from_secs(30))
            .await
            .with_context(|| format!("after {i} alerts\n{}", herald.stderr()))?;
    }
    let rss = peak_rss_kib(herald.pid())?;
    herald.sigterm()?;
    herald.wait_exit(Duration::from_secs(30)).await?;
    Ok(rss)
}

async fn mailboxes() -> Result<()> {
    const MANY: usize = 9;
    let one = rss_with_folders(1).await?;
    let many = rss_with_folders(MANY).await?;
    let per_extra = (many.saturating_sub(one)) as f64 / (MANY - 1) as f64;
    println!();
    println!("(c) several mailboxes: one IDLE session per folder");
    println!(
        "    peak RSS with 1 folder: {:.1} MB; with {MANY} folders: {:.1} MB",
        one as f64 / 1024.0,
        many as f64 / 1024.0
    );
    println!(
        "    per extra mailbox: {:.0} KB   (target: <= 1 MB)",
        per_extra
    );
    Ok(())
}

async fn push(n: usize) -> Result<()> {
    let port = herald_testkit::free_port();
    let dovecot = Dovecot::start_push(Push {
        url: format!("http://127.0.0.1:{port}/push"),
        script: Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/dovecot/herald-push.lua"),
        token: None,
    })
    .await?;
    let mut receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let path = config(dir.path(), &dovecot, &receiver)?;
    let text = std::fs::read_to_string(&path)?.replace(
        "[defaults]",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[defaults]"),
    );
    std::fs::write(&path, text)?;
    let mut herald = start(&path)?;
    let mut raw = RawImap::connect(dovecot.port(), dovecot.user(), dovecot.password()).await?;
    raw.select("INBOX").await?;
    raw.idle_start().await?;

    // herald's port is open once the warm-up alerted.
    let (herald_latency, dovecot_latency) =
        timed_appends(&dovecot, &mut receiver, &mut raw, "push", n).await?;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    herald.sigterm()?;
    herald.wait_exit(Duration::from_secs(30)).await?;
    raw.idle_done().await?;

    let (h50, h99) = p50_p99(&herald_latency);
    let (d50, d99) = p50_p99(&dovecot_latency);
    let fetches = metrics
        .lines()
        .find_map(|l| l.strip_prefix("herald_push_fetches_total "))
        .unwrap_or("?")
        .trim()
        .to_owned();
    println!();
    println!("(e) push: APPEND confirmed -> alert received, {n} messages, Dovecot push_notification (Lua) -> POST /push");
    println!(
        "    Dovecot's own IDLE notice (raw client): p50 {}  p99 {}",
        ms(d50),
        ms(d99)
    );
    println!(
        "    herald via push, webhook received:      p50 {}  p99 {}",
        ms(h50),
        ms(h99)
    );
    println!(
        "    herald p50 / Dovecot's notice p50:      1/{:.0}   (target: p50 <= 10 ms and <= 1/20)",
        d50.as_secs_f64() / h50.as_secs_f64().max(1e-6)
    );
    println!("    fetches started by a push: {fetches}");
    Ok(())
}
