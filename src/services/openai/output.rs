//! What the OpenAI front sends back: the engine's stream as OpenAI's
//! objects, whole (`complete`) or as server-sent events (`sse`). The text
//! passes through the model's reasoning parser (the thought split out),
//! then, with tools, through its tool-call parser.

use super::*;
use crate::reasoning::harmony::{self, HarmonyParser};
use crate::reasoning::{self, ReasoningParser};
use crate::tools;
use crate::tools::ToolParser;

use super::logprobs;

/// What the response says about itself.
#[derive(Debug)]
pub(super) struct Output {
    pub(super) endpoint: Endpoint,
    pub(super) id: String,
    pub(super) model: String,
    pub(super) created: u64,
    pub(super) include_usage: bool,
    /// The model's thought is split out (`reasoning_content`).
    pub(super) reasoning: bool,
    /// The parsers of this response's text.
    pub(super) parsers: Parsers,
    /// Which choice this is (`n` > 1: each is a call of its own).
    pub(super) choice: usize,
}

/// The parsers one response's text passes through.
#[derive(Debug, Default)]
pub(super) struct Parsers {
    /// Tool calls, when the request offers tools.
    pub(super) tools: Option<ToolParser>,
    /// The thought, for a reasoning model.
    pub(super) reasoning: Option<ReasoningParser>,
    /// Thought, answer and calls, for a model writing harmony (gpt-oss);
    /// it takes the place of the other two.
    pub(super) harmony: Option<HarmonyParser>,
    /// The thought stays in the answer (`separate_reasoning: false`).
    pub(super) fold_thought: bool,
    /// Log probabilities asked for: the tokenizer that names their tokens.
    pub(super) logprobs: Option<Arc<ModelTokenizer>>,
    /// Text the prompt must end with for these parsers: the start of the
    /// assistant's message that a constrained call is written in (harmony's
    /// header, which a JSON constraint would not let the model write).
    pub(super) prefill: Option<String>,
}

/// One translated `switchyard.v1` message's content.
pub(super) enum Piece {
    Text(String),
    /// More of the model's thought.
    Reasoning(String),
    /// A tool call starts: its index and function name.
    Call(usize, String),
    /// More of a tool call's arguments.
    Args(usize, String),
    /// A tool call announced that did not parse: no call; its text is
    /// content (a stream has sent the call's start: the text follows as
    /// content, and the finish reason is not `tool_calls` for it).
    Void(usize, String),
    /// The next tokens' log probabilities.
    Logprobs(Vec<logprobs::Entry>),
    Done {
        finish_reason: String,
        usage: Usage,
        /// The stop string that ended the output (empty: none did).
        matched_stop: String,
    },
}

/// A response's token counts, as the engine gave them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Usage {
    pub(super) prompt: u32,
    pub(super) completion: u32,
    /// Prompt tokens found in the engine's prefix cache.
    pub(super) cached: u32,
}

/// Reads the translated stream into pieces.
pub(super) struct Reader {
    frames: Deframer,
    parsers: Parsers,
}

impl Reader {
    pub(super) fn new(parsers: Parsers) -> Self {
        Reader {
            frames: Deframer::default(),
            parsers,
        }
    }

    /// `text` through the parsers, or `end` of it (`finish`).
    fn parse(&mut self, text: &str, end: bool, out: &mut Vec<Piece>) {
        if let Some(h) = &mut self.parsers.harmony {
            let pieces = if end { h.finish() } else { h.push(text) };
            let fold = self.parsers.fold_thought;
            out.extend(pieces.into_iter().map(|p| match p {
                harmony::Piece::Reasoning(r) if fold => Piece::Text(r),
                harmony::Piece::Reasoning(r) => Piece::Reasoning(r),
                harmony::Piece::Text(t) => Piece::Text(t),
                harmony::Piece::Call { index, name } => Piece::Call(index, name),
                harmony::Piece::Args { index, text } => Piece::Args(index, text),
            }));
            return;
        }
        let split = match &mut self.parsers.reasoning {
            Some(r) if end => r.finish(),
            Some(r) => r.push(text),
            None => Vec::new(),
        };
        if self.parsers.reasoning.is_none() && !end {
            // All of it is answer (no copy on the way).
            self.answer(text, out);
        }
        for p in split {
            match p {
                reasoning::Piece::Reasoning(r) => out.push(Piece::Reasoning(r)),
                reasoning::Piece::Text(t) => self.answer(&t, out),
            }
        }
        if end {
            if let Some(parser) = &mut self.parsers.tools {
                out.extend(parser.finish().into_iter().map(piece));
            }
        }
    }

    /// Answer text, through the tool-call parser when there is one.
    fn answer(&mut self, text: &str, out: &mut Vec<Piece>) {
        match &mut self.parsers.tools {
            Some(parser) => out.extend(parser.push(text).into_iter().map(piece)),
            None => out.push(Piece::Text(text.to_string())),
        }
    }

