//! Pure ESP Mail cryptography: key derivation, sealing and opening, blind indexes.
//! No files, no database, no clock; openssl does every primitive (no hand-made crypto).
//!
//! - **Message key** (promise 1): each row carries a fresh random 32-byte *key part*; the
//!   message key is HKDF-SHA256(ikm = the keyfile secret, salt = the key part,
//!   info = [`MESSAGE_KEY_LABEL`]). It is never stored, so one message's key opens only
//!   that message (promise 3).
//! - **Cipher**: AES-256-GCM, random 96-bit nonce, 128-bit tag. The associated data binds
//!   the ciphertext to its row: [`FORMAT_VERSION`], key id, the recipient's blind index and
//!   the message's random id. An edited, moved or swapped row fails to open.
//! - **Plaintext** ([`Letter`]): sender name, recipient name (normalised; needed to rebuild
//!   the blind index when a key rotation re-encrypts the row), send time and text, padded
//!   with zeros to [`PLAINTEXT_LEN`] so every row has the same size whatever was said.
//! - **Blind index** (promise 2): HMAC-SHA256 of the normalised recipient name under a key
//!   derived from the keyfile secret with its own label; the database never holds a name.
//! - **Key check**: an HKDF output under its own label, stored in the database so a wrong
//!   keyfile is refused at start instead of quarantining every row.
//! - **Accounts key** ([`accounts_key`]): an HKDF output under its own label; the account
//!   table's name index and name seal are HMAC sub-keys of it ([`super::accounts`]).
//!
//! The stored row is `nonce (12) ‖ ciphertext (PLAINTEXT_LEN) ‖ tag (16)`, [`SEALED_LEN`] bytes.

use std::collections::BTreeMap;
use std::fmt;

use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::pkey::{Id, PKey};
use openssl::pkey_ctx::PkeyCtx;
use openssl::sign::Signer;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use zeroize::Zeroizing;

use super::keyfile::{KeyId, Keyfile, Secret};
use crate::avatar::normalise;
use crate::log_redact::Sensitive;

/// Version of the row format, bound into every AAD (and into the HKDF labels).
pub const FORMAT_VERSION: u8 = 1;
/// HKDF info for message keys.
pub const MESSAGE_KEY_LABEL: &[u8] = b"espmail v1 message key";
/// HKDF info for the blind-index HMAC key.
pub const BLIND_INDEX_LABEL: &[u8] = b"espmail v1 blind index";
/// HKDF info for the key-check value.
pub const KEY_CHECK_LABEL: &[u8] = b"espmail v1 key check";
/// Bytes of the per-message key part.
pub const KEY_PART_LEN: usize = 32;
/// Bytes of a GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of a GCM tag.
pub const TAG_LEN: usize = 16;
/// Every plaintext is padded to exactly this many bytes.
pub const PLAINTEXT_LEN: usize = 512;
/// Bytes a sealed value adds to its plaintext: nonce and tag.
pub const SEALED_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of a stored sealed value: nonce, ciphertext, tag.
pub const SEALED_LEN: usize = NONCE_LEN + PLAINTEXT_LEN + TAG_LEN;
/// Longest sender or recipient name, in bytes (names are 1–16 characters; room to spare).
pub const MAX_NAME_LEN: usize = 32;
/// Longest text that fits the padded plaintext.
pub const MAX_TEXT_LEN: usize = 400;
/// Bytes of a blind index (an HMAC-SHA256).
pub const BLIND_LEN: usize = 32;
/// Bytes of a mail id.
pub const MAIL_ID_LEN: usize = 16;

// layout version, sender len + name, recipient len + name, send time (seconds, then
// nanoseconds), text len + text
const HEADER_MAX: usize = 1 + 1 + MAX_NAME_LEN + 1 + MAX_NAME_LEN + 8 + 4 + 2;
const _: () = assert!(HEADER_MAX + MAX_TEXT_LEN <= PLAINTEXT_LEN);
/// Written by [`pad`]. Version 2 added the nanoseconds of the send time, so messages
/// saved within one second are still delivered oldest first (the table keeps no
/// insertion order on purpose).
const LAYOUT_VERSION: u8 = 2;
/// Still read: as version 2 without the nanoseconds (taken as 0).
const LAYOUT_VERSION_1: u8 = 1;

