//! The trust walk: does a message's `Received:` chain stay within `[trust]`'s networks, or did
//! it come in from a stranger (spec.md "Trust")? This is SpamAssassin's `trusted_networks`
//! walk, so that a forged smartd or sudo mail from the Internet never pages anyone.
//!
//! [`walk`] reads the `Received:` headers from the top (written by the mailbox's own MTA)
//! down. A hop without a peer address (local submission, an LMTP or LDA hand-off on the same
//! host), a loopback peer or OpenSMTPD's `[local]` socket is the machine's own handling, and
//! so is a peer in `networks`: the walk goes on. The first hop received from any other address
//! is the **origin**: the mail is untrusted, and nothing below it is read (it may be forged).
//! Reaching the bottom without one means trusted.
//!
//! Guarantees:
//! - Only what the trusted MTAs wrote is believed. The peer is taken from where each MTA writes
//!   it: Postfix, Sendmail, OpenSMTPD and Google `from HELO (RDNS [ADDR])`, Exim `from RDNS
//!   ([ADDR] helo=...)` and `from [ADDR] (helo=...)`, Microsoft and qmail `from HELO (ADDR)`,
//!   IPv4, IPv6 and `[IPv6:...]`. The HELO name is the client's to choose, so a literal there
//!   counts only when the MTA wrote no other (Exim's unverified form), and a `helo=[...]` never.
//! - Never trusted by mistake: a hop that cannot be read (no `; date` at its end, a value cut
//!   short, text where the MTA writes none, an address that does not parse) or that names a
//!   second address outside the trusted networks (a HELO crafted to look like a hop) makes the
//!   mail untrusted; so does a chain longer than [`MAX_HOPS`].
//! - `Authentication-Results` count only when `[trust] authserv_id` is set, only the topmost
//!   header of that server above the origin (below it, anyone could have written it), and only
//!   `dkim=pass` with `header.d`, or `dmarc=pass` with `header.from`, in `domains`.
//! - Bounded work on hostile input: at most [`MAX_HOPS`] headers walked, each read in one
//!   pass over its (already bounded) text, no regular expressions, no recursion, no panics.

use std::net::IpAddr;

use herald_bridges::text::{one_line, ELLIPSIS};
use serde::Serialize;

use super::MAX_NAME_CHARS;
use crate::config::TrustConfig;

/// The most `Received:` headers walked. Real chains have a handful; a longer one is not
/// walked to its end, so the mail is untrusted.
pub const MAX_HOPS: usize = 50;

/// The hop where mail entered from outside the trusted networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// The peer's address, as the receiving MTA saw it.
    pub address: IpAddr,
    /// Its name: the reverse DNS name the MTA recorded, else the name it greeted with.
    pub host: Option<String>,
}

/// What one hop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Step {
    /// No peer address, a loopback one or a local socket: the same machine's handling.
    #[serde(rename = "local")]
    Local,
    /// Received from an address in `networks`.
    #[serde(rename = "trusted network")]
    TrustedNetwork,
    /// Received from any other address: where the mail came in from outside.
    #[serde(rename = "origin")]
    Origin,
    /// The peer cannot be read: untrusted.
    #[serde(rename = "unreadable")]
    Unreadable,
}

impl Step {
    /// How `--explain` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Local => "local",
            Step::TrustedNetwork => "trusted network",
            Step::Origin => "origin",
            Step::Unreadable => "unreadable",
        }
    }
}

/// One hop as the walk read it, for `--explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HopTrace {
    /// Its place in the chain: 1 is the topmost `Received:`.
    pub hop: usize,
    /// The peer address; `None` for a hop without one.
    pub from: Option<IpAddr>,
    /// The peer's name, where the hop gives one.
    pub host: Option<String>,
    /// What the hop is.
    pub verdict: Step,
    /// Why, where the address does not say: "no peer address", or what could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The outcome of [`walk`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether the mail is trusted.
    pub trusted: bool,
    /// The origin hop, when the walk met one.
    pub origin: Option<Hop>,
    /// The hops read, from the top, down to the one that ended the walk.
    pub hops: Vec<HopTrace>,
    /// The `Authentication-Results` that made otherwise untrusted mail trusted.
    pub vouched: Option<String>,
    /// One line saying why.
    pub reason: String,
}

/// Walks `headers` (name, raw value; in order, top first) as spec.md "Trust" says.
pub fn walk(headers: &[(String, String)], config: &TrustConfig) -> Verdict {
    let mut hops: Vec<HopTrace> = Vec::new();
    for (position, (name, value)) in headers.iter().enumerate() {
        if !name.eq_ignore_ascii_case("Received") {
            continue;
        }
        let number = hops.len() + 1;
        if number > MAX_HOPS {
            let reason = format!(
                "more than {MAX_HOPS} Received headers: the chain was not walked to its end"
            );
            return stopped(headers, position, config, None, hops, reason);
        }
        let trace = judge(number, value, config);
        match trace.verdict {
            Step::Local | Step::TrustedNetwork => hops.push(trace),
            Step::Origin => {
                let origin = trace.from.map(|address| Hop {
                    address,
                    host: trace.host.clone(),
                });
                let reason = format!(
                    "hop {number} from {} is outside the [trust] networks",
                    shown_peer(&trace)
                );
                hops.push(trace);
                return stopped(headers, position, config, origin, hops, reason);
            }
            Step::Unreadable => {
                let reason = format!(
                    "hop {number} cannot be read ({})",
                    trace.note.as_deref().unwrap_or("no peer")
                );
                hops.push(trace);
                return stopped(headers, position, config, None, hops, reason);
            }
        }
    }
    Verdict {
        trusted: true,
        origin: None,
        hops,
        vouched: None,
        reason: "every hop is local or from a [trust] network".to_owned(),
    }
}

