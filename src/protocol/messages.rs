//! Typed client requests and server messages: parse and build, nothing else
//! (WIRE.md §3–§5, ESPMAIL.md §4).
//!
//! Pure: a descaped [`Packet`] in, a [`ClientMsg`] out; a [`ServerMessage`] in, packets out.
//! No state (which noid is whose is the session's business), no I/O. What a player typed
//! travels as [`Sensitive`] so it cannot be logged by accident; [`ServerMessage`]'s
//! `Debug` inherits that.
//!
//! The text rules live in one place, [`speech_text`]: bytes outside 0x01–0x7F become `?`,
//! text is cut to [`SPEECH_CAP`] bytes, and cut further when escaping would push the
//! packet past [`MAX_ESCAPED_PACKET`]. WIRE.md §4.3 calls the escaping rationale for 114
//! UNCONFIRMED; we do not rely on it and check the escaped size of every text packet.
//! Other UNCONFIRMED points, as read here: the IM_ALIVE and DESCRIBE payloads are
//! ignored (as bridge_v2 does); the SPEAK audience byte is kept but meant to be ignored
//! (as the original host did); I_QUIT keeps its length so the session can apply
//! bridge_v2's "fewer than 6 bytes closes" rule.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::MAX_ESCAPED_PACKET;
use super::habitat::{self, escaped_len, Header, Packet};
use crate::log_redact::Sensitive;

/// The noid of the region itself.
pub const REGION_NOID: u8 = 0;
/// How a speaker of 256 ("unassigned") and ghosts are sent.
pub const UNASSIGNED_NOID: u8 = 0xFF;
pub use crate::limits::SPEECH_CAP;
/// What replaces a byte the C64 cannot show as text.
pub const REPLACEMENT: u8 = b'?';
/// IM_ALIVE reply text after an "alive" status: the disk the client needs ('0') and the
/// text it shows only when told to swap disks (bridge_v2's bytes).
pub const IM_ALIVE_OK_TEXT: &[u8] = b"0BAD DISK";

/// Region requests (client → server, noid 0) and messages (server → client, noid 0).
pub mod region {
    /// DESCRIBE request; its reply carries the contents vector.
    pub const DESCRIBE: u8 = 1;
    /// I_QUIT request.
    pub const I_QUIT: u8 = 2;
    /// IM_ALIVE request and its reply.
    pub const IM_ALIVE: u8 = 3;
    /// FINGER_IN_QUE request.
    pub const FINGER_IN_QUE: u8 = 5;
    /// HERE_I_AM request.
    pub const HERE_I_AM: u8 = 6;
    /// PROMPT_REPLY request.
    pub const PROMPT_REPLY: u8 = 7;
    /// HEREIS: an object arrives.
    pub const HEREIS: u8 = 8;
    /// GOAWAY: an object leaves.
    pub const GOAWAY: u8 = 9;
    /// MUSIC / PLAY_$: play a sound.
    pub const PLAY: u8 = 14;
    /// OBJECT_TALKS: a balloon from a speaker noid.
    pub const OBJECT_TALKS: u8 = 15;
    /// CAUGHT_UP: answer to FINGER_IN_QUE.
    pub const CAUGHT_UP: u8 = 17;
    /// APPEAR: an avatar becomes visible.
    pub const APPEAR: u8 = 18;
    /// PROMPT_USER: ask the player for a line.
    pub const PROMPT_USER: u8 = 20;
}

/// Avatar verbs (client → server) and asyncs (server → client) on an avatar's noid.
pub mod avatar {
    /// SPEAK request.
    pub const SPEAK: u8 = 7;
    /// ESP request.
    pub const ESP: u8 = 11;
    /// SPEAK$: speech balloon over the avatar.
    pub const SPEAK_ASYNC: u8 = 14;
}

/// Object classes used in contents vectors.
pub mod class {
    /// An avatar (12-byte state).
    pub const AVATAR: u8 = 1;
    /// A ghost (common state).
    pub const GHOST: u8 = 3;
    /// A head (common state).
    pub const HEAD: u8 = 127;
}