/// Why sealing or opening failed. Never carries plaintext or key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The tag did not verify: wrong key, edited ciphertext, or a row moved or swapped.
    #[error("the message does not authenticate (wrong key, edited or moved row)")]
    Authentication,
    /// The row's key id is not in the keyfile.
    #[error("key {key_id} is not in the keyfile")]
    UnknownKey {
        /// The row's key id.
        key_id: KeyId,
    },
    /// A stored value has the wrong size, or a decrypted plaintext is not well formed.
    #[error("stored message is malformed: {0}")]
    Malformed(&'static str),
    /// A name is empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("a name must be 1 to {MAX_NAME_LEN} bytes, got {len}")]
    BadName {
        /// Its length.
        len: usize,
    },
    /// The text is longer than [`MAX_TEXT_LEN`].
    #[error("text of {len} bytes is over the {MAX_TEXT_LEN}-byte maximum")]
    TextTooLong {
        /// Its length.
        len: usize,
    },
    /// openssl failed (random generator, HKDF, cipher setup).
    #[error("openssl failed: {0}")]
    Openssl(&'static str),
}

/// A message's random id: primary key of its row, bound into its AAD. Safe to log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailId(pub [u8; MAIL_ID_LEN]);

impl MailId {
    /// A fresh random id.
    pub fn random() -> Result<MailId, CryptoError> {
        let mut id = [0u8; MAIL_ID_LEN];
        openssl::rand::rand_bytes(&mut id).map_err(|_| CryptoError::Openssl("random"))?;
        Ok(MailId(id))
    }

    /// From stored bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<MailId> {
        bytes.try_into().ok().map(MailId)
    }
}

impl fmt::Display for MailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailId({self})")
    }
}

/// A recipient's blind index under one key.
pub type Blind = [u8; BLIND_LEN];

/// What a message says, in the clear: only ever in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The sender's name, as they are shown.
    pub sender: String,
    /// The recipient's normalised name (see [`crate::avatar::normalise`]).
    pub recipient: String,
    /// Send time, seconds since the Unix epoch (UTC).
    pub sent_secs: u64,
    /// The send time's fraction of a second, in nanoseconds (below 1,000,000,000); it
    /// only orders messages sent within the same second.
    pub sent_nanos: u32,
    /// The text.
    pub text: Sensitive<Vec<u8>>,
}

/// A sealed row, as stored. Nothing here reveals a name, a time or a length.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRow {
    /// Random id.
    pub id: MailId,
    /// The recipient's blind index under `key_id`.
    pub blind: Blind,
    /// Which keyfile key sealed it.
    pub key_id: KeyId,
    /// The random per-message key part.
    pub key_part: [u8; KEY_PART_LEN],
    /// nonce ‖ ciphertext ‖ tag.
    pub sealed: Vec<u8>,
    /// The (recipient, sender) pair index under `key_id`, for the per-sender cap: set by
    /// [`Keyring::seal`], not read back from the store (opening does not need it).
    pub pair: Option<Blind>,
    /// The row's expiry day as stored. Rows sealed by this version bind it into their
    /// associated data ([`aad_until`]); `None` opens a row as sealed before that.
    pub expiry_day: Option<i64>,
}

impl fmt::Debug for SealedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedRow")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .field("sealed_len", &self.sealed.len())
            .finish_non_exhaustive()
    }
}

/// The associated data of a row sealed by this version: [`aad`] and the expiry day, so the
/// day the purge deletes it cannot be moved without the row failing to open.
pub fn aad_until(key_id: KeyId, blind: &Blind, id: &MailId, expiry_day: i64) -> Vec<u8> {
    let mut a = aad(key_id, blind, id);
    a.extend_from_slice(b"expiry");
    a.extend_from_slice(&expiry_day.to_be_bytes());
    a
}

/// The associated data of a row sealed before expiry days were bound (issue 10 L3): its
/// format, key, recipient and id. Such rows still open.
pub fn aad(key_id: KeyId, blind: &Blind, id: &MailId) -> Vec<u8> {
    let mut a = Vec::with_capacity(13 + 1 + 4 + BLIND_LEN + MAIL_ID_LEN);
    a.extend_from_slice(b"espmail-mail");
    a.push(FORMAT_VERSION);
    a.extend_from_slice(&key_id.to_be_bytes());
    a.extend_from_slice(blind);
    a.extend_from_slice(&id.0);
    a
}

