//! The vault's avatar accounts on a real SQLite file: hashing, verification, names,
//! throttling, the async handle, the key and schema checks they share with the mail, and
//! what the raw database file reveals.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use espmail_test_macros::bounded;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use espmail::avatar::Password;
use espmail::espmail::accounts::{
    AccountError, Accounts, AccountsHandle, AuthError, LoginOutcome, ScryptParams, ThrottleLimits,
};
use espmail::espmail::crypto::Keyring;
use espmail::espmail::keyfile::{Keyfile, Secret};
use espmail::espmail::{Limits, StoreError};

const FAST: ScryptParams = ScryptParams {
    log_n: 8,
    r: 8,
    p: 1,
};

fn pw(s: &str) -> Password {
    Password::from(s.to_string())
}

/// A one-key keyfile whose secret is 32 bytes of `byte`.
fn keys(byte: u8) -> Keyring {
    let kf = Keyfile::from_keys(1, vec![(1, Secret::from_bytes([byte; 32]))]).unwrap();
    Keyring::new(&kf).unwrap()
}

fn open_with(path: &Path, keys: &Keyring) -> Result<Accounts, AccountError> {
    Accounts::open_with(path, keys, &Limits::default(), FAST)
}

fn open(path: &Path) -> Accounts {
    open_with(path, &keys(42)).unwrap()
}

fn raw_files(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        all.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn add_verify_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("espmail.db");
    let acc = open(&db);
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let bob = acc.add("Bob", &pw("correct horse"), t).unwrap();
    assert_eq!(bob.name.display(), "Bob");
    acc.add("alice", &pw("battery staple"), t).unwrap();
    assert!(matches!(
        acc.add("BOB", &pw("another one"), t),
        Err(AccountError::NameTaken)
    ));
    assert!(matches!(
        acc.add("carol", &pw("short"), t),
        Err(AccountError::PasswordTooShort { min: 8 })
    ));
    assert!(matches!(
        acc.add("bad!", &pw("long enough"), t),
        Err(AccountError::BadName(_))
    ));
    // Case-insensitive, shown as first registered.
    let v = acc.verify("bOB", &pw("correct horse")).unwrap();
    assert_eq!(v.name.display(), "Bob");
    assert!(acc.exists(" BOB ").unwrap());
    assert!(!acc.exists("carol").unwrap());
    let list = acc.list().unwrap();
    let names: Vec<&str> = list.iter().map(|a| a.name.display()).collect();
    assert_eq!(names, ["alice", "Bob"]);
    // Kept to the day only (issue 10 L2): the day is all `account list` shows.
    assert_eq!(
        list[1].created,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 1_700_000_000 % 86_400)
    );
    assert!(list[1].has_password);
    acc.set_password("bob", &pw("new password")).unwrap();
    assert!(acc.verify("bob", &pw("correct horse")).is_err());
    assert!(acc.verify("bob", &pw("new password")).is_ok());
    assert!(matches!(
        acc.set_password("nobody", &pw("new password")),
        Err(AccountError::NoSuchAvatar)
    ));
    assert!(acc.remove("BOB").unwrap());
    assert!(!acc.remove("bob").unwrap());
    assert!(acc.verify("bob", &pw("new password")).is_err());
    // Reopening the file keeps the rest.
    drop(acc);
    let acc = open(&db);
    assert!(acc.verify("Alice", &pw("battery staple")).is_ok());
}

#[test]
fn wrong_password_and_unknown_name_give_the_same_error() {
    let dir = tempfile::tempdir().unwrap();
    let acc = open(&dir.path().join("db"));
    acc.add("Bob", &pw("correct horse"), SystemTime::now())
        .unwrap();
    let wrong = acc.verify("bob", &pw("wrong horse")).unwrap_err();
    let unknown = acc.verify("nobody", &pw("correct horse")).unwrap_err();
    let badname = acc.verify("no/body", &pw("correct horse")).unwrap_err();
    for e in [&wrong, &unknown, &badname] {
        assert!(matches!(e, AuthError::WrongNameOrPassword), "{e:?}");
        assert_eq!(e.to_string(), "wrong name or password");
    }
    // A trusted-only avatar cannot log in with any password.
    acc.ensure_trusted("Front", SystemTime::now()).unwrap();
    assert!(matches!(
        acc.verify("front", &pw("")),
        Err(AuthError::WrongNameOrPassword)
    ));
}

