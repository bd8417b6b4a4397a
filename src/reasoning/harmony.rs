//! gpt-oss's harmony format: the output is a sequence of messages, each a
//! header and a body between special tokens, and the channel in the header
//! says what the body is —
//!
//! ```text
//! <|channel|>analysis<|message|>The user wants the weather.<|end|>
//! <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>
//! <|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>
//! ```
//!
//! `analysis` is the thought; `final` (and `commentary` without a
//! recipient) is the answer; a message addressed `to=functions.NAME` is a
//! call of NAME with the body as its arguments (when the request offers
//! tools; otherwise its body is answer text). The prompt ends with
//! `<|start|>assistant`, so the output opens with `<|channel|>`. An output
//! that does not open with a header (special tokens left out of the text)
//! is all answer. The markers are special tokens: the request must keep
//! them in the text. Read a character at a time, so any split of the text
//! reads the same.

/// One piece of harmony output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The model's thought (the `analysis` channel).
    Reasoning(String),
    /// The answer.
    Text(String),
    /// A call starts: its number in the response, from 0, and the function.
    Call {
        /// Its number.
        index: usize,
        /// The function's name.
        name: String,
    },
    /// More of a call's arguments.
    Args {
        /// The call's number.
        index: usize,
        /// JSON text, to be appended.
        text: String,
    },
}

const CHANNEL: &str = "<|channel|>";
const START: &str = "<|start|>";
const MESSAGE: &str = "<|message|>";
/// What ends a body: the message's end, a call, the turn's end, or (a
/// model that leaves out the end) the next message.
const ENDS: [&str; 5] = ["<|end|>", "<|call|>", "<|return|>", START, CHANNEL];
/// A header longer than this is not one.
const MAX_HEADER: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reasoning,
    Text,
    Call(usize),
}

#[derive(Debug)]
enum State {
    /// Before the first header: what may be its marker.
    Start(String),
    /// No headers: all of it is answer.
    Plain,
    /// A header being read, from its marker.
    Header(String),
    /// A body; `held` may be the start of an end marker.
    Body { kind: Kind, held: String },
    /// Between messages: what may be the next marker.
    Between(String),
}

/// Reads one response in the harmony format as it streams.
#[derive(Debug)]
pub struct HarmonyParser {
    state: State,
    /// Calls are read (the request offers tools).
    tools: bool,
    calls: usize,
    out: Vec<Piece>,
}

impl HarmonyParser {
    /// A parser for one response; `tools`: whether the request offers any.
    pub fn new(tools: bool) -> Self {
        HarmonyParser {
            state: State::Start(String::new()),
            tools,
            calls: 0,
            out: Vec::new(),
        }
    }

    /// Calls announced so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// The pieces `text`, the next of the response, makes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        for c in text.chars() {
            self.feed(c);
        }
        std::mem::take(&mut self.out)
    }

    /// What is held back: the response is complete.
    pub fn finish(&mut self) -> Vec<Piece> {
        match std::mem::replace(&mut self.state, State::Plain) {
            State::Start(held) | State::Header(held) | State::Between(held) => self.text(&held),
            State::Body { kind, held } => self.body(kind, &held),
            State::Plain => {}
        }
        std::mem::take(&mut self.out)
    }

    fn feed(&mut self, c: char) {
        match &mut self.state {
            State::Plain => self.text(&c.to_string()),
            State::Start(held) | State::Between(held) => {
                held.push(c);
                let rest = held.trim_start();
                if rest.is_empty() {
                    return;
                }
                if rest == CHANNEL || rest == START {
                    let marker = rest.to_string();
                    self.state = State::Header(marker);
                } else if !(CHANNEL.starts_with(rest) || START.starts_with(rest)) {
                    let all = std::mem::take(held);
                    self.state = State::Plain;
                    self.text(&all);
                }
            }
            State::Header(header) => {
                header.push(c);
                if header.ends_with(MESSAGE) {
                    let header = std::mem::take(header);
                    let kind = self.kind(&header);
                    self.state = State::Body {
                        kind,
                        held: String::new(),
                    };
                } else if header.len() > MAX_HEADER {
                    let all = std::mem::take(header);
                    self.state = State::Plain;
                    self.text(&all);
                }
            }
            State::Body { kind, held } => {
                let kind = *kind;
                held.push(c);
                if let Some(end) = ENDS.iter().find(|e| **e == held.as_str()) {
                    self.state = match *end {
                        START | CHANNEL => State::Header(end.to_string()),
                        _ => State::Between(String::new()),
                    };
                    return;
                }
                if ENDS.iter().any(|e| e.starts_with(held.as_str())) {
                    return;
                }
                // Not an end: body (the last character may start one).
                let mut text = std::mem::take(held);
                if text.len() > 1 && c == '<' {
                    text.pop();
                    held.push(c);
                }
                self.body(kind, &text);
            }
        }
    }

    /// What a header says its body is.
    fn kind(&mut self, header: &str) -> Kind {
        let recipient = header.split_once("to=").map(|(_, rest)| {
            rest.split(|c: char| c.is_whitespace() || c == '<')
                .next()
                .unwrap_or_default()
        });
        let function = recipient
            .and_then(|r| r.strip_prefix("functions."))
            .filter(|n| !n.is_empty());
        if let (Some(name), true) = (function, self.tools) {
            let index = self.calls;
            self.calls += 1;
            self.out.push(Piece::Call {
                index,
                name: name.to_string(),
            });
            return Kind::Call(index);
        }
        let channel = header
            .rsplit_once(CHANNEL)
            .map(|(_, rest)| {
                rest.split(|c: char| !c.is_ascii_alphanumeric())
                    .next()
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        match channel {
            "analysis" => Kind::Reasoning,
            _ => Kind::Text,
        }
    }

    fn body(&mut self, kind: Kind, text: &str) {
        if text.is_empty() {
            return;
        }
        match (kind, self.out.last_mut()) {
            (Kind::Reasoning, Some(Piece::Reasoning(r))) => r.push_str(text),
            (Kind::Reasoning, _) => self.out.push(Piece::Reasoning(text.to_string())),
            (Kind::Text, _) => self.text(text),
            (Kind::Call(index), Some(Piece::Args { index: i, text: t })) if *i == index => {
                t.push_str(text)
            }
            (Kind::Call(index), _) => self.out.push(Piece::Args {
                index,
                text: text.to_string(),
            }),
        }
    }

    fn text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        match self.out.last_mut() {
            Some(Piece::Text(t)) => t.push_str(text),
            _ => self.out.push(Piece::Text(text.to_string())),
        }
    }
}
