//! Habitat packets: escaping (WIRE.md §1.5), the 4-byte header (§2), splitting of long
//! server messages, START..END reassembly of client continuations, and the legacy QLR
//! `AB len … BA` deframer (§1.2).
//!
//! Pure: bytes in, bytes or values out. No sockets, no clock, no logging. Packet payloads
//! may carry what a player typed, so [`Packet`]'s `Debug` shows lengths only, and the
//! [`Reassembler`] zeroes the parts and partial requests it held once it is done with them.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::MAX_ESCAPED_PACKET;
use crate::log_redact::Wipe;
use zeroize::Zeroize;

/// First byte of every Habitat packet (`MICROCOSM_ID`, `U`).
pub const MICROCOSM_ID: u8 = 0x55;
/// The escape prefix: `5D x` stands for `x ^ 0x55`.
pub const ESCAPE: u8 = 0x5D;
/// What an escaped byte is XOR-ed with.
pub const ESCAPE_XOR: u8 = 0x55;
/// ctrl bit: last packet of a message.
pub const END: u8 = 0x80;
/// ctrl bit: always set.
pub const MIDDLE: u8 = 0x40;
/// ctrl bit: first packet of a message.
pub const START: u8 = 0x20;
/// ctrl bits holding the sequence number.
pub const SEQ_MASK: u8 = 0x1F;
/// The client's sequence numbers are a 4-bit ring (0–15); bridge_v2 reads `ctrl & 0x0F`.
pub const CLIENT_SEQ_MASK: u8 = 0x0F;
/// ctrl of an asynchronous ("phantom") server message: all three flags and seq 0x1A.
pub const ASYNC_CTRL: u8 = 0xFA;
/// `55 ctrl noid reqnum`.
pub const HEADER_LEN: usize = 4;
/// Payload bytes per split chunk (bridge_v2's `MAX_PACKET_SIZE`).
pub const MAX_CHUNK_PAYLOAD: usize = 100;
/// The most argument bytes a reassembled client request may hold. The C64 sends at most
/// 100 argument bytes of chat (§4.1) and a prompt reply is a line of the same 100-byte
/// buffer; twice that leaves room for escaping differences and still bounds memory.
pub const MAX_REASSEMBLED_ARGS: usize = 200;

/// Why a Habitat packet (or a sequence of them) was refused. Numbers only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Fewer than the 4 header bytes.
    #[error("Habitat packet too short ({len} bytes, a header has {HEADER_LEN})")]
    TooShort {
        /// Bytes in the packet.
        len: usize,
    },
    /// Did not start with `55`.
    #[error("Habitat packet starts with {first:#04x}, not 0x55")]
    NotHabitat {
        /// The byte found instead.
        first: u8,
    },
    /// A continuation (no START bit) arrived with no message under way.
    #[error("continuation packet (ctrl {ctrl:#04x}) without a START packet")]
    Orphan {
        /// The packet's ctrl byte.
        ctrl: u8,
    },
    /// A continuation named another object or request than its START packet.
    #[error("continuation for noid {noid} req {reqnum} does not match the message under way")]
    Mismatch {
        /// The continuation's noid.
        noid: u8,
        /// The continuation's reqnum.
        reqnum: u8,
    },
    /// The reassembled request would exceed [`MAX_REASSEMBLED_ARGS`].
    #[error("split request of {len}+ argument bytes is over the {max}-byte limit")]
    TooLarge {
        /// Bytes gathered so far, including this packet's.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A split request of a kind the server does not reassemble (only SPEAK, ESP and
    /// PROMPT_REPLY are).
    #[error("split request noid {noid} req {reqnum} is not one the server reassembles")]
    NotReassembled {
        /// The packet's noid.
        noid: u8,
        /// The packet's reqnum.
        reqnum: u8,
    },
}

/// Whether the server escapes `b`: exactly `0D` and `5D`, as bridge_v2 (WIRE.md §1.5).
#[inline]
pub fn needs_escape(b: u8) -> bool {
    b == 0x0D || b == ESCAPE
}

/// Bytes `raw` takes once escaped.
pub fn escaped_len(raw: &[u8]) -> usize {
    raw.len() + raw.iter().filter(|&&b| needs_escape(b)).count()
}

