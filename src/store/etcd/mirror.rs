//! The read side of the shared registry: a full list of the prefix, then a
//! watch from the next revision, applied to this router's registry.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::wire::{describe, prefix_end, CALL_TIMEOUT, MAX_MESSAGE, RETRY_MAX, RETRY_MIN};
use super::{Reach, SharedRegistry};
use crate::pb::etcd::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request, RangeRequest,
    WatchCreateRequest, WatchRequest,
};
use crate::pb::etcd::mvccpb::{event::EventType, Event, KeyValue};
use crate::store::record::StoredWorker;
use crate::worker::{Source, WorkerId, WorkerSpec};

/// Why a watch ended.
enum Ended {
    /// It fell behind a compaction: list again.
    Compacted,
    /// etcd was lost.
    Lost(String),
}

impl SharedRegistry {
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
    pub(super) async fn list(&self) -> Result<(), String> {
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

    pub(super) fn apply(&self, event: &Event) {
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
    pub(super) fn register(&self, id: WorkerId, spec: WorkerSpec) {
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

    pub(super) fn decode(&self, kv: &KeyValue) -> Option<(WorkerId, WorkerSpec)> {
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

    pub(super) fn revisions_mut(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerId, i64>> {
        self.revisions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
