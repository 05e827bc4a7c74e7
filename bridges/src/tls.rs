//! TLS client configuration shared by everything herald connects to (the IMAP server, IRC):
//! rustls with the ring provider (no OpenSSL, so the binary can be static), trusting the
//! platform's roots plus an optional extra CA file. Verification cannot be turned off.
//!
//! # Pinning
//!
//! A server with a self-signed certificate (Dovecot's usual `openssl req -x509` one, which
//! says CA:TRUE) is trusted when
//!
//! - its certificate is in `ca_file` and the server presents exactly that certificate
//!   (byte for byte): webpki alone would refuse it, as a CA certificate may not be a
//!   server's own (`CaUsedAsEndEntity`), or
//! - `tls_fingerprint = "sha256:HEX"` names the SHA-256 of the certificate it presents. A
//!   fingerprint is a strict pin: no other certificate is accepted, however well signed.
//!
//! A pinned certificate is accepted whatever its names, dates and CA flag say — the user has
//! named that very certificate — but the handshake must still be signed by its key (with
//! the ring provider's algorithms), so only its holder can present it.
//!
//! # Errors that say what to do
//!
//! A refused certificate fails the handshake with an [`Untrusted`] inside rustls' error;
//! [`explain`] turns a handshake error into one sentence naming the remedy and the
//! fingerprint the server presented. [`speaks_tls`] and [`plaintext_greeting`] tell a
//! plaintext/TLS mismatch from a slow or broken server, so the caller can say which `tls`
//! setting the port wants.

use std::fmt;
use std::io;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The SHA-256 of a certificate's DER: what `tls_fingerprint` pins.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the DER certificate `der`.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

/// `sha256:` and 64 upper-case hex digits, without colons: ready to paste into the
/// configuration.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Reads `sha256:HEX`: 64 hex digits, either case, colons between them optional (so
/// `openssl x509 -fingerprint -sha256`'s `AB:CD:…` pastes as is).
impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text
            .get(..7)
            .filter(|prefix| prefix.eq_ignore_ascii_case("sha256:"))
            .and_then(|_| text.get(7..))
            .ok_or_else(|| {
                format!("expected \"sha256:\" and 64 hex digits (the certificate's SHA-256), got {text:?}")
            })?;
        let digits: Vec<u8> = hex.bytes().filter(|&b| b != b':').collect();
        let mut bytes = [0u8; 32];
        let valid = digits.len() == 64
            && digits.chunks(2).zip(bytes.iter_mut()).all(|(pair, out)| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .map(|value| *out = value)
                    .is_some()
            });
        if !valid {
            return Err(format!(
                "expected \"sha256:\" and 64 hex digits (colons optional), got {} hex digits in {text:?}",
                digits.iter().filter(|b| b.is_ascii_hexdigit()).count()
            ));
        }
        Ok(Fingerprint(bytes))
    }
}

