//! The terminal front end of `espmail talk`: log in, then relay between the keyboard and
//! the world until the player leaves or the server ends the session.
//!
//! Logging in goes the way the C64 goes in password mode: the login line carries no
//! password, and the server asks in-world ("Password: ", or "New avatar. Choose a
//! password: " then "Again: "). Each question is asked at the terminal with echo off
//! (or answered from `ESPMAIL_PASSWORD`), so a new avatar's password is typed twice and
//! never shown. The server says nothing when the password is right, so after each
//! answer the client asks `TO:` its own name: a hidden avatar gets only the reply, an
//! avatar in the world gets "Cannot contact NAME." first (ESPMAIL.md: no ESP to oneself).
//! That line is the sign the world has let the avatar in; it is never shown.
//!
//! Standard input is read on a thread of its own, one line when asked, so a session that
//! ends (the server said goodbye) ends the process at once instead of waiting for a key.
//!
//! Exit: [`run`] returns `Ok` when the player left (`/quit`, end of input, Ctrl-C) or the
//! server closed the session saying why (shutting down, logged in elsewhere); `Err` for
//! everything else, in words. `espmail` maps these to exit codes 0 and 1.
//!
//! May touch: one connection, standard input and output, the terminal's echo.

use std::fmt;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::client::{io_words, Client, ClientError, Event, Transport};
use super::screen::{help, printable, read_typed, Command, Screen, Typed};
use crate::protocol::habitat::MAX_REASSEMBLED_ARGS;
use crate::protocol::preamble::{check_name, MAX_NAME_CHARS};
use crate::server::session::SHUTTING_DOWN;
use crate::terminal;
use crate::tls::{Connector, TlsError, Verify};
use crate::world::login::{PROMPT_AGAIN, PROMPT_NEW_PASSWORD, PROMPT_PASSWORD};
use crate::world::LOGGED_IN_ELSEWHERE;

/// How long connecting, and each answer the server owes during login, may take.
const SERVER_WAIT: Duration = Duration::from_secs(30);
/// How long `/quit` waits for the server to close its side.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// What `espmail talk` needs: where, as whom, and the password if the caller has it
/// (otherwise it is asked at the terminal when the server wants it).
#[derive(Clone)]
pub struct TalkOptions {
    /// The server, `HOST:PORT`.
    pub server: String,
    /// The avatar name (checked by [`TalkOptions::new`]).
    name: String,
    password: Option<Zeroizing<String>>,
    /// Speak TLS, checking the server this way; `None`: plain TCP.
    tls: Option<Verify>,
}

impl fmt::Debug for TalkOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TalkOptions")
            .field("server", &self.server)
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<given>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl TalkOptions {
    /// Options for `name` at `server`; the name must follow the world's rules.
    pub fn new(
        server: impl Into<String>,
        name: &str,
        password: Option<String>,
    ) -> Result<TalkOptions, TalkError> {
        Ok(TalkOptions {
            server: server.into(),
            name: parse_name(name)?,
            password: password.map(Zeroizing::new),
            tls: None,
        })
    }

    /// Connect with TLS (to the server's TLS listener), checking its certificate as
    /// `verify` says; no byte of the login goes out before the check has passed.
    pub fn with_tls(mut self, verify: Verify) -> TalkOptions {
        self.tls = Some(verify);
        self
    }

    /// The avatar name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Checks a name by the world's rules (the server closes a connection whose login line
/// breaks them); returns it trimmed. Also the command line's check of `--name`.
pub fn parse_name(name: &str) -> Result<String, TalkError> {
    let trimmed = name.trim();
    match check_name(trimmed) {
        Ok(()) => Ok(trimmed.to_string()),
        Err(_) => Err(TalkError::BadName(name.to_string())),
    }
}

/// How a session that went as it should ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The player left.
    Left,
    /// The server ended the session and said why (its words).
    ByServer(String),
}

