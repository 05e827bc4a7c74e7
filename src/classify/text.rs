//! Small, total text helpers shared by the parsers: finding `key: value` lines, the lines
//! under a heading, and words that report a failure. None of them indexes or slices by byte
//! offset, so none can panic on any input.

use std::sync::LazyLock;

use regex::Regex;

/// Words by which a program's output reports a problem (ASCII word boundaries: a Unicode `\b`
/// would keep the regex crate from using its fast DFA) (cron and anacron do not report a
/// job's exit status, so its output is all there is).
static FAILURE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?-u:\b)(error|errors|fail|failed|failure|fatal|cannot|can't|couldn't|unable to|denied|no such file|not found|exception|traceback|panic|segmentation fault|killed|timed? ?out|no space left)(?-u:\b)")
        .unwrap_or_else(|_| unreachable!())
});

/// How much of a body is searched for failure words: what a job prints first says whether it
/// failed, and a bound keeps classification fast on megabytes of output.
const FAILURE_SCAN_BYTES: usize = 16 * 1024;

/// Whether `text` (its first [`FAILURE_SCAN_BYTES`]) contains a word that reports a problem.
pub(super) fn reports_failure(text: &str) -> bool {
    FAILURE.is_match(prefix(text, FAILURE_SCAN_BYTES))
}

/// The first line of `text` that contains a failure word, trimmed.
pub(super) fn first_failure_line(text: &str) -> Option<&str> {
    prefix(text, FAILURE_SCAN_BYTES)
        .lines()
        .map(str::trim)
        .find(|l| FAILURE.is_match(l))
}

/// At most the first `max_bytes` bytes of `text`, cut on a character boundary.
pub(super) fn prefix(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// The value of the first line `KEY: value` (any leading blanks, any blanks around the colon,
/// key compared without regard to case), trimmed.
pub(super) fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| field_of_line(line, key))
}

/// The value of `line` when it is `KEY: value` (see [`field`]).
pub(super) fn field_of_line<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let (name, value) = line.split_once(':')?;
    name.trim().eq_ignore_ascii_case(key).then(|| value.trim())
}

/// The non-blank lines after the first line that contains `heading`, up to the next blank
/// line (leading blank lines skipped), trimmed.
pub(super) fn block_after<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| !l.contains(heading));
    lines.next();
    lines
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect()
}

/// The first whitespace-separated word of `text`.
pub(super) fn first_word(text: &str) -> Option<&str> {
    text.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_cuts_on_char_boundary() {
        assert_eq!(prefix("ééé", 3), "é");
        assert_eq!(prefix("abc", 10), "abc");
    }

    #[test]
    fn field_finds_indented_keys() {
        let text = "x\n   host name:  web01\n   DNS domain: example.net\n";
        assert_eq!(field(text, "host name"), Some("web01"));
        assert_eq!(field(text, "dns domain"), Some("example.net"));
        assert_eq!(field(text, "missing"), None);
    }

    #[test]
    fn block_after_heading() {
        let text = "a\nPackages:\n\n one\n two\n\nlater\n";
        assert_eq!(block_after(text, "Packages:"), vec!["one", "two"]);
    }
}
