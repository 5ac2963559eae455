//! The world: who is online in the Plaza, under which noids, and how to reach them; how a
//! login is believed ([`login`]); ESP and the ESP Mail offer ([`esp`]).
//!
//! Typed values in, typed values out: no sockets, no bytes on the wire, no protocol types,
//! and nothing stored: accounts, password hashes and mail live in the vault
//! ([`crate::espmail`]), which the session asks when a decision here says so.
//!
//! The [`Registry`] is generic over the message type `M` that sessions put in each
//! other's outboxes, so it does not depend on the protocol module; the session maps its
//! intents onto protocol messages.
//!
//! Rules kept here (ESPMAIL.md §1–§2, WIRE.md §3):
//! - one registry for the one region; names are matched case-insensitively by the key of
//!   a legal [`AvatarName`] ([`crate::avatar::normalise`], shared with the vault) and
//!   shown as first registered; a string that is not a legal name finds nobody;
//! - every seated connection holds two noids, its avatar's and its head's, from 1..=254
//!   (0 is the region, 255 means "ghost"/unassigned); freed noids are reused, lowest first.
//!   When fewer than two are free the connection is a ghost (WIRE.md: `Who_am_I` = FF):
//!   it can send and receive ESP, but is not in the contents vector;
//! - outboxes are bounded and filled with `try_send` only: a full outbox disconnects that
//!   slow session (its [`Member::kicked`] token fires), it never blocks the sender;
//! - a second login of the same avatar replaces the first, which is told
//!   [`KickReason::LoggedInElsewhere`] and closed.
//!
//! The registry's lock is a std `Mutex` held only for map updates and `try_send`s, never
//! across an `.await`.
//!
//! How a session uses the world (the server owns the socket and the protocol mapping):
//!
//! 1. login line → [`login::decide`]: `Refuse` (IM_ALIVE status 0 +
//!    [`login::WRONG_NAME_OR_PASSWORD`]), `Trust` (the vault's
//!    [`AccountsHandle::ensure_trusted`]), `CheckPassword` ([`AccountsHandle::login`]) or
//!    `AskInWorld` (enter hidden; after HERE_I_AM run [`login::PasswordDialogue`], doing
//!    each check or registration it asks for with the handle);
//! 2. [`Registry::seat`] before DESCRIBE: the [`Member`] gives `Who_am_I` ([`Member::noids`])
//!    and [`Registry::present`] the other avatars for the contents vector;
//! 3. once authenticated, [`Member::enter`] with the session's bounded outbox; broadcast
//!    HEREIS/APPEAR with [`Registry::broadcast`] (`except` = itself); select on
//!    [`Member::kicked`] and say [`KickReason::text`] before closing;
//! 4. SPEAK → [`esp::classify_speak`]: chat is broadcast as SPEAK$; `TO:NAME` →
//!    [`esp::EspState::start`] with the account lookup; ESP → [`esp::EspState::esp`];
//!    prompt replies → [`esp::strip_prompt_echo`], then whichever of the password dialogue,
//!    the [`esp::DeliveryPacer`] or [`esp::EspState::prompt_reply`] owns the prompt;
//!    [`esp::Intent::SaveMail`] → the vault, then [`esp::EspState::save_result`];
//! 5. the session's prompt timer is the only prompt clock: nothing here keeps time for a
//!    prompt. When it runs out, the owner is told: [`esp::EspState::prompt_lapsed`] or
//!    [`esp::DeliveryPacer::lapsed`] (the password dialogue just ends the connection);
//! 6. on close: drop the [`Member`] (leaves, frees noids) and broadcast GOAWAY for its noids.
//!
//! May touch: nothing outside memory.
//!
//! [`AccountsHandle::ensure_trusted`]: crate::espmail::accounts::AccountsHandle::ensure_trusted
//! [`AccountsHandle::login`]: crate::espmail::accounts::AccountsHandle::login

pub mod esp;
pub mod login;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::avatar::{name_key, AvatarName};

/// Identifies one connection for the life of the process.
pub type SessionId = u64;

/// Lowest noid an object may get (0 is the region).
pub const FIRST_NOID: u8 = 1;
/// Highest noid an object may get (255 means "unassigned"/ghost).
pub const LAST_NOID: u8 = 254;
/// The text for a replaced connection (ESPMAIL.md §1).
pub const LOGGED_IN_ELSEWHERE: &str = "You have logged in elsewhere.";

/// An avatar's two noids: the avatar's own and its head's (the head comes first in
/// contents vectors, WIRE.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Noids {
    /// The avatar (`Who_am_I`).
    pub avatar: u8,
    /// The avatar's head, contained in the avatar.
    pub head: u8,
}

