//! The outbound side of one connection: packets queued for the client, written as Q-Link
//! Actions while the link's window has room, paced to the client's line speed.
//!
//! [`Outbound`] owns the connection's [`Link`] (both directions' sequence numbers live
//! there, so inbound frames pass through [`Outbound::receive`] too) and its byte-rate
//! [`Pacer`]. A queued packet may carry a tag: the id of the delivered ESP Mail whose last
//! line it holds. When a tagged packet is framed, [`Outbound::pump`] says which frame
//! carries it (delivery deletes the mail once the client acked that frame) and sends a
//! Ping after it, because the C64 acks only when asked (WIRE.md 1.3.3). A client that stops
//! acking while more than [`MAX_QUEUED_PACKETS`] wait for room is stuck: the session ends.
//!
//! May touch: the frame sink it is handed (the session's codec over its stream) and the
//! clock, for pacing; nothing else.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tracing::{debug, trace, warn};

use super::pace::Pacer;
use crate::espmail::MailId;
use crate::log_redact::{self, Dir, Fingerprinter};
use crate::protocol::frame::{BadFrame, Frame};
use crate::protocol::link::{Link, LinkError, OutFrameId, Output};
use crate::protocol::messages::ServerMessage;

/// Packets waiting for room in the link's window before the client counts as stuck.
pub const MAX_QUEUED_PACKETS: usize = 512;

/// Why writing to the client failed; either ends the session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The client stopped acking while the server had more to send.
    #[error("client stopped acknowledging ({0} packets queued)")]
    Stuck(usize),
}

/// One packet waiting for room in the link window.
struct Queued {
    /// Habitat-escaped: the payload of one Action frame.
    payload: Bytes,
    /// The delivered message whose last line this packet carries.
    mail: Option<MailId>,
}

/// What became of a tagged packet when [`Outbound::pump`] took it from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The delivered message.
    pub mail: MailId,
    /// The frame that carries its last line; `None` when the packet could not be framed
    /// (it was dropped, so the message can never be confirmed this login).
    pub frame: Option<OutFrameId>,
}

/// The outbound queue, the link and the pacer of one connection.
pub struct Outbound {
    link: Link,
    pacer: Pacer,
    queue: VecDeque<Queued>,
    /// The session's fingerprint key, for the debug lines of what goes out.
    fp: Arc<Fingerprinter>,
}

impl Outbound {
    /// A fresh link (as right after the login preamble), paced at `bytes_per_sec` (0 =
    /// no cap); packets show in debug lines under the session's fingerprinter `fp`.
    pub fn new(bytes_per_sec: u32, fp: Arc<Fingerprinter>) -> Outbound {
        Outbound {
            link: Link::new(),
            pacer: Pacer::new(bytes_per_sec),
            queue: VecDeque::new(),
            fp,
        }
    }

    /// The link, to ask what became of a frame.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Packets waiting for room in the window.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Hands one item from the codec to the link (see [`Link::receive`]); the caller
    /// writes [`Output::send`] with [`Outbound::write`].
    pub fn receive(&mut self, item: Result<Frame, BadFrame>, now: Instant) -> Output {
        self.link.receive(item, now)
    }

