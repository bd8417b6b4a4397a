//! What every engine worker holds in its KV cache, from its own events, and
//! what this router has sent where and the engine has not yet confirmed.
//!
//! Blocks are keyed by the router's chained hash of their token ids
//! ([`super::hash`]); a worker's engine hashes map to them, so removals
//! (which name engine hashes only) find their block. A block a worker holds
//! is *confirmed* (the engine stored it) or *pending* (this router sent a
//! prompt with it there; dropped when the engine's store confirms it, the
//! engine removes it, or its time runs out). A lookup walks the prompt's
//! blocks from the first and finds, per worker, how many leading blocks it
//! holds. Memory: one entry per block per holding worker, bounded by the
//! fleet's capacity (what the engines hold) plus pending blocks (bounded by
//! their lifetime).

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::hash::{self, BuildPrehashed};
use super::wire;

/// The engine's load, as its last record said.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineLoad {
    /// Requests running.
    pub running: u32,
    /// Requests waiting.
    pub waiting: u32,
    /// Prompt tokens waiting to be computed (queued, uncached), when known.
    pub queued_tokens: Option<u32>,
    /// KV held by running requests, 0..=1.
    pub active_usage: f64,
}

#[derive(Debug, Default)]
struct Holders {
    confirmed: Vec<u64>,
    pending: Vec<(u64, Instant)>,
}

impl Holders {
    fn holds(&self, worker: u64, now: Instant) -> bool {
        self.confirmed.contains(&worker)
            || self
                .pending
                .iter()
                .any(|&(w, until)| w == worker && until > now)
    }

    fn is_empty(&self) -> bool {
        self.confirmed.is_empty() && self.pending.is_empty()
    }
}

#[derive(Debug, Default)]
struct WorkerBlocks {
    /// Tokens per block, from its first stored block (0: not yet known).
    block_size: usize,
    /// Engine hash → router hash, for every block it holds.
    engine: HashMap<i64, u64>,
    load: Option<(EngineLoad, Instant)>,
    /// Uncached prompt tokens this router sent since the last load record.
    recent: VecDeque<(Instant, u64)>,
}

#[derive(Debug, Default)]
struct Inner {
    blocks: HashMap<u64, Holders, BuildPrehashed>,
    workers: HashMap<u64, WorkerBlocks>,
    /// Pending entries in the order they expire.
    expiry: VecDeque<(Instant, u64, u64)>,
}

/// The index. Workers are named by their registry ordinal.
#[derive(Debug)]
pub struct KvIndex {
    inner: RwLock<Inner>,
    pending_ttl: Duration,
}

/// What applying a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Events applied.
    pub events: u64,
    /// Stored blocks skipped: their parent is unknown (the stream is
    /// missing something: resync).
    pub orphans: u64,
}

