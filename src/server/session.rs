//! One connection, in one task: it reads, dispatches, and owns the one select loop and the
//! one prompt timer.
//!
//! The session is generic over its byte stream (plain TCP, or the TLS stream of the TLS
//! listener once its handshake is done: the same code), and is told its peer's address
//! and whether its stream is encrypted (a player in the clear from another machine is
//! told so at login). Bytes come in through the login line
//! (`login::read_preamble`), then [`QLinkCodec`] frames through the link, then Habitat
//! packets through the [`Reassembler`] into typed [`ClientMsg`]s; each request goes to the
//! part whose job it is, and their answers go back as [`ServerMessage`]s:
//!
//! - `login`: how the login line is believed, and the in-world password dialogue;
//! - `plaza`: presence, drawing the region, and pushes from other sessions;
//! - `esp`: speech, ESP intents and ESP Mail saves, the line rate;
//! - `delivery`: waiting mail, its lease, and its deletion once acked;
//! - `outbound`: the packet queue, the link window, mail tags and pacing;
//! - and two parts of the session itself, in `session/`: `prompts` (the one prompt
//!   clock: who asked, the lapse, late answers) and `speech` (chat, `TO:NAME`, ESP and
//!   the intents the ESP dialogue returns).
//!
//! What a request *means* is decided by `world` (accounts, presence, the ESP dialogue) and
//! `espmail` (the vault). The session keeps the connection's phase and all its timing:
//! the idle timeout, the refusal's linger, the link's timer, and the prompt clock: the one
//! pending prompt (password, ESP Mail offer or "Next ESP Mail") lapses here and nowhere
//! else, and the part that asked is told.
//!
//! The Q-Link/Habitat client lives in `protocol` and in the server's mapping onto it (the
//! codec chosen here, the messages its parts build); `world` and `espmail` never see its
//! frames or packets, so a second client protocol would add its own codec and mapping
//! here, beside this one, without touching them.
//!
//! A bad frame or packet costs only itself (a NAK or nothing, as WIRE.md §1.3.4 says) and a
//! counter (`bad_input`): not a log line each, and past `[server] max_bad_frames` the
//! connection. Once a login is refused, frames are read only for the ack that lets the
//! connection close. Message text never reaches a log (only lengths and fingerprints
//! keyed for this session; none for prompt answers).
//!
//! May touch: its own stream; the registry, accounts and vault through `Deps`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::bad_input::{BadInput, BadKind, Verdict};
use super::caps::SeatBeforeLogin;
use super::delivery::{Delivery, Show};
use super::esp::Lines;
use super::login::{self, Auth, LoginError, Step};
use super::outbound::{Outbound, SendError};
use super::plaza::Plaza;
pub use super::plaza::Push;
use super::{sleep_opt, Deps, Peer};
use crate::log_redact::{self, Dir, Fingerprinter, Sensitive, Wipe};
use crate::protocol::frame::{BadFrame, Frame};
use crate::protocol::habitat::{self, Packet, Reassembler};
use crate::protocol::messages::{
    self, ClientMsg, ClientRequest, ServerMessage, IM_ALIVE_OK_TEXT, REGION_NOID,
};
use crate::protocol::qlink::QLinkCodec;
use crate::world::esp::EspState;
use prompts::{Prompt, PromptFor};

mod prompts;
mod speech;

/// How long a connection the server ends waits for the client to close its side (see
/// [`Live::close_gracefully`]); bounded so a silent client cannot hold a shutdown.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Said to avatars in the world when the server shuts down (ESPMAIL.md has no words for
/// this; the connection closes right after it).
pub const SHUTTING_DOWN: &str = "The server is shutting down. Goodbye.";

/// After a refusal, how long to wait for the client to ack the IM_ALIVE before closing
/// (ESPMAIL.md §1: "once the reply is flushed (and acked, or after 2 s)").
const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Said at login, after the debug notice, to a player connected in the clear from an
/// address other than loopback (ESPMAIL.md §6), unless `[tls] plain_notice = false`.
pub const PLAIN_NOTICE: &str = "Notice: this connection is not encrypted.";

/// The IM_ALIVE refusal when every seat for a login at the in-world password prompt is
/// taken (ESPMAIL.md has no words for this; ours fit the C64's error line).
pub const TOO_MANY_LOGINS: &str = "Too many logins at once; try again in a minute.";