/// Appends `raw`, escaped, to `dst`: each `0D` or `5D` becomes `5D, b ^ 0x55`; nothing
/// else changes (00 and 8D go raw, as the vectors require).
pub fn escape_into(raw: &[u8], dst: &mut BytesMut) {
    dst.reserve(escaped_len(raw));
    let mut rest = raw;
    // Copy runs of plain bytes at once: escapes are rare in real traffic.
    while let Some(i) = rest.iter().position(|&b| needs_escape(b)) {
        dst.put_slice(&rest[..i]);
        dst.put_u8(ESCAPE);
        dst.put_u8(rest[i] ^ ESCAPE_XOR);
        rest = &rest[i + 1..];
    }
    dst.put_slice(rest);
}

/// `raw`, escaped.
pub fn escape(raw: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(escaped_len(raw));
    escape_into(raw, &mut out);
    out.to_vec()
}

/// Undoes escaping from offset `skip` on (bridge_v2's `Descape(data, skip)`): any
/// `5D x` becomes `x ^ 0x55`, whatever x is (the C64 also escapes `8D`); a `5D` at the
/// very end is dropped. A `skip` past the end gives an empty result.
pub fn descape(escaped: &[u8], skip: usize) -> Vec<u8> {
    let src = escaped.get(skip..).unwrap_or(&[]);
    let mut out = Vec::with_capacity(src.len());
    let mut iter = src.iter();
    while let Some(&b) = iter.next() {
        if b == ESCAPE {
            if let Some(&x) = iter.next() {
                out.push(x ^ ESCAPE_XOR);
            }
        } else {
            out.push(b);
        }
    }
    out
}

/// The header of the Habitat packet an Action carries, read from its escaped payload
/// without descaping the rest: the same header [`Packet::parse_escaped`] would find, or
/// `None` where it would fail. For deciding how a frame may be logged before its payload
/// is parsed (a prompt reply's bytes get no fingerprint).
pub fn peek_header(escaped: &[u8]) -> Option<Header> {
    let mut raw = [0u8; HEADER_LEN];
    let mut n = 0;
    let mut iter = escaped.iter();
    while n < HEADER_LEN {
        let b = *iter.next()?;
        raw[n] = if b == ESCAPE {
            *iter.next()? ^ ESCAPE_XOR
        } else {
            b
        };
        n += 1;
    }
    (raw[0] == MICROCOSM_ID).then_some(Header {
        ctrl: raw[1],
        noid: raw[2],
        reqnum: raw[3],
    })
}

/// The header of a Habitat packet after the `55`: `ctrl noid reqnum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Flags (END, MIDDLE, START) and the sequence number.
    pub ctrl: u8,
    /// The object addressed; 0 is the region.
    pub noid: u8,
    /// Request or message number, meaning depends on `noid`.
    pub reqnum: u8,
}

impl Header {
    /// bridge_v2's `MakeHabitatPacketHeader`: ctrl = `seq | MIDDLE`, plus START and END as
    /// asked. `seq` is OR-ed in unmasked, so `new(true, true, 0xFA, …)` gives the async
    /// ctrl `FA`.
    pub fn new(start: bool, end: bool, seq: u8, noid: u8, reqnum: u8) -> Header {
        let mut ctrl = seq | MIDDLE;
        if start {
            ctrl |= START;
        }
        if end {
            ctrl |= END;
        }
        Header { ctrl, noid, reqnum }
    }

    /// A reply to the client request whose sequence number is `seq`: ctrl `E0 | seq`.
    pub fn reply(seq: u8, noid: u8, reqnum: u8) -> Header {
        Header::new(true, true, seq & CLIENT_SEQ_MASK, noid, reqnum)
    }

    /// An asynchronous server message: ctrl `FA`.
    pub fn asynchronous(noid: u8, reqnum: u8) -> Header {
        Header {
            ctrl: ASYNC_CTRL,
            noid,
            reqnum,
        }
    }

    /// Whether this is the first packet of a message.
    pub fn is_start(self) -> bool {
        self.ctrl & START != 0
    }