#[test]
fn same_password_twice_gives_different_stored_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let acc = open(&db);
    acc.add("one", &pw("same secret"), SystemTime::now())
        .unwrap();
    acc.add("two", &pw("same secret"), SystemTime::now())
        .unwrap();
    drop(acc);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let hashes: Vec<String> = conn
        .prepare("SELECT pw_hash FROM accounts")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(hashes.len(), 2);
    assert_ne!(hashes[0], hashes[1]);
    for h in &hashes {
        // Sealed under the keyfile (issue 10 L1): not even the scrypt parameters show.
        assert!(h.starts_with("sealed$") && !h.contains("scrypt"), "{h}");
        assert!(!h.contains("same secret"));
    }
}

#[test]
fn the_raw_database_holds_no_names_or_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("espmail.db");
    let acc = open(&db);
    acc.add("Zebediah", &pw("PassWordCanary"), SystemTime::now())
        .unwrap();
    acc.ensure_trusted("Quintilian", SystemTime::now()).unwrap();
    assert!(acc.exists("zebediah").unwrap());
    drop(acc);
    let raw = raw_files(dir.path());
    assert!(raw.len() > 1000);
    for needle in [
        "Zebediah",
        "zebediah",
        "Quintilian",
        "quintilian",
        "PassWordCanary",
    ] {
        assert!(
            !contains(&raw, needle.as_bytes()),
            "{needle} in the raw files"
        );
    }
}

/// One key check and one schema for mail and accounts: another keyfile is refused by the
/// vault's per-key check values, and a schema newer than this program by `user_version`.
#[test]
fn another_keyfile_and_a_newer_schema_are_refused_by_the_vaults_checks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    open(&db)
        .add("bob", &pw("correct horse"), SystemTime::now())
        .unwrap();
    let err = open_with(&db, &keys(1)).unwrap_err();
    assert!(
        matches!(
            err,
            AccountError::Store(StoreError::KeyMismatch { key_id: 1 })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("keyfile does not match"), "{err}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v as usize, espmail::espmail::store::MIGRATIONS.len());
    conn.pragma_update(None, "user_version", 99).unwrap();
    assert!(matches!(
        open_with(&db, &keys(42)),
        Err(AccountError::Store(StoreError::SchemaTooNew {
            found: 99,
            ..
        }))
    ));
}

#[test]
fn a_sealed_name_moved_to_another_row_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let acc = open(&db);
    acc.add("bob", &pw("correct horse"), SystemTime::now())
        .unwrap();
    acc.add("eve", &pw("correct horse"), SystemTime::now())
        .unwrap();
    drop(acc);
    let conn = rusqlite::Connection::open(&db).unwrap();
    // Give every row the first row's sealed name.
    conn.execute(
        "UPDATE accounts SET sealed_name = (SELECT sealed_name FROM accounts LIMIT 1)",
        [],
    )
    .unwrap();
    drop(conn);
    let acc = open(&db);
    let results = [acc.lookup("bob"), acc.lookup("eve")];
    assert_eq!(
        results.iter().filter(|r| r.is_err()).count(),
        1,
        "exactly the moved name must fail to open"
    );
}

fn handle(dir: &Path) -> AccountsHandle {
    AccountsHandle::new(open(&dir.join("db")), 2, ThrottleLimits::default()).unwrap()
}