/// The verdict of a walk that stopped at the header at `position`: untrusted, unless the
/// trusted server's `Authentication-Results` above it vouch for the mail.
fn stopped(
    headers: &[(String, String)],
    position: usize,
    config: &TrustConfig,
    origin: Option<Hop>,
    hops: Vec<HopTrace>,
    reason: String,
) -> Verdict {
    let vouched = headers
        .get(..position)
        .and_then(|above| vouched(above, config));
    Verdict {
        trusted: vouched.is_some(),
        origin,
        hops,
        vouched,
        reason,
    }
}

/// `10.0.0.5 (relay.example.net)`, or `no peer address`.
fn shown_peer(trace: &HopTrace) -> String {
    match (&trace.from, &trace.host) {
        (Some(address), Some(host)) => format!("{address} ({host})"),
        (Some(address), None) => address.to_string(),
        (None, _) => "no peer address".to_owned(),
    }
}

impl Verdict {
    /// `--explain`'s lines: one per hop, then the verdict, each `    trust: ...`.
    pub fn explain_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .hops
            .iter()
            .map(|h| {
                let from = match (&h.from, &h.note) {
                    (Some(_), _) => format!(" from {}", shown_peer(h)),
                    (None, Some(note)) if h.verdict != Step::Unreadable => format!(" ({note})"),
                    (None, _) => String::new(),
                };
                let note = match (&h.note, h.verdict) {
                    (Some(note), Step::Unreadable) => format!(": {note}"),
                    _ => String::new(),
                };
                format!("trust: hop {}{from}: {}{note}", h.hop, h.verdict.as_str())
            })
            .collect();
        lines.push(match (&self.vouched, self.trusted) {
            (Some(vouched), _) => format!("trust: trusted: {}, but {vouched}", self.reason),
            (None, true) => format!("trust: trusted: {}", self.reason),
            (None, false) => format!("trust: untrusted: {}", self.reason),
        });
        lines
    }
}

/// An address a hop names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addr {
    Ip(IpAddr),
    /// OpenSMTPD's `[local]`: a client on its Unix socket.
    LocalSocket,
}

/// What one `Received:` value says about where the message came from.
#[derive(Debug, Default)]
struct Reading {
    /// The peer, where the MTA wrote it; `None` for a hop without one.
    peer: Option<Addr>,
    /// Other addresses the line names where a peer could be (a crafted HELO can put them there).
    others: Vec<Addr>,
    /// The peer's name.
    host: Option<String>,
}

/// Reads and judges one hop.
fn judge(number: usize, value: &str, config: &TrustConfig) -> HopTrace {
    let mut trace = HopTrace {
        hop: number,
        from: None,
        host: None,
        verdict: Step::Unreadable,
        note: None,
    };
    let reading = match read(value) {
        Ok(reading) => reading,
        Err(why) => {
            trace.note = Some(why.to_owned());
            return trace;
        }
    };
    trace.host = reading.host;
    let class = |addr: Addr| match addr {
        Addr::LocalSocket => Step::Local,
        Addr::Ip(ip) if ip.to_canonical().is_loopback() => Step::Local,
        Addr::Ip(ip) if config.trusts(ip) => Step::TrustedNetwork,
        Addr::Ip(_) => Step::Origin,
    };
    match reading.peer {
        Some(Addr::Ip(ip)) => trace.from = Some(ip),
        Some(Addr::LocalSocket) => trace.note = Some("a local socket".to_owned()),
        None => trace.note = Some("no peer address".to_owned()),
    }
    let peer_step = reading.peer.map_or(Step::Local, class);
    if peer_step == Step::Origin {
        trace.verdict = Step::Origin;
        return trace;
    }
    let mut step = peer_step;
    for other in &reading.others {
        match class(*other) {
            Step::Origin => {
                let shown = match other {
                    Addr::Ip(ip) => ip.to_string(),
                    Addr::LocalSocket => "local".to_owned(),
                };
                trace.note = Some(format!(
                    "it also names {shown}, outside the [trust] networks, where a peer could be"
                ));
                return trace;
            }
            Step::TrustedNetwork => step = Step::TrustedNetwork,
            Step::Local | Step::Unreadable => {}
        }
    }
    trace.verdict = step;
    trace
}

/// The clause keywords that may follow the `from` clause (RFC 5321 §4.4), lower-case.
const CLAUSES: [&str; 5] = ["by", "via", "with", "id", "for"];

