//! The TLS Dovecot: implicit TLS verifies against the generated certificate and is refused
//! with an unrelated one; the plain port offers STARTTLS.

use std::path::Path;
use std::sync::Arc;

use herald_testkit::{write_unrelated_ca, Dovecot};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

fn connector(ca: &Path) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_greeting(port: u16, ca: &Path, name: &str) -> anyhow::Result<String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(name.to_owned())?;
    let tls = connector(ca).connect(name, tcp).await?;
    let mut reader = BufReader::new(tls);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    reader.get_mut().write_all(b"a LOGOUT\r\n").await?;
    Ok(line)
}

#[tokio::test]
async fn implicit_tls_verifies_against_the_generated_certificate() {
    let dovecot = Dovecot::start_tls().await.unwrap();
    let ca = dovecot.ca_path().unwrap();
    let tls_port = dovecot.tls_port().unwrap();
    assert_ne!(tls_port, dovecot.port());

    for name in ["localhost", "127.0.0.1"] {
        let greeting = tls_greeting(tls_port, ca, name).await.unwrap();
        assert!(greeting.starts_with("* OK"), "{greeting}");
    }
}

#[tokio::test]
async fn an_unrelated_ca_is_refused() {
    let dovecot = Dovecot::start_tls().await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let wrong = write_unrelated_ca(other.path()).unwrap();
    let error = tls_greeting(dovecot.tls_port().unwrap(), &wrong, "localhost")
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("certificate"), "{error:#}");
}

#[tokio::test]
async fn plain_port_offers_starttls_and_mail_works() {
    let dovecot = Dovecot::start_tls().await.unwrap();
    // STARTTLS is a pre-login capability: it is in the greeting, not after LOGIN.
    let tcp = TcpStream::connect(("127.0.0.1", dovecot.port()))
        .await
        .unwrap();
    let mut greeting = String::new();
    BufReader::new(tcp).read_line(&mut greeting).await.unwrap();
    assert!(greeting.contains("STARTTLS"), "{greeting}");
    let uid = dovecot
        .append("INBOX", b"Subject: x\r\n\r\ny\r\n")
        .await
        .unwrap();
    assert_eq!(dovecot.uids("INBOX").await.unwrap(), vec![uid]);
}
