//! herald-testkit: real components for herald's integration tests and benchmarks.
//!
//! - [`Dovecot`]: a private Dovecot IMAP server per test (plain or TLS), plus server-side
//!   helpers that put mail in (IMAP APPEND, LMTP) and read flags back over real IMAP; with
//!   [`Push`], Dovecot's push_notification plugin running herald's Lua script.
//! - [`Ngircd`]: a private ngIRCd server per test (plain or TLS); [`IrcClient`] joins a channel
//!   and records what arrives.
//! - [`RawImap`]: a minimal IMAP client, independent of herald's own IMAP code.
//! - [`Receiver`]: a loopback HTTP server that records webhook POSTs and answers from a script.
//! - [`HeraldProcess`]: runs the daemon binary with its output captured.
//! - [`cron_mail`], [`plain_mail`]: realistic test messages.
//!
//! Nothing here sleeps and hopes: every wait polls or listens for a condition under a
//! deadline and fails with the relevant logs attached.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::string_slice, clippy::unwrap_used)
)]

mod dovecot;
mod http;
mod imap;
mod lmtp;
mod mail;
mod ngircd;
mod process;
mod proxy;
mod tls;

pub use dovecot::{Dovecot, Push, PASSWORD, USER};
pub use http::{Received, Receiver, Reply};
pub use imap::{RawImap, Selected, COMMAND_TIMEOUT};
pub use lmtp::LMTP_TIMEOUT;
pub use mail::{cron_mail, eml_files, plain_mail};
pub use ngircd::{is_message_from, IrcClient, IrcLine, Ngircd, NgircdOptions};
pub use process::{process_group_members, HeraldProcess};
pub use proxy::{Fault, FaultProxy};
pub use tls::{write_self_signed, write_self_signed_ca, write_unrelated_ca, CertFiles};

/// A loopback TCP port that was free a moment ago (bound to 127.0.0.1:0, then released).
/// Another process may take it before the caller binds it; [`Dovecot`] retries for that.
///
/// # Panics
///
/// If 127.0.0.1 cannot be bound at all, in which case no test could run.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}
