//! Running calls by request id, so that `Abort(request_id)` sent to the
//! router reaches the worker that is serving it.
//!
//! A `DashMap`, because every call writes it twice (insert, remove) from many
//! tasks at once. Entries are removed by an RAII [`InflightEntry`] held by the
//! call's stream, and only by their own owner when ids collide.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::worker::Worker;

/// The workers serving one call: one, or a prefill and a decode worker.
type Serving = Arc<[Arc<Worker>]>;

/// The table of calls in flight.
#[derive(Debug, Default)]
pub struct InflightCalls {
    calls: DashMap<String, (u64, Serving)>,
    next: AtomicU64,
}

impl InflightCalls {
    /// Records that `request_id` is being served by `workers` (one, or a
    /// prefill and a decode worker) until the returned entry is dropped. A
    /// later call with the same id replaces it.
    pub fn register(
        self: &Arc<Self>,
        request_id: &str,
        workers: Vec<Arc<Worker>>,
    ) -> InflightEntry {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.calls
            .insert(request_id.to_string(), (token, workers.into()));
        InflightEntry {
            table: self.clone(),
            request_id: request_id.to_string(),
            token,
        }
    }

    /// The workers serving `request_id`, if it is running.
    pub fn workers_for(&self, request_id: &str) -> Option<Serving> {
        self.calls.get(request_id).map(|e| e.1.clone())
    }

    /// Number of calls in flight.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// Removes its call from the table when dropped.
#[derive(Debug)]
pub struct InflightEntry {
    table: Arc<InflightCalls>,
    request_id: String,
    token: u64,
}

impl Drop for InflightEntry {
    fn drop(&mut self) {
        self.table
            .calls
            .remove_if(&self.request_id, |_, (token, _)| *token == self.token);
    }
}
