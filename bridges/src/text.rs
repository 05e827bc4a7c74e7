//! Text helpers shared by sinks: mail content is hostile, so what reaches a one-line medium
//! has no control characters, and every cut falls on a character boundary.
//!
//! Invisible format characters ([`is_format`]: Unicode's category Cf — bidi overrides and
//! isolates such as U+202E, zero-width spaces and joiners, the BOM, soft hyphens) are dropped
//! from mail text wherever it is one-lined ([`one_line`]), cut into lines ([`first_lines`]) or
//! escaped ([`escape_backticks`], the sinks' own escapes): a U+202E in a subject would
//! otherwise show `exe.doc` as `cod.exe` in every chat, and a zero-width space could hide a
//! word from a reader or a filter. Only herald's own [`ZWSP`], inserted after escaping, reaches
//! a sink.
//!
//! Guarantees: no function here panics on any input; every cut keeps the start of the text
//! (the most useful part), falls between two characters and is marked with [`ELLIPSIS`] (or
//! the caller's marker); [`fit`] never splits an escape sequence produced by its `escape`
//! function, so a cut can never leave a broken `&amp;` or reopen a mention.

/// The marker appended where text was cut.
pub const ELLIPSIS: char = '…';

/// Whether `ch` is an invisible format character (Unicode general category Cf, as of Unicode
/// 16): dropped from mail text, never replaced by a space (a soft hyphen or zero-width space
/// sits inside a word).
pub fn is_format(ch: char) -> bool {
    matches!(ch,
        '\u{AD}'
        | '\u{600}'..='\u{605}'
        | '\u{61C}'
        | '\u{6DD}'
        | '\u{70F}'
        | '\u{890}'..='\u{891}'
        | '\u{8E2}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}')
}

/// `text` without [`is_format`] characters.
pub fn strip_format(text: &str) -> String {
    text.chars().filter(|&ch| !is_format(ch)).collect()
}

/// `text` on one line: CR, LF, tabs and every other control character become a space, runs of
/// spaces fold to one, format characters ([`is_format`]) are dropped, and the result is at
/// most `max_chars` characters (with [`ELLIPSIS`] as the last one when cut).
pub fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut count = 0;
    let mut pending_space = false;
    for ch in text.chars() {
        if is_format(ch) {
            continue;
        }
        if ch.is_control() || ch.is_whitespace() {
            pending_space = count > 0;
            continue;
        }
        let needed = usize::from(pending_space) + 1;
        if count + needed > max_chars {
            return truncate_with_marker(out, max_chars);
        }
        if pending_space {
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        out.push(ch);
        count += 1;
    }
    out
}

/// Cuts `text` to at most `max_chars` characters, the last of them [`ELLIPSIS`].
pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    truncate_with_marker(text.chars().take(max_chars).collect(), max_chars)
}

fn truncate_with_marker(mut text: String, max_chars: usize) -> String {
    if max_chars == 0 {
        return String::new();
    }
    while text.chars().count() > max_chars - 1 {
        text.pop();
    }
    let trimmed = text.trim_end().len();
    text.truncate(trimmed);
    text.push(ELLIPSIS);
    text
}

/// A zero-width space: inserted to break up sequences a medium would interpret (a code fence,
/// an `@mention`) without changing what a reader sees.
pub const ZWSP: char = '\u{200B}';

/// Appends `text` to `out`, escaped by `escape`, cut so that the result costs at most `budget`
/// units (a unit is what `cost` says one output character costs: 1 for characters, 2 for a
/// GSM-7 extension character, …). When cut, the end is trimmed of whitespace and `marker` is
/// appended; an escape unit (the output of one `escape` call) is never split. Returns the
/// escaped, fitted text.
pub fn fit(
    text: &str,
    budget: usize,
    marker: &str,
    mut escape: impl FnMut(char, &mut String),
    cost: impl Fn(char) -> usize,
) -> String {
    let marker_cost: usize = marker.chars().map(&cost).sum();
    let mut out = String::new();
    let mut used = 0usize;
    // Byte length of `out` at the last point where the marker would still fit after it.
    let mut cut_at = 0usize;
    let mut piece = String::new();
    for ch in text.chars() {
        piece.clear();
        escape(ch, &mut piece);
        let piece_cost: usize = piece.chars().map(&cost).sum();
        if used + piece_cost > budget {
            out.truncate(cut_at);
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            if marker_cost <= budget {
                out.push_str(marker);
            }
            return out;
        }
        out.push_str(&piece);
        used += piece_cost;
        if used + marker_cost <= budget {
            cut_at = out.len();
        }
    }
    out
}

