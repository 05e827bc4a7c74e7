//! herald's own metrics, exposed by [`crate::serve`] at `/metrics` in the OpenMetrics text
//! format (which Prometheus scrapes natively), encoded by the `prometheus-client` crate.
//!
//! The pipeline calls the recording methods of one shared [`Metrics`]; every method is a few
//! atomic operations and never fails, so instrumentation cannot break delivery. Two kinds of
//! values are not recorded but computed at scrape time, so they are never stale:
//! - `herald_outbox_rows{sink,state}`, from the store's row counts passed to
//!   [`Metrics::encode`];
//! - `herald_imap_session_up`, how many watched mailboxes have a session with their folder
//!   selected (1 for the usual one mailbox);
//! - `herald_imap_last_contact_seconds`, the longest time since an IMAP server last answered
//!   any watched mailbox's session (or, before its first answer, since herald started: "no
//!   contact for this long" is the condition to alert on either way).
//!
//! Label values come from config names (sinks, rules) and classifier kinds, never from mail
//! content. They are bounded anyway, so that a bug cannot grow the series without limit: a
//! value is cut to [`MAX_LABEL_LEN`] characters, and past [`MAX_LABEL_VALUES`] distinct values
//! of one label, new ones are counted under [`OVERFLOW_LABEL`].
//!
//! Names (all prefixed `herald_`):
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `herald_messages_fetched_total` | counter | |
//! | `herald_messages_skipped_total` | counter | |
//! | `herald_alerts_total` | counter | `kind`, `rule` (`""`: no rule matched) |
//! | `herald_alerts_unrouted_total` | counter | |
//! | `herald_deliveries_total` | counter | `sink`, `outcome` (delivered, retry, rejected, expired) |
//! | `herald_retries_total` | counter | `sink` |
//! | `herald_dead_letters_total` | counter | `sink` |
//! | `herald_delivery_latency_seconds` | histogram | `sink` |
//! | `herald_dispatched_total` | counter | `outcome` (notified, grouped, folded, resolved, silenced) |
//! | `herald_digests_total` | counter | |
//! | `herald_imap_reconnects_total` | counter | |
//! | `herald_pushes_total` | counter | `outcome` (woke, unknown, refused, malformed) |
//! | `herald_push_fetches_total` | counter | |
//! | `herald_config_reloads_total` | counter | `result` (ok, error) |
//! | `herald_imap_session_up` | gauge | |
//! | `herald_imap_last_contact_seconds` | gauge | |
//! | `herald_outbox_rows` | gauge | `sink`, `state` |
//!
//! `herald_messages_skipped_total` counts messages the IMAP server failed to give
//! (`POISON_LIMIT` times) and that were skipped; the latest of them are also kept by name
//! ([`Metrics::skipped`]) for `/readyz` to mention.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::store::Fate;

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics 1.0 text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric name starts with `herald_`.
const PREFIX: &str = "herald";

/// Longest label value kept, in characters: config names and kinds are far shorter.
pub const MAX_LABEL_LEN: usize = 64;

/// Distinct values kept per label (sink, kind, rule). A config with more sinks or rules than
/// this is not plausible; the cap only stops a bug from creating unbounded series, which
/// Prometheus documents as the way to overload it.
pub const MAX_LABEL_VALUES: usize = 256;

/// The label value that stands for every value past [`MAX_LABEL_VALUES`].
pub const OVERFLOW_LABEL: &str = "_other";

/// Skipped messages kept by name for `/readyz`: the latest few say where to look; the
/// counter and the alerts have the rest.
pub const MAX_SKIPPED_NAMED: usize = 10;

/// Latency buckets in seconds, from a webhook answering in under a second to an alert that
/// waited out a sink's outage for hours (retries back off up to 5 min, style.md item 7).
const LATENCY_BUCKETS: [f64; 12] = [
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0,
];

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The sink confirmed it.
    Delivered,
    /// It failed and will be tried again.
    Retry,
    /// The sink refused it for good.
    Rejected,
    /// It was given up because it kept failing for too long.
    Expired,
}

