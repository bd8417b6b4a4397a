//! What the OpenAI front sends back: the engine's stream as OpenAI's
//! objects, whole (`complete`) or as server-sent events (`sse`).

use super::*;

/// What the response says about itself.
#[derive(Debug, Clone)]
pub(super) struct Output {
    pub(super) endpoint: Endpoint,
    pub(super) id: String,
    pub(super) model: String,
    pub(super) created: u64,
    pub(super) include_usage: bool,
}

/// One translated `switchyard.v1` message's content.
enum Piece {
    Text(String),
    Done {
        finish_reason: String,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
}

/// The pieces of the messages in `bytes`.
fn pieces(frames: &mut Deframer, bytes: &[u8]) -> Vec<Piece> {
    frames.push(bytes);
    let mut out = Vec::new();
    while let Ok(Some(message)) = frames.next_message() {
        match pb::GenerateResponse::decode(message).map(|m| m.response) {
            Ok(Some(pb::generate_response::Response::Chunk(c))) if !c.text.is_empty() => {
                out.push(Piece::Text(c.text))
            }
            Ok(Some(pb::generate_response::Response::Complete(c))) => out.push(Piece::Done {
                finish_reason: c.finish_reason,
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.completion_tokens,
            }),
            _ => {}
        }
    }
    out
}

/// OpenAI's finish reasons: the engine's, with `abort` kept as is.
fn finish(reason: &str) -> &str {
    match reason {
        "" => "stop",
        other => other,
    }
}

impl Output {
    fn usage(&self, prompt: u32, completion: u32) -> Value {
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    }

    /// One streamed event for `piece` (`text` so far for `/generate`).
    fn event(&self, piece: &Piece, text: &str) -> Vec<Value> {
        match (self.endpoint, piece) {
            (Endpoint::Chat, Piece::Text(t)) => vec![json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": t}, "finish_reason": null}],
            })],
            (
                Endpoint::Chat,
                Piece::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                },
            ) => {
                let mut events = vec![json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish(finish_reason)}],
                })];
                if self.include_usage {
                    events.push(json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                        "choices": [], "usage": self.usage(*prompt_tokens, *completion_tokens),
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
                    prompt_tokens,
                    completion_tokens,
                },
            ) => {
                let mut events = vec![json!({
                    "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "text": "", "finish_reason": finish(finish_reason)}],
                })];
                if self.include_usage {
                    events.push(json!({
                        "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                        "choices": [], "usage": self.usage(*prompt_tokens, *completion_tokens),
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
                    prompt_tokens,
                    completion_tokens,
                },
            ) => vec![json!({
                "text": text,
                "meta_info": {"id": self.id, "finish_reason": {"type": finish(finish_reason)},
                              "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
            })],
        }
    }

    /// The whole response of a non-streaming request.
    fn whole(&self, text: &str, finish_reason: &str, prompt: u32, completion: u32) -> Value {
        match self.endpoint {
            Endpoint::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish(finish_reason)}],
                "usage": self.usage(prompt, completion),
            }),
            Endpoint::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish(finish_reason)}],
                "usage": self.usage(prompt, completion),
            }),
            Endpoint::Generate => json!({
                "text": text,
                "meta_info": {"id": self.id, "finish_reason": {"type": finish(finish_reason)},
                              "prompt_tokens": prompt, "completion_tokens": completion},
            }),
        }
    }
}

/// Streams the response as server-sent events, ending with `[DONE]`; an
/// error mid-stream becomes an `error` event.
pub(super) fn sse(
    out: Output,
    stream: impl Stream<Item = Result<Bytes, RouteError>> + Send + 'static,
) -> Response {
    let mut frames = Deframer::default();
    let mut text = String::new();
    let events = stream.map(move |item| -> Result<Bytes, Infallible> {
        let mut buf = String::new();
        match item {
            Ok(bytes) => {
                for piece in pieces(&mut frames, &bytes) {
                    if let Piece::Text(t) = &piece {
                        text.push_str(t);
                    }
                    for event in out.event(&piece, &text) {
                        buf.push_str("data: ");
                        buf.push_str(&event.to_string());
                        buf.push_str("\n\n");
                    }
                }
            }
            Err(error) => {
                let status = HttpError::from(error);
                buf.push_str("data: ");
                buf.push_str(&json!({"error": {"message": status.message(), "code": status.status().as_u16()}}).to_string());
                buf.push_str("\n\n");
            }
        }
        Ok(Bytes::from(buf))
    });
    let done = tokio_stream::once(Ok::<_, Infallible>(Bytes::from_static(b"data: [DONE]\n\n")));
    let mut response = Response::new(Body::from_stream(events.chain(done)));
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// Reads the whole stream into one JSON response.
pub(super) async fn complete(
    out: Output,
    mut stream: impl Stream<Item = Result<Bytes, RouteError>> + Unpin,
) -> Result<(StatusCode, axum::Json<Value>), HttpError> {
    let mut frames = Deframer::default();
    let mut text = String::new();
    let mut done = None;
    while let Some(item) = stream.next().await {
        for piece in pieces(&mut frames, &item?) {
            match piece {
                Piece::Text(t) => text.push_str(&t),
                Piece::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                } => done = Some((finish_reason, prompt_tokens, completion_tokens)),
            }
        }
    }
    let (reason, prompt, completion) = done.ok_or_else(|| {
        HttpError::new(
            StatusCode::BAD_GATEWAY,
            "the worker's stream ended without a completion",
        )
    })?;
    Ok((
        StatusCode::OK,
        axum::Json(out.whole(&text, &reason, prompt, completion)),
    ))
}
