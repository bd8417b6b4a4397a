//! A model's reasoning in its output: the thought a reasoning model writes
//! before its answer, between tags of its family, split out of the text as
//! it streams so the answer's content and its reasoning reach the client
//! apart (OpenAI-style `reasoning_content`).
//!
//! Formats ([`ReasoningFormat`]), chosen per model in the config
//! (`[reasoning_parsers]`) or detected from its chat template:
//! - `qwen3`: `<think>` … `</think>` (Qwen3, QwQ, GLM-4.5 and later, and
//!   DeepSeek V3.1 in thinking mode);
//! - `deepseek-r1`: the same tags, and the answer starts inside the thought
//!   even when the opening tag is not written (DeepSeek R1 and its
//!   distillations, whose templates or weights leave it out);
//! - `kimi`: `◁think▷` … `◁/think▷` (Kimi VL and K1.5 thinking models);
//! - `gpt-oss`: harmony's channels (gpt-oss), which carry the model's tool
//!   calls too and are read by their own parser ([`harmony`]).
//!
//! Whether the output starts inside the thought is read from the rendered
//! prompt: a template that opens the thought itself (ends the prompt with
//! the opening tag, as DeepSeek R1's and Qwen3 thinking templates do) has
//! the model write only the thought's end; one that closes it (Qwen3 with
//! `enable_thinking: false` writes an empty thought) has no thought to
//! split. Otherwise an output that opens with the tag starts one.
//!
//! The parser reads a character at a time, so however the text is split
//! the pieces join to the same result. Whitespace at the start and end of
//! the thought, and between the thought and the answer, is dropped.

pub mod harmony;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

/// A family's reasoning tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasoningFormat {
    /// `<think>` … `</think>`, started by the tag (or by the template).
    Qwen3,
    /// `<think>` … `</think>`, started whether or not the tag is written.
    DeepSeekR1,
    /// `◁think▷` … `◁/think▷`.
    Kimi,
    /// Harmony's channels (gpt-oss): read by [`harmony::HarmonyParser`].
    Harmony,
}

impl ReasoningFormat {
    /// Every format, in the order detection tries them.
    pub const ALL: [ReasoningFormat; 4] = [
        ReasoningFormat::Harmony,
        ReasoningFormat::Kimi,
        ReasoningFormat::Qwen3,
        ReasoningFormat::DeepSeekR1,
    ];

    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            ReasoningFormat::Qwen3 => "qwen3",
            ReasoningFormat::DeepSeekR1 => "deepseek-r1",
            ReasoningFormat::Kimi => "kimi",
            ReasoningFormat::Harmony => "gpt-oss",
        }
    }

    fn tags(self) -> (&'static str, &'static str) {
        match self {
            ReasoningFormat::Qwen3 | ReasoningFormat::DeepSeekR1 => ("<think>", "</think>"),
            ReasoningFormat::Kimi => ("◁think▷", "◁/think▷"),
            // Harmony's thought, as tags (its own parser reads the rest).
            ReasoningFormat::Harmony => ("<|channel|>analysis<|message|>", "<|end|>"),
        }
    }

    /// The format a chat template's reasoning comes in, if it shows one:
    /// the closing tag the template strips from earlier turns or writes.
    pub fn detect(template: &str) -> Option<ReasoningFormat> {
        if template.contains("<|channel|>") {
            Some(ReasoningFormat::Harmony)
        } else if template.contains("◁/think▷") {
            Some(ReasoningFormat::Kimi)
        } else if template.contains("</think>") {
            Some(ReasoningFormat::Qwen3)
        } else {
            None
        }
    }
}

impl fmt::Display for ReasoningFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReasoningFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ReasoningFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown reasoning format {s:?}: use {}",
                    ReasoningFormat::ALL.map(ReasoningFormat::name).join(", ")
                )
            })
    }
}

/// One piece of split output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The model's thought.
    Reasoning(String),
    /// The answer.
    Text(String),
}

