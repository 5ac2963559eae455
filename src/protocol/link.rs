//! The Q-Link session state machine: sequence numbers, acks, NAKs and go-back-1 resends
//! (WIRE.md §1.3.3–§1.3.5), as pure code.
//!
//! [`Link`] takes checked [`Frame`]s (or the codec's [`BadFrame`]s) and the current time,
//! and returns what to do: frames to send, at most one Habitat packet to hand up, and which
//! outbound Actions the client has now acknowledged. It owns no socket and reads no clock:
//! the caller passes `now` in, writes the frames out, and calls [`Link::poll`] at
//! [`Link::next_deadline`]. Memory is bounded: at most [`WINDOW`] unacknowledged frames,
//! each at most [`MAX_FRAME_LEN`] bytes.
//!
//! It follows bridge_v2's reaction table (§1.3.4), which the vectors pin byte for byte,
//! with these deliberate differences, each explained where it is coded:
//!
//! - duplicate Actions are dropped (still acked), where bridge_v2 accepts every Action;
//! - a duplicate ack resends only a frame that has been on the wire for 3 s, where bridge_v2
//!   resends at once when its last resend is 3 s old;
//! - an ack for a frame never sent is ignored rather than believed;
//! - a NAK with nothing to resend is answered with a ResetAck;
//! - the server Pings on its own when its frames stay unacked (bridge_v2 never does).
//!
//! May touch: [`super::frame`], and [`crate::log_redact`] for the packets it hands up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::{seq, BadFrame, Command, Frame, FRAME_END, HEADER_LEN, MAX_FRAME_LEN};
use crate::log_redact::Sensitive;

/// Most outbound Actions kept for resending (bridge_v2's window). The caller gets
/// [`LinkError::WindowFull`] beyond it and must wait for acks.
pub const WINDOW: usize = 64;

/// A frame is resent on a duplicate ack, and a stall Ping is sent, only once it has been
/// on the wire this long: bridge_v2's 3 s resend limit. At the default 120 B/s a full
/// frame alone takes over a second to leave, so a shorter limit would resend frames still
/// in flight.
pub const RESEND_AFTER: Duration = Duration::from_secs(3);

/// How far behind the last accepted Action a SEND may be and still count as a duplicate
/// (the C64's own `INWIND` silently ignores up to 32 behind). Further back reads as a
/// forward gap.
pub const DUPLICATE_REACH: u8 = 32;

/// How many separate runs of Reset-discarded frames [`Link::status`] remembers exactly.
const DROPPED_MEMORY: usize = 16;

/// The identity of one outbound Action for the whole life of a [`Link`]: unlike the 7-bit
/// sequence number it never wraps, so the mail code can ask about it much later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutFrameId(pub u64);

/// A run of consecutive [`OutFrameId`]s, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The oldest id in the run.
    pub first: OutFrameId,
    /// The newest id in the run.
    pub last: OutFrameId,
}

impl IdRange {
    /// Whether `id` is in the run.
    pub fn contains(&self, id: OutFrameId) -> bool {
        self.first <= id && id <= self.last
    }
}

/// What became of an outbound Action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus {
    /// Sent, not yet acknowledged; may still be resent.
    Pending,
    /// The client acknowledged it: it has the frame.
    Acked,
    /// A Reset discarded it before any ack: the client may never have seen it.
    Dropped,
    /// No Action with this id was ever sent.
    Unknown,
}

/// Why an Action could not be queued. The caller keeps its payload and decides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// [`WINDOW`] frames are waiting for acks: wait for the client (a Ping asks it).
    #[error("retransmit window full ({max} frames unacknowledged); wait for acks")]
    WindowFull {
        /// The window size.
        max: usize,
    },
    /// The frame would not fit the C64's 128-byte input buffer.
    #[error("payload of {len} bytes makes a frame over the {max}-byte limit; split it")]
    TooLong {
        /// Payload bytes offered.
        len: usize,
        /// Longest payload that fits.
        max: usize,
    },
    /// The payload holds a `0D`, which would end the frame early: it was not escaped.
    #[error("payload holds a raw 0x0d at offset {at}; Habitat-escape it first")]
    FrameEnd {
        /// Offset of the first `0D`.
        at: usize,
    },
}

/// One outbound Action, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Its lasting identity, for [`Link::status`] and [`Output::acked`].
    pub id: OutFrameId,
    /// The frame to write.
    pub frame: Frame,
}

/// What one inbound frame asks of the caller.
#[derive(Debug, Default)]
pub struct Output {
    /// Frames to write, in this order.
    pub send: Vec<Frame>,
    /// A Habitat packet the client sent, starting with `55`, still Habitat-escaped.
    pub packet: Option<Sensitive<Bytes>>,
    /// Outbound Actions the client acknowledged with this frame.
    pub acked: Option<IdRange>,
    /// Outbound Actions a client Reset discarded unacknowledged: the client may not have
    /// them (anything that waited for their ack must not assume delivery).
    pub dropped: Option<IdRange>,
}

/// Counters for logs and tests: what the link has had to cope with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// NAKs sent for CRC failures.
    pub naks_sent: u64,
    /// CRC failures not NAKed because a NAK was already outstanding.
    pub naks_debounced: u64,
    /// Frames dropped without a NAK (too short, no sync, too long).
    pub dropped_frames: u64,
    /// Go-back-1 resends.
    pub resends: u64,
    /// Duplicate Actions dropped.
    pub duplicates: u64,
    /// Actions that skipped one or more SEND numbers (the C64 does after `SG`).
    pub gaps: u64,
    /// Acks for frames not in the window (stale or never sent), ignored.
    pub ignored_acks: u64,
    /// Actions with a SEND off the 0x10..0x7F ring, ignored.
    pub off_ring: u64,
    /// Client Resets.
    pub resets: u64,
    /// Pings sent on our own, by [`Link::poll`] or [`Link::ping`].
    pub pings: u64,
}

