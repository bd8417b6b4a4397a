//! One `SubscribeKvEvents` stream per engine worker that serves it, feeding
//! the index: started when the worker is registered, ended and forgotten
//! when it is removed. A dropped stream resumes from the sequence after the
//! last one applied; a gap, a stored block whose parent is unknown, or a
//! sequence going backwards (the engine restarted) resyncs: the worker's
//! blocks are forgotten and the stream restarts from 0 (the engine's
//! current state). Load records on the stream replace `GetLoads` polling
//! for the worker while it is live. A worker that answers UNIMPLEMENTED
//! publishes no events: its policy falls back to the router's own tree.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use prost::Message;

use super::index::{EngineLoad, KvIndex};
use crate::engines::{self, Method};
use crate::pb::smg::grpc::common as smg;
use crate::transport::grpc::codec::Deframer;
use crate::transport::Failure;
use crate::worker::{
    ConnectionMode, KvStream, RegistryListener, StreamState, Worker, WorkerEvent, WorkerEventKind,
    WorkerRegistry,
};

/// One index per registry, shared by every policy built on it (one stream
/// per worker, whatever the number of policies).
static SHARED: Mutex<Vec<(Weak<WorkerRegistry>, Weak<KvEvents>)>> = Mutex::new(Vec::new());

/// The index and the streams that feed it, for one registry.
#[derive(Debug)]
pub struct KvEvents {
    index: KvIndex,
    streams: DashMap<u64, tokio::task::AbortHandle>,
    runtime: Option<tokio::runtime::Handle>,
    me: Weak<KvEvents>,
}

impl KvEvents {
    /// The index fed from `registry`'s workers: the one already made for
    /// it, or a new one ([`KvEvents::start`]).
    pub fn shared(registry: &Arc<WorkerRegistry>, pending_ttl: Duration) -> Arc<KvEvents> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        shared.retain(|(r, e)| r.strong_count() > 0 && e.strong_count() > 0);
        for (r, e) in shared.iter() {
            if r.upgrade().is_some_and(|r| Arc::ptr_eq(&r, registry)) {
                if let Some(events) = e.upgrade() {
                    return events;
                }
            }
        }
        let events = KvEvents::start(registry, pending_ttl);
        shared.push((Arc::downgrade(registry), Arc::downgrade(&events)));
        events
    }

    /// An index fed from every engine worker of `registry`, now and later
    /// (streams start only inside a Tokio runtime).
    pub fn start(registry: &Arc<WorkerRegistry>, pending_ttl: Duration) -> Arc<KvEvents> {
        let events = Arc::new_cyclic(|me| KvEvents {
            index: KvIndex::new(pending_ttl),
            streams: DashMap::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            me: me.clone(),
        });
        let listener: Weak<dyn RegistryListener> =
            Arc::downgrade(&events) as Weak<dyn RegistryListener>;
        for worker in registry.subscribe(listener) {
            events.follow(&worker);
        }
        events
    }

    /// The index.
    pub fn index(&self) -> &KvIndex {
        &self.index
    }

    /// Whether `worker`'s engine events are flowing.
    pub fn is_live(&self, worker: &Worker) -> bool {
        worker.kv_stream().state() == StreamState::Live
    }

    fn follow(&self, worker: &Arc<Worker>) {
        if worker.mode() != ConnectionMode::Grpc
            || engines::seam(worker.engine())
                .path(Method::SubscribeKvEvents)
                .is_none()
        {
            return;
        }
        let Some(runtime) = &self.runtime else { return };
        worker.kv_stream().set_state(StreamState::Connecting);
        let task = runtime.spawn(follow(self.me.clone(), worker.clone()));
        if let Some((_, old)) = self.streams.remove(&worker.ordinal()) {
            old.abort();
        }
        self.streams.insert(worker.ordinal(), task.abort_handle());
    }

    fn unfollow(&self, worker: &Worker) {
        if let Some((_, task)) = self.streams.remove(&worker.ordinal()) {
            task.abort();
        }
        worker.set_load_pushed(false);
        worker.kv_stream().set_state(StreamState::None);
        self.index.forget(worker.ordinal());
    }
}

impl RegistryListener for KvEvents {
    fn on_event(&self, event: &WorkerEvent) {
        match event.kind {
            WorkerEventKind::Added => self.follow(&event.worker),
            WorkerEventKind::Removed => self.unfollow(&event.worker),
            _ => {}
        }
    }
}

/// Why a stream ended.
enum Ended {
    /// Reconnect from the cursor.
    Dropped(Failure),
    /// Forget the worker's blocks and start from 0.
    Resync,
    /// The worker has no such call.
    Unsupported,
}

