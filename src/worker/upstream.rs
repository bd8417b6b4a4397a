//! The router's HTTP/2 client to gRPC workers, on the `h2` crate directly:
//! proxied `Generate` calls and the control calls (health checks, `Abort`).
//!
//! tonic's `Channel` puts a `tower::buffer` task, hyper's client dispatch
//! task and several tower layers between a call and the socket, and writes
//! a request as three separate frames flushed one by one (HEADERS, DATA, an
//! empty DATA carrying END_STREAM). Here a call clones the connection's
//! [`SendRequest`], queues HEADERS and DATA(END_STREAM) together (one write),
//! and relays the response body as it comes. Measured with callgrind and
//! `bench/run.sh`: see docs/BENCHMARKS.md. Control calls (health checks,
//! `Abort`) are unary calls on the same kind of connection
//! ([`Upstream::unary`]), so an idle worker costs no client task at all.
//!
//! One [`Upstream`] is one HTTP/2 connection, made on first use and made
//! again on the next call after it closes. A ping every
//! `keep_alive_interval` that is not answered within the next interval
//! closes it, so streams on a dead connection fail instead of hanging.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use h2::client::SendRequest;
use h2::RecvStream;
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderValue, Method, Uri};
use tokio::net::TcpStream;
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use super::{ChannelConfig, Endpoint};
use crate::proxy::codec::{frame, unary_message};

/// The connection's receive window: the largest HTTP/2 allows, so that it
/// never binds. Data waiting unread counts against both windows; with a
/// smaller connection window, a few streams whose clients stopped reading
/// would use it up and stall every other stream on the connection. What one
/// stream may have waiting is bounded by its own window
/// (`ChannelConfig::stream_window`).
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// h2 closes a connection (`ENHANCE_YOUR_CALM`, "too_many_data_frames")
/// once the small DATA frames waiting unread on *all* its streams pass a
/// budget, by default half the connection window. Token streams are all
/// small frames, so a few clients that stop reading would close the
/// connection under every other client's stream on it. What a stalled
/// stream holds is bounded by its own window instead; the budget is set
/// out of the way.
const DATA_FRAME_BUDGET: usize = usize::MAX / 2;

/// The live connection's generation and handle, read without a lock on
/// every call.
type Slot = ArcSwapOption<(u64, SendRequest<Bytes>)>;

/// One HTTP/2 connection to a worker, for proxied and control calls.
#[derive(Debug)]
pub struct Upstream {
    /// `host:port`, to connect to.
    authority: String,
    /// The `Generate` URI (scheme and authority become pseudo-headers).
    generate_uri: Uri,
    config: ChannelConfig,
    /// The live connection's handle and generation; the connection's task
    /// empties it when the connection ends.
    slot: Arc<Slot>,
    /// Serialises connecting.
    connecting: tokio::sync::Mutex<Connecting>,
    /// Connection attempts finished, to tell a caller that waited for the
    /// lock whether an attempt ended while it waited.
    attempts: AtomicU64,
}

#[derive(Debug, Default)]
struct Connecting {
    /// The last connection's generation.
    generation: u64,
    /// Why the last attempt failed, if it did.
    failed: Option<Status>,
}

impl Upstream {
    /// A connection to `endpoint`, not made until the first call.
    pub fn new(endpoint: &Endpoint, config: ChannelConfig) -> Self {
        let authority = endpoint.authority().to_string();
        let generate_uri = format!("http://{authority}/switchyard.v1.Inference/Generate")
            .parse()
            .unwrap_or_else(|_| unreachable!("validated endpoint {authority} makes a valid URI"));
        Upstream {
            authority,
            generate_uri,
            config,
            slot: Arc::new(ArcSwapOption::empty()),
            connecting: tokio::sync::Mutex::new(Connecting::default()),
            attempts: AtomicU64::new(0),
        }
    }

    /// Starts `Generate` with `request`'s metadata (including any
    /// `grpc-timeout` already set) and message, and waits for the response
    /// headers. A gRPC error in the headers (a trailers-only response) is
    /// returned as `Err`.
    pub async fn generate(
        &self,
        request: tonic::Request<Bytes>,
    ) -> Result<(MetadataMap, ResponseStream), CallError> {
        self.call(self.generate_uri.clone(), request).await
    }

