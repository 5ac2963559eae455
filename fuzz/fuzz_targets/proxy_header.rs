//! Feeds arbitrary bytes to `protocol::proxy::parse` as a front end's connection would
//! deliver them, one growing prefix at a time: it must never panic, never claim more
//! bytes than it was given, and the answer must not depend on how the bytes arrived
//! (once a prefix is a complete header or an error, every longer input says the same).
#![no_main]

use espmail::protocol::proxy::{parse, V2_MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let whole = parse(input);
    if let Ok(Some((_, used))) = &whole {
        assert!(*used <= input.len() && *used <= V2_MAX_LEN);
    }
    for cut in 0..input.len() {
        match parse(&input[..cut]) {
            Ok(None) => {}
            settled => {
                assert_eq!(settled, whole, "prefix of {cut} bytes settled differently");
                break;
            }
        }
    }
});