/// An Action kept until the client acks it.
#[derive(Debug)]
struct Pending {
    id: OutFrameId,
    frame: Frame,
    /// When it last went out (first send or latest resend).
    sent_at: Instant,
}

/// One Q-Link session, from just after the login preamble.
#[derive(Debug)]
pub struct Link {
    /// SEND of our last Action.
    out_seq: u8,
    /// SEND of the client's last accepted Action.
    in_seq: u8,
    /// Whether any Action was accepted since login or the last Reset: the first one is
    /// taken whatever its number, as bridge_v2 takes every one.
    accepted_any: bool,
    /// The client's last RECV that we acted on: the seq just before the window's oldest
    /// frame (or `out_seq` when the window is empty).
    last_recv: u8,
    /// Unacked Actions, oldest first. Their seqs and ids are consecutive.
    window: VecDeque<Pending>,
    next_id: u64,
    /// Runs of ids a Reset discarded, oldest first, at most [`DROPPED_MEMORY`].
    dropped: VecDeque<IdRange>,
    /// A NAK went out and no valid frame has arrived since.
    nak_outstanding: bool,
    last_ping: Option<Instant>,
    stats: LinkStats,
}

impl Default for Link {
    fn default() -> Self {
        Link::new()
    }
}

impl Link {
    /// A link as it stands right after the login preamble: both sequence numbers 0x10,
    /// nothing outstanding (WIRE.md §1.3.1).
    pub fn new() -> Link {
        Link {
            out_seq: seq::FIRST,
            in_seq: seq::FIRST,
            accepted_any: false,
            last_recv: seq::FIRST,
            window: VecDeque::with_capacity(WINDOW),
            next_id: 0,
            dropped: VecDeque::new(),
            nak_outstanding: false,
            last_ping: None,
            stats: LinkStats::default(),
        }
    }

    /// SEND of our last Action (`qlinkOutSeq`).
    pub fn out_seq(&self) -> u8 {
        self.out_seq
    }

    /// SEND of the client's last accepted Action (`qlinkInSeq`).
    pub fn in_seq(&self) -> u8 {
        self.in_seq
    }

    /// Actions sent and not yet acknowledged.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Whether [`Link::send_action`] has room for one more frame.
    pub fn can_send(&self) -> bool {
        self.window.len() < WINDOW
    }

    /// What the link has coped with so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Handles one item from the codec: a checked frame or the reason one was refused.
    pub fn receive(&mut self, item: Result<Frame, BadFrame>, now: Instant) -> Output {
        match item {
            Ok(frame) => self.on_frame(frame, now),
            Err(bad) => self.on_bad_frame(&bad),
        }
    }

    /// Handles a frame the codec could not accept (WIRE.md §1.3.4): a CRC failure, the
    /// C64's handshake probe included, gets one NAK carrying our sequence numbers (that is
    /// how the C64 learns them); no further NAK until a valid frame arrives, so line noise
    /// cannot make us flood. Anything else is dropped.
    pub fn on_bad_frame(&mut self, bad: &BadFrame) -> Output {
        let mut out = Output::default();
        if !bad.wants_nak() {
            self.stats.dropped_frames += 1;
        } else if self.nak_outstanding {
            self.stats.naks_debounced += 1;
        } else {
            self.nak_outstanding = true;
            self.stats.naks_sent += 1;
            out.send.push(self.unnumbered(Command::NAK));
        }
        out
    }

    /// Handles one checked frame.
    pub fn on_frame(&mut self, frame: Frame, now: Instant) -> Output {
        let mut out = Output::default();
        self.nak_outstanding = false;
        match frame.cmd {
            Command::RESET => self.on_reset(&mut out),
            Command::PING => {
                self.process_ack(frame.recv, now, &mut out);
                out.send.push(self.unnumbered(Command::RESET_ACK));
            }
            Command::ACTION => self.on_action(frame, now, &mut out),
            // WindowFull: bridge_v2 takes only the ack from it and sends no reply; the C64's
            // SSR (22) answer is not needed to keep it talking, so neither do we.
            Command::RESET_ACK | Command::WINDOW_FULL => {
                self.process_ack(frame.recv, now, &mut out);
            }
            Command::NAK | Command::SEQUENCE_ERROR => self.on_nak(now, &mut out),
            // 22 and unknown commands: ignored, as bridge_v2 does.
            _ => {}
        }
        out
    }

    /// Queues one Action carrying `payload` (already Habitat-escaped: it must hold no `0D`)
    /// and returns the frame to write. It stays in the window until the client acks it.
    pub fn send_action(&mut self, payload: Bytes, now: Instant) -> Result<Outbound, LinkError> {
        if let Some(at) = payload.iter().position(|&b| b == FRAME_END) {
            return Err(LinkError::FrameEnd { at });
        }
        let max = MAX_FRAME_LEN - HEADER_LEN;
        if payload.len() > max {
            return Err(LinkError::TooLong {
                len: payload.len(),
                max,
            });
        }
        if self.window.len() >= WINDOW {
            return Err(LinkError::WindowFull { max: WINDOW });
        }
        self.out_seq = seq::inc(self.out_seq);
        let frame = Frame {
            send: self.out_seq,
            recv: self.in_seq,
            cmd: Command::ACTION,
            payload,
        };
        let id = OutFrameId(self.next_id);
        self.next_id += 1;
        self.window.push_back(Pending {
            id,
            frame: frame.clone(),
            sent_at: now,
        });
        Ok(Outbound { id, frame })
    }

    /// A Ping with our current sequence numbers. The C64 has no ack timer (§1.3.3): a
    /// server that must know an Action arrived (before deleting delivered mail) sends this,
    /// and the C64 answers with `24` within about 0.1 s.
    pub fn ping(&mut self, now: Instant) -> Frame {
        self.last_ping = Some(now);
        self.stats.pings += 1;
        self.unnumbered(Command::PING)
    }

