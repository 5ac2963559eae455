//! ESP routing and the ESP Mail dialogue (ESPMAIL.md §2–§3, WIRE.md §4.4–§5), pure.
//!
//! One [`EspState`] per session is driven by events (a SPEAK `TO:NAME`, an ESP line, a
//! prompt reply, a save result, the prompt lapsing) and answers with [`Intent`]s carrying the
//! product's exact words; the session turns them into protocol messages. Who is online is
//! asked through the [`Directory`] trait, which also delivers live ESP (the registry
//! implements it through [`RegistryDirectory`]); whether an offline name is a known avatar
//! is a fact the session looks up and passes in. The login-delivery texts and their pacing
//! ([`DeliveryPacer`]) are here too.
//!
//! Player text travels as `Sensitive<Vec<u8>>` and is never logged. Time is passed in where
//! a rate needs it; prompts keep no time at all: the session's prompt timer is the one
//! clock, and it reports a lapse with [`EspState::prompt_lapsed`] or
//! [`DeliveryPacer::lapsed`].
//!
//! May touch: nothing outside memory (no sockets, no clock, no database).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Registry, SendOutcome};
use crate::avatar::{normalise, AvatarName};
use crate::log_redact::Sensitive;
use crate::rate::{wait_secs, SlidingWindow};
use crate::utc::utc_parts;

pub use crate::limits::SPEECH_CAP;
/// Unusable answers to one prompt before it is given up.
pub const MAX_UNUSABLE_ANSWERS: u32 = 3;
/// ESP Mail saves per sender per minute, by default (ESPMAIL.md §3 `send_rate`).
pub const DEFAULT_SEND_RATE: usize = 10;

/// "ESP connection ended."
pub const ESP_ENDED: &str = "ESP connection ended.";
/// "ESP Mail not sent."
pub const MAIL_NOT_SENT: &str = "ESP Mail not sent.";
/// "ESP Mail could not be saved. Not sent."
pub const MAIL_SAVE_FAILED: &str = "ESP Mail could not be saved. Not sent.";
/// "ESP Mail kept for later."
pub const MAIL_KEPT: &str = "ESP Mail kept for later.";
/// "No answer; ESP Mail not sent." (the offer's prompt lapsed; the C64 cannot take a
/// prompt back, so the player must be told it no longer counts).
pub const NO_ANSWER_NOT_SENT: &str = "No answer; ESP Mail not sent.";
/// "Too late; ESP Mail not sent." (an answer to an offer that had lapsed: never silence,
/// or the player would believe a late "Y" sent the mail).
pub const TOO_LATE_NOT_SENT: &str = "Too late; ESP Mail not sent.";

/// "Transmitting thoughts to NAME..."
pub fn transmitting_to(name: &str) -> String {
    format!("Transmitting thoughts to {name}...")
}

/// "NAME is offline. Your ESP will be offered as ESP Mail."
pub fn offline_offer(name: &str) -> String {
    format!("{name} is offline. Your ESP will be offered as ESP Mail.")
}

/// "Cannot contact NAME."
pub fn cannot_contact(name: &str) -> String {
    format!("Cannot contact {name}.")
}

/// "ESP from NAME: " (the first of the recipient's three lines).
pub fn esp_from(name: &str) -> String {
    format!("ESP from {name}: ")
}

/// "ESP Mail to NAME? (Y/N) " (≤ 36 bytes for a legal name).
pub fn mail_offer_prompt(name: &str) -> String {
    format!("ESP Mail to {name}? (Y/N) ")
}

/// "ESP Mail for NAME saved."
pub fn mail_saved(name: &str) -> String {
    format!("ESP Mail for {name} saved.")
}

/// "NAME is here now; sent as ESP."
pub fn here_now(name: &str) -> String {
    format!("{name} is here now; sent as ESP.")
}

/// "NAME's ESP Mail box is full. Not sent."
pub fn box_full(name: &str) -> String {
    format!("{name}'s ESP Mail box is full. Not sent.")
}

/// "You have N ESP Mail waiting for NAME. Not sent." (one sender's share of a box is
/// capped, so that one sender cannot fill it alone; the sender is told, the recipient's
/// box stays as it was).
pub fn sender_cap(max: usize, name: &str) -> String {
    format!("You have {max} ESP Mail waiting for {name}. Not sent.")
}

/// "Too much ESP Mail; wait N s."
pub fn too_much_mail(wait_secs: u64) -> String {
    format!("Too much ESP Mail; wait {wait_secs} s.")
}

/// "You have N ESP Mail (times UTC)."
pub fn mail_waiting(n: usize) -> String {
    format!("You have {n} ESP Mail (times UTC).")
}

/// "ESP Mail from NAME, Nov 23 14:05:" with the send time in UTC.
pub fn mail_header(sender: &str, sent_unix_secs: u64) -> String {
    let (_, month, day, hour, minute) = utc_parts(sent_unix_secs);
    let mon = MONTHS
        .get(usize::from(month.saturating_sub(1)))
        .copied()
        .unwrap_or("???");
    format!("ESP Mail from {sender}, {mon} {day} {hour:02}:{minute:02}:")
}