async fn follow(events: Weak<KvEvents>, worker: Arc<Worker>) {
    let stats = worker.kv_stream();
    let mut cursor: Option<u64> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(kv) = events.upgrade() else { return };
        stats.set_state(StreamState::Connecting);
        let ended = stream(&kv, &worker, &mut cursor).await;
        worker.set_load_pushed(false);
        match ended {
            Ended::Unsupported => {
                stats.set_state(StreamState::Unsupported);
                return;
            }
            Ended::Resync => {
                cursor = None;
                backoff = Duration::from_millis(100);
                continue;
            }
            Ended::Dropped(failure) => {
                tracing::debug!(worker = %worker.id(), %failure, "KV event stream dropped");
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(kv);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Follows one connection's stream; `cursor` is the last sequence applied
/// (`None`: nothing yet, start from the engine's current state).
async fn stream(kv: &KvEvents, worker: &Worker, cursor: &mut Option<u64>) -> Ended {
    let stats: &KvStream = worker.kv_stream();
    let Some(path) = engines::seam(worker.engine()).path(Method::SubscribeKvEvents) else {
        return Ended::Unsupported;
    };
    let request = smg::SubscribeKvEventsRequest {
        start_sequence_number: cursor.map_or(0, |c| c + 1),
        load_records_before_first_batch: true,
    };
    let body = match worker
        .control()
        .call(path, http::HeaderMap::new(), &request.encode_to_vec())
        .await
    {
        Ok((_, body)) => body,
        Err(e) => {
            return match &e.failure {
                // gRPC's UNIMPLEMENTED: the worker has no such method.
                Failure::Status(s) if s.code == 12 => Ended::Unsupported,
                _ => Ended::Dropped(e.failure),
            };
        }
    };
    let mut body = body;
    let mut frames = Deframer::default();
    let ordinal = worker.ordinal();
    let mut first_batch = true;
    loop {
        let chunk = match body.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ended::Dropped(Failure::NoStatus),
            Err(failure) => return Ended::Dropped(failure),
        };
        frames.push(&chunk);
        loop {
            let message = match frames.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => return Ended::Dropped(Failure::Protocol),
            };
            let Ok(batch) = super::wire::Batch::decode_any(&message) else {
                return Ended::Dropped(Failure::BadReply("KvEventBatch"));
            };
            stats.set_state(StreamState::Live);
            if let Some(load) = &batch.load {
                push_load(kv, worker, load);
            }
            if batch.load.as_ref().is_some_and(|l| l.load_only) {
                continue;
            }
            let seq = batch.sequence_number;
            let first = std::mem::take(&mut first_batch);
            if let Some(snapshot) = &batch.snapshot {
                if snapshot.index == 0 {
                    kv.index.clear(ordinal);
                    stats.resyncs.fetch_add(1, Ordering::Relaxed);
                }
            } else if cursor.is_some_and(|c| seq <= c) {
                if !first {
                    continue; // already applied
                }
                // Resumed, yet numbered from before the cursor: the engine
                // restarted and numbers from 1 again.
                kv.index.clear(ordinal);
                stats.resyncs.fetch_add(1, Ordering::Relaxed);
            } else if cursor.is_some_and(|c| seq > c + 1) {
                // A gap: something was lost.
                kv.index.clear(ordinal);
                stats.resyncs.fetch_add(1, Ordering::Relaxed);
                return Ended::Resync;
            }
            let applied = kv.index.apply(ordinal, &batch.events);
            stats.events.fetch_add(applied.events, Ordering::Relaxed);
            *cursor = Some(seq);
            stats.sequence.store(seq, Ordering::Relaxed);
            stats
                .blocks
                .store(kv.index.blocks(ordinal) as u64, Ordering::Relaxed);
            if applied.orphans > 0 {
                kv.index.clear(ordinal);
                stats.resyncs.fetch_add(1, Ordering::Relaxed);
                return Ended::Resync;
            }
        }
    }
}

fn push_load(kv: &KvEvents, worker: &Worker, load: &smg::EngineLoad) {
    let queued = load.waiting_uncached_tokens;
    kv.index.set_load(
        worker.ordinal(),
        EngineLoad {
            running: load.running_requests,
            waiting: load.waiting_requests,
            queued_tokens: queued,
            active_usage: load.active_token_usage.unwrap_or(load.token_usage),
        },
    );
    worker.set_engine_load(
        load.running_requests + load.waiting_requests,
        load.token_usage,
    );
    worker.set_load_pushed(true);
}