/// Why `espmail talk` stopped early, in words a player can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TalkError {
    /// The name breaks the world's rules.
    #[error("the name '{0}' cannot be used: names are 1 to {MAX_NAME_CHARS} characters from A-Z a-z 0-9 space - _ .")]
    BadName(String),
    /// No connection.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Where.
        addr: String,
        /// Why, in words.
        reason: String,
    },
    /// The server said no to the login (its words).
    #[error("the server refused the login: {0}")]
    Refused(String),
    /// The password given with `--password` or `ESPMAIL_PASSWORD` was not taken.
    #[error("the server did not take the password given: {0}")]
    PasswordRefused(String),
    /// The connection ended without a word from the server.
    #[error("the connection to the server was lost: {0}")]
    Lost(String),
    /// The server did not answer in time.
    #[error("the server did not answer within {} s", .0.as_secs())]
    NoAnswer(Duration),
    /// A password longer than the in-world question can carry.
    #[error("that password is too long to send at the server's question (at most {0} characters)")]
    PasswordTooLong(usize),
    /// The input ended where a password was wanted.
    #[error("the input ended before a password was typed (ESPMAIL_PASSWORD can give it)")]
    NoPassword,
    /// Standard input failed.
    #[error("cannot read the keyboard: {0}")]
    Keyboard(String),
}

impl From<ClientError> for TalkError {
    fn from(e: ClientError) -> TalkError {
        match e {
            ClientError::Closed => TalkError::Lost("the server closed it".into()),
            ClientError::Io(e) => TalkError::Lost(io_words(&e)),
            ClientError::Timeout(d) => TalkError::NoAnswer(d),
            ClientError::Refused(words) => TalkError::Refused(words),
            other => TalkError::Lost(other.to_string()),
        }
    }
}

/// `espmail talk HOST:PORT --name NAME [--tls]`: connect over TCP (or TLS), log in, and
/// talk.
pub async fn run(opts: TalkOptions) -> Result<Ending, TalkError> {
    match &opts.tls {
        Some(verify) => {
            let failed = |e: TlsError| TalkError::Connect {
                addr: opts.server.clone(),
                reason: e.to_string(),
            };
            let connector = Connector::new(verify, SERVER_WAIT).map_err(failed)?;
            let stream = connector.connect(&opts.server).await.map_err(failed)?;
            run_on(stream, opts).await
        }
        None => {
            let stream = connect(&opts.server).await?;
            run_on(stream, opts).await
        }
    }
}

async fn connect(addr: &str) -> Result<TcpStream, TalkError> {
    let failed = |reason: String| TalkError::Connect {
        addr: addr.to_string(),
        reason,
    };
    match tokio::time::timeout(SERVER_WAIT, TcpStream::connect(addr)).await {
        Err(_) => Err(failed(format!(
            "no answer within {} s",
            SERVER_WAIT.as_secs()
        ))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(failed("connection refused (is the server running?)".into()))
        }
        Ok(Err(e)) => Err(failed(io_words(&e))),
        Ok(Ok(s)) => Ok(s),
    }
}

/// Logs in and talks over a stream that is already open (a TLS stream, say).
pub async fn run_on<S: Transport>(stream: S, opts: TalkOptions) -> Result<Ending, TalkError> {
    let mut keyboard = Keyboard::start();
    let talk = async {
        let mut client = Client::handshake(stream, &opts.name, None).await?;
        client.wait = SERVER_WAIT;
        let (screen, held) = login(&mut client, &opts, &mut keyboard).await?;
        talk(client, screen, held, &mut keyboard).await
    };
    tokio::select! {
        ending = talk => ending,
        _ = tokio::signal::ctrl_c() => {
            // A password read may have echo off; the thread doing it cannot put it back.
            terminal::restore();
            // At a terminal the ^C stands at the end of the line.
            let fresh_line = if terminal::stdin_is_terminal() { "\n" } else { "" };
            say([format!("{fresh_line}-- Goodbye.")]);
            Ok(Ending::Left)
        }
    }
}

/// Prints lines on standard output: a terminal client's job.
#[allow(clippy::print_stdout)]
fn say(lines: impl IntoIterator<Item = String>) {
    for line in lines {
        println!("{line}");
    }
}