/// Why the registry closed a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// The same avatar logged in on another connection.
    LoggedInElsewhere,
    /// Its outbox was full: it reads too slowly to keep up.
    SlowReader,
}

impl KickReason {
    /// The line to show the player before closing, if any.
    pub fn text(self) -> Option<&'static str> {
        match self {
            KickReason::LoggedInElsewhere => Some(LOGGED_IN_ELSEWHERE),
            KickReason::SlowReader => None,
        }
    }
}

#[derive(Debug, Default)]
struct KickSignal {
    token: CancellationToken,
    reason: OnceLock<KickReason>,
}

impl KickSignal {
    fn kick(&self, reason: KickReason) {
        // The first reason wins; later kicks only repeat the cancellation.
        let _ = self.reason.set(reason);
        self.token.cancel();
    }
}

/// One avatar present in the Plaza, as other sessions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present {
    /// Its connection.
    pub id: SessionId,
    /// Its name, as first registered.
    pub name: AvatarName,
    /// Its noids, or `None` for a ghost.
    pub noids: Option<Noids>,
}

/// What [`Registry::send_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued in the recipient's outbox.
    Sent,
    /// Nobody of that name is present (or its session just ended).
    Offline,
    /// The recipient's outbox was full: it has been disconnected, the message dropped.
    Disconnected,
}

/// What [`Member::enter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    /// The connection this login replaced (already told and removed from presence);
    /// its session sends its own departure when it closes.
    pub replaced: Option<Present>,
}

struct Entry<M> {
    present: Present,
    outbox: Sender<M>,
    kick: Arc<KickSignal>,
}

struct State<M> {
    /// Present avatars by normalised name.
    by_name: HashMap<String, Entry<M>>,
    /// Normalised name of each present session.
    by_id: HashMap<SessionId, String>,
    /// `used[n]`: noid n is held by a seat.
    used: [bool; 256],
    free: usize,
}

impl<M> State<M> {
    fn take_noid(&mut self) -> Option<u8> {
        let n = (FIRST_NOID..=LAST_NOID).find(|n| !self.used[usize::from(*n)])?;
        self.used[usize::from(n)] = true;
        self.free -= 1;
        Some(n)
    }

    fn free_noid(&mut self, n: u8) {
        if (FIRST_NOID..=LAST_NOID).contains(&n) && self.used[usize::from(n)] {
            self.used[usize::from(n)] = false;
            self.free += 1;
        }
    }

    fn remove_id(&mut self, id: SessionId) -> Option<Entry<M>> {
        let key = self.by_id.remove(&id)?;
        match self.by_name.get(&key) {
            Some(e) if e.present.id == id => self.by_name.remove(&key),
            _ => None,
        }
    }

    /// Removes a session whose outbox is full or closed; returns the outcome for it.
    fn drop_unreachable(&mut self, key: &str, full: bool) -> SendOutcome {
        if let Some(e) = self.by_name.remove(key) {
            self.by_id.remove(&e.present.id);
            if full {
                e.kick.kick(KickReason::SlowReader);
                tracing::warn!(avatar = %e.present.name, session = e.present.id, "outbox full; disconnecting slow session");
                return SendOutcome::Disconnected;
            }
        }
        SendOutcome::Offline
    }
}

/// Presence in the Plaza: one per server, shared as `Arc<Registry<M>>`.
pub struct Registry<M> {
    state: Mutex<State<M>>,
    next_id: AtomicU64,
}

impl<M: Send + 'static> std::fmt::Debug for Registry<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("present", &self.lock().by_name.len())
            .finish()
    }
}

impl<M: Send + 'static> Default for Registry<M> {
    fn default() -> Self {
        Registry::new()
    }
}