/// Why a client packet could not be read as a request. Numbers only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A request that needs arguments came without them (an empty SPEAK made bridge_v2
    /// index out of range; here it costs the packet).
    #[error("request noid {noid} req {reqnum} needs arguments and has none")]
    MissingArgs {
        /// The packet's noid.
        noid: u8,
        /// The packet's reqnum.
        reqnum: u8,
    },
    /// A packet still split (no START or no END): reassemble it first.
    #[error("packet with ctrl {ctrl:#04x} is part of a split request")]
    Partial {
        /// The packet's ctrl byte.
        ctrl: u8,
    },
}

/// One parsed client request, with what a reply needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMsg {
    /// The client's 4-bit sequence number; replies echo it.
    pub seq: u8,
    /// The object addressed (0 = the region; for SPEAK/ESP the sender's own avatar).
    pub noid: u8,
    /// What was asked.
    pub request: ClientRequest,
}

/// What a client asked for. Text is exactly as sent (descaped), still untrusted: apply
/// [`speech_text`] before showing it to anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    /// IM_ALIVE (region req 3). Its payload (`32 30 30 00`) is ignored, as bridge_v2 does.
    ImAlive,
    /// DESCRIBE (region req 1); payload ignored.
    Describe,
    /// I_QUIT (region req 2): the client quits or crashed.
    IQuit {
        /// The error number (first byte), if any.
        code: Option<u8>,
        /// Bytes of diagnostics sent (bridge_v2 closes the session below 6).
        len: usize,
    },
    /// FINGER_IN_QUE (region req 5): answer with CAUGHT_UP.
    FingerInQue,
    /// HERE_I_AM (region req 6): broadcast APPEAR.
    HereIAm,
    /// PROMPT_REPLY (region req 7): the prompt minus its last character, then the typed
    /// text (WIRE.md §5). No reply may be sent.
    PromptReply {
        /// The whole line as sent.
        text: Sensitive<Vec<u8>>,
    },
    /// SPEAK (avatar req 7).
    Speak {
        /// `args[0]`, the audience noid (0 = everyone). We ignore it, as the original host
        /// did (WIRE.md §4.1).
        audience: u8,
        /// `args[1..]`.
        text: Sensitive<Vec<u8>>,
    },
    /// ESP (avatar req 11). The text keeps the client's `ESP:` prefix.
    Esp {
        /// `args[0]`, ignored (bridge_v2 forces esp=1).
        audience: u8,
        /// `args[1..]`, starting with `ESP:`.
        text: Sensitive<Vec<u8>>,
    },
    /// Anything else: counted and ignored.
    Unknown {
        /// The noid addressed.
        noid: u8,
        /// The request number.
        req: u8,
        /// Argument bytes (the bytes themselves are not kept).
        len: usize,
    },
}

impl ClientMsg {
    /// Reads a complete (unsplit or reassembled) descaped client packet.
    ///
    /// UNCONFIRMED reading (WIRE.md §2): a request number on a nonzero noid is taken as an
    /// avatar verb whatever the object is; the session checks that the noid is the
    /// sender's own avatar before acting on SPEAK or ESP.
    pub fn parse(packet: &Packet) -> Result<ClientMsg, MessageError> {
        let h = packet.header;
        if !h.is_start() || !h.is_end() {
            return Err(MessageError::Partial { ctrl: h.ctrl });
        }
        let args = &packet.payload;
        let text_after_audience = || -> Result<(u8, Sensitive<Vec<u8>>), MessageError> {
            let (&audience, text) = args.split_first().ok_or(MessageError::MissingArgs {
                noid: h.noid,
                reqnum: h.reqnum,
            })?;
            Ok((audience, Sensitive::new(text.to_vec())))
        };
        let request = match (h.noid, h.reqnum) {
            (REGION_NOID, region::IM_ALIVE) => ClientRequest::ImAlive,
            (REGION_NOID, region::DESCRIBE) => ClientRequest::Describe,
            (REGION_NOID, region::I_QUIT) => ClientRequest::IQuit {
                code: args.first().copied(),
                len: args.len(),
            },
            (REGION_NOID, region::FINGER_IN_QUE) => ClientRequest::FingerInQue,
            (REGION_NOID, region::HERE_I_AM) => ClientRequest::HereIAm,
            (REGION_NOID, region::PROMPT_REPLY) => ClientRequest::PromptReply {
                text: Sensitive::new(args.to_vec()),
            },
            (REGION_NOID, req) => ClientRequest::Unknown {
                noid: REGION_NOID,
                req,
                len: args.len(),
            },
            (_, avatar::SPEAK) => {
                let (audience, text) = text_after_audience()?;
                ClientRequest::Speak { audience, text }
            }
            (_, avatar::ESP) => {
                let (audience, text) = text_after_audience()?;
                ClientRequest::Esp { audience, text }
            }
            (noid, req) => ClientRequest::Unknown {
                noid,
                req,
                len: args.len(),
            },
        };
        Ok(ClientMsg {
            seq: h.client_seq(),
            noid: h.noid,
            request,
        })
    }

