//! The login phase of one connection (ESPMAIL.md §1): the login line, how it is believed,
//! and the in-world password dialogue for a login line without a password.
//!
//! - [`read_preamble`] reads the login line from the raw stream (WIRE.md 1.3.1), writing
//!   the `CONNECT` fallback when the client stays silent;
//! - [`authenticate`] turns it into an [`Auth`]: refused, bound to an avatar (a trusted
//!   front end, or the password in the line), or [`Asking`] in-world;
//! - [`Asking`] drives the world's [`PasswordDialogue`] from HERE_I_AM on, checking or
//!   registering passwords through the accounts handle, and tells the session what to do
//!   next as a [`Step`]. The session asks the prompts and owns their timer.
//!
//! Unknown names and wrong passwords end the same way, and passwords are never logged.
//!
//! May touch: the raw stream before the link starts (only in [`read_preamble`]) and the
//! accounts through `Deps`.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{sleep_opt, Deps, Peer};
use crate::avatar::{AvatarName, Password};
use crate::espmail::accounts::{AuthError, Avatar, Outcome, Reservation};
use crate::log_redact::Sensitive;
use crate::protocol::preamble::{Login, Preamble, PreambleError, Step as LineStep};
use crate::world::login::{self, AuthMode, Decision, DialogueStep, PasswordDialogue, RefuseReason};

/// Why the login line could not be read; either ends the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The login preamble was unusable.
    #[error("bad login preamble: {0}")]
    Preamble(#[from] PreambleError),
}

/// Why a login was refused: what the player is told (IM_ALIVE status 0) before the close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// [`login::WRONG_NAME_OR_PASSWORD`], for every unknown name, wrong password, untrusted
    /// peer or failure of the store: one answer that reveals nothing.
    WrongNameOrPassword,
    /// The login throttle: "Too many tries; wait N s." ([`login::too_many_tries`]).
    TooManyTries(u64),
}

impl Refusal {
    /// What the player is told.
    pub fn text(self) -> String {
        match self {
            Refusal::WrongNameOrPassword => login::WRONG_NAME_OR_PASSWORD.to_string(),
            Refusal::TooManyTries(secs) => login::too_many_tries(secs),
        }
    }

    /// The refusal an authentication error gets.
    fn of(e: &AuthError) -> Refusal {
        match e {
            AuthError::Throttled { retry_after_secs } => Refusal::TooManyTries(*retry_after_secs),
            _ => Refusal::WrongNameOrPassword,
        }
    }
}

/// How the connection is bound to an avatar (DESIGN.md promise 6).
pub enum Auth {
    /// Not authenticated: refused on IM_ALIVE and closed.
    Refused(Refusal),
    /// No password in the login line: hidden until the in-world dialogue succeeds.
    Asking(Asking),
    /// Authenticated: chat, ESP and mail.
    Yes(Avatar),
}

impl Auth {
    /// The avatar's name, once the login line named a legal one.
    pub fn name(&self) -> Option<&AvatarName> {
        match self {
            Auth::Yes(a) => Some(&a.name),
            Auth::Asking(asking) => Some(&asking.name),
            Auth::Refused(_) => None,
        }
    }
}

/// Reads the login preamble (WIRE.md 1.3.1), starting with `read_ahead` (bytes already
/// read from the stream), writing the `CONNECT` fallback after 2 s of silence. The real C64 may say nothing for minutes first, so only the generous login
/// timeout ends the wait. `None` when the client left, the time ran out or the server is
/// shutting down; otherwise the login and the bytes read after it (the link's first).
pub async fn read_preamble<S>(
    stream: &mut S,
    read_ahead: &[u8],
    login_timeout: std::time::Duration,
    shutdown: &CancellationToken,
) -> Result<Option<(Login, Bytes)>, LoginError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + login_timeout;
    let mut parser = Preamble::new(started);
    // What was read before (after a front end's PROXY header) comes first.
    if !read_ahead.is_empty() {
        if let LineStep::Done { login, leftover } = parser.feed(read_ahead, started)? {
            return Ok(Some((login, leftover)));
        }
    }
    let mut buf = [0u8; 512];
    loop {
        let connect_at = parser.next_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep_until(deadline) => {
                info!("no login line before the login timeout");
                return Ok(None);
            }
            _ = sleep_opt(connect_at) => {
                if let Some(bytes) = parser.poll(Instant::now()) {
                    stream.write_all(bytes).await?;
                }
            }
            n = stream.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Ok(None);
                }
                let input = buf.get(..n).unwrap_or_default();
                if let LineStep::Done { login, leftover } = parser.feed(input, Instant::now())? {
                    return Ok(Some((login, leftover)));
                }
            }
        }
    }
}

