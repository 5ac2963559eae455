//! The Plaza as one connection sees it: its seat in the world's registry (noids, presence,
//! its bounded outbox), what it tells the other sessions, and how the region is drawn for
//! its own client: the DESCRIBE contents vector, and HEREIS / APPEAR / GOAWAY / SPEAK$ for
//! the others' comings, goings and speech.
//!
//! A connection has no seat until the session gives it one ([`Plaza::take_seat`]): a
//! refused connection never does, so it holds no noids (DESIGN.md promise 10). Until then
//! its noid is FF, as a ghost's.
//!
//! Sessions never send each other bytes: they exchange [`Push`] values through the
//! registry, and each one draws them for its own client with [`Plaza::draw`].
//!
//! May touch: the registry (seat, enter, leave, broadcast); no socket, no clock.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::esp;
use crate::avatar::AvatarName;
use crate::log_redact::Sensitive;
use crate::protocol::messages::{
    AvatarState, CommonState, ContentsVector, RegionState, ServerMessage, REGION_NOID,
    UNASSIGNED_NOID,
};
use crate::world::esp::{LiveEsp, RegistryDirectory};
use crate::world::{KickReason, Member, Noids, Registry};

/// What one session tells another, through the registry's bounded outboxes. Never bytes:
/// each session encodes for its own client.
#[derive(Debug, Clone)]
pub enum Push {
    /// An avatar arrived in the Plaza: HEREIS.
    Arrived(Noids),
    /// An avatar appeared (after its HERE_I_AM): APPEAR.
    Appeared(u8),
    /// An avatar left: GOAWAY for it and its head.
    Left(Noids),
    /// Speech in the Plaza: SPEAK$ over the speaker.
    Spoke {
        /// The speaker's avatar noid.
        noid: u8,
        /// What was said.
        text: Sensitive<Vec<u8>>,
    },
    /// A live ESP for this avatar.
    Esp(Box<LiveEsp>),
    /// A line from the server to show (e.g. the debug notice).
    Notice(&'static str),
}

/// One connection's place in the Plaza.
pub struct Plaza {
    registry: Arc<Registry<Push>>,
    /// The seat, once taken.
    member: Option<Member<Push>>,
    outbox_tx: mpsc::Sender<Push>,
    outbox_rx: mpsc::Receiver<Push>,
    /// The client asked for the region (DESCRIBE answered): it can show the others.
    drawn: bool,
    /// Present: reachable by name, and announced to the others.
    entered: bool,
    /// Never cancelled: what [`Plaza::kicked`] gives before there is a seat to kick.
    unseated: CancellationToken,
}

impl Plaza {
    /// A place in the Plaza with an outbox of `outbox_len` pushes, and no seat yet.
    pub fn new(registry: &Arc<Registry<Push>>, outbox_len: usize) -> Plaza {
        let (outbox_tx, outbox_rx) = mpsc::channel(outbox_len.max(1));
        Plaza {
            registry: Arc::clone(registry),
            member: None,
            outbox_tx,
            outbox_rx,
            drawn: false,
            entered: false,
            unseated: CancellationToken::new(),
        }
    }

    /// Takes a seat (noids, or a ghost's none when fewer than two are free). Once only.
    pub fn take_seat(&mut self) {
        if self.member.is_none() {
            self.member = Some(self.registry.seat());
        }
    }

    /// Gives the seat back (its noids are free again), at the end of the session. Leave
    /// first: the others are told only by [`Plaza::leave`].
    pub fn give_up_seat(&mut self) {
        self.member = None;
    }

    /// A place with its seat taken (the tests').
    #[cfg(test)]
    pub fn seat(registry: &Arc<Registry<Push>>, outbox_len: usize) -> Plaza {
        let mut p = Plaza::new(registry, outbox_len);
        p.take_seat();
        p
    }

    /// This avatar's noid (`Who_am_I`): FF for a ghost, or before a seat is taken.
    pub fn my_noid(&self) -> u8 {
        self.noids().map_or(UNASSIGNED_NOID, |n| n.avatar)
    }

    fn noids(&self) -> Option<Noids> {
        self.member.as_ref().and_then(Member::noids)
    }

    /// Whether the avatar has entered (and so is visible to the others).
    pub fn entered(&self) -> bool {
        self.entered
    }

    /// Fires when the world closes this session (replaced by a second login, too slow).
    /// Take it again once a seat was taken: before, it never fires.
    pub fn kicked(&self) -> CancellationToken {
        match &self.member {
            Some(m) => m.kicked().clone(),
            None => self.unseated.clone(),
        }
    }

    /// Why the world closed this session, once it did.
    pub fn kick_reason(&self) -> Option<KickReason> {
        self.member.as_ref().and_then(Member::kick_reason)
    }

