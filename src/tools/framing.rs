//! Where calls sit in the text: the state machine every format shares,
//! set by its [`Spec`] (the markers around and between its call objects).

use super::object::{CallObject, Step};
use super::Out;

/// How a format frames its calls.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec {
    /// The marker before calls (`<tool_call>`, `[TOOL_CALLS]`); empty when
    /// calls can only open the answer (a bare `{`).
    pub open: &'static str,
    /// A marker that may come first, before a bare `{` (`<|python_tag|>`).
    pub prefix: &'static str,
    /// The calls are a JSON array after the marker.
    pub array: bool,
    /// Between two calls (outside an array): `;`.
    pub separator: Option<char>,
    /// The marker after each call (`</tool_call>`); empty for none.
    pub close: &'static str,
}

#[derive(Debug)]
enum State {
    /// Before anything but whitespace, when calls can only open the
    /// answer: what is held so far (whitespace, part of the prefix).
    Start(String),
    /// Content. `held`: the start of what may be the open marker; `space`:
    /// whitespace held until more content follows it.
    Text { held: String, space: String },
    /// After the open marker of an array format: waiting for `[`.
    ArrayOpen,
    /// Waiting for a call object's `{`.
    Expect,
    /// Inside a call object.
    Object(CallObject),
    /// After a call object: a separator, the array's end, the close marker.
    After,
    /// Part of the close marker read.
    Close(usize),
}

/// One response's framing.
#[derive(Debug)]
pub(super) struct Framing {
    spec: Spec,
    state: State,
    /// The text of the region being read, for giving it back as content if
    /// it turns out not to be a call.
    raw: String,
    calls: usize,
    /// Calls announced that did not parse (given back as content).
    voided: usize,
}

impl Framing {
    pub(super) fn new(spec: Spec) -> Self {
        let state = if spec.open.is_empty() {
            State::Start(String::new())
        } else {
            State::Text {
                held: String::new(),
                space: String::new(),
            }
        };
        Framing {
            spec,
            state,
            raw: String::new(),
            calls: 0,
            voided: 0,
        }
    }

    /// Calls read whole (a call that did not parse is not one).
    pub(super) fn calls(&self) -> usize {
        self.calls - self.voided
    }

    /// The call being read was announced but does not parse: it is void,
    /// and what was read of it is content.
    fn void(&mut self, out: &mut Out) {
        out.void(self.calls, &self.raw);
        self.calls += 1;
        self.voided += 1;
    }

    fn back_to_text(&mut self) {
        self.state = State::Text {
            held: String::new(),
            space: String::new(),
        };
    }

    /// Not a call after all: what was read is content, and so is `c`.
    fn give_back(&mut self, c: Option<char>, out: &mut Out) {
        let announced = matches!(&self.state, State::Object(o) if o.announced());
        match announced {
            true => self.void(out),
            false => out.text(&self.raw),
        }
        self.raw.clear();
        self.back_to_text();
        if let Some(c) = c {
            out.text_char(c);
        }
    }

    pub(super) fn feed(&mut self, c: char, out: &mut Out) {
        match &mut self.state {
            State::Start(held) => {
                held.push(c);
                let rest = held.trim_start();
                if rest.is_empty()
                    || (self.spec.prefix.starts_with(rest) && rest != self.spec.prefix)
                {
                    return;
                }
                if rest == self.spec.prefix {
                    return;
                }
                let after = rest.strip_prefix(self.spec.prefix).unwrap_or(rest);
                if after.trim_start() == "{" {
                    self.raw = std::mem::take(held);
                    self.raw.pop();
                    self.state = State::Object(CallObject::default());
                    self.object(c, out);
                } else if after.trim_start().is_empty() {
                    // Whitespace after the prefix.
                } else {
                    let all = std::mem::take(held);
                    out.text(&all);
                    self.back_to_text();
                }
            }
            State::Text { held, space } => {
                if self.spec.open.is_empty() {
                    out.text_char(c);
                    return;
                }
                held.push(c);
                if self.spec.open.starts_with(held.as_str()) {
                    if held == self.spec.open {
                        // The marker: the whitespace before it goes.
                        self.raw = std::mem::take(held);
                        self.state = if self.spec.array {
                            State::ArrayOpen
                        } else {
                            State::Expect
                        };
                    }
                    return;
                }
                // Not the marker: content (the last character may start it).
                let mut text = std::mem::take(held);
                let open_first = self.spec.open.chars().next();
                if text.len() > c.len_utf8() && Some(c) == open_first {
                    text.pop();
                    held.push(c);
                }
                for t in text.chars() {
                    if t.is_whitespace() {
                        space.push(t);
                    } else {
                        out.text(space);
                        space.clear();
                        out.text_char(t);
                    }
                }
            }
            State::ArrayOpen => {
                self.raw.push(c);
                if c == '[' {
                    self.state = State::Expect;
                } else if !c.is_whitespace() {
                    self.raw.pop();
                    self.give_back(Some(c), out);
                }
            }
            State::Expect => {
                if c.is_whitespace() {
                    self.raw.push(c);
                } else if c == '{' {
                    self.state = State::Object(CallObject::default());
                    self.object(c, out);
                } else {
                    self.give_back(Some(c), out);
                }
            }
            State::Object(_) => self.object(c, out),
            State::After => {
                if c.is_whitespace() {
                    return;
                }
                if self.spec.array && c == ',' {
                    self.state = State::Expect;
                } else if self.spec.array && c == ']' {
                    self.back_to_text();
                } else if self.spec.separator == Some(c) {
                    self.state = State::Expect;
                } else if !self.spec.close.is_empty() && self.spec.close.starts_with(c) {
                    self.state = State::Close(c.len_utf8());
                } else {
                    self.back_to_text();
                    self.feed(c, out);
                }
            }
            State::Close(matched) => {
                let rest = &self.spec.close[*matched..];
                if rest.starts_with(c) {
                    *matched += c.len_utf8();
                    if *matched == self.spec.close.len() {
                        self.back_to_text();
                    }
                } else {
                    // Not the close marker: content.
                    let read = self.spec.close[..*matched].to_string();
                    self.back_to_text();
                    out.text(&read);
                    self.feed(c, out);
                }
            }
        }
    }

    /// A character of a call object.
    fn object(&mut self, c: char, out: &mut Out) {
        let State::Object(object) = &mut self.state else {
            return;
        };
        // Kept until the call is read whole: a call that turns out not to
        // parse is given back as content.
        self.raw.push(c);
        match object.feed(c, self.calls, out) {
            Step::More => {}
            Step::Done => {
                self.calls += 1;
                self.raw.clear();
                self.state = State::After;
            }
            Step::Invalid => {
                self.raw.pop();
                self.give_back(Some(c), out);
            }
        }
    }

    pub(super) fn finish(&mut self, out: &mut Out) {
        match std::mem::replace(&mut self.state, State::After) {
            State::Start(held) => out.text(&held),
            State::Text { held, space } => {
                if self.calls == 0 {
                    out.text(&space);
                }
                out.text(&held);
            }
            // A call cut short: void if announced, content either way.
            State::Object(object) => match object.announced() {
                true => self.void(out),
                false => out.text(&self.raw),
            },
            State::ArrayOpen | State::Expect => out.text(&self.raw),
            State::After | State::Close(_) => {}
        }
        self.raw.clear();
    }
}
