//! Speech and ESP in the session: the line rate, chat broadcast, `TO:NAME` and ESP text
//! handed to the world's ESP dialogue, and its intents carried out (ESP Mail saves
//! included, awaited outside any select so a shutdown lets them finish).
//!
//! May touch: the session it is part of (its fields), the registry and vault through it.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use super::prompts::PromptFor;
use super::Live;
use crate::log_redact::Sensitive;
use crate::protocol::messages::ServerMessage;
use crate::server::esp::{self, Admit};
use crate::world::esp::{classify_speak, Intent, Speech};

impl<S> Live<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Whether one more line may go out now. A dropped line still gets its reply (the
    /// client waits for one), keeping ESP mode as it was; the sender is told once per run
    /// of dropped lines.
    pub(super) fn line_allowed(&mut self, seq: u8, esp: bool) -> bool {
        let Admit::No { first } = self.lines.admit(Instant::now()) else {
            return true;
        };
        if first {
            self.say(esp::TOO_FAST);
        }
        let in_esp = esp && self.esp.as_ref().is_some_and(|e| e.target().is_some());
        self.send(ServerMessage::EspReply {
            seq,
            noid: self.plaza.my_noid(),
            esp: in_esp,
        });
        false
    }

    pub(super) async fn on_speak(&mut self, seq: u8, text: Sensitive<Vec<u8>>) {
        let me = self.plaza.my_noid();
        if !self.is_visible() || self.esp.is_none() {
            // A hidden avatar (password pending) cannot chat.
            self.send(ServerMessage::EspReply {
                seq,
                noid: me,
                esp: false,
            });
            return;
        }
        match classify_speak(text.expose()) {
            Speech::Chat(words) => {
                debug!(len = words.len(), fp = %self.fp.fingerprint(words.expose()), "speak");
                self.plaza.chat(words);
                self.send(ServerMessage::EspReply {
                    seq,
                    noid: me,
                    esp: false,
                });
            }
            Speech::EspTo(typed) => {
                // A new TO: cancels any pending offer (ESPMAIL.md §3).
                if self.prompt.as_ref().map(|p| p.for_) == Some(PromptFor::MailOffer) {
                    self.prompt = None;
                }
                let known = match self.deps.accounts.lookup(&typed).await {
                    Ok(found) => found.map(|a| a.name),
                    Err(e) => {
                        warn!(error = %e, "account lookup failed");
                        None
                    }
                };
                let intents = match self.esp.as_mut() {
                    Some(state) => state.start(&typed, known, &self.plaza.directory()),
                    None => Vec::new(),
                };
                self.run_intents(Some(seq), intents).await;
            }
        }
    }

    pub(super) async fn on_esp(&mut self, seq: u8, text: Sensitive<Vec<u8>>) {
        let visible = self.is_visible();
        let intents = match (visible, self.esp.as_mut()) {
            (true, Some(state)) => {
                debug!(len = text.len(), fp = %self.fp.fingerprint(text.expose()), "esp");
                let dir = self.plaza.directory();
                state.esp(text.expose(), &dir, &self.deps.mail_rate, Instant::now())
            }
            _ => vec![Intent::Reply { esp: false }],
        };
        if intents.is_empty() {
            self.send(ServerMessage::EspReply {
                seq,
                noid: self.plaza.my_noid(),
                esp: false,
            });
        }
        self.run_intents(Some(seq), intents).await;
    }

    /// Carries out the ESP dialogue's intents, in order. `seq` is the request being
    /// answered (None for a prompt reply, which takes no reply).
    pub(super) async fn run_intents(&mut self, seq: Option<u8>, intents: Vec<Intent>) {
        let me = self.plaza.my_noid();
        let mut queue: VecDeque<Intent> = intents.into();
        while let Some(intent) = queue.pop_front() {
            match intent {
                Intent::Prompt(text) => self.ask(PromptFor::MailOffer, text),
                Intent::Chat(words) => self.plaza.chat(words),
                Intent::SaveMail { to, from, text } => {
                    // Awaited here, outside any select: a shutdown lets it finish, and
                    // "saved" is said only after the durable commit.
                    let outcome = esp::save(&self.deps.mail, &to, &from, text).await;
                    if let Some(state) = self.esp.as_mut() {
                        queue.extend(state.save_result(outcome));
                    }
                }
                other => {
                    if let Some(msg) = esp::message(other, me, seq) {
                        self.send(msg);
                    }
                }
            }
        }
    }
}
