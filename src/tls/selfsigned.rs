//! A self-signed server certificate for a world without a CA-issued one: an EC P-256 key
//! (ECDSA P-256 is understood by every TLS 1.2 and 1.3 implementation, unlike Ed25519,
//! which many TLS 1.2 clients lack), the host name as subjectAltName (DNS name or IP
//! address), and the SHA-256 fingerprint players pin with `espmail tunnel --pin`.
//!
//! Pure apart from the random numbers: returns PEM bytes; [`super::files::write_new_pair`]
//! puts them on disk.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder};
use zeroize::Zeroizing;

use super::{Fingerprint, TlsError};

/// A new certificate and its key, PEM, and the certificate's fingerprint.
pub struct SelfSigned {
    /// The certificate, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM (PKCS#8, unencrypted); zeroed on drop.
    pub key_pem: Zeroizing<Vec<u8>>,
    /// SHA-256 of the certificate's DER bytes: what players pin.
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned")
            .field("fingerprint", &self.fingerprint)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Makes a self-signed certificate for `hostname` (a DNS name or an IP address), valid
/// from an hour ago (a player's clock may be a little behind) for `days` days.
pub fn generate_self_signed(hostname: &str, days: u32) -> Result<SelfSigned, TlsError> {
    let now = unix_now();
    generate_self_signed_between(hostname, now - 3600, now + i64::from(days) * 86_400)
}

/// Like [`generate_self_signed`], with explicit validity bounds in Unix seconds. Tests use
/// it to make expired or not-yet-valid certificates.
pub fn generate_self_signed_between(
    hostname: &str,
    not_before: i64,
    not_after: i64,
) -> Result<SelfSigned, TlsError> {
    let san = subject_alt_name(hostname)?;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;

    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, hostname)?;
    let name = name.build();

    let mut b = X509Builder::new()?;
    b.set_version(2)?; // X.509 v3, needed for the extensions
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let (not_before, not_after) = (
        Asn1Time::from_unix(not_before)?,
        Asn1Time::from_unix(not_after)?,
    );
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    let mut alt = SubjectAlternativeName::new();
    match san {
        San::Ip(ip) => alt.ip(&ip.to_string()),
        San::Dns(dns) => alt.dns(dns),
    };
    let alt = alt.build(&b.x509v3_context(None, None))?;
    b.append_extension(alt)?;
    b.sign(&key, MessageDigest::sha256())?;
    let cert = b.build();

    Ok(SelfSigned {
        cert_pem: cert.to_pem()?,
        key_pem: Zeroizing::new(key.private_key_to_pem_pkcs8()?),
        fingerprint: Fingerprint::of(&cert)?,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

/// 127 random bits: positive, unique enough that two certificates never share one.
fn random_serial() -> Result<Asn1Integer, TlsError> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

enum San<'a> {
    Ip(IpAddr),
    Dns(&'a str),
}

/// An IP address, or a DNS name: dot-separated labels of letters, digits and hyphens
/// (not at either end of a label), 1-63 bytes each, at most 253 in all.
fn subject_alt_name(hostname: &str) -> Result<San<'_>, TlsError> {
    let bad = |reason: &'static str| TlsError::InvalidHostName {
        name: hostname.to_owned(),
        reason,
    };
    if let Ok(ip) = hostname.parse::<IpAddr>() {
        return Ok(San::Ip(ip));
    }
    let name = hostname.strip_suffix('.').unwrap_or(hostname);
    if name.is_empty() || name.len() > 253 {
        return Err(bad("a host name has 1 to 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each dot-separated part has 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return Err(bad("only letters, digits, hyphens and dots are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a part may not start or end with a hyphen"));
        }
    }
    Ok(San::Dns(name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openssl::x509::X509;

    #[test]
    fn names_are_checked() {
        for good in [
            "espmail.example.org",
            "localhost",
            "127.0.0.1",
            "::1",
            "a-b.c9.",
        ] {
            assert!(subject_alt_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "exa mple.org",
            "-x.org",
            "x-.org",
            "a..b",
            "*.example.org",
            "ü.de",
        ] {
            let err = subject_alt_name(bad).err().unwrap();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(subject_alt_name(&"a".repeat(64)).is_err());
        assert!(subject_alt_name(&["a"; 127].join(".")).is_ok());
        assert!(subject_alt_name(&["a"; 128].join(".")).is_err());
    }

    #[test]
    fn certificate_names_the_host_and_matches_its_key() {
        for (host, want) in [("play.example.org", "DNS"), ("192.0.2.7", "IP")] {
            let made = generate_self_signed(host, 30).unwrap();
            let cert = X509::from_pem(&made.cert_pem).unwrap();
            let key = PKey::private_key_from_pem(&made.key_pem).unwrap();
            assert!(cert.public_key().unwrap().public_eq(&key));
            assert!(cert.verify(&key).unwrap(), "self-signed by its own key");
            assert_eq!(Fingerprint::of(&cert).unwrap(), made.fingerprint);
            let sans = cert.subject_alt_names().unwrap();
            let san = sans.iter().next().unwrap();
            match want {
                "DNS" => assert_eq!(san.dnsname(), Some(host)),
                _ => assert_eq!(san.ipaddress(), Some(&[192, 0, 2, 7][..])),
            }
            let in_29_days = Asn1Time::days_from_now(29).unwrap();
            let in_31_days = Asn1Time::days_from_now(31).unwrap();
            assert!(cert.not_after() > in_29_days && cert.not_after() < in_31_days);
            assert!(!format!("{made:?}").contains("BEGIN"), "Debug shows no key");
        }
        let a = generate_self_signed("x.org", 1).unwrap();
        let b = generate_self_signed("x.org", 1).unwrap();
        assert_ne!(
            a.fingerprint, b.fingerprint,
            "fresh key and serial each time"
        );
    }
}