    /// The packet this request arrives as (for tests, fuzzing and client simulators).
    pub fn to_packet(&self) -> Packet {
        let (req, args): (u8, Vec<u8>) = match &self.request {
            ClientRequest::ImAlive => (region::IM_ALIVE, b"200\0".to_vec()),
            ClientRequest::Describe => (region::DESCRIBE, b"200\0".to_vec()),
            ClientRequest::IQuit { code, len } => {
                let mut a: Vec<u8> = code.iter().copied().collect();
                a.resize(*len.max(&a.len()), 0);
                (region::I_QUIT, a)
            }
            ClientRequest::FingerInQue => (region::FINGER_IN_QUE, Vec::new()),
            ClientRequest::HereIAm => (region::HERE_I_AM, Vec::new()),
            ClientRequest::PromptReply { text } => (region::PROMPT_REPLY, text.expose().clone()),
            ClientRequest::Speak { audience, text } => {
                (avatar::SPEAK, [&[*audience][..], text.expose()].concat())
            }
            ClientRequest::Esp { audience, text } => {
                (avatar::ESP, [&[*audience][..], text.expose()].concat())
            }
            ClientRequest::Unknown { req, len, .. } => (*req, vec![0; *len]),
        };
        Packet::new(Header::reply(self.seq, self.noid, req), args)
    }
}

/// Whether a client packet with this header carries typed answer bytes: a PROMPT_REPLY
/// (a password typed at the in-world prompt, or a Y/N) or any part of a split one. Such
/// bytes get no fingerprint in any log line.
pub fn is_prompt_reply(header: Header) -> bool {
    header.noid == REGION_NOID && header.reqnum == region::PROMPT_REPLY
}

/// Makes text safe for a balloon or prompt and makes the packet fit the C64
/// (ESPMAIL.md §4, WIRE.md §4.3): bytes outside 0x01–0x7F become `?`, the text is cut to
/// [`SPEECH_CAP`] bytes, then cut further while `prefix_escaped` (the escaped bytes
/// before the text: header and any speaker byte) plus the escaped text would pass
/// [`MAX_ESCAPED_PACKET`]. The only place these rules live.
pub fn speech_text(text: &[u8], prefix_escaped: usize) -> Vec<u8> {
    let budget = MAX_ESCAPED_PACKET.saturating_sub(prefix_escaped);
    let mut out = Vec::with_capacity(text.len().min(SPEECH_CAP));
    let mut used = 0;
    for &b in text.iter().take(SPEECH_CAP) {
        let b = if (0x01..=0x7F).contains(&b) {
            b
        } else {
            REPLACEMENT
        };
        let c = if habitat::needs_escape(b) { 2 } else { 1 };
        if used + c > budget {
            break;
        }
        used += c;
        out.push(b);
    }
    out
}

/// Region state at the head of a DESCRIBE contents vector (9 bytes, WIRE.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionState {
    /// Terrain type.
    pub terrain: u8,
    /// Lighting (default 1).
    pub lighting: u8,
    /// Depth (default 0x20).
    pub depth: u8,
    /// Region class.
    pub region_class: u8,
    /// The client's own avatar noid (FF for a ghost).
    pub who_am_i: u8,
    /// Bank balance, sent little-endian.
    pub bank: u32,
}