/// "Next ESP Mail (N left)? (Y/N) "
pub fn next_mail_prompt(left: usize) -> String {
    format!("Next ESP Mail ({left} left)? (Y/N) ")
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Makes player text speakable: bytes outside 0x01–0x7F become `?`, then the text is
/// cut to [`SPEECH_CAP`] bytes (ESPMAIL.md §4; the escaped-frame check is the protocol's).
pub fn speakable(text: &[u8]) -> Vec<u8> {
    text.iter()
        .take(SPEECH_CAP)
        .map(|&b| if (0x01..=0x7F).contains(&b) { b } else { b'?' })
        .collect()
}

/// A body shorter than 4 characters gets one space on each side (WIRE.md §4.4,
/// vector `objectspeak_esp_short_padded`: "ok" → " ok ").
pub fn pad_body(body: &[u8]) -> Vec<u8> {
    if body.len() < 4 {
        let mut out = Vec::with_capacity(body.len() + 2);
        out.push(b' ');
        out.extend_from_slice(body);
        out.push(b' ');
        out
    } else {
        body.to_vec()
    }
}

fn trim_spaces(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| *c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|c| *c != b' ').map_or(start, |e| e + 1);
    &b[start..end]
}

/// A yes/no answer to a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `Y`, `y`, `yes` (any case).
    Yes,
    /// `N`, `n`, `no` (any case).
    No,
    /// Nothing typed.
    Empty,
    /// Anything else.
    Unusable,
}

/// Reads a (stripped) prompt answer.
pub fn parse_answer(answer: &[u8]) -> Answer {
    let a = trim_spaces(answer).to_ascii_lowercase();
    match a.as_slice() {
        b"" => Answer::Empty,
        b"y" | b"yes" => Answer::Yes,
        b"n" | b"no" => Answer::No,
        _ => Answer::Unusable,
    }
}

/// What a SPEAK's text asks for.
#[derive(Debug)]
pub enum Speech {
    /// `TO:NAME` (any case of `to:`): start ESP to the trimmed name.
    EspTo(String),
    /// Ordinary speech for everyone present.
    Chat(Sensitive<Vec<u8>>),
}

/// Classifies a SPEAK's text (WIRE.md §4.4, NeoHabitat's reading: lowercased starts
/// with `to:`).
pub fn classify_speak(text: &[u8]) -> Speech {
    match text.get(..3) {
        Some(p) if p.eq_ignore_ascii_case(b"to:") => {
            let name = String::from_utf8_lossy(&speakable(&text[3..]))
                .trim()
                .to_string();
            Speech::EspTo(name)
        }
        _ => Speech::Chat(Sensitive::new(speakable(text))),
    }
}

/// The intent for ordinary speech from [`Speech::Chat`].
pub fn chat(words: Sensitive<Vec<u8>>) -> Intent {
    Intent::Chat(words)
}

/// Where a line to this session's own client is drawn (ESPMAIL.md: speaker 0 except the
/// two NeoHabitat lines that use the sender's own noid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The session's own avatar noid.
    Me,
    /// Noid 0, the region.
    Region,
}

/// A live ESP for a recipient: who sent it and the body. How its client shows them (the
/// header line, the ESP sound, the body) is the server's business.
#[derive(Debug, Clone)]
pub struct LiveEsp {
    /// Who sent it.
    pub from: AvatarName,
    /// The body, already speakable and padded.
    pub body: Sensitive<Vec<u8>>,
}

impl LiveEsp {
    /// A live ESP of `text` (speakable, not yet padded) from `from`.
    pub fn new(from: AvatarName, text: &[u8]) -> LiveEsp {
        LiveEsp {
            from,
            body: Sensitive::new(pad_body(text)),
        }
    }

    /// "ESP from NAME: "
    pub fn header(&self) -> String {
        esp_from(self.from.display())
    }
}

/// What the session does next, in order.
#[derive(Debug)]
pub enum Intent {
    /// Reply to the pending SPEAK/ESP request with this `esp` byte (1 = stay in ESP).
    Reply {
        /// ESP mode on.
        esp: bool,
    },
    /// OBJECT_TALKS to this session's own client.
    Say {
        /// Whose balloon.
        speaker: Speaker,
        /// The words.
        text: String,
    },
    /// The sender's echo, OBJECT_TALKS with speaker [`Speaker::Me`]: `ESP:` + body.
    Echo(Sensitive<Vec<u8>>),
    /// SPEAK$ on this session's own avatar noid, to its own client only.
    SpeakToSelf(String),
    /// PROMPT_USER with this text.
    Prompt(String),
    /// SPEAK$ on this avatar's noid to everyone present: ordinary speech, for sessions
    /// that run every SPEAK outcome through one intent list ([`chat`] makes it).
    Chat(Sensitive<Vec<u8>>),
    /// Save this ESP Mail durably, then report with [`EspState::save_result`].
    SaveMail {
        /// Recipient.
        to: AvatarName,
        /// Sender.
        from: AvatarName,
        /// The text (speakable, unpadded).
        text: Sensitive<Vec<u8>>,
    },
}

fn say(text: String) -> Intent {
    Intent::Say {
        speaker: Speaker::Region,
        text,
    }
}

/// What the session learns about who is online, and how live ESP is handed over.
pub trait Directory {
    /// The avatar called `name` (any case) if it is online now.
    fn online(&self, name: &str) -> Option<AvatarName>;
    /// Puts a live ESP in `to`'s outbox without waiting.
    fn deliver(&self, to: &AvatarName, esp: LiveEsp) -> SendOutcome;
}

/// [`Directory`] over the [`Registry`], turning a [`LiveEsp`] into the registry's message
/// type with `wrap`.
pub struct RegistryDirectory<'a, M, F> {
    registry: &'a Registry<M>,
    wrap: F,
}

impl<'a, M, F> RegistryDirectory<'a, M, F>
where
    M: Send + 'static,
    F: Fn(LiveEsp) -> M,
{
    /// A directory over `registry`.
    pub fn new(registry: &'a Registry<M>, wrap: F) -> Self {
        RegistryDirectory { registry, wrap }
    }
}

