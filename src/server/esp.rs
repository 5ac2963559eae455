//! Speech and ESP on the server's side of one connection: the message each of the world's
//! ESP [`Intent`]s shows this client ([`message`]), the ESP Mail save it may ask for
//! ([`save`]: "saved" is said only after the durable commit), how a live ESP from someone
//! else is shown ([`show_live`]), and the per-connection line rate ([`Lines`]).
//!
//! What an ESP *means* (target, offer, answers) is decided by `world::esp`; this module
//! only maps those decisions onto protocol messages.
//!
//! May touch: the ESP Mail vault through [`MailHandle::save`]; nothing else.

use std::time::{Instant, SystemTime};

use tracing::{info, warn};

use super::pace::LineBucket;
use crate::avatar::AvatarName;
use crate::espmail::{MailHandle, SaveError};
use crate::log_redact::Sensitive;
use crate::protocol::messages::{ServerMessage, REGION_NOID};
use crate::world::esp::{Intent, LiveEsp, SaveOutcome, Speaker};

/// Lines (SPEAK, ESP) a connection may send in a burst, and per second after it.
const LINE_BURST: u32 = 8;
const LINES_PER_SEC: u32 = 2;
/// Sound the recipient's client plays with a live ESP (WIRE.md §4.4, PLAY_$ 8).
pub const ESP_SOUND: u8 = 8;
/// Said when a line is dropped for coming too fast (ESPMAIL.md has no words for this).
pub const TOO_FAST: &str = "Slow down; that line was not sent.";

/// The message `intent` shows this client, whose avatar is `me`. `seq` is the request
/// being answered (None for a prompt reply, which takes no reply). `None` too for the
/// intents that are not a message to this client: the session carries out
/// [`Intent::Prompt`] (its prompt clock), [`Intent::Chat`] (the Plaza) and
/// [`Intent::SaveMail`] ([`save`]) itself.
pub fn message(intent: Intent, me: u8, seq: Option<u8>) -> Option<ServerMessage> {
    match intent {
        Intent::Reply { esp } => seq.map(|seq| ServerMessage::EspReply { seq, noid: me, esp }),
        Intent::Say { speaker, text } => {
            let speaker = match speaker {
                Speaker::Me => me,
                Speaker::Region => REGION_NOID,
            };
            Some(ServerMessage::ObjectTalks {
                speaker,
                text: Sensitive::new(text.into_bytes()),
            })
        }
        Intent::Echo(text) => Some(ServerMessage::ObjectTalks { speaker: me, text }),
        Intent::SpeakToSelf(text) => Some(ServerMessage::Speak {
            noid: me,
            text: Sensitive::new(text.into_bytes()),
        }),
        Intent::Prompt(_) | Intent::Chat(_) | Intent::SaveMail { .. } => None,
    }
}

/// Saves one ESP Mail durably and says how it went (the reason is logged, never the text).
/// The lines name no recipient and no length: they are written in the sender's session,
/// whose span names the sender, and a line about one ESP Mail names at most one avatar
/// (ESPMAIL.md §5), so the log never shows who wrote to whom.
pub async fn save(
    mail: &MailHandle,
    to: &AvatarName,
    from: &AvatarName,
    text: Sensitive<Vec<u8>>,
) -> SaveOutcome {
    match mail
        .save(to.key(), from.display(), text, SystemTime::now())
        .await
    {
        Ok(_) => {
            info!("ESP Mail saved");
            SaveOutcome::Saved
        }
        Err(SaveError::BoxFull { max }) => {
            info!(max, "ESP Mail refused: box full");
            SaveOutcome::BoxFull
        }
        Err(SaveError::SenderCap { max }) => {
            info!(
                max,
                "ESP Mail refused: the sender's share of the box is full"
            );
            SaveOutcome::SenderCap { max }
        }
        Err(e) => {
            warn!(error = %e, "ESP Mail could not be saved");
            SaveOutcome::Failed
        }
    }
}

/// A live ESP for the avatar `me` (WIRE.md 4.4): "ESP from NAME: " from the region, the ESP
/// sound on its own noid, then the body from the region (speaker 0, as the original host
/// did: the sender's noid does not exist in the recipient's view).
pub fn show_live(live: LiveEsp, me: u8) -> [ServerMessage; 3] {
    [
        ServerMessage::ObjectTalks {
            speaker: REGION_NOID,
            text: Sensitive::new(live.header().into_bytes()),
        },
        ServerMessage::Play {
            sound: ESP_SOUND,
            noid: me,
        },
        ServerMessage::ObjectTalks {
            speaker: REGION_NOID,
            text: live.body,
        },
    ]
}

