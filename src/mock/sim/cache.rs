//! The simulated engine's paged KV cache, after vLLM's block manager: fixed
//! blocks of `block_size` tokens; a full prompt block is cached under a
//! chained hash (its parent's hash and its tokens) so a later prompt with the
//! same prefix reuses it; a block no running request holds stays cached and
//! is evicted least recently freed first (a request's blocks freed tail
//! first, so a chain loses its end before its root), when a new block is
//! needed and no plain free one is left.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// What the cache tells subscribers (`SubscribeKvEvents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// A block was cached under `hash`, holding `tokens`, after `parent`.
    Stored {
        /// The engine's hash of the block.
        hash: u64,
        /// The hash of the block before it in its chain.
        parent: Option<u64>,
        /// Its token ids.
        tokens: Vec<u32>,
    },
    /// A cached block was evicted.
    Removed {
        /// Its hash.
        hash: u64,
    },
    /// Every cached block was dropped (a flush).
    Cleared,
}

/// The engine's own hash of a block (SipHash over the parent's hash and the
/// tokens): deliberately not the router's, which must match prompts without
/// knowing it.
pub fn block_hash(parent: Option<u64>, tokens: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    // Engines publish hashes as int64; keep them positive to read well.
    h.finish() >> 1
}

/// The chained hashes of `tokens`' full blocks.
pub fn prompt_hashes(tokens: &[u32], block_size: usize) -> Vec<u64> {
    let mut parent = None;
    tokens
        .chunks_exact(block_size)
        .map(|block| {
            let h = block_hash(parent, block);
            parent = Some(h);
            h
        })
        .collect()
}

#[derive(Debug, Default, Clone)]
struct Block {
    /// Set while the block is cached (findable by hash).
    hash: Option<u64>,
    /// Requests holding it.
    refs: u32,
    /// Its place in the free order while no request holds it.
    freed: Option<u64>,
}

/// A paged KV cache of `capacity` blocks.
#[derive(Debug)]
pub struct KvCache {
    block_size: usize,
    blocks: Vec<Block>,
    /// Blocks no request holds, by when they were freed (oldest first).
    free: BTreeMap<u64, u32>,
    stamp: u64,
    /// Cached blocks by hash.
    cached: HashMap<u64, u32>,
    prefix_caching: bool,
    events: Vec<CacheEvent>,
    /// What each cached block was stored with, and its depth in its chain
    /// (for a snapshot, parents first).
    stored: HashMap<u64, (Option<u64>, Vec<u32>, u32)>,
}

