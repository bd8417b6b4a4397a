//! Relays an HTTP worker's response body to the client as it arrives.
//!
//! The relayed body owns what the request holds (load guards, a PD room, the
//! prefill task) so they are released when the stream ends or the client
//! goes away, on every path. A PD companion (the prefill side) failing ends
//! the body with an error, which aborts the client's response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_stream::Stream;

use crate::proxy::{self, TaskGuard};

type Upstream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A worker's response on its way to the client.
pub struct Relay {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: RelayBody,
}

struct RelayBody {
    upstream: Upstream,
    failed: Option<oneshot::Receiver<String>>,
    companion: Option<TaskGuard>,
    _held: Box<dyn Send + Sync>,
}

impl Relay {
    /// Relays `response` (status, content type, body), holding `held`.
    pub fn new(response: reqwest::Response, held: Box<dyn Send + Sync>) -> Self {
        Relay {
            status: response.status(),
            content_type: response.headers().get(header::CONTENT_TYPE).cloned(),
            body: RelayBody {
                upstream: Box::pin(response.bytes_stream()),
                failed: None,
                companion: None,
                _held: held,
            },
        }
    }

    /// Ties a companion task (the prefill side) to this body: its failure
    /// on `failed` ends the body; the body ending badly cancels it.
    pub fn with_companion(
        mut self,
        failed: Option<oneshot::Receiver<String>>,
        task: TaskGuard,
    ) -> Self {
        self.body.failed = failed;
        self.body.companion = Some(task);
        self
    }

    /// The response to send, with `x-request-id`.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let mut response = Response::new(Body::from_stream(self.body));
        *response.status_mut() = self.status;
        if let Some(ct) = self.content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        if let Ok(id) = HeaderValue::from_str(request_id) {
            response.headers_mut().insert(proxy::REQUEST_ID_HEADER, id);
        }
        // Keep intermediaries from buffering a stream.
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }
}

impl Stream for RelayBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(failed) = this.failed.as_mut() {
            match Pin::new(failed).poll(cx) {
                Poll::Ready(Ok(reason)) => {
                    this.failed = None;
                    return Poll::Ready(Some(Err(std::io::Error::other(reason))));
                }
                Poll::Ready(Err(_)) => this.failed = None,
                Poll::Pending => {}
            }
        }
        match this.upstream.as_mut().poll_next(cx) {
            Poll::Ready(None) => {
                // A clean end: the prefill side may finish on its own.
                if let Some(task) = this.companion.as_mut() {
                    task.detach();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            other => other.map(|item| item.map(|r| r.map_err(std::io::Error::other))),
        }
    }
}