/// Whether a trusted front end may log in avatars that have a password.
fn trusts_password_avatars(mode: &AuthMode) -> bool {
    matches!(
        mode,
        AuthMode::Trusted {
            password_avatars: true,
            ..
        }
    )
}

/// Binds the connection to an avatar, or decides to ask in-world, or refuses
/// (ESPMAIL.md §1). Unknown names and wrong passwords end the same way.
///
/// Trusted mode believes the socket's own peer ([`Peer::socket`]); the login throttle
/// counts the player's address ([`Peer::addr`], a listed front end's PROXY header's).
pub async fn authenticate(deps: &Deps, peer: &Peer, login: Login) -> Auth {
    let Login {
        name,
        password,
        front_end_secret,
        ..
    } = login;
    let secret = |s: Sensitive<String>| Password::new(s.into_exposed().into_bytes());
    let password = password.map(secret);
    let front_end_secret = front_end_secret.map(secret);
    let decision = login::decide(
        &deps.auth_mode,
        peer.socket().ip(),
        &name,
        password,
        front_end_secret,
    );
    let peer = peer.addr;
    let accounts = &deps.accounts;
    match decision {
        Decision::Refuse(RefuseReason::NoFrontEndSecret) => {
            // Someone on a trusted host other than the front end, or a front end set up
            // without the secret: the operator needs to know either way.
            warn!(
                "trusted login refused: the login line from a trusted address did not carry \
                 the right front_end_secret ([auth] trusted_secret_file)"
            );
            Auth::Refused(Refusal::WrongNameOrPassword)
        }
        Decision::Refuse(reason) => {
            info!(?reason, "login refused");
            Auth::Refused(Refusal::WrongNameOrPassword)
        }
        Decision::Trust(name) => {
            match accounts
                .ensure_trusted(name.display(), SystemTime::now())
                .await
            {
                Ok((_, true)) if !trusts_password_avatars(&deps.auth_mode) => {
                    warn!(
                        "trusted login refused: this avatar has a password, and [auth] \
                         trusted_password_avatars is off (set it to let the front end log \
                         such avatars in)"
                    );
                    Auth::Refused(Refusal::WrongNameOrPassword)
                }
                Ok((avatar, _)) => Auth::Yes(avatar),
                Err(e) => {
                    warn!(error = %e, "trusted login could not be recorded");
                    Auth::Refused(Refusal::WrongNameOrPassword)
                }
            }
        }
        Decision::CheckPassword(name, password) => {
            let outcome = accounts
                .login(
                    name.display(),
                    password,
                    peer.ip(),
                    deps.auto_register(),
                    Instant::now(),
                    SystemTime::now(),
                )
                .await;
            match outcome {
                Ok(outcome) => Auth::Yes(outcome.avatar().clone()),
                Err(e) => {
                    info!(error = %e, "login refused");
                    Auth::Refused(Refusal::of(&e))
                }
            }
        }
        Decision::AskInWorld(name) => {
            // Which prompt comes first tells whether the name exists: the lookup is
            // throttled like a guess, and its reservation held until the dialogue ends.
            let lookup = accounts
                .lookup_for_prompt(name.display(), peer.ip(), Instant::now())
                .await;
            let (known, reservation) = match lookup {
                Ok(found) => found,
                Err(e) => {
                    if let AuthError::Store(e) = &e {
                        warn!(error = %e, "account lookup failed");
                    }
                    return Auth::Refused(Refusal::of(&e));
                }
            };
            Auth::Asking(Asking {
                name,
                known,
                dialogue: None,
                lookup: Some(reservation),
            })
        }
    }
}

