//! Random: uniformly among the candidates. Stateless.

use std::sync::Arc;

use rand::Rng;

use super::{Policy, PolicyError, RequestFacts};
use crate::worker::Worker;

/// Uniformly random choice.
#[derive(Debug, Default)]
pub struct Random;

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn select(
        &self,
        candidates: &[Arc<Worker>],
        _request: &RequestFacts<'_>,
    ) -> Result<Arc<Worker>, PolicyError> {
        if candidates.is_empty() {
            return Err(PolicyError::NoCandidates);
        }
        Ok(candidates[rand::rng().random_range(0..candidates.len())].clone())
    }
}
