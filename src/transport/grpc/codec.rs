//! Messages as undecoded [`Bytes`]: gRPC framing for the router's own
//! `Inference` service and its client to workers, and a tonic codec for the
//! mock worker.
//!
//! The router never re-encodes what it relays: a message's bytes reach the
//! other side exactly as they came, unknown fields included. Decoding the few
//! fields the router needs is the caller's job (`prost::Message::decode`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Largest message the router accepts, either way (tonic's default limit).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// `message` with its gRPC frame header (uncompressed, 4-byte length).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// Why a unary gRPC body is not one acceptable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The compressed flag is set.
    #[error("the message is compressed; Switchyard accepts only uncompressed messages")]
    Compressed,
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("the message is {0} bytes; the limit is {MAX_MESSAGE_BYTES} bytes")]
    TooLarge(usize),
    /// More than one message in a unary body.
    #[error("the request carried more than one message; this method takes one")]
    Several,
    /// The body ended inside a message.
    #[error("the body ended before a whole message arrived")]
    Truncated,
}

/// A frame header at the start of `buf`: the message length, once all of
/// it is there (`None` while incomplete).
fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(FrameError::Compressed);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok((buf.len() >= 5 + len).then_some(len))
}

/// The one message of a unary body (the body's bytes, whole).
pub fn unary_message(body: Bytes) -> Result<Bytes, FrameError> {
    match frame_len(&body)? {
        Some(len) if body.len() == 5 + len => Ok(body.slice(5..)),
        Some(_) => Err(FrameError::Several),
        None => Err(FrameError::Truncated),
    }
}

/// Splits gRPC-framed bytes, arriving in chunks of any size, into
/// messages (for the few streams the router reads rather than relays).
#[derive(Debug, Default)]
pub struct Deframer {
    buf: BytesMut,
}

impl Deframer {
    /// Adds received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        match frame_len(&self.buf)? {
            Some(len) => {
                self.buf.advance(5);
                Ok(Some(self.buf.split_to(len).freeze()))
            }
            None => Ok(None),
        }
    }

    /// Whether bytes of an unfinished message are held.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Encodes and decodes gRPC messages as raw bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unary_body_yields_its_one_message() {
        let body = frame(b"hello");
        assert_eq!(&body[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(unary_message(body).unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(unary_message(frame(b"")).unwrap(), Bytes::new());
    }

    #[test]
    fn malformed_unary_bodies_are_refused_with_the_reason() {
        let two = [frame(b"a"), frame(b"b")].concat();
        let truncated = frame(b"hello").slice(..7);
        let mut compressed = frame(b"x").to_vec();
        compressed[0] = 1;
        let mut huge = vec![0u8];
        huge.extend_from_slice(&((MAX_MESSAGE_BYTES as u32) + 1).to_be_bytes());
        for (body, error) in [
            (Bytes::from(two), FrameError::Several),
            (truncated, FrameError::Truncated),
            (Bytes::new(), FrameError::Truncated),
            (Bytes::from(compressed), FrameError::Compressed),
            (
                Bytes::from(huge),
                FrameError::TooLarge(MAX_MESSAGE_BYTES + 1),
            ),
        ] {
            assert_eq!(unary_message(body.clone()).unwrap_err(), error, "{body:?}");
        }
    }
}