#[derive(Debug)]
enum State {
    /// Before anything but whitespace: what may be the opening tag.
    Before(String),
    /// In the thought: `held` may be the start of the closing tag, `space`
    /// is whitespace kept until more of the thought follows.
    Inside {
        held: String,
        space: String,
        started: bool,
    },
    /// After the closing tag, before the answer's first character.
    Between,
    /// The answer.
    Answer,
}

/// Splits one response's reasoning from its answer as the text streams.
#[derive(Debug)]
pub struct ReasoningParser {
    open: &'static str,
    close: &'static str,
    state: State,
}

impl ReasoningParser {
    /// A parser for one response in `format` to `prompt` (the rendered
    /// prompt, whose end says whether the output starts in the thought).
    pub fn new(format: ReasoningFormat, prompt: &str) -> Self {
        let (open, close) = format.tags();
        let end = prompt.trim_end();
        let inside = if end.ends_with(close) {
            false
        } else {
            end.ends_with(open) || format == ReasoningFormat::DeepSeekR1
        };
        ReasoningParser {
            open,
            close,
            state: if inside {
                State::Inside {
                    held: String::new(),
                    space: String::new(),
                    started: false,
                }
            } else {
                State::Before(String::new())
            },
        }
    }

    /// The pieces `text`, the next of the response, makes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        if let State::Answer = self.state {
            text_to(&mut out, text);
            return out;
        }
        for c in text.chars() {
            self.feed(c, &mut out);
        }
        out
    }

    /// What is held back: the response is complete.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::Answer) {
            State::Before(held) => text_to(&mut out, &held),
            State::Inside {
                held,
                space,
                started,
            } => {
                if started && !held.is_empty() {
                    reasoning_to(&mut out, &space);
                }
                reasoning_to(&mut out, &held);
            }
            State::Between | State::Answer => {}
        }
        out
    }

    fn feed(&mut self, c: char, out: &mut Vec<Piece>) {
        match &mut self.state {
            State::Before(held) => {
                held.push(c);
                let rest = held.trim_start();
                if rest.is_empty() || (self.open.starts_with(rest) && rest != self.open) {
                    return;
                }
                if rest == self.open {
                    self.state = State::Inside {
                        held: String::new(),
                        space: String::new(),
                        started: false,
                    };
                } else {
                    text_to(out, held);
                    self.state = State::Answer;
                }
            }
            State::Inside {
                held,
                space,
                started,
            } => {
                held.push(c);
                if self.close.starts_with(held.as_str()) {
                    if held == self.close {
                        self.state = State::Between;
                    }
                    return;
                }
                // Not the closing tag: thought (the last character may
                // start the tag).
                let mut text = std::mem::take(held);
                if text.len() > c.len_utf8() && self.close.starts_with(c) {
                    text.pop();
                    held.push(c);
                }
                for t in text.chars() {
                    if t.is_whitespace() {
                        if *started {
                            space.push(t);
                        }
                    } else {
                        reasoning_to(out, space);
                        space.clear();
                        reasoning_char(out, t);
                        *started = true;
                    }
                }
            }
            State::Between => {
                if !c.is_whitespace() {
                    text_char(out, c);
                    self.state = State::Answer;
                }
            }
            State::Answer => text_char(out, c),
        }
    }
}

fn text_to(out: &mut Vec<Piece>, s: &str) {
    if s.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(Piece::Text(t)) => t.push_str(s),
        _ => out.push(Piece::Text(s.to_string())),
    }
}

fn text_char(out: &mut Vec<Piece>, c: char) {
    match out.last_mut() {
        Some(Piece::Text(t)) => t.push(c),
        _ => out.push(Piece::Text(c.to_string())),
    }
}

fn reasoning_to(out: &mut Vec<Piece>, s: &str) {
    if s.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(Piece::Reasoning(t)) => t.push_str(s),
        _ => out.push(Piece::Reasoning(s.to_string())),
    }
}

fn reasoning_char(out: &mut Vec<Piece>, c: char) {
    match out.last_mut() {
        Some(Piece::Reasoning(t)) => t.push(c),
        _ => out.push(Piece::Reasoning(c.to_string())),
    }
}
