//! What a player types and what a player sees, as pure functions: no terminal, no socket.
//!
//! [`read_typed`] turns a typed line into a local command or the bytes the world accepts
//! (cut to what a balloon holds, and saying so). [`Screen`] turns the server's events into
//! the lines `espmail talk` prints: one line per arrival and departure, other avatars'
//! speech under a name (or `Avatar N` where the protocol gives none), the server's own
//! lines marked `*` so they never look as if someone said them, and the two lines of a
//! live ESP (or of an ESP Mail) shown as one.
//!
//! Every byte from the network is made printable before it is shown ([`printable`]): a
//! balloon may carry control bytes, and a terminal must not take them as commands.

use std::collections::{BTreeSet, HashMap};

use super::client::{avatar_noids, Event};
use crate::protocol::habitat::HEADER_LEN;
use crate::protocol::messages::{speech_text, SPEECH_CAP};

/// Escaped bytes in front of a balloon line: the packet header and the speaker byte of
/// OBJECT_TALKS, the tighter of the two ways a line reaches others (SPEAK$ has no speaker
/// byte), so a cut line is shown to everyone exactly as the sender was told.
const BALLOON_PREFIX: usize = HEADER_LEN + 1;

/// What a typed line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// A local command: never sent to the world.
    Command(Command),
    /// A line for the world.
    Line(Line),
}

/// The local commands (anything typed starting with `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/quit` (or `/exit`): leave the world.
    Quit,
    /// `/help`: what can be typed.
    Help,
    /// `/who`: who is here.
    Who,
    /// Anything else starting with `/`: the word typed.
    Unknown(String),
}

/// A typed line made fit for the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// What goes on the wire: bytes 0x20-0x7E (tabs become spaces, anything else `?`),
    /// cut to what one balloon shows.
    pub bytes: Vec<u8>,
    /// Characters typed, when more than were sent (the line was cut).
    pub typed_chars: Option<usize>,
    /// Some characters could not be shown in the world and were sent as `?`.
    pub replaced: bool,
}

impl Line {
    /// The notes to show the player about what changed, if anything did.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.typed_chars.is_some() {
            notes.push(format!(
                "-- That line was too long for a balloon; only its first {} characters were sent.",
                self.bytes.len()
            ));
        }
        if self.replaced {
            notes.push("-- Characters the world cannot show were sent as '?'.".to_string());
        }
        notes
    }
}

/// Reads one typed line. `/word` is a local command; `//` sends a line starting with `/`.
pub fn read_typed(typed: &str) -> Typed {
    let typed = typed.trim_end_matches(['\r', '\n']);
    if let Some(rest) = typed.strip_prefix('/') {
        if rest.starts_with('/') {
            return Typed::Line(world_line(rest));
        }
        let word = rest.split_whitespace().next().unwrap_or("");
        let cmd = match word.to_ascii_lowercase().as_str() {
            "quit" | "exit" | "q" => Command::Quit,
            "help" | "?" | "h" => Command::Help,
            "who" => Command::Who,
            _ => Command::Unknown(typed.to_string()),
        };
        return Typed::Command(cmd);
    }
    Typed::Line(world_line(typed))
}

/// `typed` as the world takes it: one `?` for each character it cannot show (rather than
/// one per UTF-8 byte, as the server would), then cut by the server's own rule
/// ([`speech_text`]: the 114-byte cap, then what one balloon frame holds once escaped).
pub fn world_line(typed: &str) -> Line {
    let mut replaced = false;
    let raw: Vec<u8> = typed
        .chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\t' => b' ',
            _ => {
                replaced = true;
                b'?'
            }
        })
        .collect();
    let bytes = speech_text(&raw, BALLOON_PREFIX);
    let typed_chars = (bytes.len() < raw.len()).then_some(raw.len());
    Line {
        bytes,
        typed_chars,
        replaced,
    }
}

/// The most a typed line can carry (the speech cap), for the help text.
pub const MAX_LINE: usize = SPEECH_CAP;

/// The help text, one screen line each.
pub fn help() -> Vec<String> {
    [
        "-- Type a line and press Enter to say it to everyone here.",
        "-- TO:NAME starts ESP (private thoughts) to NAME; then each line goes to NAME only,",
        "--   and an empty line ends ESP. If NAME is offline, you are offered ESP Mail.",
        "-- When the server asks a question (a line starting with ??), your next line answers it.",
        "-- /who  who is here      /help  this text      /quit  leave (Ctrl-D does too)",
        "-- To say a line that starts with /, type it as //.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Bytes from the network made safe to print: 0x20-0x7E as they are, a balloon line break
/// (0x0A) as a space, anything else (control bytes, the C64's drawing glyphs) as `?`.
pub fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0x20..=0x7E => b as char,
            0x0A => ' ',
            _ => '?',
        })
        .collect()
}