/// HKDF-SHA256 to 32 bytes: the one implementation in the vault (also [`super::sealed`]'s).
pub(crate) fn hkdf(
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let fail = |_| CryptoError::Openssl("hkdf");
    let mut ctx = PkeyCtx::new_id(Id::HKDF).map_err(fail)?;
    ctx.derive_init().map_err(fail)?;
    ctx.set_hkdf_md(Md::sha256()).map_err(fail)?;
    ctx.set_hkdf_key(ikm).map_err(fail)?;
    if !salt.is_empty() {
        ctx.set_hkdf_salt(salt).map_err(fail)?;
    }
    ctx.add_hkdf_info(info).map_err(fail)?;
    let mut out = Zeroizing::new([0u8; 32]);
    let n = ctx.derive(Some(&mut out[..])).map_err(fail)?;
    if n != 32 {
        return Err(CryptoError::Openssl("hkdf length"));
    }
    Ok(out)
}

/// The message key of one row: HKDF-SHA256(secret, salt = key part, info = label).
pub fn message_key(
    secret: &Secret,
    key_part: &[u8; KEY_PART_LEN],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    hkdf(secret.expose(), key_part, MESSAGE_KEY_LABEL)
}

/// HKDF info for the accounts key ([`super::accounts`]).
pub const ACCOUNTS_KEY_LABEL: &[u8] = b"espmail v1 accounts key";

/// The accounts key of a keyfile secret: HKDF-SHA256(secret, no salt, info =
/// [`ACCOUNTS_KEY_LABEL`]), so accounts and mail never share a key. The one derivation of
/// it (databases keyed this way since accounts existed must keep opening).
pub fn accounts_key(secret: &Secret) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    hkdf(secret.expose(), &[], ACCOUNTS_KEY_LABEL)
}

/// The key-check value of a keyfile secret (stored in the database's meta table).
pub fn key_check(secret: &Secret) -> Result<[u8; 32], CryptoError> {
    Ok(*hkdf(secret.expose(), &[], KEY_CHECK_LABEL)?)
}

/// The pair index of (recipient, sender): an HMAC under the blind-index key over a label
/// and both normalised names, NUL-separated (no name holds a NUL, so no pair index equals
/// a name's blind index or another pair's).
fn pair_index(blind_key: &[u8], recipient: &str, sender: &str) -> Result<Blind, CryptoError> {
    let sender = crate::avatar::normalise(sender);
    let mut data = Vec::with_capacity(16 + recipient.len() + sender.len());
    data.extend_from_slice(b"pair\0");
    data.extend_from_slice(recipient.as_bytes());
    data.push(0);
    data.extend_from_slice(sender.as_bytes());
    hmac_sha256(blind_key, &data)
}

/// HMAC-SHA256 of `data` under `key` (the blind index's primitive; the account table's
/// name index and key derivation use it too, so there is one HMAC in the crate).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<[u8; 32], CryptoError> {
    let fail = |_| CryptoError::Openssl("hmac");
    let pkey = PKey::hmac(key).map_err(fail)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey).map_err(fail)?;
    signer.update(data).map_err(fail)?;
    let mac = signer.sign_to_vec().map_err(fail)?;
    mac.as_slice()
        .try_into()
        .map_err(|_| CryptoError::Openssl("hmac length"))
}

/// Pads a letter into the fixed-size plaintext.
pub fn pad(letter: &Letter) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let sender = letter.sender.as_bytes();
    let recipient = letter.recipient.as_bytes();
    for name in [sender, recipient] {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(CryptoError::BadName { len: name.len() });
        }
    }
    let text = letter.text.expose();
    if text.len() > MAX_TEXT_LEN {
        return Err(CryptoError::TextTooLong { len: text.len() });
    }
    if letter.sent_nanos >= 1_000_000_000 {
        return Err(CryptoError::Malformed("send time nanoseconds"));
    }
    let mut p = Zeroizing::new(Vec::with_capacity(PLAINTEXT_LEN));
    p.push(LAYOUT_VERSION);
    // Lengths fit one byte (names) and two bytes (text): checked just above.
    p.push(sender.len() as u8);
    p.extend_from_slice(sender);
    p.push(recipient.len() as u8);
    p.extend_from_slice(recipient);
    p.extend_from_slice(&letter.sent_secs.to_be_bytes());
    p.extend_from_slice(&letter.sent_nanos.to_be_bytes());
    p.extend_from_slice(&(text.len() as u16).to_be_bytes());
    p.extend_from_slice(text);
    p.resize(PLAINTEXT_LEN, 0);
    Ok(p)
}

