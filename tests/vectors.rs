//! Runs every reference vector of `tests/vectors/habitat.json` that belongs to the codec
//! (the link and preamble sections are `tests/link_vectors.rs`'s). Each section's count is
//! asserted, so a vector silently skipped fails the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

use espmail::protocol::crc::{crc16, decode_nibbles};
use espmail::protocol::frame::{seq, BadFrame, Command, Frame};
use espmail::protocol::habitat::{self, Header, Packet};
use espmail::protocol::messages::ServerMessage;
use espmail::protocol::qlink::QLinkCodec;

#[path = "vectors/server_messages.rs"]
mod server_messages;

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/habitat.json"
    ))
    .expect("read tests/vectors/habitat.json");
    serde_json::from_str(&text).expect("parse habitat.json")
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a hex string: {v}"));
    assert!(s.len() % 2 == 0, "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|_| panic!("bad hex {s}")))
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn u8_of(v: &Value) -> u8 {
    u8::try_from(v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))).unwrap()
}

fn list<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("section {key} missing"))
}

fn name(v: &Value, i: usize) -> String {
    v["name"]
        .as_str()
        .map_or(format!("#{i}"), |n| format!("#{i} {n}"))
}

fn decode_one(wire: &[u8]) -> Result<Frame, BadFrame> {
    let mut codec = QLinkCodec::new();
    let mut buf = BytesMut::from(wire);
    let item = codec.decode(&mut buf).unwrap().expect("one frame");
    assert!(buf.is_empty(), "bytes left after one frame");
    item
}

fn encode_one(frame: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    QLinkCodec::new().encode(frame, &mut buf).unwrap();
    buf.to_vec()
}

fn run_crc16(v: &Value) -> usize {
    let cases = list(v, "crc16");
    for (i, c) in cases.iter().enumerate() {
        let got = crc16(&hex(&c["input_hex"]));
        assert_eq!(u64::from(got), c["crc_u16"].as_u64().unwrap(), "crc16 #{i}");
        assert_eq!(
            format!("{got:04x}"),
            c["crc"].as_str().unwrap(),
            "crc16 #{i}"
        );
    }
    cases.len()
}

fn run_qlink_frames(v: &Value) -> usize {
    let cases = list(v, "qlink_frames");
    for (i, c) in cases.iter().enumerate() {
        let n = name(c, i);
        let frame = Frame {
            send: u8_of(&c["send_seq"]),
            recv: u8_of(&c["recv_seq"]),
            cmd: Command(u8_of(&c["cmd"])),
            payload: Bytes::from(hex(&c["payload_hex"])),
        };
        assert_eq!(
            to_hex(&frame.to_bytes()),
            c["frame_hex"].as_str().unwrap(),
            "qlink_frames {n}: frame"
        );
        let wire = encode_one(&frame);
        assert_eq!(
            to_hex(&wire),
            c["wire_hex"].as_str().unwrap(),
            "qlink_frames {n}"
        );
        let crc = decode_nibbles([wire[1], wire[2], wire[3], wire[4]]);
        assert_eq!(
            format!("{crc:04x}"),
            c["crc"].as_str().unwrap(),
            "qlink_frames {n}: crc"
        );
        assert_eq!(decode_one(&wire), Ok(frame), "qlink_frames {n}: decode");
    }
    cases.len()
}

