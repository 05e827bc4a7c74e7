//! Expectations (`[[expect]]`): alerts for mail that does *not* come.
//!
//! An expectation names the mail it waits for (a `match` table with the rules' keys) and when
//! (`every = "1d"`, or `schedule = "30 3 * * *"` with a `timezone`), plus a `grace`. Each
//! matching mail is a *sighting*: ingest commits it with the mail, and it moves the expected
//! time on (the sighting plus `every`, or the schedule's next time after it). When the
//! expected time plus `grace` passes with no sighting, the [`watch`] task raises a `missing`
//! alert (`dedup_key` `missing:NAME`) through the rules and dispatch, so silences, windows and
//! grouping apply to it; each further period that passes in silence raises it again (dispatch
//! folds those as repeats). The next sighting resolves it: a recovery alert with the same key.
//!
//! Guarantees: the state (last seen, expected time, missing since) is in the store and each
//! change commits with the alert it raises, so a deadline that passed while herald was down
//! fires at start, once; a raise and a recovery are never lost or doubled by a crash. The
//! clock starts at herald's first start with the expectation (or its first sighting, if
//! earlier); a changed `every`/`schedule` starts it again from the last sighting.

pub mod watch;

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, Local, Utc};
use herald_bridges::{Alert, Kind, Severity};
use serde::Deserialize;
use toml::Spanned;

use crate::classify::Message;
use crate::dispatch::policy::Humane;
use crate::error::{ConfigError, Locate};
use crate::route::{Matcher, RawMatch, Window, Zone};

/// `[[expect]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExpect {
    name: Spanned<String>,
    #[serde(default, rename = "match")]
    conditions: RawMatch,
    every: Option<Spanned<Humane>>,
    schedule: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    grace: Option<Humane>,
    severity: Option<Severity>,
    sinks: Option<Vec<Spanned<String>>>,
}

/// When an expectation's mail is due.
#[derive(Debug, Clone)]
pub enum Timing {
    /// Within this long of the last sighting.
    Every(Duration),
    /// At each time of a cron schedule, read on the zone's wall clock.
    Schedule {
        /// The schedule as written (what the state remembers, to notice a change).
        text: String,
        /// It, parsed.
        cron: Box<croner::Cron>,
        /// Where its times are read.
        zone: Zone,
    },
}

impl Timing {
    /// The first expected time after `after` (ms).
    pub fn next(&self, after: i64) -> i64 {
        match self {
            Timing::Every(every) => {
                after.saturating_add(i64::try_from(every.as_millis()).unwrap_or(i64::MAX))
            }
            Timing::Schedule { cron, zone, .. } => {
                let at = DateTime::from_timestamp_millis(after).unwrap_or_default();
                let next = match zone {
                    Zone::Local => cron
                        .find_next_occurrence(&at.with_timezone(&Local), false)
                        .map(|t| t.timestamp_millis()),
                    Zone::Named(tz) => cron
                        .find_next_occurrence(&at.with_timezone(tz), false)
                        .map(|t| t.timestamp_millis()),
                };
                // A schedule with no next time (a date that never comes) never falls due.
                next.unwrap_or(i64::MAX)
            }
        }
    }

    /// The timing in words, as the state remembers it.
    pub fn describe(&self) -> String {
        match self {
            Timing::Every(every) => format!("every {}", humantime::format_duration(*every)),
            Timing::Schedule { text, zone, .. } => match zone {
                Zone::Local => format!("schedule {text}"),
                Zone::Named(tz) => format!("schedule {text} {}", tz.name()),
            },
        }
    }
}

/// A validated expectation.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// Its name: the `missing:NAME` key, and what `herald expect list` shows.
    pub name: String,
    matcher: Matcher,
    /// When its mail is due.
    pub timing: Timing,
    /// How late the mail may be before it is missing.
    pub grace: Duration,
    /// The `missing` alert's severity.
    pub severity: Severity,
    /// Where the `missing` alert goes unless a rule routes it elsewhere.
    pub sinks: Vec<String>,
}

/// How late a mail may be by default: long enough for a slow job and a queued relay.
const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Resolves a sink name written at a key, as the configuration does for rules.
pub(crate) type SinkName<'a> = dyn Fn(&Spanned<String>, &str) -> Result<String, ConfigError> + 'a;

impl RawExpect {
    /// Where its name is written, for errors about the whole table.
    pub(crate) fn name_span(&self) -> std::ops::Range<usize> {
        self.name.span()
    }