impl RegionState {
    /// Defaults for a plain region: terrain 0, lighting 1, depth 0x20, class 0.
    pub fn new(who_am_i: u8, bank: u32) -> RegionState {
        RegionState {
            terrain: 0,
            lighting: 1,
            depth: 0x20,
            region_class: 0,
            who_am_i,
            bank,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            self.terrain,
            self.lighting,
            self.depth,
            self.region_class,
            self.who_am_i,
        ]);
        out.extend_from_slice(&self.bank.to_le_bytes());
    }
}

/// The 6 state bytes every object has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommonState {
    /// Graphic style.
    pub style: u8,
    /// x position.
    pub x: u8,
    /// y position, or the slot number for a contained object (5 = the avatar's hand).
    pub y: u8,
    /// Orientation.
    pub orientation: u8,
    /// Graphic state (bit 0x40 keeps an arriving avatar hidden until APPEAR).
    pub gr_state: u8,
    /// The containing object's noid (0 = the region).
    pub container: u8,
}

impl CommonState {
    fn bytes(&self) -> [u8; 6] {
        [
            self.style,
            self.x,
            self.y,
            self.orientation,
            self.gr_state,
            self.container,
        ]
    }
}

/// An avatar's 12 state bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvatarState {
    /// The common 6.
    pub common: CommonState,
    /// Activity.
    pub activity: u8,
    /// Action.
    pub action: u8,
    /// Health (FF).
    pub health: u8,
    /// Restrainer.
    pub restrainer: u8,
    /// Customisation bytes.
    pub custom: [u8; 2],
}

/// A contents vector (WIRE.md §3): for DESCRIBE the 9-byte region state, then the
/// (noid, class) list ended by 00, then the state bundles in list order ended by 00.
/// HEREIS uses the same without the region state. Objects go in the order pushed; push
/// contents before their container ([`ContentsVector::avatar_with_head`] does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentsVector {
    region: Option<RegionState>,
    list: Vec<u8>,
    states: Vec<u8>,
}

impl ContentsVector {
    /// A DESCRIBE reply's vector.
    pub fn describe(region: RegionState) -> ContentsVector {
        ContentsVector {
            region: Some(region),
            list: Vec::new(),
            states: Vec::new(),
        }
    }

    /// A HEREIS vector (no region state).
    pub fn hereis() -> ContentsVector {
        ContentsVector {
            region: None,
            list: Vec::new(),
            states: Vec::new(),
        }
    }

    /// Adds any object: its noid, class and state bytes exactly as the class expects.
    pub fn object(mut self, noid: u8, class: u8, state: &[u8]) -> ContentsVector {
        self.list.extend_from_slice(&[noid, class]);
        self.states.extend_from_slice(state);
        self
    }

    /// Adds a head (class 127, common state only).
    pub fn head(self, noid: u8, state: CommonState) -> ContentsVector {
        self.object(noid, class::HEAD, &state.bytes())
    }

    /// Adds an avatar (class 1, 12 state bytes).
    pub fn avatar(self, noid: u8, s: AvatarState) -> ContentsVector {
        let mut state = [0u8; 12];
        state[..6].copy_from_slice(&s.common.bytes());
        state[6..].copy_from_slice(&[
            s.activity,
            s.action,
            s.health,
            s.restrainer,
            s.custom[0],
            s.custom[1],
        ]);
        self.object(noid, class::AVATAR, &state)
    }

    /// Adds an avatar and its head, contents first as the client expects.
    pub fn avatar_with_head(
        self,
        avatar_noid: u8,
        avatar: AvatarState,
        head_noid: u8,
        head: CommonState,
    ) -> ContentsVector {
        self.head(head_noid, head).avatar(avatar_noid, avatar)
    }

    /// The vector's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.list.len() + self.states.len() + 2);
        if let Some(r) = &self.region {
            r.write(&mut out);
        }
        out.extend_from_slice(&self.list);
        out.push(0);
        out.extend_from_slice(&self.states);
        out.push(0);
        out
    }
}

