//! Hermes and Qwen: each call a JSON object between `<tool_call>` and
//! `</tool_call>`, on lines of their own, after any content:
//!
//! ```text
//! Let me look that up.
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```

use super::framing::Spec;

pub(super) const SPEC: Spec = Spec {
    open: "<tool_call>",
    prefix: "",
    array: false,
    separator: None,
    close: "</tool_call>",
};