/// The real C64's flow-control hello, an Action payload that is not a Habitat packet
/// (WIRE.md 1.3.5).
const SG: &[u8] = b"SG";

/// Speech on a noid that is not the sender's own (or before DESCRIBE), as a reason.
struct NotOwned(u8);

impl std::fmt::Display for NotOwned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "speech on noid {} before DESCRIBE or not its own",
            self.0
        )
    }
}

/// Why a session ended other than by the peer hanging up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The login line could not be read.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// Writing to the client failed, or the client stopped acking.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// How far the connection has come: one value instead of a flag per step. Who it is
/// ([`Auth`]) and what the client has drawn ([`Plaza`]) are kept beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing heard on the link yet: the first packet, whatever it is, gets the IM_ALIVE
    /// answer and nothing else (WIRE.md §3, as bridge_v2).
    Greeting,
    /// Refused at IM_ALIVE: nothing more is acted on; the connection closes once the client
    /// acked the refusal, or at `until`.
    Refusing {
        /// When to close even without the ack.
        until: tokio::time::Instant,
    },
    /// IM_ALIVE answered: the client describes the region and says HERE_I_AM.
    Alive,
    /// HERE_I_AM seen: the client shows balloon lines and prompts.
    Here,
}

/// One connection's task.
pub struct Session<S> {
    stream: S,
    peer: Peer,
    /// Bytes already read from the stream (after a PROXY header): the preamble's first.
    read_ahead: Bytes,
    /// The stream is TLS (the TLS listener's, after its handshake).
    encrypted: bool,
    deps: Arc<Deps>,
    shutdown: CancellationToken,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// A session for an accepted connection from `peer` (as the listener or a listed
    /// front end reported it).
    pub fn new(stream: S, peer: Peer, deps: Arc<Deps>, shutdown: CancellationToken) -> Session<S> {
        Session {
            stream,
            peer,
            read_ahead: Bytes::new(),
            encrypted: false,
            deps,
            shutdown,
        }
    }

    /// The session of a connection whose stream is encrypted (TLS): its player is never
    /// told the connection is not.
    pub fn encrypted(mut self) -> Session<S> {
        self.encrypted = true;
        self
    }

    /// Whether this player is told [`PLAIN_NOTICE`] at login: in the clear, from an
    /// address other than loopback, and the notice is on. The address is the player's
    /// ([`Peer::addr`]: behind a listed front end, the one its PROXY header gave), so a
    /// relay on this machine does not hide a player elsewhere. Loopback means the player's
    /// own machine is the server's (or a tunnel or bridge runs there), so nothing crosses
    /// a network.
    fn tells_plain(&self) -> bool {
        !self.encrypted
            && self.deps.settings.plain_notice
            && !self.peer.addr.ip().to_canonical().is_loopback()
    }

    /// The session of a connection whose first bytes were already read (those after a
    /// front end's PROXY header).
    pub fn with_read_ahead(mut self, bytes: Bytes) -> Session<S> {
        self.read_ahead = bytes;
        self
    }

    /// Run to the end and log how it ended; errors end only this session. `places` (the
    /// connection's places under `max_connections` and its address's cap) are given back
    /// before the last log line.
    pub async fn run_logged<P: Send>(self, places: P) {
        info!("connected");
        let result = self.run().await;
        drop(places);
        match result {
            Ok(()) => info!("disconnected"),
            Err(e) => info!(error = %e, "session ended"),
        }
    }

