//! What the chat and paging sinks show of an alert, shared so that every sink shows the same
//! facts in the same order and no sink re-invents the selection.
//!
//! Everything here is plain, unescaped text straight from the alert (hostile): each sink
//! escapes and cuts it for its medium — except [`digest_lines`], which takes the sink's escape
//! so that it can fit the escaped lines to the sink's budget. The order is the order of
//! usefulness, so a sink that must cut from the end keeps the most useful part.
//!
//! The three kinds of notification dispatch makes, as every sink shows them:
//! - a *recovery* (`resolve`): labelled [`RESOLVED_LABEL`] instead of the severity;
//! - a *reminder* (`repeats`): a "Repeats" field ("37 since 03:00") in [`fields`];
//! - a *digest* (`digest` non-empty): one line per member from [`digest_lines`], then
//!   "… and N more" for the members not listed.

use crate::text::{fit_chars, no_escape, one_line};
use crate::{Alert, Member};

/// How many body lines an excerpt keeps: enough to show a cron job's error, few enough for a
/// chat message.
pub const EXCERPT_LINES: usize = 20;

/// The labelled facts of an alert, most useful first; absent ones are left out.
pub fn fields(alert: &Alert) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    if let Some(host) = &alert.host {
        fields.push(("Host", host.clone()));
    }
    if let Some(user) = &alert.user {
        fields.push(("User", user.clone()));
    }
    if let Some(command) = &alert.command {
        fields.push(("Command", command.clone()));
    }
    if let Some(status) = alert.exit_status {
        fields.push(("Exit status", status.to_string()));
    }
    if let Some(repeats) = &alert.repeats {
        let value = match clock(&repeats.since) {
            Some(since) => format!("{} since {since}", repeats.count),
            None => repeats.count.to_string(),
        };
        fields.push(("Repeats", value));
    }
    fields.push(("Kind", alert.kind.as_str().to_owned()));
    if let Some(rule) = &alert.rule {
        fields.push(("Rule", rule.clone()));
    }
    // On one line, and none left empty: a value of nothing but control characters (hostile
    // mail) would otherwise become an empty field, which Discord and Slack reject.
    fields
        .into_iter()
        .map(|(name, value)| (name, crate::text::one_line(&value, usize::MAX)))
        .filter(|(_, value)| !value.is_empty())
        .collect()
}

/// The label shown instead of the severity on a recovery (an alert with `resolve` set).
pub const RESOLVED_LABEL: &str = "RESOLVED";

/// The most a digest member's line takes, as escaped for the sink (a host and a command's
/// worth): members with hostile 1,000-character titles still leave room for a dozen of them
/// in a chat message.
pub const DIGEST_LINE_CHARS: usize = 160;

/// The most a member's host takes of its line, so the command always shows.
const DIGEST_HOST_CHARS: usize = 64;

/// `CRITICAL`, `WARNING`, `INFO`; [`RESOLVED_LABEL`] for a recovery, whatever its severity
/// (a recovery mail's severity says how bad the problem was, not that it is over).
pub fn severity_label(alert: &Alert) -> String {
    if alert.resolve {
        return RESOLVED_LABEL.to_owned();
    }
    alert.severity.as_str().to_uppercase()
}

/// The start of the body as lines for a code block (see [`crate::text::first_lines`]), with a
/// note when herald itself fetched only part of the message.
pub fn excerpt(alert: &Alert) -> String {
    let mut text = crate::text::first_lines(&alert.body, EXCERPT_LINES);
    if alert.truncated {
        text.push_str("\n[message truncated]");
    }
    text
}

/// `HH:MM` of an RFC 3339 time, as written (UTC or the offset it was given in: no time-zone
/// arithmetic, so the same input always shows the same); `None` when `time` is not one. The
/// result is ASCII digits and a colon only, whatever `time` held.
pub fn clock(time: &str) -> Option<&str> {
    let (_, rest) = time.split_once(['T', 't', ' '])?;
    let hh_mm = rest.get(..5)?;
    let bytes = hh_mm.as_bytes();
    let digits = [0, 1, 3, 4]
        .iter()
        .all(|&i| bytes.get(i).is_some_and(u8::is_ascii_digit));
    (digits && bytes.get(2) == Some(&b':')).then_some(hh_mm)
}