impl KvCache {
    /// `capacity` blocks of `block_size` tokens, reusing prefixes if
    /// `prefix_caching`.
    pub fn new(capacity: usize, block_size: usize, prefix_caching: bool) -> Self {
        let capacity = capacity.max(1);
        KvCache {
            block_size: block_size.max(1),
            blocks: vec![Block::default(); capacity],
            free: (0..capacity as u32).map(|b| (u64::from(b), b)).collect(),
            stamp: capacity as u64,
            cached: HashMap::new(),
            prefix_caching,
            events: Vec::new(),
            stored: HashMap::new(),
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in all.
    pub fn capacity(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks no request holds (plain free and reclaimable cached).
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Blocks held by requests (what engines report as KV usage).
    pub fn used_blocks(&self) -> usize {
        self.blocks.len() - self.free.len()
    }

    /// Blocks cached (held or not).
    pub fn cached_blocks(&self) -> usize {
        self.cached.len()
    }

    /// How many of `hashes`' leading blocks are cached.
    pub fn hits(&self, hashes: &[u64]) -> usize {
        if !self.prefix_caching {
            return 0;
        }
        hashes
            .iter()
            .take_while(|h| self.cached.contains_key(h))
            .count()
    }

    /// How many of the first `n` blocks of `hashes` are cached but held by
    /// no request (taking them shrinks the free pool).
    pub fn free_hits(&self, hashes: &[u64], n: usize) -> usize {
        hashes[..n]
            .iter()
            .filter(|h| {
                self.cached
                    .get(h)
                    .is_some_and(|&b| self.blocks[b as usize].refs == 0)
            })
            .count()
    }

    /// Takes the cached blocks of `hashes`' first `n` (found by [`hits`]).
    ///
    /// [`hits`]: Self::hits
    pub fn take_cached(&mut self, hashes: &[u64], n: usize) -> Vec<u32> {
        let mut taken = Vec::with_capacity(n);
        for h in &hashes[..n] {
            let Some(&b) = self.cached.get(h) else { break };
            self.hold(b);
            taken.push(b);
        }
        taken
    }

    fn hold(&mut self, b: u32) {
        let block = &mut self.blocks[b as usize];
        if let Some(stamp) = block.freed.take() {
            self.free.remove(&stamp);
        }
        block.refs += 1;
    }

    /// `n` new blocks, evicting the least recently freed cached ones as
    /// needed; `None` (and nothing taken) if fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<u32>> {
        if self.free.len() < n {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (_, b) = self.free.pop_first()?;
            let block = &mut self.blocks[b as usize];
            block.freed = None;
            block.refs = 1;
            if let Some(hash) = block.hash.take() {
                self.cached.remove(&hash);
                self.stored.remove(&hash);
                self.events.push(CacheEvent::Removed { hash });
            }
            out.push(b);
        }
        Some(out)
    }

    /// Caches block `b`, now full of `tokens`, under `hash`; a block with
    /// the same hash already cached (another request computed it at the
    /// same time) keeps it, and `b` stays uncached.
    pub fn commit(&mut self, b: u32, hash: u64, parent: Option<u64>, tokens: &[u32]) {
        if !self.prefix_caching || self.cached.contains_key(&hash) {
            return;
        }
        if self.blocks[b as usize].hash.is_some() {
            return;
        }
        self.blocks[b as usize].hash = Some(hash);
        self.cached.insert(hash, b);
        let depth = parent
            .and_then(|p| self.stored.get(&p))
            .map_or(0, |(_, _, d)| d + 1);
        self.stored.insert(hash, (parent, tokens.to_vec(), depth));
        self.events.push(CacheEvent::Stored {
            hash,
            parent,
            tokens: tokens.to_vec(),
        });
    }

    /// Lets go of a request's `blocks`, its last block first (so the end
    /// of a chain is evicted before its root).
    pub fn release(&mut self, blocks: &[u32]) {
        for &b in blocks.iter().rev() {
            let block = &mut self.blocks[b as usize];
            block.refs = block.refs.saturating_sub(1);
            if block.refs == 0 && block.freed.is_none() {
                block.freed = Some(self.stamp);
                self.free.insert(self.stamp, b);
                self.stamp += 1;
            }
        }
    }

    /// Drops every cached block no request holds; refused (false) while
    /// any block is held, as engines refuse a flush with requests running.
    pub fn clear(&mut self) -> bool {
        if self.used_blocks() > 0 {
            return false;
        }
        for block in &mut self.blocks {
            block.hash = None;
        }
        self.cached.clear();
        self.stored.clear();
        self.events.push(CacheEvent::Cleared);
        true
    }

    /// Every cached block as a `Stored` event, parents before children.
    pub fn snapshot(&self) -> Vec<CacheEvent> {
        let mut blocks: Vec<_> = self.stored.iter().collect();
        blocks.sort_by_key(|(hash, (_, _, depth))| (*depth, **hash));
        blocks
            .into_iter()
            .map(|(&hash, (parent, tokens, _))| CacheEvent::Stored {
                hash,
                parent: *parent,
                tokens: tokens.clone(),
            })
            .collect()
    }

    /// The events since the last call.
    pub fn drain_events(&mut self) -> Vec<CacheEvent> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: u32, salt: u32) -> Vec<u32> {
        (0..n).map(|i| i * 7 + salt).collect()
    }

    #[test]
    fn a_prefix_is_reused_by_whole_blocks_only() {
        let mut cache = KvCache::new(8, 4, true);
        let a = tokens(10, 0); // two full blocks and a partial one
        let ha = prompt_hashes(&a, 4);
        assert_eq!(ha.len(), 2);
        let blocks = cache.allocate(3).unwrap();
        cache.commit(blocks[0], ha[0], None, &a[0..4]);
        cache.commit(blocks[1], ha[1], Some(ha[0]), &a[4..8]);
        // Same first 6 tokens, then different: one block matches.
        let mut b = a.clone();
        b[6] = 999;
        let hb = prompt_hashes(&b, 4);
        assert_eq!(cache.hits(&hb), 1);
        assert_eq!(cache.hits(&ha), 2);
        // A different first block: nothing, even if later blocks agree.
        let mut c = a.clone();
        c[0] = 999;
        assert_eq!(cache.hits(&prompt_hashes(&c, 4)), 0);
        let events = cache.drain_events();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            CacheEvent::Stored {
                hash: ha[1],
                parent: Some(ha[0]),
                tokens: a[4..8].to_vec()
            }
        );
    }

    #[test]
    fn freed_blocks_stay_cached_until_evicted_tail_first() {
        let mut cache = KvCache::new(4, 2, true);
        let a = tokens(6, 0);
        let ha = prompt_hashes(&a, 2);
        let blocks = cache.allocate(3).unwrap();
        for (i, &b) in blocks.iter().enumerate() {
            let parent = i.checked_sub(1).map(|p| ha[p]);
            cache.commit(b, ha[i], parent, &a[i * 2..i * 2 + 2]);
        }
        cache.release(&blocks);
        cache.drain_events();
        // Nothing held: all free, all three still cached.
        assert_eq!((cache.free_blocks(), cache.used_blocks()), (4, 0));
        assert_eq!(cache.hits(&ha), 3);
        // Two new blocks: the never-used one, then the chain's last block.
        cache.allocate(2).unwrap();
        assert_eq!(
            cache.drain_events(),
            vec![CacheEvent::Removed { hash: ha[2] }]
        );
        assert_eq!(cache.hits(&ha), 2);
        // A hit on a free cached block takes it out of the free pool.
        assert_eq!(cache.free_hits(&ha, 2), 2);
        let held = cache.take_cached(&ha, 2);
        assert_eq!(held.len(), 2);
        assert_eq!(cache.free_blocks(), 0);
        assert_eq!(cache.allocate(1), None, "full: nothing evictable");
        assert!(!cache.clear(), "a flush waits for held blocks");
    }

    #[test]
    fn a_flush_forgets_everything_and_says_so() {
        let mut cache = KvCache::new(4, 2, true);
        let a = tokens(2, 0);
        let ha = prompt_hashes(&a, 2);
        let b = cache.allocate(1).unwrap();
        cache.commit(b[0], ha[0], None, &a);
        cache.release(&b);
        assert!(cache.clear());
        assert_eq!(cache.hits(&ha), 0);
        assert_eq!(cache.drain_events().last(), Some(&CacheEvent::Cleared));
    }

    #[test]
    fn without_prefix_caching_nothing_is_found() {
        let mut cache = KvCache::new(4, 2, false);
        let a = tokens(2, 0);
        let ha = prompt_hashes(&a, 2);
        let b = cache.allocate(1).unwrap();
        cache.commit(b[0], ha[0], None, &a);
        assert_eq!(cache.hits(&ha), 0);
        assert!(cache.drain_events().is_empty());
    }
}
