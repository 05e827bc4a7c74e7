//! Ingest: where mail comes in.
//!
//! A source watches one mailbox, turns each new message into a routed alert (classify, then
//! the rules), commits the alerts together with the mailbox's cursor and the "mark
//! processed" intents, and only then marks the messages processed on the server. It writes
//! no outbox rows: it tells dispatch that committed alerts are waiting. Today the one kind of
//! source is an IMAP folder ([`imap`]); each watched folder of each account is its own
//! source, with its own session and cursor.

pub(crate) mod imap;
