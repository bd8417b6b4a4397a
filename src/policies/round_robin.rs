//! Round-robin: each candidate in turn.
//!
//! One atomic cursor per policy instance. Advancing it is the selection
//! itself, so it happens in `select`; the candidate list is the caller's
//! per-call snapshot, so workers added or removed are seen on the next call
//! with no notification needed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Policy, PolicyError, RequestFacts};
use crate::worker::Worker;

/// Round-robin over the healthy candidates.
#[derive(Debug, Default)]
pub struct RoundRobin {
    cursor: AtomicUsize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn select(
        &self,
        candidates: &[Arc<Worker>],
        _request: &RequestFacts<'_>,
    ) -> Result<Arc<Worker>, PolicyError> {
        if candidates.is_empty() {
            return Err(PolicyError::NoCandidates);
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % candidates.len();
        Ok(candidates[i].clone())
    }
}
