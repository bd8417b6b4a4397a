//! The HTTP routers' body reader (model and routing input of `/generate`,
//! completions and chat bodies): any bytes parse or are refused; never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::HttpInput;

fuzz_target!(|body: &[u8]| {
    if let Ok(input) = HttpInput::parse(body) {
        // A body it accepts is a JSON object.
        assert!(serde_json_is_object(body), "accepted a body that is not an object");
        let _ = (input.model, input.text, input.token_ids);
    }
});

fn serde_json_is_object(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}
