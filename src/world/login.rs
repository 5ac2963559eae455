//! What stays in the world of the accounts: how a login line is believed and the in-world
//! password dialogue (ESPMAIL.md §1, DESIGN.md promise 6), as pure decisions.
//!
//! - [`decide`]: the login line's name and password (if any) under the [`AuthMode`] give a
//!   [`Decision`]: refuse, trust a front end, check the password, or ask in-world.
//! - [`PasswordDialogue`]: the in-world prompt as a state machine: each reply in, one
//!   [`DialogueStep`] out (ask again, check, register, done, refuse).
//! - The words the player sees: the prompts, and [`WRONG_NAME_OR_PASSWORD`], the one
//!   answer to every failed login.
//!
//! The checks themselves (scrypt, the account table, the failed-login slowdown) belong to
//! the vault ([`crate::espmail::accounts`]); the session runs them when a step says so.
//! The mapping from the config's `[auth]` to an [`AuthMode`] is the server's
//! (`server::auth_mode`).
//!
//! May touch: nothing outside memory: no SQLite, no scrypt, no config, no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use crate::avatar::{
    check_new_password, clamp_min_password_len, AvatarName, NameError, Password, PasswordError,
    MIN_PASSWORD_LEN,
};

/// The one answer for every failed login (ESPMAIL.md §1): unknown names, wrong passwords,
/// untrusted peers and throttled attempts all read the same.
pub const WRONG_NAME_OR_PASSWORD: &str = "Wrong name or password.";
/// The answer to a throttled attempt: "Too many tries; wait N s." (the same words whatever
/// the name, so they tell nothing about it; unlike "Wrong name or password." they do not
/// send the player hunting for a typo).
pub fn too_many_tries(wait_secs: u64) -> String {
    format!("Too many tries; wait {wait_secs} s.")
}

/// First in-world prompt for an existing avatar.
pub const PROMPT_PASSWORD: &str = "Password: ";
/// Prompt after a wrong in-world password.
pub const PROMPT_WRONG_PASSWORD: &str = "Wrong password. Password: ";
/// First in-world prompt for a name that will be registered.
pub const PROMPT_NEW_PASSWORD: &str = "New avatar. Choose a password: ";
/// Second prompt for a new password.
pub const PROMPT_AGAIN: &str = "Again: ";
/// Our words for a new password under the default [`MIN_PASSWORD_LEN`] (≤ 39 bytes);
/// [`too_short_prompt`] gives the words for any configured minimum.
pub const PROMPT_TOO_SHORT: &str = "Too short, use 8 or more: ";
/// Our words for a new password over
/// [`MAX_PASSWORD_LEN`](crate::avatar::MAX_PASSWORD_LEN) (≤ 39 bytes).
pub const PROMPT_TOO_LONG: &str = "Too long, use at most 256: ";
/// Our words when the two new passwords differ (≤ 39 bytes).
pub const PROMPT_MISMATCH: &str = "Not the same. Choose a password: ";

/// The in-world words for a new password shorter than `min_len` (clamped as in
/// [`check_new_password`]): "Too short, use N or more: ", at most 28 bytes. The dialogue's
/// steps carry `&'static str`, so each distinct minimum's text is made once and kept for
/// the life of the process; there are at most
/// [`MAX_PASSWORD_LEN`](crate::avatar::MAX_PASSWORD_LEN) of them, and the minimum comes
/// from the config, never from the network.
pub fn too_short_prompt(min_len: usize) -> &'static str {
    static MADE: OnceLock<Mutex<HashMap<usize, &'static str>>> = OnceLock::new();
    let min = clamp_min_password_len(min_len);
    if min == MIN_PASSWORD_LEN {
        return PROMPT_TOO_SHORT;
    }
    // A panic elsewhere cannot leave the map half-written: each entry is one insert.
    let mut made = MADE
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    made.entry(min)
        .or_insert_with(|| Box::leak(format!("Too short, use {min} or more: ").into_boxed_str()))
}