    /// The timer hook: call at [`Link::next_deadline`] (calling early or late is harmless).
    ///
    /// bridge_v2 resends only when a duplicate ack arrives, and the C64 acks only when it
    /// has something to say, so an idle player could leave our frames unacked for minutes
    /// (160 s recorded). Our choice: when the oldest frame has been on the wire for
    /// [`RESEND_AFTER`], Ping (at most once per [`RESEND_AFTER`]). The answer carries the
    /// client's RECV: either it acks the frames, or it repeats the old RECV and the usual
    /// duplicate-ack rule resends the oldest frame. So a lost frame costs one Ping and
    /// one resend, and a merely unacked one costs only the Ping.
    pub fn poll(&mut self, now: Instant) -> Option<Frame> {
        let due = self.next_deadline()?;
        (now >= due).then(|| self.ping(now))
    }

    /// When [`Link::poll`] next has something to do, if anything is outstanding.
    pub fn next_deadline(&self) -> Option<Instant> {
        let oldest = self.window.front()?;
        let stalled = oldest.sent_at.checked_add(RESEND_AFTER)?;
        match self.last_ping.and_then(|t| t.checked_add(RESEND_AFTER)) {
            Some(ping_due) if ping_due > stalled => Some(ping_due),
            _ => Some(stalled),
        }
    }

    /// What became of the Action `id`.
    ///
    /// Exact for every id since the last [`DROPPED_MEMORY`] Resets that discarded frames;
    /// older runs are merged, so an id between two old runs may read [`FrameStatus::Dropped`]
    /// although it was acked. That errs on the safe side: mail waiting on it is delivered
    /// again, never deleted unseen.
    pub fn status(&self, id: OutFrameId) -> FrameStatus {
        if id.0 >= self.next_id {
            return FrameStatus::Unknown;
        }
        if self.window.front().is_some_and(|p| id >= p.id) {
            return FrameStatus::Pending;
        }
        if self.dropped.iter().any(|r| r.contains(id)) {
            FrameStatus::Dropped
        } else {
            FrameStatus::Acked
        }
    }

    /// Whether the client has acknowledged the Action `id`.
    pub fn is_acked(&self, id: OutFrameId) -> bool {
        self.status(id) == FrameStatus::Acked
    }

    /// A bare ResetAck with our current sequence numbers: it acknowledges every Action
    /// accepted so far without sending one. The server never needs it (its RECV rides on
    /// its next frame); a client that acks each Action as it arrives sends this.
    pub fn ack(&self) -> Frame {
        self.unnumbered(Command::RESET_ACK)
    }

    /// Stops keeping the oldest unacknowledged Action for resending, to make room in a
    /// full window; returns its id, which from now on reads [`FrameStatus::Dropped`].
    ///
    /// The server never does this (it waits for acks). A test client that floods without
    /// reading does: it must keep sending past [`WINDOW`] without waiting for acks it
    /// does not read. Acks naming the given-up frame are ignored afterwards, like acks
    /// for frames never sent. Past [`WINDOW`] unacked frames the 7-bit numbers can be
    /// ambiguous, so a very stale ack may free frames early: they are then simply not
    /// resent, which a flooding client accepts.
    pub fn give_up_oldest(&mut self) -> Option<OutFrameId> {
        let oldest = self.window.pop_front()?;
        let id = oldest.id;
        // The window starts one later, so the "last RECV acted on" moves with it.
        self.last_recv = oldest.frame.send;
        match self.dropped.back_mut() {
            // Consecutive give-ups extend one run instead of filling the bounded memory.
            Some(run) if run.last.0.checked_add(1) == Some(id.0) => run.last = id,
            _ => self.remember_dropped(IdRange {
                first: id,
                last: id,
            }),
        }
        Some(id)
    }

    /// Reset (§1.3.4): forget the window, both sequence numbers back to 0x10, ResetAck.
    fn on_reset(&mut self, out: &mut Output) {
        self.stats.resets += 1;
        if let (Some(first), Some(last)) = (self.window.front(), self.window.back()) {
            let run = IdRange {
                first: first.id,
                last: last.id,
            };
            out.dropped = Some(run);
            self.remember_dropped(run);
        }
        self.window.clear();
        self.out_seq = seq::FIRST;
        self.in_seq = seq::FIRST;
        self.last_recv = seq::FIRST;
        self.accepted_any = false;
        out.send.push(self.unnumbered(Command::RESET_ACK));
    }

    fn remember_dropped(&mut self, run: IdRange) {
        self.dropped.push_back(run);
        if self.dropped.len() > DROPPED_MEMORY {
            // Merge the two oldest runs; the acked ids between them now read as dropped,
            // which only ever causes a redelivery.
            if let (Some(a), Some(b)) = (self.dropped.pop_front(), self.dropped.pop_front()) {
                self.dropped.push_front(IdRange {
                    first: a.first,
                    last: b.last,
                });
            }
        }
    }

    fn on_action(&mut self, frame: Frame, now: Instant, out: &mut Output) {
        self.process_ack(frame.recv, now, out);
        if !seq::is_valid(frame.send) {
            // Taking it would put an off-ring number into every RECV we send.
            self.stats.off_ring += 1;
            return;
        }
        if self.accepted_any {
            // DIFFERENCE from bridge_v2, which accepts every Action (inSeq = SEND): an
            // Action at or a little behind the last accepted one is a repeat of something
            // we already handed up, so it is dropped, and acked again in case our ack is
            // what the client missed. The C64 and QLR drop duplicates the same way.
            let behind = seq::forward(frame.send, self.in_seq);
            if behind <= DUPLICATE_REACH {
                self.stats.duplicates += 1;
                out.send.push(self.unnumbered(Command::RESET_ACK));
                return;
            }
            // Anything further ahead than the next number is a forward gap, accepted as
            // bridge_v2 does: the real C64 uses up a number after its `SG` Action without
            // sending it (its first Habitat Action after SG 11 is 13).
            if seq::forward(self.in_seq, frame.send) > 1 {
                self.stats.gaps += 1;
            }
        }
        self.accepted_any = true;
        self.in_seq = frame.send;
        match frame.payload.first().copied() {
            // `U?`: a Habitat packet (its `55` doubles as the mnemonic's `U`).
            Some(0x55) => out.packet = Some(Sensitive::new(frame.payload)),
            Some(b'S') if frame.payload.get(1) == Some(&b'S') => {
                // A full window means the client is not acking anyway; the SS reply is
                // flow control only, so skipping it loses nothing that matters.
                if let Ok(reply) = self.send_action(Bytes::from_static(b"SS"), now) {
                    out.send.push(reply.frame);
                }
            }
            // `SG` and any other mnemonic: accepted and acked (by our next RECV), no reply.
            _ => {}
        }
    }