    /// Whether this is the last packet of a message.
    pub fn is_end(self) -> bool {
        self.ctrl & END != 0
    }

    /// The 5-bit sequence field.
    pub fn seq(self) -> u8 {
        self.ctrl & SEQ_MASK
    }

    /// The client's 4-bit sequence number, the one replies echo.
    pub fn client_seq(self) -> u8 {
        self.ctrl & CLIENT_SEQ_MASK
    }

    /// The 4 header bytes, unescaped.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        [MICROCOSM_ID, self.ctrl, self.noid, self.reqnum]
    }
}

/// One Habitat packet, unescaped: header and payload (the request's or message's args).
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    /// `ctrl noid reqnum`.
    pub header: Header,
    /// Everything after the header.
    pub payload: Bytes,
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("ctrl", &format_args!("{:#04x}", self.header.ctrl))
            .field("noid", &self.header.noid)
            .field("reqnum", &self.header.reqnum)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Packet {
    /// A packet from a header and payload.
    pub fn new(header: Header, payload: impl Into<Bytes>) -> Packet {
        Packet {
            header,
            payload: payload.into(),
        }
    }

    /// Parses an unescaped packet. The payload shares `raw`'s buffer.
    pub fn parse(raw: Bytes) -> Result<Packet, PacketError> {
        if raw.len() < HEADER_LEN {
            return Err(PacketError::TooShort { len: raw.len() });
        }
        if raw[0] != MICROCOSM_ID {
            return Err(PacketError::NotHabitat { first: raw[0] });
        }
        Ok(Packet {
            header: Header {
                ctrl: raw[1],
                noid: raw[2],
                reqnum: raw[3],
            },
            payload: raw.slice(HEADER_LEN..),
        })
    }

    /// Descapes a frame payload as received and parses it.
    pub fn parse_escaped(escaped: &[u8]) -> Result<Packet, PacketError> {
        Packet::parse(Bytes::from(descape(escaped, 0)))
    }

    /// The packet's bytes, unescaped.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.payload.len());
        out.put_slice(&self.header.to_bytes());
        out.put_slice(&self.payload);
        out.freeze()
    }

    /// Appends the packet, escaped, to `dst`.
    pub fn write_escaped(&self, dst: &mut BytesMut) {
        escape_into(&self.header.to_bytes(), dst);
        escape_into(&self.payload, dst);
    }

    /// The packet's bytes, escaped: what goes into a Q-Link Action's payload.
    pub fn escaped(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.escaped_len());
        self.write_escaped(&mut out);
        out.freeze()
    }

    /// Bytes the packet takes once escaped.
    pub fn escaped_len(&self) -> usize {
        escaped_len(&self.header.to_bytes()) + escaped_len(&self.payload)
    }
}

/// Cuts a server message that may be split (contents vectors, long replies) into packets
/// the C64 can take (WIRE.md §2, ESPMAIL.md §4).
///
/// A message goes out whole, with its ctrl unchanged, when its payload is at most
/// [`MAX_CHUNK_PAYLOAD`] bytes (bridge_v2 splits in Habilink mode only past 104 bytes in
/// all, the same thing) **and** its escaped form fits [`MAX_ESCAPED_PACKET`]. Otherwise it
/// is cut as bridge_v2 cuts it: chunks of up to 100 payload bytes, each with the same noid
/// and reqnum and ctrl `(orig & 1F) | 40`, plus `20` on the first and `80` on the last;
/// except that a chunk whose escaped packet would pass [`MAX_ESCAPED_PACKET`] is made
/// smaller. Every packet returned has `escaped_len() <= MAX_ESCAPED_PACKET`.
pub fn split(message: &Packet) -> Vec<Packet> {
    cut(message, MAX_CHUNK_PAYLOAD)
}

/// Sends a message that bridge_v2 never splits (speech, prompts, short replies) whole when
/// its escaped form fits [`MAX_ESCAPED_PACKET`], as bridge_v2 does. One that does not fit
/// is cut like [`split`] but by the escape limit alone (chunks of up to 117 payload
/// bytes): the C64 reads any message up to its END packet, and a frame it cannot hold
/// would be lost. Text messages are cut to fit before they get here
/// ([`super::messages`]), so for them this is always one packet.
pub fn fit(message: &Packet) -> Vec<Packet> {
    cut(message, MAX_ESCAPED_PACKET - HEADER_LEN)
}