/// The world as this player sees it, and how each event is shown.
#[derive(Debug, Clone)]
pub struct Screen {
    me: u8,
    my_name: String,
    /// The other avatars present (their avatar noids; heads and other objects are not
    /// listed, so a departure is one line).
    others: BTreeSet<u8>,
    /// Names learnt for noids, where the protocol gave one safely.
    names: HashMap<u8, String>,
    /// Whom the player's ESP goes to (as typed after `TO:`), while ESP is on.
    esp_to: Option<String>,
    in_esp: bool,
    /// The first line of a live ESP or an ESP Mail, waiting for its text.
    held: Option<String>,
}

impl Screen {
    /// The screen of avatar `me` (noid) called `my_name`, from the DESCRIBE vector.
    pub fn new(me: u8, my_name: &str, describe: &[u8]) -> Screen {
        let others = avatar_noids(describe.get(9..).unwrap_or_default())
            .into_iter()
            .filter(|n| *n != me)
            .collect();
        Screen {
            me,
            my_name: my_name.to_string(),
            others,
            names: HashMap::new(),
            esp_to: None,
            in_esp: false,
            held: None,
        }
    }

    /// The lines shown once the world has let the avatar in.
    pub fn entered(&self) -> Vec<String> {
        vec![
            format!(
                "-- In the Plaza as {}. Type to talk; TO:NAME sends ESP; /help lists commands.",
                self.my_name
            ),
            self.who(),
        ]
    }

    /// Who is here, as one line.
    pub fn who(&self) -> String {
        if self.others.is_empty() {
            return "-- Nobody else is here.".to_string();
        }
        let names: Vec<String> = self.others.iter().map(|n| self.name_of(*n)).collect();
        format!("-- Here with you: {}.", names.join(", "))
    }

    /// Whether the player's lines go out as ESP.
    pub fn in_esp(&self) -> bool {
        self.in_esp
    }

    /// The player typed `TO:NAME`: the name their ESP goes to if the server agrees.
    pub fn esp_typed(&mut self, name: &str) {
        self.esp_to = Some(name.trim().to_string());
    }

    /// How another avatar is called on this screen.
    fn name_of(&self, noid: u8) -> String {
        match self.names.get(&noid) {
            Some(name) => name.clone(),
            None => format!("Avatar {noid}"),
        }
    }

    /// The lines an event shows (often none). Call for every event, in order.
    pub fn show(&mut self, ev: &Event) -> Vec<String> {
        let mut out = Vec::new();
        // A held first line goes with the next balloon line; anything else shows it alone.
        // The ESP sound between the two lines changes nothing.
        if let Some(head) = self.held.take() {
            match ev {
                Event::Talk { text, .. } => {
                    out.push(format!("{} {}", head, printable(text).trim()));
                    return out;
                }
                Event::Play { .. } => {
                    self.held = Some(head);
                    return out;
                }
                _ => out.push(format!("* {head}")),
            }
        }
        match ev {
            Event::Talk { speaker, text } => self.talk(*speaker, text, &mut out),
            Event::Speak { noid, text } if *noid == self.me => {
                // Our own speech is never sent back to us: SPEAK$ on our noid is the
                // server speaking privately ("Cannot contact NAME.", WIRE.md 4.4).
                out.push(format!("* {}", printable(text)));
            }
            Event::Speak { noid, text } => {
                out.push(format!("{}: {}", self.name_of(*noid), printable(text)));
            }
            Event::Prompt(text) => out.push(format!("?? {}", printable(text).trim_end())),
            Event::Reply { noid, args, .. } if *noid == self.me => {
                let on = args.first().copied().unwrap_or(0) != 0;
                if on != self.in_esp {
                    out.push(if on {
                        match &self.esp_to {
                            Some(to) => format!(
                                "-- ESP to {to}: what you type goes to {to} only; an empty line ends ESP."
                            ),
                            None => "-- ESP is on: an empty line ends it.".to_string(),
                        }
                    } else {
                        "-- ESP ended: what you type goes to everyone here.".to_string()
                    });
                }
                self.in_esp = on;
                if !on {
                    self.esp_to = None;
                }
            }
            Event::HereIs(vector) => {
                for noid in avatar_noids(vector) {
                    if noid != self.me && self.others.insert(noid) {
                        out.push(format!("-- {} arrived.", self.name_of(noid)));
                    }
                }
            }
            Event::GoAway(noid) => self.gone(*noid, &mut out),
            _ => {}
        }
        out
    }

