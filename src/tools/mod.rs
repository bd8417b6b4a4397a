//! Tool calls in a model's output: each model family writes its calls in a
//! format of its own, and this module reads them out of the text as it
//! streams, one file per format behind one parser ([`ToolParser`]).
//!
//! A parser takes the detokenized text piece by piece and gives back
//! [`Piece`]s: text that is the answer's content, a call's start (its
//! index and name) and its arguments' JSON text in fragments, as they
//! arrive. It reads a character at a time, so however the text is split
//! the pieces join to the same result. Text that looks like a call but is
//! not one (no name, a broken object) is given back as content; a call
//! already announced keeps the arguments sent, and what follows its broken
//! object is content.
//!
//! Formats ([`ToolFormat`]), chosen per model in the config (`[tool_parsers]`)
//! or detected from its chat template:
//! - `hermes`: `<tool_call>{"name": …, "arguments": …}</tool_call>`, repeated
//!   (Qwen 2.5 and 3, Hermes 2 and 3, and the many models trained on them);
//! - `llama3_json`: the whole answer a JSON object `{"name": …,
//!   "parameters": …}` (or several, split by `;`), optionally after
//!   `<|python_tag|>` (Llama 3.1, 3.2, 3.3);
//! - `mistral`: `[TOOL_CALLS]` then a JSON array of calls (Mistral 7B v0.3,
//!   Mixtral 8x22B, Mistral Small and Nemo);
//! - `pythonic`: a Python list of calls with keyword arguments, the
//!   arguments' literals turned into JSON as they stream (Llama 4, Llama
//!   3.2 1B/3B);
//! - `deepseek_v3`: calls between DeepSeek's special tokens, V3's fenced
//!   JSON or V3.1's inline JSON (DeepSeek V3, V3.1, R1-0528).
//!
//! Output the engine was constrained to write as calls (`tool_choice`
//! `required` or a named function) is read by [`ToolParser::array`] and
//! [`ToolParser::named`] (`forced`).

mod deepseek;
mod forced;
mod framing;
mod hermes;
mod llama3;
mod mistral;
mod object;
mod pythonic;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

/// One piece of parsed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The answer's content.
    Text(String),
    /// A call starts.
    Call {
        /// Its number in the response, from 0.
        index: usize,
        /// The function's name.
        name: String,
    },
    /// More of a call's arguments.
    Args {
        /// The call's number.
        index: usize,
        /// JSON text, to be appended to what came before.
        text: String,
    },
    /// A call announced (its name read) turned out not to parse: it is no
    /// call, and its text is content. Its number is not used again.
    Void {
        /// The call's number.
        index: usize,
        /// What the model wrote of it, to be given as content.
        text: String,
    },
}

/// A format tool calls are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolFormat {
    /// `<tool_call>` JSON `</tool_call>`: Qwen 2.5 / 3, Hermes.
    Hermes,
    /// A bare JSON object with `parameters`: Llama 3.x.
    Llama3Json,
    /// `[TOOL_CALLS]` and a JSON array: Mistral.
    Mistral,
    /// A Python list of calls with keyword arguments: Llama 4.
    Pythonic,
    /// Calls between DeepSeek's special tokens: DeepSeek V3 and V3.1.
    DeepSeek,
}