/// Reads a padded plaintext back; strict about lengths and padding.
pub fn unpad(p: &[u8]) -> Result<Letter, CryptoError> {
    let bad = CryptoError::Malformed;
    if p.len() != PLAINTEXT_LEN {
        return Err(bad("plaintext size"));
    }
    let mut r = Reader { p, at: 0 };
    let version = r.take(1)?;
    let with_nanos = match version {
        [LAYOUT_VERSION] => true,
        [LAYOUT_VERSION_1] => false,
        _ => return Err(bad("plaintext layout version")),
    };
    let sender = r.name()?;
    let recipient = r.name()?;
    let time: [u8; 8] = r.take(8)?.try_into().map_err(|_| bad("time"))?;
    let sent_nanos = if with_nanos {
        let n: [u8; 4] = r.take(4)?.try_into().map_err(|_| bad("time"))?;
        let n = u32::from_be_bytes(n);
        if n >= 1_000_000_000 {
            return Err(bad("send time nanoseconds"));
        }
        n
    } else {
        0
    };
    let len: [u8; 2] = r.take(2)?.try_into().map_err(|_| bad("text length"))?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_TEXT_LEN {
        return Err(bad("text length"));
    }
    let text = r.take(len)?.to_vec();
    if p[r.at..].iter().any(|&b| b != 0) {
        return Err(bad("padding"));
    }
    Ok(Letter {
        sender,
        recipient,
        sent_secs: u64::from_be_bytes(time),
        sent_nanos,
        text: Sensitive::new(text),
    })
}

struct Reader<'a> {
    p: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CryptoError> {
        let s = self
            .p
            .get(self.at..self.at + n)
            .ok_or(CryptoError::Malformed("plaintext runs short"))?;
        self.at += n;
        Ok(s)
    }

    fn name(&mut self) -> Result<String, CryptoError> {
        let len = usize::from(self.take(1)?[0]);
        if len == 0 || len > MAX_NAME_LEN {
            return Err(CryptoError::Malformed("name length"));
        }
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| CryptoError::Malformed("name is not UTF-8"))
    }
}