/// What the session does next in the in-world password dialogue.
#[derive(Debug)]
pub enum Step {
    /// Ask this (PROMPT_USER); the session's prompt timer starts.
    Ask(&'static str),
    /// Authenticated as this avatar: make it visible and deliver its mail.
    Authenticated(Avatar),
    /// Say why (the refusal's text) and close.
    Refused(Refusal),
    /// Close without a word (the avatar vanished meanwhile).
    Failed,
    /// Nothing to do (a reply nobody asked for).
    Nothing,
}

/// A login without a password, waiting for the in-world dialogue.
pub struct Asking {
    name: AvatarName,
    /// The name has an account (picks the first prompt).
    known: bool,
    /// Started at HERE_I_AM.
    dialogue: Option<PasswordDialogue>,
    /// The name lookup's place in the login throttle until the first answer (each answer
    /// is then an attempt of its own); counted as a failed attempt if the player goes
    /// away without answering (on drop), so probing names costs like guessing.
    lookup: Option<Reservation>,
}

impl Asking {
    /// Starts the dialogue (at HERE_I_AM): its first prompt.
    pub async fn start(&mut self, deps: &Deps, peer: SocketAddr) -> Step {
        let (d, step) = PasswordDialogue::start_with_min_len(
            self.known,
            deps.auto_register(),
            deps.accounts.min_password_len(),
        );
        self.dialogue = Some(d);
        self.drive(step, deps, peer).await
    }

    /// The answer to the password prompt (stripped of the prompt echo, not trimmed).
    pub async fn answer(&mut self, answer: Vec<u8>, deps: &Deps, peer: SocketAddr) -> Step {
        let step = match self.dialogue.as_mut() {
            Some(d) => d.answer(Password::new(answer)),
            None => DialogueStep::Ignore,
        };
        self.drive(step, deps, peer).await
    }

    /// Carries out dialogue steps (checking or registering a password) until one needs
    /// the player or ends the dialogue.
    async fn drive(&mut self, mut step: DialogueStep, deps: &Deps, peer: SocketAddr) -> Step {
        loop {
            if matches!(step, DialogueStep::Check(_) | DialogueStep::Register(_)) {
                // The player answered: from here each check or registration is an attempt
                // of its own, so the lookup's place is given back rather than counted twice.
                if let Some(r) = self.lookup.take() {
                    r.finish(Outcome::Inconclusive);
                }
            }
            let ok = match step {
                DialogueStep::Ask(text) => return Step::Ask(text),
                DialogueStep::Check(password) => {
                    let checked = deps
                        .accounts
                        .login(
                            self.name.display(),
                            password,
                            peer.ip(),
                            false,
                            Instant::now(),
                            SystemTime::now(),
                        )
                        .await;
                    match checked {
                        Ok(_) => true,
                        Err(AuthError::Throttled { retry_after_secs }) => {
                            return Step::Refused(Refusal::TooManyTries(retry_after_secs))
                        }
                        Err(AuthError::Store(e)) => {
                            warn!(error = %e, "password could not be checked");
                            false
                        }
                        Err(_) => false,
                    }
                }
                DialogueStep::Register(password) => {
                    let added = deps
                        .accounts
                        .register(
                            self.name.display(),
                            password,
                            peer.ip(),
                            Instant::now(),
                            SystemTime::now(),
                        )
                        .await;
                    match added {
                        Ok(_) => {
                            info!("new avatar registered in-world");
                            true
                        }
                        Err(AuthError::Throttled { retry_after_secs }) => {
                            return Step::Refused(Refusal::TooManyTries(retry_after_secs))
                        }
                        Err(e) => {
                            warn!(error = %e, "in-world registration failed");
                            false
                        }
                    }
                }
                DialogueStep::Done => {
                    return match deps.accounts.lookup(self.name.display()).await {
                        Ok(Some(avatar)) => {
                            if let Some(r) = self.lookup.take() {
                                r.finish(Outcome::Success);
                            }
                            Step::Authenticated(avatar)
                        }
                        _ => Step::Failed,
                    };
                }
                DialogueStep::Refuse => return Step::Refused(Refusal::WrongNameOrPassword),
                DialogueStep::Ignore => return Step::Nothing,
            };
            step = match self.dialogue.as_mut() {
                Some(d) => d.checked(ok),
                None => DialogueStep::Ignore,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use espmail_test_macros::bounded;

    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;
    use crate::log_redact::Sensitive;
    use crate::server::testing;
    use crate::world::login::{
        AuthMode, PROMPT_AGAIN, PROMPT_NEW_PASSWORD, PROMPT_PASSWORD, PROMPT_WRONG_PASSWORD,
    };

    #[test]
    fn the_login_line_and_the_prompt_give_the_same_password() {
        let typed = " my pass phrase ";
        let line = Password::from(Sensitive::new(typed.to_string()));
        // The C64 echoes the prompt, minus its last character, before what was typed.
        let mut reply = b"Password:".to_vec();
        reply.extend_from_slice(typed.as_bytes());
        let prompt = Password::new(
            crate::protocol::messages::strip_prompt_echo(PROMPT_PASSWORD.as_bytes(), &reply)
                .to_vec(),
        );
        assert_eq!(line.expose(), prompt.expose());
        assert_eq!(line.expose(), typed.as_bytes());
    }

    const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), 40_000);
    const WAIT: Duration = Duration::from_secs(20);

    fn password_mode() -> AuthMode {
        AuthMode::Password {
            auto_register: true,
        }
    }

    fn login(name: &str, password: Option<&str>) -> Login {
        Login {
            name: name.into(),
            password: password.map(|p| Sensitive::new(p.to_string())),
            front_end_secret: None,
            op_login: true,
        }
    }

    /// A login line from a trusted front end: `secret` as its `"front_end_secret"`.
    fn front_end_login(name: &str, secret: &str) -> Login {
        Login {
            front_end_secret: Some(Sensitive::new(secret.to_string())),
            ..login(name, None)
        }
    }

    #[bounded]
    #[tokio::test]
    async fn the_login_line_may_come_in_small_pieces_and_the_link_keeps_what_follows() {
        tokio::time::timeout(WAIT, async {
            // An 8-byte pipe: every read holds a few bytes at most.
            let (mut client, mut server) = tokio::io::duplex(8);
            let writer = tokio::spawn(async move {
                let line = br#"{"to":"bridge","op":"LOGIN","name":"Bob"}"#;
                client
                    .write_all(&[&line[..], b"\r\rZ\x01ab"].concat())
                    .await
                    .unwrap();
            });
            let token = CancellationToken::new();
            let (login, leftover) = read_preamble(&mut server, &[], WAIT, &token)
                .await
                .unwrap()
                .expect("a login");
            assert_eq!(login.name, "Bob");
            assert!(login.password.is_none());
            writer.await.unwrap();
            let mut rest = leftover.to_vec();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"Z\x01ab", "nothing after the login line is lost");
        })
        .await
        .expect("bounded");
    }

