//! Feeds arbitrary bytes to `protocol::preamble::Preamble`, whole and in chunks (the first
//! input byte picks the chunk size), with time passing and the CONNECT timer polled:
//! it must never panic, chunking must not change the outcome, and the leftover handed
//! to the Q-Link codec must be the input's own tail.
#![no_main]

use std::time::{Duration, Instant};

use espmail::protocol::preamble::{Preamble, PreambleError, Step, CONNECT};
use libfuzzer_sys::fuzz_target;

/// Outcome with the full leftover (what the parser returned plus the bytes not fed yet).
fn run(input: &[u8], chunk: usize) -> Result<Option<(String, bool, Vec<u8>)>, PreambleError> {
    let t0 = Instant::now();
    let mut p = Preamble::new(t0);
    let mut connects = 0;
    for (i, piece) in input.chunks(chunk.max(1)).enumerate() {
        let now = t0 + Duration::from_millis(700 * i as u64);
        if let Some(bytes) = p.poll(now) {
            assert_eq!(bytes, CONNECT);
            connects += 1;
        }
        match p.feed(piece, now)? {
            Step::NeedMore => {}
            Step::Done { login, leftover } => {
                let fed = (i + 1) * chunk.max(1);
                let rest = [&leftover[..], input.get(fed..).unwrap_or(&[])].concat();
                assert!(input.ends_with(&rest));
                assert!(p.feed(b"x", now).is_err());
                return Ok(Some((login.name, login.op_login, rest)));
            }
        }
    }
    assert!(connects <= 1);
    Ok(None)
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, input)) = input.split_first() else {
        return;
    };
    let whole = run(input, input.len());
    let chunked = run(input, usize::from(first % 16) + 1);
    assert_eq!(whole, chunked);
});