    /// Checks the match, timing, zone and sinks; `key` is `expect[N]`.
    pub(crate) fn validate(
        self,
        key: &str,
        sink: &SinkName<'_>,
        windows: &BTreeMap<String, Window>,
        locate: &dyn Locate,
    ) -> Result<Expectation, ConfigError> {
        let name = self.name.get_ref().trim();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(locate.at(
                self.name.span(),
                &format!("{key}.name"),
                "must be a non-empty name without control characters: the alert's dedup_key is missing:NAME".into(),
            ));
        }
        let matcher = Matcher::new(&self.conditions, &format!("{key}.match"), windows, locate)?;
        let timing = match (&self.every, &self.schedule) {
            (Some(every), None) => {
                if every.get_ref().0.is_zero() {
                    return Err(locate.at(
                        every.span(),
                        &format!("{key}.every"),
                        "must be longer than 0s".into(),
                    ));
                }
                if let Some(zone) = &self.timezone {
                    return Err(locate.at(
                        zone.span(),
                        &format!("{key}.timezone"),
                        "applies to `schedule` only; `every` counts from the last mail".into(),
                    ));
                }
                Timing::Every(every.get_ref().0)
            }
            (None, Some(schedule)) => {
                let cron = croner::Cron::from_str(schedule.get_ref()).map_err(|e| {
                    locate.at(
                        schedule.span(),
                        &format!("{key}.schedule"),
                        format!(
                            "invalid cron schedule {:?}: {e} (five fields: minute hour day-of-month month day-of-week, e.g. \"30 3 * * *\")",
                            schedule.get_ref()
                        ),
                    )
                })?;
                let zone = Zone::parse(self.timezone.as_ref(), &format!("{key}.timezone"), locate)?;
                Timing::Schedule {
                    text: schedule.get_ref().clone(),
                    cron: Box::new(cron),
                    zone,
                }
            }
            (Some(_), Some(schedule)) => {
                return Err(locate.at(
                    schedule.span(),
                    &format!("{key}.schedule"),
                    "give either `every` or `schedule`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(locate.at(
                    self.name.span(),
                    key,
                    "needs `every` (e.g. \"1d\") or `schedule` (e.g. \"30 3 * * *\")".into(),
                ))
            }
        };
        let sinks = self
            .sinks
            .iter()
            .flatten()
            .map(|s| sink(s, &format!("{key}.sinks")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Expectation {
            name: name.to_owned(),
            matcher,
            timing,
            grace: self.grace.map_or(DEFAULT_GRACE, |g| g.0),
            severity: self.severity.unwrap_or(Severity::Warning),
            sinks,
        })
    }
}

/// Milliseconds of a duration, saturating.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A time for a person: the local date and time.
fn shown(at: i64) -> String {
    DateTime::from_timestamp_millis(at)
        .map(|t| t.with_timezone(&Local).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "?".into())
}

impl Expectation {
    /// Whether `message` (classified as `alert`) is this expectation's mail.
    pub fn matches(&self, message: &Message, alert: &Alert, now: DateTime<Utc>) -> bool {
        self.matcher.holds(message, alert, now)
    }

    /// When a mail expected at `expected_at` is missing (ms).
    pub fn deadline(&self, expected_at: i64) -> i64 {
        expected_at.saturating_add(ms(self.grace))
    }

    /// The `dedup_key` of its `missing` alerts and their recovery.
    pub fn key(&self) -> String {
        format!("missing:{}", self.name)
    }

    fn alert(&self, title: String, summary: String, failed: bool) -> Alert {
        let mut alert = Alert::sample();
        alert.message_id = None;
        alert.kind = Kind::Missing;
        alert.host = None;
        alert.user = None;
        alert.command = None;
        alert.failed = Some(failed);
        alert.severity = if failed {
            self.severity
        } else {
            Severity::Info
        };
        alert.subject = title.clone();
        alert.title = title;
        alert.summary = summary;
        alert.dedup_key = self.key();
        alert.body = String::new();
        alert.from = None;
        alert
            .facts
            .insert("expectation".into(), self.name.clone().into());
        alert
            .facts
            .insert("timing".into(), self.timing.describe().into());
        alert
    }

    /// The alert for a missed deadline: the mail expected at `expected_at` has not come, and
    /// was last seen at `last_seen` (or never, since `since`).
    pub fn missing(&self, expected_at: i64, last_seen: Option<i64>, since: i64) -> Alert {
        let seen = match last_seen {
            Some(at) => format!("last seen {}", shown(at)),
            None => format!("never seen since {}", shown(since)),
        };
        let mut alert = self.alert(
            format!("expected mail missing: {} ({seen})", self.name),
            format!(
                "no mail matching {} by {} ({}, grace {})",
                self.name,
                shown(expected_at),
                self.timing.describe(),
                humantime::format_duration(self.grace)
            ),
            true,
        );
        alert
            .facts
            .insert("expected_at".into(), shown(expected_at).into());
        alert
    }

    /// The alert for the mail's return after it was missing since `since`.
    pub fn returned(&self, since: i64) -> Alert {
        self.alert(
            format!("expected mail is back: {}", self.name),
            format!(
                "mail matching {} came again (missing since {})",
                self.name,
                shown(since)
            ),
            false,
        )
    }
}

