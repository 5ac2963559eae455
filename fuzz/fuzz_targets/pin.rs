//! Feeds arbitrary text to the two parsers of what a player types for `espmail tunnel`:
//! the `--pin sha256:HEX` fingerprint and the `SERVER:PORT` address. Neither may panic;
//! a pin that parses must show and parse back to itself, in both of its accepted forms,
//! and an address that splits must give a non-empty host and a port from 1 to 65535.
#![no_main]

use espmail::tls::client::split_server;
use espmail::tls::Fingerprint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(fp) = Fingerprint::parse_pin(text) {
        assert_eq!(Fingerprint::parse_pin(&fp.to_pin()), Ok(fp));
        let bare = format!("sha256:{}", fp.to_string().replace(':', "").to_lowercase());
        assert_eq!(Fingerprint::parse_pin(&bare), Ok(fp));
        // Only hex digits and colons survive the parse: the input, trimmed and without
        // its prefix, is one of the two forms, in some case.
        let hex = &text.trim()[7..];
        assert!(hex.eq_ignore_ascii_case(&fp.to_string()) || hex.eq_ignore_ascii_case(&bare[7..]));
    }
    if let Ok((host, port)) = split_server(text) {
        assert!(!host.is_empty() && port >= 1);
        assert!(text.contains(host));
    }
});