/// Logs in: IM_ALIVE, DESCRIBE, HERE_I_AM, then the in-world password dialogue until the
/// world lets the avatar in. Returns the screen and the events that came meanwhile (the
/// debug notice, waiting mail), to show after the "In the Plaza" line.
async fn login<S: Transport>(
    client: &mut Client<S>,
    opts: &TalkOptions,
    keyboard: &mut Keyboard,
) -> Result<(Screen, Vec<Event>), TalkError> {
    let refused = |e: ClientError, last: Option<&str>| match (e, last) {
        // A refusal is said, then the connection closes: the words are the reason.
        (ClientError::Closed | ClientError::Io(_), Some(words)) => {
            TalkError::Refused(words.to_string())
        }
        (ClientError::Closed | ClientError::Io(_), None) => {
            TalkError::Refused("it closed the connection".into())
        }
        (e, _) => e.into(),
    };
    client.im_alive().await.map_err(|e| refused(e, None))?;
    let vector = client.describe().await.map_err(|e| refused(e, None))?;
    client.here_i_am().await.map_err(|e| refused(e, None))?;
    let me = client.me;
    let mut new_avatar = false;
    let mut answered = 0usize;
    let mut last_line: Option<String> = None;
    let mut held = Vec::new();
    loop {
        // Ask TO: ourselves; see the module doc.
        client
            .send_speak(format!("TO:{}", opts.name).as_bytes())
            .await?;
        let mut inside = false;
        loop {
            let ev = match client.next_event().await {
                Ok(ev) => ev,
                Err(e) => return Err(refused(e, last_line.as_deref())),
            };
            match ev {
                Event::Reply { noid, .. } if noid == me => break,
                Event::Speak { noid, .. } if noid == me => inside = true,
                Event::Talk {
                    speaker: 0,
                    ref text,
                } => {
                    last_line = Some(printable(text));
                    held.push(ev);
                }
                ev => held.push(ev),
            }
        }
        if inside {
            if new_avatar {
                say([format!("-- You are registered as {}.", opts.name)]);
            }
            return Ok((Screen::new(me, &opts.name, &vector), held));
        }
        // Hidden: the server asked for a password (the last prompt it sent).
        let Some(at) = held.iter().rposition(|e| matches!(e, Event::Prompt(_))) else {
            return Err(TalkError::Refused(
                "it neither let the avatar in nor asked for a password".into(),
            ));
        };
        let Event::Prompt(prompt) = held.remove(at) else {
            continue;
        };
        let asked = printable(&prompt);
        if asked == PROMPT_NEW_PASSWORD && answered == 0 {
            new_avatar = true;
            say([format!(
                "-- {} is a new avatar: choose a password to register it (typed twice, not shown).",
                opts.name
            )]);
        }
        let secret = match &opts.password {
            Some(given) => {
                // The given password answers the first question, and "Again: " for a new
                // avatar; any other question means the server did not take it.
                let expected = match answered {
                    0 => asked == PROMPT_PASSWORD || asked == PROMPT_NEW_PASSWORD,
                    1 => new_avatar && asked == PROMPT_AGAIN,
                    _ => false,
                };
                if !expected {
                    return Err(TalkError::PasswordRefused(question_words(&asked)));
                }
                given.clone()
            }
            None => {
                let shown = match asked.as_str() {
                    PROMPT_PASSWORD => format!("Password for {}: ", opts.name),
                    PROMPT_NEW_PASSWORD => format!("New avatar {}. Choose a password: ", opts.name),
                    other => other.to_string(),
                };
                match keyboard.secret(shown).await? {
                    Some(s) => s,
                    None => return Err(TalkError::NoPassword),
                }
            }
        };
        // The C64 sends the question (less its last character) before the answer, and
        // the server puts a split answer back together only up to its limit.
        let room = MAX_REASSEMBLED_ARGS.saturating_sub(prompt.len().saturating_sub(1));
        if secret.len() > room {
            return Err(TalkError::PasswordTooLong(room));
        }
        client.answer(&prompt, secret.as_bytes()).await?;
        answered += 1;
    }
}

/// The words of a password question, for an error: "Wrong password. Password: " gives
/// "Wrong password.", "Too short, use 8 or more: " gives "Too short, use 8 or more".
fn question_words(asked: &str) -> String {
    let first = match asked.find(". ") {
        Some(i) => &asked[..=i],
        None => asked,
    };
    first.trim().trim_end_matches(':').to_string()
}