#[bounded]
#[tokio::test]
async fn login_auto_registers_and_throttles() {
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path());
    let peer: IpAddr = "192.0.2.1".parse().unwrap();
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    let t0 = Instant::now();
    let now = SystemTime::now();
    // Unknown name, short password: refused, nothing created.
    assert!(matches!(
        h.login("Newbie", pw("short"), peer, true, t0, now).await,
        Err(AuthError::WrongNameOrPassword)
    ));
    assert_eq!(h.lookup("newbie").await.unwrap(), None);
    // Auto-registration off: refused the same way.
    assert!(matches!(
        h.login("Newbie", pw("long enough"), peer, false, t0, now)
            .await,
        Err(AuthError::WrongNameOrPassword)
    ));
    // On: created, shown as given.
    let out = h
        .login("Newbie", pw("long enough"), peer, true, t0, now)
        .await
        .unwrap();
    assert!(matches!(&out, LoginOutcome::Registered(a) if a.name.display() == "Newbie"));
    let again = h
        .login("NEWBIE", pw("long enough"), peer, true, t0, now)
        .await
        .unwrap();
    assert!(matches!(&again, LoginOutcome::Existing(a) if a.name.display() == "Newbie"));
    // Wrong passwords for a known name do not register anything and count as failures.
    for i in 0..5 {
        let t = t0 + Duration::from_secs(i);
        assert!(matches!(
            h.login("newbie", pw("wrong password"), other, true, t, now)
                .await,
            Err(AuthError::WrongNameOrPassword)
        ));
    }
    // Sixth attempt within the minute is throttled, even with the right password.
    assert!(matches!(
        h.login(
            "newbie",
            pw("long enough"),
            other,
            true,
            t0 + Duration::from_secs(6),
            now
        )
        .await,
        Err(AuthError::Throttled {
            retry_after_secs: 54
        })
    ));
    // After the window the right password works again.
    assert!(h
        .login(
            "newbie",
            pw("long enough"),
            other,
            true,
            t0 + Duration::from_secs(60),
            now
        )
        .await
        .is_ok());
}

#[bounded]
#[tokio::test]
async fn handle_operations_and_concurrent_logins() {
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path());
    let now = SystemTime::now();
    h.add("Alice", pw("alice password"), now).await.unwrap();
    assert!(matches!(
        h.add("alice", pw("alice password"), now).await,
        Err(AccountError::NameTaken)
    ));
    h.set_password("ALICE", pw("alice password 2"))
        .await
        .unwrap();
    assert!(h.verify("alice", pw("alice password")).await.is_err());
    let a = h.verify("alice", pw("alice password 2")).await.unwrap();
    assert_eq!(a.name.display(), "Alice");
    let t = h.ensure_trusted("Front", now).await.unwrap();
    assert_eq!(h.ensure_trusted("front", now).await.unwrap(), t);
    assert_eq!(h.list().await.unwrap().len(), 2);
    assert!(!h.list().await.unwrap()[1].has_password);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let p = if i % 2 == 0 {
                "alice password 2"
            } else {
                "nope nope"
            };
            h.verify("alice", pw(p)).await.is_ok()
        }));
    }
    let mut oks = 0;
    for t in tasks {
        oks += usize::from(t.await.unwrap());
    }
    assert_eq!(oks, 4);
    assert!(h.remove("alice").await.unwrap());
    assert_eq!(h.lookup("alice").await.unwrap(), None);
}

#[bounded]
#[tokio::test]
async fn one_address_cannot_register_avatars_without_limit() {
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path());
    let peer: IpAddr = "198.51.100.7".parse().unwrap();
    let t0 = Instant::now();
    let now = SystemTime::now();
    for i in 0..5 {
        let out = h
            .login(&format!("new{i}"), pw("long enough"), peer, true, t0, now)
            .await
            .unwrap();
        assert!(matches!(out, LoginOutcome::Registered(_)));
    }
    assert!(matches!(
        h.login("new5", pw("long enough"), peer, true, t0, now)
            .await,
        Err(AuthError::Throttled { .. })
    ));
    assert_eq!(h.lookup("new5").await.unwrap(), None);
    // Existing avatars from another address are not affected.
    let other: IpAddr = "198.51.100.8".parse().unwrap();
    assert!(h
        .login("new0", pw("long enough"), other, true, t0, now)
        .await
        .is_ok());
}

/// HMAC-SHA256 with raw openssl, written here independently of the crate.
fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let k = PKey::hmac(key).unwrap();
    let mut s = Signer::new(MessageDigest::sha256(), &k).unwrap();
    s.update(data).unwrap();
    s.sign_to_vec().unwrap()
}

/// The accounts key of a keyfile secret, computed here from RFC 5869 with raw HMACs:
/// HKDF-SHA256 with no salt (so HashLen zero bytes) and the info "espmail v1 accounts
/// key", one block.
fn hkdf_accounts_key(secret: &[u8]) -> Vec<u8> {
    let prk = hmac256(&[0u8; 32], secret);
    hmac256(&prk, b"espmail v1 accounts key\x01")
}