/// How many problems a digest covers: those listed and those counted in `digest_more` (0 for
/// an alert that is not a digest).
pub fn problems(alert: &Alert) -> u64 {
    (alert.digest.len() as u64).saturating_add(alert.digest_more)
}

/// "… and N more": the last line of a digest list that could not name every member.
pub fn more_line(more: u64) -> String {
    format!("{} and {more} more", crate::text::ELLIPSIS)
}

/// The lines listing a digest's members, in order, one per member: host, command (or title
/// when there is none), `×count` when more than one, and the first–last time
/// (`web01: /usr/local/bin/backup.sh ×3 (03:00–03:12)`). Each field is flattened to one line
/// and escaped with `escape` (the sink's), and each line is at most [`DIGEST_LINE_CHARS`]
/// characters as escaped (a long command is cut, never the count or the times).
///
/// At most `max_lines` lines and `max_chars` characters are returned (counting a line feed
/// between lines); the members that do not fit, and the `digest_more` that dispatch did not
/// list, are counted in a last [`more_line`], for which room is always kept. Returns the lines
/// and that count (0 when every problem is named). An alert that is not a digest has none.
pub fn digest_lines(
    alert: &Alert,
    max_lines: usize,
    max_chars: usize,
    mut escape: impl FnMut(char, &mut String),
) -> (Vec<String>, u64) {
    let members = &alert.digest;
    // The most the last line can say: nothing listed at all.
    let reserve = more_line(problems(alert)).chars().count() + 1;
    let mut lines = Vec::new();
    let mut used = 0usize;
    for (index, member) in members.iter().enumerate() {
        let last = index + 1 == members.len() && alert.digest_more == 0;
        // Unless this is the last problem, a "more" line may still have to follow it.
        let (room_lines, room_chars) = if last { (0, 0) } else { (1, reserve) };
        let line = member_line(member, DIGEST_LINE_CHARS.min(max_chars), &mut escape);
        let cost = line.chars().count() + usize::from(!lines.is_empty());
        if line.is_empty()
            || lines.len() + 1 + room_lines > max_lines
            || used + cost + room_chars > max_chars
        {
            break;
        }
        used += cost;
        lines.push(line);
    }
    let more = alert
        .digest_more
        .saturating_add((members.len() - lines.len()) as u64);
    if more > 0 {
        let line = more_line(more);
        let cost = line.chars().count() + usize::from(!lines.is_empty());
        if lines.len() < max_lines && used + cost <= max_chars {
            lines.push(line);
        }
    }
    (lines, more)
}

/// One member's line, at most `max_chars` characters as escaped (see [`digest_lines`]).
fn member_line(
    member: &Member,
    max_chars: usize,
    escape: &mut impl FnMut(char, &mut String),
) -> String {
    let mut suffix = String::new();
    if member.count > 1 {
        suffix.push_str(&format!(" ×{}", member.count));
    }
    match (clock(&member.first), clock(&member.last)) {
        (Some(first), Some(last)) if first != last => {
            suffix.push_str(&format!(" ({first}–{last})"));
        }
        (Some(time), _) | (None, Some(time)) => suffix.push_str(&format!(" ({time})")),
        (None, None) => {}
    }
    let mut room = max_chars.saturating_sub(suffix.chars().count());
    let mut line = String::new();
    let host = member.host.as_deref().map(|h| one_line(h, usize::MAX));
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        // ": " after the host.
        let host = fit_chars(&host, DIGEST_HOST_CHARS.min(room / 2), &mut *escape);
        if !host.is_empty() {
            room = room.saturating_sub(host.chars().count() + 2);
            line.push_str(&host);
            line.push_str(": ");
        }
    }
    let command = member.command.as_deref().map(|c| one_line(c, usize::MAX));
    let what = command
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| one_line(&member.title, usize::MAX));
    let what = if what.is_empty() {
        member.kind.as_str().to_owned()
    } else {
        what
    };
    line.push_str(&fit_chars(&what, room, &mut *escape));
    line.push_str(&suffix);
    line
}

