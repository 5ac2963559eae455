//! Packets as log lines: their structure, never their bytes.
//!
//! At debug and trace level an admin wants to follow a conversation frame by frame. These
//! values `Display` the direction, the header numbers, the payload length and, given the
//! session's [`Fingerprinter`], the keyed fingerprint of the payload: two identical
//! payloads in one session show the same fingerprint, and nothing a player typed is
//! shown. Given no fingerprinter (a prompt reply: a typed password or answer), the length
//! is all there is. Use them as a field:
//! `debug!(pkt = %log_redact::packet(Dir::In, &frame.cmd, (frame.send, frame.recv),
//! &frame.payload, Some(&fp)), "frame")`.
//!
//! It takes plain numbers and bytes (and the command as anything that prints itself), so
//! it needs nothing from the protocol module: log_redact sits beside every layer and
//! imports none of them.

use std::fmt;

use super::Fingerprinter;

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

/// A Q-Link frame as a log value: `dir=in cmd=Action send=0x11 recv=0x10 len=N fp=XXXXXXXX`
/// (no `fp` without a fingerprinter).
#[derive(Clone, Copy)]
pub struct PacketSummary<'a> {
    dir: Dir,
    cmd: &'a dyn fmt::Debug,
    send: u8,
    recv: u8,
    payload: &'a [u8],
    fp: Option<&'a Fingerprinter>,
}

/// Describes a frame for the log by its command (as its `Debug` names it), its sequence
/// numbers `(send, recv)` and its payload, fingerprinted under `fp` (the session's) when
/// given. Computes nothing until it is displayed, so a disabled debug event costs no HMAC.
pub fn packet<'a>(
    dir: Dir,
    cmd: &'a dyn fmt::Debug,
    (send, recv): (u8, u8),
    payload: &'a [u8],
    fp: Option<&'a Fingerprinter>,
) -> PacketSummary<'a> {
    PacketSummary {
        dir,
        cmd,
        send,
        recv,
        payload,
        fp,
    }
}

/// ` fp=XXXXXXXX` under `fp`, or nothing.
fn write_fp(f: &mut fmt::Formatter<'_>, fp: Option<&Fingerprinter>, data: &[u8]) -> fmt::Result {
    match fp {
        Some(fp) => write!(f, " fp={}", fp.fingerprint(data)),
        None => Ok(()),
    }
}

impl fmt::Display for PacketSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dir={} cmd={:?} send={:#04x} recv={:#04x} len={}",
            self.dir,
            self.cmd,
            self.send,
            self.recv,
            self.payload.len(),
        )?;
        write_fp(f, self.fp, self.payload)
    }
}

impl fmt::Debug for PacketSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A Habitat packet as a log value:
/// `dir=out noid=0 req=14 ctrl=0x80 len=N fp=XXXXXXXX`. `payload` is the packet's
/// argument bytes (after noid and request number), fingerprinted when a fingerprinter is
/// given, never shown.
#[derive(Clone, Copy)]
pub struct HabitatSummary<'a> {
    dir: Dir,
    ctrl: u8,
    noid: u8,
    reqnum: u8,
    payload: &'a [u8],
    fp: Option<&'a Fingerprinter>,
}

/// Describes a Habitat packet for the log by its header numbers (the caller's parser
/// owns the packet type; this module only needs the numbers), fingerprinted under `fp`
/// when given.
pub fn habitat<'a>(
    dir: Dir,
    (ctrl, noid, reqnum): (u8, u8, u8),
    payload: &'a [u8],
    fp: Option<&'a Fingerprinter>,
) -> HabitatSummary<'a> {
    HabitatSummary {
        dir,
        ctrl,
        noid,
        reqnum,
        payload,
        fp,
    }
}

impl fmt::Display for HabitatSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dir={} noid={} req={} ctrl={:#04x} len={}",
            self.dir,
            self.noid,
            self.reqnum,
            self.ctrl,
            self.payload.len(),
        )?;
        write_fp(f, self.fp, self.payload)
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

    /// Stands in for the protocol's command type: anything whose `Debug` names it.
    #[derive(Debug)]
    enum Cmd {
        Action,
    }

    /// An unknown command shows as its number.
    struct Raw(u8);

    impl fmt::Debug for Raw {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Command({:#04x})", self.0)
        }
    }

    #[test]
    fn frame_shows_structure_and_fingerprint_never_bytes() {
        let payload: &[u8] = b"\x55\x01ESP:the secret fountain";
        let frame = |fp| packet(Dir::In, &Cmd::Action, (0x11, 0x10), payload, fp);
        let fp = Fingerprinter::random();
        let shown = frame(Some(&fp)).to_string();
        assert_eq!(
            shown,
            format!(
                "dir=in cmd=Action send=0x11 recv=0x10 len={} fp={}",
                payload.len(),
                fp.fingerprint(payload)
            )
        );
        assert_eq!(format!("{:?}", frame(Some(&fp))), shown);
        assert!(!shown.contains("fountain"));
        let hex: String = b"fountain".iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex));
        // Without a fingerprinter (a prompt reply): the length only.
        assert_eq!(
            frame(None).to_string(),
            format!(
                "dir=in cmd=Action send=0x11 recv=0x10 len={}",
                payload.len()
            )
        );
    }

    #[test]
    fn unknown_command_and_out_direction() {
        let fp = Fingerprinter::random();
        let shown = packet(Dir::Out, &Raw(0x41), (0x7f, 0x10), &[], Some(&fp)).to_string();
        assert!(shown.starts_with("dir=out cmd=Command(0x41) send=0x7f recv=0x10 len=0 fp="));
    }

    #[test]
    fn habitat_shows_header_numbers_and_a_fingerprint_of_this_session_only() {
        let args = b"Hello, Plaza";
        let fp = Fingerprinter::random();
        let shown = habitat(Dir::Out, (0x80, 3, 14), args, Some(&fp)).to_string();
        assert_eq!(
            shown,
            format!(
                "dir=out noid=3 req=14 ctrl=0x80 len=12 fp={}",
                fp.fingerprint(args)
            )
        );
        assert!(!shown.contains("Plaza"));
        // Same bytes, same fingerprint within the session; different bytes, different one.
        assert_eq!(
            shown,
            habitat(Dir::Out, (0x80, 3, 14), args, Some(&fp)).to_string()
        );
        assert_ne!(
            shown,
            habitat(Dir::Out, (0x80, 3, 14), b"Hello, Plazb", Some(&fp)).to_string()
        );
        // Another session's key: the same bytes do not show the same.
        let other = Fingerprinter::random();
        assert_ne!(
            shown,
            habitat(Dir::Out, (0x80, 3, 14), args, Some(&other)).to_string()
        );
        assert_eq!(
            habitat(Dir::In, (0xe0, 0, 7), args, None).to_string(),
            "dir=in noid=0 req=7 ctrl=0xe0 len=12"
        );
    }
}