/// `[auth] mode` (ESPMAIL.md §1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// The login line (or the in-world prompt) must carry the avatar's password.
    Password {
        /// Unknown name + password of the configured minimum length (default 8) or more
        /// creates the avatar.
        auto_register: bool,
    },
    /// Only these peers, proving themselves with the secret, are believed about the
    /// name; every other connection is refused.
    Trusted {
        /// The trusted front ends.
        peers: Vec<IpAddr>,
        /// What they send as `"front_end_secret"` in each login line.
        secret: Password,
        /// Whether they may log in avatars that have a password.
        password_avatars: bool,
    },
}

impl Default for AuthMode {
    fn default() -> AuthMode {
        AuthMode::Password {
            auto_register: true,
        }
    }
}

/// Why a login was refused before any password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefuseReason {
    /// The name breaks the name rules.
    BadName(NameError),
    /// Trusted mode and the peer is not a trusted front end.
    UntrustedPeer,
    /// Trusted mode, from a trusted front end's address, without the right secret: some
    /// other process on that host.
    NoFrontEndSecret,
}

/// What to do with a login line (the pure first step of authentication).
#[derive(Debug)]
pub enum Decision {
    /// Answer IM_ALIVE with status 0 + [`WRONG_NAME_OR_PASSWORD`] and close.
    Refuse(RefuseReason),
    /// Trusted front end: bind the connection to this name
    /// (the vault's `AccountsHandle::ensure_trusted`).
    Trust(AvatarName),
    /// Run the vault's `AccountsHandle::login` with this password.
    CheckPassword(AvatarName, Password),
    /// No password in the login line: enter hidden and run the [`PasswordDialogue`] after
    /// HERE_I_AM (look the name up first: `known` picks the first prompt).
    AskInWorld(AvatarName),
}

/// Decides how a login line is authenticated. `password` is the login line's field, if
/// it had one (an empty field counts as none: the C64 launcher sends only the name);
/// `front_end_secret` is its `"front_end_secret"` (trusted mode only).
pub fn decide(
    mode: &AuthMode,
    peer: IpAddr,
    name: &str,
    password: Option<Password>,
    front_end_secret: Option<Password>,
) -> Decision {
    let name = match AvatarName::parse(name) {
        Ok(n) => n,
        Err(e) => return Decision::Refuse(RefuseReason::BadName(e)),
    };
    match mode {
        AuthMode::Trusted { peers, secret, .. } => {
            if !peers.contains(&peer) {
                Decision::Refuse(RefuseReason::UntrustedPeer)
            } else if !secret.expose().is_empty()
                && front_end_secret.is_some_and(|s| s.same_as(secret))
            {
                Decision::Trust(name)
            } else {
                Decision::Refuse(RefuseReason::NoFrontEndSecret)
            }
        }
        AuthMode::Password { .. } => match password {
            Some(p) if !p.expose().is_empty() => Decision::CheckPassword(name, p),
            _ => Decision::AskInWorld(name),
        },
    }
}

/// The next thing the session does in the in-world password dialogue.
#[derive(Debug)]
pub enum DialogueStep {
    /// Send PROMPT_USER with this text and wait for the reply.
    Ask(&'static str),
    /// Check this password with the vault's `AccountsHandle::login` (auto_register off),
    /// then call [`PasswordDialogue::checked`].
    Check(Password),
    /// Create the avatar with this password (the vault's `AccountsHandle::add`), then
    /// call [`PasswordDialogue::checked`] with whether it worked.
    Register(Password),
    /// Authenticated: make the avatar visible and deliver its mail.
    Done,
    /// Say [`WRONG_NAME_OR_PASSWORD`] and close the connection.
    Refuse,
    /// Nothing was expected now (a reply while a check runs): do nothing.
    Ignore,
}

#[derive(Debug)]
enum DialogueState {
    /// Waiting for a password of an existing avatar (or of an unknown name when
    /// registration is off: asked the same way, so the name's existence is not shown).
    Password,
    Checking,
    Choose,
    Again(Password),
    Registering,
    Finished,
}

/// The in-world password prompt for clients whose login line had no password (ESPMAIL.md
/// §1), as a state machine the session drives: each reply in, one [`DialogueStep`] out.
#[derive(Debug)]
pub struct PasswordDialogue {
    state: DialogueState,
    failures: u32,
    /// Shortest new password accepted.
    min_len: usize,
    /// The words for a too short new password, built from `min_len`.
    too_short: &'static str,
}

/// Wrong answers before the connection is closed.
pub const MAX_PASSWORD_TRIES: u32 = 3;
/// New-password rounds (too short or mismatched) before the connection is closed.
const MAX_CHOOSE_TRIES: u32 = 5;

impl PasswordDialogue {
    /// Starts the dialogue with the default minimum, [`MIN_PASSWORD_LEN`]. `known`: the
    /// name has an account. An unknown name is asked to choose a password only when
    /// `auto_register` is on.
    pub fn start(known: bool, auto_register: bool) -> (PasswordDialogue, DialogueStep) {
        PasswordDialogue::start_with_min_len(known, auto_register, MIN_PASSWORD_LEN)
    }