/// Seals a padded plaintext under an explicit message key (building block; tests use it to
/// show that one row's key opens nothing else). Any plaintext length works: the output is
/// `nonce ‖ ciphertext ‖ tag`, [`SEALED_OVERHEAD`] bytes longer than the plaintext (the
/// account table seals names with it; [`open_with_key_any_len`] opens those).
pub fn seal_with_key(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce).map_err(|_| CryptoError::Openssl("random"))?;
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&nonce),
        aad,
        plaintext,
        &mut tag,
    )
    .map_err(|_| CryptoError::Openssl("aes-gcm encrypt"))?;
    let mut out = Vec::with_capacity(SEALED_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a sealed value under an explicit message key. Any mismatch is `Authentication`.
pub fn open_with_key(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() != SEALED_LEN {
        return Err(CryptoError::Malformed("sealed size"));
    }
    open_with_key_any_len(key, aad, sealed)
}

/// Opens a value sealed by [`seal_with_key`] whatever its plaintext length (mail rows use
/// [`open_with_key`], which also insists on the fixed row size). Too short to hold a nonce
/// and a tag is `Malformed`; any other mismatch is `Authentication`.
pub fn open_with_key_any_len(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < SEALED_OVERHEAD {
        return Err(CryptoError::Malformed("sealed size"));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    decrypt_aead(Cipher::aes_256_gcm(), key, Some(nonce), aad, ct, tag)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Authentication)
}

struct DerivedKey {
    secret: Secret,
    blind_key: Zeroizing<[u8; 32]>,
    check: [u8; 32],
}

/// Every key of a keyfile with what is derived from it once (blind-index key, check value).
pub struct Keyring {
    active: KeyId,
    keys: BTreeMap<KeyId, DerivedKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Derives what every key of the keyfile needs.
    pub fn new(keyfile: &Keyfile) -> Result<Keyring, CryptoError> {
        let mut keys = BTreeMap::new();
        for (id, secret) in keyfile.keys() {
            let derived = DerivedKey {
                blind_key: hkdf(secret.expose(), &[], BLIND_INDEX_LABEL)?,
                check: key_check(secret)?,
                secret: secret.duplicate(),
            };
            keys.insert(id, derived);
        }
        Ok(Keyring {
            active: keyfile.active_id(),
            keys,
        })
    }

    /// The key that seals new mail.
    pub fn active_id(&self) -> KeyId {
        self.active
    }

    /// Key ids, lowest first.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    /// The key-check value of one key.
    pub fn check_value(&self, key_id: KeyId) -> Option<[u8; 32]> {
        self.keys.get(&key_id).map(|k| k.check)
    }

    /// The accounts key of one key ([`accounts_key`] of its secret).
    pub fn accounts_key(&self, key_id: KeyId) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let k = self
            .keys
            .get(&key_id)
            .ok_or(CryptoError::UnknownKey { key_id })?;
        accounts_key(&k.secret)
    }

    /// The blind index of an already normalised name under one key.
    pub fn blind(&self, key_id: KeyId, normalised: &str) -> Result<Blind, CryptoError> {
        let k = self
            .keys
            .get(&key_id)
            .ok_or(CryptoError::UnknownKey { key_id })?;
        hmac_sha256(&k.blind_key[..], normalised.as_bytes())
    }

    /// The blind indexes of a name (normalised here) under every key: a recipient's mail
    /// may be under an older key until a rotation finishes.
    pub fn blinds(&self, name: &str) -> Result<Vec<(KeyId, Blind)>, CryptoError> {
        let n = normalise(name);
        self.key_ids()
            .map(|id| Ok((id, self.blind(id, &n)?)))
            .collect()
    }

    /// The mark that records a delivered row (issue 10 L3): a keyed hash of its id under the
    /// active key's blind-index key, so the `delivered` table holds no row id a copy of the
    /// database could be matched against.
    pub fn delivered_mark(&self, id: &MailId) -> Result<Blind, CryptoError> {
        self.mark_under(self.active, id)
    }

    /// [`Keyring::delivered_mark`] under every key of the keyring (a row delivered before a
    /// rotation was marked under the key active then).
    pub fn delivered_marks(&self, id: &MailId) -> Result<Vec<Blind>, CryptoError> {
        self.key_ids().map(|k| self.mark_under(k, id)).collect()
    }

    fn mark_under(&self, key_id: KeyId, id: &MailId) -> Result<Blind, CryptoError> {
        let k = self
            .keys
            .get(&key_id)
            .ok_or(CryptoError::UnknownKey { key_id })?;
        // A label no name's blind index or pair index can start with (names hold no NUL).
        let mut data = b"delivered\0".to_vec();
        data.extend_from_slice(&id.0);
        hmac_sha256(&k.blind_key[..], &data)
    }

    /// Seals a letter under the active key with a fresh key part and nonce.
    /// `letter.recipient` must already be normalised.
    pub fn seal(
        &self,
        id: MailId,
        letter: &Letter,
        expiry_day: i64,
    ) -> Result<SealedRow, CryptoError> {
        let key_id = self.active;
        let k = self
            .keys
            .get(&key_id)
            .ok_or(CryptoError::UnknownKey { key_id })?;
        let plain = pad(letter)?;
        let blind = hmac_sha256(&k.blind_key[..], letter.recipient.as_bytes())?;
        let pair = pair_index(&k.blind_key[..], &letter.recipient, &letter.sender)?;
        let mut key_part = [0u8; KEY_PART_LEN];
        openssl::rand::rand_bytes(&mut key_part).map_err(|_| CryptoError::Openssl("random"))?;
        let key = message_key(&k.secret, &key_part)?;
        let sealed = seal_with_key(&key, &aad_until(key_id, &blind, &id, expiry_day), &plain)?;
        Ok(SealedRow {
            id,
            blind,
            key_id,
            key_part,
            sealed,
            pair: Some(pair),
            expiry_day: Some(expiry_day),
        })
    }

    /// Opens a stored row, checking everything the AAD binds.
    pub fn open(&self, row: &SealedRow) -> Result<Letter, CryptoError> {
        let k = self
            .keys
            .get(&row.key_id)
            .ok_or(CryptoError::UnknownKey { key_id: row.key_id })?;
        let key = message_key(&k.secret, &row.key_part)?;
        let legacy = aad(row.key_id, &row.blind, &row.id);
        let plain = match row.expiry_day {
            // Bound to its expiry day (this version), else sealed before that was done:
            // a row of either kind opens only under its own AAD, so trying the old form
            // after the new one lets no edited expiry day through for a new row.
            Some(day) => open_with_key(
                &key,
                &aad_until(row.key_id, &row.blind, &row.id, day),
                &row.sealed,
            )
            .or_else(|_| open_with_key(&key, &legacy, &row.sealed))?,
            None => open_with_key(&key, &legacy, &row.sealed)?,
        };
        let letter = unpad(&plain)?;
        // The AAD already ties the row to this blind index; this also catches a plaintext
        // that names someone else (it cannot be forged without the key, but costs nothing).
        if hmac_sha256(&k.blind_key[..], letter.recipient.as_bytes())? != row.blind {
            return Err(CryptoError::Malformed(
                "recipient does not match the blind index",
            ));
        }
        Ok(letter)
    }
}

