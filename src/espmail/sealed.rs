//! Sealed mailboxes' cryptography (issue 13, ESPMAIL.md §7, DESIGN.md promise 8): the
//! building blocks by which mail is sealed so that only the recipient's password opens it.
//! **Not wired yet**: the vault still seals every row by the keyfile part only; the account
//! rows, the login, the save path, `account passwd`, `rotate-key` and `stats` take these
//! pieces up in the next steps (see the note).
//!
//! - **A key pair per avatar** ([`MailboxKeys`]): X25519 through openssl. Its private half
//!   is stored wrapped in two layers ([`wrap`]): inside, AES-256-GCM under a key derived
//!   from the password; outside, AES-256-GCM under a key derived from the keyfile. So the
//!   database and the keyfile together still do not open it, and `rotate-key` re-wraps the
//!   outside layer without anyone's password ([`rewrap_outer`]). The outside layer binds
//!   the account row's index (which a rotation recomputes), the inside one the avatar's
//!   normalised name (which never changes), so a wrapped key moved to another row or
//!   another avatar does not open.
//! - **One scrypt per login** ([`PasswordKeys::from_scrypt`]): the password's scrypt output
//!   is split, by HMAC under two labels, into the verifier the database stores and the
//!   wrapping key it never stores; knowing the verifier gives nothing towards the other.
//! - **Sealing to a public half** ([`seal_to`], [`open_with`]): an ephemeral X25519 key
//!   per message; the message key is HKDF over today's keyfile message key (the keyfile
//!   secret and the row's random key part) *and* the X25519 shared secret, so every
//!   promise of the keyfile-only format still holds and the private half is needed too.
//!   The caller stores the ephemeral public half with the row.
//!
//! May touch: memory and openssl only.

use std::fmt;

use openssl::derive::Deriver;
use openssl::pkey::{Id, PKey, Private, Public};
use zeroize::Zeroizing;

use super::crypto::{hmac_sha256, open_with_key_any_len, seal_with_key, CryptoError};

/// Bytes of an X25519 key, public or private.
pub const X25519_LEN: usize = 32;

const VERIFIER_LABEL: &[u8] = b"espmail v1 password verifier";
const WRAP_LABEL: &[u8] = b"espmail v1 mailbox wrap key";
const INNER_AAD: &[u8] = b"espmail v1 mailbox private key, password layer";
const OUTER_AAD: &[u8] = b"espmail v1 mailbox private key, keyfile layer";
const SEALED_KEY_LABEL: &[u8] = b"espmail v1 sealed mail key";

/// An avatar's mailbox key pair. The private half lives in openssl's key object (which
/// clears it when freed), parsed once, and is never printed.
pub struct MailboxKeys {
    public: [u8; X25519_LEN],
    private: PKey<Private>,
}

impl fmt::Debug for MailboxKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxKeys")
            .field("private", &"<secret>")
            .finish_non_exhaustive()
    }
}

fn openssl(what: &'static str) -> impl Fn(openssl::error::ErrorStack) -> CryptoError {
    move |_| CryptoError::Openssl(what)
}

fn raw32(bytes: &[u8], what: &'static str) -> Result<[u8; X25519_LEN], CryptoError> {
    <[u8; X25519_LEN]>::try_from(bytes).map_err(|_| CryptoError::Malformed(what))
}

impl MailboxKeys {
    /// A new key pair from openssl's random generator.
    pub fn generate() -> Result<MailboxKeys, CryptoError> {
        let key = PKey::generate_x25519().map_err(openssl("x25519 keygen"))?;
        MailboxKeys::of(key)
    }

    fn of(key: PKey<Private>) -> Result<MailboxKeys, CryptoError> {
        let public = raw32(
            &key.raw_public_key().map_err(openssl("x25519 public"))?,
            "x25519 public key size",
        )?;
        Ok(MailboxKeys {
            public,
            private: key,
        })
    }

    fn from_private(private: &[u8]) -> Result<MailboxKeys, CryptoError> {
        let key = PKey::private_key_from_raw_bytes(private, Id::X25519)
            .map_err(|_| CryptoError::Malformed("x25519 private key"))?;
        MailboxKeys::of(key)
    }

    /// The private half's bytes, for wrapping only.
    fn private_bytes(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        Ok(Zeroizing::new(
            self.private
                .raw_private_key()
                .map_err(openssl("x25519 private"))?,
        ))
    }

    /// The public half: what mail to this avatar is sealed to (stored in the clear).
    pub fn public(&self) -> &[u8; X25519_LEN] {
        &self.public
    }
}