/// The message a `missing` alert is routed as: it has no headers, recipients or body, so
/// rules see only its alert fields (kind `missing`, severity, title as subject, windows).
pub fn message_of(alert: &Alert) -> Message {
    Message {
        message_id: None,
        subject: alert.title.clone(),
        from: None,
        to: Vec::new(),
        date: None,
        headers: Vec::new(),
        body: String::new(),
        delivery_status: None,
        truncated: false,
        malformed: false,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use chrono_tz::Europe::Berlin;

    use super::*;

    fn schedule(text: &str, zone: Zone) -> Timing {
        Timing::Schedule {
            text: text.into(),
            cron: Box::new(croner::Cron::from_str(text).unwrap()),
            zone,
        }
    }

    fn berlin(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        Berlin
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .timestamp_millis()
    }

    fn wall(at: i64) -> String {
        DateTime::from_timestamp_millis(at)
            .unwrap()
            .with_timezone(&Berlin)
            .format("%m-%d %H:%M %Z")
            .to_string()
    }

    #[test]
    fn invalid_expectations_are_located() {
        for (text, key, message) in [
            ("[[expect]]\nname = \"x\"\n", "expect[0]", "needs `every`"),
            (
                "[[expect]]\nname = \"x\"\nschedule = \"61 * * * *\"\n",
                "expect[0].schedule",
                "invalid cron schedule",
            ),
            (
                "[[expect]]\nname = \"x\"\nevery = \"1h\"\nschedule = \"* * * * *\"\n",
                "expect[0].schedule",
                "not both",
            ),
            (
                "[[expect]]\nname = \"x\"\nschedule = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\"\n",
                "expect[0].timezone",
                "unknown time zone",
            ),
            (
                "[[expect]]\nname = \"x\"\nevery = \"1h\"\nsinks = [\"nope\"]\n",
                "expect[0].sinks",
                "unknown sink",
            ),
            (
                "[[expect]]\nname = \"x\"\nevery = \"1h\"\n[[expect]]\nname = \"x\"\nevery = \"2h\"\n",
                "expect[1].name",
                "already called",
            ),
        ] {
            let error = expectation(text).unwrap_err();
            assert_eq!(error.key.as_deref(), Some(key), "{error}");
            assert!(error.message.contains(message), "{error}");
            assert!(error.position.is_some(), "{error}");
        }
    }

    fn expectation(text: &str) -> Result<Expectation, ConfigError> {
        let text = format!(
            "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
             [sinks.pd]\ntype = \"console\"\n{text}"
        );
        let config =
            crate::config::Config::parse(std::path::Path::new("t.toml"), &text, &|_| None)?;
        Ok(config
            .expectations
            .into_iter()
            .next()
            .expect("an expectation"))
    }

    #[test]
    fn every_counts_from_the_sighting() {
        let timing = Timing::Every(Duration::from_secs(3600));
        assert_eq!(timing.next(1_000), 1_000 + 3_600_000);
        assert_eq!(timing.describe(), "every 1h");
    }

    #[test]
    fn a_schedule_is_read_on_its_zone_s_clock_across_dst() {
        let nightly = schedule("30 3 * * *", Zone::Named(Berlin));
        // Before the spring-forward night: 03:30 CET; after it: 03:30 CEST, 23 h later.
        let before = nightly.next(berlin(2026, 3, 28, 12, 0));
        assert_eq!(wall(before), "03-29 03:30 CEST");
        assert_eq!(
            wall(nightly.next(berlin(2026, 3, 27, 12, 0))),
            "03-28 03:30 CET"
        );
        // Fall back: 03:30 comes once, 25 h after the day before's.
        let day_before = nightly.next(berlin(2026, 10, 24, 12, 0));
        let after = nightly.next(day_before);
        assert_eq!(wall(after), "10-26 03:30 CET");
        assert_eq!(
            wall(nightly.next(berlin(2026, 10, 24, 12, 0))),
            "10-25 03:30 CET"
        );
        // A time in the skipped hour runs right after the gap, once.
        let skipped = schedule("30 2 * * *", Zone::Named(Berlin));
        assert_eq!(
            wall(skipped.next(berlin(2026, 3, 28, 12, 0))),
            "03-29 03:00 CEST"
        );
        assert_eq!(
            wall(skipped.next(skipped.next(berlin(2026, 3, 28, 12, 0)))),
            "03-30 02:30 CEST"
        );
    }

    #[test]
    fn the_alerts_name_the_expectation_and_share_its_key() {
        let e = expectation(
            "[[expect]]\nname = \"db02-backup\"\nevery = \"1d\"\nseverity = \"critical\"\nsinks = [\"pd\"]\n",
        )
        .unwrap();
        let missing = e.missing(0, None, 0);
        assert_eq!(missing.kind, Kind::Missing);
        assert_eq!(missing.dedup_key, "missing:db02-backup");
        assert!(missing
            .title
            .starts_with("expected mail missing: db02-backup (never seen since "));
        assert_eq!(missing.failed, Some(true));
        assert_eq!(missing.severity, Severity::Critical);
        let back = e.returned(0);
        assert_eq!(back.dedup_key, missing.dedup_key);
        assert_eq!(back.failed, Some(false));
        assert_eq!(e.deadline(1_000), 1_000 + 3_600_000);
    }
}