    /// NAK or SequenceError. Its RECV is stale by nature (the client is saying it lost
    /// something), so it never frees a frame: we only resend, at once.
    fn on_nak(&mut self, now: Instant, out: &mut Output) {
        if !self.resend_oldest(now, out) {
            // Nothing of ours is outstanding, so what the client misses is our ack of its
            // own Action (the real C64 NAKs right after its `SG`, §1.3.5). bridge_v2 sends
            // nothing and the C64 waits ~9 s for its next heartbeat to be answered; a
            // ResetAck answers at once and is what a heartbeat would get anyway.
            out.send.push(self.unnumbered(Command::RESET_ACK));
        }
    }

    /// Ack processing (§1.3.4), cumulative.
    ///
    /// - RECV names a frame in the window: it and everything older is acked. The window
    ///   holds consecutive seqs, so this is bridge_v2's `qlinkAckCovers` rule, made exact
    ///   for windows over 56 frames, where bridge_v2's 56-step reach would miss old frames.
    /// - RECV repeats the last one while frames are outstanding: the oldest may be lost.
    ///   It is resent, but only once it has been on the wire for [`RESEND_AFTER`]; bridge_v2
    ///   counts the 3 s from its previous resend only, so it resends frames still in flight
    ///   whenever the client's own frames cross ours.
    /// - Anything else (an ack of a frame never sent, a stale RECV) is ignored, where
    ///   bridge_v2 would adopt it as lastRecv.
    fn process_ack(&mut self, recv: u8, now: Instant, out: &mut Output) {
        if recv == self.last_recv {
            let stalled = self
                .window
                .front()
                .is_some_and(|p| now.saturating_duration_since(p.sent_at) >= RESEND_AFTER);
            if stalled {
                self.resend_oldest(now, out);
            }
            return;
        }
        let Some(front) = self.window.front() else {
            self.stats.ignored_acks += 1;
            return;
        };
        let covered = usize::from(seq::forward(front.seq_of(), recv)) + 1;
        if !seq::is_valid(recv) || covered > self.window.len() {
            self.stats.ignored_acks += 1;
            return;
        }
        let first = front.id;
        let mut last = first;
        for pending in self.window.drain(..covered) {
            last = pending.id;
        }
        out.acked = Some(IdRange { first, last });
        self.last_recv = recv;
    }

    /// Go-back-1: sends the oldest unacked frame again, its RECV refreshed to our current
    /// inSeq (the CRC follows when it is written). Returns whether there was one.
    fn resend_oldest(&mut self, now: Instant, out: &mut Output) -> bool {
        let in_seq = self.in_seq;
        let Some(oldest) = self.window.front_mut() else {
            return false;
        };
        oldest.sent_at = now;
        let mut frame = oldest.frame.clone();
        frame.recv = in_seq;
        out.send.push(frame);
        self.stats.resends += 1;
        true
    }

    /// An unnumbered frame: SEND is our last used number, RECV the client's (§1.3.3).
    fn unnumbered(&self, cmd: Command) -> Frame {
        Frame::bare(cmd, self.out_seq, self.in_seq)
    }
}

