//! Text helpers shared by sinks: mail content is hostile, so what reaches a one-line medium
//! has no control characters, and every cut falls on a character boundary.

/// The marker appended where text was cut.
pub const ELLIPSIS: char = '…';

/// `text` on one line: CR, LF, tabs and every other control character become a space, runs of
/// spaces fold to one, and the result is at most `max_chars` characters (with [`ELLIPSIS`]
/// as the last one when cut).
pub fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    let mut count = 0;
    let mut pending_space = false;
    for ch in text.chars() {
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

#[cfg(test)]
mod tests {
    use super::*;

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
