//! `--registry etcd://HOST:PORT[,HOST:PORT...]/PREFIX`: one registry shared
//! by every router given the same URL.
//!
//! Each worker is one key, `/PREFIX/workers/<normalized url>`, whose value
//! is a [`StoredWorker`] (JSON) carrying the worker's id, so a worker has
//! the same id on every router. The key being the URL makes a duplicate
//! URL a failed transaction (`create_revision == 0`), even when two routers
//! race.
//!
//! Every router mirrors the prefix into its in-process registry: a full
//! list, then a watch from the next revision. The hot path reads only the
//! in-process registry and never waits on etcd. A management call writes
//! to etcd and then waits until this router's mirror has applied the
//! revision it wrote, so a worker is routable here when `AddWorker`
//! returns; other routers follow through their own watches.
//!
//! When etcd is lost the mirror keeps the last known set (routing goes on),
//! management calls are refused with `UNAVAILABLE`, and the mirror retries
//! with backoff; when etcd is back it lists afresh and applies the
//! difference. A watch that fell behind a compaction lists afresh at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::record::{StoreError, StoredWorker};

mod mirror;
mod presence;
mod wire;

use crate::pb::etcd::etcdserverpb::{
    kv_client::KvClient, request_op, response_op, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, TxnResponse,
};
use crate::worker::{RegistryError, Source, Worker, WorkerId, WorkerRegistry, WorkerSpec};
pub use wire::EtcdUrl;
use wire::{created_at, describe, APPLY_TIMEOUT, CALL_TIMEOUT};

/// Whether etcd answers.
#[derive(Debug, Clone)]
enum Reach {
    Connected,
    Lost { error: String, since: Instant },
}

/// The shared registry: etcd, mirrored into this router's registry.
#[derive(Debug)]
pub struct SharedRegistry {
    /// As the operator gave it, for messages.
    url: String,
    /// `/PREFIX/workers/`.
    prefix: Vec<u8>,
    /// The routers' keys' prefix (`/PREFIX/routers/`).
    routers: Vec<u8>,
    channel: Channel,
    registry: Arc<WorkerRegistry>,
    /// The latest etcd revision the mirror has applied.
    applied: watch::Sender<i64>,
    reach: watch::Sender<Reach>,
    /// The `create_revision` of each mirrored worker's key: a removal
    /// deletes exactly that key version, not a later re-add of the URL.
    revisions: Mutex<HashMap<WorkerId, i64>>,
}

