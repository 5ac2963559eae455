//! The reference vectors for the Q-Link session and the login preamble, run through
//! `protocol::link::Link` and `protocol::preamble::Preamble`: `qlink_session_flow` (bridge_v2's
//! answers, byte for byte), `c64_recorded` (the real C64 client) and `habilink_preamble`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use espmail::protocol::frame::{seq, Command, Frame};
use espmail::protocol::link::{IdRange, Link, OutFrameId, Output};
use espmail::protocol::preamble::{Preamble, Step};
use serde_json::Value;

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/habitat.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A frame as it goes on the wire, terminator included.
fn wire(frame: &Frame) -> String {
    let mut buf = BytesMut::new();
    frame.write_to(&mut buf);
    buf.extend_from_slice(&[0x0d]);
    to_hex(&buf)
}

fn wires(out: &Output) -> Vec<String> {
    out.send.iter().map(wire).collect()
}

/// Cuts one wire frame (ending in `0D`) and hands the parse result to the link.
fn feed(link: &mut Link, wire_hex: &str, now: Instant) -> Output {
    let bytes = hex(wire_hex);
    assert_eq!(bytes.last(), Some(&0x0d), "{wire_hex} lacks its terminator");
    let body = Bytes::copy_from_slice(&bytes[..bytes.len() - 1]);
    link.receive(Frame::parse(body), now)
}

/// The payload of a (valid) server frame in the vectors, for `send_action`.
fn payload_of(wire_hex: &str) -> Bytes {
    let bytes = hex(wire_hex);
    let frame = Frame::parse(Bytes::copy_from_slice(&bytes[..bytes.len() - 1])).unwrap();
    assert_eq!(frame.cmd, Command::ACTION);
    frame.payload
}

fn packet(out: &Output) -> Option<Vec<u8>> {
    out.packet.as_ref().map(|p| p.expose().to_vec())
}

fn range(first: u64, last: u64) -> Option<IdRange> {
    Some(IdRange {
        first: OutFrameId(first),
        last: OutFrameId(last),
    })
}

#[test]
fn qlink_session_flow_matches_bridge_v2_byte_for_byte() {
    let v = vectors();
    let flow = v["qlink_session_flow"].as_array().unwrap();
    let mut link = Link::new();
    let mut now = Instant::now();
    let mut acked = Vec::new();
    let mut ran = 0;
    for (i, step) in flow.iter().enumerate() {
        let note = step["note"].as_str().unwrap();
        let expected: Vec<String> = step["server_frames_hex"]
            .as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        match step["dir"].as_str().unwrap() {
            "c2s" => {
                // The C64 heartbeats about every 9 s; the vectors give no times. Our
                // duplicate-ack resend waits until the frame has been out 3 s (link.rs).
                now += Duration::from_secs(9);
                let client = step["client_frame_hex"].as_str().unwrap();
                let out = feed(&mut link, client, now);
                // The link's own frames (NAK, ResetAck, resends, the SS reply) come first;
                // any further frame is the session's Habitat answer to the packet just
                // handed up, which the test "session" sends through `send_action`.
                let got = wires(&out);
                assert!(got.len() <= expected.len(), "step {i}: {note}: {got:?}");
                assert_eq!(got, expected[..got.len()], "step {i}: {note}");
                for frame_hex in &expected[got.len()..] {
                    assert!(out.packet.is_some(), "step {i}: reply without a request");
                    let payload = payload_of(frame_hex);
                    assert_eq!(payload.first(), Some(&0x55), "step {i}: {note}");
                    let sent = link.send_action(payload, now).unwrap();
                    assert_eq!(&wire(&sent.frame), frame_hex, "step {i}: {note}");
                }
                // A client Habitat Action is handed up whole, still escaped.
                let body = hex(client);
                let is_habitat = body[7] == 0x20 && body.get(8) == Some(&0x55);
                let want = is_habitat.then(|| body[8..body.len() - 1].to_vec());
                assert_eq!(packet(&out), want, "step {i}: {note}");
                if let Some(r) = out.acked {
                    acked.push((i, r));
                }
                assert_eq!(out.dropped, None);
            }
            "s2c" => {
                // The session sends each Habitat payload the bridge sent.
                for frame_hex in &expected {
                    let sent = link.send_action(payload_of(frame_hex), now).unwrap();
                    assert_eq!(&wire(&sent.frame), frame_hex, "step {i}: {note}");
                    assert!(!link.is_acked(sent.id));
                }
            }
            other => panic!("direction {other}"),
        }
        let state = &step["state_after"];
        assert_eq!(
            (
                u64::from(link.in_seq()),
                u64::from(link.out_seq()),
                link.window_len() as u64
            ),
            (
                state["qlinkInSeq"].as_u64().unwrap(),
                state["qlinkOutSeq"].as_u64().unwrap(),
                state["window"].as_u64().unwrap()
            ),
            "step {i}: {note}"
        );
        ran += 1;
    }
    assert_eq!(ran, 12);
    // Outbound ids 0 (IM_ALIVE reply), 1 (contents), 2-3 (speech, reply); 4 (SS) is
    // outstanding after the last step.
    assert_eq!(
        acked,
        vec![
            (3, range(0, 0).unwrap()),
            (6, range(1, 1).unwrap()),
            (9, range(2, 3).unwrap())
        ]
    );
    assert!((0..4).all(|id| link.is_acked(OutFrameId(id))));
    assert!(!link.is_acked(OutFrameId(4)));
    assert_eq!(link.stats().resends, 2);
}

