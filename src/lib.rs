//! herald: watches mailboxes of Unix system mail over IMAP IDLE, turns each message into a
//! typed alert, and delivers it to sinks, durably.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! source (one per mailbox: IMAP, classify, route) ─commit─> store <─ dispatch ─commit─> store <─ deliver (one worker per sink)
//! ```
//!
//! [`config`] is read and validated before anything starts; [`classify`] and [`route`] are
//! pure; [`store`] holds everything durable behind one interface per stage. The ordering
//! that makes it reliable: an alert is committed before its message is marked processed on
//! the server, its outbox rows are committed before any worker sees them, and a delivery is
//! marked sent as soon as its sink confirmed it.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::string_slice, clippy::unwrap_used)
)]

pub mod classify;
pub mod cli;
pub mod config;
mod crashpoint;
pub mod daemon;
mod deliver;
pub mod dispatch;
pub mod error;
pub mod expect;
mod health;
pub mod history;
pub mod logging;
mod manual;
pub mod metrics;
pub mod notify;
pub mod push;
mod push_test;
pub mod route;
pub mod serve;
pub mod silence;
mod source;
pub mod store;
