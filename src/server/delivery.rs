//! Delivery of waiting ESP Mail at login (ESPMAIL.md §2): the mailbox lease, the pacing,
//! and the one rule that needs the link: a delivered message is deleted only once the
//! client acked the frame carrying its last line.
//!
//! The session opens the avatar's mailbox (which leases it: no other session can open it
//! meanwhile) and hands it to [`Delivery::start`]; from then on it feeds the delivery
//! what happens and draws the [`Show`]s it gets back:
//!
//! - the answer to the "Next ESP Mail" prompt ([`Delivery::answer`]), or the session's
//!   prompt timer running out ([`Delivery::lapsed`]: the player is told the rest stays
//!   stored, and a late answer still counts), or another prompt taking the prompt line
//!   ([`Delivery::superseded`]: nothing more this login);
//! - which frame carries each message's tagged last packet ([`Delivery::framed`], from the
//!   outbound side);
//! - the client's acks ([`Delivery::acked`] deletes every message whose last frame the
//!   client now has; a frame that carried only a header line deletes nothing) and its
//!   Resets ([`Delivery::dropped`]: the frames it threw away confirm nothing, so their mail
//!   comes again at the next login).
//!
//! The lease ends with the value. The session drops it once [`Delivery::is_done`] (nothing
//! more will be delivered and nothing waits for an ack), or when the connection ends, and
//! then before anything else, so a login that replaced this one can open the mailbox.
//!
//! May touch: the leased mailbox it is given (through [`Leased`]); no socket, no clock.

use std::future::Future;
use std::time::SystemTime;

use tracing::{info, warn};

use super::outbound::Tag;
use crate::espmail::{MailId, Mailbox, PendingMail, StoreError};
use crate::log_redact::Sensitive;
use crate::protocol::link::{IdRange, OutFrameId};
use crate::world::esp::{self, DeliveryPacer, PacerStep};

/// The leased mailbox as delivery uses it: [`Mailbox`] in the server, a fake in tests.
pub trait Leased: Send {
    /// Messages not yet taken.
    fn remaining(&self) -> usize;
    /// Takes the oldest message to deliver it; it stays stored until confirmed.
    fn next(&mut self) -> Option<PendingMail>;
    /// Deletes a delivered message the client acknowledged.
    fn confirm(&self, id: MailId) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

impl Leased for Mailbox {
    fn remaining(&self) -> usize {
        Mailbox::remaining(self)
    }

    fn next(&mut self) -> Option<PendingMail> {
        Mailbox::next(self)
    }

    fn confirm(&self, id: MailId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        Mailbox::confirm(self, id)
    }
}

/// What the session shows its client for the delivery, in order.
#[derive(Debug)]
pub enum Show {
    /// A line from the region: the count, or [`esp::MAIL_KEPT`].
    Line(String),
    /// One message: its header line, then its body, whose last packet the session tags
    /// with `id` (the message is deleted once the client acked that packet's frame).
    Mail {
        /// "ESP Mail from NAME, Mon DD HH:MM:"
        header: String,
        /// The text, speakable and padded.
        body: Sensitive<Vec<u8>>,
        /// The message.
        id: MailId,
    },
    /// Ask this "Next ESP Mail" question (PROMPT_USER); the session's prompt timer starts.
    Ask(String),
}

/// One login's delivery: the leased mailbox and the messages waiting for their ack.
pub struct Delivery<M = Mailbox> {
    mailbox: M,
    pacer: DeliveryPacer,
    /// Messages shown whose last packet has not been framed yet.
    unframed: Vec<MailId>,
    /// (frame carrying the last line, message): deleted once the frame is acked.
    awaiting: Vec<(OutFrameId, MailId)>,
    /// The player said N, stopped answering, or everything was shown.
    stopped: bool,
}

impl<M: Leased> Delivery<M> {
    /// Starts delivering what `mailbox` holds: the count line and the first message. `None`
    /// when nothing waits (the mailbox is dropped, and its lease with it).
    pub fn start(mailbox: M) -> Option<(Delivery<M>, Vec<Show>)> {
        let (pacer, line) = DeliveryPacer::start(mailbox.remaining())?;
        info!(waiting = mailbox.remaining(), "delivering ESP Mail");
        let mut delivery = Delivery {
            mailbox,
            pacer,
            unframed: Vec::new(),
            awaiting: Vec::new(),
            stopped: false,
        };
        let mut shows = vec![Show::Line(line)];
        delivery.deliver_next(&mut shows);
        Some((delivery, shows))
    }

