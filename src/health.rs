//! `herald health`: asks a running daemon's `GET /readyz` whether it is ready, for a container's
//! HEALTHCHECK (distroless and scratch images have no curl). Plain HTTP/1.1 over loopback or
//! the configured address; nothing but the status line is read, and every failure is a
//! sentence naming the address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Asks `listen`'s `/readyz` within `timeout`; `Ok` if it answered 200.
pub async fn check(listen: SocketAddr, timeout: Duration) -> Result<()> {
    let address = reachable(listen);
    let status = tokio::time::timeout(timeout, readyz(address))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "http://{address}/readyz did not answer within {}",
                humantime::format_duration(timeout)
            )
        })??;
    if status == 200 {
        println!("http://{address}/readyz: ready");
        Ok(())
    } else {
        bail!("http://{address}/readyz answered {status}: not ready")
    }
}

/// Where to connect for a daemon listening on `listen`: a wildcard address (`0.0.0.0`, `::`)
/// is reached over loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The status code of `GET /readyz` at `address`.
async fn readyz(address: SocketAddr) -> Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| {
            format!("cannot connect to http://{address}/readyz (is herald running?)")
        })?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .with_context(|| format!("cannot ask http://{address}/readyz"))?;
    // The status line is all that is needed; 64 bytes hold it.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 64 {
        let n = stream
            .read(&mut buf)
            .await
            .with_context(|| format!("cannot read the answer of http://{address}/readyz"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("http://{address}/readyz did not answer HTTP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_is_reached_over_loopback() {
        let any: SocketAddr = "0.0.0.0:9469".parse().unwrap();
        assert_eq!(reachable(any), "127.0.0.1:9469".parse().unwrap());
        let any6: SocketAddr = "[::]:9469".parse().unwrap();
        assert_eq!(reachable(any6), "[::1]:9469".parse().unwrap());
        let one: SocketAddr = "10.0.0.5:9469".parse().unwrap();
        assert_eq!(reachable(one), one);
    }
}
