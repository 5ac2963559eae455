//! The Q-Link stream codec: cuts a byte stream into `0D`-terminated frames and writes
//! frames followed by `0D` (WIRE.md §1.3.2), enforcing the C64's frame limit both ways.
//!
//! Pure: a [`tokio_util::codec`] `Decoder`/`Encoder` pair, no socket, no clock. The
//! sequence-number and ack logic lives in the link state machine, not here.
//!
//! Decoding choices:
//! * a frame that fails to parse (bad CRC, too short, no sync, too long) is an *item*,
//!   `Err(BadFrame)`: it costs that frame only; only the socket ends the stream;
//! * a frame longer than [`MAX_FRAME_LEN`] is discarded up to the next `0D`, counted in
//!   [`QLinkCodec::discarded_frames`]; the codec never holds more than about one maximal
//!   frame of it, and never rescans bytes it has already looked at;
//! * an empty line (a lone `0D`, e.g. a second CR after the login line, or a CR of a
//!   CRLF pair) is **skipped** silently and counted in [`QLinkCodec::empty_lines`]: it
//!   carries nothing a NAK could ask to resend, and a peer sending CR CR must not be
//!   punished;
//! * bytes left without a terminator when the stream ends are dropped (the peer hung up
//!   mid-frame; there is nobody left to NAK) and counted as a discarded frame.

use std::io;

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::crc::{crc16, crc16_update, encode_nibbles};
use super::frame::{BadFrame, Frame, FRAME_END, MAX_FRAME_LEN, SYNC};

/// Why a frame was refused for sending. Sending it would overrun or desynchronise the
/// C64, so the encoder returns this (wrapped in an `io::Error` of kind `InvalidInput`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The frame is longer than the C64 can hold.
    #[error("frame of {len} bytes is over the {max}-byte limit; split or shorten the packet")]
    TooLong {
        /// Bytes between `5A` (included) and `0D`.
        len: usize,
        /// The limit, [`MAX_FRAME_LEN`].
        max: usize,
    },
    /// A raw `0D` in the header or payload would end the frame early on the wire: the
    /// payload was not Habitat-escaped.
    #[error("frame contains a raw 0x0d; Habitat-escape the payload before framing")]
    ContainsTerminator,
}

