//! Llama 3.1, 3.2 and 3.3 with JSON tool calling: the answer is the call, a
//! JSON object with `name` and `parameters`, possibly after
//! `<|python_tag|>`; several are split by `;`:
//!
//! ```text
//! {"name": "get_weather", "parameters": {"city": "Paris"}}
//! ```
//!
//! An answer that does not open with `{` is content.

use super::framing::Spec;

pub(super) const SPEC: Spec = Spec {
    open: "",
    prefix: "<|python_tag|>",
    array: false,
    separator: Some(';'),
    close: "",
};