#[cfg(test)]
mod tests {
    /// An expiry day for the rows these tests seal.
    const DAY: i64 = 20_500;
    use super::*;

    fn ring(secret: u8) -> Keyring {
        let kf = Keyfile::from_keys(1, vec![(1, Secret::from_bytes([secret; 32]))]).unwrap();
        Keyring::new(&kf).unwrap()
    }

    fn letter(text: &str) -> Letter {
        Letter {
            sender: "Alice".into(),
            recipient: normalise(" Bob "),
            sent_secs: 1_763_906_700,
            sent_nanos: 250_000_000,
            text: Sensitive::new(text.as_bytes().to_vec()),
        }
    }

    #[test]
    fn layout_1_without_nanoseconds_still_reads() {
        // Version 1 as it was written before the nanoseconds: same fields, no fraction.
        let mut p = vec![1u8, 5];
        p.extend_from_slice(b"Alice");
        p.push(3);
        p.extend_from_slice(b"bob");
        p.extend_from_slice(&1_763_906_700u64.to_be_bytes());
        p.extend_from_slice(&2u16.to_be_bytes());
        p.extend_from_slice(b"hi");
        p.resize(PLAINTEXT_LEN, 0);
        let l = unpad(&p).unwrap();
        assert_eq!((l.sender.as_str(), l.recipient.as_str()), ("Alice", "bob"));
        assert_eq!((l.sent_secs, l.sent_nanos), (1_763_906_700, 0));
        assert_eq!(l.text.expose(), b"hi");
        // Version 2 carries the fraction; an out-of-range one is refused both ways.
        let mut l2 = letter("hi");
        assert_eq!(unpad(&pad(&l2).unwrap()).unwrap().sent_nanos, 250_000_000);
        l2.sent_nanos = 1_000_000_000;
        assert!(pad(&l2).is_err());
        let mut p2 = pad(&letter("hi")).unwrap().to_vec();
        let at = 1 + 1 + 5 + 1 + 3 + 8;
        p2[at..at + 4].copy_from_slice(&1_000_000_000u32.to_be_bytes());
        assert!(unpad(&p2).is_err());
        // An unknown version is refused.
        p[0] = 3;
        assert!(unpad(&p).is_err());
    }

    #[test]
    fn round_trip_and_fixed_size() {
        let r = ring(7);
        for text in [
            "",
            "x",
            "meet me by the fountain",
            &"y".repeat(MAX_TEXT_LEN),
        ] {
            let row = r
                .seal(MailId::random().unwrap(), &letter(text), DAY)
                .unwrap();
            assert_eq!(row.sealed.len(), SEALED_LEN, "size must not depend on text");
            let back = r.open(&row).unwrap();
            assert_eq!(back, letter(text));
        }
    }

