//! The keyfile: the setup-time half of every message key, kept outside the database.
//!
//! A stolen database without this file reveals nothing said and nobody's name (DESIGN.md,
//! promise 2), so the file is created once by the operator (`espmail init`, or the first
//! `serve` with a loud warning), backed up *apart from* the database, and never printed.
//!
//! # Format (version 1)
//!
//! A small text file, one item per line; `#` starts a comment line, blank lines are ignored:
//!
//! ```text
//! espmail-keyfile 1
//! active 2
//! key 1 <64 hex digits: a 32-byte secret>
//! key 2 <64 hex digits>
//! ```
//!
//! - `espmail-keyfile 1`: the format version; always the first item.
//! - `key ID HEX`: one secret with its key id (1 to 2^31); more than one after a rotation,
//!   until the old key is retired.
//! - `active ID`: the key that encrypts new mail; it must be one of the keys.
//!
//! Loading refuses, with an error that says what to do: a missing or truncated file, a line
//! it does not understand, a secret that is not 32 bytes, permissions that let the group or
//! others read it, and the published example key (`keyfile.example` at the top level).
//!
//! May touch: the keyfile itself (read, atomic write), openssl's random generator.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The first item of every keyfile of this format.
pub const MAGIC: &str = "espmail-keyfile";
/// The keyfile format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes in one secret.
pub const SECRET_LEN: usize = 32;

/// The secret in the shipped `keyfile.example`: published, so never usable. Loading refuses
/// any keyfile that holds it, under any key id.
pub const EXAMPLE_SECRET: [u8; SECRET_LEN] = *b"EXAMPLE ONLY - espmail refuses!!";

/// Identifies one key of the keyfile; stored in each mail row and bound into its AAD.
pub type KeyId = u32;

/// Largest key id: keeps ids positive in SQLite and in the 4 bytes of the AAD.
pub const MAX_KEY_ID: KeyId = i32::MAX as KeyId;

/// 32 secret bytes. Zeroed when dropped; `Debug` shows `<secret>` and nothing else; no
/// `Display`, no `Clone` (copies are made only on purpose, with [`Secret::duplicate`]).
#[derive(Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// Wraps secret bytes (taking ownership; the caller's copy is the caller's business).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Secret {
        Secret(bytes)
    }

    /// A fresh secret from openssl's CSPRNG.
    pub fn random() -> Result<Secret, KeyfileError> {
        let mut bytes = [0u8; SECRET_LEN];
        openssl::rand::rand_bytes(&mut bytes).map_err(|_| KeyfileError::Random)?;
        Ok(Secret(bytes))
    }

    /// The bytes, for key derivation only.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// An explicit copy (both copies zero themselves when dropped).
    pub fn duplicate(&self) -> Secret {
        Secret(self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Why a keyfile could not be created, read or written. Every message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyfileError {
    /// No file at the path.
    #[error(
        "keyfile {path} does not exist: create one with `espmail init` (first setup only), \
         or restore it from the backup kept apart from the database"
    )]
    Missing {
        /// The path tried.
        path: PathBuf,
    },
    /// A file exists where a new keyfile was to be created.
    #[error(
        "keyfile {path} already exists: espmail will not overwrite a key (mail encrypted under \
         it would be lost); move it away yourself if you really mean to start over"
    )]
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// The group or others may read or write the file.
    #[error(
        "keyfile {path} has mode {mode:04o}, readable by other users: run `chmod 600 {path}` \
         (and consider the key exposed if others could read it)"
    )]
    Permissions {
        /// The path.
        path: PathBuf,
        /// The permission bits found.
        mode: u32,
    },
    /// The file is not a keyfile of this format, or is cut short.
    #[error(
        "keyfile {path} is damaged or truncated (line {line}: {reason}): restore it from \
         your backup"
    )]
    Malformed {
        /// The path.
        path: PathBuf,
        /// 1-based line number (0: the file as a whole).
        line: usize,
        /// What was wrong, without any key bytes.
        reason: &'static str,
    },
    /// The file holds the published example key.
    #[error(
        "keyfile {path} holds the published example key, which protects nothing: create a \
         real one with `espmail init`"
    )]
    ExampleKey {
        /// The path.
        path: PathBuf,
    },
    /// A key id that the keyfile does not hold.
    #[error("key {key_id} is not in the keyfile")]
    UnknownKey {
        /// The id asked for.
        key_id: KeyId,
    },
    /// The active key cannot be retired.
    #[error("key {key_id} is the active key and cannot be retired")]
    RetireActive {
        /// The id.
        key_id: KeyId,
    },
    /// No more key ids.
    #[error("the keyfile has used every key id")]
    KeyIdsExhausted,
    /// openssl's random generator failed.
    #[error("the system random generator failed; no key was made")]
    Random,
    /// Reading or writing failed.
    #[error("keyfile {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
}

