//! CRC-16/ARC and the Q-Link nibble encoding of it (WIRE.md §1.3.2).
//!
//! Pure arithmetic: no allocation, no I/O.

/// The CRC-16/ARC lookup table (reflected polynomial 0xA001), built at compile time so the
/// per-byte cost is one table load instead of eight shifts.
const TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Slicing-by-8 tables: `SLICES[k][b]` is the CRC effect of byte `b` followed by `k`
/// zero bytes, so eight bytes are folded in per step with independent loads instead of a
/// chain of eight dependent ones (the codec's decode speed is mostly this loop).
const SLICES: [[u16; 256]; 8] = {
    let mut t = [[0u16; 256]; 8];
    t[0] = TABLE;
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ TABLE[(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    t
};

/// CRC-16/ARC: reflected polynomial 0xA001, initial value 0, no final XOR.
/// `crc16(b"123456789") == 0xbb3d`.
pub fn crc16(data: &[u8]) -> u16 {
    crc16_update(0, data)
}

/// Continues a CRC-16/ARC over more bytes: `crc16_update(crc16(a), b) == crc16(a ++ b)`.
/// Lets an encoder checksum a header and a payload without copying them together first.
pub fn crc16_update(crc: u16, data: &[u8]) -> u16 {
    let mut crc = crc;
    let mut blocks = data.chunks_exact(8);
    for b in &mut blocks {
        let x = crc ^ u16::from_le_bytes([b[0], b[1]]);
        crc = SLICES[7][usize::from(x & 0xFF)]
            ^ SLICES[6][usize::from(x >> 8)]
            ^ SLICES[5][usize::from(b[2])]
            ^ SLICES[4][usize::from(b[3])]
            ^ SLICES[3][usize::from(b[4])]
            ^ SLICES[2][usize::from(b[5])]
            ^ SLICES[1][usize::from(b[6])]
            ^ SLICES[0][usize::from(b[7])];
    }
    blocks.remainder().iter().fold(crc, |crc, &b| {
        (crc >> 8) ^ TABLE[usize::from((crc ^ u16::from(b)) & 0xFF)]
    })
}

/// Spreads a CRC over four bytes, top nibble first, so that none of them can be
/// `00`, `0D` or `FF` (the frame terminator must stay unique on the wire).
pub fn encode_nibbles(crc: u16) -> [u8; 4] {
    let [hi, lo] = crc.to_be_bytes();
    [
        (hi & 0xF0) | 0x01,
        0x40 | (hi & 0x0F),
        (lo & 0xF0) | 0x01,
        0x40 | (lo & 0x0F),
    ]
}

/// Reads a CRC back from its four nibble-encoded bytes. The filler bits are ignored, as the
/// reference bridge and the C64 ignore them.
pub fn decode_nibbles(b: [u8; 4]) -> u16 {
    u16::from_be_bytes([(b[0] & 0xF0) | (b[1] & 0x0F), (b[2] & 0xF0) | (b[3] & 0x0F)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc16(b"123456789"), 0xbb3d);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn sliced_crc_matches_the_bitwise_definition() {
        fn bitwise(data: &[u8]) -> u16 {
            let mut crc = 0u16;
            for &b in data {
                crc ^= u16::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0xA001
                    } else {
                        crc >> 1
                    };
                }
            }
            crc
        }
        let data: Vec<u8> = (0..300u32).map(|i| (i * 167 + 13) as u8).collect();
        for len in 0..data.len() {
            for start in [0, 1, 7] {
                let d = &data[start.min(len)..len];
                assert_eq!(crc16(d), bitwise(d), "len {}", d.len());
                let (a, b) = d.split_at(d.len() / 3);
                assert_eq!(crc16_update(crc16(a), b), bitwise(d));
            }
        }
    }

    #[test]
    fn nibbles_round_trip_and_avoid_terminators() {
        for crc in 0..=u16::MAX {
            let enc = encode_nibbles(crc);
            assert_eq!(decode_nibbles(enc), crc);
            assert!(
                enc.iter().all(|b| ![0x00, 0x0D, 0xFF].contains(b)),
                "{crc:#06x}"
            );
        }
    }

    #[test]
    fn c64_default_reset() {
        // WIRE.md §1.3.2: CRC(7f 7f 23 05 09) = 823e, sent as 81 42 31 4e.
        let crc = crc16(&[0x7f, 0x7f, 0x23, 0x05, 0x09]);
        assert_eq!(crc, 0x823e);
        assert_eq!(encode_nibbles(crc), [0x81, 0x42, 0x31, 0x4e]);
    }
}