fn run_qlink_decode(v: &Value) -> usize {
    let cases = list(v, "qlink_decode");
    for (i, c) in cases.iter().enumerate() {
        let n = name(c, i);
        let mut wire = hex(&c["frame_hex"]);
        wire.push(0x0d);
        let got = decode_one(&wire);
        let crc = |k: &str| u16::from_str_radix(c[k].as_str().unwrap(), 16).unwrap();
        match c["error"].as_str() {
            None => {
                let f = got.unwrap_or_else(|e| panic!("qlink_decode {n}: {e}"));
                assert_eq!(f.send, u8_of(&c["send_seq"]), "qlink_decode {n}");
                assert_eq!(f.recv, u8_of(&c["recv_seq"]), "qlink_decode {n}");
                assert_eq!(f.cmd, Command(u8_of(&c["cmd"])), "qlink_decode {n}");
                assert_eq!(
                    to_hex(&f.payload),
                    c["payload_hex"].as_str().unwrap(),
                    "qlink_decode {n}"
                );
            }
            Some("crc") => assert_eq!(
                got,
                Err(BadFrame::Crc {
                    said: crc("reported_crc"),
                    got: crc("calculated_crc"),
                    probe: c["handshake_probe"].as_bool().unwrap(),
                }),
                "qlink_decode {n}"
            ),
            Some(e) if e.contains("too short") => assert_eq!(
                got,
                Err(BadFrame::TooShort {
                    len: wire.len() - 1
                }),
                "qlink_decode {n}"
            ),
            Some(e) if e.contains("bad magic") => assert_eq!(
                got,
                Err(BadFrame::NoSync { first: wire[0] }),
                "qlink_decode {n}"
            ),
            Some(e) => panic!("qlink_decode {n}: unknown error kind {e}"),
        }
    }
    cases.len()
}

fn run_qlink_seq(v: &Value) -> usize {
    let s = &v["qlink_seq"];
    let inc = list(s, "inc");
    for (i, c) in inc.iter().enumerate() {
        assert_eq!(
            seq::inc(u8_of(&c["in"])),
            u8_of(&c["out"]),
            "qlink_seq inc #{i}"
        );
    }
    let fwd = list(s, "forward");
    for (i, c) in fwd.iter().enumerate() {
        assert_eq!(
            seq::forward(u8_of(&c["from"]), u8_of(&c["to"])),
            u8_of(&c["steps"]),
            "qlink_seq forward #{i}"
        );
    }
    let acks = list(s, "ack_covers");
    for (i, c) in acks.iter().enumerate() {
        assert_eq!(
            seq::ack_covers(u8_of(&c["frame_seq"]), u8_of(&c["ack"])),
            c["covered"].as_bool().unwrap(),
            "qlink_seq ack_covers #{i}"
        );
    }
    inc.len() + fwd.len() + acks.len()
}

fn run_habitat_header(v: &Value) -> usize {
    let cases = list(v, "habitat_header");
    for (i, c) in cases.iter().enumerate() {
        let h = Header::new(
            c["start"].as_bool().unwrap(),
            c["end"].as_bool().unwrap(),
            u8_of(&c["seq"]),
            u8_of(&c["noid"]),
            u8_of(&c["reqnum"]),
        );
        assert_eq!(
            to_hex(&h.to_bytes()),
            c["header_hex"].as_str().unwrap(),
            "habitat_header #{i}"
        );
        assert_eq!(
            h.is_start(),
            c["start"].as_bool().unwrap(),
            "habitat_header #{i}"
        );
        assert_eq!(
            h.is_end(),
            c["end"].as_bool().unwrap(),
            "habitat_header #{i}"
        );
    }
    cases.len()
}

fn run_escape(v: &Value) -> usize {
    let cases = list(v, "escape");
    for (i, c) in cases.iter().enumerate() {
        let raw = hex(&c["raw_hex"]);
        let esc = habitat::escape(&raw);
        assert_eq!(
            to_hex(&esc),
            c["escaped_hex"].as_str().unwrap(),
            "escape #{i}"
        );
        assert_eq!(habitat::escaped_len(&raw), esc.len(), "escape #{i}: len");
        assert_eq!(
            to_hex(&habitat::descape(&esc, 0)),
            c["descaped_back_hex"].as_str().unwrap(),
            "escape #{i}: back"
        );
    }
    cases.len()
}

fn run_descape(v: &Value) -> usize {
    let cases = list(v, "descape");
    for (i, c) in cases.iter().enumerate() {
        let skip = usize::try_from(c["skip"].as_u64().unwrap()).unwrap();
        assert_eq!(
            to_hex(&habitat::descape(&hex(&c["escaped_hex"]), skip)),
            c["raw_hex"].as_str().unwrap(),
            "descape #{i}"
        );
    }
    cases.len()
}

