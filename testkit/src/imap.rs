//! [`RawImap`]: a deliberately minimal IMAP4rev1 client over plain TCP, for tests and
//! benchmarks that need to drive Dovecot independently of herald's own IMAP code (put
//! mail in, look at flags, measure Dovecot's IDLE latency).
//!
//! It speaks just enough of RFC 3501: tagged commands, responses read line by line with
//! `{n}` literals followed, synchronizing literals for APPEND (wait for `+`), and IDLE
//! (RFC 2177). Every exchange runs under [`COMMAND_TIMEOUT`]; after a timeout or I/O error
//! in a command the connection may be mid-response, so it is marked broken and refuses
//! further commands.
//!
//! Reading is cancel-safe: bytes go into a buffer owned by the connection and a response is
//! only taken out once complete. So a wait for `* N EXISTS` during IDLE may time out and be
//! retried, or followed by DONE, without losing a partly received line.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for one command and its response. Dovecot answers in milliseconds on
/// loopback; 10 s only guards against a hung test, it is never waited out normally.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest literal accepted from the server: far above any test message, and a guard
/// against allocating gigabytes on a garbled `{n}`.
const MAX_LITERAL: usize = 64 * 1024 * 1024;

/// Bytes asked for per socket read.
const READ_CHUNK: usize = 64 * 1024;

/// One complete server response: the line(s) with any literals inlined, plus the literals
/// on their own (for binary-exact message bodies).
#[derive(Debug)]
struct Response {
    /// The whole response, literals included, without the final CRLF.
    text: Vec<u8>,
    /// Each `{n}` literal's bytes, in order.
    literals: Vec<Vec<u8>>,
    /// When the socket read that completed this response returned.
    at: Instant,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

/// What SELECT (or EXAMINE) reported about a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    /// Number of messages (`* N EXISTS`).
    pub exists: u32,
    /// `[UIDVALIDITY n]`.
    pub uidvalidity: u32,
    /// `[UIDNEXT n]`: the UID the next appended message will get.
    pub uidnext: u32,
}

/// A logged-in raw IMAP connection. See the module documentation.
#[derive(Debug)]
pub struct RawImap {
    /// The connection.
    stream: TcpStream,
    /// Bytes read from the server and not yet taken out as a complete response.
    inbuf: Vec<u8>,
    /// When the last socket read returned: the arrival time of everything in `inbuf`'s
    /// newest bytes, used as [`Response::at`].
    last_read: Instant,
    /// Counter for command tags (`t1`, `t2`, …).
    next_tag: u32,
    /// Tag of the IDLE command in progress, if any.
    idle_tag: Option<String>,
    /// Untagged responses that arrived before IDLE's `+` continuation; they are looked at
    /// first by [`RawImap::idle_wait_exists`].
    idle_backlog: VecDeque<Response>,
    /// Set after a timeout or I/O error: the stream may be mid-response.
    broken: bool,
}

