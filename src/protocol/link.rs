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
//! May touch: [`super::frame`] only.

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
