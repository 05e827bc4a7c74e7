//! The console sink: one readable line per alert on stdout, for demos, `docker logs` and
//! debugging rules. Mail content is flattened to one line so an alert can never forge another.
//!
//! A recovery's line is labelled `[RESOLVED]`. A digest is its line (dispatch's title and
//! summary) followed by one indented line per member (host, command, `×count`, first–last
//! time) and "… and N more" for those not listed; the indent keeps a member line from ever
//! reading as another alert's `[SEVERITY]` line.

use std::io::Write;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::sink::{DeliverFuture, Fixture, SinkKind};
use crate::text::{no_escape, one_line};
use crate::{present, Alert, Outcome, Sink, SinkError};

/// `type = "console"`: no keys of its own yet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// Writes alerts to stdout.
#[derive(Debug)]
pub struct Console;

impl Console {
    /// Builds the sink.
    pub fn new(_config: &Config) -> Console {
        Console
    }
}

impl SinkKind for Config {
    const TYPE: &'static str = "console";

    type Sink = Console;

    /// Nothing to check.
    fn validate(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// `{"line": …}`: what is printed ([`render`]; several lines for a digest).
    fn render(&self, alert: &Alert) -> serde_json::Value {
        serde_json::json!({ "line": render(alert) })
    }

    fn build(&self) -> Result<Console, SinkError> {
        Ok(Console::new(self))
    }

    fn secret_fixtures(_base_url: &str, _addr: SocketAddr, _mark: &str) -> Vec<Fixture> {
        vec![Fixture::NoSecret {
            table: serde_json::json!({}),
        }]
    }
}

/// How many member lines a digest prints at most: every member dispatch lists.
const DIGEST_LINES: usize = Alert::DIGEST_MAX_MEMBERS + 1;

/// The line printed for `alert`, and for a digest the member lines after it.
pub fn render(alert: &Alert) -> String {
    let mut line = format!(
        "[{}] {}",
        present::severity_label(alert),
        one_line(&alert.title, 300)
    );
    if !alert.summary.is_empty() {
        line.push_str(" — ");
        line.push_str(&one_line(&alert.summary, 500));
    }
    let (members, _) = present::digest_lines(alert, DIGEST_LINES, usize::MAX, no_escape);
    for member in members {
        line.push_str("\n    ");
        line.push_str(&member);
    }
    line
}

impl Sink for Console {
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a> {
        Box::pin(async move {
            let line = render(alert);
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{line}").and_then(|()| out.flush()) {
                Ok(()) => Outcome::Delivered,
                Err(error) => Outcome::Retry {
                    after: None,
                    reason: format!("cannot write to stdout: {error}"),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_even_from_hostile_text() {
        let mut alert = Alert::sample();
        alert.summary = "line one\r\n[CRITICAL] forged\n".into();
        let line = render(&alert);
        assert!(!line.contains('\n') && !line.contains('\r'));
        assert!(line.starts_with("[WARNING] cron on web01.example.net"));
    }

    #[test]
    fn recoveries_and_digests_say_so() {
        let mut alert = Alert::sample();
        alert.resolve = true;
        assert!(render(&alert).starts_with("[RESOLVED] cron on web01.example.net"));
        let mut digest = Alert::sample();
        digest.title = "52 problems: cron /usr/local/bin/backup.sh".into();
        let member = crate::Member {
            kind: crate::Kind::Cron,
            host: Some("web01\n[CRITICAL] forged".into()),
            user: None,
            command: Some("/usr/local/bin/backup.sh".into()),
            failed: Some(true),
            severity: crate::Severity::Warning,
            title: String::new(),
            summary: String::new(),
            dedup_key: String::new(),
            count: 2,
            first: "2026-08-01T03:00:00Z".into(),
            last: "2026-08-01T03:05:00Z".into(),
            reminder: false,
        };
        digest.digest = vec![member; Alert::DIGEST_MAX_MEMBERS];
        digest.digest_more = 2;
        let text = render(&digest);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 50 + 1, "{text}");
        assert!(lines[0].starts_with("[WARNING] 52 problems: cron"));
        assert_eq!(
            lines[1],
            "    web01 [CRITICAL] forged: /usr/local/bin/backup.sh ×2 (03:00–03:05)"
        );
        assert_eq!(lines[51], "    … and 2 more");
    }
}