impl RawImap {
    /// Connects to `127.0.0.1:port`, checks the greeting and logs in with LOGIN.
    pub async fn connect(port: u16, user: &str, pass: &str) -> Result<Self> {
        let stream = tokio::time::timeout(COMMAND_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .with_context(|| format!("connecting to 127.0.0.1:{port}: timed out"))?
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        let mut imap = Self {
            stream,
            inbuf: Vec::new(),
            last_read: Instant::now(),
            next_tag: 1,
            idle_tag: None,
            idle_backlog: VecDeque::new(),
            broken: false,
        };
        imap.begin()?;
        let greeting = within(COMMAND_TIMEOUT, imap.read_response()).await;
        let greeting = imap.finish(greeting).context("reading the greeting")?;
        ensure!(
            greeting.text.starts_with(b"* OK"),
            "unexpected IMAP greeting: {}",
            greeting.text()
        );
        imap.command(&format!("LOGIN {} {}", quote(user), quote(pass)))
            .await
            .context("LOGIN")?;
        Ok(imap)
    }

    /// Runs one command (without tag) and returns its untagged responses, literals
    /// inlined, without CRLF. A NO or BAD answer is an error carrying the server's text.
    pub async fn command(&mut self, cmd: &str) -> Result<Vec<String>> {
        let (untagged, _) = self.run(cmd).await?;
        Ok(untagged.iter().map(Response::text).collect())
    }

    /// SELECTs `mailbox` (read-write) and reports its counters.
    pub async fn select(&mut self, mailbox: &str) -> Result<Selected> {
        self.open("SELECT", mailbox).await
    }

    /// EXAMINEs `mailbox`: like SELECT but read-only, so it neither changes flags nor
    /// claims `\Recent`.
    pub async fn examine(&mut self, mailbox: &str) -> Result<Selected> {
        self.open("EXAMINE", mailbox).await
    }

    /// Appends `raw` to `mailbox` with the given system or keyword flags (e.g. `\Seen`)
    /// and returns the new message's UID from UIDPLUS `[APPENDUID v uid]`. The message
    /// is stored once this returns.
    pub async fn append(&mut self, mailbox: &str, flags: &[&str], raw: &[u8]) -> Result<u32> {
        let tag = self.tag();
        let line = format!(
            "{tag} APPEND {} ({}) {{{}}}\r\n",
            quote(mailbox),
            flags.join(" "),
            raw.len()
        );
        self.begin()?;
        let exchange = within(COMMAND_TIMEOUT, async {
            self.write(line.as_bytes()).await?;
            // Synchronizing literal: the server must agree before the bytes are sent.
            loop {
                let resp = self.read_response().await?;
                if resp.text.starts_with(b"+") {
                    break;
                }
                if is_tagged(&resp, &tag) {
                    // Refused up front (e.g. no such mailbox); the exchange is complete.
                    return Ok(resp);
                }
            }
            let mut data = raw.to_vec();
            data.extend_from_slice(b"\r\n");
            self.write(&data).await?;
            Ok(self.read_until_tagged(&tag).await?.1)
        })
        .await;
        let tagged = self
            .finish(exchange)
            .with_context(|| format!("APPEND to {mailbox}"))?;
        check_ok(&tagged, &tag).with_context(|| format!("APPEND to {mailbox}"))?;
        let tagged = tagged.text();
        appenduid(&tagged).with_context(|| format!("no APPENDUID in {tagged:?}"))
    }

    /// `UID SEARCH <query>`: the matching UIDs, ascending as the server sent them.
    pub async fn uid_search(&mut self, query: &str) -> Result<Vec<u32>> {
        let lines = self.command(&format!("UID SEARCH {query}")).await?;
        let mut uids = Vec::new();
        for line in lines {
            if let Some(rest) = line.strip_prefix("* SEARCH") {
                for word in rest.split_whitespace() {
                    uids.push(
                        word.parse()
                            .with_context(|| format!("bad SEARCH line {line:?}"))?,
                    );
                }
            }
        }
        Ok(uids)
    }

    /// The flags of message `uid` in the selected mailbox, as the server spells them.
    pub async fn uid_flags(&mut self, uid: u32) -> Result<Vec<String>> {
        let lines = self
            .command(&format!("UID FETCH {uid} (UID FLAGS)"))
            .await?;
        for line in &lines {
            if fetch_uid(line) != Some(uid) {
                // `UID FETCH n` may also report other messages' flag updates.
                continue;
            }
            if let Some(flags) = paren_list_after(line, "FLAGS (") {
                return Ok(flags.split_whitespace().map(str::to_owned).collect());
            }
        }
        bail!("no FLAGS for UID {uid} in {lines:?}")
    }

    /// The full raw message `uid` of the selected mailbox, byte-exact
    /// (`BODY.PEEK[]`, so `\Seen` is not set).
    pub async fn uid_fetch_body(&mut self, uid: u32) -> Result<Vec<u8>> {
        let (untagged, _) = self
            .run(&format!("UID FETCH {uid} (UID BODY.PEEK[])"))
            .await?;
        untagged
            .into_iter()
            .find(|r| fetch_uid(&r.text()) == Some(uid))
            .and_then(|r| r.literals.into_iter().next())
            .with_context(|| format!("no body for UID {uid}"))
    }

    /// Sends IDLE and waits for the server's `+` continuation: from then on the server
    /// pushes mailbox changes. A mailbox must be selected.
    pub async fn idle_start(&mut self) -> Result<()> {
        ensure!(self.idle_tag.is_none(), "IDLE already in progress");
        let tag = self.tag();
        let line = format!("{tag} IDLE\r\n");
        self.begin()?;
        let exchange = within(COMMAND_TIMEOUT, async {
            self.write(line.as_bytes()).await?;
            let mut backlog = VecDeque::new();
            loop {
                let resp = self.read_response().await?;
                if resp.text.starts_with(b"+") {
                    return Ok(Ok(backlog));
                }
                if is_tagged(&resp, &tag) {
                    return Ok(Err(resp));
                }
                backlog.push_back(resp);
            }
        })
        .await;
        match self.finish(exchange).context("IDLE")? {
            Ok(backlog) => {
                self.idle_backlog = backlog;
                self.idle_tag = Some(tag);
                Ok(())
            }
            Err(refusal) => bail!("IDLE refused: {}", refusal.text()),
        }
    }

    /// During IDLE, waits for the next `* N EXISTS` and returns N together with the
    /// instant its line arrived (taken as soon as the socket read returned, so it can be
    /// used to measure notification latency). A timeout leaves the connection usable: wait
    /// again, or end IDLE with [`RawImap::idle_done`].
    pub async fn idle_wait_exists(&mut self, timeout: Duration) -> Result<(u32, Instant)> {
        ensure!(self.idle_tag.is_some(), "not in IDLE");
        while let Some(resp) = self.idle_backlog.pop_front() {
            if let Some(n) = exists(&resp.text()) {
                return Ok((n, resp.at));
            }
        }
        ensure!(!self.broken, "connection unusable after an earlier error");
        let wait = async {
            loop {
                let resp = self.read_response().await?;
                if let Some(n) = exists(&resp.text()) {
                    return Ok((n, resp.at));
                }
                if resp.text.starts_with(b"* BYE") {
                    bail!("server ended the session: {}", resp.text());
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(seen)) => Ok(seen),
            Ok(Err(e)) => {
                self.broken = true;
                Err(e.context("waiting for EXISTS during IDLE"))
            }
            Err(_) => bail!("no EXISTS during IDLE within {timeout:?}"),
        }
    }

    /// Ends IDLE with DONE and waits for the IDLE command's tagged OK.
    pub async fn idle_done(&mut self) -> Result<()> {
        let tag = self.idle_tag.take().context("not in IDLE")?;
        self.idle_backlog.clear();
        self.begin()?;
        let exchange = within(COMMAND_TIMEOUT, async {
            self.write(b"DONE\r\n").await?;
            self.read_until_tagged(&tag).await
        })
        .await;
        let (_, tagged) = self.finish(exchange).context("ending IDLE")?;
        check_ok(&tagged, &tag).context("ending IDLE")
    }

    /// IDLE until the next `* N EXISTS` (at most `timeout`), then DONE. Returns N and the
    /// instant the EXISTS line was read.
    pub async fn idle_until_exists(&mut self, timeout: Duration) -> Result<(u32, Instant)> {
        self.idle_start().await?;
        let seen = self.idle_wait_exists(timeout).await?;
        self.idle_done().await?;
        Ok(seen)
    }

    /// Sends LOGOUT and waits for its OK, so the server frees the connection slot now
    /// rather than when it notices the closed socket.
    pub async fn logout(mut self) -> Result<()> {
        self.run("LOGOUT").await.map(drop)
    }

    async fn open(&mut self, verb: &str, mailbox: &str) -> Result<Selected> {
        let lines = self.command(&format!("{verb} {}", quote(mailbox))).await?;
        let mut selected = Selected {
            exists: 0,
            uidvalidity: 0,
            uidnext: 0,
        };
        for line in &lines {
            if let Some(n) = exists(line) {
                selected.exists = n;
            } else if let Some(n) = response_code_number(line, "UIDVALIDITY") {
                selected.uidvalidity = n;
            } else if let Some(n) = response_code_number(line, "UIDNEXT") {
                selected.uidnext = n;
            }
        }
        Ok(selected)
    }

    /// Sends a command and reads up to and including its tagged response, which must be OK.
    async fn run(&mut self, cmd: &str) -> Result<(Vec<Response>, Response)> {
        ensure!(self.idle_tag.is_none(), "command {cmd:?} sent during IDLE");
        let tag = self.tag();
        let line = format!("{tag} {cmd}\r\n");
        self.begin()?;
        let exchange = within(COMMAND_TIMEOUT, async {
            self.write(line.as_bytes()).await?;
            self.read_until_tagged(&tag).await
        })
        .await;
        let context = || format!("IMAP command {:?}", redact(cmd));
        let (untagged, tagged) = self.finish(exchange).with_context(context)?;
        check_ok(&tagged, &tag).with_context(context)?;
        Ok((untagged, tagged))
    }

    fn tag(&mut self) -> String {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    /// Starts an exchange with the server. The connection counts as broken until
    /// [`RawImap::finish`] sees the exchange succeed: a timeout or transport error leaves
    /// the stream at an unknown position.
    fn begin(&mut self) -> Result<()> {
        ensure!(!self.broken, "connection unusable after an earlier error");
        self.broken = true;
        Ok(())
    }

    fn finish<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_ok() {
            self.broken = false;
        }
        result
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .await
            .context("writing to server")
    }

    /// Reads responses up to and including the one tagged `tag`, whatever its status.
    async fn read_until_tagged(&mut self, tag: &str) -> Result<(Vec<Response>, Response)> {
        let mut untagged = Vec::new();
        loop {
            let resp = self.read_response().await?;
            if is_tagged(&resp, tag) {
                return Ok((untagged, resp));
            }
            untagged.push(resp);
        }
    }

    /// Reads one complete response (a line, with any `{n}` literals and the line's
    /// continuation after each). Cancel-safe: partial data stays in `inbuf`.
    async fn read_response(&mut self) -> Result<Response> {
        loop {
            if let Some((consumed, literals)) = split_response(&self.inbuf)? {
                let mut text: Vec<u8> = self.inbuf.drain(..consumed).collect();
                text.truncate(text.len().saturating_sub(2));
                return Ok(Response {
                    text,
                    literals,
                    at: self.last_read,
                });
            }
            self.inbuf.reserve(READ_CHUNK);
            // `read_buf` is cancel-safe: if this future is dropped, no bytes were taken.
            let n = self
                .stream
                .read_buf(&mut self.inbuf)
                .await
                .context("reading from server")?;
            self.last_read = Instant::now();
            ensure!(n > 0, "server closed the connection");
        }
    }
}

/// If `buf` starts with a complete response, returns its length (including the final
/// CRLF) and its literals.
fn split_response(buf: &[u8]) -> Result<Option<(usize, Vec<Vec<u8>>)>> {
    let mut pos = 0;
    let mut literals = Vec::new();
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = rest.get(..eol).unwrap_or_default();
        let after_line = pos + eol + 2;
        let Some(len) = literal_len(line) else {
            return Ok(Some((after_line, literals)));
        };
        ensure!(len <= MAX_LITERAL, "literal of {len} bytes is too large");
        let Some(literal) = buf.get(after_line..after_line + len) else {
            return Ok(None);
        };
        literals.push(literal.to_vec());
        pos = after_line + len;
    }
}

/// Quotes an IMAP string (RFC 3501 quoted: `\` and `"` escaped).
pub(crate) fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Hides LOGIN credentials from error messages.
fn redact(cmd: &str) -> &str {
    if cmd.to_ascii_uppercase().starts_with("LOGIN ") {
        "LOGIN ..."
    } else {
        cmd
    }
}

/// Runs `fut` with a timeout, turning the timeout into an error.
async fn within<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => bail!("timed out after {timeout:?}"),
    }
}

