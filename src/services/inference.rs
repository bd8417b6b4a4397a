//! `switchyard.v1.Inference`, and SGLang's and vLLM's own services, on the
//! router, written against HTTP/2 bodies.
//!
//! The router relays bytes; it needs none of tonic's codec machinery. This
//! service reads the one request message from the body, hands it to the
//! router, and relays the worker's response body as it arrived (its
//! gRPC-framed messages, chunk by chunk, as nginx's `grpc_pass` does), then
//! the status as trailers. A streamed token then costs one receive and one
//! send instead of a decode into a message and a re-encode into a frame
//! (see docs/BENCHMARKS.md). The gRPC listener (`listener`) hands it every
//! call under `/switchyard.v1.Inference/`.
//!
//! One debug-level tracing span per `Generate` call (request id, model,
//! worker): as for HTTP, a span per call at the default `info` level cost
//! 11% of the router's instructions per call (callgrind).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use tokio_stream::Stream;
use tonic::Status;
use tracing::Instrument;

use super::status;
use crate::engines::{self, Method};
use crate::pb;
use crate::routers::call::ProxyStream;
use crate::routers::grpc::GrpcRouter;
use crate::routers::RouteError;
use crate::services::admit::{admit, place_of, until_not_busy, Gates};
use crate::tenants::{Cost, Tenant, BYTES_PER_TOKEN};
use crate::transport::grpc::codec::{frame, unary_message, MAX_MESSAGE_BYTES};
use crate::transport::grpc::metadata::parse_grpc_timeout;
use crate::transport::idle::{BodyIdle, IdleTimeout};
use crate::worker::Engine;

/// What a call on one of the inference services asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// `Generate` in this engine's protocol.
    Generate(Engine),
    /// `switchyard.v1.Inference/Abort`.
    Abort,
    /// An engine's `Abort`.
    EngineAbort(Engine),
    /// An engine's `GetModelInfo` or `GetServerInfo`.
    Info(Engine, Method),
    /// An engine's `GetLoads`.
    Loads(Engine),
    /// An engine's `HealthCheck`.
    Health(Engine),
}

impl Call {
    /// The call at `path`, or why there is none.
    fn of(path: &str) -> Result<Call, Status> {
        let (service, method) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .unwrap_or(("", ""));
        let engine = engines::by_service(service)
            .ok_or_else(|| Status::unimplemented(format!("no service at {path}")))?
            .engine();
        let own = engine.is_switchyard();
        Ok(match (engine, method) {
            (engine, "Generate") => Call::Generate(engine),
            (_, "Abort") if own => Call::Abort,
            _ if own => {
                return Err(Status::unimplemented(format!(
                    "switchyard.v1.Inference has no method at {path}"
                )))
            }
            (engine, "Abort") => Call::EngineAbort(engine),
            (engine, "GetModelInfo") => Call::Info(engine, Method::GetModelInfo),
            (engine, "GetServerInfo") => Call::Info(engine, Method::GetServerInfo),
            (engine, "GetLoads") => Call::Loads(engine),
            (engine, "HealthCheck") => Call::Health(engine),
            (engine, other) => {
                return Err(Status::unimplemented(format!(
                    "the router serves Generate, Abort, GetModelInfo, GetServerInfo, GetLoads and HealthCheck of {}; call {other} on a worker directly",
                    engine.service()
                )))
            }
        })
    }
}

/// Serves `Generate` and `Abort` by routing them to workers.
#[derive(Debug, Clone)]
pub struct InferenceService {
    router: Arc<GrpcRouter>,
    /// A request message that stops arriving for this long is refused.
    body_idle: Duration,
    /// The router's limits and tenants, shared with the HTTP side (a
    /// call's tenant is in its request's extensions).
    gates: Gates,
}

impl InferenceService {
    /// A service that routes with `router`, refusing request messages that
    /// stop arriving for `body_idle` and `Generate` calls beyond `limit`.
    pub fn new(router: Arc<GrpcRouter>, body_idle: Duration, gates: Gates) -> Self {
        InferenceService {
            router,
            body_idle,
            gates,
        }
    }