    /// The answer to the "Next ESP Mail" prompt (stripped of the prompt echo).
    pub fn answer(&mut self, answer: &[u8]) -> Vec<Show> {
        let mut shows = Vec::new();
        let step = self.pacer.answer(answer);
        self.step(step, &mut shows);
        shows
    }

    /// The session's prompt timer ran out on the "Next ESP Mail" prompt: the player is
    /// told the rest is kept (the C64 cannot take the prompt back, so silence would leave
    /// it asking). The lease is kept: an answer that comes later still counts (a `Y`
    /// delivers the next, which is still stored), until another prompt or the end of the
    /// session.
    pub fn lapsed(&mut self) -> Vec<Show> {
        info!("no answer to the next-mail prompt; the rest is kept");
        let mut shows = Vec::new();
        let step = self.pacer.lapsed();
        self.step(step, &mut shows);
        shows
    }

    /// Whether the last "Next ESP Mail" prompt lapsed and a late answer would still be
    /// taken (the session routes a prompt reply here when no prompt is pending).
    pub fn is_lapsed(&self) -> bool {
        self.pacer.is_lapsed()
    }

    /// Another prompt took the prompt line: nothing more is delivered this login; an
    /// open question is answered for the player with "ESP Mail kept for later.".
    pub fn superseded(&mut self) -> Vec<Show> {
        let mut shows = Vec::new();
        let step = self.pacer.superseded();
        self.step(step, &mut shows);
        self.stopped = true;
        shows
    }

    /// The outbound side took a message's tagged packet from its queue.
    pub fn framed(&mut self, tag: Tag) {
        self.unframed.retain(|m| *m != tag.mail);
        if let Some(frame) = tag.frame {
            self.awaiting.push((frame, tag.mail));
        }
    }

    /// Deletes every delivered message whose last frame the client has now acked.
    pub async fn acked(&mut self, is_acked: impl Fn(OutFrameId) -> bool) {
        let mut still = Vec::new();
        for (frame, mail) in std::mem::take(&mut self.awaiting) {
            if !is_acked(frame) {
                still.push((frame, mail));
                continue;
            }
            match self.mailbox.confirm(mail).await {
                Ok(_) => info!("delivered ESP Mail acked and deleted"),
                Err(e) => {
                    warn!(error = %e, "delivered ESP Mail could not be deleted; it will come again")
                }
            }
        }
        self.awaiting = still;
    }

    /// A client Reset threw away frames unacked: their mail is not confirmed (it stays and
    /// comes again at the next login).
    pub fn dropped(&mut self, range: IdRange) {
        let before = self.awaiting.len();
        self.awaiting.retain(|(frame, _)| !range.contains(*frame));
        let lost = before - self.awaiting.len();
        if lost > 0 {
            info!(
                lost,
                "client reset before acking delivered mail; kept for next login"
            );
        }
    }

    /// Whether the lease may end: nothing more will be delivered and nothing waits for an
    /// ack.
    pub fn is_done(&self) -> bool {
        (self.stopped || self.mailbox.remaining() == 0)
            && self.unframed.is_empty()
            && self.awaiting.is_empty()
    }

    /// Shows the oldest undelivered message, then asks about the next, if any.
    fn deliver_next(&mut self, shows: &mut Vec<Show>) {
        let Some(mail) = self.mailbox.next() else {
            self.stopped = true;
            return;
        };
        let sent = mail
            .sent
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The decrypted text's working copy is zeroed as the message is (on drop).
        let speakable = zeroize::Zeroizing::new(esp::speakable(mail.text.expose()));
        shows.push(Show::Mail {
            header: esp::mail_header(&mail.sender, sent),
            body: Sensitive::new(esp::pad_body(&speakable)),
            id: mail.id,
        });
        self.unframed.push(mail.id);
        let step = self.pacer.delivered();
        self.step(step, shows);
    }

