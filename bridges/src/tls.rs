//! TLS client configuration shared by everything herald connects to (the IMAP server, IRC):
//! rustls with the ring provider (no OpenSSL, so the binary can be static), trusting the
//! platform's roots plus an optional extra CA file. Verification cannot be turned off.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A client configuration trusting the platform's roots plus the certificates in `ca_file`
/// (PEM). It reads files, so build it when a connection is made ready, not in validation.
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