impl Outcome {
    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry => "retry",
            Outcome::Rejected => "rejected",
            Outcome::Expired => "expired",
        }
    }
}

/// `{kind, rule}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AlertLabels {
    /// The classifier's kind of the alert.
    kind: String,
    /// The rule that routed it; `""` when none matched.
    rule: String,
}

/// `{sink}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabels {
    /// The sink's config name.
    sink: String,
}

/// `{sink, outcome}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeliveryLabels {
    /// The sink's config name.
    sink: String,
    /// An [`Outcome`]'s label value.
    outcome: &'static str,
}

/// `{result}` of a configuration reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    /// `ok` or `error`.
    result: &'static str,
}

/// `{outcome}` of dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FateLabels {
    /// What dispatch made of the alert (see [`fate_label`]).
    outcome: &'static str,
}

/// The `outcome` label of a dispatch fate; `None` for what dispatch made itself.
fn fate_label(fate: &Fate) -> Option<&'static str> {
    Some(match fate {
        Fate::Notified { .. } => "notified",
        Fate::Grouped { .. } => "grouped",
        Fate::Folded { .. } => "folded",
        Fate::Resolved { .. } => "resolved",
        Fate::Silenced { .. } => "silenced",
        Fate::Dropped { .. } | Fate::Unrouted | Fate::Notice { .. } => return None,
    })
}

const FATE_LABELS: [&str; 5] = ["notified", "grouped", "folded", "resolved", "silenced"];

/// `{outcome}` of a push hint (`POST /push`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PushLabels {
    /// What herald made of it (see [`PushOutcome`]).
    outcome: &'static str,
}

/// What became of one push hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// It named a watched mailbox, which was woken.
    Woke,
    /// It named no watched mailbox (another user or folder): ignored.
    Unknown,
    /// It lacked the right token: refused.
    Refused,
    /// Its body was not the script's JSON: ignored.
    Malformed,
}

impl PushOutcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Woke => "woke",
            PushOutcome::Unknown => "unknown",
            PushOutcome::Refused => "refused",
            PushOutcome::Malformed => "malformed",
        }
    }
}

const PUSH_OUTCOMES: [PushOutcome; 4] = [
    PushOutcome::Woke,
    PushOutcome::Unknown,
    PushOutcome::Refused,
    PushOutcome::Malformed,
];

/// `{sink, state}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutboxLabels {
    /// The sink's config name.
    sink: String,
    /// The outbox row state (pending, sending, sent, dead).
    state: String,
}

/// Keeps one label's distinct values bounded (see the module docs).
#[derive(Debug, Default)]
struct LabelBound {
    /// The values seen so far, at most [`MAX_LABEL_VALUES`].
    seen: Mutex<HashSet<String>>,
}

impl LabelBound {
    /// The label value to record for `value`.
    fn get(&self, value: &str) -> String {
        let value = clean_label(value);
        // A panic while holding this lock leaves a valid set behind, so poisoning is ignored.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&value) {
            value
        } else if seen.len() < MAX_LABEL_VALUES {
            seen.insert(value.clone());
            value
        } else {
            OVERFLOW_LABEL.to_owned()
        }
    }
}

