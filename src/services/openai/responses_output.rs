//! What the Responses API sends back: the pieces the OpenAI output reads
//! (`output::Reader`: thought, text, calls) as output items — `reasoning`,
//! `message` (`output_text`), `function_call` — in one response object
//! (`complete`), or as its typed server-sent events (`sse`):
//! `response.created`, `response.in_progress`, per item
//! `response.output_item.added`, its deltas (`response.reasoning_text.delta`,
//! `response.content_part.added` and `response.output_text.delta`,
//! `response.function_call_arguments.delta`), their `.done` events and
//! `response.output_item.done`, then `response.completed` (or
//! `response.incomplete` when the output reached `max_output_tokens`) with
//! the whole response. Every event carries its `sequence_number`.

use serde_json::Map;

use super::output::{no_completion, Piece, Reader, Usage};
use super::sse::{event_stream, write_event};
use super::*;

/// The item being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Reasoning,
    Message,
    Call,
}

/// One response's output items, built as its pieces arrive (and written as
/// events when streaming).
struct Builder {
    /// The response object without `output`, `status` and `usage`.
    base: Value,
    /// The request id, for the items' ids.
    rid: String,
    items: Vec<Value>,
    open: Option<Open>,
    calls: usize,
    seq: u64,
    stream: bool,
}

impl Builder {
    fn new(out: &Output, echo: &Map<String, Value>, stream: bool) -> Self {
        let mut base = json!({
            "id": out.id, "object": "response", "created_at": out.created, "model": out.model,
            "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
            "parallel_tool_calls": true, "temperature": null, "top_p": null, "tool_choice": "auto",
            "tools": [], "text": {"format": {"type": "text"}}, "reasoning": {"effort": null, "summary": null},
            "metadata": {}, "store": false, "usage": null,
        });
        for (key, value) in echo {
            base[key] = value.clone();
        }
        Builder {
            base,
            rid: out.id.trim_start_matches("resp_").to_string(),
            items: Vec::new(),
            open: None,
            calls: 0,
            seq: 0,
            stream,
        }
    }

    fn event(&mut self, buf: &mut Vec<u8>, kind: &str, mut data: Value) {
        if !self.stream {
            return;
        }
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        write_event(buf, Some(kind), &data);
    }

    /// The response as it stands, with `status`.
    fn response(&self, status: &str) -> Value {
        let mut r = self.base.clone();
        r["status"] = json!(status);
        r["output"] = Value::Array(self.items.clone());
        r
    }

    fn start(&mut self, buf: &mut Vec<u8>) {
        let r = self.response("in_progress");
        self.event(buf, "response.created", json!({"response": r}));
        self.event(buf, "response.in_progress", json!({"response": r}));
    }

