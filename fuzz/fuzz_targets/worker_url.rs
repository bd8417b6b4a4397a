//! Worker URL parsing: never panics; a URL it accepts normalizes to a URL
//! that parses to the same endpoint (normalizing is idempotent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::worker::Endpoint;

fuzz_target!(|url: &str| {
    if let Ok(endpoint) = Endpoint::parse(url) {
        let again = Endpoint::parse(endpoint.url()).expect("a normalized URL parses");
        assert_eq!(again.url(), endpoint.url());
        assert_eq!(again.host(), endpoint.host());
        assert_eq!(again.port(), endpoint.port());
        assert!(endpoint.port() != 0);
    }
});