/// Whether a line may go out (see [`Lines::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes.
    Yes,
    /// No: the line is dropped. `first` of a run of dropped lines: tell the sender
    /// [`TOO_FAST`] (once per run).
    No {
        /// The first line dropped since the last one let through.
        first: bool,
    },
}

/// The line rate of one connection: a person types far slower, and a flood would fill the
/// recipients' bounded outboxes and get *them* disconnected as slow readers.
#[derive(Debug)]
pub struct Lines {
    bucket: LineBucket,
    /// Lines dropped since the last one let through.
    dropped: u64,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            bucket: LineBucket::new(LINE_BURST, LINES_PER_SEC),
            dropped: 0,
        }
    }
}

impl Lines {
    /// Whether one more line may go out at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        if self.bucket.take(now) {
            if self.dropped > 0 {
                info!(dropped = self.dropped, "lines dropped for coming too fast");
                self.dropped = 0;
            }
            return Admit::Yes;
        }
        let first = self.dropped == 0;
        if first {
            info!("lines coming too fast; dropping them");
        }
        self.dropped += 1;
        Admit::No { first }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::time::Duration;

    fn name(s: &str) -> AvatarName {
        AvatarName::parse(s).unwrap()
    }

    fn text_of(m: &Option<ServerMessage>) -> Option<(u8, String)> {
        match m {
            Some(ServerMessage::ObjectTalks { speaker, text }) => Some((
                *speaker,
                String::from_utf8_lossy(text.expose()).into_owned(),
            )),
            _ => None,
        }
    }

    #[test]
    fn intents_become_messages_for_this_client() {
        let me = 7;
        assert_eq!(
            message(Intent::Reply { esp: true }, me, Some(3)),
            Some(ServerMessage::EspReply {
                seq: 3,
                noid: 7,
                esp: true
            })
        );
        // A prompt reply takes no reply.
        assert_eq!(message(Intent::Reply { esp: false }, me, None), None);
        let said = |speaker| Intent::Say {
            speaker,
            text: "hi".into(),
        };
        assert_eq!(
            text_of(&message(said(Speaker::Me), me, None)),
            Some((7, "hi".into()))
        );
        assert_eq!(
            text_of(&message(said(Speaker::Region), me, None)),
            Some((REGION_NOID, "hi".into()))
        );
        let echo = Intent::Echo(Sensitive::new(b"ESP:x".to_vec()));
        assert_eq!(
            text_of(&message(echo, me, Some(1))),
            Some((7, "ESP:x".into()))
        );
        assert!(matches!(
            message(Intent::SpeakToSelf("Cannot contact x.".into()), me, Some(1)),
            Some(ServerMessage::Speak { noid: 7, .. })
        ));
        // What the session carries out itself is no message.
        let save = Intent::SaveMail {
            to: name("Bob"),
            from: name("Alice"),
            text: Sensitive::new(b"x".to_vec()),
        };
        assert_eq!(message(save, me, None), None);
        assert_eq!(message(Intent::Prompt("p".into()), me, None), None);
        let chat = Intent::Chat(Sensitive::new(b"hi".to_vec()));
        assert_eq!(message(chat, me, Some(2)), None);
    }

    #[test]
    fn a_live_esp_is_header_sound_body() {
        let live = LiveEsp::new(name("Alice"), b"ok");
        let [header, sound, body] = show_live(live, 9);
        assert_eq!(
            text_of(&Some(header)),
            Some((REGION_NOID, "ESP from Alice: ".into()))
        );
        assert_eq!(
            sound,
            ServerMessage::Play {
                sound: ESP_SOUND,
                noid: 9
            }
        );
        assert_eq!(text_of(&Some(body)), Some((REGION_NOID, " ok ".into())));
    }

    #[test]
    fn too_many_lines_are_dropped_and_the_sender_told_once_per_run() {
        let mut lines = Lines::default();
        let t0 = Instant::now();
        for _ in 0..LINE_BURST {
            assert_eq!(lines.admit(t0), Admit::Yes);
        }
        assert_eq!(lines.admit(t0), Admit::No { first: true });
        assert_eq!(lines.admit(t0), Admit::No { first: false });
        // Half a second later one line's worth has come back.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(lines.admit(later), Admit::Yes);
        assert_eq!(lines.admit(later), Admit::No { first: true }, "a new run");
    }
}