/// `value` cut to [`MAX_LABEL_LEN`] characters, with control characters replaced (the
/// encoder escapes quotes and newlines; this keeps the exposition readable too).
fn clean_label(value: &str) -> String {
    value
        .chars()
        .take(MAX_LABEL_LEN)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// herald's metrics: shared by every task as an `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    /// The registry of the recorded metrics (the scrape-time ones are added per scrape).
    registry: Registry,
    /// `herald_messages_fetched_total`.
    messages_fetched: Counter,
    /// `herald_messages_skipped_total`.
    messages_skipped: Counter,
    /// The latest skipped messages (`account/folder UID n`), at most [`MAX_SKIPPED_NAMED`].
    skipped: Mutex<Vec<String>>,
    /// `herald_alerts_total{kind,rule}`.
    alerts: Family<AlertLabels, Counter>,
    /// `herald_alerts_unrouted_total`.
    unrouted: Counter,
    /// `herald_deliveries_total{sink,outcome}`.
    deliveries: Family<DeliveryLabels, Counter>,
    /// `herald_retries_total{sink}`.
    retries: Family<SinkLabels, Counter>,
    /// `herald_dead_letters_total{sink}`.
    dead_letters: Family<SinkLabels, Counter>,
    /// `herald_delivery_latency_seconds{sink}`.
    latency: Family<SinkLabels, Histogram>,
    /// `herald_dispatched_total{outcome}`.
    dispatched: Family<FateLabels, Counter>,
    /// `herald_digests_total`.
    digests: Counter,
    /// `herald_imap_reconnects_total`.
    reconnects: Counter,
    /// `herald_pushes_total{outcome}`.
    pushes: Family<PushLabels, Counter>,
    /// `herald_push_fetches_total`.
    push_fetches: Counter,
    /// `herald_config_reloads_total{result}`.
    reloads: Family<ReloadLabels, Counter>,
    /// Each watched mailbox's session, by its name (`account/folder`).
    sessions: Mutex<Vec<(String, Arc<SessionHealth>)>>,
    /// When this value was created: the clock's origin.
    started: Instant,
    /// Bounds the `sink` label.
    sinks: LabelBound,
    /// Bounds the `kind` label.
    kinds: LabelBound,
    /// Bounds the `rule` label.
    rules: LabelBound,
    /// Bounds the outbox `state` label.
    states: LabelBound,
}