    /// A unary call to `path` (a control call: a health check, an `Abort`)
    /// on the same connection, all within `timeout`: the reply message.
    pub async fn unary(
        &self,
        path: &str,
        message: &impl prost::Message,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        let uri = format!("http://{}{path}", self.authority)
            .parse()
            .map_err(|_| Status::internal(format!("{path} is not a valid gRPC path")))?;
        let mut request = tonic::Request::new(Bytes::from(message.encode_to_vec()));
        request.set_timeout(timeout);
        let call = async {
            let (_, mut body) = self.call(uri, request).await?;
            let mut reply = bytes::BytesMut::new();
            while let Some(chunk) = body.chunk().await? {
                reply.extend_from_slice(&chunk);
            }
            unary_message(reply.freeze())
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| {
            Status::deadline_exceeded(format!("{path} got no answer within {timeout:?}"))
        })?
    }

    async fn call(
        &self,
        uri: Uri,
        request: tonic::Request<Bytes>,
    ) -> Result<(MetadataMap, ResponseStream), CallError> {
        let (metadata, _, message) = request.into_parts();
        let mut head = http::Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = uri;
        *head.headers_mut() = metadata.into_headers();
        let headers = head.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(USER_AGENT, HeaderValue::from_static("switchyard"));

        // A connection that closed while idle is found out here, before
        // anything is sent: forget it and try once on a new one.
        let mut retried = false;
        let (generation, mut sender) = loop {
            let (generation, sender) = self.sender().await.map_err(CallError::unsent)?;
            match sender.ready().await {
                Ok(sender) => break (generation, sender),
                Err(e) => {
                    self.forget(generation);
                    if retried {
                        return Err(CallError::unsent(h2_status(e)));
                    }
                    retried = true;
                }
            }
        };
        // Failing here, a lost connection sent nothing; any other error is
        // the request's own, and would fail the same anywhere.
        let (response, mut send) = sender.send_request(head, false).map_err(|e| {
            self.forget(generation);
            CallError {
                unsent: e.is_io() || e.is_go_away(),
                status: h2_status(e),
            }
        })?;
        send.send_data(frame(&message), true)
            .map_err(|e| CallError::sent(h2_status(e)))?;

        // A stream the worker refused was not processed (RFC 9113, 8.7).
        let response = response.await.map_err(|e| CallError {
            unsent: e.reason() == Some(h2::Reason::REFUSED_STREAM),
            status: h2_status(e),
        })?;
        let (parts, body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(CallError::sent(http_status(parts.status)));
        }
        let trailers_only = match Status::from_header_map(&parts.headers) {
            Some(status) if status.code() != Code::Ok => return Err(CallError::sent(status)),
            status => status,
        };
        Ok((
            MetadataMap::from_headers(parts.headers),
            ResponseStream {
                body,
                state: State::Data,
                trailers_only,
            },
        ))
    }

    /// The live connection, or a new one. Calls that arrive while a
    /// connection is being made wait for that attempt and share its
    /// failure, instead of each queueing another connect timeout behind it.
    async fn sender(&self) -> Result<(u64, SendRequest<Bytes>), Status> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let mut connecting = self.connecting.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        if self.attempts.load(Ordering::Acquire) != seen {
            if let Some(failed) = &connecting.failed {
                return Err(failed.clone());
            }
        }
        connecting.generation += 1;
        let generation = connecting.generation;
        let outcome = self.connect(generation).await;
        connecting.failed = outcome.as_ref().err().cloned();
        self.attempts.fetch_add(1, Ordering::Release);
        Ok((generation, outcome?))
    }

    fn live(&self) -> Option<(u64, SendRequest<Bytes>)> {
        self.slot
            .load()
            .as_ref()
            .map(|live| (live.0, live.1.clone()))
    }

    fn forget(&self, generation: u64) {
        clear(&self.slot, generation);
    }

    async fn connect(&self, generation: u64) -> Result<SendRequest<Bytes>, Status> {
        let connect = async {
            let tcp = TcpStream::connect(&self.authority).await?;
            tcp.set_nodelay(true)?;
            h2::client::Builder::new()
                .initial_window_size(self.config.stream_window)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .data_frame_budget(DATA_FRAME_BUDGET)
                .handshake::<_, Bytes>(tcp)
                .await
                .map_err(std::io::Error::other)
        };
        let (sender, connection) = tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "connecting to {} timed out after {:?}",
                    self.authority, self.config.connect_timeout
                ))
            })?
            .map_err(|e| {
                Status::unavailable(format!("cannot connect to {}: {e}", self.authority))
            })?;
        self.slot
            .store(Some(Arc::new((generation, sender.clone()))));
        tokio::spawn(drive(
            connection,
            self.config.keep_alive_interval,
            Arc::downgrade(&self.slot),
            generation,
            self.authority.clone(),
        ));
        Ok(sender)
    }
}