/// A message from the server to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// IM_ALIVE reply, async on the region: status (0 refused, 1 alive, 2 hatchery), then
    /// text ([`IM_ALIVE_OK_TEXT`] when alive; the error shown when refused).
    ImAliveReply {
        /// 0 refused, 1 alive, 2 hatchery.
        status: u8,
        /// Bytes after the status.
        text: Bytes,
    },
    /// The reply to DESCRIBE: ctrl `E0|seq`, noid 0, req 01, split if needed.
    DescribeReply {
        /// The DESCRIBE's client seq.
        seq: u8,
        /// The contents vector, built with [`ContentsVector::describe`].
        vector: ContentsVector,
    },
    /// HEREIS: objects arriving (a [`ContentsVector::hereis`] vector), split if needed.
    HereIs(ContentsVector),
    /// GOAWAY: the object leaves.
    GoAway {
        /// The departing noid.
        noid: u8,
    },
    /// OBJECT_TALKS: a balloon from `speaker` (0 = the region, yellow).
    ObjectTalks {
        /// The speaker's noid.
        speaker: u8,
        /// The line; cleaned and cut by [`speech_text`] when encoded.
        text: Sensitive<Vec<u8>>,
    },
    /// SPEAK$: a speech balloon over the avatar `noid`.
    Speak {
        /// The speaking avatar.
        noid: u8,
        /// The words; cleaned and cut by [`speech_text`] when encoded.
        text: Sensitive<Vec<u8>>,
    },
    /// PROMPT_USER: ask for a line. End the prompt with a space (WIRE.md §5).
    PromptUser(Bytes),
    /// CAUGHT_UP (answer to FINGER_IN_QUE): `55 fa 00 11 01`.
    CaughtUp,
    /// APPEAR: the avatar `noid` becomes visible.
    Appear {
        /// The avatar appearing.
        noid: u8,
    },
    /// PLAY_$: play `sound` at `noid` (8 = ESP received).
    Play {
        /// Sound effect number.
        sound: u8,
        /// Where.
        noid: u8,
    },
    /// The reply to SPEAK or ESP: `55 E0|seq <avatar> 00 <esp>`. esp=true keeps (or puts)
    /// the client in ESP mode; false is the only way out of it.
    EspReply {
        /// The request's client seq.
        seq: u8,
        /// The sender's avatar noid.
        noid: u8,
        /// Whether ESP mode stays on.
        esp: bool,
    },
    /// Any other reply: ctrl `E0|seq`. On noid 0 `reqnum` must be the real request number
    /// (the client dispatches on it); on objects bridge_v2 sends 0.
    Reply {
        /// The request's client seq.
        seq: u8,
        /// The object replying.
        noid: u8,
        /// Byte 3.
        reqnum: u8,
        /// The reply's args.
        args: Bytes,
    },
    /// Any other asynchronous message (e.g. WALK$): ctrl `FA`, sent whole.
    Async {
        /// The object.
        noid: u8,
        /// The async action number.
        reqnum: u8,
        /// The args.
        args: Bytes,
    },
}

