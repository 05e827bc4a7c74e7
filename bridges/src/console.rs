//! The console sink: one readable line per alert on stdout, for demos, `docker logs` and
//! debugging rules. Mail content is flattened to one line so an alert can never forge another.

use std::io::Write;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::sink::{DeliverFuture, Fixture, SinkKind};
use crate::text::one_line;
use crate::{Alert, Outcome, Sink, SinkError};

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

    /// `{"line": …}`: the line printed ([`render`]).
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

/// The line printed for `alert`.
pub fn render(alert: &Alert) -> String {
    let mut line = format!(
        "[{}] {}",
        alert.severity.as_str().to_uppercase(),
        one_line(&alert.title, 300)
    );
    if !alert.summary.is_empty() {
        line.push_str(" — ");
        line.push_str(&one_line(&alert.summary, 500));
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
}
