//! The recorded C64 session (vectors `c64_recorded`), replayed byte for byte on any stream
//! to the server (the plain listener, or `espmail tunnel` in front of the TLS one): the
//! login line (with a trusted front end's secret added, as the front end in front of the
//! C64 would), the deliberate bad-CRC probe, `SG`, NAK and heartbeats, then IM_ALIVE,
//! DESCRIBE, HERE_I_AM and a SPEAK, each answered as the recording says.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::time::Duration;

use bytes::Bytes;
use espmail::protocol::frame::{Command, Frame};
use espmail::protocol::habitat::Packet;
use espmail::protocol::qlink::QLinkCodec;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

use super::FRONT_END_SECRET;

fn recorded() -> Vec<(String, String, Vec<u8>)> {
    let text = std::fs::read_to_string("tests/vectors/habitat.json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["c64_recorded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let hex = e["wire_hex"].as_str().unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (
                e["from"].as_str().unwrap().to_string(),
                e["name"].as_str().unwrap().to_string(),
                bytes,
            )
        })
        .collect()
}

async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(f: &mut Framed<S, QLinkCodec>) -> Frame {
    let item = tokio::time::timeout(Duration::from_secs(10), f.next())
        .await
        .expect("a frame from the server in time")
        .expect("connection open")
        .expect("readable");
    item.expect("a valid frame")
}

/// The next Action from the server, skipping bare acks.
async fn next_action<S: AsyncRead + AsyncWrite + Unpin>(f: &mut Framed<S, QLinkCodec>) -> Frame {
    loop {
        let frame = next_frame(f).await;
        if frame.cmd == Command::ACTION {
            return frame;
        }
    }
}

fn wire(frame: &Frame) -> Vec<u8> {
    let mut v = frame.to_bytes().to_vec();
    v.push(0x0d);
    v
}

/// Replays the recorded C64 session on `stream` and checks every answer; the server must
/// be in trusted mode with the connection's source as a trusted peer.
pub async fn replay_recorded_session<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let rec = recorded();
    assert_eq!(rec.len(), 19);
    let client = |name: &str| {
        rec.iter()
            .find(|(from, n, _)| from == "client" && n.starts_with(name))
            .unwrap_or_else(|| panic!("no client vector {name}"))
            .2
            .clone()
    };
    let server_wire = |name: &str| {
        rec.iter()
            .find(|(from, n, _)| from == "server" && n.starts_with(name))
            .unwrap()
            .2
            .clone()
    };

    let mut f = Framed::new(stream, QLinkCodec::new());
    // The front end in front of the C64 adds its secret to the launcher's login line; every
    // byte after it is the C64's own.
    let line = client("login line");
    let json_end = line.iter().rposition(|b| *b == b'}').unwrap();
    let mut login = line[..json_end].to_vec();
    login.extend_from_slice(format!(",\"front_end_secret\":\"{FRONT_END_SECRET}\"").as_bytes());
    login.extend_from_slice(&line[json_end..]);
    f.get_mut().write_all(&login).await.unwrap();
    f.get_mut()
        .write_all(&client("handshake probe"))
        .await
        .unwrap();
    // The probe is answered with the NAK that carries our sequence numbers, byte for byte.
    let nak = next_frame(&mut f).await;
    assert_eq!(wire(&nak), server_wire("NAK sent in reply"));

    for name in [
        "Action SG after adopting",
        "NAK with SEND 12",
        "heartbeat with SEND 12",
        "heartbeat acking server Action 11",
        "Action 13 IM_ALIVE",
    ] {
        f.get_mut().write_all(&client(name)).await.unwrap();
    }
    // IM_ALIVE is answered exactly as the recording shows (Action 11, RECV 13).
    let alive = next_action(&mut f).await;
    assert_eq!(wire(&alive), server_wire("IM_ALIVE reply"));

    f.get_mut()
        .write_all(&client("Action 14 DESCRIBE"))
        .await
        .unwrap();
    let describe = next_action(&mut f).await;
    let p = Packet::parse_escaped(&describe.payload).unwrap();
    assert_eq!(
        (p.header.ctrl, p.header.noid, p.header.reqnum),
        (0xe1, 0, 1),
        "the reply to DESCRIBE"
    );
    let me = p.payload[4];
    assert_ne!(me, 0xff, "randy has an avatar, not a ghost");
    assert_eq!(
        &p.payload[9..11],
        &[me + 1, 127],
        "head first, then the avatar"
    );

    f.get_mut()
        .write_all(&client("Action 15 SG again"))
        .await
        .unwrap();
    f.get_mut()
        .write_all(&client("Action 16 HERE_I_AM"))
        .await
        .unwrap();
    let appear = next_action(&mut f).await;
    assert_eq!(
        Packet::parse_escaped(&appear.payload).unwrap().to_bytes(),
        Bytes::from(vec![0x55, 0xfa, 0x00, 0x12, me])
    );
    // The recorded ack and a prompt reply with no prompt pending change nothing.
    f.get_mut()
        .write_all(&client("ACK answering the Ping"))
        .await
        .unwrap();
    f.get_mut()
        .write_all(&client("Action 17 PROMPT_REPLY"))
        .await
        .unwrap();

    // A working session: SPEAK "TO:bob" on randy's own noid (the recording used noid 2),
    // as the next Action. bob does not exist: "Cannot contact bob." and esp=0.
    let speak = Packet::new(
        espmail::protocol::habitat::Header::reply(4, me, 7),
        b"\x00TO:bob".to_vec(),
    );
    let frame = Frame {
        send: 0x18,
        recv: appear.send,
        cmd: Command::ACTION,
        payload: speak.escaped(),
    };
    f.send(frame).await.unwrap();
    let said = next_action(&mut f).await;
    let said = Packet::parse_escaped(&said.payload).unwrap();
    assert_eq!((said.header.noid, said.header.reqnum), (me, 14));
    assert_eq!(&said.payload[..], b"Cannot contact bob.");
    let reply = next_action(&mut f).await;
    assert_eq!(
        Packet::parse_escaped(&reply.payload).unwrap().to_bytes(),
        Bytes::from(vec![0x55, 0xe4, me, 0x00, 0x00])
    );
    // The probe and the SG hellos are the C64's own handshake: never bad input.
}
