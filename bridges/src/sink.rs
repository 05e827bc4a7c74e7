//! The `Sink` trait, the outcome of one delivery attempt, and the closed set of sink configs.
//!
//! A sink makes exactly one attempt per call and never retries by itself: the caller's outbox
//! owns retries, so that a crash between attempts loses nothing and one sink's trouble never
//! holds up another.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error as _};

use crate::{console, discord, irc, pagerduty, slack, twilio, webhook, Alert};

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver confirmed the alert.
    Delivered,
    /// A transient failure: try again, no sooner than `after` when the receiver said so.
    Retry {
        /// The receiver's own `Retry-After`, if it gave one.
        after: Option<Duration>,
        /// What went wrong, for logs; never contains a secret.
        reason: String,
    },
    /// A permanent failure: retrying the same request cannot succeed.
    Rejected {
        /// What went wrong, for logs; never contains a secret.
        reason: String,
    },
}

/// A boxed delivery future, so that sinks of different types share one `dyn Sink` interface.
pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A boxed future of [`Sink::close`].
pub type CloseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The target of a sink with a single destination (every sink but Twilio).
pub const SINGLE_TARGET: &str = "";

/// Something that can carry an alert somewhere.
///
/// A sink has one or more *targets*: independent destinations that each get their own
/// delivery, retried and recorded separately (Twilio: one per recipient number). The outbox
/// keeps one row per (alert, sink, target), calls [`Sink::deliver_to`] for each, and never
/// lets one target's failure hold up or re-send to another.
pub trait Sink: Send + Sync {
    /// Makes one delivery attempt to every target (for single-target sinks, the only one).
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a>;

    /// The sink's targets, stable across restarts for an unchanged configuration; by default
    /// one, [`SINGLE_TARGET`].
    fn targets(&self) -> Vec<String> {
        vec![SINGLE_TARGET.to_owned()]
    }

    /// Makes one delivery attempt to one target from [`Sink::targets`]. A target no longer
    /// in the list (the configuration changed) is `Rejected`. By default: [`Sink::deliver`].
    fn deliver_to<'a>(&'a self, alert: &'a Alert, target: &'a str) -> DeliverFuture<'a> {
        let _ = target;
        self.deliver(alert)
    }

    /// Ends the sink's long-lived resources in an orderly way and waits for that: the IRC
    /// sink sends `QUIT` and closes its connection. Call it once at shutdown, after the last
    /// delivery (later deliveries answer `Retry`). By default there is nothing to do.
    fn close(&self) -> CloseFuture<'_> {
        Box::pin(async {})
    }
}

/// A sink's configuration could not be turned into a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A key holds a value the sink cannot use.
    #[error("{key}: {message}")]
    Invalid {
        /// The key within the sink's table.
        key: &'static str,
        /// What is wrong with it (never the value of a secret).
        message: String,
    },
    /// The HTTP or IRC client could not be built (TLS roots or `ca_file` unreadable, …).
    #[error("cannot build HTTP client: {0}")]
    Client(String),
}

/// Every sink type a configuration may name, as a closed enum: adding a sink means adding a
/// variant, and the compiler then points at every place that must handle it.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// POSTs the alert as JSON.
    Webhook(webhook::Config),
    /// Prints one line per alert on stdout.
    Console(console::Config),
    /// Posts to Slack (incoming webhook or bot token).
    Slack(slack::Config),
    /// Executes a Discord webhook.
    Discord(discord::Config),
    /// Sends PagerDuty Events API v2 events.
    PagerDuty(pagerduty::Config),
    /// Sends SMS through Twilio, one delivery per recipient.
    Twilio(twilio::Config),
    /// Posts to IRC channels over one persistent connection, one delivery per channel.
    Irc(irc::Config),
}