impl Pending {
    fn seq_of(&self) -> u8 {
        self.frame.send
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn action(send: u8, recv: u8, payload: &'static [u8]) -> Frame {
        Frame {
            send,
            recv,
            cmd: Command::ACTION,
            payload: Bytes::from_static(payload),
        }
    }

    fn bare(cmd: Command, send: u8, recv: u8) -> Frame {
        Frame::bare(cmd, send, recv)
    }

    const CRC_BAD: BadFrame = BadFrame::Crc {
        said: 1,
        got: 2,
        probe: false,
    };

    /// A small Habitat packet; `n` tells them apart (a `0D` would need escaping).
    fn pkt(n: u8) -> Bytes {
        let n = if n == FRAME_END { n + 1 } else { n };
        Bytes::from(vec![0x55, 0xfa, 0x00, 0x0f, n])
    }

    #[test]
    fn window_is_bounded_at_64() {
        let now = Instant::now();
        let mut link = Link::new();
        for n in 0..WINDOW {
            assert!(link.can_send());
            link.send_action(pkt(n as u8), now).unwrap();
        }
        assert!(!link.can_send());
        assert_eq!(
            link.send_action(pkt(0), now),
            Err(LinkError::WindowFull { max: WINDOW })
        );
        assert_eq!(link.window_len(), WINDOW);
        // 64 frames from 0x11 on: the newest is 0x50. Acking 0x30 frees 0x11..=0x30.
        let out = link.on_frame(bare(Command::RESET_ACK, 0x10, 0x30), now);
        assert_eq!(
            out.acked,
            Some(IdRange {
                first: OutFrameId(0),
                last: OutFrameId(31)
            })
        );
        assert_eq!(link.window_len(), 32);
        // Acking the newest frees all 64, though it is more than 56 steps from the oldest
        // (bridge_v2's 56-step reach would have stranded the oldest frames).
        let mut link2 = Link::new();
        for n in 0..WINDOW {
            link2.send_action(pkt(n as u8), now).unwrap();
        }
        let out = link2.on_frame(bare(Command::RESET_ACK, 0x10, 0x50), now);
        assert_eq!(
            out.acked,
            Some(IdRange {
                first: OutFrameId(0),
                last: OutFrameId(63)
            })
        );
        assert_eq!(link2.window_len(), 0);
    }

    #[test]
    fn send_action_refuses_what_cannot_be_framed() {
        let now = Instant::now();
        let mut link = Link::new();
        let max = MAX_FRAME_LEN - HEADER_LEN;
        assert!(link.send_action(Bytes::from(vec![0x55; max]), now).is_ok());
        assert_eq!(
            link.send_action(Bytes::from(vec![0x55; max + 1]), now),
            Err(LinkError::TooLong { len: max + 1, max })
        );
        assert_eq!(
            link.send_action(Bytes::from_static(&[0x55, 0x0d]), now),
            Err(LinkError::FrameEnd { at: 1 })
        );
        assert_eq!((link.out_seq(), link.window_len()), (0x11, 1));
    }

    #[test]
    fn go_back_1_resend_rewrites_recv_and_crc() {
        let now = Instant::now();
        let mut link = Link::new();
        let first = link.send_action(pkt(1), now).unwrap();
        link.send_action(pkt(2), now).unwrap();
        assert_eq!((first.frame.send, first.frame.recv), (0x11, 0x10));
        link.on_frame(action(0x11, 0x10, b"\x55\xe0"), now);
        link.on_frame(action(0x12, 0x10, b"\x55\xe1"), now);
        let out = link.on_frame(bare(Command::NAK, 0x12, 0x10), now);
        assert_eq!(out.send.len(), 1, "go-back-1: only the oldest");
        let resent = out.send[0].to_bytes();
        let original = first.frame.to_bytes();
        assert_eq!(resent[6], 0x12, "byte 6 is the current inSeq");
        assert_eq!(original[6], 0x10);
        assert_eq!(resent[5], 0x11);
        assert_eq!(resent[8..], original[8..]);
        assert_ne!(resent[1..5], original[1..5], "CRC recomputed");
        let parsed = Frame::parse(resent).unwrap();
        assert_eq!(parsed.recv, 0x12);
        // The NAK freed nothing.
        assert_eq!(link.window_len(), 2);
        assert_eq!(link.stats().resends, 1);
    }

    #[test]
    fn duplicate_action_is_dropped_but_acked() {
        let now = Instant::now();
        let mut link = Link::new();
        assert!(link
            .on_frame(action(0x11, 0x10, b"\x55\xe0"), now)
            .packet
            .is_some());
        let out = link.on_frame(action(0x11, 0x10, b"\x55\xe0"), now);
        assert!(out.packet.is_none());
        assert_eq!(out.send, vec![bare(Command::RESET_ACK, 0x10, 0x11)]);
        assert!(link
            .on_frame(action(0x12, 0x10, b"\x55\xe1"), now)
            .packet
            .is_some());
        assert!(link
            .on_frame(action(0x13, 0x10, b"\x55\xe2"), now)
            .packet
            .is_some());
        // A little behind: a repeat too.
        assert!(link
            .on_frame(action(0x11, 0x10, b"\x55\xe0"), now)
            .packet
            .is_none());
        assert_eq!(link.in_seq(), 0x13);
        assert_eq!(link.stats().duplicates, 2);
        // 33 behind 0x13 (wrapping) is no longer a repeat: it reads as a forward gap.
        let far = 0x13 + seq::RING - 33;
        assert!(link
            .on_frame(action(far, 0x10, b"\x55\xe3"), now)
            .packet
            .is_some());
        assert_eq!(link.in_seq(), far);
    }

    #[test]
    fn forward_gap_is_accepted_and_first_action_takes_any_number() {
        let now = Instant::now();
        let mut link = Link::new();
        // SG 11, then 13: the real C64 skips 12.
        let out = link.on_frame(action(0x11, 0x10, b"SG"), now);
        assert!(out.packet.is_none() && out.send.is_empty());
        let out = link.on_frame(action(0x13, 0x10, b"\x55\xe0\x00\x03"), now);
        assert_eq!(
            out.packet.map(|p| p.into_exposed()),
            Some(Bytes::from_static(b"\x55\xe0\x00\x03"))
        );
        assert_eq!((link.in_seq(), link.stats().gaps), (0x13, 1));
        // After a Reset the first Action is taken whatever its number, 0x10 included.
        link.on_frame(bare(Command::RESET, 0x7f, 0x7f), now);
        assert!(link
            .on_frame(action(0x10, 0x10, b"\x55"), now)
            .packet
            .is_some());
        assert_eq!(link.in_seq(), 0x10);
    }

    #[test]
    fn off_ring_send_is_ignored() {
        let now = Instant::now();
        let mut link = Link::new();
        let out = link.on_frame(action(0x05, 0x10, b"\x55"), now);
        assert!(out.packet.is_none());
        assert_eq!((link.in_seq(), link.stats().off_ring), (0x10, 1));
    }

    #[test]
    fn nak_is_debounced_until_a_valid_frame() {
        let now = Instant::now();
        let mut link = Link::new();
        let nak = vec![bare(Command::NAK, 0x10, 0x10)];
        assert_eq!(link.on_bad_frame(&CRC_BAD).send, nak);
        assert!(link.on_bad_frame(&CRC_BAD).send.is_empty());
        assert!(link.receive(Err(CRC_BAD), now).send.is_empty());
        // Too short / no sync / too long: dropped, never NAKed.
        let mut fresh = Link::new();
        for bad in [
            BadFrame::TooShort { len: 3 },
            BadFrame::NoSync { first: 0x41 },
            BadFrame::TooLong { max: 128 },
        ] {
            assert!(fresh.on_bad_frame(&bad).send.is_empty());
        }
        assert_eq!(fresh.stats().dropped_frames, 3);
        // A valid frame re-arms the NAK, which carries the current numbers.
        link.on_frame(action(0x11, 0x10, b"SG"), now);
        assert_eq!(
            link.on_bad_frame(&CRC_BAD).send,
            vec![bare(Command::NAK, 0x10, 0x11)]
        );
        assert_eq!(link.stats().naks_sent, 2);
        assert_eq!(link.stats().naks_debounced, 2);
    }

    #[test]
    fn ack_covering_wraps_the_ring() {
        let t = Instant::now();
        let mut link = Link::new();
        // Walk our numbers up to 0x7D, everything acked.
        for _ in 0x11..=0x7d {
            let sent = link.send_action(pkt(0), t).unwrap();
            link.on_frame(bare(Command::RESET_ACK, 0x10, sent.frame.send), t);
        }
        assert_eq!((link.out_seq(), link.window_len()), (0x7d, 0));
        let seqs: Vec<u8> = (0..4)
            .map(|_| link.send_action(pkt(1), t).unwrap().frame.send)
            .collect();
        assert_eq!(seqs, [0x7e, 0x7f, 0x10, 0x11]);
        let out = link.on_frame(bare(Command::RESET_ACK, 0x10, 0x10), t);
        assert_eq!(link.window_len(), 1, "0x7e, 0x7f and 0x10 acked by 0x10");
        let acked = out.acked.unwrap();
        assert_eq!(acked.last.0 - acked.first.0, 2);
        // A stale ack (from before the wrap) frees nothing.
        let out = link.on_frame(bare(Command::RESET_ACK, 0x10, 0x7f), t);
        assert_eq!((out.acked, link.window_len()), (None, 1));
        assert_eq!(link.stats().ignored_acks, 1);
    }

    #[test]
    fn acks_for_frames_never_sent_are_ignored() {
        let t = Instant::now();
        let mut link = Link::new();
        link.send_action(pkt(0), t).unwrap(); // 0x11
        let out = link.on_frame(bare(Command::PING, 0x10, 0x15), t);
        assert_eq!((out.acked, link.window_len()), (None, 1));
        // The real ack still works afterwards.
        let out = link.on_frame(bare(Command::PING, 0x10, 0x11), t);
        assert_eq!(
            out.acked,
            Some(IdRange {
                first: OutFrameId(0),
                last: OutFrameId(0)
            })
        );
    }

    #[test]
    fn acked_reporting_follows_each_frame() {
        let t = Instant::now();
        let mut link = Link::new();
        let a = link.send_action(pkt(0), t).unwrap().id;
        let b = link.send_action(pkt(1), t).unwrap().id;
        assert_eq!(
            (link.status(a), link.status(b)),
            (FrameStatus::Pending, FrameStatus::Pending)
        );
        assert_eq!(link.status(OutFrameId(2)), FrameStatus::Unknown);
        link.on_frame(bare(Command::RESET_ACK, 0x10, 0x11), t);
        assert!(link.is_acked(a));
        assert!(!link.is_acked(b));
        // A Reset discards b: it must never read as delivered.
        let out = link.on_frame(bare(Command::RESET, 0x7f, 0x7f), t);
        assert_eq!(out.dropped, Some(IdRange { first: b, last: b }));
        assert_eq!(out.send, vec![bare(Command::RESET_ACK, 0x10, 0x10)]);
        assert_eq!(
            (link.status(a), link.status(b)),
            (FrameStatus::Acked, FrameStatus::Dropped)
        );
        // Ids go on counting across the Reset; sequence numbers start again.
        let c = link.send_action(pkt(2), t).unwrap();
        assert_eq!((c.id, c.frame.send), (OutFrameId(2), 0x11));
        link.on_frame(bare(Command::RESET_ACK, 0x10, 0x11), t);
        assert!(link.is_acked(c.id));
        assert_eq!(link.status(b), FrameStatus::Dropped);
    }

    #[test]
    fn old_dropped_runs_merge_towards_redelivery() {
        let t = Instant::now();
        let mut link = Link::new();
        let mut acked = Vec::new();
        for _ in 0..=DROPPED_MEMORY {
            let a = link.send_action(pkt(0), t).unwrap().id;
            link.on_frame(bare(Command::RESET_ACK, 0x10, 0x11), t);
            acked.push(a);
            link.send_action(pkt(1), t).unwrap();
            link.on_frame(bare(Command::RESET, 0x7f, 0x7f), t);
        }
        // Memory stays bounded; the first acked frame after the first run now reads as
        // dropped (safe: redelivered, not lost), the recent ones stay exact.
        assert_eq!(link.dropped.len(), DROPPED_MEMORY);
        assert!(link.is_acked(acked[0]));
        assert_eq!(link.status(acked[1]), FrameStatus::Dropped);
        assert!(acked[2..].iter().all(|&id| link.is_acked(id)));
    }

    #[test]
    fn duplicate_ack_resends_only_a_frame_out_for_3_s() {
        let t0 = Instant::now();
        let mut link = Link::new();
        link.send_action(pkt(0), t0).unwrap();
        // The client's own frame crossed ours: RECV still 0x10. No resend yet.
        let out = link.on_frame(bare(Command::PING, 0x10, 0x10), t0 + Duration::from_secs(1));
        assert_eq!(out.send, vec![bare(Command::RESET_ACK, 0x11, 0x10)]);
        let later = t0 + RESEND_AFTER;
        let out = link.on_frame(bare(Command::PING, 0x10, 0x10), later);
        assert_eq!(out.send.len(), 2);
        assert_eq!((out.send[0].cmd, out.send[0].send), (Command::ACTION, 0x11));
        // Not again until it has been out 3 s since that resend.
        let out = link.on_frame(
            bare(Command::RESET_ACK, 0x10, 0x10),
            later + Duration::from_secs(2),
        );
        assert!(out.send.is_empty());
        let out = link.on_frame(bare(Command::RESET_ACK, 0x10, 0x10), later + RESEND_AFTER);
        assert_eq!(out.send.len(), 1);
    }

    #[test]
    fn ack_frame_carries_both_sequence_numbers() {
        let t = Instant::now();
        let mut link = Link::new();
        link.on_frame(action(0x11, 0x10, b"\x55\x01"), t);
        link.send_action(pkt(0), t).unwrap();
        assert_eq!(link.ack(), bare(Command::RESET_ACK, 0x11, 0x11));
        assert_eq!(link.window_len(), 1, "sending an ack frees nothing");
    }

    #[test]
    fn giving_up_the_oldest_makes_room_and_reads_dropped() {
        let t = Instant::now();
        let mut link = Link::new();
        assert_eq!(link.give_up_oldest(), None);
        let mut ids = Vec::new();
        while link.can_send() {
            ids.push(link.send_action(pkt(0), t).unwrap().id);
        }
        assert_eq!(link.give_up_oldest(), Some(ids[0]));
        assert_eq!(link.give_up_oldest(), Some(ids[1]));
        assert!(link.can_send());
        assert_eq!(link.status(ids[0]), FrameStatus::Dropped);
        assert_eq!(link.status(ids[1]), FrameStatus::Dropped);
        assert_eq!(link.dropped.len(), 1, "consecutive give-ups share one run");
        let next = link.send_action(pkt(1), t).unwrap();
        // An ack for a given-up frame frees nothing; one for the new front frees it.
        let out = link.on_frame(bare(Command::RESET_ACK, 0x10, 0x12), t);
        assert_eq!((out.acked, link.window_len()), (None, WINDOW - 1));
        let out = link.on_frame(bare(Command::RESET_ACK, 0x10, 0x13), t);
        assert_eq!(
            out.acked,
            Some(IdRange {
                first: ids[2],
                last: ids[2]
            })
        );
        assert_eq!(link.status(next.id), FrameStatus::Pending);
        assert_eq!(link.status(ids[1]), FrameStatus::Dropped);
    }

    #[test]
    fn poll_pings_when_acks_stall() {
        let t0 = Instant::now();
        let mut link = Link::new();
        assert_eq!(
            (
                link.next_deadline(),
                link.poll(t0 + Duration::from_secs(60))
            ),
            (None, None)
        );
        link.send_action(pkt(0), t0).unwrap();
        assert_eq!(link.next_deadline(), Some(t0 + RESEND_AFTER));
        assert_eq!(link.poll(t0 + Duration::from_millis(2999)), None);
        let ping = link.poll(t0 + RESEND_AFTER);
        assert_eq!(ping, Some(bare(Command::PING, 0x11, 0x10)));
        // At most one Ping per 3 s.
        assert_eq!(link.poll(t0 + Duration::from_secs(4)), None);
        assert_eq!(link.next_deadline(), Some(t0 + 2 * RESEND_AFTER));
        assert!(link.poll(t0 + 2 * RESEND_AFTER).is_some());
        // The answer acks the frame: nothing left to chase.
        link.on_frame(
            bare(Command::RESET_ACK, 0x10, 0x11),
            t0 + Duration::from_secs(7),
        );
        assert_eq!(link.next_deadline(), None);
        assert_eq!(link.stats().pings, 2);
    }

    #[test]
    fn ss_is_answered_with_ss_unless_the_window_is_full() {
        let t = Instant::now();
        let mut link = Link::new();
        let out = link.on_frame(action(0x11, 0x10, b"SS"), t);
        assert_eq!(out.send, vec![action(0x11, 0x11, b"SS")]);
        assert_eq!(link.window_len(), 1);
        while link.can_send() {
            link.send_action(pkt(0), t).unwrap();
        }
        let out = link.on_frame(action(0x12, 0x10, b"SS"), t);
        assert!(out.send.is_empty());
        assert_eq!(link.in_seq(), 0x12, "the Action is still accepted");
    }

    #[test]
    fn window_full_and_unknown_commands() {
        let t = Instant::now();
        let mut link = Link::new();
        link.send_action(pkt(0), t).unwrap();
        let out = link.on_frame(bare(Command::WINDOW_FULL, 0x10, 0x11), t);
        assert!(out.send.is_empty());
        assert_eq!(link.window_len(), 0, "WindowFull still carries an ack");
        link.send_action(pkt(0), t).unwrap();
        let out = link.on_frame(bare(Command(0x30), 0x10, 0x12), t);
        assert!(out.send.is_empty());
        assert_eq!(
            link.window_len(),
            1,
            "unknown commands are ignored entirely"
        );
    }

    /// One thing that can happen to a link.
    #[derive(Debug, Clone)]
    enum Op {
        Raw(Vec<u8>),
        Frame(u8, u8, u8, Vec<u8>),
        Send(Vec<u8>),
        Wait(u16),
        Poll,
        Ping,
    }

    fn op() -> impl Strategy<Value = Op> {
        let seq = prop_oneof![0x0eu8..=0x81, any::<u8>()];
        let cmd = prop_oneof![0x20u8..=0x26, Just(0x3f), any::<u8>()];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Op::Raw),
            (
                seq.clone(),
                seq,
                cmd,
                proptest::collection::vec(any::<u8>(), 0..8)
            )
                .prop_map(|(s, r, c, p)| Op::Frame(s, r, c, p)),
            proptest::collection::vec(any::<u8>(), 0..130).prop_map(Op::Send),
            any::<u16>().prop_map(Op::Wait),
            Just(Op::Poll),
            Just(Op::Ping),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(ops in proptest::collection::vec(op(), 0..200)) {
            let mut now = Instant::now();
            let mut link = Link::new();
            let mut ids = Vec::new();
            for op in ops {
                let out = match op {
                    Op::Raw(raw) => link.receive(Frame::parse(Bytes::from(raw)), now),
                    Op::Frame(s, r, c, p) => {
                        link.on_frame(Frame { send: s, recv: r, cmd: Command(c), payload: p.into() }, now)
                    }
                    Op::Send(p) => {
                        if let Ok(sent) = link.send_action(Bytes::from(p), now) {
                            prop_assert!(sent.frame.wire_len() <= MAX_FRAME_LEN);
                            ids.push(sent.id);
                        }
                        Output::default()
                    }
                    Op::Wait(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        Output::default()
                    }
                    Op::Poll => Output { send: link.poll(now).into_iter().collect(), ..Output::default() },
                    Op::Ping => Output { send: vec![link.ping(now)], ..Output::default() },
                };
                prop_assert!(out.send.len() <= 2);
                prop_assert!(link.window_len() <= WINDOW);
                prop_assert!(link.dropped.len() <= DROPPED_MEMORY);
                prop_assert!(seq::is_valid(link.out_seq()) && seq::is_valid(link.in_seq()));
                for frame in &out.send {
                    prop_assert!(seq::is_valid(frame.send) && seq::is_valid(frame.recv));
                    prop_assert!(!frame.payload.contains(&FRAME_END));
                    prop_assert!(Frame::parse(frame.to_bytes()).is_ok());
                }
                if let Some(r) = out.acked {
                    prop_assert!(r.first <= r.last);
                    prop_assert!(link.is_acked(r.first) && link.is_acked(r.last));
                }
                if let Some(r) = out.dropped {
                    prop_assert_eq!(link.status(r.last), FrameStatus::Dropped);
                }
                // The window holds exactly the newest ids, in order.
                let pending = ids.iter().filter(|&&id| link.status(id) == FrameStatus::Pending).count();
                prop_assert_eq!(pending, link.window_len());
            }
        }
    }