/// The keys of one keyfile: one active key and any older ones kept until retired.
#[derive(Debug)]
pub struct Keyfile {
    active: KeyId,
    keys: BTreeMap<KeyId, Secret>,
}

impl Keyfile {
    /// A keyfile with one fresh random key, id 1, active.
    pub fn generate() -> Result<Keyfile, KeyfileError> {
        let mut keys = BTreeMap::new();
        keys.insert(1, Secret::random()?);
        Ok(Keyfile { active: 1, keys })
    }

    /// A keyfile from given keys (tests, tools). `active` must be among them.
    pub fn from_keys(active: KeyId, keys: Vec<(KeyId, Secret)>) -> Result<Keyfile, KeyfileError> {
        let keys: BTreeMap<KeyId, Secret> = keys.into_iter().collect();
        if !keys.contains_key(&active) {
            return Err(KeyfileError::UnknownKey { key_id: active });
        }
        Ok(Keyfile { active, keys })
    }

    /// The id of the key that encrypts new mail.
    pub fn active_id(&self) -> KeyId {
        self.active
    }

    /// The key that encrypts new mail.
    pub fn active(&self) -> (KeyId, &Secret) {
        // `active` is checked to be a key by every constructor; an empty map cannot happen.
        match self.keys.get(&self.active) {
            Some(s) => (self.active, s),
            None => unreachable_active(),
        }
    }

    /// One key by id.
    pub fn get(&self, key_id: KeyId) -> Option<&Secret> {
        self.keys.get(&key_id)
    }

    /// Every key, lowest id first.
    pub fn keys(&self) -> impl Iterator<Item = (KeyId, &Secret)> {
        self.keys.iter().map(|(id, s)| (*id, s))
    }

    /// Adds a fresh random key and makes it active (first step of a rotation). Returns
    /// its id.
    pub fn add_active_key(&mut self) -> Result<KeyId, KeyfileError> {
        let last = self.keys.keys().next_back().copied().unwrap_or(0);
        let id = last
            .checked_add(1)
            .filter(|id| *id <= MAX_KEY_ID)
            .ok_or(KeyfileError::KeyIdsExhausted)?;
        self.keys.insert(id, Secret::random()?);
        self.active = id;
        Ok(id)
    }

    /// Removes an old key (last step of a rotation; the store checks first that no mail
    /// needs it).
    pub fn remove_key(&mut self, key_id: KeyId) -> Result<(), KeyfileError> {
        if key_id == self.active {
            return Err(KeyfileError::RetireActive { key_id });
        }
        self.keys
            .remove(&key_id)
            .map(drop)
            .ok_or(KeyfileError::UnknownKey { key_id })
    }

