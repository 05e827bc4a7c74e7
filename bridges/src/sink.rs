//! The `Sink` trait, the outcome of one delivery attempt, and the closed set of sink configs.
//!
//! A sink makes exactly one attempt per call and never retries by itself: the caller's outbox
//! owns retries, so that a crash between attempts loses nothing and one sink's trouble never
//! holds up another.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use serde::de::{Deserialize, DeserializeOwned, Deserializer, Error as _};

use crate::{
    console, discord, exec, gotify, irc, matrix, ntfy, opsgenie, pagerduty, pushover, slack, teams,
    telegram, twilio, webhook, Alert,
};

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

    /// Whether the sink hears of a problem's recovery (an alert with `resolve` set): chat
    /// sinks show a "resolved" line, PagerDuty resolves the incident; SMS says nothing unless
    /// its table says `notify_resolved = true`. By default: yes.
    fn notify_resolved(&self) -> bool {
        true
    }

    /// Whether the sink keeps one incident per group (PagerDuty): it hears a recovery only
    /// when the last open problem of the group recovers, since resolving its incident earlier
    /// would close it under the problems still open. By default: no, every problem's
    /// recovery is shown.
    fn tracks_incidents(&self) -> bool {
        false
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

/// What every sink module provides, implemented by its `Config`: with it, one line in the
/// registry below makes the sink a [`SinkConfig`] variant, and the compiler asks for every
/// item (the secret-leak test fixture included) of every registered sink.
pub trait SinkKind: DeserializeOwned + std::fmt::Debug + Clone {
    /// The sink's `type` in a configuration.
    const TYPE: &'static str;

    /// The sink [`SinkKind::build`] makes.
    type Sink: Sink + std::fmt::Debug + 'static;

    /// Checks everything that can be checked without I/O; errors never contain a secret.
    fn validate(&self) -> Result<(), SinkError>;

    /// Exactly what the sink would send for `alert`, with no secret in it (see
    /// [`SinkConfig::render`]).
    fn render(&self, alert: &Alert) -> serde_json::Value;

    /// Builds the sink.
    fn build(&self) -> Result<Self::Sink, SinkError>;

    /// Tables for the secret-leak tests: at least one, every endpoint at `addr` (`base_url`
    /// is `http://{addr}`) and, unless the sink has no secret, every secret containing `mark`.
    #[doc(hidden)]
    fn secret_fixtures(base_url: &str, addr: SocketAddr, mark: &str) -> Vec<Fixture>;
}

/// A sink table for the secret-leak tests, from [`SinkKind::secret_fixtures`].
#[doc(hidden)]
#[derive(Debug, Clone)]
pub enum Fixture {
    /// Every secret in `table` contains the mark; `encoded` holds the forms a secret takes on
    /// the wire without showing the mark (HTTP Basic credentials), which must not leak either.
    Secret {
        /// The sink's table, without `type`.
        table: serde_json::Value,
        /// Encoded secrets.
        encoded: Vec<String>,
    },
    /// The sink has no secret at all.
    NoSecret {
        /// The sink's table, without `type`.
        table: serde_json::Value,
    },
}

impl Fixture {
    /// A [`Fixture::Secret`] whose secrets all show the mark as they travel.
    pub fn secret(table: serde_json::Value) -> Fixture {
        Fixture::Secret {
            table,
            encoded: Vec::new(),
        }
    }
}

/// Generates [`SinkConfig`] and its methods from the list of sinks: a variant each, holding a
/// `Config` that implements [`SinkKind`].
macro_rules! registry {
    ($($(#[$doc:meta])* $variant:ident($config:ty),)+) => {
        /// Every sink type a configuration may name, as a closed enum generated from one
        /// registry: adding a sink means one module whose `Config` implements [`SinkKind`] and
        /// one line in the registry.
        #[derive(Debug, Clone)]
        pub enum SinkConfig {
            $($(#[$doc])* $variant($config),)+
        }

        impl SinkConfig {
            /// The accepted values of a sink's `type` key.
            pub const TYPES: &'static [&'static str] = &[$(<$config as SinkKind>::TYPE,)+];

            /// Deserializes the sink table of type `type_name` (the `type` key itself already
            /// taken out), so that errors point at the exact key within the table.
            pub fn deserialize_typed<'de, D: Deserializer<'de>>(
                type_name: &str,
                deserializer: D,
            ) -> Result<SinkConfig, D::Error> {
                $(if type_name == <$config as SinkKind>::TYPE {
                    return <$config>::deserialize(deserializer).map(SinkConfig::$variant);
                })+
                Err(D::Error::unknown_variant(type_name, Self::TYPES))
            }

            /// The sink's `type`.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(SinkConfig::$variant(_) => <$config as SinkKind>::TYPE,)+
                }
            }

            /// Checks everything that can be checked without I/O.
            pub fn validate(&self) -> Result<(), SinkError> {
                match self {
                    $(SinkConfig::$variant(config) => SinkKind::validate(config),)+
                }
            }

            /// Exactly what the sink would send for `alert` (for `herald classify --render`), with no
            /// secret in it: the JSON body for HTTP sinks (PagerDuty's routing key shown as
            /// `**REDACTED**`), an array of per-recipient form fields for Twilio, `{"line": …}` for
            /// the console, `{"command", "targets", "lines"}` for IRC (no connection is made). URLs and headers are not part of it (they may be credentials).
            pub fn render(&self, alert: &Alert) -> serde_json::Value {
                match self {
                    $(SinkConfig::$variant(config) => SinkKind::render(config, alert),)+
                }
            }

            /// Builds the sink.
            pub fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
                Ok(match self {
                    $(SinkConfig::$variant(config) => Box::new(SinkKind::build(config)?),)+
                })
            }

            /// Builds the sink and shows its `Debug`, for the secret-leak tests (a
            /// `Box<dyn Sink>` has none).
            #[doc(hidden)]
            pub fn built_debug(&self) -> Result<String, SinkError> {
                Ok(match self {
                    $(SinkConfig::$variant(config) => format!("{:?}", SinkKind::build(config)?),)+
                })
            }

            /// The [`SinkKind::secret_fixtures`] of sink type `type_name`, pointed at `addr`;
            /// `None` for a type that is not registered.
            #[doc(hidden)]
            pub fn secret_fixtures(
                type_name: &str,
                addr: SocketAddr,
                mark: &str,
            ) -> Option<Vec<Fixture>> {
                let base_url = format!("http://{addr}");
                $(if type_name == <$config as SinkKind>::TYPE {
                    return Some(<$config as SinkKind>::secret_fixtures(&base_url, addr, mark));
                })+
                None
            }
        }
    };
}

// The registry: one line per sink.
registry! {
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
    /// Runs a command with the alert on stdin and in `HERALD_*` variables.
    Exec(exec::Config),
    /// Publishes to an ntfy topic.
    Ntfy(ntfy::Config),
    /// Pushes to a Gotify application.
    Gotify(gotify::Config),
    /// Sends Pushover notifications (emergencies optional).
    Pushover(pushover::Config),
    /// Sends Telegram messages through a bot.
    Telegram(telegram::Config),
    /// Sends Matrix room messages, idempotent per alert.
    Matrix(matrix::Config),
    /// Posts Adaptive Cards to a Microsoft Teams Workflows webhook.
    Teams(teams::Config),
    /// Creates and closes Opsgenie alerts, one per group.
    Opsgenie(opsgenie::Config),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_type_is_unique_and_has_fixtures() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        for (index, type_name) in SinkConfig::TYPES.iter().enumerate() {
            assert!(
                !SinkConfig::TYPES[..index].contains(type_name),
                "{type_name} twice"
            );
            let fixtures = SinkConfig::secret_fixtures(type_name, addr, "MARK").unwrap();
            assert!(!fixtures.is_empty(), "{type_name}");
        }
        assert!(SinkConfig::secret_fixtures("carrier-pigeon", addr, "MARK").is_none());
    }
}