    #[bounded]
    #[tokio::test]
    async fn no_login_when_the_client_leaves_or_the_server_shuts_down() {
        tokio::time::timeout(WAIT, async {
            let (client, mut server) = tokio::io::duplex(8);
            drop(client);
            let token = CancellationToken::new();
            assert!(read_preamble(&mut server, &[], WAIT, &token)
                .await
                .unwrap()
                .is_none());

            let (_client, mut server) = tokio::io::duplex(8);
            token.cancel();
            assert!(read_preamble(&mut server, &[], WAIT, &token)
                .await
                .unwrap()
                .is_none());
        })
        .await
        .expect("bounded");
    }

    #[bounded]
    #[tokio::test]
    async fn an_overlong_line_ends_the_connection_with_the_reason() {
        tokio::time::timeout(WAIT, async {
            let (mut client, mut server) = tokio::io::duplex(64);
            let writer = tokio::spawn(async move {
                // The server stops reading at the limit; the rest may not fit the pipe.
                let _ = client.write_all(&[b'x'; 600]).await;
            });
            let token = CancellationToken::new();
            let err = read_preamble(&mut server, &[], WAIT, &token)
                .await
                .unwrap_err();
            assert!(matches!(
                err,
                LoginError::Preamble(PreambleError::LineTooLong { .. })
            ));
            drop(server);
            writer.await.unwrap();
        })
        .await
        .expect("bounded");
    }

    /// Runs the dialogue with these answers; returns the prompts asked and how it ended.
    async fn dialogue(asking: &mut Asking, deps: &Deps, answers: &[&str]) -> (Vec<String>, Step) {
        let mut asked = Vec::new();
        let mut step = asking.start(deps, PEER).await;
        for answer in answers {
            let Step::Ask(prompt) = step else {
                panic!("no prompt to answer: {step:?}");
            };
            asked.push(prompt.to_string());
            step = asking.answer(answer.as_bytes().to_vec(), deps, PEER).await;
        }
        (asked, step)
    }