    /// The file's text. Holds the secrets in hex: zeroed when dropped.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(256));
        out.push_str("# espmail keyfile: the setup-time key part of every ESP Mail.\n");
        out.push_str("# Keep it secret (mode 0600) and back it up APART from the database:\n");
        out.push_str("# without it the stored mail cannot be read by anyone, you included.\n");
        out.push_str(&format!("{MAGIC} {FORMAT_VERSION}\n"));
        out.push_str(&format!("active {}\n", self.active));
        for (id, secret) in &self.keys {
            out.push_str(&format!("key {id} "));
            for b in secret.expose() {
                out.push_str(&format!("{b:02x}"));
            }
            out.push('\n');
        }
        out
    }

    /// Parses keyfile text. `path` only names the file in errors. Refuses the example key.
    pub fn parse(text: &str, path: &Path) -> Result<Keyfile, KeyfileError> {
        let bad = |line: usize, reason: &'static str| KeyfileError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut seen_magic = false;
        let mut active = None;
        let mut keys = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            let word = words.next().unwrap_or_default();
            if !seen_magic {
                if word != MAGIC {
                    return Err(bad(line_no, "not an espmail keyfile"));
                }
                match words.next().map(str::parse::<u32>) {
                    Some(Ok(FORMAT_VERSION)) => {}
                    Some(Ok(_)) => return Err(bad(line_no, "unsupported keyfile version")),
                    _ => return Err(bad(line_no, "missing keyfile version")),
                }
                seen_magic = true;
            } else if word == "active" {
                let id = parse_id(words.next()).ok_or_else(|| bad(line_no, "bad key id"))?;
                if active.replace(id).is_some() {
                    return Err(bad(line_no, "more than one active line"));
                }
            } else if word == "key" {
                let id = parse_id(words.next()).ok_or_else(|| bad(line_no, "bad key id"))?;
                let hex = words
                    .next()
                    .ok_or_else(|| bad(line_no, "key without secret"))?;
                let secret = parse_secret(hex)
                    .ok_or_else(|| bad(line_no, "the secret is not 64 hex digits (32 bytes)"))?;
                if keys.insert(id, secret).is_some() {
                    return Err(bad(line_no, "a key id appears twice"));
                }
            } else {
                return Err(bad(line_no, "unknown line"));
            }
            if words.next().is_some() {
                return Err(bad(line_no, "extra words at the end of the line"));
            }
        }
        if !seen_magic {
            return Err(bad(0, "the file is empty"));
        }
        let active = active.ok_or_else(|| bad(0, "no active line"))?;
        if keys.is_empty() {
            return Err(bad(0, "no key line"));
        }
        if !keys.contains_key(&active) {
            return Err(bad(0, "the active key is not in the file"));
        }
        if keys.values().any(|s: &Secret| s.0 == EXAMPLE_SECRET) {
            return Err(KeyfileError::ExampleKey {
                path: path.to_path_buf(),
            });
        }
        Ok(Keyfile { active, keys })
    }
}

fn unreachable_active() -> ! {
    // Every constructor checks that the active key is present and `remove_key` refuses it.
    #[allow(clippy::panic)]
    {
        panic!("keyfile invariant broken: the active key is missing")
    }
}

fn parse_id(word: Option<&str>) -> Option<KeyId> {
    let id: KeyId = word?.parse().ok()?;
    (1..=MAX_KEY_ID).contains(&id).then_some(id)
}

