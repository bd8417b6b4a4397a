//! `grpc-timeout`: any value parses or is refused; a duration written as a
//! `grpc-timeout` parses back to at most that duration, and to within the
//! unit it was rounded to.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use switchyard::transport::grpc::metadata::{grpc_timeout, parse_grpc_timeout};

fuzz_target!(|input: (&str, u64)| {
    let (text, nanos) = input;
    let _ = parse_grpc_timeout(text);

    let d = Duration::from_nanos(nanos);
    let written = grpc_timeout(d);
    let back = parse_grpc_timeout(written.to_str().expect("ASCII")).expect("our own value parses");
    assert!(back <= d, "{d:?} written as {written:?} reads back as {back:?}");
    // Rounded down to the unit chosen: at most an hour off for the
    // coarsest unit, and never more than a hundred-millionth relative
    // error besides (8 digits).
    let lost = d - back;
    assert!(
        lost <= Duration::from_secs(3600) && lost.as_nanos() * 10_000_000 <= d.as_nanos().max(1) * 1_000,
        "{d:?} written as {written:?} lost {lost:?}"
    );
});
