//! Arbitrary frame payloads (separated by 0D in the input) through descape, packet parse
//! and the START..END reassembler: no panic, bounded buffer, and whatever comes out
//! parses as a typed request or is refused.
#![no_main]

use bytes::Bytes;
use espmail::protocol::habitat::{self, Packet, Reassembler, MAX_REASSEMBLED_ARGS};
use espmail::protocol::messages::ClientMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new();
    for escaped in data.split(|&b| b == 0x0d) {
        let raw = habitat::descape(escaped, 0);
        assert!(raw.len() <= escaped.len());
        let Ok(packet) = Packet::parse(Bytes::from(raw)) else {
            continue;
        };
        // Escaping and descaping again gives the same packet.
        assert_eq!(Packet::parse_escaped(&packet.escaped()).as_ref(), Ok(&packet));
        if let Ok(Some(whole)) = r.push(packet) {
            let _ = ClientMsg::parse(&whole);
        }
        assert!(r.buffered() <= MAX_REASSEMBLED_ARGS);
    }
});
