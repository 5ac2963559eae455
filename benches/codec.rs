//! Codec throughput on a realistic mixed stream: client frames (SPEAK, ESP, prompt
//! replies, acks and pings) and server frames (speech balloons, OBJECT_TALKS, prompts,
//! replies, a split contents vector, acks).
//!
//! `decode`: bytes → `Frame`s through `QLinkCodec` (0D scan, CRC check, payload split).
//! `encode`: `Frame`s → bytes (CRC, 0D). `encode_messages`: typed `ServerMessage`s → cut,
//! escaped, framed bytes (the whole server send path). Each is reported per byte and per
//! frame. Run: `cargo bench --bench codec`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use tokio_util::codec::{Decoder, Encoder};

use espmail::log_redact::Sensitive;
use espmail::protocol::frame::{seq, Command, Frame};
use espmail::protocol::habitat::{Header, Packet};
use espmail::protocol::messages::{
    AvatarState, CommonState, ContentsVector, RegionState, ServerMessage,
};
use espmail::protocol::qlink::QLinkCodec;

/// This thread's CPU time so far, from `/proc/thread-self/schedstat` (ns on the CPU).
///
/// The bench box is shared (2 cores, several builds at once), so wall-clock figures mostly
/// measure the queue for a core. The `cpu` variants divide by the CPU time the benchmark
/// thread actually got (resolution: a scheduler tick per sample, under 5% here).
fn cpu_now() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `routine` `iters` times and returns the CPU time it took (wall time when the
/// CPU clock is unavailable).
fn cpu_time(iters: u64, mut routine: impl FnMut()) -> Duration {
    let wall = Instant::now();
    let start = cpu_now();
    for _ in 0..iters {
        routine();
    }
    match (start, cpu_now()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall.elapsed(),
    }
}

/// Server messages of one "round" of play.
fn server_messages() -> Vec<ServerMessage> {
    let text = |s: &str| Sensitive::new(s.as_bytes().to_vec());
    let av = AvatarState {
        common: CommonState {
            x: 40,
            y: 150,
            ..CommonState::default()
        },
        activity: 0x81,
        action: 0x81,
        health: 0xff,
        restrainer: 0,
        custom: [99, 44],
    };
    let head = |container| CommonState {
        style: 5,
        y: 6,
        orientation: 0x10,
        container,
        ..CommonState::default()
    };
    let mut vector = ContentsVector::describe(RegionState::new(2, 1000));
    for i in 0..6u8 {
        vector = vector.avatar_with_head(2 + 2 * i, av, 3 + 2 * i, head(2 + 2 * i));
    }
    vec![
        ServerMessage::DescribeReply { seq: 1, vector },
        ServerMessage::Speak {
            noid: 4,
            text: text("Hello everyone, nice to see you all in the Plaza today!"),
        },
        ServerMessage::ObjectTalks {
            speaker: 0,
            text: text("ESP from Bob: "),
        },
        ServerMessage::ObjectTalks {
            speaker: 0,
            text: text("meet me by the fountain at nine, I have something to show you [x]"),
        },
        ServerMessage::PromptUser(Bytes::from_static(b"ESP Mail to Bob? (Y/N) ")),
        ServerMessage::EspReply {
            seq: 3,
            noid: 2,
            esp: true,
        },
        ServerMessage::Speak {
            noid: 6,
            text: text(&"a long balloon of chatter ".repeat(5)),
        },
    ]
}

/// Client packets of one round.
fn client_packets() -> Vec<Packet> {
    let p = |seq, noid, req, args: &[u8]| Packet::new(Header::reply(seq, noid, req), args.to_vec());
    vec![
        p(1, 2, 7, b"\0Hello, how is everyone doing tonight?"),
        p(2, 2, 7, b"\0TO:Bob"),
        p(3, 2, 11, b"\0ESP:meet me by the fountain at nine\r]"),
        p(4, 0, 7, b"ESP Mail to Bob? (Y/N)Y"),
        p(5, 0, 6, b""),
    ]
}

/// One round as frames: each Action followed, as in a live session, by acks and pings.
fn frames() -> Vec<Frame> {
    let mut out = Vec::new();
    let mut send = seq::FIRST;
    let mut action = |payload: Bytes, out: &mut Vec<Frame>| {
        send = seq::inc(send);
        out.push(Frame {
            send,
            recv: 0x20,
            cmd: Command::ACTION,
            payload,
        });
        out.push(Frame::bare(Command::RESET_ACK, 0x20, send));
    };
    for m in server_messages() {
        for e in m.encode() {
            action(e, &mut out);
        }
    }
    for p in client_packets() {
        action(p.escaped(), &mut out);
    }
    out.push(Frame::bare(Command::PING, 0x21, 0x30));
    out
}

fn stream(rounds: usize) -> (BytesMut, usize) {
    let mut codec = QLinkCodec::new();
    let mut buf = BytesMut::new();
    let mut n = 0;
    for _ in 0..rounds {
        for f in frames() {
            codec.encode(&f, &mut buf).unwrap();
            n += 1;
        }
    }
    (buf, n)
}

fn decode(c: &mut Criterion) {
    let (wire, n) = stream(200);
    let run = |mut buf: BytesMut| {
        let mut codec = QLinkCodec::new();
        let mut count = 0;
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            black_box(item.unwrap());
            count += 1;
        }
        assert_eq!(count, n);
    };
    let mut g = c.benchmark_group("decode");
    for (label, tp) in [
        ("bytes", Throughput::Bytes(wire.len() as u64)),
        ("frames", Throughput::Elements(n as u64)),
    ] {
        g.throughput(tp.clone());
        g.bench_function(format!("wall/{label}"), |b| {
            b.iter_batched(|| wire.clone(), run, BatchSize::LargeInput)
        });
        g.throughput(tp);
        // The copy stands for the socket read that fills the buffer; it is timed too.
        g.bench_function(format!("cpu/{label}"), |b| {
            b.iter_custom(|iters| cpu_time(iters, || run(BytesMut::from(&wire[..]))))
        });
    }
    g.finish();
}

