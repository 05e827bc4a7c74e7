//! What an alert looks like on IRC: a pure function from an alert to message texts, tested
//! without a network and shared by delivery and `herald classify --render`.
//!
//! Layout: a header line (herald's bold, optionally coloured severity, then the title), the
//! summary, then the body's non-blank lines; each line wrapped to the byte budget.
//!
//! Dispatch's notifications (see [`crate::present`]), within the same `max_lines` (so flood
//! control paces them like any alert):
//! - A digest is the header line with dispatch's title ("12 problems: …"), then one line per
//!   member (host, command, `×count`, first–last time) and, when not all fit, a last line
//!   "… and N more". Each line is cut (marked `…`), never wrapped: one member, one line.
//! - A recovery is one line: a bold (green with `colour`) `[RESOLVED]` and the title.
//! - A reminder is an ordinary alert (dispatch puts the repeats into the summary).
//!
//! Guarantees:
//! - Mail content reaches IRC only through [`strip`]: mIRC formatting codes are removed and
//!   every control character (CR, LF and NUL included, so no command can be injected, and
//!   `\x01`, so no CTCP) becomes a space \[MIRC-FMT\], \[MIRC-CTCP\]. herald's own formatting
//!   is added afterwards, so it is the only formatting on the wire.
//! - Every text is at most the byte budget given (computed by [`budget`] so that the line as
//!   the server *relays* it, `:nick!user@host PRIVMSG #chan :text` CR LF, fits 512 bytes
//!   \[RFC2812\] §2.3), is cut only between UTF-8 characters, and is never empty (an empty
//!   text gets 412 ERR_NOTEXTTOSEND \[MIRC-NUM\]).
//! - At most `max_lines` texts per alert; when more would be needed, the last one says
//!   "… N more lines" (for a digest, "… and N more" problems).
//! - A digest member's fields are flattened by [`crate::text::one_line`], which removes every
//!   control character (mIRC codes included, leaving only their harmless digits as text).

use crate::text::{fit, no_escape, ELLIPSIS};
use crate::{present, Alert, Severity};

/// A line as relayed, without CR LF: 512 − 2 \[RFC2812\] §2.3.
pub const RELAYED_LINE_BYTES: usize = 510;

/// Hostnames may be up to 63 characters \[RFC2812\] §2.3.1 (via reference/sinks.md §5.4).
pub const MAX_HOST: usize = 63;

/// The user name length assumed until the server says (`USERLEN` in 005): 10, the value
/// reference/sinks.md §5.4's example budget uses (user 11 = 10 + the `~` servers prepend when
/// ident fails, hence +1 where it is used). UNVERIFIED as a universal maximum: a server
/// announcing a larger `USERLEN` in 005 overrides it.
pub const DEFAULT_USERLEN: usize = 10;

/// How herald shows alerts on IRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// `NOTICE` instead of `PRIVMSG`.
    pub notice: bool,
    /// Colour the severity (mIRC colour codes) besides making it bold.
    pub colour: bool,
    /// At most this many messages per alert (≥ 2).
    pub max_lines: usize,
}

impl Style {
    /// The command messages are sent with.
    pub fn verb(self) -> &'static str {
        if self.notice {
            "NOTICE"
        } else {
            "PRIVMSG"
        }
    }
}

/// What is known of herald's own prefix (`nick!user@host`) as the server relays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The nick in use (or the longest one herald may end up with, before registration).
    pub nick: String,
    /// The user part as the server shows it (`~herald`), once known.
    pub user: Option<String>,
    /// The host part as the server shows it, once known.
    pub host: Option<String>,
    /// The server's `USERLEN`, when announced.
    pub userlen: Option<usize>,
}

impl Identity {
    /// The byte length of `:nick!user@host`, assuming the longest user and host when unknown.
    pub fn prefix_len(&self) -> usize {
        let user = self
            .user
            .as_ref()
            .map_or_else(|| self.userlen.unwrap_or(DEFAULT_USERLEN) + 1, String::len);
        let host = self.host.as_ref().map_or(MAX_HOST, String::len);
        // ':' '!' '@'
        3 + self.nick.len() + user + host
    }
}