    async fn generate(
        &self,
        protocol: Engine,
        headers: HeaderMap,
        message: Bytes,
        tenant: Option<&Arc<Tenant>>,
    ) -> Result<http::Response<GrpcBody>, Status> {
        let span = tracing::debug_span!(
            "generate",
            request_id = tracing::field::Empty,
            model = tracing::field::Empty,
            worker = tracing::field::Empty,
            tenant = tenant.map(|t| t.name())
        );
        // With tenants, a call costs its prompt's tokens (engines stream
        // what they generate: it is counted as relayed). The message's view
        // is read once, here, and handed to the router.
        let (cost, deadline, view) = match tenant.is_some() || self.gates.tenants.any() {
            true => {
                let view = engines::seam(protocol).view(&message).ok();
                let deadline = headers
                    .get("grpc-timeout")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_grpc_timeout)
                    .map(|t| std::time::Instant::now() + t);
                let prompt = view
                    .as_ref()
                    .map_or(0, |v| v.prompt.tokens(BYTES_PER_TOKEN));
                (Cost { prompt, output: 0 }, deadline, view)
            }
            false => (Cost::default(), None, None),
        };
        let admitted = admit(&self.gates.limit, tenant, cost, deadline)
            .await
            .map_err(|n| n.status())?;
        let registry = self.router.registry();
        let result = match registry.max_in_flight_per_worker() {
            0 => {
                self.router
                    .generate_viewed(protocol, headers, message, view)
                    .instrument(span.clone())
                    .await
            }
            // Every worker of the model may be at its limit: the call then
            // waits its turn for one (and so keeps what it would resend).
            _ => {
                let place = place_of(tenant, cost, deadline);
                let gate = (&self.gates.busy, &place, registry.slot_freed());
                let busy =
                    |r: &Result<_, RouteError>| matches!(r, Err(RouteError::WorkersBusy { .. }));
                until_not_busy(gate, busy, || {
                    self.router
                        .generate_viewed(protocol, headers.clone(), message.clone(), view.clone())
                        .instrument(span.clone())
                })
                .await
            }
        };
        let (headers, mut stream) = match result {
            Ok(opened) => opened,
            Err(err) => {
                let status = Status::from(err);
                span.in_scope(|| tracing::debug!(code = ?status.code(), message = status.message(), "generate refused"));
                // No worker generated anything: the tenant is not charged.
                if let Some(ticket) = admitted.ticket {
                    ticket.refused();
                }
                return Err(status);
            }
        };
        // The slot and ticket go with the response, released (and the
        // ticket settled) when it ends.
        stream.hold(admitted.slot, admitted.ticket);
        Ok(grpc_response(headers, GrpcBody::relay(stream)))
    }

    async fn abort(&self, message: Bytes) -> Result<http::Response<GrpcBody>, Status> {
        let abort = pb::AbortRequest::decode(message).map_err(|e| {
            Status::invalid_argument(format!(
                "the message is not a valid switchyard.v1.AbortRequest: {e}"
            ))
        })?;
        if abort.request_id.is_empty() {
            return Err(Status::invalid_argument(
                "AbortRequest.request_id is required",
            ));
        }
        let aborted = self.router.abort(&abort.request_id).await?;
        let reply = pb::AbortResponse { aborted }.encode_to_vec();
        Ok(grpc_response(HeaderMap::new(), GrpcBody::unary(&reply)))
    }

    /// Whether `path` is a method of a service this one answers:
    /// `switchyard.v1.Inference`, SGLang's `SglangScheduler` and vLLM's
    /// `VllmEngine`.
    pub fn serves(path: &str) -> bool {
        engines::ALL.iter().any(|s| {
            path.strip_prefix('/')
                .and_then(|p| p.strip_prefix(s.engine().service()))
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// The answer to a request that is not gRPC (by its content type), as
    /// gRPC servers answer one: HTTP 415. Checked before [`serve`](Self::serve),
    /// with the other checks that need no waiting.
    pub fn refuse_unless_grpc(headers: &HeaderMap) -> Option<http::Response<GrpcBody>> {
        if is_grpc(headers) {
            return None;
        }
        let mut response = Status::invalid_argument(
            "content-type must be application/grpc (or application/grpc+proto)",
        )
        .into_http();
        *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        Some(response)
    }

    /// Answers one gRPC call (see [`refuse_unless_grpc`](Self::refuse_unless_grpc));
    /// errors become trailers-only responses, as a gRPC server's do.
    pub async fn serve<B>(self, request: http::Request<B>) -> http::Response<GrpcBody>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.answer(request)
            .await
            .unwrap_or_else(|status| status.into_http())
    }

    async fn answer<B>(self, request: http::Request<B>) -> Result<http::Response<GrpcBody>, Status>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let call = Call::of(parts.uri.path())?;
        let message = read_message(body, &parts.headers, self.body_idle).await?;
        let reply = match call {
            Call::Generate(protocol) => {
                let tenant = parts.extensions.get::<Arc<Tenant>>();
                return self
                    .generate(protocol, parts.headers, message, tenant)
                    .await;
            }
            Call::Abort => return self.abort(message).await,
            Call::EngineAbort(engine) => self.router.engine_abort(engine, message).await?,
            Call::Info(engine, method) => {
                self.router
                    .engine_info(engine, method, &parts.headers, message)
                    .await?
            }
            Call::Loads(engine) => {
                self.router
                    .engine_loads(engine, &parts.headers, message)
                    .await?
            }
            Call::Health(engine) => self.router.engine_health(engine, &parts.headers),
        };
        Ok(grpc_response(HeaderMap::new(), GrpcBody::unary(&reply)))
    }
}

