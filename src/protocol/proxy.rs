//! The PROXY protocol header (HAProxy's format, versions 1 and 2): the few bytes a front end
//! (a relay, a load balancer, a TLS terminator) writes before a client's own bytes to say
//! which address the client really connected from.
//!
//! Behind a front end every player seems to come from the front end's address, so the
//! per-address limits would lump them all together (one player's wrong guesses would lock
//! out everyone behind the same relay). With this header, the server counts and logs the
//! player's own address, but only for connections from front ends the operator listed: a
//! header from anyone else is never believed (the session does not even look for one).
//!
//! A pure incremental parser: [`parse`] takes the bytes received so far and answers
//! "need more", the header and how many bytes it took, or why the bytes are not one. It
//! never reads past the header (what follows is the client's login line), and its memory
//! is bounded: a version 1 line is at most [`V1_MAX_LEN`] bytes and a version 2 header at
//! most [`V2_MAX_LEN`].
//!
//! May touch: nothing (no sockets, no clock).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest version 1 line, `\r\n` included (the format's own limit).
pub const V1_MAX_LEN: usize = 107;
/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Fixed part of a version 2 header: signature, version/command, family, length.
pub const V2_HEADER_LEN: usize = 16;
/// Longest version 2 address block (addresses and TLVs) accepted. A Unix socket address
/// pair takes 216 bytes and front ends add a few TLVs (TLS details, connection ids); a
/// longer block is refused rather than buffered.
pub const V2_MAX_BODY: usize = 1024;
/// Longest version 2 header accepted.
pub const V2_MAX_LEN: usize = V2_HEADER_LEN + V2_MAX_BODY;

const V1_PREFIX: &[u8] = b"PROXY ";

/// Why the bytes from a front end are not a PROXY header. Nothing the peer sent is
/// echoed, only what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The connection does not start with a PROXY header at all.
    #[error("no PROXY header (the front end must send one first: PROXY protocol v1 or v2)")]
    Missing,
    /// A version 1 line ran past its limit without ending.
    #[error("PROXY v1 line longer than {max} bytes")]
    V1TooLong {
        /// The limit.
        max: usize,
    },
    /// A version 1 line that does not follow the format.
    #[error("malformed PROXY v1 line: {0}")]
    V1Malformed(&'static str),
    /// A version 2 header of a version other than 2.
    #[error("PROXY v2 header says version {0}, only version 2 exists")]
    V2Version(u8),
    /// A version 2 command other than LOCAL (0) or PROXY (1).
    #[error("PROXY v2 header has unknown command {0}")]
    V2Command(u8),
    /// A version 2 address block too short for its address family.
    #[error("PROXY v2 address block of {len} bytes is too short for its address family")]
    V2Short {
        /// The block's length.
        len: usize,
    },
    /// A version 2 address block longer than this server accepts.
    #[error("PROXY v2 address block of {len} bytes is over the {max}-byte limit")]
    V2TooLong {
        /// The block's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// What a front end said about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// The client's address and port, when the front end relays a TCP client over IPv4 or
    /// IPv6. `None` when the front end speaks for itself (v2 LOCAL, v1 UNKNOWN, e.g. a
    /// health check) or relays something without an IP address (a Unix socket): the
    /// connection then counts as the front end's own.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
}

/// Parses a PROXY header at the start of `input`.
///
/// `Ok(None)`: every byte so far fits a header, send more. `Ok(Some((header, used)))`: the
/// header took the first `used` bytes; the rest belong to the client. `Err`: the bytes are
/// not a header this server accepts (the caller closes the connection).
pub fn parse(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if input.is_empty() {
        return Ok(None);
    }
    if starts_like(input, &V2_SIGNATURE) {
        return parse_v2(input);
    }
    if starts_like(input, V1_PREFIX) {
        return parse_v1(input);
    }
    Err(ProxyError::Missing)
}

/// Whether `input` and `prefix` agree on their common length.
fn starts_like(input: &[u8], prefix: &[u8]) -> bool {
    let n = input.len().min(prefix.len());
    input.get(..n) == prefix.get(..n)
}

fn parse_v1(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = input.get(..input.len().min(V1_MAX_LEN)).unwrap_or(input);
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if input.len() >= V1_MAX_LEN {
            return Err(ProxyError::V1TooLong { max: V1_MAX_LEN });
        }
        return Ok(None);
    };
    let line = window.get(..end).unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::V1Malformed("not ASCII"))?;
    let mut words = line.split(' ');
    if words.next() != Some("PROXY") {
        return Err(ProxyError::V1Malformed("does not start with PROXY"));
    }
    let proto = words.next().ok_or(ProxyError::V1Malformed("no protocol"))?;
    let header = match proto {
        // The front end does not know (or will not say) who the client is: whatever
        // follows on the line is to be ignored, as the format says.
        "UNKNOWN" => ProxyHeader {
            version: 1,
            source: None,
            destination: None,
        },
        "TCP4" | "TCP6" => {
            let v6 = proto == "TCP6";
            let mut field = || words.next().ok_or(ProxyError::V1Malformed("missing field"));
            let src = v1_ip(field()?, v6)?;
            let dst = v1_ip(field()?, v6)?;
            let sport = v1_port(field()?)?;
            let dport = v1_port(field()?)?;
            if words.next().is_some() {
                return Err(ProxyError::V1Malformed("extra fields"));
            }
            ProxyHeader {
                version: 1,
                source: Some(SocketAddr::new(src, sport)),
                destination: Some(SocketAddr::new(dst, dport)),
            }
        }
        _ => {
            return Err(ProxyError::V1Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    Ok(Some((header, end + 2)))
}

fn v1_ip(word: &str, v6: bool) -> Result<IpAddr, ProxyError> {
    if v6 {
        word.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyError::V1Malformed("bad IPv6 address"))
    } else {
        word.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyError::V1Malformed("bad IPv4 address"))
    }
}

