//! herald-bridges: the alert model and the sinks that deliver alerts.
//!
//! This crate knows nothing of IMAP, rules or storage: it receives a finished [`Alert`] and
//! makes one delivery attempt with it, answering with an [`Outcome`]. Retrying, queueing and
//! bookkeeping belong to the caller. Every sink is one module; [`SinkConfig`] is the closed set
//! of sink types a configuration may name.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::string_slice, clippy::unwrap_used)
)]

pub mod alert;
pub mod backoff;
pub mod console;
pub mod discord;
pub mod exec;
pub mod gotify;
mod http;
pub mod irc;
pub mod matrix;
pub mod ntfy;
pub mod opsgenie;
pub mod pagerduty;
pub mod present;
pub mod pushover;
pub mod ratelimit;
pub mod secret;
pub mod sink;
pub mod slack;
pub mod sms;
pub mod teams;
pub mod telegram;
pub mod template;
pub mod text;
pub mod tls;
pub mod twilio;
pub mod webhook;

pub use alert::{Alert, Kind, Member, Repeats, Severity};
pub use secret::Secret;
pub use sink::{Outcome, Sink, SinkConfig, SinkError, SinkKind, SINGLE_TARGET};