impl ToolFormat {
    /// Every format, in the order detection tries them.
    pub const ALL: [ToolFormat; 5] = [
        ToolFormat::Hermes,
        ToolFormat::DeepSeek,
        ToolFormat::Mistral,
        ToolFormat::Pythonic,
        ToolFormat::Llama3Json,
    ];

    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::Llama3Json => "llama3_json",
            ToolFormat::Mistral => "mistral",
            ToolFormat::Pythonic => "pythonic",
            ToolFormat::DeepSeek => "deepseek_v3",
        }
    }

    /// Its markers are special tokens, which the text must keep.
    pub fn keeps_special_tokens(self) -> bool {
        matches!(self, ToolFormat::Mistral | ToolFormat::DeepSeek)
    }

    /// The format a chat template writes tool calls in, if it shows one:
    /// the markers each family's templates render calls with.
    pub fn detect(template: &str) -> Option<ToolFormat> {
        if template.contains("<tool_call>") {
            Some(ToolFormat::Hermes)
        } else if template.contains("tool▁calls▁begin") {
            Some(ToolFormat::DeepSeek)
        } else if template.contains("[TOOL_CALLS]") {
            Some(ToolFormat::Mistral)
        } else if template.contains("<|python_start|>") || template.contains("[func_name1(") {
            Some(ToolFormat::Pythonic)
        } else if template.contains("<|python_tag|>") || template.contains("ipython") {
            Some(ToolFormat::Llama3Json)
        } else {
            None
        }
    }

    /// The frame of a call of `name`, for the formats whose call is one
    /// JSON object of arguments between fixed text: Hermes, Llama 3 JSON
    /// and Mistral (a one-call list). `None` for pythonic (Python
    /// literals, not JSON) and DeepSeek (V3 fences the object, V3.1 does
    /// not: one frame would hold either model to the other's spelling).
    pub fn call_frame(self, name: &str) -> Option<CallFrame> {
        let name = serde_json::Value::from(name).to_string();
        match self {
            ToolFormat::Hermes => Some(CallFrame {
                begin: format!("<tool_call>\n{{\"name\": {name}, \"arguments\": "),
                end: "}\n</tool_call>",
                trigger: "<tool_call>",
            }),
            ToolFormat::Llama3Json => Some(CallFrame {
                begin: format!("{{\"name\": {name}, \"parameters\": "),
                end: "}",
                trigger: "{\"name\": ",
            }),
            ToolFormat::Mistral => Some(CallFrame {
                begin: format!("[TOOL_CALLS] [{{\"name\": {name}, \"arguments\": "),
                end: "}]",
                trigger: "[TOOL_CALLS]",
            }),
            ToolFormat::Pythonic | ToolFormat::DeepSeek => None,
        }
    }

    /// The engine's structural tag holding calls of `tools` (each a
    /// function's name and its parameters' schema) to this format's frame,
    /// or `None` when the format has no frame or there are no tools.
    pub fn structural_tag(self, tools: &[(&str, serde_json::Value)]) -> Option<String> {
        let mut triggers = Vec::new();
        let mut structures = Vec::new();
        for (name, schema) in tools {
            let frame = self.call_frame(name)?;
            if !triggers.contains(&frame.trigger) {
                triggers.push(frame.trigger);
            }
            structures.push(serde_json::json!({
                "begin": frame.begin, "schema": schema, "end": frame.end,
            }));
        }
        if structures.is_empty() {
            return None;
        }
        Some(
            serde_json::json!({
                "type": "structural_tag", "structures": structures, "triggers": triggers,
            })
            .to_string(),
        )
    }
}

/// How a call of one function is written in a format: the text before its
/// arguments' JSON object, the text after it, and the text that starts any
/// call. An engine's structural tag (xgrammar's `begin`, `schema`, `end`
/// and `triggers`, which SGLang, vLLM and TensorRT-LLM take) leaves the
/// output free until a trigger, then holds a call to its frame and its
/// arguments to the function's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFrame {
    /// Before the arguments' object.
    pub begin: String,
    /// After it.
    pub end: &'static str,
    /// What every call's `begin` starts with.
    pub trigger: &'static str,
}

impl fmt::Display for ToolFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ToolFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ToolFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown tool-call format {s:?}: use {}",
                    ToolFormat::ALL.map(ToolFormat::name).join(", ")
                )
            })
    }
}

/// Collects pieces, joining neighbours of the same kind.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pieces: Vec<Piece>,
}

impl Out {
    fn text(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        match self.pieces.last_mut() {
            Some(Piece::Text(t)) => t.push_str(s),
            _ => self.pieces.push(Piece::Text(s.to_string())),
        }
    }