/// What a plain-text push notification may hold ([`plain`]), as the service counts it.
#[derive(Debug, Clone, Copy)]
pub struct PlainLimits {
    /// The title's budget.
    pub title: usize,
    /// The message's budget.
    pub message: usize,
    /// What one character costs: 1 where the service counts characters ([`per_char`]), its
    /// UTF-8 length where it counts bytes ([`utf8_bytes`]).
    pub cost: fn(char) -> usize,
}

/// A budget counted in characters.
pub fn per_char(_: char) -> usize {
    1
}

/// A budget counted in UTF-8 bytes.
pub fn utf8_bytes(ch: char) -> usize {
    ch.len_utf8()
}

/// A budget counted in UTF-16 code units (Telegram counts its 4,096 so: an emoji outside the
/// Basic Multilingual Plane costs two).
pub fn utf16_units(ch: char) -> usize {
    ch.len_utf16()
}

/// A budget counted in bytes of a JSON string: what the character takes once serialized
/// (`"` and `\` are escaped to two bytes, control characters to up to six).
pub fn json_bytes(ch: char) -> usize {
    match ch {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if c.is_control() && u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Escapes HTML's special characters (`&`, `<`, `>`, `"`) for [`crate::text::fit`]: the
/// named entities every HTML consumer knows, and the only four Telegram's HTML mode takes
/// (core.telegram.org/bots/api#html-style).
pub fn html_escape(ch: char, out: &mut String) {
    match ch {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        _ => out.push(ch),
    }
}

/// What an HTML message ([`html`]) may take, in the service's unit (`cost`).
#[derive(Debug, Clone, Copy)]
pub struct HtmlLimits {
    /// The whole message, markup included.
    pub total: usize,
    /// The title line's text.
    pub title: usize,
    /// One field's value.
    pub field: usize,
    /// The main text (summary or template output).
    pub main: usize,
    /// What one character of the output costs.
    pub cost: fn(char) -> usize,
}

/// An alert as HTML, for Telegram (`newline` = `"\n"`: it renders line feeds and knows no
/// `<br>`) and Matrix (`"<br>"`): the title in bold, one bold-labelled line per [`fields`],
/// the main text, then a digest's member lines or else (not on a recovery) the body's
/// [`excerpt`] in `<pre>`. Mail text is escaped with [`html_escape`], so the only markup is
/// ours and always balanced (cuts fall inside text, never inside a tag or an entity).
///
/// The main text is the `template` output (its strings arrive escaped, so it may use HTML)
/// when it fits; a longer one is rendered again unescaped, then escaped and cut, so a cut
/// can never leave a tag open. Without a template it is the summary.
pub fn html(
    alert: &Alert,
    template: Option<&crate::template::Template>,
    sink: &'static str,
    limits: HtmlLimits,
    newline: &str,
) -> String {
    let cost = limits.cost;
    let units = |text: &str| text.chars().map(cost).sum::<usize>();
    let fit = |text: &str, budget: usize| crate::text::fit(text, budget, "…", html_escape, cost);
    let title = format!(
        "{}: {}",
        severity_label(alert),
        one_line(&alert.title, usize::MAX)
    );
    let mut out = format!("<b>{}</b>", fit(&title, limits.title));
    for (name, value) in fields(alert) {
        out.push_str(&format!(
            "{newline}<b>{name}:</b> {}",
            fit(&value, limits.field)
        ));
    }
    let gap = units(newline) * 2;
    let room = |out: &str| limits.total.saturating_sub(units(out) + gap);
    let budget = room(&out).min(limits.main);
    let multiline = |ch: char, out: &mut String| match ch {
        '\n' => out.push_str(newline),
        _ => html_escape(ch, out),
    };
    let escaped = |text: &str| crate::text::fit(text, usize::MAX, "…", html_escape, cost);
    let templated = template
        .and_then(|t| t.render_or_default(sink, alert, &escaped))
        .filter(|text| !text.trim().is_empty());
    let main = match (templated, template) {
        (Some(text), _) if units(&text) <= budget => text,
        (Some(_), Some(t)) => {
            let raw = t.render(alert, &|s| s.to_owned()).unwrap_or_default();
            let raw = crate::text::first_lines(&raw, usize::MAX);
            crate::text::fit(&raw, budget, "…", multiline, cost)
        }
        _ => {
            let summary = crate::text::first_lines(&alert.summary, EXCERPT_LINES);
            crate::text::fit(&summary, budget, "…", multiline, cost)
        }
    };
    if !main.trim().is_empty() {
        out.push_str(&format!("{newline}{newline}{main}"));
    }
    let room = room(&out);
    let rest = if !alert.digest.is_empty() {
        digest_within(alert, room, html_escape, cost).join(newline)
    } else if alert.resolve || room <= 32 {
        String::new()
    } else {
        // `<pre>` and `</pre>`.
        let inner = crate::text::fit(&excerpt(alert), room - 11, "…", html_escape, cost);
        if inner.trim().is_empty() {
            String::new()
        } else {
            format!("<pre>{inner}</pre>")
        }
    };
    if !rest.is_empty() {
        out.push_str(&format!("{newline}{newline}{rest}"));
    }
    out
}

/// [`digest_lines`] escaped by `escape` within `room` as `cost` counts (a line feed between
/// lines counted as one unit): where a unit is not a character, fewer members are listed
/// until the lines fit (the last line still counts the rest).
pub fn digest_within(
    alert: &Alert,
    room: usize,
    mut escape: impl FnMut(char, &mut String),
    cost: fn(char) -> usize,
) -> Vec<String> {
    let mut max_lines = alert.digest.len() + 1;
    loop {
        let (lines, _) = digest_lines(alert, max_lines, room, &mut escape);
        let used: usize = lines
            .iter()
            .map(|l| l.chars().map(cost).sum::<usize>() + 1)
            .sum();
        if lines.is_empty() || used <= room + 1 {
            return lines;
        }
        max_lines = lines.len() - 1;
    }
}

/// A push notification in plain text: what ntfy, Gotify and Pushover show, a title and a
/// message, with no markup parsed (so mail text needs no escaping, only flattening).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plain {
    /// `WARNING: <title>` on one line ([`severity_label`]: `RESOLVED` on a recovery).
    pub title: String,
    /// Never empty; see [`plain`].
    pub message: String,
}

/// The plain-text notification for `alert`, within `limits`. The message is, in order of
/// usefulness (a cut drops from the end): the sink's `template` output or the summary (or
/// the title, so the message is never empty), a digest's member lines with "… and N more",
/// the labelled [`fields`] one per line, and for an ordinary problem (not a digest, not a
/// recovery) the body's [`excerpt`]. A digest's summary takes at most half the message, so
/// its list always shows (or counts) every problem. Parts are separated by a blank line; every line is
/// free of control characters; cuts end with [`crate::text::ELLIPSIS`].
pub fn plain(
    alert: &Alert,
    template: Option<&crate::template::Template>,
    sink: &'static str,
    limits: PlainLimits,
) -> Plain {
    let cost = limits.cost;
    let label = severity_label(alert);
    let title = format!("{label}: {}", one_line(&alert.title, usize::MAX));
    let title = crate::text::fit(&title, limits.title, "…", no_escape, cost);
    let main = template
        .and_then(|t| t.render_or_default(sink, alert, &|s| s.to_owned()))
        .filter(|text| !text.trim().is_empty())
        .unwrap_or_else(|| alert.summary.clone());
    let main = [
        crate::text::first_lines(&main, EXCERPT_LINES),
        one_line(&alert.title, usize::MAX),
        label,
    ]
    .into_iter()
    .find(|text| !text.is_empty())
    .unwrap_or_default();
    let mut message = Parts::new(limits.message, cost);
    // A digest's list needs room: its summary may take half the message at most.
    let main_budget = if alert.digest.is_empty() {
        limits.message
    } else {
        limits.message / 2
    };
    message.push(&crate::text::fit(&main, main_budget, "…", no_escape, cost));
    if !alert.digest.is_empty() {
        let room = message.room();
        let mut max_lines = alert.digest.len() + 1;
        // `digest_lines` counts characters; where the budget is bytes, list fewer members
        // until the lines fit (the "more" line still counts the rest).
        loop {
            let (lines, _) = digest_lines(alert, max_lines, room, no_escape);
            let text = lines.join("\n");
            if lines.is_empty() || text.chars().map(cost).sum::<usize>() <= room {
                message.push(&text);
                break;
            }
            max_lines = lines.len() - 1;
        }
    }
    let fields: Vec<String> = fields(alert)
        .into_iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    message.push(&fields.join("\n"));
    if alert.digest.is_empty() && !alert.resolve {
        message.push(&excerpt(alert));
    }
    Plain {
        title,
        message: message.text,
    }
}

/// Text parts joined by a blank line within a budget.
struct Parts {
    text: String,
    used: usize,
    budget: usize,
    cost: fn(char) -> usize,
}

/// Between two parts.
const PART_SEPARATOR: &str = "\n\n";

impl Parts {
    fn new(budget: usize, cost: fn(char) -> usize) -> Parts {
        Parts {
            text: String::new(),
            used: 0,
            budget,
            cost,
        }
    }

    /// What the next part may cost, its separator paid.
    fn room(&self) -> usize {
        let separator = if self.text.is_empty() {
            0
        } else {
            PART_SEPARATOR.chars().map(self.cost).sum()
        };
        self.budget.saturating_sub(self.used + separator)
    }

    /// Appends `part`, cut to the room left; an empty part (or no room) adds nothing.
    fn push(&mut self, part: &str) {
        let part = crate::text::fit(part, self.room(), "…", no_escape, self.cost);
        if part.trim().is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push_str(PART_SEPARATOR);
        }
        self.text.push_str(&part);
        self.used = self.text.chars().map(self.cost).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::no_escape;
    use crate::{Kind, Repeats, Severity};

    fn member(host: &str, count: u64, first: &str, last: &str) -> Member {
        Member {
            kind: Kind::Cron,
            host: Some(host.into()),
            user: Some("root".into()),
            command: Some("/usr/local/bin/backup.sh".into()),
            failed: Some(true),
            severity: Severity::Warning,
            title: format!("cron on {host}: /usr/local/bin/backup.sh"),
            summary: "backup.sh: error".into(),
            dedup_key: format!("cron:{host}:root:/usr/local/bin/backup.sh"),
            count,
            first: first.into(),
            last: last.into(),
            reminder: false,
        }
    }

    fn digest(n: usize, more: u64) -> Alert {
        let mut alert = Alert::sample();
        alert.digest = (1..=n)
            .map(|i| {
                member(
                    &format!("web{i:02}"),
                    3,
                    "2026-08-01T03:00:00Z",
                    "2026-08-01T03:12:59+02:00",
                )
            })
            .collect();
        alert.digest_more = more;
        alert
    }

    #[test]
    fn clock_shows_the_time_as_written() {
        assert_eq!(clock("2026-08-01T03:00:00Z"), Some("03:00"));
        assert_eq!(clock("2026-08-01t23:59:00.5-07:00"), Some("23:59"));
        assert_eq!(clock("2026-08-01 07:05:00+02:00"), Some("07:05"));
        for bad in [
            "",
            "03:00",
            "2026-08-01T3:00:00Z",
            "2026-08-01T03-00",
            "xT0é:00",
        ] {
            assert_eq!(clock(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_member_line_names_host_command_count_and_times() {
        let (lines, more) = digest_lines(&digest(12, 0), usize::MAX, usize::MAX, no_escape);
        assert_eq!(more, 0);
        assert_eq!(lines.len(), 12, "every member, no marker: {lines:?}");
        assert_eq!(lines[0], "web01: /usr/local/bin/backup.sh ×3 (03:00–03:12)");
        assert_eq!(
            lines[11],
            "web12: /usr/local/bin/backup.sh ×3 (03:00–03:12)"
        );
        let mut once = digest(2, 0);
        once.digest[0] = member("db1", 1, "2026-08-01T04:00:00Z", "2026-08-01T04:00:30Z");
        once.digest[1].command = Some(" \t".into());
        once.digest[1].host = None;
        once.digest[1].first = "garbage".into();
        let (lines, _) = digest_lines(&once, usize::MAX, usize::MAX, no_escape);
        assert_eq!(lines[0], "db1: /usr/local/bin/backup.sh (04:00)");
        assert_eq!(
            lines[1], "cron on web02: /usr/local/bin/backup.sh ×3 (03:12)",
            "no command: the title"
        );
    }

    #[test]
    fn what_does_not_fit_is_counted() {
        // Four lines: three members and the marker, which counts dispatch's unlisted too.
        let (lines, more) = digest_lines(&digest(12, 5), 4, usize::MAX, no_escape);
        assert_eq!(more, 9 + 5);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[3], "… and 14 more");
        // A character budget, counted after escaping: `&` costs five here.
        let mut amp = digest(12, 0);
        for m in &mut amp.digest {
            m.command = Some("a&b".repeat(10));
        }
        let escape = |ch: char, out: &mut String| {
            if ch == '&' {
                out.push_str("&amp;");
            } else {
                out.push(ch);
            }
        };
        let (lines, more) = digest_lines(&amp, usize::MAX, 300, escape);
        let total: usize = lines.iter().map(|l| l.chars().count() + 1).sum::<usize>() - 1;
        assert!(total <= 300, "{total}");
        assert!(
            more > 0 && lines.last().unwrap() == &more_line(more),
            "{lines:?}"
        );
        assert!(lines.iter().all(|l| !l.contains("a&b")), "escaped");
        // No room at all: nothing, not even an empty line.
        assert_eq!(digest_lines(&digest(3, 0), 0, 100, no_escape).0.len(), 0);
        assert!(digest_lines(&digest(3, 0), 5, 0, no_escape).0.is_empty());
        assert_eq!(
            digest_lines(&Alert::sample(), 5, 100, no_escape),
            (vec![], 0)
        );
    }

    #[test]
    fn hostile_members_stay_on_one_bounded_line() {
        let mut alert = digest(50, 0);
        for m in &mut alert.digest {
            m.host = Some(format!("h\r\nQUIT :x\0{}", "é".repeat(300)));
            m.command = None;
            m.title = format!("t\n[CRITICAL] forged\x03{}", "x".repeat(1000));
            m.count = u64::MAX;
        }
        let (lines, more) = digest_lines(&alert, usize::MAX, usize::MAX, no_escape);
        assert_eq!((lines.len(), more), (50, 0));
        for line in &lines {
            assert!(line.chars().count() <= DIGEST_LINE_CHARS, "{line}");
            assert!(!line.chars().any(char::is_control), "{line:?}");
            assert!(
                line.ends_with(&format!("×{} (03:00–03:12)", u64::MAX)),
                "{line}"
            );
        }
    }

    #[test]
    fn recovery_and_repeats_are_labelled() {
        let mut alert = Alert::sample();
        assert_eq!(severity_label(&alert), "WARNING");
        alert.resolve = true;
        assert_eq!(severity_label(&alert), RESOLVED_LABEL);
        alert.repeats = Some(Repeats {
            count: 37,
            since: "2026-08-01T03:00:00Z".into(),
            last: "2026-08-01T05:00:00Z".into(),
        });
        assert!(fields(&alert).contains(&("Repeats", "37 since 03:00".into())));
    }
}
