//! A minimal LMTP client (RFC 2033), independent of herald: hands one message to a
//! [`crate::Dovecot`]'s LMTP listener the way Postfix's `lmtp` transport does.
//!
//! It returns only once the server confirmed the delivery (the per-recipient `250`), so a
//! caller can time "delivery confirmed". Every read is bounded by [`LMTP_TIMEOUT`].

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Per reply. Dovecot answers in milliseconds; the margin is for a loaded CI machine.
pub const LMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Delivers `raw` to `recipient` over LMTP at 127.0.0.1:`port`; `Ok` once the server said
/// `250` for the recipient after the data.
pub async fn deliver(port: u16, recipient: &str, raw: &[u8]) -> Result<()> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to LMTP at 127.0.0.1:{port}"))?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, "220").await.context("LMTP greeting")?;
    write.write_all(b"LHLO localhost\r\n").await?;
    expect(&mut read, "250").await.context("LHLO")?;
    write.write_all(b"MAIL FROM:<root@localhost>\r\n").await?;
    expect(&mut read, "250").await.context("MAIL FROM")?;
    write
        .write_all(format!("RCPT TO:<{recipient}>\r\n").as_bytes())
        .await?;
    expect(&mut read, "250").await.context("RCPT TO")?;
    write.write_all(b"DATA\r\n").await?;
    expect(&mut read, "354").await.context("DATA")?;
    write.write_all(&dot_stuffed(raw)).await?;
    write.write_all(b".\r\n").await?;
    expect(&mut read, "250").await.context("delivery")?;
    write.write_all(b"QUIT\r\n").await?;
    Ok(())
}

/// `raw` with CRLF line ends, lines starting with `.` doubled, and a final CRLF.
fn dot_stuffed(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let mut out = Vec::with_capacity(raw.len() + 16);
    for line in text.lines() {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one (possibly multi-line) reply and fails unless its code is `code`.
async fn expect<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R, code: &str) -> Result<()> {
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(LMTP_TIMEOUT, read.read_line(&mut line))
            .await
            .context("LMTP server did not answer in time")??;
        if n == 0 {
            bail!("LMTP server closed the connection");
        }
        if !line.starts_with(code) {
            bail!("LMTP server said {:?}, expected {code}", line.trim_end());
        }
        // "250-..." continues; "250 ..." ends the reply.
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}
