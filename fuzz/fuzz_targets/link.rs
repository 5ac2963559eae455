//! Drives `protocol::link::Link` with an arbitrary mix of raw (mostly bad) frames, valid
//! frames with any numbers and commands, outbound Actions, time steps, polls and Pings,
//! checking after every step that it stays bounded and only ever emits well-formed frames.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use espmail::protocol::frame::{seq, Command, Frame, FRAME_END, MAX_FRAME_LEN};
use espmail::protocol::link::{FrameStatus, Link, OutFrameId, Output, WINDOW};
use libfuzzer_sys::fuzz_target;

/// Takes `n` bytes off the front (fewer if the input runs out).
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, tail) = data.split_at(n);
    *data = tail;
    head
}

fn byte(data: &mut &[u8]) -> u8 {
    take(data, 1).first().copied().unwrap_or(0)
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let mut now = Instant::now();
    let mut link = Link::new();
    let mut issued: u64 = 0;
    while !data.is_empty() {
        let op = byte(&mut data);
        let out = match op % 7 {
            0 => {
                let len = usize::from(byte(&mut data) % 40);
                let raw = Bytes::copy_from_slice(take(&mut data, len));
                link.receive(Frame::parse(raw), now)
            }
            1 | 2 => {
                let send = byte(&mut data);
                let recv = byte(&mut data);
                let cmd = byte(&mut data);
                // Mostly the real commands, sometimes anything.
                let cmd = if cmd & 0x80 == 0 { 0x20 + cmd % 7 } else { cmd };
                let len = usize::from(byte(&mut data) % 12);
                let payload = Bytes::copy_from_slice(take(&mut data, len));
                let frame = Frame { send, recv, cmd: Command(cmd), payload };
                // Through the wire form too: what the link emits must parse.
                assert_eq!(Frame::parse(frame.to_bytes()).as_ref(), Ok(&frame));
                link.on_frame(frame, now)
            }
            3 => {
                let len = usize::from(byte(&mut data) % 130);
                let payload = Bytes::copy_from_slice(take(&mut data, len));
                if let Ok(sent) = link.send_action(payload, now) {
                    // Ids only grow (the link's own SS replies take some too).
                    assert!(sent.id >= OutFrameId(issued));
                    issued = sent.id.0 + 1;
                    assert!(sent.frame.wire_len() <= MAX_FRAME_LEN);
                }
                Output::default()
            }
            4 => {
                let ms = u64::from(u16::from_le_bytes([byte(&mut data), byte(&mut data)]));
                now += Duration::from_millis(ms);
                Output::default()
            }
            5 => Output {
                send: link.poll(now).into_iter().collect(),
                ..Output::default()
            },
            _ => Output {
                send: vec![link.ping(now)],
                ..Output::default()
            },
        };
        assert!(out.send.len() <= 2);
        assert!(link.window_len() <= WINDOW);
        assert!(seq::is_valid(link.in_seq()) && seq::is_valid(link.out_seq()));
        for frame in &out.send {
            assert!(seq::is_valid(frame.send) && seq::is_valid(frame.recv));
            assert!(!frame.payload.contains(&FRAME_END));
            assert!(frame.wire_len() <= MAX_FRAME_LEN);
            assert!(Frame::parse(frame.to_bytes()).is_ok());
        }
        if let Some(r) = out.acked {
            assert!(r.first <= r.last);
            assert!(link.is_acked(r.first) && link.is_acked(r.last));
        }
        if let Some(r) = out.dropped {
            assert_eq!(link.status(r.last), FrameStatus::Dropped);
        }
        assert_eq!(link.status(OutFrameId(u64::MAX)), FrameStatus::Unknown);
        if let Some(deadline) = link.next_deadline() {
            assert!(link.window_len() > 0, "{deadline:?} with nothing outstanding");
        }
    }
});
