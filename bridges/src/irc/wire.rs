//! The IRC wire format: parsing what the server sends and building what herald sends.
//!
//! Guarantees:
//! - [`line()`] is the only way an outgoing line is made, and whatever its arguments hold, its
//!   result contains no CR, LF or NUL and is at most [`MAX_LINE_BYTES`] bytes, cut on a UTF-8
//!   boundary: a value can never end the line early and start another command \[RFC2812\] §2.3.
//!   Middle parameters also lose spaces (a space would shift every later parameter).
//! - [`Message::parse`] never panics, whatever the bytes (invalid UTF-8 is replaced, overlong
//!   lines are the reader's business).

use base64::Engine as _;

/// One line, without its CR LF: 512 bytes including CR LF \[RFC2812\] §2.3, \[MIRC\].
pub const MAX_LINE_BYTES: usize = 510;

/// A SASL response is sent in chunks of at most 400 bytes of base64 \[V3-SASL\].
pub const SASL_CHUNK: usize = 400;

/// A parsed server line: `[@tags] [:source] COMMAND params… [:trailing]` \[MIRC\].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `nick!user@host` or a server name, without the leading `:`.
    pub source: Option<String>,
    /// The command or three-digit numeric, upper-cased.
    pub command: String,
    /// Every parameter, the trailing one last (its `:` removed).
    pub params: Vec<String>,
}

impl Message {
    /// Parses one line (with or without its CR LF); `None` for a line with no command.
    pub fn parse(raw: &[u8]) -> Option<Message> {
        let text = String::from_utf8_lossy(raw);
        let mut rest = text.trim_end_matches(['\r', '\n']).trim_start_matches(' ');
        // IRCv3 message tags: none are negotiated, but a server may still send some.
        if rest.starts_with('@') {
            rest = rest.split_once(' ').map_or("", |(_, r)| r).trim_start();
        }
        let mut source = None;
        if let Some(after) = rest.strip_prefix(':') {
            let (src, r) = after.split_once(' ').unwrap_or((after, ""));
            source = Some(src.to_owned());
            rest = r.trim_start_matches(' ');
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing.to_owned());
                break;
            }
            let (param, r) = rest.split_once(' ').unwrap_or((rest, ""));
            params.push(param.to_owned());
            rest = r;
        }
        Some(Message {
            source,
            command: command.to_ascii_uppercase(),
            params,
        })
    }

    /// Parameter `index`, or "" when absent.
    pub fn param(&self, index: usize) -> &str {
        self.params.get(index).map_or("", String::as_str)
    }

    /// The last parameter (the trailing one, usually text), or "".
    pub fn last(&self) -> &str {
        self.params.last().map_or("", String::as_str)
    }

    /// The nick of the source, when it is a user (`nick!user@host`).
    pub fn source_nick(&self) -> Option<&str> {
        let source = self.source.as_deref()?;
        Some(source.split(['!', '@']).next().unwrap_or(source))
    }
}

/// Splits `nick!user@host` into its three parts; `None` unless all three are present.
pub fn split_prefix(prefix: &str) -> Option<(&str, &str, &str)> {
    let (nick, rest) = prefix.split_once('!')?;
    let (user, host) = rest.split_once('@')?;
    (!nick.is_empty() && !user.is_empty() && !host.is_empty()).then_some((nick, user, host))
}

fn push_clean(out: &mut String, text: &str, middle: bool) {
    for ch in text.chars() {
        match ch {
            '\r' | '\n' | '\0' => out.push(' '),
            ' ' if middle => out.push('_'),
            _ => out.push(ch),
        }
    }
}

/// Builds one outgoing line (without CR LF): `verb`, `middle` parameters, then `trailing` as
/// the last parameter after ` :` when given. See the module guarantees.
pub fn line(verb: &str, middle: &[&str], trailing: Option<&str>) -> String {
    let mut out = String::new();
    push_clean(&mut out, verb, true);
    for param in middle {
        out.push(' ');
        // A middle parameter may not be empty or start with ':' (it would become trailing).
        let param = param.trim_start_matches(':');
        push_clean(&mut out, if param.is_empty() { "*" } else { param }, true);
    }
    if let Some(text) = trailing {
        out.push_str(" :");
        push_clean(&mut out, text, false);
    }
    cut_to(&mut out, MAX_LINE_BYTES);
    out
}