    /// When the link's timer next has something to do ([`Outbound::poll`]).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.link.next_deadline()
    }

    /// Queues a message; [`Outbound::pump`] writes it when the window has room.
    pub fn send(&mut self, msg: &ServerMessage) {
        for packet in msg.packets() {
            let h = packet.header;
            let numbers = (h.ctrl, h.noid, h.reqnum);
            trace!(hab = %log_redact::habitat(Dir::Out, numbers, &packet.payload, Some(&self.fp)), "packet");
            self.queue.push_back(Queued {
                payload: packet.escaped(),
                mail: None,
            });
        }
    }

    /// Queues a message whose last packet carries delivered mail `id`.
    pub fn send_tagged(&mut self, msg: &ServerMessage, id: MailId) {
        self.send(msg);
        if let Some(last) = self.queue.back_mut() {
            last.mail = Some(id);
        }
    }

    /// Writes queued packets while the link window has room, then a Ping if one of them
    /// finished a delivered message, since the C64 acks only when asked (WIRE.md 1.3.3).
    /// Returns what became of the tagged packets taken from the queue, in order.
    pub async fn pump<W>(&mut self, sink: &mut W) -> Result<Vec<Tag>, SendError>
    where
        W: Sink<Frame, Error = io::Error> + Unpin,
    {
        let mut tags = Vec::new();
        while self.link.can_send() {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            let len = q.payload.len();
            // A clone is a reference count: the packet stays queued if the link refuses it.
            match self.link.send_action(q.payload.clone(), Instant::now()) {
                Ok(out) => {
                    if let Some(mail) = q.mail {
                        tags.push(Tag {
                            mail,
                            frame: Some(out.id),
                        });
                    }
                    self.write(sink, out.frame).await?;
                }
                // `can_send` said there was room; should the link disagree, the packet
                // waits for the next pump like any other.
                Err(LinkError::WindowFull { .. }) => {
                    self.queue.push_front(q);
                    break;
                }
                Err(e) => {
                    warn!(error = %e, len, "packet could not be framed; dropped");
                    if let Some(mail) = q.mail {
                        tags.push(Tag { mail, frame: None });
                    }
                }
            }
        }
        if tags.iter().any(|t| t.frame.is_some()) {
            let frame = self.link.ping(Instant::now());
            self.write(sink, frame).await?;
        }
        if self.queue.len() > MAX_QUEUED_PACKETS {
            return Err(SendError::Stuck(self.queue.len()));
        }
        Ok(tags)
    }

    /// The link's timer: writes the Ping it asks for, if it is due.
    pub async fn poll<W>(&mut self, sink: &mut W) -> Result<(), SendError>
    where
        W: Sink<Frame, Error = io::Error> + Unpin,
    {
        if let Some(frame) = self.link.poll(Instant::now()) {
            self.write(sink, frame).await?;
        }
        Ok(())
    }

    /// Writes one frame once the pacer lets it go.
    pub async fn write<W>(&mut self, sink: &mut W, frame: Frame) -> Result<(), SendError>
    where
        W: Sink<Frame, Error = io::Error> + Unpin,
    {
        let wait = self.pacer.reserve(frame.wire_len() + 1, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        debug!(pkt = %log_redact::packet(Dir::Out, &frame.cmd, (frame.send, frame.recv), &frame.payload, Some(&self.fp)), "frame");
        sink.send(frame).await?;
        Ok(())
    }
}