fn cut(message: &Packet, max_chunk: usize) -> Vec<Packet> {
    let payload = &message.payload;
    if payload.len() <= max_chunk && message.escaped_len() <= MAX_ESCAPED_PACKET {
        return vec![message.clone()];
    }
    let Header { ctrl, noid, reqnum } = message.header;
    let base = (ctrl & SEQ_MASK) | MIDDLE;
    let fixed_cost = 1 + cost(noid) + cost(reqnum);
    let mut out = Vec::with_capacity(payload.len() / MAX_CHUNK_PAYLOAD + 2);
    let mut at = 0;
    loop {
        let mid_ctrl = if at == 0 { base | START } else { base };
        // The END variant has bit 80 set and never needs escaping; the other might (5D).
        let budget = MAX_ESCAPED_PACKET - fixed_cost - cost(mid_ctrl).max(1);
        let mut used = 0;
        let mut end = at;
        while end < payload.len() && end - at < max_chunk {
            let c = cost(payload[end]);
            if used + c > budget {
                break;
            }
            used += c;
            end += 1;
        }
        let last = end == payload.len();
        let chunk_ctrl = if last { mid_ctrl | END } else { mid_ctrl };
        out.push(Packet {
            header: Header {
                ctrl: chunk_ctrl,
                noid,
                reqnum,
            },
            payload: payload.slice(at..end),
        });
        if last {
            return out;
        }
        at = end;
    }
}

/// Escaped size of one byte.
#[inline]
fn cost(b: u8) -> usize {
    if needs_escape(b) {
        2
    } else {
        1
    }
}

/// Whether the server puts a split client request back together: SPEAK (req 7 on an
/// avatar), PROMPT_REPLY (req 7 on the region) and ESP (req 11 on an avatar).
pub fn is_reassembled(header: Header) -> bool {
    header.reqnum == 7 || (header.reqnum == 11 && header.noid != 0)
}

/// Puts split client requests back together (WIRE.md §2: the C64 splits a request whose
/// escaped args pass about 113 bytes; continuations omit START, the last has END).
///
/// Bounded: a message under way holds at most [`MAX_REASSEMBLED_ARGS`] bytes. A broken
/// sequence costs only the packets involved: each bad packet is an `Err`, and a complete
/// packet or a new START that interrupts a message under way abandons it (counted in
/// [`Reassembler::abandoned`]) and is handled on its own.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: Option<(Header, BytesMut)>,
    abandoned: u64,
}

impl Reassembler {
    /// An idle reassembler.
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// Messages abandoned half-way so far.
    pub fn abandoned(&self) -> u64 {
        self.abandoned
    }

    /// Bytes held for the message under way (at most [`MAX_REASSEMBLED_ARGS`]).
    pub fn buffered(&self) -> usize {
        self.pending.as_ref().map_or(0, |(_, b)| b.len())
    }

