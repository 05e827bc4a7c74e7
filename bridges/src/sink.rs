//! The `Sink` trait, the outcome of one delivery attempt, and the closed set of sink configs.
//!
//! A sink makes exactly one attempt per call and never retries by itself: the caller's outbox
//! owns retries, so that a crash between attempts loses nothing and one sink's trouble never
//! holds up another.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error as _};

use crate::{console, webhook, Alert};

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

/// Something that can carry an alert somewhere.
pub trait Sink: Send + Sync {
    /// Makes one delivery attempt.
    fn deliver<'a>(&'a self, alert: &'a Alert) -> DeliverFuture<'a>;
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
    /// The HTTP client could not be built (TLS roots unreadable, …).
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
}

impl SinkConfig {
    /// The accepted values of a sink's `type` key.
    pub const TYPES: &'static [&'static str] = &["webhook", "console"];

    /// Deserializes the sink table of type `type_name` (the `type` key itself already taken
    /// out), so that errors point at the exact key within the table.
    pub fn deserialize_typed<'de, D: Deserializer<'de>>(
        type_name: &str,
        deserializer: D,
    ) -> Result<SinkConfig, D::Error> {
        match type_name {
            "webhook" => webhook::Config::deserialize(deserializer).map(SinkConfig::Webhook),
            "console" => console::Config::deserialize(deserializer).map(SinkConfig::Console),
            other => Err(D::Error::unknown_variant(other, Self::TYPES)),
        }
    }

    /// The sink's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Console(_) => "console",
        }
    }

    /// Checks everything that can be checked without I/O.
    pub fn validate(&self) -> Result<(), SinkError> {
        match self {
            SinkConfig::Webhook(config) => config.validate(),
            SinkConfig::Console(_) => Ok(()),
        }
    }

    /// Builds the sink.
    pub fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkConfig::Webhook(config) => Box::new(webhook::Webhook::new(config)?),
            SinkConfig::Console(config) => Box::new(console::Console::new(config)),
        })
    }
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