/// A failed call, and whether any of it can have reached the worker.
#[derive(Debug)]
pub struct CallError {
    /// What the call failed with.
    pub status: Status,
    /// Nothing of the call reached the worker, or the worker refused the
    /// stream unprocessed (no connection could be made, the connection
    /// ended before the request was queued, or `REFUSED_STREAM`): the call
    /// can go to another worker without being run twice.
    pub unsent: bool,
}

impl CallError {
    fn unsent(status: Status) -> Self {
        CallError {
            status,
            unsent: true,
        }
    }

    fn sent(status: Status) -> Self {
        CallError {
            status,
            unsent: false,
        }
    }
}

impl From<CallError> for Status {
    fn from(error: CallError) -> Status {
        error.status
    }
}

/// Empties `slot` if it still holds connection `generation` (a newer
/// connection stays).
fn clear(slot: &Slot, generation: u64) {
    slot.rcu(|live| match live {
        Some(live) if live.0 == generation => None,
        other => other.clone(),
    });
}

/// Runs one connection until it ends (the worker closed it, it failed a
/// keep-alive ping, or every handle and stream is gone), then empties the
/// slot so the next call reconnects.
async fn drive(
    connection: h2::client::Connection<TcpStream, Bytes>,
    keep_alive: Duration,
    slot: Weak<Slot>,
    generation: u64,
    authority: String,
) {
    let mut connection = std::pin::pin!(connection);
    let mut ping = connection.ping_pong();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    let mut awaiting_pong = false;
    let outcome = loop {
        tokio::select! {
            result = &mut connection => break result.map_err(|e| e.to_string()),
            _ = ticker.tick() => {
                if awaiting_pong {
                    break Err(format!("no answer to a keep-alive ping within {keep_alive:?}"));
                }
                if let Some(ping) = ping.as_mut() {
                    awaiting_pong = ping.send_ping(h2::Ping::opaque()).is_ok();
                }
            }
            _ = poll_fn(|cx| match ping.as_mut() {
                Some(ping) => ping.poll_pong(cx),
                None => Poll::Pending,
            }), if awaiting_pong => awaiting_pong = false,
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(worker = %authority, %error, "upstream connection closed");
    }
    if let Some(slot) = slot.upgrade() {
        clear(&slot, generation);
    }
}

/// An h2 error as the gRPC status a client would see (the gRPC HTTP/2
/// mapping); a lost connection is `UNAVAILABLE`.
fn h2_status(error: h2::Error) -> Status {
    if error.is_io() || error.is_go_away() || error.reason().is_none() {
        return Status::unavailable(format!("connection to the worker failed: {error}"));
    }
    Status::from_error(Box::new(error))
}

/// A non-200 HTTP status as a gRPC status (the gRPC HTTP/2 mapping).
fn http_status(status: http::StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("the worker answered HTTP {status}"))
}

enum State {
    Data,
    /// Data ended with an error, after data that is being relayed first.
    Failed(Status),
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
    /// `grpc-status` already sent in the response headers, if any.
    trailers_only: Option<Status>,
}

impl ResponseStream {
    /// The next chunk, or `None` at a clean end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Status> {
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
                    self.state = State::Failed(h2_status(e));
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
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Data => match ready!(this.poll_payload(cx)) {
                    Some(Ok(chunk)) if chunk.is_empty() => {}
                    Some(Ok(chunk)) => return Poll::Ready(Some(Ok(this.coalesce(chunk, cx)))),
                    Some(Err(e)) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(h2_status(e))));
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
                    let status = match ready!(this.body.poll_trailers(cx)) {
                        // The common case, without building a `Status`.
                        Ok(Some(trailers))
                            if trailers.get("grpc-status").is_some_and(|s| s == "0") =>
                        {
                            this.state = State::Done;
                            return Poll::Ready(None);
                        }
                        Ok(Some(trailers)) => Status::from_header_map(&trailers),
                        Ok(None) => this.trailers_only.take(),
                        Err(e) => Some(h2_status(e)),
                    };
                    this.state = State::Done;
                    return match status {
                        Some(status) if status.code() == Code::Ok => Poll::Ready(None),
                        Some(status) => Poll::Ready(Some(Err(status))),
                        None => Poll::Ready(Some(Err(Status::internal(
                            "the worker ended the stream without a grpc-status",
                        )))),
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
