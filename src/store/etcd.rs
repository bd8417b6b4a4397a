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

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::record::{StoreError, StoredWorker};
use crate::pb::etcd::etcdserverpb::{
    compare, kv_client::KvClient, request_op, response_op, watch_client::WatchClient,
    watch_request, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    TxnResponse, WatchCreateRequest, WatchRequest,
};
use crate::pb::etcd::mvccpb::{event::EventType, Event, KeyValue};
use crate::worker::{RegistryError, Source, Worker, WorkerId, WorkerRegistry, WorkerSpec};

/// The longest one etcd call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a management call waits for its own change to come back
/// through this router's watch.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry delays while etcd is unreachable.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// A full list of many workers is one message.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A parsed `etcd://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://host:port`, one per etcd member given.
    pub endpoints: Vec<String>,
    /// The key prefix, with a leading and no trailing `/`.
    pub prefix: String,
}

impl EtcdUrl {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
    pub fn parse(url: &str) -> Result<EtcdUrl, String> {
        const SHAPE: &str = "expected etcd://HOST:PORT[,HOST:PORT...]/PREFIX, e.g. etcd://127.0.0.1:2379/switchyard";
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("not an etcd:// URL; {SHAPE}"))?;
        let (hosts, prefix) = rest
            .split_once('/')
            .ok_or_else(|| format!("no /PREFIX; {SHAPE}"))?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "the prefix must be non-empty, without spaces; {SHAPE}"
            ));
        }
        let endpoints = hosts
            .split(',')
            .map(|h| {
                let authority: http::uri::Authority = h
                    .parse()
                    .map_err(|_| format!("{h:?} is not HOST:PORT; {SHAPE}"))?;
                match authority.port_u16() {
                    Some(p) if p != 0 && !authority.as_str().contains('@') => {
                        Ok(format!("http://{authority}"))
                    }
                    _ => Err(format!("{h:?} needs a port (etcd's is 2379); {SHAPE}")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcdUrl {
            endpoints,
            prefix: format!("/{}", prefix.trim_start_matches('/')),
        })
    }
}

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

    /// Follows etcd for as long as it runs: a watch from the last applied
    /// revision, and a fresh list whenever the watch ends (etcd lost, or
    /// fell behind a compaction).
    pub async fn mirror(self: Arc<Self>) {
        let mut delay = RETRY_MIN;
        let mut listed = matches!(*self.reach.borrow(), Reach::Connected);
        loop {
            if !listed {
                if let Err(e) = self.list().await {
                    self.lost(e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                    continue;
                }
                delay = RETRY_MIN;
            }
            let start = *self.applied.borrow() + 1;
            listed = false;
            match self.follow(start).await {
                Ended::Compacted => {
                    tracing::info!(url = %self.url, "the etcd watch fell behind a compaction; listing the shared workers afresh");
                }
                Ended::Lost(e) => {
                    self.lost(e);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Reads every shared worker and makes the registry match.
    async fn list(&self) -> Result<(), String> {
        let request = RangeRequest {
            key: self.prefix.clone(),
            range_end: prefix_end(&self.prefix),
            ..Default::default()
        };
        let mut kv = KvClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE);
        let response = tokio::time::timeout(CALL_TIMEOUT, kv.range(request))
            .await
            .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
            .map_err(|s| describe(&s))?
            .into_inner();
        let revision = response.header.map_or(0, |h| h.revision);
        let mut listed: HashMap<WorkerId, (WorkerSpec, i64)> = HashMap::new();
        for kv in response.kvs {
            if let Some((id, spec)) = self.decode(&kv) {
                listed.insert(id, (spec, kv.create_revision));
            }
        }
        for worker in self.registry.list() {
            let keep = listed
                .get(worker.id())
                .is_some_and(|(spec, _)| spec.url() == worker.url());
            if !keep && worker.spec().source == Source::Added {
                let _ = self.registry.remove(worker.id().as_str());
                tracing::info!(worker = %worker.id(), url = worker.url(), "worker removed: no longer in the shared registry");
            }
        }
        let mut revisions = HashMap::new();
        for (id, (spec, create_revision)) in listed {
            revisions.insert(id.clone(), create_revision);
            if self.registry.get(id.as_str()).is_err() {
                self.register(id, spec);
            }
        }
        *self.revisions.lock().unwrap_or_else(|p| p.into_inner()) = revisions;
        self.applied.send_replace(revision);
        self.connected();
        Ok(())
    }

    /// Applies watch events from `start` on, until the watch ends.
    async fn follow(&self, start: i64) -> Ended {
        let (requests, rx) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: self.prefix.clone(),
                    range_end: prefix_end(&self.prefix),
                    start_revision: start,
                    ..Default::default()
                },
            )),
        };
        if requests.send(create).await.is_err() {
            return Ended::Lost("the watch request could not be queued".into());
        }
        let mut client =
            WatchClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE);
        let mut stream =
            match tokio::time::timeout(CALL_TIMEOUT, client.watch(ReceiverStream::new(rx))).await {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => return Ended::Lost(describe(&status)),
                Err(_) => return Ended::Lost(format!("no answer within {CALL_TIMEOUT:?}")),
            };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return Ended::Lost("etcd ended the watch".into()),
                Err(status) => return Ended::Lost(describe(&status)),
            };
            if response.compact_revision != 0 {
                return Ended::Compacted;
            }
            if response.canceled {
                return Ended::Lost(format!(
                    "etcd canceled the watch: {}",
                    response.cancel_reason
                ));
            }
            if response.created {
                self.connected();
            }
            let mut latest = 0;
            for event in &response.events {
                if let Some(kv) = &event.kv {
                    latest = latest.max(kv.mod_revision);
                }
                self.apply(event);
            }
            self.applied.send_if_modified(|applied| {
                let newer = latest > *applied;
                if newer {
                    *applied = latest;
                }
                newer
            });
        }
        // `requests` lives until here: dropping it would end the watch.
    }

    fn apply(&self, event: &Event) {
        let Some(kv) = &event.kv else { return };
        if event.r#type == EventType::Delete as i32 {
            let url = String::from_utf8_lossy(&kv.key[self.prefix.len().min(kv.key.len())..]);
            if let Ok(worker) = self.registry.get_by_url(&url) {
                if worker.spec().source == Source::Added {
                    let _ = self.registry.remove(worker.id().as_str());
                    self.revisions_mut().remove(worker.id());
                    tracing::info!(worker = %worker.id(), url = worker.url(), "worker removed through the shared registry");
                }
            }
            return;
        }
        let Some((id, spec)) = self.decode(kv) else {
            return;
        };
        self.revisions_mut().insert(id.clone(), kv.create_revision);
        if self.registry.get(id.as_str()).is_err() {
            self.register(id, spec);
        }
    }

    /// Registers a shared worker here, replacing a worker of the same URL
    /// under another id (a removal and re-add this mirror saw only the end of).
    fn register(&self, id: WorkerId, spec: WorkerSpec) {
        if let Ok(other) = self.registry.get_by_url(spec.url()) {
            if other.spec().source == Source::Added {
                let _ = self.registry.remove(other.id().as_str());
            }
        }
        match self.registry.add_with_id(spec, id.clone()) {
            Ok(worker) => {
                tracing::info!(worker = %worker.id(), url = worker.url(), model = %worker.model(), "worker added through the shared registry");
            }
            Err(e) => {
                tracing::warn!(worker = %id, error = %e, "a worker of the shared registry cannot be registered on this router");
            }
        }
    }

    fn decode(&self, kv: &KeyValue) -> Option<(WorkerId, WorkerSpec)> {
        let key = String::from_utf8_lossy(&kv.key);
        let decoded = serde_json::from_slice::<StoredWorker>(&kv.value)
            .map_err(|e| e.to_string())
            .and_then(StoredWorker::into_spec);
        match decoded {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "skipping an entry of the shared registry that is not a worker");
                None
            }
        }
    }

    fn revisions_mut(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerId, i64>> {
        self.revisions.lock().unwrap_or_else(|p| p.into_inner())
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

/// Why a watch ended.
enum Ended {
    /// It fell behind a compaction: list again.
    Compacted,
    /// etcd was lost.
    Lost(String),
}

/// A transaction condition: `key` was created at `revision` (0: `key`
/// does not exist).
fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::CreateRevision(revision)),
    }
}

/// The end of the range of keys that start with `prefix` (etcd's rule:
/// the prefix with its last byte incremented).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A status from etcd or from the connection to it, with its causes
/// (tonic's transport errors say "tcp connect error" and keep the why
/// in their sources).
fn describe(status: &tonic::Status) -> String {
    let mut text = match status.message() {
        "" => format!("{:?}", status.code()),
        message => message.to_string(),
    };
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = EtcdUrl::parse("etcd://127.0.0.1:2379,[::1]:2380/switchyard/").unwrap();
        assert_eq!(u.endpoints, ["http://127.0.0.1:2379", "http://[::1]:2380"]);
        assert_eq!(u.prefix, "/switchyard");
        for (bad, needle) in [
            ("http://h:1/p", "not an etcd://"),
            ("etcd://h:1", "no /PREFIX"),
            ("etcd://h:1/", "non-empty"),
            ("etcd://h/p", "needs a port"),
            ("etcd://h:1,/p", "not HOST:PORT"),
        ] {
            let err = EtcdUrl::parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }
}
