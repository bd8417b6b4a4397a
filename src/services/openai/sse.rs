//! Server-sent events: one writer for every API's events, and OpenAI's
//! stream of chat and completions chunks.

use super::output::{Output, Piece, Reader};
use super::*;

/// A response of server-sent events with `body`.
pub(super) fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// Appends one server-sent event to `buf`: `event: NAME` when named, then
/// `data` as JSON. Written straight into the buffer: a `Value`'s `Display`
/// goes through the formatter a fragment at a time, which cost a streamed
/// chat request about a third of its instructions.
pub(super) fn write_event(buf: &mut Vec<u8>, name: Option<&str>, data: &Value) {
    if let Some(name) = name {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(name.as_bytes());
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"data: ");
    // A `Value`'s keys are strings and a `Vec` takes every write, so this
    // cannot fail.
    let _ = serde_json::to_writer(&mut *buf, data);
    buf.extend_from_slice(b"\n\n");
}

/// Appends the `error` event that ends an OpenAI stream cut short.
pub(super) fn write_error(buf: &mut Vec<u8>, error: RouteError) {
    let status = HttpError::from(error);
    let error = json!({"error": {"message": status.message(), "code": status.status().as_u16()}});
    write_event(buf, None, &error);
}

/// Streams the response as server-sent events, ending with `[DONE]`; an
/// error mid-stream becomes an `error` event.
pub(super) fn sse(
    mut out: Output,
    stream: impl Stream<Item = Result<Bytes, RouteError>> + Send + 'static,
) -> Response {
    let mut reader = Reader::new(std::mem::take(&mut out.parsers));
    let mut text = String::new();
    let chunks = Chunks::new(&out);
    let events = stream.map(move |item| -> Result<Bytes, Infallible> {
        let mut buf = Vec::new();
        match item {
            Ok(bytes) => {
                for piece in reader.pieces(&bytes) {
                    if let Piece::Text(t) = &piece {
                        text.push_str(t);
                    }
                    if chunks.as_ref().is_some_and(|c| c.write(&mut buf, &piece)) {
                        continue;
                    }
                    for event in out.event(&piece, &text) {
                        write_event(&mut buf, None, &event);
                    }
                }
            }
            Err(error) => write_error(&mut buf, error),
        }
        Ok(Bytes::from(buf))
    });
    let done = tokio_stream::once(Ok::<_, Infallible>(Bytes::from_static(b"data: [DONE]\n\n")));
    event_stream(Body::from_stream(events.chain(done)))
}

/// Streamed chat and completions chunks of text (and chat's chunks of a
/// tool call's arguments), written without building a `Value`: what comes
/// before the delta is the same in every chunk of a response and is
/// rendered once. (The same JSON as `Output::event`'s, in OpenAI's order of
/// fields.)
struct Chunks {
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[{"index":0,`
    head: Vec<u8>,
    chat: bool,
}

impl Chunks {
    /// For `out`'s chunks, if it is a chat or completions response.
    fn new(out: &Output) -> Option<Chunks> {
        let object = match out.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
            _ => return None,
        };
        let mut head = br#"data: {"id":"#.to_vec();
        serde_json::to_writer(&mut head, &out.id).ok()?;
        head.extend_from_slice(
            format!(r#","object":"{object}","created":{},"model":"#, out.created).as_bytes(),
        );
        serde_json::to_writer(&mut head, &out.model).ok()?;
        head.extend_from_slice(br#","choices":[{"index":0,"#);
        Some(Chunks {
            head,
            chat: out.endpoint == Endpoint::Chat,
        })
    }

    /// Appends the chunk carrying `piece`, if it is text or (chat) a call's
    /// arguments; whether it did.
    fn write(&self, buf: &mut Vec<u8>, piece: &Piece) -> bool {
        if !matches!(
            (piece, self.chat),
            (Piece::Text(_), _) | (Piece::Args(..), true)
        ) {
            return false;
        }
        buf.extend_from_slice(&self.head);
        // Strings into a `Vec` cannot fail.
        match piece {
            Piece::Text(t) if self.chat => {
                buf.extend_from_slice(br#""delta":{"role":"assistant","content":"#);
                let _ = serde_json::to_writer(&mut *buf, t);
                buf.push(b'}');
            }
            Piece::Text(t) => {
                buf.extend_from_slice(br#""text":"#);
                let _ = serde_json::to_writer(&mut *buf, t);
            }
            Piece::Args(index, arguments) => {
                buf.extend_from_slice(br#""delta":{"tool_calls":[{"index":"#);
                buf.extend_from_slice(index.to_string().as_bytes());
                buf.extend_from_slice(br#","function":{"arguments":"#);
                let _ = serde_json::to_writer(&mut *buf, arguments);
                buf.extend_from_slice(b"}}]}");
            }
            _ => {}
        }
        buf.extend_from_slice(b",\"finish_reason\":null}]}\n\n");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast chunks are the JSON `Output::event` builds for the same
    /// pieces.
    #[test]
    fn a_written_chunk_is_the_event_output_would_build() {
        let text = "a \"quoted\"\nline \u{1f600} \u{7}";
        for (endpoint, piece) in [
            (Endpoint::Chat, Piece::Text(text.into())),
            (Endpoint::Completions, Piece::Text(text.into())),
            (Endpoint::Chat, Piece::Args(12, text.into())),
        ] {
            let out = Output {
                endpoint,
                id: "chatcmpl-\"x\"".into(),
                model: "m\\odel".into(),
                created: 1_700_000_000,
                include_usage: false,
                reasoning: false,
                parsers: Default::default(),
                choice: 0,
            };
            let mut buf = Vec::new();
            assert!(Chunks::new(&out).unwrap().write(&mut buf, &piece));
            let written = std::str::from_utf8(&buf).unwrap();
            let json = written
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\n\n")
                .unwrap();
            let expected = out.event(&piece, text);
            assert_eq!(serde_json::from_str::<Value>(json).unwrap(), expected[0]);
        }
    }
}
