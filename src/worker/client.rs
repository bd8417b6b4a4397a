//! Connection settings for gRPC workers, and the tonic channel used for
//! control calls (health checks, `Abort`).
//!
//! The control channel is created lazily (no connection until the first
//! call) and reconnects by itself after a worker restarts. Proxied
//! `Generate` calls use [`super::Upstream`] instead.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use super::Endpoint;

/// Connection settings shared by every worker channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Limit on establishing a TCP connection to a worker.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval, to notice dead workers (see
    /// [`super::Upstream`] for the data path).
    pub keep_alive_interval: Duration,
    /// HTTP/2 connections per worker. One connection's frames are handled by
    /// one task; two let a 2-core router use both cores for one hot worker.
    pub connections: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            connect_timeout: Duration::from_secs(2),
            keep_alive_interval: Duration::from_secs(30),
            connections: 2,
        }
    }
}

impl ChannelConfig {
    pub(crate) fn lazy_channel(&self, endpoint: &Endpoint) -> Channel {
        // The endpoint was validated when the spec was made, so this URI is
        // well formed; `from_shared` can only fail on a malformed one.
        let uri = format!("http://{}", endpoint.authority());
        match TonicEndpoint::from_shared(uri) {
            Ok(e) => e
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(self.keep_alive_interval)
                .keep_alive_while_idle(false)
                .connect_lazy(),
            Err(_) => unreachable!("validated endpoint {} is a valid URI", endpoint.url()),
        }
    }
}