impl ServerMessage {
    /// The message as one logical packet, before splitting and escaping. Text is already
    /// cleaned and cut here.
    pub fn to_packet(&self) -> Packet {
        let asy = |noid: u8, reqnum: u8, args: Vec<u8>| {
            Packet::new(Header::asynchronous(noid, reqnum), args)
        };
        // Escaped bytes before a text: header, plus a speaker byte where there is one.
        let prefix = |h: Header, extra: &[u8]| escaped_len(&h.to_bytes()) + escaped_len(extra);
        match self {
            ServerMessage::ImAliveReply { status, text } => {
                let mut args = BytesMut::with_capacity(1 + text.len());
                args.put_u8(*status);
                args.put_slice(text);
                asy(REGION_NOID, region::IM_ALIVE, args.to_vec())
            }
            ServerMessage::DescribeReply { seq, vector } => Packet::new(
                Header::reply(*seq, REGION_NOID, region::DESCRIBE),
                vector.to_bytes(),
            ),
            ServerMessage::HereIs(vector) => asy(REGION_NOID, region::HEREIS, vector.to_bytes()),
            ServerMessage::GoAway { noid } => asy(REGION_NOID, region::GOAWAY, vec![*noid]),
            ServerMessage::ObjectTalks { speaker, text } => {
                let h = Header::asynchronous(REGION_NOID, region::OBJECT_TALKS);
                let body = speech_text(text.expose(), prefix(h, &[*speaker]));
                Packet::new(h, [&[*speaker][..], &body].concat())
            }
            ServerMessage::Speak { noid, text } => {
                let h = Header::asynchronous(*noid, avatar::SPEAK_ASYNC);
                Packet::new(h, speech_text(text.expose(), prefix(h, &[])))
            }
            ServerMessage::PromptUser(text) => {
                let h = Header::asynchronous(REGION_NOID, region::PROMPT_USER);
                Packet::new(h, speech_text(text, prefix(h, &[])))
            }
            ServerMessage::CaughtUp => asy(REGION_NOID, region::CAUGHT_UP, vec![1]),
            ServerMessage::Appear { noid } => asy(REGION_NOID, region::APPEAR, vec![*noid]),
            ServerMessage::Play { sound, noid } => {
                asy(REGION_NOID, region::PLAY, vec![*sound, *noid])
            }
            ServerMessage::EspReply { seq, noid, esp } => {
                Packet::new(Header::reply(*seq, *noid, 0), vec![u8::from(*esp)])
            }
            ServerMessage::Reply {
                seq,
                noid,
                reqnum,
                args,
            } => Packet::new(Header::reply(*seq, *noid, *reqnum), args.clone()),
            ServerMessage::Async { noid, reqnum, args } => {
                Packet::new(Header::asynchronous(*noid, *reqnum), args.clone())
            }
        }
    }

    /// Whether the message may be split at 100 payload bytes as bridge_v2 splits
    /// contents vectors; other messages go whole whenever they fit.
    pub fn is_split(&self) -> bool {
        matches!(
            self,
            ServerMessage::DescribeReply { .. } | ServerMessage::HereIs(_)
        )
    }

    /// The packets to send, unescaped, each of which escapes to at most
    /// [`MAX_ESCAPED_PACKET`] bytes.
    pub fn packets(&self) -> Vec<Packet> {
        let p = self.to_packet();
        if self.is_split() {
            habitat::split(&p)
        } else {
            habitat::fit(&p)
        }
    }

    /// The escaped packets: each is the payload of one Q-Link Action frame.
    pub fn encode(&self) -> Vec<Bytes> {
        self.packets().iter().map(Packet::escaped).collect()
    }
}

