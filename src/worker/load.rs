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
//! turn for the next call, unless the worker still owed its first answer
//! at the call's deadline ([`LoadGuard::answer_by`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::stats::Ending;
use super::{Outcome, Worker};

/// Counts one request against a worker's in-flight load while alive.
#[derive(Debug)]
pub struct LoadGuard {
    worker: Arc<Worker>,
    /// This call is the worker's half-open circuit probe.
    probe: bool,
    settled: bool,
    /// While the worker has not answered: the call's deadline. A call
    /// dropped unanswered at its deadline counts against the worker.
    unanswered_by: Option<Instant>,
    /// When the call was sent, for the worker's latency histograms.
    sent: Instant,
    /// The worker's first answer has been timed.
    answer_timed: bool,
}

/// How close to its deadline a dropped call counts as having reached it:
/// a client that enforces its own deadline cancels about when the router's
/// copy of it would fire, give or take the trip between them.
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

impl LoadGuard {
    /// Counts a request against `worker` until the guard is dropped.
    pub fn new(worker: Arc<Worker>) -> Self {
        worker.in_flight.fetch_add(1, Ordering::Relaxed);
        let probe = worker.take_probe();
        LoadGuard {
            worker,
            probe,
            settled: false,
            unanswered_by: None,
            sent: Instant::now(),
            answer_timed: false,
        }
    }

    /// The worker owes an answer by `deadline`: if the call is dropped
    /// unsettled then (the client gave up at its deadline: most gRPC
    /// clients enforce it themselves, before the router's copy of it
    /// fires), the worker failed it. Cleared by [`Self::answered`].
    pub fn answer_by(&mut self, deadline: Instant) {
        self.unanswered_by = Some(deadline);
    }

    /// The worker answered (its first chunk, or its response headers):
    /// from here a cancelled call says nothing about it (a stream cut by
    /// the client's deadline is the client's choice). The first call times
    /// the answer.
    pub fn answered(&mut self) {
        self.unanswered_by = None;
        if !std::mem::replace(&mut self.answer_timed, true) {
            self.worker.stats.first_answer.observe(self.sent.elapsed());
        }
    }

    /// The worker answered well (a first chunk of its stream, a success
    /// status): a half-open probe has shown the worker serves again, and
    /// the circuit hears it now rather than when the call ends, so a probe
    /// streaming a long generation does not keep every other call off a
    /// recovered worker until it ends. How the call then ends counts as
    /// any call's.
    pub fn proven(&mut self) {
        if std::mem::take(&mut self.probe) {
            self.worker.record_outcome(true, Outcome::Success);
        }
    }

    /// When the call was sent.
    pub fn sent(&self) -> Instant {
        self.sent
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
        self.count(match outcome {
            Outcome::Success => Ending::Success,
            Outcome::Failure => Ending::Failure,
            Outcome::Neutral => Ending::Other,
        });
    }

    fn count(&self, ending: Ending) {
        let stats = &self.worker.stats;
        stats.ended(ending);
        stats.duration.observe(self.sent.elapsed());
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        let before = self.worker.in_flight.fetch_sub(1, Ordering::Relaxed);
        if before == self.worker.max_in_flight {
            // A call waiting for a worker of this one's model may go now.
            if let Some(freed) = &self.worker.slot_freed {
                freed.notify_waiters();
            }
        }
        if self.settled {
            return;
        }
        let timed_out = self
            .unanswered_by
            .is_some_and(|deadline| Instant::now() + DEADLINE_SLACK >= deadline);
        if timed_out {
            self.worker.record_outcome(self.probe, Outcome::Failure);
            self.count(Ending::Failure);
        } else {
            if self.probe {
                self.worker.record_outcome(true, Outcome::Neutral);
            }
            self.count(Ending::Cancelled);
        }
    }
}
