//! The client-facing wire protocol, as pure code: no sockets, no clock, no runtime.
//!
//! Bytes flow up through these layers (WIRE.md):
//!
//! 1. [`crc`] and [`frame`]: one Q-Link frame (`5A`, CRC, SEND, RECV, command, payload);
//! 2. [`qlink`]: the `0D`-delimited codec that cuts a byte stream into frames;
//! 3. [`link`]: the Q-Link session state machine (sequence numbers, acks, NAK, resend);
//! 4. [`habitat`]: Habitat escaping, packets, splitting and reassembly;
//! 5. [`messages`]: typed client requests and server messages;
//! 6. [`preamble`]: the login line that precedes the Q-Link session;
//! 7. [`proxy`]: the PROXY protocol header a listed front end puts before all of it.
//!
//! Time, where it matters, is passed in by the caller, so all of it is tested without a
//! runtime and fuzzed alone.

pub mod crc;
pub mod frame;
pub mod habitat;
pub mod link;
pub mod messages;
pub mod preamble;
pub mod proxy;
pub mod qlink;
