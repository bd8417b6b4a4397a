//! What each worker's calls did, counted where the calls end: by outcome,
//! how long they took, how long the worker took to answer. Plain atomics
//! written by load guards (a few relaxed adds per call), read only when
//! metrics are scraped. A worker's counts leave with the worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets: from a
/// millisecond (a mock's first token) to five minutes (the default
/// deadline).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A latency histogram of fixed buckets, written with relaxed atomics.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at most each bound (not cumulative); the last counts
    /// those past every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// The sum of observations, in microseconds.
    sum_us: AtomicU64,
}

/// A histogram's values at one moment, cumulative as exposition wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The sum of observations, in seconds.
    pub sum: f64,
    /// How many.
    pub count: u64,
    /// `(upper bound, observations at most it)`, the last bound +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The values now (each bucket read once; a concurrent observation may
    /// show in the count and not yet the sum, which exposition tolerates).
    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        Snapshot {
            sum: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count: cumulative,
            buckets,
        }
    }

    /// Adds `other`'s values into `into` (histograms of one family summed).
    pub fn add_to(&self, into: &mut Snapshot) {
        let mine = self.snapshot();
        if into.buckets.is_empty() {
            *into = mine;
            return;
        }
        into.sum += mine.sum;
        into.count += mine.count;
        for (total, (_, n)) in into.buckets.iter_mut().zip(mine.buckets) {
            total.1 += n;
        }
    }
}

/// How a call ended, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The worker served it.
    Success,
    /// The worker failed it (what its circuit breaker counts).
    Failure,
    /// It failed for a reason that is not the worker's (a client error,
    /// a bad request).
    Other,
    /// The client went away before it ended.
    Cancelled,
}

impl Ending {
    /// Every ending, in the order of [`WorkerStats::calls`].
    pub const ALL: [Ending; 4] = [
        Ending::Success,
        Ending::Failure,
        Ending::Other,
        Ending::Cancelled,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Ending::Success => "success",
            Ending::Failure => "failure",
            Ending::Other => "other",
            Ending::Cancelled => "cancelled",
        }
    }
}

/// One worker's call counts.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Calls ended, by [`Ending`].
    calls: [AtomicU64; 4],
    /// From sending a call to its end.
    pub duration: Histogram,
    /// From sending a call to the worker's first answer (first chunk for
    /// gRPC, response headers for HTTP).
    pub first_answer: Histogram,
    /// Failed health checks.
    pub check_failures: AtomicU64,
}

impl WorkerStats {
    /// Counts one call's end.
    pub fn ended(&self, ending: Ending) {
        self.calls[ending as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls that ended so.
    pub fn calls(&self, ending: Ending) -> u64 {
        self.calls[ending as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_sum_adds_up() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(400));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.001, 1));
        assert_eq!(s.buckets.iter().find(|b| b.0 == 0.05).unwrap().1, 2);
        assert_eq!(*s.buckets.last().unwrap(), (f64::INFINITY, 3));
        assert!((s.sum - 400.0305).abs() < 1e-6, "{}", s.sum);
        let mut total = Snapshot {
            sum: 0.0,
            count: 0,
            buckets: Vec::new(),
        };
        h.add_to(&mut total);
        h.add_to(&mut total);
        assert_eq!(total.count, 6);
        assert_eq!(*total.buckets.last().unwrap(), (f64::INFINITY, 6));
    }
}