    fn text_char(&mut self, c: char) {
        match self.pieces.last_mut() {
            Some(Piece::Text(t)) => t.push(c),
            _ => self.pieces.push(Piece::Text(c.to_string())),
        }
    }

    fn void(&mut self, index: usize, text: &str) {
        self.pieces.push(Piece::Void {
            index,
            text: text.to_string(),
        });
    }

    fn call(&mut self, index: usize, name: &str) {
        self.pieces.push(Piece::Call {
            index,
            name: name.to_string(),
        });
    }

    fn args(&mut self, index: usize, c: char) {
        match self.pieces.last_mut() {
            Some(Piece::Args { index: i, text }) if *i == index => text.push(c),
            _ => self.pieces.push(Piece::Args {
                index,
                text: c.to_string(),
            }),
        }
    }

    fn args_str(&mut self, index: usize, s: &str) {
        match self.pieces.last_mut() {
            Some(Piece::Args { index: i, text }) if *i == index => text.push_str(s),
            _ => self.pieces.push(Piece::Args {
                index,
                text: s.to_string(),
            }),
        }
    }
}

/// Reads one response's tool calls as its text streams.
#[derive(Debug)]
pub struct ToolParser {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Framed(framing::Framing),
    Named(forced::Named),
    Pythonic(pythonic::Pythonic),
    DeepSeek(deepseek::DeepSeek),
}

impl ToolParser {
    /// A parser for one response in `format`.
    pub fn new(format: ToolFormat) -> Self {
        let spec = match format {
            ToolFormat::Hermes => hermes::SPEC,
            ToolFormat::Llama3Json => llama3::SPEC,
            ToolFormat::Mistral => mistral::SPEC,
            ToolFormat::Pythonic => {
                return ToolParser {
                    inner: Inner::Pythonic(pythonic::Pythonic::new()),
                }
            }
            ToolFormat::DeepSeek => {
                return ToolParser {
                    inner: Inner::DeepSeek(deepseek::DeepSeek::new()),
                }
            }
        };
        ToolParser {
            inner: Inner::Framed(framing::Framing::new(spec)),
        }
    }

    /// A parser for output constrained to a JSON array of calls
    /// (`tool_choice: required`).
    pub fn array() -> Self {
        ToolParser {
            inner: Inner::Framed(framing::Framing::new(forced::ARRAY)),
        }
    }

    /// A parser for output constrained to the arguments of `name` (a named
    /// `tool_choice`).
    pub fn named(name: &str) -> Self {
        ToolParser {
            inner: Inner::Named(forced::Named::new(name)),
        }
    }

    /// The pieces `text`, the next of the response, makes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Out::default();
        match &mut self.inner {
            Inner::Framed(framing) => {
                for c in text.chars() {
                    framing.feed(c, &mut out);
                }
            }
            Inner::Named(named) => named.push(text, &mut out),
            Inner::Pythonic(p) => {
                for c in text.chars() {
                    p.feed(c, &mut out);
                }
            }
            Inner::DeepSeek(d) => {
                for c in text.chars() {
                    d.feed(c, &mut out);
                }
            }
        }
        out.pieces
    }

    /// The pieces held back for the end: the response is complete.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Out::default();
        match &mut self.inner {
            Inner::Framed(framing) => framing.finish(&mut out),
            Inner::Named(named) => named.finish(&mut out),
            Inner::Pythonic(p) => p.finish(&mut out),
            Inner::DeepSeek(d) => d.finish(&mut out),
        }
        out.pieces
    }

    /// Calls announced so far.
    pub fn calls(&self) -> usize {
        match &self.inner {
            Inner::Framed(framing) => framing.calls(),
            Inner::Named(_) => 1,
            Inner::Pythonic(p) => p.calls(),
            Inner::DeepSeek(d) => d.calls(),
        }
    }
}
