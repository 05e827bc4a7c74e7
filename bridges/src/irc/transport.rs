//! The byte stream under an IRC connection: plain TCP or TLS (rustls with the ring provider,
//! like the rest of herald; no OpenSSL).
//!
//! Guarantees: TLS always verifies the server's certificate against the platform's roots plus
//! the optional `ca_file`, for the configured server name; there is no switch to turn
//! verification off. Connecting (TCP and TLS handshake together) is bounded by a deadline.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A connected stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Builds the TLS client configuration: platform roots plus the certificates in `ca_file`
/// (PEM). Reads files, so it runs when the sink is built, not when it is validated.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "Skipped an unreadable platform trust root.");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let mut count = 0;
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| format!("invalid PEM in ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("unusable certificate in ca_file {}: {e}", path.display()))?;
            count += 1;
        }
        if count == 0 {
            return Err(format!("ca_file {} holds no certificate", path.display()));
        }
    }
    if roots.is_empty() {
        return Err("no trust roots: the system has no CA certificates and no ca_file".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

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
