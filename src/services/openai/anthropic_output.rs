//! What the Messages API sends back: the same pieces the OpenAI output reads
//! (`output::Reader`: thought, text, calls), as Anthropic's content blocks —
//! whole (`complete`), or as its server-sent events (`sse`): `message_start`,
//! then per block `content_block_start`, deltas (`thinking_delta`,
//! `text_delta`, `input_json_delta`) and `content_block_stop`, then
//! `message_delta` (stop reason, usage) and `message_stop`.

use super::output::{no_completion, Piece, Reader, Usage};
use super::sse::{event_stream, write_event};
use super::*;

/// Anthropic's stop reason and stop sequence for the engine's finish reason
/// and the stop string that ended the output.
fn stop_reason(finish: &str, matched_stop: &str) -> (&'static str, Option<String>) {
    match (finish, matched_stop) {
        ("length", _) => ("max_tokens", None),
        ("tool_calls", _) => ("tool_use", None),
        ("stop", matched) if !matched.is_empty() => ("stop_sequence", Some(matched.to_string())),
        _ => ("end_turn", None),
    }
}

/// Anthropic counts the prompt tokens read from the cache apart.
fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt.saturating_sub(u.cached),
        "cache_read_input_tokens": u.cached,
        "cache_creation_input_tokens": 0,
        "output_tokens": u.completion,
    })
}

/// Call `index`'s id.
fn tool_id(out: &Output, index: usize) -> String {
    format!("toolu_{index}_{}", out.id.trim_start_matches("msg_"))
}

/// A call's arguments as its `input` object, or `None` when they are not
/// one (the call was cut short).
fn input(arguments: &str) -> Option<Value> {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
}

/// The block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
    Tool,
}

/// One stream's blocks: the next index, and the one open.
struct Blocks {
    next: usize,
    open: Option<Open>,
}

impl Blocks {
    fn event(buf: &mut Vec<u8>, name: &str, data: &Value) {
        write_event(buf, Some(name), data);
    }

    fn close(&mut self, buf: &mut Vec<u8>) {
        if self.open.take().is_some() {
            Self::event(
                buf,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.next - 1}),
            );
        }
    }

    /// Opens a block of `kind` (closing the one open) unless it is open.
    fn open(&mut self, kind: Open, block: Value, buf: &mut Vec<u8>) {
        if self.open == Some(kind) && kind != Open::Tool {
            return;
        }
        self.close(buf);
        Self::event(
            buf,
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.next, "content_block": block}),
        );
        self.next += 1;
        self.open = Some(kind);
    }

    fn delta(&self, delta: Value, buf: &mut Vec<u8>) {
        Self::event(
            buf,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.next - 1, "delta": delta}),
        );
    }

    fn piece(&mut self, out: &Output, piece: Piece, buf: &mut Vec<u8>) {
        match piece {
            // Not asked for on this API.
            Piece::Logprobs(_) => {}
            Piece::Reasoning(t) => {
                self.open(
                    Open::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    buf,
                );
                self.delta(json!({"type": "thinking_delta", "thinking": t}), buf);
            }
            Piece::Text(t) => {
                self.open(Open::Text, json!({"type": "text", "text": ""}), buf);
                self.delta(json!({"type": "text_delta", "text": t}), buf);
            }
            // A call that did not parse: its text follows as text.
            Piece::Void(_, t) => self.piece(out, Piece::Text(t), buf),
            Piece::Call(index, name) => self.open(
                Open::Tool,
                json!({"type": "tool_use", "id": tool_id(out, index), "name": name, "input": {}}),
                buf,
            ),
            Piece::Args(_, arguments) => {
                if self.open == Some(Open::Tool) {
                    self.delta(
                        json!({"type": "input_json_delta", "partial_json": arguments}),
                        buf,
                    );
                }
            }
            Piece::Done {
                finish_reason,
                usage: u,
                matched_stop,
            } => {
                self.close(buf);
                let (reason, sequence) = stop_reason(&finish_reason, &matched_stop);
                Self::event(
                    buf,
                    "message_delta",
                    &json!({"type": "message_delta",
                            "delta": {"stop_reason": reason, "stop_sequence": sequence},
                            "usage": usage(&u)}),
                );
                Self::event(buf, "message_stop", &json!({"type": "message_stop"}));
            }
        }
    }
}

