//! The transport: everything about talking to workers on the wire, and
//! nothing about routing.
//!
//! - [`grpc`]: the HTTP/2 client to gRPC workers (connection slots, shared
//!   connect attempts, keep-alive), gRPC framing, metadata rules and the
//!   relayed response body.
//! - [`http1`]: the pooled HTTP client to HTTP workers.
//! - [`idle`]: request bodies that must keep arriving (both listeners).
//! - [`tls`]: TLS to `grpcs://` and `https://` workers, and the PEM files
//!   both sides read.
//!
//! A call to a worker takes a plain request (path, [`http::HeaderMap`],
//! [`bytes::Bytes`]) and fails with a [`CallError`]: a typed [`Failure`] in
//! the router's own words plus whether anything reached the worker. The
//! transport library's own error text goes to the debug log, never to a
//! client. This module imports nothing else of the crate; `worker`,
//! `routers` and `services` build on it.

pub mod grpc;
pub mod http1;
pub mod idle;
pub mod tls;

use std::time::Duration;

use http::HeaderMap;

/// Why a call to a worker failed, in the router's own words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// No connection could be made.
    #[error("cannot connect: {0}")]
    Connect(ConnectFailure),
    /// The connection broke (closed, reset, or a keep-alive went unanswered).
    #[error("the connection to the worker was lost")]
    ConnectionLost,
    /// The worker reset the stream, with this HTTP/2 error code.
    #[error("the worker reset the stream ({})", reason_name(*.0))]
    Reset(u32),
    /// The worker broke the protocol (HTTP/2 or gRPC framing).
    #[error("the worker broke the protocol")]
    Protocol,
    /// The worker answered with this non-success HTTP status, and (for HTTP
    /// workers) the start of its body, which says why in its own words.
    #[error("the worker answered HTTP {0}{colon}", colon = with_colon(.1))]
    HttpStatus(u16, String),
    /// The worker answered with a gRPC error status of its own.
    #[error("the worker answered {}: {}", .0.code, .0.message)]
    Status(Box<WorkerStatus>),
    /// The worker ended a gRPC stream without a status.
    #[error("the worker ended the stream without a grpc-status")]
    NoStatus,
    /// A control call got no answer in time.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// A reply that is not the message expected.
    #[error("the worker's reply is not a valid {0}")]
    BadReply(&'static str),
}

impl Failure {
    /// Whether the failure is the worker's (it counts against the worker's
    /// circuit breaker): anything but an answer that blames the request
    /// (HTTP 4xx; gRPC codes other than `UNKNOWN`, `DEADLINE_EXCEEDED`,
    /// `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS`).
    pub fn is_workers_fault(&self) -> bool {
        match self {
            Failure::HttpStatus(code, _) => *code >= 500,
            Failure::Status(status) => matches!(status.code, 2 | 4 | 13 | 14 | 15),
            _ => true,
        }
    }
}

/// Why no connection could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectFailure {
    /// The worker's host refused it (nothing listens there).
    #[error("connection refused")]
    Refused,
    /// No answer within the connect timeout.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// Anything else (unreachable, a name that does not resolve, reset
    /// during the handshake, ...); the detail is in the debug log.
    #[error("the network refused the attempt")]
    Other,
    /// The TCP connection was made, the TLS handshake failed.
    #[error("{0}")]
    Tls(tls::TlsFailure),
}

impl ConnectFailure {
    /// The kind of a failed connect's I/O error.
    pub fn from_io(error: &std::io::Error) -> Self {
        if let Some(tls) = tls::TlsFailure::from_io(error) {
            return ConnectFailure::Tls(tls);
        }
        match error.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            _ => ConnectFailure::Other,
        }
    }
}

/// A gRPC status a worker sent: its code, its message, and the trailers
/// that carried it (relayed as they are, so details survive).
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    /// The gRPC status code (`grpc-status`).
    pub code: i32,
    /// The worker's message (`grpc-message`, decoded).
    pub message: String,
    /// The headers or trailers that carried the status.
    pub trailers: HeaderMap,
}

/// A failed call, and whether any of it can have reached the worker.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{failure}")]
pub struct CallError {
    /// What went wrong.
    pub failure: Failure,
    /// Nothing of the call reached the worker, or the worker refused the
    /// stream unprocessed (no connection could be made, the connection
    /// ended before the request was queued, or `REFUSED_STREAM`): the call
    /// can go to another worker without being run twice.
    pub unsent: bool,
}

impl CallError {
    /// A failure before anything was sent.
    pub fn unsent(failure: Failure) -> Self {
        CallError {
            failure,
            unsent: true,
        }
    }

    /// A failure after the request may have reached the worker.
    pub fn sent(failure: Failure) -> Self {
        CallError {
            failure,
            unsent: false,
        }
    }
}

/// `": text"`, or nothing for no text.
fn with_colon(text: &str) -> String {
    match text.is_empty() {
        true => String::new(),
        false => format!(": {text}"),
    }
}

/// The name of an HTTP/2 error code (RFC 9113, 7).
fn reason_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "an unknown code",
    }
}