    /// GOAWAY comes for the avatar and for its head: only the avatar is news.
    fn gone(&mut self, noid: u8, out: &mut Vec<String>) {
        if self.others.remove(&noid) {
            out.push(format!("-- {} left.", self.name_of(noid)));
            self.names.remove(&noid);
        }
    }

    fn talk(&mut self, speaker: u8, text: &[u8], out: &mut Vec<String>) {
        let line = printable(text);
        if let Some(name) = esp_from(&line) {
            // NeoHabitat speaks "ESP from NAME: " on the sender's noid: where that noid is
            // an avatar here, it is NAME. (This server speaks it as the region: no name.)
            if self.others.contains(&speaker) {
                self.names.insert(speaker, name.to_string());
            }
            self.held = Some(line.trim_end().to_string());
            return;
        }
        if line.starts_with("ESP Mail from ") && line.trim_end().ends_with(':') {
            self.held = Some(line.trim_end().to_string());
            return;
        }
        if speaker == self.me {
            if let Some(body) = line.strip_prefix("ESP:") {
                // The server's echo of what we sent as ESP.
                let body = body.trim();
                out.push(match &self.esp_to {
                    Some(to) => format!("ESP to {to}: {body}"),
                    None => format!("ESP sent: {body}"),
                });
                return;
            }
        }
        out.push(format!("* {line}"));
    }
}

