//! The worker's response body as it arrives, then its status.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::RecvStream;
use http::HeaderMap;
use tokio_stream::Stream;

use crate::transport::{Failure, WorkerStatus};

/// The status a worker sent in `headers` (its trailers, or the headers of
/// a trailers-only response), read as tonic reads it (the message
/// percent-decoded; an unparsable code is UNKNOWN).
pub(super) fn worker_status(headers: HeaderMap) -> WorkerStatus {
    let (code, message) = match tonic::Status::from_header_map(&headers) {
        Some(status) => (status.code() as i32, status.message().to_string()),
        None => (tonic::Code::Unknown as i32, String::new()),
    };
    WorkerStatus {
        code,
        message,
        trailers: headers,
    }
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

/// An h2 error in the router's words: a lost connection, a reset with its
/// code, or a protocol error.
pub(super) fn failure(error: &h2::Error) -> Failure {
    if error.is_io() || error.is_go_away() {
        return Failure::ConnectionLost;
    }
    match error.reason() {
        Some(reason) if error.is_reset() || error.is_remote() => Failure::Reset(reason.into()),
        Some(_) | None => Failure::Protocol,
    }
}
