//! Mistral: `[TOOL_CALLS]` (a special token, kept in the text) and then the
//! calls as one JSON array:
//!
//! ```text
//! [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]
//! ```
//!
//! The marker is a special token: the request must keep special tokens in
//! the text (the front asks the engine to when it parses this format).

use super::framing::Spec;

pub(super) const SPEC: Spec = Spec {
    open: "[TOOL_CALLS]",
    prefix: "",
    array: true,
    separator: None,
    close: "",
};