/// The two keys one scrypt run gives a login: the verifier (stored, to check the password)
/// and the wrapping key of the mailbox's private half (never stored).
pub struct PasswordKeys {
    /// What the account row stores to check the password.
    pub verifier: [u8; 32],
    wrap: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for PasswordKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordKeys(<secret>)")
    }
}

impl PasswordKeys {
    /// Splits one scrypt output into the verifier and the wrapping key: an HMAC of it
    /// under each label. Neither tells anything about the other.
    pub fn from_scrypt(output: &[u8; 32]) -> Result<PasswordKeys, CryptoError> {
        Ok(PasswordKeys {
            verifier: hmac_sha256(output, VERIFIER_LABEL)?,
            wrap: Zeroizing::new(hmac_sha256(output, WRAP_LABEL)?),
        })
    }
}

fn with_index(label: &[u8], index: &[u8]) -> Vec<u8> {
    let mut aad = label.to_vec();
    aad.extend_from_slice(index);
    aad
}

/// The private half wrapped for storage: the password layer inside (bound to the avatar's
/// normalised `name`), the keyfile layer (`keyfile_key`, a sub-key of the accounts key)
/// outside (bound to the row `index`).
pub fn wrap(
    keys: &MailboxKeys,
    password: &PasswordKeys,
    name: &str,
    keyfile_key: &[u8; 32],
    index: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let inner = seal_with_key(
        &password.wrap,
        &with_index(INNER_AAD, name.as_bytes()),
        &keys.private_bytes()?,
    )?;
    seal_with_key(keyfile_key, &with_index(OUTER_AAD, index), &inner)
}

/// The key pair from its wrapped private half: needs the password (through
/// [`PasswordKeys`]) and the keyfile layer's key. A wrong password, a wrong keyfile, an
/// edit, another row or another avatar all fail as [`CryptoError::Authentication`].
pub fn unwrap(
    wrapped: &[u8],
    password: &PasswordKeys,
    name: &str,
    keyfile_key: &[u8; 32],
    index: &[u8],
) -> Result<MailboxKeys, CryptoError> {
    let inner = open_with_key_any_len(keyfile_key, &with_index(OUTER_AAD, index), wrapped)?;
    let private = open_with_key_any_len(
        &password.wrap,
        &with_index(INNER_AAD, name.as_bytes()),
        &inner,
    )?;
    MailboxKeys::from_private(&private)
}

/// `rotate-key`'s part: the keyfile layer moved from `old_key` to `new_key` (and from row
/// `old_index` to `new_index`, which a rotation recomputes), the password layer untouched
/// (it is bound to the avatar's name, which a rotation does not change). No password is
/// needed, and the private half is never in the clear here.
pub fn rewrap_outer(
    wrapped: &[u8],
    old_key: &[u8; 32],
    old_index: &[u8],
    new_key: &[u8; 32],
    new_index: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let inner = open_with_key_any_len(old_key, &with_index(OUTER_AAD, old_index), wrapped)?;
    seal_with_key(new_key, &with_index(OUTER_AAD, new_index), &inner)
}

fn shared_key(
    ours: &PKey<Private>,
    theirs: &[u8; X25519_LEN],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let peer: PKey<Public> = PKey::public_key_from_raw_bytes(theirs, Id::X25519)
        .map_err(|_| CryptoError::Malformed("x25519 public key"))?;
    let mut d = Deriver::new(ours).map_err(openssl("x25519 derive"))?;
    d.set_peer(&peer).map_err(openssl("x25519 peer"))?;
    // openssl refuses an all-zero result (a low-order public key): never a usable key.
    let shared = d.derive_to_vec().map_err(|_| CryptoError::Authentication)?;
    Ok(Zeroizing::new(shared))
}

fn sealed_key(
    message_key: &[u8; 32],
    shared: &[u8],
    ephemeral: &[u8; X25519_LEN],
    recipient: &[u8; X25519_LEN],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(64));
    ikm.extend_from_slice(message_key);
    ikm.extend_from_slice(shared);
    let mut salt = Vec::with_capacity(64);
    salt.extend_from_slice(ephemeral);
    salt.extend_from_slice(recipient);
    super::crypto::hkdf(&ikm, &salt, SEALED_KEY_LABEL)
}

