//! Routers announcing themselves in the shared registry, so each knows how
//! many share it: one key per router, `/PREFIX/routers/<lease id>`, held
//! by a lease of [`TTL`] seconds that the router keeps alive. A router
//! that stops (or loses etcd) is gone from the count within the TTL.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::wire::{describe, prefix_end, CALL_TIMEOUT, RETRY_MAX, RETRY_MIN};
use super::SharedRegistry;
use crate::pb::etcd::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest,
    PutRequest, RangeRequest,
};

/// A router's key lives this many seconds past its last keep-alive.
pub const TTL: i64 = 10;
/// How often the lease is kept alive and the routers counted.
pub const EVERY: Duration = Duration::from_secs(2);

impl SharedRegistry {
    /// Announces this router for as long as it runs, telling `count` how
    /// many routers are announced (itself included) after every look.
    /// While etcd is unreachable the last count stands.
    pub async fn announce(self: Arc<Self>, count: impl Fn(u32) + Send + 'static) {
        let mut delay = RETRY_MIN;
        loop {
            let error = self.hold(&count).await;
            tracing::warn!(url = %self.url, %error, "cannot announce this router in etcd; tenants' limits stay shared by the routers last counted");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// One lease, held until something fails: why.
    async fn hold(&self, count: &impl Fn(u32)) -> String {
        let failed = |s: tonic::Status| describe(&s);
        let mut leases = LeaseClient::new(self.channel.clone());
        let mut kv = KvClient::new(self.channel.clone());
        let grant = LeaseGrantRequest { ttl: TTL, id: 0 };
        let lease = match tokio::time::timeout(CALL_TIMEOUT, leases.lease_grant(grant)).await {
            Ok(Ok(r)) => r.into_inner().id,
            Ok(Err(s)) => return failed(s),
            Err(_) => return "lease grant timed out".into(),
        };
        let key = [self.routers.as_slice(), format!("{lease:x}").as_bytes()].concat();
        let put = PutRequest {
            key,
            value: Vec::new(),
            lease,
            ..PutRequest::default()
        };
        if let Err(s) = kv.put(put).await {
            return failed(s);
        }
        let (tx, rx) = mpsc::channel(1);
        // etcd answers the stream's headers with its first reply: a request
        // goes first.
        if tx.send(LeaseKeepAliveRequest { id: lease }).await.is_err() {
            return "the keep-alive stream closed".into();
        }
        let opened = leases.lease_keep_alive(ReceiverStream::new(rx));
        let mut alive = match tokio::time::timeout(CALL_TIMEOUT, opened).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => return failed(s),
            Err(_) => return "opening the keep-alive stream timed out".into(),
        };
        if let Err(why) = kept_alive(&mut alive).await {
            return why;
        }
        loop {
            let routers = RangeRequest {
                key: self.routers.clone(),
                range_end: prefix_end(&self.routers),
                count_only: true,
                ..RangeRequest::default()
            };
            match tokio::time::timeout(CALL_TIMEOUT, kv.range(routers)).await {
                Ok(Ok(r)) => count(
                    u32::try_from(r.into_inner().count)
                        .unwrap_or(u32::MAX)
                        .max(1),
                ),
                Ok(Err(s)) => return failed(s),
                Err(_) => return "counting the routers timed out".into(),
            }
            tokio::time::sleep(EVERY).await;
            if tx.send(LeaseKeepAliveRequest { id: lease }).await.is_err() {
                return "the keep-alive stream closed".into();
            }
            if let Err(why) = kept_alive(&mut alive).await {
                return why;
            }
        }
    }
}

/// The next keep-alive reply: the lease is still held, or why not.
async fn kept_alive(
    alive: &mut tonic::Streaming<crate::pb::etcd::etcdserverpb::LeaseKeepAliveResponse>,
) -> Result<(), String> {
    match tokio::time::timeout(CALL_TIMEOUT, alive.message()).await {
        Ok(Ok(Some(r))) if r.ttl > 0 => Ok(()),
        Ok(Ok(Some(_))) => Err("the lease expired".into()),
        Ok(Ok(None)) => Err("the keep-alive stream ended".into()),
        Ok(Err(s)) => Err(describe(&s)),
        Err(_) => Err("the keep-alive timed out".into()),
    }
}
