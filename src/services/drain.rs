//! Answering before the request's body is read, without resetting it.
//!
//! A server may answer an HTTP/2 request before its body is in (a 415, a
//! 401, a 404); if it then drops the body, h2 resets the stream, and a
//! client still sending (curl, a gRPC client streaming its message) may see
//! the reset instead of the answer: `curl --http2-prior-knowledge` with a
//! 1 MB body got the router's 415 in 1 of 20 tries. So a body dropped
//! unread is read to its end and discarded by a task of its own, bounded in
//! bytes and time; only then is the stream reset, if it is still open.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// The most a dropped body is read for.
const DRAIN_FOR: Duration = Duration::from_secs(5);
/// The most bytes a dropped body is read to.
const DRAIN_AT_MOST: usize = 8 << 20;

/// Reads what is left of `body` and discards it, in a task of its own (see
/// the module's documentation). A body already ended is simply dropped.
pub fn drain_later(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut read = 0usize;
        let _ = tokio::time::timeout(DRAIN_FOR, async {
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > DRAIN_AT_MOST {
                    break;
                }
            }
        })
        .await;
    });
}

/// An HTTP/2 request's body that, dropped before its end, is drained by
/// [`drain_later`]: for handlers that may answer without reading it.
pub struct DrainOnDrop(Option<Incoming>);

impl DrainOnDrop {
    pub fn new(body: Incoming) -> Self {
        Self(Some(body))
    }
}

impl Body for DrainOnDrop {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.0.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            // Ended or failed: nothing left to drain.
            this.0 = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        if let Some(body) = self.0.take() {
            drain_later(body);
        }
    }
}
