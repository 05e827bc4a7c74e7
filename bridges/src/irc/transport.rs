//! The byte stream under an IRC connection: plain TCP or TLS (rustls with the ring provider,
//! like the rest of herald; no OpenSSL).
//!
//! Guarantees: TLS always verifies the server's certificate against the platform's roots plus
//! the optional `ca_file`, for the configured server name; there is no switch to turn
//! verification off. Connecting (TCP and TLS handshake together) is bounded by a deadline.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A connected stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to `server:port`, with TLS when `tls` is given, within `deadline`.
pub async fn connect(
    server: &str,
    port: u16,
    tls: Option<&Arc<ClientConfig>>,
    deadline: Duration,
) -> Result<Box<dyn Stream>, String> {
    let attempt = async {
        let tcp = TcpStream::connect((server, port))
            .await
            .map_err(|e| format!("cannot connect to {server}:{port}: {e}"))?;
        // Alert lines are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let Some(config) = tls else {
            return Ok(Box::new(tcp) as Box<dyn Stream>);
        };
        let name = ServerName::try_from(server.to_owned())
            .map_err(|e| format!("invalid TLS server name {server:?}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {server}:{port} failed: {e}"))?;
        Ok(Box::new(stream) as Box<dyn Stream>)
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("connecting to {server}:{port} timed out")))
}
