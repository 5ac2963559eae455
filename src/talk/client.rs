//! The protocol side of `espmail talk`: one Habilink connection (login line, Q-Link
//! frames, Habitat packets) turned into [`Event`]s, and requests sent the way a C64 sends
//! them. The integration tests and the load generator drive the world through it.
//!
//! [`Client`] logs in as a Habilink client would, sends requests (split into START..END
//! packets when the escaped request would not fit one frame, as the C64 splits them),
//! acks the server's frames (unless told not to, to play a client that drops the line),
//! and reassembles server packets into events. It is generic over its transport: a
//! [`TcpStream`] by default, or any byte stream (a TLS stream) handed to
//! [`Client::handshake`].
//!
//! The Q-Link rules (sequence numbers, acks, NAK and Ping answers, duplicate dropping,
//! go-back-1 resends) are the server's own [`Link`], run from the other end: the client
//! only decides which of the frames the link wants sent actually go out, which is how it
//! plays the C64 (acks only when Pinged) or a dropped line (sends nothing unasked).
//!
//! May touch: its one connection. Nothing here prints or reads the terminal.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::log_redact::Sensitive;
use crate::protocol::frame::{Command, Frame};
use crate::protocol::habitat::{self, Packet, MAX_REASSEMBLED_ARGS};
use crate::protocol::link::{Link, LinkError};
use crate::protocol::messages::{ClientMsg, ClientRequest};
use crate::protocol::qlink::QLinkCodec;

/// How long one wait for the server may take by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// A byte stream the client can speak over: a [`TcpStream`], a TLS stream, an in-memory
/// duplex in a test.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Why the client stopped. Each message is whole: none repeats its cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection failed (reset, broken pipe, ...).
    #[error("the connection failed: {}", io_words(.0))]
    Io(std::io::Error),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// Nothing expected arrived in time.
    #[error("no answer from the server within {} s", .0.as_secs_f32())]
    Timeout(Duration),
    /// IM_ALIVE said no; the server's words.
    #[error("the server refused the login: {0}")]
    Refused(String),
    /// The request is larger than the server puts back together (its args, unescaped).
    #[error("that request is {len} bytes; the server takes at most {max}")]
    TooLong {
        /// Argument bytes offered.
        len: usize,
        /// The most the server reassembles.
        max: usize,
    },
    /// A raw frame payload that cannot go in one Action (too long, or an unescaped `0D`).
    #[error("cannot send that frame: {0}")]
    Link(LinkError),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> ClientError {
        ClientError::Io(e)
    }
}

impl From<LinkError> for ClientError {
    fn from(e: LinkError) -> ClientError {
        ClientError::Link(e)
    }
}

/// An I/O error in plain words, without Rust's "(os error N)" suffix.
pub fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let words = match e.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset by the other side",
        K::ConnectionAborted => "connection aborted",
        K::BrokenPipe => "the other side is gone",
        K::TimedOut => "timed out",
        K::NotFound => "not found",
        K::AddrNotAvailable => "address not available",
        K::PermissionDenied => "permission denied",
        K::UnexpectedEof => "the other side closed the connection",
        _ => "",
    };
    if !words.is_empty() {
        return words.to_string();
    }
    // Other errors: the OS text, lower-cased at the start, without the code.
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// What the server said, one packet (reassembled when split) at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// IM_ALIVE: status (1 alive, 0 refused) and text.
    ImAlive {
        /// 0 refused, 1 alive.
        status: u8,
        /// The text after the status.
        text: Vec<u8>,
    },
    /// The reply to DESCRIBE: the contents vector.
    Describe {
        /// `Who_am_I`: this client's avatar noid (FF: a ghost).
        me: u8,
        /// The whole vector.
        vector: Vec<u8>,
    },
    /// HEREIS: someone arrived (the vector).
    HereIs(Vec<u8>),
    /// GOAWAY.
    GoAway(u8),
    /// APPEAR.
    Appear(u8),
    /// CAUGHT_UP.
    CaughtUp,
    /// OBJECT_TALKS: a balloon line.
    Talk {
        /// 0 = the region.
        speaker: u8,
        /// The words.
        text: Vec<u8>,
    },
    /// SPEAK$: an avatar speaks.
    Speak {
        /// The speaking avatar.
        noid: u8,
        /// The words.
        text: Vec<u8>,
    },
    /// PROMPT_USER.
    Prompt(Vec<u8>),
    /// PLAY_$.
    Play {
        /// Sound number.
        sound: u8,
        /// Where.
        noid: u8,
    },
    /// The reply to this client's object request (SPEAK/ESP: `args[0]` = esp).
    Reply {
        /// The object.
        noid: u8,
        /// Byte 3.
        reqnum: u8,
        /// The args.
        args: Vec<u8>,
    },
    /// Anything else.
    Other {
        /// The object.
        noid: u8,
        /// The message number.
        reqnum: u8,
        /// The args.
        args: Vec<u8>,
    },
}

