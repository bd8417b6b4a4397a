//! gRPC workers over HTTP/2: the client ([`Upstream`], one connection each,
//! on the `h2` crate), the relayed response body ([`ResponseStream`]),
//! message framing ([`codec`]) and metadata rules ([`metadata`]).

mod body;
mod client;
pub mod codec;
pub mod metadata;

use std::time::Duration;

pub use body::ResponseStream;
pub use client::Upstream;

/// The path of `Generate` on gRPC workers (they speak the router's own
/// service): the one most calls take.
pub const GENERATE_PATH: &str = "/switchyard.v1.Inference/Generate";

/// Connection settings shared by every gRPC worker connection.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Limit on establishing a TCP connection to a worker.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval, to notice dead workers.
    pub keep_alive_interval: Duration,
    /// HTTP/2 connections per worker. One connection's frames are handled by
    /// one task; two let a 2-core router use both cores for one hot worker.
    pub connections: usize,
    /// HTTP/2 receive window per stream: what one response may have
    /// waiting in the router while its client does not read.
    pub stream_window: u32,
    /// TLS for `grpcs://` workers (`None`: the system's roots, no client
    /// certificate).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            connect_timeout: Duration::from_secs(2),
            keep_alive_interval: Duration::from_secs(30),
            connections: 2,
            stream_window: 64 * 1024,
            tls: None,
        }
    }
}
