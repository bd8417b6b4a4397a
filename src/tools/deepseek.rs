//! DeepSeek V3 and V3.1: the calls between special tokens after any
//! content. V3 writes each call's type, its name on the same line, and the
//! arguments in a fenced JSON block:
//!
//! ```text
//! <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
//! ```json
//! {"city": "Paris"}
//! ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>
//! ```
//!
//! V3.1 (and R1-0528's successors) write the name in place of the type and
//! the JSON right after the separator:
//! `<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>`.
//! Both are read; the arguments stream as they arrive. The markers are
//! special tokens: the request must keep them in the text.

use super::Out;

const CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const CALLS_END: &str = "<｜tool▁calls▁end｜>";
const CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const CALL_END: &str = "<｜tool▁call▁end｜>";
const SEP: &str = "<｜tool▁sep｜>";
const FENCE_OPEN: &str = "```json";
const FENCE_CLOSE: &str = "\n```";
/// A header or name longer than this is not one.
const MAX_NAME: usize = 256;

#[derive(Debug)]
enum State {
    /// Content; `held` may be the start of the calls' marker.
    Text(String),
    /// Between calls: `held` may be a call's begin or the calls' end.
    Between(String),
    /// A call's header, up to the separator.
    Header(String),
    /// V3: the name, up to the end of its line.
    Name(String),
    /// V3: the fence before the arguments.
    Fence(String),
    /// The arguments; `held` may be the start of what ends them.
    Args { fenced: bool, held: String },
    /// V3: after the closing fence, before the call's end marker.
    AfterArgs(String),
}

/// One response's DeepSeek calls.
#[derive(Debug)]
pub(super) struct DeepSeek {
    state: State,
    calls: usize,
}

impl DeepSeek {
    pub(super) fn new() -> Self {
        DeepSeek {
            state: State::Text(String::new()),
            calls: 0,
        }
    }

    pub(super) fn calls(&self) -> usize {
        self.calls
    }

    /// A call's name is known: it is announced.
    fn announce(&mut self, name: &str, out: &mut Out) {
        out.call(self.calls, name.trim());
    }

    pub(super) fn feed(&mut self, c: char, out: &mut Out) {
        match &mut self.state {
            State::Text(held) => {
                held.push(c);
                if CALLS_BEGIN.starts_with(held.as_str()) {
                    if held == CALLS_BEGIN {
                        self.state = State::Between(String::new());
                    }
                    return;
                }
                let mut text = std::mem::take(held);
                if text.len() > c.len_utf8() && c == '<' {
                    text.pop();
                    held.push(c);
                }
                out.text(&text);
            }
            State::Between(held) => {
                held.push(c);
                let rest = held.trim_start();
                if rest == CALL_BEGIN {
                    self.state = State::Header(String::new());
                } else if rest == CALLS_END {
                    self.state = State::Text(String::new());
                } else if !(rest.is_empty()
                    || CALL_BEGIN.starts_with(rest)
                    || CALLS_END.starts_with(rest))
                {
                    // Not a call: content.
                    let all = std::mem::take(held);
                    self.state = State::Text(String::new());
                    out.text(&all);
                }
            }
            State::Header(header) => {
                header.push(c);
                if let Some(name) = header.strip_suffix(SEP) {
                    let name = name.to_string();
                    if name.trim() == "function" {
                        self.state = State::Name(String::new());
                    } else {
                        self.announce(&name, out);
                        self.state = State::Args {
                            fenced: false,
                            held: String::new(),
                        };
                    }
                } else if header.len() > MAX_NAME {
                    let all = format!("{CALL_BEGIN}{header}");
                    self.state = State::Text(String::new());
                    out.text(&all);
                }
            }
            State::Name(name) => {
                if c == '\n' {
                    let name = std::mem::take(name);
                    self.announce(&name, out);
                    self.state = State::Fence(String::new());
                } else if name.len() > MAX_NAME {
                    let all = format!("{CALL_BEGIN}function{SEP}{name}{c}");
                    self.state = State::Text(String::new());
                    out.text(&all);
                } else {
                    name.push(c);
                }
            }
            State::Fence(held) => {
                held.push(c);
                let rest = held.trim_start();
                if rest.starts_with(FENCE_OPEN) && c == '\n' {
                    self.state = State::Args {
                        fenced: true,
                        held: String::new(),
                    };
                } else if !(FENCE_OPEN.starts_with(rest) || rest.starts_with(FENCE_OPEN)) {
                    // No fence: the arguments start here.
                    let all = std::mem::take(held);
                    self.state = State::Args {
                        fenced: false,
                        held: String::new(),
                    };
                    for ch in all.chars() {
                        self.feed(ch, out);
                    }
                }
            }
            State::Args { fenced, held } => {
                let fenced = *fenced;
                held.push(c);
                let ends: &[&str] = if fenced {
                    &[FENCE_CLOSE, CALL_END]
                } else {
                    &[CALL_END]
                };
                if let Some(end) = ends.iter().find(|e| **e == held.as_str()) {
                    self.calls += 1;
                    self.state = if *end == CALL_END {
                        State::Between(String::new())
                    } else {
                        State::AfterArgs(String::new())
                    };
                    return;
                }
                if ends.iter().any(|e| e.starts_with(held.as_str())) {
                    return;
                }
                let mut text = std::mem::take(held);
                if text.len() > c.len_utf8() && (c == '<' || c == '\n') {
                    text.pop();
                    held.push(c);
                }
                if !text.is_empty() {
                    out.args_str(self.calls, &text);
                }
            }
            State::AfterArgs(held) => {
                held.push(c);
                let rest = held.trim_start();
                if rest == CALL_END {
                    self.state = State::Between(String::new());
                } else if !CALL_END.starts_with(rest) {
                    let all = std::mem::take(held);
                    self.state = State::Text(String::new());
                    out.text(&all);
                }
            }
        }
    }

    pub(super) fn finish(&mut self, out: &mut Out) {
        match std::mem::replace(&mut self.state, State::Text(String::new())) {
            State::Text(held) | State::Between(held) | State::AfterArgs(held) => out.text(&held),
            State::Header(header) => out.text(&format!("{CALL_BEGIN}{header}")),
            // Announced: the call counts, cut short.
            State::Args { held, .. } => {
                if !held.is_empty() {
                    out.args_str(self.calls, &held);
                }
                self.calls += 1;
            }
            State::Name(_) | State::Fence(_) => self.calls += 1,
        }
    }
}
