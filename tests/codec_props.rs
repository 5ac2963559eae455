//! Property tests of the codec: round trips (escaping, frames, splitting, requests) and
//! the promises on hostile input (no panic, bounded memory).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use espmail::log_redact::Sensitive;
use espmail::protocol::frame::{
    BadFrame, Command, Frame, FRAME_END, MAX_ESCAPED_PACKET, MAX_FRAME_LEN,
};
use espmail::protocol::habitat::{
    self, descape, escape, escaped_len, Header, Packet, Reassembler, MAX_REASSEMBLED_ARGS,
};
use espmail::protocol::messages::{ClientMsg, ClientRequest, ServerMessage, SPEECH_CAP};
use espmail::protocol::qlink::QLinkCodec;

/// Feeds `stream` to a fresh decoder in pieces of the given sizes (cycled), then EOF.
/// Checks the buffer bound after every call and returns every item.
fn decode_in_pieces(stream: &[u8], pieces: &[usize]) -> Vec<Result<Frame, BadFrame>> {
    let mut codec = QLinkCodec::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = pieces.iter().cycle();
    while at < stream.len() {
        let n = (*sizes.next().unwrap()).clamp(1, stream.len() - at);
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        assert!(
            buf.len() <= MAX_FRAME_LEN + n,
            "decoder holds {} bytes after a {n}-byte read",
            buf.len()
        );
    }
    while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
        out.push(item);
    }
    assert!(buf.is_empty());
    out
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    (
        0x10u8..=0x7f,
        0x10u8..=0x7f,
        0x20u8..=0x3f,
        proptest::collection::vec(any::<u8>(), 0..=70),
    )
        .prop_map(|(send, recv, cmd, raw)| Frame {
            send,
            recv,
            cmd: Command(cmd),
            // Escaped, as a Habitat payload is, and within the C64 limit.
            payload: Bytes::from(escape(&raw)),
        })
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=200)
}

fn client_request() -> impl Strategy<Value = (u8, ClientRequest)> {
    let s = |t: Vec<u8>| Sensitive::new(t);
    prop_oneof![
        Just((0, ClientRequest::ImAlive)),
        Just((0, ClientRequest::Describe)),
        Just((0, ClientRequest::FingerInQue)),
        Just((0, ClientRequest::HereIAm)),
        (any::<u8>(), 1usize..20).prop_map(|(code, len)| (
            0,
            ClientRequest::IQuit {
                code: Some(code),
                len
            }
        )),
        text().prop_map(move |t| (0, ClientRequest::PromptReply { text: s(t) })),
        (1u8.., any::<u8>(), text()).prop_map(move |(noid, audience, t)| (
            noid,
            ClientRequest::Speak {
                audience,
                text: s(t)
            }
        )),
        (1u8.., any::<u8>(), text()).prop_map(move |(noid, audience, t)| (
            noid,
            ClientRequest::Esp {
                audience,
                text: s(t)
            }
        )),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    let s = |t: Vec<u8>| Sensitive::new(t);
    prop_oneof![
        (any::<u8>(), text()).prop_map(move |(speaker, t)| ServerMessage::ObjectTalks {
            speaker,
            text: s(t)
        }),
        (any::<u8>(), text()).prop_map(move |(noid, t)| ServerMessage::Speak { noid, text: s(t) }),
        text().prop_map(|t| ServerMessage::PromptUser(Bytes::from(t))),
        (any::<u8>(), any::<u8>(), any::<u8>(), text()).prop_map(|(seq, noid, reqnum, a)| {
            ServerMessage::Reply {
                seq,
                noid,
                reqnum,
                args: Bytes::from(a),
            }
        }),
        (
            any::<u8>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..400)
        )
            .prop_map(|(noid, reqnum, a)| ServerMessage::Async {
                noid,
                reqnum,
                args: Bytes::from(a),
            }),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..400))
            .prop_map(|(noid, st)| { ServerMessage::HereIs(habitat_free_vector(noid, &st)) }),
    ]
}

fn habitat_free_vector(noid: u8, state: &[u8]) -> espmail::protocol::messages::ContentsVector {
    espmail::protocol::messages::ContentsVector::hereis().object(noid, 61, state)
}

proptest! {
    /// The header a frame is logged by is the header its packet is parsed with: any
    /// bytes, and any packet escaped as the C64 escapes it (5D on header bytes too).
    #[test]
    fn peek_header_agrees_with_parsing(
        bytes in proptest::collection::vec(any::<u8>(), 0..12),
        ctrl in any::<u8>(),
        noid in any::<u8>(),
        reqnum in any::<u8>(),
    ) {
        let parsed = |b: &[u8]| Packet::parse_escaped(b).ok().map(|p| p.header);
        prop_assert_eq!(habitat::peek_header(&bytes), parsed(&bytes));
        let packet = Packet::new(Header { ctrl, noid, reqnum }, bytes.clone());
        let escaped = packet.escaped();
        prop_assert_eq!(habitat::peek_header(&escaped), Some(packet.header));
    }
}

