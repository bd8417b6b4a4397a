//! gRPC framing: messages framed and then split into chunks at arbitrary
//! points come back whole and in order; arbitrary bytes never panic the
//! deframer or the unary reader.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::transport::grpc::codec::{frame, unary_message, Deframer};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    messages: Vec<&'a [u8]>,
    cuts: Vec<u16>,
    garbage: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let mut wire = Vec::new();
    for m in &input.messages {
        wire.extend_from_slice(&frame(m));
    }
    let mut deframer = Deframer::default();
    let mut out = Vec::new();
    let mut rest = &wire[..];
    for cut in input.cuts.iter().chain(std::iter::once(&u16::MAX)) {
        let at = usize::from(*cut).min(rest.len());
        let (chunk, tail) = rest.split_at(at);
        deframer.push(chunk);
        while let Some(m) = deframer.next_message().expect("our own frames are valid") {
            out.push(m);
        }
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    deframer.push(rest);
    while let Some(m) = deframer.next_message().expect("our own frames are valid") {
        out.push(m);
    }
    assert!(!deframer.has_partial());
    assert_eq!(out.len(), input.messages.len());
    for (got, sent) in out.iter().zip(&input.messages) {
        assert_eq!(&got[..], *sent);
    }

    let mut loose = Deframer::default();
    loose.push(input.garbage);
    while let Ok(Some(_)) = loose.next_message() {}
    let _ = unary_message(bytes::Bytes::copy_from_slice(input.garbage));
});
