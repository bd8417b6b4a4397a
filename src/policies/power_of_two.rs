//! Power of two choices: of two distinct random candidates, the one with
//! less load ([`Worker::load`]: requests in flight as counted by the load
//! guards, plus what an engine worker last reported queued beyond them;
//! its KV-cache usage breaks ties).
//!
//! Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing"
//! (2001): two random probes cut the maximum load from O(log n / log log n)
//! to O(log log n) compared with one, without the herding of always picking
//! the global minimum from a stale view. Stateless: the load lives on the
//! workers.

use std::sync::Arc;

use rand::Rng;

use super::{Policy, PolicyError, RequestFacts};
use crate::worker::Worker;

/// Power-of-two-choices by in-flight load.
#[derive(Debug, Default)]
pub struct PowerOfTwo;

impl Policy for PowerOfTwo {
    fn name(&self) -> &'static str {
        "power_of_two"
    }

    fn select(
        &self,
        candidates: &[Arc<Worker>],
        _request: &RequestFacts<'_>,
    ) -> Result<Arc<Worker>, PolicyError> {
        match candidates.len() {
            0 => Err(PolicyError::NoCandidates),
            1 => Ok(candidates[0].clone()),
            n => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let (a, b) = (&candidates[a], &candidates[b]);
                // Load first; the engine's KV-cache usage breaks ties.
                let key = |w: &Worker| (w.load(), w.token_usage_permille());
                Ok(if key(b) < key(a) { b } else { a }.clone())
            }
        }
    }
}
