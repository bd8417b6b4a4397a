//! `kv_aware`: sends each prompt where it costs the least prefill work
//! before its first token, judged from what the engines say they cache (their
//! KV events, [`crate::kv`]) and how loaded they say they are (the load
//! records on the same streams), plus what this router sent and the
//! engines have not yet confirmed (pending blocks and queued tokens): under
//! load a conversation's next turn often arrives while its previous turn
//! still waits in a queue, and a policy that knows only confirmed blocks
//! would scatter it. The cost is documented on [`KvAwareConfig`].
//!
//! Requests without token ids, and candidates none of whose engines
//! publish events (HTTP workers, `switchyard.v1`), go to the router's own
//! prefix tree (`cache_aware`), which also hears every dispatch so it is
//! warm when needed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Policy, PolicyError, PolicyStats, RequestFacts};
use crate::config::KvAwareConfig;
use crate::kv::{hash, KvEvents};
use crate::worker::Worker;

/// `tokens`' chained block hashes, given to `f` (a 12,000-token prompt
/// hashes in about 4 µs: `select` and `record` each do it rather than share
/// state between calls).
fn with_hashes<R>(tokens: &[u32], block: usize, f: impl FnOnce(&[u64]) -> R) -> R {
    let mut hashes = Vec::with_capacity(tokens.len() / block.max(1));
    hash::chain(tokens, block, &mut hashes);
    f(&hashes)
}

/// The policy.
#[derive(Debug)]
pub struct KvAware {
    events: Arc<KvEvents>,
    fallback: Arc<dyn Policy>,
    config: KvAwareConfig,
    by_index: AtomicU64,
    by_fallback: AtomicU64,
}

impl KvAware {
    /// Routes on `events`, falling back to `fallback`.
    pub fn new(events: Arc<KvEvents>, fallback: Arc<dyn Policy>, config: KvAwareConfig) -> Self {
        KvAware {
            events,
            fallback,
            config,
            by_index: AtomicU64::new(0),
            by_fallback: AtomicU64::new(0),
        }
    }

    /// The index and its streams.
    pub fn events(&self) -> &Arc<KvEvents> {
        &self.events
    }

    /// The block size of the first candidate whose engine has told it.
    fn block_size(&self, candidates: &[Arc<Worker>]) -> Option<usize> {
        candidates
            .iter()
            .find_map(|w| self.events.index().block_size(w.ordinal()))
    }

    /// Each candidate's cost for a prompt of `len` tokens whose leading
    /// `depth[i]` blocks of `block` tokens candidate `i` holds.
    fn costs(
        &self,
        candidates: &[Arc<Worker>],
        len: usize,
        depth: &[usize],
        block: usize,
    ) -> Vec<f64> {
        let c = &self.config;
        candidates
            .iter()
            .zip(depth)
            .map(|(w, &d)| {
                let cached = (d * block).min(len.saturating_sub(1));
                let uncached = (len - cached) as f64;
                let (queued, running, usage) = match self.events.index().load(w.ordinal()) {
                    Some((Some(load), recent)) => (
                        f64::from(load.queued_tokens.unwrap_or(0)) + recent as f64,
                        f64::from(load.running),
                        load.active_usage,
                    ),
                    // No record yet (its stream is not live): what this
                    // router sent it lately, and its calls in flight.
                    Some((None, recent)) => (recent as f64, f64::from(w.load()), 0.0),
                    None => (0.0, f64::from(w.load()), 0.0),
                };
                let pressure = if usage > c.usage_limit {
                    c.usage_penalty
                } else {
                    0.0
                };
                uncached + c.queue_weight * queued + c.running_weight * running + pressure
            })
            .collect()
    }
}

impl Policy for KvAware {
    fn name(&self) -> &'static str {
        "kv_aware"
    }

    fn select(
        &self,
        candidates: &[Arc<Worker>],
        request: &RequestFacts<'_>,
    ) -> Result<Arc<Worker>, PolicyError> {
        if candidates.is_empty() {
            return Err(PolicyError::NoCandidates);
        }
        let tokens = request.token_ids.filter(|t| !t.is_empty());
        let live = candidates.iter().any(|w| self.events.is_live(w));
        let (Some(tokens), true) = (tokens, live) else {
            self.by_fallback.fetch_add(1, Ordering::Relaxed);
            return self.fallback.select(candidates, request);
        };
        self.by_index.fetch_add(1, Ordering::Relaxed);
        let block = self.block_size(candidates);
        let ordinals: Vec<u64> = candidates.iter().map(|w| w.ordinal()).collect();
        let depth = match block {
            Some(b) => with_hashes(tokens, b, |h| self.events.index().overlap(h, &ordinals)),
            None => vec![0; candidates.len()],
        };
        let costs = self.costs(candidates, tokens.len(), &depth, block.unwrap_or(1));
        let best = (0..candidates.len())
            .min_by(|&a, &b| {
                costs[a]
                    .total_cmp(&costs[b])
                    .then_with(|| candidates[a].load().cmp(&candidates[b].load()))
            })
            .unwrap_or(0);
        Ok(candidates[best].clone())
    }

    fn reads_prompt(&self) -> bool {
        true
    }

    fn record(&self, worker: &Arc<Worker>, request: &RequestFacts<'_>) {
        self.fallback.record(worker, request);
        let Some(tokens) = request.token_ids.filter(|t| !t.is_empty()) else {
            return;
        };
        let candidates = std::slice::from_ref(worker);
        let Some(block) = self.block_size(candidates) else {
            // Nothing stored yet: the queue still grows by the prompt.
            self.events
                .index()
                .record(worker.ordinal(), &[], tokens.len() as u64);
            return;
        };
        with_hashes(tokens, block, |hashes| {
            let depth = self.events.index().overlap(hashes, &[worker.ordinal()]);
            let cached = (depth[0] * block).min(tokens.len().saturating_sub(1));
            let uncached = (tokens.len() - cached) as u64;
            self.events
                .index()
                .record(worker.ordinal(), hashes, uncached);
        });
    }

    fn remembered(&self, worker: &Worker) -> usize {
        self.events.index().blocks(worker.ordinal())
    }

    fn stats(&self) -> Option<PolicyStats> {
        let mut stats = self.fallback.stats().unwrap_or_default();
        stats
            .decisions
            .push(("kv_index", self.by_index.load(Ordering::Relaxed)));
        stats
            .decisions
            .push(("kv_fallback", self.by_fallback.load(Ordering::Relaxed)));
        Some(stats)
    }
}
