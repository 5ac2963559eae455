//! One Q-Link frame: `5A`, four nibble-encoded CRC bytes, SEND seq, RECV seq, command,
//! payload (WIRE.md §1.3.2), and the 0x10..0x7F sequence ring (§1.3.3).
//!
//! Pure: parses bytes into a [`Frame`] and writes a [`Frame`] into bytes. The `0D`
//! terminator is the codec's business ([`super::qlink`]), not this module's.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::crc::{crc16, decode_nibbles, encode_nibbles};

/// First byte of every frame (`Z`).
pub const SYNC: u8 = 0x5A;
/// The byte that ends a frame on the wire. It never appears inside one.
pub const FRAME_END: u8 = 0x0D;
/// Bytes before the payload: sync, four CRC bytes, SEND, RECV, command.
pub const HEADER_LEN: usize = 8;
/// The C64 holds at most 128 bytes *after* the `5A` sync byte and before the `0D` (its
/// 128-byte `RSINBF`; WIRE.md §1.3.3): four CRC bytes, SEND, RECV, command and payload.
pub const MAX_BODY_AFTER_SYNC: usize = 128;
/// The longest frame, counted as [`Frame::wire_len`] does: the `5A` plus
/// [`MAX_BODY_AFTER_SYNC`], without the `0D` terminator. No frame, in either direction,
/// may be longer.
pub const MAX_FRAME_LEN: usize = 1 + MAX_BODY_AFTER_SYNC;
/// The longest payload a frame may carry: [`MAX_FRAME_LEN`] minus the 8 header bytes.
/// For a Habitat Action this is the *escaped* Habitat packet, so an escaped packet may be
/// at most 121 bytes.
pub const MAX_ESCAPED_PACKET: usize = MAX_FRAME_LEN - HEADER_LEN;
/// The CRC the real C64 client's handshake probe reports (the default Ping's CRC)...
pub const PROBE_REPORTED_CRC: u16 = 0x3290;
/// ...and the CRC its body actually has. A frame failing with exactly these two is the
/// deliberate probe (WIRE.md §1.3.4), not line noise.
pub const PROBE_CALCULATED_CRC: u16 = 0xa291;

/// A Q-Link command byte. Unknown values are kept, not refused: the reaction table
/// ignores them (WIRE.md §1.3.4).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Command(pub u8);

impl Command {
    /// `20`: numbered data frame; advances the sender's SEND seq.
    pub const ACTION: Command = Command(0x20);
    /// `21`: flow control, "window full".
    pub const WINDOW_FULL: Command = Command(0x21);
    /// `22`: the C64's reply to `21`.
    pub const WINDOW_FULL_REPLY: Command = Command(0x22);
    /// `23`: link reset.
    pub const RESET: Command = Command(0x23);
    /// `24`: unnumbered acknowledgement (answer to Reset and Ping).
    pub const RESET_ACK: Command = Command(0x24);
    /// `25`: bad or missing frame, please resend.
    pub const NAK: Command = Command(0x25);
    /// `26`: heartbeat; asks the other side for an ack.
    pub const PING: Command = Command(0x26);
    /// `3F`: Q-Link Reloaded's "out of order, resend".
    pub const SEQUENCE_ERROR: Command = Command(0x3F);

    /// Whether frames with this command take a sequence number of their own.
    pub fn is_numbered(self) -> bool {
        self == Command::ACTION
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Command::ACTION => "Action",
            Command::WINDOW_FULL => "WindowFull",
            Command::WINDOW_FULL_REPLY => "WindowFullReply",
            Command::RESET => "Reset",
            Command::RESET_ACK => "ResetAck",
            Command::NAK => "Nak",
            Command::PING => "Ping",
            Command::SEQUENCE_ERROR => "SequenceError",
            _ => return None,
        })
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "Command({:#04x})", self.0),
        }
    }
}

/// A checked Q-Link frame. `payload` is exactly as transmitted: for a Habitat Action it is
/// still Habitat-escaped (the CRC covers the escaped bytes).
///
/// `Debug` shows the header fields and the payload's length only: a payload can carry
/// what a player typed, which must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The sender's own sequence number (for unnumbered frames: its last used one).
    pub send: u8,
    /// The last sequence number the sender received: a cumulative ack.
    pub recv: u8,
    /// What the frame is.
    pub cmd: Command,
    /// The bytes after the command, as on the wire.
    pub payload: Bytes,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("send", &format_args!("{:#04x}", self.send))
            .field("recv", &format_args!("{:#04x}", self.recv))
            .field("cmd", &self.cmd)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Why a frame was refused. Numbers only, never the frame's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadFrame {
    /// Fewer than the 8 header bytes.
    #[error("frame too short ({len} bytes, a frame has at least {HEADER_LEN})")]
    TooShort {
        /// Bytes received before the terminator.
        len: usize,
    },
    /// Did not start with `5A`.
    #[error("frame starts with {first:#04x}, not the 0x5a sync byte")]
    NoSync {
        /// The byte found instead.
        first: u8,
    },
    /// The CRC bytes do not match the body. `probe` is set for the real C64's deliberate
    /// handshake probe, which deserves quieter logging but the same NAK.
    #[error("bad CRC: frame says {said:#06x}, body gives {got:#06x}")]
    Crc {
        /// The CRC the frame reports.
        said: u16,
        /// The CRC of the body as received.
        got: u16,
        /// Whether this is the C64's handshake probe (reported 3290, calculated a291).
        probe: bool,
    },
    /// More than [`MAX_FRAME_LEN`] bytes (the `5A` included) before the terminator; the
    /// bytes were discarded.
    #[error("frame over the {max}-byte limit")]
    TooLong {
        /// The limit in force.
        max: usize,
    },
}