/// As [`FromStr`]: a configuration's `tls_fingerprint`, its error located by the caller.
impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A client configuration trusting the platform's roots plus the certificates in `ca_file`
/// (PEM, each also pinned: see the module docs), or with `fingerprint` only the certificate
/// it names. It reads files, so build it when a connection is made ready, not in validation.
pub fn client_config(
    ca_file: Option<&Path>,
    fingerprint: Option<Fingerprint>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut pinned = Vec::new();
    let webpki = match fingerprint {
        // A strict pin: the platform's roots and ca_file cannot widen it.
        Some(_) => None,
        None => {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::debug!(%error, "Skipped an unreadable platform trust root.");
            }
            let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
            if let Some(path) = ca_file {
                pinned = read_ca_file(path)?;
                for cert in &pinned {
                    roots.add(cert.clone()).map_err(|e| {
                        format!("unusable certificate in ca_file {}: {e}", path.display())
                    })?;
                }
            }
            if roots.is_empty() {
                return Err(
                    "no trust roots: the system has no CA certificates and no ca_file".into(),
                );
            }
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("TLS setup failed: {e}"))?,
            )
        }
    };
    let verifier = Verifier {
        webpki,
        pinned,
        fingerprint,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in ca_file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("ca_file {} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// webpki's verification, preceded by the pins (see the module docs).
#[derive(Debug)]
struct Verifier {
    /// The platform's roots and `ca_file`; `None` under a fingerprint pin.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// `ca_file`'s certificates, accepted when presented as the server's own.
    pinned: Vec<CertificateDer<'static>>,
    /// `tls_fingerprint`: the only certificate accepted, when set.
    fingerprint: Option<Fingerprint>,
    /// What the handshake signature may use: the provider's, as webpki would.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        let untrusted = |problem| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                Untrusted { presented, problem },
            ))))
        };
        if let Some(pin) = self.fingerprint {
            return if presented == pin {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(untrusted(Problem::NotThePin(pin)))
            };
        }
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(webpki) = &self.webpki else {
            return Err(untrusted(Problem::Unverified(
                CertificateError::UnknownIssuer,
            )));
        };
        webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|error| match error {
                rustls::Error::InvalidCertificate(why) => untrusted(Problem::Unverified(why)),
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.webpki.as_ref().and_then(|w| w.root_hint_subjects())
    }
}

/// A server certificate herald refused, and the fingerprint to pin it by: found in a failed
/// handshake's error by [`explain`]; its `Display` is the one sentence to show.
#[derive(Debug)]
pub struct Untrusted {
    /// The fingerprint of the certificate the server presented.
    pub presented: Fingerprint,
    problem: Problem,
}

#[derive(Debug)]
enum Problem {
    /// `tls_fingerprint` names another certificate.
    NotThePin(Fingerprint),
    /// webpki refused it.
    Unverified(CertificateError),
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let presented = self.presented;
        let why = match &self.problem {
            Problem::NotThePin(pin) => {
                return write!(
                    f,
                    "the server presented a certificate with fingerprint {presented}, not the \
                     one tls_fingerprint pins ({pin}): if the server's certificate was \
                     replaced, check the new one and set tls_fingerprint = \"{presented}\""
                )
            }
            Problem::Unverified(why) => why,
        };
        // rustls' own words as the detail, e.g. "invalid peer certificate: UnknownIssuer".
        let detail = rustls::Error::InvalidCertificate(why.clone());
        let pin = format!(
            "pin it with tls_fingerprint = \"{presented}\" if that is its fingerprint \
             (openssl x509 -noout -fingerprint -sha256 -in CERT on the server)"
        );
        match why {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                write!(
                    f,
                    "the server's certificate is not valid for the host name herald connects \
                     to ({detail}): connect by a name the certificate lists, or {pin}"
                )
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => write!(
                f,
                "the server's certificate is outside its validity period ({detail}): renew it \
                 on the server (or check this machine's clock), or {pin}"
            ),
            _ => write!(
                f,
                "the server's certificate is not trusted ({detail}): give its CA (or the \
                 certificate itself) in ca_file, or {pin}"
            ),
        }
    }
}

impl std::error::Error for Untrusted {}

/// What a failed TLS handshake means, as one sentence: the [`Untrusted`] sentence for a
/// refused certificate, a hint for non-TLS bytes, else rustls' or the socket's own words.
/// `None` when the error carries nothing TLS-specific (the caller keeps its own wording).
pub fn explain(error: &io::Error) -> Option<String> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            match inner.downcast_ref::<Untrusted>() {
                Some(untrusted) => untrusted.to_string(),
                None => tls.to_string(),
            }
        }
        rustls::Error::InvalidMessage(_) => format!(
            "the server answered with something that is not TLS ({tls}): is this port \
             plaintext (use STARTTLS or no TLS), or another service?"
        ),
        rustls::Error::AlertReceived(alert) => format!(
            "the server refused the TLS handshake (alert {alert:?}): check that the port \
             speaks TLS and the server name is one it serves"
        ),
        other => other.to_string(),
    })
}

