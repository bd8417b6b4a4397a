//! Cache-aware routing: send a request to the worker most likely to hold its
//! prompt's prefix in KV cache, unless load is too unbalanced.
//!
//! Per model, a [`RadixTree`] of the routing inputs sent to each worker (token
//! ids when the request has them, else text bytes). Selection, in order:
//! 1. load imbalanced (max − min in-flight > `balance_abs_threshold` and
//!    max > min × `balance_rel_threshold`): the least-loaded worker;
//! 2. else, if the best prefix match covers ≥ `cache_threshold` of the input:
//!    the matched worker (least loaded among ties);
//! 3. else the least-loaded worker, ties broken by the smallest tree.
//!
//! `record` inserts the input for the chosen worker. Registry events keep the
//! trees true: a removed worker is purged from its model's tree before
//! `RemoveWorker` returns. Memory is bounded per worker (see the config).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use dashmap::DashMap;

use super::radix_tree::{RadixTree, Tenant};
use super::{least_loaded, CacheAwareConfig, Policy, PolicyError, PolicyStats, RequestFacts};
use crate::worker::{RegistryListener, Worker, WorkerEvent, WorkerEventKind};

/// The trees of one model: one over text bytes, one over token ids.
#[derive(Debug, Default)]
struct ModelTrees {
    text: RadixTree<u8>,
    tokens: RadixTree<u32>,
}

/// The routing input of a request, as the tree sees it.
enum Key<'a> {
    Text(&'a [u8]),
    Tokens(&'a [u32]),
}

impl<'a> Key<'a> {
    fn of(request: &RequestFacts<'a>) -> Option<Key<'a>> {
        match (request.token_ids, request.text) {
            (Some(ids), _) if !ids.is_empty() => Some(Key::Tokens(ids)),
            (_, Some(text)) if !text.is_empty() => Some(Key::Text(text.as_bytes())),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            Key::Text(k) => k.len(),
            Key::Tokens(k) => k.len(),
        }
    }
}

/// Membership of tree tenants among the candidates, without allocating in
/// the usual case: registry groups list workers in registration order, which
/// is ascending ordinal order, so a binary search finds a tenant.
enum Ordinals<'a> {
    Sorted(&'a [Arc<Worker>]),
    Set(HashSet<Tenant>),
}

impl<'a> Ordinals<'a> {
    fn of(candidates: &'a [Arc<Worker>]) -> Self {
        if candidates.is_sorted_by_key(|w| w.ordinal()) {
            Ordinals::Sorted(candidates)
        } else {
            Ordinals::Set(candidates.iter().map(|w| w.ordinal()).collect())
        }
    }

    fn contains(&self, t: Tenant) -> bool {
        match self {
            Ordinals::Sorted(c) => c.binary_search_by_key(&t, |w| w.ordinal()).is_ok(),
            Ordinals::Set(s) => s.contains(&t),
        }
    }
}

/// The cache-aware policy. One instance serves any number of models.
#[derive(Debug)]
pub struct CacheAware {
    config: CacheAwareConfig,
    /// One tree pair per model. A `DashMap` because requests for different
    /// models look up trees concurrently; each pair sits behind its own std
    /// mutex (held for microseconds, never across an `.await`).
    trees: DashMap<Arc<str>, Arc<Mutex<ModelTrees>>>,
    /// Calls by decision, in [`DECISIONS`] order.
    decisions: [AtomicU64; 4],
}

/// How a call's worker was chosen (the `decision` label of
/// `switchyard_policy_decisions_total`).
const DECISIONS: [&str; 4] = ["cache_hit", "cache_miss", "load_imbalance", "single_worker"];
const HIT: usize = 0;
const MISS: usize = 1;
const IMBALANCE: usize = 2;
const SINGLE: usize = 3;

impl CacheAware {
    /// A policy with these knobs and no memory yet.
    pub fn new(config: CacheAwareConfig) -> Self {
        CacheAware {
            config,
            trees: DashMap::new(),
            decisions: Default::default(),
        }
    }

    fn model_trees(&self, model: &str) -> Option<Arc<Mutex<ModelTrees>>> {
        self.trees.get(model).map(|t| t.clone())
    }

    fn lock(trees: &Mutex<ModelTrees>) -> MutexGuard<'_, ModelTrees> {
        trees.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the periodic eviction task if a tokio runtime is running. The
    /// task holds only a weak reference and ends when the policy is dropped.
    pub fn start_eviction(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<CacheAware> = Arc::downgrade(self);
        let period = Duration::from_secs(self.config.eviction_interval_secs);
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(policy) = weak.upgrade() else { return };
                policy.evict();
            }
        });
    }

    /// Trims every worker's memory to `max_tree_size`.
    pub fn evict(&self) {
        let all: Vec<_> = self.trees.iter().map(|e| e.value().clone()).collect();
        for trees in all {
            let mut t = Self::lock(&trees);
            t.text.evict(self.config.max_tree_size);
            t.tokens.evict(self.config.max_tree_size);
        }
    }

    fn imbalanced(&self, candidates: &[Arc<Worker>]) -> bool {
        let (mut min, mut max) = (u32::MAX, 0);
        for w in candidates {
            let load = w.load();
            min = min.min(load);
            max = max.max(load);
        }
        max - min > self.config.balance_abs_threshold
            && f64::from(max) > f64::from(min) * self.config.balance_rel_threshold
    }
}