/// Whether a server line, just before the server closed the connection, says why.
fn is_goodbye(line: &str) -> bool {
    line == SHUTTING_DOWN || line == LOGGED_IN_ELSEWHERE
}

/// Relays between the keyboard and the world until one side ends it.
async fn talk<S: Transport>(
    mut client: Client<S>,
    mut screen: Screen,
    held: Vec<Event>,
    keyboard: &mut Keyboard,
) -> Result<Ending, TalkError> {
    say(screen.entered());
    let mut prompt: Option<Vec<u8>> = None;
    let mut last_line: Option<String> = None;
    for ev in held {
        if let Event::Prompt(text) = &ev {
            prompt = Some(text.clone());
        }
        say(screen.show(&ev));
    }
    loop {
        keyboard.want_line();
        tokio::select! {
            key = keyboard.recv() => {
                let line = match key {
                    Key::Line(line) => line,
                    Key::End => return leave(&mut client).await,
                    Key::Failed(e) => return Err(TalkError::Keyboard(e)),
                    Key::Secret(_) => return Err(TalkError::Keyboard("a secret came unasked".into())),
                };
                if let Some(ending) = typed(&mut client, &mut screen, &mut prompt, &line).await? {
                    return Ok(ending);
                }
            }
            ev = client.next_event_unbounded() => match ev {
                Ok(ev) => {
                    match &ev {
                        Event::Prompt(text) => prompt = Some(text.clone()),
                        Event::Talk { speaker: 0, text } => last_line = Some(printable(text)),
                        _ => {}
                    }
                    say(screen.show(&ev));
                }
                Err(ClientError::Closed | ClientError::Io(_))
                    if last_line.as_deref().is_some_and(is_goodbye) =>
                {
                    say(["-- The server closed the connection.".to_string()]);
                    return Ok(Ending::ByServer(last_line.unwrap_or_default()));
                }
                Err(ClientError::Closed) => {
                    return Err(TalkError::Lost("the server closed it without saying why".into()))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Handles one typed line; `Some` when the player left.
async fn typed<S: Transport>(
    client: &mut Client<S>,
    screen: &mut Screen,
    prompt: &mut Option<Vec<u8>>,
    line: &str,
) -> Result<Option<Ending>, TalkError> {
    let sent = match read_typed(line) {
        Typed::Command(Command::Quit) => return leave(client).await.map(Some),
        Typed::Command(Command::Help) => {
            say(help());
            return Ok(None);
        }
        Typed::Command(Command::Who) => {
            say([screen.who()]);
            return Ok(None);
        }
        Typed::Command(Command::Unknown(word)) => {
            say([format!(
                "-- {word} is not a command (/help lists them). To say a line starting with /, type //."
            )]);
            return Ok(None);
        }
        Typed::Line(l) => l,
    };
    say(sent.notes());
    let result = if let Some(p) = prompt.take() {
        client.answer(&p, &sent.bytes).await
    } else if screen.in_esp() {
        client.send_esp(&sent.bytes).await
    } else if sent.bytes.is_empty() {
        // An empty SPEAK would be an empty balloon over our head for everyone.
        return Ok(None);
    } else {
        if let Some(to) = sent
            .bytes
            .get(..3)
            .filter(|p| p.eq_ignore_ascii_case(b"to:"))
            .and_then(|_| sent.bytes.get(3..))
        {
            screen.esp_typed(&String::from_utf8_lossy(to));
        }
        client.send_speak(&sent.bytes).await
    };
    match result {
        Ok(()) => Ok(None),
        Err(ClientError::TooLong { .. } | ClientError::Link(_)) => {
            say(["-- That line could not be sent; nothing was sent.".to_string()]);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Leaves the world: I_QUIT, then a short wait for the server to close its side, so the
/// others see the departure at once.
async fn leave<S: Transport>(client: &mut Client<S>) -> Result<Ending, TalkError> {
    if client.quit().await.is_ok() {
        client.wait = QUIT_WAIT;
        let _ = client.wait_closed().await;
    }
    say(["-- Goodbye.".to_string()]);
    Ok(Ending::Left)
}

/// What the keyboard thread was asked for.
enum Ask {
    Line,
    Secret(String),
}

/// What it read.
enum Key {
    Line(String),
    Secret(Option<Zeroizing<String>>),
    End,
    Failed(String),
}

/// The one reader of standard input, on a thread of its own: it reads only when asked, so
/// a password question and the chat never race for the same line, and a session that
/// ends does not wait for a key (the thread dies with the process).
struct Keyboard {
    asks: std::sync::mpsc::Sender<Ask>,
    keys: mpsc::Receiver<Key>,
    /// A line was asked for and has not come yet.
    waiting: bool,
}

impl Keyboard {
    fn start() -> Keyboard {
        let (asks, asked) = std::sync::mpsc::channel::<Ask>();
        let (tx, keys) = mpsc::channel(1);
        std::thread::spawn(move || {
            for ask in asked {
                let key = match ask {
                    Ask::Line => {
                        let mut line = String::new();
                        match std::io::stdin().read_line(&mut line) {
                            Ok(0) => Key::End,
                            Ok(_) => Key::Line(line),
                            Err(e) => Key::Failed(io_words(&e)),
                        }
                    }
                    Ask::Secret(prompt) => match terminal::read_secret(&prompt) {
                        Ok(secret) => Key::Secret(secret),
                        Err(e) => Key::Failed(io_words(&e)),
                    },
                };
                if tx.blocking_send(key).is_err() {
                    return;
                }
            }
        });
        Keyboard {
            asks,
            keys,
            waiting: false,
        }
    }

    /// Asks for the next line unless one is already asked for.
    fn want_line(&mut self) {
        if !self.waiting {
            self.waiting = self.asks.send(Ask::Line).is_ok();
        }
    }

    /// The next thing read. Cancel-safe: a line not taken now is taken by the next call.
    async fn recv(&mut self) -> Key {
        let key = self.keys.recv().await.unwrap_or(Key::End);
        self.waiting = false;
        key
    }

    /// Reads a secret (echo off at a terminal); `None` at the end of input.
    async fn secret(&mut self, prompt: String) -> Result<Option<Zeroizing<String>>, TalkError> {
        if self.waiting {
            // Never during login, where nothing asks for lines; but a line asked for
            // must be read first, so it is not taken as the password.
            return Err(TalkError::Keyboard("a line is still being read".into()));
        }
        if self.asks.send(Ask::Secret(prompt)).is_err() {
            return Err(TalkError::Keyboard("the keyboard reader stopped".into()));
        }
        match self.keys.recv().await {
            Some(Key::Secret(s)) => Ok(s),
            Some(Key::Failed(e)) => Err(TalkError::Keyboard(e)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use espmail_test_macros::bounded;

    #[test]
    fn names_are_checked_and_trimmed_before_connecting() {
        assert_eq!(parse_name(" Bob ").unwrap(), "Bob");
        let e = parse_name("x y!").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the name 'x y!' cannot be used: names are 1 to 16 characters from A-Z a-z 0-9 space - _ ."
        );
        assert!(parse_name("").is_err());
        assert!(parse_name("abcdefghijklmnopq").is_err());
    }

    #[test]
    fn a_password_never_shows_in_the_options() {
        let o = TalkOptions::new("h:1", "Bob", Some("hunter2-secret".into())).unwrap();
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[test]
    fn questions_become_short_reasons() {
        assert_eq!(
            question_words("Wrong password. Password: "),
            "Wrong password."
        );
        assert_eq!(
            question_words("Too short, use 8 or more: "),
            "Too short, use 8 or more"
        );
        assert_eq!(
            question_words("Not the same. Choose a password: "),
            "Not the same."
        );
    }

    #[test]
    fn only_the_servers_goodbyes_end_a_session_well() {
        assert!(is_goodbye("The server is shutting down. Goodbye."));
        assert!(is_goodbye("You have logged in elsewhere."));
        assert!(!is_goodbye("ESP Mail for Bob saved."));
    }

    #[bounded]
    #[tokio::test]
    async fn connection_refused_says_so_in_words() {
        // A port nobody listens on: bind one, note it, close it.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let e = connect(&addr).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot connect to {addr}: connection refused (is the server running?)")
        );
    }
}
