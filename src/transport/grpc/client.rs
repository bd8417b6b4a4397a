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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::body::{failure, worker_status, ResponseStream};
use super::codec::{frame, unary_message};
use super::metadata::{grpc_timeout, never_index, GRPC_TIMEOUT};
use super::ChannelConfig;
use crate::transport::tls::{self, TlsFailure, WorkerTls};
use crate::transport::{CallError, ConnectFailure, Failure};

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
    /// `host:port`, to connect to and to name the worker in logs.
    authority: Authority,
    /// The URI of the path most calls take (`Generate`), made once.
    common: (&'static str, Uri),
    config: ChannelConfig,
    /// The live connection's handle and generation; the connection's task
    /// empties it when the connection ends.
    slot: Arc<Slot>,
    /// Whether the worker is reached over TLS (`grpcs://`).
    secure: bool,
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
    failed: Option<Failure>,
}

impl Upstream {
    /// A connection to `authority` (`host:port`), over TLS if `secure`, not
    /// made until the first call; calls to `common_path` reuse one URI.
    pub fn new(
        authority: Authority,
        common_path: &'static str,
        config: ChannelConfig,
        secure: bool,
    ) -> Self {
        let common = (
            common_path,
            uri(secure, &authority, common_path).unwrap_or_else(|_| Uri::default()),
        );
        Upstream {
            authority,
            common,
            config,
            secure,
            slot: Arc::new(ArcSwapOption::empty()),
            connecting: tokio::sync::Mutex::new(Connecting::default()),
            attempts: AtomicU64::new(0),
        }
    }

    /// Starts a server-streaming call to `path` with `headers` (any
    /// `grpc-timeout` already set) and `message`, and waits for the
    /// response headers. A gRPC error in the headers (a trailers-only
    /// response) is returned as `Err`.
    pub async fn call(
        &self,
        path: &'static str,
        headers: HeaderMap,
        message: &[u8],
    ) -> Result<(HeaderMap, ResponseStream), CallError> {
        let uri = match path == self.common.0 {
            true => self.common.1.clone(),
            false => uri(self.secure, &self.authority, path).map_err(CallError::unsent)?,
        };
        self.send(uri, headers, message).await
    }

    /// A unary call to `path` (a control call: a health check, an `Abort`)
    /// on the same connection, all within `timeout`: the reply message.
    pub async fn unary(
        &self,
        path: &'static str,
        message: &impl prost::Message,
        timeout: Duration,
    ) -> Result<Bytes, Failure> {
        self.unary_bytes(path, &message.encode_to_vec(), timeout)
            .await
    }

