//! Time windows: `[windows.NAME]` as written ([`RawWindow`]), their validation, and the
//! compiled [`Window`] that the `during` and `not_during` conditions test.
//!
//! A window is a span of wall-clock time (`from` to `to`, half-open) on some days of the week,
//! in one time zone. Guarantees:
//! - every time, day and zone is checked when the configuration is read, with its location;
//! - [`Window::contains`] converts the instant to the zone's wall-clock time and compares
//!   wall-clock times, so daylight saving time is honoured the way people read a clock: on the
//!   day the clocks spring forward a window over the skipped hour is that much shorter, and on
//!   the day they fall back a window over the repeated hour holds through both of its passes;
//! - a window that runs past midnight (`from` later than `to`) belongs to the day it started
//!   on: 22:00 Friday to 07:00 Saturday is `fri`;
//! - testing a window compiles and allocates nothing (a named zone is a table in the binary;
//!   the system's zone is chrono's `Local`, which honours `TZ` and re-reads it at most once a
//!   second).

use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Datelike, FixedOffset, Local, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{ConfigError, Locate};

/// Seconds in a day: `to = "24:00"`.
const DAY: u32 = 24 * 60 * 60;

/// Every day of the week, one bit each from Monday: the default `days`.
const EVERY_DAY: u8 = 0x7f;

/// Day names as `days` accepts them (and the full English names), Monday first.
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// `[windows.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWindow {
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    days: Option<Spanned<Vec<Spanned<String>>>>,
    timezone: Option<Spanned<String>>,
}

/// Where wall-clock times are read (a window's, an expectation's schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The system's local time zone (`TZ`, else `/etc/localtime`).
    Local,
    /// An IANA zone.
    Named(Tz),
}

impl Zone {
    /// The zone a `timezone` key names; the local zone when it is not given.
    pub(crate) fn parse(
        name: Option<&Spanned<String>>,
        key: &str,
        locate: &dyn Locate,
    ) -> Result<Zone, ConfigError> {
        let Some(name) = name else {
            return Ok(Zone::Local);
        };
        name.get_ref().parse::<Tz>().map(Zone::Named).map_err(|_| {
            locate.at(
                name.span(),
                key,
                format!(
                    "unknown time zone {:?} (an IANA name such as \"Europe/Berlin\" or \"UTC\"; \
                     remove the key for the system's local time zone)",
                    name.get_ref()
                ),
            )
        })
    }
}

/// A validated time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Seconds after midnight at which it opens.
    from: u32,
    /// Seconds after midnight at which it closes (not included); up to [`DAY`]. Equal to
    /// `from`: open all day.
    to: u32,
    /// The days it opens on, one bit each from Monday.
    days: u8,
    zone: Zone,
}

impl RawWindow {
    /// Checks the times, days and zone; `key` is `windows.NAME`, for errors.
    pub(crate) fn validate(&self, key: &str, locate: &dyn Locate) -> Result<Window, ConfigError> {
        let time = |value: &Option<Spanned<String>>, name: &str, default: u32, end: bool| {
            let Some(value) = value else {
                return Ok(default);
            };
            clock_time(value.get_ref(), end).ok_or_else(|| {
                let range = if end {
                    "00:00 to 24:00"
                } else {
                    "00:00 to 23:59"
                };
                locate.at(
                    value.span(),
                    &format!("{key}.{name}"),
                    format!(
                        "invalid time {:?}: write HH:MM, from {range}",
                        value.get_ref()
                    ),
                )
            })
        };
        let from = time(&self.from, "from", 0, false)?;
        let to = time(&self.to, "to", DAY, true)?;
        let days = match &self.days {
            None => EVERY_DAY,
            Some(list) if list.get_ref().is_empty() => {
                return Err(locate.at(
                    list.span(),
                    &format!("{key}.days"),
                    "an empty list of days is never open; remove the key for every day".into(),
                ))
            }
            Some(list) => {
                let mut days = 0;
                for (i, day) in list.get_ref().iter().enumerate() {
                    let bit = day_bit(day.get_ref()).ok_or_else(|| {
                        locate.at(
                            day.span(),
                            &format!("{key}.days[{i}]"),
                            format!(
                                "unknown day {:?} (one of: {})",
                                day.get_ref(),
                                DAYS.join(", ")
                            ),
                        )
                    })?;
                    days |= bit;
                }
                days
            }
        };
        let zone = Zone::parse(self.timezone.as_ref(), &format!("{key}.timezone"), locate)?;
        Ok(Window {
            from,
            to,
            days,
            zone,
        })
    }
}

