//! Just enough protobuf wire format to find the fields of a message that a
//! given schema does not know, without decoding the rest.

use bytes::{Buf, Bytes};

/// The raw bytes (tags included) of every field whose number is not in
/// `known`, in order. Errors on malformed input or deprecated groups.
pub fn unknown_fields(message: &Bytes, known: &[u32]) -> Result<Bytes, String> {
    let mut buf = message.clone();
    let mut out = Vec::new();
    while buf.has_remaining() {
        let start = message.len() - buf.remaining();
        let key = prost::encoding::decode_varint(&mut buf).map_err(|e| e.to_string())?;
        let (number, wire_type) = ((key >> 3) as u32, key & 7);
        let skip = match wire_type {
            0 => {
                prost::encoding::decode_varint(&mut buf).map_err(|e| e.to_string())?;
                0
            }
            1 => 8,
            2 => prost::encoding::decode_varint(&mut buf).map_err(|e| e.to_string())? as usize,
            5 => 4,
            other => return Err(format!("unsupported wire type {other} for field {number}")),
        };
        if buf.remaining() < skip {
            return Err(format!("field {number} is truncated"));
        }
        buf.advance(skip);
        if !known.contains(&number) {
            let end = message.len() - buf.remaining();
            out.extend_from_slice(&message[start..end]);
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_the_unknown_fields() {
        // field 1 (len 2 "ab"), field 1001 varint 7, field 2 fixed32, field 1002 len 1 "x"
        let mut m = vec![0x0a, 2, b'a', b'b'];
        let unknown_a = [0xc8, 0x3e, 7]; // (1001 << 3) | 0 = 8008 = 0xc8 0x3e
        let unknown_b = [0xd2, 0x3e, 1, b'x']; // (1002 << 3) | 2 = 8018
        m.extend_from_slice(&unknown_a);
        m.extend_from_slice(&[0x15, 1, 2, 3, 4]);
        m.extend_from_slice(&unknown_b);
        let found = unknown_fields(&Bytes::from(m), &[1, 2]).unwrap();
        assert_eq!(&found[..], &[&unknown_a[..], &unknown_b[..]].concat()[..]);
    }

    #[test]
    fn rejects_truncated_input() {
        assert!(unknown_fields(&Bytes::from_static(&[0x0a, 5, b'a']), &[]).is_err());
    }
}
