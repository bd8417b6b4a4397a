//! A tenant's counts: calls admitted, tokens used, refusals by reason and
//! how long its calls waited in the queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Every reason a tenant's call may be refused, as metrics label them.
pub const REASONS: [&str; 8] = [
    "requests_per_second",
    "prompt_tokens_per_minute",
    "output_tokens_per_minute",
    "max_concurrent",
    "queue_full",
    "tenant_queue_full",
    "queue_timeout",
    "deadline",
];

/// Upper bounds of the queue-wait histogram's buckets, in seconds.
pub const WAIT_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// A tenant's counts since start (kept across reloads).
#[derive(Debug, Default)]
pub struct TenantStats {
    calls: AtomicU64,
    prompt_tokens: AtomicU64,
    output_tokens: AtomicU64,
    refused: [AtomicU64; REASONS.len()],
    /// Calls that waited at most each bound (not cumulative), and beyond.
    waits: [AtomicU64; WAIT_BUCKETS.len() + 1],
    /// Total wait, in microseconds.
    wait_micros: AtomicU64,
}

impl TenantStats {
    pub(super) fn admitted(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn used(&self, prompt: u64, output: u64) {
        self.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        self.output_tokens.fetch_add(output, Ordering::Relaxed);
    }

    /// A call refused for `reason` (one of [`REASONS`]).
    pub fn refused(&self, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A call waited `wait` for its slot (zero when it did not queue).
    pub fn waited(&self, wait: Duration) {
        let s = wait.as_secs_f64();
        let i = WAIT_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(WAIT_BUCKETS.len());
        self.waits[i].fetch_add(1, Ordering::Relaxed);
        self.wait_micros
            .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
    }

    /// Calls admitted.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Prompt and generated tokens of the calls ended.
    pub fn tokens(&self) -> (u64, u64) {
        (
            self.prompt_tokens.load(Ordering::Relaxed),
            self.output_tokens.load(Ordering::Relaxed),
        )
    }

    /// Refusals by reason, every reason listed.
    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REASONS
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
    }

    /// The wait histogram: the count in each bucket of [`WAIT_BUCKETS`]
    /// then beyond (not cumulative: the encoder sums them), and the sum
    /// in seconds.
    pub fn wait_histogram(&self) -> (Vec<u64>, f64) {
        let counts = self
            .waits
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        let sum = self.wait_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (counts, sum)
    }
}
