//! Arbitrary packets as typed client requests: parse never panics, and what parses
//! rebuilds to a packet that parses to the same request. Also builds server messages
//! from the same bytes and checks they always fit the C64's frame.
#![no_main]

use bytes::Bytes;
use espmail::log_redact::Sensitive;
use espmail::protocol::frame::MAX_ESCAPED_PACKET;
use espmail::protocol::habitat::Packet;
use espmail::protocol::messages::{ClientMsg, ServerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::parse(Bytes::copy_from_slice(data)) {
        if let Ok(msg) = ClientMsg::parse(&packet) {
            assert_eq!(ClientMsg::parse(&msg.to_packet()).as_ref(), Ok(&msg));
        }
    }
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (noid, text) = rest.split_first().map_or((0, &[][..]), |(n, t)| (*n, t));
    let msg = match pick % 4 {
        0 => ServerMessage::ObjectTalks {
            speaker: noid,
            text: Sensitive::new(text.to_vec()),
        },
        1 => ServerMessage::Speak {
            noid,
            text: Sensitive::new(text.to_vec()),
        },
        2 => ServerMessage::PromptUser(Bytes::copy_from_slice(text)),
        _ => ServerMessage::Async {
            noid,
            reqnum: pick,
            args: Bytes::copy_from_slice(text),
        },
    };
    for escaped in msg.encode() {
        assert!(escaped.len() <= MAX_ESCAPED_PACKET);
        assert!(!escaped.contains(&0x0d));
    }
});
