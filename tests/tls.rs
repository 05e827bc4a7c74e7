//! IMAP over TLS with the certificate most Dovecots have: self-signed and CA:TRUE, as
//! `openssl req -x509` makes it. Pinned through `ca_file` or `tls_fingerprint` it is
//! accepted over implicit TLS and STARTTLS; unpinned it is refused with one sentence naming
//! its fingerprint; and a plaintext/TLS mismatch fails in seconds with the setting to use.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{write_config, Imap, DEADLINE};
use herald_bridges::tls::Fingerprint;
use herald_testkit::{Dovecot, HeraldProcess, Receiver};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The fingerprint of the (first) certificate in the PEM file `path`.
fn fingerprint(path: &Path) -> Fingerprint {
    let cert = CertificateDer::from_pem_file(path).expect("reading the certificate");
    Fingerprint::of(cert.as_ref())
}

struct Env {
    dovecot: Dovecot,
    receiver: Receiver,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        Env {
            dovecot: Dovecot::start_tls_self_signed_ca().await.expect("dovecot"),
            receiver: Receiver::start().await.expect("receiver"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Both TLS modes with their ports.
    fn modes(&self) -> [(&'static str, u16); 2] {
        [
            ("implicit", self.dovecot.tls_port().expect("tls port")),
            ("starttls", self.dovecot.port()),
        ]
    }

    fn cert(&self) -> &Path {
        self.dovecot.ca_path().expect("certificate")
    }

    /// `herald check --connect` on `imap`: logs in, selects, exits.
    async fn check(&self, imap: &Imap) -> (bool, String, Duration) {
        let state = tempfile::tempdir().expect("tempdir");
        let config = write_config(self.dir.path(), state.path(), imap, &self.receiver);
        let started = Instant::now();
        let mut herald: HeraldProcess =
            common::spawn(&["check", "-c", config.to_str().expect("path"), "--connect"]);
        let status = herald.wait_exit(DEADLINE).await.expect("exit");
        let output = format!("{}{}", herald.stdout(), herald.stderr());
        (status.success(), output, started.elapsed())
    }
}

fn imap(tls: &'static str, port: u16) -> Imap {
    Imap {
        tls,
        port,
        ca_file: None,
        extra: "timeout = \"15s\"\n".into(),
    }
}

#[tokio::test]
async fn a_self_signed_ca_certificate_in_ca_file_is_accepted() {
    let env = Env::new().await;
    for (tls, port) in env.modes() {
        let imap = Imap {
            ca_file: Some(env.cert().to_owned()),
            ..imap(tls, port)
        };
        let (ok, output, _) = env.check(&imap).await;
        assert!(ok, "{tls}: {output}");
        assert!(output.contains("logged in"), "{tls}: {output}");
    }
}

#[tokio::test]
async fn mail_arrives_over_a_pinned_certificate() {
    let mut env = Env::new().await;
    let pin = fingerprint(env.cert());
    // Colons, as `openssl x509 -fingerprint -sha256` prints it, are accepted.
    let hex = pin.to_string();
    let digits = hex.strip_prefix("sha256:").expect("prefix");
    let colons: Vec<&str> = (0..digits.len())
        .step_by(2)
        .map(|i| &digits[i..i + 2])
        .collect();
    let line = format!("tls_fingerprint = \"sha256:{}\"", colons.join(":"));
    for (tls, port) in env.modes() {
        let imap = imap(tls, port).with(&line);
        let state = tempfile::tempdir().expect("tempdir");
        let config = write_config(env.dir.path(), state.path(), &imap, &env.receiver);
        common::one_alert_through(&config, &env.dovecot, &mut env.receiver, tls).await;
    }
}

#[tokio::test]
async fn an_unpinned_certificate_is_refused_in_one_sentence_naming_its_fingerprint() {
    let env = Env::new().await;
    let presented = fingerprint(env.cert()).to_string();
    for (tls, port) in env.modes() {
        let (ok, output, _) = env.check(&imap(tls, port)).await;
        assert!(!ok, "{tls}: {output}");
        assert!(
            output.contains("the server's certificate is not trusted"),
            "{tls}: {output}"
        );
        assert!(
            output.contains(&format!("tls_fingerprint = \"{presented}\"")),
            "{tls}: {output}"
        );
        assert!(output.contains("ca_file"), "{tls}: {output}");
    }
    // A pin naming another certificate refuses this one, even with it in ca_file.
    let other = format!("tls_fingerprint = \"{}\"", Fingerprint::of(b"another"));
    let imap = Imap {
        ca_file: Some(env.cert().to_owned()),
        ..imap("implicit", env.modes()[0].1).with(&other)
    };
    let (ok, output, _) = env.check(&imap).await;
    assert!(!ok, "{output}");
    assert!(
        output.contains("not the one tls_fingerprint pins"),
        "{output}"
    );
    assert!(output.contains(&presented), "{output}");
}

#[tokio::test]
async fn a_plaintext_tls_mismatch_fails_within_seconds_with_a_hint() {
    let env = Env::new().await;
    let tls_port = env.dovecot.tls_port().expect("tls port");
    let plain_port = env.dovecot.port();
    let ca = Some(env.cert().to_owned());
    let cases = [
        (
            imap("none", tls_port),
            format!("port {tls_port} speaks TLS and sent no IMAP greeting: set tls = \"implicit\""),
        ),
        (
            Imap {
                ca_file: ca.clone(),
                ..imap("starttls", tls_port)
            },
            format!("port {tls_port} speaks TLS"),
        ),
        (
            Imap {
                ca_file: ca,
                ..imap("implicit", plain_port)
            },
            format!("port {plain_port} speaks plaintext IMAP, not TLS"),
        ),
    ];
    for (imap, hint) in cases {
        let (ok, output, took) = env.check(&imap).await;
        assert!(!ok, "{}: {output}", imap.tls);
        assert!(output.contains(&hint), "{}: {output}", imap.tls);
        assert!(
            took < Duration::from_secs(5),
            "{}: took {took:?}: {output}",
            imap.tls
        );
    }
}
