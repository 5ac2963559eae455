//! The session's one prompt clock: the one pending PROMPT_USER (the in-world password,
//! the ESP Mail offer, or "Next ESP Mail"), which part asked it, when it lapses, and what
//! becomes of a late answer. The C64 cannot take a prompt back, so a lapse is said to the
//! player and a late answer is answered by the part whose prompt lapsed, never ignored in
//! silence; a reply with no prompt and no lapse behind it is dropped without a log line.
//!
//! May touch: the session it is part of (its fields), nothing else.

use std::borrow::Cow;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;
use zeroize::Zeroizing;

use super::{Auth, Flow, Live, SessionError, Step};
use crate::log_redact::Sensitive;
use crate::protocol::messages::strip_prompt_echo;
use crate::protocol::messages::ServerMessage;
use crate::world::esp::EspState;

/// What the one pending PROMPT_USER is for: the part told when it is answered or lapses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PromptFor {
    /// The in-world password dialogue ([`login::Asking`]).
    Password,
    /// The ESP Mail offer ([`EspState`]).
    MailOffer,
    /// "Next ESP Mail" ([`Delivery`]).
    NextMail,
}

/// The pending prompt: the session's prompt clock.
pub(super) struct Prompt {
    pub(super) for_: PromptFor,
    pub(super) text: Cow<'static, str>,
    pub(super) lapses_at: tokio::time::Instant,
}

impl<S> Live<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends PROMPT_USER and starts the prompt clock; the connection has one prompt at a
    /// time, so this replaces any other.
    pub(super) fn ask(&mut self, for_: PromptFor, text: impl Into<Cow<'static, str>>) {
        // The new prompt takes the prompt line: a late answer can no longer be told apart
        // from an answer to it, so the parts whose prompt lapsed forget it, and a delivery
        // whose question is still open (or lapsed) ends for this login.
        if for_ != PromptFor::NextMail {
            if let Some(d) = self.delivery.as_mut() {
                let open = self.prompt.as_ref().map(|p| p.for_) == Some(PromptFor::NextMail);
                if open || d.is_lapsed() {
                    let shows = d.superseded();
                    self.show_delivery(shows);
                }
            }
        }
        if for_ != PromptFor::MailOffer {
            if let Some(esp) = self.esp.as_mut() {
                esp.forget_lapse();
            }
        }
        self.lapsed_text = None;
        if for_ == PromptFor::Password {
            // The prompt clock takes over the unauthenticated seat's time limit.
            self.seat_lapses_at = None;
        }
        let text = text.into();
        self.send(ServerMessage::PromptUser(Bytes::copy_from_slice(
            text.as_bytes(),
        )));
        self.prompt = Some(Prompt {
            for_,
            text,
            lapses_at: tokio::time::Instant::now() + self.deps.settings.prompt_timeout,
        });
    }

    pub(super) async fn on_prompt_reply(
        &mut self,
        text: Sensitive<Vec<u8>>,
    ) -> Result<Flow, SessionError> {
        let Some(prompt) = self.prompt.take() else {
            return self.on_late_reply(text).await;
        };
        // A copy of what was typed (a password, perhaps): zeroed when dropped, like `text`.
        let mut answer =
            Zeroizing::new(strip_prompt_echo(prompt.text.as_bytes(), text.expose()).to_vec());
        drop(text);
        match prompt.for_ {
            PromptFor::Password => {
                // Moved into a `Password`, which zeroes it in turn.
                let typed = std::mem::take(&mut *answer);
                let step = match &mut self.auth {
                    Auth::Asking(asking) => asking.answer(typed, &self.deps, self.peer).await,
                    _ => Step::Nothing,
                };
                self.on_login_step(step).await
            }
            PromptFor::MailOffer => {
                let intents = match self.esp.as_mut() {
                    Some(state) => state.prompt_reply(
                        &answer,
                        &self.plaza.directory(),
                        &self.deps.mail_rate,
                        Instant::now(),
                    ),
                    None => Vec::new(),
                };
                self.run_intents(None, intents).await;
                Ok(Flow::Continue)
            }
            PromptFor::NextMail => {
                let shows = match self.delivery.as_mut() {
                    Some(d) => d.answer(&answer),
                    None => Vec::new(),
                };
                self.show_delivery(shows);
                Ok(Flow::Continue)
            }
        }
    }

    /// A prompt reply with no prompt pending. An answer to a prompt that lapsed is never
    /// met with silence (the C64 cannot take a prompt back, so the player may answer it
    /// minutes later): the part whose prompt lapsed answers it. Anything else is dropped
    /// without a log line, so unsolicited replies cannot be used to write to the log.
    pub(super) async fn on_late_reply(
        &mut self,
        text: Sensitive<Vec<u8>>,
    ) -> Result<Flow, SessionError> {
        let Some(prompt) = self.lapsed_text.take() else {
            return Ok(Flow::Continue);
        };
        let answer = strip_prompt_echo(prompt.as_bytes(), text.expose());
        if self.esp.as_ref().is_some_and(EspState::lapsed) {
            let intents = match self.esp.as_mut() {
                Some(state) => state.prompt_reply(
                    answer,
                    &self.plaza.directory(),
                    &self.deps.mail_rate,
                    Instant::now(),
                ),
                None => Vec::new(),
            };
            self.run_intents(None, intents).await;
        } else if let Some(d) = self.delivery.as_mut().filter(|d| d.is_lapsed()) {
            let shows = d.answer(answer);
            self.show_delivery(shows);
        }
        Ok(Flow::Continue)
    }

    /// The prompt clock ran out: the part that asked is told.
    pub(super) async fn on_prompt_lapsed(&mut self) -> Result<Flow, SessionError> {
        let Some(prompt) = self.prompt.take() else {
            return Ok(Flow::Continue);
        };
        self.lapsed_text = Some(prompt.text);
        match prompt.for_ {
            PromptFor::Password => {
                info!("no answer to the password prompt");
                Ok(Flow::Close)
            }
            PromptFor::MailOffer => {
                // The pending text is dropped from memory; nothing is stored, and the
                // sender is told, since the prompt stays on a C64's screen.
                let intents = match self.esp.as_mut() {
                    Some(state) => state.prompt_lapsed(),
                    None => Vec::new(),
                };
                info!("ESP Mail offer lapsed");
                self.run_intents(None, intents).await;
                self.pump().await?;
                Ok(Flow::Continue)
            }
            PromptFor::NextMail => {
                // The rest stays stored; the player is told, and a late answer still
                // counts.
                let shows = match self.delivery.as_mut() {
                    Some(d) => d.lapsed(),
                    None => Vec::new(),
                };
                self.show_delivery(shows);
                self.pump().await?;
                Ok(Flow::Continue)
            }
        }
    }
}
