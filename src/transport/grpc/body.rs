//! The worker's response body as it arrives, then its status.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::RecvStream;
use http::HeaderMap;
use tokio_stream::Stream;

use super::client::failure;
use crate::transport::{Failure, WorkerStatus};

/// The status a worker sent in `headers` (its trailers, or the headers of
/// a trailers-only response), with its message percent-decoded.
pub(super) fn worker_status(headers: HeaderMap) -> WorkerStatus {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(2); // UNKNOWN, as the gRPC spec says for an unparsable status
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    WorkerStatus {
        code,
        message,
        trailers: headers,
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2).
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

enum State {
    Data,
    /// Data ended with an error, after data that is being relayed first.
    Failed(Failure),
    Trailers,
    Done,
}

/// Coalesced chunks are cut at this size (the default HTTP/2 frame size).
const COALESCE_BYTES: usize = 16 * 1024;

/// The worker's response body as it arrives, then its status.
///
/// Chunks are the worker's HTTP/2 DATA payloads: gRPC-framed messages, whole
/// or split across chunks. The router relays them without reframing (as
/// nginx's `grpc_pass` does), so a streamed token costs no decode and
/// re-encode; payloads that have already arrived together are joined into
/// one chunk (up to 16 KiB), so a burst of tokens leaves as one frame.
pub struct ResponseStream {
    body: RecvStream,
    state: State,
    /// An OK `grpc-status` already came in the response headers.
    ok_in_headers: bool,
}

impl ResponseStream {
    pub(super) fn new(body: RecvStream, ok_in_headers: bool) -> Self {
        ResponseStream {
            body,
            state: State::Data,
            ok_in_headers,
        }
    }

    fn failure(&self, error: h2::Error) -> Failure {
        tracing::debug!(%error, "a worker's response stream failed");
        failure(&error)
    }

    /// The next chunk, or `None` at a clean end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .transpose()
    }

    /// The next DATA payload. It is ours once read, so its window reopens
    /// at once; backpressure holds because the next one is read only when
    /// the client's side asks for more.
    fn poll_payload(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, h2::Error>>> {
        let payload = ready!(self.body.poll_data(cx));
        if let Some(Ok(chunk)) = &payload {
            let _ = self.body.flow_control().release_capacity(chunk.len());
        }
        Poll::Ready(payload)
    }

    /// `first` joined with the payloads that have already arrived behind it.
    fn coalesce(&mut self, first: Bytes, cx: &mut Context<'_>) -> Bytes {
        let mut joined: Option<bytes::BytesMut> = None;
        while joined.as_ref().map_or(first.len(), |j| j.len()) < COALESCE_BYTES {
            match self.poll_payload(cx) {
                Poll::Ready(Some(Ok(more))) => {
                    let joined = joined.get_or_insert_with(|| {
                        let mut j = bytes::BytesMut::with_capacity(first.len() + more.len());
                        j.extend_from_slice(&first);
                        j
                    });
                    joined.extend_from_slice(&more);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.state = State::Failed(self.failure(e));
                    break;
                }
                Poll::Ready(None) => {
                    self.state = State::Trailers;
                    break;
                }
                Poll::Pending => break,
            }
        }
        joined.map_or(first, bytes::BytesMut::freeze)
    }
}

impl Stream for ResponseStream {
    type Item = Result<Bytes, Failure>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Data => match ready!(this.poll_payload(cx)) {
                    Some(Ok(chunk)) if chunk.is_empty() => {}
                    Some(Ok(chunk)) => return Poll::Ready(Some(Ok(this.coalesce(chunk, cx)))),
                    Some(Err(e)) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(this.failure(e))));
                    }
                    None => this.state = State::Trailers,
                },
                State::Failed(_) => {
                    let State::Failed(status) = std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched above")
                    };
                    return Poll::Ready(Some(Err(status)));
                }
                State::Trailers => {
                    let trailers = ready!(this.body.poll_trailers(cx));
                    this.state = State::Done;
                    return match trailers {
                        // The common case, without decoding anything.
                        Ok(Some(trailers))
                            if trailers.get("grpc-status").is_some_and(|s| s == "0") =>
                        {
                            Poll::Ready(None)
                        }
                        Ok(Some(trailers)) if trailers.contains_key("grpc-status") => Poll::Ready(
                            Some(Err(Failure::Status(Box::new(worker_status(trailers))))),
                        ),
                        Ok(_) if this.ok_in_headers => Poll::Ready(None),
                        Ok(_) => Poll::Ready(Some(Err(Failure::NoStatus))),
                        Err(e) => Poll::Ready(Some(Err(this.failure(e)))),
                    };
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream").finish_non_exhaustive()
    }
}