    /// The next push from another session.
    pub async fn next_push(&mut self) -> Option<Push> {
        self.outbox_rx.recv().await
    }

    /// Who is online, for the ESP dialogue; live ESP goes out as [`Push::Esp`].
    pub fn directory(&self) -> RegistryDirectory<'_, Push, fn(LiveEsp) -> Push> {
        RegistryDirectory::new(&self.registry, |live| Push::Esp(Box::new(live)))
    }

    /// The DESCRIBE reply: the region with every avatar present (this one included), in
    /// noid order. From now on the client can show the others' pushes.
    pub fn describe(&mut self, seq: u8) -> ServerMessage {
        let me = self.member.as_ref().map(Member::id);
        let mut everyone: Vec<Noids> = self
            .registry
            .present()
            .into_iter()
            .filter(|p| Some(p.id) != me)
            .filter_map(|p| p.noids)
            .collect();
        everyone.extend(self.noids());
        everyone.sort_by_key(|n| n.avatar);
        let mut vector = ContentsVector::describe(RegionState::new(self.my_noid(), 0));
        for n in everyone {
            vector = with_avatar(vector, n);
        }
        self.drawn = true;
        ServerMessage::DescribeReply { seq, vector }
    }

    /// Whether a request on `noid` may be acted on: it must be this avatar's own noid, and
    /// the region must have been described. (Not logged here: the session counts speech
    /// that fails this as bad input, and a request on another avatar is a click.)
    pub fn owns(&self, noid: u8) -> bool {
        // A ghost (no noids left) talks on FF, its Who_am_I.
        noid == self.my_noid() && self.drawn
    }

    /// Makes the avatar `name` present: reachable by name, and announced to the others
    /// (HEREIS). A present session of the same avatar is replaced. Once only; takes the
    /// seat first if there is none yet.
    pub fn enter(&mut self, name: &AvatarName) {
        if self.entered {
            return;
        }
        self.take_seat();
        let Some(member) = &self.member else {
            return;
        };
        let entered = member.enter(name, self.outbox_tx.clone());
        self.entered = true;
        if let Some(noids) = self.noids() {
            self.broadcast(&Push::Arrived(noids));
        }
        info!(replaced = entered.replaced.is_some(), "entered the Plaza");
    }

    /// Tells the others this avatar appeared. A ghost is in nobody's contents vector, so
    /// there is nothing for them to show.
    pub fn announce_appear(&self) {
        if let Some(noids) = self.noids() {
            self.broadcast(&Push::Appeared(noids.avatar));
        }
    }

    /// Ordinary speech, for everyone else present.
    pub fn chat(&self, words: Sensitive<Vec<u8>>) {
        let noid = self.my_noid();
        self.broadcast(&Push::Spoke { noid, text: words });
    }

    /// Leaves the Plaza (at the end of the session): the others see GOAWAY.
    pub fn leave(&mut self) {
        let Some(member) = self.member.as_ref().filter(|_| self.entered) else {
            return;
        };
        member.leave();
        if let Some(noids) = self.noids() {
            self.broadcast(&Push::Left(noids));
        }
    }

    /// What this client shows for a push. The others' comings, goings and speech need the
    /// region drawn first; an ESP or a notice is shown anyway.
    pub fn draw(&self, push: Push) -> Vec<ServerMessage> {
        match push {
            Push::Arrived(noids) if self.drawn => {
                vec![ServerMessage::HereIs(with_avatar(
                    ContentsVector::hereis(),
                    noids,
                ))]
            }
            Push::Appeared(noid) if self.drawn => vec![ServerMessage::Appear { noid }],
            Push::Left(noids) if self.drawn => vec![
                ServerMessage::GoAway { noid: noids.avatar },
                ServerMessage::GoAway { noid: noids.head },
            ],
            Push::Spoke { noid, text } if self.drawn => vec![ServerMessage::Speak { noid, text }],
            Push::Arrived(_) | Push::Appeared(_) | Push::Left(_) | Push::Spoke { .. } => Vec::new(),
            Push::Esp(live) => esp::show_live(*live, self.my_noid()).into(),
            Push::Notice(text) => vec![ServerMessage::ObjectTalks {
                speaker: REGION_NOID,
                text: Sensitive::new(text.as_bytes().to_vec()),
            }],
        }
    }

    fn broadcast(&self, push: &Push) {
        self.registry
            .broadcast(self.member.as_ref().map(Member::id), push);
    }
}