/// `"HH:MM"` as seconds after midnight; `"24:00"` only when `end`.
fn clock_time(text: &str, end: bool) -> Option<u32> {
    let (hours, minutes) = text.trim().split_once(':')?;
    let digits = |s: &str, len: Range<usize>| {
        (len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (hours, minutes) = (digits(hours, 1..3)?, digits(minutes, 2..3)?);
    match (hours, minutes) {
        (24, 0) if end => Some(DAY),
        (0..=23, 0..=59) => Some((hours * 60 + minutes) * 60),
        _ => None,
    }
}

/// The bit of a day name, `mon` or `monday` in any case.
fn day_bit(name: &str) -> Option<u8> {
    let name = name.trim().to_ascii_lowercase();
    DAYS.iter()
        .zip(FULL_DAYS)
        .position(|(short, full)| *short == name || full == name)
        .map(|i| 1 << i)
}

impl Window {
    /// Whether `instant` falls in the window, read on the zone's wall clock.
    pub fn contains(&self, instant: DateTime<Utc>) -> bool {
        self.contains_wall_clock(self.wall_clock(instant))
    }

    /// The wall-clock date and time of `instant` in the window's zone.
    fn wall_clock(&self, instant: DateTime<Utc>) -> NaiveDateTime {
        match self.zone {
            Zone::Local => instant.with_timezone(&Local).naive_local(),
            Zone::Named(tz) => instant.with_timezone(&tz).naive_local(),
        }
    }

    fn contains_wall_clock(&self, clock: NaiveDateTime) -> bool {
        let time = clock.time().num_seconds_from_midnight();
        let day = clock.weekday().num_days_from_monday();
        let open_on = |day: u32| self.days & (1 << day) != 0;
        if self.from < self.to {
            open_on(day) && (self.from..self.to).contains(&time)
        } else if self.from > self.to {
            // Past midnight, the part after it belongs to the day before.
            (time >= self.from && open_on(day)) || (time < self.to && open_on((day + 6) % 7))
        } else {
            open_on(day)
        }
    }

    /// What the window's clock says at `instant`, for `--explain`.
    pub(super) fn clock(&self, instant: DateTime<Utc>) -> Clock {
        match self.zone {
            Zone::Local => {
                let local = instant.with_timezone(&Local);
                Clock {
                    clock: local.naive_local(),
                    zone: Shown::Local(*local.offset()),
                }
            }
            Zone::Named(tz) => Clock {
                clock: instant.with_timezone(&tz).naive_local(),
                zone: Shown::Named(tz.name()),
            },
        }
    }
}

/// A window's wall clock at one instant: `23:10 Wed Europe/Berlin`, or
/// `23:10 Wed local UTC+01:00` for the system's zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Clock {
    clock: NaiveDateTime,
    zone: Shown,
}

/// How a [`Clock`] names its zone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shown {
    /// The IANA name.
    Named(&'static str),
    /// The system's zone, by its offset from UTC at that instant: `TZ` may be a POSIX rule
    /// or a file, neither of which has a name to show.
    Local(FixedOffset),
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.clock.format("%H:%M %a"))?;
        match self.zone {
            Shown::Named(name) => write!(f, " {name}"),
            Shown::Local(offset) => write!(f, " local UTC{offset}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::TimeZone as _;

    /// Reports errors as `key: message`, ignoring spans.
    struct Keys;
    impl Locate for Keys {
        fn at(&self, _span: Range<usize>, key: &str, message: String) -> ConfigError {
            ConfigError {
                file: "t.toml".into(),
                position: None,
                key: Some(key.to_owned()),
                message,
            }
        }
    }

    fn window(toml_text: &str) -> Result<Window, ConfigError> {
        let raw: RawWindow = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"));
        raw.validate("windows.w", &Keys)
    }

    fn valid(toml_text: &str) -> Window {
        window(toml_text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .unwrap_or_else(|| panic!("{y}-{mo}-{d} {h}:{mi}:{s}"))
    }

    #[test]
    fn defaults_are_all_day_every_day_in_the_local_zone() {
        let w = valid("");
        assert_eq!(
            (w.from, w.to, w.days, w.zone),
            (0, DAY, EVERY_DAY, Zone::Local)
        );
        assert!(w.contains(utc(2026, 1, 1, 0, 0, 0)));
    }

    #[test]
    fn a_day_window_is_half_open() {
        let w = valid("from = \"09:00\"\nto = \"17:30\"\ntimezone = \"UTC\"");
        // 2026-05-06 is a Wednesday.
        assert!(!w.contains(utc(2026, 5, 6, 8, 59, 59)));
        assert!(w.contains(utc(2026, 5, 6, 9, 0, 0)));
        assert!(w.contains(utc(2026, 5, 6, 17, 29, 59)));
        assert!(!w.contains(utc(2026, 5, 6, 17, 30, 0)));
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_started() {
        let w = valid("from = \"22:00\"\nto = \"07:00\"\ndays = [\"fri\"]\ntimezone = \"UTC\"");
        // 2026-05-08 is a Friday.
        assert!(
            !w.contains(utc(2026, 5, 8, 6, 0, 0)),
            "Friday morning is Thursday's night"
        );
        assert!(!w.contains(utc(2026, 5, 8, 21, 59, 59)));
        assert!(w.contains(utc(2026, 5, 8, 22, 0, 0)));
        assert!(w.contains(utc(2026, 5, 8, 23, 59, 59)));
        assert!(
            w.contains(utc(2026, 5, 9, 0, 0, 0)),
            "Saturday 00:00 is Friday's night"
        );
        assert!(w.contains(utc(2026, 5, 9, 6, 59, 59)));
        assert!(!w.contains(utc(2026, 5, 9, 7, 0, 0)));
        assert!(
            !w.contains(utc(2026, 5, 9, 22, 0, 0)),
            "Saturday night is not listed"
        );
        // Sunday's night runs into Monday: the wrap from Monday back to Sunday.
        let w = valid("from = \"22:00\"\nto = \"07:00\"\ndays = [\"sun\"]\ntimezone = \"UTC\"");
        assert!(w.contains(utc(2026, 5, 11, 3, 0, 0)), "Monday 03:00");
        assert!(!w.contains(utc(2026, 5, 12, 3, 0, 0)), "Tuesday 03:00");
    }

    #[test]
    fn from_equal_to_is_the_whole_day_and_24_00_ends_it() {
        let w = valid(
            "from = \"08:00\"\nto = \"08:00\"\ndays = [\"Sat\", \"sunday\"]\ntimezone = \"UTC\"",
        );
        // 2026-05-09 is a Saturday, 2026-05-11 a Monday.
        assert!(w.contains(utc(2026, 5, 9, 0, 0, 0)));
        assert!(w.contains(utc(2026, 5, 10, 23, 59, 59)));
        assert!(!w.contains(utc(2026, 5, 11, 0, 0, 0)));
        let w = valid("from = \"20:00\"\nto = \"24:00\"\ntimezone = \"UTC\"");
        assert!(w.contains(utc(2026, 5, 9, 23, 59, 59)));
        assert!(!w.contains(utc(2026, 5, 10, 0, 0, 0)));
    }

    #[test]
    fn the_zone_s_wall_clock_decides() {
        let w = valid("from = \"22:00\"\nto = \"07:00\"\ntimezone = \"Europe/Berlin\"");
        // Summer: CEST is UTC+2, so 22:00 in Berlin is 20:00 UTC.
        assert!(!w.contains(utc(2026, 7, 1, 19, 59, 0)));
        assert!(w.contains(utc(2026, 7, 1, 20, 0, 0)));
        assert!(w.contains(utc(2026, 7, 2, 4, 59, 0)));
        assert!(!w.contains(utc(2026, 7, 2, 5, 0, 0)));
        // Winter: CET is UTC+1.
        assert!(!w.contains(utc(2026, 1, 14, 20, 59, 0)));
        assert!(w.contains(utc(2026, 1, 14, 21, 0, 0)));
        // The day is Berlin's too: 23:30 UTC on a Thursday is 01:30 Friday in Berlin, part of
        // Thursday's night.
        let w = valid(
            "from = \"22:00\"\nto = \"07:00\"\ndays = [\"thu\"]\ntimezone = \"Europe/Berlin\"",
        );
        assert!(w.contains(utc(2026, 7, 2, 23, 30, 0)));
        assert!(!w.contains(utc(2026, 7, 1, 23, 30, 0)), "Wednesday's night");
    }

    #[test]
    fn spring_forward_shortens_a_window_over_the_skipped_hour() {
        // Europe/Berlin, 2026-03-29: at 01:00 UTC the clocks go from 02:00 CET to 03:00 CEST.
        let w = valid("from = \"01:00\"\nto = \"03:00\"\ntimezone = \"Europe/Berlin\"");
        assert!(!w.contains(utc(2026, 3, 28, 23, 59, 59)), "00:59:59 CET");
        assert!(w.contains(utc(2026, 3, 29, 0, 0, 0)), "01:00 CET");
        assert!(
            w.contains(utc(2026, 3, 29, 0, 59, 59)),
            "01:59:59 CET, just before"
        );
        assert!(
            !w.contains(utc(2026, 3, 29, 1, 0, 0)),
            "03:00 CEST, just after"
        );
        // A window inside the skipped hour never opens that day, and opens as usual the next.
        let w = valid("from = \"02:15\"\nto = \"02:45\"\ntimezone = \"Europe/Berlin\"");
        let closed_all_night = (0..(4 * 60))
            .map(|m| utc(2026, 3, 28, 23, 0, 0) + chrono::Duration::minutes(m))
            .all(|instant| !w.contains(instant));
        assert!(closed_all_night);
        assert!(
            w.contains(utc(2026, 3, 30, 0, 30, 0)),
            "02:30 CEST the next night"
        );
        // America/New_York, 2026-03-08: 02:00 EST becomes 03:00 EDT at 07:00 UTC.
        let w = valid("from = \"01:30\"\nto = \"03:30\"\ntimezone = \"America/New_York\"");
        assert!(w.contains(utc(2026, 3, 8, 6, 59, 59)), "01:59:59 EST");
        assert!(w.contains(utc(2026, 3, 8, 7, 0, 0)), "03:00 EDT");
        assert!(w.contains(utc(2026, 3, 8, 7, 29, 59)), "03:29:59 EDT");
        assert!(!w.contains(utc(2026, 3, 8, 7, 30, 0)), "03:30 EDT");
    }

    #[test]
    fn fall_back_holds_a_window_through_both_passes_of_the_repeated_hour() {
        // Europe/Berlin, 2026-10-25: at 01:00 UTC the clocks go from 03:00 CEST back to 02:00 CET.
        let w = valid("from = \"02:00\"\nto = \"03:00\"\ntimezone = \"Europe/Berlin\"");
        assert!(!w.contains(utc(2026, 10, 24, 23, 59, 59)), "01:59:59 CEST");
        assert!(w.contains(utc(2026, 10, 25, 0, 0, 0)), "02:00 CEST");
        assert!(
            w.contains(utc(2026, 10, 25, 0, 59, 59)),
            "02:59:59 CEST, just before"
        );
        assert!(
            w.contains(utc(2026, 10, 25, 1, 0, 0)),
            "02:00 CET, just after"
        );
        assert!(w.contains(utc(2026, 10, 25, 1, 59, 59)), "02:59:59 CET");
        assert!(!w.contains(utc(2026, 10, 25, 2, 0, 0)), "03:00 CET");
        // America/New_York, 2026-11-01: 02:00 EDT becomes 01:00 EST at 06:00 UTC; a night
        // window ending at 01:30 is open for the first 01:00–01:30 and again for the second.
        let w = valid("from = \"22:00\"\nto = \"01:30\"\ntimezone = \"America/New_York\"");
        assert!(w.contains(utc(2026, 11, 1, 5, 29, 59)), "01:29:59 EDT");
        assert!(!w.contains(utc(2026, 11, 1, 5, 30, 0)), "01:30 EDT");
        assert!(w.contains(utc(2026, 11, 1, 6, 0, 0)), "01:00 EST");
        assert!(!w.contains(utc(2026, 11, 1, 6, 30, 0)), "01:30 EST");
    }

    #[test]
    fn the_clock_names_its_zone() {
        let w = valid("timezone = \"Europe/Berlin\"");
        // 2026-05-06 is a Wednesday.
        assert_eq!(
            w.clock(utc(2026, 5, 6, 21, 10, 0)).to_string(),
            "23:10 Wed Europe/Berlin"
        );
        let local = valid("").clock(utc(2026, 5, 6, 21, 10, 0)).to_string();
        assert!(local.contains(" local UTC"), "{local}");
    }

    #[test]
    fn invalid_values_are_named() {
        let cases = [
            (
                "from = \"25:00\"",
                "windows.w.from",
                "invalid time \"25:00\"",
            ),
            ("from = \"24:00\"", "windows.w.from", "00:00 to 23:59"),
            ("to = \"7\"", "windows.w.to", "write HH:MM"),
            ("to = \"07:5\"", "windows.w.to", "invalid time"),
            ("to = \"+7:00\"", "windows.w.to", "invalid time"),
            ("to = \"24:01\"", "windows.w.to", "00:00 to 24:00"),
            (
                "days = [\"mon\", \"fir\"]",
                "windows.w.days[1]",
                "unknown day \"fir\"",
            ),
            ("days = []", "windows.w.days", "never open"),
            (
                "timezone = \"Europe/Berln\"",
                "windows.w.timezone",
                "unknown time zone \"Europe/Berln\"",
            ),
        ];
        for (text, key, message) in cases {
            let error = window(text).unwrap_err();
            assert_eq!(error.key.as_deref(), Some(key), "{error}");
            assert!(error.message.contains(message), "{error}");
        }
    }
}
