//! One connection: its socket, its Q-Link link state and its avatar, in one task.
//!
//! The session is the glue between the pure layers: bytes come in through the login
//! [`Preamble`], then [`QLinkCodec`] frames through the [`Link`] state machine, then Habitat
//! packets through the [`Reassembler`] into typed [`ClientMsg`]s; the answers go the same
//! way back as [`ServerMessage`]s. What a request *means* is decided by `world` (accounts,
//! presence, the ESP dialogue) and `espmail` (the vault); the session only maps their
//! decisions onto protocol messages and owns the timing: login and idle timeouts, prompt
//! timeouts, the outbound rate cap, and the one rule that needs the link: a delivered ESP
//! Mail is deleted only once the client acked the frame carrying its last line.
//!
//! A bad frame or packet costs only itself (a NAK or nothing, as WIRE.md §1.3.4 says);
//! message text never reaches a log (only lengths and fingerprints).
//!
//! May touch: its own socket; the registry, accounts and vault through `Deps`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::delivery::{Delivery, Show};
use super::outbound::{Outbound, SendError};
use super::pace::LineBucket;
use super::Deps;
use crate::espmail::SaveError;
use crate::log_redact::{self, Dir, Sensitive};
use crate::protocol::frame::{BadFrame, Frame};
use crate::protocol::habitat::{Packet, Reassembler};
use crate::protocol::messages::{
    AvatarState, ClientMsg, ClientRequest, CommonState, ContentsVector, RegionState, ServerMessage,
    IM_ALIVE_OK_TEXT, REGION_NOID, UNASSIGNED_NOID,
};
use crate::protocol::preamble::{Login, Preamble, Step};
use crate::protocol::qlink::QLinkCodec;
use crate::world::accounts::{
    self, AuthError, Avatar, AvatarName, Decision, DialogueStep, Password, PasswordDialogue,
    WRONG_NAME_OR_PASSWORD,
};
use crate::world::esp::{
    self, classify_speak, strip_prompt_echo, EspState, Intent, LiveEsp, RegistryDirectory,
    SaveOutcome, Speaker, Speech,
};
use crate::world::{Member, Noids};

/// Lines (SPEAK, ESP) a connection may send in a burst, and per second after it.
const LINE_BURST: u32 = 8;
const LINES_PER_SEC: u32 = 2;
/// Said when a line is dropped for coming too fast (ESPMAIL.md has no words for this).
const TOO_FAST: &str = "Slow down; that line was not sent.";

/// How long a connection the server ends waits for the client to close its side (see
/// [`Live::close_gracefully`]); bounded so a silent client cannot hold a shutdown.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Said to avatars in the world when the server shuts down (ESPMAIL.md has no words for
/// this; the connection closes right after it).
pub const SHUTTING_DOWN: &str = "The server is shutting down. Goodbye.";