impl Event {
    /// The text of a balloon line or speech, if this is one.
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Event::Talk { text, .. } | Event::Speak { text, .. } | Event::Prompt(text) => {
                Some(text)
            }
            _ => None,
        }
    }
}

/// A protocol client on one connection; `S` is the transport (TCP unless a caller hands
/// [`Client::handshake`] another stream).
pub struct Client<S = TcpStream> {
    framed: Framed<S, QLinkCodec>,
    /// The Q-Link state, seen from the client's end.
    link: Link,
    /// Frames the link asked for that are not yet handed to the socket. Kept here so a
    /// read cancelled by `select!` (the load generator does that) loses no ack.
    outbox: VecDeque<Frame>,
    /// The Habitat request seq (4 bits).
    req_seq: u8,
    /// Answer Pings and ack Actions. Off plays a client whose line dropped.
    pub auto_ack: bool,
    /// With `auto_ack`, also ack each Action as it arrives. Off plays the C64, which has
    /// no ack timer and acks only when the server Pings (WIRE.md 1.3.3).
    pub ack_actions: bool,
    events: VecDeque<Event>,
    split: Option<(u8, u8, BytesMut)>,
    /// This client's avatar noid, once described.
    pub me: u8,
    /// How long each wait may take.
    pub wait: Duration,
    /// Server Actions received so far.
    pub actions_received: u64,
}

impl Client<TcpStream> {
    /// Connects over TCP and sends the Habilink login line (with a password when given),
    /// then the empty line the preamble throws away.
    pub async fn connect(
        addr: &str,
        name: &str,
        password: Option<&str>,
    ) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        Client::handshake(stream, name, password).await
    }

    /// Connects and goes all the way in: IM_ALIVE, DESCRIBE, FINGER_IN_QUE when others
    /// are present, HERE_I_AM, until the avatar's own APPEAR. Events after it stay queued.
    pub async fn enter(
        addr: &str,
        name: &str,
        password: Option<&str>,
    ) -> Result<Client, ClientError> {
        let c = Client::connect(addr, name, password).await?;
        c.into_plaza().await
    }

    /// [`Client::enter`] as a trusted front end logs a player in: the login line names
    /// the avatar and carries the front end's secret (`[auth] trusted_secret_file`), no
    /// password. For the load generator and tests of trusted mode.
    pub async fn enter_via_front_end(
        addr: &str,
        name: &str,
        secret: &str,
    ) -> Result<Client, ClientError> {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(&front_end_login_line(name, secret))
            .await?;
        stream.flush().await?;
        Client::from_stream(stream).into_plaza().await
    }
}

/// The login line a trusted front end sends for `name`, with its secret.
pub fn front_end_login_line(name: &str, secret: &str) -> Vec<u8> {
    let line = serde_json::json!({
        "to": "bridge", "op": "LOGIN", "name": name, "front_end_secret": secret
    });
    terminated(&line)
}

