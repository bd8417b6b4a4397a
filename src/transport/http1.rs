//! The pooled HTTP client to HTTP workers (reqwest): inference `POST`s
//! relayed as they stream, and `GET /health` probes.
//!
//! A request that could not connect reached nothing, and says so
//! ([`CallError::unsent`]), so the router may offer it to another worker.
//! reqwest's error text goes to the debug log; callers get a [`Failure`].

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio_stream::{Stream, StreamExt};

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
}

/// The client could not be built (the TLS or resolver setup failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(String);

/// A pooled HTTP client to workers.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// A worker's response body, chunk by chunk as it arrives.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, Failure>> + Send>>;

/// A worker's response: status, content type, body.
pub struct HttpResponse {
    /// The worker's HTTP status.
    pub status: StatusCode,
    /// The worker's `content-type`, if any.
    pub content_type: Option<HeaderValue>,
    /// The body.
    pub body: BodyStream,
}

impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl HttpResponse {
    /// A non-success response as a failure naming its status and the start
    /// of its body (the worker's own words).
    pub async fn into_failure(mut self) -> Failure {
        let mut text = Vec::new();
        while let Some(Ok(chunk)) = self.body.next().await {
            text.extend_from_slice(&chunk);
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

impl HttpClient {
    /// A client with `config`'s timeouts and pool size.
    pub fn new(config: &HttpClientConfig) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.pool_idle_per_worker)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| BuildError(e.to_string()))?;
        Ok(HttpClient {
            client,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
        })
    }

    /// POSTs `body` (JSON) to `url` with `x-request-id`; waits for the
    /// response headers within the response timeout.
    pub async fn post(
        &self,
        url: String,
        request_id: &str,
        body: Bytes,
    ) -> Result<HttpResponse, CallError> {
        let send = self
            .client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-request-id", request_id)
            .body(body)
            .send();
        let response = match tokio::time::timeout(self.response_timeout, send).await {
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
        Ok(HttpResponse {
            status: response.status(),
            content_type: response.headers().get(http::header::CONTENT_TYPE).cloned(),
            body: Box::pin(response.bytes_stream().map(|chunk| {
                chunk.map_err(|e| {
                    tracing::debug!(error = %error_chain(&e), "HTTP response body broke off");
                    Failure::ConnectionLost
                })
            })),
        })
    }

    /// `GET url` within `timeout`: the status.
    pub async fn get(&self, url: String, timeout: Duration) -> Result<StatusCode, Failure> {
        match self.client.get(url).timeout(timeout).send().await {
            Ok(response) => Ok(response.status()),
            Err(e) if e.is_connect() => Err(Failure::Connect(self.connect_failure(&e))),
            Err(e) if e.is_timeout() => Err(Failure::TimedOut(timeout)),
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "HTTP GET failed");
                Err(Failure::ConnectionLost)
            }
        }
    }
}

impl HttpClient {
    /// Refused, timed out, or something else, from a connect error.
    fn connect_failure(&self, error: &reqwest::Error) -> ConnectFailure {
        if error.is_timeout() {
            return ConnectFailure::TimedOut(self.connect_timeout);
        }
        let mut source = std::error::Error::source(error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return ConnectFailure::from_io(io);
            }
            source = e.source();
        }
        ConnectFailure::Other
    }
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
