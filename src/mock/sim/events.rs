//! The simulated engine's `SubscribeKvEvents` publisher, as `common.proto`
//! defines it: batches numbered from 1, a bounded history a subscriber
//! resumes from (`start_sequence_number`), a snapshot of the live blocks
//! (one `KvSnapshotChunk`: `AllBlocksCleared` then every block, parents
//! first) for a subscriber whose cursor the history no longer reaches, that
//! starts from 0, or that is ahead of the engine (it restarted), and an
//! `EngineLoad` on every batch and on `load_only` records between them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::cache::CacheEvent;
use crate::pb::smg::grpc::common as smg;

/// Batches kept for resuming subscribers, by default.
pub const HISTORY: usize = 4096;

/// Live batches buffered per subscriber before it is cut off (it then
/// resumes from its cursor).
const LAG: usize = 1024;

#[derive(Debug)]
struct State {
    next: u64,
    history: VecDeque<Arc<smg::KvEventBatch>>,
}

/// Numbers, keeps and sends one engine's batches.
#[derive(Debug)]
pub struct Publisher {
    state: Mutex<State>,
    history: usize,
    live: broadcast::Sender<Arc<smg::KvEventBatch>>,
    started: std::time::Instant,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher::new(HISTORY)
    }
}

impl Publisher {
    /// A publisher keeping `history` batches.
    pub fn new(history: usize) -> Self {
        Publisher {
            history: history.max(1),
            state: Mutex::new(State {
                next: 1,
                history: VecDeque::new(),
            }),
            live: broadcast::channel(LAG).0,
            started: std::time::Instant::now(),
        }
    }
}

/// Converts the cache's events to the wire's.
pub fn wire_events(events: Vec<CacheEvent>) -> Vec<smg::KvCacheEvent> {
    use smg::kv_cache_event::Data;
    events
        .into_iter()
        .map(|e| smg::KvCacheEvent {
            event_id: 0,
            data: Some(match e {
                CacheEvent::Stored {
                    hash,
                    parent,
                    tokens,
                } => Data::Stored(smg::KvBlocksStored {
                    blocks: vec![smg::KvBlock {
                        block_hash: hash as i64,
                        block_size: tokens.len() as i32,
                        token_ids: tokens,
                        ..Default::default()
                    }],
                    parent_block_hash: parent.map(|p| p as i64),
                    ..Default::default()
                }),
                CacheEvent::Removed { hash } => Data::Removed(smg::KvBlocksRemoved {
                    block_hashes: vec![hash as i64],
                    ..Default::default()
                }),
                CacheEvent::Cleared => Data::Cleared(smg::KvCacheCleared::default()),
            }),
        })
        .collect()
}

impl Publisher {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers, keeps and sends a batch of `events` with `load`.
    pub fn publish(&self, events: Vec<CacheEvent>, load: smg::EngineLoad) {
        let mut state = self.lock();
        let batch = Arc::new(smg::KvEventBatch {
            sequence_number: state.next,
            timestamp: self.now(),
            events: wire_events(events),
            load: Some(load),
            ..Default::default()
        });
        state.next += 1;
        state.history.push_back(batch.clone());
        if state.history.len() > self.history {
            state.history.pop_front();
        }
        let _ = self.live.send(batch);
    }

    /// Sends a `load_only` record (numbered with the last batch's number).
    pub fn publish_load(&self, mut load: smg::EngineLoad) {
        let state = self.lock();
        load.load_only = true;
        let batch = Arc::new(smg::KvEventBatch {
            sequence_number: state.next - 1,
            timestamp: self.now(),
            load: Some(load),
            ..Default::default()
        });
        let _ = self.live.send(batch);
    }

    /// What a subscriber starting at `start` is sent first (history to
    /// resume from, or a snapshot made by `snapshot`), and the live batches
    /// after it.
    pub fn subscribe(
        &self,
        start: u64,
        snapshot: impl FnOnce() -> Vec<CacheEvent>,
    ) -> (
        Vec<Arc<smg::KvEventBatch>>,
        broadcast::Receiver<Arc<smg::KvEventBatch>>,
    ) {
        let state = self.lock();
        let live = self.live.subscribe();
        let last = state.next - 1;
        let oldest = state
            .history
            .front()
            .map_or(state.next, |b| b.sequence_number);
        let first = if start >= 1 && start >= oldest && start <= last + 1 {
            state
                .history
                .iter()
                .filter(|b| b.sequence_number >= start)
                .cloned()
                .collect()
        } else {
            // A snapshot numbered as the last batch: live ones follow it.
            let mut events = vec![CacheEvent::Cleared];
            let blocks = snapshot();
            let count = blocks.len() as u64;
            events.extend(blocks);
            vec![Arc::new(smg::KvEventBatch {
                sequence_number: last,
                timestamp: self.now(),
                events: wire_events(events),
                snapshot: Some(smg::KvSnapshotChunk {
                    index: 0,
                    count: 1,
                    blocks: count,
                    unknown_before: 0,
                }),
                ..Default::default()
            })]
        };
        (first, live)
    }
}
