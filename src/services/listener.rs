//! The gRPC listener: HTTP/2 connections served by hyper, `Inference` calls
//! handed straight to [`InferenceService`], every other service (health,
//! reflection, worker management) through tonic's [`Routes`].
//!
//! tonic's own server wraps every call in its per-connection layers
//! (connect info, error recovery, timeouts) and routes it through an axum
//! router, and boxes every response body twice; on the proxied path that
//! measured at several thousand instructions per call (callgrind, see
//! docs/BENCHMARKS.md). The other services are not on the hot path and keep
//! tonic's routing. Connection settings are tonic's defaults: HTTP/2 only,
//! no per-connection stream limit, `TCP_NODELAY` on.
//!
//! Shutdown: when `stop_accepting` resolves, stop accepting, tell every
//! connection to go away (HTTP/2 GOAWAY) and let the calls in flight finish
//! for up to `drain`; then cancel what is still open, wait for hyper's
//! per-stream tasks to drop (proxied calls send their workers `Abort`), wait
//! for those aborts, and return.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tower::Service;

use super::drain::drain_later;
use super::inference::{GrpcBody, InferenceService};
use super::tls::Accepting;
use crate::auth::{Denied, Keys};
use crate::tenants::Tenants;

/// The body of any response on the gRPC listener.
pub type ResponseBody = Either<GrpcBody, tonic::body::Body>;

/// Dispatches one connection's calls by path, once their key is checked.
#[derive(Clone)]
struct Dispatch {
    inference: InferenceService,
    routes: Routes,
    keys: Arc<Keys>,
    tenants: Arc<Tenants>,
    /// This connection's client presented a verified certificate.
    client_cert: bool,
    /// The most metadata bytes a call may carry.
    max_metadata: usize,
}

/// The path prefix of worker management: an admin key's.
const MANAGEMENT: &str = "/switchyard.v1.WorkerManagement/";

/// A refused call's trailers-only answer.
fn refused(denied: Denied) -> http::Response<ResponseBody> {
    let status = match denied {
        Denied::Missing | Denied::Invalid | Denied::NoClientCert => {
            tonic::Status::unauthenticated(denied.to_string())
        }
        Denied::NotAdmin => tonic::Status::permission_denied(denied.to_string()),
    };
    status.into_http::<tonic::body::Body>().map(Either::Right)
}

impl hyper::service::Service<http::Request<Incoming>> for Dispatch {
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        // An early answer leaves the body to be drained (see `drain`), so
        // that a client still sending it reads the answer, not a reset.
        let early = |request: http::Request<Incoming>, response| {
            drain_later(request.into_body());
            Box::pin(std::future::ready(Ok(response))) as Self::Future
        };
        if let Err(message) = super::overload::check_metadata(request.headers(), self.max_metadata)
        {
            let status = tonic::Status::resource_exhausted(message);
            return early(
                request,
                status.into_http::<tonic::body::Body>().map(Either::Right),
            );
        }
        if InferenceService::serves(request.uri().path()) {
            match self.tenants.check(&self.keys, request.headers()) {
                Ok(Some(tenant)) => {
                    request.extensions_mut().insert(tenant);
                }
                Ok(None) => {}
                Err(denied) => return early(request, refused(denied)),
            }
            if let Some(refused) = InferenceService::refuse_unless_grpc(request.headers()) {
                return early(request, refused.map(Either::Left));
            }
            // The router's credentials stay here.
            self.keys.strip(request.headers_mut());
            let inference = self.inference.clone();
            Box::pin(async move { Ok(inference.serve(request).await.map(Either::Left)) })
        } else {
            if request.uri().path().starts_with(MANAGEMENT) {
                if let Err(denied) = self.keys.check_admin(request.headers(), self.client_cert) {
                    return early(request, refused(denied));
                }
            }
            let mut routes = self.routes.clone();
            Box::pin(async move {
                let response = routes.call(request).await?;
                Ok(response.map(Either::Right))
            })
        }
    }
}

/// Serves gRPC on `listener` until `stop_accepting` resolves, then drains
/// for up to `drain` and cancels the rest.
pub async fn serve(
    mut listener: Accepting,
    inference: InferenceService,
    routes: Routes,
    (keys, tenants, max_metadata): (Arc<Keys>, Arc<Tenants>, usize),
    stop_accepting: impl Future<Output = ()>,
    drain: Duration,
) {
    let dispatch = Dispatch {
        inference,
        routes: routes.prepare(),
        keys,
        tenants,
        client_cert: false,
        max_metadata,
    };
    // hyper runs each HTTP/2 stream as a task of its own: tracked, so that
    // a shutdown can wait for cancelled calls to drop (and send their
    // workers `Abort`) before the process exits.
    let streams = TaskTracker::new();
    let mut http2 = hyper::server::conn::http2::Builder::new(TrackedExecutor(streams.clone()));
    http2.max_concurrent_streams(None);
    // Header lists up to this reach `Dispatch`, which refuses those over
    // the configured limit with a status a gRPC client reads
    // (RESOURCE_EXHAUSTED naming the limit); h2 answers 431 with no
    // grpc-status beyond it, so it is far above the limit.
    http2.max_header_list_size(
        u32::try_from(super::overload::protocol_header_limit(max_metadata)).unwrap_or(u32::MAX),
    );
    let graceful = GracefulShutdown::new();
    // Every connection's task, so that those still open after the drain
    // can be cancelled.
    let mut connections = JoinSet::new();
    let mut stop_accepting = std::pin::pin!(stop_accepting);
    loop {
        tokio::select! {
            (io, peer) = listener.next() => {
                let dispatch = Dispatch {
                    client_cert: peer.client_cert,
                    ..dispatch.clone()
                };
                let connection =
                    graceful.watch(http2.serve_connection(TokioIo::new(io), dispatch));
                connections.spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(peer = %peer.addr, %error, "gRPC connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut stop_accepting => break,
        }
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "draining: no new connections; calls in flight may finish within {drain:?}"
    );
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "calls still open after draining for {drain:?}: cancelling them"
        );
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
    // With their connections gone, the streams' tasks end at once (hyper
    // sees the reset); the bound is for a stream stuck elsewhere.
    streams.close();
    if tokio::time::timeout(STREAMS_END, streams.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            streams = streams.len(),
            "streams still running after their connections closed"
        );
    }
    // Cancelled calls told their workers to abort; let those calls land.
    crate::routers::call::aborts_in_flight().wait().await;
}

/// How long a shutdown waits for stream tasks once their connections are
/// closed.
const STREAMS_END: Duration = Duration::from_secs(5);

/// Spawns hyper's per-stream tasks on tokio, tracked.
#[derive(Clone)]
struct TrackedExecutor(TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}
