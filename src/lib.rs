//! herald: watches a mailbox of Unix system mail over IMAP IDLE, turns each message into a
//! typed alert, and delivers it to sinks, durably.
//!
//! The pipeline, one module per stage: [`config`] → [`mailbox`] (IMAP) → [`classify`] →
//! [`route`] → [`store`] (SQLite outbox) → [`deliver`] (one worker per sink). The ordering
//! that makes it reliable: an alert and its outbox rows are committed before the message is
//! marked processed on the server, and a delivery is marked sent only after the sink confirmed.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::string_slice, clippy::unwrap_used)
)]

pub mod classify;
pub mod cli;
pub mod config;
pub mod crashpoint;
pub mod daemon;
pub mod deliver;
pub mod mailbox;
pub mod metrics;
pub mod route;
pub mod serve;
pub mod store;
