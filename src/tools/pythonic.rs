//! Pythonic calls (Llama 4, Llama 3.2's lightweight models, and models
//! trained on them): the answer is a Python list of calls with keyword
//! arguments, optionally between `<|python_start|>` and `<|python_end|>`:
//!
//! ```text
//! [get_weather(city="San Francisco", unit='celsius'), get_time()]
//! ```
//!
//! The arguments are Python literals — strings in either quote, numbers,
//! `True` / `False` / `None`, lists, tuples and dicts of them — and are
//! turned into a JSON object as they stream (`{"city": "San Francisco",
//! "unit": "celsius"}`). Only an answer that opens with the list is read as
//! calls; text that is not one (no name, a broken literal) is given back as
//! content, and a call already announced keeps the arguments sent.

use super::Out;

const START: &str = "<|python_start|>";
const END: &str = "<|python_end|>";

#[derive(Debug)]
enum State {
    /// Before anything but whitespace: what may be the start marker or `[`.
    Start(String),
    /// Content: no calls.
    Text,
    /// In the list, before a call's name (or `]`).
    Name(String),
    /// In a call's parentheses, before an argument's name (or `)`).
    Key(String),
    /// After an argument's name (held), before `=`.
    Equals(String),
    /// An argument's value.
    Value(Literal),
    /// After a call's `)`: `,` or `]`.
    AfterCall,
    /// After the list: the end marker, dropped, and whitespace.
    Done(String),
}

/// A Python literal being read and written as JSON.
#[derive(Debug, Default)]
struct Literal {
    /// The closing characters of the open containers, innermost last.
    stack: Vec<char>,
    /// A string: its quote, and whether the last character was `\`.
    string: Option<(char, bool)>,
    /// A bare word (number, `True`, `False`, `None`).
    bare: String,
    /// Something of the current element has been read.
    started: bool,
}

/// One response's pythonic calls.
#[derive(Debug)]
pub(super) struct Pythonic {
    state: State,
    /// What has been read of the list, to give back if it is not calls.
    raw: String,
    calls: usize,
    /// The current call has been announced.
    announced: bool,
    /// The current call's name, until it is announced (at its first
    /// argument's `=`, or its `)`).
    pending: Option<String>,
    /// Arguments written so far in the current call.
    args: usize,
}

impl Pythonic {
    pub(super) fn new() -> Self {
        Pythonic {
            state: State::Start(String::new()),
            raw: String::new(),
            calls: 0,
            announced: false,
            pending: None,
            args: 0,
        }
    }

    /// Announces the current call, if it is not yet.
    fn announce(&mut self, out: &mut Out) {
        if let Some(name) = self.pending.take() {
            out.call(self.calls, &name);
            out.args_str(self.calls, "{");
            self.announced = true;
        }
    }

    pub(super) fn calls(&self) -> usize {
        self.calls
    }

    /// Not calls after all: what was read is content, and so is the rest.
    fn give_back(&mut self, c: char, out: &mut Out) {
        self.pending = None;
        if !self.announced {
            out.text(&self.raw);
        }
        if self.announced {
            // A call cut short: it was announced, so it counts.
            self.calls += 1;
            self.announced = false;
        }
        self.raw.clear();
        self.state = State::Text;
        out.text_char(c);
    }

    pub(super) fn feed(&mut self, c: char, out: &mut Out) {
        if !matches!(self.state, State::Text | State::Done(_)) {
            self.raw.push(c);
        }
        match &mut self.state {
            State::Text => out.text_char(c),
            State::Start(held) => {
                held.push(c);
                let rest = held.trim_start();
                if rest.is_empty() || START.starts_with(rest) {
                    return;
                }
                let after = rest.strip_prefix(START).unwrap_or(rest).trim_start();
                if after.is_empty() {
                    return;
                }
                if after == "[" {
                    self.state = State::Name(String::new());
                } else {
                    let all = std::mem::take(held);
                    self.raw.clear();
                    self.state = State::Text;
                    out.text(&all);
                }
            }
            State::Name(name) => {
                if c.is_alphanumeric() || c == '_' || c == '.' {
                    name.push(c);
                    return;
                }
                if c.is_whitespace() && name.is_empty() {
                    return;
                }
                let name = std::mem::take(name);
                if c == '(' && !name.is_empty() {
                    self.pending = Some(name);
                    self.args = 0;
                    self.state = State::Key(String::new());
                } else if c == ']' && name.is_empty() && self.calls > 0 {
                    self.state = State::Done(String::new());
                } else {
                    self.raw.pop();
                    self.give_back(c, out);
                }
            }
            State::Key(key) => {
                if c.is_alphanumeric() || c == '_' {
                    key.push(c);
                    return;
                }
                if c.is_whitespace() && key.is_empty() {
                    return;
                }
                let key = std::mem::take(key);
                if key.is_empty() {
                    if c == ')' {
                        self.announce(out);
                        self.end_call(out);
                    } else {
                        self.raw.pop();
                        self.give_back(c, out);
                    }
                    return;
                }
                if c == '=' {
                    self.announce(out);
                    self.write_key(&key, out);
                    self.state = State::Value(Literal::default());
                } else if c.is_whitespace() {
                    self.state = State::Equals(key);
                } else {
                    self.raw.pop();
                    self.give_back(c, out);
                }
            }
            State::Equals(key) => {
                if c == '=' {
                    let key = std::mem::take(key);
                    self.announce(out);
                    self.write_key(&key, out);
                    self.state = State::Value(Literal::default());
                } else if !c.is_whitespace() {
                    self.raw.pop();
                    self.give_back(c, out);
                }
            }
            State::Value(literal) => match literal.feed(c) {
                Ok(Step::More(json)) => {
                    if !json.is_empty() {
                        out.args_str(self.calls, &json)
                    }
                }
                Ok(Step::Next(json)) => {
                    out.args_str(self.calls, &json);
                    self.state = State::Key(String::new());
                }
                Ok(Step::Close(json)) => {
                    out.args_str(self.calls, &json);
                    self.end_call(out);
                }
                Err(()) => {
                    self.raw.pop();
                    self.give_back(c, out);
                }
            },
            State::AfterCall => {
                if c == ',' {
                    self.state = State::Name(String::new());
                } else if c == ']' {
                    self.state = State::Done(String::new());
                } else if !c.is_whitespace() {
                    self.raw.pop();
                    self.give_back(c, out);
                }
            }
            State::Done(held) => {
                held.push(c);
                let rest = held.trim_start();
                if rest.is_empty() || (END.starts_with(rest) && rest != END) {
                    return;
                }
                if rest == END {
                    held.clear();
                    return;
                }
                // Text after the calls.
                let rest = rest.to_string();
                self.state = State::Text;
                out.text(&rest);
            }
        }
    }