/// [`fit`] counting characters, with [`ELLIPSIS`] as the marker.
pub fn fit_chars(text: &str, max_chars: usize, escape: impl FnMut(char, &mut String)) -> String {
    fit(text, max_chars, "…", escape, |_| 1)
}

/// The identity escape, for [`fit`].
pub fn no_escape(ch: char, out: &mut String) {
    out.push(ch);
}

/// The first `max_lines` lines of `body`, for a code block: CRLF and CR become LF, tabs become
/// four spaces, every other control character and format character is dropped, trailing
/// spaces and blank lines are
/// removed. When lines were left out, a last line says how many.
pub fn first_lines(body: &str, max_lines: usize) -> String {
    let normalized = body.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::new();
    let mut total = 0usize;
    for (index, line) in normalized.split('\n').enumerate() {
        total = index + 1;
        if index >= max_lines {
            continue;
        }
        let mut clean = String::with_capacity(line.len());
        for ch in line.chars() {
            if ch == '\t' {
                clean.push_str("    ");
            } else if !ch.is_control() && !is_format(ch) {
                clean.push(ch);
            }
        }
        out.push_str(clean.trim_end());
        out.push('\n');
    }
    let kept = out.trim_end().len();
    out.truncate(kept);
    // Lines left out, not counting trailing blank ones.
    let meaningful = normalized.trim_end().split('\n').count();
    if total > max_lines && meaningful > max_lines {
        out.push_str(&format!("\n[… {} more lines]", meaningful - max_lines));
    }
    out
}

/// Breaks every run of backticks with [`ZWSP`] so that text placed in a Markdown code block
/// can never close it (or open another): "```" becomes "`\u{200B}`\u{200B}`". Drops format
/// characters, so the only ZWSPs in the result are these.
pub fn escape_backticks(ch: char, out: &mut String) {
    if is_format(ch) {
        return;
    }
    out.push(ch);
    if ch == '`' {
        out.push(ZWSP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_never_splits_an_escape() {
        let amp = |ch: char, out: &mut String| {
            if ch == '&' {
                out.push_str("&amp;")
            } else {
                out.push(ch)
            }
        };
        assert_eq!(fit_chars("a&b", 10, amp), "a&amp;b");
        // "a&amp;" is 6, plus the marker 7 > 6: the whole escape goes.
        assert_eq!(fit_chars("a&b", 6, amp), "a…");
        assert_eq!(fit_chars("abc", 0, amp), "");
        assert_eq!(fit("ab cd", 4, "...", no_escape, |_| 1), "a...");
        assert_eq!(fit("abcdef", 5, "...", no_escape, |_| 1), "ab...");
    }

    #[test]
    fn first_lines_keeps_the_start_and_counts_the_rest() {
        assert_eq!(first_lines("a\r\nb\tc\x07\n\n", 5), "a\nb    c");
        assert_eq!(first_lines("1\n2\n3\n4\n", 2), "1\n2\n[… 2 more lines]");
    }

    #[test]
    fn backtick_runs_are_broken() {
        let out = fit_chars("```x```", 100, escape_backticks);
        assert!(!out.contains("``"));
        assert_eq!(out.replace(ZWSP, ""), "```x```");
    }

    #[test]
    fn format_characters_are_dropped_where_mail_text_is_shaped() {
        let hostile = "a\u{202E}b\u{200B}c\u{FEFF}d\u{AD}e\u{2066}f\u{E0041}g";
        assert_eq!(one_line(hostile, 100), "abcdefg");
        assert_eq!(first_lines(hostile, 5), "abcdefg");
        assert_eq!(strip_format(hostile), "abcdefg");
        // Only herald's own zero-width spaces survive the escape.
        assert_eq!(
            fit_chars("`\u{200B}`", 100, escape_backticks),
            "`\u{200B}`\u{200B}"
        );
        assert!(!is_format('a') && !is_format(' ') && !is_format('é'));
    }

    #[test]
    fn one_line_strips_controls_and_folds_space() {
        assert_eq!(one_line("a\r\nb\t\0c  d\n", 100), "a b c d");
    }

    #[test]
    fn one_line_cuts_on_characters_with_marker() {
        let out = one_line("ééééé ééééé", 6);
        assert_eq!(out, "ééééé…");
        assert_eq!(out.chars().count(), 6);
    }

    #[test]
    fn truncate_keeps_short_text() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("abcd", 0), "");
    }
}