impl<M, F> Directory for RegistryDirectory<'_, M, F>
where
    M: Send + 'static,
    F: Fn(LiveEsp) -> M,
{
    fn online(&self, name: &str) -> Option<AvatarName> {
        self.registry.lookup(name).map(|p| p.name)
    }

    fn deliver(&self, to: &AvatarName, esp: LiveEsp) -> SendOutcome {
        self.registry.send_to(to.key(), (self.wrap)(esp))
    }
}

/// The ESP Mail send rate, shared by all sessions and keyed by the sender's name (so a
/// re-login does not reset it).
#[derive(Debug)]
pub struct MailRate(Mutex<SlidingWindow<String>>);

impl MailRate {
    /// `per_minute` saves per sender per minute.
    pub fn new(per_minute: usize) -> MailRate {
        MailRate(Mutex::new(SlidingWindow::new(
            per_minute,
            Duration::from_secs(60),
            100_000,
        )))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlidingWindow<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, sender: &str, now: Instant) -> Result<(), u64> {
        self.lock()
            .check(&normalise(sender), now)
            .map_err(wait_secs)
    }

    fn acquire(&self, sender: &str, now: Instant) -> Result<(), u64> {
        self.lock()
            .try_acquire(&normalise(sender), now)
            .map_err(wait_secs)
    }
}

impl Default for MailRate {
    fn default() -> Self {
        MailRate::new(DEFAULT_SEND_RATE)
    }
}

/// How the vault's save went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// Durably committed.
    Saved,
    /// The recipient's box holds `max_per_recipient` messages.
    BoxFull,
    /// The sender already has `max` messages waiting for this recipient
    /// (`max_per_sender`).
    SenderCap {
        /// The limit.
        max: usize,
    },
    /// Disk full, database error, store unavailable (log the error).
    Failed,
}

#[derive(Debug)]
struct Offer {
    to: AvatarName,
    text: Sensitive<Vec<u8>>,
    unusable: u32,
}

/// One session's ESP state: its target, its pending ESP Mail offer, a save in flight.
#[derive(Debug)]
pub struct EspState {
    me: AvatarName,
    target: Option<AvatarName>,
    offer: Option<Offer>,
    saving: Option<AvatarName>,
    /// The last offer lapsed and nothing has happened since: a late answer gets
    /// [`TOO_LATE_NOT_SENT`].
    lapsed: bool,
}

impl EspState {
    /// The state of a session authenticated as `me`.
    pub fn new(me: AvatarName) -> EspState {
        EspState {
            me,
            target: None,
            offer: None,
            saving: None,
            lapsed: false,
        }
    }

    /// The current ESP target.
    pub fn target(&self) -> Option<&AvatarName> {
        self.target.as_ref()
    }

    /// Whether an ESP Mail offer waits for its answer (the session routes prompt replies
    /// here while it does).
    pub fn offer_pending(&self) -> bool {
        self.offer.is_some()
    }

    /// SPEAK `TO:NAME` (after [`classify_speak`]). `known` is the account lookup of the
    /// typed name (`None`: no such avatar). Cancels a pending offer.
    pub fn start(
        &mut self,
        typed: &str,
        known: Option<AvatarName>,
        dir: &impl Directory,
    ) -> Vec<Intent> {
        self.offer = None;
        self.lapsed = false;
        let typed = typed.trim();
        let is_me = normalise(typed) == self.me.key();
        if !is_me {
            if let Some(online) = dir.online(typed) {
                let text = transmitting_to(online.display());
                self.target = Some(online);
                return vec![
                    Intent::Say {
                        speaker: Speaker::Me,
                        text,
                    },
                    Intent::Reply { esp: true },
                ];
            }
            if let Some(known) = known.filter(|k| k.key() == normalise(typed)) {
                let text = offline_offer(known.display());
                self.target = Some(known);
                return vec![say(text), Intent::Reply { esp: true }];
            }
        }
        self.target = None;
        vec![
            Intent::SpeakToSelf(cannot_contact(typed)),
            Intent::Reply { esp: false },
        ]
    }

    /// An ESP request's text (`ESP:` prefix included, as the client sends it).
    pub fn esp(
        &mut self,
        text: &[u8],
        dir: &impl Directory,
        rate: &MailRate,
        now: Instant,
    ) -> Vec<Intent> {
        let body = speakable(text.strip_prefix(b"ESP:").unwrap_or(text));
        if body.is_empty() {
            self.target = None;
            return vec![Intent::Reply { esp: false }, say(ESP_ENDED.to_string())];
        }
        let Some(to) = self.target.clone() else {
            // ESP without a TO: first (or after ESP mode ended): leave ESP mode.
            return vec![Intent::Reply { esp: false }];
        };
        if dir.online(to.key()).is_some() {
            let live = LiveEsp::new(self.me.clone(), &body);
            if dir.deliver(&to, live) == SendOutcome::Sent {
                let mut echo = b"ESP:".to_vec();
                echo.extend_from_slice(&body);
                return vec![
                    Intent::Echo(Sensitive::new(echo)),
                    Intent::Reply { esp: true },
                ];
            }
        }
        // Offline (or gone while we looked): end ESP mode so the prompt does not
        // overwrite the text line, then offer ESP Mail (ESPMAIL.md §3).
        self.target = None;
        if let Err(wait) = rate.check(self.me.key(), now) {
            return vec![Intent::Reply { esp: false }, say(too_much_mail(wait))];
        }
        let prompt = mail_offer_prompt(to.display());
        self.lapsed = false;
        self.offer = Some(Offer {
            to,
            text: Sensitive::new(body),
            unusable: 0,
        });
        vec![Intent::Reply { esp: false }, Intent::Prompt(prompt)]
    }