impl KvIndex {
    /// An empty index whose pending blocks last `pending_ttl`.
    pub fn new(pending_ttl: Duration) -> Self {
        KvIndex {
            inner: RwLock::default(),
            pending_ttl,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies an engine's events for `worker`.
    pub fn apply(&self, worker: u64, events: &[wire::Event]) -> Applied {
        use wire::Data;
        let mut applied = Applied::default();
        // One buffer for every block's token ids.
        let mut tokens = Vec::new();
        let mut inner = self.write();
        for event in events {
            match &event.data {
                Some(Data::Stored(stored)) => {
                    applied.orphans += inner.store(worker, stored, &mut tokens);
                }
                Some(Data::Removed(removed)) => {
                    for h in &removed.block_hashes {
                        inner.remove(worker, *h);
                    }
                }
                Some(Data::Cleared(_)) => inner.clear(worker),
                None => continue,
            }
            applied.events += 1;
        }
        applied
    }

    /// Forgets everything `worker` holds (a resync starts from nothing).
    pub fn clear(&self, worker: u64) {
        self.write().clear(worker);
    }

    /// Forgets `worker` entirely (it left the registry).
    pub fn forget(&self, worker: u64) {
        let mut inner = self.write();
        inner.clear(worker);
        inner.workers.remove(&worker);
        inner.blocks.retain(|_, h| {
            h.pending.retain(|&(w, _)| w != worker);
            !h.is_empty()
        });
    }

    /// Records `worker`'s load.
    pub fn set_load(&self, worker: u64, load: EngineLoad) {
        let mut inner = self.write();
        let w = inner.workers.entry(worker).or_default();
        let now = Instant::now();
        w.load = Some((load, now));
        // The record counts what reached the engine before it.
        while w.recent.front().is_some_and(|(at, _)| *at < now) {
            w.recent.pop_front();
        }
    }

    /// `worker`'s last load (none before its first record) and the
    /// uncached tokens this router sent it since (without a record, those
    /// sent within the pending TTL: a worker whose stream is not live yet
    /// must not look idle however much it was sent).
    pub fn load(&self, worker: u64) -> Option<(Option<EngineLoad>, u64)> {
        let inner = self.read();
        let w = inner.workers.get(&worker)?;
        let since = Instant::now().checked_sub(self.pending_ttl);
        let recent = w
            .recent
            .iter()
            .filter(|(at, _)| w.load.is_some() || since.is_none_or(|s| *at >= s))
            .map(|(_, t)| t)
            .sum();
        Some((w.load.map(|(load, _)| load), recent))
    }

    /// Tokens per block `worker` stores (`None` before its first block).
    pub fn block_size(&self, worker: u64) -> Option<usize> {
        self.read()
            .workers
            .get(&worker)
            .map(|w| w.block_size)
            .filter(|&b| b > 0)
    }

    /// Blocks `worker` holds, confirmed by its engine.
    pub fn blocks(&self, worker: u64) -> usize {
        self.read()
            .workers
            .get(&worker)
            .map_or(0, |w| w.engine.len())
    }

    /// Blocks in the index (each counted once) and pending entries.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.blocks.len(), inner.expiry.len())
    }

    /// For each of `workers`, how many of `hashes`' leading blocks it holds
    /// (confirmed or pending).
    pub fn overlap(&self, hashes: &[u64], workers: &[u64]) -> Vec<usize> {
        let mut depth = vec![0; workers.len()];
        let mut alive: Vec<usize> = (0..workers.len()).collect();
        let now = Instant::now();
        let inner = self.read();
        for (i, h) in hashes.iter().enumerate() {
            let Some(holders) = inner.blocks.get(h) else {
                break;
            };
            alive.retain(|&c| {
                let keep = holders.holds(workers[c], now);
                if keep {
                    depth[c] = i + 1;
                }
                keep
            });
            if alive.is_empty() {
                break;
            }
        }
        depth
    }

    /// Notes that this router sent a prompt of `hashes` to `worker`, whose
    /// `uncached` tokens it will compute: pending until its engine confirms.
    pub fn record(&self, worker: u64, hashes: &[u64], uncached: u64) {
        let now = Instant::now();
        let until = now + self.pending_ttl;
        let mut inner = self.write();
        inner.expire(now);
        let w = inner.workers.entry(worker).or_default();
        if w.load.is_none() {
            // No record clears them: keep the pending TTL's worth.
            let since = now.checked_sub(self.pending_ttl);
            while w
                .recent
                .front()
                .is_some_and(|(at, _)| since.is_some_and(|s| *at < s))
            {
                w.recent.pop_front();
            }
        }
        w.recent.push_back((now, uncached));
        for &h in hashes {
            let holders = inner.blocks.entry(h).or_default();
            if holders.confirmed.contains(&worker) {
                continue;
            }
            match holders.pending.iter_mut().find(|(w, _)| *w == worker) {
                Some(entry) => entry.1 = until,
                None => holders.pending.push((worker, until)),
            }
            inner.expiry.push_back((until, h, worker));
        }
    }
}

impl Inner {
    fn store(&mut self, worker: u64, stored: &wire::Stored, tokens: &mut Vec<u32>) -> u64 {
        let w = self.workers.entry(worker).or_default();
        let mut parent = match stored.parent_block_hash {
            None => hash::ROOT,
            Some(p) => match w.engine.get(&p) {
                Some(&h) => h,
                None => return stored.blocks.len() as u64,
            },
        };
        for block in &stored.blocks {
            if !block.tokens(tokens) {
                // Token ids that are not ids: nothing after can match.
                break;
            }
            if w.block_size == 0 {
                w.block_size = tokens.len();
            }
            if tokens.is_empty() || tokens.len() != w.block_size {
                // A partial block ends what a prefix can match.
                break;
            }
            let h = hash::block(parent, tokens);
            w.engine.insert(block.block_hash, h);
            let holders = self.blocks.entry(h).or_default();
            if !holders.confirmed.contains(&worker) {
                holders.confirmed.push(worker);
            }
            holders.pending.retain(|&(p, _)| p != worker);
            parent = h;
        }
        0
    }

    fn remove(&mut self, worker: u64, engine_hash: i64) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        let Some(h) = w.engine.remove(&engine_hash) else {
            return;
        };
        if let Some(holders) = self.blocks.get_mut(&h) {
            holders.confirmed.retain(|&x| x != worker);
            holders.pending.retain(|&(x, _)| x != worker);
            if holders.is_empty() {
                self.blocks.remove(&h);
            }
        }
    }

    fn clear(&mut self, worker: u64) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        let hashes: Vec<u64> = w.engine.drain().map(|(_, h)| h).collect();
        for h in hashes {
            if let Some(holders) = self.blocks.get_mut(&h) {
                holders.confirmed.retain(|&x| x != worker);
                if holders.is_empty() {
                    self.blocks.remove(&h);
                }
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(until, h, worker)) = self.expiry.front() {
            if until > now {
                break;
            }
            self.expiry.pop_front();
            if let Some(holders) = self.blocks.get_mut(&h) {
                holders.pending.retain(|&(w, u)| !(w == worker && u <= now));
                if holders.is_empty() {
                    self.blocks.remove(&h);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