    /// [`PasswordDialogue::start`] with the configured minimum for a new password
    /// (the vault's `AccountsHandle::min_password_len`); the too-short prompt names it.
    pub fn start_with_min_len(
        known: bool,
        auto_register: bool,
        min_len: usize,
    ) -> (PasswordDialogue, DialogueStep) {
        let (state, first) = if !known && auto_register {
            (DialogueState::Choose, PROMPT_NEW_PASSWORD)
        } else {
            (DialogueState::Password, PROMPT_PASSWORD)
        };
        let d = PasswordDialogue {
            state,
            failures: 0,
            min_len: clamp_min_password_len(min_len),
            too_short: too_short_prompt(min_len),
        };
        (d, DialogueStep::Ask(first))
    }

    /// Whether a prompt reply is expected now (otherwise replies are ignored).
    pub fn awaiting_reply(&self) -> bool {
        matches!(
            self.state,
            DialogueState::Password | DialogueState::Choose | DialogueState::Again(_)
        )
    }

    /// The player's answer to the last prompt (stripped of the prompt echo by
    /// [`super::esp::strip_prompt_echo`], not trimmed: see [`Password`]).
    pub fn answer(&mut self, answer: Password) -> DialogueStep {
        match std::mem::replace(&mut self.state, DialogueState::Finished) {
            DialogueState::Password => {
                self.state = DialogueState::Checking;
                DialogueStep::Check(answer)
            }
            DialogueState::Choose => match check_new_password(&answer, self.min_len) {
                Ok(()) => {
                    self.state = DialogueState::Again(answer);
                    DialogueStep::Ask(PROMPT_AGAIN)
                }
                Err(PasswordError::TooLong { .. }) => self.choose_failed(PROMPT_TOO_LONG),
                Err(_) => self.choose_failed(self.too_short),
            },
            DialogueState::Again(first) => {
                if first.same_as(&answer) {
                    self.state = DialogueState::Registering;
                    DialogueStep::Register(answer)
                } else {
                    self.choose_failed(PROMPT_MISMATCH)
                }
            }
            // A reply nobody asked for: ignore it, keep the state.
            other => {
                self.state = other;
                DialogueStep::Ignore
            }
        }
    }

    fn choose_failed(&mut self, prompt: &'static str) -> DialogueStep {
        self.failures += 1;
        if self.failures >= MAX_CHOOSE_TRIES {
            self.state = DialogueState::Finished;
            DialogueStep::Refuse
        } else {
            self.state = DialogueState::Choose;
            DialogueStep::Ask(prompt)
        }
    }