/// The on-disk layout, recomputed from its description (module doc of espmail::accounts):
/// the accounts key is HKDF of the keyfile secret (the derivation the server has always
/// used), the name index is HMAC(HMAC(key, index label), normalised name), the sealed name
/// is AES-256-GCM under HMAC(key, seal label) with the index as AAD over the name's
/// length byte, the name and zeros up to 16 (every sealed name one size), stored nonce |
/// ct | tag, and `meta` records which keyfile key it is. A refactoring that changed any of this
/// would make existing databases unreadable.
#[test]
fn the_on_disk_format_is_the_documented_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("espmail.db");
    let acc = open(&db);
    acc.add("Bob Smith", &pw("correct horse"), SystemTime::now())
        .unwrap();
    drop(acc);
    let k = hkdf_accounts_key(&[42u8; 32]);
    let index_key = hmac256(&k, b"espmail accounts: name index v1");
    let seal_key = hmac256(&k, b"espmail accounts: sealed name v1");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let key_id: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'accounts_key'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(key_id, 1);
    let own_check: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'accounts_meta')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        !own_check,
        "no key check of the accounts' own beside the vault's"
    );
    let (index, sealed): (Vec<u8>, Vec<u8>) = conn
        .query_row("SELECT name_index, sealed_name FROM accounts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(index, hmac256(&index_key, b"bob smith"));
    assert_eq!(sealed.len(), 12 + 1 + 16 + 16);
    let (nonce, rest) = sealed.split_at(12);
    let (ct, tag) = rest.split_at(rest.len() - 16);
    let plain = openssl::symm::decrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        &seal_key,
        Some(nonce),
        &index,
        ct,
        tag,
    )
    .unwrap();
    let mut padded = vec![9u8];
    padded.extend_from_slice(b"Bob Smith");
    padded.resize(17, 0);
    assert_eq!(plain, padded);
}

#[bounded]
#[tokio::test]
async fn the_configured_minimum_rules_registration_and_password_changes() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = open(&dir.path().join("db")).with_min_password_len(12);
    assert_eq!(accounts.min_password_len(), 12);
    // The store itself keeps the rule (as `espmail account add` uses it).
    assert!(matches!(
        accounts.add("Ann", &pw("elevenchars"), SystemTime::now()),
        Err(AccountError::PasswordTooShort { min: 12 })
    ));
    accounts
        .add("Ann", &pw("twelve chars"), SystemTime::now())
        .unwrap();
    let h = AccountsHandle::new(accounts, 2, ThrottleLimits::default()).unwrap();
    assert_eq!(h.min_password_len(), 12);
    let peer: IpAddr = "192.0.2.7".parse().unwrap();
    let (t0, now) = (Instant::now(), SystemTime::now());
    // 8 characters would do by default; not with a minimum of 12.
    assert!(matches!(
        h.login("Newbie", pw("eight ch"), peer, true, t0, now).await,
        Err(AuthError::WrongNameOrPassword)
    ));
    assert_eq!(h.lookup("newbie").await.unwrap(), None);
    assert!(matches!(
        h.login("Newbie", pw("twelve chars"), peer, true, t0, now)
            .await,
        Ok(LoginOutcome::Registered(_))
    ));
    assert!(matches!(
        h.set_password("Newbie", pw("short pass")).await,
        Err(AccountError::PasswordTooShort { min: 12 })
    ));
    assert!(matches!(
        h.add("Cy", pw(&"x".repeat(257)), now).await,
        Err(AccountError::PasswordTooLong { max: 256 })
    ));

    // A lower minimum than the default is honoured too.
    let dir = tempfile::tempdir().unwrap();
    let h = AccountsHandle::new(
        open(&dir.path().join("db")).with_min_password_len(4),
        2,
        ThrottleLimits::default(),
    )
    .unwrap();
    assert!(matches!(
        h.login("Dee", pw("four"), peer, true, t0, now).await,
        Ok(LoginOutcome::Registered(_))
    ));
    // The default stays 8.
    assert_eq!(open(&dir.path().join("other")).min_password_len(), 8);
}