/// The messages a vector's packets came from: each complete packet alone, split chunks
/// (START .. END) joined back under the ctrl of an unsplit message (E0 plus their seq).
fn messages(packets: &[Packet]) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut current: Option<(Header, Vec<u8>)> = None;
    for p in packets {
        let (h, mut payload) = match current.take() {
            Some(c) if !p.header.is_start() => c,
            _ => (p.header, Vec::new()),
        };
        payload.extend_from_slice(&p.payload);
        if p.header.is_end() {
            let ctrl = h.ctrl | habitat::START | habitat::MIDDLE | habitat::END;
            out.push(Packet::new(Header { ctrl, ..h }, payload));
        } else {
            current = Some((h, payload));
        }
    }
    assert!(current.is_none(), "vector ends inside a split message");
    out
}

fn run_server_to_client(v: &Value) -> (usize, usize) {
    let cases = list(v, "server_to_client");
    let mut built = 0;
    for (i, c) in cases.iter().enumerate() {
        let n = name(c, i);
        let want: Vec<Packet> = list(c, "packets_hex")
            .iter()
            .map(|p| Packet::parse(Bytes::from(hex(p))).unwrap())
            .collect();
        // Splitting the joined message gives exactly the reference chunks.
        let parts: Vec<Packet> = messages(&want)
            .iter()
            .flat_map(|m| {
                // Contents vectors (DESCRIBE reply, HEREIS) may be split; the rest never.
                if m.header.noid == 0 && [1, 8].contains(&m.header.reqnum) {
                    habitat::split(m)
                } else {
                    habitat::fit(m)
                }
            })
            .collect();
        assert_eq!(parts, want, "server_to_client {n}: split");
        // And building the message from typed values gives the same packets.
        if let Some(msgs) = server_messages::build(c) {
            let packets: Vec<Packet> = msgs.iter().flat_map(ServerMessage::packets).collect();
            let got: Vec<String> = packets.iter().map(|p| to_hex(&p.to_bytes())).collect();
            let exp: Vec<String> = want.iter().map(|p| to_hex(&p.to_bytes())).collect();
            assert_eq!(got, exp, "server_to_client {n}: built from {msgs:?}");
            let escaped: Vec<Bytes> = msgs.iter().flat_map(ServerMessage::encode).collect();
            let esc_want: Vec<Bytes> = want.iter().map(Packet::escaped).collect();
            assert_eq!(escaped, esc_want, "server_to_client {n}: encode");
            built += 1;
        }
        match c["mode"].as_str().unwrap() {
            "qlr" => {
                let prefix = c["prefix"].as_str().unwrap().as_bytes();
                let records = list(c, "wire_records");
                assert_eq!(records.len(), want.len(), "server_to_client {n}");
                for (p, r) in want.iter().zip(records) {
                    let mut rec = prefix.to_vec();
                    rec.extend_from_slice(&p.to_bytes());
                    let mut wire = habitat::escape(&rec);
                    wire.push(0x0d);
                    assert_eq!(to_hex(&wire), r.as_str().unwrap(), "server_to_client {n}");
                    // What the C64 gets back after QLR strips the prefix.
                    let body = &hex(r)[prefix.len()..];
                    let back = Packet::parse_escaped(&body[..body.len() - 1]).unwrap();
                    assert_eq!(&back, p, "server_to_client {n}: descape");
                }
            }
            "qlink" => {
                let frames = list(c, "wire_frames");
                assert_eq!(frames.len(), want.len(), "server_to_client {n}");
                // A fresh session: the first server Action is 0x11, acking 0x10.
                let mut send = seq::FIRST;
                for (p, w) in want.iter().zip(frames) {
                    send = seq::inc(send);
                    let frame = Frame {
                        send,
                        recv: seq::FIRST,
                        cmd: Command::ACTION,
                        payload: p.escaped(),
                    };
                    let wire = encode_one(&frame);
                    assert_eq!(to_hex(&wire), w.as_str().unwrap(), "server_to_client {n}");
                    let back = decode_one(&wire).unwrap();
                    assert_eq!(
                        &Packet::parse_escaped(&back.payload).unwrap(),
                        p,
                        "server_to_client {n}: decode"
                    );
                }
            }
            m => panic!("server_to_client {n}: unknown mode {m}"),
        }
    }
    (cases.len(), built)
}

