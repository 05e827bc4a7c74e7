//! Patterns for string conditions: shell-style globs translated to anchored regexes, and
//! [`Patterns`], the compiled globs or regexes of one condition.
//!
//! The glob syntax is in the `route` module docs. Guarantees: a glob matches the whole value;
//! every character outside `*`, `?`, `[...]` and `\` is literal (regex metacharacters
//! included); a glob or regex that does not compile is an error located at its value.

use regex::Regex;

use super::condition::Item;
use crate::error::{ConfigError, Locate};

/// Compiled globs or regexes: a value matches if any one of them does.
#[derive(Debug, Clone)]
pub(super) struct Patterns(Vec<Regex>);

impl Patterns {
    pub(super) fn is_match(&self, text: &str) -> bool {
        self.0.iter().any(|re| re.is_match(text))
    }

    pub(super) fn regexes(
        items: &[Item<'_>],
        locate: &dyn Locate,
    ) -> Result<Patterns, ConfigError> {
        items
            .iter()
            .map(|item| {
                Regex::new(item.text).map_err(|e| {
                    locate.at(item.span.clone(), &item.key, format!("invalid regex: {e}"))
                })
            })
            .collect::<Result<_, _>>()
            .map(Patterns)
    }

    pub(super) fn globs(
        items: &[Item<'_>],
        case_insensitive: bool,
        locate: &dyn Locate,
    ) -> Result<Patterns, ConfigError> {
        items
            .iter()
            .map(|item| {
                glob_regex(item.text, case_insensitive).map_err(|message| {
                    locate.at(
                        item.span.clone(),
                        &item.key,
                        format!("invalid glob {:?}: {message}", item.text),
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Patterns)
    }
}

/// Translates a shell-style glob into an anchored regex (see the `route` module docs for the
/// syntax).
pub(crate) fn glob_regex(glob: &str, case_insensitive: bool) -> Result<Regex, String> {
    let mut re = String::with_capacity(glob.len() * 2 + 12);
    // `s`: `*` also spans a newline, should a hostile value carry one.
    re.push_str(if case_insensitive {
        "(?is)^(?:"
    } else {
        "(?s)^(?:"
    });
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '\\' => match chars.next() {
                Some(next) => push_literal(&mut re, next),
                None => return Err("a trailing `\\` escapes nothing".into()),
            },
            '[' => {
                re.push('[');
                if chars.next_if(|&n| n == '!' || n == '^').is_some() {
                    re.push('^');
                }
                let mut first = true;
                let mut closed = false;
                while let Some(n) = chars.next() {
                    // A `]` first in the set is a member, as in shells.
                    if n == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    let member = if n == '\\' {
                        chars.next().ok_or("a trailing `\\` escapes nothing")?
                    } else {
                        n
                    };
                    if n != '\\' && member == '-' {
                        re.push('-');
                        continue;
                    }
                    // Characters that mean something inside a regex class (`&&`, `~~` and `--`
                    // are set operations there) are made literal.
                    if matches!(member, '[' | ']' | '\\' | '^' | '&' | '~' | '-') {
                        re.push('\\');
                    }
                    re.push(member);
                }
                if !closed {
                    return Err("`[` without a closing `]`".into());
                }
                re.push(']');
            }
            other => push_literal(&mut re, other),
        }
    }
    re.push_str(")$");
    Regex::new(&re).map_err(|e| match e {
        regex::Error::Syntax(_) => "not a valid character set".to_owned(),
        other => other.to_string(),
    })
}

fn push_literal(re: &mut String, c: char) {
    let mut buf = [0; 4];
    re.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_translation() {
        let g = |glob: &str, text: &str| glob_regex(glob, false).unwrap().is_match(text);
        assert!(g("a*c", "abbbc") && g("a*c", "ac") && !g("a*c", "acd"));
        assert!(g("a?c", "abc") && !g("a?c", "ac"));
        assert!(g("[]x]", "]") && g("[]x]", "x"));
        assert!(g("[!a]", "b") && !g("[!a]", "a"));
        assert!(g("[a-c]", "b") && g("[a-]", "-"));
        assert!(
            g("a.b", "a.b") && !g("a.b", "axb"),
            "regex metacharacters are literal"
        );
        assert!(g("\\*", "*") && !g("\\*", "x"));
        assert!(g("[&&]", "&") && g("[\\]]", "]"));
        assert!(glob_regex("a\\", false).is_err());
        assert!(glob_regex("[abc", false).is_err());
    }
}