    /// A client that behaves like the C64 (§1.3.3): takes only the next server Action,
    /// ignores repeats, NAKs a frame from ahead, answers a Ping with an ack, and acks
    /// otherwise only on its own frames.
    struct C64 {
        last: u8,
        own: u8,
        received: Vec<Bytes>,
        to_server: VecDeque<Frame>,
    }

    impl C64 {
        fn hear(&mut self, frame: Frame) {
            match frame.cmd {
                Command::ACTION if frame.send == seq::inc(self.last) => {
                    self.last = frame.send;
                    self.received.push(frame.payload);
                }
                Command::ACTION if seq::forward(frame.send, self.last) <= 32 => {}
                Command::ACTION => {
                    self.to_server
                        .push_back(Frame::bare(Command::NAK, self.own, self.last))
                }
                Command::PING => {
                    self.to_server
                        .push_back(Frame::bare(Command::RESET_ACK, self.own, self.last))
                }
                _ => {}
            }
        }
    }

    #[derive(Debug, Clone)]
    enum SimOp {
        ServerSends,
        ClientAction,
        ClientHeartbeat,
        Tick(u16),
    }

    fn sim_op() -> impl Strategy<Value = SimOp> {
        prop_oneof![
            4 => Just(SimOp::ServerSends),
            1 => Just(SimOp::ClientAction),
            1 => Just(SimOp::ClientHeartbeat),
            2 => (0u16..5000).prop_map(SimOp::Tick),
        ]
    }