/// Hands out the recorded C64 session's entries in order and counts them.
struct Recording<'a> {
    entries: &'a [Value],
    next: usize,
}

impl<'a> Recording<'a> {
    fn take(&mut self, from: &str, name_starts: &str) -> &'a str {
        let entry = &self.entries[self.next];
        self.next += 1;
        assert_eq!(entry["from"], from, "entry {}", self.next - 1);
        let name = entry["name"].as_str().unwrap();
        assert!(name.starts_with(name_starts), "{name} vs {name_starts}");
        entry["wire_hex"].as_str().unwrap()
    }
}

/// A server Habitat packet the recording implies but did not keep: `55 fa 00 0f 00`
/// (OBJECT_TALKS, speaker 0) and a short text.
fn unrecorded_server_packet(n: u8) -> Bytes {
    Bytes::from(vec![0x55, 0xfa, 0x00, 0x0f, 0x00, b'o', b'k', b'0' + n])
}

#[test]
fn c64_recorded_session_is_answered() {
    let v = vectors();
    let entries = v["c64_recorded"].as_array().unwrap();
    let mut rec = Recording { entries, next: 0 };
    let t0 = Instant::now();

    // Run 1: the first connection.
    let login = rec.take("client", "login line");
    let mut pre = Preamble::new(t0);
    // `... }` CR CR: the name is known, but the parser waits for the next byte in case it
    // pairs with the last CR.
    assert_eq!(pre.feed(&hex(login), t0), Ok(Step::NeedMore));
    assert_eq!(pre.login().unwrap().name, "randy");
    assert!(pre.login().unwrap().password.is_none());
    let probe = rec.take("client", "handshake probe");
    let Ok(Step::Done { login, leftover }) = pre.feed(&hex(probe), t0) else {
        panic!("preamble not done by the probe");
    };
    assert_eq!(login.name, "randy");
    assert!(login.op_login);
    assert_eq!(
        to_hex(&leftover),
        probe,
        "the probe is the first Q-Link frame"
    );

    let mut link = Link::new();
    let out = feed(&mut link, probe, t0);
    let nak = rec.take("server", "NAK sent in reply");
    assert_eq!(wires(&out), [nak]);
    // A second bad frame before any valid one is not NAKed again.
    assert!(feed(&mut link, probe, t0).send.is_empty());

    let sg = rec.take("client", "Action SG");
    let out = feed(&mut link, sg, t0);
    assert!(out.send.is_empty() && out.packet.is_none());
    assert_eq!(link.in_seq(), 0x11, "SG accepted as Action 11");

    // Its NAK (SEND 12: a number used up, never sent) finds nothing of ours to resend:
    // the ResetAck acks its Action 11.
    let t = t0 + Duration::from_millis(80);
    let out = feed(&mut link, rec.take("client", "NAK with SEND 12"), t);
    assert_eq!(
        wires(&out),
        [wire(&Frame::bare(Command::RESET_ACK, 0x10, 0x11))]
    );
    assert_eq!(link.in_seq(), 0x11, "an unnumbered SEND is not an Action");

    let t = t0 + Duration::from_secs(9);
    let out = feed(&mut link, rec.take("client", "heartbeat with SEND 12"), t);
    assert_eq!(
        wires(&out),
        [wire(&Frame::bare(Command::RESET_ACK, 0x10, 0x11))]
    );

    // The IM_ALIVE reply went out as Action 11 (its bytes were not kept for this run).
    let reply = link.send_action(unrecorded_server_packet(0), t).unwrap();
    assert_eq!((reply.frame.send, reply.frame.recv), (0x11, 0x11));
    let t = t0 + Duration::from_secs(18);
    let out = feed(
        &mut link,
        rec.take("client", "heartbeat acking server Action 11"),
        t,
    );
    assert_eq!(
        wires(&out),
        [wire(&Frame::bare(Command::RESET_ACK, 0x11, 0x11))]
    );
    assert_eq!(out.acked, range(0, 0));
    assert!(link.is_acked(reply.id));
    assert_eq!(link.window_len(), 0);

    // Run 2, a second connection into the region. It began as run 1 did (probe, NAK, SG
    // 11); the recording keeps it from Action 13 on.
    let mut link = Link::new();
    let mut t = t0;
    assert_eq!(wires(&feed(&mut link, probe, t)), [nak]);
    assert!(feed(&mut link, sg, t).send.is_empty());

    let client = |link: &mut Link, t: &mut Instant, name: &str, rec: &mut Recording| {
        *t += Duration::from_secs(1);
        let wire_hex = rec.take("client", name);
        let out = feed(link, wire_hex, *t);
        let body = hex(wire_hex);
        (out, body[8..body.len() - 1].to_vec())
    };
    let server = |link: &mut Link, t: Instant, name: &str, rec: &mut Recording| {
        let wire_hex = rec.take("server", name);
        let sent = link.send_action(payload_of(wire_hex), t).unwrap();
        assert_eq!(wire(&sent.frame), wire_hex, "{name}");
        sent.id
    };

    let (out, payload) = client(&mut link, &mut t, "Action 13 IM_ALIVE", &mut rec);
    assert_eq!(packet(&out), Some(payload), "forward gap 11 -> 13 accepted");
    assert_eq!(link.stats().gaps, 1);
    assert_eq!(link.in_seq(), 0x13);
    let im_alive = server(&mut link, t, "IM_ALIVE reply as Action 11", &mut rec);

    let (out, payload) = client(&mut link, &mut t, "Action 14 DESCRIBE", &mut rec);
    assert_eq!(packet(&out), Some(payload));
    assert_eq!(out.acked, range(im_alive.0, im_alive.0));
    assert!(out.send.is_empty());
    let describe = server(&mut link, t, "DESCRIBE reply", &mut rec);

    let (out, _) = client(&mut link, &mut t, "Action 15 SG again", &mut rec);
    assert!(out.packet.is_none() && out.send.is_empty());
    assert_eq!(out.acked, range(describe.0, describe.0));
    let (out, payload) = client(&mut link, &mut t, "Action 16 HERE_I_AM", &mut rec);
    assert_eq!(packet(&out), Some(payload));
    assert_eq!(
        out.acked, None,
        "RECV 12 again, but frame 12 is already acked"
    );
    let appear = server(&mut link, t, "APPEAR own noid", &mut rec);

    // Three more server Actions (14-16) went out before the Ping; the recording did not
    // keep them.
    for n in 1..=3 {
        link.send_action(unrecorded_server_packet(n), t).unwrap();
    }
    let ping = link.ping(t);
    assert_eq!(wire(&ping), rec.take("server", "server Ping"));
    t += Duration::from_millis(100);
    let out = feed(&mut link, rec.take("client", "ACK answering the Ping"), t);
    assert!(out.send.is_empty());
    assert_eq!(out.acked, range(appear.0, appear.0 + 3));
    assert_eq!(link.window_len(), 0);
    assert!((0..=appear.0 + 3).all(|id| link.is_acked(OutFrameId(id))));

    let (out, payload) = client(&mut link, &mut t, "Action 17 PROMPT_REPLY", &mut rec);
    assert_eq!(packet(&out), Some(payload));
    let prompt = link.send_action(unrecorded_server_packet(4), t).unwrap();
    let (out, payload) = client(&mut link, &mut t, "Action 18 SPEAK", &mut rec);
    assert_eq!(packet(&out), Some(payload));
    assert_eq!(out.acked, range(prompt.id.0, prompt.id.0));
    let a = link.send_action(unrecorded_server_packet(5), t).unwrap();
    let b = link.send_action(unrecorded_server_packet(6), t).unwrap();
    assert_eq!(b.frame.send, 0x19);
    let (out, payload) = client(&mut link, &mut t, "Action 19 ESP", &mut rec);
    assert_eq!(packet(&out), Some(payload));
    assert_eq!(out.acked, range(a.id.0, b.id.0));
    assert!(out.send.is_empty());
    assert_eq!(
        (link.in_seq(), link.out_seq(), link.window_len()),
        (0x19, 0x19, 0)
    );
    assert_eq!(link.stats().duplicates, 0);

    assert_eq!(rec.next, 19, "every recorded entry used");
    assert_eq!(entries.len(), 19);
    assert!(seq::is_valid(link.in_seq()));
}