    #[test]
    fn the_expiry_day_is_bound_and_rows_sealed_before_that_still_open() {
        let r = ring(7);
        let mut row = r
            .seal(MailId::random().unwrap(), &letter("bound"), DAY)
            .unwrap();
        assert_eq!(row.expiry_day, Some(DAY));
        assert_eq!(r.open(&row).unwrap(), letter("bound"));
        // Moved on by a day: the tag no longer verifies.
        row.expiry_day = Some(DAY + 1);
        assert_eq!(r.open(&row), Err(CryptoError::Authentication));
        // A row of the earlier format (its AAD without the day), as stored before: opens
        // whatever day it is stored with.
        let k = r.keys.get(&row.key_id).unwrap();
        let key = message_key(&k.secret, &row.key_part).unwrap();
        let plain = pad(&letter("legacy")).unwrap();
        row.sealed = seal_with_key(&key, &aad(row.key_id, &row.blind, &row.id), &plain).unwrap();
        for day in [None, Some(DAY), Some(DAY + 5)] {
            row.expiry_day = day;
            assert_eq!(r.open(&row).unwrap(), letter("legacy"));
        }
    }

    #[test]
    fn pad_refuses_oversize_and_unpad_refuses_bad_padding() {
        let long = letter(&"z".repeat(MAX_TEXT_LEN + 1));
        assert_eq!(pad(&long), Err(CryptoError::TextTooLong { len: 401 }));
        let mut l = letter("hi");
        l.sender = "s".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(pad(&l), Err(CryptoError::BadName { .. })));
        l.sender = String::new();
        assert!(matches!(pad(&l), Err(CryptoError::BadName { .. })));
        let mut p = pad(&letter("hi")).unwrap();
        assert!(unpad(&p).is_ok());
        p[PLAINTEXT_LEN - 1] = 1;
        assert!(matches!(unpad(&p), Err(CryptoError::Malformed(_))));
        assert!(matches!(
            unpad(&p[..PLAINTEXT_LEN - 1]),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn two_messages_never_share_a_key_part_nonce_or_ciphertext() {
        let r = ring(1);
        let a = r
            .seal(MailId::random().unwrap(), &letter("same"), DAY)
            .unwrap();
        let b = r
            .seal(MailId::random().unwrap(), &letter("same"), DAY)
            .unwrap();
        assert_ne!(a.key_part, b.key_part);
        assert_ne!(a.sealed[..NONCE_LEN], b.sealed[..NONCE_LEN]);
        assert_ne!(a.sealed, b.sealed);
        let secret = Secret::from_bytes([1; 32]);
        assert_ne!(
            *message_key(&secret, &a.key_part).unwrap(),
            *message_key(&secret, &b.key_part).unwrap()
        );
        // Same recipient under the same key: same blind index (that is how mail is found).
        assert_eq!(a.blind, b.blind);
    }

    #[test]
    fn one_rows_key_opens_no_other_row() {
        let r = ring(2);
        let secret = Secret::from_bytes([2; 32]);
        let a = r
            .seal(MailId::random().unwrap(), &letter("first"), DAY)
            .unwrap();
        let b = r
            .seal(MailId::random().unwrap(), &letter("second"), DAY)
            .unwrap();
        let key_a = message_key(&secret, &a.key_part).unwrap();
        assert!(open_with_key(&key_a, &aad_until(1, &a.blind, &a.id, DAY), &a.sealed).is_ok());
        assert_eq!(
            open_with_key(&key_a, &aad_until(1, &b.blind, &b.id, DAY), &b.sealed),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn edits_swaps_and_moves_fail() {
        let r = ring(3);
        let a = r
            .seal(MailId::random().unwrap(), &letter("first"), DAY)
            .unwrap();
        let b = r
            .seal(MailId::random().unwrap(), &letter("second"), DAY)
            .unwrap();
        // Every single byte of the sealed value matters.
        for i in [0, NONCE_LEN, NONCE_LEN + 100, SEALED_LEN - 1] {
            let mut e = a.clone();
            e.sealed[i] ^= 0x01;
            assert_eq!(r.open(&e), Err(CryptoError::Authentication), "byte {i}");
        }
        let mut e = a.clone();
        e.key_part[0] ^= 1;
        assert_eq!(r.open(&e), Err(CryptoError::Authentication));
        // AAD parts: id, blind (moved to another recipient), key id.
        let mut e = a.clone();
        e.id = b.id;
        assert_eq!(r.open(&e), Err(CryptoError::Authentication));
        let mut e = a.clone();
        e.blind = r.blind(1, "carol").unwrap();
        assert_eq!(r.open(&e), Err(CryptoError::Authentication));
        // Swapped contents between two rows.
        let mut e = a.clone();
        e.sealed = b.sealed.clone();
        e.key_part = b.key_part;
        assert_eq!(r.open(&e), Err(CryptoError::Authentication));
        let mut e = a.clone();
        e.key_id = 2;
        assert_eq!(r.open(&e), Err(CryptoError::UnknownKey { key_id: 2 }));
    }

    #[test]
    fn wrong_keyfile_fails_and_has_another_check_value() {
        let a = ring(4);
        let b = ring(5);
        let row = a
            .seal(MailId::random().unwrap(), &letter("x"), DAY)
            .unwrap();
        assert_eq!(b.open(&row), Err(CryptoError::Authentication));
        assert_ne!(a.check_value(1), b.check_value(1));
        assert_ne!(a.blind(1, "bob").unwrap(), b.blind(1, "bob").unwrap());
    }

    #[test]
    fn blind_index_is_keyed_normalised_and_hides_the_name() {
        let r = ring(6);
        assert_eq!(r.blinds("Bob").unwrap(), r.blinds("  bOB ").unwrap());
        assert_ne!(r.blind(1, "bob").unwrap(), r.blind(1, "bob2").unwrap());
        let b = r.blind(1, "bob").unwrap();
        assert!(!b.windows(3).any(|w| w == b"bob"));
        // Not a plain hash of the name.
        let plain = openssl::sha::sha256(b"bob");
        assert_ne!(b, plain);
    }

    #[test]
    fn any_length_sealing_round_trips_and_authenticates() {
        let key = [5u8; 32];
        for plain in [&b""[..], b"Bob", &[0xaa; 100]] {
            let sealed = seal_with_key(&key, b"aad", plain).unwrap();
            assert_eq!(sealed.len(), plain.len() + SEALED_OVERHEAD);
            let back = open_with_key_any_len(&key, b"aad", &sealed).unwrap();
            assert_eq!(back.as_slice(), plain);
            assert_eq!(
                open_with_key_any_len(&key, b"other aad", &sealed),
                Err(CryptoError::Authentication)
            );
            assert_eq!(
                open_with_key_any_len(&[6u8; 32], b"aad", &sealed),
                Err(CryptoError::Authentication)
            );
            let mut edited = sealed.clone();
            edited[sealed.len() - 1] ^= 1;
            assert_eq!(
                open_with_key_any_len(&key, b"aad", &edited),
                Err(CryptoError::Authentication)
            );
            // The fixed-size opener still refuses anything but a mail row.
            assert_eq!(
                open_with_key(&key, b"aad", &sealed),
                Err(CryptoError::Malformed("sealed size"))
            );
        }
        assert_eq!(
            open_with_key_any_len(&key, b"aad", &[0; SEALED_OVERHEAD - 1]),
            Err(CryptoError::Malformed("sealed size"))
        );
        // A mail row opens through either opener.
        let plain = [7u8; PLAINTEXT_LEN];
        let sealed = seal_with_key(&key, b"a", &plain).unwrap();
        assert_eq!(
            open_with_key(&key, b"a", &sealed).unwrap(),
            open_with_key_any_len(&key, b"a", &sealed).unwrap()
        );
    }

    #[test]
    fn hmac_matches_the_rfc_4231_vector() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?").unwrap();
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_material_never_prints() {
        let r = ring(9);
        let row = r
            .seal(MailId::random().unwrap(), &letter("secret words"), DAY)
            .unwrap();
        let shown = format!("{r:?} {row:?}");
        assert!(!shown.contains("secret words"));
        assert!(!shown.contains(&format!("{:?}", row.key_part)));
    }

    proptest::proptest! {
        #[test]
        fn pad_unpad_round_trips(
            sender in "[A-Za-z0-9 ._-]{1,32}",
            recipient in "[a-z0-9 ._-]{1,32}",
            sent_secs in proptest::num::u64::ANY,
            sent_nanos in 0u32..1_000_000_000,
            text in proptest::collection::vec(proptest::num::u8::ANY, 0..=MAX_TEXT_LEN),
        ) {
            let l = Letter { sender, recipient, sent_secs, sent_nanos, text: Sensitive::new(text) };
            let p = pad(&l).unwrap();
            proptest::prop_assert_eq!(p.len(), PLAINTEXT_LEN);
            proptest::prop_assert_eq!(unpad(&p).unwrap(), l);
        }

        #[test]
        fn unpad_never_panics_on_any_bytes(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, PLAINTEXT_LEN),
        ) {
            let _ = unpad(&bytes);
        }
    }
}
