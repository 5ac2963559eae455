//! What the server's unit tests share: a full set of [`Deps`] in a temp dir, with cheap
//! password hashing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::{Deps, Settings};
use crate::espmail::accounts::{Accounts, AccountsHandle, ScryptParams};
use crate::espmail::crypto::Keyring;
use crate::espmail::{keyfile::Keyfile, Limits, MailHandle};
use crate::world::esp::MailRate;
use crate::world::login::AuthMode;
use crate::world::Registry;

/// The secret the unit tests' trusted front ends send (`"front_end_secret"`).
pub const FRONT_END_SECRET: &str = "unit-test-front-end-secret";

/// Trusted mode for these front ends, with [`FRONT_END_SECRET`].
pub fn trusted(peers: Vec<std::net::IpAddr>) -> AuthMode {
    AuthMode::Trusted {
        peers,
        secret: crate::avatar::Password::new(FRONT_END_SECRET.as_bytes().to_vec()),
        password_avatars: false,
    }
}

/// Everything a session needs, stored under `dir`, logins believed as `auth_mode` says.
pub fn deps(dir: &Path, auth_mode: AuthMode) -> Arc<Deps> {
    // Cheap hashing: these tests are about the session, not the KDF.
    let fast = ScryptParams {
        log_n: 8,
        r: 8,
        p: 1,
    };
    let keyfile = Keyfile::generate().unwrap();
    let keys = Keyring::new(&keyfile).unwrap();
    let accounts =
        Accounts::open_with(&dir.join("accounts.db"), &keys, &Limits::default(), fast).unwrap();
    let mail = MailHandle::with_keyfile(&dir.join("mail.db"), &keyfile, Limits::default()).unwrap();
    Arc::new(Deps {
        settings: Settings::default(),
        registry: Arc::new(Registry::new()),
        accounts: AccountsHandle::new(accounts, 1, Default::default()).expect("hashing thread"),
        auth_mode,
        mail,
        mail_rate: MailRate::default(),
        debug: None,
        connections: AtomicUsize::new(0),
        guards: super::Guards::default(),
    })
}