    async fn run(mut self) -> Result<(), SessionError> {
        let login_timeout = self.deps.settings.login_timeout;
        // Logging in (login line, then the first packet that IM_ALIVE answers) has this
        // long in all.
        let login_deadline = tokio::time::Instant::now() + login_timeout;
        let Some((login, leftover)) = Box::pin(login::read_preamble(
            &mut self.stream,
            &self.read_ahead,
            login_timeout,
            &self.shutdown,
        ))
        .await?
        else {
            return Ok(());
        };
        tracing::Span::current().record("avatar", login.name.as_str());
        // The name may be logged (operators need it); the password only as present or not.
        debug!(
            password = login.password.is_some(),
            leftover = leftover.len(),
            "login line read"
        );
        let auth = Box::pin(login::authenticate(&self.deps, &self.peer, login)).await;
        let plain_notice = self.tells_plain();
        // The link starts with whatever the client sent after its login line.
        let mut parts = FramedParts::new::<Frame>(self.stream, QLinkCodec::new());
        parts.read_buf = BytesMut::from(&leftover[..]);
        let mut live = Live::new(Framed::from_parts(parts), self.peer.addr, self.deps, auth);
        live.login_deadline = login_deadline;
        live.plain_notice = plain_notice;
        let result = live.run(&self.shutdown).await;
        live.bad.finish();
        live.plaza.leave();
        // Nothing the linger below does needs the seat: its noids go back now.
        live.plaza.give_up_seat();
        live.seat_before_login = None;
        if result.is_ok() {
            // The mailbox lease goes first: a login that replaced this one must not wait
            // for the linger below to open it.
            live.delivery = None;
            Box::pin(live.close_gracefully()).await;
        }
        result
    }
}

/// The session after the login line.
struct Live<S> {
    peer: SocketAddr,
    deps: Arc<Deps>,
    frames: Framed<S, QLinkCodec>,
    reasm: Reassembler,
    out: Outbound,
    phase: Phase,
    auth: Auth,
    plaza: Plaza,
    /// The ESP dialogue, once authenticated.
    esp: Option<EspState>,
    lines: Lines,
    /// Waiting mail being delivered (holds the mailbox lease).
    delivery: Option<Delivery>,
    prompt: Option<Prompt>,
    /// The text of the last prompt that lapsed, until another prompt is asked: a late
    /// answer echoes it, as any answer does.
    lapsed_text: Option<Cow<'static, str>>,
    idle_deadline: tokio::time::Instant,
    debug_rx: Option<tokio::sync::watch::Receiver<bool>>,
    /// This session's fingerprint key: the same text shows the same within this session
    /// only, so a guess sent from another session can never be matched against it.
    fp: Arc<Fingerprinter>,
    /// Bad frames and packets so far.
    bad: BadInput,
    /// Until IM_ALIVE is answered: when logging in has taken too long.
    login_deadline: tokio::time::Instant,
    /// Held while the connection has a seat but is not authenticated (the in-world
    /// password dialogue): one of the few such seats there may be.
    seat_before_login: Option<SeatBeforeLogin>,
    /// While seated before authentication and no password prompt is asked yet: when the
    /// seat is given up (the prompt clock governs once a prompt is asked).
    seat_lapses_at: Option<tokio::time::Instant>,
    /// Tell the player at login that the connection is not encrypted.
    plain_notice: bool,
}

/// How handling one event ended.
enum Flow {
    Continue,
    Close,
}

