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

/// Upper bounds (seconds) of the router-overhead histogram's buckets: from
/// ten microseconds to a second.
pub const OVERHEAD_BUCKETS: [f64; 16] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

/// Upper bounds (seconds) of the per-chunk delay histogram's buckets: from
/// a microsecond to a tenth of a second.
pub const CHUNK_BUCKETS: [f64; 16] = [
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// A latency histogram of fixed buckets, written with relaxed atomics.
#[derive(Debug)]
pub struct Histogram {
    /// The buckets' upper bounds, in seconds.
    bounds: &'static [f64; 16],
    /// Observations at most each bound (not cumulative); the last counts
    /// those past every bound.
    buckets: [AtomicU64; 17],
    /// The sum of observations, in nanoseconds.
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(&LATENCY_BUCKETS)
    }
}

/// Which listener a request came in on, for router-wide series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The gRPC listener.
    Grpc = 0,
    /// The HTTP listener.
    Http = 1,
}

/// How a call went to its worker(s), for router-wide series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// One regular worker.
    Regular = 0,
    /// A prefill and a decode worker.
    Pd = 1,
}

/// From a request's message being read to its call being sent to a worker
/// (parsing, policy, connection, retries of calls that reached no worker;
/// for PD, to both sides being started), per listener and dispatch: the
/// router's own overhead before the worker starts.
static OVERHEAD: [[Histogram; 2]; 2] = [
    [
        Histogram::new(&OVERHEAD_BUCKETS),
        Histogram::new(&OVERHEAD_BUCKETS),
    ],
    [
        Histogram::new(&OVERHEAD_BUCKETS),
        Histogram::new(&OVERHEAD_BUCKETS),
    ],
];

/// The overhead histogram of calls from `route` dispatched as `dispatch`.
pub fn overhead(route: Route, dispatch: Dispatch) -> &'static Histogram {
    &OVERHEAD[route as usize][dispatch as usize]
}

/// From a worker's chunk waking its relayed stream to the stream handing
/// it to the client's connection, sampled (`routers::chunk_clock`).
static CHUNK_OVERHEAD: Histogram = Histogram::new(&CHUNK_BUCKETS);

/// The sampled per-chunk delay of relayed gRPC streams.
pub fn chunk_overhead() -> &'static Histogram {
    &CHUNK_OVERHEAD
}

/// A histogram's values at one moment, cumulative as exposition wants them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The sum of observations, in seconds.
    pub sum: f64,
    /// How many.
    pub count: u64,
    /// `(upper bound, observations at most it)`, the last bound +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// An empty histogram over `bounds` (seconds, ascending).
    pub const fn new(bounds: &'static [f64; 16]) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; 17],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The values now (each bucket read once; a concurrent observation may
    /// show in the count and not yet the sum, which exposition tolerates).
    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        Snapshot {
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
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
    /// Chunks of its gRPC streams relayed to clients (what one read from
    /// the worker brought), added when each call ends.
    pub chunks: AtomicU64,
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
        let o = Histogram::new(&OVERHEAD_BUCKETS);
        o.observe(Duration::from_micros(40));
        assert_eq!(o.snapshot().buckets[2], (0.00005, 1));
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