/// An avatar and its head in a contents vector. Avatars stand in a row across the Plaza so
/// they do not overlap; the states are those of the reference vectors.
fn with_avatar(vector: ContentsVector, n: Noids) -> ContentsVector {
    let x = 0x10u8.wrapping_add(n.avatar.wrapping_mul(12) % 0x80);
    let avatar = AvatarState {
        common: CommonState {
            style: 0,
            x,
            y: 0x96,
            orientation: 0,
            gr_state: 0,
            container: 0,
        },
        activity: 0x81,
        action: 0x81,
        health: 0xFF,
        restrainer: 0,
        custom: [0x63, 0x2c],
    };
    let head = CommonState {
        style: 5,
        x: 0,
        y: 6,
        orientation: 0x10,
        gr_state: 0,
        container: n.avatar,
    };
    vector.avatar_with_head(n.avatar, avatar, n.head, head)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn name(s: &str) -> AvatarName {
        AvatarName::parse(s).unwrap()
    }

    fn world() -> Arc<Registry<Push>> {
        Arc::new(Registry::new())
    }

    /// The pushes waiting for `p`, drawn.
    fn drawn(p: &mut Plaza) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        while let Ok(push) = p.outbox_rx.try_recv() {
            out.extend(p.draw(push));
        }
        out
    }

    #[test]
    fn the_others_are_drawn_only_once_the_region_was_described() {
        let registry = world();
        let mut alice = Plaza::seat(&registry, 8);
        alice.enter(&name("Alice"));
        let mut bob = Plaza::seat(&registry, 8);
        bob.enter(&name("Bob"));
        // Alice has not asked for the region: Bob's arrival and speech show nothing.
        bob.chat(Sensitive::new(b"hi".to_vec()));
        assert!(drawn(&mut alice).is_empty());
        // An ESP and a notice are shown anyway.
        let live = alice.draw(Push::Esp(Box::new(LiveEsp::new(name("Bob"), b"psst"))));
        assert_eq!(live.len(), 3);
        assert!(matches!(
            &live[1],
            ServerMessage::Play { noid, .. } if *noid == alice.my_noid()
        ));
        assert_eq!(alice.draw(Push::Notice("n")).len(), 1);

        let ServerMessage::DescribeReply { seq: 4, .. } = alice.describe(4) else {
            panic!("not a DESCRIBE reply")
        };
        bob.chat(Sensitive::new(b"hello".to_vec()));
        bob.announce_appear();
        bob.leave();
        let b = bob.noids().unwrap();
        assert_eq!(
            drawn(&mut alice),
            [
                ServerMessage::Speak {
                    noid: b.avatar,
                    text: Sensitive::new(b"hello".to_vec())
                },
                ServerMessage::Appear { noid: b.avatar },
                ServerMessage::GoAway { noid: b.avatar },
                ServerMessage::GoAway { noid: b.head },
            ]
        );
    }

    #[test]
    fn an_arrival_after_describe_is_a_hereis() {
        let registry = world();
        let mut alice = Plaza::seat(&registry, 8);
        alice.enter(&name("Alice"));
        alice.describe(0);
        let mut bob = Plaza::seat(&registry, 8);
        bob.enter(&name("Bob"));
        assert!(matches!(&drawn(&mut alice)[..], [ServerMessage::HereIs(_)]));
        // Entering again announces nothing more.
        bob.enter(&name("Bob"));
        assert!(drawn(&mut alice).is_empty());
    }

    #[test]
    fn describe_shows_everyone_present_in_noid_order() {
        let registry = world();
        let mut seats: Vec<Plaza> = (0..3).map(|_| Plaza::seat(&registry, 8)).collect();
        seats[0].enter(&name("Ann"));
        seats[2].enter(&name("Cyd"));
        // Seat 1 is not present (not entered): only itself and the two present.
        let ServerMessage::DescribeReply { vector, .. } = seats[1].describe(0) else {
            panic!()
        };
        let noids: Vec<Noids> = seats.iter().map(|p| p.noids().unwrap()).collect();
        let mut expected = ContentsVector::describe(RegionState::new(noids[1].avatar, 0));
        let mut order = noids.clone();
        order.sort_by_key(|n| n.avatar);
        for n in order {
            expected = with_avatar(expected, n);
        }
        assert_eq!(vector, expected);
    }

    #[test]
    fn requests_count_only_on_the_own_noid_after_describe() {
        let registry = world();
        let mut p = Plaza::seat(&registry, 8);
        let me = p.my_noid();
        assert!(!p.owns(me), "before DESCRIBE");
        p.describe(0);
        assert!(p.owns(me));
        assert!(!p.owns(me.wrapping_add(1)));
    }

    #[test]
    fn a_second_login_kicks_the_first() {
        let registry = world();
        let mut first = Plaza::seat(&registry, 8);
        first.enter(&name("Bob"));
        let mut second = Plaza::seat(&registry, 8);
        second.enter(&name("bob"));
        assert!(first.kicked().is_cancelled());
        assert_eq!(first.kick_reason(), Some(KickReason::LoggedInElsewhere));
        assert!(!second.kicked().is_cancelled());
    }
}