    /// The pieces of the messages in `bytes`.
    pub(super) fn pieces(&mut self, bytes: &[u8]) -> Vec<Piece> {
        self.frames.push(bytes);
        let mut out = Vec::new();
        while let Ok(Some(message)) = self.frames.next_message() {
            match pb::GenerateResponse::decode(message).map(|m| m.response) {
                Ok(Some(pb::generate_response::Response::Chunk(c))) => {
                    if let (Some(l), Some(tokenizer)) = (&c.logprobs, &self.parsers.logprobs) {
                        out.push(Piece::Logprobs(logprobs::entries(tokenizer, l)));
                    }
                    if c.text.is_empty() {
                        continue;
                    }
                    if self.parsers.tools.is_none()
                        && self.parsers.reasoning.is_none()
                        && self.parsers.harmony.is_none()
                    {
                        out.push(Piece::Text(c.text));
                    } else {
                        self.parse(&c.text, false, &mut out);
                    }
                }
                Ok(Some(pb::generate_response::Response::Complete(c))) => {
                    let mut finish_reason = c.finish_reason;
                    self.parse("", true, &mut out);
                    // A model that stopped after calling tools.
                    let called = self.parsers.tools.as_ref().is_some_and(|p| p.calls() > 0)
                        || self.parsers.harmony.as_ref().is_some_and(|p| p.calls() > 0);
                    if called && matches!(finish_reason.as_str(), "" | "stop") {
                        finish_reason = "tool_calls".into();
                    }
                    out.push(Piece::Done {
                        finish_reason,
                        usage: Usage {
                            prompt: c.prompt_tokens,
                            completion: c.completion_tokens,
                            cached: c.cached_tokens,
                        },
                        matched_stop: c.matched_stop,
                    })
                }
                _ => {}
            }
        }
        out
    }
}

fn piece(p: tools::Piece) -> Piece {
    match p {
        tools::Piece::Text(t) => Piece::Text(t),
        tools::Piece::Call { index, name } => Piece::Call(index, name),
        tools::Piece::Args { index, text } => Piece::Args(index, text),
        tools::Piece::Void { index, text } => Piece::Void(index, text),
    }
}

/// OpenAI's finish reasons: the engine's, with `abort` kept as is.
fn finish(reason: &str) -> &str {
    match reason {
        "" => "stop",
        other => other,
    }
}

/// SGLang's `meta_info.finish_reason`: its type, and the stop string that
/// ended the output as `matched`.
fn generate_finish(reason: &str, matched_stop: &str) -> Value {
    match matched_stop {
        "" => json!({"type": finish(reason)}),
        matched => json!({"type": finish(reason), "matched": matched}),
    }
}

impl Output {
    pub(super) fn usage(&self, u: &Usage) -> Value {
        json!({"prompt_tokens": u.prompt, "completion_tokens": u.completion, "total_tokens": u.prompt + u.completion,
               "prompt_tokens_details": {"cached_tokens": u.cached}})
    }

    /// Call `index`'s id.
    fn call_id(&self, index: usize) -> String {
        match self.choice {
            0 => format!("call_{index}_{}", self.id),
            choice => format!("call_{choice}_{index}_{}", self.id),
        }
    }

