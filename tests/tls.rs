//! The TLS library against real sockets: self-signed certificates as the openssl command
//! line sees them, the key file's mode and the never-overwrite rule, what the server end
//! accepts (TLS 1.2 and 1.3 with modern ciphers; nothing older or weaker), and the
//! client's verdicts in each trust mode.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use espmail_test_macros::bounded;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::tls::{make_pair, make_pair_between, now_unix, Behind, TlsFront};
use espmail::tls::{
    connect, generate_self_signed, write_new_pair, CertPaths, Connector, TlsError, Verify,
};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_fingerprint_is_what_openssl_prints_and_the_key_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let made = generate_self_signed("play.example.org", 365).unwrap();
    let paths = CertPaths {
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
    };
    write_new_pair(&paths, &made.cert_pem, &made.key_pem).unwrap();
    let cert = paths.cert.to_str().unwrap();
    let printed = openssl(&["x509", "-noout", "-fingerprint", "-sha256", "-in", cert]);
    // "sha256 Fingerprint=" (OpenSSL 3) or "SHA256 Fingerprint=" (1.1), then the digest.
    let (label, digest) = printed.trim().split_once('=').unwrap();
    assert!(
        label.eq_ignore_ascii_case("sha256 fingerprint"),
        "{printed}"
    );
    assert_eq!(digest, made.fingerprint.to_string());
    let text = openssl(&["x509", "-noout", "-text", "-in", cert]);
    assert!(text.contains("DNS:play.example.org"), "{text}");
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    // The key is one openssl reads, and only its owner may.
    openssl(&["pkey", "-noout", "-in", paths.key.to_str().unwrap()]);
    let mode = std::fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Never overwritten: not the pair, not either file alone; nothing changes.
    let before = (
        std::fs::read(&paths.cert).unwrap(),
        std::fs::read(&paths.key).unwrap(),
    );
    let other = generate_self_signed("play.example.org", 365).unwrap();
    let err = write_new_pair(&paths, &other.cert_pem, &other.key_pem).unwrap_err();
    assert!(matches!(err, TlsError::Exists { .. }), "{err:?}");
    assert!(err.to_string().contains("never overwrites"), "{err}");
    let only_key = CertPaths {
        cert: dir.path().join("new.crt"),
        key: paths.key.clone(),
    };
    assert!(matches!(
        write_new_pair(&only_key, &other.cert_pem, &other.key_pem),
        Err(TlsError::Exists { .. })
    ));
    assert!(!only_key.cert.exists(), "no half pair left behind");
    let after = (
        std::fs::read(&paths.cert).unwrap(),
        std::fs::read(&paths.key).unwrap(),
    );
    assert!(before == after, "an existing file changed");
}

/// An openssl client limited to `version` and `ciphers`, not verifying (this is about
/// what the server end accepts). Returns the negotiated version, or None if refused.
async fn handshake_with(front: &TlsFront, version: SslVersion, ciphers: &str) -> Option<String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_min_proto_version(Some(version)).unwrap();
    b.set_max_proto_version(Some(version)).unwrap();
    b.set_security_level(0); // let the client offer old versions, so the server decides
    b.set_cipher_list(ciphers).unwrap();
    let ssl = b
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(front.addr).await.unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    let done = tokio::time::timeout(common::WAIT, std::pin::Pin::new(&mut tls).connect())
        .await
        .unwrap();
    done.ok().map(|()| tls.ssl().version_str().to_owned())
}

#[bounded]
#[tokio::test]
async fn the_server_end_speaks_tls_1_2_and_1_3_with_modern_ciphers_only() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "s", "localhost");
    let front = TlsFront::start(&pair.paths, Behind::Echo);
    let modern = "ECDHE-ECDSA-AES128-GCM-SHA256";
    assert_eq!(
        handshake_with(&front, SslVersion::TLS1_3, modern)
            .await
            .as_deref(),
        Some("TLSv1.3")
    );
    assert_eq!(
        handshake_with(&front, SslVersion::TLS1_2, modern)
            .await
            .as_deref(),
        Some("TLSv1.2")
    );
    assert_eq!(
        handshake_with(&front, SslVersion::TLS1_1, "ALL:@SECLEVEL=0").await,
        None
    );
    assert_eq!(
        handshake_with(&front, SslVersion::TLS1_2, "ECDHE-ECDSA-AES128-SHA").await,
        None
    );
    let seen = front
        .seen
        .wait_until("two refusals", |c| c.failures.len() == 2);
    assert_eq!(seen.handshakes, 2);
}

#[bounded]
#[tokio::test]
async fn connect_returns_a_verified_stream_in_each_trust_mode() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let pair = make_pair(dir.path(), "s", "localhost");
        let front = TlsFront::start(&pair.paths, Behind::Echo);
        let port = front.addr.port();
        for (server, verify) in [
            (format!("127.0.0.1:{port}"), Verify::Pin(pair.fingerprint)),
            (
                format!("localhost:{port}"),
                Verify::CaFile(pair.paths.cert.clone()),
            ),
        ] {
            let mut tls = connect(&server, &verify).await.unwrap();
            assert_eq!(tls.ssl().version_str(), "TLSv1.3");
            tls.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
        }
    })
    .await
    .unwrap();
}

#[bounded]
#[tokio::test]
async fn a_pinned_certificate_must_still_be_in_its_dates() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        let old = make_pair_between(
            dir.path(),
            "old",
            "localhost",
            now - 9 * 86_400,
            now - 86_400,
        );
        let early = make_pair_between(
            dir.path(),
            "early",
            "localhost",
            now + 86_400,
            now + 9 * 86_400,
        );
        for (pair, want) in [(&old, "expired on"), (&early, "is not valid before")] {
            let front = TlsFront::start_unchecked(&pair.paths, Behind::Echo);
            let err = connect(&front.addr.to_string(), &Verify::Pin(pair.fingerprint))
                .await
                .unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
            assert!(matches!(
                err,
                TlsError::Expired { .. } | TlsError::NotYetValid { .. }
            ));
        }
    })
    .await
    .unwrap();
}

#[bounded]
#[tokio::test]
async fn the_system_cas_refuse_a_self_signed_server_and_name_its_fingerprint() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let pair = make_pair(dir.path(), "s", "localhost");
        let front = TlsFront::start(&pair.paths, Behind::Echo);
        let server = format!("localhost:{}", front.addr.port());
        let err = Connector::new(&Verify::SystemCas, Duration::from_secs(10))
            .unwrap()
            .connect(&server)
            .await
            .unwrap_err();
        match err {
            TlsError::UnknownCa { got, .. } => assert_eq!(got, Some(pair.fingerprint)),
            other => panic!("{other:?}"),
        }
        // Another self-signed certificate given as --ca is not this server's CA either.
        let stranger = make_pair(dir.path(), "stranger", "localhost");
        let err = connect(&server, &Verify::CaFile(stranger.paths.cert.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, TlsError::UnknownCa { .. }), "{err:?}");
    })
    .await
    .unwrap();
}
