//! The HTTP listener: HTTP/1.1 and HTTP/2 (told apart by the preface),
//! served by hyper with the API's axum router on every connection.
//!
//! In place of `axum::serve` for two settings it does not expose: HTTP/2's
//! header list limit (16 KiB in hyper), raised to [`protocol_header_limit`]
//! so that metadata over the router's own limit gets its 431 naming
//! `limits.max_metadata_bytes` rather than a bare 431; and HTTP/2 bodies a
//! handler answers without reading, drained rather than reset (see
//! `drain`). HTTP/1's parser keeps hyper's 100 fields: raising it makes
//! every request allocate room for that many (measured at 60 against 40 µs
//! of CPU per request with 2,000, `bench/http.sh`); its bytes (400 KB)
//! are far over any limit.
//!
//! Shutdown: when `stop_accepting` resolves, stop accepting and let every
//! connection finish what it serves (HTTP/2 GOAWAY, HTTP/1 closes after
//! the response in flight); the caller bounds the wait.

use std::future::Future;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::task::JoinSet;
use tower::Service;

use super::drain::DrainOnDrop;
use super::overload::protocol_header_limit;
use super::tls::Accepting;

/// Serves `routes` on `listener` until `stop_accepting` resolves, then
/// until every connection has finished. With `connect_info`, each request
/// carries its connection's [`Peer`](super::tls::Peer) (as axum's `ConnectInfo`).
pub async fn serve(
    mut listener: Accepting,
    routes: Router,
    max_metadata: usize,
    connect_info: bool,
    stop_accepting: impl Future<Output = ()>,
) {
    let header_limit = protocol_header_limit(max_metadata);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_header_list_size(u32::try_from(header_limit).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut stop_accepting = std::pin::pin!(stop_accepting);
    loop {
        tokio::select! {
            (io, peer) = listener.next() => {
                let routes = routes.clone();
                let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                    let mut request = if request.version() == http::Version::HTTP_2 {
                        request.map(|body| Body::new(DrainOnDrop::new(body)))
                    } else {
                        // hyper's HTTP/1 reads what a handler left itself.
                        request.map(Body::new)
                    };
                    if connect_info {
                        request.extensions_mut().insert(ConnectInfo(peer));
                    }
                    routes.clone().call(request)
                });
                let connection = graceful.watch(
                    builder.serve_connection(TokioIo::new(io), service).into_owned(),
                );
                connections.spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(peer = %peer.addr, %error, "HTTP connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut stop_accepting => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    while connections.join_next().await.is_some() {}
}
