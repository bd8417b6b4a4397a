//! Load-balancing policies: the contract, its error, the factory and the
//! per-model policy set.
//!
//! A policy picks one worker out of a candidate snapshot the router resolved
//! from the registry for this call (DESIGN invariant 1: policies hold no
//! worker lists of their own for routing). `select` looks only at candidates
//! and request facts and returns a choice or a typed reason; `record` is the
//! separate, explicit effect after dispatch (DESIGN invariant 3).
//!
//! Policies that keep state about workers (the cache-aware trees, the
//! consistent-hash rings) are subscribed to registry events by [`build`] when
//! they are created (DESIGN invariant 2), whoever creates them: the default
//! policy, per-model overrides, and the PD routers' prefill and decode
//! policies alike. No caller tells a policy about workers by hand.

mod cache_aware;
mod consistent_hash;
mod kv_aware;
mod power_of_two;
pub mod radix_tree;
mod random;
mod round_robin;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};

pub use crate::config::{
    CacheAwareConfig, ConsistentHashConfig, KvAwareConfig, PdPolicyOverride, PolicyConfig,
    PolicyKind,
};
pub use cache_aware::CacheAware;
pub use consistent_hash::ConsistentHash;
pub use kv_aware::KvAware;
pub use power_of_two::PowerOfTwo;
pub use random::Random;
pub use round_robin::RoundRobin;

use crate::worker::{RegistryListener, Worker, WorkerRegistry};

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

    /// Chooses one of `candidates` (the healthy workers of the request's
    /// model, mode and role, resolved for this call).
    fn select(
        &self,
        candidates: &[Arc<Worker>],
        request: &RequestFacts<'_>,
    ) -> Result<Arc<Worker>, PolicyError>;

    /// Whether the policy reads the prompt (`RequestFacts::text` and
    /// `token_ids`): routers skip decoding it for policies that do not.
    fn reads_prompt(&self) -> bool {
        false
    }

    /// Records that `worker` was dispatched `request`. Policies without memory
    /// ignore it.
    fn record(&self, _worker: &Arc<Worker>, _request: &RequestFacts<'_>) {}

    /// How much state this policy holds about `worker` (tree symbols, ring
    /// points); 0 for stateless policies. For tests and diagnostics: it is
    /// how one sees that registry events reached a policy.
    fn remembered(&self, _worker: &Worker) -> usize {
        0
    }

    /// How it has decided and what it holds, for metrics; `None` for
    /// policies with nothing to report.
    fn stats(&self) -> Option<PolicyStats> {
        None
    }
}

/// What a policy reports to `/metrics` (read at scrape time).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyStats {
    /// Calls by how the choice was made, e.g. `("cache_hit", n)`.
    pub decisions: Vec<(&'static str, u64)>,
    /// Symbols remembered per model (prompt bytes and token ids, every
    /// worker's share summed).
    pub tree_symbols: Vec<(Arc<str>, u64)>,
}

/// Builds a policy of `kind` with the knobs in `config`, subscribed to
/// `registry` if it keeps state about workers.
pub fn build(
    kind: PolicyKind,
    config: &PolicyConfig,
    registry: &Arc<WorkerRegistry>,
) -> Arc<dyn Policy> {
    match kind {
        PolicyKind::Random => Arc::new(Random),
        PolicyKind::RoundRobin => Arc::new(RoundRobin::default()),
        PolicyKind::PowerOfTwo => Arc::new(PowerOfTwo),
        PolicyKind::CacheAware => {
            let policy = Arc::new(CacheAware::new(config.cache_aware.clone()));
            subscribe(registry, &policy);
            policy.start_eviction();
            policy
        }
        PolicyKind::ConsistentHash => {
            let fallback = build(config.consistent_hash_fallback(), config, registry);
            let policy = Arc::new(ConsistentHash::new(
                config.consistent_hash.clone(),
                fallback,
            ));
            for worker in subscribe(registry, &policy) {
                policy.add(&worker);
            }
            policy
        }
        PolicyKind::KvAware => {
            let fallback = build(PolicyKind::CacheAware, config, registry);
            let ttl = std::time::Duration::from_millis(config.kv_aware.pending_ttl_ms);
            Arc::new(KvAware::new(
                crate::kv::KvEvents::shared(registry, ttl),
                fallback,
                config.kv_aware.clone(),
            ))
        }
    }
}

/// Registers `policy` for registry events; returns the workers registered
/// before it, which the policy has not heard about.
fn subscribe<P: RegistryListener + 'static>(
    registry: &Arc<WorkerRegistry>,
    policy: &Arc<P>,
) -> Vec<Arc<Worker>> {
    let weak: Weak<dyn RegistryListener> = Arc::downgrade(policy) as Weak<dyn RegistryListener>;
    registry.subscribe(weak)
}

/// The default policy plus per-model overrides, each its own instance.
#[derive(Debug, Clone)]
pub struct PolicySet {
    default: Arc<dyn Policy>,
    per_model: HashMap<String, Arc<dyn Policy>>,
}

impl PolicySet {
    /// The regular routers' set: `config.name` plus `config.models`.
    pub fn build(config: &PolicyConfig, registry: &Arc<WorkerRegistry>) -> Self {
        let overrides = config.models.iter().map(|(m, k)| (m.clone(), *k));
        Self::new(config.name, overrides, config, registry)
    }

    /// One instance of `default` and one per `(model, kind)` override, each
    /// subscribed to `registry` if it keeps state.
    pub fn new(
        default: PolicyKind,
        overrides: impl Iterator<Item = (String, PolicyKind)>,
        config: &PolicyConfig,
        registry: &Arc<WorkerRegistry>,
    ) -> Self {
        PolicySet {
            default: build(default, config, registry),
            per_model: overrides
                .map(|(model, kind)| (model, build(kind, config, registry)))
                .collect(),
        }
    }

    /// A set that uses `policy` for every model.
    pub fn single(policy: Arc<dyn Policy>) -> Self {
        PolicySet {
            default: policy,
            per_model: HashMap::new(),
        }
    }

    /// The policy for `model`.
    pub fn for_model(&self, model: &str) -> &Arc<dyn Policy> {
        self.per_model.get(model).unwrap_or(&self.default)
    }

    /// Every policy instance of the set (the default one first).
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Policy>> {
        std::iter::once(&self.default).chain(self.per_model.values())
    }
}

/// The candidate with the least load ([`Worker::load`]; the first among equals).
pub(crate) fn least_loaded(candidates: &[Arc<Worker>]) -> Option<&Arc<Worker>> {
    candidates.iter().min_by_key(|w| w.load())
}

#[cfg(test)]
mod tests;