impl<M: Send + 'static> Registry<M> {
    /// An empty Plaza.
    pub fn new() -> Registry<M> {
        Registry {
            state: Mutex::new(State {
                by_name: HashMap::new(),
                by_id: HashMap::new(),
                used: [false; 256],
                free: usize::from(LAST_NOID - FIRST_NOID) + 1,
            }),
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<M>> {
        // Every critical section leaves the maps consistent, so a poisoned lock (a panic
        // elsewhere) is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seats a new connection: allocates its avatar and head noids (lowest free first),
    /// or makes it a ghost when fewer than two are free. It is not present (visible,
    /// reachable by name) until [`Member::enter`]. Dropping the [`Member`] frees
    /// everything.
    pub fn seat(self: &Arc<Self>) -> Member<M> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let noids = {
            let mut st = self.lock();
            if st.free >= 2 {
                match (st.take_noid(), st.take_noid()) {
                    (Some(avatar), Some(head)) => Some(Noids { avatar, head }),
                    (a, h) => {
                        for n in [a, h].into_iter().flatten() {
                            st.free_noid(n);
                        }
                        None
                    }
                }
            } else {
                None
            }
        };
        Member {
            registry: Arc::clone(self),
            id,
            noids,
            kick: Arc::new(KickSignal::default()),
        }
    }

    /// The avatar called `name` (any case), if present.
    pub fn lookup(&self, name: &str) -> Option<Present> {
        let key = name_key(name)?;
        self.lock().by_name.get(&key).map(|e| e.present.clone())
    }

    /// Whether the avatar called `name` is present.
    pub fn is_online(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// Everyone present, in ascending avatar-noid order (ghosts last), for contents
    /// vectors.
    pub fn present(&self) -> Vec<Present> {
        let mut all: Vec<Present> = self
            .lock()
            .by_name
            .values()
            .map(|e| e.present.clone())
            .collect();
        all.sort_by_key(|p| (p.noids.map_or(u16::MAX, |n| u16::from(n.avatar)), p.id));
        all
    }

    /// How many avatars are present.
    pub fn count(&self) -> usize {
        self.lock().by_name.len()
    }

    /// Queues `msg` for the avatar called `name` without waiting. A full outbox
    /// disconnects that avatar's session.
    pub fn send_to(&self, name: &str, msg: M) -> SendOutcome {
        let Some(key) = name_key(name) else {
            return SendOutcome::Offline;
        };
        let mut st = self.lock();
        let Some(entry) = st.by_name.get(&key) else {
            return SendOutcome::Offline;
        };
        match entry.outbox.try_send(msg) {
            Ok(()) => SendOutcome::Sent,
            Err(TrySendError::Full(_)) => st.drop_unreachable(&key, true),
            Err(TrySendError::Closed(_)) => st.drop_unreachable(&key, false),
        }
    }

    /// Queues a copy of `msg` for every present avatar except the session `except`;
    /// returns how many outboxes took it. Full outboxes disconnect their sessions.
    pub fn broadcast(&self, except: Option<SessionId>, msg: &M) -> usize
    where
        M: Clone,
    {
        let mut st = self.lock();
        let mut sent = 0;
        let mut unreachable = Vec::new();
        for (key, e) in &st.by_name {
            if Some(e.present.id) == except {
                continue;
            }
            match e.outbox.try_send(msg.clone()) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full(_)) => unreachable.push((key.clone(), true)),
                Err(TrySendError::Closed(_)) => unreachable.push((key.clone(), false)),
            }
        }
        for (key, full) in unreachable {
            st.drop_unreachable(&key, full);
        }
        sent
    }
}

/// One connection's place in the registry: its noids from the moment it is seated, its
/// presence once it has entered. Dropping it leaves and frees the noids.
pub struct Member<M: Send + 'static> {
    registry: Arc<Registry<M>>,
    id: SessionId,
    noids: Option<Noids>,
    kick: Arc<KickSignal>,
}

impl<M: Send + 'static> std::fmt::Debug for Member<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("noids", &self.noids)
            .finish_non_exhaustive()
    }
}

impl<M: Send + 'static> Member<M> {
    /// This connection's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The avatar and head noids, or `None` for a ghost (`Who_am_I` = FF).
    pub fn noids(&self) -> Option<Noids> {
        self.noids
    }

    /// Cancelled when the registry closes this session (replaced, or too slow); the
    /// session selects on `kicked().cancelled()`, shows [`Member::kick_reason`]'s text and
    /// closes.
    pub fn kicked(&self) -> &CancellationToken {
        &self.kick.token
    }

    /// Why the session was kicked, once it was.
    pub fn kick_reason(&self) -> Option<KickReason> {
        self.kick.reason.get().copied()
    }

    /// Makes the authenticated avatar present: visible in [`Registry::present`], reachable
    /// by name, its outbox fed by sends and broadcasts. A present session of the same
    /// avatar is kicked with [`KickReason::LoggedInElsewhere`] and removed.
    pub fn enter(&self, name: &AvatarName, outbox: Sender<M>) -> Entered {
        let mut st = self.registry.lock();
        // Entering twice (a re-login on the same connection) moves the presence.
        if let Some(old) = st.remove_id(self.id) {
            drop(old);
        }
        let key = name.key().to_string();
        let replaced = st.by_name.remove(&key).map(|old| {
            st.by_id.remove(&old.present.id);
            old.kick.kick(KickReason::LoggedInElsewhere);
            old.present
        });
        st.by_id.insert(self.id, key.clone());
        st.by_name.insert(
            key,
            Entry {
                present: Present {
                    id: self.id,
                    name: name.clone(),
                    noids: self.noids,
                },
                outbox,
                kick: Arc::clone(&self.kick),
            },
        );
        if let Some(old) = &replaced {
            tracing::info!(avatar = %name, old_session = old.id, session = self.id, "second login replaces the first");
        }
        Entered { replaced }
    }

    /// Whether this session is present (entered, and not replaced or dropped since).
    pub fn is_present(&self) -> bool {
        self.registry.lock().by_id.contains_key(&self.id)
    }

    /// Leaves the Plaza (keeps the noids until drop). Returns whether it was present.
    pub fn leave(&self) -> bool {
        self.registry.lock().remove_id(self.id).is_some()
    }
}

