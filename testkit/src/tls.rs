//! Throwaway TLS certificates for tests, made in-process with rcgen (ring backend) so no
//! OpenSSL command line is needed.
//!
//! The server certificate is self-signed and names `localhost` and `127.0.0.1`; a client
//! trusts it by loading the same PEM as its only root, which is how a test proves that
//! certificate verification really happens (and [`write_unrelated_ca`] proves the
//! opposite: an unrelated certificate must be refused).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Paths of a certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate; also the file a client trusts, as it is self-signed.
    pub cert: PathBuf,
    /// The PKCS#8 private key.
    pub key: PathBuf,
}

/// Writes a fresh self-signed certificate for `localhost` and IP 127.0.0.1 (and its key)
/// into `dir` as `{stem}.pem` and `{stem}-key.pem`.
pub fn write_self_signed(dir: &Path, stem: &str) -> Result<CertFiles> {
    write_certificate(dir, stem, IsCa::NoCa)
}

/// As [`write_self_signed`], but marked CA:TRUE, as `openssl req -x509` (and so Dovecot's
/// own `mkcert.sh`) makes them: webpki refuses such a certificate as a server's own
/// (`CaUsedAsEndEntity`), so a client must pin it.
pub fn write_self_signed_ca(dir: &Path, stem: &str) -> Result<CertFiles> {
    write_certificate(dir, stem, IsCa::Ca(BasicConstraints::Unconstrained))
}

fn write_certificate(dir: &Path, stem: &str, is_ca: IsCa) -> Result<CertFiles> {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .context("certificate parameters")?;
    params.is_ca = is_ca;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().context("generating key pair")?;
    let cert = params
        .self_signed(&key)
        .context("self-signing certificate")?;
    let files = CertFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}-key.pem")),
    };
    std::fs::write(&files.cert, cert.pem())
        .with_context(|| format!("writing {}", files.cert.display()))?;
    std::fs::write(&files.key, key.serialize_pem())
        .with_context(|| format!("writing {}", files.key.display()))?;
    Ok(files)
}

/// Writes another self-signed `localhost` certificate, unrelated to any server's, into
/// `dir` and returns its PEM path: a client that trusts only this must refuse the server.
///
/// Returns a `Result` (file I/O can fail) rather than a bare path.
pub fn write_unrelated_ca(dir: &Path) -> Result<PathBuf> {
    Ok(write_self_signed(dir, "unrelated-ca")?.cert)
}