#[test]
fn habilink_preamble_vectors() {
    let v = vectors();
    let cases = v["habilink_preamble"].as_array().unwrap();
    for (i, case) in cases.iter().enumerate() {
        let input = hex(case["input_hex"].as_str().unwrap());
        let remaining = case["remaining_hex"].as_str().unwrap();
        let name = case["username"].as_str().unwrap();
        assert_eq!(case["error"], "", "case {i}");
        let now = Instant::now();

        let Ok(Step::Done { login, leftover }) = Preamble::new(now).feed(&input, now) else {
            panic!("case {i}: not done");
        };
        assert_eq!(login.name, name, "case {i}");
        assert_eq!(to_hex(&leftover), remaining, "case {i}");
        // Our `op_login` is about the login line; the vectors' flag is about the first
        // line. In these four they agree (case 3's name line is not its first line, and
        // neither says LOGIN).
        assert_eq!(
            login.op_login,
            case["is_login_preamble"] == true,
            "case {i}"
        );

        // Fed one byte at a time: the same result, the rest handed back as leftover.
        let mut p = Preamble::new(now);
        let mut got = None;
        for (at, b) in input.iter().enumerate() {
            if let Step::Done { login, leftover } = p.feed(&[*b], now).unwrap() {
                got = Some((login.name, [&leftover[..], &input[at + 1..]].concat()));
                break;
            }
        }
        assert_eq!(got, Some((name.to_owned(), hex(remaining))), "case {i}");
    }
    assert_eq!(cases.len(), 4);
}