    /// Closes the open item: its `.done` events.
    fn close(&mut self, buf: &mut Vec<u8>) {
        let Some(open) = self.open.take() else {
            return;
        };
        let index = self.items.len() - 1;
        self.items[index]["status"] = json!("completed");
        let item = self.items[index].clone();
        let id = item["id"].clone();
        match open {
            Open::Reasoning => self.event(
                buf,
                "response.reasoning_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": item["content"][0]["text"]}),
            ),
            Open::Message => {
                let part = item["content"][0].clone();
                self.event(
                    buf,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": part["text"], "logprobs": []}),
                );
                self.event(
                    buf,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                );
            }
            Open::Call => self.event(
                buf,
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "name": item["name"], "arguments": item["arguments"]}),
            ),
        }
        self.event(
            buf,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }

    /// Opens an item (closing the one open).
    fn open(&mut self, kind: Open, item: Value, buf: &mut Vec<u8>) {
        self.close(buf);
        let index = self.items.len();
        self.items.push(item.clone());
        self.open = Some(kind);
        self.event(
            buf,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        if kind == Open::Message {
            self.event(
                buf,
                "response.content_part.added",
                json!({"item_id": item["id"], "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            );
            self.items[index]["content"] =
                json!([{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]);
        }
    }

    /// Appends `delta` to the open item's `pointer` and writes its event.
    fn append(&mut self, pointer: &str, delta: &str, kind: &str, buf: &mut Vec<u8>) {
        let index = self.items.len() - 1;
        if let Some(Value::String(s)) = self.items[index].pointer_mut(pointer) {
            s.push_str(delta);
        }
        let id = self.items[index]["id"].clone();
        let mut data = json!({"item_id": id, "output_index": index, "delta": delta});
        if kind != "response.function_call_arguments.delta" {
            data["content_index"] = json!(0);
        }
        if kind == "response.output_text.delta" {
            data["logprobs"] = json!([]);
        }
        self.event(buf, kind, data);
    }

    fn piece(&mut self, piece: Piece, buf: &mut Vec<u8>) -> Option<(String, Usage)> {
        let index = self.items.len();
        match piece {
            // Not asked for on this API.
            Piece::Logprobs(_) => {}
            Piece::Reasoning(t) => {
                if self.open != Some(Open::Reasoning) {
                    let item = json!({"type": "reasoning", "id": format!("rs_{index}_{}", self.rid),
                        "summary": [], "content": [{"type": "reasoning_text", "text": ""}], "status": "in_progress"});
                    self.open(Open::Reasoning, item, buf);
                }
                self.append("/content/0/text", &t, "response.reasoning_text.delta", buf);
            }
            Piece::Text(t) => {
                if self.open != Some(Open::Message) {
                    let item = json!({"type": "message", "id": format!("msg_{index}_{}", self.rid),
                        "role": "assistant", "status": "in_progress", "content": []});
                    self.open(Open::Message, item, buf);
                }
                self.append("/content/0/text", &t, "response.output_text.delta", buf);
            }
            Piece::Call(_, name) => {
                let item = json!({"type": "function_call", "id": format!("fc_{index}_{}", self.rid),
                    "call_id": format!("call_{}_{}", self.calls, self.rid), "name": name,
                    "arguments": "", "status": "in_progress"});
                self.calls += 1;
                self.open(Open::Call, item, buf);
            }
            // A call that did not parse: its text follows as text.
            Piece::Void(_, t) => return self.piece(Piece::Text(t), buf),
            Piece::Args(_, arguments) => {
                if self.open == Some(Open::Call) {
                    self.append(
                        "/arguments",
                        &arguments,
                        "response.function_call_arguments.delta",
                        buf,
                    );
                }
            }
            Piece::Done {
                finish_reason,
                usage,
                ..
            } => {
                self.close(buf);
                return Some((finish_reason, usage));
            }
        }
        None
    }

    /// The whole response, `finish` and `usage` being the engine's.
    fn finish(&mut self, finish: &str, u: &Usage, buf: &mut Vec<u8>) -> Value {
        let incomplete = finish == "length";
        let mut r = self.response(if incomplete {
            "incomplete"
        } else {
            "completed"
        });
        if incomplete {
            r["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        r["usage"] = json!({
            "input_tokens": u.prompt, "input_tokens_details": {"cached_tokens": u.cached},
            "output_tokens": u.completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.prompt + u.completion,
        });
        let kind = if incomplete {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.event(buf, kind, json!({"response": r.clone()}));
        r
    }
}

/// Streams the response as the Responses API's typed events; an error
/// mid-stream becomes an `error` event.
pub(super) fn sse(
    mut out: Output,
    echo: Map<String, Value>,
    stream: impl Stream<Item = Result<Bytes, RouteError>> + Send + 'static,
) -> Response {
    let mut reader = Reader::new(std::mem::take(&mut out.parsers));
    let mut builder = Builder::new(&out, &echo, true);
    let mut start = Vec::new();
    builder.start(&mut start);
    let events = stream.map(move |item| -> Result<Bytes, Infallible> {
        let mut buf = Vec::new();
        match item {
            Ok(bytes) => {
                for piece in reader.pieces(&bytes) {
                    if let Some((reason, usage)) = builder.piece(piece, &mut buf) {
                        builder.finish(&reason, &usage, &mut buf);
                    }
                }
            }
            Err(error) => {
                let status = HttpError::from(error);
                builder.event(
                    &mut buf,
                    "error",
                    json!({"code": status.status().as_u16().to_string(), "message": status.message(), "param": null}),
                );
            }
        }
        Ok(Bytes::from(buf))
    });
    let start = tokio_stream::once(Ok::<_, Infallible>(Bytes::from(start)));
    event_stream(Body::from_stream(start.chain(events)))
}

/// Reads the whole stream into one response object.
pub(super) async fn complete(
    mut out: Output,
    echo: Map<String, Value>,
    mut stream: impl Stream<Item = Result<Bytes, RouteError>> + Unpin,
) -> Result<axum::Json<Value>, HttpError> {
    let mut reader = Reader::new(std::mem::take(&mut out.parsers));
    let mut builder = Builder::new(&out, &echo, false);
    let mut unused = Vec::new();
    let mut done = None;
    while let Some(item) = stream.next().await {
        for piece in reader.pieces(&item?) {
            if let Some(end) = builder.piece(piece, &mut unused) {
                done = Some(end);
            }
        }
    }
    let (reason, usage) = done.ok_or_else(no_completion)?;
    Ok(axum::Json(builder.finish(&reason, &usage, &mut unused)))
}