impl BadFrame {
    /// Whether the reaction table answers this with a NAK (CRC failures, including the
    /// probe) rather than silently dropping it (WIRE.md §1.3.4).
    pub fn wants_nak(&self) -> bool {
        matches!(self, BadFrame::Crc { .. })
    }
}

impl Frame {
    /// A frame with no payload.
    pub fn bare(cmd: Command, send: u8, recv: u8) -> Frame {
        Frame {
            send,
            recv,
            cmd,
            payload: Bytes::new(),
        }
    }

    /// Parses the bytes between `5A` (included) and `0D` (excluded), checking the CRC.
    /// The payload shares `raw`'s buffer: no copy.
    pub fn parse(raw: Bytes) -> Result<Frame, BadFrame> {
        if raw.len() < HEADER_LEN {
            // Order as the reference: length first, then the sync byte.
            return Err(BadFrame::TooShort { len: raw.len() });
        }
        if raw[0] != SYNC {
            return Err(BadFrame::NoSync { first: raw[0] });
        }
        let said = decode_nibbles([raw[1], raw[2], raw[3], raw[4]]);
        let got = crc16(&raw[5..]);
        if said != got {
            let probe = said == PROBE_REPORTED_CRC && got == PROBE_CALCULATED_CRC;
            return Err(BadFrame::Crc { said, got, probe });
        }
        let (send, recv, cmd) = (raw[5], raw[6], Command(raw[7]));
        let mut payload = raw;
        payload.advance(HEADER_LEN); // no refcount traffic, unlike `slice`
        Ok(Frame {
            send,
            recv,
            cmd,
            payload,
        })
    }

    /// Bytes this frame takes between `5A` and `0D`.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the frame (without the `0D` terminator) to `dst`, computing the CRC.
    pub fn write_to(&self, dst: &mut BytesMut) {
        dst.reserve(self.wire_len());
        let body_start = dst.len() + 5;
        dst.put_u8(SYNC);
        dst.put_slice(&[0; 4]); // CRC, filled in once the body is written
        dst.put_u8(self.send);
        dst.put_u8(self.recv);
        dst.put_u8(self.cmd.0);
        dst.put_slice(&self.payload);
        let crc = encode_nibbles(crc16(&dst[body_start..]));
        dst[body_start - 4..body_start].copy_from_slice(&crc);
    }

    /// The frame as bytes (without the terminator). Convenient for tests and resends.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.wire_len());
        self.write_to(&mut buf);
        buf.freeze()
    }
}

/// The Q-Link sequence ring: 0x10..=0x7F, 112 values (WIRE.md §1.3.3).
pub mod seq {
    /// Lowest sequence number, and the one both sides start from after login.
    pub const FIRST: u8 = 0x10;
    /// Highest sequence number; the next one is [`FIRST`].
    pub const LAST: u8 = 0x7F;
    /// Number of values on the ring.
    pub const RING: u8 = LAST - FIRST + 1;
    /// How far ahead an ack may be and still count (the reference bridge's 56, half the ring).
    pub const ACK_REACH: u8 = 56;

    /// Whether `s` is on the ring at all.
    pub fn is_valid(s: u8) -> bool {
        (FIRST..=LAST).contains(&s)
    }

    /// The next sequence number: 0x7F is followed by 0x10. Values off the ring are
    /// first brought onto it, so a hostile peer cannot push us off it.
    pub fn inc(s: u8) -> u8 {
        if (FIRST..LAST).contains(&s) {
            s + 1
        } else {
            FIRST
        }
    }

    /// Steps forward from `from` to `to` on the ring (0..RING).
    pub fn forward(from: u8, to: u8) -> u8 {
        let from = from.clamp(FIRST, LAST);
        let to = to.clamp(FIRST, LAST);
        (to + RING - from) % RING
    }

    /// Whether an ack of `ack` covers a frame sent with `frame_seq`: the frame is at or
    /// before the ack, at most [`ACK_REACH`] steps back.
    pub fn ack_covers(frame_seq: u8, ack: u8) -> bool {
        forward(frame_seq, ack) <= ACK_REACH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Bytes {
        Bytes::from(
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn parses_and_rewrites_the_c64_reset() {
        let raw = hex("5a8142314e7f7f230509");
        let frame = Frame::parse(raw.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (frame.send, frame.recv, frame.cmd),
            (0x7f, 0x7f, Command::RESET)
        );
        assert_eq!(&frame.payload[..], &[0x05, 0x09]);
        assert_eq!(frame.to_bytes(), raw);
    }

    #[test]
    fn recognises_the_probe() {
        let err = Frame::parse(hex("5a314291407f7e26")).err();
        assert_eq!(
            err,
            Some(BadFrame::Crc {
                said: 0x3290,
                got: 0xa291,
                probe: true
            })
        );
    }

    #[test]
    fn limits_match_the_c64_buffer() {
        assert_eq!(MAX_FRAME_LEN, 129);
        assert_eq!(MAX_ESCAPED_PACKET, 121);
    }

    #[test]
    fn ring_wraps() {
        assert_eq!(seq::inc(0x7f), 0x10);
        assert_eq!(seq::forward(0x7e, 0x11), 3);
        assert!(seq::ack_covers(0x7f, 0x10));
        assert!(!seq::ack_covers(0x10, 0x7f));
    }
}