/// NAME in a live ESP's first line, "ESP from NAME: ".
fn esp_from(line: &str) -> Option<&str> {
    let name = line
        .strip_prefix("ESP from ")?
        .trim_end()
        .strip_suffix(':')?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DESCRIBE vector: region state (me = `me`), then `(noid, class)` pairs.
    fn describe(me: u8, pairs: &[(u8, u8)]) -> Vec<u8> {
        let mut v = vec![0, 1, 0x20, 0, me, 0, 0, 0, 0];
        for (n, c) in pairs {
            v.extend_from_slice(&[*n, *c]);
        }
        v.extend_from_slice(&[0, 0]);
        v
    }

    fn talk(speaker: u8, text: &str) -> Event {
        Event::Talk {
            speaker,
            text: text.as_bytes().to_vec(),
        }
    }

    fn reply(noid: u8, esp: u8) -> Event {
        Event::Reply {
            noid,
            reqnum: 0,
            args: vec![esp],
        }
    }

    #[test]
    fn a_long_line_of_escaped_bytes_is_cut_to_one_balloon_and_says_so() {
        let line = world_line(&"]".repeat(300));
        // 121 escaped bytes in a frame, 5 before the text, 2 per ']': 58 of them.
        assert_eq!(line.bytes, vec![b']'; 58]);
        assert_eq!(line.typed_chars, Some(300));
        assert!(line.notes()[0].contains("only its first 58 characters were sent"));
        let plain = world_line(&"a".repeat(200));
        assert_eq!(plain.bytes.len(), SPEECH_CAP);
        let short = world_line("hello");
        assert_eq!((&short.bytes[..], short.typed_chars), (&b"hello"[..], None));
        assert!(short.notes().is_empty());
    }

    #[test]
    fn characters_the_world_cannot_show_become_one_question_mark_each() {
        let line = world_line("caf\u{e9}\tok\u{1b}");
        assert_eq!(line.bytes, b"caf? ok?".to_vec());
        assert!(line.replaced);
        assert_eq!(line.notes().len(), 1);
    }

    #[test]
    fn slash_lines_are_local_and_double_slash_is_sent() {
        assert_eq!(read_typed("/quit"), Typed::Command(Command::Quit));
        assert_eq!(read_typed("/QUIT\r"), Typed::Command(Command::Quit));
        assert_eq!(read_typed("/help"), Typed::Command(Command::Help));
        assert_eq!(read_typed("/who"), Typed::Command(Command::Who));
        assert_eq!(
            read_typed("/dance now"),
            Typed::Command(Command::Unknown("/dance now".into()))
        );
        assert_eq!(
            read_typed("/"),
            Typed::Command(Command::Unknown("/".into()))
        );
        let Typed::Line(l) = read_typed("//me waves") else {
            panic!("not a line")
        };
        assert_eq!(l.bytes, b"/me waves".to_vec());
        let Typed::Line(l) = read_typed("help") else {
            panic!("not a line")
        };
        assert_eq!(l.bytes, b"help".to_vec());
    }

    #[test]
    fn an_arrival_and_a_departure_are_one_line_each() {
        let mut s = Screen::new(2, "Alice", &describe(2, &[(3, 127), (2, 1)]));
        assert_eq!(s.entered()[1], "-- Nobody else is here.");
        // Bob arrives with his head (contents first), and leaves: GOAWAY for both.
        let hereis = Event::HereIs(vec![5, 127, 4, 1, 0, 0]);
        assert_eq!(s.show(&hereis), ["-- Avatar 4 arrived."]);
        assert_eq!(s.show(&hereis), Vec::<String>::new(), "not twice");
        assert_eq!(s.who(), "-- Here with you: Avatar 4.");
        assert_eq!(s.show(&Event::GoAway(4)), ["-- Avatar 4 left."]);
        assert!(s.show(&Event::GoAway(5)).is_empty(), "the head is no news");
        assert!(s.show(&Event::GoAway(9)).is_empty(), "nobody we knew");
    }

    #[test]
    fn server_lines_never_look_like_speech() {
        let mut s = Screen::new(2, "Alice", &describe(2, &[(4, 1), (2, 1)]));
        assert_eq!(s.entered()[1], "-- Here with you: Avatar 4.");
        let own = Event::Speak {
            noid: 2,
            text: b"Cannot contact Nobody.".to_vec(),
        };
        assert_eq!(s.show(&own), ["* Cannot contact Nobody."]);
        let theirs = Event::Speak {
            noid: 4,
            text: b"hi\x1b[2J".to_vec(),
        };
        assert_eq!(
            s.show(&theirs),
            ["Avatar 4: hi?[2J"],
            "no escape reaches the terminal"
        );
        assert_eq!(
            s.show(&talk(0, "ESP Mail for Bob saved.")),
            ["* ESP Mail for Bob saved."]
        );
        assert_eq!(
            s.show(&talk(2, "Transmitting thoughts to Bob...")),
            ["* Transmitting thoughts to Bob..."]
        );
    }

    #[test]
    fn esp_lines_come_as_one_line_and_the_echo_names_the_target() {
        let mut s = Screen::new(2, "Alice", &describe(2, &[(2, 1)]));
        assert!(s.show(&talk(0, "ESP from Bob: ")).is_empty());
        assert!(s.show(&Event::Play { sound: 8, noid: 2 }).is_empty());
        assert_eq!(s.show(&talk(0, " ok ")), ["ESP from Bob: ok"]);
        assert!(s
            .show(&talk(0, "ESP Mail from Bob, Nov 23 14:05:"))
            .is_empty());
        assert_eq!(
            s.show(&talk(0, "see you")),
            ["ESP Mail from Bob, Nov 23 14:05: see you"]
        );
        s.esp_typed("bob");
        assert_eq!(
            s.show(&reply(2, 1)),
            ["-- ESP to bob: what you type goes to bob only; an empty line ends ESP."]
        );
        assert!(s.in_esp());
        assert_eq!(s.show(&talk(2, "ESP:hello")), ["ESP to bob: hello"]);
        assert!(s.show(&reply(2, 1)).is_empty(), "no change, no line");
        assert_eq!(
            s.show(&reply(2, 0)),
            ["-- ESP ended: what you type goes to everyone here."]
        );
        // A first line with nothing after it still shows.
        assert!(s.show(&talk(0, "ESP from Bob: ")).is_empty());
        assert_eq!(
            s.show(&Event::Prompt(b"ESP Mail to Bob? (Y/N) ".to_vec())),
            ["* ESP from Bob:", "?? ESP Mail to Bob? (Y/N)"]
        );
    }

    #[test]
    fn a_name_is_learnt_only_from_a_speaker_who_is_here() {
        let mut s = Screen::new(2, "Alice", &describe(2, &[(2, 1), (4, 1)]));
        // NeoHabitat style: "ESP from Bob: " on Bob's noid.
        assert!(s.show(&talk(4, "ESP from Bob: ")).is_empty());
        assert_eq!(s.show(&talk(4, "hi")), ["ESP from Bob: hi"]);
        let speech = Event::Speak {
            noid: 4,
            text: b"hello".to_vec(),
        };
        assert_eq!(s.show(&speech), ["Bob: hello"]);
        // A noid that is nobody here teaches nothing.
        assert!(s.show(&talk(9, "ESP from Eve: ")).is_empty());
        assert_eq!(s.show(&talk(9, "x")), ["ESP from Eve: x"]);
        assert_eq!(s.show(&Event::GoAway(4)), ["-- Bob left."]);
        // The noid may be someone else next time.
        assert_eq!(
            s.show(&Event::HereIs(vec![4, 1, 0, 0])),
            ["-- Avatar 4 arrived."]
        );
    }
}