proptest! {
    #[test]
    fn escape_round_trips_and_hides_every_0d(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let esc = escape(&raw);
        prop_assert_eq!(esc.len(), escaped_len(&raw));
        prop_assert!(!esc.contains(&FRAME_END));
        prop_assert_eq!(descape(&esc, 0), raw);
    }

    #[test]
    fn descape_of_anything_is_no_longer(raw in proptest::collection::vec(any::<u8>(), 0..300), skip in 0usize..10) {
        prop_assert!(descape(&raw, skip).len() <= raw.len().saturating_sub(skip));
    }

    #[test]
    fn frames_round_trip_through_the_codec(
        frames in proptest::collection::vec(frame_strategy(), 1..8),
        pieces in proptest::collection::vec(1usize..40, 1..6),
    ) {
        let mut stream = BytesMut::new();
        let mut codec = QLinkCodec::new();
        for f in &frames {
            codec.encode(f, &mut stream).unwrap();
        }
        let got = decode_in_pieces(&stream, &pieces);
        let want: Vec<Result<Frame, BadFrame>> = frames.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn decoder_survives_any_stream_with_bounded_memory(
        stream in proptest::collection::vec(
            prop_oneof![3 => any::<u8>(), 1 => Just(FRAME_END), 1 => Just(0x5a)], 0..2000),
        pieces in proptest::collection::vec(1usize..300, 1..6),
    ) {
        let items = decode_in_pieces(&stream, &pieces);
        // Every item came from a 0D-terminated line (empty lines are skipped).
        prop_assert!(items.len() <= stream.iter().filter(|&&b| b == FRAME_END).count());
        for f in items.iter().flatten() {
            prop_assert!(f.wire_len() <= MAX_FRAME_LEN);
        }
    }

    #[test]
    fn split_and_reassemble_round_trip(
        seq in 0u8..16, noid in any::<u8>(), reqnum in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let msg = Packet::new(Header::reply(seq, noid, reqnum), payload.clone());
        for parts in [habitat::split(&msg), habitat::fit(&msg)] {
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.payload.to_vec()).collect();
            prop_assert_eq!(&joined, &payload);
            prop_assert!(parts[0].header.is_start());
            prop_assert!(parts[parts.len() - 1].header.is_end());
            for (i, p) in parts.iter().enumerate() {
                prop_assert!(p.escaped_len() <= MAX_ESCAPED_PACKET);
                prop_assert_eq!((p.header.noid, p.header.reqnum, p.header.client_seq()), (noid, reqnum, seq));
                prop_assert_eq!(p.header.is_start(), i == 0);
                prop_assert_eq!(p.header.is_end(), i == parts.len() - 1);
                // What the C64 receives descapes to the same packet.
                prop_assert_eq!(&Packet::parse_escaped(&p.escaped()).unwrap(), p);
            }
            // The same chunks sent by a client are put back together (when reassembled
            // at all: SPEAK/PROMPT_REPLY req 7, within the size bound).
            if reqnum == 7 && payload.len() <= MAX_REASSEMBLED_ARGS {
                let mut r = Reassembler::new();
                let mut done = None;
                for p in parts {
                    if let Some(whole) = r.push(p).unwrap() {
                        done = Some(whole);
                    }
                }
                prop_assert_eq!(done, Some(msg.clone()));
            }
        }
    }

    #[test]
    fn reassembler_survives_any_packets_with_bounded_memory(
        packets in proptest::collection::vec(
            (prop_oneof![Just(0x60u8), Just(0x40), Just(0xc0), Just(0xe0), any::<u8>()],
             prop_oneof![Just(0u8), Just(2), any::<u8>()],
             prop_oneof![Just(7u8), Just(11), any::<u8>()],
             proptest::collection::vec(any::<u8>(), 0..130)), 0..40),
    ) {
        let mut r = Reassembler::new();
        for (ctrl, noid, reqnum, payload) in packets {
            let p = Packet::new(Header { ctrl, noid, reqnum }, payload);
            if let Ok(Some(whole)) = r.push(p) {
                prop_assert!(whole.payload.len() <= MAX_REASSEMBLED_ARGS.max(130));
                let _ = ClientMsg::parse(&whole);
            }
            prop_assert!(r.buffered() <= MAX_REASSEMBLED_ARGS);
        }
    }

    #[test]
    fn client_requests_round_trip((noid, request) in client_request(), seq in 0u8..16) {
        let msg = ClientMsg { seq, noid, request };
        let packet = msg.to_packet();
        // Over the wire: escape, descape, parse.
        let back = Packet::parse_escaped(&packet.escaped()).unwrap();
        prop_assert_eq!(ClientMsg::parse(&back), Ok(msg));
    }

    #[test]
    fn any_client_packet_parses_or_is_refused(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(p) = Packet::parse_escaped(&raw) {
            let _ = ClientMsg::parse(&p);
        }
    }

    #[test]
    fn every_server_message_fits_the_c64(msg in server_message()) {
        let packets = msg.packets();
        let escaped = msg.encode();
        prop_assert_eq!(packets.len(), escaped.len());
        let logical = msg.to_packet();
        for (p, e) in packets.iter().zip(&escaped) {
            prop_assert!(e.len() <= MAX_ESCAPED_PACKET);
            prop_assert!(!e.contains(&FRAME_END));
            prop_assert_eq!(&Packet::parse_escaped(e).unwrap(), p);
            let frame = Frame { send: 0x11, recv: 0x10, cmd: Command::ACTION, payload: e.clone() };
            prop_assert!(QLinkCodec::new().encode(frame, &mut BytesMut::new()).is_ok());
        }
        let joined: Vec<u8> = packets.iter().flat_map(|p| p.payload.to_vec()).collect();
        prop_assert_eq!(&joined[..], &logical.payload[..]);
        // Text lines: one packet, legal bytes only, within the speech cap.
        let text = match &msg {
            ServerMessage::ObjectTalks { .. } => Some(&logical.payload[1..]),
            ServerMessage::Speak { .. } | ServerMessage::PromptUser(_) => Some(&logical.payload[..]),
            _ => None,
        };
        if let Some(t) = text {
            prop_assert_eq!(packets.len(), 1);
            prop_assert!(t.len() <= SPEECH_CAP);
            prop_assert!(t.iter().all(|b| (0x01..=0x7f).contains(b)));
        }
    }
}