/// Reads a `Received:` value (one line, as `classify::parse` keeps headers).
fn read(value: &str) -> Result<Reading, &'static str> {
    // One cut by the header bound: what was cut may have been the real peer.
    if value.ends_with(ELLIPSIS) {
        return Err("cut short");
    }
    let s = value.trim();
    let mut reading = Reading::default();
    let rest = if keyword_at(s, 0, "from") {
        let mut c = Cursor { s, at: 4 };
        c.skip_spaces();
        let domain = if c.peek() == Some(b'[') {
            Domain::Literal(c.literal().ok_or("an unclosed [ after `from`")?)
        } else {
            Domain::Name(c.word())
        };
        let mut comments = Vec::new();
        loop {
            c.skip_spaces();
            if c.peek() != Some(b'(') {
                break;
            }
            comments.push(c.comment().ok_or("an unclosed comment")?);
        }
        if !c.at_end() && !CLAUSES.iter().any(|k| keyword_at(s, c.at, k)) && c.peek() != Some(b';')
        {
            return Err("text after the sending host where no MTA writes any");
        }
        from_clause(&mut reading, &domain, &comments)?;
        s.get(c.at..).unwrap_or_default()
    } else {
        s
    };
    if !rest.contains(';') {
        return Err("no `; date` at its end");
    }
    // Whatever else looks like an address literal (not a `helo=[...]`): a HELO made to look
    // like a hop puts the real peer here.
    for literal in literals(rest) {
        if let Some(addr) = address(literal) {
            if reading.peer != Some(addr) && !reading.others.contains(&addr) {
                reading.others.push(addr);
            }
        }
    }
    Ok(reading)
}

/// The `from` clause's host: a name, or an address literal.
enum Domain<'a> {
    Name(&'a str),
    Literal(&'a str),
}

/// Fills in the peer from the `from` clause: its comments' address literals (or a comment
/// that is only an address), else a literal host (Exim's unverified form).
fn from_clause(
    reading: &mut Reading,
    domain: &Domain<'_>,
    comments: &[&str],
) -> Result<(), &'static str> {
    let mut rdns: Option<&str> = None;
    let mut helo: Option<&str> = None;
    for comment in comments {
        helo = helo.or_else(|| helo_in(comment));
        let whole = address(comment.trim()).filter(|a| matches!(a, Addr::Ip(_)));
        let found: Vec<(Addr, Option<&str>)> = match whole {
            Some(addr) => vec![(addr, None)],
            None => word_literals(comment)
                .map(|(literal, before)| {
                    address(literal)
                        .map(|a| (a, before))
                        .ok_or("an address literal that does not parse")
                })
                .collect::<Result<_, _>>()?,
        };
        for (addr, before) in found {
            if reading.peer.is_none() {
                reading.peer = Some(addr);
                rdns = before;
            } else if reading.peer != Some(addr) && !reading.others.contains(&addr) {
                reading.others.push(addr);
            }
        }
    }
    if reading.peer.is_none() {
        if let Domain::Literal(literal) = domain {
            reading.peer = Some(address(literal).ok_or("an address literal that does not parse")?);
        }
    }
    let name = match domain {
        Domain::Name(name) => Some(*name),
        Domain::Literal(_) => None,
    };
    // No peer found, yet something where MTAs write one looks like an address: a form this
    // walk does not know, which must not pass for a local hand-off.
    if reading.peer.is_none() {
        let mut words = comments
            .iter()
            .flat_map(|c| c.split([' ', '(', ')', ',']))
            .chain(name);
        if words.any(looks_like_address) {
            return Err("an address in a form the walk cannot read");
        }
    }
    reading.host = rdns
        .or(name)
        .or(helo)
        .map(|h| one_line(h.trim_end_matches('.'), MAX_NAME_CHARS))
        .filter(|h| !h.is_empty());
    Ok(())
}

/// Whether `word` looks like an IPv4 or IPv6 address, perhaps bracketed or with a port.
fn looks_like_address(word: &str) -> bool {
    let w = word.trim_matches(|c| matches!(c, '[' | ']'));
    let dots = w.matches('.').count();
    let colons = w.matches(':').count();
    w.bytes().any(|b| b.is_ascii_digit())
        && w.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
        && (dots == 3 || colons >= 2)
}

/// Exim's `helo=NAME` in a comment.
fn helo_in(comment: &str) -> Option<&str> {
    comment
        .split([' ', '(', ')'])
        .find_map(|w| w.strip_prefix("helo="))
        .filter(|h| !h.is_empty())
}

/// The address literals of `comment` that begin a word (so not `helo=[...]`), each with the
/// name written before it (`rdns` in `(rdns [1.2.3.4])`, `ident@rdns` made `rdns`), if any.
fn word_literals(comment: &str) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
    let bytes = comment.as_bytes();
    bytes.iter().enumerate().filter_map(move |(i, &b)| {
        let starts_word = i == 0 || matches!(bytes.get(i - 1), Some(b' ' | b'('));
        if b != b'[' || !starts_word {
            return None;
        }
        let inner = comment.get(i + 1..)?;
        let literal = inner.get(..inner.find(']')?)?;
        let before = comment
            .get(..i)?
            .rsplit([' ', '('])
            .find(|w| !w.is_empty())
            .map(|w| w.rsplit('@').next().unwrap_or(w))
            .filter(|w| !w.eq_ignore_ascii_case("unknown"));
        Some((literal, before))
    })
}

/// Every `[...]` of `text` not right after `=`.
fn literals(text: &str) -> impl Iterator<Item = &str> + '_ {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().filter_map(move |(i, &b)| {
        if b != b'[' || (i > 0 && bytes.get(i - 1) == Some(&b'=')) {
            return None;
        }
        let inner = text.get(i + 1..)?;
        inner.get(..inner.find(']')?)
    })
}