/// The line's JSON and the extra line the preamble throws away.
fn terminated(line: &serde_json::Value) -> Vec<u8> {
    let mut bytes = line.to_string().into_bytes();
    bytes.extend_from_slice(b"\r\r");
    bytes
}

/// The Habilink login line (WIRE.md 1.3.1) and the extra line the preamble throws away.
/// `password` is this server's addition; without it, the server asks in-world.
pub fn login_line(name: &str, password: Option<&str>) -> Vec<u8> {
    let mut line = serde_json::json!({"to": "bridge", "op": "LOGIN", "name": name});
    if let Some(p) = password {
        line["password"] = serde_json::Value::from(p);
    }
    terminated(&line)
}

impl<S: Transport> Client<S> {
    /// Sends the login line on an open stream (TCP, TLS, ...) and returns the client.
    pub async fn handshake(
        mut stream: S,
        name: &str,
        password: Option<&str>,
    ) -> Result<Client<S>, ClientError> {
        stream.write_all(&login_line(name, password)).await?;
        stream.flush().await?;
        Ok(Client::from_stream(stream))
    }

    /// IM_ALIVE, DESCRIBE, HERE_I_AM: into the region, after the login line (on any
    /// stream: TCP, TLS, a tunnel).
    pub async fn into_plaza(mut self) -> Result<Client<S>, ClientError> {
        self.im_alive().await?;
        self.describe().await?;
        self.here_i_am().await?;
        Ok(self)
    }

    /// A client on a connection whose preamble was already sent.
    pub fn from_stream(stream: S) -> Client<S> {
        Client {
            framed: Framed::new(stream, QLinkCodec::new()),
            link: Link::new(),
            outbox: VecDeque::new(),
            req_seq: 0,
            auto_ack: true,
            ack_actions: true,
            events: VecDeque::new(),
            split: None,
            me: 0xFF,
            wait: DEFAULT_WAIT,
            actions_received: 0,
        }
    }

    /// Sends IM_ALIVE and waits for its answer; a refusal is an error carrying the text.
    pub async fn im_alive(&mut self) -> Result<(), ClientError> {
        self.request(0, ClientRequest::ImAlive).await?;
        let ev = self.take(|e| matches!(e, Event::ImAlive { .. })).await?;
        match ev {
            Event::ImAlive { status: 1, .. } => Ok(()),
            Event::ImAlive { text, .. } => {
                Err(ClientError::Refused(String::from_utf8_lossy(&text).into()))
            }
            _ => Err(ClientError::Closed),
        }
    }

    /// Sends DESCRIBE, waits for the contents vector and learns its own noid; returns the
    /// vector.
    pub async fn describe(&mut self) -> Result<Vec<u8>, ClientError> {
        self.request(0, ClientRequest::Describe).await?;
        let ev = self.take(|e| matches!(e, Event::Describe { .. })).await?;
        let Event::Describe { me, vector } = ev else {
            return Err(ClientError::Closed);
        };
        self.me = me;
        // Two or more avatars present: the client asks to be caught up (WIRE.md §3).
        if avatars_in(&vector) >= 2 {
            self.request(0, ClientRequest::FingerInQue).await?;
            self.take(|e| matches!(e, Event::CaughtUp)).await?;
        }
        Ok(vector)
    }

    /// Sends HERE_I_AM and waits for its own APPEAR.
    pub async fn here_i_am(&mut self) -> Result<(), ClientError> {
        self.request(0, ClientRequest::HereIAm).await?;
        let me = self.me;
        self.take(|e| *e == Event::Appear(me)).await?;
        Ok(())
    }

    /// SPEAK on its own avatar; returns the reply's esp flag.
    pub async fn speak(&mut self, text: &[u8]) -> Result<bool, ClientError> {
        self.send_speak(text).await?;
        self.object_reply().await
    }

    /// ESP (the `ESP:` prefix is added, as the C64 sends it); returns the reply's esp flag.
    pub async fn esp(&mut self, text: &[u8]) -> Result<bool, ClientError> {
        self.send_esp(text).await?;
        self.object_reply().await
    }