/// The key to seal one message to `recipient` (a public half), from the row's keyfile
/// message key ([`super::crypto::message_key`]); returns it with the ephemeral public half
/// the row must store.
pub fn seal_to(
    recipient: &[u8; X25519_LEN],
    message_key: &[u8; 32],
) -> Result<(Zeroizing<[u8; 32]>, [u8; X25519_LEN]), CryptoError> {
    let eph = PKey::generate_x25519().map_err(openssl("x25519 keygen"))?;
    let eph_public = raw32(
        &eph.raw_public_key().map_err(openssl("x25519 public"))?,
        "x25519 public key size",
    )?;
    let shared = shared_key(&eph, recipient)?;
    Ok((
        sealed_key(message_key, &shared, &eph_public, recipient)?,
        eph_public,
    ))
}

/// The key of a message sealed to `keys`' public half, from its stored ephemeral public
/// half and the row's keyfile message key.
pub fn open_with(
    keys: &MailboxKeys,
    ephemeral: &[u8; X25519_LEN],
    message_key: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let shared = shared_key(&keys.private, ephemeral)?;
    sealed_key(message_key, &shared, ephemeral, &keys.public)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn password(b: u8) -> PasswordKeys {
        PasswordKeys::from_scrypt(&[b; 32]).unwrap()
    }

    #[test]
    fn one_scrypt_output_gives_two_unrelated_keys() {
        let p = password(1);
        assert_ne!(p.verifier, *p.wrap);
        assert_ne!(password(2).verifier, p.verifier);
        assert_eq!(format!("{p:?}"), "PasswordKeys(<secret>)");
        let keys = MailboxKeys::generate().unwrap();
        let shown = format!("{keys:?}");
        assert!(shown.contains("<secret>"), "{shown}");
        let private = keys.private_bytes().unwrap();
        assert!(!shown.contains(&format!("{:?}", &private[..4])), "{shown}");
    }

    #[test]
    fn the_private_half_needs_the_password_and_the_keyfile_and_its_own_row() {
        let keys = MailboxKeys::generate().unwrap();
        let (kf, other_kf) = ([7u8; 32], [8u8; 32]);
        let wrapped = wrap(&keys, &password(1), "bob", &kf, b"row-a").unwrap();
        let back = unwrap(&wrapped, &password(1), "bob", &kf, b"row-a").unwrap();
        assert_eq!(back.public(), keys.public());
        for (pw, name, key, row) in [
            (password(2), "bob", kf, &b"row-a"[..]),
            (password(1), "bob", other_kf, &b"row-a"[..]),
            (password(1), "bob", kf, &b"row-b"[..]),
            (password(1), "eve", kf, &b"row-a"[..]),
        ] {
            assert_eq!(
                unwrap(&wrapped, &pw, name, &key, row).unwrap_err(),
                CryptoError::Authentication
            );
        }
    }

    #[test]
    fn rotate_key_rewraps_the_keyfile_layer_without_the_password() {
        let keys = MailboxKeys::generate().unwrap();
        let (old, new) = ([7u8; 32], [9u8; 32]);
        let wrapped = wrap(&keys, &password(1), "bob", &old, b"old-row").unwrap();
        // A rotation recomputes the row's index as well.
        let moved = rewrap_outer(&wrapped, &old, b"old-row", &new, b"new-row").unwrap();
        assert!(unwrap(&moved, &password(1), "bob", &old, b"old-row").is_err());
        let back = unwrap(&moved, &password(1), "bob", &new, b"new-row").unwrap();
        assert_eq!(back.public(), keys.public());
    }

    #[test]
    fn sealed_mail_needs_the_private_half_and_the_keyfile_message_key() {
        let bob = MailboxKeys::generate().unwrap();
        let eve = MailboxKeys::generate().unwrap();
        let message_key = [3u8; 32];
        let (key, eph) = seal_to(bob.public(), &message_key).unwrap();
        assert_eq!(*open_with(&bob, &eph, &message_key).unwrap(), *key);
        // Another avatar's private half, or the keyfile part alone, gives another key.
        assert_ne!(*open_with(&eve, &eph, &message_key).unwrap(), *key);
        assert_ne!(*open_with(&bob, &eph, &[4u8; 32]).unwrap(), *key);
        assert_ne!(message_key, *key);
        // A new ephemeral key every message.
        let (key2, eph2) = seal_to(bob.public(), &message_key).unwrap();
        assert_ne!(eph, eph2);
        assert_ne!(*key, *key2);
        // A low-order point as the ephemeral half is refused, never a known key.
        assert!(open_with(&bob, &[0u8; 32], &message_key).is_err());
    }
}