    /// Feeds one client packet. Returns the whole request once it is complete,
    /// `Ok(None)` while a split request is under way.
    ///
    /// The reassembled packet has ctrl `E0 | seq` with the seq of its **last** packet,
    /// the one a reply must echo (bridge_v2 replies to the latest request's seq).
    /// UNCONFIRMED (WIRE.md §2: NeoHabitat's handling of continuations is not known):
    /// we read the C64 as giving every packet of one request the same seq, so the choice
    /// of packet does not matter; continuations are matched by noid and reqnum only.
    pub fn push(&mut self, packet: Packet) -> Result<Option<Packet>, PacketError> {
        let h = packet.header;
        if h.is_start() {
            if let Some((_, old)) = self.pending.take() {
                wipe_buffer(old);
                self.abandoned += 1;
            }
            if h.is_end() {
                return Ok(Some(packet));
            }
            if !is_reassembled(h) {
                return Err(PacketError::NotReassembled {
                    noid: h.noid,
                    reqnum: h.reqnum,
                });
            }
            if packet.payload.len() > MAX_REASSEMBLED_ARGS {
                return Err(PacketError::TooLarge {
                    len: packet.payload.len(),
                    max: MAX_REASSEMBLED_ARGS,
                });
            }
            self.pending = Some((h, BytesMut::from(&packet.payload[..])));
            wipe_payload(packet);
            return Ok(None);
        }
        let Some((first, mut buf)) = self.pending.take() else {
            return Err(PacketError::Orphan { ctrl: h.ctrl });
        };
        if first.noid != h.noid || first.reqnum != h.reqnum {
            wipe_buffer(buf);
            self.abandoned += 1;
            return Err(PacketError::Mismatch {
                noid: h.noid,
                reqnum: h.reqnum,
            });
        }
        let len = buf.len() + packet.payload.len();
        if len > MAX_REASSEMBLED_ARGS {
            wipe_buffer(buf);
            self.abandoned += 1;
            return Err(PacketError::TooLarge {
                len,
                max: MAX_REASSEMBLED_ARGS,
            });
        }
        buf.put_slice(&packet.payload);
        wipe_payload(packet);
        if h.is_end() {
            return Ok(Some(Packet {
                header: Header::new(true, true, h.seq(), h.noid, h.reqnum),
                payload: buf.freeze(),
            }));
        }
        self.pending = Some((first, buf));
        Ok(None)
    }
}

impl Drop for Reassembler {
    /// A request cut off half-way (the connection ended) may hold typed text: wiped.
    fn drop(&mut self) {
        if let Some((_, buf)) = self.pending.take() {
            wipe_buffer(buf);
        }
    }
}

/// Zeroes a partial request before its memory is freed.
fn wipe_buffer(mut buf: BytesMut) {
    buf[..].zeroize();
}

/// Zeroes a part's payload once it has been copied into the buffer, when nothing else
/// holds it (a descaped packet is the session's own copy).
fn wipe_payload(packet: Packet) {
    let mut payload = packet.payload;
    payload.wipe();
}

/// Why a QLR record could not be deframed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QlrError {
    /// The byte after the counted bytes was not `BA`.
    #[error("QLR record not closed by 0xba (found {found:#04x})")]
    NoTrailer {
        /// The byte found instead.
        found: u8,
    },
    /// The counted bytes end in a lone `5E` (which makes bridge_v2 panic).
    #[error("QLR record ends in a dangling 0x5e escape")]
    DanglingEscape,
}

/// Start of a framed QLR record.
pub const QLR_OPEN: u8 = 0xAB;
/// End of a framed QLR record.
pub const QLR_CLOSE: u8 = 0xBA;
/// QLR's escape: `5E x` is a literal x.
pub const QLR_ESCAPE: u8 = 0x5E;

