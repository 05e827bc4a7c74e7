//! TLS for the IMAP connection: rustls (no OpenSSL, so the binary can be static), trusting the
//! platform's roots plus an optional extra CA file.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A client configuration trusting the platform's roots and, if given, the certificates in
/// `ca_file` (PEM).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "Skipped an unreadable platform trust root.");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let mut count = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read ca_file {}", path.display()))?
        {
            let cert =
                cert.with_context(|| format!("invalid PEM in ca_file {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("unusable certificate in ca_file {}", path.display()))?;
            count += 1;
        }
        if count == 0 {
            bail!("ca_file {} holds no certificate", path.display());
        }
    }
    if roots.is_empty() {
        bail!("no trust roots: the system has no CA certificates and no ca_file is set");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup failed")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
