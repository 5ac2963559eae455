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

/// CRC-16/ARC: reflected polynomial 0xA001, initial value 0, no final XOR.
/// `crc16(b"123456789") == 0xbb3d`.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
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
