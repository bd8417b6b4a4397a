//! One tool call's JSON object, scanned a character at a time as the model
//! writes it: `{"name": "...", "arguments": {...}}` (`parameters` is taken
//! for `arguments`, as Llama 3 writes it; other keys are skipped). The call
//! is announced once its name has been read; the arguments' text then
//! passes on as it arrives. Arguments written as a JSON string (some models
//! quote them) are unquoted and passed on whole when they end; arguments
//! before the name wait for it.

use super::Out;

/// Where the scan stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Open,
    ExpectKey,
    Key,
    ExpectColon,
    Value,
    ExpectNext,
}

/// Which field the current value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Args,
    Other,
}

/// What one character did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The object goes on.
    More,
    /// The object ended with this character: a whole call.
    Done,
    /// Not a call after all.
    Invalid,
}

/// The scan of one JSON value, for knowing where it ends.
#[derive(Debug, Default)]
struct Scan {
    started: bool,
    depth: u32,
    in_string: bool,
    escape: bool,
}

/// What a character was to the value being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Whitespace before the value.
    Skip,
    /// Part of the value.
    In,
    /// The value's last character.
    Last,
    /// Not part of the value, which ended before it (a number, `true`...).
    After,
    /// Not JSON: the value does not parse.
    Bad,
}

impl Scan {
    fn step(&mut self, c: char) -> Part {
        if !self.started {
            if c.is_whitespace() {
                return Part::Skip;
            }
            self.started = true;
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.depth = 1,
                _ => {}
            }
            return Part::In;
        }
        if self.in_string {
            if self.escape {
                self.escape = false;
            } else if c == '\\' {
                self.escape = true;
            } else if c == '"' {
                self.in_string = false;
                if self.depth == 0 {
                    return Part::Last;
                }
            }
            return Part::In;
        }
        if self.depth > 0 {
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.depth += 1,
                '}' | ']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Part::Last;
                    }
                }
                // What JSON allows outside strings: structure, numbers,
                // true, false and null. Anything else (a format's closing
                // tag inside an unclosed object) is not JSON.
                c if c.is_whitespace()
                    || matches!(c, ',' | ':' | '-' | '+' | '.')
                    || c.is_ascii_digit()
                    || "truefalsn".contains(c)
                    || c == 'E' => {}
                _ => return Part::Bad,
            }
            return Part::In;
        }
        if c == ',' || c == '}' || c == ']' || c.is_whitespace() {
            Part::After
        } else {
            Part::In
        }
    }
}

/// One call object being read.
#[derive(Debug, Default)]
pub(super) struct CallObject {
    state: State,
    key: String,
    key_escape: bool,
    field: Option<Field>,
    scan: Scan,
    /// The current value's text, unless it is arguments being passed on.
    value: String,
    /// Arguments are being passed on as they arrive.
    streaming: bool,
    /// Arguments read before the name, or quoted, to send whole.
    args: Option<String>,
    args_sent: bool,
    /// The call's name, once read (the call is announced then).
    name: Option<String>,
}

impl CallObject {
    /// Whether the call has been announced (its name sent).
    pub(super) fn announced(&self) -> bool {
        self.name.is_some()
    }

    /// Reads `c` of call number `index`, sending what it can to `out`.
    pub(super) fn feed(&mut self, c: char, index: usize, out: &mut Out) -> Step {
        match self.state {
            State::Open => match c {
                c if c.is_whitespace() => Step::More,
                '{' => {
                    self.state = State::ExpectKey;
                    Step::More
                }
                _ => Step::Invalid,
            },
            State::ExpectKey => match c {
                c if c.is_whitespace() => Step::More,
                '"' => {
                    self.key.clear();
                    self.key.push('"');
                    self.key_escape = false;
                    self.state = State::Key;
                    Step::More
                }
                '}' => self.close(index, out),
                _ => Step::Invalid,
            },
            State::Key => {
                self.key.push(c);
                if self.key_escape {
                    self.key_escape = false;
                } else if c == '\\' {
                    self.key_escape = true;
                } else if c == '"' {
                    self.state = State::ExpectColon;
                }
                Step::More
            }
            State::ExpectColon => match c {
                c if c.is_whitespace() => Step::More,
                ':' => {
                    let key: String = serde_json::from_str(&self.key).unwrap_or_default();
                    self.field = Some(match key.as_str() {
                        "name" => Field::Name,
                        "arguments" | "parameters" => Field::Args,
                        _ => Field::Other,
                    });
                    self.scan = Scan::default();
                    self.value.clear();
                    self.streaming = false;
                    self.state = State::Value;
                    Step::More
                }
                _ => Step::Invalid,
            },
            State::Value => match self.scan.step(c) {
                Part::Skip => Step::More,
                Part::In => {
                    self.take(c, index, out);
                    Step::More
                }
                Part::Last => {
                    self.take(c, index, out);
                    self.state = State::ExpectNext;
                    self.end_value(index, out)
                }
                Part::Bad => Step::Invalid,
                Part::After => {
                    self.state = State::ExpectNext;
                    match self.end_value(index, out) {
                        Step::More => self.feed(c, index, out),
                        other => other,
                    }
                }
            },
            State::ExpectNext => match c {
                c if c.is_whitespace() => Step::More,
                ',' => {
                    self.state = State::ExpectKey;
                    Step::More
                }
                '}' => self.close(index, out),
                _ => Step::Invalid,
            },
        }
    }

    /// A character of the current value.
    fn take(&mut self, c: char, index: usize, out: &mut Out) {
        if self.field == Some(Field::Args) && self.name.is_some() && !self.args_sent {
            if self.value.is_empty() && !self.streaming && c != '"' {
                self.streaming = true;
            }
            if self.streaming {
                out.args(index, c);
                return;
            }
        }
        self.value.push(c);
    }

    /// The current value has ended.
    fn end_value(&mut self, index: usize, out: &mut Out) -> Step {
        match self.field {
            Some(Field::Name) => {
                let Ok(name) = serde_json::from_str::<String>(&self.value) else {
                    return Step::Invalid;
                };
                if name.is_empty() || self.name.is_some() {
                    return Step::Invalid;
                }
                out.call(index, &name);
                self.name = Some(name);
                if let Some(args) = self.args.take() {
                    out.args_str(index, &args);
                    self.args_sent = true;
                }
            }
            Some(Field::Args) if self.args_sent || self.args.is_some() => return Step::Invalid,
            Some(Field::Args) if self.streaming => self.args_sent = true,
            Some(Field::Args) => {
                let text = std::mem::take(&mut self.value);
                // Quoted arguments: the JSON text is the string's content.
                let text = if text.starts_with('"') {
                    match serde_json::from_str::<String>(&text) {
                        Ok(inner) => inner,
                        Err(_) => return Step::Invalid,
                    }
                } else {
                    text
                };
                if self.name.is_some() {
                    out.args_str(index, &text);
                    self.args_sent = true;
                } else {
                    self.args = Some(text);
                }
            }
            Some(Field::Other) | None => {}
        }
        self.value.clear();
        Step::More
    }

    /// The object's closing brace.
    fn close(&mut self, index: usize, out: &mut Out) -> Step {
        if self.name.is_none() {
            return Step::Invalid;
        }
        if !self.args_sent {
            out.args_str(index, "{}");
            self.args_sent = true;
        }
        Step::Done
    }
}