impl SharedRegistry {
    /// Connects to etcd and lists the shared workers into `registry`. If
    /// etcd cannot be reached this fails, unless `optional`, in which case
    /// the registry starts empty and the mirror keeps trying.
    /// [`mirror`](Self::mirror) must then run for the registry to follow.
    pub async fn connect(
        url: &str,
        registry: Arc<WorkerRegistry>,
        optional: bool,
    ) -> Result<Arc<SharedRegistry>, String> {
        let parsed = EtcdUrl::parse(url)?;
        let mut endpoints = Vec::new();
        for e in &parsed.endpoints {
            let endpoint = Endpoint::from_shared(e.clone())
                .map_err(|err| format!("{e}: {err}"))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                // A dead etcd behind a silent network is noticed in seconds.
                .http2_keep_alive_interval(Duration::from_secs(2))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true);
            endpoints.push(endpoint);
        }
        let channel = match endpoints.len() {
            1 => endpoints.remove(0).connect_lazy(),
            _ => Channel::balance_list(endpoints.into_iter()),
        };
        let shared = Arc::new(SharedRegistry {
            url: url.to_string(),
            prefix: format!("{}/workers/", parsed.prefix).into_bytes(),
            routers: format!("{}/routers/", parsed.prefix).into_bytes(),
            channel,
            registry,
            applied: watch::channel(0).0,
            reach: watch::channel(Reach::Lost {
                error: "not connected yet".into(),
                since: Instant::now(),
            })
            .0,
            revisions: Mutex::new(HashMap::new()),
        });
        match shared.list().await {
            Ok(()) => {}
            Err(e) if optional => {
                tracing::warn!(url, error = %e, "etcd is unreachable; starting without the shared workers (--registry-optional), they are listed when it is back");
                shared.lost(e);
            }
            Err(e) => {
                return Err(format!(
                    "cannot reach etcd at {url}: {e}; start etcd or fix the address, or pass --registry-optional to start without the shared workers and list them when etcd is reachable"
                ))
            }
        }
        Ok(shared)
    }

    fn connected(&self) {
        self.reach.send_if_modified(|reach| {
            let was_lost = matches!(reach, Reach::Lost { .. });
            if was_lost {
                tracing::info!(url = %self.url, "etcd is reachable; the shared registry is in sync");
                *reach = Reach::Connected;
            }
            was_lost
        });
    }

    fn lost(&self, error: String) {
        self.reach.send_if_modified(|reach| match reach {
            Reach::Connected => {
                tracing::warn!(url = %self.url, error = %error, "etcd is unreachable: routing continues with the last known workers; management calls are refused until it is back");
                *reach = Reach::Lost {
                    error,
                    since: Instant::now(),
                };
                true
            }
            Reach::Lost { error: last, .. } => {
                *last = error;
                false
            }
        });
    }

    /// Refuses a change while etcd is unreachable.
    fn check_reachable(&self) -> Result<(), StoreError> {
        match &*self.reach.borrow() {
            Reach::Connected => Ok(()),
            Reach::Lost { error, since } => Err(StoreError::Unavailable(format!(
                "the shared registry (etcd at {}) is unreachable ({error}; for {} s): workers cannot be added or removed until it is back; this router keeps routing to the {} workers it knew",
                self.url,
                since.elapsed().as_secs(),
                self.registry.len()
            ))),
        }
    }

    fn key(&self, url: &str) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(url.as_bytes());
        key
    }

    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, StoreError> {
        let mut kv = KvClient::new(self.channel.clone());
        match tokio::time::timeout(CALL_TIMEOUT, kv.txn(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.failed(describe(&status))),
            Err(_) => Err(self.failed(format!("no answer within {CALL_TIMEOUT:?}"))),
        }
    }

    fn failed(&self, error: String) -> StoreError {
        StoreError::Unavailable(format!(
            "the shared registry (etcd at {}) did not take the change: {error}; it may or may not have been made: ListWorkers shows which",
            self.url
        ))
    }

    /// Waits until this router's registry has applied `revision`.
    async fn wait_applied(&self, revision: i64) -> Result<(), StoreError> {
        let mut applied = self.applied.subscribe();
        let caught_up = tokio::time::timeout(APPLY_TIMEOUT, async {
            applied.wait_for(|r| *r >= revision).await.is_ok()
        })
        .await;
        match caught_up {
            Ok(true) => Ok(()),
            _ => Err(StoreError::Unavailable(format!(
                "etcd took the change (revision {revision}), but this router's watch has not delivered it within {APPLY_TIMEOUT:?}; the other routers have it, and this one will when its watch catches up"
            ))),
        }
    }

    /// Writes a new worker; it is routable on this router when this returns.
    pub(super) async fn add(&self, spec: WorkerSpec) -> Result<Arc<Worker>, StoreError> {
        if spec.source == Source::Startup && self.check_reachable().is_err() {
            // --registry-optional with etcd down at start: this router's own.
            tracing::warn!(
                url = spec.url(),
                "etcd is unreachable: startup worker registered on this router only"
            );
            return Ok(self.registry.add(spec)?);
        }
        self.check_reachable()?;
        self.registry.check(&spec)?;
        let id = WorkerId::generate();
        let key = self.key(spec.url());
        let value = serde_json::to_vec(&StoredWorker::new(&id, &spec))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let response = self
            .txn(TxnRequest {
                // The URL is not in the shared registry.
                compare: vec![created_at(&key, 0)],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: key.clone(),
                        value,
                        ..Default::default()
                    })),
                }],
                failure: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key,
                        ..Default::default()
                    })),
                }],
            })
            .await?;
        if !response.succeeded {
            // Another router registered the URL first.
            let existing = response
                .responses
                .iter()
                .find_map(|r| match &r.response {
                    Some(response_op::Response::ResponseRange(range)) => range.kvs.first(),
                    _ => None,
                })
                .and_then(|kv| self.decode(kv));
            return Err(match existing {
                Some((id, _)) => RegistryError::AlreadyExists {
                    url: spec.url().to_string(),
                    id,
                }
                .into(),
                None => StoreError::Unavailable(format!(
                    "{} is already in the shared registry, under an entry this router cannot read",
                    spec.url()
                )),
            });
        }
        self.wait_applied(response.header.map_or(0, |h| h.revision))
            .await?;
        self.registry.get(id.as_str()).map_err(|_| {
            StoreError::Unavailable(format!(
                "{} was written to the shared registry, but this router could not register it (a conflicting worker was added on another router at the same moment; see this router's log)",
                spec.url()
            ))
        })
    }

    /// Deletes a worker; no call on this router chooses it once this returns.
    pub(super) async fn remove(&self, worker: &Arc<Worker>) -> Result<(), StoreError> {
        let create_revision = self.revisions_mut().get(worker.id()).copied();
        let Some(create_revision) = create_revision else {
            // Registered on this router only (etcd was down at its start).
            self.registry.remove(worker.id().as_str())?;
            return Ok(());
        };
        self.check_reachable()?;
        let key = self.key(worker.url());
        let response = self
            .txn(TxnRequest {
                compare: vec![created_at(&key, create_revision)],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        DeleteRangeRequest {
                            key,
                            ..Default::default()
                        },
                    )),
                }],
                failure: Vec::new(),
            })
            .await?;
        if !response.succeeded {
            return Err(RegistryError::NotFound {
                what: "id",
                value: worker.id().to_string(),
            }
            .into());
        }
        self.wait_applied(response.header.map_or(0, |h| h.revision))
            .await
    }

    /// What readiness shows.
    pub fn status(&self) -> serde_json::Value {
        let revision = *self.applied.borrow();
        match &*self.reach.borrow() {
            Reach::Connected => serde_json::json!({
                "kind": "etcd", "url": self.url, "reachable": true, "revision": revision,
            }),
            Reach::Lost { error, since } => serde_json::json!({
                "kind": "etcd", "url": self.url, "reachable": false, "revision": revision,
                "error": error, "unreachable_for_s": since.elapsed().as_secs(),
                "note": "routing continues with the last known workers; management calls are refused",
            }),
        }
    }
}

#[cfg(test)]
mod tests;