/// Whether the handshake failed because the server sent bytes that are not TLS (a
/// plaintext greeting): then [`plaintext_greeting`] can say what it sent.
pub fn is_not_tls(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)))
}

/// Whether `host:port` answers a TLS ClientHello with TLS (a handshake record or an alert),
/// asked on a connection of its own within `within`. For a server that says nothing to a
/// plaintext client: a silent implicit-TLS port waits for a ClientHello.
pub async fn speaks_tls(host: &str, port: u16, within: Duration) -> bool {
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        return false;
    };
    let Ok(hello) = client_hello(name) else {
        return false;
    };
    let probe = async {
        let mut tcp = TcpStream::connect((host, port)).await?;
        tcp.write_all(&hello).await?;
        let mut header = [0u8; 3];
        tcp.read_exact(&mut header).await?;
        Ok::<_, io::Error>(header)
    };
    match timeout(within, probe).await {
        // A TLS record: content type handshake (22) or alert (21), then version 3.x.
        Ok(Ok([kind, major, _])) => matches!(kind, 21 | 22) && major == 3,
        _ => false,
    }
}

/// The bytes of a ClientHello for `name`: what a TLS server expects first.
fn client_hello(name: ServerName<'static>) -> Result<Vec<u8>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut hello = Vec::new();
    while connection.wants_write() {
        connection
            .write_tls(&mut hello)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    }
    Ok(hello)
}

/// The first line `host:port` sends unasked within `within`, printable and at most 60
/// characters, if it sends one: a plaintext server's greeting (`* OK …` for IMAP). Asked on
/// a connection of its own.
pub async fn plaintext_greeting(host: &str, port: u16, within: Duration) -> Option<String> {
    let probe = async {
        let mut tcp = TcpStream::connect((host, port)).await?;
        let mut buffer = [0u8; 128];
        let n = tcp.read(&mut buffer).await?;
        Ok::<_, io::Error>(buffer.get(..n).unwrap_or_default().to_vec())
    };
    let bytes = timeout(within, probe).await.ok()?.ok()?;
    let line = bytes.split(|&b| b == b'\r' || b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return None;
    }
    Some(crate::text::truncate(text, 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let hex = "AB".repeat(32);
        let plain: Fingerprint = format!("sha256:{hex}").parse().unwrap();
        let colons: Fingerprint = format!("SHA256:{}", vec!["ab"; 32].join(":"))
            .parse()
            .unwrap();
        assert_eq!(plain, colons);
        assert_eq!(plain.to_string(), format!("sha256:{hex}"));
        for bad in [
            hex.clone(),
            format!("sha1:{hex}"),
            format!("sha256:{}", "AB".repeat(31)),
            format!("sha256:{}", "AB".repeat(33)),
            format!("sha256:{}XY", "AB".repeat(31)),
            format!("sha256:{}é", "A".repeat(63)),
            "sha256:".into(),
            String::new(),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_refusal_names_the_remedy_and_the_fingerprint() {
        let presented = Fingerprint::of(b"cert");
        let pin = Fingerprint::of(b"other");
        for (problem, remedy) in [
            (Problem::NotThePin(pin), "set tls_fingerprint"),
            (
                Problem::Unverified(CertificateError::UnknownIssuer),
                "give its CA",
            ),
            (
                Problem::Unverified(CertificateError::NotValidForName),
                "connect by a name",
            ),
            (Problem::Unverified(CertificateError::Expired), "renew it"),
        ] {
            let text = Untrusted { presented, problem }.to_string();
            assert!(text.contains(remedy), "{text}");
            assert!(text.contains(&presented.to_string()), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn a_client_hello_is_a_tls_handshake_record() {
        let hello = client_hello(ServerName::try_from("localhost").unwrap()).unwrap();
        assert_eq!(hello.get(..2), Some(&[22u8, 3][..]));
    }
}