impl<M: Send + 'static> Drop for Member<M> {
    fn drop(&mut self) {
        let mut st = self.registry.lock();
        st.remove_id(self.id);
        if let Some(n) = self.noids.take() {
            st.free_noid(n.avatar);
            st.free_noid(n.head);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn name(s: &str) -> AvatarName {
        AvatarName::parse(s).unwrap()
    }

    #[test]
    fn noids_are_1_to_254_pairs_and_freed_ones_are_reused_lowest_first() {
        let reg = Arc::new(Registry::<u32>::new());
        let a = reg.seat();
        let b = reg.seat();
        assert_eq!(a.noids(), Some(Noids { avatar: 1, head: 2 }));
        assert_eq!(b.noids(), Some(Noids { avatar: 3, head: 4 }));
        drop(a);
        let c = reg.seat();
        assert_eq!(c.noids(), Some(Noids { avatar: 1, head: 2 }));
        // Fill the rest: 254 noids make 127 seats; the 128th is a ghost.
        let mut seats = vec![b, c];
        while seats.len() < 127 {
            seats.push(reg.seat());
        }
        let mut all: Vec<u8> = seats
            .iter()
            .flat_map(|m| {
                let n = m.noids().unwrap();
                [n.avatar, n.head]
            })
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=254).collect::<Vec<u8>>());
        let ghost = reg.seat();
        assert_eq!(ghost.noids(), None);
        drop(seats.pop());
        assert!(reg.seat().noids().is_some());
    }

    #[test]
    fn enter_makes_present_and_lookup_ignores_case() {
        let reg = Arc::new(Registry::<u32>::new());
        let m = reg.seat();
        assert!(!reg.is_online("bob"));
        let (tx, mut rx) = mpsc::channel(4);
        let e = m.enter(&name("Bob"), tx);
        assert_eq!(e.replaced, None);
        let p = reg.lookup("  BOB ").unwrap();
        assert_eq!(p.name.display(), "Bob");
        assert_eq!(p.noids, m.noids());
        assert_eq!(reg.send_to("bOb", 7), SendOutcome::Sent);
        assert_eq!(rx.try_recv().unwrap(), 7);
        assert_eq!(reg.send_to("alice", 7), SendOutcome::Offline);
        assert!(m.leave());
        assert!(!reg.is_online("bob"));
        assert!(!m.leave());
    }

    #[test]
    fn only_legal_names_find_anybody() {
        let reg = Arc::new(Registry::<u32>::new());
        let m = reg.seat();
        let (tx, mut rx) = mpsc::channel(4);
        m.enter(&name("Ken"), tx);
        assert!(reg.is_online(" KEN "));
        // KELVIN SIGN lowercases to an ASCII 'k': it must not reach "Ken".
        assert!(!reg.is_online("\u{212A}en"));
        assert_eq!(reg.send_to("\u{212A}en", 1), SendOutcome::Offline);
        assert!(rx.try_recv().is_err());
        assert_eq!(reg.send_to("ken", 2), SendOutcome::Sent);
        assert_eq!(rx.try_recv().unwrap(), 2);
    }

    #[test]
    fn drop_leaves_and_frees() {
        let reg = Arc::new(Registry::<u32>::new());
        let m = reg.seat();
        let (tx, _rx) = mpsc::channel(4);
        m.enter(&name("Bob"), tx);
        assert_eq!(reg.count(), 1);
        drop(m);
        assert_eq!(reg.count(), 0);
        assert_eq!(reg.seat().noids(), Some(Noids { avatar: 1, head: 2 }));
    }

    #[test]
    fn full_outbox_disconnects_that_session_and_never_blocks() {
        let reg = Arc::new(Registry::<u32>::new());
        let slow = reg.seat();
        let fast = reg.seat();
        let (stx, _srx) = mpsc::channel(2);
        let (ftx, mut frx) = mpsc::channel(100);
        slow.enter(&name("Slow"), stx);
        fast.enter(&name("Fast"), ftx);
        assert_eq!(reg.broadcast(None, &1), 2);
        assert_eq!(reg.broadcast(None, &2), 2);
        assert!(!slow.kicked().is_cancelled());
        // The third message does not fit: the slow one is dropped, the fast one served.
        assert_eq!(reg.broadcast(None, &3), 1);
        assert!(slow.kicked().is_cancelled());
        assert_eq!(slow.kick_reason(), Some(KickReason::SlowReader));
        assert_eq!(KickReason::SlowReader.text(), None);
        assert!(!reg.is_online("slow"));
        assert!(!slow.is_present());
        assert!(!fast.kicked().is_cancelled());
        assert_eq!(
            (frx.try_recv(), frx.try_recv(), frx.try_recv()),
            (Ok(1), Ok(2), Ok(3))
        );
        // send_to a full outbox disconnects too.
        let s2 = reg.seat();
        let (tx, _rx) = mpsc::channel(1);
        s2.enter(&name("Slow2"), tx);
        assert_eq!(reg.send_to("slow2", 1), SendOutcome::Sent);
        assert_eq!(reg.send_to("slow2", 2), SendOutcome::Disconnected);
        assert!(s2.kicked().is_cancelled());
        assert_eq!(reg.send_to("slow2", 3), SendOutcome::Offline);
    }

    #[test]
    fn closed_outbox_counts_as_offline() {
        let reg = Arc::new(Registry::<u32>::new());
        let m = reg.seat();
        let (tx, rx) = mpsc::channel(1);
        m.enter(&name("Gone"), tx);
        drop(rx);
        assert_eq!(reg.send_to("gone", 1), SendOutcome::Offline);
        assert!(!reg.is_online("gone"));
        assert!(!m.kicked().is_cancelled());
    }

    #[test]
    fn broadcast_skips_the_sender() {
        let reg = Arc::new(Registry::<u32>::new());
        let a = reg.seat();
        let b = reg.seat();
        let (atx, mut arx) = mpsc::channel(4);
        let (btx, mut brx) = mpsc::channel(4);
        a.enter(&name("A"), atx);
        b.enter(&name("B"), btx);
        assert_eq!(reg.broadcast(Some(a.id()), &9), 1);
        assert!(arx.try_recv().is_err());
        assert_eq!(brx.try_recv(), Ok(9));
    }

    #[test]
    fn second_login_replaces_the_first() {
        let reg = Arc::new(Registry::<u32>::new());
        let first = reg.seat();
        let (tx1, mut rx1) = mpsc::channel(4);
        first.enter(&name("Bob"), tx1);
        let second = reg.seat();
        let (tx2, mut rx2) = mpsc::channel(4);
        let e = second.enter(&name("bob"), tx2);
        let old = e.replaced.unwrap();
        assert_eq!(old.id, first.id());
        assert_eq!(old.noids, first.noids());
        assert!(first.kicked().is_cancelled());
        assert_eq!(first.kick_reason(), Some(KickReason::LoggedInElsewhere));
        assert_eq!(
            first.kick_reason().and_then(KickReason::text),
            Some("You have logged in elsewhere.")
        );
        assert!(!second.kicked().is_cancelled());
        // Messages go to the new session only; the old one's drop does not remove it.
        assert_eq!(reg.send_to("BOB", 5), SendOutcome::Sent);
        assert_eq!(rx2.try_recv(), Ok(5));
        assert!(rx1.try_recv().is_err());
        assert!(!first.leave());
        drop(first);
        assert_eq!(reg.lookup("bob").unwrap().id, second.id());
        assert_eq!(reg.lookup("bob").unwrap().name.display(), "bob");
    }

    #[test]
    fn present_is_in_noid_order() {
        let reg = Arc::new(Registry::<u32>::new());
        let seats: Vec<_> = (0..4).map(|_| reg.seat()).collect();
        let mut inboxes = Vec::new();
        for (i, s) in seats.iter().enumerate().rev() {
            let (tx, rx) = mpsc::channel(1);
            inboxes.push(rx);
            s.enter(&name(&format!("av{i}")), tx);
        }
        let noids: Vec<u8> = reg
            .present()
            .iter()
            .map(|p| p.noids.unwrap().avatar)
            .collect();
        assert_eq!(noids, vec![1, 3, 5, 7]);
    }
}