    /// One streamed event for `piece` (`text` so far for `/generate`).
    pub(super) fn event(&self, piece: &Piece, text: &str) -> Vec<Value> {
        match (self.endpoint, piece) {
            (_, Piece::Void(_, t)) => self.event(&Piece::Text(t.clone()), text),
            (_, Piece::Call(index, name)) => vec![json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{
                    "index": index, "id": self.call_id(*index), "type": "function",
                    "function": {"name": name, "arguments": ""},
                }]}, "finish_reason": null}],
            })],
            (_, Piece::Args(index, arguments)) => vec![json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": {"tool_calls": [{
                    "index": index, "function": {"arguments": arguments},
                }]}, "finish_reason": null}],
            })],
            (Endpoint::Chat, Piece::Logprobs(entries)) => vec![json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": {}, "logprobs": logprobs::chat(entries), "finish_reason": null}],
            })],
            (Endpoint::Completions, Piece::Logprobs(entries)) => vec![json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": "", "logprobs": logprobs::completion(entries, text.len()), "finish_reason": null}],
            })],
            (_, Piece::Logprobs(_)) => Vec::new(),
            (_, Piece::Reasoning(t)) => vec![json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": t}, "finish_reason": null}],
            })],
            (
                Endpoint::Chat | Endpoint::Messages | Endpoint::Responses | Endpoint::CountTokens,
                Piece::Text(t),
            ) => {
                vec![json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": t}, "finish_reason": null}],
                })]
            }
            (
                Endpoint::Chat | Endpoint::Messages | Endpoint::Responses | Endpoint::CountTokens,
                Piece::Done {
                    finish_reason,
                    usage,
                    ..
                },
            ) => {
                let mut events = vec![json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish(finish_reason)}],
                })];
                if self.include_usage {
                    events.push(json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                        "choices": [], "usage": self.usage(usage),
                    }));
                }
                events
            }
            (Endpoint::Completions, Piece::Text(t)) => vec![json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": t, "finish_reason": null}],
            })],
            (
                Endpoint::Completions,
                Piece::Done {
                    finish_reason,
                    usage,
                    ..
                },
            ) => {
                let mut events = vec![json!({
                    "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "text": "", "finish_reason": finish(finish_reason)}],
                })];
                if self.include_usage {
                    events.push(json!({
                        "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                        "choices": [], "usage": self.usage(usage),
                    }));
                }
                events
            }
            // SGLang's /generate streams the text so far in every event.
            (Endpoint::Generate, Piece::Text(_)) => {
                vec![json!({"text": text, "meta_info": {"id": self.id}})]
            }
            (
                Endpoint::Generate,
                Piece::Done {
                    finish_reason,
                    usage,
                    matched_stop,
                },
            ) => vec![json!({
                "text": text,
                "meta_info": {"id": self.id, "finish_reason": generate_finish(finish_reason, matched_stop),
                              "prompt_tokens": usage.prompt, "completion_tokens": usage.completion,
                              "cached_tokens": usage.cached},
            })],
        }
    }

    /// The whole response of a non-streaming request.
    pub(super) fn whole(
        &self,
        text: &str,
        thought: &str,
        calls: &[(String, String)],
        (finish_reason, matched_stop): (&str, &str),
        usage: &Usage,
    ) -> Value {
        match self.endpoint {
            // (Anthropic's and Responses' are written by their own modules.)
            Endpoint::Chat | Endpoint::Messages | Endpoint::Responses | Endpoint::CountTokens => {
                let mut message = json!({"role": "assistant", "content": text});
                if self.reasoning {
                    message["reasoning_content"] = match thought {
                        "" => Value::Null,
                        t => Value::String(t.to_string()),
                    };
                }
                if !calls.is_empty() {
                    if text.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = calls
                        .iter()
                        .enumerate()
                        .map(|(i, (name, arguments))| {
                            json!({
                                "id": self.call_id(i), "type": "function",
                                "function": {"name": name, "arguments": arguments},
                            })
                        })
                        .collect();
                }
                json!({
                    "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish(finish_reason)}],
                    "usage": self.usage(usage),
                })
            }
            Endpoint::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish(finish_reason)}],
                "usage": self.usage(usage),
            }),
            Endpoint::Generate => json!({
                "text": text,
                "meta_info": {"id": self.id, "finish_reason": generate_finish(finish_reason, matched_stop),
                              "prompt_tokens": usage.prompt, "completion_tokens": usage.completion,
                              "cached_tokens": usage.cached},
            }),
        }
    }
}

/// A worker's stream that ended before its completion.
pub(super) fn no_completion() -> HttpError {
    HttpError::new(
        StatusCode::BAD_GATEWAY,
        "the worker's stream ended without a completion",
    )
}

/// Reads the whole stream into one JSON response.
pub(super) async fn complete(
    out: Output,
    stream: impl Stream<Item = Result<Bytes, RouteError>> + Unpin,
) -> Result<(StatusCode, axum::Json<Value>), HttpError> {
    Ok((StatusCode::OK, axum::Json(collect(out, stream).await?)))
}

/// Reads the whole stream into the response's JSON.
pub(super) async fn collect(
    mut out: Output,
    mut stream: impl Stream<Item = Result<Bytes, RouteError>> + Unpin,
) -> Result<Value, HttpError> {
    let mut reader = Reader::new(std::mem::take(&mut out.parsers));
    let mut text = String::new();
    let mut thought = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut entries = Vec::new();
    let mut done = None;
    let asked = reader.parsers.logprobs.is_some();
    while let Some(item) = stream.next().await {
        for piece in reader.pieces(&item?) {
            match piece {
                Piece::Logprobs(e) => entries.extend(e),
                Piece::Text(t) => text.push_str(&t),
                Piece::Reasoning(t) => thought.push_str(&t),
                Piece::Call(_, name) => calls.push((name, String::new())),
                Piece::Args(index, arguments) => {
                    if let Some(call) = calls.get_mut(index) {
                        call.1.push_str(&arguments);
                    }
                }
                // No call after all: its text is content.
                Piece::Void(index, t) => {
                    if let Some(call) = calls.get_mut(index) {
                        call.0.clear();
                    }
                    text.push_str(&t);
                }
                Piece::Done {
                    finish_reason,
                    usage,
                    matched_stop,
                } => done = Some((finish_reason, usage, matched_stop)),
            }
        }
    }
    let (reason, usage, matched) = done.ok_or_else(no_completion)?;
    calls.retain(|(name, _)| !name.is_empty());
    let mut whole = out.whole(&text, &thought, &calls, (&reason, &matched), &usage);
    match out.endpoint {
        Endpoint::Chat if asked => whole["choices"][0]["logprobs"] = logprobs::chat(&entries),
        Endpoint::Chat => whole["choices"][0]["logprobs"] = Value::Null,
        Endpoint::Completions if asked => {
            whole["choices"][0]["logprobs"] = logprobs::completion(&entries, 0)
        }
        _ => {}
    }
    Ok(whole)
}