/// Reads one `AB len <len escaped bytes> BA` record from the front of `input` (WIRE.md
/// §1.2, legacy QLR mode; the server does not serve it, but the vectors run through this).
/// Bytes before `AB` are skipped. `len` counts escaped bytes; `5E x` is a literal x.
///
/// Returns `Ok(None)` when `input` does not yet hold a whole record, otherwise the message
/// and how many bytes of `input` it used.
pub fn qlr_deframe(input: &[u8]) -> Result<Option<(Vec<u8>, usize)>, QlrError> {
    let Some(open) = input.iter().position(|&b| b == QLR_OPEN) else {
        return Ok(None);
    };
    let Some(&len) = input.get(open + 1) else {
        return Ok(None);
    };
    let body_start = open + 2;
    let body_end = body_start + usize::from(len);
    let (Some(body), Some(&close)) = (input.get(body_start..body_end), input.get(body_end)) else {
        return Ok(None);
    };
    if close != QLR_CLOSE {
        return Err(QlrError::NoTrailer { found: close });
    }
    let mut out = Vec::with_capacity(body.len());
    let mut iter = body.iter();
    while let Some(&b) = iter.next() {
        if b == QLR_ESCAPE {
            out.push(*iter.next().ok_or(QlrError::DanglingEscape)?);
        } else {
            out.push(b);
        }
    }
    Ok(Some((out, body_end + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speak_part(ctrl: u8, payload: &[u8]) -> Packet {
        Packet::new(
            Header {
                ctrl,
                noid: 2,
                reqnum: 7,
            },
            payload.to_vec(),
        )
    }

    #[test]
    fn split_keeps_every_escaped_chunk_within_the_c64_limit() {
        // 250 bytes of which every other is 0D: bridge_v2's 100-byte chunks would escape
        // to 154 bytes.
        let payload: Vec<u8> = (0..250u8)
            .map(|i| if i % 2 == 0 { 0x0d } else { i })
            .collect();
        let msg = Packet::new(Header::reply(5, 0, 1), payload.clone());
        let parts = split(&msg);
        assert!(parts.len() > 3);
        for p in &parts {
            assert!(p.escaped_len() <= MAX_ESCAPED_PACKET, "{}", p.escaped_len());
            assert_eq!((p.header.noid, p.header.reqnum), (0, 1));
        }
        assert_eq!(parts[0].header.ctrl, 0x65);
        assert_eq!(parts[1].header.ctrl, 0x45);
        assert_eq!(parts[parts.len() - 1].header.ctrl, 0xc5);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.payload.to_vec()).collect();
        assert_eq!(joined, payload);
    }

    #[test]
    fn short_message_with_many_escapes_is_split_too() {
        let msg = Packet::new(Header::asynchronous(0, 8), vec![0x5d; 90]);
        let parts = split(&msg);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].header.ctrl, 0x7a);
        assert_eq!(parts[1].header.ctrl, 0xda);
    }

    #[test]
    fn fit_sends_speech_whole_but_never_past_the_limit() {
        let whole = Packet::new(Header::asynchronous(2, 14), vec![0x41; 114]);
        assert_eq!(fit(&whole), vec![whole.clone()]);
        assert_eq!(split(&whole).len(), 2, "split would cut at 100");
        let hostile = Packet::new(Header::asynchronous(0, 20), vec![0x0d; 114]);
        let parts = fit(&hostile);
        assert!(parts.len() >= 2);
        assert!(parts.iter().all(|p| p.escaped_len() <= MAX_ESCAPED_PACKET));
    }

    #[test]
    fn reassembles_start_middle_end() {
        let mut r = Reassembler::new();
        assert_eq!(r.push(speak_part(0x63, b"\0hel")), Ok(None));
        assert_eq!(r.push(speak_part(0x43, b"lo ")), Ok(None));
        let whole = r.push(speak_part(0xc3, b"there")).unwrap().unwrap();
        assert_eq!(whole.header, Header::reply(3, 2, 7));
        assert_eq!(&whole.payload[..], b"\0hello there");
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn broken_sequences_cost_only_their_packets() {
        let mut r = Reassembler::new();
        assert_eq!(
            r.push(speak_part(0xc3, b"x")),
            Err(PacketError::Orphan { ctrl: 0xc3 })
        );
        assert_eq!(r.push(speak_part(0x63, b"a")), Ok(None));
        // A complete packet interrupts: it is delivered, the partial one abandoned.
        let single = speak_part(0xe4, b"\0ok");
        assert_eq!(r.push(single.clone()), Ok(Some(single)));
        assert_eq!(r.abandoned(), 1);
        assert_eq!(r.push(speak_part(0x63, &[0x41; 150])), Ok(None));
        assert_eq!(
            r.push(speak_part(0x43, &[0x41; 60])),
            Err(PacketError::TooLarge {
                len: 210,
                max: MAX_REASSEMBLED_ARGS
            })
        );
        assert_eq!(r.buffered(), 0);
        let other = Packet::new(Header::new(true, false, 1, 0, 1), vec![1]);
        assert_eq!(
            r.push(other),
            Err(PacketError::NotReassembled { noid: 0, reqnum: 1 })
        );
    }

    #[test]
    fn qlr_needs_the_whole_record() {
        assert_eq!(qlr_deframe(&[0xab, 0x03, 0x41]), Ok(None));
        assert_eq!(
            qlr_deframe(&[0xab, 0x01, 0x41, 0x00]),
            Err(QlrError::NoTrailer { found: 0 })
        );
        assert_eq!(
            qlr_deframe(&[0xab, 0x01, 0x5e, 0xba]),
            Err(QlrError::DanglingEscape)
        );
    }
}