/// Everything the recorded C64 sent, as one byte stream cut into pieces of `chunk` bytes,
/// through the preamble, the codec and one link: what the layers do together.
fn c64_stream_through_the_layers(chunk: usize) -> (Vec<Vec<u8>>, Vec<Frame>) {
    use espmail::protocol::qlink::QLinkCodec;
    use tokio_util::codec::Decoder;

    let v = vectors();
    let stream: Vec<u8> = v["c64_recorded"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["from"] == "client")
        .flat_map(|e| hex(e["wire_hex"].as_str().unwrap()))
        .collect();
    let now = Instant::now();
    let mut preamble = Some(Preamble::new(now));
    let mut codec = QLinkCodec::new();
    let mut buf = BytesMut::new();
    let mut link = Link::new();
    let (mut packets, mut sent) = (Vec::new(), Vec::new());
    for piece in stream.chunks(chunk) {
        match preamble.as_mut() {
            Some(p) => match p.feed(piece, now).unwrap() {
                Step::NeedMore => continue,
                Step::Done { login, leftover } => {
                    assert_eq!(login.name, "randy");
                    buf.extend_from_slice(&leftover);
                    preamble = None;
                }
            },
            None => buf.extend_from_slice(piece),
        }
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            let out = link.receive(item, now);
            packets.extend(out.packet.map(|p| p.expose().to_vec()));
            sent.extend(out.send);
        }
    }
    assert!(buf.is_empty());
    (packets, sent)
}

#[test]
fn c64_byte_stream_through_preamble_codec_and_link() {
    let (packets, sent) = c64_stream_through_the_layers(usize::MAX);
    // One link sees both runs back to back: SG 11, then 13 (gap), 14, SG 15, 16 .. 19.
    let first_bytes: Vec<[u8; 4]> = packets.iter().map(|p| [p[0], p[1], p[2], p[3]]).collect();
    assert_eq!(
        first_bytes,
        [
            [0x55, 0xe0, 0x00, 0x03], // IM_ALIVE
            [0x55, 0xe1, 0x00, 0x01], // DESCRIBE
            [0x55, 0xe2, 0x00, 0x06], // HERE_I_AM
            [0x55, 0xe3, 0x00, 0x07], // PROMPT_REPLY
            [0x55, 0xe4, 0x02, 0x07], // SPEAK
            [0x55, 0xe5, 0x02, 0x0b], // ESP
        ]
    );
    // NAK for the probe; ResetAck for the NAK with nothing to resend and for each heartbeat.
    let cmds: Vec<Command> = sent.iter().map(|f| f.cmd).collect();
    assert_eq!(
        cmds,
        [
            Command::NAK,
            Command::RESET_ACK,
            Command::RESET_ACK,
            Command::RESET_ACK
        ]
    );
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(
            c64_stream_through_the_layers(chunk),
            (packets.clone(), sent.clone()),
            "chunk {chunk}"
        );
    }
}