    proptest! {
        /// Over a line that loses server frames, an Action reads as acked only once the
        /// client really has it (the mail code deletes on that), and once the line is
        /// quiet the Pings and go-back-1 resends get every Action through, once each, in
        /// order.
        #[test]
        fn acked_means_received_and_everything_arrives(
            ops in proptest::collection::vec(sim_op(), 0..120),
            losses in proptest::collection::vec(any::<bool>(), 1..64),
        ) {
            let mut now = Instant::now();
            let mut link = Link::new();
            let mut c64 = C64 { last: 0x10, own: 0x10, received: Vec::new(), to_server: VecDeque::new() };
            let mut sent: Vec<(OutFrameId, Bytes)> = Vec::new();
            let mut client_sent = 0u32;
            let mut server_got = 0u32;
            let mut lose = losses.iter().copied().cycle();
            let mut wire_out: Vec<Frame> = Vec::new();
            for op in ops.iter().cloned().chain(std::iter::repeat_n(SimOp::Tick(3000), 3 * WINDOW + 8)) {
                let quiet = matches!(op, SimOp::Tick(3000)) ;
                match op {
                    SimOp::ServerSends => {
                        let n = sent.len() as u64;
                        let payload = Bytes::from(vec![0x55, 0xfa, 0x00, 0x0f, 0x20 | (n as u8 & 0x3f), (n >> 6) as u8 | 0x40]);
                        if let Ok(out) = link.send_action(payload.clone(), now) {
                            sent.push((out.id, payload));
                            wire_out.push(out.frame);
                        }
                    }
                    SimOp::ClientAction => {
                        c64.own = seq::inc(c64.own);
                        client_sent += 1;
                        let f = Frame { send: c64.own, recv: c64.last, cmd: Command::ACTION, payload: Bytes::from_static(b"\x55\xe0") };
                        c64.to_server.push_back(f);
                    }
                    SimOp::ClientHeartbeat => {
                        c64.to_server.push_back(Frame::bare(Command::PING, c64.own, c64.last));
                    }
                    SimOp::Tick(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        wire_out.extend(link.poll(now));
                    }
                }
                // Deliver until both directions are empty. Server frames may be lost, but
                // not during the quiet tail.
                while !wire_out.is_empty() || !c64.to_server.is_empty() {
                    for frame in std::mem::take(&mut wire_out) {
                        if quiet || !lose.next().unwrap_or(false) {
                            c64.hear(frame);
                        }
                    }
                    while let Some(frame) = c64.to_server.pop_front() {
                        let out = link.on_frame(frame, now);
                        if out.packet.is_some() {
                            server_got += 1;
                        }
                        wire_out.extend(out.send);
                    }
                }
                for (i, (id, _)) in sent.iter().enumerate() {
                    if link.is_acked(*id) {
                        prop_assert!(i < c64.received.len(), "id {} acked, not received", id.0);
                    }
                }
            }
            let payloads: Vec<Bytes> = sent.iter().map(|(_, p)| p.clone()).collect();
            prop_assert_eq!(&c64.received, &payloads);
            prop_assert!(sent.iter().all(|(id, _)| link.is_acked(*id)));
            prop_assert_eq!(server_got, client_sent);
            prop_assert_eq!(link.stats().duplicates, 0);
        }
    }
}