    fn step(&mut self, step: PacerStep, shows: &mut Vec<Show>) {
        match step {
            PacerStep::Deliver => self.deliver_next(shows),
            PacerStep::Ask(text) => shows.push(Show::Ask(text)),
            PacerStep::Kept => {
                shows.push(Show::Line(esp::MAIL_KEPT.to_string()));
                self.stopped = true;
            }
            PacerStep::Lapsed => shows.push(Show::Line(esp::MAIL_KEPT.to_string())),
            PacerStep::Finished => self.stopped = true,
            PacerStep::Ignore => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use espmail_test_macros::bounded;

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::super::outbound::wire::{ack_of, cmds, outbound, wire, written, Wire};
    use super::super::outbound::Outbound;
    use super::*;
    use crate::espmail::crypto::MAIL_ID_LEN;
    use crate::protocol::frame::{Command, Frame};
    use crate::protocol::messages::ServerMessage;

    /// Waiting mail in memory; records what was confirmed.
    struct FakeBox {
        items: VecDeque<PendingMail>,
        confirmed: Arc<Mutex<Vec<MailId>>>,
    }

    impl Leased for FakeBox {
        fn remaining(&self) -> usize {
            self.items.len()
        }
        fn next(&mut self) -> Option<PendingMail> {
            self.items.pop_front()
        }
        fn confirm(&self, id: MailId) -> impl Future<Output = Result<bool, StoreError>> + Send {
            let confirmed = Arc::clone(&self.confirmed);
            async move {
                confirmed.lock().unwrap().push(id);
                Ok(true)
            }
        }
    }

    fn id(n: u8) -> MailId {
        MailId([n; MAIL_ID_LEN])
    }

    /// `n` messages from Alice, ids 1..=n, and the list their confirmations go to.
    fn mailbox(n: u8) -> (FakeBox, Arc<Mutex<Vec<MailId>>>) {
        let confirmed = Arc::new(Mutex::new(Vec::new()));
        let items = (1..=n)
            .map(|i| PendingMail {
                id: id(i),
                sender: "Alice".into(),
                sent: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_748_359),
                text: Sensitive::new(format!("message {i}").into_bytes()),
            })
            .collect();
        let b = FakeBox {
            items,
            confirmed: Arc::clone(&confirmed),
        };
        (b, confirmed)
    }

    fn talk(text: Vec<u8>) -> ServerMessage {
        ServerMessage::ObjectTalks {
            speaker: 0,
            text: Sensitive::new(text),
        }
    }

    /// The session's part, over the real outbound side and codec: queues what the delivery
    /// shows (tagging each body), writes it, tells the delivery which frames carry the
    /// tags, and returns the frames the client reads.
    async fn show<M: Leased>(
        out: &mut Outbound,
        w: &mut Wire,
        d: &mut Delivery<M>,
        shows: Vec<Show>,
    ) -> Vec<Frame> {
        for s in shows {
            match s {
                Show::Line(text) => out.send(&talk(text.into_bytes())),
                Show::Mail { header, body, id } => {
                    out.send(&talk(header.into_bytes()));
                    out.send_tagged(&talk(body.expose().clone()), id);
                }
                Show::Ask(text) => out.send(&ServerMessage::PromptUser(text.into())),
            }
        }
        for tag in out.pump(w).await.unwrap() {
            d.framed(tag);
        }
        written(w)
    }

    /// The client acks up to `frame`; the delivery confirms what that covers.
    async fn ack<M: Leased>(out: &mut Outbound, d: &mut Delivery<M>, frame: &Frame) {
        assert!(ack_of(out, frame).acked.is_some(), "the ack was taken");
        let link = out.link();
        d.acked(|f| link.is_acked(f)).await;
    }

    fn labels(shows: &[Show]) -> Vec<String> {
        shows
            .iter()
            .map(|s| match s {
                Show::Line(t) => format!("line {t}"),
                Show::Mail { header, body, .. } => {
                    format!("mail {header} {}", String::from_utf8_lossy(body.expose()))
                }
                Show::Ask(t) => format!("ask {t}"),
            })
            .collect()
    }

    #[bounded]
    #[tokio::test]
    async fn a_message_is_deleted_once_the_frame_with_its_last_line_is_acked_and_not_before() {
        let (b, confirmed) = mailbox(2);
        let (mut d, shows) = Delivery::start(b).unwrap();
        assert_eq!(
            labels(&shows),
            [
                "line You have 2 ESP Mail (times UTC).",
                "mail ESP Mail from Alice, Nov 23 14:05: message 1",
                "ask Next ESP Mail (1 left)? (Y/N) ",
            ]
        );
        let (mut out, mut w) = (outbound(), wire());
        let frames = show(&mut out, &mut w, &mut d, shows).await;
        // count, header, body, prompt, then the Ping that asks for the body's ack.
        assert_eq!(
            cmds(&frames),
            [
                Command::ACTION,
                Command::ACTION,
                Command::ACTION,
                Command::ACTION,
                Command::PING
            ]
        );
        ack(&mut out, &mut d, &frames[1]).await;
        assert!(
            confirmed.lock().unwrap().is_empty(),
            "the header's frame alone deletes nothing"
        );
        ack(&mut out, &mut d, &frames[2]).await;
        assert_eq!(*confirmed.lock().unwrap(), [id(1)]);
        assert!(!d.is_done(), "one more to deliver");

        let shows = d.answer(b"y");
        assert_eq!(
            labels(&shows),
            ["mail ESP Mail from Alice, Nov 23 14:05: message 2"]
        );
        assert!(!d.is_done(), "the last one is not framed yet");
        let frames = show(&mut out, &mut w, &mut d, shows).await;
        assert!(!d.is_done(), "the last one waits for its ack");
        ack(&mut out, &mut d, &frames[0]).await;
        assert_eq!(*confirmed.lock().unwrap(), [id(1)], "header only");
        ack(&mut out, &mut d, &frames[1]).await;
        assert_eq!(*confirmed.lock().unwrap(), [id(1), id(2)]);
        assert!(d.is_done(), "the lease may end");
        // A later ack confirms nothing twice.
        d.acked(|_| true).await;
        assert_eq!(confirmed.lock().unwrap().len(), 2);
    }

    #[bounded]
    #[tokio::test]
    async fn a_lapsed_next_prompt_says_kept_and_a_late_yes_still_delivers() {
        let (b, confirmed) = mailbox(3);
        let (mut d, shows) = Delivery::start(b).unwrap();
        let (mut out, mut w) = (outbound(), wire());
        let frames = show(&mut out, &mut w, &mut d, shows).await;
        assert_eq!(labels(&d.lapsed()), ["line ESP Mail kept for later."]);
        assert!(d.is_lapsed());
        ack(&mut out, &mut d, &frames[3]).await;
        assert_eq!(*confirmed.lock().unwrap(), [id(1)]);
        assert!(!d.is_done(), "the lease is kept for a late answer");
        assert_eq!(d.mailbox.remaining(), 2, "the rest was never taken");
        // A late Y delivers the next message anyway: it is still stored.
        let late = d.answer(b"y");
        let said = labels(&late);
        assert!(said[0].starts_with("mail ESP Mail from "), "{said:?}");
        assert_eq!(said[1], "ask Next ESP Mail (1 left)? (Y/N) ");
        assert!(!d.is_lapsed());
        // A late N to the next lapse keeps the rest, and says so again.
        show(&mut out, &mut w, &mut d, late).await;
        assert_eq!(labels(&d.lapsed()), ["line ESP Mail kept for later."]);
        assert_eq!(labels(&d.answer(b"n")), ["line ESP Mail kept for later."]);
        assert!(d.answer(b"y").is_empty(), "only one late answer counts");
    }

    #[bounded]
    #[tokio::test]
    async fn another_prompt_ends_the_delivery_and_answers_an_open_question() {
        let (b, confirmed) = mailbox(3);
        let (mut d, shows) = Delivery::start(b).unwrap();
        let (mut out, mut w) = (outbound(), wire());
        let frames = show(&mut out, &mut w, &mut d, shows).await;
        assert_eq!(labels(&d.superseded()), ["line ESP Mail kept for later."]);
        ack(&mut out, &mut d, &frames[3]).await;
        assert_eq!(*confirmed.lock().unwrap(), [id(1)]);
        assert!(d.is_done(), "nothing more this login: the lease may end");
        assert!(d.answer(b"y").is_empty());
        // After a lapse the player was told already: superseding says nothing more.
        let (b, _) = mailbox(2);
        let (mut d, shows) = Delivery::start(b).unwrap();
        show(&mut out, &mut w, &mut d, shows).await;
        d.lapsed();
        assert!(d.superseded().is_empty());
        assert!(!d.is_lapsed());
    }

    #[bounded]
    #[tokio::test]
    async fn n_keeps_the_rest_and_says_so() {
        let (b, confirmed) = mailbox(2);
        let (mut d, shows) = Delivery::start(b).unwrap();
        let (mut out, mut w) = (outbound(), wire());
        let frames = show(&mut out, &mut w, &mut d, shows).await;
        assert_eq!(labels(&d.answer(b"N")), ["line ESP Mail kept for later."]);
        assert!(!d.is_done());
        ack(&mut out, &mut d, &frames[2]).await;
        assert_eq!(*confirmed.lock().unwrap(), [id(1)]);
        assert!(d.is_done());
    }

    #[bounded]
    #[tokio::test]
    async fn a_client_reset_drops_the_tag_and_deletes_nothing() {
        let (b, confirmed) = mailbox(1);
        let (mut d, shows) = Delivery::start(b).unwrap();
        assert_eq!(
            labels(&shows).len(),
            2,
            "count and the one message, no prompt"
        );
        let (mut out, mut w) = (outbound(), wire());
        show(&mut out, &mut w, &mut d, shows).await;
        assert!(!d.is_done());
        let reset = out.receive(Ok(Frame::bare(Command::RESET, 0x10, 0x10)), Instant::now());
        d.dropped(reset.dropped.expect("the reset threw frames away"));
        assert!(d.is_done(), "nothing waits for an ack any more");
        d.acked(|f| out.link().is_acked(f)).await;
        assert!(
            confirmed.lock().unwrap().is_empty(),
            "kept for the next login"
        );
    }

    #[bounded]
    #[tokio::test]
    async fn nothing_waiting_starts_nothing() {
        let (b, _) = mailbox(0);
        assert!(Delivery::start(b).is_none());
    }

    /// Against the real store: while a session's delivery holds the lease, a second login
    /// waits; once the replaced session lets go, the second opens the mailbox and gets
    /// what the first did not get acked (and not what it did).
    #[bounded]
    #[tokio::test]
    async fn a_second_login_opens_the_mailbox_once_the_replaced_session_lets_go() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let dir = tempfile::tempdir().unwrap();
            let keyfile = crate::espmail::keyfile::Keyfile::generate().unwrap();
            let handle = crate::espmail::MailHandle::with_keyfile(
                &dir.path().join("mail.db"),
                &keyfile,
                crate::espmail::Limits::default(),
            )
            .unwrap();
            let t0 = SystemTime::now();
            for (i, text) in ["first", "second"].into_iter().enumerate() {
                let at = t0 + Duration::from_secs(i as u64);
                let text = Sensitive::new(text.as_bytes().to_vec());
                handle.save("bob", "Alice", text, at).await.unwrap();
            }

            // The first session delivers and gets the first acked, shows the second
            // unacked, and is then replaced.
            let mailbox = handle.open_mailbox("bob").await.unwrap();
            let (mut d, shows) = Delivery::start(mailbox).unwrap();
            let (mut out, mut w) = (outbound(), wire());
            let frames = show(&mut out, &mut w, &mut d, shows).await;
            ack(&mut out, &mut d, &frames[2]).await;
            assert_eq!(handle.count_waiting("bob").await.unwrap(), 1);
            let shows = d.answer(b"");
            show(&mut out, &mut w, &mut d, shows).await;
            assert!(!d.is_done(), "the second waits for its ack");

            // The second login waits for the lease ...
            let second = tokio::spawn({
                let handle = handle.clone();
                async move { handle.open_mailbox("bob").await }
            });
            tokio::task::yield_now().await;
            assert!(!second.is_finished(), "the lease is still held");
            // ... which the replaced session releases as it ends.
            drop(d);
            let mut again = second.await.unwrap().expect("the lease was released");
            assert_eq!(again.remaining(), 1);
            let mail = again.next().unwrap();
            assert_eq!(mail.text.expose(), b"second", "the unacked one comes again");
            drop(again);
            handle.shutdown().await.unwrap();
        })
        .await
        .expect("bounded");
    }
}