fn parse_secret(hex: &str) -> Option<Secret> {
    let bytes = hex.as_bytes();
    if bytes.len() != SECRET_LEN * 2 {
        return None;
    }
    let mut out = Secret([0u8; SECRET_LEN]);
    for (o, pair) in out.0.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Reads and checks the keyfile at `path`: present, mode 0600 or stricter, well formed,
/// not the example key.
pub fn load(path: &Path) -> Result<Keyfile, KeyfileError> {
    let io_err = |source: io::Error| KeyfileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyfileError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyfileError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = Zeroizing::new(fs::read(path).map_err(io_err)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyfileError::Malformed {
        path: path.to_path_buf(),
        line: 0,
        reason: "not text",
    })?;
    Keyfile::parse(text, path)
}

/// Creates a new keyfile with one fresh key at `path` (mode 0600, written atomically).
/// Refuses to overwrite an existing file. The caller (`espmail init`, first `serve`) tells
/// the operator to back it up apart from the database.
pub fn create(path: &Path) -> Result<Keyfile, KeyfileError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(KeyfileError::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    let keyfile = Keyfile::generate()?;
    write_atomic(path, &keyfile, false)?;
    Ok(keyfile)
}

/// Loads the keyfile, or creates it when there is none. The flag says whether it was
/// created (first `serve`: the caller must warn loudly to back it up).
pub fn load_or_create(path: &Path) -> Result<(Keyfile, bool), KeyfileError> {
    match load(path) {
        Ok(k) => Ok((k, false)),
        Err(KeyfileError::Missing { .. }) => create(path).map(|k| (k, true)),
        Err(e) => Err(e),
    }
}

/// Replaces the keyfile at `path` with `keyfile` atomically (rotation): temp file in the same
/// directory with mode 0600, fsync, rename over, fsync the directory. A crash leaves either
/// the old file or the new one, never a mix.
pub fn save(path: &Path, keyfile: &Keyfile) -> Result<(), KeyfileError> {
    write_atomic(path, keyfile, true)
}

fn write_atomic(path: &Path, keyfile: &Keyfile, replace: bool) -> Result<(), KeyfileError> {
    let io_err = |source: io::Error| KeyfileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut nonce = [0u8; 8];
    openssl::rand::rand_bytes(&mut nonce).map_err(|_| KeyfileError::Random)?;
    let tag: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(
        ".{}.{tag}.tmp",
        name.unwrap_or_else(|| "keyfile".into())
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(keyfile.to_text().as_bytes())?;
        file.sync_all()?;
        drop(file);
        if replace {
            fs::rename(&tmp, path)?;
        } else {
            // hard_link fails if the target exists: no race with another `init`.
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    match result {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyfileError::AlreadyExists {
            path: path.to_path_buf(),
        }),
        other => other.map_err(io_err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(active: KeyId, keys: &[(KeyId, &str)]) -> String {
        let mut t = format!("{MAGIC} 1\nactive {active}\n");
        for (id, hex) in keys {
            t.push_str(&format!("key {id} {hex}\n"));
        }
        t
    }

    const HEX_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const HEX_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn parses_what_it_writes() {
        let mut k = Keyfile::generate().unwrap();
        k.add_active_key().unwrap();
        let text = k.to_text();
        let back = Keyfile::parse(&text, Path::new("k")).unwrap();
        assert_eq!(back.active_id(), 2);
        assert_eq!(back.keys().count(), 2);
        for (id, s) in k.keys() {
            assert_eq!(back.get(id).unwrap().expose(), s.expose());
        }
        assert_ne!(k.get(1).unwrap().expose(), k.get(2).unwrap().expose());
    }

    #[test]
    fn refuses_malformed_text() {
        let p = Path::new("k");
        let cases = [
            ("", 0),
            ("# only a comment\n", 0),
            ("hello 1\n", 1),
            (&format!("{MAGIC} 2\nactive 1\nkey 1 {HEX_A}\n"), 1),
            (&format!("{MAGIC}\n"), 1),
            (&format!("{MAGIC} 1\nkey 1 {HEX_A}\n"), 0),
            (&format!("{MAGIC} 1\nactive 2\nkey 1 {HEX_A}\n"), 0),
            (&format!("{MAGIC} 1\nactive 1\n"), 0),
            (&format!("{MAGIC} 1\nactive 1\nkey 1 {}\n", &HEX_A[..62]), 3),
            (&format!("{MAGIC} 1\nactive 1\nkey 1 {HEX_A}00\n"), 3),
            (
                &format!("{MAGIC} 1\nactive 1\nkey 1 {}zz\n", &HEX_A[..62]),
                3,
            ),
            (
                &format!("{MAGIC} 1\nactive 1\nkey 1 {HEX_A}\nkey 1 {HEX_B}\n"),
                4,
            ),
            (&format!("{MAGIC} 1\nactive 0\nkey 0 {HEX_A}\n"), 2),
            (&format!("{MAGIC} 1\nactive 1\nkey 1 {HEX_A} extra\n"), 3),
            (&format!("{MAGIC} 1\nactive 1\nsecret 1 {HEX_A}\n"), 3),
        ];
        for (text, want_line) in cases {
            match Keyfile::parse(text, p) {
                Err(KeyfileError::Malformed { line, .. }) => assert_eq!(line, want_line, "{text}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        let ok = text_of(2, &[(1, HEX_A), (2, HEX_B)]);
        assert_eq!(Keyfile::parse(&ok, p).unwrap().active_id(), 2);
    }

    #[test]
    fn truncated_file_is_refused() {
        let k = Keyfile::generate().unwrap();
        let text = k.to_text();
        // Cut anywhere inside the last line (the secret): always refused, never a short key.
        let start = text.rfind("key ").unwrap();
        for cut in start..text.len() - 1 {
            assert!(
                Keyfile::parse(&text[..cut], Path::new("k")).is_err(),
                "cut at {cut} accepted"
            );
        }
    }

    #[test]
    fn example_key_is_refused_under_any_id() {
        let hex: String = EXAMPLE_SECRET.iter().map(|b| format!("{b:02x}")).collect();
        let t = text_of(1, &[(1, HEX_A), (7, &hex)]);
        assert!(matches!(
            Keyfile::parse(&t, Path::new("k")),
            Err(KeyfileError::ExampleKey { .. })
        ));
    }

    #[test]
    fn shipped_example_is_well_formed_but_refused() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("keyfile.example");
        let text = fs::read_to_string(&path).unwrap();
        match Keyfile::parse(&text, &path) {
            Err(e @ KeyfileError::ExampleKey { .. }) => {
                assert!(e.to_string().contains("espmail init"), "{e}")
            }
            other => panic!("keyfile.example gave {other:?}"),
        }
    }

    #[test]
    fn create_writes_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("espmail.key");
        let made = create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load(&path).unwrap();
        assert_eq!(
            loaded.active().1.expose(),
            made.active().1.expose(),
            "load must give back the created key"
        );
        assert!(matches!(
            create(&path),
            Err(KeyfileError::AlreadyExists { .. })
        ));
        assert_eq!(
            load(&path).unwrap().active().1.expose(),
            made.active().1.expose()
        );
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn load_refuses_missing_and_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let e = load(&path).unwrap_err();
        assert!(matches!(e, KeyfileError::Missing { .. }));
        assert!(e.to_string().contains("espmail init"));
        create(&path).unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            match load(&path) {
                Err(e @ KeyfileError::Permissions { .. }) => {
                    assert!(e.to_string().contains("chmod 600"), "{e}")
                }
                other => panic!("mode {mode:o} gave {other:?}"),
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load(&path).is_ok());
    }

    #[test]
    fn load_or_create_creates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let (a, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (b, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.active().1.expose(), b.active().1.expose());
    }

    #[test]
    fn save_replaces_atomically_and_rotation_steps_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let mut k = create(&path).unwrap();
        let new_id = k.add_active_key().unwrap();
        assert_eq!(new_id, 2);
        assert!(matches!(
            k.remove_key(2),
            Err(KeyfileError::RetireActive { .. })
        ));
        save(&path, &k).unwrap();
        let mut back = load(&path).unwrap();
        assert_eq!(back.active_id(), 2);
        back.remove_key(1).unwrap();
        assert!(matches!(
            back.remove_key(1),
            Err(KeyfileError::UnknownKey { .. })
        ));
        save(&path, &back).unwrap();
        let again = load(&path).unwrap();
        assert_eq!(again.keys().map(|(id, _)| id).collect::<Vec<_>>(), vec![2]);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn secret_debug_hides_bytes() {
        let k = Keyfile::generate().unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains("<secret>"));
        let hex: String = k
            .active()
            .1
            .expose()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!shown.contains(&hex));
        assert!(!shown.contains(&format!("{:?}", k.active().1.expose())));
    }
}