    /// A PROMPT_REPLY's answer (stripped of the prompt echo) while an offer is pending.
    /// An answer to an offer that lapsed gets [`TOO_LATE_NOT_SENT`], once; without
    /// either it is ignored (empty result).
    pub fn prompt_reply(
        &mut self,
        answer: &[u8],
        dir: &impl Directory,
        rate: &MailRate,
        now: Instant,
    ) -> Vec<Intent> {
        let Some(mut offer) = self.offer.take() else {
            if std::mem::take(&mut self.lapsed) {
                return vec![say(TOO_LATE_NOT_SENT.to_string())];
            }
            return Vec::new();
        };
        match parse_answer(answer) {
            Answer::No | Answer::Empty => vec![say(MAIL_NOT_SENT.to_string())],
            Answer::Unusable => {
                offer.unusable += 1;
                if offer.unusable >= MAX_UNUSABLE_ANSWERS {
                    return vec![say(MAIL_NOT_SENT.to_string())];
                }
                let prompt = mail_offer_prompt(offer.to.display());
                self.offer = Some(offer);
                vec![Intent::Prompt(prompt)]
            }
            Answer::Yes => {
                let Offer { to, text, .. } = offer;
                // Arrived meanwhile: deliver live instead (ESPMAIL.md §3).
                if let Some(online) = dir.online(to.key()) {
                    let live = LiveEsp::new(self.me.clone(), text.expose());
                    if dir.deliver(&online, live) == SendOutcome::Sent {
                        return vec![say(here_now(online.display()))];
                    }
                }
                if let Err(wait) = rate.acquire(self.me.key(), now) {
                    return vec![say(too_much_mail(wait))];
                }
                self.saving = Some(to.clone());
                vec![Intent::SaveMail {
                    to,
                    from: self.me.clone(),
                    text,
                }]
            }
        }
    }

    /// The vault's answer to the last [`Intent::SaveMail`].
    pub fn save_result(&mut self, outcome: SaveOutcome) -> Vec<Intent> {
        let Some(to) = self.saving.take() else {
            return Vec::new();
        };
        let text = match outcome {
            SaveOutcome::Saved => mail_saved(to.display()),
            SaveOutcome::BoxFull => box_full(to.display()),
            SaveOutcome::SenderCap { max } => sender_cap(max, to.display()),
            SaveOutcome::Failed => MAIL_SAVE_FAILED.to_string(),
        };
        vec![say(text)]
    }

    /// The session's prompt timer ran out on the offer: the pending text is dropped,
    /// nothing is stored, and the sender is told [`NO_ANSWER_NOT_SENT`] (the prompt stays
    /// on a C64's screen, so silence would let a later "Y" look like a send). A later
    /// answer gets [`TOO_LATE_NOT_SENT`]. This state has no clock of its own; the
    /// session's prompt timer is the only one.
    pub fn prompt_lapsed(&mut self) -> Vec<Intent> {
        if self.offer.take().is_none() {
            return Vec::new();
        }
        self.lapsed = true;
        vec![say(NO_ANSWER_NOT_SENT.to_string())]
    }

    /// Whether a late answer to a lapsed offer would still be answered (the session
    /// routes a prompt reply here when no prompt is pending).
    pub fn lapsed(&self) -> bool {
        self.lapsed
    }

    /// Something else took the prompt line (another prompt): a late answer to the lapsed
    /// offer can no longer be told apart from an answer to it.
    pub fn forget_lapse(&mut self) {
        self.lapsed = false;
    }
}

/// What the session does next while delivering mail at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacerStep {
    /// Deliver the next message (header line, text line, then a Ping; delete on ack).
    Deliver,
    /// PROMPT_USER with this text and wait.
    Ask(String),
    /// Say [`MAIL_KEPT`]; the rest stays stored for the next login.
    Kept,
    /// The prompt lapsed: say [`MAIL_KEPT`]. The rest stays stored, and a late answer
    /// may still ask for the next one (the C64 cannot take the prompt back).
    Lapsed,
    /// Nothing left to deliver.
    Finished,
    /// Nothing to do (no prompt pending).
    Ignore,
}

/// Paces login delivery (ESPMAIL.md §2): the count line, then one message at a time with
/// "Next ESP Mail (N left)? (Y/N) " between them. `Y`, `y` or an empty answer delivers
/// the next, `N` keeps the rest; when the session's prompt timer runs out first
/// ([`DeliveryPacer::lapsed`]) the player is told the rest is kept, and an answer that
/// comes after that still counts: `Y`/empty delivers the next (it is still stored),
/// anything else keeps the rest. Unusable answers re-ask; the third keeps the rest. The
/// pacer has no clock: the session's prompt timer is the only one.
#[derive(Debug)]
pub struct DeliveryPacer {
    left: usize,
    /// Unusable answers to the pending prompt, while one is pending.
    asking: Option<u32>,
    /// The last prompt lapsed and no answer came since.
    lapsed: bool,
}

impl DeliveryPacer {
    /// Starts a delivery of `waiting` messages: the first line to say
    /// ("You have N ESP Mail (times UTC).") and the pacer, or `None` with nothing waiting.
    pub fn start(waiting: usize) -> Option<(DeliveryPacer, String)> {
        (waiting > 0).then(|| {
            (
                DeliveryPacer {
                    left: waiting,
                    asking: None,
                    lapsed: false,
                },
                mail_waiting(waiting),
            )
        })
    }

    /// Messages not yet delivered.
    pub fn left(&self) -> usize {
        self.left
    }

    /// Whether a "Next ESP Mail" prompt waits for its answer.
    pub fn awaiting_reply(&self) -> bool {
        self.asking.is_some()
    }

