//! Password hashing for the account table: scrypt through openssl, with its cost
//! parameters and a random salt stored beside every hash
//! (`scrypt$<log_n>$<r>$<p>$<salt hex>$<hash hex>`), so the parameters can be raised later
//! without breaking old hashes. Comparison is constant-time ([`crate::avatar::ct_eq`]);
//! parameters read back from a row are bounded, so a tampered row cannot make one login eat
//! the machine.
//!
//! May touch: openssl (scrypt, random bytes). No SQLite, no files: [`super::accounts`]
//! stores what this makes.

use zeroize::Zeroize;

use super::accounts::AccountError;
use crate::avatar::{check_new_password, ct_eq, Password};

const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// scrypt cost parameters, stored with every hash so they can be raised later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScryptParams {
    /// log2 of N.
    pub log_n: u8,
    /// Block size.
    pub r: u32,
    /// Parallelism.
    pub p: u32,
}

impl Default for ScryptParams {
    /// N = 2^14, r = 8, p = 1: 16 MiB per hash, tens of milliseconds on a small machine.
    fn default() -> ScryptParams {
        ScryptParams {
            log_n: 14,
            r: 8,
            p: 1,
        }
    }
}

impl ScryptParams {
    fn memory(&self) -> u64 {
        128u64
            .saturating_mul(1u64 << self.log_n.min(40))
            .saturating_mul(u64::from(self.r))
            .saturating_mul(u64::from(self.p))
    }

    pub(crate) fn check(&self) -> Result<(), AccountError> {
        // Refuse parameters that would make one login eat the machine (a tampered row).
        if !(1..=20).contains(&self.log_n) || self.r == 0 || self.p == 0 || self.p > 16 {
            return Err(AccountError::Corrupt("scrypt parameters out of range"));
        }
        if self.memory() > 1 << 30 {
            return Err(AccountError::Corrupt("scrypt parameters need over 1 GiB"));
        }
        Ok(())
    }
}

/// A stored password hash: `scrypt$<log_n>$<r>$<p>$<salt hex>$<hash hex>`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StoredHash {
    params: ScryptParams,
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

impl StoredHash {
    pub(crate) fn new(
        password: &Password,
        params: ScryptParams,
    ) -> Result<StoredHash, AccountError> {
        let mut salt = [0u8; SALT_LEN];
        openssl::rand::rand_bytes(&mut salt)?;
        let hash = scrypt(password, &salt, params)?;
        Ok(StoredHash { params, salt, hash })
    }

    /// Constant-time comparison of `password`'s hash with this one.
    pub(crate) fn matches(&self, password: &Password) -> Result<bool, AccountError> {
        let mut got = scrypt(password, &self.salt, self.params)?;
        let same = ct_eq(&got, &self.hash);
        got.zeroize();
        Ok(same)
    }

    pub(crate) fn encode(&self) -> String {
        format!(
            "scrypt${}${}${}${}${}",
            self.params.log_n,
            self.params.r,
            self.params.p,
            hex(&self.salt),
            hex(&self.hash)
        )
    }

    pub(crate) fn decode(s: &str) -> Result<StoredHash, AccountError> {
        const BAD: AccountError = AccountError::Corrupt("unreadable password hash");
        let parts: Vec<&str> = s.split('$').collect();
        let [kind, log_n, r, p, salt, hash] = parts.as_slice() else {
            return Err(BAD);
        };
        if *kind != "scrypt" {
            return Err(BAD);
        }
        let params = ScryptParams {
            log_n: log_n.parse().map_err(|_| BAD)?,
            r: r.parse().map_err(|_| BAD)?,
            p: p.parse().map_err(|_| BAD)?,
        };
        params.check()?;
        let salt = unhex(salt).and_then(|v| v.try_into().ok()).ok_or(BAD)?;
        let hash = unhex(hash).and_then(|v| v.try_into().ok()).ok_or(BAD)?;
        Ok(StoredHash { params, salt, hash })
    }
}

fn scrypt(
    password: &Password,
    salt: &[u8],
    params: ScryptParams,
) -> Result<[u8; HASH_LEN], AccountError> {
    params.check()?;
    let mut out = [0u8; HASH_LEN];
    openssl::pkcs5::scrypt(
        password.expose(),
        salt,
        1u64 << params.log_n,
        u64::from(params.r),
        u64::from(params.p),
        params.memory().saturating_mul(2),
        &mut out,
    )?;
    Ok(out)
}

/// Lowercase hex, as hashes (and, before schema 2, the accounts' key check) are stored.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

/// Whether `p` may become a new password: the one rule, [`check_new_password`].
pub(crate) fn password_acceptable(p: &Password, min_len: usize) -> bool {
    check_new_password(p, min_len).is_ok()
}

/// The stored hash of a new password, once it passes the one rule with the configured
/// minimum.
pub(crate) fn new_password_hash(
    password: &Password,
    params: ScryptParams,
    min_len: usize,
) -> Result<StoredHash, AccountError> {
    check_new_password(password, min_len)?;
    StoredHash::new(password, params)
}

/// Cheap parameters for tests, whose subject is not the KDF's cost.
#[cfg(test)]
pub(crate) const FAST: ScryptParams = ScryptParams {
    log_n: 8,
    r: 8,
    p: 1,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avatar::test_support::{new_password_cases, pw};
    use crate::avatar::MIN_PASSWORD_LEN;

    #[test]
    fn one_new_password_rule() {
        for (p, ok) in new_password_cases() {
            assert_eq!(password_acceptable(&pw(&p), MIN_PASSWORD_LEN), ok, "{p}");
            assert_eq!(
                new_password_hash(&pw(&p), FAST, MIN_PASSWORD_LEN).is_ok(),
                ok,
                "{p}"
            );
        }
    }

    #[test]
    fn a_hash_matches_the_password_as_typed_and_nothing_trimmed() {
        let typed = " my pass phrase ";
        let h = StoredHash::new(&pw(typed), FAST).unwrap();
        assert!(h.matches(&pw(typed)).unwrap());
        assert!(!h.matches(&pw(typed.trim())).unwrap());
    }

    #[test]
    fn hashes_are_salted_and_round_trip_their_params() {
        let a = StoredHash::new(&pw("same password"), FAST).unwrap();
        let b = StoredHash::new(&pw("same password"), FAST).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash);
        assert!(a.matches(&pw("same password")).unwrap());
        assert!(!a.matches(&pw("same passworD")).unwrap());
        let enc = a.encode();
        assert!(enc.starts_with("scrypt$8$8$1$"));
        let back = StoredHash::decode(&enc).unwrap();
        assert!(back == a);
        assert!(back.matches(&pw("same password")).unwrap());
        for bad in [
            "",
            "bcrypt$8$8$1$00$00",
            "scrypt$8$8$1$zz$00",
            "scrypt$40$8$1$00000000000000000000000000000000$00",
            &enc[..enc.len() - 2],
        ] {
            assert!(StoredHash::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_params_are_memory_hard() {
        let p = ScryptParams::default();
        assert_eq!((p.log_n, p.r, p.p), (14, 8, 1));
        assert_eq!(p.memory(), 16 << 20);
        let h = StoredHash::new(&pw("a long password"), p).unwrap();
        assert!(h.matches(&pw("a long password")).unwrap());
    }
}