/// An address literal's content: `1.2.3.4`, `2001:db8::1`, `IPv6:2001:db8::1`, `local`.
/// IPv4-mapped IPv6 becomes IPv4, as the networks compare it.
fn address(literal: &str) -> Option<Addr> {
    let text = literal.trim();
    if text.eq_ignore_ascii_case("local") {
        return Some(Addr::LocalSocket);
    }
    let text = match text.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => text.get(5..)?,
        _ => text,
    };
    text.parse::<IpAddr>()
        .ok()
        .map(|ip| Addr::Ip(ip.to_canonical()))
}

/// Whether `s` has the word `keyword` (case-insensitive) at byte `at`, followed by a space,
/// a comment or the end.
fn keyword_at(s: &str, at: usize, keyword: &str) -> bool {
    let end = at + keyword.len();
    s.get(at..end)
        .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
        && matches!(s.as_bytes().get(end), None | Some(b' ' | b'('))
}

/// A position in a one-line header value. Every position it stops at is at an ASCII byte or
/// the end, so slicing there never splits a character.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    fn at_end(&self) -> bool {
        self.at >= self.s.len()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    /// A run up to a space or a comment.
    fn word(&mut self) -> &'a str {
        let start = self.at;
        while self.peek().is_some_and(|b| b != b' ' && b != b'(') {
            self.at += 1;
        }
        self.s.get(start..self.at).unwrap_or_default()
    }

    /// At `[`: the text up to `]` (the cursor after it); `None` if it never closes.
    fn literal(&mut self) -> Option<&'a str> {
        let inner = self.s.get(self.at + 1..)?;
        let len = inner.find(']')?;
        self.at += len + 2;
        inner.get(..len)
    }

    /// At `(`: the comment's text, nested comments and quoted pairs included (the cursor after
    /// its `)`); `None` if it never closes.
    fn comment(&mut self) -> Option<&'a str> {
        let start = self.at + 1;
        let mut depth = 0usize;
        let bytes = self.s.as_bytes();
        while let Some(&b) = bytes.get(self.at) {
            self.at += 1;
            match b {
                b'\\' => self.at += 1,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return self.s.get(start..self.at - 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// The `Authentication-Results` that vouch for the mail: the topmost header of `[trust]
/// authserv_id` in `above`, if it says `dkim=pass` with `header.d`, or `dmarc=pass` with
/// `header.from`, in `domains`.
fn vouched(above: &[(String, String)], config: &TrustConfig) -> Option<String> {
    let id = config.authserv_id.as_deref()?;
    let (head, results) = above
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Authentication-Results"))
        .map(|(_, value)| uncommented(value))
        .filter_map(|value| {
            let parts = split_outside_quotes(&value, ';');
            let head = parts.first()?.split_whitespace().next()?.to_owned();
            Some((head, parts))
        })
        .find(|(head, _)| head.eq_ignore_ascii_case(id))?;
    results.iter().skip(1).find_map(|result| {
        let words = split_outside_quotes(result, ' ');
        let mut words = words.iter().map(|w| w.trim()).filter(|w| !w.is_empty());
        let (method, outcome) = words.next()?.split_once('=')?;
        let method = method.split('/').next().unwrap_or(method);
        let wanted = match method.to_ascii_lowercase().as_str() {
            "dkim" => "header.d",
            "dmarc" => "header.from",
            _ => return None,
        };
        if !outcome.eq_ignore_ascii_case("pass") {
            return None;
        }
        let domain = words.find_map(|w| {
            let (property, value) = w.split_once('=')?;
            property.eq_ignore_ascii_case(wanted).then_some(value)
        })?;
        let domain = domain.trim_matches('"').trim_end_matches('.');
        config
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
            .then(|| {
                format!(
                    "{head} says {method}=pass {wanted}={}",
                    one_line(domain, MAX_NAME_CHARS)
                )
            })
    })
}

/// `value` without its comments (RFC 5322 `(...)`, nested, outside quoted strings).
fn uncommented(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for ch in value.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(ch);
            }
            continue;
        }
        match ch {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(ch);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(ch);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                // A comment separates what is on either side of it.
                if depth == 0 {
                    out.push(' ');
                }
            }
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    out
}

/// `text` split at `separator` outside double-quoted strings.
fn split_outside_quotes(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let (mut quoted, mut escaped) = (false, false);
    for ch in text.chars() {
        if escaped {
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if ch == '"' {
            quoted = !quoted;
        } else if ch == separator && !quoted {
            parts.push(String::new());
            continue;
        }
        if let Some(last) = parts.last_mut() {
            last.push(ch);
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Network, Untrusted};

    fn config() -> TrustConfig {
        TrustConfig {
            networks: ["10.0.0.0/8", "192.0.2.25/32", "2001:db8:25::/48"]
                .iter()
                .map(|n| Network::parse(n).unwrap_or_else(|e| panic!("{e}")))
                .collect(),
            authserv_id: Some("mx1.example.net".into()),
            domains: vec!["example.net".into()],
            untrusted: Untrusted::Mark,
        }
    }

    /// The headers of `text` (one `Name: value` per line, folded lines already joined), as
    /// `classify::parse` keeps them.
    fn headers(text: &str) -> Vec<(String, String)> {
        let raw = format!("{}\nSubject: t\n\nbody\n", text.trim());
        crate::classify::parse(raw.as_bytes(), false).headers
    }

    fn verdict(text: &str) -> Verdict {
        walk(&headers(text), &config())
    }

    fn steps(v: &Verdict) -> Vec<(Option<String>, Step)> {
        v.hops
            .iter()
            .map(|h| (h.from.map(|a| a.to_string()), h.verdict))
            .collect()
    }

    fn hop(from: &str, step: Step) -> (Option<String>, Step) {
        (Some(from.to_owned()), step)
    }

    const LOCAL: (Option<String>, Step) = (None, Step::Local);

    /// Dovecot LMTP on the hub, Postfix on the hub from a Postfix relay in 10/8, that relay
    /// from Postfix's local pickup on web01.
    const POSTFIX_CHAIN: &str = "\
Received: from mx1.example.net\n\tby mx1.example.net with LMTP\n\tid kJ3pGk0GmWXbGQAAm1e1tA\n\t(envelope-from <root@web01.example.net>)\n\tfor <alerts@example.net>; Tue, 24 Nov 2026 03:10:02 +0000
Received: from relay.example.net (relay.example.net [10.1.0.25])\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n\t(No client certificate requested)\n\tby mx1.example.net (Postfix) with ESMTPS id 4Y7Gk12QZnz9sQ\n\tfor <alerts@example.net>; Tue, 24 Nov 2026 03:10:02 +0000 (UTC)
Received: from web01.example.net (web01.example.net [IPv6:2001:db8:25::11])\n\tby relay.example.net (Postfix) with ESMTP id 11AA22BB33\n\tfor <alerts@example.net>; Tue, 24 Nov 2026 03:10:01 +0000 (UTC)
Received: by web01.example.net (Postfix, from userid 0)\n\tid 4F2A11C0D3; Tue, 24 Nov 2026 03:10:01 +0000 (UTC)
From: root@web01.example.net (Cron Daemon)";

    #[test]
    fn a_postfix_chain_within_the_networks_is_trusted() {
        let v = verdict(POSTFIX_CHAIN);
        assert!(v.trusted, "{v:?}");
        assert_eq!(
            steps(&v),
            [
                LOCAL,
                hop("10.1.0.25", Step::TrustedNetwork),
                hop("2001:db8:25::11", Step::TrustedNetwork),
                LOCAL,
            ]
        );
        assert_eq!(v.hops[1].host.as_deref(), Some("relay.example.net"));
        assert_eq!(v.hops[0].note.as_deref(), Some("no peer address"));
        assert_eq!(v.origin, None);
    }

    #[test]
    fn exim_forms() {
        // Exim on the hub from an Exim smarthost client whose name verified, with port; that
        // client from one whose name did not; then local submission by a user.
        let v = verdict(
            "\
Received: from app1.example.net ([10.2.0.7]:50412 helo=app1)\n\tby mx1.example.net with esmtps  (TLS1.3) tls TLS_AES_256_GCM_SHA384\n\t(Exim 4.96)\n\t(envelope-from <root@app1.example.net>)\n\tid 1tF2Zk-0003aB-1x\n\tfor alerts@example.net; Tue, 24 Nov 2026 13:00:44 +0000
Received: from [10.2.0.8] (port=41220 helo=[192.168.7.1])\n\tby app1.example.net with esmtp (Exim 4.96)\n\t(envelope-from <root@db1>)\n\tid 1tF2Zj-0003a1-0b\n\tfor alerts@example.net; Tue, 24 Nov 2026 13:00:43 +0000
Received: from root by db1.example.net with local (Exim 4.96)\n\t(envelope-from <root@db1.example.net>)\n\tid 1tF2Zj-0003Zz-2c\n\tfor alerts@example.net; Tue, 24 Nov 2026 13:00:43 +0000",
        );
        assert!(v.trusted, "{v:?}");
        assert_eq!(
            steps(&v),
            [
                hop("10.2.0.7", Step::TrustedNetwork),
                hop("10.2.0.8", Step::TrustedNetwork),
                LOCAL
            ]
        );
        assert_eq!(v.hops[0].host.as_deref(), Some("app1.example.net"));
        assert_eq!(
            v.hops[1].host.as_deref(),
            Some("[192.168.7.1]"),
            "an unverified client is named by its HELO"
        );
        // Exim's unverified form from the Internet, with a HELO literal inside the networks:
        // the HELO is the client's to choose and does not count.
        let v = verdict(
            "Received: from [203.0.113.9] (helo=[10.0.0.1])\n\tby mx1.example.net with esmtp (Exim 4.96)\n\tid 1tF2Zj-0003a1-0b\n\tfor alerts@example.net; Tue, 24 Nov 2026 13:00:43 +0000",
        );
        assert!(!v.trusted);
        assert_eq!(steps(&v), [hop("203.0.113.9", Step::Origin)]);
        assert_eq!(
            v.origin.map(|o| o.address.to_string()).as_deref(),
            Some("203.0.113.9")
        );
        // Exim with IPv6.
        let v = verdict(
            "Received: from [2001:db8:25::7] (helo=db1)\n\tby mx1.example.net with esmtp (Exim 4.96)\n\tid 1tF2Zj-0003a1-0b; Tue, 24 Nov 2026 13:00:43 +0000",
        );
        assert_eq!(steps(&v), [hop("2001:db8:25::7", Step::TrustedNetwork)]);
    }

    #[test]
    fn sendmail_forms() {
        let v = verdict(
            "\
Received: from db1.example.net (db1.example.net [192.0.2.25])\n\tby mx1.example.net (8.15.2/8.15.2/Debian-22) with ESMTPS id 4AO1Q2aA021901\n\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT)\n\tfor <alerts@example.net>; Tue, 24 Nov 2026 02:01:02 +0100
Received: from db1.example.net (localhost [127.0.0.1])\n\tby db1.example.net (8.15.2/8.15.2/Debian-22) with ESMTP id 4AO1Q1xl021834\n\tfor <root@db1.example.net>; Tue, 24 Nov 2026 02:01:01 +0100
Received: (from root@localhost)\n\tby db1.example.net (8.15.2/8.15.2/Submit) id 4AO1Q1xk021833;\n\tTue, 24 Nov 2026 02:01:01 +0100",
        );
        assert!(v.trusted, "{v:?}");
        assert_eq!(
            steps(&v),
            [
                hop("192.0.2.25", Step::TrustedNetwork),
                hop("127.0.0.1", Step::Local),
                LOCAL
            ]
        );
        // Sendmail's ident and "may be forged" forms, from outside.
        let v = verdict(
            "Received: from helo.example.org (user@host.example.org [203.0.113.5] (may be forged))\n\tby mx1.example.net (8.15.2/8.15.2) with ESMTP id 4AO1Q2aA021901; Tue, 24 Nov 2026 02:01:02 +0100",
        );
        assert_eq!(steps(&v), [hop("203.0.113.5", Step::Origin)]);
        assert_eq!(v.hops[0].host.as_deref(), Some("host.example.org"));
    }

    #[test]
    fn opensmtpd_forms() {
        let v = verdict(
            "\
Received: from gw.example.net (gw.example.net [10.9.0.1])\n\tby mx1.example.net (OpenSMTPD) with ESMTPS id 1a2b3c4d (TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO)\n\tfor <alerts@example.net>; Tue, 24 Nov 2026 12:00:02 +0000 (UTC)
Received: from localhost (gw.example.net [local])\n\tby gw.example.net (OpenSMTPD) with ESMTPA id 9f6c3d5a\n\tfor <root@gw.example.net>; Tue, 24 Nov 2026 12:00:01 +0000 (UTC)",
        );
        assert!(v.trusted, "{v:?}");
        assert_eq!(steps(&v), [hop("10.9.0.1", Step::TrustedNetwork), LOCAL]);
        assert_eq!(v.hops[1].note.as_deref(), Some("a local socket"));
    }

    #[test]
    fn microsoft_and_google_forms() {
        let v = verdict(
            "\
Received: from mail-sor-f41.google.com (mail-sor-f41.google.com. [209.85.220.41])\n\tby mx1.example.net (Postfix) with ESMTPS id 4Y7Gk12QZnz9sQ; Tue, 24 Nov 2026 12:00:02 +0000 (UTC)
Received: from AM6PR05MB1234.eurprd05.prod.outlook.com (2603:10a6:20b:2f1::10) by AM6PR05MB5678.eurprd05.prod.outlook.com (2603:10a6:20b:2f1::11) with Microsoft SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.7316.30; Tue, 24 Nov 2026 12:00:01 +0000",
        );
        assert!(!v.trusted);
        assert_eq!(steps(&v), [hop("209.85.220.41", Step::Origin)]);
        assert_eq!(v.hops[0].host.as_deref(), Some("mail-sor-f41.google.com"));
        let v = verdict(
            "Received: from EXCH01.corp.example.net (10.3.0.4) by EXCH02.corp.example.net (10.3.0.5) with Microsoft SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.2.1544.4; Tue, 24 Nov 2026 12:00:01 +0000",
        );
        assert!(v.trusted, "{v:?}");
        assert_eq!(steps(&v), [hop("10.3.0.4", Step::TrustedNetwork)]);
        assert_eq!(v.hops[0].host.as_deref(), Some("EXCH01.corp.example.net"));
        // Google's own MX, receiving over IPv6.
        let v = verdict(
            "Received: from mail.example.org (mail.example.org. [2a01:4f8:c2c:1::5])\n\tby mx.google.com with ESMTPS id a1si123456wrb.42.2026.11.24.12.00.01\n\tfor <alerts@example.net>\n\t(version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);\n\tTue, 24 Nov 2026 12:00:01 -0800 (PST)",
        );
        assert_eq!(steps(&v), [hop("2a01:4f8:c2c:1::5", Step::Origin)]);
    }

    #[test]
    fn forged_lines_below_an_outside_hop_are_not_believed() {
        // A stranger's smartd mail carrying a made-up internal chain below the real hop.
        let v = verdict(
            "\
Received: from mx1.example.net\n\tby mx1.example.net with LMTP id kJ3pGk0GmWXbGQAAm1e1tA; Tue, 24 Nov 2026 12:00:03 +0000
Received: from nas.example.net (unknown [198.51.100.77])\n\tby mx1.example.net (Postfix) with ESMTP id 4Y7Gk12QZnz9sQ\n\tfor <alerts@example.net>; Tue, 24 Nov 2026 12:00:02 +0000 (UTC)
Received: from nas.example.net (nas.example.net [10.0.0.9])\n\tby relay.example.net (Postfix) with ESMTP id 11AA22BB33; Tue, 24 Nov 2026 12:00:01 +0000 (UTC)
Received: by nas.example.net (Postfix, from userid 0)\n\tid 4F2A11C0D3; Tue, 24 Nov 2026 12:00:01 +0000 (UTC)",
        );
        assert!(!v.trusted);
        assert_eq!(steps(&v), [LOCAL, hop("198.51.100.77", Step::Origin)]);
        assert_eq!(
            v.origin,
            Some(Hop {
                address: "198.51.100.77".parse().unwrap_or_else(|e| panic!("{e}")),
                host: Some("nas.example.net".into()),
            }),
            "no verified name: the HELO names it"
        );
        assert_eq!(
            v.reason,
            "hop 2 from 198.51.100.77 (nas.example.net) is outside the [trust] networks"
        );
    }

    #[test]
    fn a_helo_made_to_look_like_a_hop_is_not_believed() {
        // Postfix copies the HELO as it came, spaces and all: each of these hides the real
        // peer, 203.0.113.5, behind a made-up one inside the networks.
        for helo in [
            "x (relay [10.0.0.1]) by mx1.example.net",
            "x (10.0.0.1) by y",
            "[10.0.0.1] (x) by",
            "x ([10.0.0.1] helo=y)",
            "localhost by mx1.example.net with LMTP id x; Tue, 24 Nov 2026 12:00:02 +0000",
        ] {
            let v = verdict(&format!(
                "Received: from {helo} (unknown [203.0.113.5]) by mx1.example.net (Postfix) with ESMTP id 4Y7Gk12QZnz9sQ; Tue, 24 Nov 2026 12:00:02 +0000 (UTC)"
            ));
            assert!(!v.trusted, "{helo}: {v:?}");
        }
        // A plain HELO literal is harmless: the peer comment decides.
        let v = verdict(
            "Received: from [172.17.0.2] (unknown [10.0.0.5]) by mx1.example.net (Postfix) with ESMTP id 4Y7Gk12QZnz9sQ; Tue, 24 Nov 2026 12:00:02 +0000 (UTC)",
        );
        assert_eq!(steps(&v), [hop("10.0.0.5", Step::TrustedNetwork)]);
    }

    #[test]
    fn unreadable_hops_are_untrusted() {
        for (line, why) in [
            ("from web01 (web01 [10.0.0.300]) by mx1 (Postfix) id 1; Tue, 24 Nov 2026 12:00:02 +0000", "does not parse"),
            ("from web01 (web01 [10.0.0.3) by mx1 (Postfix) id 1; Tue, 24 Nov 2026 12:00:02 +0000", "cannot read"),
            ("from [10.0.0.300] (helo=x) by mx1 with esmtp id 1; Tue, 24 Nov 2026 12:00:02 +0000", "does not parse"),
            ("from [10.0.0.3 by mx1 with esmtp id 1; Tue, 24 Nov 2026 12:00:02 +0000", "unclosed ["),
            ("from web01 (web01 [10.0.0.3] by mx1 (Postfix) id 1; Tue, 24 Nov 2026 12:00:02 +0000", "unclosed comment"),
            ("from web01 (web01 [10.0.0.3]) by mx1 (Postfix) id 1", "no `; date`"),
            ("from a b (web01 [10.0.0.3]) by mx1 (Postfix) id 1; Tue, 24 Nov 2026", "text after the sending host"),
            ("by mx1 (Postfix) id 1 (from [203.0.113.5]); Tue, 24 Nov 2026", "also names 203.0.113.5"),
            ("from web01 (web01 [fe80::1%eth0]) by mx1 (Postfix) id 1; Tue, 24 Nov 2026", "does not parse"),
            ("from web01 (203.0.113.5:25) by mx1 id 1; Tue, 24 Nov 2026", "cannot read"),
            ("from 203.0.113.5 by mx1 id 1; Tue, 24 Nov 2026", "cannot read"),
        ] {
            let v = verdict(&format!("Received: {line}"));
            assert!(!v.trusted, "{line}: {v:?}");
            let last = v.hops.last().unwrap_or_else(|| panic!("{line}: no hop"));
            assert_eq!(last.verdict, Step::Unreadable, "{line}");
            assert!(
                last.note.as_deref().is_some_and(|n| n.contains(why)),
                "{line}: {last:?}"
            );
        }
        // A value cut by the header bound.
        let long = format!(
            "from {} (relay [10.0.0.1]) by mx1 (Postfix) id 1; Tue, 24 Nov 2026",
            "h".repeat(3000)
        );
        let v = walk(&[("Received".into(), one_line(&long, 2000))], &config());
        assert_eq!(v.hops[0].note.as_deref(), Some("cut short"));
    }

    #[test]
    fn no_received_at_all_is_trusted_and_too_many_is_not() {
        assert!(verdict("From: root@web01.example.net").trusted);
        let line = "Received: from localhost (localhost [127.0.0.1]) by mx1 (Postfix) id 1; Tue, 24 Nov 2026 12:00:02 +0000";
        let many: Vec<(String, String)> = (0..=MAX_HOPS)
            .map(|_| {
                (
                    "Received".to_owned(),
                    line.trim_start_matches("Received: ").to_owned(),
                )
            })
            .collect();
        assert!(walk(&many[..MAX_HOPS], &config()).trusted);
        let v = walk(&many, &config());
        assert!(!v.trusted);
        assert!(
            v.reason.starts_with("more than 50 Received headers"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn loopback_forms_continue() {
        let v = verdict(
            "\
Received: from localhost (localhost [IPv6:::1]) by mx1 (Postfix) with ESMTP id 1; Tue, 24 Nov 2026 12:00:03 +0000
Received: from mx1.example.net ([127.0.0.1]) by localhost (mx1.example.net [127.0.0.1]) (amavisd-new, port 10024) with ESMTP id 2 for <alerts@example.net>; Tue, 24 Nov 2026 12:00:02 +0000 (UTC)
Received: from web01 (web01 [::ffff:10.0.0.3]) by mx1 (Postfix) with ESMTP id 3; Tue, 24 Nov 2026 12:00:01 +0000",
        );
        assert!(v.trusted, "{v:?}");
        assert_eq!(
            steps(&v),
            [
                hop("::1", Step::Local),
                hop("127.0.0.1", Step::Local),
                hop("10.0.0.3", Step::TrustedNetwork)
            ]
        );
    }

    const OUTSIDE: &str = "Received: from mail.example.net (mail.example.net [198.51.100.7]) by mx1.example.net (Postfix) with ESMTPS id 4Y7Gk12QZnz9sQ for <alerts@example.net>; Tue, 24 Nov 2026 12:00:02 +0000 (UTC)";

    #[test]
    fn authentication_results_of_the_trusted_server_above_the_origin_vouch() {
        let dkim = "Authentication-Results: mx1.example.net;\n\tdkim=pass (2048-bit key; unprotected) header.d=example.net header.i=@example.net header.b=\"AbCdEf12\";\n\tdkim-atps=neutral";
        let v = verdict(&format!("{dkim}\n{OUTSIDE}"));
        assert!(v.trusted, "{v:?}");
        assert_eq!(
            v.vouched.as_deref(),
            Some("mx1.example.net says dkim=pass header.d=example.net")
        );
        assert_eq!(v.hops.last().map(|h| h.verdict), Some(Step::Origin));
        let dmarc = "Authentication-Results: MX1.example.net 1; spf=pass smtp.mailfrom=example.net; dmarc=pass (p=reject dis=none) header.from=Example.NET";
        assert!(verdict(&format!("{dmarc}\n{OUTSIDE}")).trusted);
        for (headers, what) in [
            (
                format!("{OUTSIDE}\n{dkim}"),
                "below the origin: the sender may have written it",
            ),
            (
                format!("{}\n{OUTSIDE}", dkim.replace("mx1.example.net", "mx9.example.org")),
                "another server's",
            ),
            (
                format!("{}\n{OUTSIDE}", dkim.replace("header.d=example.net", "header.d=example.org")),
                "another domain",
            ),
            (
                format!("{}\n{OUTSIDE}", dkim.replace("dkim=pass", "dkim=fail")),
                "not a pass",
            ),
            (
                format!("Authentication-Results: mx1.example.net; dkim=none\n{dkim}\n{OUTSIDE}"),
                "only the topmost of the trusted server's counts",
            ),
            (
                format!("Authentication-Results: mx1.example.net; spf=pass smtp.mailfrom=example.net header.d=example.net\n{OUTSIDE}"),
                "spf is not a signature",
            ),
            (
                format!("Authentication-Results: mx1.example.net; dkim=pass reason=\"header.d=example.net\" header.d=evil.example\n{OUTSIDE}"),
                "a quoted value is not a property",
            ),
            (
                format!("Authentication-Results: mx1.example.net; dkim=pass (header.d=example.net) header.d=evil.example\n{OUTSIDE}"),
                "a comment is not a property",
            ),
        ] {
            assert!(!verdict(&headers).trusted, "{what}");
        }
        let mut without = config();
        without.authserv_id = None;
        assert!(!walk(&headers(&format!("{dkim}\n{OUTSIDE}")), &without).trusted);
    }

    #[test]
    fn explain_lines_say_each_hop_and_the_verdict() {
        let v = verdict(&format!(
            "Received: from mx1.example.net by mx1.example.net with LMTP id 1; Tue, 24 Nov 2026 12:00:03 +0000\n\
             Received: from relay (relay [10.0.0.5]) by mx1 (Postfix) id 2; Tue, 24 Nov 2026 12:00:03 +0000\n{OUTSIDE}"
        ));
        assert_eq!(
            v.explain_lines(),
            [
                "trust: hop 1 (no peer address): local",
                "trust: hop 2 from 10.0.0.5 (relay): trusted network",
                "trust: hop 3 from 198.51.100.7 (mail.example.net): origin",
                "trust: untrusted: hop 3 from 198.51.100.7 (mail.example.net) is outside the [trust] networks",
            ]
        );
        let json = serde_json::json!(v);
        assert_eq!(json["hops"][1]["from"], "10.0.0.5");
        assert_eq!(json["hops"][1]["verdict"], "trusted network");
        assert_eq!(json["trusted"], false);
    }

    #[test]
    fn hostile_values_never_panic() {
        let nasty = [
            "",
            "from",
            "from ",
            "from (",
            "from [",
            "from [[]]",
            "from x (((((",
            "from x ()))) by",
            "from x (\\",
            "from x ([",
            "from x ([]) by ;",
            "from é (é [é]) by é; é",
            "[ [ [ ;",
            "from x ([IPv6:]) by y;",
            "from x ([ipv6:zz]) by y;",
            "from \u{1F600} (\u{1F600} [1.2.3.4]) by;",
        ];
        for value in nasty {
            let _ = walk(&[("Received".into(), value.into())], &config());
            let _ = walk(
                &[
                    ("Authentication-Results".into(), value.into()),
                    (
                        "Received".into(),
                        OUTSIDE.trim_start_matches("Received: ").into(),
                    ),
                ],
                &config(),
            );
        }
    }
}
