//! Load-balancing policies: the contract, its error and the factory.
//!
//! A policy picks one worker out of a candidate snapshot the router resolved
//! from the registry for this call (DESIGN invariant 1: policies hold no
//! worker lists of their own). `select` looks only at candidates and request
//! facts and returns a choice or a typed reason; `record` is the separate,
//! explicit effect after dispatch (DESIGN invariant 3).

pub mod radix_tree;
mod round_robin;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use round_robin::RoundRobin;

use crate::worker::Worker;

/// The facts about a request that a policy may look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    /// The resolved model id.
    pub model: &'a str,
    /// Prompt text, when the request carries text.
    pub text: Option<&'a str>,
    /// Prompt token ids, when the request carries tokens.
    pub token_ids: Option<&'a [u32]>,
    /// Session-affinity key (`x-switchyard-routing-key`).
    pub routing_key: Option<&'a str>,
}

/// Why a policy could not choose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// There was nothing to choose from.
    #[error("no candidate workers")]
    NoCandidates,
}

/// Picks a worker for a request.
pub trait Policy: Send + Sync + fmt::Debug {
    /// The policy's configured name.
    fn name(&self) -> &'static str;

    /// Chooses one of `candidates` (all healthy, never empty unless the caller
    /// erred) and returns its index.
    fn select(
        &self,
        candidates: &[Arc<Worker>],
        request: &RequestFacts<'_>,
    ) -> Result<usize, PolicyError>;

    /// Records that `worker` was dispatched `request`. Policies without memory
    /// ignore it.
    fn record(&self, _worker: &Worker, _request: &RequestFacts<'_>) {}
}

/// The policies Switchyard ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Each healthy worker in turn.
    #[default]
    RoundRobin,
}

impl PolicyKind {
    /// Every name accepted by `--policy`.
    pub const NAMES: &'static [&'static str] = &["round_robin"];
}

impl FromStr for PolicyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" => Ok(PolicyKind::RoundRobin),
            other => Err(format!(
                "unknown policy {other:?}; known policies: {}",
                PolicyKind::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyKind::RoundRobin => "round_robin",
        })
    }
}

/// Builds a policy instance.
pub fn build(kind: PolicyKind) -> Arc<dyn Policy> {
    match kind {
        PolicyKind::RoundRobin => Arc::new(RoundRobin::default()),
    }
}