/// Fails unless the tagged response is OK (a NO or BAD leaves the connection usable).
fn check_ok(tagged: &Response, tag: &str) -> Result<()> {
    let status = tagged.text.get(tag.len() + 1..).unwrap_or_default();
    ensure!(
        status
            .get(..2)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"OK")),
        "server answered {}",
        tagged.text()
    );
    Ok(())
}

fn is_tagged(resp: &Response, tag: &str) -> bool {
    resp.text
        .strip_prefix(tag.as_bytes())
        .is_some_and(|rest| rest.starts_with(b" "))
}

/// `{123}` (or `{123+}`) at the end of a line.
fn literal_len(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = inner.get(open + 1..)?;
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// N from `* N EXISTS`.
fn exists(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("*"), Some(n), Some(w)) if w.eq_ignore_ascii_case("EXISTS") => n.parse().ok(),
        _ => None,
    }
}

/// The number in a `[CODE n]` response code.
fn response_code_number(line: &str, code: &str) -> Option<u32> {
    let start = line.find(&format!("[{code} "))? + code.len() + 2;
    let rest = line.get(start..)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The UID from a tagged `OK [APPENDUID uidvalidity uid]`.
fn appenduid(tagged: &str) -> Option<u32> {
    let start = tagged.find("[APPENDUID ")? + "[APPENDUID ".len();
    let mut words = tagged.get(start..)?.split([' ', ']']);
    let _uidvalidity = words.next()?;
    words.next()?.parse().ok()
}

/// The UID in a `* n FETCH (... UID u ...)` line.
fn fetch_uid(line: &str) -> Option<u32> {
    let start = line.find("UID ")? + 4;
    line.get(start..)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The contents of the parenthesized list that starts with `prefix`, e.g. `FLAGS (`.
fn paren_list_after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let start = line.find(prefix)? + prefix.len();
    let rest = line.get(start..)?;
    rest.get(..rest.find(')')?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literal_lengths() {
        assert_eq!(literal_len(b"* 1 FETCH (UID 1 BODY[] {42}"), Some(42));
        assert_eq!(literal_len(b"a APPEND x {7+}"), Some(7));
        assert_eq!(literal_len(b"* OK done"), None);
        assert_eq!(literal_len(b"* OK {x}"), None);
    }

    #[test]
    fn splits_responses_only_when_complete() {
        let full = b"* 1 FETCH (UID 4 BODY[] {6}\r\nab\r\ncd)\r\nt1 OK\r\n";
        for cut in 0..full.len() {
            let part = &full[..cut];
            let got = split_response(part).unwrap();
            let first_end = full.len() - b"t1 OK\r\n".len();
            if cut < first_end {
                assert_eq!(got, None, "cut at {cut}");
            } else {
                assert_eq!(got, Some((first_end, vec![b"ab\r\ncd".to_vec()])));
            }
        }
        assert!(split_response(b"* OK {999999999999}\r\n").is_err());
    }

    #[test]
    fn parses_untagged_data() {
        assert_eq!(exists("* 17 EXISTS"), Some(17));
        assert_eq!(exists("* 17 RECENT"), None);
        assert_eq!(
            response_code_number("* OK [UIDVALIDITY 1795541847] UIDs valid", "UIDVALIDITY"),
            Some(1_795_541_847)
        );
        assert_eq!(
            appenduid("t3 OK [APPENDUID 1795541847 12] Append completed."),
            Some(12)
        );
        let line = "* 1 FETCH (UID 9 FLAGS (\\Seen \\Recent))";
        assert_eq!(fetch_uid(line), Some(9));
        assert_eq!(paren_list_after(line, "FLAGS ("), Some("\\Seen \\Recent"));
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