/// Strips the prompt echo from a PROMPT_REPLY's text (WIRE.md §5): the C64 client sends
/// the prompt minus its last character, then the typed text — a quirk of this client, so
/// it is undone here, before the answer reaches the world. If the echo is not at the start,
/// it is looked for anywhere (as NeoHabitat does); the answer is what follows, exactly as
/// typed. Without any echo the whole text is the answer.
///
/// WIRE.md says to trim the answer. We trim where it is read as words (`world::esp::parse_answer`
/// for the Y/N prompts) but not here, because the same answer may be a password, and
/// passwords are never trimmed (see [`crate::avatar::Password::new`]): a password typed
/// at the prompt must be the same bytes as that password in the login line.
pub fn strip_prompt_echo<'a>(prompt: &[u8], reply: &'a [u8]) -> &'a [u8] {
    let echo = &prompt[..prompt.len().saturating_sub(1)];
    let rest = if echo.is_empty() {
        reply
    } else if let Some(r) = reply.strip_prefix(echo) {
        r
    } else if let Some(pos) = reply.windows(echo.len()).position(|w| w == echo) {
        &reply[pos + echo.len()..]
    } else {
        reply
    };
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn talks(speaker: u8, text: &[u8]) -> ServerMessage {
        ServerMessage::ObjectTalks {
            speaker,
            text: Sensitive::new(text.to_vec()),
        }
    }

    #[test]
    fn speech_is_cleaned_and_capped() {
        let mut text = vec![b'a'; 200];
        text[0] = 0x00;
        text[1] = 0x80;
        text[2] = 0xff;
        let p = talks(0, &text).to_packet();
        assert_eq!(p.payload.len(), 1 + SPEECH_CAP);
        assert_eq!(&p.payload[1..4], b"???");
    }

    #[test]
    fn escapes_cut_a_line_shorter() {
        // Every byte 0D: 114 bytes would escape to 228.
        let msg = talks(0x0d, &[0x0d; 114]);
        let packets = msg.packets();
        assert_eq!(packets.len(), 1);
        let esc = packets[0].escaped_len();
        assert!(
            (MAX_ESCAPED_PACKET - 1..=MAX_ESCAPED_PACKET).contains(&esc),
            "{esc}"
        );
        // Header 4 + speaker 0D escaped (2) = 6 escaped bytes; 115 left = 57 escaped 0Ds.
        assert_eq!(packets[0].payload.len(), 1 + 57);
    }

    #[test]
    fn client_requests_round_trip() {
        let msgs = [
            ClientRequest::ImAlive,
            ClientRequest::Describe,
            ClientRequest::FingerInQue,
            ClientRequest::HereIAm,
            ClientRequest::IQuit {
                code: Some(3),
                len: 6,
            },
            ClientRequest::PromptReply {
                text: Sensitive::new(b"Password:x".to_vec()),
            },
        ];
        for (i, request) in msgs.into_iter().enumerate() {
            let m = ClientMsg {
                seq: i as u8,
                noid: 0,
                request,
            };
            assert_eq!(ClientMsg::parse(&m.to_packet()), Ok(m));
        }
        let speak = ClientMsg {
            seq: 9,
            noid: 2,
            request: ClientRequest::Esp {
                audience: 0,
                text: Sensitive::new(b"ESP:hi".to_vec()),
            },
        };
        assert_eq!(ClientMsg::parse(&speak.to_packet()), Ok(speak));
    }

    #[test]
    fn empty_speak_costs_the_packet() {
        let p = Packet::new(Header::reply(1, 2, avatar::SPEAK), Vec::new());
        assert_eq!(
            ClientMsg::parse(&p),
            Err(MessageError::MissingArgs { noid: 2, reqnum: 7 })
        );
        let part = Packet::new(Header::new(true, false, 1, 2, 7), vec![0, 1]);
        assert_eq!(
            ClientMsg::parse(&part),
            Err(MessageError::Partial { ctrl: 0x61 })
        );
    }

    #[test]
    fn debug_never_shows_text() {
        let msg = talks(0, b"meet me by the fountain");
        assert!(!format!("{msg:?}").contains("fountain"));
        let req = ClientMsg::parse(&Packet::new(
            Header::reply(1, 2, avatar::SPEAK),
            b"\0meet me by the fountain".to_vec(),
        ))
        .unwrap();
        assert!(!format!("{req:?}").contains("fountain"));
    }

    #[test]
    fn prompt_echo_is_stripped() {
        let p = b"ESP Mail to Bob? (Y/N) ";
        assert_eq!(strip_prompt_echo(p, b"ESP Mail to Bob? (Y/N)Y"), b"Y");
        assert_eq!(
            strip_prompt_echo(p, b"ESP Mail to Bob? (Y/N) yes "),
            b" yes "
        );
        assert_eq!(strip_prompt_echo(p, b"ESP Mail to Bob? (Y/N)"), b"");
        assert_eq!(strip_prompt_echo(p, b"junkESP Mail to Bob? (Y/N)n"), b"n");
        assert_eq!(strip_prompt_echo(p, b" y "), b" y ");
        // A password answer keeps its spaces.
        assert_eq!(
            strip_prompt_echo(b"Password: ", b"Password:  two words "),
            b"  two words "
        );
        assert_eq!(strip_prompt_echo(b"", b"abc"), b"abc");
        assert_eq!(
            strip_prompt_echo(b"Password: ", b"Password:secret"),
            b"secret"
        );
    }
}