/// The largest text, in bytes, that fits one relayed line from `who` to `target`:
/// `512 − 2 − len(":nick!user@host") − len(" VERB ") − len(target) − len(" :")`
/// (reference/sinks.md §5.4).
pub fn budget(who: &Identity, verb: &str, target: &str) -> usize {
    RELAYED_LINE_BYTES.saturating_sub(who.prefix_len() + 1 + verb.len() + 1 + target.len() + 2)
}

/// Mail text made safe for one IRC message: mIRC formatting codes removed (`\x03` colour with
/// its `fg[,bg]` digits, `\x04` hex colour with its `RRGGBB[,RRGGBB]`), every other control
/// character (C0, DEL, C1, line and paragraph separators) turned into a space, runs of
/// whitespace folded to one space, format characters ([`crate::text::is_format`]: bidi
/// overrides, zero-width spaces) dropped, ends trimmed \[MIRC-FMT\] (reference/sinks.md §5.6).
pub fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    let mut i = 0;
    let digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let hex6 = |i: usize| (i..i + 6).all(|j| chars.get(j).is_some_and(char::is_ascii_hexdigit));
    while let Some(&ch) = chars.get(i) {
        i += 1;
        match ch {
            '\x03' => {
                // Two digits are always consumed if present [MIRC-FMT].
                if digit(i) {
                    i += if digit(i + 1) { 2 } else { 1 };
                    if chars.get(i) == Some(&',') && digit(i + 1) {
                        i += if digit(i + 2) { 3 } else { 2 };
                    }
                }
                continue;
            }
            '\x04' => {
                if hex6(i) {
                    i += 6;
                    if chars.get(i) == Some(&',') && hex6(i + 1) {
                        i += 7;
                    }
                }
                continue;
            }
            _ if crate::text::is_format(ch) => continue,
            _ => {}
        }
        if ch.is_control() || ch.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(ch);
    }
    out
}

/// Bold (`\x02`) severity (or `RESOLVED`), optionally coloured with two-digit codes (so a
/// following digit is never read as part of the colour \[MIRC-FMT\]): red, orange, light
/// blue; green for a recovery.
fn severity_tag(alert: &Alert, colour: bool) -> String {
    let label = format!("[{}]", present::severity_label(alert));
    if !colour {
        return format!("\x02{label}\x02");
    }
    let code = match alert.severity {
        _ if alert.resolve => "03",
        Severity::Critical => "04",
        Severity::Warning => "07",
        Severity::Info => "12",
    };
    // \x0F resets bold and colour together.
    format!("\x02\x03{code}{label}\x0F")
}

/// Splits `text` (already stripped, so no control characters) into pieces of at most `budget`
/// bytes, cutting between characters and preferring the last space in the second half.
pub fn wrap(text: &str, budget: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    let budget = budget.max(4); // a char is at most 4 bytes: always progress
    while !rest.is_empty() {
        if rest.len() <= budget {
            out.push(rest.to_owned());
            break;
        }
        let mut cut = budget;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(space) = rest
            .get(..cut)
            .and_then(|head| head.rfind(' '))
            .filter(|&at| at > cut / 2)
        {
            cut = space;
        }
        let (head, tail) = rest.split_at_checked(cut).unwrap_or((rest, ""));
        out.push(head.trim_end().to_owned());
        rest = tail.trim_start();
    }
    out
}

/// The texts sent for `alert`, each at most `budget` bytes (see the module guarantees).
pub fn render(alert: &Alert, style: Style, budget: usize) -> Vec<String> {
    let title = strip(&alert.title);
    let title = if title.is_empty() {
        strip(&alert.subject)
    } else {
        title
    };
    let header = format!("{} {title}", severity_tag(alert, style.colour));
    let max = style.max_lines.max(2);
    if alert.resolve {
        return vec![cut(&header, budget)];
    }
    if !alert.digest.is_empty() {
        let (members, _) = present::digest_lines(alert, max - 1, usize::MAX, no_escape);
        let mut texts = vec![cut(&header, budget)];
        texts.extend(members.iter().map(|line| cut(line, budget)));
        return texts;
    }
    let mut logical = vec![header];
    let summary = strip(&alert.summary);
    if !summary.is_empty() && summary != title {
        logical.push(summary.clone());
    }
    let mut first_body_line = true;
    for raw in alert.body.split(['\n', '\r']) {
        let line = strip(raw);
        if line.is_empty() {
            continue;
        }
        // The summary is usually the body's first line: don't say it twice.
        if first_body_line && line == summary {
            first_body_line = false;
            continue;
        }
        first_body_line = false;
        logical.push(line);
    }
    let mut texts: Vec<String> = logical
        .iter()
        .flat_map(|line| wrap(line, budget))
        .filter(|text| !text.is_empty())
        .collect();
    if texts.len() > max {
        let more = texts.len() - (max - 1);
        texts.truncate(max - 1);
        let mut marker = format!("… {more} more lines");
        crate::irc::wire::cut_to(&mut marker, budget);
        texts.push(marker);
    }
    texts
}