    /// Sends SPEAK on its own avatar without waiting: the reply comes as an
    /// [`Event::Reply`] (the terminal client reads it among the other events).
    pub async fn send_speak(&mut self, text: &[u8]) -> Result<(), ClientError> {
        let req = ClientRequest::Speak {
            audience: 0,
            text: Sensitive::new(text.to_vec()),
        };
        self.request(self.me, req).await
    }

    /// Sends ESP (adding the `ESP:` prefix) without waiting for the reply.
    pub async fn send_esp(&mut self, text: &[u8]) -> Result<(), ClientError> {
        let req = ClientRequest::Esp {
            audience: 0,
            text: Sensitive::new([b"ESP:".as_slice(), text].concat()),
        };
        self.request(self.me, req).await
    }

    /// Waits for the reply to this client's own SPEAK or ESP: its esp flag.
    async fn object_reply(&mut self) -> Result<bool, ClientError> {
        let me = self.me;
        let ev = self
            .take(|e| matches!(e, Event::Reply { noid, .. } if *noid == me))
            .await?;
        match ev {
            Event::Reply { args, .. } => Ok(args.first().copied().unwrap_or(0) != 0),
            _ => Err(ClientError::Closed),
        }
    }

    /// Answers `prompt` as the C64 does: the prompt minus its last character, then the
    /// typed text. No reply comes.
    pub async fn answer(&mut self, prompt: &[u8], typed: &[u8]) -> Result<(), ClientError> {
        let mut t = prompt
            .get(..prompt.len().saturating_sub(1))
            .unwrap_or_default()
            .to_vec();
        t.extend_from_slice(typed);
        self.request(
            0,
            ClientRequest::PromptReply {
                text: Sensitive::new(t),
            },
        )
        .await
    }

    /// Sends I_QUIT.
    pub async fn quit(&mut self) -> Result<(), ClientError> {
        self.request(
            0,
            ClientRequest::IQuit {
                code: Some(0),
                len: 6,
            },
        )
        .await
    }

    /// Sends one request as a Habitat packet in Q-Link Actions. A request whose escaped
    /// packet would not fit one frame goes as START..END packets, as the C64 splits it
    /// (WIRE.md §2); the server puts SPEAK, ESP and PROMPT_REPLY back together, up to
    /// [`MAX_REASSEMBLED_ARGS`] bytes, so a larger request is refused here, unsent.
    pub async fn request(&mut self, noid: u8, request: ClientRequest) -> Result<(), ClientError> {
        let msg = ClientMsg {
            seq: self.req_seq,
            noid,
            request,
        };
        let packet = msg.to_packet();
        let packets = habitat::fit(&packet);
        if packets.len() > 1 && packet.payload.len() > MAX_REASSEMBLED_ARGS {
            return Err(ClientError::TooLong {
                len: packet.payload.len(),
                max: MAX_REASSEMBLED_ARGS,
            });
        }
        self.req_seq = (self.req_seq + 1) & 0x0F;
        for p in packets {
            self.send_action(p.escaped()).await?;
        }
        Ok(())
    }

    /// Sends one Action frame with this payload (already Habitat-escaped); it is kept for
    /// resending until the server acks it. Fails, sending nothing, if the payload does not
    /// fit one frame or holds a raw `0D`.
    pub async fn send_action(&mut self, payload: Bytes) -> Result<(), ClientError> {
        if !self.link.can_send() {
            // The server's acks ride on frames this client has not read yet (a test that
            // floods without reading). The server would wait; a client that does not read
            // cannot, so it stops keeping its oldest frame for resending and goes on, as
            // this client did before it kept any (see `Link::give_up_oldest`).
            self.link.give_up_oldest();
        }
        let out = self.link.send_action(payload, Instant::now())?;
        self.outbox.push_back(out.frame);
        self.flush().await
    }

    /// Acks everything received so far with a bare `24`.
    pub async fn ack(&mut self) -> Result<(), ClientError> {
        self.outbox.push_back(self.link.ack());
        self.flush().await
    }