/// Whether the request says it is gRPC (`application/grpc`, optionally
/// `+proto` or parameters).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest == b"+proto" || rest[0] == b';')
}

/// Reads a unary request's one message, refusing compressed and oversized
/// ones, and bodies that stop arriving for `idle`, with the status a gRPC
/// server answers.
async fn read_message<B>(body: B, headers: &HeaderMap, idle: Duration) -> Result<Bytes, Status>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(encoding) = headers.get("grpc-encoding") {
        if encoding != "identity" {
            return Err(Status::unimplemented(format!(
                "grpc-encoding {encoding:?} is not supported; send uncompressed messages"
            )));
        }
    }
    let body = Limited::new(IdleTimeout::new(body, idle), MAX_MESSAGE_BYTES + 5)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                Status::resource_exhausted(format!(
                    "the request message is over the {MAX_MESSAGE_BYTES}-byte limit"
                ))
            } else if BodyIdle::is_in(&*e) {
                Status::deadline_exceeded(format!(
                    "the request message stopped arriving: nothing for {idle:?}"
                ))
            } else {
                tracing::debug!(error = %e, "request body broke off");
                Status::cancelled("the request body broke off")
            }
        })?;
    unary_message(body.to_bytes()).map_err(status::frame_error)
}

/// A `200 OK` gRPC response carrying `headers`.
fn grpc_response(headers: HeaderMap, body: GrpcBody) -> http::Response<GrpcBody> {
    let mut response = http::Response::new(body);
    *response.headers_mut() = headers;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// A gRPC response body: data (already framed), then the status as
/// trailers.
#[derive(Debug)]
pub struct GrpcBody {
    /// A unary reply, framed.
    reply: Option<Bytes>,
    /// A relayed worker response.
    relay: Option<ProxyStream>,
    /// The trailers are sent (or, for the default body, a trailers-only
    /// response carries the status in its headers).
    done: bool,
}

impl GrpcBody {
    fn relay(stream: ProxyStream) -> Self {
        GrpcBody {
            reply: None,
            relay: Some(stream),
            done: false,
        }
    }

    fn unary(message: &[u8]) -> Self {
        GrpcBody {
            reply: Some(frame(message)),
            relay: None,
            done: false,
        }
    }

    /// The last frame: the outcome as trailers. Ending the relayed stream
    /// here (not when hyper drops the body) releases its load guard at once.
    fn finish(&mut self, outcome: Result<(), RouteError>) -> Frame<Bytes> {
        self.relay = None;
        self.done = true;
        let trailers = match outcome {
            Ok(()) => {
                let mut trailers = HeaderMap::with_capacity(1);
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                trailers
            }
            Err(error) => status::mid_stream_trailers(error),
        };
        Frame::trailers(trailers)
    }
}

/// The empty body of a trailers-only response (`Status::into_http`).
impl Default for GrpcBody {
    fn default() -> Self {
        GrpcBody {
            reply: None,
            relay: None,
            done: true,
        }
    }
}

impl http_body::Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(reply) = this.reply.take() {
            return Poll::Ready(Some(Ok(Frame::data(reply))));
        }
        let frame = match this.relay.as_mut() {
            Some(relay) => match ready!(Pin::new(relay).poll_next(cx)) {
                Some(Ok(chunk)) => Frame::data(chunk),
                Some(Err(error)) => this.finish(Err(error)),
                None => this.finish(Ok(())),
            },
            None => this.finish(Ok(())),
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