impl<S> Live<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(frames: Framed<S, QLinkCodec>, peer: SocketAddr, deps: Arc<Deps>, auth: Auth) -> Self {
        let settings = &deps.settings;
        let fp = Arc::new(Fingerprinter::random());
        let esp = match &auth {
            Auth::Yes(a) => Some(EspState::new(a.name.clone())),
            _ => None,
        };
        Live {
            peer,
            frames,
            reasm: Reassembler::new(),
            out: Outbound::new(settings.out_bytes_per_sec, Arc::clone(&fp)),
            phase: Phase::Greeting,
            auth,
            plaza: Plaza::new(&deps.registry, settings.outbox_len),
            esp,
            lines: Lines::default(),
            delivery: None,
            prompt: None,
            lapsed_text: None,
            idle_deadline: tokio::time::Instant::now() + settings.idle_timeout,
            debug_rx: deps.debug.clone(),
            fp,
            bad: BadInput::new(settings.max_bad_frames),
            login_deadline: tokio::time::Instant::now() + settings.login_timeout,
            seat_before_login: None,
            seat_lapses_at: None,
            plain_notice: false,
            deps,
        }
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        loop {
            // Taken each time round: the seat (and its kick) may have come since.
            let kicked = self.plaza.kicked();
            let login_at = (self.phase == Phase::Greeting).then_some(self.login_deadline);
            let closing_at = match self.phase {
                Phase::Refusing { until } => {
                    if self.out.link().window_len() == 0 || tokio::time::Instant::now() >= until {
                        return Ok(());
                    }
                    Some(until)
                }
                _ => None,
            };
            let link_at = self.out.next_deadline().map(tokio::time::Instant::from_std);
            let prompt_at = self.prompt.as_ref().map(|p| p.lapses_at);
            let flow = tokio::select! {
                _ = shutdown.cancelled() => {
                    // Only a client past HERE_I_AM shows balloon lines.
                    if self.phase == Phase::Here {
                        self.say(SHUTTING_DOWN);
                        self.pump().await?;
                    }
                    info!("closed for shutdown");
                    return Ok(());
                }
                _ = kicked.cancelled() => {
                    if let Some(text) = self.plaza.kick_reason().and_then(|r| r.text()) {
                        self.say(text);
                        self.pump().await?;
                    }
                    info!(reason = ?self.plaza.kick_reason(), "closed by the world");
                    return Ok(());
                }
                _ = tokio::time::sleep_until(self.idle_deadline) => {
                    info!("idle timeout");
                    return Ok(());
                }
                _ = sleep_opt(closing_at) => return Ok(()),
                _ = sleep_opt(login_at) => {
                    info!("no first packet before the login timeout");
                    return Ok(());
                }
                _ = sleep_opt(self.seat_lapses_at) => {
                    info!("no HERE_I_AM before the login timeout; closing an unauthenticated seat");
                    return Ok(());
                }
                _ = sleep_opt(link_at) => {
                    self.out.poll(&mut self.frames).await?;
                    Flow::Continue
                }
                _ = sleep_opt(prompt_at) => self.on_prompt_lapsed().await?,
                changed = debug_changed(&mut self.debug_rx) => {
                    if changed && self.debug_on() && self.is_visible() {
                        self.say(log_redact::DEBUG_NOTICE);
                        self.pump().await?;
                    }
                    Flow::Continue
                }
                Some(push) = self.plaza.next_push() => {
                    for msg in self.plaza.draw(push) {
                        self.send(msg);
                    }
                    self.pump().await?;
                    Flow::Continue
                }
                item = self.frames.next() => match item {
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
        matches!(self.auth, Auth::Yes(_)) && self.plaza.entered()
    }

    // ---- inbound ----

    /// How an inbound frame's payload may show at debug: under this session's key, except
    /// a prompt reply's (a password typed in-world, a Y/N), which shows by length only.
    fn fingerprinter_for(&self, payload: &[u8]) -> Option<&Fingerprinter> {
        match habitat::peek_header(payload) {
            Some(h) if messages::is_prompt_reply(h) => None,
            _ => Some(&self.fp),
        }
    }

    async fn on_frame(&mut self, item: Result<Frame, BadFrame>) -> Result<Flow, SessionError> {
        let now = Instant::now();
        if let Phase::Refusing { .. } = self.phase {
            // Only what closing needs: the ack of the refusal. Nothing is answered, logged
            // or acted on, and nothing moves the close (it is at a fixed time).
            if let Ok(frame) = item {
                self.out.receive(Ok(frame), now);
            }
            return Ok(Flow::Continue);
        }
        let mut flow = Flow::Continue;
        match &item {
            Ok(frame) => {
                let fp = self.fingerprinter_for(&frame.payload);
                debug!(pkt = %log_redact::packet(Dir::In, &frame.cmd, (frame.send, frame.recv), &frame.payload, fp), "frame");
                self.idle_deadline = tokio::time::Instant::now() + self.deps.settings.idle_timeout;
            }
            // The real C64's deliberate probe: answered with the NAK it asks for, not bad.
            Err(BadFrame::Crc { probe: true, .. }) => debug!("handshake probe"),
            Err(bad) => flow = self.bad(BadKind::Frame, bad),
        }
        let out = self.out.receive(item, now);
        for frame in out.send {
            self.out.write(&mut self.frames, frame).await?;
        }
        if let (Some(range), Some(d)) = (out.dropped, self.delivery.as_mut()) {
            d.dropped(range);
        }
        if let (Some(_), Some(d)) = (out.acked, self.delivery.as_mut()) {
            let link = self.out.link();
            d.acked(|frame| link.is_acked(frame)).await;
        }
        self.settle_delivery();
        if let Some(packet) = out.packet {
            if let Flow::Close = self.on_packet(packet.expose()).await? {
                flow = Flow::Close;
            }
        }
        self.pump().await?;
        Ok(flow)
    }

    /// Counts one bad input (ESPMAIL.md §5: a counter, not a log line); the session closes
    /// once it has sent its limit.
    fn bad(&mut self, kind: BadKind, why: &dyn std::fmt::Display) -> Flow {
        match self.bad.record(kind, why, Instant::now()) {
            Verdict::Continue => Flow::Continue,
            Verdict::Close => Flow::Close,
        }
    }

    async fn on_packet(&mut self, escaped: &Bytes) -> Result<Flow, SessionError> {
        let packet = match Packet::parse_escaped(escaped) {
            Ok(p) => p,
            // The real C64's flow-control hello (WIRE.md 1.3.5): an Action to ack, no packet.
            Err(_) if escaped[..] == *SG => {
                debug!("flow-control hello");
                return Ok(Flow::Continue);
            }
            Err(e) => return Ok(self.bad(BadKind::Packet, &e)),
        };
        let h = packet.header;
        let fp = (!messages::is_prompt_reply(h)).then_some(&*self.fp);
        trace!(hab = %log_redact::habitat(Dir::In, (h.ctrl, h.noid, h.reqnum), &packet.payload, fp), "packet");
        let whole = match self.reasm.push(packet) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Flow::Continue),
            Err(e) => return Ok(self.bad(BadKind::Split, &e)),
        };
        let parsed = ClientMsg::parse(&whole);
        // The request's text now lives in `msg` (wiped when dropped); this copy goes now.
        let mut payload = whole.payload;
        payload.wipe();
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => return Ok(self.bad(BadKind::Request, &e)),
        };
        match self.phase {
            Phase::Greeting => {
                self.answer_alive();
                Ok(Flow::Continue)
            }
            // Not reached: frames on a refused session stop in `on_frame`.
            Phase::Refusing { .. } => Ok(Flow::Continue),
            Phase::Alive | Phase::Here => self.on_request(msg).await,
        }
    }

    /// The answer to the first packet: IM_ALIVE, refused (and closing) or alive. Only an
    /// alive connection takes a seat: an authenticated one always, one that will be asked
    /// its password in-world only while fewer than `max_unauthenticated_seats` others are.
    fn answer_alive(&mut self) {
        let refusal = match &self.auth {
            Auth::Refused(refusal) => Some(refusal.text()),
            Auth::Yes(_) => None,
            Auth::Asking(_) => match self.deps.guards.seats_before_login.take() {
                Some(allowance) => {
                    // Why a seat before the password: the real C64 sends none in its
                    // login line and can only be asked in the world, which it shows only
                    // with its own avatar drawn. Such seats are few (this allowance),
                    // count under the address's cap, and lapse: HERE_I_AM must come
                    // within the login timeout (the C64 loads from disk for up to two
                    // minutes before it), then each prompt has the prompt timeout, and
                    // the dialogue ends after a few wrong answers.
                    self.seat_before_login = Some(allowance);
                    self.seat_lapses_at =
                        Some(tokio::time::Instant::now() + self.deps.settings.login_timeout);
                    None
                }
                None => {
                    info!("every seat for a login at the password prompt is taken; refused");
                    Some(TOO_MANY_LOGINS.to_string())
                }
            },
        };
        if let Some(text) = refusal {
            self.send(ServerMessage::ImAliveReply {
                status: 0,
                text: Bytes::from(text.into_bytes()),
            });
            self.phase = Phase::Refusing {
                until: tokio::time::Instant::now() + REFUSAL_LINGER,
            };
        } else {
            self.plaza.take_seat();
            self.send(ServerMessage::ImAliveReply {
                status: 1,
                text: Bytes::from_static(IM_ALIVE_OK_TEXT),
            });
            self.phase = Phase::Alive;
        }
    }

    async fn on_request(&mut self, msg: ClientMsg) -> Result<Flow, SessionError> {
        let seq = msg.seq;
        match msg.request {
            ClientRequest::ImAlive => {
                self.send(ServerMessage::ImAliveReply {
                    status: 1,
                    text: Bytes::from_static(IM_ALIVE_OK_TEXT),
                });
            }
            ClientRequest::Describe => {
                let reply = self.plaza.describe(seq);
                self.send(reply);
                if let Auth::Yes(avatar) = &self.auth {
                    self.plaza.enter(&avatar.name);
                }
            }
            ClientRequest::FingerInQue => self.send(ServerMessage::CaughtUp),
            ClientRequest::HereIAm => return self.on_here_i_am().await,
            ClientRequest::IQuit { code, len } => {
                info!(?code, len, "client quit");
                return Ok(Flow::Close);
            }
            ClientRequest::PromptReply { text } => return self.on_prompt_reply(text).await,
            ClientRequest::Speak { text, .. } => {
                if !self.plaza.owns(msg.noid) {
                    return Ok(self.bad(BadKind::NotOwned, &NotOwned(msg.noid)));
                }
                if self.line_allowed(seq, false) {
                    self.on_speak(seq, text).await;
                }
            }
            ClientRequest::Esp { text, .. } => {
                if !self.plaza.owns(msg.noid) {
                    return Ok(self.bad(BadKind::NotOwned, &NotOwned(msg.noid)));
                }
                if self.line_allowed(seq, true) {
                    self.on_esp(seq, text).await;
                }
            }
            ClientRequest::Unknown { noid, req, len } => {
                debug!(noid, req, len, "unknown request ignored");
                if noid != REGION_NOID && self.plaza.owns(noid) {
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

    async fn on_here_i_am(&mut self) -> Result<Flow, SessionError> {
        if self.phase == Phase::Here {
            return Ok(Flow::Continue);
        }
        self.phase = Phase::Here;
        // The client enables its cursor when it sees its own APPEAR; a hidden avatar
        // gets it too (so it can answer the password prompt) but nobody else does.
        self.send(ServerMessage::Appear {
            noid: self.plaza.my_noid(),
        });
        match &mut self.auth {
            Auth::Yes(_) => {
                self.plaza.announce_appear();
                self.after_login().await;
                Ok(Flow::Continue)
            }
            Auth::Asking(asking) => {
                let step = asking.start(&self.deps, self.peer).await;
                self.on_login_step(step).await
            }
            Auth::Refused(_) => Ok(Flow::Continue),
        }
    }

    /// Carries out the password dialogue's next step.
    async fn on_login_step(&mut self, step: Step) -> Result<Flow, SessionError> {
        match step {
            Step::Ask(text) => self.ask(PromptFor::Password, text),
            Step::Authenticated(avatar) => {
                // A seat like any other from now on.
                self.seat_before_login = None;
                self.seat_lapses_at = None;
                self.esp = Some(EspState::new(avatar.name.clone()));
                self.plaza.enter(&avatar.name);
                self.auth = Auth::Yes(avatar);
                self.plaza.announce_appear();
                self.after_login().await;
            }
            Step::Refused(refusal) => {
                self.say_owned(refusal.text().into_bytes());
                return Ok(Flow::Close);
            }
            Step::Failed => return Ok(Flow::Close),
            Step::Nothing => {}
        }
        Ok(Flow::Continue)
    }

    /// After HERE_I_AM of an authenticated avatar: the debug notice, the plain-connection
    /// notice, then its mail (ESPMAIL.md §2 and §6 give this order).
    async fn after_login(&mut self) {
        if self.debug_on() {
            self.say(log_redact::DEBUG_NOTICE);
        }
        if self.plain_notice {
            self.say(PLAIN_NOTICE);
        }
        self.start_delivery().await;
    }

    // ---- ESP Mail delivery at login ----

    async fn start_delivery(&mut self) {
        let Some(name) = self.auth.name().cloned() else {
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
                Show::Ask(text) => self.ask(PromptFor::NextMail, text),
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
        let tags = self.out.pump(&mut self.frames).await?;
        if let Some(d) = self.delivery.as_mut() {
            for tag in tags {
                d.framed(tag);
            }
        }
        Ok(())
    }

    /// Ends the connection from the server's side without losing the last lines written
    /// ("saved", "You have logged in elsewhere."): closing a socket that still has unread
    /// input (the client's acks) makes the kernel send a reset, and the peer's kernel then
    /// throws away whatever it had not yet handed to the client. So: send FIN, then read
    /// and discard until the client closes too, for at most [`CLOSE_LINGER`].
    async fn close_gracefully(&mut self) {
        let stream = self.frames.get_mut();
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

/// The whole session over an in-memory stream instead of a socket: the code a TLS
/// listener will run too.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use espmail_test_macros::bounded;

    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use futures_util::SinkExt;
    use tokio::io::DuplexStream;

    use super::*;
    use crate::protocol::frame::Command;
    use crate::protocol::habitat::Packet;
    use crate::protocol::link::Link;
    use crate::protocol::messages::region;
    use crate::server::testing;

    const FRONT_END: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    /// Everything a session needs; logins from [`FRONT_END`] are trusted.
    fn deps(dir: &std::path::Path) -> Arc<Deps> {
        testing::deps(dir, testing::trusted(vec![FRONT_END]))
    }

    /// Runs a session on one end of a pipe, as if `peer` had connected; returns the other
    /// end, and the session's task.
    fn connect(deps: &Arc<Deps>, peer: IpAddr) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64);
        let session = Session::new(
            server,
            Peer::direct(SocketAddr::new(peer, 40_000)),
            Arc::clone(deps),
            CancellationToken::new(),
        );
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        (client, tokio::spawn(session.run_logged(permit)))
    }

    /// The client's end: its own link over the real codec.
    struct Client {
        io: Framed<DuplexStream, QLinkCodec>,
        link: Link,
    }

    impl Client {
        async fn login(mut stream: DuplexStream, name: &str) -> Client {
            let line = format!(
                r#"{{"to":"bridge","op":"LOGIN","name":"{name}","front_end_secret":"{}"}}"#,
                testing::FRONT_END_SECRET
            );
            stream
                .write_all(format!("{line}\r\r").as_bytes())
                .await
                .unwrap();
            Client {
                io: Framed::new(stream, QLinkCodec::new()),
                link: Link::new(),
            }
        }

        async fn request(&mut self, request: ClientRequest) {
            let msg = ClientMsg {
                seq: 0,
                noid: REGION_NOID,
                request,
            };
            let out = self
                .link
                .send_action(msg.to_packet().escaped(), Instant::now())
                .unwrap();
            self.io.send(out.frame).await.unwrap();
        }

        /// The next Habitat packet from the server, and the frame that carried it.
        async fn packet(&mut self) -> (Packet, Frame) {
            loop {
                let frame = self.io.next().await.unwrap().unwrap().unwrap();
                let out = self.link.receive(Ok(frame.clone()), Instant::now());
                if let Some(p) = out.packet {
                    return (Packet::parse_escaped(p.expose()).unwrap(), frame);
                }
            }
        }

        /// Reads until the server closes its side; false if a frame came instead.
        async fn closed(&mut self) -> bool {
            self.io.next().await.is_none()
        }
    }

    #[bounded]
    #[tokio::test]
    async fn a_trusted_login_is_answered_alive_over_any_stream() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let dir = tempfile::tempdir().unwrap();
            let deps = deps(dir.path());
            let (stream, task) = connect(&deps, FRONT_END);
            let mut client = Client::login(stream, "Bob").await;
            client.request(ClientRequest::ImAlive).await;
            let (reply, _) = client.packet().await;
            assert_eq!(reply.header.reqnum, region::IM_ALIVE);
            assert_eq!(reply.payload.first(), Some(&1), "alive");
            // The client hangs up; the session ends.
            drop(client);
            task.await.unwrap();
        })
        .await
        .expect("bounded");
    }

    #[bounded]
    #[tokio::test]
    async fn a_refused_login_is_told_and_closed_once_the_client_acked() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let dir = tempfile::tempdir().unwrap();
            let deps = deps(dir.path());
            let untrusted = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
            let (stream, task) = connect(&deps, untrusted);
            let mut client = Client::login(stream, "Bob").await;
            client.request(ClientRequest::ImAlive).await;
            let (reply, frame) = client.packet().await;
            assert_eq!(reply.header.reqnum, region::IM_ALIVE);
            assert_eq!(reply.payload.first(), Some(&0), "refused");
            assert_eq!(
                &reply.payload[1..],
                crate::world::login::WRONG_NAME_OR_PASSWORD.as_bytes()
            );
            // Anything more is ignored; the ack of the refusal closes the connection.
            client.request(ClientRequest::Describe).await;
            let ack = Frame::bare(Command::RESET_ACK, client.link.out_seq(), frame.send);
            client.io.send(ack).await.unwrap();
            assert!(client.closed().await, "closed without another word");
            drop(client);
            task.await.unwrap();
            assert_eq!(deps.registry.count(), 0, "a refused login never enters");
        })
        .await
        .expect("bounded");
    }
}
