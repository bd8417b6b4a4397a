//! Calls the engine was made to write (`tool_choice` `required` or a named
//! function, enforced by a JSON-schema constraint), not in any model's own
//! format:
//!
//! - `required`: a JSON array of calls, `[{"name": …, "parameters": …}]`
//!   (read by the shared framing, with `[` and `]` as the markers);
//! - a named function: the whole output is its arguments' JSON (passed on
//!   as it streams).

use super::framing::Spec;
use super::Out;

pub(super) const ARRAY: Spec = Spec {
    open: "[",
    prefix: "",
    array: false,
    separator: Some(','),
    close: "]",
};

/// The output of a call to one named function: all of it arguments.
#[derive(Debug)]
pub(super) struct Named {
    name: String,
    announced: bool,
}

impl Named {
    pub(super) fn new(name: &str) -> Self {
        Named {
            name: name.to_string(),
            announced: false,
        }
    }

    fn announce(&mut self, out: &mut Out) {
        if !self.announced {
            self.announced = true;
            out.call(0, &self.name);
        }
    }

    pub(super) fn push(&mut self, text: &str, out: &mut Out) {
        if text.is_empty() {
            return;
        }
        self.announce(out);
        out.args_str(0, text);
    }

    pub(super) fn finish(&mut self, out: &mut Out) {
        if !self.announced {
            // Nothing written: a call with no arguments.
            self.announce(out);
            out.args_str(0, "{}");
        }
    }
}