    /// The result of the last [`DialogueStep::Check`] or [`DialogueStep::Register`].
    pub fn checked(&mut self, ok: bool) -> DialogueStep {
        match std::mem::replace(&mut self.state, DialogueState::Finished) {
            DialogueState::Checking | DialogueState::Registering if ok => DialogueStep::Done,
            DialogueState::Checking => {
                self.failures += 1;
                if self.failures >= MAX_PASSWORD_TRIES {
                    DialogueStep::Refuse
                } else {
                    self.state = DialogueState::Password;
                    DialogueStep::Ask(PROMPT_WRONG_PASSWORD)
                }
            }
            // Registration failed (the name was taken meanwhile, or the store failed).
            DialogueState::Registering => DialogueStep::Refuse,
            other => {
                self.state = other;
                DialogueStep::Ignore
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avatar::test_support::{new_password_cases, pw};
    use crate::avatar::MAX_PASSWORD_LEN;

    #[test]
    fn a_bare_terminator_is_no_password() {
        // A bare terminator counts as no password at all in the login line.
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(matches!(
            decide(&AuthMode::default(), peer, "Bob", Some(pw("\r\n")), None),
            Decision::AskInWorld(_)
        ));
    }

    #[test]
    fn the_dialogue_keeps_the_one_new_password_rule() {
        for (p, ok) in new_password_cases() {
            let (mut d, _) = PasswordDialogue::start(false, true);
            let step = d.answer(pw(&p));
            assert_eq!(matches!(step, DialogueStep::Ask(PROMPT_AGAIN)), ok, "{p}");
        }
    }

    #[test]
    fn the_configured_minimum_is_the_rule_and_the_prompt() {
        // A lower and a higher minimum than the default both count, and the prompt
        // names the number in use.
        for (min, short, long_enough) in [(4, "abc", "abcd"), (12, "12345678901", "123456789012")] {
            let (mut d, _) = PasswordDialogue::start_with_min_len(false, true, min);
            let want = format!("Too short, use {min} or more: ");
            assert!(
                matches!(d.answer(pw(short)), DialogueStep::Ask(t) if t == want),
                "{min}"
            );
            assert!(matches!(
                d.answer(pw(long_enough)),
                DialogueStep::Ask(PROMPT_AGAIN)
            ));
        }
        assert_eq!(too_short_prompt(8), PROMPT_TOO_SHORT);
        assert_eq!(too_short_prompt(8), "Too short, use 8 or more: ");
        // Made once per minimum: the same text comes back.
        assert!(std::ptr::eq(too_short_prompt(13), too_short_prompt(13)));
        // Out-of-range minimums are clamped, and every prompt fits the client.
        assert_eq!(too_short_prompt(0), "Too short, use 1 or more: ");
        assert_eq!(too_short_prompt(10_000), "Too short, use 256 or more: ");
        for min in [1, 9, 99, 256, usize::MAX] {
            let t = too_short_prompt(min);
            assert!(t.len() <= 39 && t.ends_with(' '), "{t}");
        }
    }

    #[test]
    fn a_too_long_password_is_never_called_too_short() {
        let long = "x".repeat(MAX_PASSWORD_LEN + 1);
        for min in [1, 8, 256, 1_000] {
            let (mut d, _) = PasswordDialogue::start_with_min_len(false, true, min);
            assert!(matches!(
                d.answer(pw(&long)),
                DialogueStep::Ask(PROMPT_TOO_LONG)
            ));
        }
        assert!(PROMPT_TOO_LONG.len() <= 39 && PROMPT_TOO_LONG.contains("256"));
    }

    #[test]
    fn decide_by_mode() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let front: IpAddr = "127.0.0.1".parse().unwrap();
        let pmode = AuthMode::default();
        assert!(matches!(
            decide(&pmode, peer, "Bob", Some(pw("secret123")), None),
            Decision::CheckPassword(n, p) if n.display() == "Bob" && p.expose() == b"secret123"
        ));
        assert!(matches!(
            decide(&pmode, peer, "randy", None, None),
            Decision::AskInWorld(n) if n.key() == "randy"
        ));
        assert!(matches!(
            decide(&pmode, peer, "randy", Some(pw("")), None),
            Decision::AskInWorld(_)
        ));
        assert!(matches!(
            decide(&pmode, peer, "bad!name", Some(pw("x")), None),
            Decision::Refuse(RefuseReason::BadName(NameError::BadCharacter))
        ));
        let tmode = AuthMode::Trusted {
            peers: vec![front],
            secret: pw("front-end-secret-1"),
            password_avatars: false,
        };
        assert!(matches!(
            decide(&tmode, front, "Bob", None, Some(pw("front-end-secret-1"))),
            Decision::Trust(n) if n.display() == "Bob"
        ));
        // Another process on the front end's host does not know the secret.
        for wrong in [None, Some(pw("")), Some(pw("front-end-secret-2"))] {
            assert!(matches!(
                decide(&tmode, front, "Bob", None, wrong),
                Decision::Refuse(RefuseReason::NoFrontEndSecret)
            ));
        }
        // The secret from anywhere else is worth nothing.
        assert!(matches!(
            decide(
                &tmode,
                peer,
                "Bob",
                Some(pw("whatever1")),
                Some(pw("front-end-secret-1"))
            ),
            Decision::Refuse(RefuseReason::UntrustedPeer)
        ));
    }

    #[test]
    fn dialogue_known_avatar_three_wrong_answers_close() {
        let (mut d, first) = PasswordDialogue::start(true, true);
        assert!(matches!(first, DialogueStep::Ask("Password: ")));
        assert!(d.awaiting_reply());
        for _ in 0..2 {
            assert!(
                matches!(d.answer(pw("nope")), DialogueStep::Check(p) if p.expose() == b"nope")
            );
            assert!(!d.awaiting_reply());
            // A reply while the check runs is ignored.
            assert!(matches!(d.answer(pw("x")), DialogueStep::Ignore));
            assert!(matches!(
                d.checked(false),
                DialogueStep::Ask("Wrong password. Password: ")
            ));
        }
        assert!(matches!(d.answer(pw("nope")), DialogueStep::Check(_)));
        assert!(matches!(d.checked(false), DialogueStep::Refuse));
        assert!(!d.awaiting_reply());
    }

    #[test]
    fn dialogue_known_avatar_right_answer() {
        let (mut d, _) = PasswordDialogue::start(true, false);
        assert!(matches!(d.answer(pw("bad")), DialogueStep::Check(_)));
        assert!(matches!(d.checked(false), DialogueStep::Ask(_)));
        assert!(matches!(d.answer(pw("good")), DialogueStep::Check(_)));
        assert!(matches!(d.checked(true), DialogueStep::Done));
    }

    #[test]
    fn dialogue_unknown_without_auto_register_looks_like_a_known_one() {
        let (_, first) = PasswordDialogue::start(false, false);
        assert!(matches!(first, DialogueStep::Ask(PROMPT_PASSWORD)));
    }

    #[test]
    fn dialogue_new_avatar() {
        let (mut d, first) = PasswordDialogue::start(false, true);
        assert!(matches!(
            first,
            DialogueStep::Ask("New avatar. Choose a password: ")
        ));
        assert!(matches!(
            d.answer(pw("short")),
            DialogueStep::Ask(PROMPT_TOO_SHORT)
        ));
        assert!(matches!(
            d.answer(pw("longenough")),
            DialogueStep::Ask("Again: ")
        ));
        assert!(matches!(
            d.answer(pw("longenougH")),
            DialogueStep::Ask(PROMPT_MISMATCH)
        ));
        assert!(matches!(
            d.answer(pw("longenough2")),
            DialogueStep::Ask("Again: ")
        ));
        assert!(
            matches!(d.answer(pw("longenough2")), DialogueStep::Register(p) if p.expose() == b"longenough2")
        );
        assert!(matches!(d.checked(true), DialogueStep::Done));
        for p in [
            PROMPT_TOO_SHORT,
            PROMPT_MISMATCH,
            PROMPT_NEW_PASSWORD,
            PROMPT_WRONG_PASSWORD,
        ] {
            assert!(p.len() <= 39 && p.ends_with(' '), "{p}");
        }
    }

    #[test]
    fn dialogue_new_avatar_gives_up_after_repeated_failures() {
        let (mut d, _) = PasswordDialogue::start(false, true);
        let mut last = DialogueStep::Ignore;
        for _ in 0..MAX_CHOOSE_TRIES {
            last = d.answer(pw("short"));
        }
        assert!(matches!(last, DialogueStep::Refuse));
        // Registration that fails (name taken meanwhile) refuses too.
        let (mut d, _) = PasswordDialogue::start(false, true);
        d.answer(pw("longenough"));
        d.answer(pw("longenough"));
        assert!(matches!(d.checked(false), DialogueStep::Refuse));
    }
}
