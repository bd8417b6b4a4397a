//! Load accounting by guard (DESIGN invariant 4).
//!
//! A [`LoadGuard`] is taken before a request is dispatched to a worker and
//! lives inside the response stream, so the worker's in-flight count drops
//! when the stream ends, fails or is cancelled, on every path, without any
//! exit having to remember it. Counters are never reset on a timer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Worker;

/// Counts one request against a worker's in-flight load while alive.
#[derive(Debug)]
pub struct LoadGuard {
    worker: Arc<Worker>,
}

impl LoadGuard {
    /// Counts a request against `worker` until the guard is dropped.
    pub fn new(worker: Arc<Worker>) -> Self {
        worker.in_flight.fetch_add(1, Ordering::Relaxed);
        LoadGuard { worker }
    }

    /// The worker this guard counts against.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.worker.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