/// `text` cut to `budget` bytes, between characters, marked with `…` when cut.
fn cut(text: &str, budget: usize) -> String {
    let mut marker = [0u8; 4];
    // As `wrap`: a character is at most 4 bytes, so a text always says something.
    fit(
        text,
        budget.max(4),
        ELLIPSIS.encode_utf8(&mut marker),
        no_escape,
        char::len_utf8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(max_lines: usize) -> Style {
        Style {
            notice: false,
            colour: false,
            max_lines,
        }
    }

    #[test]
    fn strips_formatting_and_controls() {
        assert_eq!(strip("\x0304,12red\x03 \x02bold\x02\x0F"), "red bold");
        assert_eq!(strip("\x03123"), "3", "two digits are consumed, not three");
        assert_eq!(strip("\x03,5x"), ",5x", "a lone comma is text");
        assert_eq!(strip("\x04FF00AA,00ff00hex\x04"), "hex");
        assert_eq!(strip("\x04FF00"), "FF00", "short hex is text");
        assert_eq!(
            strip("a\r\nQUIT :x\0b\x01ACTION\x01\u{85}\u{2028}c"),
            "a QUIT :x b ACTION c"
        );
        assert_eq!(strip("  \t "), "");
    }

    #[test]
    fn budget_matches_the_reference_example() {
        // nick 16, user 11, host 63, target 18 → 388 bytes (reference/sinks.md §5.4).
        let who = Identity {
            nick: "n".repeat(16),
            user: Some("u".repeat(11)),
            host: Some("h".repeat(63)),
            userlen: None,
        };
        assert_eq!(budget(&who, "PRIVMSG", &"#".repeat(18)), 388);
        assert_eq!(budget(&who, "NOTICE", &"#".repeat(18)), 389);
        let unknown = Identity {
            user: None,
            host: None,
            ..who
        };
        assert_eq!(budget(&unknown, "PRIVMSG", &"#".repeat(18)), 388);
    }

    #[test]
    fn wraps_on_characters_and_spaces() {
        let text = "ü".repeat(100); // 200 bytes
        let parts = wrap(&text, 51);
        assert!(parts.iter().all(|p| p.len() <= 51 && !p.is_empty()));
        assert_eq!(parts.concat(), text);
        assert_eq!(wrap("aaaa bbbb cccc", 10), ["aaaa bbbb", "cccc"]);
        assert_eq!(wrap("", 10), Vec::<String>::new());
    }

    #[test]
    fn caps_lines_with_a_marker() {
        let mut alert = Alert::sample();
        alert.summary = String::new();
        alert.body = (1..=10).map(|i| format!("line {i}\n")).collect();
        let texts = render(&alert, style(4), 400);
        assert_eq!(texts.len(), 4);
        assert_eq!(
            texts[0],
            "\x02[WARNING]\x02 cron on web01.example.net: /usr/local/bin/backup.sh"
        );
        assert_eq!(texts[1], "line 1");
        assert_eq!(texts[3], "… 8 more lines");
    }

    #[test]
    fn summary_is_not_repeated_and_colour_is_two_digit() {
        let alert = Alert::sample();
        let texts = render(
            &alert,
            Style {
                colour: true,
                ..style(10)
            },
            400,
        );
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[0].starts_with("\x02\x0307[WARNING]\x0F "));
    }

    #[test]
    fn hostile_mail_has_no_controls_left() {
        let mut alert = Alert::sample();
        alert.title = "x\r\nQUIT :pwned\x0304red".into();
        alert.body = "\x01DCC SEND x\x01\r\nJOIN #evil\0\n".into();
        for text in render(&alert, style(10), 100) {
            assert!(
                !text.contains(['\r', '\n', '\0', '\x01', '\x03']),
                "{text:?}"
            );
        }
    }
}
