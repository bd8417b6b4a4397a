//! A worker's KV-event stream (`SubscribeKvEvents`) as the router follows
//! it: where it is and what it has done, for listings and metrics. Written
//! by the stream's task (`kv::subscribe`), read by anyone.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Where a worker's stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Not followed (no `kv_aware` policy, or not an engine worker).
    None,
    /// Connecting (or reconnecting after a failure).
    Connecting,
    /// Events flowing.
    Live,
    /// The worker serves no `SubscribeKvEvents`.
    Unsupported,
}

impl StreamState {
    /// Its name in metrics and listings.
    pub fn name(self) -> &'static str {
        match self {
            StreamState::None => "none",
            StreamState::Connecting => "connecting",
            StreamState::Live => "live",
            StreamState::Unsupported => "unsupported",
        }
    }
}

/// The stream's state and counters.
#[derive(Debug, Default)]
pub struct KvStream {
    state: AtomicU8,
    /// Events applied to the index.
    pub events: AtomicU64,
    /// Times the worker's blocks were rebuilt from nothing (a snapshot, a
    /// gap, an engine restart; the first snapshot counts).
    pub resyncs: AtomicU64,
    /// Reconnections after a dropped stream.
    pub reconnects: AtomicU64,
    /// The last sequence number applied.
    pub sequence: AtomicU64,
    /// Blocks the index holds for the worker.
    pub blocks: AtomicU64,
}

impl KvStream {
    /// Where the stream is.
    pub fn state(&self) -> StreamState {
        match self.state.load(Ordering::Relaxed) {
            1 => StreamState::Connecting,
            2 => StreamState::Live,
            3 => StreamState::Unsupported,
            _ => StreamState::None,
        }
    }

    /// Moves the stream to `state`.
    pub fn set_state(&self, state: StreamState) {
        let v = match state {
            StreamState::None => 0,
            StreamState::Connecting => 1,
            StreamState::Live => 2,
            StreamState::Unsupported => 3,
        };
        self.state.store(v, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
