//! `n` > 1: several choices for one request. Each choice is a call of its
//! own to the engines (its own request id, `{id}-{i}`, and seed, `seed + i`,
//! routed by the model's policy like any call: a cache-aware policy sends
//! them where the prompt is cached), read by its own parsers; this module
//! merges them into one response — the choices in order, usage counting
//! the prompt once and every choice's output — or one stream of events as
//! they arrive, each carrying its choice's `index`, with one usage event at
//! the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_stream::StreamMap;

use super::output::{collect, Piece, Reader, Usage};
use super::sse::{event_stream, write_error, write_event};
use super::*;

/// One choice's relayed stream.
pub(super) type ChoiceStream = Pin<Box<dyn Stream<Item = Result<Bytes, RouteError>> + Send>>;

/// Sets an event's (or a whole response's) choice index.
fn indexed(mut v: Value, index: usize) -> Value {
    if let Some(Value::Array(choices)) = v.get_mut("choices") {
        for c in choices {
            c["index"] = json!(index);
        }
    }
    v
}

/// The whole response: every choice read to its end.
pub(super) async fn complete(
    outs: Vec<Output>,
    streams: Vec<ChoiceStream>,
) -> Result<axum::Json<Value>, HttpError> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (out, stream)) in outs.into_iter().zip(streams).enumerate() {
        tasks.spawn(async move { (i, collect(out, stream).await) });
    }
    let mut wholes: Vec<Option<Value>> = vec![None; tasks.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, whole) = joined.map_err(|e| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("a choice failed: {e}"),
            )
        })?;
        wholes[i] = Some(whole?);
    }
    let mut merged: Option<Value> = None;
    let (mut completion, mut prompt, mut cached) = (0u64, 0u64, 0u64);
    for (i, whole) in wholes.into_iter().enumerate() {
        let whole = indexed(whole.unwrap_or_default(), i);
        let usage = &whole["usage"];
        completion += usage["completion_tokens"].as_u64().unwrap_or(0);
        prompt = prompt.max(usage["prompt_tokens"].as_u64().unwrap_or(0));
        cached = cached.max(
            usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0),
        );
        match &mut merged {
            None => merged = Some(whole),
            Some(m) => {
                if let (Some(Value::Array(all)), Some(Value::Array(more))) =
                    (m.get_mut("choices"), whole.get("choices"))
                {
                    all.extend(more.iter().cloned());
                }
            }
        }
    }
    let mut merged = merged.unwrap_or_default();
    merged["usage"] = json!({
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    });
    Ok(axum::Json(merged))
}

/// The choices' events as they arrive, then one usage event (when asked)
/// and `[DONE]`.
pub(super) fn sse(mut outs: Vec<Output>, streams: Vec<ChoiceStream>) -> Response {
    let include_usage = outs.first().is_some_and(|o| o.include_usage);
    let mut readers = Vec::with_capacity(outs.len());
    let mut map = StreamMap::new();
    for (i, (out, stream)) in outs.iter_mut().zip(streams).enumerate() {
        // The usage comes once, for all choices.
        out.include_usage = false;
        readers.push(Reader::new(std::mem::take(&mut out.parsers)));
        map.insert(i, stream);
    }
    let texts = vec![String::new(); outs.len()];
    let events = Merged {
        map,
        outs,
        readers,
        texts,
        usage: Vec::new(),
        include_usage,
        ended: false,
    };
    event_stream(Body::from_stream(events))
}

/// The merged stream of events.
struct Merged {
    map: StreamMap<usize, ChoiceStream>,
    outs: Vec<Output>,
    readers: Vec<Reader>,
    /// Each choice's text so far.
    texts: Vec<String>,
    /// Each finished choice's usage.
    usage: Vec<Usage>,
    include_usage: bool,
    ended: bool,
}

impl Merged {
    /// The end: one usage event for every choice, and `[DONE]`.
    fn end(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if let (true, Some(out)) = (self.include_usage, self.outs.first()) {
            let total = Usage {
                prompt: self.usage.iter().map(|u| u.prompt).max().unwrap_or(0),
                completion: self.usage.iter().map(|u| u.completion).sum(),
                cached: self.usage.iter().map(|u| u.cached).max().unwrap_or(0),
            };
            let object = match out.endpoint {
                Endpoint::Completions => "text_completion",
                _ => "chat.completion.chunk",
            };
            let event = json!({
                "id": out.id, "object": object, "created": out.created, "model": out.model,
                "choices": [], "usage": out.usage(&total),
            });
            write_event(&mut buf, None, &event);
        }
        buf.extend_from_slice(b"data: [DONE]\n\n");
        buf
    }
}

impl Stream for Merged {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.map).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(Some(Ok(Bytes::from(this.end()))))
            }
            Poll::Ready(Some((i, item))) => {
                let mut buf = Vec::new();
                match item {
                    Ok(bytes) => {
                        for piece in this.readers[i].pieces(&bytes) {
                            if let Piece::Text(t) = &piece {
                                this.texts[i].push_str(t);
                            }
                            if let Piece::Done { usage, .. } = &piece {
                                this.usage.push(*usage);
                            }
                            for event in this.outs[i].event(&piece, &this.texts[i]) {
                                write_event(&mut buf, None, &indexed(event, i));
                            }
                        }
                    }
                    Err(error) => write_error(&mut buf, error),
                }
                Poll::Ready(Some(Ok(Bytes::from(buf))))
            }
        }
    }
}