    #[bounded]
    #[tokio::test]
    async fn a_new_name_chooses_its_password_in_world_and_the_next_login_checks_it() {
        tokio::time::timeout(WAIT, async {
            let dir = tempfile::tempdir().unwrap();
            let deps = testing::deps(dir.path(), password_mode());
            let Auth::Asking(mut asking) =
                authenticate(&deps, &Peer::direct(PEER), login("Cyd", None)).await
            else {
                panic!("no password in the line: asked in-world");
            };
            let (asked, end) = dialogue(&mut asking, &deps, &["sesame-42", "sesame-42"]).await;
            assert_eq!(asked, [PROMPT_NEW_PASSWORD, PROMPT_AGAIN]);
            let Step::Authenticated(avatar) = end else {
                panic!("not authenticated: {end:?}");
            };
            assert_eq!(avatar.name.display(), "Cyd");

            // Known now: the password is asked, and a wrong one is refused.
            let Auth::Asking(mut asking) =
                authenticate(&deps, &Peer::direct(PEER), login("cyd", None)).await
            else {
                panic!("asked in-world");
            };
            let (asked, end) = dialogue(&mut asking, &deps, &["nope-nope", "sesame-42"]).await;
            assert_eq!(asked, [PROMPT_PASSWORD, PROMPT_WRONG_PASSWORD]);
            assert!(matches!(end, Step::Authenticated(a) if a.name.display() == "Cyd"));

            // The password in the login line is checked at once.
            assert!(matches!(
                authenticate(&deps, &Peer::direct(PEER), login("Cyd", Some("sesame-42"))).await,
                Auth::Yes(_)
            ));
            assert!(matches!(
                authenticate(&deps, &Peer::direct(PEER), login("Cyd", Some("sesame-43"))).await,
                Auth::Refused(_)
            ));
            deps.mail.shutdown().await.unwrap();
        })
        .await
        .expect("bounded");
    }

    #[bounded]
    #[tokio::test]
    async fn three_wrong_passwords_are_refused() {
        tokio::time::timeout(WAIT, async {
            let dir = tempfile::tempdir().unwrap();
            let deps = testing::deps(dir.path(), password_mode());
            assert!(matches!(
                authenticate(&deps, &Peer::direct(PEER), login("Dee", Some("right-one"))).await,
                Auth::Yes(_)
            ));
            let Auth::Asking(mut asking) =
                authenticate(&deps, &Peer::direct(PEER), login("Dee", None)).await
            else {
                panic!("asked in-world");
            };
            let (asked, end) =
                dialogue(&mut asking, &deps, &["a-wrong-1", "a-wrong-2", "a-wrong-3"]).await;
            assert_eq!(asked.len(), 3);
            assert!(
                matches!(end, Step::Refused(Refusal::WrongNameOrPassword)),
                "{end:?}"
            );
            // A reply after the end is nothing.
            assert!(matches!(
                asking.answer(b"right-one".to_vec(), &deps, PEER).await,
                Step::Nothing
            ));
            deps.mail.shutdown().await.unwrap();
        })
        .await
        .expect("bounded");
    }

    #[bounded]
    #[tokio::test]
    async fn trusted_mode_believes_only_the_front_end() {
        tokio::time::timeout(WAIT, async {
            let dir = tempfile::tempdir().unwrap();
            let deps = testing::deps(
                dir.path(),
                testing::trusted(vec![PEER.ip()]),
            );
            assert!(matches!(
                authenticate(&deps, &Peer::direct(PEER), front_end_login("Eve", testing::FRONT_END_SECRET)).await,
                Auth::Yes(a) if a.name.display() == "Eve"
            ));
            let elsewhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)), 1);
            assert!(matches!(
                authenticate(&deps, &Peer::direct(elsewhere), front_end_login("Eve", testing::FRONT_END_SECRET)).await,
                Auth::Refused(_)
            ));
            // A PROXY header says where the player is, not who may be believed: through
            // the trusted front end, any player address is believed; through another
            // front end, even the trusted one's address is not.
            let through_trusted = Peer {
                addr: "203.0.113.7:5000".parse().unwrap(),
                via: Some(PEER),
            };
            assert!(matches!(
                authenticate(&deps, &through_trusted, front_end_login("Eve", testing::FRONT_END_SECRET)).await,
                Auth::Yes(_)
            ));
            // Another process on the front end's host, without the secret or with a wrong
            // one, is refused.
            for eve in [login("Eve", None), front_end_login("Eve", "a-guessed-secret-12")] {
                assert!(matches!(
                    authenticate(&deps, &Peer::direct(PEER), eve).await,
                    Auth::Refused(Refusal::WrongNameOrPassword)
                ));
            }
            let claiming_trusted = Peer {
                addr: PEER,
                via: Some(elsewhere),
            };
            assert!(matches!(
                authenticate(&deps, &claiming_trusted, front_end_login("Eve", testing::FRONT_END_SECRET)).await,
                Auth::Refused(_)
            ));
            deps.mail.shutdown().await.unwrap();
        })
        .await
        .expect("bounded");
    }
}