impl Policy for CacheAware {
    fn name(&self) -> &'static str {
        "cache_aware"
    }

    fn reads_prompt(&self) -> bool {
        true
    }

    fn select(
        &self,
        candidates: &[Arc<Worker>],
        request: &RequestFacts<'_>,
    ) -> Result<Arc<Worker>, PolicyError> {
        let fallback = least_loaded(candidates).ok_or(PolicyError::NoCandidates)?;
        let decided = |d: usize| self.decisions[d].fetch_add(1, Ordering::Relaxed);
        if candidates.len() == 1 {
            decided(SINGLE);
            return Ok(fallback.clone());
        }
        if self.imbalanced(candidates) {
            decided(IMBALANCE);
            return Ok(fallback.clone());
        }
        let (Some(key), Some(trees)) = (Key::of(request), self.model_trees(request.model)) else {
            decided(MISS);
            return Ok(fallback.clone());
        };
        let ordinals = Ordinals::of(candidates);
        let trees = Self::lock(&trees);
        let found = match key {
            Key::Text(k) => trees.text.longest_match(k, |t| ordinals.contains(t)),
            Key::Tokens(k) => trees.tokens.longest_match(k, |t| ordinals.contains(t)),
        };
        if !found.tenants.is_empty()
            && found.matched as f64 >= self.config.cache_threshold * key.len() as f64
        {
            let best = candidates
                .iter()
                .filter(|w| found.tenants.contains(&w.ordinal()))
                .min_by_key(|w| w.load());
            if let Some(best) = best {
                decided(HIT);
                return Ok(best.clone());
            }
        }
        decided(MISS);
        let size = |w: &Worker| match key {
            Key::Text(_) => trees.text.size_of(w.ordinal()),
            Key::Tokens(_) => trees.tokens.size_of(w.ordinal()),
        };
        // `fallback` has the least load; look up tree sizes only for its ties.
        let least = fallback.load();
        let best = candidates
            .iter()
            .filter(|w| w.load() == least)
            .min_by_key(|w| size(w))
            .unwrap_or(fallback);
        Ok(best.clone())
    }

    fn record(&self, worker: &Arc<Worker>, request: &RequestFacts<'_>) {
        let Some(key) = Key::of(request) else { return };
        let trees = match self.model_trees(worker.model()) {
            Some(trees) => trees,
            None => self
                .trees
                .entry(worker.model().clone())
                .or_insert_with(|| Arc::new(Mutex::new(ModelTrees::default())))
                .clone(),
        };
        let max = self.config.max_tree_size;
        let tenant = worker.ordinal();
        let mut trees = Self::lock(&trees);
        match key {
            Key::Text(k) => {
                trees.text.insert(k, tenant, max);
                if trees.text.size_of(tenant) > 2 * max {
                    trees.text.evict_tenant(tenant, max);
                }
            }
            Key::Tokens(k) => {
                trees.tokens.insert(k, tenant, max);
                if trees.tokens.size_of(tenant) > 2 * max {
                    trees.tokens.evict_tenant(tenant, max);
                }
            }
        }
    }

    /// Symbols remembered for `worker` (text and tokens together).
    fn remembered(&self, worker: &Worker) -> usize {
        self.model_trees(worker.model()).map_or(0, |trees| {
            let t = Self::lock(&trees);
            t.text.size_of(worker.ordinal()) + t.tokens.size_of(worker.ordinal())
        })
    }

    fn stats(&self) -> Option<PolicyStats> {
        let decisions = DECISIONS
            .iter()
            .zip(&self.decisions)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
            .collect();
        let models: Vec<_> = self
            .trees
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let tree_symbols = models
            .into_iter()
            .map(|(model, trees)| {
                let t = Self::lock(&trees);
                let total: usize = t
                    .text
                    .tenant_sizes()
                    .chain(t.tokens.tenant_sizes())
                    .map(|(_, size)| size)
                    .sum();
                (model, total as u64)
            })
            .collect();
        Some(PolicyStats {
            decisions,
            tree_symbols,
        })
    }
}

impl RegistryListener for CacheAware {
    fn on_event(&self, event: &WorkerEvent) {
        // Added workers become candidates through the registry; health is
        // read per call. Only removal leaves state behind.
        if event.kind == WorkerEventKind::Removed {
            if let Some(trees) = self.model_trees(event.worker.model()) {
                let mut t = Self::lock(&trees);
                t.text.remove_tenant(event.worker.ordinal());
                t.tokens.remove_tenant(event.worker.ordinal());
            }
        }
    }
}