/// A client's view of what [`Outbound`] writes, for the tests of this module and of
/// delivery: the real codec over a byte buffer, and the client's acks.
#[cfg(test)]
pub(super) mod wire {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::protocol::frame::Command;
    use crate::protocol::qlink::QLinkCodec;
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, FramedWrite};

    /// Where the frames go.
    pub type Wire = FramedWrite<Vec<u8>, QLinkCodec>;

    pub fn wire() -> Wire {
        FramedWrite::new(Vec::new(), QLinkCodec::new())
    }

    /// An unpaced [`Outbound`] with a fingerprinter of its own.
    pub fn outbound() -> Outbound {
        Outbound::new(0, Arc::new(Fingerprinter::random()))
    }

    /// Decodes (and forgets) everything written so far.
    pub fn written(w: &mut Wire) -> Vec<Frame> {
        let mut buf = BytesMut::from(&std::mem::take(w.get_mut())[..]);
        let mut codec = QLinkCodec::new();
        let mut frames = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            frames.push(item.expect("the server writes only good frames"));
        }
        assert!(buf.is_empty(), "a partial frame was written");
        frames
    }

    pub fn cmds(frames: &[Frame]) -> Vec<Command> {
        frames.iter().map(|f| f.cmd).collect()
    }

    /// The client's ack of every Action up to (and including) `frame`.
    pub fn ack_of(out: &mut Outbound, frame: &Frame) -> Output {
        let ack = Frame::bare(Command::RESET_ACK, out.link().in_seq(), frame.send);
        out.receive(Ok(ack), Instant::now())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use espmail_test_macros::bounded;

    use super::wire::*;
    use super::*;
    use crate::log_redact::Sensitive;
    use crate::protocol::frame::Command;
    use crate::protocol::link::WINDOW;

    fn line(text: &str) -> ServerMessage {
        ServerMessage::ObjectTalks {
            speaker: 0,
            text: Sensitive::new(text.as_bytes().to_vec()),
        }
    }

    const MAIL: MailId = MailId([7; crate::espmail::crypto::MAIL_ID_LEN]);

    #[bounded]
    #[tokio::test]
    async fn a_full_window_keeps_packets_queued_until_the_client_acks() {
        let mut out = outbound();
        let mut w = wire();
        for _ in 0..WINDOW + 5 {
            out.send(&ServerMessage::CaughtUp);
        }
        assert!(out.pump(&mut w).await.unwrap().is_empty());
        let first = written(&mut w);
        assert_eq!(first.len(), WINDOW, "one window's worth, no Ping");
        assert!(first.iter().all(|f| f.cmd == Command::ACTION));
        assert_eq!(out.queued(), 5);
        // Nothing more goes out while nothing is acked.
        out.pump(&mut w).await.unwrap();
        assert!(written(&mut w).is_empty());
        assert_eq!(out.queued(), 5);

        let acked = ack_of(&mut out, &first[9]);
        assert!(acked.acked.is_some());
        out.pump(&mut w).await.unwrap();
        assert_eq!(written(&mut w).len(), 5, "room for ten, five waited");
        assert_eq!(out.queued(), 0);
    }

    #[bounded]
    #[tokio::test]
    async fn the_packet_carrying_a_mails_last_line_is_tagged_and_pinged() {
        let mut out = outbound();
        let mut w = wire();
        out.send(&line("ESP Mail from Alice, Nov 23 14:05:"));
        out.send_tagged(&line("meet me by the fountain"), MAIL);
        let tags = out.pump(&mut w).await.unwrap();
        let frames = written(&mut w);
        assert_eq!(
            cmds(&frames),
            [Command::ACTION, Command::ACTION, Command::PING]
        );
        // The tag names the second Action (the body), not the header's.
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].mail, MAIL);
        let body = tags[0].frame.unwrap();
        ack_of(&mut out, &frames[0]);
        assert!(
            !out.link().is_acked(body),
            "the header's ack is not the body's"
        );
        ack_of(&mut out, &frames[1]);
        assert!(out.link().is_acked(body));

        // Untagged lines get no Ping.
        out.send(&line("hello"));
        assert!(out.pump(&mut w).await.unwrap().is_empty());
        assert_eq!(cmds(&written(&mut w)), [Command::ACTION]);
    }

    #[bounded]
    #[tokio::test]
    async fn a_tag_behind_a_full_window_is_reported_when_its_packet_goes_out() {
        let mut out = outbound();
        let mut w = wire();
        for _ in 0..WINDOW {
            out.send(&ServerMessage::CaughtUp);
        }
        out.send_tagged(&line("the mail"), MAIL);
        assert!(out.pump(&mut w).await.unwrap().is_empty());
        let first = written(&mut w);
        assert_eq!(cmds(&first).last(), Some(&Command::ACTION), "no Ping yet");
        ack_of(&mut out, first.last().unwrap());
        let tags = out.pump(&mut w).await.unwrap();
        assert_eq!(tags.len(), 1);
        assert!(tags[0].frame.is_some());
        assert_eq!(cmds(&written(&mut w)), [Command::ACTION, Command::PING]);
    }

    #[bounded]
    #[tokio::test]
    async fn a_client_that_stops_acking_is_stuck_past_the_limit() {
        let mut out = outbound();
        let mut w = wire();
        for _ in 0..WINDOW + MAX_QUEUED_PACKETS {
            out.send(&ServerMessage::CaughtUp);
        }
        out.pump(&mut w).await.unwrap();
        assert_eq!(
            out.queued(),
            MAX_QUEUED_PACKETS,
            "at the limit: still waiting"
        );
        out.send(&ServerMessage::CaughtUp);
        match out.pump(&mut w).await {
            Err(SendError::Stuck(n)) => assert_eq!(n, MAX_QUEUED_PACKETS + 1),
            other => panic!("expected Stuck, got {other:?}"),
        }
    }

    #[bounded]
    #[tokio::test]
    async fn the_link_timer_pings_frames_left_unacked() {
        let mut out = outbound();
        let mut w = wire();
        out.send(&line("hello"));
        out.pump(&mut w).await.unwrap();
        written(&mut w);
        let due = out.next_deadline().expect("a frame is outstanding");
        assert!(due > Instant::now(), "not due at once");
        // Early calls do nothing.
        out.poll(&mut w).await.unwrap();
        assert!(written(&mut w).is_empty());
    }
}
