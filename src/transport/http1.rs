//! The pooled HTTP/1.1 client to HTTP workers, on hyper's own pooled
//! client (`hyper_util`'s legacy `Client`): inference `POST`s relayed as
//! they stream, and `GET /health` probes.
//!
//! Why not reqwest: per request it parses the URL twice (`url`, then
//! `http::Uri`), wraps the call in redirect, timeout and decompression
//! layers and boxes its future; on the HTTP benchmark (`bench/http.sh`)
//! that was a measurable part of the router's CPU per request, and a router
//! needs none of it. The connection pool, keep-alive and HTTP/1 codec are
//! the same hyper code reqwest uses.
//!
//! A request that could not connect reached nothing, and says so
//! ([`CallError::unsent`]), so the router may offer it to another worker.
//! hyper's error text goes to the debug log; callers get a [`Failure`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::transport::tls::WorkerTls;
use crate::transport::{CallError, ConnectFailure, Failure};

/// What a worker's error body may add to a failure's reason.
const ERROR_BODY_CHARS: usize = 500;

/// Settings of the HTTP client.
#[derive(Debug, Clone)]
pub struct HttpClientConfig {
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for response headers.
    pub response_timeout: Duration,
    /// Idle pooled connections kept per worker.
    pub pool_idle_per_worker: usize,
    /// TLS for `https://` workers (`None`: the system's roots, no client
    /// certificate).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Where an HTTP worker is: scheme (`http` or `https`) and `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
}

/// A pooled HTTP client to workers.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// A worker's response: status, content type, body.
#[derive(Debug)]
pub struct HttpResponse {
    /// The worker's HTTP status.
    pub status: StatusCode,
    /// The worker's `content-type`, if any.
    pub content_type: Option<HeaderValue>,
    /// The body, as it arrives.
    pub body: ResponseBody,
}

impl HttpResponse {
    /// A non-success response as a failure naming its status and the start
    /// of its body (the worker's own words).
    pub async fn into_failure(mut self) -> Failure {
        let mut text = Vec::new();
        while let Some(Ok(frame)) = self.body.frame().await {
            if let Ok(data) = frame.into_data() {
                text.extend_from_slice(&data);
            }
            if text.len() >= ERROR_BODY_CHARS * 4 {
                break;
            }
        }
        let text: String = String::from_utf8_lossy(&text)
            .chars()
            .take(ERROR_BODY_CHARS)
            .collect();
        Failure::HttpStatus(self.status.as_u16(), text)
    }
}

/// A worker's response body: its chunks as they arrive, its exact length
/// when the worker gave one (so the client's response can carry it too).
#[derive(Debug)]
pub struct ResponseBody(Incoming);

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Failure;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Failure>>> {
        Pin::new(&mut self.0).poll_frame(cx).map_err(|e| {
            tracing::debug!(error = %e, "HTTP response body broke off");
            Failure::ConnectionLost
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

impl HttpClient {
    /// A client with `config`'s timeouts and pool size.
    pub fn new(config: &HttpClientConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        // `https://` is taken by the TLS layer around it.
        connector.enforce_http(false);
        let tls = match &config.tls {
            Some(tls) => (**tls).clone(),
            None => (*WorkerTls::system().http).clone(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.pool_idle_per_worker)
            .build(connector);
        HttpClient {
            client,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
        }
    }

    /// POSTs `body` (JSON) to `path` on the worker at `origin`, with
    /// `x-request-id` and the call's `traceparent`, if traced; waits for the
    /// response headers within the response timeout.
    pub async fn post(
        &self,
        origin: &Origin,
        (path, request_id, traceparent): (&str, &str, Option<HeaderValue>),
        body: Bytes,
    ) -> Result<HttpResponse, CallError> {
        let uri = uri(origin, path).map_err(CallError::unsent)?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.reserve(3);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", id);
        }
        if let Some(traceparent) = traceparent {
            headers.insert("traceparent", traceparent);
        }
        let response =
            match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
                Ok(Ok(response)) => response,
                // No connection, so nothing was sent: another worker may have it.
                Ok(Err(e)) if e.is_connect() => {
                    tracing::debug!(error = %error_chain(&e), "HTTP worker unreachable");
                    return Err(CallError::unsent(Failure::Connect(
                        self.connect_failure(&e),
                    )));
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %error_chain(&e), "HTTP request failed");
                    return Err(CallError::sent(Failure::ConnectionLost));
                }
                Err(_) => return Err(CallError::sent(Failure::TimedOut(self.response_timeout))),
            };
        let (parts, body) = response.into_parts();
        Ok(HttpResponse {
            status: parts.status,
            content_type: parts.headers.get(CONTENT_TYPE).cloned(),
            body: ResponseBody(body),
        })
    }

    /// `GET path` on the worker at `origin` within `timeout`: the status.
    pub async fn get(
        &self,
        origin: &Origin,
        path: &str,
        timeout: Duration,
    ) -> Result<StatusCode, Failure> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri(origin, path)?;
        let call = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            // Read the (small) body so the connection goes back to the pool.
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) if e.is_connect() => Err(Failure::Connect(self.connect_failure(&e))),
            Ok(Err(e)) => {
                tracing::debug!(error = %error_chain(&e), "HTTP GET failed");
                Err(Failure::ConnectionLost)
            }
            Err(_) => Err(Failure::TimedOut(timeout)),
        }
    }

    /// Refused, timed out, or something else, from a connect error.
    fn connect_failure(&self, error: &hyper_util::client::legacy::Error) -> ConnectFailure {
        let mut source = std::error::Error::source(error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return ConnectFailure::TimedOut(self.connect_timeout);
                }
                return ConnectFailure::from_io(io);
            }
            source = e.source();
        }
        ConnectFailure::Other
    }
}

/// `{scheme}://{authority}{path}`.
fn uri(origin: &Origin, path: &str) -> Result<Uri, Failure> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(origin.scheme.clone());
    parts.authority = Some(origin.authority.clone());
    parts.path_and_query = Some(PathAndQuery::try_from(path).map_err(|_| Failure::Protocol)?);
    Uri::from_parts(parts).map_err(|_| Failure::Protocol)
}

/// An error and its sources, for the debug log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