fn run_client_to_server(v: &Value) -> (usize, usize) {
    let cases = list(v, "client_to_server");
    let mut typed = 0;
    for (i, c) in cases.iter().enumerate() {
        let n = name(c, i);
        let msg = hex(&c["message_hex"]);
        let colon = msg.iter().position(|&b| b == b':').unwrap();
        let frame = Frame::parse(Bytes::from(msg[colon + 1..].to_vec()))
            .unwrap_or_else(|e| panic!("client_to_server {n}: {e}"));
        assert_eq!(frame.cmd, Command::ACTION, "client_to_server {n}");
        let packet = Packet::parse_escaped(&frame.payload).unwrap();
        assert_eq!(
            to_hex(&packet.to_bytes()),
            c["habitat_packet_hex"].as_str().unwrap(),
            "client_to_server {n}"
        );
        // bridge_v2 descapes from len(prefix) + 8 of the whole message: same bytes.
        assert_eq!(
            habitat::descape(&msg, colon + 1 + 8),
            packet.to_bytes().to_vec(),
            "client_to_server {n}: descape(skip)"
        );
        let p = &c["parsed"];
        let h = packet.header;
        assert_eq!(h.noid, u8_of(&p["noid"]), "client_to_server {n}");
        assert_eq!(h.reqnum, u8_of(&p["reqnum"]), "client_to_server {n}");
        assert_eq!(h.client_seq(), u8_of(&p["seq"]), "client_to_server {n}");
        assert_eq!(
            h.is_start(),
            p["start"].as_bool().unwrap(),
            "client_to_server {n}"
        );
        assert_eq!(
            h.is_end(),
            p["end"].as_bool().unwrap(),
            "client_to_server {n}"
        );
        assert_eq!(
            to_hex(&packet.payload),
            p["args_hex"].as_str().unwrap(),
            "client_to_server {n}"
        );
        // A single packet passes the reassembler unchanged.
        let mut r = habitat::Reassembler::new();
        assert_eq!(
            r.push(packet.clone()),
            Ok(Some(packet.clone())),
            "client_to_server {n}"
        );
        if server_messages::check_client(c, &packet) {
            typed += 1;
        }
    }
    (cases.len(), typed)
}

fn run_qlr_framed_inbound(v: &Value) -> usize {
    let cases = list(v, "qlr_framed_inbound");
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(c["error"].as_str(), Some(""), "qlr_framed_inbound #{i}");
        let wire = hex(&c["wire_hex"]);
        let (msg, used) = habitat::qlr_deframe(&wire)
            .unwrap_or_else(|e| panic!("qlr_framed_inbound #{i}: {e}"))
            .unwrap_or_else(|| panic!("qlr_framed_inbound #{i}: incomplete"));
        assert_eq!(to_hex(&msg), c["message_hex"].as_str().unwrap(), "qlr #{i}");
        assert_eq!(used, wire.len(), "qlr_framed_inbound #{i}: consumed");
    }
    cases.len()
}

#[test]
fn every_codec_vector_passes() {
    let v = vectors();
    let (s2c, s2c_built) = run_server_to_client(&v);
    let (c2s, c2s_typed) = run_client_to_server(&v);
    let counts = [
        ("crc16", run_crc16(&v), 16),
        ("qlink_frames", run_qlink_frames(&v), 13),
        ("qlink_decode", run_qlink_decode(&v), 5),
        ("qlink_seq", run_qlink_seq(&v), 17),
        ("habitat_header", run_habitat_header(&v), 7),
        ("escape", run_escape(&v), 12),
        ("descape", run_descape(&v), 5),
        ("server_to_client", s2c, 35),
        (
            "server_to_client (built from typed messages)",
            s2c_built,
            35,
        ),
        ("client_to_server", c2s, 11),
        ("client_to_server (parsed to typed requests)", c2s_typed, 11),
        ("qlr_framed_inbound", run_qlr_framed_inbound(&v), 3),
    ];
    let mut total = 0;
    for (section, ran, expected) in counts {
        println!("{section}: {ran} vectors");
        assert_eq!(ran, expected, "{section}: ran {ran}, expected {expected}");
        if !section.contains('(') {
            total += ran;
        }
    }
    println!("total: {total} vectors");
    assert_eq!(total, 124);
}
