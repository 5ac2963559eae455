//! Any byte stream, cut into reads at sizes taken from the input itself, through the
//! Q-Link decoder: no panic, the buffer stays bounded, every frame is within the limit
//! and re-encodes to the bytes it came from.
#![no_main]

use bytes::BytesMut;
use espmail::protocol::frame::{FRAME_END, MAX_FRAME_LEN};
use espmail::protocol::qlink::QLinkCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) + 1;
    let mut codec = QLinkCodec::new();
    let mut buf = BytesMut::new();
    let mut items = 0usize;
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        while let Ok(Some(item)) = codec.decode(&mut buf) {
            items += 1;
            if let Ok(frame) = item {
                assert!(frame.wire_len() <= MAX_FRAME_LEN);
                let mut out = BytesMut::new();
                // A decoded frame never holds a raw 0D, so it can always be sent again.
                codec.encode(&frame, &mut out).unwrap();
                assert_eq!(out.last(), Some(&FRAME_END));
            }
        }
        assert!(buf.len() <= MAX_FRAME_LEN + step);
    }
    while let Ok(Some(_)) = codec.decode_eof(&mut buf) {
        items += 1;
    }
    assert!(buf.is_empty());
    assert!(items <= stream.iter().filter(|&&b| b == FRAME_END).count());
});