/// A port in decimal: digits only (no sign, no spaces), at most 5 of them, ≤ 65535.
fn v1_port(word: &str) -> Result<u16, ProxyError> {
    const BAD: ProxyError = ProxyError::V1Malformed("bad port");
    if word.is_empty() || word.len() > 5 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    word.parse().map_err(|_| BAD)
}

fn parse_v2(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(fixed) = input.get(..V2_HEADER_LEN) else {
        return Ok(None);
    };
    let (ver_cmd, family, len) = (fixed[12], fixed[13], fixed[14..16].to_owned());
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let version = ver_cmd >> 4;
    if version != 2 {
        return Err(ProxyError::V2Version(version));
    }
    let command = ver_cmd & 0x0F;
    if command > 1 {
        return Err(ProxyError::V2Command(command));
    }
    if len > V2_MAX_BODY {
        return Err(ProxyError::V2TooLong {
            len,
            max: V2_MAX_BODY,
        });
    }
    let Some(body) = input.get(V2_HEADER_LEN..V2_HEADER_LEN + len) else {
        return Ok(None);
    };
    let used = V2_HEADER_LEN + len;
    let local = ProxyHeader {
        version: 2,
        source: None,
        destination: None,
    };
    // LOCAL: the front end's own connection (a health check); the block is ignored.
    if command == 0 {
        return Ok(Some((local, used)));
    }
    const STREAM: u8 = 0x1;
    let (fam, transport) = (family >> 4, family & 0x0F);
    let header = match (fam, transport) {
        (0x1, STREAM) => {
            let a = body.get(..12).ok_or(ProxyError::V2Short { len })?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            ProxyHeader {
                version: 2,
                source: Some(SocketAddr::new(ip(0), port(8))),
                destination: Some(SocketAddr::new(ip(4), port(10))),
            }
        }
        (0x2, STREAM) => {
            let a = body.get(..36).ok_or(ProxyError::V2Short { len })?;
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            ProxyHeader {
                version: 2,
                source: Some(SocketAddr::new(ip(0), port(32))),
                destination: Some(SocketAddr::new(ip(16), port(34))),
            }
        }
        // UNSPEC, Unix sockets, datagrams: no client IP to count by, so the connection
        // counts as the front end's own, as the format allows.
        _ => local,
    };
    Ok(Some((header, used)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn v1_tcp4_and_tcp6_give_the_client_address_and_leave_the_rest() {
        let input = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 1986\r\n{\"to\":\"bridge\"}";
        let (h, used) = parse(input).unwrap().unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.source, Some("192.0.2.7:51000".parse().unwrap()));
        assert_eq!(h.destination, Some("198.51.100.1:1986".parse().unwrap()));
        assert_eq!(&input[used..], b"{\"to\":\"bridge\"}");

        let input = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n";
        let (h, used) = parse(input).unwrap().unwrap();
        assert_eq!(h.source, Some("[2001:db8::7]:65535".parse().unwrap()));
        assert_eq!(used, input.len());
    }

    #[test]
    fn v1_unknown_is_the_front_ends_own_connection() {
        let (h, used) = parse(b"PROXY UNKNOWN whatever follows\r\nX")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, None);
        assert_eq!(used, 32);
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().1, 15);
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 1986\r\n".to_vec();
        let v2 = v2(
            1,
            0x11,
            &[192, 0, 2, 7, 198, 51, 100, 1, 0xC7, 0x38, 0x07, 0xC2],
        );
        for whole in [v1, v2] {
            for cut in 0..whole.len() {
                assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
            }
            assert!(parse(&whole).unwrap().is_some());
        }
    }

    #[test]
    fn v1_refuses_what_the_format_does_not_allow() {
        let bad: [&[u8]; 12] = [
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 000001 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r\n",
            b"PROXY \xff\r\n",
        ];
        for b in bad {
            assert!(
                matches!(parse(b), Err(ProxyError::V1Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn v1_without_an_end_is_refused_at_the_limit() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(parse(&long), Ok(None));
        long.push(b'x');
        assert_eq!(parse(&long), Err(ProxyError::V1TooLong { max: V1_MAX_LEN }));
    }

    #[test]
    fn anything_else_is_not_a_header() {
        for b in [
            &b"{\"to\":\"bridge\",\"op\":\"LOGIN\"}\r"[..],
            b"PROXX",
            b"proxy TCP4",
            b"\r\n\r\n\0\r\nQUIX",
            b"\x5a\x12\x34",
        ] {
            assert_eq!(parse(b), Err(ProxyError::Missing), "{b:?}");
        }
    }

    #[test]
    fn v2_inet_inet6_local_and_others() {
        let body4 = [192, 0, 2, 7, 198, 51, 100, 1, 0xC7, 0x38, 0x07, 0xC2];
        let mut input = v2(1, 0x11, &body4);
        input.extend_from_slice(b"rest");
        let (h, used) = parse(&input).unwrap().unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.source, Some("192.0.2.7:51000".parse().unwrap()));
        assert_eq!(h.destination, Some("198.51.100.1:1986".parse().unwrap()));
        assert_eq!(&input[used..], b"rest");

        let mut body6 = Vec::new();
        body6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body6.extend_from_slice(&[0x13, 0x88, 0x07, 0xC2]);
        // A TLV after the addresses is skipped with the block.
        body6.extend_from_slice(&[0x04, 0x00, 0x01, 0xAA]);
        let input = v2(1, 0x21, &body6);
        let (h, used) = parse(&input).unwrap().unwrap();
        assert_eq!(h.source, Some("[2001:db8::7]:5000".parse().unwrap()));
        assert_eq!(used, input.len());

        // LOCAL: the front end itself, whatever the block says.
        let (h, _) = parse(&v2(0, 0x11, &body4)).unwrap().unwrap();
        assert_eq!(h.source, None);
        // UNSPEC and Unix sockets carry no client IP.
        assert_eq!(parse(&v2(1, 0x00, &[])).unwrap().unwrap().0.source, None);
        assert_eq!(
            parse(&v2(1, 0x31, &[0u8; 216])).unwrap().unwrap().0.source,
            None
        );
        // A datagram over IPv4 is not a TCP client either.
        assert_eq!(parse(&v2(1, 0x12, &body4)).unwrap().unwrap().0.source, None);
    }

    #[test]
    fn v2_refuses_bad_versions_commands_and_lengths() {
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert_eq!(parse(&wrong_version), Err(ProxyError::V2Version(1)));
        let mut wrong_command = v2(1, 0x11, &[0; 12]);
        wrong_command[12] = 0x22;
        assert_eq!(parse(&wrong_command), Err(ProxyError::V2Command(2)));
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 11])),
            Err(ProxyError::V2Short { len: 11 })
        );
        assert_eq!(
            parse(&v2(1, 0x21, &[0; 35])),
            Err(ProxyError::V2Short { len: 35 })
        );
        // Refused from the fixed part alone: the block is never waited for.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert_eq!(
            parse(&huge),
            Err(ProxyError::V2TooLong {
                len: 0xFFFF,
                max: V2_MAX_BODY
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_claims_more_than_it_was_given(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)
        ) {
            if let Ok(Some((_, used))) = parse(&bytes) {
                proptest::prop_assert!(used <= bytes.len());
                proptest::prop_assert!(used <= V2_MAX_LEN);
            }
        }

        #[test]
        fn v1_round_trips_any_tcp4_address(a: [u8; 4], b: [u8; 4], sp: u16, dp: u16) {
            let (src, dst) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
            let line = format!("PROXY TCP4 {src} {dst} {sp} {dp}\r\n");
            let (h, used) = parse(line.as_bytes()).unwrap().unwrap();
            proptest::prop_assert_eq!(used, line.len());
            proptest::prop_assert_eq!(h.source, Some(SocketAddr::new(src.into(), sp)));
            proptest::prop_assert_eq!(h.destination, Some(SocketAddr::new(dst.into(), dp)));
        }
    }
}
