//! Relays an HTTP worker's response body to the client as it arrives.
//!
//! The relayed body owns what the request holds (load guards, a PD room, the
//! prefill side) so they are released when the stream ends or the client
//! goes away, on every path. A PD companion (the prefill side) failing ends
//! the body with an error, which aborts the client's response. The worker's
//! exact length, when it gave one, is the client's too (one write, no
//! chunked encoding).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body::{Frame, SizeHint};

use crate::routers::call::Companion;
use crate::routers::REQUEST_ID_HEADER;
use crate::telemetry::CallSpan;
use crate::transport::http1::{HttpResponse, ResponseBody};
use crate::worker::{LoadGuard, Outcome};

/// A worker's response on its way to the client: what the HTTP router
/// returns, for the HTTP service to send.
pub struct Relay {
    /// The worker's status.
    pub status: StatusCode,
    /// The worker's content type, `x-request-id`, the worker id(s).
    pub headers: HeaderMap,
    /// The worker's body, holding what the request holds.
    pub body: RelayBody,
}

/// The relayed body (an [`http_body::Body`]).
pub struct RelayBody {
    upstream: ResponseBody,
    companion: Option<Companion>,
    /// The worker's load guard, told how the call ended.
    load: LoadGuard,
    _held: Box<dyn Send + Sync>,
    /// The request's span: marked failed by an error, ended on drop.
    trace: CallSpan,
}

impl Relay {
    /// Relays `response` (status, content type, body) for `request_id`,
    /// holding the worker's `load` guard and `held`. A server error
    /// (5xx) is relayed as it is and counts against the worker.
    pub fn new(
        response: HttpResponse,
        request_id: &str,
        mut load: LoadGuard,
        held: Box<dyn Send + Sync>,
    ) -> Self {
        load.answered();
        if response.status.is_server_error() {
            load.settle(Outcome::Failure);
        } else if !response.status.is_success() {
            load.settle(Outcome::Neutral);
        } else {
            load.proven();
        }
        let mut headers = HeaderMap::with_capacity(6);
        if let Some(ct) = response.content_type {
            headers.insert(header::CONTENT_TYPE, ct);
        }
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(REQUEST_ID_HEADER, id);
        }
        // Keep intermediaries from buffering a stream.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Relay {
            status: response.status,
            headers,
            body: RelayBody {
                upstream: response.body,
                companion: None,
                load,
                _held: held,
                trace: CallSpan::default(),
            },
        }
    }

    /// Ends `trace` (the request's span) with the body; a worker's 5xx or
    /// an error while relaying marks it failed.
    pub fn traced(mut self, trace: CallSpan) -> Self {
        if trace.is_on() {
            trace.set("http.response.status_code", i64::from(self.status.as_u16()));
            if self.status.is_server_error() {
                trace.fail(&format_args!("the worker answered {}", self.status));
            }
        }
        self.body.trace = trace;
        self
    }

    /// Ties a companion (the prefill side) to this body: its failure ends
    /// the body; the body ending badly cancels it.
    pub fn with_companion(mut self, companion: Option<Companion>) -> Self {
        self.body.companion = companion;
        self
    }
}

/// Ends the client's response (the connection is reset); the detail is
/// logged where it happened.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl http_body::Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(companion) = this.companion.as_mut() {
            if let Poll::Ready(error) = companion.poll_failed(cx) {
                this.trace.fail(&error);
                return Poll::Ready(Some(Err(Box::new(error))));
            }
        }
        match Pin::new(&mut this.upstream).poll_frame(cx) {
            Poll::Ready(None) => {
                // A clean end: the prefill side may finish on its own.
                if let Some(companion) = this.companion.as_mut() {
                    companion.detach();
                }
                this.load.settle(Outcome::Success);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(failure))) => {
                this.load.settle(Outcome::Failure);
                this.trace.fail(&failure);
                Poll::Ready(Some(Err(Box::new(failure))))
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        // With a companion the body may still end in an error; its length
        // is the worker's all the same.
        self.upstream.size_hint()
    }
}