impl SinkConfig {
    /// The accepted values of a sink's `type` key.
    pub const TYPES: &'static [&'static str] = &[
        "webhook",
        "console",
        "slack",
        "discord",
        "pagerduty",
        "twilio",
        "irc",
    ];

    /// Deserializes the sink table of type `type_name` (the `type` key itself already taken
    /// out), so that errors point at the exact key within the table.
    pub fn deserialize_typed<'de, D: Deserializer<'de>>(
        type_name: &str,
        deserializer: D,
    ) -> Result<SinkConfig, D::Error> {
        match type_name {
            "webhook" => webhook::Config::deserialize(deserializer).map(SinkConfig::Webhook),
            "console" => console::Config::deserialize(deserializer).map(SinkConfig::Console),
            "slack" => slack::Config::deserialize(deserializer).map(SinkConfig::Slack),
            "discord" => discord::Config::deserialize(deserializer).map(SinkConfig::Discord),
            "pagerduty" => pagerduty::Config::deserialize(deserializer).map(SinkConfig::PagerDuty),
            "twilio" => twilio::Config::deserialize(deserializer).map(SinkConfig::Twilio),
            "irc" => irc::Config::deserialize(deserializer).map(SinkConfig::Irc),
            other => Err(D::Error::unknown_variant(other, Self::TYPES)),
        }
    }

    /// The sink's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Console(_) => "console",
            SinkConfig::Slack(_) => "slack",
            SinkConfig::Discord(_) => "discord",
            SinkConfig::PagerDuty(_) => "pagerduty",
            SinkConfig::Twilio(_) => "twilio",
            SinkConfig::Irc(_) => "irc",
        }
    }

    /// Checks everything that can be checked without I/O.
    pub fn validate(&self) -> Result<(), SinkError> {
        match self {
            SinkConfig::Webhook(config) => config.validate(),
            SinkConfig::Console(_) => Ok(()),
            SinkConfig::Slack(config) => config.validate(),
            SinkConfig::Discord(config) => config.validate(),
            SinkConfig::PagerDuty(config) => config.validate(),
            SinkConfig::Twilio(config) => config.validate(),
            SinkConfig::Irc(config) => config.validate(),
        }
    }

    /// Exactly what the sink would send for `alert` (for `herald classify --render`), with no
    /// secret in it: the JSON body for HTTP sinks (PagerDuty's routing key shown as
    /// `**REDACTED**`), an array of per-recipient form fields for Twilio, `{"line": …}` for
    /// the console, `{"command", "targets", "lines"}` for IRC (no connection is made). URLs and headers are not part of it (they may be credentials).
    pub fn render(&self, alert: &Alert) -> serde_json::Value {
        match self {
            SinkConfig::Webhook(_) => webhook::payload(alert),
            SinkConfig::Console(_) => serde_json::json!({ "line": console::render(alert) }),
            SinkConfig::Slack(config) => config.render(alert),
            SinkConfig::Discord(config) => config.render(alert),
            SinkConfig::PagerDuty(config) => config.render(alert),
            SinkConfig::Twilio(config) => config.render(alert),
            SinkConfig::Irc(config) => config.render(alert),
        }
    }

    /// Builds the sink.
    pub fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkConfig::Webhook(config) => Box::new(webhook::Webhook::new(config)?),
            SinkConfig::Console(config) => Box::new(console::Console::new(config)),
            SinkConfig::Slack(config) => Box::new(slack::Slack::new(config)?),
            SinkConfig::Discord(config) => Box::new(discord::Discord::new(config)?),
            SinkConfig::PagerDuty(config) => Box::new(pagerduty::PagerDuty::new(config)?),
            SinkConfig::Twilio(config) => Box::new(twilio::Twilio::new(config)?),
            SinkConfig::Irc(config) => Box::new(irc::Irc::new(config)?),
        })
    }
}

/// Deserializes an optional humane duration (see [`deserialize_duration`]).
pub fn deserialize_optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize_duration(d).map(Some)
}

/// Deserializes a humane duration such as `"30s"`, `"25m"` or `"1h"`.
pub fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        D::Error::custom(format!(
            "invalid duration {text:?}: {e} (e.g. \"30s\", \"25m\", \"1h\")"
        ))
    })
}
