//! Load accounting by guard (DESIGN invariant 4), and the call's outcome
//! for the worker's circuit breaker.
//!
//! A [`LoadGuard`] is taken before a request is dispatched to a worker and
//! lives inside the response stream, so the worker's in-flight count drops
//! when the stream ends, fails or is cancelled, on every path, without any
//! exit having to remember it. Counters are never reset on a timer.
//!
//! The guard is also the call's ticket with the worker's circuit: taking it
//! makes the call the circuit's probe when the circuit is half-open, and
//! [`LoadGuard::settle`] reports how the call ended. A guard dropped
//! unsettled (the client went away) decides nothing, and frees the probe
//! turn for the next call.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Outcome, Worker};

/// Counts one request against a worker's in-flight load while alive.
#[derive(Debug)]
pub struct LoadGuard {
    worker: Arc<Worker>,
    /// This call is the worker's half-open circuit probe.
    probe: bool,
    settled: bool,
}

impl LoadGuard {
    /// Counts a request against `worker` until the guard is dropped.
    pub fn new(worker: Arc<Worker>) -> Self {
        worker.in_flight.fetch_add(1, Ordering::Relaxed);
        let probe = worker.take_probe();
        LoadGuard {
            worker,
            probe,
            settled: false,
        }
    }

    /// The worker this guard counts against.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// Reports how the call ended to the worker's circuit; only the first
    /// report of a call counts.
    pub fn settle(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        self.worker.record_outcome(self.probe, outcome);
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.worker.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.settled && self.probe {
            self.worker.record_outcome(true, Outcome::Neutral);
        }
    }
}
