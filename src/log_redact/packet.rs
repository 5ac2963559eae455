//! Packets as log lines: their structure, never their bytes.
//!
//! At debug and trace level an admin wants to follow a conversation frame by frame. These
//! values `Display` the direction, the header numbers, the payload length and the keyed
//! fingerprint of the payload: two identical payloads in one run show the same
//! fingerprint, and nothing a player typed is shown. Use them as a field:
//! `debug!(pkt = %log_redact::packet(Dir::In, &frame), "frame")`.

use std::fmt;

use crate::protocol::frame::Frame;

use super::fingerprint;

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the client.
    In,
    /// To the client.
    Out,
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::In => "in",
            Dir::Out => "out",
        })
    }
}

/// A Q-Link frame as a log value: `dir=in cmd=Action send=0x11 recv=0x10 len=N fp=XXXXXXXX`.
#[derive(Clone, Copy)]
pub struct PacketSummary<'a> {
    dir: Dir,
    frame: &'a Frame,
}

/// Describes a frame for the log (computes nothing until it is displayed, so a disabled
/// debug event costs no HMAC).
pub fn packet(dir: Dir, frame: &Frame) -> PacketSummary<'_> {
    PacketSummary { dir, frame }
}

impl fmt::Display for PacketSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fr = self.frame;
        write!(
            f,
            "dir={} cmd={:?} send={:#04x} recv={:#04x} len={} fp={}",
            self.dir,
            fr.cmd,
            fr.send,
            fr.recv,
            fr.payload.len(),
            fingerprint(&fr.payload)
        )
    }
}

impl fmt::Debug for PacketSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A Habitat packet as a log value:
/// `dir=out noid=0 req=14 ctrl=0x80 len=N fp=XXXXXXXX`. `payload` is the packet's
/// argument bytes (after noid and request number), fingerprinted, never shown.
#[derive(Clone, Copy)]
pub struct HabitatSummary<'a> {
    dir: Dir,
    ctrl: u8,
    noid: u8,
    reqnum: u8,
    payload: &'a [u8],
}

/// Describes a Habitat packet for the log by its header numbers (the caller's parser
/// owns the packet type; this module only needs the numbers).
pub fn habitat(dir: Dir, ctrl: u8, noid: u8, reqnum: u8, payload: &[u8]) -> HabitatSummary<'_> {
    HabitatSummary {
        dir,
        ctrl,
        noid,
        reqnum,
        payload,
    }
}

impl fmt::Display for HabitatSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dir={} noid={} req={} ctrl={:#04x} len={} fp={}",
            self.dir,
            self.noid,
            self.reqnum,
            self.ctrl,
            self.payload.len(),
            fingerprint(self.payload)
        )
    }
}

impl fmt::Debug for HabitatSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::Command;
    use bytes::Bytes;

    #[test]
    fn frame_shows_structure_and_fingerprint_never_bytes() {
        let payload = Bytes::from_static(b"\x55\x01ESP:the secret fountain");
        let frame = Frame {
            send: 0x11,
            recv: 0x10,
            cmd: Command::ACTION,
            payload: payload.clone(),
        };
        let shown = packet(Dir::In, &frame).to_string();
        let fp = fingerprint(&payload);
        assert_eq!(
            shown,
            format!(
                "dir=in cmd=Action send=0x11 recv=0x10 len={} fp={fp}",
                payload.len()
            )
        );
        assert_eq!(format!("{:?}", packet(Dir::In, &frame)), shown);
        assert!(!shown.contains("fountain"));
        let hex: String = b"fountain".iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex));
    }

    #[test]
    fn unknown_command_and_out_direction() {
        let frame = Frame {
            send: 0x7f,
            recv: 0x10,
            cmd: Command(0x41),
            payload: Bytes::new(),
        };
        let shown = packet(Dir::Out, &frame).to_string();
        assert!(shown.starts_with("dir=out cmd=Command(0x41) send=0x7f recv=0x10 len=0 fp="));
    }

    #[test]
    fn habitat_shows_header_numbers_and_fingerprint() {
        let args = b"Hello, Plaza";
        let shown = habitat(Dir::Out, 0x80, 3, 14, args).to_string();
        assert_eq!(
            shown,
            format!(
                "dir=out noid=3 req=14 ctrl=0x80 len=12 fp={}",
                fingerprint(args)
            )
        );
        assert!(!shown.contains("Plaza"));
        // Same bytes, same fingerprint within the run; different bytes, different one.
        assert_eq!(shown, habitat(Dir::Out, 0x80, 3, 14, args).to_string());
        assert_ne!(
            shown,
            habitat(Dir::Out, 0x80, 3, 14, b"Hello, Plazb").to_string()
        );
    }
}