    /// What the client's end of the link has coped with (resends, duplicates dropped...).
    pub fn link_stats(&self) -> crate::protocol::link::LinkStats {
        self.link.stats()
    }

    /// Writes out every queued frame. Cancel-safe: a frame leaves the queue only once the
    /// codec has it, and the codec's buffer is flushed by the next write if not by this one.
    async fn flush(&mut self) -> Result<(), ClientError> {
        while let Some(frame) = self.outbox.front() {
            self.framed.feed(frame.clone()).await?;
            self.outbox.pop_front();
        }
        SinkExt::<Frame>::flush(&mut self.framed).await?;
        Ok(())
    }

    /// The next event, waiting at most [`Client::wait`].
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        let wait = self.wait;
        tokio::time::timeout(wait, self.next_event_unbounded())
            .await
            .map_err(|_| ClientError::Timeout(wait))?
    }

    /// The next event, however long it takes (the terminal client).
    pub async fn next_event_unbounded(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            self.read_frame().await?;
        }
    }

    /// Takes the first event that matches, leaving every other event queued in order.
    /// Bounded by [`Client::wait`]. Used for replies, which may overtake lines the caller
    /// still wants to read.
    pub async fn take(
        &mut self,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Event, ClientError> {
        let wait = self.wait;
        tokio::time::timeout(wait, async {
            let mut scanned = 0;
            loop {
                if let Some(i) = self.events.iter().skip(scanned).position(&mut pred) {
                    if let Some(e) = self.events.remove(scanned + i) {
                        return Ok(e);
                    }
                }
                scanned = self.events.len();
                self.read_frame().await?;
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(wait))?
    }

    /// Skips events until one matches; returns it. Bounded by [`Client::wait`].
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Event, ClientError> {
        let wait = self.wait;
        tokio::time::timeout(wait, async {
            loop {
                let e = self.next_event_unbounded().await?;
                if pred(&e) {
                    return Ok(e);
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(wait))?
    }

    /// Like [`Client::wait_for`], but returns every event seen up to and including the match.
    pub async fn collect_until(
        &mut self,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Vec<Event>, ClientError> {
        let mut seen = Vec::new();
        self.wait_for(|e| {
            seen.push(e.clone());
            pred(e)
        })
        .await?;
        Ok(seen)
    }

    /// Waits for a balloon line (or speech or prompt) whose text contains `needle`.
    pub async fn wait_text(&mut self, needle: &str) -> Result<Event, ClientError> {
        let n = needle.as_bytes().to_vec();
        self.wait_for(|e| e.text().is_some_and(|t| contains(t, &n)))
            .await
    }

    /// Waits until the server closes the connection (bounded).
    pub async fn wait_closed(&mut self) -> Result<(), ClientError> {
        let wait = self.wait;
        tokio::time::timeout(wait, async {
            loop {
                match self.read_frame().await {
                    Ok(()) => continue,
                    Err(ClientError::Closed) | Err(ClientError::Io(_)) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(wait))?
    }

    /// The transport, to send raw bytes (the recorded C64 handshake).
    pub fn stream(&mut self) -> &mut S {
        self.framed.get_mut()
    }

    /// Reads one frame, lets the link handle it, sends what this client's mode allows of
    /// the link's answer, and queues the event a packet makes.
    ///
    /// The client never Pings on a timer ([`Link::poll`]): every Ping carries an ack, and
    /// the C64 and dropped-line modes must not ack on their own. The server answers every
    /// request, so its frames bring the acks; a lost frame is resent by the link's
    /// duplicate-ack and NAK rules.
    async fn read_frame(&mut self) -> Result<(), ClientError> {
        // Anything a cancelled read left queued goes first.
        self.flush().await?;
        let item = match self.framed.next().await {
            Some(Ok(item)) => item,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ClientError::Closed),
        };
        let cmd = item.as_ref().ok().map(|f| f.cmd);
        if cmd == Some(Command::ACTION) {
            self.actions_received += 1;
        }
        let out = self.link.receive(item, Instant::now());
        self.queue_answer(cmd, out.send);
        if let Some(packet) = out.packet {
            self.on_packet(packet.expose());
        }
        self.flush().await
    }

    /// Queues the frames the link wants sent for one inbound item (`cmd` is `None` for a
    /// frame the codec refused), as far as this client's mode sends anything.
    fn queue_answer(&mut self, cmd: Option<Command>, mut send: Vec<Frame>) {
        if !self.auto_ack {
            // A dropped line: no acks, no NAKs, no resends. Requests the caller sends
            // still carry RECV, as they would on the real line.
            return;
        }
        if cmd == Some(Command::ACTION) {
            if self.ack_actions {
                // Whatever the link sends already carries our RECV; otherwise a bare ack.
                if send.is_empty() {
                    send.push(self.link.ack());
                }
            } else {
                // The C64 acks only when Pinged: it ignores a repeated Action silently
                // where the link would ack it again. Resends still go (they are ours).
                send.retain(|f| f.cmd != Command::RESET_ACK);
            }
        }
        self.outbox.extend(send);
    }

    fn on_packet(&mut self, escaped: &[u8]) {
        let Ok(p) = Packet::parse_escaped(escaped) else {
            return;
        };
        let (ctrl, noid, reqnum) = (p.header.ctrl, p.header.noid, p.header.reqnum);
        let start = ctrl & 0x20 != 0;
        let end = ctrl & 0x80 != 0;
        let args = if start && end {
            self.split = None;
            p.payload.to_vec()
        } else if start {
            self.split = Some((noid, reqnum, BytesMut::from(&p.payload[..])));
            return;
        } else {
            let Some((_, _, mut buf)) = self.split.take() else {
                return;
            };
            buf.extend_from_slice(&p.payload);
            if !end {
                self.split = Some((noid, reqnum, buf));
                return;
            }
            buf.to_vec()
        };
        let first = args.first().copied().unwrap_or(0);
        let rest = args.get(1..).unwrap_or_default().to_vec();
        let ev = if noid == 0 {
            match reqnum {
                1 => Event::Describe {
                    me: args.get(4).copied().unwrap_or(0xFF),
                    vector: args,
                },
                3 => Event::ImAlive {
                    status: first,
                    text: rest,
                },
                8 => Event::HereIs(args),
                9 => Event::GoAway(first),
                14 => Event::Play {
                    sound: first,
                    noid: args.get(1).copied().unwrap_or(0),
                },
                15 => Event::Talk {
                    speaker: first,
                    text: rest,
                },
                17 => Event::CaughtUp,
                18 => Event::Appear(first),
                20 => Event::Prompt(args),
                _ => Event::Other { noid, reqnum, args },
            }
        } else if ctrl & 0x5F == 0x5A {
            match reqnum {
                14 => Event::Speak { noid, text: args },
                _ => Event::Other { noid, reqnum, args },
            }
        } else {
            Event::Reply { noid, reqnum, args }
        };
        self.events.push_back(ev);
    }
}

/// Avatars (class 1) listed in a DESCRIBE contents vector.
pub fn avatars_in(vector: &[u8]) -> usize {
    avatar_noids(vector.get(9..).unwrap_or_default()).len()
}

/// The avatar (class 1) noids in an object list `(noid, class)* 00`: a HEREIS vector, or
/// a DESCRIBE vector after its 9-byte region state.
pub fn avatar_noids(list: &[u8]) -> Vec<u8> {
    list.chunks(2)
        .take_while(|pair| pair.first().is_some_and(|n| *n != 0))
        .filter(|pair| pair.get(1) == Some(&1))
        .filter_map(|pair| pair.first().copied())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    //! The client's link behaviour against a scripted server on 127.0.0.1: what each ack
    //! mode sends back, duplicates dropped, NAKs answered with a resend.
    use super::*;
    use espmail_test_macros::bounded;
    use tokio::net::TcpListener;

    /// A client connected to a scripted server end that speaks raw frames.
    async fn pair() -> (Client, Framed<TcpStream, QLinkCodec>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stream, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut client = Client::from_stream(stream.unwrap());
        client.wait = Duration::from_secs(5);
        let server = Framed::new(accepted.unwrap().0, QLinkCodec::new());
        (client, server)
    }

    /// A server Action carrying a one-packet balloon line from region speaker `n`.
    fn talk(send: u8, recv: u8, n: u8) -> Frame {
        Frame {
            send,
            recv,
            cmd: Command::ACTION,
            payload: Bytes::from(vec![0x55, 0xfa, 0x00, 0x0f, n, b'h', b'i']),
        }
    }

    fn said(n: u8) -> Event {
        Event::Talk {
            speaker: n,
            text: b"hi".to_vec(),
        }
    }

    /// The next frame the client sent, bounded.
    async fn heard(server: &mut Framed<TcpStream, QLinkCodec>) -> Frame {
        tokio::time::timeout(Duration::from_secs(5), server.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap()
    }

    async fn say(server: &mut Framed<TcpStream, QLinkCodec>, frames: &[Frame]) {
        for f in frames {
            server.feed(f.clone()).await.unwrap();
        }
        SinkExt::<Frame>::flush(server).await.unwrap();
    }

    #[bounded]
    #[tokio::test]
    async fn a_request_too_long_for_one_frame_goes_split_over_any_transport() {
        use crate::protocol::frame::MAX_ESCAPED_PACKET;
        use crate::protocol::habitat::Reassembler;
        let (near, far) = tokio::io::duplex(4096);
        let mut c = Client::from_stream(near);
        c.me = 2;
        let mut server = Framed::new(far, QLinkCodec::new());
        let text = vec![b']'; 114]; // 228 bytes once escaped
        c.send_esp(&text).await.unwrap();
        let mut reasm = Reassembler::new();
        let mut frames = 0;
        let whole = loop {
            let f = tokio::time::timeout(Duration::from_secs(5), server.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(f.payload.len() <= MAX_ESCAPED_PACKET);
            frames += 1;
            if let Some(p) = reasm
                .push(Packet::parse_escaped(&f.payload).unwrap())
                .unwrap()
            {
                break p;
            }
        };
        assert!(frames >= 2, "split, not cut");
        let msg = ClientMsg::parse(&whole).unwrap();
        assert_eq!(msg.noid, 2);
        assert_eq!(
            msg.request,
            ClientRequest::Esp {
                audience: 0,
                text: Sensitive::new([b"ESP:".as_slice(), &text].concat()),
            }
        );
        // More than the server reassembles: refused here, nothing sent.
        assert!(matches!(
            c.send_speak(&[b'x'; 250]).await,
            Err(ClientError::TooLong { len: 251, .. })
        ));
    }

    #[bounded]
    #[tokio::test]
    async fn acking_client_acks_each_action_and_drops_repeats() {
        let (mut c, mut s) = pair().await;
        let ping = Frame::bare(Command::PING, 0x12, 0x10);
        say(&mut s, &[talk(0x11, 0x10, 1), talk(0x11, 0x10, 1), ping]).await;
        say(&mut s, &[talk(0x12, 0x10, 2)]).await;
        assert_eq!(c.next_event().await.unwrap(), said(1));
        assert_eq!(
            c.next_event().await.unwrap(),
            said(2),
            "the repeat is dropped"
        );
        assert_eq!(c.actions_received, 3);
        assert_eq!(c.link_stats().duplicates, 1);
        // One ack per Action (the repeat acked again, as it may be our ack that was
        // lost), and the Ping answered.
        for recv in [0x11, 0x11, 0x11, 0x12] {
            assert_eq!(
                heard(&mut s).await,
                Frame::bare(Command::RESET_ACK, 0x10, recv)
            );
        }
    }

    #[bounded]
    #[tokio::test]
    async fn c64_mode_acks_only_when_pinged() {
        let (mut c, mut s) = pair().await;
        c.ack_actions = false;
        let ping = Frame::bare(Command::PING, 0x12, 0x10);
        say(&mut s, &[talk(0x11, 0x10, 1), talk(0x11, 0x10, 1), ping]).await;
        say(&mut s, &[talk(0x12, 0x10, 2)]).await;
        assert_eq!(c.next_event().await.unwrap(), said(1));
        assert_eq!(c.next_event().await.unwrap(), said(2));
        c.ack().await.unwrap();
        // Only the Ping's answer, then the explicit ack: nothing for the Actions.
        assert_eq!(
            heard(&mut s).await,
            Frame::bare(Command::RESET_ACK, 0x10, 0x11)
        );
        assert_eq!(
            heard(&mut s).await,
            Frame::bare(Command::RESET_ACK, 0x10, 0x12)
        );
    }

    #[bounded]
    #[tokio::test]
    async fn a_dropped_line_answers_nothing_but_its_own_frames_carry_recv() {
        let (mut c, mut s) = pair().await;
        c.auto_ack = false;
        let ping = Frame::bare(Command::PING, 0x11, 0x10);
        let nak = Frame::bare(Command::NAK, 0x11, 0x10);
        say(
            &mut s,
            &[talk(0x11, 0x10, 1), ping, nak, talk(0x12, 0x10, 2)],
        )
        .await;
        assert_eq!(c.next_event().await.unwrap(), said(1));
        assert_eq!(c.next_event().await.unwrap(), said(2));
        c.send_action(Bytes::from_static(b"\x55\x01"))
            .await
            .unwrap();
        let f = heard(&mut s).await;
        assert_eq!((f.cmd, f.send, f.recv), (Command::ACTION, 0x11, 0x12));
    }

    #[bounded]
    #[tokio::test]
    async fn a_nak_gets_the_unacked_action_again() {
        let (mut c, mut s) = pair().await;
        let payload = Bytes::from_static(b"\x55\x01\x02");
        c.send_action(payload.clone()).await.unwrap();
        let first = heard(&mut s).await;
        assert_eq!((first.send, first.recv), (0x11, 0x10));
        say(
            &mut s,
            &[Frame::bare(Command::NAK, 0x10, 0x10), talk(0x11, 0x11, 3)],
        )
        .await;
        assert_eq!(c.next_event().await.unwrap(), said(3));
        assert_eq!(heard(&mut s).await, first, "go-back-1 resend");
        assert_eq!(c.link_stats().resends, 1);
        // Acked by the Action's RECV: a second NAK has nothing to resend.
        say(
            &mut s,
            &[Frame::bare(Command::NAK, 0x11, 0x10), talk(0x12, 0x11, 4)],
        )
        .await;
        assert_eq!(c.next_event().await.unwrap(), said(4));
        let acks: Vec<Frame> = vec![heard(&mut s).await, heard(&mut s).await];
        assert!(acks.iter().all(|f| f.cmd == Command::RESET_ACK));
        assert_eq!(c.link_stats().resends, 1);
    }

    #[bounded]
    #[tokio::test]
    async fn a_client_that_never_reads_keeps_sending_past_the_window() {
        let (mut c, mut s) = pair().await;
        let n = crate::protocol::link::WINDOW + 10;
        for _ in 0..n {
            c.send_action(Bytes::from_static(b"\x55\x01"))
                .await
                .unwrap();
        }
        let mut expect = crate::protocol::frame::seq::FIRST;
        for _ in 0..n {
            expect = crate::protocol::frame::seq::inc(expect);
            let f = heard(&mut s).await;
            assert_eq!((f.cmd, f.send), (Command::ACTION, expect));
        }
        assert!(matches!(
            c.send_action(Bytes::from_static(b"\x55\x0d")).await,
            Err(ClientError::Link(LinkError::FrameEnd { at: 1 }))
        ));
    }
}