    /// `"key": ` (after a comma for every argument but the first).
    fn write_key(&mut self, key: &str, out: &mut Out) {
        let sep = if self.args > 0 { ", " } else { "" };
        self.args += 1;
        let quoted = serde_json::to_string(key).unwrap_or_default();
        out.args_str(self.calls, &format!("{sep}{quoted}: "));
    }

    fn end_call(&mut self, out: &mut Out) {
        out.args_str(self.calls, "}");
        self.calls += 1;
        self.announced = false;
        self.raw.clear();
        self.state = State::AfterCall;
    }

    pub(super) fn finish(&mut self, out: &mut Out) {
        match std::mem::replace(&mut self.state, State::Text) {
            State::Start(held) => out.text(&held),
            State::Text | State::Done(_) | State::AfterCall => {}
            _ => {
                if self.announced {
                    self.calls += 1;
                } else {
                    out.text(&self.raw);
                }
            }
        }
        self.raw.clear();
    }
}

/// What a character of a literal did.
enum Step {
    /// More JSON text of the value.
    More(String),
    /// The value ended at a `,`: the next argument follows.
    Next(String),
    /// The value ended at the call's `)`.
    Close(String),
}

impl Literal {
    fn feed(&mut self, c: char) -> Result<Step, ()> {
        if let Some((quote, escaped)) = &mut self.string {
            let mut json = String::new();
            if *escaped {
                *escaped = false;
                match c {
                    '\'' => json.push('\''),
                    '"' => json.push_str("\\\""),
                    '\\' | 'n' | 't' | 'r' | 'b' | 'f' | 'u' | '/' => {
                        json.push('\\');
                        json.push(c);
                    }
                    other => json.push(other),
                }
            } else if c == '\\' {
                *escaped = true;
            } else if c == *quote {
                self.string = None;
                json.push('"');
            } else if c == '"' {
                json.push_str("\\\"");
            } else if (c as u32) < 0x20 {
                json.push_str(&format!("\\u{:04x}", c as u32));
            } else {
                json.push(c);
            }
            return Ok(Step::More(json));
        }
        if c.is_alphanumeric() || matches!(c, '_' | '.' | '+' | '-') {
            self.bare.push(c);
            self.started = true;
            return Ok(Step::More(String::new()));
        }
        let mut json = self.flush_bare()?;
        match c {
            '\'' | '"' if !self.started => {
                self.string = Some((c, false));
                self.started = true;
                json.push('"');
            }
            '[' | '(' | '{' if !self.started => {
                self.stack.push(match c {
                    '[' => ']',
                    '(' => ')',
                    _ => '}',
                });
                json.push(if c == '{' { '{' } else { '[' });
            }
            ']' | ')' | '}' if self.stack.last() == Some(&c) => {
                self.stack.pop();
                self.started = true;
                json.push(if c == '}' { '}' } else { ']' });
            }
            ',' | ')' if self.stack.is_empty() => {
                if !self.started {
                    return Err(());
                }
                return Ok(if c == ',' {
                    Step::Next(json)
                } else {
                    Step::Close(json)
                });
            }
            ',' | ':' if self.started => {
                self.started = false;
                json.push(c);
                json.push(' ');
            }
            c if c.is_whitespace() => {}
            _ => return Err(()),
        }
        Ok(Step::More(json))
    }

    /// The bare word read, as JSON.
    fn flush_bare(&mut self) -> Result<String, ()> {
        if self.bare.is_empty() {
            return Ok(String::new());
        }
        let word = std::mem::take(&mut self.bare);
        match word.as_str() {
            "True" => Ok("true".into()),
            "False" => Ok("false".into()),
            "None" => Ok("null".into()),
            number => serde_json::from_str::<serde_json::Number>(number)
                .map(|n| n.to_string())
                .map_err(|_| ()),
        }
    }
}