/// Benchmarks `run` by wall time and by CPU time ([`cpu_time`]), each reported per byte
/// (`bytes` per run) and per frame (`frames` per run).
fn wall_and_cpu(
    g: &mut BenchmarkGroup<'_, WallTime>,
    bytes: usize,
    frames: u64,
    mut run: impl FnMut(),
) {
    for (label, tp) in [
        ("bytes", Throughput::Bytes(bytes as u64)),
        ("frames", Throughput::Elements(frames)),
    ] {
        g.throughput(tp.clone());
        g.bench_function(format!("wall/{label}"), |b| b.iter(&mut run));
        g.throughput(tp);
        g.bench_function(format!("cpu/{label}"), |b| {
            b.iter_custom(|iters| cpu_time(iters, &mut run))
        });
    }
}

fn encode(c: &mut Criterion) {
    let frames: Vec<Frame> = (0..200).flat_map(|_| frames()).collect();
    let (wire, _) = stream(200);
    let mut g = c.benchmark_group("encode");
    let mut out = BytesMut::with_capacity(wire.len());
    let run = || {
        out.clear();
        let mut codec = QLinkCodec::new();
        for f in &frames {
            codec.encode(f, &mut out).unwrap();
        }
        assert_eq!(out.len(), wire.len());
        black_box(&out);
    };
    wall_and_cpu(&mut g, wire.len(), frames.len() as u64, run);
    g.finish();
}

/// Cuts, escapes and frames every message as the server sends it, into `out`; returns
/// how many frames that made.
fn encode_all(msgs: &[ServerMessage], out: &mut BytesMut) -> u64 {
    let mut codec = QLinkCodec::new();
    let mut n = 0;
    for m in msgs {
        for e in m.encode() {
            let f = Frame {
                send: 0x11,
                recv: 0x10,
                cmd: Command::ACTION,
                payload: e,
            };
            codec.encode(&f, out).unwrap();
            n += 1;
        }
    }
    n
}

fn encode_messages(c: &mut Criterion) {
    let msgs: Vec<ServerMessage> = (0..200).flat_map(|_| server_messages()).collect();
    let mut wire = BytesMut::new();
    let n = encode_all(&msgs, &mut wire);
    let mut g = c.benchmark_group("encode_messages");
    let mut out = BytesMut::with_capacity(wire.len());
    let run = || {
        out.clear();
        encode_all(&msgs, &mut out);
        assert_eq!(out.len(), wire.len());
        black_box(&out);
    };
    wall_and_cpu(&mut g, wire.len(), n, run);
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = decode, encode, encode_messages
}
criterion_main!(benches);