/// Shortens `text` to at most `max` bytes, on a character boundary.
pub fn cut_to(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
}

/// The `AUTHENTICATE` lines answering the server's `AUTHENTICATE +` for SASL PLAIN:
/// base64(`authzid NUL authcid NUL password`) with an empty authzid, in 400-byte chunks, and
/// `AUTHENTICATE +` after a final chunk of exactly 400 bytes \[V3-SASL\].
pub fn sasl_plain(username: &str, password: &str) -> Vec<String> {
    let raw = format!("\0{username}\0{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
    let mut lines = Vec::new();
    let mut rest = encoded.as_str();
    while !rest.is_empty() {
        // base64 is ASCII: every byte is a boundary.
        let (chunk, tail) = rest
            .split_at_checked(SASL_CHUNK.min(rest.len()))
            .unwrap_or((rest, ""));
        lines.push(format!("AUTHENTICATE {chunk}"));
        rest = tail;
    }
    if encoded.len() % SASL_CHUNK == 0 {
        lines.push("AUTHENTICATE +".to_owned());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_lines() {
        let m = Message::parse(b":irc.test PONG irc.test :tok1\r\n").unwrap();
        assert_eq!(m.source.as_deref(), Some("irc.test"));
        assert_eq!(m.command, "PONG");
        assert_eq!(m.params, ["irc.test", "tok1"]);
        let m = Message::parse(b"@time=x :a!b@c privmsg #x :hello  world").unwrap();
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#x", "hello  world"]);
        assert_eq!(m.source_nick(), Some("a"));
        let m = Message::parse(b"PING :x").unwrap();
        assert_eq!((m.source.as_deref(), m.last()), (None, "x"));
        let m = Message::parse(b":s CAP * LS * :multi-prefix sasl").unwrap();
        assert_eq!(m.params, ["*", "LS", "*", "multi-prefix sasl"]);
        assert!(Message::parse(b"").is_none());
        assert!(Message::parse(b":only-source").is_none());
        assert!(Message::parse(b"\xff\xfe :\x00").is_some());
    }

    #[test]
    fn lines_cannot_inject() {
        let l = line("PRIVMSG", &["#chan x"], Some("a\r\nQUIT :bye\0"));
        assert_eq!(l, "PRIVMSG #chan_x :a  QUIT :bye ");
        assert_eq!(line("JOIN", &[":#a", ""], None), "JOIN #a *");
        let long = line("PRIVMSG", &["#c"], Some(&"é".repeat(400)));
        assert!(long.len() <= MAX_LINE_BYTES);
    }

    #[test]
    fn sasl_plain_matches_the_spec_example() {
        // IRCv3 sasl-3.1 example: base64("jilles\0jilles\0sesame") with authzid = authcid.
        let raw = base64::engine::general_purpose::STANDARD.encode("jilles\0jilles\0sesame");
        assert_eq!(raw, "amlsbGVzAGppbGxlcwBzZXNhbWU=");
        assert_eq!(
            sasl_plain("jilles", "sesame"),
            ["AUTHENTICATE AGppbGxlcwBzZXNhbWU="]
        );
        // 300 raw bytes → exactly 400 base64 bytes → an extra `AUTHENTICATE +`.
        let lines = sasl_plain("u", &"p".repeat(300 - 3));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], "AUTHENTICATE +");
        assert_eq!(sasl_plain("u", &"p".repeat(400)).len(), 2);
    }

    #[test]
    fn splits_prefixes() {
        assert_eq!(split_prefix("n!~u@h.x"), Some(("n", "~u", "h.x")));
        assert_eq!(split_prefix("irc.test"), None);
    }
}