/// Streams the response as Anthropic's server-sent events (`prompt_tokens`:
/// the prompt's length, for `message_start`); an error mid-stream becomes
/// an `error` event.
pub(super) fn sse(
    mut out: Output,
    prompt_tokens: usize,
    stream: impl Stream<Item = Result<Bytes, RouteError>> + Send + 'static,
) -> Response {
    let mut reader = Reader::new(std::mem::take(&mut out.parsers));
    let mut blocks = Blocks {
        next: 0,
        open: None,
    };
    let mut start = Vec::new();
    Blocks::event(
        &mut start,
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": out.id, "type": "message", "role": "assistant", "model": out.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 0},
        }}),
    );
    let events = stream.map(move |item| -> Result<Bytes, Infallible> {
        let mut buf = Vec::new();
        match item {
            Ok(bytes) => {
                for piece in reader.pieces(&bytes) {
                    blocks.piece(&out, piece, &mut buf);
                }
            }
            Err(error) => {
                let status = HttpError::from(error);
                Blocks::event(
                    &mut buf,
                    "error",
                    &json!({"type": "error", "error": {"type": "api_error", "message": status.message()}}),
                );
            }
        }
        Ok(Bytes::from(buf))
    });
    let start = tokio_stream::once(Ok::<_, Infallible>(Bytes::from(start)));
    event_stream(Body::from_stream(start.chain(events)))
}

/// Reads the whole stream into one Anthropic message.
pub(super) async fn complete(
    mut out: Output,
    mut stream: impl Stream<Item = Result<Bytes, RouteError>> + Unpin,
) -> Result<axum::Json<Value>, HttpError> {
    let mut reader = Reader::new(std::mem::take(&mut out.parsers));
    let mut content: Vec<Value> = Vec::new();
    // Calls' names and arguments, by index, while they stream.
    let mut calls: Vec<(usize, String, String)> = Vec::new();
    let mut done = None;
    while let Some(item) = stream.next().await {
        for piece in reader.pieces(&item?) {
            let last = content.last_mut();
            match piece {
                Piece::Logprobs(_) => {}
                Piece::Reasoning(t) => match last {
                    Some(b) if b["type"] == "thinking" => {
                        let joined = format!("{}{t}", b["thinking"].as_str().unwrap_or_default());
                        b["thinking"] = Value::String(joined);
                    }
                    _ => content.push(json!({"type": "thinking", "thinking": t, "signature": ""})),
                },
                Piece::Text(t) => match last {
                    Some(b) if b["type"] == "text" => {
                        let joined = format!("{}{t}", b["text"].as_str().unwrap_or_default());
                        b["text"] = Value::String(joined);
                    }
                    _ => content.push(json!({"type": "text", "text": t})),
                },
                Piece::Call(index, name) => {
                    calls.push((content.len(), name.clone(), String::new()));
                    content.push(json!({"type": "tool_use", "id": tool_id(&out, index), "name": name, "input": {}}));
                }
                Piece::Args(index, arguments) => {
                    if let Some(call) = calls.get_mut(index) {
                        call.2.push_str(&arguments);
                    }
                }
                // No call after all: its block becomes its text.
                Piece::Void(index, t) => {
                    if let Some(call) = calls.get_mut(index) {
                        content[call.0] = json!({"type": "text", "text": t});
                        call.1.clear();
                    }
                }
                Piece::Done {
                    finish_reason,
                    usage,
                    matched_stop,
                } => done = Some((finish_reason, usage, matched_stop)),
            }
        }
    }
    let (reason, u, matched) = done.ok_or_else(no_completion)?;
    let (stop_reason, stop_sequence) = stop_reason(&reason, &matched);
    for (at, name, arguments) in calls {
        if name.is_empty() {
            continue;
        }
        match input(&arguments) {
            Some(value) => content[at]["input"] = value,
            // Cut short: what the model wrote is kept, as text.
            None => content[at] = json!({"type": "text", "text": format!("{name}({arguments})")}),
        }
    }
    Ok(axum::Json(json!({
        "id": out.id, "type": "message", "role": "assistant", "model": out.model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
        "usage": usage(&u),
    })))
}