    /// Call after a message's last line was sent: asks about the next one, if any.
    pub fn delivered(&mut self) -> PacerStep {
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            self.asking = None;
            return PacerStep::Finished;
        }
        self.asking = Some(0);
        PacerStep::Ask(next_mail_prompt(self.left))
    }

    /// Whether the last prompt lapsed and a late answer would still be taken.
    pub fn is_lapsed(&self) -> bool {
        self.lapsed
    }

    /// The answer to "Next ESP Mail (N left)? (Y/N) " (stripped of the prompt echo), or a
    /// late answer to one that lapsed: `Y`/empty delivers the next, anything else keeps
    /// the rest (said again, so the answer is never met with silence).
    pub fn answer(&mut self, answer: &[u8]) -> PacerStep {
        let Some(unusable) = self.asking.take() else {
            if !std::mem::take(&mut self.lapsed) {
                return PacerStep::Ignore;
            }
            return match parse_answer(answer) {
                Answer::Yes | Answer::Empty if self.left > 0 => PacerStep::Deliver,
                _ => {
                    self.left = 0;
                    PacerStep::Kept
                }
            };
        };
        match parse_answer(answer) {
            Answer::Yes | Answer::Empty => PacerStep::Deliver,
            Answer::No => {
                self.left = 0;
                PacerStep::Kept
            }
            Answer::Unusable if unusable + 1 >= MAX_UNUSABLE_ANSWERS => {
                self.left = 0;
                PacerStep::Kept
            }
            Answer::Unusable => {
                self.asking = Some(unusable + 1);
                PacerStep::Ask(next_mail_prompt(self.left))
            }
        }
    }

    /// The session's prompt timer ran out on the pending prompt: [`PacerStep::Lapsed`]
    /// (the player is told the rest is kept; a late answer may still ask for the next),
    /// or [`PacerStep::Ignore`] when no prompt was pending.
    pub fn lapsed(&mut self) -> PacerStep {
        if self.asking.take().is_none() {
            return PacerStep::Ignore;
        }
        self.lapsed = true;
        PacerStep::Lapsed
    }

    /// Another prompt took the prompt line: nothing more is delivered this login.
    /// [`PacerStep::Kept`] when a "Next ESP Mail" question was still open (the player is
    /// told), [`PacerStep::Ignore`] otherwise (a lapse already said so, or nothing was
    /// asked).
    pub fn superseded(&mut self) -> PacerStep {
        self.lapsed = false;
        let open = self.asking.take().is_some();
        self.left = 0;
        if open {
            PacerStep::Kept
        } else {
            PacerStep::Ignore
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    fn name(s: &str) -> AvatarName {
        AvatarName::parse(s).unwrap()
    }

    /// A directory of who is online, recording deliveries; `busy` names refuse them.
    #[derive(Default)]
    struct FakeDir {
        online: HashMap<String, AvatarName>,
        busy: Vec<String>,
        delivered: RefCell<Vec<(String, String, Vec<u8>)>>,
    }

    impl FakeDir {
        fn with(names: &[&str]) -> FakeDir {
            let mut d = FakeDir::default();
            for n in names {
                d.online.insert(normalise(n), name(n));
            }
            d
        }
    }

    impl Directory for FakeDir {
        fn online(&self, n: &str) -> Option<AvatarName> {
            self.online.get(&normalise(n)).cloned()
        }
        fn deliver(&self, to: &AvatarName, esp: LiveEsp) -> SendOutcome {
            if self.busy.contains(&to.key().to_string()) {
                return SendOutcome::Disconnected;
            }
            if !self.online.contains_key(to.key()) {
                return SendOutcome::Offline;
            }
            self.delivered.borrow_mut().push((
                to.key().to_string(),
                esp.header(),
                esp.body.expose().clone(),
            ));
            SendOutcome::Sent
        }
    }

    fn texts(intents: &[Intent]) -> Vec<String> {
        intents
            .iter()
            .map(|i| match i {
                Intent::Reply { esp } => format!("reply {}", u8::from(*esp)),
                Intent::Say { speaker, text } => format!("say {speaker:?} {text}"),
                Intent::Echo(t) => format!("echo {}", String::from_utf8_lossy(t.expose())),
                Intent::SpeakToSelf(t) => format!("speak {t}"),
                Intent::Prompt(t) => format!("prompt {t}"),
                Intent::Chat(t) => format!("chat {}", String::from_utf8_lossy(t.expose())),
                Intent::SaveMail { to, from, text } => format!(
                    "save {}<-{} {}",
                    to.display(),
                    from.display(),
                    String::from_utf8_lossy(text.expose())
                ),
            })
            .collect()
    }

    #[test]
    fn to_online_avatar_then_live_esp() {
        let dir = FakeDir::with(&["Bob", "Alice"]);
        let rate = MailRate::default();
        let now = Instant::now();
        let mut s = EspState::new(name("Alice"));
        let Speech::EspTo(typed) = classify_speak(b"to: bob ") else {
            panic!("not ESP")
        };
        assert_eq!(typed, "bob");
        assert_eq!(
            texts(&s.start(&typed, None, &dir)),
            ["say Me Transmitting thoughts to Bob...", "reply 1"]
        );
        assert_eq!(
            texts(&s.esp(b"ESP:hi there", &dir, &rate, now)),
            ["echo ESP:hi there", "reply 1"]
        );
        assert_eq!(
            texts(&s.esp(b"ESP:ok", &dir, &rate, now)),
            ["echo ESP:ok", "reply 1"]
        );
        let d = dir.delivered.borrow();
        assert_eq!(
            d[0],
            (
                "bob".into(),
                "ESP from Alice: ".into(),
                b"hi there".to_vec()
            )
        );
        assert_eq!(d[1].2, b" ok ".to_vec());
        drop(d);
        assert_eq!(
            texts(&s.esp(b"ESP:", &dir, &rate, now)),
            ["reply 0", "say Region ESP connection ended."]
        );
        assert_eq!(s.target(), None);
        // ESP after the end: just leave ESP mode.
        assert_eq!(texts(&s.esp(b"ESP:x", &dir, &rate, now)), ["reply 0"]);
    }

    #[test]
    fn cannot_contact_unknown_or_self() {
        let dir = FakeDir::with(&["Alice"]);
        let mut s = EspState::new(name("Alice"));
        assert_eq!(
            texts(&s.start("Nobody", None, &dir)),
            ["speak Cannot contact Nobody.", "reply 0"]
        );
        assert_eq!(
            texts(&s.start("ALICE", Some(name("Alice")), &dir)),
            ["speak Cannot contact ALICE.", "reply 0"]
        );
        // A lookup result for another name is not trusted.
        assert_eq!(
            texts(&s.start("bob", Some(name("Carol")), &dir)),
            ["speak Cannot contact bob.", "reply 0"]
        );
        assert!(s.target().is_none());
    }

    fn offline_offer_state(dir: &FakeDir, rate: &MailRate, now: Instant) -> EspState {
        let mut s = EspState::new(name("Alice"));
        assert_eq!(
            texts(&s.start("bob", Some(name("Bob")), dir)),
            [
                "say Region Bob is offline. Your ESP will be offered as ESP Mail.",
                "reply 1"
            ]
        );
        assert_eq!(
            texts(&s.esp(b"ESP:meet me", dir, rate, now)),
            ["reply 0", "prompt ESP Mail to Bob? (Y/N) "]
        );
        assert!(s.offer_pending());
        s
    }

    #[test]
    fn offline_offer_yes_saves_then_reports() {
        let dir = FakeDir::with(&["Alice"]);
        let rate = MailRate::default();
        let now = Instant::now();
        for yes in [&b"Y"[..], b"y", b"yes", b" YES "] {
            let mut s = offline_offer_state(&dir, &rate, now);
            assert_eq!(
                texts(&s.prompt_reply(yes, &dir, &rate, now)),
                ["save Bob<-Alice meet me"]
            );
            assert!(!s.offer_pending());
            assert_eq!(
                texts(&s.save_result(SaveOutcome::Saved)),
                ["say Region ESP Mail for Bob saved."]
            );
            // A second result without a save is ignored.
            assert!(s.save_result(SaveOutcome::Saved).is_empty());
        }
        let mut s = offline_offer_state(&dir, &MailRate::new(100), now);
        s.prompt_reply(b"y", &dir, &rate, now);
        assert_eq!(
            texts(&s.save_result(SaveOutcome::BoxFull)),
            ["say Region Bob's ESP Mail box is full. Not sent."]
        );
        let mut s = offline_offer_state(&dir, &MailRate::new(100), now);
        s.prompt_reply(b"y", &dir, &rate, now);
        assert_eq!(
            texts(&s.save_result(SaveOutcome::Failed)),
            ["say Region ESP Mail could not be saved. Not sent."]
        );
    }

    #[test]
    fn offline_offer_no_empty_and_unusable_answers() {
        let dir = FakeDir::with(&["Alice"]);
        let rate = MailRate::default();
        let now = Instant::now();
        for no in [&b"N"[..], b"n", b"", b"  "] {
            let mut s = offline_offer_state(&dir, &rate, now);
            assert_eq!(
                texts(&s.prompt_reply(no, &dir, &rate, now)),
                ["say Region ESP Mail not sent."]
            );
            assert!(!s.offer_pending());
        }
        let mut s = offline_offer_state(&dir, &rate, now);
        assert_eq!(
            texts(&s.prompt_reply(b"maybe", &dir, &rate, now)),
            ["prompt ESP Mail to Bob? (Y/N) "]
        );
        assert_eq!(
            texts(&s.prompt_reply(b"what", &dir, &rate, now)),
            ["prompt ESP Mail to Bob? (Y/N) "]
        );
        assert_eq!(
            texts(&s.prompt_reply(b"eh", &dir, &rate, now)),
            ["say Region ESP Mail not sent."]
        );
        assert!(!s.offer_pending());
        // No offer: replies are ignored.
        assert!(s.prompt_reply(b"y", &dir, &rate, now).is_empty());
        // Two unusable answers, then yes: still accepted.
        let mut s = offline_offer_state(&dir, &rate, now);
        s.prompt_reply(b"?", &dir, &rate, now);
        s.prompt_reply(b"?", &dir, &rate, now);
        assert_eq!(
            texts(&s.prompt_reply(b"y", &dir, &rate, now))[0],
            "save Bob<-Alice meet me"
        );
    }

    #[test]
    fn offer_lapses_and_new_to_cancels() {
        let dir = FakeDir::with(&["Alice", "Carol"]);
        let rate = MailRate::default();
        let now = Instant::now();
        // The state keeps no time: an answer however late counts until the session says
        // the prompt lapsed.
        let mut s = offline_offer_state(&dir, &rate, now);
        let much_later = now + Duration::from_secs(3600);
        assert_eq!(
            texts(&s.prompt_reply(b"y", &dir, &rate, much_later)),
            ["save Bob<-Alice meet me"]
        );
        // Lapsed: the sender is told, and a late answer stores nothing but is answered,
        // once, whatever it says.
        for late in [&b"y"[..], b"n", b""] {
            let mut s = offline_offer_state(&dir, &rate, now);
            assert_eq!(
                texts(&s.prompt_lapsed()),
                ["say Region No answer; ESP Mail not sent."]
            );
            assert!(!s.offer_pending());
            assert!(s.lapsed());
            assert_eq!(
                texts(&s.prompt_reply(late, &dir, &rate, now)),
                ["say Region Too late; ESP Mail not sent."]
            );
            assert!(s.prompt_reply(late, &dir, &rate, now).is_empty());
        }
        // A lapse with no offer pending does nothing.
        let mut s = EspState::new(name("Alice"));
        assert!(s.prompt_lapsed().is_empty());
        assert!(!s.lapsed());
        // A new TO: or another prompt ends the lapse: a later answer is nobody's.
        let mut s = offline_offer_state(&dir, &rate, now);
        s.prompt_lapsed();
        s.start("carol", None, &dir);
        assert!(s.prompt_reply(b"y", &dir, &rate, now).is_empty());
        let mut s = offline_offer_state(&dir, &rate, now);
        s.prompt_lapsed();
        s.forget_lapse();
        assert!(s.prompt_reply(b"y", &dir, &rate, now).is_empty());
        let mut s = offline_offer_state(&dir, &rate, now);
        s.start("carol", None, &dir);
        assert!(!s.offer_pending());
        assert!(s.prompt_reply(b"y", &dir, &rate, now).is_empty());
    }

    #[test]
    fn recipient_arrived_meanwhile_gets_it_live() {
        let mut dir = FakeDir::with(&["Alice"]);
        let rate = MailRate::default();
        let now = Instant::now();
        let mut s = offline_offer_state(&dir, &rate, now);
        dir.online.insert("bob".into(), name("Bob"));
        assert_eq!(
            texts(&s.prompt_reply(b"y", &dir, &rate, now)),
            ["say Region Bob is here now; sent as ESP."]
        );
        let d = dir.delivered.borrow();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].2, b"meet me".to_vec());
    }

    #[test]
    fn target_gone_or_busy_becomes_an_offer() {
        let mut dir = FakeDir::with(&["Alice", "Bob"]);
        let rate = MailRate::default();
        let now = Instant::now();
        let mut s = EspState::new(name("Alice"));
        s.start("Bob", None, &dir);
        dir.busy.push("bob".into());
        assert_eq!(
            texts(&s.esp(b"ESP:hello", &dir, &rate, now)),
            ["reply 0", "prompt ESP Mail to Bob? (Y/N) "]
        );
        dir.online.remove("bob");
        s.start("Bob", None, &dir); // unknown and offline now
        assert!(!s.offer_pending());
        assert_eq!(s.target(), None);
    }

    #[test]
    fn send_rate_limits_saves_per_sender() {
        let dir = FakeDir::with(&["Alice"]);
        let rate = MailRate::new(2);
        let t0 = Instant::now();
        for i in 0..2 {
            let t = t0 + Duration::from_secs(i);
            let mut s = offline_offer_state(&dir, &rate, t);
            assert!(texts(&s.prompt_reply(b"y", &dir, &rate, t))[0].starts_with("save"));
        }
        // At offer time: refused before asking.
        let mut s = EspState::new(name("alice"));
        s.start("bob", Some(name("Bob")), &dir);
        assert_eq!(
            texts(&s.esp(b"ESP:third", &dir, &rate, t0 + Duration::from_secs(10))),
            ["reply 0", "say Region Too much ESP Mail; wait 50 s."]
        );
        assert!(!s.offer_pending());
        // Another sender is not limited.
        let mut other = EspState::new(name("Carol"));
        other.start("bob", Some(name("Bob")), &dir);
        let i = other.esp(b"ESP:x", &dir, &rate, t0 + Duration::from_secs(10));
        assert_eq!(texts(&i)[1], "prompt ESP Mail to Bob? (Y/N) ");
        // After the window: allowed again.
        let t = t0 + Duration::from_secs(61);
        let mut s = offline_offer_state(&dir, &rate, t);
        assert!(texts(&s.prompt_reply(b"y", &dir, &rate, t))[0].starts_with("save"));
    }

    #[test]
    fn send_rate_also_checked_at_the_answer() {
        let dir = FakeDir::with(&["Alice"]);
        let rate = MailRate::new(1);
        let t0 = Instant::now();
        let mut a = offline_offer_state(&dir, &rate, t0);
        let mut b = offline_offer_state(&dir, &rate, t0);
        assert!(texts(&a.prompt_reply(b"y", &dir, &rate, t0))[0].starts_with("save"));
        assert_eq!(
            texts(&b.prompt_reply(b"y", &dir, &rate, t0 + Duration::from_secs(1))),
            ["say Region Too much ESP Mail; wait 59 s."]
        );
    }

    #[test]
    fn chat_and_text_limits() {
        let Speech::Chat(t) = classify_speak(b"Hello\xff") else {
            panic!()
        };
        assert_eq!(t.expose(), b"Hello?");
        let long = vec![b'a'; 300];
        let Speech::Chat(t) = classify_speak(&long) else {
            panic!()
        };
        assert_eq!(t.len(), SPEECH_CAP);
        assert!(matches!(classify_speak(b"To:Bob"), Speech::EspTo(n) if n == "Bob"));
        assert!(matches!(classify_speak(b"TO:"), Speech::EspTo(n) if n.is_empty()));
        assert!(matches!(classify_speak(b"to"), Speech::Chat(_)));
        assert_eq!(speakable(b"\x00a\x80"), b"?a?");
        let Speech::Chat(w) = classify_speak(b"hi all") else {
            panic!()
        };
        assert_eq!(texts(&[chat(w)]), ["chat hi all"]);
        assert_eq!(pad_body(b"x"), b" x ");
        assert_eq!(pad_body(b""), b"  ");
        assert_eq!(pad_body(b"abcd"), b"abcd");
        let dir = FakeDir::with(&["Alice", "Bob"]);
        let mut s = EspState::new(name("Alice"));
        s.start("bob", None, &dir);
        let mut esp = b"ESP:".to_vec();
        esp.extend(vec![b'z'; 200]);
        s.esp(&esp, &dir, &MailRate::default(), Instant::now());
        assert_eq!(dir.delivered.borrow()[0].2.len(), SPEECH_CAP);
    }

    #[test]
    fn yes_no_answers_are_trimmed_when_read() {
        assert_eq!(parse_answer(b" yes "), Answer::Yes);
        assert_eq!(parse_answer(b"Y"), Answer::Yes);
        assert_eq!(parse_answer(b" n "), Answer::No);
        assert_eq!(parse_answer(b"   "), Answer::Empty);
        assert_eq!(parse_answer(b"maybe"), Answer::Unusable);
    }

    #[test]
    fn exact_texts_and_sizes() {
        assert_eq!(mail_offer_prompt("abcdefghijklmnop").len(), 36);
        assert_eq!(mail_waiting(2), "You have 2 ESP Mail (times UTC).");
        assert_eq!(next_mail_prompt(3), "Next ESP Mail (3 left)? (Y/N) ");
        assert_eq!(too_much_mail(7), "Too much ESP Mail; wait 7 s.");
        assert_eq!(box_full("Bob"), "Bob's ESP Mail box is full. Not sent.");
        assert_eq!(here_now("Bob"), "Bob is here now; sent as ESP.");
        assert_eq!(mail_saved("Bob"), "ESP Mail for Bob saved.");
        // 2023-11-23 14:05:59 UTC
        assert_eq!(
            mail_header("Alice", 1_700_748_359),
            "ESP Mail from Alice, Nov 23 14:05:"
        );
    }

    #[test]
    fn pacer_paces_and_keeps() {
        assert!(DeliveryPacer::start(0).is_none());
        let (mut p, first) = DeliveryPacer::start(3).unwrap();
        assert_eq!(first, "You have 3 ESP Mail (times UTC).");
        assert_eq!(p.answer(b"y"), PacerStep::Ignore);
        assert_eq!(
            p.delivered(),
            PacerStep::Ask("Next ESP Mail (2 left)? (Y/N) ".into())
        );
        assert!(p.awaiting_reply());
        assert_eq!(p.answer(b""), PacerStep::Deliver);
        assert_eq!(
            p.delivered(),
            PacerStep::Ask("Next ESP Mail (1 left)? (Y/N) ".into())
        );
        assert_eq!(p.answer(b"Y"), PacerStep::Deliver);
        assert_eq!(p.delivered(), PacerStep::Finished);
        assert_eq!(p.left(), 0);

        let (mut p, _) = DeliveryPacer::start(2).unwrap();
        p.delivered();
        assert_eq!(p.answer(b"N"), PacerStep::Kept);
        assert!(!p.awaiting_reply());

        let (mut p, _) = DeliveryPacer::start(2).unwrap();
        p.delivered();
        assert_eq!(
            p.answer(b"?"),
            PacerStep::Ask("Next ESP Mail (1 left)? (Y/N) ".into())
        );
        assert_eq!(
            p.answer(b"?"),
            PacerStep::Ask("Next ESP Mail (1 left)? (Y/N) ".into())
        );
        assert_eq!(p.answer(b"?"), PacerStep::Kept);
    }

    #[test]
    fn a_lapsed_next_prompt_says_kept_and_a_late_answer_still_counts() {
        let (mut p, _) = DeliveryPacer::start(3).unwrap();
        // No prompt pending yet: nothing lapses.
        assert_eq!(p.lapsed(), PacerStep::Ignore);
        p.delivered();
        assert_eq!(p.lapsed(), PacerStep::Lapsed);
        assert!(!p.awaiting_reply());
        assert!(p.is_lapsed());
        assert_eq!(p.left(), 2, "still stored, still deliverable");
        // A second lapse says nothing more.
        assert_eq!(p.lapsed(), PacerStep::Ignore);
        // A late Y (or empty answer) delivers the next one anyway.
        assert_eq!(p.answer(b"y"), PacerStep::Deliver);
        assert!(!p.is_lapsed());
        p.delivered();
        assert_eq!(p.lapsed(), PacerStep::Lapsed);
        assert_eq!(p.answer(b""), PacerStep::Deliver);
        // A late N, or anything else, keeps the rest; only one late answer counts.
        for late in [&b"n"[..], b"?"] {
            let (mut p, _) = DeliveryPacer::start(2).unwrap();
            p.delivered();
            p.lapsed();
            assert_eq!(p.answer(late), PacerStep::Kept);
            assert_eq!(p.left(), 0);
            assert_eq!(p.answer(b"y"), PacerStep::Ignore);
        }
        // An unusable answer re-asks; the re-asked prompt lapses the same way.
        let (mut p, _) = DeliveryPacer::start(2).unwrap();
        p.delivered();
        assert!(matches!(p.answer(b"?"), PacerStep::Ask(_)));
        assert_eq!(p.lapsed(), PacerStep::Lapsed);
    }

    #[test]
    fn another_prompt_supersedes_an_open_or_lapsed_question() {
        let (mut p, _) = DeliveryPacer::start(3).unwrap();
        p.delivered();
        assert_eq!(
            p.superseded(),
            PacerStep::Kept,
            "the open question is answered"
        );
        assert_eq!(p.left(), 0);
        assert_eq!(p.answer(b"y"), PacerStep::Ignore);
        let (mut p, _) = DeliveryPacer::start(3).unwrap();
        p.delivered();
        p.lapsed();
        assert_eq!(
            p.superseded(),
            PacerStep::Ignore,
            "the lapse said so already"
        );
        assert!(!p.is_lapsed());
        assert_eq!(p.answer(b"y"), PacerStep::Ignore);
    }
}
