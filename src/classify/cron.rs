//! cron mail: Vixie/Debian cron and cronie.
//!
//! Both send a job's output with `Subject: Cron <USER@HOST> COMMAND` (do_command.c:
//! `"Cron <%s@%s> %s"`, user name, gethostname(), the command line) and one `X-Cron-Env:
//! <NAME=value>` header per environment variable. cron mails only when a job printed
//! something and does not report the exit status, so "failed" is read from the output.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use herald_bridges::text::one_line;
use herald_bridges::{Kind, Severity};
use regex::Regex;

use super::{summary_of, Finding, Message};

static SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Cron <([^@>\s]+)@([^>\s]+)>\s*(.*)$").unwrap_or_else(|_| unreachable!())
});

/// Words by which a job's output reports a problem.
static FAILURE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(error|errors|fail|failed|failure|fatal|cannot|can't|denied|no such file|not found|exception|traceback|panic|segmentation fault|killed|timed? ?out)\b")
        .unwrap_or_else(|_| unreachable!())
});

/// Recognises a cron mail.
pub(super) fn recognise(message: &Message) -> Option<Finding> {
    let captures = SUBJECT.captures(message.subject.trim())?;
    let user = captures.get(1)?.as_str().to_owned();
    let short_host = captures.get(2)?.as_str();
    let command = one_line(captures.get(3).map_or("", |m| m.as_str()), 1000);
    let host = full_host_name(short_host, message.from.as_deref());
    let failed = FAILURE.is_match(&message.body);
    let mut facts = BTreeMap::new();
    if message.header("X-Cron-Env").is_some() {
        facts.insert("cron_env".into(), serde_json::Value::Bool(true));
    }
    Some(Finding {
        kind: Kind::Cron,
        title: format!("cron on {host}: {command}"),
        summary: summary_of(message),
        dedup_key: format!("cron:{host}:{user}:{command}"),
        host: Some(host),
        user: Some(user),
        command: Some(command),
        failed: Some(failed),
        exit_status: None,
        severity: if failed {
            Severity::Warning
        } else {
            Severity::Info
        },
        facts,
    })
}

/// cron puts gethostname() in the subject, often a short name; the sender address
/// (`root@web01.example.net`) usually carries the full one. Use it when it extends the short one.
fn full_host_name(short: &str, from: Option<&str>) -> String {
    let domain = from.and_then(|f| f.rsplit_once('@')).map(|(_, d)| d);
    match domain {
        Some(d)
            if d.strip_prefix(short)
                .is_some_and(|rest| rest.starts_with('.')) =>
        {
            d.to_owned()
        }
        _ => short.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{classify, parse};
    use herald_bridges::Kind;

    const DEBIAN: &str = "From: root@web01.example.net (Cron Daemon)\r\n\
To: root@web01.example.net\r\n\
Subject: Cron <root@web01> /usr/local/bin/backup.sh\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=UTF-8\r\n\
X-Cron-Env: <SHELL=/bin/sh>\r\n\
X-Cron-Env: <HOME=/root>\r\n\
X-Cron-Env: <LOGNAME=root>\r\n\
Message-Id: <20261124120001.1234@web01.example.net>\r\n\
Date: Tue, 24 Nov 2026 12:00:01 +0000\r\n\
\r\n\
backup.sh: error: cannot stat /srv/data: No such file or directory\r\n";

    #[test]
    fn debian_cron_failure() {
        let alert = classify(&parse(DEBIAN.as_bytes(), false));
        assert_eq!(alert.kind, Kind::Cron);
        assert_eq!(alert.host.as_deref(), Some("web01.example.net"));
        assert_eq!(alert.user.as_deref(), Some("root"));
        assert_eq!(alert.command.as_deref(), Some("/usr/local/bin/backup.sh"));
        assert_eq!(alert.failed, Some(true));
        assert_eq!(
            alert.dedup_key,
            "cron:web01.example.net:root:/usr/local/bin/backup.sh"
        );
        assert_eq!(
            alert.summary,
            "backup.sh: error: cannot stat /srv/data: No such file or directory"
        );
    }

    #[test]
    fn informational_output_is_not_a_failure() {
        let raw = DEBIAN.replace(
            "backup.sh: error: cannot stat /srv/data: No such file or directory",
            "rotated 3 logs",
        );
        let alert = classify(&parse(raw.as_bytes(), false));
        assert_eq!(alert.failed, Some(false));
    }

    #[test]
    fn short_host_kept_when_sender_differs() {
        assert_eq!(
            super::full_host_name("db1", Some("root@relay.example")),
            "db1"
        );
        assert_eq!(
            super::full_host_name("db1", Some("root@db10.example")),
            "db1"
        );
        assert_eq!(
            super::full_host_name("db1", Some("root@db1.example")),
            "db1.example"
        );
    }
}