impl From<EncodeError> for io::Error {
    fn from(e: EncodeError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// Checks that `frame` can go on the wire as one C64 frame.
pub fn check_sendable(frame: &Frame) -> Result<(), EncodeError> {
    let len = frame.wire_len();
    if len > MAX_FRAME_LEN {
        return Err(EncodeError::TooLong {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    if [frame.send, frame.recv, frame.cmd.0].contains(&FRAME_END)
        || frame.payload.contains(&FRAME_END)
    {
        return Err(EncodeError::ContainsTerminator);
    }
    Ok(())
}

/// `Decoder` and `Encoder` for Q-Link frames on a byte stream.
#[derive(Debug, Clone, Default)]
pub struct QLinkCodec {
    /// Bytes at the front of the buffer already known not to contain `0D`.
    scanned: usize,
    /// Inside an over-long frame: drop everything up to the next `0D`.
    discarding: bool,
    discarded: u64,
    empty: u64,
}

impl QLinkCodec {
    /// A codec with the C64 limit, [`MAX_FRAME_LEN`].
    pub fn new() -> QLinkCodec {
        QLinkCodec::default()
    }

    /// Frames discarded so far: over the length limit, or cut off by the end of stream.
    pub fn discarded_frames(&self) -> u64 {
        self.discarded
    }

    /// Lone `0D` bytes skipped so far.
    pub fn empty_lines(&self) -> u64 {
        self.empty
    }
}

impl Decoder for QLinkCodec {
    type Item = Result<Frame, BadFrame>;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        loop {
            let start = self.scanned.min(src.len());
            let Some(pos) = memchr::memchr(FRAME_END, &src[start..]) else {
                if self.discarding || src.len() > MAX_FRAME_LEN {
                    // Hold at most one over-long frame, then resync at the next 0D.
                    src.clear();
                    self.discarding = true;
                    self.scanned = 0;
                } else {
                    self.scanned = src.len();
                }
                return Ok(None);
            };
            let len = start + pos;
            self.scanned = 0;
            if std::mem::take(&mut self.discarding) || len > MAX_FRAME_LEN {
                let _ = src.split_to(len + 1);
                self.discarded += 1;
                return Ok(Some(Err(BadFrame::TooLong { max: MAX_FRAME_LEN })));
            }
            if len == 0 {
                let _ = src.split_to(1);
                self.empty += 1;
                continue;
            }
            // One split of the shared buffer: the frame's payload is a view into it.
            let mut raw = src.split_to(len + 1);
            raw.truncate(len); // the 0D
            return Ok(Some(Frame::parse(raw.freeze())));
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        if let Some(item) = self.decode(src)? {
            return Ok(Some(item));
        }
        if !src.is_empty() || self.discarding {
            src.clear();
            self.discarding = false;
            self.scanned = 0;
            self.discarded += 1;
        }
        Ok(None)
    }
}

impl Encoder<&Frame> for QLinkCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> io::Result<()> {
        check_sendable(frame)?;
        // Same bytes as `Frame::write_to` + 0D, written with one reserve and two copies:
        // encoding is mostly small acks, where per-byte bookkeeping showed in profiles.
        let seqs = [frame.send, frame.recv, frame.cmd.0];
        let crc = encode_nibbles(crc16_update(crc16(&seqs), &frame.payload));
        let header = [
            SYNC, crc[0], crc[1], crc[2], crc[3], seqs[0], seqs[1], seqs[2],
        ];
        dst.reserve(frame.wire_len() + 1);
        dst.extend_from_slice(&header);
        dst.extend_from_slice(&frame.payload);
        dst.put_u8(FRAME_END);
        Ok(())
    }
}

impl Encoder<Frame> for QLinkCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> io::Result<()> {
        self.encode(&frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{Command, HEADER_LEN};
    use bytes::Bytes;

    fn action(len: usize) -> Frame {
        Frame {
            send: 0x11,
            recv: 0x10,
            cmd: Command::ACTION,
            payload: Bytes::from(vec![0x41; len]),
        }
    }

    fn wire(frame: &Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        QLinkCodec::new().encode(frame, &mut buf).unwrap();
        buf
    }

    fn decode_all(codec: &mut QLinkCodec, buf: &mut BytesMut) -> Vec<Result<Frame, BadFrame>> {
        let mut out = Vec::new();
        while let Some(item) = codec.decode(buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn many_frames_in_one_read() {
        let a = action(3);
        let b = Frame::bare(Command::PING, 0x11, 0x10);
        let mut buf = wire(&a);
        buf.extend_from_slice(&wire(&b));
        let got = decode_all(&mut QLinkCodec::new(), &mut buf);
        assert_eq!(got, vec![Ok(a), Ok(b)]);
        assert!(buf.is_empty());
    }

    #[test]
    fn one_frame_over_many_reads() {
        let a = action(40);
        let bytes = wire(&a);
        let mut codec = QLinkCodec::new();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let item = codec.decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(item.is_none(), "frame ended early at byte {i}");
            } else {
                assert_eq!(item, Some(Ok(a.clone())));
            }
        }
    }

    #[test]
    fn max_frame_passes_and_max_plus_one_is_discarded() {
        let max = action(MAX_FRAME_LEN - HEADER_LEN);
        assert_eq!(max.wire_len(), MAX_FRAME_LEN);
        let mut buf = wire(&max);
        let mut too_long = max.to_bytes().to_vec();
        too_long.push(0x41);
        buf.extend_from_slice(&too_long);
        buf.put_u8(FRAME_END);
        buf.extend_from_slice(&wire(&action(1)));
        let mut codec = QLinkCodec::new();
        let got = decode_all(&mut codec, &mut buf);
        assert_eq!(
            got,
            vec![
                Ok(max),
                Err(BadFrame::TooLong { max: MAX_FRAME_LEN }),
                Ok(action(1))
            ]
        );
        assert_eq!(codec.discarded_frames(), 1);
    }

    #[test]
    fn long_garbage_trickling_in_is_not_buffered() {
        let mut codec = QLinkCodec::new();
        let mut buf = BytesMut::new();
        for _ in 0..10_000 {
            buf.extend_from_slice(&[0x41; 7]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert!(buf.len() <= MAX_FRAME_LEN + 7, "held {} bytes", buf.len());
        }
        buf.put_u8(FRAME_END);
        buf.extend_from_slice(&wire(&action(2)));
        let got = decode_all(&mut codec, &mut buf);
        assert_eq!(
            got,
            vec![Err(BadFrame::TooLong { max: MAX_FRAME_LEN }), Ok(action(2))]
        );
    }

    #[test]
    fn empty_lines_are_skipped_and_garbage_is_an_item() {
        let mut buf = BytesMut::from(&[FRAME_END, FRAME_END, 0x0a, FRAME_END][..]);
        buf.extend_from_slice(&wire(&action(1)));
        let mut codec = QLinkCodec::new();
        let got = decode_all(&mut codec, &mut buf);
        assert_eq!(got, vec![Err(BadFrame::TooShort { len: 1 }), Ok(action(1))]);
        assert_eq!(codec.empty_lines(), 2);
    }

    #[test]
    fn eof_mid_frame_drops_the_rest() {
        let mut buf = BytesMut::from(&wire(&action(5))[..6]);
        let mut codec = QLinkCodec::new();
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        assert_eq!(codec.discarded_frames(), 1);
    }

    #[test]
    fn encoder_writes_what_frame_writes() {
        for f in [action(0), action(50), Frame::bare(Command::NAK, 0x10, 0x10)] {
            let mut want = BytesMut::new();
            f.write_to(&mut want);
            want.put_u8(FRAME_END);
            assert_eq!(wire(&f), want);
        }
    }

    #[test]
    fn encoder_refuses_what_the_c64_cannot_take() {
        let mut buf = BytesMut::new();
        let err = QLinkCodec::new()
            .encode(action(MAX_FRAME_LEN - HEADER_LEN + 1), &mut buf)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut raw_cr = action(3);
        raw_cr.payload = Bytes::from_static(&[0x55, 0x0d, 0x41]);
        assert_eq!(
            check_sendable(&raw_cr),
            Err(EncodeError::ContainsTerminator)
        );
        assert!(QLinkCodec::new().encode(raw_cr, &mut buf).is_err());
        assert!(buf.is_empty(), "nothing may be written for a refused frame");
    }
}