impl Metrics {
    /// Creates the metrics, all zero.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix(PREFIX);
        let messages_fetched = Counter::default();
        registry.register(
            "messages_fetched",
            "Messages fetched from the IMAP mailbox",
            messages_fetched.clone(),
        );
        let messages_skipped = Counter::default();
        registry.register(
            "messages_skipped",
            "Messages the IMAP server failed to give repeatedly, skipped and alerted on (left on the server unmarked)",
            messages_skipped.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "alerts",
            "Alerts made from mail, by kind and by the rule that routed them (empty: none)",
            alerts.clone(),
        );
        let unrouted = Counter::default();
        registry.register(
            "alerts_unrouted",
            "Alerts that no rule routed and no default sink took",
            unrouted.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by sink and outcome",
            deliveries.clone(),
        );
        let retries = Family::<SinkLabels, Counter>::default();
        registry.register(
            "retries",
            "Failed delivery attempts that will be retried, by sink",
            retries.clone(),
        );
        let dead_letters = Family::<SinkLabels, Counter>::default();
        registry.register(
            "dead_letters",
            "Deliveries given up for good (rejected or expired), by sink",
            dead_letters.clone(),
        );
        let latency = Family::<SinkLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "delivery_latency",
            "Time from the mail's arrival to the sink's confirmation, by sink",
            Unit::Seconds,
            latency.clone(),
        );
        let dispatched = Family::<FateLabels, Counter>::default();
        registry.register(
            "dispatched",
            "Alerts dispatched, by what became of them: notified at once, grouped for a later notification, folded as a repeat, resolved a problem, silenced",
            dispatched.clone(),
        );
        for outcome in FATE_LABELS {
            let _ = dispatched.get_or_create(&FateLabels { outcome });
        }
        let digests = Counter::default();
        registry.register(
            "digests",
            "Digests made (one notification listing several problems of a group)",
            digests.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "imap_reconnects",
            "IMAP connections made after the first",
            reconnects.clone(),
        );
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register(
            "pushes",
            "Push hints received on POST /push (Dovecot's push_notification), by what became of them",
            pushes.clone(),
        );
        for outcome in PUSH_OUTCOMES {
            let _ = pushes.get_or_create(&PushLabels {
                outcome: outcome.as_str(),
            });
        }
        let push_fetches = Counter::default();
        registry.register(
            "push_fetches",
            "Fetches started by a push hint rather than by IDLE (pushes arriving during a fetch share the next one)",
            push_fetches.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by result: ok (the new one runs) or error (the old one still does)",
            reloads.clone(),
        );
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ReloadLabels { result });
        }
        Arc::new(Metrics {
            registry,
            messages_fetched,
            messages_skipped,
            skipped: Mutex::default(),
            alerts,
            unrouted,
            deliveries,
            retries,
            dead_letters,
            latency,
            dispatched,
            digests,
            reconnects,
            pushes,
            push_fetches,
            reloads,
            sessions: Mutex::default(),
            started: Instant::now(),
            sinks: LabelBound::default(),
            kinds: LabelBound::default(),
            rules: LabelBound::default(),
            states: LabelBound::default(),
        })
    }

    /// Creates `sink`'s series at zero (every outcome, retries, dead letters, latency), so
    /// they exist from the start: Prometheus's `rate()` and `increase()` miss the first
    /// event of a series that appears with it. Call once per configured sink.
    pub fn init_sink(&self, sink: &str) {
        let sink = self.sinks.get(sink);
        for outcome in [
            Outcome::Delivered,
            Outcome::Retry,
            Outcome::Rejected,
            Outcome::Expired,
        ] {
            let _ = self.deliveries.get_or_create(&DeliveryLabels {
                sink: sink.clone(),
                outcome: outcome.as_str(),
            });
        }
        let labels = SinkLabels { sink };
        let _ = self.retries.get_or_create(&labels);
        let _ = self.dead_letters.get_or_create(&labels);
        let _ = self.latency.get_or_create(&labels);
    }

    /// Counts `n` messages fetched.
    pub fn messages_fetched(&self, n: u64) {
        self.messages_fetched.inc_by(n);
    }

    /// Counts a message skipped as unreadable, `what` naming it (`account/folder UID n`).
    pub fn message_skipped(&self, what: &str) {
        self.messages_skipped.inc();
        // Only pushes and reads happen under this lock; a poisoned one holds a whole list.
        let mut skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        if skipped.len() >= MAX_SKIPPED_NAMED {
            skipped.remove(0);
        }
        skipped.push(clean_label(what));
    }

    /// The latest messages skipped as unreadable since start, oldest first.
    pub fn skipped(&self) -> Vec<String> {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts an alert of `kind`, routed by `rule` (`None`: no rule matched).
    pub fn alert(&self, kind: &str, rule: Option<&str>) {
        let labels = AlertLabels {
            kind: self.kinds.get(kind),
            rule: rule.map_or_else(String::new, |rule| self.rules.get(rule)),
        };
        self.alerts.get_or_create(&labels).inc();
    }

    /// Counts what dispatch made of an alert.
    pub fn dispatched(&self, fate: &Fate) {
        if let Some(outcome) = fate_label(fate) {
            self.dispatched.get_or_create(&FateLabels { outcome }).inc();
        }
    }

    /// Counts `n` digests made.
    pub fn digests_sent(&self, n: u64) {
        self.digests.inc_by(n);
    }

    /// Counts an alert that no rule routed and that no default sink took.
    pub fn unrouted(&self) {
        self.unrouted.inc();
    }

    /// Counts a delivery attempt to `sink`; a [`Outcome::Retry`] also counts a retry.
    pub fn delivery(&self, sink: &str, outcome: Outcome) {
        let sink = self.sinks.get(sink);
        if outcome == Outcome::Retry {
            self.retries
                .get_or_create(&SinkLabels { sink: sink.clone() })
                .inc();
        }
        self.deliveries
            .get_or_create(&DeliveryLabels {
                sink,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts a delivery to `sink` given up for good.
    pub fn dead_letter(&self, sink: &str) {
        let sink = self.sinks.get(sink);
        self.dead_letters.get_or_create(&SinkLabels { sink }).inc();
    }

    /// Records the time from a mail's arrival to `sink`'s confirmation. A negative or
    /// non-finite value (clock skew) counts as 0.
    pub fn delivery_latency(&self, sink: &str, seconds: f64) {
        let seconds = if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        };
        let sink = self.sinks.get(sink);
        self.latency
            .get_or_create(&SinkLabels { sink })
            .observe(seconds);
    }

    /// Counts a push hint by what became of it.
    pub fn push(&self, outcome: PushOutcome) {
        self.pushes
            .get_or_create(&PushLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// How many push hints had `outcome` so far.
    pub fn push_count(&self, outcome: PushOutcome) -> u64 {
        self.pushes
            .get_or_create(&PushLabels {
                outcome: outcome.as_str(),
            })
            .get()
    }

    /// Counts a fetch started by a push.
    pub fn push_fetch(&self) {
        self.push_fetches.inc();
    }

    /// Counts a reconnection to the IMAP server.
    pub fn imap_reconnect(&self) {
        self.reconnects.inc();
    }

    /// Counts a configuration reload: `ok` if the new configuration took over.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Forgets every session: the mailboxes of a configuration being replaced, before the
    /// next configuration's register theirs.
    pub fn forget_sessions(&self) {
        self.sessions().clear();
    }

    /// Each watched mailbox's name and whether its session is up, in registration order.
    pub fn session_states(&self) -> Vec<(String, bool)> {
        self.sessions()
            .iter()
            .map(|(name, health)| (name.clone(), health.is_live()))
            .collect()
    }

    /// The health of `mailbox`'s session (`account/folder`), registered for readiness and
    /// the `imap_*` gauges. Call once per watched mailbox.
    pub fn session(&self, mailbox: &str) -> Arc<SessionHealth> {
        let health = Arc::new(SessionHealth {
            started: self.started,
            live: AtomicBool::new(false),
            last_contact: AtomicU64::new(0),
        });
        self.sessions().push((mailbox.to_owned(), health.clone()));
        health
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Vec<(String, Arc<SessionHealth>)>> {
        // Only pushes and reads happen under this lock; a poisoned one holds a whole list.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the IMAP side is ready: every watched mailbox has a live session whose server
    /// answered within `within`. `Err` holds a one-line reason.
    pub fn imap_ready(&self, within: Duration) -> Result<(), String> {
        let sessions = self.sessions();
        if sessions.is_empty() {
            return Err("no IMAP session".to_owned());
        }
        let several = sessions.len() > 1;
        for (name, health) in sessions.iter() {
            health.ready(within).map_err(|reason| {
                if several {
                    format!("{name}: {reason}")
                } else {
                    reason
                }
            })?;
        }
        Ok(())
    }

    /// Seconds since the least recently heard-from server last answered; `None` before every
    /// session has had an answer.
    pub fn seconds_since_server_contact(&self) -> Option<f64> {
        self.longest_silence().map(|d| d.as_secs_f64())
    }

    fn longest_silence(&self) -> Option<Duration> {
        let sessions = self.sessions();
        let mut longest = None;
        for (_, health) in sessions.iter() {
            let since = health.since_contact()?;
            longest = Some(longest.map_or(since, |l: Duration| l.max(since)));
        }
        longest
    }

    /// The exposition in the OpenMetrics text format ([`CONTENT_TYPE`]), with
    /// `herald_outbox_rows` taken from `outbox`'s `(sink, state, count)` rows (see
    /// `Store::counts`) and the time since the last server contact computed now.
    pub fn encode(&self, outbox: &[(String, String, u64)]) -> String {
        // The scrape-time metrics live in a registry of their own, made per scrape, so a sink
        // or state that has no rows any more disappears instead of staying at its last value.
        let mut now = Registry::with_prefix(PREFIX);
        let rows = Family::<OutboxLabels, Gauge>::default();
        for (sink, state, count) in outbox {
            let labels = OutboxLabels {
                sink: self.sinks.get(sink),
                state: self.states.get(state),
            };
            rows.get_or_create(&labels)
                .inc_by(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        now.register(
            "outbox_rows",
            "Outbox rows by sink and state, at scrape time",
            rows,
        );
        let up: Gauge = Gauge::default();
        up.set(
            i64::try_from(self.sessions().iter().filter(|(_, h)| h.is_live()).count())
                .unwrap_or(i64::MAX),
        );
        now.register(
            "imap_session_up",
            "Watched mailboxes whose IMAP session has the folder selected (1 for one mailbox)",
            up,
        );
        let since = self
            .longest_silence()
            .unwrap_or_else(|| self.started.elapsed());
        let last_contact = Gauge::<f64, AtomicU64>::default();
        last_contact.set(since.as_secs_f64());
        now.register_with_unit(
            "imap_last_contact",
            "Seconds since the IMAP server last answered (before any answer: since herald started)",
            Unit::Seconds,
            last_contact,
        );
        let mut text = String::with_capacity(4096);
        // Writing to a String cannot fail; a metric's own encoder failing would be a bug in
        // prometheus-client, and a partial exposition is then still better than none.
        let _ = encode_registry(&mut text, &self.registry);
        let _ = encode_registry(&mut text, &now);
        let _ = encode_eof(&mut text);
        text
    }
}

/// One watched mailbox's session: whether it is up, and when its server last answered.
#[derive(Debug)]
pub struct SessionHealth {
    /// The clock's origin (the [`Metrics`]' creation).
    started: Instant,
    /// Whether a session has the folder selected.
    live: AtomicBool,
    /// When the server last answered, in nanoseconds after `started`, plus one; 0: never.
    last_contact: AtomicU64,
}

impl SessionHealth {
    /// Records that the server answered just now (any response).
    pub fn contact(&self) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_contact
            .store(nanos.saturating_add(1), Ordering::Relaxed);
    }

    /// Records that the session was established (the folder selected) or dropped.
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Relaxed);
    }

    /// Whether the last [`SessionHealth::set_live`] said the session is up.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    /// Time since the server last answered; `None` before its first answer.
    fn since_contact(&self) -> Option<Duration> {
        match self.last_contact.load(Ordering::Relaxed) {
            0 => None,
            stamp => {
                let at = Duration::from_nanos(stamp.saturating_sub(1));
                Some(self.started.elapsed().saturating_sub(at))
            }
        }
    }

    fn ready(&self, within: Duration) -> Result<(), String> {
        if !self.is_live() {
            return Err("no IMAP session".to_owned());
        }
        match self.since_contact() {
            None => Err("no answer from the IMAP server yet".to_owned()),
            Some(since) if since > within => Err(format!(
                "no answer from the IMAP server for {} s (limit {} s)",
                since.as_secs(),
                within.as_secs()
            )),
            Some(_) => Ok(()),
        }
    }
}

/// A latency histogram with [`LATENCY_BUCKETS`].
fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn zero_state_has_every_recorded_family_and_eof() {
        let metrics = Metrics::new();
        let text = metrics.encode(&[]);
        for line in [
            "# TYPE herald_messages_fetched counter",
            "herald_messages_fetched_total 0",
            "herald_alerts_unrouted_total 0",
            "herald_imap_reconnects_total 0",
            "herald_imap_session_up 0",
            "# TYPE herald_imap_last_contact_seconds gauge",
        ] {
            assert!(lines(&text).contains(&line), "missing {line:?} in\n{text}");
        }
        // A labelled family appears with its first series.
        assert!(!text.contains("herald_deliveries"), "{text}");
        assert!(!text.contains("herald_outbox_rows"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert_eq!(metrics.seconds_since_server_contact(), None);
    }

    #[test]
    fn counters_after_calls() {
        let metrics = Metrics::new();
        metrics.messages_fetched(3);
        metrics.messages_fetched(2);
        metrics.alert("cron", Some("backups"));
        metrics.alert("cron", Some("backups"));
        metrics.alert("sudo", None);
        metrics.unrouted();
        metrics.delivery("ops-slack", Outcome::Delivered);
        metrics.delivery("ops-slack", Outcome::Retry);
        metrics.delivery("ops-slack", Outcome::Retry);
        metrics.delivery("pd", Outcome::Rejected);
        metrics.delivery("pd", Outcome::Expired);
        metrics.dead_letter("pd");
        metrics.imap_reconnect();
        let text = metrics.encode(&[]);
        for line in [
            "herald_messages_fetched_total 5",
            r#"herald_alerts_total{kind="cron",rule="backups"} 2"#,
            r#"herald_alerts_total{kind="sudo",rule=""} 1"#,
            "herald_alerts_unrouted_total 1",
            r#"herald_deliveries_total{sink="ops-slack",outcome="delivered"} 1"#,
            r#"herald_deliveries_total{sink="ops-slack",outcome="retry"} 2"#,
            r#"herald_deliveries_total{sink="pd",outcome="rejected"} 1"#,
            r#"herald_deliveries_total{sink="pd",outcome="expired"} 1"#,
            r#"herald_retries_total{sink="ops-slack"} 2"#,
            r#"herald_dead_letters_total{sink="pd"} 1"#,
            "herald_imap_reconnects_total 1",
        ] {
            assert!(lines(&text).contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains(r#"herald_retries_total{sink="pd"}"#),
            "{text}"
        );
    }

    #[test]
    fn init_sink_creates_zero_series() {
        let metrics = Metrics::new();
        metrics.init_sink("pd");
        let text = metrics.encode(&[]);
        for line in [
            r#"herald_deliveries_total{sink="pd",outcome="delivered"} 0"#,
            r#"herald_deliveries_total{sink="pd",outcome="retry"} 0"#,
            r#"herald_deliveries_total{sink="pd",outcome="rejected"} 0"#,
            r#"herald_deliveries_total{sink="pd",outcome="expired"} 0"#,
            r#"herald_retries_total{sink="pd"} 0"#,
            r#"herald_dead_letters_total{sink="pd"} 0"#,
            r#"herald_delivery_latency_seconds_count{sink="pd"} 0"#,
        ] {
            assert!(lines(&text).contains(&line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn latency_histogram_buckets() {
        let metrics = Metrics::new();
        metrics.delivery_latency("chat", 0.7);
        metrics.delivery_latency("chat", 4000.0);
        metrics.delivery_latency("chat", -3.0);
        metrics.delivery_latency("chat", f64::NAN);
        let text = metrics.encode(&[]);
        for line in [
            "# UNIT herald_delivery_latency_seconds seconds",
            r#"herald_delivery_latency_seconds_bucket{le="0.25",sink="chat"} 2"#,
            r#"herald_delivery_latency_seconds_bucket{le="1.0",sink="chat"} 3"#,
            r#"herald_delivery_latency_seconds_bucket{le="3600.0",sink="chat"} 3"#,
            r#"herald_delivery_latency_seconds_bucket{le="21600.0",sink="chat"} 4"#,
            r#"herald_delivery_latency_seconds_bucket{le="+Inf",sink="chat"} 4"#,
            r#"herald_delivery_latency_seconds_count{sink="chat"} 4"#,
            r#"herald_delivery_latency_seconds_sum{sink="chat"} 4000.7"#,
        ] {
            assert!(lines(&text).contains(&line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn outbox_rows_come_from_the_scrape() {
        let metrics = Metrics::new();
        let text = metrics.encode(&[
            ("ops-slack".into(), "pending".into(), 4),
            ("ops-slack".into(), "sent".into(), 10),
            ("pd".into(), "dead".into(), 1),
        ]);
        for line in [
            r#"herald_outbox_rows{sink="ops-slack",state="pending"} 4"#,
            r#"herald_outbox_rows{sink="ops-slack",state="sent"} 10"#,
            r#"herald_outbox_rows{sink="pd",state="dead"} 1"#,
        ] {
            assert!(lines(&text).contains(&line), "missing {line:?} in\n{text}");
        }
        let text = metrics.encode(&[("ops-slack".into(), "sent".into(), 14)]);
        assert!(lines(&text).contains(&r#"herald_outbox_rows{sink="ops-slack",state="sent"} 14"#));
        assert!(
            !text.contains("pending"),
            "a drained state disappears:\n{text}"
        );
    }

    #[test]
    fn every_mailbox_must_be_ready() {
        let metrics = Metrics::new();
        let within = Duration::from_secs(60);
        let inbox = metrics.session("hub/INBOX");
        let cron = metrics.session("hub/Cron");
        for s in [&inbox, &cron] {
            s.set_live(true);
        }
        inbox.contact();
        assert_eq!(
            metrics.imap_ready(within),
            Err("hub/Cron: no answer from the IMAP server yet".to_owned())
        );
        assert_eq!(metrics.seconds_since_server_contact(), None);
        cron.contact();
        assert_eq!(metrics.imap_ready(within), Ok(()));
        assert!(lines(&metrics.encode(&[])).contains(&"herald_imap_session_up 2"));
        cron.set_live(false);
        assert_eq!(
            metrics.imap_ready(within),
            Err("hub/Cron: no IMAP session".to_owned())
        );
        assert!(lines(&metrics.encode(&[])).contains(&"herald_imap_session_up 1"));
    }

    #[test]
    fn session_and_contact() {
        let metrics = Metrics::new();
        let within = Duration::from_secs(60);
        assert!(metrics.imap_ready(within).is_err());
        let session = metrics.session("default/INBOX");
        session.set_live(true);
        assert_eq!(
            metrics.imap_ready(within),
            Err("no answer from the IMAP server yet".to_owned())
        );
        session.contact();
        let since = metrics.seconds_since_server_contact().unwrap();
        assert!((0.0..5.0).contains(&since), "{since}");
        assert_eq!(metrics.imap_ready(within), Ok(()));
        assert!(metrics.imap_ready(Duration::ZERO).is_err());
        let text = metrics.encode(&[]);
        assert!(lines(&text).contains(&"herald_imap_session_up 1"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("herald_imap_last_contact_seconds ")),
            "{text}"
        );
        session.set_live(false);
        assert_eq!(
            metrics.imap_ready(within),
            Err("no IMAP session".to_owned())
        );
        assert!(lines(&metrics.encode(&[])).contains(&"herald_imap_session_up 0"));
    }

    #[test]
    fn label_values_are_bounded_and_escaped() {
        let metrics = Metrics::new();
        let long = "é".repeat(200);
        metrics.dead_letter(&long);
        metrics.dead_letter("a\"b\nc");
        for i in 0..MAX_LABEL_VALUES + 10 {
            metrics.dead_letter(&format!("sink{i}"));
        }
        let text = metrics.encode(&[]);
        let cut = "é".repeat(MAX_LABEL_LEN);
        assert!(
            text.contains(&format!("herald_dead_letters_total{{sink=\"{cut}\"}} 1")),
            "{text}"
        );
        assert!(text.contains(r#"{sink="a\"b?c"} 1"#), "{text}");
        assert!(
            text.contains(&format!(
                "herald_dead_letters_total{{sink=\"{OVERFLOW_LABEL}\"}} 12"
            )),
            "{text}"
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("herald_dead_letters_total{"))
            .count();
        assert_eq!(series, MAX_LABEL_VALUES + 1);
    }

    #[test]
    fn skipped_messages_are_counted_and_the_latest_named() {
        let metrics = Metrics::new();
        assert!(metrics.skipped().is_empty());
        for uid in 0..=MAX_SKIPPED_NAMED {
            metrics.message_skipped(&format!("default/INBOX UID {uid}"));
        }
        let text = metrics.encode(&[]);
        assert!(
            text.contains(&format!(
                "herald_messages_skipped_total {}",
                MAX_SKIPPED_NAMED + 1
            )),
            "{text}"
        );
        let named = metrics.skipped();
        assert_eq!(named.len(), MAX_SKIPPED_NAMED);
        assert_eq!(
            named.last().map(String::as_str),
            Some("default/INBOX UID 10")
        );
    }

    #[test]
    fn metrics_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Metrics>();
    }
}
