//! Test messages shaped like the mail herald really gets: [`cron_mail`] reproduces what
//! Debian's cron (`cron` 3.0pl1) sends when a job prints output, [`plain_mail`] is an
//! ordinary message. Both use CRLF line endings, as IMAP transmits messages, and carry a
//! Message-Id unique within and across test processes.

use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes messages generated in the same nanosecond by the same process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Every `.eml` file under `dir`, recursively, in a stable (sorted) order: the golden corpus
/// for the corpus test, the property tests' seeds and the classification benchmark.
pub fn eml_files(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use anyhow::Context as _;
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort();
    let mut files = Vec::new();
    for path in entries {
        if path.is_dir() {
            files.extend(eml_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "eml") {
            files.push(path);
        }
    }
    Ok(files)
}

/// A Debian cron mail for job `command` run as `user` on `host` (a FQDN; the subject
/// uses its first label, as cron does), with `body` as the job's output.
pub fn cron_mail(host: &str, user: &str, command: &str, body: &str) -> Vec<u8> {
    let short = host.split('.').next().unwrap_or(host);
    let home = if user == "root" {
        "/root".to_owned()
    } else {
        format!("/home/{user}")
    };
    let headers = [
        format!("Return-Path: <root@{host}>"),
        format!("From: root@{host} (Cron Daemon)"),
        format!("To: {user}@{host}"),
        format!("Subject: Cron <{user}@{short}> {command}"),
        "MIME-Version: 1.0".to_owned(),
        "Content-Type: text/plain; charset=UTF-8".to_owned(),
        "Content-Transfer-Encoding: 8bit".to_owned(),
        "X-Cron-Env: <SHELL=/bin/sh>".to_owned(),
        format!("X-Cron-Env: <HOME={home}>"),
        "X-Cron-Env: <PATH=/usr/bin:/bin>".to_owned(),
        format!("X-Cron-Env: <LOGNAME={user}>"),
        format!("Message-Id: {}", message_id(host)),
        format!("Date: {}", date()),
    ];
    assemble(&headers, body)
}

/// An ordinary message from `sender@example.org` to `herald@localhost`.
pub fn plain_mail(subject: &str, body: &str) -> Vec<u8> {
    let headers = [
        "From: Sender <sender@example.org>".to_owned(),
        "To: herald@localhost".to_owned(),
        format!("Subject: {subject}"),
        "MIME-Version: 1.0".to_owned(),
        "Content-Type: text/plain; charset=UTF-8".to_owned(),
        "Content-Transfer-Encoding: 8bit".to_owned(),
        format!("Message-Id: {}", message_id("example.org")),
        format!("Date: {}", date()),
    ];
    assemble(&headers, body)
}

/// A globally unique `<...@host>` id: time, pid and a per-process counter.
fn message_id(host: &str) -> String {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("<{nanos}.{}.{n}@{host}>", std::process::id())
}

/// RFC 5322 date of now, in the form Debian's MTAs write (`... +0000`).
fn date() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// Headers, blank line, body; every line ends in CRLF (bare LFs in `body` converted).
fn assemble(headers: &[String], body: &str) -> Vec<u8> {
    let mut out = String::new();
    for header in headers {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    for line in body.lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_mail_looks_like_debian_cron() {
        let mail = cron_mail(
            "web1.example.com",
            "root",
            "/usr/local/bin/backup",
            "failed\nexit 1\n",
        );
        let text = String::from_utf8(mail).unwrap();
        assert!(text.contains("From: root@web1.example.com (Cron Daemon)\r\n"));
        assert!(text.contains("Subject: Cron <root@web1> /usr/local/bin/backup\r\n"));
        assert!(text.contains("X-Cron-Env: <HOME=/root>\r\n"));
        assert!(text.ends_with("\r\n\r\nfailed\r\nexit 1\r\n"));
        // Every LF is part of a CRLF.
        assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
    }

    #[test]
    fn message_ids_are_unique() {
        let id = |m: Vec<u8>| {
            String::from_utf8(m)
                .unwrap()
                .lines()
                .find(|l| l.starts_with("Message-Id:"))
                .unwrap()
                .to_owned()
        };
        assert_ne!(id(plain_mail("a", "b")), id(plain_mail("a", "b")));
    }
}