/// After a refusal, how long to wait for the client to ack the IM_ALIVE before closing
/// (ESPMAIL.md §1: "once the reply is flushed (and acked, or after 2 s)").
const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// What one session tells another, through the registry's bounded outboxes. Never bytes:
/// each session encodes for its own client.
#[derive(Debug, Clone)]
pub enum Push {
    /// An avatar arrived in the Plaza: HEREIS.
    Arrived(Noids),
    /// An avatar appeared (after its HERE_I_AM): APPEAR.
    Appeared(u8),
    /// An avatar left: GOAWAY for it and its head.
    Left(Noids),
    /// Speech in the Plaza: SPEAK$ over the speaker.
    Spoke {
        /// The speaker's avatar noid.
        noid: u8,
        /// What was said.
        text: Sensitive<Vec<u8>>,
    },
    /// A live ESP for this avatar.
    Esp(LiveEsp),
    /// A line from the server to show (e.g. the debug notice).
    Notice(&'static str),
}

/// Why a session ended other than by the peer hanging up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The login preamble was unusable.
    #[error("bad login preamble: {0}")]
    Preamble(#[from] crate::protocol::preamble::PreambleError),
    /// Writing to the client failed, or the client stopped acking.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// How the connection is bound to an avatar (DESIGN.md promise 6).
enum Auth {
    /// Not (yet) authenticated: refused on IM_ALIVE and closed.
    Refused,
    /// Authenticated: chat, ESP and mail.
    Yes(Avatar),
    /// No password in the login line: hidden until the in-world dialogue succeeds.
    Asking {
        name: AvatarName,
        known: bool,
        dialogue: Option<PasswordDialogue>,
    },
}

/// What the one pending PROMPT_USER is for.
enum PromptFor {
    Password,
    MailOffer,
    NextMail,
}

struct Prompt {
    for_: PromptFor,
    text: Cow<'static, str>,
    deadline: Option<tokio::time::Instant>,
}

/// One connection's task.
pub struct Session {
    stream: TcpStream,
    peer: SocketAddr,
    deps: Arc<Deps>,
    shutdown: CancellationToken,
}

impl Session {
    /// A session for an accepted connection.
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        deps: Arc<Deps>,
        shutdown: CancellationToken,
    ) -> Session {
        Session {
            stream,
            peer,
            deps,
            shutdown,
        }
    }

    /// Run to the end and log how it ended; errors end only this session. `permit` (the
    /// connection's place under `max_connections`) is released before the last log line.
    pub async fn run_logged(self, permit: tokio::sync::OwnedSemaphorePermit) {
        info!("connected");
        let result = self.run().await;
        drop(permit);
        match result {
            Ok(()) => info!("disconnected"),
            Err(e) => info!(error = %e, "session ended"),
        }
    }

    async fn run(mut self) -> Result<(), SessionError> {
        let Some((login, leftover)) = self.preamble().await? else {
            return Ok(());
        };
        tracing::Span::current().record("avatar", login.name.as_str());
        // The name may be logged (operators need it); the password only as present or not.
        debug!(
            password = login.password.is_some(),
            leftover = leftover.len(),
            "login line read"
        );
        let auth = self.authenticate(login).await;
        let mut codec_buf = BytesMut::new();
        codec_buf.extend_from_slice(&leftover);
        let mut parts = FramedParts::new::<Frame>(self.stream, QLinkCodec::new());
        parts.read_buf = codec_buf;
        let framed = Framed::from_parts(parts);
        let (tx, rx) = mpsc::channel(self.deps.settings.outbox_len.max(1));
        let member = self.deps.registry.seat();
        let mut live = Live {
            peer: self.peer,
            deps: self.deps.clone(),
            framed,
            out: Outbound::new(self.deps.settings.out_bytes_per_sec),
            reasm: Reassembler::new(),
            auth,
            member,
            outbox_tx: tx,
            outbox_rx: rx,
            alive_sent: false,
            described: false,
            here: false,
            entered: false,
            prompt: None,
            esp: None,
            delivery: None,
            idle_deadline: tokio::time::Instant::now() + self.deps.settings.idle_timeout,
            closing: None,
            debug_rx: self.deps.debug.clone(),
            lines: LineBucket::new(LINE_BURST, LINES_PER_SEC),
            dropped_lines: 0,
        };
        if let Auth::Yes(a) = &live.auth {
            live.esp = Some(EspState::new(a.name.clone()));
        }
        let result = live.run(&self.shutdown).await;
        live.leave();
        if result.is_ok() {
            // The mailbox lease goes first: a login that replaced this one must not wait
            // for the linger below to open it.
            live.delivery = None;
            live.close_gracefully().await;
        }
        result
    }

    /// Reads the login preamble (WIRE.md 1.3.1), writing the `CONNECT` fallback after 2 s
    /// of silence. The real C64 may say nothing for minutes first, so only the generous
    /// login timeout ends the wait.
    async fn preamble(&mut self) -> Result<Option<(Login, Bytes)>, SessionError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.deps.settings.login_timeout;
        let mut parser = Preamble::new(started);
        let mut buf = [0u8; 512];
        loop {
            let connect_at = parser.next_deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep_until(deadline) => {
                    info!("no login line before the login timeout");
                    return Ok(None);
                }
                _ = sleep_opt(connect_at) => {
                    if let Some(bytes) = parser.poll(Instant::now()) {
                        self.stream.write_all(bytes).await?;
                    }
                }
                n = self.stream.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(None);
                    }
                    let input = buf.get(..n).unwrap_or_default();
                    if let Step::Done { login, leftover } = parser.feed(input, Instant::now())? {
                        return Ok(Some((login, leftover)));
                    }
                }
            }
        }
    }

    /// Binds the connection to an avatar, or decides to ask in-world, or refuses
    /// (ESPMAIL.md §1). Unknown names and wrong passwords end the same way.
    async fn authenticate(&self, login: Login) -> Auth {
        let Login { name, password, .. } = login;
        let password = password.map(|p| Password::new(p.into_exposed().into_bytes()));
        let decision = accounts::decide(&self.deps.auth_mode, self.peer.ip(), &name, password);
        let accounts = &self.deps.accounts;
        match decision {
            Decision::Refuse(reason) => {
                info!(?reason, "login refused");
                Auth::Refused
            }
            Decision::Trust(name) => {
                match accounts
                    .ensure_trusted(name.display(), SystemTime::now())
                    .await
                {
                    Ok(avatar) => Auth::Yes(avatar),
                    Err(e) => {
                        warn!(error = %e, "trusted login could not be recorded");
                        Auth::Refused
                    }
                }
            }
            Decision::CheckPassword(name, password) => {
                let outcome = accounts
                    .login(
                        name.display(),
                        password,
                        self.peer.ip(),
                        self.deps.auto_register(),
                        Instant::now(),
                        SystemTime::now(),
                    )
                    .await;
                match outcome {
                    Ok(outcome) => Auth::Yes(outcome.avatar().clone()),
                    Err(e) => {
                        info!(error = %e, "login refused");
                        Auth::Refused
                    }
                }
            }
            Decision::AskInWorld(name) => {
                let known = match accounts.lookup(name.display()).await {
                    Ok(found) => found.is_some(),
                    Err(e) => {
                        warn!(error = %e, "account lookup failed");
                        return Auth::Refused;
                    }
                };
                Auth::Asking {
                    name,
                    known,
                    dialogue: None,
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The session after the preamble.
struct Live {
    peer: SocketAddr,
    deps: Arc<Deps>,
    framed: Framed<TcpStream, QLinkCodec>,
    out: Outbound,
    reasm: Reassembler,
    auth: Auth,
    member: Member<Push>,
    outbox_tx: mpsc::Sender<Push>,
    outbox_rx: mpsc::Receiver<Push>,
    alive_sent: bool,
    described: bool,
    here: bool,
    entered: bool,
    prompt: Option<Prompt>,
    esp: Option<EspState>,
    delivery: Option<Delivery>,
    idle_deadline: tokio::time::Instant,
    /// Set after a refusal: close once the client acked everything, or at this moment.
    closing: Option<tokio::time::Instant>,
    debug_rx: Option<tokio::sync::watch::Receiver<bool>>,
    lines: LineBucket,
    /// Lines dropped since the last one let through (the sender is told once per run).
    dropped_lines: u64,
}

/// How handling one event ended.
enum Flow {
    Continue,
    Close,
}

impl Live {
    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        let kicked = self.member.kicked().clone();
        loop {
            if let Some(at) = self.closing {
                if self.out.link().window_len() == 0 || tokio::time::Instant::now() >= at {
                    return Ok(());
                }
            }
            let link_at = self.out.next_deadline().map(tokio::time::Instant::from_std);
            let prompt_at = self.prompt.as_ref().and_then(|p| p.deadline);
            let flow = tokio::select! {
                _ = shutdown.cancelled() => {
                    // Only a client past HERE_I_AM shows balloon lines.
                    if self.here {
                        self.say(SHUTTING_DOWN);
                        self.pump().await?;
                    }
                    info!("closed for shutdown");
                    return Ok(());
                }
                _ = kicked.cancelled() => {
                    if let Some(text) = self.member.kick_reason().and_then(|r| r.text()) {
                        self.say(text);
                        self.pump().await?;
                    }
                    info!(reason = ?self.member.kick_reason(), "closed by the world");
                    return Ok(());
                }
                _ = tokio::time::sleep_until(self.idle_deadline) => {
                    info!("idle timeout");
                    return Ok(());
                }
                _ = sleep_opt(self.closing) => return Ok(()),
                _ = sleep_opt(link_at) => {
                    self.out.poll(&mut self.framed).await?;
                    Flow::Continue
                }
                _ = sleep_opt(prompt_at) => self.on_prompt_timeout().await?,
                changed = debug_changed(&mut self.debug_rx) => {
                    if changed && self.debug_on() && self.is_visible() {
                        self.say(crate::log_redact::DEBUG_NOTICE);
                        self.pump().await?;
                    }
                    Flow::Continue
                }
                Some(push) = self.outbox_rx.recv() => {
                    self.on_push(push);
                    self.pump().await?;
                    Flow::Continue
                }
                item = self.framed.next() => match item {
                    Some(Ok(item)) => self.on_frame(item).await?,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Ok(()),
                },
            };
            if let Flow::Close = flow {
                self.pump().await?;
                return Ok(());
            }
        }
    }

    fn debug_on(&self) -> bool {
        self.debug_rx.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Authenticated and in the Plaza.
    fn is_visible(&self) -> bool {
        matches!(self.auth, Auth::Yes(_)) && self.entered
    }

    fn my_noid(&self) -> u8 {
        self.member.noids().map_or(UNASSIGNED_NOID, |n| n.avatar)
    }

    fn name(&self) -> Option<&AvatarName> {
        match &self.auth {
            Auth::Yes(a) => Some(&a.name),
            Auth::Asking { name, .. } => Some(name),
            Auth::Refused => None,
        }
    }

    // ---- inbound ----

    async fn on_frame(&mut self, item: Result<Frame, BadFrame>) -> Result<Flow, SessionError> {
        let now = Instant::now();
        match &item {
            Ok(frame) => {
                debug!(pkt = %log_redact::packet(Dir::In, frame), "frame");
                self.idle_deadline = tokio::time::Instant::now() + self.deps.settings.idle_timeout;
            }
            Err(BadFrame::Crc { probe: true, .. }) => debug!("handshake probe"),
            Err(bad) => info!(error = %bad, "bad frame"),
        }
        let out = self.out.receive(item, now);
        for frame in out.send {
            self.out.write(&mut self.framed, frame).await?;
        }
        if let (Some(range), Some(d)) = (out.dropped, self.delivery.as_mut()) {
            d.dropped(range);
        }
        if let (Some(_), Some(d)) = (out.acked, self.delivery.as_mut()) {
            let link = self.out.link();
            d.acked(|frame| link.is_acked(frame)).await;
        }
        self.settle_delivery();
        let flow = match out.packet {
            Some(packet) => self.on_packet(packet.expose()).await?,
            None => Flow::Continue,
        };
        self.pump().await?;
        Ok(flow)
    }

    async fn on_packet(&mut self, escaped: &Bytes) -> Result<Flow, SessionError> {
        let packet = match Packet::parse_escaped(escaped) {
            Ok(p) => p,
            Err(e) => {
                info!(error = %e, len = escaped.len(), "bad packet ignored");
                return Ok(Flow::Continue);
            }
        };
        let h = packet.header;
        trace!(hab = %log_redact::habitat(Dir::In, h.ctrl, h.noid, h.reqnum, &packet.payload), "packet");
        let whole = match self.reasm.push(packet) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Flow::Continue),
            Err(e) => {
                info!(error = %e, "bad split packet ignored");
                return Ok(Flow::Continue);
            }
        };
        let msg = match ClientMsg::parse(&whole) {
            Ok(m) => m,
            Err(e) => {
                info!(error = %e, "malformed request ignored");
                return Ok(Flow::Continue);
            }
        };
        if !self.alive_sent {
            // Whatever the first packet is, it gets the IM_ALIVE answer and nothing else
            // (WIRE.md §3, as bridge_v2).
            self.alive_sent = true;
            return Ok(self.answer_alive());
        }
        self.on_request(msg).await
    }

    fn answer_alive(&mut self) -> Flow {
        if let Auth::Refused = self.auth {
            self.send(ServerMessage::ImAliveReply {
                status: 0,
                text: Bytes::from_static(WRONG_NAME_OR_PASSWORD.as_bytes()),
            });
            self.closing = Some(tokio::time::Instant::now() + REFUSAL_LINGER);
        } else {
            self.send(ServerMessage::ImAliveReply {
                status: 1,
                text: Bytes::from_static(IM_ALIVE_OK_TEXT),
            });
        }
        Flow::Continue
    }

    async fn on_request(&mut self, msg: ClientMsg) -> Result<Flow, SessionError> {
        if let Auth::Refused = self.auth {
            debug!("request after a refusal ignored");
            return Ok(Flow::Continue);
        }
        let seq = msg.seq;
        match msg.request {
            ClientRequest::ImAlive => {
                self.send(ServerMessage::ImAliveReply {
                    status: 1,
                    text: Bytes::from_static(IM_ALIVE_OK_TEXT),
                });
            }
            ClientRequest::Describe => self.on_describe(seq),
            ClientRequest::FingerInQue => self.send(ServerMessage::CaughtUp),
            ClientRequest::HereIAm => return self.on_here_i_am().await,
            ClientRequest::IQuit { code, len } => {
                info!(?code, len, "client quit");
                return Ok(Flow::Close);
            }
            ClientRequest::PromptReply { text } => return self.on_prompt_reply(text).await,
            ClientRequest::Speak { text, .. } => {
                if !self.owns(msg.noid) || !self.line_allowed(seq, false) {
                    return Ok(Flow::Continue);
                }
                return self.on_speak(seq, text).await;
            }
            ClientRequest::Esp { text, .. } => {
                if !self.owns(msg.noid) || !self.line_allowed(seq, true) {
                    return Ok(Flow::Continue);
                }
                return self.on_esp(seq, text).await;
            }
            ClientRequest::Unknown { noid, req, len } => {
                debug!(noid, req, len, "unknown request ignored");
                if noid != REGION_NOID && self.owns(noid) {
                    // The client waits for a reply to an object request; a 0 says "no".
                    self.send(ServerMessage::Reply {
                        seq,
                        noid,
                        reqnum: 0,
                        args: Bytes::from_static(&[0]),
                    });
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Whether one more line may go out now. A dropped line still gets its reply (the
    /// client waits for one), keeping ESP mode as it was; the sender is told once per run
    /// of dropped lines.
    fn line_allowed(&mut self, seq: u8, esp: bool) -> bool {
        if self.lines.take(Instant::now()) {
            if self.dropped_lines > 0 {
                info!(
                    dropped = self.dropped_lines,
                    "lines dropped for coming too fast"
                );
                self.dropped_lines = 0;
            }
            return true;
        }
        if self.dropped_lines == 0 {
            info!("lines coming too fast; dropping them");
            self.say(TOO_FAST);
        }
        self.dropped_lines += 1;
        let in_esp = esp && self.esp.as_ref().is_some_and(|e| e.target().is_some());
        self.send(ServerMessage::EspReply {
            seq,
            noid: self.my_noid(),
            esp: in_esp,
        });
        false
    }

    /// Whether a request on `noid` may be acted on: it must be this avatar's own noid, and
    /// the region must have been described.
    fn owns(&self, noid: u8) -> bool {
        // A ghost (no noids left) talks on FF, its Who_am_I.
        let mine = noid == self.my_noid();
        if !mine {
            info!(noid, "request on a noid this avatar does not own ignored");
        } else if !self.described {
            info!("request before DESCRIBE ignored");
        }
        mine && self.described
    }

    fn on_describe(&mut self, seq: u8) {
        let me = self.member.noids();
        let mut everyone: Vec<Noids> = self
            .deps
            .registry
            .present()
            .into_iter()
            .filter(|p| p.id != self.member.id())
            .filter_map(|p| p.noids)
            .collect();
        everyone.extend(me);
        everyone.sort_by_key(|n| n.avatar);
        let mut vector = ContentsVector::describe(RegionState::new(self.my_noid(), 0));
        for n in everyone {
            vector = with_avatar(vector, n);
        }
        self.send(ServerMessage::DescribeReply { seq, vector });
        self.described = true;
        if let Auth::Yes(_) = self.auth {
            self.enter();
        }
    }

    /// Makes the avatar present: reachable by name, and announced to the others.
    fn enter(&mut self) {
        if self.entered {
            return;
        }
        let Some(name) = self.name().cloned() else {
            return;
        };
        let entered = self.member.enter(&name, self.outbox_tx.clone());
        self.entered = true;
        if let Some(noids) = self.member.noids() {
            self.deps
                .registry
                .broadcast(Some(self.member.id()), &Push::Arrived(noids));
        }
        info!(replaced = entered.replaced.is_some(), "entered the Plaza");
    }

    /// Tells the others this avatar appeared. A ghost is in nobody's contents vector, so
    /// there is nothing for them to show.
    fn announce_appear(&self) {
        if let Some(noids) = self.member.noids() {
            self.deps
                .registry
                .broadcast(Some(self.member.id()), &Push::Appeared(noids.avatar));
        }
    }

    /// Leaves the Plaza (at the end of the session): the others see GOAWAY.
    fn leave(&mut self) {
        if !self.entered {
            return;
        }
        self.member.leave();
        if let Some(noids) = self.member.noids() {
            self.deps
                .registry
                .broadcast(Some(self.member.id()), &Push::Left(noids));
        }
    }

    async fn on_here_i_am(&mut self) -> Result<Flow, SessionError> {
        if self.here {
            return Ok(Flow::Continue);
        }
        self.here = true;
        let me = self.my_noid();
        // The client enables its cursor when it sees its own APPEAR; a hidden avatar
        // gets it too (so it can answer the password prompt) but nobody else does.
        self.send(ServerMessage::Appear { noid: me });
        match &mut self.auth {
            Auth::Yes(_) => {
                self.announce_appear();
                self.after_login().await;
            }
            Auth::Asking {
                known, dialogue, ..
            } => {
                let (d, step) = PasswordDialogue::start_with_min_len(
                    *known,
                    self.deps.auto_register(),
                    self.deps.accounts.min_password_len(),
                );
                *dialogue = Some(d);
                return self.on_dialogue_step(step).await;
            }
            Auth::Refused => {}
        }
        Ok(Flow::Continue)
    }

    /// After HERE_I_AM of an authenticated avatar: the debug notice, then its mail.
    async fn after_login(&mut self) {
        if self.debug_on() {
            self.say(crate::log_redact::DEBUG_NOTICE);
        }
        self.start_delivery().await;
    }

    async fn on_dialogue_step(&mut self, step: DialogueStep) -> Result<Flow, SessionError> {
        let mut step = step;
        loop {
            step = match step {
                DialogueStep::Ask(text) => {
                    let deadline = Instant::now() + self.deps.settings.prompt_timeout;
                    self.ask(PromptFor::Password, text, Some(deadline));
                    return Ok(Flow::Continue);
                }
                DialogueStep::Check(password) => {
                    let Some(name) = self.name().cloned() else {
                        return Ok(Flow::Close);
                    };
                    let ok = match self
                        .deps
                        .accounts
                        .login(
                            name.display(),
                            password,
                            self.peer.ip(),
                            false,
                            Instant::now(),
                            SystemTime::now(),
                        )
                        .await
                    {
                        Ok(_) => true,
                        Err(AuthError::Store(e)) => {
                            warn!(error = %e, "password could not be checked");
                            false
                        }
                        Err(_) => false,
                    };
                    self.dialogue_checked(ok)
                }
                DialogueStep::Register(password) => {
                    let Some(name) = self.name().cloned() else {
                        return Ok(Flow::Close);
                    };
                    let ok = match self
                        .deps
                        .accounts
                        .add(name.display(), password, SystemTime::now())
                        .await
                    {
                        Ok(_) => {
                            info!("new avatar registered in-world");
                            true
                        }
                        Err(e) => {
                            warn!(error = %e, "in-world registration failed");
                            false
                        }
                    };
                    self.dialogue_checked(ok)
                }
                DialogueStep::Done => {
                    let Auth::Asking { name, .. } = &self.auth else {
                        return Ok(Flow::Continue);
                    };
                    let avatar = match self.deps.accounts.lookup(name.display()).await {
                        Ok(Some(a)) => a,
                        _ => return Ok(Flow::Close),
                    };
                    self.esp = Some(EspState::new(avatar.name.clone()));
                    self.auth = Auth::Yes(avatar);
                    self.enter();
                    self.announce_appear();
                    self.after_login().await;
                    return Ok(Flow::Continue);
                }
                DialogueStep::Refuse => {
                    self.say(WRONG_NAME_OR_PASSWORD);
                    return Ok(Flow::Close);
                }
                DialogueStep::Ignore => return Ok(Flow::Continue),
            };
        }
    }

    fn dialogue_checked(&mut self, ok: bool) -> DialogueStep {
        match &mut self.auth {
            Auth::Asking {
                dialogue: Some(d), ..
            } => d.checked(ok),
            _ => DialogueStep::Ignore,
        }
    }

    // ---- prompts ----

    /// Sends PROMPT_USER; the connection has one prompt at a time, so this replaces any
    /// other. `deadline` (std time) is when it lapses, if it does.
    fn ask(
        &mut self,
        for_: PromptFor,
        text: impl Into<Cow<'static, str>>,
        deadline: Option<Instant>,
    ) {
        let text = text.into();
        self.send(ServerMessage::PromptUser(Bytes::copy_from_slice(
            text.as_bytes(),
        )));
        self.prompt = Some(Prompt {
            for_,
            text,
            deadline: deadline.map(tokio::time::Instant::from_std),
        });
    }

    async fn on_prompt_reply(&mut self, text: Sensitive<Vec<u8>>) -> Result<Flow, SessionError> {
        let Some(prompt) = self.prompt.take() else {
            info!(
                len = text.len(),
                "prompt reply with no prompt pending ignored"
            );
            return Ok(Flow::Continue);
        };
        let answer = strip_prompt_echo(prompt.text.as_bytes(), text.expose()).to_vec();
        let now = Instant::now();
        match prompt.for_ {
            PromptFor::Password => {
                let step = match &mut self.auth {
                    Auth::Asking {
                        dialogue: Some(d), ..
                    } => d.answer(Password::new(answer)),
                    _ => DialogueStep::Ignore,
                };
                self.on_dialogue_step(step).await
            }
            PromptFor::MailOffer => {
                let intents = match self.esp.as_mut() {
                    Some(state) => {
                        let dir = RegistryDirectory::new(&self.deps.registry, Push::Esp);
                        state.prompt_reply(&answer, &dir, &self.deps.mail_rate, now)
                    }
                    None => Vec::new(),
                };
                self.run_intents(None, intents).await;
                Ok(Flow::Continue)
            }
            PromptFor::NextMail => {
                let shows = match self.delivery.as_mut() {
                    Some(d) => d.answer(&answer),
                    None => Vec::new(),
                };
                self.show_delivery(shows);
                Ok(Flow::Continue)
            }
        }
    }

    async fn on_prompt_timeout(&mut self) -> Result<Flow, SessionError> {
        let Some(prompt) = self.prompt.take() else {
            return Ok(Flow::Continue);
        };
        match prompt.for_ {
            PromptFor::Password => {
                info!("no answer to the password prompt");
                Ok(Flow::Close)
            }
            PromptFor::MailOffer => {
                // The pending text is dropped from memory; nothing is stored or said.
                if let Some(state) = self.esp.as_mut() {
                    state.prompt_lapsed();
                }
                info!("ESP Mail offer lapsed");
                Ok(Flow::Continue)
            }
            PromptFor::NextMail => {
                // The rest stays stored for the next login; nothing is said.
                let shows = match self.delivery.as_mut() {
                    Some(d) => d.lapsed(),
                    None => Vec::new(),
                };
                self.show_delivery(shows);
                self.pump().await?;
                Ok(Flow::Continue)
            }
        }
    }

    // ---- speech and ESP ----

    async fn on_speak(&mut self, seq: u8, text: Sensitive<Vec<u8>>) -> Result<Flow, SessionError> {
        let me = self.my_noid();
        if !self.is_visible() || self.esp.is_none() {
            // A hidden avatar (password pending) cannot chat.
            self.send(ServerMessage::EspReply {
                seq,
                noid: me,
                esp: false,
            });
            return Ok(Flow::Continue);
        }
        match classify_speak(text.expose()) {
            Speech::Chat(words) => {
                debug!(len = words.len(), fp = %words.fingerprint(), "speak");
                self.deps.registry.broadcast(
                    Some(self.member.id()),
                    &Push::Spoke {
                        noid: me,
                        text: words,
                    },
                );
                self.send(ServerMessage::EspReply {
                    seq,
                    noid: me,
                    esp: false,
                });
            }
            Speech::EspTo(typed) => {
                // A new TO: cancels any pending prompt (ESPMAIL.md §3).
                if matches!(
                    self.prompt.as_ref().map(|p| &p.for_),
                    Some(PromptFor::MailOffer)
                ) {
                    self.prompt = None;
                }
                let known = match self.deps.accounts.lookup(&typed).await {
                    Ok(found) => found.map(|a| a.name),
                    Err(e) => {
                        warn!(error = %e, "account lookup failed");
                        None
                    }
                };
                let intents = match self.esp.as_mut() {
                    Some(state) => {
                        let dir = RegistryDirectory::new(&self.deps.registry, Push::Esp);
                        state.start(&typed, known, &dir)
                    }
                    None => Vec::new(),
                };
                self.run_intents(Some(seq), intents).await;
            }
        }
        Ok(Flow::Continue)
    }

    async fn on_esp(&mut self, seq: u8, text: Sensitive<Vec<u8>>) -> Result<Flow, SessionError> {
        let me = self.my_noid();
        let intents = match (self.is_visible(), self.esp.as_mut()) {
            (true, Some(state)) => {
                debug!(len = text.len(), fp = %text.fingerprint(), "esp");
                let dir = RegistryDirectory::new(&self.deps.registry, Push::Esp);
                state.esp(text.expose(), &dir, &self.deps.mail_rate, Instant::now())
            }
            _ => vec![Intent::Reply { esp: false }],
        };
        if intents.is_empty() {
            self.send(ServerMessage::EspReply {
                seq,
                noid: me,
                esp: false,
            });
        }
        self.run_intents(Some(seq), intents).await;
        Ok(Flow::Continue)
    }

    /// Carries out the ESP dialogue's intents, in order. `seq` is the request being
    /// answered (None for a prompt reply, which takes no reply).
    async fn run_intents(&mut self, seq: Option<u8>, intents: Vec<Intent>) {
        let me = self.my_noid();
        let mut queue: VecDeque<Intent> = intents.into();
        while let Some(intent) = queue.pop_front() {
            match intent {
                Intent::Reply { esp } => {
                    if let Some(seq) = seq {
                        self.send(ServerMessage::EspReply { seq, noid: me, esp });
                    }
                }
                Intent::Say { speaker, text } => {
                    let speaker = match speaker {
                        Speaker::Me => me,
                        Speaker::Region => REGION_NOID,
                    };
                    self.send(ServerMessage::ObjectTalks {
                        speaker,
                        text: Sensitive::new(text.into_bytes()),
                    });
                }
                Intent::Echo(text) => self.send(ServerMessage::ObjectTalks { speaker: me, text }),
                Intent::SpeakToSelf(text) => self.send(ServerMessage::Speak {
                    noid: me,
                    text: Sensitive::new(text.into_bytes()),
                }),
                Intent::Prompt(text) => {
                    let deadline = Instant::now() + self.deps.settings.prompt_timeout;
                    self.ask(PromptFor::MailOffer, text, Some(deadline));
                }
                Intent::Chat(words) => {
                    self.deps.registry.broadcast(
                        Some(self.member.id()),
                        &Push::Spoke {
                            noid: me,
                            text: words,
                        },
                    );
                }
                Intent::SaveMail { to, from, text } => {
                    let len = text.len();
                    // Awaited here, outside any select: a shutdown lets it finish, and
                    // "saved" is said only after the durable commit.
                    let outcome = match self
                        .deps
                        .mail
                        .save(to.key(), from.display(), text, SystemTime::now())
                        .await
                    {
                        Ok(_) => {
                            info!(to = %to, len, "ESP Mail saved");
                            SaveOutcome::Saved
                        }
                        Err(SaveError::BoxFull { max }) => {
                            info!(to = %to, max, "ESP Mail refused: box full");
                            SaveOutcome::BoxFull
                        }
                        Err(e) => {
                            warn!(to = %to, error = %e, "ESP Mail could not be saved");
                            SaveOutcome::Failed
                        }
                    };
                    if let Some(state) = self.esp.as_mut() {
                        queue.extend(state.save_result(outcome));
                    }
                }
            }
        }
    }

    // ---- pushes from other sessions ----

    fn on_push(&mut self, push: Push) {
        match push {
            Push::Arrived(noids) => {
                if self.described {
                    let vector = with_avatar(ContentsVector::hereis(), noids);
                    self.send(ServerMessage::HereIs(vector));
                }
            }
            Push::Appeared(noid) => {
                if self.described {
                    self.send(ServerMessage::Appear { noid });
                }
            }
            Push::Left(noids) => {
                if self.described {
                    self.send(ServerMessage::GoAway { noid: noids.avatar });
                    self.send(ServerMessage::GoAway { noid: noids.head });
                }
            }
            Push::Spoke { noid, text } => {
                if self.described {
                    self.send(ServerMessage::Speak { noid, text });
                }
            }
            Push::Esp(live) => self.show_esp(live),
            Push::Notice(text) => self.say(text),
        }
    }

    /// A live ESP for this avatar (WIRE.md 4.4, speaker 0 as the original host did).
    fn show_esp(&mut self, live: LiveEsp) {
        self.say_owned(live.header().into_bytes());
        self.send(ServerMessage::Play {
            sound: esp::ESP_SOUND,
            noid: self.my_noid(),
        });
        self.send(ServerMessage::ObjectTalks {
            speaker: REGION_NOID,
            text: live.body,
        });
    }

    // ---- ESP Mail delivery at login ----

    async fn start_delivery(&mut self) {
        let Some(name) = self.name().cloned() else {
            return;
        };
        let mailbox = match self.deps.mail.open_mailbox(name.key()).await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "mailbox could not be opened; mail stays for the next login");
                return;
            }
        };
        let Some((delivery, shows)) = Delivery::start(mailbox) else {
            return;
        };
        self.delivery = Some(delivery);
        self.show_delivery(shows);
    }

    /// Queues what the delivery shows: lines, messages (their last packet tagged), the
    /// "Next ESP Mail" prompt.
    fn show_delivery(&mut self, shows: Vec<Show>) {
        for show in shows {
            match show {
                Show::Line(text) => self.say_owned(text.into_bytes()),
                Show::Mail { header, body, id } => {
                    self.say_owned(header.into_bytes());
                    let body = ServerMessage::ObjectTalks {
                        speaker: REGION_NOID,
                        text: body,
                    };
                    self.out.send_tagged(&body, id);
                }
                Show::Ask(text) => {
                    let deadline = Instant::now() + self.deps.settings.prompt_timeout;
                    self.ask(PromptFor::NextMail, text, Some(deadline));
                }
            }
        }
        self.settle_delivery();
    }

    /// Ends the mailbox lease once nothing more will be delivered and nothing waits for
    /// an ack, so a later login can open it again.
    fn settle_delivery(&mut self) {
        if self.delivery.as_ref().is_some_and(Delivery::is_done) {
            self.delivery = None;
        }
    }

    // ---- outbound ----

    fn say(&mut self, text: &'static str) {
        self.say_owned(text.as_bytes().to_vec());
    }

    fn say_owned(&mut self, text: Vec<u8>) {
        self.send(ServerMessage::ObjectTalks {
            speaker: REGION_NOID,
            text: Sensitive::new(text),
        });
    }

    /// Queues a message; [`Live::pump`] writes it when the window has room.
    fn send(&mut self, msg: ServerMessage) {
        self.out.send(&msg);
    }

    /// Writes what the window has room for; a delivered message's tagged frame now waits
    /// for its ack.
    async fn pump(&mut self) -> Result<(), SessionError> {
        let tags = self.out.pump(&mut self.framed).await?;
        if let Some(d) = self.delivery.as_mut() {
            for tag in tags {
                d.framed(tag);
            }
        }
        Ok(())
    }
}

impl Live {
    /// Ends the connection from the server's side without losing the last lines written
    /// ("saved", "You have logged in elsewhere."): closing a socket that still has unread
    /// input (the client's acks) makes the kernel send a reset, and the peer's kernel then
    /// throws away whatever it had not yet handed to the client. So: send FIN, then read
    /// and discard until the client closes too, for at most [`CLOSE_LINGER`].
    async fn close_gracefully(&mut self) {
        let stream = self.framed.get_mut();
        if stream.shutdown().await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + CLOSE_LINGER;
        let mut buf = [0u8; 512];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            if n == 0 {
                break;
            }
        }
    }
}

/// Waits for the debug switch to change; `true` when it did. Never returns without a
/// switch to watch.
async fn debug_changed(rx: &mut Option<tokio::sync::watch::Receiver<bool>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// An avatar and its head in a contents vector. Avatars stand in a row across the Plaza so
/// they do not overlap; the states are those of the reference vectors.
fn with_avatar(vector: ContentsVector, n: Noids) -> ContentsVector {
    let x = 0x10u8.wrapping_add(n.avatar.wrapping_mul(12) % 0x80);
    let avatar = AvatarState {
        common: CommonState {
            style: 0,
            x,
            y: 0x96,
            orientation: 0,
            gr_state: 0,
            container: 0,
        },
        activity: 0x81,
        action: 0x81,
        health: 0xFF,
        restrainer: 0,
        custom: [0x63, 0x2c],
    };
    let head = CommonState {
        style: 5,
        x: 0,
        y: 6,
        orientation: 0x10,
        gr_state: 0,
        container: n.avatar,
    };
    vector.avatar_with_head(n.avatar, avatar, n.head, head)
}
