//! The inbound `Generate` parser, in each protocol the router serves: any
//! message bytes and any `grpc-timeout` / `x-request-id` either parse or
//! are refused with an error; never a panic. A parsed call's request id is
//! a valid header value and its body still carries it.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::Inbound;
use switchyard::engines;

#[derive(Arbitrary, Debug)]
struct Call<'a> {
    protocol: u8,
    message: &'a [u8],
    timeout: Option<&'a str>,
    request_id: Option<&'a str>,
}

fuzz_target!(|call: Call<'_>| {
    let protocol = engines::ALL[usize::from(call.protocol) % engines::ALL.len()].engine();
    let mut headers = http::HeaderMap::new();
    if let Some(v) = call.timeout.and_then(|t| http::HeaderValue::from_str(t).ok()) {
        headers.insert("grpc-timeout", v);
    }
    if let Some(v) = call.request_id.and_then(|t| http::HeaderValue::from_str(t).ok()) {
        headers.insert("x-request-id", v);
    }
    let body = bytes::Bytes::copy_from_slice(call.message);
    if let Ok(inbound) = Inbound::parse(protocol, headers, body, Duration::from_secs(300)) {
        assert!(!inbound.request_id.is_empty());
        let _ = inbound.upstream_headers();
    }
});