    /// [`Self::unary`] with the message already encoded.
    pub async fn unary_bytes(
        &self,
        path: &'static str,
        message: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, Failure> {
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(GRPC_TIMEOUT, grpc_timeout(timeout));
        let call = async {
            let (_, mut body) = self
                .call(path, headers, message)
                .await
                .map_err(|e| e.failure)?;
            let mut reply = bytes::BytesMut::new();
            while let Some(chunk) = body.chunk().await? {
                reply.extend_from_slice(&chunk);
            }
            unary_message(reply.freeze()).map_err(|_| Failure::Protocol)
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| Failure::TimedOut(timeout))?
    }

    async fn send(
        &self,
        uri: Uri,
        headers: HeaderMap,
        message: &[u8],
    ) -> Result<(HeaderMap, ResponseStream), CallError> {
        let mut head = http::Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = uri;
        *head.headers_mut() = headers;
        let headers = head.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(USER_AGENT, HeaderValue::from_static("switchyard"));
        never_index(headers, &GRPC_TIMEOUT);

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
                        return Err(CallError::unsent(self.failure(e)));
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
                failure: self.failure(e),
            }
        })?;
        send.send_data(frame(message), true)
            .map_err(|e| CallError::sent(self.failure(e)))?;

        // A stream the worker refused was not processed (RFC 9113, 8.7).
        let response = response.await.map_err(|e| CallError {
            unsent: e.reason() == Some(h2::Reason::REFUSED_STREAM),
            failure: self.failure(e),
        })?;
        let (parts, body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(CallError::sent(Failure::HttpStatus(
                parts.status.as_u16(),
                String::new(),
            )));
        }
        // A trailers-only response: the status is in the headers.
        let ok_in_headers = match parts.headers.get("grpc-status") {
            Some(code) if code != "0" => {
                return Err(CallError::sent(Failure::Status(Box::new(worker_status(
                    parts.headers,
                )))))
            }
            status => status.is_some(),
        };
        Ok((parts.headers, ResponseStream::new(body, ok_in_headers)))
    }

    /// An h2 error in the router's words; h2's own text goes to the log.
    fn failure(&self, error: h2::Error) -> Failure {
        tracing::debug!(worker = %self.authority, %error, "HTTP/2 call failed");
        failure(&error)
    }

    /// The live connection, or a new one. Calls that arrive while a
    /// connection is being made wait for that attempt and share its
    /// failure, instead of each queueing another connect timeout behind it.
    async fn sender(&self) -> Result<(u64, SendRequest<Bytes>), Failure> {
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
        // Boxed: connecting (TLS state, HTTP/2 handshakes for two kinds of
        // stream) is a large future, and unboxed it would make every call's
        // future that large (and moved, memcpy'd, at each await) although
        // calls connect once in a connection's life.
        let outcome = Box::pin(self.connect(generation)).await;
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

    async fn connect(&self, generation: u64) -> Result<SendRequest<Bytes>, Failure> {
        let timeout = self.config.connect_timeout;
        let connect = async {
            let tcp = TcpStream::connect(self.authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            if !self.secure {
                return Ok((self.start(tcp, generation, None).await?, None));
            }
            let config = match &self.config.tls {
                Some(config) => config.clone(),
                None => WorkerTls::system().grpc,
            };
            let tls = tls::connect(config, self.authority.host(), tcp).await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(std::io::Error::other(rustls::Error::NoApplicationProtocol));
            }
            // TLS 1.3 finishes the client's side of the handshake before
            // the worker has checked the client's certificate: a worker
            // that wants one and got none says so only on the first read.
            // One ping round trip finds out here, as a connect failure that
            // names the fix rather than a lost connection on the first call.
            let (answered, answer) = oneshot::channel();
            let sender = self.start(tls, generation, Some(answered)).await?;
            Ok((sender, Some(answer)))
        };
        let connected = async {
            let (sender, answer) = connect.await.map_err(|e: std::io::Error| {
                tracing::debug!(worker = %self.authority, error = %e, "cannot connect");
                Failure::Connect(ConnectFailure::from_io(&e))
            })?;
            if let Some(answer) = answer {
                answer
                    .await
                    .map_err(|_| Failure::Connect(ConnectFailure::Tls(TlsFailure::Refused)))?;
            }
            Ok(sender)
        };
        let outcome = tokio::time::timeout(timeout, connected).await;
        if !matches!(outcome, Ok(Ok(_))) {
            self.forget(generation);
        }
        outcome.map_err(|_| Failure::Connect(ConnectFailure::TimedOut(timeout)))?
    }

    /// Completes the HTTP/2 handshake over `io`, publishes the connection
    /// and starts its task (which reports the first ping's answer on
    /// `answered`, if given).
    async fn start<T>(
        &self,
        io: T,
        generation: u64,
        answered: Option<oneshot::Sender<()>>,
    ) -> std::io::Result<SendRequest<Bytes>>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(self.config.stream_window)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .data_frame_budget(DATA_FRAME_BUDGET)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(std::io::Error::other)?;
        self.slot
            .store(Some(Arc::new((generation, sender.clone()))));
        tokio::spawn(drive(
            connection,
            self.config.keep_alive_interval,
            Arc::downgrade(&self.slot),
            (generation, answered),
            self.authority.clone(),
        ));
        Ok(sender)
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
async fn drive<T>(
    connection: h2::client::Connection<T, Bytes>,
    keep_alive: Duration,
    slot: Weak<Slot>,
    (generation, mut answered): (u64, Option<oneshot::Sender<()>>),
    authority: Authority,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = std::pin::pin!(connection);
    let mut ping = connection.ping_pong();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    // A ping at once if someone waits for the first answer.
    let mut awaiting_pong = answered.is_some()
        && ping
            .as_mut()
            .is_some_and(|p| p.send_ping(h2::Ping::opaque()).is_ok());
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
            }), if awaiting_pong => {
                awaiting_pong = false;
                if let Some(answered) = answered.take() {
                    let _ = answered.send(());
                }
            }
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(worker = %authority, %error, "upstream connection closed");
    }
    if let Some(slot) = slot.upgrade() {
        clear(&slot, generation);
    }
}

/// `http://{authority}{path}` (`https` over TLS).
fn uri(secure: bool, authority: &Authority, path: &'static str) -> Result<Uri, Failure> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if secure { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(PathAndQuery::from_static(path));
    Uri::from_parts(parts).map_err(|_| Failure::Protocol)
}
